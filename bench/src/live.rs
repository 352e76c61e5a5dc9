//! `wirelens bench live`: the live path on a veth lab, against a drop-only
//! AF_XDP loop and tcpdump, at the same offered load.
//!
//! The lab: two network namespaces (`wl<pid>t`, `wl<pid>r`) joined by a
//! veth pair (`wl<pid>a` -> `wl<pid>b`) with `--queues` rx/tx queues each,
//! IPv6 off and no addresses (nothing but the generator's frames crosses
//! it), GRO off on the receiving end. [`Lab`] deletes both namespaces (and
//! with them the veth and any XDP program on it) when dropped: on success,
//! on error, on panic (unwinding) and after Ctrl-C / SIGTERM (which only set
//! a flag here: the run stops at the next check and unwinds normally).
//! Only a SIGKILL leaves the two namespaces behind (`ip netns del` them).
//!
//! The traffic: per queue, frames of `wirelens_dataplane::source::synthetic`
//! (TCP with handshakes, timestamps, SACK, loss and reordering; UDP) are
//! generated once, untimed, into an arena and replayed in a loop by one
//! AF_XDP transmitting socket per queue ([`XskTx`], copy mode on veth). On
//! each pass over the arena the TCP sequence/ack numbers and timestamps are
//! shifted, so every pass is a new generation of the same connections
//! (their SYNs open them again with new ISNs) rather than a replay the
//! analyzer would count as retransmissions. `--size N` sends fixed-size UDP
//! frames over `--flows` flows instead. Queue q's socket feeds the peer's
//! rx queue q (veth keeps the queue mapping), and with several queues each
//! generator only makes flows that the owner hash puts on its queue, as
//! symmetric RSS would.
//!
//! The receivers, one after the other, each with the same arena from its
//! start: (a) `drop`: our XDP program and one AF_XDP socket per queue, the
//! frames counted and returned to the fill ring; (b) `run`: the real
//! `wirelens run` binary (full analysis), counters from its /metrics; (c)
//! `tcpdump -w /dev/null` (AF_PACKET, TPACKET_V3), counters from its exit
//! statistics.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::{Args, ValueEnum};
use serde::Serialize;
use wirelens_dataplane::source::synthetic::{Mix, Synthetic, SyntheticConfig, MAX_FRAME};
use wirelens_dataplane::xdp::{
    enter_netns, ModePreference, RxMode, XdpProgram, XskConfig, XskSocket, XskTx, XskTxConfig,
};

use crate::MixArg;
use wirelens_output::{exit, Format};

/// The receivers `bench live` compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Our XDP program + AF_XDP sockets, frames returned unread (the baseline).
    Drop,
    /// `wirelens run` with full analysis.
    Run,
    /// `tcpdump -w /dev/null` (AF_PACKET).
    Tcpdump,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Drop => "drop-only",
            Mode::Run => "wirelens run",
            Mode::Tcpdump => "tcpdump",
        }
    }
}

/// The live path on a veth lab of its own: an AF_XDP generator against (a) a
/// drop-only AF_XDP loop, (b) `wirelens run` (full analysis), (c) tcpdump,
/// at the same offered load. Needs root. The lab is removed on exit.
#[derive(Debug, Args)]
pub struct LiveArgs {
    /// Seconds of traffic per receiver.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Offered frames per second, all queues together (0: as fast as the
    /// generator can).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Concurrent flows (all queues together).
    #[arg(long, default_value_t = 10_000)]
    pub flows: usize,
    /// 0: the synthetic mix (TCP and UDP, 64-1514 B frames); N: fixed-size
    /// UDP frames of N bytes (60-1514) over --flows flows.
    #[arg(long, default_value_t = 0)]
    pub size: usize,
    /// Rx/tx queues of the veth pair: one generator socket and one
    /// receiver worker per queue.
    #[arg(long, default_value_t = 1)]
    pub queues: u32,
    /// Receivers to measure, in this order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "drop,run,tcpdump"
    )]
    pub modes: Vec<Mode>,
    /// Protocol mix of the synthetic traffic.
    #[arg(long, value_enum, default_value_t = MixArg::Mixed)]
    pub mix: MixArg,
    /// Frames generated per queue before the run and replayed (default:
    /// 262144 / queues).
    #[arg(long)]
    pub arena: Option<usize>,
    /// UMEM frames per queue of the AF_XDP receivers (drop-only and
    /// `wirelens run --frames`): how long a stalled worker can fall behind.
    #[arg(long, default_value_t = 16384)]
    pub frames: u32,
    /// tcpdump's buffer (-B), KiB.
    #[arg(long, default_value_t = 32_768)]
    pub tcpdump_buffer: u32,
    /// How the AF_XDP receivers (drop-only and `wirelens run`) wait:
    /// adaptive, busy or wait (as `wirelens run --poll`).
    #[arg(long, default_value = "adaptive", value_parser = ["adaptive", "busy", "wait"])]
    pub poll: String,
    /// Cores of the generator threads, comma-separated (default: the first
    /// usable core).
    #[arg(long, value_delimiter = ',')]
    pub tx_cores: Option<Vec<usize>>,
    /// Cores of the receivers, comma-separated (default: the other usable
    /// cores; all of them on a 1-core machine).
    #[arg(long, value_delimiter = ',')]
    pub rx_cores: Option<Vec<usize>>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// `table` for people, `json` (or `ndjson`: the same on one line) for scripts.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Never show a progress bar (the per-receiver lines on stderr stay).
    #[arg(long)]
    pub no_progress: bool,
}

/// A flag SIGINT and SIGTERM set, so a bench run stops and tears its lab
/// down; `None` (said on stderr for `bench`) when a handler cannot be put in.
pub(crate) fn stop_on_signals(bench: &str) -> Option<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(&stop)) {
            eprintln!("wirelens bench {bench}: cannot install a handler for signal {sig}: {e}");
            return None;
        }
    }
    Some(stop)
}

