//! Local I/O throughput and CPU per GiB of the two backends on the same file: reads alone, through
//! the page cache and with `O_DIRECT` (`read/…/buffered`, `read/…/direct`), read + MD5 (what an
//! upload does) and read + write (what a copy through the pool does), warm page cache by default,
//! cold with `S3SYNC_BENCH_COLD=1` (the file's pages are dropped with posix_fadvise before each pass).
//!
//! Small files: 2,000 files of 10 KiB read whole (what an upload of a small file does) and written
//! whole then renamed (what a download does, without the fsync; to tmpfs, see `small_bench`), 64 at
//! a time, by the whole-file operations (one io_uring chain per file) against the step-by-step calls
//! they replace; and the same calls made plainly, one file at a time on one thread (`…/floor`): the
//! file system's own cost per file, the bound under both backends, with each backend's distance to it.
//!
//! `cargo bench --bench io` — criterion reports throughput; a CPU-per-GiB (per-file) line per case follows.

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

/// Reads the file as PARALLEL ranges in parallel, each hashed with MD5 chunk by chunk when `md5`;
/// without it, what the reads themselves cost (through the page cache, or with `O_DIRECT` for a
/// file opened with `open_read_direct`).
async fn read_ranges(io: &IoEngine, file: &IoFile, md5: bool) {
    let range = FILE_SIZE / PARALLEL;
    let tasks = (0..PARALLEL).map(|r| async move {
        let mut h = md5.then(PartHasher::new);
        let mut pos = r * range;
        while pos < (r + 1) * range {
            let c = io.pool().acquire().await;
            let c = io.read_at(file, c, pos, CHUNK).await?;
            if let Some(h) = h.as_mut() {
                h.update(c.as_slice());
            }
            pos += c.len() as u64;
        }
        Ok::<_, std::io::Error>(h.map(PartHasher::finish))
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
        let direct = rt.block_on(io.open_read_direct(&path, false)).expect("open");
        let mut reads = vec![("buffered", &file)];
        if direct.is_direct() {
            reads.push(("direct", &direct));
        }
        for (how, f) in &reads {
            g.bench_function(format!("read/{name}/{how}"), |b| {
                b.iter(|| {
                    drop_cache(&path);
                    rt.block_on(read_ranges(&io, f, false))
                })
            });
        }
        g.bench_function(format!("read+md5/{name}"), |b| {
            b.iter(|| {
                drop_cache(&path);
                rt.block_on(read_ranges(&io, &file, true))
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
        let mut cases = vec![("read+md5", 4), ("read+write", 4), ("read/buffered", 4)];
        if direct.is_direct() {
            cases.push(("read/direct", 4));
        }
        for (case, passes) in cases {
            let c0 = cpu_seconds();
            let t0 = Instant::now();
            for _ in 0..passes {
                drop_cache(&path);
                if case == "read/buffered" {
                    rt.block_on(read_ranges(&io, &file, false));
                } else if case == "read/direct" {
                    rt.block_on(read_ranges(&io, &direct, false));
                } else if case == "read+md5" {
                    rt.block_on(read_ranges(&io, &file, true));
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

const SMALL_FILES: usize = 2000;
const SMALL_SIZE: usize = 10 * 1024;
const SMALL_PARALLEL: usize = 64;

fn small_fixture() -> PathBuf {
    let dir = std::env::temp_dir().join("s3sync-bench-io").join("small");
    std::fs::create_dir_all(&dir).expect("bench dir");
    let body: Vec<u8> = (0..SMALL_SIZE as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
        .collect();
    for i in 0..SMALL_FILES {
        let p = dir.join(format!("f{i:05}"));
        if std::fs::metadata(&p).map(|m| m.len()).ok() != Some(SMALL_SIZE as u64) {
            std::fs::write(&p, &body).expect("write fixture");
        }
    }
    dir
}

/// How a small file is read or written.
#[derive(Clone, Copy, Debug)]
enum SmallCase {
    /// `read_file`: one operation (one chain on io_uring).
    ReadWhole,
    /// `open_read` + `read_at` + close, as an upload read a small file before.
    ReadSteps,
    /// `write_file` (no fsync) + `rename`.
    WriteWhole,
    /// `create_new` + `set_len` + `write_at` + close + `rename`, as a download wrote one before.
    WriteSteps,
}

/// File `i`'s source, temporary and final paths.
fn small_paths(dir: &Path, out: &Path, i: usize) -> (PathBuf, PathBuf, PathBuf) {
    (
        dir.join(format!("f{i:05}")),
        out.join(format!(".f{i:05}.tmp")),
        out.join(format!("f{i:05}")),
    )
}

async fn small_files(io: &IoEngine, dir: &Path, out: &Path, case: SmallCase) {
    use futures::stream::{self, StreamExt, TryStreamExt};
    stream::iter(0..SMALL_FILES)
        .map(|i| async move {
            let (src, tmp, dst) = small_paths(dir, out, i);
            let chunk = io.pool().acquire().await;
            match case {
                SmallCase::ReadWhole => {
                    io.read_file(&src, chunk).await?;
                }
                SmallCase::ReadSteps => {
                    let f = io.open_read(&src).await?;
                    let len = f.len()? as usize;
                    io.read_at(&f, chunk, 0, len).await?;
                }
                SmallCase::WriteWhole => {
                    let mut chunk = chunk;
                    chunk.extend_from_slice(&[7u8; SMALL_SIZE]);
                    io.write_file(&tmp, chunk, false).await?;
                    io.rename(&tmp, &dst).await?;
                }
                SmallCase::WriteSteps => {
                    let mut chunk = chunk;
                    chunk.extend_from_slice(&[7u8; SMALL_SIZE]);
                    let f = io.create_new(&tmp).await?;
                    io.set_len(&f, SMALL_SIZE as u64).await?;
                    io.write_at(&f, chunk, 0).await?;
                    drop(f);
                    io.rename(&tmp, &dst).await?;
                }
            }
            Ok::<_, std::io::Error>(())
        })
        .buffer_unordered(SMALL_PARALLEL)
        .try_collect::<()>()
        .await
        .expect("small files");
}

/// The file system's own cost of a small file, the bound under both backends: the same calls as
/// `read-whole` (open, one read, close) or `write-whole` (create, write, close, rename), made one
/// file at a time on the calling thread, with no runtime, thread hand-off or ring in between.
fn small_files_floor(dir: &Path, out: &Path, case: SmallCase) {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let mut buf = vec![0u8; CHUNK];
    for i in 0..SMALL_FILES {
        let (src, tmp, dst) = small_paths(dir, out, i);
        match case {
            SmallCase::ReadWhole => {
                let mut f = std::fs::File::open(&src).expect("open");
                let n = f.read(&mut buf).expect("read");
                assert_eq!(n, SMALL_SIZE);
            }
            SmallCase::WriteWhole => {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o644)
                    .open(&tmp)
                    .expect("create");
                f.write_all(&[7u8; SMALL_SIZE]).expect("write");
                drop(f);
                std::fs::rename(&tmp, &dst).expect("rename");
            }
            SmallCase::ReadSteps | SmallCase::WriteSteps => unreachable!("the floor is measured for whole files"),
        }
    }
}

/// The median CPU per file (µs) and the median files per second of `runs` (CPU s per file, files per
/// second), which are left sorted by CPU.
fn medians(runs: &mut [(f64, f64)]) -> (f64, f64) {
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rates: Vec<f64> = runs.iter().map(|r| r.1).collect();
    rates.sort_by(f64::total_cmp);
    (runs[runs.len() / 2].0 * 1e6, rates[rates.len() / 2])
}

fn small_bench(c: &mut Criterion) {
    let dir = small_fixture();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // The written files go to tmpfs (`/dev/shm`, or `S3SYNC_BENCH_WRITE_DIR`): on ext4, creating
    // files within minutes of deleting many (the previous pass's) takes the inode allocator's slow
    // path (`recently_deleted`: about 1 ms of kernel CPU per file here), which would hide what is
    // measured, the cost of the calls. Every pass writes into a new directory; all go at the end.
    let write_root = std::env::var_os("S3SYNC_BENCH_WRITE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| match Path::new("/dev/shm").is_dir() {
            true => PathBuf::from("/dev/shm"),
            false => std::env::temp_dir(),
        });
    let trash = write_root.join(format!("s3sync-bench-small-out-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&trash);
    let mut g = c.benchmark_group("small-files");
    g.throughput(Throughput::Elements(SMALL_FILES as u64));
    g.sample_size(10);
    let cases = [
        ("read-whole", SmallCase::ReadWhole),
        ("read-steps", SmallCase::ReadSteps),
        ("write-whole", SmallCase::WriteWhole),
        ("write-steps", SmallCase::WriteSteps),
    ];
    let engines: Vec<(String, IoEngine)> = [BackendKind::Uring, BackendKind::Tokio]
        .into_iter()
        .filter_map(|kind| match engine(kind) {
            Some(io) => Some((format!("{kind:?}").to_lowercase(), io)),
            None => {
                eprintln!("{kind:?} backend unavailable here; skipped");
                None
            }
        })
        .collect();
    let pass = std::cell::Cell::new(0u32);
    let fresh_out = || {
        pass.set(pass.get() + 1);
        let out = trash.join(pass.get().to_string());
        std::fs::create_dir_all(&out).expect("out dir");
        out
    };
    for (name, io) in &engines {
        for (label, case) in cases {
            g.bench_function(format!("{label}/{name}"), |b| {
                b.iter_batched(
                    fresh_out,
                    |out| rt.block_on(small_files(io, &dir, &out, case)),
                    criterion::BatchSize::PerIteration,
                )
            });
        }
    }
    // CPU per file (user + system, whole process): every case of every backend in turn, 7 rounds,
    // so that drift of the machine spreads over all of them; the median round of each is reported.
    let mut samples: Vec<Vec<(f64, f64)>> = vec![Vec::new(); engines.len() * cases.len()];
    // The whole-file cases also run as plain calls (`small_files_floor`): (index in `cases`, rounds).
    let mut floor: Vec<(usize, Vec<(f64, f64)>)> = cases
        .iter()
        .enumerate()
        .filter(|(_, (_, case))| matches!(case, SmallCase::ReadWhole | SmallCase::WriteWhole))
        .map(|(k, _)| (k, Vec::new()))
        .collect();
    for _ in 0..7 {
        for (e, (_, io)) in engines.iter().enumerate() {
            for (k, (_, case)) in cases.iter().enumerate() {
                let out = fresh_out();
                let (c0, t0) = (cpu_seconds(), Instant::now());
                rt.block_on(small_files(io, &dir, &out, *case));
                let files = SMALL_FILES as f64;
                samples[e * cases.len() + k].push(((cpu_seconds() - c0) / files, files / t0.elapsed().as_secs_f64()));
            }
        }
        for (k, runs) in &mut floor {
            let out = fresh_out();
            let (c0, t0) = (cpu_seconds(), Instant::now());
            small_files_floor(&dir, &out, cases[*k].1);
            let files = SMALL_FILES as f64;
            runs.push(((cpu_seconds() - c0) / files, files / t0.elapsed().as_secs_f64()));
        }
    }
    let mut cpu_lines = Vec::new();
    let mut cpu_medians = vec![0.0; samples.len()];
    for (e, (name, io)) in engines.iter().enumerate() {
        for (k, (label, _)) in cases.iter().enumerate() {
            let runs = &mut samples[e * cases.len() + k];
            let (cpu, rate) = medians(runs);
            cpu_medians[e * cases.len() + k] = cpu;
            let rounds: Vec<String> = runs.iter().map(|r| format!("{:.1}", r.0 * 1e6)).collect();
            cpu_lines.push(format!(
                "{label}/{name}: median {cpu:.1} µs CPU per file (rounds: {}), median {rate:.0} files/s, file chains: {}",
                rounds.join(" "),
                io.file_chains()
            ));
        }
    }
    // The bound: what the file system alone costs per file, and how far each backend is above it.
    for (k, runs) in &mut floor {
        let (bound, rate) = medians(runs);
        let above: Vec<String> = engines
            .iter()
            .enumerate()
            .map(|(e, (name, _))| {
                let cpu = cpu_medians[e * cases.len() + *k];
                format!(
                    "{name} {cpu:.1} µs = {:.2}× the floor (+{:.1} µs)",
                    cpu / bound,
                    cpu - bound
                )
            })
            .collect();
        cpu_lines.push(format!(
            "{}/floor (plain calls, one file at a time, one thread): median {bound:.1} µs CPU per file, \
             median {rate:.0} files/s; {}",
            cases[*k].0,
            above.join(", ")
        ));
    }
    g.finish();
    let _ = std::fs::remove_dir_all(&trash);
    for l in cpu_lines {
        println!("cpu: {l}");
    }
}

criterion_group!(benches, io_bench, small_bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
