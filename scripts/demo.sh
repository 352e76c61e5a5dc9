#!/usr/bin/env bash
# The wirelens demo: builds wirelens, makes real impaired TCP traffic in a
# throw-away namespace lab (client, router, server; addresses from
# 198.18.0.0/15 only inside the namespaces; removed on exit), captures it at
# the router like a tap would, and shows what `wirelens analyze` finds:
#   1. loss AFTER the tap (the tap saw the data, then its retransmission),
#   2. loss BEFORE the tap (the tap sees a gap, then the hole being filled),
#   3. an RTT step 20 ms -> 80 ms in the middle of a transfer.
# Needs root (network namespaces). Usage: scripts/demo.sh [OUTDIR]
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" -eq 0 ] || { echo "demo: needs root (it builds network namespaces)" >&2; exit 1; }
out=${1:-$(mktemp -d /tmp/wirelens-demo.XXXXXX)}
mkdir -p "$out"

echo "== building wirelens (release)" >&2
cargo build --release --quiet --bin wirelens
wl=target/release/wirelens

show() { # scenario title [analyze options]
  echo
  echo "=================================================================="
  echo "== $2"
  echo "=================================================================="
  WL_ID="d$$" bash scripts/lab.sh run "$1" "$out/$1" >/dev/null 2>"$out/$1.lab.log" || {
    echo "demo: lab scenario $1 failed; log:" >&2
    cat "$out/$1.lab.log" >&2
    exit 1
  }
  "$wl" analyze "$out/$1/tap.pcap" --limit 3 "${@:3}"
}

show loss-after "2% loss between the router and the server: AFTER the tap (retx c2s: retransmits (seen before / holes filled))"
show loss-before "2% loss between the client and the tap: BEFORE the tap (gaps, then holes filled)"
show delaystep "RTT step 20 ms -> 80 ms mid-transfer (rtt c2s p50/p99; with --interval 1s: since when)" \
  --interval 1s --plot "$out/delaystep/rtt.svg"

echo
echo "captures and NDJSON: $out  (try: $wl analyze $out/delaystep/tap.pcap --format ndjson)"
echo "the RTT step over time, as a picture: $out/delaystep/rtt.svg"
for s in loss-after loss-before delaystep; do
  "$wl" analyze "$out/$s/tap.pcap" --format ndjson >"$out/$s/flows.ndjson"
done
