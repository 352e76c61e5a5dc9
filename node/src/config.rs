//! The daemon's settings: [`Options`] as they come from the command line or a
//! TOML file (everything optional), merged and checked into a [`NodeConfig`].
//!
//! A file holds the same names as the command-line options:
//!
//! ```toml
//! iface = "eth1"
//! queues = [0, 1]
//! cores = [2, 3]
//! filter = ["10.0.0.0/8", "port:443"]
//! listen = "127.0.0.1:9640"
//! mode = "auto"          # auto | driver | generic
//! poll = "adaptive"      # adaptive | busy | wait
//! tcp_idle_secs = 300
//! probe = ["198.18.2.2:862,interval=100ms,size=128,dscp=46,window=10s"]
//! ```
//!
//! The command line wins over the file, field by field.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use wirelens_dataplane::flow::TableConfig;
use wirelens_dataplane::xdp::{Cidr, Filter, ModePreference};
use wirelens_probe::monitor::TargetConfig;
use wirelens_proto::codec::Encoding;

use crate::NodeError;

/// Where `/metrics`, `/flows` and `/healthz` listen unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9640";

/// How a worker waits for frames when its queue is quiet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PollMode {
    /// Kernel busy poll (the worker runs its queue's NAPI itself) while
    /// traffic or hand-offs flow; after a quiet spell, wait in poll(2) for
    /// at most 1 ms at a time (a quiet node costs no core).
    #[default]
    Adaptive,
    /// Always kernel busy poll: one core per queue at 100 %, lowest latency.
    Busy,
    /// Always wait in poll(2) (1 ms at most): least CPU, for small links.
    Wait,
}

impl std::str::FromStr for PollMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "adaptive" => Ok(PollMode::Adaptive),
            "busy" => Ok(PollMode::Busy),
            "wait" => Ok(PollMode::Wait),
            _ => Err(format!("{s:?}: expected adaptive, busy or wait")),
        }
    }
}

/// Every setting, optional: one from the command line, one from `--config`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    pub iface: Option<String>,
    /// Inline (gateway) mode: `IF_A,IF_B` pairs; every frame received on
    /// one port leaves on the other. Instead of `iface`.
    pub inline: Option<Vec<String>>,
    /// Rx queues to read (default: every active queue).
    pub queues: Option<Vec<u32>>,
    /// Cores for the workers, worker i on `cores[i % len]` (default: the
    /// cores this process may use, in order).
    pub cores: Option<Vec<usize>>,
    /// `CIDR` or `port:N` items; empty: take every IP packet.
    pub filter: Option<Vec<String>>,
    pub listen: Option<String>,
    pub force: Option<bool>,
    /// `auto`, `driver` or `generic`.
    pub mode: Option<String>,
    pub poll: Option<String>,
    /// UMEM frames per queue (power of two).
    pub frames: Option<u32>,
    /// Closed flows each worker keeps for `/flows`.
    pub closed_flows: Option<usize>,
    /// Flows each worker's table holds at most.
    pub max_flows: Option<usize>,
    pub tcp_idle_secs: Option<u64>,
    pub udp_idle_secs: Option<u64>,
    /// Most services (server ip:port) in `/metrics`; the rest add up under `_other`.
    pub max_services: Option<usize>,
    /// Control plane URL to push flow deltas to.
    pub ctrl: Option<String>,
    pub token_file: Option<PathBuf>,
    pub node: Option<String>,
    /// Seconds between two pushes.
    pub push_secs: Option<u64>,
    /// MiB of encoded reports kept while the control plane is unreachable
    /// (default 64; with `backlog_dir`, on disk, default 256); beyond it the
    /// oldest are dropped and counted.
    pub backlog_mib: Option<u64>,
    /// A directory for the reports not yet delivered: they survive a restart.
    pub backlog_dir: Option<PathBuf>,
    /// `compact` (default) or `json`.
    pub push_encoding: Option<String>,
    /// TWAMP-light probe targets: `TARGET[,interval=..,size=..,dscp=..,window=..,count=..]`.
    pub probe: Option<Vec<String>>,
    /// IPFIX collector (`HOST:PORT`, UDP) for the flow deltas.
    pub ipfix: Option<String>,
    /// Observation Domain ID of the IPFIX messages (default 0).
    pub ipfix_domain: Option<u32>,
    /// Largest IPFIX message in bytes (default 1400).
    pub ipfix_mtu: Option<usize>,
    /// A token file (the control plane's format): `/flows` then needs
    /// `Authorization: Bearer` with one of its tokens.
    pub flows_token_file: Option<PathBuf>,
}

