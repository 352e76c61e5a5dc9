//! Where aggregates live: the [`Store`] trait and its SQLite implementation.
//!
//! The HTTP layer hands batches of reports, each with the rows that
//! [`crate::agg::rows_of_top`] computed from it, to [`Store::ingest_batch`]
//! on one writer: the store merges the rows of the whole batch in memory
//! (one row per service/path, node, resolution and bucket, however many
//! flow deltas fed it), reads and rewrites each merged row once, all *in one
//! transaction*, and returns only after the commit; only then does the
//! control plane acknowledge the reports (group commit). Rows are binary
//! (postcard: varints, histograms as their buckets); rows written by older
//! builds as JSON text still decode. Queries run on their own connections
//! ([`Store::reader`]: WAL readers, never blocked by the writer), each under
//! a time budget ([`Store::set_deadline`]). Merging rows into summaries and
//! alerts is pure code elsewhere.
//!
//! The flows view keeps per service and 1 min bucket the `top` worst flows
//! (by [`crate::agg::worst_score`]) plus every flow with an event
//! ([`crate::agg::has_event`]), not every flow: its size grows with
//! services and time, not with flows.
//!
//! # SQLite durability
//!
//! WAL journal with `synchronous=FULL`: every commit fsyncs the WAL before
//! `COMMIT` returns, so an acknowledged report survives a SIGKILL of the
//! server *and* a power loss or kernel crash. `NORMAL` would survive SIGKILL
//! too (the WAL is in the page cache) but may lose the last commits on power
//! loss, i.e. acknowledged reports; a node would not resend them. The cost is
//! one fsync per commit, and a commit holds every report that arrived while
//! the previous one was written.
//!
//! # A full disk
//!
//! Deleting rows needs disk too (the WAL takes the deleted pages before the
//! database gives them back), so a store that filled its disk could not
//! prune its way out. [`SqliteStore::with_disk_reserve`] keeps a file of
//! zeros beside the database (`DB.reserve`): a prune that fails because the
//! disk is full deletes it, prunes again, truncates the WAL and writes the
//! reserve back. Its state ([`DiskStatus`]) is in `/healthz` and `/metrics`.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};

use crate::agg::{merge_flow, worst_score, Counters, FlowState, Res, Rows};
use crate::report::{NodeMeta, NodeReport, ProbeWindow};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("database holds a row that does not decode: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("cannot start the store's writer thread: {0}")]
    Thread(#[from] std::io::Error),
    #[error("database holds a binary row that does not decode: {0}")]
    Binary(#[from] postcard::Error),
    #[error("database {path} could not switch to WAL journal mode (got {mode:?}); is it on a network file system?")]
    NoWal { path: String, mode: String },
    /// The query ran past its time budget and was interrupted.
    #[error("query ran past its time budget of {0} ms; ask for less (a later since, a service, a smaller limit)")]
    Budget(u64),
    /// The query would load more rows than one answer may hold.
    #[error("query matches more than {0} rows; ask for less (a later since, a service)")]
    TooManyRows(usize),
    /// The ClickHouse server refused a statement or could not be reached.
    #[error("clickhouse: {0}")]
    ClickHouse(String),
}

/// Flows kept per service and 1 min bucket besides those with an event.
pub const DEFAULT_TOP_FLOWS: usize = 20;
/// Services kept in total; the services of nodes beyond are stored as [`OTHER`].
pub const DEFAULT_MAX_SERVICES: usize = 10_000;
/// Services kept per node; beyond, that node's further services are [`OTHER`].
pub const DEFAULT_MAX_SERVICES_PER_NODE: usize = 1_000;
/// Where the services past the caps go (as on the node).
pub const OTHER: &str = "_other";

/// The service caps: which services are known, in total and per node.
#[derive(Debug, Default)]
pub(crate) struct Caps {
    total: usize,
    per_node: usize,
    known: std::collections::HashSet<String>,
    of_node: HashMap<String, std::collections::HashSet<String>>,
}

impl Caps {
    /// No service known yet.
    pub(crate) fn new((total, per_node): (usize, usize)) -> Caps {
        Caps {
            total,
            per_node,
            ..Caps::default()
        }
    }

    /// `service` of `node` is stored already.
    pub(crate) fn stored(&mut self, node: String, service: String) {
        if service != OTHER {
            self.known.insert(service.clone());
            self.of_node.entry(node).or_default().insert(service);
        }
    }

    /// Whether `service` of `node` keeps its name (else it goes to [`OTHER`]);
    /// a kept new service is remembered.
    pub(crate) fn keep(&mut self, node: &str, service: &str) -> bool {
        if service == OTHER {
            return true;
        }
        let per = self.of_node.entry(node.to_string()).or_default();
        if per.contains(service) {
            return true;
        }
        if per.len() >= self.per_node {
            return false;
        }
        if !self.known.contains(service) {
            if self.known.len() >= self.total {
                return false;
            }
            self.known.insert(service.to_string());
        }
        per.insert(service.to_string());
        true
    }
}

/// Most bucket rows one query loads.
pub const MAX_QUERY_ROWS: usize = 500_000;

/// What became of a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ingest {
    /// Merged and committed.
    Accepted,
    /// Seen before (same node, instance, seq): nothing changed.
    Duplicate,
}

/// A node as the control plane knows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub node: String,
    pub first_seen_ns: u64,
    /// When its latest report arrived (control plane's clock).
    pub last_seen_ns: u64,
    /// When the node made its latest report (node's clock).
    pub last_sent_ns: u64,
    pub instance: u64,
    pub last_seq: u64,
    /// Reports accepted.
    pub reports: u64,
    /// Retried reports acknowledged without counting them again.
    pub duplicates: u64,
    /// Flow deltas accepted.
    pub flow_deltas: u64,
    /// What the node says it dropped while the control plane was unreachable.
    pub dropped_reports: u64,
    pub dropped_flows: u64,
    pub meta: NodeMeta,
}

/// How long rows are kept (by their bucket / flow time; reports by arrival).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub s10_ns: u64,
    pub m1_ns: u64,
    pub flows_ns: u64,
    /// Names of accepted reports, for idempotency, and nodes not heard from.
    pub reports_ns: u64,
}

impl Default for Retention {
    fn default() -> Self {
        const H: u64 = 3600 * 1_000_000_000;
        Retention {
            s10_ns: 24 * H,
            m1_ns: 30 * 24 * H,
            flows_ns: 7 * 24 * H,
            reports_ns: 30 * 24 * H,
        }
    }
}

/// One bucket row of one node.
#[derive(Clone, Debug, PartialEq)]
pub struct BucketRow {
    pub service: String,
    /// The client subnet (path rows only).
    pub subnet: Option<String>,
    pub node: String,
    pub bucket: u64,
    pub counters: Counters,
}

