//! The HTTP API (axum on tokio).
//!
//! | route | what |
//! |---|---|
//! | `POST /api/v1/report` | a [`NodeReport`]; `Authorization: Bearer TOKEN`; 200 `{"status":"accepted"\|"duplicate",...}` only after the store committed |
//! | `GET /api/v1/nodes` | nodes: `sort=name\|last_seen\|flows`, `limit` |
//! | `GET /api/v1/services` | services merged over nodes: `since`, `sort=worst\|bytes\|packets\|flows\|rtt\|retrans\|name`, `limit`, `service`, `paths` (client subnets per service, default 3) |
//! | `GET /api/v1/flows` | flows: `since`, `sort=worst\|rtt\|bytes\|stall\|last`, `limit`, `service`, `node` |
//! | `GET /api/v1/alerts` | firing alerts: `since`, `service`, `limit` |
//! | `GET /api/v1/probes` | probe results per target and node (`wirelens run --probe`), merged over `since` (default `1h`): loss up/down, RTT, jitter, latest state; `target`, `node` |
//! | `GET /api/v1/probes/windows` | the probe windows themselves, oldest first: `since` (default `1h`), `target`, `node`, `limit` (default 1000, the newest) |
//! | `GET /metrics` | OpenMetrics text: per-service totals and RTT histograms (labels `server`, `port`, `proto`; at most `metrics_services` services, the rest under `_other`), probe loss and RTT, report counters; see [`crate::metrics`] |
//! | `GET /healthz` | `{"status":"ok"}` when the store answers (with the disk reserve's state; 503 `disk_full` while the disk is full) |
//!
//! Errors are JSON `{"error": REASON}` with a 4xx (the request is wrong: 400
//! malformed, 401 no or bad token, 403 token not valid for the node, 413 too
//! large, 415 not JSON, 422 invalid report, 429 over the node's rate limit,
//! with `Retry-After`) or 503 (the store failed; retry). `since` is an
//! age (`15m`, `2h`) or ns since the epoch. Handlers do not panic on any input;
//! tokens are never logged (the log lines name nodes, never tokens).
//!
//! Hardening, all optional and off by default except the body limit and the
//! rate limit: TLS ([`ServerConfig::tls`], rustls, see [`crate::tls`]); read
//! API authentication ([`ServerConfig::api_tokens`]: every GET but `/healthz`
//! then needs `Authorization: Bearer` with one of those tokens; node tokens do
//! not open the read API); the per-node rate limit of reports
//! ([`ServerConfig::rate_limit`], [`crate::limit`]).
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::agg::{self, merge_by_key, PathSummary, Res, ServiceSummary};
use crate::alerts::{self, Alert, AlertConfig, Series};
use crate::auth::{bearer, Grant, Tokens};
use crate::clickhouse::{ClickHouseConfig, ClickHouseStore};
use crate::limit::{Limiter, RateLimit};
use crate::report::NodeReport;
use crate::store::{DiskStatus, FlowQuery, FlowSort, Retention, SqliteStore, Store, StoreError};
use crate::{now_ns, parse_since, utc};

/// Default request body limit.
pub const DEFAULT_BODY_LIMIT: usize = 8 << 20;

/// What `wirelens ctrl serve` configures.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub db: PathBuf,
    /// Tokens nodes report with.
    pub tokens: Tokens,
    pub body_limit: usize,
    pub retention: Retention,
    pub alerts: AlertConfig,
    /// Serve https with this certificate chain and key (PEM); plain http when `None`.
    pub tls: Option<TlsFiles>,
    /// Reports per node; `None`: unlimited.
    pub rate_limit: Option<RateLimit>,
    /// Tokens of the read API; `None`: GETs need no token.
    pub api_tokens: Option<Tokens>,
    /// Timeouts and the connection cap against slow or numerous clients.
    pub limits: ConnLimits,
    /// The ingest path and the read API's bounds.
    pub ingest: IngestConfig,
}

/// The ingest path and the read API's bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IngestConfig {
    /// Reports per shared token (one that any node may use), over all the
    /// node names it claims; `None`: only the per-node limit.
    pub token_rate_limit: Option<RateLimit>,
    /// Services kept in total and per node; the rest are stored as
    /// [`crate::store::OTHER`].
    pub max_services: usize,
    pub max_services_per_node: usize,
    /// Flows the flows view keeps per service and 1 min bucket besides
    /// those with an event.
    pub top_flows: usize,
    /// Reports waiting for the writer at most; beyond, 503 with Retry-After.
    pub queue: usize,
    /// Most flow deltas merged into one commit.
    pub batch_deltas: usize,
    /// Largest report after decompression, bytes (413 beyond).
    pub max_decoded: usize,
    /// Time budget of one read query; beyond, 503 with the reason.
    pub query_budget: Duration,
    /// Times (sent_ns, a delta's at_ns) further than this in the future are
    /// refused with 422.
    pub max_clock_skew: Duration,
    /// Services `/metrics` renders at most; the rest add up under `_other`.
    pub metrics_services: usize,
    /// Bytes of disk the SQLite store keeps in reserve for pruning a full
    /// disk (`DB.reserve`); 0: none.
    pub disk_reserve: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            token_rate_limit: None,
            max_services: crate::store::DEFAULT_MAX_SERVICES,
            max_services_per_node: crate::store::DEFAULT_MAX_SERVICES_PER_NODE,
            top_flows: crate::store::DEFAULT_TOP_FLOWS,
            queue: 256,
            batch_deltas: 200_000,
            max_decoded: 64 << 20,
            query_budget: Duration::from_secs(2),
            max_clock_skew: Duration::from_secs(600),
            metrics_services: crate::metrics::DEFAULT_METRICS_SERVICES,
            disk_reserve: crate::store::DEFAULT_DISK_RESERVE,
        }
    }
}

/// Work for the writer thread.
enum Job {
    Ingest {
        report: Box<NodeReport>,
        rows: agg::Rows,
        done: tokio::sync::oneshot::Sender<Result<crate::store::Ingest, String>>,
    },
    Prune {
        keep: Retention,
        done: tokio::sync::oneshot::Sender<Result<u64, String>>,
    },
}

