#!/usr/bin/env bash
# The same backends behind HAProxy (`balance url_param s` + `hash-type consistent`),
# nginx (`hash $arg_s consistent`) and `shardsync balance`, on loopback in one run.
#
# Backends: NODES `shardsync bench-server --mode handler` nodes with one shard each
# (full HTTP + SyncML decode + a fixed answer that names the node). Every proxy gets
# one worker thread; wrk (keep-alive, POSTs with ?s= tokens over 64 sessions,
# perf/wrk-balance.lua) measures requests/s and latency; "added" latency is the
# proxy's p50/p99 minus the direct p50/p99 (wrk straight to one node).
#
# Then the RespURI test: for SESSIONS distinct sessions, a message *without* the
# token (a client that ignores RespURI) must land on the node its token routes
# to. Only a balancer that reads the SyncHdr can do that.
#
# Environment: NODES (2), CONNS (32), DURATION (10s), SESSIONS (40), BASE_PORT (28600),
# SHARDSYNC_BIN (target/release/shardsync; built if missing).
# HAProxy and nginx are installed with apt-get when missing (Debian packages).
set -euo pipefail
cd "$(dirname "$0")/.."

NODES=${NODES:-2}
CONNS=${CONNS:-32}
DURATION=${DURATION:-10s}
SESSIONS=${SESSIONS:-40}
BASE=${BASE_PORT:-28600}
BIN=${SHARDSYNC_BIN:-target/release/shardsync}

command -v wrk >/dev/null || { echo "wrk not found (apt-get install wrk)" >&2; exit 1; }
if ! command -v haproxy >/dev/null || ! command -v nginx >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q haproxy nginx-light >/dev/null \
    || DEBIAN_FRONTEND=noninteractive apt-get install -y -q haproxy nginx >/dev/null
fi
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$BIN" ] || cargo build --release

TMP=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

wait_http() { for _ in $(seq 200); do curl -s -o /dev/null "http://127.0.0.1:$1${2:-/health}" && return 0; sleep 0.05; done; echo "port $1 never answered" >&2; exit 1; }

# ---- backends: node i listens on BASE+10+2i, its shard on BASE+11+2i
members=()
for i in $(seq 0 $((NODES - 1))); do
  port=$((BASE + 10 + 2 * i)); shard=$((port + 1))
  { cat perf/sync-reply.xml; printf '<!-- node-%d -->' "$i"; } > "$TMP/reply-$i.xml"
  "$BIN" bench-server --mode handler --reply "$TMP/reply-$i.xml" --listen "127.0.0.1:$port" \
    --shards 1 --shard-port-base "$shard" --pin false --log-level warn &
  pids+=($!)
  members+=("$shard")
  wait_http "$port"
done

# ---- the three balancers
HA_PORT=$((BASE + 1)); NG_PORT=$((BASE + 2)); OURS_PORT=$((BASE + 3))
{
  printf 'global\n  nbthread 1\n  maxconn 4096\n'
  printf 'defaults\n  mode http\n  timeout connect 1s\n  timeout client 60s\n  timeout server 60s\n  option http-keep-alive\n'
  printf 'frontend fe\n  bind 127.0.0.1:%d\n  default_backend be\n' "$HA_PORT"
  printf 'backend be\n  balance url_param s\n  hash-type consistent\n  http-reuse always\n'
  for m in "${members[@]}"; do printf '  server s%d 127.0.0.1:%d check inter 2s fall 3 rise 2\n' "$m" "$m"; done
} > "$TMP/haproxy.cfg"
"$HAPROXY" -f "$TMP/haproxy.cfg" -q &
HA_PID=$!; pids+=($HA_PID)

mkdir -p "$TMP/nginx"
{
  printf 'worker_processes 1;\ndaemon off;\npid %s/nginx.pid;\nerror_log stderr error;\n' "$TMP"
  printf 'events { worker_connections 4096; }\nhttp {\n  access_log off;\n  client_max_body_size 8m;\n'
  printf '  client_body_temp_path %s/nginx/body; proxy_temp_path %s/nginx/proxy;\n' "$TMP" "$TMP"
  printf '  fastcgi_temp_path %s/nginx/f; uwsgi_temp_path %s/nginx/u; scgi_temp_path %s/nginx/s;\n' "$TMP" "$TMP" "$TMP"
  printf '  upstream be {\n    hash $arg_s consistent;\n'
  for m in "${members[@]}"; do printf '    server 127.0.0.1:%d;\n' "$m"; done
  printf '    keepalive 64;\n  }\n'
  printf '  server {\n    listen 127.0.0.1:%d;\n    location / {\n      proxy_pass http://be;\n' "$NG_PORT"
  printf '      proxy_http_version 1.1;\n      proxy_set_header Connection "";\n      proxy_buffering off;\n    }\n  }\n}\n'
} > "$TMP/nginx.conf"
"$NGINX" -c "$TMP/nginx.conf" -p "$TMP/nginx" &
NG_PID=$!; pids+=($NG_PID)

