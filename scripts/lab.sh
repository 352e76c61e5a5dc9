#!/usr/bin/env bash
# wirelens accuracy lab: real captures of the Linux TCP stack with known
# impairments, in network namespaces this script creates and always removes.
#
#   scripts/lab.sh run SCENARIO OUTDIR   build the lab, run one scenario, capture
#                                        OUTDIR/tap.pcap + OUTDIR/truth.json, tear down
#   scripts/lab.sh up                    build the lab and leave it up (forwarder on)
#   scripts/lab.sh down [ID]             tear a lab down (default: $WL_ID)
#   scripts/lab.sh list                  scenarios, one per line
#   scripts/lab.sh gc                    tear down labs of `run`s that died (SIGKILL)
#
# The Rust tests (tests/lab_accuracy.rs) call `run` exactly like a human does.
#
# Topology (ID = $WL_ID, default $$; every name starts with wl and carries ID):
#
#   ns wl<ID>c            ns wl<ID>r (router)                              ns wl<ID>s
#   [wl<ID>c]----veth----[wl<ID>rc] kernel IP forwarding [wl<ID>rs]--veth--[wl<ID>fa]
#   198.18.1.2/24         198.18.1.1/24                  198.18.2.1/24        |
#   2001:db8:1::2/64      2001:db8:1::1/64               2001:db8:2::1/64  forwarder.py
#                                                                             |
#                                                  [wl<ID>s]----veth----[wl<ID>fb]
#                                                  198.18.2.2/24, 2001:db8:2::2/64
#
# The forwarder is an L2 wire (fa <-> fb) inside the router namespace that adds
# the delay (default 10 ms each way, RTT 20 ms: docs/LAB-NOTES.md says >= 10 ms), the
# delay step, seeded loss and reordering; netem does not exist on this kernel.
# Loss that iptables can do is done by iptables in the router's FORWARD chain.
#
# The tap is tcpdump on a router interface, chosen per scenario:
#   rc (client side, default): sees c2s before the router's FORWARD chain and
#      the forwarder, s2c after both. FORWARD drops of c2s are AFTER the tap.
#   rs (server side): sees c2s after the FORWARD chain, so FORWARD drops of c2s
#      are BEFORE the tap (the tap sees a gap, then the hole fill).
#   Forwarder impairments of s2c are before both tap points.
#
# Every lab veth: TSO/GSO/GRO/LRO and checksum offloads off (the tap sees real
# <= MTU frames), RPS pinned to CPU 0 (the host reorders veth traffic otherwise).
# TCP uses cubic per socket (host default is BBR) and paces (SO_MAX_PACING_RATE).
# Addresses: 198.18.0.0/15 and 2001:db8::/32 only, only inside the namespaces.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=${PYTHON:-python3}
ID=${WL_ID:-$$}
if ! [[ $ID =~ ^[0-9a-z]{1,10}$ ]]; then
  echo "lab: WL_ID must be 1-10 of [0-9a-z] (interface names are limited to 15 chars)" >&2
  exit 2
fi
NS_C=wl${ID}c NS_R=wl${ID}r NS_S=wl${ID}s
IF_C=wl${ID}c IF_RC=wl${ID}rc IF_RS=wl${ID}rs IF_FA=wl${ID}fa IF_FB=wl${ID}fb IF_S=wl${ID}s
STATE=${WL_STATE_DIR:-/run/wirelens-lab}/$ID

C4=198.18.1.2 R4C=198.18.1.1 R4S=198.18.2.1 S4=198.18.2.2
C6=2001:db8:1::2 R6C=2001:db8:1::1 R6S=2001:db8:2::1 S6=2001:db8:2::2
PORT=24816         # data port (no Wireshark dissector claims it)
PORT6=24817
UPORT=24818        # UDP sink
CLOSED=24819       # nothing listens here: SYN -> RST (refused)

# Tunables (environment); the scenarios override some of them.
DELAY_MS=${WL_DELAY_MS:-10}       # one-way delay on the forwarder, each direction
PACE=${WL_PACE:-2500000}          # bytes/s per TCP connection (20 Mbit/s)
BYTES=${WL_BYTES:-3000000}
SEED=${WL_SEED:-1}
LOSS=${WL_LOSS:-0.02}
RUN_TIMEOUT=${WL_RUN_TIMEOUT:-40} # bound of one traffic command, seconds

log() { echo "lab[$ID]: $*" >&2; }
die() { log "error: $*"; exit 1; }
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

track() { mkdir -p "$STATE"; echo "$1 $2" >>"$STATE/pids"; }

