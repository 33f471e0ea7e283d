//! s3sync: a reliable, very fast synchronization tool for Amazon S3 and S3-compatible storage.
//!
//! The library is what the CLI runs: build a [`Config`], create a [`Sync`], optionally take its event
//! stream or cancellation token, and `run` it to get [`Stats`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), s3sync::Error> {
//! use s3sync::{Config, Location, Sync};
//! let cfg = Config::builder(Location::parse("./data")?, Location::parse("s3://bucket/prefix/")?).build()?;
//! let stats = Sync::new(cfg).run().await?;
//! println!("{} objects transferred", stats.transferred);
//! # Ok(()) }
//! ```

pub mod attributes;
pub mod callback;
pub mod checksum;
pub mod cli;
pub mod compare;
pub mod config;
pub mod error;
pub mod filter;
pub mod ingest;
pub mod location;
pub mod owner;
pub mod pipeline;
pub mod ratelimit;
pub mod report;
pub mod shard;
pub mod stats;
pub mod storage;
pub mod transfer;

pub use compare::CheckMode;
pub use config::{ClientConfig, Config, ConfigBuilder, RetryConfig};
pub use error::{Error, Result};
pub use filter::Filters;
pub use location::Location;
pub use pipeline::Sync;
pub use stats::{Stats, SyncEvent};
pub use tokio_util::sync::CancellationToken;
