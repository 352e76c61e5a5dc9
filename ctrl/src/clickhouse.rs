//! ClickHouse behind [`Store`]: any number of `ctrl serve` processes in
//! front of one ClickHouse give the same answers, because none of them keeps
//! state the others need.
//!
//! * Over ClickHouse's HTTP interface (the blocking `ureq` client the
//!   control plane already has; the store runs on the writer thread and the
//!   blocking readers). Rows go in and come back as `RowBinary`.
//! * Every row carries the report it came from, `(node, instance, seq)`.
//!   Non-replicated MergeTree has no insert deduplication in 18.16, and two
//!   processes may both take the same retried report, so reads keep one row
//!   per report and key (`LIMIT 1 BY ..., instance, seq`) and merge the rest
//!   in the same statement: the bucket tables have a column per counter
//!   and merge with `sum`/`max`/`min`/`sumMap` exactly as
//!   `Counters::merge` does (flows are merged in Rust, as in SQLite). A report is
//!   told apart as a duplicate by looking it up in `reports` first; when two
//!   processes race on the same report both may answer `accepted`, and it
//!   is still counted once.
//! * A batch is one `INSERT` per table; the `reports` rows go last, and the
//!   reports are acknowledged only after every insert of the batch returned
//!   200. A failed insert fails the batch (503); its retry is safe.
//! * Day partitions; retention drops whole days (`ALTER TABLE .. DROP
//!   PARTITION`: 18.16 has no table TTL).
//!
//! The schema and the reasons behind it: `docs/ctrl-clickhouse.md`.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wirelens_dataplane::stats::{histogram, Histogram};

use crate::agg::{worst_score, Counters, FlowState, Res, Rows};
use crate::report::{NodeReport, ProbeWindow};
use crate::store::{
    admit, enc, flows_by_node, trim_kept, BucketRow, Caps, FlowQuery, FlowRow, FlowSort, Ingest,
    Kept, NodeInfo, Retention, Store, StoreError, DEFAULT_MAX_SERVICES,
    DEFAULT_MAX_SERVICES_PER_NODE, DEFAULT_TOP_FLOWS, MAX_QUERY_ROWS, OTHER,
};

const SEC: u64 = 1_000_000_000;
const DAY_NS: u64 = 86_400 * SEC;
const HOUR_NS: u64 = 3_600 * SEC;
/// An hour of 1 min buckets is closed, and rolled up into `svc_1h`, this
/// long after its end (reports later than that re-roll their hour).
const CLOSE_AFTER_NS: u64 = 5 * 60 * SEC;
/// A report whose hour closes within this much is treated as late too, so
/// that a roll-up running at the same time in another process cannot miss it.
const CLOSE_GRACE_NS: u64 = 60 * SEC;

/// Where a ClickHouse store is: `clickhouse://HOST:PORT/DATABASE` and the
/// credentials of `--store-credentials`.
#[derive(Clone)]
pub struct ClickHouseConfig {
    /// `http://HOST:PORT`.
    pub base: String,
    pub database: String,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Longest one statement may take (the HTTP exchange).
    pub timeout: Duration,
}

impl std::fmt::Debug for ClickHouseConfig {
    /// Never prints the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseConfig")
            .field("base", &self.base)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

impl ClickHouseConfig {
    /// `clickhouse://HOST:PORT/DATABASE` (the HTTP port; 8123 when none is
    /// given). Credentials never go in the URL.
    pub fn parse(url: &str) -> Result<ClickHouseConfig, String> {
        let shape = "a ClickHouse store is clickhouse://HOST:PORT/DATABASE";
        let rest = url
            .strip_prefix("clickhouse://")
            .ok_or_else(|| format!("{url:?}: {shape}"))?;
        let (host, db) = rest
            .split_once('/')
            .ok_or_else(|| format!("{url:?}: no database; {shape}"))?;
        if host.contains('@') {
            return Err(format!(
                "{url:?}: credentials never go in the URL; put them in --store-credentials FILE"
            ));
        }
        let db = db.trim_end_matches('/');
        let ok_db = !db.is_empty()
            && db.len() <= 64
            && db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !db.starts_with(|c: char| c.is_ascii_digit());
        if !ok_db {
            return Err(format!(
                "{url:?}: the database name is letters, digits and _ (not first a digit)"
            ));
        }
        let has_port = match host.rsplit_once(':') {
            Some((h, p)) => {
                if p.parse::<u16>().is_err() || h.is_empty() {
                    return Err(format!("{url:?}: bad HOST:PORT; {shape}"));
                }
                true
            }
            None => false,
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || "?#".contains(c)) {
            return Err(format!("{url:?}: bad host; {shape}"));
        }
        Ok(ClickHouseConfig {
            base: if has_port {
                format!("http://{host}")
            } else {
                format!("http://{host}:8123")
            },
            database: db.to_string(),
            user: None,
            password: None,
            timeout: Duration::from_secs(30),
        })
    }

    /// Reads the credentials file: `user=NAME` and `password=SECRET` lines
    /// (blank lines and `#` comments allowed).
    pub fn with_credentials_file(mut self, path: &Path) -> Result<ClickHouseConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("store credentials {}: {e}", path.display()))?;
        for (k, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once('=').map(|(k, v)| (k.trim(), v)) {
                Some(("user", v)) => self.user = Some(v.trim().to_string()),
                Some(("password", v)) => self.password = Some(v.trim().to_string()),
                _ => {
                    return Err(format!(
                        "store credentials {} line {}: expected user=NAME or password=SECRET",
                        path.display(),
                        k + 1
                    ))
                }
            }
        }
        Ok(self)
    }

    /// The URL without credentials, for logs.
    pub fn display(&self) -> String {
        format!(
            "clickhouse://{}/{}",
            self.base.trim_start_matches("http://"),
            self.database
        )
    }
}

