//! Holding `wirelens analyze` against the reference, field by field.
//!
//! Rules (docs/DESIGN.md "Direction" and "Lab and tests"; the engine's own
//! definitions in dataplane/src/flow/tcp.rs):
//! - exact: every counter with a definition that does not guess: packets,
//!   bytes (IP length), payload_bytes, syn, synack, fin, rst, retrans_seen,
//!   hole_fill, gaps, zero_window, zero_window_events, zero_window_ns, ecn_ce,
//!   frags, the 1 ms bursts, first_ns/last_ns, the handshake times (the
//!   captures have nanosecond timestamps, so "to the capture's resolution" is
//!   exact), syn_count/synack_count, mss, wscale, sack_ok, ts_ok, ecn_ok,
//!   state and rst_from where the packets decide them, pmtu, and the
//!   summary's totals. The reference for these is our own bookkeeping from
//!   tshark's per-packet fields (absolute seq, len, flags, window), not
//!   Wireshark's heuristics.
//! - exact, against an independent reference: out_of_order (hole fills whose
//!   TSval is older than that of the segment holding the highest sequence;
//!   Wireshark's own flag on the frame where the TSvals are equal or
//!   missing), and Wireshark's labels with those late originals taken out:
//!   retransmits (retransmission or out_of_order), fast_retransmits,
//!   spurious_retransmits; dup_acks (Wireshark's rule, reproduced).
//! - RTT quantiles (min, p50, p90): a rank-and-bias window around the
//!   reference samples, see [`RTT_DQ`]; the maximum is info.
//! - info: printed, never failing, where the definitions differ on purpose:
//!   Wireshark's raw out_of_order / retransmission counts (its timing
//!   heuristic against the TSval; the scenario tests hold both against the
//!   injected truth), FIN RTT samples wirelens cannot time, rtt.n.
//!
//! Every difference is printed (also those within tolerance) with the flow,
//! the field, both values and the rule; a failing one fails the test, which
//! keeps the capture directory and prints its path.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::Value;

use super::reference::{self, ep, RefDir, RefSummary, RefTcpFlow, RefUdpFlow};
use super::wirelens::{self, Analysis};
use super::{tshark, Capture};

#[derive(Clone, Copy, Debug)]
pub enum Rule {
    Exact,
    /// Passes when |wirelens - reference| <= max(abs, rel * |reference|).
    /// No default rule uses it any more; kept for a scenario's override.
    Tol {
        abs: f64,
        rel: f64,
    },
    /// Printed, never fails; the text says why the definitions differ.
    Info(&'static str),
}

impl Rule {
    fn describe(&self) -> String {
        match self {
            Rule::Exact => "exact".into(),
            Rule::Tol { abs, rel } => format!("tol max({abs}, {:.0}%)", rel * 100.0),
            Rule::Info(why) => format!("info: {why}"),
        }
    }
}

const MS: f64 = 1e6;

/// RTT quantile rule. wirelens' estimator (dataplane/src/flow/tcp.rs) is
/// not Wireshark's sample set: it keeps 4 probes per direction, so it times
/// about one ACK in several and weighs each sample by the advancing ACKs it
/// stands for; where no segment probe matches it falls back to the TSval
/// echo, timed from the FIRST segment that carried the echoed TSval; and its
/// histogram has <= 2 % relative error. So a wirelens quantile q must lie in
///   [ref(q - RTT_DQ) * (1 - RTT_REL) - RTT_ABS, ref(q + RTT_DQ) * (1 + RTT_REL) + RTT_ABS]
/// where ref(x) is the reference samples' quantile:
/// - RTT_DQ (rank): a weighted sub-sample's quantile sits within a few
///   percent in rank of the full set's (observed: see the lab log's `rank`);
/// - RTT_REL: the histogram's stated relative error;
/// - RTT_ABS: the TSval fallback's bias, at most one Linux TSval tick (1 ms)
///   plus the span of the segments one (delayed) ACK covers (2 segments,
///   ~0.6 ms at the lab's 20 Mbit/s pace). On the tap's near side (RTT of
///   tens of microseconds) this makes the check coarse: it still fails for
///   any sample taken from the wrong segment or the far side.
pub const RTT_DQ: f64 = 0.05;
pub const RTT_REL: f64 = 0.02;
pub const RTT_ABS: f64 = 1.5 * MS;

/// Per-field rules; a scenario may override one (`rules.set("c2s.x", ...)`).
#[derive(Debug)]
pub struct Rules(HashMap<String, Rule>);

impl Default for Rules {
    fn default() -> Self {
        let mut m = HashMap::new();
        for d in ["c2s", "s2c"] {
            m.insert(
                format!("{d}.rtt.max_ns"),
                Rule::Info("the maximum is one sample; wirelens times about one ACK in several (4 probe slots) and may miss it"),
            );
        }
        Rules(m)
    }
}

impl Rules {
    pub fn set(&mut self, field: &str, rule: Rule) {
        self.0.insert(field.into(), rule);
    }
    fn get(&self, field: &str) -> Rule {
        self.0.get(field).copied().unwrap_or(Rule::Exact)
    }
}

#[derive(Debug)]
struct Diff {
    flow: String,
    field: String,
    wirelens: String,
    reference: String,
    rule: String,
    fail: bool,
}

/// A whole lab check: the capture, the reference, the wirelens output and the
/// differences found so far.
#[derive(Debug)]
pub struct Check {
    pub cap: Capture,
    pub tcp: Vec<RefTcpFlow>,
    pub udp: Vec<RefUdpFlow>,
    pub summary: RefSummary,
    pub frames: Vec<tshark::Frame>,
    /// None with `WL_LAB_REFERENCE_ONLY=1` (lab and reference only).
    pub wl: Option<Analysis>,
    pub rules: Rules,
    diffs: Vec<Diff>,
    truths: Vec<(String, bool, String)>,
    notes: Vec<String>,
    checks: usize,
    used: Vec<bool>,
    tshark_secs: f64,
}

fn num_str(v: Option<&Value>) -> String {
    match v {
        None => "(missing)".into(),
        Some(v) => v.to_string(),
    }
}

fn opt_str<T: ToString>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "null".into())
}

