//! The unsafe boundary of the io_uring backend: a ring that owns whatever the kernel may touch.
//!
//! This is one of the two modules allowed to contain `unsafe` code (the other is `pool::mem`).
//! [`Ring`] exposes a safe API: an [`Op`] (which owns its `Chunk` and an `IoFile` clone) is moved
//! in by [`Ring::push`] and handed back, with the kernel's result, by [`Ring::reap`]. Callers
//! never see a raw pointer, so they cannot free or reuse memory the kernel still writes to.
//!
//! # Invariants
//!
//! 1. Every SQE that references memory or a file descriptor is pushed only by `Ring::push` (for
//!    an `Op`) or `Ring::arm_wake` (for the wake-up read). The memory range of an SQE lies
//!    inside the `Chunk` of its `Op` (bounds are computed here from the chunk's capacity and
//!    filled length), or inside `Ring::wake_buf` (8 bytes).
//! 2. From push until its CQE is reaped, the `Op` (and so its `Chunk` and `IoFile`) lives in
//!    `Ring::slots[user_data]` and is not accessed; the wake buffer is not accessed while
//!    `wake_armed` is true. The kernel is therefore the only party touching that memory.
//! 3. Fixed-buffer opcodes are used only for a chunk of the registered pool whose index is below
//!    `Ring::fixed` (buffers `0..fixed` are registered, a prefix of the pool); buffer index ==
//!    chunk index, and registered buffer `i` is exactly the memory range of chunk `i`
//!    (`PoolInner::chunk_region`). `Ring::pool` keeps the pool memory
//!    alive for as long as the ring (and so the registration) exists: it is declared after
//!    `ring`, so the ring is closed first.
//! 4. A chain (`ReadFile`, `WriteFile`) opens its file into the direct-descriptor slot whose index
//!    is the op's slot index, and every step of it is hard-linked to the next, so its CLOSE always
//!    runs and the slot is empty again before the op's slot is freed (when the last CQE of the chain
//!    is reaped). Paths are `CString`s owned by the op (heap memory that moving the op does not move).
//! 5. If the `Ring` is dropped while operations are still in flight (only possible if the ring
//!    thread panics or hits an unrecoverable error), their `Op`s and the wake buffer are leaked
//!    with `mem::forget`, never freed: a leaked `Chunk` keeps its pool memory allocated, so the
//!    kernel can never write into memory that was freed or handed to someone else.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use io_uring::{opcode, squeue, types, IoUring, Probe};

use super::CreationState;
use crate::{Chunk, ChunkPool, IoFile};

/// user_data of the wake-up read; slots use their index, which is always smaller.
const WAKE_TOKEN: u64 = u64::MAX;

/// The kernel accepts at most this many registered buffers (`IORING_MAX_REG_BUFFERS`); it also
/// bounds buffer indices well below `u16::MAX`.
const MAX_FIXED_BUFFERS: usize = 1 << 14;

/// Largest length put in one SQE (Linux caps a single read/write at `MAX_RW_COUNT`, just below
/// 2 GiB, anyway); longer requests are continued like short reads/writes.
const MAX_RW: usize = 1 << 30;

/// One operation the ring thread asks the kernel to perform. Owns everything the kernel uses.
pub(crate) enum Op {
    /// Read into `chunk[chunk.len() .. want]` from file offset `offset + chunk.len()`.
    Read {
        file: IoFile,
        chunk: Chunk,
        offset: u64,
        want: usize,
    },
    /// Write `chunk[done .. chunk.len()]` at file offset `offset + done`.
    Write {
        file: IoFile,
        chunk: Chunk,
        offset: u64,
        done: usize,
    },
    /// `fsync(2)` the file.
    Fsync { file: IoFile },
    /// A small file read whole, as one chain: OPENAT into the op's direct-descriptor slot, READ
    /// from offset 0 into the chunk (up to its capacity), CLOSE. `results` holds each step's CQE.
    ReadFile {
        path: CString,
        chunk: Chunk,
        results: [i32; 3],
    },
    /// A new file written whole, as one chain: OPENAT (`O_CREAT | O_EXCL`) into the op's slot,
    /// WRITE the chunk at offset 0, FSYNC when `durable`, CLOSE.
    WriteFile {
        path: CString,
        chunk: Chunk,
        durable: bool,
        results: [i32; 4],
        creation: CreationState,
    },
    /// `renameat(2)`, replacing `to` if it exists.
    Rename { from: CString, to: CString },
}

