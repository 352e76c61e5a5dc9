//! UDP headers (RFC 768).
//!
//! The payload length in [`PacketMeta`] comes from the IP length, not from the
//! UDP length field, which is exposed here but not trusted: for the first
//! fragment of a datagram it covers the whole datagram, and captures of GSO
//! traffic carry values that do not match the packet. After
//! [`Packet::check_len`] succeeds no accessor panics.
#![forbid(unsafe_code)]

use super::{be16, len32, ParseError};
use crate::meta::PacketMeta;

pub const HEADER_LEN: usize = 8;

mod field {
    use core::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// A view of a UDP header and what follows it in the buffer.
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

    /// `TruncatedUdp` if the buffer is shorter than the header.
    #[inline]
    pub fn check_len(&self) -> Result<(), ParseError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(ParseError::TruncatedUdp)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::SRC_PORT])
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::DST_PORT])
    }

    /// The length field (header included), as sent; not validated.
    #[inline]
    pub fn length(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::LENGTH])
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// The captured bytes after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

/// Parse a UDP header into `meta`. `l4` is the captured part of the IP payload,
/// `l4_len` the IP payload length the IP header claims.
#[inline]
pub(crate) fn parse(l4: &[u8], l4_len: usize, meta: &mut PacketMeta) -> Result<(), ParseError> {
    if l4_len < HEADER_LEN {
        return Err(ParseError::BadUdpLength);
    }
    let p = Packet::new_checked(l4)?;
    meta.sport = p.src_port();
    meta.dport = p.dst_port();
    meta.payload_len = len32(l4_len - HEADER_LEN);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::LinkType;
    use super::*;
    use crate::meta::proto;

    #[test]
    fn accessors() {
        let p = Packet::new_checked(&V4_OPTS_UDP[24..]).unwrap();
        assert_eq!(
            (p.src_port(), p.dst_port(), p.length(), p.checksum()),
            (5000, 5001, 12, 0)
        );
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
    }

    #[test]
    fn payload_from_ip_length_not_udp_length() {
        // The first fragment's UDP length says 4000; the payload here is 1472.
        let m = parse_ok(LinkType::Ipv4, &V4_FRAG_FIRST);
        assert_eq!((m.proto, m.payload_len), (proto::UDP, 1472));
        let mut lying = V4_OPTS_UDP;
        lying[28..30].copy_from_slice(&0xffffu16.to_be_bytes());
        assert_eq!(parse_ok(LinkType::Ipv4, &lying).payload_len, 4);
        // Padding after the datagram does not count.
        let padded = cat(&[&V4_OPTS_UDP, &[0; 10]]);
        assert_eq!(parse_ok(LinkType::Ipv4, &padded).payload_len, 4);
    }

    #[test]
    fn errors() {
        assert_eq!(
            parse_err(LinkType::Ipv4, &V4_OPTS_UDP[..31]),
            ParseError::TruncatedUdp
        );
        assert_eq!(
            parse_err(LinkType::Ipv4, &V4_OPTS_UDP[..24]),
            ParseError::TruncatedUdp
        );
        let mut short = V4_OPTS_UDP;
        short[2..4].copy_from_slice(&30u16.to_be_bytes()); // 6 bytes of UDP
        assert_eq!(parse_err(LinkType::Ipv4, &short), ParseError::BadUdpLength);
        assert_eq!(
            Packet::new_checked(&[0u8; 7][..]).unwrap_err(),
            ParseError::TruncatedUdp
        );
    }
}
