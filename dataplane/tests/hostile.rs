//! Hostile and arbitrary input through the whole engine (frames in, records
//! out): invariants, not only "no panic".
//!
//! * a SYN flood of distinct 5-tuples keeps the table within its capacity,
//!   counts what it evicted, and does not push out established flows;
//! * arbitrary (mutated) frame sequences: every frame is accounted for
//!   exactly once (a flow's packet, a parse error or non-IP), and the flows'
//!   packets and bytes add up to the summary's.

use wirelens_dataplane::engine::{Engine, EngineConfig};
use wirelens_dataplane::flow::TableConfig;
use wirelens_dataplane::report::FlowRecord;
use wirelens_dataplane::wire::LinkType;

const T0: u64 = 1_700_000_000 * 1_000_000_000;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Ethernet/IPv4/TCP frame (no options) with `payload` zero bytes.
#[expect(
    clippy::too_many_arguments,
    reason = "one argument per header field a test sets"
)]
fn tcp(
    src: [u8; 4],
    dst: [u8; 4],
    sp: u16,
    dp: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: usize,
) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    let total = (40 + payload) as u16;
    f.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        1,
        0x40,
        0,
        64,
        6,
        0,
        0,
    ]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&sp.to_be_bytes());
    f.extend_from_slice(&dp.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&ack.to_be_bytes());
    f.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f.resize(f.len() + payload, 0);
    f
}

fn udp(src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16, payload: usize) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    let total = (28 + payload) as u16;
    f.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        1,
        0,
        0,
        64,
        17,
        0,
        0,
    ]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&sp.to_be_bytes());
    f.extend_from_slice(&dp.to_be_bytes());
    f.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.resize(f.len() + payload, 0);
    f
}

fn drain(e: &mut Engine) -> Vec<FlowRecord> {
    let mut v = Vec::new();
    while let Some(r) = e.poll_record() {
        v.push(r);
    }
    v
}

#[test]
fn syn_flood_stays_within_the_table_and_spares_healthy_flows() {
    const CAP: usize = 2_000;
    const HEALTHY: u16 = 100;
    const FLOOD: u32 = 200_000;
    let cfg = EngineConfig {
        table: TableConfig {
            capacity: CAP,
            ..TableConfig::default()
        },
    };
    let mut e = Engine::new(cfg);
    let server = [198, 19, 0, 1];
    let mut now = T0;
    // established, healthy connections
    for p in 0..HEALTHY {
        let c = [198, 18, 0, 1];
        let cp = 10_000 + p;
        e.handle_frame(
            now,
            LinkType::Ethernet,
            &tcp(c, server, cp, 443, 1, 0, 0x02, 0),
        );
        e.handle_frame(
            now + 1000,
            LinkType::Ethernet,
            &tcp(server, c, 443, cp, 9, 2, 0x12, 0),
        );
        e.handle_frame(
            now + 2000,
            LinkType::Ethernet,
            &tcp(c, server, cp, 443, 2, 10, 0x10, 0),
        );
        e.handle_frame(
            now + 3000,
            LinkType::Ethernet,
            &tcp(c, server, cp, 443, 2, 10, 0x18, 100),
        );
        now += 10_000;
    }
    // the flood: distinct spoofed sources, never answered
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let server = [198, 19, 255, 254];
    let mut evicted_records = 0u64;
    for i in 0..FLOOD {
        // unique 5-tuples: 2^17 addresses in 198.18.0.0/15, then new ports
        let src = [198, 18 + ((i >> 16) & 1) as u8, (i >> 8) as u8, i as u8];
        let sp = 1024 + (i >> 17) as u16;
        now += 100;
        e.handle_frame(
            now,
            LinkType::Ethernet,
            &tcp(src, server, sp, 443, rng.next() as u32, 0, 0x02, 0),
        );
        assert!(e.table().len() <= CAP, "table grew past its capacity");
        evicted_records += drain(&mut e).len() as u64;
    }
    let s = e.summary();
    assert_eq!(s.evicted_flows, evicted_records);
    assert!(
        s.evicted_flows >= u64::from(FLOOD) - CAP as u64,
        "{}",
        s.evicted_flows
    );
    // the healthy flows are still in the table: none of them came out
    e.finish();
    let rest = drain(&mut e);
    let healthy_left = rest
        .iter()
        .filter(|r| r.server.port == 443 && r.c2s.payload_bytes == 100)
        .count();
    assert_eq!(healthy_left, usize::from(HEALTHY));
}

