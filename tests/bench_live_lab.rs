//! Root-only: `wirelens bench live` builds its lab, measures all three
//! receivers, prints sane JSON and leaves nothing behind.
//!
//! Run: `cargo test --test bench_live_lab` (as root). Not root: the test
//! skips with a message on stderr.
#![cfg(feature = "live")]

use std::process::Command;

use serde_json::Value;

mod support;
use support::skip_unless_root;

const BIN: &str = env!("CARGO_BIN_EXE_wirelens");

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing or not an integer in {v}"))
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64()
        .unwrap_or_else(|| panic!("{k} missing or not a number in {v}"))
}

/// Two queues, a paced rate (a debug build receives slowly), all three
/// receivers; then every counter is checked against the others.
#[test]
fn bench_live_measures_three_receivers_and_cleans_up() {
    if skip_unless_root("bench_live_lab", "needs root (namespaces, XDP, AF_XDP)") {
        return;
    }
    let out = Command::new(BIN)
        .args([
            "bench",
            "live",
            "--seconds",
            "2",
            "--format",
            "json",
            "--queues",
            "2",
            "--flows",
            "400",
            "--rate",
            "20000",
            "--arena",
            "8192",
            "--no-progress",
        ])
        .output()
        .expect("run wirelens bench live");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench live failed ({}):\n{stderr}",
        out.status
    );
    let r: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", String::from_utf8_lossy(&out.stdout)));
    eprintln!("{stderr}");
    assert_eq!(r["bench"], "live");
    assert_eq!(u(&r["lab"], "queues"), 2);
    assert_eq!(r["lab"]["generator_bind"], "copy", "veth: AF_XDP copy mode");

    let modes = r["modes"].as_array().expect("modes");
    let names: Vec<&str> = modes.iter().map(|m| m["mode"].as_str().unwrap()).collect();
    assert_eq!(names, ["drop", "run", "tcpdump"]);
    for m in modes {
        let name = m["mode"].as_str().unwrap();
        let offered = u(m, "offered_packets");
        let received = u(m, "received_packets");
        let gen = m["generator"].as_array().expect("generator");
        assert_eq!(gen.len(), 2, "{name}: one generator per queue");
        let completed: u64 = gen.iter().map(|g| u(g, "completed")).sum();
        let submitted: u64 = gen.iter().map(|g| u(g, "submitted")).sum();
        assert_eq!(offered, completed, "{name}: offered = completed frames");
        assert!(completed <= submitted, "{name}: completed <= submitted");
        for g in gen {
            assert!(
                u(g, "completed") > 0,
                "{name}: queue {} sent nothing",
                g["queue"]
            );
        }
        // Paced at 20k pps for 2 s. The upper bound checks the pacing; the
        // lower one is loose: an XDP receiver that falls behind slows the
        // generator down (veth stops the sender's queue), and a debug build
        // on a loaded machine falls behind.
        assert!(
            (10_000..=44_000).contains(&offered),
            "{name}: offered {offered} at 20k pps for 2 s"
        );
        assert!(received > 0, "{name}: received nothing");
        assert!(
            received <= offered,
            "{name}: received {received} > offered {offered}"
        );
        assert_eq!(u(m, "lost_packets"), offered - received, "{name}: lost");
        let secs = f(m, "seconds");
        assert!((1.9..3.5).contains(&secs), "{name}: {secs} s");
        let rel = (f(m, "received_pps") - received as f64 / secs).abs();
        assert!(rel < 1.0, "{name}: received_pps = received / seconds");
        let c = &m["counters"];
        match name {
            "drop" => {
                let seen = u(c, "xdp_seen");
                let redirected = u(c, "xdp_redirected");
                assert!(seen <= offered, "drop: XDP saw {seen} > offered {offered}");
                assert!(redirected <= seen);
                assert!(
                    received <= redirected,
                    "drop: received {received} > redirected {redirected}"
                );
                assert_eq!(u(c, "xdp_passed"), 0, "drop: every frame is IP");
            }
            "run" => {
                let frames = u(c, "queue_frames");
                let redirected = u(c, "xdp_redirected");
                let seen = u(c, "xdp_seen");
                assert_eq!(received, u(c, "packets_analysed"));
                assert!(
                    received <= frames,
                    "run: analysed {received} > read {frames}"
                );
                assert!(
                    frames <= redirected,
                    "run: read {frames} > redirected {redirected}"
                );
                assert!(redirected <= seen && seen <= offered, "run: {c}");
                assert!(u(c, "flows") > 0, "run: no flows analysed");
            }
            "tcpdump" => {
                assert_eq!(received, u(c, "captured"));
                let by_filter = u(c, "received_by_filter");
                assert!(received <= by_filter, "tcpdump: {c}");
                assert!(
                    by_filter <= offered,
                    "tcpdump: {by_filter} > offered {offered}"
                );
            }
            other => panic!("unexpected mode {other}"),
        }
    }
    let x = &r["ratios"];
    let rd = f(x, "run_over_drop");
    let rt = f(x, "run_over_tcpdump");
    let pps = |i: usize| f(&modes[i], "received_pps");
    assert!((rd - pps(1) / pps(0)).abs() < 1e-9);
    assert!((rt - pps(1) / pps(2)).abs() < 1e-9);
    assert_eq!(x["run_over_drop_met"].as_bool(), Some(rd >= 0.9));

    // The lab is gone: both namespaces, and with them the veth pair.
    let ns = r["lab"]["namespaces"].as_array().expect("namespaces");
    let list = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let list = String::from_utf8_lossy(&list.stdout);
    for n in ns {
        let n = n.as_str().unwrap();
        assert!(n.starts_with("wl"), "lab names start with wl: {n}");
        assert!(
            !list.lines().any(|l| l.split_whitespace().next() == Some(n)),
            "namespace {n} left behind:\n{list}"
        );
        assert!(!std::path::Path::new(&format!("/run/netns/{n}")).exists());
    }
}

/// Not root, or a bad option: a clear error, and no lab is created.
#[test]
fn bench_live_rejects_bad_options() {
    let out = Command::new(BIN)
        .args(["bench", "live", "--size", "20", "--format", "json"])
        .output()
        .expect("run wirelens bench live");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--size"), "{err}");
    assert!(out.stdout.is_empty());
}
