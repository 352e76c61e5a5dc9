//! The control plane's HTTP server under hostile and unauthenticated requests,
//! in process on loopback (127.0.0.1, ephemeral ports): every bad request gets
//! a 4xx with a JSON reason, the server never panics or stops, the store stays
//! intact; the per-node rate limit, the read API's token, TLS, and that no
//! token ever reaches the log.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use wirelens_ctrl::alerts::AlertConfig;
use wirelens_ctrl::auth::Tokens;
use wirelens_ctrl::client::{Client, ClientOptions, Pusher, PusherConfig};
use wirelens_ctrl::limit::RateLimit;
use wirelens_ctrl::report::{FlowDelta, NodeMeta, NodeReport};
use wirelens_ctrl::server::{ServerConfig, TlsFiles};
use wirelens_ctrl::store::Retention;
use wirelens_dataplane::report::FlowRecord;

mod support;
use support::{raw, Srv};

const NODE_TOKEN: &str = "node-a-SECRET-1111";
const SHARED_TOKEN: &str = "shared-SECRET-2222";
const API_TOKEN: &str = "api-SECRET-3333";
const BODY_LIMIT: usize = 256 * 1024;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn config(db: &Path) -> ServerConfig {
    ServerConfig {
        db: db.to_path_buf(),
        tokens: Tokens::parse(&format!("node-a:{NODE_TOKEN}\n{SHARED_TOKEN}\n"), "t").unwrap(),
        body_limit: BODY_LIMIT,
        retention: Retention::default(),
        alerts: AlertConfig::default(),
        tls: None,
        rate_limit: None,
        api_tokens: None,
        limits: wirelens_ctrl::server::ConnLimits::default(),
        ingest: wirelens_ctrl::server::IngestConfig::default(),
    }
}

/// The server of `config`, changed by `tune`.
fn start(name: &str, tune: impl FnOnce(&mut ServerConfig)) -> Srv {
    support::start(&format!("hostile-{name}"), |db| {
        let mut cfg = config(&db);
        tune(&mut cfg);
        cfg
    })
}

fn post(addr: SocketAddr, auth: Option<&str>, extra: &str, body: &[u8]) -> (u16, String) {
    let mut req = format!(
        "POST /api/v1/report HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n{extra}",
        body.len()
    );
    if let Some(t) = auth {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    raw(addr, &bytes)
}

fn get(addr: SocketAddr, path: &str, auth: Option<&str>) -> (u16, String) {
    let auth = auth
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n").as_bytes(),
    )
}

fn flow(client: &str, server: &str, first_ns: u64, packets: u64) -> FlowRecord {
    let (c, cp) = client.rsplit_once(':').unwrap();
    let (s, sp) = server.rsplit_once(':').unwrap();
    let dir = |p: u64| {
        json!({"packets": p, "bytes": p * 1000, "payload_bytes": p * 900, "syn": 0, "synack": 0,
        "fin": 0, "rst": 0, "retrans_seen": 0, "hole_fill": 0, "gaps": 0, "out_of_order": 0,
        "retransmits": 0, "fast_retransmits": 0, "spurious_retransmits": 0, "rto_retransmits": 0,
        "dup_acks": 0, "zero_window": 0, "zero_window_events": 0, "zero_window_ns": 0, "ecn_ce": 0,
        "frags": 0, "rtt": {"n": 0, "min_ns": null, "p50_ns": null, "p90_ns": null, "p99_ns": null,
        "max_ns": null, "mean_ns": null, "last_ns": null},
        "burst": {"max_packets_1ms": 1, "max_bytes_1ms": 1000}})
    };
    serde_json::from_value(json!({
        "type": "flow", "schema": "wirelens.flow.v1", "proto": "udp",
        "client": {"ip": c, "port": cp.parse::<u16>().unwrap()},
        "server": {"ip": s, "port": sp.parse::<u16>().unwrap()},
        "vlan": null, "first_ns": first_ns, "last_ns": first_ns + 1_000_000,
        "c2s": dir(packets), "s2c": dir(0), "tcp": null, "pmtu": null
    }))
    .unwrap()
}

fn report(node: &str, seq: u64, packets: u64) -> NodeReport {
    let now = wirelens_ctrl::now_ns();
    let mut r = NodeReport::new(node, 7, seq, now, NodeMeta::default());
    r.flows.push(FlowDelta::from_record(flow(
        "198.18.1.2:40000",
        "198.18.2.2:53",
        now - 5_000_000_000,
        packets,
    )));
    r
}

