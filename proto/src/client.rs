//! Blocking HTTP(S) client of the control plane (ureq).
//!
//! * [`Client`]: GET the API (the CLI) and POST one report.
//! * [`Pusher`]: what a node uses: reports cut by encoded size below the
//!   control plane's advertised body limit, a backlog bounded in bytes, sent
//!   in order with their sequence numbers, retried with backoff while the
//!   control plane is unreachable, split further on 413, and counted
//!   (`dropped_reports`/`dropped_flows`, in the next report) when the
//!   backlog overflows. Given several control planes (`URL1,URL2`, over one
//!   shared store) it moves on to the next when one is down.
//!
//! ureq rather than reqwest: the CLI and the node push are blocking and
//! sequential, and ureq adds no async runtime to that path. TLS is rustls
//! with the ring provider (the same as the server's); an `https://` URL is
//! verified against [`ClientOptions::ca_file`] or the system's CA bundle
//! ([`crate::tls::client_roots`]), never against roots compiled in.
//!
//! [`Client::new`] and [`Pusher::new`] take their options from the
//! environment ([`ClientOptions::from_env`]: `WIRELENS_CA_FILE`,
//! `WIRELENS_API_TOKEN_FILE`, `WIRELENS_CLIENT_CERT`, `WIRELENS_CLIENT_KEY`),
//! so every command that talks to the control plane (the queries, `top`,
//! `analyze --push`, `run`'s pusher) speaks https with a private CA and a
//! client certificate without a flag of its own; the query commands also take
//! `--ca-file`, `--api-token-file`, `--client-cert` and `--client-key`.
use std::collections::VecDeque;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use std::time::Instant;

use crate::codec::{self, Encoding};
use crate::report::{
    FlowDelta, NodeMeta, NodeReport, ProbeWindow, MAX_FLOWS_PER_REPORT, MAX_PROBES_PER_REPORT,
};

/// What went wrong talking to the control plane.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the control plane at {url}: {reason}; is `wirelens ctrl serve` running?"
    )]
    Unreachable { url: String, reason: String },
    #[error("the control plane at {url} answered {status}: {reason}")]
    Http {
        url: String,
        status: u16,
        reason: String,
    },
    #[error("the control plane at {url} answered something unreadable: {reason}")]
    Decode { url: String, reason: String },
    /// The TLS handshake failed (an untrusted certificate, a plain-HTTP
    /// server behind an https URL).
    #[error("TLS with the control plane at {url} failed: {reason}")]
    Tls { url: String, reason: String },
    /// The client's own TLS or token settings are unusable (a CA file that
    /// does not read, a token file without a token).
    #[error("cannot talk to the control plane at {url}: {reason}")]
    Setup { url: String, reason: String },
}

impl ClientError {
    /// Whether sending the same request later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } => true,
            ClientError::Http { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            ClientError::Decode { .. } => true,
            // A certificate problem may be fixed on the server while a node waits.
            ClientError::Tls { .. } => true,
            ClientError::Setup { .. } => false,
        }
    }
}

/// The rustls error inside `e`, if the failure was TLS's.
fn tls_error(e: &ureq::Error) -> Option<&rustls::Error> {
    match e {
        ureq::Error::Rustls(tls) => Some(tls),
        // rustls' handshake errors come wrapped in an io::Error.
        ureq::Error::Io(io) => io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()),
        _ => None,
    }
}

fn reason_of(e: &ureq::Error) -> String {
    if let Some(tls) = tls_error(e) {
        return tls_reason(tls);
    }
    match e {
        ureq::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
            std::io::ErrorKind::ConnectionReset => "connection reset".into(),
            std::io::ErrorKind::TimedOut => "timed out".into(),
            _ => io.to_string(),
        },
        ureq::Error::ConnectionFailed => "connection failed".into(),
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::Timeout(_) => "timed out".into(),
        ureq::Error::Protocol(p) => {
            format!("{p} (the answer is not HTTP: if the control plane serves https, use an https:// URL)")
        }
        other => other.to_string(),
    }
}

/// A TLS failure and what to do about it.
fn tls_reason(e: &rustls::Error) -> String {
    let hint = match e {
        rustls::Error::InvalidCertificate(_) => {
            "; pass the CA that signed the control plane's certificate with --ca-file \
             (or WIRELENS_CA_FILE)"
        }
        rustls::Error::InvalidMessage(_) => {
            "; does the control plane speak https (was it started with --tls-cert)?"
        }
        rustls::Error::AlertReceived(
            rustls::AlertDescription::CertificateRequired
            | rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::UnknownCA
            | rustls::AlertDescription::HandshakeFailure,
        ) => {
            "; the control plane may require a client certificate (ctrl serve --client-ca): \
             pass --client-cert and --client-key (or WIRELENS_CLIENT_CERT and \
             WIRELENS_CLIENT_KEY) with a certificate its CA signed"
        }
        _ => "",
    };
    format!("{e}{hint}")
}

/// How a [`Client`] reaches the control plane.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientOptions {
    /// PEM file of the CA certificate(s) that sign the control plane's
    /// certificate; `None`: the system's CA bundle. Only used for `https://`.
    pub ca_file: Option<PathBuf>,
    /// Bearer token for the read API (`ctrl serve --api-token-file`).
    pub api_token: Option<String>,
    /// This client's certificate chain and key (PEM), for a control plane
    /// that requires client certificates (`ctrl serve --client-ca`). Only
    /// used for `https://`; both or neither.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl fmt::Debug for ClientOptions {
    /// Never prints the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientOptions")
            .field("ca_file", &self.ca_file)
            .field("api_token", &self.api_token.as_ref().map(|_| "<set>"))
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .finish()
    }
}

/// The environment variable naming the CA file ([`ClientOptions::ca_file`]).
pub const ENV_CA_FILE: &str = "WIRELENS_CA_FILE";
/// The environment variable naming the API token file.
pub const ENV_API_TOKEN_FILE: &str = "WIRELENS_API_TOKEN_FILE";
/// The environment variables naming the client certificate and its key
/// ([`ClientOptions::client_cert`], [`ClientOptions::client_key`]).
pub const ENV_CLIENT_CERT: &str = "WIRELENS_CLIENT_CERT";
pub const ENV_CLIENT_KEY: &str = "WIRELENS_CLIENT_KEY";

