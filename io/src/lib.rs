//! Local file I/O and transfer memory for s3sync.
//!
//! Every byte the tool moves between S3 and the local disk lives in one bounded [`ChunkPool`]:
//! a fixed budget allocated once (page-aligned) and split into equal [`Chunk`]s. Because the pool
//! is the only source of transfer buffers, its size *is* the tool's memory bound, and waiting for
//! a free chunk is the back-pressure that keeps fast producers from outrunning slow consumers.
//!
//! All local file access goes through an [`IoEngine`]. On Linux it drives io_uring from one
//! dedicated thread, with the pool's chunks registered as fixed buffers (`READ_FIXED` /
//! `WRITE_FIXED`, so the kernel does not pin/unpin pages per request). Elsewhere, or when forced,
//! it uses a portable tokio backend (`spawn_blocking` + positional reads/writes). See
//! `io/DESIGN.md` for the reasoning.
//!
//! A [`GroupSync`] makes many written files durable with one `syncfs` per group instead of one
//! `fsync` each.
//!
//! `unsafe` code is confined to four modules (`pool::mem`, `backend::uring_sys`, and one system
//! call each in `backend::page_cache` and `durable`); the rest of the crate is
//! `#![deny(unsafe_code)]`.

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod backend;
mod durable;
mod engine;
mod error;
mod pool;

pub use bytes::Bytes;
pub use durable::{GroupSync, Synced, Ticket};
pub use engine::{BackendKind, IoEngine, IoFile, BACKEND_ENV, DIRECT_ALIGN};
pub use error::IoError;
pub use pool::{Chunk, ChunkPool, CHUNK_ALIGN};
