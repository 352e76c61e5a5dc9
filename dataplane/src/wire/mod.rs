//! Zero-copy wire parsers: link layers (Ethernet with 802.1Q/802.1ad tags, Linux
//! SLL/SLL2, BSD loopback), IPv4, IPv6 (extension-header chain), TCP, UDP and
//! ICMP/ICMPv6, and [`parse`], which turns one frame into a [`PacketMeta`].
//!
//! In the style of smoltcp's `wire`: one file per protocol, each with a view
//! (`Packet<T: AsRef<[u8]>>`, `Frame<T>`) over a borrowed buffer, a private
//! `mod field` of byte ranges, and `new_unchecked` / `check_len` / `new_checked`.
//! Fields are read with `u16::from_be_bytes` and friends, never by casting.
//! [`PacketMeta`] plays the role of smoltcp's `Repr`: the validated fields.
//!
//! # Panic contract
//! A view made with `new_unchecked` may panic on access when the buffer is too
//! short; once `check_len` (or `new_checked`) has succeeded, no accessor panics.
//! [`parse`] never panics, whatever the input.
//!
//! # Lengths
//! Captures are often cut at a snap length, so only the headers must be in the
//! frame. Lengths come from the IP header, never from the capture, so Ethernet
//! padding is not counted and a truncated payload still counts in full:
//! - `ip_len` is the IPv4 total length, or 40 + the IPv6 payload length. Two
//!   cases use the captured length instead: IPv4 total length 0 (what a sender's
//!   own capture shows for TSO super-packets) and IPv6 payload length 0 with a
//!   next header other than "no next header" (jumbograms, Linux BIG TCP).
//! - `payload_len` is `ip_len` minus the IP header(s) minus the TCP header
//!   (data offset) or the 8-byte UDP header; the UDP length field is not used.
//!   For a later fragment it is the fragment's data (`ip_len` minus the IP
//!   headers), so the fragments of a datagram add up to its L4 payload (the first
//!   fragment's share excludes the L4 header). It is 0 for every other protocol.
//! - Lengths never underflow: a header that does not fit in the length the IP
//!   header gives is an error (`Bad*`); a header cut by the capture is
//!   `Truncated*`. When `parse` returns `Ok`, `payload_len <= ip_len`.
//! - Checksums are not verified (offloaded captures carry wrong ones).
#![forbid(unsafe_code)]

pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod sll;
pub mod tcp;
pub mod udp;

#[cfg(test)]
mod fixtures;

use crate::meta::{proto, Addr, Frag, IcmpMeta, PacketMeta, TcpMeta, TcpOpts};
use ethernet::EtherType;

/// The link layer of a capture: how to find the IP header in a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// Ethernet II, with up to [`ethernet::MAX_VLAN_TAGS`] 802.1Q/802.1ad tags.
    Ethernet,
    /// Raw IP: IPv4 or IPv6, chosen by the version nibble.
    Raw,
    /// Raw IPv4 only.
    Ipv4,
    /// Raw IPv6 only.
    Ipv6,
    /// Linux "cooked" capture v1 (16-byte header).
    LinuxSll,
    /// Linux "cooked" capture v2 (20-byte header).
    LinuxSll2,
    /// BSD loopback: a 4-byte address family in the capturing host's byte order.
    Null,
    /// OpenBSD loopback: a 4-byte address family in network byte order.
    Loop,
}

impl LinkType {
    /// From a pcap/pcapng `LINKTYPE_` value: 0 Null, 1 Ethernet, 12 and 101 Raw,
    /// 108 Loop, 113 LinuxSll, 228 Ipv4, 229 Ipv6, 276 LinuxSll2.
    pub fn from_linktype(v: u32) -> Option<LinkType> {
        Some(match v {
            0 => LinkType::Null,
            1 => LinkType::Ethernet,
            12 | 101 => LinkType::Raw,
            108 => LinkType::Loop,
            113 => LinkType::LinuxSll,
            228 => LinkType::Ipv4,
            229 => LinkType::Ipv6,
            276 => LinkType::LinuxSll2,
            _ => return None,
        })
    }
}

