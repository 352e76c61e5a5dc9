#!/usr/bin/env bash
# Byte-identity guard of the engine: `wirelens analyze` of seven synthetic
# captures (mixed traffic, TCP with loss and reordering, many short flows at
# 50 % IPv6, UDP, expiry, evictions at two table sizes; json and ndjson)
# must print exactly the same bytes with a reference binary and a new one.
#
#   benches/analyze-guard.sh REFERENCE_BINARY NEW_BINARY [PACKETS]
#
# The captures are written by the reference binary's `bench pcap` (seeded,
# deterministic) into a temporary directory, removed on exit. Exit 1 and the
# first differing line on any difference.
set -euo pipefail
ref=${1:?reference binary}
new=${2:?new binary}
n=${3:-200000}
dir=$(mktemp -d /tmp/wl-guard.XXXXXX)
trap 'rm -rf "$dir"' EXIT

# name | bench pcap arguments | analyze arguments
cases=(
  "mixed|--flows 5000 --mix mixed|--format ndjson"
  "tcp_loss_reorder|--flows 2000 --mix tcp --loss 5 --reorder 3|--format json"
  "short_v6|--flows 20000 --mix mixed --ipv6 50 --conn-packets 20|--format ndjson"
  "udp|--flows 3000 --mix udp|--format ndjson"
  "expiry|--flows 3000 --mix mixed --rate 6000|--format ndjson --tcp-idle 2 --udp-idle 1"
  "evict200|--flows 1000 --mix mixed|--format ndjson --max-flows 200"
  "evict500|--flows 1000 --mix tcp --loss 3|--format json --max-flows 500"
)
fail=0
for c in "${cases[@]}"; do
  IFS='|' read -r name gen ana <<<"$c"
  # shellcheck disable=SC2086
  "$ref" bench pcap $gen --packets "$n" --out "$dir/$name.pcap" 2>/dev/null
  # shellcheck disable=SC2086
  "$ref" analyze "$dir/$name.pcap" $ana >"$dir/$name.ref" 2>/dev/null
  # shellcheck disable=SC2086
  "$new" analyze "$dir/$name.pcap" $ana >"$dir/$name.new" 2>/dev/null
  if cmp -s "$dir/$name.ref" "$dir/$name.new"; then
    echo "same      $name ($(wc -l <"$dir/$name.ref") lines, $(wc -c <"$dir/$name.ref") bytes)"
  else
    echo "DIFFERENT $name: $(cmp "$dir/$name.ref" "$dir/$name.new" | head -1)"
    diff <(tr ',' '\n' <"$dir/$name.ref") <(tr ',' '\n' <"$dir/$name.new") | head -10 || true
    fail=1
  fi
  rm -f "$dir/$name.pcap"
done
exit $fail
