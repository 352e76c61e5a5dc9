//! `/metrics`: Prometheus (OpenMetrics text) from the workers' snapshots,
//! the XDP program's counters, the AF_XDP sockets' drop counters and the
//! interface's kernel and driver counters, read at scrape time.
//!
//! Families (all prefixed `wirelens_`): node info; `xdp_*` (program
//! counters); `xsk_*{queue}` (socket drops); `queue_*{queue}` and
//! `handoff_*{queue}` (worker and hand-off counters); `packets`, `bytes`,
//! `flows{proto}`, `tcp_*`, `parse_errors{reason}` (the engines' summary);
//! `interface_*{iface}` (/sys/class/net/IF/statistics) and
//! `interface_driver_stat{iface,name}` (ethtool -S); `service_*{service,proto}`
//! with `direction` (to_server / to_client) or `half` (server / client RTT)
//! where it applies; `probe_*{target}` (`--probe`: packets by result,
//! windows by state, the latest window's loss ratio by direction, RTT
//! quantiles, jitter, state, and an RTT histogram since the start). No
//! per-flow labels.
#![forbid(unsafe_code)]

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use wirelens_dataplane::pipeline::{merge_summary, WorkerCounters};
use wirelens_dataplane::report::Summary;

use crate::export::now_ns;
use crate::probes::ProbeBoard;
use crate::services::{ServiceStats, ServiceTable, DIRECTIONS, HALVES};
use crate::NodeState;
use wirelens_probe::monitor::WindowState;
use wirelens_proto::metrics::{counter, gauge, l, rtt_histograms, Labels};

/// The registry with the node's collector; encode it per scrape.
pub fn registry(state: Arc<NodeState>) -> Registry {
    let mut r = Registry::with_prefix("wirelens");
    r.register_collector(Box::new(NodeCollector { state }));
    r
}

/// Renders the registry as OpenMetrics text.
pub fn render(r: &Registry) -> Result<String, fmt::Error> {
    let mut s = String::new();
    prometheus_client::encoding::text::encode(&mut s, r)?;
    Ok(s)
}

#[derive(Debug)]
struct NodeCollector {
    state: Arc<NodeState>,
}

impl Collector for NodeCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> fmt::Result {
        let st = &self.state;
        let iface = st.iface.as_str();
        let info = st.info.get();
        {
            let mut labels = l(&[("version", env!("CARGO_PKG_VERSION")), ("iface", iface)]);
            if let Some(i) = info {
                labels.push(("xdp_mode", i.xdp_mode.clone()));
                labels.push(("xsk_bind", i.bind_mode.clone()));
                labels.push(("huge_pages", i.huge_pages.to_string()));
                labels.push(("poll", i.poll.clone()));
            }
            let mut m = e.encode_descriptor(
                "node",
                "The node: version, interface, XDP attach mode, AF_XDP bind mode",
                None,
                MetricType::Info,
            )?;
            m.encode_info(&labels)?;
        }
        {
            let g = ConstGauge::new(st.started_ns as f64 / 1e9);
            let m = e.encode_descriptor(
                "start_time_seconds",
                "When the daemon started (Unix time)",
                None,
                g.metric_type(),
            )?;
            g.encode(m)?;
        }

        counter(
            &mut e,
            "http_flows_busy",
            "/flows requests refused (503) because the maximum were being served",
            [(
                vec![],
                st.flows_busy.load(std::sync::atomic::Ordering::Relaxed),
            )],
        )?;
        counter(
            &mut e,
            "http_flows_unauthorized",
            "/flows requests refused (401) for a missing or unknown token (--flows-token-file)",
            [(
                vec![],
                st.flows_unauthorized
                    .load(std::sync::atomic::Ordering::Relaxed),
            )],
        )?;

