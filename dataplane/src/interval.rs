//! Interval deltas: what each flow did in each fixed interval of packet time
//! (`analyze --interval`), and the counter arithmetic they share with a
//! node's pushes ([`direction_minus`], [`histogram_minus`]).
//!
//! Sans-IO like the engine: intervals are cut by the packets' own
//! timestamps, at multiples of the interval since the epoch, so a capture
//! replays the same whenever it is analysed. The driver calls
//! [`Intervals::advance`] before each packet (a compare, except when the
//! packet opens a new interval: then every flow the engine saw in the
//! interval that ends gives its delta), [`Intervals::exited`] for each flow
//! that leaves the table, and takes a flow's last delta there.
//!
//! Memory: per live flow that outlived an interval, what it had at the end
//! of its last active interval (its two [`Direction`]s and RTT histograms);
//! per interval only the flows that saw a packet in it are visited (the
//! engine lists them, [`Engine::take_touched`]); idle flows cost nothing.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::engine::Engine;
use crate::flow::table::{ActiveFlow, FlowExport};
use crate::report::{Direction, Endpoint, FlowRecord, Hol, Pmtu, Proto, Rtt, Ttl, FLOW_SCHEMA};
use crate::stats::Histogram;

/// One flow's counters over one interval.
#[derive(Clone, Debug)]
pub struct IntervalDelta {
    /// The interval, `[start_ns, end_ns)`.
    pub start_ns: u64,
    pub end_ns: u64,
    /// The flow's first interval.
    pub first: bool,
    /// The flow's record as at the end of the interval, with `c2s`, `s2c`
    /// and `pmtu.icmp_errors` holding only the interval's counts and RTT.
    pub flow: FlowRecord,
    /// The interval's RTT samples [c2s, s2c].
    pub rtt: [Histogram; 2],
}

impl IntervalDelta {
    /// The `{"type":"interval", ...}` NDJSON record.
    pub fn record(&self) -> IntervalRecord<'_> {
        IntervalRecord {
            kind: "interval",
            schema: FLOW_SCHEMA,
            start_ns: self.start_ns,
            end_ns: self.end_ns,
            proto: self.flow.proto,
            client: self.flow.client,
            server: self.flow.server,
            vlan: self.flow.vlan,
            first_ns: self.flow.first_ns,
            c2s: &self.flow.c2s,
            s2c: &self.flow.s2c,
        }
    }
}

/// `{"type":"interval","schema":"wirelens.flow.v1", ...}`: a flow's counters
/// over `[start_ns, end_ns)`. `first_ns` is the flow's first packet: with
/// proto, client, server and vlan it names the flow as its `flow` record does.
#[derive(Debug, Serialize)]
pub struct IntervalRecord<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub schema: &'static str,
    pub start_ns: u64,
    pub end_ns: u64,
    pub proto: Proto,
    pub client: Endpoint,
    pub server: Endpoint,
    pub vlan: Option<u16>,
    pub first_ns: u64,
    pub c2s: &'a Direction,
    pub s2c: &'a Direction,
}

/// A flow's name that survives the engine swapping its client and server
/// (a late SYN): proto, the two endpoints in order, vlan.
type FlowName = (u8, (IpAddr, u16), (IpAddr, u16), Option<u16>);

fn flow_name(r: &FlowRecord) -> FlowName {
    let (a, b) = ((r.client.ip, r.client.port), (r.server.ip, r.server.port));
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    (r.proto as u8, lo, hi, r.vlan)
}

/// What one flow had at the end of its last reported interval.
#[derive(Debug)]
struct Baseline {
    client: Endpoint,
    c2s: Direction,
    s2c: Direction,
    rtt: [Histogram; 2],
    /// ICMP PMTU errors quoting the flow (they arrive without a packet of it).
    pmtu_errors: u64,
}

fn pmtu_errors(r: &FlowRecord) -> u64 {
    r.pmtu.as_ref().map_or(0, |p| p.icmp_errors)
}

/// Cuts the flows of one [`Engine`] into interval deltas; see the
/// [module documentation](self).
#[derive(Debug)]
pub struct Intervals {
    width_ns: u64,
    /// Start of the interval being filled; `None` before the first packet.
    start: Option<u64>,
    baselines: HashMap<FlowName, Baseline>,
}

impl Intervals {
    /// Intervals of `width_ns` (at least 1 ns); turns on the engine's
    /// touched-flow list.
    pub fn new(width_ns: u64, engine: &mut Engine) -> Intervals {
        engine.track_touched();
        Intervals {
            width_ns: width_ns.max(1),
            start: None,
            baselines: HashMap::new(),
        }
    }

