//! End-to-end tests of the control plane with real processes on loopback
//! (127.0.0.1, ephemeral ports): `wirelens ctrl serve`, nodes pushing with
//! `wirelens analyze --push` of captures this test writes, the CLI queries,
//! bad requests, a SIGKILL of the server, and `wirelens top` in tmux.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::pcap::{Pcap, ACK, FIN, PSH, SYN};
use support::CtrlServer as Server;
use wirelens_ctrl::client::Client;
use wirelens_ctrl::report::{FlowDelta, NodeMeta, NodeReport};
use wirelens_dataplane::report::{Direction, Endpoint, FlowRecord, Proto, FLOW_SCHEMA};

const BIN: &str = env!("CARGO_BIN_EXE_wirelens");
const SEC: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;

const TOKENS: &str =
    "# test tokens\nnode-a:token-aaaa-1111\nnode-b:token-bbbb-2222\nshared-token-3333\n";

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wl-ctrl-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("tokens"), TOKENS).unwrap();
    std::fs::write(d.join("token-a"), "node-a:token-aaaa-1111\n").unwrap();
    std::fs::write(d.join("token-b"), "token-bbbb-2222\n").unwrap();
    d
}

fn wirelens(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("WIRELENS_CTRL")
        .output()
        .expect("run wirelens")
}

fn ok_json(args: &[&str]) -> Value {
    let o = wirelens(args);
    assert!(
        o.status.success(),
        "{args:?}: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

const SVC: [u8; 4] = [198, 18, 2, 2];
const SVC2: [u8; 4] = [198, 18, 2, 3];

fn captures(dir: &Path) -> (PathBuf, PathBuf) {
    // On a 10 s boundary: every flow (under a second long) stays inside one
    // of `analyze --push`'s 10 s intervals, so each is one delta.
    let t0 = wirelens_ctrl::now_ns() / (10 * SEC) * (10 * SEC) - 300 * SEC;
    let mut a = Pcap::new();
    for k in 0..3u8 {
        a.conversation(
            t0 + u64::from(k) * SEC,
            ([198, 18, 1, 10 + k], 40_000 + u16::from(k)),
            (SVC, 8080),
            40 * MS,
            5,
            None,
        );
    }
    let mut b = Pcap::new();
    for k in 0..2u8 {
        b.conversation(
            t0 + u64::from(k) * SEC,
            ([198, 18, 3, 20 + k], 41_000 + u16::from(k)),
            (SVC, 8080),
            40 * MS,
            5,
            None,
        );
    }
    b.conversation(
        t0 + 3 * SEC,
        ([198, 18, 3, 30], 42_000),
        (SVC2, 443),
        MS,
        120,
        Some(4),
    );
    let (pa, pb) = (dir.join("a.pcap"), dir.join("b.pcap"));
    a.write(&pa);
    b.write(&pb);
    (pa, pb)
}

/// Per service: [flows, packets, bytes, retransmits] summed over flow records.
fn expected(records: &[&Value]) -> BTreeMap<String, [u64; 4]> {
    let mut m: BTreeMap<String, [u64; 4]> = BTreeMap::new();
    for f in records {
        let svc = format!(
            "{}:{}/tcp",
            f["server"]["ip"].as_str().unwrap(),
            f["server"]["port"]
        );
        let e = m.entry(svc).or_default();
        e[0] += 1;
        for d in ["c2s", "s2c"] {
            e[1] += f[d]["packets"].as_u64().unwrap();
            e[2] += f[d]["bytes"].as_u64().unwrap();
            e[3] += f[d]["retransmits"].as_u64().unwrap();
        }
    }
    m
}

fn service_totals(url: &str) -> BTreeMap<String, [u64; 4]> {
    let v = ok_json(&["services", "--ctrl", url, "--format", "json"]);
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let g = |k: &str| s[k].as_u64().unwrap();
            (
                s["service"].as_str().unwrap().to_string(),
                [g("flows"), g("packets"), g("bytes"), g("retransmits")],
            )
        })
        .collect()
}

/// One raw HTTP/1.1 exchange; returns (status, body).
fn raw_http(addr: &str, head: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (status, body)
}

fn post(addr: &str, auth: Option<&str>, body: &[u8], content_length: usize) -> (u16, String) {
    let auth = auth
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST /api/v1/report HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{auth}Content-Length: {content_length}\r\nConnection: close\r\n\r\n"
    );
    raw_http(addr, &head, body)
}

fn flow(client: [u8; 4], server: ([u8; 4], u16), first_ns: u64, packets: u64) -> FlowRecord {
    FlowRecord {
        kind: "flow".into(),
        schema: FLOW_SCHEMA.into(),
        proto: Proto::Tcp,
        client: Endpoint {
            ip: client.into(),
            port: 33_000,
        },
        server: Endpoint {
            ip: server.0.into(),
            port: server.1,
        },
        vlan: None,
        first_ns,
        last_ns: first_ns + SEC,
        c2s: Direction {
            packets,
            bytes: packets * 100,
            ..Direction::default()
        },
        s2c: Direction::default(),
        tcp: None,
        pmtu: None,
    }
}

fn report(node: &str, seq: u64, packets: u64) -> NodeReport {
    let now = wirelens_ctrl::now_ns();
    let mut r = NodeReport::new(node, 77, seq, now, NodeMeta::default());
    r.flows.push(FlowDelta::from_record(flow(
        [198, 18, 1, 9],
        (SVC, 8080),
        now - 2 * SEC,
        packets,
    )));
    r
}

