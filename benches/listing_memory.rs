//! Memory flatness of the real pipeline over a synthetic listing of up to 10,000,000 keys, with no
//! server: both ends are S3 ends whose HTTP client answers in-process (`ClientConfig::http_client`),
//! generating ListObjectsV2 pages of the same keys (55-byte keys in a 10,000 × 1,000 tree, 1 byte
//! each, same times), so the run is a no-op S3→S3 sync with `--delete` through the real listers
//! (parallel ranges included), merge, diff and deletion spill.
//!
//! The peak RSS (VmHWM) is read when the listed count crosses 10k, 100k, 1M and 10M.
//!
//! With `--first-transfer` the target is empty instead, and the run stops at the first request that
//! is not a listing (the first transfer): it prints how many source and target pages had been
//! answered by then, at sizes of 10k to 10M keys, to show that transfers start within the first
//! listing pages however large the listing (nothing waits for a listing to end).
//!
//! ```sh
//! cargo bench --bench listing_memory                      # up to 10,000,000 keys
//! cargo bench --bench listing_memory -- 1000000           # up to 1,000,000 keys
//! cargo bench --bench listing_memory -- --first-transfer  # first transfer at 10k .. 10M keys
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

/// One page of ListObjectsV2 for a request URI over the keys `0..n` (`n` = 0: an empty bucket).
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

/// An answer of the in-process server.
fn respond(status: u16, body: SdkBody) -> hyper::http::Response<SdkBody> {
    hyper::http::Response::builder()
        .status(status)
        .body(body)
        .expect("a valid response")
}

fn hwm_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The client settings of an S3 end answered by `http`.
fn client(http: aws_smithy_runtime_api::client::http::SharedHttpClient) -> ClientConfig {
    ClientConfig {
        access_key: Some("bench".into()),
        secret_access_key: Some("bench".into()),
        region: Some("us-east-1".into()),
        endpoint_url: Some("http://synthetic.invalid".into()),
        force_path_style: true,
        http_client: Some(http),
        ..Default::default()
    }
}

/// A sync of `s3://source/` into `s3://target/` with `--delete`, both answered by `http`.
fn config(http: aws_smithy_runtime_api::client::http::SharedHttpClient) -> Config {
    Config::builder(
        Location::parse("s3://source/").expect("location"),
        Location::parse("s3://target/").expect("location"),
    )
    .source_client(client(http.clone()))
    .target_client(client(http))
    .with(|c| c.delete = true)
    .build()
    .expect("config")
}

fn main() {
    s3sync::prefer_small_pages();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--first-transfer") {
        for n in [10_000, 100_000, 1_000_000, 10_000_000] {
            first_transfer(n);
        }
        return;
    }
    let n: u64 = args.iter().find_map(|a| a.parse().ok()).unwrap_or(10_000_000);
    let pages = Arc::new(AtomicU64::new(0));
    let p = pages.clone();
    let http = aws_smithy_http_client::test_util::infallible_client_fn(move |req| {
        if req.uri().query().is_some_and(|q| q.contains("list-type=2")) {
            p.fetch_add(1, Ordering::Relaxed);
            respond(200, SdkBody::from(page(req.uri().query().unwrap_or_default(), n)))
        } else {
            // HeadBucket and anything else: an empty success.
            respond(200, SdkBody::empty())
        }
    });
    let cfg = config(http);
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

/// A sync of `n` source keys into an empty target, stopped at its first request that is not a
/// listing: prints the pages answered before it and the time it took.
fn first_transfer(n: u64) {
    let source_pages = Arc::new(AtomicU64::new(0));
    let target_pages = Arc::new(AtomicU64::new(0));
    let first = Arc::new(std::sync::OnceLock::<(u64, u64, f64, String)>::new());
    let cancel = tokio_util::sync::CancellationToken::new();
    let (sp, tp, f, c) = (
        source_pages.clone(),
        target_pages.clone(),
        first.clone(),
        cancel.clone(),
    );
    let started = Instant::now();
    let http = aws_smithy_http_client::test_util::infallible_client_fn(move |req| {
        let to_target = req.uri().path().starts_with("/target");
        if req.uri().query().is_some_and(|q| q.contains("list-type=2")) {
            let (pages, keys) = if to_target { (&tp, 0) } else { (&sp, n) };
            pages.fetch_add(1, Ordering::Relaxed);
            return respond(200, SdkBody::from(page(req.uri().query().unwrap_or_default(), keys)));
        }
        if req.method() == "HEAD" && req.uri().path().trim_matches('/').split('/').count() == 1 {
            return respond(200, SdkBody::empty()); // HeadBucket
        }
        // The first transfer's first request (HEAD or GET of a source object, PUT of a target).
        let _ = f.set((
            sp.load(Ordering::Relaxed),
            tp.load(Ordering::Relaxed),
            started.elapsed().as_secs_f64(),
            format!("{} {}", req.method(), req.uri().path()),
        ));
        c.cancel();
        respond(503, SdkBody::empty())
    });
    let cfg = config(http);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let sync = Sync::new(cfg);
        let token = sync.cancellation_token();
        let run = tokio::spawn(sync.run());
        cancel.cancelled().await;
        token.cancel();
        let _ = run.await;
    });
    if let Some((s, t, secs, req)) = first.get() {
        println!(
            "{n} source keys, empty target: first transfer request ({req}) after {s} source and {t} \
             target list pages, {:.1} ms",
            secs * 1000.0
        );
    }
}
