//! Continuous probing for the live daemon (`wirelens run --probe TARGET`).
//!
//! One [`run_target`] per target, each on its own (unpinned) thread: never
//! on a packet worker. It runs back-to-back [`SenderSession`]s, one per
//! *window* (`window_ns` of measurement probes), so every window gets the
//! session's exact loss split (its own start and end anchors). A session's
//! drain and flush (one loss timeout, at least 1 s) overlap the next
//! session's hello on a new socket: the next window starts as soon as the
//! previous one has sent its last measurement probe, and the probe stream
//! has no gap longer than one RTT. A stateful reflector counts per sender
//! address, so the two sockets are two independent reflector sessions.
//!
//! Each finished session becomes a [`Window`] handed to the caller's sink,
//! about one loss timeout after the window's last probe. A window cut short
//! by the stop flag (the daemon stopping) is not reported.
//!
//! # Failures are windows too
//!
//! A target that does not answer is never an error that stops the thread,
//! and never a hang: the hello phase of a session lasts one window (one
//! hello per second), then the window is reported with every hello lost and
//! the state that says why: [`WindowState::NoReply`] (silence),
//! [`WindowState::Refused`] (ICMP port unreachable: nothing listens),
//! [`WindowState::Unreachable`] (no route, host or network unreachable) or
//! [`WindowState::Error`] (a local error, e.g. the probe is larger than the
//! interface MTU). Then the next session tries again.
#![forbid(unsafe_code)]

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use wirelens_dataplane::stats::Histogram;

use crate::reflector::is_timeout;
use crate::session::{SenderConfig, SenderSession, Split};
use crate::sys;

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;
/// Longest a session thread waits in `recv` before it looks at the stop flag.
const STOP_POLL_NS: u64 = 100 * MS;

/// One target of the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetConfig {
    pub target: SocketAddr,
    /// Time between measurement probes.
    pub interval_ns: u64,
    /// TWAMP test packet size (UDP payload), at least 41.
    pub size: usize,
    /// DSCP of the probes (0..=63).
    pub dscp: u8,
    /// Measurement time of one window (one session).
    pub window_ns: u64,
    /// Stop after this many measurement probes in all (default: never).
    pub count: Option<u64>,
}

/// How a window went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowState {
    /// The reflector answered (some probes may be lost).
    Ok,
    /// No answer at all: loss 100 %.
    NoReply,
    /// ICMP port unreachable: nothing listens on the target port.
    Refused,
    /// No route, or ICMP host/network unreachable.
    Unreachable,
    /// A local error (socket, MTU); `error` says which.
    Error,
}

impl WindowState {
    pub const ALL: [WindowState; 5] = [
        WindowState::Ok,
        WindowState::NoReply,
        WindowState::Refused,
        WindowState::Unreachable,
        WindowState::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WindowState::Ok => "ok",
            WindowState::NoReply => "no_reply",
            WindowState::Refused => "refused",
            WindowState::Unreachable => "unreachable",
            WindowState::Error => "error",
        }
    }
}

/// The result of one window. `sent = received + lost` and
/// `lost = lost_up + lost_down + lost_unattributed` always hold (with a
/// stateless reflector, or without any answer, every loss is unattributed).
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub target: SocketAddr,
    pub state: WindowState,
    /// What went wrong, in words, when `state` is not `Ok`.
    pub error: Option<String>,
    /// First probe of the window, ns since the Unix epoch.
    pub start_ns: u64,
    /// End of the window: its last probe plus one interval (for a failed
    /// window: when it was given up).
    pub end_ns: u64,
    pub interval_ns: u64,
    pub size: usize,
    pub dscp: u8,
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub lost_up: u64,
    pub lost_down: u64,
    pub lost_unattributed: u64,
    pub loss_split: Split,
    /// Replies after the loss timeout (counted in `lost`).
    pub late: u64,
    pub duplicates: u64,
    pub reordered: u64,
    /// Datagrams that were not TWAMP replies.
    pub malformed: u64,
    /// RTT net of the reflector's dwell, one sample per received probe.
    pub rtt: Histogram,
    /// |IPDV| of consecutive probes.
    pub ipdv: Histogram,
}

