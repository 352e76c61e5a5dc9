//! Report bodies on the wire: `wirelens.report.v1` as JSON (plain, gzip or
//! zstd) and the compact binary encoding nodes push by default.
//!
//! The compact encoding ([`COMPACT_CONTENT_TYPE`]) carries exactly the
//! [`NodeReport`] the JSON does, field for field, so both decode to equal
//! values. Layout (all integers LEB128 varints unless said otherwise):
//!
//! ```text
//! magic "WLR1" (4 bytes)
//! schema str, version, node str, instance, seq, sent_ns,
//! meta {version str, mode str, source str, hostname opt-str},
//! dropped_reports, dropped_flows,
//! n_flows, flow * n_flows, n_probes, probe * n_probes
//! ```
//!
//! A flow delta is a flag word (first, vlan/tcp/pmtu/histograms present,
//! `type`/`schema` not the usual ones), then times as zig-zag differences
//! (`at_ns` from the previous delta's, `first_ns` from `at_ns`, `last_ns` from
//! `first_ns`), proto, the two endpoints, and each [`Direction`] as a bitmap
//! of its non-zero counters followed by only those counters. RTT histograms
//! travel as their buckets in the histogram's own serde form (postcard),
//! which is validated on decoding like the JSON form. zstd on top removes
//! what repeats between flows (addresses, ports, similar counters).
//!
//! [`decode`] takes what the HTTP request said (`Content-Type`,
//! `Content-Encoding`) and guards the control plane: decompression stops at
//! `max_decoded_bytes` (413), counts are checked against the bytes that are
//! left before anything is allocated (400), and a report holds at most
//! [`MAX_FLOWS_PER_REPORT`] flows and [`MAX_PROBES_PER_REPORT`] probe windows
//! (413). [`CodecError::status`] names the HTTP status that fits each error.
#![forbid(unsafe_code)]

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use wirelens_dataplane::report::{
    Burst, Direction, Endpoint, FlowRecord, Handshake, Hol, PerSide, Pmtu, Proto, Rtt, Side,
    TcpInfo, TcpPath, TcpState, Ttl, FLOW_SCHEMA,
};
use wirelens_dataplane::stats::Histogram;

use crate::report::{
    FlowDelta, NodeMeta, NodeReport, ProbeState, ProbeWindow, MAX_FLOWS_PER_REPORT,
    MAX_PROBES_PER_REPORT,
};

/// `Content-Type` of the compact binary encoding.
pub const COMPACT_CONTENT_TYPE: &str = "application/vnd.wirelens.report.v1+binary";
/// `Content-Type` of report.v1 JSON.
pub const JSON_CONTENT_TYPE: &str = "application/json";
/// First bytes of a compact body (after decompression).
pub const COMPACT_MAGIC: &[u8; 4] = b"WLR1";
/// zstd level nodes compress with: level 3 (zstd's default) costs about as
/// much CPU as the JSON serialisation it replaces.
pub const ZSTD_LEVEL: i32 = 3;

/// How a report is put on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// report.v1 JSON, uncompressed.
    Json,
    /// report.v1 JSON, `Content-Encoding: gzip`.
    JsonGzip,
    /// report.v1 JSON, `Content-Encoding: zstd`.
    JsonZstd,
    /// The compact encoding, `Content-Encoding: zstd` (what nodes push).
    Compact,
    /// The compact encoding, uncompressed (for measurements and debugging).
    CompactPlain,
}

impl Encoding {
    /// Every encoding, for tests and measurements.
    pub const ALL: [Encoding; 5] = [
        Encoding::Json,
        Encoding::JsonGzip,
        Encoding::JsonZstd,
        Encoding::Compact,
        Encoding::CompactPlain,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Encoding::Json => "json",
            Encoding::JsonGzip => "json+gzip",
            Encoding::JsonZstd => "json+zstd",
            Encoding::Compact => "compact+zstd",
            Encoding::CompactPlain => "compact",
        }
    }
}

/// Why a body could not be decoded; [`CodecError::status`] is the HTTP answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    /// A `Content-Type` this control plane does not read (415).
    #[error(
        "content type {0:?} is not a report: send {JSON_CONTENT_TYPE} or {COMPACT_CONTENT_TYPE}"
    )]
    UnknownType(String),
    /// A `Content-Encoding` this control plane does not read (415).
    #[error("content encoding {0:?} is not supported: use gzip, zstd or none")]
    UnknownEncoding(String),
    /// The body is not what its headers say (400).
    #[error("malformed report: {0}")]
    Corrupt(String),
    /// The decompressed body, or the report it holds, is larger than allowed (413).
    #[error("report too large: {0}")]
    TooLarge(String),
}

impl CodecError {
    /// The HTTP status that fits: 415, 400 or 413.
    pub fn status(&self) -> u16 {
        match self {
            CodecError::UnknownType(_) | CodecError::UnknownEncoding(_) => 415,
            CodecError::Corrupt(_) => 400,
            CodecError::TooLarge(_) => 413,
        }
    }
}

/// Encodes `r`: `(Content-Type, Content-Encoding, body)`.
pub fn encode(r: &NodeReport, enc: Encoding) -> (&'static str, Option<&'static str>, Vec<u8>) {
    let body = match enc {
        Encoding::Json => json(r),
        Encoding::JsonGzip => gzip(&json(r)),
        Encoding::JsonZstd => zstd_bytes(&json(r)),
        Encoding::Compact => zstd_bytes(&encode_compact(r)),
        Encoding::CompactPlain => encode_compact(r),
    };
    let (ct, ce) = headers(enc);
    (ct, ce, body)
}

/// `(Content-Type, Content-Encoding)` of `enc`.
pub fn headers(enc: Encoding) -> (&'static str, Option<&'static str>) {
    match enc {
        Encoding::Json => (JSON_CONTENT_TYPE, None),
        Encoding::JsonGzip => (JSON_CONTENT_TYPE, Some("gzip")),
        Encoding::JsonZstd => (JSON_CONTENT_TYPE, Some("zstd")),
        Encoding::Compact => (COMPACT_CONTENT_TYPE, Some("zstd")),
        Encoding::CompactPlain => (COMPACT_CONTENT_TYPE, None),
    }
}

