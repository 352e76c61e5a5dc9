//! The TCP analyzer: per connection, both directions.
//!
//! Two views of the same segments are kept side by side:
//!
//! * exact sequence coverage, which does not depend on timing guesses:
//!   `retrans_seen` (every byte of the segment was already seen by the tap: loss
//!   after the tap, or a spurious retransmission), `hole_fill` (below the
//!   highest sequence seen, with bytes the tap had not seen: loss before the
//!   tap, or reordering) and `gaps` (a segment jumps past the next expected
//!   sequence);
//! * Wireshark's heuristics (`epan/dissectors/packet-tcp.c`,
//!   `tcp_analyze_sequence_number`), reproduced rule for rule so that the flags
//!   agree with what an engineer sees in Wireshark: zero-window probes,
//!   keep-alives, duplicate ACKs, fast / spurious retransmissions.
//!
//! `out_of_order` counts the hole fills that are late originals, not
//! retransmissions: when the segment and the highest one both carry TCP
//! timestamps, a TSval older than the highest segment's means it was sent
//! before it (reordering) and a newer one means it was sent after it (a
//! retransmission of a loss before the tap); without timestamps (or with
//! equal TSvals) Wireshark's rule decides: within one initial RTT (3 ms if
//! none) of the highest segment. On real captures Wireshark's timing rule
//! calls reordered originals "fast retransmissions" (the receiver's duplicate
//! ACKs reach the tap first) and quick SACK-driven retransmissions
//! "out-of-order"; the TSval is exact where it exists.
//!
//! `retransmits` = `retrans_seen + hole_fill - out_of_order`. Differences
//! from Wireshark, on purpose: SYN retransmissions are counted in
//! `handshake.syn_count` / `synack_count`, not in `retransmits` (Wireshark
//! labels them retransmissions); a segment whose bytes were all seen is never
//! out of order; the out-of-order rule above.
//!
//! `fast_retransmits` and `spurious_retransmits` follow Wireshark's rules;
//! `rto_retransmits` are the other retransmissions that came after the sender
//! had been silent for at least one initial RTT (3 ms if unknown): timer-driven
//! (RTO or tail-loss probe), as opposed to SACK-driven recovery, which sends
//! while ACKs arrive and is in neither sub-count.
//!
//! RTT, one sample per ACK at most: sequence -> ACK matching first (a data
//! segment to the ACK that acknowledges exactly its end, as Wireshark's
//! `ack_rtt`), with Karn's rule (a retransmission in a direction discards its
//! pending segment probes); else TCP timestamps (the first segment carrying a
//! new TSval, to the other side's TSecr echo of it), from ACKs that
//! acknowledge new data only (a duplicate ACK echoes an old TSval). A few
//! probes are pending at once per direction (bounded memory); each sample is
//! weighted by the advancing ACKs since the previous one, so the quantiles
//! are per ACK like Wireshark's, not per unit of time, and `rtt.n` counts
//! those ACKs.
#![forbid(unsafe_code)]

use crate::flow::dir::{bump, DirStats};
use crate::flow::seq;
use crate::meta::{proto, tcp_flags as F, PacketMeta, TcpMeta, TcpOpts};
use crate::report::{Handshake, Hol, PerSide, Side, TcpInfo, TcpPath, TcpState};
use crate::stats::Histogram;

/// Threshold of Wireshark's fast-retransmission rule: within 20 ms of the last
/// duplicate ACK.
const FAST_RETRANS_WINDOW_NS: u64 = 20_000_000;
/// Wireshark's out-of-order threshold when the initial RTT is unknown.
const DEFAULT_OOO_NS: u64 = 3_000_000;
/// Holes (unseen sequence ranges) tracked per direction. When more open at
/// once, the lowest is forgotten: a later fill of it counts as `retrans_seen`.
const MAX_HOLES: usize = 6;
/// Pending RTT samples per direction.
const RTT_SLOTS: usize = 4;
/// A keep-alive comes after the sender was silent at least this long
/// (keep-alive timers count in seconds); a repeated byte sent sooner, or one
/// the receiver had not acknowledged, is a retransmission.
const KEEPALIVE_IDLE_NS: u64 = 1_000_000_000;
/// The MSS a 1500-byte MTU allows: 1500 - 20 (IPv4) or 40 (IPv6) - 20 (TCP).
const MSS_1500_V4: u16 = 1460;
const MSS_1500_V6: u16 = 1440;

/// Pending RTT probes: either TSvals waiting for their echo or segment ends
/// waiting for their ACK.
#[derive(Clone, Debug, Default)]
struct RttProbes {
    keys: [u32; RTT_SLOTS],
    times: [u64; RTT_SLOTS],
    used: u8,
}

impl RttProbes {
    #[inline]
    fn arm(&mut self, key: u32, now: u64) {
        if self.used == (1 << RTT_SLOTS) - 1 {
            return;
        }
        for i in 0..RTT_SLOTS {
            if self.used & (1 << i) == 0 {
                self.keys[i] = key;
                self.times[i] = now;
                self.used |= 1 << i;
                return;
            }
        }
    }

    #[inline]
    fn clear(&mut self) {
        self.used = 0;
    }

