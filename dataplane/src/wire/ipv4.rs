//! IPv4 headers (RFC 791), with options and fragmentation fields.
//!
//! After [`Packet::check_len`] succeeds no accessor panics; `check_len` checks
//! the buffer against the fixed header and the IHL, and the IHL and total length
//! against each other. It does not require the whole packet to be captured.
#![forbid(unsafe_code)]

use super::{be16, bytes, len32, parse_l4, ParseError};
use crate::meta::{Addr, Frag, PacketMeta};

/// The fixed header, without options.
pub const HEADER_LEN: usize = 20;

mod field {
    use core::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLG_OFF: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC_ADDR: Range<usize> = 12..16;
    pub const DST_ADDR: Range<usize> = 16..20;
    pub const OPTIONS: usize = 20;
}

/// A view of an IPv4 header and what follows it in the buffer.
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

    /// `TruncatedIpv4` if the buffer ends inside the header (options included),
    /// `BadIpv4Header` if the IHL is under 5, `BadIpv4Length` if a non-zero total
    /// length is smaller than the header. Does not check the version.
    #[inline]
    pub fn check_len(&self) -> Result<(), ParseError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(ParseError::TruncatedIpv4);
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN {
            return Err(ParseError::BadIpv4Header);
        }
        if len < header_len {
            return Err(ParseError::TruncatedIpv4);
        }
        let total = usize::from(self.total_len());
        if total != 0 && total < header_len {
            return Err(ParseError::BadIpv4Length);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL * 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    #[inline]
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] >> 2
    }

    /// The two ECN bits (3 = CE).
    #[inline]
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] & 0x03
    }

    /// Total length, header included (0 in a sender's capture of a TSO packet).
    #[inline]
    pub fn total_len(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::LENGTH])
    }

    #[inline]
    pub fn ident(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::IDENT])
    }

    #[inline]
    pub fn dont_frag(&self) -> bool {
        be16(&self.buffer.as_ref()[field::FLG_OFF]) & 0x4000 != 0
    }

    #[inline]
    pub fn more_frags(&self) -> bool {
        be16(&self.buffer.as_ref()[field::FLG_OFF]) & 0x2000 != 0
    }

    /// Fragment offset in bytes.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (be16(&self.buffer.as_ref()[field::FLG_OFF]) & 0x1fff) << 3
    }

    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// The protocol of the payload.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    #[inline]
    pub fn src_addr(&self) -> [u8; 4] {
        bytes(&self.buffer.as_ref()[field::SRC_ADDR])
    }

    #[inline]
    pub fn dst_addr(&self) -> [u8; 4] {
        bytes(&self.buffer.as_ref()[field::DST_ADDR])
    }

    /// The raw options (empty when the IHL is 5).
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS..self.header_len()]
    }

    /// The captured bytes after the header (may include link padding; see
    /// [`Packet::total_len`]).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

