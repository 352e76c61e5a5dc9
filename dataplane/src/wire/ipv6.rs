//! IPv6 headers (RFC 8200) and the extension-header chain: hop-by-hop, routing,
//! destination options, fragment, AH (RFC 4302), and the other headers of the
//! RFC 7045 generic format (mobility, HIP, shim6).
//!
//! The chain is walked to find the upper-layer protocol, at most
//! [`MAX_EXT_HEADERS`] headers deep ([`ParseError::Ipv6ExtTooLong`] beyond).
//! ESP (50) and "no next header" (59) end the chain; they are the protocol.
//! After `check_len` succeeds no accessor of a view panics.
#![forbid(unsafe_code)]

use super::{be16, be32, bytes, len32, parse_l4, ParseError};
use crate::meta::{Addr, Frag, PacketMeta};

/// The fixed header.
pub const HEADER_LEN: usize = 40;
/// Longer chains give [`ParseError::Ipv6ExtTooLong`]. Real traffic carries one
/// or two; the limit bounds the work per packet.
pub const MAX_EXT_HEADERS: usize = 8;
/// The fixed length of a fragment header, and the minimum of every other one.
pub const EXT_MIN_LEN: usize = 8;

/// Next-header values of the extension headers.
pub mod ext {
    pub const HOP_BY_HOP: u8 = 0;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const ESP: u8 = 50;
    pub const AH: u8 = 51;
    pub const NO_NEXT_HEADER: u8 = 59;
    pub const DEST_OPTS: u8 = 60;
    pub const MOBILITY: u8 = 135;
    pub const HIP: u8 = 139;
    pub const SHIM6: u8 = 140;
}

mod field {
    use core::ops::Range;
    pub const VER_TC_FLOW: Range<usize> = 0..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Range<usize> = 8..24;
    pub const DST_ADDR: Range<usize> = 24..40;

    // Extension headers.
    pub const EXT_NXT_HDR: usize = 0;
    pub const EXT_LEN: usize = 1;
    // Fragment header.
    pub const FRAG_OFF_M: Range<usize> = 2..4;
    pub const FRAG_IDENT: Range<usize> = 4..8;
}

/// A view of an IPv6 header and what follows it in the buffer.
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

    /// `TruncatedIpv6` if the buffer is shorter than the fixed header.
    #[inline]
    pub fn check_len(&self) -> Result<(), ParseError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(ParseError::TruncatedIpv6)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    fn ver_tc_flow(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::VER_TC_FLOW])
    }

    #[inline]
    pub fn version(&self) -> u8 {
        (self.ver_tc_flow() >> 28) as u8
    }

    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (self.ver_tc_flow() >> 20) as u8
    }

    /// The two ECN bits of the traffic class (3 = CE).
    #[inline]
    pub fn ecn(&self) -> u8 {
        self.traffic_class() & 0x03
    }

    #[inline]
    pub fn flow_label(&self) -> u32 {
        self.ver_tc_flow() & 0x000f_ffff
    }

    /// Payload length (extension headers included; 0 for a jumbogram).
    #[inline]
    pub fn payload_len(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::LENGTH])
    }

    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    #[inline]
    pub fn src_addr(&self) -> [u8; 16] {
        bytes(&self.buffer.as_ref()[field::SRC_ADDR])
    }

    #[inline]
    pub fn dst_addr(&self) -> [u8; 16] {
        bytes(&self.buffer.as_ref()[field::DST_ADDR])
    }

    /// The captured bytes after the fixed header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

/// A view of one extension header whose kind (the previous next-header value)
/// is `kind`. Covers the generic format, AH and the fragment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtHeader<T: AsRef<[u8]>> {
    kind: u8,
    buffer: T,
}

impl<T: AsRef<[u8]>> ExtHeader<T> {
    #[inline]
    pub const fn new_unchecked(kind: u8, buffer: T) -> ExtHeader<T> {
        ExtHeader { kind, buffer }
    }

    #[inline]
    pub fn new_checked(kind: u8, buffer: T) -> Result<ExtHeader<T>, ParseError> {
        let h = ExtHeader::new_unchecked(kind, buffer);
        h.check_len()?;
        Ok(h)
    }

