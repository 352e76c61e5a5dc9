#!/usr/bin/env python3
"""wirelens lab traffic endpoints (used by scripts/lab.sh).

Real traffic from the Linux stack, with the knobs the lab needs and nothing
else: congestion control per socket (the host default is BBR; cubic shows
classic loss/queue behaviour), pacing (SO_MAX_PACING_RATE, so a python
forwarder keeps up and the run length is predictable), a receiver that stops
reading (zero window), many short connections, large UDP datagrams (IP
fragments). Every command is bounded by --timeout and writes a JSON result.

  server  --bind A --port P [--count N] [--reply BYTES] [--rcvbuf B]
          [--stall-after BYTES --stall-secs S]    TCP: read to EOF, reply, close
  client  --connect A --port P [--send BYTES] [--count N --parallel K]
          [--pace BYTES_PER_S]                    TCP: send, half-close, read to EOF
  udpsink --bind A --port P                      UDP: count datagrams until --timeout
  udpsend --connect A --port P --size S --count N [--interval-ms I]
  warm    --connect A [--connect B] --port P     refused connects (fill ARP/NDP)
"""
import argparse
import ipaddress
import json
import os
import socket
import sys
import threading
import time

TCP_CONGESTION = 13
SO_MAX_PACING_RATE = 47
IP_MTU_DISCOVER = 10
IP_PMTUDISC_DO = 2
IP_PMTUDISC_DONT = 0


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def set_cc(s, cc):
    if cc:
        s.setsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, cc.encode())


def write_result(path, obj):
    if not path:
        print(json.dumps(obj, sort_keys=True))
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


CHUNK = bytes(range(256)) * 256  # 64 KiB of non-zero payload


def send_all(s, n):
    left = n
    while left > 0:
        k = s.send(CHUNK[: min(left, len(CHUNK))])
        left -= k


