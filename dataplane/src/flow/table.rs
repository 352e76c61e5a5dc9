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

use std::collections::VecDeque;

use hashbrown::HashTable;

use crate::flow::dir::{bump, DirStats};
use crate::flow::key::{FlowKey, KeyDir, NO_VLAN};
use crate::flow::prefetch::prefetch;
use crate::flow::tcp::{SynOnly, TcpConn};
use crate::meta::{proto, tcp_flags, Frag, PacketMeta};
use crate::report::{
    Endpoint, FlowCounts, FlowRecord, Hol, Pmtu, Proto, TcpInfo, TcpTotals, FLOW_SCHEMA,
};
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

/// No TCP state (the flow is not TCP).
const NO_CONN: u32 = u32::MAX;
/// Set in `Flow::conn`: the index is into the table's [`SynOnly`] slab.
const SYN_ONLY: u32 = 1 << 31;

/// The TCP state of a flow, in whichever form it is held.
#[derive(Clone, Copy, Debug)]
pub enum TcpRef<'a> {
    Conn(&'a TcpConn),
    /// Only a first SYN was seen.
    Syn(&'a SynOnly),
}

impl TcpRef<'_> {
    fn open_stall_ns(self, d: usize) -> u64 {
        match self {
            TcpRef::Conn(c) => c.open_stall_ns(d),
            TcpRef::Syn(_) => 0,
        }
    }

    fn info(self, expired: bool) -> TcpInfo {
        match self {
            TcpRef::Conn(c) => c.info(expired),
            TcpRef::Syn(s) => s.to_conn().info(expired),
        }
    }

    /// Head-of-line times of direction `d` into `h` (a bare SYN has none).
    fn hol(self, d: usize, h: &mut Hol) {
        if let TcpRef::Conn(c) = self {
            c.hol(d, h);
        }
    }

    fn is_one_way(self) -> bool {
        match self {
            TcpRef::Conn(c) => c.is_one_way(),
            TcpRef::Syn(_) => false,
        }
    }

    fn is_closed(self) -> bool {
        match self {
            TcpRef::Conn(c) => c.is_closed(),
            TcpRef::Syn(_) => false,
        }
    }

    /// Only SYNs (and no answer) were seen.
    pub fn is_syn_only(self) -> bool {
        match self {
            TcpRef::Conn(c) => c.is_syn_only(),
            TcpRef::Syn(_) => true,
        }
    }

    fn client_isn(self) -> Option<u32> {
        match self {
            TcpRef::Conn(c) => c.client_isn(),
            TcpRef::Syn(s) => Some(s.client_isn()),
        }
    }

    fn is_late_syn(self, d: usize, seq: u32) -> bool {
        match self {
            TcpRef::Conn(c) => c.is_late_syn(d, seq),
            TcpRef::Syn(_) => false,
        }
    }
}

/// One flow: both directions of a conversation. The TCP state of a TCP flow
/// lives in the table's connection slab (see [`ActiveFlow`] for the view
/// with both).
#[derive(Clone, Debug)]
pub struct Flow {
    pub key: Option<FlowKey>,
    /// The client is the key's `a` endpoint.
    client_is_a: bool,
    /// Index of the flow's [`TcpConn`] in the table's slab, or `NO_CONN`.
    conn: u32,
    pub pmtu_errors: u32,
    pub first_ns: u64,
    pub last_ns: u64,
    /// [client -> server, server -> client]
    pub dirs: [DirStats; 2],
    pub pmtu_min: Option<u32>,
}

impl Default for Flow {
    fn default() -> Self {
        Flow {
            key: None,
            client_is_a: false,
            conn: NO_CONN,
            pmtu_errors: 0,
            first_ns: 0,
            last_ns: 0,
            dirs: Default::default(),
            pmtu_min: None,
        }
    }
}

/// A live flow as [`FlowTable::for_each_active`] shows it: the slot and its
/// TCP state.
#[derive(Clone, Copy, Debug)]
pub struct ActiveFlow<'a> {
    pub flow: &'a Flow,
    /// [client -> server, server -> client]
    pub dirs: &'a [DirStats; 2],
    pub tcp: Option<TcpRef<'a>>,
}

