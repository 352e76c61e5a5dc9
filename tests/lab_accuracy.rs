//! Accuracy lab: real captures from the Linux TCP stack with known
//! impairments (scripts/lab.sh), `wirelens analyze` held against tshark and
//! against what was injected. One test per scenario; root only (SKIP otherwise).
//!
//! Run: `cargo test --test lab_accuracy -- --test-threads=1`
//! Env: `WL_LAB_KEEP=1` keeps every capture (failing ones are always kept),
//! `WL_LAB_DIR=DIR` chooses where, `WL_LAB_REFERENCE_ONLY=1` runs the lab and
//! the reference without wirelens (to debug the lab itself), `WL_LAB_REUSE=DIR`
//! compares the kept captures in DIR again without running the lab.
//! The comparison rules are in tests/lab/compare.rs.
//!
//! Where wirelens and Wireshark disagree on purpose (out_of_order by TSval
//! versus Wireshark's timing rule), the scenario tests hold both against the
//! injected truth: the forwarder logs every segment it dropped or held back
//! (forwarder.json `segments`), iptables and tbf count their drops. In
//! `reorder` every hole fill at the tap must be a held segment and wirelens'
//! out_of_order must equal the overtaken held segments; in `loss-fwd`,
//! `loss-before`, `loss-after` and `bufferbloat` nothing is reordered, so
//! out_of_order must be 0 (but for hole fills whose TSval equals the highest
//! segment's, where the engine falls back to Wireshark's flag). Wireshark's
//! own counts are printed next to the truth (`note:` lines).

mod lab;
mod support;

use std::net::IpAddr;

use lab::compare::Check;
use lab::reference::{RefDir, RefTcpFlow};
use serde_json::Value;

const C4: &str = "198.18.1.2";
const S4: &str = "198.18.2.2";
const C6: &str = "2001:db8:1::2";
const S6: &str = "2001:db8:2::2";
const PORT: u16 = 24816;
const PORT6: u16 = 24817;
const UPORT: u16 = 24818;
const CLOSED: u16 = 24819;
const MS: u64 = 1_000_000;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn start(scenario: &str) -> Option<Check> {
    if lab::skip(&format!("lab_accuracy::{scenario}")) {
        return None;
    }
    Some(Check::new(lab::run_scenario(scenario)))
}

/// The single data flow of a bulk scenario.
fn bulk_flow(c: &Check, server: &str, port: u16) -> RefTcpFlow {
    let f = c.tcp_flow(|f| f.server == (ip(server), port));
    f.unwrap_or_else(|| panic!("no TCP flow to {server}:{port} in {}", c.cap.pcap.display()))
        .clone()
}

/// Common truth of every lab: the tap and the forwarder lost nothing.
fn lab_sane(c: &mut Check) {
    let kd = c.cap.truth_u64("/tcpdump/dropped_by_kernel");
    c.truth("tcpdump dropped 0 packets", kd == 0, format!("{kd}"));
    let sd = c.cap.truth_u64("/forwarder/socket_drops");
    let se = c.cap.truth_u64("/forwarder/send_errors");
    let nd = c.cap.truth_u64("/forwarder/netdown");
    c.truth(
        "forwarder lost nothing it was not told to",
        sd == 0 && se == 0 && nd == 0,
        format!("socket drops {sd}, send errors {se}, port down {nd}"),
    );
}

/// A wirelens value a truth check compares. A missing one (no such flow,
/// no such field) is itself a failed check, so a guard on the `Option` never
/// lets a check pass by not running; only `WL_LAB_REFERENCE_ONLY` (wirelens
/// deliberately not run) leaves it `None` without a failure.
fn wl_u64(
    c: &mut Check,
    proto: &str,
    client: (IpAddr, u16),
    server: (IpAddr, u16),
    ptr: &str,
) -> Option<u64> {
    let v = c
        .wl_flow(proto, client, server)
        .and_then(|f| f.pointer(ptr))
        .and_then(Value::as_u64);
    if v.is_none() && c.wirelens_ran() {
        c.truth(
            &format!("wirelens reports {ptr} of the {proto} flow {client:?} -> {server:?}"),
            false,
            "missing (no such flow or field)".into(),
        );
    }
    v
}