impl Check {
    /// Runs tshark and (unless `WL_LAB_REFERENCE_ONLY` is set) wirelens on the capture.
    pub fn new(cap: Capture) -> Check {
        let t = std::time::Instant::now();
        let fail = |e: String| -> ! { panic!("{e}\n(capture kept in {})", cap.dir.display()) };
        // The two tshark passes at once: the CI box has two cores.
        let (pkts, frames) = std::thread::scope(|sc| {
            let tcp = sc.spawn(|| tshark::tcp_packets(&cap.pcap));
            let frames = tshark::ip_frames(&cap.pcap);
            (tcp.join().expect("tshark thread"), frames)
        });
        let pkts = pkts.unwrap_or_else(|e| fail(e));
        let frames = frames.unwrap_or_else(|e| fail(e));
        let tcp = reference::tcp_flows(&pkts, &frames);
        let udp = reference::udp_flows(&frames);
        let summary = reference::summary(&frames, &tcp, &udp);
        let tshark_secs = t.elapsed().as_secs_f64();
        let wl = if std::env::var_os("WL_LAB_REFERENCE_ONLY").is_some() {
            eprintln!(
                "lab {}: WL_LAB_REFERENCE_ONLY set: wirelens is not run",
                cap.scenario
            );
            None
        } else {
            Some(wirelens::analyze(&cap.pcap).unwrap_or_else(|e| {
                fail(format!(
                    "lab {}: `wirelens analyze` failed: {e}",
                    cap.scenario
                ))
            }))
        };
        let used = vec![false; wl.as_ref().map_or(0, |w| w.flows.len())];
        Check {
            cap,
            tcp,
            udp,
            summary,
            frames,
            wl,
            rules: Rules::default(),
            diffs: Vec::new(),
            truths: Vec::new(),
            notes: Vec::new(),
            checks: 0,
            used,
            tshark_secs,
        }
    }

    pub fn wirelens_ran(&self) -> bool {
        self.wl.is_some()
    }

    /// Compares one number (or null) under the field's rule.
    pub fn num(&mut self, flow: &str, field: &str, got: Option<&Value>, want: Option<u64>) {
        let rule = self.rules.get(field);
        self.num_rule(flow, field, got, want, rule);
    }

