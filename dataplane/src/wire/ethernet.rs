//! Ethernet II frames and stacked VLAN tags (802.1Q 0x8100, 802.1ad 0x88a8 and
//! the pre-standard QinQ 0x9100).
//!
//! After [`Frame::check_len`] / [`VlanTag::check_len`] succeed no accessor panics.
#![forbid(unsafe_code)]

use super::{be16, bytes, ParseError};
use crate::meta::PacketMeta;

/// Destination, source, EtherType.
pub const HEADER_LEN: usize = 14;
/// TCI (PCP, DEI, VID) and the inner EtherType.
pub const VLAN_TAG_LEN: usize = 4;
/// Tags beyond this many give [`ParseError::VlanTooDeep`].
pub const MAX_VLAN_TAGS: usize = 4;

mod field {
    use core::ops::{Range, RangeFrom};
    pub const DESTINATION: Range<usize> = 0..6;
    pub const SOURCE: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
    pub const PAYLOAD: RangeFrom<usize> = 14..;

    pub const VLAN_TCI: Range<usize> = 0..2;
    pub const VLAN_ETHERTYPE: Range<usize> = 2..4;
    pub const VLAN_PAYLOAD: RangeFrom<usize> = 4..;
}

/// An EtherType (or, below 0x0600, an 802.3 length), as on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EtherType {
    Ipv4,
    Arp,
    Ipv6,
    /// 802.1Q customer tag, 0x8100.
    Vlan,
    /// 802.1ad service tag, 0x88a8.
    ServiceVlan,
    /// Pre-standard QinQ outer tag, 0x9100.
    QinQ,
    Unknown(u16),
}

impl EtherType {
    /// True for the TPIDs of a VLAN tag.
    #[inline]
    pub fn is_vlan(self) -> bool {
        matches!(
            self,
            EtherType::Vlan | EtherType::ServiceVlan | EtherType::QinQ
        )
    }
}

impl From<u16> for EtherType {
    #[inline]
    fn from(v: u16) -> EtherType {
        match v {
            0x0800 => EtherType::Ipv4,
            0x0806 => EtherType::Arp,
            0x86dd => EtherType::Ipv6,
            0x8100 => EtherType::Vlan,
            0x88a8 => EtherType::ServiceVlan,
            0x9100 => EtherType::QinQ,
            other => EtherType::Unknown(other),
        }
    }
}

impl From<EtherType> for u16 {
    #[inline]
    fn from(v: EtherType) -> u16 {
        match v {
            EtherType::Ipv4 => 0x0800,
            EtherType::Arp => 0x0806,
            EtherType::Ipv6 => 0x86dd,
            EtherType::Vlan => 0x8100,
            EtherType::ServiceVlan => 0x88a8,
            EtherType::QinQ => 0x9100,
            EtherType::Unknown(other) => other,
        }
    }
}

/// A view of an Ethernet II frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// A view without length checks; accessors may panic on a short buffer.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Frame<T> {
        Frame { buffer }
    }

    /// [`Frame::new_unchecked`] followed by [`Frame::check_len`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Frame<T>, ParseError> {
        let f = Frame::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    /// `Err(TruncatedEthernet)` if the buffer is shorter than the header.
    #[inline]
    pub fn check_len(&self) -> Result<(), ParseError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(ParseError::TruncatedEthernet)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn dst_addr(&self) -> [u8; 6] {
        bytes(&self.buffer.as_ref()[field::DESTINATION])
    }

    #[inline]
    pub fn src_addr(&self) -> [u8; 6] {
        bytes(&self.buffer.as_ref()[field::SOURCE])
    }

    #[inline]
    pub fn ethertype(&self) -> EtherType {
        be16(&self.buffer.as_ref()[field::ETHERTYPE]).into()
    }

    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