impl Op {
    /// Records the CQE result of step `step` of a chain (single-step operations keep none).
    fn record(&mut self, step: usize, result: i32) {
        match self {
            Op::ReadFile { results, .. } => results[step.min(2)] = result,
            Op::WriteFile { results, .. } => results[step.min(3)] = result,
            _ => {}
        }
    }
}

/// Something reaped from the completion queue.
pub(crate) enum Event<T> {
    /// The wake-up read completed (someone poked the eventfd); it must be re-armed.
    Woken,
    /// An operation completed; `result` is the raw CQE result (`-errno` on failure).
    Done { op: Op, tag: T, result: i32 },
}

/// Prefixes an OS error with the step that failed, keeping its kind.
pub(crate) fn context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Raises the soft `RLIMIT_MEMLOCK` to the hard limit (allowed to any process) and returns the
/// soft limit in force, in bytes; `None` when unlimited or unknown.
fn raise_memlock() -> Option<u64> {
    let mut lim = memlock_limits()?;
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the valid `raised`.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    (lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

/// The process's `RLIMIT_MEMLOCK` (soft and hard), if it can be read.
pub(crate) fn memlock_limits() -> Option<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into the valid, exclusively borrowed `lim`.
    (unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } == 0).then_some(lim)
}

/// Creates the eventfd senders poke to wake the ring thread (a counter, initially 0).
pub(crate) fn eventfd() -> io::Result<File> {
    // SAFETY: plain FFI call with valid flags; returns a new fd or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(context(io::Error::last_os_error(), "eventfd"));
    }
    // SAFETY: `fd` is a freshly created, valid descriptor that nothing else owns.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// An io_uring instance plus the operations in flight on it. Only the ring thread uses it.
pub(crate) struct Ring<T> {
    // Field order matters: `ring` must drop before `pool` (invariant 3).
    ring: IoUring,
    slots: Vec<Option<InFlight<T>>>,
    free_slots: Vec<usize>,
    in_flight: usize,
    wake: File,
    wake_buf: Box<u64>,
    wake_armed: bool,
    /// Chunks `0..fixed` are registered as fixed buffers.
    fixed: usize,
    /// Whether a direct-descriptor table (one slot per op slot) is registered and the kernel has
    /// OPENAT, CLOSE and RENAMEAT: whole-file chains can be used.
    files: bool,
    /// CQEs still to come for the ops in flight (a chain gives one per step).
    cqes_due: usize,
    /// Size of the completion queue: `cqes_due` stays below it.
    cq_entries: usize,
    pool: ChunkPool,
}

/// An op in flight: the op, its tag, and how many of its CQEs are still to come.
struct InFlight<T> {
    op: Op,
    tag: T,
    left: usize,
}

/// user_data of step `step` of the op in `slot`.
fn user_data(slot: usize, step: usize) -> u64 {
    (slot as u64) | ((step as u64) << 32)
}

