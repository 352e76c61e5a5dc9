//! What the root-only lab tests share: the root check and its SKIP (a
//! failure under `WIRELENS_REQUIRE_ROOT_TESTS=1`), running a lab command,
//! removing the liveness locks a killed daemon left, Prometheus text
//! lookups, HTTP GETs from inside a lab namespace, a pcap writer ([`pcap`]),
//! a `ctrl serve` of a test's own ([`CtrlServer`]) and ([`flows`]) the
//! comparison of `/flows` with `wirelens analyze` of a capture.
#![allow(dead_code)] // each test binary uses part of it

pub mod flows;
pub mod pcap;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// True when the effective uid is 0 (namespaces, XDP, AF_XDP need it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// The variable that turns every root-only SKIP into a failure (CI sets it:
/// a root test that cannot run there must not pass unseen).
pub const REQUIRE_ROOT_TESTS: &str = "WIRELENS_REQUIRE_ROOT_TESTS";

/// True when `WIRELENS_REQUIRE_ROOT_TESTS=1`.
pub fn root_tests_required() -> bool {
    std::env::var_os(REQUIRE_ROOT_TESTS).is_some_and(|v| v == "1")
}

/// Says that root-only test `test` cannot run here (`why`): a SKIP line on
/// the real stderr (libtest does not capture it), or a panic when
/// `WIRELENS_REQUIRE_ROOT_TESTS=1`.
pub fn skip_root_only(test: &str, why: &str) {
    if root_tests_required() {
        panic!("{test} cannot run ({why}) and {REQUIRE_ROOT_TESTS}=1 forbids skipping it");
    }
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIP {test}: {why}");
}

/// True (after [`skip_root_only`]) when not root: `if skip_unless_root(..) { return; }`.
pub fn skip_unless_root(test: &str, why: &str) -> bool {
    if is_root() {
        return false;
    }
    skip_root_only(test, why);
    true
}

/// The value of the sample `sample` (name and labels, exactly as written)
/// in a Prometheus/OpenMetrics text.
pub fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// GET `path` from `addr` (HTTP/1.1, `Connection: close`): (status,
/// body, a chunked body decoded), `None` when nothing answered.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(15)))
        .ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: wirelens\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Some((
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    ))
}

/// The payload of a chunked HTTP/1.1 body.
fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(len.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// [`http_get`] from inside network namespace `ns` (on a thread that
/// enters it).
#[cfg(feature = "live")]
pub fn http_get_in(ns: &str, addr: &str, path: &str) -> Option<(u16, String)> {
    let (ns, addr, path) = (ns.to_string(), addr.to_string(), path.to_string());
    std::thread::spawn(move || -> Option<(u16, String)> {
        wirelens_dataplane::xdp::enter_netns(&ns).ok()?;
        http_get(&addr, &path)
    })
    .join()
    .ok()
    .flatten()
}

/// Runs a lab command (`ip`, `tc`, `ethtool`, ...) and panics with its
/// stderr when it fails.
pub fn sh(args: &[&str]) {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| {
            panic!("running {args:?}: {e} (scripts/setup.sh installs the lab tools)")
        });
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a command and returns its stdout (whatever its exit status).
pub fn sh_out(args: &[&str]) -> String {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sends `sig` (e.g. `-TERM`) to `child`.
pub fn signal(child: &std::process::Child, sig: &str) {
    let _ = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status();
}

/// Waits up to `t` for `child` to exit.
pub fn wait_for(
    child: &mut std::process::Child,
    t: std::time::Duration,
) -> Option<std::process::ExitStatus> {
    let end = std::time::Instant::now() + t;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if std::time::Instant::now() >= end {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Removes the liveness lock files in `/run/wirelens` whose name `ours`
/// accepts: a SIGKILLed daemon of the lab leaves its lock behind.
pub fn remove_lock_files(ours: impl Fn(&str) -> bool) {
    if let Ok(d) = std::fs::read_dir("/run/wirelens") {
        for e in d.flatten() {
            if ours(&e.file_name().to_string_lossy()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// A `wirelens ctrl serve` child; killed on drop.
pub struct CtrlServer {
    child: Child,
    pub url: String,
    pub addr: String,
    /// Its stderr, line by line.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl CtrlServer {
    /// Serves store `db` with the tokens of `dir/tokens` on a free loopback port.
    pub fn start(dir: &Path, db: &Path) -> CtrlServer {
        CtrlServer::start_with(dir, db, &[])
    }

    /// [`CtrlServer::start`] with more `ctrl serve` options.
    pub fn start_with(dir: &Path, db: &Path, extra: &[&str]) -> CtrlServer {
        let mut args = vec!["--db", db.to_str().expect("utf-8 path")];
        args.extend_from_slice(extra);
        CtrlServer::start_store(dir, &args)
    }

    /// Serves the store `store` names (`--db PATH`, or `--store URL
    /// --store-credentials FILE`), with any more options after it.
    pub fn start_store(dir: &Path, store: &[&str]) -> CtrlServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wirelens"))
            .args(["ctrl", "serve", "--listen", "127.0.0.1:0"])
            .args(store)
            .arg("--token-file")
            .arg(dir.join("tokens"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wirelens ctrl serve");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let l2 = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(i) = line.find("listening on http://") {
                    let rest = &line[i + "listening on http://".len()..];
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(addr);
                }
                l2.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("server did not start: {:?}", log.lock().unwrap()));
        CtrlServer {
            child,
            url: format!("http://{addr}"),
            addr,
            log,
        }
    }

    /// SIGKILL (no clean shutdown).
    pub fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for CtrlServer {
    fn drop(&mut self) {
        self.kill();
    }
}