backends=()
for i in $(seq 0 $((NODES - 1))); do backends+=(--backend "127.0.0.1:$((BASE + 10 + 2 * i))"); done
# Its admin listener (GET /status etc.) next to it: the default 127.0.0.1:8001 may be taken.
"$BIN" balance --listen "127.0.0.1:$OURS_PORT" --admin-listen "127.0.0.1:$((BASE + 4))" "${backends[@]}" --threads 1 --log-level warn &
OURS_PID=$!; pids+=($OURS_PID)
wait_http "$HA_PORT" /sync; wait_http "$NG_PORT" /sync; wait_http "$OURS_PORT"

# ---- load
# utime+stime (+ reaped children) of a process and its direct children, in clock ticks
cpu_ticks() { local t=0 p; for p in "$1" $(pgrep -P "$1" || true); do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
# bench NAME PORT PID: prints a table row and sets P50/P99 (ms); PID's CPU per request
# (the proxy's own cost, which other load on a shared box disturbs less than req/s)
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; printf "%.3f", v}'; }
bench() {
  local name=$1 port=$2 pid=$3 out rps p50 p99 errs c0 c1 reqs cpu
  c0=$(cpu_ticks "$pid")
  out=$(wrk -t1 -c"$CONNS" -d"$DURATION" --latency -s perf/wrk-balance.lua "http://127.0.0.1:$port/sync")
  rps=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out" | to_ms)
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out" | to_ms)
  errs=$(awk '/Socket errors:/ {gsub(",", ""); s += $4 + $6 + $8 + $10} /Non-2xx/ {s += $5} END {print s + 0}' <<<"$out")
  c1=$(cpu_ticks "$pid")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  cpu=$(awk -v t=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v n="${reqs:-1}" 'BEGIN{printf "%.1f", t / hz * 1e6 / n}')
  P50=$p50; P99=$p99
  local add50="—" add99="—"
  if [ -n "$D50" ]; then
    add50=$(awk -v a="$p50" -v b="$D50" 'BEGIN{printf "%+.3f", a-b}'); add99=$(awk -v a="$p99" -v b="$D99" 'BEGIN{printf "%+.3f", a-b}')
  fi
  printf '| %-17s | %7s | %7s | %7s | %7s | %7s | %10s | %6s |\n' "$name" "$rps" "$p50" "$p99" "$add50" "$add99" "$cpu" "$errs"
}

echo "wrk -t1 -c$CONNS -d$DURATION --latency, $NODES backend nodes (1 shard each), 1 proxy thread, $(nproc) cpus"
echo
echo "| target            |   req/s | p50 ms  | p99 ms  | +p50 ms | +p99 ms | cpu us/req | errors |"
echo "|-------------------|---------|---------|---------|---------|---------|------------|--------|"
D50=""; D99=""
bench "direct (1 node)" "$((BASE + 10))" "${pids[0]}"; D50=$P50; D99=$P99
bench "haproxy" "$HA_PORT" "$HA_PID"
bench "nginx" "$NG_PORT" "$NG_PID"
bench "shardsync balance" "$OURS_PORT" "$OURS_PID"

# ---- RespURI test: does a token-less message land on its session's node?
node_of() { grep -o 'node-[0-9]*' | tail -1; }
echo
echo "Client ignoring RespURI: token-less messages that reached their session's node ($SESSIONS sessions)"
for target in "haproxy:$HA_PORT" "nginx:$NG_PORT" "shardsync:$OURS_PORT"; do
  name=${target%%:*}; port=${target#*:}; same=0
  for s in $(seq 1 "$SESSIONS"); do
    sed "s|<LocURI>sc-harness-capture-xml</LocURI>|<LocURI>side-by-side-dev-$s</LocURI>|" perf/sync-request.xml > "$TMP/m.xml"
    tok=$("$BIN" route-key "$TMP/m.xml")
    with=$(curl -s -X POST -H 'Content-Type: application/vnd.syncml+xml' --data-binary @"$TMP/m.xml" "http://127.0.0.1:$port/sync?s=$tok" | node_of)
    without=$(curl -s -X POST -H 'Content-Type: application/vnd.syncml+xml' --data-binary @"$TMP/m.xml" "http://127.0.0.1:$port/sync" | node_of)
    [ -n "$with" ] && [ "$with" = "$without" ] && same=$((same + 1))
  done
  printf '  %-10s %d/%d\n' "$name" "$same" "$SESSIONS"
done