    /// `TruncatedIpv6Ext` if the buffer is shorter than the header says.
    #[inline]
    pub fn check_len(&self) -> Result<(), ParseError> {
        let len = self.buffer.as_ref().len();
        if len < EXT_MIN_LEN || len < self.header_len() {
            Err(ParseError::TruncatedIpv6Ext)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn kind(&self) -> u8 {
        self.kind
    }

    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::EXT_NXT_HDR]
    }

    /// Length in bytes: 8 for a fragment header, (len + 2) * 4 for AH,
    /// (len + 1) * 8 for the others.
    #[inline]
    pub fn header_len(&self) -> usize {
        ext_len(self.kind, self.buffer.as_ref()[field::EXT_LEN])
    }

    /// Fragment offset in bytes (fragment header only).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::FRAG_OFF_M]) & 0xfff8
    }

    /// The M (more fragments) flag (fragment header only).
    #[inline]
    pub fn more_frags(&self) -> bool {
        be16(&self.buffer.as_ref()[field::FRAG_OFF_M]) & 1 != 0
    }

    /// Fragment identification (fragment header only).
    #[inline]
    pub fn frag_ident(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::FRAG_IDENT])
    }
}

/// True for the next-header values that [`walk_chain`] steps over.
#[inline]
pub fn is_ext_header(next_header: u8) -> bool {
    matches!(
        next_header,
        ext::HOP_BY_HOP
            | ext::ROUTING
            | ext::FRAGMENT
            | ext::AH
            | ext::DEST_OPTS
            | ext::MOBILITY
            | ext::HIP
            | ext::SHIM6
    )
}

#[inline]
fn ext_len(kind: u8, len: u8) -> usize {
    match kind {
        ext::FRAGMENT => EXT_MIN_LEN,
        ext::AH => (usize::from(len) + 2) * 4,
        _ => (usize::from(len) + 1) * 8,
    }
}

/// What the extension-header chain leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chain {
    /// The upper-layer protocol (for a later fragment: the fragment header's next header).
    pub proto: u8,
    /// Bytes of extension headers before the upper-layer header.
    pub len: usize,
    pub frag: Frag,
    /// Fragment identification when `frag` is not `None`, else 0.
    pub frag_id: u32,
}

/// Walk the extension headers that start with `next_header` at the start of
/// `data` (the captured bytes after the fixed header, never beyond the IP
/// length), where `limit` is the payload length the IP header claims.
///
/// A header past `limit` is `BadIpv6Length`; past the captured bytes,
/// `TruncatedIpv6Ext`. The walk stops at a later fragment (offset > 0): what
/// follows is not a header. An atomic fragment (offset 0, no M) is not a fragment.
#[inline]
pub fn walk_chain(mut next_header: u8, data: &[u8], limit: usize) -> Result<Chain, ParseError> {
    let mut off = 0usize;
    let mut frag = Frag::None;
    let mut frag_id = 0;
    let mut n = 0;
    while is_ext_header(next_header) {
        if n == MAX_EXT_HEADERS {
            return Err(ParseError::Ipv6ExtTooLong);
        }
        n += 1;
        // Every extension header is at least 8 bytes; read its length first.
        if off + EXT_MIN_LEN > limit {
            return Err(ParseError::BadIpv6Length);
        }
        let rest = data.get(off..).unwrap_or(&[]);
        if rest.len() < EXT_MIN_LEN {
            return Err(ParseError::TruncatedIpv6Ext);
        }
        let h = ExtHeader::new_unchecked(next_header, rest);
        let len = h.header_len();
        if off + len > limit {
            return Err(ParseError::BadIpv6Length);
        }
        h.check_len()?;
        if next_header == ext::FRAGMENT {
            if h.frag_offset() != 0 {
                return Ok(Chain {
                    proto: h.next_header(),
                    len: off + len,
                    frag: Frag::Later,
                    frag_id: h.frag_ident(),
                });
            }
            if h.more_frags() {
                frag = Frag::First;
                frag_id = h.frag_ident();
            }
        }
        next_header = h.next_header();
        off += len;
    }
    Ok(Chain {
        proto: next_header,
        len: off,
        frag,
        frag_id,
    })
}

