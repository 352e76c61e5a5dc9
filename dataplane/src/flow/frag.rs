//! Ports of fragmented datagrams, learnt from their first fragment, so that
//! later fragments (which carry no L4 header) land in the same flow. Used by
//! the engine (flow attribution) and the pipeline (owner choice).
#![forbid(unsafe_code)]

use crate::meta::{Addr, Frag, PacketMeta};

/// Entries of the cache (direct-mapped).
const FRAG_CACHE: usize = 1024;

#[derive(Clone, Copy, Debug, Default)]
struct FragEntry {
    src: Addr,
    dst: Addr,
    id: u32,
    proto: u8,
    valid: bool,
    sport: u16,
    dport: u16,
}

/// The cache: the last datagram seen in each slot wins.
#[derive(Debug)]
pub(crate) struct FragPorts {
    slots: Vec<FragEntry>,
}

impl FragPorts {
    pub(crate) fn new() -> FragPorts {
        FragPorts {
            slots: vec![FragEntry::default(); FRAG_CACHE],
        }
    }

    fn slot(m: &PacketMeta) -> usize {
        let mut h = u64::from(m.frag_id) ^ (u64::from(m.proto) << 32);
        for b in m.src.0[12..].iter().chain(m.dst.0[12..].iter()) {
            h = h.rotate_left(5) ^ u64::from(*b);
        }
        h = h.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h >> 54) as usize % FRAG_CACHE
    }

    pub(crate) fn learn(&mut self, m: &mut PacketMeta) {
        let e = &mut self.slots[Self::slot(m)];
        match m.frag {
            Frag::First => {
                *e = FragEntry {
                    src: m.src,
                    dst: m.dst,
                    id: m.frag_id,
                    proto: m.proto,
                    valid: true,
                    sport: m.sport,
                    dport: m.dport,
                };
            }
            Frag::Later => {
                if e.valid
                    && e.id == m.frag_id
                    && e.proto == m.proto
                    && e.src == m.src
                    && e.dst == m.dst
                {
                    m.sport = e.sport;
                    m.dport = e.dport;
                }
            }
            Frag::None => {}
        }
    }
}