    /// Frees every probe whose key is at or before `key`; returns the sample of
    /// the probe whose key equals it.
    #[inline]
    fn resolve(&mut self, key: u32, now: u64) -> Option<u64> {
        if self.used == 0 {
            return None;
        }
        let mut sample = None;
        for i in 0..RTT_SLOTS {
            if self.used & (1 << i) != 0 && seq::le(self.keys[i], key) {
                if self.keys[i] == key {
                    sample = Some(now.saturating_sub(self.times[i]));
                }
                self.used &= !(1 << i);
            }
        }
        sample
    }
}

/// Sequence state of the segments going one way.
#[derive(Clone, Debug, Default)]
struct TcpDir {
    /// Wireshark's `nextseq`: highest seq + len (+1 for SYN/FIN) seen.
    nextseq: u32,
    nextseq_ns: u64,
    nextseq_valid: bool,
    /// The previous segment's ack, window and time.
    lastack: u32,
    lastack_ns: u64,
    acked: bool,
    window: u16,
    window_valid: bool,
    dupacks: i32,
    last_keepalive: bool,
    last_zwp: bool,
    /// Exact coverage: highest sequence end of data seen, and unseen ranges below it.
    cov_end: u32,
    cov_valid: bool,
    holes: [(u32, u32); MAX_HOLES],
    /// When each hole opened; the pieces of a split hole share it.
    hole_since: [u64; MAX_HOLES],
    n_holes: u8,
    /// How long each closed hole stayed open (head-of-line time).
    hol: Histogram,
    /// Data (not on a SYN) was seen this way.
    has_data: bool,
    /// This side's ACKs advanced past anything the tap saw from the other.
    acked_unseen: bool,
    /// A data segment carried an ECT (or CE) mark.
    ect_data: bool,
    /// The SYN's MSS is below what a 1500-byte MTU allows.
    mss_clamped: bool,
    /// Zero-window stall in progress since.
    stall_since: Option<u64>,
    /// Handshake options of this side.
    isn: u32,
    isn_valid: bool,
    mss: Option<u16>,
    wscale: Option<u8>,
    sack_ok: bool,
    ts_ok: bool,
    ecn_setup: bool,
    /// Newest TSval armed for an RTT sample.
    last_tsval: u32,
    tsval_valid: bool,
    /// TSval of the segment that carried the highest sequence (`cov_end`).
    high_tsval: Option<u32>,
    /// Segment ends waiting for the ACK that covers exactly them.
    rtt_seq: RttProbes,
    /// TSvals waiting for their echo.
    rtt_ts: RttProbes,
    /// ACKs from the other side that advanced over this direction's data since
    /// the last RTT sample: the sample's weight.
    acks_pending: u32,
}

/// What happened to a segment's bytes, by exact coverage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Coverage {
    New,
    Seen,
    HoleFill,
}

impl TcpDir {
    /// The weight of an RTT sample: the advancing ACKs it stands for.
    fn take_weight(&mut self) -> u64 {
        let w = self.acks_pending.max(1);
        self.acks_pending = 0;
        w.into()
    }

    /// Classifies `[s, e)` against the bytes seen so far and records it.
    fn cover(&mut self, s: u32, e: u32, gaps: &mut u32, now: u64) -> Coverage {
        if !self.cov_valid {
            self.cov_valid = true;
            self.cov_end = e;
            return Coverage::New;
        }
        if seq::ge(s, self.cov_end) {
            if seq::gt(s, self.cov_end) {
                bump(gaps);
                self.add_hole(self.cov_end, s, now);
            }
            self.cov_end = e;
            return Coverage::New;
        }
        let below_end = seq::min(e, self.cov_end);
        let filled = self.fill_holes(s, below_end, now);
        if seq::gt(e, self.cov_end) {
            self.cov_end = e;
        }
        if filled {
            Coverage::HoleFill
        } else {
            Coverage::Seen
        }
    }

    /// Adds the hole `[s, e)`, open since `since`.
    fn add_hole(&mut self, s: u32, e: u32, since: u64) {
        let n = self.n_holes as usize;
        if n == MAX_HOLES {
            // forget the lowest hole (it is not timed)
            let mut lo = 0;
            for i in 1..n {
                if seq::lt(self.holes[i].0, self.holes[lo].0) {
                    lo = i;
                }
            }
            self.holes[lo] = (s, e);
            self.hole_since[lo] = since;
        } else {
            self.holes[n] = (s, e);
            self.hole_since[n] = since;
            self.n_holes += 1;
        }
    }

    /// Removes `[s, e)` from the holes; true if any unseen byte was in it.
    fn fill_holes(&mut self, s: u32, e: u32, now: u64) -> bool {
        if self.n_holes == 0 || !seq::lt(s, e) {
            return false;
        }
        let mut filled = false;
        let mut i = 0;
        while i < self.n_holes as usize {
            let (hs, he) = self.holes[i];
            if seq::lt(s, he) && seq::gt(e, hs) {
                filled = true;
                let left = seq::lt(hs, s);
                let right = seq::gt(he, e);
                match (left, right) {
                    (false, false) => {
                        self.close_hole(i, now);
                        continue;
                    }
                    (true, false) => self.holes[i] = (hs, s),
                    (false, true) => self.holes[i] = (e, he),
                    (true, true) => {
                        self.holes[i] = (hs, s);
                        self.add_hole(e, he, self.hole_since[i]);
                    }
                }
            }
            i += 1;
        }
        filled
    }

