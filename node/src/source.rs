//! The adapter from an AF_XDP socket to the pipeline's [`FrameSource`].
#![forbid(unsafe_code)]

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wirelens_dataplane::source::{Frame, FrameSource};
use wirelens_dataplane::xdp::{RxMode, XskSocket};

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
#[derive(Debug)]
pub struct XskSource {
    sock: XskSocket,
    poll: PollMode,
    empty_polls: u32,
    calls: u32,
    last_stats: Instant,
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
            shared,
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
                if self.empty_polls >= SPIN_BEFORE_WAIT
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
        }
        Ok(n)
    }
}

impl Drop for XskSource {
    fn drop(&mut self) {
        // The final counts, for the last scrape before exit.
        if let Ok(s) = self.sock.stats() {
            self.shared.set_xsk_stats(s);
        }
    }
}
