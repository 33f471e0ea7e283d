//! Sorting more records than memory should hold: records are gathered in a bounded buffer; a full
//! buffer is sorted and written to a temporary file (a run). At the end the runs are merged, one record
//! of each run in memory at a time. Runs are merged in groups of equal size as they pile up, so the
//! number of open files stays small and every record is rewritten only a few times however many there
//! are.
//!
//! Two kinds of records go through it: listing entries of a side that is not in key order (see
//! `pipeline::sort`), and the entries of a local directory too large to sort in memory (see
//! `storage::local`). Both sort by the bytes of their key, as S3 does.

use crate::error::{Error, Result};
use crate::storage::Entry;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::time::{Duration, SystemTime};

/// Runs merged at once: this many runs of one size are merged into one of the next size, so every
/// record is rewritten about log16(runs) times and few files are open at the end.
const FAN_IN: usize = 16;
/// Bytes read ahead from each run being merged (at most about `2 * FAN_IN` runs are open at once).
const RUN_BUFFER: usize = 16 << 10;

/// A record that can be sorted on disk.
pub(crate) trait Record: Sized {
    /// The key it sorts by (byte order).
    fn key(&self) -> &str;
    /// About how many bytes it holds in memory.
    fn approx_size(&self) -> usize;
    /// Writes it to a run.
    fn write_to(&self, w: &mut impl Write) -> std::io::Result<()>;
    /// Reads the next record of a run; `None` at the end of the run.
    fn read_from(r: &mut impl Read) -> std::io::Result<Option<Self>>;
}

/// A sort of records that spills to temporary files.
pub(crate) struct ExternalSort<T> {
    buffer: Vec<T>,
    buffered_bytes: usize,
    limit: usize,
    /// Sorted runs with their level (a run of level `l` holds about `FAN_IN^l` buffers), levels
    /// never increasing along the vector.
    runs: Vec<(u32, File)>,
    /// Where runs are written ([`temp_file`]; tests make it fail).
    new_file: fn() -> Result<File>,
}

impl<T: Record> ExternalSort<T> {
    /// A sort that holds up to about `limit` bytes of records in memory.
    pub(crate) fn new(limit: usize) -> Self {
        ExternalSort {
            buffer: Vec::new(),
            buffered_bytes: 0,
            limit: limit.max(1),
            runs: Vec::new(),
            new_file: temp_file,
        }
    }

    /// Adds a record; returns whether the buffer is full (call [`ExternalSort::spill`] then).
    pub(crate) fn push(&mut self, record: T) -> bool {
        self.buffered_bytes += record.approx_size();
        self.buffer.push(record);
        self.buffered_bytes >= self.limit
    }

    /// Writes the buffer as a sorted run (blocking file I/O). Nothing is lost when that fails (no room
    /// or no permission for temporary files): the records stay in memory, the sort holds every later
    /// record in memory too, and the error is returned for the caller to report.
    pub(crate) fn spill(&mut self) -> Result<()> {
        let written = self.write_run().and_then(|()| self.merge_full_levels());
        if written.is_err() {
            self.limit = usize::MAX;
        }
        written
    }

    fn write_run(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        sort_by_key(&mut self.buffer);
        let mut w = BufWriter::new((self.new_file)()?);
        for r in &self.buffer {
            r.write_to(&mut w).map_err(io_error)?;
        }
        let file = w.into_inner().map_err(|e| io_error(e.into_error()))?;
        self.runs.push((0, file));
        self.buffer.clear();
        self.buffered_bytes = 0;
        // Give the memory back: a spilled buffer would otherwise hold its largest size to the end.
        self.buffer.shrink_to_fit();
        Ok(())
    }

    /// Merges FAN_IN runs of the same level at the end into one of the next level, as long as there
    /// are; the runs merged are replaced only once their merge is written.
    fn merge_full_levels(&mut self) -> Result<()> {
        while self.runs.len() >= FAN_IN {
            let from = self.runs.len() - FAN_IN;
            let level = self.runs[from].0;
            if self.runs[from..].iter().any(|(l, _)| *l != level) {
                break;
            }
            let mut group = Vec::with_capacity(FAN_IN);
            for (_, f) in &self.runs[from..] {
                group.push(f.try_clone().map_err(io_error)?);
            }
            let mut merged = Merger::<T>::new(group, Vec::new())?;
            let mut w = BufWriter::new((self.new_file)()?);
            while let Some(r) = merged.next_record()? {
                r.write_to(&mut w).map_err(io_error)?;
            }
            let file = w.into_inner().map_err(|e| io_error(e.into_error()))?;
            self.runs.truncate(from);
            self.runs.push((level + 1, file));
        }
        Ok(())
    }

