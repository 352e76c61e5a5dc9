//! Scenario tests of the flow engine on a virtual clock: packet sequences with
//! known loss before / after the tap, reordering, SYN retries, resets, zero
//! window, timestamps present and absent, sequence wrap-around and port reuse.
//! No sockets, no files: each test builds `PacketMeta`s and feeds the engine.

use wirelens_dataplane::engine::{Engine, EngineConfig};
use wirelens_dataplane::flow::TableConfig;
use wirelens_dataplane::meta::{proto, tcp_flags as F, Addr, PacketMeta, TcpMeta, TcpOpts};
use wirelens_dataplane::report::{FlowRecord, Proto, Side, TcpPath, TcpState};

const MS: u64 = 1_000_000;
const T0: u64 = 1_700_000_000 * 1_000_000_000;
const MSS: u32 = 1000;

/// A client and a server talking through the tap, with a virtual clock.
struct Sim {
    engine: Engine,
    now: u64,
    c: Addr,
    s: Addr,
    cport: u16,
    sport: u16,
    ts: bool,
    tsval: u32,
    /// IP TTL, ECN bits and the SYN's MSS option of the next packets.
    ttl: u8,
    ecn: u8,
    mss: u16,
}

impl Sim {
    fn new() -> Sim {
        Sim::with_config(EngineConfig::default())
    }

    fn with_config(cfg: EngineConfig) -> Sim {
        Sim {
            engine: Engine::new(cfg),
            now: T0,
            c: Addr::from_v4([198, 18, 0, 1]),
            s: Addr::from_v4([198, 19, 0, 1]),
            cport: 40000,
            sport: 443,
            ts: false,
            tsval: 1000,
            ttl: 64,
            ecn: 0,
            mss: 1460,
        }
    }

    fn at(&mut self, ms_from_start: f64) -> &mut Self {
        self.now = T0 + (ms_from_start * MS as f64) as u64;
        self
    }

    fn pkt(&mut self, from_client: bool, flags: u8, seq: u32, ack: u32, len: u32, win: u16) {
        let (src, dst, sp, dp) = if from_client {
            (self.c, self.s, self.cport, self.sport)
        } else {
            (self.s, self.c, self.sport, self.cport)
        };
        let mut opts = TcpOpts::default();
        if flags & F::SYN != 0 {
            opts.mss = Some(self.mss);
            opts.wscale = Some(7);
            opts.sack_ok = true;
        }
        if self.ts {
            // TSval: the virtual clock in ms; TSecr: what the peer last sent,
            // approximated by the same clock minus nothing (tests set echo).
            opts.ts = Some((self.tsval, 0));
        }
        let m = PacketMeta {
            ts_ns: self.now,
            src,
            dst,
            sport: sp,
            dport: dp,
            proto: proto::TCP,
            ip_len: 52 + len,
            payload_len: len,
            is_v6: !src.is_v4(),
            ttl: self.ttl,
            ecn: self.ecn,
            tcp: TcpMeta {
                seq,
                ack,
                flags,
                window: win,
                opts,
            },
            ..PacketMeta::default()
        };
        self.engine.handle_meta(&m);
    }

    fn c(&mut self, flags: u8, seq: u32, ack: u32, len: u32) {
        self.pkt(true, flags, seq, ack, len, 1000);
    }

    fn s(&mut self, flags: u8, seq: u32, ack: u32, len: u32) {
        self.pkt(false, flags, seq, ack, len, 1000);
    }

    fn records(&mut self) -> Vec<FlowRecord> {
        self.engine.finish();
        let mut v = Vec::new();
        while let Some(r) = self.engine.poll_record() {
            v.push(r);
        }
        v
    }

    fn one(&mut self) -> FlowRecord {
        let mut v = self.records();
        assert_eq!(v.len(), 1, "{v:#?}");
        v.pop().unwrap()
    }

    /// SYN at 0 ms, SYN/ACK at 10 ms, ACK at 11 ms. Client ISN `ci`, server ISN `si`.
    fn handshake(&mut self, ci: u32, si: u32) {
        self.at(0.0).c(F::SYN, ci, 0, 0);
        self.at(10.0).s(F::SYN | F::ACK, si, ci.wrapping_add(1), 0);
        self.at(11.0)
            .c(F::ACK, ci.wrapping_add(1), si.wrapping_add(1), 0);
    }
}

const A: u8 = F::ACK;
const PA: u8 = F::ACK | F::PSH;

