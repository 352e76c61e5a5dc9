//! wirelens-node: the appliance daemon behind `wirelens run` (tap/SPAN mode).
//!
//! ```text
//! NIC queue q -> XDP program (filter, fail-open) -> XSKMAP[q] -> AF_XDP socket q
//!   -> XskSource (FrameSource) -> pipeline worker q, pinned: parse, hand off by
//!      symmetric flow hash, Engine (the same one `analyze` runs)
//!   -> ExportHook on the worker thread, about once a second: idle timeouts on
//!      wall-clock time, closed flows into a bounded ring, the live and closed
//!      flows' records handed to the worker's aggregator thread
//!   -> aggregator thread per worker: per-service totals, snapshot into the
//!      worker's slot (one Mutex swap of an Arc)
//!   -> HTTP thread (tokio, axum): /metrics, /flows, /healthz read the slots
//! ```
//!
//! Inline (gateway) mode, `--inline A,B`: the inline XDP program forwards
//! every frame between the ports in the kernel (devmap) and puts header
//! copies into a BPF ring buffer; one `InlineSource` (source.rs) reads it
//! into the same pipeline, export and HTTP as above. Stop leaves the
//! program attached, forwarding only (fail-open; see
//! `wirelens_dataplane::xdp::InlineProgram`).
//!
//! Threads: the caller's (setup; then it runs the pipeline and blocks; at
//! the end it detaches XDP, in the network namespace it attached in), one
//! pinned worker per queue (the pipeline's) and its export aggregator, the HTTP thread (which also
//! turns SIGINT/SIGTERM into the stop flag), with `--ctrl` a pusher, and
//! with `--probe` one prober thread per target (pinned to the cores the
//! workers do not get, see [`probes`]).
//!
//! Start order: refuse a host interface (unless `--force`), raise
//! RLIMIT_MEMLOCK, bind the HTTP port (fails before touching the interface),
//! load -> set_filter -> attach (a stale program of ours is replaced) ->
//! bind one socket per queue -> drop to CAP_NET_ADMIN ([`privs`]) -> run. Stop: the flag ends the workers, their
//! sockets close (the program passes that traffic to the stack again),
//! the program is detached, the HTTP server ends; `run` returns `Ok`.
#![deny(unsafe_code)]

pub mod backlog;
pub mod config;
pub mod export;
mod http;
pub mod ipfix;
pub mod metrics;
#[expect(
    unsafe_code,
    reason = "prctl and capget/capset for the privilege drop; every block has its SAFETY note"
)]
pub mod privs;
pub mod probes;
pub mod push;
pub mod services;
mod source;
#[expect(
    unsafe_code,
    reason = "sched_setaffinity for --cores; every block has its SAFETY note"
)]
pub mod sys;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use wirelens_dataplane::engine::EngineConfig;
use wirelens_dataplane::pipeline::{Pipeline, PipelineConfig};
use wirelens_dataplane::xdp::{
    self, rx_queue_count, AttachMode, BindMode, InlineProgram, ModePreference, RxMode, XdpError,
    XdpProgram, XskConfig, XskSocket,
};

pub use config::{CtrlConfig, NodeConfig, Options, PollMode, DEFAULT_LISTEN};
pub use export::{ExportHook, WorkerShared};

use crate::push::PushState;
use crate::source::{InlineSource, XskSource};

/// Why the daemon could not start (or stop cleanly).
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{0}")]
    Config(String),
    #[error(
        "refusing to attach XDP to {iface}: {why}. Taking over an interface that carries the \
         host's own traffic can cut this machine off its network. Point wirelens at a dedicated \
         capture port (SPAN/tap), or pass --force to attach anyway (traffic outside --filter \
         still reaches the stack, and the program passes everything should wirelens die)"
    )]
    HostInterface { iface: String, why: String },
    #[error("{step}: {source}{caps}")]
    Xdp {
        step: &'static str,
        source: Box<XdpError>,
        /// Which capabilities are missing, when the error is a permission error.
        caps: String,
    },
    #[error("cannot listen on {addr}: {source}{hint}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// Node-level facts the HTTP side shows.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub xdp_mode: String,
    pub bind_mode: String,
    pub huge_pages: bool,
    pub poll: String,
}

