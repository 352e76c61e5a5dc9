//! Synthetic traffic: a deterministic generator of realistic Ethernet frames,
//! in memory, for the benchmark rig (`wirelens bench`), the criterion benches
//! and tests.
//!
//! [`Synthetic`] simulates `flows` concurrent conversations between clients
//! (198.18.0.0/17 and 2001:db8:0:S::/64) and servers (198.19.0.0/16 and
//! 2001:db8:ff::/64), seen from a tap in the middle:
//!
//! - TCP connections: SYN, SYN/ACK, ACK (options MSS, SACK-permitted,
//!   timestamps, window scale); then rounds of a small request (client ->
//!   server, the server ACKs) or a response of 1 to 4 full-sized segments
//!   (server -> client, the client ACKs every second segment); every segment
//!   and ACK carries TCP timestamps; after about `conn_packets` packets the
//!   client closes (FIN, FIN/ACK, ACK) and the slot opens a new connection
//!   from the next source port.
//! - Loss (`loss`): a response segment is lost before the tap (the tap never
//!   sees the original: a hole, then a hole fill) or after it (the tap sees it
//!   twice: `retrans_seen`); the client sends duplicate ACKs with a SACK
//!   block until the retransmission. A SYN is retransmitted with the same
//!   probability. Reordering (`reorder`): two adjacent response segments swap.
//! - UDP flows: a datagram from the client, 1 to 3 back; `frag` of the IPv4
//!   datagrams are too big and go out as two fragments, back to back.
//! - `pmtu`: a router (198.19.255.254, 2001:db8:ff::fffe) answers a response
//!   segment with ICMP "fragmentation needed" / ICMPv6 "packet too big".
//!
//! Frames are 64 to 1514 bytes (Ethernet + up to 1500 bytes of IP); `ipv6` of
//! the flows use IPv6. Which flow sends next is drawn uniformly at random
//! (the first `flows` frames open every flow once, in order), so a flow's
//! packets are spread over the whole run as on a busy link. Timestamps start
//! at `start_ns` and grow by `1e9 / pps` ns per frame (strictly increasing).
//!
//! Everything is a function of the seed: no clock, no `rand`. A frame is
//! written into a caller's buffer (or the generator's own one) with no
//! allocation per frame; only the IPv4 header checksum is computed (TCP and
//! UDP checksums are 0, as in captures of checksum-offloading senders);
//! payload bytes are zero.
//!
//! Also here: [`FrameArena`] (frames stored back to back, replayed by
//! [`ArenaSource`]) and [`PcapWriter`] (the classic pcap format).
#![forbid(unsafe_code)]

use std::io::{self, Write};

use super::{Frame, FrameSource};
use crate::flow::key::FlowKey;
use crate::meta::{proto, tcp_flags as F, Addr, PacketMeta};

/// `LINKTYPE_ETHERNET`: the link type of every synthetic frame.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// Largest frame written: a 14-byte Ethernet header and a 1500-byte IP packet.
/// Buffers handed to [`Synthetic::write_next`] must be at least this long.
pub const MAX_FRAME: usize = 14 + 1500;
/// Most concurrent flows of one generator.
pub const MAX_FLOWS: usize = 1 << 21;
/// Address spaces (`SyntheticConfig::space`): generators with different
/// spaces never produce the same flow.
pub const MAX_SPACE: u16 = 14;

/// Frames per `recv_batch`.
const BATCH: usize = 64;
/// Planned packets per flow (the longest round: 4 segments, 2 ACKs, an ICMP
/// error, a retransmission and its ACK).
const PLAN_CAP: usize = 10;
const MSS_V4: u32 = 1448;
const MSS_V6: u32 = 1428;
const CLIENT_HOSTS: u32 = 32768;
const SERVERS: u32 = 1000;
const TCP_PORTS: [u16; 5] = [443, 8443, 50051, 8000, 80];
const UDP_PORTS: [u16; 5] = [443, 53, 4789, 123, 5353];
const PMTU_MTU: u16 = 1400;
/// IPv4 fragments: 1480 bytes of data in the first.
const FRAG_DATA: u32 = 1480;
const MAC_CLIENT: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const MAC_SERVER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// Which protocols the flows use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mix {
    /// TCP connections only.
    Tcp,
    /// UDP flows only.
    Udp,
    /// 80 % of the flows TCP, 20 % UDP.
    #[default]
    Mixed,
}

/// What to generate. Shares are fractions in `0.0..=1.0`.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticConfig {
    pub seed: u64,
    /// Concurrent flows (1 to [`MAX_FLOWS`]).
    pub flows: usize,
    pub mix: Mix,
    /// Share of TCP response segments (and SYNs) lost; half before the tap,
    /// half after it.
    pub loss: f64,
    /// Share of TCP response rounds in which two adjacent segments swap.
    pub reorder: f64,
    /// Share of the flows over IPv6.
    pub ipv6: f64,
    /// Share of IPv4 UDP datagrams sent as two fragments.
    pub frag: f64,
    /// Share of TCP response rounds answered by an ICMP PMTU error.
    pub pmtu: f64,
    /// Timestamp rate: frames per second of capture time (1 to 1e9).
    pub pps: u64,
    /// Timestamp of the first frame, ns since the Unix epoch.
    pub start_ns: u64,
    /// Mean packets of a TCP connection before the client closes it and the
    /// slot opens a new one; 0: connections never close.
    pub conn_packets: u32,
    /// Frames before the generator is exhausted; `None`: endless.
    pub limit: Option<u64>,
    /// Address space (below [`MAX_SPACE`]): generators with different
    /// spaces produce disjoint flows (e.g. one generator per worker).
    pub space: u16,
    /// `Some((k, w))`: every flow's `FlowKey::symmetric_hash() % k == w`, as
    /// if a NIC's RSS had already steered the flows to their owner worker.
    pub owner: Option<(u32, u32)>,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig {
            seed: 1,
            flows: 1000,
            mix: Mix::Mixed,
            loss: 0.01,
            reorder: 0.005,
            ipv6: 0.1,
            frag: 0.0,
            pmtu: 0.0,
            pps: 1_000_000,
            start_ns: 1_700_000_000_000_000_000,
            conn_packets: 2000,
            limit: None,
            space: 0,
            owner: None,
        }
    }
}

/// A configuration value out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("synthetic traffic: {field} = {value} is out of range ({expected})")]
pub struct SyntheticError {
    pub field: &'static str,
    pub value: String,
    pub expected: &'static str,
}

/// What the generator produced so far, counted at emission.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyntheticStats {
    pub frames: u64,
    /// Frame bytes (Ethernet header included).
    pub bytes: u64,
    /// TCP connections whose first SYN went out.
    pub tcp_connections: u64,
    /// UDP flows that sent their first datagram.
    pub udp_flows: u64,
    /// Connections closed with FIN, FIN/ACK, ACK.
    pub tcp_closed: u64,
    pub syn_retransmits: u64,
    /// Segments the tap never saw the original of.
    pub lost_before_tap: u64,
    /// Segments the tap saw twice.
    pub lost_after_tap: u64,
    /// Segments sent after their successor.
    pub reordered: u64,
    /// IPv4 fragment frames.
    pub fragments: u64,
    pub pmtu_errors: u64,
}

