//! Export without stopping the workers.
//!
//! Each worker owns its engine; nobody else may touch it. The pipeline calls
//! [`ExportHook::between_batches`] on the worker's own thread every few
//! loop iterations. About once a second ([`NodeConfig::export_every`]) the
//! hook
//! 1. expires idle flows on wall-clock time ([`Engine::poll_expired`]),
//! 2. takes the flows that left the table ([`Engine::poll_export`]) into a
//!    bounded ring of recently closed flows and into the next batch,
//! 3. hands an [`ExportBatch`] (counters, summary, the records and RTT
//!    histograms of the flows that left and of the live flows) to its
//!    [`ExportAggregator`] thread through a bounded channel, never waiting.
//!    The aggregator does the heavy part off the packet thread: the
//!    per-service totals (an RTT-histogram merge per flow); then it
//!    publishes a [`WorkerSnapshot`] into the worker's [`WorkerShared`]
//!    slot: one `Mutex` swap of an `Arc`, once a second. Never a lock per
//!    packet. Should the aggregator lag (channel full), the worker keeps the
//!    exits for the next batch (no flow is lost from the totals), skips
//!    that second's live view and counts it (`export_skipped`).
//!
//! What stays on the worker, because only it may read its engine: a record
//! and two histogram copies per live flow per export (and the push
//! trackers' deltas with `--ctrl` and `--ipfix`). `/metrics` shows what it costs
//! (`wirelens_worker_export_seconds` / `_export_flows`).
//!
//! `/flows` wants the flow records themselves, which cost a record per live
//! flow to build: the HTTP side hands every worker a [`FlowsRequest`]
//! ([`WorkerShared::request_flows`]), a bounded channel of chunks. At each
//! hook call the worker builds one chunk per open request (the live flows
//! of at most [`FLOWS_CHUNK`] table slots, then the recently closed flows,
//! [`FLOWS_CHUNK`] at a time), only when the channel has room: a slow
//! client pauses the walk (resumed at a later hook call), never the worker.
//! The walk is a moving view: a flow that comes or goes during a request
//! may be missed or seen twice (once live, once closed); a table that does
//! not change yields every record exactly once.
//!
//! [`NodeConfig::export_every`]: crate::NodeConfig::export_every
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use wirelens_dataplane::engine::Engine;
use wirelens_dataplane::pipeline::{WorkerContext, WorkerCounters, WorkerHook};
use wirelens_dataplane::report::{FlowRecord, Summary};
use wirelens_dataplane::stats::Histogram;
use wirelens_dataplane::xdp::XskStats;

use crate::push::PushTracker;
use crate::services::ServiceTable;

/// Table slots scanned for idle flows per export (the engine also expires a
/// bounded amount by itself every 1024 packets).
const EXPIRE_BUDGET: usize = 1 << 16;

/// Table slots (or closed records) one `/flows` chunk covers: what one hook
/// call spends per open request.
pub const FLOWS_CHUNK: usize = 4096;

pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// What one worker published at its last export.
#[derive(Clone, Debug)]
pub struct WorkerSnapshot {
    /// When (ns since the epoch); 0: nothing published yet.
    pub at_ns: u64,
    pub counters: WorkerCounters,
    pub summary: Summary,
    pub active_flows: u64,
    /// Closed flows kept for `/flows`, and those pushed out of the ring.
    pub closed_kept: u64,
    pub closed_dropped: u64,
    /// Exited flows' totals plus the live flows.
    pub services: ServiceTable,
}

/// One `/flows` request as a worker sees it: where its chunks go. The
/// worker drops `tx` when its walk is done (or the receiver is gone).
#[derive(Debug)]
pub struct FlowsRequest {
    pub id: u64,
    pub tx: mpsc::Sender<Vec<FlowRecord>>,
}

/// Where a worker's walk for one request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FlowsCursor {
    /// The next table slot.
    Slot(usize),
    /// The sequence number of the next closed record (see
    /// `ExportHook::closed_popped`).
    Closed(u64),
}

#[derive(Debug)]
struct FlowsStream {
    tx: mpsc::Sender<Vec<FlowRecord>>,
    next: FlowsCursor,
}

