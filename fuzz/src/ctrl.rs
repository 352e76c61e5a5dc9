//! Invariant checks of the control plane's report path, shared by the fuzz
//! target `fuzz/fuzz_targets/report.rs` and by `cargo test`
//! (`ctrl/tests/fuzz_regressions.rs` includes this file with `#[path]`).
//!
//! [`check_report`] takes the bytes of a POST body through what the server
//! does with them (JSON -> [`NodeReport`] -> [`NodeReport::validate`] ->
//! [`agg::rows_of`]) and then through the pure code of the GET side
//! ([`server::services_of`], [`server::alerts_of`]), asserting:
//! * a valid report round-trips (serialize, parse, equal, still valid);
//! * the aggregation's totals equal the sum of the report's flows, per service,
//!   at both bucket resolutions, per client subnet and per flow;
//! * a 1 min row equals the merge of its 10 s rows (the roll-up is exact);
//! * the services answer adds up to the same totals.

use std::collections::BTreeMap;

use wirelens_ctrl::agg::{self, flow_id, Counters, Res, ServiceKey};
use wirelens_ctrl::alerts::AlertConfig;
use wirelens_ctrl::report::NodeReport;
use wirelens_ctrl::server;
use wirelens_ctrl::store::BucketRow;

/// The additive totals the checks compare: flows, deltas, packets, bytes,
/// payload bytes, retransmissions (u128: never overflows, clamped to u64 like
/// the saturating merge).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sums {
    pub flows: u128,
    pub deltas: u128,
    pub packets: u128,
    pub bytes: u128,
    pub payload_bytes: u128,
    pub retransmits: u128,
}

impl Sums {
    fn add_counters(&mut self, c: &Counters) {
        self.flows += u128::from(c.flows);
        self.deltas += u128::from(c.deltas);
        self.packets += u128::from(c.packets);
        self.bytes += u128::from(c.bytes);
        self.payload_bytes += u128::from(c.payload_bytes);
        self.retransmits += u128::from(c.retransmits);
    }

    /// As a saturating u64 sum would have it.
    fn clamped(self) -> [u64; 6] {
        let c = |v: u128| u64::try_from(v).unwrap_or(u64::MAX);
        [
            c(self.flows),
            c(self.deltas),
            c(self.packets),
            c(self.bytes),
            c(self.payload_bytes),
            c(self.retransmits),
        ]
    }
}

fn of(c: &Counters) -> [u64; 6] {
    [
        c.flows,
        c.deltas,
        c.packets,
        c.bytes,
        c.payload_bytes,
        c.retransmits,
    ]
}

/// report target: `data` as the body of `POST /api/v1/report`.
pub fn check_report(data: &[u8]) {
    let Ok(report) = serde_json::from_slice::<NodeReport>(data) else {
        return;
    };
    match report.validate() {
        Ok(()) => check_valid_report(&report),
        Err(e) => assert!(!e.to_string().is_empty(), "an empty refusal"),
    }
}

