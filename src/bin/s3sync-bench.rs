//! `s3sync-bench`: load an S3 endpoint and report what it sustains (throughput and latency
//! percentiles per operation), in the spirit of MinIO's `warp`.
//!
//! A binary of its own so that `s3sync SOURCE TARGET` parses exactly as the original. Every object it
//! writes lives under a fresh `<prefix><run-id>/` and is deleted at the end, also after Ctrl-C (a second
//! Ctrl-C exits at once); it refuses a prefix that already holds objects unless `--allow-non-empty`.

use anyhow::{bail, Context, Result};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use futures::StreamExt;
use hdrhistogram::Histogram;
use s3sync::{ClientConfig, Location, RetryConfig};
use serde::Serialize;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// PutObject of new objects.
    Put,
    /// GetObject of objects written first (the preparation is not measured).
    Get,
    /// HeadObject of objects written first.
    Stat,
    /// ListObjectsV2 pages over objects written first.
    List,
    /// DeleteObject of objects written first.
    Delete,
    /// GET, STAT, PUT and DELETE at once, in the proportions of `--mix`.
    Mixed,
}

/// The bytes of the objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Data {
    /// Pseudo-random bytes (nothing to compress); each object is a different window of one random
    /// buffer, so a server that deduplicates by content blocks may still find shared blocks.
    Random,
    /// Zeros.
    Zero,
}

#[derive(Debug, Parser)]
#[command(
    name = "s3sync-bench",
    version,
    about = "Benchmark an S3 endpoint: throughput and latency percentiles per operation",
    after_help = "Examples:\n  \
      s3sync-bench put s3://bench/ --endpoint-url http://127.0.0.1:9000 --force-path-style --size 1MiB --count 2000\n  \
      s3sync-bench mixed s3://bench/ --duration 60s --concurrency 64 --json > a.json\n\
    Compare two endpoints by running the same command against each (same --size, --count or --duration,\n\
    --concurrency) with --json --label NAME, and comparing the per-operation figures."
)]
struct Args {
    /// What to measure.
    #[arg(value_enum)]
    workload: Workload,
    /// Where the objects go: `s3://bucket[/prefix]` (they are written under `<prefix><run-id>/`).
    target: String,
    /// Endpoint URL (default: the AWS SDK's, e.g. from AWS_ENDPOINT_URL).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    endpoint_url: Option<String>,
    /// Region.
    #[arg(long)]
    region: Option<String>,
    /// Path-style addressing (most S3-compatible servers).
    #[arg(long)]
    force_path_style: bool,
    /// Named profile of the AWS config files.
    #[arg(long)]
    profile: Option<String>,
    /// Object size (e.g. 4KiB, 1MiB, 64MiB; at most 5GiB: one PutObject each).
    #[arg(long, default_value = "1MiB", value_parser = s3sync::cli::size::parse_size)]
    size: u64,
    /// Objects to write (put), or to prepare before measuring (get, stat, list, delete, mixed).
    #[arg(long, default_value_t = 1000)]
    count: u64,
    /// Measure for this long instead of a fixed number of operations (e.g. 30s, 2m; not for delete).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Operations in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Object bytes.
    #[arg(long, value_enum, default_value_t = Data::Random)]
    data: Data,
    /// Proportions of the mixed workload, `get=45,stat=30,put=15,delete=10` by default.
    #[arg(long, default_value = "get=45,stat=30,put=15,delete=10")]
    mix: String,
    /// SDK attempts per request; 1 (the default) shows every failure instead of hiding it in retries.
    #[arg(long, default_value_t = 1)]
    max_attempts: u32,
    /// Run although the prefix already holds objects (they are never touched).
    #[arg(long)]
    allow_non_empty: bool,
    /// Leave the objects in place at the end.
    #[arg(long)]
    keep: bool,
    /// Print the results as one JSON document instead of a table.
    #[arg(long)]
    json: bool,
    /// A name for this run in the JSON output (e.g. the endpoint's).
    #[arg(long)]
    label: Option<String>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration '{s}': expected e.g. 30s, 2m, 500ms"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("invalid duration '{s}': expected e.g. 30s, 2m, 500ms")),
    }
}

