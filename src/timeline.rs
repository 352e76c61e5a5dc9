//! A capture's timeline (`analyze --interval`): the flows' interval deltas
//! merged per service and interval into the control plane's bucket
//! counters, so that the control plane's alert rules run on the capture
//! itself ("since when"), and the RTT changes and connection rates per
//! service can be printed or plotted.
//!
//! Memory: per service (at most [`MAX_SERVICES`]; the deltas of the others
//! are counted, not kept) and interval with traffic, one [`Counters`] row and
//! a capped set of client addresses.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Write};
use std::net::IpAddr;

use wirelens_ctrl::agg::{Counters, ServiceKey};
use wirelens_ctrl::alerts::{self, Alert, AlertConfig, Series};
use wirelens_ctrl::report::FlowDelta;
use wirelens_dataplane::interval::IntervalDelta;
use wirelens_dataplane::report::FlowRecord;
use wirelens_dataplane::stats::Histogram;

use wirelens_output::{human_ns, NsStyle};

/// Services whose timeline is kept.
pub const MAX_SERVICES: usize = 4096;
/// Distinct clients counted per service and interval.
pub const MAX_CLIENTS: usize = 4096;
/// Trailing intervals an alert rule looks at when evaluated at each interval
/// (the RTT baseline's history and the counter rules' window fit in it).
const ALERT_WINDOW: usize = 40;
/// The node name the capture's own rows carry.
const NODE: &str = "capture";

/// A control-plane delta of an interval delta: placed at the flow's last
/// packet in the interval, which is inside it.
pub fn flow_delta(d: IntervalDelta) -> FlowDelta {
    let at = d
        .flow
        .last_ns
        .clamp(d.start_ns, d.end_ns.saturating_sub(1).max(d.start_ns));
    let [c2s, s2c] = d.rtt;
    FlowDelta {
        at_ns: at.max(1),
        first: d.first,
        flow: d.flow,
        rtt_c2s: Some(c2s),
        rtt_s2c: Some(s2c),
    }
}

/// One service in one interval.
#[derive(Debug, Default)]
pub struct Slot {
    pub c: Counters,
    pub clients: BTreeSet<IpAddr>,
}

/// See the [module documentation](self).
#[derive(Debug)]
pub struct Timeline {
    width_ns: u64,
    services: HashMap<String, BTreeMap<u64, Slot>>,
    /// Deltas of services past [`MAX_SERVICES`].
    pub dropped: u64,
}

impl Timeline {
    pub fn new(width_ns: u64) -> Timeline {
        Timeline {
            width_ns: width_ns.max(1),
            services: HashMap::new(),
            dropped: 0,
        }
    }

    /// Adds one interval delta (as the control plane would get it).
    pub fn add(&mut self, start_ns: u64, d: &FlowDelta) {
        let name = ServiceKey::of(&d.flow).to_string();
        if !self.services.contains_key(&name) && self.services.len() >= MAX_SERVICES {
            self.dropped += 1;
            return;
        }
        let slot = self
            .services
            .entry(name)
            .or_default()
            .entry(start_ns)
            .or_default();
        slot.c.merge(&Counters::of_delta(d));
        if d.first && slot.clients.len() < MAX_CLIENTS {
            slot.clients.insert(d.flow.client.ip);
        }
    }

    pub fn width_ns(&self) -> u64 {
        self.width_ns
    }

    /// The services with intervals, in no order.
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.services.keys().map(String::as_str)
    }

    /// The service named `ip:port/proto`, or `ip:port` (the first protocol).
    pub fn find_service(&self, want: &str) -> Option<&str> {
        if let Some((k, _)) = self.services.get_key_value(want) {
            return Some(k.as_str());
        }
        let mut names: Vec<&str> = self
            .services()
            .filter(|s| s.rsplit_once('/').is_some_and(|(ep, _)| ep == want))
            .collect();
        names.sort_unstable();
        names.first().copied()
    }

    /// The service's intervals, oldest first.
    pub fn service(&self, name: &str) -> Option<&BTreeMap<u64, Slot>> {
        self.services.get(name)
    }

    /// What the control plane's alert rules say of the capture: every alert
    /// that fired at some interval, once per run (an alert of the same rule,
    /// service and side that starts before the previous one ended continues
    /// it), with its latest numbers; by `since`.
    pub fn alerts(&self, cfg: &AlertConfig) -> Vec<Alert> {
        let mut found: BTreeMap<(String, String, String, u64), Alert> = BTreeMap::new();
        let mut names: Vec<&String> = self.services.keys().collect();
        names.sort();
        for name in names {
            let rows = &self.services[name];
            let mut window = Series::new();
            for (&b, slot) in rows {
                window
                    .entry(b)
                    .or_default()
                    .insert(NODE.to_string(), slot.c.clone());
                while window.len() > ALERT_WINDOW {
                    window.pop_first();
                }
                for a in alerts::evaluate(name, &window, self.width_ns, cfg) {
                    let side = a.evidence["side"].as_str().unwrap_or("").to_string();
                    found.insert((a.rule.clone(), name.clone(), side, a.since_ns), a);
                }
            }
        }
        // Runs of one rule, service and side, by since: merge the overlapping.
        let mut out: Vec<Alert> = Vec::new();
        let mut prev: Option<(String, String, String)> = None;
        for ((rule, svc, side, _), a) in found {
            let key = (rule, svc, side);
            match out.last_mut() {
                Some(p) if prev.as_ref() == Some(&key) && a.since_ns <= p.last_ns => {
                    let (since, last) = (p.since_ns, p.last_ns.max(a.last_ns));
                    *p = Alert {
                        since_ns: since,
                        last_ns: last,
                        ..a
                    };
                }
                _ => out.push(a),
            }
            prev = Some(key);
        }
        out.sort_by_key(|a| a.since_ns);
        out
    }
}

