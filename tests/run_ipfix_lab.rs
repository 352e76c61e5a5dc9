//! Root-only lab test of `wirelens run --ipfix`: the flow deltas of the live
//! appliance reach a real `nfcapd`, and `nfdump` of what it stored adds up
//! to what the node counted.
//!
//! One namespace (`wlfx<pid>t`), a veth pair in it: raw UDP frames written
//! on `..a` (as a SPAN port hands copies of traffic) are captured on `..b`
//! by `wirelens run`; nfcapd listens on the namespace's own 127.0.0.1.
//! Every flow is sent twice, a few export ticks apart, so each one is
//! exported as a first record and then as a delta record.
//!
//! Teardown is a Drop guard: our children killed by pid, the namespace (and
//! with it the links and the XDP program) deleted, also on failure.
#![cfg(feature = "live")]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;
use support::{http_get_in, metric, sh, skip_unless_root};

const BIN: &str = env!("CARGO_BIN_EXE_wirelens");
const HTTP: &str = "127.0.0.1:9651";
const COLLECTOR: &str = "127.0.0.1:4739";
const FLOWS: usize = 2000;

/// One 32-byte UDP datagram per flow k: 198.18.(k/250).(k%250+1):2000 ->
/// 198.19.0.2:53, paced.
const SENDER: &str = r#"
import socket, struct, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
def csum(b):
    t = sum(struct.unpack('!10H', b))
    t = (t >> 16) + (t & 0xffff)
    return ~(t + (t >> 16)) & 0xffff
