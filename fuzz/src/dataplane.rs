//! Invariant checks of the dataplane's input paths, shared by the fuzz targets
//! (`fuzz/fuzz_targets/{wire_parse,engine,capture_reader}.rs`) and by
//! `cargo test` (`dataplane/tests/fuzz_regressions.rs`, which includes this
//! file with `#[path]`). Each `check_*` takes the raw fuzz input, never
//! panics on a correct engine, and panics with a message naming the broken
//! invariant otherwise.
//!
//! * [`check_wire_parse`]: byte 0 picks the link type, the rest is one frame.
//! * [`check_engine`]: a sequence of frames with arbitrary timestamps through
//!   one [`Engine`]; see [`EngineInput`] for the byte layout.
//! * [`check_capture`]: arbitrary bytes as a pcap/pcapng file.

use std::collections::BTreeMap;
use std::net::IpAddr;

use wirelens_dataplane::engine::{Engine, EngineConfig};
use wirelens_dataplane::flow::TableConfig;
use wirelens_dataplane::meta::{proto, Frag, PacketMeta};
use wirelens_dataplane::report::{Direction, FlowRecord, Proto, Summary, TcpTotals};
use wirelens_dataplane::source::pcap::MAX_CAPLEN;
use wirelens_dataplane::source::{CaptureReader, FrameSource};
use wirelens_dataplane::wire::{self, LinkType, ParseError};

/// Every link type the parser knows, in the order the selector byte picks them.
pub const LINKS: [LinkType; 8] = [
    LinkType::Ethernet,
    LinkType::Raw,
    LinkType::Ipv4,
    LinkType::Ipv6,
    LinkType::LinuxSll,
    LinkType::LinuxSll2,
    LinkType::Null,
    LinkType::Loop,
];

/// The fuzz input byte that selects `link` (inverse of the selector).
pub fn link_selector(link: LinkType) -> u8 {
    LINKS.iter().position(|l| *l == link).unwrap_or(0) as u8
}

// ---------------------------------------------------------------- wire::parse

/// wire_parse target: `data[0] % 8` picks the link type, `data[1..]` is the frame.
pub fn check_wire_parse(data: &[u8]) {
    if let Some((&sel, frame)) = data.split_first() {
        let _ = parse_checked(LINKS[usize::from(sel) % LINKS.len()], frame, 7);
    }
}

/// Parses `frame` twice (into a blank and into a junk-filled meta), checks
/// that both agree and, on success, every invariant of a parsed packet.
pub fn parse_checked(link: LinkType, frame: &[u8], ts: u64) -> Result<PacketMeta, ParseError> {
    let mut clean = PacketMeta {
        ts_ns: ts,
        ..PacketMeta::default()
    };
    let r = wire::parse(link, frame, &mut clean);
    // `parse` overwrites every field but `ts_ns`: stale state must not leak.
    let mut junk = PacketMeta {
        ts_ns: ts,
        sport: 0xdead,
        dport: 0xbeef,
        proto: 0xff,
        is_v6: true,
        vlan: Some(4095),
        ip_len: u32::MAX,
        payload_len: u32::MAX,
        ecn: 3,
        ttl: 0xff,
        frag: Frag::Later,
        frag_id: 0xffff_ffff,
        ..PacketMeta::default()
    };
    junk.icmp.mtu = Some(0);
    junk.tcp.opts.sack_n = 4;
    let r2 = wire::parse(link, frame, &mut junk);
    let ctx = || format!("{link:?} frame {frame:02x?}");
    assert_eq!(r, r2, "parse is not a function of the frame: {}", ctx());
    assert_eq!(clean.ts_ns, ts, "parse changed ts_ns: {}", ctx());
    assert_eq!(junk.ts_ns, ts, "parse changed ts_ns: {}", ctx());
    if r.is_ok() {
        assert_eq!(clean, junk, "parse kept stale fields: {}", ctx());
        check_meta(link, frame, &clean);
    }
    r.map(|()| clean)
}

