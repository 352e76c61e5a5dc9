//! "Since when" in the namespace lab, one capture (scripts/lab.sh scenario
//! `since`, about 12-22 s of traffic): a real paced TCP upload whose RTT the
//! lab's forwarder steps from 40 to 120 ms, and on another service 50
//! clients that connect at 10x their normal rate, both from just after a 10 s
//! boundary (truth.json says when). `analyze --interval 1s` must show the two
//! RTT levels per interval and raise `rtt_spike` since the step and
//! `connection_surge` since the surge, not before; the same capture pushed to
//! a `ctrl serve` of the test's own must raise both there, since their 10 s
//! bucket. The rules run at their default factors (the RTT step measures
//! ~2.8x in p90s: the default rtt_factor is 2.5). The control plane runs
//! with `--min-baseline 1`: one normal 10 s bucket before the step instead of
//! three keeps the capture short (the three-bucket default is held by
//! tests/ctrl_e2e.rs). Root only (SKIP otherwise).
//!
//! Run: `cargo test --test interval_lab` (about 30 s; the lab's names start
//! with `wlwy`).

mod lab;
mod support;

use std::process::Command;

use serde_json::Value;
use support::CtrlServer;

const SEC: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;
const SERVICE: &str = "198.18.2.2:24816/tcp";
const SURGE_SERVICE: &str = "198.18.2.2:24820/tcp";

fn wirelens(args: &[&str]) -> (String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_wirelens"))
        .args(args)
        .env_remove("WIRELENS_CTRL")
        .output()
        .expect("run wirelens");
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    );
    assert!(o.status.success(), "{args:?}: {}\n{err}", o.status);
    (out, err)
}