/// splitmix64: tiny, fast, good enough for traffic shapes.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    #[inline]
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    #[inline]
    fn below(&mut self, n: u32) -> u32 {
        (((self.next() >> 32) * u64::from(n)) >> 32) as u32
    }

    /// True with probability `ppm` per million.
    #[inline]
    fn chance(&mut self, ppm: u32) -> bool {
        ppm > 0 && self.below(1_000_000) < ppm
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Kind {
    #[default]
    Syn,
    SynAck,
    /// A pure ACK; `len` > 0: with a SACK block `[ack + len, seq)`.
    Ack,
    Data,
    /// FIN (with ACK).
    Fin,
    Udp,
    /// IPv4 fragments of a UDP datagram of `len` payload bytes; `seq` is the IP id.
    FragFirst,
    FragLater,
    /// ICMP PMTU error quoting the server's segment `seq`, `len`.
    Pmtu,
}

/// One planned packet: 12 bytes.
#[derive(Clone, Copy, Debug, Default)]
struct Ev {
    kind: Kind,
    from_server: bool,
    /// First packet of its connection or flow (counted in the stats).
    first: bool,
    len: u16,
    seq: u32,
    ack: u32,
}

/// State of one flow slot.
#[derive(Clone, Debug, Default)]
struct FlowGen {
    tcp: bool,
    v6: bool,
    /// TCP: a connection is open (or opening) on this slot.
    open: bool,
    host: u32,
    server: u32,
    cport: u16,
    sport: u16,
    gen: u16,
    c_nxt: u32,
    s_nxt: u32,
    c_ts_off: u32,
    s_ts_off: u32,
    c_tsval: u32,
    s_tsval: u32,
    left: u32,
    pos: u8,
    len: u8,
}

impl FlowGen {
    fn mss(&self) -> u32 {
        if self.v6 {
            MSS_V6
        } else {
            MSS_V4
        }
    }
}

/// Shares as parts per million.
#[derive(Clone, Copy, Debug)]
struct Ppm {
    loss: u32,
    reorder: u32,
    frag: u32,
    pmtu: u32,
}

fn share_ppm(field: &'static str, v: f64) -> Result<u32, SyntheticError> {
    if !(0.0..=1.0).contains(&v) {
        return Err(SyntheticError {
            field,
            value: v.to_string(),
            expected: "a share from 0.0 to 1.0",
        });
    }
    Ok((v * 1e6).round() as u32)
}

/// The generator; see the [module documentation](self).
#[derive(Debug)]
pub struct Synthetic {
    cfg: SyntheticConfig,
    rng: Rng,
    ppm: Ppm,
    flows: Vec<FlowGen>,
    plans: Vec<Ev>,
    /// Flows opened by the initial ramp.
    ramp: usize,
    /// The flow that must send next (the second fragment of a datagram).
    stick: Option<usize>,
    /// ns since start, in 1/65536 ns.
    elapsed_fp: u128,
    step_fp: u128,
    ip_id: u16,
    buf: Box<[u8]>,
    stats: SyntheticStats,
}

impl Synthetic {
    pub fn new(cfg: SyntheticConfig) -> Result<Synthetic, SyntheticError> {
        if cfg.flows == 0 || cfg.flows > MAX_FLOWS {
            return Err(SyntheticError {
                field: "flows",
                value: cfg.flows.to_string(),
                expected: "1 to 2^21",
            });
        }
        if cfg.pps == 0 || cfg.pps > 1_000_000_000 {
            return Err(SyntheticError {
                field: "pps",
                value: cfg.pps.to_string(),
                expected: "1 to 1e9 frames per second",
            });
        }
        if cfg.space >= MAX_SPACE {
            return Err(SyntheticError {
                field: "space",
                value: cfg.space.to_string(),
                expected: "below 14",
            });
        }
        if let Some((k, w)) = cfg.owner {
            if k == 0 || w >= k || k > 256 {
                return Err(SyntheticError {
                    field: "owner",
                    value: format!("({k}, {w})"),
                    expected: "(k, w) with 0 <= w < k <= 256",
                });
            }
        }
        let ppm = Ppm {
            loss: share_ppm("loss", cfg.loss)?,
            reorder: share_ppm("reorder", cfg.reorder)?,
            frag: share_ppm("frag", cfg.frag)?,
            pmtu: share_ppm("pmtu", cfg.pmtu)?,
        };
        let v6_ppm = share_ppm("ipv6", cfg.ipv6)?;
        let tcp_ppm = match cfg.mix {
            Mix::Tcp => 1_000_000,
            Mix::Udp => 0,
            Mix::Mixed => 800_000,
        };
        let mut rng = Rng(cfg.seed ^ 0x5851_f42d_4c95_7f2d);
        let mut g = Synthetic {
            ppm,
            flows: Vec::with_capacity(cfg.flows),
            plans: vec![Ev::default(); cfg.flows * PLAN_CAP],
            ramp: 0,
            stick: None,
            elapsed_fp: 0,
            step_fp: (1_000_000_000u128 << 16) / u128::from(cfg.pps),
            ip_id: 0,
            buf: vec![0u8; MAX_FRAME].into_boxed_slice(),
            stats: SyntheticStats::default(),
            rng: Rng(0),
            cfg,
        };
        for i in 0..g.cfg.flows {
            let tcp = tcp_ppm == 1_000_000 || (tcp_ppm > 0 && rng.chance(tcp_ppm));
            let v6 = rng.chance(v6_ppm);
            let i32_ = i as u32;
            g.flows.push(FlowGen {
                tcp,
                v6,
                host: i32_,
                server: i32_ % SERVERS,
                sport: if tcp {
                    TCP_PORTS[i % TCP_PORTS.len()]
                } else {
                    UDP_PORTS[i % UDP_PORTS.len()]
                },
                gen: rng.below(64) as u16,
                ..FlowGen::default()
            });
        }
        g.rng = rng;
        for i in 0..g.cfg.flows {
            if !g.flows[i].tcp {
                g.choose_ports(i);
            }
        }
        Ok(g)
    }

    pub fn config(&self) -> &SyntheticConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &SyntheticStats {
        &self.stats
    }

    /// True once `limit` frames were produced.
    pub fn is_done(&self) -> bool {
        self.cfg.limit.is_some_and(|l| self.stats.frames >= l)
    }

    /// Bytes of generator state (flows and their planned packets).
    pub fn state_bytes(&self) -> usize {
        self.flows.capacity() * std::mem::size_of::<FlowGen>()
            + self.plans.capacity() * std::mem::size_of::<Ev>()
            + self.buf.len()
    }

    /// Writes the next frame into `out` (at least [`MAX_FRAME`] bytes) and
    /// returns its timestamp and length. Ignores `limit`.
    pub fn write_next(&mut self, out: &mut [u8]) -> (u64, usize) {
        assert!(out.len() >= MAX_FRAME, "frame buffer under MAX_FRAME bytes");
        let i = self.pick();
        if self.flows[i].pos == self.flows[i].len {
            self.plan(i);
        }
        let f = &mut self.flows[i];
        let ev = self.plans[i * PLAN_CAP + usize::from(f.pos)];
        f.pos += 1;
        f.left = f.left.saturating_sub(1);
        self.elapsed_fp += self.step_fp;
        let now = self.cfg.start_ns + (self.elapsed_fp >> 16) as u64;
        let (len, payload) = self.emit(i, ev, now, out);
        out[payload..len].fill(0);
        if ev.kind == Kind::FragFirst {
            self.stick = Some(i);
        }
        self.stats.frames += 1;
        self.stats.bytes += len as u64;
        (now, len)
    }

    /// The next frame in the generator's own buffer; `None` once `limit`
    /// frames were produced.
    pub fn next_frame(&mut self) -> Option<Frame<'_>> {
        if self.is_done() {
            return None;
        }
        let mut buf = std::mem::take(&mut self.buf);
        let (ts_ns, len) = self.write_next(&mut buf);
        self.buf = buf;
        Some(Frame {
            ts_ns,
            linktype: LINKTYPE_ETHERNET,
            data: &self.buf[..len],
            orig_len: len as u32,
            caplen: len as u32,
        })
    }

    fn pick(&mut self) -> usize {
        if let Some(i) = self.stick.take() {
            return i;
        }
        if self.ramp < self.flows.len() {
            self.ramp += 1;
            return self.ramp - 1;
        }
        self.rng.below(self.flows.len() as u32) as usize
    }

    /// Client and server addresses of flow `i`.
    fn addrs(&self, i: usize) -> (Addr, Addr) {
        let f = &self.flows[i];
        if f.v6 {
            let mut c = [0u8; 16];
            c[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
            c[6..8].copy_from_slice(&self.cfg.space.to_be_bytes());
            c[12..].copy_from_slice(&f.host.to_be_bytes());
            let mut s = [0u8; 16];
            s[..6].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0x00, 0xff]);
            s[12..].copy_from_slice(&(f.server + 1).to_be_bytes());
            (Addr::from_v6(c), Addr::from_v6(s))
        } else {
            let h = f.host % CLIENT_HOSTS;
            let s = f.server + 1;
            (
                Addr::from_v4([198, 18, (h >> 8) as u8, h as u8]),
                Addr::from_v4([198, 19, (s >> 8) as u8, s as u8]),
            )
        }
    }

    /// Picks the client port (and, under an owner filter, possibly another
    /// server) for a new connection or flow on slot `i`.
    fn choose_ports(&mut self, i: usize) {
        let block = u32::from(self.cfg.space) * 64 + self.flows[i].host / CLIENT_HOSTS;
        let base_server = self.flows[i].host % SERVERS;
        for attempt in 0..4096u32 {
            let f = &mut self.flows[i];
            f.gen = f.gen.wrapping_add(1);
            f.cport = (1024 + block * 64 + u32::from(f.gen % 64)) as u16;
            f.server = base_server + SERVERS * ((attempt / 64) % 60);
            let Some((k, w)) = self.cfg.owner else {
                return;
            };
            let (c, s) = self.addrs(i);
            let f = &self.flows[i];
            let p = if f.tcp { proto::TCP } else { proto::UDP };
            let m = PacketMeta {
                src: c,
                dst: s,
                sport: f.cport,
                dport: f.sport,
                proto: p,
                is_v6: f.v6,
                ..PacketMeta::default()
            };
            let (key, _) = FlowKey::of(&m);
            if key.symmetric_hash() % u64::from(k) == u64::from(w) {
                return;
            }
        }
    }

    fn push(&mut self, i: usize, ev: Ev) {
        let f = &mut self.flows[i];
        debug_assert!(usize::from(f.len) < PLAN_CAP);
        self.plans[i * PLAN_CAP + usize::from(f.len)] = ev;
        f.len += 1;
    }

    /// Plans the next round of flow `i` (its previous plan is used up).
    fn plan(&mut self, i: usize) {
        self.flows[i].pos = 0;
        self.flows[i].len = 0;
        let f = &self.flows[i];
        if !f.tcp {
            self.plan_udp(i);
        } else if !f.open {
            self.plan_handshake(i);
        } else if self.cfg.conn_packets > 0 && f.left == 0 {
            self.plan_close(i);
        } else if self.rng.below(2) == 0 {
            self.plan_request(i);
        } else {
            self.plan_response(i);
        }
    }

    fn plan_handshake(&mut self, i: usize) {
        self.choose_ports(i);
        let c_isn = self.rng.next() as u32;
        let s_isn = self.rng.next() as u32;
        let c_ts = self.rng.next() as u32;
        let s_ts = self.rng.next() as u32;
        let left = match self.cfg.conn_packets {
            0 => 0,
            n => n / 2 + self.rng.below(n),
        };
        let f = &mut self.flows[i];
        f.open = true;
        f.c_ts_off = c_ts;
        f.s_ts_off = s_ts;
        f.c_tsval = 0;
        f.s_tsval = 0;
        f.left = left;
        f.c_nxt = c_isn.wrapping_add(1);
        f.s_nxt = s_isn.wrapping_add(1);
        let syn = Ev {
            kind: Kind::Syn,
            first: true,
            seq: c_isn,
            ..Ev::default()
        };
        if self.rng.chance(self.ppm.loss) {
            // The first SYN goes unanswered: lost after the tap.
            self.push(i, syn);
            self.push(
                i,
                Ev {
                    first: false,
                    ..syn
                },
            );
        } else {
            self.push(i, syn);
        }
        self.push(
            i,
            Ev {
                kind: Kind::SynAck,
                from_server: true,
                seq: s_isn,
                ack: c_isn.wrapping_add(1),
                ..Ev::default()
            },
        );
        self.push(
            i,
            Ev {
                kind: Kind::Ack,
                ack: s_isn.wrapping_add(1),
                ..Ev::default()
            },
        );
    }

    fn plan_close(&mut self, i: usize) {
        let f = &mut self.flows[i];
        let (c, s) = (f.c_nxt, f.s_nxt);
        f.c_nxt = c.wrapping_add(1);
        f.s_nxt = s.wrapping_add(1);
        f.open = false;
        self.push(
            i,
            Ev {
                kind: Kind::Fin,
                seq: c,
                ack: s,
                ..Ev::default()
            },
        );
        self.push(
            i,
            Ev {
                kind: Kind::Fin,
                from_server: true,
                seq: s,
                ack: c.wrapping_add(1),
                ..Ev::default()
            },
        );
        self.push(
            i,
            Ev {
                kind: Kind::Ack,
                ack: s.wrapping_add(1),
                ..Ev::default()
            },
        );
    }

    /// The client sends one or two small segments; the server ACKs.
    fn plan_request(&mut self, i: usize) {
        let n = if self.rng.below(4) == 0 { 2 } else { 1 };
        let mss = self.flows[i].mss();
        for _ in 0..n {
            let len = 1 + self.rng.below(mss);
            let f = &mut self.flows[i];
            let seq = f.c_nxt;
            f.c_nxt = seq.wrapping_add(len);
            let ack = f.s_nxt;
            self.push(
                i,
                Ev {
                    kind: Kind::Data,
                    len: len as u16,
                    seq,
                    ack,
                    ..Ev::default()
                },
            );
        }
        let ack = self.flows[i].c_nxt;
        self.push(
            i,
            Ev {
                kind: Kind::Ack,
                from_server: true,
                ack,
                ..Ev::default()
            },
        );
    }

    /// The server sends 1 to 4 segments; the client ACKs every second one and
    /// the last; loss, reordering and PMTU errors as configured.
    fn plan_response(&mut self, i: usize) {
        let n = 1 + self.rng.below(4) as usize;
        let mss = self.flows[i].mss();
        let base = self.flows[i].s_nxt;
        let ack_c = self.flows[i].c_nxt;
        let mut starts = [0u32; 4];
        let mut lens = [0u32; 4];
        let mut at = base;
        for k in 0..n {
            lens[k] = if k + 1 < n {
                mss
            } else {
                1 + self.rng.below(mss)
            };
            starts[k] = at;
            at = at.wrapping_add(lens[k]);
        }
        let end = |k: usize| starts[k].wrapping_add(lens[k]);
        // (segment, lost before the tap)
        let lost = self
            .rng
            .chance(self.ppm.loss)
            .then(|| (self.rng.below(n as u32) as usize, self.rng.below(2) == 0));
        let mut order = [0usize, 1, 2, 3];
        if n >= 2 && self.rng.chance(self.ppm.reorder) {
            let j = 2 * self.rng.below((n / 2) as u32) as usize;
            if lost.is_none_or(|(l, _)| l != j && l != j + 1) {
                order.swap(j, j + 1);
                self.stats.reordered += 1;
            }
        }
        let pmtu = self.rng.chance(self.ppm.pmtu);
        let data = |k: usize| Ev {
            kind: Kind::Data,
            from_server: true,
            len: lens[k] as u16,
            seq: starts[k],
            ack: ack_c,
            ..Ev::default()
        };
        for (p, &k) in order.iter().enumerate().take(n) {
            match lost {
                Some((l, true)) if l == k => self.stats.lost_before_tap += 1,
                Some((l, false)) if l == k => {
                    self.stats.lost_after_tap += 1;
                    self.push(i, data(k));
                }
                _ => self.push(i, data(k)),
            }
            if p == 0 && pmtu {
                self.push(
                    i,
                    Ev {
                        kind: Kind::Pmtu,
                        ..data(k)
                    },
                );
            }
            if p % 2 == 1 || p + 1 == n {
                // Segments 0..=p have all been sent by now.
                let ev = match lost {
                    Some((l, _)) if l < p => Ev {
                        kind: Kind::Ack,
                        len: lens[l] as u16,
                        ack: starts[l],
                        seq: end(p),
                        ..Ev::default()
                    },
                    Some((l, _)) if l == p => Ev {
                        kind: Kind::Ack,
                        ack: starts[l],
                        ..Ev::default()
                    },
                    _ => Ev {
                        kind: Kind::Ack,
                        ack: end(p),
                        ..Ev::default()
                    },
                };
                self.push(i, ev);
            }
        }
        if let Some((l, _)) = lost {
            self.push(i, data(l));
            self.push(
                i,
                Ev {
                    kind: Kind::Ack,
                    ack: end(n - 1),
                    ..Ev::default()
                },
            );
        }
        self.flows[i].s_nxt = end(n - 1);
    }

    fn plan_udp(&mut self, i: usize) {
        let replies = 1 + self.rng.below(3);
        for d in 0..=replies {
            let from_server = d > 0;
            let frag = !self.flows[i].v6 && self.rng.chance(self.ppm.frag);
            if frag {
                // Too big for one frame: 1502 to 2952 payload bytes, two fragments
                // (the second at least 30 bytes of IP payload: a 64-byte frame).
                let len = (1502 + self.rng.below(2952 - 1502 + 1)) as u16;
                self.ip_id = self.ip_id.wrapping_add(1);
                let ev = Ev {
                    kind: Kind::FragFirst,
                    from_server,
                    len,
                    seq: u32::from(self.ip_id),
                    ..Ev::default()
                };
                self.push(i, ev);
                self.push(
                    i,
                    Ev {
                        kind: Kind::FragLater,
                        first: false,
                        ..ev
                    },
                );
            } else {
                let len = (22 + self.rng.below(1452 - 22 + 1)) as u16;
                self.push(
                    i,
                    Ev {
                        kind: Kind::Udp,
                        from_server,
                        len,
                        ..Ev::default()
                    },
                );
            }
        }
        if !self.flows[i].open {
            self.flows[i].open = true;
            self.plans[i * PLAN_CAP].first = true;
        }
    }

    /// Writes the headers of `ev` of flow `i` at `now` into `out`; returns
    /// the frame length and where its payload starts.
    fn emit(&mut self, i: usize, ev: Ev, now: u64, out: &mut [u8]) -> (usize, usize) {
        let (c, s) = self.addrs(i);
        let f = &self.flows[i];
        let v6 = f.v6;
        let (src, dst, sport, dport) = if ev.from_server {
            (s, c, f.sport, f.cport)
        } else {
            (c, s, f.cport, f.sport)
        };
        let (smac, dmac) = if ev.from_server {
            (MAC_SERVER, MAC_CLIENT)
        } else {
            (MAC_CLIENT, MAC_SERVER)
        };
        write_eth(out, &dmac, &smac, v6);
        self.ip_id = self.ip_id.wrapping_add(1);
        let id = self.ip_id;
        match ev.kind {
            Kind::Udp => {
                if ev.first {
                    self.stats.udp_flows += 1;
                }
                let l4 = write_ip(
                    out,
                    v6,
                    8 + u32::from(ev.len),
                    id,
                    0,
                    proto::UDP,
                    &src,
                    &dst,
                );
                write_udp(&mut out[l4..], sport, dport, 8 + u32::from(ev.len));
                (l4 + 8 + usize::from(ev.len), l4 + 8)
            }
            Kind::FragFirst | Kind::FragLater => {
                if ev.first {
                    self.stats.udp_flows += 1;
                }
                self.stats.fragments += 1;
                let total = 8 + u32::from(ev.len);
                let frag_id = ev.seq as u16;
                if ev.kind == Kind::FragFirst {
                    let l4 = write_ip(
                        out,
                        false,
                        FRAG_DATA,
                        frag_id,
                        0x2000,
                        proto::UDP,
                        &src,
                        &dst,
                    );
                    write_udp(&mut out[l4..], sport, dport, total);
                    (l4 + FRAG_DATA as usize, l4 + 8)
                } else {
                    let rest = total - FRAG_DATA;
                    let l4 = write_ip(
                        out,
                        false,
                        rest,
                        frag_id,
                        (FRAG_DATA / 8) as u16,
                        proto::UDP,
                        &src,
                        &dst,
                    );
                    (l4 + rest as usize, l4)
                }
            }
            Kind::Pmtu => {
                self.stats.pmtu_errors += 1;
                let len = self.emit_pmtu(i, ev, out);
                (len, len)
            }
            _ => self.emit_tcp(i, ev, now, (src, dst, sport, dport), out),
        }
    }

    fn emit_tcp(
        &mut self,
        i: usize,
        ev: Ev,
        now: u64,
        (src, dst, sport, dport): (Addr, Addr, u16, u16),
        out: &mut [u8],
    ) -> (usize, usize) {
        let f = &mut self.flows[i];
        let ms = (now / 1_000_000) as u32;
        let (tsval, tsecr) = if ev.from_server {
            f.s_tsval = ms.wrapping_add(f.s_ts_off);
            (f.s_tsval, f.c_tsval)
        } else {
            f.c_tsval = ms.wrapping_add(f.c_ts_off);
            (f.c_tsval, f.s_tsval)
        };
        let own_nxt = if ev.from_server { f.s_nxt } else { f.c_nxt };
        let mss = f.mss() as u16;
        let v6 = f.v6;
        let (flags, seq, ack, payload) = match ev.kind {
            Kind::Syn => {
                if ev.first {
                    self.stats.tcp_connections += 1;
                } else {
                    self.stats.syn_retransmits += 1;
                }
                (F::SYN, ev.seq, 0, 0)
            }
            Kind::SynAck => (F::SYN | F::ACK, ev.seq, ev.ack, 0),
            Kind::Ack => (F::ACK, own_nxt, ev.ack, 0),
            Kind::Data => (F::ACK | F::PSH, ev.seq, ev.ack, u32::from(ev.len)),
            Kind::Fin => {
                if !ev.from_server {
                    self.stats.tcp_closed += 1;
                }
                (F::FIN | F::ACK, ev.seq, ev.ack, 0)
            }
            _ => unreachable!("not a TCP event"),
        };
        let mut opts = [0u8; 24];
        let opt_len = if flags & F::SYN != 0 {
            opts[..4].copy_from_slice(&[2, 4, (mss >> 8) as u8, mss as u8]);
            opts[4..6].copy_from_slice(&[4, 2]);
            opts[6..8].copy_from_slice(&[8, 10]);
            opts[8..12].copy_from_slice(&tsval.to_be_bytes());
            opts[12..16]
                .copy_from_slice(&(if flags & F::ACK != 0 { tsecr } else { 0 }).to_be_bytes());
            opts[16..20].copy_from_slice(&[1, 3, 3, 7]);
            20
        } else {
            opts[..4].copy_from_slice(&[1, 1, 8, 10]);
            opts[4..8].copy_from_slice(&tsval.to_be_bytes());
            opts[8..12].copy_from_slice(&tsecr.to_be_bytes());
            if ev.kind == Kind::Ack && ev.len > 0 {
                let left = ev.ack.wrapping_add(u32::from(ev.len));
                opts[12..16].copy_from_slice(&[1, 1, 5, 10]);
                opts[16..20].copy_from_slice(&left.to_be_bytes());
                opts[20..24].copy_from_slice(&ev.seq.to_be_bytes());
                24
            } else {
                12
            }
        };
        let window: u16 = match (flags & F::SYN != 0, ev.from_server) {
            (true, false) => 64240,
            (true, true) => 65160,
            (false, false) => 502,
            (false, true) => 501,
        };
        let hdr = 20 + opt_len;
        let id = self.ip_id;
        let l4 = write_ip(
            out,
            v6,
            (hdr + payload as usize) as u32,
            id,
            0x4000,
            proto::TCP,
            &src,
            &dst,
        );
        let t = &mut out[l4..];
        t[0..2].copy_from_slice(&sport.to_be_bytes());
        t[2..4].copy_from_slice(&dport.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[8..12].copy_from_slice(&ack.to_be_bytes());
        t[12] = ((hdr / 4) as u8) << 4;
        t[13] = flags;
        t[14..16].copy_from_slice(&window.to_be_bytes());
        t[16..20].fill(0);
        t[20..hdr].copy_from_slice(&opts[..opt_len]);
        (l4 + hdr + payload as usize, l4 + hdr)
    }

    /// A router's PMTU error about the server's segment `ev`.
    fn emit_pmtu(&mut self, i: usize, ev: Ev, out: &mut [u8]) -> usize {
        let (client, server) = self.addrs(i);
        let f = &self.flows[i];
        let v6 = f.v6;
        let router = if v6 {
            let mut r = [0u8; 16];
            r[..6].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0x00, 0xff]);
            r[14..].copy_from_slice(&[0xff, 0xfe]);
            Addr::from_v6(r)
        } else {
            Addr::from_v4([198, 19, 255, 254])
        };
        let quoted_ip = if v6 { 40 } else { 20 };
        let icmp_len = 8 + quoted_ip + 8;
        let p = if v6 { proto::ICMPV6 } else { proto::ICMP };
        let id = self.ip_id;
        let l4 = write_ip(out, v6, icmp_len, id, 0, p, &router, &server);
        let m = &mut out[l4..];
        m[..8].fill(0);
        if v6 {
            m[0] = 2; // packet too big
            m[4..8].copy_from_slice(&u32::from(PMTU_MTU).to_be_bytes());
        } else {
            m[0] = 3; // destination unreachable
            m[1] = 4; // fragmentation needed
            m[6..8].copy_from_slice(&PMTU_MTU.to_be_bytes());
        }
        // The quoted segment as the server sent it (headers of 20 + 12 bytes).
        let seg_len = 32 + u32::from(ev.len);
        let mut q = [0u8; 14 + 48];
        let ql4 = write_ip(
            &mut q,
            v6,
            seg_len,
            id,
            0x4000,
            proto::TCP,
            &server,
            &client,
        );
        q[ql4..ql4 + 2].copy_from_slice(&f.sport.to_be_bytes());
        q[ql4 + 2..ql4 + 4].copy_from_slice(&f.cport.to_be_bytes());
        q[ql4 + 4..ql4 + 8].copy_from_slice(&ev.seq.to_be_bytes());
        m[8..8 + quoted_ip as usize + 8].copy_from_slice(&q[14..ql4 + 8]);
        let sum = checksum(&m[..icmp_len as usize]);
        if !v6 {
            m[2..4].copy_from_slice(&sum.to_be_bytes());
        }
        l4 + icmp_len as usize
    }
}

