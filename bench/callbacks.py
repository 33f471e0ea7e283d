#!/usr/bin/env python3
"""Cost of Lua callbacks: a trivial filter script over a 100,000-object no-op sync, and a preprocess
script over a 10,000 x 10 KiB upload, each against the same run without a script (3 runs each,
alternating). Needs a running server (scripts/start-server.sh garage) and a release build.

    source <(scripts/start-server.sh garage) && cargo build --release && python3 bench/callbacks.py
"""
import os
import random
import subprocess
import sys
import tempfile
import time

import boto3

BIN = os.environ.get("S3SYNC_BIN", "target/release/s3sync")
EP = os.environ["AWS_ENDPOINT_URL"]
client = boto3.client("s3", endpoint_url=EP)
WORK = tempfile.mkdtemp(prefix="s3sync-bench-callbacks-")


def tree(name, count, size, fanout):
    root = os.path.join(WORK, name)
    for i in range(count):
        d = os.path.join(root, f"d{i % fanout:04d}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i:07d}"), "wb") as f:
            f.write(os.urandom(size))
    return root


def script(name, body):
    p = os.path.join(WORK, name)
    with open(p, "w") as f:
        f.write(body)
    return p


def bucket():
    b = "cb%x" % random.getrandbits(40)
    client.create_bucket(Bucket=b)
    return b


def run(args):
    t = time.time()
    r = subprocess.run([BIN, "--target-endpoint-url", EP, "--target-force-path-style"] + args,
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(r.stderr[-2000:])
    return time.time() - t


def median(v):
    return sorted(v)[len(v) // 2]


many = tree("many", 100_000, 1, 1000)
small = tree("small", 10_000, 10 * 1024, 100)
flt = script("filter.lua", "function filter(o) return o.size >= 0 end\n")
pre = script("pre.lua", 'function preprocess_callback(s, u) u.metadata["origin"] = s.key return true, u end\n')

b = bucket()
run([many, f"s3://{b}/"])
res = {"no-op": [], "no-op + filter script": [], "upload": [], "upload + preprocess script": []}
for _ in range(3):
    res["no-op"].append(run([many, f"s3://{b}/"]))
    res["no-op + filter script"].append(run(["--filter-callback-lua-script", flt, many, f"s3://{b}/"]))
    res["upload"].append(run([small, f"s3://{bucket()}/"]))
    res["upload + preprocess script"].append(
        run(["--preprocess-callback-lua-script", pre, small, f"s3://{bucket()}/"]))
for k, v in res.items():
    print(f"{k:28s} median {median(v):6.2f} s  runs {', '.join(f'{x:.2f}' for x in sorted(v))}")