impl<T> Ring<T> {
    /// Builds a ring with `entries` SQ entries (at most `entries - 1` operations in flight, plus
    /// the wake-up read) and checks that the kernel supports every opcode used.
    ///
    /// Then registers up to `register` of the pool's first chunks as fixed buffers (none when
    /// `None`): as many as `RLIMIT_MEMLOCK` allows (see [`register_pool`](Self::register_pool)).
    /// The ring is usable either way; the second value is the registration error when no chunk
    /// could be registered (then plain READ/WRITE are used throughout).
    pub(crate) fn new(
        entries: u32,
        pool: &ChunkPool,
        wake: File,
        register: Option<usize>,
    ) -> io::Result<(Ring<T>, Option<io::Error>)> {
        let ring = IoUring::builder()
            .setup_clamp()
            .build(entries)
            .map_err(|e| context(e, "io_uring_setup"))?;

        let mut probe = Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(|e| context(e, "IORING_REGISTER_PROBE"))?;
        for (code, name) in [
            (opcode::ReadFixed::CODE, "READ_FIXED"),
            (opcode::WriteFixed::CODE, "WRITE_FIXED"),
            (opcode::Read::CODE, "READ"),
            (opcode::Write::CODE, "WRITE"),
            (opcode::Fsync::CODE, "FSYNC"),
        ] {
            if !probe.is_supported(code) {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("kernel io_uring lacks IORING_OP_{name}"),
                ));
            }
        }

        let sq_entries = ring.params().sq_entries() as usize;
        let cq_entries = ring.params().cq_entries() as usize;
        if sq_entries < 2 || cq_entries < 2 {
            return Err(io::Error::other("io_uring submission queue too small"));
        }
        let max_ops = sq_entries - 1;
        let chains = [opcode::OpenAt::CODE, opcode::Close::CODE, opcode::RenameAt::CODE]
            .into_iter()
            .all(|code| probe.is_supported(code));
        // One direct-descriptor slot per op slot (kernel 5.19 for sparse tables). Without it, whole
        // files go through the portable backend.
        let files = chains && ring.submitter().register_files_sparse(max_ops as u32).is_ok();
        let mut this = Ring {
            ring,
            slots: (0..max_ops).map(|_| None).collect(),
            free_slots: (0..max_ops).rev().collect(),
            in_flight: 0,
            wake,
            wake_buf: Box::new(0),
            wake_armed: false,
            fixed: 0,
            files,
            cqes_due: 0,
            cq_entries,
            pool: pool.clone(),
        };
        let Some(max) = register else {
            return Ok((this, None));
        };
        match this.register_pool(max) {
            Ok(n) => {
                this.fixed = n;
                Ok((this, None))
            }
            Err(e) => Ok((this, Some(e))),
        }
    }

    /// Registers a prefix of the pool's chunks (at most `max`) as fixed buffers and returns its
    /// length. Pinned buffers count against `RLIMIT_MEMLOCK` (unless the process may lock memory
    /// anyway, as root can), which is 8 MiB by default: the soft limit is raised to the hard one,
    /// then the whole pool is tried, then the prefix the limit holds, shortened by 1, 2, 4, ...
    /// chunks while the kernel still says no (other processes of the same user count against the
    /// same limit). Chunks past the prefix use plain READ/WRITE.
    fn register_pool(&self, max: usize) -> io::Result<usize> {
        let count = self.pool.capacity().min(MAX_FIXED_BUFFERS).min(max);
        if count == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no chunk to register"));
        }
        let limit = raise_memlock();
        let inner = self.pool.inner();
        let iovecs = (0..count)
            .map(|i| {
                let (base, len) = inner
                    .chunk_region(i)
                    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "chunk index out of range"))?;
                Ok(libc::iovec {
                    iov_base: base.cast(),
                    iov_len: len,
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        let mut n = count;
        let mut step = 0;
        loop {
            // SAFETY: each iovec is exactly one chunk's range inside the pool allocation, which
            // `self.pool` keeps alive until after the ring (and with it the registration) is gone
            // (invariant 3). The kernel only accesses a registered buffer for a fixed-buffer
            // operation, and those are issued only under invariants 1 and 2.
            let e = match unsafe { self.ring.submitter().register_buffers(&iovecs[..n]) } {
                Ok(()) => return Ok(n),
                Err(e) => e,
            };
            // First the prefix the limit holds, then a little less each time (the ring's own pages
            // or another process of the same user may hold part of the limit).
            let next = if step == 0 {
                let fits = limit.map_or(n / 2, |l| {
                    usize::try_from(l / self.pool.chunk_size() as u64).unwrap_or(n)
                });
                (n - 1).min(fits)
            } else {
                n.saturating_sub(step)
            };
            step = (step * 2).max(1);
            if e.raw_os_error() != Some(libc::ENOMEM) || next == 0 {
                let held = limit.map_or_else(|| "unlimited".to_string(), |l| format!("{l} bytes"));
                return Err(context(
                    e,
                    &format!("IORING_REGISTER_BUFFERS ({n} chunks; RLIMIT_MEMLOCK {held})"),
                ));
            }
            n = next;
        }
    }

    /// How many of the pool's first chunks are registered as fixed buffers.
    pub(crate) fn fixed_chunks(&self) -> usize {
        self.fixed
    }

    /// Whether `chunk` is one of the registered buffers, so fixed-buffer opcodes may use it
    /// (invariant 3): a chunk of this pool whose index is below `fixed`.
    fn is_fixed(&self, chunk: &Chunk) -> bool {
        self.pool.owns(chunk) && chunk.index() < self.fixed
    }

    /// Whether whole-file chains (`ReadFile`, `WriteFile`, `Rename`) can be pushed.
    pub(crate) fn supports_files(&self) -> bool {
        self.files
    }

    /// Operations in flight (not counting the wake-up read).
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Whether another operation can be pushed now.
    pub(crate) fn has_room(&self) -> bool {
        !self.free_slots.is_empty()
    }

    /// Whether the wake-up read is pending in the kernel.
    pub(crate) fn wake_armed(&self) -> bool {
        self.wake_armed
    }

    /// Queues `op`; it is handed back by [`reap`](Self::reap) once complete (for a chain, once its
    /// last step's CQE is reaped). When no slot, not enough SQEs (one is always kept for the wake-up
    /// read) or not enough room in the completion queue is free, gives `op` and `tag` back unchanged.
    pub(crate) fn push(&mut self, mut op: Op, tag: T) -> Result<(), (Op, T)> {
        let Some(&slot) = self.free_slots.last() else {
            return Err((op, tag));
        };
        let entries = match self.build_entries(&mut op, slot) {
            Some(entries) => entries,
            None => return Err((op, tag)),
        };
        let n = entries.len();
        let mut sq = self.ring.submission();
        let room = sq.capacity() - sq.len();
        if room < n + 1 || self.cqes_due + n + 1 > self.cq_entries {
            return Err((op, tag));
        }
        // SAFETY: every entry's buffer lies inside `op`'s chunk (`build_entry`), its paths are
        // `op`'s CStrings, its fd is kept open by `op`'s `IoFile` or is the op's own direct
        // descriptor slot, and `op` is stored in `slots[slot]` right below and not touched until
        // its last CQE is reaped (invariants 1, 2, 4); the fixed-buffer index is valid
        // (invariant 3). There is room for all entries (checked above), so none is left out.
        let pushed = unsafe { sq.push_multiple(&entries) };
        drop(sq);
        if pushed.is_err() {
            return Err((op, tag));
        }
        self.free_slots.pop();
        self.slots[slot] = Some(InFlight { op, tag, left: n });
        self.in_flight += 1;
        self.cqes_due += n;
        Ok(())
    }

    /// The SQEs of `op` in slot `slot`, with their user_data; `None` for a chain when the ring has
    /// no direct-descriptor table (callers check [`supports_files`](Self::supports_files) first).
    fn build_entries(&self, op: &mut Op, slot: usize) -> Option<Vec<squeue::Entry>> {
        let hard = squeue::Flags::IO_HARDLINK;
        let steps = match op {
            Op::ReadFile { path, chunk, .. } => {
                let fd = self.files.then_some(types::Fixed(slot as u32))?;
                let len = chunk.capacity().min(MAX_RW) as u32;
                let buf = chunk.as_mut_ptr();
                let read = match self.is_fixed(chunk) {
                    true => opcode::ReadFixed::new(fd, buf, len, chunk.index() as u16)
                        .offset(0)
                        .build(),
                    false => opcode::Read::new(fd, buf, len).offset(0).build(),
                };
                vec![
                    self.open_direct(path, libc::O_RDONLY, 0, slot)?.flags(hard),
                    read.flags(hard),
                    opcode::Close::new(fd).build(),
                ]
            }
            Op::WriteFile {
                path, chunk, durable, ..
            } => {
                let fd = self.files.then_some(types::Fixed(slot as u32))?;
                let len = chunk.len().min(MAX_RW) as u32;
                let buf = chunk.as_ptr();
                let write = match self.is_fixed(chunk) {
                    true => opcode::WriteFixed::new(fd, buf, len, chunk.index() as u16)
                        .offset(0)
                        .build(),
                    false => opcode::Write::new(fd, buf, len).offset(0).build(),
                };
                let create = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
                let mut steps = vec![
                    self.open_direct(path, create, 0o644, slot)?.flags(hard),
                    write.flags(hard),
                ];
                if *durable {
                    steps.push(opcode::Fsync::new(fd).build().flags(hard));
                }
                steps.push(opcode::Close::new(fd).build());
                steps
            }
            Op::Rename { from, to } => {
                let cwd = types::Fd(libc::AT_FDCWD);
                vec![opcode::RenameAt::new(cwd, from.as_ptr(), cwd, to.as_ptr()).build()]
            }
            _ => vec![self.build_entry(op)],
        };
        Some(
            steps
                .into_iter()
                .enumerate()
                .map(|(step, e)| e.user_data(user_data(slot, step)))
                .collect(),
        )
    }

    /// OPENAT of `path` relative to the working directory into direct-descriptor slot `slot`
    /// (no `O_CLOEXEC`: the kernel refuses it for direct descriptors, which are never inherited).
    fn open_direct(&self, path: &CString, flags: i32, mode: libc::mode_t, slot: usize) -> Option<squeue::Entry> {
        let dest = types::DestinationSlot::try_from_slot_target(slot as u32).ok()?;
        Some(
            opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr())
                .flags(flags)
                .mode(mode)
                .file_index(Some(dest))
                .build(),
        )
    }

    /// Builds the SQE for `op` (without user_data). All pointer arithmetic is bounded by the
    /// chunk's capacity / filled length.
    fn build_entry(&self, op: &mut Op) -> squeue::Entry {
        match op {
            Op::Read {
                file,
                chunk,
                offset,
                want,
            } => {
                let done = chunk.len();
                let end = (*want).min(chunk.capacity()).max(done);
                let len = (end - done).min(MAX_RW) as u32;
                let buf = chunk.as_mut_ptr().wrapping_add(done);
                let fd = types::Fd(file.std().as_raw_fd());
                let at = offset.saturating_add(done as u64);
                if self.is_fixed(chunk) {
                    opcode::ReadFixed::new(fd, buf, len, chunk.index() as u16)
                        .offset(at)
                        .build()
                } else {
                    opcode::Read::new(fd, buf, len).offset(at).build()
                }
            }
            Op::Write {
                file,
                chunk,
                offset,
                done,
            } => {
                let done = (*done).min(chunk.len());
                let len = (chunk.len() - done).min(MAX_RW) as u32;
                let buf = chunk.as_ptr().wrapping_add(done);
                let fd = types::Fd(file.std().as_raw_fd());
                let at = offset.saturating_add(done as u64);
                if self.is_fixed(chunk) {
                    opcode::WriteFixed::new(fd, buf, len, chunk.index() as u16)
                        .offset(at)
                        .build()
                } else {
                    opcode::Write::new(fd, buf, len).offset(at).build()
                }
            }
            Op::Fsync { file } => opcode::Fsync::new(types::Fd(file.std().as_raw_fd())).build(),
            // Chains are built by `build_entries`; never reached.
            Op::ReadFile { .. } | Op::WriteFile { .. } | Op::Rename { .. } => opcode::Nop::new().build(),
        }
    }

    /// Arms the wake-up read on the eventfd, unless already armed. Returns false if the SQ was
    /// full (cannot happen: one SQE is reserved for it).
    pub(crate) fn arm_wake(&mut self) -> bool {
        if self.wake_armed {
            return true;
        }
        let buf: *mut u64 = &mut *self.wake_buf;
        let entry = opcode::Read::new(types::Fd(self.wake.as_raw_fd()), buf.cast(), 8)
            .build()
            .user_data(WAKE_TOKEN);
        // SAFETY: the 8-byte buffer is `wake_buf`, a heap allocation owned by the ring and not
        // accessed while armed (invariant 2); it is leaked if the ring drops while armed
        // (invariant 5). The eventfd is kept open by `self.wake`.
        let pushed = unsafe { self.ring.submission().push(&entry) };
        self.wake_armed = pushed.is_ok();
        self.wake_armed
    }

    /// Submits queued SQEs and waits for at least `want` completions. `EINTR` and `EBUSY`
    /// (completions must be reaped first) return `Ok` so the caller reaps and loops.
    pub(crate) fn submit_and_wait(&mut self, want: usize) -> io::Result<()> {
        match self.ring.submit_and_wait(want) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR) | Some(libc::EBUSY)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Moves every available completion into `out`, handing each operation back.
    pub(crate) fn reap(&mut self, out: &mut Vec<Event<T>>) {
        for cqe in self.ring.completion() {
            let user_data = cqe.user_data();
            if user_data == WAKE_TOKEN {
                self.wake_armed = false;
                out.push(Event::Woken);
                continue;
            }
            let (slot, step) = ((user_data & 0xffff_ffff) as usize, (user_data >> 32) as usize);
            let Some(entry) = self.slots.get_mut(slot) else {
                tracing::error!(user_data, "io_uring: completion for an unknown request");
                continue;
            };
            let Some(flight) = entry.as_mut() else {
                tracing::error!(user_data, "io_uring: completion for an unknown request");
                continue;
            };
            flight.op.record(step, cqe.result());
            flight.left -= 1;
            self.cqes_due -= 1;
            if flight.left > 0 {
                continue;
            }
            if let Some(InFlight { op, tag, .. }) = entry.take() {
                self.free_slots.push(slot);
                self.in_flight -= 1;
                out.push(Event::Done {
                    op,
                    tag,
                    result: cqe.result(),
                });
            }
        }
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        if self.in_flight > 0 || self.wake_armed {
            tracing::error!(
                in_flight = self.in_flight,
                "io_uring ring dropped with operations in flight; leaking their buffers"
            );
            // Invariant 5: never free memory the kernel may still write to.
            // The tag (the reply channel) is dropped normally so the waiting task gets an error
            // instead of hanging; only the operation (chunk + file) is leaked.
            for InFlight { op, tag, .. } in self.slots.drain(..).flatten() {
                mem::forget(op);
                drop(tag);
            }
            if self.wake_armed {
                mem::forget(mem::replace(&mut self.wake_buf, Box::new(0)));
            }
        }
    }
}