/// The server's certificate chain and private key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA certificate(s) (PEM) that sign the clients' certificates: when
    /// given, every client must present a certificate signed by one of them
    /// (mutual TLS), or its handshake fails.
    pub client_ca: Option<PathBuf>,
}

/// Limits against slow clients (slowloris) and connection floods. A
/// connection is served by its own task, so a slow client holds only its own
/// connection, and at most `max_connections` of those.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Longest a client may take to send a request's head (request line and
    /// headers), counted from the start of the connection or from the end of
    /// the previous response: beyond, the connection is closed. An idle
    /// keep-alive connection is closed after this time too.
    pub header_timeout: Duration,
    /// Longest from a request's head to its answer, reading the body
    /// included: beyond, 408 and the connection is closed.
    pub request_timeout: Duration,
    /// Connections served at once; beyond, new connections are closed at
    /// once (and counted).
    pub max_connections: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 512,
        }
    }
}

/// Where the server's log lines go.
#[derive(Debug, Clone, Default)]
pub enum LogSink {
    /// One line per event on stderr.
    #[default]
    Stderr,
    /// Kept in memory (tests read what would have been logged).
    Memory(Arc<Mutex<Vec<String>>>),
}

/// Counters of the control plane itself.
#[derive(Debug, Default)]
struct SelfStats {
    accepted: AtomicU64,
    duplicate: AtomicU64,
    flow_deltas: AtomicU64,
    rejected: Mutex<BTreeMap<&'static str, u64>>,
}

/// Shared by the handlers.
pub struct AppState {
    /// Query connections; a query takes one that is free.
    readers: Vec<Mutex<Box<dyn Store>>>,
    next_reader: std::sync::atomic::AtomicUsize,
    /// The writer thread's queue (group commit).
    writer: std::sync::mpsc::SyncSender<Job>,
    ingest: IngestConfig,
    tokens: Tokens,
    api_tokens: Option<Tokens>,
    body_limit: usize,
    retention: Retention,
    alerts: AlertConfig,
    limiter: Option<Mutex<Limiter>>,
    /// Per shared token (keyed by its entry in the token file).
    token_limiter: Option<Mutex<Limiter>>,
    stats: SelfStats,
    log: LogSink,
    limits: ConnLimits,
    conns: ConnStats,
    /// The writer's disk reserve, when its store keeps one.
    disk: Option<Arc<DiskStatus>>,
}

/// What the connection limits cut off.
#[derive(Debug, Default)]
struct ConnStats {
    /// Connections closed at once because `max_connections` were open.
    over_cap: AtomicU64,
    /// Requests answered 408 because they did not complete in time.
    request_timeouts: AtomicU64,
    /// TLS handshakes that failed or timed out (the listener's counter; set
    /// when serving https).
    tls_failed: std::sync::OnceLock<Arc<AtomicU64>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("tokens", &self.tokens)
            .field("body_limit", &self.body_limit)
            .finish_non_exhaustive()
    }
}

/// Readers of the read API (each a WAL reader connection).
const READERS: usize = 3;

/// The writer: takes every report waiting (up to `batch_deltas` deltas),
/// merges and commits them in one transaction, then answers each.
fn writer_loop(mut store: Box<dyn Store>, rx: std::sync::mpsc::Receiver<Job>, batch_deltas: usize) {
    let mut pending: Option<Job> = None;
    loop {
        let first = match pending.take() {
            Some(j) => j,
            None => match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            },
        };
        let mut batch = Vec::new();
        match first {
            Job::Prune { keep, done } => {
                let _ = done.send(store.prune(now_ns(), &keep).map_err(|e| e.to_string()));
                continue;
            }
            j @ Job::Ingest { .. } => batch.push(j),
        }
        let mut deltas: usize = batch
            .iter()
            .map(|j| match j {
                Job::Ingest { report, .. } => report.flows.len(),
                Job::Prune { .. } => 0,
            })
            .sum();
        while deltas < batch_deltas {
            match rx.try_recv() {
                Ok(j @ Job::Ingest { .. }) => {
                    if let Job::Ingest { report, .. } = &j {
                        deltas += report.flows.len();
                    }
                    batch.push(j);
                }
                Ok(j) => {
                    pending = Some(j);
                    break;
                }
                Err(_) => break,
            }
        }
        let items: Vec<(&NodeReport, &agg::Rows)> = batch
            .iter()
            .filter_map(|j| match j {
                Job::Ingest { report, rows, .. } => Some((report.as_ref(), rows)),
                Job::Prune { .. } => None,
            })
            .collect();
        let res = store.ingest_batch(&items, now_ns());
        drop(items);
        for (k, j) in batch.into_iter().enumerate() {
            if let Job::Ingest { done, .. } = j {
                let _ = done.send(match &res {
                    Ok(v) => Ok(v[k]),
                    Err(e) => Err(e.to_string()),
                });
            }
        }
    }
}

impl AppState {
    /// Logging to stderr.
    pub fn new(store: Box<dyn Store>, cfg: &ServerConfig) -> Result<Arc<AppState>, StoreError> {
        AppState::with_log(store, cfg, LogSink::Stderr)
    }