    fn num_rule(
        &mut self,
        flow: &str,
        field: &str,
        got: Option<&Value>,
        want: Option<u64>,
        rule: Rule,
    ) {
        self.checks += 1;
        let g = got.and_then(Value::as_u64);
        let equal = match (got, want) {
            (Some(Value::Null), None) => true,
            (Some(_), Some(w)) => g == Some(w),
            _ => false,
        };
        if equal {
            return;
        }
        let fail = match rule {
            Rule::Exact => true,
            Rule::Info(_) => false,
            Rule::Tol { abs, rel } => match (g, want) {
                (Some(g), Some(w)) => (g as f64 - w as f64).abs() > abs.max(rel * w as f64),
                _ => true,
            },
        };
        self.diffs.push(Diff {
            flow: flow.into(),
            field: field.into(),
            wirelens: num_str(got),
            reference: opt_str(want),
            rule: rule.describe(),
            fail,
        });
    }

    /// Compares any JSON value exactly (strings, booleans, arrays).
    pub fn value(&mut self, flow: &str, field: &str, got: Option<&Value>, want: Value) {
        self.checks += 1;
        if got == Some(&want) {
            return;
        }
        let rule = self.rules.get(field);
        self.diffs.push(Diff {
            flow: flow.into(),
            field: field.into(),
            wirelens: num_str(got),
            reference: want.to_string(),
            rule: rule.describe(),
            fail: !matches!(rule, Rule::Info(_)),
        });
    }

    /// An injected-truth check (what the lab did vs what was measured).
    pub fn truth(&mut self, what: &str, ok: bool, detail: String) {
        self.truths.push((what.into(), ok, detail));
    }

    /// An RTT quantile under the rank rule of [`RTT_DQ`].
    fn rtt_quantile(
        &mut self,
        flow: &str,
        field: &str,
        got: Option<&Value>,
        sorted: &[u64],
        q: f64,
    ) {
        self.checks += 1;
        let at = |x: f64| {
            if x <= 0.0 {
                sorted[0]
            } else {
                reference::quantile(sorted, x.min(1.0)).unwrap()
            }
        };
        let want = at(q);
        let g = got.and_then(Value::as_u64);
        if g == Some(want) {
            return;
        }
        let lo = at(q - RTT_DQ) as f64 * (1.0 - RTT_REL) - RTT_ABS;
        let hi = at(q + RTT_DQ) as f64 * (1.0 + RTT_REL) + RTT_ABS;
        let (fail, rank) = match g {
            Some(g) => {
                // Where wirelens' value falls among the reference samples.
                let below = sorted.partition_point(|&x| x < g);
                (
                    (g as f64) < lo || (g as f64) > hi,
                    format!("{:.3}", below as f64 / sorted.len() as f64),
                )
            }
            None => (true, "-".into()),
        };
        let ms = |v: f64| format!("{:.3}", v / 1e6);
        self.diffs.push(Diff {
            flow: flow.into(),
            field: field.into(),
            wirelens: format!(
                "{} ms (rank {rank})",
                g.map_or("(missing)".into(), |g| ms(g as f64))
            ),
            reference: format!("{} ms of {} samples", ms(want as f64), sorted.len()),
            rule: format!(
                "rank q±{RTT_DQ}, ±{:.0}%, ±{} ms: [{}, {}] ms",
                RTT_REL * 100.0,
                RTT_ABS / 1e6,
                ms(lo.max(0.0)),
                ms(hi)
            ),
            fail,
        });
    }

    /// A difference that is explained, never failing (printed only when
    /// the values differ).
    pub fn info(&mut self, flow: &str, field: &str, got: Option<&Value>, want: u64, why: &str) {
        self.checks += 1;
        if got.and_then(Value::as_u64) == Some(want) {
            return;
        }
        self.diffs.push(Diff {
            flow: flow.into(),
            field: field.into(),
            wirelens: num_str(got),
            reference: want.to_string(),
            rule: format!("info: {why}"),
            fail: false,
        });
    }

    /// A line in the report that is neither a check nor a difference.
    pub fn note(&mut self, what: &str, detail: String) {
        self.notes.push(format!("{what}: {detail}"));
    }