/// Order of `flows` answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FlowSort {
    /// Retransmissions, then zero-window stall time, then RTT p99 (as `analyze`).
    #[default]
    Worst,
    Rtt,
    Bytes,
    Stall,
    Last,
}

#[derive(Clone, Debug, Default)]
pub struct FlowQuery {
    pub since_ns: u64,
    pub service: Option<String>,
    pub node: Option<String>,
    pub sort: FlowSort,
    pub limit: usize,
}

/// One flow as seen by one node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowRow {
    pub node: String,
    pub service: String,
    pub flow: wirelens_dataplane::report::FlowRecord,
}

/// Bytes of the disk reserve by default (`ctrl serve --disk-reserve-mib`).
pub const DEFAULT_DISK_RESERVE: u64 = 16 << 20;

/// The disk reserve and whether the disk is full, as the writer last saw
/// them (read by `/healthz` and `/metrics`).
#[derive(Debug, Default)]
pub struct DiskStatus {
    /// Bytes the reserve file holds now (0: released, or never made).
    pub reserve_bytes: AtomicU64,
    /// Bytes it is meant to hold.
    pub reserve_target: AtomicU64,
    /// The last ingest failed because the disk was full (cleared by the
    /// next commit that succeeds).
    pub full: AtomicBool,
    /// Times the reserve was given up so that a prune could run.
    pub releases: AtomicU64,
}

/// A file of zeros beside the database, deleted when a prune needs its room.
#[derive(Debug)]
struct Reserve {
    path: PathBuf,
    status: Arc<DiskStatus>,
}

impl Reserve {
    /// Writes the file up to its target size (real blocks, not a sparse
    /// file); on a full disk it keeps what fitted.
    fn fill(&self) {
        use std::io::{Seek, SeekFrom, Write};
        let target = self.status.reserve_target.load(Ordering::Relaxed);
        let have = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.path)
            .and_then(|mut f| {
                let mut at = f.seek(SeekFrom::End(0))?;
                let zeros = vec![0u8; 1 << 20];
                while at < target {
                    let n = (target - at).min(zeros.len() as u64) as usize;
                    if f.write_all(&zeros[..n])
                        .and_then(|()| f.sync_data())
                        .is_err()
                    {
                        break;
                    }
                    at += n as u64;
                }
                // A partial chunk of a failed write is not counted as held.
                f.set_len(at)?;
                Ok(at)
            })
            .unwrap_or(0);
        self.status.reserve_bytes.store(have, Ordering::Relaxed);
    }

    fn release(&self) {
        if std::fs::remove_file(&self.path).is_ok() {
            self.status.releases.fetch_add(1, Ordering::Relaxed);
        }
        self.status.reserve_bytes.store(0, Ordering::Relaxed);
    }
}

/// The error SQLite gives when a write finds the disk full.
pub(crate) fn is_disk_full(e: &StoreError) -> bool {
    matches!(e, StoreError::Sql(rusqlite::Error::SqliteFailure(f, _))
        if f.code == rusqlite::ErrorCode::DiskFull)
}

/// The control plane's storage.
pub trait Store: Send {
    /// Merges `rows` (computed from `report`) atomically; returns after the
    /// merge is durable. A report already seen changes nothing.
    fn ingest(
        &mut self,
        report: &NodeReport,
        rows: &Rows,
        now_ns: u64,
    ) -> Result<Ingest, StoreError> {
        Ok(self.ingest_batch(&[(report, rows)], now_ns)?[0])
    }
    /// Merges the rows of every report of `batch` in one transaction;
    /// returns, after the commit, what became of each (in order). A report
    /// already seen, in the store or earlier in the batch, changes nothing.
    fn ingest_batch(
        &mut self,
        batch: &[(&NodeReport, &Rows)],
        now_ns: u64,
    ) -> Result<Vec<Ingest>, StoreError>;
    /// Another connection to the same data for queries (a WAL reader:
    /// never waits for the writer, never holds it up).
    fn reader(&self) -> Result<Box<dyn Store>, StoreError>;
    /// Queries started from now on are interrupted at `deadline_ns` (ns
    /// since the epoch; `None`: no budget) with [`StoreError::Budget`].
    fn set_deadline(&mut self, _deadline_ns: Option<u64>, _budget_ms: u64) {}
    fn nodes(&mut self) -> Result<Vec<NodeInfo>, StoreError>;
    /// Service bucket rows at `res` from `since_ns` on (optionally one service).
    fn service_rows(
        &mut self,
        res: Res,
        since_ns: u64,
        service: Option<&str>,
    ) -> Result<Vec<BucketRow>, StoreError>;
    /// Path (service x client subnet) bucket rows.
    fn path_rows(
        &mut self,
        res: Res,
        since_ns: u64,
        service: Option<&str>,
    ) -> Result<Vec<BucketRow>, StoreError>;
    /// Rows whose merge per (service, subnet, node), counters and first
    /// and last bucket, equals that of `service_rows` (`path_rows` with
    /// `paths`): a store that merges in its engine answers a window with
    /// one or two rows per key instead of one per bucket.
    fn window_rows(
        &mut self,
        paths: bool,
        res: Res,
        since_ns: u64,
        service: Option<&str>,
    ) -> Result<Vec<BucketRow>, StoreError> {
        if paths {
            self.path_rows(res, since_ns, service)
        } else {
            self.service_rows(res, since_ns, service)
        }
    }
    fn flows(&mut self, q: &FlowQuery) -> Result<Vec<FlowRow>, StoreError>;
    /// Probe windows `(node, window)` that end at or after `since_ns`,
    /// optionally of one target and/or node, oldest first, at most `limit`
    /// (the newest ones when there are more).
    fn probe_windows(
        &mut self,
        since_ns: u64,
        target: Option<&str>,
        node: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, ProbeWindow)>, StoreError>;
    /// Cumulative per-service counters since the store was created (a
    /// service silent past the 1 min retention is pruned).
    fn totals(&mut self) -> Result<Vec<(String, Counters)>, StoreError>;
    /// Deletes what is older than the retention; returns rows deleted.
    fn prune(&mut self, now_ns: u64, r: &Retention) -> Result<u64, StoreError>;
    /// Cheap liveness check.
    fn check(&mut self) -> Result<(), StoreError>;
    /// The disk reserve's state, for stores that keep one.
    fn disk(&self) -> Option<Arc<DiskStatus>> {
        None
    }
}