/// The services of `flows` (worst first), each once.
pub fn services_of(flows: &[FlowRecord], limit: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for f in flows {
        let s = ServiceKey::of(f).to_string();
        if !out.contains(&s) {
            out.push(s);
            if out.len() >= limit {
                break;
            }
        }
    }
    out
}

/// An RTT level moves when an interval's p50 differs from the last level
/// printed by this factor either way...
const CHANGE: f64 = 1.5;
/// ... and by at least this much (microsecond jitter is no change).
const MIN_CHANGE_NS: u64 = 1_000_000;
/// Samples an interval needs for its p50 to count.
const MIN_SAMPLES: u64 = 3;
/// Changes printed per service and side.
const MAX_CHANGES: usize = 8;

/// The RTT p50 per interval where it changed, one line per change:
/// `rtt c2s p50 40.1ms -> 120ms at +12.0s (interval p99 125ms, 48 samples)`.
pub fn rtt_changes(rows: &BTreeMap<u64, Slot>, t0: u64) -> Vec<String> {
    let mut out = Vec::new();
    type Side = (&'static str, fn(&Counters) -> &Histogram);
    let sides: [Side; 2] = [("c2s", |c| &c.rtt_server), ("s2c", |c| &c.rtt_client)];
    for (side, hist) in sides {
        let mut level: Option<u64> = None;
        let mut n = 0;
        for (&b, slot) in rows {
            let h = hist(&slot.c);
            if h.count() < MIN_SAMPLES {
                continue;
            }
            let Some(p50) = h.quantile(0.5) else { continue };
            match level {
                None => level = Some(p50),
                Some(l) => {
                    let r = p50 as f64 / l.max(1) as f64;
                    if (r >= CHANGE || r <= 1.0 / CHANGE) && p50.abs_diff(l) >= MIN_CHANGE_NS {
                        if n < MAX_CHANGES {
                            out.push(format!(
                                "rtt {side} p50 {} -> {} at +{:.1}s (interval p99 {}, {} samples)",
                                human_ns(l, NsStyle::Fine),
                                human_ns(p50, NsStyle::Fine),
                                b.saturating_sub(t0) as f64 / 1e9,
                                human_ns(h.quantile(0.99), NsStyle::Fine),
                                h.count()
                            ));
                        }
                        n += 1;
                        level = Some(p50);
                    }
                }
            }
        }
        if n > MAX_CHANGES {
            out.push(format!("rtt {side}: {} more changes", n - MAX_CHANGES));
        }
    }
    out
}

/// The timeline part of the table: per worst service the RTT changes, then
/// the alerts the capture raises.
pub fn print(
    w: &mut dyn Write,
    tl: &Timeline,
    worst: &[FlowRecord],
    t0: u64,
    cfg: &AlertConfig,
) -> io::Result<()> {
    writeln!(w)?;
    writeln!(
        w,
        "timeline ({} intervals):",
        human_ns(tl.width_ns, NsStyle::Fine)
    )?;
    let mut any = false;
    for svc in services_of(worst, 5) {
        let Some(rows) = tl.service(&svc) else {
            continue;
        };
        let lines = rtt_changes(rows, t0);
        let peak = rows
            .iter()
            .max_by_key(|(_, s)| s.c.flows)
            .map(|(&b, s)| (b, s.c.flows, s.clients.len()));
        if let Some((b, flows, clients)) = peak.filter(|p| p.1 > 0) {
            writeln!(
                w,
                "  {svc}: busiest interval +{:.1}s: {flows} new connections ({:.1}/s) from {clients} clients",
                b.saturating_sub(t0) as f64 / 1e9,
                flows as f64 * 1e9 / tl.width_ns as f64
            )?;
        } else {
            writeln!(w, "  {svc}:")?;
        }
        if lines.is_empty() {
            writeln!(w, "    rtt steady")?;
        }
        for l in lines {
            writeln!(w, "    {l}")?;
        }
        any = true;
    }
    if !any {
        writeln!(w, "  (no service of the worst flows has intervals)")?;
    }
    let alerts = tl.alerts(cfg);
    if !alerts.is_empty() {
        writeln!(w)?;
        writeln!(w, "what the network did, since when:")?;
    }
    for a in &alerts {
        writeln!(
            w,
            "  {} {} since +{:.1}s (to +{:.1}s): {}",
            a.rule,
            a.service,
            a.since_ns.saturating_sub(t0) as f64 / 1e9,
            a.last_ns.saturating_sub(t0) as f64 / 1e9,
            a.summary
        )?;
    }
    if tl.dropped > 0 {
        writeln!(
            w,
            "  ({} interval deltas of services past the first {MAX_SERVICES} not in the timeline)",
            tl.dropped
        )?;
    }
    Ok(())
}
