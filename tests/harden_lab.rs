//! Root-only tests of how `wirelens run` protects the host it runs on:
//! `--force` refusals (specific routes, other routing tables, a port of a
//! bridge that has the host's address), the per-interface liveness lock (a
//! second instance that cannot take it refuses and leaves the first alone),
//! `/healthz` noticing a program detached behind the daemon's back, and the
//! reduced capability set of a running daemon.
//!
//! Each test builds its own network namespace `wlh<pid><tag>` holding veth
//! pairs named after it; addresses come from 198.18.0.0/15 and stay inside.
//! A guard kills the daemons it started (by pid) and deletes the namespace,
//! also when the test fails. Without root the tests say SKIP (a failure under
//! `WIRELENS_REQUIRE_ROOT_TESTS=1`).
#![cfg(feature = "live")]

use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

mod support;
use support::{http_get_in, sh, skip_unless_root};

const BIN: &str = env!("CARGO_BIN_EXE_wirelens");

/// One namespace and what the test started in it.
struct Lab {
    ns: String,
    children: Vec<Child>,
    dir: std::path::PathBuf,
}

impl Lab {
    fn new(tag: char) -> Lab {
        let ns = format!("wlh{}{tag}", std::process::id() % 100_000);
        let dir = std::env::temp_dir().join(&ns);
        let lab = Lab {
            ns,
            children: Vec::new(),
            dir,
        };
        lab.cleanup();
        std::fs::create_dir_all(&lab.dir).expect("lab dir");
        sh(&["ip", "netns", "add", &lab.ns]);
        sh(&["ip", "-n", &lab.ns, "link", "set", "lo", "up"]);
        lab
    }

    /// `<ns><a>` and `<ns><b>`, a veth pair inside the namespace, both up.
    fn veth(&self, a: &str, b: &str) -> (String, String) {
        let (da, db) = (self.dev(a), self.dev(b));
        sh(&[
            "ip", "-n", &self.ns, "link", "add", &da, "type", "veth", "peer", "name", &db,
        ]);
        for d in [&da, &db] {
            sh(&["ip", "-n", &self.ns, "link", "set", d, "up"]);
        }
        (da, db)
    }

    fn dev(&self, n: &str) -> String {
        format!("{}{n}", self.ns)
    }

    fn ip(&self, args: &[&str]) {
        let mut v = vec!["ip", "-n", &self.ns];
        v.extend_from_slice(args);
        sh(&v);
    }

    /// `wirelens run` with `args` in the namespace, to completion.
    fn run_once(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns, BIN, "run"])
            .args(args)
            .output()
            .expect("spawn wirelens run")
    }

    /// Starts `wirelens run --iface IF --listen 127.0.0.1:PORT` in the
    /// namespace and waits for `/healthz` 200; returns its index.
    fn start_daemon(&mut self, name: &str, iface: &str, port: u16) -> usize {
        self.start_daemon_with(name, iface, port, &[])
    }

    /// [`Lab::start_daemon`] with more `wirelens run` arguments.
    fn start_daemon_with(&mut self, name: &str, iface: &str, port: u16, extra: &[&str]) -> usize {
        let err = std::fs::File::create(self.dir.join(format!("{name}.err"))).expect("log");
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, BIN, "run", "--iface", iface])
            .args(["--listen", &listen, "--poll", "wait"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn wirelens run");
        self.children.push(child);
        let i = self.children.len() - 1;
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some((200, _)) = self.healthz(port) {
                return i;
            }
            if let Ok(Some(st)) = self.children[i].try_wait() {
                panic!("wirelens run exited ({st}):\n{}", self.log(name));
            }
            assert!(
                Instant::now() < end,
                "wirelens run not healthy after 60 s:\n{}",
                self.log(name)
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn healthz(&self, port: u16) -> Option<(u16, String)> {
        http_get_in(&self.ns, &format!("127.0.0.1:{port}"), "/healthz")
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.err"))).unwrap_or_default()
    }

    /// SIGTERM, then the exit status (SIGKILL after 20 s).
    fn stop(&mut self, i: usize) -> std::process::ExitStatus {
        let c = &mut self.children[i];
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st;
            }
            if Instant::now() > end {
                let _ = c.kill();
                return c.wait().expect("wait");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn cleanup(&self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
        // Liveness locks a killed daemon of this lab left (ours only).
        let ours = format!("-{}", self.ns);
        support::remove_lock_files(|f| f.ends_with(".lock") && f.contains(&ours));
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
            for e in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
                eprintln!(
                    "--- {}:\n{}",
                    e.file_name().to_string_lossy(),
                    std::fs::read_to_string(e.path()).unwrap_or_default()
                );
            }
        }
        self.cleanup();
    }
}

fn refused(out: &Output, want: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "refused with exit 1: {err}");
    assert!(err.contains("refusing to attach XDP"), "{err}");
    for w in want {
        assert!(err.contains(w), "says {w:?}: {err}");
    }
}

