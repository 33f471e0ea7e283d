//! The ingest API: single objects in and out of S3 through the engine a sync uses.
//!
//! Why a second entry point: programs that produce or consume data (a stream of unknown length, a
//! file they just wrote, a reader they pipe somewhere) work one object at a time. They need the same
//! guarantees as a sync: memory bounded by one chunk pool however long the stream, every byte hashed
//! once in flight and the ETag (and an additional checksum, when asked) compared with what S3 reports,
//! a failed or cancelled multipart upload aborted, a downloaded file that appears under its name only
//! complete and verified. An [`Engine`] is a cheap, cloneable handle: one pool, one S3 client and one
//! set of settings shared by every object in flight.
//!
//! ```no_run
//! # async fn demo() -> Result<(), s3sync::Error> {
//! use s3sync::ingest::{Engine, PutOptions};
//! let engine = Engine::builder().build().await?;
//! let reader = tokio::io::repeat(b'x'); // any AsyncRead, length unknown up front
//! use tokio::io::AsyncReadExt;
//! let put = engine
//!     .put_stream("bucket", "logs/day.bin", reader.take(100 << 20), &PutOptions::default())
//!     .await?;
//! println!("{} bytes, ETag {}", put.size, put.etag);
//! # Ok(()) }
//! ```

use crate::attributes::ObjectAttributes;
use crate::checksum::additional::{self, ChecksumAlgorithm, ChecksumType};
use crate::checksum::{etag_from_parts, etag_part_count, Md5Digest, PartDigest, PartHasher, PartLayout};
use crate::config::{ClientConfig, RetryConfig, POOL_CHUNK_SIZE};
use crate::error::{Error, Result, S3ErrorKind};
use crate::storage::s3::{HeadInfo, PartInfo, S3Storage, Written};
use crate::transfer::sink::FileSink;
use crate::transfer::verify::{Outcome, Policy};
use crate::transfer::{self, AbortGuard, Cleanups};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use s3sync_io::{Chunk, IoEngine, IoFile};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::debug;

const MIB: u64 = 1024 * 1024;

/// Parts at least this large are hashed on a blocking thread, so the parts of one object use every core.
const OFFLOAD_HASH_BYTES: u64 = MIB;

/// How far a transfer has come: bytes moved so far and, when known, the object's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes moved so far (uploaded parts, or bytes written to the sink).
    pub bytes: u64,
    /// The object's size, when known (always for downloads and files, never for streams).
    pub total: Option<u64>,
}

/// A progress callback; called from the engine's tasks, so it must be quick.
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// Options of one upload.
#[derive(Clone, Default)]
pub struct PutOptions {
    /// Content-Type, metadata, tags, storage class, ACL, SSE… of the new object.
    pub attributes: ObjectAttributes,
    /// Stops the upload: it then fails with [`Error::Cancelled`] after aborting its multipart upload.
    pub cancel: Option<CancellationToken>,
    /// Called as parts are uploaded.
    pub progress: Option<ProgressFn>,
}

/// Options of one download.
#[derive(Clone, Default)]
pub struct GetOptions {
    /// Stops the download: it then fails with [`Error::Cancelled`]; a file download leaves no file.
    pub cancel: Option<CancellationToken>,
    /// Called as bytes reach the sink.
    pub progress: Option<ProgressFn>,
}

/// What an upload wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    /// Bytes written.
    pub size: u64,
    /// The ETag S3 reports (without quotes).
    pub etag: String,
    /// Whether the ETag was compared with the MD5 computed from the bytes (not for SSE-KMS/SSE-C,
    /// whose ETags are not digests).
    pub etag_verified: bool,
    /// The additional checksum S3 reports, when one was configured.
    pub checksum: Option<String>,
    /// Number of parts; 0 for a single PutObject.
    pub parts: u64,
}

/// What a download read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetOutcome {
    /// Bytes read.
    pub size: u64,
    /// The object's ETag (without quotes).
    pub etag: String,
    /// Whether the ETag was recomputed from the bytes and matched (not possible for SSE-KMS/SSE-C
    /// objects, nor for multipart objects whose part sizes differ).
    pub etag_verified: bool,
    /// Whether the object's stored additional checksum was recomputed and matched (false when it has
    /// none).
    pub checksum_verified: bool,
}

/// The ranges of one download: the object, the layout it is fetched in, and what each GET pins.
struct Ranges<'a> {
    s3: &'a S3Storage,
    key: &'a str,
    /// The layout of the ranges (not the object's own part layout).
    layout: PartLayout,
    /// The ETag every range must still have (`If-Match`).
    etag: Option<String>,
    /// Set when a response says the ETag is no MD5.
    opaque: Arc<std::sync::atomic::AtomicBool>,
}

/// What a download read: the digests of the object's parts, in the layout they were hashed in.
struct Downloaded {
    /// The object's part layout.
    layout: PartLayout,
    /// Whether the layout is certain.
    known: bool,
    /// Whether a response said the ETag is no MD5 (SSE-KMS, SSE-C).
    opaque: bool,
    /// One digest per part of `layout`.
    digests: Vec<PartDigest>,
}

/// Settings shared by every transfer of an engine.
#[derive(Debug, Clone)]
struct Settings {
    part_size: u64,
    threshold: u64,
    parallel_parts: usize,
    checksum: Option<(ChecksumAlgorithm, ChecksumType)>,
    retry: RetryConfig,
    payload_signing: bool,
}

/// Builds an [`Engine`]; the defaults are those of the CLI.
#[derive(Debug, Clone)]
pub struct EngineBuilder {
    client: ClientConfig,
    settings: Settings,
    pool_bytes: u64,
}

impl Default for EngineBuilder {
    fn default() -> Self {
        EngineBuilder {
            client: ClientConfig::default(),
            settings: Settings {
                part_size: crate::config::defaults::DEFAULT_MULTIPART_SIZE,
                threshold: crate::config::defaults::DEFAULT_MULTIPART_SIZE,
                parallel_parts: crate::config::defaults::DEFAULT_MAX_PARALLEL_UPLOADS as usize,
                checksum: None,
                retry: RetryConfig::default(),
                payload_signing: true,
            },
            pool_bytes: 64 * MIB,
        }
    }
}

