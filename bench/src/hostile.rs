//! `wirelens bench hostile`: the engine's speed and bounds under hostile
//! traffic, as a share of its speed on the same healthy traffic alone.
//!
//! One run, three modes, each on a fresh pipeline over the same healthy
//! traffic (same seed: the same flows, frames and timestamps):
//!
//! 1. `baseline`: the healthy traffic alone;
//! 2. `synflood`: the healthy traffic with bare SYNs from `--flood-tuples`
//!    distinct spoofed 5-tuples spread evenly among it (`--hostile-share` of
//!    the frames), never answered;
//! 3. `garbage`: the healthy traffic with as many garbage frames (random
//!    bytes, truncated headers, TCP option loops, lying IP/TCP/UDP lengths,
//!    IPv6 extension-header chains that never end, overlapping and tiny
//!    fragments) spread the same way.
//!
//! Each mode first warms up on healthy traffic alone (untimed: every flow
//! opened), then runs the measured phase in slices like `bench pipeline`:
//! generate a slice (untimed), run the pipeline over it (timed), take the
//! records of the flows that left the tables (untimed, as an exporter
//! would), sample the table sizes and the resident set. It reports per mode
//! packets/s, ns/packet, the share of the baseline's speed, the table's
//! largest size against its capacity, the resident set along the way,
//! evictions and drops by reason, whether every frame was accounted for once,
//! and which healthy flows survived compared with the baseline.

use std::collections::BTreeMap;
use std::io::{self, IsTerminal, Write};
use std::net::IpAddr;
use std::sync::atomic::AtomicBool;

use clap::Args;
use serde::Serialize;
use wirelens_dataplane::engine::EngineConfig;
use wirelens_dataplane::flow::{FlowTable, TableConfig};
use wirelens_dataplane::pipeline::{Pipeline, PipelineConfig};
use wirelens_dataplane::report::{FlowRecord, Proto, TcpState};
use wirelens_dataplane::source::synthetic::{
    is_hostile_source, FrameArena, Garbage, Hostile, HostileConfig, HostileKind, Interleave,
    Synthetic, MAX_FRAME,
};

use super::{core_count, cpu_model, rss_bytes, synthetic_config, TrafficArgs};
use wirelens_output::Format;

#[derive(Debug, Args)]
pub struct HostileArgs {
    #[command(flatten)]
    pub traffic: TrafficArgs,
    /// Distinct spoofed 5-tuples of the SYN flood (one SYN each).
    #[arg(long, default_value_t = 10_000_000)]
    pub flood_tuples: u64,
    /// Garbage frames of the garbage mode (default: as many as flood tuples).
    #[arg(long)]
    pub garbage_frames: Option<u64>,
    /// Percent of the measured frames that are hostile; the healthy frames
    /// of every mode are `hostile x (100 - share) / share`.
    #[arg(long, default_value_t = 50.0)]
    pub hostile_share: f64,
    /// Flow table capacity per worker (default: 2 x --flows per worker, at
    /// least 65536, as `bench pipeline`).
    #[arg(long)]
    pub capacity: Option<usize>,
    /// Workers (the flood and the garbage are split between them).
    #[arg(long, default_value_t = 1)]
    pub cores: usize,
    /// Frames generated per worker ahead of each measured slice.
    #[arg(long, default_value_t = 65_536)]
    pub slice: usize,
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Baseline,
    Synflood,
    Garbage,
}

/// Healthy flows alive at the end of a mode, past their handshake (or UDP),
/// by endpoints, with the time of their record's first packet.
type Alive = BTreeMap<(IpAddr, u16, IpAddr, u16), u64>;

