#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this after scripts/setup.sh):
# format, lints, unit + scenario tests, the root-only namespace/XDP lab tests
# (they skip loudly when not root), a build of the benches, and each fuzz
# target for a bounded time.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
step() { printf '\n== %s\n' "$*" >&2; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, all features, -D warnings)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "cargo test (workspace, all features)"
# The lab tests share the namespace lab's CPU budget: one test at a time.
cargo test --workspace --all-features -- --test-threads=1

step "benches build and link (dev profile; numbers come from cargo bench, see benches/README.md)"
cargo test --workspace --all-features --benches --no-run

step "fuzz targets, each for ${WIRELENS_FUZZ_SECS:-15} s (scripts/fuzz.sh; cargo-fuzz from scripts/setup.sh)"
# libFuzzer with ASan on each of the 4 targets (fuzz/), after a release build
# of them with sanitizer and coverage instrumentation. Measured on this
# project's 2-core machine, quiet: cold build 5 min 14 s, the four 15 s runs
# 69 s. WIRELENS_FUZZ_SECS=N runs each target N s; 0 skips the step.
if [ "${WIRELENS_FUZZ_SECS:-15}" = "0" ]; then
  echo "test.sh: SKIP fuzz targets (WIRELENS_FUZZ_SECS=0)" >&2
else
  bash scripts/fuzz.sh "${WIRELENS_FUZZ_SECS:-15}"
fi

leftover=$( { ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E '^wl' || true; ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^wl' || true; } | tr '\n' ' ')
if [ -n "$leftover" ]; then
  echo "test.sh: lab leftovers after the tests: $leftover" >&2
  exit 1
fi
echo "test.sh: all checks passed" >&2