impl FrameSource for Synthetic {
    fn recv_batch(&mut self, f: &mut dyn FnMut(Frame<'_>)) -> io::Result<usize> {
        let mut n = 0;
        while n < BATCH {
            match self.next_frame() {
                Some(frame) => f(frame),
                None => break,
            }
            n += 1;
        }
        Ok(n)
    }

    fn is_exhausted(&self) -> bool {
        self.is_done()
    }
}

fn write_eth(out: &mut [u8], dst: &[u8; 6], src: &[u8; 6], v6: bool) {
    out[0..6].copy_from_slice(dst);
    out[6..12].copy_from_slice(src);
    out[12..14].copy_from_slice(if v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
}

/// Writes the IP header after a 14-byte link header at the start of `out`
/// (`out[14..]`); `l4_len` is the IP payload length. IPv4: `frag` is the
/// flags + fragment offset field. Returns the offset of the IP payload.
#[expect(
    clippy::too_many_arguments,
    reason = "header fields, written once each"
)]
fn write_ip(
    out: &mut [u8],
    v6: bool,
    l4_len: u32,
    id: u16,
    frag: u16,
    proto: u8,
    src: &Addr,
    dst: &Addr,
) -> usize {
    let ip = &mut out[14..];
    if v6 {
        ip[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
        ip[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        ip[6] = proto;
        ip[7] = 64;
        ip[8..24].copy_from_slice(&src.0);
        ip[24..40].copy_from_slice(&dst.0);
        14 + 40
    } else {
        ip[0] = 0x45;
        ip[1] = 0;
        ip[2..4].copy_from_slice(&((20 + l4_len) as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&id.to_be_bytes());
        ip[6..8].copy_from_slice(&frag.to_be_bytes());
        ip[8] = 64;
        ip[9] = proto;
        ip[10..12].fill(0);
        ip[12..16].copy_from_slice(&src.0[12..]);
        ip[16..20].copy_from_slice(&dst.0[12..]);
        let sum = checksum(&ip[..20]);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        14 + 20
    }
}

fn write_udp(out: &mut [u8], sport: u16, dport: u16, len: u32) {
    out[0..2].copy_from_slice(&sport.to_be_bytes());
    out[2..4].copy_from_slice(&dport.to_be_bytes());
    out[4..6].copy_from_slice(&(len as u16).to_be_bytes());
    out[6..8].fill(0);
}

/// The Internet checksum (RFC 1071) of `b`.
fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = b.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Where one stored frame lies in a [`FrameArena`].
#[derive(Clone, Copy, Debug)]
struct Stored {
    ts_ns: u64,
    off: usize,
    len: u32,
}

/// Frames stored back to back in one buffer: traffic generated ahead of a
/// measurement and replayed by [`ArenaSource`]. Clearing keeps the memory.
#[derive(Debug, Default)]
pub struct FrameArena {
    data: Vec<u8>,
    frames: Vec<Stored>,
}

impl FrameArena {
    pub fn new() -> FrameArena {
        FrameArena::default()
    }

    pub fn with_capacity(frames: usize, bytes: usize) -> FrameArena {
        FrameArena {
            data: Vec::with_capacity(bytes),
            frames: Vec::with_capacity(frames),
        }
    }

    pub fn clear(&mut self) {
        self.data.clear();
        self.frames.clear();
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Bytes of frames stored.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Bytes allocated.
    pub fn heap_bytes(&self) -> usize {
        self.data.capacity() + self.frames.capacity() * std::mem::size_of::<Stored>()
    }

    /// Stores a copy of `data`, captured at `ts_ns`.
    pub fn push(&mut self, ts_ns: u64, data: &[u8]) {
        self.frames.push(Stored {
            ts_ns,
            off: self.data.len(),
            len: data.len() as u32,
        });
        self.data.extend_from_slice(data);
    }

    /// Appends up to `n` frames of `gen` (fewer when it reaches its limit),
    /// written in place; returns how many.
    pub fn fill(&mut self, gen: &mut Synthetic, n: usize) -> usize {
        for k in 0..n {
            if gen.is_done() {
                return k;
            }
            let off = self.data.len();
            self.data.resize(off + MAX_FRAME, 0);
            let (ts_ns, len) = gen.write_next(&mut self.data[off..]);
            self.data.truncate(off + len);
            self.frames.push(Stored {
                ts_ns,
                off,
                len: len as u32,
            });
        }
        n
    }

    /// [`FrameArena::fill`] from any [`FrameWriter`] (e.g. an [`Interleave`]).
    pub fn fill_from(&mut self, gen: &mut impl FrameWriter, n: usize) -> usize {
        for k in 0..n {
            if gen.is_done() {
                return k;
            }
            let off = self.data.len();
            self.data.resize(off + MAX_FRAME, 0);
            let (ts_ns, len) = gen.write_next(&mut self.data[off..]);
            self.data.truncate(off + len);
            self.frames.push(Stored {
                ts_ns,
                off,
                len: len as u32,
            });
        }
        n
    }

    /// Frame `i` (Ethernet).
    pub fn get(&self, i: usize) -> Option<Frame<'_>> {
        let s = self.frames.get(i)?;
        Some(Frame {
            ts_ns: s.ts_ns,
            linktype: LINKTYPE_ETHERNET,
            data: &self.data[s.off..s.off + s.len as usize],
            orig_len: s.len,
            caplen: s.len,
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = Frame<'_>> + '_ {
        (0..self.frames.len()).filter_map(|i| self.get(i))
    }

    /// A finite source that replays the stored frames once.
    pub fn source(&self) -> ArenaSource<'_> {
        ArenaSource {
            arena: self,
            next: 0,
        }
    }
}

/// Replays a [`FrameArena`] once, in batches of 64 (a finite source).
#[derive(Debug)]
pub struct ArenaSource<'a> {
    arena: &'a FrameArena,
    next: usize,
}

impl FrameSource for ArenaSource<'_> {
    fn recv_batch(&mut self, f: &mut dyn FnMut(Frame<'_>)) -> io::Result<usize> {
        let end = (self.next + BATCH).min(self.arena.len());
        for i in self.next..end {
            if let Some(frame) = self.arena.get(i) {
                f(frame);
            }
        }
        let n = end - self.next;
        self.next = end;
        Ok(n)
    }

    fn is_exhausted(&self) -> bool {
        self.next >= self.arena.len()
    }
}

/// Writes the classic pcap format (nanosecond timestamps, magic `a1b23c4d`,
/// little-endian, `LINKTYPE_ETHERNET`).
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    w: W,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the 24-byte file header.
    pub fn new(mut w: W) -> io::Result<PcapWriter<W>> {
        let mut h = [0u8; 24];
        h[0..4].copy_from_slice(&0xa1b2_3c4du32.to_le_bytes());
        h[4..6].copy_from_slice(&2u16.to_le_bytes());
        h[6..8].copy_from_slice(&4u16.to_le_bytes());
        // thiszone, sigfigs: 0
        h[16..20].copy_from_slice(&65535u32.to_le_bytes());
        h[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        w.write_all(&h)?;
        Ok(PcapWriter { w })
    }

    /// Writes one record.
    pub fn write_frame(&mut self, frame: &Frame<'_>) -> io::Result<()> {
        let mut h = [0u8; 16];
        let secs = frame.ts_ns / 1_000_000_000;
        let nanos = frame.ts_ns % 1_000_000_000;
        h[0..4].copy_from_slice(&(secs as u32).to_le_bytes());
        h[4..8].copy_from_slice(&(nanos as u32).to_le_bytes());
        h[8..12].copy_from_slice(&(frame.data.len() as u32).to_le_bytes());
        h[12..16].copy_from_slice(&frame.orig_len.to_le_bytes());
        self.w.write_all(&h)?;
        self.w.write_all(frame.data)
    }

    pub fn into_inner(self) -> W {
        self.w
    }
}

/// Writes `frames` frames of `gen` (fewer if it reaches its limit) as a pcap
/// file to `w`; returns how many.
pub fn write_pcap<W: Write>(w: W, gen: &mut Synthetic, frames: u64) -> io::Result<u64> {
    let mut p = PcapWriter::new(w)?;
    let mut n = 0;
    while n < frames {
        let Some(frame) = gen.next_frame() else { break };
        p.write_frame(&frame)?;
        n += 1;
    }
    p.into_inner().flush()?;
    Ok(n)
}

// ---------------------------------------------------------------------------
// Hostile traffic: a SYN flood of distinct spoofed 5-tuples and garbage
// frames, interleaved with the healthy traffic of a [`Synthetic`].

/// Most distinct SYN-flood tuples of one [`Hostile`] generator's tuple space.
pub const MAX_FLOOD_TUPLES: u64 = 1 << 30;
/// The victim of the hostile traffic: the synthetic server 198.19.0.1 /
/// 2001:db8:ff::1 (a server the healthy flows use too), port 443.
pub const VICTIM_PORT: u16 = 443;
const VICTIM_V4: [u8; 4] = [198, 19, 0, 1];
const VICTIM_V6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
];
/// Garbage comes from few attacker tuples (64 sources x 4 ports, over IPv4
/// and IPv6), so that garbage that happens to parse cannot exhaust the
/// table: a flood of distinct tuples is what the SYN flood measures.
const GARBAGE_SOURCES: u32 = 64;
const GARBAGE_PORTS: u32 = 4;

/// True for the addresses hostile generators send from: 198.18.128.0/17 and
/// 2001:db8:8000::/33, which [`Synthetic`]'s clients (198.18.0.0/17,
/// 2001:db8:0:S::/64) never use.
pub fn is_hostile_source(ip: &std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(a) => {
            let o = a.octets();
            o[0] == 198 && o[1] == 18 && o[2] >= 128
        }
        std::net::IpAddr::V6(a) => {
            let o = a.octets();
            o[..4] == [0x20, 0x01, 0x0d, 0xb8] && o[4] & 0x80 != 0
        }
    }
}

/// What a [`Hostile`] generator sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HostileKind {
    /// Bare SYNs from distinct spoofed 5-tuples, never answered.
    #[default]
    SynFlood,
    /// Malformed frames, one [`Garbage`] kind after the other.
    Garbage,
    /// Every other frame a flood SYN, the others garbage.
    Mixed,
}

/// The kinds of garbage frame, in the order of [`HostileStats::garbage`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Garbage {
    /// 0 to 1514 random bytes (the EtherType often IPv4, IPv6 or VLAN; the
    /// IP addresses an attacker's and the victim's).
    RandomBytes,
    /// A TCP or UDP frame cut inside its headers.
    TruncatedHeaders,
    /// TCP options that loop: zero-length options, one-byte lengths, an
    /// option running past the header, 40 bytes of NOPs.
    TcpOptionLoop,
    /// IPv4 total length or IHL, or IPv6 payload length, that lie.
    BogusIpLength,
    /// TCP data offset or UDP length that lie.
    BogusL4Length,
    /// IPv6 extension headers chained until the frame ends (never an L4 header).
    Ipv6ExtChain,
    /// IPv4 and IPv6 fragments of one datagram whose ranges overlap.
    OverlappingFragments,
    /// A first fragment of 8 bytes (the TCP header cut), or one at offset 8
    /// bytes that rewrites the TCP flags (RFC 1858).
    TinyFragments,
}

