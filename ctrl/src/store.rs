//! Where aggregates live: the [`Store`] trait and its SQLite implementation.
//!
//! The HTTP layer calls [`Store::ingest`] with a report and the rows that
//! [`crate::agg::rows_of`] computed from it; the store merges them into what
//! it holds *in one transaction* and returns only after the commit, and only
//! then does the control plane acknowledge the report. Queries return rows;
//! merging them into summaries and alerts is pure code elsewhere. Another
//! backend (ClickHouse) implements the same trait.
//!
//! # SQLite durability
//!
//! WAL journal with `synchronous=FULL`: every commit fsyncs the WAL before
//! `COMMIT` returns, so an acknowledged report survives a SIGKILL of the
//! server *and* a power loss or kernel crash. `NORMAL` would survive SIGKILL
//! too (the WAL is in the page cache) but may lose the last commits on power
//! loss, i.e. acknowledged reports; a node would not resend them. The cost is
//! one fsync per report: nodes report every few seconds, so even a thousand
//! nodes are a few hundred fsyncs a second.
#![forbid(unsafe_code)]

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};

use crate::agg::{merge_flow, Counters, FlowState, Res, Rows};
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
    #[error("database {path} could not switch to WAL journal mode (got {mode:?}); is it on a network file system?")]
    NoWal { path: String, mode: String },
}

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
    /// Names of accepted reports, for idempotency.
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

/// The control plane's storage.
pub trait Store: Send {
    /// Merges `rows` (computed from `report`) atomically; returns after the
    /// merge is durable. A report already seen changes nothing.
    fn ingest(
        &mut self,
        report: &NodeReport,
        rows: &Rows,
        now_ns: u64,
    ) -> Result<Ingest, StoreError>;
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
    /// Cumulative per-service counters since the store was created (never pruned).
    fn totals(&mut self) -> Result<Vec<(String, Counters)>, StoreError>;
    /// Deletes what is older than the retention; returns rows deleted.
    fn prune(&mut self, now_ns: u64, r: &Retention) -> Result<u64, StoreError>;
    /// Cheap liveness check.
    fn check(&mut self) -> Result<(), StoreError>;
}

