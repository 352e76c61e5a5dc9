//! Flow deltas to a control plane (`--ctrl URL --token-file F --node NAME`).
//!
//! Each worker keeps, per live flow, what it last reported (counters and RTT
//! histograms: memory grows with the live flows, only when pushing). Every
//! `--push-secs` its [`PushTracker`] turns the change since then into a
//! [`FlowDelta`] per flow that moved (the flow's first delta carries
//! `first: true`; a flow that left the table sends its last delta and is
//! forgotten) and hands the batch to the pusher thread through a bounded
//! channel: the worker never blocks on the network. What was "last
//! reported" moves only once the batch is handed over: when the channel is
//! full the batch is kept (its exited flows) or made again next time (the
//! live flows' change since the last hand-over), so a lagging pusher delays
//! deltas and loses none. The last deltas of exited flows wait in a bounded
//! buffer ([`MAX_EXITED`] per worker); past it they are dropped and counted,
//! and the count reaches the control plane in `dropped_flows`.
//!
//! The pusher thread queues the batches into
//! [`wirelens_proto::client::Pusher`] (reports cut by encoded size below the
//! control plane's body limit, a backlog bounded in bytes by
//! `--backlog-mib`, in-order, idempotent `seq`), flushes every interval and
//! retries failures with backoff in between. With `--probe`, the probe
//! windows finished since the previous push ride in the same report.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::backlog::{BacklogCounts, DiskBacklog};
use wirelens_dataplane::engine::Engine;
use wirelens_dataplane::flow::FlowExport;
use wirelens_dataplane::interval::{direction_minus, histogram_minus};
use wirelens_dataplane::report::{Direction, FlowRecord};
use wirelens_dataplane::stats::Histogram;
use wirelens_proto::client::{PushStats, Pusher, PusherConfig};
use wirelens_proto::report::{FlowDelta, NodeMeta};

/// Batches waiting for the pusher thread, per worker.
const CHANNEL_BATCHES: usize = 4;
/// Last deltas of exited flows a worker holds between two hand-overs.
pub const MAX_EXITED: usize = 1 << 18;

/// Names a flow across exports: proto, client, server, vlan, first packet.
type FlowId = (u8, IpAddr, u16, IpAddr, u16, Option<u16>, u64);

fn flow_id(r: &FlowRecord) -> FlowId {
    (
        r.proto as u8,
        r.client.ip,
        r.client.port,
        r.server.ip,
        r.server.port,
        r.vlan,
        r.first_ns,
    )
}

/// What was last reported of one flow.
#[derive(Debug)]
struct Reported {
    c2s: Direction,
    s2c: Direction,
    rtt: [Histogram; 2],
    seen_in: u64,
}

/// Push counters the HTTP side shows.
#[derive(Debug, Default, Clone, Copy)]
pub struct PushState {
    pub stats: PushStats,
    /// Hand-overs a worker put off because the pusher thread lagged (the
    /// deltas went with a later one).
    pub batches_deferred: u64,
    /// Exited flows' last deltas dropped because [`MAX_EXITED`] were waiting
    /// (cumulative; also in `stats.dropped_flows`).
    pub exited_dropped: u64,
    /// Of `exited_dropped`, what the pusher thread has not yet counted.
    exited_dropped_uncounted: u64,
    pub errors: u64,
    /// Reports and bytes waiting to be sent (bytes in memory).
    pub backlog: usize,
    pub backlog_bytes: usize,
    /// With `--backlog-dir`: bytes of the reports there, and what it counted.
    pub disk: Option<(usize, BacklogCounts)>,
}

/// One worker's side of the push; see the [module documentation](self).
#[derive(Debug)]
pub struct PushTracker {
    every: Duration,
    last: Option<Instant>,
    round: u64,
    reported: HashMap<FlowId, Reported>,
    /// Last deltas of flows that left the table since the previous push.
    exited: Vec<FlowDelta>,
    /// Most of them held ([`MAX_EXITED`]).
    max_exited: usize,
    tx: SyncSender<Vec<FlowDelta>>,
    state: Arc<Mutex<PushState>>,
}

