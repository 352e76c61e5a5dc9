//! Root-only lab tests of the AF_XDP path (feature `xdp`).
//!
//! Each test builds its own pair of network namespaces joined by a veth pair
//! with 2 rx/tx queues (`wlx<pid><t>na/nb`, links `wlx<pid><t>a/b`,
//! addresses from 198.18.0.0/15, IPv6 off, static neighbours), attaches on
//! the `a` end inside its namespace and sends bounded UDP traffic from the
//! `b` end. A Drop guard deletes both namespaces (and so the veth and any
//! XDP program on it), also when a test fails.
//!
//! Run: `cargo test -p wirelens-dataplane --features xdp --test xdp_lab -- --test-threads=1`
//! (as root). Not root: every test skips with a message on stderr.
#![cfg(feature = "xdp")]

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wirelens_dataplane::xdp::{
    enter_netns, iface_carries_host_traffic, rx_queue_count, BindMode, Filter, ModePreference,
    RxMode, XdpAction, XdpCounters, XdpProgram, XskConfig, XskSocket, XskStats, XskTx, XskTxConfig,
};

const MAC_A: &str = "02:00:c6:12:00:01";
const MAC_B: &str = "02:00:c6:12:00:02";
const A0: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const B0: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const A1: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const B1: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
const MAGIC: &[u8] = b"wirelens-lab";
const PAYLOAD: usize = 100;
/// Ethernet + IPv4 + UDP + payload.
const FRAME_LEN: usize = 14 + 20 + 8 + PAYLOAD;
const CHILD_ENV: &str = "WIRELENS_XDP_LAB_CHILD";

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Skips (returns) when not root; fails instead under
/// `WIRELENS_REQUIRE_ROOT_TESTS=1` (CI). Writes to the stderr handle directly,
/// which libtest does not capture, so the skip shows without `--nocapture`.
macro_rules! require_root {
    ($name:expr) => {
        if !is_root() {
            use std::io::Write as _;
            assert!(
                std::env::var_os("WIRELENS_REQUIRE_ROOT_TESTS").is_none_or(|v| v != "1"),
                "xdp_lab::{} needs root and WIRELENS_REQUIRE_ROOT_TESTS=1 forbids skipping it",
                $name
            );
            let _ = writeln!(
                std::io::stderr(),
                "*** SKIPPED xdp_lab::{}: needs root (CAP_NET_ADMIN, CAP_BPF, CAP_SYS_ADMIN \
                 for namespaces) ***",
                $name
            );
            return;
        }
    };
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sh_out(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two namespaces and a veth pair between them; deleted on drop.
struct Lab {
    ns_a: String,
    ns_b: String,
    if_a: String,
    if_b: String,
}

impl Lab {
    fn new(tag: char) -> Lab {
        let base = format!("wlx{}{tag}", std::process::id());
        let lab = Lab {
            ns_a: format!("{base}na"),
            ns_b: format!("{base}nb"),
            if_a: format!("{base}a"),
            if_b: format!("{base}b"),
        };
        // Leftovers of a crashed earlier run with the same pid.
        let _ = Command::new("ip")
            .args(["netns", "del", &lab.ns_a])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &lab.ns_b])
            .output();
        for ns in [&lab.ns_a, &lab.ns_b] {
            sh(&["ip", "netns", "add", ns]);
            sh(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        sh(&[
            "ip",
            "link",
            "add",
            &lab.if_a,
            "netns",
            &lab.ns_a,
            "numrxqueues",
            "2",
            "numtxqueues",
            "2",
            "address",
            MAC_A,
            "type",
            "veth",
            "peer",
            "name",
            &lab.if_b,
            "netns",
            &lab.ns_b,
            "numrxqueues",
            "2",
            "numtxqueues",
            "2",
            "address",
            MAC_B,
        ]);
        for (ns, dev, own, peer_mac, peer) in [
            (&lab.ns_a, &lab.if_a, [A0, A1], MAC_B, [B0, B1]),
            (&lab.ns_b, &lab.if_b, [B0, B1], MAC_A, [A0, A1]),
        ] {
            for ip in own {
                sh(&[
                    "ip",
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{ip}/24"),
                    "dev",
                    dev,
                ]);
            }
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
            for ip in peer {
                sh(&[
                    "ip",
                    "-n",
                    ns,
                    "neigh",
                    "replace",
                    &ip.to_string(),
                    "lladdr",
                    peer_mac,
                    "dev",
                    dev,
                    "nud",
                    "permanent",
                ]);
            }
        }
        lab
    }

    /// Whether `ip link` shows an XDP program on the `a` end.
    fn xdp_on_a(&self) -> bool {
        sh_out(&["ip", "-n", &self.ns_a, "link", "show", "dev", &self.if_a]).contains("xdp")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.ns_a, &self.ns_b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Runs `f` on a fresh thread inside network namespace `ns`.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_string();
    thread::spawn(move || {
        enter_netns(&ns).unwrap_or_else(|e| panic!("entering netns {ns}: {e}"));
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Sends `n` UDP datagrams of PAYLOAD bytes (MAGIC first) from `src` to
/// `dst` inside `ns`, over `flows` sockets (source ports), paced.
fn send_udp(ns: &str, src: Ipv4Addr, dst: SocketAddrV4, n: usize, flows: usize) {
    in_ns(ns, move || {
        let socks: Vec<UdpSocket> = (0..flows)
            .map(|_| UdpSocket::bind((src, 0)).expect("bind sender"))
            .collect();
        let mut payload = vec![0u8; PAYLOAD];
        payload[..MAGIC.len()].copy_from_slice(MAGIC);
        for i in 0..n {
            payload[MAGIC.len()..MAGIC.len() + 8].copy_from_slice(&(i as u64).to_be_bytes());
            socks[i % flows].send_to(&payload, dst).expect("send_to");
            if i % 32 == 31 {
                thread::sleep(Duration::from_micros(300));
            }
        }
    });
}

/// Whether `frame` is one of our UDP datagrams to `port`.
fn is_lab_udp(frame: &[u8], port: u16) -> bool {
    frame.len() >= 42 + MAGIC.len()
        && frame[12..14] == [0x08, 0x00]
        && frame[23] == 17
        && u16::from_be_bytes([frame[36], frame[37]]) == port
        && &frame[42..42 + MAGIC.len()] == MAGIC
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[derive(Debug, Default)]
struct RxReport {
    queues: u32,
    per_queue: Vec<usize>,
    got: usize,
    bytes: usize,
    other_frames: usize,
    bad_ts: usize,
    counters: XdpCounters,
    stats: Vec<XskStats>,
    mode: Option<String>,
    bind: Option<BindMode>,
    zc_error: Option<String>,
    huge: bool,
    stack_got: Vec<usize>,
}

/// In `ns`: load, filter, attach to `iface`, bind every queue; signal
/// `ready`; receive until `want` lab datagrams to `port` came or 10 s passed.
/// Also counts datagrams on the given stack sockets (bound inside `ns`).
fn receive(
    ns: &str,
    iface: &str,
    filter: Filter,
    port: u16,
    want: usize,
    stack_binds: Vec<(SocketAddrV4, usize)>,
    ready: mpsc::Sender<()>,
) -> thread::JoinHandle<RxReport> {
    let (ns, iface) = (ns.to_string(), iface.to_string());
    thread::spawn(move || {
        enter_netns(&ns).expect("enter netns");
        let mut prog = XdpProgram::load().expect("load");
        prog.set_filter(&filter).expect("filter");
        let mode = prog.attach(&iface, ModePreference::Auto).expect("attach");
        let cfg = XskConfig {
            frame_count: 2048,
            rx_mode: RxMode::Poll { timeout_ms: 5 },
            ..XskConfig::default()
        };
        let mut socks = XskSocket::bind_all(&prog, &cfg).expect("bind sockets");
        // The stack sockets get their own readers: polling them between the
        // AF_XDP polls lets their receive buffers overflow.
        let stack: Vec<thread::JoinHandle<usize>> = stack_binds
            .iter()
            .map(|&(addr, n)| {
                let s = UdpSocket::bind(addr).expect("bind stack socket");
                s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                thread::spawn(move || {
                    let mut buf = [0u8; 2048];
                    let mut got = 0;
                    while got < n && s.recv_from(&mut buf).is_ok() {
                        got += 1;
                    }
                    got
                })
            })
            .collect();
        let before = prog.counters().expect("counters");
        let mut r = RxReport {
            queues: rx_queue_count(&iface).expect("queue count"),
            per_queue: vec![0; socks.len()],
            mode: Some(mode.to_string()),
            bind: Some(socks[0].bind_mode()),
            zc_error: socks[0].zero_copy_error().map(str::to_string),
            huge: socks[0].huge_pages(),
            ..RxReport::default()
        };
        ready.send(()).unwrap();
        let t0 = now_ns();
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.got < want && Instant::now() < deadline {
            for (q, s) in socks.iter_mut().enumerate() {
                s.recv_batch(|ts, frame| {
                    if !(t0..=now_ns()).contains(&ts) {
                        r.bad_ts += 1;
                    }
                    if is_lab_udp(frame, port) {
                        r.got += 1;
                        r.bytes += frame.len();
                        r.per_queue[q] += 1;
                    } else {
                        r.other_frames += 1;
                    }
                })
                .expect("recv_batch");
            }
        }
        // Anything late (more than asked for) is caught here too.
        thread::sleep(Duration::from_millis(50));
        for (q, s) in socks.iter_mut().enumerate() {
            while s
                .recv_batch(|_, frame| {
                    if is_lab_udp(frame, port) {
                        r.got += 1;
                        r.per_queue[q] += 1;
                    }
                })
                .expect("recv_batch")
                > 0
            {}
        }
        r.stack_got = stack.into_iter().map(|h| h.join().unwrap()).collect();
        r.counters = prog.counters().expect("counters").since(&before);
        r.stats = socks
            .iter()
            .map(|s| s.stats().expect("xsk stats"))
            .collect();
        drop(socks);
        prog.detach().expect("detach");
        r
    })
}

/// (a) A known number of UDP datagrams from the peer arrive through the
/// AF_XDP sockets, with their bytes, and the program counts them.
#[test]
fn receives_udp_through_af_xdp() {
    require_root!("receives_udp_through_af_xdp");
    let lab = Lab::new('r');
    let n = 2000;
    let (ready_tx, ready_rx) = mpsc::channel();
    let rx = receive(
        &lab.ns_a,
        &lab.if_a,
        Filter::default(),
        9000,
        n,
        vec![],
        ready_tx,
    );
    ready_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("receiver ready");
    assert!(
        lab.xdp_on_a(),
        "ip link shows no XDP program on {}",
        lab.if_a
    );
    send_udp(&lab.ns_b, B0, SocketAddrV4::new(A0, 9000), n, 8);
    let r = rx.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
    eprintln!(
        "xdp_lab: XDP mode {}, AF_XDP {:?} (zero-copy refused: {:?}), huge pages {}, \
         per queue {:?}, counters {:?}, socket stats {:?}",
        r.mode.as_deref().unwrap_or("?"),
        r.bind,
        r.zc_error,
        r.huge,
        r.per_queue,
        r.counters,
        r.stats
    );
    assert_eq!(r.queues, 2, "the veth was made with 2 rx queues");
    assert_eq!(r.got, n, "datagrams received through AF_XDP");
    assert_eq!(r.bytes, n * FRAME_LEN, "bytes received through AF_XDP");
    assert_eq!(
        r.other_frames, 0,
        "no other traffic in this lab (IPv6 off, static ARP)"
    );
    assert_eq!(r.bad_ts, 0, "batch timestamps within the receive window");
    assert_eq!(r.counters.redirected, n as u64);
    assert_eq!(r.counters.seen, n as u64);
    assert_eq!(r.counters.passed(), 0);
    for s in &r.stats {
        assert_eq!(
            s.rx_dropped + s.rx_ring_full + s.rx_invalid_descs,
            0,
            "{s:?}"
        );
    }
    assert!(!lab.xdp_on_a(), "detach left the program on {}", lab.if_a);
}

/// (a') Driver mode refused (veth refuses native XDP above ~3.5k MTU for
/// programs without frags support): the attach falls back to generic (skb)
/// mode, says so, and receiving works the same.
#[test]
fn falls_back_to_generic_mode() {
    require_root!("falls_back_to_generic_mode");
    let lab = Lab::new('g');
    for (ns, dev) in [(&lab.ns_a, &lab.if_a), (&lab.ns_b, &lab.if_b)] {
        sh(&["ip", "-n", ns, "link", "set", dev, "mtu", "9000"]);
    }
    let n = 500;
    let (ready_tx, ready_rx) = mpsc::channel();
    let rx = receive(
        &lab.ns_a,
        &lab.if_a,
        Filter::default(),
        9000,
        n,
        vec![],
        ready_tx,
    );
    ready_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("receiver ready");
    send_udp(&lab.ns_b, B0, SocketAddrV4::new(A0, 9000), n, 4);
    let r = rx.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
    eprintln!(
        "xdp_lab: fallback: mode {:?}, got {}, counters {:?}",
        r.mode, r.got, r.counters
    );
    assert_eq!(r.mode.as_deref(), Some("generic (skb)"));
    assert_eq!(r.got, n);
    assert_eq!(r.counters.redirected, n as u64);
}

/// (c) Traffic outside the filter's CIDR or port reaches the stack and is
/// not redirected; traffic inside it is.
#[test]
fn filter_passes_the_rest_to_the_stack() {
    require_root!("filter_passes_the_rest_to_the_stack");
    let lab = Lab::new('f');
    let filter = Filter {
        cidrs: vec!["198.18.1.0/24".parse().unwrap()],
        ports: vec![9000],
    };
    let (n_in, n_addr, n_port) = (300, 200, 100);
    let (ready_tx, ready_rx) = mpsc::channel();
    let rx = receive(
        &lab.ns_a,
        &lab.if_a,
        filter,
        9000,
        n_in,
        vec![
            (SocketAddrV4::new(A0, 9000), n_addr),
            (SocketAddrV4::new(A1, 9001), n_port),
        ],
        ready_tx,
    );
    ready_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("receiver ready");
    send_udp(&lab.ns_b, B1, SocketAddrV4::new(A1, 9000), n_in, 4);
    send_udp(&lab.ns_b, B0, SocketAddrV4::new(A0, 9000), n_addr, 4);
    send_udp(&lab.ns_b, B1, SocketAddrV4::new(A1, 9001), n_port, 4);
    let r = rx.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
    eprintln!("xdp_lab: filter: {r:?}");
    assert_eq!(r.got, n_in, "in-filter datagrams through AF_XDP");
    assert_eq!(
        r.other_frames, 0,
        "nothing outside the filter reached AF_XDP"
    );
    assert_eq!(
        r.stack_got,
        vec![n_addr, n_port],
        "outside the filter: the stack got them"
    );
    assert_eq!(r.counters.redirected, n_in as u64);
    assert_eq!(r.counters.pass_filtered, (n_addr + n_port) as u64);
    assert_eq!(r.counters.seen, (n_in + n_addr + n_port) as u64);
}

/// Helper for [`fail_open_when_the_owner_dies`], run in a child process:
/// attaches and binds inside the namespace named by the environment, says
/// READY, and waits to be killed (at most 60 s).
#[test]
#[ignore = "child process of fail_open_when_the_owner_dies"]
fn child_attach_and_wait() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (ns, iface) = spec.split_once(':').expect("NS:IFACE");
    enter_netns(ns).expect("enter netns");
    let mut prog = XdpProgram::load().expect("load");
    let mode = prog.attach(iface, ModePreference::Auto).expect("attach");
    let socks = XskSocket::bind_all(&prog, &XskConfig::default()).expect("bind");
    println!(
        "WIRELENS-CHILD-READY {} {} {}",
        prog.prog_id(),
        mode,
        socks.len()
    );
    std::io::Write::flush(&mut std::io::stdout()).expect("flush");
    thread::sleep(Duration::from_secs(60));
    // Not reached when killed; a timeout is an orderly exit that detaches.
}

/// (b) Fail-open: the owner of program and sockets dies by SIGKILL (no
/// detach); the program stays attached and traffic reaches the stack. The
/// next attach then replaces the stale program.
#[test]
fn fail_open_when_the_owner_dies() {
    require_root!("fail_open_when_the_owner_dies");
    let lab = Lab::new('k');
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "child_attach_and_wait",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{}:{}", lab.ns_a, lab.if_a))
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines.by_ref().map_while(Result::ok).find_map(|l| {
        // libtest prints "test NAME ... " without a newline first.
        l.find("WIRELENS-CHILD-READY").map(|at| l[at..].to_string())
    });
    let Some(ready) = ready else {
        let _ = child.kill();
        panic!("child exited before attaching: {:?}", child.wait());
    };
    let stale_id: u32 = ready.split_whitespace().nth(1).unwrap().parse().unwrap();

    // While the child lives, its sockets take the traffic: the stack sees none.
    let n = 200;
    let stack = SocketAddrV4::new(A0, 9100);
    let listen = |ns: &str| {
        let (tx, rx) = mpsc::channel();
        let h = {
            let ns = ns.to_string();
            thread::spawn(move || {
                enter_netns(&ns).unwrap();
                let s = UdpSocket::bind(stack).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                tx.send(()).unwrap();
                let mut buf = [0u8; 2048];
                let mut got = 0;
                while s.recv_from(&mut buf).is_ok() {
                    got += 1;
                }
                got
            })
        };
        rx.recv().unwrap();
        h
    };
    let h = listen(&lab.ns_a);
    send_udp(&lab.ns_b, B0, stack, n, 4);
    let while_alive = h.join().unwrap();

    child.kill().expect("SIGKILL child");
    let _ = child.wait();
    assert!(
        lab.xdp_on_a(),
        "the program must survive its owner (no detach on SIGKILL)"
    );

    let h = listen(&lab.ns_a);
    send_udp(&lab.ns_b, B0, stack, n, 4);
    let after_death = h.join().unwrap();
    eprintln!("xdp_lab: fail-open: stack got {while_alive} while the owner lived, {after_death} after SIGKILL");
    assert_eq!(while_alive, 0, "the live owner's sockets took the traffic");
    assert_eq!(
        after_death, n,
        "fail-open: with no socket the stack gets everything"
    );

    // The next start finds the stale program by name and replaces it.
    let (ns, iface) = (lab.ns_a.clone(), lab.if_a.clone());
    let replaced = in_ns(&ns, move || {
        let mut prog = XdpProgram::load().expect("load");
        prog.attach(&iface, ModePreference::Auto)
            .expect("attach over a stale program");
        let replaced = prog.attachment().unwrap().replaced_stale;
        drop(prog);
        replaced
    });
    assert_eq!(replaced, Some(stale_id));
    assert!(!lab.xdp_on_a(), "dropping the program detached it");
}

/// Frame builders for the filter semantics test.
mod frames {
    pub fn eth(ethertype: u16, vlans: &[u16], l3: &[u8]) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        for &vid in vlans {
            f.extend(0x8100u16.to_be_bytes());
            f.extend(vid.to_be_bytes());
        }
        f.extend(ethertype.to_be_bytes());
        f.extend(l3);
        f
    }

    pub fn ports(sport: u16, dport: u16) -> Vec<u8> {
        let mut l4 = sport.to_be_bytes().to_vec();
        l4.extend(dport.to_be_bytes());
        l4.extend([0; 16]);
        l4
    }

    pub fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, frag_off: u16, l4: &[u8]) -> Vec<u8> {
        let len = (20 + l4.len()) as u16;
        let mut ip = vec![0x45, 0];
        ip.extend(len.to_be_bytes());
        ip.extend([0, 1]);
        ip.extend(frag_off.to_be_bytes());
        ip.extend([64, proto, 0, 0]);
        ip.extend(src);
        ip.extend(dst);
        ip.extend(l4);
        ip
    }

    /// `ext`: (next header of the extension, its bytes) in order.
    pub fn ipv6(src: &str, dst: &str, exts: &[(u8, Vec<u8>)], proto: u8, l4: &[u8]) -> Vec<u8> {
        let src: std::net::Ipv6Addr = src.parse().unwrap();
        let dst: std::net::Ipv6Addr = dst.parse().unwrap();
        let first = exts.first().map_or(proto, |e| e.0);
        let mut body = Vec::new();
        for (i, (_, bytes)) in exts.iter().enumerate() {
            let next = exts.get(i + 1).map_or(proto, |e| e.0);
            let mut b = bytes.clone();
            b[0] = next;
            body.extend(b);
        }
        body.extend(l4);
        let mut ip = vec![0x60, 0, 0, 0];
        ip.extend((body.len() as u16).to_be_bytes());
        ip.extend([first, 64]);
        ip.extend(src.octets());
        ip.extend(dst.octets());
        ip.extend(body);
        ip
    }

    /// Hop-by-hop options header of 8 bytes (PadN).
    pub fn hop_by_hop() -> (u8, Vec<u8>) {
        (0, vec![0, 0, 1, 4, 0, 0, 0, 0])
    }

    /// Fragment header with fragment offset `offset` (8-byte units).
    pub fn fragment(offset: u16) -> (u8, Vec<u8>) {
        let off = (offset << 3).to_be_bytes();
        (44, vec![0, 0, off[0], off[1], 0, 0, 0, 7])
    }
}

/// (c') The filter's semantics on crafted frames through BPF_PROG_TEST_RUN:
/// VLAN tags, IPv6 extension headers, fragments, ICMP, non-IP. Every verdict
/// is XDP_PASS here (no socket on queue 0); the counters say which way.
#[test]
fn filter_semantics_on_crafted_frames() {
    require_root!("filter_semantics_on_crafted_frames");
    use frames::*;
    let mut prog = XdpProgram::load().expect("load");
    // Which counter moved: "taken" (pass_no_socket: matched, no socket) or another.
    let verdict = |prog: &XdpProgram, frame: &[u8]| -> &'static str {
        let before = prog.counters().unwrap();
        let action = prog.test_run(frame).expect("test_run");
        assert_eq!(
            action,
            XdpAction::Pass,
            "fail-open: never anything but PASS here"
        );
        let d = prog.counters().unwrap().since(&before);
        assert_eq!(d.seen, 1);
        match (
            d.pass_no_socket,
            d.pass_filtered,
            d.pass_not_ip,
            d.pass_malformed,
        ) {
            (1, 0, 0, 0) => "taken",
            (0, 1, 0, 0) => "filtered",
            (0, 0, 1, 0) => "not_ip",
            (0, 0, 0, 1) => "malformed",
            _ => panic!("counters moved oddly: {d:?}"),
        }
    };
    let udp4 = |src: [u8; 4], sport, dport| {
        eth(
            0x0800,
            &[],
            &ipv4(src, [10, 0, 0, 1], 17, 0, &ports(sport, dport)),
        )
    };
    let arp = eth(0x0806, &[], &[0; 28]);

    // Empty filter: every IP packet is taken; non-IP and runts pass.
    assert_eq!(verdict(&prog, &udp4([198, 18, 9, 9], 1, 2)), "taken");
    assert_eq!(verdict(&prog, &arp), "not_ip");
    assert_eq!(
        verdict(&prog, &eth(0x0800, &[], &[0x45, 0, 0])),
        "malformed"
    );
    assert_eq!(verdict(&prog, &eth(0x86dd, &[], &[0x60; 20])), "malformed");

    prog.set_filter(&Filter {
        cidrs: vec![
            "198.18.1.0/24".parse().unwrap(),
            "2001:db8:1::/48".parse().unwrap(),
        ],
        ports: vec![443],
    })
    .unwrap();
    let inside = [198, 18, 1, 5];
    let outside = [198, 18, 2, 5];
    assert_eq!(
        verdict(&prog, &udp4(inside, 1234, 443)),
        "taken",
        "dst port"
    );
    assert_eq!(
        verdict(&prog, &udp4(inside, 443, 1234)),
        "taken",
        "src port"
    );
    assert_eq!(
        verdict(&prog, &udp4(inside, 1, 2)),
        "filtered",
        "port outside"
    );
    assert_eq!(
        verdict(&prog, &udp4(outside, 1234, 443)),
        "filtered",
        "address outside"
    );
    let tcp = eth(
        0x0800,
        &[],
        &ipv4(inside, [10, 0, 0, 1], 6, 0, &ports(5000, 443)),
    );
    assert_eq!(verdict(&prog, &tcp), "taken", "tcp");
    let icmp = eth(
        0x0800,
        &[],
        &ipv4(inside, [10, 0, 0, 1], 1, 0, &[3, 4, 0, 0, 0, 0, 5, 0xdc]),
    );
    assert_eq!(
        verdict(&prog, &icmp),
        "taken",
        "ICMP rides on the address filter"
    );
    let frag = eth(0x0800, &[], &ipv4(inside, [10, 0, 0, 1], 17, 185, &[0; 24]));
    assert_eq!(
        verdict(&prog, &frag),
        "taken",
        "non-first fragment rides on the address"
    );
    let gre = eth(0x0800, &[], &ipv4(inside, [10, 0, 0, 1], 47, 0, &[0; 8]));
    assert_eq!(
        verdict(&prog, &gre),
        "filtered",
        "no ports while a port filter is set"
    );
    let vlan = eth(
        0x0800,
        &[100],
        &ipv4(inside, [10, 0, 0, 1], 17, 0, &ports(1, 443)),
    );
    assert_eq!(verdict(&prog, &vlan), "taken", "802.1Q");
    let qinq = eth(
        0x0800,
        &[100, 200],
        &ipv4([10, 0, 0, 1], inside, 17, 0, &ports(443, 1)),
    );
    assert_eq!(verdict(&prog, &qinq), "taken", "QinQ, dst address");

    let v6 = |src: &str, exts: &[(u8, Vec<u8>)], dport: u16| {
        eth(
            0x86dd,
            &[],
            &ipv6(src, "2001:db8:2::1", exts, 17, &ports(5353, dport)),
        )
    };
    assert_eq!(
        verdict(&prog, &v6("2001:db8:1::5", &[], 443)),
        "taken",
        "v6"
    );
    assert_eq!(
        verdict(&prog, &v6("2001:db8:1::5", &[], 80)),
        "filtered",
        "v6 port"
    );
    assert_eq!(
        verdict(&prog, &v6("2001:db8:3::5", &[], 443)),
        "filtered",
        "v6 address"
    );
    assert_eq!(
        verdict(&prog, &v6("2001:db8:1::5", &[hop_by_hop()], 443)),
        "taken",
        "v6 HBH"
    );
    assert_eq!(
        verdict(&prog, &v6("2001:db8:1::5", &[hop_by_hop()], 80)),
        "filtered"
    );
    assert_eq!(
        verdict(
            &prog,
            &v6("2001:db8:1::5", &[hop_by_hop(), fragment(0)], 443)
        ),
        "taken",
        "first fragment: ports read behind the fragment header"
    );
    assert_eq!(
        verdict(&prog, &v6("2001:db8:1::5", &[fragment(0)], 80)),
        "filtered",
        "first fragment, port outside"
    );
    assert_eq!(
        verdict(&prog, &v6("2001:db8:1::5", &[fragment(100)], 80)),
        "taken",
        "non-first fragment rides on the address"
    );
    let icmp6 = eth(
        0x86dd,
        &[],
        &ipv6(
            "2001:db8:2::1",
            "2001:db8:1::5",
            &[],
            58,
            &[2, 0, 0, 0, 0, 0, 5, 0],
        ),
    );
    assert_eq!(
        verdict(&prog, &icmp6),
        "taken",
        "packet-too-big rides on the address"
    );

    // Back to empty: the old entries are gone and everything is taken again.
    prog.set_filter(&Filter::default()).unwrap();
    assert_eq!(verdict(&prog, &udp4(outside, 1, 2)), "taken");
    // Only IPv4 prefixes: no IPv6 is taken.
    prog.set_filter(&Filter {
        cidrs: vec!["198.18.0.0/15".parse().unwrap()],
        ports: vec![],
    })
    .unwrap();
    assert_eq!(verdict(&prog, &udp4(outside, 1, 2)), "taken");
    assert_eq!(verdict(&prog, &v6("2001:db8:1::5", &[], 443)), "filtered");
}

/// No traffic shape slips past a port filter unseen: three VLAN tags, a
/// 0x9100 tag, four tags, eight IPv6 extension headers (Mobility, HIP and
/// Shim6 among them), AH are decided; a fifth tag, nine extension headers,
/// ESP (IPv4 and IPv6) and an experimental header cannot be, and are taken
/// and counted in `taken_undecided`. Fail-open stays: every action is PASS.
#[test]
fn filter_cannot_be_evaded() {
    require_root!("filter_cannot_be_evaded");
    use frames::*;
    let mut prog = XdpProgram::load().expect("load");
    prog.set_filter(&Filter {
        cidrs: vec![
            "198.18.1.0/24".parse().unwrap(),
            "2001:db8:1::/48".parse().unwrap(),
        ],
        ports: vec![443],
    })
    .unwrap();
    // (taken, undecided) from the counters that moved.
    let verdict = |prog: &XdpProgram, frame: &[u8]| -> &'static str {
        let before = prog.counters().unwrap();
        assert_eq!(prog.test_run(frame).expect("test_run"), XdpAction::Pass);
        let d = prog.counters().unwrap().since(&before);
        assert_eq!(d.seen, 1);
        match (
            d.pass_no_socket,
            d.pass_filtered,
            d.pass_not_ip,
            d.pass_malformed,
            d.taken_undecided,
        ) {
            (1, 0, 0, 0, 0) => "taken",
            (1, 0, 0, 0, 1) => "undecided",
            (0, 1, 0, 0, 0) => "filtered",
            (0, 0, 1, 0, 0) => "not_ip",
            (0, 0, 0, 1, 0) => "malformed",
            _ => panic!("counters moved oddly: {d:?}"),
        }
    };
    let tagged = |tags: &[u16], l3: &[u8], ethertype: u16| {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        for (i, &tpid) in tags.iter().enumerate() {
            f.extend(tpid.to_be_bytes());
            f.extend((100 + i as u16).to_be_bytes());
        }
        f.extend(ethertype.to_be_bytes());
        f.extend(l3);
        f
    };
    let inside = [198, 18, 1, 5];
    let udp = |dport| ipv4(inside, [10, 0, 0, 1], 17, 0, &ports(5000, dport));
    for tags in [
        &[0x88a8, 0x8100, 0x8100][..],
        &[0x9100][..],
        &[0x9100, 0x8100][..],
        &[0x88a8, 0x9100, 0x8100, 0x8100][..],
    ] {
        assert_eq!(
            verdict(&prog, &tagged(tags, &udp(443), 0x0800)),
            "taken",
            "{tags:x?}"
        );
        assert_eq!(
            verdict(&prog, &tagged(tags, &udp(80), 0x0800)),
            "filtered",
            "{tags:x?} decided, port outside"
        );
    }
    assert_eq!(
        verdict(&prog, &tagged(&[0x8100; 5], &udp(80), 0x0800)),
        "undecided",
        "a fifth tag"
    );
    assert_eq!(
        verdict(&prog, &tagged(&[0x8100, 0x8100], &[0; 4], 0x0806)),
        "not_ip",
        "ARP behind two tags"
    );

    // IPv6: extension headers of the generic layout (8 bytes each).
    let ext = |h: u8| (h, vec![0, 0, 1, 4, 0, 0, 0, 0]);
    let v6 = |exts: &[(u8, Vec<u8>)], proto: u8, dport: u16| {
        eth(
            0x86dd,
            &[],
            &ipv6(
                "2001:db8:1::5",
                "2001:db8:2::1",
                exts,
                proto,
                &ports(5000, dport),
            ),
        )
    };
    let mut eight: Vec<(u8, Vec<u8>)> = vec![hop_by_hop()];
    eight.extend([60, 43, 60, 135, 139, 140, 60].map(ext));
    // Routing header: byte 2 is the type, 3 segments left; zero is fine here.
    assert_eq!(eight.len(), 8);
    assert_eq!(verdict(&prog, &v6(&eight, 17, 443)), "taken", "8 headers");
    assert_eq!(
        verdict(&prog, &v6(&eight, 17, 80)),
        "filtered",
        "8 headers, port outside"
    );
    let mut nine = eight.clone();
    nine.push(ext(60));
    assert_eq!(verdict(&prog, &v6(&nine, 17, 80)), "undecided", "9 headers");
    assert_eq!(verdict(&prog, &v6(&[], 50, 80)), "undecided", "ESP");
    assert_eq!(
        verdict(&prog, &v6(&[hop_by_hop()], 50, 80)),
        "undecided",
        "ESP behind HBH"
    );
    assert_eq!(
        verdict(&prog, &v6(&[ext(253)], 17, 80)),
        "undecided",
        "experimental"
    );
    // AH (4-byte units: 12 bytes of ICV -> length (24/4) - 2 = 4).
    let ah = (51u8, {
        let mut b = vec![0, 4];
        b.extend([0; 22]);
        b
    });
    assert_eq!(
        verdict(&prog, &v6(std::slice::from_ref(&ah), 17, 443)),
        "taken",
        "v6 AH"
    );
    assert_eq!(
        verdict(&prog, &v6(std::slice::from_ref(&ah), 17, 80)),
        "filtered",
        "v6 AH"
    );

    // IPv4: ESP undecided, AH walked.
    let esp4 = eth(0x0800, &[], &ipv4(inside, [10, 0, 0, 1], 50, 0, &[0; 24]));
    assert_eq!(verdict(&prog, &esp4), "undecided", "v4 ESP");
    let mut ah4 = vec![17, 4];
    ah4.extend([0; 22]);
    ah4.extend(ports(5000, 443));
    let ah4_in = eth(0x0800, &[], &ipv4(inside, [10, 0, 0, 1], 51, 0, &ah4));
    assert_eq!(verdict(&prog, &ah4_in), "taken", "v4 AH, port inside");
    let mut ah4 = vec![17, 4];
    ah4.extend([0; 22]);
    ah4.extend(ports(5000, 80));
    let ah4_out = eth(0x0800, &[], &ipv4(inside, [10, 0, 0, 1], 51, 0, &ah4));
    assert_eq!(verdict(&prog, &ah4_out), "filtered", "v4 AH, port outside");
    // Outside the address filter nothing is undecided: the address decides.
    let esp_out = eth(
        0x0800,
        &[],
        &ipv4([198, 18, 2, 5], [10, 0, 0, 1], 50, 0, &[0; 24]),
    );
    assert_eq!(verdict(&prog, &esp_out), "filtered", "ESP, address outside");
}

/// The `run` safety check: an interface with the host's addresses or the
/// default route is refused; loopback is not.
#[test]
fn host_traffic_check() {
    require_root!("host_traffic_check");
    let lab = Lab::new('h');
    sh(&[
        "ip",
        "-n",
        &lab.ns_b,
        "route",
        "add",
        "default",
        "via",
        &A0.to_string(),
    ]);
    let (if_a, if_b) = (lab.if_a.clone(), lab.if_b.clone());
    let a = in_ns(&lab.ns_a, move || {
        (
            iface_carries_host_traffic(&if_a),
            iface_carries_host_traffic("lo"),
        )
    });
    let b = in_ns(&lab.ns_b, move || iface_carries_host_traffic(&if_b));
    eprintln!("xdp_lab: host check: a={:?} lo={:?} b={:?}", a.0, a.1, b);
    assert!(
        a.0.as_deref().is_some_and(|w| w.contains("198.18.0.1")),
        "{a:?}"
    );
    assert_eq!(a.1, None, "loopback only has loopback addresses");
    assert!(
        b.as_deref().is_some_and(|w| w.contains("default route")),
        "{b:?}"
    );
}

/// Receive rates, two ways, with an AF_XDP sender (copy-mode TX on queue 0
/// of the `b` end, so everything lands on rx queue 0 of `a`):
/// - streaming: sender and a busy-polling receiver run together for 3 s
///   (on a 2-core box the sender is usually the bottleneck);
/// - drain: the sender fills the rx ring while the receiver waits, then
///   `recv_batch` empties it, timed: the user-space cost of receiving.
///
/// Ignored by default: it loads both cores. Run with
/// `-- --ignored --nocapture measure_receive_rate` (use `--release`).
#[test]
#[ignore = "benchmark: loads both cores for a few seconds"]
fn measure_receive_rate() {
    require_root!("measure_receive_rate");
    let lab = Lab::new('m');
    let secs = 3.0;
    let drain_frames = 16384u64;
    let (to_rx, rx_cmd) = mpsc::channel::<&'static str>();
    let (rx_ready, from_rx) = mpsc::channel::<()>();
    let (ns_a, if_a) = (lab.ns_a.clone(), lab.if_a.clone());
    let rx = thread::spawn(move || {
        enter_netns(&ns_a).unwrap();
        let mut prog = XdpProgram::load().unwrap();
        prog.attach(&if_a, ModePreference::Auto).unwrap();
        let cfg = XskConfig {
            frame_count: 32768,
            frame_size: 2048,
            rx_mode: RxMode::BusyPoll,
            ..XskConfig::default()
        };
        let mut sock = XskSocket::bind(&prog, 0, &cfg).unwrap();
        rx_ready.send(()).unwrap();
        // Streaming.
        let (mut frames, mut bytes) = (0u64, 0u64);
        let start = Instant::now();
        while start.elapsed().as_secs_f64() < secs {
            sock.recv_batch(|_, f| {
                frames += 1;
                bytes += f.len() as u64;
            })
            .unwrap();
        }
        let stream = (frames, bytes, start.elapsed().as_secs_f64());
        // Empty the ring of what the sender sent after we stopped counting.
        let mut quiet = Instant::now();
        while quiet.elapsed() < Duration::from_millis(300) {
            if sock.recv_batch(|_, _| {}).unwrap() > 0 {
                quiet = Instant::now();
            }
        }
        // Drain cycles: wait until the sender has filled the ring, then time.
        let mut drains = Vec::new();
        rx_ready.send(()).unwrap();
        while rx_cmd.recv() == Ok("drain") {
            let (mut got, mut sum) = (0u64, 0u64);
            let t = Instant::now();
            while got < drain_frames && t.elapsed() < Duration::from_secs(2) {
                sock.recv_batch(|_, f| {
                    got += 1;
                    sum += u64::from(f[f.len() - 1]);
                })
                .unwrap();
            }
            drains.push((got, t.elapsed().as_secs_f64()));
            std::hint::black_box(sum);
            rx_ready.send(()).unwrap();
        }
        (
            stream,
            drains,
            prog.counters().unwrap(),
            sock.stats().unwrap(),
        )
    });
    from_rx.recv().unwrap();
    let (ns_b, if_b) = (lab.ns_b.clone(), lab.if_b.clone());
    let sent = in_ns(&ns_b, move || {
        let mut blaster = Blaster::new(&if_b);
        let streamed = blaster.send(u64::MAX, Duration::from_secs_f64(secs));
        // The receiver says when it has emptied its ring.
        from_rx.recv().unwrap();
        for _ in 0..5 {
            blaster.send(drain_frames, Duration::from_secs(5));
            // Let the last frames land in the rx ring.
            thread::sleep(Duration::from_millis(100));
            to_rx.send("drain").unwrap();
            from_rx.recv().unwrap();
        }
        to_rx.send("stop").unwrap();
        streamed
    });
    let ((frames, bytes, el), drains, counters, stats) = rx.join().unwrap();
    let mpps: Vec<String> = drains
        .iter()
        .map(|(n, t)| format!("{:.2}", *n as f64 / t / 1e6))
        .collect();
    eprintln!(
        "xdp_lab: streaming: received {:.3} Mpps ({:.0} Mbit/s of {FRAME_LEN}-byte frames), \
         sent {:.3} Mpps over {el:.2} s; drain of {drain_frames} frames by recv_batch: \
         {mpps:?} Mpps (got {:?}); counters {counters:?}; socket stats {stats:?}",
        frames as f64 / el / 1e6,
        bytes as f64 * 8.0 / el / 1e6,
        sent as f64 / el / 1e6,
        drains.iter().map(|d| d.0).collect::<Vec<_>>(),
    );
    assert!(frames > 0);
}

/// A minimal AF_XDP sender (xsk-rs TX, copy mode) of lab UDP frames on
/// queue 0 of an interface.
struct Blaster {
    umem: xsk_rs::Umem,
    tx: xsk_rs::TxQueue,
    cq: xsk_rs::CompQueue,
    _rx: xsk_rs::RxQueue,
    _fq: xsk_rs::FillQueue,
    free: Vec<xsk_rs::FrameDesc>,
    done: Vec<xsk_rs::FrameDesc>,
    len: usize,
}

impl Blaster {
    fn new(iface: &str) -> Blaster {
        use std::io::Write;
        use xsk_rs::config::{BindFlags, LibxdpFlags, SocketConfig, UmemConfig};
        let frame = {
            let mut payload = vec![0u8; PAYLOAD];
            payload[..MAGIC.len()].copy_from_slice(MAGIC);
            let mut udp = 40000u16.to_be_bytes().to_vec();
            udp.extend(9000u16.to_be_bytes());
            udp.extend(((8 + PAYLOAD) as u16).to_be_bytes());
            udp.extend([0, 0]);
            udp.extend(&payload);
            let mut f = vec![
                0x02, 0, 0xc6, 0x12, 0, 1, 0x02, 0, 0xc6, 0x12, 0, 2, 0x08, 0,
            ];
            f.extend(frames::ipv4(B0.octets(), A0.octets(), 17, 0, &udp));
            f
        };
        let (umem, mut descs) =
            xsk_rs::Umem::new(UmemConfig::default(), 4096.try_into().unwrap(), false).unwrap();
        let cfg = SocketConfig::builder()
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .bind_flags(BindFlags::XDP_COPY | BindFlags::XDP_USE_NEED_WAKEUP)
            .build();
        // SAFETY: fresh, unshared UMEM; no other socket on (iface, 0).
        let (tx, rx, fq_cq) =
            unsafe { xsk_rs::Socket::new(cfg, &umem, &iface.parse().unwrap(), 0) }.unwrap();
        let (fq, cq) = fq_cq.unwrap();
        for d in descs.iter_mut() {
            // SAFETY: the frame is ours (not on any ring yet).
            unsafe { umem.data_mut(d) }
                .cursor()
                .write_all(&frame)
                .expect("frame fits");
        }
        Blaster {
            done: descs.clone(),
            free: descs,
            umem,
            tx,
            cq,
            _rx: rx,
            _fq: fq,
            len: frame.len(),
        }
    }

    /// Sends until `n` frames completed or `dur` passed; returns completions.
    fn send(&mut self, n: u64, dur: Duration) -> u64 {
        let (mut queued, mut sent) = (0u64, 0u64);
        let start = Instant::now();
        while sent < n && start.elapsed() < dur {
            let batch = (self.free.len() as u64).min(64).min(n - queued) as usize;
            if batch > 0 {
                let at = self.free.len() - batch;
                // SAFETY: frames in `free` are not on any ring.
                let k = unsafe { self.tx.produce_and_wakeup(&self.free[at..]) }.unwrap();
                self.free.truncate(self.free.len() - k);
                queued += k as u64;
            } else {
                // Kick the kernel to send what is queued (EAGAIN/EBUSY: retry).
                let _ = self.tx.wakeup();
            }
            // SAFETY: completions hand back frames of this UMEM.
            let c = unsafe { self.cq.consume(&mut self.done[..]) };
            for d in &mut self.done[..c] {
                // The completion zeroes the length; the bytes are still there.
                // SAFETY: a completed frame is ours again.
                unsafe { self.umem.data_mut(d) }.cursor().set_pos(self.len);
            }
            self.free.extend_from_slice(&self.done[..c]);
            sent += c as u64;
        }
        sent
    }
}

/// A lab datagram as a whole Ethernet frame: `MAC_B` -> `MAC_A`, `B0` ->
/// `A0`, UDP to `port`, MAGIC and the sequence number `i` in the payload.
fn lab_frame(i: u64, port: u16, buf: &mut [u8]) -> usize {
    let f = &mut buf[..FRAME_LEN];
    f.fill(0);
    let mac = |s: &str| -> Vec<u8> {
        s.split(':')
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect()
    };
    f[0..6].copy_from_slice(&mac(MAC_A));
    f[6..12].copy_from_slice(&mac(MAC_B));
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((FRAME_LEN - 14) as u16).to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&B0.octets());
    f[30..34].copy_from_slice(&A0.octets());
    f[34..36].copy_from_slice(&40000u16.to_be_bytes());
    f[36..38].copy_from_slice(&port.to_be_bytes());
    f[38..40].copy_from_slice(&((8 + PAYLOAD) as u16).to_be_bytes());
    f[42..42 + MAGIC.len()].copy_from_slice(MAGIC);
    f[42 + MAGIC.len()..50 + MAGIC.len()].copy_from_slice(&i.to_be_bytes());
    FRAME_LEN
}

/// (e) The transmitting socket: frames written by `XskTx` on each queue of
/// the `b` end arrive, all of them with their length and marker, through the AF_XDP
/// sockets of the same queue on the `a` end (veth keeps the queue), and the
/// socket's counters add up.
#[test]
fn transmits_through_af_xdp_tx() {
    require_root!("transmits_through_af_xdp_tx");
    let lab = Lab::new('t');
    let per_queue = 1000usize;
    let (ready_tx, ready_rx) = mpsc::channel();
    let rx = receive(
        &lab.ns_a,
        &lab.if_a,
        Filter::default(),
        9000,
        2 * per_queue,
        vec![],
        ready_tx,
    );
    ready_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("receiver ready");
    let (ns_b, if_b) = (lab.ns_b.clone(), lab.if_b.clone());
    let sent = in_ns(&ns_b, move || {
        let mut out = Vec::new();
        for q in 0..2u32 {
            let mut tx = XskTx::bind(&if_b, q, &XskTxConfig::default()).expect("bind tx");
            let mut i = 0u64;
            while (i as usize) < per_queue {
                let want = (per_queue - i as usize).min(32);
                let put = tx
                    .send_batch(want, |buf| {
                        let len = lab_frame(i, 9000, buf);
                        i += 1;
                        len
                    })
                    .expect("send_batch");
                assert!(put <= want);
                thread::sleep(Duration::from_micros(500));
            }
            let left = tx.flush(Duration::from_secs(5)).expect("flush");
            out.push((
                tx.bind_mode(),
                tx.zero_copy_error().map(str::to_string),
                tx.counters(),
                left,
            ));
        }
        out
    });
    let r = rx.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
    eprintln!("xdp_lab: tx: {sent:?}, rx per queue {:?}", r.per_queue);
    for (bind, zc_err, c, left) in &sent {
        assert_eq!(*bind, BindMode::Copy, "veth transmits in copy mode");
        assert!(zc_err.is_some(), "zero-copy was tried and refused on veth");
        assert_eq!(*left, 0, "every frame completed");
        assert_eq!(c.submitted, per_queue as u64);
        assert_eq!(c.completed, per_queue as u64);
        assert_eq!(c.kicks_busy, 0, "the peer dropped nothing");
    }
    assert_eq!(r.got, 2 * per_queue, "frames received");
    assert_eq!(r.bytes, 2 * per_queue * FRAME_LEN);
    assert_eq!(
        r.per_queue,
        vec![per_queue, per_queue],
        "queue q -> queue q"
    );
    assert_eq!(r.other_frames, 0);
    assert_eq!(r.counters.redirected, 2 * per_queue as u64);
}