pub fn run(a: &LiveArgs) -> u8 {
    let Some(stop) = stop_on_signals("live") else {
        return exit::INPUT;
    };
    match bench_live(a, &stop) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("wirelens bench live: {e:#}");
            if stop.load(Ordering::Relaxed) {
                130
            } else {
                exit::INPUT
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The lab

pub(crate) fn cmd(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", args[0]))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The namespaces, the veth pair, the children and the scratch directory of
/// one run; all removed on drop.
#[derive(Debug)]
struct Lab {
    ns_tx: String,
    ns_rx: String,
    if_tx: String,
    if_rx: String,
    dir: PathBuf,
    children: Vec<Child>,
}

impl Lab {
    fn create(queues: u32) -> anyhow::Result<Lab> {
        let pid = std::process::id();
        let lab = Lab {
            ns_tx: format!("wl{pid}t"),
            ns_rx: format!("wl{pid}r"),
            if_tx: format!("wl{pid}a"),
            if_rx: format!("wl{pid}b"),
            dir: std::env::temp_dir().join(format!("wirelens-bench-live-{pid}")),
            children: Vec::new(),
        };
        // Leftovers of a SIGKILLed earlier run with the same pid are ours.
        lab.remove_namespaces();
        std::fs::create_dir_all(&lab.dir)
            .with_context(|| format!("cannot create {}", lab.dir.display()))?;
        let q = queues.to_string();
        for ns in [&lab.ns_tx, &lab.ns_rx] {
            cmd(&["ip", "netns", "add", ns])?;
            cmd(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ])?;
            cmd(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        cmd(&[
            "ip",
            "link",
            "add",
            &lab.if_tx,
            "netns",
            &lab.ns_tx,
            "numrxqueues",
            &q,
            "numtxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            &lab.if_rx,
            "netns",
            &lab.ns_rx,
            "numrxqueues",
            &q,
            "numtxqueues",
            &q,
        ])?;
        // GRO would merge TCP segments before tcpdump sees them.
        let _ = cmd(&[
            "ip", "netns", "exec", &lab.ns_rx, "ethtool", "-K", &lab.if_rx, "gro", "off",
        ]);
        cmd(&["ip", "-n", &lab.ns_tx, "link", "set", &lab.if_tx, "up"])?;
        cmd(&["ip", "-n", &lab.ns_rx, "link", "set", &lab.if_rx, "up"])?;
        Ok(lab)
    }

    /// Puts the receive side's kernel work of the path without XDP (the
    /// backlog, AF_PACKET's copy for tcpdump) on the receiver's cores with
    /// RPS, as a NIC's interrupt affinity would. Without it, veth does that
    /// work in the sender's `sendto`, on the generator's core.
    fn steer_rps(&self, rx_cores: &[usize]) -> Result<(), String> {
        let mask = rx_cores
            .iter()
            .fold(0u128, |m, &c| m | 1u128.checked_shl(c as u32).unwrap_or(0));
        if mask == 0 {
            return Err("no rx cores".into());
        }
        let dev = format!("/sys/class/net/{}", self.if_rx);
        let script =
            format!("for q in {dev}/queues/rx-*; do echo {mask:x} > $q/rps_cpus || exit 1; done");
        cmd(&["ip", "netns", "exec", &self.ns_rx, "sh", "-c", &script])
            .map(drop)
            .map_err(|e| format!("RPS: {e:#}"))
    }

    /// The same for the XDP path: threaded NAPI on the receiving veth (its
    /// NAPI exists once an XDP program is attached), its threads
    /// (`napi/IF-N`) pinned to `rx_cores`. Returns how many were pinned.
    fn steer_napi(&self, rx_cores: &[usize]) -> Result<u64, String> {
        let dev = format!("/sys/class/net/{}", self.if_rx);
        cmd(&[
            "ip",
            "netns",
            "exec",
            &self.ns_rx,
            "sh",
            "-c",
            &format!("echo 1 > {dev}/threaded"),
        ])
        .map_err(|e| format!("threaded NAPI: {e:#}"))?;
        Ok(self.pin_napi_threads(rx_cores))
    }

    /// Pins the receiving veth's NAPI threads (`napi/IF-N`, they exist once
    /// an XDP program is attached) to `rx_cores`; returns how many.
    fn pin_napi_threads(&self, rx_cores: &[usize]) -> u64 {
        if rx_cores.is_empty() {
            return 0;
        }
        let want = format!("napi/{}", self.if_rx);
        // Thread names are cut at 15 bytes.
        let want = &want[..want.len().min(15)];
        let cores = rx_cores
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut n = 0;
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let pid = e.file_name().to_string_lossy().into_owned();
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            if comm.trim_end().starts_with(want)
                && cmd(&["taskset", "-p", "-c", &cores, &pid]).is_ok()
            {
                n += 1;
            }
        }
        n
    }

    fn remove_namespaces(&self) {
        for ns in [&self.ns_tx, &self.ns_rx] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    /// Starts `args` inside the receiving namespace; stdout and stderr go to
    /// `NAME.out` / `NAME.err` in the lab directory. Returns the child's index.
    fn spawn_rx(&mut self, name: &str, args: &[&str]) -> anyhow::Result<usize> {
        let out = File::create(self.dir.join(format!("{name}.out")))?;
        let err = File::create(self.dir.join(format!("{name}.err")))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns_rx])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot start {}", args.join(" ")))?;
        self.children.push(child);
        Ok(self.children.len() - 1)
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.err"))).unwrap_or_default()
    }

    /// Sends `sig` to child `i` (`ip netns exec` execs the command, so the
    /// child is the command itself) and waits up to `timeout` for it to exit;
    /// kills it after that.
    fn stop_child(&mut self, i: usize, sig: &str, timeout: Duration) -> Option<i32> {
        let pid = self.children[i].id().to_string();
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .stderr(Stdio::null())
            .status();
        let end = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.children[i].try_wait() {
                return st.code();
            }
            if Instant::now() >= end {
                let _ = self.children[i].kill();
                let _ = self.children[i].wait();
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The kernel's counters of `dev` in `ns` (`ip -s -j link`).
    fn link_stats(ns: &str, dev: &str) -> LinkStats {
        let Ok(out) = cmd(&["ip", "-n", ns, "-s", "-j", "link", "show", "dev", dev]) else {
            return LinkStats::default();
        };
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        let s = &v[0]["stats64"];
        let n = |dir: &str, k: &str| s[dir][k].as_u64().unwrap_or(0);
        LinkStats {
            rx_packets: n("rx", "packets"),
            rx_dropped: n("rx", "dropped"),
            tx_packets: n("tx", "packets"),
            tx_dropped: n("tx", "dropped"),
        }
    }

    fn stats(&self) -> (LinkStats, LinkStats) {
        (
            Lab::link_stats(&self.ns_tx, &self.if_tx),
            Lab::link_stats(&self.ns_rx, &self.if_rx),
        )
    }

    /// GET `path` from 127.0.0.1:`port` inside the receiving namespace.
    fn http(&self, port: u16, path: &str) -> Option<(u16, String)> {
        let (ns, path) = (self.ns_rx.clone(), path.to_string());
        thread::spawn(move || -> Option<(u16, String)> {
            enter_netns(&ns).ok()?;
            let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
            // HTTP/1.0: no chunked encoding in the answer.
            write!(s, "GET {path} HTTP/1.0\r\nHost: wirelens\r\n\r\n").ok()?;
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).ok()?;
            let text = String::from_utf8_lossy(&buf).into_owned();
            let (head, body) = text.split_once("\r\n\r\n")?;
            let status = head.split_whitespace().nth(1)?.parse().ok()?;
            Some((status, body.to_string()))
        })
        .join()
        .ok()
        .flatten()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
        self.remove_namespaces();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
struct LinkStats {
    rx_packets: u64,
    rx_dropped: u64,
    tx_packets: u64,
    tx_dropped: u64,
}

impl LinkStats {
    fn since(&self, b: &LinkStats) -> LinkStats {
        LinkStats {
            rx_packets: self.rx_packets.saturating_sub(b.rx_packets),
            rx_dropped: self.rx_dropped.saturating_sub(b.rx_dropped),
            tx_packets: self.tx_packets.saturating_sub(b.tx_packets),
            tx_dropped: self.tx_dropped.saturating_sub(b.tx_dropped),
        }
    }
}

// ---------------------------------------------------------------------------
// The traffic

/// One frame of an [`Arena`]: where it is and what to shift on replay.
#[derive(Debug, Clone, Copy)]
struct Slot {
    off: u32,
    len: u16,
    /// Offset of the TCP header, 0: not TCP.
    tcp: u16,
    /// Offset of the TCP timestamps option's TSval, 0: none.
    ts: u16,
}

/// Frames generated ahead of the run, replayed by one generator thread.
#[derive(Debug, Default)]
struct Arena {
    data: Vec<u8>,
    slots: Vec<Slot>,
}

/// Sequence numbers move by this much per pass over the arena (a new ISN
/// for every connection), TCP timestamps by `TS_STEP`.
const SEQ_STEP: u32 = 0x0100_0000;
const TS_STEP: u32 = 0x0001_0000;

impl Arena {
    fn push(&mut self, frame: &[u8]) {
        let (tcp, ts) = tcp_offsets(frame);
        self.slots.push(Slot {
            off: self.data.len() as u32,
            len: frame.len() as u16,
            tcp: tcp as u16,
            ts: ts as u16,
        });
        self.data.extend_from_slice(frame);
    }

    fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Copies frame `i` into `buf` as it goes out on pass `pass`; returns its length.
    fn write(&self, i: usize, pass: u32, buf: &mut [u8]) -> usize {
        let s = self.slots[i];
        let len = usize::from(s.len);
        let Some(dst) = buf.get_mut(..len) else {
            return 0;
        };
        dst.copy_from_slice(&self.data[s.off as usize..s.off as usize + len]);
        if pass > 0 && s.tcp != 0 {
            let t = usize::from(s.tcp);
            let shift = pass.wrapping_mul(SEQ_STEP);
            add_be32(dst, t + 4, shift);
            if dst[t + 13] & 0x10 != 0 {
                add_be32(dst, t + 8, shift);
            }
            if s.ts != 0 {
                let o = usize::from(s.ts);
                let tshift = pass.wrapping_mul(TS_STEP);
                for at in [o, o + 4] {
                    if dst[at..at + 4] != [0; 4] {
                        add_be32(dst, at, tshift);
                    }
                }
            }
        }
        len
    }
}

fn add_be32(b: &mut [u8], at: usize, v: u32) {
    let x = u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]).wrapping_add(v);
    b[at..at + 4].copy_from_slice(&x.to_be_bytes());
}

/// (TCP header offset, TSval offset) of an Ethernet frame, 0 where absent:
/// IPv4 (first fragments and unfragmented) and IPv6 without extension headers.
fn tcp_offsets(f: &[u8]) -> (usize, usize) {
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    let tcp = match u16::from_be_bytes([at(12), at(13)]) {
        0x0800 => {
            let ihl = usize::from(at(14) & 0x0f) * 4;
            let frag = u16::from_be_bytes([at(20), at(21)]) & 0x1fff;
            if at(23) != 6 || frag != 0 || ihl < 20 {
                return (0, 0);
            }
            14 + ihl
        }
        0x86dd if at(20) == 6 => 14 + 40,
        _ => return (0, 0),
    };
    if f.len() < tcp + 20 {
        return (0, 0);
    }
    let doff = usize::from(at(tcp + 12) >> 4) * 4;
    let end = (tcp + doff).min(f.len());
    let mut o = tcp + 20;
    while o < end {
        match at(o) {
            0 => break,
            1 => o += 1,
            8 if o + 10 <= end && at(o + 1) == 10 => return (tcp, o + 2),
            _ => {
                let l = usize::from(at(o + 1));
                if l < 2 {
                    break;
                }
                o += l;
            }
        }
    }
    (tcp, 0)
}

/// Fixed-size UDP frames, one per flow: 198.18.x.y:port -> 198.19.a.b:9.
pub(crate) fn udp_frame(flow: usize, size: usize, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00]);
    let ip_len = (size - 14) as u16;
    let src = [198, 18, (flow >> 16) as u8 & 0x7f, (flow >> 8) as u8];
    let dst = [198, 19, (flow >> 8) as u8 & 0x03, flow as u8];
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let mut sum: u32 = ip
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    out.extend_from_slice(&ip);
    let sport = 1024 + (flow % 60000) as u16;
    out.extend_from_slice(&sport.to_be_bytes());
    out.extend_from_slice(&9u16.to_be_bytes());
    out.extend_from_slice(&(ip_len - 20).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.resize(size, 0);
}

fn build_arenas(a: &LiveArgs) -> anyhow::Result<Vec<Arena>> {
    let q = a.queues as usize;
    let per_queue = a.arena.unwrap_or(262_144 / q).max(1024);
    let mut arenas = Vec::with_capacity(q);
    for w in 0..q {
        let flows = (a.flows / q + usize::from(w < a.flows % q)).max(1);
        let mut ar = Arena::default();
        if a.size == 0 {
            let mut g = Synthetic::new(SyntheticConfig {
                seed: a.seed.wrapping_add(w as u64),
                flows,
                mix: Mix::from(a.mix),
                space: (w % 14) as u16,
                owner: (q > 1).then_some((q as u32, w as u32)),
                ..SyntheticConfig::default()
            })?;
            let mut buf = vec![0u8; MAX_FRAME];
            ar.data.reserve(per_queue * 400);
            for _ in 0..per_queue {
                let (_, len) = g.write_next(&mut buf);
                ar.push(&buf[..len]);
            }
        } else {
            let mut buf = Vec::with_capacity(a.size);
            for i in 0..flows.min(per_queue).max(1) {
                // Flow numbers of queue w: w, w + q, w + 2q, ...
                udp_frame(w + i * q, a.size, &mut buf);
                ar.push(&buf);
            }
        }
        arenas.push(ar);
    }
    Ok(arenas)
}

// ---------------------------------------------------------------------------
// The generator

#[derive(Debug, Default, Clone, Serialize)]
struct TxResult {
    queue: u32,
    core: Option<usize>,
    submitted: u64,
    completed: u64,
    kicks: u64,
    kicks_busy: u64,
    kicks_again: u64,
    tx_invalid_descs: u64,
    seconds: f64,
    passes: u32,
}

#[derive(Debug, Default, Clone, Serialize)]
struct TxSetup {
    bind: String,
    zero_copy_error: Option<String>,
    huge_pages: bool,
}

/// One generator thread: binds queue `q` of the sending veth, says so on
/// `ready`, waits at `go`, then sends for `seconds` at `rate` (0: flat out).
#[expect(
    clippy::too_many_arguments,
    reason = "one thread's whole setup, called from one place"
)]
fn transmit(
    lab_ns: &str,
    iface: &str,
    q: u32,
    core: Option<usize>,
    arena: &Arena,
    rate: u64,
    seconds: f64,
    ready: &mpsc::Sender<anyhow::Result<TxSetup>>,
    go: &Barrier,
    abort: &AtomicBool,
    sent: &AtomicU64,
) -> anyhow::Result<TxResult> {
    let setup = (|| -> anyhow::Result<XskTx> {
        enter_netns(lab_ns).with_context(|| format!("cannot enter netns {lab_ns}"))?;
        pin(core);
        let cfg = XskTxConfig {
            frame_count: 4096,
            ring_size: 2048,
            ..XskTxConfig::default()
        };
        XskTx::bind(iface, q, &cfg).with_context(|| format!("AF_XDP tx on {iface} queue {q}"))
    })();
    let mut sock = match setup {
        Ok(s) => {
            let _ = ready.send(Ok(TxSetup {
                bind: s.bind_mode().to_string(),
                zero_copy_error: s.zero_copy_error().map(str::to_string),
                huge_pages: s.huge_pages(),
            }));
            s
        }
        Err(e) => {
            let _ = ready.send(Err(anyhow!("{e:#}")));
            go.wait();
            return Err(e);
        }
    };
    go.wait();
    if abort.load(Ordering::Relaxed) {
        return Ok(TxResult::default());
    }
    let n = arena.slots.len();
    let (mut i, mut pass) = (0usize, 0u32);
    let dur = Duration::from_secs_f64(seconds);
    let t0 = Instant::now();
    let mut submitted = 0u64;
    loop {
        let el = t0.elapsed();
        if el >= dur || abort.load(Ordering::Relaxed) {
            break;
        }
        let budget = if rate == 0 {
            64
        } else {
            let due = (el.as_secs_f64() * rate as f64) as u64;
            let b = due.saturating_sub(submitted).min(64);
            if b == 0 {
                let next = Duration::from_secs_f64((submitted + 1) as f64 / rate as f64);
                let wait = next.saturating_sub(el);
                if wait > Duration::from_micros(200) {
                    // Reclaim while waiting, then sleep most of the gap.
                    sock.poll_completions();
                    thread::sleep(wait - Duration::from_micros(100));
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
            b
        };
        let put = sock.send_batch(budget as usize, |buf| {
            let len = arena.write(i, pass, buf);
            i += 1;
            if i == n {
                i = 0;
                pass += 1;
            }
            len
        })?;
        submitted += put as u64;
        sent.store(sock.counters().completed, Ordering::Relaxed);
    }
    let seconds = t0.elapsed().as_secs_f64();
    sock.flush(Duration::from_secs(1))?;
    let c = sock.counters();
    sent.store(c.completed, Ordering::Relaxed);
    let (inval, _) = sock.kernel_stats().unwrap_or_default();
    Ok(TxResult {
        queue: q,
        core,
        submitted: c.submitted,
        completed: c.completed,
        kicks: c.kicks,
        kicks_busy: c.kicks_busy,
        kicks_again: c.kicks_again,
        tx_invalid_descs: inval,
        seconds,
        passes: pass,
    })
}

pub(crate) fn pin(core: Option<usize>) {
    if let Some(c) = core {
        core_affinity::set_for_current(core_affinity::CoreId { id: c });
    }
}

// ---------------------------------------------------------------------------
// The receivers

/// What one receiver got, with the counters it is judged by.
#[derive(Debug, Serialize)]
struct ModeResult {
    mode: Mode,
    receiver: String,
    /// Frames the generator put on the wire (completed by the kernel).
    offered_packets: u64,
    offered_bytes: u64,
    seconds: f64,
    offered_pps: f64,
    /// Frames the receiver got: delivered to the drop loop, analysed by
    /// `wirelens run` (`wirelens_packets_total`), captured by tcpdump.
    received_packets: u64,
    received_pps: f64,
    lost_packets: u64,
    loss_pct: f64,
    /// The veth's own counters over the run (sender tx, receiver rx).
    veth_tx: LinkStats,
    veth_rx: LinkStats,
    generator: Vec<TxResult>,
    /// Receiver-specific counters.
    counters: BTreeMap<String, u64>,
    /// `wirelens run`: where its workers ran and how they polled (its
    /// `placement:` and NAPI log lines).
    placement: Vec<String>,
}

struct DropRx {
    stop: Arc<AtomicBool>,
    per_queue: Arc<Vec<AtomicU64>>,
    handle: Option<thread::JoinHandle<anyhow::Result<BTreeMap<String, u64>>>>,
}

impl DropRx {
    /// Frames received so far.
    fn received_now(&self) -> Option<u64> {
        Some(
            self.per_queue
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .sum(),
        )
    }

    /// Attaches the XDP program to the receiving veth, binds one socket per
    /// queue and starts one pinned worker per queue; returns once they run.
    fn start(lab: &Lab, a: &LiveArgs, rx_cores: &[usize]) -> anyhow::Result<DropRx> {
        let stop = Arc::new(AtomicBool::new(false));
        let per_queue: Arc<Vec<AtomicU64>> =
            Arc::new((0..a.queues).map(|_| AtomicU64::new(0)).collect());
        let (ns, iface, queues, frames) =
            (lab.ns_rx.clone(), lab.if_rx.clone(), a.queues, a.frames);
        let rx_mode = match a.poll.as_str() {
            "busy" => RxMode::BusyPoll,
            "wait" => RxMode::Poll { timeout_ms: 100 },
            _ => RxMode::Poll { timeout_ms: 1 },
        };
        let cores = rx_cores.to_vec();
        let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<()>>();
        let (stop2, pq) = (Arc::clone(&stop), Arc::clone(&per_queue));
        let handle = thread::spawn(move || -> anyhow::Result<BTreeMap<String, u64>> {
            let setup = (|| -> anyhow::Result<(XdpProgram, Vec<XskSocket>)> {
                enter_netns(&ns).with_context(|| format!("cannot enter netns {ns}"))?;
                let mut prog = XdpProgram::load().context("loading the XDP program")?;
                prog.attach(&iface, ModePreference::Auto)
                    .with_context(|| format!("attaching XDP to {iface}"))?;
                let cfg = XskConfig {
                    rx_mode,
                    frame_count: frames,
                    ..XskConfig::default()
                };
                let socks = (0..queues)
                    .map(|q| XskSocket::bind(&prog, q, &cfg))
                    .collect::<Result<Vec<_>, _>>()
                    .context("binding AF_XDP sockets")?;
                Ok((prog, socks))
            })();
            let (mut prog, mut socks) = match setup {
                Ok(x) => x,
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow!("{e:#}")));
                    return Err(e);
                }
            };
            let before = prog.counters().unwrap_or_default();
            let mode = prog
                .attachment()
                .map(|x| x.mode.to_string())
                .unwrap_or_default();
            let bind = socks[0].bind_mode().to_string();
            let res = thread::scope(|s| {
                let mut hs = Vec::new();
                for (q, sock) in socks.iter_mut().enumerate() {
                    let (stop, pq) = (&stop2, &pq);
                    let core = (!cores.is_empty()).then(|| cores[q % cores.len()]);
                    hs.push(s.spawn(move || -> io::Result<()> {
                        pin(core);
                        let mut n = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            let got = sock.recv_batch(|_, _| {})?;
                            if got > 0 {
                                n += got as u64;
                                pq[q].store(n, Ordering::Relaxed);
                            }
                        }
                        Ok(())
                    }));
                }
                let _ = ready_tx.send(Ok(()));
                hs.into_iter()
                    .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                    .collect::<io::Result<Vec<()>>>()
            });
            res.context("AF_XDP receive")?;
            let c = prog.counters().unwrap_or_default().since(&before);
            let mut m = BTreeMap::new();
            m.insert("xdp_seen".into(), c.seen);
            m.insert("xdp_redirected".into(), c.redirected);
            m.insert("xdp_passed".into(), c.passed());
            let (mut full, mut dropped, mut empty) = (0, 0, 0);
            for s in &socks {
                let st = s.stats().unwrap_or_default();
                full += st.rx_ring_full;
                dropped += st.rx_dropped + st.rx_invalid_descs;
                empty += st.rx_fill_ring_empty_descs;
            }
            m.insert("xsk_rx_ring_full".into(), full);
            m.insert("xsk_rx_dropped".into(), dropped);
            m.insert("xsk_fill_ring_empty".into(), empty);
            eprintln!("wirelens bench live: drop-only receiver: XDP {mode}, AF_XDP {bind}");
            drop(socks);
            let _ = prog.detach();
            Ok(m)
        });
        match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(())) => Ok(DropRx {
                stop,
                per_queue,
                handle: Some(handle),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                stop.store(true, Ordering::Relaxed);
                match handle.join() {
                    Ok(Err(e)) => Err(e),
                    _ => bail!("the drop-only receiver did not start within 30 s"),
                }
            }
        }
    }

    fn finish(mut self) -> anyhow::Result<(u64, BTreeMap<String, u64>)> {
        // Let the last frames arrive: until the count stands still for 100 ms.
        let mut last = self.received_now().unwrap_or(0);
        let end = Instant::now() + Duration::from_secs(2);
        while Instant::now() < end {
            thread::sleep(Duration::from_millis(100));
            let now = self.received_now().unwrap_or(0);
            if now == last {
                break;
            }
            last = now;
        }
        self.stop.store(true, Ordering::Relaxed);
        let m = match self.handle.take().map(thread::JoinHandle::join) {
            Some(Ok(r)) => r?,
            Some(Err(p)) => std::panic::resume_unwind(p),
            None => BTreeMap::new(),
        };
        Ok((self.received_now().unwrap_or(0), m))
    }
}