    /// Every record pushed, in key order (blocking file I/O when runs were written).
    pub(crate) fn finish(mut self) -> Result<Merger<T>> {
        sort_by_key(&mut self.buffer);
        Merger::new(self.runs.into_iter().map(|(_, f)| f).collect(), self.buffer)
    }
}

fn sort_by_key<T: Record>(records: &mut [T]) {
    records.sort_unstable_by(|a, b| a.key().as_bytes().cmp(b.key().as_bytes()));
}

/// The k-way merge of the sorted runs and the sorted in-memory remainder.
pub(crate) struct Merger<T> {
    readers: Vec<BufReader<File>>,
    memory: std::vec::IntoIter<T>,
    /// The head of each source (`readers[i]`, or `readers.len()` for the memory buffer), smallest first.
    heads: BinaryHeap<Reverse<Head<T>>>,
    /// A run that could not be read: reported at the next call, after the record taken before it.
    failed: Option<Error>,
}

struct Head<T> {
    record: T,
    source: usize,
}

impl<T: Record> PartialEq for Head<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl<T: Record> Eq for Head<T> {}
impl<T: Record> PartialOrd for Head<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T: Record> Ord for Head<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.record
            .key()
            .as_bytes()
            .cmp(other.record.key().as_bytes())
            .then(self.source.cmp(&other.source))
    }
}

impl<T: Record> Merger<T> {
    /// A merge of nothing.
    pub(crate) fn empty() -> Self {
        Merger {
            readers: Vec::new(),
            memory: Vec::new().into_iter(),
            heads: BinaryHeap::new(),
            failed: None,
        }
    }

    fn new(runs: Vec<File>, memory: Vec<T>) -> Result<Self> {
        let mut readers = Vec::with_capacity(runs.len());
        for mut f in runs {
            f.seek(SeekFrom::Start(0)).map_err(io_error)?;
            readers.push(BufReader::with_capacity(RUN_BUFFER, f));
        }
        let mut m = Merger {
            readers,
            memory: memory.into_iter(),
            heads: BinaryHeap::new(),
            failed: None,
        };
        for source in 0..=m.readers.len() {
            m.refill(source)?;
        }
        Ok(m)
    }

    /// How many runs on disk it merges.
    #[cfg(test)]
    pub(crate) fn runs(&self) -> usize {
        self.readers.len()
    }

    fn refill(&mut self, source: usize) -> Result<()> {
        let next = match self.readers.get_mut(source) {
            Some(r) => T::read_from(r).map_err(io_error)?,
            None => self.memory.next(),
        };
        if let Some(record) = next {
            self.heads.push(Reverse(Head { record, source }));
        }
        Ok(())
    }

    /// The next record in key order. A run that cannot be read is reported once (the records it
    /// still held are missing); the other runs' records follow, still in order.
    pub(crate) fn next_record(&mut self) -> Result<Option<T>> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let Some(Reverse(head)) = self.heads.pop() else {
            return Ok(None);
        };
        if let Err(e) = self.refill(head.source) {
            self.failed = Some(e);
        }
        Ok(Some(head.record))
    }
}

fn io_error(e: std::io::Error) -> Error {
    Error::local("sort entries in", std::env::temp_dir(), e)
}

/// A new temporary file, removed when closed (or at a crash: it has no name).
pub(crate) fn temp_file() -> Result<File> {
    tempfile::tempfile().map_err(|e| Error::local("create", std::env::temp_dir(), e))
}

/// Writes `s` as a record field: its length (u32, little-endian), then its bytes.
pub(crate) fn write_str(w: &mut impl Write, s: &str) -> std::io::Result<()> {
    let len = u32::try_from(s.len()).map_err(|_| std::io::Error::other("field longer than 4 GiB"))?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(s.as_bytes())
}

/// Reads a field written by [`write_str`]; `None` at the end of the file (before its length).
pub(crate) fn read_str(r: &mut impl Read) -> std::io::Result<Option<String>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
    r.read_exact(&mut buf)?;
    String::from_utf8(buf)
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Reads a field that must be there (inside a record).
pub(crate) fn read_string(r: &mut impl Read) -> std::io::Result<String> {
    read_str(r)?.ok_or_else(|| std::io::ErrorKind::UnexpectedEof.into())
}