impl EngineBuilder {
    /// How to reach S3 (endpoint, region, credentials, SSE-C key); default: the AWS provider chain.
    pub fn client(mut self, c: ClientConfig) -> Self {
        self.client = c;
        self
    }

    /// Retries and timeouts (SDK attempts per request, then part-level retries).
    pub fn retry(mut self, r: RetryConfig) -> Self {
        self.settings.retry = r;
        self
    }

    /// Bytes of the chunk pool: all transfer memory of the engine (default 64 MiB). At least one part.
    pub fn pool_size(mut self, bytes: u64) -> Self {
        self.pool_bytes = bytes;
        self
    }

    /// Objects of at least `threshold` bytes are written in parts of `part_size` (both 8 MiB by
    /// default; parts of at least 5 MiB, as S3 requires; the threshold not above the part size, so
    /// one request never holds more than a part of memory). A file's part size grows to fit S3's
    /// 10,000 parts.
    pub fn multipart(mut self, threshold: u64, part_size: u64) -> Self {
        self.settings.threshold = threshold;
        self.settings.part_size = part_size;
        self
    }

    /// Parts of one object moved at once (default 16).
    pub fn parallel_parts(mut self, n: usize) -> Self {
        self.settings.parallel_parts = n;
        self
    }

    /// An additional checksum sent with every upload and compared with what S3 stores;
    /// `full_object` chooses the full-object type over the composite one (CRC algorithms only).
    pub fn checksum(mut self, algorithm: ChecksumAlgorithm, full_object: bool) -> Result<Self> {
        let kind = ChecksumType::for_algorithm(algorithm, full_object).map_err(Error::InvalidArgument)?;
        self.settings.checksum = Some((algorithm, kind));
        Ok(self)
    }

    /// Payloads of single-chunk requests are signed with SigV4 (default); off sends them unsigned
    /// (integrity then rests on Content-MD5 and the checksum).
    pub fn payload_signing(mut self, on: bool) -> Self {
        self.settings.payload_signing = on;
        self
    }

    /// Creates the S3 client from the [`ClientConfig`] and the engine.
    pub async fn build(self) -> Result<Engine> {
        let client = crate::storage::client::build_client(&self.client, &self.settings.retry).await?;
        self.build_with_client(client)
    }

    /// The engine over an S3 client made elsewhere (the SSE-C key of the [`ClientConfig`] still
    /// applies). The engine computes and checks every digest itself, in the pass that moves the bytes,
    /// so the client's own request checksums and response validation are set to "when required".
    pub fn build_with_client(self, client: aws_sdk_s3::Client) -> Result<Engine> {
        use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
        let client = aws_sdk_s3::Client::from_conf(
            client
                .config()
                .to_builder()
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
                .build(),
        );
        let s = &self.settings;
        if s.part_size < 5 * MIB {
            return Err(Error::InvalidArgument(format!(
                "the part size must be at least 5 MiB, not {} bytes",
                s.part_size
            )));
        }
        if s.part_size > 5 * 1024 * MIB {
            return Err(Error::InvalidArgument(format!(
                "the part size must be at most 5 GiB, not {} bytes",
                s.part_size
            )));
        }
        if s.threshold == 0 {
            return Err(Error::InvalidArgument(
                "the multipart threshold must be at least 1 byte".into(),
            ));
        }
        if s.threshold > s.part_size {
            return Err(Error::InvalidArgument(format!(
                "the multipart threshold ({} bytes) cannot exceed the part size ({} bytes)",
                s.threshold, s.part_size
            )));
        }
        if s.parallel_parts == 0 {
            return Err(Error::InvalidArgument("parallel parts must be at least 1".into()));
        }
        let cs = POOL_CHUNK_SIZE as u64;
        // Every request for memory asks for at most one part (the threshold is not above the part
        // size), all or nothing; the pool holds a part and one chunk more.
        let part_chunks = s.part_size.div_ceil(cs) as usize;
        let chunks = (self.pool_bytes.div_ceil(cs) as usize).max(part_chunks + 1);
        let pool = s3sync_io::ChunkPool::new(POOL_CHUNK_SIZE, chunks)?;
        let io = IoEngine::new(pool)?;
        // A stream holds one chunk while it learns whether it is small. So few may, that a whole part
        // stays free for the oldest waiter once the parts in flight are sent (see `read_stream_part`).
        let first_chunks = chunks - part_chunks;
        Ok(Engine {
            inner: Arc::new(Inner {
                client,
                io,
                sse_c: self.client.sse_c.clone(),
                request_payer: self.client.request_payer,
                settings: self.settings,
                first_chunks: tokio::sync::Semaphore::new(first_chunks),
                cleanups: Cleanups::default(),
            }),
        })
    }
}

/// Uploads and downloads single objects with bounded memory and verified bytes; `Clone + Send +
/// Sync`, so one engine serves any number of concurrent transfers.
///
/// Errors are [`Error`] values: [`Error::S3`] with an [`S3ErrorKind`] (e.g. `NotFound` for a
/// missing object), [`Error::Verification`] when bytes do not match the ETag or checksum S3 reports,
/// [`Error::Local`] for file system failures, [`Error::Cancelled`] after a cancellation.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    client: aws_sdk_s3::Client,
    io: IoEngine,
    sse_c: Option<crate::storage::s3::SseC>,
    request_payer: bool,
    settings: Settings,
    first_chunks: tokio::sync::Semaphore,
    cleanups: Cleanups,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("settings", &self.inner.settings)
            .field("pool", self.inner.io.pool())
            .finish()
    }
}

/// Where the bytes of an upload come from, one part at a time.
enum PartReader<'a, R> {
    Stream(R),
    File {
        file: &'a IoFile,
        layout: PartLayout,
        next: u64,
    },
}