    /// Takes `store` as the writer (on a thread of its own) and opens its
    /// readers.
    pub fn with_log(
        store: Box<dyn Store>,
        cfg: &ServerConfig,
        log: LogSink,
    ) -> Result<Arc<AppState>, StoreError> {
        let readers = (0..READERS)
            .map(|_| store.reader().map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        let disk = store.disk();
        let (tx, rx) = std::sync::mpsc::sync_channel(cfg.ingest.queue.max(1));
        let batch = cfg.ingest.batch_deltas.max(1);
        std::thread::Builder::new()
            .name("wl-ctrl-writer".into())
            .spawn(move || writer_loop(store, rx, batch))?;
        Ok(Arc::new(AppState {
            readers,
            next_reader: std::sync::atomic::AtomicUsize::new(0),
            writer: tx,
            ingest: cfg.ingest,
            tokens: cfg.tokens.clone(),
            api_tokens: cfg.api_tokens.clone(),
            body_limit: cfg.body_limit,
            retention: cfg.retention,
            alerts: cfg.alerts.clone(),
            limiter: cfg.rate_limit.map(|l| Mutex::new(Limiter::new(l))),
            token_limiter: cfg
                .ingest
                .token_rate_limit
                .map(|l| Mutex::new(Limiter::new(l))),
            stats: SelfStats::default(),
            log,
            limits: cfg.limits,
            conns: ConnStats::default(),
            disk,
        }))
    }

    /// Logs one line (never a token: callers pass node names and reasons).
    fn log(&self, msg: impl std::fmt::Display) {
        let line = format!("{} wirelens ctrl: {msg}", utc(now_ns()));
        match &self.log {
            LogSink::Stderr => eprintln!("{line}"),
            LogSink::Memory(v) => v.lock().unwrap_or_else(PoisonError::into_inner).push(line),
        }
    }

    /// `Some(429 answer)` when `node` is over its rate limit now.
    fn rate_limited(&self, node: &str) -> Option<Response> {
        self.limited(
            self.limiter.as_ref()?,
            node,
            &format!("node {node:?}"),
            "rate_limited",
        )
    }

    /// `Some(429 answer)` when shared token `entry` is over its own limit.
    fn token_rate_limited(&self, entry: usize) -> Option<Response> {
        self.limited(
            self.token_limiter.as_ref()?,
            &format!("token#{entry}"),
            &format!("shared token #{} of the token file", entry + 1),
            "token_rate_limited",
        )
    }

    fn limited(
        &self,
        limiter: &Mutex<Limiter>,
        key: &str,
        who: &str,
        why: &'static str,
    ) -> Option<Response> {
        let mut l = limiter.lock().unwrap_or_else(PoisonError::into_inner);
        let limit = l.limit();
        let secs = l.check(key, now_ns()).err()?;
        drop(l);
        self.reject(why);
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({
                "error": format!(
                    "{who} is over its rate limit of {} reports/s (bursts of {}); retry in {secs} s",
                    limit.per_sec, limit.burst
                ),
                "retry_after_s": secs,
            })),
        )
            .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        Some(r)
    }

    fn reject_query(&self, why: &'static str) {
        self.reject(why);
    }

    fn reject(&self, why: &'static str) {
        *self
            .stats
            .rejected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(why)
            .or_default() += 1;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// An error answer: `{"error": reason}`.
fn error(status: StatusCode, reason: impl Into<String>) -> Response {
    (status, Json(json!({ "error": reason.into() }))).into_response()
}

/// Runs a query on a reader connection off the async threads, under the
/// query budget. Never touches the writer.
async fn with_store<T: Send + 'static>(
    st: &Arc<AppState>,
    f: impl FnOnce(&mut dyn Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Response> {
    let st2 = Arc::clone(st);
    let r = tokio::task::spawn_blocking(move || {
        let n = st2.readers.len();
        let start = st2.next_reader.fetch_add(1, Ordering::Relaxed);
        // A free reader if there is one, else wait for the next in turn.
        let mut g = (0..n)
            .find_map(|k| st2.readers[(start + k) % n].try_lock().ok())
            .unwrap_or_else(|| {
                st2.readers[start % n]
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
            });
        let budget = st2.ingest.query_budget;
        let ms = u64::try_from(budget.as_millis()).unwrap_or(u64::MAX);
        g.set_deadline(
            Some(now_ns().saturating_add(u64::try_from(budget.as_nanos()).unwrap_or(u64::MAX))),
            ms,
        );
        let r = f(g.as_mut());
        g.set_deadline(None, ms);
        r
    })
    .await;
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e @ (StoreError::Budget(_) | StoreError::TooManyRows(_)))) => {
            st.reject_query(if matches!(e, StoreError::Budget(_)) {
                "query_budget"
            } else {
                "query_too_many_rows"
            });
            Err(error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
        }
        Ok(Err(e)) => {
            // The store's own text (SQLite's) goes to the operator's log,
            // not to a client that may not even be authenticated.
            st.log(format_args!("store error: {e}"));
            st.reject_query("query_store_unavailable");
            Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store unavailable (the control plane's log says why)",
            ))
        }
        Err(e) => {
            st.log(format_args!("store task failed: {e}"));
            Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "store task failed",
            ))
        }
    }
}

/// The router with every route.
pub fn router(state: Arc<AppState>) -> Router {
    // The read API, behind the API token check when one is configured.
    let read = Router::new()
        .route("/api/v1/nodes", get(get_nodes))
        .route("/api/v1/services", get(get_services))
        .route("/api/v1/flows", get(get_flows))
        .route("/api/v1/alerts", get(get_alerts))
        .route("/api/v1/probes", get(get_probes))
        .route("/api/v1/probes/windows", get(get_probe_windows))
        .route("/metrics", get(get_metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            require_api_token,
        ));
    Router::new()
        .route("/api/v1/report", post(post_report))
        .route("/healthz", get(get_healthz))
        .merge(read)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route; see /api/v1/{report,nodes,services,flows,alerts}, /metrics, /healthz") })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed: POST /api/v1/report, GET everything else",
            )
        })
        .with_state(state)
}

/// 401 with `WWW-Authenticate: Bearer`.
fn unauthorized(reason: &str) -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, reason);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"wirelens\""),
    );
    r
}

/// With `--api-token-file`: a read request needs one of its tokens.
async fn require_api_token(
    State(st): State<Arc<AppState>>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(tokens) = &st.api_tokens {
        let Some(token) = bearer(req.headers()) else {
            st.reject("api_unauthenticated");
            return unauthorized(
                "this control plane requires `Authorization: Bearer TOKEN` for the API \
                 (wirelens: --api-token-file or WIRELENS_API_TOKEN_FILE)",
            );
        };
        if tokens.check(token).is_none() {
            st.reject("api_unauthenticated");
            st.log("API request refused: unknown token");
            return unauthorized("unknown API token");
        }
    }
    next.run(req).await
}

/// The header on every answer to `POST /api/v1/report`: the body limit in
/// bytes, so a node can size its reports below it.
pub const MAX_BODY_HEADER: &str = "x-wirelens-max-body";

async fn post_report(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let mut r = post_report_inner(&st, req).await;
    r.headers_mut()
        .insert(MAX_BODY_HEADER, header::HeaderValue::from(st.body_limit));
    r
}