impl ClientOptions {
    /// `WIRELENS_CA_FILE`, the first token of `WIRELENS_API_TOKEN_FILE`,
    /// `WIRELENS_CLIENT_CERT` and `WIRELENS_CLIENT_KEY` (empty values are unset).
    pub fn from_env() -> Result<ClientOptions, String> {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let api_token = match var(ENV_API_TOKEN_FILE) {
            Some(p) => Some(api_token_from_file(&p)?),
            None => None,
        };
        Ok(ClientOptions {
            ca_file: var(ENV_CA_FILE),
            api_token,
            client_cert: var(ENV_CLIENT_CERT),
            client_key: var(ENV_CLIENT_KEY),
        })
    }
}

/// The token a CLI sends to the read API: the first entry of a token file.
pub fn api_token_from_file(path: &Path) -> Result<String, String> {
    let p = path.display().to_string();
    crate::auth::Tokens::load(path)
        .and_then(|t| t.first(&p))
        .map_err(|e| e.to_string())
}

/// A ureq agent for `base`: plain for `http://`, rustls with `opts`' roots
/// for `https://`.
fn agent(base: &str, timeout: Duration, opts: &ClientOptions) -> Result<ureq::Agent, String> {
    let cfg = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false);
    let https = base
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
    let cfg = if https {
        let roots = crate::tls::client_roots(opts.ca_file.as_deref()).map_err(|e| e.to_string())?;
        let certs: Vec<ureq::tls::Certificate<'static>> = roots
            .iter()
            .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
            .collect();
        let identity = match (&opts.client_cert, &opts.client_key) {
            (Some(cert), Some(key)) => {
                // read and checked with rustls' PEM parser for its error
                // messages; ureq takes the key from the same PEM
                let (chain, _) =
                    crate::tls::client_identity(cert, key).map_err(|e| e.to_string())?;
                let chain: Vec<ureq::tls::Certificate<'static>> = chain
                    .iter()
                    .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
                    .collect();
                let key = std::fs::read(key)
                    .map_err(|e| e.to_string())
                    .and_then(|pem| {
                        ureq::tls::PrivateKey::from_pem(&pem).map_err(|e| e.to_string())
                    })
                    .map_err(|e| format!("client key {}: {e}", key.display()))?;
                Some(ureq::tls::ClientCert::new_with_certs(&chain, key))
            }
            (None, None) => None,
            _ => {
                return Err(
                    "a client certificate needs both --client-cert and --client-key \
                     (or WIRELENS_CLIENT_CERT and WIRELENS_CLIENT_KEY)"
                        .into(),
                )
            }
        };
        cfg.tls_config(
            ureq::tls::TlsConfig::builder()
                .provider(ureq::tls::TlsProvider::Rustls)
                .unversioned_rustls_crypto_provider(crate::tls::provider())
                .root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)))
                .client_cert(identity)
                .build(),
        )
    } else {
        cfg
    };
    Ok(cfg.build().into())
}

/// The control plane's HTTP API.
#[derive(Clone)]
pub struct Client {
    base: String,
    agent: ureq::Agent,
    api_token: Option<String>,
    /// Why the options were unusable; returned by every request.
    setup_error: Option<String>,
}

/// The answer to a report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ReportAck {
    /// `accepted` or `duplicate`.
    pub status: String,
}

impl fmt::Debug for Client {
    /// Never prints the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("api_token", &self.api_token.as_ref().map(|_| "<set>"))
            .field("setup_error", &self.setup_error)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// `base` like `http://127.0.0.1:7878` or `https://ctrl.example:7878` (a
    /// trailing `/` is fine), with the options of the environment
    /// ([`ClientOptions::from_env`]). Unusable options (an unreadable CA file)
    /// make every request fail with [`ClientError::Setup`].
    pub fn new(base: &str, timeout: Duration) -> Client {
        match ClientOptions::from_env() {
            Ok(opts) => Client::with_options(base, timeout, &opts),
            Err(reason) => Client::broken(base, timeout, reason),
        }
    }

    /// `base` with explicit options.
    pub fn with_options(base: &str, timeout: Duration, opts: &ClientOptions) -> Client {
        let base = base.trim_end_matches('/');
        match agent(base, timeout, opts) {
            Ok(agent) => Client {
                base: base.to_string(),
                agent,
                api_token: opts.api_token.clone(),
                setup_error: None,
            },
            Err(reason) => Client::broken(base, timeout, reason),
        }
    }

    fn broken(base: &str, timeout: Duration, reason: String) -> Client {
        Client {
            base: base.trim_end_matches('/').to_string(),
            agent: ureq::Agent::config_builder()
                .timeout_global(Some(timeout))
                .build()
                .into(),
            api_token: None,
            setup_error: Some(reason),
        }
    }

