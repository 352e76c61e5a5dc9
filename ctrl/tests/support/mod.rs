//! The in-process control plane of the HTTP tests: a real server on its own
//! thread and runtime on 127.0.0.1 (ephemeral port), and raw HTTP/1.1 over a
//! plain socket, so that malformed requests reach it byte for byte.
#![allow(dead_code)] // each test binary uses part of it

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wirelens_ctrl::server::{self, AppState, LogSink, ServerConfig};
use wirelens_ctrl::store::SqliteStore;

pub struct Srv {
    pub addr: SocketAddr,
    /// What the server logged.
    pub log: Arc<Mutex<Vec<String>>>,
    _dir: TempDir,
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server with `config(db path)` (TLS when it names certificates); it
/// lives until the test process ends, its directory until `Srv` drops.
pub fn start(name: &str, config: impl FnOnce(PathBuf) -> ServerConfig) -> Srv {
    let dir = std::env::temp_dir().join(format!("wl-ctrl-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = config(dir.join("ctrl.db"));
    let log = Arc::new(Mutex::new(Vec::new()));
    let store = SqliteStore::open(&cfg.db).unwrap();
    let state =
        AppState::with_log(Box::new(store), &cfg, LogSink::Memory(Arc::clone(&log))).unwrap();
    let tls = cfg
        .tls
        .as_ref()
        .map(|f| wirelens_ctrl::tls::server_config(&f.cert, &f.key).unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            let forever = std::future::pending::<()>();
            match tls {
                Some(t) => {
                    let l = wirelens_ctrl::tls::TlsListener::new(l, t).unwrap();
                    server::serve_on(l, state, forever).await.unwrap();
                }
                None => server::serve_on(l, state, forever).await.unwrap(),
            }
        });
    });
    Srv {
        addr: rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        log,
        _dir: TempDir(dir),
    }
}

/// Sends raw bytes, returns (status, body); status 0 when the server closed
/// the connection without an answer.
pub fn raw(addr: SocketAddr, bytes: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may answer (and close) before it read everything. No
    // half-close: hyper takes the end of the request stream as a client gone.
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
