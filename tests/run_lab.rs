//! Root-only lab tests of `wirelens run` (feature `live`): the daemon on a
//! SPAN port, against `wirelens analyze` of a tcpdump capture of the same
//! port, on real TCP from the Linux stack.
//!
//! Topology (per test; every name starts with `wlr<pid><tag>`, addresses
//! from 198.18.0.0/15 only inside the namespaces, IPv6 off):
//!
//! ```text
//!   ns ..c              ns ..r (router, IP forwarding)            ns ..s
//!   [..c]---veth---[..rc]  FORWARD: iptables statistic drops  [..rs]---veth---[..s]
//!   198.18.1.2       |  198.18.1.1                    198.18.2.1            198.18.2.2
//!                    | tc clsact on ..rc, ingress and egress:
//!                    |   u32 match u32 0 0 action mirred egress mirror dev ..sa
//!                  [..sa]---SPAN veth (Q queues)---[..sb]  ns ..t: `wirelens run --iface ..sb`
//!                  tcpdump -Q out on ..sa: the reference capture
//! ```
//!
//! The tap (rc) sees client -> server data before the router's FORWARD
//! chain and server -> client data after it, so the drops of client data
//! (`-i rc`) are loss after the tap (`retrans_seen`) and the drops of server
//! data (`-i rs`) loss before it (`gaps`, `hole_fill`). The path has no added
//! delay (RTT ~0.1 ms): enough for counters, which do not depend on time.
//!
//! Multi-queue: veth puts a frame on the peer's rx queue of the sender's tx
//! queue, which the kernel picks from the skb's hash; a locally generated
//! skb carries its socket's random hash, different for the client's and the
//! server's socket, so the two directions of one connection would land on
//! different queues (a NIC without symmetric RSS). A 3-instruction tc BPF
//! program on the SPAN sender clears the hash (`bpf_set_hash_invalid`); the
//! kernel then recomputes it from the flow dissector, which orders the
//! addresses and ports: symmetric, as symmetric RSS is on a real NIC.
//!
//! Teardown is a Drop guard: kill our children (by pid), delete the
//! namespaces (and with them every link, filter and XDP program), also when
//! a test fails. Run: `cargo test --test run_lab` as root.
#![cfg(feature = "live")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;
use support::flows::{compare, field, sum_dir};
use support::{metric, sh, sh_out, signal, skip_unless_root, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_wirelens");
const TRAFFIC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/labtraffic.py");
const FORWARDER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/forwarder.py");
const CLIENT: &str = "198.18.1.2";
const SERVER: &str = "198.18.2.2";
const PORT: u16 = 24830;
const HTTP_PORT: u16 = 9640;
const CTRL_PORT: u16 = 7878;

/// One lab at a time: the daemon's workers and the traffic share 2 cores.
static SERIAL: Mutex<()> = Mutex::new(());

macro_rules! require_root {
    ($name:expr) => {
        if skip_unless_root(
            &format!("run_lab::{}", $name),
            "needs root (namespaces, XDP, AF_XDP)",
        ) {
            return;
        }
    };
}

struct Lab {
    id: String,
    queues: u32,
    dir: PathBuf,
    children: Vec<Child>,
}

impl Lab {
    fn ns(&self, n: &str) -> String {
        format!("{}{n}", self.id)
    }

    fn dev(&self, n: &str) -> String {
        format!("{}{n}", self.id)
    }

    fn nsx(&self, ns: &str, args: &[&str]) {
        let ns = self.ns(ns);
        let mut v = vec!["ip", "netns", "exec", &ns];
        v.extend_from_slice(args);
        sh(&v);
    }

    /// Builds the lab; `queues`: rx/tx queues of the SPAN veth pair.
    fn new(tag: char, queues: u32) -> Lab {
        Lab::build(tag, queues, false)
    }

    /// `delayed`: the router reaches the server through the lab forwarder
    /// (`scripts/forwarder.py`, an impairing L2 wire; no netem here):
    /// `[rs]--veth--[fa] forwarder [fb]--veth--[s]`, all of rs, fa, fb in
    /// the router namespace. The tap on rc sees both directions, so its RTT
    /// includes the forwarder's delay both ways. Start it with `forwarder`.
    fn build(tag: char, queues: u32, delayed: bool) -> Lab {
        let id = format!("wlr{}{tag}", std::process::id() % 100_000);
        let dir = std::env::temp_dir().join(&id);
        let lab = Lab {
            id,
            queues,
            dir,
            children: Vec::new(),
        };
        lab.cleanup();
        std::fs::create_dir_all(&lab.dir).expect("lab dir");
        for n in ["c", "r", "s", "t"] {
            let ns = lab.ns(n);
            sh(&["ip", "netns", "add", &ns]);
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            lab.nsx(
                n,
                &[
                    "sysctl",
                    "-qw",
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                ],
            );
        }
        let (c, r, s, t) = (lab.ns("c"), lab.ns("r"), lab.ns("s"), lab.ns("t"));
        let q = queues.to_string();
        sh(&[
            "ip",
            "link",
            "add",
            &lab.dev("c"),
            "netns",
            &c,
            "type",
            "veth",
            "peer",
            "name",
            &lab.dev("rc"),
            "netns",
            &r,
        ]);
        let s_peer = if delayed { "fb" } else { "rs" };
        sh(&[
            "ip",
            "link",
            "add",
            &lab.dev("s"),
            "netns",
            &s,
            "type",
            "veth",
            "peer",
            "name",
            &lab.dev(s_peer),
            "netns",
            &r,
        ]);
        if delayed {
            sh(&[
                "ip",
                "link",
                "add",
                &lab.dev("rs"),
                "netns",
                &r,
                "type",
                "veth",
                "peer",
                "name",
                &lab.dev("fa"),
                "netns",
                &r,
            ]);
        }
        sh(&[
            "ip",
            "link",
            "add",
            &lab.dev("sa"),
            "netns",
            &r,
            "numrxqueues",
            &q,
            "numtxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            &lab.dev("sb"),
            "netns",
            &t,
            "numrxqueues",
            &q,
            "numtxqueues",
            &q,
        ]);
        let mut links = vec![
            ("c", "c"),
            ("r", "rc"),
            ("r", "rs"),
            ("s", "s"),
            ("r", "sa"),
            ("t", "sb"),
        ];
        if delayed {
            links.extend([("r", "fa"), ("r", "fb")]);
        }
        for (n, d) in links {
            let dev = lab.dev(d);
            // Real <= MTU frames on the wire and at the tap.
            let _ = Command::new("ip")
                .args(["netns", "exec", &lab.ns(n), "ethtool", "-K", &dev])
                .args([
                    "tso", "off", "gso", "off", "gro", "off", "tx", "off", "rx", "off",
                ])
                .output();
            let k = sh_out(&["ip", "netns", "exec", &lab.ns(n), "ethtool", "-k", &dev]);
            assert!(
                k.contains("tcp-segmentation-offload: off")
                    && k.contains("generic-segmentation-offload: off"),
                "{dev}: could not turn offloads off"
            );
            if d != "sa" && d != "sb" {
                // The host reorders veth traffic across CPUs otherwise.
                lab.nsx(
                    n,
                    &[
                        "sh",
                        "-c",
                        &format!("echo 1 > /sys/class/net/{dev}/queues/rx-0/rps_cpus"),
                    ],
                );
            }
            sh(&["ip", "-n", &lab.ns(n), "link", "set", &dev, "up"]);
        }
        sh(&[
            "ip",
            "-n",
            &c,
            "addr",
            "add",
            "198.18.1.2/24",
            "dev",
            &lab.dev("c"),
        ]);
        sh(&[
            "ip",
            "-n",
            &r,
            "addr",
            "add",
            "198.18.1.1/24",
            "dev",
            &lab.dev("rc"),
        ]);
        sh(&[
            "ip",
            "-n",
            &r,
            "addr",
            "add",
            "198.18.2.1/24",
            "dev",
            &lab.dev("rs"),
        ]);
        sh(&[
            "ip",
            "-n",
            &s,
            "addr",
            "add",
            "198.18.2.2/24",
            "dev",
            &lab.dev("s"),
        ]);
        // Routes only towards the other lab subnet: nothing leaves the lab.
        sh(&[
            "ip",
            "-n",
            &c,
            "route",
            "add",
            "198.18.2.0/24",
            "via",
            "198.18.1.1",
        ]);
        sh(&[
            "ip",
            "-n",
            &s,
            "route",
            "add",
            "198.18.1.0/24",
            "via",
            "198.18.2.1",
        ]);
        lab.nsx("r", &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        // The SPAN copy: everything in and out of rc.
        let rc = lab.dev("rc");
        let sa = lab.dev("sa");
        lab.nsx("r", &["tc", "qdisc", "add", "dev", &rc, "clsact"]);
        for dir in ["ingress", "egress"] {
            lab.nsx(
                "r",
                &[
                    "tc", "filter", "add", "dev", &rc, dir, "protocol", "all", "u32", "match",
                    "u32", "0", "0", "action", "mirred", "egress", "mirror", "dev", &sa,
                ],
            );
        }
        if queues > 1 {
            lab.symmetric_queues();
        }
        lab
    }

    /// The tc BPF program that makes the SPAN veth's queue choice symmetric
    /// (see the module documentation).
    fn symmetric_queues(&self) {
        let src = self.dir.join("rehash.c");
        let obj = self.dir.join("rehash.o");
        std::fs::write(
            &src,
            "#include <linux/bpf.h>\n\
             #define SEC(n) __attribute__((section(n), used))\n\
             static long (*set_hash_invalid)(struct __sk_buff *) = (void *)BPF_FUNC_set_hash_invalid;\n\
             SEC(\"tc\") int rehash(struct __sk_buff *skb) { set_hash_invalid(skb); return 0; }\n\
             char _license[] SEC(\"license\") = \"GPL\";\n",
        )
        .unwrap();
        sh(&[
            "clang",
            "-O2",
            "-target",
            "bpf",
            "-I/usr/include/x86_64-linux-gnu",
            "-c",
            src.to_str().unwrap(),
            "-o",
            obj.to_str().unwrap(),
        ]);
        let sa = self.dev("sa");
        self.nsx("r", &["tc", "qdisc", "add", "dev", &sa, "clsact"]);
        self.nsx(
            "r",
            &[
                "tc",
                "filter",
                "add",
                "dev",
                &sa,
                "egress",
                "bpf",
                "da",
                "obj",
                obj.to_str().unwrap(),
                "sec",
                "tc",
            ],
        );
    }

    /// Loss in the router: `after_tap` of the client's packets (after rc's
    /// ingress tap), `before_tap` of the server's (before rc's egress tap).
    fn loss(&self, after_tap: f64, before_tap: f64) {
        for (dev, p) in [(self.dev("rc"), after_tap), (self.dev("rs"), before_tap)] {
            if p > 0.0 {
                self.nsx(
                    "r",
                    &[
                        "iptables",
                        "-A",
                        "FORWARD",
                        "-i",
                        &dev,
                        "-p",
                        "tcp",
                        "-m",
                        "statistic",
                        "--mode",
                        "random",
                        "--probability",
                        &p.to_string(),
                        "-j",
                        "DROP",
                    ],
                );
            }
        }
    }

    /// Starts a command in namespace `ns`; stdout/stderr to files in the lab dir.
    fn spawn(&mut self, ns: &str, name: &str, args: &[&str]) -> usize {
        let out = std::fs::File::create(self.dir.join(format!("{name}.out"))).unwrap();
        let err = std::fs::File::create(self.dir.join(format!("{name}.err"))).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(ns)])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {args:?}: {e}"));
        self.children.push(child);
        self.children.len() - 1
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.err"))).unwrap_or_default()
    }

    /// Starts `wirelens run` in ns t on the SPAN port; waits for /healthz.
    fn start_daemon(&mut self, name: &str, extra: &[&str]) -> usize {
        let sb = self.dev("sb");
        let listen = format!("127.0.0.1:{HTTP_PORT}");
        let mut args = vec![
            BIN,
            "run",
            "--iface",
            &sb,
            "--listen",
            &listen,
            "--tcp-idle",
            "3600",
            "--udp-idle",
            "300",
        ];
        args.extend_from_slice(extra);
        let i = self.spawn("t", name, &args);
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some((200, _)) = self.http("/healthz") {
                return i;
            }
            if let Ok(Some(st)) = self.children[i].try_wait() {
                panic!(
                    "wirelens run exited ({st}) before it was healthy:\n{}",
                    self.log(name)
                );
            }
            assert!(
                Instant::now() < end,
                "wirelens run not healthy after 60 s:\n{}",
                self.log(name)
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// GET `path` from the daemon (inside ns t): (status, body).
    fn http(&self, path: &str) -> Option<(u16, String)> {
        self.http_at(HTTP_PORT, path)
    }

    /// GET `path` from 127.0.0.1:`port` inside ns t: (status, body).
    fn http_at(&self, port: u16, path: &str) -> Option<(u16, String)> {
        support::http_get_in(&self.ns("t"), &format!("127.0.0.1:{port}"), path)
    }

    /// tcpdump of what leaves sa (the SPAN sender): the reference capture.
    /// Returns once it listens.
    fn start_tcpdump(&mut self, ns: &str, dev: &str, file: &Path, dir: &str) -> usize {
        let name = format!("tcpdump-{dev}");
        let i = self.spawn(
            ns,
            &name,
            &[
                "tcpdump",
                "-i",
                dev,
                "-Q",
                dir,
                "-w",
                file.to_str().unwrap(),
                "-U",
                "--immediate-mode",
                "-n",
                "-s",
                "262144",
                "-B",
                "16384",
            ],
        );
        let end = Instant::now() + Duration::from_secs(20);
        while !self.log(&name).contains("listening on") {
            assert!(
                Instant::now() < end,
                "tcpdump did not start: {}",
                self.log(&name)
            );
            thread::sleep(Duration::from_millis(50));
        }
        i
    }

    /// Stops tcpdump; returns its "packets dropped by kernel".
    fn stop_tcpdump(&mut self, i: usize, dev: &str) -> u64 {
        signal(&self.children[i], "-INT");
        wait_for(&mut self.children[i], Duration::from_secs(10)).expect("tcpdump exits on SIGINT");
        let log = self.log(&format!("tcpdump-{dev}"));
        log.lines()
            .find(|l| l.contains("dropped by kernel"))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no tcpdump summary in: {log}"))
    }

    /// The lab's TCP server (scripts/labtraffic.py) on SERVER:PORT in ns s
    /// with `args` added; returns once it listens.
    fn start_server(&mut self, args: &[&str]) -> usize {
        let ready = self.dir.join("server.ready");
        let _ = std::fs::remove_file(&ready);
        let port = PORT.to_string();
        let mut v = vec![
            "python3",
            TRAFFIC,
            "server",
            "--bind",
            SERVER,
            "--port",
            &port,
            "--ready",
            ready.to_str().unwrap(),
        ];
        v.extend_from_slice(args);
        let srv = self.spawn("s", "server", &v);
        let end = Instant::now() + Duration::from_secs(20);
        while !ready.exists() {
            assert!(
                Instant::now() < end,
                "server not ready: {}",
                self.log("server")
            );
            thread::sleep(Duration::from_millis(20));
        }
        srv
    }

    /// `count` TCP connections client -> server: `send` bytes up, `reply`
    /// bytes down, 2 at a time, cubic, paced; bounded by 40 s.
    fn traffic(&mut self, count: usize, send: usize, reply: usize) {
        let (c, rp, cnt) = (send.to_string(), reply.to_string(), count.to_string());
        let port = PORT.to_string();
        let srv = self.start_server(&[
            "--count",
            &cnt,
            "--reply",
            &rp,
            "--pace",
            "3000000",
            "--timeout",
            "40",
        ]);
        let cli = self.spawn(
            "c",
            "client",
            &[
                "python3",
                TRAFFIC,
                "client",
                "--connect",
                SERVER,
                "--port",
                &port,
                "--count",
                &cnt,
                "--parallel",
                "2",
                "--send",
                &c,
                "--pace",
                "3000000",
                "--timeout",
                "40",
            ],
        );
        let st = wait_for(&mut self.children[cli], Duration::from_secs(50)).expect("client ends");
        assert!(st.success(), "client failed: {}", self.log("client"));
        let st = wait_for(&mut self.children[srv], Duration::from_secs(50)).expect("server ends");
        assert!(st.success(), "server failed: {}", self.log("server"));
    }

    /// Starts the forwarder between fa and fb (a `build(.., true)` lab)
    /// with `args` (delay, step, loss: see scripts/forwarder.py); returns
    /// once both its sockets are bound.
    fn forwarder(&mut self, args: &[&str]) -> usize {
        let ready = self.dir.join("fwd.ready");
        let stats = self.dir.join("fwd.json");
        let (fa, fb) = (self.dev("fa"), self.dev("fb"));
        let mut v = vec![
            "python3",
            FORWARDER,
            "--a",
            &fa,
            "--b",
            &fb,
            "--stats",
            stats.to_str().unwrap(),
            "--ready",
            ready.to_str().unwrap(),
            "--max-seconds",
            "240",
            "--wait-up",
            "30",
        ];
        v.extend_from_slice(args);
        let i = self.spawn("r", "forwarder", &v);
        let end = Instant::now() + Duration::from_secs(30);
        while !ready.exists() {
            assert!(
                Instant::now() < end,
                "forwarder not ready: {}",
                self.log("forwarder")
            );
            thread::sleep(Duration::from_millis(20));
        }
        i
    }

    /// Stops the forwarder; returns its statistics (see forwarder.py).
    fn stop_forwarder(&mut self, i: usize) -> Value {
        signal(&self.children[i], "-TERM");
        wait_for(&mut self.children[i], Duration::from_secs(10)).expect("forwarder exits");
        let f = self.dir.join("fwd.json");
        serde_json::from_str(&std::fs::read_to_string(&f).unwrap_or_default())
            .unwrap_or_else(|e| panic!("forwarder stats: {e}: {}", self.log("forwarder")))
    }

    /// `wirelens ctrl serve` in ns t; returns the daemon's push options.
    fn start_ctrl(&mut self) -> Vec<String> {
        let tokens = self.dir.join("tokens");
        std::fs::write(&tokens, "wl-node-1:wl-secret-token-1\n").unwrap();
        let db = self.dir.join("ctrl.db");
        let listen = format!("127.0.0.1:{CTRL_PORT}");
        self.spawn(
            "t",
            "ctrl",
            &[
                BIN,
                "ctrl",
                "serve",
                "--listen",
                &listen,
                "--db",
                db.to_str().unwrap(),
                "--token-file",
                tokens.to_str().unwrap(),
                "--min-baseline",
                "1",
            ],
        );
        let end = Instant::now() + Duration::from_secs(30);
        while !matches!(self.http_at(CTRL_PORT, "/api/v1/nodes"), Some((200, _))) {
            assert!(
                Instant::now() < end,
                "ctrl serve not up: {}",
                self.log("ctrl")
            );
            thread::sleep(Duration::from_millis(100));
        }
        let url = format!("http://127.0.0.1:{CTRL_PORT}");
        vec![
            "--ctrl".into(),
            url,
            "--token-file".into(),
            tokens.to_str().unwrap().into(),
            "--node".into(),
            "wl-node-1".into(),
            "--push-secs".into(),
            "1".into(),
        ]
    }

    /// The control plane's flows of the lab service, by client port.
    fn ctrl_flows(&self) -> BTreeMap<u64, Value> {
        let (st, body) = self
            .http_at(CTRL_PORT, "/api/v1/flows?limit=10000&node=wl-node-1")
            .expect("GET /api/v1/flows");
        assert_eq!(st, 200, "{body}");
        let rows: Vec<Value> = serde_json::from_str(&body).expect("flows JSON");
        let lines: Vec<String> = rows.iter().map(|r| r["flow"].to_string()).collect();
        flows_of(&lines.join("\n"))
    }

    /// Per-queue XDP packet counts of sb (`ethtool -S`).
    fn queue_counts(&self) -> Vec<u64> {
        let s = sh_out(&[
            "ip",
            "netns",
            "exec",
            &self.ns("t"),
            "ethtool",
            "-S",
            &self.dev("sb"),
        ]);
        (0..self.queues)
            .map(|q| {
                let key = format!("rx_queue_{q}_xdp_packets:");
                s.lines()
                    .find_map(|l| l.trim().strip_prefix(&key))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0)
            })
            .collect()
    }

    fn xdp_on_sb(&self) -> bool {
        sh_out(&[
            "ip",
            "-n",
            &self.ns("t"),
            "link",
            "show",
            "dev",
            &self.dev("sb"),
        ])
        .contains("xdp")
    }

    fn cleanup(&self) {
        for n in ["c", "r", "s", "t"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(n)])
                .output();
        }
        // Liveness lock files a SIGKILLed daemon left behind (ours only).
        let suffix = format!("-{}.lock", self.dev("sb"));
        support::remove_lock_files(|f| f.ends_with(&suffix));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if thread::panicking() {
            for name in [
                "daemon",
                "daemon2",
                "tcpdump-",
                "client",
                "server",
                "ctrl",
                "forwarder",
            ] {
                for e in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
                    let f = e.file_name().to_string_lossy().into_owned();
                    if f.starts_with(name) && f.ends_with(".err") {
                        eprintln!(
                            "--- {f}:\n{}",
                            std::fs::read_to_string(e.path()).unwrap_or_default()
                        );
                    }
                }
            }
        }
        self.cleanup();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The lab service's flow records, by client port.
