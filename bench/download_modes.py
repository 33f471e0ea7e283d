#!/usr/bin/env python3
"""What a download costs with and without its MD5 and its fsyncs: 4 x 256 MiB objects downloaded into an
empty directory by `s3sync s3://bucket/ DIR` with the default options, `--disable-etag-verify` (no MD5 is
computed), `--no-fsync`, and both. 5 runs of each, interleaved; medians of wall time and of user+system
CPU seconds (from os.wait4 of the child). Needs a running server (scripts/start-server.sh garage) and a
release build.

    source <(scripts/start-server.sh garage)
    cargo build --release --bin s3sync && python3 bench/download_modes.py

Env: BINS="a=path,b=path" compares builds (each mode run with each, interleaved; default: the release
build); MODES="default,--no-fsync" runs a subset; UPLOAD_FLAGS="--additional-checksum-algorithm CRC64NVME
--full-object-checksum" uploads the objects with those flags (objects that carry a stored checksum); RUNS;
S5CMD=path adds s5cmd (`s5cmd cp 's3://bucket/*' DIR/`, which verifies nothing and does not fsync) as a
row. Every row also gets a durable figure: its wall time plus a `sync` right after it.
"""
import os
import shutil
import statistics
import subprocess
import tempfile
import time

import boto3

CLI = os.environ.get("S3SYNC_BIN", "target/release/s3sync")
BINS = [tuple(b.split("=", 1)) for b in os.environ.get("BINS", f"ours={CLI}").split(",")]
UPLOAD_FLAGS = os.environ.get("UPLOAD_FLAGS", "").split()
EP = os.environ["AWS_ENDPOINT_URL"]
RUNS = int(os.environ.get("RUNS", "5"))
client = boto3.client("s3", endpoint_url=EP)
WORK = tempfile.mkdtemp(prefix="s3sync-bench-download-")

MODES = [
    ("default", []),
    ("--disable-etag-verify", ["--disable-etag-verify"]),
    ("--no-fsync", ["--no-fsync"]),
    ("both", ["--disable-etag-verify", "--no-fsync"]),
]
if os.environ.get("MODES"):
    MODES = [m for m in MODES if m[0] in os.environ["MODES"].split(",")]


def run(args):
    """Wall seconds, child CPU seconds (user + system) and wall seconds including a sync afterwards."""
    os.sync()
    t0 = time.monotonic()
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{args} failed: {status}")
    os.sync()
    return wall, usage.ru_utime + usage.ru_stime, time.monotonic() - t0


def main():
    src = os.path.join(WORK, "src")
    os.makedirs(src)
    for i in range(4):
        with open(os.path.join(src, f"f{i}"), "wb") as f:
            f.write(os.urandom(256 * 1024 * 1024))
    bucket = f"dl-{time.time_ns():x}"
    client.create_bucket(Bucket=bucket)
    subprocess.run([CLI, "--target-endpoint-url", EP, "--target-force-path-style", *UPLOAD_FLAGS, src,
                    f"s3://{bucket}/"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    dst = os.path.join(WORK, "dst")
    rows = [(f"{name} {label}" if len(BINS) > 1 else label,
             [path, "--source-endpoint-url", EP, "--source-force-path-style", *flags, f"s3://{bucket}/", dst])
            for label, flags in MODES for name, path in BINS]
    if os.environ.get("S5CMD"):
        rows.append(("s5cmd", [os.environ["S5CMD"], "--endpoint-url", EP, "cp", f"s3://{bucket}/*", dst + "/"]))
    results = {row[0]: [] for row in rows}
    for _ in range(RUNS):
        for row, cmd in rows:
            shutil.rmtree(dst, ignore_errors=True)
            results[row].append(run(cmd))
    base_wall = statistics.median(w for w, _, _ in results[rows[0][0]])
    print(f"| options | wall (median) | runs | durable: + sync after (median) | CPU s (median) | MiB/s | "
          f"durable MiB/s | time / {rows[0][0]} |")
    print("|---|---|---|---|---|---|---|---|")
    for row, _ in rows:
        walls = [w for w, _, _ in results[row]]
        cpus = [c for _, c, _ in results[row]]
        durable = statistics.median(d for _, _, d in results[row])
        wall = statistics.median(walls)
        print(f"| {row} | {wall:.2f} s | {', '.join(f'{w:.2f}' for w in walls)} | {durable:.2f} s | "
              f"{statistics.median(cpus):.2f} | {1024 / wall:.0f} | {1024 / durable:.0f} | {wall / base_wall:.2f}x |")
    shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