impl PushTracker {
    pub fn new(
        every: Duration,
        tx: SyncSender<Vec<FlowDelta>>,
        state: Arc<Mutex<PushState>>,
    ) -> PushTracker {
        PushTracker {
            every,
            last: None,
            round: 0,
            reported: HashMap::new(),
            exited: Vec::new(),
            max_exited: MAX_EXITED,
            tx,
            state,
        }
    }

    /// A flow left the table: its last delta goes with the next push.
    pub(crate) fn exited(&mut self, e: &FlowExport) {
        let id = flow_id(&e.record);
        let prev = self.reported.remove(&id);
        if let Some(d) = delta(
            &e.record,
            [&e.rtt[0], &e.rtt[1]],
            prev.as_ref(),
            e.record.last_ns,
        ) {
            if self.exited.len() >= self.max_exited {
                let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
                st.exited_dropped += 1;
                st.exited_dropped_uncounted += 1;
                return;
            }
            self.exited.push(d);
        }
    }

    /// Called at each export; pushes when `every` has passed (or `last`).
    pub(crate) fn tick(&mut self, engine: &Engine, now_ns: u64, last: bool) {
        if !last && self.last.is_some_and(|t| t.elapsed() < self.every) {
            return;
        }
        self.last = Some(Instant::now());
        let round = self.round + 1;
        let mut batch = std::mem::take(&mut self.exited);
        let n_exited = batch.len();
        // The new baseline; it replaces the old one only once the batch is
        // handed over.
        let mut next: Vec<(FlowId, Reported)> = Vec::new();
        let reported = &self.reported;
        engine.for_each_active(|f| {
            let rec = f.to_record(false);
            let id = flow_id(&rec);
            let rtt = [&f.dirs[0].rtt, &f.dirs[1].rtt];
            let prev = reported.get(&id);
            let d = delta(&rec, rtt, prev, now_ns);
            let moved = d.is_some();
            if let Some(d) = d {
                batch.push(d);
            }
            next.push((
                id,
                Reported {
                    c2s: if moved { rec.c2s } else { Direction::default() },
                    s2c: if moved { rec.s2c } else { Direction::default() },
                    rtt: if moved {
                        [rtt[0].clone(), rtt[1].clone()]
                    } else {
                        [Histogram::new(), Histogram::new()]
                    },
                    seen_in: if moved { round } else { 0 },
                },
            ));
        });
        if !batch.is_empty() {
            let sent = if last {
                // Shutting down: wait for the pusher thread rather than lose the end.
                self.tx
                    .send(batch)
                    .map_err(|e| TrySendError::Disconnected(e.0))
            } else {
                self.tx.try_send(batch)
            };
            if let Err(e) = sent {
                let (TrySendError::Full(mut b) | TrySendError::Disconnected(mut b)) = e;
                // Keep the exited flows' deltas for the next hand-over; the
                // live flows' change is made again from the old baseline.
                b.truncate(n_exited);
                self.exited = b;
                self.state
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .batches_deferred += 1;
                return;
            }
        }
        self.round = round;
        for (id, r) in next {
            if r.seen_in == round {
                self.reported.insert(id, r);
            } else if let Some(old) = self.reported.get_mut(&id) {
                // Unchanged since its last delta: keep that baseline.
                old.seen_in = round;
            }
        }
        // Flows that vanished without an export (none should): forget them.
        self.reported.retain(|_, r| r.seen_in == round);
    }
}

/// `cur` minus `prev` (counters), or `None` when nothing changed.
fn delta(
    cur: &FlowRecord,
    rtt: [&Histogram; 2],
    prev: Option<&Reported>,
    at_ns: u64,
) -> Option<FlowDelta> {
    let Some(p) = prev else {
        return Some(FlowDelta {
            at_ns: at_ns.max(1),
            first: true,
            flow: cur.clone(),
            rtt_c2s: Some(rtt[0].clone()),
            rtt_s2c: Some(rtt[1].clone()),
        });
    };
    if cur.c2s.packets == p.c2s.packets && cur.s2c.packets == p.s2c.packets {
        return None;
    }
    let h0 = histogram_minus(rtt[0], &p.rtt[0]);
    let h1 = histogram_minus(rtt[1], &p.rtt[1]);
    let mut flow = cur.clone();
    flow.c2s = direction_minus(&cur.c2s, &p.c2s, &h0);
    flow.s2c = direction_minus(&cur.s2c, &p.s2c, &h1);
    Some(FlowDelta {
        at_ns: at_ns.max(1),
        first: false,
        flow,
        rtt_c2s: Some(h0),
        rtt_s2c: Some(h1),
    })
}