    /// Closes hole `i` at `now`: when it was the last piece of the hole
    /// opened at its time, records how long that stayed open.
    fn close_hole(&mut self, i: usize, now: u64) {
        let since = self.hole_since[i];
        let last = self.n_holes as usize - 1;
        self.holes[i] = self.holes[last];
        self.hole_since[i] = self.hole_since[last];
        self.n_holes -= 1;
        if !self.hole_since[..last].contains(&since) {
            self.hol.record(now.saturating_sub(since));
        }
    }

    /// Holes the receiver has acknowledged were filled out of the tap's sight.
    fn prune_holes(&mut self, ack: u32, now: u64) {
        let mut i = 0;
        while i < self.n_holes as usize {
            let (hs, he) = self.holes[i];
            if seq::le(he, ack) {
                self.close_hole(i, now);
                continue;
            }
            if seq::lt(hs, ack) {
                self.holes[i].0 = ack;
            }
            i += 1;
        }
    }
}

/// Wireshark's label for a segment that carries data, SYN or FIN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WsClass {
    None,
    Spurious,
    Fast,
    OutOfOrder,
    Retransmission,
}

// Slots of [`HsTimes`].
const FIRST_SYN: usize = 0;
const LAST_SYN: usize = 1;
const FIRST_SYNACK: usize = 2;
const LAST_SYNACK: usize = 3;
const SYN_TO_SYNACK: usize = 4;
const SYNACK_TO_ACK: usize = 5;
const CONNECT: usize = 6;
const IRTT: usize = 7;

/// Eight optional handshake times in 72 bytes instead of eight
/// `Option<u64>` (128): the values, and which of them are set.
#[derive(Clone, Copy, Debug, Default)]
struct HsTimes {
    v: [u64; 8],
    set: u8,
}

impl HsTimes {
    #[inline]
    fn get(&self, i: usize) -> Option<u64> {
        (self.set & (1 << i) != 0).then_some(self.v[i])
    }

    #[inline]
    fn set(&mut self, i: usize, ns: u64) {
        self.v[i] = ns;
        self.set |= 1 << i;
    }
}

/// TCP state of one connection.
#[derive(Clone, Debug, Default)]
pub struct TcpConn {
    /// [0] = client -> server, [1] = server -> client.
    dirs: [TcpDir; 2],
    /// Handshake times and durations ([`HsTimes`]); the initial RTT
    /// (`IRTT`) is Wireshark's: handshake ACK - most recent SYN.
    hs: HsTimes,
    syn_count: u32,
    synack_count: u32,
    established: bool,
    refused: bool,
    fin_seen: [bool; 2],
    rst_from: Option<Side>,
    /// The connection's clock: the latest timestamp of its segments. Stalls
    /// are timed on it, so a segment stamped earlier than one before it
    /// (merged or multi-queue captures) cannot shorten a stall already
    /// reported as open: zero-window time never goes down.
    last_ns: u64,
    /// The first SYN/ACK's direction (0 or 1) and its ACK number (the
    /// other side's ISN + 1): recognises that side's SYN when it arrives
    /// after the SYN/ACK (reordered across capture queues).
    synack_ack: Option<(u8, u32)>,
}

impl TcpConn {
    /// The client's initial sequence number, when its SYN was seen.
    pub fn client_isn(&self) -> Option<u32> {
        self.dirs[0].isn_valid.then_some(self.dirs[0].isn)
    }

    /// Whether a connection on this 4-tuple has ended (FIN, RST or refusal).
    pub fn is_closed(&self) -> bool {
        self.rst_from.is_some() || self.refused || self.fin_seen[0] || self.fin_seen[1]
    }

    /// Whether a SYN (no ACK) going `d` with sequence `seq` is this
    /// connection's own SYN arriving after its SYN/ACK (cross-queue
    /// reordering): no SYN was seen yet, and a SYN/ACK going the other way
    /// acknowledged exactly this ISN.
    pub fn is_late_syn(&self, d: usize, seq: u32) -> bool {
        self.syn_count == 0
            && matches!(self.synack_ack,
                Some((sd, ack)) if usize::from(sd) != d && ack == seq.wrapping_add(1))
    }

    /// Exchanges the client and server sides (a late SYN showed that the
    /// flow's roles, guessed from its first packets, were the wrong way).
    pub fn swap_sides(&mut self) {
        self.dirs.swap(0, 1);
        self.fin_seen.swap(0, 1);
        self.rst_from = self.rst_from.map(|s| match s {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        });
        if let Some((d, a)) = self.synack_ack {
            self.synack_ack = Some((1 - d, a));
        }
    }

    /// Only SYNs (and no answer) were seen.
    pub fn is_syn_only(&self) -> bool {
        self.syn_count > 0 && self.synack_count == 0 && !self.established && !self.refused
    }