#[test]
fn clean_connection_handshake_rtt_and_close() {
    let mut sim = Sim::new();
    sim.handshake(100, 5000);
    // three segments, each acked 10 ms later
    for i in 0..3u32 {
        let t = 20.0 + 20.0 * f64::from(i);
        sim.at(t).c(PA, 101 + i * MSS, 5001, MSS);
        sim.at(t + 10.0).s(A, 5001, 101 + (i + 1) * MSS, 0);
    }
    sim.at(100.0).c(F::FIN | A, 3101, 5001, 0);
    sim.at(110.0).s(F::FIN | A, 5001, 3102, 0);
    sim.at(111.0).c(A, 3102, 5002, 0);
    let r = sim.one();
    assert_eq!(r.proto, Proto::Tcp);
    assert_eq!(r.client.port, 40000);
    assert_eq!(r.server.port, 443);
    assert_eq!(r.c2s.packets, 7);
    assert_eq!(r.s2c.packets, 5);
    assert_eq!(r.c2s.payload_bytes, 3000);
    assert_eq!(r.c2s.bytes, 7 * 52 + 3000);
    assert_eq!(
        (r.c2s.syn, r.s2c.synack, r.c2s.fin, r.s2c.fin),
        (1, 1, 1, 1)
    );
    assert_eq!(
        r.c2s.retransmits + r.c2s.retrans_seen + r.c2s.hole_fill + r.c2s.gaps,
        0
    );
    let tcp = r.tcp.unwrap();
    assert_eq!(tcp.state, TcpState::Closed);
    let hs = tcp.handshake.unwrap();
    assert_eq!(hs.syn_to_synack_ns, Some(10 * MS));
    assert_eq!(hs.synack_to_ack_ns, Some(MS));
    assert_eq!(hs.connect_ns, Some(11 * MS));
    assert_eq!((hs.syn_count, hs.synack_count), (1, 1));
    assert_eq!(tcp.mss.client, Some(1460));
    assert!(tcp.sack_ok && !tcp.ts_ok);
    // seq -> ACK RTT without timestamps: three samples of 10 ms (+ the FIN)
    assert!(r.c2s.rtt.n >= 3, "{:?}", r.c2s.rtt);
    let p50 = r.c2s.rtt.p50_ns.unwrap();
    assert!((p50 as f64 - 10e6).abs() / 10e6 <= 0.02, "p50 {p50}");
    assert_eq!(r.c2s.rtt.min_ns, Some(10 * MS));
    assert_eq!(r.c2s.rtt.max_ns, Some(10 * MS));
}

#[test]
fn loss_after_the_tap_is_retrans_seen_and_fast_retransmission() {
    let mut sim = Sim::new();
    sim.handshake(0, 0);
    // 4 segments pass the tap; the 2nd is lost after it
    for i in 0..4u32 {
        sim.at(20.0 + f64::from(i) * 0.1).c(PA, 1 + i * MSS, 1, MSS);
    }
    sim.at(30.0).s(A, 1, 1 + MSS, 0); // acks seg 1
    sim.at(30.1).s(A, 1, 1 + MSS, 0); // dup ack (seg 3 arrived)
    sim.at(30.2).s(A, 1, 1 + MSS, 0); // dup ack (seg 4 arrived)
    sim.at(30.3).c(PA, 1 + MSS, 1, MSS); // fast retransmission of seg 2
    sim.at(40.3).s(A, 1, 1 + 4 * MSS, 0);
    let r = sim.one();
    assert_eq!(r.c2s.retrans_seen, 1);
    assert_eq!(r.c2s.hole_fill, 0);
    assert_eq!(r.c2s.gaps, 0);
    assert_eq!(r.c2s.retransmits, 1);
    assert_eq!(r.c2s.fast_retransmits, 1);
    assert_eq!(r.s2c.dup_acks, 2);
}

#[test]
fn loss_before_the_tap_is_gap_then_hole_fill() {
    let mut sim = Sim::new();
    sim.handshake(0, 0);
    sim.at(20.0).c(PA, 1, 1, MSS);
    // seg 2 lost before the tap
    sim.at(20.1).c(PA, 1 + 2 * MSS, 1, MSS);
    sim.at(20.2).c(PA, 1 + 3 * MSS, 1, MSS);
    sim.at(30.0).s(A, 1, 1 + MSS, 0);
    sim.at(30.1).s(A, 1, 1 + MSS, 0);
    sim.at(30.2).s(A, 1, 1 + MSS, 0);
    // retransmission arrives 250 ms after the highest segment: RTO, not reordering
    sim.at(270.0).c(PA, 1 + MSS, 1, MSS);
    sim.at(280.0).s(A, 1, 1 + 4 * MSS, 0);
    let r = sim.one();
    assert_eq!(r.c2s.gaps, 1);
    assert_eq!(r.c2s.hole_fill, 1);
    assert_eq!(r.c2s.retrans_seen, 0);
    assert_eq!(r.c2s.out_of_order, 0);
    assert_eq!(r.c2s.retransmits, 1);
    assert_eq!(r.c2s.rto_retransmits, 1);
}

#[test]
fn reordering_within_the_initial_rtt_is_out_of_order_not_loss() {
    let mut sim = Sim::new();
    sim.handshake(0, 0); // iRTT 11 ms
    sim.at(20.0).c(PA, 1, 1, MSS);
    sim.at(20.1).c(PA, 1 + 2 * MSS, 1, MSS);
    sim.at(20.5).c(PA, 1 + MSS, 1, MSS); // late by 0.4 ms
    let r = sim.one();
    assert_eq!(r.c2s.gaps, 1);
    assert_eq!(r.c2s.hole_fill, 1);
    assert_eq!(r.c2s.out_of_order, 1);
    assert_eq!(r.c2s.retransmits, 0);
}