/// The S3 operations measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
enum Op {
    Put,
    Get,
    Stat,
    List,
    Delete,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Put => "PUT",
            Op::Get => "GET",
            Op::Stat => "STAT",
            Op::List => "LIST",
            Op::Delete => "DELETE",
        }
    }
}

/// What one worker measured of one operation.
struct Tally {
    latency_us: Histogram<u64>,
    errors: u64,
    bytes: u64,
    first_error: Option<String>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            // 1 µs to 1 hour, 3 significant digits.
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap_or_else(|_| Histogram::new(3).unwrap()),
            errors: 0,
            bytes: 0,
            first_error: None,
        }
    }

    fn merge(&mut self, o: Tally) {
        let _ = self.latency_us.add(&o.latency_us);
        self.errors += o.errors;
        self.bytes += o.bytes;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }
}

type Tallies = BTreeMap<Op, Tally>;

/// One line of the report.
#[derive(Debug, Serialize)]
struct OpReport {
    op: Op,
    ops: u64,
    errors: u64,
    seconds: f64,
    ops_per_sec: f64,
    mib_per_sec: f64,
    /// Keys listed per second (LIST only).
    #[serde(skip_serializing_if = "Option::is_none")]
    objects_per_sec: Option<f64>,
    latency_ms: Latency,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    endpoint: String,
    workload: String,
    object_size: u64,
    concurrency: usize,
    prepared_objects: u64,
    operations: Vec<OpReport>,
    cleaned_up: u64,
    /// Objects the clean-up could not delete (left under `run_prefix`; exit code 1).
    cleanup_failed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    cleanup_error: Option<String>,
    run_prefix: String,
    interrupted: bool,
}

/// Everything the workers share.
struct Bench {
    /// The measured client: every request sent once (`--max-attempts`).
    client: Client,
    /// The preparation's and the clean-up's client, which retries: they are not measured, and a
    /// throttled DELETE must not leave objects behind.
    setup: Client,
    bucket: String,
    /// `<prefix><run-id>/`: every key of this run starts with it.
    root: String,
    data: Bytes,
    size: u64,
    /// Objects prepared before the measured phase: keys `0..prepared`, read by get, stat and mixed,
    /// deleted only by the delete workload (so a read never races a delete of the same key).
    prepared: AtomicU64,
    /// Keys written during the measured phase and not deleted yet (what mixed deletes).
    fresh: Mutex<Vec<u64>>,
    /// Whether `fresh` is kept (mixed only: a long put run would grow it for nothing).
    track_fresh: bool,
    /// The next prepared key the delete workload deletes.
    next_delete: AtomicU64,
    /// The next new key number.
    next_key: AtomicU64,
    /// Operations started (for fixed-count runs).
    started: AtomicU64,
    cancel: CancellationToken,
}

impl Bench {
    fn key(&self, n: u64) -> String {
        format!("{}{n:010}", self.root)
    }

    /// The body of object `n`: a window of the data buffer (zero-copy), different per object.
    fn body(&self, n: u64) -> Bytes {
        let slack = self.data.len() as u64 - self.size;
        let off = if slack == 0 { 0 } else { (n * 4099) % slack } as usize;
        self.data.slice(off..off + self.size as usize)
    }

    /// A prepared key to read.
    fn random_prepared(&self) -> Option<u64> {
        let n = self.prepared.load(Ordering::Relaxed);
        (n > 0).then(|| rand::random_range(0..n))
    }

    /// The next prepared key to delete (each once).
    fn next_prepared(&self) -> Option<u64> {
        let n = self.next_delete.fetch_add(1, Ordering::Relaxed);
        (n < self.prepared.load(Ordering::Relaxed)).then_some(n)
    }

    /// A key written during the measured phase, taken out of the set.
    fn take_fresh(&self) -> Option<u64> {
        let mut fresh = self.fresh.lock().ok()?;
        if fresh.is_empty() {
            return None;
        }
        let i = rand::random_range(0..fresh.len());
        Some(fresh.swap_remove(i))
    }

    async fn put(&self, n: u64) -> Result<u64, String> {
        self.put_with(&self.client, n).await
    }

