//! A bounded, randomized soak test: many small sync rounds in every direction, through the
//! fault-injecting proxy of `common::fault_proxy`, with the tool sometimes killed (SIGKILL) mid-run,
//! and after every round a fault-free convergence check against the real server.
//!
//! The test is `#[ignore]`d so that the normal suite skips it. Run it with `scripts/soak.sh`, or by hand
//! against a server started by `scripts/start-server.sh`:
//!
//! ```sh
//! eval "$(scripts/start-server.sh garage)"
//! S3SYNC_SOAK_SECONDS=120 cargo test --test suite soak:: -- --ignored --nocapture
//! scripts/stop-server.sh
//! ```
//!
//! Knobs (environment):
//! - `S3SYNC_SOAK_SEED`: decimal or `0x` hex; default [`DEFAULT_SEED`]. Printed at the start and in the
//!   summary. The seed decides every round's direction, tree change (names, sizes, bytes), fault mix,
//!   proxy seed and kill moment; only timing (how many rounds fit in the budget, which request of a
//!   concurrent run gets which fault draw, where exactly a kill lands) is not reproduced.
//! - `S3SYNC_SOAK_SECONDS`: time budget in seconds (default [`DEFAULT_SECONDS`]). No round starts after
//!   it is used up; the round in flight finishes.
//!
//! Three source/target pairs live for the whole soak: a local directory uploaded to an S3 prefix, an S3
//! prefix downloaded to a local directory, and an S3 prefix copied (through the client) to a prefix of
//! another bucket. Each round:
//! 1. picks a pair and applies a small change to its source (add / modify / delete 1–4 distinct files
//!    of 0 B – 20 MiB, the multipart threshold's neighbourhood included; S3-side sources of 5 MiB or more
//!    are written as multipart objects with 5, 6 or 8 MiB parts, as a single PUT above the threshold
//!    would make S3→S3 exit 3 with a legitimate "part layout unknown" warning);
//! 2. starts a fresh proxy with a random fault mix: each of 503, 500, connection reset, truncated body,
//!    flipped byte and 5–60 ms of latency is on with probability 0.6, at a rate of a few percent of the
//!    requests. Flipped bytes hit GetObject bodies only: listings and other XML bodies carry no checksum
//!    a client could verify over plain HTTP;
//! 3. runs `s3sync --delete` through the proxy with the multipart threshold and part size at 5 MiB and
//!    fast retries; in about a third of the rounds it is killed (SIGKILL) after 50–1500 ms
//!    (log-uniform, so most kills land while it is busy), and such a round's first change writes
//!    8–20 MiB so that there is a multipart transfer to interrupt;
//! 4. reruns it without the proxy until it exits 0 (at most [`MAX_RERUNS`] times);
//! 5. asserts that the target is byte-identical to the source (S3 sides listed and read on the real
//!    server, never through the proxy), that no multipart upload is open in any bucket, that no
//!    `.s3sync-tmp.*` file is left in any local directory, and that the resume journal
//!    (`S3SYNC_STATE_DIR`, a temporary directory of this soak) is empty.
//!
//! Exit codes while faults are active may be 0 or 1 (a fault that outlived every retry). Exit 3 is
//! recorded, and is a failure when it comes with a warning about a fault (a retried or recovered fault
//! must not turn into a warning). Any other outcome (another code, a crash, a hang past
//! [`RUN_TIMEOUT`]) is a failure. At the end the proxies must have injected at least one fault.
//!
//! A failure does not stop the soak at once: leftovers (open uploads, temporary files, journal
//! records) are reported and then cleaned so that later rounds report their own, and the soak goes on
//! until the budget is used or [`MAX_FAILURES`] failures were seen. A target that differs from its
//! source, or a round that does not converge, stops it. Every failure names the seed, round, command,
//! outcome and an excerpt of stderr. A per-round table (faults injected per kind, kills, exit codes,
//! reruns) and a summary are printed and written to `target/soak-summary.txt`; the test fails if any
//! failure was seen.

use crate::common;

use common::fault_proxy::{Fault, FaultProxy, Op, Rule, When};
use common::*;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncReadExt;

