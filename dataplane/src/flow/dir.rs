//! Per-direction counters of one flow, kept compact (event counters are u32,
//! saturating) and turned into the report's `Direction` at export.
#![forbid(unsafe_code)]

use crate::report::{self, Burst, Hol, Rtt, TcpTotals, Ttl, TTL_VALUES};
use crate::stats::{BurstMeter, Histogram};

/// What the tap saw going one way in one flow.
#[derive(Clone, Debug, Default)]
pub struct DirStats {
    pub packets: u64,
    pub bytes: u64,
    pub payload_bytes: u64,
    pub zero_window_ns: u64,
    pub syn: u32,
    pub synack: u32,
    pub fin: u32,
    pub rst: u32,
    pub retrans_seen: u32,
    pub hole_fill: u32,
    pub gaps: u32,
    pub out_of_order: u32,
    pub fast_retransmits: u32,
    pub spurious_retransmits: u32,
    pub rto_retransmits: u32,
    pub dup_acks: u32,
    pub zero_window: u32,
    pub zero_window_events: u32,
    pub ecn_ce: u32,
    pub frags: u32,
    pub burst: BurstMeter,
    /// RTT of this direction's data (tap -> receiver -> tap).
    pub rtt: Histogram,
    pub rtt_last: u64,
    /// TTL (hop limit) changes from one packet to the next, the last TTL,
    /// and the first [`TTL_VALUES`] distinct ones (`ttl_n` of them).
    pub ttl_changes: u32,
    pub ttl_last: u8,
    pub ttl_n: u8,
    pub ttl_values: [u8; TTL_VALUES],
}

/// Saturating increment for the u32 event counters.
#[inline]
pub fn bump(c: &mut u32) {
    *c = c.saturating_add(1);
}

impl DirStats {
    /// Counts a packet of `ip_len` L3 bytes with `payload` L4 payload bytes.
    #[inline]
    pub fn count_packet(&mut self, now: u64, ip_len: u32, payload: u32) {
        self.packets = self.packets.saturating_add(1);
        self.bytes = self.bytes.saturating_add(u64::from(ip_len));
        self.payload_bytes = self.payload_bytes.saturating_add(u64::from(payload));
        self.burst.update(now, u64::from(ip_len));
    }

    /// Notes the TTL (hop limit) of a packet: one compare unless it changed.
    #[inline]
    pub fn note_ttl(&mut self, ttl: u8) {
        if ttl != self.ttl_last || self.ttl_n == 0 {
            self.ttl_changed(ttl);
        }
    }

    #[cold]
    fn ttl_changed(&mut self, ttl: u8) {
        if self.ttl_n != 0 {
            bump(&mut self.ttl_changes);
        }
        self.ttl_last = ttl;
        let n = usize::from(self.ttl_n);
        if n < TTL_VALUES && !self.ttl_values[..n].contains(&ttl) {
            self.ttl_values[n] = ttl;
            self.ttl_n += 1;
        }
    }

    /// Records an RTT sample that stands for `weight` ACKs, so that quantiles
    /// are per ACK (as Wireshark's `ack_rtt`) however often samples are taken.
    #[inline]
    pub fn record_rtt(&mut self, sample_ns: u64, weight: u64) {
        self.rtt.record_n(sample_ns, weight);
        self.rtt_last = sample_ns;
    }

    /// Wireshark-compatible retransmission count: segments below the highest
    /// sequence seen, less those classed as reordering.
    pub fn retransmits(&self) -> u64 {
        (u64::from(self.retrans_seen) + u64::from(self.hole_fill))
            .saturating_sub(u64::from(self.out_of_order))
    }

