//! Listing one bucket prefix with several ListObjectsV2 chains at once while still handing the
//! entries on in key order, so the sorted merge keeps streaming and memory stays flat.
//!
//! One listing is a chain of round trips (about 1,000 keys each). Here the key space is cut into
//! ranges `(lower, upper]`, each listed by its own chain (`StartAfter = lower`, stopping past `upper`).
//! Nothing about the keys is known in advance, so ranges are cut as the listing goes: after a page, a
//! chain splits the rest of its range halfway between its last key and its upper bound — counting
//! digits as digits and letters as letters, so the cut follows numbered keys — when a slot is free
//! (`--max-parallel-listings`), when the reader is waiting for keys (a listing that keeps ahead of its
//! reader stays one chain and costs no extra request), and when the rest looks long enough. A cut that
//! falls where there are no keys costs one empty page and frees its slot; the next cut lands nearer
//! the keys, so the cuts find the key distribution by bisection. The ranges are read in key order,
//! each through a queue of one page, and a chain asks for a page only when its queue has room, so at
//! most one page per chain is held ahead of the merge.

use super::s3::{Page, S3Storage};
use super::Entry;
use crate::error::Result;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// A point `m` with `a < m < b` (byte order; `b = None`: past every key) made of the bytes of `a` and
/// ASCII characters, to start a new range after; `None` when there is none worth using.
pub fn midpoint(a: &str, b: Option<&str>) -> Option<String> {
    let (a, b) = (a.as_bytes(), b.map(str::as_bytes));
    let mut out = Vec::new();
    let mut unbounded = b.is_none();
    for i in 0.. {
        // -1: the key has ended (sorts before any byte); 0x100: past every byte. Only ASCII is
        // chosen, and only where `a` is at a character boundary, so the point is valid UTF-8.
        let lo = a.get(i).map_or(-1, |&c| i32::from(c));
        let hi = match b {
            Some(b) if !unbounded => b.get(i).map_or(-1, |&c| i32::from(c)),
            _ => 0x100,
        };
        if lo == hi {
            out.push(u8::try_from(lo).ok()?); // -1: a == b
            continue;
        }
        if lo > hi {
            return None; // a >= b
        }
        // Printable ASCII only: servers echo StartAfter in their XML, where control characters are
        // not allowed.
        let (first, last) = ((lo + 1).max(0x20), (hi - 1).min(0x7E));
        if first <= last {
            out.push(((first + last) / 2) as u8);
            return String::from_utf8(out).ok();
        }
        // No character between: keep a's and look for room after it, with no upper limit there.
        let c = u8::try_from(lo).ok()?;
        out.push(c);
        unbounded = true;
        if i > 1024 {
            return None;
        }
    }
    None
}

/// A range is cut only when the rest of it looks like at least this many pages ([`pages_left`], an
/// overestimate for keys with separators), and only by a chain that has read this many pages since
/// it started or last cut (unless that cut fell where there are no keys): a short range never spawns
/// more short ranges, so the page each chain reads past its end stays a small share of the listing.
const MIN_PAGES_TO_CUT: u64 = 4;

/// Key positions read as numbers by [`Scale`] for a midpoint (u128), and for a density (f64).
const POSITIONS: usize = 12;
const DENSITY_POSITIONS: usize = 40;

/// Keys read as numbers after a common prefix, each byte in the radix of its class in a template
/// key: digits base 10, letters base 26, other printable ASCII base 95 (a control character counts as
/// the lowest printable one). Numbered keys (`obj-000123`) then
/// count like numbers, so densities and midpoints follow the keys rather than the byte values.
struct Scale {
    common: usize,
    digits: Vec<(u8, u32)>,
}

impl Scale {
    /// The scale of keys below `upper` that continue like `template` over `positions` bytes after
    /// their common prefix; `None` for non-ASCII keys.
    fn new(template: &[u8], upper: &[u8], positions: usize) -> Option<Scale> {
        let common = template.iter().zip(upper).take_while(|(a, b)| a == b).count();
        let mut digits = Vec::with_capacity(positions);
        for &c in template.iter().skip(common).take(positions) {
            digits.push(match c {
                b'0'..=b'9' => (b'0', 10),
                b'a'..=b'z' => (b'a', 26),
                b'A'..=b'Z' => (b'A', 26),
                0x20..=0x7E => (0x20, 95),
                0..=0x7F => (0x20, 1),
                _ => return None,
            });
        }
        Some(Scale { common, digits })
    }

