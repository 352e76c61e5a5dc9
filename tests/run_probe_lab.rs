//! Root-only lab test of `wirelens run --probe`: the daemon probes a
//! TWAMP-light reflector through a router with injected loss and delay, and
//! a silent target; its `/metrics` and a control plane on loopback must
//! show what was injected.
//!
//! Topology (names `wlq<pid>*`; addresses from 198.18.0.0/15, IPv6 off,
//! only inside the namespaces):
//!
//! ```text
//!  ns ..s (appliance)                ns ..r (router)                          ns ..f
//!  [..s0]---veth---[..r0]  FORWARD: statistic drops  [..r1]---veth---(fa ~ fb)---veth---[..f1]
//!  198.18.1.2 |    198.18.1.1                        198.18.2.1  forwarder.py     198.18.2.2
//!             | tc mirred (ingress + egress of s0)              10 ms each way    reflector :862
//!  [..sa]---SPAN veth---[..sb]  `wirelens run --iface ..sb --probe ...` + `ctrl serve` on 127.0.0.1
//! ```
//!
//! The probes leave through s0 (the host stack), the SPAN copy of s0 goes
//! to sb where the daemon's XDP program takes it: the probe flows show up
//! as the passive service 198.18.2.2:862/udp beside the active numbers.
//! Loss is iptables `-m statistic` on the 228-byte measurement packets
//! only (the 69-byte anchors pass), one rule per direction: its packet
//! counters are the truth the daemon's up/down split must equal exactly.
//! A third rule drops everything to port 864 silently: a dead reflector;
//! a third target has no route at all.
//!
//! Teardown is a Drop guard: our children killed by pid, our namespaces
//! deleted, also when the test fails. Without root the test says SKIP.
#![cfg(feature = "live")]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;
use support::{metric, skip_unless_root};

const BIN: &str = env!("CARGO_BIN_EXE_wirelens");
const FORWARDER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/forwarder.py");
const HTTP: &str = "127.0.0.1:9651";
const CTRL: &str = "127.0.0.1:7891";
const GOOD: &str = "198.18.2.2:862";
const DEAD: &str = "198.18.2.2:864";
/// Inside 198.18.0.0/15 but without a route in ns s (which has no default route).
const NOROUTE: &str = "198.19.0.1:862";
const COUNT: u64 = 400;

struct Lab {
    id: String,
    dir: PathBuf,
    children: Vec<(String, Child)>,
    namespaces: Vec<String>,
}

impl Lab {
    fn name(&self, n: &str) -> String {
        format!("{}{n}", self.id)
    }

