#!/usr/bin/env bash
# Conformance suite: SyncEvolution 2.0.0's `client-test` against `shardsync serve`.
#
# client-test is SyncEvolution's integration test program (CppUnit). It runs two SyncML clients,
# A and B, logged in as one user, through the server under test and compares both clients' data
# with what it expects after every step; its fault suites also cut messages, suspend and resume
# sessions and resend requests. The first call builds it from Debian's syncevolution source
# package into target/client-test/ (a few minutes, see tests/conformance/build-client-test.sh);
# later calls reuse that build.
#
#   tests/conformance.sh [OPTIONS] [SUITE...]
#
# SUITE (default: contact event task):
#   contact | event | task         the plain sync tests of one data kind (vCard 3.0, iCalendar
#                                  2.0 events, iCalendar 2.0 tasks) = Client::Sync::file_<kind>
#   contact::Resend  event::Retry  a fault suite: Resend, ResendProxy, Suspend, Retry
#   contact::testCopy              one test; contact::Suspend::testUserSuspendServerAddBig
#                                  one test of a fault suite
#   Client::Sync::...              a client-test name as it is
#   A+B                            several names in one run (one server, one pair of clients)
# Every SUITE argument runs against its own fresh server (new store, user test/test) with fresh
# client configurations and databases.
#
# Options:
#   --all                 also run the fault suites Resend, ResendProxy, Suspend and Retry for
#                         contact and event (about an hour on 2 cores)
#   --xml                 XML messages (default: WBXML)
#   --num-items N         items per test where client-test uses many (default: its 100)
#   --store KIND          embedded (default; a private temporary data dir per suite) or postgres
#                         (a private PostgreSQL server started for this run, a fresh database
#                         per suite; needs the postgresql package)
#   --loglevel N          client log level (default 4: every SyncML message as XML in each
#                         session dir; 1: little more than the verdicts, saves disk)
#   --server-log LEVEL    shardsync --log-level (default debug)
#   --serve-arg ARG       extra argument for `shardsync serve` (repeatable)
#   --alarm SECONDS       per-test time limit (default 1800)
#   --out DIR             results root (default target/client-test/runs)
#   --keep-logs           keep the session logs of passed tests too (by default only failed
#                         tests keep theirs: about 2 MB per sync, 0.5 GB per plain suite)
#   --build-only          build client-test, run nothing
#   -h, --help            this text
#
# Environment:
#   SHARDSYNC_BIN         server binary (default target/release/shardsync; built with cargo only
#                         when that default is missing)
#   DEB_MIRROR, SYNCEVO_GIT, JOBS   see tests/conformance/build-client-test.sh
#
# Output: "PASS <test>" / "FAIL <test>  <failure report>" per test, a line
# "SUMMARY suite=... passed=N failed=M total=T ..." per SUITE and a final "SUMMARY all ...".
# Exit status 0 only when every test passed. Each SUITE leaves a result dir
# (<results root>/<stamp>-<suite>/) with client-test.out, results.txt, server.log,
# work/<test>.txt (client-test's log of one test with its failure report) and
# work/<test>.<step>.client.<A|B>/ (the client's session log of each sync, the part of the
# server log written meanwhile, and at loglevel >= 4 every message as XML; kept for failed
# tests only unless --keep-logs).
#
# Test configuration: only CLIENT_TEST_STRIP_PARAMETERS=X-EVOLUTION-UI-SLOT. The client's
# Synthesis engine sends the X-EVOLUTION-UI-SLOT parameter (vCard TEL/EMAIL slot numbers) only
# to a server that identifies itself as SyncEvolution (a remote rule keyed on its DevInf), so
# with any other server client A keeps slots that never reach client B, and synccompare must
# not count that difference. client-test itself applies the same setting in the tests that
# compare against its reference data.
#
# Runs as root or as a user with sudo (sudo only to install build dependencies). Everything
# listens on 127.0.0.1 only: shardsync, PostgreSQL and the ResendProxy suite's proxy.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CHECKOUT=$(cd "$HERE/.." && pwd)
HELPERS=$HERE/conformance
CT=$CHECKOUT/target/client-test
BUILD=$CT/build
SRC=$CT/src

