//! The Session-Sender, sans-IO: what to send when, what the replies mean.
//!
//! [`SenderSession`] never reads a clock or a socket. The I/O loop
//! ([`crate::send`]) drives it in this order, quinn-style:
//!
//! 1. `poll_transmit(now, buf)`: a test packet due now, if any (send it at once);
//! 2. `handle_reply(t4, bytes)`: every datagram received, with its receive time;
//! 3. `poll_timeout()`: when to call again at the latest (`None`: finished);
//! 4. `is_done()`, then `report()` (or `outcome()` for the no-reply error).
//!
//! # Phases
//!
//! - **hello**: one small probe at a time, each given [`SenderConfig::min_timeout_ns`]
//!   to be answered, at most [`SenderConfig::hello_tries`] of them. The answered
//!   one is the start *anchor* A: its reply carries the reflector's counter
//!   before the measurement. No answer at all: [`NoReply`].
//! - **measure**: probes of the configured size every interval, until `count`
//!   or `duration`. One sender sequence number is skipped between hello and the
//!   first measurement probe (see "stateless reflectors" below).
//! - **drain**: no sending until every measurement probe is answered or has
//!   timed out (`max(3 x p99 RTT, min_timeout)`).
//! - **flush**: small probes again, one per `max(2 x p99, 50 ms)`, at most
//!   [`SenderConfig::flush_max`], until one is answered: the end anchor B.
//!
//! # How loss is split into upstream and downstream
//!
//! A stateful TWAMP-light reflector numbers its replies 0, 1, 2, ... in the
//! order it sends them (RFC 5357 4.2.1), independently of the sender's
//! numbers. Between the anchors A and B the reflector therefore sent
//! `n = r(B) - r(A) - 1` replies: one for every probe of ours that reached it.
//! Of those, `a_r` came back in time. So
//!
//! - `lost_down = n - a_r`: replies the reflector sent that did not come back
//!   (a reply that came back after the timeout is lost, and counts here: its
//!   probe did reach the reflector);
//! - `lost_up = lost - lost_down`: probes that never reached the reflector.
//!
//! Control probes between the anchors that were never answered (a hello
//! retried late, a flush probe before the answered one) may or may not have
//! been reflected: each widens the result into a range, and that many losses
//! are reported as `lost_unattributed` instead of being guessed. Without an
//! end anchor (no flush probe answered), losses after the last reply in the
//! reflector's order are unattributed too. The counts are exact as long as no
//! probe is reordered across an anchor (the anchors are separated from the
//! measurement by a full timeout) and no probe is duplicated.
//!
//! Per interval, the same reasoning is applied per *gap*: between two
//! consecutive replies (in sender order) with reflector numbers `rL` and `rR`,
//! `rR - rL - 1` of the probes lost in between reached the reflector. Which of
//! the gap's probes those were cannot be known; the earliest of a gap are
//! counted upstream. Without reordering the intervals add up to the summary;
//! with it, the summary (by the formula above) is the authoritative one.
//!
//! # Stateless reflectors
//!
//! Some reflectors copy the sender's sequence number into their own field.
//! Their replies carry no information about which direction lost a probe. The
//! skipped sequence number tells them apart: after it, a stateful reflector's
//! number is always below ours (relative to A), a copying one equals it. With
//! such a reflector the split is reported as unavailable (`null`).
//!
//! # Other counts
//!
//! - RTT = `(T4 - T1) - (T3 - T2)`: the round trip minus the reflector's dwell.
//! - reordering (RFC 4737): a reply whose sender number is below the highest
//!   seen so far. Upstream: the same test in the reflector's order; downstream:
//!   a reflector number below the highest seen, in arrival order.
//! - duplicates: a second reply for a probe; with a new reflector number the
//!   probe was duplicated upstream, with the same one the reply downstream.
//! - IPDV (RFC 3393, RFC 5481): the RTT difference of consecutive probes
//!   (by sender number) both answered; reported as absolute values. PDV is
//!   p99 RTT minus the minimum RTT.
#![forbid(unsafe_code)]

use serde::Serialize;
use wirelens_dataplane::stats::Histogram;

use crate::twamp::{
    ErrorEstimate, NtpTimestamp, ReflectorPacket, ReflectorRepr, SenderRepr, MIN_PROBE_LEN,
};

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;

/// Schema name of the records `probe send` prints.
pub const SCHEMA: &str = "wirelens.probe.v1";

/// What the sender does; durations in nanoseconds.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// Time between measurement probes.
    pub interval_ns: u64,
    /// Length of a measurement probe (the UDP payload), at least 41.
    pub size: usize,
    /// Stop sending measurement probes after this long (from the first one).
    pub duration_ns: Option<u64>,
    /// Stop after this many measurement probes.
    pub count: Option<u64>,
    /// Width of one interval of the time series.
    pub report_interval_ns: u64,
    /// Hello probes tried before giving up (each waits `min_timeout_ns`).
    pub hello_tries: u32,
    /// Lower bound of the loss timeout; the timeout is `max(3 x p99, this)`.
    pub min_timeout_ns: u64,
    /// Flush probes tried at the end.
    pub flush_max: u32,
    /// TTL the socket sends with (255 per RFC 5357), to derive the hop count.
    pub ttl: Option<u8>,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            interval_ns: 100 * MS,
            size: 128,
            duration_ns: Some(10 * SEC),
            count: None,
            report_interval_ns: SEC,
            hello_tries: 3,
            min_timeout_ns: SEC,
            flush_max: 5,
            ttl: Some(255),
        }
    }
}