#[test]
fn force_protects_specific_routes_other_tables_and_bridged_ports() {
    if skip_unless_root(
        "harden_lab::force_protects",
        "needs root (network namespaces)",
    ) {
        return;
    }
    let lab = Lab::new('f');
    // A specific route (no address, no default route) through a.
    let (a, _) = lab.veth("a", "b");
    lab.ip(&["route", "add", "198.18.5.0/24", "dev", &a]);
    refused(
        &lab.run_once(&["--iface", &a]),
        &["198.18.5.0/24 (table main)"],
    );
    // A route in another table (what a VRF or policy routing uses).
    let (c, _) = lab.veth("c", "d");
    lab.ip(&["route", "add", "198.18.6.0/24", "dev", &c, "table", "100"]);
    refused(
        &lab.run_once(&["--iface", &c]),
        &["198.18.6.0/24 (table 100)"],
    );
    // A port of a bridge that has the host's address.
    let (e, _) = lab.veth("e", "g");
    let br = lab.dev("br");
    lab.ip(&["link", "add", &br, "type", "bridge"]);
    lab.ip(&["link", "set", &e, "master", &br]);
    lab.ip(&["link", "set", &br, "up"]);
    lab.ip(&["addr", "add", "198.18.7.1/24", "dev", &br]);
    refused(
        &lab.run_once(&["--iface", &e]),
        &[
            &format!("carries the traffic of {br} (bridge)"),
            "198.18.7.1",
        ],
    );
    // A port of a VRF that carries a route (the check is in code; some
    // kernels are built without the vrf link type).
    let (h, _) = lab.veth("h", "i");
    let vrf = lab.dev("vrf");
    let made = Command::new("ip")
        .args([
            "-n", &lab.ns, "link", "add", &vrf, "type", "vrf", "table", "200",
        ])
        .output()
        .expect("spawn ip");
    let why = String::from_utf8_lossy(&made.stderr);
    if !made.status.success() && why.contains("Unknown device type") {
        eprintln!(
            "SKIP harden_lab::force_protects, VRF case only: this kernel has no vrf link \
             type (`ip link add {vrf} type vrf` answers {:?}), so --force on a VRF port is \
             not exercised here",
            why.trim()
        );
        return;
    }
    assert!(made.status.success(), "ip link add type vrf: {why}");
    lab.ip(&["link", "set", &h, "master", &vrf]);
    lab.ip(&["link", "set", &vrf, "up"]);
    lab.ip(&["route", "add", "198.18.8.0/24", "dev", &vrf, "table", "200"]);
    refused(
        &lab.run_once(&["--iface", &h]),
        &[
            &format!("carries the traffic of {vrf} (vrf)"),
            "198.18.8.0/24",
        ],
    );
}

#[test]
fn a_lock_not_taken_refuses_and_leaves_the_live_instance_alone() {
    if skip_unless_root(
        "harden_lab::lock",
        "needs root (network namespaces, XDP, AF_XDP)",
    ) {
        return;
    }
    let mut lab = Lab::new('l');
    let (a, _) = lab.veth("a", "b");
    let first = lab.start_daemon("first", &a, 9650);

    // The lock directory read-only for the second instance only (its own
    // mount namespace): it cannot take the lock and must not touch XDP.
    let second = Command::new("ip")
        .args(["netns", "exec", &lab.ns, "unshare", "--mount", "sh", "-c"])
        .arg(format!(
            "mount --bind /run/wirelens /run/wirelens && \
             mount -o remount,bind,ro /run/wirelens && \
             exec {BIN} run --iface {a} --listen 127.0.0.1:9651"
        ))
        .output()
        .expect("spawn the second instance");
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{err}");
    assert!(
        err.contains("not attaching XDP") && err.contains("cannot be opened"),
        "{err}"
    );
    // A third with the lock directory writable finds the lock held.
    let third = lab.run_once(&["--iface", &a, "--listen", "127.0.0.1:9652"]);
    let err = String::from_utf8_lossy(&third.stderr);
    assert!(!third.status.success(), "{err}");
    assert!(err.contains("held by another live wirelens"), "{err}");

    let (code, body) = lab.healthz(9650).expect("first still answers");
    assert_eq!(code, 200, "the first instance is untouched: {body}");

    // Detached behind its back: /healthz says so.
    lab.ip(&["link", "set", "dev", &a, "xdp", "off"]);
    let (code, body) = lab.healthz(9650).expect("first still answers");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("no longer attached"), "{body}");

    let st = lab.stop(first);
    assert!(st.success(), "orderly stop: {st}\n{}", lab.log("first"));
}

