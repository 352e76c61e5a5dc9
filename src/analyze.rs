//! `wirelens analyze FILE`: offline analysis of a pcap or pcapng capture.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use wirelens_ctrl::alerts::AlertConfig;
use wirelens_ctrl::report::FlowDelta;
use wirelens_dataplane::engine::{Engine, EngineConfig};
use wirelens_dataplane::flow::{FlowExport, TableConfig};
use wirelens_dataplane::interval::{IntervalDelta, Intervals};
use wirelens_dataplane::report::{FlowRecord, Summary};
use wirelens_dataplane::source::{CaptureError, CaptureReader};
use wirelens_dataplane::wire::LinkType;

use crate::table::{self, Worst};
use crate::timeline::{self, Timeline};
use crate::{exit, Format};

/// Analyse a capture: per-flow loss, RTT, bursts and stalls, worst flows first.
#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// The capture: pcap or pcapng (Ethernet, raw IP, Linux SLL/SLL2, loopback),
    /// micro- or nanosecond timestamps. `-` reads standard input.
    pub file: PathBuf,
    /// Output format: `ndjson` streams one flow.v1 record per line.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Rows shown by `--format table` (the worst flows).
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Most flows held at once; beyond it the stalest are exported early and
    /// counted in `evicted_flows`.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_flows: usize,
    /// Idle time after which a TCP connection is exported (seconds).
    #[arg(long, default_value_t = 3600)]
    pub tcp_idle: u64,
    /// Idle time after which a UDP, ICMP or other flow is exported (seconds).
    #[arg(long, default_value_t = 300)]
    pub udp_idle: u64,
    /// Never show a progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Also send the flows to the control plane at URL as node `--node`'s report
    /// (a retried or repeated push of the same capture is counted once).
    /// `URL1,URL2,...`: control planes over one shared store, the next tried
    /// when one is down.
    #[arg(long, value_name = "URL", requires_all = ["node", "token_file"])]
    pub push: Option<String>,
    /// Node name to report as (with --push).
    #[arg(long, requires = "push")]
    pub node: Option<String>,
    /// File with the token for --push: `TOKEN` or `NODE:TOKEN` lines.
    #[arg(long, requires = "push")]
    pub token_file: Option<PathBuf>,
    /// How --push puts reports on the wire: `compact` (binary + zstd; falls
    /// back to JSON by itself for a control plane that does not read it) or
    /// `json` (report.v1).
    #[arg(long, value_enum, default_value_t = PushEncoding::Compact, requires = "push")]
    pub push_encoding: PushEncoding,
    /// Also export the flows as IPFIX (RFC 7011) over UDP to HOST:PORT
    /// (nfcapd, any IPFIX collector): one biflow data record per finished
    /// flow; elements in docs/ipfix.md.
    #[arg(long, value_name = "HOST:PORT")]
    pub ipfix: Option<String>,
    /// Observation Domain ID of the --ipfix messages.
    #[arg(long, default_value_t = 0, requires = "ipfix")]
    pub ipfix_domain: u32,
    /// Largest --ipfix message in bytes.
    #[arg(long, default_value_t = wirelens_ipfix::DEFAULT_MTU, requires = "ipfix")]
    pub ipfix_mtu: usize,
    /// Also cut every flow into intervals of packet time (`1s`, `10s`,
    /// `500ms`): `--format ndjson` adds an `interval` record per flow active
    /// in each interval, the table shows per service when its RTT changed and
    /// what the control plane's alert rules say of the capture, and `--push`
    /// sends the intervals (without it, `--push` cuts 10 s intervals).
    #[arg(long, value_name = "DURATION", value_parser = parse_interval)]
    pub interval: Option<Duration>,
    /// Draw the timeline (RTT p50/p99 per direction, retransmissions,
    /// throughput, zero-window time, new connections per interval) of the
    /// worst flow's service, or of `--service` / `--flow`, to FILE.svg
    /// (intervals of `--interval`, else 1 s).
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// The service --plot draws: `ip:port/proto` or `ip:port`.
    #[arg(long, requires = "plot", conflicts_with = "flow")]
    pub service: Option<String>,
    /// The flow --plot draws, by its client's `ip:port` (`[v6]:port`).
    #[arg(long, requires = "plot")]
    pub flow: Option<String>,
    /// With --interval: an RTT spike is a p90 at least this many times the
    /// service's baseline (as `ctrl serve --rtt-factor`).
    #[arg(long, default_value_t = AlertConfig::default().rtt_factor, requires = "interval")]
    pub rtt_factor: f64,
}

