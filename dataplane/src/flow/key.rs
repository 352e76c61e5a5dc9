//! Flow keys: one key for both directions of a conversation.
#![forbid(unsafe_code)]

use std::hash::{Hash, Hasher};

use crate::meta::{Addr, PacketMeta};

/// Canonical, direction-free flow key: the endpoint that sorts lower is `a`.
///
/// `Hash` writes five `u64` words (the two addresses, then ports, protocol,
/// IPv6 flag and VLAN packed into one), not field by field: a keyed hasher
/// then costs five rounds per packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowKey {
    pub a: Addr,
    pub b: Addr,
    pub port_a: u16,
    pub port_b: u16,
    pub proto: u8,
    /// IPv6 packet: an IPv4-mapped IPv6 address must not meet IPv4 traffic.
    pub v6: bool,
    /// 0xffff when untagged (VLAN ids are 12 bits).
    pub vlan: u16,
}

/// Which way a packet goes relative to the canonical key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyDir {
    /// src is `a`.
    AtoB,
    /// src is `b`.
    BtoA,
}

pub const NO_VLAN: u16 = 0xffff;

/// An address as two little-endian words.
#[inline]
fn words(a: &Addr) -> (u64, u64) {
    let (lo, hi) = a.0.split_at(8);
    let w = |b: &[u8]| {
        let mut x = [0u8; 8];
        x.copy_from_slice(b);
        u64::from_le_bytes(x)
    };
    (w(lo), w(hi))
}

impl Hash for FlowKey {
    #[inline]
    fn hash<H: Hasher>(&self, h: &mut H) {
        let (a0, a1) = words(&self.a);
        let (b0, b1) = words(&self.b);
        h.write_u64(a0);
        h.write_u64(a1);
        h.write_u64(b0);
        h.write_u64(b1);
        h.write_u64(
            u64::from(self.port_a)
                | u64::from(self.port_b) << 16
                | u64::from(self.proto) << 32
                | u64::from(self.v6) << 40
                | u64::from(self.vlan) << 48,
        );
    }
}

impl FlowKey {
    /// The key of a packet, and which way it goes.
    #[inline]
    pub fn of(m: &PacketMeta) -> (FlowKey, KeyDir) {
        let (mut k, d) = Self::from_parts(m.src, m.sport, m.dst, m.dport, m.proto, m.vlan);
        k.v6 = m.is_v6;
        (k, d)
    }

    /// The key of a packet given by parts (`v6` false: set it for IPv6).
    #[inline]
    pub fn from_parts(
        src: Addr,
        sport: u16,
        dst: Addr,
        dport: u16,
        proto: u8,
        vlan: Option<u16>,
    ) -> (FlowKey, KeyDir) {
        let vlan = vlan.unwrap_or(NO_VLAN);
        // The order of (address bytes, port), compared as two integers: an
        // address read big-endian orders as its bytes do.
        let s = (u128::from_be_bytes(src.0), sport);
        let d = (u128::from_be_bytes(dst.0), dport);
        if s <= d {
            let k = FlowKey {
                a: src,
                b: dst,
                port_a: sport,
                port_b: dport,
                proto,
                v6: false,
                vlan,
            };
            (k, KeyDir::AtoB)
        } else {
            let k = FlowKey {
                a: dst,
                b: src,
                port_a: dport,
                port_b: sport,
                proto,
                v6: false,
                vlan,
            };
            (k, KeyDir::BtoA)
        }
    }

    /// A hash that is the same for both directions and independent of the
    /// table's keyed hasher: it picks the worker that owns a flow.
    #[inline]
    pub fn symmetric_hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for chunk in [&self.a.0[..], &self.b.0[..]] {
            for w in chunk.chunks_exact(8) {
                let v = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
                h = (h ^ v).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(23);
            }
        }
        h ^=
            (u64::from(self.port_a) << 32) | (u64::from(self.port_b) << 16) | u64::from(self.proto);
        h ^= u64::from(self.vlan) << 48;
        // final avalanche (splitmix64)
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_directions_share_a_key() {
        let c = Addr::from_v4([198, 18, 0, 1]);
        let s = Addr::from_v4([198, 18, 1, 1]);
        let (k1, d1) = FlowKey::from_parts(c, 40000, s, 80, 6, None);
        let (k2, d2) = FlowKey::from_parts(s, 80, c, 40000, 6, None);
        assert_eq!(k1, k2);
        assert_ne!(d1, d2);
        assert_eq!(k1.symmetric_hash(), k2.symmetric_hash());
        // `a` is the endpoint whose (address, port) sorts lower, byte by byte.
        for (x, px, y, py) in [
            (c, 9, c, 8),
            (c, 8, c, 9),
            (Addr::from_v6([1; 16]), 1, Addr::from_v6([2; 16]), 0),
            (Addr::from_v6([2; 16]), 0, Addr::from_v6([1; 16]), 1),
            (Addr::from_v6([0xff; 16]), 0, c, 0),
        ] {
            let (k, d) = FlowKey::from_parts(x, px, y, py, 6, None);
            assert_eq!(d == KeyDir::AtoB, (x, px) <= (y, py));
            assert!((k.a, k.port_a) <= (k.b, k.port_b));
        }
        let (k3, _) = FlowKey::from_parts(c, 40001, s, 80, 6, None);
        assert_ne!(k1.symmetric_hash(), k3.symmetric_hash());
        // The table's keyed hash sees every field.
        let rs = ahash::RandomState::with_seeds(1, 2, 3, 4);
        assert_eq!(rs.hash_one(k1), rs.hash_one(k2));
        let mut k4 = k1;
        k4.v6 = true;
        let mut k5 = k1;
        k5.vlan = 7;
        let mut k6 = k1;
        k6.proto = 17;
        for k in [k3, k4, k5, k6] {
            assert_ne!(rs.hash_one(k1), rs.hash_one(k), "{k:?}");
        }
    }
}