/// The pusher thread: merges the workers' batches, queues them every
/// interval (cut by size into as many reports as it takes), flushes, and
/// retries failures after the pusher's backoff without waiting for the next
/// interval. With a disk backlog (and its bound in bytes) every report is
/// written there before it is queued; the reports an earlier run left there
/// go first.
pub(crate) fn pusher_thread(
    cfg: PusherConfig,
    every: Duration,
    rx: Receiver<Vec<FlowDelta>>,
    state: Arc<Mutex<PushState>>,
    probes: Option<Arc<crate::probes::ProbeBoard>>,
    disk: Option<(DiskBacklog, usize)>,
) {
    let mut pusher = Pusher::new(cfg);
    let mut disk_counts = None;
    if let Some((b, max)) = disk {
        disk_counts = Some(b.counts());
        pusher = pusher.with_spool(Box::new(b), max);
        if pusher.backlog() > 0 {
            crate::log(format!(
                "push: {} reports ({} KiB) an earlier run left in the backlog directory go first",
                pusher.backlog(),
                pusher.spooled_bytes() >> 10
            ));
        }
    }
    let mut pending: Vec<FlowDelta> = Vec::new();
    let mut last_send = Instant::now();
    let mut retry_at: Option<Instant> = None;
    let mut warned = false;
    loop {
        let mut wake = last_send + every;
        if let Some(t) = retry_at {
            wake = wake.min(t);
        }
        let timeout = wake.saturating_duration_since(Instant::now());
        let closed = match rx.recv_timeout(timeout.max(Duration::from_millis(10))) {
            Ok(mut b) => {
                pending.append(&mut b);
                false
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => false,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => true,
        };
        let interval = last_send.elapsed() >= every;
        let retry = retry_at.is_some_and(|t| Instant::now() >= t);
        if !closed && !interval && !retry {
            continue;
        }
        {
            let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
            pusher.count_dropped(std::mem::take(&mut st.exited_dropped_uncounted));
        }
        if interval || closed {
            last_send = Instant::now();
            let windows = probes
                .as_ref()
                .map(|b| b.take_pending())
                .unwrap_or_default();
            if !pending.is_empty() || !windows.is_empty() {
                let at = crate::export::now_ns();
                pusher.enqueue_with_probes(std::mem::take(&mut pending), windows, at);
            }
        }
        let r = if closed {
            // Last chance: a few seconds of retries, then what is left is gone.
            pusher.flush_until(Instant::now() + Duration::from_secs(5))
        } else {
            pusher.flush()
        };
        retry_at = pusher.retry_in().map(|d| Instant::now() + d);
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        match r {
            Ok(_) => warned = false,
            Err(e) => {
                st.errors += 1;
                if !warned {
                    eprintln!(
                        "wirelens: push: {e} (keeping up to the backlog, {} MiB, retrying)",
                        pusher.config().backlog_bytes >> 20
                    );
                    warned = true;
                }
            }
        }
        if pusher.stats().spool_write_errors > st.stats.spool_write_errors {
            eprintln!(
                "wirelens: push: the backlog directory did not take {} report(s) (a full or \
                 failing disk?): held in memory only (wirelens_push_backlog_write_errors_total)",
                pusher.stats().spool_write_errors - st.stats.spool_write_errors
            );
        }
        st.stats = pusher.stats();
        st.backlog = pusher.backlog();
        st.backlog_bytes = pusher.backlog_bytes();
        st.disk = disk_counts.as_ref().map(|c| {
            let c = *c.lock().unwrap_or_else(|e| e.into_inner());
            (pusher.spooled_bytes(), c)
        });
        drop(st);
        if closed {
            if disk_counts.is_some() && pusher.backlog() > 0 {
                crate::log(format!(
                    "push: {} reports kept in the backlog directory for the next start",
                    pusher.backlog()
                ));
            }
            break;
        }
    }
}

/// The control-plane side of a node's settings.
pub(crate) fn pusher_config(
    c: &crate::config::CtrlConfig,
    token: String,
    iface: &str,
    timeout: Duration,
) -> PusherConfig {
    PusherConfig {
        url: c.url.clone(),
        node: c.node.clone(),
        token,
        instance: crate::export::now_ns(),
        meta: NodeMeta {
            version: env!("CARGO_PKG_VERSION").to_string(),
            mode: "run".into(),
            source: iface.to_string(),
            hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_string()),
        },
        backlog_bytes: c.backlog_bytes,
        timeout,
        encoding: c.encoding,
    }
}

