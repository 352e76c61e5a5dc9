//! Per-packet fields from `tshark`, the reference analyzer.
//!
//! Two passes over the capture:
//! - [`tcp_packets`]: every TCP segment that is not inside an ICMP error, with
//!   Wireshark's sequence analysis on and absolute sequence numbers, so the
//!   coverage reference can be computed independently of Wireshark's guesses;
//! - [`ip_frames`]: every frame with its IP/fragment/UDP/ICMP fields and IP
//!   reassembly off, for UDP flows, fragments, PMTU errors and the summary.

use std::net::IpAddr;
use std::path::Path;

use super::run_bounded;

const TSHARK_SECS: u32 = 120;

const TCP_FIELDS: &[&str] = &[
    "frame.number",
    "frame.time_epoch",
    "ip.src",
    "ip.dst",
    "ipv6.src",
    "ipv6.dst",
    "ip.len",
    "ipv6.plen",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.stream",
    "tcp.seq",
    "tcp.ack",
    "tcp.len",
    "tcp.flags",
    "tcp.window_size_value",
    "tcp.analysis.retransmission",
    "tcp.analysis.fast_retransmission",
    "tcp.analysis.spurious_retransmission",
    "tcp.analysis.out_of_order",
    "tcp.analysis.duplicate_ack",
    "tcp.analysis.zero_window",
    "tcp.analysis.ack_rtt",
    "tcp.analysis.acks_frame",
    "tcp.analysis.keep_alive",
    "tcp.analysis.lost_segment",
    "tcp.options.mss_val",
    "tcp.options.wscale.shift",
    "tcp.options.sack_perm",
    "tcp.options.timestamp.tsval",
    "ip.dsfield.ecn",
    "ipv6.tclass.ecn",
    "tcp.options.timestamp.tsecr",
];

/// One TCP segment as tshark saw it.
#[derive(Clone, Debug, Default)]
pub struct TcpPkt {
    pub frame: u64,
    pub ts_ns: u64,
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub sport: u16,
    pub dport: u16,
    pub stream: u64,
    /// IP (L3) length: ip.len, or ipv6.plen + 40 (the lab sends no extension headers).
    pub ip_len: u64,
    pub seq: u32,
    pub ack: u32,
    pub len: u32,
    pub flags: u16,
    pub window: u32,
    pub retransmission: bool,
    pub fast_retransmission: bool,
    pub spurious_retransmission: bool,
    pub out_of_order: bool,
    pub duplicate_ack: bool,
    pub zero_window: bool,
    pub ack_rtt_ns: Option<u64>,
    pub acks_frame: Option<u64>,
    pub keep_alive: bool,
    pub lost_segment: bool,
    pub mss: Option<u16>,
    pub wscale: Option<u8>,
    pub sack_perm: bool,
    pub tsval: Option<u32>,
    pub tsecr: Option<u32>,
    pub ecn: u8,
}

pub const FIN: u16 = 0x01;
pub const SYN: u16 = 0x02;
pub const RST: u16 = 0x04;
pub const ACK: u16 = 0x10;
pub const ECE: u16 = 0x40;
pub const CWR: u16 = 0x80;

impl TcpPkt {
    pub fn has(&self, f: u16) -> bool {
        self.flags & f != 0
    }
}

/// "1795610836.166598748" -> ns since the epoch, exactly (no float).
pub fn parse_epoch_ns(s: &str) -> Result<u64, String> {
    let (sec, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 9 {
        return Err(format!("time {s}: more than 9 decimals"));
    }
    let sec: u64 = sec.parse().map_err(|e| format!("time {s}: {e}"))?;
    let frac_ns: u64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}")
            .parse()
            .map_err(|e| format!("time {s}: {e}"))?
    };
    Ok(sec * 1_000_000_000 + frac_ns)
}

fn num<T: std::str::FromStr>(s: &str, what: &str) -> Result<Option<T>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    let s = s.split(',').next().unwrap_or(s);
    s.parse::<T>()
        .map(Some)
        .map_err(|_| format!("{what}: cannot parse {s:?}"))
}

fn hex_or_dec(s: &str, what: &str) -> Result<Option<u64>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    let s = s.split(',').next().unwrap_or(s);
    let r = match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map(Some)
        .map_err(|_| format!("{what}: cannot parse {s:?}"))
}

fn flag(s: &str) -> bool {
    !s.is_empty() && s != "0" && s != "False"
}

fn ip(s: &str) -> Result<Option<IpAddr>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|e| format!("address {s:?}: {e}"))
}