impl<R> PartReader<'_, R> {
    /// Whether every part was read (known for files only; a stream ends with a short part).
    fn at_end(&self) -> bool {
        match self {
            PartReader::File { layout, next, .. } => *next >= layout.part_count(),
            PartReader::Stream(_) => false,
        }
    }
}

/// One part read into pool chunks.
struct ReadPart {
    chunks: Vec<Bytes>,
    len: u64,
}

impl Engine {
    /// A builder with the CLI's defaults.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// The chunk pool's size in bytes.
    pub fn pool_size(&self) -> u64 {
        self.inner.io.pool().capacity() as u64 * POOL_CHUNK_SIZE as u64
    }

    fn storage(&self, bucket: &str) -> S3Storage {
        S3Storage::new(
            self.inner.client.clone(),
            bucket.to_string(),
            String::new(),
            self.inner.settings.payload_signing,
            self.inner.sse_c.clone(),
        )
        .with_request_payer(self.inner.request_payer)
    }

    /// Uploads everything `reader` yields, length unknown, as `bucket`/`key`: one PutObject when the
    /// stream ends within the first part (and below the multipart threshold), else a multipart upload
    /// whose parts are read, hashed and sent while the next ones are read. Memory: at most the pool,
    /// however long the stream. On any error or cancellation the multipart upload is aborted before
    /// this returns. S3 allows 10,000 parts: with the default 8 MiB parts a stream may reach 78 GiB
    /// (raise the part size for more); the 10,001st part fails the upload.
    pub async fn put_stream<R>(&self, bucket: &str, key: &str, reader: R, opts: &PutOptions) -> Result<PutOutcome>
    where
        R: AsyncRead + Unpin + Send,
    {
        let s3 = self.storage(bucket);
        self.put(&s3, key, PartReader::Stream(reader), None, opts).await
    }

