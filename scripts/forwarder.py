#!/usr/bin/env python3
"""wirelens lab forwarder: an impairing L2 wire between two interfaces.

This kernel has no netem, so delay, a delay step, seeded random loss and
reordering come from this small user-space bridge. It runs inside the lab's
router namespace with one AF_PACKET socket bound to each of two interfaces
(`--a` faces the router's kernel side, `--b` faces the server) and copies every
frame from one to the other, unchanged, after the configured delay. ARP/NDP and
everything else cross it too, so the two sides form one Ethernet segment.

Directions: `ab` = frames read on A and sent out B (towards the server, c2s in
the lab), `ba` = the reverse (s2c). Loss and reordering apply only to the frames
of interest: IPv4/IPv6 TCP segments that carry payload (`--match data`, the
default) or every IP frame (`--match ip`); they never touch ARP/NDP.

On SIGTERM/SIGINT (or after --max-seconds) it writes --stats, a JSON object:
  forwarded{ab,ba}, dropped{ab,ba}, reordered{ab,ba}, matched{ab,ba},
  segments {dropped,reordered} {ab,ba}: [[tcp seq, payload length], ...] of
    the TCP segments dropped / held back (so a test can tell which segment a
    hole fill at the tap was),
  socket_drops (kernel PACKET_STATISTICS drops: must be 0 for exact truth),
  send_errors, netdown (ENETDOWN reports: a port went down, e.g. before the
  lab brought it up), step {at_frame, at_ns} (when the delay step happened:
  after N frames, N seconds, or at the first frame after SIGUSR1),
  late_ms {p50,p99,max} (how late frames left versus their due time),
  hold {seq, len, at_ns, ms, repeats} (the segment held with --hold-nth, and
    how many later frames resending its bytes were held with it),
  ttl_at_ns (when --ttl-set began), params (the command line as parsed).

Middlebox signs: --hold-nth N holds the Nth matched data frame of --hold-dir,
and every later frame resending its bytes, --hold-ms longer (a hole open for a
known time); --ttl-set T rewrites the TTL / hop limit of every IP frame of
--ttl-dir from its --ttl-after-frames-th matched frame on (a route change);
--bleach-ecn-dir clears the ECN bits of every IP frame going that way.
Tests compare dropped/reordered with what the tap and wirelens saw.

Frames are held in one heap ordered by due time and sent in that order, so a
constant delay (or an increasing one: the step) never reorders; only a frame
held `--reorder-extra-ms` longer lets later frames overtake it.
"""
import argparse
import errno
import heapq
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_IGNORE_OUTGOING = 23
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
SEG_LOG_MAX = 100000  # bound of the per-direction segment lists in --stats


def open_port(ifname):
    # Protocol 0 at creation: the socket sees nothing until bind() names the
    # interface, so no frame of another interface ever slips in.
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
    s.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 16 << 20)
    # Our own transmissions on this interface come back to packet sockets as
    # PACKET_OUTGOING; we must not forward them again.
    s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    s.bind((ifname, ETH_P_ALL))
    s.setblocking(False)
    return s


def wait_up(ifnames, timeout):
    """Waits until every interface's operstate is "up" (veth: both ends up)."""
    deadline = time.monotonic() + timeout
    while True:
        states = []
        for n in ifnames:
            try:
                with open(f"/sys/class/net/{n}/operstate") as f:
                    states.append(f.read().strip())
            except OSError:
                states.append("absent")
        if all(st == "up" for st in states):
            return
        if time.monotonic() > deadline:
            sys.exit(f"forwarder: ports not up after {timeout} s: "
                     + ", ".join(f"{n} {st}" for n, st in zip(ifnames, states)))
        time.sleep(0.02)


def socket_drops(s):
    # struct tpacket_stats { unsigned tp_packets, tp_drops; } (reset on read)
    raw = s.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
    _packets, drops = struct.unpack("II", raw)
    return drops