    /// Feeds one TCP segment. `d` is 0 for client -> server, 1 for the reverse;
    /// `stats` are the flow's two directions in the same order.
    pub fn handle(&mut self, now: u64, m: &PacketMeta, d: usize, stats: &mut [DirStats; 2]) {
        let t = &m.tcp;
        let flags = t.flags;
        let syn = flags & F::SYN != 0;
        let ack_flag = flags & F::ACK != 0;
        let fin = flags & F::FIN != 0;
        let rst = flags & F::RST != 0;
        let seglen = m.payload_len;
        let r = 1 - d;
        self.last_ns = self.last_ns.max(now);
        let clock = self.last_ns;
        let had_ack = self.dirs[d].acked;
        let ack_advanced = ack_flag && {
            let fwd = &self.dirs[d];
            !fwd.acked || seq::gt(t.ack, fwd.lastack)
        };
        if seglen > 0 && !syn {
            let fwd = &mut self.dirs[d];
            fwd.has_data = true;
            fwd.ect_data |= m.ecn != 0;
        }
        if ack_advanced {
            let rev = &mut self.dirs[r];
            rev.acks_pending = rev.acks_pending.saturating_add(1);
        }

        // Flags and handshake.
        {
            let st = &mut stats[d];
            if syn && !ack_flag {
                bump(&mut st.syn);
            } else if syn {
                bump(&mut st.synack);
            }
            if fin {
                bump(&mut st.fin);
                self.fin_seen[d] = true;
            }
            if rst {
                bump(&mut st.rst);
            }
        }
        let late_syn = syn && !ack_flag && self.is_late_syn(d, t.seq);
        if syn {
            self.handle_syn(now, m, d, ack_flag);
        } else if ack_flag && d == 0 && !self.established {
            if let Some(synack) = self.hs.get(LAST_SYNACK) {
                if self.dirs[1].isn_valid && t.ack == self.dirs[1].isn.wrapping_add(1) {
                    self.established = true;
                    self.hs.set(SYNACK_TO_ACK, now.saturating_sub(synack));
                    if let Some(s) = self.hs.get(FIRST_SYN) {
                        self.hs.set(CONNECT, now.saturating_sub(s));
                    }
                    if let Some(s) = self.hs.get(LAST_SYN) {
                        self.hs.set(IRTT, now.saturating_sub(s));
                    }
                }
            }
        }
        if !syn && !rst && (seglen > 0 || fin) {
            // data without a handshake we saw: a connection in progress
            self.established = true;
        }
        if rst && self.rst_from.is_none() {
            self.rst_from = Some(if d == 0 { Side::Client } else { Side::Server });
            // the server answered the SYN with a reset
            self.refused =
                d == 1 && !self.established && self.synack_count == 0 && self.syn_count > 0;
        }

        // Zero window adverts and stalls (the advertiser is this packet's sender).
        if flags & (F::SYN | F::FIN | F::RST) == 0 {
            let st = &mut stats[d];
            let dir = &mut self.dirs[d];
            if t.window == 0 {
                bump(&mut st.zero_window);
                if dir.stall_since.is_none() {
                    dir.stall_since = Some(clock);
                    bump(&mut st.zero_window_events);
                }
            } else if let Some(since) = dir.stall_since.take() {
                st.zero_window_ns = st
                    .zero_window_ns
                    .saturating_add(clock.saturating_sub(since));
            }
        }

        // A late SYN after this side's later segments is only counted: it
        // must not roll back their sequence, ACK and window state.
        if !(late_syn && self.dirs[d].nextseq_valid) {
            self.analyze_sequence(now, m, d, stats);
        }

        // RTT. Per ACK, one sample: sequence -> exact ACK first (what
        // Wireshark's ack_rtt measures), else the TSecr echo of a TSval, taken
        // only from an ACK that acknowledges new data: a duplicate ACK echoes
        // the TSval of the last in-order segment, however old (RFC 7323).
        let elicits_ack = seglen > 0 || syn || fin;
        if let Some((tsval, _)) = t.opts.ts {
            let fwd = &mut self.dirs[d];
            if elicits_ack && (!fwd.tsval_valid || seq::gt(tsval, fwd.last_tsval)) {
                fwd.last_tsval = tsval;
                fwd.tsval_valid = true;
                fwd.rtt_ts.arm(tsval, now);
            }
        }
        if ack_flag {
            let rev = &mut self.dirs[r];
            let by_seq = rev.rtt_seq.resolve(t.ack, now);
            let by_ts = match t.opts.ts {
                Some((_, tsecr)) if ack_advanced => rev.rtt_ts.resolve(tsecr, now),
                _ => None,
            };
            if let Some(s) = by_seq.or(by_ts) {
                let w = rev.take_weight();
                stats[r].record_rtt(s, w);
            }
            rev.prune_holes(t.ack, now);
            // Does this side acknowledge data the tap never saw from the other?
            if ack_advanced
                && had_ack
                && !rev.has_data
                && (!rev.nextseq_valid || seq::gt(t.ack, rev.nextseq))
            {
                self.dirs[d].acked_unseen = true;
            }
        }
    }

