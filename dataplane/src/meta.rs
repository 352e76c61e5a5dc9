//! The compact per-packet record that the parser produces and the flow engine
//! consumes. It holds header fields only, never payload, and is `Copy` so that a
//! worker can hand it to another core without touching the frame.
#![forbid(unsafe_code)]

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IP address in one fixed-size form: IPv4 is stored IPv4-mapped
/// (`::ffff:a.b.c.d`), so keys hash and compare as plain bytes.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Addr(pub [u8; 16]);

impl Addr {
    pub const UNSPECIFIED: Addr = Addr([0; 16]);

    #[inline]
    pub fn from_v4(b: [u8; 4]) -> Addr {
        let mut a = [0u8; 16];
        a[10] = 0xff;
        a[11] = 0xff;
        a[12..].copy_from_slice(&b);
        Addr(a)
    }

    #[inline]
    pub fn from_v6(b: [u8; 16]) -> Addr {
        Addr(b)
    }

    #[inline]
    pub fn is_v4(&self) -> bool {
        self.0[..10] == [0; 10] && self.0[10] == 0xff && self.0[11] == 0xff
    }

    pub fn to_ip(&self) -> IpAddr {
        if self.is_v4() {
            IpAddr::V4(Ipv4Addr::new(
                self.0[12], self.0[13], self.0[14], self.0[15],
            ))
        } else {
            IpAddr::V6(Ipv6Addr::from(self.0))
        }
    }
}

impl From<IpAddr> for Addr {
    fn from(ip: IpAddr) -> Addr {
        match ip {
            IpAddr::V4(v4) => Addr::from_v4(v4.octets()),
            IpAddr::V6(v6) => Addr::from_v6(v6.octets()),
        }
    }
}

impl fmt::Debug for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_ip())
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_ip())
    }
}

/// IP protocol numbers the engine distinguishes.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
}

/// TCP flag bits as in the header's flags byte.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// Where a packet stands in IP fragmentation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Frag {
    /// Not a fragment.
    #[default]
    None,
    /// First fragment (offset 0, more fragments): carries the L4 header.
    First,
    /// A later fragment: no L4 header, ports unknown (0 in the meta).
    Later,
}

/// TCP options the analyzer uses. Absent options are `None`/`false`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpOpts {
    pub mss: Option<u16>,
    pub wscale: Option<u8>,
    pub sack_ok: bool,
    /// (TSval, TSecr)
    pub ts: Option<(u32, u32)>,
    /// SACK blocks (left edge, right edge), `sack_n` of them valid.
    pub sack: [(u32, u32); 4],
    pub sack_n: u8,
}

/// TCP header fields. Valid when `PacketMeta::proto == TCP` and the packet is not
/// a later fragment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpMeta {
    pub seq: u32,
    pub ack: u32,
    /// Flags byte ([`tcp_flags`]).
    pub flags: u8,
    /// Raw (unscaled) window field.
    pub window: u16,
    pub opts: TcpOpts,
}

/// The 5-tuple quoted inside an ICMP error, as the original sender sent it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quoted {
    pub src: Addr,
    pub dst: Addr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

/// ICMP / ICMPv6 fields. Valid when `proto` is ICMP or ICMPv6.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IcmpMeta {
    pub icmp_type: u8,
    pub code: u8,
    /// The next-hop MTU of an IPv4 "fragmentation needed" (type 3 code 4) or the
    /// MTU of an ICMPv6 "packet too big" (type 2).
    pub mtu: Option<u32>,
    /// The header quoted by an error message, when it could be parsed.
    pub quoted: Option<Quoted>,
}

impl IcmpMeta {
    /// True for IPv4 fragmentation-needed or ICMPv6 packet-too-big.
    pub fn is_pmtu(&self, v6: bool) -> bool {
        if v6 {
            self.icmp_type == 2
        } else {
            self.icmp_type == 3 && self.code == 4
        }
    }
}

/// Everything the flow engine needs from one packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketMeta {
    /// Capture time, ns since the Unix epoch.
    pub ts_ns: u64,
    pub src: Addr,
    pub dst: Addr,
    /// 0 for protocols without ports and for later fragments.
    pub sport: u16,
    pub dport: u16,
    /// IP protocol number (upper-layer protocol after IPv6 extension headers).
    pub proto: u8,
    pub is_v6: bool,
    /// Outermost 802.1Q VLAN id, if tagged.
    pub vlan: Option<u16>,
    /// IP (L3) length: IPv4 total length, IPv6 40 + payload length.
    pub ip_len: u32,
    /// L4 payload bytes (TCP/UDP data after the header); 0 otherwise.
    pub payload_len: u32,
    /// The two ECN bits of the IP header (3 = CE).
    pub ecn: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    pub frag: Frag,
    /// IPv4 identification or IPv6 fragment header identification (fragments only).
    pub frag_id: u32,
    pub tcp: TcpMeta,
    pub icmp: IcmpMeta,
}

impl PacketMeta {
    #[inline]
    pub fn is_tcp(&self) -> bool {
        self.proto == proto::TCP && self.frag != Frag::Later
    }
    #[inline]
    pub fn is_icmp(&self) -> bool {
        (self.proto == proto::ICMP && !self.is_v6) || (self.proto == proto::ICMPV6 && self.is_v6)
    }
}