/// What the main thread, the workers and the HTTP side share.
#[derive(Debug)]
pub struct NodeState {
    pub iface: String,
    pub started_ns: u64,
    pub info: OnceLock<NodeInfo>,
    pub workers: OnceLock<Vec<Arc<WorkerShared>>>,
    /// The loaded program (for its counters); taken out and detached at stop.
    pub prog: Mutex<Option<XdpProgram>>,
    /// Inline mode's program (for its counters); taken out at stop, which
    /// leaves it attached, forwarding only.
    pub inline: Mutex<Option<InlineProgram>>,
    /// Set on SIGINT/SIGTERM: the pipeline's stop flag.
    pub stopping: Arc<AtomicBool>,
    pub push: Option<Arc<Mutex<PushState>>>,
    /// `--ipfix`: what was exported.
    pub ipfix: Option<Arc<ipfix::IpfixState>>,
    /// `--force` given: the host-traffic check is not repeated while running.
    pub force: bool,
    /// Why the running node stopped itself: its interface began to carry
    /// the host's traffic.
    pub host_traffic: OnceLock<String>,
    /// `/flows` requests refused because the maximum were being served.
    pub flows_busy: std::sync::atomic::AtomicU64,
    /// `--flows-token-file`: the tokens `/flows` accepts (`None`: open).
    pub flows_tokens: Option<wirelens_proto::auth::Tokens>,
    /// `/flows` requests refused (401) for a missing or unknown token.
    pub flows_unauthorized: std::sync::atomic::AtomicU64,
    /// `--probe` results; `None` without targets.
    pub probes: Option<Arc<probes::ProbeBoard>>,
}

fn log(msg: impl AsRef<str>) {
    eprintln!("wirelens: {}", msg.as_ref());
}

/// The capabilities a failed step may lack, when the error is a permission
/// error (EPERM/EACCES), as " (missing: CAP_X, CAP_Y; ...)".
fn caps_hint(err: &XdpError) -> String {
    let msg = err.to_string();
    let perm = [
        "os error 1)",
        "os error 13)",
        "Operation not permitted",
        "Permission denied",
    ]
    .iter()
    .any(|p| msg.contains(p));
    if !perm {
        return String::new();
    }
    match sys::effective_caps() {
        Some(eff) => {
            let missing = sys::missing_caps(eff);
            if missing.is_empty() {
                " (every needed capability is present: a security module, a seccomp filter or \
                 a read-only /sys/fs/bpf may be in the way)"
                    .into()
            } else {
                format!(
                    " (missing capabilities: {}; run as root or grant them, see \
                     deploy/wirelens.service)",
                    missing.join(", ")
                )
            }
        }
        None => String::new(),
    }
}

fn xdp_err(step: &'static str) -> impl Fn(XdpError) -> NodeError {
    move |source| NodeError::Xdp {
        step,
        caps: caps_hint(&source),
        source: Box::new(source),
    }
}

/// Runs the daemon until SIGINT/SIGTERM (or until `stop` is set by the
/// caller); returns after an orderly stop with XDP detached.
pub fn run(cfg: &NodeConfig) -> Result<(), NodeError> {
    let stop = Arc::new(AtomicBool::new(false));
    run_until(cfg, stop)
}

