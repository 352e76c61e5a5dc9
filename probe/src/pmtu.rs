//! Path-MTU discovery with confirmed probes (DPLPMTUD, RFC 8899 style).
//!
//! Probes are TWAMP-light test packets sent with DF set and the kernel's
//! cached path MTU ignored (`IP_PMTUDISC_PROBE`); a size counts as passing
//! only when the reflector's reply to it arrives (RFC 8899: a PTB message is a
//! hint, only an acknowledged probe confirms). ICMP errors are read from the
//! socket's error queue (`IP_RECVERR`): frag-needed (ICMP 3/4) and
//! packet-too-big (ICMPv6 2) carry the MTU the router announced.
//!
//! The search ([`PmtuSearch`], sans-IO):
//!
//! 1. the smallest probe (reachability; no answer: "no reply");
//! 2. the largest size (`--max`, default the route's MTU or 1500);
//! 3. a PTB's announced MTU, as soon as one arrives: confirmed, it ends the
//!    search (the announcing router cannot pass more);
//! 4. RFC 8899's BASE_PLPMTU (1200 bytes for IPv4, 1280 for IPv6);
//! 5. otherwise bisection between the largest confirmed and the smallest
//!    failed size, down to 1 byte.
//!
//! A size fails after `tries` probes (3, RFC 8899's MAX_PROBES) all without
//! reply: *silently* when no ICMP error came for any of them. A **black hole**
//! is a silent failure of a size that no PTB explains (no PTB at all, or one
//! announcing an MTU at least that large): large packets vanish without the
//! ICMP that classic PMTUD needs. Silent failures above an announced MTU are
//! not counted (routers rate-limit their ICMP errors).
#![forbid(unsafe_code)]

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use serde::Serialize;

use crate::reflector::is_timeout;
use crate::sys::{self, SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6, SO_EE_ORIGIN_LOCAL};
use crate::twamp::{ErrorEstimate, NtpTimestamp, ReflectorPacket, SenderRepr, MIN_PROBE_LEN};
use crate::ProbeError;

const MS: u64 = 1_000_000;

/// What one size's probes ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum Outcome {
    /// The reflector answered.
    Ok,
    /// An ICMP frag-needed / packet-too-big announced `mtu`.
    Ptb { mtu: u32 },
    /// The local interface cannot send it (EMSGSIZE), `mtu` the local limit.
    Local { mtu: u32 },
    /// No reply and no ICMP error for any try.
    Silent,
}

/// One size tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Step {
    /// IP packet size (IP header + UDP header + TWAMP packet).
    pub size: u32,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub tries: u32,
}

/// The search state; sizes are IP packet sizes.
#[derive(Debug, Clone)]
pub struct PmtuSearch {
    min: u32,
    max: u32,
    /// RFC 8899's BASE_PLPMTU: tried right after a failed `max`.
    base: u32,
    /// Largest confirmed size.
    lo: Option<u32>,
    /// Smallest failed size (exclusive upper bound of the answer).
    hi: u32,
    /// Smallest MTU a PTB (or the local stack) announced.
    hint: Option<u32>,
    ptb: Option<u32>,
    local: Option<u32>,
    steps: Vec<Step>,
    failed_min: bool,
}

impl PmtuSearch {
    /// Sizes from `min` (the smallest probe) to `max`; `base` (1200 for
    /// IPv4, 1280 for IPv6) is tried before bisecting.
    pub fn new(min: u32, base: u32, max: u32) -> PmtuSearch {
        let max = max.max(min);
        PmtuSearch {
            min,
            max,
            base,
            lo: None,
            hi: max + 1,
            hint: None,
            ptb: None,
            local: None,
            steps: Vec::new(),
            failed_min: false,
        }
    }

    fn tried(&self, size: u32) -> bool {
        self.steps.iter().any(|s| s.size == size)
    }

    /// The next size to probe; `None` when the search is over.
    pub fn next_size(&self) -> Option<u32> {
        let Some(lo) = self.lo else {
            return (!self.failed_min).then_some(self.min);
        };
        if self.hi <= lo + 1 {
            return None;
        }
        if !self.tried(self.max) && self.max > lo {
            return Some(self.max);
        }
        if let Some(h) = self.hint {
            if h > lo && h < self.hi && !self.tried(h) {
                return Some(h);
            }
        }
        if self.base > lo && self.base < self.hi && !self.tried(self.base) {
            return Some(self.base);
        }
        Some(lo + (self.hi - lo) / 2)
    }

