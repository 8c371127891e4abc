#!/usr/bin/env bash
# THE test command of shardsync (the README and .ci/run call exactly this).
#
#   tests/run.sh                 install what the tests need (Debian 12, apt), build, run every
#                                test, then the benches in a quick smoke mode
#   tests/run.sh FILTER...       same, but only `cargo test` with these arguments, no benches
#                                (e.g. `tests/run.sh --test realclient contacts_vcard21`)
#
# Environment:
#   SHARDSYNC_SKIP_INSTALL=1     do not check/install Debian packages
#   SHARDSYNC_SKIP_BENCH=1       do not run the bench smoke run
#   SHARDSYNC_SKIP_CONFORMANCE=1 do not run SyncEvolution's client-test plain suites
#   SHARDSYNC_TEST_TARGET=refserver
#                                run the real-client tests against SyncEvolution's own SyncML
#                                server instead of `shardsync serve` (validates the harness only)
#   SHARDSYNC_TEST_KEEP=1        keep client/server scratch dirs under target/ for inspection
#
# Runs as root, or as a user with sudo for the package installation. Exits non-zero on any failure.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DEBIAN_FRONTEND=noninteractive
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

step() { printf '\n==> %s\n' "$*"; }

# --- 1. packages ---------------------------------------------------------------------------------
# syncevolution, syncevolution-http: the real SyncML client (and its server, the reference peer)
# python3-twisted/-dbus/-gi, dbus-bin: the reference server's HTTP front end and private D-Bus
# gcc, libc6-dev: build the LD_PRELOAD libcurl shim that Debian's client needs (tests/support/curlfix.c)
# libwbxml2-utils: wbxml2xml for looking at WBXML captures; wrk: HTTP load tests (perf/)
# postgresql: server binaries for the PostgreSQL store tests
PACKAGES=(
    syncevolution syncevolution-http
    python3 python3-twisted python3-dbus python3-gi dbus-bin
    gcc libc6-dev
    libwbxml2-utils wrk
    postgresql
)
if [ "${SHARDSYNC_SKIP_INSTALL:-0}" != 1 ]; then
    step "checking Debian packages"
    missing=()
    for p in "${PACKAGES[@]}"; do
        status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
        [ "$status" = "install ok installed" ] || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        SUDO=()
        if [ "$(id -u)" != 0 ]; then
            command -v sudo >/dev/null || { echo "run as root or install sudo: missing ${missing[*]}" >&2; exit 1; }
            SUDO=(sudo)
        fi
        echo "installing: ${missing[*]}"
        # Wait for another apt/dpkg run (unattended-upgrades, a provisioning script) instead of
        # failing on its lock.
        LOCK_WAIT=(-o DPkg::Lock::Timeout=900)
        "${SUDO[@]}" apt-get "${LOCK_WAIT[@]}" update -q
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${LOCK_WAIT[@]}" install -y -q --no-install-recommends "${missing[@]}"
    else
        echo "all present: ${PACKAGES[*]}"
    fi
fi

command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }

# --- 2. build ------------------------------------------------------------------------------------
# Release: the real-client tests push thousands of items through the server.
step "cargo build --release --bins"
cargo build --release --bins

# --- 3. tests ------------------------------------------------------------------------------------
if [ $# -gt 0 ]; then
    step "cargo test --release $*"
    cargo test --release "$@"
    exit 0
fi
step "cargo test --release"
cargo test --release
# The same SyncEvolution scenarios with the server on PostgreSQL (a private server per test).
step "SHARDSYNC_TEST_STORE=postgres cargo test --release --test realclient"
SHARDSYNC_TEST_STORE=postgres cargo test --release --test realclient

# SyncEvolution's own conformance suite (client-test), the plain suites: builds client-test from
# Debian's source package into target/client-test/ the first time (its build dependencies come
# from apt, waiting for the dpkg lock), then about 10 minutes. The fault suites: --all, by hand.
if [ "${SHARDSYNC_SKIP_CONFORMANCE:-0}" != 1 ]; then
    step "tests/conformance.sh contact event task"
    SHARDSYNC_BIN=target/release/shardsync bash tests/conformance.sh contact event task
fi

# --- 4. benches (smoke) --------------------------------------------------------------------------
# Each criterion bench target once, briefly: proves the benches build and run. Real numbers come
# from a plain `cargo bench`. Only bench targets are run (the lib's libtest harness would reject
# criterion's flags).
if [ "${SHARDSYNC_SKIP_BENCH:-0}" != 1 ]; then
    mapfile -t BENCHES < <(cargo metadata --no-deps --format-version 1 | python3 -c '
import json, sys
for pkg in json.load(sys.stdin)["packages"]:
    for t in pkg["targets"]:
        if "bench" in t["kind"]:
            print(t["name"])
')
    if [ ${#BENCHES[@]} -eq 0 ]; then
        step "no bench targets yet"
    fi
    for b in "${BENCHES[@]}"; do
        step "cargo bench --bench $b (smoke)"
        cargo bench --bench "$b" -- --quick --warm-up-time 0.2 --measurement-time 0.5 --noplot
    done
fi

step "all tests passed"