macro_rules! take_over {
    ($self:ident, $file:ident, $($f:ident),+) => {
        $( if $self.$f.is_none() { $self.$f = $file.$f; } )+
    };
}

impl Options {
    /// Reads a TOML file of options.
    pub fn from_file(path: &std::path::Path) -> Result<Options, NodeError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            NodeError::Config(format!("cannot read config file {}: {e}", path.display()))
        })?;
        toml::from_str(&text)
            .map_err(|e| NodeError::Config(format!("config file {}: {e}", path.display())))
    }

    /// Fills what `self` leaves unset from `file`.
    pub fn or(mut self, file: Options) -> Options {
        take_over!(
            self,
            file,
            iface,
            inline,
            queues,
            cores,
            filter,
            listen,
            force,
            mode,
            poll,
            frames,
            closed_flows,
            max_flows,
            tcp_idle_secs,
            udp_idle_secs,
            max_services,
            ctrl,
            token_file,
            node,
            push_secs,
            backlog_mib,
            backlog_dir,
            push_encoding,
            probe,
            ipfix,
            ipfix_domain,
            ipfix_mtu,
            flows_token_file
        );
        self
    }

    /// Checks the options and applies the defaults.
    pub fn resolve(self) -> Result<NodeConfig, NodeError> {
        let bad = |m: String| Err(NodeError::Config(m));
        let inline = parse_inline(self.inline.as_deref().unwrap_or_default())?;
        let iface = match (self.iface.filter(|s| !s.is_empty()), inline.is_empty()) {
            (Some(_), false) => {
                return bad(
                    "--iface (tap mode) and --inline (gateway mode) exclude each other".into(),
                )
            }
            (Some(i), true) => i,
            (None, false) => inline
                .iter()
                .map(|(a, b)| format!("{a},{b}"))
                .collect::<Vec<_>>()
                .join(";"),
            (None, true) => {
                return bad("no interface: pass --iface IF (tap) or --inline IF_A,IF_B \
                            (gateway), or iface = \"IF\" in the config file"
                    .into())
            }
        };
        if !inline.is_empty() && (self.filter.is_some() || self.queues.is_some()) {
            return bad(
                "--filter and --queues are tap-mode options: --inline forwards and analyses \
                 every frame of its ports"
                    .into(),
            );
        }
        let filter = parse_filter(self.filter.as_deref().unwrap_or_default())?;
        let listen_s = self.listen.unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen: SocketAddr = match listen_s.parse() {
            Ok(a) => a,
            Err(_) => {
                return bad(format!(
                    "--listen {listen_s:?}: expected ADDR:PORT, e.g. {DEFAULT_LISTEN}"
                ))
            }
        };
        let mode = match self.mode.as_deref().unwrap_or("auto") {
            "auto" => ModePreference::Auto,
            "driver" | "native" => ModePreference::DriverOnly,
            "generic" | "skb" => ModePreference::GenericOnly,
            m => return bad(format!("--mode {m:?}: expected auto, driver or generic")),
        };
        let poll = match self.poll.as_deref() {
            None => PollMode::default(),
            Some(p) => p
                .parse()
                .map_err(|e| NodeError::Config(format!("--poll {e}")))?,
        };
        let frames = self.frames.unwrap_or(16384);
        if !frames.is_power_of_two() || !(256..=1 << 20).contains(&frames) {
            return bad(format!(
                "--frames {frames}: a power of two in 256..=1048576"
            ));
        }
        if let Some(q) = &self.queues {
            if q.is_empty() {
                return bad("--queues is empty".into());
            }
            let mut s = q.clone();
            s.sort_unstable();
            s.dedup();
            if s.len() != q.len() {
                return bad(format!("--queues {q:?} names a queue twice"));
            }
        }
        if self.cores.as_ref().is_some_and(Vec::is_empty) {
            return bad("--cores is empty".into());
        }
        const SEC: u64 = 1_000_000_000;
        let table = TableConfig {
            capacity: self.max_flows.unwrap_or(1 << 20).max(1),
            tcp_idle_ns: self.tcp_idle_secs.unwrap_or(300).saturating_mul(SEC),
            udp_idle_ns: self.udp_idle_secs.unwrap_or(60).saturating_mul(SEC),
            other_idle_ns: self.udp_idle_secs.unwrap_or(60).saturating_mul(SEC),
            ..TableConfig::default()
        };
        let ctrl = match self.ctrl {
            None => {
                if self.token_file.is_some()
                    || self.node.is_some()
                    || self.backlog_mib.is_some()
                    || self.backlog_dir.is_some()
                    || self.push_encoding.is_some()
                {
                    return bad(
                        "--token-file, --node, --backlog-mib, --backlog-dir and --push-encoding \
                         go with --ctrl URL"
                            .into(),
                    );
                }
                None
            }
            Some(url) => {
                let (Some(token_file), Some(node)) = (self.token_file, self.node) else {
                    return bad("--ctrl needs --token-file FILE and --node NAME".into());
                };
                if !wirelens_proto::report::valid_node_name(&node) {
                    return bad(format!(
                        "--node {node:?}: use 1 to 64 characters of A-Z a-z 0-9 . _ -"
                    ));
                }
                let encoding = match self.push_encoding.as_deref() {
                    None | Some("compact") => Encoding::Compact,
                    Some("json") => Encoding::Json,
                    Some(e) => {
                        return bad(format!("--push-encoding {e:?}: expected compact or json"))
                    }
                };
                let backlog_dir = self.backlog_dir.filter(|d| !d.as_os_str().is_empty());
                let mib = self.backlog_mib.unwrap_or(match backlog_dir {
                    Some(_) => DEFAULT_DISK_BACKLOG_MIB,
                    None => DEFAULT_BACKLOG_MIB,
                });
                if mib == 0 || mib > 1 << 20 {
                    return bad(format!(
                        "--backlog-mib {mib}: give 1 to 1048576 MiB of reports to keep"
                    ));
                }
                let bytes = |mib: u64| usize::try_from(mib << 20).unwrap_or(usize::MAX);
                Some(CtrlConfig {
                    url,
                    token_file,
                    node,
                    every: Duration::from_secs(self.push_secs.unwrap_or(5).max(1)),
                    // With a directory: memory holds the first reports of
                    // the backlog only, as much as without one at most.
                    backlog_bytes: bytes(match backlog_dir {
                        Some(_) => mib.min(DEFAULT_BACKLOG_MIB),
                        None => mib,
                    }),
                    disk_backlog: backlog_dir.map(|dir| (dir, bytes(mib))),
                    encoding,
                })
            }
        };
        let ipfix = match self.ipfix {
            None => {
                if self.ipfix_domain.is_some() || self.ipfix_mtu.is_some() {
                    return bad("--ipfix-domain and --ipfix-mtu go with --ipfix HOST:PORT".into());
                }
                None
            }
            Some(target) => {
                let encoder = wirelens_ipfix::EncoderConfig {
                    domain_id: self.ipfix_domain.unwrap_or(0),
                    mtu: self.ipfix_mtu.unwrap_or(wirelens_ipfix::DEFAULT_MTU),
                    ..wirelens_ipfix::EncoderConfig::default()
                };
                if let Err(e) = wirelens_ipfix::Encoder::new(encoder.clone()) {
                    return bad(format!("--ipfix-mtu: {e}"));
                }
                Some(IpfixConfig { target, encoder })
            }
        };
        let mut probes: Vec<TargetConfig> = Vec::new();
        for spec in self.probe.as_deref().unwrap_or_default() {
            let t = parse_probe(spec)?;
            if probes.iter().any(|p| p.target == t.target) {
                return bad(format!("--probe {}: the target is given twice", t.target));
            }
            probes.push(t);
        }
        Ok(NodeConfig {
            iface,
            inline,
            queues: self.queues,
            cores: self.cores,
            filter,
            listen,
            force: self.force.unwrap_or(false),
            mode,
            poll,
            frames,
            closed_flows: self.closed_flows.unwrap_or(10_000),
            max_services: self.max_services.unwrap_or(1000).max(1),
            table,
            export_every: Duration::from_secs(1),
            ctrl,
            probes,
            ipfix,
            flows_token_file: self.flows_token_file,
        })
    }
}

