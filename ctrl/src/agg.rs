//! Aggregation: pure code, no sockets, no clock, no store.
//!
//! A report's flow deltas become rows keyed by
//! * service (the server's `ip:port/proto`) x time bucket,
//! * service x client subnet (/24 for IPv4, /64 for IPv6: "which path") x bucket,
//! * flow (`proto client server vlan first_ns`),
//!
//! each at two resolutions: 10 s buckets and 1 min buckets. The 1 min row is
//! the roll-up of the 10 s rows: both are written at ingest, and since every
//! field merges exactly ([`Counters::merge`]: sums, min/max, set union,
//! [`Histogram::merge`]) the 1 min row equals the merge of its six 10 s rows.
//! The node is part of every row's key in the store, so per-node views and
//! "which nodes see it" stay answerable after merging.
//!
//! Methods by group: [`rows_of`] (a report in, rows out), [`Counters::merge`],
//! [`merge_flow`] (a flow's deltas into one record), the summaries
//! ([`ServiceSummary`], [`PathSummary`]) computed from merged rows.
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use wirelens_dataplane::report::{
    Direction, FlowRecord, PerSide, Proto, Rtt, TcpPath, TcpState, TTL_VALUES,
};
use wirelens_dataplane::stats::Histogram;

use crate::report::{FlowDelta, NodeReport, ProbeState, ProbeWindow};

pub const SEC: u64 = 1_000_000_000;

/// Time-bucket resolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Res {
    /// 10 s buckets (alerts, recent detail).
    S10,
    /// 1 min buckets (the roll-up; longer retention).
    M1,
}

impl Res {
    pub const ALL: [Res; 2] = [Res::S10, Res::M1];

    pub fn width_ns(self) -> u64 {
        match self {
            Res::S10 => 10 * SEC,
            Res::M1 => 60 * SEC,
        }
    }

    /// Seconds, as stored.
    pub fn secs(self) -> i64 {
        match self {
            Res::S10 => 10,
            Res::M1 => 60,
        }
    }

    /// Start of the bucket holding `t`.
    pub fn bucket(self, t: u64) -> u64 {
        t - t % self.width_ns()
    }
}

/// A service: the server side of flows, `ip:port/proto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceKey {
    pub ip: IpAddr,
    pub port: u16,
    pub proto: Proto,
}

fn proto_str(p: Proto) -> &'static str {
    match p {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
        Proto::Icmp => "icmp",
        Proto::Other => "other",
    }
}

impl fmt::Display for ServiceKey {
    /// `198.18.2.2:8080/tcp`, `[2001:db8::1]:443/tcp`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            IpAddr::V4(a) => write!(f, "{a}:{}/{}", self.port, proto_str(self.proto)),
            IpAddr::V6(a) => write!(f, "[{a}]:{}/{}", self.port, proto_str(self.proto)),
        }
    }
}

impl ServiceKey {
    pub fn of(rec: &FlowRecord) -> ServiceKey {
        ServiceKey {
            ip: rec.server.ip,
            port: rec.server.port,
            proto: rec.proto,
        }
    }
}

/// The client's subnet: /24 for IPv4, /64 for IPv6.
pub fn subnet_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("{net}/64")
        }
    }
}

/// Most client addresses kept per row for "many clients retrying".
pub const MAX_RETRY_CLIENTS: usize = 256;

/// Additive counters of one row (service, path or flow aggregate). Every field
/// merges exactly; see [`Counters::merge`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    /// Flows that started (their first delta) in this row.
    pub flows: u64,
    /// Flow deltas merged into this row.
    pub deltas: u64,
    pub packets: u64,
    pub bytes: u64,
    pub payload_bytes: u64,
    /// Packets of the directions that carried payload: the denominator of
    /// the retransmission rate.
    pub data_packets: u64,
    pub retransmits: u64,
    /// Loss after the tap (the tap had seen the bytes).
    pub retrans_seen: u64,
    /// Loss before the tap (a hole filled later).
    pub hole_fill: u64,
    pub rto_retransmits: u64,
    pub dup_acks: u64,
    pub rst: u64,
    pub zero_window_events: u64,
    pub zero_window_ns: u64,
    /// Flows whose handshake needed more than one SYN.
    pub syn_retry_flows: u64,
    /// SYNs beyond the first, summed.
    pub syn_retries: u64,
    /// Connections refused (RST to the SYN).
    pub refused: u64,
    /// Connection attempts never answered.
    pub unanswered: u64,
    /// Clients that retried SYNs (at most [`MAX_RETRY_CLIENTS`]).
    pub retry_clients: BTreeSet<IpAddr>,
    /// ICMP frag-needed / packet-too-big quoting the flows.
    pub pmtu_errors: u64,
    /// Smallest MTU announced by those errors.
    pub pmtu_min_mtu: Option<u32>,
    pub frags: u64,
    pub max_packets_1ms: u64,
    /// RTT of client -> server data (tap -> server -> tap).
    pub rtt_server: Histogram,
    /// RTT of server -> client data (tap -> client -> tap).
    pub rtt_client: Histogram,
    /// Head-of-line holes opened, the time the closed ones stayed open
    /// summed, and the longest.
    pub hol_holes: u64,
    pub hol_open_ns_total: u64,
    pub hol_open_ns_max: u64,
    /// Flows whose first delta was `tcp.path: "one_way"`. Their
    /// retransmissions are in `one_way_retransmits`, not in `retransmits`
    /// (the tap cannot tell loss on a path it sees half of).
    pub one_way_flows: u64,
    pub one_way_retransmits: u64,
    /// Flows whose first delta had an MSS clamped / ECN bleached side.
    pub mss_clamped_flows: u64,
    pub ecn_bleached_flows: u64,
    /// TTL (hop limit) changes within a direction, summed.
    pub ttl_changes: u64,
}