    pub fn width_ns(&self) -> u64 {
        self.width_ns
    }

    /// The interval holding `t`: its start.
    pub fn start_of(&self, t: u64) -> u64 {
        t - t % self.width_ns
    }

    /// Live flows holding a baseline (the memory this costs).
    pub fn tracked(&self) -> usize {
        self.baselines.len()
    }

    /// Call before the engine sees a packet captured at `now`: when `now`
    /// is past the interval being filled, every flow active in it gives its
    /// delta to `out`. A packet older than the current interval (captures
    /// are not always in order) counts in the current one.
    pub fn advance(&mut self, engine: &mut Engine, now: u64, mut out: impl FnMut(IntervalDelta)) {
        let start = match self.start {
            None => {
                self.start = Some(self.start_of(now));
                return;
            }
            Some(s) => s,
        };
        if now < start.saturating_add(self.width_ns) {
            return;
        }
        let end = start.saturating_add(self.width_ns);
        let baselines = &mut self.baselines;
        engine.take_touched(|f| {
            if let Some(d) = delta_of_active(baselines, f, start, end) {
                out(d);
            }
        });
        self.start = Some(self.start_of(now));
    }

    /// A flow left the table: its delta since its last interval (`None` if
    /// it did nothing since), in the interval of its last packet. Its
    /// baseline is forgotten.
    pub fn exited(&mut self, e: &FlowExport) -> Option<IntervalDelta> {
        let prev = self.baselines.remove(&flow_name(&e.record));
        let start = self.start_of(e.record.last_ns);
        let end = start.saturating_add(self.width_ns);
        let (d, _) = delta(&e.record, [&e.rtt[0], &e.rtt[1]], prev, start, end);
        d
    }
}

fn delta_of_active(
    baselines: &mut HashMap<FlowName, Baseline>,
    f: &ActiveFlow<'_>,
    start: u64,
    end: u64,
) -> Option<IntervalDelta> {
    let rec = f.to_record(false);
    let name = flow_name(&rec);
    let prev = baselines.remove(&name);
    let rtt = [&f.dirs[0].rtt, &f.dirs[1].rtt];
    let (d, keep) = delta(&rec, rtt, prev, start, end);
    if let Some(b) = keep {
        baselines.insert(name, b);
    } else {
        baselines.insert(
            name,
            Baseline {
                client: rec.client,
                c2s: rec.c2s.clone(),
                s2c: rec.s2c.clone(),
                rtt: [rtt[0].clone(), rtt[1].clone()],
                pmtu_errors: pmtu_errors(&rec),
            },
        );
    }
    d
}

/// `cur` minus `prev` over `[start, end)`. Returns the delta (`None` when no
/// packet moved) and, when nothing moved, the unchanged baseline back.
fn delta(
    cur: &FlowRecord,
    rtt: [&Histogram; 2],
    prev: Option<Baseline>,
    start: u64,
    end: u64,
) -> (Option<IntervalDelta>, Option<Baseline>) {
    let Some(mut p) = prev else {
        let d = IntervalDelta {
            start_ns: start,
            end_ns: end,
            first: true,
            flow: cur.clone(),
            rtt: [rtt[0].clone(), rtt[1].clone()],
        };
        return (Some(d), None);
    };
    if p.client != cur.client {
        // The engine swapped the flow's roles (a late SYN): so do we.
        std::mem::swap(&mut p.c2s, &mut p.s2c);
        p.rtt.swap(0, 1);
        p.client = cur.client;
    }
    let pmtu_new = pmtu_errors(cur).saturating_sub(p.pmtu_errors);
    if cur.c2s.packets == p.c2s.packets && cur.s2c.packets == p.s2c.packets && pmtu_new == 0 {
        return (None, Some(p));
    }
    let h0 = histogram_minus(rtt[0], &p.rtt[0]);
    let h1 = histogram_minus(rtt[1], &p.rtt[1]);
    let mut flow = cur.clone();
    flow.c2s = direction_minus(&cur.c2s, &p.c2s, &h0);
    flow.s2c = direction_minus(&cur.s2c, &p.s2c, &h1);
    // Counts add up over the deltas; the smallest MTU stays the flow's.
    flow.pmtu = cur.pmtu.as_ref().filter(|_| pmtu_new > 0).map(|m| Pmtu {
        icmp_errors: pmtu_new,
        mtu: m.mtu,
    });
    let d = IntervalDelta {
        start_ns: start,
        end_ns: end,
        first: false,
        flow,
        rtt: [h0, h1],
    };
    (Some(d), None)
}