/// Why a frame could not be parsed; one variant per reason, counted by reason on
/// the hot path ([`ParseError::index`]) and reported by name ([`ParseError::as_str`]).
///
/// `Truncated*` means the capture ended inside a header (snap length or a
/// damaged capture); `Bad*` means the packet's own fields contradict each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[repr(u8)]
pub enum ParseError {
    #[error("Ethernet header truncated (under 14 bytes)")]
    TruncatedEthernet,
    #[error("802.1Q/802.1ad VLAN tag truncated")]
    TruncatedVlan,
    #[error("more than 4 stacked VLAN tags")]
    VlanTooDeep,
    #[error("Linux SLL/SLL2 header truncated")]
    TruncatedSll,
    #[error("loopback (Null/Loop) header truncated")]
    TruncatedLoopback,
    #[error("frame carries no IP packet (ARP, LLDP, ...)")]
    NonIp,
    #[error("raw IP frame is empty")]
    TruncatedIp,
    #[error("IP version does not match the link layer's protocol")]
    BadIpVersion,
    #[error("IPv4 header truncated")]
    TruncatedIpv4,
    #[error("IPv4 header length (IHL) under 5 words")]
    BadIpv4Header,
    #[error("IPv4 total length smaller than the header length")]
    BadIpv4Length,
    #[error("IPv6 header truncated")]
    TruncatedIpv6,
    #[error("IPv6 extension-header chain longer than 8 headers")]
    Ipv6ExtTooLong,
    #[error("IPv6 extension header truncated")]
    TruncatedIpv6Ext,
    #[error("IPv6 extension headers run past the payload length")]
    BadIpv6Length,
    #[error("TCP header truncated")]
    TruncatedTcp,
    #[error("TCP data offset under 5 words or past the IP payload")]
    BadTcpOffset,
    #[error("IP payload too short for a TCP header")]
    BadTcpLength,
    #[error("UDP header truncated")]
    TruncatedUdp,
    #[error("IP payload too short for a UDP header")]
    BadUdpLength,
    #[error("ICMP header truncated")]
    TruncatedIcmp,
    #[error("IP payload too short for an ICMP header")]
    BadIcmpLength,
}

impl ParseError {
    pub const COUNT: usize = 22;

    /// Every variant, in declaration order: `ALL[e.index()] == e`.
    pub const ALL: [ParseError; Self::COUNT] = [
        ParseError::TruncatedEthernet,
        ParseError::TruncatedVlan,
        ParseError::VlanTooDeep,
        ParseError::TruncatedSll,
        ParseError::TruncatedLoopback,
        ParseError::NonIp,
        ParseError::TruncatedIp,
        ParseError::BadIpVersion,
        ParseError::TruncatedIpv4,
        ParseError::BadIpv4Header,
        ParseError::BadIpv4Length,
        ParseError::TruncatedIpv6,
        ParseError::Ipv6ExtTooLong,
        ParseError::TruncatedIpv6Ext,
        ParseError::BadIpv6Length,
        ParseError::TruncatedTcp,
        ParseError::BadTcpOffset,
        ParseError::BadTcpLength,
        ParseError::TruncatedUdp,
        ParseError::BadUdpLength,
        ParseError::TruncatedIcmp,
        ParseError::BadIcmpLength,
    ];

    /// The snake_case reason, a key of the summary's `parse_errors` map.
    pub fn as_str(self) -> &'static str {
        match self {
            ParseError::TruncatedEthernet => "truncated_ethernet",
            ParseError::TruncatedVlan => "truncated_vlan",
            ParseError::VlanTooDeep => "vlan_too_deep",
            ParseError::TruncatedSll => "truncated_sll",
            ParseError::TruncatedLoopback => "truncated_loopback",
            ParseError::NonIp => "non_ip",
            ParseError::TruncatedIp => "truncated_ip",
            ParseError::BadIpVersion => "bad_ip_version",
            ParseError::TruncatedIpv4 => "truncated_ipv4",
            ParseError::BadIpv4Header => "bad_ipv4_header",
            ParseError::BadIpv4Length => "bad_ipv4_length",
            ParseError::TruncatedIpv6 => "truncated_ipv6",
            ParseError::Ipv6ExtTooLong => "ipv6_ext_too_long",
            ParseError::TruncatedIpv6Ext => "truncated_ipv6_ext",
            ParseError::BadIpv6Length => "bad_ipv6_length",
            ParseError::TruncatedTcp => "truncated_tcp",
            ParseError::BadTcpOffset => "bad_tcp_offset",
            ParseError::BadTcpLength => "bad_tcp_length",
            ParseError::TruncatedUdp => "truncated_udp",
            ParseError::BadUdpLength => "bad_udp_length",
            ParseError::TruncatedIcmp => "truncated_icmp",
            ParseError::BadIcmpLength => "bad_icmp_length",
        }
    }

    /// Position in [`ParseError::ALL`], for counter arrays.
    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }
}