/// Parse an IPv4 packet (header, then L4) into `meta`.
#[inline]
pub(crate) fn parse(buf: &[u8], meta: &mut PacketMeta) -> Result<(), ParseError> {
    match buf.first() {
        None => return Err(ParseError::TruncatedIpv4),
        Some(b) if b >> 4 != 4 => return Err(ParseError::BadIpVersion),
        Some(_) => {}
    }
    let p = Packet::new_checked(buf)?;
    let header_len = p.header_len();
    let total = usize::from(p.total_len());
    // Total length 0: a TSO super-packet seen by its sender; take what was captured.
    let ip_len = if total == 0 { buf.len() } else { total };

    meta.is_v6 = false;
    meta.src = Addr::from_v4(p.src_addr());
    meta.dst = Addr::from_v4(p.dst_addr());
    meta.proto = p.next_header();
    meta.ecn = p.ecn();
    meta.ttl = p.hop_limit();
    meta.ip_len = len32(ip_len);

    let offset = p.frag_offset();
    if offset != 0 {
        meta.frag = Frag::Later;
        meta.frag_id = u32::from(p.ident());
        meta.payload_len = len32(ip_len - header_len);
        return Ok(());
    }
    if p.more_frags() {
        meta.frag = Frag::First;
        meta.frag_id = u32::from(p.ident());
    }
    // check_len: header_len <= buf.len() and header_len <= ip_len.
    let end = ip_len.min(buf.len());
    parse_l4(&buf[header_len..end], ip_len - header_len, meta)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::LinkType;
    use super::*;
    use crate::meta::proto;

    #[test]
    fn header_accessors() {
        let p = Packet::new_checked(&V4_TCP_SYN[..]).unwrap();
        assert_eq!((p.version(), p.header_len(), p.total_len()), (4, 20, 60));
        assert_eq!(
            (p.ident(), p.dont_frag(), p.more_frags(), p.frag_offset()),
            (0x1c46, true, false, 0)
        );
        assert_eq!((p.hop_limit(), p.next_header(), p.checksum()), (64, 6, 0));
        assert_eq!(p.src_addr(), [198, 18, 0, 1]);
        assert_eq!(p.dst_addr(), [198, 18, 1, 2]);
        assert!(p.options().is_empty());
        assert_eq!(p.payload().len(), 40);
        let p = Packet::new_checked(&V4_ICMP_FRAG_NEEDED[..]).unwrap();
        assert_eq!((p.dscp(), p.ecn()), (48, 0));
    }

    #[test]
    fn options_are_skipped() {
        let p = Packet::new_checked(&V4_OPTS_UDP[..]).unwrap();
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.options(), &[0x94, 0x04, 0x00, 0x00]);
        let m = parse_ok(LinkType::Ipv4, &V4_OPTS_UDP);
        assert_eq!((m.proto, m.sport, m.dport), (proto::UDP, 5000, 5001));
        assert_eq!((m.ip_len, m.payload_len), (36, 4));
        assert_eq!(m.frag, Frag::None);
        assert_eq!(m.frag_id, 0);
    }

    #[test]
    fn ecn_bits() {
        assert_eq!(parse_ok(LinkType::Ipv4, &V4_TCP_SACK).ecn, 3);
        assert_eq!(parse_ok(LinkType::Ipv4, &V4_TCP_SYN).ecn, 0);
        let mut ect0 = V4_TCP_SYN;
        ect0[1] = 0xb8 | 0x02; // DSCP EF, ECT(0)
        assert_eq!(parse_ok(LinkType::Ipv4, &ect0).ecn, 2);
    }

    #[test]
    fn first_fragment_parses_l4() {
        let m = parse_ok(LinkType::Ipv4, &V4_FRAG_FIRST);
        assert_eq!(m.frag, Frag::First);
        assert_eq!(m.frag_id, 0xabcd);
        assert_eq!((m.proto, m.sport, m.dport), (proto::UDP, 12345, 53));
        assert_eq!((m.ip_len, m.payload_len), (1500, 1472));
    }

    #[test]
    fn later_fragment_skips_l4() {
        let p = Packet::new_checked(&V4_FRAG_LATER[..]).unwrap();
        assert_eq!((p.more_frags(), p.frag_offset()), (true, 1480));
        let m = parse_ok(LinkType::Ipv4, &V4_FRAG_LATER);
        assert_eq!(m.frag, Frag::Later);
        assert_eq!(m.frag_id, 0xabcd);
        assert_eq!((m.proto, m.sport, m.dport), (proto::UDP, 0, 0));
        assert_eq!((m.ip_len, m.payload_len), (1500, 1480));
        // The last fragment (no MF) is "Later" too.
        let mut last = V4_FRAG_LATER;
        last[6] = 0x00;
        assert_eq!(parse_ok(LinkType::Ipv4, &last).frag, Frag::Later);
        // A later fragment needs no L4 bytes at all.
        assert_eq!(
            parse_ok(LinkType::Ipv4, &V4_FRAG_LATER[..20]).frag,
            Frag::Later
        );
    }

    #[test]
    fn padding_does_not_count() {
        let m = parse_ok(LinkType::Ethernet, &eth_v4(&V4_TCP_ACK_PADDED));
        assert_eq!((m.ip_len, m.payload_len), (40, 0));
    }

    #[test]
    fn snaplen_cut_payload_counts_in_full() {
        let m = parse_ok(LinkType::Ipv4, &V4_TCP_SACK);
        assert_eq!((m.ip_len, m.payload_len), (180, 100));
    }

    #[test]
    fn tso_zero_total_length_uses_captured_length() {
        let mut f = V4_TCP_SACK.to_vec();
        f[2..4].copy_from_slice(&[0, 0]);
        f.extend_from_slice(&[0xaa; 1000]);
        let m = parse_ok(LinkType::Ipv4, &f);
        assert_eq!((m.ip_len, m.payload_len), (1080, 1000));
    }

    #[test]
    fn errors() {
        assert_eq!(
            parse_err(LinkType::Ipv4, &V4_TCP_SYN[..19]),
            ParseError::TruncatedIpv4
        );
        assert_eq!(
            parse_err(LinkType::Ipv4, &V4_OPTS_UDP[..23]),
            ParseError::TruncatedIpv4
        );
        let mut bad = V4_TCP_SYN;
        bad[0] = 0x44; // IHL 4
        assert_eq!(parse_err(LinkType::Ipv4, &bad), ParseError::BadIpv4Header);
        let mut bad = V4_OPTS_UDP;
        bad[2..4].copy_from_slice(&22u16.to_be_bytes()); // total 22 < IHL 24
        assert_eq!(parse_err(LinkType::Ipv4, &bad), ParseError::BadIpv4Length);
        let mut bad = V4_TCP_SYN;
        bad[0] = 0x65;
        assert_eq!(parse_err(LinkType::Ipv4, &bad), ParseError::BadIpVersion);
        // A total length that leaves no room for the TCP header.
        let mut bad = V4_TCP_SYN;
        bad[2..4].copy_from_slice(&30u16.to_be_bytes());
        assert_eq!(parse_err(LinkType::Ipv4, &bad), ParseError::BadTcpLength);
    }

    #[test]
    fn other_protocols_have_no_ports_or_payload() {
        let mut gre = V4_OPTS_UDP;
        gre[9] = 47;
        let m = parse_ok(LinkType::Ipv4, &gre);
        assert_eq!(
            (m.proto, m.sport, m.dport, m.payload_len, m.ip_len),
            (47, 0, 0, 0, 36)
        );
    }
}
