#!/usr/bin/env bash
# Times `wirelens analyze` against Wireshark's tshark and tcptrace on ONE pcap,
# in one run, and prints the ratios (how many times longer the other tool takes).
#
#   scripts/compare-tools.sh [PCAP]
#
# Without PCAP, a synthetic capture is generated with `wirelens bench pcap`
# (TCP connections with handshakes, timestamps, 1 % loss, 0.5 % reordering,
# 10 % IPv6). Environment:
#   PACKETS (default 1000000), FLOWS (default 10000): size of the generated capture
#   MIX (tcp|udp|mixed, default tcp): tshark and tcptrace analyse TCP only
#   RUNS (default 3): each tool runs RUNS times; the fastest run counts
#   WIRELENS: a wirelens binary to use instead of building the release one
#   TIMEOUT (default 1800): seconds one run of one tool may take
# Needs tshark, capinfos, tcptrace and GNU time (scripts/setup.sh installs them).
#
# Each tool writes its normal output to /dev/null. Times are wall clock and
# user+system CPU of the whole process (reading the file included); on a
# shared machine compare the CPU column.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKETS="${PACKETS:-1000000}"
FLOWS="${FLOWS:-10000}"
MIX="${MIX:-tcp}"
RUNS="${RUNS:-3}"
TIMEOUT="${TIMEOUT:-1800}"

for t in tshark tcptrace /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "compare-tools: $t not found (run scripts/setup.sh)" >&2; exit 1; }
done

if [ -n "${WIRELENS:-}" ]; then
  bin="$WIRELENS"
else
  echo "compare-tools: building wirelens (release)" >&2
  cargo build --release --quiet
  bin="${CARGO_TARGET_DIR:-target}/release/wirelens"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pcap="${1:-}"
if [ -z "$pcap" ]; then
  pcap="$tmp/synthetic.pcap"
  "$bin" bench pcap --out "$pcap" --packets "$PACKETS" --flows "$FLOWS" --mix "$MIX" >&2
fi
[ -r "$pcap" ] || { echo "compare-tools: cannot read $pcap" >&2; exit 1; }
frames=$(capinfos -c -M "$pcap" 2>/dev/null | awk -F': *' '/Number of packets/ {print $2}' || true)
bytes=$(stat -c %s "$pcap")
echo "capture: $pcap, ${frames:-?} packets, $bytes bytes" >&2

# best_of NAME CMD...: runs CMD RUNS times, keeps the fastest (wall) run;
# prints "wall cpu maxrss_kb".
best_of() {
  local name=$1; shift
  local best=""
  for _ in $(seq "$RUNS"); do
    timeout "$TIMEOUT" /usr/bin/time -f '%e %U %S %M' -o "$tmp/time" "$@" >/dev/null 2>"$tmp/$name.err" || {
      echo "compare-tools: $name failed:" >&2; cat "$tmp/$name.err" >&2; exit 1; }
    read -r wall user sys rss < <(tail -1 "$tmp/time")
    cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')
    if [ -z "$best" ] || awk -v a="$wall" -v b="${best%% *}" 'BEGIN { exit !(a < b) }'; then
      best="$wall $cpu $rss"
    fi
  done
  echo "$best"
}

read -r w_wall w_cpu w_rss < <(best_of wirelens "$bin" analyze "$pcap" --format ndjson --no-progress)
echo "wirelens: best wall $w_wall s, CPU $w_cpu s" >&2
read -r t_wall t_cpu t_rss < <(best_of tshark tshark -r "$pcap" -o tcp.analyze_sequence_numbers:TRUE \
  -T fields -e tcp.analysis.ack_rtt -e tcp.analysis.retransmission)
echo "tshark: best wall $t_wall s, CPU $t_cpu s" >&2
# -n: no reverse DNS lookups (without it tcptrace waits on the resolver for
# every address, which measures the resolver, not the analysis).
read -r c_wall c_cpu c_rss < <(best_of tcptrace tcptrace -n -l -r "$pcap")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f", a / b; else print "inf" }'; }
rate() { awk -v n="${frames:-0}" -v t="$1" 'BEGIN { if (n > 0 && t > 0) printf "%.0f", n / t; else print "?" }'; }
printf '%-10s %9s %9s %12s %10s %13s %13s\n' tool "wall s" "CPU s" "packets/s" "max RSS" "wall / ours" "CPU / ours"
printf '%-10s %9s %9s %12s %8s MB %13s %13s\n' wirelens "$w_wall" "$w_cpu" "$(rate "$w_wall")" $((w_rss / 1024)) 1.0 1.0
printf '%-10s %9s %9s %12s %8s MB %13s %13s\n' tshark "$t_wall" "$t_cpu" "$(rate "$t_wall")" $((t_rss / 1024)) "$(ratio "$t_wall" "$w_wall")" "$(ratio "$t_cpu" "$w_cpu")"
printf '%-10s %9s %9s %12s %8s MB %13s %13s\n' tcptrace "$c_wall" "$c_cpu" "$(rate "$c_wall")" $((c_rss / 1024)) "$(ratio "$c_wall" "$w_wall")" "$(ratio "$c_cpu" "$w_cpu")"
echo "targets: tshark / wirelens >= 100, tcptrace / wirelens >= 10 (best of $RUNS runs each)"
