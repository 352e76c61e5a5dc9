//! TWAMP-Test packets in unauthenticated mode (RFC 5357), as TWAMP-light
//! senders and reflectors exchange them over UDP (default port 862).
//!
//! Session-Sender test packet (RFC 5357 section 4.1.2, RFC 4656 4.1.2):
//!
//! ```text
//!  0       4               12      14
//! +-------+---------------+-------+----------------+
//! | seq   | timestamp     | error | packet padding |
//! | (u32) | (NTP 64 bit)  | est.  | (any length)   |
//! +-------+---------------+-------+----------------+
//! ```
//!
//! Session-Reflector test packet (RFC 5357 section 4.2.1), 41 octets plus padding:
//!
//! ```text
//!  0   seq (u32)                 4   timestamp T3 (NTP)
//! 12   error estimate           14   MBZ (2)
//! 16   receive timestamp T2     24   sender seq (u32)
//! 28   sender timestamp T1      36   sender error estimate
//! 38   MBZ (2)                  40   sender TTL (u8)
//! 41   packet padding
//! ```
//!
//! Views follow the smoltcp pattern: [`SenderPacket`] and [`ReflectorPacket`]
//! wrap any `AsRef<[u8]>`; `new_checked` verifies the length once, after which
//! no accessor panics. Fields are read with `from_be_bytes`, never by casting.
#![forbid(unsafe_code)]

use std::fmt;

/// IANA port of the TWAMP-Test receiver (`twamp-control` is 862; TWAMP-light
/// reflectors listen on it by convention).
pub const DEFAULT_PORT: u16 = 862;
/// Header length of a sender test packet (without padding).
pub const SENDER_HEADER_LEN: usize = 14;
/// Header length of a reflector test packet (without padding).
pub const REFLECTOR_HEADER_LEN: usize = 41;
/// Smallest sender packet we emit: 14 octets plus the 27 octets of padding
/// RFC 5357 4.1.2 recommends, so a reflector can answer with a packet of the
/// same size (the reflector header is 27 octets longer).
pub const MIN_PROBE_LEN: usize = REFLECTOR_HEADER_LEN;

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
const NS: u64 = 1_000_000_000;

mod field {
    use std::ops::Range;
    pub const SEQ: Range<usize> = 0..4;
    pub const TIMESTAMP: Range<usize> = 4..12;
    pub const ERROR: Range<usize> = 12..14;
    // Reflector only.
    pub const MBZ1: Range<usize> = 14..16;
    pub const RECEIVE: Range<usize> = 16..24;
    pub const SENDER_SEQ: Range<usize> = 24..28;
    pub const SENDER_TIMESTAMP: Range<usize> = 28..36;
    pub const SENDER_ERROR: Range<usize> = 36..38;
    pub const MBZ2: Range<usize> = 38..40;
    pub const SENDER_TTL: usize = 40;
}

/// A 64-bit NTP timestamp: 32 bits of seconds since 1900, 32 bits of fraction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NtpTimestamp(pub u64);

impl NtpTimestamp {
    /// From nanoseconds since the Unix epoch (rounded to the nearest 2^-32 s).
    pub fn from_unix_ns(ns: u64) -> NtpTimestamp {
        let secs = ns / NS + NTP_UNIX_OFFSET;
        let frac = (((ns % NS) << 32) + NS / 2) / NS;
        // frac can round up to 2^32: carry into the seconds.
        NtpTimestamp((secs << 32).wrapping_add(frac))
    }

    /// To nanoseconds since the Unix epoch; `None` before 1970. The NTP era
    /// wraps in 2036; timestamps are taken to lie in era 0 (as RFC 5357 does).
    pub fn to_unix_ns(self) -> Option<u64> {
        let secs = (self.0 >> 32).checked_sub(NTP_UNIX_OFFSET)?;
        let frac = self.0 & 0xffff_ffff;
        Some(secs * NS + ((frac * NS + (1 << 31)) >> 32))
    }

    /// `self - earlier` in nanoseconds (wrapping in the 64-bit NTP space, so
    /// it works across an era change); `None` if `earlier` is later.
    pub fn ns_since(self, earlier: NtpTimestamp) -> Option<u64> {
        let d = self.0.wrapping_sub(earlier.0);
        if d >> 63 != 0 {
            return None;
        }
        Some(((u128::from(d) * u128::from(NS) + (1 << 31)) >> 32) as u64)
    }
}