/// The one place a report body becomes a [`NodeReport`]: by its headers
/// (`Content-Type`: report.v1 JSON or the compact encoding;
/// `Content-Encoding`: none, gzip or zstd) and bytes, at most
/// `max_decoded` bytes after decompression. `Err` is the answer's status,
/// the reason counted and the text: 415 unknown type or encoding, 400
/// corrupt, 413 too large.
pub fn decode_report(
    headers: &HeaderMap,
    body: &[u8],
    max_decoded: usize,
) -> Result<NodeReport, (StatusCode, &'static str, String)> {
    use crate::codec::CodecError;
    let text = |h: header::HeaderName| {
        headers
            .get(h)
            .map(|v| {
                v.to_str()
                    .map_err(|_| String::from_utf8_lossy(v.as_bytes()).into_owned())
            })
            .transpose()
    };
    let (ct, ce) = match (text(header::CONTENT_TYPE), text(header::CONTENT_ENCODING)) {
        (Ok(t), Ok(e)) => (t, e),
        (Err(v), _) | (_, Err(v)) => {
            return Err((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("header value {v:?} is not text"),
            ))
        }
    };
    crate::codec::decode(ct, ce, body, max_decoded).map_err(|e| {
        let (status, why) = match &e {
            CodecError::UnknownType(_) | CodecError::UnknownEncoding(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            CodecError::Corrupt(_) => (StatusCode::BAD_REQUEST, "malformed"),
            CodecError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        };
        (status, why, e.to_string())
    })
}

/// A time further than `skew` ahead of `now`: the reason, for a 422.
fn in_future(r: &NodeReport, now: u64, skew: Duration) -> Option<String> {
    let limit = now.saturating_add(u64::try_from(skew.as_nanos()).unwrap_or(u64::MAX));
    if r.sent_ns > limit {
        return Some(format!(
            "sent_ns {} is {} s ahead of the control plane's clock (at most {} s: --max-clock-skew); fix the node's clock",
            r.sent_ns,
            (r.sent_ns - now) / 1_000_000_000,
            skew.as_secs()
        ));
    }
    r.flows.iter().position(|d| d.at_ns > limit).map(|k| {
        format!(
            "flow delta {k}: at_ns {} is {} s ahead of the control plane's clock (at most {} s: --max-clock-skew); fix the node's clock",
            r.flows[k].at_ns,
            (r.flows[k].at_ns - now) / 1_000_000_000,
            skew.as_secs()
        )
    })
}

async fn post_report_inner(st: &Arc<AppState>, req: Request) -> Response {
    let st = Arc::clone(st);
    let t0 = Instant::now();
    let (parts, req_body) = req.into_parts();
    let headers = parts.headers;
    let headers = &headers;
    let Some(token) = bearer(headers) else {
        st.reject("unauthenticated");
        return unauthorized("missing `Authorization: Bearer TOKEN` header");
    };
    let Some((entry, grant)) = st.tokens.check_entry(token) else {
        st.reject("unauthenticated");
        st.log("report refused: unknown token");
        return unauthorized("unknown token");
    };
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        // Refused before the body is read; the codec checks it again.
        let known = ct.to_str().ok().is_some_and(|v| {
            v.split(';').next().is_some_and(|m| {
                let m = m.trim();
                m.eq_ignore_ascii_case(crate::codec::JSON_CONTENT_TYPE)
                    || m.eq_ignore_ascii_case(crate::codec::COMPACT_CONTENT_TYPE)
            })
        });
        if !known {
            st.reject("unsupported_media_type");
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "a report is `Content-Type: {}` (report.v1 JSON) or `{}` (compact)",
                    crate::codec::JSON_CONTENT_TYPE,
                    crate::codec::COMPACT_CONTENT_TYPE
                ),
            );
        }
    }
    // A token bound to a node is limited before its body is read; so is a
    // shared token, by itself, whatever node names it claims.
    match &grant {
        Grant::Node(n) => {
            if let Some(r) = st.rate_limited(n) {
                return r;
            }
        }
        Grant::AnyNode => {
            if let Some(r) = st.token_rate_limited(entry) {
                return r;
            }
        }
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > st.body_limit as u64) {
        st.reject("too_large");
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "report larger than {} bytes; send smaller batches",
                st.body_limit
            ),
        );
    }
    let body = match axum::body::to_bytes(req_body, st.body_limit).await {
        Ok(b) => b,
        Err(e) => {
            // The only error besides the limit is a broken connection.
            st.reject("too_large");
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "report body unreadable or larger than {} bytes: {e}",
                    st.body_limit
                ),
            );
        }
    };
    let report: NodeReport = match decode_report(headers, &body, st.ingest.max_decoded) {
        Ok(r) => r,
        Err((status, why, reason)) => {
            st.reject(why);
            return error(status, reason);
        }
    };
    if let Some(why) = in_future(&report, now_ns(), st.ingest.max_clock_skew) {
        st.reject("clock_skew");
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invalid report: {why}"),
        );
    }
    if let Err(e) = report.validate() {
        st.reject("invalid");
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invalid report: {e}"),
        );
    }
    match &grant {
        Grant::Node(n) if *n != report.node => {
            st.reject("forbidden");
            st.log(format_args!(
                "report refused: node {:?} used a token bound to another node",
                report.node
            ));
            return error(
                StatusCode::FORBIDDEN,
                format!("this token may not report as node {:?}", report.node),
            );
        }
        Grant::Node(_) => {}
        // A shared token names its node in the body.
        Grant::AnyNode => {
            if let Some(r) = st.rate_limited(&report.node) {
                return r;
            }
        }
    }
    let (node, instance, seq, n) = (
        report.node.clone(),
        report.instance,
        report.seq,
        report.flows.len(),
    );
    let (top, writer) = (st.ingest.top_flows, st.writer.clone());
    // Rows are computed here, in parallel across requests; the writer only
    // merges and commits.
    let queued = tokio::task::spawn_blocking(move || {
        let rows = agg::rows_of_top(&report, top);
        let (done, rx) = tokio::sync::oneshot::channel();
        let job = Job::Ingest {
            report: Box::new(report),
            rows,
            done,
        };
        writer.try_send(job).map(|()| rx)
    })
    .await;
    let rx = match queued {
        Ok(Ok(rx)) => rx,
        Ok(Err(std::sync::mpsc::TrySendError::Full(_))) => {
            st.reject("ingest_queue_full");
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "{} reports are waiting to be committed; retry in 1 s",
                    st.ingest.queue
                ),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(1));
            return r;
        }
        Ok(Err(std::sync::mpsc::TrySendError::Disconnected(_))) | Err(_) => {
            st.log("report refused: the writer is gone");
            return error(StatusCode::SERVICE_UNAVAILABLE, "store writer stopped");
        }
    };
    let res = match rx.await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            // The store's own text (SQLite's) goes to the operator's log,
            // not to a client that may not even be authenticated. The node
            // keeps the report and retries.
            st.log(format_args!("store error: {e}"));
            st.reject("store_unavailable");
            Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store unavailable (the control plane's log says why)",
            ))
        }
        Err(_) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store writer stopped",
        )),
    };
    match res {
        Ok(outcome) => {
            match outcome {
                crate::store::Ingest::Accepted => {
                    st.stats.accepted.fetch_add(1, Ordering::Relaxed);
                    st.stats.flow_deltas.fetch_add(n as u64, Ordering::Relaxed);
                }
                crate::store::Ingest::Duplicate => {
                    st.stats.duplicate.fetch_add(1, Ordering::Relaxed);
                }
            }
            st.log(format_args!(
                "report node={node} instance={instance} seq={seq} flows={n} {} in {} ms",
                serde_json::to_value(outcome)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                t0.elapsed().as_millis()
            ));
            Json(json!({
                "status": outcome,
                "node": node,
                "instance": instance,
                "seq": seq,
                "flows": n,
            }))
            .into_response()
        }
        Err(r) => r,
    }
}

