//! The node -> control plane report, schema `wirelens.report.v1`.
//!
//! A node POSTs one [`NodeReport`] as JSON to `/api/v1/report` with
//! `Authorization: Bearer TOKEN`. A report is a batch of flow deltas: the
//! flow.v1 records of the dataplane (counters since the flow's previous delta,
//! or the whole flow for an offline import), each optionally with the flow's
//! mergeable RTT histograms. Never packets, never payload.
//!
//! Idempotency: `(node, instance, seq)` names a report. `instance` identifies
//! one run of the node (its start time, or for `analyze --push` a hash of the
//! capture), `seq` counts that run's reports from 0. The control plane stores
//! every accepted name, so a retried push (the node did not see the 200) is
//! acknowledged again and not counted twice.
//!
//! Times are ns since the Unix epoch, durations ns, unknown is `null`, as in
//! flow.v1. Fields may be added; none may be renamed.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};
use wirelens_dataplane::report::FlowRecord;
use wirelens_dataplane::stats::Histogram;

pub const REPORT_SCHEMA: &str = "wirelens.report.v1";
/// The `version` this build writes and accepts.
pub const REPORT_VERSION: u32 = 1;
/// Most flow deltas in one report (the body limit bounds it too).
pub const MAX_FLOWS_PER_REPORT: usize = 100_000;
/// Longest node name.
pub const MAX_NODE_NAME: usize = 64;
/// Latest time a report may carry (`sent_ns`, `at_ns`, `first_ns`,
/// `last_ns`): `i64::MAX` ns, 2262-04-11. The store keeps times as SQLite
/// integers (i64), and a time bucket ends at its start plus its width, which
/// must not overflow.
pub const MAX_TIME_NS: u64 = i64::MAX as u64;

/// One batch from one node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    /// `"wirelens.report.v1"`.
    pub schema: String,
    /// [`REPORT_VERSION`]; the control plane refuses versions it does not know.
    pub version: u32,
    /// The node's name: `[A-Za-z0-9._-]{1,64}`. With a `node:token` line in the
    /// token file, only that token may report as that node.
    pub node: String,
    /// One run of the node; `seq` restarts at 0 with a new instance.
    pub instance: u64,
    /// The report's number within `instance`.
    pub seq: u64,
    /// When the node made the report (its clock).
    pub sent_ns: u64,
    pub meta: NodeMeta,
    /// Reports this instance dropped so far because its backlog was full while
    /// the control plane was unreachable (cumulative).
    #[serde(default)]
    pub dropped_reports: u64,
    /// Flow deltas dropped with them (cumulative).
    #[serde(default)]
    pub dropped_flows: u64,
    pub flows: Vec<FlowDelta>,
}

/// What the node is and where its data came from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMeta {
    /// wirelens version of the node.
    pub version: String,
    /// `"analyze"` (an offline capture imported) or `"run"` (a live appliance).
    pub mode: String,
    /// The capture file or the interface(s).
    pub source: String,
    #[serde(default)]
    pub hostname: Option<String>,
}

/// One flow's counters over an interval ending at `at_ns`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowDelta {
    /// End of the interval the counters cover: places the delta in a time
    /// bucket. For a whole-flow record (offline import): the flow's `last_ns`.
    pub at_ns: u64,
    /// This is the flow's first delta: the flow is counted once, here.
    #[serde(default = "yes")]
    pub first: bool,
    /// The flow.v1 record; its counters are the delta over the interval, its
    /// `first_ns` and 5-tuple name the flow.
    pub flow: FlowRecord,
    /// RTT samples of the client -> server data in the interval, when the
    /// node has them (the live path). Without them the control plane
    /// approximates the distribution from `flow.c2s.rtt`'s quantiles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_c2s: Option<Histogram>,
    /// Same for the server -> client data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_s2c: Option<Histogram>,
}

impl FlowDelta {
    /// A whole-flow delta from a finished record (what `analyze --push` sends).
    pub fn from_record(flow: FlowRecord) -> FlowDelta {
        FlowDelta {
            at_ns: flow.last_ns,
            first: true,
            flow,
            rtt_c2s: None,
            rtt_s2c: None,
        }
    }
}

fn yes() -> bool {
    true
}