    fn handle_syn(&mut self, now: u64, m: &PacketMeta, d: usize, ack_flag: bool) {
        let t = &m.tcp;
        let dir = &mut self.dirs[d];
        dir.isn = t.seq;
        dir.isn_valid = true;
        dir.mss = t.opts.mss;
        let mss_1500 = if m.is_v6 { MSS_1500_V6 } else { MSS_1500_V4 };
        dir.mss_clamped = t.opts.mss.is_some_and(|v| v < mss_1500);
        dir.wscale = t.opts.wscale;
        dir.sack_ok = t.opts.sack_ok;
        dir.ts_ok = t.opts.ts.is_some();
        if !ack_flag {
            // ECN setup SYN: ECE and CWR; SYN/ACK: ECE only.
            dir.ecn_setup = t.flags & (F::ECE | F::CWR) == (F::ECE | F::CWR);
            let times_known = match self.hs.get(FIRST_SYNACK) {
                Some(synack) if self.syn_count == 0 => self.late_syn_times(now, synack),
                _ => true,
            };
            self.syn_count = self.syn_count.saturating_add(1);
            if times_known && self.hs.get(FIRST_SYN).is_none() {
                self.hs.set(FIRST_SYN, now);
            }
            if self.hs.get(FIRST_SYNACK).is_none() {
                self.hs.set(LAST_SYN, now);
            }
        } else {
            dir.ecn_setup = t.flags & (F::ECE | F::CWR) == F::ECE;
            self.synack_count = self.synack_count.saturating_add(1);
            if self.hs.get(FIRST_SYNACK).is_none() {
                self.hs.set(FIRST_SYNACK, now);
                self.synack_ack = Some((d as u8, t.ack));
                if let Some(s) = self.hs.get(LAST_SYN) {
                    self.hs.set(SYN_TO_SYNACK, now.saturating_sub(s));
                }
            }
            if !self.established {
                self.hs.set(LAST_SYNACK, now);
            }
        }
    }

    /// The handshake times of the connection's first SYN arriving after its
    /// first SYN/ACK (at `synack`): when the SYN's timestamp is the earlier
    /// one (the capture's clock is right, only the delivery was reordered),
    /// the times are what they would have been in order; otherwise they stay
    /// unknown (false).
    fn late_syn_times(&mut self, now: u64, synack: u64) -> bool {
        if now > synack {
            return false;
        }
        self.hs.set(LAST_SYN, now);
        self.hs.set(SYN_TO_SYNACK, synack - now);
        if let (Some(sa), Some(sa_ack)) = (self.hs.get(LAST_SYNACK), self.hs.get(SYNACK_TO_ACK)) {
            let ack_at = sa.saturating_add(sa_ack);
            self.hs.set(CONNECT, ack_at.saturating_sub(now));
            self.hs.set(IRTT, ack_at.saturating_sub(now));
        }
        true
    }

