//! Moving one object: upload (single or multipart), ranged parallel download written in place, S3→S3
//! through the client, and server-side copy. Every path hashes the bytes as they pass and verifies the
//! result against the digest the other side reports.
//!
//! One file per job: `source` (where the bytes of an upload come from), `upload`, `download`, `copy`
//! (S3→S3, through the client or server-side), `layout` (an object's part layout), `compare` (same
//! bytes by digest), `guards` (cleanup that survives cancellation); this module routes one object to
//! its job and holds what they share.

mod body_reader;
mod compare;
mod copy;
mod download;
mod durability;
mod guards;
mod layout;
pub mod resume;
pub(crate) mod sink;
mod source;
mod upload;
pub(crate) mod verify;

pub(crate) use download::downloaded_checksum;
pub use durability::Durability;
pub(crate) use guards::{create_multipart, AbortGuard};
use source::{Opened, PartSource, S3Part, UploadSource};

use crate::checksum::Md5Digest;
use crate::config::Config;
use crate::error::{Error, Result, S3ErrorKind};
use crate::stats::Reporter;
use crate::storage::local::LocalStorage;
use crate::storage::s3::S3Storage;
use crate::storage::Entry;
use base64::Engine as _;
use s3sync_io::IoEngine;
use std::sync::Arc;
use tracing::debug;

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
    /// What the run verifies, decided once from the configuration and the two ends.
    pub(crate) policy: verify::Policy,
    /// Progress and statistics.
    pub reporter: Arc<Reporter>,
    /// Rate limits.
    pub limits: crate::ratelimit::Limits,
    /// The resume journal of multipart uploads (none in dry runs or without a writable state dir).
    pub journal: Option<resume::Journal>,
    /// Clean-ups started by cancelled transfers (multipart aborts), awaited before the run ends.
    pub cleanups: Cleanups,
    /// How each downloaded file, and each directory that receives one, is made durable.
    pub durability: Durability,
    /// Ranged GETs of multipart downloads in flight, across all objects.
    pub range_gets: RangeGets,
    /// Stops the whole run on an error that must not be retried per object (a failing callback).
    pub stop: Arc<crate::pipeline::Stop>,
}

/// The run-wide bound on the ranged GETs of multipart downloads in flight.
///
/// `--max-parallel-uploads` ranges of one object go at once, as before; several large objects
/// downloaded together share that many instead of multiplying it. Each GET streaming a large body
/// holds its connection's read buffers (measured: about 0.9 MiB each), so without the bound four
/// large objects with 16 ranges each held 64 of them. Single-range objects are not counted: their
/// bodies are small, and their GETs wait on the server's latency, which more workers hide.
#[derive(Debug)]
pub struct RangeGets(tokio::sync::Semaphore);

impl RangeGets {
    /// At most `n` ranged GETs in flight (at least 1).
    pub fn new(n: usize) -> Self {
        RangeGets(tokio::sync::Semaphore::new(n.max(1)))
    }

    /// Waits for a free slot; the slot is released when the permit is dropped.
    pub(crate) async fn acquire(&self) -> Result<tokio::sync::SemaphorePermit<'_>> {
        self.0
            .acquire()
            .await
            .map_err(|_| Error::Internal("the ranged GET bound was closed".into()))
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

pub(crate) fn b64(d: &Md5Digest) -> String {
    base64::engine::general_purpose::STANDARD.encode(d)
}

pub(crate) fn stream_error(key: &str, bucket: &str, e: impl std::fmt::Display) -> Error {
    Error::s3(
        "GetObject",
        bucket,
        key,
        S3ErrorKind::Retryable,
        format!("the response body broke off (truncated or reset): {e}"),
    )
}

/// The error of a body with more bytes than the object was listed with.
fn larger_than_listed(key: &str) -> Error {
    Error::ObjectChanged {
        key: key.to_string(),
        message: "the object is larger than listed".into(),
    }
}

/// The (retryable) error of a body that ended after `got` of the `len` bytes asked for.
fn short_body(object: &S3Part<'_>, len: u64, got: u64) -> Error {
    Error::s3(
        "GetObject",
        object.s3.bucket().to_string(),
        object.key,
        S3ErrorKind::Retryable,
        format!("got {got} bytes, expected {len} (truncated response or object changed)"),
    )
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
}

/// The error of a source object that was listed but is gone when read.
fn vanished(key: &str) -> Error {
    Error::ObjectChanged {
        key: key.to_string(),
        message: "the source object vanished".into(),
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
