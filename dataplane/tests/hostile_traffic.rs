//! The bench rig's hostile traffic (`wirelens bench hostile`), scaled down
//! and untimed: the bounds it reports, asserted.
//!
//! The same healthy traffic runs three times through an engine with a small
//! table: alone (the baseline), with a SYN flood of 200k distinct spoofed
//! 5-tuples interleaved (half the frames), and with garbage frames of every
//! kind interleaved. Asserted: the table never holds more than its capacity;
//! the flood's every tuple made exactly one flow, and the flows it pushed out
//! were its own; the healthy flows alive at the end and those that left the
//! table are exactly the baseline's; every frame is accounted for exactly
//! once (a flow's packet, a parse error by reason, or non-IP).

use std::collections::{BTreeMap, BTreeSet};

use wirelens_dataplane::engine::{Engine, EngineConfig};
use wirelens_dataplane::flow::TableConfig;
use wirelens_dataplane::report::{FlowRecord, Proto, Summary, TcpState};
use wirelens_dataplane::source::synthetic::{
    is_hostile_source, FrameWriter, Garbage, Hostile, HostileConfig, HostileKind, Interleave,
    Synthetic, SyntheticConfig, MAX_FRAME,
};
use wirelens_dataplane::wire::LinkType;

const CAP: usize = 4_000;
const HEALTHY_FLOWS: usize = 1_000;
const HEALTHY_FRAMES: u64 = 200_000;

fn healthy() -> Synthetic {
    Synthetic::new(SyntheticConfig {
        seed: 7,
        flows: HEALTHY_FLOWS,
        conn_packets: 300,
        limit: Some(HEALTHY_FRAMES),
        ..SyntheticConfig::default()
    })
    .unwrap()
}

/// A flow's identity across runs.
type Id = (std::net::IpAddr, u16, std::net::IpAddr, u16, u64);
/// Its endpoints, in order.
type Tuple = (std::net::IpAddr, u16, std::net::IpAddr, u16);

fn id(r: &FlowRecord) -> Id {
    (
        r.client.ip,
        r.client.port,
        r.server.ip,
        r.server.port,
        r.first_ns,
    )
}

fn tuple(r: &FlowRecord) -> Tuple {
    let a = (r.client.ip, r.client.port);
    let b = (r.server.ip, r.server.port);
    let (x, y) = if a <= b { (a, b) } else { (b, a) };
    (x.0, x.1, y.0, y.1)
}

struct Outcome {
    frames: u64,
    summary: Summary,
    max_len: usize,
    /// Records of flows that left the table while the traffic ran.
    left: Vec<FlowRecord>,
    /// Flows alive at the end of the traffic.
    alive: Vec<FlowRecord>,
}

fn run(mut gen: impl FrameWriter) -> Outcome {
    let mut e = Engine::new(EngineConfig {
        table: TableConfig {
            capacity: CAP,
            ..TableConfig::default()
        },
    });
    let mut buf = vec![0u8; MAX_FRAME];
    let mut frames = 0;
    let mut max_len = 0;
    let mut left = Vec::new();
    while !gen.is_done() {
        let (ts, len) = gen.write_next(&mut buf);
        e.handle_frame(ts, LinkType::Ethernet, &buf[..len]);
        frames += 1;
        max_len = max_len.max(e.table().len());
        while let Some(r) = e.poll_record() {
            left.push(r);
        }
    }
    let summary = e.summary();
    e.finish();
    let mut alive = Vec::new();
    while let Some(r) = e.poll_record() {
        alive.push(r);
    }
    Outcome {
        frames,
        summary,
        max_len,
        left,
        alive,
    }
}

fn healthy_ids(v: &[FlowRecord]) -> BTreeSet<Id> {
    v.iter()
        .filter(|r| !is_hostile_source(&r.client.ip))
        .map(id)
        .collect()
}

