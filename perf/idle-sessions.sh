#!/usr/bin/env bash
# Memory per concurrent idle session: `shardsync load --scenario hold-idle`
# opens SESSIONS sessions (message 1 of a first slow sync, answered, then
# nothing), and this script reads the server's RSS (VmRSS) while they are
# held. Reported: (RSS with the sessions held - RSS after a warm-up) / sessions.
# Two runs: connections reused between sessions (the sessions alone), and one
# open keep-alive connection per held session (sessions + idle connections).
# Target: <= 32 KiB per idle session.
#
# Environment: SESSIONS (10000), SHARDS (2), CONCURRENCY (64), USERS (10).
source "$(dirname "$0")/lib.sh"

SESSIONS=${SESSIONS:-10000}
SHARDS=${SHARDS:-2}
CONCURRENCY=${CONCURRENCY:-64}
USERS=${USERS:-10}
# One fd per held connection on both sides (load and server are children of this shell).
ulimit -n "$(( SESSIONS * 2 + 4096 ))" 2>/dev/null || ulimit -n "$(ulimit -Hn)"

echo "idle sessions: $SESSIONS sessions, $SHARDS shards, concurrency $CONCURRENCY, $(nproc) cpus, ulimit -n $(ulimit -n)"
printf '%-22s %10s %12s %12s %12s %14s\n' mode sessions rss_before rss_held delta_kib kib_per_session

run_mode() {
  local mode=$1; shift
  start_serve "idle-$mode" --shards "$SHARDS" --data-dir "$WORK/data-$mode"
  # Warm-up: users, allocator pools, store pages; then the baseline.
  load --url "$SERVE_URL" --scenario hold-idle --devices 500 --user-count "$USERS" --device-prefix warm- \
    --create-users --data-dir "$WORK/data-$mode" --concurrency "$CONCURRENCY" --hold-secs 0 "$@" >/dev/null
  sleep 1
  local before held pid
  before=$(rss_kib "$SERVE_PID")
  "$BIN" load --url "$SERVE_URL" --scenario hold-idle --devices "$SESSIONS" --user-count "$USERS" \
    --device-prefix idle- --concurrency "$CONCURRENCY" --hold-secs 30 --json --progress never "$@" \
    >"$WORK/idle-$mode.json" 2>"$WORK/idle-$mode.err" &
  pid=$!
  PIDS+=("$pid")
  for _ in $(seq 1200); do
    grep -q '^holding' "$WORK/idle-$mode.err" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  grep -q '^holding' "$WORK/idle-$mode.err" || { echo "load did not reach the hold:" >&2; cat "$WORK/idle-$mode.err" >&2; exit 1; }
  sleep 2
  held=$(rss_kib "$SERVE_PID")
  local line n
  line=$(grep '^holding' "$WORK/idle-$mode.err")
  n=$(awk '{print $2}' <<<"$line")
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  printf '%-22s %10d %12d %12d %12d %14.1f\n' "$mode" "$n" "$before" "$held" "$((held - before))" \
    "$(awk -v d=$((held - before)) -v n="$n" 'BEGIN{print d / n}')"
  [ "$n" -eq "$SESSIONS" ] || { echo "only $n of $SESSIONS sessions held" >&2; cat "$WORK/idle-$mode.err" >&2; exit 1; }
  stop_pid "$SERVE_PID"
}

run_mode reused-connections
run_mode connection-per-session --hold-connections
echo "target: <= 32 KiB per idle session"
