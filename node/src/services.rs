//! Per-service aggregates for `/metrics`: a service is a server `ip:port`
//! and protocol; its counters are the sums over its flows, its RTT the
//! exact merge of its flows' histograms. No per-flow labels ever reach
//! Prometheus.
//!
//! Counters stay monotonic across flow exits: a worker keeps the totals of
//! flows that left its table ([`ServiceTable::add`] at exit) and adds the
//! live flows on top at each export ([`ServiceTable::with_active`]).
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use wirelens_dataplane::report::{FlowRecord, Proto, TcpState};
use wirelens_dataplane::stats::Histogram;

/// A server `ip:port` of one protocol; `ip: None` is the overflow bucket
/// (`_other`) that takes services beyond the table's limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub proto: &'static str,
    pub ip: Option<IpAddr>,
    pub port: u16,
}

impl ServiceKey {
    pub fn of(rec: &FlowRecord) -> ServiceKey {
        ServiceKey {
            proto: proto_name(rec.proto),
            ip: Some(rec.server.ip),
            port: rec.server.port,
        }
    }

    fn overflow(proto: &'static str) -> ServiceKey {
        ServiceKey {
            proto,
            ip: None,
            port: 0,
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            None => f.write_str("_other"),
            Some(IpAddr::V4(a)) => write!(f, "{a}:{}", self.port),
            Some(IpAddr::V6(a)) => write!(f, "[{a}]:{}", self.port),
        }
    }
}

pub fn proto_name(p: Proto) -> &'static str {
    match p {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
        Proto::Icmp => "icmp",
        Proto::Other => "other",
    }
}

/// Direction index: 0 = to the server (c2s), 1 = to the client (s2c).
pub const DIRECTIONS: [&str; 2] = ["to_server", "to_client"];
/// RTT half index: 0 = the server side (c2s data, tap -> server -> tap),
/// 1 = the client side (s2c data, tap -> client -> tap).
pub const HALVES: [&str; 2] = ["server", "client"];

/// What one service's flows add up to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceStats {
    pub flows: u64,
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    pub retransmits: [u64; 2],
    pub retrans_seen: [u64; 2],
    pub hole_fill: [u64; 2],
    pub gaps: [u64; 2],
    pub dup_acks: [u64; 2],
    pub zero_window: [u64; 2],
    pub zero_window_events: [u64; 2],
    /// TCP flows that began with a client SYN.
    pub connection_attempts: u64,
    /// Connection attempts answered with a reset.
    pub connections_refused: u64,
    /// Connections ended by a reset (after being established).
    pub connections_reset: u64,
    pub rtt: [Histogram; 2],
}

impl ServiceStats {
    /// Adds one flow (its record and its RTT histograms [c2s, s2c]).
    pub fn add_flow(&mut self, rec: &FlowRecord, rtt: [&Histogram; 2]) {
        self.flows += 1;
        for (i, d) in [&rec.c2s, &rec.s2c].into_iter().enumerate() {
            self.packets[i] += d.packets;
            self.bytes[i] += d.bytes;
            self.retransmits[i] += d.retransmits;
            self.retrans_seen[i] += d.retrans_seen;
            self.hole_fill[i] += d.hole_fill;
            self.gaps[i] += d.gaps;
            self.dup_acks[i] += d.dup_acks;
            self.zero_window[i] += d.zero_window;
            self.zero_window_events[i] += d.zero_window_events;
            self.rtt[i].merge(rtt[i]);
        }
        if let Some(t) = &rec.tcp {
            if rec.c2s.syn > 0 {
                self.connection_attempts += 1;
            }
            match t.state {
                TcpState::Refused => self.connections_refused += 1,
                TcpState::Reset => self.connections_reset += 1,
                _ => {}
            }
        }
    }

