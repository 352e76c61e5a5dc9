//! The one piece of I/O in this crate: an [`Encoder`] in front of a
//! connected UDP socket, counting what went out and what failed. Shared by
//! `analyze --ipfix` and `run --ipfix`; the encoder itself stays sans-IO.
//!
//! UDP gives no delivery guarantee: a message the kernel refuses (e.g.
//! ECONNREFUSED after an ICMP port unreachable, ENOBUFS) is counted in
//! [`SendStats::send_errors`] with its records in
//! [`SendStats::records_failed`], never retried: a retried IPFIX message
//! would repeat its sequence number.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};

use wirelens_dataplane::report::FlowRecord;

use crate::{ConfigError, Encoder, EncoderConfig, Message};

/// What an exporter sent and failed to send.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendStats {
    pub messages_sent: u64,
    pub bytes_sent: u64,
    pub records_sent: u64,
    pub template_sets: u64,
    pub send_errors: u64,
    pub records_failed: u64,
    /// Records no template fits (see [`crate::EncoderStats::skipped`]).
    pub records_skipped: u64,
}

/// Why an exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum ExporterError {
    #[error("--ipfix {0:?}: expected HOST:PORT")]
    Target(String),
    #[error("--ipfix {target}: {source}")]
    Resolve { target: String, source: io::Error },
    #[error("--ipfix {target}: UDP socket: {source}")]
    Socket { target: String, source: io::Error },
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// IPFIX over UDP to one collector.
#[derive(Debug)]
pub struct UdpExporter {
    sock: UdpSocket,
    enc: Encoder,
    peer: SocketAddr,
    stats: SendStats,
    last_error: Option<io::Error>,
}

impl UdpExporter {
    /// Resolves `target` (`HOST:PORT`, `[V6]:PORT`) and connects a UDP
    /// socket to its first address.
    pub fn connect(target: &str, cfg: EncoderConfig) -> Result<UdpExporter, ExporterError> {
        let enc = Encoder::new(cfg)?;
        if !target.contains(':') {
            return Err(ExporterError::Target(target.to_string()));
        }
        let peer = target
            .to_socket_addrs()
            .map_err(|source| ExporterError::Resolve {
                target: target.to_string(),
                source,
            })?
            .next()
            .ok_or_else(|| ExporterError::Target(target.to_string()))?;
        let local: SocketAddr = if peer.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket_err = |source| ExporterError::Socket {
            target: target.to_string(),
            source,
        };
        let sock = UdpSocket::bind(local).map_err(socket_err)?;
        sock.connect(peer).map_err(socket_err)?;
        Ok(UdpExporter {
            sock,
            enc,
            peer,
            stats: SendStats::default(),
            last_error: None,
        })
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// One data record; sends the message it closes, if any.
    pub fn push(&mut self, rec: &FlowRecord, now_ns: u64) {
        if let Some(m) = self.enc.push(rec, now_ns) {
            self.send(m);
        }
    }

    /// Sends what is waiting in the message being filled.
    pub fn flush(&mut self, now_ns: u64) {
        if let Some(m) = self.enc.flush(now_ns) {
            self.send(m);
        }
    }

    /// Flushes, and sends the templates alone when they are due (an idle
    /// exporter still refreshes them, RFC 7011 section 8.1).
    pub fn tick(&mut self, now_ns: u64) {
        self.flush(now_ns);
        if self.enc.templates_due(now_ns) {
            for m in self.enc.template_message(now_ns) {
                self.send(m);
            }
        }
    }

    pub fn stats(&self) -> SendStats {
        SendStats {
            template_sets: self.enc.stats().template_sets,
            records_skipped: self.enc.stats().skipped,
            ..self.stats
        }
    }

    /// The error of the last failed send since the previous call.
    pub fn take_error(&mut self) -> Option<io::Error> {
        self.last_error.take()
    }

    fn send(&mut self, m: Message) {
        match self.sock.send(&m.bytes) {
            Ok(_) => {
                self.stats.messages_sent += 1;
                self.stats.bytes_sent += m.bytes.len() as u64;
                self.stats.records_sent += u64::from(m.records);
            }
            Err(e) => {
                self.stats.send_errors += 1;
                self.stats.records_failed += u64::from(m.records);
                self.last_error = Some(e);
            }
        }
    }
}