    /// The digit of `k` at position `i` (a byte out of the position's class is clamped to it).
    fn digit(&self, k: &[u8], i: usize) -> i64 {
        let (base, radix) = self.digits[i];
        k.get(self.common + i)
            .map_or(0, |&c| (i64::from(c) - i64::from(base)).clamp(0, i64::from(radix)))
    }

    /// `k` as a number (a scale of at most [`POSITIONS`]).
    fn value(&self, k: &[u8]) -> u128 {
        let mut v: u128 = 0;
        for i in 0..self.digits.len() {
            v = v * u128::from(self.digits[i].1) + self.digit(k, i) as u128;
        }
        v
    }

    /// `y - x` as numbers, approximately (any length of scale).
    fn distance(&self, x: &[u8], y: &[u8]) -> f64 {
        let mut weight = 1.0;
        let mut d = 0.0;
        for i in (0..self.digits.len()).rev() {
            d += (self.digit(y, i) - self.digit(x, i)) as f64 * weight;
            weight *= f64::from(self.digits[i].1);
        }
        d
    }

    /// The shortest key of `prefix` (the common prefix) and digits that reads as `v`.
    fn key(&self, prefix: &[u8], mut v: u128) -> Option<String> {
        let mut out = vec![0u8; self.digits.len()];
        for (i, &(base, radix)) in self.digits.iter().enumerate().rev() {
            let d = (v % u128::from(radix)) as u8;
            v /= u128::from(radix);
            out[i] = base + d;
        }
        while out.len() > 1 && out.last().is_some_and(|&c| self.digits[out.len() - 1].0 == c) {
            out.pop();
        }
        let mut k = prefix[..self.common].to_vec();
        k.extend(out);
        String::from_utf8(k).ok()
    }
}

/// About how many pages of keys lie between `last` and `upper`, judging by the span of the page that
/// went from `first` to `last`.
pub fn pages_left(first: &str, last: &str, upper: Option<&str>) -> u64 {
    let Some(upper) = upper else { return u64::MAX };
    let (first, last, upper) = (first.as_bytes(), last.as_bytes(), upper.as_bytes());
    let Some(scale) = Scale::new(last, upper, DENSITY_POSITIONS) else {
        return u64::MAX;
    };
    if !first.starts_with(&last[..scale.common]) {
        return 0; // the page alone spans more than the rest of the range
    }
    let span = scale.distance(first, last).max(1.0);
    (scale.distance(last, upper) / span).max(0.0) as u64
}

/// Where to cut the range `(last, upper]`: halfway as the keys count (`Scale`), else halfway in
/// bytes ([`midpoint`]); always strictly between the two.
pub fn cut_point(last: &str, upper: Option<&str>) -> Option<String> {
    let by_scale = upper.and_then(|u| {
        let scale = Scale::new(last.as_bytes(), u.as_bytes(), POSITIONS)?;
        let (lo, hi) = (scale.value(last.as_bytes()), scale.value(u.as_bytes()));
        let m = scale.key(last.as_bytes(), lo + hi.checked_sub(lo)? / 2)?;
        (last.as_bytes() < m.as_bytes() && m.as_bytes() < u.as_bytes()).then_some(m)
    });
    by_scale.or_else(|| midpoint(last, upper))
}

/// The chains of one parallel listing.
struct Shared {
    /// The ranges not yet read, by lower bound, each with the queue of its entries.
    ranges: Mutex<BTreeMap<String, mpsc::Receiver<Result<Vec<Entry>>>>>,
    /// Chains running.
    active: AtomicUsize,
    /// Set when the reader stopped: no range is queued any more.
    abandoned: AtomicBool,
    /// Ranges started, requests sent and keys read past a range's end (for the debug log).
    ranges_started: AtomicUsize,
    requests: AtomicUsize,
    overread: AtomicUsize,
    /// How often the reader found the range it reads empty: cuts are made only while this grows, so
    /// a listing that keeps ahead of its reader (a slower local walk, busy workers) stays one chain
    /// and costs no extra requests.
    starved: AtomicUsize,
    parallel: usize,
    s3: S3Storage,
    max_keys: i32,
}

