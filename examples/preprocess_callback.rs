//! A preprocess callback in Rust: tag every object with its size class and record where it came from,
//! and never upload `*.tmp` files.
//!
//! ```sh
//! cargo run --example preprocess_callback -- ./data s3://bucket/prefix/
//! ```

use async_trait::async_trait;
use s3sync::callback::{CallbackError, PreprocessCallback, SourceObjectInfo, UploadMetadata};
use s3sync::{Config, Location, Sync};
use std::sync::Arc;

struct Annotate;

#[async_trait]
impl PreprocessCallback for Annotate {
    async fn preprocess(&self, src: &SourceObjectInfo, up: &mut UploadMetadata) -> Result<bool, CallbackError> {
        if src.key.ends_with(".tmp") {
            return Ok(false);
        }
        let class = if src.content_length < 1024 * 1024 {
            "small"
        } else {
            "large"
        };
        up.tagging = Some(format!("size-class={class}"));
        up.metadata.insert("origin-key".into(), src.key.clone());
        Ok(true)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(src), Some(dst)) = (args.next(), args.next()) else {
        eprintln!("usage: preprocess_callback SOURCE TARGET");
        std::process::exit(2);
    };
    let cfg = Config::builder(Location::parse(&src)?, Location::parse(&dst)?)
        .preprocess_callback(Arc::new(Annotate))
        .build()?;
    let stats = Sync::new(cfg).run().await?;
    println!("transferred {} objects, {} skipped", stats.transferred, stats.skipped);
    Ok(())
}
