#!/usr/bin/env bash
# The load generator's own cost: CPU (utime+stime of the `shardsync load`
# process, from /usr/bin/time) per empty two-way session (WBXML, md5, 3
# messages), its max RSS and sessions/s, at several --concurrency values,
# against `shardsync serve --shards 2` (embedded store) on this machine.
#
# Per-session CPU is the difference between a run of 256 and one of 10,256
# sessions (same 256 devices and set-up), divided by 10,000: start-up, the
# set-up slow syncs and the report cancel out. The 256 users are created once
# before (argon2 hashing stays out of the measured processes); every run uses
# new device ids.
#
# Environment: CONCS ("32 64 128 256"), REPS (2), THREADS (1: --threads of the
# load process), OTHER_BIN (a second build, e.g. an older one: measured in
# turn with this one, each rep, so both see the same noise).
source "$(dirname "$0")/lib.sh"

CONCS=${CONCS:-32 64 128 256}
REPS=${REPS:-2}
THREADS=${THREADS:-1}
command -v /usr/bin/time >/dev/null || { echo "needs /usr/bin/time (GNU time)" >&2; exit 1; }

start_serve load-cost --shards 2 --data-dir "$WORK/data"
"$BIN" load --url "$SERVE_URL" --devices 256 --user-prefix lc- --device-prefix lc-warm- --sessions 256 \
  --create-users --data-dir "$WORK/data" --json --progress never >/dev/null

# one BIN CONC SESSIONS PREFIX: "cpu_s sessions_per_s errors max_rss_kib"
one() {
  local threads=()
  # A build without --threads (thread per slot) gets none.
  case "$("$1" load --help)" in *--threads*) threads=(--threads "$THREADS") ;; esac
  /usr/bin/time -o "$WORK/time" -f "%U %S %M" "$1" load --url "$SERVE_URL" --scenario empty-two-way \
    --encoding wbxml --devices 256 --items 5 --user-prefix lc- --device-prefix "$4" --sessions "$3" \
    --concurrency "$2" "${threads[@]}" --json --progress never >"$WORK/json"
  python3 -c 'import json,sys; t=open(sys.argv[1]).read().split(); j=json.load(open(sys.argv[2]))
print(float(t[0]) + float(t[1]), round(j["sessions_per_s"]), j["errors"], t[2])' "$WORK/time" "$WORK/json"
}

printf '%-12s %6s %4s %14s %12s %14s %8s\n' build concurrency rep "cpu_us/session" sessions/s "max_rss_MiB" errors
run=0
for c in $CONCS; do
  for rep in $(seq "$REPS"); do
    for bin in "$BIN" ${OTHER_BIN:+"$OTHER_BIN"}; do
      run=$((run + 1))
      read -r cpu_a _ err_a _ < <(one "$bin" "$c" 256 "lc-r$run-a-")
      read -r cpu_b sps err_b rss < <(one "$bin" "$c" 10256 "lc-r$run-b-")
      name=this; [ "$bin" != "$BIN" ] && name=other
      printf '%-12s %6s %4s %14s %12s %14s %8s\n' "$name" "$c" "$rep" \
        "$(awk -v a="$cpu_a" -v b="$cpu_b" 'BEGIN{printf "%.0f", (b - a) / 10000 * 1e6}')" "$sps" \
        "$(awk -v k="$rss" 'BEGIN{printf "%.0f", k / 1024}')" "$((err_a + err_b))"
    done
  done
done
echo "  ran: shardsync load --url URL --scenario empty-two-way --encoding wbxml --devices 256 --items 5 --user-prefix lc- --device-prefix NEW- --sessions 256|10256 --concurrency C [--threads $THREADS] --json" >&2
