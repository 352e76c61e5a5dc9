//! The engine: parser + flow table + capture-wide summary, sans-IO.
//!
//! Methods by group, in call order:
//! * inputs: [`Engine::handle_frame`] (a raw frame) or [`Engine::handle_meta`]
//!   (an already parsed packet, e.g. handed over from another core), or
//!   [`Engine::handle_metas`] (many parsed packets, with their flows looked
//!   up and prefetched ahead);
//! * timers: [`Engine::poll_expired`] exports idle flows (the engine also does
//!   a bounded amount of this by itself every 1024 packets);
//! * outputs: [`Engine::poll_record`] yields the records of flows that left the
//!   table; [`Engine::finish`] exports all remaining flows at the end of input;
//!   [`Engine::summary`] and [`Engine::for_each_active`] read without removing.
//!
//! Nothing here reads a clock, a socket or a file: `now` is the packet's
//! timestamp, so a pcap replays exactly as it was captured.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::flow::frag::FragPorts;
use crate::flow::key::{FlowKey, KeyDir};
use crate::flow::table::{ActiveFlow, Exit, FlowExport, FlowTable, TableConfig};
use crate::meta::{Frag, PacketMeta};
use crate::report::{FlowCounts, FlowRecord, Fragments, IcmpSummary, Proto, Summary, TcpTotals};
use crate::stats::BurstMeter;
use crate::wire::{self, LinkType, ParseError};

/// Engine settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineConfig {
    pub table: TableConfig,
}

/// Distinct announced MTUs kept for the summary (bounded: hostile traffic
/// could announce every value).
const MAX_MTUS: usize = 64;
/// Packets between two automatic expiry passes, and slots scanned per pass.
const EXPIRE_EVERY: u32 = 1024;
const EXPIRE_BUDGET: usize = 2048;
/// Packets whose flows [`Engine::handle_metas`] looks up ahead at once.
pub const BATCH: usize = 64;

/// What [`Engine::handle_metas`] computes of a packet ahead of its analysis:
/// its flow key and direction, the key's hash, and the slot
/// [`FlowTable::prefetch`] found (a hint).
#[derive(Clone, Copy)]
struct Prepared {
    key: FlowKey,
    kdir: KeyDir,
    hash: u64,
    hint: Option<u32>,
}

/// One engine per worker core.
#[derive(Debug)]
pub struct Engine {
    /// The frame being parsed (reused: `wire::parse` fills it in place).
    meta: PacketMeta,
    core: Core,
}

/// Everything but the parse buffer, so that a parsed packet is analysed by
/// reference, never copied.
#[derive(Debug)]
struct Core {
    table: FlowTable,
    done: VecDeque<FlowExport>,
    frames: u64,
    bytes: u64,
    first_ns: Option<u64>,
    last_ns: u64,
    parse_errors: [u64; ParseError::COUNT],
    non_ip: u64,
    /// Frames of link types the parser does not read, by link type.
    unsupported_link: BTreeMap<u32, u64>,
    burst: BurstMeter,
    fragments: Fragments,
    frag_needed: u64,
    packet_too_big: u64,
    mtus: BTreeSet<u32>,
    frags: FragPorts,
    /// Totals of the flows that already left the table.
    exited_tcp: TcpTotals,
    exited_flows: FlowCounts,
    since_expiry: u32,
    /// With [`Engine::track_touched`]: the flows that saw a packet since the
    /// last [`Engine::take_touched`].
    touched: Option<Touched>,
}

/// The flows that saw a packet in the current interval, each once: a list
/// of `(slot, generation)` and, per slot, the mark of the interval and
/// generation it was listed in. Costs 8 bytes per table slot plus 8 per
/// flow active in the interval; idle flows cost nothing per interval.
#[derive(Debug, Default)]
struct Touched {
    epoch: u32,
    marks: Vec<(u32, u32)>,
    list: Vec<(u32, u32)>,
}

