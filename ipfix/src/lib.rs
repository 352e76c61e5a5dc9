//! IPFIX (RFC 7011) export of `wirelens.flow.v1` records, sans-IO: records
//! go in, finished IPFIX Messages (bytes) come out; the caller owns the
//! socket. Used by `wirelens analyze --ipfix` (one Data Record per finished
//! flow) and `wirelens run --ipfix` (one per flow delta per export tick).
//!
//! One Data Record is one biflow (RFC 5103): the forward direction is the
//! flow's client -> server, the IANA counters (`octetDeltaCount`, ...) are
//! that direction's and their reverse twins (PEN 29305) the server ->
//! client direction's; `biflowDirection` says the source is the initiator.
//! Two templates, one per address family ([`TEMPLATE_V4`], [`TEMPLATE_V6`]),
//! carry the same elements otherwise ([`elements`], docs/ipfix.md).
//!
//! Over UDP, templates are sent in the first message, then again every
//! [`EncoderConfig::template_every_messages`] messages and whenever
//! [`EncoderConfig::template_every_ns`] has passed (RFC 7011 section 8.1);
//! [`Encoder::templates_due`] tells an idle exporter when to send them
//! alone ([`Encoder::template_message`]). The sequence number of a message
//! is the number of Data Records sent before it in this stream (section 3.1).
#![forbid(unsafe_code)]

use std::net::IpAddr;

use wirelens_dataplane::report::{Direction, FlowRecord, Proto};

/// IPFIX version number in the message header.
pub const VERSION: u16 = 10;
/// Default largest message (bytes): fits a 1500-byte path with IP, UDP and
/// tunnel headers to spare.
pub const DEFAULT_MTU: usize = 1400;
/// RFC 5103's reverse information element PEN.
pub const REVERSE_PEN: u32 = 29305;
/// ntop's PEN (nProbe elements, shown by ntopng and Wireshark).
pub const NTOP_PEN: u32 = 35632;
/// The PEN wirelens' own elements are numbered under. wirelens has no IANA
/// PEN of its own: 32473 is the number RFC 5612 sets aside for examples and
/// documentation, so these elements cannot collide with a registered
/// vendor's. Collectors are told about them by docs/ipfix.md.
pub const WIRELENS_PEN: u32 = 32473;
/// Our reverse elements: the forward element's id with bit 14 set (RFC 5103
/// section 6.1's advice for enterprise elements, as YAF does).
pub const REVERSE_BIT: u16 = 0x4000;
/// Template ids: IPv4 and IPv6 flows.
pub const TEMPLATE_V4: u16 = 256;
pub const TEMPLATE_V6: u16 = 257;
/// "Not measured" in a 4-byte time element (an RTT with no sample, a
/// handshake not seen).
pub const UNKNOWN_U32: u32 = u32::MAX;
/// `protocolIdentifier` of a flow whose protocol number the record does not
/// carry (`proto: "other"`): 255, IANA's reserved value.
pub const PROTO_UNKNOWN: u8 = 255;

const HEADER_LEN: usize = 16;
const SET_HEADER_LEN: usize = 4;
const TEMPLATE_SET_ID: u16 = 2;

/// How a value is taken from a record.
#[derive(Clone, Copy)]
enum Get {
    SrcAddr,
    DstAddr,
    Num(fn(&FlowRecord) -> u64),
}

/// One information element of the templates.
#[derive(Clone, Copy)]
pub struct Element {
    /// IANA name, or ours (docs/ipfix.md).
    pub name: &'static str,
    /// Element id, without the enterprise bit.
    pub id: u16,
    /// 0: IANA; else the private enterprise number.
    pub pen: u32,
    /// Field length in bytes (0 for the addresses: 4 or 16 by template).
    pub len: u16,
    get: Get,
}

impl std::fmt::Debug for Element {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Element")
            .field("name", &self.name)
            .field("id", &self.id)
            .field("pen", &self.pen)
            .field("len", &self.len)
            .finish()
    }
}

const fn iana(name: &'static str, id: u16, len: u16, get: fn(&FlowRecord) -> u64) -> Element {
    Element {
        name,
        id,
        pen: 0,
        len,
        get: Get::Num(get),
    }
}

const fn ent(
    name: &'static str,
    pen: u32,
    id: u16,
    len: u16,
    get: fn(&FlowRecord) -> u64,
) -> Element {
    Element {
        name,
        id,
        pen,
        len,
        get: Get::Num(get),
    }
}