impl Garbage {
    pub const ALL: [Garbage; 8] = [
        Garbage::RandomBytes,
        Garbage::TruncatedHeaders,
        Garbage::TcpOptionLoop,
        Garbage::BogusIpLength,
        Garbage::BogusL4Length,
        Garbage::Ipv6ExtChain,
        Garbage::OverlappingFragments,
        Garbage::TinyFragments,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Garbage::RandomBytes => "random_bytes",
            Garbage::TruncatedHeaders => "truncated_headers",
            Garbage::TcpOptionLoop => "tcp_option_loop",
            Garbage::BogusIpLength => "bogus_ip_length",
            Garbage::BogusL4Length => "bogus_l4_length",
            Garbage::Ipv6ExtChain => "ipv6_ext_chain",
            Garbage::OverlappingFragments => "overlapping_fragments",
            Garbage::TinyFragments => "tiny_fragments",
        }
    }
}

/// What to send. The flood uses tuples `first_tuple .. first_tuple + tuples`
/// of a space of [`MAX_FLOOD_TUPLES`], each mapped by a bijection to a
/// source address in 198.18.128.0/17 (or 2001:db8:8000::/33) and a source
/// port: generators with disjoint ranges never send the same tuple. After
/// `tuples` SYNs the flood starts over from the first tuple.
#[derive(Clone, Debug, PartialEq)]
pub struct HostileConfig {
    pub seed: u64,
    pub kind: HostileKind,
    pub first_tuple: u64,
    pub tuples: u64,
    /// Share of the flood SYNs and garbage frames over IPv6.
    pub ipv6: f64,
}