    fn check_setup(&self) -> Result<(), ClientError> {
        match &self.setup_error {
            Some(reason) => Err(ClientError::Setup {
                url: self.base.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn finish<T: DeserializeOwned>(
        &self,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        url: &str,
    ) -> Result<T, ClientError> {
        let mut resp = r.map_err(|e| {
            let (url, reason) = (self.base.clone(), reason_of(&e));
            if tls_error(&e).is_some() {
                ClientError::Tls { url, reason }
            } else {
                ClientError::Unreachable { url, reason }
            }
        })?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_string()
            .map_err(|e| ClientError::Decode {
                url: url.into(),
                reason: reason_of(&e),
            })?;
        if !(200..300).contains(&status) {
            let reason = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
                .unwrap_or_else(|| body.chars().take(200).collect());
            return Err(ClientError::Http {
                url: url.into(),
                status,
                reason,
            });
        }
        serde_json::from_str(&body).map_err(|e| ClientError::Decode {
            url: url.into(),
            reason: e.to_string(),
        })
    }

    /// GET `path` (with its query) and decode the JSON answer.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.check_setup()?;
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.get(&url);
        if let Some(t) = &self.api_token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let r = req.call();
        self.finish(r, &url)
    }

    /// POST one report.
    pub fn post_report(&self, token: &str, report: &NodeReport) -> Result<ReportAck, ClientError> {
        self.check_setup()?;
        let url = format!("{}/api/v1/report", self.base);
        let r = self
            .agent
            .post(&url)
            .header("Authorization", &format!("Bearer {token}"))
            .send_json(report);
        self.finish(r, &url)
    }

    /// POST one encoded report body (see [`crate::codec::encode`]). Also
    /// returns the body limit the control plane advertised in
    /// [`MAX_BODY_HEADER`], when it sent one (it does on every answer to a
    /// report, 413 included).
    pub fn post_report_body(
        &self,
        token: &str,
        content_type: &str,
        content_encoding: Option<&str>,
        body: &[u8],
    ) -> (Result<ReportAck, ClientError>, Option<usize>) {
        if let Err(e) = self.check_setup() {
            return (Err(e), None);
        }
        let url = format!("{}/api/v1/report", self.base);
        let mut req = self
            .agent
            .post(&url)
            .header("Authorization", &format!("Bearer {token}"))
            .header("Content-Type", content_type);
        if let Some(ce) = content_encoding {
            req = req.header("Content-Encoding", ce);
        }
        let r = req.send(body);
        let max = r.as_ref().ok().and_then(|resp| {
            resp.headers()
                .get(MAX_BODY_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<usize>().ok())
        });
        (self.finish(r, &url), max)
    }
}

/// The control planes of a comma-separated list (`URL1,URL2`).
pub fn control_planes(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|u| !u.is_empty())
}

/// The answer header of `POST /api/v1/report` that names the largest body
/// the control plane accepts, in bytes.
pub const MAX_BODY_HEADER: &str = "x-wirelens-max-body";
/// The body limit a [`Pusher`] assumes until the control plane names one.
pub const DEFAULT_MAX_BODY: usize = 4 << 20;
/// Smallest body limit a [`Pusher`] believes (a smaller header is taken as this).
const MIN_MAX_BODY: usize = 4 << 10;
/// Bytes kept free below the body limit: a report's drop counters are
/// stamped after it was cut, and compression may move its size a little.
const BODY_MARGIN: usize = 512;

/// A node's connection to the control plane.
#[derive(Clone)]
pub struct PusherConfig {
    /// One control plane, or several separated by commas (`URL1,URL2`):
    /// control planes over one shared store (`ctrl serve --store`). A
    /// report that one of them did not take goes to the next, with its
    /// `seq`, so the store counts it once.
    pub url: String,
    pub node: String,
    pub token: String,
    /// One run of the node (e.g. its start time in ns); names reports with `seq`.
    pub instance: u64,
    pub meta: NodeMeta,
    /// Most bytes of encoded reports held while the control plane is
    /// unreachable; beyond it the oldest reports are dropped and counted.
    pub backlog_bytes: usize,
    pub timeout: Duration,
    /// How reports are put on the wire. A compact-encoding pusher falls back
    /// to JSON by itself when the control plane answers 415 (an older one).
    pub encoding: Encoding,
}

impl fmt::Debug for PusherConfig {
    /// Never prints the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PusherConfig")
            .field("url", &self.url)
            .field("node", &self.node)
            .field("token", &"<redacted>")
            .field("instance", &self.instance)
            .field("meta", &self.meta)
            .field("backlog_bytes", &self.backlog_bytes)
            .field("timeout", &self.timeout)
            .field("encoding", &self.encoding)
            .finish()
    }
}

/// What a [`Pusher`] did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushStats {
    /// Reports the control plane accepted.
    pub accepted: u64,
    /// Reports it had already (a retry whose first answer was lost).
    pub duplicates: u64,
    /// Reports dropped: the backlog was full, the control plane refused them
    /// as invalid, or they held a single delta over the body limit. The
    /// control plane sees this (cumulative) in the next report.
    pub dropped_reports: u64,
    pub dropped_flows: u64,
    /// Reports the control plane refused as invalid (dropped and counted in
    /// `dropped_*`; resending cannot help).
    pub rejected: u64,
    /// Flow deltas that alone encode larger than the body limit (dropped and
    /// counted in `dropped_flows`).
    pub oversize_flows: u64,
    /// Reports split because the control plane answered 413.
    pub splits: u64,
    /// Failed attempts that will be retried (unreachable, timeouts, 429, 5xx).
    pub retries: u64,
    /// Times the pusher moved on to the next control plane of its list
    /// (unreachable, TLS failure, 5xx).
    pub failovers: u64,
    /// Body bytes of the reports delivered.
    pub bytes_sent: u64,
    /// Reports an earlier run left in the [`Spool`], queued at the start.
    pub replayed: u64,
    /// Reports the [`Spool`] could not store (kept in memory only, within
    /// the memory backlog).
    pub spool_write_errors: u64,
    /// Reports whose spooled copy did not read back (corrupt, gone): dropped
    /// and counted in `dropped_*`, never sent.
    pub spool_unreadable: u64,
}

/// Exponential backoff with jitter: the n-th failure in a row waits a
/// random time in `[d/2, d]` with `d = min(max, base * 2^(n-1))`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
    rng: u64,
}

impl Backoff {
    /// `seed` makes the jitter differ between nodes (e.g. the instance).
    pub fn new(base: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff {
            base,
            max: max.max(base),
            failures: 0,
            rng: seed | 1,
        }
    }

    /// Counts a failure and returns how long to wait before the next try.
    pub fn fail(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let exp = self.failures.saturating_sub(1).min(30);
        let d = self.base.saturating_mul(1 << exp).min(self.max);
        // xorshift64
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let half = d / 2;
        half + half.mul_f64((self.rng >> 11) as f64 / (1u64 << 53) as f64)
    }

    /// A success: the next failure waits `base` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// One encoded report waiting to be sent.
#[derive(Debug)]
struct Queued {
    flows: usize,
    encoding: Encoding,
    /// The body; `None` while only the spool holds it.
    body: Option<Vec<u8>>,
    /// Its length in bytes.
    len: usize,
    /// Its key in the spool, when it is stored there.
    key: Option<u64>,
}

/// A report as a [`Spool`] holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spooled {
    pub key: u64,
    pub flows: usize,
    pub encoding: Encoding,
    /// Body bytes.
    pub len: usize,
}

