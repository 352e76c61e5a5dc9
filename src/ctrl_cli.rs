//! The control plane commands: `wirelens ctrl serve`, the queries
//! `wirelens nodes|services|flows|alerts`, and `analyze --push`.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use serde::Serialize;
use wirelens_ctrl::agg::{service_addr, ProbeSummary};
use wirelens_ctrl::alerts::{Alert, AlertConfig};
use wirelens_ctrl::auth::Tokens;
use wirelens_ctrl::client::{
    api_token_from_file, Client, ClientOptions, Pusher, PusherConfig, ENV_API_TOKEN_FILE,
};
use wirelens_ctrl::limit::RateLimit;
use wirelens_ctrl::report::ProbeWindow;
use wirelens_ctrl::report::{FlowDelta, NodeMeta};
use wirelens_ctrl::server::{self, ServerConfig, TlsFiles};
use wirelens_ctrl::store::{FlowRow, NodeInfo, Retention};
use wirelens_ctrl::{agg::ServiceSummary, now_ns, utc};
use wirelens_dataplane::report::Summary;
use wirelens_output::{human_ns, NsStyle};

use crate::{exit, Format};

/// Exit code: the control plane could not be reached or refused the request.
pub const EXIT_CTRL: u8 = 4;

/// The control plane.
#[derive(Debug, Args)]
pub struct CtrlArgs {
    #[command(subcommand)]
    pub command: CtrlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtrlCommand {
    /// Run the control plane: receives node reports over HTTP, stores them in
    /// SQLite (or a shared ClickHouse: --store), serves the API, /metrics and
    /// alerts. Logs to stderr.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0: any free port; the log says which).
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub listen: String,
    /// The SQLite database (created if missing; WAL files beside it): the
    /// default store.
    #[arg(long, required_unless_present = "store", conflicts_with = "store")]
    pub db: Option<PathBuf>,
    /// A shared store instead of --db: clickhouse://HOST:PORT/DATABASE
    /// (ClickHouse's HTTP port; the database and tables are created). Any
    /// number of control planes may serve the same store.
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// The store's user and password: a file of `user=NAME` and
    /// `password=SECRET` lines (never on the command line).
    #[arg(long, value_name = "FILE", requires = "store")]
    pub store_credentials: Option<PathBuf>,
    /// Tokens nodes report with: one per line, `TOKEN` or `NODE:TOKEN`.
    #[arg(long)]
    pub token_file: PathBuf,
    /// Largest report body accepted (bytes).
    #[arg(long, default_value_t = server::DEFAULT_BODY_LIMIT)]
    pub max_body: usize,
    /// Keep 10 s buckets this many hours.
    #[arg(long, default_value_t = 24)]
    pub retain_10s_hours: u64,
    /// Keep 1 min buckets this many days.
    #[arg(long, default_value_t = 30)]
    pub retain_1m_days: u64,
    /// Keep per-flow rows this many days (after the flow's last packet).
    #[arg(long, default_value_t = 7)]
    pub retain_flows_days: u64,
    /// RTT spike alert: p90 at least this many times the service's baseline.
    #[arg(long, default_value_t = AlertConfig::default().rtt_factor)]
    pub rtt_factor: f64,
    /// Normal 10 s buckets a service needs (its baseline) before the
    /// rtt_spike and connection_surge rules judge its next ones.
    #[arg(long, value_name = "BUCKETS", default_value_t = AlertConfig::default().rtt_min_history,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=30))]
    pub min_baseline: usize,
    /// Retransmission alert: retransmissions per data packet.
    #[arg(long, default_value_t = 0.02)]
    pub retrans_rate: f64,
    /// Serve https with this certificate chain (PEM, the server's certificate
    /// first); needs --tls-key.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, RSA or EC; not encrypted).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates (mutual TLS): CA certificate(s), PEM, that
    /// sign the nodes' and clients' certificates; a client without one is
    /// refused at the handshake. Needs --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
    /// Seconds a client may take to send a request's headers (also how long
    /// an idle connection stays open); slower clients are cut off.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub header_timeout: f64,
    /// Seconds from a request's headers to its answer, the body included;
    /// beyond, 408 and the connection is closed.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub request_timeout: f64,
    /// Connections served at once; more are closed at once.
    #[arg(long, value_name = "N", default_value_t = 512)]
    pub max_connections: usize,
    /// Reports per second each node may send on average (429 with Retry-After
    /// beyond); 0 turns the limit off.
    #[arg(long, value_name = "PER_SEC", default_value_t = 10.0)]
    pub rate_limit: f64,
    /// Reports per second one shared token (a token file line without a
    /// node name) may send, over every node name it claims; 0 turns it off.
    #[arg(long, value_name = "PER_SEC", default_value_t = 2000.0)]
    pub token_rate_limit: f64,
    /// Services kept in total; the services of nodes beyond go to `_other`.
    #[arg(long, value_name = "N", default_value_t = wirelens_ctrl::store::DEFAULT_MAX_SERVICES)]
    pub max_services: usize,
    /// Services kept per node; that node's further services go to `_other`.
    #[arg(long, value_name = "N", default_value_t = wirelens_ctrl::store::DEFAULT_MAX_SERVICES_PER_NODE)]
    pub max_services_per_node: usize,
    /// Services /metrics renders at most (the most packets first); the rest
    /// add up under `server="_other"`, so a scrape stays bounded.
    #[arg(long, value_name = "N", default_value_t = wirelens_ctrl::metrics::DEFAULT_METRICS_SERVICES)]
    pub metrics_services: usize,
    /// Reports a shared token may send at once before --token-rate-limit applies.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub token_rate_burst: u32,
    /// Flows the flows view keeps per service and minute besides those with
    /// an event (reset, refused, zero window, PMTU), the worst first.
    #[arg(long, value_name = "N", default_value_t = wirelens_ctrl::store::DEFAULT_TOP_FLOWS)]
    pub top_flows: usize,
    /// Time budget of one read query, seconds (503 with the reason beyond).
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    pub query_budget: f64,
    /// Reports stamped further in the future than this (seconds) are
    /// refused with 422.
    #[arg(long, value_name = "SECS", default_value_t = 600.0)]
    pub max_clock_skew: f64,
    /// Reports a node may send at once before --rate-limit applies.
    #[arg(long, value_name = "N", default_value_t = 60)]
    pub rate_burst: u32,
    /// MiB of disk kept in reserve beside the database (`DB.reserve`), given
    /// up when a prune finds the disk full so that it can still run; 0: none.
    #[arg(long, value_name = "MIB", default_value_t = wirelens_ctrl::store::DEFAULT_DISK_RESERVE >> 20)]
    pub disk_reserve_mib: u64,
    /// Tokens of the read API (same format as --token-file): when given, every
    /// GET but /healthz needs `Authorization: Bearer` with one of them.
    #[arg(long, value_name = "FILE")]
    pub api_token_file: Option<PathBuf>,
}

/// Where the CLI finds the control plane.
#[derive(Debug, Args, Clone)]
pub struct CtrlUrl {
    /// Control plane URL [default: $WIRELENS_CTRL, else http://127.0.0.1:7878].
    #[arg(long, value_name = "URL")]
    pub ctrl: Option<String>,
    /// CA certificate(s) (PEM) that sign an https control plane's certificate
    /// [default: $WIRELENS_CA_FILE, else the system's CA bundle].
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// File whose first token is sent to a control plane started with
    /// --api-token-file [default: $WIRELENS_API_TOKEN_FILE].
    #[arg(long, value_name = "FILE")]
    pub api_token_file: Option<PathBuf>,
    /// This client's certificate (PEM), for a control plane started with
    /// --client-ca [default: $WIRELENS_CLIENT_CERT]; needs --client-key.
    #[arg(long, value_name = "PEM", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// The private key of --client-cert (PEM, not encrypted)
    /// [default: $WIRELENS_CLIENT_KEY].
    #[arg(long, value_name = "PEM", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

impl CtrlUrl {
    pub fn resolve(&self) -> String {
        self.ctrl
            .clone()
            .or_else(|| {
                std::env::var("WIRELENS_CTRL")
                    .ok()
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| wirelens_ctrl::DEFAULT_URL.to_string())
    }

    /// A client with these options (each falls back to its environment variable).
    pub fn client(&self, timeout: Duration) -> Client {
        let url = self.resolve();
        let mut opts = match ClientOptions::from_env() {
            Ok(o) => o,
            Err(e) if self.api_token_file.is_none() => {
                eprintln!("wirelens: ${ENV_API_TOKEN_FILE}: {e}");
                ClientOptions::default()
            }
            Err(_) => ClientOptions::default(),
        };
        if let Some(ca) = &self.ca_file {
            opts.ca_file = Some(ca.clone());
        }
        if let (Some(c), Some(k)) = (&self.client_cert, &self.client_key) {
            opts.client_cert = Some(c.clone());
            opts.client_key = Some(k.clone());
        }
        if let Some(f) = &self.api_token_file {
            match api_token_from_file(f) {
                Ok(t) => opts.api_token = Some(t),
                Err(e) => eprintln!("wirelens: --api-token-file: {e}"),
            }
        }
        Client::with_options(&url, timeout, &opts)
    }
}

/// Options of `nodes`, `services`, `flows`, `alerts`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub url: CtrlUrl,
    /// Order: nodes: name|last_seen|flows; services: worst|bytes|packets|flows|rtt|retrans|name;
    /// flows: worst|rtt|bytes|stall|last.
    #[arg(long)]
    pub sort: Option<String>,
    /// Most rows.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Only data since: an age (15m, 2h, 7d) or ns since the Unix epoch.
    #[arg(long)]
    pub since: Option<String>,
    /// Only this service: `ip:port/proto` as listed by `services`, or `ip:port` (every protocol).
    #[arg(long)]
    pub service: Option<String>,
    /// Only this node (flows).
    #[arg(long)]
    pub node: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl QueryArgs {
    fn path(&self, route: &str) -> String {
        let mut q = Vec::new();
        for (k, v) in [
            ("sort", self.sort.clone()),
            ("limit", self.limit.map(|l| l.to_string())),
            ("since", self.since.clone()),
            ("service", self.service.clone()),
            ("node", self.node.clone()),
        ] {
            if let Some(v) = v {
                q.push(format!("{k}={}", enc(&v)));
            }
        }
        if q.is_empty() {
            route.to_string()
        } else {
            format!("{route}?{}", q.join("&"))
        }
    }
}

pub fn serve(a: &ServeArgs) -> u8 {
    let tokens = match Tokens::load(&a.token_file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("wirelens: {e}");
            return exit::INPUT;
        }
    };
    let api_tokens = match &a.api_token_file {
        Some(p) => match Tokens::load(p) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("wirelens: --api-token-file: {e}");
                return exit::INPUT;
            }
        },
        None => None,
    };
    if !(a.rate_limit.is_finite() && a.rate_limit >= 0.0) || a.rate_burst == 0 {
        eprintln!(
            "wirelens: --rate-limit must be 0 (off) or a positive number of reports per second, \
             --rate-burst at least 1"
        );
        return exit::USAGE;
    }
    let secs = |name: &str, v: f64| {
        if v.is_finite() && v > 0.0 && v <= 86_400.0 {
            Ok(Duration::from_secs_f64(v))
        } else {
            eprintln!("wirelens: --{name} must be a number of seconds above 0 (at most 86400)");
            Err(exit::USAGE)
        }
    };
    let limits = match (
        secs("header-timeout", a.header_timeout),
        secs("request-timeout", a.request_timeout),
    ) {
        (Ok(header_timeout), Ok(request_timeout)) if a.max_connections > 0 => server::ConnLimits {
            header_timeout,
            request_timeout,
            max_connections: a.max_connections,
        },
        (Ok(_), Ok(_)) => {
            eprintln!("wirelens: --max-connections must be at least 1");
            return exit::USAGE;
        }
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let target = match (&a.db, &a.store) {
        (Some(db), _) => server::StoreTarget::Sqlite(db.clone()),
        (None, Some(url)) => {
            let ch = wirelens_ctrl::clickhouse::ClickHouseConfig::parse(url).and_then(|c| match &a
                .store_credentials
            {
                Some(f) => c.with_credentials_file(f),
                None => Ok(c),
            });
            match ch {
                Ok(c) => server::StoreTarget::ClickHouse(c),
                Err(e) => {
                    eprintln!("wirelens: --store: {e}");
                    return exit::USAGE;
                }
            }
        }
        (None, None) => {
            eprintln!("wirelens: ctrl serve needs --db PATH or --store URL");
            return exit::USAGE;
        }
    };
    const H: u64 = 3600 * 1_000_000_000;
    let cfg = ServerConfig {
        db: a.db.clone().unwrap_or_default(),
        tokens,
        body_limit: a.max_body,
        retention: Retention {
            s10_ns: a.retain_10s_hours.saturating_mul(H),
            m1_ns: a.retain_1m_days.saturating_mul(24 * H),
            flows_ns: a.retain_flows_days.saturating_mul(24 * H),
            reports_ns: a.retain_1m_days.saturating_mul(24 * H),
        },
        alerts: AlertConfig {
            rtt_factor: a.rtt_factor,
            rtt_min_history: a.min_baseline,
            retrans_rate: a.retrans_rate,
            ..AlertConfig::default()
        },
        tls: match (&a.tls_cert, &a.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: a.client_ca.clone(),
            }),
            _ => None,
        },
        rate_limit: (a.rate_limit > 0.0).then_some(RateLimit {
            per_sec: a.rate_limit,
            burst: a.rate_burst,
        }),
        api_tokens,
        limits,
        ingest: server::IngestConfig {
            token_rate_limit: (a.token_rate_limit > 0.0).then_some(RateLimit {
                per_sec: a.token_rate_limit,
                burst: a.token_rate_burst.max(1),
            }),
            max_services: a.max_services,
            max_services_per_node: a.max_services_per_node,
            top_flows: a.top_flows,
            metrics_services: a.metrics_services,
            disk_reserve: a.disk_reserve_mib.saturating_mul(1 << 20),
            query_budget: Duration::from_secs_f64(a.query_budget.max(0.001)),
            max_clock_skew: Duration::from_secs_f64(a.max_clock_skew.max(0.0)),
            ..server::IngestConfig::default()
        },
    };
    match server::run_on(&a.listen, cfg, target) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("wirelens: ctrl serve: {e}");
            exit::INPUT
        }
    }
}

