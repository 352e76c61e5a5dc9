//! Signs lab: real captures of the Linux TCP stack through the namespace lab
//! (scripts/lab.sh), each scenario with one injected sign and its truth, and
//! `wirelens analyze` expected to name it: a hole held open a known time by
//! the forwarder (head-of-line time within one RTT), return traffic that
//! bypasses the tap (`tcp.path: "one_way"`), an MSS-clamping router
//! (iptables TCPMSS), a TTL change mid-flow and ECN bleaching (forwarder).
//! Root only (SKIP otherwise).
//!
//! Run: `cargo test --test signs_lab -- --test-threads=1`
//! (`WL_LAB_KEEP=1` keeps the captures; see tests/lab_accuracy.rs.)

mod lab;
mod support;

use serde_json::Value;

const S4: &str = "198.18.2.2";
const PORT: u16 = 24816;
const MS: u64 = 1_000_000;
/// The lab's RTT: 10 ms each way through the forwarder.
const RTT_NS: u64 = 20 * MS;

/// Runs `scenario`, analyzes its capture and returns the data flow to the
/// lab server with the summary; `None` when the lab cannot run here.
fn flow_of(scenario: &str) -> Option<(lab::Capture, Value, Value)> {
    if lab::skip(&format!("signs_lab::{scenario}")) {
        return None;
    }
    let cap = lab::run_scenario(scenario);
    let a = lab::wirelens::analyze(&cap.pcap).unwrap_or_else(|e| panic!("{scenario}: {e}"));
    let server: std::net::IpAddr = S4.parse().unwrap();
    let f = a
        .flows
        .iter()
        .find(|f| {
            f["proto"] == "tcp" && lab::wirelens::endpoint(&f["server"]) == Some((server, PORT))
        })
        .unwrap_or_else(|| {
            panic!(
                "{scenario}: no flow to {S4}:{PORT} in {}",
                cap.pcap.display()
            )
        })
        .clone();
    Some((cap, f, a.summary))
}

fn u(v: &Value, p: &str) -> u64 {
    v.pointer(p)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{p} missing in {v}"))
}

#[test]
fn hol() {
    let Some((cap, f, _)) = flow_of("hol") else {
        return;
    };
    let hold = &cap.truth["forwarder"]["hold"];
    let held_ns = (hold["ms"].as_f64().expect("the forwarder held a segment") * 1e6) as u64;
    let max = u(&f, "/s2c/hol/open_ns_max");
    lab::visible(&format!(
        "signs_lab::hol: held {} ms ({} resends held with it), hol {:?}",
        held_ns / MS,
        hold["repeats"],
        f["s2c"]["hol"]
    ));
    assert!(u(&f, "/s2c/hol/holes") >= 1, "{}", f["s2c"]);
    assert!(
        max.abs_diff(held_ns) <= RTT_NS,
        "the held hole stayed open {max} ns, the forwarder held it {held_ns} ns"
    );
    assert!(u(&f, "/s2c/hol/open_ns_total") >= max);
    assert_eq!(f["tcp"]["path"], "two_way");
    cap.discard();
}

#[test]
fn oneway() {
    let Some((cap, f, summary)) = flow_of("oneway") else {
        return;
    };
    assert_eq!(
        u(&f, "/s2c/packets"),
        0,
        "the tap saw s2c packets: {}",
        f["s2c"]
    );
    assert!(u(&f, "/c2s/payload_bytes") >= 500_000);
    assert_eq!(f["tcp"]["path"], "one_way", "{}", f["tcp"]);
    assert!(u(&summary, "/tcp/one_way_flows") >= 1, "{}", summary["tcp"]);
    cap.discard();
}

#[test]
fn mssclamp() {
    let Some((cap, f, _)) = flow_of("mssclamp") else {
        return;
    };
    let t = &f["tcp"];
    assert_eq!(
        t["mss"]["client"], 1460,
        "the tap sees the client's SYN unclamped"
    );
    assert_eq!(t["mss"]["server"], 1200, "and the server's SYN/ACK clamped");
    assert_eq!(t["mss_clamped"]["client"], false);
    assert_eq!(t["mss_clamped"]["server"], true);
    assert_eq!(t["path"], "two_way");
    cap.discard();
}

#[test]
fn ttlchange() {
    let Some((cap, f, _)) = flow_of("ttlchange") else {
        return;
    };
    assert!(
        cap.truth["forwarder"]["ttl_at_ns"].is_u64(),
        "the TTL was set"
    );
    // the server's 64 less the router's hop, then the forwarder's 50 less it
    assert_eq!(u(&f, "/s2c/ttl/changes"), 1, "{}", f["s2c"]["ttl"]);
    assert_eq!(f["s2c"]["ttl"]["values"], serde_json::json!([63, 49]));
    assert_eq!(u(&f, "/c2s/ttl/changes"), 0);
    cap.discard();
}

#[test]
fn ecnbleach() {
    let Some((cap, f, _)) = flow_of("ecnbleach") else {
        return;
    };
    let t = &f["tcp"];
    assert_eq!(t["ecn_ok"], true, "ECN negotiated: {t}");
    assert_eq!(t["ecn_bleached"]["server"], true, "{t}");
    assert_eq!(t["ecn_bleached"]["client"], false, "{t}");
    cap.discard();
}