        // The XDP program's counters.
        let xdp = st
            .prog
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|p| p.counters().ok());
        if let Some(c) = xdp {
            counter(
                &mut e,
                "xdp_seen",
                "Frames the XDP program ran on",
                [(vec![], c.seen)],
            )?;
            counter(
                &mut e,
                "xdp_redirected",
                "Frames the XDP program handed to an AF_XDP socket",
                [(vec![], c.redirected)],
            )?;
            counter(
                &mut e,
                "xdp_passed",
                "Frames the XDP program passed to the kernel stack, by reason",
                [
                    (l(&[("reason", "no_socket")]), c.pass_no_socket),
                    (l(&[("reason", "filtered")]), c.pass_filtered),
                    (l(&[("reason", "not_ip")]), c.pass_not_ip),
                    (l(&[("reason", "malformed")]), c.pass_malformed),
                ],
            )?;
            counter(
                &mut e,
                "xdp_taken_undecided",
                "Frames taken although the filter could not decide (too many VLAN tags or IPv6 \
                 extension headers, ESP); part of the redirected ones",
                [(vec![], c.taken_undecided)],
            )?;
        }

        // The inline program's counters (gateway mode).
        let inline = st
            .inline
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|p| p.counters().ok());
        if let Some(c) = inline {
            counter(
                &mut e,
                "inline_seen",
                "Frames the inline XDP program ran on (all ports)",
                [(vec![], c.seen)],
            )?;
            counter(
                &mut e,
                "inline_forwarded",
                "Frames the inline XDP program redirected to the peer port",
                [(vec![], c.forwarded)],
            )?;
            counter(
                &mut e,
                "inline_not_forwarded",
                "Frames that did not leave on the peer port, by reason (no_peer: passed to the \
                 stack; redirect_error, xmit_drop: reported by the kernel after the redirect)",
                [
                    (l(&[("reason", "no_peer")]), c.no_peer),
                    (l(&[("reason", "redirect_error")]), c.redirect_err),
                    (l(&[("reason", "xmit_drop")]), c.xmit_drops),
                ],
            )?;
            counter(
                &mut e,
                "inline_copied",
                "Header copies of forwarded frames handed to the analysis",
                [(vec![], c.copied)],
            )?;
            counter(
                &mut e,
                "inline_not_analysed",
                "Forwarded frames the analysis did not get, by reason (ring_full: the analysis \
                 fell behind; empty: nothing to copy)",
                [
                    (l(&[("reason", "ring_full")]), c.ring_full),
                    (l(&[("reason", "empty")]), c.not_copied),
                ],
            )?;
        }

        let workers = st.workers.get().map(Vec::as_slice).unwrap_or_default();
        let q = |w: &crate::export::WorkerShared| l(&[("queue", &w.queue.to_string())]);

        // AF_XDP socket drops.
        let xsk: Vec<_> = workers.iter().map(|w| (q(w), w.xsk_stats())).collect();
        type XskField = fn(&wirelens_dataplane::xdp::XskStats) -> u64;
        let xsk_fields: [(&str, &str, XskField); 4] = [
            (
                "xsk_rx_dropped",
                "AF_XDP: frames dropped (e.g. longer than a UMEM frame)",
                |s| s.rx_dropped,
            ),
            (
                "xsk_rx_ring_full",
                "AF_XDP: frames dropped because the rx ring was full (worker too slow)",
                |s| s.rx_ring_full,
            ),
            (
                "xsk_rx_fill_ring_empty_descs",
                "AF_XDP: times the fill ring was empty when a frame came",
                |s| s.rx_fill_ring_empty_descs,
            ),
            (
                "xsk_rx_invalid_descs",
                "AF_XDP: frames dropped for an invalid descriptor",
                |s| s.rx_invalid_descs,
            ),
        ];
        for (name, help, f) in xsk_fields {
            counter(
                &mut e,
                name,
                help,
                xsk.iter()
                    .filter_map(|(lb, s)| s.as_ref().map(|s| (lb.clone(), f(s)))),
            )?;
        }

        // What exporting cost the workers (time away from their queues).
        counter(
            &mut e,
            "worker_export_seconds",
            "Time a worker spent exporting (snapshots, /flows, push) instead of reading its queue",
            workers
                .iter()
                .map(|w| (q(w), w.export_ns.load(Ordering::Relaxed) as f64 / 1e9)),
        )?;
        counter(
            &mut e,
            "worker_export_flows",
            "Live flows a worker walked while exporting (export seconds / this = cost per flow)",
            workers
                .iter()
                .map(|w| (q(w), w.export_flows.load(Ordering::Relaxed))),
        )?;
        counter(
            &mut e,
            "worker_export_skipped",
            "Exports the aggregator thread could not take (it lagged): that second's live view \
             was skipped, its closed flows went with the next export",
            workers
                .iter()
                .map(|w| (q(w), w.export_skipped.load(Ordering::Relaxed))),
        )?;
        gauge(
            &mut e,
            "worker_export_max_nanoseconds",
            "Longest single export of a worker: the longest it left its queue for it",
            workers.iter().map(|w| {
                let ns = w.export_max_ns.load(Ordering::Relaxed);
                (q(w), i64::try_from(ns).unwrap_or(i64::MAX))
            }),
        )?;

        // Workers and the hand-off rings.
        let snaps: Vec<_> = workers.iter().map(|w| (q(w), w.snapshot())).collect();
        type WField = fn(&WorkerCounters) -> u64;
        let wfields: [(&str, &str, WField); 7] = [
            ("queue_frames", "Frames a worker read from its queue", |c| {
                c.frames
            }),
            (
                "queue_parse_errors",
                "Frames that did not parse (non-IP included)",
                |c| c.parse_errors,
            ),
            (
                "queue_analysed_local",
                "Packets a worker analysed for flows it owns, from its own queue",
                |c| c.local,
            ),
            (
                "handoff_sent",
                "Packets handed to the owner worker's ring",
                |c| c.handed_off,
            ),
            (
                "handoff_received",
                "Packets taken from other workers' rings and analysed",
                |c| c.received,
            ),
            (
                "handoff_ring_full",
                "Packets dropped because the owner's hand-off ring was full",
                |c| c.ring_full,
            ),
            (
                "queue_source_errors",
                "Errors reading the AF_XDP socket",
                |c| c.source_errors,
            ),
        ];
        for (name, help, f) in wfields {
            counter(
                &mut e,
                name,
                help,
                snaps.iter().map(|(lb, s)| (lb.clone(), f(&s.counters))),
            )?;
        }
        gauge(
            &mut e,
            "flows_active",
            "Flows in a worker's table",
            snaps
                .iter()
                .map(|(lb, s)| (lb.clone(), s.active_flows as i64)),
        )?;
        gauge(
            &mut e,
            "flows_closed_kept",
            "Recently closed flows a worker keeps for /flows",
            snaps
                .iter()
                .map(|(lb, s)| (lb.clone(), s.closed_kept as i64)),
        )?;
        counter(
            &mut e,
            "flows_closed_dropped",
            "Closed flows pushed out of the /flows ring",
            snaps.iter().map(|(lb, s)| (lb.clone(), s.closed_dropped)),
        )?;
        {
            let now = now_ns();
            let mut m = e.encode_descriptor(
                "export_age_seconds",
                "Time since a worker's last export",
                None,
                MetricType::Gauge,
            )?;
            for (lb, s) in &snaps {
                let age = if s.at_ns == 0 {
                    f64::NAN
                } else {
                    now.saturating_sub(s.at_ns) as f64 / 1e9
                };
                m.encode_family(lb)?.encode_gauge(&age)?;
            }
        }

        // The engines' summary, merged.
        let mut sum: Option<Summary> = None;
        for (_, s) in &snaps {
            match sum.as_mut() {
                None => sum = Some(s.summary.clone()),
                Some(t) => merge_summary(t, &s.summary),
            }
        }
        let sum = sum.unwrap_or_default();
        counter(
            &mut e,
            "packets",
            "Frames analysed (every frame read)",
            [(vec![], sum.packets)],
        )?;
        counter(
            &mut e,
            "bytes",
            "IP (L3) bytes of the parsed packets",
            [(vec![], sum.bytes)],
        )?;
        counter(
            &mut e,
            "flows",
            "Flows seen, by protocol",
            [
                (l(&[("proto", "tcp")]), sum.flows.tcp),
                (l(&[("proto", "udp")]), sum.flows.udp),
                (l(&[("proto", "icmp")]), sum.flows.icmp),
                (l(&[("proto", "other")]), sum.flows.other),
            ],
        )?;
        counter(
            &mut e,
            "flows_evicted",
            "Flows exported early because a table was full",
            [(vec![], sum.evicted_flows)],
        )?;
        counter(
            &mut e,
            "non_ip_frames",
            "Frames without IP (ARP, LLDP, ...)",
            [(vec![], sum.non_ip)],
        )?;
        counter(
            &mut e,
            "parse_errors",
            "Frames that could not be parsed, by reason",
            sum.parse_errors
                .iter()
                .map(|(k, v)| (l(&[("reason", k)]), *v)),
        )?;
        counter(
            &mut e,
            "fragments",
            "IP fragments",
            [
                (l(&[("ip", "4")]), sum.fragments.ipv4),
                (l(&[("ip", "6")]), sum.fragments.ipv6),
            ],
        )?;
        counter(
            &mut e,
            "icmp_pmtu_errors",
            "ICMP frag-needed (4) and ICMPv6 packet-too-big (6) messages",
            [
                (l(&[("ip", "4")]), sum.icmp.frag_needed),
                (l(&[("ip", "6")]), sum.icmp.packet_too_big),
            ],
        )?;
        if let Ok(serde_json::Value::Object(tcp)) = serde_json::to_value(sum.tcp) {
            for (k, v) in tcp {
                let Some(v) = v.as_u64() else { continue };
                if k == "zero_window_ns" {
                    counter(
                        &mut e,
                        "tcp_zero_window_seconds",
                        "TCP: time receivers spent at zero window, all flows",
                        [(vec![], v as f64 / 1e9)],
                    )?;
                } else {
                    counter(
                        &mut e,
                        &format!("tcp_{k}"),
                        &format!("TCP {k} (flow.v1 Direction counter), all flows and directions"),
                        [(vec![], v)],
                    )?;
                }
            }
        }

        // The interface's kernel and driver counters.
        if let Ok(nic) = wirelens_probe::nic::read_counters(iface) {
            let mut driver: Vec<(Labels, i64)> = Vec::new();
            for c in &nic.counters {
                match c.source {
                    wirelens_probe::nic::Source::Kernel => {
                        counter(
                            &mut e,
                            &format!("interface_{}", c.name),
                            &format!("/sys/class/net/IF/statistics/{}", c.name),
                            [(l(&[("iface", iface)]), c.value)],
                        )?;
                    }
                    wirelens_probe::nic::Source::Driver => {
                        let mut lb = l(&[("iface", iface), ("name", &c.name)]);
                        if let Some(q) = c.queue {
                            let dir = match q.dir {
                                wirelens_probe::nic::QueueDir::Rx => "rx",
                                wirelens_probe::nic::QueueDir::Tx => "tx",
                            };
                            lb.push(("dir", dir.to_string()));
                            lb.push(("queue", q.index.to_string()));
                        }
                        driver.push((lb, c.value as i64));
                    }
                }
            }
            gauge(
                &mut e,
                "interface_driver_stat",
                "The driver's own statistics (ethtool -S), by name; per-queue ones also by dir and queue",
                driver,
            )?;
        }

        // Services (server ip:port), merged over workers.
        let mut svc: Option<ServiceTable> = None;
        for (_, s) in &snaps {
            match svc.as_mut() {
                None => svc = Some(s.services.clone()),
                Some(t) => t.merge(&s.services),
            }
        }
        if let Some(svc) = svc {
            encode_services(&mut e, &svc)?;
        }

        if let Some(b) = &st.probes {
            encode_probes(&mut e, b)?;
        }

        if let Some(p) = &st.push {
            let p = *p.lock().unwrap_or_else(|x| x.into_inner());
            counter(
                &mut e,
                "push_reports",
                "Reports to the control plane, by outcome",
                [
                    (l(&[("outcome", "accepted")]), p.stats.accepted),
                    (l(&[("outcome", "duplicate")]), p.stats.duplicates),
                    (l(&[("outcome", "rejected")]), p.stats.rejected),
                    (l(&[("outcome", "dropped")]), p.stats.dropped_reports),
                ],
            )?;
            counter(
                &mut e,
                "push_errors",
                "Failed pushes (retried)",
                [(vec![], p.errors)],
            )?;
            counter(
                &mut e,
                "push_batches_deferred",
                "Delta hand-overs put off because the pusher lagged (nothing lost)",
                [(vec![], p.batches_deferred)],
            )?;
            counter(
                &mut e,
                "push_exited_dropped",
                "Last deltas of exited flows dropped: too many waiting (in dropped_flows)",
                [(vec![], p.exited_dropped)],
            )?;
            gauge(
                &mut e,
                "push_backlog",
                "Reports waiting to be sent",
                [(vec![], p.backlog as i64)],
            )?;
            if let Some((bytes, c)) = p.disk {
                gauge(
                    &mut e,
                    "push_backlog_disk_bytes",
                    "Bytes of the reports waiting in --backlog-dir",
                    [(vec![], bytes as i64)],
                )?;
                counter(
                    &mut e,
                    "push_backlog_replayed",
                    "Reports an earlier run left in --backlog-dir, queued at the start",
                    [(vec![], c.replayed)],
                )?;
                counter(
                    &mut e,
                    "push_backlog_corrupt",
                    "Files of --backlog-dir that failed their checks: deleted, never sent",
                    crate::backlog::Corrupt::ALL
                        .map(|r| (l(&[("reason", r.label())]), c.corrupt(r))),
                )?;
                counter(
                    &mut e,
                    "push_backlog_write_errors",
                    "Reports --backlog-dir could not store (held in memory only)",
                    [(vec![], p.stats.spool_write_errors)],
                )?;
            }
        }

        if let Some(x) = &st.ipfix {
            let s = *x.sent.lock().unwrap_or_else(|e| e.into_inner());
            let t = *x.trackers.lock().unwrap_or_else(|e| e.into_inner());
            let to = || l(&[("collector", x.peer.as_str())]);
            counter(
                &mut e,
                "ipfix_messages",
                "IPFIX messages sent over UDP",
                [(to(), s.messages_sent)],
            )?;
            counter(
                &mut e,
                "ipfix_records",
                "IPFIX data records (flow deltas) sent",
                [(to(), s.records_sent)],
            )?;
            counter(
                &mut e,
                "ipfix_sent_bytes",
                "Bytes of IPFIX messages sent",
                [(to(), s.bytes_sent)],
            )?;
            counter(
                &mut e,
                "ipfix_template_sets",
                "Messages that carried the templates (first, every 100 messages, every 30 s)",
                [(to(), s.template_sets)],
            )?;
            counter(
                &mut e,
                "ipfix_send_errors",
                "IPFIX messages the socket refused (not retried)",
                [(to(), s.send_errors)],
            )?;
            counter(
                &mut e,
                "ipfix_records_failed",
                "Data records in the messages the socket refused",
                [(to(), s.records_failed)],
            )?;
            counter(
                &mut e,
                "ipfix_batches_deferred",
                "Delta hand-overs put off because the IPFIX exporter lagged (nothing lost)",
                [(to(), t.batches_deferred)],
            )?;
            counter(
                &mut e,
                "ipfix_exited_dropped",
                "Last deltas of exited flows not exported: too many waiting",
                [(to(), t.exited_dropped)],
            )?;
        }
        Ok(())
    }
}

