#!/usr/bin/env bash
# Profiles `shardsync serve` under a `shardsync load` run:
#   1. perf record with call graphs on the server's PID during the load
#      (--call-graph dwarf: release builds have no frame pointers, but they
#      carry debug info) → folded stacks → flamegraph SVG (inferno, `cargo install
#      inferno` when missing);
#   2. perf stat on the server's PID during the same load again.
# Prints the load's figures, the perf stat table, the top functions, and the
# path of the SVG (default target/perf/flamegraph-SCENARIO.svg).
#
# Environment: SCENARIO (slow-sync), ENCODING (wbxml), DEVICES (32), ITEMS
# (500), DURATION (8), CONCURRENCY (16), SHARDS (2), FREQ (499 Hz),
# OUT (the SVG path).
source "$(dirname "$0")/lib.sh"

SCENARIO=${SCENARIO:-slow-sync}
ENCODING=${ENCODING:-wbxml}
DEVICES=${DEVICES:-32}
ITEMS=${ITEMS:-500}
DURATION=${DURATION:-8}
CONCURRENCY=${CONCURRENCY:-16}
SHARDS=${SHARDS:-2}
FREQ=${FREQ:-499}
OUT=${OUT:-target/perf/flamegraph-$SCENARIO.svg}
mkdir -p "$(dirname "$OUT")"

if ! command -v perf >/dev/null; then
  # Debian's perf (like the other perf scripts' packages, installed on first use).
  SUDO=(); [ "$(id -u)" = 0 ] || SUDO=(sudo)
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q linux-perf >/dev/null \
    || { echo "perf not found and apt-get install linux-perf failed" >&2; exit 1; }
fi
if ! command -v inferno-flamegraph >/dev/null; then
  echo "installing inferno (cargo install inferno)" >&2
  cargo install inferno --locked >&2
fi
export PATH="$HOME/.cargo/bin:$PATH"

start_serve profile --shards "$SHARDS" --data-dir "$WORK/data"
LOAD=(--url "$SERVE_URL" --scenario "$SCENARIO" --encoding "$ENCODING" --devices "$DEVICES" --items "$ITEMS"
      --concurrency "$CONCURRENCY" --create-users --data-dir "$WORK/data")
# Create the users (argon2) and, for the two-way scenarios, run the set-up
# once before perf starts, so the profile shows syncing, not password hashing.
load "${LOAD[@]}" --duration 1 --device-prefix warm- >/dev/null

LOAD+=(--duration "$DURATION")
echo "profile: shardsync load ${LOAD[*]}"
perf record -F "$FREQ" --call-graph dwarf,16384 -p "$SERVE_PID" -o "$WORK/perf.data" 2>"$WORK/perf-record.err" &
PERF_PID=$!
sleep 0.5
J=$(load "${LOAD[@]}")
kill -INT "$PERF_PID"; wait "$PERF_PID" || true
printf 'record run: %.1f sessions/s, %.0f items/s, p99 %.2f ms, errors %s\n' \
  "$(jget "$J" .sessions_per_s)" "$(jget "$J" .items_per_s)" "$(jget "$J" .latency_ms.p99)" "$(jget "$J" .errors)"

perf script -i "$WORK/perf.data" 2>/dev/null | inferno-collapse-perf >"$WORK/folded.txt"
inferno-flamegraph --title "shardsync serve: $SCENARIO $ENCODING" <"$WORK/folded.txt" >"$OUT"
echo "flamegraph: $OUT ($(wc -l <"$WORK/folded.txt") distinct stacks)"
echo
echo "top functions (self samples):"
perf report -i "$WORK/perf.data" --no-children --sort symbol --stdio 2>/dev/null \
  | grep -E '^ +[0-9]' | head -15 | cut -c1-120 || true

echo
echo "perf stat (server PID, second run of the same load):"
perf stat -e task-clock,context-switches,cpu-migrations,page-faults,cycles,instructions -p "$SERVE_PID" \
  -o "$WORK/stat.txt" &
STAT_PID=$!
sleep 0.2
J=$(load "${LOAD[@]}")
kill -INT "$STAT_PID"; wait "$STAT_PID" || true
grep -vE "^\s*$|^#" "$WORK/stat.txt" || true
printf 'stat run: %.1f sessions/s, %.0f items/s, %s sessions, %s items\n' \
  "$(jget "$J" .sessions_per_s)" "$(jget "$J" .items_per_s)" "$(jget "$J" .sessions)" "$(jget "$J" .items)"
