//! ICMP (RFC 792) and ICMPv6 (RFC 4443) headers, and the datagram an error
//! message quotes.
//!
//! Both share the layout type, code, checksum, 4 type-specific bytes, data. For
//! error messages (ICMP types 3, 4, 5, 11, 12; ICMPv6 types 1 to 4) the data
//! starts with the offending packet as its sender sent it: its IP header (and
//! for IPv6 the extension headers) and at least 8 bytes of its L4 header. That
//! quote is parsed into [`Quoted`] when its IP header and, for TCP and UDP, its
//! ports were captured; otherwise `quoted` is `None` (a partial 5-tuple would
//! match the wrong flow). A quoted later fragment has ports 0.
//!
//! The path MTU of an ICMP "fragmentation needed" (type 3 code 4, bytes 6..8)
//! or an ICMPv6 "packet too big" (type 2, bytes 4..8) goes into `mtu`; 0 (a
//! pre-RFC 1191 router) is unknown, `None`.
//!
//! After [`Packet::check_len`] succeeds no accessor panics.
#![forbid(unsafe_code)]

use super::{be16, be32, ipv4, ipv6, ParseError};
use crate::meta::{proto, Addr, Frag, PacketMeta, Quoted};

/// Type, code, checksum and the 4 type-specific bytes.
pub const HEADER_LEN: usize = 8;

/// ICMPv4 message types.
pub mod v4 {
    pub const ECHO_REPLY: u8 = 0;
    pub const DEST_UNREACHABLE: u8 = 3;
    pub const SOURCE_QUENCH: u8 = 4;
    pub const REDIRECT: u8 = 5;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
    pub const PARAM_PROBLEM: u8 = 12;
    /// Destination-unreachable code "fragmentation needed and DF set".
    pub const CODE_FRAG_NEEDED: u8 = 4;
}

/// ICMPv6 message types.
pub mod v6 {
    pub const DEST_UNREACHABLE: u8 = 1;
    pub const PACKET_TOO_BIG: u8 = 2;
    pub const TIME_EXCEEDED: u8 = 3;
    pub const PARAM_PROBLEM: u8 = 4;
    pub const ECHO_REQUEST: u8 = 128;
    pub const ECHO_REPLY: u8 = 129;
}

mod field {
    use core::ops::{Range, RangeFrom};
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Range<usize> = 2..4;
    pub const REST: Range<usize> = 4..8;
    pub const NEXT_HOP_MTU: Range<usize> = 6..8;
    pub const DATA: RangeFrom<usize> = 8..;
}

/// A view of an ICMP or ICMPv6 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    #[inline]
    pub fn new_checked(buffer: T) -> Result<Packet<T>, ParseError> {
        let p = Packet::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// `TruncatedIcmp` if the buffer is shorter than the 8-byte header.
    #[inline]
    pub fn check_len(&self) -> Result<(), ParseError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(ParseError::TruncatedIcmp)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    #[inline]
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// The 4 type-specific bytes (echo id/seq, MTU, pointer, gateway, ...).
    #[inline]
    pub fn rest_of_header(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::REST])
    }

    /// ICMPv4 "fragmentation needed": the next-hop MTU (RFC 1191).
    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::NEXT_HOP_MTU])
    }

    /// The captured message body (for errors, the quoted datagram).
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA]
    }
}

/// True for the message types that quote the offending datagram.
#[inline]
pub fn is_error(is_v6: bool, msg_type: u8) -> bool {
    if is_v6 {
        matches!(
            msg_type,
            v6::DEST_UNREACHABLE | v6::PACKET_TOO_BIG | v6::TIME_EXCEEDED | v6::PARAM_PROBLEM
        )
    } else {
        matches!(
            msg_type,
            v4::DEST_UNREACHABLE
                | v4::SOURCE_QUENCH
                | v4::REDIRECT
                | v4::TIME_EXCEEDED
                | v4::PARAM_PROBLEM
        )
    }
}

/// Parse an ICMP (`is_v6 == false`) or ICMPv6 message into `meta.icmp`. `l4` is
/// the captured part of the IP payload, `l4_len` the IP payload length.
/// Ports stay 0 and `payload_len` stays 0.
#[inline]
pub(crate) fn parse(
    is_v6: bool,
    l4: &[u8],
    l4_len: usize,
    meta: &mut PacketMeta,
) -> Result<(), ParseError> {
    if l4_len < HEADER_LEN {
        return Err(ParseError::BadIcmpLength);
    }
    let p = Packet::new_checked(l4)?;
    let (ty, code) = (p.msg_type(), p.msg_code());
    meta.icmp.icmp_type = ty;
    meta.icmp.code = code;
    let mtu = if is_v6 {
        if ty == v6::PACKET_TOO_BIG {
            p.rest_of_header()
        } else {
            0
        }
    } else if ty == v4::DEST_UNREACHABLE && code == v4::CODE_FRAG_NEEDED {
        u32::from(p.next_hop_mtu())
    } else {
        0
    };
    meta.icmp.mtu = if mtu == 0 { None } else { Some(mtu) };
    if is_error(is_v6, ty) {
        meta.icmp.quoted = parse_quoted(is_v6, p.data());
    }
    Ok(())
}