    fn find_flow(
        &mut self,
        proto: &str,
        client: reference::Endpoint,
        server: reference::Endpoint,
        first_ns: u64,
    ) -> Result<usize, String> {
        let wl = self.wl.as_ref().unwrap();
        let mut best: Option<(usize, u64)> = None;
        let mut swapped = false;
        for (i, f) in wl.flows.iter().enumerate() {
            if f.get("proto").and_then(Value::as_str) != Some(proto) || self.used[i] {
                continue;
            }
            let c = f.get("client").and_then(wirelens::endpoint);
            let s = f.get("server").and_then(wirelens::endpoint);
            if c == Some(server) && s == Some(client) {
                swapped = true;
            }
            if c != Some(client) || s != Some(server) {
                continue;
            }
            let d = f
                .get("first_ns")
                .and_then(Value::as_u64)
                .unwrap_or(0)
                .abs_diff(first_ns);
            if best.is_none_or(|(_, bd)| d < bd) {
                best = Some((i, d));
            }
        }
        match best {
            Some((i, _)) => {
                self.used[i] = true;
                Ok(i)
            }
            None if swapped => Err("only with client and server swapped".into()),
            None => Err("no such flow".into()),
        }
    }

    fn dir(&mut self, name: &str, f: &Value, d: &str, r: &RefDir) {
        let g = |k: &str| f.pointer(&format!("/{d}/{k}")).cloned();
        let exact: [(&str, u64); 14] = [
            ("packets", r.packets),
            ("bytes", r.bytes),
            ("payload_bytes", r.payload_bytes),
            ("syn", r.syn),
            ("synack", r.synack),
            ("fin", r.fin),
            ("rst", r.rst),
            ("retrans_seen", r.retrans_seen),
            ("hole_fill", r.hole_fill),
            ("gaps", r.gaps),
            ("zero_window", r.zero_window),
            ("zero_window_events", r.zero_window_events),
            ("ecn_ce", r.ecn_ce),
            ("frags", 0),
        ];
        for (k, want) in exact {
            self.num(name, &format!("{d}.{k}"), g(k).as_ref(), Some(want));
        }
        self.num(
            name,
            &format!("{d}.zero_window_ns"),
            g("zero_window_ns").as_ref(),
            Some(r.zero_window_ns),
        );
        self.num(
            name,
            &format!("{d}.burst.max_packets_1ms"),
            f.pointer(&format!("/{d}/burst/max_packets_1ms")),
            Some(r.max_packets_1ms),
        );
        self.num(
            name,
            &format!("{d}.burst.max_bytes_1ms"),
            f.pointer(&format!("/{d}/burst/max_bytes_1ms")),
            Some(r.max_bytes_1ms),
        );
        // out_of_order: the late originals among the hole fills, by TSval
        // (Wireshark's flag where the TSvals cannot tell): exact, the
        // reference is our own coverage and tshark's per-frame TSvals.
        self.num(
            name,
            &format!("{d}.out_of_order"),
            g("out_of_order").as_ref(),
            Some(r.out_of_order),
        );
        // Wireshark's labels (retransmission / out_of_order; fast; spurious)
        // on every segment but the late originals: wirelens reproduces
        // Wireshark's rules for these, so once the reclassified segments are
        // taken out the counts must agree exactly.
        self.num(
            name,
            &format!("{d}.retransmits"),
            g("retransmits").as_ref(),
            Some(r.ws_retrans_not_ooo),
        );
        self.num(
            name,
            &format!("{d}.fast_retransmits"),
            g("fast_retransmits").as_ref(),
            Some(r.ws_fast_not_ooo),
        );
        self.num(
            name,
            &format!("{d}.spurious_retransmits"),
            g("spurious_retransmits").as_ref(),
            Some(r.ws_spurious_not_ooo),
        );
        self.num(
            name,
            &format!("{d}.dup_acks"),
            g("dup_acks").as_ref(),
            Some(r.ws_dup_ack),
        );
        // Wireshark's own counts, shown where they differ: its timing rule
        // (a hole fill within one initial RTT of the highest segment is
        // "out_of_order", unless the dup-ACK rule calls it a fast
        // retransmission first) against the TSval, which says when the
        // segment was SENT. The scenario tests hold both against the
        // injected truth (forwarder reorders / drops).
        let why = format!(
            "Wireshark's timing heuristic; the TSval rule makes {} of {} hole fills late originals ({} older TSval, {} newer, {} equal -> Wireshark's flag)",
            r.out_of_order,
            r.hole_fill,
            r.ts_older,
            r.ts_newer,
            r.ts_undecided
        );
        let ws_ooo = r.ws_out_of_order;
        let ws_retx = r.ws_retrans_or_ooo.saturating_sub(r.ws_out_of_order);
        self.info(
            name,
            &format!("{d}.out_of_order vs Wireshark's out_of_order"),
            g("out_of_order").as_ref(),
            ws_ooo,
            &why,
        );
        self.info(
            name,
            &format!("{d}.retransmits vs Wireshark's retransmission"),
            g("retransmits").as_ref(),
            ws_retx,
            &why,
        );
        // docs/DESIGN.md's own formula, on wirelens' own numbers.
        let v = |k: &str| g(k).and_then(|x| x.as_u64()).unwrap_or(0);
        let formula = (v("retrans_seen") + v("hole_fill")).saturating_sub(v("out_of_order"));
        self.num_rule(
            name,
            &format!("{d}.retransmits (= retrans_seen + hole_fill - out_of_order)"),
            g("retransmits").as_ref(),
            Some(formula),
            Rule::Exact,
        );
        if v("rto_retransmits") > v("retransmits") {
            self.num_rule(
                name,
                &format!("{d}.rto_retransmits (<= retransmits)"),
                g("rto_retransmits").as_ref(),
                Some(v("retransmits")),
                Rule::Exact,
            );
        }
        // RTT: samples exist on both sides or on neither; quantiles within tolerance.
        let rtt = f.pointer(&format!("/{d}/rtt"));
        let n = rtt.and_then(|x| x.get("n")).and_then(Value::as_u64);
        let has = n.unwrap_or(0) > 0;
        self.value(
            name,
            &format!("{d}.rtt has samples"),
            Some(&Value::Bool(has)),
            Value::Bool(!r.rtt_ns.is_empty()),
        );
        if has && !r.rtt_ns.is_empty() {
            let s = &r.rtt_ns;
            for (k, q) in [("min_ns", 0.0), ("p50_ns", 0.5), ("p90_ns", 0.9)] {
                self.rtt_quantile(
                    name,
                    &format!("{d}.rtt.{k}"),
                    rtt.and_then(|x| x.get(k)),
                    s,
                    q,
                );
            }
            let before = self.diffs.len();
            self.num(
                name,
                &format!("{d}.rtt.max_ns"),
                rtt.and_then(|x| x.get("max_ns")),
                s.last().copied(),
            );
            if self.diffs.len() > before {
                if let Some((seg, ack)) = r.rtt_max_frames {
                    let last = self.diffs.last_mut().unwrap();
                    last.reference += &format!(" (frames {seg} -> {ack})");
                }
            }
            if !r.rtt_fin_untimed.is_empty() {
                let list: Vec<String> = r
                    .rtt_fin_untimed
                    .iter()
                    .map(|(fin, ack, ns)| {
                        format!("frames {fin} -> {ack}: {:.3} ms", *ns as f64 / 1e6)
                    })
                    .collect();
                self.checks += 1;
                self.diffs.push(Diff {
                    flow: name.into(),
                    field: format!("{d}.rtt (FIN samples)"),
                    wirelens: "none".into(),
                    reference: format!("Wireshark ack_rtt {}", list.join(", ")),
                    rule: "info: left out of the reference: the FIN shares its TSval with earlier data and tcp.rs times FINs by TSval only (sequence probes are armed for data)".into(),
                    fail: false,
                });
            }
            self.info(
                name,
                &format!("{d}.rtt.n vs Wireshark's ack_rtt samples"),
                rtt.and_then(|x| x.get("n")),
                s.len() as u64,
                &format!(
                    "wirelens weighs each sample by the advancing ACKs it stands for; the reference has one sample per ACK that matches a segment end ({} more of Wireshark's left out by Karn's rule)",
                    r.rtt_karn
                ),
            );
        }
    }

