//! `--probe TARGET`: TWAMP-light probes from the daemon to reflectors.
//!
//! One thread per target (plus one per live session, see
//! [`wirelens_probe::monitor`]), never the packet loop, pinned to the cores
//! the workers do not get (when there is one left; they sleep in `recv`
//! nearly all the time). Each finished window goes into the
//! target's slot of the [`ProbeBoard`]: cumulative counters and RTT
//! histogram, and the latest window, for `/metrics`; and, when pushing to
//! a control plane, into a bounded queue the pusher thread empties into the
//! next report's probe section.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use wirelens_dataplane::stats::Histogram;
use wirelens_probe::monitor::{self, TargetConfig, Window, WindowState};
use wirelens_proto::report::{ProbeState, ProbeWindow};

/// Windows kept for the pusher while the control plane lags (oldest dropped).
const MAX_PENDING: usize = 10_000;

/// Cumulative counters of one target.
#[derive(Debug, Default, Clone)]
pub struct ProbeTotals {
    pub windows: u64,
    /// Windows by [`WindowState`] (index = position in `WindowState::ALL`).
    pub by_state: [u64; 5],
    pub sent: u64,
    pub received: u64,
    pub lost_up: u64,
    pub lost_down: u64,
    pub lost_unattributed: u64,
    pub late: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub malformed: u64,
    pub rtt: Histogram,
}

/// What `/metrics` shows of one target.
#[derive(Debug, Clone)]
pub struct TargetSlot {
    pub cfg: TargetConfig,
    pub totals: ProbeTotals,
    pub last: Option<Window>,
}

/// The probe results the HTTP side and the pusher read.
#[derive(Debug)]
pub struct ProbeBoard {
    slots: Vec<Mutex<TargetSlot>>,
    /// `None`: not pushing.
    pending: Option<Mutex<VecDeque<Window>>>,
    dropped: Mutex<u64>,
}

impl ProbeBoard {
    pub fn new(targets: &[TargetConfig], push: bool) -> ProbeBoard {
        ProbeBoard {
            slots: targets
                .iter()
                .map(|c| {
                    Mutex::new(TargetSlot {
                        cfg: c.clone(),
                        totals: ProbeTotals::default(),
                        last: None,
                    })
                })
                .collect(),
            pending: push.then(|| Mutex::new(VecDeque::new())),
            dropped: Mutex::new(0),
        }
    }

    /// A finished window of target `i`.
    pub fn record(&self, i: usize, w: Window) {
        if let Some(slot) = self.slots.get(i) {
            let mut s = slot.lock().unwrap_or_else(|e| e.into_inner());
            let t = &mut s.totals;
            t.windows += 1;
            if let Some(k) = WindowState::ALL.iter().position(|&x| x == w.state) {
                t.by_state[k] += 1;
            }
            t.sent += w.sent;
            t.received += w.received;
            t.lost_up += w.lost_up;
            t.lost_down += w.lost_down;
            t.lost_unattributed += w.lost_unattributed;
            t.late += w.late;
            t.duplicates += w.duplicates;
            t.reordered += w.reordered;
            t.malformed += w.malformed;
            t.rtt.merge(&w.rtt);
            // Log changes of state only, not every window.
            let before = s.last.as_ref().map(|l| l.state);
            if before != Some(w.state) && (before.is_some() || w.state != WindowState::Ok) {
                eprintln!(
                    "wirelens: probe {}: {}{}",
                    w.target,
                    w.state.as_str(),
                    match &w.error {
                        Some(e) => format!(": {e}"),
                        None => format!(" ({} of {} probes answered)", w.received, w.sent),
                    }
                );
            }
            s.last = Some(w.clone());
        }
        if let Some(p) = &self.pending {
            let mut q = p.lock().unwrap_or_else(|e| e.into_inner());
            if q.len() >= MAX_PENDING {
                q.pop_front();
                *self.dropped.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            }
            q.push_back(w);
        }
    }

    /// Copies of every target's slot.
    pub fn slots(&self) -> Vec<TargetSlot> {
        self.slots
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect()
    }

    /// The windows not pushed yet, as report records.
    pub fn take_pending(&self) -> Vec<ProbeWindow> {
        match &self.pending {
            Some(p) => std::mem::take(&mut *p.lock().unwrap_or_else(|e| e.into_inner()))
                .iter()
                .map(to_report)
                .collect(),
            None => Vec::new(),
        }
    }

