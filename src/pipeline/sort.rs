//! Sorting a listing that is not in key order (S3 Express One Zone directory buckets, servers that do
//! not sort) on disk, so that the sorted merge — and with it `--delete` — works for it too, and an
//! unordered side costs temporary disk space rather than memory.
//!
//! Entries are gathered in a bounded buffer; a full buffer is sorted and written to a temporary file
//! (a run). At the end the runs are merged, one entry of each run in memory at a time. Runs are merged
//! in groups of equal size as they pile up, so the number of open files stays small and every entry
//! is rewritten only a few times however long the listing is.

use super::spill::{read_str, temp_file, write_str};
use crate::error::{Error, Result};
use crate::storage::Entry;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

/// Bytes of entries held in memory before a run is written (about 40,000 entries of 100-byte keys).
pub const BUFFER_BYTES: usize = 8 << 20;
/// Runs merged at once: this many runs of one size are merged into one of the next size, so every
/// entry is rewritten about log16(runs) times and few files are open at the end.
const FAN_IN: usize = 16;
/// Entries handed from a blocking merge step to the async side at a time.
const BATCH: usize = 1024;

/// A sort of listing entries that spills to temporary files.
pub struct ExternalSort {
    buffer: Vec<Entry>,
    buffered_bytes: usize,
    limit: usize,
    /// Sorted runs with their level (a run of level `l` holds about `FAN_IN^l` buffers), levels
    /// never increasing along the vector.
    runs: Vec<(u32, File)>,
}

impl ExternalSort {
    /// A sort that holds up to about `limit` bytes of entries in memory.
    pub fn new(limit: usize) -> Self {
        ExternalSort {
            buffer: Vec::new(),
            buffered_bytes: 0,
            limit: limit.max(1),
            runs: Vec::new(),
        }
    }

    /// Adds an entry; returns whether the buffer is full (call [`ExternalSort::spill`] then).
    pub fn push(&mut self, e: Entry) -> bool {
        self.buffered_bytes += approx_size(&e);
        self.buffer.push(e);
        self.buffered_bytes >= self.limit
    }

    /// Writes the buffer as a sorted run (blocking file I/O).
    pub fn spill(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        self.buffer
            .sort_unstable_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
        let mut w = BufWriter::new(temp_file()?);
        for e in self.buffer.drain(..) {
            write_entry(&mut w, &e).map_err(io_error)?;
        }
        self.buffered_bytes = 0;
        let file = w.into_inner().map_err(|e| io_error(e.into_error()))?;
        self.runs.push((0, file));
        // FAN_IN runs of the same level at the end: merge them into one of the next level.
        while self.runs.len() >= FAN_IN {
            let level = self.runs[self.runs.len() - 1].0;
            let tail = &self.runs[self.runs.len() - FAN_IN..];
            if tail.iter().any(|(l, _)| *l != level) {
                break;
            }
            let group: Vec<File> = self.runs.drain(self.runs.len() - FAN_IN..).map(|(_, f)| f).collect();
            let mut merged = Merger::new(group, Vec::new())?;
            let mut w = BufWriter::new(temp_file()?);
            while let Some(e) = merged.next_entry()? {
                write_entry(&mut w, &e).map_err(io_error)?;
            }
            self.runs
                .push((level + 1, w.into_inner().map_err(|e| io_error(e.into_error()))?));
        }
        Ok(())
    }

    /// Every entry pushed, in key order (blocking file I/O).
    pub fn finish(mut self) -> Result<Merger> {
        self.buffer
            .sort_unstable_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
        Merger::new(self.runs.into_iter().map(|(_, f)| f).collect(), self.buffer)
    }
}

/// The k-way merge of the sorted runs and the sorted in-memory remainder.
pub struct Merger {
    readers: Vec<BufReader<File>>,
    memory: std::vec::IntoIter<Entry>,
    /// The head of each source (`readers[i]`, or `readers.len()` for the memory buffer), smallest first.
    heads: BinaryHeap<Reverse<Head>>,
}

struct Head {
    entry: Entry,
    source: usize,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.entry.key == other.entry.key && self.source == other.source
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Head {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.entry
            .key
            .as_bytes()
            .cmp(other.entry.key.as_bytes())
            .then(self.source.cmp(&other.source))
    }
}

