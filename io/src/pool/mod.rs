//! The bounded chunk pool: all transfer memory of the tool.
//!
//! Why one pool: a sync moves many objects × many parts at once. Giving every part its own
//! `Vec` makes peak memory depend on timing and lets a fast reader outrun a slow writer. A single
//! fixed budget, allocated once, bounds memory by construction; waiting for a free chunk is the
//! back-pressure. Page alignment and a stable address also let io_uring register the chunks as
//! fixed buffers once, instead of pinning pages on every request.

mod mem;

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

pub(crate) use mem::PoolInner;
pub use mem::{Chunk, CHUNK_ALIGN};

use crate::IoError;

/// A bounded pool of equal, page-aligned chunks carved out of one allocation.
///
/// Cloning is cheap (an `Arc`); all clones share the same chunks. The memory is freed when the
/// pool, every clone, and every chunk taken from it are gone.
#[derive(Clone)]
pub struct ChunkPool {
    inner: Arc<PoolInner>,
}

impl ChunkPool {
    /// Allocates `chunk_count` chunks of `chunk_size` bytes in one page-aligned allocation.
    ///
    /// `chunk_size` is rounded up to a multiple of [`CHUNK_ALIGN`] (4096). Fails with
    /// [`IoError::InvalidPool`] when `chunk_size` or `chunk_count` is zero or the total overflows,
    /// and with [`IoError::Alloc`] when the memory cannot be allocated.
    pub fn new(chunk_size: usize, chunk_count: usize) -> Result<ChunkPool, IoError> {
        if chunk_size == 0 {
            return Err(IoError::InvalidPool("chunk size must be > 0".into()));
        }
        if chunk_count == 0 {
            return Err(IoError::InvalidPool("chunk count must be >= 1".into()));
        }
        let rounded = chunk_size
            .checked_next_multiple_of(CHUNK_ALIGN)
            .ok_or_else(|| IoError::InvalidPool(format!("chunk size {chunk_size} is too large")))?;
        Ok(ChunkPool {
            inner: PoolInner::new(rounded, chunk_count)?,
        })
    }

    /// Size of every chunk in bytes (a multiple of 4096).
    pub fn chunk_size(&self) -> usize {
        self.inner.chunk_size()
    }

    /// Total number of chunks in the pool.
    pub fn capacity(&self) -> usize {
        self.inner.count()
    }

    /// Number of chunks free right now (a snapshot; may change immediately).
    pub fn available(&self) -> usize {
        self.inner.semaphore().available_permits()
    }

    /// Takes one chunk, waiting while the pool is empty (back-pressure).
    ///
    /// Waiters are served in FIFO order. Cancel-safe: dropping the future before it completes
    /// takes nothing from the pool.
    pub async fn acquire(&self) -> Chunk {
        // The semaphore is never closed, so `acquire` cannot fail.
        let permit = self
            .inner
            .semaphore()
            .acquire()
            .await
            .expect("chunk pool semaphore is never closed");
        permit.forget();
        self.take_one()
    }

    /// Takes one chunk if one is free right now, without waiting.
    pub fn try_acquire(&self) -> Option<Chunk> {
        let permit = self.inner.semaphore().try_acquire().ok()?;
        permit.forget();
        Some(self.take_one())
    }

