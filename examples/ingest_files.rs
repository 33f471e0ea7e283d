//! Upload every file under a directory with the ingest engine, many at once, and print how long it
//! took: the library side of `bench/ingest.py` (the same data through the CLI is the other side).
//!
//! ```sh
//! cargo run --release --example ingest_files -- ./data bucket [CONCURRENCY]
//! ```
//! Keys are the paths relative to the directory. Credentials, region and endpoint come from the usual
//! AWS environment.

use futures::StreamExt;
use s3sync::ingest::{Engine, PutOptions};
use s3sync::ClientConfig;
use std::path::{Path, PathBuf};

fn files(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, String)>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let path = e.path();
        if e.file_type()?.is_dir() {
            files(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push((path.clone(), rel.to_string_lossy().replace('\\', "/")));
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(bucket)) = (args.next(), args.next()) else {
        eprintln!("usage: ingest_files DIR BUCKET [CONCURRENCY]");
        std::process::exit(2);
    };
    let concurrency: usize = args.next().map(|c| c.parse()).transpose()?.unwrap_or(64);
    let root = PathBuf::from(dir);
    let mut list = Vec::new();
    files(&root, &root, &mut list)?;
    let engine = Engine::builder()
        .client(ClientConfig {
            force_path_style: true,
            ..Default::default()
        })
        .build()
        .await?;
    let start = std::time::Instant::now();
    let bytes: u64 = futures::stream::iter(list.iter())
        .map(|(path, key)| {
            let engine = engine.clone();
            let bucket = bucket.clone();
            async move { engine.put_file(path, &bucket, key, &PutOptions::default()).await }
        })
        .buffer_unordered(concurrency)
        .map(|r| r.map(|p| p.size))
        .fold(Ok(0u64), |acc, r| async move { Ok::<u64, s3sync::Error>(acc? + r?) })
        .await?;
    println!(
        "{} files, {bytes} bytes in {:.3} s",
        list.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
