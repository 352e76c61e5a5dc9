//! wirelens protocol: what a node and the control plane both speak, with no
//! server, store or capture in it.
//!
//! * [`report`]: the node -> control plane report, schema `wirelens.report.v1`.
//! * [`codec`]: report bodies on the wire: JSON and the compact encoding, compressed.
//! * [`client`]: the blocking HTTP client: [`client::Pusher`] for nodes and
//!   [`client::Client`] for the CLI.
//! * [`auth`]: token files, constant-time comparison, `Authorization: Bearer`.
//! * [`metrics`]: the OpenMetrics encoding helpers both `/metrics` use.
//! * [`tls`]: the client's TLS (roots, identity) and the provider both ends use.
#![forbid(unsafe_code)]

pub mod auth;
pub mod client;
pub mod codec;
pub mod metrics;
pub mod report;
#[cfg(any(test, feature = "test-util"))]
pub mod testutil;
pub mod tls;

/// Now, in ns since the Unix epoch (for the I/O layers; the pure modules take time as input).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