/// The tables, created and migrated by version at start (`{db}`: the
/// database). A migration only adds; see `docs/ctrl-clickhouse.md`.
const MIGRATIONS: &[&[&str]] = &[&[
    "CREATE TABLE IF NOT EXISTS {db}.reports (day Date, node String, instance UInt64, seq UInt64,
       received_ns UInt64, sent_ns UInt64, flows UInt64, dropped_reports UInt64,
       dropped_flows UInt64, meta String)
     ENGINE = MergeTree() PARTITION BY day ORDER BY (node, instance, seq)",
    "CREATE TABLE IF NOT EXISTS {db}.service_10s (day Date, service String, bucket UInt64,
       node String, instance UInt64, seq UInt64, c String)
     ENGINE = MergeTree() PARTITION BY day ORDER BY (service, bucket, node)",
    "CREATE TABLE IF NOT EXISTS {db}.service_1m (day Date, service String, bucket UInt64,
       node String, instance UInt64, seq UInt64, c String)
     ENGINE = MergeTree() PARTITION BY day ORDER BY (service, bucket, node)",
    "CREATE TABLE IF NOT EXISTS {db}.path_10s (day Date, service String, bucket UInt64,
       subnet String, node String, instance UInt64, seq UInt64, c String)
     ENGINE = MergeTree() PARTITION BY day ORDER BY (service, bucket, subnet, node)",
    "CREATE TABLE IF NOT EXISTS {db}.path_1m (day Date, service String, bucket UInt64,
       subnet String, node String, instance UInt64, seq UInt64, c String)
     ENGINE = MergeTree() PARTITION BY day ORDER BY (service, bucket, subnet, node)",
    "CREATE TABLE IF NOT EXISTS {db}.top_flows (day Date, service String, bucket UInt64,
       node String, id String, instance UInt64, seq UInt64, last_ns UInt64, state String)
     ENGINE = MergeTree() PARTITION BY day ORDER BY (service, bucket, node, id)",
    "CREATE TABLE IF NOT EXISTS {db}.probe_windows (day Date, node String, target String,
       start_ns UInt64, end_ns UInt64, instance UInt64, seq UInt64, w String)
     ENGINE = MergeTree() PARTITION BY day ORDER BY (node, target, start_ns)",
], &[
    // Version 2: the bucket tables with one column per counter (`{counters}`,
    // see `COUNTER_COLS`), so that ClickHouse merges them in SQL. The
    // version 1 tables (`service_10s` ...) are no longer written or read.
    "CREATE TABLE IF NOT EXISTS {db}.svc_10s (day Date, service String, bucket UInt64,
       node String, instance UInt64, seq UInt64, {counters})
     ENGINE = MergeTree() PARTITION BY day ORDER BY (service, bucket, node)",
    "CREATE TABLE IF NOT EXISTS {db}.svc_1m (day Date, service String, bucket UInt64,
       node String, instance UInt64, seq UInt64, {counters})
     ENGINE = MergeTree() PARTITION BY day ORDER BY (service, bucket, node)",
    "CREATE TABLE IF NOT EXISTS {db}.pth_10s (day Date, service String, bucket UInt64,
       subnet String, node String, instance UInt64, seq UInt64, {counters})
     ENGINE = MergeTree() PARTITION BY day ORDER BY (service, bucket, subnet, node)",
    "CREATE TABLE IF NOT EXISTS {db}.pth_1m (day Date, service String, bucket UInt64,
       subnet String, node String, instance UInt64, seq UInt64, {counters})
     ENGINE = MergeTree() PARTITION BY day ORDER BY (service, bucket, subnet, node)",
], &[
    // Version 3: the 1 min service rows of closed hours rolled up, one row
    // per (service, node, hour) and version (see `roll_up`); `rollup_mark`:
    // every hour before the highest `hour` there is rolled up.
    "CREATE TABLE IF NOT EXISTS {db}.svc_1h (day Date, service String, node String,
       hour UInt64, first_bucket UInt64, last_bucket UInt64, version UInt64, {counters})
     ENGINE = ReplacingMergeTree(version) PARTITION BY day ORDER BY (service, hour, node)",
    "CREATE TABLE IF NOT EXISTS {db}.rollup_mark (hour UInt64, set_ns UInt64)
     ENGINE = MergeTree() ORDER BY hour",
]];

/// One column per field of [`Counters`], written and read in this order,
/// and the aggregate that merges each in SQL exactly as
/// [`Counters::merge`] does.
macro_rules! counter_columns {
    (sum: [$($s:ident),* $(,)?], max: [$($m:ident),* $(,)?] $(,)?) => {
        /// The columns' declarations.
        const COUNTER_COLS: &str = concat!(
            $(stringify!($s), " UInt64, ",)*
            $(stringify!($m), " UInt64, ",)*
            "pmtu_min_mtu UInt64, retry_clients Array(String), ",
            "rs_n UInt64, rs_min UInt64, rs_max UInt64, rs_hi UInt64, rs_lo UInt64, ",
            "rs_idx Array(UInt16), rs_cnt Array(UInt64), ",
            "rc_n UInt64, rc_min UInt64, rc_max UInt64, rc_hi UInt64, rc_lo UInt64, ",
            "rc_idx Array(UInt16), rc_cnt Array(UInt64)"
        );
        /// The columns' names, for an INSERT.
        const COUNTER_NAMES: &str = concat!(
            $(stringify!($s), ", ",)*
            $(stringify!($m), ", ",)*
            "pmtu_min_mtu, retry_clients, ",
            "rs_n, rs_min, rs_max, rs_hi, rs_lo, rs_idx, rs_cnt, ",
            "rc_n, rc_min, rc_max, rc_hi, rc_lo, rc_idx, rc_cnt"
        );
        /// Their merge: sums, maxima, the smallest MTU (`u64::MAX`: none),
        /// the retrying clients' union (capped), each histogram's count,
        /// min, max, sum (two halves that cannot overflow) and buckets
        /// summed by index.
        const COUNTER_AGG: &str = concat!(
            $("sum(", stringify!($s), "), ",)*
            $("max(", stringify!($m), "), ",)*
            "min(pmtu_min_mtu), arraySlice(arraySort(groupUniqArrayArray(retry_clients)), 1, 256), ",
            "sum(rs_n), minIf(rs_min, rs_n > 0), max(rs_max), sum(rs_hi), sum(rs_lo), sumMap(rs_idx, rs_cnt), ",
            "sum(rc_n), minIf(rc_min, rc_n > 0), max(rc_max), sum(rc_hi), sum(rc_lo), sumMap(rc_idx, rc_cnt)"
        );

        fn put_counters(rb: &mut Rb, c: &Counters) -> Result<(), StoreError> {
            $(rb.u64(c.$s);)*
            $(rb.u64(c.$m);)*
            rb.u64(c.pmtu_min_mtu.map_or(u64::MAX, u64::from));
            rb.varint(c.retry_clients.len() as u64);
            for ip in &c.retry_clients {
                rb.str(&ip.to_string());
            }
            put_hist(rb, &c.rtt_server)?;
            put_hist(rb, &c.rtt_client)
        }

        fn get_counters(rd: &mut Rd<'_>) -> Result<Counters, StoreError> {
            let mut c = Counters::default();
            $(c.$s = rd.u64()?;)*
            $(c.$m = rd.u64()?;)*
            c.pmtu_min_mtu = u32::try_from(rd.u64()?).ok();
            for _ in 0..rd.varint()? {
                let ip = rd.string()?;
                c.retry_clients.insert(ip.parse().map_err(|_| {
                    StoreError::ClickHouse(format!("{ip:?} is not an address"))
                })?);
            }
            c.rtt_server = get_hist(rd)?;
            c.rtt_client = get_hist(rd)?;
            Ok(c)
        }
    };
}

