//! `wirelens bench inline`: forwarding through the box on a veth lab of its
//! own, for (a) the kernel bridge, (b) a bare XDP devmap redirect (the
//! inline program with analysis off) and (c) `wirelens run --inline` (full
//! analysis): offered vs forwarded rate flat out, then the one-way latency
//! generator -> sink at half of (c)'s forwarded rate.
//!
//! The lab: namespace `wlgw<pid>g` holds the generator and the sink,
//! `wlgw<pid>x` the box; veth `..ga` (generator) -> `..xa` (box port A),
//! box port B `..xb` -> `..gb` (sink). IPv6 off, no addresses: nothing but
//! the generator's frames crosses the box. The generator is the AF_XDP
//! transmitter of `bench live` ([`XskTx`]) sending fixed-size UDP frames
//! with its CLOCK_REALTIME send time in the payload; the sink is our tap
//! XDP program with one AF_XDP socket on `..gb` (which also gives that veth
//! the NAPI a driver-mode redirect into it needs), stamping each receive
//! batch. Forwarded = frames the sink's XDP program ran on. The lab is
//! removed on drop, also on error and after Ctrl-C.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use clap::{Args, ValueEnum};
use serde::Serialize;
use wirelens_dataplane::xdp::{
    enter_netns, InlineProgram, ModePreference, RxMode, XdpProgram, XskConfig, XskSocket, XskTx,
    XskTxConfig,
};

use crate::live::{cmd, pin, udp_frame};
use wirelens_output::{exit, Format};

/// What forwards between the box's ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Forwarder {
    /// A Linux bridge joining the two ports.
    Bridge,
    /// The inline XDP program with analysis off: a bare devmap redirect.
    Devmap,
    /// `wirelens run --inline` with full analysis.
    Run,
}

impl Forwarder {
    fn label(self) -> &'static str {
        match self {
            Forwarder::Bridge => "kernel bridge",
            Forwarder::Devmap => "XDP devmap redirect",
            Forwarder::Run => "wirelens run --inline",
        }
    }
}

/// Forwarding through the box on a veth lab of its own (root): the kernel
/// bridge, a bare XDP devmap redirect and `wirelens run --inline`, flat out
/// and at half of the latter's rate (one-way latency). The lab is removed
/// on exit.
#[derive(Debug, Args)]
pub struct InlineArgs {
    /// Seconds of traffic per measurement.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Frame size, bytes (60-1514).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// UDP flows the frames cycle through.
    #[arg(long, default_value_t = 1024)]
    pub flows: usize,
    /// Forwarders to measure, in this order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "bridge,devmap,run"
    )]
    pub forwarders: Vec<Forwarder>,
    /// Core of the generator thread (default: the first usable core).
    #[arg(long)]
    pub tx_core: Option<usize>,
    /// Core of the sink thread (default: the last usable core).
    #[arg(long)]
    pub rx_core: Option<usize>,
    /// `table` for people, `json` (or `ndjson`) for scripts.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

pub fn run(a: &InlineArgs) -> u8 {
    let Some(stop) = crate::live::stop_on_signals("inline") else {
        return exit::INPUT;
    };
    match bench_inline(a, &stop) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("wirelens bench inline: {e:#}");
            exit::INPUT
        }
    }
}

/// Where the send time sits in the frame (UDP payload) and the marker after it.
const TS_AT: usize = 42;
const MAGIC: u32 = 0x776c_6777;

#[derive(Debug)]
struct Lab {
    ns_g: String,
    ns_x: String,
    ga: String,
    gb: String,
    xa: String,
    xb: String,
    dir: PathBuf,
    child: Option<Child>,
}