/// Durable storage of a [`Pusher`]'s queue (a node's `--backlog-dir`):
/// every report is stored before it is queued and removed once the control
/// plane took it or it was dropped, so that what a run could not deliver
/// is sent by the next one, with its own `(node, instance, seq)`.
pub trait Spool: fmt::Debug + Send {
    /// The reports an earlier run left, oldest first (asked once, by
    /// [`Pusher::with_spool`]).
    fn take_pending(&mut self) -> Vec<Spooled>;
    /// Stores one encoded report durably before it returns; its key
    /// (larger than every key before it).
    fn store(&mut self, flows: usize, encoding: Encoding, body: &[u8]) -> std::io::Result<u64>;
    /// Reads one report's body back, checked.
    fn load(&mut self, key: u64) -> std::io::Result<Vec<u8>>;
    /// Deletes one report (delivered or dropped).
    fn remove(&mut self, key: u64);
}

/// One report's range of deltas and its encoded body.
pub type Cut = (std::ops::Range<usize>, Vec<u8>);

/// Cuts `flows[..]` into consecutive ranges whose encoding (`enc` of the
/// range) is at most `limit` bytes and at most [`MAX_FLOWS_PER_REPORT`]
/// deltas each. A single delta that alone encodes larger than `limit` is
/// left out and its index returned in the second list. Tries a size from
/// the bytes per delta seen so far and shrinks it when a body comes out too
/// large, so each delta is encoded about once or twice.
pub fn split_by_size(
    n_flows: usize,
    limit: usize,
    mut enc: impl FnMut(std::ops::Range<usize>) -> Vec<u8>,
) -> (Vec<Cut>, Vec<usize>) {
    let (mut out, mut oversize) = (Vec::new(), Vec::new());
    let mut guess = n_flows.clamp(1, MAX_FLOWS_PER_REPORT);
    let mut i = 0;
    let scale = |n: usize, len: usize| (n as f64 * limit as f64 * 0.9 / len.max(1) as f64) as usize;
    while i < n_flows {
        let mut n = guess.min(n_flows - i).max(1);
        loop {
            let body = enc(i..i + n);
            if body.len() <= limit {
                out.push((i..i + n, body.clone()));
                i += n;
                if body.len() > limit / 2 || n == guess {
                    guess = scale(n, body.len()).clamp(1, MAX_FLOWS_PER_REPORT);
                }
                break;
            }
            if n == 1 {
                oversize.push(i);
                i += 1;
                break;
            }
            n = scale(n, body.len()).clamp(1, n - 1);
        }
    }
    (out, oversize)
}

/// Sends a node's reports in order; see the [module documentation](self).
///
/// Call order: [`Pusher::enqueue`] per batch, then [`Pusher::flush`]; on an
/// error call `flush` again after [`Pusher::retry_in`]. A report keeps its
/// `seq` across retries, so the control plane counts it once.
#[derive(Debug)]
pub struct Pusher {
    cfg: PusherConfig,
    /// One per control plane of `cfg.url`; `at` is the one in use.
    clients: Vec<Client>,
    at: usize,
    /// Control planes that failed in a row since the last delivery; the
    /// backoff starts once every one of them has.
    failed_in_row: usize,
    next_seq: u64,
    queue: VecDeque<Queued>,
    /// Bytes of the bodies held in memory.
    queued_bytes: usize,
    spool: Option<Box<dyn Spool>>,
    /// Bytes of the reports in the spool, and their bound.
    spooled_bytes: usize,
    spool_limit: usize,
    stats: PushStats,
    max_body: usize,
    encoding: Encoding,
    backoff: Backoff,
    retry_in: Option<Duration>,
}

impl Pusher {
    /// With a [`Client::new`] for each control plane of `cfg.url` (TLS
    /// options from the environment).
    pub fn new(cfg: PusherConfig) -> Pusher {
        let clients = control_planes(&cfg.url)
            .map(|u| Client::new(u, cfg.timeout))
            .collect();
        Pusher::with_clients(cfg, clients)
    }

    /// With a client of the caller's making (e.g. [`Client::with_options`]).
    pub fn with_client(cfg: PusherConfig, client: Client) -> Pusher {
        Pusher::with_clients(cfg, vec![client])
    }

    /// With one client per control plane, tried in turn (at least one:
    /// an empty list is the URL itself).
    pub fn with_clients(cfg: PusherConfig, mut clients: Vec<Client>) -> Pusher {
        if clients.is_empty() {
            clients.push(Client::new(&cfg.url, cfg.timeout));
        }
        Pusher {
            clients,
            at: 0,
            failed_in_row: 0,
            encoding: cfg.encoding,
            backoff: Backoff::new(
                Duration::from_millis(500),
                Duration::from_secs(30),
                cfg.instance,
            ),
            cfg,
            next_seq: 0,
            queue: VecDeque::new(),
            queued_bytes: 0,
            spool: None,
            spooled_bytes: 0,
            spool_limit: 0,
            stats: PushStats::default(),
            max_body: DEFAULT_MAX_BODY,
            retry_in: None,
        }
    }

    /// Keeps every report in `spool` as well, up to `max_bytes` there (the
    /// oldest dropped and counted beyond), and memory for the first of them
    /// only (`backlog_bytes`; the others are read back when their turn
    /// comes). The reports an earlier run left go first, as they were made.
    pub fn with_spool(mut self, mut spool: Box<dyn Spool>, max_bytes: usize) -> Pusher {
        for s in spool.take_pending() {
            self.spooled_bytes += s.len;
            self.stats.replayed += 1;
            self.queue.push_back(Queued {
                flows: s.flows,
                encoding: s.encoding,
                body: None,
                len: s.len,
                key: Some(s.key),
            });
        }
        self.spool = Some(spool);
        self.spool_limit = max_bytes;
        // A bound lowered since the earlier run.
        while self.spooled_bytes > max_bytes && !self.queue.is_empty() {
            self.drop_at(0);
        }
        self
    }