fn tshark_args(
    pcap: &Path,
    filter: Option<&str>,
    fields: &[&str],
    occurrence: &str,
) -> Vec<String> {
    let mut a: Vec<String> = vec!["-n".into(), "-r".into(), pcap.display().to_string()];
    for o in [
        "tcp.analyze_sequence_numbers:TRUE",
        "tcp.relative_sequence_numbers:FALSE",
        "tcp.desegment_tcp_streams:FALSE",
        "ip.defragment:FALSE",
        "ipv6.defragment:FALSE",
    ] {
        a.push("-o".into());
        a.push(o.into());
    }
    if let Some(f) = filter {
        a.push("-Y".into());
        a.push(f.into());
    }
    a.extend(["-T", "fields", "-E", "separator=/t", "-E", "header=n"].map(String::from));
    a.push("-E".into());
    a.push(format!("occurrence={occurrence}"));
    for f in fields {
        a.push("-e".into());
        a.push((*f).into());
    }
    a
}

pub fn tcp_packets(pcap: &Path) -> Result<Vec<TcpPkt>, String> {
    let out = run_bounded(
        TSHARK_SECS,
        "tshark",
        &tshark_args(pcap, Some("tcp && !icmp && !icmpv6"), TCP_FIELDS, "f"),
    )?;
    let mut pkts = Vec::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() != TCP_FIELDS.len() {
            return Err(format!(
                "tshark line has {} fields, want {}: {line:?}",
                f.len(),
                TCP_FIELDS.len()
            ));
        }
        let src = ip(f[2])?.or(ip(f[4])?);
        let dst = ip(f[3])?.or(ip(f[5])?);
        let ip_len = match (num::<u64>(f[6], "ip.len")?, num::<u64>(f[7], "ipv6.plen")?) {
            (Some(l), _) => l,
            (None, Some(p)) => p + 40,
            _ => 0,
        };
        pkts.push(TcpPkt {
            frame: num(f[0], "frame.number")?.unwrap_or(0),
            ts_ns: parse_epoch_ns(f[1])?,
            src,
            dst,
            sport: num(f[8], "tcp.srcport")?.unwrap_or(0),
            dport: num(f[9], "tcp.dstport")?.unwrap_or(0),
            stream: num(f[10], "tcp.stream")?.unwrap_or(0),
            ip_len,
            seq: num(f[11], "tcp.seq")?.unwrap_or(0),
            ack: num(f[12], "tcp.ack")?.unwrap_or(0),
            len: num(f[13], "tcp.len")?.unwrap_or(0),
            flags: hex_or_dec(f[14], "tcp.flags")?.unwrap_or(0) as u16,
            window: num(f[15], "tcp.window_size_value")?.unwrap_or(0),
            retransmission: flag(f[16]),
            fast_retransmission: flag(f[17]),
            spurious_retransmission: flag(f[18]),
            out_of_order: flag(f[19]),
            duplicate_ack: flag(f[20]),
            zero_window: flag(f[21]),
            ack_rtt_ns: if f[22].is_empty() {
                None
            } else {
                Some(parse_epoch_ns(f[22])?)
            },
            acks_frame: num(f[23], "tcp.analysis.acks_frame")?,
            keep_alive: flag(f[24]),
            lost_segment: flag(f[25]),
            mss: num(f[26], "tcp.options.mss_val")?,
            wscale: num(f[27], "tcp.options.wscale.shift")?,
            sack_perm: !f[28].is_empty(),
            tsval: num(f[29], "tcp.options.timestamp.tsval")?,
            tsecr: num(f[32], "tcp.options.timestamp.tsecr")?,
            ecn: num::<u8>(f[30], "ip.dsfield.ecn")?
                .or(num::<u8>(f[31], "ipv6.tclass.ecn")?)
                .unwrap_or(0),
        });
    }
    Ok(pkts)
}

const FRAME_FIELDS: &[&str] = &[
    "frame.number",
    "frame.time_epoch",
    "ip.src",
    "ip.dst",
    "ip.len",
    "ip.proto",
    "ip.id",
    "ip.flags.mf",
    "ip.frag_offset",
    "ipv6.src",
    "ipv6.dst",
    "ipv6.plen",
    "ipv6.nxt",
    "ipv6.fraghdr.nxt",
    "ipv6.fraghdr.offset",
    "ipv6.fraghdr.more",
    "ipv6.fraghdr.ident",
    "udp.srcport",
    "udp.dstport",
    "tcp.srcport",
    "tcp.dstport",
    "icmp.type",
    "icmp.code",
    "icmp.mtu",
    "icmpv6.type",
    "icmpv6.code",
    "icmpv6.mtu",
];

/// One frame's network-layer view. With `occurrence=a` a field that occurs
/// twice (outer and quoted header of an ICMP error) gives both values.
#[derive(Clone, Debug, Default)]
pub struct Frame {
    pub frame: u64,
    pub ts_ns: u64,
    /// None for frames without IP (ARP, ...).
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub ip_len: u64,
    pub v6: bool,
    /// Upper-layer protocol (after a fragment header).
    pub proto: Option<u8>,
    /// Fragment: (id, offset in bytes, more fragments).
    pub frag: Option<(u32, u32, bool)>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// ICMP/ICMPv6 (type, code, mtu) of the outer header.
    pub icmp: Option<(u8, u8, Option<u32>)>,
    /// For ICMP errors: the quoted packet's (src, dst, proto, sport, dport).
    pub quoted: Option<(IpAddr, IpAddr, u8, u16, u16)>,
}

