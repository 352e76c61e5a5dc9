//! The serde records of schema `wirelens.flow.v1` (see docs/DESIGN.md), shared by
//! `analyze`, the node's `/flows` and the control plane.
//!
//! Times are ns since the Unix epoch, durations ns (`_ns`), unknown is `null`.
//! Fields may be added; none may be renamed.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub const FLOW_SCHEMA: &str = "wirelens.flow.v1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
    Other,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rtt {
    pub n: u64,
    pub min_ns: Option<u64>,
    pub p50_ns: Option<u64>,
    pub p90_ns: Option<u64>,
    pub p99_ns: Option<u64>,
    pub max_ns: Option<u64>,
    pub mean_ns: Option<u64>,
    pub last_ns: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Burst {
    pub max_packets_1ms: u64,
    pub max_bytes_1ms: u64,
}

/// Counters of the packets the tap saw going one way.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Direction {
    pub packets: u64,
    /// IP (L3) bytes, as IPFIX octet counts.
    pub bytes: u64,
    pub payload_bytes: u64,
    pub syn: u64,
    pub synack: u64,
    pub fin: u64,
    pub rst: u64,
    pub retrans_seen: u64,
    pub hole_fill: u64,
    pub gaps: u64,
    pub out_of_order: u64,
    pub retransmits: u64,
    pub fast_retransmits: u64,
    pub spurious_retransmits: u64,
    pub rto_retransmits: u64,
    pub dup_acks: u64,
    pub zero_window: u64,
    pub zero_window_events: u64,
    pub zero_window_ns: u64,
    pub ecn_ce: u64,
    pub frags: u64,
    pub rtt: Rtt,
    pub burst: Burst,
    /// Head-of-line time: how long the holes in this direction's data stayed open.
    #[serde(default)]
    pub hol: Hol,
    /// IPv4 TTL / IPv6 hop limit of this direction's packets.
    #[serde(default)]
    pub ttl: Ttl,
}

/// Holes (sequence ranges the tap had not seen below the highest one seen)
/// and the time each stayed open, from the segment that opened it (gap seen)
/// to the segment that filled its last byte, or the ACK that showed the
/// receiver had it. While a hole is open, the receiver delivers nothing past
/// it: every stream multiplexed on the connection waits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hol {
    /// Holes opened (one per gap).
    pub holes: u64,
    /// Over the holes closed (those still open at the record are not timed).
    pub open_ns_max: Option<u64>,
    pub open_ns_p99: Option<u64>,
    pub open_ns_total: u64,
}

/// Distinct TTL values a direction reports.
pub const TTL_VALUES: usize = 4;

/// The TTL (hop limit) of a direction: a change within a direction is a
/// route change or a middlebox (load balancer, proxy) on the way.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ttl {
    /// Packets whose TTL differed from the previous packet's.
    pub changes: u64,
    /// When it changed: the distinct values in the order first seen (the
    /// first four); empty when every packet had the same TTL.
    pub values: Vec<u8>,
}

