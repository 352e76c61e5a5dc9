//! Alert rules: pure functions of a service's 10 s buckets (per node).
//!
//! Every rule walks the buckets in time order, decides per bucket whether the
//! condition holds, and fires when it holds at the service's latest bucket
//! with data; `since` is the first bucket of that unbroken run. Each alert
//! names the service, the nodes whose own data shows the symptom, and the
//! numbers.
//!
//! | rule | condition |
//! |---|---|
//! | `rtt_spike` | a bucket's RTT p90 >= `rtt_factor` (2.5) x the median of the p90s of the service's trailing normal buckets (up to 30, at least 3), and at least `rtt_min_rise_ns` (1 ms) above it, per side (request / response RTT) |
//! | `retransmissions` | over the trailing minute, retransmissions / data packets >= 2 % with >= 100 data packets |
//! | `syn_retry_storm` | over the trailing minute, >= 5 distinct clients needed more than one SYN |
//! | `zero_window` | over the trailing minute, receivers stalled at zero window for >= 500 ms in total |
//! | `pmtu` | over the trailing minute, ICMP frag-needed / packet-too-big quoted the service's flows |
//! | `connection_surge` | within the trailing minute, a bucket's new connections >= `surge_factor` (5) x the median of the service's trailing normal buckets (up to 30, at least 3; a baseline of at least 1 a bucket) and >= `surge_min_flows` (20) |
//! | `head_of_line` | over the trailing minute, holes in the data stayed open >= 500 ms in total and the longest >= 4 x the service's RTT p50: streams waited on holes more than on the network |
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::json;
use wirelens_dataplane::stats::Histogram;

use crate::agg::Counters;

/// Thresholds (defaults in the module doc).
#[derive(Clone, Debug, PartialEq)]
pub struct AlertConfig {
    /// An RTT spike is a p90 at least this many times the baseline.
    pub rtt_factor: f64,
    /// A spike also rises at least this far above the baseline (a tap next
    /// to a host sees tens of microseconds jitter by 3x without meaning).
    pub rtt_min_rise_ns: u64,
    /// Buckets with fewer RTT samples are ignored (neither normal nor spike).
    pub rtt_min_samples: u64,
    /// Trailing normal buckets whose median p90 is the baseline.
    pub rtt_history: usize,
    /// Normal buckets needed before a baseline exists.
    pub rtt_min_history: usize,
    /// Retransmission rate that alerts.
    pub retrans_rate: f64,
    /// Data packets needed in the window for a rate to count.
    pub retrans_min_packets: u64,
    /// Distinct retrying clients that make a storm.
    pub syn_storm_clients: usize,
    /// Total zero-window stall time in the window that alerts.
    pub zero_window_ns: u64,
    /// ICMP PMTU errors in the window that alert.
    pub pmtu_errors: u64,
    /// The trailing window of the counter rules, in buckets.
    pub window_buckets: u64,
    /// A connection surge is a bucket with at least this many times the
    /// baseline's new connections...
    pub surge_factor: f64,
    /// ... and at least this many.
    pub surge_min_flows: u64,
    /// Total head-of-line (hole open) time in the window that alerts, and how
    /// many times the RTT p50 the longest hole must be.
    pub hol_ns: u64,
    pub hol_rtt_factor: u64,
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            rtt_factor: 2.5,
            rtt_min_rise_ns: 1_000_000,
            rtt_min_samples: 5,
            rtt_history: 30,
            rtt_min_history: 3,
            retrans_rate: 0.02,
            retrans_min_packets: 100,
            syn_storm_clients: 5,
            zero_window_ns: 500_000_000,
            pmtu_errors: 1,
            window_buckets: 6,
            surge_factor: 5.0,
            surge_min_flows: 20,
            hol_ns: 500_000_000,
            hol_rtt_factor: 4,
        }
    }
}