type Params = Query<HashMap<String, String>>;

/// Largest `limit` of the read API.
pub const MAX_LIMIT: usize = 10_000;
/// Largest `paths` of `/api/v1/services`.
pub const MAX_PATHS: usize = 100;
/// `since` when none is given: the last hour.
pub const DEFAULT_SINCE_NS: u64 = 3600 * 1_000_000_000;

fn limit_of(p: &HashMap<String, String>, default: usize) -> Result<usize, String> {
    match p.get("limit") {
        None => Ok(default.min(MAX_LIMIT)),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n <= MAX_LIMIT => Ok(n),
            Ok(_) => Err(format!("limit {v}: at most {MAX_LIMIT}")),
            Err(_) => Err(format!("limit {v:?} is not a number")),
        },
    }
}

/// `since`: default the last hour; a time past now is refused.
fn since_of(p: &HashMap<String, String>) -> Result<u64, String> {
    let now = now_ns();
    match p.get("since") {
        None => Ok(now.saturating_sub(DEFAULT_SINCE_NS)),
        Some(v) => {
            let t = parse_since(v, now)?;
            if t > now {
                return Err(format!(
                    "since {v:?} is in the future; use an age like 15m or a past time in ns since the epoch"
                ));
            }
            Ok(t)
        }
    }
}

/// `limit` and `since`.
fn window_of(p: &HashMap<String, String>, default_limit: usize) -> Result<(usize, u64), String> {
    limit_of(p, default_limit).and_then(|l| since_of(p).map(|s| (l, s)))
}

fn bad_sort(v: &str, allowed: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        format!("sort {v:?}: use one of {allowed}"),
    )
}