    /// Windows dropped because the pusher lagged.
    pub fn dropped(&self) -> u64 {
        *self.dropped.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A window as the report's probe section carries it.
pub fn to_report(w: &Window) -> ProbeWindow {
    ProbeWindow {
        target: w.target.to_string(),
        start_ns: w.start_ns.max(1),
        end_ns: w.end_ns.max(w.start_ns.max(1)),
        interval_ns: w.interval_ns,
        size: u32::try_from(w.size).unwrap_or(u32::MAX),
        dscp: w.dscp,
        state: match w.state {
            WindowState::Ok => ProbeState::Ok,
            WindowState::NoReply => ProbeState::NoReply,
            WindowState::Refused => ProbeState::Refused,
            WindowState::Unreachable => ProbeState::Unreachable,
            WindowState::Error => ProbeState::Error,
        },
        error: w.error.as_ref().map(|e| {
            let mut e = e.clone();
            if e.len() > wirelens_proto::report::MAX_PROBE_ERROR_LEN {
                let mut cut = wirelens_proto::report::MAX_PROBE_ERROR_LEN;
                while !e.is_char_boundary(cut) {
                    cut -= 1;
                }
                e.truncate(cut);
            }
            e
        }),
        sent: w.sent,
        received: w.received,
        lost: w.lost,
        lost_up: w.lost_up,
        lost_down: w.lost_down,
        lost_unattributed: w.lost_unattributed,
        late: w.late,
        duplicates: w.duplicates,
        reordered: w.reordered,
        rtt: w.rtt.clone(),
        ipdv: w.ipdv.clone(),
    }
}

/// Starts one prober thread per target, pinned to `cores` when given (its
/// session threads inherit that); they end when `stop` is set.
pub fn start(
    board: &Arc<ProbeBoard>,
    targets: &[TargetConfig],
    stop: &Arc<AtomicBool>,
    cores: Option<Vec<usize>>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    let mut out = Vec::new();
    for (i, cfg) in targets.iter().enumerate() {
        let (b, st, c) = (board.clone(), stop.clone(), cfg.clone());
        let cores = cores.clone();
        let h = std::thread::Builder::new()
            .name(format!("wirelens-probe-{i}"))
            .spawn(move || {
                if let Some(cores) = &cores {
                    if let Err(e) = crate::sys::restrict_to_cores(cores) {
                        eprintln!(
                            "wirelens: probe {}: cannot pin to cores {cores:?}: {e}",
                            c.target
                        );
                    }
                }
                let sink: Arc<dyn Fn(Window) + Send + Sync> = {
                    let b = b.clone();
                    Arc::new(move |w: Window| b.record(i, w))
                };
                monitor::run_target(&c, &st, sink);
            });
        match h {
            Ok(h) => out.push(h),
            Err(e) => {
                stop.store(true, Ordering::SeqCst);
                for h in out {
                    let _ = h.join();
                }
                return Err(e);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wirelens_probe::session::Split;

    fn win(sent: u64, rtts: &[u64], up: u64, down: u64, state: WindowState) -> Window {
        let mut rtt = Histogram::new();
        for &r in rtts {
            rtt.record(r);
        }
        let received = rtts.len() as u64;
        let lost = sent - received;
        Window {
            target: "198.18.2.2:862".parse().unwrap(),
            state,
            error: (state != WindowState::Ok).then(|| "x".repeat(2000)),
            start_ns: 10,
            end_ns: 20,
            interval_ns: 1,
            size: 128,
            dscp: 0,
            sent,
            received,
            lost,
            lost_up: up,
            lost_down: down,
            lost_unattributed: lost - up - down,
            loss_split: Split::Exact,
            late: 0,
            duplicates: 0,
            reordered: 0,
            malformed: 0,
            rtt,
            ipdv: Histogram::new(),
        }
    }

    /// The board adds windows up; what it hands the pusher passes the
    /// control plane's validation (a long error is cut to the limit).
    #[test]
    fn board_totals_and_pending_windows_are_valid_reports() {
        let cfg = TargetConfig {
            target: "198.18.2.2:862".parse().unwrap(),
            interval_ns: 1,
            size: 128,
            dscp: 0,
            window_ns: 10,
            count: None,
        };
        let b = ProbeBoard::new(&[cfg], true);
        b.record(0, win(10, &[5, 6, 7, 8, 9, 10, 11], 2, 1, WindowState::Ok));
        b.record(0, win(4, &[], 0, 0, WindowState::NoReply));
        let s = &b.slots()[0];
        assert_eq!((s.totals.sent, s.totals.received), (14, 7));
        assert_eq!(
            (
                s.totals.lost_up,
                s.totals.lost_down,
                s.totals.lost_unattributed
            ),
            (2, 1, 4)
        );
        assert_eq!(s.totals.by_state, [1, 1, 0, 0, 0]);
        assert_eq!(s.totals.rtt.count(), 7);
        assert_eq!(s.last.as_ref().unwrap().state, WindowState::NoReply);
        let p = b.take_pending();
        assert_eq!(p.len(), 2);
        for w in &p {
            assert_eq!(w.check(), Ok(()), "{w:?}");
        }
        assert!(b.take_pending().is_empty());
        // Not pushing: nothing queued.
        let quiet = ProbeBoard::new(&[], false);
        quiet.record(0, win(1, &[1], 0, 0, WindowState::Ok));
        assert!(quiet.take_pending().is_empty());
    }
}
