//! `wirelens bench ctrl`: a fleet of simulated nodes against a real control
//! plane over real HTTP.
//!
//! `--nodes` nodes each hold `--flows` live flows and report every
//! `--interval` seconds: every round, every node sends one delta per flow, cut
//! into reports of at most `--report-flows` deltas, from `--clients`
//! keep-alive connections. The server is a `wirelens ctrl serve` process the
//! bench starts itself (`--server-bin`, default this binary; own port, own
//! temporary directory, killed and removed on exit), or the one at `--url`.
//!
//! Measured: deltas/s offered (what the schedule asks for) and acknowledged
//! (a 200 from the server, which answers after its commit), the latency of
//! each report from the first byte sent to the answer ("commit latency"),
//! the latency of `GET /api/v1/services` polled during the load, the
//! server's resident set (own server only), bytes per delta on the wire
//! (request bodies) and on disk (growth of the database and its WAL over the
//! run, after a checkpoint, divided by the acknowledged deltas).
//!
//! The body of a report is made by one function, [`encode_report`], so that
//! other encodings plug in at one place.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};
use serde::Serialize;
use wirelens_ctrl::report::{FlowDelta, NodeMeta, NodeReport};
use wirelens_dataplane::report::{
    Direction, Endpoint, FlowRecord, Handshake, PerSide, Proto, TcpInfo, TcpState, FLOW_SCHEMA,
};
use wirelens_dataplane::stats::Histogram;

use wirelens_output::Format;

#[derive(Debug, Args)]
pub struct CtrlArgs {
    /// Simulated nodes.
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    /// Live flows per node (one delta each per round).
    #[arg(long, default_value_t = 10_000)]
    pub flows: usize,
    /// Seconds between two reports of a node's flows.
    #[arg(long, default_value_t = 5.0)]
    pub interval: f64,
    /// Seconds of load.
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// Most flow deltas in one report.
    #[arg(long, default_value_t = 2000)]
    pub report_flows: usize,
    /// Parallel HTTP connections sending reports.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Services (server ip:port) the flows are spread over.
    #[arg(long, default_value_t = 50)]
    pub services: usize,
    /// Milliseconds between two `GET /api/v1/services` during the load.
    #[arg(long, default_value_t = 500)]
    pub query_every_ms: u64,
    /// Report body encoding.
    #[arg(long, value_enum, default_value_t = Encoding::Json)]
    pub encoding: Encoding,
    /// A control plane running elsewhere (`http://HOST:PORT`) instead of one
    /// started by the bench; needs --token.
    #[arg(long, value_name = "URL", conflicts_with = "server_bin")]
    pub url: Option<String>,
    /// Token for --url (any-node token).
    #[arg(long)]
    pub token: Option<String>,
    /// The `wirelens` binary whose `ctrl serve` is measured (default: this one).
    #[arg(long, value_name = "PATH")]
    pub server_bin: Option<PathBuf>,
    /// The started control planes use this shared store
    /// (`clickhouse://HOST:PORT/DATABASE`) instead of a SQLite file of
    /// their own.
    #[arg(long, value_name = "URL", conflicts_with = "url")]
    pub store: Option<String>,
    /// The --store's credentials file (`user=` and `password=` lines).
    #[arg(long, value_name = "FILE", requires = "store")]
    pub store_credentials: Option<PathBuf>,
    /// Control plane processes to start over --store; the clients are
    /// spread over them (round robin).
    #[arg(long, default_value_t = 1, requires = "store")]
    pub servers: usize,
    /// Extra arguments for the started `ctrl serve` (repeat).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub server_arg: Vec<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Report body encodings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// `wirelens.report.v1` JSON, uncompressed.
    Json,
    /// The compact binary encoding with `Content-Encoding: zstd` (what nodes push).
    Compact,
}

/// A report's body and the headers that describe it.
pub struct Body {
    pub content_type: &'static str,
    pub content_encoding: Option<&'static str>,
    pub bytes: Vec<u8>,
}