    async fn put_with(&self, client: &Client, n: u64) -> Result<u64, String> {
        client
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(n))
            .body(ByteStream::from(self.body(n)))
            .customize()
            // The endpoint is measured, not the client's SHA-256 of every body.
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| sdk_message(&e))?;
        if self.track_fresh && n >= self.prepared.load(Ordering::Relaxed) {
            if let Ok(mut fresh) = self.fresh.lock() {
                fresh.push(n);
            }
        }
        Ok(self.size)
    }

    async fn get(&self, n: u64) -> Result<u64, String> {
        let resp = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(n))
            .send()
            .await
            .map_err(|e| sdk_message(&e))?;
        let mut body = resp.body;
        let mut got = 0u64;
        while let Some(b) = body.next().await {
            got += b.map_err(|e| e.to_string())?.len() as u64;
        }
        if got != self.size {
            return Err(format!("GET returned {got} bytes, expected {}", self.size));
        }
        Ok(got)
    }

    async fn stat(&self, n: u64) -> Result<u64, String> {
        self.client
            .head_object()
            .bucket(&self.bucket)
            .key(self.key(n))
            .send()
            .await
            .map(|_| 0)
            .map_err(|e| sdk_message(&e))
    }

    async fn delete(&self, n: u64) -> Result<u64, String> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.key(n))
            .send()
            .await
            .map(|_| 0)
            .map_err(|e| sdk_message(&e))
    }

    /// One ListObjectsV2 page of the run's objects, after `start_after`; returns the keys listed and
    /// the last key (None at the end).
    async fn list_page(&self, start_after: Option<String>) -> Result<(u64, Option<String>), String> {
        let resp = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&self.root)
            .set_start_after(start_after)
            .send()
            .await
            .map_err(|e| sdk_message(&e))?;
        let n = resp.contents().len() as u64;
        let last = resp.contents().last().and_then(|o| o.key()).map(str::to_string);
        Ok((n, if resp.is_truncated() == Some(true) { last } else { None }))
    }
}

fn sdk_message<E: std::fmt::Debug + aws_sdk_s3::error::ProvideErrorMetadata>(e: &E) -> String {
    match (e.code(), e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_string(),
        _ => format!("{e:?}").chars().take(200).collect(),
    }
}

/// When a measured phase ends: after `ops` operations or at `deadline`.
#[derive(Clone, Copy)]
struct Stop {
    ops: Option<u64>,
    deadline: Option<Instant>,
}

impl Stop {
    /// Claims the next operation; false when the phase is over.
    fn next(&self, b: &Bench) -> bool {
        if b.cancel.is_cancelled() || self.deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        match self.ops {
            Some(n) => b.started.fetch_add(1, Ordering::Relaxed) < n,
            None => true,
        }
    }
}

/// Runs `concurrency` workers, each repeating `one` until `stop` says so; returns the merged tallies
/// and the phase's wall time.
async fn measure<F, Fut>(b: &Arc<Bench>, concurrency: usize, stop: Stop, one: F) -> (Tallies, Duration)
where
    F: Fn(Arc<Bench>, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Option<(Op, Result<u64, String>)>> + Send,
{
    b.started.store(0, Ordering::Relaxed);
    let t0 = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let (b, one) = (b.clone(), one.clone());
            tokio::spawn(async move {
                let mut t: Tallies = BTreeMap::new();
                while stop.next(&b) {
                    let start = Instant::now();
                    let Some((op, r)) = one(b.clone(), worker).await else {
                        break;
                    };
                    let us = start.elapsed().as_micros().max(1) as u64;
                    let tally = t.entry(op).or_insert_with(Tally::new);
                    match r {
                        Ok(bytes) => {
                            let _ = tally.latency_us.record(us);
                            tally.bytes += bytes;
                        }
                        Err(e) => {
                            tally.errors += 1;
                            tally.first_error.get_or_insert(e);
                        }
                    }
                }
                t
            })
        })
        .collect();
    let mut all: Tallies = BTreeMap::new();
    for w in workers {
        if let Ok(t) = w.await {
            for (op, tally) in t {
                match all.get_mut(&op) {
                    Some(a) => a.merge(tally),
                    None => {
                        all.insert(op, tally);
                    }
                }
            }
        }
    }
    (all, t0.elapsed())
}