    /// Compares every reference TCP flow with its wirelens flow.
    pub fn compare_tcp(&mut self) {
        if self.wl.is_none() {
            return;
        }
        let flows = self.tcp.clone();
        for r in &flows {
            let name = r.name();
            let i = match self.find_flow("tcp", r.client, r.server, r.first_ns) {
                Ok(i) => i,
                Err(why) => {
                    self.checks += 1;
                    self.diffs.push(Diff {
                        flow: name,
                        field: "(flow)".into(),
                        wirelens: why,
                        reference: format!("{} packets", r.frames),
                        rule: "exact".into(),
                        fail: true,
                    });
                    continue;
                }
            };
            let f = self.wl.as_ref().unwrap().flows[i].clone();
            self.value(
                &name,
                "schema",
                f.get("schema"),
                Value::from("wirelens.flow.v1"),
            );
            self.num(&name, "first_ns", f.get("first_ns"), Some(r.first_ns));
            self.num(&name, "last_ns", f.get("last_ns"), Some(r.last_ns));
            self.dir(&name, &f, "c2s", &r.c2s);
            self.dir(&name, &f, "s2c", &r.s2c);
            let t = f.get("tcp");
            let h = t.and_then(|t| t.get("handshake"));
            match &r.handshake {
                None => self.value(&name, "tcp.handshake", h, Value::Null),
                Some(rh) => {
                    let hg = |k: &str| h.and_then(|h| h.get(k));
                    self.num(
                        &name,
                        "tcp.handshake.syn_to_synack_ns",
                        hg("syn_to_synack_ns"),
                        rh.syn_to_synack_ns,
                    );
                    self.num(
                        &name,
                        "tcp.handshake.synack_to_ack_ns",
                        hg("synack_to_ack_ns"),
                        rh.synack_to_ack_ns,
                    );
                    self.num(
                        &name,
                        "tcp.handshake.connect_ns",
                        hg("connect_ns"),
                        rh.connect_ns,
                    );
                    self.num(
                        &name,
                        "tcp.handshake.syn_count",
                        hg("syn_count"),
                        Some(rh.syn_count),
                    );
                    self.num(
                        &name,
                        "tcp.handshake.synack_count",
                        hg("synack_count"),
                        Some(rh.synack_count),
                    );
                }
            }
            let tg = |p: &str| t.and_then(|t| t.pointer(p));
            if let Some(st) = r.state {
                self.value(&name, "tcp.state", tg("/state"), Value::from(st));
                self.value(
                    &name,
                    "tcp.rst_from",
                    tg("/rst_from"),
                    r.rst_from.map_or(Value::Null, Value::from),
                );
            }
            let ov = |x: Option<u64>| x.map_or(Value::Null, Value::from);
            self.value(
                &name,
                "tcp.mss.client",
                tg("/mss/client"),
                ov(r.mss.0.map(u64::from)),
            );
            self.value(
                &name,
                "tcp.mss.server",
                tg("/mss/server"),
                ov(r.mss.1.map(u64::from)),
            );
            self.value(
                &name,
                "tcp.wscale.client",
                tg("/wscale/client"),
                ov(r.wscale.0.map(u64::from)),
            );
            self.value(
                &name,
                "tcp.wscale.server",
                tg("/wscale/server"),
                ov(r.wscale.1.map(u64::from)),
            );
            self.value(&name, "tcp.sack_ok", tg("/sack_ok"), Value::Bool(r.sack_ok));
            self.value(&name, "tcp.ts_ok", tg("/ts_ok"), Value::Bool(r.ts_ok));
            self.value(&name, "tcp.ecn_ok", tg("/ecn_ok"), Value::Bool(r.ecn_ok));
            match r.pmtu {
                None => self.value(&name, "pmtu", f.get("pmtu"), Value::Null),
                Some((n, mtu)) => {
                    self.num(
                        &name,
                        "pmtu.icmp_errors",
                        f.pointer("/pmtu/icmp_errors"),
                        Some(n),
                    );
                    self.num(
                        &name,
                        "pmtu.mtu",
                        f.pointer("/pmtu/mtu"),
                        mtu.map(u64::from),
                    );
                }
            }
        }
    }