/// The one place a report becomes bytes on the wire.
pub fn encode_report(r: &NodeReport, enc: Encoding) -> Result<Body> {
    use wirelens_ctrl::codec;
    let (content_type, content_encoding, bytes) = codec::encode(
        r,
        match enc {
            Encoding::Json => codec::Encoding::Json,
            Encoding::Compact => codec::Encoding::Compact,
        },
    );
    if bytes.is_empty() {
        bail!("encoding the report as {enc:?} gave no bytes");
    }
    Ok(Body {
        content_type,
        content_encoding,
        bytes,
    })
}

/// A tiny deterministic generator (SplitMix64): the same fleet every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The delta of flow `f` of node `node` in round `round`, ending at `at_ns`.
/// Mixed traffic: most flows healthy, ~3 % with retransmissions, ~1 % with
/// zero-window stalls, ~0.5 % reset; RTTs around 1-40 ms per service.
fn delta(a: &CtrlArgs, node: usize, f: usize, round: u64, first_ns: u64, at_ns: u64) -> FlowDelta {
    let mut rng = Rng((node as u64) << 32 ^ (f as u64) << 8 ^ round);
    let svc = f % a.services.max(1);
    let client = Endpoint {
        ip: IpAddr::V4(Ipv4Addr::new(
            198,
            18,
            (node % 200) as u8,
            (f / 60_000 % 250) as u8 + 1,
        )),
        port: 1024 + (f % 60_000) as u16,
    };
    let server = Endpoint {
        ip: IpAddr::V4(Ipv4Addr::new(
            198,
            19,
            (svc / 250) as u8,
            (svc % 250) as u8 + 1,
        )),
        port: 443,
    };
    let pk = 5 + rng.below(200);
    let dir = |data: bool, rng: &mut Rng| {
        let mut d = Direction {
            packets: pk,
            bytes: pk * if data { 1200 } else { 52 },
            payload_bytes: if data { pk * 1148 } else { 0 },
            ..Direction::default()
        };
        d.burst.max_packets_1ms = 1 + rng.below(8);
        d.burst.max_bytes_1ms = d.burst.max_packets_1ms * 1200;
        d
    };
    let mut c2s = dir(true, &mut rng);
    let mut s2c = dir(true, &mut rng);
    let roll = rng.below(1000);
    if roll < 30 {
        c2s.retransmits = 1 + rng.below(5);
        c2s.retrans_seen = c2s.retransmits;
        c2s.fast_retransmits = c2s.retransmits;
        s2c.dup_acks = c2s.retransmits * 3;
    } else if roll < 40 {
        s2c.zero_window = 2;
        s2c.zero_window_events = 1;
        s2c.zero_window_ns = 20_000_000 + rng.below(200_000_000);
    }
    let base = (1 + svc as u64 % 40) * 1_000_000;
    let hist = |rng: &mut Rng| {
        let mut h = Histogram::new();
        for _ in 0..8 {
            h.record(base + rng.below(base / 2 + 1));
        }
        h
    };
    let (h1, h2) = (hist(&mut rng), hist(&mut rng));
    let fill = |d: &mut Direction, h: &Histogram| {
        d.rtt.n = h.count();
        d.rtt.min_ns = h.min();
        d.rtt.p50_ns = h.quantile(0.5);
        d.rtt.p90_ns = h.quantile(0.9);
        d.rtt.p99_ns = h.quantile(0.99);
        d.rtt.max_ns = h.max();
        d.rtt.mean_ns = h.mean();
        d.rtt.last_ns = h.max();
    };
    fill(&mut c2s, &h1);
    fill(&mut s2c, &h2);
    let state = if (990..995).contains(&roll) {
        s2c.rst = 1;
        TcpState::Reset
    } else {
        TcpState::Established
    };
    let tcp = TcpInfo {
        handshake: Some(Handshake {
            syn_to_synack_ns: Some(base / 2),
            synack_to_ack_ns: Some(base / 2),
            connect_ns: Some(base),
            syn_count: 1,
            synack_count: 1,
        }),
        state,
        rst_from: (state == TcpState::Reset).then_some(wirelens_dataplane::report::Side::Server),
        mss: PerSide {
            client: Some(1460),
            server: Some(1460),
        },
        wscale: PerSide {
            client: Some(7),
            server: Some(7),
        },
        sack_ok: true,
        ts_ok: true,
        ecn_ok: false,
        path: Default::default(),
        mss_clamped: Default::default(),
        ecn_bleached: Default::default(),
    };
    FlowDelta {
        at_ns,
        first: round == 0,
        flow: FlowRecord {
            kind: "flow".into(),
            schema: FLOW_SCHEMA.into(),
            proto: Proto::Tcp,
            client,
            server,
            vlan: None,
            first_ns,
            last_ns: at_ns,
            c2s,
            s2c,
            tcp: Some(tcp),
            pmtu: None,
        },
        rtt_c2s: Some(h1),
        rtt_s2c: Some(h2),
    }
}