/// Parse an IPv6 packet (header, extension headers, then L4) into `meta`.
#[inline]
pub(crate) fn parse(buf: &[u8], meta: &mut PacketMeta) -> Result<(), ParseError> {
    match buf.first() {
        None => return Err(ParseError::TruncatedIpv6),
        Some(b) if b >> 4 != 6 => return Err(ParseError::BadIpVersion),
        Some(_) => {}
    }
    let p = Packet::new_checked(buf)?;
    let payload_len = usize::from(p.payload_len());
    let next_header = p.next_header();
    // Payload length 0: a jumbogram (RFC 2675) or a Linux BIG TCP packet; take
    // what was captured. With "no next header" it is just an empty packet.
    let ip_len = if payload_len == 0 && next_header != ext::NO_NEXT_HEADER {
        buf.len()
    } else {
        HEADER_LEN + payload_len
    };

    meta.is_v6 = true;
    meta.src = Addr::from_v6(p.src_addr());
    meta.dst = Addr::from_v6(p.dst_addr());
    meta.ecn = p.ecn();
    meta.ttl = p.hop_limit();
    meta.ip_len = len32(ip_len);
    meta.proto = next_header;

    let end = ip_len.min(buf.len());
    let data = &buf[HEADER_LEN..end];
    let chain = walk_chain(next_header, data, ip_len - HEADER_LEN)?;
    meta.proto = chain.proto;
    meta.frag = chain.frag;
    meta.frag_id = chain.frag_id;
    // walk_chain: chain.len <= ip_len - HEADER_LEN and chain.len <= data.len().
    let l4_len = ip_len - HEADER_LEN - chain.len;
    if chain.frag == Frag::Later {
        meta.payload_len = len32(l4_len);
        return Ok(());
    }
    parse_l4(&data[chain.len..], l4_len, meta)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::LinkType;
    use super::*;
    use crate::meta::proto;

    #[test]
    fn header_accessors() {
        let p = Packet::new_checked(&V6_HBH_FRAG_UDP[..]).unwrap();
        assert_eq!(
            (p.version(), p.traffic_class(), p.ecn(), p.flow_label()),
            (6, 0x01, 1, 0x12345)
        );
        assert_eq!(
            (p.payload_len(), p.next_header(), p.hop_limit()),
            (1024, 0, 64)
        );
        assert_eq!(p.src_addr()[15], 1);
        assert_eq!(p.dst_addr()[15], 2);
        assert_eq!(p.payload().len(), 24);
        let hbh = ExtHeader::new_checked(ext::HOP_BY_HOP, p.payload()).unwrap();
        assert_eq!(
            (hbh.kind(), hbh.next_header(), hbh.header_len()),
            (0, ext::FRAGMENT, 8)
        );
        let frag = ExtHeader::new_checked(ext::FRAGMENT, &p.payload()[8..]).unwrap();
        assert_eq!(
            (frag.frag_offset(), frag.more_frags(), frag.frag_ident()),
            (0, true, 0xcafe)
        );
        assert_eq!(frag.next_header(), proto::UDP);
    }

    #[test]
    fn hop_by_hop_and_first_fragment() {
        let m = parse_ok(LinkType::Ipv6, &V6_HBH_FRAG_UDP);
        assert!(m.is_v6);
        assert_eq!((m.proto, m.sport, m.dport), (proto::UDP, 8888, 4444));
        assert_eq!((m.frag, m.frag_id), (Frag::First, 0xcafe));
        assert_eq!((m.ip_len, m.payload_len), (1064, 1000));
        assert_eq!(m.ecn, 1);
    }

    #[test]
    fn later_fragment() {
        let m = parse_ok(LinkType::Ipv6, &V6_FRAG_LATER);
        assert_eq!((m.frag, m.frag_id), (Frag::Later, 0xcafe));
        assert_eq!((m.proto, m.sport, m.dport), (proto::UDP, 0, 0));
        assert_eq!((m.ip_len, m.payload_len), (56, 8));
    }

    #[test]
    fn atomic_fragment_is_not_a_fragment() {
        let mut f = V6_HBH_FRAG_UDP;
        f[51] = 0x00; // clear M
        let m = parse_ok(LinkType::Ipv6, &f);
        assert_eq!((m.frag, m.frag_id, m.sport), (Frag::None, 0, 8888));
    }

    /// IPv6 + `exts` (each: kind, bytes) + `tail`, payload length set to match
    /// `payload_len` (or the real length).
    fn build(exts: &[(u8, Vec<u8>)], last: u8, tail: &[u8], payload_len: Option<u16>) -> Vec<u8> {
        let mut v = V6_HBH_FRAG_UDP[..40].to_vec();
        let body: Vec<u8> = exts
            .iter()
            .flat_map(|(_, b)| b.clone())
            .chain(tail.iter().copied())
            .collect();
        let kinds: Vec<u8> = exts
            .iter()
            .map(|(k, _)| *k)
            .chain(std::iter::once(last))
            .collect();
        v[6] = kinds[0];
        let plen = payload_len.unwrap_or(body.len() as u16);
        v[4..6].copy_from_slice(&plen.to_be_bytes());
        let mut off = 40;
        v.extend_from_slice(&body);
        for (i, (_, b)) in exts.iter().enumerate() {
            v[off] = kinds[i + 1];
            off += b.len();
        }
        v
    }

    const TCP_ACK: [u8; 20] = [
        0x1f, 0x90, 0xc3, 0x50, 0, 0, 0, 1, 0, 0, 0, 2, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0,
    ];

    #[test]
    fn routing_destopts_and_ah() {
        let routing = vec![0, 2, 0, 1, 0, 0, 0, 0]
            .into_iter()
            .chain([0u8; 16].iter().copied())
            .collect::<Vec<_>>(); // len 2: 24 bytes, one segment
        let dest = vec![0, 0, 1, 4, 0, 0, 0, 0];
        let ah = vec![
            0, 4, 0, 0, 0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ]; // (4+2)*4 = 24
        let f = build(
            &[
                (ext::ROUTING, routing),
                (ext::DEST_OPTS, dest),
                (ext::AH, ah),
            ],
            proto::TCP,
            &TCP_ACK,
            None,
        );
        let m = parse_ok(LinkType::Raw, &f);
        assert_eq!((m.proto, m.sport, m.dport), (proto::TCP, 8080, 50000));
        assert_eq!((m.ip_len, m.payload_len), (40 + 56 + 20, 0));
        assert_eq!(m.frag, Frag::None);
    }

    #[test]
    fn esp_and_no_next_header_end_the_chain() {
        let dest = vec![0, 0, 1, 4, 0, 0, 0, 0];
        let f = build(
            &[(ext::DEST_OPTS, dest)],
            ext::ESP,
            &[0, 0, 1, 0, 0, 0, 0, 9],
            None,
        );
        let m = parse_ok(LinkType::Raw, &f);
        assert_eq!((m.proto, m.sport, m.payload_len), (ext::ESP, 0, 0));
        let f = build(&[], ext::NO_NEXT_HEADER, &[], None);
        let m = parse_ok(LinkType::Raw, &f);
        assert_eq!((m.proto, m.ip_len), (ext::NO_NEXT_HEADER, 40));
        // Ethernet padding after an empty packet does not count.
        let m = parse_ok(LinkType::Ethernet, &eth_v6(&cat(&[&f, &[0; 6]])));
        assert_eq!(m.ip_len, 40);
    }

    #[test]
    fn jumbogram_uses_captured_length() {
        // Hop-by-hop with a jumbo payload option (0xc2), then TCP, payload length 0.
        let hbh = vec![0, 0, 0xc2, 4, 0, 1, 0, 0];
        let mut f = build(&[(ext::HOP_BY_HOP, hbh)], proto::TCP, &TCP_ACK, Some(0));
        f.extend_from_slice(&[0x55; 100]);
        let m = parse_ok(LinkType::Raw, &f);
        assert_eq!((m.ip_len, m.payload_len), (40 + 8 + 20 + 100, 100));
        // BIG TCP: no hop-by-hop at all.
        let mut f = build(&[], proto::TCP, &TCP_ACK, Some(0));
        f.extend_from_slice(&[0x55; 100]);
        assert_eq!(parse_ok(LinkType::Raw, &f).payload_len, 100);
    }

    #[test]
    fn chain_limit() {
        let dest = || (ext::DEST_OPTS, vec![0, 0, 1, 4, 0, 0, 0, 0]);
        let eight: Vec<_> = (0..8).map(|_| dest()).collect();
        let f = build(&eight, proto::TCP, &TCP_ACK, None);
        assert_eq!(parse_ok(LinkType::Raw, &f).dport, 50000);
        let nine: Vec<_> = (0..9).map(|_| dest()).collect();
        let f = build(&nine, proto::TCP, &TCP_ACK, None);
        assert_eq!(parse_err(LinkType::Raw, &f), ParseError::Ipv6ExtTooLong);
        // A chain of hop-by-hop headers pointing at themselves stops at the limit too.
        let mut f = V6_HBH_FRAG_UDP[..40].to_vec();
        f[4..6].copy_from_slice(&800u16.to_be_bytes());
        f.extend_from_slice(&[0u8; 800]);
        assert_eq!(parse_err(LinkType::Raw, &f), ParseError::Ipv6ExtTooLong);
    }

    #[test]
    fn truncated_and_bad_lengths() {
        assert_eq!(
            parse_err(LinkType::Ipv6, &V6_HBH_FRAG_UDP[..39]),
            ParseError::TruncatedIpv6
        );
        assert_eq!(
            parse_err(LinkType::Ipv6, &V6_HBH_FRAG_UDP[..40]),
            ParseError::TruncatedIpv6Ext
        );
        assert_eq!(
            parse_err(LinkType::Ipv6, &V6_HBH_FRAG_UDP[..47]),
            ParseError::TruncatedIpv6Ext
        );
        assert_eq!(
            parse_err(LinkType::Ipv6, &V6_HBH_FRAG_UDP[..55]),
            ParseError::TruncatedIpv6Ext
        );
        assert_eq!(
            parse_err(LinkType::Ipv6, &V6_HBH_FRAG_UDP[..60]),
            ParseError::TruncatedUdp
        );
        // The hop-by-hop header claims all 24 captured bytes (payload length
        // allows it); the fragment header it points to is not captured.
        let mut f = V6_HBH_FRAG_UDP;
        f[41] = 2;
        assert_eq!(parse_err(LinkType::Ipv6, &f), ParseError::TruncatedIpv6Ext);
        // Payload length 12: the fragment header (bytes 8..16) does not fit.
        let mut f = V6_HBH_FRAG_UDP;
        f[4..6].copy_from_slice(&12u16.to_be_bytes());
        assert_eq!(parse_err(LinkType::Ipv6, &f), ParseError::BadIpv6Length);
        // Payload length 4: not even the hop-by-hop header fits.
        f[4..6].copy_from_slice(&4u16.to_be_bytes());
        assert_eq!(parse_err(LinkType::Ipv6, &f), ParseError::BadIpv6Length);
        // Payload length 20: headers fit, UDP does not.
        f[4..6].copy_from_slice(&20u16.to_be_bytes());
        assert_eq!(parse_err(LinkType::Ipv6, &f), ParseError::BadUdpLength);
    }

    #[test]
    fn walk_chain_directly() {
        let c = walk_chain(ext::HOP_BY_HOP, &V6_HBH_FRAG_UDP[40..], 1024).unwrap();
        assert_eq!(
            c,
            Chain {
                proto: proto::UDP,
                len: 16,
                frag: Frag::First,
                frag_id: 0xcafe
            }
        );
        let c = walk_chain(proto::TCP, &[], 0).unwrap();
        assert_eq!((c.proto, c.len, c.frag), (proto::TCP, 0, Frag::None));
    }
}
