//! Moving one object: upload (single or multipart), ranged parallel download written in place, S3→S3
//! through the client, and server-side copy. Every path hashes the bytes as they pass and verifies the
//! result against the digest the other side reports.

pub mod body;
pub mod resume;

use crate::checksum::additional;
use crate::checksum::{
    etag_from_parts, etag_is_md5_form, etag_part_count, Md5Digest, PartDigest, PartHasher, PartLayout,
};
use crate::config::Config;
use crate::error::{Error, Result, S3ErrorKind};
use crate::stats::Reporter;
use crate::storage::local::LocalStorage;
use crate::storage::s3::{CopySource, PartInfo, S3Storage, Written};
use crate::storage::Entry;
use base64::Engine as _;
use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use s3sync_io::{IoEngine, IoFile};
use std::path::PathBuf;
use std::sync::Arc;
use tracing::{debug, trace};

/// One end of a sync.
#[derive(Debug, Clone)]
pub enum End {
    /// A local directory.
    Local(LocalStorage),
    /// An S3 bucket and prefix.
    S3(S3Storage),
}

/// The result of moving one object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Moved {
    /// Bytes moved.
    pub bytes: u64,
    /// Whether the ETag was verified end to end.
    pub etag_verified: bool,
    /// Whether the additional checksum was verified end to end.
    pub checksum_verified: bool,
    /// Something the user should know although the object arrived (e.g. it could not be verified).
    pub warning: Option<String>,
    /// The preprocess callback cancelled the object: nothing was written.
    pub cancelled: bool,
}

/// Everything a transfer needs, shared by all workers.
pub struct Transferer {
    /// The I/O engine and its chunk pool, created on first use (a run with nothing to transfer never
    /// allocates or pins the pool).
    pub io: LazyIo,
    /// Source end.
    pub source: End,
    /// Target end.
    pub target: End,
    /// The configuration.
    pub cfg: Arc<Config>,
    /// Progress and statistics.
    pub reporter: Arc<Reporter>,
    /// Rate limits.
    pub limits: crate::ratelimit::Limits,
    /// The resume journal of multipart uploads (none in dry runs or without a writable state dir).
    pub journal: Option<resume::Journal>,
    /// Clean-ups started by cancelled transfers (multipart aborts), awaited before the run ends.
    pub cleanups: Cleanups,
    /// Local directories that received files since their last fsync.
    pub dirty_dirs: DirtyDirs,
    /// Stops the whole run on an error that must not be retried per object (a failing callback).
    pub stop: Arc<crate::pipeline::Stop>,
}

/// Directories whose new entries (renamed-in files) are not yet durable. Each is fsynced once, when
/// the set grows past a bound and at the end of the run, instead of once per file.
#[derive(Debug, Default)]
pub struct DirtyDirs(std::sync::Mutex<std::collections::HashSet<PathBuf>>);

impl DirtyDirs {
    /// At most this many directories wait for their fsync.
    const BOUND: usize = 1024;

    /// Notes that `dir` received a file; flushes everything when the set is full. Not called with
    /// `--no-fsync`.
    pub async fn add(&self, dir: &std::path::Path) {
        let full = match self.0.lock() {
            Ok(mut set) => {
                set.insert(dir.to_path_buf());
                set.len() >= Self::BOUND
            }
            Err(_) => false,
        };
        if full {
            self.flush().await;
        }
    }

    /// Fsyncs every noted directory (errors are logged: the files themselves are already durable).
    pub async fn flush(&self) {
        let dirs: Vec<PathBuf> = match self.0.lock() {
            Ok(mut set) => set.drain().collect(),
            Err(_) => return,
        };
        if dirs.is_empty() {
            return;
        }
        let _ = tokio::task::spawn_blocking(move || {
            for d in dirs {
                if let Err(e) = std::fs::File::open(&d).and_then(|f| f.sync_all()) {
                    debug!(dir = %d.display(), error = %e, "cannot fsync the directory");
                }
            }
        })
        .await;
    }
}

/// The I/O engine of a run, created when the first transfer needs it.
#[derive(Debug)]
pub struct LazyIo {
    cell: std::sync::OnceLock<IoEngine>,
    /// Held while the engine is built, so transfers starting together build one pool and one ring
    /// (each pool registered with a ring pins all its memory).
    building: std::sync::Mutex<()>,
    pool_bytes: u64,
    local_files: bool,
    /// Engines built (tests check that it is one).
    #[cfg(test)]
    builds: std::sync::atomic::AtomicUsize,
}

impl LazyIo {
    /// An engine whose pool will hold `pool_bytes` in chunks of [`crate::config::POOL_CHUNK_SIZE`].
    /// Without `local_files` (S3 to S3) the pool is only memory for the bytes in flight: no ring is
    /// set up and no chunk is registered (registering pins, and so touches, the whole pool).
    pub fn new(pool_bytes: u64, local_files: bool) -> Self {
        LazyIo {
            cell: std::sync::OnceLock::new(),
            building: std::sync::Mutex::new(()),
            pool_bytes,
            local_files,
            #[cfg(test)]
            builds: Default::default(),
        }
    }

    /// The engine, creating it (and allocating the pool) on first use.
    pub fn get(&self) -> Result<&IoEngine> {
        if let Some(io) = self.cell.get() {
            return Ok(io);
        }
        let _building = self.building.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(io) = self.cell.get() {
            return Ok(io);
        }
        let cs = crate::config::POOL_CHUNK_SIZE;
        let pool = s3sync_io::ChunkPool::new(cs, (self.pool_bytes as usize).div_ceil(cs))?;
        let io = match self.local_files {
            true => IoEngine::new(pool)?,
            false => IoEngine::with_backend(pool, s3sync_io::BackendKind::Tokio)?,
        };
        #[cfg(test)]
        self.builds.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        debug!(
            backend = ?io.backend(),
            built_for = env!("S3SYNC_BUILD_BACKEND"),
            fixed_chunks = io.fixed_buffer_chunks(),
            chunks = io.pool().capacity(),
            pool_bytes = self.pool_bytes,
            "I/O engine ready"
        );
        Ok(self.cell.get_or_init(|| io))
    }
}

/// Background clean-up tasks that must finish before the process exits.
#[derive(Debug, Clone, Default)]
pub struct Cleanups(Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>);

impl Cleanups {
    pub(crate) fn push(&self, h: tokio::task::JoinHandle<()>) {
        if let Ok(mut v) = self.0.lock() {
            v.retain(|h| !h.is_finished());
            v.push(h);
        }
    }

    /// Waits for every clean-up started so far.
    pub async fn wait(&self) {
        let handles: Vec<_> = match self.0.lock() {
            Ok(mut v) => v.drain(..).collect(),
            Err(_) => return,
        };
        for h in handles {
            let _ = h.await;
        }
    }
}

/// Parts at least this large are hashed on a blocking thread (see `read_part`).
const OFFLOAD_HASH_BYTES: u64 = 1024 * 1024;

/// What an upload reported and what was computed from its bytes.
struct Uploaded {
    written: Written,
    computed_etag: String,
    computed_checksum: Option<String>,
}

/// The bytes an upload reads: where from, their identity for resuming, and the ETag they must have
/// (an S3 source's, when its part layout is known).
struct UploadSource<'a> {
    parts: PartSource<'a>,
    id: String,
    expected_etag: Option<String>,
}

/// Where the bytes of a part come from.
enum PartSource<'a> {
    Local(&'a IoFile),
    S3(S3Part<'a>),
}

/// An S3 object read in ranges, all pinned to the listed version or ETag.
struct S3Part<'a> {
    s3: &'a S3Storage,
    key: &'a str,
    version: Option<&'a str>,
    etag: Option<&'a str>,
    /// Set when a response says the object's ETag is not an MD5 of its bytes (SSE-KMS, SSE-C).
    opaque_etag: &'a std::sync::atomic::AtomicBool,
    /// A GET of the whole object already under way (its headers gave the attributes), taken by the
    /// read of the whole object.
    opened: std::sync::Mutex<Option<Box<Opened>>>,
}

