//! Local I/O throughput and CPU per GiB of the two backends on the same file: read + MD5 (what an
//! upload does) and read + write (what a copy through the pool does), warm page cache by default,
//! cold with `S3SYNC_BENCH_COLD=1` (the file's pages are dropped with posix_fadvise before each pass).
//!
//! `cargo bench --bench io` — criterion reports throughput; a CPU-per-GiB line per case follows.

use criterion::{criterion_group, Criterion, Throughput};
use futures::future::try_join_all;
use s3sync::checksum::PartHasher;
use s3sync_io::{BackendKind, ChunkPool, IoEngine, IoFile};
use std::path::{Path, PathBuf};
use std::time::Instant;

const FILE_SIZE: u64 = 256 * 1024 * 1024;
const CHUNK: usize = 256 * 1024;
const PARALLEL: u64 = 8;

fn fixture() -> PathBuf {
    let dir = std::env::temp_dir().join("s3sync-bench-io");
    std::fs::create_dir_all(&dir).expect("bench dir");
    let path = dir.join("input.bin");
    if std::fs::metadata(&path).map(|m| m.len()).ok() != Some(FILE_SIZE) {
        let block: Vec<u8> = (0..1024 * 1024u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
            .collect();
        let mut f = std::fs::File::create(&path).expect("create fixture");
        for _ in 0..FILE_SIZE / block.len() as u64 {
            std::io::Write::write_all(&mut f, &block).expect("write fixture");
        }
    }
    path
}

fn drop_cache(path: &Path) {
    if std::env::var("S3SYNC_BENCH_COLD").is_ok_and(|v| v == "1") {
        if let Ok(f) = std::fs::File::open(path) {
            use std::os::fd::AsRawFd;
            // SAFETY: fadvise on a valid open descriptor; it only drops clean cached pages.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        }
    }
}

fn engine(kind: BackendKind) -> Option<IoEngine> {
    let pool = ChunkPool::new(CHUNK, 256).ok()?;
    IoEngine::with_backend(pool, kind).ok()
}

/// Reads the file as PARALLEL ranges in parallel, each hashed with MD5 chunk by chunk.
async fn read_md5(io: &IoEngine, file: &IoFile) {
    let range = FILE_SIZE / PARALLEL;
    let tasks = (0..PARALLEL).map(|r| async move {
        let mut h = PartHasher::new();
        let mut pos = r * range;
        while pos < (r + 1) * range {
            let c = io.pool().acquire().await;
            let c = io.read_at(file, c, pos, CHUNK).await?;
            h.update(c.as_slice());
            pos += c.len() as u64;
        }
        Ok::<_, std::io::Error>(h.finish())
    });
    try_join_all(tasks).await.expect("read");
}

/// Copies the file through pool chunks: read at an offset, write at the same offset.
async fn read_write(io: &IoEngine, file: &IoFile, out: &IoFile) {
    let range = FILE_SIZE / PARALLEL;
    let tasks = (0..PARALLEL).map(|r| async move {
        let mut pos = r * range;
        while pos < (r + 1) * range {
            let c = io.pool().acquire().await;
            let c = io.read_at(file, c, pos, CHUNK).await?;
            let n = c.len() as u64;
            io.write_at(out, c, pos).await?;
            pos += n;
        }
        Ok::<_, std::io::Error>(())
    });
    try_join_all(tasks).await.expect("copy");
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

fn io_bench(c: &mut Criterion) {
    let path = fixture();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("local-io");
    g.throughput(Throughput::Bytes(FILE_SIZE));
    g.sample_size(10);
    let mut cpu_lines = Vec::new();
    for kind in [BackendKind::Uring, BackendKind::Tokio] {
        let Some(io) = engine(kind) else {
            eprintln!("{kind:?} backend unavailable here; skipped");
            continue;
        };
        let name = format!("{kind:?}").to_lowercase();
        let file = rt.block_on(io.open_read(&path)).expect("open");
        g.bench_function(format!("read+md5/{name}"), |b| {
            b.iter(|| {
                drop_cache(&path);
                rt.block_on(read_md5(&io, &file))
            })
        });
        let out_path = path.with_file_name(format!("out-{name}.bin"));
        g.bench_function(format!("read+write/{name}"), |b| {
            b.iter(|| {
                drop_cache(&path);
                let _ = std::fs::remove_file(&out_path);
                let out = rt.block_on(io.create_new(&out_path)).expect("create");
                rt.block_on(read_write(&io, &file, &out))
            })
        });
        // CPU per GiB over a fixed number of passes (user + system, whole process).
        for (case, passes) in [("read+md5", 4), ("read+write", 4)] {
            let c0 = cpu_seconds();
            let t0 = Instant::now();
            for _ in 0..passes {
                drop_cache(&path);
                if case == "read+md5" {
                    rt.block_on(read_md5(&io, &file));
                } else {
                    let _ = std::fs::remove_file(&out_path);
                    let out = rt.block_on(io.create_new(&out_path)).expect("create");
                    rt.block_on(read_write(&io, &file, &out));
                }
            }
            let gib = (FILE_SIZE * passes) as f64 / (1u64 << 30) as f64;
            cpu_lines.push(format!(
                "{case}/{name}: {:.3} CPU s per GiB, {:.0} MiB/s wall, fixed buffers: {}",
                (cpu_seconds() - c0) / gib,
                gib * 1024.0 / t0.elapsed().as_secs_f64(),
                io.uses_fixed_buffers()
            ));
        }
        let _ = std::fs::remove_file(&out_path);
    }
    g.finish();
    for l in cpu_lines {
        println!("cpu: {l}");
    }
}

criterion_group!(benches, io_bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