    /// Wireshark's sequence analysis plus exact coverage, for one segment.
    fn analyze_sequence(&mut self, now: u64, m: &PacketMeta, d: usize, stats: &mut [DirStats; 2]) {
        let t = &m.tcp;
        let (seq, ack, window, flags) = (t.seq, t.ack, t.window, t.flags);
        let seglen = m.payload_len;
        let syn = flags & F::SYN != 0;
        let fin = flags & F::FIN != 0;
        let sfr = flags & (F::SYN | F::FIN | F::RST) != 0;
        let ooo_thres = self
            .hs
            .get(IRTT)
            .filter(|&v| v > 0)
            .unwrap_or(DEFAULT_OOO_NS);
        let (fwd, rev) = split_pair(&mut self.dirs, d);
        let st = &mut stats[d];

        let mut zwp = false;
        let mut keepalive = false;
        let same_as_last = seglen == 0
            && fwd.nextseq_valid
            && seq == fwd.nextseq
            && fwd.acked
            && ack == fwd.lastack
            && fwd.window_valid
            && window == fwd.window
            && !sfr;
        if seglen == 1
            && fwd.nextseq_valid
            && seq == fwd.nextseq
            && rev.window_valid
            && rev.window == 0
        {
            zwp = true;
        } else {
            keepalive =
                seglen <= 1 && fwd.nextseq_valid && seq == fwd.nextseq.wrapping_sub(1) && !sfr;
            let keepalive_ack = same_as_last && window != 0 && rev.last_keepalive;
            let zwp_ack = same_as_last && window == 0 && rev.last_zwp;
            if !keepalive_ack && !zwp_ack && same_as_last && window != 0 {
                fwd.dupacks = if fwd.dupacks < 0 {
                    1
                } else {
                    fwd.dupacks.saturating_add(1)
                };
                bump(&mut st.dup_acks);
            }
        }
        if !fwd.acked || ack != fwd.lastack {
            fwd.dupacks = 0;
        }

        // Wireshark's retransmission type.
        let mut class = WsClass::None;
        if (seglen > 0 || syn || fin) && !keepalive {
            let mut not_advanced = fwd.nextseq_valid && seq::lt(seq, fwd.nextseq);
            if seglen > 1 && fwd.nextseq_valid && fwd.nextseq.wrapping_sub(1) == seq {
                not_advanced = false;
            }
            let end_with_flags = seq.wrapping_add(seglen).wrapping_add(u32::from(syn || fin));
            if seglen > 0
                && rev.acked
                && rev.lastack != 0
                && seq::le(seq.wrapping_add(seglen), rev.lastack)
            {
                class = WsClass::Spurious;
            } else if not_advanced
                && rev.dupacks >= 2
                && rev.lastack == seq
                && now.saturating_sub(rev.lastack_ns) < FAST_RETRANS_WINDOW_NS
            {
                class = WsClass::Fast;
            } else if not_advanced
                && now.saturating_sub(fwd.nextseq_ns) < ooo_thres
                && fwd.nextseq != end_with_flags
            {
                class = WsClass::OutOfOrder;
            } else if not_advanced {
                class = WsClass::Retransmission;
            }
        }

        // Wireshark calls every 1-byte segment just below `nextseq` a
        // keep-alive. For exact coverage it is one only when its byte was
        // already acknowledged and the sender had been idle; otherwise the
        // byte is sent again (a 1-byte write retransmitted) and counts as
        // any repeat does.
        let probe = keepalive
            && (seglen == 0
                || (rev.acked
                    && seq::lt(seq, rev.lastack)
                    && now.saturating_sub(fwd.lastack_ns) >= KEEPALIVE_IDLE_NS));

        // Exact coverage of data (and FIN) bytes; SYN only sets the start.
        if syn {
            if !fwd.cov_valid {
                fwd.cov_valid = true;
                fwd.cov_end = seq.wrapping_add(1);
            }
        } else if (seglen > 0 || fin) && !probe && !zwp {
            let s = seq;
            let e = seq.wrapping_add(seglen).wrapping_add(u32::from(fin));
            let before = fwd.cov_end;
            let cov = fwd.cover(s, e, &mut st.gaps, now);
            let tsval = t.opts.ts.map(|(v, _)| v);
            // Was this segment sent before the highest one (a late original:
            // reordering) or after it (a retransmission)? TSvals answer it
            // when both carry one; otherwise Wireshark's timing rule does.
            let late_original = match (tsval, fwd.high_tsval) {
                (Some(v), Some(h)) if seq::lt(v, h) => Some(true),
                (Some(v), Some(h)) if seq::gt(v, h) => Some(false),
                _ => None,
            };
            if !fwd.cov_valid || fwd.cov_end != before || cov == Coverage::New {
                fwd.high_tsval = tsval;
            }
            match cov {
                Coverage::New => {
                    if seglen > 0 {
                        fwd.rtt_seq.arm(seq.wrapping_add(seglen), now);
                    }
                }
                Coverage::HoleFill if late_original.unwrap_or(class == WsClass::OutOfOrder) => {
                    bump(&mut st.hole_fill);
                    bump(&mut st.out_of_order);
                }
                Coverage::Seen | Coverage::HoleFill => {
                    if cov == Coverage::Seen {
                        bump(&mut st.retrans_seen);
                    } else {
                        bump(&mut st.hole_fill);
                    }
                    // Karn: no RTT from data that was sent more than once.
                    fwd.rtt_seq.clear();
                    match class {
                        WsClass::Fast => bump(&mut st.fast_retransmits),
                        WsClass::Spurious => bump(&mut st.spurious_retransmits),
                        _ => {
                            // Timer-driven (RTO or tail-loss probe): the sender
                            // had been silent for at least one initial RTT.
                            // SACK-driven recovery sends while ACKs arrive.
                            // (`lastack_ns` is when the previous segment
                            // went this way; `window_valid`: there was one.)
                            let silence = now.saturating_sub(fwd.lastack_ns);
                            if fwd.window_valid && silence >= ooo_thres {
                                bump(&mut st.rto_retransmits)
                            }
                        }
                    }
                }
            }
        }

        // Remember (Wireshark's finished_checking_retransmission_type).
        let next = seq.wrapping_add(seglen).wrapping_add(u32::from(syn || fin));
        if (!fwd.nextseq_valid || seq::gt(next, fwd.nextseq)) && !zwp {
            fwd.nextseq = next;
            fwd.nextseq_ns = now;
            fwd.nextseq_valid = true;
        }
        fwd.window = window;
        fwd.window_valid = true;
        fwd.lastack = ack;
        fwd.lastack_ns = now;
        fwd.acked |= flags & F::ACK != 0;
        fwd.last_keepalive = keepalive;
        fwd.last_zwp = zwp;
    }

    /// Time still at zero window, for each direction, up to the last packet.
    pub fn open_stall_ns(&self, d: usize) -> u64 {
        self.dirs[d]
            .stall_since
            .map_or(0, |s| self.last_ns.saturating_sub(s))
    }

    /// Head-of-line times of direction `d`'s closed holes, into `h`.
    pub fn hol(&self, d: usize, h: &mut Hol) {
        let hist = &self.dirs[d].hol;
        h.open_ns_max = hist.max();
        h.open_ns_p99 = hist.quantile(0.99);
        h.open_ns_total = u64::try_from(hist.sum()).unwrap_or(u64::MAX);
    }

    /// The tap saw data one way and not one segment (so no ACK for it) the
    /// other way, or ACKs for data it never saw from the other side: the
    /// other direction takes a path the tap is not on. (Not "data whose ACKs
    /// are missing" while the other side is seen: a capture that starts or
    /// ends mid-connection cuts ACKs off, and that is no path.)
    pub fn is_one_way(&self) -> bool {
        (0..2).any(|d| {
            let (f, r) = (&self.dirs[d], &self.dirs[1 - d]);
            (f.has_data && !r.window_valid) || (f.acked_unseen && !r.has_data)
        })
    }