def cmd_server(a):
    ls = socket.socket(family(a.bind), socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if a.rcvbuf:
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, a.rcvbuf)
    set_cc(ls, a.cc)
    ls.bind((a.bind, a.port))
    ls.listen(256)
    ls.settimeout(0.2)
    if a.ready:
        open(a.ready, "w").close()
    conns = []
    lock = threading.Lock()
    deadline = time.monotonic() + a.timeout
    threads = []

    def serve(c, peer):
        c.settimeout(max(0.1, deadline - time.monotonic()))
        set_cc(c, a.cc)
        if a.pace:
            c.setsockopt(socket.SOL_SOCKET, SO_MAX_PACING_RATE, a.pace)
        rec = {"peer": list(peer[:2]), "bytes_in": 0, "bytes_out": 0, "error": None}
        try:
            stalled = False
            while True:
                want = 65536 if not a.read_chunk else a.read_chunk
                d = c.recv(want)
                if not d:
                    break
                rec["bytes_in"] += len(d)
                if a.stall_after and not stalled and rec["bytes_in"] >= a.stall_after:
                    stalled = True
                    rec["stall_start_ns"] = time.time_ns()
                    time.sleep(a.stall_secs)
                    rec["stall_end_ns"] = time.time_ns()
            if a.reply:
                send_all(c, a.reply)
                rec["bytes_out"] = a.reply
            c.shutdown(socket.SHUT_WR)
            # Wait for the peer's close so our FIN is acked before we close.
            while c.recv(65536):
                pass
        except OSError as e:
            rec["error"] = repr(e)
        finally:
            c.close()
        with lock:
            conns.append(rec)

    while len(threads) < a.count and time.monotonic() < deadline:
        try:
            c, peer = ls.accept()
        except socket.timeout:
            continue
        t = threading.Thread(target=serve, args=(c, peer), daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    ls.close()
    write_result(a.result, {"role": "server", "accepted": len(threads), "conns": conns})
    return 0 if len(conns) == a.count and all(c["error"] is None for c in conns) else 1


def cmd_client(a):
    if a.start_at:
        time.sleep(max(0.0, a.start_at - time.time()))
    started_ns = time.time_ns()
    results = []
    lock = threading.Lock()
    next_i = [0]
    deadline = time.monotonic() + a.timeout

    def one(i):
        rec = {"i": i, "local_port": None, "bytes_out": 0, "bytes_in": 0, "error": None}
        s = socket.socket(family(a.connect), socket.SOCK_STREAM)
        try:
            set_cc(s, a.cc)
            if a.pace:
                s.setsockopt(socket.SOL_SOCKET, SO_MAX_PACING_RATE, a.pace)
            if a.sndbuf:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, a.sndbuf)
            if family(a.connect) == socket.AF_INET:
                s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
            if a.sources:
                # Connection i comes from the (i mod N)-th address after --source.
                base = ipaddress.ip_address(a.source)
                s.bind((str(base + i % a.sources), 0))
            s.settimeout(max(0.1, deadline - time.monotonic()))
            t0 = time.monotonic_ns()
            s.connect((a.connect, a.port))
            rec["connect_ms"] = (time.monotonic_ns() - t0) / 1e6
            rec["local_port"] = s.getsockname()[1]
            if a.send:
                send_all(s, a.send)
                rec["bytes_out"] = a.send
            s.shutdown(socket.SHUT_WR)
            while True:
                d = s.recv(65536)
                if not d:
                    break
                rec["bytes_in"] += len(d)
        except ConnectionRefusedError:
            rec["error"] = "refused"
        except OSError as e:
            rec["error"] = repr(e)
        finally:
            try:
                rec.setdefault("local_port", s.getsockname()[1])
            except OSError:
                pass
            s.close()
        with lock:
            results.append(rec)

    def worker(k):
        # Parallel workers start staggered over one gap: a steady rate, not
        # bursts of --parallel connections at once.
        first = True
        # --period-ms: worker k starts at k/parallel of a period and then once
        # a period, however long its connections take (a steady rate).
        slot = time.monotonic() + (a.period_ms or 0) * k / max(1, a.parallel) / 1000.0
        while True:
            with lock:
                i = next_i[0]
                if i >= a.count:
                    return
                next_i[0] += 1
            if a.period_ms:
                time.sleep(max(0.0, slot - time.monotonic()))
                slot += a.period_ms / 1000.0
            elif a.gap_ms:
                share = (k + 1) / max(1, a.parallel) if first else 1.0
                time.sleep(a.gap_ms * share / 1000.0)
            first = False
            one(i)

    ts = [threading.Thread(target=worker, args=(k,), daemon=True)
          for k in range(max(1, a.parallel))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(max(0.0, deadline - time.monotonic()))
    results.sort(key=lambda r: r["i"])
    write_result(a.result, {"role": "client", "target": [a.connect, a.port], "conns": results,
                            "started_ns": started_ns})
    bad = [r for r in results if r["error"] and not (a.expect_refused and r["error"] == "refused")]
    return 0 if len(results) == a.count and not bad else 1


def cmd_udpsink(a):
    s = socket.socket(family(a.bind), socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((a.bind, a.port))
    s.settimeout(0.2)
    if a.ready:
        open(a.ready, "w").close()
    n = 0
    nbytes = 0
    deadline = time.monotonic() + a.timeout
    stop = []
    import signal
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    while time.monotonic() < deadline and not stop and (not a.count or n < a.count):
        try:
            d = s.recv(65536)
        except socket.timeout:
            continue
        except InterruptedError:
            continue
        n += 1
        nbytes += len(d)
    write_result(a.result, {"role": "udpsink", "datagrams": n, "bytes": nbytes})
    return 0


def cmd_udpsend(a):
    s = socket.socket(family(a.connect), socket.SOCK_DGRAM)
    if family(a.connect) == socket.AF_INET:
        # Let the stack fragment: DF clear (UDP's default is "want", which
        # would also fragment a datagram larger than the device MTU).
        s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
    s.connect((a.connect, a.port))
    payload = (CHUNK * (a.size // len(CHUNK) + 1))[: a.size]
    sent = 0
    for _ in range(a.count):
        s.send(payload)
        sent += 1
        if a.interval_ms:
            time.sleep(a.interval_ms / 1000.0)
    write_result(a.result, {"role": "udpsend", "datagrams": sent, "size": a.size,
                            "local_port": s.getsockname()[1]})
    return 0


def cmd_warm(a):
    rc = 0
    for addr in a.connect:
        s = socket.socket(family(addr), socket.SOCK_STREAM)
        s.settimeout(a.timeout)
        try:
            s.connect((addr, a.port))
        except ConnectionRefusedError:
            pass
        except OSError as e:
            print(f"warm: {addr}:{a.port}: {e!r}", file=sys.stderr)
            rc = 1
        finally:
            s.close()
    return rc


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp):
        sp.add_argument("--port", type=int, required=True)
        sp.add_argument("--timeout", type=float, default=30.0)
        sp.add_argument("--result", help="JSON result file (stdout if absent)")
        sp.add_argument("--ready", help="file created once listening")

    sp = sub.add_parser("server")
    common(sp)
    sp.add_argument("--bind", required=True)
    sp.add_argument("--count", type=int, default=1)
    sp.add_argument("--reply", type=int, default=0)
    sp.add_argument("--rcvbuf", type=int, default=0)
    sp.add_argument("--read-chunk", type=int, default=0)
    sp.add_argument("--stall-after", type=int, default=0)
    sp.add_argument("--stall-secs", type=float, default=0.0)
    sp.add_argument("--pace", type=int, default=0, help="SO_MAX_PACING_RATE, bytes/s")
    sp.add_argument("--cc", default="cubic")

    sp = sub.add_parser("client")
    common(sp)
    sp.add_argument("--connect", required=True)
    sp.add_argument("--send", type=int, default=0)
    sp.add_argument("--count", type=int, default=1)
    sp.add_argument("--parallel", type=int, default=1)
    sp.add_argument("--gap-ms", type=float, default=0.0)
    sp.add_argument("--period-ms", type=float, default=0.0,
                    help="instead of --gap-ms: each worker connects once a period")
    sp.add_argument("--start-at", type=float, default=0.0,
                    help="wait until this wall-clock time (Unix seconds) to begin")
    sp.add_argument("--pace", type=int, default=0, help="SO_MAX_PACING_RATE, bytes/s")
    sp.add_argument("--sndbuf", type=int, default=0)
    sp.add_argument("--expect-refused", action="store_true")
    sp.add_argument("--cc", default="cubic")
    sp.add_argument("--source", help="first source address (with --sources)")
    sp.add_argument("--sources", type=int, default=0,
                    help="connections come from this many addresses from --source on, in turn")

    sp = sub.add_parser("udpsink")
    common(sp)
    sp.add_argument("--bind", required=True)
    sp.add_argument("--count", type=int, default=0)

    sp = sub.add_parser("udpsend")
    common(sp)
    sp.add_argument("--connect", required=True)
    sp.add_argument("--size", type=int, default=4000)
    sp.add_argument("--count", type=int, default=20)
    sp.add_argument("--interval-ms", type=float, default=5.0)

    sp = sub.add_parser("warm")
    common(sp)
    sp.add_argument("--connect", required=True, action="append",
                    help="address to connect to (repeat for several)")

    a = p.parse_args()
    return {"server": cmd_server, "client": cmd_client, "udpsink": cmd_udpsink,
            "udpsend": cmd_udpsend, "warm": cmd_warm}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