fn json(r: &NodeReport) -> Vec<u8> {
    // A NodeReport has string keys only and no non-finite floats: serde_json
    // cannot fail on it.
    serde_json::to_vec(r).unwrap_or_default()
}

fn gzip(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(
        Vec::with_capacity(b.len() / 4),
        flate2::Compression::default(),
    );
    // Writing into a Vec cannot fail.
    let _ = e.write_all(b);
    e.finish().unwrap_or_default()
}

fn zstd_bytes(b: &[u8]) -> Vec<u8> {
    // In-memory compression fails only on allocation failure.
    zstd::bulk::compress(b, ZSTD_LEVEL).unwrap_or_default()
}

/// Decodes a report body by its headers. `content_type` `None` is JSON (as
/// older nodes and `curl -d` send it); parameters (`; charset=utf-8`) are
/// ignored. `max_decoded_bytes` bounds the body after decompression.
pub fn decode(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    body: &[u8],
    max_decoded_bytes: usize,
) -> Result<NodeReport, CodecError> {
    let compact = match content_type.map(media_type) {
        None => false,
        Some(t) if t.eq_ignore_ascii_case(JSON_CONTENT_TYPE) => false,
        Some(t) if t.eq_ignore_ascii_case(COMPACT_CONTENT_TYPE) => true,
        Some(t) => return Err(CodecError::UnknownType(clip(t))),
    };
    let plain = decompress(content_encoding, body, max_decoded_bytes)?;
    if compact {
        decode_compact(&plain)
    } else {
        serde_json::from_slice(&plain).map_err(|e| CodecError::Corrupt(e.to_string()))
    }
}

fn media_type(t: &str) -> &str {
    t.split(';').next().unwrap_or_default().trim()
}

fn clip(s: &str) -> String {
    s.chars().take(100).collect()
}

/// The body after its `Content-Encoding`, at most `max` bytes.
fn decompress<'a>(
    encoding: Option<&str>,
    body: &'a [u8],
    max: usize,
) -> Result<std::borrow::Cow<'a, [u8]>, CodecError> {
    let enc = encoding.map(str::trim).unwrap_or("identity");
    let too_large = || {
        CodecError::TooLarge(format!(
            "more than {max} bytes after {enc} decompression; send smaller reports"
        ))
    };
    let capped = |r: &mut dyn Read| -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::new();
        r.take((max as u64).saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|e| CodecError::Corrupt(format!("{enc} body: {e}")))?;
        if out.len() > max {
            return Err(too_large());
        }
        Ok(out)
    };
    if enc.is_empty() || enc.eq_ignore_ascii_case("identity") {
        if body.len() > max {
            return Err(too_large());
        }
        return Ok(std::borrow::Cow::Borrowed(body));
    }
    if enc.eq_ignore_ascii_case("gzip") || enc.eq_ignore_ascii_case("x-gzip") {
        let mut d = flate2::read::GzDecoder::new(body);
        return capped(&mut d).map(std::borrow::Cow::Owned);
    }
    if enc.eq_ignore_ascii_case("zstd") {
        let mut d = zstd::stream::read::Decoder::with_buffer(body)
            .map_err(|e| CodecError::Corrupt(format!("zstd body: {e}")))?;
        return capped(&mut d).map(std::borrow::Cow::Owned);
    }
    Err(CodecError::UnknownEncoding(clip(enc)))
}

// ---------------------------------------------------------------- encoding

/// The compact encoding of `r`, uncompressed.
pub fn encode_compact(r: &NodeReport) -> Vec<u8> {
    let mut w = Vec::with_capacity(64 + r.flows.len() * 64);
    w.extend_from_slice(COMPACT_MAGIC);
    put_str(&mut w, &r.schema);
    put(&mut w, u64::from(r.version));
    put_str(&mut w, &r.node);
    put(&mut w, r.instance);
    put(&mut w, r.seq);
    put(&mut w, r.sent_ns);
    put_str(&mut w, &r.meta.version);
    put_str(&mut w, &r.meta.mode);
    put_str(&mut w, &r.meta.source);
    put_opt_str(&mut w, r.meta.hostname.as_deref());
    put(&mut w, r.dropped_reports);
    put(&mut w, r.dropped_flows);
    put(&mut w, r.flows.len() as u64);
    let mut prev_at = r.sent_ns;
    for d in &r.flows {
        put_flow(&mut w, d, prev_at);
        prev_at = d.at_ns;
    }
    put(&mut w, r.probes.len() as u64);
    for p in &r.probes {
        put_probe(&mut w, p);
    }
    w
}

// Flag bits of a flow delta.
const F_FIRST: u64 = 1;
const F_VLAN: u64 = 1 << 1;
const F_TCP: u64 = 1 << 2;
const F_PMTU: u64 = 1 << 3;
const F_RTT_C2S: u64 = 1 << 4;
const F_RTT_S2C: u64 = 1 << 5;
/// `type` is not "flow": the text follows.
const F_KIND: u64 = 1 << 6;
/// `schema` is not [`FLOW_SCHEMA`]: the text follows.
const F_SCHEMA: u64 = 1 << 7;
/// The flow carries signs (head-of-line holes, TTL changes, TCP path and
/// middlebox flags): they follow the histograms. A flow without any is
/// encoded as before the signs existed, so older readers still read it.
const F_SIGNS: u64 = 1 << 8;
const F_ALL: u64 = (1 << 9) - 1;
/// Most TTL values a direction carries.
const MAX_TTL_VALUES: usize = 16;