/// `--interval`: a duration of at least 1 ms.
fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = crate::probe_cli::parse_duration(s)?;
    if d < Duration::from_millis(1) {
        return Err(format!("{s:?}: an interval is at least 1ms"));
    }
    Ok(d)
}

/// `--push` without `--interval` cuts intervals of this (the control
/// plane's finest bucket).
const PUSH_INTERVAL: Duration = Duration::from_secs(10);
/// `--plot` without `--interval` draws intervals of this.
const PLOT_INTERVAL: Duration = Duration::from_secs(1);

/// `--push-encoding` of `analyze` and `run`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PushEncoding {
    Json,
    Compact,
}

impl From<PushEncoding> for wirelens_ctrl::codec::Encoding {
    fn from(e: PushEncoding) -> Self {
        match e {
            PushEncoding::Json => wirelens_ctrl::codec::Encoding::Json,
            PushEncoding::Compact => wirelens_ctrl::codec::Encoding::Compact,
        }
    }
}

const SEC: u64 = 1_000_000_000;
/// Files at least this large get a progress bar (when stderr is a terminal).
const PROGRESS_MIN_BYTES: u64 = 64 << 20;

/// Where flow records go as they leave the engine.
enum Sink {
    /// Written as they come: memory stays flat whatever the capture size.
    Ndjson(BufWriter<io::Stdout>),
    /// Held for one JSON document.
    Json(Vec<FlowRecord>),
    /// Only the worst `limit` are held.
    Table(Worst),
}

impl Sink {
    /// An `interval` record: written by NDJSON only.
    fn interval(&mut self, d: &IntervalDelta) -> io::Result<()> {
        match self {
            Sink::Ndjson(w) => {
                serde_json::to_writer(&mut *w, &d.record())?;
                w.write_all(b"\n")
            }
            Sink::Json(_) | Sink::Table(_) => Ok(()),
        }
    }

    fn push(&mut self, rec: FlowRecord) -> io::Result<()> {
        match self {
            Sink::Ndjson(w) => {
                serde_json::to_writer(&mut *w, &rec)?;
                w.write_all(b"\n")
            }
            Sink::Json(v) => {
                v.push(rec);
                Ok(())
            }
            Sink::Table(t) => {
                t.push(rec);
                Ok(())
            }
        }
    }

    fn finish(
        self,
        summary: &Summary,
        source: &str,
        tl: Option<(&Timeline, &AlertConfig)>,
    ) -> io::Result<()> {
        match self {
            Sink::Ndjson(mut w) => {
                serde_json::to_writer(&mut w, summary)?;
                w.write_all(b"\n")?;
                w.flush()
            }
            Sink::Json(flows) => {
                let mut w = BufWriter::new(io::stdout());
                let doc = serde_json::json!({ "flows": flows, "summary": summary });
                serde_json::to_writer_pretty(&mut w, &doc)?;
                w.write_all(b"\n")?;
                w.flush()
            }
            Sink::Table(worst) => {
                let mut w = BufWriter::new(io::stdout());
                let rows = worst.into_sorted();
                let services = tl.map(|_| rows.clone());
                table::print(&mut w, source, summary, rows)?;
                if let (Some((tl, cfg)), Some(rows)) = (tl, services) {
                    let t0 = summary.first_ns.unwrap_or(0);
                    timeline::print(&mut w, tl, &rows, t0, cfg)?;
                }
                w.flush()
            }
        }
    }
}

