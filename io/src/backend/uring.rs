//! io_uring backend: one dedicated thread owns the ring; tokio tasks talk to it over a channel.
//!
//! Why a thread and not `tokio-uring`: see `io/DESIGN.md`. In short, the tool runs on tokio's
//! multi-thread runtime, and a single ring thread serves every task on it without a second
//! runtime.
//!
//! Flow of a request:
//! 1. A task moves its `Chunk` and an `IoFile` clone into an [`Op`], sends it with a tokio
//!    oneshot sender over an unbounded crossbeam channel, pokes the eventfd, and awaits the
//!    oneshot.
//! 2. The ring thread drains the channel, pushes SQEs (`READ_FIXED` / `WRITE_FIXED` / `FSYNC`)
//!    and blocks in `io_uring_enter` until at least one CQE arrives.
//! 3. Short reads/writes are continued by the thread itself; when an operation is finished, the
//!    chunk comes back through the oneshot. If the task was cancelled meanwhile, the send fails
//!    and the chunk is dropped (returned to the pool) right there, after the kernel is done.
//!
//! Wake-ups: the thread always keeps a read of an eventfd pending in the ring while it runs. A
//! sender writes to the eventfd after queueing its request, so that read completes and the
//! blocked `io_uring_enter` returns. Because an eventfd is a counter, a poke that lands while
//! the read is not armed is not lost: the next armed read completes immediately. This needs no
//! timeouts and no polling: the thread sleeps in the kernel while idle and reacts immediately.

use std::collections::VecDeque;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use tokio::sync::oneshot;

use super::uring_sys::{self, context, Event, Op, Ring};
use super::{tokio_fs, CreationGuard};
use crate::{Chunk, ChunkPool, IoFile};

/// Submission queue size: up to 255 operations in flight plus the wake-up read. More requests
/// wait in the thread's backlog (every read/write already holds a chunk, so the pool bounds it).
const RING_ENTRIES: u32 = 256;

/// Where the ring thread sends an operation's outcome.
enum Reply {
    Chunk(oneshot::Sender<io::Result<Chunk>>),
    Unit(oneshot::Sender<io::Result<()>>),
}

impl Reply {
    /// Sends the result. If the receiver is gone (task cancelled), the chunk in `result` is
    /// dropped here and returns to the pool.
    fn chunk(self, result: io::Result<Chunk>) {
        match self {
            Reply::Chunk(tx) => drop(tx.send(result)),
            Reply::Unit(tx) => drop(tx.send(result.map(drop))),
        }
    }

    fn unit(self, result: io::Result<()>) {
        match self {
            Reply::Unit(tx) => drop(tx.send(result)),
            Reply::Chunk(tx) => drop(tx.send(Err(io::Error::other("io_uring: internal error (reply type mismatch)")))),
        }
    }

    fn fail(self, error: io::Error) {
        match self {
            Reply::Chunk(tx) => drop(tx.send(Err(error))),
            Reply::Unit(tx) => drop(tx.send(Err(error))),
        }
    }
}

struct Request {
    op: Op,
    reply: Reply,
}

fn stopped() -> io::Error {
    io::Error::other("io_uring thread has stopped")
}

/// Adds 1 to the eventfd counter, waking the ring thread.
fn poke(waker: &File) {
    if let Err(e) = (&*waker).write_all(&1u64.to_ne_bytes()) {
        tracing::error!("io_uring: failed to wake the ring thread: {e}");
    }
}

/// Handle to the ring thread. Dropping the last handle lets the thread finish the operations in
/// flight and exit.
pub(crate) struct UringBackend {
    tx: Option<Sender<Request>>,
    waker: Arc<File>,
    fixed: usize,
    /// Whether whole-file chains run on the ring (else through the portable backend).
    files: bool,
}

impl UringBackend {
    /// Builds the ring (the runtime probe), registers the pool's chunks and starts the thread.
    ///
    /// As many chunks are registered as `RLIMIT_MEMLOCK` allows (an unprivileged user's default of
    /// 8 MiB holds about 31 chunks of 256 KiB); the others use plain READ/WRITE. If no chunk can be
    /// registered, logs one warning and continues with plain READ/WRITE on the ring.
    pub(crate) fn start(pool: &ChunkPool) -> io::Result<UringBackend> {
        #[cfg(test)]
        if tests::FAIL_PROBE.with(std::cell::Cell::get) {
            return Err(io::Error::other("probe failure injected by a test"));
        }
        UringBackend::start_with(pool, Some(usize::MAX))
    }