/// Whether the tap sees both directions of a TCP connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TcpPath {
    #[default]
    TwoWay,
    /// Data one way and no segment (so no ACK) the other way, or ACKs for
    /// data it never saw: the other direction takes another path (asymmetric routing). Its
    /// retransmission counters are not loss the tap can judge.
    OneWay,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handshake {
    pub syn_to_synack_ns: Option<u64>,
    pub synack_to_ack_ns: Option<u64>,
    pub connect_ns: Option<u64>,
    pub syn_count: u64,
    pub synack_count: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TcpState {
    SynSent,
    Established,
    Closed,
    Reset,
    Refused,
    TimedOut,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Client,
    Server,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PerSide<T> {
    pub client: T,
    pub server: T,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TcpInfo {
    pub handshake: Option<Handshake>,
    pub state: TcpState,
    pub rst_from: Option<Side>,
    pub mss: PerSide<Option<u16>>,
    pub wscale: PerSide<Option<u8>>,
    pub sack_ok: bool,
    pub ts_ok: bool,
    pub ecn_ok: bool,
    #[serde(default)]
    pub path: TcpPath,
    /// The side's SYN announced an MSS below what a 1500-byte MTU allows
    /// (1460 over IPv4, 1440 over IPv6): clamped on the way, or a smaller MTU.
    #[serde(default)]
    pub mss_clamped: PerSide<bool>,
    /// ECN was negotiated, the side sent data, and none of it was ECT-marked:
    /// something on the way cleared the ECN bits.
    #[serde(default)]
    pub ecn_bleached: PerSide<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pmtu {
    pub icmp_errors: u64,
    /// The smallest MTU announced for this flow.
    pub mtu: Option<u32>,
}

/// One flow, `{"type":"flow", ...}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowRecord {
    #[serde(rename = "type")]
    pub kind: String,
    pub schema: String,
    pub proto: Proto,
    pub client: Endpoint,
    pub server: Endpoint,
    pub vlan: Option<u16>,
    pub first_ns: u64,
    pub last_ns: u64,
    pub c2s: Direction,
    pub s2c: Direction,
    pub tcp: Option<TcpInfo>,
    pub pmtu: Option<Pmtu>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowCounts {
    pub tcp: u64,
    pub udp: u64,
    pub icmp: u64,
    pub other: u64,
}

/// TCP counters summed over all flows and both directions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpTotals {
    pub syn: u64,
    pub synack: u64,
    pub fin: u64,
    pub rst: u64,
    pub retrans_seen: u64,
    pub hole_fill: u64,
    pub gaps: u64,
    pub out_of_order: u64,
    pub retransmits: u64,
    pub fast_retransmits: u64,
    pub spurious_retransmits: u64,
    pub rto_retransmits: u64,
    pub dup_acks: u64,
    pub zero_window: u64,
    pub zero_window_events: u64,
    pub zero_window_ns: u64,
    pub ecn_ce: u64,
    /// TCP flows flagged `tcp.path: "one_way"`.
    #[serde(default)]
    pub one_way_flows: u64,
}

impl TcpTotals {
    /// Adds a TCP flow record: both directions and its flow-level signs.
    pub fn add_flow(&mut self, r: &FlowRecord) {
        self.add(&r.c2s);
        self.add(&r.s2c);
        if r.tcp.as_ref().is_some_and(|t| t.path == TcpPath::OneWay) {
            self.one_way_flows = self.one_way_flows.saturating_add(1);
        }
    }

    pub fn add(&mut self, d: &Direction) {
        self.syn = self.syn.saturating_add(d.syn);
        self.synack = self.synack.saturating_add(d.synack);
        self.fin = self.fin.saturating_add(d.fin);
        self.rst = self.rst.saturating_add(d.rst);
        self.retrans_seen = self.retrans_seen.saturating_add(d.retrans_seen);
        self.hole_fill = self.hole_fill.saturating_add(d.hole_fill);
        self.gaps = self.gaps.saturating_add(d.gaps);
        self.out_of_order = self.out_of_order.saturating_add(d.out_of_order);
        self.retransmits = self.retransmits.saturating_add(d.retransmits);
        self.fast_retransmits = self.fast_retransmits.saturating_add(d.fast_retransmits);
        self.spurious_retransmits = self
            .spurious_retransmits
            .saturating_add(d.spurious_retransmits);
        self.rto_retransmits = self.rto_retransmits.saturating_add(d.rto_retransmits);
        self.dup_acks = self.dup_acks.saturating_add(d.dup_acks);
        self.zero_window = self.zero_window.saturating_add(d.zero_window);
        self.zero_window_events = self.zero_window_events.saturating_add(d.zero_window_events);
        self.zero_window_ns = self.zero_window_ns.saturating_add(d.zero_window_ns);
        self.ecn_ce = self.ecn_ce.saturating_add(d.ecn_ce);
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IcmpSummary {
    pub frag_needed: u64,
    pub packet_too_big: u64,
    /// Distinct MTUs announced, ascending.
    pub mtus: Vec<u32>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fragments {
    pub ipv4: u64,
    pub ipv6: u64,
}

/// The closing `{"type":"summary", ...}` object.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    #[serde(rename = "type")]
    pub kind: String,
    pub schema: String,
    /// Every frame read, parsed or not.
    pub packets: u64,
    /// IP (L3) bytes of the parsed packets.
    pub bytes: u64,
    pub first_ns: Option<u64>,
    pub last_ns: Option<u64>,
    pub duration_ns: u64,
    pub flows: FlowCounts,
    pub tcp: TcpTotals,
    pub icmp: IcmpSummary,
    pub fragments: Fragments,
    pub max_packets_1ms: u64,
    pub max_bytes_1ms: u64,
    /// Frames that could not be parsed, by reason.
    pub parse_errors: BTreeMap<String, u64>,
    /// Frames that carry no IP (ARP, LLDP, ...): counted, not analysed.
    pub non_ip: u64,
    pub evicted_flows: u64,
    /// Frames skipped for a link type the parser does not read (e.g. an
    /// 802.11 interface beside an Ethernet one in a pcapng), by the
    /// capture's link type number. Absent when none was skipped, so the
    /// summary of an ordinary capture is what it was before the field.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unsupported_link: BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Totals summed over many flows saturate near `u64::MAX`.
    #[test]
    fn tcp_totals_add_saturates() {
        let d = Direction {
            zero_window_ns: u64::MAX - 1,
            dup_acks: u64::MAX,
            syn: 1,
            ..Direction::default()
        };
        let mut t = TcpTotals::default();
        t.add(&d);
        t.add(&d);
        assert_eq!(t.zero_window_ns, u64::MAX);
        assert_eq!(t.dup_acks, u64::MAX);
        assert_eq!(t.syn, 2);
    }
}
