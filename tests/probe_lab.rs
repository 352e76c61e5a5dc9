//! Root-only lab tests of `wirelens probe`: real UDP through a router
//! namespace with injected loss, delay, a small MTU or a silent drop.
//!
//! Topology (names `wlp<pid><tag>*`, unique per process and test; addresses
//! from 198.18.0.0/15 and 2001:db8::/32, only inside the namespaces):
//!
//! ```text
//!  ns ..s (sender)        ns ..r (router, ip forwarding)            ns ..f (reflector)
//!  [..s0]---veth---[..r0]  FORWARD chain  [..r1]---veth---(fa ~ fb)---veth---[..f1]
//!  198.18.1.2/24   198.18.1.1/24          198.18.2.1/24                   198.18.2.2/24
//!  2001:db8:1::2   2001:db8:1::1          2001:db8:2::1                   2001:db8:2::2
//! ```
//!
//! With `delay_ms`, `scripts/forwarder.py` (this kernel has no netem) bridges
//! two veths in the router namespace between r1 and the reflector and delays
//! every frame by that much each way; otherwise r1's peer is f1 directly.
//! Loss is iptables `-m statistic` in the router's FORWARD chain, one rule
//! per direction, so its packet counters are the exact truth.
//!
//! Everything is removed by a Drop guard, also when a test fails. Without
//! root the tests print SKIP and pass.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;
use support::skip_unless_root;

const BIN: &str = env!("CARGO_BIN_EXE_wirelens");
/// One lab at a time: two cores, and the delay line is a python process.
static LOCK: Mutex<()> = Mutex::new(());
static SEQ: AtomicU32 = AtomicU32::new(0);

fn skip(test: &str) -> bool {
    skip_unless_root(test, "needs root (network namespaces, iptables)")
}

#[derive(Default)]
struct LabOpts {
    /// One-way delay of the forwarder between router and reflector.
    delay_ms: Option<u32>,
    /// MTU of the router <-> reflector link.
    mtu_r1: Option<u32>,
}

struct Lab {
    id: String,
    children: Vec<Child>,
    namespaces: Vec<String>,
    stats_file: Option<String>,
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("spawn")
}

impl Lab {
    fn ns(&self, n: char) -> String {
        format!("wlp{}{}", self.id, n)
    }
    fn link(&self, n: &str) -> String {
        format!("wlp{}{}", self.id, n)
    }