/// A keep-alive HTTP/1.1 connection (plain http only): enough of a client
/// to count every byte it sends and time every answer.
struct Conn {
    host: String,
    stream: Option<BufReader<TcpStream>>,
}

impl Conn {
    fn new(host: &str) -> Conn {
        Conn {
            host: host.to_string(),
            stream: None,
        }
    }

    /// Sends one request; returns (status, body). Reconnects once when a
    /// kept-alive connection was closed under it.
    fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(u16, Vec<u8>)> {
        for attempt in 0..2 {
            if self.stream.is_none() {
                let s = TcpStream::connect(&self.host)
                    .with_context(|| format!("connect {}", self.host))?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(Duration::from_secs(120)))?;
                self.stream = Some(BufReader::with_capacity(64 << 10, s));
            }
            match self.try_request(method, path, headers, body) {
                Ok(v) => return Ok(v),
                Err(e) if attempt == 0 && body.is_empty() => {
                    let _ = e;
                    self.stream = None;
                }
                Err(e) => {
                    self.stream = None;
                    return Err(e);
                }
            }
        }
        bail!("unreachable")
    }

    fn try_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(u16, Vec<u8>)> {
        let s = self
            .stream
            .as_mut()
            .ok_or_else(|| anyhow!("no connection"))?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.host,
            body.len()
        );
        for (k, v) in headers {
            head.push_str(k);
            head.push_str(": ");
            head.push_str(v);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let w = s.get_mut();
        w.write_all(head.as_bytes())?;
        w.write_all(body)?;
        w.flush()?;
        let mut line = String::new();
        if s.read_line(&mut line)? == 0 {
            bail!("connection closed before the answer");
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("bad status line {line:?}"))?;
        let mut len = 0usize;
        let mut close = false;
        loop {
            line.clear();
            if s.read_line(&mut line)? == 0 {
                bail!("connection closed in the answer's head");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                } else if k.eq_ignore_ascii_case("connection")
                    && v.trim().eq_ignore_ascii_case("close")
                {
                    close = true;
                }
            }
        }
        let mut out = vec![0; len];
        s.read_exact(&mut out)?;
        if close {
            self.stream = None;
        }
        Ok((status, out))
    }
}

/// One report to send: node, chunk of its flows, round.
#[derive(Clone, Copy)]
struct Job {
    node: usize,
    chunk: usize,
    round: u64,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    done: bool,
}

#[derive(Default)]
struct Totals {
    acked_deltas: AtomicU64,
    acked_reports: AtomicU64,
    duplicate_reports: AtomicU64,
    failed_reports: AtomicU64,
    wire_bytes: AtomicU64,
    sent_deltas: AtomicU64,
}

#[derive(Debug, Serialize)]
struct Quantiles {
    n: usize,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
}

fn quantiles(v: &mut [Duration]) -> Quantiles {
    v.sort_unstable();
    let q = |p: f64| {
        (!v.is_empty()).then(|| {
            let i = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
            v[i].as_secs_f64() * 1e3
        })
    };
    Quantiles {
        n: v.len(),
        p50_ms: q(0.5),
        p99_ms: q(0.99),
        max_ms: v.last().map(|d| d.as_secs_f64() * 1e3),
    }
}

#[derive(Debug, Serialize)]
struct Outcome {
    server: String,
    encoding: Encoding,
    nodes: usize,
    flows_per_node: usize,
    interval_s: f64,
    duration_s: f64,
    report_flows: usize,
    clients: usize,
    offered_deltas_per_s: f64,
    sent_deltas_per_s: f64,
    acked_deltas_per_s: f64,
    acked_deltas: u64,
    acked_reports: u64,
    duplicate_reports: u64,
    failed_reports: u64,
    backlog_reports_at_end: usize,
    commit_latency: Quantiles,
    services_query_latency: Quantiles,
    services_query_errors: u64,
    server_rss_max_bytes: Option<u64>,
    wire_bytes_per_delta: Option<f64>,
    disk_bytes_per_delta: Option<f64>,
    disk_growth_bytes: Option<u64>,
    bench_cpu_s: Option<f64>,
}