fn put_flow(w: &mut Vec<u8>, d: &FlowDelta, prev_at: u64) {
    let f = &d.flow;
    let mut flags = 0;
    for (on, bit) in [
        (d.first, F_FIRST),
        (f.vlan.is_some(), F_VLAN),
        (f.tcp.is_some(), F_TCP),
        (f.pmtu.is_some(), F_PMTU),
        (d.rtt_c2s.is_some(), F_RTT_C2S),
        (d.rtt_s2c.is_some(), F_RTT_S2C),
        (f.kind != "flow", F_KIND),
        (f.schema != FLOW_SCHEMA, F_SCHEMA),
        (has_signs(f), F_SIGNS),
    ] {
        if on {
            flags |= bit;
        }
    }
    put(w, flags);
    if flags & F_KIND != 0 {
        put_str(w, &f.kind);
    }
    if flags & F_SCHEMA != 0 {
        put_str(w, &f.schema);
    }
    put_diff(w, d.at_ns, prev_at);
    put_diff(w, f.first_ns, d.at_ns);
    put_diff(w, f.last_ns, f.first_ns);
    w.push(match f.proto {
        Proto::Tcp => 0,
        Proto::Udp => 1,
        Proto::Icmp => 2,
        Proto::Other => 3,
    });
    put_endpoint(w, &f.client);
    put_endpoint(w, &f.server);
    if let Some(v) = f.vlan {
        put(w, u64::from(v));
    }
    put_direction(w, &f.c2s);
    put_direction(w, &f.s2c);
    if let Some(t) = &f.tcp {
        put_tcp(w, t);
    }
    if let Some(p) = &f.pmtu {
        put(w, p.icmp_errors);
        put_opt(w, p.mtu.map(u64::from));
    }
    for h in [&d.rtt_c2s, &d.rtt_s2c].into_iter().flatten() {
        put_hist(w, h);
    }
    if flags & F_SIGNS != 0 {
        put_signs(w, f);
    }
}

/// Signs, as TCP bits: path one-way, MSS clamped (client, server), ECN
/// bleached (client, server).
fn tcp_sign_bits(t: &TcpInfo) -> u64 {
    u64::from(t.path == TcpPath::OneWay)
        | u64::from(t.mss_clamped.client) << 1
        | u64::from(t.mss_clamped.server) << 2
        | u64::from(t.ecn_bleached.client) << 3
        | u64::from(t.ecn_bleached.server) << 4
}

fn has_signs(f: &FlowRecord) -> bool {
    let dir = |d: &Direction| d.hol != Hol::default() || d.ttl != Ttl::default();
    dir(&f.c2s) || dir(&f.s2c) || f.tcp.as_ref().is_some_and(|t| tcp_sign_bits(t) != 0)
}

fn put_signs(w: &mut Vec<u8>, f: &FlowRecord) {
    for d in [&f.c2s, &f.s2c] {
        put(w, d.hol.holes);
        put_opt(w, d.hol.open_ns_max);
        put_opt(w, d.hol.open_ns_p99);
        put(w, d.hol.open_ns_total);
        put(w, d.ttl.changes);
        let values = &d.ttl.values[..d.ttl.values.len().min(MAX_TTL_VALUES)];
        put(w, values.len() as u64);
        w.extend_from_slice(values);
    }
    if let Some(t) = &f.tcp {
        put(w, tcp_sign_bits(t));
    }
}

fn put_endpoint(w: &mut Vec<u8>, e: &Endpoint) {
    match e.ip {
        IpAddr::V4(a) => {
            w.push(4);
            w.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            w.push(6);
            w.extend_from_slice(&a.octets());
        }
    }
    put(w, u64::from(e.port));
}

/// The counters of a [`Direction`] in wire order.
fn counters(d: &Direction) -> [u64; 23] {
    [
        d.packets,
        d.bytes,
        d.payload_bytes,
        d.syn,
        d.synack,
        d.fin,
        d.rst,
        d.retrans_seen,
        d.hole_fill,
        d.gaps,
        d.out_of_order,
        d.retransmits,
        d.fast_retransmits,
        d.spurious_retransmits,
        d.rto_retransmits,
        d.dup_acks,
        d.zero_window,
        d.zero_window_events,
        d.zero_window_ns,
        d.ecn_ce,
        d.frags,
        d.burst.max_packets_1ms,
        d.burst.max_bytes_1ms,
    ]
}

fn put_direction(w: &mut Vec<u8>, d: &Direction) {
    let c = counters(d);
    let mask = c
        .iter()
        .enumerate()
        .filter(|(_, v)| **v != 0)
        .fold(0u64, |m, (i, _)| m | 1 << i);
    put(w, mask);
    for v in c.into_iter().filter(|v| *v != 0) {
        put(w, v);
    }
    let r = &d.rtt;
    let opts = [
        r.min_ns, r.p50_ns, r.p90_ns, r.p99_ns, r.max_ns, r.mean_ns, r.last_ns,
    ];
    // Bit 7: n is not 0.
    let mask = opts
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_some())
        .fold(u64::from(r.n != 0) << 7, |m, (i, _)| m | 1 << i);
    put(w, mask);
    if r.n != 0 {
        put(w, r.n);
    }
    for v in opts.into_iter().flatten() {
        put(w, v);
    }
}

fn put_tcp(w: &mut Vec<u8>, t: &TcpInfo) {
    let state = match t.state {
        TcpState::SynSent => 0,
        TcpState::Established => 1,
        TcpState::Closed => 2,
        TcpState::Reset => 3,
        TcpState::Refused => 4,
        TcpState::TimedOut => 5,
    };
    let rst = match t.rst_from {
        None => 0,
        Some(Side::Client) => 1,
        Some(Side::Server) => 2,
    };
    // state (3 bits), rst_from (2), sack, ts, ecn, handshake present.
    let bits = state
        | rst << 3
        | u64::from(t.sack_ok) << 5
        | u64::from(t.ts_ok) << 6
        | u64::from(t.ecn_ok) << 7
        | u64::from(t.handshake.is_some()) << 8;
    put(w, bits);
    put_opt(w, t.mss.client.map(u64::from));
    put_opt(w, t.mss.server.map(u64::from));
    put_opt(w, t.wscale.client.map(u64::from));
    put_opt(w, t.wscale.server.map(u64::from));
    if let Some(h) = &t.handshake {
        put_opt(w, h.syn_to_synack_ns);
        put_opt(w, h.synack_to_ack_ns);
        put_opt(w, h.connect_ns);
        put(w, h.syn_count);
        put(w, h.synack_count);
    }
}

fn put_hist(w: &mut Vec<u8>, h: &Histogram) {
    // Serialising into a Vec fails only on allocation failure.
    if let Ok(v) = postcard::to_extend(h, std::mem::take(w)) {
        *w = v;
    }
}