    /// [`start`](Self::start), registering at most `register` chunks (`None`: none), for tests.
    pub(crate) fn start_with(pool: &ChunkPool, register: Option<usize>) -> io::Result<UringBackend> {
        let waker = Arc::new(uring_sys::eventfd()?);
        let (ring, registration) = Ring::<Reply>::new(RING_ENTRIES, pool, waker.try_clone()?, register)?;
        let fixed = ring.fixed_chunks();
        let files = ring.supports_files();
        let (tx, rx) = crossbeam_channel::unbounded();
        let thread_waker = Arc::clone(&waker);
        std::thread::Builder::new()
            .name("s3sync-io-uring".into())
            .spawn(move || run(ring, rx, thread_waker))
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start the io_uring thread: {e}")))?;
        // Only now (the backend is definitely in use) report the degraded mode, so a fallback
        // to tokio never logs two warnings.
        if let Some(e) = registration {
            tracing::warn!(
                "io_uring: could not register the chunk pool ({} chunks of {} bytes) as fixed \
                 buffers: {e}; using io_uring without fixed buffers (raising RLIMIT_MEMLOCK \
                 enables them)",
                pool.capacity(),
                pool.chunk_size()
            );
        }
        tracing::debug!(
            fixed_chunks = fixed,
            chunks = pool.capacity(),
            file_chains = files,
            "io backend: io_uring"
        );
        Ok(UringBackend {
            tx: Some(tx),
            waker,
            fixed,
            files,
        })
    }

    /// How many of the pool's first chunks are registered as fixed buffers.
    pub(crate) fn fixed_chunks(&self) -> usize {
        self.fixed
    }

    fn send(&self, op: Op, reply: Reply) -> io::Result<()> {
        let tx = self.tx.as_ref().ok_or_else(stopped)?;
        // On failure the request (and its chunk) is dropped here: it never reached the kernel.
        tx.send(Request { op, reply }).map_err(|_| stopped())?;
        poke(&self.waker);
        Ok(())
    }

    pub(crate) async fn read_at(&self, file: IoFile, chunk: Chunk, offset: u64, want: usize) -> io::Result<Chunk> {
        let (tx, rx) = oneshot::channel();
        let op = Op::Read {
            file,
            chunk,
            offset,
            want,
        };
        self.send(op, Reply::Chunk(tx))?;
        rx.await.map_err(|_| stopped())?
    }

    pub(crate) async fn write_at(&self, file: IoFile, chunk: Chunk, offset: u64) -> io::Result<Chunk> {
        let (tx, rx) = oneshot::channel();
        let op = Op::Write {
            file,
            chunk,
            offset,
            done: 0,
        };
        self.send(op, Reply::Chunk(tx))?;
        rx.await.map_err(|_| stopped())?
    }

    pub(crate) async fn fsync(&self, file: IoFile) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Fsync { file }, Reply::Unit(tx))?;
        rx.await.map_err(|_| stopped())?
    }

    /// Whether whole-file operations run as chains on the ring.
    pub(crate) fn file_chains(&self) -> bool {
        self.files
    }

    /// Reads a whole small file as one chain (open, read, close); see `IoEngine::read_file`.
    pub(crate) async fn read_file(&self, path: &Path, chunk: Chunk) -> io::Result<Chunk> {
        if !self.files {
            return tokio_fs::read_file(path, chunk).await;
        }
        let (tx, rx) = oneshot::channel();
        let op = Op::ReadFile {
            path: c_path(path)?,
            chunk,
            results: [0; 3],
        };
        self.send(op, Reply::Chunk(tx))?;
        rx.await.map_err(|_| stopped())?
    }

    /// Creates and writes a whole small file as one chain (open, write, fsync, close); see
    /// `IoEngine::write_file`.
    pub(crate) async fn write_file(&self, path: &Path, chunk: Chunk, durable: bool) -> io::Result<()> {
        if !self.files {
            return tokio_fs::write_file(path, chunk, durable).await;
        }
        let guard = CreationGuard::new(path);
        let (tx, rx) = oneshot::channel();
        let op = Op::WriteFile {
            path: c_path(path)?,
            chunk,
            durable,
            results: [0; 4],
            creation: guard.state(),
        };
        self.send(op, Reply::Unit(tx))?;
        rx.await.map_err(|_| stopped())??;
        guard.delivered();
        Ok(())
    }

    /// `rename(2)` on the ring.
    pub(crate) async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        if !self.files {
            return tokio_fs::rename(from, to).await;
        }
        let (tx, rx) = oneshot::channel();
        let op = Op::Rename {
            from: c_path(from)?,
            to: c_path(to)?,
        };
        self.send(op, Reply::Unit(tx))?;
        rx.await.map_err(|_| stopped())?
    }
}

