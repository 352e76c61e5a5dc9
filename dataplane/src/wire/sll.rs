//! Linux "cooked" capture headers: SLL (LINKTYPE_LINUX_SLL, 16 bytes) and SLL2
//! (LINKTYPE_LINUX_SLL2, 20 bytes), what `tcpdump -i any` writes.
//!
//! The protocol field is an EtherType for the link types that carry IP; VLAN
//! tags left in the payload are walked as on Ethernet. After `check_len`
//! succeeds no accessor panics.
#![forbid(unsafe_code)]

use super::ethernet::{self, EtherType};
use super::{be16, be32, ParseError};
use crate::meta::PacketMeta;

pub const SLL_HEADER_LEN: usize = 16;
pub const SLL2_HEADER_LEN: usize = 20;

/// `ARPHRD_NETLINK`: the protocol field is a netlink family, not an EtherType.
pub const ARPHRD_NETLINK: u16 = 824;

mod field {
    use core::ops::{Range, RangeFrom};
    // SLL v1
    pub const PKTTYPE: Range<usize> = 0..2;
    pub const HATYPE: Range<usize> = 2..4;
    pub const HALEN: Range<usize> = 4..6;
    pub const ADDR: Range<usize> = 6..14;
    pub const PROTOCOL: Range<usize> = 14..16;
    pub const PAYLOAD: RangeFrom<usize> = 16..;
    // SLL v2
    pub const PROTOCOL2: Range<usize> = 0..2;
    pub const IFINDEX2: Range<usize> = 4..8;
    pub const HATYPE2: Range<usize> = 8..10;
    pub const PKTTYPE2: usize = 10;
    pub const HALEN2: usize = 11;
    pub const ADDR2: Range<usize> = 12..20;
    pub const PAYLOAD2: RangeFrom<usize> = 20..;
}

/// A view of a Linux SLL (v1) header and its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SllPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> SllPacket<T> {
    #[inline]
    pub const fn new_unchecked(buffer: T) -> SllPacket<T> {
        SllPacket { buffer }
    }

    #[inline]
    pub fn new_checked(buffer: T) -> Result<SllPacket<T>, ParseError> {
        let p = SllPacket::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// `Err(TruncatedSll)` if the buffer is shorter than the 16-byte header.
    #[inline]
    pub fn check_len(&self) -> Result<(), ParseError> {
        if self.buffer.as_ref().len() < SLL_HEADER_LEN {
            Err(ParseError::TruncatedSll)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// 0 to us, 1 broadcast, 2 multicast, 3 to another host, 4 sent by us.
    #[inline]
    pub fn packet_type(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::PKTTYPE])
    }

    /// The `ARPHRD_` type of the interface.
    #[inline]
    pub fn hardware_type(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::HATYPE])
    }

    /// The link-layer source address (at most 8 bytes are stored).
    #[inline]
    pub fn addr(&self) -> &[u8] {
        let n = usize::from(be16(&self.buffer.as_ref()[field::HALEN])).min(8);
        &self.buffer.as_ref()[field::ADDR][..n]
    }

    #[inline]
    pub fn protocol(&self) -> EtherType {
        be16(&self.buffer.as_ref()[field::PROTOCOL]).into()
    }

    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

/// A view of a Linux SLL2 header and its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sll2Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Sll2Packet<T> {
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Sll2Packet<T> {
        Sll2Packet { buffer }
    }

    #[inline]
    pub fn new_checked(buffer: T) -> Result<Sll2Packet<T>, ParseError> {
        let p = Sll2Packet::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// `Err(TruncatedSll)` if the buffer is shorter than the 20-byte header.
    #[inline]
    pub fn check_len(&self) -> Result<(), ParseError> {
        if self.buffer.as_ref().len() < SLL2_HEADER_LEN {
            Err(ParseError::TruncatedSll)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn protocol(&self) -> EtherType {
        be16(&self.buffer.as_ref()[field::PROTOCOL2]).into()
    }

    #[inline]
    pub fn interface_index(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::IFINDEX2])
    }

    #[inline]
    pub fn hardware_type(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::HATYPE2])
    }

    #[inline]
    pub fn packet_type(&self) -> u8 {
        self.buffer.as_ref()[field::PKTTYPE2]
    }

    #[inline]
    pub fn addr(&self) -> &[u8] {
        let n = usize::from(self.buffer.as_ref()[field::HALEN2]).min(8);
        &self.buffer.as_ref()[field::ADDR2][..n]
    }

    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD2]
    }
}

#[inline]
fn finish<'a>(
    hardware_type: u16,
    protocol: EtherType,
    payload: &'a [u8],
    meta: &mut PacketMeta,
) -> Result<(EtherType, &'a [u8]), ParseError> {
    if hardware_type == ARPHRD_NETLINK {
        return Err(ParseError::NonIp);
    }
    ethernet::skip_vlan_tags(protocol, payload, meta)
}

