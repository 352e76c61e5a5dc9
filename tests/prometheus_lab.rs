//! The Prometheus side of wirelens against real processes: `promtool` on
//! `deploy/prometheus/` (check, and the unit test of the RTT spike rule),
//! then a real `prometheus` (Debian's 2.x) scraping a real `wirelens ctrl
//! serve` every second (fed by `wirelens analyze --push` of two captures
//! this test writes), and, as root, a real `wirelens run` on a SPAN port of
//! a namespace lab pushing to its own control plane.
//!
//! After the scrapes: every query of `deploy/grafana/wirelens.json` (panels
//! and template variables, with the variables set to "All") and every rule
//! of `deploy/prometheus/wirelens-rules.yml` evaluates without error through
//! `/api/v1/query`, Prometheus reports every rule healthy, the rules fire
//! for exactly the (rule, service) pairs `wirelens alerts` names (a
//! retransmission storm, a SYN-retry storm, a zero-window stall, an ICMP
//! fragmentation-needed; all but the RTT spike, whose baseline takes 30
//! minutes), and a
//! service's packets and its RTT `histogram_quantile` agree
//! with `wirelens services` (the quantile within the classic bucket that
//! holds the control plane's own quantile).
//!
//! Every process is a child of the test, on free loopback ports with a
//! temp directory of its own (or inside the lab's namespaces), stopped on
//! exit also on failure (Drop guards). The lab (root only; namespaces and
//! links `wlom<pid>*`, addresses from 198.18.0.0/15 only inside them):
//!
//! ```text
//!   ns ..c                                   ns ..s
//!   [..c] 198.18.1.2 ------- veth ------- [..s] 198.18.1.3:24850
//!     | tc clsact, ingress and egress: mirred egress mirror dev ..a
//!   [..a] ------- SPAN veth -------- [..b]   ns ..t: `wirelens run --iface ..b --ctrl
//!                                            --probe`, `ctrl serve`, `prometheus`, all on
//!                                            its loopback
//!   ns ..t [..p] 198.18.3.1 ---- veth ---- [..q] 198.18.3.2:862 in ns ..s:
//!                                            `wirelens probe reflect` (the probe path)
//! ```
//!
//! The lab half also checks the probes: the node's and the control plane's
//! probe series have every probe, and the control plane's loss and RTT are
//! those of `wirelens probes`.
//!
//! Run: `cargo test --test prometheus_lab` (the lab half as root; not root,
//! it skips with a SKIP line, or fails under `WIRELENS_REQUIRE_ROOT_TESTS=1`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use wirelens_ctrl::metrics::RTT_BUCKETS_S;

mod support;
use support::pcap::{Pcap, ACK, FIN, PSH, SYN};
use support::{sh, skip_unless_root};

const BIN: &str = env!("CARGO_BIN_EXE_wirelens");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const TRAFFIC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/labtraffic.py");
const SEC: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;
const NODE: &str = "wlom-node";
const TOKEN: &str = "wlom-token-0001";

fn deploy(p: &str) -> PathBuf {
    Path::new(ROOT).join("deploy").join(p)
}

/// A temp directory of the test (with the node's token file), removed on
/// drop, also on failure (the children's logs are printed before).
struct TmpDir(PathBuf);