/// The ports of a quoted TCP/UDP header: `Some((0, 0))` for other protocols and
/// later fragments, `None` when a TCP/UDP header's ports were not captured.
#[inline]
fn quoted_ports(l4_proto: u8, later_fragment: bool, l4: &[u8]) -> Option<(u16, u16)> {
    if later_fragment || (l4_proto != proto::TCP && l4_proto != proto::UDP) {
        return Some((0, 0));
    }
    if l4.len() < 4 {
        return None;
    }
    Some((be16(l4), be16(&l4[2..])))
}

/// Parse the datagram quoted by an error message: IPv4 for ICMP, IPv6 for ICMPv6.
pub fn parse_quoted(is_v6: bool, q: &[u8]) -> Option<Quoted> {
    let version = q.first()? >> 4;
    if is_v6 {
        if version != 6 {
            return None;
        }
        let ip = ipv6::Packet::new_checked(q).ok()?;
        let rest = &q[ipv6::HEADER_LEN..];
        // The quote is cut short by design: walk what is there.
        let chain = ipv6::walk_chain(ip.next_header(), rest, rest.len()).ok()?;
        let (sport, dport) =
            quoted_ports(chain.proto, chain.frag == Frag::Later, &rest[chain.len..])?;
        Some(Quoted {
            src: Addr::from_v6(ip.src_addr()),
            dst: Addr::from_v6(ip.dst_addr()),
            sport,
            dport,
            proto: chain.proto,
        })
    } else {
        if version != 4 {
            return None;
        }
        let ip = ipv4::Packet::new_checked(q).ok()?;
        let (sport, dport) = quoted_ports(ip.next_header(), ip.frag_offset() != 0, ip.payload())?;
        Some(Quoted {
            src: Addr::from_v4(ip.src_addr()),
            dst: Addr::from_v4(ip.dst_addr()),
            sport,
            dport,
            proto: ip.next_header(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::LinkType;
    use super::*;

    #[test]
    fn echo_request() {
        let m = parse_ok(LinkType::Ethernet, &eth_v4(&V4_ICMP_ECHO));
        assert!(m.is_icmp());
        assert_eq!((m.proto, m.sport, m.dport), (proto::ICMP, 0, 0));
        assert_eq!((m.icmp.icmp_type, m.icmp.code), (v4::ECHO_REQUEST, 0));
        assert_eq!((m.icmp.mtu, m.icmp.quoted), (None, None));
        assert_eq!((m.ip_len, m.payload_len), (84, 0));
        let p = Packet::new_checked(&V4_ICMP_ECHO[20..]).unwrap();
        assert_eq!((p.checksum(), p.rest_of_header()), (0, 0x1234_0001));
    }

    #[test]
    fn frag_needed_quoting_tcp() {
        let m = parse_ok(LinkType::Ethernet, &eth_v4(&V4_ICMP_FRAG_NEEDED));
        assert_eq!(m.src, Addr::from_v4([198, 18, 0, 254]));
        assert_eq!(
            (m.proto, m.sport, m.dport, m.payload_len),
            (proto::ICMP, 0, 0, 0)
        );
        assert_eq!((m.icmp.icmp_type, m.icmp.code), (3, 4));
        assert!(m.icmp.is_pmtu(false));
        assert_eq!(m.icmp.mtu, Some(1400));
        assert_eq!(
            m.icmp.quoted,
            Some(Quoted {
                src: Addr::from_v4([198, 18, 0, 1]),
                dst: Addr::from_v4([198, 18, 1, 2]),
                sport: 43210,
                dport: 443,
                proto: proto::TCP,
            })
        );
    }

    #[test]
    fn packet_too_big_quoting_ipv6_udp() {
        let m = parse_ok(LinkType::Ethernet, &eth_v6(&V6_ICMP_PTB));
        assert!(m.is_icmp());
        assert_eq!((m.proto, m.sport, m.dport), (proto::ICMPV6, 0, 0));
        assert_eq!((m.icmp.icmp_type, m.icmp.code), (2, 0));
        assert!(m.icmp.is_pmtu(true));
        assert_eq!(m.icmp.mtu, Some(1280));
        let q = m.icmp.quoted.unwrap();
        assert_eq!(q.src.to_string(), "2001:db8::1");
        assert_eq!(q.dst.to_string(), "2001:db8::2");
        assert_eq!((q.sport, q.dport, q.proto), (8888, 4444, proto::UDP));
    }

    #[test]
    fn quote_with_ipv6_extension_headers() {
        // Time exceeded quoting the hop-by-hop + fragment + UDP first fragment.
        let mut f = V6_ICMP_PTB[..48].to_vec();
        f[40] = v6::TIME_EXCEEDED;
        f.extend_from_slice(&V6_HBH_FRAG_UDP);
        let plen = (f.len() - 40) as u16;
        f[4..6].copy_from_slice(&plen.to_be_bytes());
        let m = parse_ok(LinkType::Ipv6, &f);
        assert_eq!(m.icmp.mtu, None);
        let q = m.icmp.quoted.unwrap();
        assert_eq!((q.sport, q.dport, q.proto), (8888, 4444, proto::UDP));
        // Quoting a later fragment: no ports, still a quote.
        let mut f = V6_ICMP_PTB[..48].to_vec();
        f.extend_from_slice(&V6_FRAG_LATER);
        let plen = (f.len() - 40) as u16;
        f[4..6].copy_from_slice(&plen.to_be_bytes());
        let q = parse_ok(LinkType::Ipv6, &f).icmp.quoted.unwrap();
        assert_eq!((q.sport, q.dport, q.proto), (0, 0, proto::UDP));
    }

    #[test]
    fn quote_cut_short_is_none_not_an_error() {
        // Snap length cuts the quoted ports: the packet still parses.
        let cut = &V4_ICMP_FRAG_NEEDED[..51];
        let m = parse_ok(LinkType::Ipv4, cut);
        assert_eq!(m.icmp.mtu, Some(1400));
        assert_eq!(m.icmp.quoted, None);
        // The IP length cuts it (the rest is link padding): same.
        let mut short = V4_ICMP_FRAG_NEEDED;
        short[2..4].copy_from_slice(&50u16.to_be_bytes());
        assert_eq!(parse_ok(LinkType::Ipv4, &short).icmp.quoted, None);
        // Inner header cut: None.
        assert_eq!(
            parse_ok(LinkType::Ipv4, &V4_ICMP_FRAG_NEEDED[..40])
                .icmp
                .quoted,
            None
        );
        // Wrong inner version: None.
        let mut wrong = V4_ICMP_FRAG_NEEDED;
        wrong[28] = 0x65;
        assert_eq!(parse_ok(LinkType::Ipv4, &wrong).icmp.quoted, None);
        assert_eq!(
            parse_ok(LinkType::Ipv6, &V6_ICMP_PTB[..90]).icmp.quoted,
            None
        );
    }

    #[test]
    fn quoted_icmp_has_no_ports() {
        // Time exceeded quoting an echo request (traceroute with ICMP).
        let mut f = V4_ICMP_FRAG_NEEDED[..28].to_vec();
        f[20] = v4::TIME_EXCEEDED;
        f[21] = 0;
        f.extend_from_slice(&V4_ICMP_ECHO);
        let total = f.len() as u16;
        f[2..4].copy_from_slice(&total.to_be_bytes());
        let m = parse_ok(LinkType::Ipv4, &f);
        assert_eq!(m.icmp.mtu, None);
        let q = m.icmp.quoted.unwrap();
        assert_eq!((q.sport, q.dport, q.proto), (0, 0, proto::ICMP));
    }

    #[test]
    fn mtu_zero_is_unknown_and_only_for_the_right_type() {
        let mut f = V4_ICMP_FRAG_NEEDED;
        f[26..28].copy_from_slice(&[0, 0]);
        let m = parse_ok(LinkType::Ipv4, &f);
        assert_eq!((m.icmp.mtu, m.icmp.quoted.is_some()), (None, true));
        // Port unreachable (code 3) carries no MTU even if bytes 6..8 are set.
        let mut f = V4_ICMP_FRAG_NEEDED;
        f[21] = 3;
        assert_eq!(parse_ok(LinkType::Ipv4, &f).icmp.mtu, None);
    }

    #[test]
    fn icmp_in_the_wrong_ip_version_is_other() {
        // Protocol 1 inside IPv6 and 58 inside IPv4 are not parsed as ICMP.
        let mut f = V6_ICMP_PTB;
        f[6] = proto::ICMP;
        let m = parse_ok(LinkType::Ipv6, &f);
        assert!(!m.is_icmp());
        assert_eq!(m.icmp, Default::default());
        let mut f = V4_ICMP_ECHO;
        f[9] = proto::ICMPV6;
        assert_eq!(parse_ok(LinkType::Ipv4, &f).icmp, Default::default());
    }

    #[test]
    fn errors() {
        assert_eq!(
            parse_err(LinkType::Ipv4, &V4_ICMP_ECHO[..27]),
            ParseError::TruncatedIcmp
        );
        assert_eq!(
            parse_err(LinkType::Ipv6, &V6_ICMP_PTB[..47]),
            ParseError::TruncatedIcmp
        );
        let mut short = V4_ICMP_ECHO;
        short[2..4].copy_from_slice(&24u16.to_be_bytes());
        assert_eq!(parse_err(LinkType::Ipv4, &short), ParseError::BadIcmpLength);
        assert!(
            is_error(false, 11) && !is_error(false, 8) && is_error(true, 4) && !is_error(true, 128)
        );
    }
}