    /// Uploads a file: its bytes are read once, through io_uring into the pool's registered buffers
    /// where available, hashed and sent without being copied.
    pub async fn put_file(
        &self,
        path: impl AsRef<Path>,
        bucket: &str,
        key: &str,
        opts: &PutOptions,
    ) -> Result<PutOutcome> {
        let path = path.as_ref();
        let io = &self.inner.io;
        let file = io.open_read(path).await.map_err(|e| Error::local("open", path, e))?;
        let size = file.len().map_err(|e| Error::local("stat", path, e))?;
        let s = &self.inner.settings;
        let layout = PartLayout::for_upload(size, s.threshold, s.part_size);
        let largest = if layout.multipart { layout.part_size } else { size };
        if largest > self.pool_size() {
            return Err(Error::PartTooLarge {
                key: key.to_string(),
                part_size: largest,
                pool: self.pool_size(),
            });
        }
        let reader: PartReader<'_, tokio::io::Empty> = PartReader::File {
            file: &file,
            layout,
            next: 0,
        };
        let s3 = self.storage(bucket);
        self.put(&s3, key, reader, Some(layout), opts).await
    }

    async fn put<R>(
        &self,
        s3: &S3Storage,
        key: &str,
        mut reader: PartReader<'_, R>,
        layout: Option<PartLayout>,
        opts: &PutOptions,
    ) -> Result<PutOutcome>
    where
        R: AsyncRead + Unpin + Send,
    {
        let s = &self.inner.settings;
        let total = layout.map(|l| l.size);
        let progress = Progressor::new(opts.progress.clone(), total);
        let first = cancellable(opts.cancel.as_ref(), self.read_part(&mut reader, key)).await?;
        let single = match layout {
            Some(l) => !l.multipart,
            None => first.len < s.part_size.min(s.threshold),
        };
        if single {
            return self.put_single(s3, key, first, &progress, opts).await;
        }
        let upload_id = cancellable(
            opts.cancel.as_ref(),
            transfer::create_multipart(&self.inner.cleanups, s3, key, &opts.attributes, s.checksum),
        )
        .await?;
        let mut guard = AbortGuard {
            s3: s3.clone(),
            key: key.to_string(),
            upload_id: upload_id.clone(),
            armed: true,
            cleanups: self.inner.cleanups.clone(),
            journal: None,
        };
        let part_size = layout.map_or(s.part_size, |l| l.part_size);
        let work = self.upload_parts((s3, key, &upload_id), first, &mut reader, part_size, &progress);
        let (infos, digests) = guard.step(cancellable(opts.cancel.as_ref(), work)).await?;
        let size: u64 = digests.iter().map(|d| d.len).sum();
        let layout = PartLayout::multipart(size, part_size);
        let md5s: Vec<Md5Digest> = digests.iter().map(|d| d.md5).collect();
        let computed_checksum = s
            .checksum
            .and_then(|(a, k)| crate::checksum::object_checksum(a, k, &layout, &digests));
        let full_object_value = match (s.checksum, &computed_checksum) {
            (Some((a, ChecksumType::FullObject)), Some(v)) => Some((a, v.clone())),
            _ => None,
        };
        let parts = infos.len() as u64;
        let complete = s3.complete_multipart(
            key,
            &upload_id,
            infos,
            s.checksum,
            full_object_value,
            &opts.attributes.preconditions,
        );
        // Not interrupted: once sent, the object may exist; a cancellation must not claim otherwise.
        let written = guard.step(complete).await?;
        guard.finish();
        self.check_written(
            key,
            written,
            etag_from_parts(&md5s, true),
            computed_checksum,
            size,
            parts,
        )
    }

    /// Uploads an object read whole (`first`) with one PutObject, and checks what S3 reports.
    async fn put_single(
        &self,
        s3: &S3Storage,
        key: &str,
        first: ReadPart,
        progress: &Progressor,
        opts: &PutOptions,
    ) -> Result<PutOutcome> {
        let s = &self.inner.settings;
        let size = first.len;
        let chunks = first.chunks;
        let digest = hash(chunks.clone(), s.checksum.map(|c| c.0)).await?;
        let checksum = checksum_header(s.checksum, &digest);
        let put = || {
            s3.put_object(
                key,
                chunks.clone(),
                Some(transfer::b64(&digest.md5)),
                &checksum,
                &opts.attributes,
            )
        };
        // The one request that writes the object is not interrupted (it holds at most one part): a
        // cancellation then never reports an object as not written that was.
        if opts.cancel.as_ref().is_some_and(CancellationToken::is_cancelled) {
            return Err(Error::Cancelled);
        }
        let written = crate::retry::retry(&s.retry, key, "part", put).await?;
        progress.add(size);
        let expected_checksum = s.checksum.and_then(|(a, k)| {
            crate::checksum::object_checksum(a, k, &PartLayout::single(size), std::slice::from_ref(&digest))
        });
        let etag = etag_from_parts(&[digest.md5], false);
        self.check_written(key, written, etag, expected_checksum, size, 0)
    }

    /// Reads the remaining parts and uploads them, `parallel_parts` at a time, each in a task of its own
    /// (aborted when this future is dropped). Returns the parts in order.
    async fn upload_parts<R>(
        &self,
        (s3, key, upload_id): (&S3Storage, &str, &str),
        first: ReadPart,
        reader: &mut PartReader<'_, R>,
        part_size: u64,
        progress: &Progressor,
    ) -> Result<(Vec<PartInfo>, Vec<PartDigest>)>
    where
        R: AsyncRead + Unpin + Send,
    {
        let s = &self.inner.settings;
        let mut in_flight = futures::stream::FuturesUnordered::new();
        let mut done: Vec<(PartInfo, PartDigest)> = Vec::new();
        let mut next = Some(first);
        let mut number: i32 = 0;
        loop {
            while in_flight.len() >= s.parallel_parts {
                if let Some(r) = in_flight.next().await {
                    done.push(joined(r)?);
                }
            }
            let part = match next.take() {
                Some(p) => p,
                // A part that fails while the stream is slow to yield the next one fails the upload now.
                None => {
                    let read = self.read_part(reader, key);
                    tokio::pin!(read);
                    loop {
                        tokio::select! {
                            r = &mut read => break r?,
                            Some(r) = in_flight.next(), if !in_flight.is_empty() => done.push(joined(r)?),
                        }
                    }
                }
            };
            if part.len == 0 && number > 0 {
                break;
            }
            number += 1;
            if number > 10_000 {
                return Err(Error::InvalidArgument(format!(
                    "{key}: the stream needs more than 10,000 parts of {part_size} bytes; raise the part size"
                )));
            }
            let last = part.len < part_size || reader.at_end();
            let task = PartTask {
                s3: s3.clone(),
                key: key.to_string(),
                upload_id: upload_id.to_string(),
                number,
                chunks: part.chunks,
                checksum: s.checksum.map(|c| c.0),
                retry: s.retry.clone(),
                progress: progress.clone(),
            };
            in_flight.push(AbortOnDropHandle::new(tokio::spawn(task.run())));
            if last {
                break;
            }
            // Finished uploads give their chunks back; collect them without waiting.
            while let Some(Some(r)) = futures::FutureExt::now_or_never(in_flight.next()) {
                done.push(joined(r)?);
            }
        }
        while let Some(r) = in_flight.next().await {
            done.push(joined(r)?);
        }
        done.sort_by_key(|(p, _)| p.number);
        Ok(done.into_iter().unzip())
    }

    /// Reads the next part: from a file at its layout's next offset, from a stream up to a part size.
    async fn read_part<R>(&self, reader: &mut PartReader<'_, R>, key: &str) -> Result<ReadPart>
    where
        R: AsyncRead + Unpin + Send,
    {
        match reader {
            PartReader::File { file, layout, next } => {
                let (offset, len) = layout.part(*next);
                *next += 1;
                let chunks = self.read_file_range(file, offset, len).await?;
                Ok(ReadPart { chunks, len })
            }
            PartReader::Stream(r) => self.read_stream_part(r, key).await,
        }
    }

    async fn read_file_range(&self, file: &IoFile, offset: u64, len: u64) -> Result<Vec<Bytes>> {
        let cs = POOL_CHUNK_SIZE as u64;
        let io = &self.inner.io;
        let n = len.div_ceil(cs) as usize;
        // A part grown past the configured size (a file beyond 10,000 parts) also takes the room it
        // needs beyond one part from the streams' gate, so the room the gate keeps stays true.
        let part_chunks = self.inner.settings.part_size.div_ceil(cs) as usize;
        let _beyond = match n.checked_sub(part_chunks).filter(|&extra| extra > 0) {
            Some(extra) => Some(
                self.inner
                    .first_chunks
                    .acquire_many(u32::try_from(extra).unwrap_or(u32::MAX))
                    .await
                    .map_err(|_| Error::Cancelled)?,
            ),
            None => None,
        };
        let chunks = io.pool().acquire_many(n).await?;
        let reads = chunks.into_iter().enumerate().map(|(i, c)| {
            let off = offset + i as u64 * cs;
            let want = cs.min(offset + len - off) as usize;
            async move {
                let c = io
                    .read_at(file, c, off, want)
                    .await
                    .map_err(|e| Error::local("read", "source file", e))?;
                if c.len() < want {
                    return Err(Error::ObjectChanged {
                        key: String::new(),
                        message: "the file shrank while it was read".into(),
                    });
                }
                Ok(c.freeze())
            }
        });
        futures::future::try_join_all(reads).await
    }

    /// Reads up to one part of a stream into pool chunks. The first chunk is taken alone (a small
    /// object needs no more); the rest of the part is taken at once, all or nothing, so streams that
    /// wait for memory never hold pieces of parts that block each other. The number of streams holding
    /// a first chunk is bounded so that a whole part always remains for one of them.
    async fn read_stream_part<R>(&self, r: &mut R, key: &str) -> Result<ReadPart>
    where
        R: AsyncRead + Unpin + Send,
    {
        let part_size = self.inner.settings.part_size;
        let pool = self.inner.io.pool();
        let read_err = |e| Error::local("read", format!("stream of {key}"), e);
        let mut out = Vec::new();
        let mut len = 0u64;
        let gate = self.inner.first_chunks.acquire().await.map_err(|_| Error::Cancelled)?;
        let mut first = pool.acquire().await;
        let eof = fill(r, &mut first, part_size as usize).await.map_err(read_err)?;
        len += first.len() as u64;
        out.push(first);
        if !eof && len < part_size {
            let more = (part_size - len).div_ceil(POOL_CHUNK_SIZE as u64) as usize;
            let chunks = pool.acquire_many(more).await?;
            drop(gate);
            for mut c in chunks {
                let want = (part_size - len).min(c.capacity() as u64) as usize;
                let eof = fill(r, &mut c, want).await.map_err(read_err)?;
                len += c.len() as u64;
                out.push(c);
                if eof || len >= part_size {
                    break;
                }
            }
        }
        Ok(ReadPart {
            chunks: out.into_iter().filter(|c| !c.is_empty()).map(Chunk::freeze).collect(),
            len,
        })
    }

    /// Compares what S3 reports after a write with what was computed from the bytes.
    fn check_written(
        &self,
        key: &str,
        written: Written,
        computed_etag: String,
        computed_checksum: Option<String>,
        size: u64,
        parts: u64,
    ) -> Result<PutOutcome> {
        let policy = Policy::everything(self.inner.sse_c.is_some());
        let mut outcome = Outcome::default();
        if policy.written_etag(&written, parts > 0) {
            outcome.etag(key, &computed_etag, &written.etag, true)?;
        }
        // A checksum the server did not echo is not compared (S3 stores what it checked on receipt).
        if let (Some(sent), Some(stored)) = (&computed_checksum, &written.checksum) {
            outcome.checksum(key, Some(sent), Some(stored), String::new)?;
        }
        let etag_verified = outcome.etag_verified;
        Ok(PutOutcome {
            size,
            etag: written.etag,
            etag_verified,
            checksum: written.checksum,
            parts,
        })
    }

    /// Downloads `bucket`/`key` into `writer`, in order, while later ranges are already being fetched
    /// (`parallel_parts` at a time). The ETag and the stored checksum are checked at the end: the bytes
    /// are in `writer` before a mismatch is reported, so write to a place you can discard (or use
    /// [`Engine::get_to_file`], which renames only verified files into place). The download holds up
    /// to `parallel_parts` parts of the pool while `writer` is slow: a writer that waits on another
    /// transfer of the same engine (a pipe into its `put_stream`) may wait forever; give that
    /// transfer an engine of its own.
    pub async fn get_stream<W>(&self, bucket: &str, key: &str, writer: W, opts: &GetOptions) -> Result<GetOutcome>
    where
        W: AsyncWrite + Unpin + Send,
    {
        let s3 = self.storage(bucket);
        let mut sink = Sink::Writer { writer, key };
        let work = async {
            let out = self.get(&s3, key, opts, &mut sink).await?;
            sink.flush().await?;
            Ok(out)
        };
        cancellable(opts.cancel.as_ref(), work).await
    }

    /// Downloads `bucket`/`key` to `path` (its directory must exist): the bytes go to a temporary file
    /// beside it, are verified and fsynced, and only then renamed to `path` (replacing a file there).
    /// On an error or cancellation before the rename no temporary file is left and `path` is
    /// untouched; a cancellation after verification lets the rename finish. An error of the final
    /// directory fsync is reported although `path` already holds the verified object.
    pub async fn get_to_file(
        &self,
        bucket: &str,
        key: &str,
        path: impl AsRef<Path>,
        opts: &GetOptions,
    ) -> Result<GetOutcome> {
        let path = path.as_ref();
        let s3 = self.storage(bucket);
        let file = FileSink::create(&self.inner.io, path).await?;
        let mut sink: Sink<'_, tokio::io::Sink> = Sink::File { file: &file, offset: 0 };
        let out = cancellable(opts.cancel.as_ref(), self.get(&s3, key, opts, &mut sink)).await?;
        // Verified: from here on nothing is interrupted, so `path` is either untouched or the object.
        file.rename_into_place(true).await?;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let dir = tokio::fs::File::open(dir)
            .await
            .map_err(|e| Error::local("open", dir, e))?;
        dir.sync_all().await.map_err(|e| Error::local("fsync", path, e))?;
        Ok(out)
    }

    /// The download both sinks share: HEAD, the part layout, ranges fetched `parallel_parts` at a time
    /// into pool chunks (each range in a task of its own), handed to `sink` in order, then verified.
    async fn get<W>(&self, s3: &S3Storage, key: &str, opts: &GetOptions, sink: &mut Sink<'_, W>) -> Result<GetOutcome>
    where
        W: AsyncWrite + Unpin + Send,
    {
        let s = &self.inner.settings;
        let head = s3.head(key, None).await?.ok_or_else(|| {
            Error::s3(
                "HeadObject",
                s3.bucket().to_string(),
                key,
                S3ErrorKind::NotFound,
                "no such object",
            )
        })?;
        let size = head.entry.size;
        let etag = head.entry.etag.clone().unwrap_or_default();
        let (object_layout, known) = self.layout_of(s3, key, size, &etag).await?;
        let fetch_layout = PartLayout::multipart(size, s.part_size);
        let algo = head.checksum.as_ref().map(|c| c.0);
        let opaque = Arc::new(std::sync::atomic::AtomicBool::new(!crate::storage::s3::etag_is_digest(
            head.server_side_encryption
                .as_deref()
                .map(aws_sdk_s3::types::ServerSideEncryption::from)
                .as_ref(),
            head.sse_customer_algorithm.as_deref(),
        )));
        let progress = Progressor::new(opts.progress.clone(), Some(size));
        // The bytes arrive in order and are hashed part by part of the object's own layout, whatever
        // the ranges they were fetched in.
        let mut hasher = LayoutHasher::new(object_layout, algo);
        let ranges = Ranges {
            s3,
            key,
            layout: fetch_layout,
            etag: (!etag.is_empty()).then(|| etag.clone()),
            opaque: opaque.clone(),
        };
        self.fetch_in_order(ranges, &mut hasher, sink, &progress).await?;
        let digests = hasher.finish();
        let got: u64 = digests.iter().map(|d| d.len).sum();
        if got != size {
            return Err(Error::ObjectChanged {
                key: key.to_string(),
                message: format!("read {got} bytes, the object has {size}"),
            });
        }
        let downloaded = Downloaded {
            layout: object_layout,
            known,
            opaque: opaque.load(Ordering::Relaxed),
            digests,
        };
        let outcome = self.check_downloaded(s3, key, &head, &etag, downloaded).await?;
        Ok(GetOutcome {
            size,
            etag,
            etag_verified: outcome.etag_verified,
            checksum_verified: outcome.checksum_verified,
        })
    }

    /// Fetches the ranges, as many at a time as the pool and `parallel_parts` allow (each in a task of
    /// its own), and hands them to `hasher` and `sink` in order.
    async fn fetch_in_order<W>(
        &self,
        ranges: Ranges<'_>,
        hasher: &mut LayoutHasher,
        sink: &mut Sink<'_, W>,
        progress: &Progressor,
    ) -> Result<()>
    where
        W: AsyncWrite + Unpin + Send,
    {
        let s = &self.inner.settings;
        // Ranges in flight all hold their chunks until written in order: never more than the pool.
        let window = (self.pool_size() / s.part_size).clamp(1, s.parallel_parts as u64) as usize;
        // Memory for each range is taken here, in range order (FIFO, all or nothing), and handed to the
        // range's task, which reuses it on retries. While waiting for it, the oldest range is written
        // out, so a download never sits on memory it cannot give back, whatever else the engine runs.
        let pool = self.inner.io.pool();
        let mut todo = ranges.layout.parts();
        let mut next = todo.next();
        let mut in_flight: std::collections::VecDeque<AbortOnDropHandle<Result<Vec<Chunk>>>> = Default::default();
        loop {
            match next {
                Some((_, off, len)) if in_flight.len() < window => {
                    let want = len.div_ceil(POOL_CHUNK_SIZE as u64) as usize;
                    let chunks = if let Some(head) = in_flight.front_mut() {
                        tokio::select! {
                            c = pool.acquire_many(want) => c?,
                            r = head => {
                                in_flight.pop_front();
                                deliver(joined(r)?, hasher, sink, progress).await?;
                                continue;
                            }
                        }
                    } else {
                        pool.acquire_many(want).await?
                    };
                    let task = RangeTask {
                        s3: ranges.s3.clone(),
                        key: ranges.key.to_string(),
                        etag: ranges.etag.clone(),
                        range: (off, len),
                        retry: s.retry.clone(),
                        opaque: ranges.opaque.clone(),
                    };
                    in_flight.push_back(AbortOnDropHandle::new(tokio::spawn(task.run(chunks))));
                    next = todo.next();
                }
                _ => match in_flight.pop_front() {
                    Some(head) => deliver(joined(head.await)?, hasher, sink, progress).await?,
                    None => return Ok(()),
                },
            }
        }
    }

    /// Compares the digests of a downloaded object with its ETag and its stored checksum.
    async fn check_downloaded(
        &self,
        s3: &S3Storage,
        key: &str,
        head: &HeadInfo,
        etag: &str,
        d: Downloaded,
    ) -> Result<Outcome> {
        let policy = Policy::everything(self.inner.sse_c.is_some());
        let mut outcome = Outcome::default();
        if d.known && policy.source_etag(etag, d.opaque) {
            let md5s: Vec<Md5Digest> = d.digests.iter().map(|p| p.md5).collect();
            let computed = etag_from_parts(&md5s, d.layout.multipart);
            // The layout came from part 1 alone: when the other parts differ in size, a different
            // ETag is not a corruption but one that cannot be recomputed from these boundaries.
            let uniform =
                computed == etag || d.layout.part_count() <= 1 || self.parts_are_uniform(s3, key, &d.layout).await?;
            if uniform {
                outcome.etag(key, etag, &computed, true)?;
            } else {
                debug!(key, "parts of unequal size: the ETag cannot be verified");
            }
        }
        if let Some((algo, value)) = &head.checksum {
            let full = head.full_object_checksum;
            match transfer::downloaded_checksum(*algo, value, full, &d.layout, d.known, &d.digests) {
                Some(c) => outcome.checksum(key, Some(value), Some(&c), String::new)?,
                None => debug!(key, "the stored checksum cannot be recomputed from this layout"),
            }
        }
        Ok(outcome)
    }

    /// The part layout of an object from its ETag and, for multipart objects, a HEAD of part 1; the
    /// flag says whether it is certain.
    async fn layout_of(&self, s3: &S3Storage, key: &str, size: u64, etag: &str) -> Result<(PartLayout, bool)> {
        let Some(n) = etag_part_count(etag) else {
            return Ok((PartLayout::single(size), true));
        };
        if n == 1 {
            return Ok((PartLayout::multipart(size, size.max(1)), true));
        }
        if let Some(h) = s3.head(key, Some(1)).await? {
            let layout = PartLayout::multipart(size, h.entry.size);
            if h.parts_count == Some(n) && h.entry.size > 0 && layout.part_count() == n {
                return Ok((layout, true));
            }
        }
        Ok((PartLayout::multipart(size, self.inner.settings.part_size), false))
    }

    /// Whether every part of a multipart object has the size `layout` gives it (HEAD of each part).
    async fn parts_are_uniform(&self, s3: &S3Storage, key: &str, layout: &PartLayout) -> Result<bool> {
        let sizes: Vec<bool> = futures::stream::iter(2..=layout.part_count())
            .map(|p| async move {
                let h = s3.head(key, Some(p as i32)).await?;
                Ok::<_, Error>(h.map(|h| h.entry.size) == Some(layout.part(p - 1).1))
            })
            .buffer_unordered(self.inner.settings.parallel_parts)
            .try_collect()
            .await?;
        Ok(sizes.into_iter().all(|same| same))
    }

    /// Waits for the clean-ups (multipart aborts) of uploads whose futures were dropped by the caller
    /// instead of cancelled through [`PutOptions::cancel`]. Call it before the runtime ends.
    pub async fn close(&self) {
        self.inner.cleanups.wait().await;
    }
}

/// Where a download's bytes go, in order.
enum Sink<'a, W> {
    /// A caller's writer.
    Writer { writer: W, key: &'a str },
    /// A temporary file, written at increasing offsets straight from the pool's chunks.
    File { file: &'a FileSink<'a>, offset: u64 },
}

impl<W: AsyncWrite + Unpin + Send> Sink<'_, W> {
    async fn write(&mut self, c: Chunk) -> Result<()> {
        match self {
            Sink::Writer { writer, key } => writer
                .write_all(c.as_slice())
                .await
                .map_err(|e| Error::local("write", format!("stream of {key}"), e)),
            Sink::File { file, offset } => {
                let n = c.len() as u64;
                file.write_at(c, *offset).await?;
                *offset += n;
                Ok(())
            }
        }
    }

    async fn flush(&mut self) -> Result<()> {
        match self {
            Sink::Writer { writer, key } => writer
                .flush()
                .await
                .map_err(|e| Error::local("flush", format!("stream of {key}"), e)),
            Sink::File { .. } => Ok(()),
        }
    }
}

