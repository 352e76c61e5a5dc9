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

use crate::NodeError;

/// Where `/metrics`, `/flows` and `/healthz` listen unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9640";

/// How a worker waits for frames when its queue is quiet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PollMode {
    /// Busy-poll while traffic or hand-offs flow; after a quiet spell, wait
    /// in poll(2) for at most 1 ms at a time (a quiet node costs no core).
    #[default]
    Adaptive,
    /// Always busy-poll: one core per queue at 100 %, lowest latency.
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
            push_secs
        );
        self
    }

    /// Checks the options and applies the defaults.
    pub fn resolve(self) -> Result<NodeConfig, NodeError> {
        let bad = |m: String| Err(NodeError::Config(m));
        let Some(iface) = self.iface.filter(|s| !s.is_empty()) else {
            return bad(
                "no interface: pass --iface IF (or iface = \"IF\" in the config file)".into(),
            );
        };
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
        let frames = self.frames.unwrap_or(4096);
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
                if self.token_file.is_some() || self.node.is_some() {
                    return bad("--token-file and --node go with --ctrl URL".into());
                }
                None
            }
            Some(url) => {
                let (Some(token_file), Some(node)) = (self.token_file, self.node) else {
                    return bad("--ctrl needs --token-file FILE and --node NAME".into());
                };
                if !wirelens_ctrl::report::valid_node_name(&node) {
                    return bad(format!(
                        "--node {node:?}: use 1 to 64 characters of A-Z a-z 0-9 . _ -"
                    ));
                }
                Some(CtrlConfig {
                    url,
                    token_file,
                    node,
                    every: Duration::from_secs(self.push_secs.unwrap_or(5).max(1)),
                })
            }
        };
        Ok(NodeConfig {
            iface,
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

/// Pushing flow deltas to a control plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CtrlConfig {
    pub url: String,
    pub token_file: PathBuf,
    pub node: String,
    pub every: Duration,
}

/// The checked settings of one daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    pub iface: String,
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(err(o(|o| o.frames = Some(1000))).contains("power of two"));
    }
}