fn put_probe(w: &mut Vec<u8>, p: &ProbeWindow) {
    put_str(w, &p.target);
    put(w, p.start_ns);
    put(w, p.end_ns);
    put(w, p.interval_ns);
    put(w, u64::from(p.size));
    put(w, u64::from(p.dscp));
    w.push(match p.state {
        ProbeState::Ok => 0,
        ProbeState::NoReply => 1,
        ProbeState::Refused => 2,
        ProbeState::Unreachable => 3,
        ProbeState::Error => 4,
    });
    put_opt_str(w, p.error.as_deref());
    for v in [
        p.sent,
        p.received,
        p.lost,
        p.lost_up,
        p.lost_down,
        p.lost_unattributed,
        p.late,
        p.duplicates,
        p.reordered,
    ] {
        put(w, v);
    }
    put_hist(w, &p.rtt);
    put_hist(w, &p.ipdv);
}

/// LEB128.
fn put(w: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        w.push(v as u8 | 0x80);
        v >>= 7;
    }
    w.push(v as u8);
}

/// `v - base` as a zig-zag varint (wrapping: any two u64 round-trip).
fn put_diff(w: &mut Vec<u8>, v: u64, base: u64) {
    let d = v.wrapping_sub(base) as i64;
    put(w, ((d << 1) ^ (d >> 63)) as u64);
}

/// `None` as 0, `Some(v)` as `v + 2`; the two largest values as the escape 1, then `v`.
fn put_opt(w: &mut Vec<u8>, v: Option<u64>) {
    match v {
        None => put(w, 0),
        Some(v) if v < u64::MAX - 1 => put(w, v + 2),
        Some(v) => {
            put(w, 1);
            put(w, v);
        }
    }
}

fn put_str(w: &mut Vec<u8>, s: &str) {
    put(w, s.len() as u64);
    w.extend_from_slice(s.as_bytes());
}

fn put_opt_str(w: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => put(w, 0),
        Some(s) => {
            put(w, s.len() as u64 + 1);
            w.extend_from_slice(s.as_bytes());
        }
    }
}

// ---------------------------------------------------------------- decoding

/// Decodes an uncompressed compact body.
pub fn decode_compact(b: &[u8]) -> Result<NodeReport, CodecError> {
    let mut r = Reader { b, pos: 0 };
    if r.bytes(4)? != COMPACT_MAGIC {
        return Err(CodecError::Corrupt(
            "not a compact report (magic is not WLR1)".into(),
        ));
    }
    let schema = r.string("schema")?;
    let version = r.u32("version")?;
    let node = r.string("node")?;
    let instance = r.get("instance")?;
    let seq = r.get("seq")?;
    let sent_ns = r.get("sent_ns")?;
    let meta = NodeMeta {
        version: r.string("meta.version")?,
        mode: r.string("meta.mode")?,
        source: r.string("meta.source")?,
        hostname: r.opt_string("meta.hostname")?,
    };
    let dropped_reports = r.get("dropped_reports")?;
    let dropped_flows = r.get("dropped_flows")?;
    // Each flow takes at least 12 bytes: a count beyond what is left is corrupt.
    let n = r.count("flows", 12, MAX_FLOWS_PER_REPORT)?;
    let mut flows = Vec::with_capacity(n);
    let mut prev_at = sent_ns;
    for i in 0..n {
        let d = r.flow(prev_at).map_err(|e| at_index(e, "flow delta", i))?;
        prev_at = d.at_ns;
        flows.push(d);
    }
    let n = r.count("probes", 20, MAX_PROBES_PER_REPORT)?;
    let mut probes = Vec::with_capacity(n);
    for i in 0..n {
        probes.push(r.probe().map_err(|e| at_index(e, "probe window", i))?);
    }
    if r.pos != b.len() {
        return Err(CodecError::Corrupt(format!(
            "{} bytes after the report",
            b.len() - r.pos
        )));
    }
    Ok(NodeReport {
        schema,
        version,
        node,
        instance,
        seq,
        sent_ns,
        meta,
        dropped_reports,
        dropped_flows,
        flows,
        probes,
    })
}