impl Counters {
    /// Adds `o`. Exact and associative: sums, min, max, set union (capped),
    /// histogram merge.
    pub fn merge(&mut self, o: &Counters) {
        self.flows = self.flows.saturating_add(o.flows);
        self.deltas = self.deltas.saturating_add(o.deltas);
        self.packets = self.packets.saturating_add(o.packets);
        self.bytes = self.bytes.saturating_add(o.bytes);
        self.payload_bytes = self.payload_bytes.saturating_add(o.payload_bytes);
        self.data_packets = self.data_packets.saturating_add(o.data_packets);
        self.retransmits = self.retransmits.saturating_add(o.retransmits);
        self.retrans_seen = self.retrans_seen.saturating_add(o.retrans_seen);
        self.hole_fill = self.hole_fill.saturating_add(o.hole_fill);
        self.rto_retransmits = self.rto_retransmits.saturating_add(o.rto_retransmits);
        self.dup_acks = self.dup_acks.saturating_add(o.dup_acks);
        self.rst = self.rst.saturating_add(o.rst);
        self.zero_window_events = self.zero_window_events.saturating_add(o.zero_window_events);
        self.zero_window_ns = self.zero_window_ns.saturating_add(o.zero_window_ns);
        self.syn_retry_flows = self.syn_retry_flows.saturating_add(o.syn_retry_flows);
        self.syn_retries = self.syn_retries.saturating_add(o.syn_retries);
        self.refused = self.refused.saturating_add(o.refused);
        self.unanswered = self.unanswered.saturating_add(o.unanswered);
        for ip in &o.retry_clients {
            if self.retry_clients.len() >= MAX_RETRY_CLIENTS {
                break;
            }
            self.retry_clients.insert(*ip);
        }
        self.pmtu_errors = self.pmtu_errors.saturating_add(o.pmtu_errors);
        self.pmtu_min_mtu = match (self.pmtu_min_mtu, o.pmtu_min_mtu) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.frags = self.frags.saturating_add(o.frags);
        self.max_packets_1ms = self.max_packets_1ms.max(o.max_packets_1ms);
        self.rtt_server.merge(&o.rtt_server);
        self.rtt_client.merge(&o.rtt_client);
        self.hol_holes = self.hol_holes.saturating_add(o.hol_holes);
        self.hol_open_ns_total = self.hol_open_ns_total.saturating_add(o.hol_open_ns_total);
        self.hol_open_ns_max = self.hol_open_ns_max.max(o.hol_open_ns_max);
        self.one_way_flows = self.one_way_flows.saturating_add(o.one_way_flows);
        self.one_way_retransmits = self
            .one_way_retransmits
            .saturating_add(o.one_way_retransmits);
        self.mss_clamped_flows = self.mss_clamped_flows.saturating_add(o.mss_clamped_flows);
        self.ecn_bleached_flows = self.ecn_bleached_flows.saturating_add(o.ecn_bleached_flows);
        self.ttl_changes = self.ttl_changes.saturating_add(o.ttl_changes);
    }

    /// The counters of one flow delta.
    pub fn of_delta(d: &FlowDelta) -> Counters {
        let mut c = Counters::of_delta_counts(d);
        let [server, client] = delta_histograms(d);
        c.rtt_server = server.into_owned();
        c.rtt_client = client.into_owned();
        c
    }

    /// Adds one delta: `c` its [`Counters::of_delta_counts`], `rtt` its
    /// [`delta_histograms`] (merged from the delta, not copied first).
    fn add_delta(&mut self, c: &Counters, rtt: &[Cow<'_, Histogram>; 2]) {
        self.merge(c);
        self.rtt_server.merge(&rtt[0]);
        self.rtt_client.merge(&rtt[1]);
    }

    /// The counters of one flow delta without its RTT histograms.
    fn of_delta_counts(d: &FlowDelta) -> Counters {
        let f = &d.flow;
        let mut c = Counters {
            flows: u64::from(d.first),
            deltas: 1,
            ..Counters::default()
        };
        for dir in [&f.c2s, &f.s2c] {
            c.packets = c.packets.saturating_add(dir.packets);
            c.bytes = c.bytes.saturating_add(dir.bytes);
            c.payload_bytes = c.payload_bytes.saturating_add(dir.payload_bytes);
            if dir.payload_bytes > 0 {
                c.data_packets = c.data_packets.saturating_add(dir.packets);
            }
            c.retransmits = c.retransmits.saturating_add(dir.retransmits);
            c.retrans_seen = c.retrans_seen.saturating_add(dir.retrans_seen);
            c.hole_fill = c.hole_fill.saturating_add(dir.hole_fill);
            c.rto_retransmits = c.rto_retransmits.saturating_add(dir.rto_retransmits);
            c.dup_acks = c.dup_acks.saturating_add(dir.dup_acks);
            c.rst = c.rst.saturating_add(dir.rst);
            c.zero_window_events = c.zero_window_events.saturating_add(dir.zero_window_events);
            c.zero_window_ns = c.zero_window_ns.saturating_add(dir.zero_window_ns);
            c.frags = c.frags.saturating_add(dir.frags);
            c.max_packets_1ms = c.max_packets_1ms.max(dir.burst.max_packets_1ms);
            c.hol_holes = c.hol_holes.saturating_add(dir.hol.holes);
            c.hol_open_ns_total = c.hol_open_ns_total.saturating_add(dir.hol.open_ns_total);
            c.hol_open_ns_max = c.hol_open_ns_max.max(dir.hol.open_ns_max.unwrap_or(0));
            c.ttl_changes = c.ttl_changes.saturating_add(dir.ttl.changes);
        }
        if let Some(tcp) = &f.tcp {
            if tcp.path == TcpPath::OneWay {
                // Not loss the tap can judge: kept apart.
                c.one_way_flows = u64::from(d.first);
                c.one_way_retransmits = c.retransmits;
                c.retransmits = 0;
                c.retrans_seen = 0;
                c.hole_fill = 0;
                c.rto_retransmits = 0;
                c.data_packets = 0;
            }
            let any = |p: &PerSide<bool>| p.client || p.server;
            c.mss_clamped_flows = u64::from(d.first && any(&tcp.mss_clamped));
            c.ecn_bleached_flows = u64::from(d.first && any(&tcp.ecn_bleached));
            let syns = tcp.handshake.as_ref().map_or(f.c2s.syn, |h| h.syn_count);
            if syns > 1 {
                c.syn_retry_flows = 1;
                c.syn_retries = syns - 1;
                c.retry_clients.insert(f.client.ip);
            }
            match tcp.state {
                TcpState::Refused => c.refused = 1,
                TcpState::SynSent | TcpState::TimedOut if f.s2c.packets == 0 => c.unanswered = 1,
                _ => {}
            }
        }
        if let Some(p) = &f.pmtu {
            c.pmtu_errors = p.icmp_errors;
            c.pmtu_min_mtu = p.mtu;
        }
        c
    }

    /// Retransmissions per data packet (`None` without data).
    pub fn retrans_rate(&self) -> Option<f64> {
        (self.data_packets > 0).then(|| self.retransmits as f64 / self.data_packets as f64)
    }

    /// Both RTT sides merged.
    pub fn rtt_all(&self) -> Histogram {
        let mut h = self.rtt_server.clone();
        h.merge(&self.rtt_client);
        h
    }
}

/// The RTT histograms of one delta (client -> server, server -> client):
/// borrowed when the node sent them, else built from the quantiles.
fn delta_histograms(d: &FlowDelta) -> [Cow<'_, Histogram>; 2] {
    fn one<'a>(exact: Option<&'a Histogram>, summary: &Rtt) -> Cow<'a, Histogram> {
        match exact {
            Some(h) => Cow::Borrowed(h),
            None => Cow::Owned(approx_histogram(summary)),
        }
    }
    [
        one(d.rtt_c2s.as_ref(), &d.flow.c2s.rtt),
        one(d.rtt_s2c.as_ref(), &d.flow.s2c.rtt),
    ]
}

