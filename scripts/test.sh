#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this after scripts/setup.sh):
# format, lints, unit + scenario tests, the root-only namespace/XDP lab tests
# (they skip loudly when not root), and a build of the benches.
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

# The fuzzers themselves (cargo-fuzz, ASan): opt-in, not part of CI. A cold
# build of the four targets compiles the whole dependency tree again with
# sanitizer and coverage instrumentation (22.6 min measured on this project's
# shared 2-core machine, plus installing cargo-fuzz), more than CI's budget;
# CI runs every corpus file and ~26k mutated inputs through the same invariant
# checks instead (*/tests/fuzz_regressions.rs, in the cargo test step above).
if [ -n "${WIRELENS_FUZZ_SECS:-}" ]; then
  step "fuzz targets, ${WIRELENS_FUZZ_SECS} s each (WIRELENS_FUZZ_SECS; needs cargo-fuzz)"
  bash scripts/fuzz.sh "$WIRELENS_FUZZ_SECS"
fi

leftover=$( { ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E '^wl' || true; ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^wl' || true; } | tr '\n' ' ')
if [ -n "$leftover" ]; then
  echo "test.sh: lab leftovers after the tests: $leftover" >&2
  exit 1
fi
echo "test.sh: all checks passed" >&2
