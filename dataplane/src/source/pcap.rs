//! A streaming reader of pcap and pcapng capture files.
//!
//! [`CaptureReader`] reads any [`Read`] through a `BufReader` and one reusable
//! packet buffer, so memory stays constant in the file size (the buffer grows to
//! the largest captured frame, at most [`MAX_CAPLEN`] bytes, or the largest
//! Interface Description Block, at most [`MAX_BLOCK_LEN`]). Nothing is seeked:
//! blocks the reader does not need are read past in the buffer of the
//! `BufReader`, so callers need not wrap the reader in a `BufReader` themselves.
//!
//! Formats:
//! - pcap: both byte orders, microsecond (`a1b2c3d4`) and nanosecond (`a1b23c4d`)
//!   magic, and the Kuznetzov "modified pcap" (`a1b2cd34`, 24-byte record
//!   headers). The file's snap length is not enforced: writers get it wrong, and
//!   libpcap does not enforce it either; [`MAX_CAPLEN`] is.
//! - pcapng: Section Header Blocks in either byte order (several sections per
//!   file, each with its own interfaces), Interface Description Blocks with
//!   `if_tsresol` (powers of 10 and of 2, default 10^-6) and `if_tsoffset`,
//!   Enhanced Packet Blocks, Simple Packet Blocks and the obsolete Packet
//!   Blocks. Every other block type is skipped.
//!
//! Timestamps are exact integer nanoseconds since the Unix epoch: no floating
//! point. Resolutions finer than 1 ns are truncated toward zero. Simple Packet
//! Blocks carry no timestamp; their frames get `ts_ns == 0`.
//!
//! Errors carry the byte offset of the record or block that failed and read as
//! `pcap record at byte 123456: captured length 4294967 exceeds the 262144-byte
//! limit`, so a CLI can print `FILE: <error>`. No input makes the reader panic.
#![forbid(unsafe_code)]

use std::fmt;
use std::io::{self, BufReader, Read};

use super::{Frame, FrameSource};

/// Largest captured length accepted for one frame (libpcap's `MAXIMUM_SNAPLEN`).
/// A larger value means a corrupt file, not a big packet.
pub const MAX_CAPLEN: u32 = 262_144;

/// Largest pcapng block of the types the reader interprets (section header,
/// interface description, packet blocks): room for a [`MAX_CAPLEN`] packet and
/// plenty of options. A larger length field means a corrupt block. Blocks of
/// other types are skipped whatever their length.
pub const MAX_BLOCK_LEN: u32 = 1 << 21;

/// Most interfaces one pcapng section may declare.
pub const MAX_INTERFACES: usize = 65_536;

/// Frames per [`FrameSource::recv_batch`] call.
const BATCH: usize = 64;
/// Bytes read from the input at once: few system calls per file.
const READ_BUFFER: usize = 1 << 20;

const NS_PER_S: u64 = 1_000_000_000;

// pcap magic numbers as read little-endian from the first four bytes.
const PCAP_US_LE: u32 = 0xa1b2_c3d4;
const PCAP_US_BE: u32 = 0xd4c3_b2a1;
const PCAP_NS_LE: u32 = 0xa1b2_3c4d;
const PCAP_NS_BE: u32 = 0x4d3c_b2a1;
const PCAP_MOD_LE: u32 = 0xa1b2_cd34;
const PCAP_MOD_BE: u32 = 0x34cd_b2a1;

// pcapng block types.
const SHB: u32 = 0x0a0d_0d0a;
const IDB: u32 = 0x0000_0001;
const PB: u32 = 0x0000_0002;
const SPB: u32 = 0x0000_0003;
const EPB: u32 = 0x0000_0006;
const BYTE_ORDER_MAGIC: u32 = 0x1a2b_3c4d;

// pcapng option codes.
const OPT_ENDOFOPT: u16 = 0;
const IF_TSRESOL: u16 = 9;
const IF_TSOFFSET: u16 = 14;

const PCAP_FILE_HEADER: &str = "pcap file header";
const PCAP_RECORD: &str = "pcap record";
const NG_BLOCK: &str = "pcapng block";
const NG_SHB: &str = "pcapng Section Header Block";
const NG_IDB: &str = "pcapng Interface Description Block";
const NG_EPB: &str = "pcapng Enhanced Packet Block";
const NG_SPB: &str = "pcapng Simple Packet Block";
const NG_PB: &str = "pcapng Packet Block";

/// The container format of a capture file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureFormat {
    /// Classic libpcap format (`.pcap`).
    Pcap,
    /// pcapng (`.pcapng`).
    PcapNg,
}

impl fmt::Display for CaptureFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CaptureFormat::Pcap => "pcap",
            CaptureFormat::PcapNg => "pcapng",
        })
    }
}

/// Why a capture file could not be read. Every variant carries `offset`: the
/// byte offset in the file of the header, record or block that failed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The underlying reader failed.
    #[error("read error in the record at byte {offset}: {source}")]
    Io {
        offset: u64,
        #[source]
        source: io::Error,
    },
    /// The file does not start with a pcap or pcapng magic number.
    #[error("not a pcap or pcapng file: {}", describe_magic(.magic))]
    NotACapture {
        offset: u64,
        /// The first bytes of the file (up to 4; empty for an empty file).
        magic: Vec<u8>,
    },
    /// The file ends inside a header, record or block.
    #[error(
        "{block} at byte {offset} is truncated: the file ends {available} bytes into it, \
         but it needs {expected}"
    )]
    Truncated {
        offset: u64,
        /// What was being read, e.g. "pcap record".
        block: &'static str,
        /// Bytes the record needs from `offset` (at least this many when its
        /// length field was not read yet).
        expected: u64,
        /// Bytes the file had from `offset` on.
        available: u64,
    },
    /// A header, record or block is malformed.
    #[error("{block} at byte {offset}: {what}")]
    Corrupt {
        offset: u64,
        /// What was being read, e.g. "pcapng Enhanced Packet Block".
        block: &'static str,
        /// What is wrong with it.
        what: String,
    },
}

impl CaptureError {
    /// Byte offset in the file of the header, record or block that failed.
    pub fn offset(&self) -> u64 {
        match self {
            CaptureError::Io { offset, .. }
            | CaptureError::NotACapture { offset, .. }
            | CaptureError::Truncated { offset, .. }
            | CaptureError::Corrupt { offset, .. } => *offset,
        }
    }
}

impl From<CaptureError> for io::Error {
    /// Keeps the whole error (message and offset) inside the `io::Error`.
    fn from(e: CaptureError) -> io::Error {
        let kind = match &e {
            CaptureError::Io { source, .. } => source.kind(),
            CaptureError::Truncated { .. } => io::ErrorKind::UnexpectedEof,
            CaptureError::NotACapture { .. } | CaptureError::Corrupt { .. } => {
                io::ErrorKind::InvalidData
            }
        };
        io::Error::new(kind, e)
    }
}

fn describe_magic(magic: &[u8]) -> String {
    let hex = || {
        magic
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    match magic {
        [] => "the file is empty".to_string(),
        [0x1f, 0x8b, ..] => format!("it starts with {} (gzip: decompress it first)", hex()),
        [0x28, 0xb5, 0x2f, 0xfd] => format!("it starts with {} (zstd: decompress it first)", hex()),
        [0xfd, 0x37, 0x7a, 0x58] => format!("it starts with {} (xz: decompress it first)", hex()),
        [0x42, 0x5a, 0x68, ..] => format!("it starts with {} (bzip2: decompress it first)", hex()),
        m if m.len() < 4 => format!("the file has only {} bytes ({})", m.len(), hex()),
        _ => format!(
            "it starts with {}, expected a pcap magic (a1b2c3d4 or a1b23c4d, either byte \
             order) or a pcapng Section Header Block (0a 0d 0d 0a)",
            hex()
        ),
    }
}

fn corrupt(offset: u64, block: &'static str, what: impl Into<String>) -> CaptureError {
    CaptureError::Corrupt {
        offset,
        block,
        what: what.into(),
    }
}

/// Byte-order-aware field reads; `b` is always long enough (callers slice
/// fixed-size arrays), and a short slice reads as zero rather than panicking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Endian {
    big: bool,
}

