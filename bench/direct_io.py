#!/usr/bin/env python3
"""Uploads read through the page cache against uploads read with O_DIRECT (`--direct-io`), cold and
warm: the 4 x 256 MiB files of the macro benchmark's `large` dataset are uploaded to a fresh prefix by
`s3sync DIR s3://bucket/prefix/`, with `--direct-io never` and `--direct-io auto` (O_DIRECT for the
files of 64 MiB or more that are not cached), each run cold (the files' pages dropped with
posix_fadvise first) or warm (read once first). RUNS runs of each, interleaved; medians of wall time,
of client CPU (user + system, os.wait4) and of how much the page cache grew during the run
(`Cached:` in /proc/meminfo: what the run pushed into memory that other programs might need).

    source <(scripts/start-server.sh garage)
    cargo build --release --bin s3sync && python3 bench/direct_io.py
"""
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CLI = os.environ.get("S3SYNC_BIN", "target/release/s3sync")
EP = os.environ["AWS_ENDPOINT_URL"]
RUNS = int(os.environ.get("RUNS", "5"))
DATA = Path(os.environ.get("DATA", Path.home() / ".cache/s3sync/bench-data/large"))


def cached_kib() -> int:
    for line in open("/proc/meminfo"):
        if line.startswith("Cached:"):
            return int(line.split()[1])
    return 0


def files():
    return sorted(p for p in DATA.rglob("*") if p.is_file())


def drop(paths):
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm(paths):
    for p in paths:
        with open(p, "rb") as f:
            while f.read(8 << 20):
                pass


def run(args):
    t0 = time.monotonic()
    c0 = cached_kib()
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    grew = (cached_kib() - c0) / 1024
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{args} failed: {p.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, grew


def main():
    paths = files()
    total = sum(p.stat().st_size for p in paths)
    if not paths:
        sys.exit(f"no files under {DATA} (bench/run.py makes them)")
    bucket = f"dio-{time.time_ns():x}"
    make_bucket(bucket)
    rows = [(f"{mode} {direct}", mode, direct) for mode in ("cold", "warm") for direct in ("never", "auto")]
    results = {r[0]: [] for r in rows}
    n = 0
    for _ in range(RUNS):
        for label, mode, direct in rows:
            n += 1
            drop(paths) if mode == "cold" else warm(paths)
            results[label].append(run([CLI, "--target-endpoint-url", EP, "--target-force-path-style",
                                       "--direct-io", direct, str(DATA), f"s3://{bucket}/r{n}/"]))
    print(f"{len(paths)} files, {total / (1 << 20):.0f} MiB; {RUNS} runs of each, medians")
    print("| page cache | --direct-io | wall s (median) | runs | client CPU s (median) | MiB/s | page cache grew, MiB |")
    print("|---|---|---|---|---|---|---|")
    for label, mode, direct in rows:
        walls = [w for w, _, _ in results[label]]
        wall = statistics.median(walls)
        cpu = statistics.median(c for _, c, _ in results[label])
        grew = statistics.median(g for _, _, g in results[label])
        print(f"| {mode} | {direct} | {wall:.2f} | {', '.join(f'{w:.2f}' for w in walls)} | {cpu:.2f} | "
              f"{total / (1 << 20) / wall:.0f} | {grew:.0f} |")


def make_bucket(bucket):
    """CreateBucket through boto3 when importable, else through the tool's own test venv."""
    code = ("import boto3,os,sys;boto3.client('s3',endpoint_url=os.environ['AWS_ENDPOINT_URL'])"
            ".create_bucket(Bucket=sys.argv[1])")
    for py in (sys.executable, str(Path.home() / ".cache/s3sync/moto-venv/bin/python")):
        if subprocess.run([py, "-c", code, bucket], stderr=subprocess.DEVNULL).returncode == 0:
            return
    sys.exit("cannot create the bucket: no boto3 (scripts/install-servers.sh moto makes a venv with it)")


if __name__ == "__main__":
    main()
