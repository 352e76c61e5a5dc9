//! The Session-Sender's UDP loop around [`SenderSession`].
#![forbid(unsafe_code)]

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use crate::reflector::is_timeout;
use crate::session::{Report, SenderConfig, SenderSession};
use crate::sys;
use crate::ProbeError;

/// Options of [`run`].
#[derive(Debug, Clone)]
pub struct SendOptions {
    pub target: SocketAddr,
    /// DSCP of the probes (0..=63).
    pub dscp: u8,
    pub session: SenderConfig,
}

/// Runs one probe session against the reflector at `opts.target`; returns
/// when the session is over (bounded by its duration / count plus the hello
/// and the final timeout), never later.
pub fn run(opts: &SendOptions) -> Result<Report, ProbeError> {
    let target = opts.target;
    let v6 = target.is_ipv6();
    let io_err = |what: &'static str| move |source: io::Error| ProbeError::Io { what, source };
    let bind: SocketAddr = if v6 {
        "[::]:0".parse().expect("literal")
    } else {
        "0.0.0.0:0".parse().expect("literal")
    };
    let sock = UdpSocket::bind(bind).map_err(io_err("bind"))?;
    sock.connect(target).map_err(io_err("connect"))?;
    sys::enable_rx_meta(&sock, v6).map_err(io_err("enable timestamps"))?;
    if let Some(ttl) = opts.session.ttl {
        sys::set_ttl(&sock, v6, ttl).map_err(io_err("set TTL"))?;
    }
    if opts.dscp > 0 {
        sys::set_tos(&sock, v6, opts.dscp << 2).map_err(io_err("set DSCP"))?;
    }
    let mut session = SenderSession::new(opts.session.clone(), sys::now_ns());
    let mut buf = Vec::with_capacity(65536);
    let mut rbuf = vec![0u8; 65536];
    let mut refused = 0u64;
    loop {
        while session.poll_transmit(sys::now_ns(), &mut buf).is_some() {
            match sock.send(&buf) {
                Ok(_) => {}
                // ICMP port unreachable for an earlier probe, reported now.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => refused += 1,
                Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                    return Err(ProbeError::Io {
                        what: "send (probe larger than the interface MTU: lower --size)",
                        source: e,
                    })
                }
                // A full socket buffer or a transient route error: the probe
                // counts as sent and lost.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::NetworkUnreachable => {
                    return Err(ProbeError::Io {
                        what: "send",
                        source: e,
                    })
                }
                Err(_) => {}
            }
        }
        if session.is_done() {
            break;
        }
        let Some(deadline) = session.poll_timeout() else {
            break;
        };
        let now = sys::now_ns();
        if deadline > now {
            sock.set_read_timeout(Some(Duration::from_nanos((deadline - now).max(1000))))
                .map_err(io_err("set timeout"))?;
            match sys::recv_meta(&sock, &mut rbuf) {
                Ok(m) => {
                    let t4 = m.rx_ns.unwrap_or_else(sys::now_ns);
                    session.handle_reply(t4, &rbuf[..m.len]);
                }
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => refused += 1,
                Err(e) => {
                    return Err(ProbeError::Io {
                        what: "recv",
                        source: e,
                    })
                }
            }
        }
    }
    if let Some(nr) = session.no_reply() {
        if refused > 0 {
            return Err(ProbeError::Refused {
                target: target.to_string(),
            });
        }
        return Err(ProbeError::NoReply {
            target: target.to_string(),
            waited_ns: nr.waited_ns,
            malformed: nr.malformed,
        });
    }
    Ok(session.report())
}