/// The Error Estimate field (RFC 4656 4.1.2): S (clock synchronized to UTC),
/// Z (0: NTP timestamp format), 6-bit Scale and 8-bit Multiplier; the error
/// is `Multiplier * 2^(Scale - 32)` seconds. The multiplier must not be 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorEstimate(pub u16);

impl ErrorEstimate {
    /// What we send: not claimed synchronized to UTC (S = 0; only the two
    /// round-trip differences T4 - T1 and T3 - T2 are used, each on one
    /// clock), NTP format, 1 * 2^-20 s (about 1 us).
    pub const LOCAL: ErrorEstimate = ErrorEstimate(12 << 8 | 1);

    pub fn synchronized(self) -> bool {
        self.0 & 0x8000 != 0
    }
    pub fn scale(self) -> u8 {
        ((self.0 >> 8) & 0x3f) as u8
    }
    pub fn multiplier(self) -> u8 {
        self.0 as u8
    }
    /// The error in nanoseconds; `None` for an invalid zero multiplier.
    pub fn as_ns(self) -> Option<u64> {
        if self.multiplier() == 0 {
            return None;
        }
        let v = (u128::from(self.multiplier()) * u128::from(NS)) << self.scale();
        Some((v >> 32).min(u128::from(u64::MAX)) as u64)
    }
}

/// Why a buffer is not a test packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Shorter than the fixed header.
    Truncated { len: usize, need: usize },
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::Truncated { len, need } => {
                write!(f, "TWAMP test packet of {len} bytes, need at least {need}")
            }
        }
    }
}

impl std::error::Error for Malformed {}

fn be32(b: &[u8], r: std::ops::Range<usize>) -> u32 {
    u32::from_be_bytes(b[r].try_into().unwrap_or([0; 4]))
}
fn be64(b: &[u8], r: std::ops::Range<usize>) -> u64 {
    u64::from_be_bytes(b[r].try_into().unwrap_or([0; 8]))
}
fn be16(b: &[u8], r: std::ops::Range<usize>) -> u16 {
    u16::from_be_bytes(b[r].try_into().unwrap_or([0; 2]))
}

/// A Session-Sender test packet view.
#[derive(Debug, Clone, Copy)]
pub struct SenderPacket<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> SenderPacket<T> {
    /// Wraps `buf` without checking its length; accessors may panic.
    pub fn new_unchecked(buf: T) -> Self {
        SenderPacket { buf }
    }
    /// Wraps `buf` after checking it holds the 14-octet header.
    pub fn new_checked(buf: T) -> Result<Self, Malformed> {
        let len = buf.as_ref().len();
        if len < SENDER_HEADER_LEN {
            return Err(Malformed::Truncated {
                len,
                need: SENDER_HEADER_LEN,
            });
        }
        Ok(SenderPacket { buf })
    }
    pub fn seq(&self) -> u32 {
        be32(self.buf.as_ref(), field::SEQ)
    }
    pub fn timestamp(&self) -> NtpTimestamp {
        NtpTimestamp(be64(self.buf.as_ref(), field::TIMESTAMP))
    }
    pub fn error_estimate(&self) -> ErrorEstimate {
        ErrorEstimate(be16(self.buf.as_ref(), field::ERROR))
    }
    /// Whole length including padding.
    pub fn len(&self) -> usize {
        self.buf.as_ref().len()
    }
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// The validated fields of a sender packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderRepr {
    pub seq: u32,
    pub timestamp: NtpTimestamp,
    pub error_estimate: ErrorEstimate,
}

impl SenderRepr {
    pub fn parse<T: AsRef<[u8]>>(p: &SenderPacket<T>) -> SenderRepr {
        SenderRepr {
            seq: p.seq(),
            timestamp: p.timestamp(),
            error_estimate: p.error_estimate(),
        }
    }

    /// Writes the packet into `out`, zero padding up to `len` octets (at
    /// least the 14-octet header). `out` is cleared first.
    pub fn emit(&self, len: usize, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.timestamp.0.to_be_bytes());
        out.extend_from_slice(&self.error_estimate.0.to_be_bytes());
        out.resize(len.max(SENDER_HEADER_LEN), 0);
    }
}

