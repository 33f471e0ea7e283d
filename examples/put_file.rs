//! Upload one file with the ingest engine, printing progress.
//!
//! ```sh
//! cargo run --example put_file -- ./video.mp4 bucket media/video.mp4
//! ```
//! The file is read once (through io_uring into registered buffers on Linux), hashed in the same pass
//! and sent without copying; the ETag S3 returns is compared with the one computed.

use s3sync::ingest::{Engine, Progress, PutOptions};
use s3sync::ClientConfig;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(bucket), Some(key)) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: put_file PATH BUCKET KEY");
        std::process::exit(2);
    };
    let engine = Engine::builder()
        .client(ClientConfig {
            force_path_style: true,
            ..Default::default()
        })
        .build()
        .await?;
    let mut opts = PutOptions {
        progress: Some(Arc::new(|p: Progress| {
            eprintln!("{} of {} bytes", p.bytes, p.total.unwrap_or(0));
        })),
        ..Default::default()
    };
    opts.attributes.content_type = mime_guess::from_path(&path).first().map(|m| m.to_string());
    let put = engine.put_file(&path, &bucket, &key, &opts).await?;
    eprintln!("s3://{bucket}/{key}: ETag {} ({} parts)", put.etag, put.parts);
    Ok(())
}
