#!/usr/bin/env bash
# Bounded randomized soak test of s3sync (tests/soak.rs, an #[ignore]d test the normal suite skips):
# random sync rounds in every direction through a fault-injecting proxy, with SIGKILLs, each followed by
# a fault-free convergence check against the real server.
#
# Usage: scripts/soak.sh [-- ARGS...]
#   ARGS go to the test binary, after `--ignored --nocapture`.
# Steps: install the servers (cached) -> cargo test --test suite --no-run -> for each server: start it,
#   `cargo test --test suite soak:: -- --ignored --nocapture`, stop it. Exits 1 if any server's soak failed.
# Env:
#   S3SYNC_SOAK_SEED     seed, decimal or 0x hex (default: the test's fixed seed); printed by the test,
#                        which replays the same rounds with it (timing aside)
#   S3SYNC_SOAK_SECONDS  time budget per server, in seconds (default 180)
#   S3SYNC_SERVERS       servers to soak against (default "garage"; moto works too, but its ListParts
#                        answer cannot be parsed, so killed uploads restart instead of resuming there)
#   S3SYNC_CACHE, S3SYNC_STATE   see install-servers.sh / start-server.sh
# Output: the test's per-round table and summary on stderr; the summary also in
#   $CARGO_TARGET_DIR (default target)/soak-summary.txt, copied to soak-summary-<server>.txt per server.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SERVERS="${S3SYNC_SERVERS:-garage}"
export S3SYNC_SOAK_SECONDS="${S3SYNC_SOAK_SECONDS:-180}"
if [ -n "${S3SYNC_SOAK_SEED:-}" ]; then export S3SYNC_SOAK_SEED; fi
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
if [ "${1:-}" = "--" ]; then shift; fi
EXTRA=("$@")
SERVER_VARS=(AWS_ENDPOINT_URL AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION AWS_DEFAULT_REGION
  S3SYNC_TEST_SERVER S3SYNC_SERVER_PID S3SYNC_SERVER_DIR)
log() { echo "[soak] $*" >&2; }

STARTED=""   # state dir of the server this script is running, if any
# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
  if [ -n "$STARTED" ] && [ -d "$STARTED" ]; then
    scripts/stop-server.sh "$STARTED" || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for s in $SERVERS; do
  scripts/install-servers.sh "$s"
done
cargo test --test suite --no-run

RESULTS=()
FAILED=0
for server in $SERVERS; do
  if ! exports="$(scripts/start-server.sh "$server")"; then
    RESULTS+=("$server: FAIL (server did not start)")
    FAILED=1
    continue
  fi
  eval "$exports"
  STARTED="$S3SYNC_SERVER_DIR"
  rm -f "$TARGET_DIR/soak-summary.txt"
  log "$server: soaking for ${S3SYNC_SOAK_SECONDS}s (seed ${S3SYNC_SOAK_SEED:-default})"
  rc=0
  cargo test --test suite soak:: -- --ignored --nocapture "${EXTRA[@]}" || rc=$?
  scripts/stop-server.sh "$STARTED" || true
  STARTED=""
  unset "${SERVER_VARS[@]}"
  if [ -f "$TARGET_DIR/soak-summary.txt" ]; then
    cp "$TARGET_DIR/soak-summary.txt" "$TARGET_DIR/soak-summary-$server.txt"
  fi
  if [ "$rc" -eq 0 ]; then
    RESULTS+=("$server: PASS")
  else
    RESULTS+=("$server: FAIL (cargo test exit $rc; see $TARGET_DIR/soak-summary-$server.txt)")
    FAILED=1
  fi
done

log "==================== soak results ===================="
for r in "${RESULTS[@]}"; do
  log "$r"
done
exit "$FAILED"
