//! Behaviour of `IoEngine` on every backend available here (tokio always; io_uring on Linux
//! unless the kernel/sandbox refuses it — set `S3SYNC_REQUIRE_URING=1` to make that a failure).

use std::path::Path;
use std::time::Duration;

use s3sync_io::{BackendKind, Bytes, ChunkPool, IoEngine, IoError, IoFile};
use tokio::time::timeout;

const LONG: Duration = Duration::from_secs(60);

/// Deterministic test data: byte at absolute file position `pos` for stream `seed`.
fn byte_at(seed: u64, pos: u64) -> u8 {
    let x = pos.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    (x >> 56) as u8 ^ pos as u8
}

fn data(seed: u64, start: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| byte_at(seed, start + i)).collect()
}

/// One engine per backend available here, each over its own fresh pool.
fn engines(chunk_size: usize, chunk_count: usize) -> Vec<IoEngine> {
    let mut out =
        vec![IoEngine::with_backend(ChunkPool::new(chunk_size, chunk_count).unwrap(), BackendKind::Tokio).unwrap()];
    let pool = ChunkPool::new(chunk_size, chunk_count).unwrap();
    match IoEngine::with_backend(pool, BackendKind::Uring) {
        Ok(engine) => {
            assert_eq!(engine.backend(), BackendKind::Uring);
            out.push(engine);
        }
        Err(e) => {
            if cfg!(target_os = "linux") && std::env::var_os("S3SYNC_REQUIRE_URING").is_some() {
                panic!("io_uring required but unavailable: {e}");
            }
            eprintln!("note: io_uring backend not tested here: {e}");
        }
    }
    out
}

