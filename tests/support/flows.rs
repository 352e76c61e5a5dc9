//! The flow-record comparison of the live lab tests: the daemon's `/flows`
//! against `wirelens analyze` of a capture of the same packets, counter for
//! counter.

use std::collections::BTreeMap;

use serde_json::Value;

/// The TCP flow records (`/flows` or `analyze --format ndjson` lines) of
/// service `server:port` from `client`, by client port.
pub fn flows_of(ndjson: &str, client: &str, server: &str, port: u16) -> BTreeMap<u64, Value> {
    ndjson
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["type"] == "flow"
                && v["proto"] == "tcp"
                && v["server"]["ip"] == server
                && v["server"]["port"] == port
                && v["client"]["ip"] == client
        })
        .map(|v| (v["client"]["port"].as_u64().unwrap(), v))
        .collect()
}

/// Counters that depend only on the packets and their order, not on the
/// timestamps (which differ: tcpdump stamps where it captures, the daemon
/// where it receives).
pub const EXACT: [&str; 16] = [
    "packets",
    "bytes",
    "payload_bytes",
    "syn",
    "synack",
    "fin",
    "rst",
    "retrans_seen",
    "hole_fill",
    "gaps",
    "dup_acks",
    "zero_window",
    "zero_window_events",
    "ecn_ce",
    "frags",
    "rtt.n",
];
/// Classifications that use time (within one RTT, 20 ms, sender silence):
/// reported, not asserted.
pub const TIMED: [&str; 5] = [
    "out_of_order",
    "retransmits",
    "fast_retransmits",
    "spurious_retransmits",
    "rto_retransmits",
];

pub fn field<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| &v[k])
}

/// Compares the daemon's records (`run`) with analyze's of a capture of
/// the same packets (`pcap`), by client port; returns (mismatches, notes).
pub fn compare(
    run: &BTreeMap<u64, Value>,
    pcap: &BTreeMap<u64, Value>,
) -> (Vec<String>, Vec<String>) {
    let mut bad = Vec::new();
    let mut notes = Vec::new();
    let keys = |m: &BTreeMap<u64, Value>| m.keys().copied().collect::<Vec<_>>();
    if keys(run) != keys(pcap) {
        bad.push(format!(
            "flows differ: run {:?} analyze {:?}",
            keys(run),
            keys(pcap)
        ));
    }
    for (port, a) in pcap {
        let Some(r) = run.get(port) else { continue };
        for dir in ["c2s", "s2c"] {
            for f in EXACT {
                let (x, y) = (field(&r[dir], f), field(&a[dir], f));
                if x != y {
                    bad.push(format!("client port {port} {dir}.{f}: run {x} analyze {y}"));
                }
            }
            for f in TIMED {
                let (x, y) = (field(&r[dir], f), field(&a[dir], f));
                if x != y {
                    notes.push(format!("client port {port} {dir}.{f}: run {x} analyze {y}"));
                }
            }
        }
        for f in [
            "tcp.state",
            "tcp.rst_from",
            "tcp.handshake.syn_count",
            "tcp.handshake.synack_count",
            "tcp.mss",
            "tcp.wscale",
            "tcp.sack_ok",
            "tcp.ts_ok",
            "tcp.ecn_ok",
            "vlan",
        ] {
            let (x, y) = (field(r, f), field(a, f));
            if x != y {
                bad.push(format!("client port {port} {f}: run {x} analyze {y}"));
            }
        }
        let t = |v: &Value| v["first_ns"].as_u64().unwrap_or(0) as i64;
        let skew = (t(r) - t(a)).abs();
        if skew > 500_000_000 {
            bad.push(format!(
                "client port {port} first_ns: run {} analyze {} ({skew} ns apart)",
                t(r),
                t(a)
            ));
        }
    }
    (bad, notes)
}

pub fn sum_dir(m: &BTreeMap<u64, Value>, dir: &str, f: &str) -> u64 {
    m.values()
        .map(|v| field(&v[dir], f).as_u64().unwrap_or(0))
        .sum()
}