/// Healthy flows past their handshake (or UDP) by 4-tuple, with the time
/// of the first packet their record holds.
fn established(v: &[FlowRecord]) -> BTreeMap<Tuple, u64> {
    v.iter()
        .filter(|r| !is_hostile_source(&r.client.ip))
        .filter(|r| {
            r.tcp
                .as_ref()
                .is_none_or(|t| t.state == TcpState::Established)
        })
        .map(|r| (tuple(r), r.first_ns))
        .collect()
}

/// A connection attempt never answered: SYNs from the client, nothing back.
fn syn_only(r: &FlowRecord) -> bool {
    r.proto == Proto::Tcp && r.c2s.syn > 0 && r.c2s.packets == r.c2s.syn && r.s2c.packets == 0
}

/// The flows established at the end of the baseline are established at the
/// end of `got`'s run, each from the same first packet unless its handshake
/// was evicted (`evicted`): then the flow is picked up again from the SYN/ACK.
fn same_flows(
    run: &str,
    got: &BTreeMap<Tuple, u64>,
    base: &BTreeMap<Tuple, u64>,
    evicted: &BTreeSet<Tuple>,
) {
    let lost: Vec<_> = base
        .keys()
        .filter(|k| !got.contains_key(k))
        .take(5)
        .collect();
    let new: Vec<_> = got
        .keys()
        .filter(|k| !base.contains_key(k))
        .take(5)
        .collect();
    assert!(
        lost.is_empty() && new.is_empty(),
        "{run}: {} established flows alive vs {} in the baseline; lost e.g. {lost:?}, new e.g. {new:?}",
        got.len(),
        base.len()
    );
    let restarted: Vec<_> = base
        .iter()
        .filter(|(k, t)| got[*k] != **t && !evicted.contains(*k))
        .take(5)
        .collect();
    assert!(
        restarted.is_empty(),
        "{run}: restarted without an eviction: {restarted:?}"
    );
}

fn accounted_once(o: &Outcome) {
    let flow_packets: u64 = o
        .left
        .iter()
        .chain(&o.alive)
        .map(|r| r.c2s.packets + r.s2c.packets)
        .sum();
    let errors: u64 = o.summary.parse_errors.values().sum();
    assert_eq!(o.summary.packets, o.frames);
    assert_eq!(
        flow_packets + errors + o.summary.non_ip,
        o.frames,
        "every frame is a flow's packet, a parse error or non-IP: {:?}",
        o.summary
    );
}