/// Parse an SLL header (and VLAN tags); returns the EtherType and the payload.
#[inline]
pub(crate) fn parse_sll<'a>(
    frame: &'a [u8],
    meta: &mut PacketMeta,
) -> Result<(EtherType, &'a [u8]), ParseError> {
    let p = SllPacket::new_checked(frame)?;
    finish(
        p.hardware_type(),
        p.protocol(),
        &frame[SLL_HEADER_LEN..],
        meta,
    )
}

/// Parse an SLL2 header (and VLAN tags); returns the EtherType and the payload.
#[inline]
pub(crate) fn parse_sll2<'a>(
    frame: &'a [u8],
    meta: &mut PacketMeta,
) -> Result<(EtherType, &'a [u8]), ParseError> {
    let p = Sll2Packet::new_checked(frame)?;
    finish(
        p.hardware_type(),
        p.protocol(),
        &frame[SLL2_HEADER_LEN..],
        meta,
    )
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::LinkType;
    use super::*;
    use crate::meta::{proto, tcp_flags, Frag};

    #[test]
    fn sll_ipv4_tcp() {
        let frame = cat(&[&sll_header(0x0800), &V4_TCP_SYN]);
        let p = SllPacket::new_checked(&frame[..]).unwrap();
        assert_eq!((p.packet_type(), p.hardware_type()), (0, 1));
        assert_eq!(p.addr(), &MAC_SRC[..]);
        assert_eq!(p.protocol(), EtherType::Ipv4);
        assert_eq!(p.payload(), &V4_TCP_SYN[..]);

        let m = parse_ok(LinkType::LinuxSll, &frame);
        assert_eq!(m.proto, proto::TCP);
        assert_eq!(m.tcp.flags, tcp_flags::SYN);
        assert_eq!((m.sport, m.dport, m.ip_len), (43210, 443, 60));
    }

    #[test]
    fn sll2_ipv6_udp() {
        let frame = cat(&[&sll2_header(0x86dd), &V6_HBH_FRAG_UDP]);
        let p = Sll2Packet::new_checked(&frame[..]).unwrap();
        assert_eq!(p.protocol(), EtherType::Ipv6);
        assert_eq!(
            (p.interface_index(), p.hardware_type(), p.packet_type()),
            (2, 1, 4)
        );
        assert_eq!(p.addr(), &MAC_SRC[..]);
        assert_eq!(p.payload(), &V6_HBH_FRAG_UDP[..]);

        let m = parse_ok(LinkType::LinuxSll2, &frame);
        assert!(m.is_v6);
        assert_eq!((m.proto, m.sport, m.dport), (proto::UDP, 8888, 4444));
        assert_eq!(m.frag, Frag::First);
    }

    #[test]
    fn sll_with_vlan_tag_in_payload() {
        let frame = cat(&[&sll_header(0x8100), &[0x00, 0x2a, 0x08, 0x00], &V4_TCP_SYN]);
        assert_eq!(parse_ok(LinkType::LinuxSll, &frame).vlan, Some(42));
    }

    #[test]
    fn truncated() {
        let frame = cat(&[&sll_header(0x0800), &V4_TCP_SYN]);
        assert_eq!(
            parse_err(LinkType::LinuxSll, &frame[..15]),
            ParseError::TruncatedSll
        );
        assert_eq!(
            parse_err(LinkType::LinuxSll, &frame[..16]),
            ParseError::TruncatedIpv4
        );
        assert_eq!(
            parse_err(LinkType::LinuxSll, &frame[..50]),
            ParseError::TruncatedTcp
        );
        let frame = cat(&[&sll2_header(0x86dd), &V6_HBH_FRAG_UDP]);
        assert_eq!(
            parse_err(LinkType::LinuxSll2, &frame[..19]),
            ParseError::TruncatedSll
        );
        assert_eq!(
            parse_err(LinkType::LinuxSll2, &frame[..59]),
            ParseError::TruncatedIpv6
        );
        assert_eq!(
            parse_err(LinkType::LinuxSll2, &frame[..61]),
            ParseError::TruncatedIpv6Ext
        );
    }

    #[test]
    fn non_ip() {
        // ARP over SLL and SLL2.
        let arp = &ARP_FRAME[14..42];
        assert_eq!(
            parse_err(LinkType::LinuxSll, &cat(&[&sll_header(0x0806), arp])),
            ParseError::NonIp
        );
        assert_eq!(
            parse_err(LinkType::LinuxSll2, &cat(&[&sll2_header(0x0806), arp])),
            ParseError::NonIp
        );
        // 802.2 LLC (protocol 0x0004) on a non-Ethernet device.
        assert_eq!(
            parse_err(LinkType::LinuxSll, &cat(&[&sll_header(0x0004), arp])),
            ParseError::NonIp
        );
        // Netlink (ARPHRD_NETLINK), whatever the protocol field says.
        let mut h = sll_header(0x0800);
        h[2..4].copy_from_slice(&ARPHRD_NETLINK.to_be_bytes());
        assert_eq!(
            parse_err(LinkType::LinuxSll, &cat(&[&h, &V4_TCP_SYN])),
            ParseError::NonIp
        );
    }
}
