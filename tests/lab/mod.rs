//! Support for the accuracy lab tests (`tests/lab_*.rs`).
//!
//! A test runs one scenario of `scripts/lab.sh` (the very script a human runs:
//! `scripts/lab.sh run SCENARIO OUTDIR`), which builds network namespaces, runs
//! real Linux TCP/UDP traffic through known impairments and leaves
//! `OUTDIR/tap.pcap` and `OUTDIR/truth.json` (what was injected). Then:
//!
//! - [`tshark`] extracts per-packet fields with Wireshark's TCP analysis on;
//! - [`reference`] computes the per-flow reference from those fields: exact
//!   counters (our own sequence-coverage bookkeeping, independent of
//!   wirelens) plus Wireshark's heuristic flags aggregated per direction;
//! - [`wirelens`] runs `wirelens analyze --format ndjson` and parses it into
//!   `serde_json::Value` (tolerant of fields being added);
//! - [`compare`] holds both against each other with stated rules and prints
//!   every difference with the flow, the field, both values and the pcap.
//!
//! Root-only: without root or without the tools the tests print `SKIP ...`
//! and pass (and fail under `WIRELENS_REQUIRE_ROOT_TESTS=1`). Labs are serialised inside a process (one lock), names are unique
//! per process and lab (`wl<pid><n>`), and a guard tears the lab down even
//! when the test panics or the script hangs.
#![allow(
    dead_code,
    reason = "each lab_*.rs test binary uses a different subset"
)]

pub mod compare;
pub mod reference;
pub mod tshark;
pub mod wirelens;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// One lab at a time per process: the machine has two cores and the lab's
/// timing (RTT, pacing, the python forwarder) suffers from concurrent labs.
static LAB_LOCK: Mutex<()> = Mutex::new(());
static LAB_SEQ: AtomicU32 = AtomicU32::new(0);

/// Bound of one `lab.sh run`, whatever happens inside it.
const LAB_TIMEOUT: Duration = Duration::from_secs(150);

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

use crate::support::{is_root, skip_root_only};

fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// `Some(reason)` when this machine cannot run the lab.
pub fn skip_reason() -> Option<String> {
    if !is_root() {
        return Some("not root (the lab needs network namespaces)".into());
    }
    let missing: Vec<&str> = [
        "tshark", "tcpdump", "ip", "iptables", "ethtool", "python3", "timeout",
    ]
    .into_iter()
    .filter(|t| !have(t))
    .collect();
    if !missing.is_empty() {
        return Some(format!(
            "missing tools: {} (scripts/setup.sh installs them)",
            missing.join(", ")
        ));
    }
    None
}

/// Prints the visible SKIP line (a panic under
/// `WIRELENS_REQUIRE_ROOT_TESTS=1`) and returns true when the lab cannot run.
pub fn skip(test: &str) -> bool {
    match skip_reason() {
        Some(why) => {
            skip_root_only(test, &why);
            true
        }
        None => false,
    }
}

/// A line on the real stderr: libtest captures `eprintln!` of passing tests,
/// but a SKIP (and a lab's one-line result) must show in CI logs.
pub fn visible(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Where the lab writes: `$WL_LAB_DIR` or `<tmp>/wirelens-lab-<pid>`.
pub fn work_root() -> PathBuf {
    let dir = std::env::var_os("WL_LAB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("wirelens-lab-{}", std::process::id()))
        });
    std::fs::create_dir_all(&dir).expect("create the lab work dir");
    dir
}

/// A finished lab run: the capture and what was injected.
#[derive(Debug)]
pub struct Capture {
    pub scenario: String,
    pub dir: PathBuf,
    pub pcap: PathBuf,
    pub truth: Value,
    pub lab_secs: f64,
    /// From `WL_LAB_REUSE`: never deleted.
    pub reused: bool,
}

