//! "Since when" in the namespace lab: a real paced TCP upload whose RTT the
//! lab's forwarder steps from 40 to 120 ms (scripts/lab.sh scenario
//! `rttstep`; the forwarder records when). `analyze --interval 1s` must show
//! the two levels per interval and raise `rtt_spike` since the step, and the
//! same capture pushed to a `ctrl serve` of the test's own must raise it
//! there, since the step's 10 s bucket. The rule runs at `--rtt-factor 2.5`
//! on both: the base RTT's p90 sits ~15 % above its p50 (delayed ACKs,
//! forwarder jitter), so a true 3x step measures ~2.8x in p90s. Root only
//! (SKIP otherwise).
//!
//! A second scenario, `surge`: 50 clients open connections at 10x their
//! normal rate for 10 s; `connection_surge` must fire since then, not before.
//!
//! Run: `cargo test --test interval_lab` (about two minutes; the lab's names
//! start with `wliv`).

mod lab;
mod support;

use std::process::Command;

use serde_json::Value;
use support::CtrlServer;

const SEC: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;
const SERVICE: &str = "198.18.2.2:24816/tcp";

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
fn rtt_step_40_to_120_ms_since_when() {
    if lab::skip("interval_lab::rtt_step_40_to_120_ms_since_when") {
        return;
    }
    let cap = lab::run_scenario_tagged("rttstep", "iv");
    let pcap = cap.pcap.to_str().unwrap().to_string();
    let step = cap
        .truth
        .pointer("/forwarder/step/at_ns")
        .and_then(Value::as_u64)
        .expect("the forwarder stepped the delay");
    assert_eq!(
        cap.truth
            .pointer("/tcpdump/dropped_by_kernel")
            .and_then(Value::as_u64),
        Some(0),
        "the tap lost packets"
    );

    // Interval RTT within 10 %: 40 ms before the step, 120 ms from one RTT after it.
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
        before >= 25 && after >= 10,
        "{before} intervals before, {after} after"
    );

    // The capture's own timeline: rtt_spike since the step (within one interval).
    let (table, _) = wirelens(&["analyze", &pcap, "--interval", "1s", "--rtt-factor", "2.5"]);
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

    // Pushed: the control plane buckets it in time and alerts since the step.
    let dir = lab::work_root().join("rttstep-ctrl");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tokens"), "lab-node:token-lab-1\n").unwrap();
    let srv = CtrlServer::start_with(&dir, &dir.join("ctrl.db"), &["--rtt-factor", "2.5"]);
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
    assert!((2.5..=3.5).contains(&ratio), "{a:#}");
    lab::visible(&format!(
        "interval_lab: step at +{:.1}s; analyze: {spike}; ctrl: since {} ({:+.1}s from the step), ratio {ratio}",
        (step - t0) as f64 / 1e9,
        since,
        (since as f64 - step as f64) / 1e9
    ));
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
    cap.discard();
}

#[test]
fn connection_surge_from_50_clients_since_the_surge_not_before() {
    if lab::skip("interval_lab::connection_surge_from_50_clients_since_the_surge_not_before") {
        return;
    }
    let cap = lab::run_scenario_tagged("surge", "iv");
    let pcap = cap.pcap.to_str().unwrap().to_string();
    let surge = cap
        .truth
        .pointer("/traffic/surge/started_ns")
        .and_then(Value::as_u64)
        .expect("the lab noted when the surge began");
    let ok = |name: &str| {
        cap.truth
            .pointer(&format!("/traffic/{name}/conns"))
            .and_then(Value::as_array)
            .map_or(0, |c| c.iter().filter(|c| c["error"].is_null()).count())
    };
    assert_eq!(
        (ok("normal"), ok("surge")),
        (400, 1000),
        "the lab's connections"
    );

    // The capture's own timeline, 1 s intervals.
    let (table, _) = wirelens(&["analyze", &pcap, "--interval", "1s", "--format", "table"]);
    let (nd, _) = wirelens(&["analyze", &pcap, "--format", "ndjson"]);
    let t0 = nd
        .lines()
        .last()
        .and_then(|l| serde_json::from_str::<Value>(l).ok())
        .and_then(|s| s["first_ns"].as_u64())
        .expect("summary first_ns");
    let lines: Vec<&str> = table
        .lines()
        .filter(|l| l.contains("connection_surge") && l.contains(SERVICE))
        .collect();
    assert_eq!(lines.len(), 1, "one surge, not before it:\n{table}");
    let since = t0 as f64 + since_s(lines[0]) * 1e9;
    assert!(
        (since - surge as f64).abs() <= 1.2e9,
        "{}: since {since}, surge {surge}",
        lines[0]
    );
    assert!(table.contains("from 50 clients"), "{table}");

    // Pushed (10 s intervals): the control plane's alert, since the surge's bucket.
    let dir = lab::work_root().join("surge-ctrl");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tokens"), "lab-node:token-lab-1\n").unwrap();
    let srv = CtrlServer::start(&dir, &dir.join("ctrl.db"));
    let tokens = dir.join("tokens");
    wirelens(&[
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
    let (out, _) = wirelens(&["alerts", "--ctrl", &srv.url, "--format", "json"]);
    let alerts: Vec<Value> = serde_json::from_str(&out).expect("alerts JSON");
    let a: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["rule"] == "connection_surge")
        .collect();
    assert_eq!(a.len(), 1, "{alerts:#?}");
    assert_eq!(a[0]["service"], SERVICE);
    let since = a[0]["since_ns"].as_u64().unwrap();
    assert!(
        since.abs_diff(surge) < 10 * SEC,
        "since {since}, surge {surge}: {:#}",
        a[0]
    );
    let ratio = a[0]["evidence"]["ratio"].as_f64().unwrap();
    assert!(ratio >= 5.0, "{:#}", a[0]);
    lab::visible(&format!(
        "interval_lab: surge at +{:.1}s; analyze: {}; ctrl: since {:+.1}s from the surge, {}",
        (surge - t0) as f64 / 1e9,
        lines[0].trim(),
        (since as f64 - surge as f64) / 1e9,
        a[0]["summary"]
    ));
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
    cap.discard();
}