/// A histogram with the record's sample count whose quantiles reproduce the
/// record's `min`, `p50`, `p90`, `p99` and `max` (within the histogram's
/// 1/64 relative error), for deltas that carry quantiles but no histogram
/// (offline imports). Merging these is exact; the approximation is only in
/// how the samples between the quantiles were spread.
pub fn approx_histogram(r: &Rtt) -> Histogram {
    let mut h = Histogram::new();
    let n = r.n;
    let (Some(min), Some(p50), Some(p90), Some(p99), Some(max)) =
        (r.min_ns, r.p50_ns, r.p90_ns, r.p99_ns, r.max_ns)
    else {
        return h;
    };
    if n == 0 {
        return h;
    }
    if n == 1 {
        h.record(p50);
        return h;
    }
    // Ranks 1..=n: rank 1 is min, rank n is max; ranks up to ceil(q n) take
    // the quantile's value (nearest-rank, as the histogram reports them).
    let rank = |q: f64| ((q * n as f64).ceil() as u64).clamp(1, n);
    let (r50, r90, r99) = (rank(0.5), rank(0.9), rank(0.99));
    let mut done = 1u64;
    h.record(min);
    for (upto, v) in [(r50, p50), (r90, p90), (r99, p99), (n - 1, max)] {
        if upto > done {
            h.record_n(v, upto - done);
            done = upto;
        }
    }
    h.record_n(max, n - done);
    h
}

/// Identifies one flow across deltas and nodes: `proto client server vlan first_ns`.
pub fn flow_id(f: &FlowRecord) -> String {
    let ep = |e: &wirelens_dataplane::report::Endpoint| match e.ip {
        IpAddr::V4(a) => format!("{a}:{}", e.port),
        IpAddr::V6(a) => format!("[{a}]:{}", e.port),
    };
    format!(
        "{} {} {} {} {}",
        proto_str(f.proto),
        ep(&f.client),
        ep(&f.server),
        f.vlan.map_or(-1, i32::from),
        f.first_ns
    )
}

/// One flow as the control plane keeps it: the merged record and its RTT
/// histograms (exact when the node sent them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowState {
    pub record: FlowRecord,
    pub rtt_c2s: Histogram,
    pub rtt_s2c: Histogram,
}

impl FlowState {
    pub fn of_delta(d: &FlowDelta) -> FlowState {
        let [c2s, s2c] = delta_histograms(d);
        FlowState {
            record: d.flow.clone(),
            rtt_c2s: c2s.into_owned(),
            rtt_s2c: s2c.into_owned(),
        }
    }
}

fn add_direction(a: &mut Direction, b: &Direction) {
    a.packets = a.packets.saturating_add(b.packets);
    a.bytes = a.bytes.saturating_add(b.bytes);
    a.payload_bytes = a.payload_bytes.saturating_add(b.payload_bytes);
    a.syn = a.syn.saturating_add(b.syn);
    a.synack = a.synack.saturating_add(b.synack);
    a.fin = a.fin.saturating_add(b.fin);
    a.rst = a.rst.saturating_add(b.rst);
    a.retrans_seen = a.retrans_seen.saturating_add(b.retrans_seen);
    a.hole_fill = a.hole_fill.saturating_add(b.hole_fill);
    a.gaps = a.gaps.saturating_add(b.gaps);
    a.out_of_order = a.out_of_order.saturating_add(b.out_of_order);
    a.retransmits = a.retransmits.saturating_add(b.retransmits);
    a.fast_retransmits = a.fast_retransmits.saturating_add(b.fast_retransmits);
    a.spurious_retransmits = a
        .spurious_retransmits
        .saturating_add(b.spurious_retransmits);
    a.rto_retransmits = a.rto_retransmits.saturating_add(b.rto_retransmits);
    a.dup_acks = a.dup_acks.saturating_add(b.dup_acks);
    a.zero_window = a.zero_window.saturating_add(b.zero_window);
    a.zero_window_events = a.zero_window_events.saturating_add(b.zero_window_events);
    a.zero_window_ns = a.zero_window_ns.saturating_add(b.zero_window_ns);
    a.ecn_ce = a.ecn_ce.saturating_add(b.ecn_ce);
    a.frags = a.frags.saturating_add(b.frags);
    a.burst.max_packets_1ms = a.burst.max_packets_1ms.max(b.burst.max_packets_1ms);
    a.burst.max_bytes_1ms = a.burst.max_bytes_1ms.max(b.burst.max_bytes_1ms);
    a.hol.holes = a.hol.holes.saturating_add(b.hol.holes);
    a.hol.open_ns_total = a.hol.open_ns_total.saturating_add(b.hol.open_ns_total);
    // maxima: the larger (the p99 of the union is not known without the times)
    a.hol.open_ns_max = a.hol.open_ns_max.max(b.hol.open_ns_max);
    a.hol.open_ns_p99 = a.hol.open_ns_p99.max(b.hol.open_ns_p99);
    a.ttl.changes = a.ttl.changes.saturating_add(b.ttl.changes);
    for v in &b.ttl.values {
        if !a.ttl.values.contains(v) && a.ttl.values.len() < TTL_VALUES {
            a.ttl.values.push(*v);
        }
    }
}

