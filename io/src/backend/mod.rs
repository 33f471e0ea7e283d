//! I/O backends behind [`IoEngine`](crate::IoEngine).
//!
//! * `tokio_fs`: portable; every operation runs on tokio's blocking pool with positional
//!   reads/writes. Always compiled; also used for the metadata operations (open, create,
//!   set_len, rename) of the io_uring engine.
//! * `uring` + `uring_sys`: Linux only (`cfg(s3sync_uring)`, set by `build.rs`); one thread owns
//!   an io_uring instance with the pool's chunks registered as fixed buffers.

pub(crate) mod tokio_fs;

#[cfg(s3sync_uring)]
pub(crate) mod uring;
#[cfg(s3sync_uring)]
mod uring_sys;