/// Parses `--filter` items: `CIDR` (or a bare address) and `port:N`.
pub fn parse_filter<S: AsRef<str>>(items: &[S]) -> Result<Filter, NodeError> {
    let mut f = Filter::default();
    for item in items.iter().flat_map(|s| s.as_ref().split(',')) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        if let Some(p) = item.strip_prefix("port:") {
            let port: u16 = p.trim().parse().map_err(|_| {
                NodeError::Config(format!("--filter {item:?}: port:N with N in 0..=65535"))
            })?;
            if !f.ports.contains(&port) {
                f.ports.push(port);
            }
        } else {
            let c: Cidr = item
                .parse()
                .map_err(|e| NodeError::Config(format!("--filter: {e}")))?;
            if !f.cidrs.contains(&c) {
                f.cidrs.push(c);
            }
        }
    }
    Ok(f)
}

/// Parses `--inline` items: `IF_A,IF_B` each (a list may also come as one
/// flat `A,B,C,D`); no port in two pairs.
pub fn parse_inline<S: AsRef<str>>(items: &[S]) -> Result<Vec<(String, String)>, NodeError> {
    let ports: Vec<&str> = items
        .iter()
        .flat_map(|s| s.as_ref().split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if ports.len() % 2 != 0 {
        return Err(NodeError::Config(format!(
            "--inline {}: ports come in pairs, IF_A,IF_B",
            ports.join(",")
        )));
    }
    let mut pairs = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        if ports[..i].contains(p) {
            return Err(NodeError::Config(format!(
                "--inline: {p} is given twice (a port belongs to one pair)"
            )));
        }
    }
    for pair in ports.chunks_exact(2) {
        pairs.push((pair[0].to_string(), pair[1].to_string()));
    }
    Ok(pairs)
}

