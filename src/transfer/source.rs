//! Where the bytes of an upload or S3→S3 copy come from: a local file or an S3 object read in
//! ranges (the first range possibly already under way from the GET that read the attributes).

use super::body_reader::BodyReader;
use super::*;
use crate::checksum::{etag_part_count, PartDigest, PartHasher};
use crate::error::{Error, Result, S3ErrorKind};
use crate::storage::s3::S3Storage;
use crate::storage::Entry;
use bytes::Bytes;
use s3sync_io::IoFile;

/// Parts at least this large are hashed on a blocking thread (see `read_part`).
pub(super) const OFFLOAD_HASH_BYTES: u64 = 1024 * 1024;

/// The bytes an upload reads: where from, their identity for resuming, and the ETag they must have
/// (an S3 source's, when its part layout is known).
pub(super) struct UploadSource<'a> {
    pub(super) parts: PartSource<'a>,
    pub(super) id: String,
    pub(super) expected_etag: Option<String>,
}

/// Where the bytes of a part come from.
pub(super) enum PartSource<'a> {
    /// A local file, read in ranges.
    Local(&'a IoFile),
    /// A small local file already read whole (one pool chunk).
    Memory(Bytes),
    /// An S3 object, read in ranges.
    S3(S3Part<'a>),
}

/// An S3 object read in ranges, all pinned to the listed version or ETag.
pub(super) struct S3Part<'a> {
    pub(super) s3: &'a S3Storage,
    pub(super) key: &'a str,
    pub(super) version: Option<&'a str>,
    pub(super) etag: Option<&'a str>,
    /// Set when a response says the object's ETag is not an MD5 of its bytes (SSE-KMS, SSE-C).
    pub(super) opaque_etag: &'a std::sync::atomic::AtomicBool,
    /// A GET of the whole object already under way (its headers gave the attributes), taken by the
    /// read of the whole object.
    pub(super) opened: std::sync::Mutex<Option<Box<Opened>>>,
}

/// A GET of a whole object under way, with the pool memory its bytes will fill (taken before the
/// request, so a response never waits unread for memory).
pub(super) struct Opened {
    pub(super) body: aws_sdk_s3::primitives::ByteStream,
    pub(super) len: u64,
    pub(super) chunks: Vec<s3sync_io::Chunk>,
    pub(super) etag_is_md5: bool,
}

impl<'a> S3Part<'a> {
    /// The listed object `entry` of `s3`, read pinned to its listed version or ETag; `opened` is a GET
    /// of it already under way, if any.
    pub(super) fn listed(
        s3: &'a S3Storage,
        entry: &'a Entry,
        opaque_etag: &'a std::sync::atomic::AtomicBool,
        opened: Option<Opened>,
    ) -> Self {
        S3Part {
            s3,
            key: &entry.key,
            version: entry.version_id.as_deref(),
            etag: entry.etag.as_deref(),
            opaque_etag,
            opened: std::sync::Mutex::new(opened.map(Box::new)),
        }
    }