/// One firing alert.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// `rtt_spike`, `retransmissions`, `syn_retry_storm`, `zero_window`, `pmtu`,
    /// `connection_surge`, `head_of_line`.
    pub rule: String,
    pub service: String,
    /// Nodes whose own data shows the symptom.
    pub nodes: Vec<String>,
    /// Start of the first bucket of the run in which the condition holds.
    pub since_ns: u64,
    /// End of the latest bucket (the condition holds there).
    pub last_ns: u64,
    /// One line for people.
    pub summary: String,
    /// The numbers behind it.
    pub evidence: serde_json::Value,
}

/// A service's buckets: bucket start -> node -> counters.
pub type Series = BTreeMap<u64, BTreeMap<String, Counters>>;

/// The histogram's relative error (1/64) may move a reported p90 either way;
/// a true 3x step must fire even when the baseline rounds up and the spike
/// rounds down.
///
/// The default factor is 2.5, not 3: jitter is additive (delayed ACKs, the
/// scheduler), so it lifts a low baseline's p90 more than a high one's, and a
/// true 3x step (40 -> 120 ms) measures ~2.8x in p90s. A threshold at the
/// size of the step to catch would miss it.
fn effective_factor(f: f64) -> f64 {
    f * (1.0 - 1.0 / 64.0) / (1.0 + 1.0 / 64.0)
}

fn median(v: &VecDeque<u64>) -> u64 {
    let mut s: Vec<u64> = v.iter().copied().collect();
    s.sort_unstable();
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] / 2) + (s[n / 2] / 2) + (s[n / 2 - 1] % 2 + s[n / 2] % 2) / 2
    }
}

fn ms(ns: u64) -> String {
    format!("{:.1} ms", ns as f64 / 1e6)
}

/// Which RTT side a histogram is.
#[derive(Clone, Copy)]
enum Side {
    Server,
    Client,
}

impl Side {
    fn hist(self, c: &Counters) -> &Histogram {
        match self {
            Side::Server => &c.rtt_server,
            Side::Client => &c.rtt_client,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Side::Server => "server",
            Side::Client => "client",
        }
    }
    fn words(self) -> &'static str {
        match self {
            Side::Server => "request RTT (tap -> server -> tap)",
            Side::Client => "response RTT (tap -> client -> tap)",
        }
    }
}

struct Run {
    since: u64,
    baseline: u64,
    buckets: Vec<u64>,
    max_p90: u64,
}

fn rtt_spike(
    service: &str,
    s: &Series,
    width: u64,
    cfg: &AlertConfig,
    side: Side,
) -> Option<Alert> {
    let factor = effective_factor(cfg.rtt_factor);
    let mut normal: VecDeque<u64> = VecDeque::new();
    let mut run: Option<Run> = None;
    let mut last: Option<(u64, u64, u64)> = None; // bucket, p90, samples
    for (&b, nodes) in s {
        let mut h = Histogram::new();
        for c in nodes.values() {
            h.merge(side.hist(c));
        }
        if h.count() < cfg.rtt_min_samples {
            continue;
        }
        let Some(p90) = h.quantile(0.9) else { continue };
        last = Some((b, p90, h.count()));
        if normal.len() >= cfg.rtt_min_history.max(1) {
            let base = median(&normal);
            if base > 0
                && p90 as f64 >= factor * base as f64
                && p90 >= base.saturating_add(cfg.rtt_min_rise_ns)
            {
                let r = run.get_or_insert(Run {
                    since: b,
                    baseline: base,
                    buckets: Vec::new(),
                    max_p90: 0,
                });
                r.buckets.push(b);
                r.max_p90 = r.max_p90.max(p90);
                continue;
            }
        }
        run = None;
        normal.push_back(p90);
        if normal.len() > cfg.rtt_history.max(1) {
            normal.pop_front();
        }
    }
    let r = run?;
    let (lb, p90, _) = last?;
    // Nodes whose own p90 over the run is a spike against the baseline.
    let mut per_node: BTreeMap<&str, Histogram> = BTreeMap::new();
    let mut samples: u64 = 0;
    for b in &r.buckets {
        for (node, c) in &s[b] {
            let h = side.hist(c);
            samples = samples.saturating_add(h.count());
            if !h.is_empty() {
                per_node.entry(node).or_default().merge(h);
            }
        }
    }
    let mut nodes: Vec<String> = per_node
        .iter()
        .filter(|(_, h)| {
            h.quantile(0.9)
                .is_some_and(|v| v as f64 >= factor * r.baseline as f64)
        })
        .map(|(n, _)| n.to_string())
        .collect();
    if nodes.is_empty() {
        nodes = per_node.keys().map(|n| n.to_string()).collect();
    }
    let ratio = p90 as f64 / r.baseline as f64;
    Some(Alert {
        rule: "rtt_spike".into(),
        service: service.into(),
        nodes,
        since_ns: r.since,
        last_ns: lb + width,
        summary: format!(
            "{} p90 {} is {:.1}x the service's baseline {} (median p90 of its trailing normal buckets)",
            side.words(),
            ms(p90),
            ratio,
            ms(r.baseline)
        ),
        evidence: json!({
            "side": side.name(),
            "p90_ns": p90,
            "baseline_p90_ns": r.baseline,
            "ratio": (ratio * 100.0).round() / 100.0,
            "max_p90_ns": r.max_p90,
            "threshold_factor": cfg.rtt_factor,
            "spike_buckets": r.buckets.len(),
            "samples": samples,
        }),
    })
}