def ip_offset(frame):
    """(offset of the IP header, 4 or 6) of an Ethernet frame, else None."""
    if len(frame) < 14:
        return None
    off = 12
    ethertype = struct.unpack_from("!H", frame, off)[0]
    off += 2
    while ethertype in (0x8100, 0x88A8) and len(frame) >= off + 4:
        ethertype = struct.unpack_from("!H", frame, off + 2)[0]
        off += 4
    if ethertype == 0x0800 and len(frame) >= off + 20:
        return off, 4
    if ethertype == 0x86DD and len(frame) >= off + 40:
        return off, 6
    return None


def tcp_segment(frame):
    """(sequence number, payload length) of an IPv4/IPv6 TCP segment in an
    Ethernet frame, else None."""
    at = ip_offset(frame)
    if at is None:
        return None
    off, v = at
    if v == 4:
        ihl = (frame[off] & 0x0F) * 4
        total = struct.unpack_from("!H", frame, off + 2)[0]
        frag = struct.unpack_from("!H", frame, off + 6)[0]
        if frame[off + 9] != 6 or (frag & 0x1FFF) != 0 or len(frame) < off + ihl + 13:
            return None
        doff = (frame[off + ihl + 12] >> 4) * 4
        seq = struct.unpack_from("!I", frame, off + ihl + 4)[0]
        return seq, total - ihl - doff
    plen = struct.unpack_from("!H", frame, off + 4)[0]
    if frame[off + 6] != 6 or len(frame) < off + 40 + 13:
        return None  # extension headers are not needed in the lab
    doff = (frame[off + 40 + 12] >> 4) * 4
    seq = struct.unpack_from("!I", frame, off + 40 + 4)[0]
    return seq, plen - doff


def rewrite_ip(frame, ttl=None, bleach=False):
    """The frame with its TTL / hop limit set and / or its ECN bits cleared
    (IPv4 header checksum recomputed)."""
    at = ip_offset(frame)
    if at is None:
        return frame
    off, v = at
    f = bytearray(frame)
    if v == 4:
        if ttl is not None:
            f[off + 8] = ttl
        if bleach:
            f[off + 1] &= 0xFC
        ihl = (f[off] & 0x0F) * 4
        f[off + 10:off + 12] = b"\0\0"
        total = 0
        for i in range(off, off + ihl, 2):
            total += (f[i] << 8) | f[i + 1]
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        struct.pack_into("!H", f, off + 10, ~total & 0xFFFF)
    else:
        if ttl is not None:
            f[off + 7] = ttl
        if bleach:
            f[off + 1] &= 0xCF  # traffic class bits 0-1 (ECN)
    return bytes(f)


def overlaps(seg, hold):
    """Whether TCP segment (seq, len) carries bytes of the held (seq, len)."""
    s, n = seg
    hs, hn = hold
    return n > 0 and ((s - hs) % (1 << 32) < hn or (hs - s) % (1 << 32) < n)