fn encode_probes(e: &mut DescriptorEncoder<'_>, board: &ProbeBoard) -> fmt::Result {
    let slots = board.slots();
    let t =
        |s: &crate::probes::TargetSlot| -> Labels { vec![("target", s.cfg.target.to_string())] };
    let with = |s: &crate::probes::TargetSlot, k: &'static str, v: &str| -> Labels {
        let mut lb = t(s);
        lb.push((k, v.to_string()));
        lb
    };
    let mut rows = Vec::new();
    for s in &slots {
        let x = &s.totals;
        for (r, v) in [
            ("sent", x.sent),
            ("received", x.received),
            ("lost_up", x.lost_up),
            ("lost_down", x.lost_down),
            ("lost_unattributed", x.lost_unattributed),
            ("late", x.late),
            ("duplicate", x.duplicates),
            ("reordered", x.reordered),
            ("malformed", x.malformed),
        ] {
            rows.push((with(s, "result", r), v));
        }
    }
    counter(
        e,
        "probe_packets",
        "TWAMP-light probes of finished windows: sent = received + lost_up + lost_down + \
         lost_unattributed (late replies are lost; duplicate, reordered and malformed are extra)",
        rows,
    )?;
    counter(
        e,
        "probe_windows",
        "Finished probe windows by state (ok, no_reply, refused, unreachable, error)",
        slots.iter().flat_map(|s| {
            WindowState::ALL
                .iter()
                .zip(s.totals.by_state)
                .map(|(st, n)| (with(s, "state", st.as_str()), n))
                .collect::<Vec<_>>()
        }),
    )?;
    counter(
        e,
        "probe_windows_dropped",
        "Probe windows dropped before the control plane got them (the pusher lagged)",
        [(vec![], board.dropped())],
    )?;
    // The latest window.
    let last: Vec<_> = slots
        .iter()
        .filter_map(|s| s.last.as_ref().map(|w| (s, w)))
        .collect();
    gauge(
        e,
        "probe_up",
        "1 when the latest probe window got replies (state ok), else 0",
        last.iter()
            .map(|(s, w)| (t(s), i64::from(w.state == WindowState::Ok))),
    )?;
    gauge(
        e,
        "probe_state",
        "The latest probe window's state: 1 for the state it is in",
        last.iter().flat_map(|(s, w)| {
            WindowState::ALL
                .iter()
                .map(|st| (with(s, "state", st.as_str()), i64::from(*st == w.state)))
                .collect::<Vec<_>>()
        }),
    )?;
    {
        let mut m = e.encode_descriptor(
            "probe_loss_ratio",
            "Loss of the latest probe window: lost / sent, by direction (any, up, down, \
             unattributed)",
            None,
            MetricType::Gauge,
        )?;
        for (s, w) in &last {
            if w.sent == 0 {
                continue;
            }
            for (d, n) in [
                ("any", w.lost),
                ("up", w.lost_up),
                ("down", w.lost_down),
                ("unattributed", w.lost_unattributed),
            ] {
                let v = n as f64 / w.sent as f64;
                m.encode_family(&with(s, "direction", d))?
                    .encode_gauge(&v)?;
            }
        }
    }
    {
        let mut m = e.encode_descriptor(
            "probe_rtt_seconds",
            "RTT of the latest probe window net of the reflector's dwell, by quantile \
             (0 = min, 1 = max)",
            None,
            MetricType::Gauge,
        )?;
        for (s, w) in &last {
            for (q, v) in [
                ("0", w.rtt.min()),
                ("0.5", w.rtt.quantile(0.5)),
                ("0.9", w.rtt.quantile(0.9)),
                ("0.99", w.rtt.quantile(0.99)),
                ("1", w.rtt.max()),
            ] {
                if let Some(v) = v {
                    let v = v as f64 / 1e9;
                    m.encode_family(&with(s, "quantile", q))?.encode_gauge(&v)?;
                }
            }
        }
    }
    {
        let mut m = e.encode_descriptor(
            "probe_jitter_seconds",
            "Mean |IPDV| of consecutive probes in the latest window (RFC 3393)",
            None,
            MetricType::Gauge,
        )?;
        for (s, w) in &last {
            if let Some(v) = w.ipdv.mean() {
                let v = v as f64 / 1e9;
                m.encode_family(&t(s))?.encode_gauge(&v)?;
            }
        }
    }
    {
        let mut m = e.encode_descriptor(
            "probe_window_end_seconds",
            "When the latest probe window ended (Unix time)",
            None,
            MetricType::Gauge,
        )?;
        for (s, w) in &last {
            let v = w.end_ns as f64 / 1e9;
            m.encode_family(&t(s))?.encode_gauge(&v)?;
        }
    }
    rtt_histograms(
        e,
        "probe_rtt_histogram_seconds",
        "RTT of every probe answered since the start, net of the reflector's dwell",
        slots.iter().map(|s| (t(s), &s.totals.rtt)),
    )
}

