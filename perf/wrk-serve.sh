#!/usr/bin/env bash
# Compares, in one run on this machine, the full server path against the
# runtime's ceiling, with wrk keep-alive load on loopback:
#   handler: `shardsync bench-server --mode handler` — HTTP framing, SyncML
#            decode, routing (token or SyncHdr, cross-shard hand-over) and a
#            fixed SyncService answer;
#   ceiling: `shardsync bench-server --mode ceiling` — the same glommio
#            executors and sockets answering the same bytes to every request
#            without parsing or decoding.
# Prints requests/s of each round and the ratio handler/ceiling (target >= 0.8),
# plus the server's CPU time per request (ceiling/handler: the same ratio
# measured by CPU, which other load on a shared machine disturbs less);
# fails if wrk saw any socket error or non-2xx answer.
#
# Environment: SHARDS (2), THREADS (wrk threads, 1), CONNS (64), DURATION (10s),
# ROUNDS (2), PORT (28480), SHARDSYNC_BIN (target/release/shardsync; built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

SHARDS=${SHARDS:-2}
THREADS=${THREADS:-1}
CONNS=${CONNS:-64}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-2}
PORT=${PORT:-28480}
BIN=${SHARDSYNC_BIN:-target/release/shardsync}

command -v wrk >/dev/null || { echo "wrk not found (apt-get install wrk)" >&2; exit 1; }
[ -x "$BIN" ] || cargo build --release

server_pid=""
cleanup() { if [ -n "$server_pid" ]; then kill -TERM "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi; }
trap cleanup EXIT

# utime+stime of a process, in clock ticks
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run_one MODE: sets RPS, ERRS and CPU_US
run_one() {
  local mode=$1 out
  "$BIN" bench-server --mode "$mode" --reply perf/sync-reply.xml --listen "127.0.0.1:$PORT" \
    --shards "$SHARDS" --shard-port-base 0 --log-level warn &
  server_pid=$!
  for _ in $(seq 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$PORT/health" && break
    sleep 0.05
  done
  local cpu0 cpu1
  cpu0=$(cpu_ticks "$server_pid")
  out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" -s perf/wrk-sync.lua "http://127.0.0.1:$PORT/sync")
  cpu1=$(cpu_ticks "$server_pid")
  kill -TERM "$server_pid"
  wait "$server_pid" || { echo "$mode server exited with an error" >&2; exit 1; }
  server_pid=""
  local rps errs non2xx
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  errs=$(awk '/Socket errors:/ {gsub(",", ""); print $4 + $6 + $8 + $10}' <<<"$out")
  non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $5}' <<<"$out")
  RPS=${rps:-0}
  ERRS=$(( ${errs:-0} + ${non2xx:-0} ))
  local reqs
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  # Server CPU (user+system) per request in microseconds: robust to other load on the box.
  CPU_US=$(awk -v t=$((cpu1 - cpu0)) -v hz="$(getconf CLK_TCK)" -v n="${reqs:-1}" 'BEGIN{printf "%.1f", t / hz * 1e6 / n}')
  if [ "$RPS" = 0 ]; then echo "$out" >&2; fi
}

echo "wrk -t$THREADS -c$CONNS -d$DURATION, $SHARDS shards, body $(wc -c < perf/sync-request.xml) bytes, $(nproc) cpus"
total_h=0; total_c=0; failed=0
for round in $(seq "$ROUNDS"); do
  run_one ceiling; c_rps=$RPS; c_err=$ERRS; c_cpu=$CPU_US
  run_one handler; h_rps=$RPS; h_err=$ERRS; h_cpu=$CPU_US
  printf 'round %d: ceiling %8.0f req/s %6s us-cpu/req (%d errors) | handler %8.0f req/s %6s us-cpu/req (%d errors) | ratio %.3f, cpu ratio %.3f\n' \
    "$round" "$c_rps" "$c_cpu" "$c_err" "$h_rps" "$h_cpu" "$h_err" \
    "$(awk -v h="$h_rps" -v c="$c_rps" 'BEGIN{print h/c}')" "$(awk -v h="$h_cpu" -v c="$c_cpu" 'BEGIN{print c/h}')"
  total_h=$(awk -v a="$total_h" -v b="$h_rps" 'BEGIN{print a+b}')
  total_c=$(awk -v a="$total_c" -v b="$c_rps" 'BEGIN{print a+b}')
  [ "$c_err" -eq 0 ] && [ "$h_err" -eq 0 ] || failed=1
done
ratio=$(awk -v h="$total_h" -v c="$total_c" 'BEGIN{printf "%.3f", h/c}')
echo "handler/ceiling ratio over $ROUNDS round(s): $ratio (target >= 0.8)"
if [ "$failed" -ne 0 ]; then echo "FAIL: wrk reported errors" >&2; exit 1; fi