counter_columns! {
    sum: [flows, deltas, packets, bytes, payload_bytes, data_packets, retransmits,
        retrans_seen, hole_fill, rto_retransmits, dup_acks, rst, zero_window_events,
        zero_window_ns, syn_retry_flows, syn_retries, refused, unanswered, pmtu_errors, frags,
        hol_holes, hol_open_ns_total, one_way_flows, one_way_retransmits, mss_clamped_flows,
        ecn_bleached_flows, ttl_changes],
    max: [max_packets_1ms, hol_open_ns_max],
}

/// A histogram's serialized form (that of `Histogram`'s serde, field for
/// field), to take it apart into columns and put it together again.
#[derive(Serialize, Deserialize)]
struct HistWire {
    sub_buckets: u32,
    count: u64,
    min: Option<u64>,
    max: Option<u64>,
    sum: u128,
    buckets: Vec<(u16, u64)>,
}

/// Count, min, max, sum (its bits 32.. and ..32, so that summing either
/// half over 2^32 rows cannot overflow), bucket indexes and counts.
fn put_hist(rb: &mut Rb, h: &Histogram) -> Result<(), StoreError> {
    let w: HistWire = postcard::from_bytes(&enc(h)?)?;
    rb.u64(w.count)
        .u64(w.min.unwrap_or(0))
        .u64(w.max.unwrap_or(0))
        .u64(u64::try_from(w.sum >> 32).unwrap_or(u64::MAX))
        .u64((w.sum & 0xffff_ffff) as u64);
    rb.varint(w.buckets.len() as u64);
    for (i, _) in &w.buckets {
        rb.0.extend_from_slice(&i.to_le_bytes());
    }
    rb.varint(w.buckets.len() as u64);
    for (_, n) in &w.buckets {
        rb.u64(*n);
    }
    Ok(())
}

fn get_hist(rd: &mut Rd<'_>) -> Result<Histogram, StoreError> {
    let (count, min, max, hi, lo) = (rd.u64()?, rd.u64()?, rd.u64()?, rd.u64()?, rd.u64()?);
    let idx: Vec<u16> = (0..rd.varint()?)
        .map(|_| rd.u16())
        .collect::<Result<_, _>>()?;
    let cnt: Vec<u64> = (0..rd.varint()?)
        .map(|_| rd.u64())
        .collect::<Result<_, _>>()?;
    if count == 0 {
        return Ok(Histogram::new());
    }
    let w = HistWire {
        sub_buckets: histogram::SUB_BUCKETS,
        count,
        min: Some(min),
        max: Some(max),
        sum: (u128::from(hi) << 32) + u128::from(lo),
        buckets: idx.into_iter().zip(cnt).collect(),
    };
    Ok(postcard::from_bytes(&enc(&w)?)?)
}

/// A `RowBinary` row being written.
#[derive(Default)]
struct Rb(Vec<u8>);

impl Rb {
    fn u64(&mut self, v: u64) -> &mut Rb {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// A `Date`: the day of `ns`.
    fn day(&mut self, ns: u64) -> &mut Rb {
        let d = u16::try_from(ns / DAY_NS).unwrap_or(u16::MAX);
        self.0.extend_from_slice(&d.to_le_bytes());
        self
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Rb {
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }
    /// A length (of a string or an array).
    fn varint(&mut self, mut n: u64) -> &mut Rb {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                self.0.push(byte);
                break;
            }
            self.0.push(byte | 0x80);
        }
        self
    }
    fn str(&mut self, s: &str) -> &mut Rb {
        self.bytes(s.as_bytes())
    }
}

/// A `RowBinary` answer being read.
struct Rd<'a>(&'a [u8]);

fn short() -> StoreError {
    StoreError::ClickHouse("an answer ends inside a row".into())
}

impl<'a> Rd<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.0.len() < n {
            return Err(short());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u64(&mut self) -> Result<u64, StoreError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn u32(&mut self) -> Result<u32, StoreError> {
        let b = self.take(4)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(b);
        Ok(u32::from_le_bytes(a))
    }
    fn u16(&mut self) -> Result<u16, StoreError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    /// A length (of a string or an array).
    fn varint(&mut self) -> Result<u64, StoreError> {
        let mut n: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(StoreError::ClickHouse("a length does not end".into()))
    }
    fn bytes(&mut self) -> Result<&'a [u8], StoreError> {
        let n = self.varint()?;
        self.take(usize::try_from(n).map_err(|_| short())?)
    }
    fn string(&mut self) -> Result<String, StoreError> {
        String::from_utf8(self.bytes()?.to_vec())
            .map_err(|_| StoreError::ClickHouse("a string is not UTF-8".into()))
    }
}

/// A string literal.
fn lit(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('\'');
    for c in s.chars() {
        if c == '\\' || c == '\'' {
            o.push('\\');
        }
        o.push(c);
    }
    o.push('\'');
    o
}

/// `service` means that service, or every protocol of an `ip:port`.
fn service_filter(service: Option<&str>) -> String {
    match service {
        Some(s) => format!(
            " AND (service = {} OR startsWith(service, {}))",
            lit(s),
            lit(&format!("{s}/"))
        ),
        None => String::new(),
    }
}

/// The bucket tables: (table, its columns).
fn bucket_table(paths: bool, res: Res) -> &'static str {
    match (paths, res) {
        (false, Res::S10) => "svc_10s",
        (false, Res::M1) => "svc_1m",
        (true, Res::S10) => "pth_10s",
        (true, Res::M1) => "pth_1m",
    }
}

/// ClickHouse behind [`Store`].
pub struct ClickHouseStore {
    cfg: Arc<ClickHouseConfig>,
    agent: ureq::Agent,
    top: usize,
    /// This process's admission state of the flows view (see the SQLite
    /// store): each process keeps at most `top` per bucket of what it saw.
    kept: Kept,
    caps: Option<Caps>,
    max_services: (usize, usize),
    /// Query deadline (ns since the epoch) and the budget it came from (ms).
    deadline: Option<(u64, u64)>,
}

impl std::fmt::Debug for ClickHouseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseStore")
            .field("cfg", &self.cfg)
            .field("top", &self.top)
            .finish_non_exhaustive()
    }
}

impl ClickHouseStore {
    /// Connects, creates the database and tables if needed and migrates
    /// them to this build's schema version.
    pub fn open(cfg: ClickHouseConfig) -> Result<ClickHouseStore, StoreError> {
        let s = ClickHouseStore::on(Arc::new(cfg));
        s.migrate()?;
        Ok(s)
    }