fn proto_number(r: &FlowRecord) -> u64 {
    match r.proto {
        Proto::Tcp => 6,
        Proto::Udp => 17,
        Proto::Icmp if r.client.ip.is_ipv6() => 58,
        Proto::Icmp => 1,
        Proto::Other => u64::from(PROTO_UNKNOWN),
    }
}

fn ms(ns: u64) -> u64 {
    ns / 1_000_000
}

/// A duration in microseconds in 4 bytes; `None` is [`UNKNOWN_U32`].
fn us32(ns: Option<u64>) -> u64 {
    match ns {
        Some(v) => (v / 1000).min(u64::from(UNKNOWN_U32 - 1)),
        None => u64::from(UNKNOWN_U32),
    }
}

/// nProbe's network latency: half a round trip, in whole milliseconds, in
/// 4 bytes (0: not measured, nProbe's convention).
fn half_rtt_ms32(ns: Option<u64>) -> u64 {
    ns.map_or(0, |v| ms(v / 2).min(u64::from(u32::MAX)))
}

/// TCP flags seen going one way, from the record's counters: SYN, FIN and
/// RST when any such packet was counted, ACK when any packet other than a
/// bare SYN was (every segment after the SYN carries ACK).
fn tcp_bits(r: &FlowRecord, d: &Direction) -> u64 {
    if r.proto != Proto::Tcp || d.packets == 0 {
        return 0;
    }
    let mut b = 0;
    if d.fin > 0 {
        b |= 0x01;
    }
    if d.syn > 0 || d.synack > 0 {
        b |= 0x02;
    }
    if d.rst > 0 {
        b |= 0x04;
    }
    if d.packets > d.syn {
        b |= 0x10;
    }
    b
}

/// tap -> client -> tap: the handshake's SYN/ACK -> ACK, else the median RTT of
/// the server's data (tap -> client -> tap).
fn client_latency(r: &FlowRecord) -> Option<u64> {
    r.tcp
        .as_ref()
        .and_then(|t| t.handshake.as_ref())
        .and_then(|h| h.synack_to_ack_ns)
        .or(r.s2c.rtt.p50_ns)
}

/// tap -> server -> tap: the handshake's SYN -> SYN/ACK, else the median RTT of
/// the client's data.
fn server_latency(r: &FlowRecord) -> Option<u64> {
    r.tcp
        .as_ref()
        .and_then(|t| t.handshake.as_ref())
        .and_then(|h| h.syn_to_synack_ns)
        .or(r.c2s.rtt.p50_ns)
}

fn handshake(r: &FlowRecord) -> Option<&wirelens_dataplane::report::Handshake> {
    r.tcp.as_ref().and_then(|t| t.handshake.as_ref())
}

fn c32(v: u64) -> u64 {
    v.min(u64::from(u32::MAX))
}

/// The per-direction wirelens elements: forward (client -> server) with
/// `id`, reverse with `id | REVERSE_BIT`.
macro_rules! per_dir {
    ($fwd:ident, $rev:ident, $( ($name:literal, $id:literal, $len:literal, |$d:ident| $e:expr) ),* $(,)?) => {
        const $fwd: &[Element] = &[
            $( ent(concat!("c2s", $name), WIRELENS_PEN, $id, $len, |r| { let $d = &r.c2s; $e }) ),*
        ];
        const $rev: &[Element] = &[
            $( ent(concat!("s2c", $name), WIRELENS_PEN, $id | REVERSE_BIT, $len, |r| { let $d = &r.s2c; $e }) ),*
        ];
    };
}

per_dir!(
    DIR_FWD,
    DIR_REV,
    ("RttSamples", 1, 4, |d| c32(d.rtt.n)),
    ("RttMinMicroseconds", 2, 4, |d| us32(d.rtt.min_ns)),
    ("RttP50Microseconds", 3, 4, |d| us32(d.rtt.p50_ns)),
    ("RttP90Microseconds", 4, 4, |d| us32(d.rtt.p90_ns)),
    ("RttP99Microseconds", 5, 4, |d| us32(d.rtt.p99_ns)),
    ("RttMaxMicroseconds", 6, 4, |d| us32(d.rtt.max_ns)),
    ("LossAfterTapPackets", 7, 8, |d| d.retrans_seen),
    ("LossBeforeTapPackets", 8, 8, |d| d.hole_fill),
    ("RetransmittedPackets", 9, 8, |d| d.retransmits),
    ("OutOfOrderPackets", 10, 8, |d| d.out_of_order),
    ("ZeroWindowMicroseconds", 11, 8, |d| d.zero_window_ns / 1000),
    ("ZeroWindowEvents", 12, 8, |d| d.zero_window_events),
    ("SequenceGaps", 13, 8, |d| d.gaps),
);

