#!/usr/bin/env bash
# Runs the I/O engine's tests (crate s3sync-io) as an unprivileged user would: RLIMIT_MEMLOCK at the
# usual 8 MiB default and, when started as root, as user nobody (root bypasses the limit, so CI's root
# would otherwise never see what a user sees: a 64 MiB pool that cannot be registered whole).
#
# Usage: scripts/unprivileged-io-tests.sh [-- ARGS...]   (ARGS go to the test binaries)
# Needs util-linux's prlimit (and setpriv when run as root). Builds the test binaries first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ "${1:-}" = "--" ]; then shift; fi
MEMLOCK=$((8 << 20))

cargo test -p s3sync-io --no-run # build errors show here
mapfile -t BINS < <(cargo test -p s3sync-io --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m.get("profile", {}).get("test"):
        print(m["executable"])')
if [ "${#BINS[@]}" -eq 0 ]; then
  echo "no s3sync-io test binary was built" >&2
  exit 1
fi

# A directory the unprivileged user can read and write: the binaries and their temporary files.
WORK="$(mktemp -d "${TMPDIR:-/tmp}/s3sync-unpriv.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
chmod 0777 "$WORK"
as_user=()
if [ "$(id -u)" = 0 ]; then
  as_user=(setpriv --reuid=65534 --regid=65534 --clear-groups)
  echo "running as nobody (uid 65534) with RLIMIT_MEMLOCK $MEMLOCK bytes" >&2
else
  echo "running as $(id -un) with RLIMIT_MEMLOCK $MEMLOCK bytes" >&2
fi
rc=0
for bin in "${BINS[@]}"; do
  cp "$bin" "$WORK/"
  copy="$WORK/$(basename "$bin")"
  chmod 0755 "$copy"
  echo "=== $(basename "$bin")" >&2
  prlimit --memlock="$MEMLOCK:$MEMLOCK" "${as_user[@]}" \
    env HOME="$WORK" TMPDIR="$WORK" "$copy" "$@" || rc=1
done
exit "$rc"