    fn on(cfg: Arc<ClickHouseConfig>) -> ClickHouseStore {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(cfg.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        ClickHouseStore {
            cfg,
            agent,
            top: DEFAULT_TOP_FLOWS,
            kept: HashMap::new(),
            caps: None,
            max_services: (DEFAULT_MAX_SERVICES, DEFAULT_MAX_SERVICES_PER_NODE),
            deadline: None,
        }
    }

    /// Keeps `n` flows per service and 1 min bucket besides event flows.
    pub fn with_top_flows(mut self, n: usize) -> ClickHouseStore {
        self.top = n;
        self
    }

    /// At most `total` services, and `per_node` per node; the rest are [`OTHER`].
    pub fn with_max_services(mut self, total: usize, per_node: usize) -> ClickHouseStore {
        self.max_services = (total, per_node);
        self.caps = None;
        self
    }

    /// `db.table`.
    fn t(&self, table: &str) -> String {
        format!("{}.{table}", self.cfg.database)
    }

    /// Runs `sql`; with `data`, `sql` is an INSERT and `data` its rows.
    /// Returns the answer's body.
    fn exec(&self, sql: &str, data: Option<&[u8]>) -> Result<Vec<u8>, StoreError> {
        let url = format!("{}/", self.cfg.base);
        let mut req = self
            .agent
            .post(&url)
            // An IN list of a whole batch's report names is longer than
            // the default 256 KiB.
            .query("max_query_size", "67108864")
            // Errors as a status code, not in the middle of a 200 answer.
            .query("wait_end_of_query", "1");
        if let Some((deadline, ms)) = self.deadline {
            let now = crate::now_ns();
            if now >= deadline {
                return Err(StoreError::Budget(ms));
            }
            let secs = (deadline - now).div_ceil(SEC).max(1);
            req = req
                .query("max_execution_time", secs.to_string())
                .query("timeout_overflow_mode", "throw");
        }
        if let Some(u) = &self.cfg.user {
            req = req.header("X-ClickHouse-User", u);
        }
        if let Some(p) = &self.cfg.password {
            req = req.header("X-ClickHouse-Key", p);
        }
        let resp = match data {
            Some(d) => req.query("query", sql).send(d),
            None => req.send(sql.as_bytes()),
        };
        let mut resp = resp.map_err(|e| {
            StoreError::ClickHouse(format!("{} did not answer: {e}", self.cfg.display()))
        })?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(4 << 30)
            .read_to_vec()
            .map_err(|e| {
                StoreError::ClickHouse(format!("{}: answer cut off: {e}", self.cfg.display()))
            })?;
        if status != 200 {
            let text = String::from_utf8_lossy(&body);
            let text = text.trim();
            // 159: TIMEOUT_EXCEEDED (max_execution_time).
            if let (true, Some((_, ms))) = (text.starts_with("Code: 159,"), self.deadline) {
                return Err(StoreError::Budget(ms));
            }
            return Err(StoreError::ClickHouse(format!(
                "{} answered {status}: {}",
                self.cfg.display(),
                text.chars().take(400).collect::<String>()
            )));
        }
        Ok(body)
    }

    fn insert(&self, table: &str, cols: &str, rows: &Rb) -> Result<(), StoreError> {
        if rows.0.is_empty() {
            return Ok(());
        }
        let sql = format!("INSERT INTO {} ({cols}) FORMAT RowBinary", self.t(table));
        self.exec(&sql, Some(&rows.0)).map(|_| ())
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let db = &self.cfg.database;
        self.exec(&format!("CREATE DATABASE IF NOT EXISTS {db}"), None)?;
        self.exec(
            &format!(
                "CREATE TABLE IF NOT EXISTS {db}.schema_version (version UInt32, applied_ns UInt64)
                 ENGINE = MergeTree() ORDER BY version"
            ),
            None,
        )?;
        let body = self.exec(
            &format!("SELECT toUInt32(max(version)) FROM {db}.schema_version FORMAT RowBinary"),
            None,
        )?;
        let have = Rd(&body).u32()? as usize;
        if have > MIGRATIONS.len() {
            return Err(StoreError::ClickHouse(format!(
                "{} holds schema version {have}, newer than this build's {}",
                self.cfg.display(),
                MIGRATIONS.len()
            )));
        }
        for (k, m) in MIGRATIONS.iter().enumerate().skip(have) {
            for stmt in *m {
                let stmt = stmt.replace("{db}", db).replace("{counters}", COUNTER_COLS);
                self.exec(&stmt, None)?;
            }
            let mut rb = Rb::default();
            rb.0.extend_from_slice(&(k as u32 + 1).to_le_bytes());
            rb.u64(crate::now_ns());
            self.insert("schema_version", "version, applied_ns", &rb)?;
        }
        Ok(())
    }

    /// The services already stored, in total and per node.
    fn load_caps(&self) -> Result<Caps, StoreError> {
        let mut c = Caps::new(self.max_services);
        let body = self.exec(
            &format!(
                "SELECT DISTINCT node, service FROM {} FORMAT RowBinary",
                self.t("svc_1m")
            ),
            None,
        )?;
        let mut rd = Rd(&body);
        while !rd.is_empty() {
            let node = rd.string()?;
            c.stored(node, rd.string()?);
        }
        Ok(c)
    }

    /// Which of `batch` are stored already (by this or another process).
    fn seen(
        &self,
        batch: &[(&NodeReport, &Rows)],
    ) -> Result<HashSet<(String, u64, u64)>, StoreError> {
        let mut out = HashSet::new();
        if batch.is_empty() {
            return Ok(out);
        }
        let names: Vec<String> = batch
            .iter()
            .map(|(r, _)| format!("({}, {}, {})", lit(&r.node), r.instance, r.seq))
            .collect();
        let body = self.exec(
            &format!(
                "SELECT node, instance, seq FROM {} WHERE (node, instance, seq) IN ({}) FORMAT RowBinary",
                self.t("reports"),
                names.join(", ")
            ),
            None,
        )?;
        let mut rd = Rd(&body);
        while !rd.is_empty() {
            out.insert((rd.string()?, rd.u64()?, rd.u64()?));
        }
        Ok(out)
    }

    /// Every hour before this one is in `svc_1h` (0: none yet).
    fn rollup_mark(&self) -> Result<u64, StoreError> {
        let body = self.exec(
            &format!(
                "SELECT toUInt64(max(hour)) FROM {} FORMAT RowBinary",
                self.t("rollup_mark")
            ),
            None,
        )?;
        Rd(&body).u64()
    }

    /// Writes the 1 min service rows of the hours `[from, to)` (of
    /// `services` only, when given) into `svc_1h` as a new version: one
    /// row per (service, node, hour), reports deduplicated and merged as
    /// [`merged_sql`] does. Safe to repeat and to run in several processes
    /// at once: reads take each key's highest version, and a version holds
    /// every row stored before it started.
    fn roll_up(
        &self,
        from: u64,
        to: u64,
        services: Option<&BTreeSet<String>>,
        now_ns: u64,
    ) -> Result<(), StoreError> {
        if from >= to {
            return Ok(());
        }
        let filter = match services {
            Some(s) => format!(
                " AND service IN ({})",
                s.iter().map(|x| lit(x)).collect::<Vec<_>>().join(", ")
            ),
            None => String::new(),
        };
        // `sumMap` answers a (keys, values) tuple: the two array columns.
        let mut agg = COUNTER_AGG.to_string();
        for h in ["rs", "rc"] {
            let m = format!("sumMap({h}_idx, {h}_cnt)");
            agg = agg.replace(&m, &format!("tupleElement({m}, 1), tupleElement({m}, 2)"));
        }
        let sql = format!(
            "INSERT INTO {} (day, service, node, hour, first_bucket, last_bucket, version, {COUNTER_NAMES})
             SELECT toDate(toUInt16(intDiv(h, {DAY_NS}))), service, node, h, toUInt64(min(bucket)),
               toUInt64(max(bucket)), toUInt64({now_ns}), {agg}
             FROM (SELECT *, intDiv(bucket, {HOUR_NS}) * {HOUR_NS} AS h FROM {}
                   WHERE day >= toDate({}) AND bucket >= {from} AND bucket < {to}{filter}
                   LIMIT 1 BY service, bucket, node, instance, seq)
             GROUP BY service, node, h",
            self.t("svc_1h"),
            self.t("svc_1m"),
            from / DAY_NS
        );
        self.exec(&sql, None).map(|_| ())
    }

    /// Rolls up the hours closed since the last time (at most a day of
    /// them per call) and moves the mark past them.
    fn roll_up_closed(&self, now_ns: u64) -> Result<(), StoreError> {
        let mark = self.rollup_mark()?;
        let closed = now_ns.saturating_sub(CLOSE_AFTER_NS) / HOUR_NS * HOUR_NS;
        let from = if mark == 0 {
            let body = self.exec(
                &format!(
                    "SELECT toUInt64(min(bucket)), toUInt64(count()) FROM {} FORMAT RowBinary",
                    self.t("svc_1m")
                ),
                None,
            )?;
            let mut rd = Rd(&body);
            let (first, n) = (rd.u64()?, rd.u64()?);
            if n == 0 {
                closed
            } else {
                first / HOUR_NS * HOUR_NS
            }
        } else {
            mark
        };
        let to = closed.min(from.saturating_add(24 * HOUR_NS));
        if to <= mark {
            return Ok(());
        }
        self.roll_up(from, to, None, now_ns)?;
        let mut rb = Rb::default();
        rb.u64(to).u64(now_ns);
        self.insert("rollup_mark", "hour, set_ns", &rb)
    }

    /// Bucket rows merged by ClickHouse into one per (service, subnet,
    /// node, bucket), oldest bucket first. At most `cap` rows (`None`: all).
    fn bucket_rows(
        &self,
        paths: bool,
        res: Res,
        since_ns: u64,
        service: Option<&str>,
        cap: Option<usize>,
    ) -> Result<Vec<BucketRow>, StoreError> {
        let keys = if paths {
            "service, subnet, node, bucket"
        } else {
            "service, node, bucket"
        };
        let order = if paths {
            "bucket, service, subnet, node"
        } else {
            "bucket, service, node"
        };
        let sql = merged_sql(
            &self.t(bucket_table(paths, res)),
            since_ns,
            &service_filter(service),
            keys,
            "",
            order,
            cap.map(|n| n + 1),
        );
        let body = self.exec(&sql, None)?;
        let mut rd = Rd(&body);
        let mut out = Vec::new();
        while !rd.is_empty() {
            if cap.is_some_and(|c| out.len() >= c) {
                return Err(StoreError::TooManyRows(MAX_QUERY_ROWS));
            }
            let service = rd.string()?;
            let subnet = if paths { Some(rd.string()?) } else { None };
            let node = rd.string()?;
            let bucket = rd.u64()?;
            out.push(BucketRow {
                service,
                subnet,
                node,
                bucket,
                counters: get_counters(&mut rd)?,
            });
        }
        Ok(out)
    }

    /// The window merged by ClickHouse per (service, subnet, node): a row
    /// of the merged counters at the first bucket and, when it differs, an
    /// empty one at the last (see [`Store::window_rows`]).
    fn span_rows(
        &self,
        paths: bool,
        res: Res,
        since_ns: u64,
        service: Option<&str>,
    ) -> Result<Vec<BucketRow>, StoreError> {
        let keys = if paths {
            "service, subnet, node"
        } else {
            "service, node"
        };
        // Whole hours of the window before the mark come from `svc_1h`.
        let first_hour = since_ns.div_ceil(HOUR_NS) * HOUR_NS;
        let mark = if !paths && res == Res::M1 {
            self.rollup_mark()?
        } else {
            0
        };
        let sql = if mark > first_hour {
            rolled_sql(
                &self.t("svc_1h"),
                &self.t("svc_1m"),
                since_ns,
                (first_hour, mark),
                &service_filter(service),
                MAX_QUERY_ROWS / 2 + 1,
            )
        } else {
            merged_sql(
                &self.t(bucket_table(paths, res)),
                since_ns,
                &service_filter(service),
                keys,
                "toUInt64(min(bucket)), toUInt64(max(bucket)), ",
                keys,
                Some(MAX_QUERY_ROWS / 2 + 1),
            )
        };
        let body = self.exec(&sql, None)?;
        let mut rd = Rd(&body);
        let mut out = Vec::new();
        while !rd.is_empty() {
            if out.len() >= MAX_QUERY_ROWS {
                return Err(StoreError::TooManyRows(MAX_QUERY_ROWS));
            }
            let service = rd.string()?;
            let subnet = if paths { Some(rd.string()?) } else { None };
            let node = rd.string()?;
            let (first, last) = (rd.u64()?, rd.u64()?);
            let counters = get_counters(&mut rd)?;
            if last != first {
                out.push(BucketRow {
                    service: service.clone(),
                    subnet: subnet.clone(),
                    node: node.clone(),
                    bucket: last,
                    counters: Counters::default(),
                });
            }
            out.push(BucketRow {
                service,
                subnet,
                node,
                bucket: first,
                counters,
            });
        }
        Ok(out)
    }
}

/// The rows of bucket table `table` from `since_ns` on (and `filter`),
/// one per key and report (a report stored twice counts once), merged in
/// ClickHouse per `keys`: `keys`, `extra` (aggregates before the
/// counters), the counters ([`get_counters`]), ordered by `order`.
fn merged_sql(
    table: &str,
    since_ns: u64,
    filter: &str,
    keys: &str,
    extra: &str,
    order: &str,
    limit: Option<usize>,
) -> String {
    // The dedup key: every key column of the table and the report's name.
    let by = if keys.contains("subnet") {
        "service, bucket, subnet, node, instance, seq"
    } else {
        "service, bucket, node, instance, seq"
    };
    let limit = limit.map_or(String::new(), |n| format!(" LIMIT {n}"));
    format!(
        "SELECT {keys}, {extra}{COUNTER_AGG}
         FROM (SELECT * FROM {table} WHERE day >= toDate({}) AND bucket >= {since_ns}{filter}
               LIMIT 1 BY {by})
         GROUP BY {keys} ORDER BY {order}{limit} FORMAT RowBinary",
        since_ns / DAY_NS
    )
}

/// [`merged_sql`] per (service, node) over the 1 min service rows from
/// `since_ns` on, with the hours `[from, to)` read from the roll-up `hours`
/// (each key's highest version) and only the rest from `raw`: the keys,
/// first and last bucket, the counters.
fn rolled_sql(
    hours: &str,
    raw: &str,
    since_ns: u64,
    (from, to): (u64, u64),
    filter: &str,
    limit: usize,
) -> String {
    format!(
        "SELECT service, node, toUInt64(min(fb)), toUInt64(max(lb)), {COUNTER_AGG}
         FROM (SELECT service, node, first_bucket AS fb, last_bucket AS lb, {COUNTER_NAMES}
               FROM (SELECT * FROM {hours}
                     WHERE day >= toDate({}) AND hour >= {from} AND hour < {to}{filter}
                     ORDER BY version DESC LIMIT 1 BY service, hour, node)
               UNION ALL
               SELECT service, node, bucket AS fb, bucket AS lb, {COUNTER_NAMES}
               FROM (SELECT * FROM {raw}
                     WHERE day >= toDate({}) AND bucket >= {since_ns}
                       AND (bucket < {from} OR bucket >= {to}){filter}
                     LIMIT 1 BY service, bucket, node, instance, seq))
         GROUP BY service, node ORDER BY service, node LIMIT {limit} FORMAT RowBinary",
        from / DAY_NS,
        since_ns / DAY_NS
    )
}

impl Store for ClickHouseStore {
    fn reader(&self) -> Result<Box<dyn Store>, StoreError> {
        let mut r = ClickHouseStore::on(Arc::clone(&self.cfg));
        r.top = self.top;
        r.max_services = self.max_services;
        Ok(Box::new(r))
    }