    /// Compares every reference UDP flow (fragments included) with wirelens.
    pub fn compare_udp(&mut self) {
        if self.wl.is_none() {
            return;
        }
        let flows = self.udp.clone();
        for r in &flows {
            let name = r.name();
            let i = match self.find_flow("udp", r.client, r.server, r.first_ns) {
                Ok(i) => i,
                Err(why) => {
                    self.checks += 1;
                    self.diffs.push(Diff {
                        flow: name,
                        field: "(flow)".into(),
                        wirelens: why,
                        reference: format!("{} packets", r.c2s.packets + r.s2c.packets),
                        rule: "exact".into(),
                        fail: true,
                    });
                    continue;
                }
            };
            let f = self.wl.as_ref().unwrap().flows[i].clone();
            self.num(&name, "first_ns", f.get("first_ns"), Some(r.first_ns));
            self.num(&name, "last_ns", f.get("last_ns"), Some(r.last_ns));
            for (d, rd) in [("c2s", &r.c2s), ("s2c", &r.s2c)] {
                for (k, want) in [
                    ("packets", rd.packets),
                    ("bytes", rd.bytes),
                    ("frags", rd.frags),
                    ("burst/max_packets_1ms", rd.max_packets_1ms),
                    ("burst/max_bytes_1ms", rd.max_bytes_1ms),
                ] {
                    self.num(
                        &name,
                        &format!("{d}.{}", k.replace('/', ".")),
                        f.pointer(&format!("/{d}/{k}")),
                        Some(want),
                    );
                }
            }
            self.value(&name, "tcp", f.get("tcp"), Value::Null);
        }
    }