#[test]
fn syn_flood_and_garbage_keep_the_bounds_and_the_healthy_flows() {
    let base = run(healthy());
    assert_eq!(base.frames, HEALTHY_FRAMES);
    assert_eq!(base.summary.evicted_flows, 0, "the baseline fits the table");
    assert!(base.max_len <= CAP);
    accounted_once(&base);
    let base_left = healthy_ids(&base.left);
    let base_established = established(&base.alive);
    assert!(base_established.len() >= HEALTHY_FLOWS / 2);

    // SYN flood: 200k distinct tuples, one frame in two
    const FLOOD: u64 = 200_000;
    let flood = Hostile::new(HostileConfig {
        kind: HostileKind::SynFlood,
        tuples: FLOOD,
        ..HostileConfig::default()
    })
    .unwrap();
    let o = run(Interleave::new(healthy(), flood, 0.5, Some(FLOOD)).unwrap());
    assert_eq!(o.frames, HEALTHY_FRAMES + FLOOD);
    assert!(o.max_len <= CAP, "table held {} > {CAP}", o.max_len);
    accounted_once(&o);
    // each flood tuple made exactly one flow: distinct, and all counted
    let flood_left: Vec<&FlowRecord> = o
        .left
        .iter()
        .filter(|r| is_hostile_source(&r.client.ip))
        .collect();
    let flood_alive = o
        .alive
        .iter()
        .filter(|r| is_hostile_source(&r.client.ip))
        .count() as u64;
    assert_eq!(flood_left.len() as u64 + flood_alive, FLOOD);
    assert!(flood_left.iter().all(|r| syn_only(r) && r.c2s.syn == 1));
    // What the flood pushed out: its own never-answered SYNs, and healthy
    // connections still waiting for their SYN/ACK (no different from a
    // flood SYN until answered); never a flow past its handshake.
    let extra: Vec<&FlowRecord> = o
        .left
        .iter()
        .filter(|r| !is_hostile_source(&r.client.ip) && !base_left.contains(&id(r)))
        .collect();
    for r in &extra {
        assert!(syn_only(r), "a healthy flow past its handshake left: {r:?}");
    }
    assert_eq!(
        o.summary.evicted_flows,
        (flood_left.len() + extra.len()) as u64
    );
    assert!(o.summary.evicted_flows >= FLOOD - CAP as u64);
    assert!(
        extra.len() < HEALTHY_FLOWS / 5,
        "{} handshakes in progress evicted",
        extra.len()
    );
    // every flow alive and established at the end of the baseline is alive
    // and established at the end of the flood, from the same first packet
    // unless its handshake was evicted
    let evicted: BTreeSet<Tuple> = extra.iter().map(|r| tuple(r)).collect();
    same_flows("flood", &established(&o.alive), &base_established, &evicted);

    // garbage: 100k frames, every kind, one frame in three
    const GARBAGE: u64 = 100_000;
    let garbage = Hostile::new(HostileConfig {
        kind: HostileKind::Garbage,
        ..HostileConfig::default()
    })
    .unwrap();
    let g = run(Interleave::new(healthy(), garbage, 1.0 / 3.0, Some(GARBAGE)).unwrap());
    assert_eq!(g.frames, HEALTHY_FRAMES + GARBAGE);
    assert!(g.max_len <= CAP);
    accounted_once(&g);
    assert_eq!(g.summary.evicted_flows, 0);
    same_flows(
        "garbage",
        &established(&g.alive),
        &base_established,
        &BTreeSet::new(),
    );
    // the drops are counted by reason, and each kind of garbage left a trace
    let reasons = &g.summary.parse_errors;
    for r in [
        "truncated_ethernet",
        "truncated_ipv4",
        "bad_ipv4_header",
        "bad_ipv4_length",
        "ipv6_ext_too_long",
        "bad_tcp_offset",
        "truncated_tcp",
        "bad_tcp_length",
        "bad_ip_version",
        "truncated_udp",
    ] {
        assert!(
            reasons.get(r).is_some_and(|&n| n > 0),
            "no {r}: {reasons:?}"
        );
    }
    assert!(g.summary.non_ip > 0);
    let errors: u64 = reasons.values().sum();
    assert!(errors + g.summary.non_ip >= GARBAGE / 2, "{reasons:?}");
    assert!(g.summary.fragments.ipv4 > 0 && g.summary.fragments.ipv6 > 0);
}

#[test]
fn hostile_generator_is_deterministic_and_sends_every_kind() {
    let mk = || {
        Hostile::new(HostileConfig {
            kind: HostileKind::Mixed,
            tuples: 1000,
            seed: 3,
            ..HostileConfig::default()
        })
        .unwrap()
    };
    let (mut a, mut b) = (mk(), mk());
    let (mut x, mut y) = (vec![0u8; MAX_FRAME], vec![0u8; MAX_FRAME]);
    for _ in 0..10_000 {
        let n = a.write(&mut x);
        assert_eq!(n, b.write(&mut y));
        assert_eq!(x[..n], y[..n]);
    }
    let s = a.stats();
    assert_eq!(s.syn_flood, 5000);
    assert_eq!(s.distinct_tuples, 1000);
    for g in Garbage::ALL {
        assert!(s.garbage[g as usize] >= 5000 / 8, "{}", g.as_str());
    }
    assert!(Hostile::new(HostileConfig {
        tuples: 0,
        ..HostileConfig::default()
    })
    .is_err());
}