/// A GET of a whole object under way, with the pool memory its bytes will fill (taken before the
/// request, so a response never waits unread for memory).
struct Opened {
    body: aws_sdk_s3::primitives::ByteStream,
    len: u64,
    chunks: Vec<s3sync_io::Chunk>,
    etag_is_md5: bool,
}

impl S3Part<'_> {
    /// GETs `len` bytes at `offset`, noting whether the response says the ETag is opaque.
    async fn get_range(&self, offset: u64, len: u64) -> Result<aws_sdk_s3::primitives::ByteStream> {
        let ranged = self
            .s3
            .get_range(self.key, self.version, self.etag, offset, len)
            .await?;
        if !ranged.etag_is_md5 {
            self.opaque_etag.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(ranged.body)
    }

    /// The GET under way, when it covers exactly `len` bytes at `offset` (the first read only).
    fn take_opened(&self, offset: u64, len: u64) -> Option<Box<Opened>> {
        let mut opened = self.opened.lock().unwrap_or_else(|p| p.into_inner());
        match opened.as_ref() {
            Some(o) if offset == 0 && o.len == len => opened.take(),
            _ => None,
        }
    }

    /// Whether a response so far said that the object's ETag is not an MD5 of its bytes.
    fn etag_is_opaque(&self) -> bool {
        self.opaque_etag.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Aborts a multipart upload unless disarmed, also when the owning task is cancelled.
pub(crate) struct AbortGuard {
    pub(crate) s3: S3Storage,
    pub(crate) key: String,
    pub(crate) upload_id: String,
    pub(crate) armed: bool,
    pub(crate) cleanups: Cleanups,
    pub(crate) journal: Option<PathBuf>,
}

impl AbortGuard {
    /// Awaits one step of the upload; a failed step aborts the upload.
    pub(crate) async fn step<T>(&mut self, fut: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        match fut.await {
            Ok(v) => Ok(v),
            Err(e) => {
                self.abort_now().await;
                Err(e)
            }
        }
    }

    async fn abort_now(&mut self) {
        if !self.armed {
            return;
        }
        self.armed = false;
        if let Some(p) = &self.journal {
            resume::Journal::remove(p);
        }
        if let Err(e) = self.s3.abort_multipart(&self.key, &self.upload_id).await {
            tracing::warn!(key = %self.key, error = %e, "could not abort the multipart upload");
        }
    }

    /// The upload completed: nothing to abort, its journal record is done.
    pub(crate) fn finish(mut self) {
        self.armed = false;
        if let Some(p) = &self.journal {
            resume::Journal::remove(p);
        }
    }
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if self.armed {
            let (s3, key, id) = (self.s3.clone(), self.key.clone(), self.upload_id.clone());
            let journal = self.journal.take();
            if let Ok(h) = tokio::runtime::Handle::try_current() {
                self.cleanups.push(h.spawn(async move {
                    match s3.abort_multipart(&key, &id).await {
                        Ok(()) => {
                            if let Some(p) = journal {
                                resume::Journal::remove(&p);
                            }
                            tracing::info!(key, "aborted the unfinished multipart upload")
                        }
                        Err(e) => tracing::warn!(key, error = %e, "could not abort the multipart upload"),
                    }
                }));
            }
        }
    }
}

/// Removes a temporary file unless disarmed (also on cancellation).
pub(crate) struct TempGuard {
    pub(crate) path: PathBuf,
    pub(crate) armed: bool,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Starts a multipart upload in a task of its own: if the caller is cancelled while the request is in
/// flight, the upload the server creates is aborted as soon as its id arrives, never orphaned.
pub(crate) async fn create_multipart(
    cleanups: &Cleanups,
    target: &S3Storage,
    key: &str,
    attrs: &crate::attributes::ObjectAttributes,
    checksum: Option<(additional::ChecksumAlgorithm, additional::ChecksumType)>,
) -> Result<String> {
    let (t, k, a) = (target.clone(), key.to_string(), attrs.clone());
    let (tx, rx) = tokio::sync::oneshot::channel();
    cleanups.push(tokio::spawn(async move {
        let created = t.create_multipart(&k, &a, checksum).await;
        if let Err(Ok(id)) = tx.send(created) {
            match t.abort_multipart(&k, &id).await {
                Ok(()) => tracing::info!(key = %k, "aborted a multipart upload created while cancelling"),
                Err(e) => tracing::warn!(key = %k, error = %e, "could not abort the multipart upload"),
            }
        }
    }));
    rx.await.map_err(|_| Error::Cancelled)?
}

pub(crate) fn b64(d: &Md5Digest) -> String {
    base64::engine::general_purpose::STANDARD.encode(d)
}

pub(crate) fn stream_error(key: &str, bucket: &str, e: impl std::fmt::Display) -> Error {
    Error::S3 {
        operation: "GetObject",
        bucket: bucket.to_string(),
        key: key.to_string(),
        kind: S3ErrorKind::Retryable,
        message: format!("the response body broke off (truncated or reset): {e}"),
    }
}

impl Transferer {
    fn chunk_size(&self) -> u64 {
        crate::config::POOL_CHUNK_SIZE as u64
    }

    /// How many bytes the chunk pool holds: the most one part may have.
    fn pool_bytes(&self) -> Result<u64> {
        Ok(self.io.get()?.pool().capacity() as u64 * self.chunk_size())
    }

    /// Moves one source entry to the target; `target` is the target object as listed (or looked up),
    /// whose ETag `--if-match` sends.
    pub async fn transfer(&self, entry: &Entry, target: Option<&Entry>) -> Result<Moved> {
        let cancelled = Moved {
            cancelled: true,
            ..Default::default()
        };
        match (&self.source, &self.target) {
            (End::Local(l), End::S3(t)) => {
                let mut attrs = self.cfg.attributes.for_target(None, &entry.key, entry.mtime);
                if !self.prepare_write(entry, target, None, &mut attrs).await? {
                    return Ok(cancelled);
                }
                self.upload_local(l, &t.for_object(&attrs), entry, &attrs).await
            }
            (End::S3(s), End::Local(l)) => self.download(s, l, entry).await,
            (End::S3(s), End::S3(t)) => {
                let opened = self.open_whole(s, entry).await?;
                let (mut attrs, head) = self
                    .source_attributes(s, entry, opened.as_ref().map(|(_, h)| h))
                    .await?;
                if !self.prepare_write(entry, target, head.as_ref(), &mut attrs).await? {
                    return Ok(cancelled);
                }
                let t = &t.for_object(&attrs);
                if self.cfg.server_side_copy {
                    self.server_side_copy(s, t, entry, &attrs).await
                } else {
                    self.copy_through_client(s, t, entry, &attrs, opened.map(|(o, _)| o))
                        .await
                }
            }
            (End::Local(_), End::Local(_)) => Err(Error::InvalidArgument("local to local is not supported".into())),
        }
    }

    /// Runs one part-level operation, retrying it alone (not the whole object) on retryable errors.
    async fn retry_part<T, F, Fut>(&self, key: &str, op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        crate::retry::retry(&self.cfg.retry, key, "part", op).await
    }

    /// The last step before an object is written to S3: the preconditions of `--if-match`,
    /// `--if-none-match` and `--copy-source-if-match`, then the preprocess callback, which may edit the
    /// attributes. `false`: the callback cancelled the object.
    async fn prepare_write(
        &self,
        entry: &Entry,
        target: Option<&Entry>,
        head: Option<&crate::storage::s3::HeadInfo>,
        attrs: &mut crate::attributes::ObjectAttributes,
    ) -> Result<bool> {
        let c = self.cfg.conditions;
        attrs.preconditions = crate::attributes::Preconditions {
            if_match: target.and_then(|t| t.etag.clone()).filter(|_| c.if_match),
            if_none_match: c.if_none_match,
            copy_source_if_match: entry.etag.clone().filter(|_| c.copy_source_if_match),
        };
        let Some(cb) = &self.cfg.callbacks.preprocess else {
            return Ok(true);
        };
        let info = crate::callback::SourceObjectInfo::new(entry, head, attrs);
        let mut upload = crate::callback::UploadMetadata::from_attributes(attrs);
        if !cb.preprocess(&info, &mut upload).await? {
            return Ok(false);
        }
        upload.apply_to(attrs)?;
        Ok(true)
    }

    /// Starts the GET of an S3 source object that will be copied through the client in one PutObject:
    /// its response headers carry the metadata and the tag count, so the object needs no HEAD and,
    /// without tags, no GetObjectTagging. `None` for the other objects (multipart layouts, server-side
    /// copies), and with a preprocess callback, which is shown the HEAD (it has the stored checksum).
    async fn open_whole(
        &self,
        source: &S3Storage,
        entry: &Entry,
    ) -> Result<Option<(Opened, crate::storage::s3::HeadInfo)>> {
        if self.cfg.server_side_copy
            || self.cfg.callbacks.preprocess.is_some()
            || !self.copied_whole(entry)
            || entry.size > self.pool_bytes()?
        {
            return Ok(None);
        }
        let n = entry.size.div_ceil(self.chunk_size()) as usize;
        let chunks = self.io.get()?.pool().acquire_many(n).await?;
        match source
            .open(&entry.key, entry.version_id.as_deref(), entry.etag.as_deref())
            .await
        {
            Ok((ranged, head)) => Ok(Some((
                Opened {
                    body: ranged.body,
                    len: entry.size,
                    chunks,
                    etag_is_md5: ranged.etag_is_md5,
                },
                head,
            ))),
            Err(Error::S3 {
                kind: S3ErrorKind::NotFound,
                ..
            }) => Err(vanished(&entry.key)),
            Err(e) => Err(with_key(e, &entry.key)),
        }
    }

    /// Whether an S3 source object is copied through the client in one PutObject: it was not
    /// uploaded in parts and is under the multipart threshold.
    fn copied_whole(&self, entry: &Entry) -> bool {
        entry.size < self.cfg.multipart_threshold && entry.etag.as_deref().is_none_or(|e| etag_part_count(e).is_none())
    }

    /// The target attributes of an S3 source object: its metadata and tags, each fetched only when
    /// the options (or a preprocess callback) need it; with the HEAD. `got` is what the response of a
    /// GET already under way said: then no HEAD is sent, and GetObjectTagging only when the object
    /// has tags (`x-amz-tagging-count`; S3 leaves the header out when there are none).
    async fn source_attributes(
        &self,
        source: &S3Storage,
        entry: &Entry,
        got: Option<&crate::storage::s3::HeadInfo>,
    ) -> Result<(
        crate::attributes::ObjectAttributes,
        Option<crate::storage::s3::HeadInfo>,
    )> {
        let opts = &self.cfg.attributes;
        let mut head = None;
        let tagged = match got.map(|g| g.tag_count) {
            None => true,
            Some(Some(n)) => n > 0,
            Some(None) => !source.tag_count_is_sent(),
        };
        let mut src = if let Some(g) = got {
            g.attributes.clone()
        } else if opts.needs_source_attributes() || self.cfg.callbacks.preprocess.is_some() {
            match source
                .head_version(&entry.key, None, entry.version_id.as_deref())
                .await?
            {
                Some(h) => {
                    let a = h.attributes.clone();
                    head = Some(h);
                    a
                }
                None => return Err(vanished(&entry.key)),
            }
        } else {
            Default::default()
        };
        if !opts.disable_tagging && opts.tagging.is_none() && tagged {
            src.tagging = source.get_tagging(&entry.key, entry.version_id.as_deref()).await?;
        }
        let mut attrs = opts.for_target(Some(src), &entry.key, entry.mtime);
        if self.cfg.enable_versioning {
            let t: chrono::DateTime<chrono::Utc> = entry.mtime.into();
            attrs.metadata.insert(
                crate::attributes::LAST_MODIFIED_METADATA.into(),
                t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            );
            if let Some(v) = &entry.version_id {
                attrs
                    .metadata
                    .insert(crate::attributes::VERSION_ID_METADATA.into(), v.clone());
            }
        }
        Ok((attrs, head))
    }

    /// Whether ETags of the target's new objects are MD5 digests of their bytes (not with SSE-C/KMS).
    fn target_etag_is_md5(&self) -> bool {
        let kms = matches!(self.cfg.attributes.sse.as_deref(), Some(s) if s.starts_with("aws:kms"));
        !kms && !matches!(&self.target, End::S3(t) if t.has_sse_c())
    }

    /// Whether the source's ETags are MD5 digests of their bytes (not with SSE-C).
    fn source_etag_is_md5(&self) -> bool {
        !matches!(&self.source, End::S3(s) if s.has_sse_c())
    }

    /// Reads `len` bytes at `offset` into pool chunks, hashing them in the same pass.
    async fn read_part(&self, src: &PartSource<'_>, offset: u64, len: u64) -> Result<(Vec<Bytes>, PartDigest)> {
        let cs = self.chunk_size();
        let n = len.div_ceil(cs) as usize;
        let opened = match src {
            PartSource::S3(p) => p.take_opened(offset, len),
            PartSource::Local(_) => None,
        };
        let (chunks, opened) = match opened {
            Some(o) => (o.chunks, Some(o.body)),
            None => (self.io.get()?.pool().acquire_many(n).await?, None),
        };
        let mut hasher = PartHasher::with_checksum(self.cfg.checksum.map(|c| c.0));
        let mut out = Vec::with_capacity(n);
        match src {
            PartSource::Local(file) => {
                let reads = chunks.into_iter().enumerate().map(|(i, c)| {
                    let off = offset + i as u64 * cs;
                    let want = cs.min(offset + len - off) as usize;
                    async move {
                        let c = self
                            .io
                            .get()?
                            .read_at(file, c, off, want)
                            .await
                            .map_err(|e| Error::local("read", "source file", e))?;
                        if c.len() < want {
                            return Err(Error::ObjectChanged {
                                key: String::new(),
                                message: "the file shrank while it was read".into(),
                            });
                        }
                        Ok(c)
                    }
                });
                self.limits.bytes(len).await;
                let chunks = futures::future::try_join_all(reads).await?;
                // The parts of one object are read by one task; hashing a large part on a blocking thread
                // lets the parts of a single large file use every core.
                let chunks = if len >= OFFLOAD_HASH_BYTES {
                    let (h, chunks) = tokio::task::spawn_blocking(move || {
                        chunks.iter().for_each(|c| hasher.update(c.as_slice()));
                        (hasher, chunks)
                    })
                    .await
                    .map_err(|e| Error::local("hash", "source file", std::io::Error::other(e)))?;
                    hasher = h;
                    chunks
                } else {
                    chunks.iter().for_each(|c| hasher.update(c.as_slice()));
                    chunks
                };
                for c in chunks {
                    self.reporter.add_bytes(c.len() as u64);
                    out.push(c.freeze());
                }
            }
            PartSource::S3(part) => {
                let (s3, key) = (part.s3, part.key);
                let mut body = match opened {
                    Some(body) => body,
                    None => part.get_range(offset, len).await?,
                };
                let mut pending = chunks.into_iter();
                let mut cur = pending.next();
                while let Some(frame) = body.next().await {
                    let frame = frame.map_err(|e| stream_error(key, s3.bucket(), e))?;
                    self.limits.bytes(frame.len() as u64).await;
                    let mut data = &frame[..];
                    while !data.is_empty() {
                        let Some(c) = cur.as_mut() else {
                            return Err(Error::ObjectChanged {
                                key: key.to_string(),
                                message: "the object is larger than listed".into(),
                            });
                        };
                        let n = c.extend_from_slice(data);
                        data = &data[n..];
                        if c.remaining() == 0 {
                            if let Some(full) = cur.take() {
                                hasher.update(full.as_slice());
                                self.reporter.add_bytes(full.len() as u64);
                                out.push(full.freeze());
                            }
                            cur = pending.next();
                        }
                    }
                }
                if let Some(c) = cur.filter(|c| !c.is_empty()) {
                    hasher.update(c.as_slice());
                    self.reporter.add_bytes(c.len() as u64);
                    out.push(c.freeze());
                }
            }
        }
        if hasher.len() != len {
            return Err(Error::S3 {
                operation: "GetObject",
                bucket: String::new(),
                key: String::new(),
                kind: S3ErrorKind::Retryable,
                message: format!(
                    "got {} bytes, expected {len} (truncated response or object changed)",
                    hasher.len()
                ),
            });
        }
        Ok((out, hasher.finish_all()))
    }

    /// Writes an object to S3 with the given layout, reading its parts from `src`; returns what S3
    /// reports and what was computed from the bytes.
    async fn put_with_layout(
        &self,
        target: &S3Storage,
        key: &str,
        source: UploadSource<'_>,
        layout: PartLayout,
        attrs: &crate::attributes::ObjectAttributes,
    ) -> Result<Uploaded> {
        let UploadSource {
            parts: src,
            id: source_id,
            expected_etag,
        } = source;
        let largest_part = if layout.multipart {
            layout.part_size.min(layout.size)
        } else {
            layout.size
        };
        let pool = self.pool_bytes()?;
        if largest_part > pool {
            return Err(Error::PartTooLarge {
                key: key.to_string(),
                part_size: largest_part,
                pool,
            });
        }
        // Bytes read from an S3 source are checked against its ETag before anything is committed, so a
        // corrupted read never becomes the target object.
        let opaque = |src: &PartSource<'_>| match src {
            PartSource::S3(p) => p.etag_is_opaque(),
            PartSource::Local(_) => false,
        };
        let check_source = |computed: &str| match expected_etag {
            Some(want) if self.cfg.verify_etag && !opaque(&src) && want != computed => Err(Error::Verification {
                what: "source ETag",
                key: key.to_string(),
                expected: want.to_string(),
                actual: computed.to_string(),
            }),
            _ => Ok(()),
        };
        let md5_header = |d: &Md5Digest| self.cfg.content_md5.then(|| b64(d));
        let checksum_header = |p: &PartDigest| {
            self.cfg
                .checksum
                .and_then(|(a, _)| Some((a, additional::to_base64(p.checksum.as_ref()?))))
        };
        let object_checksum = |parts: &[PartDigest]| {
            self.cfg
                .checksum
                .and_then(|(a, kind)| crate::checksum::object_checksum(a, kind, &layout, parts))
        };
        if !layout.multipart {
            let (body, digest) = self.read_part(&src, 0, layout.size).await?;
            check_source(&etag_from_parts(&[digest.md5], false))?;
            let written = target
                .put_object(key, body, md5_header(&digest.md5), &checksum_header(&digest), attrs)
                .await?;
            let parts = [digest];
            return Ok(Uploaded {
                computed_etag: etag_from_parts(&[parts[0].md5], false),
                computed_checksum: object_checksum(&parts),
                written,
            });
        }
        let (upload_id, journal, reuse) = self.start_or_resume(target, key, attrs, &layout, &source_id).await?;
        let mut guard = AbortGuard {
            s3: target.clone(),
            key: key.to_string(),
            upload_id: upload_id.clone(),
            armed: true,
            cleanups: self.cleanups.clone(),
            journal,
        };
        let src = &src;
        let upload_id_ref = &upload_id;
        let reuse = &reuse;
        let parts = stream::iter(layout.parts())
            .map(|(i, off, len)| async move {
                let (body, digest) = self.retry_part(key, || self.read_part(src, off, len)).await?;
                let n = i as i32 + 1;
                let checksum = checksum_header(&digest);
                let md5 = hex::encode(digest.md5);
                if let Some((etag, size)) = reuse.get(&n) {
                    if *size == len && *etag == md5 {
                        debug!(key, part = n, "part already uploaded by an earlier run; reused");
                        return Ok((
                            PartInfo {
                                number: n,
                                etag: etag.clone(),
                                checksum,
                            },
                            digest,
                        ));
                    }
                }
                let written = self
                    .retry_part(key, || {
                        target.upload_part(key, upload_id_ref, n, body.clone(), md5_header(&digest.md5), &checksum)
                    })
                    .await?;
                if self.cfg.verify_etag
                    && self.target_etag_is_md5()
                    && written.etag_is_md5
                    && etag_is_md5_form(&written.etag)
                    && written.etag != md5
                {
                    return Err(Error::Verification {
                        what: "part ETag",
                        key: format!("{key} (part {n})"),
                        expected: md5,
                        actual: written.etag,
                    });
                }
                if let (Some((_, sent)), Some(got), true) =
                    (&checksum, &written.checksum, self.cfg.verify_additional_checksum)
                {
                    if sent != got {
                        return Err(Error::Verification {
                            what: "part checksum",
                            key: format!("{key} (part {n})"),
                            expected: got.clone(),
                            actual: sent.clone(),
                        });
                    }
                }
                Ok((
                    PartInfo {
                        number: n,
                        etag: written.etag,
                        checksum,
                    },
                    digest,
                ))
            })
            .buffer_unordered(self.cfg.max_parallel_uploads)
            .try_collect::<Vec<(PartInfo, PartDigest)>>();
        let mut parts = guard.step(parts).await?;
        parts.sort_by_key(|p| p.0.number);
        let (infos, digests): (Vec<PartInfo>, Vec<PartDigest>) = parts.into_iter().unzip();
        let md5s: Vec<Md5Digest> = digests.iter().map(|d| d.md5).collect();
        guard
            .step(async { check_source(&etag_from_parts(&md5s, true)) })
            .await?;
        let computed_checksum = object_checksum(&digests);
        let full_object_value = match (self.cfg.checksum, &computed_checksum) {
            (Some((a, additional::ChecksumType::FullObject)), Some(v)) => Some((a, v.clone())),
            _ => None,
        };
        let complete = target.complete_multipart(
            key,
            &upload_id,
            infos,
            self.cfg.checksum,
            full_object_value,
            &attrs.preconditions,
        );
        let written = guard.step(complete).await?;
        guard.finish();
        Ok(Uploaded {
            computed_etag: etag_from_parts(&md5s, true),
            computed_checksum,
            written,
        })
    }

    /// Starts a multipart upload that is aborted, never orphaned, if this transfer is cancelled while
    /// the request is in flight.
    async fn create_multipart(
        &self,
        target: &S3Storage,
        key: &str,
        attrs: &crate::attributes::ObjectAttributes,
        checksum: Option<(additional::ChecksumAlgorithm, additional::ChecksumType)>,
    ) -> Result<String> {
        create_multipart(&self.cleanups, target, key, attrs, checksum).await
    }

    /// After a completed run, uploads of ours to this target that are still in the journal were not
    /// needed by this run (their objects are up to date, e.g. the process was killed after the server
    /// completed the upload): abort them and forget them.
    pub async fn sweep_journal(&self) {
        let (Some(journal), End::S3(target)) = (&self.journal, &self.target) else {
            return;
        };
        for (path, rec) in journal.records() {
            if rec.bucket != target.bucket() || !rec.key.starts_with(target.prefix()) {
                continue;
            }
            if rec.owned_by_live_run(&path) {
                debug!(key = %rec.key, "multipart upload of another live run left alone");
                continue;
            }
            let key = &rec.key[target.prefix().len()..];
            match target.abort_multipart(key, &rec.upload_id).await {
                Ok(()) => tracing::info!(key, "aborted a stale multipart upload of an earlier run"),
                Err(e) => debug!(key, error = %e, "stale multipart upload already gone"),
            }
            resume::Journal::remove(&path);
        }
    }

    /// Starts a multipart upload, or resumes the one an interrupted earlier run left for the same key
    /// and the same source bytes (the parts already on the server are reused when their ETags match).
    /// A stale upload of ours is aborted. Returns the upload id, its journal record and the parts
    /// already uploaded.
    async fn start_or_resume(
        &self,
        target: &S3Storage,
        key: &str,
        attrs: &crate::attributes::ObjectAttributes,
        layout: &PartLayout,
        source_id: &str,
    ) -> Result<(String, Option<PathBuf>, std::collections::HashMap<i32, (String, u64)>)> {
        let mut reuse = std::collections::HashMap::new();
        let mut path = self
            .journal
            .as_ref()
            .map(|j| j.path_for(target.bucket(), &target.full_key(key)));
        let mut record = path.as_deref().and_then(resume::Journal::load);
        if let (Some(p), Some(rec)) = (&path, &record) {
            if rec.owned_by_live_run(p) {
                // Another live run is uploading this key: neither resume nor abort its upload, and
                // keep its record.
                debug!(
                    key,
                    "another live run is uploading this key; starting a separate upload"
                );
                (path, record) = (None, None);
            }
        }
        if let Some(p) = &path {
            if let Some(rec) = record {
                let same = rec.size == layout.size
                    && rec.source_id == source_id
                    && rec.part_size == layout.part_size
                    && self.cfg.checksum.is_none();
                let parts = if same {
                    target.list_parts(key, &rec.upload_id).await.ok().flatten()
                } else {
                    None
                };
                match parts {
                    Some(parts) => {
                        tracing::info!(
                            key,
                            parts = parts.len(),
                            "resuming the multipart upload of an interrupted run"
                        );
                        reuse = parts.into_iter().map(|(n, e, sz)| (n, (e, sz))).collect();
                        // The upload is ours now: other runs must see a live owner.
                        let adopted = resume::UploadRecord {
                            owner: crate::owner::Owner::current().token(),
                            ..rec.clone()
                        };
                        if let Err(e) = resume::Journal::save(p, &adopted) {
                            debug!(key, error = %e, "cannot write the resume journal");
                        }
                        return Ok((rec.upload_id, path, reuse));
                    }
                    None => {
                        if let Err(e) = target.abort_multipart(key, &rec.upload_id).await {
                            debug!(key, error = %e, "stale multipart upload could not be aborted (already gone?)");
                        }
                        resume::Journal::remove(p);
                    }
                }
            }
        }
        let upload_id = self.create_multipart(target, key, attrs, self.cfg.checksum).await?;
        if let Some(p) = &path {
            let rec = resume::UploadRecord {
                upload_id: upload_id.clone(),
                size: layout.size,
                source_id: source_id.to_string(),
                part_size: layout.part_size,
                bucket: target.bucket().to_string(),
                key: target.full_key(key),
                owner: crate::owner::Owner::current().token(),
            };
            if let Err(e) = resume::Journal::save(p, &rec) {
                debug!(key, error = %e, "cannot write the resume journal");
            }
        }
        Ok((upload_id, path, reuse))
    }

    /// Checks an uploaded object's ETag and additional checksum against those computed from the bytes.
    /// Returns what was verified, with a warning when the asked-for checksum is missing.
    fn verify_upload(&self, key: &str, layout: &PartLayout, up: &Uploaded) -> Result<Moved> {
        let mut warning = None;
        let mut checksum_verified = false;
        if let (Some((algo, _)), true) = (self.cfg.checksum, self.cfg.verify_additional_checksum) {
            match (&up.written.checksum, &up.computed_checksum) {
                (Some(got), Some(want)) if got == want => {
                    trace!(key, additional_checksum_algorithm = %algo, target_checksum = %got, source_checksum = %want, "additional checksum verified.");
                    checksum_verified = true;
                }
                (Some(got), Some(want)) => {
                    return Err(Error::Verification {
                        what: "additional checksum",
                        key: key.to_string(),
                        expected: got.clone(),
                        actual: want.clone(),
                    })
                }
                _ => {
                    warning = Some(format!(
                        "the server returned no {algo} checksum for the object: additional checksum not verified"
                    ))
                }
            }
        }
        let reported = &up.written.etag;
        let computed = &up.computed_etag;
        let unverified_etag = Moved {
            checksum_verified,
            warning: warning.clone(),
            ..Default::default()
        };
        if !self.cfg.verify_etag
            || (layout.multipart && !self.cfg.verify_multipart)
            || !self.target_etag_is_md5()
            || !up.written.etag_is_md5
        {
            return Ok(unverified_etag);
        }
        if !etag_is_md5_form(reported) {
            debug!(key, etag = %reported, "the target's ETag is not an MD5 form; not verifiable by ETag");
            return Ok(unverified_etag);
        }
        if reported != computed {
            return Err(Error::Verification {
                what: "ETag",
                key: key.to_string(),
                expected: reported.to_string(),
                actual: computed.to_string(),
            });
        }
        trace!(key, source_e_tag = %computed, target_e_tag = %reported, "e_tag verified.");
        Ok(Moved {
            etag_verified: true,
            checksum_verified,
            warning,
            ..Default::default()
        })
    }

    async fn upload_local(
        &self,
        local: &LocalStorage,
        target: &S3Storage,
        entry: &Entry,
        attrs: &crate::attributes::ObjectAttributes,
    ) -> Result<Moved> {
        let path = local.root().join(&entry.key);
        let file = self
            .io
            .get()?
            .open_read(&path)
            .await
            .map_err(|e| Error::local("open", &path, e))?;
        let size = file.len().map_err(|e| Error::local("stat", &path, e))?;
        let layout = PartLayout::for_upload(size, self.cfg.multipart_threshold, self.cfg.multipart_chunksize);
        // Identity of the bytes for resuming: size and the listed modification time.
        let mtime_ns = entry
            .mtime
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let source_id = format!("{size}-{mtime_ns}");
        let up = self
            .put_with_layout(
                target,
                &entry.key,
                UploadSource {
                    parts: PartSource::Local(&file),
                    id: source_id,
                    expected_etag: None,
                },
                layout,
                attrs,
            )
            .await
            .map_err(|e| with_key(e, &entry.key))?;
        Ok(Moved {
            bytes: size,
            ..self.verify_upload(&entry.key, &layout, &up)?
        })
    }

    async fn copy_through_client(
        &self,
        source: &S3Storage,
        target: &S3Storage,
        entry: &Entry,
        attrs: &crate::attributes::ObjectAttributes,
        opened: Option<Opened>,
    ) -> Result<Moved> {
        let src_etag = entry.etag.clone().unwrap_or_default();
        let opaque_etag = std::sync::atomic::AtomicBool::new(opened.as_ref().is_some_and(|o| !o.etag_is_md5));
        // Write with the source's own part layout when it is known, so the ETags come out identical.
        let (layout, known) = match etag_part_count(&src_etag) {
            _ if self.copied_whole(entry) => (PartLayout::single(entry.size), true),
            Some(_) => {
                self.layout_of_version(source, &entry.key, entry.version_id.as_deref(), entry.size, &src_etag)
                    .await?
            }
            None => (
                PartLayout::for_upload(entry.size, self.cfg.multipart_threshold, self.cfg.multipart_chunksize),
                false,
            ),
        };
        // Parts larger than the pool cannot be held: write with our own part size instead (the source
        // ETag is then not comparable; the target's is still verified).
        let fits_pool = !layout.multipart || layout.part_size <= self.pool_bytes()?;
        if !fits_pool {
            debug!(key = %entry.key, part_size = layout.part_size, "source parts exceed the chunk pool; using the configured part size");
        }
        let known = known && fits_pool;
        let layout = if layout.multipart && !known {
            PartLayout::for_upload(entry.size, self.cfg.multipart_threshold, self.cfg.multipart_chunksize)
        } else {
            layout
        };
        let up = self
            .put_with_layout(
                target,
                &entry.key,
                UploadSource {
                    parts: PartSource::S3(S3Part {
                        s3: source,
                        key: &entry.key,
                        version: entry.version_id.as_deref(),
                        etag: entry.etag.as_deref(),
                        opaque_etag: &opaque_etag,
                        opened: std::sync::Mutex::new(opened.map(Box::new)),
                    }),
                    id: src_etag.clone(),
                    expected_etag: (known && self.source_etag_is_md5() && etag_is_md5_form(&src_etag))
                        .then(|| src_etag.clone()),
                },
                layout,
                attrs,
            )
            .await
            .map_err(|e| with_key(e, &entry.key))?;
        let verified = self.verify_upload(&entry.key, &layout, &up)?;
        let mut warning = verified.warning.clone();
        let computed = up.computed_etag;
        let source_md5 = self.source_etag_is_md5() && !opaque_etag.load(std::sync::atomic::Ordering::Relaxed);
        if self.cfg.verify_etag && source_md5 && etag_is_md5_form(&src_etag) && computed != src_etag {
            if known {
                return Err(Error::Verification {
                    what: "source ETag",
                    key: entry.key.clone(),
                    expected: src_etag,
                    actual: computed,
                });
            }
            warning = Some(format!("source ETag {src_etag} not comparable with the written {computed} (part layout unknown); the target was verified"));
        }
        Ok(Moved {
            bytes: entry.size,
            warning,
            ..verified
        })
    }

    async fn server_side_copy(
        &self,
        source: &S3Storage,
        target: &S3Storage,
        entry: &Entry,
        attrs: &crate::attributes::ObjectAttributes,
    ) -> Result<Moved> {
        let key = &entry.key;
        let src_etag = entry.etag.clone().unwrap_or_default();
        let five_gib = 5 * 1024 * 1024 * 1024;
        let (layout, known) = match etag_part_count(&src_etag) {
            Some(_) => {
                self.layout_of_version(source, key, entry.version_id.as_deref(), entry.size, &src_etag)
                    .await?
            }
            None if entry.size <= five_gib => (PartLayout::single(entry.size), true),
            None => (
                PartLayout::for_upload(entry.size, self.cfg.multipart_threshold, self.cfg.multipart_chunksize),
                false,
            ),
        };
        self.limits.bytes(entry.size).await;
        let etag = if !layout.multipart {
            target
                .copy_object(key, source, key, entry.version_id.as_deref(), attrs)
                .await?
        } else {
            let upload_id = self.create_multipart(target, key, attrs, None).await?;
            let mut guard = AbortGuard {
                s3: target.clone(),
                key: key.clone(),
                upload_id: upload_id.clone(),
                armed: true,
                cleanups: self.cleanups.clone(),
                journal: None,
            };
            let upload_id_ref = &upload_id;
            let parts = stream::iter(layout.parts())
                .map(|(i, off, len)| async move {
                    let n = i as i32 + 1;
                    let etag = target
                        .upload_part_copy(
                            key,
                            upload_id_ref,
                            n,
                            CopySource {
                                storage: source,
                                key,
                                version: entry.version_id.as_deref(),
                            },
                            (off, len),
                            attrs.preconditions.copy_source_if_match_header(),
                        )
                        .await?;
                    Ok(PartInfo {
                        number: n,
                        etag,
                        checksum: None,
                    })
                })
                .buffer_unordered(self.cfg.max_parallel_uploads)
                .try_collect::<Vec<PartInfo>>();
            let mut parts = guard.step(parts).await?;
            parts.sort_by_key(|p| p.number);
            let written = guard
                .step(target.complete_multipart(key, &upload_id, parts, None, None, &attrs.preconditions))
                .await?;
            guard.finish();
            written.etag
        };
        self.reporter.add_bytes(entry.size);
        let mut verified = false;
        let mut warning = None;
        if self.cfg.verify_etag
            && self.source_etag_is_md5()
            && self.target_etag_is_md5()
            && etag_is_md5_form(&src_etag)
            && etag_is_md5_form(&etag)
        {
            if etag == src_etag {
                verified = true;
            } else if known {
                return Err(Error::Verification {
                    what: "ETag",
                    key: key.clone(),
                    expected: src_etag,
                    actual: etag,
                });
            } else {
                warning = Some(format!(
                    "ETag {etag} differs from the source's {src_etag} because the part layout differs; not verified"
                ));
            }
        }
        Ok(Moved {
            bytes: entry.size,
            etag_verified: verified,
            warning,
            ..Default::default()
        })
    }

    /// The part layout of an S3 object, learned from its ETag and, for multipart objects, a HEAD of
    /// part 1. The flag says whether the layout is certain.
    pub async fn layout_of(&self, s3: &S3Storage, key: &str, size: u64, etag: &str) -> Result<(PartLayout, bool)> {
        self.layout_of_version(s3, key, None, size, etag).await
    }

    /// [`Self::layout_of`] for one version of an object.
    pub async fn layout_of_version(
        &self,
        s3: &S3Storage,
        key: &str,
        version: Option<&str>,
        size: u64,
        etag: &str,
    ) -> Result<(PartLayout, bool)> {
        let Some(n) = etag_part_count(etag) else {
            return Ok((PartLayout::single(size), true));
        };
        if n == 1 {
            return Ok((PartLayout::multipart(size, size.max(1)), true));
        }
        if let Some(h) = s3.head_version(key, Some(1), version).await? {
            let part = h.entry.size;
            let layout = PartLayout::multipart(size, part);
            if h.parts_count == Some(n) && part > 0 && part < size && layout.part_count() == n {
                if !self.cfg.auto_chunksize {
                    return Ok((layout, true));
                }
                // --auto-chunksize: confirm every part's size, the HEADs in parallel.
                let sizes: Vec<(u64, Option<u64>)> = stream::iter(2..=n)
                    .map(|p| async move {
                        let got = s3
                            .head_version(key, Some(p as i32), version)
                            .await?
                            .map(|h| h.entry.size);
                        Ok::<_, Error>((p, got))
                    })
                    .buffer_unordered(self.cfg.max_parallel_uploads)
                    .try_collect()
                    .await?;
                let uniform = sizes.iter().all(|(p, got)| *got == Some(layout.part(p - 1).1));
                if uniform {
                    return Ok((layout, true));
                }
                debug!(key, "parts of unequal size: the layout cannot be reproduced");
            }
        }
        Ok((PartLayout::multipart(size, self.cfg.multipart_chunksize), false))
    }

    /// Creates the parent directories of a file to be written, never through a link; directories it
    /// creates are fsynced with the files at the end of the run.
    async fn create_parents(&self, local: &LocalStorage, key: &str, path: &std::path::Path) -> Result<()> {
        if local.create_parents(key, path).await? {
            let mut dir = path.parent();
            while let Some(d) = dir {
                if !d.starts_with(local.root()) {
                    break;
                }
                if self.cfg.fsync {
                    self.dirty_dirs.add(d).await;
                }
                dir = d.parent();
            }
        }
        Ok(())
    }

    async fn download(&self, source: &S3Storage, local: &LocalStorage, entry: &Entry) -> Result<Moved> {
        let key = &entry.key;
        let final_path = local.path_for(key).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        if entry.is_dir_marker() {
            self.create_parents(local, key, &final_path).await?;
            tokio::fs::create_dir_all(&final_path)
                .await
                .map_err(|e| Error::local("create directory", &final_path, e))?;
            return Ok(Moved::default());
        }
        let etag = entry.etag.clone().unwrap_or_default();
        let verify = self.cfg.verify_etag
            && self.source_etag_is_md5()
            && etag_is_md5_form(&etag)
            && (etag_part_count(&etag).is_none() || self.cfg.verify_multipart);
        // The stored additional checksum, when downloads are to be verified with it.
        let stored = match self.cfg.enable_additional_checksum && self.cfg.verify_additional_checksum {
            true => source
                .head_version(key, None, entry.version_id.as_deref())
                .await?
                .and_then(|h| h.checksum.map(|c| (c, h.full_object_checksum))),
            false => None,
        };
        let algo = stored.as_ref().map(|((a, _), _)| *a);
        let (layout, known) = if verify || stored.is_some() {
            self.layout_of_version(source, key, entry.version_id.as_deref(), entry.size, &etag)
                .await?
        } else {
            (PartLayout::multipart(entry.size, self.cfg.multipart_chunksize), false)
        };
        let tmp = LocalStorage::temp_path_for(&final_path);
        // The parents are made right before the temporary file goes in. A run deleting files in the
        // same tree (another shard with --delete) may remove a directory it emptied in between: then
        // make it again, once.
        self.create_parents(local, key, &final_path).await?;
        let file = match self.io.get()?.create_new(&tmp).await {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.create_parents(local, key, &final_path).await?;
                self.io.get()?.create_new(&tmp).await
            }
            other => other,
        }
        .map_err(|e| Error::local("create", &tmp, e))?;
        let mut guard = TempGuard {
            path: tmp.clone(),
            armed: true,
        };
        self.io
            .get()?
            .set_len(&file, entry.size)
            .await
            .map_err(|e| Error::local("allocate", &tmp, e))?;
        let file_ref = &file;
        let opaque_etag = std::sync::atomic::AtomicBool::new(false);
        let object = S3Part {
            s3: source,
            key,
            version: entry.version_id.as_deref(),
            etag: entry.etag.as_deref(),
            opaque_etag: &opaque_etag,
            opened: std::sync::Mutex::new(None),
        };
        let object = &object;
        let mut parts: Vec<(u64, PartDigest)> = stream::iter(layout.parts())
            .map(|(i, off, len)| async move {
                let digest = self
                    .retry_part(key, || {
                        self.download_range(object, file_ref, (off, len), (verify, algo))
                    })
                    .await?;
                Ok::<_, Error>((i, digest))
            })
            .buffer_unordered(self.cfg.max_parallel_uploads)
            .try_collect()
            .await
            .map_err(|e| with_key(e, key))?;
        parts.sort_by_key(|p| p.0);
        let parts: Vec<PartDigest> = parts.into_iter().map(|p| p.1).collect();
        let digests: Vec<Md5Digest> = parts.iter().map(|p| p.md5).collect();
        if self.cfg.fsync {
            self.io
                .get()?
                .fsync(&file)
                .await
                .map_err(|e| Error::local("fsync", &tmp, e))?;
        }
        drop(file);
        let mut verified = false;
        let mut warning = None;
        if verify && object.etag_is_opaque() {
            debug!(
                key,
                "the object is encrypted with SSE-KMS or SSE-C: its ETag is not an MD5, not verified"
            );
        } else if verify {
            let computed = etag_from_parts(&digests, layout.multipart);
            if computed == etag {
                verified = true;
                trace!(key, source_e_tag = %etag, target_e_tag = %computed, "e_tag verified.");
            } else if known {
                return Err(Error::Verification {
                    what: "ETag",
                    key: key.clone(),
                    expected: etag,
                    actual: computed,
                });
            } else {
                warning = Some(format!("ETag {etag} could not be verified: the object's part size is unknown (computed {computed} with {} byte parts)", layout.part_size));
            }
        }
        let mut checksum_verified = false;
        if let Some(((algo, value), full_object)) = stored {
            let computed = downloaded_checksum(algo, &value, full_object, &layout, known, &parts);
            match computed {
                Some(c) if c == value => {
                    trace!(key, additional_checksum_algorithm = %algo, source_checksum = %value, target_checksum = %c, "additional checksum verified.");
                    checksum_verified = true;
                }
                Some(c) => {
                    return Err(Error::Verification {
                        what: "additional checksum",
                        key: key.clone(),
                        expected: value,
                        actual: c,
                    })
                }
                None => {
                    warning = Some(format!(
                        "{algo} checksum {value} could not be verified: the object's part layout is unknown"
                    ))
                }
            }
        }
        let mtime = filetime::FileTime::from_system_time(entry.mtime);
        filetime::set_file_mtime(&tmp, mtime).map_err(|e| Error::local("set mtime", &tmp, e))?;
        // The directories may have been swapped for a link while the bytes arrived.
        local.check_no_link_on_path(key, &final_path)?;
        local.clear_empty_dir(key, &final_path).await?;
        self.io
            .get()?
            .rename(&tmp, &final_path)
            .await
            .map_err(|e| Error::local("rename", &final_path, e))?;
        guard.armed = false;
        if let Some(dir) = final_path.parent() {
            if self.cfg.fsync {
                self.dirty_dirs.add(dir).await;
            }
        }
        Ok(Moved {
            cancelled: false,
            bytes: entry.size,
            etag_verified: verified,
            checksum_verified,
            warning,
        })
    }

    /// Downloads one range into the file at its offset, one pool chunk at a time, hashing in flight.
    async fn download_range(
        &self,
        object: &S3Part<'_>,
        file: &IoFile,
        (offset, len): (u64, u64),
        (md5, algo): (bool, Option<additional::ChecksumAlgorithm>),
    ) -> Result<PartDigest> {
        let key = object.key;
        // MD5 only when the ETag will be compared (not with --disable-etag-verify, nor for ETags that
        // are not digests).
        let mut hasher = PartHasher::for_verification(md5, algo);
        // An empty object whose ETag is the MD5 of nothing needs no request; any other empty object is
        // fetched, so that its response tells whether its ETag is a digest at all (SSE-KMS).
        const EMPTY_MD5: &str = "d41d8cd98f00b204e9800998ecf8427e";
        if len == 0 && object.etag.is_none_or(|e| e == EMPTY_MD5) {
            return Ok(hasher.finish_all());
        }
        let mut body = object.get_range(offset, len).await?;
        let mut pos = offset;
        let mut cur = None;
        let write = |c: s3sync_io::Chunk, at: u64| async move {
            self.io
                .get()?
                .write_at(file, c, at)
                .await
                .map_err(|e| Error::local("write", "temporary file", e))
        };
        while let Some(frame) = body.next().await {
            let frame = frame.map_err(|e| stream_error(key, object.s3.bucket(), e))?;
            self.limits.bytes(frame.len() as u64).await;
            let mut data = &frame[..];
            while !data.is_empty() {
                if cur.is_none() {
                    cur = Some(self.io.get()?.pool().acquire().await);
                }
                let Some(c) = cur.as_mut() else { continue };
                let n = c.extend_from_slice(data);
                data = &data[n..];
                if c.remaining() == 0 {
                    if let Some(full) = cur.take() {
                        if pos + full.len() as u64 > offset + len {
                            return Err(Error::ObjectChanged {
                                key: key.to_string(),
                                message: "the object is larger than listed".into(),
                            });
                        }
                        hasher.update(full.as_slice());
                        let n = full.len() as u64;
                        write(full, pos).await?;
                        pos += n;
                        self.reporter.add_bytes(n);
                    }
                }
            }
        }
        if let Some(c) = cur.filter(|c| !c.is_empty()) {
            hasher.update(c.as_slice());
            let n = c.len() as u64;
            write(c, pos).await?;
            pos += n;
            self.reporter.add_bytes(n);
        }
        if pos != offset + len {
            return Err(Error::S3 {
                operation: "GetObject",
                bucket: object.s3.bucket().to_string(),
                key: key.to_string(),
                kind: S3ErrorKind::Retryable,
                message: format!(
                    "got {} bytes, expected {len} (truncated response or object changed)",
                    pos - offset
                ),
            });
        }
        Ok(hasher.finish_all())
    }

    /// The ETag of a local file computed with `layout`, reading it once through the pool.
    pub async fn local_etag(&self, path: &std::path::Path, layout: PartLayout) -> Result<String> {
        let digests: Vec<Md5Digest> = self
            .local_digests(path, layout, None)
            .await?
            .iter()
            .map(|d| d.md5)
            .collect();
        Ok(etag_from_parts(&digests, layout.multipart))
    }

    /// The per-part digests (MD5 and optionally one additional checksum) of a local file.
    pub async fn local_digests(
        &self,
        path: &std::path::Path,
        layout: PartLayout,
        algo: Option<additional::ChecksumAlgorithm>,
    ) -> Result<Vec<PartDigest>> {
        let file = self
            .io
            .get()?
            .open_read(path)
            .await
            .map_err(|e| Error::local("open", path, e))?;
        let cs = self.chunk_size();
        let mut digests = Vec::new();
        for (_, off, len) in layout.parts() {
            let mut hasher = PartHasher::with_checksum(algo);
            let mut pos = off;
            while pos < off + len {
                let want = cs.min(off + len - pos) as usize;
                let c = self.io.get()?.pool().acquire().await;
                let c = self
                    .io
                    .get()?
                    .read_at(&file, c, pos, want)
                    .await
                    .map_err(|e| Error::local("read", path, e))?;
                if c.len() < want {
                    return Err(Error::ObjectChanged {
                        key: path.display().to_string(),
                        message: "the file shrank while it was read".into(),
                    });
                }
                hasher.update(c.as_slice());
                pos += want as u64;
            }
            digests.push(hasher.finish_all());
        }
        Ok(digests)
    }

    /// Whether source and target hold the same bytes by ETag (for `--check-etag`). `None` when the
    /// ETags cannot be compared (then the object is transferred).
    pub async fn same_etag(&self, source: &Entry, target: &Entry) -> Result<Option<bool>> {
        match (&self.source, &self.target) {
            (End::S3(_), End::S3(_)) => Ok(match (&source.etag, &target.etag) {
                (Some(a), Some(b)) => Some(a == b),
                _ => None,
            }),
            (End::Local(l), End::S3(s3)) => {
                let Some(etag) = &target.etag else { return Ok(None) };
                let (layout, _) = self.layout_of(s3, &target.key, target.size, etag).await?;
                let local = self.local_etag(&l.root().join(&source.key), layout).await?;
                Ok(Some(&local == etag))
            }
            (End::S3(s3), End::Local(l)) => {
                let Some(etag) = &source.etag else { return Ok(None) };
                let path = l
                    .path_for(&target.key)
                    .map_err(|e| Error::InvalidArgument(e.to_string()))?;
                let (layout, _) = self.layout_of(s3, &source.key, source.size, etag).await?;
                let local = self.local_etag(&path, layout).await?;
                Ok(Some(&local == etag))
            }
            (End::Local(_), End::Local(_)) => Ok(None),
        }
    }

    /// Whether source and target hold the same bytes by additional checksum `algo` (for
    /// `--check-additional-checksum` and `--report-sync-status`). `None` when they cannot be compared:
    /// a side has no checksum of that algorithm, or the part layout is unknown.
    pub async fn same_checksum(
        &self,
        source: &Entry,
        target: &Entry,
        algo: additional::ChecksumAlgorithm,
    ) -> Result<Option<bool>> {
        let stored = |s3: &S3Storage, e: &Entry| {
            let s3 = s3.clone();
            let key = e.key.clone();
            async move {
                Ok::<_, Error>(s3.head(&key, None).await?.and_then(|h| {
                    h.checksum
                        .filter(|c| c.0 == algo)
                        .map(|c| (c.1, h.full_object_checksum, h.entry))
                }))
            }
        };
        match (&self.source, &self.target) {
            (End::S3(a), End::S3(b)) => {
                let (x, y) = (stored(a, source).await?, stored(b, target).await?);
                Ok(match (x, y) {
                    (Some((x, ..)), Some((y, ..))) => Some(x == y),
                    _ => None,
                })
            }
            (End::Local(l), End::S3(s3)) => {
                let path = l.root().join(&source.key);
                self.local_matches(&path, s3, stored(s3, target).await?, algo).await
            }
            (End::S3(s3), End::Local(l)) => {
                let path = l
                    .path_for(&target.key)
                    .map_err(|e| Error::InvalidArgument(e.to_string()))?;
                self.local_matches(&path, s3, stored(s3, source).await?, algo).await
            }
            (End::Local(_), End::Local(_)) => Ok(None),
        }
    }

    /// Computes a local file's checksum in the form of a stored S3 one and compares.
    async fn local_matches(
        &self,
        path: &std::path::Path,
        s3: &S3Storage,
        stored: Option<(String, bool, Entry)>,
        algo: additional::ChecksumAlgorithm,
    ) -> Result<Option<bool>> {
        let Some((value, full_object, entry)) = stored else {
            return Ok(None);
        };
        let etag = entry.etag.clone().unwrap_or_default();
        let (layout, known) = self.layout_of(s3, &entry.key, entry.size, &etag).await?;
        let digests = self.local_digests(path, layout, Some(algo)).await?;
        Ok(downloaded_checksum(algo, &value, full_object, &layout, known, &digests).map(|c| c == value))
    }
}