/// Runs probe windows against `cfg.target` until `stop` is set (or
/// `cfg.count` probes are sent); hands each window to `sink`. Returns once
/// every session thread has ended (within ~100 ms of `stop`).
pub fn run_target(
    cfg: &TargetConfig,
    stop: &Arc<AtomicBool>,
    sink: Arc<dyn Fn(Window) + Send + Sync>,
) {
    let mut remaining = cfg.count;
    let mut threads: Vec<std::thread::JoinHandle<()>> = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) && remaining != Some(0) {
        let (tx, rx) = mpsc::channel::<u64>();
        let (c, st, sk) = (cfg.clone(), stop.clone(), sink.clone());
        let count = remaining;
        let spawned = std::thread::Builder::new()
            .name(format!("wl-probe-{n}"))
            .spawn(move || {
                if let Some(w) = run_session(&c, count, &st, |sent| {
                    let _ = tx.send(sent);
                }) {
                    sk(w);
                }
            });
        n += 1;
        match spawned {
            Ok(h) => threads.push(h),
            Err(e) => {
                eprintln!("wirelens: probe {}: cannot start a thread: {e}", cfg.target);
                sleep_unless(stop, SEC);
                continue;
            }
        }
        // The next window starts when this one has sent its last
        // measurement probe, or when it failed.
        let spawned_ns = sys::now_ns();
        loop {
            match rx.recv_timeout(Duration::from_nanos(STOP_POLL_NS)) {
                Ok(sent) => {
                    if let Some(r) = remaining.as_mut() {
                        *r = r.saturating_sub(sent);
                    }
                    break;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // A failed session lasts a window; one that ended at
                    // once (a local error) must not make this loop spin.
                    if sys::now_ns().saturating_sub(spawned_ns) < SEC {
                        sleep_unless(stop, SEC);
                    }
                    break;
                }
            }
        }
        threads.retain(|t| !t.is_finished());
    }
    for t in threads {
        let _ = t.join();
    }
}

/// Sleeps `ns`, waking every 100 ms to look at `stop`.
fn sleep_unless(stop: &AtomicBool, ns: u64) {
    let end = sys::now_ns() + ns;
    while !stop.load(Ordering::Relaxed) {
        let now = sys::now_ns();
        if now >= end {
            return;
        }
        std::thread::sleep(Duration::from_nanos((end - now).min(STOP_POLL_NS)));
    }
}

fn is_unreachable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::EADDRNOTAVAIL)
    ) || matches!(
        e.kind(),
        io::ErrorKind::NetworkUnreachable | io::ErrorKind::HostUnreachable
    )
}

/// A window in which nothing came back: `sent` probes, all lost.
fn failed(
    cfg: &TargetConfig,
    state: WindowState,
    error: String,
    start_ns: u64,
    sent: u64,
    malformed: u64,
) -> Window {
    Window {
        target: cfg.target,
        state,
        error: Some(error),
        start_ns,
        end_ns: sys::now_ns().max(start_ns),
        interval_ns: cfg.interval_ns,
        size: cfg.size,
        dscp: cfg.dscp,
        sent,
        received: 0,
        lost: sent,
        lost_up: 0,
        lost_down: 0,
        lost_unattributed: sent,
        loss_split: Split::Bounded,
        late: 0,
        duplicates: 0,
        reordered: 0,
        malformed,
        rtt: Histogram::new(),
        ipdv: Histogram::new(),
    }
}