    fn report(&self, seq: u64, sent_ns: u64) -> NodeReport {
        let mut r = NodeReport::new(
            &self.cfg.node,
            self.cfg.instance,
            seq,
            sent_ns,
            self.cfg.meta.clone(),
        );
        r.dropped_reports = self.stats.dropped_reports;
        r.dropped_flows = self.stats.dropped_flows;
        r
    }

    /// Queues `flows` as the next report(s), made at `sent_ns`: as many as
    /// it takes to stay below the body limit.
    pub fn enqueue(&mut self, flows: Vec<FlowDelta>, sent_ns: u64) {
        self.enqueue_with_probes(flows, Vec::new(), sent_ns);
    }

    /// [`Pusher::enqueue`] with the probe windows finished since the last
    /// report (`wirelens run --probe`), in the first report's probe section.
    pub fn enqueue_with_probes(
        &mut self,
        flows: Vec<FlowDelta>,
        mut probes: Vec<ProbeWindow>,
        sent_ns: u64,
    ) {
        while probes.len() > MAX_PROBES_PER_REPORT {
            let rest = probes.split_off(MAX_PROBES_PER_REPORT);
            self.enqueue_cut(Vec::new(), std::mem::replace(&mut probes, rest), sent_ns);
        }
        self.enqueue_cut(flows, probes, sent_ns);
    }

    fn enqueue_cut(&mut self, flows: Vec<FlowDelta>, probes: Vec<ProbeWindow>, sent_ns: u64) {
        let limit = self.limit();
        let enc = self.encoding;
        if flows.is_empty() {
            let mut r = self.report(self.next_seq, sent_ns);
            r.probes = probes;
            self.next_seq += 1;
            self.push(&r, None);
            return;
        }
        let mut probes = Some(probes);
        let template = self.report(self.next_seq, sent_ns);
        let (cuts, oversize) = split_by_size(flows.len(), limit, |range| {
            let mut r = template.clone();
            r.flows = flows[range.clone()].to_vec();
            if range.start == 0 {
                r.probes = probes.clone().unwrap_or_default();
            }
            codec::encode(&r, enc).2
        });
        self.count_oversize(oversize.len() as u64);
        let oversize_none = oversize.is_empty();
        for (range, body) in cuts {
            let mut r = self.report(self.next_seq, sent_ns);
            self.next_seq += 1;
            if range.start == 0 {
                r.probes = probes.take().unwrap_or_default();
            }
            r.flows = flows[range].to_vec();
            // The body was made with seq 0 and the counters of before the
            // cut: right only for the first report when nothing was dropped.
            let reuse = r.seq == template.seq && oversize_none;
            self.push(&r, reuse.then_some(body));
        }
    }

    fn count_oversize(&mut self, n: u64) {
        if n > 0 {
            self.stats.oversize_flows += n;
            self.stats.dropped_flows += n;
        }
    }

    /// The largest body to make: below the control plane's limit, and a
    /// quarter of the backlog at most, so that a full backlog drops a few
    /// reports, not one report larger than the backlog itself.
    fn limit(&self) -> usize {
        let backlog = match self.spool {
            Some(_) => self.spool_limit.max(self.cfg.backlog_bytes),
            None => self.cfg.backlog_bytes,
        };
        self.max_body
            .saturating_sub(BODY_MARGIN)
            .min(backlog / 4)
            .max(MIN_MAX_BODY / 2)
    }

    /// Encodes `r` with the drop counters as they are once it is queued and
    /// queues it (stored in the spool first, when there is one), dropping
    /// (and counting) the oldest reports beyond the backlog.
    fn push(&mut self, r: &NodeReport, encoded: Option<Vec<u8>>) {
        let body = encoded.unwrap_or_else(|| codec::encode(r, self.encoding).2);
        let need = body.len();
        let mut key = None;
        let mut body = if self.spool.is_some() {
            while !self.queue.is_empty() && self.spooled_bytes + need > self.spool_limit {
                self.drop_at(0);
            }
            let body = self.stamped(r, body);
            key = self.spool_store(r.flows.len(), self.encoding, &body);
            body
        } else {
            body
        };
        let in_memory = match key {
            Some(_) => self.queued_bytes + body.len() <= self.cfg.backlog_bytes,
            None => {
                self.make_room_in_memory(need);
                body = self.stamped(r, body);
                true
            }
        };
        let len = body.len();
        if in_memory {
            self.queued_bytes += len;
        }
        self.queue.push_back(Queued {
            flows: r.flows.len(),
            encoding: self.encoding,
            body: in_memory.then_some(body),
            len,
            key,
        });
    }

    /// `body` of `r`, encoded again when the drop counters moved since.
    fn stamped(&self, r: &NodeReport, body: Vec<u8>) -> Vec<u8> {
        if (r.dropped_reports, r.dropped_flows)
            == (self.stats.dropped_reports, self.stats.dropped_flows)
        {
            return body;
        }
        let mut r = r.clone();
        r.dropped_reports = self.stats.dropped_reports;
        r.dropped_flows = self.stats.dropped_flows;
        codec::encode(&r, self.encoding).2
    }

    /// Stores a body in the spool; `None` (counted) when it cannot.
    fn spool_store(&mut self, flows: usize, enc: Encoding, body: &[u8]) -> Option<u64> {
        let spool = self.spool.as_mut()?;
        match spool.store(flows, enc, body) {
            Ok(k) => {
                self.spooled_bytes += body.len();
                Some(k)
            }
            Err(_) => {
                self.stats.spool_write_errors += 1;
                None
            }
        }
    }

    /// Makes room for `need` bytes in memory: the bodies the spool also
    /// holds are let go first (newest first: they are read back when their
    /// turn comes), then the oldest reports held only in memory are dropped
    /// and counted.
    fn make_room_in_memory(&mut self, need: usize) {
        let bound = self.cfg.backlog_bytes;
        for q in self.queue.iter_mut().rev() {
            if self.queued_bytes + need <= bound {
                return;
            }
            if q.key.is_some() {
                if let Some(b) = q.body.take() {
                    self.queued_bytes -= b.len();
                }
            }
        }
        while self.queued_bytes + need > bound {
            match self.queue.iter().position(|q| q.body.is_some()) {
                Some(i) => self.drop_at(i),
                None => return,
            }
        }
    }