/// Parses `250ms`, `2s`, `1.5s`, `1m`, `500us`; a bare number is seconds.
fn parse_duration_ns(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "" | "s" => 1e9,
        "ms" => 1e6,
        "us" => 1e3,
        "m" | "min" => 60e9,
        _ => return None,
    };
    let ns = v * mult;
    (ns.is_finite() && (0.0..=1e15).contains(&ns)).then_some(ns as u64)
}

/// Default TWAMP port (RFC 5357 reserves 862).
const TWAMP_PORT: u16 = 862;

/// Parses one `--probe` item: `TARGET[,interval=..,size=..,dscp=..,window=..,count=..]`;
/// TARGET is `IP`, `IP:PORT`, `[V6]:PORT` or `HOST[:PORT]` (port 862 by default).
pub fn parse_probe(spec: &str) -> Result<TargetConfig, NodeError> {
    let err = |m: String| NodeError::Config(format!("--probe {spec:?}: {m}"));
    let mut parts = spec.split(',').map(str::trim);
    let target_s = parts.next().unwrap_or_default();
    if target_s.is_empty() {
        return Err(err(
            "no target: TARGET[,interval=..,size=..,dscp=..,window=..]".into(),
        ));
    }
    let target: SocketAddr = if let Ok(a) = target_s.parse::<SocketAddr>() {
        a
    } else if let Ok(ip) = target_s.parse::<std::net::IpAddr>() {
        SocketAddr::new(ip, TWAMP_PORT)
    } else {
        use std::net::ToSocketAddrs;
        let with_port = if target_s.contains(':') {
            target_s.to_string()
        } else {
            format!("{target_s}:{TWAMP_PORT}")
        };
        with_port
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| err(format!("cannot resolve {target_s:?}")))?
    };
    if target.port() == 0 || target.ip().is_unspecified() {
        return Err(err(
            "the target needs an address and a port other than 0".into()
        ));
    }
    let mut t = TargetConfig {
        target,
        interval_ns: 100_000_000,
        size: 128,
        dscp: 0,
        window_ns: 10_000_000_000,
        count: None,
    };
    for kv in parts.filter(|p| !p.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| err(format!("{kv:?}: expected key=value")))?;
        let dur = || {
            parse_duration_ns(v).ok_or_else(|| err(format!("{k}={v:?}: expected e.g. 100ms, 10s")))
        };
        match k.trim() {
            "interval" => t.interval_ns = dur()?,
            "window" => t.window_ns = dur()?,
            "size" => {
                t.size = v
                    .parse::<usize>()
                    .ok()
                    .filter(|s| (41..=65507).contains(s))
                    .ok_or_else(|| err(format!("size={v:?}: 41 to 65507 bytes")))?
            }
            "dscp" => {
                t.dscp = v
                    .parse::<u8>()
                    .ok()
                    .filter(|d| *d <= 63)
                    .ok_or_else(|| err(format!("dscp={v:?}: 0 to 63")))?
            }
            "count" => {
                t.count = Some(
                    v.parse::<u64>()
                        .ok()
                        .filter(|c| *c > 0)
                        .ok_or_else(|| err(format!("count={v:?}: a positive number")))?,
                )
            }
            other => {
                return Err(err(format!(
                    "unknown option {other:?}: interval, size, dscp, window, count"
                )))
            }
        }
    }
    if t.interval_ns < 1_000_000 {
        return Err(err("interval below 1ms".into()));
    }
    if t.window_ns < t.interval_ns || t.window_ns > 3_600_000_000_000 {
        return Err(err(
            "window must be at least one interval and at most 1h".into()
        ));
    }
    Ok(t)
}

