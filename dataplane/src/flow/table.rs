//! The per-core flow table: bounded, lock-free by ownership (one worker owns
//! one table), sans-IO (time comes in as `now`).
//!
//! Call order, per packet: [`FlowTable::handle`]; every so often
//! [`FlowTable::poll_expired`] (idle timeouts); at the end of input
//! [`FlowTable::drain`]. Flows that leave the table — expired, evicted,
//! replaced by a new connection on the same 4-tuple, drained — come out as
//! [`FlowExport`]s through the `out` callback; nothing is lost silently.
//! [`FlowTable::for_each_active`] reads live flows without removing them.
#![forbid(unsafe_code)]

use std::collections::{HashMap, VecDeque};

use crate::flow::dir::{bump, DirStats};
use crate::flow::key::{FlowKey, KeyDir, NO_VLAN};
use crate::flow::tcp::TcpConn;
use crate::meta::{proto, tcp_flags, Frag, PacketMeta};
use crate::report::{Endpoint, FlowCounts, FlowRecord, Pmtu, Proto, TcpTotals, FLOW_SCHEMA};
use crate::stats::Histogram;

/// Limits and timeouts of a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableConfig {
    /// Most flows held at once; a new flow beyond it evicts one (counted).
    pub capacity: usize,
    /// Idle timeout of an established TCP connection.
    pub tcp_idle_ns: u64,
    /// How long a closed / reset / refused connection stays before export
    /// (late packets and retransmitted FINs still find it).
    pub tcp_closed_ns: u64,
    /// Idle timeout of a connection attempt that was never answered.
    pub tcp_syn_ns: u64,
    pub udp_idle_ns: u64,
    pub other_idle_ns: u64,
}

const SEC: u64 = 1_000_000_000;

impl Default for TableConfig {
    fn default() -> Self {
        TableConfig {
            capacity: 1 << 20,
            tcp_idle_ns: 300 * SEC,
            tcp_closed_ns: 10 * SEC,
            tcp_syn_ns: 30 * SEC,
            udp_idle_ns: 60 * SEC,
            other_idle_ns: 60 * SEC,
        }
    }
}

/// One flow: both directions of a conversation.
#[derive(Clone, Debug, Default)]
pub struct Flow {
    pub key: Option<FlowKey>,
    /// The client is the key's `a` endpoint.
    client_is_a: bool,
    pub first_ns: u64,
    pub last_ns: u64,
    /// [client -> server, server -> client]
    pub dirs: [DirStats; 2],
    pub tcp: Option<Box<TcpConn>>,
    pub pmtu_errors: u32,
    pub pmtu_min: Option<u32>,
}

impl Flow {
    fn start(key: FlowKey, kdir: KeyDir, m: &PacketMeta) -> Flow {
        // The client is the SYN sender; a SYN/ACK's receiver; otherwise the
        // sender of the first packet seen.
        let synack = m.is_tcp()
            && m.tcp.flags & (tcp_flags::SYN | tcp_flags::ACK) == (tcp_flags::SYN | tcp_flags::ACK);
        let sender_is_a = kdir == KeyDir::AtoB;
        Flow {
            key: Some(key),
            client_is_a: if synack { !sender_is_a } else { sender_is_a },
            first_ns: m.ts_ns,
            last_ns: m.ts_ns,
            tcp: (key.proto == proto::TCP).then(Box::default),
            ..Flow::default()
        }
    }

    /// 0 if a packet going `kdir` goes client -> server, else 1.
    #[inline]
    fn dir_index(&self, kdir: KeyDir) -> usize {
        usize::from((kdir == KeyDir::AtoB) != self.client_is_a)
    }

    fn is_syn_only(&self) -> bool {
        self.tcp.as_ref().is_some_and(|t| t.is_syn_only())
    }