/// What holds for every successfully parsed packet.
pub fn check_meta(link: LinkType, frame: &[u8], m: &PacketMeta) {
    let ctx = || format!("{link:?} frame {frame:02x?} -> {m:?}");
    assert!(m.payload_len <= m.ip_len, "payload_len > ip_len: {}", ctx());
    let min_ip = if m.is_v6 { 40 } else { 20 };
    assert!(m.ip_len >= min_ip, "ip_len under the IP header: {}", ctx());
    assert!(m.ecn <= 3, "ecn: {}", ctx());
    if let Some(v) = m.vlan {
        assert!(v > 0 && v < 4096, "vlan id {v}: {}", ctx());
    }
    if m.frag == Frag::None {
        assert_eq!(m.frag_id, 0, "frag_id without a fragment: {}", ctx());
    }
    let has_ports = m.frag != Frag::Later && (m.proto == proto::TCP || m.proto == proto::UDP);
    if !has_ports {
        assert_eq!((m.sport, m.dport), (0, 0), "ports where none: {}", ctx());
    }
    if !has_ports && m.frag != Frag::Later {
        assert_eq!(m.payload_len, 0, "payload without TCP/UDP: {}", ctx());
    }
    // The headers the lengths were derived from lie inside the captured frame:
    // for TCP/UDP (and later fragments) ip_len - payload_len is the IP (+ L4)
    // header length, which must have been read from the buffer.
    if has_ports || m.frag == Frag::Later {
        let hdr = (m.ip_len - m.payload_len) as usize;
        assert!(
            hdr <= frame.len(),
            "header length {hdr} beyond the {}-byte frame: {}",
            frame.len(),
            ctx()
        );
    }
    if !m.is_icmp() || m.frag == Frag::Later {
        assert_eq!(
            m.icmp,
            Default::default(),
            "ICMP fields on non-ICMP: {}",
            ctx()
        );
    }
    if m.proto != proto::TCP || m.frag == Frag::Later {
        assert_eq!(
            m.tcp,
            Default::default(),
            "TCP fields on non-TCP: {}",
            ctx()
        );
    }
    assert!(m.tcp.opts.sack_n <= 4, "sack_n: {}", ctx());
    assert_ne!(m.icmp.mtu, Some(0), "MTU 0: {}", ctx());
}

// ---------------------------------------------------------------- Engine

/// Layout of an engine fuzz input:
///
/// ```text
/// byte 0      link type selector (% 8, see LINKS)
/// byte 1      bits 0-3: table capacity 1..15, or 15 -> 4096 (more than an
///             input can fill; the default 1M would make every run allocate
///             a 64k-entry map);
///             bits 4-7: a summary is checked every (n + 1) frames
/// then records until the input ends:
///   ctl       bits 0-1 timestamp: 0 prev + b us, 1 prev + b s, 2 prev - b ms
///                      (b = next byte), 3 absolute u64 (next 8 bytes, LE)
///             bit 2    call poll_expired after the frame
///             bit 3    drain poll_record after the frame
///             bit 4    frame length is u16 LE (else one byte)
///   ...       timestamp bytes, length, then the frame bytes
///             (cut short when the input ends)
/// ```
#[derive(Debug)]
pub struct EngineInput<'a> {
    pub link: LinkType,
    pub capacity: usize,
    pub summary_every: usize,
    pub frames: Vec<(u64, &'a [u8], u8)>,
}

/// Start of fuzz time: 2023-11-14.
pub const T0: u64 = 1_700_000_000_000_000_000;