/// `c` minus `p` (an earlier state of the same direction), counter by
/// counter; `rtt` is the difference of their RTT histograms. `burst` is a
/// maximum and cannot be split: it stays `c`'s.
pub fn direction_minus(c: &Direction, p: &Direction, rtt: &Histogram) -> Direction {
    Direction {
        packets: c.packets.saturating_sub(p.packets),
        bytes: c.bytes.saturating_sub(p.bytes),
        payload_bytes: c.payload_bytes.saturating_sub(p.payload_bytes),
        syn: c.syn.saturating_sub(p.syn),
        synack: c.synack.saturating_sub(p.synack),
        fin: c.fin.saturating_sub(p.fin),
        rst: c.rst.saturating_sub(p.rst),
        retrans_seen: c.retrans_seen.saturating_sub(p.retrans_seen),
        hole_fill: c.hole_fill.saturating_sub(p.hole_fill),
        gaps: c.gaps.saturating_sub(p.gaps),
        out_of_order: c.out_of_order.saturating_sub(p.out_of_order),
        retransmits: c.retransmits.saturating_sub(p.retransmits),
        fast_retransmits: c.fast_retransmits.saturating_sub(p.fast_retransmits),
        spurious_retransmits: c
            .spurious_retransmits
            .saturating_sub(p.spurious_retransmits),
        rto_retransmits: c.rto_retransmits.saturating_sub(p.rto_retransmits),
        dup_acks: c.dup_acks.saturating_sub(p.dup_acks),
        zero_window: c.zero_window.saturating_sub(p.zero_window),
        zero_window_events: c.zero_window_events.saturating_sub(p.zero_window_events),
        zero_window_ns: c.zero_window_ns.saturating_sub(p.zero_window_ns),
        ecn_ce: c.ecn_ce.saturating_sub(p.ecn_ce),
        frags: c.frags.saturating_sub(p.frags),
        rtt: rtt_of(rtt, c.rtt.last_ns),
        // A maximum cannot be split into intervals: the flow's so far.
        burst: c.burst,
        hol: Hol {
            holes: c.hol.holes.saturating_sub(p.hol.holes),
            open_ns_total: c.hol.open_ns_total.saturating_sub(p.hol.open_ns_total),
            // the flow's so far, as the burst maxima
            ..c.hol.clone()
        },
        ttl: Ttl {
            changes: c.ttl.changes.saturating_sub(p.ttl.changes),
            values: c.ttl.values.clone(),
        },
    }
}

/// RTT quantiles of `h` (empty: none), with the latest sample `last`.
pub fn rtt_of(h: &Histogram, last: Option<u64>) -> Rtt {
    if h.is_empty() {
        return Rtt::default();
    }
    Rtt {
        n: h.count(),
        min_ns: h.min(),
        p50_ns: h.quantile(0.5),
        p90_ns: h.quantile(0.9),
        p99_ns: h.quantile(0.99),
        max_ns: h.max(),
        mean_ns: h.mean(),
        last_ns: last,
    }
}