/// Hands a fetched range to the sink in order, hashing it on the way.
async fn deliver<W: AsyncWrite + Unpin + Send>(
    chunks: Vec<Chunk>,
    hasher: &mut LayoutHasher,
    sink: &mut Sink<'_, W>,
    progress: &Progressor,
) -> Result<()> {
    for c in chunks {
        hasher.update(c.as_slice());
        let n = c.len() as u64;
        sink.write(c).await?;
        progress.add(n);
    }
    Ok(())
}

/// Hashes bytes that arrive in order, one digest per part of a layout.
struct LayoutHasher {
    layout: PartLayout,
    algo: Option<ChecksumAlgorithm>,
    current: PartHasher,
    done: Vec<PartDigest>,
}

impl LayoutHasher {
    fn new(layout: PartLayout, algo: Option<ChecksumAlgorithm>) -> Self {
        LayoutHasher {
            layout,
            algo,
            current: PartHasher::with_checksum(algo),
            done: Vec::new(),
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let (_, len) = self.layout.part(self.done.len() as u64);
            let room = len.saturating_sub(self.current.len());
            if room == 0 {
                // Past the layout's end (the object grew): keep hashing into the last part; the size
                // check reports it.
                self.current.update(data);
                return;
            }
            let n = (room as usize).min(data.len());
            self.current.update(&data[..n]);
            data = &data[n..];
            if n as u64 == room && (self.done.len() as u64) + 1 < self.layout.part_count() {
                let full = std::mem::replace(&mut self.current, PartHasher::with_checksum(self.algo));
                self.done.push(full.finish_all());
            }
        }
    }

