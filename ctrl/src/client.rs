//! Blocking HTTP client of the control plane (ureq, plain HTTP).
//!
//! * [`Client`]: GET the API (the CLI) and POST one report.
//! * [`Pusher`]: what a node uses: a bounded backlog of reports, sent in
//!   order with their sequence numbers, kept while the control plane is
//!   unreachable and counted when the backlog overflows.
//!
//! ureq rather than reqwest: the CLI and the node push are blocking and
//! sequential, and ureq adds no async runtime to that path and, without its
//! TLS features, only a few small crates to the binary.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
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
}

impl ClientError {
    /// Whether sending the same request later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } => true,
            ClientError::Http { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            ClientError::Decode { .. } => true,
        }
    }
}

fn reason_of(e: &ureq::Error) -> String {
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
        other => other.to_string(),
    }
}

/// The control plane's HTTP API.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    agent: ureq::Agent,
}

/// The answer to a report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ReportAck {
    /// `accepted` or `duplicate`.
    pub status: String,
}

impl Client {
    /// `base` like `http://127.0.0.1:7878` (a trailing `/` is fine).
    pub fn new(base: &str, timeout: Duration) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Client {
            base: base.trim_end_matches('/').to_string(),
            agent,
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
        let mut resp = r.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            reason: reason_of(&e),
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
        let url = format!("{}{path}", self.base);
        let r = self.agent.get(&url).call();
        self.finish(r, &url)
    }

    /// POST one report.
    pub fn post_report(&self, token: &str, report: &NodeReport) -> Result<ReportAck, ClientError> {
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
#[derive(Debug, Clone)]
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
    pub fn new(cfg: PusherConfig) -> Pusher {
        Pusher {
            client: Client::new(&cfg.url, cfg.timeout),
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