/// A Session-Reflector test packet view.
#[derive(Debug, Clone, Copy)]
pub struct ReflectorPacket<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> ReflectorPacket<T> {
    pub fn new_unchecked(buf: T) -> Self {
        ReflectorPacket { buf }
    }
    /// Wraps `buf` after checking it holds the 41-octet header.
    pub fn new_checked(buf: T) -> Result<Self, Malformed> {
        let len = buf.as_ref().len();
        if len < REFLECTOR_HEADER_LEN {
            return Err(Malformed::Truncated {
                len,
                need: REFLECTOR_HEADER_LEN,
            });
        }
        Ok(ReflectorPacket { buf })
    }
    pub fn seq(&self) -> u32 {
        be32(self.buf.as_ref(), field::SEQ)
    }
    pub fn timestamp(&self) -> NtpTimestamp {
        NtpTimestamp(be64(self.buf.as_ref(), field::TIMESTAMP))
    }
    pub fn error_estimate(&self) -> ErrorEstimate {
        ErrorEstimate(be16(self.buf.as_ref(), field::ERROR))
    }
    pub fn mbz_ok(&self) -> bool {
        let b = self.buf.as_ref();
        be16(b, field::MBZ1) == 0 && be16(b, field::MBZ2) == 0
    }
    pub fn receive_timestamp(&self) -> NtpTimestamp {
        NtpTimestamp(be64(self.buf.as_ref(), field::RECEIVE))
    }
    pub fn sender_seq(&self) -> u32 {
        be32(self.buf.as_ref(), field::SENDER_SEQ)
    }
    pub fn sender_timestamp(&self) -> NtpTimestamp {
        NtpTimestamp(be64(self.buf.as_ref(), field::SENDER_TIMESTAMP))
    }
    pub fn sender_error_estimate(&self) -> ErrorEstimate {
        ErrorEstimate(be16(self.buf.as_ref(), field::SENDER_ERROR))
    }
    pub fn sender_ttl(&self) -> u8 {
        self.buf.as_ref()[field::SENDER_TTL]
    }
    pub fn len(&self) -> usize {
        self.buf.as_ref().len()
    }
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// The validated fields of a reflector packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReflectorRepr {
    /// The reflector's own counter of the replies it sent in this session.
    pub seq: u32,
    /// T3: when the reflector sent the reply.
    pub timestamp: NtpTimestamp,
    pub error_estimate: ErrorEstimate,
    /// T2: when the reflector received the test packet.
    pub receive_timestamp: NtpTimestamp,
    pub sender_seq: u32,
    /// T1, copied from the test packet.
    pub sender_timestamp: NtpTimestamp,
    pub sender_error_estimate: ErrorEstimate,
    /// TTL / hop limit of the test packet as it reached the reflector.
    pub sender_ttl: u8,
}

impl ReflectorRepr {
    pub fn parse<T: AsRef<[u8]>>(p: &ReflectorPacket<T>) -> ReflectorRepr {
        ReflectorRepr {
            seq: p.seq(),
            timestamp: p.timestamp(),
            error_estimate: p.error_estimate(),
            receive_timestamp: p.receive_timestamp(),
            sender_seq: p.sender_seq(),
            sender_timestamp: p.sender_timestamp(),
            sender_error_estimate: p.sender_error_estimate(),
            sender_ttl: p.sender_ttl(),
        }
    }

    /// Time the packet spent in the reflector, T3 - T2; `None` if T3 < T2.
    pub fn dwell_ns(&self) -> Option<u64> {
        self.timestamp.ns_since(self.receive_timestamp)
    }