/// The elements every template carries, in order: the IANA and reverse
/// ones, then nProbe's, then wirelens' per-direction and per-flow ones.
pub fn elements() -> impl Iterator<Item = &'static Element> {
    HEAD.iter()
        .chain(NTOP.iter())
        .chain(DIR_FWD.iter())
        .chain(DIR_REV.iter())
        .chain(FLOW.iter())
}

const HEAD: &[Element] = &[
    Element {
        name: "sourceIPvXAddress",
        id: 0,
        pen: 0,
        len: 0,
        get: Get::SrcAddr,
    },
    Element {
        name: "destinationIPvXAddress",
        id: 0,
        pen: 0,
        len: 0,
        get: Get::DstAddr,
    },
    iana("sourceTransportPort", 7, 2, |r| u64::from(r.client.port)),
    iana("destinationTransportPort", 11, 2, |r| {
        u64::from(r.server.port)
    }),
    iana("protocolIdentifier", 4, 1, proto_number),
    iana("vlanId", 58, 2, |r| u64::from(r.vlan.unwrap_or(0))),
    iana("flowStartMilliseconds", 152, 8, |r| ms(r.first_ns)),
    iana("flowEndMilliseconds", 153, 8, |r| ms(r.last_ns)),
    iana("octetDeltaCount", 1, 8, |r| r.c2s.bytes),
    iana("packetDeltaCount", 2, 8, |r| r.c2s.packets),
    iana("tcpControlBits", 6, 2, |r| tcp_bits(r, &r.c2s)),
    ent("reverseOctetDeltaCount", REVERSE_PEN, 1, 8, |r| r.s2c.bytes),
    ent("reversePacketDeltaCount", REVERSE_PEN, 2, 8, |r| {
        r.s2c.packets
    }),
    ent("reverseTcpControlBits", REVERSE_PEN, 6, 2, |r| {
        tcp_bits(r, &r.s2c)
    }),
    // 1: the source (client) is the initiator.
    iana("biflowDirection", 239, 1, |_| 1),
];

const NTOP: &[Element] = &[
    ent("CLIENT_NW_LATENCY_MS", NTOP_PEN, 123, 4, |r| {
        half_rtt_ms32(client_latency(r))
    }),
    ent("SERVER_NW_LATENCY_MS", NTOP_PEN, 124, 4, |r| {
        half_rtt_ms32(server_latency(r))
    }),
    ent("RETRANSMITTED_IN_PKTS", NTOP_PEN, 109, 4, |r| {
        c32(r.c2s.retransmits)
    }),
    ent("RETRANSMITTED_OUT_PKTS", NTOP_PEN, 110, 4, |r| {
        c32(r.s2c.retransmits)
    }),
    ent("OOORDER_IN_PKTS", NTOP_PEN, 111, 4, |r| {
        c32(r.c2s.out_of_order)
    }),
    ent("OOORDER_OUT_PKTS", NTOP_PEN, 112, 4, |r| {
        c32(r.s2c.out_of_order)
    }),
];

const FLOW: &[Element] = &[
    ent("pathMtu", WIRELENS_PEN, 20, 4, |r| {
        r.pmtu.as_ref().and_then(|p| p.mtu).map_or(0, u64::from)
    }),
    ent("connectMicroseconds", WIRELENS_PEN, 21, 4, |r| {
        us32(handshake(r).and_then(|h| h.connect_ns))
    }),
    ent("synToSynAckMicroseconds", WIRELENS_PEN, 22, 4, |r| {
        us32(handshake(r).and_then(|h| h.syn_to_synack_ns))
    }),
    ent("synAckToAckMicroseconds", WIRELENS_PEN, 23, 4, |r| {
        us32(handshake(r).and_then(|h| h.synack_to_ack_ns))
    }),
];

/// (IANA id, length) of the address elements of a template.
fn addr_ids(v6: bool, src: bool) -> (u16, u16) {
    match (v6, src) {
        (false, true) => (8, 4),
        (false, false) => (12, 4),
        (true, true) => (27, 16),
        (true, false) => (28, 16),
    }
}