    fn idle_timeout(&self, cfg: &TableConfig) -> u64 {
        match (&self.tcp, self.key.map(|k| k.proto)) {
            (Some(t), _) if t.is_closed() => cfg.tcp_closed_ns,
            (Some(t), _) if t.is_syn_only() => cfg.tcp_syn_ns,
            (Some(_), _) => cfg.tcp_idle_ns,
            (None, Some(proto::UDP)) => cfg.udp_idle_ns,
            _ => cfg.other_idle_ns,
        }
    }

    /// The record of a flow that leaves the table, with its RTT histograms
    /// moved out (they merge exactly at the control plane).
    fn take_export(&mut self, expired: bool) -> FlowExport {
        let record = self.to_record(expired);
        let rtt = [
            std::mem::take(&mut self.dirs[0].rtt),
            std::mem::take(&mut self.dirs[1].rtt),
        ];
        FlowExport { record, rtt }
    }

    /// The record's `proto`.
    pub fn proto(&self) -> Proto {
        match self.key.map_or(0, |k| k.proto) {
            proto::TCP => Proto::Tcp,
            proto::UDP => Proto::Udp,
            proto::ICMP | proto::ICMPV6 => Proto::Icmp,
            _ => Proto::Other,
        }
    }

    /// Adds this flow to capture-wide totals (what its record would add).
    pub fn add_to_totals(&self, t: &mut TcpTotals, counts: &mut FlowCounts) {
        match self.proto() {
            Proto::Tcp => {
                counts.tcp += 1;
                for d in 0..2 {
                    let stall = self.tcp.as_ref().map_or(0, |c| c.open_stall_ns(d));
                    self.dirs[d].add_to_totals(t, stall);
                }
            }
            Proto::Udp => counts.udp += 1,
            Proto::Icmp => counts.icmp += 1,
            Proto::Other => counts.other += 1,
        }
    }

    /// The flow.v1 record. `expired`: it left the table by idle timeout.
    pub fn to_record(&self, expired: bool) -> FlowRecord {
        let key = self.key.unwrap_or(FlowKey {
            a: Default::default(),
            b: Default::default(),
            port_a: 0,
            port_b: 0,
            proto: 0,
            v6: false,
            vlan: NO_VLAN,
        });
        let (c, cp, s, sp) = if self.client_is_a {
            (key.a, key.port_a, key.b, key.port_b)
        } else {
            (key.b, key.port_b, key.a, key.port_a)
        };
        let proto = self.proto();
        let stall = |d: usize| self.tcp.as_ref().map_or(0, |t| t.open_stall_ns(d));
        FlowRecord {
            kind: "flow".into(),
            schema: FLOW_SCHEMA.into(),
            proto,
            client: Endpoint {
                ip: c.to_ip(),
                port: cp,
            },
            server: Endpoint {
                ip: s.to_ip(),
                port: sp,
            },
            vlan: (key.vlan != NO_VLAN).then_some(key.vlan),
            first_ns: self.first_ns,
            last_ns: self.last_ns,
            c2s: self.dirs[0].to_report(stall(0)),
            s2c: self.dirs[1].to_report(stall(1)),
            tcp: self.tcp.as_ref().map(|t| t.info(expired)),
            pmtu: (self.pmtu_errors > 0).then(|| Pmtu {
                icmp_errors: self.pmtu_errors.into(),
                mtu: self.pmtu_min,
            }),
        }
    }
}

/// A flow that left the table: its record and its RTT histograms
/// ([client -> server data, server -> client data]).
#[derive(Clone, Debug)]
pub struct FlowExport {
    pub record: FlowRecord,
    pub rtt: [Histogram; 2],
}

/// Why a flow left the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Expired,
    Evicted,
    /// A new connection (SYN with a new ISN) reused its 4-tuple.
    Replaced,
    Drained,
}

/// Fast keyed hasher state for the map (resists crafted collisions).
type Map = HashMap<FlowKey, u32, ahash::RandomState>;