#[test]
fn spurious_retransmission_of_acked_data() {
    let mut sim = Sim::new();
    sim.handshake(0, 0);
    sim.at(20.0).c(PA, 1, 1, MSS);
    sim.at(30.0).s(A, 1, 1 + MSS, 0);
    sim.at(300.0).c(PA, 1, 1, MSS); // already acked
    let r = sim.one();
    assert_eq!(r.c2s.retrans_seen, 1);
    assert_eq!(r.c2s.spurious_retransmits, 1);
    assert_eq!(r.c2s.retransmits, 1);
}

#[test]
fn syn_retries_time_the_last_syn_and_the_wait() {
    let mut sim = Sim::new();
    sim.at(0.0).c(F::SYN, 7, 0, 0);
    sim.at(1000.0).c(F::SYN, 7, 0, 0);
    sim.at(3000.0).c(F::SYN, 7, 0, 0);
    sim.at(3010.0).s(F::SYN | A, 99, 8, 0);
    sim.at(3012.0).c(A, 8, 100, 0);
    let r = sim.one();
    let hs = r.tcp.as_ref().unwrap().handshake.clone().unwrap();
    assert_eq!(hs.syn_count, 3);
    assert_eq!(hs.syn_to_synack_ns, Some(10 * MS));
    assert_eq!(hs.synack_to_ack_ns, Some(2 * MS));
    assert_eq!(hs.connect_ns, Some(3012 * MS));
    assert_eq!(r.c2s.syn, 3);
    // SYN retries are handshake retries, not data retransmissions
    assert_eq!(r.c2s.retransmits, 0);
    assert_eq!(r.tcp.unwrap().state, TcpState::Established);
}

#[test]
fn refused_and_reset_connections() {
    let mut sim = Sim::new();
    sim.at(0.0).c(F::SYN, 7, 0, 0);
    sim.at(1.0).s(F::RST | A, 0, 8, 0);
    let r = sim.one();
    assert_eq!(r.tcp.as_ref().unwrap().state, TcpState::Refused);
    assert_eq!(r.tcp.as_ref().unwrap().rst_from, Some(Side::Server));
    assert_eq!(r.s2c.rst, 1);

    let mut sim = Sim::new();
    sim.handshake(0, 0);
    sim.at(20.0).c(PA, 1, 1, MSS);
    sim.at(25.0).c(F::RST | A, 1 + MSS, 1, 0);
    let r = sim.one();
    let tcp = r.tcp.unwrap();
    assert_eq!(tcp.state, TcpState::Reset);
    assert_eq!(tcp.rst_from, Some(Side::Client));
}

#[test]
fn unanswered_syn_expires_as_timed_out() {
    let mut sim = Sim::new();
    sim.at(0.0).c(F::SYN, 7, 0, 0);
    sim.engine.poll_expired(T0 + 60_000 * MS, 1024);
    let r = sim.engine.poll_record().expect("expired record");
    assert_eq!(r.tcp.unwrap().state, TcpState::TimedOut);
}

#[test]
fn zero_window_adverts_and_stall_time() {
    let mut sim = Sim::new();
    sim.handshake(0, 0);
    sim.at(20.0).c(PA, 1, 1, MSS);
    sim.at(30.0).pkt(false, A, 1, 1 + MSS, 0, 0); // server: window 0
    sim.at(530.0).pkt(false, A, 1, 1 + MSS, 0, 0); // still 0
    sim.at(2030.0).pkt(false, A, 1, 1 + MSS, 0, 512); // opens
    sim.at(2031.0).c(PA, 1 + MSS, 1, MSS);
    let r = sim.one();
    assert_eq!(r.s2c.zero_window, 2);
    assert_eq!(r.s2c.zero_window_events, 1);
    assert_eq!(r.s2c.zero_window_ns, 2000 * MS);
    assert_eq!(r.c2s.zero_window, 0);
}

#[test]
fn timestamps_give_rtt_samples_per_direction() {
    let mut sim = Sim::new();
    sim.ts = true;
    sim.handshake(0, 0);
    // client data with TSval k, server echoes it 40 ms later
    for i in 0..10u32 {
        sim.tsval = 2000 + i;
        let t = 20.0 + f64::from(i) * 50.0;
        sim.at(t).c(PA, 1 + i * MSS, 1, MSS);
        // server ACK echoing TSval
        let m = PacketMeta {
            ts_ns: T0 + ((t + 40.0) * MS as f64) as u64,
            src: sim.s,
            dst: sim.c,
            sport: sim.sport,
            dport: sim.cport,
            proto: proto::TCP,
            ip_len: 52,
            tcp: TcpMeta {
                seq: 1,
                ack: 1 + (i + 1) * MSS - 500, // acks only part: no seq match
                flags: A,
                window: 1000,
                opts: TcpOpts {
                    ts: Some((9000 + i, 2000 + i)),
                    ..TcpOpts::default()
                },
            },
            ..PacketMeta::default()
        };
        sim.engine.handle_meta(&m);
    }
    let r = sim.one();
    // 10 samples; the first also stands for the SYN/ACK, which acknowledged
    // the client's SYN without a matching echo: n counts advancing ACKs.
    assert_eq!(r.c2s.rtt.n, 11, "{:?}", r.c2s.rtt);
    assert_eq!(r.c2s.rtt.min_ns, Some(40 * MS));
    assert_eq!(r.c2s.rtt.last_ns, Some(40 * MS));
}

