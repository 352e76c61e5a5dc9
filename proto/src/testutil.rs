//! Record and window builders for tests (feature `test-util`): one flow
//! between two `ip:port`s and one probe window with given RTTs and losses.

use wirelens_dataplane::report::{Direction, Endpoint, FlowRecord, Proto, FLOW_SCHEMA};
use wirelens_dataplane::stats::Histogram;

use crate::report::{ProbeState, ProbeWindow};

/// A TCP flow `client` -> `server` (both `ip:port`; panics on a bad address)
/// seen from `first_ns` to `last_ns`, all counters zero.
pub fn flow(client: &str, server: &str, first_ns: u64, last_ns: u64) -> FlowRecord {
    let ep = |s: &str| {
        let sa: std::net::SocketAddr = s.parse().unwrap();
        Endpoint {
            ip: sa.ip(),
            port: sa.port(),
        }
    };
    FlowRecord {
        kind: "flow".into(),
        schema: FLOW_SCHEMA.into(),
        proto: Proto::Tcp,
        client: ep(client),
        server: ep(server),
        vlan: None,
        first_ns,
        last_ns,
        c2s: Direction::default(),
        s2c: Direction::default(),
        tcp: None,
        pmtu: None,
    }
}

/// A probe window of 10 s to `target` from `start_ns`, one reply per RTT in
/// `rtts`, `up`/`down` lost on the way out/back.
pub fn window(target: &str, start_ns: u64, rtts: &[u64], up: u64, down: u64) -> ProbeWindow {
    let mut rtt = Histogram::new();
    for &r in rtts {
        rtt.record(r);
    }
    let received = rtts.len() as u64;
    ProbeWindow {
        target: target.into(),
        start_ns,
        end_ns: start_ns + 10_000_000_000,
        interval_ns: 100_000_000,
        size: 128,
        dscp: 0,
        state: ProbeState::Ok,
        error: None,
        sent: received + up + down,
        received,
        lost: up + down,
        lost_up: up,
        lost_down: down,
        lost_unattributed: 0,
        late: 0,
        duplicates: 0,
        reordered: 0,
        rtt,
        ipdv: Histogram::new(),
    }
}