async fn get_nodes(State(st): State<Arc<AppState>>, Query(p): Params) -> Response {
    let limit = match limit_of(&p, usize::MAX) {
        Ok(l) => l,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let sort = p.get("sort").map_or("name", String::as_str).to_string();
    if !matches!(sort.as_str(), "name" | "last_seen" | "flows") {
        return bad_sort(&sort, "name, last_seen, flows");
    }
    match with_store(&st, |s| s.nodes()).await {
        Ok(mut nodes) => {
            match sort.as_str() {
                "last_seen" => nodes.sort_by_key(|n| std::cmp::Reverse(n.last_seen_ns)),
                "flows" => nodes.sort_by_key(|n| std::cmp::Reverse(n.flow_deltas)),
                _ => {}
            }
            nodes.truncate(limit);
            Json(nodes).into_response()
        }
        Err(r) => r,
    }
}

/// Services over the window, merged across nodes (1 min buckets).
pub fn services_of(
    rows: Vec<crate::store::BucketRow>,
    path_rows: Vec<crate::store::BucketRow>,
    paths: usize,
) -> Vec<ServiceSummary> {
    let width = Res::M1.width_ns();
    let merged = merge_by_key(
        rows.into_iter()
            .map(|r| (r.service, r.node, r.bucket, r.counters)),
        width,
    );
    let mut by_service: BTreeMap<String, Vec<PathSummary>> = BTreeMap::new();
    if paths > 0 {
        let pm = merge_by_key(
            path_rows.into_iter().map(|r| {
                (
                    (r.service, r.subnet.unwrap_or_default()),
                    r.node,
                    r.bucket,
                    r.counters,
                )
            }),
            width,
        );
        for ((service, subnet), (c, nodes, _, _)) in pm {
            by_service
                .entry(service)
                .or_default()
                .push(PathSummary::new(subnet, &c, &nodes));
        }
        for v in by_service.values_mut() {
            v.sort_by(|a, b| {
                let k = |p: &PathSummary| {
                    (
                        p.retransmits,
                        p.zero_window_events,
                        p.rtt_server.p90_ns.max(p.rtt_client.p90_ns),
                    )
                };
                k(b).cmp(&k(a)).then_with(|| a.subnet.cmp(&b.subnet))
            });
            v.truncate(paths);
        }
    }
    merged
        .into_iter()
        .map(|(service, (c, nodes, first, last))| {
            let mut s = ServiceSummary::new(service, &c, &nodes, first, last);
            s.paths = by_service.remove(&s.service).unwrap_or_default();
            s
        })
        .collect()
}

async fn get_services(State(st): State<Arc<AppState>>, Query(p): Params) -> Response {
    let (limit, since) = match window_of(&p, usize::MAX) {
        Ok(w) => w,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let paths = match p.get("paths").map(|v| v.parse::<usize>()) {
        None => 3,
        Some(Ok(n)) if n <= MAX_PATHS => n,
        Some(Ok(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("paths: at most {MAX_PATHS}"),
            )
        }
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "paths is not a number"),
    };
    let sort = p.get("sort").map_or("worst", String::as_str).to_string();
    const SORTS: &str = "worst, bytes, packets, flows, rtt, retrans, name";
    if !SORTS.split(", ").any(|s| s == sort) {
        return bad_sort(&sort, SORTS);
    }
    let service = p.get("service").cloned();
    let res = with_store(&st, move |s| {
        let rows = s.window_rows(false, Res::M1, since, service.as_deref())?;
        let path_rows = if paths > 0 {
            s.window_rows(true, Res::M1, since, service.as_deref())?
        } else {
            Vec::new()
        };
        Ok((rows, path_rows))
    })
    .await;
    let (rows, path_rows) = match res {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut out = services_of(rows, path_rows, paths);
    let rtt = |s: &ServiceSummary| s.rtt_server.p90_ns.max(s.rtt_client.p90_ns).unwrap_or(0);
    match sort.as_str() {
        "worst" => out.sort_by_key(|s| std::cmp::Reverse(s.worst_key())),
        "bytes" => out.sort_by_key(|s| std::cmp::Reverse(s.bytes)),
        "packets" => out.sort_by_key(|s| std::cmp::Reverse(s.packets)),
        "flows" => out.sort_by_key(|s| std::cmp::Reverse(s.flows)),
        "rtt" => out.sort_by_key(|s| std::cmp::Reverse(rtt(s))),
        "retrans" => out.sort_by(|a, b| {
            b.retrans_rate
                .unwrap_or(0.0)
                .total_cmp(&a.retrans_rate.unwrap_or(0.0))
        }),
        _ => {}
    }
    out.truncate(limit);
    Json(out).into_response()
}

async fn get_flows(State(st): State<Arc<AppState>>, Query(p): Params) -> Response {
    let (limit, since) = match window_of(&p, 50) {
        Ok(w) => w,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let sort = match p.get("sort").map_or("worst", String::as_str) {
        "worst" => FlowSort::Worst,
        "rtt" => FlowSort::Rtt,
        "bytes" => FlowSort::Bytes,
        "stall" => FlowSort::Stall,
        "last" => FlowSort::Last,
        v => return bad_sort(v, "worst, rtt, bytes, stall, last"),
    };
    let q = FlowQuery {
        since_ns: since,
        service: p.get("service").cloned(),
        node: p.get("node").cloned(),
        sort,
        limit,
    };
    match with_store(&st, move |s| s.flows(&q)).await {
        Ok(rows) => Json(rows).into_response(),
        Err(r) => r,
    }
}

/// The alerts of every service from its 10 s rows.
pub fn alerts_of(rows: Vec<crate::store::BucketRow>, cfg: &AlertConfig) -> Vec<Alert> {
    let mut per: BTreeMap<String, Series> = BTreeMap::new();
    for r in rows {
        per.entry(r.service)
            .or_default()
            .entry(r.bucket)
            .or_default()
            .insert(r.node, r.counters);
    }
    let mut out: Vec<Alert> = per
        .iter()
        .flat_map(|(svc, s)| alerts::evaluate(svc, s, Res::S10.width_ns(), cfg))
        .collect();
    out.sort_by(|a, b| {
        b.since_ns
            .cmp(&a.since_ns)
            .then_with(|| a.service.cmp(&b.service))
    });
    out
}

async fn get_alerts(State(st): State<Arc<AppState>>, Query(p): Params) -> Response {
    let (limit, since) = match window_of(&p, usize::MAX) {
        Ok(w) => w,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let service = p.get("service").cloned();
    let rows = match with_store(&st, move |s| {
        s.service_rows(Res::S10, since, service.as_deref())
    })
    .await
    {
        Ok(r) => r,
        Err(r) => return r,
    };
    let mut out = alerts_of(rows, &st.alerts);
    out.truncate(limit);
    Json(out).into_response()
}

/// Most windows one `/api/v1/probes` request merges (the newest).
const MAX_PROBE_WINDOWS: usize = 500_000;

/// `since` (default one hour ago), `target`, `node` of the probe routes.
fn probe_query(
    p: &HashMap<String, String>,
) -> Result<(u64, Option<String>, Option<String>), String> {
    let since = match p.get("since") {
        None => now_ns().saturating_sub(3600 * 1_000_000_000),
        Some(v) => parse_since(v, now_ns())?,
    };
    Ok((since, p.get("target").cloned(), p.get("node").cloned()))
}

async fn get_probes(State(st): State<Arc<AppState>>, Query(p): Params) -> Response {
    let (since, target, node) = match probe_query(&p) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let res = with_store(&st, move |s| {
        s.probe_windows(since, target.as_deref(), node.as_deref(), MAX_PROBE_WINDOWS)
    })
    .await;
    match res {
        Ok(rows) => Json(agg::probe_summaries(
            rows.iter().map(|(n, w)| (n.as_str(), w)),
        ))
        .into_response(),
        Err(r) => r,
    }
}

async fn get_probe_windows(State(st): State<Arc<AppState>>, Query(p): Params) -> Response {
    let (since, target, node) = match probe_query(&p) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let limit = match limit_of(&p, 1000) {
        Ok(l) => l,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let res = with_store(&st, move |s| {
        s.probe_windows(since, target.as_deref(), node.as_deref(), limit)
    })
    .await;
    match res {
        Ok(rows) => Json(
            rows.into_iter()
                .map(|(node, w)| json!({"node": node, "window": w}))
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(r) => r,
    }
}

/// `/healthz`: 200 `{"status":"ok"}` when the store answers, with the disk
/// reserve's state; 503 `{"status":"disk_full"}` while reports fail for a
/// full disk (they are refused with 503, the nodes keep them).
async fn get_healthz(State(st): State<Arc<AppState>>) -> Response {
    if let Err(r) = with_store(&st, |s| s.check()).await {
        return r;
    }
    let Some(d) = &st.disk else {
        return Json(json!({"status": "ok"})).into_response();
    };
    let (held, target) = (
        d.reserve_bytes.load(Ordering::Relaxed),
        d.reserve_target.load(Ordering::Relaxed),
    );
    let full = d.full.load(Ordering::Relaxed);
    let body = json!({
        "status": if full { "disk_full" } else { "ok" },
        "disk": {
            "full": full,
            "reserve_bytes": held,
            "reserve_target_bytes": target,
            "reserve_releases": d.releases.load(Ordering::Relaxed),
        },
    });
    if full {
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    } else {
        Json(body).into_response()
    }
}

async fn get_metrics(State(st): State<Arc<AppState>>) -> Response {
    use prometheus_client::encoding::text::encode;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::registry::Registry;

    type Labels = Vec<(String, String)>;
    let probes_since = now_ns().saturating_sub(crate::metrics::PROBE_WINDOW_NS);
    let cap = st.ingest.metrics_services;
    let res = with_store(&st, move |s| {
        Ok((
            s.totals()?,
            s.nodes()?,
            s.probe_windows(probes_since, None, None, crate::metrics::PROBE_WINDOWS_READ)?,
        ))
    })
    .await;
    // A store that does not answer leaves this process's own counters
    // (its 503s among them) readable, with wirelens_ctrl_store_up 0.
    let (store_up, (totals, nodes, windows)) = match res {
        Ok(v) => (true, v),
        Err(_) => (false, Default::default()),
    };
    let probes = agg::probe_summaries(windows.iter().map(|(n, w)| (n.as_str(), w)));
    let mut reg = Registry::default();
    reg.sub_registry_with_prefix("wirelens")
        .register_collector(Box::new(crate::metrics::CtrlCollector::new(
            totals, probes, cap,
        )));
    let reports = Family::<Labels, Counter>::default();
    let lbl = |v: &str| vec![("result".to_string(), v.to_string())];
    reports
        .get_or_create(&lbl("accepted"))
        .inc_by(st.stats.accepted.load(Ordering::Relaxed));
    reports
        .get_or_create(&lbl("duplicate"))
        .inc_by(st.stats.duplicate.load(Ordering::Relaxed));
    for (why, n) in st
        .stats
        .rejected
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
    {
        reports.get_or_create(&lbl(why)).inc_by(*n);
    }
    reg.register(
        "wirelens_ctrl_reports",
        "Reports received by this process, by result",
        reports,
    );
    let deltas = Counter::<u64>::default();
    deltas.inc_by(st.stats.flow_deltas.load(Ordering::Relaxed));
    reg.register(
        "wirelens_ctrl_flow_deltas",
        "Flow deltas accepted by this process",
        deltas,
    );
    let cut = Family::<Vec<(String, String)>, Counter>::default();
    for (why, c) in [
        ("over_connection_cap", &st.conns.over_cap),
        ("request_timeout", &st.conns.request_timeouts),
    ] {
        cut.get_or_create(&vec![("reason".to_string(), why.to_string())])
            .inc_by(c.load(Ordering::Relaxed));
    }
    reg.register(
        "wirelens_ctrl_connections_cut",
        "Connections closed by the server's limits, by reason (header timeouts are not counted: hyper closes those)",
        cut,
    );
    if let Some(failed) = st.conns.tls_failed.get() {
        let c = Counter::<u64>::default();
        c.inc_by(failed.load(Ordering::Relaxed));
        reg.register(
            "wirelens_ctrl_tls_handshakes_failed",
            "TLS handshakes that failed or timed out (wrong or missing client certificate, not TLS, too slow)",
            c,
        );
    }
    let up = Gauge::<i64>::default();
    up.set(i64::from(store_up));
    reg.register(
        "wirelens_ctrl_store_up",
        "Whether the store answered this scrape's queries (0: the log says why)",
        up,
    );
    let n = Gauge::<i64>::default();
    n.set(nodes.len() as i64);
    reg.register("wirelens_ctrl_nodes", "Nodes known to the control plane", n);
    if let Some(d) = &st.disk {
        let gauge = |v: u64| {
            let g = Gauge::<i64>::default();
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
            g
        };
        reg.register(
            "wirelens_ctrl_disk_reserve_bytes",
            "Bytes of disk held in reserve beside the database for pruning when the disk is full",
            gauge(d.reserve_bytes.load(Ordering::Relaxed)),
        );
        reg.register(
            "wirelens_ctrl_disk_reserve_target_bytes",
            "Bytes the disk reserve is meant to hold (--disk-reserve-mib)",
            gauge(d.reserve_target.load(Ordering::Relaxed)),
        );
        reg.register(
            "wirelens_ctrl_disk_full",
            "1 while reports fail because the store's disk is full",
            gauge(u64::from(d.full.load(Ordering::Relaxed))),
        );
        let c = Counter::<u64>::default();
        c.inc_by(d.releases.load(Ordering::Relaxed));
        reg.register(
            "wirelens_ctrl_disk_reserve_releases",
            "Times the disk reserve was given up so that a prune could run",
            c,
        );
    }
    let mut text = String::new();
    if encode(&mut text, &reg).is_err() {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "metrics encoding failed");
    }
    Response::builder()
        .header(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
        .body(Body::from(text))
        .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "response"))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            () = term => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Serves on `listener` until SIGINT/SIGTERM; prunes old rows every minute.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
) -> Result<(), ServeError> {
    serve_on(listener, state, shutdown_signal()).await
}

/// Serves https on `listener` with `tls` until SIGINT/SIGTERM.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<AppState>,
) -> Result<(), ServeError> {
    let l = crate::tls::TlsListener::new(listener, tls)?;
    let _ = state.conns.tls_failed.set(l.failed_handshakes());
    serve_on(l, state, shutdown_signal()).await
}

/// Serves on any axum listener (plain or [`crate::tls::TlsListener`]) until
/// `shutdown` completes; prunes old rows every minute.
///
/// Each connection is served by its own task with hyper's HTTP/1.1 server,
/// under the state's [`ConnLimits`]: a head not complete within
/// `header_timeout` closes the connection (hyper's header read timeout), a
/// request not answered within `request_timeout` (a body that trickles in
/// or never ends) gets 408 and the connection closes, and beyond
/// `max_connections` open connections new ones are closed at once. At
/// shutdown, open connections finish their request in flight (at most
/// `request_timeout`) and close.
pub async fn serve_on<L>(
    mut listener: L,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let pruner = {
        let st = Arc::clone(&state);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                let keep = st.retention;
                let (done, rx) = tokio::sync::oneshot::channel();
                if st.writer.try_send(Job::Prune { keep, done }).is_ok() {
                    match rx.await {
                        Ok(Ok(n)) if n > 0 => {
                            st.log(format_args!("pruned {n} rows past retention"))
                        }
                        Ok(Err(e)) => st.log(format_args!("prune failed: {e}")),
                        _ => {}
                    }
                }
            }
        })
    };
    let app = router(Arc::clone(&state));
    let limits = state.limits;
    let max = limits
        .max_connections
        .clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
    let slots = Arc::new(tokio::sync::Semaphore::new(max));
    let (close_tx, close_rx) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (io, _addr) = tokio::select! {
            c = listener.accept() => c,
            () = &mut shutdown => break,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            if state.conns.over_cap.fetch_add(1, Ordering::Relaxed) == 0 {
                state.log(format_args!(
                    "{max} connections open: closing new ones at once (counted in /metrics)"
                ));
            }
            drop(io);
            continue;
        };
        let (app, st, mut close) = (app.clone(), Arc::clone(&state), close_rx.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let svc = hyper::service::service_fn(
                move |req: axum::http::Request<hyper::body::Incoming>| {
                    let (app, st) = (app.clone(), Arc::clone(&st));
                    async move { Ok::<_, std::convert::Infallible>(answer_in_time(app, &st, req).await) }
                },
            );
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let mut conn =
                std::pin::pin!(http.serve_connection(hyper_util::rt::TokioIo::new(io), svc));
            let mut closing = false;
            loop {
                tokio::select! {
                    _ = conn.as_mut() => break,
                    r = close.changed(), if !closing => {
                        closing = true;
                        if r.is_ok() {
                            conn.as_mut().graceful_shutdown();
                        }
                    }
                }
            }
        });
    }
    // Stop: let every connection finish its request in flight, then close.
    let _ = close_tx.send(true);
    let _ = tokio::time::timeout(
        limits.request_timeout + Duration::from_secs(1),
        slots.acquire_many(max as u32),
    )
    .await;
    pruner.abort();
    state.log("stopped");
    Ok(())
}

