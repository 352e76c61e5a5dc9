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
//! flow to build: the HTTP side asks for them ([`WorkerShared::want_flows`])
//! and each worker answers at its next hook call with a [`FlowsSnapshot`]
//! (live flows, then the recently closed ones).
//!
//! [`NodeConfig::export_every`]: crate::NodeConfig::export_every
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

/// The flow records one worker published for `/flows`.
#[derive(Clone, Debug, Default)]
pub struct FlowsSnapshot {
    /// The request generation this answers.
    pub generation: u64,
    pub at_ns: u64,
    /// Live flows first, then the recently closed ones, oldest first.
    pub records: Vec<FlowRecord>,
    pub active: usize,
}

/// The slots one worker shares with the HTTP side.
#[derive(Debug)]
pub struct WorkerShared {
    /// The rx queue this worker reads.
    pub queue: u32,
    snapshot: Mutex<Arc<WorkerSnapshot>>,
    flows: Mutex<Arc<FlowsSnapshot>>,
    /// Bumped by `/flows`; the worker answers when it differs from the
    /// generation of its last [`FlowsSnapshot`].
    flows_wanted: AtomicU64,
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
            flows: Mutex::new(Arc::new(FlowsSnapshot::default())),
            flows_wanted: AtomicU64::new(0),
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

    /// The last published flow records.
    pub fn flows(&self) -> Arc<FlowsSnapshot> {
        self.flows.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Asks the worker for fresh flow records; returns the generation to
    /// wait for.
    pub fn want_flows(&self) -> u64 {
        self.flows_wanted.fetch_add(1, Ordering::AcqRel) + 1
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
    flows_generation: u64,
    closed: VecDeque<FlowRecord>,
    closed_cap: usize,
    closed_dropped: u64,
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
            flows_generation: 0,
            closed: VecDeque::with_capacity(closed_cap.min(1 << 16)),
            closed_cap,
            closed_dropped: 0,
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

    fn publish_flows(&mut self, engine: &mut Engine, generation: u64) {
        self.take_exits(engine);
        let mut records = Vec::with_capacity(engine.table().len() + self.closed.len());
        engine.for_each_active(|f| records.push(f.to_record(false)));
        let active = records.len();
        records.extend(self.closed.iter().cloned());
        let snap = FlowsSnapshot {
            generation,
            at_ns: now_ns(),
            records,
            active,
        };
        *self.shared.flows.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(snap);
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
        let wanted = self.shared.flows_wanted.load(Ordering::Acquire);
        if wanted != self.flows_generation || ctx.last {
            let t = Instant::now();
            self.flows_generation = wanted;
            self.publish_flows(ctx.engine, wanted);
            self.shared.add_export(t, ctx.engine.table().len());
        }
    }
}