/// The object-level checksum computed from downloaded parts, in the form of the stored `value`
/// (composite `…-N`, full-object, or a single-part digest); `None` when the layout does not allow it.
pub(crate) fn downloaded_checksum(
    algo: additional::ChecksumAlgorithm,
    value: &str,
    full_object: bool,
    layout: &PartLayout,
    known: bool,
    parts: &[PartDigest],
) -> Option<String> {
    let (_, count) = additional::split_part_count(value);
    let raw: Vec<(Vec<u8>, u64)> = parts
        .iter()
        .map(|p| Some((p.checksum.clone()?, p.len)))
        .collect::<Option<_>>()?;
    match count {
        Some(n) if known && layout.multipart && layout.part_count() == n => {
            additional::combine_parts(algo, additional::ChecksumType::Composite, &raw).ok()
        }
        Some(_) => None,
        None if raw.len() == 1 => raw.first().map(|(d, _)| additional::to_base64(d)),
        None if algo.is_crc() && (full_object || !layout.multipart || raw.len() > 1) => {
            additional::combine_parts(algo, additional::ChecksumType::FullObject, &raw).ok()
        }
        None => None,
    }
}

/// The error of a source object that was listed but is gone when read.
fn vanished(key: &str) -> Error {
    Error::ObjectChanged {
        key: key.to_string(),
        message: "the source object vanished".into(),
    }
}