/// A `ctrl serve` of the bench's own: killed and its directory removed on drop.
struct OwnServer {
    child: Child,
    dir: PathBuf,
    addr: String,
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const TOKEN: &str = "wl-bench-ctrl-token-0001";

fn start_server(a: &CtrlArgs, k: usize) -> Result<OwnServer> {
    let bin = match &a.server_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("this binary's path")?,
    };
    let dir = std::env::temp_dir().join(format!("wl-bench-ctrl-{}-{k}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("tokens"), format!("{TOKEN}\n"))?;
    let mut cmd = Command::new(&bin);
    cmd.args([
        "ctrl",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--rate-limit",
        "0",
    ]);
    match &a.store {
        Some(url) => {
            cmd.args(["--store", url]);
            if let Some(c) = &a.store_credentials {
                cmd.arg("--store-credentials").arg(c);
            }
        }
        None => {
            cmd.arg("--db").arg(dir.join("ctrl.db"));
        }
    }
    let mut child = cmd
        .arg("--token-file")
        .arg(dir.join("tokens"))
        .args(&a.server_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {} ctrl serve", bin.display()))?;
    let stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Forwards nothing but the address; keeps reading so the server
        // never blocks on a full pipe (it logs one line per report).
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(i) = line.find("listening on http://") {
                let rest = &line[i + "listening on http://".len()..];
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
            } else if line.contains("error") {
                eprintln!("server: {line}");
            }
        }
    });
    let mut own = OwnServer {
        child,
        dir,
        addr: String::new(),
    };
    own.addr = rx
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| anyhow!("{} ctrl serve did not start within 30 s", bin.display()))?;
    Ok(own)
}

