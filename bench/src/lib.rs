//! `wirelens bench`: the throughput benchmark rig.
//!
//! - `bench pipeline`: the real engine on pinned cores with the per-core
//!   pipeline (`wirelens_dataplane::pipeline`), over synthetic traffic, first
//!   on 1 worker, then on N; packets/s per core and in total, ns per packet,
//!   memory per flow, scaling.
//! - `bench pcap`: the same synthetic traffic as a pcap file, for comparisons
//!   with other tools (`scripts/compare-tools.sh`).
//! - `bench hostile`: the same engine under a SYN flood and garbage frames,
//!   as a share of its speed on the healthy traffic alone ([`hostile`]).
//!
//! Traffic is generated ahead of time, per worker, in slices (`--slice`
//! frames per worker): generate a slice (untimed, all workers' generators in
//! parallel), run the pipeline over it (timed: from the workers' common start
//! to the last worker's exit), repeat until `--seconds` of measured time. The
//! engines keep their flows across slices, so the flows are long-lived and
//! the table stays at `--flows`. A slice takes about `slice x mean frame
//! size` bytes per worker (printed), far less than pre-generating the whole
//! run, and generating on the fly inside the timed loop would more than
//! double the measured cost per packet.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use wirelens_dataplane::engine::EngineConfig;
use wirelens_dataplane::flow::table::TcpRef;
use wirelens_dataplane::flow::tcp::SynOnly;
use wirelens_dataplane::flow::{FlowTable, TableConfig};
use wirelens_dataplane::pipeline::{Pipeline, PipelineConfig, WorkerCounters};
use wirelens_dataplane::source::synthetic::{
    write_pcap, FrameArena, Mix, Synthetic, SyntheticConfig, MAX_FRAME,
};
use wirelens_dataplane::PacketMeta;
use wirelens_output::{exit, Format};

mod ctrl;
mod hostile;
#[cfg(feature = "live")]
mod inline;
#[cfg(feature = "live")]
mod live;

/// Throughput benchmarks over synthetic traffic.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchCommand,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The engine on pinned cores (1 worker, then N) over synthetic traffic:
    /// packets/s per core and in total, ns per packet, memory per flow.
    Pipeline(PipelineArgs),
    /// Write synthetic traffic to a pcap file.
    Pcap(PcapArgs),
    /// The live path on a veth lab of its own (root): an AF_XDP generator
    /// against a drop-only AF_XDP loop, `wirelens run` and tcpdump.
    #[cfg(feature = "live")]
    Live(crate::live::LiveArgs),
    /// Forwarding through the box on a veth lab of its own (root): the
    /// kernel bridge, a bare XDP devmap redirect and `wirelens run --inline`,
    /// offered vs forwarded rate and one-way latency p50/p99.
    #[cfg(feature = "live")]
    Inline(inline::InlineArgs),
    /// The engine under a SYN flood of distinct spoofed 5-tuples and under
    /// garbage frames, against the same healthy traffic alone: speed share,
    /// table bound, memory, what was shed, which healthy flows survived.
    Hostile(hostile::HostileArgs),
    /// A fleet of simulated nodes reporting to a real `ctrl serve` over
    /// HTTP: deltas/s offered and acknowledged, commit and query latency,
    /// server RSS, bytes per delta on the wire and on disk.
    Ctrl(ctrl::CtrlArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MixArg {
    /// TCP connections only.
    Tcp,
    /// UDP flows only.
    Udp,
    /// 80 % TCP flows, 20 % UDP flows.
    Mixed,
}

impl From<MixArg> for Mix {
    fn from(m: MixArg) -> Mix {
        match m {
            MixArg::Tcp => Mix::Tcp,
            MixArg::Udp => Mix::Udp,
            MixArg::Mixed => Mix::Mixed,
        }
    }
}

/// How frames reach the workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Steering {
    /// Each worker's queue carries flows whatever their owner, as with a NIC
    /// hash unrelated to ours: (K-1)/K of the packets are handed off.
    Spread,
    /// Each worker's queue carries only the flows it owns, as when RSS and
    /// the owner hash agree: nothing is handed off.
    Aligned,
}