#[test]
fn a_running_node_lets_go_of_an_interface_that_starts_carrying_host_traffic() {
    if skip_unless_root(
        "harden_lab::recheck",
        "needs root (network namespaces, XDP, AF_XDP)",
    ) {
        return;
    }
    let mut lab = Lab::new('r');
    let (a, _) = lab.veth("a", "b");
    sh(&[
        "ip", "netns", "exec", &lab.ns, "ethtool", "-K", &a, "rxvlan", "off",
    ]);
    let daemon = lab.start_daemon("daemon", &a, 9653);
    assert!(
        !lab.log("daemon").contains("rx-vlan-offload on"),
        "tags kept: no warning"
    );
    // What DHCP or an operator would do to the port while it runs.
    lab.ip(&["addr", "add", "198.18.8.1/24", "dev", &a]);
    let end = Instant::now() + Duration::from_secs(30);
    let st = loop {
        if let Ok(Some(st)) = lab.children[daemon].try_wait() {
            break st;
        }
        assert!(
            Instant::now() < end,
            "still running 30 s after the port got the host address:\n{}",
            lab.log("daemon")
        );
        thread::sleep(Duration::from_millis(100));
    };
    let log = lab.log("daemon");
    assert_eq!(st.code(), Some(1), "{log}");
    assert!(
        log.contains("now carries the host's traffic") && log.contains("198.18.8.1"),
        "{log}"
    );
    let link = Command::new("ip")
        .args(["-n", &lab.ns, "link", "show", "dev", &a])
        .output()
        .expect("ip link");
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(!link.contains("prog/xdp"), "XDP detached: {link}");
}

/// `CapX:` of a /proc status text.
fn cap(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or_else(|| panic!("{field} missing in {status}"))
}