/// [`run`] with the stop flag supplied by the caller (signals set it too).
pub fn run_until(cfg: &NodeConfig, stop: Arc<AtomicBool>) -> Result<(), NodeError> {
    // 1. Never take over the host's own interface by accident.
    for port in ports_of(cfg) {
        if let Some(why) = xdp::iface_carries_host_traffic(port) {
            if cfg.force {
                log(format!("--force: attaching to {port} although {why}"));
            } else {
                return Err(NodeError::HostInterface {
                    iface: port.to_string(),
                    why,
                });
            }
        }
    }
    for (a, b) in &cfg.inline {
        check_mtu(a, b)?;
    }
    // Before any thread exists, so every thread inherits it.
    if let Err(e) = privs::no_new_privs() {
        log(format!("PR_SET_NO_NEW_PRIVS failed: {e}"));
    }
    // 2. Capabilities and locked memory.
    if let Some(eff) = sys::effective_caps() {
        let missing = sys::missing_caps(eff);
        if !missing.is_empty() {
            log(format!(
                "missing capabilities {}: the steps that need them will fail",
                missing.join(", ")
            ));
        }
    }
    match xdp::raise_memlock_limit() {
        Ok(_) => {}
        Err(e) => log(format!(
            "could not raise RLIMIT_MEMLOCK ({e}); the UMEM needs CAP_IPC_LOCK or \
             LimitMEMLOCK=infinity"
        )),
    }
    // 3. The HTTP port first: a conflict fails before the interface is touched.
    let listener = std::net::TcpListener::bind(cfg.listen).map_err(|source| NodeError::Listen {
        addr: cfg.listen,
        hint: match source.kind() {
            std::io::ErrorKind::AddrInUse => {
                "; another wirelens (or something else) listens there: pick another --listen"
            }
            std::io::ErrorKind::PermissionDenied => "; ports below 1024 need CAP_NET_BIND_SERVICE",
            _ => "",
        },
        source,
    })?;
    let push_state = cfg
        .ctrl
        .as_ref()
        .map(|_| Arc::new(Mutex::new(PushState::default())));
    // The IPFIX collector's address is resolved once, here: a name that
    // does not resolve fails before the interface is touched.
    let ipfix_exporter = match &cfg.ipfix {
        Some(c) => Some(
            wirelens_ipfix::udp::UdpExporter::connect(&c.target, c.encoder.clone())
                .map_err(|e| NodeError::Config(e.to_string()))?,
        ),
        None => None,
    };
    let ipfix_state = ipfix_exporter.as_ref().map(|x| {
        Arc::new(ipfix::IpfixState {
            peer: x.peer().to_string(),
            ..ipfix::IpfixState::default()
        })
    });
    // Secrets are read here, before the capabilities are dropped: a file
    // readable only by root still works.
    let push_token = match &cfg.ctrl {
        Some(c) => {
            let tokens = wirelens_proto::auth::Tokens::load(&c.token_file)
                .map_err(|e| NodeError::Config(format!("--token-file: {e}")))?;
            Some(
                tokens
                    .token_for(&c.node, &c.token_file.display().to_string())
                    .map_err(|e| NodeError::Config(format!("--token-file: {e}")))?,
            )
        }
        None => None,
    };
    let push_backlog = match cfg.ctrl.as_ref().and_then(|c| c.disk_backlog.as_ref()) {
        Some((dir, _)) => {
            let counts = Arc::new(Mutex::new(backlog::BacklogCounts::default()));
            Some(backlog::DiskBacklog::open(dir, counts).map_err(NodeError::Config)?)
        }
        None => None,
    };
    let flows_tokens = match &cfg.flows_token_file {
        Some(p) => Some(
            wirelens_proto::auth::Tokens::load(p)
                .map_err(|e| NodeError::Config(format!("--flows-token-file: {e}")))?,
        ),
        None => None,
    };
    let state = Arc::new(NodeState {
        iface: cfg.iface.clone(),
        started_ns: export::now_ns(),
        info: OnceLock::new(),
        workers: OnceLock::new(),
        prog: Mutex::new(None),
        inline: Mutex::new(None),
        stopping: stop.clone(),
        push: push_state.clone(),
        ipfix: ipfix_state,
        force: cfg.force,
        host_traffic: OnceLock::new(),
        flows_busy: std::sync::atomic::AtomicU64::new(0),
        flows_tokens,
        flows_unauthorized: std::sync::atomic::AtomicU64::new(0),
        probes: (!cfg.probes.is_empty())
            .then(|| Arc::new(probes::ProbeBoard::new(&cfg.probes, cfg.ctrl.is_some()))),
    });
    let mut http =
        http::HttpServer::start(listener, state.clone(), stop.clone()).map_err(|source| {
            NodeError::Io {
                what: "starting the HTTP server".into(),
                source,
            }
        })?;
    log(format!(
        "listening on http://{} (/metrics, /flows, /healthz)",
        cfg.listen
    ));

    // Probes run on their own threads, off the workers' cores (see
    // `start_probes`); they end with the daemon, also when a step failed.
    let probe_stop = Arc::new(AtomicBool::new(false));
    let mut probe_threads = Vec::new();
    let probes = (&probe_stop, &mut probe_threads);
    let exports = Exports {
        push: push_state,
        push_token,
        push_backlog,
        ipfix: ipfix_exporter,
    };
    let result = if cfg.inline.is_empty() {
        attach_and_run(cfg, &state, &stop, exports, probes)
    } else {
        attach_and_run_inline(cfg, &state, &stop, exports, probes)
    };
    probe_stop.store(true, Ordering::SeqCst);
    for t in probe_threads {
        let _ = t.join();
    }

    // Orderly stop: the sockets closed when the pipeline returned; now the
    // program (this thread is in the namespace it attached in).
    let taken = state.prog.lock().unwrap_or_else(|e| e.into_inner()).take();
    let detached = match taken {
        Some(mut prog) => {
            let r = prog.detach();
            match &r {
                Ok(()) => log(format!("XDP detached from {}", cfg.iface)),
                Err(e) => log(format!("{e}")),
            }
            r.map_err(xdp_err("detaching XDP"))
        }
        None => Ok(()),
    };
    let inline = state
        .inline
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(prog) = inline {
        let ports: Vec<String> = prog.ports().iter().map(|p| p.iface.clone()).collect();
        // Dropping it turns the header copies off; forwarding stays.
        drop(prog);
        log(format!(
            "analysis stopped; XDP program left on {} forwarding in the kernel (fail-open); \
             the next `wirelens run --inline` replaces it, `ip link set dev IF xdp off` removes it",
            ports.join(", ")
        ));
    }
    http.shutdown();
    let stopped_for = state
        .host_traffic
        .get()
        .map(|why| NodeError::HostInterface {
            iface: cfg.iface.clone(),
            why: why.clone(),
        });
    result.and(detached).and(stopped_for.map_or(Ok(()), Err))
}

