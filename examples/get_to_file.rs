//! Download one object to a file with the ingest engine.
//!
//! ```sh
//! cargo run --example get_to_file -- bucket media/video.mp4 ./video.mp4
//! ```
//! Ranges are fetched in parallel into a temporary file beside the target; the file gets its name only
//! once its ETag (and stored checksum, if any) matched and it was fsynced.

use s3sync::ingest::{Engine, GetOptions};
use s3sync::ClientConfig;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(bucket), Some(key), Some(path)) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: get_to_file BUCKET KEY PATH");
        std::process::exit(2);
    };
    let engine = Engine::builder()
        .client(ClientConfig {
            force_path_style: true,
            ..Default::default()
        })
        .build()
        .await?;
    let got = engine.get_to_file(&bucket, &key, &path, &GetOptions::default()).await?;
    eprintln!(
        "{path}: {} bytes, ETag {} (verified: {}, checksum verified: {})",
        got.size, got.etag, got.etag_verified, got.checksum_verified
    );
    Ok(())
}