    pub fn merge(&mut self, o: &ServiceStats) {
        self.flows += o.flows;
        for i in 0..2 {
            self.packets[i] += o.packets[i];
            self.bytes[i] += o.bytes[i];
            self.retransmits[i] += o.retransmits[i];
            self.retrans_seen[i] += o.retrans_seen[i];
            self.hole_fill[i] += o.hole_fill[i];
            self.gaps[i] += o.gaps[i];
            self.dup_acks[i] += o.dup_acks[i];
            self.zero_window[i] += o.zero_window[i];
            self.zero_window_events[i] += o.zero_window_events[i];
            self.rtt[i].merge(&o.rtt[i]);
        }
        self.connection_attempts += o.connection_attempts;
        self.connections_refused += o.connections_refused;
        self.connections_reset += o.connections_reset;
    }
}

/// A service none of whose flows was seen for this long gives its place
/// to a new one when the table is full (its series end).
pub const SERVICE_IDLE_NS: u64 = 600 * 1_000_000_000;

/// Services of one worker, bounded: beyond `max` distinct services, a new
/// one takes the place of the service idle longest, if that one has been
/// idle for [`SERVICE_IDLE_NS`]; otherwise it adds up under `_other` (per
/// protocol). So an early port scan does not pin the table until restart.
#[derive(Clone, Debug)]
pub struct ServiceTable {
    map: HashMap<ServiceKey, ServiceStats>,
    /// Last packet time (ns) of each service's flows.
    last: HashMap<ServiceKey, u64>,
    /// No service can be idle enough before this time: a full table
    /// skips the eviction scan until then.
    no_eviction_before: u64,
    max: usize,
}

impl ServiceTable {
    pub fn new(max: usize) -> ServiceTable {
        ServiceTable {
            map: HashMap::new(),
            last: HashMap::new(),
            no_eviction_before: 0,
            max: max.max(1),
        }
    }

    /// The entry of `key`, active at `now` (ns).
    fn slot(&mut self, key: ServiceKey, now: u64) -> &mut ServiceStats {
        let key = if self.map.contains_key(&key) || self.map.len() < self.max || self.evict(now) {
            key
        } else {
            ServiceKey::overflow(key.proto)
        };
        let l = self.last.entry(key).or_insert(now);
        *l = (*l).max(now);
        self.map.entry(key).or_default()
    }

    /// Removes the service idle longest if it has been idle for
    /// SERVICE_IDLE_NS at `now`; whether one was removed.
    fn evict(&mut self, now: u64) -> bool {
        if now < self.no_eviction_before {
            return false;
        }
        let oldest = self
            .last
            .iter()
            .filter(|(k, _)| k.ip.is_some())
            .min_by_key(|(_, &t)| t)
            .map(|(k, &t)| (*k, t));
        match oldest {
            Some((k, t)) if t.saturating_add(SERVICE_IDLE_NS) <= now => {
                self.map.remove(&k);
                self.last.remove(&k);
                true
            }
            Some((_, t)) => {
                self.no_eviction_before = t.saturating_add(SERVICE_IDLE_NS);
                false
            }
            None => false,
        }
    }

    /// Adds one flow.
    pub fn add(&mut self, rec: &FlowRecord, rtt: [&Histogram; 2]) {
        self.slot(ServiceKey::of(rec), rec.last_ns)
            .add_flow(rec, rtt);
    }

    /// Adds another table (e.g. another worker's) into this one.
    pub fn merge(&mut self, o: &ServiceTable) {
        for (k, v) in &o.map {
            let now = o.last.get(k).copied().unwrap_or(0);
            self.slot(*k, now).merge(v);
        }
    }

