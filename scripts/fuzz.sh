#!/usr/bin/env bash
# Runs the fuzz targets (fuzz/, cargo-fuzz layout) one after the other.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# SECONDS per target (default 60); targets default to all of them:
#   wire_parse      wire::parse over every link type
#   engine          the Engine fed frame sequences with arbitrary timestamps
#   capture_reader  the pcap/pcapng reader over arbitrary bytes
#   report          the control plane's report decoder, validation, aggregation
#
# Each target asserts invariants (fuzz/src/{dataplane,ctrl}.rs), not only "no
# panic"; builds have debug assertions and overflow checks on (-a) and
# AddressSanitizer (cargo-fuzz's default). One libFuzzer process at a time.
#
# Seeds are read from fuzz/corpus/TARGET (never written to); what libFuzzer
# finds on the way goes to fuzz/work/TARGET (kept between runs, git-ignored),
# crashes to fuzz/artifacts/TARGET/. A crash: reproduce with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run -O -a TARGET fuzz/artifacts/TARGET/crash-...
# then minimise it (cargo fuzz tmin), copy it into fuzz/corpus/TARGET/ under a
# name that says what it broke, fix the code, and `cargo test` runs it from
# then on (dataplane/tests/fuzz_regressions.rs, ctrl/tests/fuzz_regressions.rs).
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a C++ compiler. cargo-fuzz
# passes nightly flags (-Zsanitizer=address); on a stable toolchain this script
# sets RUSTC_BOOTSTRAP=1 so that stable rustc accepts them.
set -euo pipefail

secs=${1:-60}
shift || true
if ! [[ $secs =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
    echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2
    exit 2
fi
all=(wire_parse engine capture_reader report)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")

cd "$(dirname "$0")/.."
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "scripts/fuzz.sh: cargo-fuzz is not installed; run: cargo install cargo-fuzz" >&2
    exit 1
fi
if ! rustc -V | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi

echo "building the fuzz targets (release, debug assertions, ASan)..." >&2
for t in "${targets[@]}"; do
    cargo fuzz build -O -a "$t" >&2
done

failed=()
summary=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/work/$t" "fuzz/artifacts/$t"
    log="fuzz/work/$t.log"
    echo "fuzzing $t for ${secs}s (log: $log)..." >&2
    dict=()
    [ -f "fuzz/dicts/$t.dict" ] && dict=(-dict="fuzz/dicts/$t.dict")
    set +e
    cargo fuzz run -O -a "$t" "fuzz/work/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -print_final_stats=1 \
        -artifact_prefix="fuzz/artifacts/$t/" "${dict[@]}" >"$log" 2>&1
    rc=$?
    set -e
    runs=$(grep -m1 '^stat::number_of_executed_units' "$log" | awk '{print $2}')
    rate=$(grep -m1 '^stat::average_exec_per_sec' "$log" | awk '{print $2}')
    cov=$(grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE)' "$log" | tail -1 | grep -o 'cov: [0-9]*' || true)
    if [ $rc -ne 0 ]; then
        failed+=("$t")
        crash=$(grep -o "fuzz/artifacts/$t/[a-z-]*[0-9a-f]*" "$log" | tail -1 || true)
        summary+=("$t: FAILED (exit $rc) after ${runs:-?} runs; input: ${crash:-see $log}")
        grep -m5 -E "panicked at|ERROR: AddressSanitizer|ERROR: libFuzzer" "$log" >&2 || true
    else
        summary+=("$t: ok, ${runs:-?} runs, ${rate:-?} exec/s, ${cov:-cov ?}")
    fi
done

printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "crashes in: ${failed[*]}" >&2
    exit 1
fi
