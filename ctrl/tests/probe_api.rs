//! The probe section of report.v1 through the real HTTP server, in process on
//! loopback: good windows are stored once (a retried report adds nothing)
//! and served by `/api/v1/probes` and `/api/v1/probes/windows`; bad probe
//! data gets a 4xx with a reason and leaves the store as it was; a report
//! without the section is still accepted.

use std::net::SocketAddr;

use serde_json::{json, Value};
use wirelens_ctrl::alerts::AlertConfig;
use wirelens_ctrl::auth::Tokens;
use wirelens_ctrl::report::{NodeMeta, NodeReport, ProbeState, ProbeWindow};
use wirelens_ctrl::server::{self, ServerConfig};
use wirelens_ctrl::store::Retention;
use wirelens_proto::testutil::window;

mod support;
use support::raw;

const TOKEN: &str = "probe-node:probe-SECRET";

/// A server on its own thread and runtime; it lives until the test process ends.
fn start() -> support::Srv {
    support::start("probe-api", |db| ServerConfig {
        db,
        tokens: Tokens::parse(&format!("{TOKEN}\n"), "t").unwrap(),
        body_limit: 1 << 20,
        retention: Retention::default(),
        alerts: AlertConfig::default(),
        tls: None,
        rate_limit: None,
        api_tokens: None,
        limits: server::ConnLimits::default(),
        ingest: server::IngestConfig::default(),
    })
}

fn post(addr: SocketAddr, body: &[u8]) -> (u16, String) {
    let token = TOKEN.split_once(':').unwrap().1;
    let mut bytes = format!(
        "POST /api/v1/report HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Authorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    raw(addr, &bytes)
}

fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    let (st, b) = raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    (
        st,
        serde_json::from_str(&b).unwrap_or_else(|e| panic!("{e}: {b}")),
    )
}

fn report(seq: u64, probes: Vec<ProbeWindow>) -> NodeReport {
    let mut r = NodeReport::new(
        "probe-node",
        3,
        seq,
        wirelens_ctrl::now_ns(),
        NodeMeta::default(),
    );
    r.probes = probes;
    r
}

fn probes(addr: SocketAddr) -> Vec<Value> {
    let (st, v) = get(addr, "/api/v1/probes");
    assert_eq!(st, 200, "{v}");
    v.as_array().unwrap().clone()
}

#[test]
fn probe_windows_through_the_api() {
    let srv = start();
    let addr = srv.addr;
    let t = wirelens_ctrl::now_ns() - 60_000_000_000;
    let good = report(
        0,
        vec![
            window("198.18.2.2:862", t, &[20_000_000; 90], 6, 4),
            window(
                "198.18.2.2:862",
                t + 10_000_000_000,
                &[30_000_000; 10],
                0,
                0,
            ),
        ],
    );
    let body = serde_json::to_vec(&good).unwrap();
    let (st, b) = post(addr, &body);
    assert_eq!(st, 200, "{b}");
    // A retry of the same report is acknowledged and adds nothing.
    let (st, b) = post(addr, &body);
    assert_eq!(st, 200, "{b}");
    assert!(b.contains("duplicate"), "{b}");
    let rows = probes(addr);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let r = &rows[0];
    assert_eq!(r["target"], "198.18.2.2:862");
    assert_eq!(r["node"], "probe-node");
    assert_eq!(r["windows"], 2);
    assert_eq!(r["sent"], 110);
    assert_eq!(
        (r["lost_up"].as_u64(), r["lost_down"].as_u64()),
        (Some(6), Some(4))
    );
    assert_eq!(r["rtt"]["n"], 100);
    assert_eq!(r["state"], "ok");
    let (st, w) = get(
        addr,
        "/api/v1/probes/windows?target=198.18.2.2%3A862&limit=1",
    );
    assert_eq!(st, 200, "{w}");
    let w = w.as_array().unwrap();
    assert_eq!(w.len(), 1, "the newest window only");
    assert_eq!(w[0]["window"]["start_ns"], t + 10_000_000_000);

    // Bad probe data: 4xx with the reason; nothing changes.
    let mut bad = report(
        1,
        vec![window("198.18.2.2:862", t + 20_000_000_000, &[1], 1, 0)],
    );
    bad.probes[0].lost_up = 5;
    let (st, b) = post(addr, &serde_json::to_vec(&bad).unwrap());
    assert_eq!(st, 422, "{b}");
    assert!(b.contains("probe window 0") && b.contains("lost_up"), "{b}");
    let mut bad = report(2, vec![window("nowhere", t + 20_000_000_000, &[1], 0, 0)]);
    let (st, b) = post(addr, &serde_json::to_vec(&bad).unwrap());
    assert_eq!(st, 422, "{b}");
    assert!(b.contains("target"), "{b}");
    // A histogram whose min is not in its buckets does not even parse: 400.
    bad.probes[0].target = "198.18.2.2:862".into();
    let mut v = serde_json::to_value(&bad).unwrap();
    v["probes"][0]["rtt"]["min"] = json!(7_000_000_000u64);
    let (st, b) = post(addr, &serde_json::to_vec(&v).unwrap());
    assert_eq!(st, 400, "{b}");
    let mut v = serde_json::to_value(&bad).unwrap();
    v["probes"][0]["state"] = json!("fine");
    let (st, b) = post(addr, &serde_json::to_vec(&v).unwrap());
    assert_eq!(st, 400, "{b}");
    let after = probes(addr);
    assert_eq!(after, rows, "refused reports left the store as it was");

    // A report.v1 without the probe section (older nodes, analyze --push).
    let mut old = serde_json::to_value(report(3, Vec::new())).unwrap();
    old.as_object_mut().unwrap().remove("probes");
    let (st, b) = post(addr, &serde_json::to_vec(&old).unwrap());
    assert_eq!(st, 200, "{b}");
    assert_eq!(probes(addr), rows);

    // A dead target's window is data, not an error.
    let mut dead = window("[2001:db8::2]:862", t + 30_000_000_000, &[], 0, 0);
    dead.state = ProbeState::NoReply;
    dead.error = Some("no reply from [2001:db8::2]:862".into());
    dead.sent = 10;
    dead.lost = 10;
    dead.lost_unattributed = 10;
    let (st, b) = post(addr, &serde_json::to_vec(&report(4, vec![dead])).unwrap());
    assert_eq!(st, 200, "{b}");
    let rows = probes(addr);
    let d = rows
        .iter()
        .find(|r| r["target"] == "[2001:db8::2]:862")
        .expect("the dead target");
    assert_eq!(d["state"], "no_reply");
    assert_eq!(d["loss_rate"], 1.0);
    assert!(d["rtt"]["p50_ns"].is_null());

    let (st, v) = get(addr, "/api/v1/probes?since=yesterday");
    assert_eq!(st, 400, "{v}");
}
