//! Structure checks against RFC 7011's layout. The round trips through
//! decoders that are not ours (nfdump, tshark) are in tests/ipfix_export.rs.

use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};
use wirelens_dataplane::report::{Endpoint, Handshake, Rtt, TcpInfo, TcpState, FLOW_SCHEMA};

fn rec(client: IpAddr, server: IpAddr, n: u64) -> FlowRecord {
    FlowRecord {
        kind: "flow".into(),
        schema: FLOW_SCHEMA.into(),
        proto: Proto::Tcp,
        client: Endpoint {
            ip: client,
            port: 40000 + n as u16,
        },
        server: Endpoint {
            ip: server,
            port: 443,
        },
        vlan: Some(7),
        first_ns: 1_700_000_000_123_456_789,
        last_ns: 1_700_000_001_987_654_321,
        c2s: Direction {
            packets: 10 + n,
            bytes: 1000 + n,
            syn: 1,
            fin: 1,
            retrans_seen: 2,
            hole_fill: 3,
            retransmits: 5,
            rtt: Rtt {
                n: 4,
                min_ns: Some(1_000_000),
                p50_ns: Some(2_500_000),
                ..Rtt::default()
            },
            ..Direction::default()
        },
        s2c: Direction {
            packets: 8,
            bytes: 9000,
            synack: 1,
            zero_window_ns: 7_000_000,
            ..Direction::default()
        },
        tcp: Some(TcpInfo {
            handshake: Some(Handshake {
                syn_to_synack_ns: Some(40_000_000),
                synack_to_ack_ns: Some(3_000_000),
                connect_ns: Some(43_000_000),
                syn_count: 1,
                synack_count: 1,
            }),
            state: TcpState::Closed,
            rst_from: None,
            mss: Default::default(),
            wscale: Default::default(),
            sack_ok: false,
            ts_ok: false,
            ecn_ok: false,
            path: Default::default(),
            mss_clamped: Default::default(),
            ecn_bleached: Default::default(),
        }),
        pmtu: None,
    }
}

fn v4(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 0, n))
}

fn v6(n: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n))
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Splits a message into (set id, set body) after checking the header.
fn sets(msg: &[u8], domain: u32) -> Vec<(u16, &[u8])> {
    assert_eq!(u16_at(msg, 0), VERSION);
    assert_eq!(usize::from(u16_at(msg, 2)), msg.len());
    assert_eq!(u32_at(msg, 12), domain);
    let mut out = Vec::new();
    let mut at = HEADER_LEN;
    while at < msg.len() {
        let id = u16_at(msg, at);
        let len = usize::from(u16_at(msg, at + 2));
        assert!(
            len >= SET_HEADER_LEN && at + len <= msg.len(),
            "set at {at}"
        );
        out.push((id, &msg[at + SET_HEADER_LEN..at + len]));
        at += len;
    }
    assert_eq!(at, msg.len());
    out
}

/// Template id -> record length, from a template set.
fn templates(body: &[u8]) -> Vec<(u16, usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let tid = u16_at(body, at);
        let n = usize::from(u16_at(body, at + 2));
        at += 4;
        let mut len = 0;
        for _ in 0..n {
            let id = u16_at(body, at);
            len += usize::from(u16_at(body, at + 2));
            at += if id & 0x8000 != 0 { 8 } else { 4 };
        }
        out.push((tid, n, len));
    }
    out
}

#[test]
fn first_message_has_templates_then_records_and_sequence_counts_records() {
    let cfg = EncoderConfig {
        domain_id: 42,
        ..EncoderConfig::default()
    };
    let mut e = Encoder::new(cfg).unwrap();
    let now = 1_700_000_005_000_000_000;
    let mut msgs = Vec::new();
    for i in 0..23 {
        msgs.extend(e.push(&rec(v4(1), v4(2), i), now).map(|m| m.bytes));
    }
    msgs.extend(e.flush(now).map(|m| m.bytes));
    assert!(msgs.len() > 1, "{}", msgs.len());
    let mut seq = 0;
    let mut records = 0;
    for (i, m) in msgs.iter().enumerate() {
        assert!(m.len() <= DEFAULT_MTU, "{}", m.len());
        assert_eq!(u32_at(m, 4), 1_700_000_005, "export time");
        assert_eq!(u32_at(m, 8), seq, "sequence of message {i}");
        let s = sets(m, 42);
        if i == 0 {
            assert_eq!(s[0].0, TEMPLATE_SET_ID);
            let t = templates(s[0].1);
            assert_eq!(t.len(), 2);
            assert_eq!(t[0], (TEMPLATE_V4, elements().count(), record_len(false)));
            assert_eq!(t[1], (TEMPLATE_V6, elements().count(), record_len(true)));
        } else {
            assert!(s.iter().all(|(id, _)| *id != TEMPLATE_SET_ID));
        }
        let data: usize = s
            .iter()
            .filter(|(id, _)| *id == TEMPLATE_V4)
            .map(|(_, b)| {
                assert_eq!(b.len() % record_len(false), 0);
                b.len() / record_len(false)
            })
            .sum();
        seq += data as u32;
        records += data;
    }
    assert_eq!(records, 23);
    assert_eq!(e.stats().records, 23);
    assert_eq!(e.stats().messages, msgs.len() as u64);
}