/// A view of one VLAN tag: the 4 bytes after a VLAN TPID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanTag<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    #[inline]
    pub const fn new_unchecked(buffer: T) -> VlanTag<T> {
        VlanTag { buffer }
    }

    #[inline]
    pub fn new_checked(buffer: T) -> Result<VlanTag<T>, ParseError> {
        let t = VlanTag::new_unchecked(buffer);
        t.check_len()?;
        Ok(t)
    }

    /// `Err(TruncatedVlan)` if the buffer is shorter than a tag.
    #[inline]
    pub fn check_len(&self) -> Result<(), ParseError> {
        if self.buffer.as_ref().len() < VLAN_TAG_LEN {
            Err(ParseError::TruncatedVlan)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    fn tci(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::VLAN_TCI])
    }

    /// Priority code point (0..=7).
    #[inline]
    pub fn pcp(&self) -> u8 {
        (self.tci() >> 13) as u8
    }

    /// Drop eligible indicator.
    #[inline]
    pub fn dei(&self) -> bool {
        self.tci() & 0x1000 != 0
    }

    /// VLAN identifier (12 bits; 0 = priority tag only).
    #[inline]
    pub fn vid(&self) -> u16 {
        self.tci() & 0x0fff
    }

    /// The EtherType of what follows the tag.
    #[inline]
    pub fn ethertype(&self) -> EtherType {
        be16(&self.buffer.as_ref()[field::VLAN_ETHERTYPE]).into()
    }

    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::VLAN_PAYLOAD]
    }
}

/// Walk the VLAN tags that follow `ethertype` in `buf`, up to [`MAX_VLAN_TAGS`].
/// Sets `meta.vlan` to the outermost non-zero VID: VID 0 only carries a priority
/// (802.1p), and a host that priority-tags one direction must not split a flow.
/// Returns the inner EtherType and the bytes after the tags.
#[inline]
pub(crate) fn skip_vlan_tags<'a>(
    mut ethertype: EtherType,
    mut buf: &'a [u8],
    meta: &mut PacketMeta,
) -> Result<(EtherType, &'a [u8]), ParseError> {
    let mut n = 0;
    while ethertype.is_vlan() {
        if n == MAX_VLAN_TAGS {
            return Err(ParseError::VlanTooDeep);
        }
        n += 1;
        let tag = VlanTag::new_checked(buf)?;
        let vid = tag.vid();
        if meta.vlan.is_none() && vid != 0 {
            meta.vlan = Some(vid);
        }
        ethertype = tag.ethertype();
        buf = &tag.into_inner()[VLAN_TAG_LEN..];
    }
    Ok((ethertype, buf))
}

