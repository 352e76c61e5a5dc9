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
/// Most probe windows in one report.
pub const MAX_PROBES_PER_REPORT: usize = 10_000;
/// Longest probe target text.
pub const MAX_TARGET_LEN: usize = 64;
/// Longest probe error text.
pub const MAX_PROBE_ERROR_LEN: usize = 512;
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
    /// Probe windows finished since the previous report (`wirelens run
    /// --probe`). Optional: reports without it (older nodes, `analyze
    /// --push`) are the same report.v1, and a control plane that does not
    /// know the field ignores it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<ProbeWindow>,
}

/// The state of a probe window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeState {
    /// The reflector answered (some probes may be lost).
    Ok,
    /// No answer at all.
    NoReply,
    /// ICMP port unreachable: nothing listens on the target port.
    Refused,
    /// No route, or ICMP host/network unreachable.
    Unreachable,
    /// A local error on the node (socket, MTU).
    Error,
}

impl ProbeState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeState::Ok => "ok",
            ProbeState::NoReply => "no_reply",
            ProbeState::Refused => "refused",
            ProbeState::Unreachable => "unreachable",
            ProbeState::Error => "error",
        }
    }
}

/// One window of TWAMP-light probes from a node to a target (a reflector at
/// `ip:port`), schema of `wirelens probe send`'s intervals with the loss
/// split made additive: `sent = received + lost` and
/// `lost = lost_up + lost_down + lost_unattributed` (losses whose direction
/// cannot be known, e.g. with a stateless reflector or no reply at all, are
/// unattributed). `rtt` holds one sample per received probe: the round trip
/// minus the reflector's dwell time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeWindow {
    /// The reflector, `ip:port` (`[v6]:port`), as a service is named.
    pub target: String,
    /// First probe of the window (ns since the epoch).
    pub start_ns: u64,
    /// Last probe plus one interval (or when a failed window was given up).
    pub end_ns: u64,
    pub interval_ns: u64,
    /// TWAMP test packet size (UDP payload).
    pub size: u32,
    pub dscp: u8,
    pub state: ProbeState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub lost_up: u64,
    pub lost_down: u64,
    pub lost_unattributed: u64,
    /// Replies after the loss timeout (counted in `lost`).
    #[serde(default)]
    pub late: u64,
    #[serde(default)]
    pub duplicates: u64,
    #[serde(default)]
    pub reordered: u64,
    /// RTT net of the reflector's dwell: `received` samples.
    pub rtt: Histogram,
    /// |IPDV| of consecutive probes (jitter).
    #[serde(default)]
    pub ipdv: Histogram,
}

