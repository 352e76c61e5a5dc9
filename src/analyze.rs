//! `wirelens analyze FILE`: offline analysis of a pcap or pcapng capture.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::path::PathBuf;

use clap::Args;
use wirelens_dataplane::engine::{Engine, EngineConfig};
use wirelens_dataplane::flow::{FlowExport, TableConfig};
use wirelens_dataplane::report::{FlowRecord, Summary};
use wirelens_dataplane::source::{CaptureError, CaptureReader};
use wirelens_dataplane::wire::LinkType;

use crate::table::{self, Worst};
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
}

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

    fn finish(self, summary: &Summary, source: &str) -> io::Result<()> {
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
                table::print(&mut w, source, summary, worst.into_sorted())?;
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
    let mut pushed: Option<Vec<FlowExport>> = args.push.as_ref().map(|_| Vec::new());
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
        engine.handle_frame(frame.ts_ns, link, frame.data);
        n += 1;
        while let Some(exp) = engine.poll_export() {
            let rec = keep_for_push(&mut pushed, exp);
            crate::ipfix_cli::push(&mut ipfix, &rec);
            if let Err(e) = sink.push(rec) {
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
            let rec = keep_for_push(&mut pushed, exp);
            crate::ipfix_cli::push(&mut ipfix, &rec);
            if let Err(e) = sink.push(rec) {
                failed = Some(e);
            }
        }
    });
    if let Some(e) = failed {
        return output_error(e, ipfix);
    }
    let summary = engine.summary();
    if let Err(e) = sink.finish(&summary, &name) {
        return output_error(e, ipfix);
    }
    if let (Some(url), Some(node), Some(tf), Some(recs)) =
        (&args.push, &args.node, &args.token_file, pushed)
    {
        let code = crate::ctrl_cli::push_analysis(
            url,
            node,
            tf,
            &name,
            recs,
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

/// With `--push`, keeps a copy of the flow (and its RTT histograms) for the
/// control plane; returns the record for the output.
fn keep_for_push(pushed: &mut Option<Vec<FlowExport>>, exp: FlowExport) -> FlowRecord {
    match pushed {
        Some(p) => {
            let rec = exp.record.clone();
            p.push(exp);
            rec
        }
        None => exp.record,
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