/// No reply to any hello probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoReply {
    /// How long the sender waited, in nanoseconds.
    pub waited_ns: u64,
    /// Malformed datagrams received meanwhile (something answers, but not TWAMP).
    pub malformed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Hello,
    /// A sequence number deliberately never sent.
    Skipped,
    Measure,
    Flush,
}

#[derive(Debug, Clone, Copy)]
struct Reply {
    /// Reflector sequence number.
    r: u32,
    /// `(T4 - T1) - (T3 - T2)`.
    rtt: u64,
    dwell: Option<u64>,
    ttl: u8,
    late: bool,
    /// Arrival order among all replies.
    arrival: u64,
}

#[derive(Debug, Clone)]
struct Probe {
    kind: Kind,
    sent_ns: u64,
    reply: Option<Reply>,
    dup_up: u32,
    dup_down: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Hello,
    Measure,
    Drain,
    Flush,
    Done,
    Failed,
}

/// The sender's state; see the [module documentation](self).
#[derive(Debug)]
pub struct SenderSession {
    cfg: SenderConfig,
    phase: Phase,
    /// Indexed by sender sequence number.
    probes: Vec<Probe>,
    started_ns: u64,
    measure_start_ns: u64,
    measure_sent: u64,
    /// Start anchor: sender seq of the answered hello with the highest number.
    anchor_a: Option<u32>,
    /// End anchor: sender seq of the answered flush with the lowest number.
    anchor_b: Option<u32>,
    flush_sent: u32,
    rtt_raw: Histogram,
    arrivals: u64,
    malformed: u64,
    unexpected: u64,
    last_hello_ns: u64,
}

/// Quantiles of a set of durations (nanoseconds); `null` when there is none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Quantiles {
    pub n: u64,
    pub min_ns: Option<u64>,
    pub p50_ns: Option<u64>,
    pub p90_ns: Option<u64>,
    pub p99_ns: Option<u64>,
    pub max_ns: Option<u64>,
    pub mean_ns: Option<u64>,
}

impl Quantiles {
    pub fn of(h: &Histogram) -> Quantiles {
        Quantiles {
            n: h.count(),
            min_ns: h.min(),
            p50_ns: h.quantile(0.5),
            p90_ns: h.quantile(0.9),
            p99_ns: h.quantile(0.99),
            max_ns: h.max(),
            mean_ns: h.mean(),
        }
    }
}

/// How far the upstream/downstream split can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Every loss is attributed (`lost_unattributed` = 0).
    Exact,
    /// Some losses could have happened either way: `lost_unattributed` > 0.
    Bounded,
    /// The reflector copies the sender's sequence numbers: no split.
    Unavailable,
}

/// What the reflector's sequence numbers look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReflectorMode {
    /// Numbers its own replies (RFC 5357 stateful mode).
    Stateful,
    /// Copies the sender's sequence number.
    Stateless,
    /// Not enough replies to tell.
    Unknown,
}

/// The run as a whole (`{"type":"summary"}`).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub schema: &'static str,
    /// First measurement probe, ns since the Unix epoch.
    pub start_ns: u64,
    /// First to last measurement probe sent.
    pub duration_ns: u64,
    pub interval_ns: u64,
    pub size: usize,
    pub sent: u64,
    /// Answered within the timeout.
    pub received: u64,
    /// `sent - received` (late replies count as lost).
    pub lost: u64,
    pub lost_up: Option<u64>,
    pub lost_down: Option<u64>,
    pub lost_unattributed: Option<u64>,
    pub loss_split: Split,
    /// Replies that came after the timeout (included in `lost`).
    pub late: u64,
    pub duplicates: u64,
    pub duplicates_up: u64,
    pub duplicates_down: u64,
    pub reordered: u64,
    pub reordered_up: u64,
    pub reordered_down: u64,
    /// Datagrams that were not reflector test packets.
    pub malformed: u64,
    /// Well-formed replies for sequence numbers never sent.
    pub unexpected: u64,
    /// `(T4 - T1) - (T3 - T2)`.
    pub rtt: Quantiles,
    /// `T3 - T2`: time spent in the reflector.
    pub dwell: Quantiles,
    /// Absolute inter-packet delay variation of consecutive probes.
    pub ipdv: Quantiles,
    /// PDV (RFC 5481): p99 RTT minus minimum RTT.
    pub pdv_p99_ns: Option<u64>,
    /// Loss timeout at the end of the run: `max(3 x p99 RTT, 1 s)`.
    pub timeout_ns: u64,
    /// Hops from sender to reflector (255 - the TTL the reflector saw).
    pub hops_up: Option<u8>,
    pub reflector: ReflectorMode,
}

/// One interval of the time series (`{"type":"interval"}`); probes are binned
/// by the time they were sent.
#[derive(Debug, Clone, Serialize)]
pub struct Interval {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub schema: &'static str,
    pub start_ns: u64,
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub lost_up: Option<u64>,
    pub lost_down: Option<u64>,
    pub lost_unattributed: Option<u64>,
    pub late: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub rtt: Quantiles,
    pub ipdv_mean_abs_ns: Option<u64>,
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub summary: Summary,
    pub intervals: Vec<Interval>,
    /// The RTT samples of `summary.rtt` as the engine's mergeable histogram
    /// (what the live daemon exports and pushes; not printed).
    #[serde(skip)]
    pub rtt_histogram: Histogram,
    /// The absolute IPDV samples of `summary.ipdv` (not printed).
    #[serde(skip)]
    pub ipdv_histogram: Histogram,
}

