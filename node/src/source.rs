//! The adapters from an AF_XDP socket (tap mode) and from the inline
//! program's header ring (gateway mode) to the pipeline's [`FrameSource`].
#![forbid(unsafe_code)]

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wirelens_dataplane::source::{Frame, FrameSource};
use wirelens_dataplane::xdp::{InlineRing, RxMode, XskSocket};

use crate::config::PollMode;
use crate::export::WorkerShared;

const LINKTYPE_ETHERNET: u32 = 1;
/// Empty busy polls in a row before [`PollMode::Adaptive`] starts waiting
/// in poll(2) (a few milliseconds of spinning).
const SPIN_BEFORE_WAIT: u32 = 20_000;
/// Longest wait in poll(2): bounds how late hand-offs from other workers
/// and the stop flag are seen while this queue is quiet.
const WAIT_MS: u32 = 1;
const STATS_EVERY: Duration = Duration::from_secs(1);

/// One queue's AF_XDP socket as a live frame source (never exhausted).
/// Frames are Ethernet, time-stamped once per batch (CLOCK_REALTIME).
///
/// Busy polling here is kernel busy polling (the socket's
/// [`XskSocket::busy_poll`]): each empty-ish poll runs the queue's NAPI on
/// the worker's own core, so the worker never spins while the kernel's
/// receive work waits for that core. Where the kernel refused it,
/// [`PollMode::Adaptive`] waits in poll(2) instead of spinning (a spinning
/// worker on the NAPI's core is what starves the fill ring); only an
/// explicit [`PollMode::Busy`] spins then.
#[derive(Debug)]
pub struct XskSource {
    sock: XskSocket,
    poll: PollMode,
    empty_polls: u32,
    calls: u32,
    last_stats: Instant,
    napi_logged: bool,
    seen_frames: bool,
    shared: Arc<WorkerShared>,
}

impl XskSource {
    pub fn new(sock: XskSocket, poll: PollMode, shared: Arc<WorkerShared>) -> XskSource {
        if let Ok(s) = sock.stats() {
            shared.set_xsk_stats(s);
        }
        XskSource {
            sock,
            poll,
            empty_polls: 0,
            calls: 0,
            last_stats: Instant::now(),
            napi_logged: false,
            seen_frames: false,
            shared,
        }
    }

    /// What this source does when busy: its placement line for the log.
    pub fn strategy(&self) -> String {
        match (self.poll, self.sock.busy_poll()) {
            (PollMode::Wait, _) => "waits in poll(2), the kernel's NAPI wakes it".into(),
            (mode, Some(budget)) => format!(
                "asks to run the queue's NAPI itself (kernel busy poll, SO_PREFER_BUSY_POLL, \
                 budget {budget}; confirmed or not at the first frames){}",
                if mode == PollMode::Adaptive {
                    "; after a quiet spell waits in poll(2)"
                } else {
                    ""
                }
            ),
            (PollMode::Busy, None) => format!(
                "spins on the rx ring (kernel busy poll refused: {}): keep NAPI off this core",
                self.sock.busy_poll_error().unwrap_or("not asked for")
            ),
            (PollMode::Adaptive, None) => format!(
                "waits in poll(2) (kernel busy poll refused: {}; spinning would starve a NAPI \
                 on this core)",
                self.sock.busy_poll_error().unwrap_or("not asked for")
            ),
        }
    }

    fn rx_mode(&self) -> RxMode {
        let wait = RxMode::Poll {
            timeout_ms: WAIT_MS,
        };
        match self.poll {
            PollMode::Busy => RxMode::BusyPoll,
            PollMode::Wait => wait,
            PollMode::Adaptive => {
                if self.sock.busy_poll().is_none()
                    || self.empty_polls >= SPIN_BEFORE_WAIT
                        && !self.shared.handoff_active.load(Ordering::Relaxed)
                {
                    wait
                } else {
                    RxMode::BusyPoll
                }
            }
        }
    }
}