    fn set_deadline(&mut self, deadline_ns: Option<u64>, budget_ms: u64) {
        self.deadline = deadline_ns.map(|d| (d, budget_ms));
    }

    fn ingest_batch(
        &mut self,
        batch: &[(&NodeReport, &Rows)],
        now_ns: u64,
    ) -> Result<Vec<Ingest>, StoreError> {
        if self.caps.is_none() {
            self.caps = Some(self.load_caps()?);
        }
        let seen = self.seen(batch)?;
        let mut names: HashSet<(&str, u64, u64)> = HashSet::new();
        let out: Vec<Ingest> = batch
            .iter()
            .map(|(r, _)| {
                let key = (r.node.as_str(), r.instance, r.seq);
                if !seen.contains(&(r.node.clone(), r.instance, r.seq)) && names.insert(key) {
                    Ingest::Accepted
                } else {
                    Ingest::Duplicate
                }
            })
            .collect();
        let (top, kept) = (self.top, &mut self.kept);
        let caps = self.caps.get_or_insert_with(|| {
            Caps::new((DEFAULT_MAX_SERVICES, DEFAULT_MAX_SERVICES_PER_NODE))
        });
        let (mut s10, mut m1, mut p10, mut p1m) =
            (Rb::default(), Rb::default(), Rb::default(), Rb::default());
        let (mut flows, mut probes, mut reports) = (Rb::default(), Rb::default(), Rb::default());
        // Closed hours this batch adds 1 min service rows to, and their services.
        let mut late: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
        for ((report, rows), o) in batch.iter().zip(&out) {
            let (node, inst, seq) = (report.node.as_str(), report.instance, report.seq);
            // Every arrival, a duplicate too (it counts in `nodes`).
            reports
                .day(now_ns)
                .str(node)
                .u64(inst)
                .u64(seq)
                .u64(now_ns)
                .u64(report.sent_ns)
                .u64(report.flows.len() as u64)
                .u64(report.dropped_reports)
                .u64(report.dropped_flows)
                .str(&serde_json::to_string(&report.meta)?);
            if *o != Ingest::Accepted {
                continue;
            }
            // Services past the caps are stored as OTHER (which may merge
            // several of this report's rows into one).
            let name: HashMap<&str, &str> = rows
                .totals
                .keys()
                .map(|s| {
                    let n = if caps.keep(node, s) {
                        s.as_str()
                    } else {
                        OTHER
                    };
                    (s.as_str(), n)
                })
                .collect();
            let named = |s: &str| name.get(s).copied().unwrap_or(OTHER);
            let mut svc: BTreeMap<(Res, &str, u64), Counters> = BTreeMap::new();
            for ((service, res, bucket), c) in &rows.services {
                svc.entry((*res, named(service), *bucket))
                    .or_default()
                    .merge(c);
            }
            for ((res, service, bucket), c) in svc {
                let hour = bucket / HOUR_NS * HOUR_NS;
                if res == Res::M1 && hour + HOUR_NS + CLOSE_AFTER_NS <= now_ns + CLOSE_GRACE_NS {
                    late.entry(hour).or_default().insert(service.to_string());
                }
                let rb = if res == Res::S10 { &mut s10 } else { &mut m1 };
                rb.day(bucket)
                    .str(service)
                    .u64(bucket)
                    .str(node)
                    .u64(inst)
                    .u64(seq);
                put_counters(rb, &c)?;
            }
            let mut pth: BTreeMap<(Res, &str, &str, u64), Counters> = BTreeMap::new();
            for ((service, subnet, res, bucket), c) in &rows.paths {
                pth.entry((*res, named(service), subnet.as_str(), *bucket))
                    .or_default()
                    .merge(c);
            }
            for ((res, service, subnet, bucket), c) in pth {
                let rb = if res == Res::S10 { &mut p10 } else { &mut p1m };
                rb.day(bucket)
                    .str(service)
                    .u64(bucket)
                    .str(subnet)
                    .str(node)
                    .u64(inst)
                    .u64(seq);
                put_counters(rb, &c)?;
            }
            for (id, f) in &rows.flows {
                let service = named(&f.service);
                if !f.event && !admit(kept, top, service, f.bucket, worst_score(&f.state.record)) {
                    continue;
                }
                flows
                    .day(f.bucket)
                    .str(service)
                    .u64(f.bucket)
                    .str(node)
                    .str(id)
                    .u64(inst)
                    .u64(seq)
                    .u64(f.state.record.last_ns)
                    .bytes(&enc(&f.state)?);
            }
            for w in &report.probes {
                probes
                    .day(w.end_ns)
                    .str(node)
                    .str(&w.target)
                    .u64(w.start_ns)
                    .u64(w.end_ns)
                    .u64(inst)
                    .u64(seq)
                    .str(&serde_json::to_string(w)?);
            }
        }
        let bucket_cols = format!("day, service, bucket, node, instance, seq, {COUNTER_NAMES}");
        let path_cols =
            format!("day, service, bucket, subnet, node, instance, seq, {COUNTER_NAMES}");
        self.insert("svc_10s", &bucket_cols, &s10)?;
        self.insert("svc_1m", &bucket_cols, &m1)?;
        self.insert("pth_10s", &path_cols, &p10)?;
        self.insert("pth_1m", &path_cols, &p1m)?;
        self.insert(
            "top_flows",
            "day, service, bucket, node, id, instance, seq, last_ns, state",
            &flows,
        )?;
        self.insert(
            "probe_windows",
            "day, node, target, start_ns, end_ns, instance, seq, w",
            &probes,
        )?;
        // A late report's closed hours are rolled up again (a new version),
        // before the report counts as stored.
        for (hour, services) in &late {
            self.roll_up(*hour, hour + HOUR_NS, Some(services), now_ns)?;
        }
        // Last: a report is known as stored only once all its rows are.
        self.insert(
            "reports",
            "day, node, instance, seq, received_ns, sent_ns, flows, dropped_reports, dropped_flows, meta",
            &reports,
        )?;
        trim_kept(&mut self.kept, now_ns);
        Ok(out)
    }