fn rtt_of(h: &Histogram, last: Option<u64>) -> Rtt {
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

/// Merges a later delta of the same flow into `a`: counters add, bursts take
/// the maximum, the TCP state is the later one's, RTT quantiles are
/// recomputed from the merged histograms.
pub fn merge_flow(a: &mut FlowState, b: &FlowState) {
    let (ra, rb) = (&mut a.record, &b.record);
    let later = rb.last_ns >= ra.last_ns;
    ra.first_ns = ra.first_ns.min(rb.first_ns);
    ra.last_ns = ra.last_ns.max(rb.last_ns);
    add_direction(&mut ra.c2s, &rb.c2s);
    add_direction(&mut ra.s2c, &rb.s2c);
    if later && rb.tcp.is_some() {
        let hs = ra.tcp.as_ref().and_then(|t| t.handshake.clone());
        ra.tcp.clone_from(&rb.tcp);
        if let (Some(t), Some(h)) = (ra.tcp.as_mut(), hs) {
            t.handshake.get_or_insert(h);
        }
    }
    ra.pmtu = match (ra.pmtu.take(), &rb.pmtu) {
        (Some(mut x), Some(y)) => {
            x.icmp_errors = x.icmp_errors.saturating_add(y.icmp_errors);
            x.mtu = match (x.mtu, y.mtu) {
                (Some(p), Some(q)) => Some(p.min(q)),
                (p, q) => p.or(q),
            };
            Some(x)
        }
        (x, y) => x.or_else(|| y.clone()),
    };
    a.rtt_c2s.merge(&b.rtt_c2s);
    a.rtt_s2c.merge(&b.rtt_s2c);
    let last = |x: Option<u64>, y: Option<u64>| if later { y.or(x) } else { x.or(y) };
    let (l1, l2) = (
        last(ra.c2s.rtt.last_ns, rb.c2s.rtt.last_ns),
        last(ra.s2c.rtt.last_ns, rb.s2c.rtt.last_ns),
    );
    ra.c2s.rtt = rtt_of(&a.rtt_c2s, l1);
    ra.s2c.rtt = rtt_of(&a.rtt_s2c, l2);
}

/// A row's key in the service table: (service, resolution, bucket start).
pub type ServiceBucketKey = (String, Res, u64);
/// A row's key in the path table: (service, client subnet, resolution, bucket start).
pub type PathBucketKey = (String, String, Res, u64);

/// One flow of a report kept for the flows view: its service, the 1 min
/// bucket of its (latest) delta, and the deltas of this report merged.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowRowIn {
    pub service: String,
    pub bucket: u64,
    pub state: FlowState,
    /// Reset, refused, zero window or PMTU: kept whatever its rank.
    pub event: bool,
}

/// What one report adds: rows to merge into the store under `report.node`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rows {
    pub services: BTreeMap<ServiceBucketKey, Counters>,
    pub paths: BTreeMap<PathBucketKey, Counters>,
    /// Per flow id: the flows of this report the flows view may keep (see
    /// [`rows_of_top`]), their deltas of this report merged.
    pub flows: BTreeMap<String, FlowRowIn>,
    /// Per service: the whole report's counters (cumulative totals, /metrics).
    pub totals: BTreeMap<String, Counters>,
}

/// How bad a flow is for the flows view: loss (retransmissions), then
/// zero-window stall time, then RTT p99 (the order of `sort=worst`).
pub fn worst_score(r: &FlowRecord) -> (u64, u64, u64) {
    (
        r.c2s.retransmits.saturating_add(r.s2c.retransmits),
        r.c2s.zero_window_ns.saturating_add(r.s2c.zero_window_ns),
        r.c2s.rtt.p99_ns.max(r.s2c.rtt.p99_ns).unwrap_or(0),
    )
}

/// A flow with an event the flows view always keeps: a reset, a refused
/// connection, a zero-window stall, or an ICMP PMTU error.
pub fn has_event(r: &FlowRecord) -> bool {
    r.c2s.rst > 0
        || r.s2c.rst > 0
        || r.c2s.zero_window_events > 0
        || r.s2c.zero_window_events > 0
        || r.pmtu.as_ref().is_some_and(|p| p.icmp_errors > 0)
        || r.tcp
            .as_ref()
            .is_some_and(|t| matches!(t.state, TcpState::Reset | TcpState::Refused))
}

/// The rows of one report with every flow kept. Pure.
pub fn rows_of(report: &NodeReport) -> Rows {
    rows_of_top(report, usize::MAX)
}

/// The service and path key of an address without formatting it.
fn subnet_key(ip: IpAddr) -> (bool, u64) {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            (false, u64::from_be_bytes([0, 0, 0, 0, 0, o[0], o[1], o[2]]))
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            (
                true,
                (u64::from(s[0]) << 48)
                    | (u64::from(s[1]) << 32)
                    | (u64::from(s[2]) << 16)
                    | u64::from(s[3]),
            )
        }
    }
}

fn proto_code(p: Proto) -> u8 {
    match p {
        Proto::Tcp => 0,
        Proto::Udp => 1,
        Proto::Icmp => 2,
        Proto::Other => 3,
    }
}

/// The rows of one report. Each delta is merged once into its service's and
/// its path's 10 s row; the 1 min rows and the totals are merged from those
/// (exact: every field merges associatively). Of the flows, only those the
/// flows view can keep are turned into [`FlowRowIn`]: per service and 1 min
/// bucket the `top` worst by [`worst_score`] plus every flow with an event
/// ([`has_event`]). A flow among the `top` worst of the whole store is among
/// the `top` worst of the report that carried it, so this loses nothing the
/// store would keep. Pure.
pub fn rows_of_top(report: &NodeReport, top: usize) -> Rows {
    use std::collections::HashMap;
    let mut services: Vec<String> = Vec::new();
    let mut svc_idx: HashMap<(IpAddr, u16, u8), usize> = HashMap::new();
    let mut subnets: Vec<String> = Vec::new();
    let mut sub_idx: HashMap<(bool, u64), usize> = HashMap::new();
    let mut s10: HashMap<(usize, u64), Counters> = HashMap::new();
    let mut p10: HashMap<(usize, usize, u64), Counters> = HashMap::new();
    // Per (service, 1 min bucket): the worst `top` (score, delta index).
    type Worst = Vec<((u64, u64, u64), usize)>;
    let mut worst: HashMap<(usize, u64), Worst> = HashMap::new();
    let mut keep: Vec<(usize, usize, bool)> = Vec::new();
    for (idx, d) in report.flows.iter().enumerate() {
        let f = &d.flow;
        let svc = *svc_idx
            .entry((f.server.ip, f.server.port, proto_code(f.proto)))
            .or_insert_with(|| {
                services.push(ServiceKey::of(f).to_string());
                services.len() - 1
            });
        let sub = *sub_idx.entry(subnet_key(f.client.ip)).or_insert_with(|| {
            subnets.push(subnet_of(f.client.ip));
            subnets.len() - 1
        });
        let c = Counters::of_delta_counts(d);
        let rtt = delta_histograms(d);
        let b = Res::S10.bucket(d.at_ns);
        s10.entry((svc, b)).or_default().add_delta(&c, &rtt);
        p10.entry((svc, sub, b)).or_default().add_delta(&c, &rtt);
        let bm = Res::M1.bucket(d.at_ns);
        if has_event(f) {
            keep.push((idx, svc, true));
        } else if top > 0 {
            let w = worst.entry((svc, bm)).or_default();
            let score = worst_score(f);
            if w.len() < top {
                w.push((score, idx));
            } else if let Some(min) = w.iter_mut().min_by_key(|e| e.0) {
                if score > min.0 {
                    *min = (score, idx);
                }
            }
        }
    }
    for ((svc, _), w) in worst {
        keep.extend(w.into_iter().map(|(_, idx)| (idx, svc, false)));
    }
    keep.sort_unstable();
    let mut rows = Rows::default();
    for ((svc, b), c) in s10 {
        let name = &services[svc];
        rows.services
            .entry((name.clone(), Res::M1, Res::M1.bucket(b)))
            .or_default()
            .merge(&c);
        rows.totals.entry(name.clone()).or_default().merge(&c);
        rows.services.insert((name.clone(), Res::S10, b), c);
    }
    for ((svc, sub, b), c) in p10 {
        let (name, subnet) = (&services[svc], &subnets[sub]);
        rows.paths
            .entry((name.clone(), subnet.clone(), Res::M1, Res::M1.bucket(b)))
            .or_default()
            .merge(&c);
        rows.paths
            .insert((name.clone(), subnet.clone(), Res::S10, b), c);
    }
    for (idx, svc, event) in keep {
        let d = &report.flows[idx];
        let st = FlowState::of_delta(d);
        match rows.flows.entry(flow_id(&d.flow)) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(FlowRowIn {
                    service: services[svc].clone(),
                    bucket: Res::M1.bucket(d.at_ns),
                    state: st,
                    event,
                });
            }
            std::collections::btree_map::Entry::Occupied(mut o) => {
                let e = o.get_mut();
                e.bucket = e.bucket.max(Res::M1.bucket(d.at_ns));
                e.event |= event;
                merge_flow(&mut e.state, &st);
            }
        }
    }
    rows
}

