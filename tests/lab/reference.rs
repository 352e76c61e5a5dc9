//! The reference flows, computed from tshark's per-packet fields.
//!
//! Exact counters (packets, bytes, flags, sequence coverage, zero-window
//! adverts, bursts, handshake times) are computed here from the raw fields by
//! the docs/DESIGN.md definitions, independently of wirelens and of Wireshark's
//! heuristics. out_of_order is decided per hole fill from tshark's
//! tcp.options.timestamp.tsval (older than the highest segment's TSval =>
//! a late original), with Wireshark's flag only where the TSvals are equal or
//! missing; every hole fill keeps its frame numbers as evidence. Wireshark's
//! own flags (retransmission, fast/spurious, out_of_order, duplicate_ack,
//! ack_rtt) are aggregated next to them, also with the late originals taken
//! out, which is what wirelens' Wireshark-style counters count.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use super::tshark::{Frame, TcpPkt, ACK, CWR, ECE, FIN, RST, SYN};

pub type Endpoint = (IpAddr, u16);

/// Set of byte ranges [start, end), merged.
#[derive(Clone, Debug, Default)]
pub struct Coverage(BTreeMap<u64, u64>);

impl Coverage {
    /// Bytes of [s, e) not yet in the set.
    pub fn unseen(&self, s: u64, e: u64) -> u64 {
        let mut seen = 0;
        // Ranges are disjoint and sorted; visit those that may overlap.
        let first = self.0.range(..=s).next_back().map(|(&k, _)| k).unwrap_or(s);
        for (&a, &b) in self.0.range(first..e) {
            let lo = a.max(s);
            let hi = b.min(e);
            if hi > lo {
                seen += hi - lo;
            }
        }
        (e - s) - seen
    }

    pub fn insert(&mut self, mut s: u64, mut e: u64) {
        let keys: Vec<u64> = {
            let first = self.0.range(..=s).next_back().map(|(&k, _)| k).unwrap_or(s);
            self.0.range(first..=e).map(|(&k, _)| k).collect()
        };
        for k in keys {
            let v = self.0[&k];
            if v >= s && k <= e {
                s = s.min(k);
                e = e.max(v);
                self.0.remove(&k);
            }
        }
        self.0.insert(s, e);
    }
}

