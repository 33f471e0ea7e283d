#!/usr/bin/env bash
# First-run demo: no cloud account needed. Builds the release binary, starts a local moto S3 server,
# uploads a sample folder (nested dirs, a name with a space, a 20 MiB file that goes multipart) to
# s3://demo/sample/, downloads it back and checks the copy is byte-identical (diff -r).
#
# Usage: scripts/demo.sh
# Env:
#   TMPDIR            the sample and restored folders go to $TMPDIR/s3sync-demo (default /tmp); kept afterwards
#   S3SYNC_CACHE      see install-servers.sh
#   CARGO_TARGET_DIR  where cargo puts the binary (default target)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CACHE="${S3SYNC_CACHE:-$HOME/.cache/s3sync}"
DEMO="${TMPDIR:-/tmp}/s3sync-demo"
BIN="${CARGO_TARGET_DIR:-target}/release/s3sync"
log() { echo "[demo] $*" >&2; }

log "building the release binary"
cargo build --release
scripts/install-servers.sh moto

exports="$(scripts/start-server.sh moto)"
eval "$exports"
trap 'scripts/stop-server.sh "$S3SYNC_SERVER_DIR" || true' EXIT

log "making a sample folder in $DEMO/sample"
rm -rf "$DEMO"
mkdir -p "$DEMO/sample/docs/nested/deeper" "$DEMO/restore"
echo "hello from s3sync" >"$DEMO/sample/hello.txt"
printf 'line %d\n' $(seq 1 1000) >"$DEMO/sample/docs/lines.txt"
echo "a file name with a space" >"$DEMO/sample/docs/my notes.txt"
echo "nested" >"$DEMO/sample/docs/nested/deeper/leaf.txt"
head -c 20M /dev/urandom >"$DEMO/sample/random-20MiB.bin"

log "creating bucket demo"
"$CACHE/moto-venv/bin/python" - <<'EOF'
import os
import boto3
from botocore.config import Config

s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"],
                  config=Config(s3={"addressing_style": "path"}))
s3.create_bucket(Bucket="demo")
EOF

log "upload: $DEMO/sample -> s3://demo/sample/"
"$BIN" --target-endpoint-url "$AWS_ENDPOINT_URL" --target-force-path-style "$DEMO/sample" s3://demo/sample/
log "download: s3://demo/sample/ -> $DEMO/restore"
"$BIN" --source-endpoint-url "$AWS_ENDPOINT_URL" --source-force-path-style s3://demo/sample/ "$DEMO/restore"

diff -r "$DEMO/sample" "$DEMO/restore"
files=$(find "$DEMO/sample" -type f | wc -l)
mib=$(find "$DEMO/sample" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%.1f", s / 1048576 }')
echo "demo OK: $files files ($mib MiB) round-tripped byte-identical through $AWS_ENDPOINT_URL (moto); see $DEMO"