impl Touched {
    #[inline]
    fn mark(&mut self, idx: usize, generation: u32) {
        if self.marks.len() <= idx {
            self.marks.resize(idx + 1, (u32::MAX, 0));
        }
        let m = (self.epoch, generation);
        if self.marks[idx] != m {
            self.marks[idx] = m;
            self.list.push((idx as u32, generation));
        }
    }
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Engine {
        Engine {
            meta: PacketMeta::default(),
            core: Core {
                table: FlowTable::new(cfg.table),
                done: VecDeque::new(),
                frames: 0,
                bytes: 0,
                first_ns: None,
                last_ns: 0,
                parse_errors: [0; ParseError::COUNT],
                non_ip: 0,
                unsupported_link: BTreeMap::new(),
                burst: BurstMeter::default(),
                fragments: Fragments::default(),
                frag_needed: 0,
                packet_too_big: 0,
                mtus: BTreeSet::new(),
                frags: FragPorts::new(),
                exited_tcp: TcpTotals::default(),
                exited_flows: FlowCounts::default(),
                since_expiry: 0,
                touched: None,
            },
        }
    }

    /// Parses and analyses one frame captured at `now` (ns since the epoch).
    /// A frame that cannot be parsed is counted by reason.
    pub fn handle_frame(&mut self, now: u64, link: LinkType, frame: &[u8]) {
        let c = &mut self.core;
        c.frames += 1;
        c.first_ns.get_or_insert(now);
        c.last_ns = c.last_ns.max(now);
        self.meta.ts_ns = now;
        match wire::parse(link, frame, &mut self.meta) {
            Ok(()) => c.analyze(&self.meta, None),
            Err(ParseError::NonIp) => c.non_ip += 1,
            Err(e) => c.parse_errors[e.index()] += 1,
        }
    }

    /// Analyses a packet parsed elsewhere (the frame was counted there).
    #[inline]
    pub fn handle_meta(&mut self, m: &PacketMeta) {
        let c = &mut self.core;
        c.last_ns = c.last_ns.max(m.ts_ns);
        c.analyze(m, None);
    }

    /// Analyses packets parsed elsewhere, in order: the same as
    /// [`Engine::handle_meta`] on each, faster. Per group of [`BATCH`]
    /// packets it first computes each flow key's hash and prefetches the
    /// flow's state ([`FlowTable::prefetch`]), so that the cache misses of
    /// the group overlap, then analyses the packets reusing the hashes.
    pub fn handle_metas(&mut self, metas: &[PacketMeta]) {
        let c = &mut self.core;
        for chunk in metas.chunks(BATCH) {
            let mut pre: [Option<Prepared>; BATCH] = [None; BATCH];
            for (m, p) in chunk.iter().zip(pre.iter_mut()) {
                // A fragment's key is known only after its ports are learnt.
                if m.frag == Frag::None {
                    let (key, kdir) = FlowKey::of(m);
                    let hash = c.table.hash(&key);
                    let hint = c.table.prefetch(hash, &key);
                    *p = Some(Prepared {
                        key,
                        kdir,
                        hash,
                        hint,
                    });
                }
            }
            for (m, &p) in chunk.iter().zip(pre.iter()) {
                c.last_ns = c.last_ns.max(m.ts_ns);
                c.analyze(m, p);
            }
        }
    }

    /// Counts a frame that another core parsed and handed to this engine's
    /// owner, or that failed to parse there (`Err`).
    #[inline]
    pub fn count_frame(&mut self, now: u64, parsed: Result<(), ParseError>) {
        let c = &mut self.core;
        c.frames += 1;
        c.first_ns.get_or_insert(now);
        c.last_ns = c.last_ns.max(now);
        match parsed {
            Ok(()) => {}
            Err(ParseError::NonIp) => c.non_ip += 1,
            Err(e) => c.parse_errors[e.index()] += 1,
        }
    }

    /// Counts a frame captured at `now` on an interface whose link type
    /// (`linktype`, the capture's number) the parser does not read: skipped,
    /// counted in the summary by link type.
    pub fn count_unsupported_link(&mut self, now: u64, linktype: u32) {
        let c = &mut self.core;
        c.frames = c.frames.saturating_add(1);
        c.first_ns.get_or_insert(now);
        c.last_ns = c.last_ns.max(now);
        let n = c.unsupported_link.entry(linktype).or_default();
        *n = n.saturating_add(1);
    }

    /// Exports flows idle past their timeout at `now`, scanning at most
    /// `budget` slots.
    pub fn poll_expired(&mut self, now: u64, budget: usize) -> usize {
        self.core.poll_expired(now, budget)
    }

    /// The next record of a flow that left the table.
    pub fn poll_record(&mut self) -> Option<FlowRecord> {
        self.core.done.pop_front().map(|e| e.record)
    }

