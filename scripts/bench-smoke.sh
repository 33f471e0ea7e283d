#!/usr/bin/env bash
# CI smoke test of the benchmark harness (scripts/test.sh calls it after the build).
#
# Usage: scripts/bench-smoke.sh
# Runs `bench/run.py --tiny --tools ours --require ours` (50 x 10 KiB + 1 x 12 MiB, upload / download /
# S3->S3, 500-object no-op) against a fresh Garage, or moto when Garage is not installed; installs
# nothing but moto if neither server is there, and never the peer tools. Writes bench/smoke-results.json
# (never BENCHMARKS.md). Exits non-zero if the runner fails or any run's check fails.
# Our binary: the newest of target/release/s3sync and target/debug/s3sync that is not older than the
# sources; otherwise `cargo build --bin s3sync` (debug) first. S3SYNC_BENCH_BIN overrides.
# Env: S3SYNC_CACHE (default ~/.cache/s3sync), S3SYNC_SMOKE_SERVER=garage|moto to force a server.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CACHE="${S3SYNC_CACHE:-$HOME/.cache/s3sync}"
log() { echo "[bench-smoke] $*" >&2; }

# Newest modification time (epoch s) of the sources that go into the binary.
sources_mtime() {
  find src io Cargo.toml Cargo.lock build.rs -type f -printf '%T@\n' 2>/dev/null | sort -n | tail -1 | cut -d. -f1
}

pick_binary() {
  local src best="" best_t=0 b t
  src=$(sources_mtime)
  for b in target/release/s3sync target/debug/s3sync; do
    [ -x "$b" ] || continue
    t=$(stat -c %Y "$b")
    if [ "$t" -ge "$src" ] && [ "$t" -gt "$best_t" ]; then best="$b" best_t="$t"; fi
  done
  echo "$best"
}

BIN="${S3SYNC_BENCH_BIN:-}"
if [ -z "$BIN" ]; then
  BIN=$(pick_binary)
  if [ -z "$BIN" ]; then
    log "no up-to-date s3sync binary; cargo build --bin s3sync"
    cargo build --bin s3sync >&2
    BIN=target/debug/s3sync
  fi
fi
log "binary: $BIN"

SERVER="${S3SYNC_SMOKE_SERVER:-}"
if [ -z "$SERVER" ]; then
  if [ -x "$CACHE/garage/bin/garage" ]; then SERVER=garage; else SERVER=moto; fi
fi
if [ "$SERVER" = moto ] && [ ! -x "$CACHE/moto-venv/bin/moto_server" ]; then
  scripts/install-servers.sh moto
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/s3sync-bench-smoke.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
log "server: $SERVER"
python3 bench/run.py --tiny --tools ours --require ours --server "$SERVER" --ours-bin "$BIN" \
  --timeout 120 --work-dir "$WORK"
