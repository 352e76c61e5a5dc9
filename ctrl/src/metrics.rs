//! Prometheus (OpenMetrics text) rendering of the control plane's
//! per-service and per-probe families, on the encoding helpers and RTT
//! buckets the node's `/metrics` shares (`wirelens_proto::metrics`,
//! re-exported here).
//!
//! Control plane families (prefix `wirelens_`), per service with the labels
//! `server` (the server's IP), `port` and `proto`, merged over nodes since
//! the store was created: `service_{flows,packets,bytes,data_packets,
//! retransmits,retrans_seen,hole_fill,dup_acks,zero_window_stalls,
//! syn_retries,syn_retry_flows,connections_refused,connections_unanswered,
//! pmtu_errors}_total`, `service_zero_window_seconds_total`,
//! `service_pmtu_mtu_bytes` (the smallest MTU announced) and the histogram
//! `service_rtt_seconds{side}` (server: tap -> server -> tap, client:
//! tap -> client -> tap). Per probe target and node, over the last
//! [`PROBE_WINDOW_NS`]: `probe_up`, `probe_loss_ratio{direction}`,
//! `probe_rtt_seconds{quantile}`, `probe_jitter_seconds`.
//!
//! Bounded: at most `cap` services are rendered (the most packets first);
//! the rest add up under `server="_other",port="_other"` per protocol, as
//! the node's table does, so a scrape costs the same whatever the store
//! holds. Probe rows are capped the same way (the rest are left out and
//! counted in `probe_rows_omitted`).
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
pub use wirelens_proto::metrics::{
    counter, gauge, l, prometheus_buckets, rtt_histograms, Labels, RTT_BUCKETS_S,
};

use crate::agg::{Counters, ProbeSummary};
use crate::report::ProbeState;
use crate::store::OTHER;

/// Services rendered by default; the rest add up under `_other`.
pub const DEFAULT_METRICS_SERVICES: usize = 200;

/// Probe rows (target x node) are read over this trailing window.
pub const PROBE_WINDOW_NS: u64 = 5 * 60 * 1_000_000_000;

/// Probe windows a scrape reads at most (the newest): 5 minutes of 1 s
/// windows of about 66 target x node pairs; beyond, the rows cover less time.
pub const PROBE_WINDOWS_READ: usize = 20_000;

/// The `server`, `port` and `proto` labels of a service name
/// (`198.18.2.2:8080/tcp`, `[2001:db8::1]:443/tcp`); a name that is not of
/// that form (the store's `_other`) is `_other` in all three.
pub fn service_labels(service: &str) -> Labels {
    let parsed = service.rsplit_once('/').and_then(|(addr, proto)| {
        let (ip, port) = addr.rsplit_once(':')?;
        let ip = ip
            .strip_prefix('[')
            .and_then(|i| i.strip_suffix(']'))
            .unwrap_or(ip);
        port.parse::<u16>().ok()?;
        ip.parse::<std::net::IpAddr>().ok()?;
        Some((ip, port, proto))
    });
    match parsed {
        Some((ip, port, proto)) => l(&[("server", ip), ("port", port), ("proto", proto)]),
        None => l(&[("server", OTHER), ("port", OTHER), ("proto", OTHER)]),
    }
}

/// The services of a scrape: at most `cap` by name (the most packets first,
/// then by name), the rest merged per protocol into `_other` rows.
pub fn cap_services(mut rows: Vec<(String, Counters)>, cap: usize) -> Vec<(Labels, Counters)> {
    rows.sort_by(|a, b| b.1.packets.cmp(&a.1.packets).then_with(|| a.0.cmp(&b.0)));
    let mut kept = Vec::with_capacity(rows.len().min(cap) + 2);
    let mut other: BTreeMap<String, Counters> = BTreeMap::new();
    for (svc, c) in rows {
        let labels = service_labels(&svc);
        let named = labels[0].1 != OTHER;
        if named && kept.len() < cap {
            kept.push((labels, c));
        } else {
            let proto = labels[2].1.clone();
            other.entry(proto).or_default().merge(&c);
        }
    }
    for (proto, c) in other {
        kept.push((
            l(&[("server", OTHER), ("port", OTHER), ("proto", &proto)]),
            c,
        ));
    }
    kept
}

/// The control plane's service and probe families for one scrape.
#[derive(Debug, Default)]
pub struct CtrlCollector {
    /// Services after [`cap_services`].
    pub services: Vec<(Labels, Counters)>,
    /// Probe rows (target x node) of the trailing [`PROBE_WINDOW_NS`].
    pub probes: Vec<ProbeSummary>,
    /// Probe rows rendered at most.
    pub probe_cap: usize,
}

impl CtrlCollector {
    /// A collector of `totals` (the store's cumulative per-service counters)
    /// and `probes`, `cap` services and probe rows at most.
    pub fn new(totals: Vec<(String, Counters)>, probes: Vec<ProbeSummary>, cap: usize) -> Self {
        CtrlCollector {
            services: cap_services(totals, cap),
            probes,
            probe_cap: cap,
        }
    }