/// Parse the Ethernet header and VLAN tags; returns the EtherType of the
/// payload and the payload (an 802.3 length comes back as `Unknown`).
#[inline]
pub(crate) fn parse<'a>(
    frame: &'a [u8],
    meta: &mut PacketMeta,
) -> Result<(EtherType, &'a [u8]), ParseError> {
    let f = Frame::new_checked(frame)?;
    skip_vlan_tags(f.ethertype(), &frame[HEADER_LEN..], meta)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::LinkType;
    use super::*;
    use crate::meta::proto;

    #[test]
    fn frame_accessors() {
        let frame = eth_v4(&V4_TCP_SYN);
        let f = Frame::new_checked(&frame[..]).unwrap();
        assert_eq!(f.dst_addr(), MAC_DST);
        assert_eq!(f.src_addr(), MAC_SRC);
        assert_eq!(f.ethertype(), EtherType::Ipv4);
        assert_eq!(f.payload(), &V4_TCP_SYN[..]);
        assert_eq!(
            Frame::new_checked(&frame[..13]).unwrap_err(),
            ParseError::TruncatedEthernet
        );
    }

    #[test]
    fn ethertype_round_trip() {
        for v in [
            0x0800u16, 0x0806, 0x86dd, 0x8100, 0x88a8, 0x9100, 0x88cc, 0x0042,
        ] {
            assert_eq!(u16::from(EtherType::from(v)), v);
        }
        assert_eq!(EtherType::from(0x88cc), EtherType::Unknown(0x88cc));
    }

    #[test]
    fn untagged_ipv4() {
        let m = parse_ok(LinkType::Ethernet, &eth_v4(&V4_TCP_SYN));
        assert_eq!(m.vlan, None);
        assert_eq!(m.proto, proto::TCP);
        assert_eq!((m.sport, m.dport), (43210, 443));
    }

    #[test]
    fn qinq_gives_outer_vid() {
        let frame = eth(&QINQ_TAGS, &V4_OPTS_UDP);
        let tag = VlanTag::new_checked(&frame[14..]).unwrap();
        assert_eq!((tag.vid(), tag.pcp(), tag.dei()), (100, 0, false));
        assert_eq!(tag.ethertype(), EtherType::Vlan);
        let inner = VlanTag::new_checked(tag.payload()).unwrap();
        assert_eq!((inner.vid(), inner.pcp()), (200, 1));
        assert_eq!(inner.ethertype(), EtherType::Ipv4);

        let m = parse_ok(LinkType::Ethernet, &frame);
        assert_eq!(m.vlan, Some(100));
        assert_eq!((m.sport, m.dport, m.payload_len), (5000, 5001, 4));
    }

    #[test]
    fn old_qinq_tpid_and_single_tag() {
        let m = parse_ok(
            LinkType::Ethernet,
            &eth(&[0x91, 0x00, 0x0f, 0xff, 0x86, 0xdd], &V6_ICMP_PTB),
        );
        assert_eq!(m.vlan, Some(4095));
        assert!(m.is_v6);
        let m = parse_ok(
            LinkType::Ethernet,
            &eth(&[0x81, 0x00, 0xe0, 0x0a, 0x08, 0x00], &V4_TCP_SYN),
        );
        assert_eq!(m.vlan, Some(10));
    }

    #[test]
    fn priority_tag_is_not_a_vlan() {
        // VID 0 (802.1p priority tag) outside, VID 300 inside: the flow is on 300.
        let tags = [0x81, 0x00, 0xa0, 0x00, 0x81, 0x00, 0x01, 0x2c, 0x08, 0x00];
        assert_eq!(
            parse_ok(LinkType::Ethernet, &eth(&tags, &V4_TCP_SYN)).vlan,
            Some(300)
        );
        let tags = [0x81, 0x00, 0xa0, 0x00, 0x08, 0x00];
        assert_eq!(
            parse_ok(LinkType::Ethernet, &eth(&tags, &V4_TCP_SYN)).vlan,
            None
        );
    }

    #[test]
    fn four_tags_ok_five_too_deep() {
        let tag = [0x81, 0x00, 0x00, 0x07];
        let four = cat(&[&tag, &tag, &tag, &tag, &[0x08, 0x00]]);
        assert_eq!(
            parse_ok(LinkType::Ethernet, &eth(&four, &V4_TCP_SYN)).vlan,
            Some(7)
        );
        let five = cat(&[&tag, &tag, &tag, &tag, &tag, &[0x08, 0x00]]);
        assert_eq!(
            parse_err(LinkType::Ethernet, &eth(&five, &V4_TCP_SYN)),
            ParseError::VlanTooDeep
        );
    }

    #[test]
    fn truncated() {
        let frame = eth(&QINQ_TAGS, &V4_OPTS_UDP);
        assert_eq!(
            parse_err(LinkType::Ethernet, &frame[..0]),
            ParseError::TruncatedEthernet
        );
        assert_eq!(
            parse_err(LinkType::Ethernet, &frame[..13]),
            ParseError::TruncatedEthernet
        );
        assert_eq!(
            parse_err(LinkType::Ethernet, &frame[..14]),
            ParseError::TruncatedVlan
        );
        assert_eq!(
            parse_err(LinkType::Ethernet, &frame[..17]),
            ParseError::TruncatedVlan
        );
        assert_eq!(
            parse_err(LinkType::Ethernet, &frame[..21]),
            ParseError::TruncatedVlan
        );
        assert_eq!(
            parse_err(LinkType::Ethernet, &frame[..22]),
            ParseError::TruncatedIpv4
        );
        assert_eq!(
            parse_err(LinkType::Ethernet, &eth_v6(&[])),
            ParseError::TruncatedIpv6
        );
    }

    #[test]
    fn non_ip() {
        assert_eq!(parse_err(LinkType::Ethernet, &ARP_FRAME), ParseError::NonIp);
        // LLDP.
        assert_eq!(
            parse_err(LinkType::Ethernet, &eth(&[0x88, 0xcc], &[0; 46])),
            ParseError::NonIp
        );
        // 802.3 length field + LLC (STP).
        assert_eq!(
            parse_err(
                LinkType::Ethernet,
                &eth(&[0x00, 0x26], &[0x42, 0x42, 0x03, 0, 0])
            ),
            ParseError::NonIp
        );
        // ARP inside a VLAN: the tag is still read.
        let mut m = PacketMeta::default();
        let frame = eth(&[0x81, 0x00, 0x00, 0x05, 0x08, 0x06], &ARP_FRAME[14..]);
        assert_eq!(
            super::super::parse(LinkType::Ethernet, &frame, &mut m),
            Err(ParseError::NonIp)
        );
        assert_eq!(m.vlan, Some(5));
    }

    #[test]
    fn ethertype_and_version_must_agree() {
        assert_eq!(
            parse_err(LinkType::Ethernet, &eth_v4(&V6_ICMP_PTB)),
            ParseError::BadIpVersion
        );
        assert_eq!(
            parse_err(LinkType::Ethernet, &eth_v6(&V4_TCP_SYN)),
            ParseError::BadIpVersion
        );
    }
}