/// Runs the router on `req` with the request deadline: 408 and
/// `Connection: close` when the request (its body included) takes longer.
async fn answer_in_time(
    mut app: Router,
    st: &AppState,
    req: axum::http::Request<hyper::body::Incoming>,
) -> Response {
    use tower_service::Service;
    let t = st.limits.request_timeout;
    match tokio::time::timeout(t, app.call(req.map(Body::new))).await {
        Ok(Ok(r)) => r,
        Ok(Err(never)) => match never {},
        Err(_) => {
            st.conns.request_timeouts.fetch_add(1, Ordering::Relaxed);
            let mut r = error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "request not complete within {} ms (--request-timeout); closing the connection",
                    t.as_millis()
                ),
            );
            r.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            r
        }
    }
}

/// `wirelens ctrl serve`: opens the store, binds `listen`, serves until a
/// signal. Logs to stderr, starting with `listening on http://ADDR` (or
/// `https://`).
pub fn run(listen: &str, cfg: ServerConfig) -> Result<(), ServeError> {
    let db = StoreTarget::Sqlite(cfg.db.clone());
    run_on(listen, cfg, db)
}

/// Which store `ctrl serve` opens.
#[derive(Debug, Clone)]
pub enum StoreTarget {
    /// The embedded default (`--db PATH`).
    Sqlite(PathBuf),
    /// `--store clickhouse://HOST:PORT/DATABASE`: any number of control
    /// planes in front of one ClickHouse.
    ClickHouse(ClickHouseConfig),
}