    fn encode_services(&self, e: &mut DescriptorEncoder<'_>) -> fmt::Result {
        type One = fn(&Counters) -> u64;
        let ones: [(&str, &str, One); 14] = [
            (
                "service_flows",
                "Flows seen for the service, all nodes",
                |c| c.flows,
            ),
            (
                "service_packets",
                "Packets of the service's flows, all nodes",
                |c| c.packets,
            ),
            (
                "service_bytes",
                "IP bytes of the service's flows, all nodes",
                |c| c.bytes,
            ),
            (
                "service_data_packets",
                "Packets of the directions that carried payload: the denominator of the \
                 retransmission rate",
                |c| c.data_packets,
            ),
            (
                "service_retransmits",
                "TCP retransmissions (Wireshark's count) in the service's flows",
                |c| c.retransmits,
            ),
            (
                "service_retrans_seen",
                "Data the tap had already seen, sent again: loss after the tap",
                |c| c.retrans_seen,
            ),
            (
                "service_hole_fill",
                "Data filling a hole the tap saw: loss before the tap (or reordering)",
                |c| c.hole_fill,
            ),
            (
                "service_dup_acks",
                "Duplicate ACKs in the service's flows",
                |c| c.dup_acks,
            ),
            (
                "service_zero_window_stalls",
                "Zero-window stalls in the service's flows",
                |c| c.zero_window_events,
            ),
            (
                "service_syn_retries",
                "SYNs beyond the first in the service's handshakes",
                |c| c.syn_retries,
            ),
            (
                "service_syn_retry_flows",
                "Connections whose handshake needed more than one SYN",
                |c| c.syn_retry_flows,
            ),
            (
                "service_connections_refused",
                "Connection attempts answered with a reset",
                |c| c.refused,
            ),
            (
                "service_connections_unanswered",
                "Connection attempts never answered",
                |c| c.unanswered,
            ),
            (
                "service_pmtu_errors",
                "ICMP frag-needed/packet-too-big quoting the service's flows",
                |c| c.pmtu_errors,
            ),
        ];
        let rows = &self.services;
        for (name, help, f) in ones {
            counter(e, name, help, rows.iter().map(|(lb, c)| (lb.clone(), f(c))))?;
        }
        counter(
            e,
            "service_zero_window_seconds",
            "Time the service's receivers spent at zero window, summed over flows",
            rows.iter()
                .map(|(lb, c)| (lb.clone(), c.zero_window_ns as f64 / 1e9)),
        )?;
        gauge(
            e,
            "service_pmtu_mtu_bytes",
            "Smallest MTU announced by the ICMP PMTU errors quoting the service's flows",
            rows.iter()
                .filter_map(|(lb, c)| c.pmtu_min_mtu.map(|m| (lb.clone(), i64::from(m)))),
        )?;
        let side = |lb: &Labels, s: &str| {
            let mut lb = lb.clone();
            lb.push(("side", s.to_string()));
            lb
        };
        rtt_histograms(
            e,
            "service_rtt_seconds",
            "RTT per ACK at the taps, merged from the flows' histograms: side=server is \
             tap -> server -> tap (client data), side=client is tap -> client -> tap (server data)",
            rows.iter().flat_map(|(lb, c)| {
                [
                    (side(lb, "server"), &c.rtt_server),
                    (side(lb, "client"), &c.rtt_client),
                ]
            }),
        )
    }

    fn encode_probes(&self, e: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let rows: Vec<&ProbeSummary> = self.probes.iter().take(self.probe_cap).collect();
        let t = |p: &ProbeSummary| l(&[("target", &p.target), ("node", &p.node)]);
        let with = |p: &ProbeSummary, k: &'static str, v: &str| {
            let mut lb = t(p);
            lb.push((k, v.to_string()));
            lb
        };
        gauge(
            e,
            "probe_up",
            "1 when the latest probe window of the target seen from the node got replies",
            rows.iter()
                .filter_map(|p| p.state.map(|s| (t(p), i64::from(s == ProbeState::Ok)))),
        )?;
        gauge(
            e,
            "probe_loss_ratio",
            "Probe loss over the last 5 minutes: lost / sent, by direction (any, up, down)",
            rows.iter().flat_map(|p| {
                [
                    ("any", p.loss_rate),
                    ("up", p.loss_up_rate),
                    ("down", p.loss_down_rate),
                ]
                .into_iter()
                .filter_map(|(d, v)| v.map(|v| (with(p, "direction", d), v)))
                .collect::<Vec<_>>()
            }),
        )?;
        gauge(
            e,
            "probe_rtt_seconds",
            "Probe RTT over the last 5 minutes net of the reflector's dwell, by quantile",
            rows.iter().flat_map(|p| {
                [
                    ("0.5", p.rtt.p50_ns),
                    ("0.9", p.rtt.p90_ns),
                    ("0.99", p.rtt.p99_ns),
                ]
                .into_iter()
                .filter_map(|(q, v)| v.map(|v| (with(p, "quantile", q), v as f64 / 1e9)))
                .collect::<Vec<_>>()
            }),
        )?;
        gauge(
            e,
            "probe_jitter_seconds",
            "Mean |IPDV| of consecutive probes over the last 5 minutes (RFC 3393)",
            rows.iter()
                .filter_map(|p| p.jitter_ns.map(|v| (t(p), v as f64 / 1e9))),
        )?;
        gauge(
            e,
            "probe_rows_omitted",
            "Probe rows (target x node) beyond the cap, not rendered",
            [(
                vec![],
                i64::try_from(self.probes.len().saturating_sub(rows.len())).unwrap_or(i64::MAX),
            )],
        )
    }
}