/// `PacketMeta::default()` as a constant. The derived `Default` builds the SACK
/// array on the stack and copies it out with overlapping loads, a store-forwarding
/// stall that cost more than the rest of a TCP parse; a constant compiles to
/// plain stores. (A field added to `PacketMeta` must be added here too; the
/// `blank_is_default` test checks they agree.)
const BLANK: PacketMeta = PacketMeta {
    ts_ns: 0,
    src: Addr::UNSPECIFIED,
    dst: Addr::UNSPECIFIED,
    sport: 0,
    dport: 0,
    proto: 0,
    is_v6: false,
    vlan: None,
    ip_len: 0,
    payload_len: 0,
    ecn: 0,
    ttl: 0,
    frag: Frag::None,
    frag_id: 0,
    tcp: TcpMeta {
        seq: 0,
        ack: 0,
        flags: 0,
        window: 0,
        opts: TcpOpts {
            mss: None,
            wscale: None,
            sack_ok: false,
            ts: None,
            sack: [(0, 0); 4],
            sack_n: 0,
        },
    },
    icmp: IcmpMeta {
        icmp_type: 0,
        code: 0,
        mtu: None,
        quoted: None,
    },
};

/// Parse one frame into `meta`, overwriting every field of `meta` except
/// `meta.ts_ns`.
///
/// Never panics on any input. Frames that carry no IP (ARP, LLDP, ...) return
/// `Err(ParseError::NonIp)`. On `Err`, the fields other than `ts_ns` hold what was
/// parsed before the failure and must not be relied on. See the module doc for
/// how `ip_len` and `payload_len` are computed.
#[inline]
pub fn parse(link: LinkType, frame: &[u8], meta: &mut PacketMeta) -> Result<(), ParseError> {
    *meta = PacketMeta {
        ts_ns: meta.ts_ns,
        ..BLANK
    };
    match link {
        LinkType::Ethernet => {
            let (ethertype, l3) = ethernet::parse(frame, meta)?;
            parse_ethertype(ethertype, l3, meta)
        }
        LinkType::LinuxSll => {
            let (ethertype, l3) = sll::parse_sll(frame, meta)?;
            parse_ethertype(ethertype, l3, meta)
        }
        LinkType::LinuxSll2 => {
            let (ethertype, l3) = sll::parse_sll2(frame, meta)?;
            parse_ethertype(ethertype, l3, meta)
        }
        LinkType::Raw => match frame.first() {
            None => Err(ParseError::TruncatedIp),
            Some(b) if b >> 4 == 4 => ipv4::parse(frame, meta),
            Some(b) if b >> 4 == 6 => ipv6::parse(frame, meta),
            Some(_) => Err(ParseError::BadIpVersion),
        },
        LinkType::Ipv4 => ipv4::parse(frame, meta),
        LinkType::Ipv6 => ipv6::parse(frame, meta),
        LinkType::Null | LinkType::Loop => parse_loopback(link == LinkType::Loop, frame, meta),
    }
}

/// Dispatch on the EtherType that follows the link header (and VLAN tags).
#[inline]
fn parse_ethertype(
    ethertype: EtherType,
    l3: &[u8],
    meta: &mut PacketMeta,
) -> Result<(), ParseError> {
    match ethertype {
        EtherType::Ipv4 => ipv4::parse(l3, meta),
        EtherType::Ipv6 => ipv6::parse(l3, meta),
        _ => Err(ParseError::NonIp),
    }
}

/// BSD loopback (`Null`, host byte order) and OpenBSD `Loop` (network order): a
/// 4-byte address family, then the IP packet.
fn parse_loopback(
    network_order: bool,
    frame: &[u8],
    meta: &mut PacketMeta,
) -> Result<(), ParseError> {
    if frame.len() < 4 {
        return Err(ParseError::TruncatedLoopback);
    }
    let raw: [u8; 4] = bytes(frame);
    // Null is in the capturing host's order; families are small, so a value whose
    // first two bytes are zero was written big-endian.
    let family = if network_order || (raw[0] == 0 && raw[1] == 0) {
        u32::from_be_bytes(raw)
    } else {
        u32::from_le_bytes(raw)
    };
    match family {
        // AF_INET everywhere.
        2 => ipv4::parse(&frame[4..], meta),
        // AF_INET6: Linux 10, NetBSD/OpenBSD 24, FreeBSD 28, Darwin 30.
        10 | 24 | 28 | 30 => ipv6::parse(&frame[4..], meta),
        _ => Err(ParseError::NonIp),
    }
}