/// The seed when `S3SYNC_SOAK_SEED` is not set.
const DEFAULT_SEED: u64 = 0x50a4_2024;
/// The time budget when `S3SYNC_SOAK_SECONDS` is not set.
const DEFAULT_SECONDS: u64 = 180;
/// Fault-free reruns allowed after a faulty or killed run before the round counts as not converging.
const MAX_RERUNS: usize = 3;
/// The soak stops after this many failures (each is reported in full).
const MAX_FAILURES: usize = 5;
/// A run that takes longer than this is killed and fails the soak (a hang).
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// The share of rounds in which the tool is killed.
const KILL_CHANCE: f64 = 0.35;
/// Flags of every run: fast retries, 5 MiB multipart threshold and parts, and `--delete`.
const FLAGS: [&str; 9] = [
    "--force-retry-interval-milliseconds",
    "50",
    "--initial-backoff-milliseconds",
    "10",
    "--multipart-threshold",
    "5MiB",
    "--multipart-chunksize",
    "5MiB",
    "--delete",
];
/// The file names a source tree draws from (relative paths; no name is a prefix directory of another).
const NAMES: [&str; 16] = [
    "f0",
    "f1",
    "f2",
    "f3",
    "d1/f4",
    "d1/f5",
    "d1/f6",
    "d1/d2/f7",
    "d1/d2/f8",
    "d1/d2/d3/f9",
    "with space/f10",
    "ünïcödé/f11",
    "z/f12",
    "z/f13",
    "z/y/f14",
    "last",
];
/// The fault kinds, in the order of the per-round counters.
const KINDS: [Fault; 6] = [
    Fault::Status503,
    Fault::Status500,
    Fault::Reset,
    Fault::Truncate,
    Fault::FlipByte,
    Fault::Latency(0),
];
/// Short column names of [`KINDS`].
const KIND_COLS: [&str; 6] = ["503", "500", "rst", "trunc", "flip", "lat"];
/// Words that tie a warning to an injected fault or its retry.
const FAULT_WORDS: [&str; 22] = [
    "retr",
    "recover",
    "attempt",
    "slowdown",
    "slow down",
    "internalerror",
    "internal error",
    "503",
    "500",
    "reset",
    "truncat",
    "dispatch",
    "connection",
    "timeout",
    "timed out",
    "io error",
    "response error",
    "eof",
    "incomplete",
    "etag",
    "layout",
    "abort",
];

/// SplitMix64: the soak's own seeded generator (the plan of a round depends only on the seed, the
/// round number and the earlier rounds' plans).
struct Rng(u64);

