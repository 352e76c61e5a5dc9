//! `wirelens run --iface IF`: the live appliance (tap/SPAN mode), and
//! `wirelens run --inline IF_A,IF_B` (gateway mode, a bump in the wire). The
//! work is done by `wirelens-node`; this file is the command line.

use std::path::PathBuf;

use clap::Args;
use wirelens_node::{NodeError, Options};

/// Run the appliance on a capture interface: XDP + AF_XDP, one pinned worker
/// per rx queue, /metrics, /flows and /healthz over HTTP.
///
/// Meant for a SPAN or tap port. Traffic outside --filter, and all traffic
/// should wirelens die, still reaches the kernel stack (fail-open).
/// SIGINT/SIGTERM stop the workers and detach the XDP program.
///
/// With --inline IF_A,IF_B instead of --iface, the box is a gateway: every
/// frame received on one port leaves unchanged on the other, forwarded by
/// XDP in the kernel, and a header copy of each is analysed. Forwarding
/// goes on when wirelens stops, crashes or is killed (fail-open); a stop
/// leaves the program forwarding, `ip link set dev IF xdp off` removes it.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The capture interface (SPAN/tap port).
    #[arg(long)]
    pub iface: Option<String>,
    /// Gateway mode: forward between IF_A and IF_B (both ways) and analyse
    /// every frame; repeat for several pairs. Instead of --iface.
    #[arg(long, value_name = "IF_A,IF_B", conflicts_with_all = ["iface", "filter", "queues"])]
    pub inline: Vec<String>,
    /// Rx queues to read, comma-separated (default: every active queue).
    #[arg(long, value_delimiter = ',')]
    pub queues: Option<Vec<u32>>,
    /// Cores for the workers, comma-separated; worker i runs on the i-th
    /// (default: the cores this process may use).
    #[arg(long, value_delimiter = ',')]
    pub cores: Option<Vec<usize>>,
    /// Take only this traffic: CIDRs and `port:N`, comma-separated, e.g.
    /// `10.0.0.0/8,port:443` (a packet must match an address and, with ports,
    /// a port). Default: every IP packet.
    #[arg(long, value_delimiter = ',')]
    pub filter: Option<Vec<String>>,
    /// Where /metrics, /flows and /healthz listen (default 127.0.0.1:9640).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// Settings from a TOML file (same names as these options, with `_`);
    /// options given here win.
    #[arg(long, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    /// Attach even to an interface (or inline port) that carries the
    /// host's addresses or default route.
    #[arg(long)]
    pub force: bool,
    /// XDP attach mode: auto (driver, else generic), driver, generic.
    #[arg(long, value_parser = ["auto", "driver", "generic"])]
    pub mode: Option<String>,
    /// How workers wait for frames: adaptive (busy-poll under load, sleep
    /// when quiet), busy (always spin: lowest latency, one core per queue),
    /// wait (least CPU).
    #[arg(long, value_parser = ["adaptive", "busy", "wait"])]
    pub poll: Option<String>,
    /// UMEM frames per queue (power of two; default 16384).
    #[arg(long)]
    pub frames: Option<u32>,
    /// Recently closed flows each worker keeps for /flows (default 10000).
    #[arg(long)]
    pub closed_flows: Option<usize>,
    /// Flows each worker holds at most (default 1048576).
    #[arg(long)]
    pub max_flows: Option<usize>,
    /// Idle time after which a TCP connection is closed out (seconds, default 300).
    #[arg(long)]
    pub tcp_idle: Option<u64>,
    /// Idle time after which a UDP/ICMP/other flow is closed out (seconds, default 60).
    #[arg(long)]
    pub udp_idle: Option<u64>,
    /// Push flow deltas to the control plane at URL (with --token-file and --node);
    /// `URL1,URL2,...`: control planes over one shared store, the next tried
    /// when one is down.
    #[arg(long, value_name = "URL")]
    pub ctrl: Option<String>,
    /// Token for --ctrl: a file of `TOKEN` or `NODE:TOKEN` lines.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// This node's name at the control plane.
    #[arg(long)]
    pub node: Option<String>,
    /// Seconds between two pushes (default 5).
    #[arg(long)]
    pub push_secs: Option<u64>,
    /// MiB of encoded reports kept while the control plane is unreachable
    /// (default 64; with --backlog-dir the bound of the directory, default
    /// 256); past it the oldest are dropped, and the control plane sees the
    /// count (`dropped_reports`, `dropped_flows`).
    #[arg(long, value_name = "MIB")]
    pub backlog_mib: Option<u64>,
    /// Keep every report in DIR (created 0700) until the control plane took
    /// it: what a node could not deliver is sent after a restart, oldest
    /// first, counted once.
    #[arg(long, value_name = "DIR")]
    pub backlog_dir: Option<PathBuf>,
    /// How reports travel: `compact` (binary + zstd, default; falls back to
    /// JSON by itself for a control plane that does not read it) or `json`.
    #[arg(long, value_enum)]
    pub push_encoding: Option<crate::analyze::PushEncoding>,
    /// Probe a TWAMP-light reflector continuously (repeatable):
    /// `TARGET[,interval=100ms,size=128,dscp=0,window=10s,count=N]`. TARGET is
    /// IP, IP:PORT or [V6]:PORT (port 862 by default). Results per window on
    /// /metrics (wirelens_probe_*) and, with --ctrl, pushed to the control plane.
    #[arg(long, value_name = "TARGET[,OPT=V..]")]
    pub probe: Vec<String>,
    /// CA certificate(s) (PEM) that sign an https --ctrl's certificate
    /// [default: $WIRELENS_CA_FILE, else the system's CA bundle].
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// This node's certificate (PEM) for a control plane that requires client
    /// certificates (`ctrl serve --client-ca`) [default: $WIRELENS_CLIENT_CERT].
    #[arg(long, value_name = "PEM", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// The private key of --client-cert [default: $WIRELENS_CLIENT_KEY].
    #[arg(long, value_name = "PEM", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Export flow deltas as IPFIX (RFC 7011) over UDP to HOST:PORT (nfcapd,
    /// any IPFIX collector): one biflow data record per flow that moved, on
    /// each export tick (1 s); elements in docs/ipfix.md. Counters on
    /// /metrics (wirelens_ipfix_*).
    #[arg(long, value_name = "HOST:PORT")]
    pub ipfix: Option<String>,
    /// Observation Domain ID of the --ipfix messages (default 0).
    #[arg(long, requires = "ipfix")]
    pub ipfix_domain: Option<u32>,
    /// Largest --ipfix message in bytes (default 1400).
    #[arg(long, requires = "ipfix")]
    pub ipfix_mtu: Option<usize>,
    /// /flows needs `Authorization: Bearer` with a token of FILE (`TOKEN`
    /// or `NODE:TOKEN` lines, as --token-file); default: /flows is open.
    #[arg(long, value_name = "FILE")]
    pub flows_token_file: Option<PathBuf>,
}