/// A path as the kernel takes it.
fn c_path(path: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: a path with a NUL byte", path.display()),
        )
    })
}

/// The error of a chain step's CQE result, if it failed.
fn step_error(result: i32) -> Option<io::Error> {
    (result < 0).then(|| io::Error::from_raw_os_error(-result))
}

/// Outcome of a whole-file read chain: the open's error, else the read's; the close of a file only
/// read cannot lose data, so its error is only logged.
fn read_file_done(chunk: Chunk, results: [i32; 3], reply: Reply) {
    let [open, read, close] = results;
    let error = step_error(open)
        .map(|e| context(e, "open"))
        .or_else(|| step_error(read).map(|e| context(e, "read")));
    if error.is_none() && close < 0 {
        tracing::debug!(
            "io_uring: close after a whole-file read failed: {}",
            io::Error::from_raw_os_error(-close)
        );
    }
    let mut chunk = chunk;
    if error.is_none() {
        chunk.set_filled_len(read as usize);
    }
    finish(reply, chunk, error);
}

/// Outcome of a whole-file write chain. The first failed step decides the error; then, or when the
/// caller is gone, the file (if it was created) is removed, so nothing is left half written.
fn write_file_done(
    path: CString,
    chunk: Chunk,
    durable: bool,
    results: [i32; 4],
    creation: super::CreationState,
    reply: Reply,
) {
    use std::os::unix::ffi::OsStrExt;
    let len = chunk.len();
    drop(chunk);
    let [open, write, fsync, close] = match durable {
        true => results,
        false => [results[0], results[1], 0, results[2]],
    };
    let path = Path::new(std::ffi::OsStr::from_bytes(path.as_bytes()));
    if let Some(e) = step_error(open) {
        return reply.unit(Err(e));
    }
    let short = (write >= 0 && (write as usize) < len).then(|| {
        io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write ({write} of {len} bytes)"),
        )
    });
    let error = step_error(write)
        .map(|e| context(e, "write"))
        .or(short)
        .or_else(|| step_error(fsync).map(|e| context(e, "fsync")))
        .or_else(|| step_error(close).map(|e| context(e, "close")));
    let outcome = match error {
        Some(e) => {
            let _ = std::fs::remove_file(path);
            Err(e)
        }
        None => creation.created(path),
    };
    reply.unit(outcome);
}

impl Drop for UringBackend {
    fn drop(&mut self) {
        // Disconnect first, then wake the thread so it notices.
        drop(self.tx.take());
        poke(&self.waker);
    }
}

/// Whether a failed operation should simply be resubmitted.
fn transient(errno: i32) -> bool {
    errno == libc::EINTR || errno == libc::EAGAIN
}

/// Handles a completion: returns the operation if it must be resubmitted (short transfer or
/// transient error), otherwise sends the outcome.
fn complete(op: Op, reply: Reply, result: i32) -> Option<(Op, Reply)> {
    let transient_error = result < 0 && transient(-result);
    match op {
        Op::Read {
            file,
            mut chunk,
            offset,
            want,
        } => {
            if result > 0 {
                chunk.set_filled_len(chunk.len() + result as usize);
            }
            let short = result > 0 && chunk.len() < want.min(chunk.capacity()) && !file.read_ends_short(chunk.len());
            if short || transient_error {
                let op = Op::Read {
                    file,
                    chunk,
                    offset,
                    want,
                };
                return Some((op, reply));
            }
            // 0 is the end of the file: the chunk holds what there was.
            finish(
                reply,
                chunk,
                (result < 0).then(|| io::Error::from_raw_os_error(-result)),
            );
        }
        Op::Write {
            file,
            chunk,
            offset,
            done,
        } => {
            let done = done + result.max(0) as usize;
            let short = result > 0 && done < chunk.len();
            if short || transient_error {
                let op = Op::Write {
                    file,
                    chunk,
                    offset,
                    done,
                };
                return Some((op, reply));
            }
            let error = match result {
                0 => Some(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "failed to write the whole chunk",
                )),
                r if r < 0 => Some(io::Error::from_raw_os_error(-r)),
                _ => None,
            };
            finish(reply, chunk, error);
        }
        Op::Fsync { file } => {
            if transient_error {
                return Some((Op::Fsync { file }, reply));
            }
            reply.unit(match result < 0 {
                true => Err(io::Error::from_raw_os_error(-result)),
                false => Ok(()),
            });
        }
        Op::ReadFile { chunk, results, .. } => read_file_done(chunk, results, reply),
        Op::WriteFile {
            path,
            chunk,
            durable,
            results,
            creation,
        } => write_file_done(path, chunk, durable, results, creation, reply),
        Op::Rename { .. } => reply.unit(step_error(result).map_or(Ok(()), Err)),
    }
    None
}