/// Truth of a loss-free bulk upload of `bytes`.
fn clean_truth(c: &mut Check, f: &RefTcpFlow, bytes: u64) {
    c.truth(
        "c2s payload = bytes the client sent, once",
        f.c2s.payload_bytes == bytes,
        format!("{} (sent {bytes})", f.c2s.payload_bytes),
    );
    let bad = f.c2s.retrans_seen
        + f.c2s.hole_fill
        + f.c2s.gaps
        + f.s2c.retrans_seen
        + f.s2c.hole_fill
        + f.s2c.gaps;
    c.truth(
        "no retransmission, hole or gap (reference)",
        bad == 0,
        format!("{bad}"),
    );
    let p50 = lab::reference::quantile(&f.c2s.rtt_ns, 0.5).unwrap_or(0);
    c.truth(
        "tshark c2s RTT p50 in [20, 30] ms (forwarder: 10 ms each way)",
        (20 * MS..=30 * MS).contains(&p50),
        format!("{:.3} ms", p50 as f64 / 1e6),
    );
    if let Some(min) = wl_u64(c, "tcp", f.client, f.server, "/c2s/rtt/min_ns") {
        // The forwarder never sends early: no c2s data RTT can be below 20 ms.
        c.truth(
            "wirelens c2s rtt.min >= 20 ms",
            min >= 20 * MS,
            format!("{:.3} ms", min as f64 / 1e6),
        );
    }
}

#[test]
fn clean() {
    let Some(mut c) = start("clean") else { return };
    lab_sane(&mut c);
    let f = bulk_flow(&c, S4, PORT);
    clean_truth(&mut c, &f, 3_000_000);
    c.compare_all();
    c.finish();
}

#[test]
fn ipv6() {
    let Some(mut c) = start("ipv6") else { return };
    lab_sane(&mut c);
    let f = bulk_flow(&c, S6, PORT6);
    c.truth(
        "client is the IPv6 lab client",
        f.client.0 == ip(C6),
        format!("{}", f.client.0),
    );
    clean_truth(&mut c, &f, 3_000_000);
    c.compare_all();
    c.finish();
}

#[test]
fn loss_after_tap() {
    let Some(mut c) = start("loss-after") else {
        return;
    };
    lab_sane(&mut c);
    let f = bulk_flow(&c, S4, PORT);
    let d = c.cap.truth_u64("/iptables/wl-loss/packets");
    c.truth(
        "the router dropped some c2s data",
        d >= 5,
        format!("{d} drops"),
    );
    // Every dropped segment had been seen by the tap, so its bytes come back
    // as a segment the tap had fully seen; extra ones are spurious (RTO).
    let rs = f.c2s.retrans_seen;
    c.truth(
        "reference c2s retrans_seen in [drops, drops + max(3, drops/4)]",
        rs >= d && rs <= d + (d / 4).max(3),
        format!("retrans_seen {rs}, drops {d}"),
    );
    c.truth(
        "no hole at the tap (reference hole_fill = gaps = 0)",
        f.c2s.hole_fill == 0 && f.c2s.gaps == 0,
        format!("hole_fill {}, gaps {}", f.c2s.hole_fill, f.c2s.gaps),
    );
    if let Some(w) = wl_u64(&mut c, "tcp", f.client, f.server, "/c2s/retrans_seen") {
        c.truth(
            "wirelens c2s retrans_seen >= drops",
            w >= d,
            format!("{w} vs {d} drops"),
        );
    }
    resend_truth(&mut c, &f, d);
    c.compare_all();
    c.finish();
}