pub fn run(args: &AnalyzeArgs) -> u8 {
    let name = args.file.display().to_string();
    let (input, size): (Box<dyn Read>, u64) = if name == "-" {
        (Box::new(io::stdin().lock()), 0)
    } else {
        match File::open(&args.file) {
            Ok(f) => {
                let size = f.metadata().map(|m| m.len()).unwrap_or(0);
                (Box::new(f), size)
            }
            Err(e) => {
                eprintln!("wirelens: {name}: cannot open: {e}");
                return exit::INPUT;
            }
        }
    };
    // CaptureReader buffers (1 MiB reads) itself: a second buffer in front of
    // it would copy every byte once more.
    let mut reader = match CaptureReader::new(input) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wirelens: {name}: {e}");
            return exit::INPUT;
        }
    };

    let cfg = EngineConfig {
        table: TableConfig {
            capacity: args.max_flows.max(1),
            tcp_idle_ns: args.tcp_idle.saturating_mul(SEC),
            udp_idle_ns: args.udp_idle.saturating_mul(SEC),
            other_idle_ns: args.udp_idle.saturating_mul(SEC),
            ..TableConfig::default()
        },
    };
    let mut ipfix = match &args.ipfix {
        Some(target) => {
            match crate::ipfix_cli::connect(target, args.ipfix_domain, args.ipfix_mtu) {
                Ok(x) => Some(x),
                Err(e) => {
                    eprintln!("wirelens: {e}");
                    return exit::USAGE;
                }
            }
        }
        None => None,
    };
    let mut engine = Engine::new(cfg);
    let mut sink = match args.format {
        Format::Ndjson => Sink::Ndjson(BufWriter::with_capacity(1 << 16, io::stdout())),
        Format::Json => Sink::Json(Vec::new()),
        Format::Table => Sink::Table(Worst::new(args.limit)),
    };
    let progress = (!args.no_progress && size >= PROGRESS_MIN_BYTES && io::stderr().is_terminal())
        .then(|| {
            let pb = indicatif::ProgressBar::new(size);
            pb.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {bytes}/{total_bytes} [{bar:40}] {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            pb
        });

    let mut broke: Option<String> = None;
    // With --interval or --push: the intervals, and where their deltas go.
    if let Some(p) = &args.plot {
        if p.extension().and_then(|e| e.to_str()) != Some("svg") {
            eprintln!(
                "wirelens: --plot {}: only .svg is drawn (a PNG would need system font libraries)",
                p.display()
            );
            return exit::USAGE;
        }
    }
    let mut cut: Option<(Intervals, Taker)> = match (args.interval, &args.push, &args.plot) {
        (None, None, None) => None,
        (iv, push, plot) => {
            let default = if plot.is_some() {
                PLOT_INTERVAL
            } else {
                PUSH_INTERVAL
            };
            let width = iv.unwrap_or(default).as_nanos() as u64;
            Some((
                Intervals::new(width, &mut engine),
                Taker {
                    records: iv.is_some(),
                    timeline: (iv.is_some() || plot.is_some()).then(|| Timeline::new(width)),
                    pushed: push.as_ref().map(|_| Vec::new()),
                    flow: args.flow.clone().map(|f| (f, Timeline::new(width))),
                    worst: plot.as_ref().map(|_| Worst::new(1)),
                },
            ))
        }
    };
    let mut link_cache: Option<(u32, LinkType)> = None;
    let mut n: u64 = 0;
    // Frames of unsupported link types, and the first one's (type, packet number).
    let mut skipped: u64 = 0;
    let mut first_unsupported: Option<(u32, u64)> = None;
    loop {
        let frame = match reader.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                broke = Some(describe(&e));
                break;
            }
        };
        let link = match link_cache {
            Some((raw, lt)) if raw == frame.linktype => lt,
            _ => match LinkType::from_linktype(frame.linktype) {
                Some(lt) => {
                    link_cache = Some((frame.linktype, lt));
                    lt
                }
                None => {
                    // Skipped and counted (e.g. an 802.11 interface beside
                    // an Ethernet one in a pcapng); the analysis goes on.
                    engine.count_unsupported_link(frame.ts_ns, frame.linktype);
                    skipped += 1;
                    first_unsupported.get_or_insert((frame.linktype, n + skipped));
                    continue;
                }
            },
        };
        if let Some((iv, taker)) = cut.as_mut() {
            let mut failed = None;
            iv.advance(&mut engine, frame.ts_ns, |d| {
                if let Err(e) = taker.take(&mut sink, d) {
                    failed.get_or_insert(e);
                }
            });
            if let Some(e) = failed {
                return output_error(e, ipfix);
            }
        }
        engine.handle_frame(frame.ts_ns, link, frame.data);
        n += 1;
        while let Some(exp) = engine.poll_export() {
            if let Err(e) = take_exit(&mut cut, &mut sink, &mut ipfix, exp) {
                return output_error(e, ipfix);
            }
        }
        if n % 65536 == 0 {
            if let Some(pb) = &progress {
                pb.set_position(reader.offset());
            }
        }
    }
    if let Some(pb) = progress {
        pb.finish_and_clear();
    }
    // Streamed: the live flows' records are written as the table drains,
    // never all held at once.
    let mut failed: Option<io::Error> = None;
    engine.finish_each(|exp| {
        if failed.is_none() {
            if let Err(e) = take_exit(&mut cut, &mut sink, &mut ipfix, exp) {
                failed = Some(e);
            }
        }
    });
    if let Some(e) = failed {
        return output_error(e, ipfix);
    }
    let summary = engine.summary();
    let (timeline, pushed, flow_tl, worst) = match cut {
        Some((_, t)) => (t.timeline, t.pushed, t.flow, t.worst),
        None => (None, None, None, None),
    };
    let alert_cfg = AlertConfig {
        rtt_factor: args.rtt_factor,
        ..AlertConfig::default()
    };
    let shown = timeline
        .as_ref()
        .filter(|_| args.interval.is_some())
        .map(|t| (t, &alert_cfg));
    if let Err(e) = sink.finish(&summary, &name, shown) {
        return output_error(e, ipfix);
    }
    if let Some(path) = &args.plot {
        let worst = worst.map(|w| w.into_sorted()).unwrap_or_default();
        let code = plot(
            path,
            args,
            timeline.as_ref(),
            flow_tl.as_ref(),
            &worst,
            summary.first_ns.unwrap_or(0),
        );
        if code != exit::OK {
            return code;
        }
    }
    if let (Some(url), Some(node), Some(tf), Some(deltas)) =
        (&args.push, &args.node, &args.token_file, pushed)
    {
        let code = crate::ctrl_cli::push_analysis(
            url,
            node,
            tf,
            &name,
            deltas,
            &summary,
            args.push_encoding.into(),
        );
        if code != exit::OK && broke.is_none() {
            return code;
        }
    }
    if let Some(x) = ipfix {
        let code = crate::ipfix_cli::finish(x);
        if code != exit::OK && broke.is_none() {
            return code;
        }
    }
    if let (0, Some((linktype, at)), None) = (n, first_unsupported, &broke) {
        // Nothing this tool can read: a single-interface capture of an
        // unsupported link type fails as an unreadable input.
        eprintln!(
            "wirelens: {name}: link type {linktype} (packet {at}) is not supported and no packet of a supported link type followed ({skipped} skipped); wirelens reads {READS}"
        );
        return exit::INPUT;
    }
    match broke {
        None => exit::OK,
        Some(msg) => {
            eprintln!(
                "wirelens: {name}: {msg} (the {n} packets before it were analysed and printed)"
            );
            if n == 0 {
                exit::INPUT
            } else {
                exit::PARTIAL
            }
        }
    }
}

