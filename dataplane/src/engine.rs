//! The engine: parser + flow table + capture-wide summary, sans-IO.
//!
//! Methods by group, in call order:
//! * inputs: [`Engine::handle_frame`] (a raw frame) or [`Engine::handle_meta`]
//!   (an already parsed packet, e.g. handed over from another core);
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
use crate::flow::key::FlowKey;
use crate::flow::table::{Exit, Flow, FlowExport, FlowTable, TableConfig};
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

/// One engine per worker core.
#[derive(Debug)]
pub struct Engine {
    table: FlowTable,
    meta: PacketMeta,
    done: VecDeque<FlowExport>,
    frames: u64,
    bytes: u64,
    first_ns: Option<u64>,
    last_ns: u64,
    parse_errors: [u64; ParseError::COUNT],
    non_ip: u64,
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
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Engine {
        Engine {
            table: FlowTable::new(cfg.table),
            meta: PacketMeta::default(),
            done: VecDeque::new(),
            frames: 0,
            bytes: 0,
            first_ns: None,
            last_ns: 0,
            parse_errors: [0; ParseError::COUNT],
            non_ip: 0,
            burst: BurstMeter::default(),
            fragments: Fragments::default(),
            frag_needed: 0,
            packet_too_big: 0,
            mtus: BTreeSet::new(),
            frags: FragPorts::new(),
            exited_tcp: TcpTotals::default(),
            exited_flows: FlowCounts::default(),
            since_expiry: 0,
        }
    }

    /// Parses and analyses one frame captured at `now` (ns since the epoch).
    /// A frame that cannot be parsed is counted by reason.
    pub fn handle_frame(&mut self, now: u64, link: LinkType, frame: &[u8]) {
        self.frames += 1;
        self.first_ns.get_or_insert(now);
        self.last_ns = self.last_ns.max(now);
        self.meta.ts_ns = now;
        match wire::parse(link, frame, &mut self.meta) {
            Ok(()) => {
                let m = self.meta;
                self.analyze(&m);
            }
            Err(ParseError::NonIp) => self.non_ip += 1,
            Err(e) => self.parse_errors[e.index()] += 1,
        }
    }

    /// Analyses a packet parsed elsewhere (the frame was counted there).
    pub fn handle_meta(&mut self, m: &PacketMeta) {
        self.last_ns = self.last_ns.max(m.ts_ns);
        self.analyze(m);
    }

    /// Counts a frame that another core parsed and handed to this engine's
    /// owner, or that failed to parse there (`Err`).
    pub fn count_frame(&mut self, now: u64, parsed: Result<(), ParseError>) {
        self.frames += 1;
        self.first_ns.get_or_insert(now);
        self.last_ns = self.last_ns.max(now);
        match parsed {
            Ok(()) => {}
            Err(ParseError::NonIp) => self.non_ip += 1,
            Err(e) => self.parse_errors[e.index()] += 1,
        }
    }

    fn analyze(&mut self, m: &PacketMeta) {
        let now = m.ts_ns;
        self.bytes += u64::from(m.ip_len);
        self.burst.update(now, u64::from(m.ip_len));
        let mut m = *m;
        if m.frag != Frag::None {
            if m.is_v6 {
                self.fragments.ipv6 += 1;
            } else {
                self.fragments.ipv4 += 1;
            }
            self.frags.learn(&mut m);
        }
        if m.is_icmp() && m.icmp.is_pmtu(m.is_v6) {
            self.handle_pmtu(&m);
        }
        let done = &mut self.done;
        let totals = &mut self.exited_tcp;
        let counts = &mut self.exited_flows;
        self.table.handle(&m, &mut |rec, _exit| {
            account(totals, counts, &rec.record);
            done.push_back(rec);
        });
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

    /// Exports flows idle past their timeout at `now`, scanning at most
    /// `budget` slots.
    pub fn poll_expired(&mut self, now: u64, budget: usize) -> usize {
        let done = &mut self.done;
        let totals = &mut self.exited_tcp;
        let counts = &mut self.exited_flows;
        self.table.poll_expired(now, budget, &mut |rec, _| {
            account(totals, counts, &rec.record);
            done.push_back(rec);
        })
    }

    /// The next record of a flow that left the table.
    pub fn poll_record(&mut self) -> Option<FlowRecord> {
        self.done.pop_front().map(|e| e.record)
    }

    /// The next flow that left the table, with its RTT histograms (what a
    /// node sends to the control plane, where histograms merge exactly).
    pub fn poll_export(&mut self) -> Option<FlowExport> {
        self.done.pop_front()
    }

    /// End of input: every remaining flow becomes a record (see `poll_record`).
    pub fn finish(&mut self) {
        let done = &mut self.done;
        let totals = &mut self.exited_tcp;
        let counts = &mut self.exited_flows;
        self.table.drain(&mut |rec, exit| {
            debug_assert_eq!(exit, Exit::Drained);
            account(totals, counts, &rec.record);
            done.push_back(rec);
        });
    }

    /// Reads live flows without removing them.
    pub fn for_each_active(&self, f: impl FnMut(&Flow)) {
        self.table.for_each_active(f);
    }

    pub fn table(&self) -> &FlowTable {
        &self.table
    }

    /// Frames seen.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// The capture-wide summary, including flows still in the table.
    pub fn summary(&self) -> Summary {
        let mut tcp = self.exited_tcp;
        let mut flows = self.exited_flows;
        self.table
            .for_each_active(|f| f.add_to_totals(&mut tcp, &mut flows));
        let parse_errors: BTreeMap<String, u64> = ParseError::ALL
            .iter()
            .filter(|e| **e != ParseError::NonIp && self.parse_errors[e.index()] > 0)
            .map(|e| (e.as_str().to_string(), self.parse_errors[e.index()]))
            .collect();
        Summary {
            kind: "summary".into(),
            schema: crate::report::FLOW_SCHEMA.into(),
            packets: self.frames,
            bytes: self.bytes,
            first_ns: self.first_ns,
            last_ns: self.first_ns.map(|_| self.last_ns),
            duration_ns: self.first_ns.map_or(0, |f| self.last_ns.saturating_sub(f)),
            flows,
            tcp,
            icmp: IcmpSummary {
                frag_needed: self.frag_needed,
                packet_too_big: self.packet_too_big,
                mtus: self.mtus.iter().copied().collect(),
            },
            fragments: self.fragments,
            max_packets_1ms: self.burst.max_packets(),
            max_bytes_1ms: self.burst.max_bytes(),
            parse_errors,
            non_ip: self.non_ip,
            evicted_flows: self.table.evicted(),
        }
    }
}

fn account(totals: &mut TcpTotals, counts: &mut FlowCounts, rec: &FlowRecord) {
    match rec.proto {
        Proto::Tcp => {
            counts.tcp += 1;
            totals.add(&rec.c2s);
            totals.add(&rec.s2c);
        }
        Proto::Udp => counts.udp += 1,
        Proto::Icmp => counts.icmp += 1,
        Proto::Other => counts.other += 1,
    }
}