for k in range(int(sys.argv[2])):
    udp = struct.pack('!HHHH', 2000, 53, 40, 0) + b'x' * 32
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 60, k, 0, 64, 17, 0,
                     bytes([198, 18, k // 250, k % 250 + 1]), bytes([198, 19, 0, 2]))
    ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]
    s.send(bytes.fromhex('020000000002020000000001') + b'\x08\x00' + ip + udp)
    if k % 500 == 499:
        time.sleep(0.02)
"#;

struct Lab {
    tag: String,
    ns: String,
    dir: PathBuf,
    children: Vec<(String, Child)>,
}

impl Lab {
    fn new() -> Lab {
        let tag = format!("wlfx{}", std::process::id());
        let dir = std::env::temp_dir().join(format!("{tag}-lab"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("flows")).unwrap();
        let lab = Lab {
            tag: tag.clone(),
            ns: format!("{tag}t"),
            dir,
            children: Vec::new(),
        };
        lab.cleanup();
        let (a, b) = (format!("{tag}a"), format!("{tag}b"));
        sh(&["ip", "netns", "add", &lab.ns]);
        sh(&[
            "ip", "-n", &lab.ns, "link", "add", &a, "type", "veth", "peer", "name", &b,
        ]);
        for dev in [&a, &b, "lo"] {
            sh(&["ip", "-n", &lab.ns, "link", "set", dev, "up"]);
        }
        lab
    }

    /// The lab's link `..a` (sender) or `..b` (capture).
    fn dev(&self, end: &str) -> String {
        format!("{}{end}", self.tag)
    }

    fn spawn(&mut self, name: &str, args: &[&str]) {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {args:?}: {e}"));
        self.children.push((name.to_string(), child));
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Waits until `name`'s log holds `what`.
    fn wait_log(&self, name: &str, what: &str) {
        let end = Instant::now() + Duration::from_secs(30);
        while !self.log(name).contains(what) {
            assert!(
                Instant::now() < end,
                "{name}: no {what:?}: {}",
                self.log(name)
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM to `name` (`ip netns exec` execs it: the pid is its own),
    /// then wait for it.
    fn stop(&mut self, name: &str) {
        let (_, c) = self
            .children
            .iter_mut()
            .find(|x| x.0 == name)
            .unwrap_or_else(|| panic!("{name} was not started"));
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

    fn send(&self, n: usize) {
        let dev = self.dev("a");
        sh(&[
            "ip",
            "netns",
            "exec",
            &self.ns,
            "python3",
            "-c",
            SENDER,
            &dev,
            &n.to_string(),
        ]);
    }

    fn metrics(&self) -> String {
        let (st, m) = http_get_in(&self.ns, HTTP, "/metrics").expect("GET /metrics");
        assert_eq!(st, 200);
        m
    }

    fn cleanup(&self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let suffix = format!("-{}.lock", self.dev("b"));
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
                eprintln!("--- {name}.log:\n{}", self.log(name));
            }
        }
        self.cleanup();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn run_ipfix_deltas_add_up_at_nfcapd_to_what_the_node_counted() {
    if skip_unless_root("run_ipfix_lab", "needs root (namespaces, XDP, AF_XDP)") {
        return;
    }
    let mut lab = Lab::new();
    let flows_dir = lab.dir.join("flows");
    let flows_arg = flows_dir.to_str().unwrap().to_string();
    lab.spawn(
        "nfcapd",
        &[
            "nfcapd",
            // A socket buffer for the burst of one export tick (2000 records).
            "-B",
            "8388608",
            "-b",
            "127.0.0.1",
            "-p",
            "4739",
            "-t",
            "3600",
            "-w",
            &flows_arg,
        ],
    );
    lab.wait_log("nfcapd", "Startup");
    let b = lab.dev("b");
    lab.spawn(
        "node",
        &[
            BIN,
            "run",
            "--iface",
            &b,
            "--listen",
            HTTP,
            "--udp-idle",
            "600",
            "--ipfix",
            COLLECTOR,
        ],
    );
    let end = Instant::now() + Duration::from_secs(60);
    while !matches!(http_get_in(&lab.ns, HTTP, "/healthz"), Some((200, _))) {
        assert!(Instant::now() < end, "run not healthy: {}", lab.log("node"));
        thread::sleep(Duration::from_millis(100));
    }

    // Each flow twice, export ticks (1 s) apart: a first record, then a delta.
    lab.send(FLOWS);
    thread::sleep(Duration::from_secs(3));
    lab.send(FLOWS);
    thread::sleep(Duration::from_secs(3));
    let m = lab.metrics();
    let seen = metric(&m, "wirelens_flows_total{proto=\"udp\"}").unwrap_or(0.0) as u64;
    assert!(
        seen >= FLOWS as u64 * 95 / 100,
        "the node saw {seen} of {FLOWS} flows"
    );
    let records = metric(
        &m,
        "wirelens_ipfix_records_total{collector=\"127.0.0.1:4739\"}",
    )
    .unwrap_or_else(|| panic!("no IPFIX counter:\n{m}"));
    assert!(records >= seen as f64, "{records} records for {seen} flows");
    assert_eq!(
        metric(
            &m,
            "wirelens_ipfix_send_errors_total{collector=\"127.0.0.1:4739\"}"
        ),
        Some(0.0)
    );

    // The node's last export goes out as it stops; then nfcapd writes its file.
    lab.stop("node");
    thread::sleep(Duration::from_millis(500));
    lab.stop("nfcapd");
    assert!(
        lab.log("nfcapd").contains("Sequence Errors: 0"),
        "{}",
        lab.log("nfcapd")
    );

    let dump = Command::new("nfdump")
        .arg("-R")
        .arg(&flows_dir)
        .args(["-o", "json"])
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let stored: Vec<Value> = serde_json::from_slice(&dump.stdout).unwrap();
    // (client, client port) -> (records, packets, bytes) of the lab's flows.
    let mut per_flow: BTreeMap<(String, u64), (u64, u64, u64)> = BTreeMap::new();
    for f in &stored {
        if f["dst4_addr"] != "198.19.0.2" || f["dst_port"] != 53 {
            continue;
        }
        let k = (
            f["src4_addr"].as_str().unwrap().to_string(),
            f["src_port"].as_u64().unwrap(),
        );
        let e = per_flow.entry(k).or_default();
        e.0 += 1;
        e.1 += f["in_packets"].as_u64().unwrap();
        e.2 += f["in_bytes"].as_u64().unwrap();
    }
    assert_eq!(per_flow.len() as u64, seen, "flows at nfcapd vs the node's");
    let packets: u64 = per_flow.values().map(|v| v.1).sum();
    let deltas = per_flow.values().filter(|v| v.0 >= 2).count();
    for (k, (recs, pk, by)) in &per_flow {
        assert!(
            *pk <= 2 && *pk >= 1,
            "{k:?}: {pk} packets in {recs} records"
        );
        assert_eq!(*by, pk * 60, "{k:?}: IP bytes");
    }
    assert!(
        deltas as u64 >= seen * 9 / 10,
        "only {deltas} of {seen} flows came as a first record and a delta"
    );
    eprintln!(
        "run --ipfix: {seen} flows, {records} records sent, {} stored, {packets} packets",
        stored.len()
    );
}