impl Endian {
    fn u16(self, b: &[u8]) -> u16 {
        let a: [u8; 2] = b.get(..2).and_then(|s| s.try_into().ok()).unwrap_or([0; 2]);
        if self.big {
            u16::from_be_bytes(a)
        } else {
            u16::from_le_bytes(a)
        }
    }

    fn u32(self, b: &[u8]) -> u32 {
        let a: [u8; 4] = b.get(..4).and_then(|s| s.try_into().ok()).unwrap_or([0; 4]);
        if self.big {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    }

    fn u64(self, b: &[u8]) -> u64 {
        let a: [u8; 8] = b.get(..8).and_then(|s| s.try_into().ok()).unwrap_or([0; 8]);
        if self.big {
            u64::from_be_bytes(a)
        } else {
            u64::from_le_bytes(a)
        }
    }
}

/// The reader plus the count of bytes consumed from it.
#[derive(Debug)]
struct Input<R: Read> {
    inner: BufReader<R>,
    offset: u64,
}

/// Where a read happens, for its error.
#[derive(Debug, Clone, Copy)]
struct At {
    /// Offset of the record or block being read.
    offset: u64,
    block: &'static str,
    /// Bytes the record needs from `offset`.
    expected: u64,
    /// Bytes of the record already read before this read.
    before: u64,
}

impl<R: Read> Input<R> {
    /// Reads until `dst` is full or the input ends; returns the bytes read.
    fn read_up_to(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < dst.len() {
            match self.inner.read(&mut dst[n..]) {
                Ok(0) => break,
                Ok(k) => {
                    n += k;
                    self.offset += k as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// Fills `dst` or fails with `Truncated` / `Io` for the record at `at`.
    fn fill(&mut self, dst: &mut [u8], at: At) -> Result<(), CaptureError> {
        let n = self.read_up_to(dst).map_err(|source| CaptureError::Io {
            offset: at.offset,
            source,
        })?;
        if n < dst.len() {
            return Err(CaptureError::Truncated {
                offset: at.offset,
                block: at.block,
                expected: at.expected,
                available: at.before + n as u64,
            });
        }
        Ok(())
    }

    /// Reads past `n` bytes or fails with `Truncated` / `Io` for the record at `at`.
    fn skip(&mut self, n: u64, at: At) -> Result<(), CaptureError> {
        let got = io::copy(&mut (&mut self.inner).take(n), &mut io::sink()).map_err(|source| {
            CaptureError::Io {
                offset: at.offset,
                source,
            }
        })?;
        self.offset += got;
        if got < n {
            return Err(CaptureError::Truncated {
                offset: at.offset,
                block: at.block,
                expected: at.expected,
                available: at.before + got,
            });
        }
        Ok(())
    }
}

/// State of a pcap file.
#[derive(Debug, Clone, Copy)]
struct PcapState {
    endian: Endian,
    /// Multiplier from the record's fraction field to ns (1000 or 1).
    frac_ns: u64,
    linktype: u32,
    /// 16, or 24 for the modified format.
    record_header_len: usize,
}

/// How an interface's timestamp units convert to ns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TsResol {
    /// 10^-n with n <= 9: ns = units * factor.
    MulPow10(u64),
    /// 10^-n with n > 9: ns = units / divisor (0 when the divisor exceeds u128).
    DivPow10(Option<u128>),
    /// 2^-n: ns = units * 10^9 / 2^n.
    Pow2(u8),
}

impl TsResol {
    fn from_option(v: u8) -> TsResol {
        let n = u32::from(v & 0x7f);
        if v & 0x80 != 0 {
            TsResol::Pow2(v & 0x7f)
        } else if n <= 9 {
            TsResol::MulPow10(10u64.pow(9 - n))
        } else {
            TsResol::DivPow10(10u128.checked_pow(n - 9))
        }
    }

    /// Units since the epoch (plus `offset_s` seconds) to ns; `None` when the
    /// result lies outside `0..=u64::MAX` ns (before 1970 or after 2554).
    fn to_ns(self, units: u64, offset_s: i64) -> Option<u64> {
        let units = u128::from(units);
        let ns: u128 = match self {
            TsResol::MulPow10(f) => units * u128::from(f),
            TsResol::DivPow10(Some(d)) => units / d,
            TsResol::DivPow10(None) => 0,
            // units < 2^64 and 10^9 < 2^30: the product fits in 94 bits; n <= 127.
            TsResol::Pow2(n) => (units * u128::from(NS_PER_S)) >> n,
        };
        let total = i128::try_from(ns).ok()? + i128::from(offset_s) * i128::from(NS_PER_S);
        u64::try_from(total).ok()
    }
}

#[derive(Debug, Clone, Copy)]
struct Interface {
    linktype: u32,
    snaplen: u32,
    resol: TsResol,
    offset_s: i64,
}

/// State of a pcapng file: the current section.
#[derive(Debug)]
struct NgState {
    endian: Endian,
    interfaces: Vec<Interface>,
}

#[derive(Debug)]
enum State {
    Pcap(PcapState),
    PcapNg(NgState),
}

/// Where the next frame's bytes are in `buf`, and its metadata.
#[derive(Debug, Clone, Copy)]
struct Meta {
    ts_ns: u64,
    linktype: u32,
    caplen: u32,
    orig_len: u32,
}

/// A streaming pcap/pcapng reader. See the [module documentation](self).
///
/// After [`next_frame`](CaptureReader::next_frame) returned an error or
/// `Ok(None)`, every further call returns `Ok(None)`.
#[derive(Debug)]
pub struct CaptureReader<R: Read> {
    input: Input<R>,
    state: State,
    /// Reusable buffer: packet data (padded) or an Interface Description Block.
    buf: Vec<u8>,
    done: bool,
}

impl<R: Read> CaptureReader<R> {
    /// Detects pcap (both byte orders, micro- and nanosecond magic) or pcapng by
    /// the magic number, and reads the file header (pcap) or the first Section
    /// Header Block (pcapng).
    pub fn new(reader: R) -> Result<Self, CaptureError> {
        let mut input = Input {
            inner: BufReader::with_capacity(READ_BUFFER, reader),
            offset: 0,
        };
        let mut magic = [0u8; 4];
        let n = input
            .read_up_to(&mut magic)
            .map_err(|source| CaptureError::Io { offset: 0, source })?;
        if n < 4 {
            return Err(CaptureError::NotACapture {
                offset: 0,
                magic: magic[..n].to_vec(),
            });
        }
        let state = match u32::from_le_bytes(magic) {
            SHB => {
                let mut ng = NgState {
                    endian: Endian { big: false },
                    interfaces: Vec::new(),
                };
                read_shb(&mut input, &mut ng, 0)?;
                State::PcapNg(ng)
            }
            m @ (PCAP_US_LE | PCAP_US_BE | PCAP_NS_LE | PCAP_NS_BE | PCAP_MOD_LE | PCAP_MOD_BE) => {
                let endian = Endian {
                    big: matches!(m, PCAP_US_BE | PCAP_NS_BE | PCAP_MOD_BE),
                };
                let mut h = [0u8; 20];
                input.fill(
                    &mut h,
                    At {
                        offset: 0,
                        block: PCAP_FILE_HEADER,
                        expected: 24,
                        before: 4,
                    },
                )?;
                let (major, minor) = (endian.u16(&h[0..]), endian.u16(&h[2..]));
                if major != 2 {
                    return Err(corrupt(
                        0,
                        PCAP_FILE_HEADER,
                        format!("unsupported pcap version {major}.{minor} (only 2.x is read)"),
                    ));
                }
                // Bits 26..31 of the link type field carry FCS information.
                let linktype = endian.u32(&h[16..]) & 0x03ff_ffff;
                State::Pcap(PcapState {
                    endian,
                    frac_ns: if matches!(m, PCAP_NS_LE | PCAP_NS_BE) {
                        1
                    } else {
                        1000
                    },
                    linktype,
                    record_header_len: if matches!(m, PCAP_MOD_LE | PCAP_MOD_BE) {
                        24
                    } else {
                        16
                    },
                })
            }
            _ => {
                return Err(CaptureError::NotACapture {
                    offset: 0,
                    magic: magic.to_vec(),
                })
            }
        };
        Ok(CaptureReader {
            input,
            state,
            buf: Vec::new(),
            done: false,
        })
    }

    /// The container format, as detected by [`new`](CaptureReader::new).
    pub fn format(&self) -> CaptureFormat {
        match self.state {
            State::Pcap(_) => CaptureFormat::Pcap,
            State::PcapNg(_) => CaptureFormat::PcapNg,
        }
    }

    /// Bytes of the file consumed so far (for progress and error offsets).
    pub fn offset(&self) -> u64 {
        self.input.offset
    }

    /// The next packet; `Ok(None)` at a clean end of file (the file ends at a
    /// record or block boundary). The frame borrows the reader's buffer.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        if self.done {
            return Ok(None);
        }
        let res = match &mut self.state {
            State::Pcap(p) => next_pcap(&mut self.input, p, &mut self.buf),
            State::PcapNg(ng) => next_pcapng(&mut self.input, ng, &mut self.buf),
        };
        match res {
            Ok(Some(m)) => Ok(Some(Frame {
                ts_ns: m.ts_ns,
                linktype: m.linktype,
                data: &self.buf[..m.caplen as usize],
                orig_len: m.orig_len,
                caplen: m.caplen,
            })),
            Ok(None) => {
                self.done = true;
                Ok(None)
            }
            Err(e) => {
                self.done = true;
                Err(e)
            }
        }
    }
}

impl<R: Read> FrameSource for CaptureReader<R> {
    fn recv_batch(&mut self, f: &mut dyn FnMut(Frame<'_>)) -> io::Result<usize> {
        let mut n = 0;
        while n < BATCH {
            match self.next_frame()? {
                Some(frame) => {
                    f(frame);
                    n += 1;
                }
                None => break,
            }
        }
        Ok(n)
    }

    fn is_exhausted(&self) -> bool {
        self.done
    }
}

/// Makes `buf` at least `n` bytes long (it only grows) and returns its first `n`.
fn scratch(buf: &mut Vec<u8>, n: usize) -> &mut [u8] {
    if buf.len() < n {
        buf.resize(n, 0);
    }
    &mut buf[..n]
}

fn next_pcap<R: Read>(
    input: &mut Input<R>,
    p: &PcapState,
    buf: &mut Vec<u8>,
) -> Result<Option<Meta>, CaptureError> {
    let offset = input.offset;
    let hl = p.record_header_len;
    let mut h = [0u8; 24];
    let n = input
        .read_up_to(&mut h[..hl])
        .map_err(|source| CaptureError::Io { offset, source })?;
    if n == 0 {
        return Ok(None);
    }
    if n < hl {
        return Err(CaptureError::Truncated {
            offset,
            block: PCAP_RECORD,
            expected: hl as u64,
            available: n as u64,
        });
    }
    let e = p.endian;
    let (sec, frac) = (u64::from(e.u32(&h[0..])), u64::from(e.u32(&h[4..])));
    let (caplen, orig_len) = (e.u32(&h[8..]), e.u32(&h[12..]));
    if caplen > MAX_CAPLEN {
        return Err(corrupt(
            offset,
            PCAP_RECORD,
            format!("captured length {caplen} exceeds the {MAX_CAPLEN}-byte limit"),
        ));
    }
    input.fill(
        scratch(buf, caplen as usize),
        At {
            offset,
            block: PCAP_RECORD,
            expected: hl as u64 + u64::from(caplen),
            before: hl as u64,
        },
    )?;
    // sec < 2^32 and frac * 1000 < 2^42: no overflow.
    Ok(Some(Meta {
        ts_ns: sec * NS_PER_S + frac * p.frac_ns,
        linktype: p.linktype,
        caplen,
        orig_len,
    }))
}

/// Reads a Section Header Block whose 4-byte type at `offset` was already
/// consumed, and starts a new section in `ng`.
fn read_shb<R: Read>(
    input: &mut Input<R>,
    ng: &mut NgState,
    offset: u64,
) -> Result<(), CaptureError> {
    let mut h = [0u8; 20];
    input.fill(
        &mut h,
        At {
            offset,
            block: NG_SHB,
            expected: 28,
            before: 4,
        },
    )?;
    let endian = match u32::from_le_bytes([h[4], h[5], h[6], h[7]]) {
        BYTE_ORDER_MAGIC => Endian { big: false },
        m if m.swap_bytes() == BYTE_ORDER_MAGIC => Endian { big: true },
        m => {
            return Err(corrupt(
                offset,
                NG_SHB,
                format!(
                    "byte-order magic {:02x} {:02x} {:02x} {:02x} is neither 4d 3c 2b 1a \
                     (little-endian) nor 1a 2b 3c 4d (big-endian)",
                    m as u8,
                    (m >> 8) as u8,
                    (m >> 16) as u8,
                    (m >> 24) as u8
                ),
            ))
        }
    };
    let len = endian.u32(&h[0..]);
    check_block_len(offset, NG_SHB, len, 28, MAX_BLOCK_LEN)?;
    let (major, minor) = (endian.u16(&h[8..]), endian.u16(&h[10..]));
    if major != 1 {
        return Err(corrupt(
            offset,
            NG_SHB,
            format!("unsupported pcapng version {major}.{minor} (only 1.x is read)"),
        ));
    }
    let at = At {
        offset,
        block: NG_SHB,
        expected: u64::from(len),
        before: 24,
    };
    input.skip(u64::from(len) - 28, at)?;
    check_trailer(input, endian, offset, NG_SHB, len)?;
    ng.endian = endian;
    ng.interfaces.clear();
    Ok(())
}

fn check_block_len(
    offset: u64,
    block: &'static str,
    len: u32,
    min: u32,
    max: u32,
) -> Result<(), CaptureError> {
    if len % 4 != 0 {
        return Err(corrupt(
            offset,
            block,
            format!("block length {len} is not a multiple of 4"),
        ));
    }
    if len < min {
        return Err(corrupt(
            offset,
            block,
            format!("block length {len} is below the {min}-byte minimum"),
        ));
    }
    if len > max {
        return Err(corrupt(
            offset,
            block,
            format!("block length {len} exceeds the {max}-byte limit"),
        ));
    }
    Ok(())
}

/// Reads the trailing copy of the block length and compares it.
fn check_trailer<R: Read>(
    input: &mut Input<R>,
    endian: Endian,
    offset: u64,
    block: &'static str,
    len: u32,
) -> Result<(), CaptureError> {
    let mut t = [0u8; 4];
    input.fill(
        &mut t,
        At {
            offset,
            block,
            expected: u64::from(len),
            before: u64::from(len) - 4,
        },
    )?;
    let trailer = endian.u32(&t);
    if trailer != len {
        return Err(corrupt(
            offset,
            block,
            format!("trailing block length {trailer} differs from the leading {len}"),
        ));
    }
    Ok(())
}

/// `n` rounded up to a multiple of 4.
fn pad4(n: u32) -> u64 {
    (u64::from(n) + 3) & !3
}

fn next_pcapng<R: Read>(
    input: &mut Input<R>,
    ng: &mut NgState,
    buf: &mut Vec<u8>,
) -> Result<Option<Meta>, CaptureError> {
    loop {
        let offset = input.offset;
        let mut h = [0u8; 8];
        let n = input
            .read_up_to(&mut h[..4])
            .map_err(|source| CaptureError::Io { offset, source })?;
        if n == 0 {
            return Ok(None);
        }
        if n < 4 {
            return Err(CaptureError::Truncated {
                offset,
                block: NG_BLOCK,
                expected: 12,
                available: n as u64,
            });
        }
        let e = ng.endian;
        let btype = e.u32(&h[..4]);
        if btype == SHB {
            read_shb(input, ng, offset)?;
            continue;
        }
        let block = match btype {
            IDB => NG_IDB,
            EPB => NG_EPB,
            SPB => NG_SPB,
            PB => NG_PB,
            _ => NG_BLOCK,
        };
        input.fill(
            &mut h[4..],
            At {
                offset,
                block,
                expected: 12,
                before: 4,
            },
        )?;
        let len = e.u32(&h[4..]);
        let at = |before: u64| At {
            offset,
            block,
            expected: u64::from(len),
            before,
        };
        match btype {
            IDB => {
                check_block_len(offset, block, len, 20, MAX_BLOCK_LEN)?;
                // Body and trailer.
                let body = scratch(buf, len as usize - 8);
                input.fill(body, at(8))?;
                let (body, trailer) = body.split_at(len as usize - 12);
                let t = e.u32(trailer);
                if t != len {
                    return Err(corrupt(
                        offset,
                        block,
                        format!("trailing block length {t} differs from the leading {len}"),
                    ));
                }
                let iface = parse_idb(e, body).map_err(|what| corrupt(offset, block, what))?;
                if ng.interfaces.len() >= MAX_INTERFACES {
                    return Err(corrupt(
                        offset,
                        block,
                        format!("more than {MAX_INTERFACES} interfaces in one section"),
                    ));
                }
                ng.interfaces.push(iface);
            }
            EPB | PB => {
                check_block_len(offset, block, len, 32, MAX_BLOCK_LEN)?;
                let mut f = [0u8; 20];
                input.fill(&mut f, at(8))?;
                let if_id = if btype == EPB {
                    e.u32(&f[0..])
                } else {
                    u32::from(e.u16(&f[0..]))
                };
                let units = (u64::from(e.u32(&f[4..])) << 32) | u64::from(e.u32(&f[8..]));
                let (caplen, orig_len) = (e.u32(&f[12..]), e.u32(&f[16..]));
                let iface = *ng.interfaces.get(if_id as usize).ok_or_else(|| {
                    corrupt(
                        offset,
                        block,
                        format!(
                            "packet of interface {if_id}, but the section declares {} \
                             interface(s)",
                            ng.interfaces.len()
                        ),
                    )
                })?;
                if caplen > MAX_CAPLEN {
                    return Err(corrupt(
                        offset,
                        block,
                        format!("captured length {caplen} exceeds the {MAX_CAPLEN}-byte limit"),
                    ));
                }
                let room = u64::from(len) - 32;
                if pad4(caplen) > room {
                    return Err(corrupt(
                        offset,
                        block,
                        format!("captured length {caplen} does not fit in the {len}-byte block"),
                    ));
                }
                let ts_ns = iface.resol.to_ns(units, iface.offset_s).ok_or_else(|| {
                    corrupt(
                        offset,
                        block,
                        format!(
                            "timestamp {units} (resolution {:?}, offset {} s) is outside \
                             1970..2554",
                            iface.resol, iface.offset_s
                        ),
                    )
                })?;
                // pad4(caplen) <= 256 KiB: fits usize.
                input.fill(scratch(buf, pad4(caplen) as usize), at(28))?;
                // Options: not needed.
                input.skip(room - pad4(caplen), at(28 + pad4(caplen)))?;
                check_trailer(input, e, offset, block, len)?;
                return Ok(Some(Meta {
                    ts_ns,
                    linktype: iface.linktype,
                    caplen,
                    orig_len,
                }));
            }
            SPB => {
                check_block_len(offset, block, len, 16, MAX_BLOCK_LEN)?;
                let mut f = [0u8; 4];
                input.fill(&mut f, at(8))?;
                let orig_len = e.u32(&f);
                let iface = *ng.interfaces.first().ok_or_else(|| {
                    corrupt(
                        offset,
                        block,
                        "packet, but the section declares no interface",
                    )
                })?;
                let room = len - 16;
                let mut caplen = orig_len.min(room);
                if iface.snaplen != 0 {
                    caplen = caplen.min(iface.snaplen);
                }
                if caplen > MAX_CAPLEN {
                    return Err(corrupt(
                        offset,
                        block,
                        format!("captured length {caplen} exceeds the {MAX_CAPLEN}-byte limit"),
                    ));
                }
                // caplen <= room and room is a multiple of 4: pad4(caplen) <= room.
                input.fill(scratch(buf, pad4(caplen) as usize), at(12))?;
                input.skip(u64::from(room) - pad4(caplen), at(12 + pad4(caplen)))?;
                check_trailer(input, e, offset, block, len)?;
                return Ok(Some(Meta {
                    ts_ns: 0,
                    linktype: iface.linktype,
                    caplen,
                    orig_len,
                }));
            }
            _ => {
                check_block_len(offset, block, len, 12, u32::MAX)?;
                input.skip(u64::from(len) - 12, at(8))?;
                check_trailer(input, e, offset, block, len)?;
            }
        }
    }
}

/// Parses an Interface Description Block body (after type and length, before
/// the trailer).
fn parse_idb(e: Endian, body: &[u8]) -> Result<Interface, String> {
    let linktype = u32::from(e.u16(&body[0..]));
    let snaplen = e.u32(&body[4..]);
    let mut iface = Interface {
        linktype,
        snaplen,
        resol: TsResol::MulPow10(1000),
        offset_s: 0,
    };
    let opts = body.get(8..).unwrap_or_default();
    let mut pos = 0usize;
    while opts.len() - pos >= 4 {
        let code = e.u16(&opts[pos..]);
        let olen = usize::from(e.u16(&opts[pos + 2..]));
        if code == OPT_ENDOFOPT {
            break;
        }
        let value = opts.get(pos + 4..pos + 4 + olen).ok_or_else(|| {
            format!(
                "option {code} of {olen} bytes at body byte {} overruns the block",
                pos + 8
            )
        })?;
        match code {
            IF_TSRESOL => {
                let &[v] = value else {
                    return Err(format!("if_tsresol option has {olen} bytes, expected 1"));
                };
                iface.resol = TsResol::from_option(v);
            }
            IF_TSOFFSET => {
                if olen != 8 {
                    return Err(format!("if_tsoffset option has {olen} bytes, expected 8"));
                }
                iface.offset_s = e.u64(value) as i64;
            }
            _ => {}
        }
        // The value is padded to 4 bytes; the padding may be missing at the end.
        pos = (pos + 4 + olen + 3) & !3;
        pos = pos.min(opts.len());
    }
    Ok(iface)
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- fixture writers ----

    fn put16(out: &mut Vec<u8>, big: bool, v: u16) {
        out.extend_from_slice(&if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        });
    }