#[test]
fn karn_rule_discards_samples_of_retransmitted_data() {
    let mut sim = Sim::new();
    sim.handshake(0, 0);
    sim.at(20.0).c(PA, 1, 1, MSS);
    sim.at(220.0).c(PA, 1, 1, MSS); // retransmitted (timer)
    sim.at(230.0).s(A, 1, 1 + MSS, 0);
    let r = sim.one();
    assert_eq!(r.c2s.rtt.n, 0, "{:?}", r.c2s.rtt);
    assert_eq!(r.c2s.rto_retransmits, 1);
}

#[test]
fn sequence_wraparound() {
    let mut sim = Sim::new();
    let isn = u32::MAX - 1500;
    sim.handshake(isn, 10);
    let base = isn.wrapping_add(1);
    sim.at(20.0).c(PA, base, 11, MSS);
    // seg 2 (crosses the wrap) lost before the tap, seg 3 after the wrap
    sim.at(20.1).c(PA, base.wrapping_add(2 * MSS), 11, MSS);
    sim.at(30.0).s(A, 11, base.wrapping_add(MSS), 0);
    sim.at(300.0).c(PA, base.wrapping_add(MSS), 11, MSS);
    sim.at(310.0).s(A, 11, base.wrapping_add(3 * MSS), 0);
    sim.at(311.0).c(PA, base.wrapping_add(3 * MSS), 11, MSS);
    sim.at(400.0).c(PA, base.wrapping_add(3 * MSS), 11, MSS); // seen again
    let r = sim.one();
    assert_eq!(r.c2s.gaps, 1);
    assert_eq!(r.c2s.hole_fill, 1);
    assert_eq!(r.c2s.retrans_seen, 1);
    assert_eq!(r.c2s.retransmits, 2);
}

#[test]
fn new_syn_on_a_closed_tuple_starts_a_new_record() {
    let mut sim = Sim::new();
    sim.handshake(100, 200);
    sim.at(20.0).c(F::FIN | A, 101, 201, 0);
    sim.at(21.0).s(F::FIN | A, 201, 102, 0);
    sim.at(22.0).c(A, 102, 202, 0);
    sim.at(500.0).c(F::SYN, 90_000, 0, 0);
    sim.at(510.0).s(F::SYN | A, 7, 90_001, 0);
    let v = sim.records();
    assert_eq!(v.len(), 2, "{v:#?}");
    let closed = v
        .iter()
        .find(|r| r.tcp.as_ref().unwrap().state == TcpState::Closed);
    assert!(closed.is_some());
    assert_eq!(v.iter().map(|r| r.c2s.syn).sum::<u64>(), 2);
    // a repeated SYN (same ISN) is a retry, not a new connection
    let mut sim = Sim::new();
    sim.at(0.0).c(F::SYN, 5, 0, 0);
    sim.at(1000.0).c(F::SYN, 5, 0, 0);
    assert_eq!(sim.records().len(), 1);
}

#[test]
fn full_table_evicts_unanswered_syns_first_and_counts() {
    let cfg = EngineConfig {
        table: TableConfig {
            capacity: 2,
            ..TableConfig::default()
        },
    };
    let mut sim = Sim::with_config(cfg);
    sim.handshake(0, 0); // healthy flow
    sim.cport = 40001;
    sim.at(12.0).c(F::SYN, 0, 0, 0); // never answered
    sim.cport = 40002;
    sim.at(13.0).c(F::SYN, 0, 0, 0); // table full: evicts the SYN-only flow
    let evicted = sim.engine.poll_record().expect("an evicted record");
    assert_eq!(evicted.client.port, 40001);
    assert_eq!(sim.engine.summary().evicted_flows, 1);
    let rest = sim.records();
    assert_eq!(rest.len(), 2);
    assert!(rest.iter().any(|r| r.client.port == 40000));
}

#[test]
fn udp_flow_counts_and_bursts() {
    let mut e = Engine::new(EngineConfig::default());
    let c = Addr::from_v4([198, 18, 0, 1]);
    let s = Addr::from_v4([198, 18, 0, 2]);
    // 10 packets in one 1 ms bin, then 3 in another
    for i in 0..13u64 {
        let t = if i < 10 {
            T0 + 5 * MS + i * 10_000
        } else {
            T0 + 9 * MS + i
        };
        e.handle_meta(&PacketMeta {
            ts_ns: t,
            src: c,
            dst: s,
            sport: 5000,
            dport: 53,
            proto: proto::UDP,
            ip_len: 128,
            payload_len: 100,
            ..PacketMeta::default()
        });
    }
    e.finish();
    let r = e.poll_record().unwrap();
    assert_eq!(r.proto, Proto::Udp);
    assert_eq!(r.c2s.packets, 13);
    assert_eq!(r.c2s.bytes, 13 * 128);
    assert_eq!(r.c2s.burst.max_packets_1ms, 10);
    assert_eq!(r.c2s.burst.max_bytes_1ms, 1280);
    assert!(r.tcp.is_none());
    let s = e.summary();
    assert_eq!(s.flows.udp, 1);
    assert_eq!(s.max_packets_1ms, 10);
}

