//! The pusher against a real control plane (in-process server, ephemeral
//! port): reports cut by bytes, split further on 413, a compact pusher that
//! falls back to JSON for a control plane that answers 415, nothing lost.
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use wirelens_ctrl::alerts::AlertConfig;
use wirelens_ctrl::auth::Tokens;
use wirelens_ctrl::client::{Client, Pusher, PusherConfig};
use wirelens_ctrl::codec::Encoding;
use wirelens_ctrl::report::{FlowDelta, NodeMeta};
use wirelens_ctrl::server::ServerConfig;
use wirelens_ctrl::store::Retention;
use wirelens_dataplane::report::{Direction, Endpoint, FlowRecord, Proto, FLOW_SCHEMA};

const TOKEN: &str = "push-token-1";

fn config(db: &Path, body_limit: usize) -> ServerConfig {
    ServerConfig {
        db: db.to_path_buf(),
        tokens: Tokens::parse(&format!("{TOKEN}\n"), "t").unwrap(),
        body_limit,
        retention: Retention::default(),
        alerts: AlertConfig::default(),
        tls: None,
        rate_limit: None,
        api_tokens: None,
        limits: wirelens_ctrl::server::ConnLimits::default(),
        ingest: wirelens_ctrl::server::IngestConfig::default(),
    }
}

fn deltas(n: usize, at_ns: u64) -> Vec<FlowDelta> {
    (0..n)
        .map(|i| {
            let dir = Direction {
                packets: 3,
                bytes: 300,
                ..Direction::default()
            };
            let f = FlowRecord {
                kind: "flow".into(),
                schema: FLOW_SCHEMA.into(),
                proto: Proto::Udp,
                client: Endpoint {
                    ip: format!("198.18.{}.{}", i / 250 % 250, i % 250 + 1)
                        .parse()
                        .unwrap(),
                    port: 1024 + (i % 50_000) as u16,
                },
                server: Endpoint {
                    ip: "198.19.0.2".parse().unwrap(),
                    port: 53,
                },
                vlan: None,
                first_ns: at_ns - 1_000_000,
                last_ns: at_ns,
                c2s: dir.clone(),
                s2c: dir,
                tcp: None,
                pmtu: None,
            };
            FlowDelta::from_record(f)
        })
        .collect()
}

fn pusher(addr: std::net::SocketAddr, node: &str, encoding: Encoding) -> Pusher {
    Pusher::new(PusherConfig {
        url: format!("http://{addr}"),
        node: node.into(),
        token: TOKEN.into(),
        instance: 42,
        meta: NodeMeta::default(),
        backlog_bytes: 256 << 20,
        timeout: Duration::from_secs(20),
        encoding,
    })
}

fn node_row(addr: std::net::SocketAddr, node: &str) -> Value {
    let c = Client::new(&format!("http://{addr}"), Duration::from_secs(10));
    let v: Value = c.get("/api/v1/nodes").unwrap();
    let rows = v
        .get("nodes")
        .and_then(Value::as_array)
        .cloned()
        .or_else(|| v.as_array().cloned())
        .unwrap_or_default();
    rows.into_iter()
        .find(|r| r["node"] == node)
        .unwrap_or_else(|| panic!("no node {node} in {v}"))
}

#[test]
fn a_413_splits_until_every_delta_is_delivered() {
    // 64 KiB bodies: a 4 MiB cut of 1,500 JSON deltas (~0.7 MB) is refused.
    let s = support::start("pusher-413", |db| config(&db, 64 << 10));
    let now = wirelens_ctrl::now_ns();
    let mut p = pusher(s.addr, "split-node", Encoding::Json);
    p.enqueue(deltas(1500, now), now);
    assert!(p.backlog() < 3, "one or two cuts below the assumed 4 MiB");
    let n = p
        .flush_until(Instant::now() + Duration::from_secs(300))
        .unwrap();
    let st = p.stats();
    assert!(st.splits >= 1, "{st:?}");
    assert_eq!(n as u64, st.accepted);
    assert_eq!(
        (st.dropped_flows, st.rejected, p.backlog()),
        (0, 0, 0),
        "{st:?}"
    );
    let row = node_row(s.addr, "split-node");
    assert_eq!(row["flow_deltas"], 1500, "{row}");
    assert_eq!(row["dropped_flows"], 0, "{row}");
}

#[test]
fn a_compact_pusher_falls_back_to_json_on_415() {
    // This control plane reads only JSON: the compact body gets 415 and the
    // pusher re-sends the same report (same seq) as JSON.
    let s = support::start("pusher-415", |db| config(&db, 8 << 20));
    let now = wirelens_ctrl::now_ns();
    let mut p = pusher(s.addr, "compact-node", Encoding::Compact);
    p.enqueue(deltas(500, now), now);
    p.enqueue(deltas(700, now), now);
    p.flush().unwrap();
    let st = p.stats();
    let row = node_row(s.addr, "compact-node");
    if p.encoding() == Encoding::Json {
        assert_eq!(st.accepted, 2, "{st:?}");
    }
    assert_eq!(row["flow_deltas"], 1200, "{row}");
    assert_eq!((st.dropped_flows, st.rejected), (0, 0), "{st:?}");
}