fn p90_ms(h: &Histogram) -> Option<f64> {
    h.quantile(0.9).map(|v| (v as f64 / 1e4).round() / 100.0)
}

/// New connections (flows whose first delta falls in the bucket) far above
/// the service's own baseline: clients retrying at the application level,
/// or a herd. Like the counter rules it looks at the trailing window: the
/// last run of surging buckets fires until it is `window_buckets` old (a
/// surge that just ended, or a capture's last, partial bucket, does not
/// hide it). The evidence says what RTT, loss and refusals did in the surge
/// against the buckets before it.
fn connection_surge(service: &str, s: &Series, width: u64, cfg: &AlertConfig) -> Option<Alert> {
    let mut normal: VecDeque<u64> = VecDeque::new();
    // (since, baseline, buckets of the run)
    let mut run: Option<(u64, u64, Vec<u64>)> = None;
    // The previous bucket surged (a run goes on).
    let mut surging = false;
    let mut last_b = 0;
    for (&b, nodes) in s {
        last_b = b;
        let flows: u64 = nodes.values().map(|c| c.flows).sum();
        if normal.len() >= cfg.rtt_min_history.max(1) {
            let base = median(&normal).max(1);
            if flows >= cfg.surge_min_flows && flows as f64 >= cfg.surge_factor * base as f64 {
                if !surging {
                    run = Some((b, base, Vec::new()));
                }
                if let Some(r) = run.as_mut() {
                    r.2.push(b);
                }
                surging = true;
                continue;
            }
        }
        surging = false;
        normal.push_back(flows);
        if normal.len() > cfg.rtt_history.max(1) {
            normal.pop_front();
        }
    }
    let (since, base, buckets) = run?;
    let span = width.saturating_mul(cfg.window_buckets.max(1));
    if buckets.last().is_none_or(|&l| l + span <= last_b) {
        // The surge ended more than the trailing window ago.
        return None;
    }
    let mut during = Counters::default();
    let mut nodes: BTreeSet<String> = BTreeSet::new();
    for b in &buckets {
        for (node, c) in &s[b] {
            during.merge(c);
            if c.flows > 0 {
                nodes.insert(node.clone());
            }
        }
    }
    let mut before = Counters::default();
    for (_, per_node) in s.range(..since).rev().take(cfg.rtt_history.max(1)) {
        for c in per_node.values() {
            before.merge(c);
        }
    }
    let secs = width as f64 / 1e9;
    let rate = during.flows as f64 / buckets.len() as f64 / secs;
    let base_rate = base as f64 / secs;
    let ratio = rate / base_rate;
    let retrans = during.retrans_rate().unwrap_or(0.0);
    let rtt_now = p90_ms(&during.rtt_all());
    let rtt_before = p90_ms(&before.rtt_all());
    let fmt_ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1} ms"));
    Some(Alert {
        rule: "connection_surge".into(),
        service: service.into(),
        nodes: nodes.into_iter().collect(),
        since_ns: since,
        last_ns: last_b + width,
        summary: format!(
            "{rate:.1} new connections/s is {ratio:.1}x the service's baseline {base_rate:.1}/s; meanwhile RTT p90 {} (before {}), {:.1}% retransmitted, {} refused, {} unanswered, {} clients retried SYNs",
            fmt_ms(rtt_now),
            fmt_ms(rtt_before),
            retrans * 100.0,
            during.refused,
            during.unanswered,
            during.retry_clients.len()
        ),
        evidence: json!({
            "new_connections": during.flows,
            "rate_per_s": (rate * 100.0).round() / 100.0,
            "baseline_per_s": (base_rate * 100.0).round() / 100.0,
            "ratio": (ratio * 100.0).round() / 100.0,
            "threshold_factor": cfg.surge_factor,
            "surge_buckets": buckets.len(),
            "rtt_p90_ms": rtt_now,
            "rtt_p90_ms_before": rtt_before,
            "retrans_rate": (retrans * 10000.0).round() / 10000.0,
            "refused": during.refused,
            "unanswered": during.unanswered,
            "syn_retry_clients": during.retry_clients.len(),
        }),
    })
}