#[test]
fn icmp_frag_needed_is_attributed_to_the_quoted_flow() {
    use wirelens_dataplane::meta::{IcmpMeta, Quoted};
    let mut sim = Sim::new();
    sim.handshake(0, 0);
    sim.at(20.0).c(PA, 1, 1, 1448);
    // the router on the path (not an endpoint of the flow) says: MTU 1400
    let router = Addr::from_v4([198, 18, 0, 254]);
    let err = PacketMeta {
        ts_ns: sim.now + MS,
        src: router,
        dst: sim.c,
        proto: proto::ICMP,
        ip_len: 56 + 28,
        icmp: IcmpMeta {
            icmp_type: 3,
            code: 4,
            mtu: Some(1400),
            quoted: Some(Quoted {
                src: sim.c,
                dst: sim.s,
                sport: sim.cport,
                dport: sim.sport,
                proto: proto::TCP,
            }),
        },
        ..PacketMeta::default()
    };
    sim.engine.handle_meta(&err);
    sim.engine.handle_meta(&PacketMeta {
        icmp: IcmpMeta {
            mtu: Some(1300),
            ..err.icmp
        },
        ..err
    });
    let s = sim.engine.summary();
    assert_eq!(s.icmp.frag_needed, 2);
    assert_eq!(s.icmp.mtus, vec![1300, 1400]);
    let v = sim.records();
    let tcp = v.iter().find(|r| r.proto == Proto::Tcp).unwrap();
    let pmtu = tcp.pmtu.clone().expect("pmtu on the quoted flow");
    assert_eq!(pmtu.icmp_errors, 2);
    assert_eq!(pmtu.mtu, Some(1300));
    // the ICMP messages are a flow of their own (router -> client)
    assert!(v
        .iter()
        .any(|r| r.proto == Proto::Icmp && r.c2s.packets == 2));
}

#[test]
fn later_fragments_join_the_flow_of_their_first_fragment() {
    use wirelens_dataplane::meta::Frag;
    let mut e = Engine::new(EngineConfig::default());
    let c = Addr::from_v4([198, 18, 0, 1]);
    let s = Addr::from_v4([198, 18, 0, 2]);
    let base = PacketMeta {
        ts_ns: T0,
        src: c,
        dst: s,
        proto: proto::UDP,
        frag_id: 77,
        ..PacketMeta::default()
    };
    // a 3000-byte datagram in three fragments: only the first has ports
    e.handle_meta(&PacketMeta {
        sport: 4000,
        dport: 9000,
        ip_len: 1500,
        payload_len: 1472,
        frag: Frag::First,
        ..base
    });
    for i in 1..3u64 {
        e.handle_meta(&PacketMeta {
            ts_ns: T0 + i,
            ip_len: 1500,
            payload_len: 1480,
            frag: Frag::Later,
            ..base
        });
    }
    assert_eq!(e.summary().fragments.ipv4, 3);
    e.finish();
    let r = e.poll_record().unwrap();
    assert!(e.poll_record().is_none(), "all fragments in one flow");
    assert_eq!((r.client.port, r.server.port), (4000, 9000));
    assert_eq!(r.c2s.packets, 3);
    assert_eq!(r.c2s.frags, 3);
    assert_eq!(r.c2s.bytes, 4500);
}

#[test]
fn tsvals_tell_reordering_from_retransmission() {
    // with timestamps, a hole fill sent before the highest segment (older
    // TSval) is reordering, however late it arrives; one sent after it
    // (newer TSval) is a retransmission, however soon it arrives.
    let mut sim = Sim::new();
    sim.ts = true;
    sim.handshake(0, 0); // iRTT 11 ms
    sim.tsval = 100;
    sim.at(20.0).c(PA, 1, 1, MSS);
    sim.tsval = 101;
    sim.at(21.0).c(PA, 1 + 2 * MSS, 1, MSS); // seg 2 missing
    sim.tsval = 100;
    sim.at(60.0).c(PA, 1 + MSS, 1, MSS); // seg 2, sent before seg 3, 39 ms late
    sim.tsval = 102;
    sim.at(61.0).c(PA, 1 + 4 * MSS, 1, MSS); // seg 4 missing
    sim.tsval = 103;
    sim.at(61.5).c(PA, 1 + 3 * MSS, 1, MSS); // seg 4 retransmitted 0.5 ms later
    let r = sim.one();
    assert_eq!(r.c2s.gaps, 2);
    assert_eq!(r.c2s.hole_fill, 2);
    assert_eq!(r.c2s.out_of_order, 1);
    assert_eq!(r.c2s.retransmits, 1);
}