impl Shared {
    fn try_acquire(&self) -> bool {
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.parallel).then_some(n + 1)
            })
            .is_ok()
    }

    fn release(&self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
    }

    /// Takes the first range after `after` (the whole map when `None`).
    fn next_range(&self, after: Option<&str>) -> Option<(String, mpsc::Receiver<Result<Vec<Entry>>>)> {
        let mut ranges = self.ranges.lock().unwrap_or_else(|p| p.into_inner());
        let key = match after {
            None => ranges.keys().next().cloned(),
            Some(a) => ranges
                .range::<str, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))
                .next()
                .map(|(k, _)| k.clone()),
        }?;
        ranges.remove(&key).map(|rx| (key, rx))
    }

    fn insert(&self, lower: String, rx: mpsc::Receiver<Result<Vec<Entry>>>) {
        let mut ranges = self.ranges.lock().unwrap_or_else(|p| p.into_inner());
        // Checked under the lock `abandon` clears under: a range cut after the reader stopped is
        // dropped at once, so its chain ends at its first send instead of waiting forever.
        if !self.abandoned.load(Ordering::Acquire) {
            ranges.insert(lower, rx);
        }
    }

    /// Drops every queue: the chains still running end at their next send.
    fn abandon(&self) {
        self.abandoned.store(true, Ordering::Release);
        self.ranges.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// Ends the chains when the reader stops (returns early or is dropped).
struct Abandon(Arc<Shared>);

impl Drop for Abandon {
    fn drop(&mut self) {
        self.0.abandon();
    }
}

/// Lists every object under the prefix of `s3` (after `start_after`) in key order, with up to
/// `parallel` ListObjectsV2 chains at once. A chain that sees a key out of order passes it on and
/// stops, so the merge notices the disorder (and the run lists again, sorted).
pub async fn list(
    s3: &S3Storage,
    max_keys: i32,
    start_after: Option<&str>,
    parallel: usize,
    tx: mpsc::Sender<Result<Entry>>,
) -> Result<()> {
    let shared = Arc::new(Shared {
        ranges: Mutex::new(BTreeMap::new()),
        active: AtomicUsize::new(1),
        abandoned: AtomicBool::new(false),
        ranges_started: AtomicUsize::new(1),
        requests: AtomicUsize::new(0),
        overread: AtomicUsize::new(0),
        starved: AtomicUsize::new(0),
        parallel: parallel.max(1),
        s3: s3.clone(),
        max_keys,
    });
    let _abandon = Abandon(shared.clone());
    let first = start_after.unwrap_or_default().to_string();
    let (rtx, rrx) = mpsc::channel(1);
    shared.insert(first.clone(), rrx);
    tokio::spawn(run_range(
        shared.clone(),
        start_after.map(str::to_string),
        None,
        rtx,
        Arc::new(AtomicBool::new(false)),
    ));
    let mut after: Option<String> = None;
    while let Some((lower, mut rx)) = shared.next_range(after.as_deref()) {
        loop {
            let item = match rx.try_recv() {
                Ok(item) => item,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    shared.starved.fetch_add(1, Ordering::Relaxed);
                    match rx.recv().await {
                        Some(item) => item,
                        None => break,
                    }
                }
            };
            let sent = match item {
                Ok(entries) => {
                    let mut sent = true;
                    for e in entries {
                        if tx.send(Ok(e)).await.is_err() {
                            sent = false;
                            break;
                        }
                    }
                    sent
                }
                Err(e) => tx.send(Err(e)).await.is_ok(),
            };
            if !sent {
                return Ok(());
            }
        }
        after = Some(lower);
    }
    tracing::debug!(
        ranges = shared.ranges_started.load(Ordering::Relaxed),
        requests = shared.requests.load(Ordering::Relaxed),
        keys_read_past_a_range = shared.overread.load(Ordering::Relaxed),
        "parallel listing done"
    );
    Ok(())
}

