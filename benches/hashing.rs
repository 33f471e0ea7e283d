//! Hashing throughput of the one-pass hasher (MD5 for ETags) against the machine's limits.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use s3sync::checksum::PartHasher;

fn hashing(c: &mut Criterion) {
    let data = vec![0x5au8; 8 * 1024 * 1024];
    let mut g = c.benchmark_group("hash");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_with_input(BenchmarkId::new("md5", "8MiB"), &data, |b, d| {
        b.iter(|| {
            let mut h = PartHasher::new();
            for chunk in d.chunks(256 * 1024) {
                h.update(chunk);
            }
            h.finish()
        })
    });
    g.finish();
}

criterion_group!(benches, hashing);
criterion_main!(benches);