/// Where each lost probe went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attribution {
    Up,
    Down,
    Unattributed,
}

impl SenderSession {
    /// A session that starts at `now`.
    pub fn new(mut cfg: SenderConfig, now: u64) -> SenderSession {
        cfg.size = cfg.size.max(MIN_PROBE_LEN);
        cfg.interval_ns = cfg.interval_ns.max(1);
        cfg.report_interval_ns = cfg.report_interval_ns.max(1);
        cfg.hello_tries = cfg.hello_tries.max(1);
        SenderSession {
            cfg,
            phase: Phase::Hello,
            probes: Vec::new(),
            started_ns: now,
            measure_start_ns: 0,
            measure_sent: 0,
            anchor_a: None,
            anchor_b: None,
            flush_sent: 0,
            rtt_raw: Histogram::new(),
            arrivals: 0,
            malformed: 0,
            unexpected: 0,
            last_hello_ns: 0,
        }
    }

    pub fn config(&self) -> &SenderConfig {
        &self.cfg
    }

    /// The loss timeout now: `max(3 x p99 of T4 - T1, min_timeout)`.
    pub fn timeout_ns(&self) -> u64 {
        let p99 = self.rtt_raw.quantile(0.99).unwrap_or(0);
        p99.saturating_mul(3).max(self.cfg.min_timeout_ns)
    }

    fn flush_spacing_ns(&self) -> u64 {
        let p99 = self.rtt_raw.quantile(0.99).unwrap_or(0);
        p99.saturating_mul(2).clamp(50 * MS, SEC)
    }

    /// True once the measurement probes are all sent (the session drains,
    /// flushes or is over): a continuous prober may start the next session.
    pub fn measurement_over(&self) -> bool {
        !matches!(self.phase, Phase::Hello | Phase::Measure)
    }

    /// Measurement probes sent so far.
    pub fn measurement_sent(&self) -> u64 {
        self.measure_sent
    }

    /// Probes of any kind sent so far (hello, measurement, flush).
    pub fn probes_sent(&self) -> u64 {
        self.probes
            .iter()
            .filter(|p| p.kind != Kind::Skipped)
            .count() as u64
    }

