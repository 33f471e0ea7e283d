#!/usr/bin/env python3
"""The ingest library against the CLI on the same data: 10,000 x 10 KiB files and 4 x 256 MiB files
uploaded into an empty bucket, by `s3sync DIR s3://bucket/` and by `examples/ingest_files.rs`
(Engine::put_file, 64 files at once, the CLI's default worker count). 3 runs each, alternating; medians.
Needs a running server (scripts/start-server.sh garage) and release builds.

    source <(scripts/start-server.sh garage)
    cargo build --release --bin s3sync --example ingest_files && python3 bench/ingest.py
"""
import os
import statistics
import subprocess
import tempfile
import time

import boto3

CLI = os.environ.get("S3SYNC_BIN", "target/release/s3sync")
LIB = os.environ.get("INGEST_BIN", "target/release/examples/ingest_files")
EP = os.environ["AWS_ENDPOINT_URL"]
client = boto3.client("s3", endpoint_url=EP)
WORK = tempfile.mkdtemp(prefix="s3sync-bench-ingest-")


def tree(name, count, size, fanout):
    root = os.path.join(WORK, name)
    for i in range(count):
        d = os.path.join(root, f"d{i % fanout:04d}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i:07d}"), "wb") as f:
            f.write(os.urandom(size))
    return root


def fresh_bucket():
    name = f"ingest-{time.time_ns():x}"
    client.create_bucket(Bucket=name)
    return name


def timed(cmd):
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t0


def main():
    cases = [
        ("10,000 x 10 KiB", tree("small", 10_000, 10 * 1024, 100)),
        ("4 x 256 MiB", tree("large", 4, 256 * 1024 * 1024, 1)),
    ]
    print(f"| data | CLI (s3sync DIR s3://b/) | library (Engine::put_file x 64) | library / CLI |")
    print(f"|---|---|---|---|")
    for label, root in cases:
        cli, lib = [], []
        for _ in range(3):
            b = fresh_bucket()
            cli.append(timed([CLI, "--target-endpoint-url", EP, "--target-force-path-style", root, f"s3://{b}/"]))
            b = fresh_bucket()
            lib.append(timed([LIB, root, b, "64"]))
        c, l = statistics.median(cli), statistics.median(lib)
        print(f"| {label} | {c:.2f} s ({', '.join(f'{x:.2f}' for x in cli)}) "
              f"| {l:.2f} s ({', '.join(f'{x:.2f}' for x in lib)}) | {l / c:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