impl std::ops::Deref for TmpDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tmpdir(name: &str) -> TmpDir {
    let d = std::env::temp_dir().join(format!("wlom-prom-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("tokens"), format!("{NODE}:{TOKEN}\n")).unwrap();
    TmpDir(d)
}

fn tool(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e} (scripts/setup.sh installs prometheus)"))
}

#[test]
fn promtool_accepts_and_tests_the_rules_and_the_scrape_config() {
    let rules = deploy("prometheus/wirelens-rules.yml");
    let o = tool(&["promtool", "check", "rules", rules.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "promtool check rules:\n{out}");
    assert!(out.contains("SUCCESS: 8 rules found"), "{out}");
    // The RTT spike against its 30 minute baseline, on promtool's clock.
    let test = deploy("prometheus/wirelens-rules.test.yml");
    let o = tool(&["promtool", "test", "rules", test.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "promtool test rules:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");
    let config = deploy("prometheus/prometheus.yml");
    let o = tool(&["promtool", "check", "config", config.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "promtool check config:\n{out}");
    assert!(
        out.contains("1 rule files found"),
        "the rules load with the config: {out}"
    );
}

// ---- processes -------------------------------------------------------------

/// Children of the test, killed on drop (SIGTERM first, so `wirelens run`
/// detaches its program; SIGKILL after 5 s).
#[derive(Default)]
struct Children(Vec<(String, Child)>, Option<PathBuf>);

impl Children {
    fn spawn(&mut self, dir: &Path, ns: Option<&str>, name: &str, args: &[&str]) -> usize {
        let err = std::fs::File::create(dir.join(format!("{name}.err"))).unwrap();
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).args(args);
                c
            }
            None => {
                let mut c = Command::new(args[0]);
                c.args(&args[1..]);
                c
            }
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {args:?}: {e}"));
        self.0.push((name.to_string(), child));
        self.1 = Some(dir.to_path_buf());
        self.0.len() - 1
    }

    fn log(&self, name: &str) -> String {
        self.1
            .as_ref()
            .and_then(|d| std::fs::read_to_string(d.join(format!("{name}.err"))).ok())
            .unwrap_or_default()
    }

    fn wait(&mut self, i: usize, t: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + t;
        loop {
            if let Ok(Some(st)) = self.0[i].1.try_wait() {
                return Some(st);
            }
            if Instant::now() >= end {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            if !matches!(c.try_wait(), Ok(None)) {
                continue;
            }
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        for i in 0..self.0.len() {
            if self.wait(i, Duration::from_secs(5)).is_none() {
                let _ = self.0[i].1.kill();
                let _ = self.0[i].1.wait();
            }
        }
        if thread::panicking() {
            for (name, _) in &self.0 {
                eprintln!("--- {name}:\n{}", self.log(name));
            }
        }
    }
}

/// A free loopback port (bound, then released for the server to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Percent-encoding of a query parameter.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Where HTTP requests go: host loopback, or loopback inside a namespace.
#[derive(Clone)]
enum Net {
    Host,
    #[cfg_attr(not(feature = "live"), allow(dead_code))]
    Ns(String),
}

impl Net {
    fn get(&self, addr: &str, path: &str) -> Option<(u16, String)> {
        match self {
            Net::Host => support::http_get(addr, path),
            #[cfg(feature = "live")]
            Net::Ns(ns) => support::http_get_in(ns, addr, path),
            #[cfg(not(feature = "live"))]
            Net::Ns(_) => None,
        }
    }

    fn ns(&self) -> Option<&str> {
        match self {
            Net::Host => None,
            Net::Ns(n) => Some(n),
        }
    }
}

/// Starts `wirelens ctrl serve` on `addr`; waits until it answers.
fn start_ctrl(ch: &mut Children, dir: &Path, net: &Net, addr: &str) -> String {
    let db = dir.join("ctrl.db");
    let tokens = dir.join("tokens");
    let i = ch.spawn(
        dir,
        net.ns(),
        "ctrl",
        &[
            BIN,
            "ctrl",
            "serve",
            "--listen",
            addr,
            "--db",
            db.to_str().unwrap(),
            "--token-file",
            tokens.to_str().unwrap(),
        ],
    );
    let end = Instant::now() + Duration::from_secs(30);
    while !matches!(net.get(addr, "/healthz"), Some((200, _))) {
        if let Ok(Some(st)) = ch.0[i].1.try_wait() {
            panic!("ctrl serve exited ({st}):\n{}", ch.log("ctrl"));
        }
        assert!(
            Instant::now() < end,
            "ctrl serve not up:\n{}",
            ch.log("ctrl")
        );
        thread::sleep(Duration::from_millis(50));
    }
    format!("http://{addr}")
}

/// A real Prometheus with a 1 s scrape of `targets` (job, addr) and the
/// deploy rules, on `addr` with a data directory under `dir`.
struct Prometheus {
    net: Net,
    addr: String,
}

impl Prometheus {
    fn start(
        ch: &mut Children,
        dir: &Path,
        net: &Net,
        addr: &str,
        targets: &[(&str, &str)],
    ) -> Prometheus {
        let rules = deploy("prometheus/wirelens-rules.yml");
        let mut cfg = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\nscrape_configs:\n",
            rules.display()
        );
        for (job, t) in targets {
            cfg.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: [\"{t}\"]\n"
            ));
        }
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, cfg).unwrap();
        let data = dir.join("prometheus-data");
        let o = tool(&["promtool", "check", "config", config.to_str().unwrap()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let i = ch.spawn(
            dir,
            net.ns(),
            "prometheus",
            &[
                "prometheus",
                &format!("--config.file={}", config.display()),
                &format!("--storage.tsdb.path={}", data.display()),
                &format!("--web.listen-address={addr}"),
                "--storage.tsdb.retention.time=1h",
            ],
        );
        let p = Prometheus {
            net: net.clone(),
            addr: addr.to_string(),
        };
        let end = Instant::now() + Duration::from_secs(60);
        while !matches!(p.net.get(addr, "/-/ready"), Some((200, _))) {
            if let Ok(Some(st)) = ch.0[i].1.try_wait() {
                panic!("prometheus exited ({st}):\n{}", ch.log("prometheus"));
            }
            assert!(
                Instant::now() < end,
                "prometheus not ready:\n{}",
                ch.log("prometheus")
            );
            thread::sleep(Duration::from_millis(100));
        }
        p
    }

    /// `/api/v1/{what}`: the JSON answer, with its `status`.
    fn api(&self, what: &str) -> Value {
        let (code, body) = self
            .net
            .get(&self.addr, &format!("/api/v1/{what}"))
            .unwrap_or_else(|| panic!("prometheus did not answer {what}"));
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{what}: {code} not JSON ({e}): {body}"));
        v
    }

    /// An instant query that must evaluate: its result vector.
    fn query(&self, expr: &str) -> Vec<Value> {
        let v = self.api(&format!("query?query={}", enc(expr)));
        assert_eq!(v["status"], "success", "{expr}: {v}");
        match &v["data"]["result"] {
            Value::Array(a) => a.clone(),
            other => vec![other.clone()],
        }
    }

    /// The single value of `expr` (a vector of one sample), if any.
    fn value(&self, expr: &str) -> Option<f64> {
        let r = self.query(expr);
        assert!(r.len() <= 1, "{expr}: more than one series: {r:?}");
        r.first()?["value"][1].as_str()?.parse().ok()
    }

    /// Waits until `cond` holds, up to `t`.
    fn wait_for(&self, what: &str, t: Duration, cond: impl Fn(&Prometheus) -> bool) {
        let end = Instant::now() + t;
        while !cond(self) {
            assert!(Instant::now() < end, "prometheus: {what} not within {t:?}");
            thread::sleep(Duration::from_millis(250));
        }
    }
}

// ---- the deploy files' queries ----------------------------------------------

/// Every PromQL expression of the dashboard: panel targets and query
/// variables (`label_values(SELECTOR, label)` as its selector), with the
/// variables set as Grafana sets "All".
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(deploy("grafana/wirelens.json")).unwrap();
    let d: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut out = Vec::new();
    fn panels(v: &Value, out: &mut Vec<String>) {
        for p in v.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push(t["expr"].as_str().expect("a target's expr").to_string());
            }
            panels(&p["panels"], out);
        }
    }
    panels(&d["panels"], &mut out);
    let vars = d["templating"]["list"].as_array().expect("templating");
    assert!(
        vars.iter()
            .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
        "the data source is a template variable"
    );
    for v in vars.iter().filter(|v| v["type"] == "query") {
        let q = v["query"]["query"].as_str().expect("a variable's query");
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|r| r.rsplit_once(','))
            .map(|(sel, _)| sel.to_string())
            .unwrap_or_else(|| panic!("variable query {q}"));
        out.push(inner);
    }
    for t in d["panels"].as_array().into_iter().flatten() {
        let ds = &t["datasource"];
        if !ds.is_null() && t["type"] != "row" {
            assert_eq!(ds["uid"], "${datasource}", "panel {}", t["title"]);
        }
    }
    out.iter()
        .map(|e| {
            let e = e
                .replace("$__rate_interval", "1m")
                .replace("$server", ".*")
                .replace("$port", ".*")
                .replace("$instance", ".*");
            assert!(!e.contains('$'), "a variable the test does not set: {e}");
            e
        })
        .collect()
}