type ProbeThreads<'a> = (
    &'a Arc<AtomicBool>,
    &'a mut Vec<std::thread::JoinHandle<()>>,
);

/// Starts the `--probe` threads on the cores the workers do not get: every
/// core this process may use minus the first `workers` of the workers'
/// list (`--cores`, else those same cores), as the pipeline pins worker i
/// to `cores[i % len]`. With no core left they share the workers' cores,
/// unpinned (they sleep in `recv` nearly all the time).
fn start_probes(
    cfg: &NodeConfig,
    state: &NodeState,
    workers: usize,
    (stop, threads): ProbeThreads<'_>,
) -> Result<(), NodeError> {
    let Some(board) = &state.probes else {
        return Ok(());
    };
    let all = core_ids();
    let worker_list = cfg.cores.clone().unwrap_or_else(|| all.clone());
    let taken: Vec<usize> = worker_list.iter().copied().take(workers).collect();
    let free: Vec<usize> = all.iter().copied().filter(|c| !taken.contains(c)).collect();
    let pin = (!free.is_empty()).then(|| free.clone());
    *threads = probes::start(board, &cfg.probes, stop, pin).map_err(|source| NodeError::Io {
        what: "starting the probe threads".into(),
        source,
    })?;
    for p in &cfg.probes {
        log(format!(
            "probing {} (TWAMP-light) every {} ms, {} bytes, DSCP {}, {} s windows, {}",
            p.target,
            p.interval_ns / 1_000_000,
            p.size,
            p.dscp,
            p.window_ns as f64 / 1e9,
            if free.is_empty() {
                "on the workers' cores (no core left for the probes)".to_string()
            } else {
                format!(
                    "on core{} {}",
                    if free.len() == 1 { "" } else { "s" },
                    free.iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                )
            }
        ));
    }
    Ok(())
}

/// Where the workers' flow deltas go besides `/flows`: the control plane's
/// pusher state (`--ctrl`) and the IPFIX exporter (`--ipfix`).
struct Exports {
    push: Option<Arc<Mutex<PushState>>>,
    /// `--token-file`'s token for `--ctrl`, read before the privilege drop.
    push_token: Option<String>,
    /// `--backlog-dir`, opened (and checked writable) before the privilege drop.
    push_backlog: Option<backlog::DiskBacklog>,
    ipfix: Option<wirelens_ipfix::udp::UdpExporter>,
}