impl Collector for CtrlCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> fmt::Result {
        self.encode_services(&mut e)?;
        self.encode_probes(&mut e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    #[test]
    fn service_names_split_into_labels() {
        let v = |s: &str| -> Vec<String> { service_labels(s).into_iter().map(|x| x.1).collect() };
        assert_eq!(v("198.18.2.2:8080/tcp"), ["198.18.2.2", "8080", "tcp"]);
        assert_eq!(v("[2001:db8::1]:443/udp"), ["2001:db8::1", "443", "udp"]);
        assert_eq!(v(OTHER), [OTHER, OTHER, OTHER]);
        assert_eq!(v("nonsense/tcp"), [OTHER, OTHER, OTHER]);
        assert_eq!(v("198.18.2.2:99999/tcp"), [OTHER, OTHER, OTHER]);
    }

    fn counters(packets: u64) -> Counters {
        let mut c = Counters {
            packets,
            flows: 1,
            zero_window_ns: 1_500_000_000,
            ..Counters::default()
        };
        c.rtt_server.record(3_000_000);
        c
    }

    /// The cap keeps the services with the most packets; the rest, and the
    /// store's own `_other`, add up per protocol; nothing is lost.
    #[test]
    fn cap_keeps_the_busiest_and_sums_the_rest() {
        let rows = vec![
            ("198.18.2.1:80/tcp".to_string(), counters(10)),
            ("198.18.2.2:80/tcp".to_string(), counters(30)),
            ("198.18.2.3:53/udp".to_string(), counters(20)),
            ("198.18.2.4:80/tcp".to_string(), counters(5)),
            (OTHER.to_string(), counters(7)),
        ];
        let capped = cap_services(rows, 2);
        let names: Vec<String> = capped
            .iter()
            .map(|(lb, c)| format!("{}:{}/{}={}", lb[0].1, lb[1].1, lb[2].1, c.packets))
            .collect();
        assert_eq!(
            names,
            [
                "198.18.2.2:80/tcp=30",
                "198.18.2.3:53/udp=20",
                "_other:_other/_other=7",
                "_other:_other/tcp=15"
            ]
        );
        assert_eq!(capped.iter().map(|x| x.1.packets).sum::<u64>(), 72);
        assert_eq!(capped[3].1.rtt_server.count(), 2, "histograms merge too");
    }

    #[test]
    fn renders_histograms_counters_and_probes() {
        let mut p = ProbeSummary {
            target: "198.18.2.2:862".into(),
            node: "n1".into(),
            state: Some(ProbeState::Ok),
            loss_up_rate: Some(0.25),
            ..ProbeSummary::default()
        };
        p.rtt.p50_ns = Some(20_000_000);
        let mut r = Registry::with_prefix("wirelens");
        r.register_collector(Box::new(CtrlCollector::new(
            vec![("198.18.2.2:8080/tcp".into(), counters(12))],
            vec![p.clone(), p],
            1,
        )));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        let svc = "server=\"198.18.2.2\",port=\"8080\",proto=\"tcp\"";
        for line in [
            format!("wirelens_service_packets_total{{{svc}}} 12"),
            format!("wirelens_service_zero_window_seconds_total{{{svc}}} 1.5"),
            format!("wirelens_service_rtt_seconds_bucket{{le=\"0.0025\",{svc},side=\"server\"}} 0"),
            format!("wirelens_service_rtt_seconds_bucket{{le=\"0.005\",{svc},side=\"server\"}} 1"),
            format!("wirelens_service_rtt_seconds_count{{{svc},side=\"client\"}} 0"),
            "wirelens_probe_up{target=\"198.18.2.2:862\",node=\"n1\"} 1".to_string(),
            "wirelens_probe_loss_ratio{target=\"198.18.2.2:862\",node=\"n1\",direction=\"up\"} 0.25"
                .to_string(),
            "wirelens_probe_rtt_seconds{target=\"198.18.2.2:862\",node=\"n1\",quantile=\"0.5\"} 0.02"
                .to_string(),
            "wirelens_probe_rows_omitted 1".to_string(),
        ] {
            assert!(text.contains(&line), "{line} not in\n{text}");
        }
        assert!(!text.contains("pmtu_mtu_bytes{"), "no MTU without an error");
    }
}
