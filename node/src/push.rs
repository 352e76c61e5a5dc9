//! Flow deltas to a control plane (`--ctrl URL --token-file F --node NAME`).
//!
//! Each worker keeps, per live flow, what it last reported (counters and RTT
//! histograms: memory grows with the live flows, only when pushing). Every
//! `--push-secs` its [`PushTracker`] turns the change since then into a
//! [`FlowDelta`] per flow that moved (the flow's first delta carries
//! `first: true`; a flow that left the table sends its last delta and is
//! forgotten) and hands the batch to the pusher thread through a bounded
//! channel: the worker never blocks on the network. The pusher thread
//! queues the batches into [`wirelens_ctrl::client::Pusher`] (bounded
//! backlog, in-order, idempotent `seq`) and flushes. With `--probe`, the
//! probe windows finished since the previous push ride in the same report.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wirelens_ctrl::client::{PushStats, Pusher, PusherConfig};
use wirelens_ctrl::report::{FlowDelta, NodeMeta};
use wirelens_dataplane::engine::Engine;
use wirelens_dataplane::flow::FlowExport;
use wirelens_dataplane::report::{Direction, FlowRecord, Rtt};
use wirelens_dataplane::stats::Histogram;

/// Batches waiting for the pusher thread, per worker.
const CHANNEL_BATCHES: usize = 4;

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
    /// Batches a worker dropped because the pusher thread lagged.
    pub batches_dropped: u64,
    pub errors: u64,
    pub backlog: usize,
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
            self.exited.push(d);
        }
    }

    /// Called at each export; pushes when `every` has passed (or `last`).
    pub(crate) fn tick(&mut self, engine: &Engine, now_ns: u64, last: bool) {
        if !last && self.last.is_some_and(|t| t.elapsed() < self.every) {
            return;
        }
        self.last = Some(Instant::now());
        self.round += 1;
        let round = self.round;
        let mut batch = std::mem::take(&mut self.exited);
        let reported = &mut self.reported;
        engine.for_each_active(|f| {
            let rec = f.to_record(false);
            let id = flow_id(&rec);
            let rtt = [&f.dirs[0].rtt, &f.dirs[1].rtt];
            let prev = reported.get(&id);
            if let Some(d) = delta(&rec, rtt, prev, now_ns) {
                batch.push(d);
            }
            reported.insert(
                id,
                Reported {
                    c2s: rec.c2s,
                    s2c: rec.s2c,
                    rtt: [rtt[0].clone(), rtt[1].clone()],
                    seen_in: round,
                },
            );
        });
        // Flows that vanished without an export (none should): forget them.
        reported.retain(|_, r| r.seen_in == round);
        if batch.is_empty() {
            return;
        }
        match self.tx.try_send(batch) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.state
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .batches_dropped += 1;
            }
        }
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

fn direction_minus(c: &Direction, p: &Direction, rtt: &Histogram) -> Direction {
    Direction {
        packets: c.packets.saturating_sub(p.packets),
        bytes: c.bytes.saturating_sub(p.bytes),
        payload_bytes: c.payload_bytes.saturating_sub(p.payload_bytes),
        syn: c.syn.saturating_sub(p.syn),
        synack: c.synack.saturating_sub(p.synack),
        fin: c.fin.saturating_sub(p.fin),
        rst: c.rst.saturating_sub(p.rst),
        retrans_seen: c.retrans_seen.saturating_sub(p.retrans_seen),
        hole_fill: c.hole_fill.saturating_sub(p.hole_fill),
        gaps: c.gaps.saturating_sub(p.gaps),
        out_of_order: c.out_of_order.saturating_sub(p.out_of_order),
        retransmits: c.retransmits.saturating_sub(p.retransmits),
        fast_retransmits: c.fast_retransmits.saturating_sub(p.fast_retransmits),
        spurious_retransmits: c
            .spurious_retransmits
            .saturating_sub(p.spurious_retransmits),
        rto_retransmits: c.rto_retransmits.saturating_sub(p.rto_retransmits),
        dup_acks: c.dup_acks.saturating_sub(p.dup_acks),
        zero_window: c.zero_window.saturating_sub(p.zero_window),
        zero_window_events: c.zero_window_events.saturating_sub(p.zero_window_events),
        zero_window_ns: c.zero_window_ns.saturating_sub(p.zero_window_ns),
        ecn_ce: c.ecn_ce.saturating_sub(p.ecn_ce),
        frags: c.frags.saturating_sub(p.frags),
        rtt: rtt_of(rtt, c.rtt.last_ns),
        // A maximum cannot be split into intervals: the flow's so far.
        burst: c.burst,
    }
}

