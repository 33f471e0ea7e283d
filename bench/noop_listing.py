#!/usr/bin/env python3
"""No-op syncs over N objects (nothing to transfer: the cost is listing and diffing), side by side:
ours with sequential (--max-parallel-listings 1) and parallel (default 16) listings, the original s3sync
and rclone, each with --delete, local->S3 (the tree the bucket was filled from) and S3->S3 (a copy of
the bucket). Wall time, client CPU (user+sys, os.wait4), peak RSS (ru_maxrss) and the server's CPU
(/proc/<pid>/stat) per run; RUNS runs each, interleaved; medians and the spread. Every run must exit 0
(rclone: its exit code) and move nothing.

Needs a running server (scripts/start-server.sh garage, with S3SYNC_SERVER_PID) and a release build;
the original from scripts/bench.sh's install ($S3SYNC_CACHE/s3sync-orig/bin/s3sync), rclone on PATH.

    source <(scripts/start-server.sh garage)
    cargo build --release --bin s3sync && N=100000 python3 bench/noop_listing.py
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3

OURS = os.environ.get("S3SYNC_BIN", "target/release/s3sync")
CACHE = Path(os.environ.get("S3SYNC_CACHE", Path.home() / ".cache/s3sync"))
ORIG = os.environ.get("S3SYNC_ORIG_BIN", str(CACHE / "s3sync-orig/bin/s3sync"))
EP = os.environ["AWS_ENDPOINT_URL"]
N = int(os.environ.get("N", "100000"))
LAYOUT = os.environ.get("LAYOUT", "tree")
# NOOP_DELETE=both|yes|no: run each tool with --delete, without, or both (rclone sync always deletes; its
# no-delete form is `rclone copy`).
DELETE = os.environ.get("NOOP_DELETE", "yes")
# DIRECTIONS: comma-separated, of local->S3, S3->S3, S3->local (the last into a copy of the tree whose
# files are dated 2030, so that no tool finds the bucket's objects newer).
DIRECTIONS = os.environ.get("DIRECTIONS", "local->S3,S3->S3,S3->local").split(",")
ONLY = os.environ.get("ONLY", "")  # comma-separated substrings of tool names to run (default: all)
RUNS = int(os.environ.get("RUNS", "3"))
SERVER_PID = os.environ.get("S3SYNC_SERVER_PID")
client = boto3.client("s3", endpoint_url=EP)
# This script's own settings are not passed on: s3sync reads options from the environment too.
OWN = {"N", "RUNS", "LAYOUT", "NOOP_DELETE", "DIRECTIONS", "ONLY", "TREE", "BUCKET", "COPY", "POPULATE_ONLY"}


def tool_env():
    return {k: v for k, v in os.environ.items() if k not in OWN}


def server_cpu():
    if not SERVER_PID:
        return 0.0
    f = Path(f"/proc/{SERVER_PID}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def run(cmd, env):
    s0, t0 = server_cpu(), time.monotonic()
    # Through /usr/bin/time: a child forked from this Python process would report Python's own RSS
    # as its peak (ru_maxrss counts the time before exec).
    p = subprocess.Popen(["/usr/bin/time", "-f", "peak-rss-kib %M"] + cmd, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{cmd[0]} exited {code}: {err[-2000:]}")
    rss = int(err.rsplit("peak-rss-kib", 1)[1].split()[0])
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss": rss / 1024,
            "server": server_cpu() - s0}


def key(i):
    """The i-th key: 55 bytes, in prefixes of 1,000 (LAYOUT=tree) or all in one prefix (LAYOUT=flat)."""
    if LAYOUT == "flat":
        return f"data/object-{i:010}-padding-to-55-bytes--flat.bin.xy"
    return f"data/set-{i // 1000:04}/object-{i:010}-padding-to-55-bytes.bin"


def populate(tree, bucket, copy):
    if not tree.exists():
        partial = tree.with_name(tree.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        for i in range(N):
            k = key(i)
            assert len(k) == 55, k
            if i % 1000 == 0:
                (partial / k).parent.mkdir(parents=True, exist_ok=True)
            (partial / k).write_bytes(b"x")
        partial.rename(tree)
    for b in (bucket, copy):
        try:
            client.create_bucket(Bucket=b)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
    env = tool_env()
    subprocess.run([OURS, "--worker-size", "64", str(tree), f"s3://{bucket}/"], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run([OURS, "--worker-size", "64", "--server-side-copy", f"s3://{bucket}/", f"s3://{copy}/"],
                   env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def download_tree(tree):
    """A copy of `tree` with every file dated 2030: the S3->local target, already up to date."""
    down = tree.with_name(tree.name + "-down")
    if not down.exists():
        partial = down.with_name(down.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        subprocess.run(["cp", "-a", str(tree), str(partial)], check=True)
        subprocess.run(f"find '{partial}' -type f -print0 | xargs -0 touch -d 2030-01-01", shell=True,
                       check=True)
        partial.rename(down)
    return down


def commands(tree, bucket, copy, work):
    s3_env = tool_env()
    tools = {
        "ours, sequential listing": ([OURS, "--max-parallel-listings", "1"], s3_env),
        "ours (parallel listing, default)": ([OURS], s3_env),
    }
    if os.access(ORIG, os.X_OK):
        orig_env = {k: v for k, v in os.environ.items() if k.startswith("AWS_") or k in ("PATH", "HOME")}
        tools["original s3sync 1.62.4"] = ([ORIG], orig_env)
    rclone = shutil.which("rclone")
    if rclone:
        conf = Path(work) / "rclone.conf"
        conf.touch()
        env = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
        env["RCLONE_CONFIG"] = str(conf)
        for k, v in {"TYPE": "s3", "PROVIDER": "Other", "ENDPOINT": EP, "REGION": os.environ["AWS_REGION"],
                     "ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
                     "SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"], "FORCE_PATH_STYLE": "true"}.items():
            env[f"RCLONE_CONFIG_G_{k}"] = v
        tools["rclone (--size-only)"] = ([rclone, "--size-only"], env)
    if ONLY:
        tools = {n: t for n, t in tools.items() if any(o in n for o in ONLY.split(","))}
    deletes = {"yes": [True], "no": [False], "both": [True, False]}[DELETE]
    out = []
    for name, (base, env) in tools.items():
        for delete in deletes:
            ends = {"local->S3": (str(tree), f"s3://{bucket}/"),
                    "S3->S3": (f"s3://{bucket}/", f"s3://{copy}/"),
                    "S3->local": (f"s3://{bucket}/", str(tree.with_name(tree.name + "-down")))}
            for direction in DIRECTIONS:
                src, dst = ends[direction]
                if "rclone" in name:
                    conv = lambda u: u.replace("s3://", "g:").rstrip("/") if u.startswith("s3://") else u
                    cmd = base[:1] + ["sync" if delete else "copy"] + base[1:] + [conv(src), conv(dst)]
                else:
                    ep = []  # the original refuses endpoint options for a local end
                    for side, url in (("source", src), ("target", dst)):
                        if url.startswith("s3://") and "original" in name:
                            ep += [f"--{side}-endpoint-url", EP, f"--{side}-force-path-style"]
                    cmd = base + ep + (["--delete"] if delete else []) + [src, dst]
                out.append((name, direction + (" --delete" if delete else ""), cmd, env))
    return out


def main():
    work = tempfile.mkdtemp(prefix="s3sync-bench-noop-")
    tag = "" if LAYOUT == "tree" else LAYOUT
    tree = Path(os.environ.get("TREE", f"/tmp/s3sync-noop-tree-{N}{tag}"))
    bucket = os.environ.get("BUCKET", f"noop{N}{tag}")
    copy = os.environ.get("COPY", f"noop{N}{tag}copy")
    if "BUCKET" not in os.environ:  # BUCKET/COPY: already filled from TREE
        populate(tree, bucket, copy)
    if "S3->local" in DIRECTIONS:
        download_tree(tree)
    if os.environ.get("POPULATE_ONLY"):
        return
    cmds = commands(tree, bucket, copy, work)
    results = {(n, d): [] for n, d, _, _ in cmds}
    for rep in range(RUNS):
        for n, d, cmd, env in (cmds if rep % 2 == 0 else list(reversed(cmds))):
            r = run(cmd, env)
            print(f"{n} | {d} | {r}", file=sys.stderr, flush=True)
            results[(n, d)].append(r)
    shape = "one flat prefix" if LAYOUT == "flat" else f"{max(1, N // 1000)} prefixes of 1,000"
    print(f"N = {N} objects (55-byte keys, 1 byte each, {shape}), {RUNS} runs, medians (min-max of wall)",
          flush=True)
    print("| tool | direction | wall s | client CPU s | peak RSS MiB | server CPU s |")
    print("|---|---|---|---|---|---|")
    for (n, d), rs in results.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        lo, hi = min(r["wall"] for r in rs), max(r["wall"] for r in rs)
        print(f"| {n} | {d} | {med['wall']:.2f} ({lo:.2f}-{hi:.2f}) | {med['cpu']:.2f} | {med['rss']:.0f} |"
              f" {med['server']:.2f} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