    /// True once the session has nothing more to send or wait for.
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done | Phase::Failed)
    }

    /// The next time something is due (a probe or a timeout); `None` when done.
    pub fn poll_timeout(&self) -> Option<u64> {
        match self.phase {
            Phase::Hello => Some(self.last_hello_ns + self.cfg.min_timeout_ns),
            Phase::Measure => Some(self.next_measure_ns()),
            Phase::Drain => Some(self.drain_deadline()),
            Phase::Flush => {
                let last = self.probes.last().map_or(0, |p| p.sent_ns);
                if self.flush_sent < self.cfg.flush_max {
                    Some(last + self.flush_spacing_ns())
                } else {
                    Some(last + self.timeout_ns())
                }
            }
            Phase::Done | Phase::Failed => None,
        }
    }

    fn next_measure_ns(&self) -> u64 {
        self.measure_start_ns + self.measure_sent * self.cfg.interval_ns
    }

    fn measure_finished(&self, now: u64) -> bool {
        if self.cfg.count.is_some_and(|c| self.measure_sent >= c) {
            return true;
        }
        match self.cfg.duration_ns {
            Some(d) => {
                self.measure_sent > 0
                    && now.max(self.next_measure_ns()) >= self.measure_start_ns + d
            }
            None => false,
        }
    }

    fn drain_deadline(&self) -> u64 {
        let timeout = self.timeout_ns();
        self.probes
            .iter()
            .filter(|p| p.kind == Kind::Measure && p.reply.is_none())
            .map(|p| p.sent_ns + timeout)
            .max()
            .unwrap_or(0)
    }

    /// Advances the phases to `now`.
    fn advance(&mut self, now: u64) {
        loop {
            let before = self.phase;
            match self.phase {
                Phase::Hello => {
                    if self.anchor_a.is_some() {
                        // Skip one sequence number (see "stateless reflectors").
                        self.push(Kind::Skipped, now);
                        self.phase = Phase::Measure;
                        self.measure_start_ns = now;
                    } else if !self.probes.is_empty()
                        && now >= self.last_hello_ns + self.cfg.min_timeout_ns
                        && self.probes.len() as u32 >= self.cfg.hello_tries
                    {
                        self.phase = Phase::Failed;
                    }
                }
                Phase::Measure => {
                    if self.measure_finished(now) {
                        self.phase = Phase::Drain;
                    }
                }
                Phase::Drain => {
                    if now >= self.drain_deadline() {
                        self.phase = Phase::Flush;
                    }
                }
                Phase::Flush => {
                    if self.anchor_b.is_some() {
                        self.phase = Phase::Done;
                    } else if self.flush_sent >= self.cfg.flush_max {
                        let last = self.probes.last().map_or(0, |p| p.sent_ns);
                        if now >= last + self.timeout_ns() {
                            self.phase = Phase::Done;
                        }
                    }
                }
                Phase::Done | Phase::Failed => {}
            }
            if self.phase == before {
                return;
            }
        }
    }

    fn push(&mut self, kind: Kind, now: u64) -> u32 {
        let seq = self.probes.len() as u32;
        self.probes.push(Probe {
            kind,
            sent_ns: now,
            reply: None,
            dup_up: 0,
            dup_down: 0,
        });
        seq
    }

    /// If a probe is due at `now`, writes it into `out` and returns its
    /// sender sequence number; the caller sends `out` at once.
    pub fn poll_transmit(&mut self, now: u64, out: &mut Vec<u8>) -> Option<u32> {
        self.advance(now);
        let (kind, len) = match self.phase {
            Phase::Hello => {
                let first = self.probes.is_empty();
                if !first && now < self.last_hello_ns + self.cfg.min_timeout_ns {
                    return None;
                }
                self.last_hello_ns = now;
                (Kind::Hello, MIN_PROBE_LEN)
            }
            Phase::Measure => {
                if now < self.next_measure_ns() {
                    return None;
                }
                self.measure_sent += 1;
                (Kind::Measure, self.cfg.size)
            }
            Phase::Flush => {
                if self.flush_sent >= self.cfg.flush_max {
                    return None;
                }
                let last = self.probes.last().map_or(0, |p| p.sent_ns);
                if self.flush_sent > 0 && now < last + self.flush_spacing_ns() {
                    return None;
                }
                self.flush_sent += 1;
                (Kind::Flush, MIN_PROBE_LEN)
            }
            Phase::Drain | Phase::Done | Phase::Failed => return None,
        };
        let seq = self.push(kind, now);
        SenderRepr {
            seq,
            timestamp: NtpTimestamp::from_unix_ns(now),
            error_estimate: ErrorEstimate::LOCAL,
        }
        .emit(len, out);
        Some(seq)
    }

    /// One datagram from the reflector, received at `t4` (ns since the Unix epoch).
    pub fn handle_reply(&mut self, t4: u64, bytes: &[u8]) {
        let Ok(pkt) = ReflectorPacket::new_checked(bytes) else {
            self.malformed += 1;
            return;
        };
        let rep = ReflectorRepr::parse(&pkt);
        let timeout = self.timeout_ns();
        let Some(probe) = self.probes.get_mut(rep.sender_seq as usize) else {
            self.unexpected += 1;
            return;
        };
        if probe.kind == Kind::Skipped {
            self.unexpected += 1;
            return;
        }
        if let Some(prev) = probe.reply {
            if prev.r == rep.seq {
                probe.dup_down += 1;
            } else {
                probe.dup_up += 1;
            }
            return;
        }
        let raw = t4.saturating_sub(probe.sent_ns);
        let dwell = rep.dwell_ns();
        let rtt = raw.saturating_sub(dwell.unwrap_or(0).min(raw));
        let late = probe.kind == Kind::Measure && raw > timeout;
        probe.reply = Some(Reply {
            r: rep.seq,
            rtt,
            dwell,
            ttl: rep.sender_ttl,
            late,
            arrival: self.arrivals,
        });
        self.arrivals += 1;
        if !late {
            self.rtt_raw.record(raw);
        }
        let seq = rep.sender_seq;
        match probe.kind {
            Kind::Hello => {
                if self.anchor_a.is_none_or(|a| seq > a) && self.phase == Phase::Hello {
                    self.anchor_a = Some(seq);
                }
            }
            Kind::Flush => {
                if self.anchor_b.is_none_or(|b| seq < b) && self.phase == Phase::Flush {
                    self.anchor_b = Some(seq);
                }
            }
            Kind::Measure | Kind::Skipped => {}
        }
        self.advance(t4);
    }

    /// The no-reply error, once the hello phase failed.
    pub fn no_reply(&self) -> Option<NoReply> {
        (self.phase == Phase::Failed).then(|| NoReply {
            waited_ns: (self.last_hello_ns + self.cfg.min_timeout_ns)
                .saturating_sub(self.started_ns),
            malformed: self.malformed,
        })
    }

    fn rel(&self, r: u32) -> i64 {
        let a = self.anchor_a.and_then(|a| self.probes[a as usize].reply);
        i64::from(r.wrapping_sub(a.map_or(0, |x| x.r)) as i32)
    }

    fn reflector_mode(&self) -> ReflectorMode {
        let Some(a) = self.anchor_a else {
            return ReflectorMode::Unknown;
        };
        let Some(ar) = self.probes[a as usize].reply else {
            return ReflectorMode::Unknown;
        };
        if ar.r != a {
            return ReflectorMode::Stateful;
        }
        let mut any = false;
        for (s, p) in self.probes.iter().enumerate().skip(a as usize + 1) {
            if let Some(rep) = p.reply {
                any = true;
                if rep.r != s as u32 {
                    return ReflectorMode::Stateful;
                }
            }
        }
        if any {
            ReflectorMode::Stateless
        } else {
            ReflectorMode::Unknown
        }
    }

    fn is_lost(p: &Probe) -> bool {
        p.kind == Kind::Measure && p.reply.is_none_or(|r| r.late)
    }

    /// Global split of the `lost` measurement probes into `(up, down,
    /// unattributed)`, per the module documentation; `None` without a start anchor.
    fn global_split(&self, lost: u64) -> Option<(u64, u64, u64)> {
        let a = self.anchor_a?;
        let (end_s, end_rel, end_is_anchor) = match self.anchor_b {
            Some(b) => (b, self.rel(self.probes[b as usize].reply?.r), true),
            None => {
                // Pseudo-anchor: the measurement reply last in reflector order.
                let Some((s, rel)) = self
                    .probes
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.kind == Kind::Measure)
                    .filter_map(|(s, p)| p.reply.map(|r| (s as u32, self.rel(r.r))))
                    .max_by_key(|&(_, rel)| rel)
                else {
                    return Some((0, 0, lost));
                };
                (s, rel, false)
            }
        };
        let mut a_r = 0i64;
        let mut control = 0i64;
        let mut lost_window = 0u64;
        for (s, p) in self.probes.iter().enumerate() {
            let s = s as u32;
            if s <= a || s >= end_s {
                continue;
            }
            match p.kind {
                Kind::Measure => match p.reply {
                    Some(r) if !r.late => {
                        let rel = self.rel(r.r);
                        if rel > 0 && rel < end_rel {
                            a_r += 1;
                        }
                    }
                    _ => lost_window += 1,
                },
                Kind::Hello | Kind::Flush => {
                    if p.reply.is_none() {
                        control += 1;
                    }
                }
                Kind::Skipped => {}
            }
        }
        let n = end_rel - 1;
        let hi = (n - a_r).clamp(0, lost_window as i64) as u64;
        let lo = (n - control - a_r).clamp(0, lost_window as i64) as u64;
        let mut up = lost_window - hi;
        let (mut down_lo, mut down_hi) = (lo, hi);
        if !end_is_anchor && self.probes[end_s as usize].reply.is_some_and(|r| r.late) {
            // The pseudo-anchor itself was late: reflected, so lost downstream.
            lost_window += 1;
            down_lo += 1;
            down_hi += 1;
        }
        // Lost after the end point (only without an end anchor): unknown.
        let after = lost.saturating_sub(lost_window);
        up = up.min(lost);
        Some((up, down_lo, (down_hi - down_lo) + after))
    }

    /// Per-probe attribution by gaps (for the time series), indexed by seq.
    fn attribute(&self) -> Vec<Option<Attribution>> {
        let mut out = vec![None; self.probes.len()];
        let Some(a) = self.anchor_a else {
            for (s, p) in self.probes.iter().enumerate() {
                if Self::is_lost(p) {
                    out[s] = Some(Attribution::Unattributed);
                }
            }
            return out;
        };
        // Reference points in sender order: (seq, rel); the anchors included.
        let mut refs: Vec<(usize, i64)> = vec![(a as usize, 0)];
        for (s, p) in self.probes.iter().enumerate().skip(a as usize + 1) {
            if let Some(r) = p.reply {
                if p.kind == Kind::Measure || Some(s as u32) == self.anchor_b {
                    refs.push((s, self.rel(r.r)));
                }
                if p.kind == Kind::Measure && r.late {
                    out[s] = Some(Attribution::Down);
                }
            }
            if Some(s as u32) == self.anchor_b {
                break;
            }
        }
        for w in refs.windows(2) {
            let ((sl, rl), (sr, rr)) = (w[0], w[1]);
            let gap: Vec<usize> = (sl + 1..sr)
                .filter(|&s| Self::is_lost(&self.probes[s]))
                .collect();
            let control = (sl + 1..sr)
                .filter(|&s| {
                    let p = &self.probes[s];
                    matches!(p.kind, Kind::Hello | Kind::Flush) && p.reply.is_none()
                })
                .count() as i64;
            let g = gap.len() as i64;
            let hi = (rr - rl - 1).clamp(0, g);
            let lo = (rr - rl - 1 - control).clamp(0, g);
            for (i, &s) in gap.iter().enumerate() {
                let i = i as i64;
                out[s] = Some(if i < g - hi {
                    Attribution::Up
                } else if i < g - lo {
                    Attribution::Unattributed
                } else {
                    Attribution::Down
                });
            }
        }
        // Lost after the last reference point: unknown.
        let last = refs.last().map_or(0, |r| r.0);
        for (s, p) in self.probes.iter().enumerate().skip(last + 1) {
            if Self::is_lost(p) && out[s].is_none() {
                out[s] = Some(Attribution::Unattributed);
            }
        }
        out
    }

    /// The report; meaningful once [`is_done`](Self::is_done) (any time for a
    /// progress view).
    pub fn report(&self) -> Report {
        let measure: Vec<(usize, &Probe)> = self
            .probes
            .iter()
            .enumerate()
            .filter(|(_, p)| p.kind == Kind::Measure)
            .collect();
        let sent = measure.len() as u64;
        let mut rtt = Histogram::new();
        let mut dwell = Histogram::new();
        let mut ipdv = Histogram::new();
        let mut received = 0u64;
        let mut late = 0u64;
        let (mut dup_up, mut dup_down) = (0u64, 0u64);
        let mut prev_rtt: Option<(usize, u64)> = None;
        let mut ttl = None;
        for &(s, p) in &measure {
            dup_up += u64::from(p.dup_up);
            dup_down += u64::from(p.dup_down);
            if let Some(r) = p.reply {
                if r.late {
                    late += 1;
                    continue;
                }
                received += 1;
                rtt.record(r.rtt);
                if let Some(d) = r.dwell {
                    dwell.record(d);
                }
                ttl = Some(r.ttl);
                if let Some((ps, pr)) = prev_rtt {
                    if ps + 1 == s
                        || self.probes[ps + 1..s]
                            .iter()
                            .all(|q| q.kind != Kind::Measure)
                    {
                        ipdv.record(r.rtt.abs_diff(pr));
                    }
                }
                prev_rtt = Some((s, r.rtt));
            }
        }
        let lost = sent - received;
        let mode = self.reflector_mode();

        // Reordering.
        let mut by_arrival: Vec<(u64, usize, i64)> = measure
            .iter()
            .filter_map(|&(s, p)| p.reply.map(|r| (r.arrival, s, self.rel(r.r))))
            .collect();
        by_arrival.sort_unstable();
        let (mut reordered, mut reordered_down) = (0u64, 0u64);
        let mut reordered_seqs = vec![false; self.probes.len()];
        let (mut max_s, mut max_rel) = (None, None);
        for &(_, s, rel) in &by_arrival {
            if max_s.is_some_and(|m| s < m) {
                reordered += 1;
                reordered_seqs[s] = true;
            }
            if max_rel.is_some_and(|m| rel < m) {
                reordered_down += 1;
            }
            max_s = max_s.max(Some(s));
            max_rel = max_rel.max(Some(rel));
        }
        let mut by_rel = by_arrival.clone();
        by_rel.sort_unstable_by_key(|&(_, s, rel)| (rel, s));
        let mut reordered_up = 0u64;
        let mut max_s = None;
        for &(_, s, _) in &by_rel {
            if max_s.is_some_and(|m| s < m) {
                reordered_up += 1;
            }
            max_s = max_s.max(Some(s));
        }

        let (lost_up, lost_down, lost_unattributed, split) = if mode == ReflectorMode::Stateless {
            (None, None, None, Split::Unavailable)
        } else {
            match self.global_split(lost) {
                Some((up, down, un)) => {
                    let split = if un == 0 {
                        Split::Exact
                    } else {
                        Split::Bounded
                    };
                    (Some(up), Some(down), Some(un), split)
                }
                None if lost == 0 => (Some(0), Some(0), Some(0), Split::Exact),
                None => (Some(0), Some(0), Some(lost), Split::Bounded),
            }
        };

        let start_ns = measure
            .first()
            .map_or(self.measure_start_ns, |p| p.1.sent_ns);
        let end_ns = measure.last().map_or(start_ns, |p| p.1.sent_ns);
        let pdv = match (rtt.quantile(0.99), rtt.min()) {
            (Some(p), Some(m)) => Some(p.saturating_sub(m)),
            _ => None,
        };
        let summary = Summary {
            kind: "summary",
            schema: SCHEMA,
            start_ns,
            duration_ns: end_ns - start_ns,
            interval_ns: self.cfg.interval_ns,
            size: self.cfg.size,
            sent,
            received,
            lost,
            lost_up,
            lost_down,
            lost_unattributed,
            loss_split: split,
            late,
            duplicates: dup_up + dup_down,
            duplicates_up: dup_up,
            duplicates_down: dup_down,
            reordered,
            reordered_up,
            reordered_down,
            malformed: self.malformed,
            unexpected: self.unexpected,
            rtt: Quantiles::of(&rtt),
            dwell: Quantiles::of(&dwell),
            ipdv: Quantiles::of(&ipdv),
            pdv_p99_ns: pdv,
            timeout_ns: self.timeout_ns(),
            hops_up: match (self.cfg.ttl, ttl) {
                (Some(sent_ttl), Some(seen)) if seen > 0 && seen <= sent_ttl => {
                    Some(sent_ttl - seen)
                }
                _ => None,
            },
            reflector: mode,
        };

        // Time series.
        let attribution = self.attribute();
        let width = self.cfg.report_interval_ns;
        let n_bins = if sent == 0 {
            0
        } else {
            ((end_ns - start_ns) / width + 1) as usize
        };
        let mut bins: Vec<(Interval, Histogram, u128, u64)> = (0..n_bins)
            .map(|i| {
                (
                    Interval {
                        kind: "interval",
                        schema: SCHEMA,
                        start_ns: start_ns + i as u64 * width,
                        sent: 0,
                        received: 0,
                        lost: 0,
                        lost_up: Some(0),
                        lost_down: Some(0),
                        lost_unattributed: Some(0),
                        late: 0,
                        duplicates: 0,
                        reordered: 0,
                        rtt: Quantiles::default(),
                        ipdv_mean_abs_ns: None,
                    },
                    Histogram::new(),
                    0u128,
                    0u64,
                )
            })
            .collect();
        let mut prev: Option<(usize, u64)> = None;
        for &(s, p) in &measure {
            let b = &mut bins[((p.sent_ns - start_ns) / width) as usize];
            b.0.sent += 1;
            b.0.duplicates += u64::from(p.dup_up + p.dup_down);
            if reordered_seqs[s] {
                b.0.reordered += 1;
            }
            match p.reply {
                Some(r) if !r.late => {
                    b.0.received += 1;
                    b.1.record(r.rtt);
                    if let Some((ps, pr)) = prev {
                        if self.probes[ps + 1..s]
                            .iter()
                            .all(|q| q.kind != Kind::Measure)
                        {
                            b.2 += u128::from(r.rtt.abs_diff(pr));
                            b.3 += 1;
                        }
                    }
                    prev = Some((s, r.rtt));
                    continue;
                }
                Some(_) => {
                    b.0.late += 1;
                    b.0.lost += 1;
                }
                None => b.0.lost += 1,
            }
            let field = match attribution[s] {
                Some(Attribution::Up) => &mut b.0.lost_up,
                Some(Attribution::Down) => &mut b.0.lost_down,
                _ => &mut b.0.lost_unattributed,
            };
            if let Some(v) = field.as_mut() {
                *v += 1;
            }
        }
        let intervals = bins
            .into_iter()
            .map(|(mut i, h, sum, n)| {
                i.rtt = Quantiles::of(&h);
                i.ipdv_mean_abs_ns = (n > 0).then(|| (sum / u128::from(n)) as u64);
                if mode == ReflectorMode::Stateless {
                    i.lost_up = None;
                    i.lost_down = None;
                    i.lost_unattributed = None;
                }
                i
            })
            .collect();
        Report {
            summary,
            intervals,
            rtt_histogram: rtt,
            ipdv_histogram: ipdv,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reflector::Reflector;
    use std::collections::BTreeMap;
    use std::net::{Ipv4Addr, SocketAddr};

    const PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 9);

    /// A deterministic scenario on a virtual clock, smoltcp/quinn style: a
    /// sender and a real (sans-IO) reflector, one-way delay `owd`, and fates
    /// per sender sequence number decided by the test.
    struct Pair {
        s: SenderSession,
        refl: Reflector,
        now: u64,
        owd: u64,
        /// In flight: (arrival time, to_reflector, bytes).
        wire: Vec<(u64, bool, Vec<u8>)>,
        drop_up: Box<dyn FnMut(u32, usize) -> bool>,
        drop_down: Box<dyn FnMut(u32, usize) -> bool>,
        dup_up: Box<dyn FnMut(u32) -> bool>,
        /// Extra upstream delay per sender seq.
        extra_up: BTreeMap<u32, u64>,
        dropped_up: u64,
        dropped_down: u64,
    }

    impl Pair {
        fn new(cfg: SenderConfig, stateless: bool) -> Pair {
            let now = 1_700_000_000 * SEC;
            let mut refl = Reflector::new();
            refl.set_stateless(stateless);
            Pair {
                s: SenderSession::new(cfg, now),
                refl,
                now,
                owd: 5 * MS,
                wire: Vec::new(),
                drop_up: Box::new(|_, _| false),
                drop_down: Box::new(|_, _| false),
                dup_up: Box::new(|_| false),
                extra_up: BTreeMap::new(),
                dropped_up: 0,
                dropped_down: 0,
            }
        }

        fn run(&mut self) -> Report {
            let mut buf = Vec::new();
            let mut reply = Vec::new();
            for _ in 0..1_000_000 {
                while let Some(seq) = self.s.poll_transmit(self.now, &mut buf) {
                    if (self.drop_up)(seq, buf.len()) {
                        self.dropped_up += 1;
                        continue;
                    }
                    let extra = self.extra_up.get(&seq).copied().unwrap_or(0);
                    self.wire
                        .push((self.now + self.owd + extra, true, buf.clone()));
                    if (self.dup_up)(seq) {
                        self.wire
                            .push((self.now + self.owd + extra + 1, true, buf.clone()));
                    }
                }
                if self.s.is_done() {
                    return self.s.report();
                }
                let next_wire = self.wire.iter().map(|w| w.0).min();
                let next = match (next_wire, self.s.poll_timeout()) {
                    (Some(a), Some(b)) => a.min(b),
                    (a, b) => a.or(b).unwrap(),
                };
                self.now = self.now.max(next);
                let (due, rest): (Vec<_>, Vec<_>) =
                    self.wire.drain(..).partition(|w| w.0 <= self.now);
                self.wire = rest;
                let mut due = due;
                due.sort_by_key(|w| w.0);
                for (t, up, bytes) in due {
                    if up {
                        // 100 us dwell in the reflector.
                        let seq = SenderPacket::new_checked(&bytes[..]).unwrap().seq();
                        self.refl
                            .reflect(PEER, &bytes, t, t + 100_000, 60, &mut reply)
                            .unwrap();
                        if (self.drop_down)(seq, reply.len()) {
                            self.dropped_down += 1;
                            continue;
                        }
                        self.wire
                            .push((t + 100_000 + self.owd, false, reply.clone()));
                    } else {
                        self.s.handle_reply(t, &bytes);
                    }
                }
            }
            panic!("scenario did not finish");
        }
    }

    use crate::twamp::SenderPacket;

    fn cfg(count: u64) -> SenderConfig {
        SenderConfig {
            interval_ns: 10 * MS,
            count: Some(count),
            duration_ns: None,
            size: 100,
            ..SenderConfig::default()
        }
    }

    #[test]
    fn clean_path() {
        let mut p = Pair::new(cfg(200), false);
        let r = p.run().summary;
        assert_eq!((r.sent, r.received, r.lost), (200, 200, 0));
        assert_eq!(r.loss_split, Split::Exact);
        // NTP timestamps carry T2 and T3 to within 1 ns.
        assert!(r.rtt.min_ns.unwrap().abs_diff(10 * MS) <= 2, "{:?}", r.rtt);
        assert!(r.rtt.max_ns.unwrap().abs_diff(10 * MS) <= 2, "{:?}", r.rtt);
        assert_eq!(r.dwell.p50_ns.map(|d| d.abs_diff(100_000) <= 1), Some(true));
        assert_eq!(r.reflector, ReflectorMode::Stateful);
        assert_eq!(r.hops_up, Some(195));
        assert_eq!((r.reordered, r.duplicates, r.malformed), (0, 0, 0));
        assert!(r.ipdv.max_ns.unwrap() <= 4);
    }

    /// Seeded random loss in each direction (only on measurement-sized
    /// packets, so the anchors survive): the split must be exact.
    #[test]
    fn random_loss_split_is_exact() {
        for seed in 1..20u64 {
            let mut p = Pair::new(cfg(300), false);
            let mut x = seed;
            let mut rng = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x % 100
            };
            let mut y = seed * 7919;
            let mut rng2 = move || {
                y ^= y << 13;
                y ^= y >> 7;
                y ^= y << 17;
                y % 100
            };
            p.drop_up = Box::new(move |_, len| len == 100 && rng() < 10);
            p.drop_down = Box::new(move |_, len| len == 100 && rng2() < 15);
            let r = p.run();
            let s = &r.summary;
            assert_eq!(s.lost, p.dropped_up + p.dropped_down, "seed {seed}");
            assert_eq!(s.lost_up, Some(p.dropped_up), "seed {seed}");
            assert_eq!(s.lost_down, Some(p.dropped_down), "seed {seed}");
            assert_eq!(s.loss_split, Split::Exact);
            // The intervals add up to the summary without reordering.
            let up: u64 = r.intervals.iter().map(|i| i.lost_up.unwrap()).sum();
            let down: u64 = r.intervals.iter().map(|i| i.lost_down.unwrap()).sum();
            let sent: u64 = r.intervals.iter().map(|i| i.sent).sum();
            assert_eq!((up, down, sent), (p.dropped_up, p.dropped_down, 300));
            assert_eq!(r.intervals.len(), 3); // 300 x 10 ms in 1 s bins
        }
    }

    #[test]
    fn tail_losses_are_attributed_thanks_to_the_flush_anchor() {
        let mut p = Pair::new(cfg(50), false);
        // The last 5 probes: 2 lost upstream, 3 downstream.
        p.drop_up = Box::new(|seq, len| len == 100 && (seq == 47 || seq == 48));
        p.drop_down = Box::new(|seq, len| len == 100 && seq >= 49);
        let s = p.run().summary;
        assert_eq!((s.lost, s.lost_up, s.lost_down), (5, Some(2), Some(3)));
        assert_eq!(s.loss_split, Split::Exact);
    }

    #[test]
    fn lost_flush_probes_make_the_split_bounded() {
        let mut p = Pair::new(cfg(50), false);
        // seq 0 hello, 1 skipped, 2..=51 measure, 52.. flush. The first flush
        // probe is lost upstream; the last measurement reply downstream.
        p.drop_up = Box::new(|seq, _| seq == 52);
        p.drop_down = Box::new(|seq, _| seq == 51);
        let s = p.run().summary;
        assert_eq!(s.lost, 1);
        assert_eq!(s.lost_down, Some(0));
        assert_eq!(s.lost_up, Some(0));
        assert_eq!(s.lost_unattributed, Some(1));
        assert_eq!(s.loss_split, Split::Bounded);
    }

    #[test]
    fn no_flush_answer_leaves_the_tail_unattributed() {
        let mut p = Pair::new(cfg(50), false);
        p.drop_down = Box::new(|seq, _| seq >= 48);
        p.drop_up = Box::new(|seq, _| seq == 20);
        let s = p.run().summary;
        // 20 upstream (exact: between replies); 48..=51 lost after the last reply.
        assert_eq!(s.lost, 5);
        assert_eq!(s.lost_up, Some(1));
        assert_eq!(s.lost_unattributed, Some(4));
    }

    #[test]
    fn stateless_reflector_gives_no_split() {
        let mut p = Pair::new(cfg(100), true);
        p.drop_up = Box::new(|seq, _| seq % 10 == 3);
        let s = p.run().summary;
        assert_eq!(s.reflector, ReflectorMode::Stateless);
        assert_eq!(s.loss_split, Split::Unavailable);
        assert_eq!(s.lost, 10);
        assert_eq!(s.lost_up, None);
    }

    #[test]
    fn upstream_reordering_and_duplicates() {
        let mut p = Pair::new(cfg(100), false);
        // Probe 10 is held 25 ms upstream: probes 11, 12 overtake it.
        p.extra_up.insert(10, 25 * MS);
        p.dup_up = Box::new(|seq| seq == 30);
        let s = p.run().summary;
        assert_eq!(s.lost, 0);
        assert_eq!(s.reordered, 1);
        assert_eq!(s.reordered_up, 1);
        assert_eq!(s.reordered_down, 0);
        assert_eq!((s.duplicates, s.duplicates_up), (1, 1));
        assert!(s.rtt.max_ns.unwrap().abs_diff(35 * MS) <= 2);
    }

    #[test]
    fn hello_without_answer_fails_in_bounded_time() {
        let mut p = Pair::new(cfg(10), false);
        p.drop_up = Box::new(|_, _| true);
        let start = p.now;
        let r = p.run();
        assert_eq!(r.summary.sent, 0);
        let e = p.s.no_reply().unwrap();
        assert_eq!(e.waited_ns, 3 * SEC);
        assert_eq!(p.now - start, 3 * SEC);
    }

    #[test]
    fn malformed_and_unexpected_replies_are_counted_and_ignored() {
        let mut s = SenderSession::new(cfg(1), 0);
        let mut buf = Vec::new();
        assert_eq!(s.poll_transmit(0, &mut buf), Some(0));
        s.handle_reply(1, &[0u8; 10]);
        let mut reply = Vec::new();
        let mut rf = Reflector::new();
        // A reply for seq 5, never sent.
        SenderRepr {
            seq: 5,
            timestamp: NtpTimestamp(0),
            error_estimate: ErrorEstimate::LOCAL,
        }
        .emit(41, &mut buf);
        rf.reflect(PEER, &buf, 1, 2, 64, &mut reply).unwrap();
        s.handle_reply(3, &reply);
        let r = s.report().summary;
        assert_eq!((r.malformed, r.unexpected), (1, 1));
        assert!(!s.is_done());
    }

    #[test]
    fn duration_bounds_the_run() {
        let c = SenderConfig {
            interval_ns: 100 * MS,
            duration_ns: Some(2 * SEC),
            count: None,
            ..SenderConfig::default()
        };
        let mut p = Pair::new(c, false);
        let start = p.now;
        let s = p.run().summary;
        assert_eq!(s.sent, 20);
        // hello RTT + 2 s + 1 s drain + flush RTT.
        assert!(p.now - start < 3 * SEC + 100 * MS, "{}", p.now - start);
    }
}