impl Default for HostileConfig {
    fn default() -> Self {
        HostileConfig {
            seed: 1,
            kind: HostileKind::SynFlood,
            first_tuple: 0,
            tuples: 10_000_000,
            ipv6: 0.1,
        }
    }
}

/// What a [`Hostile`] generator sent so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostileStats {
    pub frames: u64,
    pub bytes: u64,
    pub syn_flood: u64,
    /// Distinct flood tuples sent (at most `tuples`).
    pub distinct_tuples: u64,
    /// Garbage frames by kind, in the order of [`Garbage::ALL`].
    pub garbage: [u64; 8],
}

/// The hostile generator: writes one frame at a time into a caller's buffer
/// (at least [`MAX_FRAME`] bytes), deterministically from the seed.
#[derive(Debug)]
pub struct Hostile {
    cfg: HostileConfig,
    rng: Rng,
    ipv6_ppm: u32,
    next_tuple: u64,
    next_garbage: usize,
    frag_id: u16,
    stats: HostileStats,
}

impl Hostile {
    pub fn new(cfg: HostileConfig) -> Result<Hostile, SyntheticError> {
        let ipv6_ppm = share_ppm("ipv6", cfg.ipv6)?;
        let end = cfg.first_tuple.checked_add(cfg.tuples);
        if cfg.tuples == 0 || end.is_none_or(|e| e > MAX_FLOOD_TUPLES) {
            return Err(SyntheticError {
                field: "tuples",
                value: format!("{}..+{}", cfg.first_tuple, cfg.tuples),
                expected: "1 or more tuples, first_tuple + tuples <= 2^30",
            });
        }
        Ok(Hostile {
            rng: Rng(cfg.seed ^ 0x686f_7374_696c_6521),
            ipv6_ppm,
            next_tuple: 0,
            next_garbage: 0,
            frag_id: 0,
            stats: HostileStats::default(),
            cfg,
        })
    }