#[test]
fn arbitrary_frames_are_each_accounted_for_once() {
    let mut rng = Rng(42);
    let mut e = Engine::new(EngineConfig {
        table: TableConfig {
            capacity: 64,
            ..TableConfig::default()
        },
    });
    let hosts = [[198, 18, 0, 1], [198, 18, 0, 2], [198, 18, 0, 3]];
    let mut out: Vec<FlowRecord> = Vec::new();
    let mut now = T0;
    let n_frames = 60_000u64;
    for _ in 0..n_frames {
        let a = hosts[rng.below(3) as usize];
        let b = hosts[rng.below(3) as usize];
        let mut f = if rng.below(3) == 0 {
            udp(
                a,
                b,
                rng.below(4) as u16 + 5000,
                53,
                rng.below(1400) as usize,
            )
        } else {
            let flags =
                [0x02u8, 0x12, 0x10, 0x18, 0x11, 0x04, 0x14, 0x00, 0xff][rng.below(9) as usize];
            tcp(
                a,
                b,
                rng.below(4) as u16 + 40000,
                443,
                rng.next() as u32 % 100_000,
                rng.next() as u32 % 100_000,
                flags,
                rng.below(1400) as usize,
            )
        };
        // mutate: flip bytes anywhere, or cut the frame
        match rng.below(5) {
            0 => {
                for _ in 0..=rng.below(4) {
                    let i = rng.below(f.len() as u64) as usize;
                    f[i] = rng.next() as u8;
                }
            }
            1 => f.truncate(rng.below(f.len() as u64) as usize),
            _ => {}
        }
        // time mostly forward, sometimes a little backwards (captures do that)
        now = if rng.below(50) == 0 {
            now.saturating_sub(rng.below(1_000_000))
        } else {
            now + rng.below(5_000_000)
        };
        e.handle_frame(now, LinkType::Ethernet, &f);
        out.extend(drain(&mut e));
    }
    let s = e.summary();
    e.finish();
    out.extend(drain(&mut e));
    let flow_packets: u64 = out.iter().map(|r| r.c2s.packets + r.s2c.packets).sum();
    let flow_bytes: u64 = out.iter().map(|r| r.c2s.bytes + r.s2c.bytes).sum();
    let errors: u64 = s.parse_errors.values().sum();
    assert_eq!(s.packets, n_frames);
    assert_eq!(flow_packets + errors + s.non_ip, n_frames, "{s:?}");
    assert_eq!(flow_bytes, s.bytes);
    let counted = s.flows.tcp + s.flows.udp + s.flows.icmp + s.flows.other;
    assert_eq!(counted, out.len() as u64);
    // the live summary's TCP totals (taken before finish) are what the
    // records add up to
    let mut totals = wirelens_dataplane::report::TcpTotals::default();
    for r in out
        .iter()
        .filter(|r| r.proto == wirelens_dataplane::report::Proto::Tcp)
    {
        totals.add_flow(r);
    }
    assert_eq!(totals, s.tcp);
    assert!(
        errors > 0 && flow_packets > n_frames / 2,
        "the mutations must exercise both paths"
    );
    for r in &out {
        assert!(r.first_ns <= r.last_ns);
        for d in [&r.c2s, &r.s2c] {
            assert!(d.payload_bytes <= d.bytes);
            assert!(d.retransmits <= d.retrans_seen + d.hole_fill);
            assert!(d.out_of_order <= d.hole_fill);
            if let (Some(min), Some(p50), Some(max)) = (d.rtt.min_ns, d.rtt.p50_ns, d.rtt.max_ns) {
                assert!(min <= p50 && p50 <= max);
            }
        }
    }
}