    /// Drops the report at `i`, counted in `dropped_*`.
    fn drop_at(&mut self, i: usize) {
        if let Some(q) = self.forget(i) {
            self.stats.dropped_reports += 1;
            self.stats.dropped_flows += q.flows as u64;
        }
    }

    /// Takes the report at `i` off the queue, out of memory and the spool.
    fn forget(&mut self, i: usize) -> Option<Queued> {
        let q = self.queue.remove(i)?;
        if let Some(b) = &q.body {
            self.queued_bytes -= b.len();
        }
        if let Some(k) = q.key {
            self.spooled_bytes -= q.len;
            if let Some(s) = self.spool.as_mut() {
                s.remove(k);
            }
        }
        Some(q)
    }

    /// Reads the front report's body back from the spool when memory does
    /// not hold it. `false`: it did not read back (dropped and counted).
    fn load_front(&mut self) -> bool {
        let Some(q) = self.queue.front_mut() else {
            return false;
        };
        if q.body.is_some() {
            return true;
        }
        let loaded = match (q.key, self.spool.as_mut()) {
            (Some(k), Some(s)) => s.load(k).ok().filter(|b| b.len() == q.len),
            _ => None,
        };
        match loaded {
            Some(b) => {
                self.queued_bytes += b.len();
                q.body = Some(b);
                true
            }
            None => {
                self.stats.spool_unreadable += 1;
                self.drop_at(0);
                false
            }
        }
    }

    /// Re-cuts the front report (its body in memory: [`Pusher::load_front`]):
    /// with the current encoding and body limit, or in halves when it
    /// already fits (a 413 without a usable limit). A single delta that does
    /// not fit is dropped and counted. The first piece keeps the report's
    /// `(instance, seq)` (the control plane did not take it), the others are
    /// new reports of this run. The pieces are in the spool before the
    /// report leaves it.
    fn recut_front(&mut self, halve: bool) {
        let Some(q) = self.queue.front() else {
            return;
        };
        let (content_type, content_encoding) = codec::headers(q.encoding);
        let len = q.len;
        // Our own body: it decodes (a failure would be a bug; then the
        // report is dropped and counted rather than retried forever).
        let decoded = q
            .body
            .as_deref()
            .map(|b| codec::decode(Some(content_type), content_encoding, b, usize::MAX));
        let Some(Ok(r)) = decoded else {
            self.drop_at(0);
            return;
        };
        let mut limit = self.limit();
        if halve {
            limit = limit.min(len / 2);
        }
        let enc = self.encoding;
        let (cuts, oversize) = split_by_size(r.flows.len(), limit, |range| {
            let mut c = r.clone();
            c.flows = r.flows[range.clone()].to_vec();
            if range.start != 0 {
                c.probes.clear();
            }
            codec::encode(&c, enc).2
        });
        self.count_oversize(oversize.len() as u64);
        if r.flows.is_empty() || (cuts.is_empty() && !r.probes.is_empty()) {
            // Probe windows alone too large: nothing smaller to make.
            self.forget(0);
            self.stats.dropped_reports += 1;
            return;
        }
        let mut pieces = Vec::with_capacity(cuts.len());
        for (k, (range, _)) in cuts.into_iter().enumerate() {
            let mut c = r.clone();
            if k > 0 {
                c.instance = self.cfg.instance;
                c.seq = self.next_seq;
                self.next_seq += 1;
                c.probes.clear();
            }
            c.flows = r.flows[range].to_vec();
            let body = codec::encode(&c, enc).2;
            let key = self.spool_store(c.flows.len(), enc, &body);
            pieces.push(Queued {
                flows: c.flows.len(),
                encoding: enc,
                len: body.len(),
                body: Some(body),
                key,
            });
        }
        self.forget(0);
        for p in pieces.into_iter().rev() {
            self.queued_bytes += p.len;
            self.queue.push_front(p);
        }
    }

    /// Sends the queued reports in order. Returns how many were delivered, or
    /// the error that stopped it: a retryable one leaves the report queued
    /// and sets [`Pusher::retry_in`]; an invalid report is dropped, counted
    /// in `rejected` and `dropped_*`, and its error returned.
    pub fn flush(&mut self) -> Result<usize, ClientError> {
        let mut sent = 0;
        while !self.queue.is_empty() {
            if !self.load_front() {
                continue;
            }
            let Some(q) = self.queue.front() else {
                break;
            };
            if q.encoding != self.encoding {
                self.recut_front(false);
                continue;
            }
            let (content_type, content_encoding) = codec::headers(q.encoding);
            let body = q.body.as_deref().unwrap_or_default();
            let (r, max) = self.clients[self.at].post_report_body(
                &self.cfg.token,
                content_type,
                content_encoding,
                body,
            );
            if let Some(m) = max {
                self.max_body = m.max(MIN_MAX_BODY);
            }
            match r {
                Ok(ack) => {
                    if ack.status == "duplicate" {
                        self.stats.duplicates += 1;
                    } else {
                        self.stats.accepted += 1;
                    }
                    self.stats.bytes_sent += q.len as u64;
                    self.forget(0);
                    sent += 1;
                    self.backoff.reset();
                    self.failed_in_row = 0;
                    self.retry_in = None;
                }
                Err(ClientError::Http { status: 413, .. }) => {
                    self.stats.splits += 1;
                    let fits = q.len <= self.limit();
                    self.recut_front(fits);
                }
                Err(ClientError::Http { status: 415, .. })
                    if matches!(self.encoding, Encoding::Compact | Encoding::CompactPlain) =>
                {
                    // A control plane of before the compact encoding: JSON,
                    // uncompressed (it reads no Content-Encoding either).
                    self.encoding = Encoding::Json;
                }
                Err(e) => {
                    let refused = matches!(&e, ClientError::Http { status, .. }
                        if (400..500).contains(status) && !matches!(status, 401 | 403 | 408 | 429));
                    if !refused {
                        // Unreachable, timeouts, 429, 5xx, and what an
                        // operator can fix while the node waits (a token,
                        // a certificate): keep the report, back off.
                        self.stats.retries += 1;
                        self.retry_in = Some(self.next_control_plane(&e));
                        return Err(e);
                    }
                    self.retry_in = None;
                    self.stats.rejected += 1;
                    self.drop_at(0);
                    return Err(e);
                }
            }
        }
        Ok(sent)
    }