/// The data record length of a template.
fn record_len(v6: bool) -> usize {
    elements()
        .map(|e| match e.get {
            Get::SrcAddr | Get::DstAddr => usize::from(addr_ids(v6, true).1),
            Get::Num(_) => usize::from(e.len),
        })
        .sum()
}

/// The template set (both templates).
fn template_set() -> Vec<u8> {
    let mut s = Vec::with_capacity(1024);
    s.extend_from_slice(&TEMPLATE_SET_ID.to_be_bytes());
    s.extend_from_slice(&[0, 0]);
    for (tid, v6) in [(TEMPLATE_V4, false), (TEMPLATE_V6, true)] {
        s.extend_from_slice(&tid.to_be_bytes());
        let n = elements().count() as u16;
        s.extend_from_slice(&n.to_be_bytes());
        for e in elements() {
            let (id, len) = match e.get {
                Get::SrcAddr => addr_ids(v6, true),
                Get::DstAddr => addr_ids(v6, false),
                Get::Num(_) => (e.id, e.len),
            };
            if e.pen == 0 {
                s.extend_from_slice(&id.to_be_bytes());
                s.extend_from_slice(&len.to_be_bytes());
            } else {
                s.extend_from_slice(&(id | 0x8000).to_be_bytes());
                s.extend_from_slice(&len.to_be_bytes());
                s.extend_from_slice(&e.pen.to_be_bytes());
            }
        }
    }
    let len = s.len() as u16;
    s[2..4].copy_from_slice(&len.to_be_bytes());
    s
}

fn put_record(out: &mut Vec<u8>, r: &FlowRecord) {
    for e in elements() {
        match e.get {
            Get::SrcAddr => put_ip(out, r.client.ip),
            Get::DstAddr => put_ip(out, r.server.ip),
            Get::Num(f) => {
                let v = f(r);
                match e.len {
                    1 => out.push(v.min(0xff) as u8),
                    2 => out.extend_from_slice(&(v.min(0xffff) as u16).to_be_bytes()),
                    4 => out.extend_from_slice(&(v.min(0xffff_ffff) as u32).to_be_bytes()),
                    _ => out.extend_from_slice(&v.to_be_bytes()),
                }
            }
        }
    }
}

fn put_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
    }
}

/// Exporter settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncoderConfig {
    /// Observation Domain ID in every message header.
    pub domain_id: u32,
    /// Largest message in bytes.
    pub mtu: usize,
    /// Templates go again with every this many messages (0: never by count).
    pub template_every_messages: u32,
    /// ... and once this much time has passed since they last went (ns).
    pub template_every_ns: u64,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        EncoderConfig {
            domain_id: 0,
            mtu: DEFAULT_MTU,
            template_every_messages: 100,
            template_every_ns: 30 * 1_000_000_000,
        }
    }
}

/// Settings an encoder cannot work with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("IPFIX MTU {mtu} is too small: the templates and one record need {need} bytes")]
    MtuTooSmall { mtu: usize, need: usize },
}

/// What an encoder has produced so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncoderStats {
    pub messages: u64,
    pub records: u64,
    pub template_sets: u64,
    pub bytes: u64,
    /// Records that no template fits (client and server of different
    /// address families).
    pub skipped: u64,
}

/// One finished IPFIX Message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub bytes: Vec<u8>,
    /// Data Records in it.
    pub records: u32,
}

/// Builds IPFIX messages from flow records; see the [crate documentation](crate).
#[derive(Debug)]
pub struct Encoder {
    cfg: EncoderConfig,
    templates: Vec<u8>,
    /// The message being filled: header placeholder, maybe templates, and
    /// the open data set (template id, offset of its header).
    buf: Vec<u8>,
    open_set: Option<(u16, usize)>,
    records_in_buf: u32,
    /// Data records in finished messages (the next header's sequence).
    sequence: u32,
    messages_since_templates: u32,
    templates_sent_ns: Option<u64>,
    stats: EncoderStats,
}

impl Encoder {
    pub fn new(cfg: EncoderConfig) -> Result<Encoder, ConfigError> {
        let templates = template_set();
        let need = HEADER_LEN + templates.len() + SET_HEADER_LEN + record_len(true);
        if cfg.mtu < need {
            return Err(ConfigError::MtuTooSmall { mtu: cfg.mtu, need });
        }
        Ok(Encoder {
            cfg,
            templates,
            buf: Vec::new(),
            open_set: None,
            records_in_buf: 0,
            sequence: 0,
            messages_since_templates: 0,
            templates_sent_ns: None,
            stats: EncoderStats::default(),
        })
    }

