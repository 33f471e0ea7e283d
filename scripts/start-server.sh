#!/usr/bin/env bash
# Start a fresh S3-compatible test server on a free 127.0.0.1 port, in the background.
#
# Usage: eval "$(scripts/start-server.sh moto|garage)"      stop with scripts/stop-server.sh
# Prints ONLY `export` lines on stdout (logs go to stderr):
#   AWS_ENDPOINT_URL AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION AWS_DEFAULT_REGION
#   S3SYNC_TEST_SERVER (moto|garage) S3SYNC_SERVER_PID S3SYNC_SERVER_DIR
# Credentials and region come from these variables alone: no ~/.aws/config or credentials file is needed.
# Clients must use path-style addressing.
#
# moto:   moto_server (in memory, accepts any credentials).
# garage: single node, lmdb, fsync off, replication_factor 1, compression off (low server CPU for
#         benchmarks); uses 4 consecutive ports (S3, RPC, web, admin); a fixed imported key may create buckets.
# State (log, pid, config, data) lives in a fresh dir $S3SYNC_STATE/<name>-<port>, removed by stop-server.sh.
# Env:
#   S3SYNC_CACHE      where install-servers.sh put the servers (default ~/.cache/s3sync)
#   S3SYNC_STATE      parent of the state dirs (default /tmp/s3sync-servers)
#   S3SYNC_GARAGE_LOG RUST_LOG filter for garage (default garage=warn)
#   S3SYNC_START_TIMEOUT  seconds to wait for the server to answer (default 60)
set -euo pipefail

NAME="${1:-}"
CACHE="${S3SYNC_CACHE:-$HOME/.cache/s3sync}"
STATE="${S3SYNC_STATE:-/tmp/s3sync-servers}"
TIMEOUT="${S3SYNC_START_TIMEOUT:-60}"
REGION=us-east-1
log() { echo "[start-server] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

case "$NAME" in
  moto)
    SPAN=1
    BIN="$CACHE/moto-venv/bin/moto_server"
    KEY_ID=testing
    KEY_SECRET=testing
    ;;
  garage)
    SPAN=4
    BIN="$CACHE/garage/bin/garage"
    KEY_ID=GK0123456789abcdef01234567
    KEY_SECRET=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
    ;;
  *) echo "usage: $0 moto|garage" >&2; exit 2 ;;
esac
[ -x "$BIN" ] || die "$NAME is not installed ($BIN missing): run scripts/install-servers.sh $NAME"

# Print a port P such that 127.0.0.1:P .. P+SPAN-1 are all free right now.
free_port() {
  python3 - "$SPAN" <<'EOF'
import socket, sys
span = int(sys.argv[1])
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
        return True
    except OSError:
        return False
    finally:
        s.close()
for _ in range(200):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    if p + span <= 65536 and all(free(q) for q in range(p, p + span)):
        print(p)
        sys.exit(0)
sys.exit("no free port range found")
EOF
}

answers_http() { # any HTTP status other than 000 (no answer) / 5xx (not ready)
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' -m 2 "$URL/" || true)
  [ "$code" != 000 ] && [ "${code:0:1}" != 5 ]
}
garage_cli() { "$BIN" -c "$DIR/garage.toml" "$@"; }
garage_rpc_up() { garage_cli status >/dev/null 2>&1; }

# wait_for WHAT CHECK: 0 when CHECK succeeds, 1 if the server process died; exits on timeout.
wait_for() {
  local deadline=$((SECONDS + TIMEOUT))
  while ! "$2"; do
    kill -0 "$PID" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$PID/status" 2>/dev/null || return 1
    [ "$SECONDS" -lt "$deadline" ] || die "$NAME: no $1 after ${TIMEOUT}s; last lines of $LOG:$(echo; tail -n 30 "$LOG")"
    sleep 0.1
  done
}