fn rtt_of(h: &Histogram, last: Option<u64>) -> Rtt {
    if h.is_empty() {
        return Rtt::default();
    }
    Rtt {
        n: h.count(),
        min_ns: h.min(),
        p50_ns: h.quantile(0.5),
        p90_ns: h.quantile(0.9),
        p99_ns: h.quantile(0.99),
        max_ns: h.max(),
        mean_ns: h.mean(),
        last_ns: last,
    }
}

/// The samples of `cur` that `prev` (an earlier state of the same
/// histogram) did not have, bucket by bucket. Bucket counts are exact; each
/// new sample is placed at its bucket's low end, so min/max/sum of the
/// result are as precise as the buckets.
pub fn histogram_minus(cur: &Histogram, prev: &Histogram) -> Histogram {
    let mut out = Histogram::new();
    let mut old = prev.buckets().peekable();
    for b in cur.buckets() {
        while old.peek().is_some_and(|o| o.low < b.low) {
            old.next();
        }
        let before = match old.peek() {
            Some(o) if o.low == b.low => o.count,
            _ => 0,
        };
        out.record_n(b.low, b.count.saturating_sub(before));
    }
    out
}

/// The pusher thread: merges the workers' batches, one report per interval.
pub(crate) fn pusher_thread(
    cfg: PusherConfig,
    every: Duration,
    rx: Receiver<Vec<FlowDelta>>,
    state: Arc<Mutex<PushState>>,
    probes: Option<Arc<crate::probes::ProbeBoard>>,
) {
    let mut pusher = Pusher::new(cfg);
    let mut pending: Vec<FlowDelta> = Vec::new();
    let mut last_send = Instant::now();
    let mut warned = false;
    loop {
        let timeout = every.saturating_sub(last_send.elapsed());
        let closed = match rx.recv_timeout(timeout.max(Duration::from_millis(10))) {
            Ok(mut b) => {
                pending.append(&mut b);
                false
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => false,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => true,
        };
        if !closed && last_send.elapsed() < every {
            continue;
        }
        last_send = Instant::now();
        let mut windows = probes
            .as_ref()
            .map(|b| b.take_pending())
            .unwrap_or_default();
        if !pending.is_empty() || !windows.is_empty() {
            let at = crate::export::now_ns();
            let flows = std::mem::take(&mut pending);
            let mut chunks = flows.chunks(wirelens_ctrl::report::MAX_FLOWS_PER_REPORT);
            // The probe windows go with the first report of the interval.
            let first = chunks.next().map(<[FlowDelta]>::to_vec).unwrap_or_default();
            while windows.len() > wirelens_ctrl::report::MAX_PROBES_PER_REPORT {
                let rest = windows.split_off(wirelens_ctrl::report::MAX_PROBES_PER_REPORT);
                pusher.enqueue_with_probes(Vec::new(), windows, at);
                windows = rest;
            }
            pusher.enqueue_with_probes(first, windows, at);
            for chunk in chunks {
                pusher.enqueue(chunk.to_vec(), at);
            }
        }
        let r = pusher.flush();
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        match r {
            Ok(_) => warned = false,
            Err(e) => {
                st.errors += 1;
                if !warned {
                    eprintln!("wirelens: push: {e} (keeping up to the backlog, retrying)");
                    warned = true;
                }
            }
        }
        st.stats = pusher.stats();
        st.backlog = pusher.backlog();
        drop(st);
        if closed {
            break;
        }
    }
}

/// The control-plane side of a node's settings.
pub(crate) fn pusher_config(
    url: &str,
    node: &str,
    token: String,
    iface: &str,
    timeout: Duration,
) -> PusherConfig {
    PusherConfig {
        url: url.to_string(),
        node: node.to_string(),
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
        backlog: 64,
        timeout,
    }
}

/// The channel the workers' trackers send on.
pub(crate) fn channel() -> (SyncSender<Vec<FlowDelta>>, Receiver<Vec<FlowDelta>>) {
    std::sync::mpsc::sync_channel(CHANNEL_BATCHES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_difference_counts_only_new_samples() {
        let mut a = Histogram::new();
        for v in [1_000, 2_000_000, 2_000_000, 50_000_000] {
            a.record(v);
        }
        let mut b = a.clone();
        for v in [2_000_000, 70_000_000, 900] {
            b.record(v);
        }
        let d = histogram_minus(&b, &a);
        assert_eq!(d.count(), 3);
        let q = |h: &Histogram, x: f64| h.quantile(x).unwrap();
        assert!(q(&d, 0.0) <= 900, "{d:?}");
        assert!((q(&d, 0.5) as f64 / 2e6 - 1.0).abs() < 0.02, "{d:?}");
        assert!((d.max().unwrap() as f64 / 7e7 - 1.0).abs() < 0.02, "{d:?}");
        assert!(histogram_minus(&a, &a).is_empty());
    }
}