/// SQLite behind [`Store`].
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    /// Flows kept per (service, 1 min bucket) besides event flows.
    top: usize,
    /// Per (service, 1 min bucket): the scores of the `top` worst flows
    /// kept so far (the writer's; rebuilt empty after a restart, which then
    /// keeps at most `top` more per bucket).
    kept: Kept,
    /// Query deadline (ns since the epoch, 0: none) read by the progress handler.
    deadline: Arc<AtomicU64>,
    budget_ms: u64,
    /// The writer's service caps (loaded on first ingest).
    caps: Option<Caps>,
    max_services: (usize, usize),
    /// The writer's disk reserve (none on readers, or when 0 bytes).
    reserve: Option<Reserve>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("top", &self.top)
            .finish_non_exhaustive()
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS reports (
  node TEXT NOT NULL, instance INTEGER NOT NULL, seq INTEGER NOT NULL,
  received_ns INTEGER NOT NULL, flows INTEGER NOT NULL,
  PRIMARY KEY (node, instance, seq)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS reports_received ON reports(received_ns);
CREATE TABLE IF NOT EXISTS nodes (
  node TEXT PRIMARY KEY, first_seen_ns INTEGER NOT NULL, last_seen_ns INTEGER NOT NULL,
  last_sent_ns INTEGER NOT NULL, instance INTEGER NOT NULL, last_seq INTEGER NOT NULL,
  reports INTEGER NOT NULL, duplicates INTEGER NOT NULL, flow_deltas INTEGER NOT NULL,
  dropped_reports INTEGER NOT NULL, dropped_flows INTEGER NOT NULL, meta TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS service_buckets (
  service TEXT NOT NULL, node TEXT NOT NULL, res INTEGER NOT NULL, bucket INTEGER NOT NULL,
  c TEXT NOT NULL, PRIMARY KEY (service, node, res, bucket)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS service_buckets_time ON service_buckets(res, bucket);
CREATE TABLE IF NOT EXISTS path_buckets (
  service TEXT NOT NULL, subnet TEXT NOT NULL, node TEXT NOT NULL, res INTEGER NOT NULL,
  bucket INTEGER NOT NULL, c TEXT NOT NULL,
  PRIMARY KEY (service, subnet, node, res, bucket)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS path_buckets_time ON path_buckets(res, bucket);
CREATE TABLE IF NOT EXISTS flows (
  node TEXT NOT NULL, id TEXT NOT NULL, service TEXT NOT NULL,
  first_ns INTEGER NOT NULL, last_ns INTEGER NOT NULL, bytes INTEGER NOT NULL,
  retransmits INTEGER NOT NULL, stall_ns INTEGER NOT NULL, rtt_p99_ns INTEGER NOT NULL,
  state TEXT NOT NULL, PRIMARY KEY (node, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS flows_last ON flows(last_ns);
CREATE TABLE IF NOT EXISTS top_flows (
  service TEXT NOT NULL, bucket INTEGER NOT NULL, node TEXT NOT NULL, id TEXT NOT NULL,
  last_ns INTEGER NOT NULL, bytes INTEGER NOT NULL, retransmits INTEGER NOT NULL,
  stall_ns INTEGER NOT NULL, rtt_p99_ns INTEGER NOT NULL, state BLOB NOT NULL,
  PRIMARY KEY (service, bucket, node, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS top_flows_last ON top_flows(last_ns);
CREATE TABLE IF NOT EXISTS service_totals (service TEXT PRIMARY KEY, c TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS probe_windows (
  node TEXT NOT NULL, target TEXT NOT NULL, start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL,
  w TEXT NOT NULL, PRIMARY KEY (node, target, start_ns)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS probe_windows_end ON probe_windows(end_ns);
PRAGMA user_version = 2;
";

/// Stored integers are i64; ns times and ids are u64 (bit-preserving cast).
fn i(v: u64) -> i64 {
    v as i64
}
fn u(v: i64) -> u64 {
    v as u64
}

/// A row's binary form.
pub(crate) fn enc<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    Ok(postcard::to_allocvec(v)?)
}

/// A stored row: binary (this build) or JSON text (rows of older builds).
fn dec<T: serde::de::DeserializeOwned>(v: ValueRef<'_>) -> Result<T, StoreError> {
    match v {
        ValueRef::Blob(b) => Ok(postcard::from_bytes(b)?),
        ValueRef::Text(t) => Ok(serde_json::from_slice(t)?),
        other => Err(StoreError::Sql(rusqlite::Error::InvalidColumnType(
            0,
            "row".into(),
            other.data_type(),
        ))),
    }
}

/// Reads the row at `key` with `select` (if any), merges `c` into it and
/// writes it back with `upsert` (the key's parameters, then the row).
fn merge_row<T: Serialize + serde::de::DeserializeOwned>(
    tx: &rusqlite::Transaction<'_>,
    select: &str,
    upsert: &str,
    key: &[&dyn rusqlite::ToSql],
    c: T,
    merge: impl FnOnce(&mut T, &T),
) -> Result<T, StoreError> {
    let mut st = tx.prepare_cached(select)?;
    let mut rows = st.query(key)?;
    let merged = match rows.next()? {
        Some(r) => {
            let mut m: T = dec(r.get_ref(0)?)?;
            merge(&mut m, &c);
            m
        }
        None => c,
    };
    drop(rows);
    let blob = enc(&merged)?;
    let mut p: Vec<&dyn rusqlite::ToSql> = key.to_vec();
    p.push(&blob);
    tx.prepare_cached(upsert)?.execute(p.as_slice())?;
    Ok(merged)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` in WAL mode with
    /// `synchronous=FULL`.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = Self::connect(path)?;
        conn.execute_batch(SCHEMA)?;
        // Stores of older builds: totals had no time of their own.
        let has_last: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('service_totals') WHERE name = 'last_ns'")?
            .exists([])?;
        if !has_last {
            conn.execute_batch(
                "ALTER TABLE service_totals ADD COLUMN last_ns INTEGER NOT NULL DEFAULT 0",
            )?;
        }
        Ok(SqliteStore::on(conn, path))
    }

    fn on(conn: Connection, path: &Path) -> SqliteStore {
        let deadline = Arc::new(AtomicU64::new(0));
        let d2 = Arc::clone(&deadline);
        // Checked every few thousand VM steps: interrupts a query past its
        // deadline (SQLITE_INTERRUPT), which becomes StoreError::Budget.
        conn.progress_handler(
            4000,
            Some(move || {
                let d = d2.load(Ordering::Relaxed);
                d != 0 && crate::now_ns() > d
            }),
        );
        SqliteStore {
            conn,
            path: path.to_path_buf(),
            top: DEFAULT_TOP_FLOWS,
            kept: HashMap::new(),
            deadline,
            budget_ms: 0,
            caps: None,
            max_services: (DEFAULT_MAX_SERVICES, DEFAULT_MAX_SERVICES_PER_NODE),
            reserve: None,
        }
    }

    /// Keeps `bytes` of disk in reserve beside the database (`DB.reserve`),
    /// given up only when a prune finds the disk full; 0: none (an old
    /// reserve file is removed).
    pub fn with_disk_reserve(mut self, bytes: u64) -> SqliteStore {
        let mut path = self.path.clone().into_os_string();
        path.push(".reserve");
        let r = Reserve {
            path: PathBuf::from(path),
            status: Arc::new(DiskStatus::default()),
        };
        r.status.reserve_target.store(bytes, Ordering::Relaxed);
        if bytes == 0 {
            let _ = std::fs::remove_file(&r.path);
            self.reserve = None;
        } else {
            r.fill();
            self.reserve = Some(r);
        }
        self
    }

    /// [`Store::ingest_batch`].
    fn ingest_rows(
        &mut self,
        batch: &[(&NodeReport, &Rows)],
        now_ns: u64,
    ) -> Result<Vec<Ingest>, StoreError> {
        if self.caps.is_none() {
            self.caps = Some(self.load_caps()?);
        }
        let (top, kept) = (self.top, &mut self.kept);
        let caps = self.caps.get_or_insert_with(Caps::default);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut out = Vec::with_capacity(batch.len());
        for (report, _) in batch {
            let node = report.node.as_str();
            let fresh = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO reports(node, instance, seq, received_ns, flows) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![
                    node,
                    i(report.instance),
                    i(report.seq),
                    i(now_ns),
                    report.flows.len() as i64
                ])?
                == 1;
            let meta = serde_json::to_string(&report.meta)?;
            tx.prepare_cached(
                "INSERT INTO nodes(node, first_seen_ns, last_seen_ns, last_sent_ns, instance, last_seq, reports, duplicates,
               flow_deltas, dropped_reports, dropped_flows, meta)
             VALUES (?1, ?2, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT(node) DO UPDATE SET last_seen_ns = excluded.last_seen_ns,
               last_sent_ns = max(last_sent_ns, excluded.last_sent_ns),
               instance = excluded.instance, last_seq = excluded.last_seq,
               reports = reports + excluded.reports, duplicates = duplicates + excluded.duplicates,
               flow_deltas = flow_deltas + excluded.flow_deltas,
               dropped_reports = max(dropped_reports, excluded.dropped_reports),
               dropped_flows = max(dropped_flows, excluded.dropped_flows), meta = excluded.meta",
            )?
            .execute(params![
                node,
                i(now_ns),
                i(report.sent_ns),
                i(report.instance),
                i(report.seq),
                i64::from(fresh),
                i64::from(!fresh),
                if fresh { report.flows.len() as i64 } else { 0 },
                i(report.dropped_reports),
                i(report.dropped_flows),
                meta
            ])?;
            out.push(if fresh {
                Ingest::Accepted
            } else {
                Ingest::Duplicate
            });
        }
        // The batch's rows merged in memory: one read and one write per
        // (service or path, node, resolution, bucket), whatever the number
        // of deltas behind it.
        let mut services: BTreeMap<NodeKey<'_>, Counters> = BTreeMap::new();
        let mut paths: BTreeMap<PathKey<'_>, Counters> = BTreeMap::new();
        let mut totals: BTreeMap<&str, Counters> = BTreeMap::new();
        let fresh = || {
            batch
                .iter()
                .zip(&out)
                .filter(|(_, o)| **o == Ingest::Accepted)
                .map(|(b, _)| *b)
        };
        // Services past the caps are stored as OTHER.
        let mut name: HashMap<(&str, &str), &str> = HashMap::new();
        for (report, rows) in fresh() {
            let node = report.node.as_str();
            for service in rows.totals.keys() {
                let n = if caps.keep(node, service) {
                    service.as_str()
                } else {
                    OTHER
                };
                name.insert((node, service.as_str()), n);
            }
        }
        let named = |node: &str, service: &str| -> &str {
            name.get(&(node, service)).copied().unwrap_or(OTHER)
        };
        for (report, rows) in fresh() {
            let node = report.node.as_str();
            for ((service, res, bucket), c) in &rows.services {
                services
                    .entry((named(node, service), node, *res, *bucket))
                    .or_default()
                    .merge(c);
            }
            for ((service, subnet, res, bucket), c) in &rows.paths {
                paths
                    .entry((named(node, service), subnet, node, *res, *bucket))
                    .or_default()
                    .merge(c);
            }
            for (service, c) in &rows.totals {
                totals.entry(named(node, service)).or_default().merge(c);
            }
        }
        let merge = |a: &mut Counters, b: &Counters| a.merge(b);
        for ((service, node, res, bucket), c) in services {
            merge_row(
                &tx,
                "SELECT c FROM service_buckets WHERE service = ?1 AND node = ?2 AND res = ?3 AND bucket = ?4",
                "INSERT OR REPLACE INTO service_buckets(service, node, res, bucket, c) VALUES (?1, ?2, ?3, ?4, ?5)",
                &[&service, &node, &res.secs(), &i(bucket)],
                c,
                merge,
            )?;
        }
        for ((service, subnet, node, res, bucket), c) in paths {
            merge_row(
                &tx,
                "SELECT c FROM path_buckets WHERE service = ?1 AND subnet = ?2 AND node = ?3 AND res = ?4 AND bucket = ?5",
                "INSERT OR REPLACE INTO path_buckets(service, subnet, node, res, bucket, c) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                &[&service, &subnet, &node, &res.secs(), &i(bucket)],
                c,
                merge,
            )?;
        }
        for (service, c) in totals {
            merge_row(
                &tx,
                "SELECT c FROM service_totals WHERE service = ?1",
                "INSERT OR REPLACE INTO service_totals(service, c) VALUES (?1, ?2)",
                &[&service],
                c,
                merge,
            )?;
            tx.prepare_cached("UPDATE service_totals SET last_ns = ?2 WHERE service = ?1")?
                .execute(params![service, i(now_ns)])?;
        }
        // The flows view: event flows always, the others while they are
        // among the worst `top` of their service and bucket.
        let mut flows: Vec<(&str, &String, &crate::agg::FlowRowIn)> = Vec::new();
        for (report, rows) in fresh() {
            flows.extend(
                rows.flows
                    .iter()
                    .map(|(id, f)| (report.node.as_str(), id, f)),
            );
        }
        for (node, id, f) in flows {
            let service = named(node, &f.service);
            if !f.event && !admit(kept, top, service, f.bucket, worst_score(&f.state.record)) {
                continue;
            }
            let old: Option<Vec<u8>> = tx
                .prepare_cached(
                    "SELECT state FROM top_flows WHERE service = ?1 AND bucket = ?2 AND node = ?3 AND id = ?4",
                )?
                .query_row(params![service, i(f.bucket), node, id], |r| r.get(0))
                .optional()?;
            let merged = match old {
                Some(b) => {
                    let mut m: FlowState = postcard::from_bytes(&b)?;
                    merge_flow(&mut m, &f.state);
                    m
                }
                None => f.state.clone(),
            };
            let r = &merged.record;
            let (retx, stall, p99) = worst_score(r);
            tx.prepare_cached(
                "INSERT OR REPLACE INTO top_flows(service, bucket, node, id, last_ns, bytes, retransmits, stall_ns, rtt_p99_ns, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                service,
                i(f.bucket),
                node,
                id,
                i(r.last_ns),
                i(r.c2s.bytes.saturating_add(r.s2c.bytes)),
                i(retx),
                i(stall),
                i(p99),
                enc(&merged)?
            ])?;
        }
        for (report, _) in fresh() {
            for w in &report.probes {
                // A window is named by (node, target, start): the same window in
                // two reports (which a node never sends) is kept once.
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO probe_windows(node, target, start_ns, end_ns, w) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![
                    report.node,
                    w.target,
                    i(w.start_ns),
                    i(w.end_ns),
                    serde_json::to_string(w)?
                ])?;
            }
        }
        tx.commit()?;
        trim_kept(kept, now_ns);
        Ok(out)
    }

    /// Deletes what is past `r` in one transaction.
    fn prune_rows(&mut self, now_ns: u64, r: &Retention) -> Result<u64, StoreError> {
        let cut = |keep: u64| i(now_ns.saturating_sub(keep));
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut n = 0;
        for (res, keep) in [(Res::S10, r.s10_ns), (Res::M1, r.m1_ns)] {
            n += tx.execute(
                "DELETE FROM service_buckets WHERE res = ?1 AND bucket < ?2",
                params![res.secs(), cut(keep)],
            )?;
            n += tx.execute(
                "DELETE FROM path_buckets WHERE res = ?1 AND bucket < ?2",
                params![res.secs(), cut(keep)],
            )?;
        }
        n += tx.execute(
            "DELETE FROM flows WHERE last_ns < ?1",
            params![cut(r.flows_ns)],
        )?;
        n += tx.execute(
            "DELETE FROM top_flows WHERE last_ns < ?1",
            params![cut(r.flows_ns)],
        )?;
        n += tx.execute(
            "DELETE FROM probe_windows WHERE end_ns < ?1",
            params![cut(r.flows_ns)],
        )?;
        n += tx.execute(
            "DELETE FROM reports WHERE received_ns < ?1",
            params![cut(r.reports_ns)],
        )?;
        // A service not reported for as long as its 1 min buckets are kept
        // loses its cumulative totals too (a /metrics series that ended).
        n += tx.execute(
            "DELETE FROM service_totals WHERE last_ns < ?1",
            params![cut(r.m1_ns)],
        )?;
        // A node silent for as long as the idempotency names are kept is
        // forgotten with them.
        n += tx.execute(
            "DELETE FROM nodes WHERE last_seen_ns < ?1",
            params![cut(r.reports_ns)],
        )?;
        tx.commit()?;
        Ok(n as u64)
    }

    fn connect(path: &Path) -> Result<Connection, StoreError> {
        let p = path.display().to_string();
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: p.clone(),
            source,
        })?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NoWal { path: p, mode });
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(conn)
    }

    /// At most `total` services, and `per_node` per node; the rest are [`OTHER`].
    pub fn with_max_services(mut self, total: usize, per_node: usize) -> SqliteStore {
        self.max_services = (total, per_node);
        self.caps = None;
        self
    }

    /// The services already stored, in total and per node.
    fn load_caps(&self) -> Result<Caps, StoreError> {
        let mut c = Caps::new(self.max_services);
        let mut st = self
            .conn
            .prepare("SELECT DISTINCT node, service FROM service_buckets WHERE res = 60")?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            c.stored(r.get(0)?, r.get(1)?);
        }
        Ok(c)
    }

    /// Keeps `n` flows per service and 1 min bucket besides event flows.
    pub fn with_top_flows(mut self, n: usize) -> SqliteStore {
        self.top = n;
        self
    }

    /// A query's error: an interrupt past the deadline is the budget's.
    fn budget_err(&self, e: StoreError) -> StoreError {
        match e {
            StoreError::Sql(rusqlite::Error::SqliteFailure(f, _))
                if f.code == rusqlite::ErrorCode::OperationInterrupted =>
            {
                StoreError::Budget(self.budget_ms)
            }
            e => e,
        }
    }

    fn bucket_rows(
        &mut self,
        sql: &str,
        res: Res,
        since_ns: u64,
        service: Option<&str>,
        paths: bool,
    ) -> Result<Vec<BucketRow>, StoreError> {
        let r = self.bucket_rows_inner(sql, res, since_ns, service, paths);
        r.map_err(|e| self.budget_err(e))
    }

    fn bucket_rows_inner(
        &mut self,
        sql: &str,
        res: Res,
        since_ns: u64,
        service: Option<&str>,
        paths: bool,
    ) -> Result<Vec<BucketRow>, StoreError> {
        let mut st = self.conn.prepare_cached(sql)?;
        let cap = MAX_QUERY_ROWS as i64 + 1;
        let mut rows = st.query(params![res.secs(), i(since_ns), service, cap])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            if out.len() == MAX_QUERY_ROWS {
                return Err(StoreError::TooManyRows(MAX_QUERY_ROWS));
            }
            out.push(BucketRow {
                service: r.get("service")?,
                subnet: if paths { Some(r.get("subnet")?) } else { None },
                node: r.get("node")?,
                bucket: u(r.get("bucket")?),
                counters: dec(r.get_ref("c")?)?,
            });
        }
        Ok(out)
    }

    /// The kept flows, a flow's rows of several buckets merged into one; at
    /// most `limit`, the SQL loads at most `limit` rows.
    fn flows_inner(&mut self, q: &FlowQuery) -> Result<Vec<FlowRow>, StoreError> {
        let order = match q.sort {
            FlowSort::Worst => "retransmits DESC, stall_ns DESC, rtt_p99_ns DESC",
            FlowSort::Rtt => "rtt_p99_ns DESC",
            FlowSort::Bytes => "bytes DESC",
            FlowSort::Stall => "stall_ns DESC",
            FlowSort::Last => "last_ns DESC",
        };
        let sql = format!(
            "SELECT node, service, id, state FROM top_flows WHERE last_ns >= ?1 AND (?2 IS NULL OR service = ?2 OR substr(service, 1, length(?2) + 1) = ?2 || '/')
             AND (?3 IS NULL OR node = ?3) ORDER BY {order}, node, id LIMIT ?4"
        );
        let mut st = self.conn.prepare_cached(&sql)?;
        let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
        let mut rows = st.query(params![i(q.since_ns), q.service, q.node, limit])?;
        let mut got = Vec::new();
        while let Some(r) = rows.next()? {
            let (node, service, id): (String, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
            got.push((node, service, id, dec(r.get_ref(3)?)?));
        }
        Ok(flows_by_node(got))
    }
}

/// Kept flow rows `(node, service, id, state)` in answer order, a flow's
/// rows of several buckets merged into one (at its first place).
pub(crate) fn flows_by_node(
    rows: impl IntoIterator<Item = (String, String, String, FlowState)>,
) -> Vec<FlowRow> {
    let mut out: Vec<FlowRow> = Vec::new();
    let mut at: HashMap<(String, String), (usize, FlowState)> = HashMap::new();
    for (node, service, id, st) in rows {
        match at.entry((node.clone(), id)) {
            std::collections::hash_map::Entry::Occupied(mut o) => {
                let (idx, m) = o.get_mut();
                merge_flow(m, &st);
                out[*idx].flow = m.record.clone();
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                out.push(FlowRow {
                    node,
                    service,
                    flow: st.record.clone(),
                });
                v.insert((out.len() - 1, st));
            }
        }
    }
    out
}

/// Per (service, 1 min bucket): the scores of the flows kept.
pub(crate) type Kept = HashMap<(String, u64), Vec<(u64, u64, u64)>>;

/// Whether a flow of `score` joins the `top` kept flows of (service, bucket).
pub(crate) fn admit(
    kept: &mut Kept,
    top: usize,
    service: &str,
    bucket: u64,
    score: (u64, u64, u64),
) -> bool {
    {
        if top == 0 {
            return false;
        }
        let w = kept.entry((service.to_string(), bucket)).or_default();
        if w.len() < top {
            w.push(score);
            return true;
        }
        match w.iter_mut().min() {
            Some(min) if score > *min => {
                *min = score;
                true
            }
            _ => false,
        }
    }
}

/// Forgets the admission state of buckets past any report's reach.
pub(crate) fn trim_kept(kept: &mut Kept, now_ns: u64) {
    if kept.len() > 4096 {
        let cut = now_ns.saturating_sub(3600 * 1_000_000_000);
        kept.retain(|(_, b), _| *b >= cut);
    }
}

type NodeKey<'a> = (&'a str, &'a str, Res, u64);
type PathKey<'a> = (&'a str, &'a str, &'a str, Res, u64);

impl Store for SqliteStore {
    fn reader(&self) -> Result<Box<dyn Store>, StoreError> {
        let conn = Self::connect(&self.path)?;
        conn.pragma_update(None, "query_only", true)?;
        Ok(Box::new(SqliteStore::on(conn, &self.path)))
    }

    fn set_deadline(&mut self, deadline_ns: Option<u64>, budget_ms: u64) {
        self.budget_ms = budget_ms;
        self.deadline.store(
            deadline_ns
                .unwrap_or(0)
                .max(u64::from(deadline_ns.is_some())),
            Ordering::Relaxed,
        );
    }

    fn ingest_batch(
        &mut self,
        batch: &[(&NodeReport, &Rows)],
        now_ns: u64,
    ) -> Result<Vec<Ingest>, StoreError> {
        let r = self.ingest_rows(batch, now_ns);
        if let Some(res) = &self.reserve {
            let full = r.as_ref().err().is_some_and(is_disk_full);
            res.status.full.store(full, Ordering::Relaxed);
        }
        r
    }

    fn probe_windows(
        &mut self,
        since_ns: u64,
        target: Option<&str>,
        node: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, ProbeWindow)>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT node, w FROM probe_windows WHERE end_ns >= ?1 AND (?2 IS NULL OR target = ?2)
             AND (?3 IS NULL OR node = ?3) ORDER BY end_ns DESC, node, target LIMIT ?4",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut rows = st.query(params![i(since_ns), target, node, limit])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let w: String = r.get(1)?;
            out.push((r.get(0)?, serde_json::from_str(&w)?));
        }
        out.reverse();
        Ok(out)
    }

    fn nodes(&mut self) -> Result<Vec<NodeInfo>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT * FROM nodes ORDER BY node")?;
        let mut rows = st.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let meta: String = r.get("meta")?;
            out.push(NodeInfo {
                node: r.get("node")?,
                first_seen_ns: u(r.get("first_seen_ns")?),
                last_seen_ns: u(r.get("last_seen_ns")?),
                last_sent_ns: u(r.get("last_sent_ns")?),
                instance: u(r.get("instance")?),
                last_seq: u(r.get("last_seq")?),
                reports: u(r.get("reports")?),
                duplicates: u(r.get("duplicates")?),
                flow_deltas: u(r.get("flow_deltas")?),
                dropped_reports: u(r.get("dropped_reports")?),
                dropped_flows: u(r.get("dropped_flows")?),
                meta: serde_json::from_str(&meta)?,
            });
        }
        Ok(out)
    }

    fn service_rows(
        &mut self,
        res: Res,
        since_ns: u64,
        service: Option<&str>,
    ) -> Result<Vec<BucketRow>, StoreError> {
        self.bucket_rows(
            "SELECT service, node, bucket, c FROM service_buckets
             WHERE res = ?1 AND bucket >= ?2 AND (?3 IS NULL OR service = ?3 OR substr(service, 1, length(?3) + 1) = ?3 || '/') ORDER BY bucket LIMIT ?4",
            res,
            since_ns,
            service,
            false,
        )
    }

    fn path_rows(
        &mut self,
        res: Res,
        since_ns: u64,
        service: Option<&str>,
    ) -> Result<Vec<BucketRow>, StoreError> {
        self.bucket_rows(
            "SELECT service, subnet, node, bucket, c FROM path_buckets
             WHERE res = ?1 AND bucket >= ?2 AND (?3 IS NULL OR service = ?3 OR substr(service, 1, length(?3) + 1) = ?3 || '/') ORDER BY bucket LIMIT ?4",
            res,
            since_ns,
            service,
            true,
        )
    }

    fn flows(&mut self, q: &FlowQuery) -> Result<Vec<FlowRow>, StoreError> {
        let r = self.flows_inner(q);
        r.map_err(|e| self.budget_err(e))
    }

    fn totals(&mut self) -> Result<Vec<(String, Counters)>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT service, c FROM service_totals ORDER BY service")?;
        let mut rows = st.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push((r.get(0)?, dec(r.get_ref(1)?)?));
        }
        Ok(out)
    }

    fn prune(&mut self, now_ns: u64, r: &Retention) -> Result<u64, StoreError> {
        let res = match self.prune_rows(now_ns, r) {
            Err(e) if is_disk_full(&e) && self.reserve.is_some() => {
                if let Some(res) = &self.reserve {
                    res.release();
                }
                self.prune_rows(now_ns, r)
            }
            res => res,
        };
        if let Some(res) = &self.reserve {
            if res.status.reserve_bytes.load(Ordering::Relaxed)
                < res.status.reserve_target.load(Ordering::Relaxed)
            {
                // The WAL's disk back (the pages freed stay in the database
                // for the next rows), then the reserve again.
                let _ = self
                    .conn
                    .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
                res.fill();
            }
        }
        res
    }

    fn check(&mut self) -> Result<(), StoreError> {
        self.conn.query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }

    fn disk(&self) -> Option<Arc<DiskStatus>> {
        self.reserve.as_ref().map(|r| Arc::clone(&r.status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agg::rows_of;
    use crate::agg::tests::{delta_with_rtt, flow};
    use crate::agg::SEC;

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("wl-ctrl-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d.join("ctrl.db")
    }

    fn report(node: &str, seq: u64, packets: u64) -> NodeReport {
        let t = 1_700_000_000 * SEC;
        let mut r = NodeReport::new(node, 9, seq, t, NodeMeta::default());
        let mut f = flow("198.18.1.2:1000", "198.18.2.2:80", t, t + SEC);
        f.c2s.packets = packets;
        r.flows.push(delta_with_rtt(f, t + SEC, &[40_000_000]));
        r
    }

    #[test]
    fn probe_windows_are_stored_once_and_survive_reopen() {
        use wirelens_proto::testutil::window;
        let path = tmp("probes");
        let t = 1_700_000_000 * SEC;
        let mut r = report("n1", 0, 5);
        r.probes
            .push(window("198.18.2.2:862", t, &[20_000_000; 50], 3, 2));
        r.probes.push(window(
            "198.18.2.2:862",
            t + 10 * SEC,
            &[21_000_000; 50],
            0,
            1,
        ));
        r.probes
            .push(window("198.18.3.3:862", t, &[1_000_000], 0, 0));
        {
            let mut s = SqliteStore::open(&path).unwrap();
            assert_eq!(s.ingest(&r, &rows_of(&r), 1).unwrap(), Ingest::Accepted);
            // A retried report adds no window twice.
            assert_eq!(s.ingest(&r, &rows_of(&r), 2).unwrap(), Ingest::Duplicate);
        }
        let mut s = SqliteStore::open(&path).unwrap();
        let all = s.probe_windows(0, None, None, 100).unwrap();
        assert_eq!(all.len(), 3);
        assert!(all.windows(2).all(|p| p[0].1.end_ns <= p[1].1.end_ns));
        let one = s
            .probe_windows(0, Some("198.18.2.2:862"), Some("n1"), 100)
            .unwrap();
        assert_eq!(one.len(), 2);
        assert_eq!(one[0].1, r.probes[0], "a window comes back as it went in");
        let sum = crate::agg::probe_summaries(one.iter().map(|(n, w)| (n.as_str(), w)));
        assert_eq!(
            (sum[0].lost_up, sum[0].lost_down, sum[0].received),
            (3, 3, 100)
        );
        assert!(s
            .probe_windows(0, None, Some("n2"), 100)
            .unwrap()
            .is_empty());
        // The newest ones when limited; `since` by window end.
        let last = s.probe_windows(0, None, None, 1).unwrap();
        assert_eq!(last[0].1.start_ns, t + 10 * SEC);
        assert_eq!(
            s.probe_windows(t + 15 * SEC, None, None, 100)
                .unwrap()
                .len(),
            1
        );
        // Retention: by window end, with the flows'.
        let keep = Retention {
            flows_ns: 5 * SEC,
            ..Retention::default()
        };
        s.prune(t + 21 * SEC, &keep).unwrap();
        let left = s.probe_windows(0, None, None, 100).unwrap();
        assert_eq!(left.len(), 1, "only the window ending at t + 20 s is kept");
        assert_eq!(left[0].1.start_ns, t + 10 * SEC);
        drop(s);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn ingest_is_idempotent_and_survives_reopen() {
        let path = tmp("idem");
        {
            let mut s = SqliteStore::open(&path).unwrap();
            let r = report("n1", 0, 5);
            assert_eq!(s.ingest(&r, &rows_of(&r), 1).unwrap(), Ingest::Accepted);
            assert_eq!(s.ingest(&r, &rows_of(&r), 2).unwrap(), Ingest::Duplicate);
            let r2 = report("n1", 1, 7);
            assert_eq!(s.ingest(&r2, &rows_of(&r2), 3).unwrap(), Ingest::Accepted);
        }
        let mut s = SqliteStore::open(&path).unwrap();
        let totals = s.totals().unwrap();
        assert_eq!(totals.len(), 1);
        assert_eq!(totals[0].1.packets, 12);
        assert_eq!(totals[0].1.rtt_server.count(), 2);
        let nodes = s.nodes().unwrap();
        assert_eq!(
            (nodes[0].reports, nodes[0].duplicates, nodes[0].flow_deltas),
            (2, 1, 2)
        );
        // The same flow in two reports is one flow row with the sum.
        let flows = s
            .flows(&FlowQuery {
                limit: 10,
                ..FlowQuery::default()
            })
            .unwrap();
        assert_eq!(flows.len(), 1);
        assert_eq!(flows[0].flow.c2s.packets, 12);
        let rows = s.service_rows(Res::S10, 0, None).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].counters.packets, 12);
        // `--service ip:port` means every protocol of that ip:port; a
        // longer port is another service.
        for (filter, n) in [
            ("198.18.2.2:80/tcp", 1),
            ("198.18.2.2:80", 1),
            ("198.18.2.2:8", 0),
            ("198.18.2.2:80/udp", 0),
        ] {
            assert_eq!(
                s.service_rows(Res::S10, 0, Some(filter)).unwrap().len(),
                n,
                "{filter}"
            );
        }
        assert_eq!(
            s.path_rows(Res::M1, 0, Some("198.18.2.2:80/tcp"))
                .unwrap()
                .len(),
            1
        );
        // Totals outlive the 10 s buckets...
        let day = 24 * 3600 * SEC;
        s.prune(3 + 2 * day, &Retention::default()).unwrap();
        assert_eq!(s.totals().unwrap()[0].1.packets, 12);
        // ...and a prune far in the future removes buckets, flows, silent
        // nodes and silent services' totals.
        assert!(s.prune(u64::MAX / 2, &Retention::default()).unwrap() > 0);
        assert!(s.service_rows(Res::S10, 0, None).unwrap().is_empty());
        assert!(
            s.nodes().unwrap().is_empty(),
            "a long silent node is pruned"
        );
        assert!(s.totals().unwrap().is_empty());
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn group_commit_merges_a_batch_once_and_names_each_outcome() {
        let path = tmp("batch");
        let mut s = SqliteStore::open(&path).unwrap();
        let (a, b, c) = (report("n1", 0, 5), report("n1", 1, 7), report("n2", 0, 11));
        let (ra, rb, rc) = (rows_of(&a), rows_of(&b), rows_of(&c));
        // `a` twice in one batch: the second is a duplicate and adds nothing.
        let out = s
            .ingest_batch(&[(&a, &ra), (&b, &rb), (&a, &ra), (&c, &rc)], 1)
            .unwrap();
        assert_eq!(
            out,
            [
                Ingest::Accepted,
                Ingest::Accepted,
                Ingest::Duplicate,
                Ingest::Accepted
            ]
        );
        // And a later batch sees it as seen too.
        assert_eq!(
            s.ingest_batch(&[(&b, &rb)], 2).unwrap(),
            [Ingest::Duplicate]
        );
        assert_eq!(s.totals().unwrap()[0].1.packets, 5 + 7 + 11);
        let rows = s.service_rows(Res::S10, 0, None).unwrap();
        let per_node: Vec<(String, u64)> = rows
            .iter()
            .map(|r| (r.node.clone(), r.counters.packets))
            .collect();
        assert_eq!(per_node.len(), 2, "one row per node: {per_node:?}");
        assert!(per_node.contains(&("n1".into(), 12)));
        assert!(per_node.contains(&("n2".into(), 11)));
        let nodes = s.nodes().unwrap();
        assert_eq!((nodes[0].reports, nodes[0].duplicates), (2, 2));
        // Rows are binary, not JSON text.
        let ty: String = s
            .conn
            .query_row("SELECT typeof(c) FROM service_buckets LIMIT 1", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(ty, "blob");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn flows_view_keeps_the_worst_per_bucket_and_every_event() {
        let path = tmp("top");
        let mut s = SqliteStore::open(&path).unwrap().with_top_flows(3);
        let t = 1_700_000_000 * SEC;
        let mk = |seq: u64, base: u64| {
            let mut r = NodeReport::new("n1", 9, seq, t, NodeMeta::default());
            for k in 0..40u64 {
                let mut f = flow(
                    &format!("198.18.1.{}:{}", 1 + k % 200, 1000 + base + k),
                    "198.18.2.2:80",
                    t,
                    t + SEC,
                );
                f.c2s.packets = 10;
                f.c2s.retransmits = base + k; // the last ones are the worst
                if k == 7 {
                    f.s2c.rst = 1; // an event: kept whatever its rank
                }
                r.flows.push(delta_with_rtt(f, t + SEC, &[1_000_000]));
            }
            r
        };
        let r1 = mk(0, 0);
        s.ingest(&r1, &crate::agg::rows_of_top(&r1, 3), 1).unwrap();
        let q = FlowQuery {
            limit: 100,
            ..FlowQuery::default()
        };
        let kept: Vec<u64> = s
            .flows(&q)
            .unwrap()
            .iter()
            .map(|f| f.flow.c2s.retransmits)
            .collect();
        assert_eq!(kept, [39, 38, 37, 7], "3 worst, then the reset one");
        // A later report with worse flows: those join; the bucket's totals
        // still count every delta.
        let r2 = mk(1, 100);
        s.ingest(&r2, &crate::agg::rows_of_top(&r2, 3), 2).unwrap();
        let kept = s.flows(&q).unwrap();
        assert_eq!(kept.len(), 4 + 3 + 1);
        assert_eq!(kept[0].flow.c2s.retransmits, 139);
        let rows = s.service_rows(Res::M1, 0, None).unwrap();
        assert_eq!(rows[0].counters.deltas, 80);
        // `limit` is applied in the SQL.
        let two = s
            .flows(&FlowQuery {
                limit: 2,
                ..FlowQuery::default()
            })
            .unwrap();
        assert_eq!(two.len(), 2);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn rows_of_older_builds_in_json_text_still_decode() {
        let path = tmp("legacy");
        let mut s = SqliteStore::open(&path).unwrap();
        let c = Counters {
            packets: 42,
            ..Counters::default()
        };
        s.conn
            .execute(
                "INSERT INTO service_buckets(service, node, res, bucket, c) VALUES ('198.18.2.2:80/tcp', 'old', 60, 0, ?1)",
                [serde_json::to_string(&c).unwrap()],
            )
            .unwrap();
        let r = report("old", 0, 8);
        let mut rows = rows_of(&r);
        // Put the new delta in the old row's bucket: merged, rewritten binary.
        let (k, v) = rows.services.pop_first().unwrap();
        rows.services.clear();
        rows.services.insert((k.0, Res::M1, 0), v);
        s.ingest(&r, &rows, 1).unwrap();
        let got = s.service_rows(Res::M1, 0, None).unwrap();
        assert_eq!(got[0].counters.packets, 50);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_query_past_its_deadline_is_interrupted() {
        let path = tmp("budget");
        let mut w = SqliteStore::open(&path).unwrap();
        let r = report("n1", 0, 5);
        w.ingest(&r, &rows_of(&r), 1).unwrap();
        // Enough rows that the query runs long enough to be checked.
        let blob = enc(&Counters::default()).unwrap();
        w.conn
            .execute(
                "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 20000)
                 INSERT INTO service_buckets SELECT 'svc', 'n' || x, 10, x, ?1 FROM n",
                [blob],
            )
            .unwrap();
        let mut q = w.reader().unwrap();
        q.set_deadline(Some(1), 7); // long past
        match q.service_rows(Res::S10, 0, None) {
            Err(StoreError::Budget(7)) => {}
            other => panic!("expected the budget error, got {other:?}"),
        }
        q.set_deadline(None, 7);
        assert_eq!(q.service_rows(Res::S10, 0, None).unwrap().len(), 20_001);
        // A reader cannot write.
        assert!(q.ingest(&report("n1", 5, 1), &rows_of(&r), 2).is_err());
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn services_past_the_caps_go_to_other() {
        let path = tmp("caps");
        let t = 1_700_000_000 * SEC;
        let mk = |node: &str, seq: u64, servers: &[&str]| {
            let mut r = NodeReport::new(node, 9, seq, t, NodeMeta::default());
            for s in servers {
                let mut f = flow("198.18.1.2:1000", s, t, t + SEC);
                f.c2s.packets = 1;
                r.flows.push(delta_with_rtt(f, t + SEC, &[1_000_000]));
            }
            r
        };
        {
            let mut s = SqliteStore::open(&path).unwrap().with_max_services(2, 1);
            for r in [
                mk("a", 0, &["198.18.2.1:80", "198.18.2.2:80"]),
                mk("b", 0, &["198.18.2.3:80"]),
                mk("c", 0, &["198.18.2.4:80"]),
            ] {
                s.ingest(&r, &rows_of(&r), 1).unwrap();
            }
        }
        // After a reopen the caps are what the store holds.
        let mut s = SqliteStore::open(&path).unwrap().with_max_services(2, 1);
        let r = mk("a", 1, &["198.18.2.1:80", "198.18.2.5:80"]);
        s.ingest(&r, &rows_of(&r), 2).unwrap();
        let totals: Vec<(String, u64)> = s
            .totals()
            .unwrap()
            .into_iter()
            .map(|(k, c)| (k, c.packets))
            .collect();
        assert_eq!(
            totals,
            [
                ("198.18.2.1:80/tcp".into(), 2),
                ("198.18.2.3:80/tcp".into(), 1),
                (OTHER.into(), 3)
            ]
        );
        let flows = s
            .flows(&FlowQuery {
                limit: 100,
                service: Some(OTHER.into()),
                ..FlowQuery::default()
            })
            .unwrap();
        assert_eq!(
            flows.len(),
            3,
            "the flows of capped services are kept as {OTHER}"
        );
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