#[test]
fn loss_before_tap() {
    let Some(mut c) = start("loss-before") else {
        return;
    };
    lab_sane(&mut c);
    let f = bulk_flow(&c, S4, PORT);
    let d = c.cap.truth_u64("/iptables/wl-loss/packets");
    c.truth(
        "the router dropped some c2s data",
        d >= 5,
        format!("{d} drops"),
    );
    // The tap (router, server side) is after the drop: it sees a gap where a
    // segment went missing and the hole fill when it is resent. A drop of a
    // retransmission or of the last segment opens no new gap.
    c.truth(
        "reference c2s gaps in [1, drops], hole_fill in [gaps, drops]",
        f.c2s.gaps >= 1 && f.c2s.gaps <= d && f.c2s.hole_fill >= f.c2s.gaps && f.c2s.hole_fill <= d,
        format!(
            "gaps {}, hole_fill {}, drops {d}",
            f.c2s.gaps, f.c2s.hole_fill
        ),
    );
    c.truth(
        "tshark saw the same holes ('previous segment not captured' = gaps)",
        f.c2s.ws_lost_segment == f.c2s.gaps,
        format!(
            "lost_segment {}, gaps {}",
            f.c2s.ws_lost_segment, f.c2s.gaps
        ),
    );
    c.truth(
        "few bytes seen twice (spurious only): retrans_seen <= max(3, drops/4)",
        f.c2s.retrans_seen <= (d / 4).max(3),
        format!("retrans_seen {}", f.c2s.retrans_seen),
    );
    if let Some(w) = wl_u64(&mut c, "tcp", f.client, f.server, "/c2s/hole_fill") {
        c.truth("wirelens c2s hole_fill >= 1", w >= 1, format!("{w}"));
    }
    no_reordering_truth(&mut c, &f.c2s, "c2s", &f, d);
    c.compare_all();
    c.finish();
}

#[test]
fn loss_fwd_before_tap() {
    let Some(mut c) = start("loss-fwd") else {
        return;
    };
    lab_sane(&mut c);
    let f = bulk_flow(&c, S4, PORT);
    let d = c.cap.truth_u64("/forwarder/dropped/ba");
    c.truth(
        "the forwarder dropped some s2c data (seeded)",
        d >= 5,
        format!("{d} drops"),
    );
    // The forwarder sits between the server and the router; the tap (rc)
    // sees s2c after it: each loss is a gap, its retransmission a hole fill.
    c.truth(
        "reference s2c gaps in [1, drops], hole_fill in [gaps, drops]",
        f.s2c.gaps >= 1 && f.s2c.gaps <= d && f.s2c.hole_fill >= f.s2c.gaps && f.s2c.hole_fill <= d,
        format!(
            "gaps {}, hole_fill {}, drops {d}",
            f.s2c.gaps, f.s2c.hole_fill
        ),
    );
    c.truth(
        "few bytes seen twice (spurious only): retrans_seen <= max(3, drops/4)",
        f.s2c.retrans_seen <= (d / 4).max(3),
        format!("retrans_seen {}", f.s2c.retrans_seen),
    );
    // Which segments were dropped (forwarder's log): every hole fill at the
    // tap must carry bytes of one of them (nothing else is missing).
    if let Some(dropped) = fwd_segments(&mut c, "dropped", "ba") {
        let unexplained: Vec<u64> = f
            .s2c
            .hole_fills
            .iter()
            .filter(|h| !dropped.iter().any(|&(s, l)| overlaps(h.seq, h.len, s, l)))
            .map(|h| h.frame)
            .collect();
        c.truth(
            "every s2c hole fill resends bytes of a dropped segment",
            dropped.len() as u64 == d && unexplained.is_empty(),
            format!(
                "{} hole fills, {} dropped segments logged; not explained: frames {unexplained:?}",
                f.s2c.hole_fill,
                dropped.len()
            ),
        );
    }
    no_reordering_truth(&mut c, &f.s2c, "s2c", &f, d);
    c.compare_all();
    c.finish();
}