    pub fn config(&self) -> &HostileConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &HostileStats {
        &self.stats
    }

    /// Writes the next hostile frame into `out`; returns its length.
    ///
    /// # Panics
    /// When `out` is shorter than [`MAX_FRAME`].
    pub fn write(&mut self, out: &mut [u8]) -> usize {
        assert!(out.len() >= MAX_FRAME, "buffer under MAX_FRAME bytes");
        let flood = match self.cfg.kind {
            HostileKind::SynFlood => true,
            HostileKind::Garbage => false,
            HostileKind::Mixed => self.stats.frames % 2 == 0,
        };
        let len = if flood {
            self.write_syn(out)
        } else {
            let g = Garbage::ALL[self.next_garbage];
            self.next_garbage = (self.next_garbage + 1) % Garbage::ALL.len();
            self.stats.garbage[g as usize] += 1;
            self.write_garbage(g, out)
        };
        self.stats.frames += 1;
        self.stats.bytes += len as u64;
        len
    }

    /// The `j`-th tuple of the space: a bijection of 30 bits, then 15 bits
    /// of source address and 15 bits of source port.
    fn tuple(j: u64) -> (u32, u16) {
        const MASK: u64 = MAX_FLOOD_TUPLES - 1;
        let mut x = j.wrapping_mul(0x9e37_79b9) & MASK; // odd: a bijection mod 2^30
        x ^= x >> 15; // xorshift: a bijection too
        ((x & 0x7fff) as u32, 1024 + (x >> 15) as u16)
    }