impl Rng {
    /// The generator of one stream (e.g. one round) of a seed.
    fn new(seed: u64, stream: u64) -> Rng {
        let mut r = Rng(seed ^ stream.wrapping_mul(0xd1b5_4a32_d192_ed03));
        r.next_u64();
        r
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[lo, hi)`.
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// The direction of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Up,
    Down,
    Across,
}

impl Dir {
    const ALL: [Dir; 3] = [Dir::Up, Dir::Down, Dir::Across];

    fn name(self) -> &'static str {
        match self {
            Dir::Up => "local->s3",
            Dir::Down => "s3->local",
            Dir::Across => "s3->s3",
        }
    }
}

/// One side of a pair.
#[derive(Debug, Clone)]
enum End {
    Local(PathBuf),
    S3 { bucket: String, prefix: String },
}

impl End {
    /// The command-line argument naming this side.
    fn arg(&self) -> String {
        match self {
            End::Local(p) => s(p),
            End::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
        }
    }
}

/// A source/target pair and the test's model of its source tree (name → size).
struct Pair {
    dir: Dir,
    src: End,
    dst: End,
    files: BTreeMap<String, usize>,
}

/// One change of a source tree.
#[derive(Debug, Clone)]
enum Change {
    /// Write a file (new or replacing one): name, size, seed of the bytes, part size of an S3 multipart
    /// write (S3 sources of at least 5 MiB).
    Write {
        name: String,
        size: usize,
        seed: u64,
        part: Option<usize>,
        new: bool,
    },
    /// Delete a file.
    Delete(String),
}

impl Change {
    fn describe(&self) -> String {
        match self {
            Change::Write {
                name, size, part, new, ..
            } => {
                let mp = part.map(|p| format!("/mp{}", p / MIB)).unwrap_or_default();
                format!("{}{name}({}{mp})", if *new { '+' } else { '~' }, human(*size))
            }
            Change::Delete(name) => format!("-{name}"),
        }
    }
}

/// How one run of the tool ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Exit(i32),
    /// Killed by the soak (SIGKILL) as planned.
    Killed,
    /// Ended by a signal the soak did not send.
    Signal(i32),
    /// Did not end within [`RUN_TIMEOUT`] (then killed).
    TimedOut,
}

impl Outcome {
    fn label(self) -> String {
        match self {
            Outcome::Exit(c) => c.to_string(),
            Outcome::Killed => "K".into(),
            Outcome::Signal(s) => format!("sig{s}"),
            Outcome::TimedOut => "T".into(),
        }
    }
}

/// One run of the tool.
struct RunOut {
    outcome: Outcome,
    stderr: String,
    command: String,
    elapsed: Duration,
}

/// What a round did and saw.
#[derive(Default)]
struct RoundRec {
    n: usize,
    dir: &'static str,
    changes: String,
    mix: String,
    faults: [usize; 6],
    requests: usize,
    kill_ms: Option<u64>,
    killed: bool,
    codes: Vec<String>,
    reruns: usize,
    exit3: Vec<String>,
    /// The ERROR lines of a faulty run that exited 1 (what outlived the retries).
    errors: Vec<String>,
    /// The faults the proxy injected, one line each (request, operation, kind, detail).
    injections: Vec<String>,
    secs: f64,
}

/// The soak's fixed context.
struct Ctx {
    srv: Server,
    seed: u64,
    /// The resume journal directory given to every run.
    state: PathBuf,
    /// Every local directory (for the temporary-file check).
    locals: Vec<PathBuf>,
    /// Every bucket (for the open-upload check).
    buckets: Vec<String>,
}

fn human(n: usize) -> String {
    if n >= MIB {
        format!("{:.1}MiB", n as f64 / MIB as f64)
    } else if n >= 1024 {
        format!("{:.1}KiB", n as f64 / 1024.0)
    } else {
        format!("{n}B")
    }
}

fn parse_seed(s: &str) -> u64 {
    let s = s.trim();
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.unwrap_or_else(|e| panic!("S3SYNC_SOAK_SEED={s}: {e}"))
}

/// A size from 0 B to 20 MiB, weighted towards small files, with the multipart threshold's
/// neighbourhood (5 MiB − 1, 5 MiB, 5 MiB + 1) drawn on purpose.
fn pick_size(rng: &mut Rng) -> usize {
    let t = 5 * MIB as u64;
    (match rng.below(100) {
        0..=7 => rng.below(2),
        8..=34 => rng.range(2, 4096),
        35..=59 => rng.range(4097, MIB as u64),
        60..=74 => rng.range(MIB as u64 + 1, t - 2),
        75..=82 => t - 1 + rng.below(3),
        _ => rng.range(t + 2, 20 * MIB as u64),
    }) as usize
}

/// The changes of one round to a source tree, each to a different name (the model is updated as they
/// are planned). With `big_first` (a round that kills the tool) the first change writes 8–20 MiB, so
/// that the kill has a multipart transfer to interrupt.
fn plan_changes(rng: &mut Rng, pair: &mut Pair, big_first: bool) -> Vec<Change> {
    let count = if pair.files.len() < 3 {
        rng.range(2, 4)
    } else {
        rng.range(1, 4)
    };
    let mut touched: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for i in 0..count {
        let free: Vec<&str> = NAMES
            .iter()
            .copied()
            .filter(|n| !pair.files.contains_key(*n) && !touched.iter().any(|t| t == n))
            .collect();
        let existing: Vec<String> = pair.files.keys().filter(|n| !touched.contains(n)).cloned().collect();
        let roll = rng.below(100);
        let seed = rng.next_u64();
        let pick = rng.next_u64();
        let size = if big_first && i == 0 {
            rng.range(8 * MIB as u64, 20 * MIB as u64) as usize
        } else {
            pick_size(rng)
        };
        let part_size = [5 * MIB, 5 * MIB, 6 * MIB, 8 * MIB][rng.below(4) as usize];
        let add = !free.is_empty() && (existing.is_empty() || roll < 40);
        let modify = !add && !existing.is_empty() && (roll < 75 || (big_first && i == 0));
        if add || modify {
            let name = if add {
                free[(pick % free.len() as u64) as usize].to_string()
            } else {
                existing[(pick % existing.len() as u64) as usize].clone()
            };
            let part = match pair.src {
                End::S3 { .. } if size >= 5 * MIB => Some(part_size),
                _ => None,
            };
            pair.files.insert(name.clone(), size);
            touched.push(name.clone());
            out.push(Change::Write {
                name,
                size,
                seed,
                part,
                new: add,
            });
        } else if !existing.is_empty() {
            let name = existing[(pick % existing.len() as u64) as usize].clone();
            pair.files.remove(&name);
            touched.push(name.clone());
            out.push(Change::Delete(name));
        }
    }
    out
}

/// A random mix of faults for one round: each kind is on with probability 0.6 (at least one is on),
/// at a moderate rate. Flipped bytes hit GetObject bodies only: listing and other XML bodies carry no
/// checksum the tool could verify over plain HTTP.
fn plan_faults(rng: &mut Rng) -> (Vec<Rule>, String) {
    let mut rules = Vec::new();
    let mut desc = Vec::new();
    let on: Vec<bool> = (0..KINDS.len()).map(|_| rng.chance(0.6)).collect();
    let forced = rng.below(KINDS.len() as u64) as usize;
    let any = on.iter().any(|b| *b);
    for (i, kind) in KINDS.iter().enumerate() {
        let enabled = on[i] || (!any && i == forced);
        let (lo, hi) = match kind {
            Fault::Status503 => (0.02, 0.10),
            Fault::Status500 => (0.01, 0.06),
            Fault::Reset => (0.01, 0.06),
            Fault::Truncate => (0.01, 0.06),
            Fault::FlipByte => (0.05, 0.15),
            Fault::Latency(_) => (0.05, 0.25),
            // Not part of the soak's mix: they model servers that break the protocol, not faults.
            Fault::DropContinuationToken
            | Fault::KmsEtag
            | Fault::ReverseListing
            | Fault::NoTagCount
            | Fault::Status412 => continue,
        };
        let p = rng.uniform(lo, hi);
        let ms = rng.range(5, 60);
        if !enabled {
            continue;
        }
        let rule = match kind {
            Fault::Latency(_) => Rule::new(Fault::Latency(ms), When::Probability(p)),
            Fault::FlipByte => Rule::new(*kind, When::Probability(p)).ops(&[Op::GetObject]),
            _ => Rule::new(*kind, When::Probability(p)),
        };
        rules.push(rule);
        match kind {
            Fault::Latency(_) => desc.push(format!("{}@{:.0}%x{ms}ms", KIND_COLS[i], p * 100.0)),
            _ => desc.push(format!("{}@{:.0}%", KIND_COLS[i], p * 100.0)),
        }
    }
    (rules, desc.join(" "))
}

/// Applies changes to a source, directly (never through the proxy).
async fn apply(srv: &Server, src: &End, changes: &[Change]) {
    for c in changes {
        match (c, src) {
            (Change::Write { name, size, seed, .. }, End::Local(root)) => {
                write_tree(root, &[(name.as_str(), data(*size, *seed))]);
            }
            (
                Change::Write {
                    name, size, seed, part, ..
                },
                End::S3 { bucket, prefix },
            ) => {
                let key = format!("{prefix}{name}");
                let bytes = data(*size, *seed);
                match part {
                    Some(p) => put_multipart(srv, bucket, &key, &bytes, *p).await,
                    None => srv.put(bucket, &key, &bytes).await,
                }
            }
            (Change::Delete(name), End::Local(root)) => {
                std::fs::remove_file(root.join(name)).unwrap_or_else(|e| panic!("setup: delete {name}: {e}"));
            }
            (Change::Delete(name), End::S3 { bucket, prefix }) => {
                srv.client
                    .delete_object()
                    .bucket(bucket)
                    .key(format!("{prefix}{name}"))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("setup: delete {name}: {e:?}"));
            }
        }
    }
}

/// Runs the binary from `src` to `dst` with both endpoints at `endpoint`, killing it (SIGKILL) after
/// `kill_after` when set, and after [`RUN_TIMEOUT`] in any case.
async fn run_tool(ctx: &Ctx, endpoint: &str, src: &str, dst: &str, kill_after: Option<Duration>) -> RunOut {
    let mut args: Vec<String> = [
        "--source-endpoint-url",
        endpoint,
        "--target-endpoint-url",
        endpoint,
        "--source-force-path-style",
        "--target-force-path-style",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.extend(FLAGS.iter().map(|a| a.to_string()));
    args.push(src.to_string());
    args.push(dst.to_string());
    let command = format!(
        "S3SYNC_STATE_DIR={} s3sync {}",
        s(&ctx.state),
        args.iter()
            .map(|a| if a.contains(' ') { format!("'{a}'") } else { a.clone() })
            .collect::<Vec<_>>()
            .join(" ")
    );
    let started = Instant::now();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_s3sync"))
        .args(&args)
        .env("S3SYNC_STATE_DIR", &ctx.state)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn s3sync");
    let mut pipe = child.stderr.take().expect("stderr pipe");
    let reader = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf).await;
        String::from_utf8_lossy(&buf).into_owned()
    });
    let limit = kill_after.unwrap_or(RUN_TIMEOUT).min(RUN_TIMEOUT);
    let (status, ours) = match tokio::time::timeout(limit, child.wait()).await {
        Ok(st) => (st.expect("wait for s3sync"), None),
        Err(_) => {
            let _ = child.start_kill();
            let st = child.wait().await.expect("wait for the killed s3sync");
            let why = if kill_after.is_some_and(|k| k < RUN_TIMEOUT) {
                Outcome::Killed
            } else {
                Outcome::TimedOut
            };
            (st, Some(why))
        }
    };
    let stderr = reader.await.unwrap_or_default();
    let outcome = match (status.code(), status.signal(), ours) {
        (Some(c), _, _) => Outcome::Exit(c),
        (None, Some(9), Some(why)) => why,
        (None, Some(sig), _) => Outcome::Signal(sig),
        (None, None, _) => Outcome::Signal(-1),
    };
    RunOut {
        outcome,
        stderr,
        command,
        elapsed: started.elapsed(),
    }
}

/// The warning/error lines of a run and its last lines, at most ~6 KB.
fn excerpt(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    let mut out: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .take(30)
        .collect();
    out.push("  ... last lines:");
    out.extend(lines.iter().rev().take(8).rev().copied());
    let mut text = out.join("\n");
    if text.len() > 6000 {
        let mut cut = 6000;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str(" ...");
    }
    text
}

/// `line` cut to at most `max` bytes (at a character boundary).
fn shorten(line: &str, max: usize) -> String {
    if line.len() <= max {
        return line.to_string();
    }
    let mut cut = max;
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{} ...", &line[..cut])
}

/// The WARN lines of a run that speak of a fault, a retry or a recovery (see [`FAULT_WORDS`]).
fn fault_warnings(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.find("WARN").map(|at| (l, &l[at..])))
        .filter(|(_, text)| {
            // The text after the level only: the timestamp before it may contain "500" or "503".
            let low = text.to_lowercase();
            FAULT_WORDS.iter().any(|w| low.contains(w))
        })
        .map(|(l, _)| l)
        .map(str::to_string)
        .collect()
}

/// Every file of one side, as name (relative to the root or prefix) → bytes; S3 sides are listed and
/// read on the real server. Keys outside the prefix are an error.
async fn contents(srv: &Server, end: &End) -> Result<BTreeMap<String, Vec<u8>>, String> {
    match end {
        // Temporary files are reported as leftovers, not as differences.
        End::Local(root) => Ok(read_tree(root)
            .into_iter()
            .filter(|(name, _)| !name.rsplit('/').next().unwrap_or("").starts_with(".s3sync-tmp."))
            .collect()),
        End::S3 { bucket, prefix } => {
            let mut out = BTreeMap::new();
            for key in srv.keys(bucket).await {
                let Some(name) = key.strip_prefix(prefix.as_str()) else {
                    return Err(format!("s3://{bucket}/{key}: an object outside the prefix {prefix}"));
                };
                out.insert(name.to_string(), srv.get(bucket, &key).await);
            }
            Ok(out)
        }
    }
}

/// What differs between source and target trees, one line each.
fn diff(src: &BTreeMap<String, Vec<u8>>, dst: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in src {
        match dst.get(k) {
            None => out.push(format!("missing on the target: {k} ({})", human(v.len()))),
            Some(w) if w != v => {
                let first = v.iter().zip(w.iter()).position(|(a, b)| a != b);
                out.push(format!(
                    "bytes differ: {k} (source {}, target {}, first difference at {first:?})",
                    human(v.len()),
                    human(w.len())
                ));
            }
            Some(_) => {}
        }
    }
    for (k, w) in dst {
        if !src.contains_key(k) {
            out.push(format!("extra on the target: {k} ({})", human(w.len())));
        }
    }
    out
}

/// Every path under `dir` whose name starts with `.s3sync-tmp.`.
fn temp_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if e.file_name().to_string_lossy().starts_with(".s3sync-tmp.") {
            out.push(s(&p));
        }
        if p.is_dir() {
            out.extend(temp_files(&p));
        }
    }
    out
}

/// The convergence checks of a round, one line per problem: differences between source and target,
/// and leftovers (open multipart uploads, temporary files, journal records).
async fn check(ctx: &Ctx, pair: &Pair) -> (Vec<String>, Vec<String>) {
    let mut problems = Vec::new();
    match (contents(&ctx.srv, &pair.src).await, contents(&ctx.srv, &pair.dst).await) {
        (Ok(src), Ok(dst)) => {
            // The source must be what the soak wrote (else the soak itself is wrong).
            let names: Vec<&String> = src.keys().collect();
            let model: Vec<&String> = pair.files.keys().collect();
            if names != model {
                problems.push(format!("the source is not the soak's model: {names:?} vs {model:?}"));
            }
            problems.extend(diff(&src, &dst));
        }
        (a, b) => {
            problems.extend(a.err());
            problems.extend(b.err());
        }
    }
    let diffs = std::mem::take(&mut problems);
    for b in &ctx.buckets {
        match ctx.srv.client.list_multipart_uploads().bucket(b).send().await {
            Ok(r) => {
                for u in r.uploads() {
                    problems.push(format!(
                        "multipart upload left open: s3://{b}/{} (upload id {})",
                        u.key().unwrap_or("?"),
                        u.upload_id().unwrap_or("?")
                    ));
                }
            }
            Err(e) => problems.push(format!("ListMultipartUploads on {b} failed: {e:?}")),
        }
    }
    for d in &ctx.locals {
        for t in temp_files(d) {
            problems.push(format!("temporary file left: {t}"));
        }
    }
    let journal: Vec<String> = std::fs::read_dir(&ctx.state)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    if !journal.is_empty() {
        let shown: Vec<String> = journal
            .iter()
            .map(|n| {
                let body = std::fs::read_to_string(ctx.state.join(n)).unwrap_or_default();
                format!("{n} [{}]", body.trim().replace('\n', " | "))
            })
            .collect();
        problems.push(format!("resume journal not empty: {shown:?}"));
    }
    (diffs, problems)
}

/// Sleeps until the wall clock is in a later whole second than `after`: change detection compares
/// whole seconds and transfers only a strictly newer source, so a source changed in the same second as
/// the target was last written would (by design) be skipped.
async fn next_second(after: SystemTime) {
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let base = secs(after);
    loop {
        let now = SystemTime::now();
        if secs(now) > base {
            return;
        }
        let into = now.duration_since(UNIX_EPOCH).unwrap_or_default().subsec_millis() as u64;
        tokio::time::sleep(Duration::from_millis(1000 - into + 20)).await;
    }
}

/// What a round found wrong: failures that leave the pair usable (leftovers, repaired before the next
/// round; a suspicious exit code) and whether one of them leaves it unusable (a target that differs or
/// did not converge), which ends the soak.
struct Findings {
    failures: Vec<String>,
    fatal: bool,
}

/// One round; returns its record and what it found wrong (see the module documentation).
async fn round(ctx: &Ctx, pairs: &mut [Pair], n: usize, last_end: SystemTime) -> (RoundRec, Findings) {
    let started = Instant::now();
    let mut rng = Rng::new(ctx.seed, n as u64);
    let pair = &mut pairs[rng.below(3) as usize];
    let kill_roll = rng.chance(KILL_CHANCE);
    // Log-uniform in 50..=1500 ms: most kills land early, while the run is busy.
    let kill_ms = (50.0 * 30f64.powf(rng.unit())).round() as u64;
    let kill_ms = kill_roll.then_some(kill_ms);
    let changes = plan_changes(&mut rng, pair, kill_roll);
    let (rules, mix) = plan_faults(&mut rng);
    let proxy_seed = rng.next_u64();
    let mut rec = RoundRec {
        n,
        dir: pair.dir.name(),
        changes: changes.iter().map(Change::describe).collect::<Vec<_>>().join(" "),
        mix: mix.clone(),
        kill_ms,
        ..RoundRec::default()
    };
    let mut found = Findings {
        failures: Vec::new(),
        fatal: false,
    };
    let (src, dst) = (pair.src.arg(), pair.dst.arg());
    // A failure report: the round, what went wrong, and the runs that show it.
    let report = |rec: &RoundRec, what: String, runs: &[&RunOut]| -> String {
        let mut m = format!(
            "round {n} (seed {:#x}, {}: {src} -> {dst}; changes [{}]; faults [{}] = {}; kill {:?} ms; codes {:?}, proxy seed {proxy_seed:#x}): {what}",
            ctx.seed,
            rec.dir,
            rec.changes,
            rec.mix,
            faulty_summary(rec),
            rec.kill_ms,
            rec.codes
        );
        if !rec.injections.is_empty() {
            let _ = write!(m, "\n  injected faults:");
            for i in rec.injections.iter().take(40) {
                let _ = write!(m, "\n    {i}");
            }
        }
        for r in runs {
            let _ = write!(
                m,
                "\n  command: {}\n  outcome: {:?} after {:.2}s\n  stderr excerpt:\n{}",
                r.command,
                r.outcome,
                r.elapsed.as_secs_f64(),
                excerpt(&r.stderr)
            );
        }
        m
    };

    next_second(last_end).await;
    apply(&ctx.srv, &pair.src, &changes).await;

    // The faulty run, through a fresh proxy. The proxy takes its seed from the environment only.
    std::env::set_var("S3SYNC_FAULT_SEED", format!("{proxy_seed:#x}"));
    let proxy = FaultProxy::start(&ctx.srv.endpoint, rules).await;
    let faulty = run_tool(ctx, &proxy.url(), &src, &dst, kill_ms.map(Duration::from_millis)).await;
    for (i, k) in KINDS.iter().enumerate() {
        rec.faults[i] = proxy.injected_of(*k);
    }
    rec.requests = proxy.requests();
    rec.injections = proxy
        .injections()
        .iter()
        .map(|i| {
            shorten(
                &format!("#{} {} ({:?}): {:?} {}", i.seq, i.request, i.op, i.fault, i.detail),
                300,
            )
        })
        .collect();
    drop(proxy);
    rec.codes.push(faulty.outcome.label());
    rec.killed = faulty.outcome == Outcome::Killed;
    match faulty.outcome {
        Outcome::Exit(0) | Outcome::Killed => {}
        Outcome::Exit(1) => {
            rec.errors = faulty
                .stderr
                .lines()
                .filter(|l| l.contains("ERROR"))
                .map(|l| shorten(l, 400))
                .collect();
        }
        Outcome::Exit(3) => {
            rec.exit3 = faulty
                .stderr
                .lines()
                .filter(|l| l.contains("WARN"))
                .map(str::to_string)
                .collect();
            let related = fault_warnings(&faulty.stderr);
            if !related.is_empty() {
                let what = format!("exit 3 under faults, with warnings about a fault or its retry: {related:#?}");
                found.failures.push(report(&rec, what, &[&faulty]));
            }
        }
        other => {
            let what = format!("unexpected outcome under faults: {other:?} (want exit 0 or 1)");
            found.failures.push(report(&rec, what, &[&faulty]));
        }
    }

    // Fault-free reruns until exit 0.
    let mut runs = vec![faulty];
    while runs.last().map(|r| r.outcome) != Some(Outcome::Exit(0)) {
        if rec.reruns == MAX_RERUNS {
            let what = format!("did not converge: no exit 0 in {MAX_RERUNS} fault-free reruns");
            let shown: Vec<&RunOut> = runs.iter().collect();
            found.failures.push(report(&rec, what, &shown));
            found.fatal = true;
            rec.secs = started.elapsed().as_secs_f64();
            return (rec, found);
        }
        rec.reruns += 1;
        let r = run_tool(ctx, &ctx.srv.endpoint, &src, &dst, None).await;
        rec.codes.push(r.outcome.label());
        if !matches!(r.outcome, Outcome::Exit(0 | 1 | 3)) {
            let what = format!("unexpected outcome of a fault-free rerun: {:?}", r.outcome);
            found.failures.push(report(&rec, what, &[&r]));
        }
        runs.push(r);
    }

    let (diffs, leftovers) = check(ctx, pair).await;
    let shown: Vec<&RunOut> = match runs.len() {
        1 => vec![&runs[0]],
        k => vec![&runs[0], &runs[k - 1]],
    };
    if !diffs.is_empty() {
        let what = format!(
            "the target differs from the source after exit 0:\n    {}",
            diffs.join("\n    ")
        );
        found.failures.push(report(&rec, what, &shown));
        found.fatal = true;
    }
    if !leftovers.is_empty() {
        let what = format!("left behind after exit 0:\n    {}", leftovers.join("\n    "));
        found.failures.push(report(&rec, what, &shown));
        repair(ctx).await;
    }
    rec.secs = started.elapsed().as_secs_f64();
    (rec, found)
}

/// Cleans what a failed round left behind (open multipart uploads, temporary files, journal records),
/// so that the next rounds report their own leftovers only.
async fn repair(ctx: &Ctx) {
    for b in &ctx.buckets {
        if let Ok(r) = ctx.srv.client.list_multipart_uploads().bucket(b).send().await {
            for u in r.uploads() {
                let _ = ctx
                    .srv
                    .client
                    .abort_multipart_upload()
                    .bucket(b)
                    .key(u.key().unwrap_or_default())
                    .upload_id(u.upload_id().unwrap_or_default())
                    .send()
                    .await;
            }
        }
    }
    for d in &ctx.locals {
        for t in temp_files(d) {
            let _ = std::fs::remove_file(t);
        }
    }
    if let Ok(rd) = std::fs::read_dir(&ctx.state) {
        for e in rd.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

fn faulty_summary(rec: &RoundRec) -> String {
    KIND_COLS
        .iter()
        .zip(rec.faults.iter())
        .map(|(k, n)| format!("{k}={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One line of the per-round table.
fn row(r: &RoundRec) -> String {
    let kill = match (r.kill_ms, r.killed) {
        (Some(ms), true) => format!("@{ms}ms"),
        (Some(ms), false) => format!("({ms}ms:done)"),
        (None, _) => "-".into(),
    };
    format!(
        "{:>5} {:<9} {:>4} {:>4} {:>4} {:>5} {:>4} {:>4} {:>6} {:<13} {:<9} {:>6} {:>6.1}  {}",
        r.n,
        r.dir,
        r.faults[0],
        r.faults[1],
        r.faults[2],
        r.faults[3],
        r.faults[4],
        r.faults[5],
        r.requests,
        kill,
        r.codes.join(","),
        r.reruns,
        r.secs,
        r.changes
    )
}

fn header() -> String {
    format!(
        "{:>5} {:<9} {:>4} {:>4} {:>4} {:>5} {:>4} {:>4} {:>6} {:<13} {:<9} {:>6} {:>6}  {}",
        "round",
        "dir",
        "503",
        "500",
        "rst",
        "trunc",
        "flip",
        "lat",
        "reqs",
        "kill",
        "codes",
        "reruns",
        "secs",
        "changes"
    )
}

/// The summary table of the whole soak.
fn summary(ctx: &Ctx, budget: Duration, elapsed: Duration, recs: &[RoundRec], failures: &[String]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "s3sync soak: seed {:#x} (S3SYNC_SOAK_SEED), budget {} s, ran {:.0} s, server {} ({}), {} rounds",
        ctx.seed,
        budget.as_secs(),
        elapsed.as_secs_f64(),
        ctx.srv.name,
        ctx.srv.endpoint,
        recs.len()
    );
    let _ = writeln!(t, "{}", header());
    for r in recs {
        let _ = writeln!(t, "{}", row(r));
    }
    let mut totals = [0usize; 6];
    for r in recs {
        for (i, n) in r.faults.iter().enumerate() {
            totals[i] += n;
        }
    }
    let injected: usize = totals.iter().sum();
    let _ = writeln!(
        t,
        "{:>5} {:<9} {:>4} {:>4} {:>4} {:>5} {:>4} {:>4} {:>6}",
        "total",
        "",
        totals[0],
        totals[1],
        totals[2],
        totals[3],
        totals[4],
        totals[5],
        recs.iter().map(|r| r.requests).sum::<usize>()
    );
    let by_dir: Vec<String> = Dir::ALL
        .iter()
        .map(|d| format!("{} {}", d.name(), recs.iter().filter(|r| r.dir == d.name()).count()))
        .collect();
    let _ = writeln!(t, "rounds by direction: {}", by_dir.join(", "));
    let _ = writeln!(t, "faults injected: {injected} ({})", {
        KIND_COLS
            .iter()
            .zip(totals.iter())
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    });
    let planned = recs.iter().filter(|r| r.kill_ms.is_some()).count();
    let killed = recs.iter().filter(|r| r.killed).count();
    let _ = writeln!(
        t,
        "kills: {killed} (planned {planned}; {} runs finished before their kill moment)",
        planned - killed
    );
    let mut faulty_codes: BTreeMap<String, usize> = BTreeMap::new();
    let mut rerun_codes: BTreeMap<String, usize> = BTreeMap::new();
    for r in recs {
        for (i, c) in r.codes.iter().enumerate() {
            *if i == 0 { &mut faulty_codes } else { &mut rerun_codes }
                .entry(c.clone())
                .or_default() += 1;
        }
    }
    let fmt = |m: &BTreeMap<String, usize>| {
        m.iter()
            .map(|(c, n)| format!("{c}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        t,
        "exit codes under faults: {}   (K = killed by the soak)",
        fmt(&faulty_codes)
    );
    let _ = writeln!(t, "exit codes of fault-free reruns: {}", fmt(&rerun_codes));
    let mut reruns: BTreeMap<usize, usize> = BTreeMap::new();
    for r in recs {
        *reruns.entry(r.reruns).or_default() += 1;
    }
    let _ = writeln!(
        t,
        "reruns needed: {}",
        reruns
            .iter()
            .map(|(k, n)| format!("{k} in {n} rounds"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for r in recs.iter().filter(|r| r.codes.first().is_some_and(|c| c == "1")) {
        let _ = writeln!(t, "exit 1 under faults in round {} ({}):", r.n, r.dir);
        for e in &r.errors {
            let _ = writeln!(t, "    {e}");
        }
    }
    let exit3: Vec<&RoundRec> = recs
        .iter()
        .filter(|r| r.codes.first().is_some_and(|c| c == "3"))
        .collect();
    if exit3.is_empty() {
        let _ = writeln!(t, "exit 3 under faults: none");
    } else {
        for r in exit3 {
            let _ = writeln!(t, "exit 3 under faults in round {}: {:#?}", r.n, r.exit3);
        }
    }
    let _ = writeln!(
        t,
        "fault mixes: {}",
        recs.iter()
            .map(|r| format!("r{}[{}]", r.n, r.mix))
            .collect::<Vec<_>>()
            .join(" ")
    );
    if failures.is_empty() {
        let _ = writeln!(t, "result: PASS");
    } else {
        let _ = writeln!(t, "result: FAIL ({} failure(s))", failures.len());
        for (i, f) in failures.iter().enumerate() {
            let _ = writeln!(t, "--- failure {}: {f}", i + 1);
        }
    }
    t
}

/// Writes the summary to `target/soak-summary.txt` (the target directory the binary was built in).
fn write_summary(text: &str) -> PathBuf {
    let exe = Path::new(env!("CARGO_BIN_EXE_s3sync"));
    let target = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"));
    let path = target.join("soak-summary.txt");
    if let Err(e) = std::fs::write(&path, text) {
        eprintln!("could not write {}: {e}", path.display());
    }
    path
}

/// The soak: rounds until `S3SYNC_SOAK_SECONDS` are used up (see the module documentation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak test: run with scripts/soak.sh (cargo test --test suite soak:: -- --ignored --nocapture)"]
async fn soak_random_rounds_converge_under_faults_and_kills() {
    let seed = match std::env::var("S3SYNC_SOAK_SEED") {
        Ok(v) if !v.trim().is_empty() => parse_seed(&v),
        _ => DEFAULT_SEED,
    };
    let seconds = match std::env::var("S3SYNC_SOAK_SECONDS") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse::<u64>()
            .unwrap_or_else(|e| panic!("S3SYNC_SOAK_SECONDS={v}: {e}")),
        _ => DEFAULT_SECONDS,
    };
    let budget = Duration::from_secs(seconds);
    let srv = server().await;
    eprintln!(
        "[soak] seed {seed:#x}, budget {seconds} s, server {} at {} (replay with S3SYNC_SOAK_SEED={seed:#x})",
        srv.name, srv.endpoint
    );

    let root = tmpdir();
    let state = tmpdir();
    let up_src = root.path().join("up-src");
    let down_dst = root.path().join("down-dst");
    std::fs::create_dir_all(&up_src).unwrap();
    std::fs::create_dir_all(&down_dst).unwrap();
    let (b_up, b_down, b_from, b_to) = (
        srv.bucket().await,
        srv.bucket().await,
        srv.bucket().await,
        srv.bucket().await,
    );
    let mut pairs = vec![
        Pair {
            dir: Dir::Up,
            src: End::Local(up_src.clone()),
            dst: End::S3 {
                bucket: b_up.clone(),
                prefix: "up/".into(),
            },
            files: BTreeMap::new(),
        },
        Pair {
            dir: Dir::Down,
            src: End::S3 {
                bucket: b_down.clone(),
                prefix: "down/".into(),
            },
            dst: End::Local(down_dst.clone()),
            files: BTreeMap::new(),
        },
        Pair {
            dir: Dir::Across,
            src: End::S3 {
                bucket: b_from.clone(),
                prefix: "from/".into(),
            },
            dst: End::S3 {
                bucket: b_to.clone(),
                prefix: "to/".into(),
            },
            files: BTreeMap::new(),
        },
    ];
    let ctx = Ctx {
        srv,
        seed,
        state: state.path().to_path_buf(),
        locals: vec![up_src, down_dst],
        buckets: vec![b_up, b_down, b_from, b_to],
    };

    let started = Instant::now();
    let mut recs = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut last_end = SystemTime::now();
    let mut n = 0;
    eprintln!("[soak] {}", header());
    while n == 0 || started.elapsed() < budget {
        n += 1;
        let (rec, found) = round(&ctx, &mut pairs, n, last_end).await;
        last_end = SystemTime::now();
        eprintln!("[soak] {}   faults [{}]", row(&rec), rec.mix);
        recs.push(rec);
        for f in &found.failures {
            eprintln!("[soak] FAILURE: {f}");
        }
        failures.extend(found.failures);
        if found.fatal {
            eprintln!("[soak] stopping: the pair's target can no longer be trusted");
            break;
        }
        if failures.len() >= MAX_FAILURES {
            eprintln!("[soak] stopping after {MAX_FAILURES} failures");
            break;
        }
    }

    let injected: usize = recs.iter().map(|r| r.faults.iter().sum::<usize>()).sum();
    if injected == 0 {
        failures.push(format!(
            "the proxies injected no fault in {} rounds: the soak proved nothing",
            recs.len()
        ));
    }
    let text = summary(&ctx, budget, started.elapsed(), &recs, &failures);
    let path = write_summary(&text);
    eprintln!("\n{text}(written to {})", path.display());
    assert!(
        failures.is_empty(),
        "soak failed (seed {seed:#x}) with {} failure(s); first: {}",
        failures.len(),
        failures[0]
    );
}