#[test]
fn record_fields_are_where_the_template_says() {
    let mut e = Encoder::new(EncoderConfig::default()).unwrap();
    let r = rec(v4(1), v4(2), 0);
    assert!(e.push(&r, 5).is_none());
    let m = e.flush(5).unwrap().bytes;
    let s = sets(&m, 0);
    let data = s.iter().find(|(id, _)| *id == TEMPLATE_V4).unwrap().1;
    assert_eq!(&data[0..4], &[198, 18, 0, 1]);
    assert_eq!(&data[4..8], &[198, 18, 0, 2]);
    assert_eq!(u16_at(data, 8), 40000);
    assert_eq!(u16_at(data, 10), 443);
    assert_eq!(data[12], 6);
    assert_eq!(u16_at(data, 13), 7);
    let ms_at = |at: usize| u64::from_be_bytes(data[at..at + 8].try_into().unwrap());
    assert_eq!(ms_at(15), 1_700_000_000_123);
    assert_eq!(ms_at(23), 1_700_000_001_987);
    assert_eq!(ms_at(31), 1000);
    assert_eq!(ms_at(39), 10);
    // SYN, FIN, ACK forward; SYN+ACK back.
    assert_eq!(u16_at(data, 47), 0x13);
    assert_eq!(ms_at(49), 9000);
    assert_eq!(ms_at(57), 8);
    assert_eq!(u16_at(data, 65), 0x12);
    assert_eq!(data[67], 1);
    // nProbe latencies: half of each handshake round trip, in ms.
    assert_eq!(u32_at(data, 68), 1);
    assert_eq!(u32_at(data, 72), 20);
    assert_eq!(u32_at(data, 76), 5);
}

#[test]
fn v6_and_v4_flows_use_their_templates_in_one_message() {
    let mut e = Encoder::new(EncoderConfig::default()).unwrap();
    assert!(e.push(&rec(v6(1), v6(2), 0), 0).is_none());
    assert!(e.push(&rec(v4(1), v4(2), 0), 0).is_none());
    let m = e.flush(0).unwrap().bytes;
    let ids: Vec<u16> = sets(&m, 0).iter().map(|s| s.0).collect();
    assert_eq!(ids, [TEMPLATE_SET_ID, TEMPLATE_V6, TEMPLATE_V4]);
    let s = sets(&m, 0);
    assert_eq!(s[1].1.len(), record_len(true));
    assert_eq!(&s[1].1[..16], &v6_octets(1));
    // Without templates, a message takes four records of either family.
    for i in 0..4 {
        let r = if i % 2 == 0 {
            rec(v6(1), v6(2), i)
        } else {
            rec(v4(1), v4(2), i)
        };
        assert!(e.push(&r, 0).is_none(), "{i}");
    }
    let m = e.flush(0).unwrap().bytes;
    assert!(m.len() <= DEFAULT_MTU);
    let ids: Vec<u16> = sets(&m, 0).iter().map(|s| s.0).collect();
    assert_eq!(ids, [TEMPLATE_V6, TEMPLATE_V4, TEMPLATE_V6, TEMPLATE_V4]);
    // A mixed-family record is counted, not sent.
    assert!(e.push(&rec(v4(1), v6(2), 0), 0).is_none());
    assert_eq!(e.stats().skipped, 1);
}

fn v6_octets(n: u16) -> [u8; 16] {
    match v6(n) {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(_) => unreachable!(),
    }
}

#[test]
fn templates_are_resent_by_count_and_by_time() {
    let cfg = EncoderConfig {
        template_every_messages: 3,
        template_every_ns: 10_000,
        ..EncoderConfig::default()
    };
    let mut e = Encoder::new(cfg).unwrap();
    let has_templates = |m: &[u8]| sets(m, 0)[0].0 == TEMPLATE_SET_ID;
    let mut seen = Vec::new();
    for t in 0..7 {
        e.push(&rec(v4(1), v4(2), 0), t);
        seen.push(has_templates(&e.flush(t).unwrap().bytes));
    }
    assert_eq!(seen, [true, false, false, true, false, false, true]);
    // Time: 10 µs after the last templates they are due again.
    assert!(!e.templates_due(6 + 9_999));
    assert!(e.templates_due(6 + 10_000));
    let msgs = e.template_message(6 + 10_000);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].records, 0);
    let s = sets(&msgs[0].bytes, 0);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].0, TEMPLATE_SET_ID);
    assert!(!e.templates_due(6 + 10_001));
    // A template-only message does not move the sequence.
    e.push(&rec(v4(1), v4(2), 0), 6 + 10_001);
    let m = e.flush(6 + 10_001).unwrap().bytes;
    assert_eq!(u32_at(&m, 8), 7);
}

#[test]
fn unknown_values_and_a_small_mtu() {
    let mut r = rec(v4(1), v4(2), 0);
    r.tcp = None;
    r.c2s.rtt = Rtt::default();
    r.s2c.rtt = Rtt::default();
    let mut e = Encoder::new(EncoderConfig::default()).unwrap();
    e.push(&r, 0);
    let m = e.flush(0).unwrap().bytes;
    let data = sets(&m, 0)
        .into_iter()
        .find(|(id, _)| *id == TEMPLATE_V4)
        .unwrap()
        .1;
    // nProbe: 0 = not measured; ours: all ones.
    assert_eq!(u32_at(data, 68), 0);
    assert_eq!(u32_at(data, 72), 0);
    assert_eq!(u32_at(data, 96), UNKNOWN_U32, "c2sRttMinMicroseconds");
    let tail = data.len() - 12;
    assert_eq!(u32_at(data, tail), UNKNOWN_U32, "connectMicroseconds");

    let err = Encoder::new(EncoderConfig {
        mtu: 500,
        ..EncoderConfig::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("too small"), "{err}");
}