    fn hostile_addr(&mut self, v6: bool, host: u32) -> Addr {
        if v6 {
            let mut a = [0u8; 16];
            a[..5].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0x80]);
            a[12..].copy_from_slice(&host.to_be_bytes());
            Addr::from_v6(a)
        } else {
            Addr::from_v4([198, 18, 128 | ((host >> 8) as u8 & 0x7f), host as u8])
        }
    }

    fn victim(v6: bool) -> Addr {
        if v6 {
            Addr::from_v6(VICTIM_V6)
        } else {
            Addr::from_v4(VICTIM_V4)
        }
    }

    fn write_syn(&mut self, out: &mut [u8]) -> usize {
        let j = self.cfg.first_tuple + self.next_tuple;
        self.next_tuple += 1;
        if self.next_tuple == self.cfg.tuples {
            self.next_tuple = 0;
        }
        self.stats.syn_flood += 1;
        self.stats.distinct_tuples = self.stats.syn_flood.min(self.cfg.tuples);
        let (host, sport) = Hostile::tuple(j);
        let v6 = self.rng.chance(self.ipv6_ppm);
        let src = self.hostile_addr(v6, host);
        let dst = Hostile::victim(v6);
        write_eth(out, &MAC_SERVER, &MAC_CLIENT, v6);
        let isn = self.rng.next() as u32;
        // MSS option only, as flood tools send
        let off = write_ip(out, v6, 24, isn as u16, 0x4000, proto::TCP, &src, &dst);
        write_tcp_header(
            &mut out[off..],
            sport,
            VICTIM_PORT,
            isn,
            0,
            6,
            F::SYN,
            64240,
        );
        out[off + 20..off + 24].copy_from_slice(&[2, 4, 0x05, 0xb4]);
        off + 24
    }

    /// A garbage attacker tuple: (source, source port).
    fn garbage_source(&mut self, v6: bool) -> (Addr, u16) {
        let host = self.rng.below(GARBAGE_SOURCES);
        let port = 40000 + self.rng.below(GARBAGE_PORTS) as u16;
        (self.hostile_addr(v6, 0x7f00 | host), port)
    }

    fn write_garbage(&mut self, g: Garbage, out: &mut [u8]) -> usize {
        let v6 = self.rng.chance(self.ipv6_ppm);
        let (src, sport) = self.garbage_source(v6);
        let dst = Hostile::victim(v6);
        let r = self.rng.next();
        match g {
            Garbage::RandomBytes => {
                let len = self.rng.below(MAX_FRAME as u32 + 1) as usize;
                for chunk in out[..len].chunks_mut(8) {
                    let b = self.rng.next().to_le_bytes();
                    chunk.copy_from_slice(&b[..chunk.len()]);
                }
                if len >= 14 {
                    let et: [u8; 2] = match r % 4 {
                        0 => [0x08, 0x00],
                        1 => [0x86, 0xdd],
                        2 => [0x81, 0x00],
                        _ => [(r >> 8) as u8, (r >> 16) as u8],
                    };
                    out[12..14].copy_from_slice(&et);
                }
                // from an attacker to the victim, whatever else the bytes say
                // (so what parses is told apart from the healthy flows)
                let host = 0x7f00 | ((r >> 32) as u32 % GARBAGE_SOURCES);
                match (r % 4, len) {
                    (0, 34..) => {
                        let a = self.hostile_addr(false, host);
                        out[26..30].copy_from_slice(&a.0[12..]);
                        out[30..34].copy_from_slice(&VICTIM_V4);
                    }
                    (1, 54..) => {
                        let a = self.hostile_addr(true, host);
                        out[22..38].copy_from_slice(&a.0);
                        out[38..54].copy_from_slice(&VICTIM_V6);
                    }
                    _ => {}
                }
                len
            }
            Garbage::TruncatedHeaders => {
                write_eth(out, &MAC_SERVER, &MAC_CLIENT, v6);
                let tcp = r & 1 == 0;
                let (p, l4) = if tcp {
                    (proto::TCP, 40)
                } else {
                    (proto::UDP, 8)
                };
                let off = write_ip(out, v6, l4 + 100, 1, 0, p, &src, &dst);
                if tcp {
                    write_tcp_header(&mut out[off..], sport, VICTIM_PORT, 1, 1, 10, F::ACK, 1000);
                } else {
                    write_udp(&mut out[off..], sport, VICTIM_PORT, l4 + 100);
                }
                // cut anywhere before the end of the L4 header
                self.rng.below(off as u32 + l4) as usize
            }
            Garbage::TcpOptionLoop => {
                write_eth(out, &MAC_SERVER, &MAC_CLIENT, v6);
                let off = write_ip(out, v6, 60, 1, 0, proto::TCP, &src, &dst);
                let flags = if r & 0x10 == 0 {
                    F::SYN
                } else {
                    F::ACK | F::PSH
                };
                write_tcp_header(&mut out[off..], sport, VICTIM_PORT, 7, 7, 15, flags, 1000);
                let opts = &mut out[off + 20..off + 60];
                match r % 4 {
                    // zero-length options: a parser that advances by the
                    // length field never moves
                    0 => opts.chunks_mut(2).for_each(|c| c.copy_from_slice(&[8, 0])),
                    // one-byte lengths (under the 2-byte minimum)
                    1 => opts.chunks_mut(2).for_each(|c| c.copy_from_slice(&[2, 1])),
                    // an option that runs past the header
                    2 => {
                        opts.fill(1);
                        opts[36..40].copy_from_slice(&[5, 255, 0, 0]);
                    }
                    // NOPs to the end, no EOL
                    _ => opts.fill(1),
                }
                off + 60
            }
            Garbage::BogusIpLength => {
                write_eth(out, &MAC_SERVER, &MAC_CLIENT, v6);
                let off = write_ip(out, v6, 20, 1, 0, proto::TCP, &src, &dst);
                write_tcp_header(&mut out[off..], sport, VICTIM_PORT, 1, 1, 5, F::ACK, 1000);
                let ip = &mut out[14..];
                match (v6, r % 4) {
                    (false, 0) => ip[2..4].copy_from_slice(&10u16.to_be_bytes()), // under the header
                    (false, 1) => ip[0] = 0x43,                                   // IHL 3
                    (false, 2) => ip[0] = 0x4f, // IHL 15: options past the packet
                    (false, _) => ip[2..4].copy_from_slice(&u16::MAX.to_be_bytes()), // past the frame
                    (true, 0) => ip[4..6].copy_from_slice(&u16::MAX.to_be_bytes()),
                    (true, 1) => ip[4..6].copy_from_slice(&4u16.to_be_bytes()), // under a TCP header
                    (true, 2) => ip[0] = 0x40, // version 4 in an IPv6 frame
                    (true, _) => ip[4..6].copy_from_slice(&0u16.to_be_bytes()),
                }
                off + 20
            }
            Garbage::BogusL4Length => {
                write_eth(out, &MAC_SERVER, &MAC_CLIENT, v6);
                if r & 1 == 0 {
                    let off = write_ip(out, v6, 20, 1, 0, proto::TCP, &src, &dst);
                    // data offset 2 (under 5 words) or 15 (past a 20-byte segment)
                    let doff = if r & 2 == 0 { 2 } else { 15 };
                    write_tcp_header(
                        &mut out[off..],
                        sport,
                        VICTIM_PORT,
                        1,
                        1,
                        doff,
                        F::ACK,
                        1000,
                    );
                    off + 20
                } else {
                    let off = write_ip(out, v6, 8, 1, 0, proto::UDP, &src, &dst);
                    // UDP length under its header, or past the datagram
                    let ulen = if r & 2 == 0 { 3 } else { 9000 };
                    write_udp(&mut out[off..], sport, VICTIM_PORT, ulen);
                    out[off + 4..off + 6].copy_from_slice(&(ulen as u16).to_be_bytes());
                    off + 8
                }
            }
            Garbage::Ipv6ExtChain => {
                // hop-by-hop, destination options, routing, ... until the frame ends
                const EXT: [u8; 3] = [0, 60, 43];
                let n = 1 + self.rng.below(182) as usize;
                let len = 14 + 40 + n * 8;
                write_eth(out, &MAC_SERVER, &MAC_CLIENT, true);
                let src = self.hostile_addr(true, 0x7f00 | (r as u32 % GARBAGE_SOURCES));
                let off = write_ip(
                    out,
                    true,
                    (n * 8) as u32,
                    0,
                    0,
                    EXT[(r % 3) as usize],
                    &src,
                    &Hostile::victim(true),
                );
                for k in 0..n {
                    let h = &mut out[off + k * 8..off + k * 8 + 8];
                    h.fill(0);
                    // the last one names another extension header too
                    h[0] = EXT[(r as usize + k + 1) % 3];
                    h[2] = 1; // PadN
                    h[3] = 4;
                }
                len
            }
            Garbage::OverlappingFragments => {
                // fragments of one datagram id, each overlapping the last
                self.frag_id = self.frag_id.wrapping_add(u16::from(r % 8 == 0));
                let id = self.frag_id;
                let k = (r >> 8) % 6; // the k-th piece: offsets 0, 8, 16 .. bytes
                let data = 24 + 8 * ((r >> 16) & 7) as u32; // longer than the step
                write_eth(out, &MAC_SERVER, &MAC_CLIENT, v6);
                let mf_off = (k as u16) | 0x2000; // MF, offset k x 8 bytes
                if v6 {
                    let off = write_ip(out, true, 8 + data, 0, 0, 44, &src, &dst);
                    out[off] = proto::UDP;
                    out[off + 1] = 0;
                    out[off + 2..off + 4].copy_from_slice(&(((k as u16) << 3) | 1).to_be_bytes());
                    out[off + 4..off + 8].copy_from_slice(&u32::from(id).to_be_bytes());
                    out[off + 8..off + 8 + data as usize].fill(0);
                    if k == 0 {
                        write_udp(&mut out[off + 8..], sport, VICTIM_PORT, 200);
                    }
                    off + 8 + data as usize
                } else {
                    let off = write_ip(out, false, data, id, mf_off, proto::UDP, &src, &dst);
                    out[off..off + data as usize].fill(0);
                    if k == 0 {
                        write_udp(&mut out[off..], sport, VICTIM_PORT, 200);
                    }
                    off + data as usize
                }
            }
            Garbage::TinyFragments => {
                self.frag_id = self.frag_id.wrapping_add(1);
                write_eth(out, &MAC_SERVER, &MAC_CLIENT, false);
                let src = self.hostile_addr(false, 0x7f00 | (r as u32 % GARBAGE_SOURCES));
                let dst = Hostile::victim(false);
                if r & 0x100 == 0 {
                    // first fragment: 8 bytes of TCP (ports and sequence only)
                    let off = write_ip(out, false, 8, self.frag_id, 0x2000, proto::TCP, &src, &dst);
                    write_tcp_header(&mut out[off..], sport, VICTIM_PORT, 1, 0, 5, F::SYN, 0);
                    off + 8
                } else {
                    // offset 8 bytes: rewrites the TCP header's flags and window
                    let off = write_ip(out, false, 16, self.frag_id, 1, proto::TCP, &src, &dst);
                    out[off..off + 16].fill(0);
                    out[off + 5] = F::SYN | F::RST;
                    off + 16
                }
            }
        }
    }
}

/// Something that writes frames one by one into a caller's buffer (at least
/// [`MAX_FRAME`] bytes), as [`FrameArena::fill_from`] takes them.
pub trait FrameWriter {
    /// Writes the next frame; returns (timestamp, length).
    fn write_next(&mut self, out: &mut [u8]) -> (u64, usize);
    /// No frame is left.
    fn is_done(&self) -> bool;
}

impl FrameWriter for Synthetic {
    fn write_next(&mut self, out: &mut [u8]) -> (u64, usize) {
        Synthetic::write_next(self, out)
    }

    fn is_done(&self) -> bool {
        Synthetic::is_done(self)
    }
}

/// Healthy traffic with hostile frames spread evenly among it: of every
/// million frames, `share` x 1e6 are hostile (at the timestamp of the
/// healthy frame before them). The healthy frames are exactly those the
/// [`Synthetic`] alone would write, in the same order with the same
/// timestamps, so a run with hostile traffic and one without see the same
/// healthy flows.
#[derive(Debug)]
pub struct Interleave {
    healthy: Synthetic,
    hostile: Hostile,
    share_ppm: u32,
    acc: u32,
    last_ts: u64,
    /// Hostile frames left to send (`None`: no limit).
    hostile_left: Option<u64>,
}

impl Interleave {
    /// `share` in `0.0..1.0`; `hostile_limit`: stop sending hostile frames
    /// after that many (if the healthy traffic ends first, the rest follow it).
    pub fn new(
        healthy: Synthetic,
        hostile: Hostile,
        share: f64,
        hostile_limit: Option<u64>,
    ) -> Result<Interleave, SyntheticError> {
        let share_ppm = share_ppm("share", share)?;
        if share_ppm >= 1_000_000 {
            return Err(SyntheticError {
                field: "share",
                value: share.to_string(),
                expected: "a share under 1.0 (some healthy traffic)",
            });
        }
        Ok(Interleave {
            last_ts: healthy.config().start_ns,
            healthy,
            hostile,
            share_ppm,
            acc: 0,
            hostile_left: hostile_limit,
        })
    }

    pub fn healthy(&self) -> &Synthetic {
        &self.healthy
    }

    pub fn hostile(&self) -> &Hostile {
        &self.hostile
    }
}

impl FrameWriter for Interleave {
    fn write_next(&mut self, out: &mut [u8]) -> (u64, usize) {
        self.acc += self.share_ppm;
        let hostile_due = self.acc >= 1_000_000 || self.healthy.is_done();
        if hostile_due && self.hostile_left != Some(0) {
            self.acc = self.acc.saturating_sub(1_000_000);
            if let Some(n) = self.hostile_left.as_mut() {
                *n -= 1;
            }
            return (self.last_ts, self.hostile.write(out));
        }
        self.acc %= 1_000_000;
        let (ts, len) = self.healthy.write_next(out);
        self.last_ts = ts;
        (ts, len)
    }