fn body(r: &NodeReport) -> Vec<u8> {
    serde_json::to_vec(r).unwrap()
}

fn packets_of(addr: SocketAddr, auth: Option<&str>) -> u64 {
    let (st, b) = get(addr, "/api/v1/services", auth);
    assert_eq!(st, 200, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s["packets"].as_u64().unwrap())
        .sum()
}

fn is_json_error(b: &str) -> bool {
    serde_json::from_str::<Value>(b)
        .is_ok_and(|v| v["error"].as_str().is_some_and(|e| !e.is_empty()))
}

#[test]
fn hostile_requests_get_4xx_and_the_store_stays_intact() {
    let s = start("hostile", |_| {});
    let a = s.addr;
    let (st, b) = post(
        a,
        Some(NODE_TOKEN),
        "Content-Type: application/json\r\n",
        &body(&report("node-a", 0, 10)),
    );
    assert_eq!(st, 200, "{b}");
    assert_eq!(packets_of(a, None), 10);

    let valid = String::from_utf8(body(&report("node-a", 1, 5))).unwrap();
    let with = |field: &str, value: &str| {
        let mut v: Value = serde_json::from_str(&valid).unwrap();
        v[field] = json!("@@");
        v.to_string().replace("\"@@\"", value).into_bytes()
    };
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_obj = format!(
        "{{\"schema\":{}1{}}}",
        "{\"a\":".repeat(5000),
        "}".repeat(5000)
    );
    let mut bad_utf8 = valid.clone().into_bytes();
    let at = bad_utf8.windows(6).position(|w| w == b"node-a").unwrap();
    bad_utf8[at + 1] = 0xff;
    bad_utf8[at + 2] = 0xfe;
    let json_ct = "Content-Type: application/json\r\n";
    let cases: Vec<(&str, Vec<u8>, &str, u16)> = vec![
        ("invalid UTF-8", bad_utf8, json_ct, 400),
        ("not JSON", b"\x00\x01garbage".to_vec(), json_ct, 400),
        ("empty body", Vec::new(), json_ct, 400),
        ("deep array nesting", deep.into_bytes(), json_ct, 400),
        ("deep object nesting", deep_obj.into_bytes(), json_ct, 400),
        (
            "seq past u64",
            with("seq", "18446744073709551616"),
            json_ct,
            400,
        ),
        ("seq 1e400", with("seq", "1e400"), json_ct, 400),
        ("seq negative", with("seq", "-1"), json_ct, 400),
        ("seq fraction", with("seq", "1.5"), json_ct, 400),
        ("NaN literal", with("sent_ns", "NaN"), json_ct, 400),
        ("NaN string", with("sent_ns", "\"NaN\""), json_ct, 400),
        ("Infinity", with("instance", "Infinity"), json_ct, 400),
        (
            "huge string number",
            with("seq", &"9".repeat(5000)),
            json_ct,
            400,
        ),
        (
            "time past 2262",
            with("sent_ns", "18446744073709551615"),
            json_ct,
            422,
        ),
        ("null node", with("node", "null"), json_ct, 400),
        (
            "duplicate field",
            valid
                .replacen("\"seq\":1", "\"seq\":1,\"seq\":2", 1)
                .into_bytes(),
            json_ct,
            400,
        ),
        ("bad node name", with("node", "\"../etc\""), json_ct, 422),
        ("wrong version", with("version", "2"), json_ct, 422),
        (
            "text/plain",
            valid.clone().into_bytes(),
            "Content-Type: text/plain\r\n",
            415,
        ),
        (
            "form",
            valid.clone().into_bytes(),
            "Content-Type: application/x-www-form-urlencoded\r\n",
            415,
        ),
        (
            "non-ASCII content type",
            valid.clone().into_bytes(),
            "Content-Type: application/js\u{f6}n\r\n",
            415,
        ),
    ];
    for (name, b, extra, want) in &cases {
        let (st, ans) = post(a, Some(NODE_TOKEN), extra, b);
        assert_eq!(st, *want, "{name}: {ans}");
        assert!(is_json_error(&ans), "{name}: not a JSON error: {ans}");
    }
    // Auth: none, unknown, malformed, another node's token, token in the wrong place.
    let r = body(&report("node-b", 2, 5));
    for (name, auth, want) in [
        ("no token", None, 401),
        ("unknown token", Some("nope-nope-nope"), 401),
        ("empty bearer", Some(""), 401),
        ("non-ASCII token", Some("t\u{f6}ken-xxxxxxxx"), 401),
        ("another node's token", Some(NODE_TOKEN), 403),
    ] {
        let (st, ans) = post(a, auth, json_ct, &r);
        assert_eq!(st, want, "{name}: {ans}");
        assert!(is_json_error(&ans), "{name}: {ans}");
    }
    let (st, _) = raw(
        a,
        format!(
            "POST /api/v1/report HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Basic {NODE_TOKEN}\r\nContent-Length: 2\r\n\r\n{{}}"
        )
        .as_bytes(),
    );
    assert_eq!(st, 401, "Basic instead of Bearer");
    // Size: declared too large, and chunked without a length.
    let (st, ans) = raw(
        a,
        format!(
            "POST /api/v1/report HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {NODE_TOKEN}\r\nContent-Length: {}\r\n\r\n",
            BODY_LIMIT + 1
        )
        .as_bytes(),
    );
    assert_eq!(st, 413, "{ans}");
    let chunk = vec![b' '; 64 * 1024];
    let mut req = format!(
        "POST /api/v1/report HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {NODE_TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..(BODY_LIMIT / chunk.len() + 2) {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(&chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let (st, ans) = raw(a, &req);
    assert_eq!(st, 413, "{ans}");
    // Routes, methods, queries, and bytes that are not HTTP.
    for (req, want) in [
        ("GET /api/v1/report HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 405),
        ("DELETE /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 405),
        ("GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 404),
        ("GET /api/v1/flows?limit=-1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400),
        ("GET /api/v1/flows?limit=99999999999999999999999 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400),
        ("GET /api/v1/services?since=NaN HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400),
        ("GET /api/v1/services?since=%ff%fe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400),
        ("GET /api/v1/nodes?sort=%00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400),
        ("GET /api/v1/services?since=99999999999999999999d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400),
    ] {
        let (st, ans) = raw(a, req.as_bytes());
        assert_eq!(st, want, "{req:?}: {ans}");
        assert!(is_json_error(&ans), "{req:?}: {ans}");
    }
    for junk in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        &[0xffu8; 4096][..],
    ] {
        let (st, _) = raw(a, junk);
        assert!(st == 0 || (400..500).contains(&st), "junk got {st}");
    }
    let huge_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let (st, _) = raw(a, huge_header.as_bytes());
    assert!(st == 0 || (400..500).contains(&st), "huge header got {st}");

    // Still up, nothing of the above was stored, and a good report still counts.
    assert_eq!(get(a, "/healthz", None).0, 200);
    assert_eq!(packets_of(a, None), 10);
    let (st, b) = post(a, Some(NODE_TOKEN), json_ct, &body(&report("node-a", 3, 7)));
    assert_eq!(st, 200, "{b}");
    assert_eq!(packets_of(a, None), 17);
    let (_, metrics) = get(a, "/metrics", None);
    assert!(
        metrics.contains("wirelens_ctrl_reports_total{result=\"malformed\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wirelens_ctrl_reports_total{result=\"unsupported_media_type\"} 3"),
        "{metrics}"
    );
}

#[test]
fn rate_limit_answers_429_with_retry_after() {
    let s = start("rate", |c| {
        c.rate_limit = Some(RateLimit {
            per_sec: 0.01,
            burst: 2,
        })
    });
    let json_ct = "Content-Type: application/json\r\n";
    for seq in 0..2 {
        let (st, b) = post(
            s.addr,
            Some(NODE_TOKEN),
            json_ct,
            &body(&report("node-a", seq, 1)),
        );
        assert_eq!(st, 200, "{b}");
    }
    let mut req = format!(
        "POST /api/v1/report HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {NODE_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
    )
    .into_bytes();
    let mut sock = TcpStream::connect(s.addr).unwrap();
    sock.write_all(&req).unwrap();
    let mut out = String::new();
    sock.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 429"), "{out}");
    let lower = out.to_ascii_lowercase();
    assert!(lower.contains("\r\nretry-after: 100\r\n"), "{out}");
    let b: Value = serde_json::from_str(out.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(b["retry_after_s"], 100);
    assert!(b["error"].as_str().unwrap().contains("node-a"), "{b}");
    // Another node (through the shared token: limited after the body names it)
    // has its own bucket; its third report is limited too.
    for seq in 0..2 {
        let (st, b) = post(
            s.addr,
            Some(SHARED_TOKEN),
            json_ct,
            &body(&report("node-c", seq, 1)),
        );
        assert_eq!(st, 200, "{b}");
    }
    let (st, b) = post(
        s.addr,
        Some(SHARED_TOKEN),
        json_ct,
        &body(&report("node-c", 2, 1)),
    );
    assert_eq!(st, 429, "{b}");
    // The pusher keeps a limited report and says it may retry.
    let mut p = Pusher::new(PusherConfig {
        url: format!("http://{}", s.addr),
        node: "node-a".into(),
        token: NODE_TOKEN.into(),
        instance: 9,
        meta: NodeMeta::default(),
        backlog_bytes: 1 << 20,
        timeout: Duration::from_secs(5),
        encoding: wirelens_ctrl::codec::Encoding::Json,
    });
    p.enqueue(Vec::new(), 1);
    let e = p.flush().unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert_eq!(p.backlog(), 1);
    req.clear();
}

#[test]
fn api_token_guards_the_read_api() {
    let s = start("api", |c| {
        c.api_tokens = Some(Tokens::parse(&format!("{API_TOKEN}\n"), "api").unwrap());
    });
    let a = s.addr;
    for path in [
        "/api/v1/nodes",
        "/api/v1/services",
        "/api/v1/flows",
        "/api/v1/alerts",
        "/metrics",
    ] {
        let (st, b) = get(a, path, None);
        assert_eq!(st, 401, "{path}: {b}");
        assert!(is_json_error(&b), "{b}");
        assert_eq!(
            get(a, path, Some(NODE_TOKEN)).0,
            401,
            "{path}: a node token is not an API token"
        );
        assert_eq!(
            get(a, path, Some("api-SECRET-333")).0,
            401,
            "{path}: a prefix"
        );
        assert_eq!(get(a, path, Some(API_TOKEN)).0, 200, "{path}");
    }
    assert_eq!(get(a, "/healthz", None).0, 200, "liveness stays open");
    // Reports still use the node tokens, not the API token.
    let json_ct = "Content-Type: application/json\r\n";
    assert_eq!(
        post(a, Some(API_TOKEN), json_ct, &body(&report("node-a", 0, 1))).0,
        401
    );
    assert_eq!(
        post(a, Some(NODE_TOKEN), json_ct, &body(&report("node-a", 0, 1))).0,
        200
    );
    // The client sends its API token.
    let url = format!("http://{a}");
    let with = |t: Option<&str>| {
        Client::with_options(
            &url,
            Duration::from_secs(5),
            &ClientOptions {
                ca_file: None,
                api_token: t.map(String::from),
                ..ClientOptions::default()
            },
        )
    };
    assert!(with(Some(API_TOKEN)).get::<Value>("/api/v1/nodes").is_ok());
    let e = with(None).get::<Value>("/api/v1/nodes").unwrap_err();
    assert!(e.to_string().contains("401"), "{e}");
}

#[test]
fn tokens_never_reach_the_log() {
    let s = start("log", |c| {
        c.api_tokens = Some(Tokens::parse(&format!("{API_TOKEN}\n"), "api").unwrap());
        c.rate_limit = Some(RateLimit {
            per_sec: 1.0,
            burst: 1,
        });
    });
    let a = s.addr;
    let json_ct = "Content-Type: application/json\r\n";
    let wrong = "wrong-SECRET-4444";
    post(a, Some(NODE_TOKEN), json_ct, &body(&report("node-a", 0, 1)));
    post(a, Some(NODE_TOKEN), json_ct, &body(&report("node-a", 1, 1))); // rate limited
    post(a, Some(NODE_TOKEN), json_ct, &body(&report("node-b", 0, 1))); // forbidden
    post(a, Some(wrong), json_ct, &body(&report("node-a", 2, 1)));
    post(a, Some(SHARED_TOKEN), json_ct, b"{not json");
    // A token where a node name or a value goes.
    let mut r = report("node-x", 0, 1);
    r.meta.source = NODE_TOKEN.into();
    post(a, Some(SHARED_TOKEN), json_ct, &body(&r));
    get(a, "/api/v1/nodes", Some(wrong));
    get(a, "/api/v1/nodes", Some(API_TOKEN));
    get(
        a,
        &format!("/api/v1/flows?node={NODE_TOKEN}"),
        Some(API_TOKEN),
    );
    let log = s.log.lock().unwrap().clone();
    assert!(
        log.iter().any(|l| l.contains("report node=node-a")),
        "{log:?}"
    );
    assert!(log.iter().any(|l| l.contains("unknown token")), "{log:?}");
    for l in &log {
        for secret in [NODE_TOKEN, SHARED_TOKEN, API_TOKEN, wrong, "SECRET"] {
            assert!(!l.contains(secret), "a token in the log: {l}");
        }
    }
    // Debug output of the configuration types never shows a token either.
    let cfg = config(Path::new("/nonexistent"));
    let pc = PusherConfig {
        url: "http://x".into(),
        node: "n".into(),
        token: NODE_TOKEN.into(),
        instance: 1,
        meta: NodeMeta::default(),
        backlog_bytes: 1 << 20,
        timeout: Duration::from_secs(1),
        encoding: wirelens_ctrl::codec::Encoding::Json,
    };
    let opts = ClientOptions {
        ca_file: None,
        api_token: Some(API_TOKEN.into()),
        ..ClientOptions::default()
    };
    let client = Client::with_options("http://x", Duration::from_secs(1), &opts);
    for d in [
        format!("{cfg:?}"),
        format!("{pc:?}"),
        format!("{opts:?}"),
        format!("{client:?}"),
        format!("{:?}", Pusher::new(pc.clone())),
    ] {
        assert!(!d.contains("SECRET"), "a token in Debug output: {d}");
    }
}

#[test]
fn tls_serves_https_and_the_client_verifies() {
    let s = start("tls", |c| {
        c.tls = Some(TlsFiles {
            cert: data("server.pem"),
            key: data("server.key"),
            client_ca: None,
        })
    });
    let port = s.addr.port();
    let opts = |ca: &str| ClientOptions {
        ca_file: Some(data(ca)),
        ..ClientOptions::default()
    };
    for host in ["127.0.0.1", "localhost"] {
        let c = Client::with_options(
            &format!("https://{host}:{port}"),
            Duration::from_secs(5),
            &opts("ca.pem"),
        );
        let v: Value = c.get("/healthz").unwrap_or_else(|e| panic!("{host}: {e}"));
        assert_eq!(v["status"], "ok");
        let ack = c.post_report(NODE_TOKEN, &report("node-a", 0, 3)).unwrap();
        assert!(
            ack.status == "accepted" || ack.status == "duplicate",
            "{ack:?}"
        );
    }
    // A CA that did not sign the certificate: refused, with what to do.
    let c = Client::with_options(
        &format!("https://127.0.0.1:{port}"),
        Duration::from_secs(5),
        &opts("other-ca.pem"),
    );
    let e = c.get::<Value>("/healthz").unwrap_err().to_string();
    assert!(
        e.starts_with("TLS with the control plane at")
            && e.contains("certificate")
            && e.contains("--ca-file"),
        "{e}"
    );
    // A CA file that is not PEM: a setup error naming the file.
    let c = Client::with_options(
        &format!("https://127.0.0.1:{port}"),
        Duration::from_secs(5),
        &opts("README.md"),
    );
    let e = c.get::<Value>("/healthz").unwrap_err().to_string();
    assert!(e.contains("README.md"), "{e}");
    // Plain http to the TLS port: refused by the server, which keeps serving.
    let (st, _) = get(s.addr, "/healthz", None);
    assert_ne!(st, 200);
    let c = Client::with_options(
        &format!("http://127.0.0.1:{port}"),
        Duration::from_secs(5),
        &ClientOptions::default(),
    );
    let e = c.get::<Value>("/healthz").unwrap_err().to_string();
    assert!(e.contains("https://"), "{e}");
    // A client that connects and says nothing does not block others.
    let _idle = TcpStream::connect(s.addr).unwrap();
    let c = Client::with_options(
        &format!("https://127.0.0.1:{port}"),
        Duration::from_secs(5),
        &opts("ca.pem"),
    );
    assert!(c.get::<Value>("/healthz").is_ok());
    assert!(s.log.lock().unwrap().iter().all(|l| !l.contains("SECRET")));
}

#[test]
fn tls_setup_errors_name_the_file() {
    let e =
        wirelens_ctrl::tls::server_config(&data("missing.pem"), &data("server.key")).unwrap_err();
    assert!(e.to_string().contains("missing.pem"), "{e}");
    let e = wirelens_ctrl::tls::server_config(&data("server.pem"), &data("ca.pem")).unwrap_err();
    assert!(
        e.to_string().contains("key file") && e.to_string().contains("ca.pem"),
        "{e}"
    );
    let e = wirelens_ctrl::tls::server_config(&data("ca.pem"), &data("server.key")).unwrap_err();
    assert!(e.to_string().contains("do not fit"), "{e}");
}