/// "... since +12.3s ..." -> 12.3
fn since_s(line: &str) -> f64 {
    line.split("since +")
        .nth(1)
        .and_then(|r| r.split('s').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no since in {line:?}"))
}

#[test]
fn rtt_step_40_to_120_ms_and_connection_surge_since_when() {
    if lab::skip("interval_lab::rtt_step_40_to_120_ms_and_connection_surge_since_when") {
        return;
    }
    let cap = lab::run_scenario_tagged("since", "wy");
    let pcap = cap.pcap.to_str().unwrap().to_string();
    let step = cap
        .truth
        .pointer("/forwarder/step/at_ns")
        .and_then(Value::as_u64)
        .expect("the forwarder stepped the delay");
    let surge = cap
        .truth
        .pointer("/traffic/surge/started_ns")
        .and_then(Value::as_u64)
        .expect("the lab noted when the surge began");
    assert_eq!(
        cap.truth
            .pointer("/tcpdump/dropped_by_kernel")
            .and_then(Value::as_u64),
        Some(0),
        "the tap lost packets"
    );
    let conns = |name: &str| {
        let c = cap
            .truth
            .pointer(&format!("/traffic/{name}/conns"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        (c.len(), c.iter().filter(|c| c["error"].is_null()).count())
    };
    let (normal, normal_ok) = conns("normal");
    assert!(
        normal >= 100 && normal_ok == normal,
        "normal: {normal_ok}/{normal}"
    );
    assert_eq!(conns("surge"), (600, 600), "the surge's connections");

    // Interval RTT within 10 %: 40 ms before the step, 120 ms from 200 ms after it.
    let (out, _) = wirelens(&["analyze", &pcap, "--interval", "1s", "--format", "ndjson"]);
    let recs: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON"))
        .collect();
    let t0 = recs
        .last()
        .and_then(|s| s["first_ns"].as_u64())
        .expect("summary first_ns");
    let (mut before, mut after) = (0, 0);
    for i in recs
        .iter()
        .filter(|r| r["type"] == "interval" && r["server"]["port"] == 24816)
    {
        let (s, e) = (
            i["start_ns"].as_u64().unwrap(),
            i["end_ns"].as_u64().unwrap(),
        );
        let rtt = &i["c2s"]["rtt"];
        if rtt["n"].as_u64().unwrap_or(0) < 5 {
            continue;
        }
        let p50 = rtt["p50_ns"].as_u64().unwrap();
        if e <= step {
            assert!(
                p50.abs_diff(40 * MS) <= 4 * MS,
                "+{}s: p50 {p50}",
                (s - t0) / SEC
            );
            before += 1;
        } else if s >= step + 200 * MS {
            assert!(
                p50.abs_diff(120 * MS) <= 12 * MS,
                "+{}s: p50 {p50}",
                (s - t0) / SEC
            );
            after += 1;
        }
    }
    assert!(
        before >= 3 && after >= 4,
        "{before} intervals before, {after} after"
    );

    // The capture's own timeline: rtt_spike since the step, connection_surge
    // since the surge (within one interval), at the default factors.
    let (table, _) = wirelens(&["analyze", &pcap, "--interval", "1s"]);
    let spike = table
        .lines()
        .find(|l| l.contains("rtt_spike") && l.contains(SERVICE))
        .unwrap_or_else(|| panic!("no rtt_spike in\n{table}"));
    let since = t0 as f64 + since_s(spike) * 1e9;
    assert!(
        (since - step as f64).abs() <= 1.2e9,
        "{spike}: since {since}, step {step}"
    );
    assert!(table.contains("rtt c2s p50"), "{table}");
    let lines: Vec<&str> = table
        .lines()
        .filter(|l| l.contains("connection_surge") && l.contains(SURGE_SERVICE))
        .collect();
    assert_eq!(lines.len(), 1, "one surge, not before it:\n{table}");
    let surge_since = t0 as f64 + since_s(lines[0]) * 1e9;
    assert!(
        (surge_since - surge as f64).abs() <= 1.2e9,
        "{}: since {surge_since}, surge {surge}",
        lines[0]
    );
    assert!(table.contains("from 50 clients"), "{table}");

    // Pushed: the control plane buckets it in time and alerts since the
    // step's and the surge's bucket.
    let dir = lab::work_root().join("since-ctrl");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tokens"), "lab-node:token-lab-1\n").unwrap();
    let srv = CtrlServer::start_with(&dir, &dir.join("ctrl.db"), &["--min-baseline", "1"]);
    let tokens = dir.join("tokens");
    let (_, err) = wirelens(&[
        "analyze",
        &pcap,
        "--format",
        "ndjson",
        "--push",
        &srv.url,
        "--node",
        "lab-node",
        "--token-file",
        tokens.to_str().unwrap(),
    ]);
    assert!(err.contains("accepted"), "{err}");
    let (out, _) = wirelens(&["alerts", "--ctrl", &srv.url, "--format", "json"]);
    let alerts: Vec<Value> = serde_json::from_str(&out).expect("alerts JSON");
    let a = alerts
        .iter()
        .find(|a| a["rule"] == "rtt_spike" && a["service"] == SERVICE)
        .unwrap_or_else(|| panic!("no rtt_spike at the control plane: {alerts:#?}"));
    let since = a["since_ns"].as_u64().unwrap();
    assert!(
        since <= step + 10 * SEC && step < since + 10 * SEC,
        "since {since}, step {step}: {a:#}"
    );
    let ratio = a["evidence"]["ratio"].as_f64().unwrap();
    assert!((2.4..=3.5).contains(&ratio), "{a:#}");
    let s: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["rule"] == "connection_surge")
        .collect();
    assert_eq!(s.len(), 1, "{alerts:#?}");
    assert_eq!(s[0]["service"], SURGE_SERVICE);
    let surge_at = s[0]["since_ns"].as_u64().unwrap();
    assert!(
        surge_at.abs_diff(surge) < 10 * SEC,
        "since {surge_at}, surge {surge}: {:#}",
        s[0]
    );
    let surge_ratio = s[0]["evidence"]["ratio"].as_f64().unwrap();
    assert!(surge_ratio >= 5.0, "{:#}", s[0]);
    lab::visible(&format!(
        "interval_lab: step at +{:.1}s; analyze: {spike}; ctrl: since {:+.1}s from the step, ratio {ratio}; \
         surge: analyze: {}; ctrl: since {:+.1}s from the surge, {}",
        (step - t0) as f64 / 1e9,
        (since as f64 - step as f64) / 1e9,
        lines[0].trim(),
        (surge_at as f64 - surge as f64) / 1e9,
        s[0]["summary"]
    ));
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
    cap.discard();
}
