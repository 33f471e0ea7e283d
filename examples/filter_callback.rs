//! A filter callback in Rust: sync only objects smaller than 1 MiB whose key does not start with `_`.
//!
//! ```sh
//! cargo run --example filter_callback -- ./data s3://bucket/prefix/
//! ```

use async_trait::async_trait;
use s3sync::callback::{CallbackError, FilterCallback, SourceObject};
use s3sync::{Config, Location, Sync};
use std::sync::Arc;

struct SmallVisible;

#[async_trait]
impl FilterCallback for SmallVisible {
    async fn filter(&self, o: &SourceObject) -> Result<bool, CallbackError> {
        Ok(o.size < 1024 * 1024 && !o.key.starts_with('_'))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(src), Some(dst)) = (args.next(), args.next()) else {
        eprintln!("usage: filter_callback SOURCE TARGET");
        std::process::exit(2);
    };
    let cfg = Config::builder(Location::parse(&src)?, Location::parse(&dst)?)
        .filter_callback(Arc::new(SmallVisible))
        .build()?;
    let stats = Sync::new(cfg).run().await?;
    println!("transferred {} objects", stats.transferred);
    Ok(())
}
