//! s3sync: a reliable, very fast synchronization tool for Amazon S3 and S3-compatible storage.
//!
//! The library has two entry points over one engine (a bounded chunk pool, io_uring file I/O on
//! Linux, every byte hashed once in flight and compared with what S3 reports):
//!
//! - [`ingest::Engine`]: single objects. Upload an `AsyncRead` of unknown length
//!   ([`put_stream`](ingest::Engine::put_stream)) or a file ([`put_file`](ingest::Engine::put_file));
//!   download to a file ([`get_to_file`](ingest::Engine::get_to_file), which appears only complete and
//!   verified) or to an `AsyncWrite` ([`get_stream`](ingest::Engine::get_stream)). Multipart is chosen
//!   by size, parts come from the pool (memory is bounded whatever the stream's length), failed or
//!   cancelled multipart uploads are aborted, and one `Clone + Send + Sync` engine serves any number
//!   of concurrent transfers.
//! - [`Sync`]: whole trees, what the CLI runs. Build a [`Config`], create a [`Sync`], optionally take
//!   its event stream or cancellation token, and `run` it to get [`Stats`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), s3sync::Error> {
//! use s3sync::ingest::{Engine, GetOptions, PutOptions};
//! let engine = Engine::builder().build().await?;
//! let put = engine.put_file("./report.pdf", "bucket", "reports/2026.pdf", &PutOptions::default()).await?;
//! assert!(put.etag_verified);
//! let got = engine.get_to_file("bucket", "reports/2026.pdf", "./copy.pdf", &GetOptions::default()).await?;
//! println!("{} bytes, ETag {}", got.size, got.etag);
//! # Ok(()) }
//! ```
//!
//! ```no_run
//! # async fn demo() -> Result<(), s3sync::Error> {
//! use s3sync::{Config, Location, Sync};
//! let cfg = Config::builder(Location::parse("./data")?, Location::parse("s3://bucket/prefix/")?).build()?;
//! let stats = Sync::new(cfg).run().await?;
//! println!("{} objects transferred", stats.transferred);
//! # Ok(()) }
//! ```
//!
//! Errors are [`Error`] values; [`Error::exit_code`] maps them to the CLI's exit codes.

// Unsafe code lives in the io crate (`s3sync-io`: io_uring and registered buffers) and the sys crate
// (`s3sync-sys`: two system calls and the unrestricted Lua VM of `--allow-lua-unsafe-vm`), each block
// with its SAFETY comment; none is allowed here.
#![forbid(unsafe_code)]

// The conformance suite (`pipeline/conformance.rs`) names the crate as its users do, inside it too.
#[cfg(test)]
extern crate self as s3sync;

pub(crate) mod annotations;
pub mod attributes;
pub mod callback;
pub mod checksum;
pub mod cli;
pub(crate) mod compare;
pub mod config;
pub mod error;
mod external_sort;
pub(crate) mod filter;
pub mod ingest;
pub(crate) mod location;
pub mod owner;
pub(crate) mod pipeline;
pub(crate) mod ratelimit;
pub mod report;
pub(crate) mod retry;
pub mod shard;
pub mod stats;
pub mod storage;
pub(crate) mod transfer;

pub use compare::CheckMode;
pub use config::{ClientConfig, Config, ConfigBuilder, RetryConfig};
pub use error::{Error, Result, S3Error, S3ErrorKind};
pub use filter::Filters;
pub use location::Location;
pub use pipeline::{make_shard_plan, Stop, Sync};
pub use stats::{Stats, SyncEvent};
pub use tokio_util::sync::CancellationToken;
pub use transfer::resume::{Journal, UploadRecord};

/// Keeps this process's memory in 4 KiB pages (Linux; elsewhere nothing). With transparent huge pages
/// set to `always` (common on Linux distributions), the allocator's eagerly committed arena is backed
/// by 2 MiB pages as soon as one byte of each is touched, and a no-op sync's peak RSS doubles
/// (measured: 53 MiB instead of 28 MiB over 100,000 objects). Transfer buffers are few, large and
/// reused, so small pages cost them nothing measurable. The CLI calls this first thing; a program
/// embedding the library may.
pub fn prefer_small_pages() {
    s3sync_sys::prefer_small_pages();
}