impl<'a> EngineInput<'a> {
    pub fn decode(data: &'a [u8]) -> Option<EngineInput<'a>> {
        let (&sel, rest) = data.split_first()?;
        let (&cfg, mut rest) = rest.split_first()?;
        let capacity = match cfg & 0x0f {
            15 => 4096,
            n => usize::from(n) + 1,
        };
        let mut frames = Vec::new();
        let mut ts = T0;
        let take = |rest: &mut &'a [u8], n: usize| -> &'a [u8] {
            let n = n.min(rest.len());
            let (a, b) = rest.split_at(n);
            *rest = b;
            a
        };
        while let Some((&ctl, r)) = rest.split_first() {
            rest = r;
            let b = |x: &[u8]| u64::from(x.first().copied().unwrap_or(0));
            ts = match ctl & 3 {
                0 => ts.saturating_add(b(take(&mut rest, 1)) * 1_000),
                1 => ts.saturating_add(b(take(&mut rest, 1)) * 1_000_000_000),
                2 => ts.saturating_sub(b(take(&mut rest, 1)) * 1_000_000),
                _ => {
                    let mut a = [0u8; 8];
                    let t = take(&mut rest, 8);
                    a[..t.len()].copy_from_slice(t);
                    u64::from_le_bytes(a)
                }
            };
            let len = if ctl & 0x10 != 0 {
                let l = take(&mut rest, 2);
                usize::from(l.first().copied().unwrap_or(0))
                    | usize::from(l.get(1).copied().unwrap_or(0)) << 8
            } else {
                b(take(&mut rest, 1)) as usize
            };
            frames.push((ts, take(&mut rest, len), ctl));
        }
        Some(EngineInput {
            link: LINKS[usize::from(sel) % LINKS.len()],
            capacity,
            summary_every: usize::from(cfg >> 4) + 1,
            frames,
        })
    }

    /// Encodes frames (timestamps in absolute form) into an input `decode`
    /// reads back; for seeds and tests.
    pub fn encode(link: LinkType, cfg: u8, frames: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let mut out = vec![link_selector(link), cfg];
        for (ts, f) in frames {
            out.push(3 | 0x10);
            out.extend_from_slice(&ts.to_le_bytes());
            let len = u16::try_from(f.len()).expect("frame under 64 KiB");
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(f);
        }
        out
    }
}

/// Packets and bytes per conversation as the harness computes them from its
/// own parse: (unordered address pair, protocol, VLAN) -> (packets, bytes).
/// Coarser than a flow (ports are left out: later fragments borrow the ports
/// of their first fragment), so it holds however flows were split.
type Groups = BTreeMap<(IpAddr, IpAddr, u8, Option<u16>), (u64, u64)>;

fn group_of(
    a: IpAddr,
    b: IpAddr,
    p: Proto,
    vlan: Option<u16>,
) -> (IpAddr, IpAddr, u8, Option<u16>) {
    let p = p as u8;
    if a <= b {
        (a, b, p, vlan)
    } else {
        (b, a, p, vlan)
    }
}

fn proto_of(p: u8) -> Proto {
    match p {
        proto::TCP => Proto::Tcp,
        proto::UDP => Proto::Udp,
        proto::ICMP | proto::ICMPV6 => Proto::Icmp,
        _ => Proto::Other,
    }
}

fn add_groups(g: &mut Groups, rec: &FlowRecord) {
    let e = g
        .entry(group_of(rec.client.ip, rec.server.ip, rec.proto, rec.vlan))
        .or_default();
    e.0 += rec.c2s.packets + rec.s2c.packets;
    e.1 += rec.c2s.bytes + rec.s2c.bytes;
}

/// What holds for every flow record.
pub fn check_record(r: &FlowRecord) {
    let ctx = || serde_json::to_string(r).unwrap_or_default();
    assert!(r.first_ns <= r.last_ns, "first_ns > last_ns: {}", ctx());
    assert!(
        r.c2s.packets + r.s2c.packets >= 1,
        "a flow without packets: {}",
        ctx()
    );
    for d in [&r.c2s, &r.s2c] {
        assert!(d.payload_bytes <= d.bytes, "payload > bytes: {}", ctx());
        assert!(
            d.bytes >= 20 * d.packets,
            "bytes under 20 per packet: {}",
            ctx()
        );
        for (name, n) in [
            ("syn", d.syn),
            ("synack", d.synack),
            ("fin", d.fin),
            ("rst", d.rst),
            ("frags", d.frags),
            ("zero_window", d.zero_window),
            ("ecn_ce", d.ecn_ce),
        ] {
            assert!(n <= d.packets, "{name} {n} > packets: {}", ctx());
        }
        assert!(
            d.burst.max_packets_1ms <= d.packets,
            "burst > packets: {}",
            ctx()
        );
        assert!(
            d.burst.max_bytes_1ms <= d.bytes,
            "burst bytes > bytes: {}",
            ctx()
        );
        let q = &d.rtt;
        match (q.min_ns, q.p50_ns, q.p90_ns, q.p99_ns, q.max_ns, q.mean_ns) {
            (None, None, None, None, None, None) => assert_eq!(q.n, 0, "rtt: {}", ctx()),
            (Some(a), Some(b), Some(c), Some(e), Some(f), Some(m)) => {
                assert!(q.n > 0, "rtt without samples: {}", ctx());
                assert!(a <= b && b <= c && c <= e && e <= f, "rtt order: {}", ctx());
                assert!(a <= m && m <= f, "rtt mean: {}", ctx());
            }
            _ => panic!("rtt fields partly null: {}", ctx()),
        }
    }
    let tcp_dir_zero = |d: &Direction| {
        d.syn + d.synack + d.fin + d.rst + d.retransmits + d.dup_acks + d.zero_window == 0
    };
    if r.proto != Proto::Tcp {
        assert!(r.tcp.is_none(), "tcp info on a non-TCP flow: {}", ctx());
        assert!(
            tcp_dir_zero(&r.c2s) && tcp_dir_zero(&r.s2c),
            "TCP counters on a non-TCP flow: {}",
            ctx()
        );
    }
    if matches!(r.proto, Proto::Icmp | Proto::Other) {
        assert_eq!((r.client.port, r.server.port), (0, 0), "ports: {}", ctx());
    }
}

/// Asserts that no counter of `b` is below `a`'s (summaries in that order).
pub fn check_monotonic(a: &Summary, b: &Summary) {
    let ctx = || {
        format!(
            "\nbefore {}\nafter  {}",
            serde_json::to_string(a).unwrap_or_default(),
            serde_json::to_string(b).unwrap_or_default()
        )
    };
    let pairs = [
        ("packets", a.packets, b.packets),
        ("bytes", a.bytes, b.bytes),
        ("duration_ns", a.duration_ns, b.duration_ns),
        ("flows.tcp", a.flows.tcp, b.flows.tcp),
        ("flows.udp", a.flows.udp, b.flows.udp),
        ("flows.icmp", a.flows.icmp, b.flows.icmp),
        ("flows.other", a.flows.other, b.flows.other),
        ("tcp.syn", a.tcp.syn, b.tcp.syn),
        ("tcp.synack", a.tcp.synack, b.tcp.synack),
        ("tcp.fin", a.tcp.fin, b.tcp.fin),
        ("tcp.rst", a.tcp.rst, b.tcp.rst),
        ("tcp.retrans_seen", a.tcp.retrans_seen, b.tcp.retrans_seen),
        ("tcp.hole_fill", a.tcp.hole_fill, b.tcp.hole_fill),
        ("tcp.gaps", a.tcp.gaps, b.tcp.gaps),
        ("tcp.out_of_order", a.tcp.out_of_order, b.tcp.out_of_order),
        ("tcp.retransmits", a.tcp.retransmits, b.tcp.retransmits),
        (
            "tcp.fast_retransmits",
            a.tcp.fast_retransmits,
            b.tcp.fast_retransmits,
        ),
        (
            "tcp.spurious_retransmits",
            a.tcp.spurious_retransmits,
            b.tcp.spurious_retransmits,
        ),
        (
            "tcp.rto_retransmits",
            a.tcp.rto_retransmits,
            b.tcp.rto_retransmits,
        ),
        ("tcp.dup_acks", a.tcp.dup_acks, b.tcp.dup_acks),
        ("tcp.zero_window", a.tcp.zero_window, b.tcp.zero_window),
        (
            "tcp.zero_window_events",
            a.tcp.zero_window_events,
            b.tcp.zero_window_events,
        ),
        (
            "tcp.zero_window_ns",
            a.tcp.zero_window_ns,
            b.tcp.zero_window_ns,
        ),
        ("tcp.ecn_ce", a.tcp.ecn_ce, b.tcp.ecn_ce),
        ("icmp.frag_needed", a.icmp.frag_needed, b.icmp.frag_needed),
        (
            "icmp.packet_too_big",
            a.icmp.packet_too_big,
            b.icmp.packet_too_big,
        ),
        ("fragments.ipv4", a.fragments.ipv4, b.fragments.ipv4),
        ("fragments.ipv6", a.fragments.ipv6, b.fragments.ipv6),
        ("max_packets_1ms", a.max_packets_1ms, b.max_packets_1ms),
        ("max_bytes_1ms", a.max_bytes_1ms, b.max_bytes_1ms),
        ("non_ip", a.non_ip, b.non_ip),
        ("evicted_flows", a.evicted_flows, b.evicted_flows),
    ];
    for (name, x, y) in pairs {
        assert!(
            y >= x,
            "summary counter {name} went down {x} -> {y}{}",
            ctx()
        );
    }
    for (k, x) in &a.parse_errors {
        let y = b.parse_errors.get(k).copied().unwrap_or(0);
        assert!(y >= *x, "parse_errors.{k} went down {x} -> {y}{}", ctx());
    }
    for m in &a.icmp.mtus {
        assert!(b.icmp.mtus.contains(m), "MTU {m} vanished{}", ctx());
    }
    if a.first_ns.is_some() {
        assert_eq!(a.first_ns, b.first_ns, "first_ns changed{}", ctx());
    }
}

/// The harness's own account of the frames fed so far.
#[derive(Debug, Default)]
struct Expected {
    frames: u64,
    bytes: u64,
    non_ip: u64,
    errors: BTreeMap<&'static str, u64>,
    groups: Groups,
}

/// What a set of flow records adds up to (each record checked once, when added).
#[derive(Debug, Clone, Default)]
struct Records {
    n: u64,
    packets: u64,
    bytes: u64,
    groups: Groups,
    /// tcp, udp, icmp, other
    counts: [u64; 4],
    tcp: TcpTotals,
}

impl Records {
    fn add(&mut self, r: &FlowRecord) {
        check_record(r);
        self.n += 1;
        self.packets += r.c2s.packets + r.s2c.packets;
        self.bytes += r.c2s.bytes + r.s2c.bytes;
        add_groups(&mut self.groups, r);
        self.counts[match r.proto {
            Proto::Tcp => 0,
            Proto::Udp => 1,
            Proto::Icmp => 2,
            Proto::Other => 3,
        }] += 1;
        if r.proto == Proto::Tcp {
            self.tcp.add_flow(r);
        }
    }
}

/// Checks a summary against `exported` (the records already out of the
/// engine) plus the table's active flows, and against the harness's own account.
fn check_accounting(engine: &Engine, exported: &Records, want: &Expected) -> Summary {
    let s = engine.summary();
    let mut all = exported.clone();
    engine.for_each_active(|f| all.add(&f.to_record(false)));
    let ctx = || format!("summary {}", serde_json::to_string(&s).unwrap_or_default());
    assert_eq!(
        s.packets,
        want.frames,
        "summary packets != frames fed: {}",
        ctx()
    );
    assert_eq!(engine.frames(), want.frames, "frames(): {}", ctx());
    assert_eq!(s.non_ip, want.non_ip, "non_ip: {}", ctx());
    let errors: BTreeMap<&str, u64> = s
        .parse_errors
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(errors, want.errors, "parse_errors by reason: {}", ctx());
    let errs: u64 = s.parse_errors.values().sum();
    assert_eq!(
        all.packets + errs + s.non_ip,
        want.frames,
        "frames not accounted exactly once (flow packets {} + parse errors {errs} + non-IP {}): {}",
        all.packets,
        s.non_ip,
        ctx()
    );
    assert_eq!(
        s.bytes,
        all.bytes,
        "summary bytes != sum of flow bytes: {}",
        ctx()
    );
    assert_eq!(
        s.bytes,
        want.bytes,
        "summary bytes != sum of parsed ip_len: {}",
        ctx()
    );
    assert_eq!(
        all.groups,
        want.groups,
        "per-conversation packets/bytes differ from the frames': {}",
        ctx()
    );
    assert_eq!(
        [s.flows.tcp, s.flows.udp, s.flows.icmp, s.flows.other],
        all.counts,
        "flow counts: {}",
        ctx()
    );
    assert_eq!(s.tcp, all.tcp, "tcp totals != sum of TCP flows: {}", ctx());
    assert!(s.evicted_flows <= exported.n, "evicted: {}", ctx());
    assert!(
        engine.table().len() <= engine.table().config().capacity,
        "table over capacity: {}",
        ctx()
    );
    assert!(s.max_packets_1ms <= s.packets, "burst: {}", ctx());
    assert!(s.max_bytes_1ms <= s.bytes, "burst bytes: {}", ctx());
    s
}

/// engine target: see [`EngineInput`].
pub fn check_engine(data: &[u8]) {
    if let Some(input) = EngineInput::decode(data) {
        check_engine_input(&input);
    }
}

pub fn check_engine_input(input: &EngineInput<'_>) {
    let mut engine = Engine::new(EngineConfig {
        table: TableConfig {
            capacity: input.capacity,
            ..TableConfig::default()
        },
    });
    let mut want = Expected::default();
    let mut exported = Records::default();
    let mut last: Option<Summary> = None;
    for (i, &(ts, frame, ctl)) in input.frames.iter().enumerate() {
        engine.handle_frame(ts, input.link, frame);
        want.frames += 1;
        match parse_checked(input.link, frame, ts) {
            Ok(m) => {
                want.bytes += u64::from(m.ip_len);
                let e = want
                    .groups
                    .entry(group_of(
                        m.src.to_ip(),
                        m.dst.to_ip(),
                        proto_of(m.proto),
                        m.vlan,
                    ))
                    .or_default();
                e.0 += 1;
                e.1 += u64::from(m.ip_len);
            }
            Err(ParseError::NonIp) => want.non_ip += 1,
            Err(e) => *want.errors.entry(e.as_str()).or_default() += 1,
        }
        if ctl & 4 != 0 {
            engine.poll_expired(ts, 4096);
        }
        if ctl & 8 != 0 {
            while let Some(r) = engine.poll_record() {
                exported.add(&r);
            }
        }
        if (i + 1) % input.summary_every == 0 {
            // Records still queued inside the engine are neither active nor
            // exported yet: take them out before comparing.
            while let Some(r) = engine.poll_record() {
                exported.add(&r);
            }
            let s = check_accounting(&engine, &exported, &want);
            if let Some(prev) = &last {
                check_monotonic(prev, &s);
            }
            last = Some(s);
        }
    }
    engine.finish();
    while let Some(r) = engine.poll_record() {
        exported.add(&r);
    }
    assert!(engine.table().is_empty(), "flows left after finish()");
    let s = check_accounting(&engine, &exported, &want);
    if let Some(prev) = &last {
        check_monotonic(prev, &s);
    }
}

// ---------------------------------------------------------------- CaptureReader

/// One frame as the reader delivered it, owned.
type Owned = (u64, u32, u32, Vec<u8>);

/// capture_reader target: `data` as a whole capture file.
pub fn check_capture(data: &[u8]) {
    let len = data.len() as u64;
    let check_err = |e: &wirelens_dataplane::source::CaptureError, floor: u64| {
        let off = e.offset();
        let msg = e.to_string();
        assert!(
            off < len || (len == 0 && off == 0),
            "error offset {off} outside the {len}-byte input: {msg}"
        );
        assert!(
            off >= floor,
            "error offset {off} before the last frame's end {floor}: {msg}"
        );
        if off > 0 {
            assert!(
                msg.contains(&format!("byte {off}")),
                "the message does not name the offset {off}: {msg}"
            );
        }
    };
    let mut reader = match CaptureReader::new(data) {
        Ok(r) => r,
        Err(e) => {
            check_err(&e, 0);
            return;
        }
    };
    let mut frames: Vec<Owned> = Vec::new();
    let mut offset = reader.offset();
    assert!(offset <= len, "header offset {offset} past the input");
    let failed = loop {
        let before = offset;
        let got = match reader.next_frame() {
            Ok(Some(f)) => {
                assert_eq!(f.data.len(), f.caplen as usize, "caplen != data length");
                assert!(f.caplen <= MAX_CAPLEN, "caplen {} over the limit", f.caplen);
                if let Some(link) = LinkType::from_linktype(f.linktype) {
                    let _ = parse_checked(link, f.data, f.ts_ns);
                }
                Ok(Some((f.ts_ns, f.linktype, f.orig_len, f.data.to_vec())))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        match got {
            Ok(Some(frame)) => {
                offset = reader.offset();
                assert!(
                    offset > before,
                    "offset did not advance: {before} -> {offset}"
                );
                assert!(offset <= len, "offset {offset} past the {len}-byte input");
                assert!(
                    offset - before >= frame.3.len() as u64,
                    "frame of {} bytes from {} bytes of input",
                    frame.3.len(),
                    offset - before
                );
                frames.push(frame);
            }
            Ok(None) => {
                let end = reader.offset();
                assert_eq!(
                    end, len,
                    "clean end of file at {end}, before the input's end"
                );
                break None;
            }
            Err(e) => {
                check_err(&e, before);
                break Some(e.offset());
            }
        }
    };
    assert!(
        matches!(reader.next_frame(), Ok(None)),
        "the reader yields more after its end or error"
    );
    // The batch interface delivers the same frames and fails the same way.
    let mut again = CaptureReader::new(data).expect("the header read before");
    let mut batch: Vec<Owned> = Vec::new();
    let batch_err = loop {
        let r = again.recv_batch(&mut |f| {
            batch.push((f.ts_ns, f.linktype, f.orig_len, f.data.to_vec()));
        });
        match r {
            Ok(0) => break None,
            Ok(_) => {}
            Err(e) => break Some(e.to_string()),
        }
    };
    assert!(again.is_exhausted(), "not exhausted after the end");
    assert_eq!(
        frames, batch,
        "recv_batch delivers other frames than next_frame"
    );
    assert_eq!(
        failed.is_some(),
        batch_err.is_some(),
        "recv_batch fails differently"
    );
}