/// SQLite behind [`Store`].
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
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
CREATE TABLE IF NOT EXISTS service_totals (service TEXT PRIMARY KEY, c TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS probe_windows (
  node TEXT NOT NULL, target TEXT NOT NULL, start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL,
  w TEXT NOT NULL, PRIMARY KEY (node, target, start_ns)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS probe_windows_end ON probe_windows(end_ns);
PRAGMA user_version = 1;
";

/// Stored integers are i64; ns times and ids are u64 (bit-preserving cast).
fn i(v: u64) -> i64 {
    v as i64
}
fn u(v: i64) -> u64 {
    v as u64
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` in WAL mode with
    /// `synchronous=FULL`.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
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
        conn.execute_batch(SCHEMA)?;
        Ok(SqliteStore { conn })
    }

    fn bucket_rows(
        &mut self,
        sql: &str,
        res: Res,
        since_ns: u64,
        service: Option<&str>,
        paths: bool,
    ) -> Result<Vec<BucketRow>, StoreError> {
        let mut st = self.conn.prepare_cached(sql)?;
        let mut rows = st.query(params![res.secs(), i(since_ns), service])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let c: String = r.get("c")?;
            out.push(BucketRow {
                service: r.get("service")?,
                subnet: if paths { Some(r.get("subnet")?) } else { None },
                node: r.get("node")?,
                bucket: u(r.get("bucket")?),
                counters: serde_json::from_str(&c)?,
            });
        }
        Ok(out)
    }
}

fn merge_json_row(
    tx: &rusqlite::Transaction<'_>,
    select: &str,
    upsert: &str,
    key: &[&dyn rusqlite::ToSql],
    c: &Counters,
) -> Result<(), StoreError> {
    let old: Option<String> = tx
        .prepare_cached(select)?
        .query_row(key, |r| r.get(0))
        .optional()?;
    let merged = match old {
        Some(s) => {
            let mut m: Counters = serde_json::from_str(&s)?;
            m.merge(c);
            m
        }
        None => c.clone(),
    };
    let json = serde_json::to_string(&merged)?;
    let mut p: Vec<&dyn rusqlite::ToSql> = key.to_vec();
    p.push(&json);
    tx.prepare_cached(upsert)?.execute(p.as_slice())?;
    Ok(())
}

impl Store for SqliteStore {
    fn ingest(
        &mut self,
        report: &NodeReport,
        rows: &Rows,
        now_ns: u64,
    ) -> Result<Ingest, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let node = report.node.as_str();
        let fresh = tx.execute(
            "INSERT OR IGNORE INTO reports(node, instance, seq, received_ns, flows) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![node, i(report.instance), i(report.seq), i(now_ns), report.flows.len() as i64],
        )? == 1;
        let meta = serde_json::to_string(&report.meta)?;
        tx.execute(
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
            params![
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
            ],
        )?;
        if !fresh {
            tx.commit()?;
            return Ok(Ingest::Duplicate);
        }
        for ((service, res, bucket), c) in &rows.services {
            merge_json_row(
                &tx,
                "SELECT c FROM service_buckets WHERE service = ?1 AND node = ?2 AND res = ?3 AND bucket = ?4",
                "INSERT OR REPLACE INTO service_buckets(service, node, res, bucket, c) VALUES (?1, ?2, ?3, ?4, ?5)",
                &[service, &node, &res.secs(), &i(*bucket)],
                c,
            )?;
        }
        for ((service, subnet, res, bucket), c) in &rows.paths {
            merge_json_row(
                &tx,
                "SELECT c FROM path_buckets WHERE service = ?1 AND subnet = ?2 AND node = ?3 AND res = ?4 AND bucket = ?5",
                "INSERT OR REPLACE INTO path_buckets(service, subnet, node, res, bucket, c) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                &[service, subnet, &node, &res.secs(), &i(*bucket)],
                c,
            )?;
        }
        for (service, c) in &rows.totals {
            merge_json_row(
                &tx,
                "SELECT c FROM service_totals WHERE service = ?1",
                "INSERT OR REPLACE INTO service_totals(service, c) VALUES (?1, ?2)",
                &[service],
                c,
            )?;
        }
        for (id, (service, st)) in &rows.flows {
            let old: Option<String> = tx
                .prepare_cached("SELECT state FROM flows WHERE node = ?1 AND id = ?2")?
                .query_row(params![node, id], |r| r.get(0))
                .optional()?;
            let merged = match old {
                Some(s) => {
                    let mut m: FlowState = serde_json::from_str(&s)?;
                    merge_flow(&mut m, st);
                    m
                }
                None => st.clone(),
            };
            let r = &merged.record;
            let p99 = r.c2s.rtt.p99_ns.max(r.s2c.rtt.p99_ns).unwrap_or(0);
            tx.prepare_cached(
                "INSERT OR REPLACE INTO flows(node, id, service, first_ns, last_ns, bytes, retransmits, stall_ns, rtt_p99_ns, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                node,
                id,
                service,
                i(r.first_ns),
                i(r.last_ns),
                i(r.c2s.bytes.saturating_add(r.s2c.bytes)),
                i(r.c2s.retransmits.saturating_add(r.s2c.retransmits)),
                i(r.c2s.zero_window_ns.saturating_add(r.s2c.zero_window_ns)),
                i(p99),
                serde_json::to_string(&merged)?
            ])?;
        }
        for w in &report.probes {
            // A window is named by (node, target, start): the same window in
            // two reports (which a node never sends) is kept once.
            tx.prepare_cached(
                "INSERT OR IGNORE INTO probe_windows(node, target, start_ns, end_ns, w) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                node,
                w.target,
                i(w.start_ns),
                i(w.end_ns),
                serde_json::to_string(w)?
            ])?;
        }
        tx.commit()?;
        Ok(Ingest::Accepted)
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
             WHERE res = ?1 AND bucket >= ?2 AND (?3 IS NULL OR service = ?3 OR substr(service, 1, length(?3) + 1) = ?3 || '/') ORDER BY bucket",
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
             WHERE res = ?1 AND bucket >= ?2 AND (?3 IS NULL OR service = ?3 OR substr(service, 1, length(?3) + 1) = ?3 || '/') ORDER BY bucket",
            res,
            since_ns,
            service,
            true,
        )
    }

    fn flows(&mut self, q: &FlowQuery) -> Result<Vec<FlowRow>, StoreError> {
        let order = match q.sort {
            FlowSort::Worst => "retransmits DESC, stall_ns DESC, rtt_p99_ns DESC",
            FlowSort::Rtt => "rtt_p99_ns DESC",
            FlowSort::Bytes => "bytes DESC",
            FlowSort::Stall => "stall_ns DESC",
            FlowSort::Last => "last_ns DESC",
        };
        let sql = format!(
            "SELECT node, service, state FROM flows WHERE last_ns >= ?1 AND (?2 IS NULL OR service = ?2 OR substr(service, 1, length(?2) + 1) = ?2 || '/')
             AND (?3 IS NULL OR node = ?3) ORDER BY {order}, node, id LIMIT ?4"
        );
        let mut st = self.conn.prepare_cached(&sql)?;
        let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
        let mut rows = st.query(params![i(q.since_ns), q.service, q.node, limit])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let s: String = r.get(2)?;
            let st: FlowState = serde_json::from_str(&s)?;
            out.push(FlowRow {
                node: r.get(0)?,
                service: r.get(1)?,
                flow: st.record,
            });
        }
        Ok(out)
    }

    fn totals(&mut self) -> Result<Vec<(String, Counters)>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT service, c FROM service_totals ORDER BY service")?;
        let mut rows = st.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let c: String = r.get(1)?;
            out.push((r.get(0)?, serde_json::from_str(&c)?));
        }
        Ok(out)
    }

    fn prune(&mut self, now_ns: u64, r: &Retention) -> Result<u64, StoreError> {
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
            "DELETE FROM probe_windows WHERE end_ns < ?1",
            params![cut(r.flows_ns)],
        )?;
        n += tx.execute(
            "DELETE FROM reports WHERE received_ns < ?1",
            params![cut(r.reports_ns)],
        )?;
        tx.commit()?;
        Ok(n as u64)
    }

    fn check(&mut self) -> Result<(), StoreError> {
        self.conn.query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
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
        use crate::report::tests::window;
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
        // Prune far in the future removes buckets and flows, keeps totals.
        assert!(s.prune(u64::MAX / 2, &Retention::default()).unwrap() > 0);
        assert!(s.service_rows(Res::S10, 0, None).unwrap().is_empty());
        assert_eq!(s.totals().unwrap()[0].1.packets, 12);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