/// Every dashboard query and every rule evaluates; Prometheus says each
/// rule is healthy. Returns the dashboard queries with their results.
fn check_queries_and_rules(p: &Prometheus) -> Vec<(String, Vec<Value>)> {
    let qs = dashboard_queries();
    assert!(qs.len() >= 30, "{} queries", qs.len());
    let results: Vec<(String, Vec<Value>)> =
        qs.into_iter().map(|q| (q.clone(), p.query(&q))).collect();
    p.wait_for(
        "every rule evaluated and healthy",
        Duration::from_secs(20),
        |p| {
            let r = p.api("rules");
            let rules: Vec<&Value> = r["data"]["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                .collect();
            rules.len() == 8
                && rules.iter().all(|r| {
                    r["health"] == "ok"
                        && !r["lastEvaluation"]
                            .as_str()
                            .unwrap_or("0001")
                            .starts_with("0001")
                })
        },
    );
    let r = p.api("rules");
    for g in r["data"]["groups"].as_array().unwrap() {
        for rule in g["rules"].as_array().unwrap() {
            let q = rule["query"].as_str().unwrap();
            p.query(q);
            assert!(
                rule["lastError"].as_str().unwrap_or("").is_empty(),
                "{rule}"
            );
        }
    }
    results
}

/// The index of the classic bucket holding `v` seconds.
fn bucket_of(v: f64) -> usize {
    RTT_BUCKETS_S
        .iter()
        .position(|&le| v <= le)
        .unwrap_or(RTT_BUCKETS_S.len())
}

/// `q` (from `histogram_quantile`) lies in the classic bucket of `want_ns`
/// (the control plane's quantile; its bucket or, within the histogram's
/// 1.6 % error of a bound, the neighbour).
fn assert_same_bucket(what: &str, q: f64, want_ns: u64) {
    let v = want_ns as f64 / 1e9;
    let ok = [v * 0.984, v, v * 1.016].iter().any(|&x| {
        let k = bucket_of(x);
        let lo = if k == 0 { 0.0 } else { RTT_BUCKETS_S[k - 1] };
        let hi = RTT_BUCKETS_S.get(k).copied().unwrap_or(f64::INFINITY);
        q >= lo && q <= hi
    });
    assert!(
        ok,
        "{what}: histogram_quantile {q} s is not in the bucket of wirelens services' {v} s"
    );
}

/// Per service (`ip:port/proto`) as `wirelens services` prints it.
fn services(net: &Net, url: &str) -> Vec<Value> {
    query_cli(net, "services", url)
}

/// `wirelens WHAT --ctrl URL --format json` (in the namespace of `net`): its rows.
fn query_cli(net: &Net, what: &str, url: &str) -> Vec<Value> {
    let mut cmd = match net.ns() {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, BIN]);
            c
        }
        None => Command::new(BIN),
    };
    let o = cmd
        .args([what, "--ctrl", url, "--format", "json"])
        .env_remove("WIRELENS_CTRL")
        .output()
        .expect("wirelens");
    assert!(
        o.status.success(),
        "wirelens {what}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice::<Value>(&o.stdout)
        .unwrap_or_else(|e| panic!("wirelens {what}: not JSON ({e})"))
        .as_array()
        .expect("an array")
        .clone()
}

