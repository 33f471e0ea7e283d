//! Memory flatness of the real pipeline over a synthetic listing of up to 10,000,000 keys, with no
//! server: both ends are S3 ends whose HTTP client answers in-process (`ClientConfig::http_client`),
//! generating ListObjectsV2 pages of the same keys (55-byte keys in a 10,000 × 1,000 tree, 1 byte
//! each, same times), so the run is a no-op S3→S3 sync with `--delete` through the real listers
//! (parallel ranges included), merge, diff and deletion spill.
//!
//! The peak RSS (VmHWM) is read when the listed count crosses 10k, 100k, 1M and 10M.
//!
//! ```sh
//! cargo bench --bench listing_memory              # up to 10,000,000 keys
//! cargo bench --bench listing_memory -- 1000000   # up to 1,000,000 keys
//! ```

use aws_smithy_types::body::SdkBody;
use s3sync::{ClientConfig, Config, Location, Sync};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The key of index `i`: 55 bytes, in index order.
fn key(i: u64) -> String {
    format!("data/set-{:04}/object-{:010}-padding-to-55-bytes.bin", i / 1000, i)
}

/// The first index whose key sorts after `s`.
fn index_after(s: &str, n: u64) -> u64 {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if key(mid).as_str() <= s {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// One page of ListObjectsV2 for a request URI over the keys `0..n`.
fn page(query: &str, n: u64) -> String {
    let param = |name: &str| {
        query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name).then(|| percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned())
        })
    };
    let max: u64 = param("max-keys").and_then(|m| m.parse().ok()).unwrap_or(1000);
    let start = match (param("continuation-token"), param("start-after")) {
        (Some(t), _) => t.parse().unwrap_or(n),
        (None, Some(s)) => index_after(&s, n),
        (None, None) => 0,
    };
    let end = (start + max).min(n);
    let mut xml = String::with_capacity(256 * (end - start) as usize + 256);
    xml.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult>");
    for i in start..end {
        xml.push_str("<Contents><Key>");
        xml.push_str(&key(i));
        xml.push_str(
            "</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified>\
             <ETag>&quot;0cc175b9c0f1b6a831c399e269772661&quot;</ETag><Size>1</Size></Contents>",
        );
    }
    let truncated = end < n;
    xml.push_str(&format!("<IsTruncated>{truncated}</IsTruncated>"));
    if truncated {
        xml.push_str(&format!("<NextContinuationToken>{end}</NextContinuationToken>"));
    }
    xml.push_str("</ListBucketResult>");
    xml
}

fn hwm_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    s3sync::prefer_small_pages();
    let n: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    let pages = Arc::new(AtomicU64::new(0));
    let p = pages.clone();
    let http = aws_smithy_http_client::test_util::infallible_client_fn(move |req| {
        if req.uri().query().is_some_and(|q| q.contains("list-type=2")) {
            p.fetch_add(1, Ordering::Relaxed);
            let body = page(req.uri().query().unwrap_or_default(), n);
            hyper::http::Response::builder()
                .status(200)
                .body(SdkBody::from(body))
                .unwrap()
        } else {
            // HeadBucket and anything else: an empty success.
            hyper::http::Response::builder()
                .status(200)
                .body(SdkBody::empty())
                .unwrap()
        }
    });
    let client = ClientConfig {
        access_key: Some("bench".into()),
        secret_access_key: Some("bench".into()),
        region: Some("us-east-1".into()),
        endpoint_url: Some("http://synthetic.invalid".into()),
        force_path_style: true,
        http_client: Some(http),
        ..Default::default()
    };
    let cfg = Config::builder(
        Location::parse("s3://source/").expect("location"),
        Location::parse("s3://target/").expect("location"),
    )
    .source_client(client.clone())
    .target_client(client)
    .with(|c| c.delete = true)
    .build()
    .expect("config");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let sync = Sync::new(cfg);
        let reporter = sync.reporter();
        let started = Instant::now();
        let base = hwm_mib();
        let run = tokio::spawn(sync.run());
        println!("synthetic no-op S3->S3 --delete over {n} keys (55-byte keys), base VmHWM {base:.1} MiB");
        println!("| objects listed (source) | elapsed s | peak RSS (VmHWM) MiB |");
        println!("|---|---|---|");
        let mut marks: Vec<u64> = [10_000, 100_000, 1_000_000, 10_000_000]
            .into_iter()
            .filter(|&m| m <= n)
            .collect();
        marks.reverse();
        while !run.is_finished() {
            let listed = reporter.snapshot().listed_source;
            while marks.last().is_some_and(|&m| listed >= m) {
                let m = marks.pop().unwrap_or_default();
                println!("| {m} | {:.1} | {:.1} |", started.elapsed().as_secs_f64(), hwm_mib());
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let stats = run.await.expect("join").expect("run");
        for m in marks.into_iter().rev() {
            println!("| {m} | {:.1} | {:.1} |", started.elapsed().as_secs_f64(), hwm_mib());
        }
        println!(
            "done: {} skipped, {} transferred, {} deleted, {} list requests, {:.1} s, peak RSS {:.1} MiB",
            stats.skipped,
            stats.transferred,
            stats.deleted,
            pages.load(Ordering::Relaxed),
            started.elapsed().as_secs_f64(),
            hwm_mib()
        );
        assert_eq!((stats.skipped, stats.transferred, stats.deleted), (n, 0, 0));
    });
}