    /// The outcome of probing `size`.
    pub fn handle(&mut self, size: u32, outcome: Outcome, tries: u32) {
        self.steps.push(Step {
            size,
            outcome,
            tries,
        });
        match outcome {
            Outcome::Ok => {
                self.lo = Some(self.lo.map_or(size, |l| l.max(size)));
                if self.hi <= size {
                    self.hi = size + 1;
                }
                // A confirmed announced MTU: that router passes no more.
                if Some(size) == self.hint {
                    self.hi = self.hi.min(size + 1);
                }
            }
            Outcome::Ptb { mtu } | Outcome::Local { mtu } => {
                self.hi = self.hi.min(size);
                if matches!(outcome, Outcome::Ptb { .. }) {
                    self.ptb = Some(self.ptb.map_or(mtu, |p| p.min(mtu)));
                } else {
                    self.local = Some(self.local.map_or(mtu, |p| p.min(mtu)));
                }
                if mtu >= self.min && mtu < size {
                    self.hint = Some(self.hint.map_or(mtu, |h| h.min(mtu)));
                }
                if size == self.min && self.lo.is_none() {
                    self.failed_min = true;
                }
            }
            Outcome::Silent => {
                self.hi = self.hi.min(size);
                if size == self.min && self.lo.is_none() {
                    self.failed_min = true;
                }
            }
        }
    }

    pub fn path_mtu(&self) -> Option<u32> {
        self.lo
    }

    /// A size failed silently that no PTB explains.
    pub fn black_hole(&self) -> bool {
        let Some(lo) = self.lo else {
            return false;
        };
        self.steps.iter().any(|s| {
            s.outcome == Outcome::Silent && s.size > lo && self.ptb.is_none_or(|m| s.size <= m)
        })
    }

    pub fn ptb_mtu(&self) -> Option<u32> {
        self.ptb
    }

    pub fn local_mtu(&self) -> Option<u32> {
        self.local
    }

    pub fn steps(&self) -> &[Step] {
        &self.steps
    }
}

/// The verdict on the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The largest size passed: no limit below `--max`.
    Clean,
    /// A router announced the limit with ICMP and the search confirmed it.
    Ptb,
    /// Large probes vanish without ICMP: a PMTU black hole.
    BlackHole,
    /// Limited by the local interface (EMSGSIZE) and nothing smaller on the path.
    Local,
}

/// `wirelens probe pmtu` result (`{"type":"pmtu"}`).
#[derive(Debug, Clone, Serialize)]
pub struct PmtuReport {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub schema: &'static str,
    pub target: String,
    /// The kernel's MTU for the route at the start (IP_MTU), before probing.
    pub route_mtu: u32,
    /// Largest size tried.
    pub max_size: u32,
    /// Largest IP packet size confirmed end to end.
    pub path_mtu: Option<u32>,
    pub verdict: Verdict,
    pub black_hole: bool,
    /// Smallest MTU announced by ICMP, and by whom.
    pub ptb_mtu: Option<u32>,
    pub ptb_from: Option<IpAddr>,
    pub steps: Vec<Step>,
    pub elapsed_ns: u64,
}

/// Options of [`run`].
#[derive(Debug, Clone)]
pub struct PmtuOptions {
    pub target: SocketAddr,
    /// Largest IP packet size to try (default: the route's MTU, at least 1500).
    pub max: Option<u32>,
    /// Probes per size before it counts as failed.
    pub tries: u32,
}

fn ip_overhead(target: &SocketAddr) -> u32 {
    if target.is_ipv6() {
        40 + 8
    } else {
        20 + 8
    }
}

