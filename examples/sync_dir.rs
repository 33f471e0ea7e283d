//! Upload a local directory to S3 with the library, printing per-object events.
//!
//! ```sh
//! cargo run --example sync_dir -- ./data s3://bucket/prefix/
//! ```
//! Credentials, region and endpoint come from the usual AWS environment (AWS_ENDPOINT_URL for a local
//! S3-compatible server).

use s3sync::{ClientConfig, Config, Location, Sync, SyncEvent};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(src), Some(dst)) = (args.next(), args.next()) else {
        eprintln!("usage: sync_dir SOURCE TARGET");
        std::process::exit(2);
    };
    let s3 = ClientConfig {
        force_path_style: true,
        ..Default::default()
    };
    let cfg = Config::builder(Location::parse(&src)?, Location::parse(&dst)?)
        .source_client(s3.clone())
        .target_client(s3)
        .build()?;
    let mut sync = Sync::new(cfg);
    let mut events = sync.events().ok_or("events already taken")?;
    let printer = tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            if let SyncEvent::Transferred {
                key,
                bytes,
                etag_verified,
            } = e
            {
                println!("{key}: {bytes} bytes, verified: {etag_verified}");
            }
        }
    });
    let stats = sync.run().await?;
    printer.await?;
    println!("transferred {} objects, {} bytes", stats.transferred, stats.bytes);
    Ok(())
}