    /// Writes the packet into `out` with zero padding up to `len` octets (at
    /// least the 41-octet header). MBZ fields are zero. `out` is cleared first.
    pub fn emit(&self, len: usize, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.timestamp.0.to_be_bytes());
        out.extend_from_slice(&self.error_estimate.0.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.receive_timestamp.0.to_be_bytes());
        out.extend_from_slice(&self.sender_seq.to_be_bytes());
        out.extend_from_slice(&self.sender_timestamp.0.to_be_bytes());
        out.extend_from_slice(&self.sender_error_estimate.0.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.push(self.sender_ttl);
        out.resize(len.max(REFLECTOR_HEADER_LEN), 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sender packet: seq 7, T1 = 0x83aa7e80_80000000 (1970-01-01 00:00:00.5),
    /// error estimate S=1 scale 12 mult 1, then 27 octets of padding.
    const SENDER: [u8; 41] = {
        let mut b = [0u8; 41];
        b[3] = 7;
        b[4] = 0x83;
        b[5] = 0xaa;
        b[6] = 0x7e;
        b[7] = 0x80;
        b[8] = 0x80;
        b[12] = 0x8c;
        b[13] = 0x01;
        b
    };

    #[test]
    fn sender_fixture_parses() {
        let p = SenderPacket::new_checked(&SENDER[..]).unwrap();
        let r = SenderRepr::parse(&p);
        assert_eq!(r.seq, 7);
        assert_eq!(r.timestamp.to_unix_ns(), Some(500_000_000));
        assert!(r.error_estimate.synchronized());
        assert_eq!(r.error_estimate.scale(), 12);
        assert_eq!(r.error_estimate.multiplier(), 1);
        assert_eq!(r.error_estimate.as_ns(), Some(953)); // 2^-20 s, rounded down
        let mut out = Vec::new();
        r.emit(41, &mut out);
        assert_eq!(out, SENDER);
    }

    #[test]
    fn short_packets_are_rejected() {
        assert_eq!(
            SenderPacket::new_checked(&SENDER[..13]).unwrap_err(),
            Malformed::Truncated { len: 13, need: 14 }
        );
        assert!(ReflectorPacket::new_checked(&SENDER[..40]).is_err());
        assert!(ReflectorPacket::new_checked(&SENDER[..]).is_ok());
    }

    #[test]
    fn reflector_round_trip_and_offsets() {
        let r = ReflectorRepr {
            seq: 0x0102_0304,
            timestamp: NtpTimestamp(0x1111_1111_2222_2222),
            error_estimate: ErrorEstimate(0x0c01),
            receive_timestamp: NtpTimestamp(0x1111_1111_2222_0000),
            sender_seq: 0x0a0b_0c0d,
            sender_timestamp: NtpTimestamp(0x3333_3333_4444_4444),
            sender_error_estimate: ErrorEstimate(0x8c01),
            sender_ttl: 63,
        };
        let mut out = Vec::new();
        r.emit(100, &mut out);
        assert_eq!(out.len(), 100);
        assert_eq!(&out[0..4], &[1, 2, 3, 4]);
        assert_eq!(&out[14..16], &[0, 0]);
        assert_eq!(&out[24..28], &[0x0a, 0x0b, 0x0c, 0x0d]);
        assert_eq!(&out[36..38], &[0x8c, 0x01]);
        assert_eq!(&out[38..40], &[0, 0]);
        assert_eq!(out[40], 63);
        assert!(out[41..].iter().all(|&b| b == 0));
        let p = ReflectorPacket::new_checked(&out[..]).unwrap();
        assert!(p.mbz_ok());
        assert_eq!(ReflectorRepr::parse(&p), r);
        // 0x2222 of 2^32 s = 8738 / 2^32 s = 2034 ns.
        assert_eq!(r.dwell_ns(), Some(2034));
        // Minimum length is the header.
        r.emit(0, &mut out);
        assert_eq!(out.len(), REFLECTOR_HEADER_LEN);
    }

    #[test]
    fn ntp_conversion_round_trips() {
        for ns in [
            0u64,
            1,
            999_999_999,
            1_000_000_000,
            1_795_611_473_068_740_400,
            2_085_978_495_999_999_999, // last ns of NTP era 0 (2036-02-07)
        ] {
            let t = NtpTimestamp::from_unix_ns(ns);
            let back = t.to_unix_ns().unwrap();
            assert!(back.abs_diff(ns) <= 1, "{ns} -> {t:?} -> {back}");
        }
        let a = NtpTimestamp::from_unix_ns(1_000_000_000);
        let b = NtpTimestamp::from_unix_ns(1_000_250_000);
        assert_eq!(b.ns_since(a), Some(250_000));
        assert_eq!(a.ns_since(b), None);
        assert_eq!(NtpTimestamp(0).to_unix_ns(), None);
    }
}
