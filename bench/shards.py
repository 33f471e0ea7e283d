#!/usr/bin/env python3
"""Sharded-run benchmark: an upload of N small files and the no-op rerun, as one process and as jobs of
2 and 4 shards (all shards of a job run at once, as an Indexed Job would start them), in hash and range
mode, against a Garage started for the run. Reports wall time of the job, the ListObjectsV2 requests
the server counted (its own metrics) for the whole job and per shard, and peak RSS per shard.

Usage: scripts/bench-shards.sh [--objects N] [--noop-only-objects M]
Prints a Markdown section for BENCHMARKS.md on stdout.
"""
import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release" / "s3sync"


def log(*a):
    print("[bench-shards]", *a, file=sys.stderr, flush=True)


def start_garage():
    out = subprocess.run([str(ROOT / "scripts" / "start-server.sh"), "garage"], check=True,
                         capture_output=True, text=True).stdout
    env = {}
    for line in out.splitlines():
        m = re.match(r"export (\w+)=(.*)", line)
        if m:
            env[m.group(1)] = m.group(2).strip("'\"")
    return env


def list_requests(env):
    port = int(env["AWS_ENDPOINT_URL"].rsplit(":", 1)[1]) + 3
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    m = re.search(r'api_s3_request_counter\{api_endpoint="ListObjectsV2"\} (\d+)', text)
    return int(m.group(1)) if m else 0


def base_args(env):
    e = env["AWS_ENDPOINT_URL"]
    return [str(BIN), "--target-endpoint-url", e, "--source-endpoint-url", e,
            "--target-force-path-style", "--source-force-path-style", "-q"]


def shard_args(env, shards, index, mode, plan):
    """The command line of shard `index` of a job (no shard options for a job of one)."""
    args = base_args(env)
    if shards > 1:
        args += ["--shard-count", str(shards), "--shard-index", str(index)]
        if mode == "range":
            args += ["--shard-plan", plan]
    return args


def run_job(env, shards, mode, plan, src, dst):
    """All shards at once; returns (wall seconds, [peak RSS MiB per shard], exit codes)."""
    procs = []
    t0 = time.monotonic()
    for i in range(shards):
        args = shard_args(env, shards, i, mode, plan) + [src, dst]
        procs.append(subprocess.Popen(args, env={**os.environ, **env}, stdout=subprocess.DEVNULL))
    rss, codes = {}, {}
    while len(codes) < len(procs):
        pid, status, usage = os.wait4(-1, 0)
        for i, p in enumerate(procs):
            if p.pid == pid:
                rss[i] = usage.ru_maxrss / 1024
                codes[i] = os.waitstatus_to_exitcode(status)
                p.returncode = codes[i]
    wall = time.monotonic() - t0
    return wall, [rss[i] for i in range(shards)], [codes[i] for i in range(shards)]


def per_shard_lists(env, shards, mode, plan, src, dst):
    """ListObjectsV2 requests of each shard alone (a no-op run of that shard)."""
    out = []
    for i in range(shards):
        before = list_requests(env)
        subprocess.run(shard_args(env, shards, i, mode, plan) + [src, dst], env={**os.environ, **env}, check=True, stdout=subprocess.DEVNULL)
        out.append(list_requests(env) - before)
    return out


def make_plan(env, shards, src, dst, workdir):
    path = os.path.join(workdir, f"plan-{shards}.json")
    text = subprocess.run(base_args(env) + ["--make-shard-plan", str(shards), src, dst], check=True,
                          env={**os.environ, **env}, capture_output=True, text=True).stdout
    pathlib.Path(path).write_text(text)
    return path


def create_bucket(env, name):
    venv = pathlib.Path(os.environ.get("S3SYNC_CACHE", pathlib.Path.home() / ".cache/s3sync")) / "moto-venv"
    subprocess.run([str(venv / "bin" / "aws"), "--endpoint-url", env["AWS_ENDPOINT_URL"], "s3", "mb",
                    f"s3://{name}"], check=True, env={**os.environ, **env}, stdout=subprocess.DEVNULL)


def machine():
    cpu = "?"
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} cores ({cpu}), {os.uname().sysname} {os.uname().release}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=100_000)
    ap.add_argument("--noop-only", action="store_true",
                    help="upload once with one process (not a row), then time only the no-op jobs")
    args = ap.parse_args()
    env = start_garage()
    state = env["S3SYNC_SERVER_DIR"]
    rows = []
    try:
        with tempfile.TemporaryDirectory() as work:
            src = os.path.join(work, "src")
            log(f"writing {args.objects} files")
            for d in range(100):
                os.makedirs(os.path.join(src, f"d{d:03}"), exist_ok=True)
            for i in range(args.objects):
                with open(os.path.join(src, f"d{i % 100:03}", f"f{i:07}"), "wb") as f:
                    f.write(b"x" * 100)
            shared = None
            if args.noop_only:
                shared = f"s3://bench-noop-{int(time.time())}/"
                create_bucket(env, shared[5:-1])
                log("populating", shared)
                t0 = time.monotonic()
                wall, rss, codes = run_job(env, 1, "-", None, src, shared)
                log(f"populated in {wall:.0f} s (exit {codes})")
            for shards in (1, 2, 4):
                for mode in (["hash", "range"] if shards > 1 else ["-"]):
                    if shared:
                        dst = shared
                    else:
                        bucket = f"bench-{shards}-{mode.strip('-') or 'one'}-{int(time.time())}"
                        create_bucket(env, bucket)
                        dst = f"s3://{bucket}/"
                    plan = make_plan(env, shards, src, dst, work) if mode == "range" else None
                    l0 = list_requests(env)
                    if shared:
                        up_wall, up_rss, up_codes = float("nan"), [0.0], []
                    else:
                        up_wall, up_rss, up_codes = run_job(env, shards, mode, plan, src, dst)
                    l1 = list_requests(env)
                    noop_wall, noop_rss, noop_codes = run_job(env, shards, mode, plan, src, dst)
                    l2 = list_requests(env)
                    per = per_shard_lists(env, shards, mode, plan, src, dst)
                    row = dict(shards=shards, mode=mode, up_wall=up_wall, up_rss=max(up_rss),
                               up_lists=l1 - l0, noop_wall=noop_wall, noop_rss=max(noop_rss),
                               noop_lists=l2 - l1, per_shard_lists=per, codes=up_codes + noop_codes)
                    log(json.dumps(row))
                    rows.append(row)
    finally:
        subprocess.run([str(ROOT / "scripts" / "stop-server.sh"), state], check=False)
    what = "no-op" if args.noop_only else "upload and no-op"
    print(f"### Sharded runs: {what}, {args.objects:,} objects of 100 B, Garage on the same machine\n")
    flag = " --noop-only" if args.noop_only else ""
    print(f"Machine: {machine()}. Command: `scripts/bench-shards.sh --objects {args.objects}{flag}`; one run each, "
          "all shards of a job started at once; list requests are Garage's own ListObjectsV2 counter "
          "(the upload's listings are of the target only: its source is a local directory).\n")
    print("| shards | mode | upload wall | upload list requests | no-op wall | no-op list requests "
          "| list requests per shard (no-op, alone) | peak RSS per shard | exit codes |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['shards']} | {r['mode']} | {r['up_wall']:.1f} s | {r['up_lists']} | {r['noop_wall']:.2f} s "
              f"| {r['noop_lists']} | {', '.join(map(str, r['per_shard_lists']))} "
              f"| {max(r['up_rss'], r['noop_rss']):.0f} MiB | {sorted(set(r['codes']))} |")


if __name__ == "__main__":
    main()