/// [`run`] over `target` (`cfg.db` is not used).
pub fn run_on(listen: &str, cfg: ServerConfig, target: StoreTarget) -> Result<(), ServeError> {
    let tls = match &cfg.tls {
        Some(f) => Some(crate::tls::server_config_with_client_ca(
            &f.cert,
            &f.key,
            f.client_ca.as_deref(),
        )?),
        None => None,
    };
    let (top, caps) = (
        cfg.ingest.top_flows,
        (cfg.ingest.max_services, cfg.ingest.max_services_per_node),
    );
    let (store, what): (Box<dyn Store>, String) = match &target {
        StoreTarget::Sqlite(db) => (
            Box::new(
                SqliteStore::open(db)?
                    .with_top_flows(top)
                    .with_max_services(caps.0, caps.1)
                    .with_disk_reserve(cfg.ingest.disk_reserve),
            ),
            format!("db {}", db.display()),
        ),
        StoreTarget::ClickHouse(ch) => (
            Box::new(
                ClickHouseStore::open(ch.clone())?
                    .with_top_flows(top)
                    .with_max_services(caps.0, caps.1),
            ),
            format!("store {}", ch.display()),
        ),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| ServeError::Listen {
                addr: listen.to_string(),
                source,
            })?;
        let addr: SocketAddr = listener.local_addr()?;
        let state = AppState::new(store, &cfg)?;
        let rate = match cfg.rate_limit {
            Some(l) => format!("{} reports/s per node, bursts of {}", l.per_sec, l.burst),
            None => "no rate limit".into(),
        };
        let l = cfg.limits;
        state.log(format_args!(
            "listening on {}://{addr} ({what}, {} token entries, body limit {} bytes, {rate}, read API {}{}; \
             header timeout {} ms, request timeout {} ms, at most {} connections)",
            if tls.is_some() { "https" } else { "http" },
            cfg.tokens.len(),
            cfg.body_limit,
            if cfg.api_tokens.is_some() { "needs a token" } else { "open" },
            if cfg.tls.as_ref().is_some_and(|t| t.client_ca.is_some()) {
                ", client certificates required"
            } else {
                ""
            },
            l.header_timeout.as_millis(),
            l.request_timeout.as_millis(),
            l.max_connections,
        ));
        if let Some(d) = &state.disk {
            let (held, target) = (
                d.reserve_bytes.load(Ordering::Relaxed),
                d.reserve_target.load(Ordering::Relaxed),
            );
            if held < target {
                state.log(format_args!(
                    "disk reserve holds {held} of {target} bytes (disk full?): a prune on a full disk may fail"
                ));
            }
        }
        match tls {
            Some(t) => serve_tls(listener, t, state).await,
            None => serve(listener, state).await,
        }
    })
}