/// The selector of a control plane service series.
fn svc_selector(service: &str) -> String {
    let (addr, proto) = service.rsplit_once('/').unwrap();
    let (ip, port) = addr.rsplit_once(':').unwrap();
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    format!("server=\"{ip}\",port=\"{port}\",proto=\"{proto}\"")
}

/// Packets and both sides' RTT p50/p99 of `service` in Prometheus (from the
/// control plane's series) against `wirelens services`.
fn assert_service_agrees(p: &Prometheus, s: &Value) {
    let name = s["service"].as_str().unwrap();
    let sel = svc_selector(name);
    let packets = p
        .value(&format!("sum(wirelens_service_packets_total{{{sel}}})"))
        .unwrap_or_else(|| panic!("{name}: no packets series"));
    assert_eq!(
        packets,
        s["packets"].as_u64().unwrap() as f64,
        "{name}: packets in Prometheus vs wirelens services"
    );
    let mut compared = 0;
    for side in ["server", "client"] {
        for (q, key) in [(0.5, "p50_ns"), (0.99, "p99_ns")] {
            let Some(want) = s[format!("rtt_{side}")][key].as_u64() else {
                continue;
            };
            let got = p
                .value(&format!(
                    "histogram_quantile({q}, sum by (le) (wirelens_service_rtt_seconds_bucket{{{sel},side=\"{side}\"}}))"
                ))
                .unwrap_or_else(|| panic!("{name}: no {side} RTT histogram"));
            assert_same_bucket(&format!("{name} {side} p{q}"), got, want);
            compared += 1;
        }
    }
    assert!(compared >= 2, "{name}: no RTT quantile to compare: {s}");
}

// ---- the control plane on loopback ------------------------------------------

const SVC: [u8; 4] = [198, 18, 2, 2];
const SVC2: [u8; 4] = [198, 18, 2, 3];
const SVC3: [u8; 4] = [198, 18, 2, 4];
const SVC4: [u8; 4] = [198, 18, 2, 5];
const SVC5: [u8; 4] = [198, 18, 2, 6];

