#!/usr/bin/env bash
# Times `wirelens analyze` against other analyzers on ONE pcap, in one run, and
# prints the ratios (how many times longer the other tool takes): Wireshark's
# tshark, tcptrace, argus (flow records) and pping (passive RTT).
#
#   scripts/compare-tools.sh [PCAP]
#
# Without PCAP, a synthetic capture is generated with `wirelens bench pcap`
# (TCP connections with handshakes, timestamps, 1 % loss, 0.5 % reordering,
# 10 % IPv6). Environment:
#   PACKETS (default 1000000), FLOWS (default 10000): size of the generated capture
#   MIX (tcp|udp|mixed, default tcp): tshark, tcptrace and pping analyse TCP only
#   REPEAT (default 1): the capture is concatenated REPEAT times (timestamps
#     shifted so that time keeps going forward), e.g. a short real capture
#     repeated 40x to get a measurable run
#   RUNS (default 3): each tool runs RUNS times; the fastest run counts
#   WIRELENS: a wirelens binary to use instead of building the release one
#   PPING: a pping binary; without it pping is built from PPING_SRC (default
#     ../shared/peers/pping/pping.cpp, next to the repository; its source is
#     never copied into this repository: GPL-2, a measurement peer only) into
#     the temporary directory, when g++, libtins and libpcap are there;
#     otherwise pping is skipped, loudly
#   TOOLS (default "tshark tcptrace argus pping"): the peers to run
#   TIMEOUT (default 1800): seconds one run of one tool may take
# Needs tshark, capinfos, mergecap, tcptrace, argus and GNU time
# (scripts/setup.sh installs them, and libtins-dev / libpcap-dev for pping).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKETS="${PACKETS:-1000000}"
FLOWS="${FLOWS:-10000}"
MIX="${MIX:-tcp}"
RUNS="${RUNS:-3}"
REPEAT="${REPEAT:-1}"
TIMEOUT="${TIMEOUT:-1800}"
TOOLS="${TOOLS:-tshark tcptrace argus pping}"

need=(capinfos /usr/bin/time)
for t in $TOOLS; do
  case $t in
    tshark|tcptrace|argus) need+=("$t") ;;
    pping) ;;
    *) echo "compare-tools: unknown tool $t in TOOLS" >&2; exit 1 ;;
  esac
done
for t in "${need[@]}"; do
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
if [ "$REPEAT" -gt 1 ]; then
  # REPEAT copies one after the other in time: copy i is shifted by i times
  # the capture's span (+1 s), then the copies are merged in time order.
  command -v editcap >/dev/null && command -v mergecap >/dev/null ||
    { echo "compare-tools: REPEAT needs editcap and mergecap (tshark's package)" >&2; exit 1; }
  span=$(capinfos -a -e -S -T -r "$pcap" | awk -F'\t' 'NR == 1 { print int($3 - $2) + 1 }')
  parts=()
  for i in $(seq 0 $((REPEAT - 1))); do
    editcap -F pcap -t $((i * span)) "$pcap" "$tmp/part$i.pcap"
    parts+=("$tmp/part$i.pcap")
  done
  mergecap -F pcap -w "$tmp/repeated.pcap" "${parts[@]}"
  rm -f "${parts[@]}"
  pcap="$tmp/repeated.pcap"
fi
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

# pping: $PPING, or built from the peer's source next to the repository.
pping_bin="${PPING:-}"
pping_src="${PPING_SRC:-../shared/peers/pping/pping.cpp}"
if [[ " $TOOLS " == *" pping "* ]] && [ -z "$pping_bin" ]; then
  if [ -r "$pping_src" ] && command -v g++ >/dev/null && [ -r /usr/include/tins/tins.h ] &&
    [ -r /usr/include/pcap.h ]; then
    echo "compare-tools: building pping from $pping_src into $tmp" >&2
    g++ -std=c++14 -O3 -o "$tmp/pping" "$pping_src" -ltins -lpcap
    pping_bin="$tmp/pping"
  else
    echo "compare-tools: SKIPPING pping: set PPING, or provide $pping_src, g++, libtins-dev and libpcap-dev" >&2
  fi
fi

rows=()
row() { # NAME WALL CPU RSS_KB
  rows+=("$(printf '%-10s %9s %9s %12s %8s MB %13s %13s' "$1" "$2" "$3" "$(rate "$2")" $(($4 / 1024)) \
    "$(ratio "$2" "$w_wall")" "$(ratio "$3" "$w_cpu")")")
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f", a / b; else print "inf" }'; }
rate() { awk -v n="${frames:-0}" -v t="$1" 'BEGIN { if (n > 0 && t > 0) printf "%.0f", n / t; else print "?" }'; }

read -r w_wall w_cpu w_rss < <(best_of wirelens "$bin" analyze "$pcap" --format ndjson --no-progress)
echo "wirelens: best wall $w_wall s, CPU $w_cpu s" >&2
row wirelens "$w_wall" "$w_cpu" "$w_rss"
for t in $TOOLS; do
  case $t in
    tshark)
      read -r wall cpu rss < <(best_of tshark tshark -r "$pcap" -o tcp.analyze_sequence_numbers:TRUE \
        -T fields -e tcp.analysis.ack_rtt -e tcp.analysis.retransmission) ;;
    tcptrace)
      # -n: no reverse DNS lookups (without it tcptrace waits on the resolver
      # for every address, which measures the resolver, not the analysis).
      read -r wall cpu rss < <(best_of tcptrace tcptrace -n -l -r "$pcap") ;;
    argus)
      # argus writes its flow records to a file (-w); the file is the output.
      read -r wall cpu rss < <(best_of argus argus -r "$pcap" -w "$tmp/argus.out") ;;
    pping)
      [ -n "$pping_bin" ] || continue
      # -q: no periodic summary; -m: machine-readable RTT lines.
      read -r wall cpu rss < <(best_of pping "$pping_bin" -q -m -r "$pcap") ;;
  esac
  echo "$t: best wall $wall s, CPU $cpu s" >&2
  row "$t" "$wall" "$cpu" "$rss"
done

printf '%-10s %9s %9s %12s %10s %13s %13s\n' tool "wall s" "CPU s" "packets/s" "max RSS" "wall / ours" "CPU / ours"
printf '%s\n' "${rows[@]}"
echo "targets: tshark / wirelens >= 100; tcptrace, argus, pping / wirelens >= 10 (best of $RUNS runs each)"