    fn finish(mut self) -> Vec<PartDigest> {
        self.done.push(self.current.finish_all());
        self.done
    }
}

/// Fills `c` from `r` up to `want` bytes (or its capacity); true at the end of the stream.
async fn fill<R: AsyncRead + Unpin>(r: &mut R, c: &mut Chunk, want: usize) -> std::io::Result<bool> {
    let want = want.min(c.capacity());
    while c.len() < want {
        let room = want - c.len();
        let n = r.read(&mut c.spare_mut()[..room]).await?;
        if n == 0 {
            return Ok(true);
        }
        c.advance(n);
    }
    Ok(false)
}

/// MD5 and the additional checksum of a part's chunks, on a blocking thread when the part is large.
async fn hash(chunks: Vec<Bytes>, algo: Option<ChecksumAlgorithm>) -> Result<PartDigest> {
    let len: u64 = chunks.iter().map(|c| c.len() as u64).sum();
    let work = move || {
        let mut h = PartHasher::with_checksum(algo);
        chunks.iter().for_each(|c| h.update(c));
        h.finish_all()
    };
    if len < OFFLOAD_HASH_BYTES {
        return Ok(work());
    }
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::local("hash", "part", std::io::Error::other(e)))
}

fn checksum_header(
    checksum: Option<(ChecksumAlgorithm, ChecksumType)>,
    d: &PartDigest,
) -> Option<crate::storage::s3::ChecksumValue> {
    checksum.and_then(|(a, _)| Some((a, additional::to_base64(d.checksum.as_ref()?))))
}