    /// Flags wirelens TCP/UDP flows that no reference flow claimed.
    pub fn compare_extra_flows(&mut self) {
        let Some(wl) = self.wl.as_ref() else { return };
        let mut extra = Vec::new();
        for (i, f) in wl.flows.iter().enumerate() {
            let proto = f.get("proto").and_then(Value::as_str).unwrap_or("?");
            if !self.used[i] && (proto == "tcp" || proto == "udp") {
                let c = f
                    .get("client")
                    .and_then(wirelens::endpoint)
                    .map(ep)
                    .unwrap_or_default();
                let s = f
                    .get("server")
                    .and_then(wirelens::endpoint)
                    .map(ep)
                    .unwrap_or_default();
                extra.push(format!("{proto} {c} -> {s}"));
            }
        }
        for e in extra {
            self.checks += 1;
            self.diffs.push(Diff {
                flow: e,
                field: "(flow)".into(),
                wirelens: "present".into(),
                reference: "no such flow".into(),
                rule: "exact".into(),
                fail: true,
            });
        }
    }

    /// Compares the `{"type":"summary"}` line.
    pub fn compare_summary(&mut self) {
        let Some(wl) = self.wl.as_ref() else { return };
        let s = wl.summary.clone();
        let flows = wl.flows.clone();
        let r = self.summary.clone();
        let n = "summary";
        let g = |p: &str| s.pointer(p).cloned();
        self.value(
            n,
            "schema",
            s.get("schema"),
            Value::from("wirelens.flow.v1"),
        );
        self.num(n, "packets", g("/packets").as_ref(), Some(r.frames));
        self.num(n, "bytes", g("/bytes").as_ref(), Some(r.bytes));
        self.num(n, "first_ns", g("/first_ns").as_ref(), Some(r.first_ns));
        self.num(n, "last_ns", g("/last_ns").as_ref(), Some(r.last_ns));
        self.num(
            n,
            "duration_ns",
            g("/duration_ns").as_ref(),
            Some(r.last_ns - r.first_ns),
        );
        self.num(n, "flows.tcp", g("/flows/tcp").as_ref(), Some(r.tcp_flows));
        self.num(n, "flows.udp", g("/flows/udp").as_ref(), Some(r.udp_flows));
        self.num(
            n,
            "fragments.ipv4",
            g("/fragments/ipv4").as_ref(),
            Some(r.frags_v4),
        );
        self.num(
            n,
            "fragments.ipv6",
            g("/fragments/ipv6").as_ref(),
            Some(r.frags_v6),
        );
        self.num(
            n,
            "icmp.frag_needed",
            g("/icmp/frag_needed").as_ref(),
            Some(r.frag_needed),
        );
        self.num(
            n,
            "icmp.packet_too_big",
            g("/icmp/packet_too_big").as_ref(),
            Some(r.packet_too_big),
        );
        self.value(
            n,
            "icmp.mtus",
            g("/icmp/mtus").as_ref(),
            Value::from(r.mtus.clone()),
        );
        self.num(
            n,
            "max_packets_1ms",
            g("/max_packets_1ms").as_ref(),
            Some(r.max_packets_1ms),
        );
        self.num(
            n,
            "max_bytes_1ms",
            g("/max_bytes_1ms").as_ref(),
            Some(r.max_bytes_1ms),
        );
        self.num(
            n,
            "non_ip",
            g("/non_ip").as_ref(),
            Some(r.frames - r.ip_packets),
        );
        // The TCP totals are the Direction counters summed: wirelens vs itself.
        let keys = [
            "syn",
            "synack",
            "fin",
            "rst",
            "retrans_seen",
            "hole_fill",
            "gaps",
            "out_of_order",
            "retransmits",
            "fast_retransmits",
            "spurious_retransmits",
            "rto_retransmits",
            "dup_acks",
            "zero_window",
            "zero_window_events",
            "zero_window_ns",
            "ecn_ce",
        ];
        for k in keys {
            let sum: u64 = flows
                .iter()
                .filter(|f| f.get("proto").and_then(Value::as_str) == Some("tcp"))
                .flat_map(|f| {
                    ["c2s", "s2c"].map(|d| {
                        f.pointer(&format!("/{d}/{k}"))
                            .and_then(Value::as_u64)
                            .unwrap_or(0)
                    })
                })
                .sum();
            self.num_rule(
                n,
                &format!("tcp.{k} (= sum over flows)"),
                g(&format!("/tcp/{k}")).as_ref(),
                Some(sum),
                Rule::Exact,
            );
        }
    }

