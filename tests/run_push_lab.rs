//! Root-only lab test of `wirelens run --ctrl` under many flows and a
//! control plane outage: every flow the node saw reaches the control plane.
//!
//! Topology (every name starts with `wlbk<pid>`, addresses from
//! 198.18.0.0/15 only inside the namespaces):
//!
//! ```text
//!   ns ..g                                 ns ..t
//!   [..a]----------- SPAN veth -----------[..b]  `wirelens run --iface ..b --ctrl`
//!   raw frames: one UDP flow per client          `wirelens ctrl serve` on 127.0.0.1
//!   address 198.18.x.y -> 198.19.0.2:53
//! ```
//!
//! A raw (AF_PACKET) sender writes one frame per flow onto the SPAN veth, as
//! a mirror port hands a tap copies of the traffic: 20,000 distinct flows
//! within one push interval. Phase 1: all of them arrive at a real
//! `wirelens ctrl serve` process (flows counted at the control plane equal
//! the flows the node counted), `dropped_flows` 0. Phase 2: the control
//! plane is stopped, 20,000 more flows go by and their reports land in the
//! node's `--backlog-dir`; the node is SIGKILLed; after 30 s the control
//! plane comes back on the same database and the node is started again on
//! the same directory: it sends the earlier run's reports, every flow is
//! counted once, nothing dropped.
//! A second test gives the node a 1 MiB backlog of JSON and no control plane while
//! 60,000 flows are sent: what arrives later plus what the node reports as
//! dropped is exactly what it saw.
//!
//! Teardown is a Drop guard: kill our children (by pid), delete the
//! namespaces (with them the links and the XDP program), also on failure.
//! Run: `cargo test --test run_push_lab` as root.
#![cfg(feature = "live")]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;
use support::{http_get_in, metric, sh, signal, skip_unless_root, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_wirelens");
const HTTP: &str = "127.0.0.1:9641";
const CTRL: &str = "127.0.0.1:7879";
const NODE: &str = "wl-push-node";
const TOKEN: &str = "wl-push-secret-1";
/// Distinct flows the node must see in one push interval.
const FLOWS: usize = 20_000;
/// Flows sent per phase: a margin over [`FLOWS`] for frames the capture
/// itself misses on a loaded 2-core machine (that loss is the AF_XDP ring's,
/// before the engine; the push is judged on the flows the node counted).
const SENT: usize = 25_000;

/// One UDP frame per flow from client 198.18.(k/250%250).(k%250+1) to
/// 198.19.0.2:53, flows `base..base+n`, paced (1,000 frames per 20 ms).
const SENDER: &str = r#"
import socket, struct, sys, time
dev, base, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((dev, 0))
def csum(b):
    t = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    t = (t >> 16) + (t & 0xffff)
    t += t >> 16
    return ~t & 0xffff
eth = bytes.fromhex('020000000002020000000001') + b'\x08\x00'
payload = b'w' * 32
for i in range(n):
    k = base + i
    src = bytes([198, 18, (k // 250) % 250, k % 250 + 1])
    udp = struct.pack('!HHHH', 10000 + k // 62500, 53, 8 + len(payload), 0) + payload
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), k & 0xffff, 0, 64, 17, 0,
                     src, bytes([198, 19, 0, 2]))
    ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]
    s.send(eth + ip + udp)
    if i % 1000 == 999:
        time.sleep(0.04)
print(n)
"#;

struct Lab {
    tag: String,
    dir: PathBuf,
    children: Vec<(String, Child)>,
}

impl Lab {
    fn ns(&self, n: &str) -> String {
        format!("{}{n}", self.tag)
    }

    fn new() -> Lab {
        let tag = format!("wlbk{}", std::process::id());
        let dir = std::env::temp_dir().join(format!("{tag}-lab"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let lab = Lab {
            tag,
            dir,
            children: Vec::new(),
        };
        lab.cleanup();
        let (g, t) = (lab.ns("g"), lab.ns("t"));
        let (a, b) = (lab.ns("a"), lab.ns("b"));
        sh(&["ip", "netns", "add", &g]);
        sh(&["ip", "netns", "add", &t]);
        sh(&[
            "ip", "link", "add", &a, "netns", &g, "type", "veth", "peer", "name", &b, "netns", &t,
        ]);
        for (ns, dev) in [(&g, &a), (&t, &b)] {
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        lab
    }

    fn spawn(&mut self, ns: &str, name: &str, args: &[&str]) {
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
        self.children.push((name.to_string(), child));
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.err"))).unwrap_or_default()
    }

    fn get(&self, addr: &str, path: &str) -> Option<(u16, String)> {
        http_get_in(&self.ns("t"), addr, path)
    }

    fn start_ctrl(&mut self, name: &str) {
        let tokens = self.dir.join("tokens");
        std::fs::write(&tokens, format!("{NODE}:{TOKEN}\n")).unwrap();
        let db = self.dir.join("ctrl.db");
        self.spawn(
            "t",
            name,
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
        while !matches!(self.get(CTRL, "/healthz"), Some((200, _))) {
            assert!(
                Instant::now() < end,
                "ctrl serve not up: {}",
                self.log(name)
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM to the child `name`, then wait for it.
    fn stop(&mut self, name: &str) {
        let (_, c) = self
            .children
            .iter_mut()
            .rfind(|x| x.0 == name)
            .unwrap_or_else(|| panic!("{name} was not started"));
        assert!(matches!(c.try_wait(), Ok(None)), "{name} is not running");
        // `ip netns exec` execs the command: the pid is the server's.
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let end = Instant::now() + Duration::from_secs(30);
        while matches!(c.try_wait(), Ok(None)) {
            if Instant::now() > end {
                let _ = c.kill();
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The node's `--backlog-dir`.
    fn backlog_dir(&self) -> PathBuf {
        self.dir.join("backlog")
    }

    /// (report files, flow deltas in them) in the node's `--backlog-dir`,
    /// from the files' headers (flow deltas at bytes 8..12, little-endian).
    fn backlog_files(&self) -> (usize, u64) {
        let mut n = (0, 0);
        for e in std::fs::read_dir(self.backlog_dir()).into_iter().flatten() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "report") {
                let b = std::fs::read(&p).unwrap_or_default();
                if b.len() >= 12 {
                    n.0 += 1;
                    n.1 += u64::from(u32::from_le_bytes([b[8], b[9], b[10], b[11]]));
                }
            }
        }
        n
    }

    fn start_node(&mut self, extra: &[&str]) {
        let tokens = self.dir.join("tokens");
        std::fs::write(&tokens, format!("{NODE}:{TOKEN}\n")).unwrap();
        let b = self.ns("b");
        let url = format!("http://{CTRL}");
        let mut args = vec![
            BIN,
            "run",
            "--iface",
            &b,
            "--listen",
            HTTP,
            "--udp-idle",
            "600",
            "--ctrl",
            &url,
            "--token-file",
            tokens.to_str().unwrap(),
            "--node",
            NODE,
            "--push-secs",
            "5",
        ];
        args.extend_from_slice(extra);
        // A restarted node logs to node2.err.
        let name = match self.children.iter().any(|c| c.0 == "node") {
            true => "node2",
            false => "node",
        };
        self.spawn("t", name, &args);
        let end = Instant::now() + Duration::from_secs(60);
        while !matches!(self.get(HTTP, "/healthz"), Some((200, _))) {
            assert!(
                Instant::now() < end,
                "wirelens run not healthy: {}",
                self.log(name)
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends flows `base..base+n` and waits for the sender.
    fn send(&mut self, base: usize, n: usize) {
        let a = self.ns("a");
        let name = format!("sender{base}");
        let (b, n_s) = (base.to_string(), n.to_string());
        self.spawn("g", &name, &["python3", "-c", SENDER, &a, &b, &n_s]);
        let (_, c) = self.children.last_mut().unwrap();
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                assert!(st.success(), "sender failed: {}", self.log(&name));
                return;
            }
            assert!(Instant::now() < end, "sender did not finish");
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// UDP flows the node counted.
    fn node_flows(&self) -> u64 {
        let (st, m) = self.get(HTTP, "/metrics").expect("GET /metrics");
        assert_eq!(st, 200);
        metric(&m, "wirelens_flows_total{proto=\"udp\"}")
            .unwrap_or_else(|| panic!("no UDP flow count in /metrics:\n{m}")) as u64
    }

    /// Flows of every protocol the node counted (the lab's UDP flows and
    /// what the kernel itself sends on a fresh link, e.g. IPv6 ND).
    fn node_flows_all(&self) -> u64 {
        let (st, m) = self.get(HTTP, "/metrics").expect("GET /metrics");
        assert_eq!(st, 200);
        ["tcp", "udp", "icmp", "other"]
            .iter()
            .map(|p| {
                metric(&m, &format!("wirelens_flows_total{{proto=\"{p}\"}}")).unwrap_or(0.0) as u64
            })
            .sum()
    }

    /// Flows of every service at the control plane.
    fn ctrl_flows_all(&self) -> u64 {
        let (st, body) = self
            .get(CTRL, "/api/v1/services?since=1h&limit=1000&paths=0")
            .expect("GET /api/v1/services");
        assert_eq!(st, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("services JSON");
        v.as_array()
            .into_iter()
            .flatten()
            .map(|s| s["flows"].as_u64().unwrap_or(0))
            .sum()
    }

    /// (flows of the lab's service, the node's row) at the control plane.
    fn ctrl_counts(&self) -> (u64, Value) {
        let (st, body) = self
            .get(CTRL, "/api/v1/services?since=1h&limit=100")
            .expect("GET /api/v1/services");
        assert_eq!(st, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("services JSON");
        let flows = v
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| {
                s["service"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("198.19.0.2:53"))
            })
            .map(|s| s["flows"].as_u64().unwrap_or(0))
            .sum();
        let (st, body) = self.get(CTRL, "/api/v1/nodes").expect("GET /api/v1/nodes");
        assert_eq!(st, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("nodes JSON");
        let node = v
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["node"] == NODE)
            .cloned()
            .unwrap_or(Value::Null);
        (flows, node)
    }

    /// Waits until the control plane holds `want` flows (or `limit` passes).
    fn wait_delivered(&self, want: u64, limit: Duration) -> (u64, Value) {
        let end = Instant::now() + limit;
        loop {
            let (flows, node) = self.ctrl_counts();
            if flows >= want || Instant::now() > end {
                return (flows, node);
            }
            thread::sleep(Duration::from_secs(1));
        }
    }

    fn cleanup(&self) {
        for n in ["g", "t"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(n)])
                .output();
        }
        let suffix = format!("-{}.lock", self.ns("b"));
        support::remove_lock_files(|f| f.ends_with(&suffix));
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
            for (name, _) in &self.children {
                eprintln!("--- {name}.err:\n{}", self.log(name));
            }
        }
        self.cleanup();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn run_ctrl_delivers_every_flow_also_across_an_outage_and_a_restart() {
    if skip_unless_root("run_push_lab", "needs root (namespaces, XDP, AF_XDP)") {
        return;
    }
    let mut lab = Lab::new();
    lab.start_ctrl("ctrl1");
    let dir = lab.backlog_dir();
    let backlog = ["--backlog-dir", dir.to_str().unwrap()];
    lab.start_node(&backlog);

    // Phase 1: at least 20,000 flows within one push interval (5 s; sent in ~1.5 s).
    let t0 = Instant::now();
    lab.send(0, FLOWS);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "sending took {:?}",
        t0.elapsed()
    );
    // The node's count settles once its workers drained the ring.
    thread::sleep(Duration::from_secs(2));
    let seen = lab.node_flows();
    assert!(
        seen >= FLOWS as u64 * 99 / 100,
        "the node saw {seen} of {FLOWS} flows"
    );
    let (flows, node) = lab.wait_delivered(seen, Duration::from_secs(240));
    assert_eq!(
        flows, seen,
        "control plane flows vs node flows; node row {node}"
    );
    assert_eq!(node["dropped_flows"], 0, "{node}");
    assert_eq!(node["dropped_reports"], 0, "{node}");
    eprintln!("phase 1: {seen} flows seen, {flows} at the control plane, node row {node}");
    // Delivered: the files are gone.
    let end = Instant::now() + Duration::from_secs(10);
    while lab.backlog_files().0 > 0 && Instant::now() < end {
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        lab.backlog_files().0,
        0,
        "delivered reports leave the directory"
    );

    // Phase 2: the control plane goes away for 30 s while 20,000 more flows
    // pass; their reports wait in the backlog directory.
    lab.stop("ctrl1");
    let down = Instant::now();
    lab.send(SENT, SENT);
    // The count settles once the workers drained the ring (slower on a loaded machine).
    let mut seen2 = lab.node_flows();
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        thread::sleep(Duration::from_secs(1));
        let now = lab.node_flows();
        if now == seen2 && now >= seen + FLOWS as u64 || Instant::now() > end {
            break;
        }
        seen2 = now;
    }
    assert!(
        seen2 >= seen + FLOWS as u64,
        "the node saw {} flows during the outage",
        seen2 - seen
    );
    // Their reports are in the directory, and the outage shows as push errors.
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, m) = lab.get(HTTP, "/metrics").expect("GET /metrics");
        let errors = metric(&m, "wirelens_push_errors_total").unwrap_or(0.0);
        let files = lab.backlog_files();
        if files.1 >= seen2 - seen && errors >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < end,
            "{files:?} (files, deltas) in the backlog directory for {} new flows, \
             {errors} push errors",
            seen2 - seen
        );
        thread::sleep(Duration::from_millis(200));
    }
    // The node dies without a chance to send anything more: only the files are left.
    let node_child = lab.children.iter_mut().rfind(|x| x.0 == "node").unwrap();
    signal(&node_child.1, "-KILL");
    wait_for(&mut node_child.1, Duration::from_secs(10)).expect("SIGKILL ends the node");
    let (files, deltas) = lab.backlog_files();
    thread::sleep(Duration::from_secs(30).saturating_sub(down.elapsed()));
    lab.start_ctrl("ctrl2");
    lab.start_node(&backlog);
    let (flows, node) = lab.wait_delivered(seen2, Duration::from_secs(300));
    assert_eq!(
        flows, seen2,
        "after the outage and the restart; node row {node}"
    );
    assert_eq!(node["dropped_flows"], 0, "{node}");
    assert_eq!(node["dropped_reports"], 0, "{node}");
    let (_, m) = lab.get(HTTP, "/metrics").expect("GET /metrics");
    let replayed = metric(&m, "wirelens_push_backlog_replayed_total").unwrap_or(0.0);
    assert_eq!(
        replayed as usize, files,
        "the earlier run's files are sent:\n{m}"
    );
    for why in ["header", "short", "checksum", "unfinished"] {
        let sample = format!("wirelens_push_backlog_corrupt_total{{reason=\"{why}\"}}");
        assert_eq!(metric(&m, &sample), Some(0.0), "{sample}:\n{m}");
    }
    eprintln!(
        "phase 2: {seen2} flows seen, {files} reports ({deltas} deltas) left by the killed node, \
         {flows} at the control plane, node row {node}"
    );
}

#[test]
fn run_ctrl_counts_exactly_what_a_full_backlog_dropped() {
    if skip_unless_root("run_push_lab", "needs root (namespaces, XDP, AF_XDP)") {
        return;
    }
    let mut lab = Lab::new();
    // No control plane yet: everything waits in a 1 MiB backlog. JSON
    // (~1 KB per delta) overflows it; the compact encoding would hold all
    // 60,000 of these one-packet deltas in 1 MiB (about 17 B each).
    lab.start_node(&["--backlog-mib", "1", "--push-encoding", "json"]);
    lab.send(0, 60_000);
    // Two push intervals: every delta made and queued (or dropped).
    thread::sleep(Duration::from_secs(12));
    let seen = lab.node_flows();
    assert!(
        seen >= 3 * FLOWS as u64 * 99 / 100,
        "the node saw {seen} flows"
    );
    lab.start_ctrl("ctrl1");
    let end = Instant::now() + Duration::from_secs(300);
    let (flows, node) = loop {
        let (flows, node) = lab.ctrl_counts();
        let dropped = node["dropped_flows"].as_u64().unwrap_or(0);
        if flows + dropped >= seen && lab.ctrl_flows_all() + dropped >= lab.node_flows_all()
            || Instant::now() > end
        {
            break (flows, node);
        }
        thread::sleep(Duration::from_secs(1));
    };
    let dropped = node["dropped_flows"].as_u64().unwrap_or(0);
    assert!(
        dropped > 0,
        "a 1 MiB backlog held {seen} flows? node row {node}"
    );
    assert!(flows > 0, "nothing delivered; node row {node}");
    // Exact over every flow the node counted: the lab's and the link's own
    // few (IPv6 ND and the like), which share the backlog.
    let (all_seen, all_ctrl) = (lab.node_flows_all(), lab.ctrl_flows_all());
    assert_eq!(
        all_ctrl + dropped,
        all_seen,
        "delivered {all_ctrl} + dropped {dropped} vs seen {all_seen} (lab service: {flows} of {seen}); node row {node}"
    );
    eprintln!("backlog: {seen} flows seen, {flows} delivered, {dropped} counted as dropped");
}