async fn wait_all_returned(pool: &ChunkPool) {
    let deadline = tokio::time::Instant::now() + LONG;
    while pool.available() != pool.capacity() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "chunks leaked: {} of {} available",
            pool.available(),
            pool.capacity()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn write_bytes(engine: &IoEngine, file: &IoFile, offset: u64, bytes: &[u8]) {
    let mut pos = 0;
    while pos < bytes.len() {
        let mut chunk = engine.pool().acquire().await;
        let n = chunk.extend_from_slice(&bytes[pos..]);
        let chunk = engine.write_at(file, chunk, offset + pos as u64).await.unwrap();
        assert_eq!(chunk.len(), n, "write_at must return the chunk unchanged");
        pos += n;
    }
}

async fn read_all(engine: &IoEngine, path: &Path) -> Vec<u8> {
    let file = engine.open_read(path).await.unwrap();
    let mut out = Vec::new();
    let mut offset = 0u64;
    loop {
        let chunk = engine.pool().acquire().await;
        let chunk = engine.read_at(&file, chunk, offset, usize::MAX).await.unwrap();
        if chunk.is_empty() {
            return out;
        }
        out.extend_from_slice(chunk.as_slice());
        offset += chunk.len() as u64;
    }
}

#[test]
fn default_backend_selection() {
    let engine = IoEngine::new(ChunkPool::new(4096, 2).unwrap()).unwrap();
    let forced_tokio = std::env::var("S3SYNC_IO_BACKEND").is_ok_and(|v| v == "tokio");
    if !cfg!(target_os = "linux") || forced_tokio {
        assert_eq!(engine.backend(), BackendKind::Tokio);
    }
    if cfg!(target_os = "linux") && !forced_tokio {
        let uring_ok = IoEngine::with_backend(ChunkPool::new(4096, 1).unwrap(), BackendKind::Uring).is_ok();
        let expected = if uring_ok {
            BackendKind::Uring
        } else {
            BackendKind::Tokio
        };
        assert_eq!(engine.backend(), expected);
    }
    assert_eq!(engine.pool().capacity(), 2);
    let dbg = format!("{engine:?}");
    assert!(dbg.contains("IoEngine"), "{dbg}");
}

#[test]
fn uring_uses_fixed_buffers_when_available() {
    for engine in engines(4096, 4) {
        if engine.backend() == BackendKind::Tokio {
            assert!(!engine.uses_fixed_buffers());
        } else {
            eprintln!("io_uring fixed buffers: {}", engine.uses_fixed_buffers());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_and_read_at_offsets() {
    for engine in engines(4096, 8) {
        let kind = engine.backend();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = engine.create_new(&path).await.unwrap();
        let total = 5 * 4096 + 123;
        engine.set_len(&file, total as u64).await.unwrap();
        assert_eq!(file.len().unwrap(), total as u64);
        let expected = data(1, 0, total);
        // Out of order, unaligned pieces.
        let pieces = [(3 * 4096 + 7, total), (0, 1000), (4096, 3 * 4096 + 7), (1000, 4096)];
        for (start, end) in pieces {
            write_bytes(&engine, &file, start as u64, &expected[start..end]).await;
        }
        engine.fsync(&file).await.unwrap();
        drop(file);

        assert_eq!(read_all(&engine, &path).await, expected, "{kind:?}");

        // Reads at arbitrary offsets and lengths.
        let file = engine.open_read(&path).await.unwrap();
        for (offset, len) in [(0usize, 1usize), (1, 4095), (5000, 100), (4096, 4096), (10, 0)] {
            let chunk = engine.pool().acquire().await;
            let chunk = engine.read_at(&file, chunk, offset as u64, len).await.unwrap();
            assert_eq!(chunk.as_slice(), &expected[offset..offset + len], "{kind:?}");
        }
        // The chunk is cleared before reading.
        let mut chunk = engine.pool().acquire().await;
        chunk.extend_from_slice(b"stale");
        let chunk = engine.read_at(&file, chunk, 2, 3).await.unwrap();
        assert_eq!(chunk.as_slice(), &expected[2..5]);
        drop(chunk);
        wait_all_returned(engine.pool()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_last_chunk_and_eof() {
    for engine in engines(4096, 4) {
        let kind = engine.backend();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let expected = data(2, 0, 10_000);
        std::fs::write(&path, &expected).unwrap();
        let file = engine.open_read(&path).await.unwrap();
        assert_eq!(file.len().unwrap(), 10_000);

        let mut lens = Vec::new();
        for offset in [0u64, 4096, 8192, 10_000, 20_000] {
            let chunk = engine.pool().acquire().await;
            let chunk = engine.read_at(&file, chunk, offset, 4096).await.unwrap();
            let start = (offset as usize).min(10_000);
            assert_eq!(chunk.as_slice(), &expected[start..start + chunk.len()]);
            lens.push(chunk.len());
        }
        assert_eq!(lens, vec![4096, 4096, 1808, 0, 0], "{kind:?}");

        // A read crossing EOF stops there.
        let chunk = engine.pool().acquire().await;
        let chunk = engine.read_at(&file, chunk, 9_990, 4096).await.unwrap();
        assert_eq!(chunk.as_slice(), &expected[9_990..]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_byte_file() {
    for engine in engines(4096, 2) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty");
        let file = engine.create_new(&path).await.unwrap();
        // Writing an empty chunk is a no-op.
        let chunk = engine.write_at(&file, engine.pool().acquire().await, 0).await.unwrap();
        assert!(chunk.is_empty());
        drop(chunk);
        engine.fsync(&file).await.unwrap();
        drop(file);
        let file = engine.open_read(&path).await.unwrap();
        assert_eq!(file.len().unwrap(), 0);
        assert!(file.is_empty().unwrap());
        let chunk = engine
            .read_at(&file, engine.pool().acquire().await, 0, 4096)
            .await
            .unwrap();
        assert!(chunk.is_empty());
        drop(chunk);
        assert!(read_all(&engine, &path).await.is_empty());
        wait_all_returned(engine.pool()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_operations() {
    for engine in engines(4096, 2) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        let file = engine.create_new(&path).await.unwrap();
        write_bytes(&engine, &file, 0, b"hello").await;

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode & !0o644, 0, "mode {mode:o}");
        }

        // create_new refuses to overwrite.
        let err = engine.create_new(&path).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);

        // Write-only: reading fails, and the chunk goes back to the pool.
        let err = engine
            .read_at(&file, engine.pool().acquire().await, 0, 10)
            .await
            .unwrap_err();
        assert!(err.raw_os_error().is_some(), "{err:?}");
        assert_eq!(engine.pool().available(), engine.pool().capacity());

        // Read-only: writing fails, and the chunk goes back to the pool.
        let ro = engine.open_read(&path).await.unwrap();
        let mut chunk = engine.pool().acquire().await;
        chunk.extend_from_slice(b"nope");
        assert!(engine.write_at(&ro, chunk, 0).await.is_err());
        assert_eq!(engine.pool().available(), engine.pool().capacity());

        engine.set_len(&file, 3).await.unwrap();
        engine.fsync(&file).await.unwrap();
        drop(file);

        let to = dir.path().join("b");
        engine.rename(&path, &to).await.unwrap();
        assert!(!path.exists());
        assert_eq!(std::fs::read(&to).unwrap(), b"hel");

        assert_eq!(
            engine.open_read(&path).await.unwrap_err().kind(),
            std::io::ErrorKind::NotFound
        );
        // Out-of-range offsets are rejected up front.
        let ro = engine.open_read(&to).await.unwrap();
        let err = engine
            .read_at(&ro, engine.pool().acquire().await, u64::MAX - 1, 10)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        wait_all_returned(engine.pool()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_from_another_pool_works() {
    for engine in engines(4096, 2) {
        let other = ChunkPool::new(8192, 1).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = engine.create_new(&path).await.unwrap();
        let expected = data(3, 0, 8000);
        let mut chunk = other.acquire().await;
        chunk.extend_from_slice(&expected);
        let chunk = engine.write_at(&file, chunk, 0).await.unwrap();
        drop(file);
        let file = engine.open_read(&path).await.unwrap();
        let chunk = engine.read_at(&file, chunk, 0, 8192).await.unwrap();
        assert_eq!(chunk.as_slice(), &expected[..]);
        drop(chunk);
        assert_eq!(other.available(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_file_64mib_concurrent_parts() {
    const CHUNK: usize = 1 << 20;
    const TOTAL: usize = 64 << 20;
    const PARTS: usize = TOTAL / CHUNK;
    for engine in engines(CHUNK, 16) {
        let kind = engine.backend();
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("big.part");
        let fin = dir.path().join("big");
        let file = engine.create_new(&tmp).await.unwrap();
        engine.set_len(&file, TOTAL as u64).await.unwrap();

        // Write all parts concurrently; the 16-chunk pool throttles them.
        let writers: Vec<_> = (0..PARTS)
            .map(|part| {
                let engine = engine.clone();
                let file = file.clone();
                tokio::spawn(async move {
                    let offset = (part * CHUNK) as u64;
                    let mut chunk = engine.pool().acquire().await;
                    chunk.extend_from_slice(&data(4, offset, CHUNK));
                    engine.write_at(&file, chunk, offset).await.unwrap();
                })
            })
            .collect();
        for w in writers {
            timeout(LONG, w).await.unwrap().unwrap();
        }
        engine.fsync(&file).await.unwrap();
        drop(file);
        engine.rename(&tmp, &fin).await.unwrap();

        // Read back concurrently, the whole file in one go.
        let file = engine.open_read(&fin).await.unwrap();
        assert_eq!(file.len().unwrap(), TOTAL as u64);
        let readers: Vec<_> = (0..PARTS)
            .map(|part| {
                let engine = engine.clone();
                let file = file.clone();
                tokio::spawn(async move {
                    let offset = (part * CHUNK) as u64;
                    let chunk = engine.pool().acquire().await;
                    let chunk = engine.read_at(&file, chunk, offset, CHUNK).await.unwrap();
                    assert_eq!(chunk.len(), CHUNK);
                    chunk.as_slice() == data(4, offset, CHUNK).as_slice()
                })
            })
            .collect();
        for r in readers {
            assert!(timeout(LONG, r).await.unwrap().unwrap(), "{kind:?}: data mismatch");
        }
        wait_all_returned(engine.pool()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_mix_of_many_tasks() {
    for engine in engines(16 * 1024, 32) {
        let kind = engine.backend();
        let dir = tempfile::tempdir().unwrap();
        let tasks: Vec<_> = (0..64u64)
            .map(|t| {
                let engine = engine.clone();
                let path = dir.path().join(format!("f{t}"));
                tokio::spawn(async move {
                    // Each task writes its own file in a few unevenly sized parts, some frozen
                    // into Bytes along the way, then reads it back in different-sized pieces.
                    let size = 1 + (t as usize * 7919) % (100 * 1024);
                    let expected = data(t, 0, size);
                    let file = engine.create_new(&path).await.unwrap();
                    let mut offset = 0usize;
                    let mut rebuilt = Vec::new();
                    while offset < size {
                        let mut chunk = engine.pool().acquire().await;
                        let n = chunk.extend_from_slice(&expected[offset..]);
                        let chunk = engine.write_at(&file, chunk, offset as u64).await.unwrap();
                        if t % 3 == 0 {
                            // Never hold a chunk while waiting for another (that could
                            // deadlock the pool across tasks): use and drop it right here.
                            let frozen: Bytes = chunk.freeze();
                            rebuilt.extend_from_slice(&frozen);
                        }
                        offset += n;
                    }
                    if t % 3 == 0 {
                        assert_eq!(rebuilt, expected);
                    }
                    if t % 2 == 0 {
                        engine.fsync(&file).await.unwrap();
                    }
                    drop(file);
                    let file = engine.open_read(&path).await.unwrap();
                    let step = 1000 + (t as usize % 5) * 3000;
                    let mut got = Vec::with_capacity(size);
                    let mut off = 0u64;
                    loop {
                        let chunk = engine.pool().acquire().await;
                        let chunk = engine.read_at(&file, chunk, off, step).await.unwrap();
                        if chunk.is_empty() {
                            break;
                        }
                        off += chunk.len() as u64;
                        got.extend_from_slice(chunk.as_slice());
                    }
                    got == expected
                })
            })
            .collect();
        for task in tasks {
            assert!(timeout(LONG, task).await.unwrap().unwrap(), "{kind:?}");
        }
        wait_all_returned(engine.pool()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_read_returns_chunk_after_completion() {
    const CHUNK: usize = 4 << 20;
    for engine in engines(CHUNK, 4) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, data(5, 0, 4 * CHUNK)).unwrap();
        let file = engine.open_read(&path).await.unwrap();
        for round in 0..20 {
            let tasks: Vec<_> = (0..4)
                .map(|i| {
                    let engine = engine.clone();
                    let file = file.clone();
                    tokio::spawn(async move {
                        let chunk = engine.pool().acquire().await;
                        engine
                            .read_at(&file, chunk, (i * CHUNK) as u64, CHUNK)
                            .await
                            .map(|c| c.len())
                    })
                })
                .collect();
            if round % 2 == 1 {
                tokio::task::yield_now().await;
            }
            for t in &tasks {
                t.abort();
            }
            for t in tasks {
                let _ = t.await;
            }
            wait_all_returned(engine.pool()).await;
        }
        // The pool is fully usable afterwards.
        let chunks = engine.pool().acquire_many(4).await.unwrap();
        assert_eq!(chunks.len(), 4);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_engine_with_operations_in_flight() {
    for engine in engines(1 << 20, 8) {
        let pool = engine.pool().clone();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, data(6, 0, 8 << 20)).unwrap();
        let file = engine.open_read(&path).await.unwrap();
        let mut chunks = pool.acquire_many(8).await.unwrap();
        let futures: Vec<_> = (0..8)
            .map(|i| {
                let engine = engine.clone();
                let file = file.clone();
                let chunk = chunks.pop().unwrap();
                tokio::spawn(async move {
                    let chunk = engine.read_at(&file, chunk, (i << 20) as u64, 1 << 20).await.unwrap();
                    chunk.as_slice() == data(6, (i << 20) as u64, 1 << 20).as_slice()
                })
            })
            .collect();
        drop(engine);
        for f in futures {
            assert!(timeout(LONG, f).await.unwrap().unwrap());
        }
        wait_all_returned(&pool).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_cycles_do_not_leak() {
    for engine in engines(4096, 4) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let expected = data(7, 0, 4096 * 4);
        std::fs::write(&path, &expected).unwrap();
        let file = engine.open_read(&path).await.unwrap();
        let tasks: Vec<_> = (0..4usize)
            .map(|t| {
                let engine = engine.clone();
                let file = file.clone();
                let expected = expected.clone();
                tokio::spawn(async move {
                    for i in 0..750usize {
                        let off = ((t + i) % 4) * 4096 + i % 100;
                        let chunk = engine.pool().acquire().await;
                        let chunk = engine.read_at(&file, chunk, off as u64, 1000).await.unwrap();
                        assert_eq!(chunk.as_slice(), &expected[off..off + 1000]);
                        if i % 2 == 0 {
                            drop(chunk.freeze());
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            timeout(LONG, t).await.unwrap().unwrap();
        }
        wait_all_returned(engine.pool()).await;
    }
}

#[test]
fn uring_unavailable_error_is_descriptive() {
    // Only checks the error shape; on Linux with io_uring this simply succeeds.
    if let Err(e) = IoEngine::with_backend(ChunkPool::new(4096, 1).unwrap(), BackendKind::Uring) {
        assert!(matches!(e, IoError::UringUnavailable(_)));
        assert!(e.to_string().contains("io_uring"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_all_handles_while_cancelled_operations_are_in_flight() {
    for engine in engines(4 << 20, 8) {
        let pool = engine.pool().clone();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, data(8, 0, 32 << 20)).unwrap();
        let file = engine.open_read(&path).await.unwrap();
        for _ in 0..10 {
            let tasks: Vec<_> = (0..8u64)
                .map(|i| {
                    let engine = engine.clone();
                    let file = file.clone();
                    tokio::spawn(async move {
                        let chunk = engine.pool().acquire().await;
                        let _ = engine.read_at(&file, chunk, i << 22, 4 << 20).await;
                    })
                })
                .collect();
            tokio::task::yield_now().await;
            for t in &tasks {
                t.abort();
            }
            for t in tasks {
                let _ = t.await;
            }
        }
        // Every engine handle is gone now; the ring thread must finish what is in flight,
        // return the chunks and exit.
        drop(engine);
        wait_all_returned(&pool).await;
    }
}

#[test]
fn handles_are_thread_safe() {
    fn assert_traits<T: Send + Sync + Clone + 'static>() {}
    assert_traits::<IoEngine>();
    assert_traits::<IoFile>();
    assert_traits::<ChunkPool>();
    fn assert_send<T: Send + 'static>(_: &T) {}
    let engine = IoEngine::with_backend(ChunkPool::new(4096, 1).unwrap(), BackendKind::Tokio).unwrap();
    let file = IoFile::from_std(tempfile::tempfile().unwrap());
    // The futures can be spawned on a multi-thread runtime.
    let e = engine.clone();
    assert_send(&async move {
        let chunk = e.pool().acquire().await;
        let chunk = e.read_at(&file, chunk, 0, 1).await.unwrap();
        e.write_at(&file, chunk, 0).await.unwrap();
        e.fsync(&file).await.unwrap();
    });
}

/// Whole small files are read in one operation (one io_uring chain): every byte, the length of the
/// file when it fits, a full chunk when it does not; a missing file is `NotFound`; and no direct
/// descriptor or chunk is leaked over many more files than the ring has slots, read concurrently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_file_reads_whole_small_files() {
    const CHUNK: usize = 64 << 10;
    for engine in engines(CHUNK, 16) {
        if engine.backend() == BackendKind::Uring {
            assert!(engine.file_chains(), "a 6.x kernel runs whole-file chains on the ring");
        }
        let dir = tempfile::tempdir().unwrap();
        let sizes = [0usize, 1, 4095, 4096, 10 << 10, CHUNK - 1, CHUNK, CHUNK + 1];
        for (i, len) in sizes.iter().enumerate() {
            std::fs::write(dir.path().join(format!("f{i}")), data(i as u64, 0, *len)).unwrap();
        }
        for (i, len) in sizes.iter().enumerate() {
            let mut chunk = engine.pool().acquire().await;
            chunk.extend_from_slice(b"stale bytes are cleared first");
            let got = engine
                .read_file(&dir.path().join(format!("f{i}")), chunk)
                .await
                .unwrap();
            let want = (*len).min(CHUNK);
            assert_eq!(got.len(), want, "{:?} size {len}", engine.backend());
            assert!(
                got.as_slice() == data(i as u64, 0, want).as_slice(),
                "size {len}: bytes differ"
            );
        }
        let missing = engine
            .read_file(&dir.path().join("missing"), engine.pool().acquire().await)
            .await
            .unwrap_err();
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound, "{missing}");
        // 600 files (more than the ring's 255 slots), 16 at a time (the pool's chunks).
        let many = 600;
        for i in 0..many {
            std::fs::write(dir.path().join(format!("m{i}")), data(1000 + i, 0, 100 + i as usize)).unwrap();
        }
        let reads = (0..many).map(|i| {
            let engine = engine.clone();
            let path = dir.path().join(format!("m{i}"));
            async move {
                let chunk = engine.pool().acquire().await;
                let got = engine.read_file(&path, chunk).await.unwrap();
                got.as_slice() == data(1000 + i, 0, 100 + i as usize).as_slice()
            }
        });
        let all = timeout(LONG, futures::future::join_all(reads)).await.unwrap();
        assert!(all.iter().all(|ok| *ok), "{:?}: some file read wrong", engine.backend());
        wait_all_returned(engine.pool()).await;
    }
}

/// A whole small file is created, written, made durable and closed in one operation: the bytes and
/// mode land; an existing file is never replaced (and keeps its bytes); a missing directory is
/// `NotFound`; many files at once reuse the ring's slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_file_creates_whole_small_files() {
    use std::os::unix::fs::PermissionsExt;
    const CHUNK: usize = 64 << 10;
    for engine in engines(CHUNK, 16) {
        let dir = tempfile::tempdir().unwrap();
        for (i, len) in [0usize, 1, 10 << 10, CHUNK].into_iter().enumerate() {
            for durable in [false, true] {
                let path = dir.path().join(format!("f{i}-{durable}"));
                let mut chunk = engine.pool().acquire().await;
                chunk.extend_from_slice(&data(i as u64, 0, len));
                engine.write_file(&path, chunk, durable).await.unwrap();
                assert!(std::fs::read(&path).unwrap() == data(i as u64, 0, len), "{path:?}");
                let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode & !0o022, 0o644 & !0o022, "{path:?}: mode {mode:o}");
            }
        }
        let existing = dir.path().join("existing");
        std::fs::write(&existing, b"keep me").unwrap();
        let mut chunk = engine.pool().acquire().await;
        chunk.extend_from_slice(b"overwrite");
        let e = engine.write_file(&existing, chunk, true).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "{e}");
        assert_eq!(std::fs::read(&existing).unwrap(), b"keep me");
        let mut chunk = engine.pool().acquire().await;
        chunk.extend_from_slice(b"x");
        let e = engine
            .write_file(&dir.path().join("no-such-dir/f"), chunk, false)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
        let writes = (0..600u64).map(|i| {
            let engine = engine.clone();
            let path = dir.path().join(format!("m{i}"));
            async move {
                let mut chunk = engine.pool().acquire().await;
                chunk.extend_from_slice(&data(i, 0, 50 + i as usize));
                engine.write_file(&path, chunk, i % 2 == 0).await.unwrap();
                std::fs::read(&path).unwrap() == data(i, 0, 50 + i as usize)
            }
        });
        let all = timeout(LONG, futures::future::join_all(writes)).await.unwrap();
        assert!(
            all.iter().all(|ok| *ok),
            "{:?}: some file written wrong",
            engine.backend()
        );
        wait_all_returned(engine.pool()).await;
        // rename replaces the target, on the ring too.
        engine
            .rename(&dir.path().join("m1"), &dir.path().join("m2"))
            .await
            .unwrap();
        assert!(std::fs::read(dir.path().join("m2")).unwrap() == data(1, 0, 51));
        assert!(!dir.path().join("m1").exists());
        let e = engine
            .rename(&dir.path().join("m1"), &dir.path().join("m3"))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
    }
}

/// A whole-file write whose caller is dropped (Ctrl-C, a cancelled transfer) leaves no file behind,
/// whenever the drop lands: before the chain runs, while it runs, or just after it completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_write_file_leaves_nothing() {
    for engine in engines(64 << 10, 8) {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..200u32 {
            let path = dir.path().join(format!("t{round}"));
            let task = {
                let engine = engine.clone();
                let path = path.clone();
                tokio::spawn(async move {
                    let mut chunk = engine.pool().acquire().await;
                    chunk.extend_from_slice(&[7u8; 40 << 10]);
                    engine.write_file(&path, chunk, round % 2 == 0).await
                })
            };
            for _ in 0..(round % 7) {
                tokio::task::yield_now().await;
            }
            task.abort();
            let finished = matches!(task.await, Ok(Ok(())));
            wait_all_returned(engine.pool()).await;
            // The ring may still be finishing the chain: give it time, then look.
            tokio::time::sleep(Duration::from_millis(2)).await;
            assert_eq!(
                path.exists(),
                finished,
                "{:?} round {round}: a file exists only if the write was delivered",
                engine.backend()
            );
        }
    }
}

/// Reads through `O_DIRECT` return what buffered reads return: whole chunks, a part of a chunk in
/// the middle of the file (the block-sized read is cut to what was asked), the short last chunk and
/// nothing past the end; an unaligned offset goes through the buffered descriptor. A file whose first
/// page is cached is not opened with `O_DIRECT` when that is asked. On a file system without
/// `O_DIRECT` (tmpfs) every read is buffered, and the same holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_reads_return_what_buffered_reads_return() {
    const CHUNK: usize = 64 << 10;
    for engine in engines(CHUNK, 8) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let len = 5 * CHUNK + 1234;
        let bytes = data(7, 0, len);
        std::fs::write(&path, &bytes).unwrap();
        let cached = engine.open_read_direct(&path, true).await.unwrap();
        if cfg!(target_os = "linux") {
            assert!(!cached.is_direct(), "{:?}: just written, so cached", engine.backend());
        }
        let file = engine.open_read_direct(&path, false).await.unwrap();
        if !file.is_direct() {
            eprintln!("note: no O_DIRECT on {}: buffered reads only", dir.path().display());
        }
        let cases: [(u64, usize); 7] = [
            (0, CHUNK),
            (CHUNK as u64, CHUNK),
            (2 * CHUNK as u64, 5000),         // a part of a chunk: 5000 bytes, not 8192
            (5 * CHUNK as u64, CHUNK),        // the last, short chunk
            (5 * CHUNK as u64 + 4096, CHUNK), // past the end of the file
            (len as u64 + 4096, CHUNK),       // far past the end
            (3 * CHUNK as u64 + 100, CHUNK),  // unaligned: buffered
        ];
        for (offset, want) in cases {
            let chunk = engine.pool().acquire().await;
            let got = engine.read_at(&file, chunk, offset, want).await.unwrap();
            let start = (offset as usize).min(len);
            let end = (start + want).min(len);
            assert!(
                got.as_slice() == &bytes[start..end],
                "{:?} direct={} at {offset} for {want}: {} bytes, want {}",
                engine.backend(),
                file.is_direct(),
                got.len(),
                end - start
            );
        }
        drop(file);
        wait_all_returned(engine.pool()).await;
    }
}