impl FrameSource for XskSource {
    fn recv_batch(&mut self, f: &mut dyn FnMut(Frame<'_>)) -> io::Result<usize> {
        let mode = self.rx_mode();
        if mode != self.sock.rx_mode() {
            self.sock.set_rx_mode(mode);
        }
        let n = self.sock.recv_batch(|ts_ns, data| {
            let len = data.len() as u32;
            f(Frame {
                ts_ns,
                linktype: LINKTYPE_ETHERNET,
                data,
                orig_len: len,
                caplen: len,
            });
        })?;
        self.seen_frames |= n > 0;
        self.empty_polls = if n == 0 {
            self.empty_polls.saturating_add(1)
        } else {
            0
        };
        self.calls = self.calls.wrapping_add(1);
        if self.calls % 256 == 0 && self.last_stats.elapsed() >= STATS_EVERY {
            self.last_stats = Instant::now();
            if let Ok(s) = self.sock.stats() {
                self.shared.set_xsk_stats(s);
            }
            if !self.napi_logged && self.seen_frames {
                // Once per queue, off the per-packet path: what the first
                // frames showed.
                self.napi_logged = true;
                let core = current_cpu().map_or("?".into(), |c| c.to_string());
                let q = self.sock.queue();
                match (self.sock.napi_id(), self.sock.busy_poll()) {
                    (Some(id), Some(_)) => eprintln!(
                        "wirelens: placement: queue {q}: frames from NAPI {id}, which the \
                         worker on core {core} runs itself (kernel busy poll)"
                    ),
                    (id, _) => eprintln!(
                        "wirelens: placement: queue {q}: worker on core {core}, NAPI {}: {}",
                        id.map_or("unknown".into(), |i| i.to_string()),
                        self.strategy()
                    ),
                }
            }
        }
        Ok(n)
    }
}

/// The core the calling thread runs on (the worker is pinned: its core).
fn current_cpu() -> Option<usize> {
    let s = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Field 39 ("processor"), counted after the parenthesised name.
    let rest = &s[s.rfind(')')? + 2..];
    rest.split_whitespace().nth(36)?.parse().ok()
}

impl Drop for XskSource {
    fn drop(&mut self) {
        // The final counts, for the last scrape before exit.
        if let Ok(s) = self.sock.stats() {
            self.shared.set_xsk_stats(s);
        }
    }
}

/// The inline program's header copies as a live frame source (never
/// exhausted). Frames are Ethernet, cut at [`wirelens_dataplane::xdp::INLINE_SNAP`]
/// bytes (`orig_len` is the wire length), each stamped by the program.
///
/// Waiting follows [`PollMode`]: `busy` polls the ring without sleeping,
/// `wait` sleeps in epoll for at most 1 ms when it is empty, `adaptive`
/// polls until a quiet spell, then sleeps.
#[derive(Debug)]
pub struct InlineSource {
    ring: InlineRing,
    poll: PollMode,
    empty_polls: u32,
}

impl InlineSource {
    pub fn new(ring: InlineRing, poll: PollMode) -> InlineSource {
        InlineSource {
            ring,
            poll,
            empty_polls: 0,
        }
    }

    /// What this source does when busy: its placement line for the log.
    pub fn strategy(&self) -> String {
        match self.poll {
            PollMode::Busy => "polls the header ring without sleeping".into(),
            PollMode::Wait => "sleeps in epoll on the header ring when it is empty".into(),
            PollMode::Adaptive => {
                "polls the header ring under load, sleeps in epoll after a quiet spell".into()
            }
        }
    }
}

impl FrameSource for InlineSource {
    fn recv_batch(&mut self, f: &mut dyn FnMut(Frame<'_>)) -> io::Result<usize> {
        let wait = Duration::from_millis(u64::from(WAIT_MS));
        let wait = match self.poll {
            PollMode::Busy => None,
            PollMode::Wait => Some(wait),
            PollMode::Adaptive => (self.empty_polls >= SPIN_BEFORE_WAIT).then_some(wait),
        };
        let n = self.ring.recv_batch(wait, |ts_ns, wire_len, data| {
            f(Frame {
                ts_ns,
                linktype: LINKTYPE_ETHERNET,
                data,
                orig_len: wire_len,
                caplen: data.len() as u32,
            });
        })?;
        self.empty_polls = if n == 0 {
            self.empty_polls.saturating_add(1)
        } else {
            0
        };
        Ok(n)
    }
}