pub fn run(args: &RunArgs) -> u8 {
    // The pusher reads its TLS options from the environment
    // (`ClientOptions::from_env`); the flags win over inherited values. Set
    // here, before any thread exists.
    for (var, v) in [
        (wirelens_ctrl::client::ENV_CA_FILE, &args.ca_file),
        (wirelens_ctrl::client::ENV_CLIENT_CERT, &args.client_cert),
        (wirelens_ctrl::client::ENV_CLIENT_KEY, &args.client_key),
    ] {
        if let Some(path) = v {
            std::env::set_var(var, path);
        }
    }
    match start(args) {
        Ok(()) => crate::exit::OK,
        Err(e) => {
            eprintln!("wirelens: {e}");
            crate::exit::INPUT
        }
    }
}

fn start(args: &RunArgs) -> Result<(), NodeError> {
    let cli = Options {
        iface: args.iface.clone(),
        inline: (!args.inline.is_empty()).then(|| args.inline.clone()),
        queues: args.queues.clone(),
        cores: args.cores.clone(),
        filter: args.filter.clone(),
        listen: args.listen.clone(),
        force: args.force.then_some(true),
        mode: args.mode.clone(),
        poll: args.poll.clone(),
        frames: args.frames,
        closed_flows: args.closed_flows,
        max_flows: args.max_flows,
        tcp_idle_secs: args.tcp_idle,
        udp_idle_secs: args.udp_idle,
        max_services: None,
        ctrl: args.ctrl.clone(),
        token_file: args.token_file.clone(),
        node: args.node.clone(),
        push_secs: args.push_secs,
        backlog_mib: args.backlog_mib,
        backlog_dir: args.backlog_dir.clone(),
        push_encoding: args.push_encoding.map(|e| {
            match e {
                crate::analyze::PushEncoding::Json => "json",
                crate::analyze::PushEncoding::Compact => "compact",
            }
            .to_string()
        }),
        probe: (!args.probe.is_empty()).then(|| args.probe.clone()),
        ipfix: args.ipfix.clone(),
        ipfix_domain: args.ipfix_domain,
        ipfix_mtu: args.ipfix_mtu,
        flows_token_file: args.flows_token_file.clone(),
    };
    let opts = match &args.config {
        Some(path) => cli.or(Options::from_file(path)?),
        None => cli,
    };
    wirelens_node::run(&opts.resolve()?)
}