#[derive(Debug, Serialize)]
struct ModeResult {
    mode: Mode,
    /// Measured frames: healthy + hostile.
    frames: u64,
    healthy_frames: u64,
    hostile_frames: u64,
    seconds: f64,
    pps: f64,
    /// Measured wall time x workers / frames.
    ns_per_packet: f64,
    /// Workers' on-CPU time / frames.
    cpu_ns_per_packet: f64,
    /// pps / the baseline's pps, in percent.
    speed_share_pct: f64,
    /// Healthy frames per second / the baseline's, in percent.
    healthy_rate_share_pct: f64,
    /// The baseline's CPU ns per packet / this mode's, in percent: the speed
    /// share without the time the workers waited for a CPU (shared machines).
    cpu_speed_share_pct: f64,
    /// Flows in the tables at most (sampled after every slice), summed over
    /// workers, and the tables' capacity summed.
    max_table_flows: usize,
    table_capacity: usize,
    flows_created: u64,
    /// Distinct flood tuples sent / garbage frames by kind.
    distinct_flood_tuples: u64,
    garbage_by_kind: BTreeMap<&'static str, u64>,
    /// What was shed.
    evicted_flows: u64,
    flood_flows_left: u64,
    hostile_other_flows_left: u64,
    /// Healthy connections that left while still waiting for their SYN/ACK
    /// (an evicted handshake; the flow is picked up again at its SYN/ACK).
    healthy_syn_only_left: u64,
    healthy_flows_left: u64,
    parse_errors: BTreeMap<String, u64>,
    non_ip: u64,
    ring_full: u64,
    /// Every frame is a flow's packet, a parse error, non-IP or a ring drop,
    /// once.
    frames_accounted_once: bool,
    healthy_established_at_end: usize,
    /// Of the baseline's healthy established flows at its end: alive and
    /// established here too, and among them from the same first packet.
    baseline_established_kept: usize,
    baseline_established_same_first_packet: usize,
    /// Resident set (whole process) after the warm-up, at most during the
    /// measured phase, and after 10 %, 50 % and 100 % of it.
    rss_start_bytes: Option<u64>,
    rss_max_bytes: Option<u64>,
    rss_checkpoints: Vec<(u32, Option<u64>)>,
}

#[derive(Debug, Serialize)]
struct Report {
    bench: &'static str,
    cpu: String,
    available_cores: usize,
    cores: usize,
    flows: usize,
    mix: String,
    capacity_per_worker: usize,
    /// From structure sizes: flow slot + map entry + TcpConn, per table slot.
    table_bytes_per_slot: usize,
    flood_tuples: u64,
    garbage_frames: u64,
    hostile_share_pct: f64,
    modes: Vec<ModeResult>,
}