/// The bounded flow table.
#[derive(Debug)]
pub struct FlowTable {
    cfg: TableConfig,
    map: Map,
    slots: Vec<Flow>,
    /// Generation of each slot, bumped whenever a new flow takes it.
    gens: Vec<u32>,
    free: Vec<u32>,
    /// Flows that began with a bare SYN, oldest first, as (slot, generation):
    /// the first still unanswered one is the eviction victim. Entries whose
    /// flow was answered or left are skipped lazily.
    embryonic: VecDeque<(u32, u32)>,
    cursor: usize,
    evicted: u64,
    created: u64,
}

/// Live slots examined for the longest idle flow when the table is full and
/// no never-answered connection attempt is left to evict.
const EVICT_SCAN: usize = 64;

impl FlowTable {
    pub fn new(cfg: TableConfig) -> FlowTable {
        let cap = cfg.capacity.max(1);
        FlowTable {
            cfg: TableConfig {
                capacity: cap,
                ..cfg
            },
            map: Map::with_capacity_and_hasher(cap.min(1 << 16), ahash::RandomState::new()),
            slots: Vec::new(),
            gens: Vec::new(),
            free: Vec::new(),
            embryonic: VecDeque::new(),
            cursor: 0,
            evicted: 0,
            created: 0,
        }
    }

    pub fn config(&self) -> &TableConfig {
        &self.cfg
    }

    /// Flows held now.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Flows evicted because the table was full.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Flows created since the start.
    pub fn created(&self) -> u64 {
        self.created
    }

    /// Feeds one packet (`m.ts_ns` is `now`). Flows that leave the table as a
    /// consequence (eviction, 4-tuple reuse) are passed to `out`.
    pub fn handle(&mut self, m: &PacketMeta, out: &mut dyn FnMut(FlowExport, Exit)) -> usize {
        let now = m.ts_ns;
        let (key, kdir) = FlowKey::of(m);
        let idx = match self.map.get(&key) {
            Some(&i) => {
                let i = i as usize;
                if self.is_new_connection(i, m) {
                    out(self.slots[i].take_export(false), Exit::Replaced);
                    self.slots[i] = Flow::start(key, kdir, m);
                    self.gens[i] = self.gens[i].wrapping_add(1);
                    self.note_embryonic(i, m);
                    self.created += 1;
                }
                i
            }
            None => self.insert(key, kdir, m, out),
        };
        let flow = &mut self.slots[idx];
        let d = flow.dir_index(kdir);
        flow.last_ns = flow.last_ns.max(now);
        let st = &mut flow.dirs[d];
        st.count_packet(now, m.ip_len, m.payload_len);
        if m.ecn == 3 {
            bump(&mut st.ecn_ce);
        }
        if m.frag != Frag::None {
            bump(&mut st.frags);
        }
        if let Some(tcp) = flow.tcp.as_mut() {
            if m.is_tcp() {
                tcp.handle(now, m, d, &mut flow.dirs);
            }
        }
        idx
    }

    /// A SYN on a 4-tuple that carries another connection starts a new flow,
    /// as Wireshark starts a new stream: unless it repeats the client's SYN.
    fn is_new_connection(&self, i: usize, m: &PacketMeta) -> bool {
        if !m.is_tcp() || m.tcp.flags & (tcp_flags::SYN | tcp_flags::ACK) != tcp_flags::SYN {
            return false;
        }
        let Some(tcp) = self.slots[i].tcp.as_ref() else {
            return false;
        };
        match tcp.client_isn() {
            Some(isn) => isn != m.tcp.seq,
            None => true,
        }
    }

    fn insert(
        &mut self,
        key: FlowKey,
        kdir: KeyDir,
        m: &PacketMeta,
        out: &mut dyn FnMut(FlowExport, Exit),
    ) -> usize {
        if self.map.len() >= self.cfg.capacity {
            let victim = self.pick_victim();
            out(self.slots[victim].take_export(false), Exit::Evicted);
            self.evicted += 1;
            self.remove(victim);
        }
        let flow = Flow::start(key, kdir, m);
        let idx = match self.free.pop() {
            Some(i) => {
                let i = i as usize;
                self.slots[i] = flow;
                self.gens[i] = self.gens[i].wrapping_add(1);
                i
            }
            None => {
                self.slots.push(flow);
                self.gens.push(0);
                self.slots.len() - 1
            }
        };
        self.map.insert(key, idx as u32);
        self.note_embryonic(idx, m);
        self.created += 1;
        idx
    }