impl Frame {
    pub fn is_frag_needed(&self) -> bool {
        !self.v6 && matches!(self.icmp, Some((3, 4, _)))
    }
    pub fn is_packet_too_big(&self) -> bool {
        self.v6 && matches!(self.icmp, Some((2, _, _)))
    }
}

fn nth(s: &str, i: usize) -> &str {
    s.split(',').nth(i).unwrap_or("")
}

pub fn ip_frames(pcap: &Path) -> Result<Vec<Frame>, String> {
    let out = run_bounded(
        TSHARK_SECS,
        "tshark",
        &tshark_args(pcap, None, FRAME_FIELDS, "a"),
    )?;
    let mut frames = Vec::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() != FRAME_FIELDS.len() {
            return Err(format!(
                "tshark line has {} fields, want {}: {line:?}",
                f.len(),
                FRAME_FIELDS.len()
            ));
        }
        let mut fr = Frame {
            frame: num(f[0], "frame.number")?.unwrap_or(0),
            ts_ns: parse_epoch_ns(f[1])?,
            ..Frame::default()
        };
        if !f[2].is_empty() {
            fr.src = ip(nth(f[2], 0))?;
            fr.dst = ip(nth(f[3], 0))?;
            fr.ip_len = num(nth(f[4], 0), "ip.len")?.unwrap_or(0);
            fr.proto = num(nth(f[5], 0), "ip.proto")?;
            let mf = flag(nth(f[7], 0));
            let off: u32 = num(nth(f[8], 0), "ip.frag_offset")?.unwrap_or(0);
            if mf || off != 0 {
                let id = hex_or_dec(nth(f[6], 0), "ip.id")?.unwrap_or(0) as u32;
                // tshark 4.0 prints the offset in 8-byte units.
                fr.frag = Some((id, off * 8, mf));
            }
        } else if !f[9].is_empty() {
            fr.v6 = true;
            fr.src = ip(nth(f[9], 0))?;
            fr.dst = ip(nth(f[10], 0))?;
            fr.ip_len = num::<u64>(nth(f[11], 0), "ipv6.plen")?.unwrap_or(0) + 40;
            fr.proto = num(nth(f[12], 0), "ipv6.nxt")?;
            if fr.proto == Some(44) {
                fr.proto = num(nth(f[13], 0), "ipv6.fraghdr.nxt")?;
                let off: u32 = num(nth(f[14], 0), "ipv6.fraghdr.offset")?.unwrap_or(0);
                let more = flag(nth(f[15], 0));
                let id = hex_or_dec(nth(f[16], 0), "ipv6.fraghdr.ident")?.unwrap_or(0) as u32;
                fr.frag = Some((id, off * 8, more));
            }
        }
        let (ty, code, mtu) = if !fr.v6 {
            (f[21], f[22], f[23])
        } else {
            (f[24], f[25], f[26])
        };
        let outer_icmp = (fr.proto == Some(1) && !fr.v6) || (fr.proto == Some(58) && fr.v6);
        if outer_icmp && !ty.is_empty() {
            fr.icmp = Some((
                num(nth(ty, 0), "icmp.type")?.unwrap_or(0),
                num(nth(code, 0), "icmp.code")?.unwrap_or(0),
                num(nth(mtu, 0), "icmp.mtu")?,
            ));
            // The quoted header: second ip/ipv6 address occurrence, first port.
            let (qs, qd) = if !fr.v6 {
                (nth(f[2], 1), nth(f[3], 1))
            } else {
                (nth(f[9], 1), nth(f[10], 1))
            };
            let qproto = if !fr.v6 { nth(f[5], 1) } else { nth(f[12], 1) };
            if let (Some(s), Some(d)) = (ip(qs)?, ip(qd)?) {
                let qp: u8 = num(qproto, "quoted proto")?.unwrap_or(0);
                let (sp, dp) = match qp {
                    6 => (nth(f[19], 0), nth(f[20], 0)),
                    17 => (nth(f[17], 0), nth(f[18], 0)),
                    _ => ("", ""),
                };
                fr.quoted = Some((
                    s,
                    d,
                    qp,
                    num(sp, "quoted sport")?.unwrap_or(0),
                    num(dp, "quoted dport")?.unwrap_or(0),
                ));
            }
        } else {
            let (sp, dp) = match fr.proto {
                Some(6) => (f[19], f[20]),
                Some(17) => (f[17], f[18]),
                _ => ("", ""),
            };
            fr.sport = num(nth(sp, 0), "sport")?;
            fr.dport = num(nth(dp, 0), "dport")?;
        }
        frames.push(fr);
    }
    Ok(frames)
}