fn client(url: &CtrlUrl) -> Client {
    url.client(Duration::from_secs(10))
}

/// Prints `rows` as JSON / NDJSON, or via `table`.
fn output<T: Serialize>(
    rows: &[T],
    format: Format,
    table: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> u8 {
    let mut w = BufWriter::new(io::stdout().lock());
    let r = match format {
        Format::Json => serde_json::to_writer_pretty(&mut w, rows)
            .map_err(io::Error::from)
            .and_then(|()| w.write_all(b"\n")),
        Format::Ndjson => rows.iter().try_for_each(|r| {
            serde_json::to_writer(&mut w, r)?;
            w.write_all(b"\n")
        }),
        Format::Table => table(&mut w),
    }
    .and_then(|()| w.flush());
    match r {
        Ok(()) => exit::OK,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => exit::OK,
        Err(e) => {
            eprintln!("wirelens: writing output: {e}");
            exit::INPUT
        }
    }
}

fn fetch<T: serde::de::DeserializeOwned>(a: &QueryArgs, route: &str) -> Result<T, u8> {
    client(&a.url).get(&a.path(route)).map_err(|e| {
        eprintln!("wirelens: {e}");
        EXIT_CTRL
    })
}

/// Aligned columns; the last column is left unpadded.
pub fn print_table(w: &mut dyn Write, head: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let mut width: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < width.len() {
                width[i] = width[i].max(c.chars().count());
            }
        }
    }
    let line = |w: &mut dyn Write, cells: &mut dyn Iterator<Item = &str>| -> io::Result<()> {
        let mut s = String::new();
        for (i, c) in cells.enumerate() {
            if i + 1 == width.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        writeln!(w, "{}", s.trim_end())
    };
    line(w, &mut head.iter().copied())?;
    for r in rows {
        line(w, &mut r.iter().map(String::as_str))?;
    }
    Ok(())
}

