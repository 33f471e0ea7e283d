#!/usr/bin/env python3
"""The server's own LIST rate: how many keys per second a bucket of N keys can be listed at with C
concurrent ListObjectsV2 chains (C = 1, 2, 4, 8, 16), each chain paging through one C-th of the key
space (StartAfter at the range's start, 1,000 keys per page). The client is as thin as possible
(http.client, SigV4 via botocore's signer, the last key found by a regex, no XML parse), so the figure
is the server's bound for a listing, which the no-op benchmark (bench/noop_listing.py) is held against.
Prints wall time, pages, keys/s, the server's CPU per 1,000 keys and this script's CPU.

Needs the bucket filled by bench/noop_listing.py (same N, LAYOUT) and the server's env
(scripts/start-server.sh garage, with S3SYNC_SERVER_PID).

    N=1000000 python3 bench/list_rate.py
"""
import http.client
import os
import re
import threading
import time
import urllib.parse
from pathlib import Path

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

EP = urllib.parse.urlparse(os.environ["AWS_ENDPOINT_URL"])
N = int(os.environ.get("N", "1000000"))
LAYOUT = os.environ.get("LAYOUT", "tree")
BUCKET = os.environ.get("BUCKET", f"noop{N}{'' if LAYOUT == 'tree' else LAYOUT}")
SERVER_PID = os.environ.get("S3SYNC_SERVER_PID")
CREDS = Credentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
REGION = os.environ.get("AWS_REGION", "us-east-1")
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
LAST_KEY = re.compile(rb"<Key>([^<]*)</Key>")


def key(i):
    if LAYOUT == "flat":
        return f"data/object-{i:010}-padding-to-55-bytes--flat.bin.xy"
    return f"data/set-{i // 1000:04}/object-{i:010}-padding-to-55-bytes.bin"


def server_cpu():
    if not SERVER_PID:
        return 0.0
    f = Path(f"/proc/{SERVER_PID}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def chain(lo, hi, out):
    """Lists the keys after index lo-1 up to index hi-1; appends (pages, keys) to out."""
    conn = http.client.HTTPConnection(EP.hostname, EP.port)
    after = key(lo - 1) if lo > 0 else ""
    end = key(hi - 1)
    pages = keys = 0
    while True:
        q = {"list-type": "2", "max-keys": "1000"}
        if after:
            q["start-after"] = after
        url = f"{EP.scheme}://{EP.netloc}/{BUCKET}?{urllib.parse.urlencode(sorted(q.items()))}"
        req = AWSRequest(method="GET", url=url, headers={"X-Amz-Content-SHA256": EMPTY_SHA256})
        SigV4Auth(CREDS, "s3", REGION).add_auth(req)
        conn.request("GET", url[len(f"{EP.scheme}://{EP.netloc}"):], headers=dict(req.headers))
        body = conn.getresponse().read()
        pages += 1
        i = body.rfind(b"<Key>")
        m = LAST_KEY.match(body, i) if i >= 0 else None
        if not m:
            raise SystemExit(f"unexpected answer: {body[:300]!r}")
        last = m.group(1).decode().replace("&amp;", "&")
        keys += body.count(b"<Key>")
        if last >= end or b"<IsTruncated>false" in body:
            break
        after = last
    out.append((pages, keys))


def main():
    print(f"bucket {BUCKET}: {N} keys; 1,000 keys per page; C chains over C equal ranges")
    print("| chains C | wall s | pages | keys/s | server CPU s | server CPU s per 1,000 keys | client CPU s |")
    print("|---|---|---|---|---|---|---|")
    for c in (1, 2, 4, 8, 16):
        out = []
        threads = [threading.Thread(target=chain, args=(N * i // c, N * (i + 1) // c, out)) for i in range(c)]
        s0, t0, p0 = server_cpu(), time.monotonic(), time.process_time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall, cpu = time.monotonic() - t0, time.process_time() - p0
        srv = server_cpu() - s0
        pages, keys = sum(p for p, _ in out), sum(k for _, k in out)
        print(f"| {c} | {wall:.2f} | {pages} | {min(keys, N) / wall:,.0f} | {srv:.2f} | {srv / min(keys, N) * 1000 * 1000:.1f} ms |"
              f" {cpu:.2f} |", flush=True)


if __name__ == "__main__":
    main()