    /// Adds this direction's TCP counters to capture-wide totals without
    /// building a record (summaries of live tables run every second).
    pub fn add_to_totals(&self, t: &mut TcpTotals, open_stall_ns: u64) {
        t.syn = t.syn.saturating_add(u64::from(self.syn));
        t.synack = t.synack.saturating_add(u64::from(self.synack));
        t.fin = t.fin.saturating_add(u64::from(self.fin));
        t.rst = t.rst.saturating_add(u64::from(self.rst));
        t.retrans_seen = t.retrans_seen.saturating_add(u64::from(self.retrans_seen));
        t.hole_fill = t.hole_fill.saturating_add(u64::from(self.hole_fill));
        t.gaps = t.gaps.saturating_add(u64::from(self.gaps));
        t.out_of_order = t.out_of_order.saturating_add(u64::from(self.out_of_order));
        t.retransmits = t.retransmits.saturating_add(self.retransmits());
        t.fast_retransmits = t
            .fast_retransmits
            .saturating_add(u64::from(self.fast_retransmits));
        t.spurious_retransmits = t
            .spurious_retransmits
            .saturating_add(u64::from(self.spurious_retransmits));
        t.rto_retransmits = t
            .rto_retransmits
            .saturating_add(u64::from(self.rto_retransmits));
        t.dup_acks = t.dup_acks.saturating_add(u64::from(self.dup_acks));
        t.zero_window = t.zero_window.saturating_add(u64::from(self.zero_window));
        t.zero_window_events = t
            .zero_window_events
            .saturating_add(u64::from(self.zero_window_events));
        t.zero_window_ns = t
            .zero_window_ns
            .saturating_add(self.zero_window_ns.saturating_add(open_stall_ns));
        t.ecn_ce = t.ecn_ce.saturating_add(u64::from(self.ecn_ce));
    }

    pub fn rtt_report(&self) -> Rtt {
        let h = &self.rtt;
        if h.is_empty() {
            return Rtt::default();
        }
        Rtt {
            n: h.count(),
            min_ns: h.min(),
            p50_ns: h.quantile(0.50),
            p90_ns: h.quantile(0.90),
            p99_ns: h.quantile(0.99),
            max_ns: h.max(),
            mean_ns: h.mean(),
            last_ns: Some(self.rtt_last),
        }
    }

    /// `open_stall_ns`: time at zero window not yet closed by a window opening,
    /// counted up to the flow's last packet.
    pub fn to_report(&self, open_stall_ns: u64) -> report::Direction {
        report::Direction {
            packets: self.packets,
            bytes: self.bytes,
            payload_bytes: self.payload_bytes,
            syn: self.syn.into(),
            synack: self.synack.into(),
            fin: self.fin.into(),
            rst: self.rst.into(),
            retrans_seen: self.retrans_seen.into(),
            hole_fill: self.hole_fill.into(),
            gaps: self.gaps.into(),
            out_of_order: self.out_of_order.into(),
            retransmits: self.retransmits(),
            fast_retransmits: self.fast_retransmits.into(),
            spurious_retransmits: self.spurious_retransmits.into(),
            rto_retransmits: self.rto_retransmits.into(),
            dup_acks: self.dup_acks.into(),
            zero_window: self.zero_window.into(),
            zero_window_events: self.zero_window_events.into(),
            zero_window_ns: self.zero_window_ns.saturating_add(open_stall_ns),
            ecn_ce: self.ecn_ce.into(),
            frags: self.frags.into(),
            rtt: self.rtt_report(),
            burst: Burst {
                max_packets_1ms: self.burst.max_packets(),
                max_bytes_1ms: self.burst.max_bytes(),
            },
            // The times come from the TCP state ([`crate::flow::tcp::TcpConn::hol`]).
            hol: Hol {
                holes: self.gaps.into(),
                ..Hol::default()
            },
            ttl: Ttl {
                changes: self.ttl_changes.into(),
                // The values only when they changed: a direction of one
                // TTL reports nothing (and allocates nothing).
                values: if self.ttl_changes > 0 {
                    self.ttl_values[..usize::from(self.ttl_n)].to_vec()
                } else {
                    Vec::new()
                },
            },
        }
    }
}
