//! A real `wirelens ctrl serve` process on loopback against slow and
//! numerous clients, and with mutual TLS:
//!
//! * slowloris: a client that sends its headers a byte at a time, or never
//!   sends a request at all, is cut off after `--header-timeout`, and other
//!   clients are served meanwhile;
//! * a body that never ends gets 408 after `--request-timeout`, and the
//!   connection closes; nothing reaches the store;
//! * beyond `--max-connections`, new connections are closed at once, and
//!   served again when the others are gone;
//! * `--client-ca`: the CLI without a client certificate, or with one of
//!   another CA, is refused at the handshake (with a message that says
//!   what to pass); with `--client-cert/--client-key` or the environment
//!   variables it is served. Certificates are made here with the openssl
//!   CLI (scripts/setup.sh installs it).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_wirelens");
const TOKEN: &str = "node-a:token-aaaa-1111";

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wl-ctrl-slow-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("tokens"), format!("{TOKEN}\n")).unwrap();
    d
}

/// A `wirelens ctrl serve` child; killed on drop, its directory removed.
struct Server {
    child: Child,
    addr: String,
    log: Arc<Mutex<Vec<String>>>,
    dir: PathBuf,
}

impl Server {
    fn start(dir: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .args(["ctrl", "serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(dir.join("db.sqlite"))
            .arg("--token-file")
            .arg(dir.join("tokens"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wirelens ctrl serve");
        let err = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let l2 = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let addr = line.find("listening on ").map(|i| {
                    let rest = &line[i + "listening on ".len()..];
                    let url = rest.split_whitespace().next().unwrap_or("");
                    url.split("://").nth(1).unwrap_or("").to_string()
                });
                l2.lock().unwrap().push(line);
                if let Some(a) = addr {
                    let _ = tx.send(a);
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("server did not start: {:?}", log.lock().unwrap()));
        Server {
            child,
            addr,
            log,
            dir: dir.to_path_buf(),
        }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    /// GET /healthz on a new connection: the status and how long it took.
    fn healthz(&self) -> (u16, Duration) {
        let t0 = Instant::now();
        let mut s = self.connect();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        (status(&resp), t0.elapsed())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn status(resp: &str) -> u16 {
    resp.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Waits until the server closes `s` (EOF or reset); returns how long that
/// took from `since`, with what the server sent before.
fn closed_after(s: &mut TcpStream, since: Instant) -> (Duration, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return (since.elapsed(), String::from_utf8_lossy(&got).into()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn slow_headers_are_cut_off_and_others_are_served_meanwhile() {
    let dir = tmpdir("headers");
    let srv = Server::start(&dir, &["--header-timeout", "3", "--request-timeout", "5"]);
    // 20 connections that never send a byte
    let mut idle: Vec<TcpStream> = (0..20).map(|_| srv.connect()).collect();
    // one that sends its headers one byte every 300 ms, and never finishes
    let mut slow = srv.connect();
    let t0 = Instant::now();
    slow.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    let trickle = b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut writer = slow.try_clone().unwrap();
    let feeder = std::thread::spawn(move || {
        for b in trickle {
            std::thread::sleep(Duration::from_millis(300));
            if writer.write_all(&[*b]).is_err() {
                return;
            }
        }
    });
    // meanwhile, other clients are served at once
    for _ in 0..3 {
        let (code, took) = srv.healthz();
        assert_eq!(code, 200);
        // well under the header timeout: not held up by the slow client
        assert!(took < Duration::from_millis(1500), "healthz took {took:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (took, sent) = closed_after(&mut slow, t0);
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(6),
        "the trickling client was cut off after {took:?}"
    );
    assert!(!sent.contains("200 OK"), "{sent}");
    feeder.join().unwrap();
    for (i, s) in idle.iter_mut().enumerate() {
        let (took, sent) = closed_after(s, t0);
        assert!(
            took < Duration::from_secs(6) && sent.is_empty(),
            "idle connection {i}: closed after {took:?}, sent {sent:?}"
        );
    }
    assert_eq!(srv.healthz().0, 200);
}

#[test]
fn a_body_that_never_ends_gets_408_and_nothing_is_stored() {
    let dir = tmpdir("body");
    let srv = Server::start(&dir, &["--header-timeout", "5", "--request-timeout", "1.5"]);
    let mut s = srv.connect();
    let t0 = Instant::now();
    s.write_all(
        format!(
            "POST /api/v1/report HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{\"node\":",
            TOKEN.split(':').nth(1).unwrap()
        )
        .as_bytes(),
    )
    .unwrap();
    // a byte now and then, never the whole body
    let mut w = s.try_clone().unwrap();
    let feeder = std::thread::spawn(move || {
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(250));
            if w.write_all(b" ").is_err() {
                return;
            }
        }
    });
    let (took, sent) = closed_after(&mut s, t0);
    assert_eq!(status(&sent), 408, "{sent}");
    assert!(sent.contains("request not complete"), "{sent}");
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(4),
        "answered after {took:?}"
    );
    feeder.join().unwrap();
    // nothing stored; the metrics count the cut
    let mut c = srv.connect();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut m = String::new();
    let _ = c.read_to_string(&mut m);
    assert!(
        m.contains("wirelens_ctrl_connections_cut_total{reason=\"request_timeout\"} 1"),
        "{m}"
    );
    assert!(m.contains("wirelens_ctrl_nodes 0"), "{m}");
}

#[test]
fn connections_beyond_the_cap_are_closed_at_once() {
    let dir = tmpdir("cap");
    let srv = Server::start(&dir, &["--header-timeout", "30", "--max-connections", "4"]);
    let held: Vec<TcpStream> = (0..4).map(|_| srv.connect()).collect();
    // let the server take the four before the fifth comes
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let mut fifth = srv.connect();
    let _ = fifth.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let (took, sent) = closed_after(&mut fifth, t0);
    assert!(sent.is_empty(), "{sent}");
    assert!(took < Duration::from_secs(2), "closed after {took:?}");
    drop(held);
    // the slots free up as the server sees the four close
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if srv.healthz().0 == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never served again");
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = srv.log.lock().unwrap().join("\n");
    assert!(log.contains("4 connections open"), "{log}");
}

// ---- mutual TLS ----

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`NAME-ca.pem`, `NAME-ca.key`).
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=wirelens test {name} CA"),
            "-keyout",
            &format!("{name}-ca.key"),
            "-out",
            &format!("{name}-ca.pem"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// A leaf certificate `NAME.pem`/`NAME.key` signed by CA `ca`.
fn make_leaf(dir: &Path, ca: &str, name: &str, ext: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}-ca.pem"),
            "-CAkey",
            &format!("{ca}-ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

fn query(dir: &Path, url: &str, extra: &[&str], env: &[(&str, PathBuf)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(["nodes", "--ctrl", url, "--format", "json", "--ca-file"])
        .arg(dir.join("server-ca.pem"))
        .args(extra)
        .env_remove("WIRELENS_CLIENT_CERT")
        .env_remove("WIRELENS_CLIENT_KEY")
        .env_remove("WIRELENS_CA_FILE");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[test]
fn client_ca_requires_a_client_certificate() {
    if Command::new("openssl").arg("version").output().is_err() {
        panic!("openssl CLI not found: scripts/setup.sh installs it");
    }
    let dir = tmpdir("mtls");
    make_ca(&dir, "server");
    make_ca(&dir, "nodes");
    make_ca(&dir, "rogue");
    make_leaf(
        &dir,
        "server",
        "server",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    );
    make_leaf(&dir, "nodes", "node-a", "extendedKeyUsage=clientAuth\n");
    make_leaf(&dir, "rogue", "node-x", "extendedKeyUsage=clientAuth\n");
    let p = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let srv = Server::start(
        &dir,
        &[
            "--tls-cert",
            &p("server.pem"),
            "--tls-key",
            &p("server.key"),
            "--client-ca",
            &p("nodes-ca.pem"),
        ],
    );
    let log = srv.log.lock().unwrap().join("\n");
    assert!(log.contains("client certificates required"), "{log}");
    let url = format!("https://{}", srv.addr);

    // no client certificate: refused, and told what to pass
    let out = query(&dir, &url, &[], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("--client-cert"), "{err}");

    // another CA's certificate: refused
    let out = query(
        &dir,
        &url,
        &[
            "--client-cert",
            &p("node-x.pem"),
            "--client-key",
            &p("node-x.key"),
        ],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // the nodes CA's certificate, by flag and by environment: served
    let out = query(
        &dir,
        &url,
        &[
            "--client-cert",
            &p("node-a.pem"),
            "--client-key",
            &p("node-a.key"),
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    let out = query(
        &dir,
        &url,
        &[],
        &[
            ("WIRELENS_CLIENT_CERT", dir.join("node-a.pem")),
            ("WIRELENS_CLIENT_KEY", dir.join("node-a.key")),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // a certificate without its key: a usage problem, said so
    let out = query(
        &dir,
        &url,
        &[],
        &[("WIRELENS_CLIENT_CERT", dir.join("node-a.pem"))],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--client-key"),
        "{:?} {err} {}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );

    // the refused handshakes are counted on /metrics (fetched with a good
    // client certificate through openssl's TLS client)
    let mut c = Command::new("openssl")
        .args(["s_client", "-quiet", "-connect", &srv.addr.to_string()])
        .args(["-CAfile", &p("server-ca.pem")])
        .args(["-cert", &p("node-a.pem"), "-key", &p("node-a.key")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let out = c.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let failed: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("wirelens_ctrl_tls_handshakes_failed_total "))
        .unwrap_or_else(|| panic!("no handshake counter in /metrics: {text}"))
        .trim()
        .parse()
        .unwrap();
    assert!(failed >= 2, "{failed} failed handshakes counted: {text}");

    // --client-ca without --tls-cert is refused by the CLI
    let out = Command::new(BIN)
        .args([
            "ctrl",
            "serve",
            "--db",
            "x",
            "--token-file",
            "y",
            "--client-ca",
        ])
        .arg(dir.join("nodes-ca.pem"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