impl ActiveFlow<'_> {
    /// The flow.v1 record. `expired`: it left the table by idle timeout.
    pub fn to_record(&self, expired: bool) -> FlowRecord {
        self.flow.to_record(self.tcp, expired)
    }

    /// Adds this flow to capture-wide totals (what its record would add).
    pub fn add_to_totals(&self, t: &mut TcpTotals, counts: &mut FlowCounts) {
        self.flow.add_to_totals(self.tcp, t, counts)
    }

    /// The record's `proto`.
    pub fn proto(&self) -> Proto {
        self.flow.proto()
    }
}

impl Flow {
    /// A new flow; `conn` is its TCP state's slab index (`NO_CONN` if none).
    fn start(key: FlowKey, kdir: KeyDir, m: &PacketMeta, conn: u32) -> Flow {
        // The client is the SYN sender; a SYN/ACK's receiver; otherwise the
        // sender of the first packet seen.
        let synack = m.is_tcp()
            && m.tcp.flags & (tcp_flags::SYN | tcp_flags::ACK) == (tcp_flags::SYN | tcp_flags::ACK);
        let sender_is_a = kdir == KeyDir::AtoB;
        Flow {
            key: Some(key),
            client_is_a: if synack { !sender_is_a } else { sender_is_a },
            conn,
            first_ns: m.ts_ns,
            last_ns: m.ts_ns,
            ..Flow::default()
        }
    }

    /// 0 if a packet going `kdir` goes client -> server, else 1.
    #[inline]
    fn dir_index(&self, kdir: KeyDir) -> usize {
        usize::from((kdir == KeyDir::AtoB) != self.client_is_a)
    }

    fn idle_timeout(&self, tcp: Option<TcpRef<'_>>, cfg: &TableConfig) -> u64 {
        match (tcp, self.key.map(|k| k.proto)) {
            (Some(t), _) if t.is_closed() => cfg.tcp_closed_ns,
            (Some(t), _) if t.is_syn_only() => cfg.tcp_syn_ns,
            (Some(_), _) => cfg.tcp_idle_ns,
            (None, Some(proto::UDP)) => cfg.udp_idle_ns,
            _ => cfg.other_idle_ns,
        }
    }