/// Nothing was reordered in this scenario: every hole fill is a
/// retransmission. wirelens' out_of_order may only count the hole fills whose
/// TSval could not decide (equal to the highest segment's: sent in the same
/// millisecond) and that Wireshark's timing rule calls out_of_order.
/// Wireshark's own labels are printed against the same truth.
fn no_reordering_truth(c: &mut Check, r: &RefDir, d: &str, f: &RefTcpFlow, drops: u64) {
    c.truth(
        &format!("reference {d} hole fills are retransmissions by TSval (none older than the highest segment's)"),
        r.ts_older == 0,
        format!(
            "{} hole fills: {} newer, {} older, {} undecided",
            r.hole_fill, r.ts_newer, r.ts_older, r.ts_undecided
        ),
    );
    let ws_ooo = r.ws_ooo_hole_fill;
    let ws_retx = r.hole_fill - ws_ooo;
    c.note(
        &format!("Wireshark on the {} {d} hole fills (all retransmissions: {drops} drops, 0 reorders injected)", r.hole_fill),
        format!(
            "out_of_order {ws_ooo}, retransmission {ws_retx}: its timing rule (within one initial RTT of the highest segment) calls {ws_ooo} retransmissions reordering"
        ),
    );
    for h in r.hole_fills.iter().filter(|h| h.ts_older.is_none()) {
        c.note(
            &format!("{d} hole fill the TSvals cannot decide"),
            h.describe(),
        );
    }
    if let Some(w) = wl_u64(c, "tcp", f.client, f.server, &format!("/{d}/out_of_order")) {
        let allowed = r.ts_undecided_ws_ooo;
        c.truth(
            &format!("wirelens {d} out_of_order <= undecided-by-TSval hole fills Wireshark calls out_of_order"),
            w <= allowed,
            format!("out_of_order {w}, allowed {allowed}; Wireshark says {ws_ooo}"),
        );
    }
    if let Some(w) = wl_u64(c, "tcp", f.client, f.server, &format!("/{d}/retransmits")) {
        let min = r.retrans_seen + r.hole_fill - r.ts_undecided_ws_ooo;
        c.truth(
            &format!("wirelens {d} retransmits >= every hole fill and resend of seen bytes (less undecided)"),
            w >= min,
            format!("retransmits {w}, min {min}"),
        );
    }
}

/// Loss after the tap: every resend is of bytes the tap had seen, none is
/// reordering. wirelens counts each in `retransmits` (and none in
/// out_of_order); Wireshark's timing rule calls some of them out_of_order.
fn resend_truth(c: &mut Check, f: &RefTcpFlow, drops: u64) {
    let r = &f.c2s;
    let ws_ooo = r.ws_out_of_order;
    c.note(
        &format!("Wireshark on the {} c2s resends of seen bytes ({drops} drops after the tap, 0 reorders)", r.retrans_seen),
        format!(
            "out_of_order {ws_ooo}, retransmission {}: a resend within one initial RTT of the highest segment is out_of_order by its timing rule",
            r.ws_retrans_or_ooo.saturating_sub(ws_ooo)
        ),
    );
    if let Some(w) = wl_u64(c, "tcp", f.client, f.server, "/c2s/out_of_order") {
        let Some(rt) = wl_u64(c, "tcp", f.client, f.server, "/c2s/retransmits") else {
            return;
        };
        c.truth(
            "wirelens c2s: no resend is out_of_order, every one a retransmission (>= drops)",
            w == 0 && rt >= drops,
            format!("out_of_order {w}, retransmits {rt}, drops {drops}; Wireshark says out_of_order {ws_ooo}"),
        );
    }
}

/// `[seq, len]` lists the forwarder logged for `kind` (dropped, reordered);
/// None (and a note) for a capture of an older lab without them (WL_LAB_REUSE).
fn fwd_segments(c: &mut Check, kind: &str, dir: &str) -> Option<Vec<(u32, u32)>> {
    let v: Option<Vec<(u32, u32)>> = c
        .cap
        .truth
        .pointer(&format!("/forwarder/segments/{kind}/{dir}"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| {
                    let s = u32::try_from(x.get(0)?.as_u64()?).ok()?;
                    let l = u32::try_from(x.get(1)?.as_u64()?).ok()?;
                    Some((s, l))
                })
                .collect()
        });
    c.truth(
        &format!("forwarder.json logs the {kind} segments ({dir})"),
        v.is_some(),
        "a capture without the segment log cannot prove the per-segment truth".into(),
    );
    v
}

/// Whether [s1, s1+l1) and [s2, s2+l2) share a byte (sequence space wraps).
fn overlaps(s1: u32, l1: u32, s2: u32, l2: u32) -> bool {
    let a = s2.wrapping_sub(s1); // where s2 starts, relative to s1
    let b = s1.wrapping_sub(s2);
    a < l1 || b < l2
}