/// A counter rule over the trailing window: `cond` on the window's merged
/// counters and `node_shows` per node.
struct CounterRule<'a> {
    rule: &'static str,
    cond: &'a dyn Fn(&Counters) -> bool,
    node_shows: &'a dyn Fn(&Counters) -> bool,
    describe: &'a dyn Fn(&Counters) -> (String, serde_json::Value),
}

fn counter_rule(
    service: &str,
    s: &Series,
    width: u64,
    cfg: &AlertConfig,
    r: &CounterRule<'_>,
) -> Option<Alert> {
    let span = width.saturating_mul(cfg.window_buckets.max(1));
    let mut since: Option<u64> = None;
    let mut nodes: BTreeSet<String> = BTreeSet::new();
    let mut window = Counters::default();
    let mut last_b = 0;
    for &b in s.keys() {
        last_b = b;
        window = Counters::default();
        let lo = (b + width).saturating_sub(span);
        for (_, per_node) in s.range(lo..=b) {
            for c in per_node.values() {
                window.merge(c);
            }
        }
        if (r.cond)(&window) {
            if since.is_none() {
                since = Some(b);
                nodes.clear();
            }
            for (node, c) in &s[&b] {
                if (r.node_shows)(c) {
                    nodes.insert(node.clone());
                }
            }
        } else {
            since = None;
        }
    }
    let since = since?;
    let (summary, evidence) = (r.describe)(&window);
    Some(Alert {
        rule: r.rule.into(),
        service: service.into(),
        nodes: nodes.into_iter().collect(),
        since_ns: since,
        last_ns: last_b + width,
        summary,
        evidence,
    })
}