/// The traffic options both subcommands share.
#[derive(Debug, Args)]
pub struct TrafficArgs {
    /// Concurrent flows (in total, over all workers).
    #[arg(long, default_value_t = 100_000)]
    pub flows: usize,
    #[arg(long, value_enum, default_value_t = MixArg::Mixed)]
    pub mix: MixArg,
    /// Percent of TCP response segments lost (half before the tap, half after).
    #[arg(long, default_value_t = 1.0)]
    pub loss: f64,
    /// Percent of TCP response rounds with two segments swapped.
    #[arg(long, default_value_t = 0.5)]
    pub reorder: f64,
    /// Percent of the flows over IPv6.
    #[arg(long, default_value_t = 10.0)]
    pub ipv6: f64,
    /// Mean packets of a TCP connection before it closes and its slot opens
    /// a new one (0: never).
    #[arg(long, default_value_t = 2000)]
    pub conn_packets: u32,
    /// Capture-time rate of the synthetic timestamps, frames per second (per worker).
    #[arg(long, default_value_t = 1_000_000)]
    pub rate: u64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct PipelineArgs {
    #[command(flatten)]
    pub traffic: TrafficArgs,
    /// Workers of the scaled run (the 1-worker run always goes first).
    /// Default: every core this process may use.
    #[arg(long)]
    pub cores: Option<usize>,
    /// Measured seconds per configuration.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    #[arg(long, value_enum, default_value_t = Steering::Spread)]
    pub steering: Steering,
    /// Frames generated per worker ahead of each measured slice.
    #[arg(long, default_value_t = 65_536)]
    pub slice: usize,
    /// Slots of each hand-off ring.
    #[arg(long, default_value_t = 4096)]
    pub ring: usize,
    /// Do not pin workers to cores.
    #[arg(long)]
    pub no_pin: bool,
    /// `table` for people, `json` (or `ndjson`: the same on one line) for scripts.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Never show a progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Debug, Args)]
pub struct PcapArgs {
    #[command(flatten)]
    pub traffic: TrafficArgs,
    /// Where to write the capture (`-`: standard output).
    #[arg(long, short)]
    pub out: PathBuf,
    /// Frames to write.
    #[arg(long, default_value_t = 1_000_000)]
    pub packets: u64,
}

pub fn run(args: &BenchArgs) -> u8 {
    match &args.what {
        BenchCommand::Pipeline(a) => match bench_pipeline(a) {
            Ok(()) => exit::OK,
            Err(e) => {
                eprintln!("wirelens bench pipeline: {e:#}");
                exit::INPUT
            }
        },
        BenchCommand::Pcap(a) => match bench_pcap(a) {
            Ok(()) => exit::OK,
            Err(e) => {
                eprintln!("wirelens bench pcap: {e:#}");
                exit::INPUT
            }
        },
        #[cfg(feature = "live")]
        BenchCommand::Live(a) => crate::live::run(a),
        #[cfg(feature = "live")]
        BenchCommand::Inline(a) => inline::run(a),
        BenchCommand::Ctrl(a) => match ctrl::bench_ctrl(a) {
            Ok(()) => exit::OK,
            Err(e) => {
                eprintln!("wirelens bench ctrl: {e:#}");
                exit::INPUT
            }
        },
        BenchCommand::Hostile(a) => match hostile::bench_hostile(a) {
            Ok(()) => exit::OK,
            Err(e) => {
                eprintln!("wirelens bench hostile: {e:#}");
                exit::INPUT
            }
        },
    }
}

fn synthetic_config(t: &TrafficArgs, flows: usize) -> SyntheticConfig {
    SyntheticConfig {
        seed: t.seed,
        flows,
        mix: t.mix.into(),
        loss: t.loss / 100.0,
        reorder: t.reorder / 100.0,
        ipv6: t.ipv6 / 100.0,
        pps: t.rate,
        conn_packets: t.conn_packets,
        ..SyntheticConfig::default()
    }
}

fn bench_pcap(a: &PcapArgs) -> anyhow::Result<()> {
    let mut gen = Synthetic::new(synthetic_config(&a.traffic, a.traffic.flows))?;
    let n = if a.out.as_os_str() == "-" {
        write_pcap(
            BufWriter::with_capacity(1 << 20, io::stdout().lock()),
            &mut gen,
            a.packets,
        )?
    } else {
        let f = File::create(&a.out)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", a.out.display()))?;
        write_pcap(BufWriter::with_capacity(1 << 20, f), &mut gen, a.packets)?
    };
    let st = gen.stats();
    eprintln!(
        "wrote {n} frames ({} bytes of frames): {} TCP connections, {} UDP flows, {} segments lost before the tap, {} after, {} reordered",
        st.bytes, st.tcp_connections, st.udp_flows, st.lost_before_tap, st.lost_after_tap, st.reordered
    );
    Ok(())
}

/// One configuration's measurements.
#[derive(Debug, Serialize)]
struct RunResult {
    cores: usize,
    /// The core each worker was pinned to.
    pinned: Vec<Option<usize>>,
    frames: u64,
    seconds: f64,
    pps: f64,
    pps_per_core: Vec<f64>,
    /// Measured (wall) time x workers / frames.
    ns_per_packet_per_core: f64,
    /// Workers' on-CPU time / frames: the cost per packet without the
    /// time the threads waited for a CPU (shared machines).
    cpu_ns_per_packet: f64,
    /// Share of the workers' wall time spent waiting for a CPU.
    runq_pct: f64,
    handed_off: u64,
    ring_full: u64,
    live_flows: usize,
    evicted_flows: u64,
    warmup_frames: u64,
    /// Mean generation cost per frame (untimed), ns of wall time.
    generate_ns_per_frame: f64,
    /// Memory of the frames of one slice, all workers.
    slice_bytes: usize,
    memory: Option<Memory>,
    workers: Vec<WorkerCounters>,
}

/// Memory per flow, measured two ways.
#[derive(Debug, Serialize)]
struct Memory {
    /// Resident set growth from before the pipeline existed to the end of the
    /// run, divided by the live flows (engine, table, hand-off rings, heap
    /// overhead: everything but the generators and traffic slices).
    rss_delta_bytes: u64,
    rss_bytes_per_flow: f64,
    /// From structure sizes: flow slot + map entry (+ TcpConn for TCP flows)
    /// + RTT histogram heap, excluding allocator overhead and spare capacity.
    struct_bytes_per_flow: f64,
    flow_slot_bytes: usize,
    tcp_conn_bytes: usize,
    map_entry_bytes: usize,
    histogram_heap_bytes_per_flow: f64,
    packet_meta_bytes: usize,
    ring_bytes: usize,
}

#[derive(Debug, Serialize)]
struct Report {
    bench: &'static str,
    cpu: String,
    available_cores: usize,
    flows: usize,
    mix: String,
    loss_pct: f64,
    reorder_pct: f64,
    ipv6_pct: f64,
    steering: Steering,
    slice_frames_per_worker: usize,
    runs: Vec<RunResult>,
    /// pps with N workers / pps with 1.
    scaling: Option<f64>,
}

fn bench_pipeline(a: &PipelineArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.traffic.flows > 0, "--flows must be at least 1");
    anyhow::ensure!(a.seconds > 0.0, "--seconds must be positive");
    anyhow::ensure!(a.slice > 0, "--slice must be at least 1");
    let available = core_count();
    let n = a.cores.unwrap_or(available).max(1);
    if n > available {
        eprintln!(
            "wirelens bench: {n} workers on {available} cores: workers share cores, per-core numbers are not per core"
        );
    }
    let mut counts = vec![1];
    if n > 1 {
        counts.push(n);
    }
    let progress = !a.no_progress && io::stderr().is_terminal();
    let mut runs = Vec::new();
    for (i, &k) in counts.iter().enumerate() {
        runs.push(measure(a, k, i == 0, progress)?);
    }
    let scaling = (runs.len() > 1).then(|| runs[1].pps / runs[0].pps);
    let report = Report {
        bench: "pipeline",
        cpu: cpu_model(),
        available_cores: available,
        flows: a.traffic.flows,
        mix: format!("{:?}", a.traffic.mix).to_lowercase(),
        loss_pct: a.traffic.loss,
        reorder_pct: a.traffic.reorder,
        ipv6_pct: a.traffic.ipv6,
        steering: a.steering,
        slice_frames_per_worker: a.slice,
        runs,
        scaling,
    };
    let mut out = io::stdout().lock();
    match a.format {
        Format::Table => print_table(&mut out, &report)?,
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &report)?;
            writeln!(out)?;
        }
        Format::Ndjson => {
            serde_json::to_writer(&mut out, &report)?;
            writeln!(out)?;
        }
    }
    Ok(())
}