    /// The record's `tcp` object. `expired`: the flow left the table by idle timeout.
    pub fn info(&self, expired: bool) -> TcpInfo {
        let c = &self.dirs[0];
        let s = &self.dirs[1];
        let state = if self.refused {
            TcpState::Refused
        } else if self.rst_from.is_some() {
            TcpState::Reset
        } else if self.fin_seen[0] && self.fin_seen[1] {
            TcpState::Closed
        } else if self.established || (self.syn_count == 0 && self.synack_count == 0) {
            TcpState::Established
        } else if expired {
            TcpState::TimedOut
        } else {
            TcpState::SynSent
        };
        let handshake = (self.syn_count > 0 || self.synack_count > 0).then(|| Handshake {
            syn_to_synack_ns: self.hs.get(SYN_TO_SYNACK),
            synack_to_ack_ns: self.hs.get(SYNACK_TO_ACK),
            connect_ns: self.hs.get(CONNECT),
            syn_count: self.syn_count.into(),
            synack_count: self.synack_count.into(),
        });
        let both_syn = c.isn_valid && s.isn_valid;
        let ecn_ok = both_syn && c.ecn_setup && s.ecn_setup;
        TcpInfo {
            handshake,
            state,
            rst_from: self.rst_from,
            mss: PerSide {
                client: c.mss,
                server: s.mss,
            },
            wscale: PerSide {
                client: c.wscale,
                server: s.wscale,
            },
            sack_ok: both_syn && c.sack_ok && s.sack_ok,
            ts_ok: both_syn && c.ts_ok && s.ts_ok,
            ecn_ok,
            path: if self.is_one_way() {
                TcpPath::OneWay
            } else {
                TcpPath::TwoWay
            },
            mss_clamped: PerSide {
                client: c.mss_clamped,
                server: s.mss_clamped,
            },
            ecn_bleached: PerSide {
                client: ecn_ok && c.has_data && !c.ect_data,
                server: ecn_ok && s.has_data && !s.ect_data,
            },
        }
    }
}

/// A connection of which only its first SYN was seen: the SYN's fields that
/// the analyzer reads, in 40 bytes instead of a [`TcpConn`]. A SYN flood of
/// never-answered connection attempts (one SYN each) holds only these. Any
/// further segment turns it into the [`TcpConn`] that the SYN would have
/// made ([`SynOnly::to_conn`] replays it), so nothing is lost.
#[derive(Clone, Copy, Debug, Default)]
pub struct SynOnly {
    ts_ns: u64,
    seq: u32,
    ack: u32,
    payload_len: u32,
    tsval: u32,
    tsecr: u32,
    window: u16,
    mss: u16,
    flags: u8,
    wscale: u8,
    /// `HAS_*` bits.
    has: u8,
}

const HAS_MSS: u8 = 1;
const HAS_WSCALE: u8 = 2;
const HAS_TS: u8 = 4;
const SACK_OK: u8 = 8;
const IS_V6: u8 = 16;

impl SynOnly {
    /// Whether `m` is a bare SYN (no ACK, FIN or RST), what [`SynOnly`] holds.
    #[inline]
    pub fn fits(m: &PacketMeta) -> bool {
        m.is_tcp() && m.tcp.flags & (F::SYN | F::ACK | F::FIN | F::RST) == F::SYN
    }

    /// The state of a connection whose first packet is the bare SYN `m`.
    /// The caller counts the SYN in the flow's client -> server direction
    /// (the one effect [`TcpConn::handle`] has on the counters of a bare
    /// first SYN).
    pub fn new(m: &PacketMeta) -> SynOnly {
        let t = &m.tcp;
        let o = &t.opts;
        let (tsval, tsecr) = o.ts.unwrap_or((0, 0));
        SynOnly {
            ts_ns: m.ts_ns,
            seq: t.seq,
            ack: t.ack,
            payload_len: m.payload_len,
            tsval,
            tsecr,
            window: t.window,
            mss: o.mss.unwrap_or(0),
            flags: t.flags,
            wscale: o.wscale.unwrap_or(0),
            has: (u8::from(o.mss.is_some()) * HAS_MSS)
                | (u8::from(o.wscale.is_some()) * HAS_WSCALE)
                | (u8::from(o.ts.is_some()) * HAS_TS)
                | (u8::from(o.sack_ok) * SACK_OK)
                | (u8::from(m.is_v6) * IS_V6),
        }
    }

    /// The client's initial sequence number.
    pub fn client_isn(&self) -> u32 {
        self.seq
    }

    /// The [`TcpConn`] that handling the SYN gives: the SYN replayed through
    /// [`TcpConn::handle`] (its counter effect, the SYN count, goes to
    /// scratch counters: the flow counted it already).
    pub fn to_conn(&self) -> TcpConn {
        let m = PacketMeta {
            ts_ns: self.ts_ns,
            proto: proto::TCP,
            is_v6: self.has & IS_V6 != 0,
            payload_len: self.payload_len,
            tcp: TcpMeta {
                seq: self.seq,
                ack: self.ack,
                flags: self.flags,
                window: self.window,
                opts: TcpOpts {
                    mss: (self.has & HAS_MSS != 0).then_some(self.mss),
                    wscale: (self.has & HAS_WSCALE != 0).then_some(self.wscale),
                    sack_ok: self.has & SACK_OK != 0,
                    ts: (self.has & HAS_TS != 0).then_some((self.tsval, self.tsecr)),
                    ..TcpOpts::default()
                },
            },
            ..PacketMeta::default()
        };
        let mut c = TcpConn::default();
        let mut scratch: [DirStats; 2] = Default::default();
        c.handle(self.ts_ns, &m, 0, &mut scratch);
        c
    }
}