#[test]
fn two_nodes_push_and_totals_are_the_sum() {
    let dir = tmpdir("sum");
    let (pa, pb) = captures(&dir);
    let srv = Server::start(&dir, &dir.join("ctrl.db"));
    let url = srv.url.as_str();
    let ta = dir.join("token-a");
    let tb = dir.join("token-b");
    for (pcap, node, tf) in [(&pa, "node-a", &ta), (&pb, "node-b", &tb)] {
        let o = wirelens(&[
            "analyze",
            pcap.to_str().unwrap(),
            "--format",
            "json",
            "--push",
            url,
            "--node",
            node,
            "--token-file",
            tf.to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{node}: {err}");
        assert!(err.contains("1 accepted"), "{err}");
    }
    // What each node saw, by its own analysis.
    let da = ok_json(&["analyze", pa.to_str().unwrap(), "--format", "json"]);
    let db = ok_json(&["analyze", pb.to_str().unwrap(), "--format", "json"]);
    let recs: Vec<&Value> = da["flows"]
        .as_array()
        .unwrap()
        .iter()
        .chain(db["flows"].as_array().unwrap())
        .collect();
    assert_eq!(recs.len(), 6);
    let want = expected(&recs);
    assert_eq!(want.len(), 2);
    assert!(
        want["198.18.2.3:443/tcp"][3] > 0,
        "the 443 flow has retransmissions"
    );
    assert_eq!(service_totals(url), want);

    // The service seen by both nodes names both, with its client subnets.
    let svcs = ok_json(&[
        "services",
        "--ctrl",
        url,
        "--format",
        "json",
        "--service",
        "198.18.2.2:8080/tcp",
    ]);
    let s = &svcs[0];
    assert_eq!(s["nodes"], serde_json::json!(["node-a", "node-b"]));
    let subnets: Vec<&str> = s["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["subnet"].as_str().unwrap())
        .collect();
    assert_eq!(subnets.len(), 2, "{subnets:?}");
    assert!(subnets.contains(&"198.18.1.0/24") && subnets.contains(&"198.18.3.0/24"));
    let p50 = s["rtt_server"]["p50_ns"].as_u64().unwrap();
    assert!(p50.abs_diff(40 * MS) * 64 <= 40 * MS, "p50 {p50}");

    // Pushing the same capture again changes nothing (idempotent report names).
    let o = wirelens(&[
        "analyze",
        pa.to_str().unwrap(),
        "--format",
        "ndjson",
        "--push",
        url,
        "--node",
        "node-a",
        "--token-file",
        ta.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && err.contains("0 accepted, 1 already there"),
        "{err}"
    );
    assert_eq!(service_totals(url), want);

    // Flows, nodes, alerts through the CLI.
    let o = wirelens(&[
        "flows", "--ctrl", url, "--format", "ndjson", "--limit", "100",
    ]);
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 6);
    let nodes = ok_json(&["nodes", "--ctrl", url, "--format", "json"]);
    assert_eq!(nodes[0]["node"], "node-a");
    assert_eq!(nodes[0]["duplicates"], 1);
    assert_eq!(nodes[1]["flow_deltas"], 3);
    let alerts = ok_json(&["alerts", "--ctrl", url, "--format", "json"]);
    let retx: Vec<&Value> = alerts
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["rule"] == "retransmissions")
        .collect();
    assert_eq!(retx.len(), 1, "{alerts:#}");
    assert_eq!(retx[0]["service"], "198.18.2.3:443/tcp");
    assert_eq!(retx[0]["nodes"], serde_json::json!(["node-b"]));
    let o = wirelens(&["services", "--ctrl", url]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("198.18.2.2:8080/tcp"));

    // Bad requests: 4xx with a JSON reason, store untouched.
    let good = serde_json::to_vec(&report("node-a", 0, 5)).unwrap();
    // (what, token, body, Content-Length, expected status)
    type Case<'a> = (&'a str, Option<&'a str>, Vec<u8>, usize, u16);
    let cases: Vec<Case<'_>> = vec![
        ("no token", None, good.clone(), good.len(), 401),
        (
            "wrong token",
            Some("token-wrong-0000"),
            good.clone(),
            good.len(),
            401,
        ),
        (
            "token of another node",
            Some("token-bbbb-2222"),
            good.clone(),
            good.len(),
            403,
        ),
        (
            "malformed",
            Some("token-aaaa-1111"),
            b"{\"schema\": [1,2".to_vec(),
            15,
            400,
        ),
        (
            "not a report",
            Some("token-aaaa-1111"),
            b"{\"hello\":1}".to_vec(),
            11,
            400,
        ),
        (
            "oversized",
            Some("token-aaaa-1111"),
            Vec::new(),
            9 << 20,
            413,
        ),
    ];
    for (what, tok, body, len, want_status) in cases {
        let (status, body) = post(&srv.addr, tok, &body, len);
        assert_eq!(status, want_status, "{what}: {body}");
        let v: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{what}: {e}: {body}"));
        assert!(
            v["error"].as_str().is_some_and(|s| !s.is_empty()),
            "{what}: {body}"
        );
    }
    let mut bad = report("node-a", 0, 5);
    bad.version = 99;
    let b = serde_json::to_vec(&bad).unwrap();
    assert_eq!(post(&srv.addr, Some("token-aaaa-1111"), &b, b.len()).0, 422);
    // A chunked oversized body (no Content-Length) is cut off too.
    let mut s = TcpStream::connect(&srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(b"POST /api/v1/report HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer token-aaaa-1111\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    let chunk = vec![b' '; 1 << 20];
    for _ in 0..9 {
        if s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .is_err()
            || s.write_all(&chunk).is_err()
            || s.write_all(b"\r\n").is_err()
        {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n");
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    assert!(
        resp.is_empty() || resp.starts_with("HTTP/1.1 413"),
        "{resp}"
    );
    assert_eq!(service_totals(url), want, "bad requests changed the store");

    // Health, metrics.
    let c = Client::new(url, Duration::from_secs(5));
    let h: Value = c.get("/healthz").unwrap();
    assert_eq!(h["status"], "ok");
    let (status, metrics) = raw_http(
        &srv.addr,
        &format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            srv.addr
        ),
        b"",
    );
    assert_eq!(status, 200);
    let line = format!(
        "wirelens_service_packets_total{{server=\"198.18.2.2\",port=\"8080\",proto=\"tcp\"}} {}",
        want["198.18.2.2:8080/tcp"][1]
    );
    assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    assert!(
        metrics.contains("wirelens_ctrl_reports_total{result=\"unauthenticated\"} 2"),
        "{metrics}"
    );

    // Tokens never reach the log.
    let log = srv.log.lock().unwrap().join("\n");
    assert!(log.contains("report node=node-a"), "{log}");
    for t in [
        "token-aaaa-1111",
        "token-bbbb-2222",
        "shared-token-3333",
        "token-wrong-0000",
    ] {
        assert!(!log.contains(t), "token {t} in the log:\n{log}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unreachable_control_plane_is_a_clear_error() {
    // Port 1 on loopback: nothing listens there.
    let o = wirelens(&["nodes", "--ctrl", "http://127.0.0.1:1"]);
    assert_eq!(o.status.code(), Some(4));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot reach the control plane at http://127.0.0.1:1: connection refused; is `wirelens ctrl serve` running?"),
        "{err}"
    );
}

#[test]
fn sigkill_loses_no_acknowledged_report() {
    let dir = tmpdir("kill");
    let db = dir.join("ctrl.db");
    let mut srv = Server::start(&dir, &db);
    let c = Client::new(&srv.url, Duration::from_secs(5));
    let acked = Arc::new(Mutex::new(0u64));
    let stop = Arc::new(AtomicBool::new(false));
    let pusher = {
        let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) && seq < 100_000 {
                match c.post_report("token-aaaa-1111", &report("node-a", seq, 3)) {
                    Ok(ack) => {
                        assert_eq!(ack.status, "accepted");
                        *acked.lock().unwrap() += 1;
                        seq += 1;
                    }
                    Err(_) => break,
                }
            }
        })
    };
    let t = Instant::now();
    while *acked.lock().unwrap() < 20 && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    srv.kill(); // SIGKILL while reports are in flight
    stop.store(true, Ordering::Relaxed);
    pusher.join().unwrap();
    let acked = *acked.lock().unwrap();
    assert!(acked >= 20, "only {acked} reports acknowledged");

    let srv = Server::start(&dir, &db);
    let c = Client::new(&srv.url, Duration::from_secs(5));
    let nodes: Vec<Value> = c.get("/api/v1/nodes").unwrap();
    let stored = nodes[0]["reports"].as_u64().unwrap();
    // Every acknowledged report is there; at most the one in flight beyond.
    assert!(
        acked <= stored && stored <= acked + 1,
        "acked {acked}, stored {stored}"
    );
    let totals = service_totals(&srv.url);
    assert_eq!(totals["198.18.2.2:8080/tcp"][1], stored * 3);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `run --backlog-dir` after a crash that came after the control plane took
/// the reports but before their files were deleted: the next run sends them
/// again with their own (instance, seq), and the control plane counts them once.
#[cfg(feature = "live")]
#[test]
fn a_disk_backlog_replayed_after_a_crash_is_counted_once() {
    use wirelens_ctrl::client::{Pusher, PusherConfig};
    use wirelens_node::backlog::{BacklogCounts, DiskBacklog};
    let dir = tmpdir("backlog");
    let srv = Server::start(&dir, &dir.join("ctrl.db"));
    let (spool, copy) = (dir.join("backlog"), dir.join("backlog-copy"));
    let pusher = |instance: u64, d: &Path| {
        let counts = Arc::new(Mutex::new(BacklogCounts::default()));
        let b = DiskBacklog::open(d, counts).unwrap();
        Pusher::new(PusherConfig {
            url: srv.url.clone(),
            node: "node-a".into(),
            token: "token-aaaa-1111".into(),
            instance,
            meta: NodeMeta::default(),
            backlog_bytes: 1 << 20,
            timeout: Duration::from_secs(10),
            encoding: wirelens_ctrl::codec::Encoding::Compact,
        })
        .with_spool(Box::new(b), 4 << 20)
    };
    let now = wirelens_ctrl::now_ns();
    let flows = |k: u8, n: u8| -> Vec<FlowDelta> {
        (0..n)
            .map(|i| FlowDelta::from_record(flow([198, 18, k, i], (SVC, 8080), now - 2 * SEC, 3)))
            .collect()
    };
    let mut a = pusher(1, &spool);
    for k in 0..3 {
        a.enqueue(flows(k, 10), now);
    }
    // What a crash between the 2xx and the unlink leaves behind.
    std::fs::create_dir_all(&copy).unwrap();
    for e in std::fs::read_dir(&spool).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, copy.join(p.file_name().unwrap())).unwrap();
    }
    assert_eq!(a.flush().unwrap(), 3);
    assert_eq!(
        std::fs::read_dir(&spool).unwrap().count(),
        0,
        "delivered: deleted"
    );
    let mut b = pusher(2, &copy);
    assert_eq!((b.stats().replayed, b.backlog()), (3, 3));
    b.enqueue(flows(9, 5), now);
    assert_eq!(b.flush().unwrap(), 4);
    let s = b.stats();
    assert_eq!(
        (s.duplicates, s.accepted, s.dropped_flows),
        (3, 1, 0),
        "{s:?}"
    );
    assert_eq!(std::fs::read_dir(&copy).unwrap().count(), 0);
    let totals = service_totals(&srv.url);
    assert_eq!(totals["198.18.2.2:8080/tcp"][..2], [35, 35 * 3]);
    let c = Client::new(&srv.url, Duration::from_secs(5));
    let nodes: Vec<Value> = c.get("/api/v1/nodes").unwrap();
    assert_eq!(
        (
            nodes[0]["reports"].as_u64(),
            nodes[0]["duplicates"].as_u64()
        ),
        (Some(4), Some(3))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Report `seq` of `node`: `n` flow deltas, each of its own client and 2
/// packets, one JSON/compact body apart from its name.
fn load_report(node: &str, seq: u64, n: u32) -> NodeReport {
    let now = wirelens_ctrl::now_ns();
    let mut r = NodeReport::new(node, 91, seq, now, NodeMeta::default());
    for k in 0..n {
        let c = [198, 19, (k >> 8) as u8, k as u8];
        r.flows.push(FlowDelta::from_record(flow(
            c,
            (SVC, 8080),
            now - 2 * SEC,
            2,
        )));
    }
    r
}

/// Several nodes pushing at once (so commits hold reports of several
/// nodes: group commit), the server SIGKILLed in the middle of it, then
/// restarted on the same database: every delta acknowledged before the kill
/// is stored, and once each node resends the report that got no answer (as
/// a node does), every delta sent is stored exactly once.
#[test]
fn sigkill_under_load_loses_no_acknowledged_delta() {
    use wirelens_ctrl::codec::{encode, Encoding};
    const NODES: usize = 4;
    const DELTAS: u32 = 300;
    let dir = tmpdir("killload");
    let db = dir.join("ctrl.db");
    let mut srv = Server::start_with(&dir, &db, &["--rate-limit", "0"]);
    let acked = Arc::new(Mutex::new(vec![0u64; NODES]));
    let stop = Arc::new(AtomicBool::new(false));
    let pushers: Vec<_> = (0..NODES)
        .map(|k| {
            let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
            let c = Client::new(&srv.url, Duration::from_secs(10));
            std::thread::spawn(move || {
                let node = format!("load-{k}");
                let enc = if k % 2 == 0 {
                    Encoding::Compact
                } else {
                    Encoding::Json
                };
                let mut seq = 0;
                // Ends with the report that got no answer, if any (the node
                // keeps it to resend).
                while !stop.load(Ordering::Relaxed) {
                    let r = load_report(&node, seq, DELTAS);
                    let (ct, ce, body) = encode(&r, enc);
                    match c.post_report_body("shared-token-3333", ct, ce, &body).0 {
                        Ok(ack) => {
                            assert_eq!(ack.status, "accepted", "{node} seq {seq}");
                            acked.lock().unwrap()[k] += u64::from(DELTAS);
                            seq += 1;
                        }
                        Err(_) => return (seq, Some(r)),
                    }
                }
                (seq, None)
            })
        })
        .collect();
    let t = Instant::now();
    while acked
        .lock()
        .unwrap()
        .iter()
        .any(|&a| a < 10 * u64::from(DELTAS))
        && t.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    srv.kill(); // SIGKILL while reports of every node are in flight
    stop.store(true, Ordering::Relaxed);
    let ends: Vec<(u64, Option<NodeReport>)> =
        pushers.into_iter().map(|p| p.join().unwrap()).collect();
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.iter().all(|&a| a >= 10 * u64::from(DELTAS)),
        "too few reports acknowledged before the kill: {acked:?}"
    );

    let srv = Server::start_with(&dir, &db, &["--rate-limit", "0"]);
    let c = Client::new(&srv.url, Duration::from_secs(10));
    let stored = |c: &Client| -> BTreeMap<String, u64> {
        let nodes: Vec<Value> = c.get("/api/v1/nodes").unwrap();
        nodes
            .iter()
            .map(|n| {
                let name = n["node"].as_str().unwrap().to_string();
                (name, n["flow_deltas"].as_u64().unwrap())
            })
            .collect()
    };
    let before = stored(&c);
    for (k, (_, unanswered)) in ends.iter().enumerate() {
        let have = before.get(&format!("load-{k}")).copied().unwrap_or(0);
        let in_flight = u64::from(DELTAS) * u64::from(unanswered.is_some());
        assert!(
            acked[k] <= have && have <= acked[k] + in_flight,
            "node load-{k}: acknowledged {} deltas, stored {have}",
            acked[k]
        );
    }
    // The nodes resend what got no answer: accepted, or a duplicate when
    // its commit made it before the kill.
    let mut sent = 0;
    for (seq, unanswered) in &ends {
        sent += seq * u64::from(DELTAS);
        if let Some(r) = unanswered {
            let ack = c.post_report("shared-token-3333", r).unwrap();
            assert!(["accepted", "duplicate"].contains(&ack.status.as_str()));
            sent += u64::from(DELTAS);
        }
    }
    let after = stored(&c);
    assert_eq!(after.values().sum::<u64>(), sent, "{after:?}");
    let totals = service_totals(&srv.url);
    assert_eq!(totals["198.18.2.2:8080/tcp"][1], sent * 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn top_shows_services_in_tmux() {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!(
            "SKIP top_shows_services_in_tmux: tmux not installed (scripts/setup.sh installs it)"
        );
        return;
    }
    let dir = tmpdir("top");
    let srv = Server::start(&dir, &dir.join("ctrl.db"));
    let c = Client::new(&srv.url, Duration::from_secs(5));
    c.post_report("shared-token-3333", &report("node-t", 0, 7))
        .unwrap();
    let sock = format!("wl-top-{}", std::process::id());
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .arg("-L")
            .arg(&sock)
            .args(args)
            .output()
            .unwrap()
    };
    let cmd = format!("{BIN} top --ctrl {}", srv.url);
    let o = tmux(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "200",
        "-y",
        "50",
        &cmd,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = Instant::now();
    let mut screen = String::new();
    while t.elapsed() < Duration::from_secs(20) {
        screen =
            String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", "top"]).stdout).to_string();
        if screen.contains("198.18.2.2:8080/tcp") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let shown = screen.contains("198.18.2.2:8080/tcp")
        && screen.contains("wirelens top")
        && screen.contains("node-t");
    let _ = tmux(&["send-keys", "-t", "top", "q"]);
    let t = Instant::now();
    let mut quit = false;
    while t.elapsed() < Duration::from_secs(5) {
        if !tmux(&["has-session", "-t", "top"]).status.success() {
            quit = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = tmux(&["kill-server"]);
    assert!(shown, "service row not shown:\n{screen}");
    assert!(quit, "top did not quit on q");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn rtt_step_alert_through_analyze_push() {
    // One connection every 10 s to 198.18.2.4:9000: twelve at 40 ms RTT,
    // then three at 120 ms. Each whole-flow record lands in its own 10 s bucket.
    let dir = tmpdir("rtt");
    let t0 = wirelens_ctrl::now_ns() / (10 * SEC) * (10 * SEC) - 400 * SEC;
    let mut p = Pcap::new();
    for k in 0..15u8 {
        let rtt = if k < 12 { 40 * MS } else { 120 * MS };
        p.conversation(
            t0 + u64::from(k) * 10 * SEC,
            ([198, 18, 5, 10 + k], 43_000),
            ([198, 18, 2, 4], 9000),
            rtt,
            6,
            None,
        );
    }
    let pcap = dir.join("rtt.pcap");
    p.write(&pcap);
    let srv = Server::start(&dir, &dir.join("ctrl.db"));
    let o = wirelens(&[
        "analyze",
        pcap.to_str().unwrap(),
        "--push",
        &srv.url,
        "--node",
        "node-a",
        "--token-file",
        dir.join("token-a").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let alerts = ok_json(&["alerts", "--ctrl", &srv.url, "--format", "json"]);
    let a = alerts.as_array().unwrap();
    assert_eq!(a.len(), 1, "{alerts:#}");
    assert_eq!(a[0]["rule"], "rtt_spike");
    assert_eq!(a[0]["service"], "198.18.2.4:9000/tcp");
    assert_eq!(a[0]["nodes"], serde_json::json!(["node-a"]));
    assert_eq!(a[0]["evidence"]["side"], "server");
    // Since the bucket of the first slow connection (it ends ~0.9 s after it starts).
    let since = a[0]["since_ns"].as_u64().unwrap();
    assert_eq!(since, t0 + 120 * SEC, "since {since}");
    let ratio = a[0]["evidence"]["ratio"].as_f64().unwrap();
    assert!((2.9..3.1).contains(&ratio), "{ratio}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `analyze --push` of `pcap` as node-a; the control plane's alerts.
fn push_and_alerts(dir: &Path, srv: &Server, pcap: &Path, interval: Option<&str>) -> Vec<Value> {
    let mut args = vec![
        "analyze",
        pcap.to_str().unwrap(),
        "--push",
        &srv.url,
        "--node",
        "node-a",
        "--format",
        "ndjson",
    ];
    let tf = dir.join("token-a");
    args.extend(["--token-file", tf.to_str().unwrap()]);
    if let Some(iv) = interval {
        args.extend(["--interval", iv]);
    }
    let o = wirelens(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let alerts = ok_json(&["alerts", "--ctrl", &srv.url, "--format", "json"]);
    alerts.as_array().unwrap().clone()
}

#[test]
fn rtt_step_within_one_connection_alerts_since_the_step() {
    // One long connection: a request every 100 ms, acknowledged after 40 ms
    // for 80 s, then after 120 ms. A whole-flow record would put it all in
    // one bucket; its interval deltas place the step.
    let dir = tmpdir("rtt-one");
    let t0 = wirelens_ctrl::now_ns() / (10 * SEC) * (10 * SEC) - 300 * SEC + 3 * SEC;
    let step = t0 + 80 * SEC;
    let (c, s) = (([198, 18, 6, 10], 44_000), ([198, 18, 2, 5], 9100));
    let mut p = Pcap::new();
    let (ci, si) = (1000u32, 50_000u32);
    p.tcp(t0, c, s, ci, 0, SYN, 0);
    p.tcp(t0 + MS, s, c, si, ci + 1, SYN | ACK, 0);
    p.tcp(t0 + 2 * MS, c, s, ci + 1, si + 1, ACK, 0);
    let mut frames: Vec<(u64, u32, bool)> = Vec::new();
    for i in 0..1200u32 {
        let t = t0 + 10 * MS + u64::from(i) * 100 * MS;
        let rtt = if t < step { 40 * MS } else { 120 * MS };
        frames.push((t, i, false));
        frames.push((t + rtt, i, true));
    }
    frames.sort_by_key(|f| f.0);
    for (t, i, is_ack) in frames {
        let seq = ci + 1 + i * 100;
        if is_ack {
            p.tcp(t, s, c, si + 1, seq + 100, ACK, 0);
        } else {
            p.tcp(t, c, s, seq, si + 1, ACK | PSH, 100);
        }
    }
    let pcap = dir.join("rtt-one.pcap");
    p.write(&pcap);
    let srv = Server::start(&dir, &dir.join("ctrl.db"));
    let a = push_and_alerts(&dir, &srv, &pcap, Some("1s"));
    let spike: Vec<&Value> = a.iter().filter(|a| a["rule"] == "rtt_spike").collect();
    assert_eq!(spike.len(), 1, "{a:#?}");
    assert_eq!(spike[0]["service"], "198.18.2.5:9100/tcp");
    let since = spike[0]["since_ns"].as_u64().unwrap();
    // Within one 10 s bucket of the step.
    assert!(
        since.abs_diff(step) <= 10 * SEC,
        "since {since}, step {step}"
    );
    let ratio = spike[0]["evidence"]["ratio"].as_f64().unwrap();
    assert!((2.7..3.3).contains(&ratio), "{ratio}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn connection_surge_from_many_clients_alerts_from_the_surge_not_before() {
    // 50 clients, each opening a short connection every 10 s (5/s in all);
    // from `surge` on, each every 1 s (10x) for 20 s.
    let dir = tmpdir("surge");
    let t0 = wirelens_ctrl::now_ns() / (10 * SEC) * (10 * SEC) - 300 * SEC;
    let surge = t0 + 120 * SEC;
    let mut conns: Vec<(u64, u8, u16)> = Vec::new();
    for k in 0..50u8 {
        let normal = (0..).map(|n| t0 + u64::from(k) * 200 * MS + n * 10 * SEC);
        let surging = (0..20).map(|n| surge + u64::from(k) * 20 * MS + n * SEC);
        let times = normal.take_while(|&t| t < surge).chain(surging);
        for (port, t) in (30_000u16..).zip(times) {
            conns.push((t, k, port));
        }
    }
    conns.sort_unstable();
    let mut p = Pcap::new();
    // (time, client, port, flags, from the client, seq, ack)
    type Segment = (u64, [u8; 4], u16, u8, bool, u32, u32);
    let mut events: Vec<Segment> = Vec::new();
    let s = ([198u8, 18, 2, 6], 9200u16);
    for (t, k, port) in conns {
        let c = [198, 18, 7, 10 + k];
        let (ci, si) = (1000u32, 50_000u32);
        events.push((t, c, port, SYN, true, ci, 0));
        events.push((t + MS, c, port, SYN | ACK, false, si, ci + 1));
        events.push((t + 2 * MS, c, port, ACK | FIN, true, ci + 1, si + 1));
        events.push((t + 3 * MS, c, port, ACK | FIN, false, si + 1, ci + 2));
        events.push((t + 4 * MS, c, port, ACK, true, ci + 2, si + 2));
    }
    events.sort_by_key(|e| e.0);
    for (t, c, port, flags, up, seq, ack) in events {
        if up {
            p.tcp(t, (c, port), s, seq, ack, flags, 0);
        } else {
            p.tcp(t, s, (c, port), seq, ack, flags, 0);
        }
    }
    let pcap = dir.join("surge.pcap");
    p.write(&pcap);
    let srv = Server::start(&dir, &dir.join("ctrl.db"));
    let a = push_and_alerts(&dir, &srv, &pcap, None);
    let surges: Vec<&Value> = a
        .iter()
        .filter(|a| a["rule"] == "connection_surge")
        .collect();
    assert_eq!(surges.len(), 1, "{a:#?}");
    let x = surges[0];
    assert_eq!(x["service"], "198.18.2.6:9200/tcp");
    assert_eq!(
        x["since_ns"].as_u64().unwrap(),
        surge,
        "not before the surge"
    );
    let ratio = x["evidence"]["ratio"].as_f64().unwrap();
    assert!((8.0..=11.0).contains(&ratio), "{ratio}");
    assert!(
        x["summary"].as_str().unwrap().contains("new connections/s"),
        "{x}"
    );
    // The capture's own analysis says the same, with the clients.
    let o = wirelens(&["analyze", pcap.to_str().unwrap(), "--interval", "10s"]);
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("connection_surge"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("since +"), "{line}");
    assert!(text.contains("from 50 clients"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- ClickHouse store -------------------------------------------------------

/// A free loopback port (bound, then let go).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const CH_PASSWORD: &str = "wl-test-7c1f";

/// A `clickhouse-server` of this test's own: config, users, data and logs
/// in `dir`, HTTP and native ports free on 127.0.0.1, no interserver port.
/// Its process group is killed on drop, so also when the test fails.
struct ClickHouse {
    child: Option<Child>,
    dir: PathBuf,
    http: u16,
}

impl ClickHouse {
    fn start(dir: &Path) -> ClickHouse {
        std::fs::create_dir_all(dir).unwrap();
        let (http, tcp) = (free_port(), free_port());
        let d = dir.display();
        std::fs::write(
            dir.join("config.xml"),
            format!(
                r#"<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/error.log</errorlog><console>0</console></logger>
  <http_port>{http}</http_port>
  <tcp_port>{tcp}</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <user_files_path>{d}/user_files/</user_files_path>
  <format_schema_path>{d}/format_schemas/</format_schema_path>
  <users_config>{d}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>5368709120</mark_cache_size>
</yandex>
"#
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("users.xml"),
            format!(
                r#"<?xml version="1.0"?>
<yandex>
  <profiles><default></default></profiles>
  <users>
    <wl><password>{CH_PASSWORD}</password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></wl>
  </users>
  <quotas><default></default></quotas>
</yandex>
"#
            ),
        )
        .unwrap();
        let mut ch = ClickHouse {
            child: None,
            dir: dir.to_path_buf(),
            http,
        };
        ch.spawn();
        ch
    }

    /// Starts the server (again, on the same ports and data) and waits until
    /// it answers.
    fn spawn(&mut self) {
        use std::os::unix::process::CommandExt;
        let out = std::fs::File::create(self.dir.join("stdout.log")).unwrap();
        let child = Command::new("clickhouse-server")
            .arg(format!(
                "--config-file={}",
                self.dir.join("config.xml").display()
            ))
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .expect("clickhouse-server (scripts/setup.sh installs it)");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.http);
        let t = Instant::now();
        loop {
            if TcpStream::connect(&addr).is_ok() {
                let (status, body) = raw_http(
                    &addr,
                    // HTTP/1.0: ClickHouse closes after the answer (1.1 keeps it open).
                    &format!("GET /?query=SELECT%201 HTTP/1.0\r\nX-ClickHouse-User: wl\r\nX-ClickHouse-Key: {CH_PASSWORD}\r\n\r\n"),
                    b"",
                );
                if status == 200 && body.trim() == "1" {
                    return;
                }
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "clickhouse-server did not answer on {addr}: {}",
                std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs one statement as the test's user; panics unless it succeeds.
    fn sql(&self, stmt: &str) {
        self.query(stmt);
    }

    /// Runs `stmt`, returns the answer.
    fn query(&self, stmt: &str) -> String {
        let addr = format!("127.0.0.1:{}", self.http);
        let (status, body) = raw_http(
            &addr,
            &format!(
                "POST / HTTP/1.0\r\nX-ClickHouse-User: wl\r\nX-ClickHouse-Key: {CH_PASSWORD}\r\nContent-Length: {}\r\n\r\n",
                stmt.len()
            ),
            stmt.as_bytes(),
        );
        assert_eq!(status, 200, "{stmt}: {body}");
        body
    }

    /// SIGKILL of the whole process group.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", c.id())])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `analyze --push` of `pcap` as `node` to `url`; returns its stderr.
fn push(pcap: &Path, node: &str, token_file: &Path, url: &str) -> String {
    let o = wirelens(&[
        "analyze",
        pcap.to_str().unwrap(),
        "--format",
        "json",
        "--push",
        url,
        "--node",
        node,
        "--token-file",
        token_file.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{node} -> {url}: {err}");
    err
}

fn get_text(url: &str, path: &str) -> (u16, String) {
    let addr = url.trim_start_matches("http://");
    raw_http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
        b"",
    )
}

/// A metric's value; 0 when the sample is absent.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Two control planes over one ClickHouse and one over SQLite get the same
/// pushes: three nodes, one through each ClickHouse process and one retried
/// through both. Every answer equals the SQLite one and the nodes' own
/// records; ClickHouse stopped is 503 (logged, in /metrics) and a node's
/// pending report gets in once it is back.
#[test]
fn clickhouse_store_two_control_planes_give_the_sqlite_answers() {
    let dir = tmpdir("clickhouse");
    let (pa, pb) = captures(&dir);
    let t0 = wirelens_ctrl::now_ns() - 200 * SEC;
    let mut c = Pcap::new();
    for k in 0..2u8 {
        c.conversation(
            t0 + u64::from(k) * SEC,
            ([198, 18, 4, 40 + k], 43_000 + u16::from(k)),
            (SVC2, 443),
            20 * MS,
            8,
            Some(3),
        );
    }
    let pc = dir.join("c.pcap");
    c.write(&pc);
    // Two hours old: its hour is closed, so the ClickHouse stores roll it
    // up into `svc_1h` as it arrives, and a 3 h window reads it from there.
    let mut o = Pcap::new();
    o.conversation(
        t0 - 7_200 * SEC,
        ([198, 18, 4, 60], 45_000),
        (SVC2, 443),
        20 * MS,
        6,
        Some(2),
    );
    let po = dir.join("old.pcap");
    o.write(&po);
    std::fs::write(dir.join("token-c"), "shared-token-3333\n").unwrap();
    let cred = dir.join("ch-credentials");
    std::fs::write(
        &cred,
        format!("# the store's account\nuser=wl\npassword={CH_PASSWORD}\n"),
    )
    .unwrap();

    let mut ch = ClickHouse::start(&dir.join("clickhouse"));
    let store = format!("clickhouse://127.0.0.1:{}/wirelens_test", ch.http);
    let ch_args = [
        "--store",
        store.as_str(),
        "--store-credentials",
        cred.to_str().unwrap(),
    ];
    let c1 = Server::start_store(&dir, &ch_args);
    let c2 = Server::start_store(&dir, &ch_args);
    let lite = Server::start(&dir, &dir.join("ctrl.db"));
    let (ta, tb, tc) = (
        dir.join("token-a"),
        dir.join("token-b"),
        dir.join("token-c"),
    );
    assert!(push(&pa, "node-a", &ta, &c1.url).contains("1 accepted"));
    assert!(push(&pb, "node-b", &tb, &c2.url).contains("1 accepted"));
    assert!(push(&pc, "node-c", &tc, &c1.url).contains("1 accepted"));
    // The same report again through the other process: not counted twice.
    let again = push(&pc, "node-c", &tc, &c2.url);
    assert!(again.contains("0 accepted, 1 already there"), "{again}");
    assert!(push(&po, "node-o", &tc, &c2.url).contains("1 accepted"));
    for (p, node, tf) in [
        (&pa, "node-a", &ta),
        (&pb, "node-b", &tb),
        (&pc, "node-c", &tc),
        (&pc, "node-c", &tc),
        (&po, "node-o", &tc),
    ] {
        push(p, node, tf, &lite.url);
    }

    let recs: Vec<Value> = [&pa, &pb, &pc]
        .iter()
        .flat_map(|p| {
            ok_json(&["analyze", p.to_str().unwrap(), "--format", "json"])["flows"]
                .as_array()
                .unwrap()
                .clone()
        })
        .collect();
    let want = expected(&recs.iter().collect::<Vec<_>>());
    assert_eq!(recs.len(), 8);
    for srv in [&c1, &c2, &lite] {
        assert_eq!(service_totals(&srv.url), want, "{}", srv.url);
    }
    // The same answers, whole, from either store and either process.
    let everything = |url: &str| {
        let q = |args: &[&str]| {
            let mut a = args.to_vec();
            a.extend(["--ctrl", url, "--format", "json"]);
            ok_json(&a)
        };
        let nodes: Vec<(String, u64, u64, u64)> = q(&["nodes"])
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["node"].as_str().unwrap().to_string(),
                    n["reports"].as_u64().unwrap(),
                    n["duplicates"].as_u64().unwrap(),
                    n["flow_deltas"].as_u64().unwrap(),
                )
            })
            .collect();
        let (_, metrics) = get_text(url, "/metrics");
        let packets: Vec<f64> = want
            .keys()
            .map(|s| {
                let sel = wirelens_ctrl::metrics::service_labels(s)
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{v}\""))
                    .collect::<Vec<_>>()
                    .join(",");
                sample(
                    &metrics,
                    &format!("wirelens_service_packets_total{{{sel}}}"),
                )
            })
            .collect();
        (
            (q(&["services"]), q(&["services", "--since", "3h"])),
            q(&["flows", "--limit", "100"]),
            q(&["alerts"]),
            nodes,
            packets,
        )
    };
    let from_lite = everything(&lite.url);
    assert_eq!(
        from_lite.3[2],
        ("node-c".to_string(), 1, 1, 2),
        "{:?}",
        from_lite.3
    );
    assert!(from_lite.4.iter().all(|p| *p > 0.0), "{:?}", from_lite.4);
    let old_svc = format!("{}:443/tcp", std::net::Ipv4Addr::from(SVC2));
    let flows_of_old = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|s| s["service"] == old_svc.as_str())
            .map(|s| s["flows"].as_u64().unwrap())
    };
    assert_eq!(
        flows_of_old(&from_lite.0 .0).map(|n| n + 1),
        flows_of_old(&from_lite.0 .1),
        "the old flow is in the 3 h window only"
    );
    // The old report's hour was rolled up, and a 3 h window reads it there.
    assert!(
        ch.query("SELECT count() FROM wirelens_test.svc_1h WHERE node = 'node-o'")
            .trim()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    assert_eq!(everything(&c1.url), from_lite);
    assert_eq!(everything(&c2.url), from_lite);
    // Every data row written twice, as when two processes race on the same
    // reports or a batch is retried after a partial failure: the answers
    // stay the same (one row per report and key is read).
    for t in [
        "svc_10s",
        "svc_1m",
        "svc_1h",
        "pth_10s",
        "pth_1m",
        "top_flows",
    ] {
        ch.sql(&format!(
            "INSERT INTO wirelens_test.{t} SELECT * FROM wirelens_test.{t}"
        ));
    }
    assert_eq!(everything(&c1.url), from_lite);

    // ClickHouse down: 503, the reason in the log and in /metrics.
    ch.stop();
    let body = serde_json::to_vec(&report("node-a", 9, 7)).unwrap();
    let (status, text) = post(&c1.addr, Some("token-aaaa-1111"), &body, body.len());
    assert_eq!(status, 503, "{text}");
    let (_, metrics) = get_text(&c1.url, "/metrics");
    assert_eq!(sample(&metrics, "wirelens_ctrl_store_up"), 0.0, "{metrics}");
    assert!(
        sample(
            &metrics,
            "wirelens_ctrl_reports_total{result=\"store_unavailable\"}"
        ) >= 1.0,
        "{metrics}"
    );
    assert!(
        c1.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("store error: clickhouse:")),
        "{:?}",
        c1.log.lock().unwrap()
    );
    // A node pushing meanwhile keeps its report and retries; it gets in
    // once ClickHouse is back, once.
    let mut d = Pcap::new();
    d.conversation(
        t0,
        ([198, 18, 5, 50], 44_000),
        (SVC, 8080),
        30 * MS,
        4,
        None,
    );
    let pd = dir.join("d.pcap");
    d.write(&pd);
    let url2 = c2.url.clone();
    let (pd2, tb2) = (pd.clone(), tb.clone());
    let late = std::thread::spawn(move || push(&pd2, "node-b", &tb2, &url2));
    std::thread::sleep(Duration::from_secs(2));
    ch.spawn();
    let late = late.join().unwrap();
    assert!(late.contains("1 accepted"), "{late}");
    let (status, text) = post(&c1.addr, Some("token-aaaa-1111"), &body, body.len());
    assert_eq!(status, 200, "{text}");
    let mut want = want;
    let dr = ok_json(&["analyze", pd.to_str().unwrap(), "--format", "json"]);
    let more = expected(&dr["flows"].as_array().unwrap().iter().collect::<Vec<_>>());
    for (svc, v) in more {
        let e = want.entry(svc).or_default();
        for k in 0..4 {
            e[k] += v[k];
        }
    }
    let e = want.get_mut("198.18.2.2:8080/tcp").unwrap();
    e[0] += 1;
    e[1] += 7;
    e[2] += 700;
    for srv in [&c1, &c2] {
        assert_eq!(service_totals(&srv.url), want, "{}", srv.url);
    }
    let (_, metrics) = get_text(&c2.url, "/metrics");
    assert_eq!(sample(&metrics, "wirelens_ctrl_store_up"), 1.0);

    // Fail-over: a node pushing to two control planes; the first is
    // SIGKILLed mid-push, the node goes on with the second. Every report
    // is counted once: nothing acknowledged lost, nothing in flight doubled.
    let mut c3 = Server::start_store(&dir, &ch_args);
    let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
    const REPORTS: u64 = 40;
    let node = {
        let (acked, urls) = (Arc::clone(&acked), format!("{},{}", c3.url, c2.url));
        std::thread::spawn(move || {
            let mut p = wirelens_ctrl::client::Pusher::new(wirelens_ctrl::client::PusherConfig {
                url: urls,
                node: "node-f".into(),
                token: "shared-token-3333".into(),
                instance: 5,
                meta: NodeMeta::default(),
                backlog_bytes: 64 << 20,
                timeout: Duration::from_secs(5),
                encoding: wirelens_ctrl::codec::Encoding::Json,
            });
            for k in 0..REPORTS {
                let now = wirelens_ctrl::now_ns();
                let deltas = (0..3u8)
                    .map(|i| {
                        FlowDelta::from_record(flow(
                            [198, 18, 6, i],
                            ([198, 18, 2, 9], 9000),
                            now - SEC,
                            1 + k,
                        ))
                    })
                    .collect();
                p.enqueue(deltas, now);
                p.flush_until(Instant::now() + Duration::from_secs(30))
                    .unwrap_or_else(|e| panic!("report {k}: {e}"));
                acked.store(k + 1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            }
            p.stats()
        })
    };
    let t = Instant::now();
    while acked.load(Ordering::SeqCst) < REPORTS / 3 && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    c3.kill(); // SIGKILL while the node is pushing to it
    let stats = node.join().unwrap();
    assert!(stats.failovers >= 1, "{stats:?}");
    assert_eq!(stats.accepted + stats.duplicates, REPORTS, "{stats:?}");
    assert_eq!(stats.dropped_reports, 0, "{stats:?}");
    let want_packets: u64 = (0..REPORTS).map(|k| 3 * (1 + k)).sum();
    for srv in [&c1, &c2] {
        let got = service_totals(&srv.url);
        assert_eq!(got["198.18.2.9:9000/tcp"][1], want_packets, "{}", srv.url);
    }
    drop((c1, c2, lite));
    drop(ch);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(name: &str, size: &str) -> SmallDisk {
        let d = tmpdir(name).join("disk");
        std::fs::create_dir_all(&d).unwrap();
        support::sh(&[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size}"),
            "wligdisk",
            d.to_str().unwrap(),
        ]);
        SmallDisk(d)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        if let Some(p) = self.0.parent() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// A store that filled its disk still prunes (its reserve gives the room),
/// says so in its status, and takes reports again afterwards.
#[test]
fn a_full_disk_still_prunes_with_the_reserve() {
    use wirelens_ctrl::store::{Retention, SqliteStore, Store};
    if support::skip_unless_root(
        "a_full_disk_still_prunes_with_the_reserve",
        "mounts a tmpfs",
    ) {
        return;
    }
    let disk = SmallDisk::mount("full", "4m");
    let mut s = SqliteStore::open(&disk.0.join("ctrl.db"))
        .unwrap()
        .with_disk_reserve(1 << 20);
    let st = s.disk().unwrap();
    assert_eq!(st.reserve_bytes.load(Ordering::Relaxed), 1 << 20);
    let mut seq = 0;
    let full = loop {
        let r = load_report("filler", seq, 300);
        match s.ingest(
            &r,
            &wirelens_ctrl::agg::rows_of(&r),
            wirelens_ctrl::now_ns(),
        ) {
            Ok(_) => seq += 1,
            Err(e) => break e,
        }
        assert!(seq < 100_000, "4 MiB never filled");
    };
    assert!(full.to_string().contains("full"), "{full}");
    assert!(st.full.load(Ordering::Relaxed));
    // Everything is past a retention of 0: the prune needs room to delete.
    let keep = Retention {
        s10_ns: 0,
        m1_ns: 0,
        flows_ns: 0,
        reports_ns: 0,
    };
    let n = s.prune(wirelens_ctrl::now_ns() + SEC, &keep).unwrap();
    assert!(n > 0);
    assert_eq!(st.releases.load(Ordering::Relaxed), 1);
    assert_eq!(
        st.reserve_bytes.load(Ordering::Relaxed),
        1 << 20,
        "reserve not written back"
    );
    let r = load_report("filler", seq, 300);
    s.ingest(
        &r,
        &wirelens_ctrl::agg::rows_of(&r),
        wirelens_ctrl::now_ns(),
    )
    .unwrap();
    assert!(!st.full.load(Ordering::Relaxed));
}