/// One chain: lists `(lower, upper]`, splitting the rest of its range when a slot is free.
fn run_range(
    shared: Arc<Shared>,
    lower: Option<String>,
    upper: Option<String>,
    tx: mpsc::Sender<Result<Vec<Entry>>>,
    empty: Arc<AtomicBool>,
) -> futures::future::BoxFuture<'static, ()> {
    Box::pin(chain(shared, lower, upper, tx, empty))
}

/// The body of [`run_range`]: lists the range page by page, handing the pages on through `tx`, and
/// splits the rest of the range off to a new chain when that pays (see [`Chain::maybe_split`]).
/// `empty` is set when the first page held no key of the range.
async fn chain(
    shared: Arc<Shared>,
    lower: Option<String>,
    upper: Option<String>,
    tx: mpsc::Sender<Result<Vec<Entry>>>,
    empty: Arc<AtomicBool>,
) {
    let mut page = Page::first(lower.as_deref());
    let mut chain = Chain {
        starved: shared.starved.load(Ordering::Relaxed),
        shared,
        upper,
        last: lower,
        pages_since_cut: 0,
        child: None,
    };
    let mut first_page = true;
    loop {
        // A page is asked for only when there is room for it: a chain ahead of the reader holds one
        // page, not one queued and one more waiting.
        let Ok(room) = tx.reserve().await else { break };
        chain.shared.requests.fetch_add(1, Ordering::Relaxed);
        let (mut entries, next) = match chain.shared.s3.list_page(chain.shared.max_keys, page).await {
            Ok(p) => p,
            Err(e) => {
                room.send(Err(e));
                break;
            }
        };
        let first = entries.first().map(|e| e.key.clone());
        let end = chain.trim(&mut entries);
        if std::mem::take(&mut first_page) && entries.is_empty() {
            empty.store(true, Ordering::Relaxed);
        }
        chain.pages_since_cut += 1;
        if let Some(e) = entries.last() {
            chain.last = Some(e.key.clone());
        }
        if !entries.is_empty() {
            room.send(Ok(entries));
        } else {
            drop(room);
        }
        match end {
            PageEnd::Open => {}
            PageEnd::PastRange => break,
            PageEnd::OutOfOrder(key) => {
                let _ = tx.send(Err(crate::error::Error::ListingOutOfOrder(key))).await;
                break;
            }
        }
        let Some(next) = next else { break };
        page = next;
        chain.maybe_split(first.as_deref());
    }
    chain.shared.release();
}

/// Where the keys of a page that a chain keeps end.
enum PageEnd {
    /// Every key was kept: the range goes on.
    Open,
    /// A key past the range's end: the range is complete.
    PastRange,
    /// A key out of order (this one): the listing is not in order.
    OutOfOrder(String),
}

/// The state of one chain (see [`chain`]).
struct Chain {
    shared: Arc<Shared>,
    /// The end of the range still to list (`None`: past every key).
    upper: Option<String>,
    /// The last key handed on (at first, the range's lower bound).
    last: Option<String>,
    /// The reader's count of waits when the chain last looked.
    starved: usize,
    /// Pages listed since the range was last split.
    pages_since_cut: u64,
    /// Whether the range split off last found its first page empty.
    child: Option<Arc<AtomicBool>>,
}

impl Chain {
    /// Keeps the keys of a page in order up to the range's end (truncating `entries` there);
    /// returns where they ended. A key out of order ends the chain with an error the merge takes for
    /// this side's disorder: ranges of an unordered listing do not partition it, so nothing after it
    /// may pass for complete.
    fn trim(&self, entries: &mut Vec<Entry>) -> PageEnd {
        let mut end = (entries.len(), PageEnd::Open);
        for (i, e) in entries.iter().enumerate() {
            let prev = if i == 0 {
                self.last.as_deref()
            } else {
                Some(entries[i - 1].key.as_str())
            };
            if prev.is_some_and(|p| p.as_bytes() >= e.key.as_bytes()) {
                end = (i, PageEnd::OutOfOrder(e.key.clone()));
                break;
            }
            if self.upper.as_deref().is_some_and(|u| e.key.as_bytes() > u.as_bytes()) {
                self.shared.overread.fetch_add(entries.len() - i, Ordering::Relaxed);
                end = (i, PageEnd::PastRange);
                break;
            }
        }
        entries.truncate(end.0);
        end.1
    }