    /// Runs `line` (whitespace-separated) in namespace `ns`; panics on failure.
    fn sh(&self, ns: &str, line: &str) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name(ns)])
            .args(line.split_whitespace())
            .output()
            .expect("spawn ip netns exec");
        assert!(
            out.status.success(),
            "in {}: {line} failed: {}",
            self.name(ns),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn new() -> Lab {
        let id = format!("wlq{}", std::process::id() % 1_000_000);
        let mut lab = Lab {
            dir: std::env::temp_dir().join(&id),
            id,
            children: Vec::new(),
            namespaces: Vec::new(),
        };
        std::fs::create_dir_all(&lab.dir).expect("lab dir");
        for n in ["s", "r", "f"] {
            let ns = lab.name(n);
            let st = Command::new("ip").args(["netns", "add", &ns]).status();
            assert!(st.is_ok_and(|s| s.success()), "ip netns add {ns}");
            lab.namespaces.push(ns);
            lab.sh(n, "ip link set lo up");
            lab.sh(
                n,
                "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1",
            );
        }
        let p = lab.id.clone();
        // Links are made inside the namespaces: nothing appears in the host's.
        lab.sh(
            "r",
            &format!("ip link add {p}r0 type veth peer name {p}s0 netns {p}s"),
        );
        lab.sh("r", &format!("ip link add {p}r1 type veth peer name {p}fa"));
        lab.sh(
            "r",
            &format!("ip link add {p}fb type veth peer name {p}f1 netns {p}f"),
        );
        lab.sh("s", &format!("ip link add {p}sa type veth peer name {p}sb"));
        let links = [
            ("s", "s0"),
            ("s", "sa"),
            ("s", "sb"),
            ("r", "r0"),
            ("r", "r1"),
            ("r", "fa"),
            ("r", "fb"),
            ("f", "f1"),
        ];
        for (n, l) in links {
            // The delay line copies frames with a packet socket: checksums
            // must be filled in (docs/LAB-NOTES.md), and real <= MTU frames.
            lab.sh(
                n,
                &format!("ethtool -K {p}{l} tx off rx off tso off gso off gro off"),
            );
            lab.sh(n, &format!("ip link set {p}{l} up"));
        }
        for (n, l, a) in [
            ("s", "s0", "198.18.1.2/24"),
            ("r", "r0", "198.18.1.1/24"),
            ("r", "r1", "198.18.2.1/24"),
            ("f", "f1", "198.18.2.2/24"),
        ] {
            lab.sh(n, &format!("ip addr add {a} dev {p}{l}"));
        }
        lab.sh("s", "ip route add 198.18.2.0/24 via 198.18.1.1");
        lab.sh("f", "ip route add 198.18.1.0/24 via 198.18.2.1");
        lab.sh("r", "sysctl -qw net.ipv4.ip_forward=1");
        // The SPAN copy of everything in and out of s0.
        lab.sh("s", &format!("tc qdisc add dev {p}s0 clsact"));
        for dir in ["ingress", "egress"] {
            lab.sh(
                "s",
                &format!(
                    "tc filter add dev {p}s0 {dir} protocol all u32 match u32 0 0 \
                     action mirred egress mirror dev {p}sa"
                ),
            );
        }
        lab
    }

    fn spawn(&mut self, ns: &str, name: &str, args: &[&str]) {
        let err = std::fs::File::create(self.dir.join(format!("{name}.err"))).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name(ns)])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {args:?}: {e}"));
        self.children.push((name.to_string(), child));
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.err"))).unwrap_or_default()
    }

    fn child(&mut self, name: &str) -> &mut Child {
        &mut self
            .children
            .iter_mut()
            .find(|(n, _)| n == name)
            .expect("child")
            .1
    }

    /// SIGTERM to one of our children (by pid); waits up to `t` for it.
    fn stop(&mut self, name: &str, t: Duration) -> Option<std::process::ExitStatus> {
        let c = self.child(name);
        let _ = Command::new("kill").arg(c.id().to_string()).status();
        let end = Instant::now() + t;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            if Instant::now() >= end {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// GET `path` from `addr` inside ns s: (status, body).
    fn http(&self, addr: &str, path: &str) -> Option<(u16, String)> {
        support::http_get_in(&self.name("s"), addr, path)
    }

    /// The binary in ns s, bounded by its own timeouts.
    fn wirelens(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name("s"), BIN])
            .args(args)
            .output()
            .expect("spawn wirelens")
    }

    /// Packet counters of the router's FORWARD rules, in order.
    fn forward_counts(&self) -> Vec<u64> {
        self.sh("r", "iptables -w -nvxL FORWARD")
            .lines()
            .skip(2)
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if thread::panicking() {
            for (n, _) in &self.children {
                eprintln!("--- {n}:\n{}", self.log(n));
            }
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        // A liveness lock a killed daemon left behind (ours only).
        let suffix = format!("-{}sb.lock", self.id);
        support::remove_lock_files(|f| f.ends_with(&suffix));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "wirelens failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[test]
fn run_probe_loss_rtt_and_ctrl() {
    if skip_unless_root(
        "run_probe_loss_rtt_and_ctrl",
        "needs root (namespaces, XDP, iptables)",
    ) {
        return;
    }
    let t0 = Instant::now();
    let mut lab = Lab::new();
    let p = lab.id.clone();

    // 10 % loss each way on the measurement packets (200 B payload = 228 B
    // IP), and a silent drop of everything to port 864.
    let (r0, r1) = (format!("{p}r0"), format!("{p}r1"));
    lab.sh(
        "r",
        &format!(
            "iptables -w -A FORWARD -i {r0} -p udp --dport 862 -m length --length 228 \
             -m statistic --mode random --probability 0.1 -j DROP"
        ),
    );
    lab.sh(
        "r",
        &format!(
            "iptables -w -A FORWARD -i {r1} -p udp --sport 862 -m length --length 228 \
             -m statistic --mode random --probability 0.1 -j DROP"
        ),
    );
    lab.sh(
        "r",
        &format!("iptables -w -A FORWARD -i {r0} -p udp --dport 864 -j DROP"),
    );

    // 10 ms each way between router and reflector (no netem here).
    let ready = lab.dir.join("fwd.ready");
    let stats = lab.dir.join("fwd.stats.json");
    let (fa, fb) = (format!("{p}fa"), format!("{p}fb"));
    lab.spawn(
        "r",
        "forwarder",
        &[
            "python3",
            FORWARDER,
            "--a",
            &fa,
            "--b",
            &fb,
            "--delay-ms",
            "10",
            "--match",
            "ip",
            "--stats",
            stats.to_str().unwrap(),
            "--ready",
            ready.to_str().unwrap(),
            "--max-seconds",
            "90",
        ],
    );
    let end = Instant::now() + Duration::from_secs(10);
    while !ready.exists() {
        assert!(Instant::now() < end, "forwarder did not start");
        thread::sleep(Duration::from_millis(20));
    }
    lab.spawn(
        "f",
        "reflector",
        &[
            BIN,
            "probe",
            "reflect",
            "--listen",
            GOOD,
            "--duration",
            "90s",
        ],
    );

    // The control plane on loopback in ns s.
    let tokens = lab.dir.join("tokens");
    std::fs::write(&tokens, "wl-probe-node:wl-probe-secret\n").unwrap();
    let db = lab.dir.join("ctrl.db");
    lab.spawn(
        "s",
        "ctrl",
        &[
            BIN,
            "ctrl",
            "serve",
            "--listen",
            CTRL,
            "--db",
            db.to_str().unwrap(),
            "--token-file",
            tokens.to_str().unwrap(),
        ],
    );
    let end = Instant::now() + Duration::from_secs(30);
    while !matches!(lab.http(CTRL, "/healthz"), Some((200, _))) {
        assert!(Instant::now() < end, "ctrl not up: {}", lab.log("ctrl"));
        thread::sleep(Duration::from_millis(100));
    }
    thread::sleep(Duration::from_millis(300)); // the reflector binds

    let sb = format!("{p}sb");
    let good = format!("{GOOD},interval=10ms,size=200,window=1s,count={COUNT}");
    let dead = format!("{DEAD},interval=100ms,window=2s");
    let noroute = format!("{NOROUTE},window=1s");
    let ctrl_url = format!("http://{CTRL}");
    lab.spawn(
        "s",
        "daemon",
        &[
            BIN,
            "run",
            "--iface",
            &sb,
            "--listen",
            HTTP,
            "--poll",
            "wait",
            "--probe",
            &good,
            "--probe",
            &dead,
            "--probe",
            &noroute,
            "--ctrl",
            &ctrl_url,
            "--token-file",
            tokens.to_str().unwrap(),
            "--node",
            "wl-probe-node",
            "--push-secs",
            "1",
        ],
    );

    // Wait until every probe of the good target is in a finished window
    // and the dead target has reported at least one window.
    let sent = format!("wirelens_probe_packets_total{{target=\"{GOOD}\",result=\"sent\"}}");
    let dead_state = format!("wirelens_probe_state{{target=\"{DEAD}\",state=\"no_reply\"}}");
    let unrouted = format!("wirelens_probe_state{{target=\"{NOROUTE}\",state=\"unreachable\"}}");
    let end = Instant::now() + Duration::from_secs(40);
    let text = loop {
        if let Some((200, body)) = lab.http(HTTP, "/metrics") {
            if metric(&body, &sent) == Some(COUNT as f64)
                && metric(&body, &dead_state).is_some()
                && metric(&body, &unrouted).is_some()
            {
                break body;
            }
        }
        assert!(
            Instant::now() < end,
            "no complete probe windows in 40 s:\n{}\n{}",
            lab.log("daemon"),
            lab.http(HTTP, "/metrics").map(|x| x.1).unwrap_or_default()
        );
        thread::sleep(Duration::from_millis(250));
    };
    let counts = lab.forward_counts();
    let m = |result: &str| {
        metric(
            &text,
            &format!("wirelens_probe_packets_total{{target=\"{GOOD}\",result=\"{result}\"}}"),
        )
        .unwrap_or_else(|| panic!("no {result} in:\n{text}")) as u64
    };
    let (up, down, un, received) = (
        m("lost_up"),
        m("lost_down"),
        m("lost_unattributed"),
        m("received"),
    );
    // The quantiles are those of the latest window. Windows that ran late
    // send fewer probes than interval and length allow, so the `count=`
    // may end with a window of a few probes, all of which the 10 % loss
    // each way can take (no quantiles then). The mean of every answered
    // probe since the start is always there.
    let q = |q: &str| {
        metric(
            &text,
            &format!("wirelens_probe_rtt_seconds{{target=\"{GOOD}\",quantile=\"{q}\"}}"),
        )
    };
    let hist = |f: &str| {
        metric(
            &text,
            &format!("wirelens_probe_rtt_histogram_seconds_{f}{{target=\"{GOOD}\"}}"),
        )
        .unwrap_or_else(|| panic!("no rtt histogram {f} in:\n{text}"))
    };
    let mean = hist("sum") / hist("count");
    assert!(
        (0.020..=0.030).contains(&mean),
        "rtt mean {mean} s not in [20, 30] ms"
    );
    let latest = q("0").zip(q("0.5"));
    if latest.is_none() {
        let last = format!("wirelens_probe_state{{target=\"{GOOD}\",state=\"no_reply\"}}");
        assert_eq!(
            metric(&text, &last),
            Some(1.0),
            "no rtt quantiles, yet the latest window had replies:\n{text}"
        );
    }
    eprintln!(
        "iptables drops (up, down, dead): {counts:?}; /metrics lost up {up} down {down} \
         unattributed {un} received {received}; rtt mean {mean} latest window (min, p50) {latest:?}"
    );
    assert!(
        counts[0] > 10 && counts[1] > 10,
        "loss was injected: {counts:?}"
    );
    assert_eq!(up, counts[0], "upstream loss vs iptables");
    assert_eq!(down, counts[1], "downstream loss vs iptables");
    assert_eq!(un, 0, "every loss attributed");
    assert_eq!(received + up + down, COUNT);
    if let Some((rmin, p50)) = latest {
        // The forwarder never sends early: 10 ms each way.
        assert!(rmin >= 0.0199, "rtt min {rmin} s below 20 ms");
        assert!(
            (0.020..=0.030).contains(&p50),
            "rtt p50 {p50} s not in [20, 30] ms"
        );
    }
    let hist_count = metric(
        &text,
        &format!("wirelens_probe_rtt_histogram_seconds_count{{target=\"{GOOD}\"}}"),
    );
    assert_eq!(hist_count, Some(received as f64));
    // The silent target: reported, loss 100 %, never a hang.
    let dead_m = |series: &str| metric(&text, series);
    assert_eq!(
        dead_m(&format!("wirelens_probe_up{{target=\"{DEAD}\"}}")),
        Some(0.0)
    );
    assert_eq!(dead_m(&dead_state), Some(1.0));
    assert_eq!(
        dead_m(&format!(
            "wirelens_probe_loss_ratio{{target=\"{DEAD}\",direction=\"any\"}}"
        )),
        Some(1.0)
    );
    assert!(
        counts[2] >= 3,
        "the dead target's hellos were dropped: {counts:?}"
    );
    // The capture port's driver counters, per queue.
    let q0 = metric(
        &text,
        &format!(
            "wirelens_interface_driver_stat{{iface=\"{sb}\",name=\"rx_queue_0_xdp_packets\",dir=\"rx\",queue=\"0\"}}"
        ),
    );
    assert!(q0.is_some_and(|v| v > 0.0), "per-queue XDP counter: {q0:?}");
    assert_eq!(
        lab.http(HTTP, "/healthz").map(|x| x.0),
        Some(200),
        "the node stays healthy"
    );

    // The control plane got the same numbers.
    let end = Instant::now() + Duration::from_secs(20);
    let rows = loop {
        let v = json(&lab.wirelens(&["probes", "--ctrl", &ctrl_url, "--format", "json"]));
        let good_row = v
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["target"] == GOOD)
            .cloned();
        if good_row.as_ref().is_some_and(|r| u(r, "sent") == COUNT) {
            break v;
        }
        assert!(Instant::now() < end, "ctrl has not the probes: {v}");
        thread::sleep(Duration::from_millis(300));
    };
    let rows = rows.as_array().unwrap();
    let g = rows.iter().find(|r| r["target"] == GOOD).unwrap();
    eprintln!(
        "ctrl: sent {} lost up {} down {} rtt {}",
        g["sent"], g["lost_up"], g["lost_down"], g["rtt"]
    );
    assert_eq!(g["node"], "wl-probe-node");
    assert_eq!(u(g, "lost_up"), counts[0]);
    assert_eq!(u(g, "lost_down"), counts[1]);
    assert_eq!(u(g, "received"), received);
    assert!(u(g, "windows") >= 4, "{g}");
    let cp50 = g["rtt"]["p50_ns"].as_u64().unwrap();
    assert!(
        (20_000_000..=30_000_000).contains(&cp50),
        "ctrl rtt p50 {cp50}"
    );
    assert_eq!(
        g["rtt"]["n"].as_u64(),
        Some(received),
        "the same histogram as the node's"
    );
    let d = rows
        .iter()
        .find(|r| r["target"] == DEAD)
        .expect("the dead target at the ctrl");
    assert_eq!(d["state"], "no_reply", "{d}");
    assert_eq!(u(d, "received"), 0);
    assert!(u(d, "sent") > 0 && u(d, "lost") == u(d, "sent"), "{d}");
    // The time series and the table form.
    let w = json(&lab.wirelens(&[
        "probes",
        "--ctrl",
        &ctrl_url,
        "--windows",
        "--target",
        GOOD,
        "--format",
        "json",
    ]));
    let ws = w.as_array().unwrap();
    assert_eq!(
        ws.iter().map(|x| u(&x["window"], "sent")).sum::<u64>(),
        COUNT
    );
    let out = lab.wirelens(&["probes", "--ctrl", &ctrl_url]);
    let table = String::from_utf8_lossy(&out.stdout);
    eprintln!("wirelens probes:\n{table}");
    assert!(
        table.contains(GOOD) && table.contains("no_reply"),
        "{table}"
    );
    // Beside the passive flows of the same service (the SPAN copy of the
    // probe traffic): 198.18.2.2:862/udp carries the probe numbers.
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let v = json(&lab.wirelens(&["services", "--ctrl", &ctrl_url, "--format", "json"]));
        let svc = v
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["service"] == "198.18.2.2:862/udp")
            .cloned();
        if let Some(s) = svc {
            eprintln!(
                "service {}: {} packets passive; probe {}",
                s["service"], s["packets"], s["probe"]["rtt"]
            );
            assert!(u(&s, "packets") > 0, "{s}");
            assert_eq!(u(&s["probe"], "sent"), COUNT, "{s}");
            assert_eq!(u(&s["probe"], "lost_up"), counts[0]);
            let out = lab.wirelens(&["services", "--ctrl", &ctrl_url, "--limit", "3"]);
            eprintln!(
                "wirelens services:\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
            break;
        }
        assert!(
            Instant::now() < end,
            "no passive service for the probes: {v}"
        );
        thread::sleep(Duration::from_millis(300));
    }

    // The probe threads never share a core with the packet worker (when the
    // machine has a core to spare): their allowed CPUs exclude the worker's.
    let log = lab.log("daemon");
    let worker_core: Option<usize> = log
        .lines()
        .find_map(|l| l.split("queue -> core: ").nth(1))
        .and_then(|m| m.trim().split("->").nth(1)?.parse().ok());
    let pid = lab.child("daemon").id();
    let mut probe_threads = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !(comm.starts_with("wirelens-probe") || comm.starts_with("wl-probe")) {
            continue;
        }
        probe_threads += 1;
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let allowed = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap_or_default()
            .trim()
            .to_string();
        if log.contains("no core left for the probes") {
            continue;
        }
        let w = worker_core.unwrap_or_else(|| panic!("no worker core in the log:\n{log}"));
        let cpus: Vec<usize> = allowed
            .split(',')
            .flat_map(|p| match p.split_once('-') {
                Some((a, b)) => (a.parse().unwrap_or(0)..=b.parse().unwrap_or(0)).collect(),
                None => p.parse().ok().into_iter().collect::<Vec<usize>>(),
            })
            .collect();
        assert!(
            !cpus.contains(&w),
            "probe thread {} may run on the worker's core {w}: {allowed}",
            comm.trim()
        );
    }
    assert!(probe_threads >= 3, "one prober thread per target at least");
    eprintln!(
        "worker core {worker_core:?}; {probe_threads} probe threads; {}",
        log.lines()
            .find(|l| l.contains("probing"))
            .unwrap_or_default()
    );

    // SIGTERM ends the daemon promptly although a target is still silent.
    let st = lab
        .stop("daemon", Duration::from_secs(10))
        .expect("the daemon stops within 10 s of SIGTERM");
    assert!(st.success(), "{st}: {}", lab.log("daemon"));
    lab.stop("forwarder", Duration::from_secs(5));
    if let Ok(s) = std::fs::read_to_string(&stats) {
        let f: Value = serde_json::from_str(&s).unwrap_or_default();
        assert_eq!(
            f["socket_drops"], 0,
            "the forwarder lost frames itself: {f}"
        );
    }
    eprintln!("run_probe_loss_rtt_and_ctrl: {:?}", t0.elapsed());
}