fn attach_and_run(
    cfg: &NodeConfig,
    state: &Arc<NodeState>,
    stop: &Arc<AtomicBool>,
    exports: Exports,
    probe_threads: ProbeThreads<'_>,
) -> Result<(), NodeError> {
    let mut prog = XdpProgram::load().map_err(xdp_err("loading the XDP program"))?;
    prog.set_filter(&cfg.filter)
        .map_err(xdp_err("setting the XDP filter"))?;
    let mode = prog
        .attach(&cfg.iface, cfg.mode)
        .map_err(xdp_err("attaching XDP"))?;
    let att = prog.attachment().map(|a| a.replaced_stale);
    log(format!(
        "XDP program {} attached to {} in {} mode{}{}",
        prog.prog_id(),
        cfg.iface,
        mode,
        match (mode, cfg.mode) {
            (AttachMode::Generic, ModePreference::Auto) =>
                " (driver mode refused; generic is slower, one skb per frame)",
            _ => "",
        },
        match att.flatten() {
            Some(id) => format!(", replacing stale wirelens program {id}"),
            None => String::new(),
        }
    ));
    log(format!(
        "filter: {}",
        if cfg.filter.is_empty() {
            "every IP packet".to_string()
        } else {
            let mut v: Vec<String> = cfg.filter.cidrs.iter().map(|c| c.to_string()).collect();
            v.extend(cfg.filter.ports.iter().map(|p| format!("port:{p}")));
            v.join(",")
        }
    ));

    // A NIC that strips VLAN tags hands XDP untagged frames: say so.
    if let Ok(true) = wirelens_probe::nic::rx_vlan_offload(&cfg.iface) {
        log(format!(
            "{0} strips 802.1Q tags on receive (rx-vlan-offload on): frames reach XDP and the \
             flows untagged, so flows of different VLANs with the same addresses merge; \
             `ethtool -K {0} rxvlan off` keeps the tags",
            cfg.iface
        ));
    }
    let queues: Vec<u32> = match &cfg.queues {
        Some(q) => q.clone(),
        None => {
            let n = rx_queue_count(&cfg.iface).map_err(|source| NodeError::Io {
                what: format!("counting the rx queues of {}", cfg.iface),
                source,
            })?;
            (0..n).collect()
        }
    };
    let kernel_busy_poll = cfg.poll != PollMode::Wait;
    let xsk_cfg = XskConfig {
        frame_count: cfg.frames,
        rx_mode: RxMode::BusyPoll,
        busy_poll_budget: kernel_busy_poll.then_some(BUSY_POLL_BUDGET),
        ..XskConfig::default()
    };
    // Restored when the daemon ends (this guard lives to the end of this
    // function, after the sockets have closed).
    let _napi = if kernel_busy_poll {
        match NapiDefer::apply(&cfg.iface) {
            Ok(n) => {
                log(format!(
                    "{}: napi_defer_hard_irqs {NAPI_DEFER_HARD_IRQS}, gro_flush_timeout \
                     {NAPI_GRO_FLUSH_TIMEOUT_NS} ns (were {} and {}): while a worker busy polls, \
                     the kernel leaves its queue's NAPI to it",
                    cfg.iface, n.old.0, n.old.1
                ));
                Some(n)
            }
            Err(e) => {
                log(format!(
                    "{}: cannot set napi_defer_hard_irqs / gro_flush_timeout ({e}): the \
                     kernel's softirq may compete with busy-polling workers on their cores",
                    cfg.iface
                ));
                None
            }
        }
    } else {
        None
    };
    let mut socks = Vec::with_capacity(queues.len());
    for &q in &queues {
        let s = XskSocket::bind(&prog, q, &xsk_cfg).map_err(xdp_err("binding an AF_XDP socket"))?;
        log(format!(
            "queue {q}: AF_XDP {}{}, UMEM of {} frames on {}",
            s.bind_mode(),
            match (s.bind_mode(), s.zero_copy_error()) {
                (BindMode::Copy, Some(e)) => format!(" (zero-copy refused: {e})"),
                _ => String::new(),
            },
            cfg.frames,
            if s.huge_pages() {
                "huge pages"
            } else {
                "normal pages (no huge pages free)"
            }
        ));
        socks.push(s);
    }
    let _ = state.info.set(NodeInfo {
        xdp_mode: match mode {
            AttachMode::Driver => "driver".into(),
            AttachMode::Generic => "generic".into(),
        },
        bind_mode: socks[0].bind_mode().to_string(),
        huge_pages: socks.iter().all(XskSocket::huge_pages),
        poll: format!("{:?}", cfg.poll).to_lowercase(),
    });
    *state.prog.lock().unwrap_or_else(|e| e.into_inner()) = Some(prog);
    drop_privileges();
    let sources = move |shared: &[Arc<WorkerShared>]| {
        socks
            .into_iter()
            .zip(shared)
            .map(|(s, sh)| {
                let src = XskSource::new(s, cfg.poll, sh.clone());
                let strategy = src.strategy();
                (src, strategy)
            })
            .collect::<Vec<_>>()
    };
    run_workers(cfg, state, stop, exports, probe_threads, &queues, sources)
}

/// Attached and bound: keep only what the stop needs; the threads started
/// from here on inherit that.
fn drop_privileges() {
    match privs::drop_to_kept() {
        Ok(d) => {
            let list = |m: u64| match privs::names(m).join(",") {
                l if l.is_empty() => "none".to_string(),
                l => l,
            };
            log(format!(
                "capabilities now {} (were {}), no new privileges",
                list(d.after),
                list(d.before)
            ));
        }
        Err(e) => log(format!("dropping capabilities failed: {e}")),
    }
}