/// Runs `fut` unless `cancel` fires first.
async fn cancellable<T>(
    cancel: Option<&CancellationToken>,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match cancel {
        None => fut.await,
        Some(t) => tokio::select! {
            r = fut => r,
            _ = t.cancelled() => Err(Error::Cancelled),
        },
    }
}

/// The result of a spawned task (a panic becomes an error, never a panic of the caller).
fn joined<T>(r: std::result::Result<Result<T>, tokio::task::JoinError>) -> Result<T> {
    r.map_err(|e| Error::local("join", "transfer task", std::io::Error::other(e)))?
}

/// Counts bytes and calls the user's progress callback.
#[derive(Clone)]
struct Progressor {
    f: Option<ProgressFn>,
    total: Option<u64>,
    bytes: Arc<AtomicU64>,
}

impl Progressor {
    fn new(f: Option<ProgressFn>, total: Option<u64>) -> Self {
        Progressor {
            f,
            total,
            bytes: Arc::new(AtomicU64::new(0)),
        }
    }

    fn add(&self, n: u64) {
        let bytes = self.bytes.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(f) = &self.f {
            f(Progress {
                bytes,
                total: self.total,
            });
        }
    }
}

/// One part of a multipart upload, uploaded in a task of its own.
struct PartTask {
    s3: S3Storage,
    key: String,
    upload_id: String,
    number: i32,
    chunks: Vec<Bytes>,
    checksum: Option<ChecksumAlgorithm>,
    retry: RetryConfig,
    progress: Progressor,
}

