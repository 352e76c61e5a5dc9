//! `wirelens probe ...`: TWAMP-light probes, path MTU, NIC counters. The work
//! is done by the `wirelens-probe` crate; this is arguments and output.

use std::io::{self, BufWriter, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use clap::{Args, Subcommand};
use wirelens_probe::nic::{self, NicCounters, QueueDir, Source};
use wirelens_probe::pmtu::{self, Outcome, PmtuOptions, PmtuReport, Verdict};
use wirelens_probe::reflector::{self, AllowNet, Limits, ServeOptions};
use wirelens_probe::send::{self, SendOptions};
use wirelens_probe::session::{Quantiles, ReflectorMode, Report, SenderConfig, Split};
use wirelens_probe::twamp::{DEFAULT_PORT, MIN_PROBE_LEN};
use wirelens_probe::ProbeError;

use wirelens_output::{human_ns, NsStyle};

use crate::{exit, Format};

/// Synthetic probes: TWAMP-light RTT / loss / jitter, path MTU, NIC counters.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    #[command(subcommand)]
    pub command: ProbeCommand,
}

#[derive(Debug, Subcommand)]
pub enum ProbeCommand {
    Reflect(ReflectArgs),
    Send(SendArgs),
    Pmtu(PmtuArgs),
    Nic(NicArgs),
}