    /// After a retryable failure `e`: moves on to the next control plane
    /// when it is down or failing (unreachable, TLS, 5xx; a 429 or a
    /// refused token would be the same at the next one) and tries it at
    /// once; backs off once every one failed in a row.
    fn next_control_plane(&mut self, e: &ClientError) -> Duration {
        let down = match e {
            ClientError::Unreachable { .. } | ClientError::Tls { .. } => true,
            ClientError::Http { status, .. } => *status >= 500,
            ClientError::Decode { .. } | ClientError::Setup { .. } => false,
        };
        let n = self.clients.len();
        if !down || n == 1 {
            return self.backoff.fail();
        }
        self.at = (self.at + 1) % n;
        self.stats.failovers += 1;
        self.failed_in_row += 1;
        if self.failed_in_row < n {
            return Duration::ZERO;
        }
        self.failed_in_row = 0;
        self.backoff.fail()
    }

    /// The control plane reports go to now.
    pub fn control_plane(&self) -> &str {
        &self.clients[self.at].base
    }

    /// How long to wait before the next [`Pusher::flush`] after a retryable
    /// failure (exponential backoff with jitter, 0.5 s doubling up to 30 s);
    /// `None` after a success.
    pub fn retry_in(&self) -> Option<Duration> {
        self.retry_in
    }

    /// Flushes until everything is delivered or `deadline` passes, waiting
    /// the backoff between tries (for one-shot pushes like `analyze --push`).
    pub fn flush_until(&mut self, deadline: Instant) -> Result<usize, ClientError> {
        let delivered = |s: &PushStats| s.accepted + s.duplicates;
        let before = delivered(&self.stats);
        loop {
            match self.flush() {
                Ok(_) => return Ok((delivered(&self.stats) - before) as usize),
                Err(e) => {
                    let wait = match self.retry_in {
                        // refused and counted: go on with the rest
                        None if !self.queue.is_empty() => Duration::ZERO,
                        Some(w) => w,
                        None => return Err(e),
                    };
                    if Instant::now() + wait > deadline {
                        return Err(e);
                    }
                    std::thread::sleep(wait);
                }
            }
        }
    }

    /// Counts deltas the caller had to drop before they reached the pusher
    /// (e.g. a node's bounded buffer of exited flows), so that the control
    /// plane sees them in `dropped_flows`.
    pub fn count_dropped(&mut self, flows: u64) {
        self.stats.dropped_flows += flows;
    }

    pub fn stats(&self) -> PushStats {
        self.stats
    }

    /// Reports waiting to be sent.
    pub fn backlog(&self) -> usize {
        self.queue.len()
    }

    /// Bytes of the reports waiting to be sent, held in memory.
    pub fn backlog_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Bytes of the reports waiting in the spool ([`Pusher::with_spool`]).
    pub fn spooled_bytes(&self) -> usize {
        self.spooled_bytes
    }

    /// The body limit in use: the control plane's last advertised one.
    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// The encoding in use (JSON after a compact pusher's fallback).
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    pub fn config(&self) -> &PusherConfig {
        &self.cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deltas(n: usize) -> Vec<FlowDelta> {
        (0..n)
            .map(|i| {
                let f = crate::testutil::flow(
                    &format!("198.18.{}.{}:{}", i / 250 % 250, i % 250, 1024 + i % 60_000),
                    "198.18.200.2:443",
                    1_000 + i as u64,
                    2_000 + i as u64,
                );
                FlowDelta::from_record(f)
            })
            .collect()
    }

    fn offline(backlog_bytes: usize, encoding: Encoding) -> Pusher {
        // Port 9 on loopback (discard) is closed here; nothing listens.
        Pusher::new(PusherConfig {
            url: "http://127.0.0.1:9".into(),
            node: "n1".into(),
            token: "token-123".into(),
            instance: 1,
            meta: NodeMeta::default(),
            backlog_bytes,
            timeout: Duration::from_secs(2),
            encoding,
        })
    }

    fn queued(p: &Pusher) -> Vec<NodeReport> {
        p.queue
            .iter()
            .map(|q| {
                let (content_type, content_encoding) = codec::headers(q.encoding);
                codec::decode(
                    Some(content_type),
                    content_encoding,
                    q.body.as_deref().unwrap(),
                    usize::MAX,
                )
                .unwrap()
            })
            .collect()
    }

    #[test]
    fn the_splitter_never_exceeds_the_limit_and_keeps_every_delta() {
        let flows = deltas(3000);
        for enc in [Encoding::Json, Encoding::Compact] {
            for limit in [2_000, 20_000, 300_000, 10 << 20] {
                let (cuts, over) = split_by_size(flows.len(), limit, |r| {
                    let mut rep = NodeReport::new("n", 1, 0, 5, NodeMeta::default());
                    rep.flows = flows[r].to_vec();
                    codec::encode(&rep, enc).2
                });
                assert!(over.is_empty(), "{enc:?} {limit}");
                let mut next = 0;
                for (range, body) in &cuts {
                    assert!(body.len() <= limit, "{enc:?} {limit}: {}", body.len());
                    assert_eq!(range.start, next);
                    next = range.end;
                }
                assert_eq!(next, flows.len(), "{enc:?} {limit}: every delta in one cut");
                if limit == 10 << 20 {
                    assert_eq!(cuts.len(), 1, "{enc:?}: one report when all fit");
                }
            }
        }
        // A delta that alone is over the limit is left out and named.
        let sizes = [10usize, 10, 500, 10, 10];
        let (cuts, over) = split_by_size(sizes.len(), 100, |r| vec![0; sizes[r].iter().sum()]);
        assert_eq!(over, vec![2]);
        let covered: Vec<usize> = cuts.iter().flat_map(|(r, _)| r.clone()).collect();
        assert_eq!(covered, vec![0, 1, 3, 4]);
        assert!(cuts.iter().all(|(_, b)| b.len() <= 100));
        // Never more than MAX_FLOWS_PER_REPORT in one cut, however small.
        let (cuts, _) = split_by_size(MAX_FLOWS_PER_REPORT + 5, usize::MAX, |r| {
            vec![0; r.len() / 1000]
        });
        assert_eq!(cuts.len(), 2);
        assert_eq!(cuts[0].0.len(), MAX_FLOWS_PER_REPORT);
    }

    #[test]
    fn enqueue_cuts_by_bytes_below_the_body_limit() {
        let mut p = offline(usize::MAX, Encoding::Json);
        p.max_body = 64 << 10;
        p.enqueue(deltas(2000), 10);
        let reps = queued(&p);
        assert!(reps.len() > 10, "{} reports", reps.len());
        assert!(p.queue.iter().all(|q| q.len <= p.limit()));
        assert_eq!(reps.iter().map(|r| r.flows.len()).sum::<usize>(), 2000);
        let seqs: Vec<u64> = reps.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (0..reps.len() as u64).collect::<Vec<_>>());
        // The same deltas compact: far fewer bytes, fewer reports.
        let mut c = offline(usize::MAX, Encoding::Compact);
        c.max_body = 64 << 10;
        c.enqueue(deltas(2000), 10);
        assert!(c.backlog() < reps.len());
        assert!(c.backlog_bytes() * 5 < p.backlog_bytes());
        // Probe windows go with the first report.
        let mut p = offline(usize::MAX, Encoding::Compact);
        let w = crate::testutil::window("198.18.2.2:862", 5, &[1_000_000], 0, 0);
        p.enqueue_with_probes(deltas(3), vec![w.clone()], 10);
        p.enqueue_with_probes(Vec::new(), vec![w.clone()], 11);
        let reps = queued(&p);
        assert_eq!(reps.len(), 2);
        assert_eq!((reps[0].flows.len(), reps[0].probes.len()), (3, 1));
        assert_eq!((reps[1].flows.len(), reps[1].probes.len()), (0, 1));
    }