    /// Takes `n` chunks at once: all of them or none.
    ///
    /// Waits until `n` chunks are free together. Waiters are served in FIFO order, so a task
    /// waiting for many chunks is not starved by tasks taking one at a time, and tasks that each
    /// need several chunks cannot deadlock by holding partial sets. Cancel-safe: chunks partly
    /// reserved for a cancelled call go back to the pool.
    ///
    /// Returns [`IoError::PoolTooSmall`] if `n` exceeds [`capacity`](Self::capacity) (it could
    /// never succeed), and an empty `Vec` for `n == 0`.
    pub async fn acquire_many(&self, n: usize) -> Result<Vec<Chunk>, IoError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let capacity = self.capacity();
        if n > capacity {
            return Err(IoError::PoolTooSmall { needed: n, capacity });
        }
        // n <= capacity <= u32::MAX (checked when the pool was built).
        let permits = u32::try_from(n).map_err(|_| IoError::PoolTooSmall { needed: n, capacity })?;
        let permit = self
            .inner
            .semaphore()
            .acquire_many(permits)
            .await
            .expect("chunk pool semaphore is never closed");
        permit.forget();
        Ok(self.take_after_permits(n))
    }

    /// Pops a free index after a permit was consumed. Each permit guarantees a free index
    /// (invariant 6 in `mem`), so the `expect` is unreachable.
    fn take_one(&self) -> Chunk {
        self.inner
            .try_take()
            .expect("a consumed pool permit guarantees a free chunk")
    }

    /// [`take_one`](Self::take_one) `n` times, after `n` permits were consumed.
    fn take_after_permits(&self, n: usize) -> Vec<Chunk> {
        (0..n).map(|_| self.take_one()).collect()
    }

    /// Whether `chunk` was taken from this pool.
    #[cfg(s3sync_uring)]
    pub(crate) fn owns(&self, chunk: &Chunk) -> bool {
        Arc::ptr_eq(&self.inner, chunk.pool_inner())
    }

    #[cfg(s3sync_uring)]
    pub(crate) fn inner(&self) -> &Arc<PoolInner> {
        &self.inner
    }
}

impl fmt::Debug for ChunkPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkPool")
            .field("chunk_size", &self.chunk_size())
            .field("capacity", &self.capacity())
            .field("available", &self.available())
            .finish()
    }
}

impl Chunk {
    /// Total bytes this chunk can hold (the pool's chunk size).
    pub fn capacity(&self) -> usize {
        self.cap()
    }

    /// Number of filled bytes.
    pub fn len(&self) -> usize {
        self.filled_len()
    }

    /// Whether no bytes are filled.
    pub fn is_empty(&self) -> bool {
        self.filled_len() == 0
    }

    /// Free space left: `capacity() - len()`.
    pub fn remaining(&self) -> usize {
        self.cap() - self.filled_len()
    }

    /// The filled bytes.
    pub fn as_slice(&self) -> &[u8] {
        self.filled()
    }

    /// Appends as much of `data` as fits (`min(remaining, data.len())` bytes) and returns how
    /// many bytes were copied.
    pub fn extend_from_slice(&mut self, data: &[u8]) -> usize {
        let start = self.filled_len();
        let n = self.remaining().min(data.len());
        self.buf_mut()[start..start + n].copy_from_slice(&data[..n]);
        self.set_filled_len(start + n);
        n
    }

    /// The free space after the filled bytes, for a reader to fill in place (no intermediate
    /// buffer); follow with [`advance`](Self::advance) by the number of bytes written.
    pub fn spare_mut(&mut self) -> &mut [u8] {
        let start = self.filled_len();
        &mut self.buf_mut()[start..]
    }

    /// Marks `n` more bytes (written through [`spare_mut`](Self::spare_mut)) as filled, up to the
    /// capacity.
    pub fn advance(&mut self, n: usize) {
        self.set_filled_len(self.filled_len().saturating_add(n));
    }

    /// Empties the chunk (the memory is kept).
    pub fn clear(&mut self) {
        self.set_filled_len(0);
    }

    /// Turns the filled part into a zero-copy [`Bytes`].
    ///
    /// The chunk stays out of the pool until the last clone of the returned `Bytes` is dropped.
    /// An empty chunk goes back to the pool immediately and yields an empty `Bytes`.
    pub fn freeze(self) -> Bytes {
        if self.is_empty() {
            return Bytes::new();
        }
        Bytes::from_owner(FrozenChunk(self))
    }
}

/// Owner handed to `Bytes::from_owner`; dropping it returns the chunk to the pool.
struct FrozenChunk(Chunk);

impl AsRef<[u8]> for FrozenChunk {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

#[cfg(test)]
mod tests;