    pub fn config(&self) -> &EncoderConfig {
        &self.cfg
    }

    pub fn stats(&self) -> EncoderStats {
        self.stats
    }

    /// Whether the next message must carry the templates.
    pub fn templates_due(&self, now_ns: u64) -> bool {
        match self.templates_sent_ns {
            None => true,
            Some(t) => {
                (self.cfg.template_every_messages > 0
                    && self.messages_since_templates >= self.cfg.template_every_messages)
                    || now_ns.saturating_sub(t) >= self.cfg.template_every_ns
            }
        }
    }

    /// Adds one flow as a data record; returns the message it closed when
    /// it did not fit in the one being filled.
    pub fn push(&mut self, rec: &FlowRecord, now_ns: u64) -> Option<Message> {
        let v6 = rec.client.ip.is_ipv6() || rec.server.ip.is_ipv6();
        if v6 && (rec.client.ip.is_ipv4() || rec.server.ip.is_ipv4()) {
            // Mixed families do not come out of the engine; counted, not sent.
            self.stats.skipped += 1;
            return None;
        }
        let tid = if v6 { TEMPLATE_V6 } else { TEMPLATE_V4 };
        let rlen = record_len(v6);
        let mut closed = None;
        if !self.buf.is_empty() {
            let extra = if self.open_set.is_some_and(|(t, _)| t == tid) {
                rlen
            } else {
                SET_HEADER_LEN + rlen
            };
            if self.buf.len() + extra > self.cfg.mtu {
                closed = self.flush(now_ns);
            }
        }
        if self.buf.is_empty() {
            self.start(now_ns);
        }
        if self.open_set.is_none_or(|(t, _)| t != tid) {
            self.close_set();
            let at = self.buf.len();
            self.buf.extend_from_slice(&tid.to_be_bytes());
            self.buf.extend_from_slice(&[0, 0]);
            self.open_set = Some((tid, at));
        }
        put_record(&mut self.buf, rec);
        self.records_in_buf += 1;
        closed
    }

    /// Closes the message being filled, if any, and returns it.
    pub fn flush(&mut self, now_ns: u64) -> Option<Message> {
        if self.buf.is_empty() {
            return None;
        }
        self.close_set();
        let len = self.buf.len() as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
        self.buf[4..8].copy_from_slice(&((now_ns / 1_000_000_000) as u32).to_be_bytes());
        self.buf[8..12].copy_from_slice(&self.sequence.to_be_bytes());
        let records = self.records_in_buf;
        self.sequence = self.sequence.wrapping_add(records);
        self.stats.records += u64::from(records);
        self.stats.messages += 1;
        self.stats.bytes += u64::from(len);
        self.records_in_buf = 0;
        Some(Message {
            bytes: std::mem::take(&mut self.buf),
            records,
        })
    }

    /// A message of the templates alone, for an exporter with nothing else
    /// to send when [`Encoder::templates_due`] (the message being filled,
    /// if any, is closed first and returned before it).
    pub fn template_message(&mut self, now_ns: u64) -> Vec<Message> {
        let mut out: Vec<Message> = self.flush(now_ns).into_iter().collect();
        self.templates_sent_ns = None;
        self.start(now_ns);
        out.extend(self.flush(now_ns));
        out
    }

    fn start(&mut self, now_ns: u64) {
        self.buf.clear();
        self.buf.extend_from_slice(&VERSION.to_be_bytes());
        self.buf.extend_from_slice(&[0; 10]);
        self.buf
            .extend_from_slice(&self.cfg.domain_id.to_be_bytes());
        if self.templates_due(now_ns) {
            self.buf.extend_from_slice(&self.templates);
            self.templates_sent_ns = Some(now_ns);
            self.messages_since_templates = 0;
            self.stats.template_sets += 1;
        }
        self.messages_since_templates += 1;
        self.open_set = None;
    }

    fn close_set(&mut self) {
        if let Some((_, at)) = self.open_set.take() {
            let len = (self.buf.len() - at) as u16;
            self.buf[at + 2..at + 4].copy_from_slice(&len.to_be_bytes());
        }
    }
}

pub mod udp;

#[cfg(test)]
mod tests;