/// The slots one worker shares with the HTTP side.
#[derive(Debug)]
pub struct WorkerShared {
    /// The rx queue this worker reads.
    pub queue: u32,
    snapshot: Mutex<Arc<WorkerSnapshot>>,
    /// `/flows` requests the worker has not taken up yet; `flows_asked`
    /// says there are some (the hook locks only then).
    flows_pending: Mutex<Vec<FlowsRequest>>,
    flows_asked: AtomicBool,
    /// The AF_XDP socket's drop counters (written by the frame source).
    xsk: Mutex<Option<XskStats>>,
    /// Set by the hook while hand-off metas arrive from other workers:
    /// the adaptive source must not sleep in poll(2) then.
    pub(crate) handoff_active: AtomicBool,
    /// What the periodic export (and `/flows`) cost this worker's thread:
    /// wall time in the hook's export work, the live flows it walked, and
    /// the longest single export (how long the worker left its queue).
    pub export_ns: AtomicU64,
    pub export_flows: AtomicU64,
    pub export_max_ns: AtomicU64,
    /// Exports the aggregator could not take (it lagged): that second's
    /// live view was skipped, the exits went with the next one.
    pub export_skipped: AtomicU64,
}

impl WorkerShared {
    pub fn new(queue: u32, max_services: usize) -> WorkerShared {
        WorkerShared {
            queue,
            snapshot: Mutex::new(Arc::new(WorkerSnapshot {
                at_ns: 0,
                counters: WorkerCounters::default(),
                summary: Summary::default(),
                active_flows: 0,
                closed_kept: 0,
                closed_dropped: 0,
                services: ServiceTable::new(max_services),
            })),
            flows_pending: Mutex::new(Vec::new()),
            flows_asked: AtomicBool::new(false),
            xsk: Mutex::new(None),
            handoff_active: AtomicBool::new(false),
            export_ns: AtomicU64::new(0),
            export_flows: AtomicU64::new(0),
            export_max_ns: AtomicU64::new(0),
            export_skipped: AtomicU64::new(0),
        }
    }

    /// The last published snapshot.
    pub fn snapshot(&self) -> Arc<WorkerSnapshot> {
        self.snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Asks the worker to stream its flow records into `req.tx`.
    pub fn request_flows(&self, req: FlowsRequest) {
        let mut p = self.flows_pending.lock().unwrap_or_else(|e| e.into_inner());
        p.push(req);
        self.flows_asked.store(true, Ordering::Release);
    }

    /// Whether request `id` still waits for the worker to take it up.
    pub fn flows_pending(&self, id: u64) -> bool {
        self.flows_pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|r| r.id == id)
    }

    /// Withdraws request `id` if the worker has not taken it up.
    pub fn cancel_flows(&self, id: u64) {
        self.flows_pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|r| r.id != id);
    }

    /// The requests to take up (none unless [`WorkerShared::request_flows`]
    /// added some since the last call).
    fn take_flows_requests(&self) -> Vec<FlowsRequest> {
        if !self.flows_asked.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut p = self.flows_pending.lock().unwrap_or_else(|e| e.into_inner());
        self.flows_asked.store(false, Ordering::Relaxed);
        std::mem::take(&mut *p)
    }

    pub fn xsk_stats(&self) -> Option<XskStats> {
        *self.xsk.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_xsk_stats(&self, s: XskStats) {
        *self.xsk.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
    }

    /// Adds one export's cost (see [`WorkerShared::export_ns`]).
    fn add_export(&self, started: Instant, flows: usize) {
        let ns = started.elapsed().as_nanos() as u64;
        self.export_ns.fetch_add(ns, Ordering::Relaxed);
        self.export_flows.fetch_add(flows as u64, Ordering::Relaxed);
        self.export_max_ns.fetch_max(ns, Ordering::Relaxed);
    }
}