/// Runs `k` workers: warm-up until every flow exists, then measured slices.
fn measure(
    a: &PipelineArgs,
    k: usize,
    with_memory: bool,
    progress: bool,
) -> anyhow::Result<RunResult> {
    let t = &a.traffic;
    let mut gens = Vec::with_capacity(k);
    for w in 0..k {
        let flows = t.flows / k + usize::from(w < t.flows % k);
        let mut c = synthetic_config(t, flows.max(1));
        c.seed = t.seed.wrapping_add(w as u64);
        c.space = (w % 14) as u16;
        c.owner = (a.steering == Steering::Aligned && k > 1).then_some((k as u32, w as u32));
        gens.push(Synthetic::new(c)?);
    }
    let mut arenas: Vec<FrameArena> = (0..k)
        .map(|_| FrameArena::with_capacity(a.slice, a.slice * MAX_FRAME))
        .collect();
    let mut gen_time = Duration::ZERO;
    let mut gen_frames = 0u64;
    let mut fill = |gens: &mut [Synthetic], arenas: &mut [FrameArena]| {
        let t0 = Instant::now();
        std::thread::scope(|s| {
            for (g, ar) in gens.iter_mut().zip(arenas.iter_mut()) {
                s.spawn(move || {
                    ar.clear();
                    ar.fill(g, a.slice);
                });
            }
        });
        gen_time += t0.elapsed();
        gen_frames += arenas.iter().map(|x| x.len() as u64).sum::<u64>();
    };
    fill(&mut gens, &mut arenas);
    let rss0 = rss_bytes();
    let mut p = Pipeline::new(PipelineConfig {
        workers: k,
        ring_capacity: a.ring,
        pin: !a.no_pin,
        engine: EngineConfig {
            table: TableConfig {
                capacity: (t.flows * 2).max(1 << 16),
                ..TableConfig::default()
            },
        },
        ..PipelineConfig::default()
    });
    let stop = AtomicBool::new(false);
    let label = format!("{k} core{}", if k == 1 { "" } else { "s" });
    let bar = progress.then(|| {
        let pb = indicatif::ProgressBar::new((a.seconds * 1000.0) as u64);
        pb.set_style(
            indicatif::ProgressStyle::with_template("{msg:32} [{bar:30}] {pos}/{len} ms measured")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        pb.set_message(format!("{label}: warm-up"));
        pb
    });

    // Warm-up: every flow opened and a few packets each, untimed.
    let per_worker_flows = t.flows.div_ceil(k) as u64;
    let mut warm = 0u64;
    loop {
        let stats = p.run(arenas.iter().map(|x| x.source()).collect(), &stop);
        warm += stats.frames();
        if gens
            .iter()
            .all(|g| g.stats().frames >= 2 * per_worker_flows)
        {
            break;
        }
        fill(&mut gens, &mut arenas);
    }
    let base = p.counters();

    // Measured slices.
    let budget_ns = (a.seconds * 1e9) as u64;
    let mut wall_ns = 0u64;
    let mut frames = vec![0u64; k];
    let mut pinned = Vec::new();
    while wall_ns < budget_ns {
        fill(&mut gens, &mut arenas);
        let stats = p.run(arenas.iter().map(|x| x.source()).collect(), &stop);
        wall_ns += stats.wall_ns;
        for (f, w) in frames.iter_mut().zip(&stats.workers) {
            *f += w.frames;
        }
        pinned = stats.cores;
        if let Some(pb) = &bar {
            let total: u64 = frames.iter().sum();
            pb.set_position(wall_ns / 1_000_000);
            pb.set_message(format!(
                "{label}: {:.2} Mpps",
                total as f64 / wall_ns.max(1) as f64 * 1e3
            ));
        }
    }
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    let rss1 = rss_bytes();
    let counters = p.counters();
    let workers: Vec<WorkerCounters> = counters
        .iter()
        .zip(&base)
        .map(|(c, b)| WorkerCounters {
            frames: c.frames - b.frames,
            parse_errors: c.parse_errors - b.parse_errors,
            unsupported_link: c.unsupported_link - b.unsupported_link,
            local: c.local - b.local,
            handed_off: c.handed_off - b.handed_off,
            ring_full: c.ring_full - b.ring_full,
            received: c.received - b.received,
            batches: c.batches - b.batches,
            idle: c.idle - b.idle,
            source_errors: c.source_errors - b.source_errors,
            busy_ns: c.busy_ns - b.busy_ns,
            cpu_ns: c.cpu_ns - b.cpu_ns,
            runq_ns: c.runq_ns - b.runq_ns,
        })
        .collect();
    let total: u64 = frames.iter().sum();
    let secs = wall_ns as f64 / 1e9;
    let live = p.live_flows();
    let memory = with_memory.then(|| memory(&p, rss0, rss1, live));
    Ok(RunResult {
        cores: k,
        pinned,
        frames: total,
        seconds: secs,
        pps: total as f64 / secs,
        pps_per_core: frames.iter().map(|&f| f as f64 / secs).collect(),
        ns_per_packet_per_core: wall_ns as f64 * k as f64 / total.max(1) as f64,
        cpu_ns_per_packet: workers.iter().map(|w| w.cpu_ns).sum::<u64>() as f64
            / total.max(1) as f64,
        runq_pct: 100.0 * workers.iter().map(|w| w.runq_ns).sum::<u64>() as f64
            / workers.iter().map(|w| w.busy_ns).sum::<u64>().max(1) as f64,
        handed_off: workers.iter().map(|w| w.handed_off).sum(),
        ring_full: workers.iter().map(|w| w.ring_full).sum(),
        live_flows: live,
        evicted_flows: p.summary().evicted_flows,
        warmup_frames: warm,
        generate_ns_per_frame: gen_time.as_nanos() as f64 / gen_frames.max(1) as f64,
        slice_bytes: arenas.iter().map(|x| x.bytes()).sum(),
        memory,
        workers,
    })
}

fn memory(p: &Pipeline, rss0: Option<u64>, rss1: Option<u64>, live: usize) -> Memory {
    let mut tcp = 0usize;
    let mut syn_only = 0usize;
    let mut hist = 0usize;
    for w in 0..p.workers() {
        p.engine(w).for_each_active(|f| {
            match f.tcp {
                Some(TcpRef::Conn(_)) => tcp += 1,
                Some(TcpRef::Syn(_)) => syn_only += 1,
                None => {}
            }
            hist += f.dirs.iter().map(|d| d.rtt.heap_bytes()).sum::<usize>();
        });
    }
    let flow_slot = FlowTable::slot_bytes() - tcp_conn_bytes();
    let map_entry = FlowTable::map_entry_bytes();
    let live_f = live.max(1) as f64;
    // hashbrown keeps at most 7/8 of its buckets full: count that slack.
    let map_per_flow = map_entry as f64 * 8.0 / 7.0;
    let structs = flow_slot as f64
        + map_per_flow
        + tcp as f64 * tcp_conn_bytes() as f64 / live_f
        + syn_only as f64 * std::mem::size_of::<SynOnly>() as f64 / live_f
        + hist as f64 / live_f;
    let delta = match (rss0, rss1) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => 0,
    };
    Memory {
        rss_delta_bytes: delta,
        rss_bytes_per_flow: delta as f64 / live_f,
        struct_bytes_per_flow: structs,
        flow_slot_bytes: flow_slot,
        tcp_conn_bytes: tcp_conn_bytes(),
        map_entry_bytes: map_entry,
        histogram_heap_bytes_per_flow: hist as f64 / live_f,
        packet_meta_bytes: std::mem::size_of::<PacketMeta>(),
        ring_bytes: p.ring_bytes(),
    }
}

