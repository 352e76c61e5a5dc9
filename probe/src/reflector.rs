//! The Session-Reflector: sans-IO [`Reflector`] plus the UDP loop [`serve`].
//!
//! Stateful TWAMP-light (RFC 5357 4.2, "stateful" mode): each sender (source
//! address and port) gets its own reply counter starting at 0, so the sender
//! can tell upstream from downstream loss (see [`crate::session`]). A sender
//! silent for [`IDLE_NS`] is forgotten (its next probe starts a new session at
//! 0); at most [`MAX_SESSIONS`] are kept, the stalest evicted first.
//!
//! Replies are as long as the request (at least the 41-octet header): the
//! symmetric size of RFC 6038, which RFC 5357 4.1.2's 27 octets of
//! recommended sender padding make possible. Padding is zeros.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use crate::sys;
use crate::twamp::{
    ErrorEstimate, Malformed, NtpTimestamp, ReflectorRepr, SenderPacket, SenderRepr,
    REFLECTOR_HEADER_LEN,
};

/// A sender silent this long starts a new session.
pub const IDLE_NS: u64 = 60 * 1_000_000_000;
/// Most sessions remembered at once.
pub const MAX_SESSIONS: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Session {
    next: u32,
    last_ns: u64,
}

/// Counters of a reflector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReflectorStats {
    pub reflected: u64,
    pub malformed: u64,
    pub sessions: u64,
}

/// The reflector's state: one reply counter per sender.
#[derive(Debug, Default)]
pub struct Reflector {
    sessions: HashMap<SocketAddr, Session>,
    stateless: bool,
    stats: ReflectorStats,
}

impl Reflector {
    pub fn new() -> Reflector {
        Reflector::default()
    }

    /// Copy the sender's sequence number instead of counting (RFC 5357's
    /// stateless mode; for tests of senders against such reflectors).
    pub fn set_stateless(&mut self, stateless: bool) {
        self.stateless = stateless;
    }

    pub fn stats(&self) -> ReflectorStats {
        self.stats
    }

    /// Builds the reply to `req` from `peer` into `out`. `t2`: when `req` was
    /// received; `t3`: when the reply will be sent (ns since the Unix epoch);
    /// `ttl`: the TTL / hop limit `req` arrived with (0 if unknown).
    pub fn reflect(
        &mut self,
        peer: SocketAddr,
        req: &[u8],
        t2: u64,
        t3: u64,
        ttl: u8,
        out: &mut Vec<u8>,
    ) -> Result<(), Malformed> {
        let pkt = match SenderPacket::new_checked(req) {
            Ok(p) => p,
            Err(e) => {
                self.stats.malformed += 1;
                return Err(e);
            }
        };
        let s = SenderRepr::parse(&pkt);
        let seq = if self.stateless {
            s.seq
        } else {
            self.next_seq(peer, t2)
        };
        ReflectorRepr {
            seq,
            timestamp: NtpTimestamp::from_unix_ns(t3),
            error_estimate: ErrorEstimate::LOCAL,
            receive_timestamp: NtpTimestamp::from_unix_ns(t2),
            sender_seq: s.seq,
            sender_timestamp: s.timestamp,
            sender_error_estimate: s.error_estimate,
            sender_ttl: ttl,
        }
        .emit(req.len().max(REFLECTOR_HEADER_LEN), out);
        self.stats.reflected += 1;
        Ok(())
    }

    fn next_seq(&mut self, peer: SocketAddr, now: u64) -> u32 {
        if let Some(s) = self.sessions.get_mut(&peer) {
            if now.saturating_sub(s.last_ns) < IDLE_NS {
                let seq = s.next;
                s.next = s.next.wrapping_add(1);
                s.last_ns = now;
                return seq;
            }
        }
        if self.sessions.len() >= MAX_SESSIONS {
            self.sessions
                .retain(|_, s| now.saturating_sub(s.last_ns) < IDLE_NS);
            if self.sessions.len() >= MAX_SESSIONS {
                if let Some(oldest) = self
                    .sessions
                    .iter()
                    .min_by_key(|(_, s)| s.last_ns)
                    .map(|(k, _)| *k)
                {
                    self.sessions.remove(&oldest);
                }
            }
        }
        self.stats.sessions += 1;
        self.sessions.insert(
            peer,
            Session {
                next: 1,
                last_ns: now,
            },
        );
        0
    }
}

/// Options of [`serve`].
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    /// Stop after this long (`None`: run until killed).
    pub duration: Option<Duration>,
    pub stateless: bool,
    /// Log new sessions and failed replies on stderr.
    pub verbose: bool,
}