wait_file() { # path timeout_s what
  local i n=$(($2 * 20))
  for ((i = 0; i < n; i++)); do [ -e "$1" ] && return 0; sleep 0.05; done
  die "timed out waiting for $3"
}

check_tools() {
  local t missing=()
  for t in ip tc iptables ethtool tcpdump "$PY" timeout; do
    command -v "$t" >/dev/null 2>&1 || missing+=("$t")
  done
  [ "${#missing[@]}" -eq 0 ] || die "missing tools: ${missing[*]} (run scripts/setup.sh)"
  [ "$(id -u)" -eq 0 ] || die "needs root (network namespaces)"
}

# ---------------------------------------------------------------- topology

veth_tune() { # ns ifname
  local ns=$1 ifn=$2
  nsx "$ns" ethtool -K "$ifn" tso off gso off gro off lro off tx off rx off >/dev/null 2>&1 || true
  local f
  for f in tcp-segmentation-offload generic-segmentation-offload generic-receive-offload; do
    nsx "$ns" ethtool -k "$ifn" | grep -q "^$f: off" || die "$ifn: could not turn $f off"
  done
  nsx "$ns" sh -c "echo 1 > /sys/class/net/$ifn/queues/rx-0/rps_cpus"
}

up() {
  check_tools
  [ ! -e "$STATE" ] || die "lab $ID exists ($STATE); run: $0 down $ID"
  mkdir -p "$STATE"
  echo "$$" >"$STATE/owner"
  local ns
  for ns in "$NS_C" "$NS_R" "$NS_S"; do
    ip netns add "$ns"
    echo "ns $ns" >>"$STATE/objects"
    nsx "$ns" ip link set lo up
    nsx "$ns" sysctl -qw net.ipv6.conf.all.accept_ra=0 net.ipv6.conf.default.accept_ra=0 \
      net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 \
      net.ipv6.conf.default.router_solicitations=0
  done
  ip link add "$IF_C" netns "$NS_C" type veth peer name "$IF_RC" netns "$NS_R"
  ip link add "$IF_RS" netns "$NS_R" type veth peer name "$IF_FA" netns "$NS_R"
  ip link add "$IF_FB" netns "$NS_R" type veth peer name "$IF_S" netns "$NS_S"
  # The forwarder's python takes a second or more to start on a loaded box:
  # launch it now (its ports exist; it binds once they are up: --wait-up)
  # and wait for it after the set-up.
  [ -z "${FWD_EARLY:-}" ] || fwd_launch "$FWD_EARLY" "${FWD_ARGS[@]}"

  # The forwarder ports carry no addresses and say nothing themselves.
  nsx "$NS_R" sysctl -qw "net.ipv6.conf.$IF_FA.disable_ipv6=1" "net.ipv6.conf.$IF_FB.disable_ipv6=1" \
    net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1

  veth_tune "$NS_C" "$IF_C"
  veth_tune "$NS_R" "$IF_RC"
  veth_tune "$NS_R" "$IF_RS"
  veth_tune "$NS_R" "$IF_FA"
  veth_tune "$NS_R" "$IF_FB"
  veth_tune "$NS_S" "$IF_S"

  nsx "$NS_C" ip addr add "$C4/24" dev "$IF_C"
  nsx "$NS_C" ip addr add "$C6/64" dev "$IF_C" nodad
  nsx "$NS_R" ip addr add "$R4C/24" dev "$IF_RC"
  nsx "$NS_R" ip addr add "$R6C/64" dev "$IF_RC" nodad
  nsx "$NS_R" ip addr add "$R4S/24" dev "$IF_RS"
  nsx "$NS_R" ip addr add "$R6S/64" dev "$IF_RS" nodad
  nsx "$NS_S" ip addr add "$S4/24" dev "$IF_S"
  nsx "$NS_S" ip addr add "$S6/64" dev "$IF_S" nodad
  nsx "$NS_R" ip link set "$IF_FA" promisc on
  nsx "$NS_R" ip link set "$IF_FB" promisc on
  local l
  for l in "$IF_RC" "$IF_RS" "$IF_FA" "$IF_FB"; do nsx "$NS_R" ip link set "$l" up; done
  nsx "$NS_C" ip link set "$IF_C" up
  nsx "$NS_S" ip link set "$IF_S" up
  # Routes only towards the other lab subnet: nothing can leave the lab.
  nsx "$NS_C" ip route add 198.18.2.0/24 via "$R4C"
  nsx "$NS_C" ip -6 route add 2001:db8:2::/64 via "$R6C"
  nsx "$NS_S" ip route add 198.18.1.0/24 via "$R4S"
  nsx "$NS_S" ip -6 route add 2001:db8:1::/64 via "$R6S"
}