    /// The healthy traffic is over and, with a limit, so is the hostile.
    fn is_done(&self) -> bool {
        self.healthy.is_done() && self.hostile_left.is_none_or(|n| n == 0)
    }
}

/// Writes a TCP header (no checksum) with `doff` 32-bit words of header.
#[expect(
    clippy::too_many_arguments,
    reason = "header fields, written once each"
)]
fn write_tcp_header(
    out: &mut [u8],
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    doff: u8,
    flags: u8,
    win: u16,
) {
    out[0..2].copy_from_slice(&sport.to_be_bytes());
    out[2..4].copy_from_slice(&dport.to_be_bytes());
    out[4..8].copy_from_slice(&seq.to_be_bytes());
    out[8..12].copy_from_slice(&ack.to_be_bytes());
    out[12] = doff << 4;
    out[13] = flags;
    out[14..16].copy_from_slice(&win.to_be_bytes());
    out[16..20].fill(0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Engine, EngineConfig};
    use crate::meta::Frag;
    use crate::source::pcap::CaptureReader;
    use crate::wire::{self, LinkType};

    fn cfg(seed: u64) -> SyntheticConfig {
        SyntheticConfig {
            seed,
            flows: 300,
            loss: 0.05,
            reorder: 0.05,
            ipv6: 0.2,
            frag: 0.05,
            pmtu: 0.01,
            conn_packets: 60,
            limit: Some(30_000),
            ..SyntheticConfig::default()
        }
    }

    fn collect(c: SyntheticConfig) -> FrameArena {
        let mut g = Synthetic::new(c).unwrap();
        let mut a = FrameArena::new();
        a.fill(&mut g, usize::MAX);
        a
    }

    #[test]
    fn deterministic_per_seed() {
        let a = collect(cfg(7));
        let b = collect(cfg(7));
        let c = collect(cfg(8));
        assert_eq!(a.len(), 30_000);
        assert_eq!(a.data, b.data);
        assert!(a.iter().zip(b.iter()).all(|(x, y)| x == y));
        assert_ne!(a.data, c.data);
        // The FrameSource path yields the same frames as the arena path.
        let mut g = Synthetic::new(cfg(7)).unwrap();
        let mut i = 0;
        while !g.is_exhausted() {
            g.recv_batch(&mut |f| {
                assert_eq!(Some(f), a.get(i));
                i += 1;
            })
            .unwrap();
        }
        assert_eq!(i, 30_000);
    }

    #[test]
    fn frames_are_valid_and_varied() {
        let a = collect(cfg(1));
        let mut m = PacketMeta::default();
        let (mut v6, mut udp, mut syn, mut fin, mut ts, mut sack, mut frags, mut icmp) =
            (0, 0, 0, 0, 0, 0, 0, 0);
        let mut last_ts = 0;
        for f in a.iter() {
            assert!(f.ts_ns > last_ts, "timestamps strictly increase");
            last_ts = f.ts_ns;
            assert!((64..=MAX_FRAME).contains(&f.data.len()), "{}", f.data.len());
            m.ts_ns = f.ts_ns;
            wire::parse(LinkType::Ethernet, f.data, &mut m)
                .unwrap_or_else(|e| panic!("{e}: {:02x?}", f.data));
            assert_eq!(m.ip_len as usize + 14, f.data.len(), "{m:?}");
            if m.is_v6 {
                v6 += 1;
            } else {
                assert_eq!(checksum(&f.data[14..34]), 0, "IPv4 header checksum");
            }
            udp += usize::from(m.proto == proto::UDP);
            frags += usize::from(m.frag != Frag::None);
            if m.is_tcp() {
                syn += usize::from(m.tcp.flags & F::SYN != 0);
                fin += usize::from(m.tcp.flags & F::FIN != 0);
                ts += usize::from(m.tcp.opts.ts.is_some());
                sack += usize::from(m.tcp.opts.sack_n > 0);
                if m.tcp.flags & F::SYN != 0 {
                    assert!(m.tcp.opts.mss.is_some() && m.tcp.opts.sack_ok);
                }
            }
            if m.is_icmp() {
                icmp += 1;
                assert_eq!(m.icmp.mtu, Some(1400));
                let q = m.icmp.quoted.expect("quoted segment parsed");
                assert_eq!(q.src, m.dst);
            }
        }
        let n = a.len();
        eprintln!("v6 {v6} udp {udp} syn {syn} fin {fin} ts {ts} sack {sack} frags {frags} icmp {icmp} of {n}");
        assert!(v6 > n / 10 && v6 < n / 3);
        assert!(udp > n / 20);
        assert!(syn > 300 && fin > 100 && sack > 10 && frags > 10 && icmp > 5);
        assert_eq!(ts + udp + icmp, n, "every TCP segment carries timestamps");
    }

    #[test]
    fn engine_sees_the_flows_generated() {
        let mut g = Synthetic::new(cfg(3)).unwrap();
        let mut e = Engine::new(EngineConfig::default());
        while let Some(f) = g.next_frame() {
            e.handle_frame(f.ts_ns, LinkType::Ethernet, f.data);
        }
        let st = *g.stats();
        let s = e.summary();
        assert_eq!(s.packets, st.frames);
        assert!(s.parse_errors.is_empty() && s.non_ip == 0);
        assert_eq!(s.flows.tcp, st.tcp_connections);
        assert_eq!(s.flows.udp, st.udp_flows);
        assert_eq!(s.icmp.frag_needed + s.icmp.packet_too_big, st.pmtu_errors);
        assert_eq!(s.fragments.ipv4, st.fragments);
        assert_eq!(s.tcp.syn, st.tcp_connections + st.syn_retransmits);
        assert!(s.tcp.fin >= st.tcp_closed && st.tcp_closed > 100);
        // Loss and reordering reach the analyzer's slow paths.
        assert!(s.tcp.hole_fill > 0 && s.tcp.retrans_seen > 0 && s.tcp.gaps > 0);
        assert!(s.tcp.dup_acks > 0);
        let mut rtt = 0;
        e.for_each_active(|f| rtt += f.dirs[1].rtt.count());
        assert!(rtt > 1000, "RTT samples from timestamps: {rtt}");
        eprintln!("{st:?}\n{:?}", s.tcp);
    }

    #[test]
    fn exactly_the_configured_flows_without_churn() {
        let c = SyntheticConfig {
            flows: 5000,
            conn_packets: 0,
            limit: Some(20_000),
            ..cfg(5)
        };
        let mut g = Synthetic::new(c).unwrap();
        let mut e = Engine::new(EngineConfig::default());
        while let Some(f) = g.next_frame() {
            e.handle_frame(f.ts_ns, LinkType::Ethernet, f.data);
        }
        let s = e.summary();
        assert_eq!(s.flows.tcp + s.flows.udp, 5000);
        let icmp_flows = s.flows.icmp;
        assert_eq!(e.table().len() as u64, 5000 + icmp_flows);
    }

    #[test]
    fn owner_filter_steers_every_flow() {
        for w in 0..3 {
            let c = SyntheticConfig {
                owner: Some((3, w)),
                limit: Some(5000),
                pmtu: 0.0,
                ..cfg(9)
            };
            let mut g = Synthetic::new(c).unwrap();
            let mut m = PacketMeta::default();
            while let Some(f) = g.next_frame() {
                wire::parse(LinkType::Ethernet, f.data, &mut m).unwrap();
                if m.frag == Frag::Later {
                    continue;
                }
                let (k, _) = FlowKey::of(&m);
                assert_eq!(k.symmetric_hash() % 3, u64::from(w));
            }
        }
    }

    #[test]
    fn pcap_round_trip() {
        let mut g = Synthetic::new(cfg(11)).unwrap();
        let mut buf = Vec::new();
        assert_eq!(write_pcap(&mut buf, &mut g, 1000).unwrap(), 1000);
        let a = {
            let mut g = Synthetic::new(cfg(11)).unwrap();
            let mut a = FrameArena::new();
            a.fill(&mut g, 1000);
            a
        };
        let mut r = CaptureReader::new(&buf[..]).unwrap();
        let mut i = 0;
        while let Some(f) = r.next_frame().unwrap() {
            let want = a.get(i).unwrap();
            assert_eq!((f.ts_ns, f.data, f.linktype), (want.ts_ns, want.data, 1));
            i += 1;
        }
        assert_eq!(i, 1000);
    }

    #[test]
    fn bad_config_is_refused() {
        let bad = [
            SyntheticConfig {
                flows: 0,
                ..SyntheticConfig::default()
            },
            SyntheticConfig {
                loss: 1.5,
                ..SyntheticConfig::default()
            },
            SyntheticConfig {
                pps: 0,
                ..SyntheticConfig::default()
            },
            SyntheticConfig {
                owner: Some((2, 2)),
                ..SyntheticConfig::default()
            },
            SyntheticConfig {
                space: MAX_SPACE,
                ..SyntheticConfig::default()
            },
        ];
        for c in bad {
            let e = Synthetic::new(c).unwrap_err();
            assert!(e.to_string().contains("out of range"), "{e}");
        }
    }
}
