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
//! [`md5_compress_lanes`] runs the MD5 block function over up to sixteen streams at once (AVX-512),
//! so that the parts of many objects are hashed for a fraction of the CPU; [`md5_compress`] over
//! one.
//!
//! `unsafe` code is confined to five modules (`pool::mem`, `backend::uring_sys`, one system call
//! each in `backend::page_cache` and `durable`, and the one call into the AVX-512 kernel in
//! `md5_block`); the rest of the crate is `#![deny(unsafe_code)]`.

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod backend;
mod durable;
mod engine;
mod error;
mod md5_block;
mod pool;

pub use bytes::Bytes;
pub use durable::{GroupSync, Synced, Ticket};
pub use engine::{BackendKind, IoEngine, IoFile, BACKEND_ENV, DIRECT_ALIGN};
pub use error::IoError;
pub use md5_block::{md5_compress, md5_compress_lanes, md5_lanes_supported, MD5_LANES};
pub use pool::{Chunk, ChunkPool, CHUNK_ALIGN};
