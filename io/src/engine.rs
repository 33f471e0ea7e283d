//! [`IoEngine`]: the one entry point for local file I/O.
//!
//! Why an engine instead of plain `tokio::fs`: chunk-sized positional reads and writes into pool
//! memory are the hot path of every transfer. Routing them through one type lets the tool use
//! io_uring with pre-registered buffers where available and fall back to a portable backend
//! elsewhere, with identical semantics for the callers.

use std::fmt;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::backend::tokio_fs;
#[cfg(s3sync_uring)]
use crate::backend::uring::UringBackend;
use crate::{Chunk, ChunkPool, IoError};

/// Environment variable that forces the backend: `tokio` selects the portable backend (read at
/// run time by [`IoEngine::new`], and at build time by `build.rs` to leave io_uring out).
pub const BACKEND_ENV: &str = "S3SYNC_IO_BACKEND";

/// Which backend an [`IoEngine`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// Linux io_uring, driven by one dedicated thread, with the pool registered as fixed buffers.
    Uring,
    /// Portable: tokio's blocking thread pool with positional reads/writes.
    Tokio,
}

/// An open local file, shared by the tasks reading or writing its ranges.
///
/// Cloning is cheap (an `Arc`); the file is closed when the last clone (including those held by
/// operations still in flight) is dropped.
#[derive(Clone)]
pub struct IoFile {
    file: Arc<File>,
    /// The same file opened a second time with `O_DIRECT`: aligned reads go through it (see
    /// [`IoEngine::open_read_direct`]).
    direct: Option<Arc<File>>,
    /// `file` is itself an `O_DIRECT` descriptor: a short read ends the read, since going on from
    /// an unaligned offset is not allowed (and a short direct read only happens at the end).
    unbuffered: bool,
}

/// Alignment of the offsets, lengths and memory of reads through `O_DIRECT` (4 KiB covers disks of
/// 512-byte and of 4 KiB logical blocks; pool chunks are aligned to it, see [`CHUNK_ALIGN`](crate::CHUNK_ALIGN)).
pub const DIRECT_ALIGN: usize = 4096;

impl IoFile {
    /// Wraps an already open file.
    pub fn from_std(file: File) -> IoFile {
        IoFile {
            file: Arc::new(file),
            direct: None,
            unbuffered: false,
        }
    }

    /// Wraps an open file and the same file opened with `O_DIRECT`.
    pub(crate) fn with_direct(file: File, direct: Option<File>) -> IoFile {
        IoFile {
            file: Arc::new(file),
            direct: direct.map(Arc::new),
            unbuffered: false,
        }
    }

    /// Whether aligned reads of this file bypass the page cache (`O_DIRECT`).
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// The `O_DIRECT` descriptor as a file of its own, if there is one.
    fn direct_view(&self) -> Option<IoFile> {
        self.direct.as_ref().map(|d| IoFile {
            file: d.clone(),
            direct: None,
            unbuffered: true,
        })
    }

    /// Whether a short read of `filled` bytes from an aligned offset ends the read (see `unbuffered`).
    pub(crate) fn read_ends_short(&self, filled: usize) -> bool {
        self.unbuffered && !filled.is_multiple_of(DIRECT_ALIGN)
    }

    /// Current size of the file in bytes (from its metadata).
    pub fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Whether the file is currently empty.
    pub fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    pub(crate) fn std(&self) -> &File {
        &self.file
    }
}

impl fmt::Debug for IoFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoFile")
            .field("file", &self.file)
            .field("direct", &self.direct.is_some())
            .finish()
    }
}

#[derive(Clone)]
enum Backend {
    Tokio,
    #[cfg(s3sync_uring)]
    Uring(Arc<UringBackend>),
}

