//! Blocking HTTP(S) client of the control plane (ureq).
//!
//! * [`Client`]: GET the API (the CLI) and POST one report.
//! * [`Pusher`]: what a node uses: a bounded backlog of reports, sent in
//!   order with their sequence numbers, kept while the control plane is
//!   unreachable and counted when the backlog overflows.
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

use crate::report::{FlowDelta, NodeMeta, NodeReport};

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
}

/// A node's connection to the control plane.
#[derive(Clone)]
pub struct PusherConfig {
    pub url: String,
    pub node: String,
    pub token: String,
    /// One run of the node (e.g. its start time in ns); names reports with `seq`.
    pub instance: u64,
    pub meta: NodeMeta,
    /// Most reports held while the control plane is unreachable.
    pub backlog: usize,
    pub timeout: Duration,
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
            .field("backlog", &self.backlog)
            .field("timeout", &self.timeout)
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
    /// Reports dropped because the backlog was full.
    pub dropped_reports: u64,
    pub dropped_flows: u64,
    /// Reports the control plane refused as invalid (dropped; resending cannot help).
    pub rejected: u64,
}

/// Sends a node's reports in order; keeps up to `backlog` of them while the
/// control plane is unreachable, dropping (and counting) the oldest beyond.
///
/// Call order: [`Pusher::enqueue`] per batch, then [`Pusher::flush`]; on an
/// error call `flush` again later. A report keeps its `seq` across retries,
/// so the control plane counts it once.
#[derive(Debug)]
pub struct Pusher {
    cfg: PusherConfig,
    client: Client,
    next_seq: u64,
    queue: VecDeque<NodeReport>,
    stats: PushStats,
}

impl Pusher {
    /// With a [`Client::new`] for `cfg.url` (TLS options from the environment).
    pub fn new(cfg: PusherConfig) -> Pusher {
        let client = Client::new(&cfg.url, cfg.timeout);
        Pusher::with_client(cfg, client)
    }

    /// With a client of the caller's making (e.g. [`Client::with_options`]).
    pub fn with_client(cfg: PusherConfig, client: Client) -> Pusher {
        Pusher {
            client,
            cfg,
            next_seq: 0,
            queue: VecDeque::new(),
            stats: PushStats::default(),
        }
    }

    /// Queues `flows` as the next report, made at `sent_ns`.
    pub fn enqueue(&mut self, flows: Vec<FlowDelta>, sent_ns: u64) {
        let mut r = NodeReport::new(
            &self.cfg.node,
            self.cfg.instance,
            self.next_seq,
            sent_ns,
            self.cfg.meta.clone(),
        );
        r.flows = flows;
        self.next_seq += 1;
        while self.queue.len() >= self.cfg.backlog.max(1) {
            if let Some(old) = self.queue.pop_front() {
                self.stats.dropped_reports += 1;
                self.stats.dropped_flows += old.flows.len() as u64;
            }
        }
        self.queue.push_back(r);
    }

    /// Sends the queued reports in order. Returns how many were delivered, or
    /// the error that stopped it (the failed report stays queued when a retry
    /// can help; an invalid one is dropped and counted in `rejected`).
    pub fn flush(&mut self) -> Result<usize, ClientError> {
        let mut sent = 0;
        while let Some(r) = self.queue.front_mut() {
            r.dropped_reports = self.stats.dropped_reports;
            r.dropped_flows = self.stats.dropped_flows;
            match self.client.post_report(&self.cfg.token, r) {
                Ok(ack) => {
                    if ack.status == "duplicate" {
                        self.stats.duplicates += 1;
                    } else {
                        self.stats.accepted += 1;
                    }
                    self.queue.pop_front();
                    sent += 1;
                }
                Err(e) => {
                    let permanent = matches!(&e, ClientError::Http { status, .. }
                        if (400..500).contains(status) && !matches!(status, 401 | 403 | 408 | 429));
                    if permanent {
                        self.queue.pop_front();
                        self.stats.rejected += 1;
                    }
                    return Err(e);
                }
            }
        }
        Ok(sent)
    }

    pub fn stats(&self) -> PushStats {
        self.stats
    }

    /// Reports waiting to be sent.
    pub fn backlog(&self) -> usize {
        self.queue.len()
    }

    pub fn config(&self) -> &PusherConfig {
        &self.cfg
    }

    /// [`Pusher::enqueue`] with the probe windows finished since the last
    /// report (`wirelens run --probe`) in the report's probe section.
    pub fn enqueue_with_probes(
        &mut self,
        flows: Vec<FlowDelta>,
        probes: Vec<crate::report::ProbeWindow>,
        sent_ns: u64,
    ) {
        self.enqueue(flows, sent_ns);
        if let Some(r) = self.queue.back_mut() {
            r.probes = probes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_is_bounded_and_counts_drops() {
        // Port 9 on loopback (discard) is closed here; nothing listens.
        let mut p = Pusher::new(PusherConfig {
            url: "http://127.0.0.1:9".into(),
            node: "n1".into(),
            token: "token-123".into(),
            instance: 1,
            meta: NodeMeta::default(),
            backlog: 3,
            timeout: Duration::from_secs(2),
        });
        for k in 0..5 {
            let f = crate::agg::tests::flow("198.18.1.2:1", "198.18.2.2:80", 1, 2);
            p.enqueue(vec![FlowDelta::from_record(f); k + 1], 10);
        }
        assert_eq!(p.backlog(), 3);
        assert_eq!(p.stats().dropped_reports, 2);
        assert_eq!(p.stats().dropped_flows, 1 + 2);
        let e = p.flush().unwrap_err();
        assert!(e.is_retryable());
        let msg = e.to_string();
        assert!(
            msg.starts_with("cannot reach the control plane at http://127.0.0.1:9:"),
            "{msg}"
        );
        assert_eq!(p.backlog(), 3);
        assert_eq!(p.queue.front().map(|r| r.seq), Some(2));
    }
}