usage() { sed -n '2,/^set -euo pipefail/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
die() { echo "conformance.sh: $*" >&2; exit 2; }

ALL=0 XML=0 NUM_ITEMS='' STORE=embedded LOGLEVEL=4 SERVER_LOG=debug ALARM=1800 BUILD_ONLY=0 KEEP_LOGS=0
OUT_ROOT=$CT/runs
SERVE_ARGS=()
SUITES=()
while [ $# -gt 0 ]; do
    case $1 in
        --all) ALL=1 ;;
        --xml) XML=1 ;;
        --num-items) NUM_ITEMS=${2:?--num-items needs a number}; shift ;;
        --store) STORE=${2:?--store needs embedded or postgres}; shift ;;
        --loglevel) LOGLEVEL=${2:?}; shift ;;
        --server-log) SERVER_LOG=${2:?}; shift ;;
        --serve-arg) SERVE_ARGS+=("${2:?}"); shift ;;
        --alarm) ALARM=${2:?}; shift ;;
        --out) OUT_ROOT=${2:?}; shift ;;
        --build-only) BUILD_ONLY=1 ;;
        --keep-logs) KEEP_LOGS=1 ;;
        -h|--help) usage; exit 0 ;;
        --) shift; SUITES+=("$@"); break ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) SUITES+=("$1") ;;
    esac
    shift