/// Performs local file I/O into and out of [`Chunk`]s of one [`ChunkPool`].
///
/// Cheap to clone; all clones share the backend (for io_uring: one ring thread). Usable from any
/// number of tasks on a multi-thread tokio runtime at once. Every method is cancel-safe with
/// respect to memory: a chunk moved into an operation goes back to the pool only once the
/// operating system is done with it, even if the awaiting task is cancelled.
#[derive(Clone)]
pub struct IoEngine {
    pool: ChunkPool,
    backend: Backend,
}

impl IoEngine {
    /// Creates an engine over `pool`, picking the backend.
    ///
    /// io_uring is used when it is compiled in (Linux, see `build.rs`), the environment variable
    /// `S3SYNC_IO_BACKEND` is not `tokio`, and the runtime probe succeeds (ring setup, required
    /// opcodes, the ring thread). The pool's chunks are registered with the ring as fixed
    /// buffers. If the probe fails, one `warn` line says why and the tokio backend is used.
    pub fn new(pool: ChunkPool) -> Result<IoEngine, IoError> {
        let forced_tokio = std::env::var(BACKEND_ENV)
            .map(|v| v.trim().eq_ignore_ascii_case("tokio"))
            .unwrap_or(false);
        if forced_tokio {
            tracing::debug!("io backend: tokio ({BACKEND_ENV}=tokio)");
            return Ok(IoEngine::tokio(pool));
        }
        #[cfg(s3sync_uring)]
        {
            match UringBackend::start(&pool) {
                Ok(backend) => Ok(IoEngine {
                    pool,
                    backend: Backend::Uring(Arc::new(backend)),
                }),
                Err(e) => {
                    tracing::warn!("io_uring unavailable ({e}); falling back to the tokio I/O backend");
                    Ok(IoEngine::tokio(pool))
                }
            }
        }
        #[cfg(not(s3sync_uring))]
        {
            tracing::debug!("io backend: tokio (io_uring not compiled in)");
            Ok(IoEngine::tokio(pool))
        }
    }

    /// Creates an engine with a specific backend, ignoring the environment.
    ///
    /// Fails with [`IoError::UringUnavailable`] if `kind` is [`BackendKind::Uring`] and io_uring
    /// is not compiled in or cannot be set up here (no fallback, no warning).
    pub fn with_backend(pool: ChunkPool, kind: BackendKind) -> Result<IoEngine, IoError> {
        match kind {
            BackendKind::Tokio => Ok(IoEngine::tokio(pool)),
            #[cfg(s3sync_uring)]
            BackendKind::Uring => {
                let backend = UringBackend::start(&pool).map_err(|e| IoError::UringUnavailable(e.to_string()))?;
                Ok(IoEngine {
                    pool,
                    backend: Backend::Uring(Arc::new(backend)),
                })
            }
            #[cfg(not(s3sync_uring))]
            BackendKind::Uring => Err(IoError::UringUnavailable(
                "not compiled in (non-Linux target or S3SYNC_BUILD_IO_BACKEND=tokio at build time)".into(),
            )),
        }
    }

    #[cfg(all(test, s3sync_uring))]
    pub(crate) fn from_uring(pool: ChunkPool, backend: UringBackend) -> IoEngine {
        IoEngine {
            pool,
            backend: Backend::Uring(Arc::new(backend)),
        }
    }

    fn tokio(pool: ChunkPool) -> IoEngine {
        IoEngine {
            pool,
            backend: Backend::Tokio,
        }
    }

    /// The backend in use.
    pub fn backend(&self) -> BackendKind {
        match self.backend {
            Backend::Tokio => BackendKind::Tokio,
            #[cfg(s3sync_uring)]
            Backend::Uring(_) => BackendKind::Uring,
        }
    }

    /// Whether I/O uses registered fixed buffers (io_uring with at least part of the pool
    /// registered). False for the tokio backend, and for io_uring when no chunk could be registered.
    pub fn uses_fixed_buffers(&self) -> bool {
        self.fixed_buffer_chunks() > 0
    }

