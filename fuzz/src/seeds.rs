//! Seed inputs of the fuzz targets and a small deterministic input generator,
//! shared (like the checks) by the fuzz crate and the `fuzz_regressions`
//! tests. The files in `fuzz/corpus/*/seed-*` are these seeds, written by
//! `cargo test -p wirelens-dataplane --test fuzz_regressions -- --ignored
//! write_seed_corpus` (and the same in wirelens-ctrl for `report`).
//!
//! Frames are built from header fields, small and real (the same bytes a
//! Linux sender puts on the wire, checksums aside: the parser does not check
//! them). Addresses come from 198.18.0.0/15 and 2001:db8::/32.

use std::path::Path;

pub const ETH_IPV4: u16 = 0x0800;
pub const ETH_IPV6: u16 = 0x86dd;
pub const ETH_ARP: u16 = 0x0806;
pub const ETH_VLAN: u16 = 0x8100;
pub const ETH_QINQ: u16 = 0x88a8;

pub const C4: [u8; 4] = [198, 18, 1, 2];
pub const S4: [u8; 4] = [198, 18, 2, 2];
pub const C6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
pub const S6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

const MS: u64 = 1_000_000;

/// Ethernet II around `payload`.
pub fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Ethernet with one tag (`tpid` 0x8100 or 0x88a8) of VLAN `vid`.
pub fn eth_tagged(tags: &[(u16, u16)], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
    for &(tpid, vid) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// IPv4 header (no options) + `payload`; `frag` is the flags/offset field.
pub fn ipv4(proto: u8, src: [u8; 4], dst: [u8; 4], id: u16, frag: u16, payload: &[u8]) -> Vec<u8> {
    let total = u16::try_from(20 + payload.len()).unwrap_or(u16::MAX);
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&frag.to_be_bytes());
    p.extend_from_slice(&[64, proto, 0, 0]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(payload);
    p
}

/// IPv6 header + `payload` (which starts with any extension headers).
pub fn ipv6(next: u8, src: [u8; 16], dst: [u8; 16], payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&len.to_be_bytes());
    p.extend_from_slice(&[next, 64]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(payload);
    p
}

/// TCP header with `opts` (padded to 4 bytes) and `data` zero-ish bytes.
#[expect(clippy::too_many_arguments, reason = "one argument per header field")]
pub fn tcp(
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    win: u16,
    opts: &[u8],
    data: usize,
) -> Vec<u8> {
    let mut o = opts.to_vec();
    while o.len() % 4 != 0 {
        o.push(1);
    }
    let off = (20 + o.len()) / 4;
    let mut s = Vec::new();
    s.extend_from_slice(&sport.to_be_bytes());
    s.extend_from_slice(&dport.to_be_bytes());
    s.extend_from_slice(&seq.to_be_bytes());
    s.extend_from_slice(&ack.to_be_bytes());
    s.extend_from_slice(&[(off as u8) << 4, flags]);
    s.extend_from_slice(&win.to_be_bytes());
    s.extend_from_slice(&[0, 0, 0, 0]);
    s.extend_from_slice(&o);
    s.extend(std::iter::repeat_n(0x5a, data));
    s
}

/// SYN options as Linux sends them: MSS, SACK permitted, timestamps, window scale.
pub fn syn_opts(tsval: u32, tsecr: u32) -> Vec<u8> {
    let mut o = vec![2, 4, 0x05, 0xb4, 4, 2, 8, 10];
    o.extend_from_slice(&tsval.to_be_bytes());
    o.extend_from_slice(&tsecr.to_be_bytes());
    o.extend_from_slice(&[1, 3, 3, 7]);
    o
}

/// NOP NOP timestamps.
pub fn ts_opts(tsval: u32, tsecr: u32) -> Vec<u8> {
    let mut o = vec![1, 1, 8, 10];
    o.extend_from_slice(&tsval.to_be_bytes());
    o.extend_from_slice(&tsecr.to_be_bytes());
    o
}

/// A SACK block option (NOP NOP SACK).
pub fn sack_opts(blocks: &[(u32, u32)]) -> Vec<u8> {
    let mut o = vec![1, 1, 5, (2 + 8 * blocks.len()) as u8];
    for (l, r) in blocks {
        o.extend_from_slice(&l.to_be_bytes());
        o.extend_from_slice(&r.to_be_bytes());
    }
    o
}

pub fn udp(sport: u16, dport: u16, data: usize) -> Vec<u8> {
    let len = u16::try_from(8 + data).unwrap_or(u16::MAX);
    let mut s = Vec::new();
    s.extend_from_slice(&sport.to_be_bytes());
    s.extend_from_slice(&dport.to_be_bytes());
    s.extend_from_slice(&len.to_be_bytes());
    s.extend_from_slice(&[0, 0]);
    s.extend(std::iter::repeat_n(0xa5, data));
    s
}

/// ICMP (v4 or v6) message: type, code, 4 bytes of rest-of-header, body.
pub fn icmp(ty: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut m = vec![ty, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(body);
    m
}

/// Linux cooked capture v1 header + payload.
pub fn sll(protocol: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
    f.extend_from_slice(&protocol.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Linux cooked capture v2 header + payload.
pub fn sll2(protocol: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = protocol.to_be_bytes().to_vec();
    f.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// A TCP/IPv4 frame over Ethernet.
#[expect(clippy::too_many_arguments, reason = "one argument per header field")]
pub fn eth_tcp4(
    src: [u8; 4],
    dst: [u8; 4],
    sp: u16,
    dp: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    opts: &[u8],
    data: usize,
) -> Vec<u8> {
    eth(
        ETH_IPV4,
        &ipv4(
            6,
            src,
            dst,
            1,
            0x4000,
            &tcp(sp, dp, seq, ack, flags, 502, opts, data),
        ),
    )
}

/// One frame per link type and per protocol path of the parser, valid.
pub fn frames() -> Vec<(&'static str, wirelens_dataplane::wire::LinkType, Vec<u8>)> {
    use wirelens_dataplane::wire::LinkType as L;
    let syn = tcp(43210, 443, 1000, 0, SYN, 64240, &syn_opts(1, 0), 0);
    let v4_syn = ipv4(6, C4, S4, 1, 0x4000, &syn);
    let v4_udp = ipv4(17, C4, S4, 2, 0, &udp(5000, 53, 32));
    let v6_tcp = ipv6(
        6,
        C6,
        S6,
        &tcp(40000, 8080, 7, 9, ACK | PSH, 300, &ts_opts(5, 6), 64),
    );
    // IPv6: hop-by-hop, then a fragment header (first fragment, more follow), then UDP.
    let mut ext = vec![44, 0, 1, 4, 0, 0, 0, 0]; // HBH: next = fragment, PadN
    ext.extend_from_slice(&[17, 0, 0x00, 0x01, 0, 0, 0x12, 0x34]);
    ext.extend_from_slice(&udp(6000, 6001, 40));
    let v6_hbh_frag = ipv6(0, C6, S6, &ext);
    let v6_later = ipv6(44, C6, S6, &{
        let mut e = vec![17, 0, 0x00, 0x30, 0, 0, 0x12, 0x34];
        e.extend(std::iter::repeat_n(0xa5, 24));
        e
    });
    let v4_first = ipv4(17, C4, S4, 77, 0x2000, &udp(7000, 7001, 64));
    let v4_later = ipv4(17, C4, S4, 77, 9, &[0xa5; 40]);
    let quoted = ipv4(
        6,
        C4,
        S4,
        1,
        0x4000,
        &tcp(43210, 443, 1000, 0, ACK, 502, &[], 0),
    );
    let frag_needed = ipv4(
        1,
        [198, 18, 0, 1],
        C4,
        3,
        0,
        &icmp(3, 4, [0, 0, 0x05, 0x00], &quoted[..28]),
    );
    let q6 = ipv6(6, C6, S6, &tcp(40000, 8080, 7, 9, ACK, 300, &[], 0));
    let ptb = ipv6(
        58,
        [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        C6,
        &icmp(2, 0, [0, 0, 0x05, 0x00], &q6[..48]),
    );
    let echo = ipv4(1, C4, S4, 4, 0, &icmp(8, 0, [0, 1, 0, 1], &[0x11; 16]));
    let gre = ipv4(47, C4, S4, 5, 0, &[0; 8]);
    let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
    arp.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
    arp.extend_from_slice(&C4);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&S4);
    let mut null_le = vec![2, 0, 0, 0];
    null_le.extend_from_slice(&v4_udp);
    let mut null_v6 = vec![30, 0, 0, 0];
    null_v6.extend_from_slice(&v6_tcp);
    let mut loop_v4 = vec![0, 0, 0, 2];
    loop_v4.extend_from_slice(&v4_syn);
    let sack = eth(
        ETH_IPV4,
        &ipv4(
            6,
            S4,
            C4,
            9,
            0x4000,
            &tcp(
                443,
                43210,
                1,
                2000,
                ACK,
                502,
                &sack_opts(&[(3000, 4000), (5000, 6000)]),
                0,
            ),
        ),
    );
    vec![
        ("eth-tcp4-syn", L::Ethernet, eth(ETH_IPV4, &v4_syn)),
        ("eth-udp4", L::Ethernet, eth(ETH_IPV4, &v4_udp)),
        ("eth-tcp6-ts", L::Ethernet, eth(ETH_IPV6, &v6_tcp)),
        (
            "eth-ip6-hbh-frag-udp",
            L::Ethernet,
            eth(ETH_IPV6, &v6_hbh_frag),
        ),
        ("eth-ip6-later-frag", L::Ethernet, eth(ETH_IPV6, &v6_later)),
        ("eth-ip4-first-frag", L::Ethernet, eth(ETH_IPV4, &v4_first)),
        ("eth-ip4-later-frag", L::Ethernet, eth(ETH_IPV4, &v4_later)),
        (
            "eth-icmp4-frag-needed",
            L::Ethernet,
            eth(ETH_IPV4, &frag_needed),
        ),
        ("eth-icmp6-ptb", L::Ethernet, eth(ETH_IPV6, &ptb)),
        ("eth-icmp4-echo", L::Ethernet, eth(ETH_IPV4, &echo)),
        ("eth-gre", L::Ethernet, eth(ETH_IPV4, &gre)),
        ("eth-arp", L::Ethernet, eth(ETH_ARP, &arp)),
        ("eth-tcp4-sack", L::Ethernet, sack),
        (
            "vlan-udp4",
            L::Ethernet,
            eth_tagged(&[(ETH_VLAN, 100)], ETH_IPV4, &v4_udp),
        ),
        (
            "qinq-tcp6",
            L::Ethernet,
            eth_tagged(&[(ETH_QINQ, 10), (ETH_VLAN, 20)], ETH_IPV6, &v6_tcp),
        ),
        ("raw-tcp4", L::Raw, v4_syn.clone()),
        ("raw-tcp6", L::Raw, v6_tcp.clone()),
        ("ipv4-udp", L::Ipv4, v4_udp.clone()),
        ("ipv6-ptb", L::Ipv6, ptb.clone()),
        ("sll-tcp4", L::LinuxSll, sll(ETH_IPV4, &v4_syn)),
        ("sll2-tcp6", L::LinuxSll2, sll2(ETH_IPV6, &v6_tcp)),
        ("null-udp4", L::Null, null_le),
        ("null-tcp6", L::Null, null_v6),
        ("loop-tcp4", L::Loop, loop_v4),
    ]
}

/// A TCP connection as the tap sees it: handshake with options, data both
/// ways with a lost-after-the-tap segment retransmitted, dup ACKs with SACK,
/// a zero-window stall, FINs. `(ts_ns, frame)`.
pub fn tcp_conversation(t0: u64, cp: u16) -> Vec<(u64, Vec<u8>)> {
    let (c, s, sp) = (C4, S4, 443);
    let mut v = Vec::new();
    let mut t = t0;
    let mut at = |dt: u64, f: Vec<u8>| {
        t += dt;
        v.push((t, f));
    };
    let ci = 1_000u32;
    let si = 5_000u32;
    at(0, eth_tcp4(c, s, cp, sp, ci, 0, SYN, &syn_opts(100, 0), 0));
    at(
        20 * MS,
        eth_tcp4(s, c, sp, cp, si, ci + 1, SYN | ACK, &syn_opts(900, 100), 0),
    );
    at(
        20 * MS,
        eth_tcp4(c, s, cp, sp, ci + 1, si + 1, ACK, &ts_opts(120, 900), 0),
    );
    let mut seq = ci + 1;
    for k in 0..4u32 {
        at(
            MS,
            eth_tcp4(
                c,
                s,
                cp,
                sp,
                seq,
                si + 1,
                ACK | PSH,
                &ts_opts(121 + k, 900),
                100,
            ),
        );
        seq += 100;
    }
    // Segment 2 lost after the tap: dup ACKs with SACK, then the retransmission.
    at(
        20 * MS,
        eth_tcp4(s, c, sp, cp, si + 1, ci + 101, ACK, &ts_opts(920, 121), 0),
    );
    for _ in 0..3 {
        at(
            MS / 4,
            eth_tcp4(
                s,
                c,
                sp,
                cp,
                si + 1,
                ci + 101,
                ACK,
                &sack_opts(&[(ci + 201, ci + 401)]),
                0,
            ),
        );
    }
    at(
        MS,
        eth_tcp4(
            c,
            s,
            cp,
            sp,
            ci + 101,
            si + 1,
            ACK | PSH,
            &ts_opts(130, 920),
            100,
        ),
    );
    at(
        20 * MS,
        eth_tcp4(s, c, sp, cp, si + 1, seq, ACK, &ts_opts(940, 130), 0),
    );
    // Response, the client's window closes and opens again.
    at(
        MS,
        eth_tcp4(
            s,
            c,
            sp,
            cp,
            si + 1,
            seq,
            ACK | PSH,
            &ts_opts(941, 130),
            200,
        ),
    );
    let zw = eth(
        ETH_IPV4,
        &ipv4(
            6,
            c,
            s,
            1,
            0x4000,
            &tcp(cp, sp, seq, si + 201, ACK, 0, &[], 0),
        ),
    );
    at(MS, zw);
    at(50 * MS, eth_tcp4(c, s, cp, sp, seq, si + 201, ACK, &[], 0));
    // Close.
    at(MS, eth_tcp4(c, s, cp, sp, seq, si + 201, FIN | ACK, &[], 0));
    at(
        20 * MS,
        eth_tcp4(s, c, sp, cp, si + 201, seq + 1, FIN | ACK, &[], 0),
    );
    at(
        20 * MS,
        eth_tcp4(c, s, cp, sp, seq + 1, si + 202, ACK, &[], 0),
    );
    v
}

/// Short scenarios for the engine target: `(name, link, cfg byte, frames)`.
#[expect(clippy::type_complexity, reason = "a seed table")]
pub fn engine_scenarios() -> Vec<(
    &'static str,
    wirelens_dataplane::wire::LinkType,
    u8,
    Vec<(u64, Vec<u8>)>,
)> {
    use wirelens_dataplane::wire::LinkType as L;
    let t0 = 1_795_611_473_000_000_000u64;
    let mut mixed = tcp_conversation(t0, 43958);
    let all = frames();
    for (i, (_, link, f)) in all.iter().enumerate() {
        if *link == L::Ethernet {
            mixed.push((t0 + 500 * MS + i as u64 * MS, f.clone()));
        }
    }
    // A SYN flood over a 4-flow table with one established flow in it.
    let mut flood = tcp_conversation(t0, 50000)[..3].to_vec();
    for k in 0..24u16 {
        let src = [198, 19, (k >> 8) as u8, k as u8];
        flood.push((
            t0 + 100 * MS + u64::from(k) * 10_000,
            eth_tcp4(src, S4, 1024 + k, 80, u32::from(k), 0, SYN, &[], 0),
        ));
    }
    // Idle timeouts: a UDP flow, 90 s of silence, the same flow again.
    let u = |t: u64| {
        (
            t,
            eth(ETH_IPV4, &ipv4(17, C4, S4, 1, 0, &udp(5000, 53, 20))),
        )
    };
    let idle = vec![u(t0), u(t0 + MS), u(t0 + 90_000 * MS), u(t0 + 90_001 * MS)];
    // Time going backwards, and a new SYN reusing a closed 4-tuple.
    let mut back = tcp_conversation(t0, 40000);
    let n = back.len();
    back[n / 2].0 = t0 - 5_000 * MS;
    back.extend(tcp_conversation(t0 + 1_000 * MS, 40000));
    // Fragments: first and later fragments of one UDP datagram, both families.
    let frags: Vec<(u64, Vec<u8>)> = all
        .iter()
        .filter(|(name, _, _)| name.contains("frag"))
        .enumerate()
        .map(|(i, (_, _, f))| (t0 + i as u64 * MS, f.clone()))
        .collect();
    let sll: Vec<(u64, Vec<u8>)> = tcp_conversation(t0, 41000)
        .into_iter()
        .map(|(t, f)| (t, sll(ETH_IPV4, &f[14..])))
        .collect();
    vec![
        (
            "tcp-conversation",
            L::Ethernet,
            0x0f,
            tcp_conversation(t0, 43958),
        ),
        ("mixed", L::Ethernet, 0x3f, mixed),
        ("syn-flood-cap4", L::Ethernet, 0x13, flood),
        ("udp-idle", L::Ethernet, 0x0f, idle),
        ("time-backwards-reuse", L::Ethernet, 0x2f, back),
        ("fragments", L::Ethernet, 0x0f, frags),
        ("sll-conversation", L::LinuxSll, 0x0f, sll),
    ]
}

// ---------------------------------------------------------------- capture files

fn put16(v: &mut Vec<u8>, x: u16, be: bool) {
    v.extend_from_slice(&if be { x.to_be_bytes() } else { x.to_le_bytes() });
}

fn put32(v: &mut Vec<u8>, x: u32, be: bool) {
    v.extend_from_slice(&if be { x.to_be_bytes() } else { x.to_le_bytes() });
}

/// A classic pcap file. `nanos`: the a1b23c4d magic; `modified`: Kuznetzov's
/// 24-byte record headers.
pub fn pcap(
    linktype: u32,
    frames: &[(u64, Vec<u8>)],
    be: bool,
    nanos: bool,
    modified: bool,
) -> Vec<u8> {
    let magic = match (nanos, modified) {
        (true, _) => 0xa1b2_3c4d,
        (false, true) => 0xa1b2_cd34,
        (false, false) => 0xa1b2_c3d4,
    };
    let mut v = Vec::new();
    put32(&mut v, magic, be);
    put16(&mut v, 2, be);
    put16(&mut v, 4, be);
    put32(&mut v, 0, be);
    put32(&mut v, 0, be);
    put32(&mut v, 262_144, be);
    put32(&mut v, linktype, be);
    for (ts, f) in frames {
        put32(&mut v, (ts / 1_000_000_000) as u32, be);
        let frac = ts % 1_000_000_000;
        put32(&mut v, if nanos { frac } else { frac / 1000 } as u32, be);
        put32(&mut v, f.len() as u32, be);
        put32(&mut v, f.len() as u32 + 4, be);
        if modified {
            v.extend_from_slice(&[0; 8]);
        }
        v.extend_from_slice(f);
    }
    v
}

fn block(v: &mut Vec<u8>, ty: u32, body: &[u8], be: bool) {
    let mut b = body.to_vec();
    while b.len() % 4 != 0 {
        b.push(0);
    }
    let len = 12 + b.len() as u32;
    put32(v, ty, be);
    put32(v, len, be);
    v.extend_from_slice(&b);
    put32(v, len, be);
}

/// A pcapng file: one section, one interface (`tsresol`: if_tsresol option
/// value, or none for the default microseconds), EPBs, then one Simple Packet
/// Block, an obsolete Packet Block and a block of unknown type.
pub fn pcapng(linktype: u16, frames: &[(u64, Vec<u8>)], be: bool, tsresol: Option<u8>) -> Vec<u8> {
    let mut v = Vec::new();
    let mut shb = Vec::new();
    put32(&mut shb, 0x1a2b_3c4d, be);
    put16(&mut shb, 1, be);
    put16(&mut shb, 0, be);
    shb.extend_from_slice(&u64::MAX.to_le_bytes());
    block(&mut v, 0x0a0d_0d0a, &shb, be);
    let mut idb = Vec::new();
    put16(&mut idb, linktype, be);
    put16(&mut idb, 0, be);
    put32(&mut idb, 0, be);
    if let Some(r) = tsresol {
        put16(&mut idb, 9, be);
        put16(&mut idb, 1, be);
        idb.extend_from_slice(&[r, 0, 0, 0]);
        put16(&mut idb, 0, be);
        put16(&mut idb, 0, be);
    }
    block(&mut v, 1, &idb, be);
    let unit = |ts: u64| -> u64 {
        match tsresol {
            None => ts / 1000,
            Some(9) => ts,
            Some(r) if r & 0x80 == 0 && r <= 9 => ts / 10u64.pow(9 - u32::from(r)),
            Some(r) if r & 0x80 != 0 => {
                u64::try_from((u128::from(ts) << (r & 0x7f)) / 1_000_000_000).unwrap_or(u64::MAX)
            }
            Some(_) => ts / 1000,
        }
    };
    for (ts, f) in frames {
        let u = unit(*ts);
        let mut epb = Vec::new();
        put32(&mut epb, 0, be);
        put32(&mut epb, (u >> 32) as u32, be);
        put32(&mut epb, u as u32, be);
        put32(&mut epb, f.len() as u32, be);
        put32(&mut epb, f.len() as u32, be);
        epb.extend_from_slice(f);
        while epb.len() % 4 != 0 {
            epb.push(0);
        }
        block(&mut v, 6, &epb, be);
    }
    if let Some((_, f)) = frames.first() {
        let mut spb = Vec::new();
        put32(&mut spb, f.len() as u32, be);
        spb.extend_from_slice(f);
        block(&mut v, 3, &spb, be);
        let mut pb = Vec::new();
        put16(&mut pb, 0, be);
        put16(&mut pb, 0, be);
        put32(&mut pb, 0, be);
        put32(&mut pb, 1, be);
        put32(&mut pb, f.len() as u32, be);
        put32(&mut pb, f.len() as u32, be);
        pb.extend_from_slice(f);
        block(&mut v, 2, &pb, be);
    }
    block(&mut v, 0x0000_0bad, b"custom block", be);
    v
}

/// Capture-file seeds: every format variant the reader knows, plus broken ones.
pub fn capture_files() -> Vec<(&'static str, Vec<u8>)> {
    let conv: Vec<(u64, Vec<u8>)> = tcp_conversation(1_795_611_473_000_000_000, 43958)
        .into_iter()
        .take(6)
        .collect();
    let raw: Vec<(u64, Vec<u8>)> = conv.iter().map(|(t, f)| (*t, f[14..].to_vec())).collect();
    let le = pcap(1, &conv, false, false, false);
    let ng = pcapng(1, &conv, false, Some(9));
    let mut two_sections = pcapng(1, &conv[..2], false, None);
    two_sections.extend(pcapng(101, &raw[2..4], true, Some(0x86)));
    vec![
        ("pcap-le-us-eth", le.clone()),
        ("pcap-be-ns-raw", pcap(101, &raw, true, true, false)),
        ("pcap-modified-eth", pcap(1, &conv[..3], false, false, true)),
        (
            "pcap-sll",
            pcap(
                113,
                &[(conv[0].0, sll(ETH_IPV4, &raw[0].1))],
                false,
                false,
                false,
            ),
        ),
        ("pcapng-le-ns", ng.clone()),
        ("pcapng-be-us", pcapng(1, &conv, true, None)),
        ("pcapng-two-sections", two_sections),
        ("pcap-truncated", le[..le.len() - 7].to_vec()),
        ("pcapng-truncated", ng[..ng.len() - 30].to_vec()),
        ("pcap-header-only", le[..24].to_vec()),
        ("gzip-magic", vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0]),
    ]
}

// ---------------------------------------------------------------- generator

/// xorshift64*: a tiny deterministic generator, no dependency.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// A libFuzzer-like mutation of `input`: byte flips and sets, interesting
    /// values, insertions, deletions, a splice from `other`, truncation.
    pub fn mutate(&mut self, input: &[u8], other: &[u8]) -> Vec<u8> {
        let mut v = input.to_vec();
        for _ in 0..1 + self.below(6) {
            let at = self.below(v.len() + 1);
            match self.below(8) {
                0 if at < v.len() => v[at] ^= 1 << self.below(8),
                1 if at < v.len() => v[at] = self.next_u64() as u8,
                2 if at < v.len() => v[at] = [0, 0xff, 0x7f, 0x80, 1][self.below(5)],
                3 if at + 1 < v.len() => {
                    let x: [u8; 2] = [[0, 0], [0xff, 0xff], [0, 1], [0x80, 0]][self.below(4)];
                    v[at..at + 2].copy_from_slice(&x);
                }
                4 => {
                    let n = self.below(8) + 1;
                    let b = self.next_u64() as u8;
                    v.splice(at..at, std::iter::repeat_n(b, n));
                }
                5 if at < v.len() => {
                    let n = (self.below(8) + 1).min(v.len() - at);
                    v.drain(at..at + n);
                }
                6 if !other.is_empty() => {
                    let from = self.below(other.len());
                    let n = self.below(other.len() - from) + 1;
                    v.splice(at..at, other[from..from + n].iter().copied());
                }
                _ => {
                    let keep = self.below(v.len() + 1);
                    v.truncate(keep);
                }
            }
        }
        v
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// The files of a corpus directory, sorted by name (for stable test output).
pub fn corpus(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| {
            let data = std::fs::read(e.path())
                .unwrap_or_else(|err| panic!("{}: {err}", e.path().display()));
            (e.file_name().to_string_lossy().into_owned(), data)
        })
        .collect();
    out.sort();
    out
}

/// Writes `seeds` as `dir/seed-NAME`, replacing older ones of the same name.
pub fn write_seeds(dir: &Path, seeds: &[(String, Vec<u8>)]) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for (name, data) in seeds {
        let p = dir.join(format!("seed-{name}"));
        std::fs::write(&p, data).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    }
}
