//! TCP headers (RFC 9293) and the options the analyzer uses: MSS, window scale
//! (RFC 7323), SACK-permitted and SACK blocks (RFC 2018), timestamps (RFC 7323).
//!
//! Option parsing never fails and never panics: it stops at end-of-list, at an
//! option whose length is under 2 or runs past the header, and it is bounded by
//! the 40-byte option space. Known options with a wrong length are skipped.
//! After [`Packet::check_len`] succeeds no accessor panics.
#![forbid(unsafe_code)]

use super::{be16, be32, len32, ParseError};
use crate::meta::{PacketMeta, TcpOpts};

/// The fixed header, without options.
pub const HEADER_LEN: usize = 20;

/// Option kinds.
pub mod option {
    pub const END: u8 = 0;
    pub const NOP: u8 = 1;
    pub const MSS: u8 = 2;
    pub const WINDOW_SCALE: u8 = 3;
    pub const SACK_PERMITTED: u8 = 4;
    pub const SACK: u8 = 5;
    pub const TIMESTAMP: u8 = 8;
}

/// At most this many SACK blocks are kept (what fits in 40 bytes of options).
pub const MAX_SACK_BLOCKS: usize = 4;

mod field {
    use core::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const SEQ_NUM: Range<usize> = 4..8;
    pub const ACK_NUM: Range<usize> = 8..12;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WIN_SIZE: Range<usize> = 14..16;
    pub const CHECKSUM: Range<usize> = 16..18;
    pub const URGENT: Range<usize> = 18..20;
    pub const OPTIONS: usize = 20;
}

/// A view of a TCP header and what follows it in the buffer.
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

    /// `TruncatedTcp` if the buffer ends inside the header (options included),
    /// `BadTcpOffset` if the data offset is under 5 words.
    #[inline]
    pub fn check_len(&self) -> Result<(), ParseError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(ParseError::TruncatedTcp);
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN {
            return Err(ParseError::BadTcpOffset);
        }
        if len < header_len {
            return Err(ParseError::TruncatedTcp);
        }
        Ok(())
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

    #[inline]
    pub fn seq_number(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::SEQ_NUM])
    }

    #[inline]
    pub fn ack_number(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::ACK_NUM])
    }

    /// Header length in bytes (data offset * 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    /// The flags byte (CWR ECE URG ACK PSH RST SYN FIN, see `meta::tcp_flags`).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The raw (unscaled) window.
    #[inline]
    pub fn window_len(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::WIN_SIZE])
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    #[inline]
    pub fn urgent_at(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::URGENT])
    }

    /// The raw options.
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS..self.header_len()]
    }

    /// The captured bytes after the header (may be cut by the snap length).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

/// Parse the options the analyzer uses. Never panics; see the module doc.
///
/// The window scale is the raw shift count; RFC 7323 says to use 14 for larger
/// values, which is the analyzer's business.
#[inline]
pub fn parse_options(opts: &[u8]) -> TcpOpts {
    let mut o = TcpOpts::default();
    // Fast path: NOP NOP TS, what Linux puts on nearly every segment after the SYN.
    if opts.len() == 12 && opts[..4] == [option::NOP, option::NOP, option::TIMESTAMP, 10] {
        o.ts = Some((be32(&opts[4..]), be32(&opts[8..])));
        return o;
    }
    let mut i = 0;
    while i < opts.len() {
        let kind = opts[i];
        if kind == option::END {
            break;
        }
        if kind == option::NOP {
            i += 1;
            continue;
        }
        let Some(&len) = opts.get(i + 1) else { break };
        let len = usize::from(len);
        if len < 2 || len > opts.len() - i {
            break;
        }
        let body = &opts[i + 2..i + len];
        match kind {
            option::MSS if body.len() == 2 => o.mss = Some(be16(body)),
            option::WINDOW_SCALE if body.len() == 1 => o.wscale = Some(body[0]),
            option::SACK_PERMITTED if body.is_empty() => o.sack_ok = true,
            option::SACK if body.len() >= 8 => {
                let n = (body.len() / 8).min(MAX_SACK_BLOCKS);
                for (slot, block) in o.sack.iter_mut().zip(body.chunks_exact(8)).take(n) {
                    *slot = (be32(block), be32(&block[4..]));
                }
                o.sack_n = n as u8;
            }
            option::TIMESTAMP if body.len() == 8 => o.ts = Some((be32(body), be32(&body[4..]))),
            _ => {}
        }
        i += len;
    }
    o
}