#[test]
fn reorder() {
    let Some(mut c) = start("reorder") else {
        return;
    };
    lab_sane(&mut c);
    let f = bulk_flow(&c, S4, PORT);
    let r = c.cap.truth_u64("/forwarder/reordered/ba");
    c.truth(
        "the forwarder held back some s2c data",
        r >= 5,
        format!("{r} held"),
    );
    // Which segments were held (forwarder's log) and what the tap saw of
    // them: overtaken by a later segment (a hole fill) or still in order
    // (nothing sent behind it within the 4 ms hold, e.g. the last one).
    let hf = f.s2c.hole_fills.clone();
    let mut overtaken = f.s2c.hole_fill;
    if let Some(held) = fwd_segments(&mut c, "reordered", "ba") {
        let is_held = |seq: u32, len: u32| held.contains(&(seq, len));
        overtaken = hf.iter().filter(|h| is_held(h.seq, h.len)).count() as u64;
        let others: Vec<u64> = hf
            .iter()
            .filter(|h| !is_held(h.seq, h.len))
            .map(|h| h.frame)
            .collect();
        c.truth(
            "every s2c hole fill at the tap is a held segment (no loss, no other reordering)",
            held.len() as u64 == r && others.is_empty() && overtaken >= 1,
            format!(
                "{} hole fills, {overtaken} of them held; others: frames {others:?}; {} held logged",
                f.s2c.hole_fill,
                held.len()
            ),
        );
    }
    c.truth(
        "reference: the overtaken held segments are late originals by TSval (older than the highest segment's), or undecided",
        f.s2c.ts_newer == 0 && f.s2c.ts_older + f.s2c.ts_undecided == f.s2c.hole_fill,
        format!(
            "{} older, {} newer, {} undecided",
            f.s2c.ts_older, f.s2c.ts_newer, f.s2c.ts_undecided
        ),
    );
    let ws_ooo = f.s2c.ws_ooo_hole_fill;
    let ws_fast = hf.iter().filter(|h| h.ws_fast).count();
    let ws_other = f.s2c.hole_fill - ws_ooo - ws_fast as u64;
    c.note(
        &format!("Wireshark on the {overtaken} overtaken held segments (all originals: {r} held, 0 dropped)"),
        format!(
            "out_of_order {ws_ooo}, fast_retransmission {ws_fast}, retransmission {ws_other}: the receiver's dup ACKs reach the tap before the late original, so its dup-ACK rule calls reordering loss"
        ),
    );
    if let Some(w) = wl_u64(&mut c, "tcp", f.client, f.server, "/s2c/out_of_order") {
        // Exact but for the hole fills sent in the same millisecond as the
        // highest segment (equal TSvals): there Wireshark's flag decides.
        let undecided_not_ooo = f.s2c.ts_undecided - f.s2c.ts_undecided_ws_ooo;
        c.truth(
            "wirelens s2c out_of_order = overtaken held segments (less undecided-by-TSval ones Wireshark does not call out_of_order)",
            w <= overtaken && w + undecided_not_ooo >= overtaken,
            format!(
                "out_of_order {w}, overtaken {overtaken}, undecided {} ({undecided_not_ooo} not out_of_order by Wireshark); Wireshark says {ws_ooo}",
                f.s2c.ts_undecided
            ),
        );
    }
    c.compare_all();
    c.finish();
}

#[test]
fn zero_window() {
    let Some(mut c) = start("zerowin") else {
        return;
    };
    lab_sane(&mut c);
    let f = bulk_flow(&c, S4, PORT);
    let z = &f.s2c;
    c.truth(
        "the receiver advertised a zero window (reference, tshark agrees)",
        z.zero_window >= 1 && z.zero_window == z.ws_zero_window,
        format!("zero_window {}, tshark {}", z.zero_window, z.ws_zero_window),
    );
    c.truth(
        "one stall",
        z.zero_window_events == 1,
        format!("{}", z.zero_window_events),
    );
    c.truth(
        "the stall lasted most of the 2 s pause: zero_window_ns in [1.0, 2.2] s",
        (1000 * MS..=2200 * MS).contains(&z.zero_window_ns),
        format!("{:.3} s", z.zero_window_ns as f64 / 1e9),
    );
    c.truth(
        "600000 B arrived",
        f.c2s.payload_bytes >= 600_000,
        format!("{}", f.c2s.payload_bytes),
    );
    if let Some(w) = wl_u64(&mut c, "tcp", f.client, f.server, "/s2c/zero_window_events") {
        c.truth(
            "wirelens s2c zero_window_events = 1",
            w == 1,
            format!("{w}"),
        );
    }
    c.compare_all();
    c.finish();
}