/// Parse the L4 header of a packet whose `meta.proto` and `meta.is_v6` are set.
///
/// `l4` is the captured part of the IP payload (never past the IP length, so no
/// link padding); `l4_len` is the IP payload length the IP header claims.
#[inline]
fn parse_l4(l4: &[u8], l4_len: usize, meta: &mut PacketMeta) -> Result<(), ParseError> {
    debug_assert!(l4.len() <= l4_len);
    match (meta.proto, meta.is_v6) {
        (proto::TCP, _) => tcp::parse(l4, l4_len, meta),
        (proto::UDP, _) => udp::parse(l4, l4_len, meta),
        (proto::ICMP, false) => icmp::parse(false, l4, l4_len, meta),
        (proto::ICMPV6, true) => icmp::parse(true, l4, l4_len, meta),
        _ => Ok(()),
    }
}

/// Big-endian u16 from the first two bytes of `b`.
#[inline(always)]
fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// Big-endian u32 from the first four bytes of `b`.
#[inline(always)]
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The first `N` bytes of `b` as an array.
#[inline(always)]
fn bytes<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[..N]);
    a
}

/// A length as u32, saturating (frames are far below 4 GiB; this only keeps
/// `payload_len <= ip_len` true by construction).
#[inline(always)]
fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    #[test]
    fn blank_is_default() {
        assert_eq!(BLANK, PacketMeta::default());
    }

    #[test]
    fn linktype_values() {
        let cases = [
            (0, LinkType::Null),
            (1, LinkType::Ethernet),
            (12, LinkType::Raw),
            (101, LinkType::Raw),
            (108, LinkType::Loop),
            (113, LinkType::LinuxSll),
            (228, LinkType::Ipv4),
            (229, LinkType::Ipv6),
            (276, LinkType::LinuxSll2),
        ];
        for (v, l) in cases {
            assert_eq!(LinkType::from_linktype(v), Some(l), "linktype {v}");
        }
        assert_eq!(LinkType::from_linktype(105), None); // 802.11
        assert_eq!(LinkType::from_linktype(u32::MAX), None);
    }

    #[test]
    fn error_table_is_consistent() {
        let mut names = std::collections::HashSet::new();
        for (i, e) in ParseError::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
            let s = e.as_str();
            assert!(
                !s.is_empty()
                    && s.bytes()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
            );
            assert!(names.insert(s), "duplicate name {s}");
            assert!(!e.to_string().is_empty());
        }
        assert_eq!(ParseError::TruncatedTcp.as_str(), "truncated_tcp");
        assert_eq!(ParseError::NonIp.as_str(), "non_ip");
    }

    #[test]
    fn raw_ip_by_version() {
        let m = parse_ok(LinkType::Raw, &V4_TCP_SYN);
        assert_eq!(m.proto, proto::TCP);
        assert!(!m.is_v6);
        let m = parse_ok(LinkType::Raw, &V6_ICMP_PTB);
        assert_eq!(m.proto, proto::ICMPV6);
        assert!(m.is_v6);
        assert_eq!(parse_err(LinkType::Raw, &[]), ParseError::TruncatedIp);
        assert_eq!(
            parse_err(LinkType::Raw, &[0x50; 40]),
            ParseError::BadIpVersion
        );
        assert_eq!(
            parse_err(LinkType::Raw, &V4_TCP_SYN[..10]),
            ParseError::TruncatedIpv4
        );
        assert_eq!(
            parse_err(LinkType::Raw, &V6_ICMP_PTB[..39]),
            ParseError::TruncatedIpv6
        );
    }

    #[test]
    fn ipv4_and_ipv6_link_types_check_the_version() {
        assert_eq!(parse_ok(LinkType::Ipv4, &V4_TCP_SYN).sport, 43210);
        assert_eq!(
            parse_err(LinkType::Ipv4, &V6_ICMP_PTB),
            ParseError::BadIpVersion
        );
        assert_eq!(parse_ok(LinkType::Ipv6, &V6_ICMP_PTB).icmp.icmp_type, 2);
        assert_eq!(
            parse_err(LinkType::Ipv6, &V4_TCP_SYN),
            ParseError::BadIpVersion
        );
        assert_eq!(parse_err(LinkType::Ipv4, &[]), ParseError::TruncatedIpv4);
        assert_eq!(parse_err(LinkType::Ipv6, &[]), ParseError::TruncatedIpv6);
    }

    #[test]
    fn null_and_loop() {
        // Little-endian host, AF_INET.
        let m = parse_ok(LinkType::Null, &cat(&[&[2, 0, 0, 0], &V4_OPTS_UDP]));
        assert_eq!((m.sport, m.dport), (5000, 5001));
        // Big-endian host, AF_INET6 on Darwin (30).
        let m = parse_ok(LinkType::Null, &cat(&[&[0, 0, 0, 30], &V6_ICMP_PTB]));
        assert!(m.is_v6);
        // Linux AF_INET6 (10), little-endian.
        assert!(parse_ok(LinkType::Null, &cat(&[&[10, 0, 0, 0], &V6_ICMP_PTB])).is_v6);
        // Loop is always network order: 02 00 00 00 is not AF_INET there.
        assert_eq!(
            parse_ok(LinkType::Loop, &cat(&[&[0, 0, 0, 2], &V4_TCP_SYN])).dport,
            443
        );
        assert_eq!(
            parse_err(LinkType::Loop, &cat(&[&[2, 0, 0, 0], &V4_TCP_SYN])),
            ParseError::NonIp
        );
        // AF_APPLETALK etc.
        assert_eq!(
            parse_err(LinkType::Null, &cat(&[&[7, 0, 0, 0], &V4_TCP_SYN])),
            ParseError::NonIp
        );
        assert_eq!(
            parse_err(LinkType::Null, &[2, 0, 0]),
            ParseError::TruncatedLoopback
        );
        assert_eq!(
            parse_err(LinkType::Loop, &[]),
            ParseError::TruncatedLoopback
        );
    }

    #[test]
    fn overwrites_everything_but_ts() {
        let mut m = PacketMeta {
            ts_ns: 42,
            ..PacketMeta::default()
        };
        parse(LinkType::Ethernet, &eth_v4(&V4_ICMP_FRAG_NEEDED), &mut m).unwrap();
        parse(LinkType::Ethernet, &eth_v6(&V6_HBH_FRAG_UDP), &mut m).unwrap();
        let mut fresh = PacketMeta {
            ts_ns: 42,
            ..PacketMeta::default()
        };
        parse(LinkType::Ethernet, &eth_v6(&V6_HBH_FRAG_UDP), &mut fresh).unwrap();
        assert_eq!(m, fresh);
        // An error resets too: no stale ports or ICMP fields survive.
        let _ = parse(LinkType::Ethernet, &ARP_FRAME, &mut m);
        assert_eq!(m.ts_ns, 42);
        assert_eq!((m.sport, m.dport, m.ip_len), (0, 0, 0));
        assert_eq!(m.frag, Frag::None);
    }

    /// Checks that hold for every successful parse.
    fn check_invariants(link: LinkType, frame: &[u8], m: &PacketMeta) {
        let ctx = || format!("{link:?} {frame:02x?} -> {m:?}");
        assert_eq!(m.ts_ns, 7, "{}", ctx());
        assert!(m.payload_len <= m.ip_len, "{}", ctx());
        assert!(m.ip_len >= if m.is_v6 { 40 } else { 20 }, "{}", ctx());
        assert_eq!(m.src.is_v4(), !m.is_v6, "{}", ctx());
        assert_eq!(m.dst.is_v4(), !m.is_v6, "{}", ctx());
        assert!(m.ecn <= 3, "{}", ctx());
        if let Some(v) = m.vlan {
            assert!(v > 0 && v < 4096, "{}", ctx());
        }
        if m.frag == Frag::None {
            assert_eq!(m.frag_id, 0, "{}", ctx());
        }
        let has_ports = m.frag != Frag::Later && (m.proto == proto::TCP || m.proto == proto::UDP);
        if !has_ports {
            assert_eq!((m.sport, m.dport), (0, 0), "{}", ctx());
        }
        if !has_ports && m.frag != Frag::Later {
            assert_eq!(m.payload_len, 0, "{}", ctx());
        }
        if !m.is_icmp() || m.frag == Frag::Later {
            assert_eq!(m.icmp, Default::default(), "{}", ctx());
        }
        if m.proto != proto::TCP || m.frag == Frag::Later {
            assert_eq!(m.tcp, Default::default(), "{}", ctx());
        }
        assert!(m.tcp.opts.sack_n <= 4, "{}", ctx());
        if let Some(q) = m.icmp.quoted {
            assert_eq!(q.src.is_v4(), !m.is_v6, "{}", ctx());
        }
        assert_ne!(m.icmp.mtu, Some(0), "{}", ctx());
    }

    /// Parse and check; true when the parse succeeded.
    fn run(link: LinkType, frame: &[u8]) -> bool {
        let mut m = PacketMeta {
            ts_ns: 7,
            ..PacketMeta::default()
        };
        // Fill with junk first so that "overwrites every field" is exercised.
        m.sport = 0xdead;
        m.icmp.mtu = Some(0);
        m.vlan = Some(4095);
        match parse(link, frame, &mut m) {
            Ok(()) => {
                check_invariants(link, frame, &m);
                true
            }
            Err(e) => {
                assert_eq!(m.ts_ns, 7, "{e:?}");
                false
            }
        }
    }

    const ALL_LINKS: [LinkType; 8] = [
        LinkType::Ethernet,
        LinkType::Raw,
        LinkType::Ipv4,
        LinkType::Ipv6,
        LinkType::LinuxSll,
        LinkType::LinuxSll2,
        LinkType::Null,
        LinkType::Loop,
    ];

    #[test]
    fn fixtures_parse_and_satisfy_invariants() {
        for (link, frame, want) in all_fixtures() {
            let mut m = PacketMeta {
                ts_ns: 7,
                ..PacketMeta::default()
            };
            assert_eq!(parse(link, &frame, &mut m), want, "{link:?} {frame:02x?}");
            if want.is_ok() {
                check_invariants(link, &frame, &m);
            }
        }
    }

    #[test]
    fn every_prefix_of_every_fixture() {
        for (_, frame, _) in all_fixtures() {
            for n in 0..=frame.len() {
                for l in ALL_LINKS {
                    run(l, &frame[..n]);
                }
            }
        }
    }

    /// xorshift64*: a tiny deterministic generator, no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn random_buffers_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut buf = [0u8; 160];
        let mut ok = 0;
        for i in 0..4000 {
            let n = rng.below(buf.len() + 1);
            for b in buf.iter_mut() {
                *b = rng.next() as u8;
            }
            // Steer some buffers past the first checks: an IP version nibble,
            // an IP EtherType, a small IHL or ext-header length.
            match i % 4 {
                1 => buf[0] = (buf[0] & 0x0f) | if i % 8 == 1 { 0x40 } else { 0x60 },
                2 => {
                    buf[12..14].copy_from_slice(&[0x08, 0x00]);
                    buf[14] = 0x45;
                }
                3 => buf[0] = 0x45,
                _ => {}
            }
            for l in ALL_LINKS {
                ok += usize::from(run(l, &buf[..n]));
            }
        }
        eprintln!("random: {ok} of 32000 parsed");
        // The steering works: a fair share gets through to the invariant checks.
        assert!(ok > 1000, "{ok}");
    }

    #[test]
    fn mutated_fixtures_never_panic() {
        let mut rng = Rng(0x0123_4567_89ab_cdef);
        let fixtures = all_fixtures();
        let mut ok = 0;
        for _ in 0..6000 {
            let (link, frame, _) = &fixtures[rng.below(fixtures.len())];
            let mut f = frame.clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(f.len());
                f[at] = match rng.below(4) {
                    0 => rng.next() as u8,
                    1 => 0,
                    2 => 0xff,
                    _ => f[at] ^ (1 << rng.below(8)),
                };
            }
            let cut = f.len() - rng.below(f.len().min(8) + 1);
            ok += usize::from(run(*link, &f[..cut]));
            ok += usize::from(run(*link, &f));
        }
        eprintln!("mutated: {ok} of 12000 parsed");
        assert!(ok > 3000, "{ok}");
    }

    #[test]
    fn addresses_are_mapped() {
        let m = parse_ok(LinkType::Raw, &V4_TCP_SYN);
        assert_eq!(m.src, Addr::from_v4([198, 18, 0, 1]));
        assert_eq!(m.dst.to_string(), "198.18.1.2");
        let m = parse_ok(LinkType::Raw, &V6_HBH_FRAG_UDP);
        assert_eq!(m.src.to_string(), "2001:db8::1");
        assert_eq!(m.dst.to_string(), "2001:db8::2");
    }
}