/// Cross-queue reordering: the SYN/ACK reaches the engine before the SYN that
/// another queue carried (the SYN's capture timestamp is still the earlier).
#[test]
fn late_syn_after_its_synack_joins_the_record() {
    let mut sim = Sim::new();
    sim.at(10.0).s(F::SYN | A, 5000, 101, 0);
    sim.at(0.0).c(F::SYN, 100, 0, 0);
    sim.at(11.0).c(A, 101, 5001, 0);
    sim.at(20.0).c(PA, 101, 5001, MSS);
    sim.at(30.0).s(A, 5001, 101 + MSS, 0);
    let r = sim.one();
    // the same packets in order give the same record, field for field
    let mut inorder = Sim::new();
    inorder.at(0.0).c(F::SYN, 100, 0, 0);
    inorder.at(10.0).s(F::SYN | A, 5000, 101, 0);
    inorder.at(11.0).c(A, 101, 5001, 0);
    inorder.at(20.0).c(PA, 101, 5001, MSS);
    inorder.at(30.0).s(A, 5001, 101 + MSS, 0);
    assert_eq!(r, inorder.one());
    assert_eq!((r.client.port, r.server.port), (40000, 443));
    assert_eq!(r.first_ns, T0);
    assert_eq!((r.c2s.packets, r.s2c.packets), (3, 2));
    assert_eq!((r.c2s.syn, r.s2c.synack), (1, 1));
    assert_eq!(r.c2s.retransmits + r.s2c.retransmits, 0);
    let tcp = r.tcp.unwrap();
    assert_eq!(tcp.state, TcpState::Established);
    assert_eq!(tcp.mss.client, Some(1460));
    assert!(tcp.sack_ok);
    let hs = tcp.handshake.unwrap();
    assert_eq!((hs.syn_count, hs.synack_count), (1, 1));
    assert_eq!(hs.syn_to_synack_ns, Some(10 * MS));
    assert_eq!(hs.synack_to_ack_ns, Some(MS));
    assert_eq!(hs.connect_ns, Some(11 * MS));
    assert_eq!(r.c2s.rtt.min_ns, Some(10 * MS));
}

/// The late SYN comes after the handshake ACK and data: it is counted and
/// times the handshake, and does not disturb the sequence analysis.
#[test]
fn late_syn_after_data_is_counted_not_analysed_as_a_retransmission() {
    let mut sim = Sim::new();
    sim.at(10.0).s(F::SYN | A, 5000, 101, 0);
    sim.at(11.0).c(A, 101, 5001, 0);
    sim.at(20.0).c(PA, 101, 5001, MSS);
    sim.at(0.0).c(F::SYN, 100, 0, 0);
    sim.at(30.0).s(A, 5001, 101 + MSS, 0);
    sim.at(40.0).c(PA, 101 + MSS, 5001, MSS);
    sim.at(50.0).s(A, 5001, 101 + 2 * MSS, 0);
    let r = sim.one();
    let mut inorder = Sim::new();
    inorder.handshake(100, 5000);
    inorder.at(20.0).c(PA, 101, 5001, MSS);
    inorder.at(30.0).s(A, 5001, 101 + MSS, 0);
    inorder.at(40.0).c(PA, 101 + MSS, 5001, MSS);
    inorder.at(50.0).s(A, 5001, 101 + 2 * MSS, 0);
    assert_eq!(r, inorder.one());
    assert_eq!(r.client.port, 40000);
    assert_eq!((r.c2s.syn, r.s2c.synack), (1, 1));
    assert_eq!(
        r.c2s.retransmits + r.c2s.retrans_seen + r.c2s.hole_fill + r.c2s.gaps + r.c2s.dup_acks,
        0
    );
    let hs = r.tcp.as_ref().unwrap().handshake.as_ref().unwrap();
    assert_eq!(hs.syn_to_synack_ns, Some(10 * MS));
    assert_eq!(hs.connect_ns, Some(11 * MS));
    assert_eq!(r.c2s.rtt.min_ns, Some(10 * MS));
}

/// The flow was opened by a server packet (so the server was taken for the
/// client); the late SYN sets the roles right.
#[test]
fn late_syn_sets_the_roles_from_the_syn() {
    let mut sim = Sim::new();
    sim.at(9.0).s(A, 5000, 101, 0);
    sim.at(10.0).s(F::SYN | A, 5000, 101, 0);
    sim.at(0.0).c(F::SYN, 100, 0, 0);
    sim.at(11.0).c(A, 101, 5001, 0);
    let r = sim.one();
    assert_eq!((r.client.port, r.server.port), (40000, 443));
    assert_eq!((r.c2s.packets, r.s2c.packets), (2, 2));
    assert_eq!((r.c2s.syn, r.s2c.synack), (1, 1));
    let tcp = r.tcp.unwrap();
    assert_eq!(tcp.mss.client, Some(1460));
    assert_eq!(tcp.state, TcpState::Established);
    assert_eq!(tcp.handshake.unwrap().syn_to_synack_ns, Some(10 * MS));
}

/// A late SYN whose timestamp is later than the SYN/ACK's (timestamps taken
/// after the reordering): joined, but the handshake times stay unknown.
#[test]
fn late_syn_with_a_later_timestamp_leaves_handshake_times_unknown() {
    let mut sim = Sim::new();
    sim.at(10.0).s(F::SYN | A, 5000, 101, 0);
    sim.at(10.5).c(F::SYN, 100, 0, 0);
    sim.at(11.0).c(A, 101, 5001, 0);
    let r = sim.one();
    assert_eq!(r.first_ns, T0 + 10 * MS);
    let hs = r.tcp.unwrap().handshake.unwrap();
    assert_eq!((hs.syn_count, hs.synack_count), (1, 1));
    assert_eq!(hs.syn_to_synack_ns, None);
    assert_eq!(hs.synack_to_ack_ns, Some(MS));
    assert_eq!(hs.connect_ns, None);
}