impl Lab {
    fn create() -> anyhow::Result<Lab> {
        let id = format!("wlgw{}", std::process::id() % 100_000);
        let lab = Lab {
            ns_g: format!("{id}g"),
            ns_x: format!("{id}x"),
            ga: format!("{id}ga"),
            gb: format!("{id}gb"),
            xa: format!("{id}xa"),
            xb: format!("{id}xb"),
            dir: std::env::temp_dir().join(format!("wirelens-bench-inline-{id}")),
            child: None,
        };
        lab.remove();
        std::fs::create_dir_all(&lab.dir)
            .with_context(|| format!("cannot create {}", lab.dir.display()))?;
        for ns in [&lab.ns_g, &lab.ns_x] {
            cmd(&["ip", "netns", "add", ns])?;
            cmd(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ])?;
        }
        for (a, b) in [(&lab.ga, &lab.xa), (&lab.xb, &lab.gb)] {
            let (na, nb) = if a == &lab.ga {
                (&lab.ns_g, &lab.ns_x)
            } else {
                (&lab.ns_x, &lab.ns_g)
            };
            cmd(&[
                "ip", "link", "add", a, "netns", na, "type", "veth", "peer", "name", b, "netns", nb,
            ])?;
        }
        for (ns, dev) in [
            (&lab.ns_g, &lab.ga),
            (&lab.ns_g, &lab.gb),
            (&lab.ns_x, &lab.xa),
            (&lab.ns_x, &lab.xb),
        ] {
            cmd(&["ip", "-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(lab)
    }

    fn x(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut v = vec!["ip", "-n", &self.ns_x];
        v.extend_from_slice(args);
        cmd(&v)
    }

    /// Puts `f` between the box's ports; `Some(guard)` for the devmap
    /// program (forwarding while it lives, and after).
    fn forward(&mut self, f: Forwarder) -> anyhow::Result<Option<InlineProgram>> {
        match f {
            Forwarder::Bridge => {
                let br = format!("{}br", self.ns_x);
                self.x(&["link", "add", &br, "type", "bridge"])?;
                for p in [&self.xa, &self.xb] {
                    self.x(&["link", "set", p, "master", &br])?;
                }
                self.x(&["link", "set", &br, "up"])?;
                Ok(None)
            }
            Forwarder::Devmap => {
                let (ns, a, b) = (self.ns_x.clone(), self.xa.clone(), self.xb.clone());
                // Attached from a thread in the box's namespace.
                let prog = thread::spawn(move || -> anyhow::Result<InlineProgram> {
                    enter_netns(&ns).with_context(|| format!("cannot enter netns {ns}"))?;
                    let mut p = InlineProgram::load().context("loading the inline program")?;
                    p.attach_pair(&a, &b, ModePreference::Auto)
                        .context("attaching the inline program")?;
                    Ok(p)
                })
                .join()
                .map_err(|_| anyhow!("the attach thread panicked"))??;
                Ok(Some(prog))
            }
            Forwarder::Run => {
                let exe = std::env::current_exe().context("the wirelens binary")?;
                let log = self.dir.join("run.err");
                let err = std::fs::File::create(&log)?;
                let pair = format!("{},{}", self.xa, self.xb);
                let child = Command::new("ip")
                    .args(["netns", "exec", &self.ns_x])
                    .arg(exe)
                    .args(["run", "--inline", &pair, "--listen", "127.0.0.1:9642"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(err)
                    .spawn()
                    .context("starting wirelens run --inline")?;
                self.child = Some(child);
                let end = Instant::now() + Duration::from_secs(30);
                loop {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    if text.contains("placement:") {
                        return Ok(None);
                    }
                    if let Some(Ok(Some(st))) = self.child.as_mut().map(Child::try_wait) {
                        bail!("wirelens run --inline exited ({st}):\n{text}");
                    }
                    if Instant::now() > end {
                        bail!("wirelens run --inline not up after 30 s:\n{text}");
                    }
                    thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// Removes whatever forwards between the ports.
    fn unforward(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
        let _ = self.x(&["link", "del", &format!("{}br", self.ns_x)]);
        for p in [&self.xa, &self.xb] {
            for how in ["xdp", "xdpgeneric"] {
                let _ = self.x(&["link", "set", "dev", p, how, "off"]);
            }
        }
    }

    fn remove(&self) {
        for ns in [&self.ns_g, &self.ns_x] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.unforward();
        self.remove();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// One measurement: offered and forwarded, and the latencies seen.
#[derive(Debug, Default, Serialize)]
struct Sample {
    offered_pps: f64,
    forwarded_pps: f64,
    forwarded_ratio: f64,
    latency_p50_us: Option<f64>,
    latency_p99_us: Option<f64>,
    latency_samples: usize,
}

/// The sink: our tap program and one AF_XDP socket on `gb`; counts what
/// arrives and, per frame, receive batch time minus the send time inside.
fn sink(
    lab: &Lab,
    core: Option<usize>,
    stop: Arc<AtomicBool>,
    ready: mpsc::Sender<anyhow::Result<()>>,
) -> thread::JoinHandle<anyhow::Result<(u64, Vec<u64>)>> {
    let (ns, gb) = (lab.ns_g.clone(), lab.gb.clone());
    thread::spawn(move || {
        let setup = (|| -> anyhow::Result<(XdpProgram, XskSocket)> {
            enter_netns(&ns).with_context(|| format!("cannot enter netns {ns}"))?;
            pin(core);
            let mut prog = XdpProgram::load().context("loading the sink's XDP program")?;
            prog.attach(&gb, ModePreference::Auto)
                .with_context(|| format!("attaching XDP to {gb}"))?;
            let cfg = XskConfig {
                rx_mode: RxMode::Poll { timeout_ms: 1 },
                ..XskConfig::default()
            };
            let s = XskSocket::bind(&prog, 0, &cfg).context("binding the sink's socket")?;
            Ok((prog, s))
        })();
        let (mut prog, mut sock) = match setup {
            Ok(x) => x,
            Err(e) => {
                let _ = ready.send(Err(anyhow!("{e:#}")));
                return Err(e);
            }
        };
        let before = prog.counters().unwrap_or_default();
        let _ = ready.send(Ok(()));
        let mut lat = Vec::with_capacity(1 << 20);
        while !stop.load(Ordering::Relaxed) {
            sock.recv_batch(|ts, f| {
                let sent = f
                    .get(TS_AT..TS_AT + 12)
                    .filter(|b| b[8..12] == MAGIC.to_ne_bytes())
                    .and_then(|b| b[..8].try_into().ok())
                    .map(u64::from_ne_bytes);
                if let Some(s) = sent {
                    if lat.len() < 1 << 24 {
                        lat.push(ts.saturating_sub(s));
                    }
                }
            })?;
        }
        let seen = prog.counters().unwrap_or_default().since(&before).seen;
        drop(sock);
        let _ = prog.detach();
        Ok((seen, lat))
    })
}

/// Sends for `seconds` at `rate` (0: flat out); returns frames completed.
fn generate(lab: &Lab, a: &InlineArgs, rate: u64, stop: &AtomicBool) -> anyhow::Result<(u64, f64)> {
    let (ns, ga) = (lab.ns_g.clone(), lab.ga.clone());
    let (size, flows, seconds, core) = (a.size, a.flows.max(1), a.seconds, a.tx_core);
    let sent = AtomicU64::new(0);
    thread::scope(|s| {
        s.spawn(|| -> anyhow::Result<(u64, f64)> {
            enter_netns(&ns).with_context(|| format!("cannot enter netns {ns}"))?;
            pin(core);
            let cfg = XskTxConfig {
                frame_count: 4096,
                ring_size: 2048,
                ..XskTxConfig::default()
            };
            let mut sock =
                XskTx::bind(&ga, 0, &cfg).with_context(|| format!("AF_XDP tx on {ga}"))?;
            let templates: Vec<Vec<u8>> = (0..flows)
                .map(|f| {
                    let mut v = Vec::new();
                    udp_frame(f, size, &mut v);
                    v
                })
                .collect();
            let (dur, t0) = (Duration::from_secs_f64(seconds), Instant::now());
            let (mut submitted, mut i) = (0u64, 0usize);
            loop {
                let el = t0.elapsed();
                if el >= dur || stop.load(Ordering::Relaxed) {
                    break;
                }
                let budget = if rate == 0 {
                    64
                } else {
                    let due = (el.as_secs_f64() * rate as f64) as u64;
                    let b = due.saturating_sub(submitted).min(64);
                    if b == 0 {
                        sock.poll_completions();
                        std::hint::spin_loop();
                        continue;
                    }
                    b
                };
                let ts = now_ns().to_ne_bytes();
                let put = sock.send_batch(budget as usize, |buf| {
                    let t = &templates[i % templates.len()];
                    i += 1;
                    let n = t.len().min(buf.len());
                    buf[..n].copy_from_slice(&t[..n]);
                    if n >= TS_AT + 12 {
                        buf[TS_AT..TS_AT + 8].copy_from_slice(&ts);
                        buf[TS_AT + 8..TS_AT + 12].copy_from_slice(&MAGIC.to_ne_bytes());
                    }
                    n
                })?;
                submitted += put as u64;
            }
            let secs = t0.elapsed().as_secs_f64();
            sock.flush(Duration::from_secs(1))?;
            let done = sock.counters().completed;
            sent.store(done, Ordering::Relaxed);
            Ok((done, secs))
        })
        .join()
        .map_err(|_| anyhow!("the generator thread panicked"))?
    })
}

fn quantile_us(sorted: &[u64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    Some(sorted[i.min(sorted.len() - 1)] as f64 / 1e3)
}

fn measure(
    lab: &mut Lab,
    a: &InlineArgs,
    f: Forwarder,
    rate: u64,
    stop: &AtomicBool,
) -> anyhow::Result<Sample> {
    let guard = lab.forward(f)?;
    let sink_stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let h = sink(lab, a.rx_core, Arc::clone(&sink_stop), tx);
    let r = (|| -> anyhow::Result<Sample> {
        rx.recv_timeout(Duration::from_secs(30))
            .map_err(|_| anyhow!("the sink did not start"))??;
        let (offered, secs) = generate(lab, a, rate, stop)?;
        thread::sleep(Duration::from_millis(300));
        sink_stop.store(true, Ordering::Relaxed);
        let (seen, mut lat) = h
            .join()
            .map_err(|_| anyhow!("the sink thread panicked"))??;
        lat.sort_unstable();
        let secs = secs.max(1e-9);
        Ok(Sample {
            offered_pps: offered as f64 / secs,
            forwarded_pps: seen as f64 / secs,
            forwarded_ratio: seen as f64 / offered.max(1) as f64,
            latency_p50_us: quantile_us(&lat, 0.5),
            latency_p99_us: quantile_us(&lat, 0.99),
            latency_samples: lat.len(),
        })
    })();
    sink_stop.store(true, Ordering::Relaxed);
    drop(guard);
    lab.unforward();
    r
}

#[derive(Debug, Serialize)]
struct Row {
    forwarder: Forwarder,
    label: &'static str,
    flat_out: Sample,
    half_rate: Option<Sample>,
}

#[derive(Debug, Serialize)]
struct Report {
    frame_bytes: usize,
    seconds: f64,
    half_rate_pps: u64,
    rows: Vec<Row>,
    /// (c) forwarded / (b) forwarded and (c) / (a), flat out.
    run_vs_devmap: Option<f64>,
    run_vs_bridge: Option<f64>,
}

fn bench_inline(a: &InlineArgs, stop: &AtomicBool) -> anyhow::Result<()> {
    if !(60..=1514).contains(&a.size) {
        bail!("--size {}: 60 to 1514 bytes", a.size);
    }
    let mut lab = Lab::create().context("building the lab (needs root)")?;
    let mut rows = Vec::new();
    for &f in &a.forwarders {
        if stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        let s = measure(&mut lab, a, f, 0, stop).with_context(|| f.label())?;
        eprintln!(
            "wirelens bench inline: {}: offered {:.0} pps, forwarded {:.0} pps",
            f.label(),
            s.offered_pps,
            s.forwarded_pps
        );
        rows.push(Row {
            forwarder: f,
            label: f.label(),
            flat_out: s,
            half_rate: None,
        });
    }
    let fwd = |rows: &[Row], f: Forwarder| {
        rows.iter()
            .find(|r| r.forwarder == f)
            .map(|r| r.flat_out.forwarded_pps)
    };
    let base = fwd(&rows, Forwarder::Run)
        .or_else(|| {
            rows.iter()
                .map(|r| r.flat_out.forwarded_pps)
                .reduce(f64::min)
        })
        .unwrap_or(0.0);
    let half = (base / 2.0) as u64;
    for r in &mut rows {
        if half == 0 || stop.load(Ordering::Relaxed) {
            break;
        }
        let s = measure(&mut lab, a, r.forwarder, half, stop).with_context(|| r.label)?;
        eprintln!(
            "wirelens bench inline: {} at {half} pps: p50 {:?} us, p99 {:?} us",
            r.label, s.latency_p50_us, s.latency_p99_us
        );
        r.half_rate = Some(s);
    }
    let ratio = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) if y > 0.0 => Some(x / y),
        _ => None,
    };
    let report = Report {
        frame_bytes: a.size,
        seconds: a.seconds,
        half_rate_pps: half,
        run_vs_devmap: ratio(fwd(&rows, Forwarder::Run), fwd(&rows, Forwarder::Devmap)),
        run_vs_bridge: ratio(fwd(&rows, Forwarder::Run), fwd(&rows, Forwarder::Bridge)),
        rows,
    };
    let mut out = std::io::stdout().lock();
    match a.format {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?,
        Format::Ndjson => writeln!(out, "{}", serde_json::to_string(&report)?)?,
        Format::Table => {
            writeln!(
                out,
                "{} B frames, {} s each; latency at {} pps (half of wirelens run --inline's \
                 forwarded rate)",
                report.frame_bytes, report.seconds, report.half_rate_pps
            )?;
            writeln!(
                out,
                "{:<24} {:>12} {:>12} {:>7} {:>10} {:>10}",
                "forwarder", "offered/s", "forwarded/s", "ratio", "p50 us", "p99 us"
            )?;
            for r in &report.rows {
                let q = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
                let h = r.half_rate.as_ref();
                writeln!(
                    out,
                    "{:<24} {:>12.0} {:>12.0} {:>7.3} {:>10} {:>10}",
                    r.label,
                    r.flat_out.offered_pps,
                    r.flat_out.forwarded_pps,
                    r.flat_out.forwarded_ratio,
                    q(h.and_then(|s| s.latency_p50_us)),
                    q(h.and_then(|s| s.latency_p99_us)),
                )?;
            }
            let q = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
            writeln!(
                out,
                "run --inline / devmap: {}   run --inline / bridge: {}",
                q(report.run_vs_devmap),
                q(report.run_vs_bridge)
            )?;
        }
    }
    Ok(())
}