/// Opens the session's socket; `Err((state, why))`.
fn open(cfg: &TargetConfig) -> Result<UdpSocket, (WindowState, String)> {
    let v6 = cfg.target.is_ipv6();
    let bind: SocketAddr = if v6 {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let local = |what: &str, e: io::Error| (WindowState::Error, format!("{what}: {e}"));
    let sock = UdpSocket::bind(bind).map_err(|e| local("bind", e))?;
    sock.connect(cfg.target).map_err(|e| {
        if is_unreachable(&e) {
            (
                WindowState::Unreachable,
                format!("no route to {}: {e}", cfg.target),
            )
        } else {
            local("connect", e)
        }
    })?;
    sys::enable_rx_meta(&sock, v6).map_err(|e| local("enable timestamps", e))?;
    sys::set_ttl(&sock, v6, 255).map_err(|e| local("set TTL", e))?;
    if cfg.dscp > 0 {
        sys::set_tos(&sock, v6, cfg.dscp << 2).map_err(|e| local("set DSCP", e))?;
    }
    Ok(sock)
}

/// One session = one window. `measured(n)` is called once, when its `n`
/// measurement probes are all sent (not at all when the hello failed).
/// `None` when `stop` cut it short.
fn run_session(
    cfg: &TargetConfig,
    count: Option<u64>,
    stop: &AtomicBool,
    measured: impl FnOnce(u64),
) -> Option<Window> {
    let start = sys::now_ns();
    let window = cfg.window_ns.max(cfg.interval_ns).max(1);
    let sock = match open(cfg) {
        Ok(s) => s,
        Err((state, why)) => {
            // Nothing can leave for one window (then the next session opens
            // a socket again): one probe a second counts as sent and lost,
            // as the hellos of a silent target do.
            let mut tries = 1u64;
            while sys::now_ns() < start + window {
                sleep_unless(
                    stop,
                    SEC.min(start + window - sys::now_ns().min(start + window)),
                );
                if stop.load(Ordering::Relaxed) {
                    return None;
                }
                if sys::now_ns() < start + window {
                    tries += 1;
                }
            }
            return Some(failed(cfg, state, why, start, tries, 0));
        }
    };
    let scfg = SenderConfig {
        interval_ns: cfg.interval_ns,
        size: cfg.size,
        duration_ns: Some(window),
        count,
        report_interval_ns: window,
        // A silent target: one hello a second for one window.
        hello_tries: (window / SEC).clamp(3, 3600) as u32,
        min_timeout_ns: SEC,
        flush_max: 5,
        ttl: Some(255),
    };
    let mut session = SenderSession::new(scfg, start);
    let mut measured = Some(measured);
    let mut buf = Vec::with_capacity(65536);
    let mut rbuf = vec![0u8; 65536];
    let (mut refused, mut unreachable, mut local): (u64, Option<String>, Option<String>) =
        (0, None, None);
    loop {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        while session.poll_transmit(sys::now_ns(), &mut buf).is_some() {
            match sock.send(&buf) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => refused += 1,
                Err(e) if is_unreachable(&e) => unreachable = Some(e.to_string()),
                Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                    local = Some(format!(
                        "probe of {} bytes larger than the path MTU: {e}",
                        cfg.size
                    ));
                }
                // A full socket buffer: the probe counts as sent and lost.
                Err(_) => {}
            }
        }
        if session.measurement_over() {
            if let Some(f) = measured.take() {
                f(session.measurement_sent());
            }
        }
        if session.is_done() {
            break;
        }
        let Some(deadline) = session.poll_timeout() else {
            break;
        };
        let now = sys::now_ns();
        if deadline > now {
            let wait = (deadline - now).clamp(1000, STOP_POLL_NS);
            if let Err(e) = sock.set_read_timeout(Some(Duration::from_nanos(wait))) {
                return Some(failed(
                    cfg,
                    WindowState::Error,
                    format!("set timeout: {e}"),
                    start,
                    session.probes_sent(),
                    0,
                ));
            }
            match sys::recv_meta(&sock, &mut rbuf) {
                Ok(m) => {
                    let t4 = m.rx_ns.unwrap_or_else(sys::now_ns);
                    session.handle_reply(t4, &rbuf[..m.len]);
                }
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => refused += 1,
                Err(e) if is_unreachable(&e) => unreachable = Some(e.to_string()),
                Err(e) => local = Some(format!("recv: {e}")),
            }
        }
    }
    let report = session.report();
    let s = &report.summary;
    let why = || -> (WindowState, String) {
        if let Some(e) = &local {
            (WindowState::Error, e.clone())
        } else if let Some(e) = &unreachable {
            (WindowState::Unreachable, format!("{}: {e}", cfg.target))
        } else if refused > 0 {
            (
                WindowState::Refused,
                format!(
                    "{} answered with ICMP port unreachable: no reflector listens there",
                    cfg.target
                ),
            )
        } else {
            (
                WindowState::NoReply,
                format!(
                    "no reply from {}: is a TWAMP-light reflector running there?{}",
                    cfg.target,
                    if s.malformed > 0 {
                        format!(" ({} datagrams were not TWAMP replies)", s.malformed)
                    } else {
                        String::new()
                    }
                ),
            )
        }
    };
    if session.no_reply().is_some() {
        let (state, e) = why();
        return Some(failed(
            cfg,
            state,
            e,
            start,
            session.probes_sent(),
            s.malformed,
        ));
    }
    // Stateless reflector (or no anchor): the losses are unattributed.
    let up = s.lost_up.unwrap_or(0);
    let down = s.lost_down.unwrap_or(0);
    let un = s.lost.saturating_sub(up + down);
    let (state, error) = if s.received == 0 && s.sent > 0 {
        let (st, e) = why();
        // The hello was answered: a reflector is there, the path lost all
        // of this window's probes (e.g. a window of a few probes, the last
        // one of a `count=`).
        let e = if st == WindowState::NoReply {
            format!(
                "no reply to any of the {} probes of this window from {} (it answered the session's hello): 100 % loss",
                s.sent, cfg.target
            )
        } else {
            e
        };
        (st, Some(e))
    } else {
        (WindowState::Ok, None)
    };
    let duration = s.duration_ns.saturating_add(cfg.interval_ns);
    Some(Window {
        target: cfg.target,
        state,
        error,
        start_ns: s.start_ns,
        end_ns: s.start_ns.saturating_add(duration),
        interval_ns: cfg.interval_ns,
        size: s.size,
        dscp: cfg.dscp,
        sent: s.sent,
        received: s.received,
        lost: s.lost,
        lost_up: up,
        lost_down: down,
        lost_unattributed: un,
        loss_split: s.loss_split,
        late: s.late,
        duplicates: s.duplicates,
        reordered: s.reordered,
        malformed: s.malformed,
        rtt: report.rtt_histogram,
        ipdv: report.ipdv_histogram,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reflector::{self, ServeOptions};
    use std::sync::Mutex;

    /// Real sockets on loopback: a reflector thread, two 300 ms windows of
    /// 10 ms probes, nothing lost; then the closed port: a `refused` window,
    /// in bounded time, loss 100 %.
    #[test]
    fn loopback_windows_and_a_dead_target() {
        let (tx, rx) = mpsc::channel();
        let refl = std::thread::spawn(move || {
            reflector::serve(
                &ServeOptions {
                    listen: "127.0.0.1:0".parse().unwrap(),
                    allow: Vec::new(),
                    limits: reflector::Limits::default(),
                    duration: Some(Duration::from_secs(3)),
                    stateless: false,
                    verbose: false,
                },
                move |a| tx.send(a).unwrap(),
            )
            .unwrap()
        });
        let addr = rx.recv().unwrap();
        let got: Arc<Mutex<Vec<Window>>> = Arc::default();
        let g2 = got.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let cfg = TargetConfig {
            target: addr,
            interval_ns: 10 * MS,
            size: 100,
            dscp: 0,
            window_ns: 300 * MS,
            count: Some(60),
        };
        let t0 = std::time::Instant::now();
        run_target(&cfg, &stop, Arc::new(move |w| g2.lock().unwrap().push(w)));
        let ws = got.lock().unwrap().clone();
        assert!(ws.len() >= 2, "{ws:?}");
        assert_eq!(ws.iter().map(|w| w.sent).sum::<u64>(), 60);
        for w in &ws {
            assert_eq!(w.state, WindowState::Ok, "{w:?}");
            assert_eq!((w.lost, w.received), (0, w.sent));
            assert_eq!(w.rtt.count(), w.received);
            assert!(w.end_ns > w.start_ns);
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        refl.join().unwrap();

        // Nothing listens there any more.
        let got: Arc<Mutex<Vec<Window>>> = Arc::default();
        let g2 = got.clone();
        let cfg = TargetConfig {
            window_ns: SEC,
            count: None,
            ..cfg
        };
        let stop2 = Arc::new(AtomicBool::new(false));
        let s4 = stop2.clone();
        let t = std::thread::spawn(move || {
            run_target(&cfg, &s4, Arc::new(move |w| g2.lock().unwrap().push(w)));
        });
        let t0 = std::time::Instant::now();
        while got.lock().unwrap().is_empty() && t0.elapsed() < Duration::from_secs(8) {
            std::thread::sleep(Duration::from_millis(50));
        }
        stop2.store(true, Ordering::Relaxed);
        t.join().unwrap();
        assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
        let ws = got.lock().unwrap().clone();
        let w = ws.first().expect("a window for the dead target");
        // Loopback answers a closed port with ICMP port unreachable (and
        // never rate-limits it).
        assert_eq!(w.state, WindowState::Refused, "{w:?}");
        assert!(w.sent >= 3 && w.lost == w.sent && w.received == 0, "{w:?}");
        assert_eq!(w.lost_unattributed, w.sent);
        assert!(w.error.is_some());
    }
}
