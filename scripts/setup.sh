#!/usr/bin/env bash
# Installs every system package wirelens needs on a fresh Debian machine:
# build (clang, libelf, zlib, m4, pkg-config for the XDP side), and the tools the
# tests and the lab use (tshark as the reference analyzer, tcpdump, iproute2,
# iptables, ethtool, iperf3, python3; tmux for the `wirelens top` test).
# Idempotent; needs root (or sudo).
set -euo pipefail

pkgs=(
  build-essential clang llvm libelf-dev zlib1g-dev m4 pkg-config
  tshark tcpdump iproute2 iptables ethtool iperf3 python3 procps tmux
  # scripts/compare-tools.sh: the other analyzers (argus; pping is built from
  # its source with libtins and libpcap) and GNU time; benches/README.md's
  # instruction counts come from callgrind
  tcptrace argus-server libtins-dev libpcap-dev time valgrind
  # tests/ctrl_slow_clients.rs makes its CA and certificates with the openssl CLI
  openssl
  # the real servers the export and store tests start on loopback: nfcapd/nfdump
  # (IPFIX collector), prometheus/promtool, clickhouse-server
  nfdump prometheus clickhouse-server
)

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # tshark asks whether non-root users may capture; answer once, non-interactively.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | "${sudo_cmd[@]}" debconf-set-selections
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "setup: system packages present" >&2
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install a Rust toolchain (rustup) first" >&2
  exit 1
fi

# cargo-fuzz for the fuzz step of scripts/test.sh (scripts/fuzz.sh); from
# crates.io, about 40 s to build.
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "setup: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked --quiet
fi