/// The channel the workers' trackers send on.
pub(crate) fn channel() -> (SyncSender<Vec<FlowDelta>>, Receiver<Vec<FlowDelta>>) {
    std::sync::mpsc::sync_channel(CHANNEL_BATCHES)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use wirelens_dataplane::engine::EngineConfig;
    use wirelens_dataplane::source::synthetic::{Synthetic, SyntheticConfig};
    use wirelens_dataplane::wire::LinkType;

    pub(crate) fn engine_with_flows(flows: usize, frames: u64) -> Engine {
        let mut g = Synthetic::new(SyntheticConfig {
            flows,
            ..SyntheticConfig::default()
        })
        .unwrap();
        let mut e = Engine::new(EngineConfig::default());
        for _ in 0..frames {
            let f = g.next_frame().unwrap();
            e.handle_frame(f.ts_ns, LinkType::Ethernet, f.data);
        }
        e
    }

    fn tracker(cap: usize) -> (PushTracker, Receiver<Vec<FlowDelta>>, Arc<Mutex<PushState>>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(cap);
        let st = Arc::new(Mutex::new(PushState::default()));
        (PushTracker::new(Duration::ZERO, tx, st.clone()), rx, st)
    }

    #[test]
    fn a_full_channel_defers_the_batch_and_loses_nothing() {
        let e = engine_with_flows(50, 2000);
        let live = e.table().len();
        assert!(live > 10, "{live}");
        let (mut t, rx, st) = tracker(1);
        // The pusher lags: the channel holds a batch already.
        t.tx.try_send(Vec::new()).unwrap();
        t.tick(&e, 5, false);
        assert_eq!(st.lock().unwrap().batches_deferred, 1);
        assert!(t.reported.is_empty(), "the baseline did not move");
        rx.try_recv().unwrap();
        // Next time every live flow goes, as its first delta.
        t.tick(&e, 6, false);
        let b = rx.try_recv().unwrap();
        assert_eq!(b.len(), live);
        assert!(b.iter().all(|d| d.first));
        assert_eq!(t.reported.len(), live);
        // Nothing moved since: nothing to send.
        t.tick(&e, 7, false);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn exited_deltas_are_bounded_and_the_rest_counted() {
        let mut e = engine_with_flows(20, 500);
        let (mut t, rx, st) = tracker(1);
        t.max_exited = 5;
        e.finish();
        let mut n = 0;
        while let Some(x) = e.poll_export() {
            t.exited(&x);
            n += 1;
        }
        assert!(n > 5, "{n}");
        assert_eq!(t.exited.len(), 5);
        assert_eq!(st.lock().unwrap().exited_dropped, n - 5);
        // A deferred hand-over keeps them.
        t.tx.try_send(Vec::new()).unwrap();
        t.tick(&e, 5, false);
        assert_eq!(t.exited.len(), 5);
        rx.try_recv().unwrap();
        t.tick(&e, 6, false);
        assert_eq!(rx.try_recv().unwrap().len(), 5);
        assert!(t.exited.is_empty());
    }
}
