//! Microburst meter: the most packets and bytes seen in one 1 ms bin.
//!
//! Bins are fixed and aligned: bin `k` covers `[k ms, (k + 1) ms)` since the
//! Unix epoch (`now_ns / 1_000_000`), as schema `wirelens.flow.v1` defines
//! `burst.max_packets_1ms` / `max_bytes_1ms`. Only the current bin's running
//! totals and the maxima are kept: 24 bytes.
//!
//! Time going backwards (captures merged from several interfaces or queues):
//! a packet whose bin is *older* than the current bin cannot be added to its own
//! bin any more, and adding it to the current bin would inflate a bin it does
//! not belong to. It is counted as a bin of its own, one packet and its bytes,
//! for the maxima; the current bin goes on unchanged. The maxima are therefore
//! exact for timestamps in order and a lower bound otherwise: reordering never
//! inflates them.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

const NS_PER_MS: u64 = 1_000_000;

/// Most packets and bytes in one aligned 1 ms bin; see the
/// [module documentation](self).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BurstMeter {
    /// Index (ms since the epoch) of the current bin; meaningless while
    /// `bin_packets == 0`.
    bin: u64,
    bin_packets: u32,
    /// Bytes in the current bin, saturating (4 GiB per ms is 34 Tbit/s).
    bin_bytes: u32,
    max_packets: u32,
    max_bytes: u32,
}

impl BurstMeter {
    pub const fn new() -> BurstMeter {
        BurstMeter {
            bin: 0,
            bin_packets: 0,
            bin_bytes: 0,
            max_packets: 0,
            max_bytes: 0,
        }
    }

    /// Counts one packet of `bytes` bytes at `now_ns` (ns since the epoch).
    #[inline]
    pub fn update(&mut self, now_ns: u64, bytes: u64) {
        let bin = now_ns / NS_PER_MS;
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
        if self.bin_packets == 0 || bin > self.bin {
            self.bin = bin;
            self.bin_packets = 1;
            self.bin_bytes = bytes;
        } else if bin == self.bin {
            self.bin_packets = self.bin_packets.saturating_add(1);
            self.bin_bytes = self.bin_bytes.saturating_add(bytes);
        } else {
            // An older bin: a bin of its own, for the maxima only.
            self.max_packets = self.max_packets.max(1);
            self.max_bytes = self.max_bytes.max(bytes);
            return;
        }
        self.max_packets = self.max_packets.max(self.bin_packets);
        self.max_bytes = self.max_bytes.max(self.bin_bytes);
    }

    /// Most packets seen in one bin (0 before the first packet).
    pub fn max_packets(&self) -> u64 {
        u64::from(self.max_packets)
    }

    /// Most bytes seen in one bin (0 before the first packet); saturates at
    /// `u32::MAX`.
    pub fn max_bytes(&self) -> u64 {
        u64::from(self.max_bytes)
    }

    /// Takes the maxima of both meters. This is the largest burst of either
    /// part, not of their combined traffic: two flows bursting in the same
    /// bin do not add up here (the node-wide meter sees all packets and
    /// measures the combined traffic itself). The current bin continues from
    /// whichever meter is later.
    pub fn merge(&mut self, other: &BurstMeter) {
        self.max_packets = self.max_packets.max(other.max_packets);
        self.max_bytes = self.max_bytes.max(other.max_bytes);
        if other.bin_packets != 0 && (self.bin_packets == 0 || other.bin > self.bin) {
            self.bin = other.bin;
            self.bin_packets = other.bin_packets;
            self.bin_bytes = other.bin_bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = NS_PER_MS;

    #[test]
    fn size() {
        assert_eq!(std::mem::size_of::<BurstMeter>(), 24);
    }

    #[test]
    fn empty() {
        let m = BurstMeter::new();
        assert_eq!((m.max_packets(), m.max_bytes()), (0, 0));
        assert_eq!(m, BurstMeter::default());
    }

    #[test]
    fn bins_are_aligned_to_whole_milliseconds() {
        let mut m = BurstMeter::new();
        // 3 packets inside [5 ms, 6 ms), although they span less than 1 ms
        // together with the next two, which fall in [6 ms, 7 ms).
        let t0 = 1_700_000_000_000 * MS;
        for dt in [5 * MS, 5 * MS + 500_000, 6 * MS - 1] {
            m.update(t0 + dt, 100);
        }
        m.update(t0 + 6 * MS, 1500);
        m.update(t0 + 6 * MS + 10, 1500);
        assert_eq!(m.max_packets(), 3);
        assert_eq!(m.max_bytes(), 3000);
        // A later, bigger bin.
        for _ in 0..10 {
            m.update(t0 + 100 * MS, 10);
        }
        assert_eq!((m.max_packets(), m.max_bytes()), (10, 3000));
    }

    #[test]
    fn time_going_backwards_never_inflates() {
        let mut m = BurstMeter::new();
        m.update(10 * MS, 100);
        m.update(10 * MS + 1, 100);
        // Older bin: counted alone.
        m.update(9 * MS, 5000);
        assert_eq!((m.max_packets(), m.max_bytes()), (2, 5000));
        // The current bin goes on.
        m.update(10 * MS + 2, 100);
        assert_eq!((m.max_packets(), m.max_bytes()), (3, 5000));
        // Same bin but slightly earlier time: still the same bin.
        m.update(10 * MS, 100);
        assert_eq!(m.max_packets(), 4);
    }

    #[test]
    fn saturates() {
        let mut m = BurstMeter::new();
        m.update(0, u64::MAX);
        m.update(1, 5);
        assert_eq!(m.max_bytes(), u64::from(u32::MAX));
        assert_eq!(m.max_packets(), 2);
    }

    #[test]
    fn merge_takes_maxima() {
        let mut a = BurstMeter::new();
        let mut b = BurstMeter::new();
        for i in 0..5 {
            a.update(MS + i, 10);
        }
        b.update(7 * MS, 9000);
        b.update(7 * MS, 9000);
        let mut m = a;
        m.merge(&b);
        assert_eq!((m.max_packets(), m.max_bytes()), (5, 18000));
        // Commutative in the maxima, empty is the identity.
        let mut n = b;
        n.merge(&a);
        assert_eq!((n.max_packets(), n.max_bytes()), (5, 18000));
        let mut e = BurstMeter::new();
        e.merge(&a);
        assert_eq!(e, a);
        // The current bin continues from the later meter.
        m.update(7 * MS, 1);
        assert_eq!(m.max_packets(), 5);
        assert_eq!(m.max_bytes(), 18001);
    }

    #[test]
    fn serde_round_trip() {
        let mut m = BurstMeter::new();
        m.update(3 * MS, 40);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<BurstMeter>(&json).unwrap(), m);
    }
}