fn report_of(tallies: Tallies, wall: Duration) -> Vec<OpReport> {
    let secs = wall.as_secs_f64().max(1e-9);
    let ms = |us: u64| us as f64 / 1000.0;
    tallies
        .into_iter()
        .map(|(op, t)| {
            let ops = t.latency_us.len();
            OpReport {
                op,
                ops,
                errors: t.errors,
                seconds: secs,
                ops_per_sec: ops as f64 / secs,
                mib_per_sec: if op == Op::List {
                    0.0
                } else {
                    t.bytes as f64 / secs / (1024.0 * 1024.0)
                },
                objects_per_sec: (op == Op::List).then(|| t.bytes as f64 / secs),
                latency_ms: Latency {
                    p50: ms(t.latency_us.value_at_quantile(0.50)),
                    p90: ms(t.latency_us.value_at_quantile(0.90)),
                    p99: ms(t.latency_us.value_at_quantile(0.99)),
                    max: ms(t.latency_us.max()),
                },
                first_error: t.first_error,
            }
        })
        .collect()
}

/// Writes `count` objects for the read workloads (not measured).
async fn prepare(b: &Arc<Bench>, count: u64, concurrency: usize) -> Result<u64> {
    let stop = Stop {
        ops: Some(count),
        deadline: None,
    };
    let (t, _) = measure(b, concurrency, stop, |b: Arc<Bench>, _| async move {
        let n = b.next_key.fetch_add(1, Ordering::Relaxed);
        Some((Op::Put, b.put_with(&b.setup, n).await))
    })
    .await;
    if b.cancel.is_cancelled() {
        bail!("interrupted while preparing");
    }
    if let Some(put) = t.get(&Op::Put) {
        if put.errors > 0 {
            bail!(
                "{} of {count} objects could not be written while preparing: {}",
                put.errors,
                put.first_error.clone().unwrap_or_default()
            );
        }
    }
    Ok(count)
}

/// Parses `get=45,stat=30,put=15,delete=10` into cumulative weights.
fn parse_mix(s: &str) -> Result<Vec<(Op, u32)>> {
    let mut out = Vec::new();
    let mut total = 0;
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (name, w) = part
            .split_once('=')
            .with_context(|| format!("--mix: '{part}' is not op=weight"))?;
        let op = match name.trim() {
            "get" => Op::Get,
            "stat" => Op::Stat,
            "put" => Op::Put,
            "delete" => Op::Delete,
            other => bail!("--mix: unknown operation '{other}' (get, stat, put, delete)"),
        };
        let w: u32 = w
            .trim()
            .parse()
            .with_context(|| format!("--mix: '{w}' is not a number"))?;
        total += w;
        out.push((op, total));
    }
    if total == 0 {
        bail!("--mix: the weights add up to 0");
    }
    Ok(out)
}