    /// The next flow that left the table, with its RTT histograms (what a
    /// node sends to the control plane, where histograms merge exactly).
    pub fn poll_export(&mut self) -> Option<FlowExport> {
        self.core.done.pop_front()
    }

    /// End of input: every remaining flow becomes a record (see `poll_record`).
    pub fn finish(&mut self) {
        let mut done = std::mem::take(&mut self.core.done);
        self.core.finish_each(&mut |rec| done.push_back(rec));
        self.core.done = done;
    }

    /// End of input, streaming: first the flows that already left the table
    /// and were not polled yet, then every remaining flow, each passed to `f`
    /// as soon as it is built, in the order [`Engine::finish`] then
    /// [`Engine::poll_export`] would give them. Only one record exists at a
    /// time, so the end of a capture with a million live flows does not hold
    /// a million records at once.
    pub fn finish_each(&mut self, mut f: impl FnMut(FlowExport)) {
        while let Some(rec) = self.core.done.pop_front() {
            f(rec);
        }
        self.core.finish_each(&mut f);
    }

    /// From now on, remembers which flows see packets, for
    /// [`Engine::take_touched`] (interval records).
    pub fn track_touched(&mut self) {
        self.core.touched.get_or_insert_with(Touched::default);
    }

    /// Passes each live flow that saw a packet since the previous call (or
    /// since [`Engine::track_touched`]) to `f`, once, in the order they were
    /// first touched, and starts a new interval. Flows that left the table
    /// meanwhile are skipped (their exports carry them).
    pub fn take_touched(&mut self, mut f: impl FnMut(&ActiveFlow<'_>)) {
        let Some(t) = self.core.touched.as_mut() else {
            return;
        };
        for &(idx, generation) in &t.list {
            if let Some(a) = self.core.table.active_at(idx as usize, generation) {
                f(&a);
            }
        }
        t.list.clear();
        t.epoch = t.epoch.wrapping_add(1);
        if t.epoch == u32::MAX {
            // u32::MAX marks "never listed": start the marks over.
            t.epoch = 0;
            t.marks.iter_mut().for_each(|m| *m = (u32::MAX, 0));
        }
    }

    /// Reads live flows without removing them.
    pub fn for_each_active(&self, f: impl FnMut(&ActiveFlow<'_>)) {
        self.core.table.for_each_active(f);
    }

    /// A bounded part of [`Engine::for_each_active`]; see
    /// [`FlowTable::for_each_active_from`].
    pub fn for_each_active_from(
        &self,
        start: usize,
        max_slots: usize,
        f: impl FnMut(&ActiveFlow<'_>),
    ) -> Option<usize> {
        self.core.table.for_each_active_from(start, max_slots, f)
    }

    pub fn table(&self) -> &FlowTable {
        &self.core.table
    }

    /// Frames seen.
    pub fn frames(&self) -> u64 {
        self.core.frames
    }

    /// The capture-wide summary, including flows still in the table.
    pub fn summary(&self) -> Summary {
        let c = &self.core;
        let mut tcp = c.exited_tcp;
        let mut flows = c.exited_flows;
        c.table
            .for_each_active(|f| f.add_to_totals(&mut tcp, &mut flows));
        let parse_errors: BTreeMap<String, u64> = ParseError::ALL
            .iter()
            .filter(|e| **e != ParseError::NonIp && c.parse_errors[e.index()] > 0)
            .map(|e| (e.as_str().to_string(), c.parse_errors[e.index()]))
            .collect();
        Summary {
            kind: "summary".into(),
            schema: crate::report::FLOW_SCHEMA.into(),
            packets: c.frames,
            bytes: c.bytes,
            first_ns: c.first_ns,
            last_ns: c.first_ns.map(|_| c.last_ns),
            duration_ns: c.first_ns.map_or(0, |f| c.last_ns.saturating_sub(f)),
            flows,
            tcp,
            icmp: IcmpSummary {
                frag_needed: c.frag_needed,
                packet_too_big: c.packet_too_big,
                mtus: c.mtus.iter().copied().collect(),
            },
            fragments: c.fragments,
            max_packets_1ms: c.burst.max_packets(),
            max_bytes_1ms: c.burst.max_bytes(),
            parse_errors,
            non_ip: c.non_ip,
            evicted_flows: c.table.evicted(),
            unsupported_link: c
                .unsupported_link
                .iter()
                .map(|(k, n)| (k.to_string(), *n))
                .collect(),
        }
    }
}

impl Core {
    fn finish_each(&mut self, f: &mut dyn FnMut(FlowExport)) {
        let totals = &mut self.exited_tcp;
        let counts = &mut self.exited_flows;
        self.table.drain(&mut |rec, exit| {
            debug_assert_eq!(exit, Exit::Drained);
            account(totals, counts, &rec.record);
            f(rec);
        });
    }

    /// `pre`: the table's hash of the packet's flow key and the slot
    /// [`FlowTable::prefetch`] found, when known.
    #[inline]
    fn analyze(&mut self, m: &PacketMeta, pre: Option<Prepared>) {
        self.bytes = self.bytes.saturating_add(u64::from(m.ip_len));
        self.burst.update(m.ts_ns, u64::from(m.ip_len));
        if m.frag != Frag::None {
            if m.is_v6 {
                self.fragments.ipv6 += 1;
            } else {
                self.fragments.ipv4 += 1;
            }
            // Later fragments get their datagram's ports: a copy, only here.
            let mut own = *m;
            self.frags.learn(&mut own);
            self.analyze_flow(&own, None);
        } else {
            self.analyze_flow(m, pre);
        }
    }

    #[inline]
    fn analyze_flow(&mut self, m: &PacketMeta, pre: Option<Prepared>) {
        let now = m.ts_ns;
        if m.is_icmp() && m.icmp.is_pmtu(m.is_v6) {
            self.handle_pmtu(m);
        }
        let done = &mut self.done;
        let totals = &mut self.exited_tcp;
        let counts = &mut self.exited_flows;
        // The key, its direction and hash are computed once per packet:
        // here, or ahead of the batch by `Engine::handle_metas`.
        let p = pre.unwrap_or_else(|| {
            let (key, kdir) = FlowKey::of(m);
            Prepared {
                key,
                kdir,
                hash: self.table.hash(&key),
                hint: None,
            }
        });
        let (key, kdir, hash, hint) = (p.key, p.kdir, p.hash, p.hint);
        let idx = self
            .table
            .handle_hashed(m, key, kdir, hash, hint, &mut |rec, _exit| {
                account(totals, counts, &rec.record);
                done.push_back(rec);
            });
        if let Some(t) = self.touched.as_mut() {
            t.mark(idx, self.table.slot_generation(idx));
        }
        self.since_expiry += 1;
        if self.since_expiry >= EXPIRE_EVERY {
            self.since_expiry = 0;
            self.poll_expired(now, EXPIRE_BUDGET);
        }
    }

    fn handle_pmtu(&mut self, m: &PacketMeta) {
        if m.is_v6 {
            self.packet_too_big += 1;
        } else {
            self.frag_needed += 1;
        }
        if let Some(mtu) = m.icmp.mtu {
            if self.mtus.len() < MAX_MTUS || self.mtus.contains(&mtu) {
                self.mtus.insert(mtu);
            }
        }
        if let Some(q) = m.icmp.quoted {
            let (mut key, _) = FlowKey::from_parts(q.src, q.sport, q.dst, q.dport, q.proto, m.vlan);
            key.v6 = m.is_v6;
            if let Some(f) = self.table.get_mut(&key) {
                f.pmtu_errors = f.pmtu_errors.saturating_add(1);
                if let Some(mtu) = m.icmp.mtu {
                    f.pmtu_min = Some(f.pmtu_min.map_or(mtu, |x| x.min(mtu)));
                }
            }
        }
    }

    fn poll_expired(&mut self, now: u64, budget: usize) -> usize {
        let done = &mut self.done;
        let totals = &mut self.exited_tcp;
        let counts = &mut self.exited_flows;
        self.table.poll_expired(now, budget, &mut |rec, _| {
            account(totals, counts, &rec.record);
            done.push_back(rec);
        })
    }
}

fn account(totals: &mut TcpTotals, counts: &mut FlowCounts, rec: &FlowRecord) {
    match rec.proto {
        Proto::Tcp => {
            counts.tcp += 1;
            totals.add_flow(rec);
        }
        Proto::Udp => counts.udp += 1,
        Proto::Icmp => counts.icmp += 1,
        Proto::Other => counts.other += 1,
    }
}