#[test]
fn short_connections() {
    let Some(mut c) = start("shortconns") else {
        return;
    };
    lab_sane(&mut c);
    let d = c.cap.truth_u64("/iptables/wl-syn/packets");
    let ok: Vec<&RefTcpFlow> = c
        .tcp
        .iter()
        .filter(|f| f.server == (ip(S4), PORT))
        .collect();
    let refused: Vec<&RefTcpFlow> = c
        .tcp
        .iter()
        .filter(|f| f.server == (ip(S4), CLOSED))
        .collect();
    let syns: u64 = c.tcp.iter().map(|f| f.c2s.syn).sum();
    // Closed by FINs both ways. On a loaded machine a spurious FIN
    // retransmission can reach a socket that is already gone, which answers
    // with a RST after both FINs: still a completed connection.
    let closed = ok
        .iter()
        .filter(|f| f.state == Some("closed") || (f.state == Some("reset") && f.fin_before_rst))
        .count();
    let late_rst = ok.iter().filter(|f| f.state == Some("reset")).count();
    let all_refused = refused
        .iter()
        .all(|f| f.state == Some("refused") && f.rst_from == Some("server"));
    let retried = ok.iter().filter(|f| f.c2s.syn >= 2).count();
    let slow = ok.iter().filter(|f| f.c2s.syn >= 2).all(|f| {
        f.handshake
            .as_ref()
            .and_then(|h| h.connect_ns)
            .is_some_and(|n| n >= 1000 * MS)
    });
    let (n_ok, n_ref) = (ok.len(), refused.len());
    let payload_ok = ok
        .iter()
        .filter(|f| f.c2s.payload_bytes >= 1000 && f.s2c.payload_bytes >= 2000)
        .count();
    c.truth(
        "24 connections, all closed by FINs both ways (a RST only after both)",
        n_ok == 24 && closed == 24,
        format!("{n_ok} flows, {closed} closed ({late_rst} with a late RST)"),
    );
    c.truth(
        "every connection carried 1000 B up and 2000 B down",
        payload_ok == 24,
        format!("{payload_ok} of {n_ok}"),
    );
    c.truth(
        "4 refused (RST from the server)",
        n_ref == 4 && all_refused,
        format!("{n_ref} flows"),
    );
    c.truth(
        "SYNs seen = attempts + drops (the drop is after the tap)",
        syns == 28 + d,
        format!("{syns} SYNs, {d} drops"),
    );
    c.truth(
        "some SYNs were retried, each >= 1 s to connect",
        retried >= 1 && slow,
        format!("{retried} retried"),
    );
    c.compare_all();
    c.finish();
}

#[test]
fn pmtu() {
    let Some(mut c) = start("pmtu") else { return };
    lab_sane(&mut c);
    let f4 = bulk_flow(&c, S4, PORT);
    let f6 = bulk_flow(&c, S6, PORT6);
    let mtu = c.cap.truth_u64("/pmtu") as u32;
    let s = c.summary.clone();
    c.truth(
        "frag-needed and packet-too-big seen, one MTU",
        s.frag_needed >= 1 && s.packet_too_big >= 1 && s.mtus == vec![mtu],
        format!(
            "frag_needed {}, packet_too_big {}, mtus {:?}",
            s.frag_needed, s.packet_too_big, s.mtus
        ),
    );
    for f in [&f4, &f6] {
        c.truth(
            &format!("{} quoted by an ICMP error with mtu {mtu}", f.name()),
            matches!(f.pmtu, Some((n, Some(m))) if n >= 1 && m == mtu),
            format!("{:?}", f.pmtu),
        );
        c.truth(
            &format!("{} completed", f.name()),
            f.c2s.payload_bytes >= 400_000,
            format!("{}", f.c2s.payload_bytes),
        );
    }
    c.compare_all();
    c.finish();
}