/// Parse a TCP header into `meta`. `l4` is the captured part of the IP payload,
/// `l4_len` the IP payload length the IP header claims (`l4.len() <= l4_len`).
#[inline]
pub(crate) fn parse(l4: &[u8], l4_len: usize, meta: &mut PacketMeta) -> Result<(), ParseError> {
    if l4_len < HEADER_LEN {
        return Err(ParseError::BadTcpLength);
    }
    if l4.len() < HEADER_LEN {
        return Err(ParseError::TruncatedTcp);
    }
    let p = Packet::new_unchecked(l4);
    let header_len = p.header_len();
    if header_len < HEADER_LEN || header_len > l4_len {
        return Err(ParseError::BadTcpOffset);
    }
    if header_len > l4.len() {
        return Err(ParseError::TruncatedTcp);
    }
    meta.sport = p.src_port();
    meta.dport = p.dst_port();
    meta.payload_len = len32(l4_len - header_len);
    let t = &mut meta.tcp;
    t.seq = p.seq_number();
    t.ack = p.ack_number();
    t.flags = p.flags();
    t.window = p.window_len();
    // `meta` was reset by `wire::parse`: without options there is nothing to write.
    if header_len > HEADER_LEN {
        t.opts = parse_options(p.options());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::LinkType;
    use super::*;
    use crate::meta::{proto, tcp_flags};

    #[test]
    fn syn_with_linux_options() {
        let p = Packet::new_checked(&V4_TCP_SYN[20..]).unwrap();
        assert_eq!(
            (p.src_port(), p.dst_port(), p.header_len()),
            (43210, 443, 40)
        );
        assert_eq!((p.checksum(), p.urgent_at(), p.options().len()), (0, 0, 20));
        assert!(p.payload().is_empty());

        let m = parse_ok(LinkType::Ethernet, &eth_v4(&V4_TCP_SYN));
        assert_eq!(m.proto, proto::TCP);
        assert!(m.is_tcp());
        assert_eq!((m.sport, m.dport), (43210, 443));
        assert_eq!((m.tcp.seq, m.tcp.ack), (0x1234_5678, 0));
        assert_eq!(m.tcp.flags, tcp_flags::SYN);
        assert_eq!(m.tcp.window, 64240);
        assert_eq!(
            m.tcp.opts,
            TcpOpts {
                mss: Some(1460),
                wscale: Some(7),
                sack_ok: true,
                ts: Some((0x000a_0b0c, 0)),
                sack: [(0, 0); 4],
                sack_n: 0,
            }
        );
        assert_eq!((m.ip_len, m.payload_len), (60, 0));
    }

    #[test]
    fn data_segment_with_sack_blocks() {
        let m = parse_ok(LinkType::Ethernet, &eth_v4(&V4_TCP_SACK));
        assert_eq!((m.sport, m.dport), (443, 43210));
        assert_eq!(m.tcp.flags, tcp_flags::ACK);
        assert_eq!(
            (m.tcp.seq, m.tcp.ack, m.tcp.window),
            (0x8765_4321, 0x1234_5679, 501)
        );
        assert_eq!(m.tcp.opts.ts, Some((100, 0x000a_0b0c)));
        assert_eq!(m.tcp.opts.sack_n, 3);
        assert_eq!(
            m.tcp.opts.sack,
            [(0x1000, 0x2000), (0x3000, 0x4000), (0x5000, 0x6000), (0, 0)]
        );
        assert_eq!(
            (m.tcp.opts.mss, m.tcp.opts.wscale, m.tcp.opts.sack_ok),
            (None, None, false)
        );
        assert_eq!((m.ip_len, m.payload_len), (180, 100));
    }

    #[test]
    fn timestamp_fast_path_matches_the_general_path() {
        let nop_nop_ts = [1, 1, 8, 10, 0, 0, 1, 0, 0, 0, 2, 0];
        let ts_nop_nop = [8, 10, 0, 0, 1, 0, 0, 0, 2, 0, 1, 1];
        assert_eq!(parse_options(&nop_nop_ts), parse_options(&ts_nop_nop));
        assert_eq!(parse_options(&nop_nop_ts).ts, Some((256, 512)));
        // Not the fast path: a bad TS length is skipped as usual.
        assert_eq!(
            parse_options(&[1, 1, 8, 9, 0, 0, 1, 0, 0, 0, 2, 0]).ts,
            None
        );
    }

    #[test]
    fn four_sack_blocks() {
        let mut opts = vec![1, 1, 5, 34];
        for k in 1u32..=4 {
            opts.extend_from_slice(&(k * 100).to_be_bytes());
            opts.extend_from_slice(&(k * 100 + 50).to_be_bytes());
        }
        let o = parse_options(&opts);
        assert_eq!(o.sack_n, 4);
        assert_eq!(o.sack, [(100, 150), (200, 250), (300, 350), (400, 450)]);
        // A bogus fifth block (only possible past the 40-byte limit) is ignored.
        let mut five = vec![5, 42];
        five.extend_from_slice(&[7; 40]);
        assert_eq!(parse_options(&five).sack_n, 4);
        // A partial block is dropped, whole ones kept.
        let o = parse_options(&[5, 14, 0, 0, 0, 1, 0, 0, 0, 2, 9, 9, 9, 9]);
        assert_eq!((o.sack_n, o.sack[0]), (1, (1, 2)));
    }

    #[test]
    fn malformed_options_stop_parsing() {
        // Length 0 would loop forever in a naive parser.
        let o = parse_options(&[2, 4, 5, 0xb4, 8, 0, 3, 3, 7]);
        assert_eq!((o.mss, o.wscale), (Some(1460), None));
        // Length 1.
        let o = parse_options(&[3, 1, 2, 4, 5, 0xb4]);
        assert_eq!(o, TcpOpts::default());
        // Length past the end.
        let o = parse_options(&[4, 2, 8, 10, 0, 0, 0, 1]);
        assert_eq!((o.sack_ok, o.ts), (true, None));
        // Kind with no length byte.
        assert_eq!(parse_options(&[1, 1, 2]), TcpOpts::default());
        // End of list stops, whatever follows.
        assert_eq!(parse_options(&[0, 2, 4, 5, 0xb4]).mss, None);
        // Known kinds with wrong lengths are skipped, later ones still parsed.
        let o = parse_options(&[2, 3, 5, 4, 3, 9, 3, 3, 9]);
        assert_eq!((o.mss, o.sack_ok, o.wscale), (None, false, Some(9)));
        // Unknown kinds (e.g. TFO cookie 34, MPTCP 30) are skipped.
        let o = parse_options(&[34, 6, 1, 2, 3, 4, 30, 4, 0, 0, 4, 2]);
        assert!(o.sack_ok);
        assert_eq!(parse_options(&[]), TcpOpts::default());
    }

    #[test]
    fn options_fuzz_every_byte_pattern_of_three() {
        // Every 3-byte option area: no panic, and the SACK count stays valid.
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                for c in [0u8, 1, 2, 3, 4, 5, 8, 10, 255] {
                    assert!(parse_options(&[a, b, c]).sack_n <= 4);
                }
            }
        }
    }

    #[test]
    fn errors() {
        let syn = eth_v4(&V4_TCP_SYN);
        // Cut inside the fixed header, then inside the options.
        assert_eq!(
            parse_err(LinkType::Ethernet, &syn[..14 + 20 + 19]),
            ParseError::TruncatedTcp
        );
        assert_eq!(
            parse_err(LinkType::Ethernet, &syn[..syn.len() - 1]),
            ParseError::TruncatedTcp
        );
        // Data offset 4.
        let mut bad = V4_TCP_SYN;
        bad[32] = 0x40;
        assert_eq!(parse_err(LinkType::Ipv4, &bad), ParseError::BadTcpOffset);
        // Data offset 15 (60 bytes) in a 40-byte IP payload.
        let mut bad = V4_TCP_SYN;
        bad[32] = 0xf0;
        assert_eq!(parse_err(LinkType::Ipv4, &bad), ParseError::BadTcpOffset);
        // IP payload of 10 bytes.
        let mut bad = V4_TCP_SYN;
        bad[2..4].copy_from_slice(&30u16.to_be_bytes());
        assert_eq!(parse_err(LinkType::Ipv4, &bad), ParseError::BadTcpLength);
        // Check order at the view level too.
        assert_eq!(
            Packet::new_checked(&V4_TCP_SYN[20..39]).unwrap_err(),
            ParseError::TruncatedTcp
        );
        assert_eq!(
            Packet::new_checked(&bad[20..]).map(|p| p.header_len()),
            Ok(40)
        );
    }

    #[test]
    fn header_only_no_options() {
        let m = parse_ok(LinkType::Ethernet, &eth_v4(&V4_TCP_ACK_PADDED));
        assert_eq!(m.tcp.opts, TcpOpts::default());
        assert_eq!((m.tcp.flags, m.tcp.window), (tcp_flags::ACK, 502));
    }
}