/// Pushing flow deltas to a control plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CtrlConfig {
    pub url: String,
    pub token_file: PathBuf,
    pub node: String,
    pub every: Duration,
    /// Bytes of encoded reports held in memory while the control plane is
    /// unreachable.
    pub backlog_bytes: usize,
    /// `--backlog-dir` and the bytes of reports it holds at most.
    pub disk_backlog: Option<(PathBuf, usize)>,
    pub encoding: Encoding,
}

/// `--backlog-mib` without `--backlog-dir`: reports held in memory.
pub const DEFAULT_BACKLOG_MIB: u64 = 64;
/// `--backlog-mib` with `--backlog-dir`: reports held on disk.
pub const DEFAULT_DISK_BACKLOG_MIB: u64 = 256;

/// Exporting flow deltas as IPFIX over UDP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpfixConfig {
    /// `HOST:PORT` of the collector (resolved when the daemon starts).
    pub target: String,
    pub encoder: wirelens_ipfix::EncoderConfig,
}

/// The checked settings of one daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// The tap interface; in inline mode the pairs, as `A,B;C,D` (a label).
    pub iface: String,
    /// Inline mode's port pairs (empty: tap mode on `iface`).
    pub inline: Vec<(String, String)>,
    pub queues: Option<Vec<u32>>,
    pub cores: Option<Vec<usize>>,
    pub filter: Filter,
    pub listen: SocketAddr,
    pub force: bool,
    pub mode: ModePreference,
    pub poll: PollMode,
    pub frames: u32,
    pub closed_flows: usize,
    pub max_services: usize,
    pub table: TableConfig,
    /// How often each worker publishes its snapshot.
    pub export_every: Duration,
    pub ctrl: Option<CtrlConfig>,
    /// `--probe` targets.
    pub probes: Vec<TargetConfig>,
    pub ipfix: Option<IpfixConfig>,
    /// `--flows-token-file`: `/flows` needs one of its tokens.
    pub flows_token_file: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_pairs() {
        let p = parse_inline(&["wla,wlb", "wlc,wld"]).unwrap();
        assert_eq!(
            p,
            vec![
                ("wla".to_string(), "wlb".to_string()),
                ("wlc".to_string(), "wld".to_string())
            ]
        );
        assert!(parse_inline(&["wla"]).is_err());
        assert!(parse_inline(&["wla,wla"]).is_err());
        assert!(parse_inline(&["wla,wlb", "wlb,wlc"]).is_err());
        let cfg = Options {
            inline: Some(vec!["wla,wlb".into()]),
            ..Options::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(cfg.iface, "wla,wlb");
        let both = Options {
            iface: Some("wlx".into()),
            inline: Some(vec!["wla,wlb".into()]),
            ..Options::default()
        };
        assert!(both.resolve().is_err());
        let filtered = Options {
            inline: Some(vec!["wla,wlb".into()]),
            filter: Some(vec!["port:443".into()]),
            ..Options::default()
        };
        assert!(filtered.resolve().is_err());
    }

    #[test]
    fn filter_items() {
        let f = parse_filter(&["198.18.0.0/15,port:443", " 2001:db8::/32 ", "port:443"]).unwrap();
        assert_eq!(f.cidrs.len(), 2);
        assert_eq!(f.ports, vec![443]);
        assert!(parse_filter(&["port:70000"]).is_err());
        assert!(parse_filter(&["10.0.0.0/33"]).is_err());
        assert!(parse_filter::<&str>(&[]).unwrap().is_empty());
    }

    #[test]
    fn command_line_wins_over_file() {
        let file: Options = toml::from_str(
            "iface = \"eth9\"\nlisten = \"0.0.0.0:1\"\nfilter = [\"port:53\"]\npoll = \"wait\"\n",
        )
        .unwrap();
        let cli = Options {
            iface: Some("eth1".into()),
            ..Options::default()
        };
        let c = cli.or(file).resolve().unwrap();
        assert_eq!(c.iface, "eth1");
        assert_eq!(c.listen, "0.0.0.0:1".parse().unwrap());
        assert_eq!(c.filter.ports, vec![53]);
        assert_eq!(c.poll, PollMode::Wait);
        assert_eq!(c.mode, ModePreference::Auto);
        assert!(toml::from_str::<Options>("bogus = 1").is_err());
    }

    #[test]
    fn probe_targets() {
        let t = parse_probe("198.18.2.2").unwrap();
        assert_eq!(t.target, "198.18.2.2:862".parse().unwrap());
        assert_eq!((t.interval_ns, t.size, t.dscp), (100_000_000, 128, 0));
        assert_eq!((t.window_ns, t.count), (10_000_000_000, None));
        let t =
            parse_probe("[2001:db8::2]:9000, interval=10ms,size=200,dscp=46,window=2s,count=400")
                .unwrap();
        assert_eq!(t.target, "[2001:db8::2]:9000".parse().unwrap());
        assert_eq!((t.interval_ns, t.size, t.dscp), (10_000_000, 200, 46));
        assert_eq!((t.window_ns, t.count), (2_000_000_000, Some(400)));
        for (bad, why) in [
            ("", "no target"),
            ("198.18.2.2,interval=0.1ms", "below 1ms"),
            ("198.18.2.2,size=20", "41 to 65507"),
            ("198.18.2.2,dscp=64", "0 to 63"),
            ("198.18.2.2,speed=1", "unknown option"),
            (
                "198.18.2.2,window=5ms,interval=10ms",
                "at least one interval",
            ),
            ("198.18.2.2,count=0", "positive"),
            ("198.18.2.2,interval", "key=value"),
            ("0.0.0.0:862", "address"),
        ] {
            let e = parse_probe(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        // Repeatable, in the file too; the same target twice is refused.
        let file: Options =
            toml::from_str("iface = \"x\"\nprobe = [\"198.18.2.2\", \"198.18.3.3:7\"]\n").unwrap();
        assert_eq!(file.clone().resolve().unwrap().probes.len(), 2);
        let twice = Options {
            probe: Some(vec!["198.18.2.2".into(), "198.18.2.2:862".into()]),
            ..file
        };
        assert!(twice.resolve().unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn bad_options_say_what_to_do() {
        let err = |o: Options| o.resolve().unwrap_err().to_string();
        assert!(err(Options::default()).contains("--iface"));
        let o = |f: fn(&mut Options)| {
            let mut o = Options {
                iface: Some("x".into()),
                ..Options::default()
            };
            f(&mut o);
            o
        };
        assert!(err(o(|o| o.mode = Some("fast".into()))).contains("auto, driver or generic"));
        assert!(err(o(|o| o.queues = Some(vec![1, 1]))).contains("twice"));
        assert!(err(o(|o| o.ctrl = Some("http://x".into()))).contains("--token-file"));
        assert!(err(o(|o| o.backlog_mib = Some(8))).contains("go with --ctrl"));
        assert!(err(o(|o| o.ipfix_mtu = Some(1400))).contains("go with --ipfix"));
        let ipfix = |mtu: Option<usize>| {
            Options {
                iface: Some("x".into()),
                ipfix: Some("198.18.0.9:4739".into()),
                ipfix_mtu: mtu,
                ..Options::default()
            }
            .resolve()
        };
        let c = ipfix(None).unwrap().ipfix.unwrap();
        assert_eq!(c.target, "198.18.0.9:4739");
        assert_eq!(c.encoder.mtu, wirelens_ipfix::DEFAULT_MTU);
        assert_eq!(ipfix(Some(9000)).unwrap().ipfix.unwrap().encoder.mtu, 9000);
        assert!(err(Options {
            iface: Some("x".into()),
            ipfix: Some("198.18.0.9:4739".into()),
            ipfix_mtu: Some(300),
            ..Options::default()
        })
        .contains("too small"));
        let ctrl = |f: fn(&mut Options)| {
            o(|o| {
                o.ctrl = Some("http://x".into());
                o.token_file = Some("t".into());
                o.node = Some("n".into());
            })
            .or(o(f))
        };
        assert!(err(ctrl(|o| o.push_encoding = Some("xml".into()))).contains("compact or json"));
        assert!(err(ctrl(|o| o.backlog_mib = Some(0))).contains("--backlog-mib 0"));
        let c = ctrl(|o| o.backlog_mib = Some(3))
            .resolve()
            .unwrap()
            .ctrl
            .unwrap();
        assert_eq!((c.backlog_bytes, c.encoding), (3 << 20, Encoding::Compact));
        let c = ctrl(|o| o.push_encoding = Some("json".into()))
            .resolve()
            .unwrap()
            .ctrl
            .unwrap();
        assert_eq!((c.backlog_bytes, c.encoding), (64 << 20, Encoding::Json));
        assert_eq!(c.disk_backlog, None);
        // A disk backlog: --backlog-mib bounds the directory (default 256),
        // memory holds the first 64 MiB of it at most.
        assert!(err(o(|o| o.backlog_dir = Some("d".into()))).contains("go with --ctrl"));
        let c = ctrl(|o| o.backlog_dir = Some("/var/lib/wl".into()))
            .resolve()
            .unwrap()
            .ctrl
            .unwrap();
        assert_eq!(c.disk_backlog, Some(("/var/lib/wl".into(), 256 << 20)));
        assert_eq!(c.backlog_bytes, 64 << 20);
        let c = ctrl(|o| {
            o.backlog_dir = Some("d".into());
            o.backlog_mib = Some(16);
        })
        .resolve()
        .unwrap()
        .ctrl
        .unwrap();
        assert_eq!(c.disk_backlog, Some(("d".into(), 16 << 20)));
        assert_eq!(c.backlog_bytes, 16 << 20);
        assert!(err(o(|o| o.frames = Some(1000))).contains("power of two"));
    }
}