impl PartTask {
    async fn run(self) -> Result<(PartInfo, PartDigest)> {
        let PartTask {
            s3,
            key,
            upload_id,
            number,
            chunks,
            checksum,
            retry,
            progress,
        } = self;
        let digest = hash(chunks.clone(), checksum).await?;
        let header = checksum.and_then(|a| Some((a, additional::to_base64(digest.checksum.as_ref()?))));
        let md5 = hex::encode(digest.md5);
        let send = || {
            s3.upload_part(
                &key,
                &upload_id,
                number,
                chunks.clone(),
                Some(transfer::b64(&digest.md5)),
                &header,
            )
        };
        let written = crate::retry::retry(&retry, &key, "part", send).await?;
        let sent = header.as_ref().map(|(_, v)| v.as_str());
        Policy::everything(s3.has_sse_c()).check_part(&key, number, (&md5, sent), &written)?;
        progress.add(digest.len);
        Ok((
            PartInfo {
                number,
                etag: written.etag,
                checksum: header,
            },
            digest,
        ))
    }
}

/// One range of a download, fetched into pool chunks in a task of its own.
struct RangeTask {
    s3: S3Storage,
    key: String,
    etag: Option<String>,
    range: (u64, u64),
    retry: RetryConfig,
    opaque: Arc<std::sync::atomic::AtomicBool>,
}

impl RangeTask {
    /// Fetches the range into `chunks` (exactly enough for it), retrying it alone on retryable errors
    /// with the same memory.
    async fn run(self, mut chunks: Vec<Chunk>) -> Result<Vec<Chunk>> {
        let mut attempts = crate::retry::Attempts::new(&self.retry);
        loop {
            chunks.iter_mut().for_each(Chunk::clear);
            match self.fetch(&mut chunks).await {
                Err(e) if attempts.allow(&e) => attempts.pause(&self.key, "range", &e).await,
                Err(e) => return Err(e),
                Ok(()) => return Ok(chunks),
            }
        }
    }

    async fn fetch(&self, chunks: &mut [Chunk]) -> Result<()> {
        let (offset, len) = self.range;
        if len == 0 {
            return Ok(());
        }
        let ranged = self
            .s3
            .get_range(&self.key, None, self.etag.as_deref(), offset, len)
            .await?;
        if !ranged.etag_is_md5 {
            self.opaque.store(true, Ordering::Relaxed);
        }
        let mut body = ranged.body;
        let mut got = 0u64;
        let mut slot = 0;
        while let Some(frame) = body.next().await {
            let frame = frame.map_err(|e| transfer::stream_error(&self.key, self.s3.bucket(), e))?;
            let mut data = &frame[..];
            while !data.is_empty() {
                let Some(c) = chunks.get_mut(slot) else {
                    return Err(Error::ObjectChanged {
                        key: self.key.clone(),
                        message: "the object is larger than its HEAD said".into(),
                    });
                };
                let n = c.extend_from_slice(data);
                data = &data[n..];
                got += n as u64;
                if c.remaining() == 0 {
                    slot += 1;
                }
            }
        }
        if got != len {
            return Err(Error::s3(
                "GetObject",
                self.s3.bucket().to_string(),
                self.key.clone(),
                S3ErrorKind::Retryable,
                format!("got {got} bytes, expected {len} (truncated response or object changed)"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn layout_hasher_cuts_at_the_object_parts_whatever_the_pieces() {
        let data = bytes(3 * 1000 + 17);
        let layout = PartLayout::multipart(data.len() as u64, 1000);
        let want: Vec<Md5Digest> = data.chunks(1000).map(crate::checksum::md5_of).collect();
        for piece in [1usize, 7, 999, 1000, 1001, 4096] {
            let mut h = LayoutHasher::new(layout, None);
            data.chunks(piece).for_each(|c| h.update(c));
            let got: Vec<Md5Digest> = h.finish().iter().map(|d| d.md5).collect();
            assert_eq!(got, want, "pieces of {piece}");
        }
        // A single-part object is one digest, however it arrives.
        let mut h = LayoutHasher::new(PartLayout::single(data.len() as u64), None);
        data.chunks(333).for_each(|c| h.update(c));
        let d = h.finish();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].md5, crate::checksum::md5_of(&data));
        // Bytes past the layout's end stay in the last digest, so the size check sees them.
        let mut h = LayoutHasher::new(PartLayout::multipart(2000, 1000), None);
        h.update(&bytes(2500));
        let d = h.finish();
        assert_eq!((d.len(), d[1].len), (2, 1500));
    }

    #[tokio::test]
    async fn fill_reads_in_place_until_full_or_the_end() {
        let pool = s3sync_io::ChunkPool::new(4096, 2).unwrap();
        let mut c = pool.acquire().await;
        let mut r: &[u8] = &[5u8; 6000];
        assert!(!fill(&mut r, &mut c, 10_000).await.unwrap(), "full before the end");
        assert_eq!(c.len(), 4096);
        let mut c2 = pool.acquire().await;
        assert!(fill(&mut r, &mut c2, 4096).await.unwrap(), "the end");
        assert_eq!(c2.len(), 6000 - 4096);
        assert!(c2.as_slice().iter().all(|&b| b == 5));
    }

    #[test]
    fn builder_refuses_what_s3_or_the_pool_cannot_take() {
        let client = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::Config::builder()
                .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
                .region(aws_sdk_s3::config::Region::new("us-east-1"))
                .build(),
        );
        let small_parts = Engine::builder().multipart(MIB, MIB).build_with_client(client.clone());
        assert!(matches!(small_parts, Err(Error::InvalidArgument(m)) if m.contains("5 MiB")));
        let threshold = Engine::builder()
            .multipart(16 * MIB, 8 * MIB)
            .build_with_client(client.clone());
        assert!(matches!(threshold, Err(Error::InvalidArgument(m)) if m.contains("threshold")));
        let sha_full = Engine::builder().checksum(ChecksumAlgorithm::Sha256, true);
        assert!(matches!(sha_full, Err(Error::InvalidArgument(_))));
        // A pool smaller than a part grows to one part and a chunk.
        let e = Engine::builder().pool_size(MIB).build_with_client(client).unwrap();
        assert_eq!(e.pool_size(), 8 * MIB + POOL_CHUNK_SIZE as u64);
    }
}