/// Runs the benchmark `args` describe (preparation, measured phase, clean-up); returns its report
/// and whether an operation failed.
async fn run(args: Args, cancel: CancellationToken) -> Result<(Report, bool)> {
    let (bucket, prefix) = check_args(&args)?;
    let mix = parse_mix(&args.mix)?;
    let (client, setup) = connect(&args, &bucket, &prefix).await?;
    let data = object_data(args.data, args.size);
    let run_id = format!("s3sync-bench-{:08x}/", rand::random::<u32>());
    let b = Arc::new(Bench {
        client,
        setup,
        bucket: bucket.clone(),
        root: format!("{prefix}{run_id}"),
        data,
        size: args.size,
        prepared: AtomicU64::new(0),
        fresh: Mutex::new(Vec::new()),
        track_fresh: args.workload == Workload::Mixed,
        next_delete: AtomicU64::new(0),
        next_key: AtomicU64::new(0),
        started: AtomicU64::new(0),
        cancel: cancel.clone(),
    });
    let c = args.concurrency;
    let outcome = prepare_and_measure(&b, &args, mix).await;
    let interrupted = cancel.is_cancelled();
    // Clean up whatever happened above (a second Ctrl-C ends the process during this).
    let cleaned = if args.keep {
        Cleanup::default()
    } else {
        cleanup(&b, c).await
    };
    let (prepared, tallies, wall) = match outcome {
        Ok(o) => o,
        // Interrupted while preparing: nothing was measured; report that (exit 130), not a failure.
        Err(_) if interrupted => (0, BTreeMap::new(), Duration::ZERO),
        Err(e) => {
            if cleaned.failed > 0 {
                eprintln!(
                    "s3sync-bench: clean-up: {} objects left under s3://{bucket}/{}: {}",
                    cleaned.failed,
                    b.root,
                    cleaned.first_error.unwrap_or_default()
                );
            }
            return Err(e);
        }
    };
    let operations = report_of(tallies, wall);
    let failed = operations.iter().any(|o| o.errors > 0);
    Ok((
        Report {
            label: args.label,
            endpoint: args.endpoint_url.unwrap_or_else(|| "(AWS default)".into()),
            workload: format!("{:?}", args.workload).to_lowercase(),
            object_size: args.size,
            concurrency: c,
            prepared_objects: prepared,
            operations,
            cleaned_up: cleaned.deleted,
            cleanup_failed: cleaned.failed,
            cleanup_error: cleaned.first_error,
            run_prefix: format!("s3://{bucket}/{}", b.root),
            interrupted,
        },
        failed,
    ))
}

/// Checks the arguments that clap cannot; returns the bucket and the prefix of the target.
fn check_args(args: &Args) -> Result<(String, String)> {
    let Location::S3 { bucket, prefix } = Location::parse(&args.target)? else {
        bail!("the target must be s3://bucket[/prefix], not a local path");
    };
    if args.size > 5 * 1024 * 1024 * 1024 {
        bail!("--size: at most 5GiB (one PutObject per object)");
    }
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if args.count == 0 && (args.workload != Workload::Put || args.duration.is_none()) {
        bail!("--count must be at least 1");
    }
    if args.workload == Workload::Delete && args.duration.is_some() {
        bail!("--duration does not apply to delete: it deletes the --count objects it prepared");
    }
    Ok((bucket, prefix))
}

/// Builds the measured client (`--max-attempts`) and the retrying setup client, and checks that
/// `s3://bucket/prefix` is empty (unless `--allow-non-empty`); returns both clients.
async fn connect(args: &Args, bucket: &str, prefix: &str) -> Result<(Client, Client)> {
    let client_cfg = ClientConfig {
        profile: args.profile.clone(),
        region: args.region.clone(),
        endpoint_url: args.endpoint_url.clone(),
        force_path_style: args.force_path_style,
        ..Default::default()
    };
    let retry = RetryConfig {
        aws_max_attempts: args.max_attempts.max(1),
        ..Default::default()
    };
    let client = s3sync::storage::client::build_client(&client_cfg, &retry).await?;
    let setup = s3sync::storage::client::build_client(&client_cfg, &RetryConfig::default()).await?;
    let existing = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .max_keys(1)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot list s3://{bucket}/{prefix}: {}", sdk_message(&e)))?;
    if !existing.contents().is_empty() && !args.allow_non_empty {
        bail!("s3://{bucket}/{prefix} is not empty; choose an empty prefix or pass --allow-non-empty (existing objects are never touched)");
    }
    Ok((client, setup))
}

/// The buffer the object bodies are windows of: `size` bytes and some slack, of `data`.
fn object_data(data: Data, size: u64) -> Bytes {
    let slack = 64 * 1024;
    match data {
        Data::Zero => Bytes::from(vec![0u8; size as usize + slack]),
        Data::Random => {
            let mut v = vec![0u8; size as usize + slack];
            rand::fill(&mut v[..]);
            Bytes::from(v)
        }
    }
}