/// The per-worker export hook; see the [module documentation](self).
#[derive(Debug)]
pub struct ExportHook {
    shared: Arc<WorkerShared>,
    every: Duration,
    last_export: Option<Instant>,
    received_seen: u64,
    /// The `/flows` walks under way.
    flows: Vec<FlowsStream>,
    closed: VecDeque<FlowRecord>,
    closed_cap: usize,
    closed_dropped: u64,
    /// Records popped off the front of `closed`: the record at index `i`
    /// is closed record number `closed_popped + i`.
    closed_popped: u64,
    /// Flows that left the table since the last batch the aggregator took.
    exits: Vec<Contribution>,
    tx: SyncSender<ExportBatch>,
    push: Option<PushTracker>,
    /// `--ipfix`: a second tracker of the same deltas, ticked at every export.
    ipfix: Option<PushTracker>,
}

/// A flow's record and RTT histograms [c2s, s2c]: what it adds to its
/// service.
type Contribution = (FlowRecord, [Histogram; 2]);

/// Batches waiting for one worker's aggregator.
const AGGREGATOR_BATCHES: usize = 2;

/// What a worker hands its [`ExportAggregator`] once a second.
#[derive(Debug)]
pub struct ExportBatch {
    /// Everything but `services`, which the aggregator fills in.
    snap: WorkerSnapshot,
    exits: Vec<Contribution>,
    active: Vec<Contribution>,
}

/// The thread side of one worker's export: per-service totals of the
/// flows that left its table, plus its live flows, published as the
/// worker's [`WorkerSnapshot`]. Run it with [`ExportAggregator::run`] on a
/// thread of its own; it ends when its [`ExportHook`] is dropped, after the
/// last batch.
#[derive(Debug)]
pub struct ExportAggregator {
    shared: Arc<WorkerShared>,
    rx: Receiver<ExportBatch>,
    exited: ServiceTable,
}

impl ExportAggregator {
    pub fn run(mut self) {
        while let Ok(b) = self.rx.recv() {
            self.apply(b);
        }
    }

    fn apply(&mut self, b: ExportBatch) {
        for (rec, rtt) in &b.exits {
            self.exited.add(rec, [&rtt[0], &rtt[1]]);
        }
        let services = self.exited.with_active(|add| {
            for (rec, rtt) in &b.active {
                add(rec, [&rtt[0], &rtt[1]]);
            }
        });
        let snap = WorkerSnapshot { services, ..b.snap };
        *self
            .shared
            .snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(snap);
    }
}

impl ExportHook {
    /// The hook for a worker, and the aggregator to run on a thread of its own.
    pub fn new(
        shared: Arc<WorkerShared>,
        every: Duration,
        closed_cap: usize,
        max_services: usize,
        push: Option<PushTracker>,
        ipfix: Option<PushTracker>,
    ) -> (ExportHook, ExportAggregator) {
        let (tx, rx) = sync_channel(AGGREGATOR_BATCHES);
        let agg = ExportAggregator {
            shared: shared.clone(),
            rx,
            exited: ServiceTable::new(max_services),
        };
        let hook = ExportHook {
            shared,
            every,
            last_export: None,
            received_seen: 0,
            flows: Vec::new(),
            closed: VecDeque::with_capacity(closed_cap.min(1 << 16)),
            closed_cap,
            closed_dropped: 0,
            closed_popped: 0,
            exits: Vec::new(),
            tx,
            push,
            ipfix,
        };
        (hook, agg)
    }

    /// Moves the flows that left the table into the ring and the totals.
    fn take_exits(&mut self, engine: &mut Engine) {
        while let Some(e) = engine.poll_export() {
            if let Some(p) = self.push.as_mut() {
                p.exited(&e);
            }
            if let Some(p) = self.ipfix.as_mut() {
                p.exited(&e);
            }
            self.exits.push((e.record.clone(), e.rtt));
            if self.closed_cap == 0 {
                self.closed_dropped += 1;
                continue;
            }
            if self.closed.len() >= self.closed_cap {
                self.closed.pop_front();
                self.closed_popped += 1;
                self.closed_dropped += 1;
            }
            self.closed.push_back(e.record);
        }
    }