/// What holds for a report that passed validation.
pub fn check_valid_report(report: &NodeReport) {
    // Round trip.
    let bytes = serde_json::to_vec(report).expect("a valid report serializes");
    let back: NodeReport = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "a valid report does not parse back: {e}: {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    assert_eq!(&back, report, "a valid report does not round-trip");
    assert_eq!(
        back.validate(),
        Ok(()),
        "the round-tripped report is invalid"
    );

    // What the report's flows add up to, by the harness's own sums.
    let mut want: BTreeMap<String, Sums> = BTreeMap::new();
    let mut want_flows: BTreeMap<String, (u128, u128)> = BTreeMap::new();
    for d in &report.flows {
        let f = &d.flow;
        let s = want.entry(ServiceKey::of(f).to_string()).or_default();
        s.flows += u128::from(d.first);
        s.deltas += 1;
        let mut retx = 0;
        for dir in [&f.c2s, &f.s2c] {
            s.packets += u128::from(dir.packets);
            s.bytes += u128::from(dir.bytes);
            s.payload_bytes += u128::from(dir.payload_bytes);
            retx += u128::from(dir.retransmits);
        }
        s.retransmits += retx;
        let e = want_flows.entry(flow_id(f)).or_default();
        e.0 += u128::from(f.c2s.packets) + u128::from(f.s2c.packets);
        e.1 += u128::from(f.c2s.bytes) + u128::from(f.s2c.bytes);
    }

    let rows = agg::rows_of(report);
    let ctx = || String::from_utf8_lossy(&bytes).into_owned();
    let totals: BTreeMap<&String, [u64; 6]> = rows.totals.iter().map(|(k, c)| (k, of(c))).collect();
    let expect: BTreeMap<&String, [u64; 6]> = want.iter().map(|(k, s)| (k, s.clamped())).collect();
    assert_eq!(
        totals,
        expect,
        "aggregation totals != sum of the report's flows: {}",
        ctx()
    );
    for res in Res::ALL {
        let mut by_service: BTreeMap<&String, Sums> = BTreeMap::new();
        for ((svc, r, bucket), c) in &rows.services {
            if *r == res {
                assert_eq!(bucket % res.width_ns(), 0, "unaligned bucket: {}", ctx());
                by_service.entry(svc).or_default().add_counters(c);
            }
        }
        let got: BTreeMap<&String, [u64; 6]> =
            by_service.iter().map(|(k, s)| (*k, s.clamped())).collect();
        assert_eq!(got, expect, "{res:?} service buckets != totals: {}", ctx());
        let mut by_path: BTreeMap<&String, Sums> = BTreeMap::new();
        for ((svc, _, r, _), c) in &rows.paths {
            if *r == res {
                by_path.entry(svc).or_default().add_counters(c);
            }
        }
        let got: BTreeMap<&String, [u64; 6]> =
            by_path.iter().map(|(k, s)| (*k, s.clamped())).collect();
        assert_eq!(got, expect, "{res:?} path buckets != totals: {}", ctx());
    }
    // The 1 min row is the exact merge of its 10 s rows.
    let mut rolled: BTreeMap<(&String, u64), Counters> = BTreeMap::new();
    for ((svc, r, bucket), c) in &rows.services {
        if *r == Res::S10 {
            rolled
                .entry((svc, Res::M1.bucket(*bucket)))
                .or_default()
                .merge(c);
        }
    }
    for ((svc, r, bucket), c) in &rows.services {
        if *r == Res::M1 {
            let mut m = rolled.remove(&(svc, *bucket)).unwrap_or_default();
            let mut c = c.clone();
            // The retrying-clients set is capped: past the cap, which clients
            // it keeps depends on the merge order.
            if c.retry_clients.len() >= agg::MAX_RETRY_CLIENTS {
                c.retry_clients.clear();
                m.retry_clients.clear();
            }
            assert_eq!(
                m,
                c,
                "1 min row {svc} {bucket} != merge of its 10 s rows: {}",
                ctx()
            );
        }
    }
    assert!(
        rolled.is_empty(),
        "10 s rows without a 1 min row: {}",
        ctx()
    );
    // Per flow.
    let flows: BTreeMap<&String, [u64; 2]> = rows
        .flows
        .iter()
        .map(|(id, f)| {
            let r = &f.state.record;
            let c = |v: u128| u64::try_from(v).unwrap_or(u64::MAX);
            let p = u128::from(r.c2s.packets) + u128::from(r.s2c.packets);
            let b = u128::from(r.c2s.bytes) + u128::from(r.s2c.bytes);
            assert!(
                r.first_ns <= r.last_ns,
                "merged flow {id}: first > last: {}",
                ctx()
            );
            (id, [c(p), c(b)])
        })
        .collect();
    let c = |v: u128| u64::try_from(v).unwrap_or(u64::MAX);
    let want_f: BTreeMap<&String, [u64; 2]> = want_flows
        .iter()
        .map(|(k, (p, b))| (k, [c(*p), c(*b)]))
        .collect();
    // Per-direction sums saturate before the two directions are added: compare
    // where nothing came near the limit.
    if want_flows
        .values()
        .all(|(p, b)| *p < u128::from(u64::MAX) && *b < u128::from(u64::MAX))
    {
        assert_eq!(
            flows,
            want_f,
            "per-flow rows != sum of the flow's deltas: {}",
            ctx()
        );
    }

    // The GET side's pure code over these rows.
    let bucket_rows = |res: Res| -> Vec<BucketRow> {
        rows.services
            .iter()
            .filter(|((_, r, _), _)| *r == res)
            .map(|((svc, _, bucket), c)| BucketRow {
                service: svc.clone(),
                subnet: None,
                node: report.node.clone(),
                bucket: *bucket,
                counters: c.clone(),
            })
            .collect()
    };
    let path_rows: Vec<BucketRow> = rows
        .paths
        .iter()
        .filter(|((_, _, r, _), _)| *r == Res::M1)
        .map(|((svc, subnet, _, bucket), c)| BucketRow {
            service: svc.clone(),
            subnet: Some(subnet.clone()),
            node: report.node.clone(),
            bucket: *bucket,
            counters: c.clone(),
        })
        .collect();
    let services = server::services_of(bucket_rows(Res::M1), path_rows, 3);
    let got: BTreeMap<&String, [u64; 2]> = services
        .iter()
        .map(|s| (&s.service, [s.flows, s.packets]))
        .collect();
    let exp: BTreeMap<&String, [u64; 2]> = expect.iter().map(|(k, v)| (*k, [v[0], v[2]])).collect();
    assert_eq!(got, exp, "services answer != totals: {}", ctx());
    for s in &services {
        assert!(s.first_ns <= s.last_ns, "service window: {}", ctx());
        assert!(s.paths.len() <= 3, "paths: {}", ctx());
        assert_eq!(s.nodes, vec![report.node.clone()], "nodes: {}", ctx());
    }
    let _ = server::alerts_of(bucket_rows(Res::S10), &AlertConfig::default());
}
