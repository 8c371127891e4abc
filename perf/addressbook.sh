#!/usr/bin/env bash
# Empty two-way sync cost by address-book size: server CPU (utime+stime of
# `shardsync serve --shards 2`, embedded store) per empty two-way session
# (WBXML, md5, 3 messages) when each user holds ITEMS contacts.
#
# Per-session CPU is the difference between two fresh servers taken through
# the same user creation, set-up slow syncs (one per device) and then SMALL
# or BIG sessions, divided by BIG - SMALL: everything but the extra sessions
# cancels out.
#
# Environment: SIZES ("5 100 1000"), DEVICES (16), SMALL (100), BIG (2100),
# CONCURRENCY (16), REPS (1), OTHER_BIN (a second build: its own server,
# measured in turn with this one each rep, so both see the same noise),
# STORE (embedded, or postgres: a private PostgreSQL, a new database per
# server, and its CPU (postmaster and backends) counted with the server's).
source "$(dirname "$0")/lib.sh"

SIZES=${SIZES:-5 100 1000}
DEVICES=${DEVICES:-16}
SMALL=${SMALL:-100}
BIG=${BIG:-2100}
CONCURRENCY=${CONCURRENCY:-16}
REPS=${REPS:-1}
STORE=${STORE:-embedded}
case "$STORE" in
  embedded) ;;
  postgres) start_pg ;;
  *) echo "STORE is embedded or postgres, not $STORE" >&2; exit 2 ;;
esac

# total BIN ITEMS SESSIONS NAME: "server_cpu_ticks sessions_per_s errors" of a
# fresh server through user creation, set-up slow syncs and SESSIONS sessions.
total() {
  local bin=$1 items=$2 sessions=$3 name=$4 t0 t1 j store
  if [ "$STORE" = postgres ]; then
    store=(--store "$(create_pg_db "ab_${name//[^a-z0-9]/_}")")
  else
    store=(--data-dir "$WORK/data-$name")
  fi
  BIN=$bin start_serve "ab-$name" --shards 2 "${store[@]}"
  t0=$(( $(cpu_ticks "$SERVE_PID") + $(store_ticks) ))
  j=$(BIN=$bin load --url "$SERVE_URL" --scenario empty-two-way --encoding wbxml --devices "$DEVICES" \
    --items "$items" --sessions "$sessions" --concurrency "$CONCURRENCY" --create-users "${store[@]}")
  t1=$(( $(cpu_ticks "$SERVE_PID") + $(store_ticks) ))
  stop_pid "$SERVE_PID"
  rm -rf "$WORK/data-$name"
  echo "$((t1 - t0)) $(printf '%.0f' "$(jget "$j" .sessions_per_s)") $(jget "$j" .errors)"
}

# CPU ticks of PostgreSQL (0 on the embedded store).
store_ticks() { if [ "$STORE" = postgres ]; then pg_cpu_ticks; else echo 0; fi; }

# one BIN ITEMS REP: "server_us_per_session sessions_per_s errors": the same
# users, devices and set-up twice (SMALL and BIG sessions), so the difference
# is BIG - SMALL empty two-way sessions against address books of ITEMS.
one() {
  local a b sps e1 e2
  read -r a _ e1 < <(total "$1" "$2" "$SMALL" "$(basename "$1")-$2-$3-small")
  read -r b sps e2 < <(total "$1" "$2" "$BIG" "$(basename "$1")-$2-$3-big")
  echo "$(awk -v a="$a" -v b="$b" -v hz="$HZ" -v n=$((BIG - SMALL)) \
    'BEGIN{printf "%.0f", (b - a) / hz / n * 1e6}') $sps $((e1 + e2))"
}

echo "empty two-way by address-book size ($STORE store): $DEVICES devices, sessions $BIG - $SMALL, concurrency $CONCURRENCY, $(nproc) cpus"
printf '%-10s %8s %4s %16s %12s %8s\n' build items rep "cpu_us/session" sessions/s errors
for items in $SIZES; do
  for rep in $(seq "$REPS"); do
    for bin in "$BIN" ${OTHER_BIN:+"$OTHER_BIN"}; do
      name=this; [ "$bin" != "$BIN" ] && name=other
      read -r us sps errors < <(one "$bin" "$items" "$rep")
      printf '%-10s %8s %4s %16s %12s %8s\n' "$name" "$items" "$rep" "$us" "$sps" "$errors"
    done
  done
done