/// The link types the parser reads, for error messages.
const READS: &str =
    "Ethernet (1), raw IP (12, 101, 228, 229), Linux SLL (113), SLL2 (276) and loopback (0, 108)";

/// Where interval deltas go: NDJSON records (with `--interval`), the
/// capture's timeline (with `--interval`), the control plane (with `--push`).
struct Taker {
    records: bool,
    timeline: Option<Timeline>,
    pushed: Option<Vec<FlowDelta>>,
    /// `--flow`: the client endpoint, and that flow's own timeline.
    flow: Option<(String, Timeline)>,
    /// `--plot`: the worst flow (its service is drawn by default).
    worst: Option<Worst>,
}

impl Taker {
    fn take(&mut self, sink: &mut Sink, d: IntervalDelta) -> io::Result<()> {
        // A delta of only ICMP errors quoting the flow has no counters to show.
        if self.records && d.flow.c2s.packets + d.flow.s2c.packets > 0 {
            sink.interval(&d)?;
        }
        if self.timeline.is_none() && self.pushed.is_none() {
            return Ok(());
        }
        let start = d.start_ns;
        let fd = timeline::flow_delta(d);
        if let Some(t) = self.timeline.as_mut() {
            t.add(start, &fd);
        }
        if let Some((want, t)) = self.flow.as_mut() {
            if table::endpoint(fd.flow.client.ip, fd.flow.client.port) == *want {
                t.add(start, &fd);
            }
        }
        if let Some(p) = self.pushed.as_mut() {
            p.push(fd);
        }
        Ok(())
    }
}