/// Sends the outcome of a finished read or write. On an error the chunk goes back to the pool before
/// the caller hears about the failure.
fn finish(reply: Reply, chunk: Chunk, error: Option<io::Error>) {
    match error {
        None => reply.chunk(Ok(chunk)),
        Some(e) => {
            drop(chunk);
            reply.chunk(Err(e));
        }
    }
}

/// The ring thread.
fn run(mut ring: Ring<Reply>, rx: Receiver<Request>, waker: Arc<File>) {
    let mut backlog: VecDeque<(Op, Reply)> = VecDeque::new();
    let mut events = Vec::new();
    let mut closing = false;
    let mut poked_self = false;
    loop {
        if !closing {
            loop {
                match rx.try_recv() {
                    Ok(req) => backlog.push_back((req.op, req.reply)),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        closing = true;
                        break;
                    }
                }
            }
        }

        while ring.has_room() {
            let Some((op, reply)) = backlog.pop_front() else {
                break;
            };
            if let Err(back) = ring.push(op, reply) {
                backlog.push_front(back);
                break;
            }
        }

        if closing {
            // All handles are gone. The wake-up read owns a buffer, so complete it (by poking
            // ourselves) rather than leave it pending; then finish what is in flight.
            if ring.wake_armed() && !poked_self {
                poke(&waker);
                poked_self = true;
            }
            if backlog.is_empty() && ring.in_flight() == 0 && !ring.wake_armed() {
                break;
            }
        } else if !ring.arm_wake() {
            // Cannot happen (one SQE is reserved for it); flush the SQ and retry rather than
            // risk sleeping without a way to be woken.
            tracing::error!("io_uring: submission queue full, cannot arm the wake-up read");
            if let Err(e) = ring.submit_and_wait(0) {
                tracing::error!("io_uring: submit failed: {e}");
            }
            continue;
        }

        if let Err(e) = ring.submit_and_wait(1) {
            let errno = e.raw_os_error().unwrap_or(0);
            if errno == libc::EAGAIN || errno == libc::ENOMEM {
                // Kernel short of resources for the moment: reap what we can and retry.
                std::thread::sleep(Duration::from_millis(1));
            } else {
                tracing::error!("io_uring: io_uring_enter failed, stopping the ring thread: {e}");
                for (_, reply) in backlog.drain(..) {
                    reply.fail(io::Error::other(format!("io_uring failed: {e}")));
                }
                // Dropping `ring` leaks whatever is still in flight (see uring_sys).
                break;
            }
        }

        ring.reap(&mut events);
        for event in events.drain(..) {
            if let Event::Done { op, tag, result } = event {
                if let Some(again) = complete(op, tag, result) {
                    backlog.push_front(again);
                }
            }
        }
    }
    tracing::debug!("io_uring thread exiting");
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::{BackendKind, IoEngine};

    thread_local! {
        /// Makes `UringBackend::start` fail on this thread, to exercise the fallback.
        pub(crate) static FAIL_PROBE: Cell<bool> = const { Cell::new(false) };
    }

    /// Counts WARN events; everything else is ignored.
    struct WarnCounter(Arc<AtomicUsize>);

    impl tracing::Subscriber for WarnCounter {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            if *event.metadata().level() == tracing::Level::WARN {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    #[test]
    fn failed_probe_falls_back_to_tokio_with_one_warning() {
        if std::env::var(crate::BACKEND_ENV).is_ok_and(|v| v.eq_ignore_ascii_case("tokio")) {
            return; // forced to tokio: no probe at all
        }
        let warnings = Arc::new(AtomicUsize::new(0));
        let engine = tracing::subscriber::with_default(WarnCounter(Arc::clone(&warnings)), || {
            FAIL_PROBE.with(|f| f.set(true));
            let engine = IoEngine::new(ChunkPool::new(4096, 2).unwrap());
            FAIL_PROBE.with(|f| f.set(false));
            engine.unwrap()
        });
        assert_eq!(engine.backend(), BackendKind::Tokio);
        assert_eq!(warnings.load(Ordering::SeqCst), 1);

        // Explicitly requesting io_uring reports the failure instead of falling back.
        FAIL_PROBE.with(|f| f.set(true));
        let err = IoEngine::with_backend(ChunkPool::new(4096, 1).unwrap(), BackendKind::Uring);
        FAIL_PROBE.with(|f| f.set(false));
        assert!(matches!(err, Err(crate::IoError::UringUnavailable(_))));
    }

    /// With room for only a prefix of the pool (as `RLIMIT_MEMLOCK` leaves an unprivileged user),
    /// the first chunks go through READ_FIXED/WRITE_FIXED and the rest through READ/WRITE, all
    /// in flight together, and every byte lands where it belongs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_registered_prefix_mixes_fixed_and_plain_buffers() {
        let pool = ChunkPool::new(64 << 10, 8).unwrap();
        let backend = match UringBackend::start_with(&pool, Some(3)) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("note: io_uring unavailable, skipping: {e}");
                return;
            }
        };
        let fixed = backend.fixed_chunks();
        assert!(fixed <= 3, "{fixed}");
        let engine = IoEngine::from_uring(pool.clone(), backend);
        assert_eq!(engine.fixed_buffer_chunks(), fixed);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let expected: Vec<u8> = (0..8u32 << 16).map(|i| (i % 253) as u8).collect();
        let file = engine.create_new(&path).await.unwrap();
        let chunks = pool.acquire_many(8).await.unwrap();
        assert!(chunks.iter().any(|c| c.index() < fixed) || fixed == 0);
        assert!(chunks.iter().any(|c| c.index() >= 3));
        let writes = chunks
            .into_iter()
            .zip(expected.chunks(64 << 10))
            .enumerate()
            .map(|(i, (mut c, piece))| {
                c.extend_from_slice(piece);
                engine.write_at(&file, c, (i << 16) as u64)
            });
        futures::future::try_join_all(writes).await.unwrap();
        engine.fsync(&file).await.unwrap();
        drop(file);
        assert_eq!(std::fs::read(&path).unwrap(), expected);
        let file = engine.open_read(&path).await.unwrap();
        let chunks = pool.acquire_many(8).await.unwrap();
        let reads = chunks
            .into_iter()
            .enumerate()
            .map(|(i, c)| engine.read_at(&file, c, (i << 16) as u64, 64 << 10));
        let read = futures::future::try_join_all(reads).await.unwrap();
        let got: Vec<u8> = read.iter().flat_map(|c| c.as_slice().to_vec()).collect();
        assert_eq!(got, expected);
    }

    /// The whole default pool (64 MiB) is registered when the process may lock that much, and
    /// otherwise the prefix `RLIMIT_MEMLOCK` holds (scripts/test.sh also runs this crate's tests as
    /// an unprivileged user with an 8 MiB limit); never nothing while the limit holds one chunk.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn as_much_of_the_pool_as_memlock_allows_is_registered() {
        let pool = ChunkPool::new(256 << 10, 256).unwrap();
        let backend = match UringBackend::start_with(&pool, Some(usize::MAX)) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("note: io_uring unavailable, skipping: {e}");
                return;
            }
        };
        let lim = uring_sys::memlock_limits().expect("getrlimit");
        assert_eq!(lim.rlim_cur, lim.rlim_max, "the soft limit was raised to the hard one");
        let fixed = backend.fixed_chunks();
        eprintln!("memlock {} bytes: {fixed} of 256 chunks registered", lim.rlim_cur);
        if lim.rlim_cur >= 2 * (256 << 10) {
            assert!(fixed > 0, "memlock {} holds chunks, none registered", lim.rlim_cur);
        }
        if fixed < 256 && lim.rlim_cur != libc::RLIM_INFINITY {
            assert!(
                fixed as u64 * (256 << 10) <= lim.rlim_cur,
                "{fixed} chunks over the limit"
            );
        }
    }

    /// The non-fixed path (used when registration fails, e.g. `RLIMIT_MEMLOCK`) reads and writes
    /// correctly, including short reads at EOF.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unregistered_buffers_roundtrip() {
        let pool = ChunkPool::new(1 << 20, 4).unwrap();
        let backend = match UringBackend::start_with(&pool, None) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("note: io_uring unavailable, skipping: {e}");
                return;
            }
        };
        assert_eq!(backend.fixed_chunks(), 0);
        let engine = IoEngine::from_uring(pool.clone(), backend);
        assert_eq!(engine.backend(), BackendKind::Uring);
        assert!(!engine.uses_fixed_buffers());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let expected: Vec<u8> = (0..(1u32 << 20) + 5000).map(|i| (i % 251) as u8).collect();
        let file = engine.create_new(&path).await.unwrap();
        for (i, piece) in expected.chunks(1 << 20).enumerate() {
            let mut chunk = pool.acquire().await;
            chunk.extend_from_slice(piece);
            engine.write_at(&file, chunk, (i << 20) as u64).await.unwrap();
        }
        engine.fsync(&file).await.unwrap();
        drop(file);

        let file = engine.open_read(&path).await.unwrap();
        let first = engine
            .read_at(&file, pool.acquire().await, 0, usize::MAX)
            .await
            .unwrap();
        assert_eq!(first.as_slice(), &expected[..1 << 20]);
        let second = engine
            .read_at(&file, pool.acquire().await, 1 << 20, 1 << 20)
            .await
            .unwrap();
        assert_eq!(second.as_slice(), &expected[1 << 20..]);
        drop((first, second));
        assert_eq!(pool.available(), 4);
    }

    #[test]
    fn completion_handling() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let pool = ChunkPool::new(4096, 2).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = IoFile::from_std(File::create(dir.path().join("f")).unwrap());

        // A short read is continued; the filled length accumulates.
        let chunk = rt.block_on(pool.acquire());
        let (tx, _rx) = oneshot::channel();
        let op = Op::Read {
            file: file.clone(),
            chunk,
            offset: 0,
            want: 4096,
        };
        let Some((Op::Read { chunk, .. }, reply)) = complete(op, Reply::Chunk(tx), 100) else {
            panic!("short read must be resubmitted");
        };
        assert_eq!(chunk.len(), 100);
        drop(reply);

        // EOF completes with what was read.
        let (tx, mut rx) = oneshot::channel();
        let op = Op::Read {
            file: file.clone(),
            chunk,
            offset: 0,
            want: 4096,
        };
        assert!(complete(op, Reply::Chunk(tx), 0).is_none());
        let chunk = rx.try_recv().unwrap().unwrap();
        assert_eq!(chunk.len(), 100);

        // An error drops the chunk (back to the pool) before replying.
        let (tx, mut rx) = oneshot::channel();
        let op = Op::Write {
            file: file.clone(),
            chunk,
            offset: 0,
            done: 0,
        };
        assert!(complete(op, Reply::Chunk(tx), -libc::EIO).is_none());
        assert_eq!(pool.available(), 2);
        assert_eq!(rx.try_recv().unwrap().unwrap_err().raw_os_error(), Some(libc::EIO));

        // Transient errors are retried; a zero-length write is an error.
        let (tx, _rx) = oneshot::channel();
        let mut chunk = rt.block_on(pool.acquire());
        chunk.extend_from_slice(b"abc");
        let op = Op::Write {
            file: file.clone(),
            chunk,
            offset: 0,
            done: 0,
        };
        let Some((op, reply)) = complete(op, Reply::Chunk(tx), -libc::EINTR) else {
            panic!("EINTR must be retried");
        };
        drop(reply);
        let (tx, mut rx) = oneshot::channel();
        assert!(complete(op, Reply::Chunk(tx), 0).is_none());
        assert_eq!(rx.try_recv().unwrap().unwrap_err().kind(), io::ErrorKind::WriteZero);
        assert_eq!(pool.available(), 2);

        // A partial write is continued from where it stopped.
        let (tx, _rx) = oneshot::channel();
        let mut chunk = rt.block_on(pool.acquire());
        chunk.extend_from_slice(b"abcdef");
        let op = Op::Write {
            file: file.clone(),
            chunk,
            offset: 0,
            done: 0,
        };
        let Some((Op::Write { done, .. }, _)) = complete(op, Reply::Chunk(tx), 4) else {
            panic!("short write must be resubmitted");
        };
        assert_eq!(done, 4);

        // Cancelled receiver: the chunk still returns to the pool.
        let (tx, rx) = oneshot::channel();
        drop(rx);
        let op = Op::Read {
            file,
            chunk: rt.block_on(pool.acquire()),
            offset: 0,
            want: 10,
        };
        assert!(complete(op, Reply::Chunk(tx), 10).is_none());
        assert_eq!(pool.available(), 2);
    }
}