/// A SYN with another ISN than the one the SYN/ACK acknowledged is a new
/// connection on the 4-tuple, as before.
#[test]
fn syn_with_another_isn_after_a_synack_starts_a_new_record() {
    let mut sim = Sim::new();
    sim.at(10.0).s(F::SYN | A, 5000, 101, 0);
    sim.at(11.0).c(F::SYN, 7000, 0, 0);
    assert_eq!(sim.records().len(), 2);
}

/// `finish_each` streams the same exports, in the same order, as `finish`
/// followed by `poll_export` (including exports not polled before the end).
#[test]
fn finish_each_streams_what_finish_and_poll_give() {
    let run = |streamed: bool| {
        let mut sim = Sim::with_config(EngineConfig {
            table: TableConfig {
                capacity: 3,
                ..TableConfig::default()
            },
        });
        for i in 0..6u16 {
            sim.cport = 40000 + i;
            sim.handshake(100, 200);
            sim.at(20.0).c(PA, 101, 201, MSS);
        }
        let mut v = Vec::new();
        if streamed {
            sim.engine.finish_each(|e| v.push(e.record));
        } else {
            sim.engine.finish();
            while let Some(e) = sim.engine.poll_export() {
                v.push(e.record);
            }
        }
        (v, sim.engine.summary())
    };
    let (a, sa) = run(true);
    let (b, sb) = run(false);
    assert_eq!(a.len(), 6);
    assert_eq!(a, b);
    assert_eq!(sa, sb);
}

#[test]
fn a_repeated_unacknowledged_byte_is_a_retransmission_not_a_keepalive() {
    let mut sim = Sim::new();
    sim.handshake(0, 0);
    // a 1-byte write (an RPC framing byte), never acknowledged, sent again
    // by the retransmission timer: Wireshark calls the repeat a keep-alive
    sim.at(20.0).c(PA, 1, 1, 1);
    sim.at(230.0).c(PA, 1, 1, 1);
    sim.at(240.0).s(A, 1, 2, 0);
    let r = sim.one();
    assert_eq!(r.c2s.retrans_seen, 1);
    assert_eq!(r.c2s.retransmits, 1);
    assert_eq!(r.c2s.rto_retransmits, 1);
}

#[test]
fn a_keepalive_is_an_acknowledged_byte_after_the_sender_was_idle() {
    let mut sim = Sim::new();
    sim.handshake(0, 0);
    sim.at(20.0).c(PA, 1, 1, 10);
    sim.at(30.0).s(A, 1, 11, 0);
    // keep-alives 2 s and 4 s later: the last byte again, and a zero-length one
    sim.at(2030.0).c(A, 10, 1, 1);
    sim.at(2040.0).s(A, 1, 11, 0);
    sim.at(4030.0).c(A, 10, 1, 0);
    sim.at(4040.0).s(A, 1, 11, 0);
    let r = sim.one();
    assert_eq!(r.c2s.retrans_seen, 0, "{:?}", r.c2s);
    assert_eq!(r.c2s.retransmits, 0);

    // the same acknowledged byte sent again without the idle time: a
    // (spurious) retransmission
    let mut sim = Sim::new();
    sim.handshake(0, 0);
    sim.at(20.0).c(PA, 1, 1, 10);
    sim.at(30.0).s(A, 1, 11, 0);
    sim.at(250.0).c(A, 10, 1, 1);
    let r = sim.one();
    assert_eq!(r.c2s.retrans_seen, 1);
}

#[test]
fn head_of_line_time_is_gap_seen_to_hole_filled() {
    let mut sim = Sim::new();
    sim.handshake(0, 0);
    sim.at(20.0).c(PA, 1, 1, MSS);
    // seg 2 lost before the tap: the hole opens when seg 3 shows the gap
    sim.at(20.5).c(PA, 1 + 2 * MSS, 1, MSS);
    sim.at(21.0).c(PA, 1 + 3 * MSS, 1, MSS);
    sim.at(30.0).s(A, 1, 1 + MSS, 0);
    sim.at(270.5).c(PA, 1 + MSS, 1, MSS); // filled 250 ms later
    sim.at(280.0).s(A, 1, 1 + 4 * MSS, 0);
    // a second hole of three segments: the middle one first, then the
    // others; one hole, open until its last byte came (100 ms)
    sim.at(300.0).c(PA, 1 + 4 * MSS, 1, MSS);
    sim.at(300.0).c(PA, 1 + 8 * MSS, 1, MSS);
    sim.at(350.0).c(PA, 1 + 6 * MSS, 1, MSS);
    sim.at(360.0).c(PA, 1 + 5 * MSS, 1, MSS);
    sim.at(400.0).c(PA, 1 + 7 * MSS, 1, MSS);
    // a third hole that the receiver acknowledges without the tap seeing
    // the fill (10 ms)
    sim.at(500.0).c(PA, 1 + 10 * MSS, 1, MSS);
    sim.at(510.0).s(A, 1, 1 + 11 * MSS, 0);
    let r = sim.one();
    let h = &r.c2s.hol;
    assert_eq!(h.holes, 3, "{h:?}");
    assert_eq!(h.holes, r.c2s.gaps);
    assert_eq!(h.open_ns_max, Some(250 * MS));
    assert_eq!(h.open_ns_total, 360 * MS);
    let p99 = h.open_ns_p99.unwrap() as f64;
    assert!((p99 - 250e6).abs() <= 250e6 / 64.0, "p99 {p99}");
    assert_eq!(r.s2c.hol, Default::default());
}