    /// After a page (the first key of which was `first`): splits the rest of the range off to a new
    /// chain when the reader has been waiting for keys, the rest looks long enough and a slot is free.
    fn maybe_split(&mut self, first: Option<&str>) {
        let now_starved = self.shared.starved.load(Ordering::Relaxed);
        let reader_waits = std::mem::replace(&mut self.starved, now_starved) != now_starved;
        let Some(l) = self.last.as_deref().filter(|_| reader_waits) else {
            return;
        };
        let probe_was_empty = self.child.as_ref().is_some_and(|c| c.load(Ordering::Relaxed));
        if (self.pages_since_cut < MIN_PAGES_TO_CUT && !probe_was_empty)
            || pages_left(first.unwrap_or(l), l, self.upper.as_deref()) < MIN_PAGES_TO_CUT
            || !self.shared.try_acquire()
        {
            return;
        }
        match cut_point(l, self.upper.as_deref()) {
            Some(m) => self.split_at(m),
            None => self.shared.release(),
        }
    }

    /// Hands the keys after `m` of the range to a new chain (which holds the slot just acquired);
    /// this chain's range then ends at `m`.
    fn split_at(&mut self, m: String) {
        let (rtx, rrx) = mpsc::channel(1);
        self.shared.insert(m.clone(), rrx);
        self.shared.ranges_started.fetch_add(1, Ordering::Relaxed);
        let c = Arc::new(AtomicBool::new(false));
        tokio::spawn(run_range(
            self.shared.clone(),
            Some(m.clone()),
            self.upper.take(),
            rtx,
            c.clone(),
        ));
        self.child = Some(c);
        self.pages_since_cut = 0;
        self.upper = Some(m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    /// A bucket in memory that answers ListObjectsV2 (prefix, start-after, continuation token,
    /// max-keys) in key order; counts requests and the ranges started (requests with start-after).
    fn bucket(keys: Vec<String>, prefix: &str) -> (S3Storage, Arc<AtomicU64>, Arc<AtomicU64>) {
        let mut keys = keys;
        keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        serving(keys, prefix)
    }

    /// The same, serving the keys in the order given (a server that does not sort).
    fn serving(keys: Vec<String>, prefix: &str) -> (S3Storage, Arc<AtomicU64>, Arc<AtomicU64>) {
        use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
        let (requests, ranges) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (r, g) = (requests.clone(), ranges.clone());
        let http = aws_smithy_http_client::test_util::infallible_client_fn(move |req| {
            r.fetch_add(1, Ordering::Relaxed);
            let query = req.uri().query().unwrap_or_default().to_string();
            let param = |name: &str| {
                query.split('&').find_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    (k == name).then(|| percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned())
                })
            };
            let prefix = param("prefix").unwrap_or_default();
            let max: usize = param("max-keys").and_then(|m| m.parse().ok()).unwrap_or(1000);
            let after = match (param("continuation-token"), param("start-after")) {
                (Some(t), _) => String::from_utf8(hex::decode(t).unwrap()).unwrap(),
                (None, Some(s)) => {
                    g.fetch_add(1, Ordering::Relaxed);
                    s
                }
                (None, None) => String::new(),
            };
            let matching: Vec<&String> = keys
                .iter()
                .filter(|k| k.starts_with(&prefix) && k.as_bytes() > after.as_bytes())
                .take(max + 1)
                .collect();
            let truncated = matching.len() > max;
            let page = &matching[..matching.len().min(max)];
            let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult>");
            for k in page {
                let k = k.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
                xml.push_str(&format!(
                    "<Contents><Key>{k}</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified>\
                     <ETag>&quot;e&quot;</ETag><Size>1</Size></Contents>"
                ));
            }
            xml.push_str(&format!("<IsTruncated>{truncated}</IsTruncated>"));
            if let (true, Some(last)) = (truncated, page.last()) {
                xml.push_str(&format!(
                    "<NextContinuationToken>{}</NextContinuationToken>",
                    hex::encode(last)
                ));
            }
            xml.push_str("</ListBucketResult>");
            hyper::http::Response::builder().status(200).body(xml).unwrap()
        });
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("a", "b", None, None, "test"))
            .http_client(http)
            .build();
        let s3 = S3Storage::new(
            aws_sdk_s3::Client::from_conf(conf),
            "b".into(),
            prefix.into(),
            true,
            None,
        );
        (s3, requests, ranges)
    }

    async fn list_all(s3: &S3Storage, max_keys: i32, after: Option<&str>, parallel: usize) -> Vec<String> {
        let (tx, mut rx) = mpsc::channel(16);
        let s3c = s3.clone();
        let after = after.map(str::to_string);
        let h = tokio::spawn(async move { list(&s3c, max_keys, after.as_deref(), parallel, tx).await });
        let mut got = Vec::new();
        while let Some(e) = rx.recv().await {
            got.push(e.unwrap().key);
        }
        h.await.unwrap().unwrap();
        got
    }

    /// Ranges listed in parallel come out as one listing in byte order: keys that sort around `/`,
    /// non-ASCII keys, a tree and a flat run, under a prefix, many pages.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parallel_ranges_give_the_sequential_listing() {
        let mut keys: Vec<String> = ["a", "a-c", "a.txt", "a/", "a/b", "a0", "é", "ü/x", "z\u{7f}", "&<>"]
            .iter()
            .map(|k| format!("pre/{k}"))
            .collect();
        keys.extend((0..1500).map(|i| format!("pre/d{:02}/k{i}", i % 37)));
        keys.extend((0..1500).map(|i| format!("pre/flat{i:05}")));
        keys.push("other/x".into());
        let (s3, requests, ranges) = bucket(keys.clone(), "pre/");
        let mut want: Vec<String> = keys
            .iter()
            .filter_map(|k| k.strip_prefix("pre/"))
            .map(str::to_string)
            .collect();
        want.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let got = list_all(&s3, 7, None, 8).await;
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the parallel listing differs from the sorted keys");
        assert!(ranges.load(Ordering::Relaxed) > 8, "ranges: {ranges:?}");
        // One page per 7 keys plus the probes of the cuts: not a listing many times over.
        let pages = want.len() as u64 / 7;
        assert!(
            requests.load(Ordering::Relaxed) < pages * 2,
            "{requests:?} requests for {pages} pages"
        );
        // After a start key (a range shard), and sequentially: the same keys.
        let from = "d20";
        let tail: Vec<String> = want.iter().filter(|k| k.as_str() > from).cloned().collect();
        assert_eq!(list_all(&s3, 7, Some(from), 8).await, tail);
        assert_eq!(list_all(&s3, 7, None, 1).await, want);
    }

    /// A listing out of key order never looks complete: the chain that sees it ends with
    /// `ListingOutOfOrder` (the merge takes it for disorder), it does not just stop.
    #[tokio::test]
    async fn an_unordered_listing_ends_with_an_out_of_order_error() {
        let mut keys: Vec<String> = (0..60).map(|i| format!("k{i:03}")).collect();
        keys.swap(30, 40);
        let (s3, _, _) = serving(keys, "");
        let (tx, mut rx) = mpsc::channel(16);
        let h = tokio::spawn(async move { list(&s3, 7, None, 4, tx).await });
        let mut errors = Vec::new();
        while let Some(item) = rx.recv().await {
            if let Err(e) = item {
                errors.push(e);
            }
        }
        h.await.unwrap().unwrap();
        assert!(
            errors
                .iter()
                .any(|e| matches!(e, crate::error::Error::ListingOutOfOrder(k) if k == "k031")),
            "{errors:?}"
        );
    }

    /// A reader that stops early ends every chain (nothing left waiting on a full queue).
    #[tokio::test]
    async fn a_reader_that_stops_ends_the_chains() {
        let keys: Vec<String> = (0..5000).map(|i| format!("k{i:05}")).collect();
        let (s3, requests, _) = bucket(keys, "");
        let (tx, mut rx) = mpsc::channel(1);
        let h = tokio::spawn(async move { list(&s3, 10, None, 8, tx).await });
        for _ in 0..50 {
            rx.recv().await.unwrap().unwrap();
        }
        drop(rx);
        h.await.unwrap().unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let seen = requests.load(Ordering::Relaxed);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(requests.load(Ordering::Relaxed), seen, "chains still listing");
        assert!(seen < 100, "{seen} requests for 50 keys read");
    }

    /// The bytes a cut adds to `a`'s are printable ASCII (servers echo StartAfter in XML).
    fn printable(a: &str, m: &str) {
        let common = a.bytes().zip(m.bytes()).take_while(|(x, y)| x == y).count();
        assert!(
            m.bytes().skip(common).all(|c| (0x20..=0x7E).contains(&c)),
            "{m:?} after {a:?}"
        );
    }

    fn between(a: &str, b: Option<&str>) -> String {
        let m = midpoint(a, b).unwrap_or_else(|| panic!("no point between {a:?} and {b:?}"));
        printable(a, &m);
        assert!(a.as_bytes() < m.as_bytes(), "{a:?} < {m:?}");
        if let Some(b) = b {
            assert!(m.as_bytes() < b.as_bytes(), "{m:?} < {b:?}");
        }
        m
    }

    #[test]
    fn points_fall_strictly_between() {
        assert_eq!(between("a", Some("c")), "b");
        between("k0000999", None);
        between("k0000999", Some("k1"));
        between("a", Some("b")); // adjacent: goes one character deeper
        between("a", Some("a0"));
        between("a-c", Some("a/"));
        between("a.txt", Some("a/"));
        between("a/", Some("a0"));
        between("", Some("a"));
        between("ü", None);
        between("a", Some("ü"));
        between("z\u{7f}\u{7f}", None);
        assert_eq!(midpoint("b", Some("a")), None);
        assert_eq!(midpoint("a", Some("a")), None);
        assert_eq!(midpoint("a", Some("a\0")), None);
    }

    #[test]
    fn cut_points_count_like_the_keys() {
        assert_eq!(cut_point("k0000999", Some("k1")).as_deref(), Some("k0500499"));
        assert_eq!(cut_point("a/x", Some("a/z")).as_deref(), Some("a/y"));
        for (a, b) in [
            ("k9", Some("k:")),
            ("a", Some("a0")),
            ("ü", Some("üz")),
            ("a", None),
            ("z", Some("z\0")),
        ] {
            if let Some(m) = cut_point(a, b) {
                printable(a, &m);
                assert!(
                    a < m.as_str() && b.is_none_or(|b| m.as_str() < b),
                    "{a:?} < {m:?} < {b:?}"
                );
            }
        }
    }

    #[test]
    fn pages_left_follows_the_key_density() {
        // A page of 1,000 numbered keys, and 99,000 more keys up to the bound.
        let n = pages_left("k0000000", "k0000999", Some("k0100000"));
        assert!((95..=100).contains(&n), "{n}");
        // Separators count as digits: an overestimate, never an underestimate.
        let n = pages_left("d/set-0000/o-0000000000", "d/set-0000/o-0000000999", Some("d/set-0050"));
        assert!(n >= 50, "{n}");
        assert_eq!(pages_left("k0000000", "k0000999", Some("k0001500")), 0);
        assert_eq!(pages_left("a", "b", None), u64::MAX);
    }

    /// Bisection towards dense keys: repeated cuts between a key and the last cut reach the keys' own
    /// characters within a few dozen steps.
    #[test]
    fn cuts_converge_on_the_keys() {
        let last = "k0000999";
        let mut upper: Option<String> = None;
        for step in 0..64 {
            let m = between(last, upper.as_deref());
            if m.as_str() < "k0999999" {
                assert!(step < 40, "took {step} cuts");
                return;
            }
            upper = Some(m);
        }
        panic!("the cuts never reached the keys");
    }
}
