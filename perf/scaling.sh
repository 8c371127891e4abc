#!/usr/bin/env bash
# Throughput by shard count and by node count, driven by `shardsync load`:
#   shards: one `serve` (embedded store) with 1 and 2 shards;
#   nodes:  1, 2, 3 `serve` nodes (1 shard each) on one shared private
#           PostgreSQL, behind `shardsync balance` (clients come back through
#           the balancer via RespURI).
# For each: empty two-way sessions/s for DURATION s, and 1,000-contact slow
# sync items/s (SLOW_DEVICES sessions). On a 2-core box every process shares
# the same two cores, so node scaling here shows the cost of the extra hop
# and processes, not added capacity; run it on a bigger machine for that.
#
# Environment: DURATION (6), CONCURRENCY (32), DEVICES (128), SLOW_DEVICES (6),
# SKIP_PG=1 (shards only).
source "$(dirname "$0")/lib.sh"

DURATION=${DURATION:-6}
CONCURRENCY=${CONCURRENCY:-32}
DEVICES=${DEVICES:-128}
SLOW_DEVICES=${SLOW_DEVICES:-6}
echo "scaling: $(nproc) cpus; empty two-way ${DURATION}s at concurrency $CONCURRENCY over $DEVICES devices; $SLOW_DEVICES slow syncs of 1000 contacts (wbxml)"

ROWS=()
row() { ROWS+=("$(printf '%-34s %16s %14s %16s %12s' "$@")"); }
row "setup" "empty sessions/s" "empty p99 ms" "slow-sync items/s" "errors"

# bench LABEL URL EXTRA_ARGS...: the two runs against URL; records a row.
bench() {
  local label=$1 url=$2; shift 2
  local e s tag
  tag=$(tr -c 'a-z0-9\n' '-' <<<"$label")
  e=$(load --url "$url" --scenario empty-two-way --encoding wbxml --devices "$DEVICES" --items 5 \
        --concurrency "$CONCURRENCY" --duration "$DURATION" --device-prefix "e-$tag-" --user-prefix scale- \
        --user-count 32 "$@")
  s=$(load --url "$url" --scenario slow-sync --encoding wbxml --devices "$SLOW_DEVICES" --items 1000 \
        --concurrency 3 --device-prefix "s-$tag-" --user-prefix "slow-$tag-" "$@")
  row "$label" "$(printf '%.1f' "$(jget "$e" .sessions_per_s)")" "$(jget "$e" .latency_ms.p99)" \
      "$(printf '%.0f' "$(jget "$s" .items_per_s)")" "$(( $(jget "$e" .errors) + $(jget "$s" .errors) ))"
}

for shards in 1 2; do
  start_serve "shards-$shards" --shards "$shards" --data-dir "$WORK/data-$shards"
  bench "embedded, 1 node, $shards shard(s)" "$SERVE_URL" --create-users --data-dir "$WORK/data-$shards"
  stop_pid "$SERVE_PID"
done

if [ "${SKIP_PG:-0}" != 1 ]; then
  start_pg
  for nodes in 1 2 3; do
    BPORT=$(free_port)
    APORT=$(free_port)
    BACKENDS=()
    NODE_PIDS=()
    for i in $(seq "$nodes"); do
      start_serve "node-$nodes-$i" --shards 1 --store "$PG_URL" --public-url "http://127.0.0.1:$BPORT/sync"
      BACKENDS+=(--backend "127.0.0.1:$SERVE_PORT")
      NODE_PIDS+=("$SERVE_PID")
    done
    "$BIN" balance --listen "127.0.0.1:$BPORT" --admin-listen "127.0.0.1:$APORT" --public-url "http://127.0.0.1:$BPORT/sync" "${BACKENDS[@]}" \
      --log-level warn >"$WORK/balance-$nodes.log" 2>&1 &
    BAL_PID=$!
    PIDS+=("$BAL_PID")
    wait_health "http://127.0.0.1:$BPORT/health"
    # Members come up after the first health round.
    for _ in $(seq 100); do
      up=$(curl -sf "http://127.0.0.1:$APORT/status" | python3 -c 'import json,sys; s=json.load(sys.stdin); print(sum(1 for m in s.get("members",[]) if m.get("healthy", m.get("up"))))' 2>/dev/null || echo 0)
      [ "$up" -ge "$nodes" ] && break
      sleep 0.1
    done
    bench "postgres, $nodes node(s) + balancer" "http://127.0.0.1:$BPORT/sync" --create-users --store "$PG_URL"
    stop_pid "$BAL_PID"
    for pid in "${NODE_PIDS[@]}"; do stop_pid "$pid"; done
  done
fi

echo
printf '%s\n' "${ROWS[@]}"