/// Runs the search against a TWAMP-light reflector at `opts.target`.
pub fn run(opts: &PmtuOptions) -> Result<PmtuReport, ProbeError> {
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
    sys::set_pmtu_probe(&sock, v6).map_err(io_err("set DF"))?;
    sys::set_recverr(&sock, v6).map_err(io_err("set IP_RECVERR"))?;
    sys::enable_rx_meta(&sock, v6).map_err(io_err("enable timestamps"))?;
    let route_mtu = sys::path_mtu(&sock, v6).map_err(io_err("IP_MTU"))?;
    let overhead = ip_overhead(&target);
    let min = overhead + MIN_PROBE_LEN as u32;
    let max = opts.max.unwrap_or(route_mtu.max(1500)).clamp(min, 65535);
    let base = if v6 { 1280 } else { 1200 };
    let mut search = PmtuSearch::new(min, base, max);
    let started = sys::now_ns();
    let mut seq: u32 = 0;
    let mut buf = Vec::with_capacity(65536);
    let mut rbuf = vec![0u8; 65536];
    let mut max_rtt = 0u64;
    let mut ptb_from = None;
    let mut refused = 0u32;
    let tries = opts.tries.max(1);
    while let Some(size) = search.next_size() {
        let timeout = if search.path_mtu().is_none() {
            1000 * MS
        } else {
            (max_rtt * 4).clamp(100 * MS, 1000 * MS)
        };
        let first_seq = seq;
        let mut outcome = Outcome::Silent;
        let mut used = 0;
        'tries: for _ in 0..tries {
            used += 1;
            let sent_at = sys::now_ns();
            SenderRepr {
                seq,
                timestamp: NtpTimestamp::from_unix_ns(sent_at),
                error_estimate: ErrorEstimate::LOCAL,
            }
            .emit((size - overhead) as usize, &mut buf);
            seq += 1;
            match sock.send(&buf) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                    let mtu = sys::path_mtu(&sock, v6).unwrap_or(0);
                    drain_errors(&sock, &mut rbuf);
                    outcome = Outcome::Local { mtu };
                    break 'tries;
                }
                // A queued ICMP error surfaces on the next call: read it below.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(e) => {
                    return Err(ProbeError::Io {
                        what: "send",
                        source: e,
                    })
                }
            }
            let deadline = sent_at + timeout;
            loop {
                // ICMP errors first: they may answer this try.
                while let Ok(Some(err)) = sys::recv_err(&sock, &mut rbuf) {
                    let quoted = (err.len >= 4)
                        .then(|| u32::from_be_bytes([rbuf[0], rbuf[1], rbuf[2], rbuf[3]]));
                    let ours = quoted.is_none_or(|q| q >= first_seq && q < seq);
                    match classify(&err) {
                        Some(ErrKind::TooBig(mtu)) if ours => {
                            ptb_from = err.offender.or(ptb_from);
                            outcome = if err.origin == SO_EE_ORIGIN_LOCAL {
                                Outcome::Local { mtu }
                            } else {
                                Outcome::Ptb { mtu }
                            };
                            break 'tries;
                        }
                        Some(ErrKind::Unreachable) => refused += 1,
                        _ => {}
                    }
                }
                if refused >= tries {
                    return Err(ProbeError::Refused {
                        target: target.to_string(),
                    });
                }
                let now = sys::now_ns();
                if now >= deadline {
                    break;
                }
                sock.set_read_timeout(Some(Duration::from_nanos((deadline - now).max(1000))))
                    .map_err(io_err("set timeout"))?;
                match sys::recv_meta(&sock, &mut rbuf) {
                    Ok(m) => {
                        let t4 = m.rx_ns.unwrap_or_else(sys::now_ns);
                        let Ok(p) = ReflectorPacket::new_checked(&rbuf[..m.len]) else {
                            continue;
                        };
                        let s = p.sender_seq();
                        if s >= first_seq && s < seq {
                            let dwell = p.timestamp().ns_since(p.receive_timestamp()).unwrap_or(0);
                            let t1 = p.sender_timestamp().to_unix_ns().unwrap_or(t4);
                            max_rtt = max_rtt.max(t4.saturating_sub(t1).saturating_sub(dwell));
                            outcome = Outcome::Ok;
                            break 'tries;
                        }
                    }
                    Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                    // Pending ICMP errors make recv fail once; the queue holds them.
                    Err(e)
                        if matches!(e.raw_os_error(), Some(libc::EMSGSIZE))
                            || e.kind() == io::ErrorKind::ConnectionRefused
                            || e.kind() == io::ErrorKind::HostUnreachable
                            || e.kind() == io::ErrorKind::NetworkUnreachable => {}
                    Err(e) => {
                        return Err(ProbeError::Io {
                            what: "recv",
                            source: e,
                        })
                    }
                }
            }
        }
        search.handle(size, outcome, used);
    }
    let elapsed_ns = sys::now_ns() - started;
    let Some(path_mtu) = search.path_mtu() else {
        return Err(ProbeError::NoReply {
            target: target.to_string(),
            waited_ns: elapsed_ns,
            malformed: 0,
        });
    };
    let black_hole = search.black_hole();
    let verdict = if black_hole {
        Verdict::BlackHole
    } else if search.ptb_mtu().is_some() {
        Verdict::Ptb
    } else if path_mtu >= max {
        Verdict::Clean
    } else {
        Verdict::Local
    };
    Ok(PmtuReport {
        kind: "pmtu",
        schema: crate::session::SCHEMA,
        target: target.to_string(),
        route_mtu,
        max_size: max,
        path_mtu: Some(path_mtu),
        verdict,
        black_hole,
        ptb_mtu: search.ptb_mtu(),
        ptb_from,
        steps: search.steps().to_vec(),
        elapsed_ns,
    })
}