/// Five TCP services. The first capture has clean connections of each:
/// 198.18.2.2:8080 (40 ms RTT), 198.18.2.3:443, 198.18.2.4:9000,
/// 198.18.2.5:7000 and 198.18.2.6:5000 (3 ms). The second has what the
/// control plane alerts on:
/// a connection to 198.18.2.3:443 with every 4th segment sent twice (a
/// retransmission storm), five clients each sending their SYN to
/// 198.18.2.4:9000 twice (a SYN-retry storm), and a server 198.18.2.5:7000
/// advertising a zero window for 800 ms, and a router's ICMP "fragmentation
/// needed" (MTU 1400) quoting a segment of 198.18.2.6:5000.
fn captures(dir: &Path) -> (PathBuf, PathBuf) {
    let t0 = wirelens_ctrl::now_ns() - 120 * SEC;
    let mut a = Pcap::new();
    for k in 0..4u8 {
        a.conversation(
            t0 + u64::from(k) * SEC,
            ([198, 18, 1, 10 + k], 40_000 + u16::from(k)),
            (SVC, 8080),
            40 * MS,
            8,
            None,
        );
    }
    for (k, svc) in [(SVC2, 443), (SVC3, 9000), (SVC4, 7000), (SVC5, 5000)]
        .into_iter()
        .enumerate()
    {
        a.conversation(
            t0 + (5 + k as u64) * SEC,
            ([198, 18, 3, 31 + k as u8], 42_001),
            svc,
            3 * MS,
            10,
            None,
        );
    }
    let mut b = Pcap::new();
    b.conversation(
        t0 + 5 * SEC,
        ([198, 18, 3, 30], 42_000),
        (SVC2, 443),
        3 * MS,
        120,
        Some(4),
    );
    for k in 0..5u8 {
        let (t, c) = (
            t0 + (10 + 2 * u64::from(k)) * SEC,
            ([198, 18, 5, 50 + k], 44_000),
        );
        // The first SYN goes unanswered; the conversation's own SYN is the retry.
        b.tcp(t, c, (SVC3, 9000), 1000, 0, SYN, 0);
        b.conversation(t + SEC, c, (SVC3, 9000), 3 * MS, 8, None);
    }
    let (t, c, s) = (t0 + 25 * SEC, ([198, 18, 4, 40], 43_000), (SVC4, 7000));
    let (ci, si) = (1000u32, 50_000u32);
    b.tcp(t, c, s, ci, 0, SYN, 0);
    b.tcp(t + 3 * MS, s, c, si, ci + 1, SYN | ACK, 0);
    b.tcp(t + 3 * MS + 50_000, c, s, ci + 1, si + 1, ACK, 0);
    b.tcp(t + 5 * MS, c, s, ci + 1, si + 1, ACK | PSH, 100);
    b.set_window(0);
    b.tcp(t + 8 * MS, s, c, si + 1, ci + 101, ACK, 0);
    b.set_window(0xffff);
    b.tcp(t + 808 * MS, s, c, si + 1, ci + 101, ACK, 0);
    b.tcp(t + 810 * MS, c, s, ci + 101, si + 1, ACK | PSH, 100);
    b.tcp(t + 813 * MS, s, c, si + 1, ci + 201, ACK, 0);
    b.tcp(t + 820 * MS, c, s, ci + 201, si + 1, FIN | ACK, 0);
    b.tcp(t + 823 * MS, s, c, si + 1, ci + 202, FIN | ACK, 0);
    b.tcp(t + 824 * MS, c, s, ci + 202, si + 2, ACK, 0);
    let (t, c, s) = (t0 + 30 * SEC, ([198, 18, 4, 41], 43_001), (SVC5, 5000));
    b.conversation(t, c, s, 3 * MS, 8, None);
    b.frag_needed(t + SEC, [198, 18, 2, 1], s, c, 50_001, 1460, 1400);
    let (fa, fb) = (dir.join("a.pcap"), dir.join("b.pcap"));
    a.write(&fa);
    b.write(&fb);
    (fa, fb)
}

/// `wirelens analyze FILE --push URL` as the test's node.
fn push(dir: &Path, url: &str, cap: &Path) {
    let o = Command::new(BIN)
        .arg("analyze")
        .arg(cap)
        .args(["--push", url, "--node", NODE, "--format", "json"])
        .arg("--token-file")
        .arg(dir.join("tokens"))
        .env_remove("WIRELENS_CTRL")
        .output()
        .expect("wirelens analyze --push");
    assert!(
        o.status.success(),
        "analyze --push: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn prometheus_evaluates_dashboard_and_rules_over_ctrl_serve() {
    let dir = tmpdir("ctrl");
    let mut ch = Children::default();
    let net = Net::Host;
    let ctrl_addr = format!("127.0.0.1:{}", free_port());
    let url = start_ctrl(&mut ch, &dir, &net, &ctrl_addr);
    let prom_addr = format!("127.0.0.1:{}", free_port());
    let p = Prometheus::start(
        &mut ch,
        &dir,
        &net,
        &prom_addr,
        &[("wirelens-ctrl", &ctrl_addr)],
    );
    p.wait_for("a scrape of ctrl serve", Duration::from_secs(20), |p| {
        p.value("up{job=\"wirelens-ctrl\"}") == Some(1.0)
    });
    // The storm arrives after Prometheus has scraped every service, so the
    // counters rise inside the rules' windows.
    let (first, storm) = captures(&dir);
    push(&dir, &url, &first);
    let scraped = |n: f64| {
        move |p: &Prometheus| {
            p.value("min(count_over_time(wirelens_service_packets_total{server!=\"\"}[1m]))")
                .is_some_and(|c| c >= n)
                && p.query("wirelens_service_packets_total{server!=\"\"}")
                    .len()
                    >= 5
        }
    };
    p.wait_for(
        "two scrapes of every service",
        Duration::from_secs(30),
        scraped(2.0),
    );
    push(&dir, &url, &storm);
    p.wait_for("more scrapes", Duration::from_secs(30), scraped(5.0));

    let results = check_queries_and_rules(&p);
    // The panels over the control plane's services have data.
    for (want, min_series) in [
        ("wirelens_service_rtt_seconds_bucket{server!=\"\",server=~\".*\",port=~\".*\",side=\"server\"}[1m])))", 2),
        ("rate(wirelens_service_retransmits_total{", 2),
        ("rate(wirelens_service_packets_total{", 2),
        ("rate(wirelens_ctrl_reports_total", 1),
    ] {
        let hit = results
            .iter()
            .filter(|(q, _)| q.contains(want))
            .map(|(_, r)| r.len())
            .max()
            .unwrap_or_else(|| panic!("no dashboard query with {want}"));
        assert!(hit >= min_series, "{want}: {hit} series");
    }

    // The rules fire where the control plane alerts, and only there: the
    // same (rule, service) pairs (each Prometheus rule carries the control
    // plane's rule name in its `rule` label).
    let o = Command::new(BIN)
        .args(["alerts", "--ctrl", &url, "--format", "json"])
        .env_remove("WIRELENS_CTRL")
        .output()
        .unwrap();
    let alerts: Value = serde_json::from_slice(&o.stdout).expect("alerts JSON");
    let mut ctrl_alerts: Vec<String> = alerts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let svc = a["service"].as_str().unwrap();
            format!(
                "{} {}",
                a["rule"].as_str().unwrap(),
                svc.rsplit_once('/').unwrap().0
            )
        })
        .collect();
    ctrl_alerts.sort();
    assert_eq!(
        ctrl_alerts,
        [
            "pmtu 198.18.2.6:5000",
            "retransmissions 198.18.2.3:443",
            "syn_retry_storm 198.18.2.4:9000",
            "zero_window 198.18.2.5:7000"
        ]
    );
    let firing = |p: &Prometheus| -> Vec<String> {
        let mut v: Vec<String> = p
            .query("ALERTS{alertstate=\"firing\"}")
            .iter()
            .map(|a| {
                let m = &a["metric"];
                let g = |k: &str| m[k].as_str().unwrap_or("").to_string();
                format!("{} {}:{}", g("rule"), g("server"), g("port"))
            })
            .collect();
        v.sort();
        v
    };
    let end = Instant::now() + Duration::from_secs(30);
    while firing(&p) != ctrl_alerts {
        assert!(
            Instant::now() < end,
            "Prometheus fires {:?}, the control plane {ctrl_alerts:?}",
            firing(&p)
        );
        thread::sleep(Duration::from_millis(250));
    }

    // Packets and RTT quantiles agree with `wirelens services`.
    let svcs = services(&net, &url);
    let tcp: Vec<&Value> = svcs
        .iter()
        .filter(|s| s["service"].as_str().is_some_and(|n| n.ends_with("/tcp")))
        .collect();
    assert_eq!(tcp.len(), 5, "{svcs:?}");
    for s in tcp {
        assert_service_agrees(&p, s);
    }
}

