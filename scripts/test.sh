#!/usr/bin/env bash
# The project's test command (README and CI call it).
#
# Usage: scripts/test.sh [-- ARGS...]
#   ARGS go to every test binary (after cargo's `--`): a test-name filter, --nocapture, --exact, ...
# Steps: install the S3 servers (cached) -> cargo build --all-targets -> unit tests
#   (cargo test --no-fail-fast --workspace --lib --bins; cargo test --no-fail-fast -p s3sync-io; the same
#   crate's tests as user nobody with RLIMIT_MEMLOCK 8 MiB, scripts/unprivileged-io-tests.sh) -> the
#   deployment files (deploy/kubernetes/check_manifests.py) -> docs and packaging (scripts/check-package.sh)
#   -> for each server, start it and run
#   `cargo test --no-fail-fast` of every [[test]] target of Cargo.toml once per I/O backend (S3SYNC_IO_BACKEND) -> stop it ->
#   scripts/bench-smoke.sh if it exists and is executable. Prints a summary table; exits 1 if anything failed.
# Env:
#   S3SYNC_SERVERS       servers to test against (default "moto garage")
#   S3SYNC_BACKENDS      I/O backends (default "uring tokio")
#   S3SYNC_TEST_THREADS  --test-threads for the integration tests (default 4)
#   S3SYNC_UNIT=0        skip the unit-test steps
#   S3SYNC_CACHE, S3SYNC_STATE   see install-servers.sh / start-server.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SERVERS="${S3SYNC_SERVERS:-moto garage}"
BACKENDS="${S3SYNC_BACKENDS:-uring tokio}"
THREADS="${S3SYNC_TEST_THREADS:-4}"
if [ "${1:-}" = "--" ]; then shift; fi
EXTRA=("$@")
SERVER_VARS=(AWS_ENDPOINT_URL AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION AWS_DEFAULT_REGION
  S3SYNC_TEST_SERVER S3SYNC_SERVER_PID S3SYNC_SERVER_DIR)

LOGDIR="$(mktemp -d "${TMPDIR:-/tmp}/s3sync-test.XXXXXX")"
STARTED=()   # state dirs of servers we started
RESULTS=()   # "label|PASS/FAIL/SKIP|detail"
FAILED=0
# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
  local d
  for d in "${STARTED[@]}"; do
    [ -d "$d" ] && { scripts/stop-server.sh "$d" || true; }
  done
  rm -rf "$LOGDIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# step LABEL CMD...: run CMD, tee its output, record pass/fail and cargo's test counts.
step() {
  local label="$1" log rc t0=$SECONDS n p f g detail
  shift
  log="$LOGDIR/step-${#RESULTS[@]}.log"
  echo "=== [$label] $*" >&2
  set +e
  "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  read -r n p f g < <(awk '/^test result:/ { n++; for (i = 2; i <= NF; i++) {
      if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1); if ($i ~ /^ignored;?$/) g += $(i-1) } }
    END { printf "%d %d %d %d\n", n, p, f, g }' "$log")
  TOTAL_P=$((TOTAL_P + p)) TOTAL_F=$((TOTAL_F + f))
  detail="$((SECONDS - t0))s"
  [ "$n" -gt 0 ] && detail="$p passed, $f failed, $g ignored; $detail"
  if [ "$rc" -eq 0 ]; then
    RESULTS+=("$label|PASS|$detail")
  else
    FAILED=1
    RESULTS+=("$label|FAIL|exit $rc; $detail")
  fi
  return "$rc"
}
TOTAL_P=0 TOTAL_F=0

summary() {
  echo
  echo "==================== summary ===================="
  printf '%-30s %-5s %s\n' STEP RESULT DETAIL
  local r
  for r in "${RESULTS[@]}"; do
    IFS='|' read -r label status detail <<<"$r"
    printf '%-30s %-5s %s\n' "$label" "$status" "$detail"
  done
  echo "tests: $TOTAL_P passed, $TOTAL_F failed"
}

for s in $SERVERS; do
  step "install $s" scripts/install-servers.sh "$s" || { summary; exit 1; }
done
step "build" cargo build --all-targets || { summary; exit 1; }

if [ "${S3SYNC_UNIT:-1}" != 0 ]; then
  step "unit (lib+bins)" cargo test --no-fail-fast --workspace --lib --bins -- "${EXTRA[@]}" || true
  step "s3sync-io (all tests)" cargo test --no-fail-fast -p s3sync-io -- "${EXTRA[@]}" || true
  step "s3sync-io as an unprivileged user" scripts/unprivileged-io-tests.sh -- "${EXTRA[@]}" || true
fi

# The deployment files (Indexed Job, Dockerfile): parsed and checked with the moto venv's PyYAML.
VENV_PY="${S3SYNC_CACHE:-$HOME/.cache/s3sync}/moto-venv/bin/python"
if [ -x "$VENV_PY" ]; then
  step "deploy manifests" "$VENV_PY" deploy/kubernetes/check_manifests.py || true
fi

if [ "${S3SYNC_UNIT:-1}" != 0 ]; then
  step "docs and packaging" scripts/check-package.sh || true
fi

# Every [[test]] target of Cargo.toml needs a server (autotests is off: tests/suite.rs holds the modules).
TEST_TARGETS=()
while read -r name; do
  TEST_TARGETS+=(--test "$name")
done < <(awk '/^\[\[test\]\]/ { t = 1; next } /^\[/ { t = 0 } t && $1 == "name" { gsub(/"/, "", $3); print $3 }' Cargo.toml)
if [ "${#TEST_TARGETS[@]}" -gt 0 ]; then
  for server in $SERVERS; do
    if ! exports="$(scripts/start-server.sh "$server")"; then
      FAILED=1
      RESULTS+=("$server: start|FAIL|see the start-server log above")
      continue
    fi
    eval "$exports"
    STARTED+=("$S3SYNC_SERVER_DIR")
    for backend in $BACKENDS; do
      step "integration $server/$backend" env S3SYNC_IO_BACKEND="$backend" \
        cargo test --no-fail-fast "${TEST_TARGETS[@]}" -- --test-threads="$THREADS" "${EXTRA[@]}" || true
    done
    scripts/stop-server.sh "$S3SYNC_SERVER_DIR" || true
    unset "${SERVER_VARS[@]}"
  done
else
  RESULTS+=("integration|SKIP|no [[test]] targets")
fi

if [ -x scripts/bench-smoke.sh ]; then
  step "bench-smoke" scripts/bench-smoke.sh || true
fi

summary
exit "$FAILED"