def is_ip(frame):
    if len(frame) < 14:
        return False
    return struct.unpack_from("!H", frame, 12)[0] in (0x0800, 0x86DD)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--a", required=True, help="interface towards the router")
    p.add_argument("--b", required=True, help="interface towards the server")
    p.add_argument("--stats", required=True, help="JSON file written on exit")
    p.add_argument("--ready", help="file created once both sockets are bound")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--delay-ms", type=float, default=10.0, help="one-way delay, both directions")
    p.add_argument("--step-after-frames", type=int, default=0,
                   help="after this many matched ab frames, switch to --step-delay-ms")
    p.add_argument("--step-after-seconds", type=float, default=0.0,
                   help="or: this long after the first matched ab frame, switch to "
                        "--step-delay-ms (whichever of the two comes first)")
    p.add_argument("--step-on-usr1", action="store_true",
                   help="or: on SIGUSR1 (a lab puts the step at a time of its choosing)")
    p.add_argument("--step-delay-ms", type=float, default=None)
    p.add_argument("--match", choices=("data", "ip"), default="data",
                   help="frames loss/reordering may touch: TCP with payload, or any IP")
    p.add_argument("--loss-dir", choices=("ab", "ba"), default="ab")
    p.add_argument("--loss", type=float, default=0.0, help="drop probability")
    p.add_argument("--loss-max", type=int, default=1 << 30, help="drop at most this many")
    p.add_argument("--reorder-dir", choices=("ab", "ba"), default="ab")
    p.add_argument("--reorder", type=float, default=0.0, help="hold-back probability")
    p.add_argument("--reorder-extra-ms", type=float, default=3.0)
    p.add_argument("--reorder-max", type=int, default=1 << 30)
    p.add_argument("--skip-first", type=int, default=20,
                   help="matched frames per direction never impaired (lets the flow start)")
    p.add_argument("--hold-dir", choices=("ab", "ba"), default="ba")
    p.add_argument("--hold-nth", type=int, default=0,
                   help="hold this matched data frame (and frames resending its bytes)")
    p.add_argument("--hold-ms", type=float, default=0.0)
    p.add_argument("--ttl-dir", choices=("ab", "ba"), default="ba")
    p.add_argument("--ttl-after-frames", type=int, default=0)
    p.add_argument("--ttl-set", type=int, default=None)
    p.add_argument("--bleach-ecn-dir", choices=("ab", "ba"), default=None)
    p.add_argument("--max-seconds", type=float, default=120.0, help="hard lifetime bound")
    p.add_argument("--wait-up", type=float, default=0.0, metavar="SECONDS",
                   help="first wait (at most this long) until both ports are up, so the "
                        "forwarder can be started while its links are still being built")
    a = p.parse_args()

    if a.wait_up > 0:
        wait_up((a.a, a.b), a.wait_up)
    rng = random.Random(a.seed)
    sa, sb = open_port(a.a), open_port(a.b)
    out_of = {sa: ("ab", sb), sb: ("ba", sa)}
    forwarded = {"ab": 0, "ba": 0}
    dropped = {"ab": 0, "ba": 0}
    reordered = {"ab": 0, "ba": 0}
    matched = {"ab": 0, "ba": 0}
    # [seq, payload length] of every TCP segment dropped / held back, in order.
    segs = {"dropped": {"ab": [], "ba": []}, "reordered": {"ab": [], "ba": []}}
    sdrops = {"a": 0, "b": 0}
    send_errors = 0
    netdown = 0
    late = []
    step = {"at_frame": None, "at_ns": None}
    first_ab = None  # monotonic time of the first matched ab frame
    hold = None  # {"seq", "len", "at_ns", "ms", "repeats"} and its due time
    hold_due = 0.0
    ttl_at_ns = None
    delay = a.delay_ms / 1000.0
    heap = []  # (due, seq, out_socket, dir, frame)
    seq = 0
    stop = []

    def on_signal(_sig, _frm):
        stop.append(1)

    step_asked = []

    def on_usr1(_sig, _frm):
        step_asked.append(1)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if a.step_on_usr1:
        signal.signal(signal.SIGUSR1, on_usr1)
    if a.ready:
        with open(a.ready, "w") as f:
            f.write(str(os.getpid()))
    deadline = time.monotonic() + a.max_seconds
    poller = select.epoll()
    poller.register(sa.fileno(), select.EPOLLIN)
    poller.register(sb.fileno(), select.EPOLLIN)
    by_fd = {sa.fileno(): sa, sb.fileno(): sb}

    while not stop and time.monotonic() < deadline:
        now = time.monotonic()
        timeout = 0.05
        if heap:
            timeout = min(timeout, max(0.0, heap[0][0] - now))
        try:
            events = poller.poll(timeout)
        except InterruptedError:
            continue
        for fd, _ev in events:
            s = by_fd[fd]
            d, out = out_of[s]
            for _ in range(256):
                try:
                    frame = s.recv(65536)
                except BlockingIOError:
                    break
                except OSError as e:
                    # ENETDOWN: the port was down at some point since bind
                    # (the lab starts us while it brings its links up); the
                    # socket keeps working once the link is up.
                    if e.errno != errno.ENETDOWN:
                        raise
                    netdown += 1
                    break
                now = time.monotonic()
                due = now + delay
                m = False
                seg = tcp_segment(frame)
                if a.match == "data":
                    m = seg is not None and seg[1] > 0
                else:
                    m = is_ip(frame)
                if m:
                    matched[d] += 1
                    if d == "ab" and first_ab is None:
                        first_ab = now
                    if (d == "ab" and step["at_frame"] is None
                            and a.step_delay_ms is not None
                            and ((a.step_after_frames
                                  and matched["ab"] >= a.step_after_frames)
                                 or (a.step_after_seconds
                                     and now - first_ab >= a.step_after_seconds)
                                 or step_asked)):
                        delay = a.step_delay_ms / 1000.0
                        due = now + delay
                        step["at_frame"] = matched["ab"]
                        step["at_ns"] = time.time_ns()
                    if (seg is not None and d == a.hold_dir and a.hold_nth
                            and hold is None and matched[d] == a.hold_nth):
                        hold_due = due + a.hold_ms / 1000.0
                        hold = {"seq": seg[0], "len": seg[1], "at_ns": time.time_ns(),
                                "ms": a.hold_ms, "repeats": 0}
                        due = hold_due
                    elif (seg is not None and hold is not None and d == a.hold_dir
                            and due < hold_due and overlaps(seg, (hold["seq"], hold["len"]))):
                        hold["repeats"] += 1
                        due = hold_due
                    if (a.ttl_set is not None and d == a.ttl_dir and ttl_at_ns is None
                            and matched[d] >= a.ttl_after_frames):
                        ttl_at_ns = time.time_ns()
                    if matched[d] > a.skip_first:
                        if (d == a.loss_dir and a.loss > 0 and dropped[d] < a.loss_max
                                and rng.random() < a.loss):
                            dropped[d] += 1
                            if seg is not None and len(segs["dropped"][d]) < SEG_LOG_MAX:
                                segs["dropped"][d].append(list(seg))
                            continue
                        if (d == a.reorder_dir and a.reorder > 0
                                and reordered[d] < a.reorder_max
                                and rng.random() < a.reorder):
                            reordered[d] += 1
                            if seg is not None and len(segs["reordered"][d]) < SEG_LOG_MAX:
                                segs["reordered"][d].append(list(seg))
                            due += a.reorder_extra_ms / 1000.0
                rewrite_ttl = ttl_at_ns is not None and d == a.ttl_dir
                if rewrite_ttl or d == a.bleach_ecn_dir:
                    frame = rewrite_ip(frame, a.ttl_set if rewrite_ttl else None,
                                       d == a.bleach_ecn_dir)
                seq += 1
                heapq.heappush(heap, (due, seq, out, d, frame))
        now = time.monotonic()
        while heap and heap[0][0] <= now:
            due, _, out, d, frame = heapq.heappop(heap)
            try:
                out.send(frame)
                forwarded[d] += 1
            except OSError:
                send_errors += 1
            late.append(now - due)
        if len(late) > 200000:
            late = sorted(late)[::2]
    # Flush what is still queued so nothing in flight is lost at shutdown.
    for due, _, out, d, frame in sorted(heap):
        try:
            out.send(frame)
            forwarded[d] += 1
        except OSError:
            send_errors += 1
    sdrops["a"] += socket_drops(sa)
    sdrops["b"] += socket_drops(sb)
    late.sort()

    def q(x):
        return round(late[min(len(late) - 1, int(x * len(late)))] * 1000, 3) if late else None

    stats = {
        "forwarded": forwarded,
        "dropped": dropped,
        "reordered": reordered,
        "matched": matched,
        "segments": segs,
        "socket_drops": sdrops["a"] + sdrops["b"],
        "send_errors": send_errors,
        "netdown": netdown,
        "step": step,
        "late_ms": {"p50": q(0.5), "p99": q(0.99), "max": q(1.0)},
        "hold": hold,
        "ttl_at_ns": ttl_at_ns,
        "params": vars(a),
    }
    tmp = a.stats + ".tmp"
    with open(tmp, "w") as f:
        json.dump(stats, f, indent=1, sort_keys=True)
    os.replace(tmp, a.stats)


if __name__ == "__main__":
    sys.exit(main())