fn encode_services(e: &mut DescriptorEncoder<'_>, svc: &ServiceTable) -> fmt::Result {
    let rows = svc.sorted();
    let base = |k: &crate::services::ServiceKey| -> Labels {
        vec![("service", k.to_string()), ("proto", k.proto.to_string())]
    };
    type One = fn(&ServiceStats) -> u64;
    let ones: [(&str, &str, One); 4] = [
        (
            "service_flows",
            "Flows of a service (server ip:port)",
            |s| s.flows,
        ),
        (
            "service_connection_attempts",
            "TCP connections a client opened with a SYN",
            |s| s.connection_attempts,
        ),
        (
            "service_connections_refused",
            "TCP connection attempts answered with a reset",
            |s| s.connections_refused,
        ),
        (
            "service_connections_reset",
            "TCP connections ended by a reset",
            |s| s.connections_reset,
        ),
    ];
    for (name, help, f) in ones {
        counter(e, name, help, rows.iter().map(|(k, s)| (base(k), f(s))))?;
    }
    type Two = fn(&ServiceStats) -> [u64; 2];
    let twos: [(&str, &str, Two); 9] = [
        (
            "service_packets",
            "Packets of a service's flows, by direction",
            |s| s.packets,
        ),
        (
            "service_bytes",
            "IP bytes of a service's flows, by direction",
            |s| s.bytes,
        ),
        (
            "service_retransmits",
            "Retransmissions (Wireshark's count), by direction of the data",
            |s| s.retransmits,
        ),
        (
            "service_retrans_seen",
            "Data the tap had already seen, sent again: loss after the tap",
            |s| s.retrans_seen,
        ),
        (
            "service_hole_fill",
            "Data filling a hole the tap saw: loss before the tap (or reordering)",
            |s| s.hole_fill,
        ),
        (
            "service_gaps",
            "Segments jumping past the next expected sequence",
            |s| s.gaps,
        ),
        (
            "service_dup_acks",
            "Duplicate ACKs, by the direction they went",
            |s| s.dup_acks,
        ),
        (
            "service_zero_window",
            "Packets advertising a zero window, by direction",
            |s| s.zero_window,
        ),
        (
            "service_zero_window_events",
            "Zero-window stalls, by the direction of the advertisement",
            |s| s.zero_window_events,
        ),
    ];
    for (name, help, f) in twos {
        let mut out = Vec::with_capacity(rows.len() * 2);
        for (k, s) in &rows {
            let v = f(s);
            for (i, d) in DIRECTIONS.iter().enumerate() {
                let mut lb = base(k);
                lb.push(("direction", d.to_string()));
                out.push((lb, v[i]));
            }
        }
        counter(e, name, help, out)?;
    }
    rtt_histograms(
        e,
        "service_rtt_seconds",
        "RTT per ACK at the tap, merged from the flows' histograms: half=server is tap -> server -> tap \
         (client data), half=client is tap -> client -> tap (server data)",
        rows.iter().flat_map(|(k, s)| {
            HALVES.iter().enumerate().map(move |(i, h)| {
                let mut lb = base(k);
                lb.push(("half", h.to_string()));
                (lb, &s.rtt[i])
            })
        }),
    )
}
