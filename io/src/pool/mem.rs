//! Pool memory: the single allocation behind every chunk, and exclusive ownership of chunks.
//!
//! This is one of the two modules allowed to contain `unsafe` code (the other is
//! `backend::uring_sys`). Everything that touches the pool's raw memory is here, so the
//! soundness argument does not depend on any code outside this file.
//!
//! # Invariants
//!
//! 1. `PoolInner::base` points to one allocation of `chunk_size * count` bytes made with
//!    `layout` (alignment [`CHUNK_ALIGN`]). It is zero-initialised at creation and freed only in
//!    `PoolInner::drop`, i.e. when the last `Arc<PoolInner>` goes away. Every [`Chunk`] holds such
//!    an `Arc`, so the memory outlives every chunk (and every `Bytes` made from one).
//! 2. Chunk `i` is the byte range `[i * chunk_size, (i + 1) * chunk_size)` of that allocation, for
//!    `i < count`. Ranges of different indices never overlap.
//! 3. Every index is, at any time, either in the free list or owned by exactly one live `Chunk`.
//!    Only [`PoolInner::try_take`] creates a `Chunk` (by popping an index from the free list) and
//!    only `Chunk::drop` puts the index back. Hence a `Chunk` has exclusive access to its range:
//!    `&self` may view it as `&[u8]`, `&mut self` as `&mut [u8]`.
//! 4. All bytes of the allocation are always initialised (zeroed at allocation, afterwards only
//!    ever written), so any sub-range may be viewed as `[u8]`, and `len` may be set to any value
//!    `<= capacity` without exposing uninitialised memory.
//! 5. Raw pointers from [`Chunk::as_mut_ptr`] / [`Chunk::as_ptr`] may only be handed to the kernel
//!    while that `Chunk` is kept alive and not accessed by anyone else until the operation has
//!    completed. `backend::uring_sys::Ring` enforces this by owning the `Chunk` from submission
//!    until its completion is reaped (and by leaking it if that can no longer be guaranteed).
//! 6. The semaphore holds at most as many permits as there are indices in the free list: an
//!    index is pushed *before* its permit is added, and a permit is consumed (forgotten) *before*
//!    an index is popped. So whoever holds a permit finds a free index.
#![allow(unsafe_code)]

use std::alloc::{self, Layout};
use std::fmt;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Semaphore;

use crate::IoError;

/// Alignment of the pool allocation and granularity of chunk sizes (one page).
pub const CHUNK_ALIGN: usize = 4096;

/// Shared state of a pool: its memory, free list and the semaphore that counts free chunks.
pub(crate) struct PoolInner {
    base: NonNull<u8>,
    layout: Layout,
    chunk_size: usize,
    count: usize,
    free: Mutex<Vec<u32>>,
    sem: Semaphore,
}

// SAFETY: `PoolInner` owns its allocation; the raw pointer is only dereferenced through `Chunk`,
// whose exclusivity (invariant 3) prevents data races. The free list and semaphore are
// thread-safe by themselves.
unsafe impl Send for PoolInner {}
// SAFETY: see `Send` above; `&PoolInner` exposes no access to chunk memory.
unsafe impl Sync for PoolInner {}

impl PoolInner {
    /// Allocates `chunk_size * count` zeroed bytes. `chunk_size` must already be a non-zero
    /// multiple of [`CHUNK_ALIGN`] and `count` must be in `1..=u32::MAX`.
    pub(crate) fn new(chunk_size: usize, count: usize) -> Result<Arc<PoolInner>, IoError> {
        if chunk_size == 0 || !chunk_size.is_multiple_of(CHUNK_ALIGN) {
            return Err(IoError::InvalidPool(format!(
                "chunk size {chunk_size} is not a non-zero multiple of {CHUNK_ALIGN}"
            )));
        }
        if count == 0 || u32::try_from(count).is_err() || count > Semaphore::MAX_PERMITS {
            return Err(IoError::InvalidPool(format!("chunk count {count} is out of range")));
        }
        let total = chunk_size
            .checked_mul(count)
            .ok_or_else(|| IoError::InvalidPool(format!("{count} chunks of {chunk_size} bytes overflow usize")))?;
        let layout = Layout::from_size_align(total, CHUNK_ALIGN)
            .map_err(|e| IoError::InvalidPool(format!("{count} chunks of {chunk_size} bytes: {e}")))?;
        // SAFETY: `layout` has a non-zero size (chunk_size > 0, count > 0).
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let base = NonNull::new(raw).ok_or(IoError::Alloc { bytes: total })?;
        // Pop from the back: hand out low indices first (purely cosmetic).
        let free: Vec<u32> = (0..count as u32).rev().collect();
        Ok(Arc::new(PoolInner {
            base,
            layout,
            chunk_size,
            count,
            free: Mutex::new(free),
            sem: Semaphore::new(count),
        }))
    }