    /// GETs `len` bytes at `offset`, noting whether the response says the ETag is opaque.
    pub(super) async fn get_range(&self, offset: u64, len: u64) -> Result<aws_sdk_s3::primitives::ByteStream> {
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
    pub(super) fn take_opened(&self, offset: u64, len: u64) -> Option<Box<Opened>> {
        let mut opened = self.opened.lock().unwrap_or_else(|p| p.into_inner());
        match opened.as_ref() {
            Some(o) if offset == 0 && o.len == len => opened.take(),
            _ => None,
        }
    }

    /// Whether a response so far said that the object's ETag is not an MD5 of its bytes.
    pub(super) fn etag_is_opaque(&self) -> bool {
        self.opaque_etag.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Transferer {
    /// Starts the GET of an S3 source object that will be copied through the client in one PutObject:
    /// its response headers carry the metadata and the tag count, so the object needs no HEAD and,
    /// without tags, no GetObjectTagging. `None` for the other objects (multipart layouts, server-side
    /// copies), and with a preprocess callback, which is shown the HEAD (it has the stored checksum).
    pub(super) async fn open_whole(
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
            Err(e) if e.s3_kind() == Some(S3ErrorKind::NotFound) => Err(vanished(&entry.key)),
            Err(e) => Err(e.for_key(&entry.key)),
        }
    }

    /// Whether an S3 source object is copied through the client in one PutObject: it was not
    /// uploaded in parts and is under the multipart threshold.
    pub(super) fn copied_whole(&self, entry: &Entry) -> bool {
        entry.size < self.cfg.multipart_threshold && entry.etag.as_deref().is_none_or(|e| etag_part_count(e).is_none())
    }

    /// The target attributes of an S3 source object: its metadata and tags, each fetched only when
    /// the options (or a preprocess callback) need it; with the HEAD. `got` is what the response of a
    /// GET already under way said: then no HEAD is sent, and GetObjectTagging only when the object
    /// has tags (`x-amz-tagging-count`; S3 leaves the header out when there are none).
    pub(super) async fn source_attributes(
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

    /// Reads `len` bytes at `offset` into pool chunks, hashing them in the same pass.
    pub(super) async fn read_part(
        &self,
        src: &PartSource<'_>,
        offset: u64,
        len: u64,
    ) -> Result<(Vec<Bytes>, PartDigest)> {
        let hasher = PartHasher::with_checksum(self.cfg.checksum.map(|c| c.0));
        let pool = || async {
            let n = len.div_ceil(self.chunk_size()) as usize;
            Ok::<_, Error>(self.io.get()?.pool().acquire_many(n).await?)
        };
        let (out, hasher) = match src {
            PartSource::Memory(bytes) => self.read_memory_part(bytes, (offset, len), hasher).await?,
            PartSource::Local(file) => self.read_file_part(file, pool().await?, (offset, len), hasher).await?,
            PartSource::S3(part) => {
                let (chunks, opened) = match part.take_opened(offset, len) {
                    Some(o) => (o.chunks, Some(o.body)),
                    None => (pool().await?, None),
                };
                self.read_object_part(part, chunks, opened, (offset, len), hasher)
                    .await?
            }
        };
        Ok((out, hasher.finish_all()))
    }

    /// `(offset, len)` of a file already read whole, hashed (a retried part is hashed again).
    async fn read_memory_part(
        &self,
        bytes: &Bytes,
        (offset, len): (u64, u64),
        mut hasher: PartHasher,
    ) -> Result<(Vec<Bytes>, PartHasher)> {
        let end = offset.saturating_add(len);
        if end > bytes.len() as u64 {
            return Err(Error::Internal(format!(
                "part {offset}+{len} past the {} bytes read",
                bytes.len()
            )));
        }
        let part = bytes.slice(offset as usize..end as usize);
        self.limits.bytes(len).await;
        hasher.update(&part);
        self.reporter.add_bytes(len);
        Ok((vec![part], hasher))
    }

    /// Reads `(offset, len)` of a local file into `chunks`, hashing it.
    async fn read_file_part(
        &self,
        file: &IoFile,
        chunks: Vec<s3sync_io::Chunk>,
        (offset, len): (u64, u64),
        mut hasher: PartHasher,
    ) -> Result<(Vec<Bytes>, PartHasher)> {
        let cs = self.chunk_size();
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
        // Parts of many files are hashed together in lanes where the CPU has them; else, the parts
        // of one object being read by one task, hashing a large part on a blocking thread lets
        // the parts of a single large file use every core.
        let chunks = if hasher.hashes_in_lanes(len) {
            hasher.update_owned(chunks).await?
        } else if len >= OFFLOAD_HASH_BYTES {
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
        let out = chunks
            .into_iter()
            .map(|c| {
                self.reporter.add_bytes(c.len() as u64);
                c.freeze()
            })
            .collect();
        Ok((out, hasher))
    }

    /// Reads `(offset, len)` of an S3 object into `chunks` (from the GET `opened` when there is one),
    /// hashing it; a body longer or shorter than the range fails.
    async fn read_object_part(
        &self,
        part: &S3Part<'_>,
        chunks: Vec<s3sync_io::Chunk>,
        opened: Option<aws_sdk_s3::primitives::ByteStream>,
        (offset, len): (u64, u64),
        mut hasher: PartHasher,
    ) -> Result<(Vec<Bytes>, PartHasher)> {
        let (s3, key) = (part.s3, part.key);
        let body = match opened {
            Some(body) => body,
            None => part.get_range(offset, len).await?,
        };
        // The next chunk fills while the last one is hashed.
        let mut reader = BodyReader::new(body, key, s3.bucket(), &self.limits);
        let mut out = Vec::with_capacity(chunks.len());
        let mut pending = chunks.into_iter();
        let larger = || larger_than_listed(key);
        let mut filled = reader.next_chunk(async { pending.next().ok_or_else(larger) }).await?;
        while let Some(chunk) = filled {
            let next = reader.next_chunk(async { pending.next().ok_or_else(larger) });
            let (next, hashed) = futures::join!(next, hasher.update_owned_reading_on(chunk));
            let chunk = hashed?;
            self.reporter.add_bytes(chunk.len() as u64);
            out.push(chunk.freeze());
            filled = next?;
        }
        if hasher.len() != len {
            return Err(short_body(part, len, hasher.len()));
        }
        Ok((out, hasher))
    }
}