/// Why a report is refused (HTTP 400 / 422 with this text as the reason).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReportError {
    #[error("schema {0:?} is not {REPORT_SCHEMA:?}")]
    Schema(String),
    #[error(
        "report version {0} is not supported (this control plane speaks version {REPORT_VERSION})"
    )]
    Version(u32),
    #[error(
        "node name {0:?} is invalid: use 1 to {MAX_NODE_NAME} characters of A-Z a-z 0-9 . _ -"
    )]
    NodeName(String),
    #[error("{0} flow deltas in one report; at most {MAX_FLOWS_PER_REPORT}")]
    TooManyFlows(usize),
    #[error("sent_ns {0} is past 2262-04-11 ({MAX_TIME_NS} ns), the latest time this control plane keeps")]
    Time(u64),
    #[error("flow delta {index}: {what}")]
    Flow { index: usize, what: String },
}

/// Whether `name` is a valid node name.
pub fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NODE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl NodeReport {
    /// A new report of this build's schema and version.
    pub fn new(node: &str, instance: u64, seq: u64, sent_ns: u64, meta: NodeMeta) -> NodeReport {
        NodeReport {
            schema: REPORT_SCHEMA.into(),
            version: REPORT_VERSION,
            node: node.into(),
            instance,
            seq,
            sent_ns,
            meta,
            dropped_reports: 0,
            dropped_flows: 0,
            flows: Vec::new(),
        }
    }

    /// Checks what serde cannot: schema, version, names, limits, and that
    /// every delta is internally consistent.
    pub fn validate(&self) -> Result<(), ReportError> {
        if self.schema != REPORT_SCHEMA {
            return Err(ReportError::Schema(self.schema.clone()));
        }
        if self.version != REPORT_VERSION {
            return Err(ReportError::Version(self.version));
        }
        if !valid_node_name(&self.node) {
            return Err(ReportError::NodeName(self.node.clone()));
        }
        if self.sent_ns > MAX_TIME_NS {
            return Err(ReportError::Time(self.sent_ns));
        }
        if self.flows.len() > MAX_FLOWS_PER_REPORT {
            return Err(ReportError::TooManyFlows(self.flows.len()));
        }
        for (index, d) in self.flows.iter().enumerate() {
            let bad = |what: &str| ReportError::Flow {
                index,
                what: what.into(),
            };
            if d.flow.kind != "flow" {
                return Err(bad("type is not \"flow\""));
            }
            if d.flow.first_ns > d.flow.last_ns {
                return Err(bad("first_ns is after last_ns"));
            }
            if d.at_ns == 0 {
                return Err(bad("at_ns is 0"));
            }
            if d.at_ns > MAX_TIME_NS || d.flow.last_ns > MAX_TIME_NS {
                return Err(bad(
                    "at_ns or last_ns is past 2262-04-11 (i64::MAX ns), the latest time this \
                     control plane keeps",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names() {
        assert!(valid_node_name("gw-1.dc2_a"));
        assert!(!valid_node_name(""));
        assert!(!valid_node_name("a b"));
        assert!(!valid_node_name("x/y"));
        assert!(!valid_node_name(&"a".repeat(65)));
    }

    #[test]
    fn validate_refuses_wrong_version() {
        let mut r = NodeReport::new("n1", 1, 0, 1, NodeMeta::default());
        assert_eq!(r.validate(), Ok(()));
        r.version = 2;
        assert_eq!(r.validate(), Err(ReportError::Version(2)));
    }

    /// Found by the report fuzz checks (ctrl/tests/fuzz_regressions.rs): a
    /// delta at u64::MAX ns overflowed `bucket + width` when the services
    /// were merged. Times past i64::MAX ns are refused.
    #[test]
    fn validate_refuses_times_past_2262() {
        let mut r = NodeReport::new("n1", 1, 0, MAX_TIME_NS, NodeMeta::default());
        assert_eq!(r.validate(), Ok(()));
        r.sent_ns = MAX_TIME_NS + 1;
        assert_eq!(r.validate(), Err(ReportError::Time(MAX_TIME_NS + 1)));
        r.sent_ns = 1;
        let mut f = crate::agg::tests::flow("198.18.1.2:1", "198.18.2.2:80", 1, 2);
        f.last_ns = MAX_TIME_NS;
        r.flows.push(FlowDelta::from_record(f));
        assert_eq!(r.validate(), Ok(()));
        r.flows[0].at_ns = u64::MAX;
        assert!(matches!(
            r.validate(),
            Err(ReportError::Flow { index: 0, .. })
        ));
        r.flows[0].at_ns = 1;
        r.flows[0].flow.last_ns = u64::MAX;
        assert!(matches!(
            r.validate(),
            Err(ReportError::Flow { index: 0, .. })
        ));
    }
}
