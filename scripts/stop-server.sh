#!/usr/bin/env bash
# Stop a server started by scripts/start-server.sh and remove its state dir.
#
# Usage: scripts/stop-server.sh [PID_OR_DIR]
#   no argument: uses $S3SYNC_SERVER_DIR, else $S3SYNC_SERVER_PID (as exported by start-server.sh)
# Sends TERM, then KILL after 5 s. Only kills a process whose command line is moto_server or garage,
# and only removes a dir that start-server.sh created (it holds a `pid` file). Logs go to stderr.
# Env: S3SYNC_STATE (default /tmp/s3sync-servers), where a bare PID's state dir is looked up.
set -euo pipefail

STATE="${S3SYNC_STATE:-/tmp/s3sync-servers}"
log() { echo "[stop-server] $*" >&2; }

arg="${1:-${S3SYNC_SERVER_DIR:-${S3SYNC_SERVER_PID:-}}}"
[ -n "$arg" ] || { echo "usage: $0 [PID_OR_DIR]  (or set S3SYNC_SERVER_DIR / S3SYNC_SERVER_PID)" >&2; exit 2; }

pid="" dir=""
if [[ "$arg" =~ ^[0-9]+$ ]]; then
  pid="$arg"
  for f in "$STATE"/*/pid; do
    [ -f "$f" ] && [ "$(cat "$f")" = "$pid" ] && { dir="$(dirname "$f")"; break; }
  done
elif [ -f "$arg/pid" ]; then
  dir="$arg"
  pid="$(cat "$dir/pid")"
elif [ -d "$arg" ]; then
  log "$arg has no pid file: not a start-server.sh state dir; leaving it alone"
  exit 1
else
  log "no such server dir $arg (already stopped?)"
  exit 0
fi

# Alive and not a zombie waiting to be reaped.
alive() { kill -0 "$1" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

is_our_server() {
  local cmd
  cmd="$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null)" || return 1
  [[ "$cmd" == *moto_server* || "$cmd" == *garage* ]]
}

if [ -n "$pid" ] && alive "$pid"; then
  if is_our_server "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then
      log "pid $pid still alive after 5 s; sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    log "stopped $(cat "$dir/name" 2>/dev/null || echo server) (pid $pid)"
  else
    log "pid $pid is not a moto/garage server; not killing it"
  fi
else
  log "pid ${pid:-?} is not running"
fi

if [ -n "$dir" ]; then
  rm -rf "$dir"
  log "removed $dir"
fi