/// Tears a lab down whatever happens to the test: kills a still-running
/// `lab.sh` (its EXIT trap removes the namespaces) and then runs
/// `lab.sh down ID`, which is idempotent.
struct LabGuard {
    id: String,
    child: Option<Child>,
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(child.id().to_string())
                    .status();
                let t = Instant::now();
                while t.elapsed() < Duration::from_secs(10) {
                    if !matches!(child.try_wait(), Ok(None)) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = Command::new(repo_root().join("scripts/lab.sh"))
            .args(["down", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs `scripts/lab.sh run SCENARIO DIR` under the process-wide lab lock.
/// Panics (after cleaning up) when the lab fails; its output is printed.
/// With `WL_LAB_REUSE=DIR`, no lab runs: `DIR/SCENARIO/{tap.pcap,truth.json}`
/// of an earlier run (kept with `WL_LAB_KEEP=1`) are compared again.
pub fn run_scenario(scenario: &str) -> Capture {
    let _lock = LAB_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(reuse) = std::env::var_os("WL_LAB_REUSE") {
        let dir = PathBuf::from(reuse).join(scenario);
        let truth = std::fs::read_to_string(dir.join("truth.json"))
            .unwrap_or_else(|e| panic!("WL_LAB_REUSE: {}: {e}", dir.join("truth.json").display()));
        eprintln!(
            "lab {scenario}: WL_LAB_REUSE: comparing {} again",
            dir.display()
        );
        return Capture {
            scenario: scenario.into(),
            pcap: dir.join("tap.pcap"),
            truth: serde_json::from_str(&truth).expect("truth.json is JSON"),
            dir,
            lab_secs: 0.0,
            reused: true,
        };
    }
    let n = LAB_SEQ.fetch_add(1, Ordering::Relaxed);
    // wl + pid (<= 7 digits) + lab counter (base 36, 1 digit) + 2-letter suffix <= 15;
    // `WL_LAB_ID_PREFIX` (<= 2 of [0-9a-z]) names the labs of one runner apart.
    let prefix: String = std::env::var("WL_LAB_ID_PREFIX")
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
        .take(2)
        .collect();
    let id = format!(
        "{prefix}{}{}",
        std::process::id(),
        std::char::from_digit(n % 36, 36).unwrap()
    );
    let dir = work_root().join(scenario);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log_path = dir.join("lab.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let t0 = Instant::now();
    let child = Command::new(repo_root().join("scripts/lab.sh"))
        .args(["run", scenario])
        .arg(&dir)
        .env("WL_ID", &id)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn scripts/lab.sh");
    let mut guard = LabGuard {
        id,
        child: Some(child),
    };
    let status = loop {
        let child = guard.child.as_mut().unwrap();
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if t0.elapsed() > LAB_TIMEOUT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let lab_secs = t0.elapsed().as_secs_f64();
    let out = std::fs::read_to_string(&log_path).unwrap_or_default();
    eprint!("{out}");
    match status {
        None => {
            drop(guard);
            panic!(
                "lab {scenario}: no result after {LAB_TIMEOUT:?}; output kept in {}",
                dir.display()
            );
        }
        Some(st) if !st.success() => {
            drop(guard);
            panic!(
                "lab {scenario} failed ({st}); output kept in {}",
                dir.display()
            );
        }
        Some(_) => {}
    }
    drop(guard);
    let truth: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("truth.json")).expect("lab wrote truth.json"),
    )
    .expect("truth.json is JSON");
    Capture {
        scenario: scenario.into(),
        pcap: dir.join("tap.pcap"),
        dir,
        truth,
        lab_secs,
        reused: false,
    }
}

impl Capture {
    /// Removes the capture unless `WL_LAB_KEEP` is set; call it only when the
    /// test passed (a failing test keeps its directory and prints it).
    pub fn discard(&self) {
        if !self.reused && std::env::var_os("WL_LAB_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
            // The per-process work dir, once the last capture is gone (a
            // non-empty one stays: remove_dir fails).
            if std::env::var_os("WL_LAB_DIR").is_none() {
                if let Some(root) = self.dir.parent() {
                    let _ = std::fs::remove_dir(root);
                }
            }
        }
    }

    /// A number in truth.json by JSON pointer, 0 when absent.
    pub fn truth_u64(&self, pointer: &str) -> u64 {
        self.truth
            .pointer(pointer)
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }
}

/// Runs a command bounded by `timeout(1)`; returns stdout, or a message with
/// the command line and its stderr.
pub fn run_bounded(secs: u32, prog: &str, args: &[String]) -> Result<String, String> {
    let out = Command::new("timeout")
        .args(["-k", "5", &secs.to_string(), prog])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{prog}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{prog} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    String::from_utf8(out.stdout).map_err(|e| format!("{prog}: output is not UTF-8: {e}"))
}