/// Prepares the objects the workload reads (all but put), then measures the workload; returns the
/// objects prepared, the tallies and the measured phase's wall time.
async fn prepare_and_measure(b: &Arc<Bench>, args: &Args, mix: Vec<(Op, u32)>) -> Result<(u64, Tallies, Duration)> {
    let c = args.concurrency;
    let mut prepared = 0;
    if args.workload != Workload::Put {
        b.prepared.store(args.count, Ordering::Relaxed);
        prepared = prepare(b, args.count, c).await?;
    }
    // The deadline counts from the start of the measured phase.
    let stop = Stop {
        ops: args.duration.is_none().then_some(args.count),
        deadline: args.duration.map(|d| Instant::now() + d),
    };
    let (tallies, wall) = match args.workload {
        Workload::Put => {
            measure(b, c, stop, |b: Arc<Bench>, _| async move {
                let n = b.next_key.fetch_add(1, Ordering::Relaxed);
                Some((Op::Put, b.put(n).await))
            })
            .await
        }
        Workload::Get => {
            measure(b, c, stop, |b: Arc<Bench>, _| async move {
                let n = b.random_prepared()?;
                Some((Op::Get, b.get(n).await))
            })
            .await
        }
        Workload::Stat => {
            measure(b, c, stop, |b: Arc<Bench>, _| async move {
                let n = b.random_prepared()?;
                Some((Op::Stat, b.stat(n).await))
            })
            .await
        }
        Workload::Delete => {
            measure(b, c, stop, |b: Arc<Bench>, _| async move {
                let n = b.next_prepared()?;
                Some((Op::Delete, b.delete(n).await))
            })
            .await
        }
        Workload::List => measure_list(b, c, stop).await,
        Workload::Mixed => measure_mixed(b, c, stop, mix).await,
    };
    Ok((prepared, tallies, wall))
}

/// The list workload: each worker walks the listing from the start, page by page, again and again.
async fn measure_list(b: &Arc<Bench>, c: usize, stop: Stop) -> (Tallies, Duration) {
    let cursor = Arc::new(Mutex::new(BTreeMap::<usize, Option<String>>::new()));
    measure(b, c, stop, move |b: Arc<Bench>, id| {
        let cursor = cursor.clone();
        async move {
            let after = cursor.lock().ok()?.remove(&id).flatten();
            let r = b.list_page(after).await;
            let r = r.map(|(n, next)| {
                if let Ok(mut c) = cursor.lock() {
                    c.insert(id, next);
                }
                n
            });
            // A LIST's "bytes" are the keys it listed (reported as objects/s).
            Some((Op::List, r))
        }
    })
    .await
}

/// The mixed workload: each operation drawn by the cumulative weights of `mix`. A delete takes a key
/// written during the phase (a put when there is none); reads take prepared keys.
async fn measure_mixed(b: &Arc<Bench>, c: usize, stop: Stop, mix: Vec<(Op, u32)>) -> (Tallies, Duration) {
    let mix = Arc::new(mix);
    measure(b, c, stop, move |b: Arc<Bench>, _| {
        let mix = mix.clone();
        async move {
            let total = mix.last().map_or(1, |m| m.1);
            let roll = rand::random_range(0..total);
            let op = mix.iter().find(|(_, upto)| roll < *upto).map_or(Op::Get, |m| m.0);
            Some(match op {
                Op::Put => {
                    let n = b.next_key.fetch_add(1, Ordering::Relaxed);
                    (Op::Put, b.put(n).await)
                }
                Op::Delete => match b.take_fresh() {
                    Some(n) => (Op::Delete, b.delete(n).await),
                    None => (Op::Put, b.put(b.next_key.fetch_add(1, Ordering::Relaxed)).await),
                },
                Op::Stat => (Op::Stat, b.stat(b.random_prepared()?).await),
                _ => (Op::Get, b.get(b.random_prepared()?).await),
            })
        }
    })
    .await
}

/// What the clean-up did.
#[derive(Debug, Default, Serialize)]
struct Cleanup {
    deleted: u64,
    /// Objects that could not be deleted (left under the run's prefix).
    failed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_error: Option<String>,
}

