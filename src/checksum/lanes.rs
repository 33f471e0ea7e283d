//! The parts of many objects hashed together.
//!
//! A part's MD5 is a chain of dependent steps that no core shortens, but sixteen chains side by
//! side in AVX-512 lanes cost about what one does ([`s3sync_io::md5_compress_lanes`]). Tasks hand
//! a chunk and their part's MD5 state to one hashing thread. It takes what other streams handed
//! in meanwhile, waits a moment ([`GATHER`]) while fewer have handed in than are hashing, and runs
//! them through the lanes together. A lone stream never waits: it is hashed as soon as it comes.
//! A stream that reads its next chunk while this one is hashed (a download) loses nothing to a
//! longer wait, and lets the thread wait longer for it ([`GATHER_READING_ON`]): fuller batches.
//!
//! Jobs own their bytes, so a task that stops waiting (cancelled) leaves nothing dangling: the
//! chunk goes back to the pool when the job is done.

use super::md5_state::Md5State;
use crate::error::{Error, Result};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use s3sync_io::{md5_compress_lanes, md5_lanes_supported, Chunk, MD5_LANES};
use std::any::Any;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The longest the hashing thread waits for more streams before it hashes what it has. Measured on
/// a download of 4 × 100 MiB from Garage: 0.5, 1.5 and 3 ms gave the same wall time, with 3.5, 7
/// and 8 streams per batch on average; a longer wait slows a stream whose peers have stalled.
pub const GATHER: Duration = Duration::from_millis(2);

/// The wait for streams that read on while their chunk is hashed. Measured on a download of
/// 4 × 256 MiB from Garage with the reads overlapped: 2, 5 and 8 ms gave 7.5, 11.5 and 13 streams
/// per batch on average and the same wall time. A wait longer than a stream takes to read its next
/// chunk (256 KiB: 5 ms at 50 MiB/s per stream) would slow it, hence not more.
pub const GATHER_READING_ON: Duration = Duration::from_millis(5);

/// Inputs shorter than this are hashed where they are: the hand-over costs more than it saves.
pub const MIN_JOB: usize = 64 * 1024;

/// The environment variable that turns the lanes off (`S3SYNC_MD5_LANES=off`), to measure against.
pub const LANES_ENV: &str = "S3SYNC_MD5_LANES";

/// Bytes a hashing job owns while it waits for its lanes.
pub trait HashInput: Any + Send {
    /// The bytes in order, in contiguous pieces.
    fn pieces(&self) -> Vec<&[u8]>;
    /// The input as `Any`, to be given back as its own type.
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
}