/// Reads `N` bytes.
pub(crate) fn read_array<const N: usize>(r: &mut impl Read) -> std::io::Result<[u8; N]> {
    let mut b = [0u8; N];
    r.read_exact(&mut b)?;
    Ok(b)
}

/// Writes a point in time (before the epoch too): a sign byte, seconds and nanoseconds.
pub(crate) fn write_time(w: &mut impl Write, t: SystemTime) -> std::io::Result<()> {
    let (sign, d) = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => (0u8, d),
        Err(before) => (1u8, before.duration()),
    };
    w.write_all(&[sign])?;
    w.write_all(&d.as_secs().to_le_bytes())?;
    w.write_all(&d.subsec_nanos().to_le_bytes())
}

/// Reads a point in time written by [`write_time`].
pub(crate) fn read_time(r: &mut impl Read) -> std::io::Result<SystemTime> {
    let sign = read_array::<1>(r)?[0];
    let secs = u64::from_le_bytes(read_array(r)?);
    let nanos = u32::from_le_bytes(read_array(r)?);
    let d = Duration::new(secs, nanos);
    Ok(if sign == 0 {
        SystemTime::UNIX_EPOCH + d
    } else {
        SystemTime::UNIX_EPOCH - d
    })
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

fn read_opt(r: &mut impl Read) -> std::io::Result<Option<String>> {
    match read_array::<1>(r)?[0] {
        0 => Ok(None),
        _ => read_string(r).map(Some),
    }
}

impl Record for Entry {
    fn key(&self) -> &str {
        &self.key
    }

    fn approx_size(&self) -> usize {
        std::mem::size_of::<Entry>()
            + self.key.len()
            + self.etag.as_ref().map_or(0, String::len)
            + self.version_id.as_ref().map_or(0, String::len)
    }

    fn write_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        write_str(w, &self.key)?;
        w.write_all(&self.size.to_le_bytes())?;
        write_time(w, self.mtime)?;
        write_opt(w, self.etag.as_ref())?;
        write_opt(w, self.version_id.as_ref())
    }

    fn read_from(r: &mut impl Read) -> std::io::Result<Option<Self>> {
        let Some(key) = read_str(r)? else { return Ok(None) };
        Ok(Some(Entry {
            key,
            size: u64::from_le_bytes(read_array(r)?),
            mtime: read_time(r)?,
            etag: read_opt(r)?,
            version_id: read_opt(r)?,
        }))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::seq::SliceRandom;

    /// A test entry: key `dir{i % 7}/k{i:06}`, size `i`, an ETag and a version for some.
    pub(crate) fn entry(i: usize) -> Entry {
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
        while let Some(e) = m.next_record().unwrap() {
            if e.key == "a/" {
                assert_eq!(e.mtime, SystemTime::UNIX_EPOCH - Duration::new(5, 7));
            }
            got.push(e.key);
        }
        let mut want: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        want.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        assert_eq!(got, want);
    }

    /// A run that cannot be written loses nothing: its records stay in memory, and so do all later
    /// ones; the result is still complete and sorted.
    #[cfg(unix)]
    #[test]
    fn a_run_that_cannot_be_written_keeps_its_records_in_memory() {
        let mut sort = ExternalSort::new(1);
        for i in [3, 1] {
            sort.push(entry(i));
            sort.spill().unwrap();
        }
        // Run files that refuse writes, as on a full disk.
        sort.new_file = || File::open("/dev/null").map_err(io_error);
        assert!(sort.push(entry(2)));
        assert!(sort.spill().is_err());
        assert!(!sort.push(entry(0)), "once a run failed, records stay in memory");
        let mut m = sort.finish().unwrap();
        let mut got = Vec::new();
        while let Some(e) = m.next_record().unwrap() {
            got.push(e.size);
        }
        assert_eq!(got, vec![0, 1, 2, 3]);
    }

    /// A shuffled listing of 100,000 keys, sorted through many runs (and a merge of runs), gives the
    /// same entries as the sorted listing.
    #[test]
    fn a_shuffled_listing_comes_out_sorted() {
        let n = 100_000;
        let mut entries: Vec<Entry> = (0..n).map(entry).collect();
        let mut want = entries.clone();
        want.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
        entries.shuffle(&mut rand::rng());
        // A small buffer: about 300 entries per run, so more than FAN_IN^2 runs.
        let mut sort = ExternalSort::new(300 * entries[0].approx_size());
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
        while let Some(e) = m.next_record().unwrap() {
            got.push(e);
        }
        assert_eq!(got, want);
    }
}