/// After start every thread of `wirelens run` holds at most CAP_NET_ADMIN
/// (the detach at stop), none inheritable or ambient, the bounding set is
/// cut to it and NoNewPrivs is set; the counters (read through the map
/// descriptors) still work and the stop still detaches.
#[test]
fn a_running_node_keeps_only_cap_net_admin() {
    if skip_unless_root(
        "harden_lab::capabilities",
        "needs root (network namespaces, XDP, AF_XDP)",
    ) {
        return;
    }
    const NET_ADMIN: u64 = 1 << 12;
    let mut lab = Lab::new('c');
    let (a, b) = lab.veth("a", "b");
    // Secrets no one but root (with CAP_DAC_OVERRIDE) may read: they are
    // read before the capabilities are dropped, so the node still starts.
    let token = lab.dir.join("token");
    std::fs::write(&token, "wlndsecret\n").expect("token file");
    sh(&["chmod", "000", &token.display().to_string()]);
    let token = token.display().to_string();
    let daemon = lab.start_daemon_with(
        "daemon",
        &a,
        9654,
        &[
            "--ctrl",
            "http://127.0.0.1:9",
            "--node",
            "wlndcap",
            "--token-file",
            &token,
            "--flows-token-file",
            &token,
        ],
    );
    // The /flows token was read: a request without it is refused.
    let flows = http_get_in(&lab.ns, "127.0.0.1:9654", "/flows").map(|r| r.0);
    assert_eq!(flows, Some(401), "/flows without the token");
    let pid = lab.children[daemon].id();
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the daemon's threads")
        .flatten()
        .collect();
    assert!(tasks.len() >= 3, "main, HTTP and a worker at least");
    for t in &tasks {
        let st = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        if st.is_empty() {
            continue; // a thread that just ended
        }
        let name = st.lines().next().unwrap_or("").to_string();
        assert_eq!(cap(&st, "CapEff:") & !NET_ADMIN, 0, "{name}: {st}");
        assert_eq!(cap(&st, "CapPrm:") & !NET_ADMIN, 0, "{name}: {st}");
        assert_eq!(cap(&st, "CapInh:"), 0, "{name}");
        assert_eq!(cap(&st, "CapAmb:"), 0, "{name}");
        assert_eq!(cap(&st, "CapBnd:"), NET_ADMIN, "{name}: bounding set cut");
        assert!(st.contains("NoNewPrivs:\t1"), "{name}: {st}");
    }
    let main = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert_eq!(
        cap(&main, "CapEff:"),
        NET_ADMIN,
        "the main thread keeps it for the detach"
    );
    assert!(lab.log("daemon").contains("capabilities now CAP_NET_ADMIN"));
    // veth strips VLAN tags on receive by default: the daemon says so.
    assert!(
        lab.log("daemon").contains("rx-vlan-offload on"),
        "{}",
        lab.log("daemon")
    );

    // Traffic the program sees (broadcast pings from the peer, which has an
    // address: a does not), counted through the map descriptors.
    lab.ip(&["addr", "add", "198.18.10.2/24", "dev", &b]);
    let end = Instant::now() + Duration::from_secs(10);
    let mut seen = 0.0;
    while seen < 1.0 && Instant::now() < end {
        let _ = Command::new("ip")
            .args([
                "netns", "exec", &lab.ns, "ping", "-b", "-c", "2", "-i", "0.2",
            ])
            .args(["-W", "1", "-I", &b, "198.18.10.255"])
            .output();
        let (code, metrics) = http_get_in(&lab.ns, "127.0.0.1:9654", "/metrics").expect("metrics");
        assert_eq!(code, 200);
        seen = support::metric(&metrics, "wirelens_xdp_seen_total")
            .or_else(|| support::metric(&metrics, "xdp_seen_total"))
            .unwrap_or_else(|| panic!("xdp_seen in /metrics (map read failed?):\n{metrics}"));
    }
    assert!(seen >= 1.0, "the counters still count: {seen}");
    assert_eq!(lab.healthz(9654).map(|h| h.0), Some(200));

    let st = lab.stop(daemon);
    assert!(st.success(), "{st}: {}", lab.log("daemon"));
    let link = Command::new("ip")
        .args(["-n", &lab.ns, "link", "show", "dev", &a])
        .output()
        .expect("ip link");
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(
        !link.contains("prog/xdp"),
        "detached with CAP_NET_ADMIN alone: {link}"
    );
}

/// Spoofed TWAMP-light requests, IPv4 UDP over a raw socket: `argv`:
/// destination, port, sources (198.18.128.0 + i), requests per source.
/// Prints the seconds the flood took.
const FLOOD_PY: &str = r#"
import socket, struct, sys, time
dst, port, n_src, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
base = struct.unpack("!I", socket.inet_aton("198.18.128.0"))[0]
payload = bytearray(64)
payload[4] = 0xe0
payload[12] = 0x80
payload[13] = 0x01
t0 = time.time()
for r in range(per):
    for i in range(n_src):
        src = socket.inet_aton(socket.inet_ntoa(struct.pack("!I", base + i)))
        payload[0:4] = struct.pack("!I", r)
        udp = struct.pack("!HHHH", 40000 + (i % 1000), port, 8 + len(payload), 0) + payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, src,
                         socket.inet_aton(dst))
        s.sendto(ip + udp, (dst, 0))
print(time.time() - t0)
"#;