/// Fills in the key of errors raised below the object level.
fn with_key(e: Error, key: &str) -> Error {
    match e {
        Error::ObjectChanged { key: k, message } if k.is_empty() => Error::ObjectChanged {
            key: key.to_string(),
            message,
        },
        Error::S3 {
            operation,
            bucket,
            key: k,
            kind,
            message,
        } if k.is_empty() => Error::S3 {
            operation,
            bucket,
            key: key.to_string(),
            kind,
            message,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Transfers that start together share one engine: one pool, one ring (each registration pins
    /// its whole pool).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn transfers_starting_together_build_one_engine() {
        let io = Arc::new(LazyIo::new(4 * crate::config::POOL_CHUNK_SIZE as u64, true));
        let gets = (0..16).map(|_| {
            let io = Arc::clone(&io);
            tokio::spawn(async move { io.get().map(|e| e as *const IoEngine as usize).ok() })
        });
        let engines: Vec<_> = futures::future::join_all(gets)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        assert!(engines.iter().all(|e| e.is_some() && *e == engines[0]), "{engines:?}");
        assert_eq!(io.builds.load(std::sync::atomic::Ordering::SeqCst), 1, "engines built");
        assert_eq!(io.get().unwrap().pool().capacity(), 4);
    }

    /// Without a local side the pool is only memory: no ring, nothing registered.
    #[test]
    fn s3_to_s3_builds_no_ring() {
        let io = LazyIo::new(4 * crate::config::POOL_CHUNK_SIZE as u64, false);
        let engine = io.get().unwrap();
        assert_eq!(engine.backend(), s3sync_io::BackendKind::Tokio);
        assert_eq!(engine.fixed_buffer_chunks(), 0);
    }
}