    /// The record of a flow that leaves the table, with its RTT histograms
    /// moved out (they merge exactly at the control plane).
    fn take_export(&mut self, tcp: Option<TcpRef<'_>>, expired: bool) -> FlowExport {
        let record = self.to_record(tcp, expired);
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
    fn add_to_totals(&self, tcp: Option<TcpRef<'_>>, t: &mut TcpTotals, counts: &mut FlowCounts) {
        match self.proto() {
            Proto::Tcp => {
                counts.tcp += 1;
                if tcp.is_some_and(|c| c.is_one_way()) {
                    t.one_way_flows = t.one_way_flows.saturating_add(1);
                }
                for d in 0..2 {
                    let stall = tcp.map_or(0, |c| c.open_stall_ns(d));
                    self.dirs[d].add_to_totals(t, stall);
                }
            }
            Proto::Udp => counts.udp += 1,
            Proto::Icmp => counts.icmp += 1,
            Proto::Other => counts.other += 1,
        }
    }

    /// The flow.v1 record. `expired`: it left the table by idle timeout.
    fn to_record(&self, tcp: Option<TcpRef<'_>>, expired: bool) -> FlowRecord {
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
        let dir = |d: usize| {
            let mut r = self.dirs[d].to_report(tcp.map_or(0, |t| t.open_stall_ns(d)));
            if let Some(t) = tcp {
                t.hol(d, &mut r.hol);
            }
            r
        };
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
            c2s: dir(0),
            s2c: dir(1),
            tcp: tcp.map(|t| t.info(expired)),
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

/// The TCP state at `Flow::conn` value `c`.
#[inline]
fn tcp_ref<'a>(conns: &'a [TcpConn], syns: &'a [SynOnly], c: u32) -> Option<TcpRef<'a>> {
    if c == NO_CONN {
        None
    } else if c & SYN_ONLY != 0 {
        syns.get((c & !SYN_ONLY) as usize).map(TcpRef::Syn)
    } else {
        conns.get(c as usize).map(TcpRef::Conn)
    }
}

/// The bounded flow table.
///
/// Layout: `map` holds only slot indices (4 bytes a bucket), found by a
/// keyed hash of the [`FlowKey`] computed once per packet and compared
/// against the key stored in the slot; `slots` hold the flows; TCP flows'
/// [`TcpConn`]s live in a slab of their own (`conns`), so UDP and other
/// flows do not pay for them and no flow allocates.
#[derive(Debug)]
pub struct FlowTable {
    cfg: TableConfig,
    /// Keyed (per-table random) hash: resists crafted collisions.
    hasher: ahash::RandomState,
    map: HashTable<u32>,
    slots: Vec<Flow>,
    /// TCP state of the TCP flows, indexed by `Flow::conn`.
    conns: Vec<TcpConn>,
    free_conns: Vec<u32>,
    /// Connections of which only a first SYN was seen (`Flow::conn` with
    /// `SYN_ONLY` set).
    syns: Vec<SynOnly>,
    free_syns: Vec<u32>,
    /// Generation of each slot, bumped whenever a new flow takes it.
    gens: Vec<u32>,
    free: Vec<u32>,
    /// Flows that began with a bare SYN, oldest first, as (slot, generation):
    /// the first still unanswered one is the eviction victim. Entries whose
    /// flow was answered or left are skipped lazily.
    embryonic: VecDeque<(u32, u32)>,
    cursor: usize,
    /// The shortest idle timeout of any flow: a slot idle for less is not
    /// looked at further by `poll_expired`.
    min_idle_ns: u64,
    evicted: u64,
    created: u64,
}

/// Live slots examined for the longest idle flow when the table is full and
/// no never-answered connection attempt is left to evict.
const EVICT_SCAN: usize = 64;

impl FlowTable {
    pub fn new(cfg: TableConfig) -> FlowTable {
        let cap = cfg.capacity.max(1);
        let min_idle_ns = [
            cfg.tcp_idle_ns,
            cfg.tcp_closed_ns,
            cfg.tcp_syn_ns,
            cfg.udp_idle_ns,
            cfg.other_idle_ns,
        ]
        .into_iter()
        .min()
        .unwrap_or(0);
        FlowTable {
            cfg: TableConfig {
                capacity: cap,
                ..cfg
            },
            hasher: ahash::RandomState::new(),
            map: HashTable::with_capacity(cap.min(1 << 16)),
            slots: Vec::new(),
            conns: Vec::new(),
            free_conns: Vec::new(),
            syns: Vec::new(),
            free_syns: Vec::new(),
            gens: Vec::new(),
            free: Vec::new(),
            embryonic: VecDeque::new(),
            cursor: 0,
            min_idle_ns,
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

    /// The table's hash of `key` (for [`FlowTable::handle_hashed`]).
    #[inline]
    pub fn hash(&self, key: &FlowKey) -> u64 {
        self.hasher.hash_one(key)
    }

    #[inline]
    fn find(&self, hash: u64, key: &FlowKey) -> Option<usize> {
        let slots = &self.slots;
        self.map
            .find(hash, |&i| slots[i as usize].key.as_ref() == Some(key))
            .map(|&i| i as usize)
    }

    /// The TCP state of slot `i`.
    #[inline]
    fn conn(&self, i: usize) -> Option<TcpRef<'_>> {
        self.tcp_ref(self.slots[i].conn)
    }

    /// The TCP state at `Flow::conn` value `c`.
    #[inline]
    fn tcp_ref(&self, c: u32) -> Option<TcpRef<'_>> {
        tcp_ref(&self.conns, &self.syns, c)
    }

    /// The export of slot `i`'s flow (its RTT histograms moved out).
    fn export(&mut self, i: usize, expired: bool) -> FlowExport {
        let tcp = tcp_ref(&self.conns, &self.syns, self.slots[i].conn);
        self.slots[i].take_export(tcp, expired)
    }

    /// New TCP state for a flow whose first packet is `m`: a [`SynOnly`] for
    /// a bare SYN, else a [`TcpConn`].
    fn alloc_tcp(&mut self, m: &PacketMeta) -> u32 {
        if SynOnly::fits(m) {
            let s = SynOnly::new(m);
            match self.free_syns.pop() {
                Some(i) => {
                    self.syns[i as usize] = s;
                    i | SYN_ONLY
                }
                None => {
                    self.syns.push(s);
                    (self.syns.len() - 1) as u32 | SYN_ONLY
                }
            }
        } else {
            self.alloc_conn(TcpConn::default())
        }
    }

    fn alloc_conn(&mut self, c: TcpConn) -> u32 {
        match self.free_conns.pop() {
            Some(i) => {
                self.conns[i as usize] = c;
                i
            }
            None => {
                self.conns.push(c);
                (self.conns.len() - 1) as u32
            }
        }
    }

    /// Frees the TCP state at `Flow::conn` value `c`.
    fn release_tcp(&mut self, c: u32) {
        if c == NO_CONN {
        } else if c & SYN_ONLY != 0 {
            self.free_syns.push(c & !SYN_ONLY);
        } else if let Some(t) = self.conns.get_mut(c as usize) {
            *t = TcpConn::default();
            self.free_conns.push(c);
        }
    }

    /// Prepares [`FlowTable::handle_hashed`] of a packet of `key` that comes
    /// soon (a batch ahead): looks the flow up and asks the CPU to fetch its
    /// slot and TCP state into the cache, so that the lookups of a batch
    /// overlap instead of waiting for memory one after the other. Returns the
    /// slot found, a hint for `handle_hashed`. Changes nothing in the table.
    #[inline]
    pub fn prefetch(&self, hash: u64, key: &FlowKey) -> Option<u32> {
        let i = self.find(hash, key)?;
        let f = &self.slots[i];
        prefetch(&f.dirs, 5);
        if let Some(c) = self.conns.get(f.conn as usize) {
            prefetch(c, 10);
        }
        Some(i as u32)
    }

    /// Feeds one packet (`m.ts_ns` is `now`). Flows that leave the table as a
    /// consequence (eviction, 4-tuple reuse) are passed to `out`.
    #[inline]
    pub fn handle(&mut self, m: &PacketMeta, out: &mut dyn FnMut(FlowExport, Exit)) -> usize {
        let (key, kdir) = FlowKey::of(m);
        let hash = self.hash(&key);
        self.handle_hashed(m, key, kdir, hash, None, out)
    }

    /// [`FlowTable::handle`] with the packet's key, direction and hash
    /// already computed (`FlowKey::of(m)`, [`FlowTable::hash`]). `hint`: the
    /// slot [`FlowTable::prefetch`] found for the key, perhaps since taken by
    /// another flow: used only if the slot still holds the key (keys are
    /// unique in the table, so then it is the flow's slot).
    pub fn handle_hashed(
        &mut self,
        m: &PacketMeta,
        key: FlowKey,
        kdir: KeyDir,
        hash: u64,
        hint: Option<u32>,
        out: &mut dyn FnMut(FlowExport, Exit),
    ) -> usize {
        let now = m.ts_ns;
        let hit = match hint {
            Some(i) if self.slots.get(i as usize).and_then(|f| f.key.as_ref()) == Some(&key) => {
                Some(i as usize)
            }
            _ => self.find(hash, &key),
        };
        let mut created = false;
        let idx = match hit {
            Some(i) => {
                if self.is_late_syn(i, kdir, m) {
                    self.fold_late_syn(i, kdir, now);
                } else if self.is_new_connection(i, m) {
                    out(self.export(i, false), Exit::Replaced);
                    self.release_tcp(self.slots[i].conn);
                    let c = self.alloc_tcp(m);
                    self.slots[i] = Flow::start(key, kdir, m, c);
                    self.gens[i] = self.gens[i].wrapping_add(1);
                    self.note_embryonic(i, m);
                    self.created += 1;
                    created = true;
                }
                i
            }
            None => {
                created = true;
                self.insert(key, kdir, hash, m, out)
            }
        };
        let flow = &mut self.slots[idx];
        let d = flow.dir_index(kdir);
        flow.last_ns = flow.last_ns.max(now);
        let st = &mut flow.dirs[d];
        st.count_packet(now, m.ip_len, m.payload_len);
        st.note_ttl(m.ttl);
        if m.ecn == 3 {
            bump(&mut st.ecn_ce);
        }
        if m.frag != Frag::None {
            bump(&mut st.frags);
        }
        let c = flow.conn;
        if c != NO_CONN && m.is_tcp() {
            if c & SYN_ONLY == 0 {
                if let Some(tcp) = self.conns.get_mut(c as usize) {
                    tcp.handle(now, m, d, &mut flow.dirs);
                }
            } else if created {
                // The bare first SYN the SynOnly holds: its one counter.
                bump(&mut flow.dirs[d].syn);
            } else {
                // A second segment: the connection needs its full state.
                let s = c & !SYN_ONLY;
                let conn = self.syns[s as usize].to_conn();
                self.free_syns.push(s);
                let c = self.alloc_conn(conn);
                let flow = &mut self.slots[idx];
                flow.conn = c;
                self.conns[c as usize].handle(now, m, d, &mut flow.dirs);
            }
        }
        idx
    }

    /// Whether `m` is the SYN of the connection in slot `i`, arriving after
    /// the SYN/ACK that answered it (see [`TcpConn::is_late_syn`]).
    fn is_late_syn(&self, i: usize, kdir: KeyDir, m: &PacketMeta) -> bool {
        m.is_tcp()
            && m.tcp.flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN
            && self
                .conn(i)
                .is_some_and(|t| t.is_late_syn(self.slots[i].dir_index(kdir), m.tcp.seq))
    }

    /// Prepares slot `i` for its late SYN going `kdir` at `now`: the SYN's
    /// sender is the client (the roles guessed from the first packets are
    /// swapped if they disagree), and the flow began no later than the SYN.
    fn fold_late_syn(&mut self, i: usize, kdir: KeyDir, now: u64) {
        let flow = &mut self.slots[i];
        if flow.dir_index(kdir) == 1 {
            flow.client_is_a = !flow.client_is_a;
            flow.dirs.swap(0, 1);
            if flow.conn & SYN_ONLY == 0 {
                if let Some(t) = self.conns.get_mut(flow.conn as usize) {
                    t.swap_sides();
                }
            }
        }
        flow.first_ns = flow.first_ns.min(now);
    }

    /// A SYN on a 4-tuple that carries another connection starts a new flow,
    /// as Wireshark starts a new stream: unless it repeats the client's SYN.
    fn is_new_connection(&self, i: usize, m: &PacketMeta) -> bool {
        if !m.is_tcp() || m.tcp.flags & (tcp_flags::SYN | tcp_flags::ACK) != tcp_flags::SYN {
            return false;
        }
        let Some(tcp) = self.conn(i) else {
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
        hash: u64,
        m: &PacketMeta,
        out: &mut dyn FnMut(FlowExport, Exit),
    ) -> usize {
        if self.map.len() >= self.cfg.capacity {
            let victim = self.pick_victim();
            out(self.export(victim, false), Exit::Evicted);
            self.evicted += 1;
            self.remove(victim);
        }
        let conn = if key.proto == proto::TCP {
            self.alloc_tcp(m)
        } else {
            NO_CONN
        };
        let flow = Flow::start(key, kdir, m, conn);
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
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.map.insert_unique(hash, idx as u32, |&i| {
            // every indexed slot holds its key
            slots[i as usize].key.map_or(0, |k| hasher.hash_one(k))
        });
        self.note_embryonic(idx, m);
        self.created += 1;
        idx
    }

    fn note_embryonic(&mut self, idx: usize, m: &PacketMeta) {
        if m.is_tcp() && m.tcp.flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN {
            if self.embryonic.len() >= 2 * self.cfg.capacity {
                // drop the stale entries so the queue stays bounded
                let mut keep = Vec::with_capacity(self.embryonic.len());
                for &(i, g) in &self.embryonic {
                    if self.gens[i as usize] == g
                        && self.conn(i as usize).is_some_and(|t| t.is_syn_only())
                    {
                        keep.push((i, g));
                    }
                }
                self.embryonic = keep.into();
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
            if self.gens[i] == g
                && self.slots[i].key.is_some()
                && self.conn(i).is_some_and(|t| t.is_syn_only())
            {
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
            let hash = self.hash(&key);
            if let Ok(e) = self.map.find_entry(hash, |&i| i as usize == idx) {
                e.remove();
            }
            self.release_tcp(self.slots[idx].conn);
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
            let f = &self.slots[i];
            // Idle for less than the shortest timeout: not expired, whatever
            // its state (no need to look at its TCP state).
            let idle = now.saturating_sub(f.last_ns);
            if idle > self.min_idle_ns
                && f.key.is_some()
                && idle > f.idle_timeout(self.tcp_ref(f.conn), &self.cfg)
            {
                out(self.export(i, true), Exit::Expired);
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
                out(self.export(i, false), Exit::Drained);
                self.remove(i);
            }
        }
        self.slots.clear();
        self.gens.clear();
        self.free.clear();
        self.conns.clear();
        self.free_conns.clear();
        self.syns.clear();
        self.free_syns.clear();
        self.embryonic.clear();
        self.cursor = 0;
    }

    /// Reads every live flow without removing it.
    pub fn for_each_active(&self, mut f: impl FnMut(&ActiveFlow<'_>)) {
        for s in &self.slots {
            if s.key.is_some() {
                f(&ActiveFlow {
                    flow: s,
                    dirs: &s.dirs,
                    tcp: self.tcp_ref(s.conn),
                });
            }
        }
    }

    /// Reads the live flows of at most `max_slots` slots from slot `start`
    /// on, in slot order; returns the slot to go on from, or `None` once the
    /// end of the table is reached. A walk of a table that does not change
    /// meanwhile sees every live flow exactly once.
    pub fn for_each_active_from(
        &self,
        start: usize,
        max_slots: usize,
        mut f: impl FnMut(&ActiveFlow<'_>),
    ) -> Option<usize> {
        let end = start.saturating_add(max_slots.max(1));
        for s in self.slots.iter().take(end).skip(start) {
            if s.key.is_some() {
                f(&ActiveFlow {
                    flow: s,
                    dirs: &s.dirs,
                    tcp: self.tcp_ref(s.conn),
                });
            }
        }
        (end < self.slots.len()).then_some(end)
    }

    /// The generation of slot `idx` (bumped whenever a new flow takes it):
    /// `(idx, generation)` names one flow for as long as it is in the table.
    #[inline]
    pub fn slot_generation(&self, idx: usize) -> u32 {
        self.gens.get(idx).copied().unwrap_or(0)
    }

    /// The live flow in slot `idx`, if it is still generation `generation`'s.
    pub fn active_at(&self, idx: usize, generation: u32) -> Option<ActiveFlow<'_>> {
        let s = self.slots.get(idx)?;
        (s.key.is_some() && self.gens.get(idx) == Some(&generation)).then(|| ActiveFlow {
            flow: s,
            dirs: &s.dirs,
            tcp: self.tcp_ref(s.conn),
        })
    }

    /// Looks a flow up by key, for ICMP errors that quote it.
    pub fn get_mut(&mut self, key: &FlowKey) -> Option<&mut Flow> {
        let i = self.find(self.hash(key), key)?;
        self.slots.get_mut(i)
    }

    /// Approximate bytes held per flow slot (state, not counting the map).
    pub fn slot_bytes() -> usize {
        std::mem::size_of::<Flow>() + std::mem::size_of::<TcpConn>()
    }

    /// Bytes of one bucket of the key -> slot map (a slot index and
    /// hashbrown's control byte); the map keeps at most 7/8 of them full.
    pub fn map_entry_bytes() -> usize {
        std::mem::size_of::<u32>() + 1
    }
}