/// A reflector flooded from 10,000 spoofed sources (5 requests each) in a
/// namespace answers within its total rate and bounded memory, and every
/// request it read is counted as answered or refused by reason.
#[test]
fn a_reflector_flooded_from_spoofed_sources_stays_within_its_limits() {
    if skip_unless_root(
        "harden_lab::reflector_flood",
        "needs root (network namespaces, raw sockets)",
    ) {
        return;
    }
    let mut lab = Lab::new('p');
    let sender = format!("{}s", lab.ns);
    let _ = Command::new("ip").args(["netns", "del", &sender]).output();
    sh(&["ip", "netns", "add", &sender]);
    struct DelNs(String);
    impl Drop for DelNs {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
        }
    }
    let _sender_guard = DelNs(sender.clone());
    let (r, s) = (lab.dev("r"), lab.dev("s"));
    sh(&[
        "ip", "-n", &lab.ns, "link", "add", &r, "type", "veth", "peer", "name", &s, "netns",
        &sender,
    ]);
    lab.ip(&["addr", "add", "198.18.20.1/24", "dev", &r]);
    lab.ip(&["link", "set", &r, "up"]);
    sh(&[
        "ip",
        "-n",
        &sender,
        "addr",
        "add",
        "198.18.20.2/24",
        "dev",
        &s,
    ]);
    sh(&["ip", "-n", &sender, "link", "set", &s, "up"]);
    // Replies to the spoofed sources go back to the sender's namespace,
    // which drops them (not its addresses) after counting them on s.
    lab.ip(&["route", "add", "198.18.128.0/17", "via", "198.18.20.2"]);
    for k in ["all", "default", &r] {
        let _ = Command::new("ip")
            .args(["netns", "exec", &lab.ns, "sysctl", "-qw"])
            .arg(format!("net.ipv4.conf.{k}.rp_filter=0"))
            .output();
    }
    let err = std::fs::File::create(lab.dir.join("reflector.err")).expect("log");
    let refl = Command::new("ip")
        .args(["netns", "exec", &lab.ns, BIN, "probe", "reflect"])
        .args(["--listen", "198.18.20.1:862", "--quiet", "--duration", "8s"])
        .args(["--rate-per-source", "100", "--rate-total", "2000"])
        .stderr(err)
        .spawn()
        .expect("reflector");
    lab.children.push(refl);
    let idx = lab.children.len() - 1;
    let pid = lab.children[idx].id();
    thread::sleep(Duration::from_millis(500));
    let rx_before = rx_packets(&sender, &s);
    let flood = Command::new("ip")
        .args(["netns", "exec", &sender, "python3", "-c", FLOOD_PY])
        .args(["198.18.20.1", "862", "10000", "5"])
        .output()
        .expect("python3");
    assert!(
        flood.status.success(),
        "{}",
        String::from_utf8_lossy(&flood.stderr)
    );
    let secs: f64 = String::from_utf8_lossy(&flood.stdout)
        .trim()
        .parse()
        .unwrap();
    let hwm_kb = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|st| {
            st.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .expect("reflector memory");
    let st = lab.children[idx].wait().expect("reflector exits");
    assert!(st.success(), "{}", lab.log("reflector"));
    let log = lab.log("reflector");
    let num = |after: &str| -> u64 {
        let i = log
            .find(after)
            .unwrap_or_else(|| panic!("{after:?} in {log}"));
        log[..i]
            .split_whitespace()
            .last()
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("number before {after:?} in {log}"))
    };
    let reflected = num(" reflected");
    let limited = num(" over the per-source rate") + num(" over the total rate");
    // Burst of a quarter second (500) + 2000/s while the flood ran (+1 s of slack).
    let bound = 500 + (2000.0 * (secs + 1.0)) as u64;
    eprintln!(
        "reflector flood: 50000 requests in {secs:.2} s, {reflected} reflected (bound \
         {bound}), {limited} rate-limited, peak RSS {hwm_kb} kB"
    );
    assert!(reflected >= 500, "it answers up to its limit: {log}");
    assert!(reflected <= bound, "{reflected} > {bound}: {log}");
    // Every datagram the kernel queued to it (the rest overflowed its
    // receive buffer, counted by the kernel) is answered or counted refused.
    let delivered = udp_in_datagrams(&lab.ns);
    assert_eq!(
        reflected + limited,
        delivered,
        "every request read is counted: {log}"
    );
    assert!(hwm_kb < 200 * 1024, "bounded memory: {hwm_kb} kB");
    let rx = rx_packets(&sender, &s) - rx_before;
    assert!(
        rx <= reflected + 20,
        "replies on the wire ({rx}) are the reflected ones ({reflected})"
    );
}

/// `Udp: InDatagrams` of namespace `ns` (/proc/net/snmp).
fn udp_in_datagrams(ns: &str) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat", "/proc/net/snmp"])
        .output()
        .expect("snmp");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next().unwrap_or(""), udp.next().unwrap_or(""));
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "InDatagrams")
        .and_then(|(_, v)| v.parse().ok())
        .expect("Udp InDatagrams")
}

fn rx_packets(ns: &str, dev: &str) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat"])
        .arg(format!("/sys/class/net/{dev}/statistics/rx_packets"))
        .output()
        .expect("rx_packets");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}