    /// This table plus the live flows `each` yields (the exited totals are
    /// not changed).
    pub fn with_active(
        &self,
        each: impl FnOnce(&mut dyn FnMut(&FlowRecord, [&Histogram; 2])),
    ) -> ServiceTable {
        let mut t = self.clone();
        each(&mut |rec, rtt| t.add(rec, rtt));
        t
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Services in a stable order (by key).
    pub fn sorted(&self) -> Vec<(&ServiceKey, &ServiceStats)> {
        let mut v: Vec<_> = self.map.iter().collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wirelens_dataplane::report::{Direction, Endpoint, TcpInfo};

    fn rec(server: &str, port: u16, pk: u64, state: TcpState) -> FlowRecord {
        FlowRecord {
            kind: "flow".into(),
            schema: "wirelens.flow.v1".into(),
            proto: Proto::Tcp,
            client: Endpoint {
                ip: "198.18.1.2".parse().unwrap(),
                port: 40000,
            },
            server: Endpoint {
                ip: server.parse().unwrap(),
                port,
            },
            vlan: None,
            first_ns: 1,
            last_ns: 2,
            c2s: Direction {
                packets: pk,
                syn: 1,
                retransmits: 2,
                ..Direction::default()
            },
            s2c: Direction {
                packets: pk + 1,
                ..Direction::default()
            },
            tcp: Some(TcpInfo {
                handshake: None,
                state,
                rst_from: None,
                mss: Default::default(),
                wscale: Default::default(),
                sack_ok: false,
                ts_ok: false,
                ecn_ok: false,
                path: Default::default(),
                mss_clamped: Default::default(),
                ecn_bleached: Default::default(),
            }),
            pmtu: None,
        }
    }

    /// A full table: a new service overflows while the others are fresh,
    /// and takes the place of the one idle longest once it has been idle
    /// SERVICE_IDLE_NS.
    #[test]
    fn idle_services_give_their_place_to_new_ones() {
        let e = Histogram::new();
        let at = |server: &str, last_ns: u64| {
            let mut r = rec(server, 80, 1, TcpState::Closed);
            r.last_ns = last_ns;
            r
        };
        let mut t = ServiceTable::new(2);
        t.add(&at("198.18.2.1", 1_000), [&e, &e]);
        t.add(&at("198.18.2.2", 2_000), [&e, &e]);
        t.add(&at("198.18.2.3", 3_000), [&e, &e]);
        let names = |t: &ServiceTable| -> Vec<String> {
            t.sorted().iter().map(|(k, _)| k.to_string()).collect()
        };
        assert_eq!(names(&t), ["_other", "198.18.2.1:80", "198.18.2.2:80"]);
        // .1 is active again: .2 is now the one idle longest.
        t.add(&at("198.18.2.1", SERVICE_IDLE_NS), [&e, &e]);
        t.add(&at("198.18.2.4", SERVICE_IDLE_NS + 1_999), [&e, &e]);
        assert_eq!(
            names(&t),
            ["_other", "198.18.2.1:80", "198.18.2.2:80"],
            "not idle long enough yet"
        );
        t.add(&at("198.18.2.4", SERVICE_IDLE_NS + 2_000), [&e, &e]);
        assert_eq!(names(&t), ["_other", "198.18.2.1:80", "198.18.2.4:80"]);
        assert_eq!(t.len(), 3);
        assert_eq!(
            t.sorted()[0].1.flows,
            2,
            "_other keeps what overflowed (.3 and the first .4)"
        );
    }

    #[test]
    fn aggregates_per_service_and_bounds_the_table() {
        let mut h = Histogram::new();
        h.record(2_000_000);
        let e = Histogram::new();
        let mut t = ServiceTable::new(2);
        t.add(&rec("198.18.2.2", 80, 10, TcpState::Closed), [&h, &e]);
        t.add(&rec("198.18.2.2", 80, 5, TcpState::Refused), [&h, &e]);
        t.add(&rec("2001:db8::1", 443, 1, TcpState::Reset), [&e, &e]);
        t.add(&rec("198.18.2.3", 80, 7, TcpState::Closed), [&e, &h]);
        let v = t.sorted();
        assert_eq!(v.len(), 3);
        let names: Vec<String> = v.iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(names, ["_other", "198.18.2.2:80", "[2001:db8::1]:443"]);
        let s = v[1].1;
        assert_eq!(s.flows, 2);
        assert_eq!(s.packets, [15, 17]);
        assert_eq!(s.retransmits, [4, 0]);
        assert_eq!(s.connection_attempts, 2);
        assert_eq!(s.connections_refused, 1);
        assert_eq!(s.rtt[0].count(), 2);
        assert_eq!(v[0].1.packets, [7, 8], "the third service overflowed");

        let live =
            t.with_active(|add| add(&rec("198.18.2.2", 80, 1, TcpState::Established), [&e, &e]));
        assert_eq!(live.sorted()[1].1.flows, 3);
        assert_eq!(t.sorted()[1].1.flows, 2, "exited totals unchanged");
    }
}