    fn nodes(&mut self) -> Result<Vec<NodeInfo>, StoreError> {
        // Per report first (its arrivals: the first is the report, the
        // others duplicates), then per node.
        let sql = format!(
            "SELECT node, toUInt64(min(f)), toUInt64(max(l)), toUInt64(max(sent)),
               toUInt64(argMax(instance, l)), toUInt64(argMax(seq, l)), toUInt64(count()),
               toUInt64(sum(n) - count()), toUInt64(sum(flows)), toUInt64(max(dr)),
               toUInt64(max(df)), argMax(meta, l)
             FROM (SELECT node, instance, seq, min(received_ns) AS f, max(received_ns) AS l,
                     max(sent_ns) AS sent, count() AS n, any(flows) AS flows,
                     max(dropped_reports) AS dr, max(dropped_flows) AS df,
                     argMax(meta, received_ns) AS meta
                   FROM {} GROUP BY node, instance, seq)
             GROUP BY node ORDER BY node FORMAT RowBinary",
            self.t("reports")
        );
        let body = self.exec(&sql, None)?;
        let mut rd = Rd(&body);
        let mut out = Vec::new();
        while !rd.is_empty() {
            out.push(NodeInfo {
                node: rd.string()?,
                first_seen_ns: rd.u64()?,
                last_seen_ns: rd.u64()?,
                last_sent_ns: rd.u64()?,
                instance: rd.u64()?,
                last_seq: rd.u64()?,
                reports: rd.u64()?,
                duplicates: rd.u64()?,
                flow_deltas: rd.u64()?,
                dropped_reports: rd.u64()?,
                dropped_flows: rd.u64()?,
                meta: serde_json::from_slice(rd.bytes()?)?,
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
        self.bucket_rows(false, res, since_ns, service, Some(MAX_QUERY_ROWS))
    }

    fn path_rows(
        &mut self,
        res: Res,
        since_ns: u64,
        service: Option<&str>,
    ) -> Result<Vec<BucketRow>, StoreError> {
        self.bucket_rows(true, res, since_ns, service, Some(MAX_QUERY_ROWS))
    }

    fn window_rows(
        &mut self,
        paths: bool,
        res: Res,
        since_ns: u64,
        service: Option<&str>,
    ) -> Result<Vec<BucketRow>, StoreError> {
        self.span_rows(paths, res, since_ns, service)
    }

    fn flows(&mut self, q: &FlowQuery) -> Result<Vec<FlowRow>, StoreError> {
        // The flows of (service, bucket, node, id) whose merged last packet
        // is at or after `since`: some report's row is.
        let mut filter = service_filter(q.service.as_deref());
        if let Some(n) = &q.node {
            filter.push_str(&format!(" AND node = {}", lit(n)));
        }
        let t = self.t("top_flows");
        let sql = format!(
            "SELECT service, bucket, node, id, state FROM {t}
             WHERE (service, bucket, node, id) IN
               (SELECT service, bucket, node, id FROM {t} WHERE last_ns >= {}{filter}){filter}
             LIMIT 1 BY service, bucket, node, id, instance, seq LIMIT {} FORMAT RowBinary",
            q.since_ns,
            MAX_QUERY_ROWS + 1
        );
        let body = self.exec(&sql, None)?;
        let mut rd = Rd(&body);
        let mut merged: BTreeMap<(String, u64, String, String), FlowState> = BTreeMap::new();
        let mut n = 0usize;
        while !rd.is_empty() {
            n += 1;
            if n > MAX_QUERY_ROWS {
                return Err(StoreError::TooManyRows(MAX_QUERY_ROWS));
            }
            let key = (rd.string()?, rd.u64()?, rd.string()?, rd.string()?);
            let st: FlowState = postcard::from_bytes(rd.bytes()?)?;
            match merged.entry(key) {
                std::collections::btree_map::Entry::Occupied(mut o) => {
                    crate::agg::merge_flow(o.get_mut(), &st)
                }
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(st);
                }
            }
        }
        // The order of the SQLite store's columns, computed from the merged rows.
        let mut rows: Vec<((String, u64, String, String), FlowState)> =
            merged.into_iter().collect();
        let key = |st: &FlowState| {
            let r = &st.record;
            let (retx, stall, p99) = worst_score(r);
            match q.sort {
                FlowSort::Worst => (retx, stall, p99),
                FlowSort::Rtt => (p99, 0, 0),
                FlowSort::Bytes => (r.c2s.bytes.saturating_add(r.s2c.bytes), 0, 0),
                FlowSort::Stall => (stall, 0, 0),
                FlowSort::Last => (r.last_ns, 0, 0),
            }
        };
        rows.sort_by(|(ka, a), (kb, b)| {
            key(b)
                .cmp(&key(a))
                .then_with(|| (&ka.2, &ka.3).cmp(&(&kb.2, &kb.3)))
        });
        rows.truncate(q.limit);
        Ok(flows_by_node(rows.into_iter().map(
            |((service, _, node, id), st)| (node, service, id, st),
        )))
    }

    fn probe_windows(
        &mut self,
        since_ns: u64,
        target: Option<&str>,
        node: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, ProbeWindow)>, StoreError> {
        let mut filter = String::new();
        if let Some(t) = target {
            filter.push_str(&format!(" AND target = {}", lit(t)));
        }
        if let Some(n) = node {
            filter.push_str(&format!(" AND node = {}", lit(n)));
        }
        let sql = format!(
            "SELECT node, w FROM {} WHERE day >= toDate({}) AND end_ns >= {since_ns}{filter}
             ORDER BY end_ns DESC, node, target LIMIT 1 BY node, target, start_ns LIMIT {limit}
             FORMAT RowBinary",
            self.t("probe_windows"),
            since_ns / DAY_NS
        );
        let body = self.exec(&sql, None)?;
        let mut rd = Rd(&body);
        let mut out = Vec::new();
        while !rd.is_empty() {
            let node = rd.string()?;
            out.push((node, serde_json::from_slice(rd.bytes()?)?));
        }
        out.reverse();
        Ok(out)
    }

    fn totals(&mut self) -> Result<Vec<(String, Counters)>, StoreError> {
        // The 1 min rows merge to the totals exactly; over their retention.
        let body = self.exec(
            &merged_sql(&self.t("svc_1m"), 0, "", "service", "", "service", None),
            None,
        )?;
        let mut rd = Rd(&body);
        let mut out = Vec::new();
        while !rd.is_empty() {
            out.push((rd.string()?, get_counters(&mut rd)?));
        }
        Ok(out)
    }

    fn prune(&mut self, now_ns: u64, r: &Retention) -> Result<u64, StoreError> {
        // The same timer rolls up the hours closed since.
        self.roll_up_closed(now_ns)?;
        let mut n = 0;
        for (table, keep) in [
            ("svc_10s", r.s10_ns),
            ("pth_10s", r.s10_ns),
            ("svc_1m", r.m1_ns),
            ("svc_1h", r.m1_ns),
            ("pth_1m", r.m1_ns),
            ("top_flows", r.flows_ns),
            ("probe_windows", r.flows_ns),
            ("reports", r.reports_ns),
        ] {
            // Whole days older than the cut.
            let cut_day = now_ns.saturating_sub(keep) / DAY_NS;
            let body = self.exec(
                &format!(
                    "SELECT partition, toUInt64(sum(rows)) FROM system.parts
                     WHERE database = {} AND table = {} AND active AND toUInt64(toUInt16(max_date)) < {cut_day}
                     GROUP BY partition FORMAT RowBinary",
                    lit(&self.cfg.database),
                    lit(table)
                ),
                None,
            )?;
            let mut rd = Rd(&body);
            while !rd.is_empty() {
                let part = rd.string()?;
                n += rd.u64()?;
                self.exec(
                    &format!(
                        "ALTER TABLE {} DROP PARTITION {}",
                        self.t(table),
                        lit(&part)
                    ),
                    None,
                )?;
            }
        }
        Ok(n)
    }

    fn check(&mut self) -> Result<(), StoreError> {
        self.exec("SELECT 1", None).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_credentials() {
        let c = ClickHouseConfig::parse("clickhouse://127.0.0.1:18123/wl").unwrap();
        assert_eq!(
            (c.base.as_str(), c.database.as_str()),
            ("http://127.0.0.1:18123", "wl")
        );
        let c = ClickHouseConfig::parse("clickhouse://ch.example/wl_2/").unwrap();
        assert_eq!(c.base, "http://ch.example:8123");
        for bad in [
            "http://127.0.0.1:8123/wl",
            "clickhouse://127.0.0.1:8123",
            "clickhouse://u:p@127.0.0.1:8123/wl",
            "clickhouse://127.0.0.1:8123/w-l",
            "clickhouse://127.0.0.1:99999/wl",
            "clickhouse://127.0.0.1:8123/1wl",
        ] {
            assert!(ClickHouseConfig::parse(bad).is_err(), "{bad}");
        }
        let d = std::env::temp_dir().join(format!("wl-ch-cred-{}", std::process::id()));
        std::fs::write(&d, "# ch\nuser=wl\npass=s3cret\n").unwrap();
        assert!(
            c.clone().with_credentials_file(&d).is_err(),
            "an unknown key"
        );
        std::fs::write(&d, "# ch\nuser=wl\npassword=s3cret\n\n").unwrap();
        let c = c.with_credentials_file(&d).unwrap();
        assert_eq!(c.user.as_deref(), Some("wl"));
        assert!(!format!("{c:?}").contains("s3cret"), "{c:?}");
        let _ = std::fs::remove_file(&d);
    }

    #[test]
    fn row_binary_round_trips() {
        let mut rb = Rb::default();
        let long = "x".repeat(300);
        rb.str("a'b").u64(7).bytes(&[0, 255]).str(&long);
        let mut rd = Rd(&rb.0);
        assert_eq!(rd.string().unwrap(), "a'b");
        assert_eq!(rd.u64().unwrap(), 7);
        assert_eq!(rd.bytes().unwrap(), [0, 255]);
        assert_eq!(rd.string().unwrap(), long);
        assert!(rd.is_empty());
        assert!(Rd(&[5, b'a']).string().is_err(), "a cut string is an error");
        assert_eq!(lit(r"a'b\c"), r"'a\'b\\c'");
    }

    #[test]
    fn counters_round_trip_through_their_columns() {
        let mut c = Counters {
            flows: 3,
            bytes: 1 << 40,
            max_packets_1ms: 9,
            pmtu_min_mtu: Some(1280),
            ttl_changes: 2,
            ..Counters::default()
        };
        c.retry_clients.insert("198.18.0.7".parse().unwrap());
        c.retry_clients.insert("2001:db8::1".parse().unwrap());
        for v in [5, 70, 1_000_000, 3_000_000_000] {
            c.rtt_server.record(v);
        }
        let mut rb = Rb::default();
        put_counters(&mut rb, &c).unwrap();
        put_counters(&mut rb, &Counters::default()).unwrap();
        let mut rd = Rd(&rb.0);
        assert_eq!(get_counters(&mut rd).unwrap(), c);
        assert_eq!(get_counters(&mut rd).unwrap(), Counters::default());
        assert!(rd.is_empty());
        // The column list names one column per value written.
        assert_eq!(
            COUNTER_NAMES.split(", ").count(),
            COUNTER_COLS.split(", ").count()
        );
    }
}