    fn cmd(&self, ns: char, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(ns)]).args(args);
        c
    }

    /// Runs `args` in namespace `ns`; panics with its output on failure.
    fn must(&self, ns: char, args: &[&str]) -> String {
        let out = run(&mut self.cmd(ns, args));
        assert!(
            out.status.success(),
            "in {}: {:?} failed: {}{}",
            self.ns(ns),
            args,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// [`must`](Self::must) with a whitespace-separated command line.
    fn sh(&self, ns: char, line: &str) -> String {
        let args: Vec<&str> = line.split_whitespace().collect();
        self.must(ns, &args)
    }

    fn host(args: &[&str]) {
        let out = run(Command::new("ip").args(args));
        assert!(
            out.status.success(),
            "ip {:?} failed: {}",
            args,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn new(opts: LabOpts) -> Lab {
        let id = format!(
            "{}{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        assert!(id.len() <= 10, "interface names are limited to 15 chars");
        let mut lab = Lab {
            id,
            children: Vec::new(),
            namespaces: Vec::new(),
            stats_file: None,
        };
        for n in ['s', 'r', 'f'] {
            let ns = lab.ns(n);
            Lab::host(&["netns", "add", &ns]);
            lab.namespaces.push(ns);
            lab.sh(n, "ip link set lo up");
        }
        let p = format!("wlp{}", lab.id);
        // Links are created inside the router namespace: nothing ever
        // appears in the host's.
        lab.sh(
            'r',
            &format!("ip link add {p}r0 type veth peer name {p}s0 netns {p}s"),
        );
        let mut links = vec![('s', "s0"), ('r', "r0"), ('r', "r1"), ('f', "f1")];
        if opts.delay_ms.is_some() {
            lab.sh('r', &format!("ip link add {p}r1 type veth peer name {p}fa"));
            lab.sh(
                'r',
                &format!("ip link add {p}fb type veth peer name {p}f1 netns {p}f"),
            );
            for l in ["fa", "fb"] {
                lab.sh('r', &format!("ip link set {p}{l} up"));
                // The delay line is a wire: no addresses of its own.
                lab.sh(
                    'r',
                    &format!("sysctl -qw net.ipv6.conf.{p}{l}.disable_ipv6=1"),
                );
                links.push(('r', l));
            }
        } else {
            lab.sh(
                'r',
                &format!("ip link add {p}r1 type veth peer name {p}f1 netns {p}f"),
            );
        }
        if let Some(mtu) = opts.mtu_r1 {
            lab.sh('r', &format!("ip link set {p}r1 mtu {mtu}"));
            lab.sh('f', &format!("ip link set {p}f1 mtu {mtu}"));
        }
        // Checksum and segmentation offloads off (docs/LAB-NOTES.md): a packet socket
        // (the delay line) would copy frames whose UDP checksum is still to be
        // filled in, and the reflector would drop them as corrupt.
        for (n, l) in &links {
            lab.sh(
                *n,
                &format!("ethtool -K {p}{l} tx off rx off tso off gso off gro off"),
            );
        }
        for (n, l, v4, v6) in [
            ('s', "s0", "198.18.1.2/24", "2001:db8:1::2/64"),
            ('r', "r0", "198.18.1.1/24", "2001:db8:1::1/64"),
            ('r', "r1", "198.18.2.1/24", "2001:db8:2::1/64"),
            ('f', "f1", "198.18.2.2/24", "2001:db8:2::2/64"),
        ] {
            lab.sh(n, &format!("ip addr add {v4} dev {p}{l}"));
            lab.sh(n, &format!("ip -6 addr add {v6} dev {p}{l} nodad"));
            lab.sh(n, &format!("ip link set {p}{l} up"));
        }
        lab.sh('s', "ip route add 198.18.0.0/15 via 198.18.1.1");
        lab.sh('s', "ip -6 route add 2001:db8::/32 via 2001:db8:1::1");
        lab.sh('f', "ip route add 198.18.0.0/15 via 198.18.2.1");
        lab.sh('f', "ip -6 route add 2001:db8::/32 via 2001:db8:2::1");
        lab.sh('r', "sysctl -qw net.ipv4.ip_forward=1");
        lab.sh('r', "sysctl -qw net.ipv6.conf.all.forwarding=1");
        if let Some(d) = opts.delay_ms {
            let dir = std::env::temp_dir();
            let ready = dir.join(format!("wlp{}.ready", lab.id));
            let stats = dir.join(format!("wlp{}.stats.json", lab.id));
            let _ = std::fs::remove_file(&ready);
            let fwd = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/forwarder.py");
            let child = lab
                .cmd(
                    'r',
                    &[
                        "python3",
                        fwd,
                        "--a",
                        &lab.link("fa"),
                        "--b",
                        &lab.link("fb"),
                        "--delay-ms",
                        &d.to_string(),
                        "--match",
                        "ip",
                        "--stats",
                        stats.to_str().unwrap(),
                        "--ready",
                        ready.to_str().unwrap(),
                        "--max-seconds",
                        "60",
                    ],
                )
                .stdout(Stdio::null())
                .spawn()
                .expect("forwarder");
            lab.children.push(child);
            lab.stats_file = Some(stats.to_string_lossy().into_owned());
            let t = Instant::now();
            while !ready.exists() {
                assert!(
                    t.elapsed() < Duration::from_secs(10),
                    "forwarder did not start"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = std::fs::remove_file(&ready);
        }
        lab
    }

    /// Starts a reflector in the reflector namespace and waits until it listens.
    fn reflector(&mut self, listen: &str) {
        let mut child = self
            .cmd(
                'f',
                &[
                    BIN,
                    "probe",
                    "reflect",
                    "--listen",
                    listen,
                    "--duration",
                    "60s",
                ],
            )
            .stderr(Stdio::piped())
            .spawn()
            .expect("reflector");
        let mut line = String::new();
        let mut rd = BufReader::new(child.stderr.take().unwrap());
        rd.read_line(&mut line).unwrap();
        // Keep draining its log so it never writes into a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut rd, &mut std::io::sink()));
        assert!(line.contains("listening on udp"), "reflector: {line}");
        self.children.push(child);
    }

    fn iptables(&self, rule: &[&str]) {
        let mut args = vec!["iptables", "-w", "-A", "FORWARD"];
        args.extend_from_slice(rule);
        self.must('r', &args);
    }

    /// Packet counters of the FORWARD rules, in order.
    fn forward_counts(&self) -> Vec<u64> {
        self.must('r', &["iptables", "-w", "-nvxL", "FORWARD"])
            .lines()
            .skip(2)
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect()
    }

    /// Runs the binary in the sender namespace with `args`, bounded in time.
    fn wirelens(&self, ns: char, args: &[&str]) -> (Output, Duration) {
        let mut full = vec![BIN];
        full.extend_from_slice(args);
        let t = Instant::now();
        let out = run(&mut self.cmd(ns, &full));
        (out, t.elapsed())
    }

    fn stop_forwarder(&mut self) -> Option<Value> {
        let path = self.stats_file.take()?;
        for c in &mut self.children {
            // SIGTERM (the forwarder writes its stats on it), by pid.
            let _ = Command::new("kill").arg(c.id().to_string()).status();
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if let Ok(s) = std::fs::read_to_string(&path) {
                if let Ok(v) = serde_json::from_str(&s) {
                    let _ = std::fs::remove_file(&path);
                    return Some(v);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        if let Some(p) = &self.stats_file {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "wirelens failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn u(v: &Value, path: &str) -> u64 {
    v.pointer(path)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{path} missing in {v}"))
}

/// 10 % loss each way on measurement probes (228-byte IP packets; the small
/// hello/flush anchors pass), 10 ms delay each way. The reported per-direction
/// loss must equal iptables' counters exactly; RTT p50 within [20, 30] ms and
/// never below 20 ms; then the NIC counters of the sender's interface.
#[test]
fn probe_loss_split_and_rtt() {
    if skip("probe_loss_split_and_rtt") {
        return;
    }
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let mut lab = Lab::new(LabOpts {
        delay_ms: Some(10),
        ..LabOpts::default()
    });
    let (r0, r1) = (lab.link("r0"), lab.link("r1"));
    let stat = [
        "-m",
        "statistic",
        "--mode",
        "random",
        "--probability",
        "0.1",
        "-j",
        "DROP",
    ];
    let mut up = vec![
        "-i", &r0, "-p", "udp", "--dport", "862", "-m", "length", "--length", "228",
    ];
    up.extend_from_slice(&stat);
    let mut down = vec![
        "-i", &r1, "-p", "udp", "--sport", "862", "-m", "length", "--length", "228",
    ];
    down.extend_from_slice(&stat);
    lab.iptables(&up);
    lab.iptables(&down);
    lab.reflector("198.18.2.2:862");
    let (out, took) = lab.wirelens(
        's',
        &[
            "probe",
            "send",
            "198.18.2.2",
            "--interval",
            "10ms",
            "--count",
            "400",
            "--size",
            "200",
            "--format",
            "json",
        ],
    );
    let v = json(&out);
    let counts = lab.forward_counts();
    let fwd = lab.stop_forwarder();
    let s = &v["summary"];
    eprintln!("summary: {s}\niptables drops (up, down): {counts:?}\nforwarder: {fwd:?}\nrun took {took:?}");
    if let Some(f) = &fwd {
        assert_eq!(
            f["socket_drops"], 0,
            "the forwarder lost frames itself: {f}"
        );
    }
    assert_eq!(u(s, "/sent"), 400);
    assert_eq!(s["loss_split"], "exact");
    assert_eq!(u(s, "/lost_up"), counts[0], "upstream loss vs iptables");
    assert_eq!(u(s, "/lost_down"), counts[1], "downstream loss vs iptables");
    assert_eq!(u(s, "/lost"), counts[0] + counts[1]);
    assert!(
        counts[0] > 10 && counts[1] > 10,
        "loss was injected: {counts:?}"
    );
    assert_eq!(u(s, "/duplicates"), 0);
    assert_eq!(u(s, "/malformed"), 0);
    assert_eq!(u(s, "/hops_up"), 1, "one router");
    // The forwarder never sends early: 10 ms each way.
    let min = u(s, "/rtt/min_ns");
    let p50 = u(s, "/rtt/p50_ns");
    assert!(min >= 19_900_000, "rtt min {min} ns < 20 ms");
    assert!(
        (20_000_000..=30_000_000).contains(&p50),
        "rtt p50 {p50} ns not in [20, 30] ms"
    );
    // The intervals cover every probe.
    let ivs = v["intervals"].as_array().unwrap();
    assert!(ivs.len() >= 4, "{} intervals", ivs.len());
    assert_eq!(ivs.iter().map(|i| u(i, "/sent")).sum::<u64>(), 400);
    assert!(took < Duration::from_secs(12), "send took {took:?}");

    // NIC counters of the sender's interface, through the CLI.
    let s0 = lab.link("s0");
    let (out, _) = lab.wirelens('s', &["probe", "nic", &s0, "--format", "json"]);
    let nic = json(&out);
    let find = |src: &str, name: &str| {
        nic["counters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["source"] == src && c["name"] == name)
            .cloned()
    };
    let tx = find("kernel", "tx_packets").expect("tx_packets");
    assert!(tx["value"].as_u64().unwrap() >= 400, "{tx}");
    assert!(
        find("driver", "peer_ifindex").is_some(),
        "veth ethtool stats: {nic}"
    );
    let q = find("driver", "rx_queue_0_xdp_packets").expect("per-queue veth counter");
    assert_eq!(q["queue"]["dir"], "rx");
    assert_eq!(q["queue"]["index"], 0);
    eprintln!("probe_loss_split_and_rtt: {:?}", t0.elapsed());
}

/// A router whose egress MTU is 1280 answers with ICMP frag-needed /
/// packet-too-big: path MTU 1280, verdict "ptb", no black hole (v4 and v6).
#[test]
fn probe_pmtu_ptb() {
    if skip("probe_pmtu_ptb") {
        return;
    }
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let mut lab = Lab::new(LabOpts {
        mtu_r1: Some(1280),
        ..LabOpts::default()
    });
    lab.reflector("[::]:862");
    for target in ["198.18.2.2", "[2001:db8:2::2]:862"] {
        let (out, took) = lab.wirelens('s', &["probe", "pmtu", target, "--format", "json"]);
        let v = json(&out);
        eprintln!("{target}: {v} ({took:?})");
        assert_eq!(u(&v, "/path_mtu"), 1280, "{v}");
        assert_eq!(v["verdict"], "ptb");
        assert_eq!(v["black_hole"], false);
        assert_eq!(u(&v, "/ptb_mtu"), 1280);
        let from = v["ptb_from"].as_str().unwrap_or("");
        assert!(
            from == "198.18.1.1" || from == "2001:db8:1::1",
            "ICMP from the router: {v}"
        );
        assert!(took < Duration::from_secs(10));
    }
    // The table form names the cause.
    let (out, _) = lab.wirelens('s', &["probe", "pmtu", "198.18.2.2"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("path MTU to 198.18.2.2:862: 1280"), "{text}");
    assert!(text.contains("packet-too-big"), "{text}");
    eprintln!("probe_pmtu_ptb: {:?}", t0.elapsed());
}

/// A router that silently drops IP packets longer than 1400 bytes (iptables
/// `-m length`, no ICMP): path MTU 1400 and a black hole.
#[test]
fn probe_pmtu_black_hole() {
    if skip("probe_pmtu_black_hole") {
        return;
    }
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let mut lab = Lab::new(LabOpts::default());
    let r0 = lab.link("r0");
    lab.iptables(&[
        "-i",
        &r0,
        "-m",
        "length",
        "--length",
        "1401:65535",
        "-j",
        "DROP",
    ]);
    lab.reflector("198.18.2.2:862");
    let (out, took) = lab.wirelens('s', &["probe", "pmtu", "198.18.2.2", "--format", "json"]);
    let v = json(&out);
    eprintln!("{v} ({took:?})");
    assert_eq!(u(&v, "/path_mtu"), 1400, "{v}");
    assert_eq!(v["verdict"], "black_hole");
    assert_eq!(v["black_hole"], true);
    assert!(v["ptb_mtu"].is_null());
    assert!(
        lab.forward_counts()[0] > 0,
        "the router dropped large probes"
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
    eprintln!("probe_pmtu_black_hole: {:?}", t0.elapsed());
}