fn split_pair<T>(pair: &mut [T; 2], d: usize) -> (&mut T, &mut T) {
    let (a, b) = pair.split_at_mut(1);
    if d == 0 {
        (&mut a[0], &mut b[0])
    } else {
        (&mut b[0], &mut a[0])
    }
}

#[cfg(test)]
mod syn_only_tests {
    use super::*;

    fn syn(flags: u8, ts: Option<(u32, u32)>, payload: u32) -> PacketMeta {
        PacketMeta {
            ts_ns: 1_700_000_000_000_000_000,
            proto: proto::TCP,
            payload_len: payload,
            ip_len: 40 + payload,
            tcp: TcpMeta {
                seq: 0xffff_fff0,
                ack: 7,
                flags,
                window: 64240,
                opts: TcpOpts {
                    mss: Some(1460),
                    wscale: if ts.is_some() { Some(7) } else { None },
                    sack_ok: ts.is_some(),
                    ts,
                    ..TcpOpts::default()
                },
            },
            ..PacketMeta::default()
        }
    }

    /// The replayed SYN gives the very state (every field) and counters that
    /// handling the SYN gives.
    #[test]
    fn replayed_syn_is_the_handled_syn() {
        for m in [
            syn(F::SYN, None, 0),
            syn(F::SYN | F::ECE | F::CWR, Some((12345, 0)), 0),
            syn(F::SYN | F::PSH, Some((1, 99)), 100),
        ] {
            assert!(SynOnly::fits(&m));
            let mut direct = TcpConn::default();
            let mut stats: [DirStats; 2] = Default::default();
            direct.handle(m.ts_ns, &m, 0, &mut stats);
            let replayed = SynOnly::new(&m).to_conn();
            assert_eq!(format!("{direct:?}"), format!("{replayed:?}"));
            // the one counter a bare SYN touches, counted by the table
            let mut only_syn: [DirStats; 2] = Default::default();
            only_syn[0].syn = 1;
            assert_eq!(format!("{stats:?}"), format!("{only_syn:?}"));
        }
        for flags in [F::SYN | F::ACK, F::SYN | F::RST, F::SYN | F::FIN, F::ACK] {
            assert!(!SynOnly::fits(&syn(flags, None, 0)));
        }
    }
}

#[cfg(test)]
mod size_tests {
    /// The compact form must stay compact: a SYN flood holds one per flow.
    #[test]
    fn syn_only_is_40_bytes() {
        assert_eq!(std::mem::size_of::<super::SynOnly>(), 40);
        eprintln!("TcpConn: {} B", std::mem::size_of::<super::TcpConn>());
    }
}

#[cfg(test)]
mod saturation_tests {
    use super::*;

    fn ack(ts_ns: u64, window: u16) -> PacketMeta {
        PacketMeta {
            ts_ns,
            proto: proto::TCP,
            ip_len: 40,
            tcp: TcpMeta {
                seq: 1000,
                ack: 7,
                flags: F::ACK,
                window,
                opts: TcpOpts::default(),
            },
            ..PacketMeta::default()
        }
    }

    /// A duplicate ACK on a direction whose run of duplicates is already at
    /// `i32::MAX` keeps it there (no overflow panic, no wrap to negative).
    #[test]
    fn dupacks_saturate_at_i32_max() {
        let mut c = TcpConn::default();
        let mut stats: [DirStats; 2] = Default::default();
        let t0 = 1_700_000_000_000_000_000;
        c.handle(t0, &ack(t0, 512), 0, &mut stats);
        c.handle(t0 + 1, &ack(t0 + 1, 512), 0, &mut stats);
        assert_eq!(
            stats[0].dup_acks, 1,
            "the second identical ACK is a dup ACK"
        );
        c.dirs[0].dupacks = i32::MAX;
        c.handle(t0 + 2, &ack(t0 + 2, 512), 0, &mut stats);
        assert_eq!(c.dirs[0].dupacks, i32::MAX);
        assert_eq!(stats[0].dup_acks, 2);
    }

    /// A stall closing on a direction whose summed stall time is near
    /// `u64::MAX` saturates instead of overflowing.
    #[test]
    fn zero_window_ns_saturates() {
        let mut c = TcpConn::default();
        let mut stats: [DirStats; 2] = Default::default();
        let t0 = 1_700_000_000_000_000_000;
        stats[0].zero_window_ns = u64::MAX - 10;
        c.handle(t0, &ack(t0, 0), 0, &mut stats);
        c.handle(t0 + 1_000, &ack(t0 + 1_000, 512), 0, &mut stats);
        assert_eq!(stats[0].zero_window_events, 1);
        assert_eq!(stats[0].zero_window_ns, u64::MAX);
        // and the record and the totals built from it stay saturated
        let open = c.open_stall_ns(0);
        assert_eq!(stats[0].to_report(open).zero_window_ns, u64::MAX);
        let mut t = crate::report::TcpTotals::default();
        stats[0].add_to_totals(&mut t, u64::MAX);
        stats[0].add_to_totals(&mut t, u64::MAX);
        assert_eq!(t.zero_window_ns, u64::MAX);
    }
}