/// The workers, their export, push and probe threads, until `stop`: one
/// worker per entry of `queues`, fed by the sources `sources` makes once
/// the workers' shared state exists (each with its placement line).
fn run_workers<S, F>(
    cfg: &NodeConfig,
    state: &Arc<NodeState>,
    stop: &Arc<AtomicBool>,
    exports: Exports,
    probe_threads: ProbeThreads<'_>,
    queues: &[u32],
    sources: F,
) -> Result<(), NodeError>
where
    S: wirelens_dataplane::source::FrameSource + Send,
    F: FnOnce(&[Arc<WorkerShared>]) -> Vec<(S, String)>,
{
    let shared: Vec<Arc<WorkerShared>> = queues
        .iter()
        .map(|&q| Arc::new(WorkerShared::new(q, cfg.max_services)))
        .collect();
    let _ = state.workers.set(shared.clone());
    // Before this thread is restricted to --cores.
    start_probes(cfg, state, queues.len(), probe_threads)?;

    // Pushing to a control plane.
    let mut pusher = None;
    let mut push_tx = None;
    let Exports {
        push: push_state,
        push_token,
        push_backlog,
        ipfix: ipfix_exporter,
    } = exports;
    if let (Some(c), Some(ps), Some(token)) = (&cfg.ctrl, &push_state, push_token) {
        let pc = push::pusher_config(c, token, &cfg.iface, Duration::from_secs(10));
        let (tx, rx) = push::channel();
        let (every, thread_ps) = (c.every, ps.clone());
        let board = state.probes.clone();
        let disk = push_backlog.zip(c.disk_backlog.as_ref().map(|(_, max)| *max));
        pusher = Some(
            std::thread::Builder::new()
                .name("wirelens-push".into())
                .spawn(move || push::pusher_thread(pc, every, rx, thread_ps, board, disk))
                .map_err(|source| NodeError::Io {
                    what: "starting the pusher thread".into(),
                    source,
                })?,
        );
        push_tx = Some((tx, c.every, ps.clone()));
        log(format!(
            "pushing flow deltas to {} as node {} every {} s",
            c.url,
            c.node,
            c.every.as_secs()
        ));
    }

    // IPFIX export of the same deltas, on each export tick.
    let mut ipfix_thread = None;
    let mut ipfix_tx = None;
    if let (Some(x), Some(st)) = (ipfix_exporter, &state.ipfix) {
        let (tx, rx) = ipfix::channel();
        let (tick, thread_st) = (cfg.export_every, st.clone());
        log(format!(
            "exporting flow deltas as IPFIX to {} (UDP) every {} s",
            x.peer(),
            tick.as_secs_f64()
        ));
        ipfix_thread = Some(
            std::thread::Builder::new()
                .name("wirelens-ipfix".into())
                .spawn(move || ipfix::exporter_thread(x, tick, rx, thread_st))
                .map_err(|source| NodeError::Io {
                    what: "starting the IPFIX exporter thread".into(),
                    source,
                })?,
        );
        ipfix_tx = Some((tx, st.trackers.clone()));
    }

    // Workers: pinned to --cores (or every core we may use), one per queue.
    if let Some(cores) = &cfg.cores {
        sys::restrict_to_cores(cores).map_err(|source| NodeError::Io {
            what: format!("--cores {cores:?}"),
            source,
        })?;
    }
    let mut pipeline = Pipeline::new(PipelineConfig {
        workers: queues.len(),
        pin: true,
        engine: EngineConfig { table: cfg.table },
        // The hook checks the clock and the /flows request flag: cheap.
        hook_every: 4,
        ..PipelineConfig::default()
    });
    let cores: Vec<usize> = core_ids();
    log(format!(
        "{} worker{} (poll {}), queue -> core: {}",
        queues.len(),
        if queues.len() == 1 { "" } else { "s" },
        format!("{:?}", cfg.poll).to_lowercase(),
        queues
            .iter()
            .enumerate()
            .map(|(i, q)| match cores.len() {
                0 => format!("{q}->?"),
                n => format!("{q}->{}", cores[i % n]),
            })
            .collect::<Vec<_>>()
            .join(" ")
    ));
    let (sources, strategies): (Vec<S>, Vec<String>) = sources(&shared).into_iter().unzip();
    for (i, (strategy, q)) in strategies.iter().zip(queues).enumerate() {
        log(format!(
            "placement: queue {q}: worker on core {}, {strategy}",
            match cores.len() {
                0 => "?".to_string(),
                n => cores[i % n].to_string(),
            },
        ));
    }
    let (hooks, aggregators): (Vec<ExportHook>, Vec<_>) = shared
        .iter()
        .map(|sh| {
            let tracker = push_tx
                .as_ref()
                .map(|(tx, every, ps)| push::PushTracker::new(*every, tx.clone(), ps.clone()));
            // Every export tick: no interval of its own.
            let ipfix_tracker = ipfix_tx
                .as_ref()
                .map(|(tx, ps)| push::PushTracker::new(Duration::ZERO, tx.clone(), ps.clone()));
            ExportHook::new(
                sh.clone(),
                cfg.export_every,
                cfg.closed_flows,
                cfg.max_services,
                tracker,
                ipfix_tracker,
            )
        })
        .unzip();
    // The per-service aggregation of each worker's exports, off the
    // workers' threads; each ends after its worker's last export.
    let mut aggregator_threads = Vec::with_capacity(aggregators.len());
    for (agg, q) in aggregators.into_iter().zip(queues) {
        aggregator_threads.push(
            std::thread::Builder::new()
                .name(format!("wirelens-agg{q}"))
                .spawn(move || agg.run())
                .map_err(|source| NodeError::Io {
                    what: "starting an export aggregator thread".into(),
                    source,
                })?,
        );
    }
    drop(push_tx);
    drop(ipfix_tx);
    if stop.load(Ordering::SeqCst) {
        log("stopped before the workers started");
    }
    let run = pipeline.run_with_hooks(sources, hooks, stop);
    for t in aggregator_threads {
        let _ = t.join();
    }
    let s = pipeline.summary();
    log(format!(
        "workers stopped: {} frames, {} packets analysed, {} flows (tcp {}, udp {}, icmp {}, \
         other {}), {} hand-off drops",
        run.frames(),
        run.workers.iter().map(|w| w.analysed()).sum::<u64>(),
        s.flows.tcp + s.flows.udp + s.flows.icmp + s.flows.other,
        s.flows.tcp,
        s.flows.udp,
        s.flows.icmp,
        s.flows.other,
        run.workers.iter().map(|w| w.ring_full).sum::<u64>(),
    ));
    if let Some(p) = pusher {
        // The trackers (and their senders) went with the hooks: the thread
        // flushes once more and ends.
        let _ = p.join();
    }
    if let Some(t) = ipfix_thread {
        let _ = t.join();
    }
    Ok(())
}