/// Binds `opts.listen` and reflects until `opts.duration` ends (or forever).
/// `on_bound` learns the bound address (port 0 picks one).
pub fn serve(opts: &ServeOptions, on_bound: impl FnOnce(SocketAddr)) -> io::Result<ReflectorStats> {
    let sock = UdpSocket::bind(opts.listen).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot listen on udp {}: {e}", opts.listen),
        )
    })?;
    let v6 = opts.listen.is_ipv6();
    sys::enable_rx_meta(&sock, v6)?;
    on_bound(sock.local_addr()?);
    let deadline = opts.duration.map(|d| sys::now_ns() + d.as_nanos() as u64);
    let mut refl = Reflector::new();
    refl.set_stateless(opts.stateless);
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::with_capacity(2048);
    loop {
        let now = sys::now_ns();
        if let Some(d) = deadline {
            if now >= d {
                return Ok(refl.stats());
            }
            sock.set_read_timeout(Some(Duration::from_nanos((d - now).max(1000))))?;
        }
        let m = match sys::recv_meta(&sock, &mut buf) {
            Ok(m) => m,
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => continue,
            // ICMP errors for earlier replies (a sender that went away).
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
            Err(e) => return Err(e),
        };
        let t2 = m.rx_ns.unwrap_or(now);
        let t3 = sys::now_ns();
        let fresh = refl.stats().sessions;
        if refl
            .reflect(m.from, &buf[..m.len], t2, t3, m.ttl.unwrap_or(0), &mut out)
            .is_err()
        {
            continue;
        }
        let sent = sock.send_to(&out, m.from);
        if opts.verbose {
            // Logging must never stop the reflector (stderr may be closed).
            let mut err = io::stderr().lock();
            if refl.stats().sessions != fresh {
                let _ = writeln!(err, "wirelens probe reflect: new session from {}", m.from);
            }
            if let Err(e) = sent {
                let _ = writeln!(
                    err,
                    "wirelens probe reflect: reply to {} failed: {e}",
                    m.from
                );
            }
        }
    }
}

pub(crate) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twamp::ReflectorPacket;

    fn req(seq: u32, len: usize) -> Vec<u8> {
        let mut b = Vec::new();
        SenderRepr {
            seq,
            timestamp: NtpTimestamp::from_unix_ns(5_000_000_000),
            error_estimate: ErrorEstimate(0x0c01),
        }
        .emit(len, &mut b);
        b
    }

    #[test]
    fn counts_per_sender_and_copies_the_sender_fields() {
        let a: SocketAddr = "198.18.0.1:5000".parse().unwrap();
        let b: SocketAddr = "198.18.0.2:5000".parse().unwrap();
        let mut r = Reflector::new();
        let mut out = Vec::new();
        for (i, (peer, seq)) in [(a, 10), (a, 11), (b, 3), (a, 15)].iter().enumerate() {
            r.reflect(
                *peer,
                &req(*seq, 100),
                6_000_000_000,
                6_000_010_000,
                61,
                &mut out,
            )
            .unwrap();
            let p = ReflectorPacket::new_checked(&out[..]).unwrap();
            let rep = ReflectorRepr::parse(&p);
            let want = [0, 1, 0, 2][i];
            assert_eq!(rep.seq, want);
            assert_eq!(rep.sender_seq, *seq);
            assert_eq!(rep.sender_timestamp.to_unix_ns(), Some(5_000_000_000));
            assert_eq!(rep.sender_error_estimate, ErrorEstimate(0x0c01));
            assert_eq!(rep.sender_ttl, 61);
            assert_eq!(rep.dwell_ns(), Some(10_000));
            assert_eq!(out.len(), 100);
        }
        assert_eq!(r.stats().sessions, 2);
    }

    #[test]
    fn short_requests_get_a_full_header_and_garbage_none() {
        let mut r = Reflector::new();
        let mut out = Vec::new();
        let peer: SocketAddr = "[2001:db8::1]:1".parse().unwrap();
        r.reflect(peer, &req(0, 14), 1, 2, 0, &mut out).unwrap();
        assert_eq!(out.len(), REFLECTOR_HEADER_LEN);
        assert!(r.reflect(peer, &[1, 2, 3], 1, 2, 0, &mut out).is_err());
        assert_eq!(r.stats().malformed, 1);
    }

    #[test]
    fn idle_sessions_restart_at_zero() {
        let mut r = Reflector::new();
        let mut out = Vec::new();
        let peer: SocketAddr = "198.18.0.1:1".parse().unwrap();
        r.reflect(peer, &req(0, 41), 1, 2, 0, &mut out).unwrap();
        r.reflect(peer, &req(1, 41), 2, 3, 0, &mut out).unwrap();
        assert_eq!(ReflectorPacket::new_unchecked(&out[..]).seq(), 1);
        r.reflect(peer, &req(2, 41), 2 + IDLE_NS, 3 + IDLE_NS, 0, &mut out)
            .unwrap();
        assert_eq!(ReflectorPacket::new_unchecked(&out[..]).seq(), 0);
    }
}