fn at_index(e: CodecError, what: &str, i: usize) -> CodecError {
    match e {
        CodecError::Corrupt(m) => CodecError::Corrupt(format!("{what} {i}: {m}")),
        other => other,
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

fn corrupt(m: impl Into<String>) -> CodecError {
    CodecError::Corrupt(m.into())
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.b.len() - self.pos
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if n > self.left() {
            return Err(corrupt(format!(
                "truncated: {n} bytes wanted at offset {}, {} left",
                self.pos,
                self.left()
            )));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn byte(&mut self, what: &str) -> Result<u8, CodecError> {
        let b = *self
            .b
            .get(self.pos)
            .ok_or_else(|| corrupt(format!("truncated at {what}")))?;
        self.pos += 1;
        Ok(b)
    }

    fn get(&mut self, what: &str) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte(what)?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                break;
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(corrupt(format!("{what}: varint longer than 64 bits")))
    }

    fn small<T: TryFrom<u64>>(&mut self, what: &str) -> Result<T, CodecError> {
        let v = self.get(what)?;
        T::try_from(v).map_err(|_| corrupt(format!("{what}: {v} out of range")))
    }

    fn u32(&mut self, what: &str) -> Result<u32, CodecError> {
        self.small(what)
    }

    fn diff(&mut self, base: u64, what: &str) -> Result<u64, CodecError> {
        let z = self.get(what)?;
        let d = ((z >> 1) as i64) ^ -((z & 1) as i64);
        Ok(base.wrapping_add(d as u64))
    }

    fn opt(&mut self, what: &str) -> Result<Option<u64>, CodecError> {
        Ok(match self.get(what)? {
            0 => None,
            1 => match self.get(what)? {
                v if v >= u64::MAX - 1 => Some(v),
                v => return Err(corrupt(format!("{what}: escape before {v}"))),
            },
            v => Some(v - 2),
        })
    }

    fn opt_small<T: TryFrom<u64>>(&mut self, what: &str) -> Result<Option<T>, CodecError> {
        match self.opt(what)? {
            None => Ok(None),
            Some(v) => T::try_from(v)
                .map(Some)
                .map_err(|_| corrupt(format!("{what}: {v} out of range"))),
        }
    }

    /// A length or count, at most `max`, with at least `min_each` bytes left per item.
    fn count(&mut self, what: &str, min_each: usize, max: usize) -> Result<usize, CodecError> {
        let n = self.get(what)?;
        if n > max as u64 {
            return Err(CodecError::TooLarge(format!(
                "{n} {what} in one report; at most {max}"
            )));
        }
        let n = n as usize;
        if n.saturating_mul(min_each) > self.left() {
            return Err(corrupt(format!(
                "{n} {what} announced, {} bytes left",
                self.left()
            )));
        }
        Ok(n)
    }

    fn text(&mut self, n: usize, what: &str) -> Result<String, CodecError> {
        let b = self.bytes(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| corrupt(format!("{what}: not UTF-8")))
    }

    fn string(&mut self, what: &str) -> Result<String, CodecError> {
        let n = self.count(what, 1, usize::MAX)?;
        self.text(n, what)
    }

    fn opt_string(&mut self, what: &str) -> Result<Option<String>, CodecError> {
        match self.count(what, 1, usize::MAX)? {
            0 => Ok(None),
            n => self.text(n - 1, what).map(Some),
        }
    }

    fn flow(&mut self, prev_at: u64) -> Result<FlowDelta, CodecError> {
        let flags = self.get("flags")?;
        if flags & !F_ALL != 0 {
            return Err(corrupt(format!("unknown flag bits {flags:#x}")));
        }
        let kind = if flags & F_KIND != 0 {
            self.string("type")?
        } else {
            "flow".to_string()
        };
        let schema = if flags & F_SCHEMA != 0 {
            self.string("schema")?
        } else {
            FLOW_SCHEMA.to_string()
        };
        let at_ns = self.diff(prev_at, "at_ns")?;
        let first_ns = self.diff(at_ns, "first_ns")?;
        let last_ns = self.diff(first_ns, "last_ns")?;
        let proto = match self.byte("proto")? {
            0 => Proto::Tcp,
            1 => Proto::Udp,
            2 => Proto::Icmp,
            3 => Proto::Other,
            p => return Err(corrupt(format!("proto {p}"))),
        };
        let client = self.endpoint()?;
        let server = self.endpoint()?;
        let vlan = if flags & F_VLAN != 0 {
            Some(self.small("vlan")?)
        } else {
            None
        };
        let c2s = self.direction()?;
        let s2c = self.direction()?;
        let tcp = if flags & F_TCP != 0 {
            Some(self.tcp()?)
        } else {
            None
        };
        let pmtu = if flags & F_PMTU != 0 {
            Some(Pmtu {
                icmp_errors: self.get("pmtu.icmp_errors")?,
                mtu: self.opt_small("pmtu.mtu")?,
            })
        } else {
            None
        };
        let rtt_c2s = if flags & F_RTT_C2S != 0 {
            Some(self.hist("rtt_c2s")?)
        } else {
            None
        };
        let rtt_s2c = if flags & F_RTT_S2C != 0 {
            Some(self.hist("rtt_s2c")?)
        } else {
            None
        };
        let (mut c2s, mut s2c, mut tcp) = (c2s, s2c, tcp);
        if flags & F_SIGNS != 0 {
            self.signs(&mut c2s, &mut s2c, tcp.as_mut())?;
        }
        Ok(FlowDelta {
            at_ns,
            first: flags & F_FIRST != 0,
            flow: FlowRecord {
                kind,
                schema,
                proto,
                client,
                server,
                vlan,
                first_ns,
                last_ns,
                c2s,
                s2c,
                tcp,
                pmtu,
            },
            rtt_c2s,
            rtt_s2c,
        })
    }

    fn signs(
        &mut self,
        c2s: &mut Direction,
        s2c: &mut Direction,
        tcp: Option<&mut TcpInfo>,
    ) -> Result<(), CodecError> {
        for d in [c2s, s2c] {
            d.hol = Hol {
                holes: self.get("hol.holes")?,
                open_ns_max: self.opt("hol.open_ns_max")?,
                open_ns_p99: self.opt("hol.open_ns_p99")?,
                open_ns_total: self.get("hol.open_ns_total")?,
            };
            let changes = self.get("ttl.changes")?;
            let n = self.get("ttl.values")?;
            if n > MAX_TTL_VALUES as u64 {
                return Err(corrupt(format!("{n} ttl.values; at most {MAX_TTL_VALUES}")));
            }
            let n = n as usize;
            d.ttl = Ttl {
                changes,
                values: self.bytes(n)?.to_vec(),
            };
        }
        if let Some(t) = tcp {
            let bits = self.get("tcp signs")?;
            if bits >> 5 != 0 {
                return Err(corrupt(format!("tcp sign bits {bits:#x}")));
            }
            t.path = if bits & 1 != 0 {
                TcpPath::OneWay
            } else {
                TcpPath::TwoWay
            };
            t.mss_clamped = PerSide {
                client: bits & 1 << 1 != 0,
                server: bits & 1 << 2 != 0,
            };
            t.ecn_bleached = PerSide {
                client: bits & 1 << 3 != 0,
                server: bits & 1 << 4 != 0,
            };
        }
        Ok(())
    }

    fn endpoint(&mut self) -> Result<Endpoint, CodecError> {
        let ip = match self.byte("address family")? {
            4 => {
                let b: [u8; 4] = self.bytes(4)?.try_into().unwrap_or_default();
                IpAddr::V4(Ipv4Addr::from(b))
            }
            6 => {
                let b: [u8; 16] = self.bytes(16)?.try_into().unwrap_or_default();
                IpAddr::V6(Ipv6Addr::from(b))
            }
            f => return Err(corrupt(format!("address family {f}"))),
        };
        Ok(Endpoint {
            ip,
            port: self.small("port")?,
        })
    }

    fn direction(&mut self) -> Result<Direction, CodecError> {
        let mask = self.get("counter mask")?;
        if mask >> 23 != 0 {
            return Err(corrupt(format!("counter mask {mask:#x}")));
        }
        let mut c = [0u64; 23];
        for (i, v) in c.iter_mut().enumerate() {
            if mask & 1 << i != 0 {
                *v = self.get("counter")?;
            }
        }
        let mask = self.get("rtt mask")?;
        if mask >> 8 != 0 {
            return Err(corrupt(format!("rtt mask {mask:#x}")));
        }
        let n = if mask & 1 << 7 != 0 {
            self.get("rtt.n")?
        } else {
            0
        };
        let mut o = [None; 7];
        for (i, v) in o.iter_mut().enumerate() {
            if mask & 1 << i != 0 {
                *v = Some(self.get("rtt")?);
            }
        }
        let [packets, bytes, payload_bytes, syn, synack, fin, rst, retrans_seen, hole_fill, gaps, out_of_order, retransmits, fast_retransmits, spurious_retransmits, rto_retransmits, dup_acks, zero_window, zero_window_events, zero_window_ns, ecn_ce, frags, max_packets_1ms, max_bytes_1ms] =
            c;
        let [min_ns, p50_ns, p90_ns, p99_ns, max_ns, mean_ns, last_ns] = o;
        Ok(Direction {
            packets,
            bytes,
            payload_bytes,
            syn,
            synack,
            fin,
            rst,
            retrans_seen,
            hole_fill,
            gaps,
            out_of_order,
            retransmits,
            fast_retransmits,
            spurious_retransmits,
            rto_retransmits,
            dup_acks,
            zero_window,
            zero_window_events,
            zero_window_ns,
            ecn_ce,
            frags,
            rtt: Rtt {
                n,
                min_ns,
                p50_ns,
                p90_ns,
                p99_ns,
                max_ns,
                mean_ns,
                last_ns,
            },
            burst: Burst {
                max_packets_1ms,
                max_bytes_1ms,
            },
            // Signs follow the flow's histograms ([`F_SIGNS`]).
            hol: Hol::default(),
            ttl: Ttl::default(),
        })
    }

    fn tcp(&mut self) -> Result<TcpInfo, CodecError> {
        let bits = self.get("tcp")?;
        if bits >> 9 != 0 {
            return Err(corrupt(format!("tcp bits {bits:#x}")));
        }
        let state = match bits & 7 {
            0 => TcpState::SynSent,
            1 => TcpState::Established,
            2 => TcpState::Closed,
            3 => TcpState::Reset,
            4 => TcpState::Refused,
            5 => TcpState::TimedOut,
            s => return Err(corrupt(format!("tcp state {s}"))),
        };
        let rst_from = match bits >> 3 & 3 {
            0 => None,
            1 => Some(Side::Client),
            2 => Some(Side::Server),
            _ => return Err(corrupt("tcp rst_from 3")),
        };
        let mss = PerSide {
            client: self.opt_small("mss")?,
            server: self.opt_small("mss")?,
        };
        let wscale = PerSide {
            client: self.opt_small("wscale")?,
            server: self.opt_small("wscale")?,
        };
        let handshake = if bits & 1 << 8 != 0 {
            Some(Handshake {
                syn_to_synack_ns: self.opt("handshake")?,
                synack_to_ack_ns: self.opt("handshake")?,
                connect_ns: self.opt("handshake")?,
                syn_count: self.get("handshake")?,
                synack_count: self.get("handshake")?,
            })
        } else {
            None
        };
        Ok(TcpInfo {
            handshake,
            state,
            rst_from,
            mss,
            wscale,
            sack_ok: bits & 1 << 5 != 0,
            ts_ok: bits & 1 << 6 != 0,
            ecn_ok: bits & 1 << 7 != 0,
            // Signs follow the flow's histograms ([`F_SIGNS`]).
            path: TcpPath::TwoWay,
            mss_clamped: PerSide::default(),
            ecn_bleached: PerSide::default(),
        })
    }

    fn hist(&mut self, what: &str) -> Result<Histogram, CodecError> {
        let rest = &self.b[self.pos..];
        let (h, left) = postcard::take_from_bytes::<Histogram>(rest)
            .map_err(|e| corrupt(format!("{what}: {e}")))?;
        self.pos += rest.len() - left.len();
        Ok(h)
    }

    fn probe(&mut self) -> Result<ProbeWindow, CodecError> {
        let target = self.string("target")?;
        let start_ns = self.get("start_ns")?;
        let end_ns = self.get("end_ns")?;
        let interval_ns = self.get("interval_ns")?;
        let size = self.small("size")?;
        let dscp = self.small("dscp")?;
        let state = match self.byte("state")? {
            0 => ProbeState::Ok,
            1 => ProbeState::NoReply,
            2 => ProbeState::Refused,
            3 => ProbeState::Unreachable,
            4 => ProbeState::Error,
            s => return Err(corrupt(format!("probe state {s}"))),
        };
        let error = self.opt_string("error")?;
        let mut c = [0u64; 9];
        for v in &mut c {
            *v = self.get("probe counter")?;
        }
        let [sent, received, lost, lost_up, lost_down, lost_unattributed, late, duplicates, reordered] =
            c;
        Ok(ProbeWindow {
            target,
            start_ns,
            end_ns,
            interval_ns,
            size,
            dscp,
            state,
            error,
            sent,
            received,
            lost,
            lost_up,
            lost_down,
            lost_unattributed,
            late,
            duplicates,
            reordered,
            rtt: self.hist("rtt")?,
            ipdv: self.hist("ipdv")?,
        })
    }
}

/// Bytes of `r` per flow delta in encoding `enc` (for measurements).
pub fn bytes_per_delta(r: &NodeReport, enc: Encoding) -> f64 {
    let (_, _, b) = encode(r, enc);
    b.len() as f64 / r.flows.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::window;

    fn sample() -> NodeReport {
        let mut r = NodeReport::new(
            "gw-1",
            1_795_000_000_000_000_000,
            7,
            1_795_000_010_000_000_000,
            NodeMeta {
                version: "0.1.0".into(),
                mode: "run".into(),
                source: "wlspan0".into(),
                hostname: Some("box".into()),
            },
        );
        r.dropped_reports = 3;
        r.dropped_flows = 1234;
        for i in 0..50u64 {
            let mut f = crate::testutil::flow(
                &format!("198.18.1.{}:{}", i % 250 + 1, 40_000 + i),
                "198.18.2.2:443",
                1_795_000_000_000_000_000 + i * 1000,
                1_795_000_009_000_000_000 + i,
            );
            f.c2s.rtt.p99_ns = Some(u64::MAX);
            f.c2s.retransmits = i;
            if i % 3 == 0 {
                f.vlan = Some(100);
                f.pmtu = Some(Pmtu {
                    icmp_errors: 2,
                    mtu: Some(1400),
                });
            }
            if i % 5 == 0 {
                f.client.ip = "2001:db8::1".parse().unwrap();
                f.proto = Proto::Udp;
                f.tcp = None;
            }
            if i == 7 {
                f.kind = "odd".into();
                f.schema = "x".into();
            }
            if i % 6 == 1 {
                f.c2s.hol = Hol {
                    holes: i,
                    open_ns_max: Some(250_000_000 + i),
                    open_ns_p99: Some(240_000_000),
                    open_ns_total: u64::MAX,
                };
                f.s2c.ttl = Ttl {
                    changes: 3,
                    values: vec![64, 61, 0, 255],
                };
            }
            if let (Some(t), 0..=2) = (f.tcp.as_mut(), i % 7) {
                t.path = TcpPath::OneWay;
                t.mss_clamped.server = i % 7 == 1;
                t.ecn_bleached.client = i % 7 == 2;
            }
            let mut d = FlowDelta::from_record(f);
            d.first = i % 2 == 0;
            if i % 4 == 0 {
                let mut h = Histogram::new();
                for v in [1, 999, 20_000_000, 20_100_000, u64::MAX] {
                    h.record(v.saturating_sub(i));
                }
                d.rtt_c2s = Some(h);
                d.rtt_s2c = Some(Histogram::new());
            }
            r.flows.push(d);
        }
        r.probes
            .push(window("198.18.2.2:862", 5, &[20_000_000, 21_000_000], 3, 1));
        let mut w = window("[2001:db8::2]:862", 9, &[], 0, 0);
        w.error = Some("no route".into());
        w.state = ProbeState::Unreachable;
        r.probes.push(w);
        r
    }

    #[test]
    fn every_encoding_round_trips() {
        let r = sample();
        for enc in Encoding::ALL {
            let (ct, ce, body) = encode(&r, enc);
            let back =
                decode(Some(ct), ce, &body, 64 << 20).unwrap_or_else(|e| panic!("{enc:?}: {e}"));
            assert_eq!(back, r, "{enc:?}");
        }
        // No Content-Type: JSON; parameters and case are ignored.
        let (_, _, body) = encode(&r, Encoding::Json);
        assert_eq!(decode(None, None, &body, 64 << 20).unwrap(), r);
        let t = "Application/JSON; charset=utf-8";
        assert_eq!(
            decode(Some(t), Some("identity"), &body, 64 << 20).unwrap(),
            r
        );
        // An empty report too.
        let e = NodeReport::new("n", 0, 0, 0, NodeMeta::default());
        let (ct, ce, body) = encode(&e, Encoding::Compact);
        assert_eq!(decode(Some(ct), ce, &body, 1 << 20).unwrap(), e);
    }

    /// A flow without signs is encoded as it was before they existed (so an
    /// older control plane reads it); one with them sets a flag bit that an
    /// older reader refuses with a 400, never misreads.
    #[test]
    fn signs_travel_only_with_the_flows_that_have_them() {
        let r = sample();
        let plain = r.flows.iter().filter(|d| !has_signs(&d.flow)).count();
        assert!(plain > 0 && plain < r.flows.len());
        for d in &r.flows {
            let mut w = Vec::new();
            put_flow(&mut w, d, 0);
            let flags = Reader { b: &w, pos: 0 }.get("flags").unwrap();
            assert_eq!(flags & F_SIGNS != 0, has_signs(&d.flow));
            assert_eq!(flags >> 9, 0);
        }
        // a corrupt sign is refused with a 400
        let mut one = NodeReport::new("n", 0, 0, 0, NodeMeta::default());
        one.flows
            .push(r.flows.iter().find(|d| has_signs(&d.flow)).unwrap().clone());
        one.flows[0].flow.c2s.ttl.values = vec![1; MAX_TTL_VALUES + 1];
        let body = encode_compact(&one);
        let back = decode_compact(&body).unwrap();
        assert_eq!(back.flows[0].flow.c2s.ttl.values.len(), MAX_TTL_VALUES);
    }

    #[test]
    fn compact_is_smaller_than_json() {
        let r = sample();
        let json = bytes_per_delta(&r, Encoding::Json);
        let gz = bytes_per_delta(&r, Encoding::JsonGzip);
        let compact = bytes_per_delta(&r, Encoding::Compact);
        assert!(compact < gz && gz < json, "{compact} {gz} {json}");
    }

    #[test]
    fn unknown_types_and_encodings_are_415() {
        let (_, _, body) = encode(&sample(), Encoding::Json);
        let e = decode(Some("text/plain"), None, &body, 1 << 20).unwrap_err();
        assert_eq!(e.status(), 415, "{e}");
        let e = decode(None, Some("br"), &body, 1 << 20).unwrap_err();
        assert_eq!(e.status(), 415, "{e}");
        let e = decode(None, Some("gzip, zstd"), &body, 1 << 20).unwrap_err();
        assert_eq!(e.status(), 415, "{e}");
    }

    #[test]
    fn every_truncation_is_a_400_not_a_panic() {
        let r = sample();
        let plain = encode_compact(&r);
        for cut in 0..plain.len() {
            let e = decode(Some(COMPACT_CONTENT_TYPE), None, &plain[..cut], 1 << 20).unwrap_err();
            assert_eq!(e.status(), 400, "cut at {cut}: {e}");
        }
        for enc in [Encoding::Compact, Encoding::JsonGzip, Encoding::JsonZstd] {
            let (ct, ce, body) = encode(&r, enc);
            for cut in [0, 1, body.len() / 2, body.len() - 1] {
                let e = decode(Some(ct), ce, &body[..cut], 1 << 20).unwrap_err();
                assert_eq!(e.status(), 400, "{enc:?} cut at {cut}: {e}");
            }
        }
        // Trailing bytes are corrupt too.
        let mut long = plain.clone();
        long.push(0);
        let e = decode(Some(COMPACT_CONTENT_TYPE), None, &long, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("after the report"), "{e}");
    }

    #[test]
    fn flipped_bytes_never_panic() {
        // Every byte of the body flipped in turn: an error or some report,
        // never a panic or a huge allocation.
        let plain = encode_compact(&sample());
        for i in 0..plain.len() {
            for x in [0x01, 0x80, 0xff] {
                let mut b = plain.clone();
                b[i] ^= x;
                let _ = decode(Some(COMPACT_CONTENT_TYPE), None, &b, 1 << 20);
            }
        }
    }

    #[test]
    fn bad_lengths_are_refused_before_allocating() {
        let mut w = Vec::new();
        w.extend_from_slice(COMPACT_MAGIC);
        put_str(&mut w, "wirelens.report.v1");
        put(&mut w, 1);
        // The node name claims 2^60 bytes.
        put(&mut w, 1 << 60);
        let e = decode_compact(&w).unwrap_err();
        assert_eq!(e.status(), 400, "{e}");
        // 90,000 flows announced in a few bytes.
        let mut r = NodeReport::new("n", 1, 0, 5, NodeMeta::default());
        r.flows.clear();
        let mut b = encode_compact(&r);
        // n_flows is the byte before n_probes (both 0 here).
        let at = b.len() - 2;
        b.truncate(at);
        put(&mut b, 90_000);
        put(&mut b, 0);
        let e = decode_compact(&b).unwrap_err();
        assert_eq!(e.status(), 400, "{e}");
        assert!(e.to_string().contains("90000 flows announced"), "{e}");
        // Over the per-report maximum: 413.
        b.truncate(at);
        put(&mut b, MAX_FLOWS_PER_REPORT as u64 + 1);
        let e = decode_compact(&b).unwrap_err();
        assert_eq!(e.status(), 413, "{e}");
        // A varint of 11 bytes.
        let mut v = COMPACT_MAGIC.to_vec();
        v.extend_from_slice(&[0xff; 11]);
        assert_eq!(decode_compact(&v).unwrap_err().status(), 400);
    }

    #[test]
    fn a_bad_histogram_is_refused_by_its_own_checks() {
        let mut r = NodeReport::new("n", 1, 0, 5, NodeMeta::default());
        let f = crate::testutil::flow("198.18.1.2:1", "198.18.2.2:80", 1, 2);
        let mut d = FlowDelta::from_record(f);
        let mut h = Histogram::new();
        h.record(1000);
        d.rtt_c2s = Some(h.clone());
        r.flows.push(d);
        let good = encode_compact(&r);
        let hb = postcard::to_allocvec(&h).unwrap();
        let at = good.len() - 1 - hb.len();
        assert_eq!(&good[at..good.len() - 1], &hb[..]);
        // sub_buckets (first byte of the histogram) 32 -> 16.
        let mut bad = good.clone();
        bad[at] = 16;
        assert_eq!(decode_compact(&good).unwrap(), r);
        let e = decode_compact(&bad).unwrap_err();
        assert!(e.to_string().contains("flow delta 0: rtt_c2s"), "{e}");
        assert_eq!(e.status(), 400);
        // count (second byte, after sub_buckets 32) 1 -> 2: the bucket total differs.
        let mut bad = good.clone();
        assert_eq!(bad[at + 1], 1);
        bad[at + 1] = 2;
        assert_eq!(decode_compact(&bad).unwrap_err().status(), 400);
    }

    #[test]
    fn decompression_bombs_stop_at_the_cap() {
        // 64 MiB of zeros compress to a few KB; the cap is 1 MiB.
        let zeros = vec![0u8; 64 << 20];
        for (ce, body) in [
            ("zstd", zstd::bulk::compress(&zeros, 3).unwrap()),
            ("gzip", gzip(&zeros)),
        ] {
            assert!(body.len() < 200_000, "{ce}: {}", body.len());
            let e = decode(Some(COMPACT_CONTENT_TYPE), Some(ce), &body, 1 << 20).unwrap_err();
            assert_eq!(e.status(), 413, "{ce}: {e}");
            let e = decode(None, Some(ce), &body, 1 << 20).unwrap_err();
            assert_eq!(e.status(), 413, "{ce}: {e}");
        }
        // Uncompressed over the cap.
        let (ct, ce, body) = encode(&sample(), Encoding::Json);
        let e = decode(Some(ct), ce, &body, body.len() - 1).unwrap_err();
        assert_eq!(e.status(), 413);
        assert!(decode(Some(ct), ce, &body, body.len()).is_ok());
        // Exactly at the cap after decompression is fine, one byte less is not.
        let (ct, ce, body) = encode(&sample(), Encoding::Compact);
        let n = encode_compact(&sample()).len();
        assert!(decode(Some(ct), ce, &body, n).is_ok());
        assert_eq!(
            decode(Some(ct), ce, &body, n - 1).unwrap_err().status(),
            413
        );
    }

    #[test]
    fn varints_and_diffs_round_trip_at_the_edges() {
        for v in [0, 1, 127, 128, 16_383, 16_384, u64::MAX - 1, u64::MAX] {
            let mut w = Vec::new();
            put(&mut w, v);
            put_opt(&mut w, Some(v));
            put_opt(&mut w, None);
            for base in [0, 1, v, u64::MAX] {
                put_diff(&mut w, v, base);
            }
            let mut r = Reader { b: &w, pos: 0 };
            assert_eq!(r.get("v").unwrap(), v);
            assert_eq!(r.opt("v").unwrap(), Some(v));
            assert_eq!(r.opt("v").unwrap(), None);
            for base in [0, 1, v, u64::MAX] {
                assert_eq!(r.diff(base, "d").unwrap(), v);
            }
            assert_eq!(r.left(), 0);
        }
    }
}