/// Bytes of the boxed TCP state of a TCP flow.
fn tcp_conn_bytes() -> usize {
    std::mem::size_of::<wirelens_dataplane::flow::tcp::TcpConn>()
}

fn print_table(out: &mut impl Write, r: &Report) -> io::Result<()> {
    writeln!(
        out,
        "wirelens bench pipeline: {} traffic, {} flows, loss {}%, reorder {}%, IPv6 {}%, steering {:?}",
        r.mix, r.flows, r.loss_pct, r.reorder_pct, r.ipv6_pct, r.steering
    )?;
    writeln!(
        out,
        "machine: {} cores usable, {}",
        r.available_cores, r.cpu
    )?;
    if let Some(first) = r.runs.first() {
        writeln!(
            out,
            "traffic: {} frames per worker per slice ({:.1} MiB for all workers), generated between measured slices, untimed ({:.0} ns/frame)",
            r.slice_frames_per_worker,
            first.slice_bytes as f64 / 1048576.0,
            first.generate_ns_per_frame
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:>5} {:>12} {:>8} {:>8} {:>16} {:>12} {:>11} {:>6} {:>10} {:>10} {:>10}",
        "cores",
        "frames",
        "seconds",
        "Mpps",
        "Mpps per core",
        "ns/pkt/core",
        "CPU ns/pkt",
        "runq",
        "handed off",
        "ring drops",
        "flows"
    )?;
    for run in &r.runs {
        let per_core: Vec<String> = run
            .pps_per_core
            .iter()
            .map(|p| format!("{:.2}", p / 1e6))
            .collect();
        writeln!(
            out,
            "{:>5} {:>12} {:>8.2} {:>8.2} {:>16} {:>12.1} {:>11.1} {:>5.0}% {:>9.1}% {:>10} {:>10}",
            run.cores,
            run.frames,
            run.seconds,
            run.pps / 1e6,
            per_core.join(" "),
            run.ns_per_packet_per_core,
            run.cpu_ns_per_packet,
            run.runq_pct,
            100.0 * run.handed_off as f64 / run.frames.max(1) as f64,
            run.ring_full,
            run.live_flows
        )?;
    }
    if let (Some(s), Some(last)) = (r.scaling, r.runs.last()) {
        writeln!(
            out,
            "scaling 1 -> {} cores: {:.2}x ({:.0}% of linear)",
            last.cores,
            s,
            100.0 * s / last.cores as f64
        )?;
    }
    if let Some(m) = r.runs.first().and_then(|x| x.memory.as_ref()) {
        writeln!(
            out,
            "memory (1-core run, {} live flows): RSS +{:.1} MiB = {:.0} B/flow; from structure sizes {:.0} B/flow (flow slot {} B, map entry {} B, TcpConn {} B per TCP flow, RTT histograms {:.0} B/flow); PacketMeta {} B, rings {} B",
            r.runs[0].live_flows,
            m.rss_delta_bytes as f64 / 1048576.0,
            m.rss_bytes_per_flow,
            m.struct_bytes_per_flow,
            m.flow_slot_bytes,
            m.map_entry_bytes,
            m.tcp_conn_bytes,
            m.histogram_heap_bytes_per_flow,
            m.packet_meta_bytes,
            m.ring_bytes
        )?;
    }
    Ok(())
}

/// Cores this process may run on.
fn core_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// Resident set size (Linux `/proc/self/statm`).
fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