done
case $STORE in embedded|postgres) ;; *) die "--store must be embedded or postgres" ;; esac
[[ $NUM_ITEMS =~ ^[0-9]*$ ]] || die "--num-items needs a number"
if [ ${#SUITES[@]} -eq 0 ]; then
    SUITES=(contact event task)
fi
if [ "$ALL" = 1 ]; then
    for kind in contact event; do
        for fault in Resend ResendProxy Suspend Retry; do
            SUITES+=("$kind::$fault")
        done
    done
fi

# SUITE shorthand -> client-test name
test_name() {
    case $1 in
        Client::*) echo "$1" ;;
        contact|event|task) echo "Client::Sync::file_$1" ;;
        contact::?*|event::?*|task::?*) echo "Client::Sync::file_${1%%::*}::${1#*::}" ;;
        *) die "unknown suite '$1' (contact, event, task, <kind>::<suite or test>, Client::...)" ;;
    esac
}
for suite in "${SUITES[@]}"; do
    IFS='+' read -r -a parts <<<"$suite"
    [ ${#parts[@]} -gt 0 ] || die "empty suite name"
    for part in "${parts[@]}"; do
        test_name "$part" >/dev/null
    done
done

# --- client-test ----------------------------------------------------------------------------
"$HELPERS/build-client-test.sh" "$CT"
[ "$BUILD_ONLY" = 0 ] || exit 0

# --- shardsync --------------------------------------------------------------------------------
if [ -z "${SHARDSYNC_BIN:-}" ]; then
    SHARDSYNC_BIN=$CHECKOUT/target/release/shardsync
    if [ ! -x "$SHARDSYNC_BIN" ]; then
        echo "== $SHARDSYNC_BIN missing: cargo build --release --bin shardsync"
        (cd "$CHECKOUT" && cargo build --release --bin shardsync)
    fi
fi
[ -x "$SHARDSYNC_BIN" ] || die "SHARDSYNC_BIN=$SHARDSYNC_BIN is not an executable"
SHARDSYNC_BIN=$(cd "$(dirname "$SHARDSYNC_BIN")" && pwd)/$(basename "$SHARDSYNC_BIN")

mkdir -p "$OUT_ROOT"
OUT_ROOT=$(cd "$OUT_ROOT" && pwd)
# Server stores live in a private temporary dir with a short path: shardsync's admin socket
# (<data dir>/admin.sock, created via <data dir>/.admin-sock.<pid>.tmp/s) must fit the
# 107 bytes of a Unix socket path.
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/shardsync-ct.XXXXXX")
[ ${#SCRATCH} -le 60 ] || { rmdir "$SCRATCH"; SCRATCH=$(mktemp -d /tmp/shardsync-ct.XXXXXX); }

SERVER_PID='' PROXY_PID='' PG_DIR='' PG_PID='' PG_BIN='' PG_PORT=''
AS_PG=()
stop_server() {
    if [ -n "$PROXY_PID" ]; then
        kill "$PROXY_PID" 2>/dev/null || true
        wait "$PROXY_PID" 2>/dev/null || true
        PROXY_PID=''
    fi
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=''
    fi
}
pg_tool() { (cd "$PG_DIR" && "${AS_PG[@]}" "$PG_BIN/$1" "${@:2}"); }
stop_postgres() {
    [ -n "$PG_DIR" ] || return 0
    if [ -f "$PG_DIR/data/postmaster.pid" ]; then
        pg_tool pg_ctl -D "$PG_DIR/data" -m fast -w -t 60 stop >/dev/null 2>&1 \
            || { [ -z "$PG_PID" ] || kill -KILL "$PG_PID" 2>/dev/null || true; }
    fi
    rm -rf "$PG_DIR"
    PG_DIR=''
}
cleanup() {
    stop_server
    stop_postgres
    rm -rf "$SCRATCH"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- PostgreSQL (--store postgres) ----------------------------------------------------------
# Like the Rust tests (tests/support_pg): initdb in a temporary dir, pg_ctl start on a free
# loopback port with a private socket dir, trust auth for role "shardsync". PostgreSQL refuses
# to run as root; as root its binaries run as the OS user postgres.
start_postgres() {
    if command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; then
        PG_BIN=$(pg_config --bindir)
    else
        PG_BIN=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n 1)
    fi
    if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ] || [ ! -x "$PG_BIN/pg_ctl" ]; then
        die "PostgreSQL server binaries not found: install the postgresql package"
    fi
    PG_DIR=$(mktemp -d /tmp/shardsync-ct-pg.XXXXXX)
    mkdir "$PG_DIR/sock"
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || die "running as root needs the OS user postgres (postgresql package)"
        chown -R postgres: "$PG_DIR"
        AS_PG=(runuser -u postgres --)
    fi
    pg_tool initdb -D "$PG_DIR/data" -U shardsync --auth=trust -E UTF8 --locale=C \
        --no-instructions >"$PG_DIR/initdb.log" 2>&1 \
        || { cat "$PG_DIR/initdb.log" >&2; die "initdb failed"; }
    local attempt
    for attempt in 1 2 3 4 5; do
        PG_PORT=$(free_port)
        if pg_tool pg_ctl -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
            -o "-p $PG_PORT -k $PG_DIR/sock -c listen_addresses=127.0.0.1 -c fsync=on" \
            start >/dev/null 2>&1; then
            PG_PID=$(head -n 1 "$PG_DIR/data/postmaster.pid")
            echo "== PostgreSQL on 127.0.0.1:$PG_PORT (pid $PG_PID, $PG_DIR)"
            return 0
        fi
        echo "PostgreSQL start attempt $attempt failed" >&2
    done
    tail -n 20 "$PG_DIR/server.log" >&2
    die "PostgreSQL did not start"
}

# --- one suite --------------------------------------------------------------------------------
SUITE_NO=0
run_suite() {
    local suite=$1 names=() parts=() part
    IFS='+' read -r -a parts <<<"$suite"
    for part in "${parts[@]}"; do
        names+=("$(test_name "$part")")
    done
    SUITE_NO=$((SUITE_NO + 1))
    local slug run sources start
    slug=$(printf '%s' "$suite" | tr -c 'A-Za-z0-9_.+-' '_' | cut -c1-60)
    run=$OUT_ROOT/$(date +%Y%m%d-%H%M%S)-$$-$slug
    mkdir -p "$run"/{home,config,data,cache,db,work}
    start=$(date +%s)
    # client-test's test sources (file_contact, ...) named by the tests
    sources=$(printf '%s\n' "${names[@]}" | sed -n 's/^Client::Sync::\(file_[a-z]*\).*/\1/p' | sort -u | paste -sd, -)
    [ -n "$sources" ] || sources=file_contact

    # fresh server, user test/test
    local data=$SCRATCH/$SUITE_NO store_args=()
    mkdir -p "$data"
    if [ "$STORE" = postgres ]; then
        local db=shardsync_ct_$SUITE_NO
        pg_tool createdb -h 127.0.0.1 -p "$PG_PORT" -U shardsync "$db"
        store_args=(--store "postgres://shardsync@127.0.0.1:$PG_PORT/$db")
        "$SHARDSYNC_BIN" migrate "${store_args[@]}" >"$run/migrate.log" 2>&1 \
            || { cat "$run/migrate.log" >&2; die "shardsync migrate failed"; }
    fi
    echo test | "$SHARDSYNC_BIN" user add test --data-dir "$data" "${store_args[@]}" >"$run/user-add.log" 2>&1 \
        || { cat "$run/user-add.log" >&2; die "shardsync user add failed"; }
    # client-test copies the part of this log written during each sync into that sync's
    # session dir and truncates it: the server must append (O_APPEND) to it.
    : >"$run/server.log"
    "$SHARDSYNC_BIN" serve --listen 127.0.0.1:0 --data-dir "$data" "${store_args[@]}" \
        --log-level "$SERVER_LOG" "${SERVE_ARGS[@]}" >>"$run/server.log" 2>&1 &
    SERVER_PID=$!
    local port=''
    for _ in $(seq 300); do
        port=$(sed -n 's/.*shardsync serving listen=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$run/server.log" | head -n 1)
        [ -z "$port" ] || break
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$port" ] || { tail -n 20 "$run/server.log" >&2; die "shardsync did not start"; }
    for _ in $(seq 100); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health" || true)" = 200 ] && break
        kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 20 "$run/server.log" >&2; die "shardsync exited"; }
        sleep 0.1
    done
    cp "$run/server.log" "$run/server-start.log"

    # the clients' environment: everything under the result dir, no proxies, no D-Bus
    local client_env=(-u DBUS_SESSION_BUS_ADDRESS -u DISPLAY -u http_proxy -u https_proxy
                      -u HTTP_PROXY -u HTTPS_PROXY -u all_proxy -u ALL_PROXY -u no_proxy -u NO_PROXY
                      "HOME=$run/home" "XDG_CONFIG_HOME=$run/config" "XDG_DATA_HOME=$run/data"
                      "XDG_CACHE_HOME=$run/cache" LC_ALL=C.UTF-8 TZ=UTC
                      "SYNCEVOLUTION_TEMPLATE_DIR=$SRC/src/templates"
                      "SYNCEVOLUTION_XML_CONFIG_DIR=$SRC/src/syncevo/configs")
    # Two peers as client-test expects them: shardsync_<n> in context client-test-<n>, with the
    # device IDs client-test would give them, each with its own file databases.
    local n device kind name format uri
    for n in 1 2; do
        device=$([ "$n" = 1 ] && echo sc-api-nat || echo sc-pim-ppc)
        local props=(keyring=no "syncURL=http://127.0.0.1:$port/sync" username=test password=test
                     "deviceId=$device" "PeerName=shardsync_$n" "loglevel=$LOGLEVEL" printChanges=0 dumpData=0)
        for kind in contact:text/vcard:addressbook event:text/calendar:calendar task:text/calendar:todo; do
            IFS=: read -r name format uri <<<"$kind"
            props+=("file_$name/backend=file" "file_$name/databaseFormat=$format" "file_$name/uri=$uri"
                    "file_$name/database=file://$run/db/file_${name}_$n")
        done
        env "${client_env[@]}" "$BUILD/src/syncevolution" --daemon=no --configure --template none \
            "${props[@]}" "shardsync_$n@client-test-$n" file_contact file_event file_task \
            >>"$run/configure.log" 2>&1 || { cat "$run/configure.log" >&2; die "client configuration failed"; }
    done

    local test_env=(CLIENT_TEST_SERVER=shardsync "CLIENT_TEST_SOURCES=$sources"
                    "CLIENT_TEST_EVOLUTION_PREFIX=file://$run/db/" "CLIENT_TEST_LOG=$run/server.log"
                    "CLIENT_TEST_ALARM=$ALARM" CLIENT_TEST_STRIP_PARAMETERS=X-EVOLUTION-UI-SLOT)
    [ -z "$NUM_ITEMS" ] || test_env+=("CLIENT_TEST_NUM_ITEMS=$NUM_ITEMS")
    [ "$XML" = 0 ] || test_env+=(CLIENT_TEST_XML=1)
    # the fault suites exist only when their switch is set
    local joined=" ${names[*]} "
    [[ $joined != *::Retry[:\ ]* ]] || test_env+=(CLIENT_TEST_RETRY=t)
    [[ $joined != *::Suspend[:\ ]* ]] || test_env+=(CLIENT_TEST_SUSPEND=t)
    [[ $joined != *::Resend[:\ ]* ]] || test_env+=(CLIENT_TEST_RESEND=t)
    if [[ $joined == *::ResendProxy[:\ ]* ]]; then
        # four consecutive free loopback ports for the proxy
        local base
        base=$(python3 -c '
import socket
for base in range(20000, 60000, 4):
    try:
        socks = [socket.socket() for _ in range(4)]
        for i, s in enumerate(socks):
            s.bind(("127.0.0.1", base + i))
    except OSError:
        continue
    finally:
        for s in socks:
            s.close()
    print(base)
    break')
        python3 "$HELPERS/resend-proxy.py" --base "$base" >"$run/resend-proxy.log" 2>&1 &
        PROXY_PID=$!
        for _ in $(seq 50); do
            grep -q "listening on 127.0.0.1:$((base + 3))" "$run/resend-proxy.log" && break
            sleep 0.1
        done
        test_env+=("CLIENT_TEST_RESEND_PROXY=$base")
    fi

    # client-test runs synccompare, testcases/ and templates/ from its working directory and
    # writes its logs there
    for f in client-test synccompare testcases templates synclog2html; do
        [ ! -e "$BUILD/src/$f" ] || ln -sfn "$BUILD/src/$f" "$run/work/$f"
    done
    printf '%s\n' "${test_env[@]}" >"$run/client-test.env"
    echo "== $suite: ${names[*]}"
    echo "   shardsync 127.0.0.1:$port ($STORE store, $([ "$XML" = 1 ] && echo XML || echo WBXML)), results in $run"
    local rc=0
    (cd "$run/work" && env "${client_env[@]}" "${test_env[@]}" ./client-test "${names[@]}") \
        >"$run/client-test.out" 2>&1 || rc=$?
    stop_server
    if [ "$STORE" = embedded ]; then
        rm -rf "$data"
    fi
    local verdict=0 summary
    python3 "$HELPERS/parse-results.py" "$run" --suite "$suite" --rc "$rc" \
        --wall "$(( $(date +%s) - start ))" || verdict=1
    summary=$(tail -n 1 "$run/results.txt")
    TOTAL_PASSED=$((TOTAL_PASSED + $(sed -n 's/.* passed=\([0-9]*\).*/\1/p' <<<"$summary")))
    TOTAL_TESTS=$((TOTAL_TESTS + $(sed -n 's/.* total=\([0-9]*\).*/\1/p' <<<"$summary")))
    [ "$verdict" = 0 ] || FAILED_SUITES+=("$suite")
    if [ "$KEEP_LOGS" = 0 ]; then
        # client-test names a test's files after the test, with '_' for '::'
        local passed_test prefix
        while read -r passed_test; do
            prefix=${passed_test//::/_}
            rm -rf "$run/work/$prefix".*.client.*
        done < <(sed -n 's/^PASS \(Client::[^ ]*\).*/\1/p' "$run/results.txt")
    fi
}

[ "$STORE" = embedded ] || start_postgres
TOTAL_PASSED=0 TOTAL_TESTS=0
FAILED_SUITES=()
T0=$(date +%s)
for suite in "${SUITES[@]}"; do
    run_suite "$suite"
done
echo "SUMMARY all passed=$TOTAL_PASSED total=$TOTAL_TESTS suites=${#SUITES[@]}" \
     "failed_suites=${#FAILED_SUITES[@]}${FAILED_SUITES[*]:+ (${FAILED_SUITES[*]})}" \
     "store=$STORE encoding=$([ "$XML" = 1 ] && echo xml || echo wbxml) wall_s=$(( $(date +%s) - T0 ))"
[ ${#FAILED_SUITES[@]} -eq 0 ]