pub fn bench_hostile(a: &HostileArgs) -> anyhow::Result<()> {
    let t = &a.traffic;
    anyhow::ensure!(t.flows > 0, "--flows must be at least 1");
    anyhow::ensure!(a.cores > 0, "--cores must be at least 1");
    anyhow::ensure!(a.slice > 0, "--slice must be at least 1");
    anyhow::ensure!(
        a.hostile_share > 0.0 && a.hostile_share < 100.0,
        "--hostile-share must be above 0 and under 100"
    );
    anyhow::ensure!(a.flood_tuples > 0, "--flood-tuples must be at least 1");
    let k = a.cores;
    let per_worker_flows = t.flows.div_ceil(k);
    let capacity = a
        .capacity
        .unwrap_or((per_worker_flows * 2).max(1 << 16))
        .max(1);
    let garbage_frames = a.garbage_frames.unwrap_or(a.flood_tuples);
    let progress = !a.no_progress && io::stderr().is_terminal();
    let mut modes: Vec<ModeResult> = Vec::new();
    let mut baseline_alive = Alive::new();
    for mode in [Mode::Baseline, Mode::Synflood, Mode::Garbage] {
        let hostile = match mode {
            Mode::Garbage => garbage_frames,
            _ => a.flood_tuples,
        };
        let (mut r, alive) = run_mode(a, mode, hostile, capacity, &baseline_alive, progress)?;
        if let Some(b) = modes.first() {
            r.speed_share_pct = 100.0 * r.pps / b.pps;
            r.cpu_speed_share_pct = 100.0 * b.cpu_ns_per_packet / r.cpu_ns_per_packet;
            r.healthy_rate_share_pct = 100.0 * (r.healthy_frames as f64 / r.seconds)
                / (b.healthy_frames as f64 / b.seconds);
        } else {
            r.speed_share_pct = 100.0;
            r.cpu_speed_share_pct = 100.0;
            r.healthy_rate_share_pct = 100.0;
            r.baseline_established_kept = alive.len();
            r.baseline_established_same_first_packet = alive.len();
            baseline_alive = alive;
        }
        modes.push(r);
    }
    let report = Report {
        bench: "hostile",
        cpu: cpu_model(),
        available_cores: core_count(),
        cores: k,
        flows: t.flows,
        mix: format!("{:?}", t.mix).to_lowercase(),
        capacity_per_worker: capacity,
        table_bytes_per_slot: FlowTable::slot_bytes()
            + std::mem::size_of::<(wirelens_dataplane::flow::FlowKey, u32)>()
            + 1,
        flood_tuples: a.flood_tuples,
        garbage_frames,
        hostile_share_pct: a.hostile_share,
        modes,
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

/// What the records of the flows that left the tables add up to.
#[derive(Default)]
struct Left {
    flow_packets: u64,
    flood: u64,
    hostile_other: u64,
    healthy: u64,
    healthy_syn_only: u64,
}

impl Left {
    fn add(&mut self, r: &FlowRecord) {
        self.flow_packets += r.c2s.packets + r.s2c.packets;
        let syn_only = r.proto == Proto::Tcp
            && r.c2s.syn > 0
            && r.c2s.packets == r.c2s.syn
            && r.s2c.packets == 0;
        if is_hostile_source(&r.client.ip) {
            if syn_only && r.server.port == wirelens_dataplane::source::synthetic::VICTIM_PORT {
                self.flood += 1;
            } else {
                self.hostile_other += 1;
            }
        } else {
            self.healthy += 1;
            self.healthy_syn_only += u64::from(syn_only);
        }
    }
}

fn run_mode(
    a: &HostileArgs,
    mode: Mode,
    hostile_total: u64,
    capacity: usize,
    baseline_alive: &Alive,
    progress: bool,
) -> anyhow::Result<(ModeResult, Alive)> {
    let t = &a.traffic;
    let k = a.cores;
    let share = a.hostile_share / 100.0;
    let healthy_total = (hostile_total as f64 * (1.0 - share) / share).round() as u64;
    // generators: healthy per worker (its own address space), hostile split
    let mut gens = Vec::with_capacity(k);
    let mut warm_frames = Vec::with_capacity(k);
    for w in 0..k {
        let flows = (t.flows / k + usize::from(w < t.flows % k)).max(1);
        let mut c = synthetic_config(t, flows);
        c.seed = t.seed.wrapping_add(w as u64);
        c.space = (w % 14) as u16;
        let warm = 2 * flows as u64;
        let healthy = split(healthy_total, k, w);
        c.limit = Some(warm + healthy);
        warm_frames.push(warm);
        gens.push(Synthetic::new(c)?);
    }
    let mut arenas: Vec<FrameArena> = (0..k)
        .map(|_| {
            // touch every page now, so that the resident set measured below
            // does not grow with the slices
            let mut ar = FrameArena::with_capacity(a.slice, a.slice * MAX_FRAME);
            let page = [0u8; MAX_FRAME];
            for _ in 0..a.slice {
                ar.push(0, &page);
            }
            ar.clear();
            ar
        })
        .collect();
    let mut p = Pipeline::new(PipelineConfig {
        workers: k,
        pin: !a.no_pin,
        engine: EngineConfig {
            table: TableConfig {
                capacity,
                ..TableConfig::default()
            },
        },
        ..PipelineConfig::default()
    });
    let stop = AtomicBool::new(false);
    let mut left = Left::default();
    let drain = |p: &mut Pipeline, left: &mut Left| {
        while let Some(r) = p.poll_record() {
            left.add(&r);
        }
    };

    // Warm-up, healthy only, untimed.
    let mut fed = 0u64;
    loop {
        let mut any = false;
        for ((g, ar), &warm) in gens.iter_mut().zip(&mut arenas).zip(&warm_frames) {
            ar.clear();
            let n = (warm - g.stats().frames).min(a.slice as u64) as usize;
            any |= ar.fill(g, n) > 0;
        }
        if !any {
            break;
        }
        fed += arenas.iter().map(|x| x.len() as u64).sum::<u64>();
        p.run(arenas.iter().map(|x| x.source()).collect(), &stop);
        drain(&mut p, &mut left);
    }
    let base = p.counters();

    // Measured phase.
    let mut mixes = Vec::with_capacity(k);
    let mut first_tuple = 0u64;
    for (w, g) in gens.into_iter().enumerate() {
        let n = split(hostile_total, k, w);
        let kind = match mode {
            Mode::Garbage => HostileKind::Garbage,
            _ => HostileKind::SynFlood,
        };
        let h = Hostile::new(HostileConfig {
            seed: t.seed.wrapping_add(w as u64),
            kind,
            first_tuple,
            tuples: n.max(1),
            ipv6: t.ipv6 / 100.0,
        })?;
        first_tuple += n;
        let (s, limit) = match mode {
            Mode::Baseline => (0.0, Some(0)),
            _ => (share, Some(n)),
        };
        mixes.push(Interleave::new(g, h, s, limit)?);
    }
    let rss_start = rss_bytes();
    let mut rss_max = rss_start;
    let mut checkpoints = Vec::new();
    let measured_total: u64 = match mode {
        Mode::Baseline => healthy_total,
        _ => healthy_total + hostile_total,
    };
    let bar = progress.then(|| {
        let pb = indicatif::ProgressBar::new(measured_total);
        pb.set_style(
            indicatif::ProgressStyle::with_template("{msg:10} [{bar:30}] {pos}/{len} frames")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        pb.set_message(format!("{mode:?}").to_lowercase());
        pb
    });
    let mut wall_ns = 0u64;
    let mut measured = 0u64;
    let mut max_table = 0usize;
    let mut next_checkpoint = 0;
    const CHECKPOINTS: [u32; 3] = [10, 50, 100];
    loop {
        std::thread::scope(|s| {
            for (m, ar) in mixes.iter_mut().zip(arenas.iter_mut()) {
                s.spawn(move || {
                    ar.clear();
                    ar.fill_from(m, a.slice);
                });
            }
        });
        let n: u64 = arenas.iter().map(|x| x.len() as u64).sum();
        if n == 0 {
            break;
        }
        let stats = p.run(arenas.iter().map(|x| x.source()).collect(), &stop);
        wall_ns += stats.wall_ns;
        measured += n;
        fed += n;
        drain(&mut p, &mut left);
        max_table = max_table.max((0..k).map(|w| p.engine(w).table().len()).sum());
        let rss = rss_bytes();
        rss_max = rss_max.max(rss);
        while next_checkpoint < CHECKPOINTS.len()
            && measured * 100 >= u64::from(CHECKPOINTS[next_checkpoint]) * measured_total
        {
            checkpoints.push((CHECKPOINTS[next_checkpoint], rss));
            next_checkpoint += 1;
        }
        if let Some(pb) = &bar {
            pb.set_position(measured);
        }
    }
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    let counters = p.counters();
    let cpu_ns: u64 = counters
        .iter()
        .zip(&base)
        .map(|(c, b)| c.cpu_ns - b.cpu_ns)
        .sum();
    let ring_full: u64 = counters.iter().map(|c| c.ring_full).sum();
    let summary = p.summary();

    // The flows alive at the end, and the accounting of every frame.
    let mut alive_packets = 0u64;
    let mut alive = Alive::new();
    let mut created = 0u64;
    for w in 0..k {
        let e = p.engine(w);
        created += e.table().created();
        e.for_each_active(|f| {
            alive_packets += f.dirs.iter().map(|d| d.packets).sum::<u64>();
            if f.flow.key.is_none() {
                return;
            }
            let r = f.to_record(false);
            if is_hostile_source(&r.client.ip) {
                return;
            }
            if r.tcp
                .as_ref()
                .is_none_or(|t| t.state == TcpState::Established)
            {
                alive.insert(endpoints(&r), r.first_ns);
            }
        });
    }
    let errors: u64 = summary.parse_errors.values().sum();
    // (with several workers, a meta dropped because its owner's ring was
    // full is counted there, not in a flow)
    let accounted = summary.packets == fed
        && left.flow_packets + alive_packets + errors + summary.non_ip + ring_full == fed;
    let kept = baseline_alive
        .keys()
        .filter(|k| alive.contains_key(*k))
        .count();
    let same = baseline_alive
        .iter()
        .filter(|(k, t)| alive.get(*k) == Some(*t))
        .count();
    let (distinct, garbage_by_kind) = {
        let mut d = 0;
        let mut g: BTreeMap<&'static str, u64> = BTreeMap::new();
        for m in &mixes {
            let s = m.hostile().stats();
            if mode != Mode::Baseline {
                d += s.distinct_tuples;
                for kind in Garbage::ALL {
                    if s.garbage[kind as usize] > 0 {
                        *g.entry(kind.as_str()).or_default() += s.garbage[kind as usize];
                    }
                }
            }
        }
        (d, g)
    };
    let healthy_frames: u64 = mixes
        .iter()
        .zip(&warm_frames)
        .map(|(m, w)| m.healthy().stats().frames - w)
        .sum();
    let secs = wall_ns as f64 / 1e9;
    Ok((
        ModeResult {
            mode,
            frames: measured,
            healthy_frames,
            hostile_frames: measured - healthy_frames,
            seconds: secs,
            pps: measured as f64 / secs,
            ns_per_packet: wall_ns as f64 * k as f64 / measured.max(1) as f64,
            cpu_ns_per_packet: cpu_ns as f64 / measured.max(1) as f64,
            speed_share_pct: 0.0,
            cpu_speed_share_pct: 0.0,
            healthy_rate_share_pct: 0.0,
            max_table_flows: max_table,
            table_capacity: capacity * k,
            flows_created: created,
            distinct_flood_tuples: distinct,
            garbage_by_kind,
            evicted_flows: summary.evicted_flows,
            flood_flows_left: left.flood,
            hostile_other_flows_left: left.hostile_other,
            healthy_syn_only_left: left.healthy_syn_only,
            healthy_flows_left: left.healthy,
            parse_errors: summary.parse_errors.clone(),
            non_ip: summary.non_ip,
            ring_full,
            frames_accounted_once: accounted,
            healthy_established_at_end: alive.len(),
            baseline_established_kept: kept,
            baseline_established_same_first_packet: same,
            rss_start_bytes: rss_start,
            rss_max_bytes: rss_max,
            rss_checkpoints: checkpoints,
        },
        alive,
    ))
}

/// Worker `w`'s part of `n` split over `k`.
fn split(n: u64, k: usize, w: usize) -> u64 {
    n / k as u64 + u64::from((w as u64) < n % k as u64)
}

fn endpoints(r: &FlowRecord) -> (IpAddr, u16, IpAddr, u16) {
    let a = (r.client.ip, r.client.port);
    let b = (r.server.ip, r.server.port);
    let (x, y) = if a <= b { (a, b) } else { (b, a) };
    (x.0, x.1, y.0, y.1)
}

fn mib(b: Option<u64>) -> String {
    b.map_or("?".into(), |b| format!("{:.0}", b as f64 / 1048576.0))
}

fn print_table(out: &mut impl Write, r: &Report) -> io::Result<()> {
    writeln!(
        out,
        "wirelens bench hostile: {} healthy traffic, {} flows, {} worker(s), table capacity {} per worker ({} B per slot from structure sizes)",
        r.mix, r.flows, r.cores, r.capacity_per_worker, r.table_bytes_per_slot
    )?;
    writeln!(
        out,
        "hostile: SYN flood of {} distinct spoofed 5-tuples; {} garbage frames; {}% of the measured frames",
        r.flood_tuples, r.garbage_frames, r.hostile_share_pct
    )?;
    writeln!(
        out,
        "machine: {} cores usable, {}",
        r.available_cores, r.cpu
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "{:<9} {:>10} {:>7} {:>7} {:>7} {:>8} {:>7} {:>9} {:>8} {:>17} {:>10} {:>10} {:>9} {:>18} {:>13}",
        "mode",
        "frames",
        "seconds",
        "Mpps",
        "ns/pkt",
        "CPU ns",
        "share",
        "CPU share",
        "healthy",
        "max flows/cap",
        "created",
        "evicted",
        "accounted",
        "healthy kept",
        "RSS MiB"
    )?;
    for m in &r.modes {
        writeln!(
            out,
            "{:<9} {:>10} {:>7.2} {:>7.2} {:>7.0} {:>8.0} {:>6.1}% {:>8.1}% {:>7.1}% {:>17} {:>10} {:>10} {:>9} {:>18} {:>13}",
            format!("{:?}", m.mode).to_lowercase(),
            m.frames,
            m.seconds,
            m.pps / 1e6,
            m.ns_per_packet,
            m.cpu_ns_per_packet,
            m.speed_share_pct,
            m.cpu_speed_share_pct,
            m.healthy_rate_share_pct,
            format!("{}/{}", m.max_table_flows, m.table_capacity),
            m.flows_created,
            m.evicted_flows,
            if m.frames_accounted_once { "yes" } else { "NO" },
            format!(
                "{}/{} ({} same)",
                m.baseline_established_kept,
                r.modes[0].healthy_established_at_end,
                m.baseline_established_same_first_packet
            ),
            format!("{}->{}", mib(m.rss_start_bytes), mib(m.rss_max_bytes)),
        )?;
    }
    writeln!(out)?;
    for m in &r.modes {
        let rss: Vec<String> = m
            .rss_checkpoints
            .iter()
            .map(|(p, b)| format!("{p}%: {} MiB", mib(*b)))
            .collect();
        writeln!(
            out,
            "{}: shed {} flood flows, {} other hostile flows, {} healthy handshakes still waiting for their SYN/ACK ({} healthy flows left in all); distinct flood tuples {}; ring drops {}; non-IP {}; RSS {}",
            format!("{:?}", m.mode).to_lowercase(),
            m.flood_flows_left,
            m.hostile_other_flows_left,
            m.healthy_syn_only_left,
            m.healthy_flows_left,
            m.distinct_flood_tuples,
            m.ring_full,
            m.non_ip,
            rss.join(", ")
        )?;
        if !m.parse_errors.is_empty() {
            let e: Vec<String> = m
                .parse_errors
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            writeln!(out, "  parse errors: {}", e.join(", "))?;
        }
        if !m.garbage_by_kind.is_empty() {
            let g: Vec<String> = m
                .garbage_by_kind
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            writeln!(out, "  garbage sent: {}", g.join(", "))?;
        }
    }
    Ok(())
}