    /// Runs every comparison.
    pub fn compare_all(&mut self) {
        self.compare_tcp();
        self.compare_udp();
        self.compare_extra_flows();
        self.compare_summary();
    }

    pub fn tcp_flow(&self, pred: impl Fn(&RefTcpFlow) -> bool) -> Option<&RefTcpFlow> {
        self.tcp.iter().find(|f| pred(f))
    }

    /// The wirelens flow with these endpoints, if wirelens ran.
    pub fn wl_flow(
        &self,
        proto: &str,
        client: reference::Endpoint,
        server: reference::Endpoint,
    ) -> Option<&Value> {
        self.wl.as_ref()?.flows.iter().find(|f| {
            f.get("proto").and_then(Value::as_str) == Some(proto)
                && f.get("client").and_then(wirelens::endpoint) == Some(client)
                && f.get("server").and_then(wirelens::endpoint) == Some(server)
        })
    }

    /// Prints the differences and the truth checks; panics if any failed
    /// (keeping the capture), else discards the capture.
    pub fn finish(self) {
        let mut out = String::new();
        let sc = &self.cap.scenario;
        let _ =
            writeln!(
            out,
            "lab {sc}: {} TCP + {} UDP reference flows, {} frames; lab {:.1} s, tshark {:.1} s{}",
            self.tcp.len(),
            self.udp.len(),
            self.summary.frames,
            self.cap.lab_secs,
            self.tshark_secs,
            self.wl.as_ref().map(|w| format!(", wirelens {:.2} s", w.secs)).unwrap_or_default()
        );
        let note = self
            .cap
            .truth
            .get("note")
            .and_then(Value::as_str)
            .unwrap_or("");
        let _ = writeln!(out, "  scenario: {note}");
        for (what, ok, detail) in &self.truths {
            let _ = writeln!(
                out,
                "  truth {}: {what}: {detail}",
                if *ok { "ok  " } else { "FAIL" }
            );
        }
        for n in &self.notes {
            let _ = writeln!(out, "  note: {n}");
        }
        let failing = self.diffs.iter().filter(|d| d.fail).count();
        if self.wl.is_some() {
            let _ = writeln!(
                out,
                "  wirelens vs reference: {} checks, {} differences, {failing} failing",
                self.checks,
                self.diffs.len()
            );
        }
        for d in &self.diffs {
            let _ = writeln!(
                out,
                "  {} {}: {}: wirelens {}, reference {} [{}]",
                if d.fail { "FAIL" } else { "diff" },
                d.flow,
                d.field,
                d.wirelens,
                d.reference,
                d.rule
            );
        }
        if std::env::var_os("WL_LAB_DUMP").is_some() {
            for f in &self.tcp {
                let _ = writeln!(out, "  reference {f:?}");
            }
            for f in &self.udp {
                let _ = writeln!(out, "  reference {f:?}");
            }
            let _ = writeln!(out, "  reference {:?}", self.summary);
        }
        let truth_fail = self.truths.iter().filter(|t| !t.1).count();
        // The details are captured by libtest (shown on failure or with
        // --nocapture); one line per lab always reaches the log.
        eprint!("{out}");
        super::visible(&format!(
            "lab {sc}: {} truth checks ({truth_fail} failed), {} field checks, {} differences ({failing} beyond their rule); lab {:.1} s",
            self.truths.len(),
            self.checks,
            self.diffs.len(),
            self.cap.lab_secs
        ));
        if failing > 0 || truth_fail > 0 {
            panic!(
                "lab {sc}: {failing} field(s) differ beyond their rule, {truth_fail} truth check(s) failed; capture kept: {}",
                self.cap.pcap.display()
            );
        }
        self.cap.discard();
    }
}
