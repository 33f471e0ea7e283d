//! Upload standard input (any length, unknown up front) as one S3 object with the ingest engine.
//!
//! ```sh
//! tar c ./logs | cargo run --example put_stream -- bucket backups/logs.tar
//! ```
//! Credentials, region and endpoint come from the usual AWS environment (AWS_ENDPOINT_URL for a local
//! S3-compatible server). Memory stays within the engine's pool however much is piped in.

use s3sync::ingest::{Engine, PutOptions};
use s3sync::ClientConfig;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(bucket), Some(key)) = (args.next(), args.next()) else {
        eprintln!("usage: put_stream BUCKET KEY < data");
        std::process::exit(2);
    };
    let engine = Engine::builder()
        .client(ClientConfig {
            force_path_style: true,
            ..Default::default()
        })
        .build()
        .await?;
    // Ctrl-C cancels the upload; its multipart upload is aborted before put_stream returns.
    let cancel = s3sync::CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.cancel();
        }
    });
    let opts = PutOptions {
        cancel: Some(cancel),
        ..Default::default()
    };
    let put = engine.put_stream(&bucket, &key, tokio::io::stdin(), &opts).await?;
    eprintln!(
        "s3://{bucket}/{key}: {} bytes in {} parts, ETag {} (verified: {})",
        put.size, put.parts, put.etag, put.etag_verified
    );
    Ok(())
}