/// RTT quantiles for output.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RttSummary {
    pub n: u64,
    pub p50_ns: Option<u64>,
    pub p90_ns: Option<u64>,
    pub p99_ns: Option<u64>,
    pub max_ns: Option<u64>,
}

impl RttSummary {
    pub fn of(h: &Histogram) -> RttSummary {
        RttSummary {
            n: h.count(),
            p50_ns: h.quantile(0.5),
            p90_ns: h.quantile(0.9),
            p99_ns: h.quantile(0.99),
            max_ns: h.max(),
        }
    }
}

/// A service over a time window, merged across nodes and buckets.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceSummary {
    pub service: String,
    /// Nodes that saw the service.
    pub nodes: Vec<String>,
    /// Start of the first and end of the last bucket with data.
    pub first_ns: u64,
    pub last_ns: u64,
    pub flows: u64,
    pub packets: u64,
    pub bytes: u64,
    pub retransmits: u64,
    pub retrans_seen: u64,
    pub hole_fill: u64,
    pub retrans_rate: Option<f64>,
    pub zero_window_events: u64,
    pub zero_window_ns: u64,
    pub syn_retry_flows: u64,
    pub refused: u64,
    pub unanswered: u64,
    pub pmtu_errors: u64,
    pub pmtu_min_mtu: Option<u32>,
    /// RTT of requests (client -> server data; tap -> server -> tap).
    pub rtt_server: RttSummary,
    /// RTT of responses (server -> client data; tap -> client -> tap).
    pub rtt_client: RttSummary,
    /// Head-of-line time of the service's connections: holes opened, the
    /// time the closed ones stayed open (summed) and the longest.
    #[serde(default)]
    pub hol: HolSummary,
    /// Flows flagged `tcp.path: "one_way"`, and their retransmissions (not in
    /// `retransmits` nor `retrans_rate`).
    #[serde(default)]
    pub one_way_flows: u64,
    #[serde(default)]
    pub one_way_retransmits: u64,
    #[serde(default)]
    pub mss_clamped_flows: u64,
    #[serde(default)]
    pub ecn_bleached_flows: u64,
    #[serde(default)]
    pub ttl_changes: u64,
    /// Client subnets, worst first (when asked for).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathSummary>,
    /// The active probes to this service's `ip:port` (`wirelens run --probe`),
    /// merged over the nodes that probe it; filled in by `wirelens services`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeSummary>,
}

/// Head-of-line time over many flows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolSummary {
    pub holes: u64,
    pub open_ns_total: u64,
    pub open_ns_max: u64,
}

/// One client subnet of a service ("which path").
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PathSummary {
    pub subnet: String,
    pub nodes: Vec<String>,
    pub flows: u64,
    pub packets: u64,
    pub retransmits: u64,
    pub retrans_rate: Option<f64>,
    pub zero_window_events: u64,
    pub rtt_server: RttSummary,
    pub rtt_client: RttSummary,
}

/// Merges rows `(key, node, bucket, counters)` per key over the window.
pub fn merge_by_key<K: Ord + Clone>(
    rows: impl IntoIterator<Item = (K, String, u64, Counters)>,
    width_ns: u64,
) -> BTreeMap<K, (Counters, BTreeSet<String>, u64, u64)> {
    let mut out: BTreeMap<K, (Counters, BTreeSet<String>, u64, u64)> = BTreeMap::new();
    for (k, node, b, c) in rows {
        let e = out
            .entry(k)
            .or_insert_with(|| (Counters::default(), BTreeSet::new(), u64::MAX, 0));
        e.0.merge(&c);
        e.1.insert(node);
        e.2 = e.2.min(b);
        // Saturating: rows stored before reports' times were bounded (see
        // report::MAX_TIME_NS) may start a bucket within `width_ns` of u64::MAX.
        e.3 = e.3.max(b.saturating_add(width_ns));
    }
    out
}

impl ServiceSummary {
    pub fn new(
        service: String,
        c: &Counters,
        nodes: &BTreeSet<String>,
        first: u64,
        last: u64,
    ) -> Self {
        ServiceSummary {
            service,
            nodes: nodes.iter().cloned().collect(),
            first_ns: first,
            last_ns: last,
            flows: c.flows,
            packets: c.packets,
            bytes: c.bytes,
            retransmits: c.retransmits,
            retrans_seen: c.retrans_seen,
            hole_fill: c.hole_fill,
            retrans_rate: c.retrans_rate(),
            zero_window_events: c.zero_window_events,
            zero_window_ns: c.zero_window_ns,
            syn_retry_flows: c.syn_retry_flows,
            refused: c.refused,
            unanswered: c.unanswered,
            pmtu_errors: c.pmtu_errors,
            pmtu_min_mtu: c.pmtu_min_mtu,
            rtt_server: RttSummary::of(&c.rtt_server),
            rtt_client: RttSummary::of(&c.rtt_client),
            hol: HolSummary {
                holes: c.hol_holes,
                open_ns_total: c.hol_open_ns_total,
                open_ns_max: c.hol_open_ns_max,
            },
            one_way_flows: c.one_way_flows,
            one_way_retransmits: c.one_way_retransmits,
            mss_clamped_flows: c.mss_clamped_flows,
            ecn_bleached_flows: c.ecn_bleached_flows,
            ttl_changes: c.ttl_changes,
            paths: Vec::new(),
            probe: None,
        }
    }

