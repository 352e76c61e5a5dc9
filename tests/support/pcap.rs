//! A tiny pcap writer for tests: Ethernet + IPv4 + TCP frames with
//! nanosecond timestamps, and whole conversations with a chosen RTT.

use std::path::Path;

const SEC: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;

/// The capture's bytes and the receive window of the segments to come.
pub struct Pcap(Vec<u8>, u16);

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const FIN: u8 = 0x01;
pub const PSH: u8 = 0x08;

impl Pcap {
    pub fn new() -> Pcap {
        let mut b = Vec::new();
        b.extend_from_slice(&0xa1b2_3c4du32.to_le_bytes()); // ns timestamps
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(&4u16.to_le_bytes());
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&65535u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes()); // Ethernet
        Pcap(b, 0xffff)
    }

    /// The receive window the following segments advertise (0: a stall).
    pub fn set_window(&mut self, w: u16) {
        self.1 = w;
    }

    #[expect(clippy::too_many_arguments, reason = "one TCP segment's header fields")]
    pub fn tcp(
        &mut self,
        ts: u64,
        src: ([u8; 4], u16),
        dst: ([u8; 4], u16),
        seq: u32,
        ack: u32,
        flags: u8,
        len: usize,
    ) {
        let mut f = ETHERNET.to_vec();
        f.extend_from_slice(&ipv4(6, src.0, dst.0, 20 + len));
        f.extend_from_slice(&src.1.to_be_bytes());
        f.extend_from_slice(&dst.1.to_be_bytes());
        f.extend_from_slice(&seq.to_be_bytes());
        f.extend_from_slice(&ack.to_be_bytes());
        f.extend_from_slice(&[0x50, flags]);
        f.extend_from_slice(&self.1.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0]);
        f.resize(f.len() + len, 0x61);
        self.record(ts, &f);
    }

    /// An ICMP "fragmentation needed" (type 3 code 4, next-hop `mtu`) from
    /// `router` to `src`, quoting a TCP segment of `len` payload bytes
    /// `src` -> `dst` with sequence `seq`.
    #[expect(clippy::too_many_arguments, reason = "the quoted segment's fields")]
    pub fn frag_needed(
        &mut self,
        ts: u64,
        router: [u8; 4],
        src: ([u8; 4], u16),
        dst: ([u8; 4], u16),
        seq: u32,
        len: usize,
        mtu: u16,
    ) {
        let mut icmp = vec![3, 4, 0, 0, 0, 0];
        icmp.extend_from_slice(&mtu.to_be_bytes());
        icmp.extend_from_slice(&ipv4(6, src.0, dst.0, 20 + len));
        icmp.extend_from_slice(&src.1.to_be_bytes());
        icmp.extend_from_slice(&dst.1.to_be_bytes());
        icmp.extend_from_slice(&seq.to_be_bytes());
        let sum = checksum(&icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        let mut f = ETHERNET.to_vec();
        f.extend_from_slice(&ipv4(1, router, src.0, icmp.len()));
        f.extend_from_slice(&icmp);
        self.record(ts, &f);
    }

    fn record(&mut self, ts: u64, f: &[u8]) {
        self.0.extend_from_slice(&((ts / SEC) as u32).to_le_bytes());
        self.0.extend_from_slice(&((ts % SEC) as u32).to_le_bytes());
        self.0.extend_from_slice(&(f.len() as u32).to_le_bytes());
        self.0.extend_from_slice(&(f.len() as u32).to_le_bytes());
        self.0.extend_from_slice(f);
    }

    /// A whole connection: handshake, `segments` request segments of 100
    /// bytes each acknowledged after `rtt`, every `retx_every`-th sent twice,
    /// then a FIN exchange.
    pub fn conversation(
        &mut self,
        t0: u64,
        c: ([u8; 4], u16),
        s: ([u8; 4], u16),
        rtt: u64,
        segments: u32,
        retx_every: Option<u32>,
    ) {
        let (ci, si) = (1000u32, 50_000u32);
        self.tcp(t0, c, s, ci, 0, SYN, 0);
        self.tcp(t0 + rtt, s, c, si, ci + 1, SYN | ACK, 0);
        self.tcp(t0 + rtt + 50_000, c, s, ci + 1, si + 1, ACK, 0);
        let mut t = t0 + rtt + 100_000;
        for i in 0..segments {
            let seq = ci + 1 + i * 100;
            self.tcp(t, c, s, seq, si + 1, ACK | PSH, 100);
            if retx_every.is_some_and(|k| i % k == 0) {
                self.tcp(t + MS / 2, c, s, seq, si + 1, ACK | PSH, 100);
            }
            self.tcp(t + rtt, s, c, si + 1, seq + 100, ACK, 0);
            t += rtt + MS;
        }
        let end = ci + 1 + segments * 100;
        self.tcp(t, c, s, end, si + 1, FIN | ACK, 0);
        self.tcp(t + rtt, s, c, si + 1, end + 1, FIN | ACK, 0);
        self.tcp(t + rtt + 50_000, c, s, end + 1, si + 2, ACK, 0);
    }

    pub fn write(&self, p: &Path) {
        std::fs::write(p, &self.0).unwrap();
    }
}

/// Destination, source MAC and EtherType IPv4.
const ETHERNET: [u8; 14] = [0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];

/// An IPv4 header (no options, DF) of protocol `proto` before `payload` bytes.
fn ipv4(proto: u8, src: [u8; 4], dst: [u8; 4], payload: usize) -> Vec<u8> {
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0];
    ip[2..4].copy_from_slice(&((20 + payload) as u16).to_be_bytes());
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip
}

/// The Internet checksum (RFC 1071) of `b`.
fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