/// The samples of `cur` that `prev` (an earlier state of the same
/// histogram) did not have, bucket by bucket. Bucket counts are exact; each
/// new sample is placed at its bucket's low end, so min/max/sum of the
/// result are as precise as the buckets.
pub fn histogram_minus(cur: &Histogram, prev: &Histogram) -> Histogram {
    let mut out = Histogram::new();
    let mut old = prev.buckets().peekable();
    for b in cur.buckets() {
        while old.peek().is_some_and(|o| o.low < b.low) {
            old.next();
        }
        let before = match old.peek() {
            Some(o) if o.low == b.low => o.count,
            _ => 0,
        };
        out.record_n(b.low, b.count.saturating_sub(before));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::engine::EngineConfig;
    use crate::flow::TableConfig;
    use crate::source::synthetic::{Synthetic, SyntheticConfig};
    use crate::wire::LinkType;

    /// The counters that add up over intervals (all but RTT quantiles and bursts).
    fn additive(d: &Direction) -> [u64; 22] {
        [
            d.packets,
            d.bytes,
            d.payload_bytes,
            d.syn,
            d.synack,
            d.fin,
            d.rst,
            d.retrans_seen,
            d.hole_fill,
            d.gaps,
            d.out_of_order,
            d.retransmits,
            d.fast_retransmits,
            d.spurious_retransmits,
            d.rto_retransmits,
            d.dup_acks,
            d.zero_window,
            d.zero_window_events,
            d.zero_window_ns,
            d.ecn_ce,
            d.frags,
            d.rtt.n,
        ]
    }

    type Id = (u8, IpAddr, u16, IpAddr, u16, u64);
    /// Per flow: c2s and s2c counters, first deltas, PMTU errors.
    type Sums = BTreeMap<Id, ([u64; 22], [u64; 22], u64, u64)>;

    fn id(r: &FlowRecord) -> Id {
        let (c, s) = (r.client, r.server);
        (r.proto as u8, c.ip, c.port, s.ip, s.port, r.first_ns)
    }

    /// Mixed traffic with loss, reordering, fragments, closing connections
    /// and a table small enough to evict: every flow's interval deltas add
    /// up to its record, each flow has exactly one first delta, and an
    /// interval only holds flows that moved in it.
    #[test]
    fn interval_deltas_add_up_to_the_records_through_evictions_and_reuse() {
        let mut g = Synthetic::new(SyntheticConfig {
            flows: 300,
            pps: 20_000,
            conn_packets: 40,
            loss: 0.03,
            reorder: 0.02,
            frag: 0.05,
            pmtu: 0.02,
            ..SyntheticConfig::default()
        })
        .unwrap();
        let mut e = Engine::new(EngineConfig {
            table: TableConfig {
                capacity: 200,
                ..TableConfig::default()
            },
        });
        let mut iv = Intervals::new(50_000_000, &mut e);
        let mut sums: Sums = BTreeMap::new();
        let mut records: Vec<FlowRecord> = Vec::new();
        let add = |d: IntervalDelta, sums: &mut Sums| {
            assert_eq!(d.end_ns - d.start_ns, 50_000_000);
            assert!(
                d.flow.c2s.packets + d.flow.s2c.packets > 0 || pmtu_errors(&d.flow) > 0,
                "an idle flow in {d:?}"
            );
            assert_eq!(d.rtt[0].count(), d.flow.c2s.rtt.n);
            let s = sums.entry(id(&d.flow)).or_insert(([0; 22], [0; 22], 0, 0));
            s.3 += pmtu_errors(&d.flow);
            for (a, b) in s.0.iter_mut().zip(additive(&d.flow.c2s)) {
                *a += b;
            }
            for (a, b) in s.1.iter_mut().zip(additive(&d.flow.s2c)) {
                *a += b;
            }
            s.2 += u64::from(d.first);
        };
        for _ in 0..60_000 {
            let f = g.next_frame().unwrap();
            iv.advance(&mut e, f.ts_ns, |d| add(d, &mut sums));
            e.handle_frame(f.ts_ns, LinkType::Ethernet, f.data);
            while let Some(x) = e.poll_export() {
                if let Some(d) = iv.exited(&x) {
                    add(d, &mut sums);
                }
                records.push(x.record);
            }
        }
        assert!(e.table().evicted() > 0, "the table evicted");
        e.finish_each(|x| {
            if let Some(d) = iv.exited(&x) {
                add(d, &mut sums);
            }
            records.push(x.record);
        });
        assert_eq!(iv.tracked(), 0, "every baseline is gone with its flow");
        assert!(records.len() > 500, "{}", records.len());
        for r in &records {
            let s = sums
                .get(&id(r))
                .unwrap_or_else(|| panic!("no interval of {r:?}"));
            assert_eq!(s.0, additive(&r.c2s), "c2s of {r:?}");
            assert_eq!(s.1, additive(&r.s2c), "s2c of {r:?}");
            assert_eq!(s.2, 1, "one first delta for {r:?}");
            assert_eq!(s.3, pmtu_errors(r), "PMTU errors of {r:?}");
        }
        assert_eq!(sums.len(), records.len());
        assert!(
            records.iter().any(|r| pmtu_errors(r) > 0),
            "PMTU errors quoted"
        );
    }

    #[test]
    fn histogram_difference_counts_only_new_samples() {
        let mut a = Histogram::new();
        for v in [1_000, 2_000_000, 2_000_000, 50_000_000] {
            a.record(v);
        }
        let mut b = a.clone();
        for v in [2_000_000, 70_000_000, 900] {
            b.record(v);
        }
        let d = histogram_minus(&b, &a);
        assert_eq!(d.count(), 3);
        let q = |h: &Histogram, x: f64| h.quantile(x).unwrap();
        assert!(q(&d, 0.0) <= 900, "{d:?}");
        assert!((q(&d, 0.5) as f64 / 2e6 - 1.0).abs() < 0.02, "{d:?}");
        assert!((d.max().unwrap() as f64 / 7e7 - 1.0).abs() < 0.02, "{d:?}");
        assert!(histogram_minus(&a, &a).is_empty());
    }
}