    fn put32(out: &mut Vec<u8>, big: bool, v: u32) {
        out.extend_from_slice(&if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        });
    }

    fn put64(out: &mut Vec<u8>, big: bool, v: u64) {
        out.extend_from_slice(&if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        });
    }

    /// A pcap file header.
    fn pcap_header(big: bool, nanos: bool, linktype: u32, snaplen: u32) -> Vec<u8> {
        let mut o = Vec::new();
        put32(&mut o, big, if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 });
        put16(&mut o, big, 2);
        put16(&mut o, big, 4);
        put32(&mut o, big, 0);
        put32(&mut o, big, 0);
        put32(&mut o, big, snaplen);
        put32(&mut o, big, linktype);
        o
    }

    fn pcap_record(o: &mut Vec<u8>, big: bool, sec: u32, frac: u32, data: &[u8], orig: u32) {
        put32(o, big, sec);
        put32(o, big, frac);
        put32(o, big, data.len() as u32);
        put32(o, big, orig);
        o.extend_from_slice(data);
    }

    /// A pcapng writer.
    struct Ng {
        big: bool,
        out: Vec<u8>,
    }

    impl Ng {
        fn new(big: bool) -> Ng {
            let mut ng = Ng {
                big,
                out: Vec::new(),
            };
            ng.shb(big);
            ng
        }

        fn block(&mut self, btype: u32, body: &[u8]) {
            let big = self.big;
            let padded = (body.len() + 3) & !3;
            let len = (12 + padded) as u32;
            put32(&mut self.out, big, btype);
            put32(&mut self.out, big, len);
            self.out.extend_from_slice(body);
            self.out.resize(self.out.len() + padded - body.len(), 0);
            put32(&mut self.out, big, len);
        }

        fn shb(&mut self, big: bool) {
            self.big = big;
            let mut b = Vec::new();
            put32(&mut b, big, BYTE_ORDER_MAGIC);
            put16(&mut b, big, 1);
            put16(&mut b, big, 0);
            put64(&mut b, big, u64::MAX);
            // An option (shb_userappl) to skip.
            put16(&mut b, big, 4);
            put16(&mut b, big, 5);
            b.extend_from_slice(b"test\0\0\0\0");
            put16(&mut b, big, 0);
            put16(&mut b, big, 0);
            self.block(SHB, &b);
        }

        /// `tsresol`/`tsoffset`: None leaves the option out.
        fn idb(&mut self, linktype: u16, snaplen: u32, tsresol: Option<u8>, tsoffset: Option<i64>) {
            let big = self.big;
            let mut b = Vec::new();
            put16(&mut b, big, linktype);
            put16(&mut b, big, 0);
            put32(&mut b, big, snaplen);
            // if_name, to be skipped.
            put16(&mut b, big, 2);
            put16(&mut b, big, 3);
            b.extend_from_slice(b"eth\0");
            if let Some(r) = tsresol {
                put16(&mut b, big, IF_TSRESOL);
                put16(&mut b, big, 1);
                b.extend_from_slice(&[r, 0, 0, 0]);
            }
            if let Some(off) = tsoffset {
                put16(&mut b, big, IF_TSOFFSET);
                put16(&mut b, big, 8);
                put64(&mut b, big, off as u64);
            }
            put16(&mut b, big, 0);
            put16(&mut b, big, 0);
            self.block(IDB, &b);
        }

        fn epb(&mut self, iface: u32, units: u64, data: &[u8], orig: u32) {
            let big = self.big;
            let mut b = Vec::new();
            put32(&mut b, big, iface);
            put32(&mut b, big, (units >> 32) as u32);
            put32(&mut b, big, units as u32);
            put32(&mut b, big, data.len() as u32);
            put32(&mut b, big, orig);
            b.extend_from_slice(data);
            b.resize((b.len() + 3) & !3, 0);
            // epb_flags option, to be skipped.
            put16(&mut b, big, 2);
            put16(&mut b, big, 4);
            put32(&mut b, big, 1);
            put16(&mut b, big, 0);
            put16(&mut b, big, 0);
            self.block(EPB, &b);
        }

        fn pb(&mut self, iface: u16, units: u64, data: &[u8], orig: u32) {
            let big = self.big;
            let mut b = Vec::new();
            put16(&mut b, big, iface);
            put16(&mut b, big, 0);
            put32(&mut b, big, (units >> 32) as u32);
            put32(&mut b, big, units as u32);
            put32(&mut b, big, data.len() as u32);
            put32(&mut b, big, orig);
            b.extend_from_slice(data);
            self.block(PB, &b);
        }

        fn spb(&mut self, data: &[u8], orig: u32) {
            let mut b = Vec::new();
            put32(&mut b, self.big, orig);
            b.extend_from_slice(data);
            self.block(SPB, &b);
        }
    }

    #[derive(Debug, PartialEq, Eq)]
    struct Owned {
        ts_ns: u64,
        linktype: u32,
        data: Vec<u8>,
        orig_len: u32,
        caplen: u32,
    }

    fn own(f: Frame<'_>) -> Owned {
        assert_eq!(f.data.len(), f.caplen as usize);
        Owned {
            ts_ns: f.ts_ns,
            linktype: f.linktype,
            data: f.data.to_vec(),
            orig_len: f.orig_len,
            caplen: f.caplen,
        }
    }

    fn frame(ts_ns: u64, linktype: u32, data: &[u8], orig_len: u32) -> Owned {
        Owned {
            ts_ns,
            linktype,
            data: data.to_vec(),
            orig_len,
            caplen: data.len() as u32,
        }
    }

    /// Reads all frames, then the error if any.
    fn read_all(bytes: &[u8]) -> (Vec<Owned>, Option<CaptureError>) {
        let mut r = match CaptureReader::new(bytes) {
            Ok(r) => r,
            Err(e) => return (Vec::new(), Some(e)),
        };
        let mut frames = Vec::new();
        loop {
            match r.next_frame() {
                Ok(Some(f)) => frames.push(own(f)),
                Ok(None) => return (frames, None),
                Err(e) => {
                    assert!(matches!(r.next_frame(), Ok(None)), "reader not fused");
                    return (frames, Some(e));
                }
            }
        }
    }

    /// A reader that returns at most one byte per call.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match (self.0.split_first(), buf.first_mut()) {
                (Some((&b, rest)), Some(dst)) => {
                    *dst = b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    // ---- pcap ----

    #[test]
    fn pcap_all_magics_and_byte_orders() {
        for big in [false, true] {
            for nanos in [false, true] {
                let mut f = pcap_header(big, nanos, 1, 65535);
                pcap_record(&mut f, big, 1_700_000_000, 123_456, b"hello", 60);
                pcap_record(&mut f, big, 1_700_000_001, 999_999, b"", 0);
                pcap_record(&mut f, big, u32::MAX, 7, &[0xab; 300], 1500);
                let mut r = CaptureReader::new(&f[..]).unwrap();
                assert_eq!(r.format(), CaptureFormat::Pcap);
                assert_eq!(r.offset(), 24);
                let m = if nanos { 1 } else { 1000 };
                let want = [
                    frame(1_700_000_000 * NS_PER_S + 123_456 * m, 1, b"hello", 60),
                    frame(1_700_000_001 * NS_PER_S + 999_999 * m, 1, b"", 0),
                    frame(
                        u64::from(u32::MAX) * NS_PER_S + 7 * m,
                        1,
                        &[0xab; 300],
                        1500,
                    ),
                ];
                let ends = [24 + 16 + 5, 24 + 16 + 5 + 16, f.len() as u64];
                for (w, end) in want.iter().zip(ends) {
                    assert_eq!(
                        &own(r.next_frame().unwrap().unwrap()),
                        w,
                        "big={big} nanos={nanos}"
                    );
                    assert_eq!(r.offset(), end);
                }
                assert!(r.next_frame().unwrap().is_none());
                assert!(r.next_frame().unwrap().is_none());
            }
        }
    }

    #[test]
    fn pcap_linktype_fcs_bits_masked_and_modified_format() {
        let mut f = pcap_header(false, false, 0x1000_0000 | 101, 65535);
        pcap_record(&mut f, false, 1, 2, b"ip", 2);
        let (frames, err) = read_all(&f);
        assert!(err.is_none());
        assert_eq!(frames, [frame(NS_PER_S + 2000, 101, b"ip", 2)]);

        // Modified pcap: 8 extra bytes per record header.
        let mut f = pcap_header(true, false, 1, 65535);
        f[..4].copy_from_slice(&0xa1b2_cd34u32.to_be_bytes());
        put32(&mut f, true, 5);
        put32(&mut f, true, 6);
        put32(&mut f, true, 3);
        put32(&mut f, true, 3);
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(b"abc");
        let (frames, err) = read_all(&f);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(frames, [frame(5 * NS_PER_S + 6000, 1, b"abc", 3)]);
    }

    #[test]
    fn pcap_reads_through_one_byte_reads() {
        let mut f = pcap_header(false, true, 1, 65535);
        for i in 0..10u8 {
            pcap_record(
                &mut f,
                false,
                10,
                u32::from(i),
                &vec![i; usize::from(i) * 7],
                100,
            );
        }
        let mut r = CaptureReader::new(Trickle(&f)).unwrap();
        let mut n = 0u8;
        while let Some(fr) = r.next_frame().unwrap() {
            assert_eq!(fr.data, &vec![n; usize::from(n) * 7][..]);
            assert_eq!(fr.ts_ns, 10 * NS_PER_S + u64::from(n));
            n += 1;
        }
        assert_eq!(n, 10);
        assert_eq!(r.offset(), f.len() as u64);
    }

    #[test]
    fn empty_file() {
        let e = CaptureReader::new(&b""[..]).unwrap_err();
        assert!(
            matches!(e, CaptureError::NotACapture { offset: 0, ref magic } if magic.is_empty())
        );
        assert_eq!(
            e.to_string(),
            "not a pcap or pcapng file: the file is empty"
        );
    }

    #[test]
    fn bad_magic() {
        let e = CaptureReader::new(&b"GET / HTTP/1.1\r\n"[..]).unwrap_err();
        assert!(matches!(e, CaptureError::NotACapture { offset: 0, .. }));
        assert!(e.to_string().contains("47 45 54 20"), "{e}");
        let e = CaptureReader::new(&[0x1f, 0x8b, 8, 0, 0, 0][..]).unwrap_err();
        assert!(e.to_string().contains("gzip"), "{e}");
        let e = CaptureReader::new(&[0xd4, 0xc3][..]).unwrap_err();
        assert!(e.to_string().contains("only 2 bytes"), "{e}");
    }

    #[test]
    fn truncated_pcap_file_header() {
        let f = pcap_header(false, false, 1, 65535);
        let e = CaptureReader::new(&f[..10]).unwrap_err();
        assert!(
            matches!(
                e,
                CaptureError::Truncated {
                    offset: 0,
                    block: PCAP_FILE_HEADER,
                    expected: 24,
                    available: 10
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "pcap file header at byte 0 is truncated: the file ends 10 bytes into it, but it needs 24"
        );
        let mut f = f;
        f[4] = 9; // version 9.x
        let e = CaptureReader::new(&f[..]).unwrap_err();
        assert!(
            e.to_string().contains("unsupported pcap version 9.4"),
            "{e}"
        );
    }

    #[test]
    fn truncated_pcap_record_header() {
        let mut f = pcap_header(false, false, 1, 65535);
        pcap_record(&mut f, false, 1, 1, b"abcd", 4);
        let rec2 = f.len() as u64;
        pcap_record(&mut f, false, 2, 2, b"efgh", 4);
        f.truncate(rec2 as usize + 7);
        let (frames, err) = read_all(&f);
        assert_eq!(frames, [frame(NS_PER_S + 1000, 1, b"abcd", 4)]);
        let err = err.unwrap();
        assert!(matches!(
            err,
            CaptureError::Truncated { offset, block: PCAP_RECORD, expected: 16, available: 7 } if offset == rec2
        ));
        assert_eq!(err.offset(), 44);
    }

    #[test]
    fn truncated_pcap_record_data() {
        let mut f = pcap_header(true, true, 1, 65535);
        pcap_record(&mut f, true, 1, 1, b"abcd", 4);
        pcap_record(&mut f, true, 2, 2, &[7; 100], 100);
        f.truncate(f.len() - 1);
        let (frames, err) = read_all(&f);
        assert_eq!(frames.len(), 1);
        let err = err.unwrap();
        assert!(matches!(
            err,
            CaptureError::Truncated {
                offset: 44,
                block: PCAP_RECORD,
                expected: 116,
                available: 115
            }
        ));
        assert_eq!(
            err.to_string(),
            "pcap record at byte 44 is truncated: the file ends 115 bytes into it, but it needs 116"
        );
    }

    #[test]
    fn absurd_caplen() {
        let mut f = pcap_header(false, false, 1, 65535);
        pcap_record(&mut f, false, 1, 1, b"abcd", 4);
        put32(&mut f, false, 2);
        put32(&mut f, false, 2);
        put32(&mut f, false, 4_294_967);
        put32(&mut f, false, 4_294_967);
        f.extend_from_slice(&[0; 64]);
        let (frames, err) = read_all(&f);
        assert_eq!(frames.len(), 1);
        let err = err.unwrap();
        assert!(matches!(err, CaptureError::Corrupt { offset: 44, .. }));
        assert_eq!(
            err.to_string(),
            "pcap record at byte 44: captured length 4294967 exceeds the 262144-byte limit"
        );
    }

    // ---- pcapng ----

    #[test]
    fn pcapng_interfaces_with_different_linktypes_and_resolutions() {
        for big in [false, true] {
            let mut ng = Ng::new(big);
            ng.idb(1, 0, None, None); // 10^-6 by default
            ng.idb(101, 65535, Some(9), None); // 10^-9
            ng.idb(113, 0, Some(0x80 | 20), Some(1_700_000_000)); // 2^-20, offset
            ng.idb(228, 0, Some(3), Some(-10)); // 10^-3, negative offset
            ng.idb(229, 0, Some(12), None); // 10^-12: truncated to ns
            ng.epb(0, 1_700_000_000_123_456, b"eth", 60);
            ng.epb(1, 1_700_000_000_123_456_789, b"raw ip", 6);
            ng.epb(2, 3 * (1 << 20) + (1 << 19) + 1, b"sll", 3);
            ng.epb(3, 20_000, b"", 0);
            ng.epb(4, 1_234_567_890_123_999, b"x", 1);
            let (frames, err) = read_all(&ng.out);
            assert!(err.is_none(), "{err:?}");
            // 2^-20 s = 953.67431640625 ns: 1 unit truncates to 953.
            let want = [
                frame(1_700_000_000_123_456_000, 1, b"eth", 60),
                frame(1_700_000_000_123_456_789, 101, b"raw ip", 6),
                frame(
                    (1_700_000_000 + 3) * NS_PER_S + 500_000_000 + 953,
                    113,
                    b"sll",
                    3,
                ),
                frame(10 * NS_PER_S, 228, b"", 0),
                frame(1_234_567_890_123, 229, b"x", 1),
            ];
            assert_eq!(frames, want, "big={big}");
        }
    }

    /// An 802.11 interface (LINKTYPE_IEEE802_11, 105) beside an Ethernet one:
    /// the reader hands over every frame with its interface's link type and
    /// goes on past the 802.11 ones; the engine counts those by link type
    /// and analyses the Ethernet ones.
    #[test]
    fn pcapng_ethernet_beside_802_11() {
        use crate::engine::{Engine, EngineConfig};
        use crate::wire::LinkType;
        // Ethernet + IPv4 + UDP 198.18.0.1:1000 -> 198.18.0.2:2000, 4 bytes of data.
        let mut eth = vec![0u8; 12];
        eth.extend_from_slice(&[0x08, 0x00]);
        eth.extend_from_slice(&[
            0x45, 0, 0, 32, 0, 0, 0x40, 0, 64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2,
        ]);
        eth.extend_from_slice(&[0x03, 0xe8, 0x07, 0xd0, 0, 12, 0, 0, 1, 2, 3, 4]);
        let wifi = [0x08u8, 0x02, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        let t0 = 1_700_000_000_000_000u64; // us
        let mut ng = Ng::new(false);
        ng.idb(105, 0, None, None);
        ng.idb(1, 0, None, None);
        ng.epb(0, t0, &wifi, 10);
        ng.epb(1, t0 + 1, &eth, eth.len() as u32);
        ng.epb(0, t0 + 2, &wifi, 10);
        ng.epb(1, t0 + 3, &eth, eth.len() as u32);
        let (frames, err) = read_all(&ng.out);
        assert!(err.is_none(), "{err:?}");
        let links: Vec<u32> = frames.iter().map(|f| f.linktype).collect();
        assert_eq!(links, [105, 1, 105, 1]);

        let mut engine = Engine::new(EngineConfig::default());
        for f in &frames {
            match LinkType::from_linktype(f.linktype) {
                Some(lt) => engine.handle_frame(f.ts_ns, lt, &f.data),
                None => engine.count_unsupported_link(f.ts_ns, f.linktype),
            }
        }
        let s = engine.summary();
        assert_eq!(s.packets, 4);
        assert_eq!(s.unsupported_link.get("105"), Some(&2));
        assert_eq!(s.unsupported_link.len(), 1);
        assert_eq!(s.flows.udp, 1);
        assert!(s.parse_errors.is_empty(), "{:?}", s.parse_errors);
        assert_eq!(s.non_ip, 0);
    }

    #[test]
    fn pcapng_multiple_sections_each_with_own_interfaces() {
        let mut ng = Ng::new(false);
        ng.idb(1, 0, None, None);
        ng.epb(0, 5, b"first", 5);
        ng.shb(true); // new section, other byte order
        ng.idb(276, 0, Some(9), None);
        ng.epb(0, 7, b"second", 6);
        ng.shb(false);
        ng.idb(0, 0, Some(0), None); // 1 s units
        ng.epb(0, 9, b"third", 5);
        let mut r = CaptureReader::new(&ng.out[..]).unwrap();
        assert_eq!(r.format(), CaptureFormat::PcapNg);
        assert_eq!(
            own(r.next_frame().unwrap().unwrap()),
            frame(5000, 1, b"first", 5)
        );
        assert_eq!(
            own(r.next_frame().unwrap().unwrap()),
            frame(7, 276, b"second", 6)
        );
        assert_eq!(
            own(r.next_frame().unwrap().unwrap()),
            frame(9 * NS_PER_S, 0, b"third", 5)
        );
        assert!(r.next_frame().unwrap().is_none());
        assert_eq!(r.offset(), ng.out.len() as u64);
    }

    #[test]
    fn pcapng_interfaces_do_not_carry_over_sections() {
        let mut ng = Ng::new(false);
        ng.idb(1, 0, None, None);
        ng.idb(1, 0, None, None);
        ng.epb(1, 5, b"ok", 2);
        ng.shb(false);
        ng.idb(1, 0, None, None);
        let bad = ng.out.len() as u64;
        ng.epb(1, 5, b"bad", 3);
        let (frames, err) = read_all(&ng.out);
        assert_eq!(frames.len(), 1);
        let err = err.unwrap();
        assert_eq!(err.offset(), bad);
        assert_eq!(
            err.to_string(),
            format!(
                "pcapng Enhanced Packet Block at byte {bad}: packet of interface 1, but the \
                 section declares 1 interface(s)"
            )
        );
    }

    #[test]
    fn pcapng_simple_and_obsolete_packet_blocks() {
        for big in [false, true] {
            let mut ng = Ng::new(big);
            ng.idb(1, 4, Some(9), None); // snaplen 4
            ng.spb(b"abcd", 100); // caplen = min(orig 100, room 4, snaplen 4)
            ng.spb(b"ab", 2);
            ng.pb(0, 42, b"old", 3);
            let (frames, err) = read_all(&ng.out);
            assert!(err.is_none(), "{err:?}");
            assert_eq!(
                frames,
                [
                    frame(0, 1, b"abcd", 100),
                    frame(0, 1, b"ab", 2),
                    frame(42, 1, b"old", 3)
                ]
            );
        }
        // SPB without an interface.
        let mut ng = Ng::new(false);
        ng.spb(b"ab", 2);
        let (_, err) = read_all(&ng.out);
        assert!(err.unwrap().to_string().contains("declares no interface"));
    }

    #[test]
    fn pcapng_unknown_blocks_are_skipped() {
        let mut ng = Ng::new(true);
        ng.block(0x0000_0bad, b"custom block body");
        ng.idb(1, 0, None, None);
        ng.block(4, &[0; 8]); // name resolution
        ng.epb(0, 1, b"a", 1);
        ng.block(5, &[0; 20]); // interface statistics
        ng.block(0x8000_0001, &[]); // empty local-use block
        ng.epb(0, 2, b"b", 1);
        let (frames, err) = read_all(&ng.out);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(frames, [frame(1000, 1, b"a", 1), frame(2000, 1, b"b", 1)]);
    }

    #[test]
    fn pcapng_bad_block_lengths() {
        let mut base = Ng::new(false);
        base.idb(1, 0, None, None);
        base.epb(0, 1, b"good", 4);
        let at = base.out.len();

        // (length, expected message tail)
        for (len, msg) in [
            (13u32, "block length 13 is not a multiple of 4"),
            (8, "block length 8 is below the 32-byte minimum"),
            (28, "block length 28 is below the 32-byte minimum"),
        ] {
            let mut f = base.out.clone();
            put32(&mut f, false, EPB);
            put32(&mut f, false, len);
            f.extend_from_slice(&[0; 64]);
            let (frames, err) = read_all(&f);
            assert_eq!(frames.len(), 1);
            let err = err.unwrap();
            assert_eq!(
                err.to_string(),
                format!("pcapng Enhanced Packet Block at byte {at}: {msg}")
            );
        }

        // A packet block longer than any packet and its options.
        let mut f = base.out.clone();
        put32(&mut f, false, EPB);
        put32(&mut f, false, 0xffff_fff0);
        f.extend_from_slice(&[0; 64]);
        let (frames, err) = read_all(&f);
        assert_eq!(frames.len(), 1);
        assert_eq!(
            err.unwrap().to_string(),
            format!(
                "pcapng Enhanced Packet Block at byte {at}: block length 4294967280 exceeds \
                 the 2097152-byte limit"
            )
        );

        // Trailer differs from the leading length.
        let mut ng = Ng::new(false);
        ng.idb(1, 0, None, None);
        ng.epb(0, 1, b"good", 4);
        ng.block(0x0bad, &[1, 2, 3, 4]);
        let last = ng.out.len();
        ng.out[last - 4] = 99;
        let (frames, err) = read_all(&ng.out);
        assert_eq!(frames.len(), 1);
        assert_eq!(
            err.unwrap().to_string(),
            format!(
                "pcapng block at byte {at}: trailing block length 99 differs from the leading 16"
            )
        );

        // Caplen larger than the block.
        let mut f = base.out.clone();
        let mut ng = Ng {
            big: false,
            out: Vec::new(),
        };
        ng.epb(0, 1, b"12345678", 8);
        ng.out[20] = 200; // caplen 200 in a 52-byte block
        f.extend_from_slice(&ng.out);
        let (frames, err) = read_all(&f);
        assert_eq!(frames.len(), 1);
        let err = err.unwrap();
        assert_eq!(err.offset(), at as u64);
        assert!(err
            .to_string()
            .contains("captured length 200 does not fit in the 52-byte block"));
    }

    #[test]
    fn pcapng_truncated() {
        let mut ng = Ng::new(false);
        ng.idb(1, 0, None, None);
        ng.epb(0, 1, b"good", 4);
        let at = ng.out.len();
        ng.epb(0, 2, b"cut short", 9);
        let full = ng.out.len() - at;
        // Cut inside the block header, the fixed part, the data, the options, the trailer.
        for cut in [2, 6, 20, 30, full - 10, full - 2] {
            let (frames, err) = read_all(&ng.out[..at + cut]);
            assert_eq!(frames.len(), 1, "cut {cut}");
            let err = err.unwrap();
            match err {
                CaptureError::Truncated {
                    offset, available, ..
                } => {
                    assert_eq!(offset, at as u64);
                    assert_eq!(available, cut as u64, "cut {cut}");
                }
                e => panic!("cut {cut}: {e:?}"),
            }
        }
        // Truncated Section Header Block.
        let e = CaptureReader::new(&ng.out[..10]).unwrap_err();
        assert!(matches!(
            e,
            CaptureError::Truncated {
                offset: 0,
                block: NG_SHB,
                available: 10,
                ..
            }
        ));
        // Bad byte-order magic and bad version.
        let mut f = ng.out.clone();
        f[8] = 0;
        let e = CaptureReader::new(&f[..]).unwrap_err();
        assert!(
            e.to_string().contains("byte-order magic 00 3c 2b 1a"),
            "{e}"
        );
        let mut f = ng.out.clone();
        f[12] = 2;
        let e = CaptureReader::new(&f[..]).unwrap_err();
        assert!(
            e.to_string().contains("unsupported pcapng version 2.0"),
            "{e}"
        );
    }

    #[test]
    fn pcapng_timestamp_out_of_range_and_bad_options() {
        let mut ng = Ng::new(false);
        ng.idb(1, 0, None, Some(-1)); // 1 s before the epoch for ts 0
        ng.epb(0, 0, b"a", 1);
        let (_, err) = read_all(&ng.out);
        assert!(err.unwrap().to_string().contains("outside 1970..2554"));

        let mut ng = Ng::new(false);
        ng.idb(1, 0, None, None);
        ng.epb(0, u64::MAX, b"a", 1); // 2^64 us overflows u64 ns
        let (_, err) = read_all(&ng.out);
        assert!(matches!(err, Some(CaptureError::Corrupt { .. })));

        // if_tsresol with a 2-byte value.
        let mut ng = Ng::new(false);
        let mut b = Vec::new();
        put16(&mut b, false, 1);
        put16(&mut b, false, 0);
        put32(&mut b, false, 0);
        put16(&mut b, false, IF_TSRESOL);
        put16(&mut b, false, 2);
        b.extend_from_slice(&[6, 0, 0, 0]);
        ng.block(IDB, &b);
        let (_, err) = read_all(&ng.out);
        assert!(err
            .unwrap()
            .to_string()
            .contains("if_tsresol option has 2 bytes"));

        // Option overrunning the block.
        let mut ng = Ng::new(false);
        let mut b = Vec::new();
        put16(&mut b, false, 1);
        put16(&mut b, false, 0);
        put32(&mut b, false, 0);
        put16(&mut b, false, 2);
        put16(&mut b, false, 200);
        b.extend_from_slice(&[0; 8]);
        ng.block(IDB, &b);
        let (_, err) = read_all(&ng.out);
        assert!(err.unwrap().to_string().contains("overruns the block"));
    }

    #[test]
    fn frame_source_batches() {
        let mut f = pcap_header(false, false, 1, 65535);
        for i in 0..150u32 {
            pcap_record(&mut f, false, i, 0, &i.to_le_bytes(), 4);
        }
        let mut r = CaptureReader::new(&f[..]).unwrap();
        let mut seen = Vec::new();
        let mut batches = Vec::new();
        let src: &mut dyn FrameSource = &mut r;
        while !src.is_exhausted() {
            let n = src
                .recv_batch(&mut |fr| seen.push(u32::from_le_bytes(fr.data.try_into().unwrap())))
                .unwrap();
            batches.push(n);
        }
        assert_eq!(batches, [64, 64, 22]);
        assert_eq!(seen, (0..150).collect::<Vec<_>>());

        // Errors come through as io::Error with the message kept.
        let mut f = pcap_header(false, false, 1, 65535);
        pcap_record(&mut f, false, 1, 0, b"ab", 2);
        f.extend_from_slice(&[1, 2, 3]);
        let mut r = CaptureReader::new(&f[..]).unwrap();
        let mut n = 0;
        let e = r.recv_batch(&mut |_| n += 1).unwrap_err();
        assert_eq!(n, 1);
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(
            e.to_string()
                .starts_with("pcap record at byte 42 is truncated"),
            "{e}"
        );
        assert!(r.is_exhausted());
    }

    /// xorshift64*
    fn rng(state: &mut u64) -> u64 {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    #[test]
    fn random_mutations_never_panic() {
        let mut pcap = pcap_header(false, true, 1, 65535);
        for i in 0..6u32 {
            pcap_record(&mut pcap, false, i, i, &vec![i as u8; i as usize * 9], 100);
        }
        let mut ng = Ng::new(false);
        ng.idb(1, 0, Some(9), Some(3));
        ng.idb(101, 64, Some(0x94), None);
        ng.epb(0, 1, b"abcdefgh", 8);
        ng.spb(b"simple packet", 13);
        ng.block(0x0bad, b"unknown");
        ng.epb(1, 2, &[9; 30], 30);
        ng.shb(true);
        ng.idb(113, 0, None, None);
        ng.pb(0, 3, b"old", 3);
        ng.epb(0, 4, b"z", 1);

        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        for base in [pcap, ng.out] {
            for _ in 0..5000 {
                let mut f = base.clone();
                for _ in 0..=rng(&mut s) % 6 {
                    let i = (rng(&mut s) % f.len() as u64) as usize;
                    match rng(&mut s) % 5 {
                        0 => f[i] = rng(&mut s) as u8,
                        1 => f[i] ^= 1 << (rng(&mut s) % 8),
                        2 => f[i] = 0xff,
                        3 => f.truncate(i.max(1)),
                        _ => f.insert(i, rng(&mut s) as u8),
                    }
                }
                let len = f.len() as u64;
                let Ok(mut r) = CaptureReader::new(&f[..]) else {
                    continue;
                };
                let mut last = r.offset();
                loop {
                    match r.next_frame() {
                        Ok(Some(fr)) => {
                            assert_eq!(fr.data.len(), fr.caplen as usize);
                            assert!(fr.caplen <= MAX_CAPLEN);
                        }
                        Ok(None) => break,
                        Err(e) => {
                            assert!(last <= e.offset() && e.offset() <= r.offset(), "{e}");
                            assert!(r.offset() <= len);
                            assert!(!e.to_string().is_empty());
                            break;
                        }
                    }
                    assert!(r.offset() > last && r.offset() <= len);
                    last = r.offset();
                }
                assert!(r.next_frame().unwrap().is_none());
            }
        }
    }
}