/// A flow left the engine: its last interval delta (when cutting
/// intervals), then its record.
fn take_exit(
    cut: &mut Option<(Intervals, Taker)>,
    sink: &mut Sink,
    ipfix: &mut Option<wirelens_ipfix::udp::UdpExporter>,
    exp: FlowExport,
) -> io::Result<()> {
    if let Some((iv, taker)) = cut.as_mut() {
        if let Some(d) = iv.exited(&exp) {
            taker.take(sink, d)?;
        }
        if let Some(w) = taker.worst.as_mut() {
            w.push(exp.record.clone());
        }
    }
    crate::ipfix_cli::push(ipfix, &exp.record);
    sink.push(exp.record)
}

/// `--plot`: draws the chosen (or the worst flow's) service, or `--flow`.
fn plot(
    path: &std::path::Path,
    args: &AnalyzeArgs,
    tl: Option<&Timeline>,
    flow_tl: Option<&(String, Timeline)>,
    worst: &[FlowRecord],
    t0: u64,
) -> u8 {
    let (what, tl, key) = match (flow_tl, &args.service) {
        (Some((client, ftl)), _) => {
            let Some(svc) = ftl.services().next() else {
                eprintln!("wirelens: --flow {client}: no flow of that client in the capture");
                return exit::USAGE;
            };
            (format!("flow from {client} to {svc}"), ftl, svc.to_string())
        }
        (None, want) => {
            let Some(tl) = tl else { return exit::OK };
            let svc = match want {
                Some(w) => match tl.find_service(w) {
                    Some(s) => s.to_string(),
                    None => {
                        eprintln!("wirelens: --service {w}: no such service in the capture");
                        return exit::USAGE;
                    }
                },
                None => match timeline::services_of(worst, 1).pop() {
                    Some(s) => s,
                    None => {
                        eprintln!("wirelens: --plot: the capture has no flows");
                        return exit::INPUT;
                    }
                },
            };
            (format!("service {svc}"), tl, svc)
        }
    };
    let Some(rows) = tl.service(&key) else {
        return exit::INPUT;
    };
    match crate::plot::svg(path, &what, rows, t0, tl.width_ns()) {
        Ok(()) => {
            eprintln!(
                "wirelens: drew the timeline of {what} to {}",
                path.display()
            );
            exit::OK
        }
        Err(e) => {
            eprintln!("wirelens: --plot {}: {e}", path.display());
            exit::INPUT
        }
    }
}

fn describe(e: &CaptureError) -> String {
    e.to_string()
}

/// Stdout failed: what --ipfix holds still goes out, then the exit code.
fn output_error(e: io::Error, ipfix: Option<wirelens_ipfix::udp::UdpExporter>) -> u8 {
    if let Some(x) = ipfix {
        crate::ipfix_cli::finish(x);
    }
    if e.kind() == io::ErrorKind::BrokenPipe {
        // `wirelens analyze x.pcap --format ndjson | head`: not an error.
        return exit::OK;
    }
    eprintln!("wirelens: writing output: {e}");
    exit::INPUT
}