    /// A badness score for sorting "worst first": loss, stalls, then RTT.
    pub fn worst_key(&self) -> (u64, u64, u64) {
        let p99 = self
            .rtt_server
            .p99_ns
            .max(self.rtt_client.p99_ns)
            .unwrap_or(0);
        (self.retransmits, self.zero_window_ns, p99)
    }
}

impl PathSummary {
    pub fn new(subnet: String, c: &Counters, nodes: &BTreeSet<String>) -> Self {
        PathSummary {
            subnet,
            nodes: nodes.iter().cloned().collect(),
            flows: c.flows,
            packets: c.packets,
            retransmits: c.retransmits,
            retrans_rate: c.retrans_rate(),
            zero_window_events: c.zero_window_events,
            rtt_server: RttSummary::of(&c.rtt_server),
            rtt_client: RttSummary::of(&c.rtt_client),
        }
    }
}

/// Probe windows of one (node, target) merged over a time range: the
/// counters add up, the histograms merge exactly, the state is the latest
/// window's. What `/api/v1/probes` serves, one row per node and target.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeSummary {
    pub target: String,
    pub node: String,
    /// Windows merged.
    pub windows: u64,
    /// Start of the first and end of the last window.
    pub first_ns: u64,
    pub last_ns: u64,
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub lost_up: u64,
    pub lost_down: u64,
    pub lost_unattributed: u64,
    pub late: u64,
    pub duplicates: u64,
    pub reordered: u64,
    /// `lost / sent`; `null` without probes.
    pub loss_rate: Option<f64>,
    /// `lost_up / sent` and `lost_down / sent`.
    pub loss_up_rate: Option<f64>,
    pub loss_down_rate: Option<f64>,
    /// RTT net of the reflector's dwell.
    pub rtt: RttSummary,
    pub rtt_min_ns: Option<u64>,
    /// Mean |IPDV| of consecutive probes (jitter).
    pub jitter_ns: Option<u64>,
    /// The latest window's state and error.
    pub state: Option<ProbeState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// End of the latest window in which the reflector answered.
    pub last_ok_ns: Option<u64>,
    /// Windows by state (`ok`, `no_reply`, ...).
    pub states: BTreeMap<String, u64>,
    /// The merged histograms, so that a client can merge rows again exactly.
    #[serde(default)]
    pub rtt_histogram: Histogram,
    #[serde(default)]
    pub ipdv_histogram: Histogram,
}

fn rate(n: u64, d: u64) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

impl ProbeSummary {
    /// Adds one window (any order: the state follows the latest `end_ns`).
    pub fn add(&mut self, w: &ProbeWindow) {
        if self.windows == 0 {
            self.target = w.target.clone();
            self.first_ns = w.start_ns;
        }
        self.windows += 1;
        self.first_ns = self.first_ns.min(w.start_ns);
        if w.end_ns >= self.last_ns {
            self.last_ns = w.end_ns;
            self.state = Some(w.state);
            self.error = w.error.clone();
        }
        if w.state == ProbeState::Ok {
            self.last_ok_ns = self.last_ok_ns.max(Some(w.end_ns));
        }
        *self.states.entry(w.state.as_str().to_string()).or_default() += 1;
        let add = |a: &mut u64, b: u64| *a = a.saturating_add(b);
        add(&mut self.sent, w.sent);
        add(&mut self.received, w.received);
        add(&mut self.lost, w.lost);
        add(&mut self.lost_up, w.lost_up);
        add(&mut self.lost_down, w.lost_down);
        add(&mut self.lost_unattributed, w.lost_unattributed);
        add(&mut self.late, w.late);
        add(&mut self.duplicates, w.duplicates);
        add(&mut self.reordered, w.reordered);
        self.rtt_histogram.merge(&w.rtt);
        self.ipdv_histogram.merge(&w.ipdv);
        self.finish();
    }

    /// Recomputes the derived fields from the counters and histograms.
    fn finish(&mut self) {
        self.loss_rate = rate(self.lost, self.sent);
        self.loss_up_rate = rate(self.lost_up, self.sent);
        self.loss_down_rate = rate(self.lost_down, self.sent);
        self.rtt = RttSummary::of(&self.rtt_histogram);
        self.rtt_min_ns = self.rtt_histogram.min();
        self.jitter_ns = self.ipdv_histogram.mean();
    }

    /// Merges another summary of the same target (e.g. another node's).
    pub fn merge(&mut self, o: &ProbeSummary) {
        if o.windows == 0 {
            return;
        }
        if self.windows == 0 {
            *self = o.clone();
            return;
        }
        self.windows += o.windows;
        self.first_ns = self.first_ns.min(o.first_ns);
        if o.last_ns >= self.last_ns {
            self.last_ns = o.last_ns;
            self.state = o.state;
            self.error = o.error.clone();
        }
        self.last_ok_ns = self.last_ok_ns.max(o.last_ok_ns);
        for (k, v) in &o.states {
            *self.states.entry(k.clone()).or_default() += v;
        }
        for (a, b) in [
            (&mut self.sent, o.sent),
            (&mut self.received, o.received),
            (&mut self.lost, o.lost),
            (&mut self.lost_up, o.lost_up),
            (&mut self.lost_down, o.lost_down),
            (&mut self.lost_unattributed, o.lost_unattributed),
            (&mut self.late, o.late),
            (&mut self.duplicates, o.duplicates),
            (&mut self.reordered, o.reordered),
        ] {
            *a = a.saturating_add(b);
        }
        self.rtt_histogram.merge(&o.rtt_histogram);
        self.ipdv_histogram.merge(&o.ipdv_histogram);
        self.finish();
    }
}

/// Windows `(node, window)` merged per (target, node), sorted by target then node.
pub fn probe_summaries<'a>(
    windows: impl IntoIterator<Item = (&'a str, &'a ProbeWindow)>,
) -> Vec<ProbeSummary> {
    let mut m: BTreeMap<(String, String), ProbeSummary> = BTreeMap::new();
    for (node, w) in windows {
        let e = m
            .entry((w.target.clone(), node.to_string()))
            .or_insert_with(|| ProbeSummary {
                node: node.to_string(),
                ..ProbeSummary::default()
            });
        e.add(w);
    }
    m.into_values().collect()
}