impl Merger {
    fn new(runs: Vec<File>, memory: Vec<Entry>) -> Result<Self> {
        let mut readers = Vec::with_capacity(runs.len());
        for mut f in runs {
            f.seek(SeekFrom::Start(0)).map_err(io_error)?;
            readers.push(BufReader::with_capacity(64 << 10, f));
        }
        let mut m = Merger {
            readers,
            memory: memory.into_iter(),
            heads: BinaryHeap::new(),
        };
        for source in 0..=m.readers.len() {
            m.refill(source)?;
        }
        Ok(m)
    }

    fn refill(&mut self, source: usize) -> Result<()> {
        let next = match self.readers.get_mut(source) {
            Some(r) => read_entry(r).map_err(io_error)?,
            None => self.memory.next(),
        };
        if let Some(entry) = next {
            self.heads.push(Reverse(Head { entry, source }));
        }
        Ok(())
    }

    /// The next entry in key order.
    pub fn next_entry(&mut self) -> Result<Option<Entry>> {
        let Some(Reverse(head)) = self.heads.pop() else {
            return Ok(None);
        };
        self.refill(head.source)?;
        Ok(Some(head.entry))
    }
}

/// Passes a listing on in key order: reads `rx` to its end (errors are passed on at once, so the
/// merge knows the side is incomplete before it sees an entry), then sends every entry sorted.
pub async fn sort_listing(mut rx: mpsc::Receiver<Result<Entry>>, tx: mpsc::Sender<Result<Entry>>) {
    let mut sort = ExternalSort::new(BUFFER_BYTES);
    loop {
        // The merge may stop before the listing ends (a restart, Ctrl-C): stop reading then too.
        let item = tokio::select! {
            _ = tx.closed() => return,
            item = rx.recv() => item,
        };
        let Some(item) = item else { break };
        match item {
            Ok(e) => {
                if sort.push(e) {
                    match blocking(move || sort.spill().map(|_| sort)).await {
                        Ok(s) => sort = s,
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    }
                }
            }
            Err(e) => {
                if tx.send(Err(e)).await.is_err() {
                    return;
                }
            }
        }
    }
    let mut merger = match blocking(move || sort.finish()).await {
        Ok(m) => m,
        Err(e) => {
            let _ = tx.send(Err(e)).await;
            return;
        }
    };
    loop {
        let step = blocking(move || {
            let mut batch = Vec::with_capacity(BATCH);
            while batch.len() < BATCH {
                match merger.next_entry()? {
                    Some(e) => batch.push(e),
                    None => break,
                }
            }
            Ok((batch, merger))
        })
        .await;
        let batch = match step {
            Ok((batch, m)) => {
                merger = m;
                batch
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        if batch.is_empty() {
            return;
        }
        for e in batch {
            if tx.send(Ok(e)).await.is_err() {
                return;
            }
        }
    }
}

/// Runs blocking file work off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::ListingAborted(format!("sorting the listing: {e}")))?
}

fn io_error(e: std::io::Error) -> Error {
    Error::local("sort the listing in", std::env::temp_dir(), e)
}

fn approx_size(e: &Entry) -> usize {
    std::mem::size_of::<Entry>()
        + e.key.len()
        + e.etag.as_ref().map_or(0, String::len)
        + e.version_id.as_ref().map_or(0, String::len)
}

fn write_opt(w: &mut impl Write, s: Option<&String>) -> std::io::Result<()> {
    match s {
        None => w.write_all(&[0]),
        Some(s) => {
            w.write_all(&[1])?;
            write_str(w, s)
        }
    }
}

fn write_entry(w: &mut impl Write, e: &Entry) -> std::io::Result<()> {
    write_str(w, &e.key)?;
    w.write_all(&e.size.to_le_bytes())?;
    let (sign, d) = match e.mtime.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => (0u8, d),
        Err(before) => (1u8, before.duration()),
    };
    w.write_all(&[sign])?;
    w.write_all(&d.as_secs().to_le_bytes())?;
    w.write_all(&d.subsec_nanos().to_le_bytes())?;
    write_opt(w, e.etag.as_ref())?;
    write_opt(w, e.version_id.as_ref())
}

fn read_array<const N: usize>(r: &mut impl Read) -> std::io::Result<[u8; N]> {
    let mut b = [0u8; N];
    r.read_exact(&mut b)?;
    Ok(b)
}

fn read_string(r: &mut impl Read) -> std::io::Result<String> {
    read_str(r)?.ok_or_else(|| std::io::ErrorKind::UnexpectedEof.into())
}

fn read_opt(r: &mut impl Read) -> std::io::Result<Option<String>> {
    match read_array::<1>(r)?[0] {
        0 => Ok(None),
        _ => read_string(r).map(Some),
    }
}