/// The alerts of one service. `width` is the bucket width (10 s).
pub fn evaluate(service: &str, s: &Series, width: u64, cfg: &AlertConfig) -> Vec<Alert> {
    let mut out = Vec::new();
    for side in [Side::Server, Side::Client] {
        out.extend(rtt_spike(service, s, width, cfg, side));
    }
    let window_s = width * cfg.window_buckets / 1_000_000_000;
    let loss = CounterRule {
        rule: "retransmissions",
        cond: &|c| {
            c.data_packets >= cfg.retrans_min_packets
                && c.retrans_rate().is_some_and(|r| r >= cfg.retrans_rate)
        },
        node_shows: &|c| c.retransmits > 0,
        describe: &|c| {
            let rate = c.retrans_rate().unwrap_or(0.0);
            let where_ = if c.hole_fill > c.retrans_seen {
                "mostly before the tap"
            } else {
                "mostly after the tap"
            };
            (
                format!(
                    "{:.1}% of data packets retransmitted over the last {window_s} s ({} of {}), loss {where_}",
                    rate * 100.0,
                    c.retransmits,
                    c.data_packets
                ),
                json!({
                    "retransmits": c.retransmits,
                    "data_packets": c.data_packets,
                    "rate": (rate * 10000.0).round() / 10000.0,
                    "threshold": cfg.retrans_rate,
                    "lost_after_tap": c.retrans_seen,
                    "lost_before_tap": c.hole_fill,
                    "rto_retransmits": c.rto_retransmits,
                }),
            )
        },
    };
    let syn = CounterRule {
        rule: "syn_retry_storm",
        cond: &|c| c.retry_clients.len() >= cfg.syn_storm_clients,
        node_shows: &|c| c.syn_retry_flows > 0,
        describe: &|c| {
            let sample: Vec<String> = c
                .retry_clients
                .iter()
                .take(5)
                .map(|ip| ip.to_string())
                .collect();
            (
                format!(
                    "{} clients retried SYNs over the last {window_s} s ({} extra SYNs, {} refused, {} unanswered)",
                    c.retry_clients.len(),
                    c.syn_retries,
                    c.refused,
                    c.unanswered
                ),
                json!({
                    "clients": c.retry_clients.len(),
                    "syn_retries": c.syn_retries,
                    "syn_retry_flows": c.syn_retry_flows,
                    "refused": c.refused,
                    "unanswered": c.unanswered,
                    "sample_clients": sample,
                    "threshold_clients": cfg.syn_storm_clients,
                }),
            )
        },
    };
    let zw = CounterRule {
        rule: "zero_window",
        cond: &|c| c.zero_window_events > 0 && c.zero_window_ns >= cfg.zero_window_ns,
        node_shows: &|c| c.zero_window_events > 0,
        describe: &|c| {
            (
                format!(
                    "receivers stalled at zero window {} times for {} over the last {window_s} s",
                    c.zero_window_events,
                    ms(c.zero_window_ns)
                ),
                json!({
                    "stalls": c.zero_window_events,
                    "stall_ns": c.zero_window_ns,
                    "threshold_ns": cfg.zero_window_ns,
                }),
            )
        },
    };
    let pmtu = CounterRule {
        rule: "pmtu",
        cond: &|c| c.pmtu_errors >= cfg.pmtu_errors.max(1),
        node_shows: &|c| c.pmtu_errors > 0,
        describe: &|c| {
            (
                format!(
                    "{} ICMP frag-needed/packet-too-big for the service's flows over the last {window_s} s{}",
                    c.pmtu_errors,
                    c.pmtu_min_mtu.map(|m| format!(", MTU {m}")).unwrap_or_default()
                ),
                json!({
                    "icmp_errors": c.pmtu_errors,
                    "min_mtu": c.pmtu_min_mtu,
                    "fragments": c.frags,
                }),
            )
        },
    };
    let hol = CounterRule {
        rule: "head_of_line",
        cond: &|c| {
            let rtt = c.rtt_all().quantile(0.5).unwrap_or(0);
            c.hol_holes > 0
                && c.hol_open_ns_total >= cfg.hol_ns
                && c.hol_open_ns_max >= rtt.saturating_mul(cfg.hol_rtt_factor)
        },
        node_shows: &|c| c.hol_open_ns_total > 0,
        describe: &|c| {
            let rtt = c.rtt_all().quantile(0.5);
            (
                format!(
                    "holes in the data stayed open {} in total over the last {window_s} s ({} holes, the longest {}, RTT p50 {}): every stream on those connections waited",
                    ms(c.hol_open_ns_total),
                    c.hol_holes,
                    ms(c.hol_open_ns_max),
                    rtt.map_or("unknown".into(), ms)
                ),
                json!({
                    "holes": c.hol_holes,
                    "open_ns_total": c.hol_open_ns_total,
                    "open_ns_max": c.hol_open_ns_max,
                    "rtt_p50_ns": rtt,
                    "threshold_ns": cfg.hol_ns,
                }),
            )
        },
    };
    for r in [&loss, &syn, &zw, &pmtu, &hol] {
        out.extend(counter_rule(service, s, width, cfg, r));
    }
    out.extend(connection_surge(service, s, width, cfg));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agg::SEC;

    const W: u64 = 10 * SEC;
    const T0: u64 = 1_700_000_000 * SEC;

    fn rtt_bucket(center_ns: u64, n: u64, seed: &mut u64) -> Counters {
        let mut c = Counters::default();
        for _ in 0..n {
            // +-5 % jitter, deterministic.
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let j = (*seed >> 33) % 1000;
            c.rtt_server
                .record(center_ns - center_ns / 20 + center_ns * j / 10_000);
        }
        c.data_packets = n;
        c
    }

    fn series(centers: &[u64], nodes: &[&str]) -> Series {
        let mut seed = 7;
        let mut s = Series::new();
        for (i, &ctr) in centers.iter().enumerate() {
            let b = T0 + i as u64 * W;
            for n in nodes {
                s.entry(b)
                    .or_default()
                    .insert(n.to_string(), rtt_bucket(ctr, 50, &mut seed));
            }
        }
        s
    }

    #[test]
    fn rtt_step_40_to_120_fires_since_the_step() {
        let mut centers = vec![40_000_000; 12];
        centers.extend([120_000_000; 3]);
        let s = series(&centers, &["gw-a", "gw-b"]);
        let alerts = evaluate("198.18.2.2:8080/tcp", &s, W, &AlertConfig::default());
        assert_eq!(alerts.len(), 1, "{alerts:#?}");
        let a = &alerts[0];
        assert_eq!(a.rule, "rtt_spike");
        assert_eq!(a.since_ns, T0 + 12 * W);
        assert_eq!(a.last_ns, T0 + 15 * W);
        assert_eq!(a.nodes, vec!["gw-a".to_string(), "gw-b".to_string()]);
        let ratio = a.evidence["ratio"].as_f64().unwrap();
        assert!((2.7..3.3).contains(&ratio), "{ratio}");
        let base = a.evidence["baseline_p90_ns"].as_u64().unwrap();
        assert!((40_000_000..43_000_000).contains(&base), "{base}");
    }

    #[test]
    fn exact_3x_step_fires_despite_rounding() {
        // Constant values: p90 is the bucket midpoint; 40 ms -> 120 ms exactly.
        let mut s = Series::new();
        for i in 0..8u64 {
            let v = if i < 5 { 40_000_000 } else { 120_000_000 };
            let mut c = Counters::default();
            c.rtt_server.record_n(v, 20);
            s.entry(T0 + i * W).or_default().insert("n".into(), c);
        }
        let a = evaluate("svc", &s, W, &AlertConfig::default());
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].since_ns, T0 + 5 * W);
    }

    #[test]
    fn jittered_3x_step_fires_at_the_default_factor() {
        // Additive jitter (delayed ACKs): 20 % of the samples 6 ms late, before
        // and after. The p90s are 46 and 126 ms: 2.74x, under 3.
        let mut s = Series::new();
        for i in 0..6u64 {
            let base = if i < 4 { 40_000_000 } else { 120_000_000 };
            let mut c = Counters::default();
            c.rtt_server.record_n(base, 80);
            c.rtt_server.record_n(base + 6_000_000, 20);
            s.entry(T0 + i * W).or_default().insert("n".into(), c);
        }
        let a = evaluate("svc", &s, W, &AlertConfig::default());
        assert_eq!(a.len(), 1, "{a:#?}");
        assert_eq!(a[0].since_ns, T0 + 4 * W);
        let ratio = a[0].evidence["ratio"].as_f64().unwrap();
        assert!((2.5..3.0).contains(&ratio), "{ratio}");
    }

    #[test]
    fn steady_or_noisy_traffic_does_not_fire() {
        let s = series(&[40_000_000; 40], &["gw-a"]);
        assert!(evaluate("svc", &s, W, &AlertConfig::default()).is_empty());
        // A 2x wobble is not a spike.
        let centers: Vec<u64> = (0..40)
            .map(|i| if i % 7 == 0 { 80_000_000 } else { 40_000_000 })
            .collect();
        let s = series(&centers, &["gw-a"]);
        assert!(evaluate("svc", &s, W, &AlertConfig::default()).is_empty());
    }

    #[test]
    fn spike_that_ended_does_not_fire_and_long_spike_keeps_baseline() {
        let mut centers = vec![40_000_000; 10];
        centers.extend([120_000_000; 3]);
        centers.extend([40_000_000; 2]);
        assert!(evaluate("svc", &series(&centers, &["a"]), W, &AlertConfig::default()).is_empty());
        // 40 spiking buckets: the baseline excludes them, so it still fires from the start.
        let mut centers = vec![40_000_000; 10];
        centers.extend([120_000_000; 40]);
        let a = evaluate("svc", &series(&centers, &["a"]), W, &AlertConfig::default());
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].since_ns, T0 + 10 * W);
        assert_eq!(a[0].evidence["spike_buckets"], 40);
    }

    #[test]
    fn no_baseline_no_alert() {
        let s = series(&[120_000_000, 120_000_000], &["a"]);
        assert!(evaluate("svc", &s, W, &AlertConfig::default()).is_empty());
    }

    #[test]
    fn counter_rules() {
        let mut s = Series::new();
        for i in 0..10u64 {
            let mut quiet = Counters {
                data_packets: 1000,
                retransmits: 1,
                ..Counters::default()
            };
            let mut loud = quiet.clone();
            if i >= 6 {
                loud.retransmits = 300;
                loud.hole_fill = 300;
                loud.zero_window_events = 2;
                loud.zero_window_ns = 400_000_000;
                loud.pmtu_errors = 1;
                loud.pmtu_min_mtu = Some(1400);
                for k in 0..3u8 {
                    loud.retry_clients
                        .insert(std::net::IpAddr::from([198, 18, i as u8, k]));
                }
                loud.syn_retry_flows = 3;
            }
            quiet.rtt_server = Histogram::new();
            let e = s.entry(T0 + i * W).or_default();
            e.insert("quiet".into(), quiet);
            e.insert("loud".into(), loud);
        }
        let alerts = evaluate("svc", &s, W, &AlertConfig::default());
        let by: BTreeMap<&str, &Alert> = alerts.iter().map(|a| (a.rule.as_str(), a)).collect();
        assert_eq!(by.len(), 4, "{alerts:#?}");
        // Loss: from bucket 6 on the trailing minute has >= 2 %.
        let loss = by["retransmissions"];
        assert_eq!(loss.nodes, vec!["loud".to_string(), "quiet".to_string()]);
        assert!(loss.summary.contains("before the tap"), "{}", loss.summary);
        assert_eq!(loss.since_ns, T0 + 6 * W);
        // Storm: 3 clients per bucket, 5 needed: from bucket 7.
        assert_eq!(by["syn_retry_storm"].since_ns, T0 + 7 * W);
        assert_eq!(by["syn_retry_storm"].nodes, vec!["loud".to_string()]);
        // Zero window: 400 ms per bucket, 500 ms needed: from bucket 7.
        assert_eq!(by["zero_window"].since_ns, T0 + 7 * W);
        assert_eq!(by["pmtu"].since_ns, T0 + 6 * W);
        assert_eq!(by["pmtu"].evidence["min_mtu"], 1400);
    }

    /// Head-of-line: fires once the trailing minute holds 500 ms of open
    /// holes whose longest is >= 4 RTTs; short holes on a slow path do not.
    #[test]
    fn head_of_line_dominates() {
        let mut s = Series::new();
        let mut seed = 7;
        for i in 0..10u64 {
            let mut c = rtt_bucket(20_000_000, 50, &mut seed);
            if i >= 5 {
                c.hol_holes = 2;
                c.hol_open_ns_total = 300_000_000;
                c.hol_open_ns_max = 150_000_000;
            }
            s.entry(T0 + i * W).or_default().insert("n1".into(), c);
        }
        let alerts = evaluate("svc", &s, W, &AlertConfig::default());
        let a = alerts
            .iter()
            .find(|a| a.rule == "head_of_line")
            .unwrap_or_else(|| panic!("{alerts:#?}"));
        assert_eq!(a.since_ns, T0 + 6 * W);
        assert_eq!(a.evidence["holes"], 10);
        // the same hole time on a path whose RTT is 100 ms: not dominant
        let mut slow = Series::new();
        for i in 0..10u64 {
            let mut c = rtt_bucket(100_000_000, 50, &mut seed);
            c.hol_holes = 2;
            c.hol_open_ns_total = 300_000_000;
            c.hol_open_ns_max = 150_000_000;
            slow.entry(T0 + i * W).or_default().insert("n1".into(), c);
        }
        let alerts = evaluate("svc", &slow, W, &AlertConfig::default());
        assert!(
            alerts.iter().all(|a| a.rule != "head_of_line"),
            "{alerts:#?}"
        );
    }

    #[test]
    fn connection_surge_fires_from_the_surge_not_before() {
        // 50 clients, one new connection each per 10 s; then 10x for two buckets.
        let bucket = |flows: u64, rtt_ms: u64, refused: u64| {
            let mut c = Counters {
                flows,
                refused,
                data_packets: flows * 10,
                ..Counters::default()
            };
            for _ in 0..flows {
                c.rtt_server.record(rtt_ms * 1_000_000);
            }
            c
        };
        let mut s = Series::new();
        for i in 0..12u64 {
            s.entry(T0 + i * W)
                .or_default()
                .insert("n".into(), bucket(50, 40, 0));
        }
        assert!(evaluate("svc", &s, W, &AlertConfig::default()).is_empty());
        for i in 12..14u64 {
            s.entry(T0 + i * W)
                .or_default()
                .insert("n".into(), bucket(500, 120, 7));
        }
        let a = evaluate("svc", &s, W, &AlertConfig::default());
        let surge: Vec<&Alert> = a.iter().filter(|a| a.rule == "connection_surge").collect();
        assert_eq!(surge.len(), 1, "{a:#?}");
        let a = surge[0];
        assert_eq!(a.since_ns, T0 + 12 * W);
        assert_eq!(a.last_ns, T0 + 14 * W);
        assert_eq!(a.evidence["rate_per_s"], 50.0);
        assert_eq!(a.evidence["baseline_per_s"], 5.0);
        assert_eq!(a.evidence["refused"], 14);
        assert!(a.summary.contains("10.0x"), "{}", a.summary);
        // Just after the surge (a normal, or a capture's partial, bucket) it
        // still shows; a trailing minute later it is gone.
        s.entry(T0 + 14 * W)
            .or_default()
            .insert("n".into(), bucket(20, 40, 0));
        let a = evaluate("svc", &s, W, &AlertConfig::default());
        let surge: Vec<&Alert> = a.iter().filter(|a| a.rule == "connection_surge").collect();
        assert_eq!(surge.len(), 1, "{a:#?}");
        assert_eq!(surge[0].since_ns, T0 + 12 * W);
        assert_eq!(surge[0].last_ns, T0 + 15 * W);
        for i in 15..20u64 {
            s.entry(T0 + i * W)
                .or_default()
                .insert("n".into(), bucket(50, 40, 0));
        }
        let a = evaluate("svc", &s, W, &AlertConfig::default());
        assert!(a.iter().all(|a| a.rule != "connection_surge"), "{a:#?}");
        // A 2x rise is no surge; nor is a rise from nothing to a handful.
        let mut s = Series::new();
        for i in 0..12u64 {
            let f = if i < 10 { 50 } else { 100 };
            s.entry(T0 + i * W)
                .or_default()
                .insert("n".into(), bucket(f, 40, 0));
        }
        for i in 12..14u64 {
            s.entry(T0 + i * W)
                .or_default()
                .insert("n".into(), bucket(0, 40, 0));
        }
        s.entry(T0 + 14 * W)
            .or_default()
            .insert("n".into(), bucket(10, 40, 0));
        let a = evaluate("svc", &s, W, &AlertConfig::default());
        assert!(a.iter().all(|a| a.rule != "connection_surge"), "{a:#?}");
    }

    #[test]
    fn medians() {
        assert_eq!(median(&VecDeque::from(vec![3, 1, 2])), 2);
        assert_eq!(median(&VecDeque::from(vec![4, 1, 3, 2])), 2);
        assert_eq!(median(&VecDeque::from(vec![u64::MAX, u64::MAX])), u64::MAX);
    }
}