#[test]
fn udp_fragments() {
    let Some(mut c) = start("udpfrag") else {
        return;
    };
    lab_sane(&mut c);
    let got4 = c.cap.truth_u64("/traffic/udpsink4/datagrams");
    let got6 = c.cap.truth_u64("/traffic/udpsink6/datagrams");
    c.truth(
        "all 30+30 datagrams arrived",
        got4 == 30 && got6 == 30,
        format!("{got4} + {got6}"),
    );
    for (cl, sv) in [(C4, S4), (C6, S6)] {
        let f = c
            .udp
            .iter()
            .find(|f| f.client.0 == ip(cl) && f.server == (ip(sv), UPORT))
            .cloned();
        let ok = f
            .as_ref()
            .is_some_and(|f| f.c2s.packets == 90 && f.c2s.frags == 90);
        c.truth(
            &format!("udp {cl} -> {sv}: 30 datagrams x 3 fragments"),
            ok,
            f.map(|f| format!("{} packets, {} frags", f.c2s.packets, f.c2s.frags))
                .unwrap_or("no flow".into()),
        );
    }
    let s = c.summary.clone();
    c.truth(
        "summary fragments 90 + 90",
        s.frags_v4 == 90 && s.frags_v6 == 90,
        format!("{} + {}", s.frags_v4, s.frags_v6),
    );
    c.compare_all();
    c.finish();
}

#[test]
fn delay_step() {
    let Some(mut c) = start("delaystep") else {
        return;
    };
    lab_sane(&mut c);
    let f = bulk_flow(&c, S4, PORT);
    let at = c
        .cap
        .truth
        .pointer("/forwarder/step/at_frame")
        .and_then(Value::as_u64);
    c.truth(
        "the forwarder stepped 10 -> 40 ms",
        at.is_some(),
        format!("{at:?}"),
    );
    let s = &f.c2s.rtt_ns;
    let (min, max) = (
        s.first().copied().unwrap_or(0),
        s.last().copied().unwrap_or(0),
    );
    c.truth(
        "tshark c2s RTT spans the step: min in [20, 25] ms, max >= 80 ms",
        (20 * MS..=25 * MS).contains(&min) && max >= 80 * MS,
        format!(
            "min {:.3} ms, max {:.3} ms",
            min as f64 / 1e6,
            max as f64 / 1e6
        ),
    );
    let wl_min = wl_u64(&mut c, "tcp", f.client, f.server, "/c2s/rtt/min_ns");
    let wl_max = wl_u64(&mut c, "tcp", f.client, f.server, "/c2s/rtt/max_ns");
    if c.wirelens_ran() {
        c.truth(
            "wirelens c2s rtt: min in [20, 25] ms, max >= 80 ms",
            wl_min.is_some_and(|m| (20 * MS..=25 * MS).contains(&m))
                && wl_max.is_some_and(|m| m >= 80 * MS),
            format!("min {wl_min:?}, max {wl_max:?}"),
        );
    }
    c.compare_all();
    c.finish();
}

#[test]
fn bufferbloat() {
    let Some(mut c) = start("bufferbloat") else {
        return;
    };
    lab_sane(&mut c);
    let f = bulk_flow(&c, S4, PORT);
    let d = c.cap.truth_u64("/qdisc_rs/tbf/dropped");
    c.truth("the tbf queue overflowed", d >= 1, format!("{d} drops"));
    // tbf sits on the router's egress, after the tap: like loss-after.
    let rs = f.c2s.retrans_seen;
    c.truth(
        "reference c2s retrans_seen in [drops, drops + max(3, drops/4)]",
        rs >= d && rs <= d + (d / 4).max(3),
        format!("retrans_seen {rs}, drops {d}"),
    );
    // 75 kB of queue at 10 Mbit/s is 60 ms on top of the 20 ms base; the
    // RTT ramps up to it (and drops back by cubic's 30 % after each loss).
    let p90 = lab::reference::quantile(&f.c2s.rtt_ns, 0.9).unwrap_or(0);
    c.truth(
        "tshark c2s RTT p90 >= 40 ms, twice the 20 ms path (the queue, not the path)",
        p90 >= 40 * MS,
        format!("{:.1} ms", p90 as f64 / 1e6),
    );
    if let Some(w) = wl_u64(&mut c, "tcp", f.client, f.server, "/c2s/rtt/p90_ns") {
        c.truth(
            "wirelens c2s rtt.p90 >= 40 ms",
            w >= 40 * MS,
            format!("{:.1} ms", w as f64 / 1e6),
        );
    }
    resend_truth(&mut c, &f, d);
    c.compare_all();
    c.finish();
}