/// Reference counters of one direction.
#[derive(Clone, Debug, Default)]
pub struct RefDir {
    // exact, by definition
    pub packets: u64,
    pub bytes: u64,
    pub payload_bytes: u64,
    pub syn: u64,
    pub synack: u64,
    pub fin: u64,
    pub rst: u64,
    pub retrans_seen: u64,
    pub hole_fill: u64,
    pub gaps: u64,
    /// Segments that start below the highest sequence, carry new bytes past
    /// it, and hold no unseen byte below it (a partial retransmission glued to
    /// new data). docs/DESIGN.md names no counter for them; kept to explain diffs.
    pub overlap_extend: u64,
    /// out_of_order (dataplane/src/flow/tcp.rs): hole fills that are late
    /// originals. When the hole fill and the segment holding the highest
    /// sequence both carry a TSval, an older TSval => late original
    /// (reordering), a newer one => retransmission; equal or missing TSvals
    /// => Wireshark's own out_of_order flag on that frame decides.
    pub out_of_order: u64,
    /// Hole fills the TSvals decided: older (out_of_order) / newer (retransmission).
    pub ts_older: u64,
    pub ts_newer: u64,
    /// Hole fills the TSvals could not decide (equal or missing), and how
    /// many of those Wireshark flags out_of_order.
    pub ts_undecided: u64,
    pub ts_undecided_ws_ooo: u64,
    /// Every hole fill with the evidence of its classification (frame numbers).
    pub hole_fills: Vec<HoleFillSeg>,
    pub zero_window: u64,
    pub zero_window_events: u64,
    pub zero_window_ns: u64,
    pub ecn_ce: u64,
    pub max_packets_1ms: u64,
    pub max_bytes_1ms: u64,
    // Wireshark's flags
    pub ws_retransmission: u64,
    pub ws_fast: u64,
    pub ws_spurious: u64,
    pub ws_out_of_order: u64,
    /// tshark out_of_order on segments our coverage calls hole fills.
    pub ws_ooo_hole_fill: u64,
    /// tshark retransmission or out_of_order, on any segment but a SYN.
    pub ws_retrans_or_ooo: u64,
    /// Wireshark's labels on the segments that are NOT out_of_order by the
    /// TSval rule (`out_of_order` above): what wirelens' retransmits,
    /// fast_retransmits and spurious_retransmits count, Wireshark-style, once
    /// the late originals are taken out. Not SYNs (handshake.syn_count).
    /// `ws_retrans_not_ooo` also counts the segments Wireshark calls
    /// keep-alives that resend a byte not yet acknowledged, or without a
    /// second of silence before (docs/DESIGN.md: those are retransmissions).
    pub ws_retrans_not_ooo: u64,
    pub ws_fast_not_ooo: u64,
    pub ws_spurious_not_ooo: u64,
    /// SYN or SYN/ACK that tshark calls a retransmission.
    pub ws_syn_retransmission: u64,
    pub ws_dup_ack: u64,
    pub ws_zero_window: u64,
    pub ws_keep_alive: u64,
    pub ws_lost_segment: u64,
    /// RTT samples (ns) of THIS direction's segments, one per ACK of the
    /// other direction, as Wireshark's ack_rtt measures them (to the segment
    /// whose end the ACK acknowledges exactly), with Karn's rule: the acked
    /// segment is new data (not a retransmission, by our coverage and by
    /// tshark) and nothing of this direction was resent between it and the
    /// ACK (`rtt_karn`); or a FIN sent once that carries a TSval of its own (see
    /// `rtt_fin_untimed`). The SYN (SYN/ACK) sample is the handshake leg:
    /// Wireshark times a retried SYN from the FIRST SYN (a 1 s retry becomes
    /// a 1 s "RTT"); here the SYN/ACK's TSecr picks the SYN it answers (Karn
    /// by timestamp). Sorted.
    pub rtt_ns: Vec<u64>,
    /// How many of `rtt_ns` are SYN / FIN samples (no data).
    pub rtt_ctl: u64,
    /// Wireshark ack_rtt samples left out by Karn's rule for cumulative
    /// ACKs (a resend of this direction between the segment and its ACK).
    pub rtt_karn: u64,
    /// Wireshark ack_rtt samples of a FIN that wirelens cannot time and the
    /// reference therefore leaves out: (FIN frame, ACK frame, ns). tcp.rs
    /// arms sequence probes for data only, so it times a FIN only through
    /// its TSval, and only when that TSval is new (not carried by earlier
    /// data of the direction: a FIN sent in the same millisecond as the last
    /// data has none of its own).
    pub rtt_fin_untimed: Vec<(u64, u64, u64)>,
    /// Frames of the two ends of the largest sample (acked segment, ACK).
    pub rtt_max_frames: Option<(u64, u64)>,
}

/// One hole fill and why it is (not) out_of_order.
#[derive(Clone, Debug)]
pub struct HoleFillSeg {
    pub frame: u64,
    /// Absolute sequence number and payload length.
    pub seq: u32,
    pub len: u32,
    pub tsval: Option<u32>,
    /// The frame that held the highest sequence when this one arrived, and its TSval.
    pub high_frame: u64,
    pub high_tsval: Option<u32>,
    /// Some(true): TSval older than the highest segment's; Some(false): newer;
    /// None: equal or missing (Wireshark's flag decides).
    pub ts_older: Option<bool>,
    pub ws_out_of_order: bool,
    pub ws_retransmission: bool,
    pub ws_fast: bool,
    pub out_of_order: bool,
    /// Evidence only (not part of the definition): TSecr against the highest
    /// segment's. A sender's TS.Recent never goes back, so a newer TSecr
    /// means the segment was sent after the highest one (a retransmission),
    /// an older one before it (a late original).
    pub tsecr: Option<u32>,
    pub high_tsecr: Option<u32>,
}