start_forwarder() { # outdir extra-forwarder-args...
  fwd_launch "$@"
  fwd_wait
}

fwd_wait() { wait_file "$STATE/fwd.ready" 20 "the forwarder"; }

fwd_launch() { # outdir extra-forwarder-args...
  local out=$1; shift
  rm -f "$STATE/fwd.ready"
  # `ip netns exec` execs in place: $! is the forwarder itself (a shell
  # function here would put a subshell between us and it).
  ip netns exec "$NS_R" "$PY" "$HERE/forwarder.py" --a "$IF_FA" --b "$IF_FB" \
    --stats "$out/forwarder.json" --ready "$STATE/fwd.ready" --seed "$SEED" \
    --delay-ms "$DELAY_MS" --max-seconds 150 --wait-up 30 "$@" 2>"$out/forwarder.log" &
  track forwarder $!
  echo $! >"$STATE/fwd.pid"
}

stop_pid() { # pid name timeout_s
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < $3 * 20; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

down() {
  local pid name ns
  if [ -f "$STATE/pids" ]; then
    while read -r name pid; do
      [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && stop_pid "$pid" "$name" 3
    done <"$STATE/pids"
  fi
  for ns in "$NS_C" "$NS_R" "$NS_S"; do
    if ip netns list | grep -qw "^$ns"; then
      # Anything still running inside a namespace of ours was started by us.
      for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
      ip netns del "$ns" 2>/dev/null || true
    fi
  done
  # Peers die with their namespace; a link left in the root namespace would not.
  for l in "$IF_C" "$IF_RC" "$IF_RS" "$IF_FA" "$IF_FB" "$IF_S"; do
    ip link del "$l" 2>/dev/null || true
  done
  rm -rf "$STATE"
}

# ---------------------------------------------------------------- capture

TAP_PID=
tap_start() { # iface outdir
  local ifn=$1 out=$2 i
  ip netns exec "$NS_R" tcpdump -i "$ifn" -s 0 -B 16384 --immediate-mode -U -n -Z root \
    --time-stamp-precision=nano -w "$out/tap.pcap" 2>"$out/tcpdump.log" &
  TAP_PID=$!
  track tcpdump "$TAP_PID"
  for ((i = 0; i < 200; i++)); do
    grep -q "listening on" "$out/tcpdump.log" 2>/dev/null && return 0
    kill -0 "$TAP_PID" 2>/dev/null || die "tcpdump exited: $(cat "$out/tcpdump.log")"
    sleep 0.05
  done
  die "tcpdump did not start"
}

tap_stop() { # outdir
  local out=$1 i
  # TERM, not INT: background jobs of a non-interactive shell ignore SIGINT.
  kill -TERM "$TAP_PID" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do kill -0 "$TAP_PID" 2>/dev/null || break; sleep 0.05; done
  wait "$TAP_PID" 2>/dev/null || true
  grep -q "packets dropped by kernel" "$out/tcpdump.log" || die "tcpdump gave no statistics"
  local dropped
  dropped=$(sed -n 's/^\([0-9]*\) packets\{0,1\} dropped by kernel.*/\1/p' "$out/tcpdump.log")
  [ "${dropped:-x}" = 0 ] || die "tcpdump: $dropped packets dropped by kernel (capture incomplete)"
}

ipt() { nsx "$NS_R" iptables -w 5 "$@"; }

# ---------------------------------------------------------------- traffic

traffic() { # ns name outdir labtraffic-args...
  local ns=$1 name=$2 out=$3; shift 3
  local rc=0
  timeout -k 2 "$RUN_TIMEOUT" ip netns exec "$ns" "$PY" "$HERE/labtraffic.py" "$@" \
    --result "$out/$name.json" 2>"$out/$name.log" || rc=$?
  if [ "$rc" -ne 0 ]; then
    FAILED+=("$name:rc=$rc")
    log "$name failed (rc $rc); see $out/$name.log"
  fi
}

SERVERS=()
FAILED=()
server_bg() { # name outdir labtraffic-args...
  local name=$1 out=$2; shift 2
  rm -f "$STATE/$name.ready"
  timeout -k 2 "$RUN_TIMEOUT" ip netns exec "$NS_S" "$PY" "$HERE/labtraffic.py" "$@" \
    --ready "$STATE/$name.ready" --result "$out/$name.json" --timeout "$RUN_TIMEOUT" \
    2>"$out/$name.log" &
  track "$name" $!
  SERVERS+=("$!")
  wait_file "$STATE/$name.ready" 10 "server $name"
}

servers_wait() {
  local p rc
  for p in "${SERVERS[@]}"; do
    rc=0
    wait "$p" || rc=$?
    [ "$rc" -eq 0 ] || FAILED+=("server(pid $p):rc=$rc")
  done
  SERVERS=()
}

warm() { # resolve ARP/NDP on every hop before the capture starts
  local out=$1
  # One python for both (its start-up costs a second or more on a loaded CI box).
  traffic "$NS_C" warm "$out" warm --connect "$S4" --connect "$S6" --port "$CLOSED" --timeout 5
}

# ---------------------------------------------------------------- scenarios
# Scenario X: prepare_X sets NOTE, TAP and FWD_ARGS (no side effects; it runs
# before the lab is built, so the forwarder can start with its arguments);
# impair_X (optional) adds iptables rules / MTU changes after the warm-up, so
# warm-up packets never count in the injected truth; run_X runs the traffic
# while the tap records. truth.json records what was injected.

SCENARIOS=(clean loss-after loss-before loss-fwd reorder zerowin shortconns pmtu udpfrag delaystep ipv6 bufferbloat since)
# Middlebox and path signs (tests/signs_lab.rs).
SCENARIOS+=(hol oneway mssclamp ttlchange ecnbleach)

upload() { # outdir server-addr port bytes [name]
  local out=$1 addr=$2 port=$3 n=$4 name=${5:-}
  server_bg "server$name" "$out" server --bind "$addr" --port "$port" --count 1 --cc cubic
  traffic "$NS_C" "client$name" "$out" client --connect "$addr" --port "$port" --send "$n" \
    --pace "$PACE" --cc cubic --timeout "$RUN_TIMEOUT"
  servers_wait
}

prepare_clean() { NOTE="bulk upload $BYTES B, RTT $((2 * DELAY_MS)) ms, no loss"; }
run_clean() { upload "$1" "$S4" "$PORT" "$BYTES"; }

prepare_ipv6() { NOTE="IPv6 bulk upload $BYTES B, RTT $((2 * DELAY_MS)) ms, no loss"; }
run_ipv6() { upload "$1" "$S6" "$PORT6" "$BYTES"; }

loss_rule() {
  # c2s TCP data only (IP length > 200: full segments, never SYN/ACK/FIN-only)
  ipt -A FORWARD -i "$IF_RC" -o "$IF_RS" -p tcp -m length --length 200:65535 \
    -m statistic --mode random --probability "$LOSS" -m comment --comment wl-loss -j DROP
}
impair_loss-after() { loss_rule; }
prepare_loss-after() {
  NOTE="upload, c2s data dropped with p=$LOSS in the router's FORWARD chain; tap on rc: AFTER the tap -> retrans_seen"
}
run_loss-after() { upload "$1" "$S4" "$PORT" "$BYTES"; }

impair_loss-before() { loss_rule; }
prepare_loss-before() {
  TAP=$IF_RS
  NOTE="upload, c2s data dropped with p=$LOSS in the router's FORWARD chain; tap on rs: BEFORE the tap -> gaps + hole_fill"
}
run_loss-before() { upload "$1" "$S4" "$PORT" "$BYTES"; }

prepare_loss-fwd() {
  FWD_ARGS+=(--loss-dir ba --loss "$LOSS")
  NOTE="download, the forwarder drops s2c data with p=$LOSS (seed $SEED), before the tap -> gaps + hole_fill s2c"
}
run_loss-fwd() {
  local out=$1
  server_bg server "$out" server --bind "$S4" --port "$PORT" --count 1 --reply 2000000 \
    --pace "$PACE" --cc cubic
  traffic "$NS_C" client "$out" client --connect "$S4" --port "$PORT" --cc cubic --timeout "$RUN_TIMEOUT"
  servers_wait
}

prepare_reorder() {
  FWD_ARGS+=(--reorder-dir ba --reorder 0.03 --reorder-extra-ms 4)
  NOTE="download, the forwarder holds 3% of s2c data segments 4 ms (before the tap) -> hole fills within one RTT: out_of_order"
}
run_reorder() {
  local out=$1
  server_bg server "$out" server --bind "$S4" --port "$PORT" --count 1 --reply "$BYTES" \
    --pace "$PACE" --cc cubic
  traffic "$NS_C" client "$out" client --connect "$S4" --port "$PORT" --cc cubic --timeout "$RUN_TIMEOUT"
  servers_wait
}

prepare_zerowin() {
  NOTE="upload; the server's receive buffer is small and it stops reading for 2 s -> zero window adverts, probes, window update"
}
run_zerowin() {
  local out=$1
  server_bg server "$out" server --bind "$S4" --port "$PORT" --count 1 --cc cubic \
    --rcvbuf 32768 --read-chunk 16384 --stall-after 100000 --stall-secs 2
  traffic "$NS_C" client "$out" client --connect "$S4" --port "$PORT" --send 600000 \
    --pace "$PACE" --cc cubic --timeout "$RUN_TIMEOUT"
  servers_wait
}

SHORT_N=24 REFUSED_N=4
impair_shortconns() {
  # Every 5th SYN c2s (retries included) dies in the router, after the tap:
  # the tap sees the SYN and its retry 1 s later (tcp_syn_linear_timeouts).
  ipt -A FORWARD -i "$IF_RC" -o "$IF_RS" -p tcp --syn \
    -m statistic --mode nth --every 5 --packet 0 -m comment --comment wl-syn -j DROP
}
prepare_shortconns() {
  NOTE="$SHORT_N short connections (1000 B up, 2000 B down, 6 in parallel), every 5th SYN dropped after the tap; $REFUSED_N connects to a closed port (RST)"
}
run_shortconns() {
  local out=$1
  server_bg server "$out" server --bind "$S4" --port "$PORT" --count "$SHORT_N" --reply 2000 --cc cubic
  traffic "$NS_C" client "$out" client --connect "$S4" --port "$PORT" --count "$SHORT_N" \
    --parallel 6 --gap-ms 20 --send 1000 --cc cubic --timeout "$RUN_TIMEOUT"
  traffic "$NS_C" refused "$out" client --connect "$S4" --port "$CLOSED" --count "$REFUSED_N" \
    --expect-refused --timeout 20
  servers_wait
}

PMTU=1280
impair_pmtu() { nsx "$NS_R" ip link set "$IF_RS" mtu "$PMTU"; }
prepare_pmtu() {
  NOTE="uploads over IPv4 (DF) and IPv6; router egress MTU $PMTU -> ICMP frag-needed / ICMPv6 packet-too-big quoting the flow"
}
run_pmtu() {
  local out=$1
  upload "$out" "$S4" "$PORT" 400000 4
  upload "$out" "$S6" "$PORT6" 400000 6
}

prepare_udpfrag() { NOTE="UDP datagrams of 3000 B over IPv4 and IPv6 (MTU 1500): 3 fragments each"; }
run_udpfrag() {
  local out=$1
  server_bg udpsink4 "$out" udpsink --bind "$S4" --port "$UPORT" --count 30
  server_bg udpsink6 "$out" udpsink --bind "$S6" --port "$UPORT" --count 30
  traffic "$NS_C" udpsend4 "$out" udpsend --connect "$S4" --port "$UPORT" --size 3000 --count 30 --interval-ms 5
  traffic "$NS_C" udpsend6 "$out" udpsend --connect "$S6" --port "$UPORT" --size 3000 --count 30 --interval-ms 5
  servers_wait
}

impair_bufferbloat() {
  # 10 Mbit/s bottleneck on the router's egress to the server with a deep
  # queue (75 kB = 60 ms at 10 Mbit/s); the unpaced cubic sender fills it:
  # the RTT climbs to ~4x the 20 ms base, then tail drops (after the tap).
  # Not deeper: cubic leaves slow start early (HyStart sees the delay grow)
  # and then grows its window by ~50 ms of queue per second; a 150 kB queue
  # (120 ms) was not always full before the 2.5 MB were through.
  nsx "$NS_R" tc qdisc add dev "$IF_RS" root tbf rate 10mbit burst 16kb limit 75kb
}
prepare_bufferbloat() {
  NOTE="unpaced cubic upload through a 10 Mbit/s tbf with a 75 kB (60 ms) queue on the router -> queueing delay (RTT >> 20 ms), tail drops after the tap"
}
run_bufferbloat() {
  local out=$1
  server_bg server "$out" server --bind "$S4" --port "$PORT" --count 1 --cc cubic
  traffic "$NS_C" client "$out" client --connect "$S4" --port "$PORT" --send 2500000 \
    --cc cubic --timeout "$RUN_TIMEOUT"
  servers_wait
}

prepare_delaystep() {
  FWD_ARGS+=(--step-after-frames 1200 --step-delay-ms 40)
  NOTE="upload; one-way delay steps ${DELAY_MS} -> 40 ms after 1200 c2s data frames (RTT $((2 * DELAY_MS)) -> 80 ms)"
}
run_delaystep() { upload "$1" "$S4" "$PORT" 4000000; }

SURGE_PORT=24820   # the surge scenario's service (the upload keeps PORT)
SURGE_S=6
prepare_since() {
  # "Since when" in one capture, about 12-22 s: a paced upload whose RTT
  # steps 40 -> 120 ms and, on another service, 50 clients that connect at
  # 10x their normal rate, both from just after a 10 s boundary at least 5 s
  # into the capture (run_since picks it). So the step and the surge each
  # fall into one 10 s bucket of the control plane, after at least one
  # normal bucket, and after several normal 1 s intervals.
  # 1 MB/s: a segment every 1.4 ms, so delayed ACKs add little to the RTT
  # samples (their p90 still sits ~15 % above the p50: the step measures
  # ~2.8x in p90s, above the default rtt_factor 2.5).
  DELAY_MS=20
  FWD_ARGS+=(--step-on-usr1 --step-delay-ms 60)
  NOTE="paced upload (1 MB/s) to :$PORT whose one-way delay steps 20 -> 60 ms (RTT 40 -> 120 ms) just after a 10 s boundary (forwarder.json: step.at_ns); from then on, 50 clients (198.18.1.10-59) connecting to :$SURGE_PORT every 0.5 s for $SURGE_S s (100/s) on top of every 5 s (10/s) (surge.json: started_ns)"
}
impair_since() { # not an impairment: the 50 client addresses, before the tap starts
  local i
  for ((i = 10; i < 60; i++)); do nsx "$NS_C" ip addr add "198.18.1.$i/24" dev "$IF_C"; done
}
client_bg() { # name outdir labtraffic-args...: a client in the background (servers_wait waits)
  local name=$1 out=$2; shift 2
  timeout -k 2 "$RUN_TIMEOUT" ip netns exec "$NS_C" "$PY" "$HERE/labtraffic.py" "$@" \
    --result "$out/$name.json" 2>"$out/$name.log" &
  track "$name" $!
  SERVERS+=("$!")
}
run_since() {
  local out=$1 now at dur k nstart
  RUN_TIMEOUT=60
  now=$(date +%s.%N)
  # The step and the surge: 0.2 s after the first 10 s boundary >= 5 s from now.
  at=$(awk -v n="$now" 'BEGIN { t = int(n / 10) * 10 + 10; while (t < n + 5) t += 10; printf "%.1f", t + 0.2 }')
  dur=$(awk -v n="$now" -v a="$at" -v s="$SURGE_S" 'BEGIN { printf "%.3f", a + s + 0.3 - n }')
  # The normal clients begin at the 10 s boundary before the step (or now):
  # the surge's service then has exactly one normal bucket before the surge,
  # never a few connections at the end of an earlier one (a baseline of ~0).
  nstart=$(awk -v n="$now" -v a="$at" 'BEGIN { s = a - 10.2; if (s < n) s = n; printf "%.3f", s }')
  k=$(awk -v s="$nstart" -v a="$at" -v d="$SURGE_S" 'BEGIN { print int((a + d + 0.3 - s) / 5) }') # per client
  local many=(--connect "$S4" --port "$SURGE_PORT" --send 100 --parallel 50 --source 198.18.1.10
    --sources 50 --cc cubic --timeout 50)
  server_bg server "$out" server --bind "$S4" --port "$PORT" --count 1 --cc cubic
  server_bg surgeserver "$out" server --bind "$S4" --port "$SURGE_PORT" \
    --count $((50 * k + 50 * SURGE_S * 2)) --reply 100 --cc cubic
  client_bg normal "$out" client "${many[@]}" --count $((50 * k)) --period-ms 5000 \
    --start-at "$nstart"
  client_bg surge "$out" client "${many[@]}" --count $((50 * SURGE_S * 2)) --period-ms 500 \
    --start-at "$at"
  (sleep "$(awk -v n="$(date +%s.%N)" -v a="$at" 'BEGIN { printf "%.3f", a - n }')" &&
    kill -USR1 "$(cat "$STATE/fwd.pid")") &
  track stepper $!
  traffic "$NS_C" client "$out" client --connect "$S4" --port "$PORT" \
    --send "$(awk -v d="$dur" 'BEGIN { printf "%d", d * 1000000 }')" --pace 1000000 --cc cubic \
    --timeout 50
  servers_wait
}

# Signs of what breaks agents: each scenario injects one, with its truth.
download() { # outdir server-addr port bytes
  local out=$1
  server_bg server "$out" server --bind "$2" --port "$3" --count 1 --reply "$4" \
    --pace "$PACE" --cc cubic
  traffic "$NS_C" client "$out" client --connect "$2" --port "$3" --cc cubic --timeout "$RUN_TIMEOUT"
  servers_wait
}

HOLD_MS=150
prepare_hol() {
  FWD_ARGS+=(--hold-dir ba --hold-nth 300 --hold-ms "$HOLD_MS")
  NOTE="download; the forwarder holds the 300th s2c data segment, and every resend of its bytes, $HOLD_MS ms (before the tap) -> one hole open $HOLD_MS ms"
}
run_hol() { download "$1" "$S4" "$PORT" 1500000; }

impair_oneway() {
  # A second link client <-> router; the router sends s2c over it, so the
  # tap on rc sees the client's data and ACKs but nothing the server sends.
  local xc=wl${ID}x xr=wl${ID}rx
  ip link add "$xc" netns "$NS_C" type veth peer name "$xr" netns "$NS_R"
  veth_tune "$NS_C" "$xc"
  veth_tune "$NS_R" "$xr"
  nsx "$NS_C" ip addr add 198.18.3.2/24 dev "$xc"
  nsx "$NS_R" ip addr add 198.18.3.1/24 dev "$xr"
  nsx "$NS_C" ip link set "$xc" up
  nsx "$NS_R" ip link set "$xr" up
  nsx "$NS_C" sysctl -qw net.ipv4.conf.all.rp_filter=0 "net.ipv4.conf.$xc.rp_filter=0"
  nsx "$NS_R" ip route add "$C4/32" via 198.18.3.2 dev "$xr"
}
prepare_oneway() {
  NOTE="upload; the server's packets return over a second link that bypasses the tap -> one_way"
}
run_oneway() { upload "$1" "$S4" "$PORT" 500000; }

CLAMP_MSS=1200
impair_mssclamp() {
  ipt -t mangle -A FORWARD -p tcp --tcp-flags SYN,RST SYN -j TCPMSS --set-mss "$CLAMP_MSS"
}
prepare_mssclamp() {
  NOTE="upload; the router clamps the MSS of SYNs to $CLAMP_MSS (iptables TCPMSS): the tap on rc sees the client's SYN before, the server's SYN/ACK after"
}
run_mssclamp() { upload "$1" "$S4" "$PORT" 300000; }

TTL_SET=50
prepare_ttlchange() {
  FWD_ARGS+=(--ttl-dir ba --ttl-after-frames 400 --ttl-set "$TTL_SET")
  NOTE="download; from the 400th s2c data segment on, the forwarder sets the TTL to $TTL_SET (the router then takes one): a route change mid-flow"
}
run_ttlchange() { download "$1" "$S4" "$PORT" 1500000; }

impair_ecnbleach() { nsx "$NS_C" sysctl -qw net.ipv4.tcp_ecn=1; }
prepare_ecnbleach() {
  FWD_ARGS+=(--bleach-ecn-dir ba)
  NOTE="download with ECN negotiated (client tcp_ecn=1); the forwarder clears the ECN bits of every s2c packet -> ECN bleached"
}
run_ecnbleach() { download "$1" "$S4" "$PORT" 600000; }

# ---------------------------------------------------------------- run

write_truth() { # scenario outdir
  local sc=$1 out=$2
  ipt -L FORWARD -v -x -n >"$out/iptables.txt" 2>&1 || true
  nsx "$NS_R" tc -s qdisc show dev "$IF_RS" >"$out/tc.txt" 2>&1 || true
  WL_SC=$sc WL_OUT=$out WL_TAP=$TAP WL_NOTE=$NOTE WL_ID=$ID WL_DELAY=$DELAY_MS \
    WL_PMTU=$PMTU "$PY" - <<'EOF'
import json, os, re, glob
out = os.environ["WL_OUT"]
def load(p):
    try:
        with open(p) as f: return json.load(f)
    except (OSError, ValueError): return None
tcpd = {}
for line in open(os.path.join(out, "tcpdump.log")):
    m = re.match(r"(\d+) packets? (captured|received by filter|dropped by kernel)", line)
    if m: tcpd[m.group(2).replace(" ", "_")] = int(m.group(1))
ipt = {}
for line in open(os.path.join(out, "iptables.txt")):
    m = re.match(r"\s*(\d+)\s+(\d+)\s+\S+.*/\* (\S+) \*/", line)
    if m: ipt[m.group(3)] = {"packets": int(m.group(1)), "bytes": int(m.group(2))}
qdisc = {}
for line in open(os.path.join(out, "tc.txt")):
    m = re.match(r"qdisc (\S+) ", line)
    if m: kind = m.group(1)
    m = re.search(r"Sent (\d+) bytes (\d+) pkt \(dropped (\d+), overlimits (\d+)", line)
    if m: qdisc[kind] = {"bytes": int(m.group(1)), "packets": int(m.group(2)), "dropped": int(m.group(3))}
traffic = {}
for p in sorted(glob.glob(os.path.join(out, "*.json"))):
    n = os.path.basename(p)[:-5]
    if n in ("truth", "forwarder"): continue
    traffic[n] = load(p)
truth = {
    "scenario": os.environ["WL_SC"], "id": os.environ["WL_ID"], "note": os.environ["WL_NOTE"],
    "tap": os.environ["WL_TAP"], "pcap": os.path.join(out, "tap.pcap"),
    "delay_ms": float(os.environ["WL_DELAY"]), "pmtu": int(os.environ["WL_PMTU"]),
    "tcpdump": tcpd, "iptables": ipt, "qdisc_rs": qdisc, "forwarder": load(os.path.join(out, "forwarder.json")),
    "traffic": traffic,
}
with open(os.path.join(out, "truth.json"), "w") as f:
    json.dump(truth, f, indent=1, sort_keys=True)
EOF
}

run_scenario() { # scenario outdir
  local sc=$1 out=$2
  declare -F "run_$sc" >/dev/null || die "unknown scenario '$sc' (try: $0 list)"
  mkdir -p "$out"
  out=$(cd "$out" && pwd)
  rm -f "$out"/*.json "$out"/*.log "$out/tap.pcap" "$out/iptables.txt"
  TAP=$IF_RC FWD_ARGS=() NOTE=
  trap 'down' EXIT
  trap 'exit 130' INT TERM
  "prepare_$sc"
  FWD_EARLY=$out up
  fwd_wait
  warm "$out"
  if declare -F "impair_$sc" >/dev/null; then "impair_$sc"; fi
  log "$sc: $NOTE (tap $TAP)"
  tap_start "$TAP" "$out"
  local t0=$SECONDS
  "run_$sc" "$out"
  # Let the last ACK/FIN cross the forwarder before the tap stops.
  sleep "$(awk -v d="$DELAY_MS" 'BEGIN { print (4 * d + 300) / 1000 }')"
  tap_stop "$out"
  stop_pid "$(cat "$STATE/fwd.pid")" forwarder 5
  [ -s "$out/forwarder.json" ] || die "forwarder wrote no statistics (see $out/forwarder.log)"
  write_truth "$sc" "$out"
  [ "${#FAILED[@]}" -eq 0 ] || die "$sc: traffic failed (${FAILED[*]}); logs in $out"
  log "$sc: done in $((SECONDS - t0)) s; $out/tap.pcap, $out/truth.json"
}

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

case "${1:-}" in
  run) [ $# -eq 3 ] || usage; run_scenario "$2" "$3" ;;
  up)
    trap 'down' ERR
    up
    echo up >"$STATE/owner"
    mkdir -p "$STATE/out"
    start_forwarder "$STATE/out"
    trap - ERR
    log "up: client ns $NS_C ($C4, $C6), server ns $NS_S ($S4, $S6), router $NS_R"
    log "     enter with: ip netns exec $NS_C bash; tear down with: WL_ID=$ID $0 down"
    echo "$ID"
    ;;
  down) [ -z "${2:-}" ] || ID=$2; WL_ID=$ID exec "$0" __down ;;
  gc)
    # Only labs this script registered, whose `run` process is gone; labs
    # made by `up` (owner "up") stay until `down`.
    for d in "${STATE%/*}"/*/; do
      [ -f "$d/owner" ] || continue
      owner=$(cat "$d/owner")
      [ "$owner" = up ] && continue
      kill -0 "$owner" 2>/dev/null && continue
      id=$(basename "$d")
      log "gc: lab $id (owner $owner is gone)"
      WL_ID=$id "$0" __down
    done
    ;;
  __down) down ;;
  list) printf '%s\n' "${SCENARIOS[@]}" ;;
  *) usage ;;
esac