// ---- the node in a namespace lab (root) --------------------------------------

#[cfg(feature = "live")]
mod lab {
    use super::*;

    const CLIENT: &str = "198.18.1.2";
    const SERVER: &str = "198.18.1.3";
    const PORT: u16 = 24850;
    const CTRL: &str = "127.0.0.1:7878";
    const NODE_HTTP: &str = "127.0.0.1:9640";
    const PROM: &str = "127.0.0.1:9090";
    const REFLECTOR: &str = "198.18.3.2";
    /// Probes the node sends (20 ms apart, 1 s windows).
    const PROBES: u64 = 150;

    /// The namespaces and links; deleted on drop (after the children).
    struct Lab {
        id: String,
        ch: Children,
        dir: TmpDir,
    }

    impl Lab {
        fn ns(&self, n: &str) -> String {
            format!("{}{n}", self.id)
        }

        fn nsx(&self, n: &str, args: &[&str]) {
            let ns = self.ns(n);
            let mut v = vec!["ip", "netns", "exec", &ns];
            v.extend_from_slice(args);
            sh(&v);
        }

        fn cleanup(&self) {
            for n in ["c", "s", "t"] {
                let _ = Command::new("ip")
                    .args(["netns", "del", &self.ns(n)])
                    .output();
            }
            let suffix = format!("-{}.lock", self.ns("b"));
            support::remove_lock_files(|f| f.ends_with(&suffix));
        }

