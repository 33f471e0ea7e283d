//! Hashing throughput of the one-pass hashers (MD5 for ETags, each additional checksum, and MD5 plus
//! one checksum together as an upload with `--additional-checksum-algorithm` computes them), and of
//! MD5 over several streams at once in lanes (the parts of many objects, `lanes/N`: N streams of
//! 8 MiB each, throughput counted over all of them).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use s3sync::checksum::additional::{ChecksumAlgorithm, ChecksumHasher};
use s3sync::checksum::lanes::hash_together;
use s3sync::checksum::md5_state::Md5State;
use s3sync::checksum::PartHasher;

const ALGOS: [ChecksumAlgorithm; 5] = [
    ChecksumAlgorithm::Sha256,
    ChecksumAlgorithm::Sha1,
    ChecksumAlgorithm::Crc32,
    ChecksumAlgorithm::Crc32c,
    ChecksumAlgorithm::Crc64Nvme,
];

fn hashing(c: &mut Criterion) {
    let data: Vec<u8> = (0..8 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let mut g = c.benchmark_group("hash");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(20);
    g.bench_with_input(BenchmarkId::new("md5", "8MiB"), &data, |b, d| {
        b.iter(|| {
            let mut h = PartHasher::new();
            for chunk in d.chunks(256 * 1024) {
                h.update(chunk);
            }
            h.finish()
        })
    });
    for algo in ALGOS {
        g.bench_with_input(BenchmarkId::new(algo.as_str(), "8MiB"), &data, |b, d| {
            b.iter(|| {
                let mut h = ChecksumHasher::new(algo);
                for chunk in d.chunks(256 * 1024) {
                    h.update(chunk);
                }
                h.finish()
            })
        });
        g.bench_with_input(
            BenchmarkId::new(format!("md5+{}", algo.as_str()), "8MiB"),
            &data,
            |b, d| {
                b.iter(|| {
                    let mut h = PartHasher::with_checksum(Some(algo));
                    for chunk in d.chunks(256 * 1024) {
                        h.update(chunk);
                    }
                    h.finish_all()
                })
            },
        );
    }
    g.finish();
    let mut g = c.benchmark_group("md5");
    g.sample_size(10);
    for streams in [1usize, 2, 4, 8, 16] {
        g.throughput(Throughput::Bytes((data.len() * streams) as u64));
        g.bench_with_input(BenchmarkId::new("lanes", streams), &data, |b, d| {
            b.iter(|| {
                let mut states = vec![Md5State::new(); streams];
                for chunk in d.chunks(256 * 1024) {
                    let mut batch: Vec<(&mut Md5State, Vec<&[u8]>)> =
                        states.iter_mut().map(|s| (s, vec![chunk])).collect();
                    hash_together(&mut batch);
                }
                states.into_iter().map(Md5State::finish).collect::<Vec<_>>()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, hashing);
criterion_main!(benches);