impl ProbeWindow {
    /// What is wrong with this window, if anything.
    pub fn check(&self) -> Result<(), String> {
        let t = &self.target;
        if t.is_empty() || t.len() > MAX_TARGET_LEN || t.parse::<std::net::SocketAddr>().is_err() {
            return Err(format!(
                "target {:?} is not ip:port ([v6]:port)",
                t.chars().take(MAX_TARGET_LEN).collect::<String>()
            ));
        }
        if self.start_ns == 0 || self.start_ns > self.end_ns {
            return Err("start_ns is 0 or after end_ns".into());
        }
        if self.end_ns > MAX_TIME_NS {
            return Err("end_ns is past 2262-04-11 (i64::MAX ns)".into());
        }
        if self.received.checked_add(self.lost) != Some(self.sent) {
            return Err(format!(
                "received {} + lost {} is not sent {}",
                self.received, self.lost, self.sent
            ));
        }
        let split = self
            .lost_up
            .checked_add(self.lost_down)
            .and_then(|x| x.checked_add(self.lost_unattributed));
        if split != Some(self.lost) {
            return Err(format!(
                "lost_up {} + lost_down {} + lost_unattributed {} is not lost {}",
                self.lost_up, self.lost_down, self.lost_unattributed, self.lost
            ));
        }
        if self.late > self.lost {
            return Err("late is more than lost".into());
        }
        if self.rtt.count() != self.received {
            return Err(format!(
                "rtt holds {} samples for {} received probes",
                self.rtt.count(),
                self.received
            ));
        }
        if self.ipdv.count() > self.received {
            return Err("ipdv holds more samples than received probes".into());
        }
        if self.state == ProbeState::Ok && self.sent > 0 && self.received == 0 {
            return Err("state ok without a single reply".into());
        }
        if self
            .error
            .as_ref()
            .is_some_and(|e| e.len() > MAX_PROBE_ERROR_LEN)
        {
            return Err(format!("error longer than {MAX_PROBE_ERROR_LEN} bytes"));
        }
        Ok(())
    }
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
    #[error("{0} probe windows in one report; at most {MAX_PROBES_PER_REPORT}")]
    TooManyProbes(usize),
    #[error("probe window {index}: {what}")]
    Probe { index: usize, what: String },
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
            probes: Vec::new(),
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
        if self.probes.len() > MAX_PROBES_PER_REPORT {
            return Err(ReportError::TooManyProbes(self.probes.len()));
        }
        for (index, w) in self.probes.iter().enumerate() {
            w.check()
                .map_err(|what| ReportError::Probe { index, what })?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testutil::window;

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

    #[test]
    fn probes_are_optional_both_ways() {
        // A report.v1 of before the probe section parses, with no probes.
        let mut r = NodeReport::new("n1", 1, 0, 5, NodeMeta::default());
        let mut v = serde_json::to_value(&r).unwrap();
        assert!(v.get("probes").is_none(), "empty probes are not written");
        v.as_object_mut().unwrap().remove("probes");
        let back: NodeReport = serde_json::from_value(v).unwrap();
        assert!(back.probes.is_empty());
        // With probes: a round trip keeps them, histogram included.
        r.probes
            .push(window("198.18.2.2:862", 1, &[20_000_000, 21_000_000], 3, 1));
        let text = serde_json::to_string(&r).unwrap();
        let back: NodeReport = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.validate(), Ok(()));
    }

    #[test]
    fn bad_probe_windows_are_refused_with_a_reason() {
        let ok = window("[2001:db8::1]:862", 7, &[1_000_000], 1, 0);
        assert_eq!(ok.check(), Ok(()));
        type Mutate = fn(&mut ProbeWindow);
        let cases: Vec<(Mutate, &str)> = vec![
            (|w| w.target = "not-an-address".into(), "target"),
            (|w| w.target = "198.18.2.2".into(), "target"),
            (|w| w.start_ns = 0, "start_ns"),
            (|w| w.end_ns = 1, "start_ns"),
            (|w| w.end_ns = u64::MAX, "end_ns"),
            (|w| w.sent += 1, "received"),
            (|w| w.lost_up += 1, "lost_up"),
            (|w| w.late = 5, "late"),
            (|w| w.rtt.record(5), "rtt holds"),
            (
                |w| {
                    w.ipdv.record(1);
                    w.ipdv.record(2);
                },
                "ipdv",
            ),
            (
                |w| {
                    w.received = 0;
                    w.lost = w.sent;
                    w.lost_unattributed = w.sent - w.lost_up - w.lost_down;
                    w.rtt = Histogram::new();
                },
                "state ok",
            ),
            (|w| w.error = Some("x".repeat(600)), "error longer"),
        ];
        for (f, want) in cases {
            let mut w = ok.clone();
            f(&mut w);
            let e = w.check().unwrap_err();
            assert!(e.contains(want), "{e:?} should mention {want:?}");
            let mut r = NodeReport::new("n1", 1, 0, 5, NodeMeta::default());
            r.probes.push(ok.clone());
            r.probes.push(w);
            assert!(matches!(
                r.validate(),
                Err(ReportError::Probe { index: 1, .. })
            ));
        }
        // A failed window: everything lost, unattributed.
        let mut dead = window("198.18.2.2:862", 7, &[], 0, 0);
        dead.state = ProbeState::NoReply;
        dead.sent = 10;
        dead.lost = 10;
        dead.lost_unattributed = 10;
        assert_eq!(dead.check(), Ok(()));
        // Malformed histogram JSON is a serde error (HTTP 400), not a panic.
        let mut v = serde_json::to_value(&ok).unwrap();
        v["rtt"]["min"] = serde_json::json!(999_999_999_999u64);
        assert!(serde_json::from_value::<ProbeWindow>(v).is_err());
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
        let mut f = crate::testutil::flow("198.18.1.2:1", "198.18.2.2:80", 1, 2);
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
