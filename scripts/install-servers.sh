#!/usr/bin/env bash
# Install the S3-compatible servers the integration tests run against, into a cache dir.
# Idempotent: skips what is already installed. Safe to run concurrently (flock on $CACHE/install.lock).
#
# Usage: scripts/install-servers.sh [moto|garage|all]      (default: all)
#   moto   -> $CACHE/moto-venv    python venv with moto[server], boto3, awscrt, awscli (~2 min)
#   garage -> $CACHE/garage/bin/garage   `cargo install garage --version 2.5.0 --locked` (~25 min on 2 cores)
# Env:
#   S3SYNC_CACHE      cache dir (default ~/.cache/s3sync)
#   CARGO_BUILD_JOBS  parallel rustc jobs for the garage build (default: cargo's, i.e. all cores)
#   PYTHON            python used to create the venv (default python3)
# Logs go to stderr.
set -euo pipefail

CACHE="${S3SYNC_CACHE:-$HOME/.cache/s3sync}"
GARAGE_VERSION=2.5.0
VENV="$CACHE/moto-venv"
GARAGE_ROOT="$CACHE/garage"
log() { echo "[install-servers] $*" >&2; }

what="${1:-all}"
case "$what" in
  moto|garage|all) ;;
  *) echo "usage: $0 [moto|garage|all]" >&2; exit 2 ;;
esac

mkdir -p "$CACHE"
exec 9>"$CACHE/install.lock"
if ! flock -n 9; then
  log "another install holds $CACHE/install.lock; waiting ..."
  flock 9
fi

moto_ok() {
  "$VENV/bin/moto_server" --help >/dev/null 2>&1 &&
    "$VENV/bin/python" -c 'import boto3, awscrt' >/dev/null 2>&1 &&
    "$VENV/bin/aws" --version >/dev/null 2>&1
}

install_moto() {
  if moto_ok; then
    log "moto: present in $VENV"
    return
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    log "moto: creating venv $VENV"
    "${PYTHON:-python3}" -m venv "$VENV" >&2
  fi
  # Install the whole set together so pip picks botocore versions that boto3 and awscli both accept.
  log "moto: pip install moto[server] boto3 awscrt awscli into $VENV"
  "$VENV/bin/python" -m pip install -q 'moto[server]' boto3 awscrt awscli >&2
  moto_ok || { log "moto: install finished but moto_server/boto3/awscrt/aws is not usable"; exit 1; }
  log "moto: installed moto $("$VENV/bin/python" -c 'import moto; print(moto.__version__)'), $("$VENV/bin/aws" --version 2>&1)"
}

install_garage() {
  local bin="$GARAGE_ROOT/bin/garage"
  # A `cargo install` into the same root started by hand (outside this lock): wait for it instead of racing it.
  while [ ! -x "$bin" ] && pgrep -f "cargo install garage .*--root $GARAGE_ROOT" >/dev/null; do
    log "garage: a cargo install into $GARAGE_ROOT is already running; waiting for it ..."
    sleep 30
  done
  if [ -x "$bin" ]; then
    log "garage: present at $bin"
    return
  fi
  log "garage: building $GARAGE_VERSION with cargo into $GARAGE_ROOT (takes ~25 min on 2 cores)"
  # Run from the cache dir so the project's rust-toolchain.toml does not apply; keep the build dir in
  # the cache so an interrupted build resumes, and drop it once installed.
  (
    cd "$CACHE"
    CARGO_TARGET_DIR="$CACHE/garage-target" \
      cargo install garage --version "$GARAGE_VERSION" --locked --root "$GARAGE_ROOT" >&2
  )
  rm -rf "$CACHE/garage-target"
  "$bin" --help >/dev/null 2>&1 || { log "garage: $bin does not run"; exit 1; }
  log "garage: installed $bin"
}

case "$what" in
  moto) install_moto ;;
  garage) install_garage ;;
  all) install_moto; install_garage ;;
esac