impl HashInput for Chunk {
    fn pieces(&self) -> Vec<&[u8]> {
        vec![self.as_slice()]
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

impl HashInput for Vec<Chunk> {
    fn pieces(&self) -> Vec<&[u8]> {
        self.iter().map(|c| c.as_slice()).collect()
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// One stream's next input and its MD5 so far.
struct Job {
    state: Md5State,
    input: Box<dyn HashInput>,
    /// How long this job lets the thread wait for others ([`GATHER`] or [`GATHER_READING_ON`]).
    gather: Duration,
    reply: tokio::sync::oneshot::Sender<(Md5State, Box<dyn HashInput>)>,
}

/// The hashing thread's door, and how many streams are hashing through it.
pub struct Lanes {
    jobs: Sender<Job>,
    streams: Arc<AtomicUsize>,
}

/// A stream counted as hashing through the lanes, from its first job until it is dropped: the
/// hashing thread waits for the streams it counts.
pub struct Seat(Arc<AtomicUsize>);

impl Seat {
    fn new(streams: &Arc<AtomicUsize>) -> Self {
        streams.fetch_add(1, Ordering::Relaxed);
        Seat(streams.clone())
    }
}

impl Clone for Seat {
    fn clone(&self) -> Self {
        Seat::new(&self.0)
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Seat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seat")
    }
}

impl Lanes {
    /// The process's lanes, started at first use; `None` where the CPU has no AVX-512 or
    /// `S3SYNC_MD5_LANES=off`.
    pub fn get() -> Option<&'static Lanes> {
        static LANES: OnceLock<Option<Lanes>> = OnceLock::new();
        LANES
            .get_or_init(|| {
                let off = std::env::var(LANES_ENV).is_ok_and(|v| v == "off" || v == "0");
                if off || !md5_lanes_supported() {
                    return None;
                }
                let (jobs, rx) = crossbeam_channel::unbounded();
                let streams = Arc::new(AtomicUsize::new(0));
                let counted = streams.clone();
                std::thread::Builder::new()
                    .name("s3sync-md5".into())
                    .spawn(move || run(rx, &counted))
                    .ok()?;
                Some(Lanes { jobs, streams })
            })
            .as_ref()
    }

    /// Counts a stream as hashing until the seat is dropped.
    pub fn seat(&self) -> Seat {
        Seat::new(&self.streams)
    }

    /// Feeds `input` to `state` in the hashing thread, with whatever other streams handed in
    /// within `gather` ([`GATHER`], or [`GATHER_READING_ON`] for a caller that reads on meanwhile).
    pub async fn hash<T: HashInput>(&self, state: Md5State, input: T, gather: Duration) -> Result<(Md5State, T)> {
        let (reply, done) = tokio::sync::oneshot::channel();
        let lost = || Error::Internal("the MD5 hashing thread stopped".into());
        self.jobs
            .send(Job {
                state,
                input: Box::new(input),
                gather,
                reply,
            })
            .map_err(|_| lost())?;
        let (state, input) = done.await.map_err(|_| lost())?;
        let input = input.into_any().downcast::<T>().map_err(|_| lost())?;
        Ok((state, *input))
    }
}

/// The hashing thread: batches of up to [`MD5_LANES`] jobs, one per stream (a stream waits for its
/// job before it hands in the next).
fn run(jobs: Receiver<Job>, streams: &AtomicUsize) {
    while let Ok(first) = jobs.recv() {
        let start = Instant::now();
        // The batch waits no longer than the least patient of its jobs allows.
        let mut deadline = start + first.gather;
        let mut batch = vec![first];
        while batch.len() < MD5_LANES {
            match jobs.try_recv() {
                Ok(job) => {
                    deadline = deadline.min(start + job.gather);
                    batch.push(job);
                    continue;
                }
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {}
            }
            if batch.len() >= streams.load(Ordering::Relaxed).min(MD5_LANES) {
                break;
            }
            match jobs.recv_deadline(deadline) {
                Ok(job) => {
                    deadline = deadline.min(start + job.gather);
                    batch.push(job);
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        {
            let mut streams: Vec<(&mut Md5State, Vec<&[u8]>)> =
                batch.iter_mut().map(|j| (&mut j.state, j.input.pieces())).collect();
            hash_together(&mut streams);
        }
        for job in batch {
            // A task that stopped waiting drops its reply; its bytes go back with the job.
            let _ = job.reply.send((job.state, job.input));
        }
    }
}

/// Where a stream is in its pieces.
struct Cursor<'a> {
    pieces: Vec<&'a [u8]>,
    piece: usize,
    offset: usize,
}

impl<'a> Cursor<'a> {
    /// Feeds `state` the bytes that cannot go through lanes (up to a block boundary, or a piece's
    /// last partial block) and returns the next run of whole blocks; `None` once all is fed.
    fn next_run(&mut self, state: &mut Md5State) -> Option<&'a [u8]> {
        loop {
            let piece = *self.pieces.get(self.piece)?;
            let rest = &piece[self.offset..];
            if rest.is_empty() {
                self.piece += 1;
                self.offset = 0;
                continue;
            }
            let n = match state.to_boundary() {
                0 if rest.len() >= 64 => return Some(&rest[..rest.len() / 64 * 64]),
                0 => rest.len(),
                k => k.min(rest.len()),
            };
            state.update(&rest[..n]);
            self.offset += n;
        }
    }
}

/// Feeds each stream its pieces, whole blocks of several streams at once in lanes.
pub fn hash_together(streams: &mut [(&mut Md5State, Vec<&[u8]>)]) {
    let mut cursors: Vec<Cursor<'_>> = streams
        .iter()
        .map(|(_, pieces)| Cursor {
            pieces: pieces.clone(),
            piece: 0,
            offset: 0,
        })
        .collect();
    let mut runs: Vec<Option<&[u8]>> = cursors
        .iter_mut()
        .zip(streams.iter_mut())
        .map(|(c, (s, _))| c.next_run(s))
        .collect();
    loop {
        let live: Vec<usize> = (0..runs.len()).filter(|&i| runs[i].is_some()).take(MD5_LANES).collect();
        let blocks = live
            .iter()
            .filter_map(|&i| runs[i].map(|r| r.len() / 64))
            .min()
            .unwrap_or(0);
        if live.is_empty() {
            return;
        }
        let mut words: Vec<[u32; 4]> = live.iter().map(|&i| streams[i].0.words).collect();
        let data: Vec<&[u8]> = live.iter().filter_map(|&i| runs[i]).collect();
        let together = live.len() > 1 && md5_compress_lanes(&mut words, &data, blocks);
        for (n, &i) in live.iter().enumerate() {
            let state = &mut *streams[i].0;
            let done = match together {
                true => {
                    state.words = words[n];
                    state.blocks_hashed(blocks * 64);
                    blocks * 64
                }
                // One stream left (or no lanes): the rest of its run in one go.
                false => {
                    let run = runs[i].unwrap_or_default();
                    state.update(run);
                    run.len()
                }
            };
            cursors[i].offset += done;
            runs[i] = cursors[i].next_run(state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::Digest;

    fn bytes(seed: usize, n: usize) -> Vec<u8> {
        (0..n).map(|i| ((i * 13 + seed * 101) % 251) as u8).collect()
    }

    #[test]
    fn streams_hashed_together_get_their_own_digests() {
        // Streams of every shape: empty, shorter than a block, ragged pieces, a partial block
        // already buffered, and more streams than lanes.
        let inputs: Vec<(Vec<u8>, Vec<usize>)> = (0..21)
            .map(|s| {
                let len = [0, 1, 63, 64, 65, 4096, 70_000, 262_144, 5_000][s % 9] + s;
                let cuts = match s % 4 {
                    0 => vec![len],
                    1 => vec![7, 64, 1000],
                    2 => vec![128; 4],
                    _ => vec![4096, 1, 4095],
                };
                (bytes(s, len), cuts)
            })
            .collect();
        let mut states: Vec<Md5State> = (0..inputs.len())
            .map(|s| {
                let mut st = Md5State::new();
                st.update(&bytes(s + 100, s * 5));
                st
            })
            .collect();
        {
            let mut streams: Vec<(&mut Md5State, Vec<&[u8]>)> = states
                .iter_mut()
                .zip(&inputs)
                .map(|(st, (data, cuts))| {
                    let mut pieces = Vec::new();
                    let mut rest = data.as_slice();
                    for &c in cuts.iter().cycle() {
                        if rest.is_empty() {
                            break;
                        }
                        let (a, b) = rest.split_at(c.min(rest.len()));
                        pieces.push(a);
                        rest = b;
                    }
                    (st, pieces)
                })
                .collect();
            hash_together(&mut streams);
        }
        for (s, st) in states.into_iter().enumerate() {
            let mut all = bytes(s + 100, s * 5);
            all.extend_from_slice(&inputs[s].0);
            let want: [u8; 16] = md5::Md5::digest(&all).into();
            assert_eq!(st.finish(), want, "stream {s}");
        }
    }

    /// The lanes, or `None` (said on stderr) where this machine cannot run them.
    fn lanes_here() -> Option<&'static Lanes> {
        let lanes = Lanes::get();
        if lanes.is_none() {
            eprintln!("no AVX-512F here (or {LANES_ENV}=off): nothing hashed in lanes");
        }
        lanes
    }

    #[tokio::test]
    async fn chunks_handed_to_the_lanes_come_back_hashed() {
        let Some(lanes) = lanes_here() else {
            return;
        };
        let pool = s3sync_io::ChunkPool::new(256 << 10, 8).expect("pool");
        let mut tasks = Vec::new();
        for s in 0..6 {
            let pool = pool.clone();
            tasks.push(tokio::spawn(async move {
                let _seat = lanes.seat();
                let data = bytes(s, 600_000 + s * 77);
                let mut state = Md5State::new();
                for piece in data.chunks(256 << 10) {
                    let mut chunk = pool.acquire().await;
                    chunk.extend_from_slice(piece);
                    let (st, chunk) = lanes.hash(state, chunk, GATHER).await.expect("hashed");
                    assert_eq!(chunk.as_slice(), piece);
                    state = st;
                }
                let want: [u8; 16] = md5::Md5::digest(&data).into();
                assert_eq!(state.finish(), want);
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
    }

    #[tokio::test]
    async fn a_task_that_stops_waiting_gets_its_chunk_back_into_the_pool() {
        let Some(lanes) = lanes_here() else {
            return;
        };
        let pool = s3sync_io::ChunkPool::new(256 << 10, 1).expect("pool");
        let mut chunk = pool.acquire().await;
        chunk.extend_from_slice(&[1u8; 256 << 10]);
        // Boxed, so that dropping it drops the future itself (a pinned reference would not).
        let mut hashing = Box::pin(lanes.hash(Md5State::new(), chunk, GATHER));
        // The first poll hands the job in; then the task gives up.
        assert!(futures::poll!(&mut hashing).is_pending());
        drop(hashing);
        // The pool's only chunk comes back once the job is done (a lost chunk would wait forever).
        let again = tokio::time::timeout(Duration::from_secs(10), pool.acquire())
            .await
            .expect("the chunk came back to the pool");
        assert_eq!(again.len(), 0);
    }
}