/// Deletes every object under the run's root (listed, so also objects of failed or interrupted PUTs
/// that the server did store), with the retrying client; carries on past failures and counts them.
async fn cleanup(b: &Arc<Bench>, concurrency: usize) -> Cleanup {
    let mut done = Cleanup::default();
    let mut after = None;
    loop {
        let resp = match b
            .setup
            .list_objects_v2()
            .bucket(&b.bucket)
            .prefix(&b.root)
            .set_start_after(after.take())
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                done.first_error
                    .get_or_insert(format!("cannot list {}: {}", b.root, sdk_message(&e)));
                done.failed += 1;
                return done;
            }
        };
        let keys: Vec<String> = resp
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect();
        if keys.is_empty() {
            return done;
        }
        after = keys.last().cloned();
        let results: Vec<Result<(), String>> = futures::stream::iter(keys)
            .map(|k| {
                let b = b.clone();
                async move {
                    b.setup
                        .delete_object()
                        .bucket(&b.bucket)
                        .key(&k)
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|e| format!("cannot delete {k}: {}", sdk_message(&e)))
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        for r in results {
            match r {
                Ok(()) => done.deleted += 1,
                Err(e) => {
                    done.failed += 1;
                    done.first_error.get_or_insert(e);
                }
            }
        }
        if resp.is_truncated() != Some(true) {
            return done;
        }
    }
}

fn print_table(r: &Report) {
    println!(
        "s3sync-bench {} on {}: objects of {} bytes, concurrency {}{}",
        r.workload,
        r.endpoint,
        r.object_size,
        r.concurrency,
        if r.interrupted { " (interrupted)" } else { "" }
    );
    println!(
        "{:<7} {:>9} {:>7} {:>8} {:>11} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "op", "ops", "errors", "seconds", "ops/s", "MiB/s", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for o in &r.operations {
        println!(
            "{:<7} {:>9} {:>7} {:>8.2} {:>11.1} {:>10.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            o.op.name(),
            o.ops,
            o.errors,
            o.seconds,
            o.ops_per_sec,
            o.mib_per_sec,
            o.latency_ms.p50,
            o.latency_ms.p90,
            o.latency_ms.p99,
            o.latency_ms.max
        );
        if let Some(n) = o.objects_per_sec {
            println!("        {n:.0} keys listed per second");
        }
        if let Some(e) = &o.first_error {
            println!("        first error: {e}");
        }
    }
    println!("prepared {} objects, cleaned up {}", r.prepared_objects, r.cleaned_up);
    if r.cleanup_failed > 0 {
        println!(
            "clean-up: {} objects could not be deleted under {}: {}",
            r.cleanup_failed,
            r.run_prefix,
            r.cleanup_error.as_deref().unwrap_or("")
        );
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let json = args.json;
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("s3sync-bench: error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let cancel = CancellationToken::new();
    let result = runtime.block_on(async {
        let c = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("s3sync-bench: interrupted; cleaning up (Ctrl-C again to exit now)");
                c.cancel();
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
        run(args, cancel.clone()).await
    });
    match result {
        Ok((report, failed)) => {
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => eprintln!("s3sync-bench: error: {e}"),
                }
            } else {
                print_table(&report);
            }
            if report.cleanup_failed > 0 {
                ExitCode::from(1)
            } else if report.interrupted {
                ExitCode::from(130)
            } else if failed {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("s3sync-bench: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_mixes_parse_or_say_why_not() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("1d").unwrap_err().contains("invalid duration"));
        assert!(parse_duration("s").is_err());
        let mix = parse_mix("get=45,stat=30,put=15,delete=10").unwrap();
        assert_eq!(
            mix,
            vec![(Op::Get, 45), (Op::Stat, 75), (Op::Put, 90), (Op::Delete, 100)]
        );
        assert!(parse_mix("get=0").is_err());
        assert!(parse_mix("copy=5")
            .unwrap_err()
            .to_string()
            .contains("unknown operation"));
        assert!(parse_mix("get").is_err());
    }

    #[test]
    fn the_target_must_be_s3_and_arguments_parse_like_the_docs() {
        let a =
            Args::try_parse_from(["s3sync-bench", "get", "s3://b/p/", "--size", "4KiB", "--duration", "1m"]).unwrap();
        assert_eq!(
            (a.workload, a.size, a.duration),
            (Workload::Get, 4096, Some(Duration::from_secs(60)))
        );
        assert_eq!(
            (a.count, a.concurrency, a.max_attempts, a.data),
            (1000, 32, 1, Data::Random)
        );
        assert!(Args::try_parse_from(["s3sync-bench", "copy", "s3://b/"]).is_err());
    }
}