#[test]
fn ttl_changes_within_a_direction_are_counted_with_their_values() {
    let mut sim = Sim::new();
    sim.handshake(0, 0);
    sim.at(20.0).c(PA, 1, 1, MSS);
    sim.at(30.0).s(A, 1, 1 + MSS, 0);
    sim.ttl = 61; // the route changed: three hops more
    sim.at(40.0).c(PA, 1 + MSS, 1, MSS);
    sim.ttl = 64;
    sim.at(50.0).c(PA, 1 + 2 * MSS, 1, MSS);
    let r = sim.one();
    assert_eq!(r.c2s.ttl.changes, 2);
    assert_eq!(r.c2s.ttl.values, vec![64, 61]);
    assert_eq!(r.s2c.ttl.changes, 0);
    assert!(r.s2c.ttl.values.is_empty());
}

#[test]
fn an_mss_below_what_1500_bytes_allow_is_clamped() {
    let mut sim = Sim::new();
    sim.mss = 1200;
    sim.at(0.0).c(F::SYN, 0, 0, 0);
    sim.mss = 1460;
    sim.at(10.0).s(F::SYN | F::ACK, 0, 1, 0);
    let t = sim.one().tcp.unwrap();
    assert!(t.mss_clamped.client && !t.mss_clamped.server, "{t:?}");

    // IPv6: 1440 is what 1500 bytes allow
    let mut sim = Sim::new();
    sim.c = Addr::from_v6([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    sim.s = Addr::from_v6([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    sim.mss = 1440;
    sim.handshake(0, 0);
    let t = sim.one().tcp.unwrap();
    assert!(!t.mss_clamped.client && !t.mss_clamped.server, "{t:?}");
}

#[test]
fn ecn_negotiated_and_no_ect_data_is_bleached() {
    for (server_ect, bleached) in [(0u8, true), (2, false)] {
        let mut sim = Sim::new();
        sim.at(0.0).c(F::SYN | F::ECE | F::CWR, 0, 0, 0);
        sim.at(10.0).s(F::SYN | F::ACK | F::ECE, 0, 1, 0);
        sim.at(11.0).c(A, 1, 1, 0);
        sim.ecn = 2; // ECT(0)
        sim.at(20.0).c(PA, 1, 1, MSS);
        sim.ecn = server_ect;
        sim.at(30.0).s(PA, 1, 1 + MSS, MSS);
        sim.ecn = 0;
        sim.at(40.0).c(A, 1 + MSS, 1 + MSS, 0);
        let t = sim.one().tcp.unwrap();
        assert!(t.ecn_ok);
        assert!(!t.ecn_bleached.client);
        assert_eq!(t.ecn_bleached.server, bleached, "{t:?}");
    }
    // not negotiated: nothing to bleach
    let mut sim = Sim::new();
    sim.handshake(0, 0);
    sim.at(20.0).c(PA, 1, 1, MSS);
    sim.at(30.0).s(PA, 1, 1 + MSS, MSS);
    let t = sim.one().tcp.unwrap();
    assert!(!t.ecn_bleached.client && !t.ecn_bleached.server);
}

#[test]
fn data_whose_acks_take_another_path_is_one_way() {
    // the tap sees the client's data and its ACKs of server data that
    // never passes it
    let mut sim = Sim::new();
    sim.at(0.0).c(F::SYN, 0, 0, 0);
    sim.at(11.0).c(A, 1, 1, 0);
    for i in 0..5u32 {
        sim.at(20.0 + f64::from(i) * 10.0)
            .c(PA, 1 + i * MSS, 1 + (i + 1) * 100, MSS);
    }
    let s = {
        sim.engine.finish();
        sim.engine.summary()
    };
    let r = sim.records();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].tcp.as_ref().unwrap().path, TcpPath::OneWay);
    assert_eq!(s.tcp.one_way_flows, 1);

    // only the server's ACKs of client data the tap never saw
    let mut sim = Sim::new();
    sim.at(10.0).s(F::SYN | F::ACK, 0, 1, 0);
    for i in 1..4u32 {
        sim.at(20.0 + f64::from(i) * 10.0).s(A, 1, 1 + i * MSS, 0);
    }
    assert_eq!(sim.one().tcp.unwrap().path, TcpPath::OneWay);

    // both ways, acknowledged: two-way
    let mut sim = Sim::new();
    sim.handshake(0, 0);
    sim.at(20.0).c(PA, 1, 1, MSS);
    sim.at(30.0).s(PA, 1, 1 + MSS, MSS);
    sim.at(40.0).c(A, 1 + MSS, 1 + MSS, 0);
    let s = {
        sim.engine.finish();
        sim.engine.summary()
    };
    assert_eq!(s.tcp.one_way_flows, 0);
    assert_eq!(sim.one().tcp.unwrap().path, TcpPath::TwoWay);
}
