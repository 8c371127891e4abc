# Shared helpers of the perf/ scripts (sourced, not run). Everything listens on
# 127.0.0.1 only; every process started here is stopped by its PID on exit.
#
# Provides: BIN, WORK (a temp dir, removed on exit unless KEEP=1), free_port,
# cpu_ticks PID, group_cpu_ticks PGID, rss_kib PID, start_serve NAME ARGS...
# (sets SERVE_PID and SERVE_URL), stop_pid PID, start_pg (sets PG_URL and
# PG_PID), create_pg_db NAME, load ARGS... (shardsync load --json, prints the
# JSON line), jget JSON PATH, ms_per, ratio.

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BIN=${SHARDSYNC_BIN:-target/release/shardsync}
if [ ! -x "$BIN" ]; then cargo build --release --bin shardsync; fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/shardsync-perf.XXXXXX")
chmod 755 "$WORK"
PIDS=()
PG_DATA=""
PG_PID=""
HZ=$(getconf CLK_TCK)

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "$PG_DATA" ]; then pg_tool pg_ctl -D "$PG_DATA" -m fast -w stop >/dev/null 2>&1 || true; fi
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# utime+stime of one process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# utime+stime+cutime+cstime of every process of a process group (children that
# exited and were reaped count in their parent's cutime/cstime).
group_cpu_ticks() {
  local pgid=$1 sum=0 f v
  for f in /proc/[0-9]*/stat; do
    v=$(awk -v g="$pgid" '{ # field 2 may contain spaces: parse from the last ")"
          s=$0; sub(/^.*\) /, "", s); split(s, a, " ");
          if (a[3] == g) print a[12] + a[13] + a[14] + a[15]; }' "$f" 2>/dev/null || true)
    [ -n "$v" ] && sum=$((sum + v))
  done
  echo "$sum"
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

wait_health() {
  local url=$1
  for _ in $(seq 200); do
    curl -sf -o /dev/null "$url" && return 0
    sleep 0.05
  done
  echo "no answer from $url" >&2
  return 1
}

# start_serve NAME ARGS...: `shardsync serve` on a free port; SERVE_PID, SERVE_URL, SERVE_PORT.
start_serve() {
  local name=$1; shift
  SERVE_PORT=$(free_port)
  "$BIN" serve --listen "127.0.0.1:$SERVE_PORT" --shard-port-base 0 --log-level warn "$@" >"$WORK/$name.log" 2>&1 &
  SERVE_PID=$!
  PIDS+=("$SERVE_PID")
  SERVE_URL="http://127.0.0.1:$SERVE_PORT/sync"
  wait_health "http://127.0.0.1:$SERVE_PORT/health" || { cat "$WORK/$name.log" >&2; exit 1; }
}

stop_pid() {
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# PostgreSQL binaries run as the postgres OS user when we are root.
PG_BINDIR=$(pg_config --bindir 2>/dev/null || true)
if [ -z "$PG_BINDIR" ] || [ ! -x "$PG_BINDIR/initdb" ]; then
  PG_BINDIR=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
fi
pg_tool() {
  local tool=$1; shift
  local exe="$PG_BINDIR/$tool"
  [ -x "$exe" ] || exe=$(command -v "$tool")
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$exe" "$@"; else "$exe" "$@"; fi
}

# start_pg: a private PostgreSQL (initdb in $WORK/pg, fsync on, loopback); PG_URL, PG_PID.
start_pg() {
  local dir="$WORK/pg" port
  mkdir -p "$dir/sock"
  [ "$(id -u)" = 0 ] && chown -R postgres: "$dir"
  pg_tool initdb -D "$dir/data" -U shardsync --auth=trust -E UTF8 --locale=C --no-instructions >/dev/null
  port=$(free_port)
  pg_tool pg_ctl -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -k $dir/sock -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on -c max_connections=200 -c shared_buffers=128MB -c max_wal_size=1GB" \
    start >/dev/null
  PG_DATA="$dir/data"
  PG_PID=$(head -1 "$dir/data/postmaster.pid")
  PG_PORT=$port
  PG_URL="postgres://shardsync@127.0.0.1:$port/shardsync"
  pg_tool psql -h 127.0.0.1 -p "$port" -U shardsync -d postgres -qc "CREATE DATABASE shardsync" >/dev/null
  "$BIN" migrate --store "$PG_URL" >/dev/null
}

# create_pg_db NAME: a new, migrated database on the private PostgreSQL; prints its URL.
create_pg_db() {
  local url="postgres://shardsync@127.0.0.1:$PG_PORT/$1"
  pg_tool psql -h 127.0.0.1 -p "$PG_PORT" -U shardsync -d postgres -qc "CREATE DATABASE $1" >/dev/null
  "$BIN" migrate --store "$url" >/dev/null
  echo "$url"
}

# CPU ticks of the postmaster and all its backends (they are its children).
pg_cpu_ticks() {
  local sum=0 pid
  for pid in $PG_PID $(pgrep -P "$PG_PID" || true); do
    sum=$((sum + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo "$sum"
}

# load ARGS...: runs `shardsync load --json`, prints its JSON line; fails on any error.
load() {
  local out
  if ! out=$("$BIN" load --json --progress never "$@" 2>"$WORK/load.err"); then
    echo "shardsync load $* reported errors:" >&2
    echo "$out" >&2
    tail -5 "$WORK/load.err" >&2
    return 1
  fi
  echo "$out" | tail -1
}

# jget JSON PATH: a field of a JSON object (PATH like .load.sessions_per_s).
jget() { python3 -c 'import json,sys; v=json.loads(sys.argv[1])
for k in sys.argv[2].strip(".").split("."): v=v[k]
print(v)' "$1" "$2"; }

# ticks_ms TICKS [N]: CPU milliseconds (per N).
ticks_ms() {
  awk -v t="$1" -v n="${2:-1}" -v hz="$HZ" 'BEGIN{ v = t / hz * 1000 / n;
    if (v >= 100) printf "%.0f", v; else if (v >= 1) printf "%.1f", v; else printf "%.3g", v }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b == 0) print "n/a"; else printf "%.3f", a / b }'; }
