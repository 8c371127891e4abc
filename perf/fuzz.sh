#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) each, one after the other,
# on one core (-jobs=1 equivalent: a single libFuzzer process).
#
#   perf/fuzz.sh [SECONDS] [TARGET...]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). On a stable toolchain the
# nightly-only flags cargo-fuzz passes are unlocked with RUSTC_BOOTSTRAP=1.
# CARGO_TARGET_DIR is honoured (keep fuzz builds apart from the others).
# Corpora live in fuzz/corpus/<target> (not committed) and are seeded from
# tests/fixtures/captures on every run; findings land in fuzz/artifacts/.
# A summary line per target (runs, execs/s) is appended to fuzz/fuzz-log.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${1:-60}
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
    TARGETS=(wbxml_decode xml_decode wbxml_roundtrip xml_roundtrip http_framing balancer_key engine_messages content_convert)
fi
# Nightly (e.g. RUSTUP_TOOLCHAIN=nightly) needs no unlocking, and setting it
# there would only change the build's environment.
if ! rustc -V | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi
# Rust is memory-safe here (#![deny(unsafe_code)]): no sanitizer, so more
# executions per second; debug assertions catch arithmetic overflow.
FUZZ_FLAGS=(--sanitizer none --debug-assertions)

seed() {
    local target=$1 pattern
    mkdir -p "fuzz/corpus/$target"
    case $target in
        wbxml_*) pattern='*.wbxml' ;;
        xml_*) pattern='*.xml' ;;
        http_framing) pattern='*.http' ;;
        balancer_key) pattern='*-c2s.*' ;;
        engine_messages | content_convert)
            # Whole client sessions (messages joined by the target's
            # separator, logins made auth-basic test:test so that the engine
            # gets past authentication) and the item texts they carry.
            python3 perf/fuzz_seeds.py "$target" tests/fixtures/captures "fuzz/corpus/$target"
            return
            ;;
    esac
    find tests/fixtures/captures -name "$pattern" | while read -r f; do
        # Flatten the path into a unique corpus file name.
        cp -n "$f" "fuzz/corpus/$target/seed-$(echo "$f" | tr '/' '_')" 2>/dev/null || true
    done
}

for t in "${TARGETS[@]}"; do
    seed "$t"
    mkdir -p "fuzz/artifacts/$t"
    log="fuzz/artifacts/$t/last-run.log"
    echo "== $t for ${SECONDS_PER_TARGET}s"
    set +e
    (cd fuzz && cargo fuzz run "${FUZZ_FLAGS[@]}" "$t" "corpus/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
        -max_len=65536 -artifact_prefix="artifacts/$t/" -print_final_stats=1) >"$log" 2>&1
    rc=$?
    set -e
    runs=$(grep -a 'stat::number_of_executed_units' "$log" | awk '{print $2}' | tail -1)
    rate=$(grep -a 'stat::average_exec_per_sec' "$log" | awk '{print $2}' | tail -1)
    echo "$(date -u +%FT%TZ) $t seconds=$SECONDS_PER_TARGET runs=${runs:-?} execs_per_sec=${rate:-?} rc=$rc" | tee -a fuzz/fuzz-log.txt
    if [ $rc -ne 0 ]; then
        echo "!! $t found something (rc=$rc), see $log and fuzz/artifacts/$t/" >&2
        tail -40 "$log" >&2
        exit $rc
    fi
done