    /// How many of the pool's chunks are registered as fixed buffers (the first ones): all of them
    /// when `RLIMIT_MEMLOCK` allows, else the prefix it holds; 0 for the tokio backend.
    pub fn fixed_buffer_chunks(&self) -> usize {
        match &self.backend {
            Backend::Tokio => 0,
            #[cfg(s3sync_uring)]
            Backend::Uring(b) => b.fixed_chunks(),
        }
    }

    /// The pool this engine's buffers come from.
    pub fn pool(&self) -> &ChunkPool {
        &self.pool
    }

    /// Opens an existing file for reading.
    pub async fn open_read(&self, path: &Path) -> io::Result<IoFile> {
        tokio_fs::open_read(path).await
    }

    /// Opens an existing file for reading, and a second time with `O_DIRECT` where the system and
    /// the file system allow it (Linux; not tmpfs). Reads at offsets aligned to [`DIRECT_ALIGN`]
    /// then go from the disk straight into pool memory (registered: no copy at all), neither
    /// reading from nor filling the page cache: for files read once, as in a migration, the cache
    /// would only push out what other programs need. Other reads use the buffered descriptor. The
    /// direct one is kept only if it is the same file and a direct read of its first block succeeds.
    ///
    /// With `unless_cached`, a file whose first page is in the page cache (Linux: a `preadv2` with
    /// `RWF_NOWAIT`) is read through the cache: that is cheaper than from the disk.
    pub async fn open_read_direct(&self, path: &Path, unless_cached: bool) -> io::Result<IoFile> {
        tokio_fs::open_read_direct(path, unless_cached).await
    }

    /// Creates a new file for writing; fails if `path` exists. Mode `0o644` on unix (before the
    /// umask).
    pub async fn create_new(&self, path: &Path) -> io::Result<IoFile> {
        tokio_fs::create_new(path).await
    }

    /// Truncates or extends `file` to `len` bytes (e.g. to preallocate the size of a download).
    pub async fn set_len(&self, file: &IoFile, len: u64) -> io::Result<()> {
        tokio_fs::set_len(file.clone(), len).await
    }

    /// Reads up to `min(len, chunk.capacity())` bytes at `offset` into `chunk`.
    ///
    /// The chunk is cleared first. Short reads are retried; the result is shorter than requested
    /// only at end of file (0 bytes at or past EOF). Returns the filled chunk; on error the chunk
    /// is dropped (back to the pool).
    pub async fn read_at(&self, file: &IoFile, mut chunk: Chunk, offset: u64, len: usize) -> io::Result<Chunk> {
        chunk.clear();
        let want = len.min(chunk.capacity());
        check_range(offset, want)?;
        if want == 0 {
            return Ok(chunk);
        }
        // A direct read asks for whole blocks (the chunk's capacity is a multiple of them) and
        // keeps the bytes asked for; at the end of the file it is simply short.
        let aligned = offset.is_multiple_of(DIRECT_ALIGN as u64);
        if let Some(direct) = file.direct_view().filter(|_| aligned) {
            let whole_blocks = want.next_multiple_of(DIRECT_ALIGN).min(chunk.capacity());
            let mut c = self.read_on(&direct, chunk, offset, whole_blocks).await?;
            c.set_filled_len(c.len().min(want));
            return Ok(c);
        }
        self.read_on(file, chunk, offset, want).await
    }

    /// [`read_at`](Self::read_at) on the backend.
    async fn read_on(&self, file: &IoFile, chunk: Chunk, offset: u64, want: usize) -> io::Result<Chunk> {
        match &self.backend {
            Backend::Tokio => tokio_fs::read_at(file.clone(), chunk, offset, want).await,
            #[cfg(s3sync_uring)]
            Backend::Uring(b) => b.read_at(file.clone(), chunk, offset, want).await,
        }
    }