pub fn human_bytes(b: u64) -> String {
    match b {
        0..1_000 => format!("{b} B"),
        1_000..1_000_000 => format!("{:.1} kB", b as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        _ => format!("{:.1} GB", b as f64 / 1e9),
    }
}

pub fn age(ns: u64) -> String {
    let now = now_ns();
    if ns == 0 {
        return "-".into();
    }
    let s = now.saturating_sub(ns) / 1_000_000_000;
    match s {
        0..120 => format!("{s}s ago"),
        120..7200 => format!("{}m ago", s / 60),
        7200..172_800 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

fn pct(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{:.2}%", r * 100.0))
}

pub fn nodes(a: &QueryArgs) -> u8 {
    let rows: Vec<NodeInfo> = match fetch(a, "/api/v1/nodes") {
        Ok(r) => r,
        Err(c) => return c,
    };
    output(&rows, a.format, |w| {
        let t: Vec<Vec<String>> = rows
            .iter()
            .map(|n| {
                vec![
                    n.node.clone(),
                    n.meta.mode.clone(),
                    n.reports.to_string(),
                    n.duplicates.to_string(),
                    n.flow_deltas.to_string(),
                    format!("{}/{}", n.dropped_reports, n.dropped_flows),
                    age(n.last_seen_ns),
                    n.meta.source.clone(),
                ]
            })
            .collect();
        print_table(
            w,
            &[
                "node",
                "mode",
                "reports",
                "dup",
                "flows",
                "dropped r/f",
                "last seen",
                "source",
            ],
            &t,
        )
    })
}

/// The probe rows of the window `since` (the API's default without it),
/// or none when the control plane has no probe route (an older one).
fn probe_rows(url: &CtrlUrl, since: Option<&str>) -> Vec<ProbeSummary> {
    let path = match since {
        Some(s) => format!("/api/v1/probes?since={}", enc(s)),
        None => "/api/v1/probes".to_string(),
    };
    client(url).get(&path).unwrap_or_default()
}

/// Puts beside each service the probes whose target is its `ip:port`,
/// merged over the nodes that probe it.
pub fn join_probes(services: &mut [ServiceSummary], probes: &[ProbeSummary]) {
    for s in services {
        let addr = service_addr(&s.service);
        let mut merged: Option<ProbeSummary> = None;
        let mut nodes: Vec<&str> = Vec::new();
        for p in probes.iter().filter(|p| p.target == addr) {
            nodes.push(&p.node);
            match merged.as_mut() {
                None => merged = Some(p.clone()),
                Some(m) => m.merge(p),
            }
        }
        if let Some(m) = merged.as_mut() {
            m.node = nodes.join(",");
        }
        s.probe = merged;
    }
}

/// `probe rtt p50/p90` and `probe loss up/down` cells of a service row.
fn probe_cells(p: Option<&ProbeSummary>) -> [String; 2] {
    match p {
        None => ["-".into(), "-".into()],
        Some(p) => {
            let mut loss = format!("{}/{}", pct(p.loss_up_rate), pct(p.loss_down_rate));
            if p.lost_unattributed > 0 {
                loss.push_str(&format!(
                    " +{} either way",
                    pct(Some(p.lost_unattributed as f64 / p.sent.max(1) as f64))
                ));
            }
            [
                format!(
                    "{}/{}",
                    human_ns(p.rtt.p50_ns, NsStyle::Coarse),
                    human_ns(p.rtt.p90_ns, NsStyle::Coarse)
                ),
                match p.state {
                    // The latest window failed: say so first.
                    Some(st) if st != wirelens_ctrl::report::ProbeState::Ok => {
                        format!("{}: {} lost", st.as_str(), pct(p.loss_rate))
                    }
                    _ => loss,
                },
            ]
        }
    }
}

pub fn services(a: &QueryArgs) -> u8 {
    let mut rows: Vec<ServiceSummary> = match fetch(a, "/api/v1/services") {
        Ok(r) => r,
        Err(c) => return c,
    };
    join_probes(&mut rows, &probe_rows(&a.url, a.since.as_deref()));
    let head: Vec<&str> = SERVICE_HEAD
        .iter()
        .copied()
        .chain(["probe rtt p50/p90", "probe loss up/down"])
        .collect();
    output(&rows, a.format, |w| {
        let mut t = Vec::new();
        for s in &rows {
            let mut r = service_row(s);
            r.extend(probe_cells(s.probe.as_ref()));
            t.push(r);
            for p in &s.paths {
                t.push(vec![
                    format!("  from {}", p.subnet),
                    p.nodes.join(","),
                    p.flows.to_string(),
                    p.packets.to_string(),
                    String::new(),
                    format!("{} ({})", p.retransmits, pct(p.retrans_rate)),
                    format!(
                        "{}/{}",
                        human_ns(p.rtt_server.p50_ns, NsStyle::Coarse),
                        human_ns(p.rtt_server.p90_ns, NsStyle::Coarse)
                    ),
                    format!(
                        "{}/{}",
                        human_ns(p.rtt_client.p50_ns, NsStyle::Coarse),
                        human_ns(p.rtt_client.p90_ns, NsStyle::Coarse)
                    ),
                    p.zero_window_events.to_string(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                ]);
            }
        }
        print_table(w, &head, &t)
    })
}

/// Options of `wirelens probes`.
#[derive(Debug, Args)]
pub struct ProbesArgs {
    #[command(flatten)]
    pub url: CtrlUrl,
    /// Only windows that ended since: an age (15m, 2h, 7d) or ns since the
    /// Unix epoch [default: 1h].
    #[arg(long)]
    pub since: Option<String>,
    /// Only this target (`ip:port`, `[v6]:port`).
    #[arg(long)]
    pub target: Option<String>,
    /// Only this node.
    #[arg(long)]
    pub node: Option<String>,
    /// The windows themselves (a time series, oldest first) instead of one
    /// row per target and node.
    #[arg(long)]
    pub windows: bool,
    /// Most windows with --windows (the newest) [default: 1000].
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// A window as `/api/v1/probes/windows` serves it.
#[derive(Debug, serde::Deserialize, Serialize)]
pub struct WindowRow {
    pub node: String,
    pub window: ProbeWindow,
}

/// `wirelens probes`: what the nodes' probes (`wirelens run --probe`) measured.
pub fn probes(a: &ProbesArgs) -> u8 {
    let mut q = Vec::new();
    for (k, v) in [
        ("since", a.since.clone()),
        ("target", a.target.clone()),
        ("node", a.node.clone()),
        (
            "limit",
            a.limit.filter(|_| a.windows).map(|l| l.to_string()),
        ),
    ] {
        if let Some(v) = v {
            q.push(format!("{k}={}", enc(&v)));
        }
    }
    let route = if a.windows {
        "/api/v1/probes/windows"
    } else {
        "/api/v1/probes"
    };
    let path = if q.is_empty() {
        route.to_string()
    } else {
        format!("{route}?{}", q.join("&"))
    };
    let c = client(&a.url);
    if a.windows {
        let rows: Vec<WindowRow> = match c.get(&path) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("wirelens: {e}");
                return EXIT_CTRL;
            }
        };
        return output(&rows, a.format, |w| {
            if rows.is_empty() {
                return writeln!(w, "no probe windows");
            }
            let t: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    let x = &r.window;
                    vec![
                        utc(x.start_ns),
                        r.node.clone(),
                        x.target.clone(),
                        x.state.as_str().to_string(),
                        x.sent.to_string(),
                        format!("{}/{}/{}", x.lost_up, x.lost_down, x.lost_unattributed),
                        format!(
                            "{}/{}/{}",
                            human_ns(x.rtt.min(), NsStyle::Coarse),
                            human_ns(x.rtt.quantile(0.5), NsStyle::Coarse),
                            human_ns(x.rtt.quantile(0.99), NsStyle::Coarse)
                        ),
                        human_ns(x.ipdv.mean(), NsStyle::Coarse),
                        x.error.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            print_table(
                w,
                &[
                    "start",
                    "node",
                    "target",
                    "state",
                    "sent",
                    "lost up/down/?",
                    "rtt min/p50/p99",
                    "jitter",
                    "error",
                ],
                &t,
            )
        });
    }
    let rows: Vec<ProbeSummary> = match c.get(&path) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wirelens: {e}");
            return EXIT_CTRL;
        }
    };
    output(&rows, a.format, |w| {
        if rows.is_empty() {
            return writeln!(
                w,
                "no probe results (nodes probe with `wirelens run --probe TARGET`)"
            );
        }
        let t: Vec<Vec<String>> = rows
            .iter()
            .map(|p| {
                vec![
                    p.target.clone(),
                    p.node.clone(),
                    p.state.map_or("-", |s| s.as_str()).to_string(),
                    p.windows.to_string(),
                    p.sent.to_string(),
                    pct(p.loss_rate),
                    format!(
                        "{}/{}/{}",
                        pct(p.loss_up_rate),
                        pct(p.loss_down_rate),
                        p.lost_unattributed
                    ),
                    format!(
                        "{}/{}/{}",
                        human_ns(p.rtt.p50_ns, NsStyle::Coarse),
                        human_ns(p.rtt.p90_ns, NsStyle::Coarse),
                        human_ns(p.rtt.p99_ns, NsStyle::Coarse)
                    ),
                    human_ns(p.jitter_ns, NsStyle::Coarse),
                    age(p.last_ns),
                    p.error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        print_table(
            w,
            &[
                "target",
                "node",
                "state",
                "windows",
                "sent",
                "loss",
                "up/down/?",
                "rtt p50/p90/p99",
                "jitter",
                "last",
                "error",
            ],
            &t,
        )
    })
}

pub const SERVICE_HEAD: [&str; 12] = [
    "service",
    "nodes",
    "flows",
    "pkts",
    "bytes",
    "retx (rate)",
    "rtt srv p50/p90",
    "rtt cli p50/p90",
    "zwin",
    "syn retry",
    "pmtu",
    "last",
];

pub fn service_row(s: &ServiceSummary) -> Vec<String> {
    vec![
        s.service.clone(),
        s.nodes.join(","),
        s.flows.to_string(),
        s.packets.to_string(),
        human_bytes(s.bytes),
        format!("{} ({})", s.retransmits, pct(s.retrans_rate)),
        format!(
            "{}/{}",
            human_ns(s.rtt_server.p50_ns, NsStyle::Coarse),
            human_ns(s.rtt_server.p90_ns, NsStyle::Coarse)
        ),
        format!(
            "{}/{}",
            human_ns(s.rtt_client.p50_ns, NsStyle::Coarse),
            human_ns(s.rtt_client.p90_ns, NsStyle::Coarse)
        ),
        s.zero_window_events.to_string(),
        s.syn_retry_flows.to_string(),
        s.pmtu_errors.to_string(),
        age(s.last_ns),
    ]
}

pub const FLOW_HEAD: [&str; 11] = [
    "node",
    "proto",
    "client",
    "server",
    "state",
    "pkts",
    "bytes",
    "retx c2s/s2c",
    "rtt c2s p50/p99",
    "rtt s2c p50/p99",
    "zwin",
];

pub fn flow_row(f: &FlowRow) -> Vec<String> {
    let r = &f.flow;
    let ep = |e: &wirelens_dataplane::report::Endpoint| match e.ip {
        std::net::IpAddr::V4(a) => format!("{a}:{}", e.port),
        std::net::IpAddr::V6(a) => format!("[{a}]:{}", e.port),
    };
    let state = r.tcp.as_ref().map_or("-".to_string(), |t| {
        serde_json::to_value(t.state)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default()
    });
    vec![
        f.node.clone(),
        serde_json::to_value(r.proto)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        ep(&r.client),
        ep(&r.server),
        state,
        r.c2s.packets.saturating_add(r.s2c.packets).to_string(),
        human_bytes(r.c2s.bytes.saturating_add(r.s2c.bytes)),
        format!("{}/{}", r.c2s.retransmits, r.s2c.retransmits),
        format!(
            "{}/{}",
            human_ns(r.c2s.rtt.p50_ns, NsStyle::Coarse),
            human_ns(r.c2s.rtt.p99_ns, NsStyle::Coarse)
        ),
        format!(
            "{}/{}",
            human_ns(r.s2c.rtt.p50_ns, NsStyle::Coarse),
            human_ns(r.s2c.rtt.p99_ns, NsStyle::Coarse)
        ),
        r.c2s
            .zero_window_events
            .saturating_add(r.s2c.zero_window_events)
            .to_string(),
    ]
}

pub fn flows(a: &QueryArgs) -> u8 {
    let rows: Vec<FlowRow> = match fetch(a, "/api/v1/flows") {
        Ok(r) => r,
        Err(c) => return c,
    };
    output(&rows, a.format, |w| {
        let t: Vec<Vec<String>> = rows.iter().map(flow_row).collect();
        print_table(w, &FLOW_HEAD, &t)
    })
}

pub fn alerts(a: &QueryArgs) -> u8 {
    let rows: Vec<Alert> = match fetch(a, "/api/v1/alerts") {
        Ok(r) => r,
        Err(c) => return c,
    };
    output(&rows, a.format, |w| {
        if rows.is_empty() {
            return writeln!(w, "no alerts");
        }
        let t: Vec<Vec<String>> = rows
            .iter()
            .map(|x| {
                vec![
                    x.rule.clone(),
                    x.service.clone(),
                    utc(x.since_ns),
                    x.nodes.join(","),
                    x.summary.clone(),
                ]
            })
            .collect();
        print_table(w, &["rule", "service", "since", "nodes", "evidence"], &t)
    })
}

/// `analyze --push`: sends the capture's interval deltas as node `node`'s reports.
/// The report instance is a hash of the node and the capture, so pushing the
/// same capture again is acknowledged as a duplicate and not counted twice.
pub fn push_analysis(
    url: &str,
    node: &str,
    token_file: &Path,
    source: &str,
    deltas: Vec<FlowDelta>,
    summary: &Summary,
    encoding: wirelens_ctrl::codec::Encoding,
) -> u8 {
    let tf = token_file.display().to_string();
    let token = match Tokens::load(token_file).and_then(|t| t.token_for(node, &tf)) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("wirelens: {e}");
            return exit::INPUT;
        }
    };
    if !wirelens_ctrl::report::valid_node_name(node) {
        eprintln!("wirelens: --node {node:?}: use 1 to 64 characters of A-Z a-z 0-9 . _ -");
        return exit::USAGE;
    }
    // Each flow's first interval delta is marked `first`.
    let n_flows = deltas.iter().filter(|d| d.first).count();
    // FNV-1a over what identifies this capture for this node.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let id = format!(
        "{node}\0{:?}\0{:?}\0{}\0{}\0{}",
        summary.first_ns, summary.last_ns, summary.packets, summary.bytes, n_flows
    );
    for b in id.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let n_deltas = deltas.len();
    let mut p = Pusher::new(PusherConfig {
        url: url.to_string(),
        node: node.to_string(),
        token,
        instance: h,
        meta: NodeMeta {
            version: env!("CARGO_PKG_VERSION").to_string(),
            mode: "analyze".into(),
            source: source.to_string(),
            hostname: None,
        },
        // An import holds the whole capture: nothing to drop.
        backlog_bytes: usize::MAX,
        timeout: Duration::from_secs(30),
        encoding,
    });
    // Cut by encoded size below the control plane's body limit.
    p.enqueue(deltas, now_ns());
    let n_reports = p.backlog();
    if let Err(e) = p.flush_until(std::time::Instant::now() + Duration::from_secs(60)) {
        eprintln!("wirelens: push: {e}");
        return EXIT_CTRL;
    }
    let s = p.stats();
    eprintln!(
        "wirelens: pushed {n_flows} flows as {n_deltas} interval deltas in {n_reports} report(s) ({} bytes, {}) to {url} as node {node}: {} accepted, {} already there",
        s.bytes_sent, p.encoding().name(), s.accepted, s.duplicates
    );
    exit::OK
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(node: &str, target: &str, rtts: &[u64], up: u64) -> ProbeSummary {
        let mut h = wirelens_dataplane::stats::Histogram::new();
        for &r in rtts {
            h.record(r);
        }
        let w = ProbeWindow {
            target: target.into(),
            start_ns: 1,
            end_ns: 2,
            interval_ns: 1,
            size: 128,
            dscp: 0,
            state: wirelens_ctrl::report::ProbeState::Ok,
            error: None,
            sent: rtts.len() as u64 + up,
            received: rtts.len() as u64,
            lost: up,
            lost_up: up,
            lost_down: 0,
            lost_unattributed: 0,
            late: 0,
            duplicates: 0,
            reordered: 0,
            rtt: h,
            ipdv: Default::default(),
        };
        wirelens_ctrl::agg::probe_summaries([(node, &w)]).remove(0)
    }

    /// A probe whose target is a service's ip:port lands beside it, merged
    /// over nodes through the JSON the API serves; other targets do not.
    #[test]
    fn probes_join_services_by_address() {
        let a = probe("n1", "198.18.2.2:862", &[20_000_000; 90], 10);
        let b = probe("n2", "198.18.2.2:862", &[40_000_000; 10], 0);
        let other = probe("n1", "198.18.9.9:862", &[1_000_000], 0);
        let wire: Vec<ProbeSummary> =
            serde_json::from_str(&serde_json::to_string(&[a, b, other]).unwrap()).unwrap();
        let mut svc = vec![
            ServiceSummary {
                service: "198.18.2.2:862/udp".into(),
                ..ServiceSummary::default()
            },
            ServiceSummary {
                service: "198.18.2.2:80/tcp".into(),
                ..ServiceSummary::default()
            },
        ];
        join_probes(&mut svc, &wire);
        let p = svc[0].probe.as_ref().expect("joined");
        assert_eq!(p.node, "n1,n2");
        assert_eq!((p.sent, p.lost_up, p.received), (110, 10, 100));
        assert_eq!(p.rtt.n, 100);
        assert!(p.rtt.p90_ns.unwrap() < 21_000_000, "{:?}", p.rtt);
        assert!(p.rtt.max_ns.unwrap() > 39_000_000, "{:?}", p.rtt);
        assert!(svc[1].probe.is_none());
        let cells = probe_cells(Some(p));
        assert_eq!(cells[1], "9.09%/0.00%");
        assert_eq!(probe_cells(None), ["-", "-"]);
        let mut dead = p.clone();
        dead.state = Some(wirelens_ctrl::report::ProbeState::NoReply);
        dead.loss_rate = Some(1.0);
        assert_eq!(probe_cells(Some(&dead))[1], "no_reply: 100.00% lost");
        dead.state = Some(wirelens_ctrl::report::ProbeState::Ok);
        dead.lost_unattributed = 11;
        assert_eq!(
            probe_cells(Some(&dead))[1],
            "9.09%/0.00% +10.00% either way"
        );
    }
}