        fn new() -> Lab {
            let id = format!("wlom{}", std::process::id() % 100_000);
            let dir = tmpdir("lab");
            let lab = Lab {
                id,
                dir,
                ch: Children::default(),
            };
            lab.cleanup();
            let (c, s, t) = (lab.ns("c"), lab.ns("s"), lab.ns("t"));
            for ns in [&c, &s, &t] {
                sh(&["ip", "netns", "add", ns]);
                sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
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
            }
            let (dc, ds, da, db) = (lab.ns("c"), lab.ns("s"), lab.ns("a"), lab.ns("b"));
            sh(&[
                "ip", "link", "add", &dc, "netns", &c, "type", "veth", "peer", "name", &ds,
                "netns", &s,
            ]);
            sh(&[
                "ip", "link", "add", &da, "netns", &c, "type", "veth", "peer", "name", &db,
                "netns", &t,
            ]);
            for (n, d) in [("c", &dc), ("s", &ds), ("c", &da), ("t", &db)] {
                // Frames of at most the MTU on the wire and at the tap.
                let _ = Command::new("ip")
                    .args(["netns", "exec", &lab.ns(n), "ethtool", "-K", d])
                    .args(["tso", "off", "gso", "off", "gro", "off"])
                    .output();
                sh(&["ip", "-n", &lab.ns(n), "link", "set", d, "up"]);
            }
            sh(&[
                "ip",
                "-n",
                &c,
                "addr",
                "add",
                &format!("{CLIENT}/24"),
                "dev",
                &dc,
            ]);
            sh(&[
                "ip",
                "-n",
                &s,
                "addr",
                "add",
                &format!("{SERVER}/24"),
                "dev",
                &ds,
            ]);
            // The probe path: t <-> s beside the tapped one.
            let (dp, dq) = (lab.ns("p"), lab.ns("q"));
            sh(&[
                "ip", "link", "add", &dp, "netns", &t, "type", "veth", "peer", "name", &dq,
                "netns", &s,
            ]);
            sh(&["ip", "-n", &t, "link", "set", &dp, "up"]);
            sh(&["ip", "-n", &s, "link", "set", &dq, "up"]);
            sh(&["ip", "-n", &t, "addr", "add", "198.18.3.1/24", "dev", &dp]);
            sh(&[
                "ip",
                "-n",
                &s,
                "addr",
                "add",
                &format!("{REFLECTOR}/24"),
                "dev",
                &dq,
            ]);
            lab.nsx("c", &["tc", "qdisc", "add", "dev", &dc, "clsact"]);
            for dir in ["ingress", "egress"] {
                lab.nsx(
                    "c",
                    &[
                        "tc", "filter", "add", "dev", &dc, dir, "protocol", "all", "u32", "match",
                        "u32", "0", "0", "action", "mirred", "egress", "mirror", "dev", &da,
                    ],
                );
            }
            lab
        }
    }

    impl Drop for Lab {
        fn drop(&mut self) {
            // The children first (their Drop), then the namespaces.
            drop(std::mem::take(&mut self.ch));
            self.cleanup();
        }
    }

    #[test]
    fn prometheus_scrapes_wirelens_run_and_its_control_plane() {
        if skip_unless_root(
            "prometheus_lab::prometheus_scrapes_wirelens_run_and_its_control_plane",
            "needs root (namespaces, XDP, AF_XDP)",
        ) {
            return;
        }
        let mut lab = Lab::new();
        let net = Net::Ns(lab.ns("t"));
        let dir = lab.dir.to_path_buf();
        let url = start_ctrl(&mut lab.ch, &dir, &net, CTRL);
        let p = Prometheus::start(
            &mut lab.ch,
            &dir,
            &net,
            PROM,
            &[("wirelens-ctrl", CTRL), ("wirelens-node", NODE_HTTP)],
        );
        let reflector = format!("{REFLECTOR}:862");
        lab.ch.spawn(
            &dir,
            Some(&lab.ns("s")),
            "reflector",
            &[
                BIN,
                "probe",
                "reflect",
                "--listen",
                &reflector,
                "--duration",
                "120s",
            ],
        );
        thread::sleep(Duration::from_millis(300)); // the reflector binds
        let probe = format!("{reflector},interval=20ms,window=1s,count={PROBES}");
        let tokens = dir.join("tokens");
        let b = lab.ns("b");
        let node = lab.ch.spawn(
            &dir,
            net.ns(),
            "node",
            &[
                BIN,
                "run",
                "--iface",
                &b,
                "--listen",
                NODE_HTTP,
                "--ctrl",
                &url,
                "--token-file",
                tokens.to_str().unwrap(),
                "--node",
                NODE,
                "--push-secs",
                "1",
                "--tcp-idle",
                "3600",
                "--probe",
                &probe,
            ],
        );
        let end = Instant::now() + Duration::from_secs(60);
        while !matches!(net.get(NODE_HTTP, "/healthz"), Some((200, _))) {
            if let Ok(Some(st)) = lab.ch.0[node].1.try_wait() {
                panic!("wirelens run exited ({st}):\n{}", lab.ch.log("node"));
            }
            assert!(
                Instant::now() < end,
                "run not healthy:\n{}",
                lab.ch.log("node")
            );
            thread::sleep(Duration::from_millis(100));
        }
        p.wait_for("scrapes of both", Duration::from_secs(20), |p| {
            p.value("sum(up)") == Some(2.0)
        });

        // Real TCP from the Linux stack: 20 connections, 20 kB each way.
        let ready = dir.join("server.ready");
        let port = PORT.to_string();
        let srv = lab.ch.spawn(
            &dir,
            Some(&lab.ns("s")),
            "server",
            &[
                "python3",
                TRAFFIC,
                "server",
                "--bind",
                SERVER,
                "--port",
                &port,
                "--count",
                "20",
                "--reply",
                "20000",
                "--timeout",
                "40",
                "--ready",
                ready.to_str().unwrap(),
            ],
        );
        let end = Instant::now() + Duration::from_secs(20);
        while !ready.exists() {
            assert!(
                Instant::now() < end,
                "server not ready: {}",
                lab.ch.log("server")
            );
            thread::sleep(Duration::from_millis(20));
        }
        let cli = lab.ch.spawn(
            &dir,
            Some(&lab.ns("c")),
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
                "20",
                "--parallel",
                "2",
                "--send",
                "20000",
                "--timeout",
                "40",
            ],
        );
        let st = lab
            .ch
            .wait(cli, Duration::from_secs(50))
            .expect("client ends");
        assert!(st.success(), "client: {}", lab.ch.log("client"));
        let st = lab
            .ch
            .wait(srv, Duration::from_secs(50))
            .expect("server ends");
        assert!(st.success(), "server: {}", lab.ch.log("server"));