/// The `ip:port` part of a service name (`198.18.2.2:862/udp` -> `198.18.2.2:862`),
/// which a probe target equals when it probes that service's address.
pub fn service_addr(service: &str) -> &str {
    service.rsplit_once('/').map_or(service, |(a, _)| a)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::report::NodeMeta;
    use wirelens_dataplane::report::{Handshake, TcpInfo};

    pub use wirelens_proto::testutil::flow;

    pub fn delta_with_rtt(f: FlowRecord, at_ns: u64, rtts: &[u64]) -> FlowDelta {
        let mut h = Histogram::new();
        for &r in rtts {
            h.record(r);
        }
        let mut d = FlowDelta::from_record(f);
        d.at_ns = at_ns;
        d.rtt_c2s = Some(h);
        d
    }

    #[test]
    fn probe_windows_merge_exactly() {
        use wirelens_proto::testutil::window;
        let t = 1_700_000_000 * SEC;
        let a: Vec<u64> = (0..200).map(|i| 20_000_000 + i * 11_000).collect();
        let b: Vec<u64> = (0..100).map(|i| 45_000_000 + i * 7_000).collect();
        let mut all = Histogram::new();
        for &v in a.iter().chain(&b) {
            all.record(v);
        }
        let w1 = window("198.18.2.2:862", t, &a, 5, 7);
        let w2 = window("198.18.2.2:862", t + 10 * SEC, &b, 1, 0);
        let mut dead = window("198.18.2.2:862", t + 20 * SEC, &[], 0, 0);
        dead.state = ProbeState::NoReply;
        dead.error = Some("no reply".into());
        dead.sent = 10;
        dead.lost = 10;
        dead.lost_unattributed = 10;
        let other = window("198.18.3.3:862", t, &[1_000_000], 0, 0);
        // Out of order on purpose: the state follows the latest window.
        let rows = probe_summaries([
            ("n1", &w2),
            ("n1", &dead),
            ("n1", &w1),
            ("n2", &w1),
            ("n1", &other),
        ]);
        assert_eq!(rows.len(), 3);
        let s = &rows[0];
        assert_eq!(
            (s.target.as_str(), s.node.as_str()),
            ("198.18.2.2:862", "n1")
        );
        assert_eq!(s.windows, 3);
        assert_eq!(s.sent, 200 + 12 + 100 + 1 + 10);
        assert_eq!((s.lost_up, s.lost_down, s.lost_unattributed), (6, 7, 10));
        assert_eq!(s.lost, s.lost_up + s.lost_down + s.lost_unattributed);
        assert_eq!(s.received + s.lost, s.sent);
        assert_eq!(s.rtt_histogram, all);
        assert_eq!(s.rtt.n, 300);
        assert_eq!(s.state, Some(ProbeState::NoReply));
        assert_eq!(s.error.as_deref(), Some("no reply"));
        assert_eq!(s.last_ok_ns, Some(w2.end_ns));
        assert_eq!(s.states.get("no_reply"), Some(&1));
        assert_eq!(s.states.get("ok"), Some(&2));
        assert_eq!(s.first_ns, t);
        assert!((s.loss_up_rate.unwrap() - 6.0 / 323.0).abs() < 1e-12);
        // Merging the per-node summaries equals adding every window.
        let mut m = rows[0].clone();
        m.merge(&rows[1]);
        let mut direct = ProbeSummary::default();
        for w in [&w2, &dead, &w1, &w1] {
            direct.add(w);
        }
        assert_eq!(m.sent, direct.sent);
        assert_eq!(m.rtt_histogram, direct.rtt_histogram);
        assert_eq!(m.lost_down, direct.lost_down);
        assert_eq!(m.state, direct.state);
        assert_eq!(service_addr("198.18.2.2:862/udp"), "198.18.2.2:862");
        assert_eq!(service_addr("[2001:db8::1]:443/tcp"), "[2001:db8::1]:443");
    }

    /// Head-of-line time and middlebox signs add up per service; a one-way
    /// flow's retransmissions are kept apart from the service's loss.
    #[test]
    fn signs_per_service_and_one_way_loss_kept_apart() {
        use wirelens_dataplane::report::{Hol, TcpInfo, Ttl};
        let t = 1_700_000_000 * SEC;
        let tcp = |path| TcpInfo {
            handshake: None,
            state: TcpState::Established,
            rst_from: None,
            mss: Default::default(),
            wscale: Default::default(),
            sack_ok: false,
            ts_ok: false,
            ecn_ok: true,
            path,
            mss_clamped: PerSide {
                client: false,
                server: true,
            },
            ecn_bleached: PerSide::default(),
        };
        let mut a = flow("198.18.1.1:1000", "198.18.2.2:80", t, t + SEC);
        a.c2s.packets = 100;
        a.c2s.payload_bytes = 100_000;
        a.c2s.retransmits = 4;
        a.c2s.hol = Hol {
            holes: 2,
            open_ns_max: Some(300_000_000),
            open_ns_p99: Some(300_000_000),
            open_ns_total: 400_000_000,
        };
        a.s2c.ttl = Ttl {
            changes: 1,
            values: vec![64, 60],
        };
        a.tcp = Some(tcp(TcpPath::TwoWay));
        let mut b = flow("198.18.1.2:1000", "198.18.2.2:80", t, t + SEC);
        b.c2s.packets = 50;
        b.c2s.payload_bytes = 50_000;
        b.c2s.retransmits = 9;
        b.c2s.hol.holes = 1;
        b.tcp = Some(tcp(TcpPath::OneWay));
        let mut r = NodeReport::new("n1", 1, 1, t + SEC, Default::default());
        for f in [a, b] {
            let mut d = FlowDelta::from_record(f);
            d.at_ns = t + SEC;
            r.flows.push(d);
        }
        let rows = rows_of(&r);
        let (_, c) = rows.totals.iter().next().unwrap();
        let s = ServiceSummary::new("x".into(), c, &BTreeSet::new(), t, t);
        assert_eq!(s.retransmits, 4, "the one-way flow's are not loss");
        assert_eq!(s.retrans_rate, Some(0.04));
        assert_eq!((s.one_way_flows, s.one_way_retransmits), (1, 9));
        assert_eq!(
            s.hol,
            HolSummary {
                holes: 3,
                open_ns_total: 400_000_000,
                open_ns_max: 300_000_000,
            }
        );
        assert_eq!((s.mss_clamped_flows, s.ecn_bleached_flows), (2, 0));
        assert_eq!(s.ttl_changes, 1);
    }

    #[test]
    fn exact_histogram_merge_through_rows() {
        // Two nodes' deltas for one service: the service row's histogram is
        // bit for bit the histogram of all samples.
        let t = 1_700_000_000 * SEC;
        let a: Vec<u64> = (0..500).map(|i| 30_000_000 + i * 37_000).collect();
        let b: Vec<u64> = (0..300).map(|i| 90_000_000 + i * 91_000).collect();
        let mut all = Histogram::new();
        for &v in a.iter().chain(&b) {
            all.record(v);
        }
        let mk = |node: &str, client: &str, rtts: &[u64]| {
            let mut r = NodeReport::new(node, 1, 0, t, NodeMeta::default());
            let mut f = flow(client, "198.18.2.2:8080", t, t + SEC);
            f.c2s.packets = rtts.len() as u64;
            r.flows.push(delta_with_rtt(f, t + SEC, rtts));
            rows_of(&r)
        };
        let ra = mk("a", "198.18.1.2:1000", &a);
        let rb = mk("b", "198.18.9.2:1000", &b);
        for res in Res::ALL {
            let key = ("198.18.2.2:8080/tcp".to_string(), res, res.bucket(t + SEC));
            let mut merged = ra.services[&key].clone();
            merged.merge(&rb.services[&key]);
            assert_eq!(merged.rtt_server, all);
            assert_eq!(merged.packets, 800);
            assert_eq!(merged.flows, 2);
        }
        assert_eq!(ra.paths.len(), 2);
        assert!(ra
            .paths
            .keys()
            .all(|k| k.1 == "198.18.1.0/24" && k.0 == "198.18.2.2:8080/tcp"));
    }

    #[test]
    fn rollup_equals_merge_of_10s_buckets() {
        let t0 = 1_700_000_040 * SEC; // a minute boundary
        assert_eq!(Res::M1.bucket(t0), t0);
        let mut r = NodeReport::new("n", 1, 0, t0, NodeMeta::default());
        for i in 0..6u64 {
            let mut f = flow("198.18.1.2:1000", "198.18.2.2:80", t0, t0 + i * 10 * SEC);
            f.c2s.packets = i + 1;
            f.c2s.retransmits = i;
            f.c2s.payload_bytes = 10;
            r.flows.push(delta_with_rtt(
                f,
                t0 + i * 10 * SEC + 1,
                &[i * 1_000_000 + 5],
            ));
        }
        let rows = rows_of(&r);
        let mut sum = Counters::default();
        for ((_, res, _), c) in &rows.services {
            if *res == Res::S10 {
                sum.merge(c);
            }
        }
        let minute = &rows.services[&("198.18.2.2:80/tcp".to_string(), Res::M1, t0)];
        assert_eq!(&sum, minute);
        assert_eq!(minute.packets, 21);
        assert_eq!(minute.retrans_rate(), Some(15.0 / 21.0));
    }

    #[test]
    fn approx_histogram_reproduces_quantiles() {
        let r = Rtt {
            n: 1000,
            min_ns: Some(20_000_000),
            p50_ns: Some(22_000_000),
            p90_ns: Some(32_000_000),
            p99_ns: Some(43_000_000),
            max_ns: Some(62_000_000),
            mean_ns: Some(24_000_000),
            last_ns: None,
        };
        let h = approx_histogram(&r);
        assert_eq!(h.count(), 1000);
        assert_eq!(h.min(), Some(20_000_000));
        assert_eq!(h.max(), Some(62_000_000));
        for (q, want) in [(0.5, 22_000_000u64), (0.9, 32_000_000), (0.99, 43_000_000)] {
            let got = h.quantile(q).unwrap();
            assert!(got.abs_diff(want) * 64 <= want, "q={q} got={got}");
        }
        assert!(approx_histogram(&Rtt::default()).is_empty());
    }

    #[test]
    fn flow_deltas_merge_into_one_record() {
        let t = 1_700_000_000 * SEC;
        let mut f1 = flow("198.18.1.2:1000", "198.18.2.2:80", t, t + SEC);
        f1.c2s.packets = 10;
        f1.c2s.burst.max_packets_1ms = 4;
        let mut f2 = flow("198.18.1.2:1000", "198.18.2.2:80", t, t + 5 * SEC);
        f2.c2s.packets = 7;
        f2.c2s.burst.max_packets_1ms = 3;
        f2.tcp = Some(TcpInfo {
            handshake: Some(Handshake {
                syn_count: 3,
                ..Handshake::default()
            }),
            state: TcpState::Closed,
            rst_from: None,
            mss: Default::default(),
            wscale: Default::default(),
            sack_ok: false,
            ts_ok: false,
            ecn_ok: false,
            path: Default::default(),
            mss_clamped: Default::default(),
            ecn_bleached: Default::default(),
        });
        let mut a = FlowState::of_delta(&delta_with_rtt(f1, t + SEC, &[1_000_000, 2_000_000]));
        let b = FlowState::of_delta(&delta_with_rtt(f2.clone(), t + 5 * SEC, &[3_000_000]));
        merge_flow(&mut a, &b);
        assert_eq!(a.record.c2s.packets, 17);
        assert_eq!(a.record.c2s.burst.max_packets_1ms, 4);
        assert_eq!(a.record.last_ns, t + 5 * SEC);
        assert_eq!(a.record.c2s.rtt.n, 3);
        assert_eq!(a.record.c2s.rtt.max_ns, Some(3_000_000));
        assert_eq!(a.record.tcp.as_ref().unwrap().state, TcpState::Closed);
        let c = Counters::of_delta(&FlowDelta::from_record(f2));
        assert_eq!(
            (c.syn_retry_flows, c.syn_retries, c.retry_clients.len()),
            (1, 2, 1)
        );
    }

    #[test]
    fn hostile_counters_saturate_instead_of_panicking() {
        let t = 1_700_000_000 * SEC;
        let mut f = flow("198.18.1.2:1000", "198.18.2.2:80", t, t);
        f.c2s.packets = u64::MAX;
        f.s2c.packets = u64::MAX;
        f.c2s.payload_bytes = 1;
        f.c2s.rtt = Rtt {
            n: u64::MAX,
            min_ns: Some(u64::MAX),
            p50_ns: Some(0),
            p90_ns: Some(7),
            p99_ns: Some(u64::MAX),
            max_ns: Some(1),
            mean_ns: None,
            last_ns: None,
        };
        let mut r = NodeReport::new("n", 1, 0, t, NodeMeta::default());
        r.flows = vec![FlowDelta::from_record(f.clone()), FlowDelta::from_record(f)];
        let rows = rows_of(&r);
        let c = &rows.totals["198.18.2.2:80/tcp"];
        assert_eq!(c.packets, u64::MAX);
        let mut m = c.clone();
        m.merge(c);
        assert_eq!(m.data_packets, u64::MAX);
        assert_eq!(rows.flows.len(), 1);
    }

    #[test]
    fn subnets() {
        assert_eq!(subnet_of("198.18.7.9".parse().unwrap()), "198.18.7.0/24");
        assert_eq!(
            subnet_of("2001:db8:1:2:3:4:5:6".parse().unwrap()),
            "2001:db8:1:2::/64"
        );
    }
}