fn rss_of(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn self_cpu_s() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn disk_bytes(db: &Path) -> u64 {
    ["", "-wal"]
        .iter()
        .map(|s| {
            let mut p = db.as_os_str().to_owned();
            p.push(s);
            std::fs::metadata(PathBuf::from(p)).map_or(0, |m| m.len())
        })
        .sum()
}

pub fn bench_ctrl(a: &CtrlArgs) -> Result<()> {
    if a.nodes == 0 || a.flows == 0 || a.report_flows == 0 || a.clients == 0 {
        bail!("--nodes, --flows, --report-flows and --clients must be at least 1");
    }
    if !(a.interval > 0.0 && a.duration > 0.0) {
        bail!("--interval and --duration must be positive");
    }
    if a.servers == 0 {
        bail!("--servers must be at least 1");
    }
    let own = match &a.url {
        Some(_) => None,
        None => Some(start_server(a, 0)?),
    };
    // More processes over the shared store; the first one is measured for
    // its memory and answers the queries.
    let mut more = Vec::new();
    for k in 1..a.servers {
        more.push(start_server(a, k)?);
    }
    let (host, token, label) = match (&a.url, &own) {
        (Some(u), _) => {
            let h = u
                .strip_prefix("http://")
                .ok_or_else(|| anyhow!("--url: only http:// is supported by the bench"))?
                .trim_end_matches('/')
                .to_string();
            let t = a
                .token
                .clone()
                .ok_or_else(|| anyhow!("--url needs --token"))?;
            (h, t, u.clone())
        }
        (None, Some(s)) => (s.addr.clone(), TOKEN.to_string(), {
            let bin = a
                .server_bin
                .as_ref()
                .map_or_else(|| "this binary".into(), |p| p.display().to_string());
            match &a.store {
                Some(st) => format!("{bin}, {} process(es) over {st}", a.servers),
                None => bin,
            }
        }),
        (None, None) => unreachable!(),
    };
    let hosts: Vec<String> = std::iter::once(host.clone())
        .chain(more.iter().map(|s| s.addr.clone()))
        .collect();
    let db = own
        .as_ref()
        .filter(|_| a.store.is_none())
        .map(|s| s.dir.join("ctrl.db"));
    let pid = own.as_ref().map(|s| s.child.id());
    let disk0 = db.as_deref().map(disk_bytes);
    let chunks = a.flows.div_ceil(a.report_flows);
    let offered = (a.nodes * a.flows) as f64 / a.interval;
    eprintln!(
        "bench ctrl: {} nodes x {} flows every {} s = {offered:.0} deltas/s offered, reports of <= {} deltas, {} clients, {} s, server {label} at {host}",
        a.nodes, a.flows, a.interval, a.report_flows, a.clients, a.duration
    );
    let queue = Arc::new((Mutex::new(Queue::default()), Condvar::new()));
    let totals = Arc::new(Totals::default());
    let stop = Arc::new(AtomicBool::new(false));
    let start_ns = wirelens_ctrl::now_ns();
    let t0 = Instant::now();
    let cpu0 = self_cpu_s();
    let mut workers = Vec::new();
    for w in 0..a.clients {
        let (queue, totals) = (Arc::clone(&queue), Arc::clone(&totals));
        let (host, token) = (hosts[w % hosts.len()].clone(), token.clone());
        let args = CtrlArgs { ..clone_args(a) };
        workers.push(std::thread::spawn(move || -> Vec<Duration> {
            let mut conn = Conn::new(&host);
            let mut lat = Vec::new();
            let auth = format!("Bearer {token}");
            loop {
                let job = {
                    let (m, cv) = &*queue;
                    let mut q = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    loop {
                        if let Some(j) = q.jobs.pop_front() {
                            break Some(j);
                        }
                        if q.done {
                            break None;
                        }
                        q = cv
                            .wait(q)
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                    }
                };
                let Some(job) = job else { break };
                let at = wirelens_ctrl::now_ns();
                let mut r = NodeReport::new(
                    &format!("bench-{:05}", job.node),
                    start_ns,
                    job.round * chunks as u64 + job.chunk as u64,
                    at,
                    NodeMeta {
                        version: env!("CARGO_PKG_VERSION").into(),
                        mode: "bench".into(),
                        source: "bench ctrl".into(),
                        hostname: None,
                    },
                );
                let lo = job.chunk * args.report_flows;
                let hi = (lo + args.report_flows).min(args.flows);
                r.flows = (lo..hi)
                    .map(|f| delta(&args, job.node, f, job.round, start_ns, at))
                    .collect();
                let body = match encode_report(&r, args.encoding) {
                    Ok(b) => b,
                    Err(e) => {
                        eprintln!("bench ctrl: client {w}: encode: {e:#}");
                        totals.failed_reports.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
                let mut h = vec![
                    ("Authorization", auth.as_str()),
                    ("Content-Type", body.content_type),
                ];
                if let Some(e) = body.content_encoding {
                    h.push(("Content-Encoding", e));
                }
                let n = (hi - lo) as u64;
                totals.sent_deltas.fetch_add(n, Ordering::Relaxed);
                totals
                    .wire_bytes
                    .fetch_add(body.bytes.len() as u64, Ordering::Relaxed);
                let t = Instant::now();
                match conn.request("POST", "/api/v1/report", &h, &body.bytes) {
                    Ok((200, b)) => {
                        lat.push(t.elapsed());
                        if b.windows(9).any(|w| w == b"duplicate") {
                            totals.duplicate_reports.fetch_add(1, Ordering::Relaxed);
                        } else {
                            totals.acked_reports.fetch_add(1, Ordering::Relaxed);
                            totals.acked_deltas.fetch_add(n, Ordering::Relaxed);
                        }
                    }
                    Ok((status, b)) => {
                        totals.failed_reports.fetch_add(1, Ordering::Relaxed);
                        eprintln!(
                            "bench ctrl: report {} of node {}: HTTP {status}: {}",
                            r.seq,
                            r.node,
                            String::from_utf8_lossy(&b[..b.len().min(200)])
                        );
                    }
                    Err(e) => {
                        totals.failed_reports.fetch_add(1, Ordering::Relaxed);
                        eprintln!("bench ctrl: report {} of node {}: {e:#}", r.seq, r.node);
                    }
                }
            }
            lat
        }));
    }
    // Queries under load.
    let querier = {
        let (stop, host) = (Arc::clone(&stop), host.clone());
        let every = Duration::from_millis(a.query_every_ms.max(1));
        std::thread::spawn(move || -> (Vec<Duration>, u64) {
            let mut conn = Conn::new(&host);
            let (mut lat, mut errors) = (Vec::new(), 0u64);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match conn.request("GET", "/api/v1/services?since=5m", &[], &[]) {
                    Ok((200, _)) => lat.push(t.elapsed()),
                    Ok((s, b)) => {
                        errors += 1;
                        eprintln!(
                            "bench ctrl: GET /api/v1/services: HTTP {s}: {}",
                            String::from_utf8_lossy(&b[..b.len().min(200)])
                        );
                    }
                    Err(e) => {
                        errors += 1;
                        eprintln!("bench ctrl: GET /api/v1/services: {e:#}");
                    }
                }
                std::thread::sleep(every.saturating_sub(t.elapsed()));
            }
            (lat, errors)
        })
    };
    // The schedule: every node's round r starts at r x interval, spread
    // evenly over the interval by node.
    let total_jobs_per_round = a.nodes * chunks;
    let interval = Duration::from_secs_f64(a.interval);
    let duration = Duration::from_secs_f64(a.duration);
    let mut rss_max = pid.and_then(rss_of);
    let mut issued = 0u64;
    let mut last_progress = Instant::now();
    let per_job = interval.as_secs_f64() / total_jobs_per_round as f64;
    loop {
        let el = t0.elapsed();
        if el >= duration {
            break;
        }
        let due = ((el.as_secs_f64() / per_job) as u64 + 1)
            .min((duration.as_secs_f64() / per_job).ceil() as u64);
        if due > issued {
            let (m, cv) = &*queue;
            let mut q = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for k in issued..due {
                let round = k / total_jobs_per_round as u64;
                let i = (k % total_jobs_per_round as u64) as usize;
                q.jobs.push_back(Job {
                    node: i % a.nodes,
                    chunk: i / a.nodes,
                    round,
                });
            }
            issued = due;
            cv.notify_all();
        }
        if last_progress.elapsed() >= Duration::from_secs(5) {
            last_progress = Instant::now();
            let backlog = queue.0.lock().map_or(0, |q| q.jobs.len());
            if let Some(r) = pid.and_then(rss_of) {
                rss_max = rss_max.max(Some(r));
            }
            eprintln!(
                "bench ctrl: {:>5.1} s: {} deltas acknowledged ({:.0}/s), {} reports waiting to be sent, {} failed",
                el.as_secs_f64(),
                totals.acked_deltas.load(Ordering::Relaxed),
                totals.acked_deltas.load(Ordering::Relaxed) as f64 / el.as_secs_f64(),
                backlog,
                totals.failed_reports.load(Ordering::Relaxed),
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // Stop: what was not sent by now is backlog (the server did not keep up).
    let backlog = {
        let (m, cv) = &*queue;
        let mut q = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = q.jobs.len();
        q.jobs.clear();
        q.done = true;
        cv.notify_all();
        n
    };
    let mut commit = Vec::new();
    for w in workers {
        commit.extend(w.join().unwrap_or_default());
    }
    let elapsed = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let (mut qlat, qerr) = querier.join().unwrap_or_default();
    let cpu = self_cpu_s().zip(cpu0).map(|(b, a)| b - a);
    if let Some(r) = pid.and_then(rss_of) {
        rss_max = rss_max.max(Some(r));
    }
    let acked = totals.acked_deltas.load(Ordering::Relaxed);
    let sent = totals.sent_deltas.load(Ordering::Relaxed);
    // On disk: after the server checkpointed its WAL (its own pruner and
    // SQLite's auto-checkpoint), both files counted.
    let growth = db
        .as_deref()
        .zip(disk0)
        .map(|(p, d0)| disk_bytes(p).saturating_sub(d0));
    let out = Outcome {
        server: label,
        encoding: a.encoding,
        nodes: a.nodes,
        flows_per_node: a.flows,
        interval_s: a.interval,
        duration_s: elapsed,
        report_flows: a.report_flows,
        clients: a.clients,
        offered_deltas_per_s: offered,
        sent_deltas_per_s: sent as f64 / elapsed,
        acked_deltas_per_s: acked as f64 / elapsed,
        acked_deltas: acked,
        acked_reports: totals.acked_reports.load(Ordering::Relaxed),
        duplicate_reports: totals.duplicate_reports.load(Ordering::Relaxed),
        failed_reports: totals.failed_reports.load(Ordering::Relaxed),
        backlog_reports_at_end: backlog,
        commit_latency: quantiles(&mut commit),
        services_query_latency: quantiles(&mut qlat),
        services_query_errors: qerr,
        server_rss_max_bytes: rss_max,
        wire_bytes_per_delta: (sent > 0)
            .then(|| totals.wire_bytes.load(Ordering::Relaxed) as f64 / sent as f64),
        disk_bytes_per_delta: growth
            .filter(|_| acked > 0)
            .map(|g| g as f64 / acked as f64),
        disk_growth_bytes: growth,
        bench_cpu_s: cpu,
    };
    drop(own);
    drop(more);
    print(&out, a.format)
}

fn clone_args(a: &CtrlArgs) -> CtrlArgs {
    CtrlArgs {
        nodes: a.nodes,
        flows: a.flows,
        interval: a.interval,
        duration: a.duration,
        report_flows: a.report_flows,
        clients: a.clients,
        services: a.services,
        query_every_ms: a.query_every_ms,
        encoding: a.encoding,
        url: a.url.clone(),
        token: None,
        server_bin: a.server_bin.clone(),
        server_arg: a.server_arg.clone(),
        store: a.store.clone(),
        store_credentials: a.store_credentials.clone(),
        servers: a.servers,
        format: a.format,
    }
}

fn print(o: &Outcome, f: Format) -> Result<()> {
    let mut w = std::io::stdout().lock();
    match f {
        Format::Json => writeln!(w, "{}", serde_json::to_string_pretty(o)?)?,
        Format::Ndjson => writeln!(w, "{}", serde_json::to_string(o)?)?,
        Format::Table => {
            let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1} ms"));
            let num = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
            let rows: Vec<(&str, String)> = vec![
                ("server", o.server.clone()),
                ("encoding", format!("{:?}", o.encoding).to_lowercase()),
                (
                    "fleet",
                    format!(
                        "{} nodes x {} flows every {} s, reports of <= {} deltas, {} clients",
                        o.nodes, o.flows_per_node, o.interval_s, o.report_flows, o.clients
                    ),
                ),
                ("duration", format!("{:.1} s", o.duration_s)),
                ("deltas/s offered", format!("{:.0}", o.offered_deltas_per_s)),
                ("deltas/s sent", format!("{:.0}", o.sent_deltas_per_s)),
                (
                    "deltas/s acknowledged",
                    format!("{:.0}", o.acked_deltas_per_s),
                ),
                (
                    "reports acked / duplicate / failed / never sent",
                    format!(
                        "{} / {} / {} / {}",
                        o.acked_reports,
                        o.duplicate_reports,
                        o.failed_reports,
                        o.backlog_reports_at_end
                    ),
                ),
                (
                    "commit latency p50 / p99 / max",
                    format!(
                        "{} / {} / {}",
                        ms(o.commit_latency.p50_ms),
                        ms(o.commit_latency.p99_ms),
                        ms(o.commit_latency.max_ms)
                    ),
                ),
                (
                    "GET /api/v1/services p50 / p99 / max",
                    format!(
                        "{} / {} / {} ({} queries, {} errors)",
                        ms(o.services_query_latency.p50_ms),
                        ms(o.services_query_latency.p99_ms),
                        ms(o.services_query_latency.max_ms),
                        o.services_query_latency.n,
                        o.services_query_errors
                    ),
                ),
                (
                    "server RSS max",
                    o.server_rss_max_bytes
                        .map_or("-".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0)),
                ),
                ("bytes/delta on the wire", num(o.wire_bytes_per_delta)),
                ("bytes/delta on disk", num(o.disk_bytes_per_delta)),
                (
                    "bench CPU",
                    o.bench_cpu_s.map_or("-".into(), |c| format!("{c:.1} s")),
                ),
            ];
            let wk = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
            for (k, v) in rows {
                writeln!(w, "{k:<wk$}  {v}")?;
            }
        }
    }
    Ok(())
}