enum ErrKind {
    TooBig(u32),
    Unreachable,
}

fn classify(e: &sys::SockErr) -> Option<ErrKind> {
    match (e.origin, e.icmp_type, e.icmp_code) {
        // ICMP destination unreachable, fragmentation needed and DF set.
        (SO_EE_ORIGIN_ICMP, 3, 4) => Some(ErrKind::TooBig(e.info)),
        (SO_EE_ORIGIN_ICMP, 3, 3) => Some(ErrKind::Unreachable),
        // ICMPv6 packet too big.
        (SO_EE_ORIGIN_ICMP6, 2, _) => Some(ErrKind::TooBig(e.info)),
        (SO_EE_ORIGIN_ICMP6, 1, 4) => Some(ErrKind::Unreachable),
        (SO_EE_ORIGIN_LOCAL, _, _) if e.errno == libc::EMSGSIZE => Some(ErrKind::TooBig(e.info)),
        _ => None,
    }
}

fn drain_errors(sock: &UdpSocket, buf: &mut [u8]) {
    for _ in 0..64 {
        if !matches!(sys::recv_err(sock, buf), Ok(Some(_))) {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives a search against a path model: `limit` passes, larger sizes
    /// get `fail(size)`.
    fn drive(min: u32, max: u32, limit: u32, fail: impl Fn(u32) -> Outcome) -> PmtuSearch {
        let mut s = PmtuSearch::new(min, 1200, max);
        let mut n = 0;
        while let Some(size) = s.next_size() {
            n += 1;
            assert!(n < 40, "search does not converge: {:?}", s.steps());
            let o = if size <= limit {
                Outcome::Ok
            } else {
                fail(size)
            };
            s.handle(size, o, 1);
        }
        s
    }

    #[test]
    fn clean_path_takes_two_probes() {
        let s = drive(69, 1500, 1500, |_| Outcome::Silent);
        assert_eq!(s.path_mtu(), Some(1500));
        assert_eq!(s.steps().len(), 2);
        assert!(!s.black_hole());
    }

    #[test]
    fn ptb_jumps_to_the_announced_mtu() {
        let s = drive(69, 1500, 1280, |_| Outcome::Ptb { mtu: 1280 });
        assert_eq!(s.path_mtu(), Some(1280));
        assert_eq!(s.ptb_mtu(), Some(1280));
        let sizes: Vec<u32> = s.steps().iter().map(|x| x.size).collect();
        assert_eq!(sizes, [69, 1500, 1280]);
        assert!(!s.black_hole());
    }

    #[test]
    fn rate_limited_ptb_is_not_a_black_hole() {
        // The PTB came once; later too-big probes vanish (ICMP rate limit).
        let s = drive(69, 1500, 1280, |size| {
            if size == 1500 {
                Outcome::Ptb { mtu: 1280 }
            } else {
                Outcome::Silent
            }
        });
        assert_eq!(s.path_mtu(), Some(1280));
        assert!(!s.black_hole());
    }

    #[test]
    fn silent_drop_is_a_black_hole_found_by_bisection() {
        let s = drive(69, 1500, 1400, |_| Outcome::Silent);
        assert_eq!(s.path_mtu(), Some(1400));
        assert!(s.black_hole());
        assert!(s.steps().len() <= 2 + 11, "{:?}", s.steps());
    }

    #[test]
    fn a_lying_ptb_is_bisected_past() {
        // PTB says 1000 but 1000 is lost silently too (a second, silent hop at 900).
        let s = drive(69, 1500, 900, |size| {
            if size > 1000 {
                Outcome::Ptb { mtu: 1000 }
            } else {
                Outcome::Silent
            }
        });
        assert_eq!(s.path_mtu(), Some(900));
        assert!(s.black_hole());
    }

    #[test]
    fn nothing_answers() {
        let s = drive(69, 1500, 0, |_| Outcome::Silent);
        assert_eq!(s.path_mtu(), None);
        assert_eq!(s.steps().len(), 1);
    }

    #[test]
    fn local_limit() {
        let s = drive(69, 9000, 1500, |_| Outcome::Local { mtu: 1500 });
        assert_eq!(s.path_mtu(), Some(1500));
        assert_eq!(s.local_mtu(), Some(1500));
        assert!(!s.black_hole());
    }
}