        // The node's own count, the control plane's and `wirelens services`
        // agree once the last push is in and scraped.
        let service = format!("{SERVER}:{PORT}/tcp");
        let sel = svc_selector(&service);
        let node_q = format!("sum(wirelens_service_packets_total{{service=\"{SERVER}:{PORT}\"}})");
        let ctrl_q = format!("sum(wirelens_service_packets_total{{{sel}}})");
        let mut last: (Option<f64>, Option<f64>, Option<f64>);
        let end = Instant::now() + Duration::from_secs(40);
        loop {
            let svc = services(&net, &url)
                .into_iter()
                .find(|s| s["service"] == service.as_str())
                .and_then(|s| s["packets"].as_u64())
                .map(|v| v as f64);
            last = (p.value(&node_q), p.value(&ctrl_q), svc);
            if last.0.is_some() && last.0 == last.1 && last.1 == last.2 {
                break;
            }
            assert!(
                Instant::now() < end,
                "node / ctrl / services packets never agreed: {last:?}"
            );
            thread::sleep(Duration::from_millis(500));
        }
        assert!(last.0.is_some_and(|n| n >= 20.0 * 20.0), "{last:?}");
        // Three more scrapes, so rate() over 1m sees the rise.
        thread::sleep(Duration::from_secs(3));

        // Every probe answered, at the node and at the control plane, and
        // its /metrics says what `wirelens probes` says.
        let ctrl_up = format!("wirelens_probe_up{{node=\"{NODE}\",target=\"{reflector}\"}}");
        let node_sent = format!(
            "wirelens_probe_packets_total{{job=\"wirelens-node\",target=\"{reflector}\",result=\"sent\"}}"
        );
        p.wait_for("the probes' last window", Duration::from_secs(30), |p| {
            p.value(&node_sent) == Some(PROBES as f64) && p.value(&ctrl_up) == Some(1.0)
        });
        let rows = query_cli(&net, "probes", &url);
        let row = rows
            .iter()
            .find(|r| r["target"] == reflector.as_str() && r["node"] == NODE)
            .unwrap_or_else(|| panic!("no probe row: {rows:?}"));
        assert_eq!(row["sent"], PROBES, "{row}");
        for (d, key) in [
            ("any", "loss_rate"),
            ("up", "loss_up_rate"),
            ("down", "loss_down_rate"),
        ] {
            let got = p.value(&format!(
                "wirelens_probe_loss_ratio{{node=\"{NODE}\",target=\"{reflector}\",direction=\"{d}\"}}"
            ));
            assert_eq!(got, row[key].as_f64(), "probe loss {d}: {row}");
        }
        let p50 = p
            .value(&format!(
                "wirelens_probe_rtt_seconds{{node=\"{NODE}\",target=\"{reflector}\",quantile=\"0.5\"}}"
            ))
            .expect("the control plane's probe RTT");
        let want = row["rtt"]["p50_ns"].as_u64().expect("probe RTT p50") as f64 / 1e9;
        assert!(
            (p50 - want).abs() <= want * 0.02,
            "probe p50 {p50} vs {want}"
        );

        let results = check_queries_and_rules(&p);
        for want in [
            "wirelens_probe_loss_ratio{direction=~",
            "wirelens_probe_rtt_seconds{quantile=~",
            "rate(wirelens_packets_total{",
            "rate(wirelens_xdp_seen_total{",
            "rate(wirelens_xsk_rx_ring_full_total{",
            "rate(wirelens_handoff_ring_full_total{",
            "wirelens_push_backlog{",
            "wirelens_service_rtt_seconds_bucket{server!=\"\",server=~\".*\",port=~\".*\",side=\"server\"}[1m])))",
        ] {
            assert!(
                results
                    .iter()
                    .any(|(q, r)| q.contains(want) && !r.is_empty()),
                "no data for the dashboard's {want}"
            );
        }
        let svc = services(&net, &url)
            .into_iter()
            .find(|s| s["service"] == service.as_str())
            .expect("the lab service");
        assert_service_agrees(&p, &svc);
        // The node's own histogram holds the same samples as the control plane's.
        let want = svc["rtt_server"]["p50_ns"]
            .as_u64()
            .expect("server RTT p50");
        let got = p
            .value(&format!(
                "histogram_quantile(0.5, sum by (le) (wirelens_service_rtt_seconds_bucket{{service=\"{SERVER}:{PORT}\",half=\"server\"}}))"
            ))
            .expect("the node's RTT histogram");
        assert_same_bucket("node server p50", got, want);
    }
}
