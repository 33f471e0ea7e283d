//! I/O backends behind [`IoEngine`](crate::IoEngine).
//!
//! * `tokio_fs`: portable; every operation runs on tokio's blocking pool with positional
//!   reads/writes. Always compiled; also used for the metadata operations (open, create,
//!   set_len) of the io_uring engine, and for its whole-file operations when the kernel cannot
//!   chain them.
//! * `uring` + `uring_sys`: Linux only (`cfg(s3sync_uring)`, set by `build.rs`); one thread owns
//!   an io_uring instance with the pool's chunks registered as fixed buffers. A small file is read
//!   or written whole as one chain of linked requests (open, read or write, fsync, close) on a
//!   direct descriptor: one submission instead of four system calls and two thread hand-offs.
//! * `page_cache`: whether a file is cached, which decides whether a large file is read with
//!   `O_DIRECT`.

mod page_cache;
pub(crate) mod tokio_fs;

#[cfg(s3sync_uring)]
pub(crate) mod uring;
#[cfg(s3sync_uring)]
mod uring_sys;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Where the creation of a new file stands, shared by the caller and whoever creates it (a blocking
/// task, or the io_uring thread).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Creation {
    Pending,
    Created,
    Delivered,
    Abandoned,
}

/// The creator's side of a [`CreationGuard`].
#[derive(Clone)]
pub(crate) struct CreationState(Arc<Mutex<Creation>>);

impl CreationState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Creation> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called once the file at `path` exists: if the caller is already gone, removes the file and
    /// fails; otherwise the caller's guard is responsible for it from now on.
    pub(crate) fn created(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        if *st == Creation::Abandoned {
            drop(st);
            let _ = std::fs::remove_file(path);
            return Err(io::Error::new(io::ErrorKind::Interrupted, "the creation was cancelled"));
        }
        *st = Creation::Created;
        Ok(())
    }
}

/// The caller's side of creating a new file: dropped before the file reached the caller (the caller
/// was cancelled), it removes the file, or tells the creator to remove it once made. So a cancelled
/// creation never leaves a file nobody owns (a stray temporary file after Ctrl-C).
pub(crate) struct CreationGuard {
    state: CreationState,
    path: PathBuf,
}

impl CreationGuard {
    pub(crate) fn new(path: &Path) -> CreationGuard {
        CreationGuard {
            state: CreationState(Arc::new(Mutex::new(Creation::Pending))),
            path: path.to_path_buf(),
        }
    }

    /// The state to hand to the creator.
    pub(crate) fn state(&self) -> CreationState {
        self.state.clone()
    }

    /// The caller has the file: nothing to remove any more.
    pub(crate) fn delivered(self) {
        *self.state.lock() = Creation::Delivered;
    }
}

impl Drop for CreationGuard {
    fn drop(&mut self) {
        let mut st = self.state.lock();
        if *st == Creation::Created {
            let _ = std::fs::remove_file(&self.path);
        }
        if *st != Creation::Delivered {
            *st = Creation::Abandoned;
        }
    }
}