impl Drop for DropRx {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

const HTTP_PORT: u16 = 9640;

/// Sums of the Prometheus samples of each metric name in `text`.
fn metric_sums(text: &str) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let Some((name_labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = name_labels.split('{').next().unwrap_or(name_labels);
        if let Ok(v) = value.parse::<f64>() {
            if v.is_finite() {
                *m.entry(name.to_string()).or_insert(0.0) += v;
            }
        }
    }
    m
}

struct RunRx {
    child: usize,
}

impl RunRx {
    fn start(lab: &mut Lab, a: &LiveArgs, rx_cores: &[usize]) -> anyhow::Result<RunRx> {
        let exe = std::env::current_exe().context("cannot find the wirelens binary")?;
        let exe = exe.to_string_lossy().into_owned();
        let listen = format!("127.0.0.1:{HTTP_PORT}");
        let queues = (0..a.queues)
            .map(|q| q.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let cores = rx_cores
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let iface = lab.if_rx.clone();
        let frames = a.frames.to_string();
        let mut args = vec![
            exe.as_str(),
            "run",
            "--iface",
            &iface,
            "--listen",
            &listen,
            "--queues",
            &queues,
            "--poll",
            &a.poll,
            "--tcp-idle",
            "3600",
            "--udp-idle",
            "300",
            "--frames",
            &frames,
        ];
        if !cores.is_empty() {
            args.extend_from_slice(&["--cores", &cores]);
        }
        let child = lab.spawn_rx("run", &args)?;
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some((200, _)) = lab.http(HTTP_PORT, "/healthz") {
                return Ok(RunRx { child });
            }
            if let Ok(Some(st)) = lab.children[child].try_wait() {
                bail!(
                    "wirelens run exited ({st}) before it was healthy:\n{}",
                    lab.log("run").trim()
                );
            }
            if Instant::now() >= end {
                bail!(
                    "wirelens run not healthy after 60 s:\n{}",
                    lab.log("run").trim()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn metrics(lab: &Lab) -> Option<BTreeMap<String, f64>> {
        match lab.http(HTTP_PORT, "/metrics") {
            Some((200, body)) => Some(metric_sums(&body)),
            _ => None,
        }
    }

    fn finish(
        self,
        lab: &mut Lab,
        stop: &AtomicBool,
    ) -> anyhow::Result<(u64, BTreeMap<String, u64>)> {
        // Workers export about once a second: wait until the analysed count
        // stood still over 1.5 s (at most 10 s).
        let get = |m: &BTreeMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0) as u64;
        let mut last = RunRx::metrics(lab).context("wirelens run: no /metrics")?;
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end && !stop.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(1500));
            let now = RunRx::metrics(lab).context("wirelens run: no /metrics")?;
            let same = get(&now, "wirelens_packets_total") == get(&last, "wirelens_packets_total")
                && get(&now, "wirelens_queue_frames_total")
                    == get(&last, "wirelens_queue_frames_total");
            last = now;
            if same {
                break;
            }
        }
        let code = lab.stop_child(self.child, "TERM", Duration::from_secs(15));
        if code != Some(0) {
            eprintln!(
                "wirelens bench live: wirelens run exited with {code:?}:\n{}",
                lab.log("run").trim()
            );
        }
        let mut m = BTreeMap::new();
        for (k, name) in [
            ("queue_frames", "wirelens_queue_frames_total"),
            ("packets_analysed", "wirelens_packets_total"),
            ("parse_errors", "wirelens_queue_parse_errors_total"),
            ("handoff_ring_full", "wirelens_handoff_ring_full_total"),
            ("xdp_seen", "wirelens_xdp_seen_total"),
            ("xdp_redirected", "wirelens_xdp_redirected_total"),
            ("xdp_passed", "wirelens_xdp_passed_total"),
            ("xsk_rx_ring_full", "wirelens_xsk_rx_ring_full_total"),
            ("xsk_rx_dropped", "wirelens_xsk_rx_dropped_total"),
            (
                "xsk_fill_ring_empty",
                "wirelens_xsk_rx_fill_ring_empty_descs_total",
            ),
            ("flows", "wirelens_flows_total"),
            ("tcp_retransmits", "wirelens_tcp_retransmits_total"),
        ] {
            if let Some(v) = last.get(name) {
                m.insert(k.to_string(), *v as u64);
            }
        }
        Ok((get(&last, "wirelens_packets_total"), m))
    }
}

struct TcpdumpRx {
    child: usize,
}

/// tcpdump's exit statistics: (captured, received by filter, dropped by kernel).
fn tcpdump_stats(log: &str) -> Option<(u64, u64, u64)> {
    let find = |what: &str| {
        log.lines()
            .find(|l| l.trim_end().ends_with(what))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    Some((
        find("packets captured")?,
        find("packets received by filter")?,
        find("packets dropped by kernel")?,
    ))
}

impl TcpdumpRx {
    fn start(lab: &mut Lab, a: &LiveArgs, rx_cores: &[usize]) -> anyhow::Result<TcpdumpRx> {
        let iface = lab.if_rx.clone();
        let buf = a.tcpdump_buffer.to_string();
        let cores = rx_cores
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut args = Vec::new();
        if !cores.is_empty() {
            args.extend_from_slice(&["taskset", "-c", cores.as_str()]);
        }
        args.extend_from_slice(&["tcpdump", "-i", &iface, "-n", "-B", &buf, "-w", "/dev/null"]);
        let child = lab.spawn_rx("tcpdump", &args)?;
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if lab.log("tcpdump").contains("listening on") {
                return Ok(TcpdumpRx { child });
            }
            if let Ok(Some(st)) = lab.children[child].try_wait() {
                bail!(
                    "tcpdump exited ({st}) before it listened:\n{}",
                    lab.log("tcpdump").trim()
                );
            }
            if Instant::now() >= end {
                bail!("tcpdump not listening after 20 s:\n{}", lab.log("tcpdump"));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn finish(self, lab: &mut Lab) -> anyhow::Result<(u64, BTreeMap<String, u64>)> {
        // TPACKET_V3 hands over a block when it is full or after its
        // timeout (tcpdump: 1 s): wait for the last one.
        thread::sleep(Duration::from_millis(1500));
        lab.stop_child(self.child, "INT", Duration::from_secs(10));
        let log = lab.log("tcpdump");
        let (captured, by_filter, dropped) = tcpdump_stats(&log)
            .ok_or_else(|| anyhow!("no statistics in tcpdump's output:\n{}", log.trim()))?;
        let mut m = BTreeMap::new();
        m.insert("captured".into(), captured);
        m.insert("received_by_filter".into(), by_filter);
        m.insert("dropped_by_kernel".into(), dropped);
        Ok((captured, m))
    }
}

// ---------------------------------------------------------------------------
// The run

#[derive(Debug, Serialize)]
struct Report {
    bench: &'static str,
    machine: Machine,
    lab: LabInfo,
    traffic: TrafficInfo,
    modes: Vec<ModeResult>,
    ratios: Ratios,
}

#[derive(Debug, Serialize)]
struct Machine {
    cpu: String,
    cores: usize,
    kernel: String,
}

#[derive(Debug, Serialize)]
struct LabInfo {
    namespaces: [String; 2],
    links: [String; 2],
    queues: u32,
    generator: String,
    generator_bind: String,
    generator_zero_copy_error: Option<String>,
    generator_huge_pages: bool,
    tx_cores: Vec<usize>,
    rx_cores: Vec<usize>,
    poll: String,
    umem_frames: u32,
    tcpdump_buffer_kib: u32,
    /// Where the receive side's kernel work runs.
    receive_steering: String,
}

#[derive(Debug, Serialize)]
struct TrafficInfo {
    kind: &'static str,
    flows: usize,
    size: usize,
    rate_pps: u64,
    seconds_per_mode: f64,
    arena_frames_per_queue: usize,
    arena_bytes: usize,
    mean_frame_bytes: f64,
}

#[derive(Debug, Serialize)]
struct Ratios {
    /// `wirelens run` received pps / drop-only received pps.
    run_over_drop: Option<f64>,
    /// `wirelens run` received pps / tcpdump received pps.
    run_over_tcpdump: Option<f64>,
    target_run_over_drop: f64,
    target_run_over_tcpdump: f64,
    run_over_drop_met: Option<bool>,
    run_over_tcpdump_met: Option<bool>,
}

fn bench_live(a: &LiveArgs, stop: &Arc<AtomicBool>) -> anyhow::Result<()> {
    anyhow::ensure!(a.seconds > 0.0, "--seconds must be positive");
    anyhow::ensure!(a.flows > 0, "--flows must be at least 1");
    anyhow::ensure!(
        (1..=64).contains(&a.queues),
        "--queues must be between 1 and 64"
    );
    anyhow::ensure!(
        a.size == 0 || (60..=1514).contains(&a.size),
        "--size must be 0 (synthetic mix) or 60 to 1514 bytes"
    );
    anyhow::ensure!(!a.modes.is_empty(), "--modes is empty");
    let cores: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    let tx_cores = a
        .tx_cores
        .clone()
        .unwrap_or_else(|| cores.first().copied().into_iter().collect());
    let rx_cores = a.rx_cores.clone().unwrap_or_else(|| {
        if cores.len() > 1 {
            cores
                .iter()
                .copied()
                .filter(|c| !tx_cores.contains(c))
                .collect()
        } else {
            cores.clone()
        }
    });

    eprintln!("wirelens bench live: generating the traffic ...");
    let arenas = build_arenas(a)?;
    let frames: usize = arenas.iter().map(|x| x.slots.len()).sum();
    let bytes: usize = arenas.iter().map(Arena::bytes).sum();
    let mean = bytes as f64 / frames.max(1) as f64;

    let mut lab = Lab::create(a.queues).context("building the namespace lab (are you root?)")?;
    let rps = lab.steer_rps(&rx_cores);
    if let Err(p) = &rps {
        eprintln!("wirelens bench live: tcpdump's receive work stays on the sender's core: {p}");
    }
    eprintln!(
        "wirelens bench live: lab {}/{} -> {}/{}, {} queue(s), tx cores {:?}, rx cores {:?}",
        lab.ns_tx, lab.if_tx, lab.ns_rx, lab.if_rx, a.queues, tx_cores, rx_cores
    );
    let progress = !a.no_progress && io::stderr().is_terminal();
    let mut results = Vec::new();
    let mut setup = TxSetup::default();
    for &mode in &a.modes {
        if stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        let (r, s) = measure(
            &mut lab, a, mode, &arenas, &tx_cores, &rx_cores, stop, progress,
        )?;
        setup = s;
        eprintln!(
            "wirelens bench live: {:<12} offered {:.3} Mpps, received {:.3} Mpps, loss {:.2}%",
            mode.label(),
            r.offered_pps / 1e6,
            r.received_pps / 1e6,
            r.loss_pct
        );
        results.push(r);
    }
    let pps = |m: Mode| results.iter().find(|r| r.mode == m).map(|r| r.received_pps);
    let ratio = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) if y > 0.0 => Some(x / y),
        _ => None,
    };
    let run_over_drop = ratio(pps(Mode::Run), pps(Mode::Drop));
    let run_over_tcpdump = ratio(pps(Mode::Run), pps(Mode::Tcpdump));
    let report = Report {
        bench: "live",
        machine: Machine {
            cpu: cpu_model(),
            cores: cores.len(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
        },
        lab: LabInfo {
            namespaces: [lab.ns_tx.clone(), lab.ns_rx.clone()],
            links: [lab.if_tx.clone(), lab.if_rx.clone()],
            queues: a.queues,
            generator: "AF_XDP tx (XskTx), one socket per queue".into(),
            generator_bind: setup.bind,
            generator_zero_copy_error: setup.zero_copy_error,
            generator_huge_pages: setup.huge_pages,
            tx_cores,
            rx_cores,
            poll: a.poll.clone(),
            umem_frames: a.frames,
            tcpdump_buffer_kib: a.tcpdump_buffer,
            receive_steering: format!(
                "XDP path: threaded NAPI pinned to the rx cores ({}); AF_PACKET path: {}",
                napi_note(&results),
                match &rps {
                    Ok(()) => "RPS to the rx cores".to_string(),
                    Err(e) => format!("on the sender's core ({e})"),
                }
            ),
        },
        traffic: TrafficInfo {
            kind: if a.size == 0 {
                "synthetic"
            } else {
                "udp-fixed"
            },
            flows: a.flows,
            size: a.size,
            rate_pps: a.rate,
            seconds_per_mode: a.seconds,
            arena_frames_per_queue: arenas.first().map_or(0, |x| x.slots.len()),
            arena_bytes: bytes,
            mean_frame_bytes: mean,
        },
        modes: results,
        ratios: Ratios {
            run_over_drop,
            run_over_tcpdump,
            target_run_over_drop: 0.9,
            target_run_over_tcpdump: 3.0,
            run_over_drop_met: run_over_drop.map(|r| r >= 0.9),
            run_over_tcpdump_met: run_over_tcpdump.map(|r| r >= 3.0),
        },
    };
    // Tear the lab down before printing: the report says it is gone.
    drop(lab);
    let mut out = io::stdout().lock();
    match a.format {
        Format::Table => print_table(&mut out, &report)?,
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &report)?;
            writeln!(out)?;
        }
        Format::Ndjson => {
            serde_json::to_writer(&mut out, &report)?;
            writeln!(out)?;
        }
    }
    Ok(())
}

/// One receiver: start it, run the generator, collect both sides' counters.
#[expect(
    clippy::too_many_arguments,
    reason = "the run's settings, called from one place"
)]
fn measure(
    lab: &mut Lab,
    a: &LiveArgs,
    mode: Mode,
    arenas: &[Arena],
    tx_cores: &[usize],
    rx_cores: &[usize],
    stop: &Arc<AtomicBool>,
    progress: bool,
) -> anyhow::Result<(ModeResult, TxSetup)> {
    enum Rx {
        Drop(DropRx),
        Run(RunRx),
        Tcpdump(TcpdumpRx),
    }
    let rx = match mode {
        Mode::Drop => Rx::Drop(DropRx::start(lab, a, rx_cores)?),
        Mode::Run => Rx::Run(RunRx::start(lab, a, rx_cores)?),
        Mode::Tcpdump => Rx::Tcpdump(TcpdumpRx::start(lab, a, rx_cores)?),
    };
    let napi_pinned = match mode {
        Mode::Drop | Mode::Run => match lab.steer_napi(rx_cores) {
            Ok(n) => Some(n),
            Err(e) => {
                eprintln!(
                    "wirelens bench live: {}: XDP receive work stays on the sender's core: {e}",
                    mode.label()
                );
                Some(0)
            }
        },
        Mode::Tcpdump => None,
    };
    let (tx0, rx0) = lab.stats();
    let q = a.queues as usize;
    let rate_q = a.rate.div_ceil(q as u64);
    let go = Barrier::new(q + 1);
    let abort = AtomicBool::new(false);
    let sent: Vec<AtomicU64> = (0..q).map(|_| AtomicU64::new(0)).collect();
    let (ready_tx, ready_rx) = mpsc::channel();
    let bar = progress.then(|| {
        let pb = indicatif::ProgressBar::new((a.seconds * 1000.0) as u64);
        pb.set_style(
            indicatif::ProgressStyle::with_template("{msg:60} [{bar:25}] {pos}/{len} ms")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        pb.set_message(format!("{}: starting", mode.label()));
        pb
    });
    let (ns_tx, if_tx) = (lab.ns_tx.clone(), lab.if_tx.clone());
    let gen = thread::scope(|s| -> anyhow::Result<(Vec<TxResult>, TxSetup)> {
        let mut hs = Vec::new();
        for (w, arena) in arenas.iter().enumerate() {
            let core = (!tx_cores.is_empty()).then(|| tx_cores[w % tx_cores.len()]);
            let (ready, go, abort, sent, ns_tx, if_tx) =
                (ready_tx.clone(), &go, &abort, &sent[w], &ns_tx, &if_tx);
            hs.push(s.spawn(move || {
                transmit(
                    ns_tx, if_tx, w as u32, core, arena, rate_q, a.seconds, &ready, go, abort, sent,
                )
            }));
        }
        let mut setup = TxSetup::default();
        let mut err = None;
        for _ in 0..q {
            match ready_rx.recv() {
                Ok(Ok(st)) => setup = st,
                Ok(Err(e)) => err = Some(e),
                Err(_) => err = Some(anyhow!("a generator thread died")),
            }
        }
        if err.is_some() {
            abort.store(true, Ordering::Relaxed);
        }
        go.wait();
        let t0 = Instant::now();
        let rx_now = |rx: &Rx| match rx {
            Rx::Drop(d) => d.received_now(),
            _ => None,
        };
        while !hs.iter().all(|h| h.is_finished()) {
            if stop.load(Ordering::Relaxed) {
                abort.store(true, Ordering::Relaxed);
            }
            thread::sleep(Duration::from_millis(200));
            if let Some(pb) = &bar {
                let el = t0.elapsed().as_secs_f64().max(1e-3);
                let off: u64 = sent.iter().map(|c| c.load(Ordering::Relaxed)).sum();
                let got = rx_now(&rx)
                    .map(|n| format!(", received {:.3} Mpps", n as f64 / el / 1e6))
                    .unwrap_or_default();
                pb.set_position((el * 1000.0) as u64);
                pb.set_message(format!(
                    "{}: offered {:.3} Mpps{got}",
                    mode.label(),
                    off as f64 / el / 1e6
                ));
            }
        }
        let mut out = Vec::new();
        for h in hs {
            match h.join() {
                Ok(Ok(r)) => out.push(r),
                Ok(Err(e)) => {
                    err.get_or_insert(e);
                }
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        match err {
            Some(e) => Err(e),
            None => Ok((out, setup)),
        }
    });
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    if stop.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    let (generator, setup) = gen?;
    let (received, mut counters) = match rx {
        Rx::Drop(d) => d.finish()?,
        Rx::Run(r) => r.finish(lab, stop)?,
        Rx::Tcpdump(t) => t.finish(lab)?,
    };
    if let Some(n) = napi_pinned {
        counters.insert("napi_threads_pinned".into(), n);
    }
    let (tx1, rx1) = lab.stats();
    let offered: u64 = generator.iter().map(|g| g.completed).sum();
    let seconds = generator
        .iter()
        .map(|g| g.seconds)
        .fold(0.0f64, f64::max)
        .max(1e-9);
    // Bytes of what went out: whole passes over each arena plus the part pass.
    let offered_bytes = generator
        .iter()
        .zip(arenas)
        .map(|(g, ar)| {
            let n = ar.slots.len() as u64;
            let full = g.completed / n;
            let part = (g.completed % n) as usize;
            full * ar.bytes() as u64
                + ar.slots[..part]
                    .iter()
                    .map(|s| u64::from(s.len))
                    .sum::<u64>()
        })
        .sum();
    let lost = offered.saturating_sub(received);
    let placement = match mode {
        Mode::Run => lab
            .log("run")
            .lines()
            .filter(|l| l.contains("placement:") || l.contains("napi_defer_hard_irqs"))
            .map(|l| l.trim_start_matches("wirelens: ").to_string())
            .collect(),
        _ => Vec::new(),
    };
    let receiver = match mode {
        Mode::Drop => "XDP + AF_XDP, frames returned unread".to_string(),
        Mode::Run => format!("wirelens run --poll {} (full analysis)", a.poll),
        Mode::Tcpdump => format!("tcpdump -B {} -w /dev/null", a.tcpdump_buffer),
    };
    Ok((
        ModeResult {
            mode,
            receiver,
            offered_packets: offered,
            offered_bytes,
            seconds,
            offered_pps: offered as f64 / seconds,
            received_packets: received,
            received_pps: received as f64 / seconds,
            lost_packets: lost,
            loss_pct: 100.0 * lost as f64 / offered.max(1) as f64,
            veth_tx: tx1.since(&tx0),
            veth_rx: rx1.since(&rx0),
            generator,
            counters,
            placement,
        },
        setup,
    ))
}

/// How many NAPI threads the XDP receivers got pinned, for the report.
fn napi_note(results: &[ModeResult]) -> String {
    let pinned: Vec<String> = results
        .iter()
        .filter_map(|r| {
            r.counters
                .get("napi_threads_pinned")
                .map(|n| format!("{}: {n} thread(s)", r.mode.label()))
        })
        .collect();
    if pinned.is_empty() {
        "no XDP receiver ran".into()
    } else {
        pinned.join(", ")
    }
}

fn print_table(out: &mut impl Write, r: &Report) -> io::Result<()> {
    let t = &r.traffic;
    let rate = if t.rate_pps == 0 {
        "as fast as possible".to_string()
    } else {
        format!("{} pps", t.rate_pps)
    };
    let kind = if t.kind == "synthetic" {
        format!(
            "synthetic TCP/UDP mix, mean frame {:.0} B",
            t.mean_frame_bytes
        )
    } else {
        format!("UDP frames of {} B", t.size)
    };
    writeln!(
        out,
        "wirelens bench live: {} s per receiver, offered {rate}, {} flows, {kind}, {} queue(s)",
        t.seconds_per_mode, t.flows, r.lab.queues
    )?;
    writeln!(
        out,
        "machine: {} cores, {}, kernel {}",
        r.machine.cores, r.machine.cpu, r.machine.kernel
    )?;
    let zc = r
        .lab
        .generator_zero_copy_error
        .as_deref()
        .map(|e| format!(" (zero-copy refused: {e})"))
        .unwrap_or_default();
    writeln!(
        out,
        "lab: {} -> {} (veth), generator AF_XDP {}{zc}, tx cores {:?}, rx cores {:?}",
        r.lab.links[0], r.lab.links[1], r.lab.generator_bind, r.lab.tx_cores, r.lab.rx_cores
    )?;
    writeln!(out, "receive side: {}", r.lab.receive_steering)?;
    writeln!(out)?;
    writeln!(
        out,
        "{:<13} {:<45} {:>12} {:>13} {:>11} {:>13} {:>8}",
        "receiver", "what", "offered Mpps", "received Mpps", "offered", "received", "loss"
    )?;
    for m in &r.modes {
        writeln!(
            out,
            "{:<13} {:<45} {:>12.3} {:>13.3} {:>11} {:>13} {:>7.2}%",
            m.mode.label(),
            m.receiver,
            m.offered_pps / 1e6,
            m.received_pps / 1e6,
            m.offered_packets,
            m.received_packets,
            m.loss_pct
        )?;
    }
    for m in &r.modes {
        for p in &m.placement {
            writeln!(out, "{}: {p}", m.mode.label())?;
        }
    }
    writeln!(out)?;
    let line = |name: &str, v: Option<f64>, target: f64, met: Option<bool>| match (v, met) {
        (Some(v), Some(met)) => format!(
            "{name}: {v:.2}x (target >= {target}x: {})",
            if met { "met" } else { "MISSED" }
        ),
        _ => format!("{name}: not measured"),
    };
    let x = &r.ratios;
    writeln!(
        out,
        "{}",
        line(
            "full analysis / drop-only",
            x.run_over_drop,
            x.target_run_over_drop,
            x.run_over_drop_met
        )
    )?;
    writeln!(
        out,
        "{}",
        line(
            "full analysis / tcpdump",
            x.run_over_tcpdump,
            x.target_run_over_tcpdump,
            x.run_over_tcpdump_met
        )
    )?;
    Ok(())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic TCP frame with timestamps: the offsets are found, and a
    /// replay pass shifts seq, ack and both timestamps, nothing else.
    #[test]
    fn replay_shifts_tcp_numbers() {
        let mut g = Synthetic::new(SyntheticConfig {
            flows: 4,
            mix: Mix::Tcp,
            ipv6: 0.0,
            ..SyntheticConfig::default()
        })
        .unwrap();
        let mut buf = vec![0u8; MAX_FRAME];
        let mut ar = Arena::default();
        for _ in 0..40 {
            let (_, len) = g.write_next(&mut buf);
            ar.push(&buf[..len]);
        }
        // Frame 5 onwards: past the SYN ramp, with ACK set.
        let i = (4..40)
            .find(|&i| ar.slots[i].tcp != 0 && ar.slots[i].ts != 0)
            .expect("a TCP frame with timestamps");
        let s = ar.slots[i];
        assert_eq!(s.tcp, 14 + 20);
        let mut a0 = vec![0u8; MAX_FRAME];
        let mut a1 = vec![0u8; MAX_FRAME];
        let l0 = ar.write(i, 0, &mut a0);
        let l1 = ar.write(i, 3, &mut a1);
        assert_eq!(l0, l1);
        let be = |b: &[u8], at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let t = usize::from(s.tcp);
        let ts = usize::from(s.ts);
        assert_eq!(be(&a1, t + 4), be(&a0, t + 4).wrapping_add(3 * SEQ_STEP));
        assert_eq!(a1[t + 13] & 0x10, 0x10);
        assert_eq!(be(&a1, t + 8), be(&a0, t + 8).wrapping_add(3 * SEQ_STEP));
        assert_eq!(be(&a1, ts), be(&a0, ts).wrapping_add(3 * TS_STEP));
        let differs: Vec<usize> = (0..l0).filter(|&k| a0[k] != a1[k]).collect();
        assert!(differs
            .iter()
            .all(|&k| (t + 4..t + 12).contains(&k) || (ts..ts + 8).contains(&k)));
        // Pass 0 is the frame as generated.
        assert_eq!(&a0[..l0], &ar.data[s.off as usize..s.off as usize + l0]);
    }

    #[test]
    fn fixed_udp_frames_are_valid() {
        let mut f = Vec::new();
        udp_frame(70_000, 64, &mut f);
        assert_eq!(f.len(), 64);
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 50);
        assert_eq!(u16::from_be_bytes([f[38], f[39]]), 30);
        // The IPv4 header checksum verifies.
        let mut sum: u32 = f[14..34]
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
        assert_eq!(tcp_offsets(&f), (0, 0));
    }

    #[test]
    fn parses_metrics_and_tcpdump_stats() {
        let m = metric_sums(
            "# HELP x\nwirelens_packets_total 12\nwirelens_queue_frames_total{queue=\"0\"} 5\nwirelens_queue_frames_total{queue=\"1\"} 7\nwirelens_export_age_seconds{queue=\"0\"} NaN\n",
        );
        assert_eq!(m["wirelens_packets_total"], 12.0);
        assert_eq!(m["wirelens_queue_frames_total"], 12.0);
        assert!(!m.contains_key("wirelens_export_age_seconds"));
        let log = "tcpdump: listening on wl1b, link-type EN10MB (Ethernet), snapshot length 262144 bytes\n1000 packets captured\n1200 packets received by filter\n150 packets dropped by kernel\n";
        assert_eq!(tcpdump_stats(log), Some((1000, 1200, 150)));
        assert_eq!(tcpdump_stats("tcpdump: error"), None);
    }
}
