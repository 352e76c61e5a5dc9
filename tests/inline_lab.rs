//! Root-only lab tests of `wirelens run --inline` (feature `live`): the
//! daemon as a bump in the wire between a client and a server, against
//! `wirelens analyze` of a capture taken on the client side of the box.
//!
//! Topology (per test; every name starts with `wlgw<pid>`, addresses from
//! 198.18.0.0/15 only inside the namespaces, IPv6 off):
//!
//! ```text
//!   ns ..c              ns ..b (the box, no addresses)         ns ..w (wire)        ns ..s
//!   [..c]---veth---[..bc] wirelens run --inline ..bc,..bs [..bs]---[..wb] bridge [..ws]---[..s]
//!   198.18.9.1/24                                                                198.18.9.2/24
//!   tcpdump on ..c: the reference     tc BPF drops on ..ws ingress: server frames lost before
//!                                     the box; iptables INPUT drops in ns s: client packets
//!                                     lost after the box
//! ```
//!
//! One subnet: the box forwards at layer 2, unchanged frames. Offloads are
//! off on the end points, so frames on the wire are <= MTU, as on a real
//! link. The far ends of the box's ports (..c, ..wb) carry a 2-instruction
//! XDP_PASS program: a veth only takes frames redirected to it by XDP in
//! driver mode when its far end has NAPI on (an XDP program or GRO; GRO
//! would merge the frames before the capture sees them).
//!
//! The capture is one veth hop from the box: both see the same frames in
//! the same order per direction, but the two directions interleave
//! differently (an ACK crosses a data segment in flight), so the RTT sample
//! count (`rtt.n`, which pairs data of one direction with ACKs of the
//! other) is reported, not asserted; every other exact counter is.
//!
//! Teardown is a Drop guard: kill our children (by pid), delete the
//! namespaces (and with them every link and XDP program), remove the lock
//! files a SIGKILLed daemon left, also when a test fails. Run:
//! `cargo test --test inline_lab` as root.
#![cfg(feature = "live")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