/// The next entry of a run, `None` at its end.
fn read_entry(r: &mut BufReader<File>) -> std::io::Result<Option<Entry>> {
    let Some(key) = read_str(r)? else { return Ok(None) };
    let size = u64::from_le_bytes(read_array(r)?);
    let sign = read_array::<1>(r)?[0];
    let secs = u64::from_le_bytes(read_array(r)?);
    let nanos = u32::from_le_bytes(read_array(r)?);
    let d = Duration::new(secs, nanos);
    let mtime = if sign == 0 {
        SystemTime::UNIX_EPOCH + d
    } else {
        SystemTime::UNIX_EPOCH - d
    };
    Ok(Some(Entry {
        key,
        size,
        mtime,
        etag: read_opt(r)?,
        version_id: read_opt(r)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::seq::SliceRandom;

    fn entry(i: usize) -> Entry {
        Entry {
            key: format!("dir{}/k{i:06}", i % 7),
            size: i as u64,
            mtime: SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000 + i as u64, i as u32),
            etag: i.is_multiple_of(2).then(|| format!("etag{i}")),
            version_id: i.is_multiple_of(3).then(|| format!("v{i}")),
        }
    }

    /// Keys whose bytes sort around `/`, non-ASCII keys, and a time before the epoch survive a run.
    #[test]
    fn odd_keys_and_times_come_back_in_byte_order() {
        let keys = ["a/", "a.txt", "a-c", "a", "ü", "z", "é/x", "a/b"];
        let mut sort = ExternalSort::new(1);
        for (i, k) in keys.iter().enumerate() {
            let mut e = entry(i);
            e.key = k.to_string();
            if i == 0 {
                e.mtime = SystemTime::UNIX_EPOCH - Duration::new(5, 7);
            }
            assert!(sort.push(e), "a 1-byte buffer is always full");
            sort.spill().unwrap();
        }
        let mut m = sort.finish().unwrap();
        let mut got = Vec::new();
        while let Some(e) = m.next_entry().unwrap() {
            if e.key == "a/" {
                assert_eq!(e.mtime, SystemTime::UNIX_EPOCH - Duration::new(5, 7));
            }
            got.push(e.key);
        }
        let mut want: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        want.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        assert_eq!(got, want);
    }

    /// A shuffled listing of 100,000 keys, sorted through many runs (and a merge of runs), gives the
    /// same entries as the sorted listing.
    #[tokio::test]
    async fn a_shuffled_listing_comes_out_sorted() {
        let n = 100_000;
        let mut entries: Vec<Entry> = (0..n).map(entry).collect();
        let mut want = entries.clone();
        want.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
        entries.shuffle(&mut rand::rng());
        // A small buffer: about 300 entries per run, so more than FAN_IN^2 runs.
        let mut sort = ExternalSort::new(300 * approx_size(&entries[0]));
        let mut spills = 0;
        for e in entries {
            if sort.push(e) {
                sort.spill().unwrap();
                spills += 1;
            }
        }
        assert!(spills > FAN_IN * FAN_IN, "{spills} runs");
        assert!(sort.runs.len() < 2 * FAN_IN, "{} runs left", sort.runs.len());
        assert!(sort.runs.iter().any(|(level, _)| *level == 2), "runs merged twice over");
        let mut m = sort.finish().unwrap();
        let mut got = Vec::with_capacity(n);
        while let Some(e) = m.next_entry().unwrap() {
            got.push(e);
        }
        assert_eq!(got, want);
    }

    /// Through the async stage: errors first, then every entry in order.
    #[tokio::test]
    async fn the_stage_passes_errors_first_then_sorted_entries() {
        let (tx, rx) = mpsc::channel(4);
        let (otx, mut orx) = mpsc::channel(4);
        tokio::spawn(sort_listing(rx, otx));
        tokio::spawn(async move {
            for i in [5, 3, 9, 1] {
                tx.send(Ok(entry(i))).await.unwrap();
            }
            tx.send(Err(Error::ListingAborted("page 3".into()))).await.unwrap();
        });
        let first = orx.recv().await.unwrap();
        assert!(first.is_err());
        let mut keys = Vec::new();
        while let Some(e) = orx.recv().await {
            keys.push(e.unwrap().key);
        }
        let mut want: Vec<String> = [5, 3, 9, 1].into_iter().map(|i| entry(i).key).collect();
        want.sort();
        assert_eq!(keys, want);
    }
}