    fn export(&mut self, engine: &mut Engine, counters: &WorkerCounters, last: bool) {
        let now = now_ns();
        if !last {
            engine.poll_expired(now, EXPIRE_BUDGET);
        }
        self.take_exits(engine);
        let mut active = Vec::with_capacity(engine.table().len());
        engine.for_each_active(|f| {
            active.push((
                f.to_record(false),
                [f.dirs[0].rtt.clone(), f.dirs[1].rtt.clone()],
            ));
        });
        let batch = ExportBatch {
            snap: WorkerSnapshot {
                at_ns: now,
                counters: *counters,
                summary: engine.summary(),
                active_flows: engine.table().len() as u64,
                closed_kept: self.closed.len() as u64,
                closed_dropped: self.closed_dropped,
                services: ServiceTable::new(1),
            },
            exits: std::mem::take(&mut self.exits),
            active,
        };
        if last {
            // The worker is about to return: the final snapshot (for the
            // last scrape) may wait for the aggregator.
            let _ = self.tx.send(batch);
        } else {
            match self.tx.try_send(batch) {
                Ok(()) => {}
                Err(TrySendError::Full(b)) => {
                    // The aggregator lags: keep the exits for the next batch.
                    self.exits = b.exits;
                    self.shared.export_skipped.fetch_add(1, Ordering::Relaxed);
                }
                // The aggregator is gone (the daemon is stopping): nothing
                // reads the snapshots any more.
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
        if let Some(p) = self.push.as_mut() {
            p.tick(engine, now, last);
        }
        if let Some(p) = self.ipfix.as_mut() {
            p.tick(engine, now, last);
        }
    }

    /// Starts a walk for each new `/flows` request.
    pub(crate) fn take_up_flows_requests(&mut self) {
        for r in self.shared.take_flows_requests() {
            self.flows.push(FlowsStream {
                tx: r.tx,
                next: FlowsCursor::Slot(0),
            });
        }
    }

    /// One chunk for each `/flows` walk whose channel has room; returns
    /// the live flows walked.
    pub(crate) fn stream_flows(&mut self, engine: &mut Engine) -> usize {
        self.take_exits(engine);
        let (closed, popped) = (&self.closed, self.closed_popped);
        let mut walked = 0;
        self.flows.retain_mut(|s| {
            let permit = match s.tx.try_reserve() {
                Ok(p) => p,
                // The client reads slowly: pause, go on at a later call.
                Err(mpsc::error::TrySendError::Full(())) => return true,
                // The request is gone.
                Err(mpsc::error::TrySendError::Closed(())) => return false,
            };
            let (chunk, next) = flows_chunk(engine, closed, popped, s.next);
            walked += chunk.len();
            if !chunk.is_empty() {
                permit.send(chunk);
            }
            match next {
                Some(n) => {
                    s.next = n;
                    true
                }
                None => false,
            }
        });
        walked
    }
}

/// The records of one chunk from `at` on, and where the walk goes on
/// (`None`: done). The closed records after the live flows begin at the
/// ring's front as it is when the live walk ends.
fn flows_chunk(
    engine: &Engine,
    closed: &VecDeque<FlowRecord>,
    popped: u64,
    at: FlowsCursor,
) -> (Vec<FlowRecord>, Option<FlowsCursor>) {
    let mut chunk = Vec::new();
    match at {
        FlowsCursor::Slot(i) => {
            let next = engine.for_each_active_from(i, FLOWS_CHUNK, |f| {
                chunk.push(f.to_record(false));
            });
            let next = next.map_or(FlowsCursor::Closed(popped), FlowsCursor::Slot);
            (chunk, Some(next))
        }
        FlowsCursor::Closed(seq) => {
            // Records pushed out of the ring meanwhile are skipped.
            let from = usize::try_from(seq.saturating_sub(popped)).unwrap_or(usize::MAX);
            chunk.extend(closed.iter().skip(from).take(FLOWS_CHUNK).cloned());
            let end = from.saturating_add(chunk.len());
            let next = (end < closed.len()).then(|| FlowsCursor::Closed(popped + end as u64));
            (chunk, next)
        }
    }
}

impl WorkerHook for ExportHook {
    fn between_batches(&mut self, ctx: WorkerContext<'_>) {
        let received = ctx.counters.received;
        self.shared
            .handoff_active
            .store(received != self.received_seen, Ordering::Relaxed);
        self.received_seen = received;

        let due = ctx.last || self.last_export.is_none_or(|t| t.elapsed() >= self.every);
        if due {
            let t = Instant::now();
            self.last_export = Some(t);
            self.export(ctx.engine, ctx.counters, ctx.last);
            self.shared.add_export(t, ctx.engine.table().len());
        }
        self.take_up_flows_requests();
        if !self.flows.is_empty() {
            let t = Instant::now();
            let walked = self.stream_flows(ctx.engine);
            self.shared.add_export(t, walked);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::tests::engine_with_flows;
    use std::collections::BTreeMap;

    fn flow_name(r: &FlowRecord) -> String {
        format!("{:?} {:?} {:?} {:?}", r.proto, r.client, r.server, r.vlan)
    }

    /// A table of several chunks, part of it moved to the closed ring, read
    /// through a channel of one chunk that is drained one chunk per hook
    /// call: every flow comes exactly once, the walk pauses while the
    /// channel is full, and ends (the sender dropped) after the last.
    #[test]
    fn a_table_of_many_chunks_yields_every_record_once() {
        let mut engine = engine_with_flows(3 * FLOWS_CHUNK, 12 * FLOWS_CHUNK as u64);
        let mut want = BTreeMap::new();
        engine.for_each_active(|f| {
            *want.entry(flow_name(&f.to_record(false))).or_insert(0) += 1;
        });
        assert!(want.len() > 2 * FLOWS_CHUNK, "{} flows", want.len());
        assert!(want.values().all(|&n| n == 1));
        // Synthetic time is long past: a bounded expiry closes some flows.
        engine.poll_expired(now_ns(), FLOWS_CHUNK);
        let shared = Arc::new(WorkerShared::new(0, 10));
        let (mut hook, _agg) = ExportHook::new(
            shared.clone(),
            Duration::from_secs(1),
            want.len(),
            10,
            None,
            None,
        );
        hook.take_exits(&mut engine);
        let closed = hook.closed.len();
        assert!(closed > 0 && closed < want.len(), "{closed} closed");

        let (tx, mut rx) = mpsc::channel(1);
        shared.request_flows(FlowsRequest { id: 7, tx });
        assert!(shared.flows_pending(7));
        let mut got = BTreeMap::new();
        let (mut calls, mut chunks) = (0, 0);
        loop {
            calls += 1;
            assert!(calls < 100, "the walk does not end");
            hook.take_up_flows_requests();
            hook.stream_flows(&mut engine);
            // The channel holds one chunk: a second call before reading
            // must not block nor lose one.
            hook.stream_flows(&mut engine);
            match rx.try_recv() {
                Ok(chunk) => {
                    chunks += 1;
                    assert!(chunk.len() <= FLOWS_CHUNK);
                    for r in &chunk {
                        *got.entry(flow_name(r)).or_insert(0) += 1;
                    }
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
        }
        assert!(!shared.flows_pending(7));
        assert!(hook.flows.is_empty());
        assert!(
            chunks >= want.len().div_ceil(FLOWS_CHUNK),
            "{chunks} chunks"
        );
        assert_eq!(got, want);
    }

    /// A request whose receiver is gone ends the walk at the next call.
    #[test]
    fn a_dropped_request_ends_its_walk() {
        let mut engine = engine_with_flows(100, 1000);
        let shared = Arc::new(WorkerShared::new(0, 10));
        let (mut hook, _agg) =
            ExportHook::new(shared.clone(), Duration::from_secs(1), 10, 10, None, None);
        let (tx, rx) = mpsc::channel(1);
        shared.request_flows(FlowsRequest { id: 1, tx });
        drop(rx);
        hook.take_up_flows_requests();
        assert_eq!(hook.flows.len(), 1);
        assert_eq!(hook.stream_flows(&mut engine), 0);
        assert!(hook.flows.is_empty());
    }
}