    pub(crate) fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    pub(crate) fn count(&self) -> usize {
        self.count
    }

    pub(crate) fn semaphore(&self) -> &Semaphore {
        &self.sem
    }

    /// Start address and length of chunk `index` (for registering fixed buffers).
    /// Computing the pointer is safe; using it is subject to invariant 5.
    #[cfg(s3sync_uring)]
    pub(crate) fn chunk_region(&self, index: usize) -> Option<(*mut u8, usize)> {
        if index >= self.count {
            return None;
        }
        // `wrapping_add` stays in bounds here: index * chunk_size < total (checked in `new`).
        Some((
            self.base.as_ptr().wrapping_add(index * self.chunk_size),
            self.chunk_size,
        ))
    }

    /// Pops a free index and wraps it in a `Chunk`. Callers must have consumed (forgotten) a
    /// semaphore permit first; then this always succeeds (invariant 6).
    pub(crate) fn try_take(self: &Arc<Self>) -> Option<Chunk> {
        let index = self.free.lock().unwrap_or_else(PoisonError::into_inner).pop()?;
        Some(Chunk {
            pool: Arc::clone(self),
            index,
            len: 0,
        })
    }
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        // SAFETY: `base` was returned by `alloc_zeroed(self.layout)` and is freed exactly once,
        // here. No `Chunk` is alive (each holds an `Arc<PoolInner>`), so nothing references it.
        unsafe { alloc::dealloc(self.base.as_ptr(), self.layout) }
    }
}

/// An exclusively owned chunk of pool memory.
///
/// A chunk has a fixed capacity (the pool's chunk size) and a filled length. It is `Send` and
/// `'static`, so it can move between tasks and threads, and it returns to its pool when dropped.
/// [`Chunk::freeze`] turns it into a zero-copy [`bytes::Bytes`] that returns the chunk to the pool
/// when the last clone is dropped.
pub struct Chunk {
    pool: Arc<PoolInner>,
    index: u32,
    len: usize,
}

impl Chunk {
    #[cfg(s3sync_uring)]
    pub(crate) fn pool_inner(&self) -> &Arc<PoolInner> {
        &self.pool
    }

    /// Index of this chunk in its pool (also its fixed-buffer index when registered).
    pub(crate) fn index(&self) -> usize {
        self.index as usize
    }

    pub(crate) fn cap(&self) -> usize {
        self.pool.chunk_size
    }

    pub(crate) fn filled_len(&self) -> usize {
        self.len
    }

    /// Sets the filled length, clamped to the capacity. Always sound: all bytes are initialised
    /// (invariant 4).
    pub(crate) fn set_filled_len(&mut self, len: usize) {
        self.len = len.min(self.cap());
    }

    fn start(&self) -> *mut u8 {
        // In bounds: index < count (invariant 3), so the offset is < the allocation size.
        self.pool
            .base
            .as_ptr()
            .wrapping_add(self.index() * self.pool.chunk_size)
    }

    /// The filled part.
    pub(crate) fn filled(&self) -> &[u8] {
        // SAFETY: the range [start, start + len) lies inside this chunk (len <= capacity), the
        // memory is initialised (invariant 4), alive for as long as `self` (invariant 1) and not
        // mutably aliased because this `Chunk` is its only owner (invariant 3) and `&self` is
        // borrowed for the slice's lifetime.
        unsafe { std::slice::from_raw_parts(self.start(), self.len) }
    }

    /// The whole capacity, for filling.
    pub(crate) fn buf_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `filled`, and `&mut self` guarantees no other reference into this chunk
        // exists while the returned slice lives.
        unsafe { std::slice::from_raw_parts_mut(self.start(), self.cap()) }
    }

    /// Raw start pointer for the kernel (see invariant 5).
    #[cfg(s3sync_uring)]
    pub(crate) fn as_mut_ptr(&mut self) -> *mut u8 {
        self.start()
    }

    /// Raw start pointer for the kernel (see invariant 5).
    #[cfg(any(test, s3sync_uring))]
    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.start()
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        // Index first, permit second (invariant 6). A poisoned lock still holds a consistent
        // Vec (push/pop never leave it half-updated; capacity is preallocated), so recover it
        // rather than panic inside drop.
        self.pool
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(self.index);
        self.pool.sem.add_permits(1);
    }
}

impl fmt::Debug for Chunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chunk")
            .field("index", &self.index)
            .field("len", &self.len)
            .field("capacity", &self.cap())
            .finish()
    }
}