    /// Writes all filled bytes of `chunk` at `offset` (short writes are retried) and returns the
    /// chunk. On error the chunk is dropped (back to the pool).
    pub async fn write_at(&self, file: &IoFile, chunk: Chunk, offset: u64) -> io::Result<Chunk> {
        check_range(offset, chunk.len())?;
        if chunk.is_empty() {
            return Ok(chunk);
        }
        match &self.backend {
            Backend::Tokio => tokio_fs::write_at(file.clone(), chunk, offset).await,
            #[cfg(s3sync_uring)]
            Backend::Uring(b) => b.write_at(file.clone(), chunk, offset).await,
        }
    }

    /// Flushes the file's data and metadata to stable storage (`fsync`).
    pub async fn fsync(&self, file: &IoFile) -> io::Result<()> {
        match &self.backend {
            Backend::Tokio => tokio_fs::fsync(file.clone()).await,
            #[cfg(s3sync_uring)]
            Backend::Uring(b) => b.fsync(file.clone()).await,
        }
    }

    /// Renames `from` to `to`, replacing `to` if it exists (`std::fs::rename` semantics). On
    /// io_uring it is a RENAMEAT on the ring.
    pub async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        match &self.backend {
            Backend::Tokio => tokio_fs::rename(from, to).await,
            #[cfg(s3sync_uring)]
            Backend::Uring(b) => b.rename(from, to).await,
        }
    }

    /// Whether [`read_file`](Self::read_file) and [`write_file`](Self::write_file) run as one chain
    /// of linked io_uring requests on a direct descriptor (else each is one task of the portable
    /// backend: still one hand-off, but four system calls).
    pub fn file_chains(&self) -> bool {
        match &self.backend {
            Backend::Tokio => false,
            #[cfg(s3sync_uring)]
            Backend::Uring(b) => b.file_chains(),
        }
    }

    /// Reads a whole small file into `chunk`: opens `path`, reads from its start until the chunk is
    /// full or the file ends, and closes it, as one operation.
    ///
    /// The chunk is cleared first. A result shorter than the chunk's capacity holds the whole file
    /// (as it was when read); a full chunk may not (the file may be larger: read it in ranges with
    /// [`open_read`](Self::open_read) instead). On io_uring this is one chain of linked requests
    /// (OPENAT, READ, CLOSE) on a direct descriptor: one submission for the whole file. On error
    /// the chunk is dropped (back to the pool).
    pub async fn read_file(&self, path: &Path, mut chunk: Chunk) -> io::Result<Chunk> {
        chunk.clear();
        match &self.backend {
            Backend::Tokio => tokio_fs::read_file(path, chunk).await,
            #[cfg(s3sync_uring)]
            Backend::Uring(b) => b.read_file(path, chunk).await,
        }
    }

    /// Creates `path` (failing if it exists, mode `0o644` before the umask), writes the filled
    /// bytes of `chunk` into it, makes it durable when `durable` (fsync), and closes it, as one
    /// operation; the chunk goes back to the pool.
    ///
    /// Nothing is left behind on failure: if any step fails, or the caller is dropped before the
    /// operation completes, the file is removed. On io_uring this is one chain of linked requests
    /// (OPENAT, WRITE, FSYNC, CLOSE) on a direct descriptor.
    pub async fn write_file(&self, path: &Path, chunk: Chunk, durable: bool) -> io::Result<()> {
        match &self.backend {
            Backend::Tokio => tokio_fs::write_file(path, chunk, durable).await,
            #[cfg(s3sync_uring)]
            Backend::Uring(b) => b.write_file(path, chunk, durable).await,
        }
    }
}

impl fmt::Debug for IoEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoEngine")
            .field("backend", &self.backend())
            .field("fixed_buffers", &self.uses_fixed_buffers())
            .field("pool", &self.pool)
            .finish()
    }
}

/// Rejects ranges past `i64::MAX` (the kernel's limit; an offset of `u64::MAX` would even mean
/// "current file position" to io_uring).
fn check_range(offset: u64, len: usize) -> io::Result<()> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= i64::MAX as u64 => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("file range {offset}+{len} is out of bounds"),
        )),
    }
}