/// Answer TWAMP-light test packets (RFC 5357 stateful Session-Reflector):
/// one reply counter per sender, so senders can split loss up/down.
///
/// Not an amplifier: replies are exactly as long as requests (shorter than
/// 41 octets get none), only --allow sources are answered, and replies are
/// rate-limited per source address and in total; every request not
/// answered is counted by reason.
#[derive(Debug, Args)]
pub struct ReflectArgs {
    /// Address to listen on: IP or IP:PORT (port 862 if omitted). Required:
    /// pick the interface address probes arrive on (0.0.0.0 answers on all).
    #[arg(long)]
    pub listen: String,
    /// Answer only sources in these prefixes (comma-separated or repeated,
    /// e.g. 198.18.0.0/15,2001:db8::/32). Default: any source.
    #[arg(long, value_delimiter = ',')]
    pub allow: Vec<String>,
    /// Replies a second to one source address (all its ports together).
    #[arg(long, default_value_t = 1000.0)]
    pub rate_per_source: f64,
    /// Replies a second in total.
    #[arg(long, default_value_t = 20000.0)]
    pub rate_total: f64,
    /// Stop after this long (e.g. 30s, 5m); default: run until killed.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Copy the sender's sequence number instead of counting replies
    /// (RFC 5357 stateless mode; senders then cannot split loss).
    #[arg(long)]
    pub stateless: bool,
    /// Do not log new sessions on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// Send TWAMP-light probes to a reflector: RTT net of the reflector's dwell,
/// jitter, loss split upstream/downstream, reordering, duplicates.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// The reflector: HOST or HOST:PORT ([V6]:PORT), default port 862.
    pub target: String,
    /// Time between probes (e.g. 10ms, 0.5s).
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub interval: Duration,
    /// TWAMP test packet size in bytes (the UDP payload), at least 41.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u16).range(MIN_PROBE_LEN as i64..=65507))]
    pub size: u16,
    /// DSCP of the probes (0-63, e.g. 46 for EF).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=63))]
    pub dscp: u8,
    /// How long to send probes (the run ends at most one loss timeout later).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Stop after this many probes (whichever of --count and --duration comes first).
    #[arg(long)]
    pub count: Option<u64>,
    /// Width of one interval of the time series.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub report_interval: Duration,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Find the path MTU to a TWAMP-light reflector with confirmed DF probes, and
/// tell a clean ICMP packet-too-big from a black hole.
#[derive(Debug, Args)]
pub struct PmtuArgs {
    /// The reflector: HOST or HOST:PORT ([V6]:PORT), default port 862.
    pub target: String,
    /// Largest IP packet size to try (default: the route's MTU, at least 1500).
    #[arg(long)]
    pub max: Option<u32>,
    /// Probes per size before it counts as lost (RFC 8899 MAX_PROBES).
    #[arg(long, default_value_t = 3)]
    pub tries: u32,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Kernel (/sys/class/net/IF/statistics) and driver (ethtool -S) counters of
/// an interface, per queue where the driver names them.
#[derive(Debug, Args)]
pub struct NicArgs {
    /// Interface name.
    pub iface: String,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Parses `250ms`, `2s`, `1.5s`, `1m`, `500us`, `100ns`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration like 100ms, 2s or 1m"))?;
    let mult = match unit.trim() {
        "" | "s" => 1e9,
        "ms" => 1e6,
        "us" | "µs" => 1e3,
        "ns" => 1.0,
        "m" | "min" => 60e9,
        "h" => 3600e9,
        u => return Err(format!("{s:?}: unknown unit {u:?} (ns, us, ms, s, m, h)")),
    };
    let ns = v * mult;
    if !ns.is_finite() || !(0.0..=1e18).contains(&ns) {
        return Err(format!("{s:?}: out of range"));
    }
    Ok(Duration::from_nanos(ns as u64))
}

/// Resolves HOST, HOST:PORT, V6, [V6]:PORT with `port` as the default.
fn resolve(target: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(a) = target.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = target.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let with_port = if target.contains(':') {
        target.to_string()
    } else {
        format!("{target}:{port}")
    };
    with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {target:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{target:?} resolves to no address"))
}

pub fn run(args: &ProbeArgs) -> u8 {
    let r = match &args.command {
        ProbeCommand::Reflect(a) => run_reflect(a),
        ProbeCommand::Send(a) => run_send(a),
        ProbeCommand::Pmtu(a) => run_pmtu(a),
        ProbeCommand::Nic(a) => run_nic(a),
    };
    match r {
        Ok(()) => exit::OK,
        Err(msg) => {
            eprintln!("wirelens probe: {msg}");
            exit::INPUT
        }
    }
}

fn run_reflect(a: &ReflectArgs) -> Result<(), String> {
    let listen = resolve(&a.listen, DEFAULT_PORT)?;
    let allow = a
        .allow
        .iter()
        .map(|s| s.parse::<AllowNet>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--allow: {e}"))?;
    for (name, v) in [
        ("--rate-per-source", a.rate_per_source),
        ("--rate-total", a.rate_total),
    ] {
        if !(v.is_finite() && v >= 1.0) {
            return Err(format!("{name} {v}: must be at least 1 reply a second"));
        }
    }
    // Bursts of a quarter second, at least one reply.
    let limits = Limits {
        per_source: a.rate_per_source,
        per_source_burst: (a.rate_per_source / 4.0).max(1.0),
        total: a.rate_total,
        total_burst: (a.rate_total / 4.0).max(1.0),
    };
    let opts = ServeOptions {
        listen,
        allow: allow.clone(),
        limits,
        duration: a.duration,
        stateless: a.stateless,
        verbose: !a.quiet,
    };
    let stats = reflector::serve(&opts, |bound| {
        eprintln!(
            "wirelens probe reflect: listening on udp {bound} (TWAMP-light, {}; answering {}; \
             at most {}/s per source, {}/s in total)",
            if a.stateless { "stateless" } else { "stateful" },
            if allow.is_empty() {
                "any source (--allow limits who)".to_string()
            } else {
                allow
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            },
            a.rate_per_source,
            a.rate_total,
        );
    })
    .map_err(|e| e.to_string())?;
    eprintln!(
        "wirelens probe reflect: {} reflected, {} sessions; not answered: {} malformed, {} \
         shorter than the reply, {} not allowed, {} over the per-source rate, {} over the total rate",
        stats.reflected,
        stats.sessions,
        stats.malformed,
        stats.too_short,
        stats.not_allowed,
        stats.limited_source,
        stats.limited_total
    );
    Ok(())
}

fn probe_err(e: ProbeError) -> String {
    e.to_string()
}

fn run_send(a: &SendArgs) -> Result<(), String> {
    let target = resolve(&a.target, DEFAULT_PORT)?;
    let cfg = SenderConfig {
        interval_ns: a.interval.as_nanos().max(1) as u64,
        size: usize::from(a.size),
        duration_ns: Some(a.duration.as_nanos() as u64),
        count: a.count,
        report_interval_ns: a.report_interval.as_nanos().max(1_000_000) as u64,
        ..SenderConfig::default()
    };
    eprintln!(
        "wirelens probe send: {target}, {} B every {}, for {}{}",
        a.size,
        human_ns(cfg.interval_ns, NsStyle::Fine),
        human_ns(a.duration.as_nanos() as u64, NsStyle::Fine),
        a.count.map_or(String::new(), |c| format!(" or {c} probes")),
    );
    let report = send::run(&SendOptions {
        target,
        dscp: a.dscp,
        session: cfg,
    })
    .map_err(probe_err)?;
    print_send(&report, &target, a.format).map_err(|e| format!("writing output: {e}"))
}

fn q_cells(q: &Quantiles) -> String {
    format!(
        "min {} p50 {} p90 {} p99 {} max {}",
        human_ns(q.min_ns, NsStyle::Fine),
        human_ns(q.p50_ns, NsStyle::Fine),
        human_ns(q.p90_ns, NsStyle::Fine),
        human_ns(q.p99_ns, NsStyle::Fine),
        human_ns(q.max_ns, NsStyle::Fine)
    )
}

fn opt_u(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn print_send(r: &Report, target: &SocketAddr, format: Format) -> io::Result<()> {
    let mut out = BufWriter::new(io::stdout().lock());
    match format {
        Format::Json => {
            serde_json::to_writer(&mut out, r)?;
            writeln!(out)?;
        }
        Format::Ndjson => {
            for i in &r.intervals {
                serde_json::to_writer(&mut out, i)?;
                writeln!(out)?;
            }
            serde_json::to_writer(&mut out, &r.summary)?;
            writeln!(out)?;
        }
        Format::Table => {
            let s = &r.summary;
            let pct = if s.sent > 0 {
                100.0 * s.lost as f64 / s.sent as f64
            } else {
                0.0
            };
            let split = match s.loss_split {
                Split::Unavailable => {
                    "direction unknown: the reflector copies sequence numbers".to_string()
                }
                _ => {
                    let mut t = format!(
                        "{} upstream, {} downstream",
                        opt_u(s.lost_up),
                        opt_u(s.lost_down)
                    );
                    if s.lost_unattributed.unwrap_or(0) > 0 {
                        t += &format!(", {} either way", opt_u(s.lost_unattributed));
                    }
                    t
                }
            };
            writeln!(
                out,
                "{target}: {} sent, {} received, {} lost ({pct:.2}%): {split}",
                s.sent, s.received, s.lost
            )?;
            writeln!(out, "rtt (minus reflector dwell): {}", q_cells(&s.rtt))?;
            writeln!(
                out,
                "jitter: ipdv p50 {} p99 {} max {}, pdv p99 {}; reflector dwell p50 {} max {}",
                human_ns(s.ipdv.p50_ns, NsStyle::Fine),
                human_ns(s.ipdv.p99_ns, NsStyle::Fine),
                human_ns(s.ipdv.max_ns, NsStyle::Fine),
                human_ns(s.pdv_p99_ns, NsStyle::Fine),
                human_ns(s.dwell.p50_ns, NsStyle::Fine),
                human_ns(s.dwell.max_ns, NsStyle::Fine)
            )?;
            writeln!(
                out,
                "reordered {} (up {}, down {}), duplicates {} (up {}, down {}), late {}, malformed {}, unexpected {}; hops up {}; reflector {}; loss timeout {}",
                s.reordered,
                s.reordered_up,
                s.reordered_down,
                s.duplicates,
                s.duplicates_up,
                s.duplicates_down,
                s.late,
                s.malformed,
                s.unexpected,
                s.hops_up.map_or("-".to_string(), |h| h.to_string()),
                match s.reflector {
                    ReflectorMode::Stateful => "stateful",
                    ReflectorMode::Stateless => "stateless (copies sequence numbers)",
                    ReflectorMode::Unknown => "unknown",
                },
                human_ns(s.timeout_ns, NsStyle::Fine),
            )?;
            writeln!(out)?;
            writeln!(
                out,
                "{:>8}  {:>5}  {:>5}  {:>5}  {:>4}  {:>4}  {:>4}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}",
                "t", "sent", "recv", "lost", "up", "down", "?", "rtt min", "p50", "p99", "max", "ipdv"
            )?;
            for i in &r.intervals {
                writeln!(
                    out,
                    "{:>8}  {:>5}  {:>5}  {:>5}  {:>4}  {:>4}  {:>4}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}",
                    format!("+{:.1}s", (i.start_ns - s.start_ns) as f64 / 1e9),
                    i.sent,
                    i.received,
                    i.lost,
                    opt_u(i.lost_up),
                    opt_u(i.lost_down),
                    opt_u(i.lost_unattributed),
                    human_ns(i.rtt.min_ns, NsStyle::Fine),
                    human_ns(i.rtt.p50_ns, NsStyle::Fine),
                    human_ns(i.rtt.p99_ns, NsStyle::Fine),
                    human_ns(i.rtt.max_ns, NsStyle::Fine),
                    human_ns(i.ipdv_mean_abs_ns, NsStyle::Fine),
                )?;
            }
        }
    }
    out.flush()
}

fn run_pmtu(a: &PmtuArgs) -> Result<(), String> {
    let target = resolve(&a.target, DEFAULT_PORT)?;
    eprintln!(
        "wirelens probe pmtu: {target}: searching with DF probes (up to {} tries per size)",
        a.tries
    );
    let r = pmtu::run(&PmtuOptions {
        target,
        max: a.max,
        tries: a.tries,
    })
    .map_err(probe_err)?;
    print_pmtu(&r, a.format).map_err(|e| format!("writing output: {e}"))
}

fn print_pmtu(r: &PmtuReport, format: Format) -> io::Result<()> {
    let mut out = BufWriter::new(io::stdout().lock());
    match format {
        Format::Json | Format::Ndjson => {
            serde_json::to_writer(&mut out, r)?;
            writeln!(out)?;
        }
        Format::Table => {
            let mtu = r.path_mtu.map_or("-".to_string(), |m| m.to_string());
            let from = r.ptb_from.map_or(String::new(), |ip| format!(" from {ip}"));
            let why = match r.verdict {
                Verdict::Clean => format!("the largest probe ({}) passed", r.max_size),
                Verdict::Ptb => format!(
                    "ICMP packet-too-big{from} announced {}, confirmed by the reflector",
                    r.ptb_mtu.map_or("-".to_string(), |m| m.to_string())
                ),
                Verdict::BlackHole => format!(
                    "BLACK HOLE: probes above {mtu} vanish and no ICMP error explains it{}",
                    r.ptb_mtu
                        .map_or(String::new(), |m| format!(" (an ICMP{from} announced {m})"))
                ),
                Verdict::Local => "limited by the local interface (EMSGSIZE)".to_string(),
            };
            writeln!(out, "path MTU to {}: {mtu} ({why})", r.target)?;
            let steps: Vec<String> = r
                .steps
                .iter()
                .map(|s| match s.outcome {
                    Outcome::Ok => format!("{} ok", s.size),
                    Outcome::Ptb { mtu } => format!("{} too big (ICMP: mtu {mtu})", s.size),
                    Outcome::Local { mtu } => format!("{} too big locally (mtu {mtu})", s.size),
                    Outcome::Silent => format!("{} lost x{}", s.size, s.tries),
                })
                .collect();
            writeln!(
                out,
                "route MTU {}; probes (IP bytes): {}; {}",
                r.route_mtu,
                steps.join(", "),
                human_ns(r.elapsed_ns, NsStyle::Fine)
            )?;
        }
    }
    out.flush()
}

fn run_nic(a: &NicArgs) -> Result<(), String> {
    let c = nic::read_counters(&a.iface).map_err(|e| e.to_string())?;
    print_nic(&c, a.format).map_err(|e| format!("writing output: {e}"))
}

fn print_nic(c: &NicCounters, format: Format) -> io::Result<()> {
    let mut out = BufWriter::new(io::stdout().lock());
    match format {
        Format::Json => {
            serde_json::to_writer(&mut out, c)?;
            writeln!(out)?;
        }
        Format::Ndjson => {
            for k in &c.counters {
                let v = serde_json::json!({
                    "type": "counter", "ifname": c.ifname, "name": k.name,
                    "value": k.value, "source": k.source, "queue": k.queue,
                });
                serde_json::to_writer(&mut out, &v)?;
                writeln!(out)?;
            }
        }
        Format::Table => {
            let width = c.counters.iter().map(|k| k.name.len()).max().unwrap_or(0);
            for (source, title) in [
                (Source::Kernel, "kernel (/sys/class/net/IF/statistics)"),
                (Source::Driver, "driver (ethtool statistics)"),
            ] {
                writeln!(out, "{}: {title}", c.ifname)?;
                for k in c.counters.iter().filter(|k| k.source == source) {
                    let q = k.queue.map_or(String::new(), |q| {
                        let d = if q.dir == QueueDir::Rx { "rx" } else { "tx" };
                        format!("  [{d} queue {}]", q.index)
                    });
                    writeln!(out, "  {:width$}  {:>16}{q}", k.name, k.value)?;
                }
                if source == Source::Driver {
                    if let Some(e) = &c.driver_error {
                        writeln!(out, "  ({e})")?;
                    }
                }
            }
        }
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3 parsecs").is_err());
    }

    #[test]
    fn targets() {
        assert_eq!(
            resolve("198.18.0.1", 862),
            Ok("198.18.0.1:862".parse().unwrap())
        );
        assert_eq!(
            resolve("198.18.0.1:9", 862),
            Ok("198.18.0.1:9".parse().unwrap())
        );
        assert_eq!(
            resolve("2001:db8::1", 862),
            Ok("[2001:db8::1]:862".parse().unwrap())
        );
        assert_eq!(
            resolve("[2001:db8::1]:7", 862),
            Ok("[2001:db8::1]:7".parse().unwrap())
        );
    }
}