mod support;
use support::flows::{compare, flows_of, sum_dir};
use support::{metric, sh, sh_out, signal, skip_unless_root, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_wirelens");
const TRAFFIC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/labtraffic.py");
const CLIENT: &str = "198.18.9.1";
const SERVER: &str = "198.18.9.2";
const PORT: u16 = 24900;
const LISTEN: &str = "127.0.0.1:9641";

/// Client, box, wire (a bridge with the lossy port), server.
const NAMESPACES: [&str; 4] = ["c", "b", "w", "s"];

/// One lab at a time: the daemon and the traffic share 2 cores.
static SERIAL: Mutex<()> = Mutex::new(());

macro_rules! require_root {
    ($name:expr) => {
        if skip_unless_root(
            &format!("inline_lab::{}", $name),
            "needs root (namespaces, XDP)",
        ) {
            return;
        }
    };
}

struct Lab {
    id: String,
    dir: PathBuf,
    children: Vec<Child>,
}

impl Lab {
    fn name(&self, n: &str) -> String {
        format!("{}{n}", self.id)
    }

    fn nsx(&self, ns: &str, args: &[&str]) {
        let ns = self.name(ns);
        let mut v = vec!["ip", "netns", "exec", &ns];
        v.extend_from_slice(args);
        sh(&v);
    }

    /// Namespaces c, b, s and the two veth pairs; nothing configured.
    fn bare(tag: &str) -> Lab {
        let id = format!("wlgw{}{tag}", std::process::id() % 10_000);
        let lab = Lab {
            dir: std::env::temp_dir().join(&id),
            id,
            children: Vec::new(),
        };
        lab.cleanup();
        std::fs::create_dir_all(&lab.dir).expect("lab dir");
        for n in NAMESPACES {
            let ns = lab.name(n);
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
        for (a_ns, a, b_ns, b) in [
            ("c", "c", "b", "bc"),
            ("w", "wb", "b", "bs"),
            ("s", "s", "w", "ws"),
        ] {
            sh(&[
                "ip",
                "link",
                "add",
                &lab.name(a),
                "netns",
                &lab.name(a_ns),
                "type",
                "veth",
                "peer",
                "name",
                &lab.name(b),
                "netns",
                &lab.name(b_ns),
            ]);
        }
        lab
    }

    /// The full lab: addresses, offloads off, XDP_PASS on the end points,
    /// everything up.
    fn new() -> Lab {
        let lab = Lab::bare("");
        let pass_src = lab.dir.join("pass.c");
        let pass = lab.dir.join("pass.o");
        std::fs::write(
            &pass_src,
            "#include <linux/bpf.h>\n\
             #define SEC(n) __attribute__((section(n), used))\n\
             SEC(\"xdp\") int pass(struct xdp_md *ctx) { return XDP_PASS; }\n\
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
            pass_src.to_str().unwrap(),
            "-o",
            pass.to_str().unwrap(),
        ]);
        let w = lab.name("w");
        let br = lab.name("br");
        sh(&["ip", "-n", &w, "link", "add", &br, "type", "bridge"]);
        for p in ["wb", "ws"] {
            sh(&["ip", "-n", &w, "link", "set", &lab.name(p), "master", &br]);
        }
        sh(&["ip", "-n", &w, "link", "set", &br, "up"]);
        for (ns, dev) in [
            ("c", "c"),
            ("b", "bc"),
            ("b", "bs"),
            ("w", "wb"),
            ("w", "ws"),
            ("s", "s"),
        ] {
            let dev = lab.name(dev);
            let _ = Command::new("ip")
                .args(["netns", "exec", &lab.name(ns), "ethtool", "-K", &dev])
                .args([
                    "tso", "off", "gso", "off", "gro", "off", "tx", "off", "rx", "off",
                ])
                .output();
            let k = sh_out(&["ip", "netns", "exec", &lab.name(ns), "ethtool", "-k", &dev]);
            assert!(
                k.contains("tcp-segmentation-offload: off"),
                "{dev}: could not turn offloads off"
            );
            if dev == lab.name("c") || dev == lab.name("wb") {
                sh(&[
                    "ip",
                    "-n",
                    &lab.name(ns),
                    "link",
                    "set",
                    "dev",
                    &dev,
                    "xdp",
                    "obj",
                    pass.to_str().unwrap(),
                    "sec",
                    "xdp",
                ]);
            }
            if ns != "b" {
                // The host reorders veth traffic across CPUs otherwise.
                lab.nsx(
                    ns,
                    &[
                        "sh",
                        "-c",
                        &format!("echo 1 > /sys/class/net/{dev}/queues/rx-0/rps_cpus"),
                    ],
                );
            }
            sh(&["ip", "-n", &lab.name(ns), "link", "set", &dev, "up"]);
        }
        for (ns, addr) in [("c", CLIENT), ("s", SERVER)] {
            sh(&[
                "ip",
                "-n",
                &lab.name(ns),
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                &lab.name(ns),
            ]);
        }
        lab
    }

    /// Loss on the server side: `before` of the server's IPv4 frames are
    /// dropped on the wire towards the box (a tc BPF program on the
    /// bridge's server port; this kernel has neither netem nor gact, and a
    /// drop in the server's own stack would only delay the send), `after`
    /// of the client's TCP packets as they arrive at the server (iptables
    /// `statistic`).
    fn loss(&self, before: f64, after: f64) {
        let src = self.dir.join("drop.c");
        let obj = self.dir.join("drop.o");
        let per_million = (before * 1e6) as u32;
        std::fs::write(
            &src,
            format!(
                "#include <linux/bpf.h>\n\
                 #define SEC(n) __attribute__((section(n), used))\n\
                 static unsigned (*prandom)(void) = (void *)BPF_FUNC_get_prandom_u32;\n\
                 SEC(\"tc\") int drop(struct __sk_buff *skb) {{\n\
                 if (skb->protocol == __builtin_bswap16(0x0800) && prandom() % 1000000 < {per_million}) return 2;\n\
                 return 0; }}\n\
                 char _license[] SEC(\"license\") = \"GPL\";\n"
            ),
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
        let ws = self.name("ws");
        self.nsx("w", &["tc", "qdisc", "add", "dev", &ws, "clsact"]);
        self.nsx(
            "w",
            &[
                "tc",
                "filter",
                "add",
                "dev",
                &ws,
                "ingress",
                "bpf",
                "da",
                "obj",
                obj.to_str().unwrap(),
                "sec",
                "tc",
            ],
        );
        self.nsx(
            "s",
            &[
                "iptables",
                "-A",
                "INPUT",
                "-p",
                "tcp",
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &after.to_string(),
                "-j",
                "DROP",
            ],
        );
    }

    /// Removes what [`loss`](Self::loss) added.
    fn clear_loss(&self) {
        self.nsx(
            "w",
            &["tc", "qdisc", "del", "dev", &self.name("ws"), "clsact"],
        );
        self.nsx("s", &["iptables", "-F", "INPUT"]);
    }

    /// Starts a command in namespace `ns`; stdout/stderr to files in the lab dir.
    fn spawn(&mut self, ns: &str, name: &str, args: &[&str]) -> usize {
        let out = std::fs::File::create(self.dir.join(format!("{name}.out"))).unwrap();
        let err = std::fs::File::create(self.dir.join(format!("{name}.err"))).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name(ns)])
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

    fn http(&self, path: &str) -> Option<(u16, String)> {
        support::http_get_in(&self.name("b"), LISTEN, path)
    }

    /// Starts `wirelens run --inline bc,bs` in the box; waits for /healthz.
    fn start_daemon(&mut self, name: &str) -> usize {
        let pair = format!("{},{}", self.name("bc"), self.name("bs"));
        let args = [
            BIN,
            "run",
            "--inline",
            &pair,
            "--listen",
            LISTEN,
            "--tcp-idle",
            "3600",
        ];
        let i = self.spawn("b", name, &args);
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

    /// tcpdump on the client's port, both directions; returns once it listens.
    fn start_tcpdump(&mut self, file: &Path) -> usize {
        let dev = self.name("c");
        let i = self.spawn(
            "c",
            "tcpdump",
            &[
                "tcpdump",
                "-i",
                &dev,
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
        while !self.log("tcpdump").contains("listening on") {
            assert!(
                Instant::now() < end,
                "tcpdump did not start: {}",
                self.log("tcpdump")
            );
            thread::sleep(Duration::from_millis(50));
        }
        i
    }

    /// Stops tcpdump; returns its "packets dropped by kernel".
    fn stop_tcpdump(&mut self, i: usize) -> u64 {
        signal(&self.children[i], "-INT");
        wait_for(&mut self.children[i], Duration::from_secs(10)).expect("tcpdump exits on SIGINT");
        let log = self.log("tcpdump");
        log.lines()
            .find(|l| l.contains("dropped by kernel"))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no tcpdump summary in: {log}"))
    }

    /// Starts `count` TCP connections client -> server (`send` bytes up,
    /// `reply` down, paced at `pace` bytes/s each, 2 at a time); returns
    /// (server, client) child indices without waiting.
    fn start_traffic(
        &mut self,
        count: usize,
        send: usize,
        reply: usize,
        pace: u64,
    ) -> (usize, usize) {
        let ready = self.dir.join("server.ready");
        let _ = std::fs::remove_file(&ready);
        let (c, rp, cnt, pace) = (
            send.to_string(),
            reply.to_string(),
            count.to_string(),
            pace.to_string(),
        );
        let port = PORT.to_string();
        let srv = self.spawn(
            "s",
            "server",
            &[
                "python3",
                TRAFFIC,
                "server",
                "--bind",
                SERVER,
                "--port",
                &port,
                "--ready",
                ready.to_str().unwrap(),
                "--count",
                &cnt,
                "--reply",
                &rp,
                "--pace",
                &pace,
                "--timeout",
                "40",
            ],
        );
        let end = Instant::now() + Duration::from_secs(20);
        while !ready.exists() {
            assert!(
                Instant::now() < end,
                "server not ready: {}",
                self.log("server")
            );
            thread::sleep(Duration::from_millis(20));
        }
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
                &pace,
                "--timeout",
                "40",
            ],
        );
        (srv, cli)
    }

    /// Waits for both ends of a transfer; both must succeed.
    fn finish_traffic(&mut self, (srv, cli): (usize, usize)) {
        let st = wait_for(&mut self.children[cli], Duration::from_secs(50)).expect("client ends");
        assert!(st.success(), "client failed: {}", self.log("client"));
        let st = wait_for(&mut self.children[srv], Duration::from_secs(50)).expect("server ends");
        assert!(st.success(), "server failed: {}", self.log("server"));
    }

    /// The XDP program names on the box's ports.
    fn box_programs(&self) -> String {
        let mut out = String::new();
        for p in ["bc", "bs"] {
            out += &sh_out(&[
                "ip",
                "-n",
                &self.name("b"),
                "-d",
                "link",
                "show",
                "dev",
                &self.name(p),
            ]);
        }
        out
    }

    /// `/flows` of the daemon against analyze of the capture `pcap`.
    fn assert_flows_match(&self, pcap: &Path, conns: usize, what: &str) {
        let (st, body) = self.http("/flows").expect("GET /flows");
        assert_eq!(st, 200, "{body}");
        let run = flows_of(&body, CLIENT, SERVER, PORT);
        let out = Command::new(BIN)
            .args(["analyze", pcap.to_str().unwrap(), "--format", "ndjson"])
            .output()
            .expect("wirelens analyze");
        assert!(
            out.status.success(),
            "analyze: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let reference = flows_of(&String::from_utf8_lossy(&out.stdout), CLIENT, SERVER, PORT);
        let (bad, mut notes) = compare(&run, &reference);
        // See the module documentation: depends on where the two directions meet.
        let (timed, bad): (Vec<String>, Vec<String>) =
            bad.into_iter().partition(|l| l.contains(".rtt.n:"));
        notes.extend(timed);
        eprintln!(
            "inline_lab[{what}]: {} flows; c2s packets {} retrans_seen {}; s2c packets {} gaps \
             {}; time-based classifications differing: {}",
            run.len(),
            sum_dir(&reference, "c2s", "packets"),
            sum_dir(&reference, "c2s", "retrans_seen"),
            sum_dir(&reference, "s2c", "packets"),
            sum_dir(&reference, "s2c", "gaps"),
            if notes.is_empty() {
                "none".to_string()
            } else {
                notes.join("; ")
            }
        );
        assert!(
            bad.is_empty(),
            "{what}: /flows differs from analyze of the client-side capture:\n{}",
            bad.join("\n")
        );
        assert_eq!(reference.len(), conns, "{what}: one record per connection");
    }

    fn cleanup(&self) {
        for n in NAMESPACES {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name(n)])
                .output();
        }
        let (bc, bs) = (
            format!("-{}.lock", self.name("bc")),
            format!("-{}.lock", self.name("bs")),
        );
        support::remove_lock_files(|f| f.ends_with(&bc) || f.ends_with(&bs));
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
            for name in ["daemon", "daemon2", "client", "server", "tcpdump"] {
                eprintln!("--- {name}.err:\n{}", self.log(name));
            }
        }
        self.cleanup();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The longest gap between two consecutive packets of `pcap` (classic
/// pcap, as tcpdump -w writes it) from `from_ns` on, and how many packets
/// that span has.
fn longest_gap(pcap: &Path, from_ns: u64) -> (Duration, usize) {
    let b = std::fs::read(pcap).expect("read capture");
    assert!(b.len() >= 24, "capture too short");
    let magic = u32::from_le_bytes(b[0..4].try_into().unwrap());
    let nanos = match magic {
        0xa1b2_c3d4 => false,
        0xa1b2_3c4d => true,
        m => panic!("not a little-endian pcap (magic {m:#x})"),
    };
    let (mut at, mut last, mut gap, mut n) = (24, None::<u64>, 0u64, 0);
    while at + 16 <= b.len() {
        let word = |o: usize| {
            u64::from(u32::from_le_bytes(
                b[at + o..at + o + 4].try_into().unwrap(),
            ))
        };
        let ts = word(0) * 1_000_000_000 + if nanos { word(4) } else { word(4) * 1000 };
        let caplen = word(8) as usize;
        at += 16 + caplen;
        if ts < from_ns {
            continue;
        }
        if let Some(l) = last {
            gap = gap.max(ts.saturating_sub(l));
        }
        last = Some(ts);
        n += 1;
    }
    (Duration::from_nanos(gap), n)
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The box forwards and analyses: a lossy TCP transfer goes through and
/// `/flows` equals analyze of the client-side capture; SIGKILL mid-transfer
/// does not stop the traffic (the longest gap on the wire is bounded); a
/// restart replaces the orphaned program in one step and analysis resumes
/// (again counter for counter); SIGTERM leaves it forwarding.
#[test]
fn inline_forwards_analyses_and_fails_open() {
    require_root!("inline_forwards_analyses_and_fails_open");
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let mut lab = Lab::new();
    lab.loss(0.01, 0.02);

    // 1. Through the box, analysed.
    let pcap = lab.dir.join("client.pcap");
    let dump = lab.start_tcpdump(&pcap);
    let daemon = lab.start_daemon("daemon");
    let boot = lab.log("daemon");
    assert!(
        boot.contains("in driver mode"),
        "veth takes driver-mode XDP:\n{boot}"
    );
    let t = lab.start_traffic(4, 400_000, 150_000, 3_000_000);
    lab.finish_traffic(t);
    thread::sleep(Duration::from_millis(700));
    assert_eq!(lab.stop_tcpdump(dump), 0, "tcpdump dropped packets");
    thread::sleep(Duration::from_millis(1500));
    lab.assert_flows_match(&pcap, 4, "first run");
    let (_, m) = lab.http("/metrics").expect("GET /metrics");
    let fwd = metric(&m, "wirelens_inline_forwarded_total").expect("forwarded counter");
    let not_fwd: f64 = ["no_peer", "redirect_error", "xmit_drop"]
        .iter()
        .filter_map(|r| {
            metric(
                &m,
                &format!("wirelens_inline_not_forwarded_total{{reason=\"{r}\"}}"),
            )
        })
        .sum();
    let ring_full = metric(
        &m,
        "wirelens_inline_not_analysed_total{reason=\"ring_full\"}",
    )
    .unwrap_or(-1.0);
    assert!(fwd > 0.0, "{m}");
    assert_eq!(not_fwd, 0.0, "frames not forwarded:\n{m}");
    assert_eq!(ring_full, 0.0, "analysis fell behind:\n{m}");

    // 2. SIGKILL mid-transfer: the transfer completes; bound the stall.
    // Without the injected loss, so that a retransmission timeout is not
    // taken for a stall.
    lab.clear_loss();
    let pcap2 = lab.dir.join("kill.pcap");
    let dump = lab.start_tcpdump(&pcap2);
    let t = lab.start_traffic(1, 3_000_000, 10_000, 1_000_000);
    thread::sleep(Duration::from_millis(1200));
    let killed_at = now_ns();
    let _ = lab.children[daemon].kill();
    let _ = lab.children[daemon].wait();
    lab.finish_traffic(t);
    lab.stop_tcpdump(dump);
    let (gap, after) = longest_gap(&pcap2, killed_at);
    let programs = lab.box_programs();
    eprintln!(
        "inline_lab: SIGKILL mid-transfer: {after} packets on the wire after the kill, longest \
         gap {gap:?}"
    );
    assert!(
        after > 100,
        "the transfer went on after the kill ({after} packets)"
    );
    assert!(
        gap < Duration::from_millis(300),
        "traffic stalled {gap:?} after SIGKILL (fail-open: forwarding is in the kernel)"
    );
    assert_eq!(
        programs.matches("wirelens_inline").count(),
        2,
        "the program stays on both ports after SIGKILL:\n{programs}"
    );

    // 3. Restart: the orphan is replaced in one step, analysis resumes.
    lab.loss(0.01, 0.02);
    let pcap3 = lab.dir.join("restart.pcap");
    let dump = lab.start_tcpdump(&pcap3);
    let daemon2 = lab.start_daemon("daemon2");
    let boot2 = lab.log("daemon2");
    assert_eq!(
        boot2.matches("in one step").count(),
        2,
        "the restart replaces the orphaned program on both ports:\n{boot2}"
    );
    let t = lab.start_traffic(2, 300_000, 100_000, 3_000_000);
    lab.finish_traffic(t);
    thread::sleep(Duration::from_millis(700));
    assert_eq!(lab.stop_tcpdump(dump), 0, "tcpdump dropped packets");
    thread::sleep(Duration::from_millis(1500));
    lab.assert_flows_match(&pcap3, 2, "after restart");

    // 4. SIGTERM: exit 0, still forwarding (forward-only).
    signal(&lab.children[daemon2], "-TERM");
    let st =
        wait_for(&mut lab.children[daemon2], Duration::from_secs(20)).expect("stops on SIGTERM");
    let log = lab.log("daemon2");
    assert!(st.success(), "exit status {st}:\n{log}");
    assert!(log.contains("forwarding in the kernel"), "{log}");
    let t = lab.start_traffic(1, 100_000, 10_000, 3_000_000);
    lab.finish_traffic(t);
    eprintln!("inline_lab: whole test {:?}", t0.elapsed());
}

/// Start-up refusals: an MTU mismatch between the ports, and a port that
/// carries an address of the host (without --force); nothing is attached.
#[test]
fn inline_refuses_mtu_mismatch_and_host_ports() {
    require_root!("inline_refuses_mtu_mismatch_and_host_ports");
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::bare("r");
    let (bc, bs) = (lab.name("bc"), lab.name("bs"));
    let b = lab.name("b");
    sh(&["ip", "-n", &b, "link", "set", &bc, "mtu", "1400"]);
    let pair = format!("{bc},{bs}");
    let run = |lab: &mut Lab, name: &str| {
        let i = lab.spawn(
            "b",
            name,
            &[BIN, "run", "--inline", &pair, "--listen", LISTEN],
        );
        let st = wait_for(&mut lab.children[i], Duration::from_secs(30)).expect("exits");
        (st, lab.log(name))
    };
    let (st, log) = run(&mut lab, "mtu");
    assert!(!st.success(), "{log}");
    assert!(
        log.contains("MTU mismatch") && log.contains("1400") && log.contains("1500"),
        "{log}"
    );
    sh(&["ip", "-n", &b, "link", "set", &bc, "mtu", "1500"]);
    sh(&["ip", "-n", &b, "addr", "add", "198.18.9.100/24", "dev", &bs]);
    let (st, log) = run(&mut lab, "host");
    assert!(!st.success(), "{log}");
    assert!(log.contains("refusing") && log.contains(&bs), "{log}");
    let programs = lab.box_programs();
    assert!(
        !programs.contains("prog/xdp"),
        "nothing attached:\n{programs}"
    );
}