/// The interfaces the daemon attaches to: the tap interface, or every port
/// of the inline pairs.
fn ports_of(cfg: &NodeConfig) -> Vec<&str> {
    if cfg.inline.is_empty() {
        vec![cfg.iface.as_str()]
    } else {
        cfg.inline
            .iter()
            .flat_map(|(a, b)| [a.as_str(), b.as_str()])
            .collect()
    }
}

/// The MTU of `iface` (sysfs of this process's network namespace).
fn mtu_of(iface: &str) -> Result<u32, NodeError> {
    let path = std::path::Path::new("/sys/class/net")
        .join(iface)
        .join("mtu");
    let text = std::fs::read_to_string(&path).map_err(|source| NodeError::Io {
        what: format!("reading the MTU of {iface} ({})", path.display()),
        source,
    })?;
    text.trim()
        .parse()
        .map_err(|_| NodeError::Config(format!("{}: {text:?} is not an MTU", path.display())))
}

/// Both ports of a pair must carry the same frames: a frame that fits one
/// and not the other would be dropped by the peer's driver, unseen.
fn check_mtu(a: &str, b: &str) -> Result<(), NodeError> {
    if a.is_empty() || a.contains('/') || b.is_empty() || b.contains('/') {
        return Err(NodeError::Config(format!(
            "--inline {a},{b}: not interface names"
        )));
    }
    let (ma, mb) = (mtu_of(a)?, mtu_of(b)?);
    if ma != mb {
        return Err(NodeError::Config(format!(
            "--inline {a},{b}: MTU mismatch ({a} {ma}, {b} {mb}); frames larger than the \
             smaller MTU could not be forwarded. Set both to the same MTU (`ip link set dev \
             {b} mtu {ma}`) and start again"
        )));
    }
    Ok(())
}