write_garage_config() {
  mkdir -p "$DIR/meta" "$DIR/data"
  cat >"$DIR/garage.toml" <<EOC
metadata_dir = "$DIR/meta"
data_dir = "$DIR/data"
db_engine = "lmdb"
metadata_fsync = false
data_fsync = false
compression_level = "none"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$((PORT + 1))"
rpc_public_addr = "127.0.0.1:$((PORT + 1))"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

[s3_api]
s3_region = "$REGION"
api_bind_addr = "127.0.0.1:$PORT"
root_domain = ".s3.garage.localhost"

[s3_web]
bind_addr = "127.0.0.1:$((PORT + 2))"
root_domain = ".web.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$((PORT + 3))"
admin_token = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
EOC
}

# If anything below fails, do not leave a half-started server behind.
PID=""
cleanup_on_error() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill "$PID" 2>/dev/null || true
    log "stopped half-started $NAME (pid $PID); its log is in $LOG"
  fi
}
trap cleanup_on_error EXIT

mkdir -p "$STATE"
t0=$EPOCHREALTIME
for attempt in 1 2 3; do
  PORT=$(free_port)
  URL="http://127.0.0.1:$PORT"
  DIR="$STATE/$NAME-$PORT"
  LOG="$DIR/server.log"
  rm -rf "$DIR"
  mkdir -p "$DIR"
  echo "$NAME" >"$DIR/name"
  if [ "$NAME" = moto ]; then
    setsid "$BIN" -H 127.0.0.1 -p "$PORT" </dev/null >"$LOG" 2>&1 &
    PID=$!
    echo "$PID" >"$DIR/pid"
    wait_for "HTTP answer on $URL" answers_http && break
  else
    write_garage_config
    RUST_LOG="${S3SYNC_GARAGE_LOG:-garage=warn}" setsid "$BIN" -c "$DIR/garage.toml" server </dev/null >"$LOG" 2>&1 &
    PID=$!
    echo "$PID" >"$DIR/pid"
    wait_for "RPC answer" garage_rpc_up && break
  fi
  # The server exited during start-up. Another process grabbing our port is worth a retry.
  if [ "$attempt" -lt 3 ] && grep -qi 'address already in use' "$LOG"; then
    log "$NAME: port $PORT was taken meanwhile; retrying on another port"
    rm -rf "$DIR"
    continue
  fi
  die "$NAME exited during start-up; last lines of $LOG:$(echo; tail -n 30 "$LOG")"
done

if [ "$NAME" = garage ]; then
  # Single-node layout and the fixed key; the CLI's chatter goes to setup.log, shown only on failure.
  node=$(garage_cli node id -q 2>/dev/null | cut -d@ -f1) || true
  { [ -n "$node" ] &&
    garage_cli layout assign -z dc1 -c 10GB "$node" &&
    garage_cli layout apply --version 1; } >"$DIR/setup.log" 2>&1 ||
    die "garage: layout setup failed (node id '${node:-?}'):$(echo; tail -n 30 "$DIR/setup.log")"
  # Right after `layout apply` Garage may answer "Layout not ready": retry the key set-up until it is.
  key_deadline=$((SECONDS + TIMEOUT))
  until { garage_cli key info "$KEY_ID" >/dev/null 2>&1 ||
    garage_cli key import --yes -n s3sync-test "$KEY_ID" "$KEY_SECRET"; } >>"$DIR/setup.log" 2>&1 &&
    garage_cli key allow --create-bucket "$KEY_ID" >>"$DIR/setup.log" 2>&1; do
    [ "$SECONDS" -lt "$key_deadline" ] ||
      die "garage: key setup failed for ${TIMEOUT}s:$(echo; tail -n 30 "$DIR/setup.log")"
    sleep 0.5
  done
  wait_for "S3 answer on $URL" answers_http || die "garage exited after setup; last lines of $LOG:$(echo; tail -n 30 "$LOG")"
fi
trap - EXIT

log "$NAME ready on $URL (pid $PID, state $DIR) in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}')s"
for kv in \
  "AWS_ENDPOINT_URL=$URL" \
  "AWS_ACCESS_KEY_ID=$KEY_ID" \
  "AWS_SECRET_ACCESS_KEY=$KEY_SECRET" \
  "AWS_REGION=$REGION" \
  "AWS_DEFAULT_REGION=$REGION" \
  "S3SYNC_TEST_SERVER=$NAME" \
  "S3SYNC_SERVER_PID=$PID" \
  "S3SYNC_SERVER_DIR=$DIR"; do
  printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"
done