    #[test]
    fn a_single_delta_over_the_limit_is_counted_and_dropped() {
        let mut p = offline(usize::MAX, Encoding::Json);
        p.max_body = MIN_MAX_BODY;
        let mut flows = deltas(5);
        // A histogram of hundreds of buckets: far over 4 KiB as JSON.
        let mut h = wirelens_dataplane::stats::Histogram::new();
        let mut v = 1u64;
        while v < u64::MAX / 2 {
            h.record(v);
            v += v / 40 + 1;
        }
        flows[2].rtt_c2s = Some(h);
        p.enqueue(flows, 10);
        let s = p.stats();
        assert_eq!((s.oversize_flows, s.dropped_flows), (1, 1));
        let reps = queued(&p);
        assert_eq!(reps.iter().map(|r| r.flows.len()).sum::<usize>(), 4);
        // The drop is in the report the control plane gets.
        assert!(reps.iter().all(|r| r.dropped_flows == 1), "{reps:?}");
    }

    #[test]
    fn the_backlog_is_bounded_in_bytes_and_counts_drops() {
        let one = {
            let mut p = offline(usize::MAX, Encoding::Compact);
            p.enqueue(deltas(100), 10);
            p.backlog_bytes()
        };
        let bound = one * 3 + one / 2;
        let mut p = offline(bound, Encoding::Compact);
        for k in 0..6u64 {
            p.enqueue(deltas(100), 10 + k);
        }
        assert!(
            p.backlog_bytes() <= bound,
            "{} > {bound}",
            p.backlog_bytes()
        );
        assert_eq!(p.backlog(), 3);
        let s = p.stats();
        assert_eq!((s.dropped_reports, s.dropped_flows), (3, 300));
        let reps = queued(&p);
        // The oldest went; the newest report says what was dropped before it.
        assert_eq!(
            reps.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert_eq!((reps[2].dropped_reports, reps[2].dropped_flows), (3, 300));
        // Unreachable: retryable, nothing lost from the queue, a backoff set.
        let e = p.flush().unwrap_err();
        assert!(e.is_retryable());
        assert!(
            e.to_string()
                .starts_with("cannot reach the control plane at http://127.0.0.1:9:"),
            "{e}"
        );
        assert_eq!(p.backlog(), 3);
        assert!(p.retry_in().is_some());
        assert_eq!(p.stats().retries, 1);
        // One batch larger than the whole backlog: cut in pieces of a quarter
        // at most; the oldest pieces go, counted, the rest stay within bounds.
        let mut p = offline(64 << 10, Encoding::Json);
        p.enqueue(deltas(2000), 10);
        let s = p.stats();
        let kept: usize = queued(&p).iter().map(|r| r.flows.len()).sum();
        assert!(p.backlog_bytes() <= 64 << 10, "{}", p.backlog_bytes());
        assert!(s.dropped_reports > 0 && kept > 0, "{s:?}");
        assert_eq!(kept as u64 + s.dropped_flows, 2000, "{s:?}");
        assert_eq!(queued(&p).last().unwrap().dropped_flows, s.dropped_flows);
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_its_cap_and_resets() {
        let base = Duration::from_millis(500);
        let max = Duration::from_secs(30);
        let mut b = Backoff::new(base, max, 7);
        for n in 1..=12u32 {
            let cap = (base * 2u32.pow(n - 1)).min(max);
            let d = b.fail();
            assert!(
                d >= cap / 2 && d <= cap,
                "failure {n}: {d:?} not in [{:?}, {cap:?}]",
                cap / 2
            );
        }
        assert_eq!(b.failures(), 12);
        b.reset();
        assert!(b.fail() <= base);
        // Jitter: two nodes do not retry in step.
        let mut a = Backoff::new(base, max, 1);
        let mut c = Backoff::new(base, max, 2);
        let (x, y): (Vec<_>, Vec<_>) = (0..5).map(|_| (a.fail(), c.fail())).unzip();
        assert_ne!(x, y);
    }
}