fn flows_of(ndjson: &str) -> BTreeMap<u64, Value> {
    support::flows::flows_of(ndjson, CLIENT, SERVER, PORT)
}

/// The whole comparison on a lab with `queues` SPAN queues.
fn daemon_matches_analyze(tag: char, queues: u32, conns: usize, push: bool) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let mut lab = Lab::new(tag, queues);
    lab.loss(0.02, 0.01);
    let pcap = lab.dir.join("span.pcap");
    let sa = lab.dev("sa");
    let dump = lab.start_tcpdump("r", &sa, &pcap, "out");
    let push_args = if push { lab.start_ctrl() } else { Vec::new() };
    let push_refs: Vec<&str> = push_args.iter().map(String::as_str).collect();
    let daemon = lab.start_daemon("daemon", &push_refs);
    let boot = lab.log("daemon");
    lab.traffic(conns, 600_000, 200_000);
    // Late frames (the last ACKs) into both captures.
    thread::sleep(Duration::from_millis(700));
    let dropped = lab.stop_tcpdump(dump, &sa);
    assert_eq!(
        dropped, 0,
        "tcpdump dropped packets: the reference is incomplete"
    );
    // Let every worker export once more (counters in /metrics lag <= 1 s).
    thread::sleep(Duration::from_millis(1500));
    let (st, body) = lab.http("/flows").expect("GET /flows");
    assert_eq!(st, 200);
    let run = flows_of(&body);
    let (st, metrics) = lab.http("/metrics").expect("GET /metrics");
    assert_eq!(st, 200);
    let per_queue = lab.queue_counts();

    let out = Command::new(BIN)
        .args(["analyze", pcap.to_str().unwrap(), "--format", "ndjson"])
        .output()
        .expect("wirelens analyze");
    assert!(
        out.status.success(),
        "analyze: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference = flows_of(&String::from_utf8_lossy(&out.stdout));

    // An orderly stop: exit 0 and the program detached.
    signal(&lab.children[daemon], "-TERM");
    let st = wait_for(&mut lab.children[daemon], Duration::from_secs(20))
        .expect("daemon stops on SIGTERM");
    let log = lab.log("daemon");
    assert!(st.success(), "wirelens run exit status {st}:\n{log}");
    assert!(log.contains("XDP detached"), "{log}");
    assert!(!lab.xdp_on_sb(), "XDP still attached after SIGTERM");
    let pushed = if push { Some(lab.ctrl_flows()) } else { None };

    eprintln!("run_lab[{queues}q]: daemon start-up:\n{boot}");
    eprintln!("run_lab[{queues}q]: per-queue XDP packets (ethtool -S): {per_queue:?}");
    let (bad, notes) = compare(&run, &reference);
    eprintln!(
        "run_lab[{queues}q]: {} flows; c2s packets {} retrans_seen {} ; s2c packets {} gaps {} hole_fill {}; \
         time-based classifications differing: {}",
        run.len(),
        sum_dir(&reference, "c2s", "packets"),
        sum_dir(&reference, "c2s", "retrans_seen"),
        sum_dir(&reference, "s2c", "packets"),
        sum_dir(&reference, "s2c", "gaps"),
        sum_dir(&reference, "s2c", "hole_fill"),
        if notes.is_empty() { "none".to_string() } else { notes.join("; ") }
    );
    assert!(
        bad.is_empty(),
        "/flows differs from analyze of the capture:\n{}",
        bad.join("\n")
    );
    assert_eq!(run.len(), conns, "one record per connection");
    assert!(
        sum_dir(&reference, "c2s", "retrans_seen") > 0,
        "loss after the tap shows"
    );
    assert!(
        sum_dir(&reference, "s2c", "gaps") > 0,
        "loss before the tap shows"
    );

    // /metrics: the service aggregate is the sum of its flows.
    let svc = format!("{{service=\"{SERVER}:{PORT}\",proto=\"tcp\"");
    let want = |dir: &str, f: &str| sum_dir(&run, dir, f) as f64;
    for (name, dir, f) in [
        (
            "wirelens_service_packets_total",
            "to_server",
            ("c2s", "packets"),
        ),
        (
            "wirelens_service_packets_total",
            "to_client",
            ("s2c", "packets"),
        ),
        (
            "wirelens_service_bytes_total",
            "to_server",
            ("c2s", "bytes"),
        ),
        (
            "wirelens_service_retrans_seen_total",
            "to_server",
            ("c2s", "retrans_seen"),
        ),
        ("wirelens_service_gaps_total", "to_client", ("s2c", "gaps")),
    ] {
        let sample = format!("{name}{svc},direction=\"{dir}\"}}");
        assert_eq!(
            metric(&metrics, &sample),
            Some(want(f.0, f.1)),
            "{sample}\n{metrics}"
        );
    }
    let attempts = format!("wirelens_service_connection_attempts_total{svc}}}");
    assert_eq!(
        metric(&metrics, &attempts),
        Some(conns as f64),
        "{attempts}"
    );
    let rtt_n = format!("wirelens_service_rtt_seconds_count{svc},half=\"server\"}}");
    assert_eq!(
        metric(&metrics, &rtt_n),
        Some(want("c2s", "rtt.n")),
        "{rtt_n}"
    );
    let redirected = metric(&metrics, "wirelens_xdp_redirected_total").unwrap_or(0.0);
    assert!(redirected > 0.0, "no redirected frames in /metrics");
    for q in 0..queues {
        let frames = metric(
            &metrics,
            &format!("wirelens_queue_frames_total{{queue=\"{q}\"}}"),
        );
        assert!(
            frames.unwrap_or(0.0) > 0.0,
            "queue {q} read no frame: {frames:?}\n{metrics}"
        );
        assert!(
            per_queue[q as usize] > 0,
            "queue {q} got no frame (ethtool -S): {per_queue:?}"
        );
        let full = metric(
            &metrics,
            &format!("wirelens_handoff_ring_full_total{{queue=\"{q}\"}}"),
        );
        assert_eq!(full, Some(0.0), "hand-off drops on queue {q}");
        let ring = metric(
            &metrics,
            &format!("wirelens_xsk_rx_ring_full_total{{queue=\"{q}\"}}"),
        );
        assert_eq!(ring, Some(0.0), "AF_XDP ring-full drops on queue {q}");
    }
    eprintln!(
        "run_lab[{queues}q]: /metrics sample:\n{}",
        metrics
            .lines()
            .filter(|l| l.starts_with("wirelens_xdp_")
                || l.starts_with("wirelens_queue_frames")
                || l.starts_with("wirelens_handoff_")
                || l.starts_with("wirelens_node_info")
                || (l.starts_with("wirelens_service_") && !l.contains("_bucket")))
            .collect::<Vec<_>>()
            .join("\n")
    );
    if let Some(pushed) = pushed {
        // The control plane's merge of the pushed deltas is the whole flow.
        let mut bad = Vec::new();
        if pushed.keys().collect::<Vec<_>>() != run.keys().collect::<Vec<_>>() {
            bad.push(format!(
                "flows differ: ctrl {:?} run {:?}",
                pushed.keys(),
                run.keys()
            ));
        }
        for (port, r) in &run {
            let Some(p) = pushed.get(port) else { continue };
            for f in [
                "c2s.packets",
                "c2s.bytes",
                "c2s.retrans_seen",
                "c2s.syn",
                "s2c.packets",
                "s2c.gaps",
                "s2c.fin",
            ] {
                if field(p, f) != field(r, f) {
                    bad.push(format!(
                        "client port {port} {f}: ctrl {} run {}",
                        field(p, f),
                        field(r, f)
                    ));
                }
            }
        }
        assert!(
            bad.is_empty(),
            "pushed deltas do not add up:\n{}\n{}",
            bad.join("\n"),
            lab.log("ctrl")
        );
        eprintln!("run_lab[{queues}q]: the control plane's flows (merged deltas) equal /flows");
    }
    eprintln!(
        "run_lab[{queues}q]: passed in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

/// One SPAN queue, one worker: /flows equals analyze of the capture, and
/// the deltas pushed to a control plane add up to the same flows.
#[test]
fn run_matches_analyze_one_queue() {
    require_root!("run_matches_analyze_one_queue");
    daemon_matches_analyze('a', 1, 6, true);
}

/// Two SPAN queues, two workers (hand-offs between them): the same records.
#[test]
fn run_matches_analyze_two_queues() {
    require_root!("run_matches_analyze_two_queues");
    daemon_matches_analyze('b', 2, 12, false);
}

/// Refuses a host interface; after SIGKILL the stale program passes traffic
/// to the stack (fail-open); a new start replaces it; SIGTERM detaches.
#[test]
fn run_fail_open_and_stale_program() {
    require_root!("run_fail_open_and_stale_program");
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let mut lab = Lab::new('k', 1);

    // The client's interface carries its address and route: refused.
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.ns("c"),
            BIN,
            "run",
            "--iface",
            &lab.dev("c"),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("refusing to attach XDP") && err.contains("--force"),
        "{err}"
    );
    assert!(err.contains("198.18.1.2"), "says why: {err}");

    let sb = lab.dev("sb");
    let seen = lab.dir.join("stack.pcap");
    let daemon = lab.start_daemon("daemon", &[]);
    // What reaches the stack of sb while the daemon takes the traffic.
    let dump = lab.start_tcpdump("t", &sb, &seen, "in");
    lab.traffic(2, 100_000, 10_000);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(lab.stop_tcpdump(dump, &sb), 0);
    let taken = count_tcp(&seen);
    assert_eq!(
        taken, 0,
        "with the daemon up, AF_XDP takes the lab's TCP (the stack saw {taken})"
    );

    signal(&lab.children[daemon], "-KILL");
    wait_for(&mut lab.children[daemon], Duration::from_secs(10)).expect("SIGKILL ends it");
    assert!(lab.xdp_on_sb(), "the program outlives a SIGKILLed daemon");
    let dump = lab.start_tcpdump("t", &sb, &seen, "in");
    lab.traffic(2, 100_000, 10_000);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(lab.stop_tcpdump(dump, &sb), 0);
    let passed = count_tcp(&seen);
    assert!(
        passed > 100,
        "fail-open: the stack of sb saw {passed} TCP packets after the kill"
    );

    let again = lab.start_daemon("daemon2", &["--poll", "wait"]);
    let log = lab.log("daemon2");
    assert!(log.contains("replacing stale wirelens program"), "{log}");
    signal(&lab.children[again], "-INT");
    let st = wait_for(&mut lab.children[again], Duration::from_secs(20)).expect("stops on SIGINT");
    assert!(st.success(), "exit status {st}: {}", lab.log("daemon2"));
    assert!(!lab.xdp_on_sb(), "detached after SIGINT");
    eprintln!(
        "run_lab[fail-open]: stack saw {taken} TCP packets with the daemon up, {passed} after SIGKILL; \
         restart replaced the stale program; passed in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

/// TCP packets in a capture (via `wirelens analyze`).
/// Seconds of steady RTT before the forwarder's delay step.
const STEP_AFTER_S: u64 = 25;
/// Seconds of upload in all (the step, then 20 s at the new RTT).
const UPLOAD_S: u64 = 45;
/// The upload's pace, bytes/s (SO_MAX_PACING_RATE): ~28 segments/s.
const UPLOAD_PACE: u64 = 40_000;

/// The RTT-spike alert on a delay step made in the lab: a live `wirelens
/// run --ctrl` taps a path whose RTT steps from 40 ms to 160 ms after 25 s
/// of steady traffic (the forwarder's one-way delay 20 -> 80 ms). The
/// control plane (`--min-baseline 1`) must stay quiet through the steady
/// part (checked just before the step, with >= 1 full 10 s bucket of
/// baseline) and then fire
/// `rtt_spike` for the service, naming the node and a `since` at the step.
#[test]
fn run_ctrl_rtt_spike_on_delay_step() {
    require_root!("run_ctrl_rtt_spike_on_delay_step");
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let mut lab = Lab::build('d', 1, true);
    let step_s = STEP_AFTER_S.to_string();
    let fwd = lab.forwarder(&[
        "--delay-ms",
        "20",
        "--step-after-seconds",
        &step_s,
        "--step-delay-ms",
        "80",
    ]);
    let push_args = lab.start_ctrl();
    let push_refs: Vec<&str> = push_args.iter().map(String::as_str).collect();
    let daemon = lab.start_daemon("daemon", &push_refs);

    // One long paced upload: the forwarder's step clock starts at its
    // first data segment.
    let port = PORT.to_string();
    let (pace, timeout) = (UPLOAD_PACE.to_string(), (UPLOAD_S + 60).to_string());
    let send = (UPLOAD_PACE * UPLOAD_S).to_string();
    let srv = lab.start_server(&["--count", "1", "--timeout", &timeout]);
    let started = Instant::now();
    let cli = lab.spawn(
        "c",
        "client",
        &[
            "python3",
            TRAFFIC,
            "client",
            "--connect",
            SERVER,
            "--port",
            &port,
            "--send",
            &send,
            "--pace",
            &pace,
            "--cc",
            "cubic",
            "--timeout",
            &timeout,
        ],
    );
    let service = format!("{SERVER}:{PORT}/tcp");
    let alerts = |lab: &Lab| -> Vec<Value> {
        let (st, body) = lab
            .http_at(CTRL_PORT, &format!("/api/v1/alerts?service={service}"))
            .expect("GET /api/v1/alerts");
        assert_eq!(st, 200, "{body}");
        serde_json::from_str(&body).expect("alerts JSON")
    };
    let spikes = |v: &[Value]| -> Vec<Value> {
        v.iter()
            .filter(|a| a["rule"] == "rtt_spike")
            .cloned()
            .collect()
    };

    // Steady part: 3 s before the step the control plane has the baseline
    // and must not fire.
    thread::sleep(Duration::from_secs(STEP_AFTER_S - 3).saturating_sub(started.elapsed()));
    let (st, body) = lab
        .http_at(CTRL_PORT, "/api/v1/services")
        .expect("GET /api/v1/services");
    assert_eq!(st, 200, "{body}");
    let rows: Vec<Value> = serde_json::from_str(&body).expect("services JSON");
    let samples = rows
        .iter()
        .find(|r| r["service"] == service.as_str())
        .and_then(|r| r["rtt_server"]["n"].as_u64())
        .unwrap_or(0);
    assert!(
        samples >= 100,
        "the control plane has {samples} RTT samples for {service} after {} s of traffic: {body}",
        started.elapsed().as_secs()
    );
    let steady = alerts(&lab);
    assert!(
        spikes(&steady).is_empty(),
        "rtt_spike fired on steady traffic (before the step): {steady:#?}"
    );

    let st =
        wait_for(&mut lab.children[cli], Duration::from_secs(UPLOAD_S + 60)).expect("client ends");
    assert!(st.success(), "client failed: {}", lab.log("client"));
    wait_for(&mut lab.children[srv], Duration::from_secs(30)).expect("server ends");
    // Two pushes (1 s apart) carry the last ACKs to the control plane.
    thread::sleep(Duration::from_secs(3));
    let fwd_stats = lab.stop_forwarder(fwd);
    let step_ns = fwd_stats["step"]["at_ns"]
        .as_u64()
        .unwrap_or_else(|| panic!("the forwarder never stepped: {fwd_stats}"));

    let fired = alerts(&lab);
    let spike = spikes(&fired);
    if spike.len() != 1 {
        for q in ["/api/v1/services", "/api/v1/flows?limit=10"] {
            eprintln!("run_lab[delay step]: {q}: {:?}", lab.http_at(CTRL_PORT, q));
        }
        eprintln!("run_lab[delay step]: forwarder {fwd_stats}");
    }
    assert_eq!(
        spike.len(),
        1,
        "one rtt_spike for {service} after the step; got {fired:#?}"
    );
    let a = &spike[0];
    assert_eq!(a["service"], service.as_str(), "{a:#}");
    assert_eq!(a["nodes"], serde_json::json!(["wl-node-1"]), "{a:#}");
    let since = a["since_ns"].as_u64().expect("since_ns");
    const BUCKET: u64 = 10_000_000_000;
    assert!(
        since <= step_ns + BUCKET && since + BUCKET > step_ns,
        "since {since} is not the step's bucket or the next (step at {step_ns}): {a:#}"
    );
    let ev = &a["evidence"];
    let base = ev["baseline_p90_ns"].as_f64().expect("baseline");
    let p90 = ev["max_p90_ns"].as_f64().expect("max_p90");
    // Baseline ~40 ms plus the tap-to-server share of queueing; after the
    // step ~160 ms.
    assert!(
        (38e6..80e6).contains(&base),
        "baseline p90 {:.1} ms is not the 40 ms path: {a:#}",
        base / 1e6
    );
    assert!(
        (150e6..320e6).contains(&p90),
        "spike p90 {:.1} ms is not the 160 ms path: {a:#}",
        p90 / 1e6
    );

    // The operator's view: `wirelens alerts --ctrl URL`.
    let url = format!("http://127.0.0.1:{CTRL_PORT}");
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.ns("t"), BIN, "alerts", "--ctrl", &url])
        .output()
        .expect("wirelens alerts");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("rtt_spike") && table.contains(&service) && table.contains("wl-node-1"),
        "`wirelens alerts` does not show the spike: {table}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    signal(&lab.children[daemon], "-TERM");
    wait_for(&mut lab.children[daemon], Duration::from_secs(20)).expect("daemon stops");
    eprintln!("run_lab[delay step]: steady alerts {steady:?}");
    eprintln!("run_lab[delay step]: {table}");
    eprintln!(
        "run_lab[delay step]: forwarder late_ms {}; passed in {:.1} s",
        fwd_stats["late_ms"],
        t0.elapsed().as_secs_f64()
    );
}

fn count_tcp(pcap: &Path) -> u64 {
    let out = Command::new(BIN)
        .args(["analyze", pcap.to_str().unwrap(), "--format", "ndjson"])
        .output()
        .expect("analyze");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "flow" && v["proto"] == "tcp")
        .map(|v| {
            v["c2s"]["packets"].as_u64().unwrap_or(0) + v["s2c"]["packets"].as_u64().unwrap_or(0)
        })
        .sum()
}
