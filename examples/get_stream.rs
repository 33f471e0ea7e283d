//! Write one object to standard output with the ingest engine (ranges fetched in parallel, written in
//! order).
//!
//! ```sh
//! cargo run --example get_stream -- bucket backups/logs.tar | tar t
//! ```
//! The bytes are verified as they pass; a mismatch is reported (exit 1) after they were written, so
//! pipe into something that can discard them.

use s3sync::ingest::{Engine, GetOptions};
use s3sync::ClientConfig;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(bucket), Some(key)) = (args.next(), args.next()) else {
        eprintln!("usage: get_stream BUCKET KEY > file");
        std::process::exit(2);
    };
    let engine = Engine::builder()
        .client(ClientConfig {
            force_path_style: true,
            ..Default::default()
        })
        .build()
        .await?;
    let got = engine
        .get_stream(&bucket, &key, tokio::io::stdout(), &GetOptions::default())
        .await?;
    eprintln!(
        "{} bytes, ETag {} (verified: {})",
        got.size, got.etag, got.etag_verified
    );
    Ok(())
}
