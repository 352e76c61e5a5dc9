//! `wirelens probe` on loopback (no root needed): a reflector and a sender,
//! a silent peer ("no reply ... is a reflector running?"), a peer that
//! answers garbage, and the output formats. Every run is bounded.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_wirelens");

/// A reflector on 127.0.0.1, an OS-chosen port; killed on drop.
struct Reflector {
    child: Child,
    addr: String,
}

impl Reflector {
    fn start() -> Reflector {
        let mut child = Command::new(BIN)
            .args([
                "probe",
                "reflect",
                "--listen",
                "127.0.0.1:0",
                "--duration",
                "30s",
            ])
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn reflector");
        let mut line = String::new();
        let mut rd = BufReader::new(child.stderr.take().unwrap());
        rd.read_line(&mut line).unwrap();
        // Keep draining its log so it never writes into a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut rd, &mut std::io::sink()));
        let addr = line
            .split_whitespace()
            .skip_while(|w| *w != "udp")
            .nth(1)
            .unwrap_or_else(|| panic!("reflector said: {line}"))
            .to_string();
        Reflector { child, addr }
    }
}

impl Drop for Reflector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wirelens(args: &[&str]) -> (Output, Duration) {
    let t = Instant::now();
    let out = Command::new(BIN).args(args).output().expect("spawn");
    (out, t.elapsed())
}

/// A UDP peer on loopback that never answers, or answers `reply` to everything.
fn fake_peer(reply: Option<Vec<u8>>) -> (String, Arc<AtomicBool>, thread::JoinHandle<u64>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let addr = sock.local_addr().unwrap().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let h = thread::spawn(move || {
        let mut n = 0;
        let mut buf = [0u8; 2048];
        while !s2.load(Ordering::Relaxed) {
            if let Ok((_, from)) = sock.recv_from(&mut buf) {
                n += 1;
                if let Some(r) = &reply {
                    let _ = sock.send_to(r, from);
                }
            }
        }
        n
    });
    (addr, stop, h)
}

#[test]
fn send_to_a_reflector_json_and_ndjson() {
    let r = Reflector::start();
    let (out, took) = wirelens(&[
        "probe",
        "send",
        &r.addr,
        "--interval",
        "5ms",
        "--count",
        "100",
        "--size",
        "64",
        "--report-interval",
        "200ms",
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &v["summary"];
    assert_eq!(s["schema"], "wirelens.probe.v1");
    assert_eq!(s["sent"], 100);
    assert_eq!(s["received"], 100);
    assert_eq!(s["lost"], 0);
    assert_eq!(s["lost_up"], 0);
    assert_eq!(s["lost_down"], 0);
    assert_eq!(s["loss_split"], "exact");
    assert_eq!(s["reflector"], "stateful");
    assert_eq!(s["hops_up"], 0);
    assert_eq!(s["size"], 64);
    let rtt = &s["rtt"];
    assert_eq!(rtt["n"], 100);
    for k in ["min_ns", "p50_ns", "p90_ns", "p99_ns", "max_ns"] {
        assert!(rtt[k].as_u64().is_some(), "{k} in {rtt}");
    }
    assert!(rtt["min_ns"].as_u64() <= rtt["p50_ns"].as_u64());
    assert!(rtt["p99_ns"].as_u64() <= rtt["max_ns"].as_u64());
    let ivs = v["intervals"].as_array().unwrap();
    assert!(ivs.len() >= 2);
    assert_eq!(
        ivs.iter().map(|i| i["sent"].as_u64().unwrap()).sum::<u64>(),
        100
    );
    assert!(took < Duration::from_secs(5), "{took:?}");

    let (out, _) = wirelens(&[
        "probe",
        "send",
        &r.addr,
        "--interval",
        "5ms",
        "--count",
        "20",
        "--format",
        "ndjson",
    ]);
    assert!(out.status.success());
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.last().unwrap()["type"], "summary");
    assert!(lines[..lines.len() - 1]
        .iter()
        .all(|l| l["type"] == "interval"));

    let (out, _) = wirelens(&[
        "probe",
        "send",
        &r.addr,
        "--interval",
        "5ms",
        "--count",
        "20",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("20 sent, 20 received, 0 lost"), "{text}");
    assert!(text.contains("rtt (minus reflector dwell): min"), "{text}");
}

#[test]
fn silent_peer_is_reported_and_never_hangs() {
    let (addr, stop, h) = fake_peer(None);
    let (out, took) = wirelens(&["probe", "send", &addr, "--duration", "20s"]);
    stop.store(true, Ordering::Relaxed);
    let got = h.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "no reply from {addr} in 3 s: is a TWAMP-light reflector running there?"
        )),
        "{err}"
    );
    assert!(err.contains("wirelens probe reflect --listen"), "{err}");
    assert_eq!(got, 3, "three hello probes");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn garbage_replies_are_counted_and_ignored() {
    let (addr, stop, h) = fake_peer(Some(b"HTTP/1.1 400 Bad Request\r\n".to_vec()));
    let (out, took) = wirelens(&["probe", "send", &addr, "--count", "5"]);
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no reply from"), "{err}");
    assert!(
        err.contains("3 datagrams came back that were not TWAMP replies"),
        "{err}"
    );
    assert!(took < Duration::from_secs(5));
}

#[test]
fn closed_port_is_reported() {
    // Bind and drop: nothing listens on that port any more (ICMP port
    // unreachable on loopback).
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = format!("127.0.0.1:{port}");
    let (out, took) = wirelens(&["probe", "send", &target, "--count", "3"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("ICMP port unreachable: nothing listens there"),
        "{err}"
    );
    assert!(took < Duration::from_secs(5));
}

#[test]
fn pmtu_on_loopback_is_clean() {
    let r = Reflector::start();
    let (out, _) = wirelens(&[
        "probe", "pmtu", &r.addr, "--max", "9000", "--format", "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["path_mtu"], 9000);
    assert_eq!(v["verdict"], "clean");
    assert_eq!(v["black_hole"], false);
}

#[test]
fn nic_counters_of_loopback() {
    let (out, _) = wirelens(&["probe", "nic", "lo", "--format", "ndjson"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(names
        .iter()
        .any(|c| c["name"] == "rx_packets" && c["source"] == "kernel"));
    let (out, _) = wirelens(&["probe", "nic", "wl-nonexistent"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no interface"));
}
