//! wirelens-probe: synthetic probes and NIC counters.
//!
//! - [`twamp`]: the TWAMP-light test packets of RFC 5357 (codec, sans-IO);
//! - [`session`]: the Session-Sender's accounting (loss split into upstream
//!   and downstream, reordering, duplicates, RTT net of the reflector's dwell,
//!   IPDV, the per-interval series), sans-IO on a virtual clock;
//! - [`reflector`]: a stateful TWAMP-light Session-Reflector;
//! - [`send`] and [`pmtu`]: the UDP loops of `wirelens probe send` and
//!   `wirelens probe pmtu` (path MTU by confirmed probes, black-hole detection);
//! - [`monitor`]: continuous probing in windows for `wirelens run --probe`;
//! - [`nic`]: kernel and driver (ethtool) counters of an interface.
//!
//! The unsafe code (socket options, `recvmsg` control messages, the ethtool
//! ioctl) is all in the private `sys` module; every other module forbids it.
#![deny(unsafe_code)]

pub mod monitor;
pub mod nic;
pub mod pmtu;
pub mod reflector;
pub mod send;
pub mod session;
#[expect(
    unsafe_code,
    reason = "socket options, recvmsg control messages and the ethtool ioctl"
)]
mod sys;
pub mod twamp;

pub use nic::{read_counters, Counter, NicCounters};
pub use session::{Report, SenderConfig, SenderSession};
pub use sys::now_ns;

/// Errors of the probe commands.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "no reply from {target} in {} s: is a TWAMP-light reflector running there? \
         (wirelens probe reflect --listen ADDR:PORT){}",
        (waited_ns + 500_000_000) / 1_000_000_000,
        if *malformed > 0 { format!("; {malformed} datagrams came back that were not TWAMP replies") } else { String::new() }
    )]
    NoReply {
        target: String,
        waited_ns: u64,
        malformed: u64,
    },
    #[error(
        "{target} answered with ICMP port unreachable: nothing listens there; \
         start a reflector (wirelens probe reflect --listen ADDR:PORT) or check the port"
    )]
    Refused { target: String },
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
}