impl HoleFillSeg {
    pub fn describe(&self) -> String {
        let ws = if self.ws_out_of_order {
            "out_of_order"
        } else if self.ws_fast {
            "fast_retransmission"
        } else if self.ws_retransmission {
            "retransmission"
        } else {
            "-"
        };
        let by_tsecr = match (self.tsecr, self.high_tsecr) {
            (Some(e), Some(h)) if e != h => {
                if (e.wrapping_sub(h) as i32) > 0 {
                    "; TSecr newer: sent after it, a retransmission"
                } else {
                    "; TSecr older: sent before it, a late original"
                }
            }
            _ => "",
        };
        format!(
            "frame {} seq {} len {} TSval {} TSecr {} vs frame {} TSval {} TSecr {}: {}{by_tsecr} (Wireshark: {ws})",
            self.frame,
            self.seq,
            self.len,
            opt(self.tsval),
            opt(self.tsecr),
            self.high_frame,
            opt(self.high_tsval),
            opt(self.high_tsecr),
            match (self.ts_older, self.out_of_order) {
                (Some(true), _) => "older => out_of_order",
                (Some(false), _) => "newer => retransmission",
                (None, true) => "undecided, Wireshark's flag => out_of_order",
                (None, false) => "undecided, Wireshark's flag => retransmission",
            }
        )
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

#[derive(Clone, Debug, Default)]
pub struct RefHandshake {
    pub syn_to_synack_ns: Option<u64>,
    pub synack_to_ack_ns: Option<u64>,
    pub connect_ns: Option<u64>,
    pub syn_count: u64,
    pub synack_count: u64,
}

#[derive(Clone, Debug)]
pub struct RefTcpFlow {
    pub stream: u64,
    pub client: Endpoint,
    pub server: Endpoint,
    pub first_ns: u64,
    pub last_ns: u64,
    pub c2s: RefDir,
    pub s2c: RefDir,
    pub handshake: Option<RefHandshake>,
    /// Only the states the packets decide: refused, reset, closed; None otherwise.
    pub state: Option<&'static str>,
    pub rst_from: Option<&'static str>,
    /// Both directions had sent a FIN before the first RST.
    pub fin_before_rst: bool,
    pub mss: (Option<u16>, Option<u16>),
    pub wscale: (Option<u8>, Option<u8>),
    pub sack_ok: bool,
    pub ts_ok: bool,
    pub ecn_ok: bool,
    /// ICMP frag-needed / packet-too-big quoting this flow: (count, min mtu).
    pub pmtu: Option<(u64, Option<u32>)>,
    pub frames: u64,
}

impl RefTcpFlow {
    pub fn name(&self) -> String {
        format!(
            "tcp {} -> {} (tshark stream {})",
            ep(self.client),
            ep(self.server),
            self.stream
        )
    }
}

pub fn ep(e: Endpoint) -> String {
    match e.0 {
        IpAddr::V4(a) => format!("{a}:{}", e.1),
        IpAddr::V6(a) => format!("[{a}]:{}", e.1),
    }
}

#[derive(Default)]
struct Burst {
    bins: HashMap<u64, (u64, u64)>,
}

impl Burst {
    fn add(&mut self, ts_ns: u64, bytes: u64) {
        let b = self.bins.entry(ts_ns / 1_000_000).or_default();
        b.0 += 1;
        b.1 += bytes;
    }
    fn max(&self) -> (u64, u64) {
        (
            self.bins.values().map(|b| b.0).max().unwrap_or(0),
            self.bins.values().map(|b| b.1).max().unwrap_or(0),
        )
    }
}

#[derive(Default)]
struct DirState {
    base: Option<u32>,
    cov: Coverage,
    max_end: u64,
    /// The segment that last raised max_end: its frame and TSval.
    highest_frame: u64,
    highest_tsval: Option<u32>,
    highest_tsecr: Option<u32>,
    zw_since: Option<u64>,
    burst: Burst,
    /// The previous segment of this direction: its time and ACK number.
    last_ts: Option<u64>,
    last_ack: Option<u32>,
}

/// docs/DESIGN.md's keep-alive: sent after at least this much silence.
const KEEPALIVE_IDLE_NS: u64 = 1_000_000_000;

pub fn tcp_flows(pkts: &[TcpPkt], frames: &[Frame]) -> Vec<RefTcpFlow> {
    let mut by_stream: BTreeMap<u64, Vec<&TcpPkt>> = BTreeMap::new();
    for p in pkts {
        by_stream.entry(p.stream).or_default().push(p);
    }
    let by_frame: HashMap<u64, &TcpPkt> = pkts.iter().map(|p| (p.frame, p)).collect();
    let mut flows = Vec::new();
    for (stream, ps) in by_stream {
        flows.push(one_flow(stream, &ps, &by_frame));
    }
    // PMTU: ICMP errors quoting a client->server packet of the flow.
    for f in frames {
        if !(f.is_frag_needed() || f.is_packet_too_big()) {
            continue;
        }
        let Some((qs, qd, 6, qsp, qdp)) = f.quoted else {
            continue;
        };
        for fl in flows.iter_mut() {
            let fwd = fl.client == (qs, qsp) && fl.server == (qd, qdp);
            let rev = fl.server == (qs, qsp) && fl.client == (qd, qdp);
            if (fwd || rev) && f.ts_ns >= fl.first_ns && f.ts_ns <= fl.last_ns + 1_000_000_000 {
                let e = fl.pmtu.get_or_insert((0, None));
                e.0 += 1;
                let mtu = f.icmp.and_then(|i| i.2);
                e.1 = match (e.1, mtu) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                break;
            }
        }
    }
    flows
}

fn one_flow(stream: u64, ps: &[&TcpPkt], by_frame: &HashMap<u64, &TcpPkt>) -> RefTcpFlow {
    let first = ps[0];
    let ep_src = |p: &TcpPkt| (p.src.unwrap(), p.sport);
    let ep_dst = |p: &TcpPkt| (p.dst.unwrap(), p.dport);
    // Client: the SYN sender; else the receiver of a SYN/ACK; else the first sender.
    let (client, server) = if let Some(s) = ps.iter().find(|p| p.has(SYN) && !p.has(ACK)) {
        (ep_src(s), ep_dst(s))
    } else if let Some(s) = ps.iter().find(|p| p.has(SYN) && p.has(ACK)) {
        (ep_dst(s), ep_src(s))
    } else {
        (ep_src(first), ep_dst(first))
    };
    let is_c2s = |p: &TcpPkt| ep_src(p) == client;

    // Handshake, by docs/DESIGN.md.
    let syns: Vec<&&TcpPkt> = ps
        .iter()
        .filter(|p| is_c2s(p) && p.has(SYN) && !p.has(ACK))
        .collect();
    let synacks: Vec<&&TcpPkt> = ps
        .iter()
        .filter(|p| !is_c2s(p) && p.has(SYN) && p.has(ACK))
        .collect();
    let handshake = if syns.is_empty() && synacks.is_empty() {
        None
    } else {
        let mut h = RefHandshake {
            syn_count: syns.len() as u64,
            synack_count: synacks.len() as u64,
            ..Default::default()
        };
        if let Some(sa) = synacks.first() {
            if let Some(last_syn) = syns.iter().rfind(|s| s.ts_ns <= sa.ts_ns) {
                h.syn_to_synack_ns = Some(sa.ts_ns - last_syn.ts_ns);
            }
            let ack = ps.iter().find(|p| {
                is_c2s(p) && p.frame > sa.frame && p.has(ACK) && !p.has(SYN) && !p.has(RST)
            });
            if let Some(ack) = ack {
                h.synack_to_ack_ns = Some(ack.ts_ns - sa.ts_ns);
                if let Some(s0) = syns.first() {
                    h.connect_ns = Some(ack.ts_ns - s0.ts_ns);
                }
            }
        }
        Some(h)
    };

    let mut dirs = [RefDir::default(), RefDir::default()];
    let mut st = [DirState::default(), DirState::default()];
    // Per frame: was it a new (not retransmitted) data segment? For Karn.
    let mut new_data: HashMap<u64, bool> = HashMap::new();
    // Hole fills that are late originals (out_of_order).
    let mut ooo_frames: HashSet<u64> = HashSet::new();
    // Frames that resent bytes (retrans_seen, hole fills that are not late
    // originals), per direction, in capture order: Karn's rule below.
    let mut resends: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
    // Segments Wireshark calls keep-alives that resend a byte (counted).
    let mut keepalive_resends: HashSet<u64> = HashSet::new();
    for p in ps {
        let i = if is_c2s(p) { 0 } else { 1 };
        // A keep-alive by docs/DESIGN.md's rule: Wireshark's keep-alive whose
        // byte the other side had acknowledged, after a second of silence.
        let byte_acked = st[1 - i]
            .last_ack
            .is_some_and(|a| (p.seq.wrapping_sub(a) as i32) < 0);
        let idle = st[i]
            .last_ts
            .is_some_and(|t| p.ts_ns.saturating_sub(t) >= KEEPALIVE_IDLE_NS);
        let probe = p.keep_alive && byte_acked && idle;
        st[i].last_ts = Some(p.ts_ns);
        if p.has(ACK) {
            st[i].last_ack = Some(p.ack);
        }
        let d = &mut dirs[i];
        let s = &mut st[i];
        d.packets += 1;
        d.bytes += p.ip_len;
        d.payload_bytes += u64::from(p.len);
        s.burst.add(p.ts_ns, p.ip_len);
        if p.has(SYN) {
            if p.has(ACK) {
                d.synack += 1;
            } else {
                d.syn += 1;
            }
        }
        d.fin += u64::from(p.has(FIN));
        d.rst += u64::from(p.has(RST));
        d.ecn_ce += u64::from(p.ecn == 3);
        d.ws_retransmission += u64::from(p.retransmission);
        d.ws_fast += u64::from(p.fast_retransmission);
        d.ws_spurious += u64::from(p.spurious_retransmission);
        d.ws_out_of_order += u64::from(p.out_of_order);
        // docs/DESIGN.md counts SYN retries in handshake.syn_count, not in
        // retransmits (Wireshark labels them retransmissions).
        if p.has(SYN) {
            d.ws_syn_retransmission += u64::from(p.retransmission);
        } else {
            d.ws_retrans_or_ooo += u64::from(p.retransmission || p.out_of_order);
        }
        d.ws_dup_ack += u64::from(p.duplicate_ack);
        d.ws_zero_window += u64::from(p.zero_window);
        d.ws_keep_alive += u64::from(p.keep_alive);
        d.ws_lost_segment += u64::from(p.lost_segment);

        // Zero window: adverts (not SYN/FIN/RST), stalls and their duration.
        if !p.has(SYN) && !p.has(FIN) && !p.has(RST) {
            if p.window == 0 {
                d.zero_window += 1;
                if s.zw_since.is_none() {
                    s.zw_since = Some(p.ts_ns);
                    d.zero_window_events += 1;
                }
            } else if let Some(t) = s.zw_since.take() {
                d.zero_window_ns += p.ts_ns - t;
            }
        }

        // Sequence coverage.
        if p.has(SYN) {
            s.base = Some(p.seq.wrapping_add(1));
            continue;
        }
        let base = *s.base.get_or_insert(p.seq);
        let consumes = p.len > 0 || p.has(FIN);
        if !consumes || probe {
            if probe {
                new_data.insert(p.frame, false);
            }
            continue;
        }
        let start = u64::from(p.seq.wrapping_sub(base));
        if start >= 1 << 31 {
            // Before the ISN: a keep-alive / window probe (seq = snd.una - 1).
            new_data.insert(p.frame, false);
            continue;
        }
        let end = start + u64::from(p.len) + u64::from(p.has(FIN));
        if start > s.max_end {
            d.gaps += 1;
        }
        // The FIN takes one sequence number, as in tcp.rs: a resent FIN is
        // in retrans_seen (Wireshark: retransmission). docs/DESIGN.md says "data
        // segments"; tcp.rs (and Wireshark) count the FIN's sequence number.
        {
            let data_end = end;
            let unseen_all = s.cov.unseen(start, data_end);
            let below = s.max_end.min(data_end);
            let unseen_below = if below > start {
                s.cov.unseen(start, below)
            } else {
                0
            };
            let mut is_new = false;
            if unseen_all == 0 {
                d.retrans_seen += 1;
                resends[i].push(p.frame);
                if p.keep_alive {
                    keepalive_resends.insert(p.frame);
                }
            } else if unseen_below > 0 {
                d.hole_fill += 1;
                d.ws_ooo_hole_fill += u64::from(p.out_of_order);
                // Sent before or after the segment holding the highest
                // sequence? TSvals (RFC 7323: monotonic per sender) answer
                // it; serial-number comparison, as TSvals wrap.
                let ts_older = match (p.tsval, s.highest_tsval) {
                    (Some(v), Some(h)) if v != h => Some((v.wrapping_sub(h) as i32) < 0),
                    _ => None,
                };
                let ooo = ts_older.unwrap_or(p.out_of_order);
                match ts_older {
                    Some(true) => d.ts_older += 1,
                    Some(false) => d.ts_newer += 1,
                    None => {
                        d.ts_undecided += 1;
                        d.ts_undecided_ws_ooo += u64::from(p.out_of_order);
                    }
                }
                if ooo {
                    d.out_of_order += 1;
                    ooo_frames.insert(p.frame);
                } else {
                    resends[i].push(p.frame);
                }
                d.hole_fills.push(HoleFillSeg {
                    frame: p.frame,
                    seq: p.seq,
                    len: p.len,
                    tsval: p.tsval,
                    high_frame: s.highest_frame,
                    high_tsval: s.highest_tsval,
                    ts_older,
                    ws_out_of_order: p.out_of_order,
                    ws_retransmission: p.retransmission,
                    ws_fast: p.fast_retransmission,
                    out_of_order: ooo,
                    tsecr: p.tsecr,
                    high_tsecr: s.highest_tsecr,
                });
            } else if start < s.max_end {
                d.overlap_extend += 1;
            } else {
                is_new = true;
            }
            new_data.insert(p.frame, is_new && !p.retransmission && !p.out_of_order);
            s.cov.insert(start, data_end);
        }
        if end > s.max_end {
            s.max_end = end;
            s.highest_frame = p.frame;
            s.highest_tsval = p.tsval;
            s.highest_tsecr = p.tsecr;
        }
    }
    // Wireshark's labels on what is not a late original.
    for p in ps {
        if p.has(SYN) || ooo_frames.contains(&p.frame) {
            continue;
        }
        let d = &mut dirs[usize::from(!is_c2s(p))];
        // A 1-byte repeat that is not a keep-alive by the rule above is a
        // retransmission for wirelens; Wireshark calls every one a keep-alive.
        d.ws_retrans_not_ooo +=
            u64::from(p.retransmission || p.out_of_order || keepalive_resends.contains(&p.frame));
        d.ws_fast_not_ooo += u64::from(p.fast_retransmission);
        d.ws_spurious_not_ooo += u64::from(p.spurious_retransmission);
    }
    // RTT samples: ACKs going the other way, acking a new data segment or
    // a FIN sent once (Wireshark's ack_rtt: to the segment whose end the ACK
    // acknowledges exactly).
    let mut fins = [0u64; 2];
    // FINs whose TSval is newer than that of every earlier segment of their
    // direction that asks for an ACK (data, SYN, FIN).
    let mut fin_new_ts: HashSet<u64> = HashSet::new();
    let mut newest_ts: [Option<u32>; 2] = [None, None];
    for p in ps {
        let i = usize::from(!is_c2s(p));
        fins[i] += u64::from(p.has(FIN));
        if !(p.len > 0 || p.has(SYN) || p.has(FIN)) {
            continue;
        }
        let Some(v) = p.tsval else { continue };
        let newer = newest_ts[i].is_none_or(|n| (v.wrapping_sub(n) as i32) > 0);
        if newer {
            newest_ts[i] = Some(v);
            if p.has(FIN) && p.len == 0 {
                fin_new_ts.insert(p.frame);
            }
        }
    }
    let mut samples: [Vec<(u64, u64, u64)>; 2] = [Vec::new(), Vec::new()];
    for p in ps {
        let (Some(rtt), Some(acked)) = (p.ack_rtt_ns, p.acks_frame) else {
            continue;
        };
        let Some(a) = by_frame.get(&acked) else {
            continue;
        };
        let i = usize::from(!is_c2s(a));
        let ok = if a.has(SYN) {
            false // below, by timestamp
        } else if a.len == 0 {
            let once = a.has(FIN) && fins[i] == 1 && !a.retransmission;
            if once && !fin_new_ts.contains(&acked) {
                dirs[i].rtt_fin_untimed.push((acked, p.frame, rtt));
            }
            once && fin_new_ts.contains(&acked)
        } else {
            new_data.get(&acked).copied().unwrap_or(false)
        };
        // Karn's rule for a cumulative ACK: when bytes of this direction
        // were resent after the acked segment and before the ACK, the ACK
        // may answer the resend (after a hole, it waited for it): Wireshark
        // still times it from the original segment (loss recovery time, not
        // RTT); the reference does not (tcp.rs drops its pending segment
        // probes on every resend), unless the ACK's TSecr echoes the acked
        // segment's own TSval: then it answers that segment (a resend
        // carries a newer TSval; RFC 7323's answer to Karn's ambiguity).
        let r = &resends[i];
        let after = r.partition_point(|&f| f <= acked);
        let karn = r.get(after).is_some_and(|&f| f < p.frame)
            && !(p.tsecr.is_some() && p.tsecr == a.tsval);
        if ok && karn {
            dirs[i].rtt_karn += 1;
        }
        if ok && !karn {
            samples[i].push((rtt, acked, p.frame));
            dirs[i].rtt_ctl += u64::from(a.len == 0);
        }
    }
    // The handshake legs: SYN -> first SYN/ACK (c2s), SYN/ACK -> the
    // client's first ACK of it (s2c); the echoed TSval names the SYN (SYN/ACK)
    // answered, as SYN retries carry new TSvals.
    for (i, syn_ack_flag) in [(0usize, false), (1usize, true)] {
        let is_ctl =
            |p: &TcpPkt| usize::from(!is_c2s(p)) == i && p.has(SYN) && p.has(ACK) == syn_ack_flag;
        let Some(x0) = ps.iter().find(|p| is_ctl(p)) else {
            continue;
        };
        let want_ack = x0.seq.wrapping_add(1);
        let reply = ps.iter().find(|p| {
            usize::from(!is_c2s(p)) != i && p.has(ACK) && !p.has(RST) && p.ack == want_ack
        });
        let Some(reply) = reply else { continue };
        let sent: Vec<&&TcpPkt> = ps
            .iter()
            .filter(|p| is_ctl(p) && p.frame < reply.frame)
            .collect();
        // Without timestamps no sample: tcp.rs times SYNs by TSval only
        // (the lab always negotiates timestamps).
        let answered = match reply.tsecr {
            Some(e) if reply.tsval.is_some() => sent.iter().find(|p| p.tsval == Some(e)),
            _ => None,
        };
        if let Some(x) = answered {
            samples[i].push((reply.ts_ns - x.ts_ns, x.frame, reply.frame));
            dirs[i].rtt_ctl += 1;
        }
    }
    for (d, mut v) in dirs.iter_mut().zip(samples) {
        v.sort_unstable();
        d.rtt_max_frames = v.last().map(|x| (x.1, x.2));
        d.rtt_ns = v.into_iter().map(|x| x.0).collect();
    }
    for (d, s) in dirs.iter_mut().zip(st.iter()) {
        (d.max_packets_1ms, d.max_bytes_1ms) = s.burst.max();
    }

    // State where the packets decide it.
    let established = handshake
        .as_ref()
        .is_some_and(|h| h.synack_to_ack_ns.is_some());
    let first_rst = ps.iter().find(|p| p.has(RST));
    let fin_before_rst = first_rst.is_some_and(|r| {
        let fin_from = |c2s: bool| {
            ps.iter()
                .any(|p| p.frame < r.frame && p.has(FIN) && is_c2s(p) == c2s)
        };
        fin_from(true) && fin_from(false)
    });
    let (state, rst_from) = match first_rst {
        Some(r)
            if !established
                && handshake.as_ref().is_some_and(|h| h.synack_count == 0)
                && !is_c2s(r) =>
        {
            (Some("refused"), Some("server"))
        }
        Some(r) => (
            Some("reset"),
            Some(if is_c2s(r) { "client" } else { "server" }),
        ),
        None if dirs[0].fin > 0 && dirs[1].fin > 0 => (Some("closed"), None),
        None => (None, None),
    };

    let syn = syns.first();
    let synack = synacks.first();
    let both = |f: &dyn Fn(&TcpPkt) -> bool| match (syn, synack) {
        (Some(a), Some(b)) => f(a) && f(b),
        _ => false,
    };
    let [c2s, s2c] = dirs;
    RefTcpFlow {
        stream,
        client,
        server,
        first_ns: ps.first().unwrap().ts_ns,
        last_ns: ps.last().unwrap().ts_ns,
        c2s,
        s2c,
        handshake,
        state,
        rst_from,
        fin_before_rst,
        mss: (syn.and_then(|p| p.mss), synack.and_then(|p| p.mss)),
        wscale: (syn.and_then(|p| p.wscale), synack.and_then(|p| p.wscale)),
        sack_ok: both(&|p| p.sack_perm),
        ts_ok: both(&|p| p.tsval.is_some()),
        ecn_ok: match (syn, synack) {
            (Some(a), Some(b)) => a.has(ECE) && a.has(CWR) && b.has(ECE) && !b.has(CWR),
            _ => false,
        },
        pmtu: None,
        frames: ps.len() as u64,
    }
}

/// A non-TCP flow (UDP) with its IP fragments attributed by (src, dst, id).
#[derive(Clone, Debug, Default)]
pub struct RefUdpDir {
    pub packets: u64,
    pub bytes: u64,
    pub frags: u64,
    pub max_packets_1ms: u64,
    pub max_bytes_1ms: u64,
}

#[derive(Clone, Debug)]
pub struct RefUdpFlow {
    pub client: Endpoint,
    pub server: Endpoint,
    pub first_ns: u64,
    pub last_ns: u64,
    pub c2s: RefUdpDir,
    pub s2c: RefUdpDir,
}

impl RefUdpFlow {
    pub fn name(&self) -> String {
        format!("udp {} -> {}", ep(self.client), ep(self.server))
    }
}

pub fn udp_flows(frames: &[Frame]) -> Vec<RefUdpFlow> {
    let mut ports_of_frag: HashMap<(IpAddr, IpAddr, u32), (u16, u16)> = HashMap::new();
    let mut flows: Vec<RefUdpFlow> = Vec::new();
    let mut bursts: Vec<[Burst; 2]> = Vec::new();
    for f in frames {
        if f.proto != Some(17) {
            continue;
        }
        let (Some(src), Some(dst)) = (f.src, f.dst) else {
            continue;
        };
        let ports = match (f.frag, f.sport, f.dport) {
            (Some((id, 0, _)), Some(sp), Some(dp)) => {
                ports_of_frag.insert((src, dst, id), (sp, dp));
                Some((sp, dp))
            }
            (Some((id, _, _)), _, _) => ports_of_frag.get(&(src, dst, id)).copied(),
            (None, Some(sp), Some(dp)) => Some((sp, dp)),
            _ => None,
        };
        let Some((sp, dp)) = ports else { continue };
        let a = (src, sp);
        let b = (dst, dp);
        let idx = flows.iter().position(|fl| {
            (fl.client == a && fl.server == b) || (fl.client == b && fl.server == a)
        });
        let idx = idx.unwrap_or_else(|| {
            flows.push(RefUdpFlow {
                client: a,
                server: b,
                first_ns: f.ts_ns,
                last_ns: f.ts_ns,
                c2s: RefUdpDir::default(),
                s2c: RefUdpDir::default(),
            });
            bursts.push([Burst::default(), Burst::default()]);
            flows.len() - 1
        });
        let fl = &mut flows[idx];
        fl.last_ns = f.ts_ns;
        let i = if fl.client == a { 0 } else { 1 };
        let d = if i == 0 { &mut fl.c2s } else { &mut fl.s2c };
        d.packets += 1;
        d.bytes += f.ip_len;
        d.frags += u64::from(f.frag.is_some());
        bursts[idx][i].add(f.ts_ns, f.ip_len);
    }
    for (fl, b) in flows.iter_mut().zip(bursts.iter()) {
        (fl.c2s.max_packets_1ms, fl.c2s.max_bytes_1ms) = b[0].max();
        (fl.s2c.max_packets_1ms, fl.s2c.max_bytes_1ms) = b[1].max();
    }
    flows
}

/// The capture-wide numbers of `{"type":"summary"}`.
#[derive(Clone, Debug, Default)]
pub struct RefSummary {
    pub frames: u64,
    pub ip_packets: u64,
    pub bytes: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    pub tcp_flows: u64,
    pub udp_flows: u64,
    pub frags_v4: u64,
    pub frags_v6: u64,
    pub frag_needed: u64,
    pub packet_too_big: u64,
    pub mtus: Vec<u32>,
    /// Over IP packets, bytes = IP length.
    pub max_packets_1ms: u64,
    pub max_bytes_1ms: u64,
    /// Over every frame (non-IP frames count as packets with 0 bytes).
    pub max_frames_1ms: u64,
}

pub fn summary(frames: &[Frame], tcp: &[RefTcpFlow], udp: &[RefUdpFlow]) -> RefSummary {
    let mut s = RefSummary {
        frames: frames.len() as u64,
        tcp_flows: tcp.len() as u64,
        udp_flows: udp.len() as u64,
        ..Default::default()
    };
    let mut ip_burst = Burst::default();
    let mut all = Burst::default();
    s.first_ns = frames.first().map(|f| f.ts_ns).unwrap_or(0);
    s.last_ns = frames.last().map(|f| f.ts_ns).unwrap_or(0);
    for f in frames {
        all.add(f.ts_ns, 0);
        if f.src.is_none() {
            continue;
        }
        s.ip_packets += 1;
        s.bytes += f.ip_len;
        ip_burst.add(f.ts_ns, f.ip_len);
        if f.frag.is_some() {
            if f.v6 {
                s.frags_v6 += 1;
            } else {
                s.frags_v4 += 1;
            }
        }
        if f.is_frag_needed() {
            s.frag_needed += 1;
        }
        if f.is_packet_too_big() {
            s.packet_too_big += 1;
        }
        if f.is_frag_needed() || f.is_packet_too_big() {
            if let Some(m) = f.icmp.and_then(|i| i.2) {
                if !s.mtus.contains(&m) {
                    s.mtus.push(m);
                }
            }
        }
    }
    s.mtus.sort_unstable();
    (s.max_packets_1ms, s.max_bytes_1ms) = ip_burst.max();
    s.max_frames_1ms = all.max().0;
    s
}

/// Quantile of sorted samples, nearest rank.
pub fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::Coverage;

    #[test]
    fn coverage_merges_and_counts_unseen() {
        let mut c = Coverage::default();
        c.insert(0, 10);
        c.insert(20, 30);
        assert_eq!(c.unseen(0, 10), 0);
        assert_eq!(c.unseen(5, 25), 10);
        c.insert(10, 20);
        assert_eq!(c.unseen(0, 30), 0);
        assert_eq!(c.0.len(), 1);
        assert_eq!(c.unseen(25, 40), 10);
    }
}