/// Inline mode: load, fill the devmap, attach to every port (forwarding
/// from the first attach), turn the header copies on, then one worker on
/// the ring.
fn attach_and_run_inline(
    cfg: &NodeConfig,
    state: &Arc<NodeState>,
    stop: &Arc<AtomicBool>,
    exports: Exports,
    probe_threads: ProbeThreads<'_>,
) -> Result<(), NodeError> {
    let mut prog = InlineProgram::load().map_err(xdp_err("loading the inline XDP program"))?;
    if let Some(why) = prog.tracing_error() {
        log(format!(
            "redirect errors and transmit drops will not be counted ({why})"
        ));
    }
    for (a, b) in &cfg.inline {
        prog.attach_pair(a, b, cfg.mode)
            .map_err(xdp_err("attaching the inline XDP program"))?;
    }
    for p in prog.ports() {
        log(format!(
            "inline XDP program {} attached to {} in {} mode, forwarding to {}{}",
            prog.prog_id(),
            p.iface,
            p.mode,
            p.peer,
            match p.replaced_stale {
                Some(id) => format!(", replacing wirelens program {id} in one step"),
                None => String::new(),
            }
        ));
        if let Ok(true) = wirelens_probe::nic::rx_vlan_offload(&p.iface) {
            log(format!(
                "{0} strips 802.1Q tags on receive (rx-vlan-offload on): frames would leave \
                 {1} untagged; `ethtool -K {0} rxvlan off` keeps them as they came",
                p.iface, p.peer
            ));
        }
    }
    let ring = prog.ring().map_err(xdp_err("opening the header ring"))?;
    prog.set_analysis(true)
        .map_err(xdp_err("turning the header copies on"))?;
    log(format!(
        "analysing the first {} bytes of every forwarded frame (forwarding never waits for \
         the analysis: a full ring is counted, the frame still leaves)",
        xdp::INLINE_SNAP
    ));
    let _ = state.info.set(NodeInfo {
        xdp_mode: match prog.ports().first().map(|p| p.mode) {
            Some(AttachMode::Generic) => "generic".into(),
            _ => "driver".into(),
        },
        bind_mode: "inline".into(),
        huge_pages: false,
        poll: format!("{:?}", cfg.poll).to_lowercase(),
    });
    *state.inline.lock().unwrap_or_else(|e| e.into_inner()) = Some(prog);
    drop_privileges();
    let poll = cfg.poll;
    let sources = move |_: &[Arc<WorkerShared>]| {
        let src = InlineSource::new(ring, poll);
        let strategy = src.strategy();
        vec![(src, strategy)]
    };
    run_workers(cfg, state, stop, exports, probe_threads, &[0], sources)
}

/// Frames per kernel busy poll of a queue's NAPI (`SO_BUSY_POLL_BUDGET`):
/// one worker batch.
const BUSY_POLL_BUDGET: u16 = 64;
/// The interface settings that let a busy-polling socket keep its NAPI:
/// after a busy poll (or a NAPI run that found work) the kernel defers its
/// own softirq this many times, by `gro_flush_timeout` each, before it
/// takes the queue back. 200 us is short enough that a worker that stops
/// polling (an export, a quiet queue, a wait in poll(2)) hands over before
/// a 256-frame veth ring overflows at 1 Mpps.
const NAPI_DEFER_HARD_IRQS: u32 = 2;
const NAPI_GRO_FLUSH_TIMEOUT_NS: u64 = 200_000;

/// `napi_defer_hard_irqs` and `gro_flush_timeout` of an interface (sysfs of
/// this process's network namespace), set for kernel busy polling and put
/// back as they were on drop.
#[derive(Debug)]
struct NapiDefer {
    dir: std::path::PathBuf,
    old: (String, String),
}

impl NapiDefer {
    fn apply(iface: &str) -> std::io::Result<NapiDefer> {
        if iface.is_empty() || iface.contains('/') || iface.starts_with('.') {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not an interface name",
            ));
        }
        let dir = std::path::Path::new("/sys/class/net").join(iface);
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).map(|s| s.trim().to_string());
        let old = (read("napi_defer_hard_irqs")?, read("gro_flush_timeout")?);
        let n = NapiDefer { dir, old };
        n.write(
            &NAPI_DEFER_HARD_IRQS.to_string(),
            &NAPI_GRO_FLUSH_TIMEOUT_NS.to_string(),
        )?;
        Ok(n)
    }

    fn write(&self, defer: &str, timeout: &str) -> std::io::Result<()> {
        std::fs::write(self.dir.join("gro_flush_timeout"), timeout)?;
        std::fs::write(self.dir.join("napi_defer_hard_irqs"), defer)
    }
}

impl Drop for NapiDefer {
    fn drop(&mut self) {
        let (defer, timeout) = self.old.clone();
        if let Err(e) = self.write(&defer, &timeout) {
            log(format!(
                "cannot restore napi_defer_hard_irqs / gro_flush_timeout in {}: {e}",
                self.dir.display()
            ));
        }
    }
}

/// The cores the pipeline pins to (what `core_affinity` reports for this thread).
fn core_ids() -> Vec<usize> {
    let Ok(s) = std::fs::read_to_string("/proc/thread-self/status") else {
        return Vec::new();
    };
    let Some(list) = s.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for part in list.trim().split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    out.extend(a..=b);
                }
            }
            None => {
                if let Ok(a) = part.parse() {
                    out.push(a);
                }
            }
        }
    }
    out
}