    fn note_embryonic(&mut self, idx: usize, m: &PacketMeta) {
        if m.is_tcp() && m.tcp.flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN {
            if self.embryonic.len() >= 2 * self.cfg.capacity {
                // drop the stale entries so the queue stays bounded
                let (slots, gens) = (&self.slots, &self.gens);
                self.embryonic
                    .retain(|&(i, g)| gens[i as usize] == g && slots[i as usize].is_syn_only());
            }
            self.embryonic.push_back((idx as u32, self.gens[idx]));
        }
    }

    /// Chooses the flow to evict: the oldest never-answered connection
    /// attempt (a SYN flood must not push out healthy flows); when there is
    /// none, the longest idle among a window of live slots.
    fn pick_victim(&mut self) -> usize {
        while let Some((i, g)) = self.embryonic.pop_front() {
            let i = i as usize;
            if self.gens[i] == g && self.slots[i].key.is_some() && self.slots[i].is_syn_only() {
                return i;
            }
        }
        let n = self.slots.len();
        let mut oldest: Option<(u64, usize)> = None;
        let mut seen = 0;
        let mut i = self.cursor % n;
        for _ in 0..n {
            let f = &self.slots[i];
            if f.key.is_some() {
                if oldest.is_none_or(|(t, _)| f.last_ns < t) {
                    oldest = Some((f.last_ns, i));
                }
                seen += 1;
                if seen == EVICT_SCAN {
                    break;
                }
            }
            i = (i + 1) % n;
        }
        self.cursor = (i + 1) % n;
        oldest.map_or(0, |(_, i)| i)
    }

    fn remove(&mut self, idx: usize) {
        if let Some(key) = self.slots[idx].key.take() {
            self.map.remove(&key);
            self.slots[idx] = Flow::default();
            self.free.push(idx as u32);
        }
    }

    /// Exports flows idle past their timeout. Scans at most `budget` slots per
    /// call from where the last call stopped, so the cost per call is bounded.
    pub fn poll_expired(
        &mut self,
        now: u64,
        budget: usize,
        out: &mut dyn FnMut(FlowExport, Exit),
    ) -> usize {
        let n = self.slots.len();
        if n == 0 {
            return 0;
        }
        let mut expired = 0;
        let mut i = self.cursor % n;
        for _ in 0..budget.min(n) {
            let f = &mut self.slots[i];
            if f.key.is_some() && now.saturating_sub(f.last_ns) > f.idle_timeout(&self.cfg) {
                out(f.take_export(true), Exit::Expired);
                self.remove(i);
                expired += 1;
            }
            i = (i + 1) % n;
        }
        self.cursor = i;
        expired
    }

    /// Exports and removes every flow (end of input).
    pub fn drain(&mut self, out: &mut dyn FnMut(FlowExport, Exit)) {
        for i in 0..self.slots.len() {
            if self.slots[i].key.is_some() {
                out(self.slots[i].take_export(false), Exit::Drained);
                self.remove(i);
            }
        }
        self.slots.clear();
        self.gens.clear();
        self.free.clear();
        self.embryonic.clear();
        self.cursor = 0;
    }

    /// Reads every live flow without removing it.
    pub fn for_each_active(&self, mut f: impl FnMut(&Flow)) {
        for s in &self.slots {
            if s.key.is_some() {
                f(s);
            }
        }
    }

    /// Looks a flow up by key, for ICMP errors that quote it.
    pub fn get_mut(&mut self, key: &FlowKey) -> Option<&mut Flow> {
        let i = *self.map.get(key)? as usize;
        self.slots.get_mut(i)
    }

    /// Approximate bytes held per flow slot (state, not counting the map).
    pub fn slot_bytes() -> usize {
        std::mem::size_of::<Flow>() + std::mem::size_of::<TcpConn>()
    }
}
