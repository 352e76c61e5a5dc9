//! The Session-Reflector: sans-IO [`Reflector`] plus the UDP loop [`serve`].
//!
//! Stateful TWAMP-light (RFC 5357 4.2, "stateful" mode): each sender (source
//! address and port) gets its own reply counter starting at 0, so the sender
//! can tell upstream from downstream loss (see [`crate::session`]). A sender
//! silent for [`IDLE_NS`] is forgotten (its next probe starts a new session at
//! 0); at most [`MAX_SESSIONS`] are kept, the least recently heard evicted
//! first, in O(1) (an LRU list over a fixed slab: no scan, whatever the
//! number of spoofed sources).
//!
//! Not an amplifier: a reply is exactly as long as its request (the
//! symmetric size of RFC 6038; RFC 5357 4.1.2's 27 octets of recommended
//! sender padding let a sender reach the 41-octet reply header), so a
//! request shorter than that header gets no reply; sources outside the
//! allow-list get none; and token buckets cap the replies per source
//! address and in total ([`Limits`]). Every request not answered is counted
//! by reason in [`ReflectorStats`].
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::str::FromStr;
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
/// Most source addresses whose rate is tracked at once (least recently
/// heard forgotten first; a forgotten source starts with a full bucket).
pub const MAX_SOURCES: usize = 4096;

/// Reply rate limits (token buckets: `rate` replies a second, bursts of `burst`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Replies a second to one source address (all its ports together).
    pub per_source: f64,
    /// Burst allowed to one source address.
    pub per_source_burst: f64,
    /// Replies a second in total.
    pub total: f64,
    /// Burst allowed in total.
    pub total_burst: f64,
}

impl Default for Limits {
    /// 1,000 replies/s per source (a 1 ms probe interval) and 20,000/s in
    /// total, bursts of a quarter second.
    fn default() -> Limits {
        Limits {
            per_source: 1000.0,
            per_source_burst: 250.0,
            total: 20_000.0,
            total_burst: 5000.0,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ns: u64,
}

impl Bucket {
    fn full(burst: f64, now: u64) -> Bucket {
        Bucket {
            tokens: burst,
            at_ns: now,
        }
    }

    /// Takes one token if there is one (refilled at `rate`/s up to `burst`).
    fn take(&mut self, rate: f64, burst: f64, now: u64) -> bool {
        let dt = now.saturating_sub(self.at_ns) as f64 / 1e9;
        self.tokens = (self.tokens + dt * rate).min(burst);
        self.at_ns = self.at_ns.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// An address prefix of the allow-list: `198.18.0.0/15`, `2001:db8::/32`,
/// or a bare address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AllowNet {
    addr: IpAddr,
    len: u8,
}

impl AllowNet {
    /// Whether `ip` (IPv4-mapped IPv6 counts as IPv4) is inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for AllowNet {
    type Err = String;

    fn from_str(s: &str) -> Result<AllowNet, String> {
        let bad = || format!("{s:?} is not an address or CIDR (e.g. 198.18.0.0/15)");
        let (a, l) = match s.trim().split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            Some(l) => l.parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if len > max {
            return Err(bad());
        }
        Ok(AllowNet { addr, len })
    }
}

impl fmt::Display for AllowNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

const NIL: u32 = u32::MAX;

#[derive(Debug)]
struct Slot<K, V> {
    key: K,
    val: V,
    prev: u32,
    next: u32,
}

/// A bounded map with least-recently-used eviction, every operation O(1):
/// a hash index into a fixed slab threaded on a doubly linked list.
#[derive(Debug)]
struct Lru<K, V> {
    index: HashMap<K, u32>,
    slots: Vec<Slot<K, V>>,
    /// Most recently used.
    head: u32,
    /// Least recently used.
    tail: u32,
    cap: usize,
}

impl<K: Hash + Eq + Copy, V> Lru<K, V> {
    fn new(cap: usize) -> Lru<K, V> {
        Lru {
            index: HashMap::with_capacity(cap),
            slots: Vec::with_capacity(cap),
            head: NIL,
            tail: NIL,
            cap: cap.max(1),
        }
    }

    fn len(&self) -> usize {
        self.slots.len()
    }

    fn unlink(&mut self, i: u32) {
        let (p, n) = (self.slots[i as usize].prev, self.slots[i as usize].next);
        match p {
            NIL => self.head = n,
            p => self.slots[p as usize].next = n,
        }
        match n {
            NIL => self.tail = p,
            n => self.slots[n as usize].prev = p,
        }
    }

    fn push_front(&mut self, i: u32) {
        self.slots[i as usize].prev = NIL;
        self.slots[i as usize].next = self.head;
        match self.head {
            NIL => self.tail = i,
            h => self.slots[h as usize].prev = i,
        }
        self.head = i;
    }

    /// The value of `key`, marked most recently used; inserted with `make`
    /// (evicting the least recently used entry when full) if absent. The
    /// flag says whether it was inserted.
    fn get_or_insert(&mut self, key: K, make: impl FnOnce() -> V) -> (&mut V, bool) {
        if let Some(&i) = self.index.get(&key) {
            self.unlink(i);
            self.push_front(i);
            return (&mut self.slots[i as usize].val, false);
        }
        let i = if self.slots.len() < self.cap {
            self.slots.push(Slot {
                key,
                val: make(),
                prev: NIL,
                next: NIL,
            });
            (self.slots.len() - 1) as u32
        } else {
            let t = self.tail;
            self.unlink(t);
            let old = std::mem::replace(&mut self.slots[t as usize].key, key);
            self.index.remove(&old);
            self.slots[t as usize].val = make();
            t
        };
        self.index.insert(key, i);
        self.push_front(i);
        (&mut self.slots[i as usize].val, true)
    }
}

#[derive(Debug, Clone, Copy)]
struct Session {
    next: u32,
    last_ns: u64,
}

/// Counters of a reflector. Every request is counted in exactly one of
/// `reflected`, `malformed`, `too_short`, `not_allowed`, `limited_source`,
/// `limited_total`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReflectorStats {
    pub reflected: u64,
    pub malformed: u64,
    /// Shorter than the 41-octet reply: no reply (it would amplify).
    pub too_short: u64,
    /// From a source outside `--allow`.
    pub not_allowed: u64,
    /// Over the per-source rate.
    pub limited_source: u64,
    /// Over the total rate.
    pub limited_total: u64,
    /// Sessions started.
    pub sessions: u64,
}

impl ReflectorStats {
    /// Requests not answered, whatever the reason.
    pub fn refused(&self) -> u64 {
        self.malformed
            + self.too_short
            + self.not_allowed
            + self.limited_source
            + self.limited_total
    }
}

/// Why [`Reflector::reflect`] did not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not a TWAMP-light test packet.
    Malformed(Malformed),
    /// Shorter than the reply header: answering would amplify.
    TooShort,
    /// The source is outside the allow-list.
    NotAllowed,
    /// The source is over its rate.
    SourceLimit,
    /// The reflector is over its total rate.
    TotalLimit,
}

/// The reflector's state: one reply counter per sender, the rate buckets.
#[derive(Debug)]
pub struct Reflector {
    sessions: Lru<SocketAddr, Session>,
    sources: Lru<IpAddr, Bucket>,
    total: Option<Bucket>,
    allow: Vec<AllowNet>,
    limits: Limits,
    stateless: bool,
    stats: ReflectorStats,
}

impl Default for Reflector {
    fn default() -> Reflector {
        Reflector::new()
    }
}

impl Reflector {
    /// Any source, [`Limits::default`].
    pub fn new() -> Reflector {
        Reflector::with_limits(Limits::default())
    }

    pub fn with_limits(limits: Limits) -> Reflector {
        Reflector {
            sessions: Lru::new(MAX_SESSIONS),
            sources: Lru::new(MAX_SOURCES),
            total: None,
            allow: Vec::new(),
            limits,
            stateless: false,
            stats: ReflectorStats::default(),
        }
    }

    /// Answer only sources inside one of `allow` (empty: any source).
    pub fn set_allow(&mut self, allow: Vec<AllowNet>) {
        self.allow = allow;
    }

    /// Copy the sender's sequence number instead of counting (RFC 5357's
    /// stateless mode; for tests of senders against such reflectors).
    pub fn set_stateless(&mut self, stateless: bool) {
        self.stateless = stateless;
    }

    pub fn stats(&self) -> ReflectorStats {
        self.stats
    }

    /// Sessions held now (at most [`MAX_SESSIONS`]).
    pub fn sessions_held(&self) -> usize {
        self.sessions.len()
    }

    /// Builds the reply to `req` from `peer` into `out` (as long as `req`).
    /// `t2`: when `req` was received; `t3`: when the reply will be sent (ns
    /// since the Unix epoch); `ttl`: the TTL / hop limit `req` arrived with
    /// (0 if unknown). Every refusal is counted.
    pub fn reflect(
        &mut self,
        peer: SocketAddr,
        req: &[u8],
        t2: u64,
        t3: u64,
        ttl: u8,
        out: &mut Vec<u8>,
    ) -> Result<(), Refused> {
        let src = peer.ip().to_canonical();
        if !self.allow.is_empty() && !self.allow.iter().any(|n| n.contains(src)) {
            self.stats.not_allowed += 1;
            return Err(Refused::NotAllowed);
        }
        let pkt = match SenderPacket::new_checked(req) {
            Ok(p) => p,
            Err(e) => {
                self.stats.malformed += 1;
                return Err(Refused::Malformed(e));
            }
        };
        if req.len() < REFLECTOR_HEADER_LEN {
            self.stats.too_short += 1;
            return Err(Refused::TooShort);
        }
        let l = self.limits;
        // Total first: a flood of spoofed sources costs no table work past it.
        let total = self
            .total
            .get_or_insert_with(|| Bucket::full(l.total_burst, t2));
        if !total.take(l.total, l.total_burst, t2) {
            self.stats.limited_total += 1;
            return Err(Refused::TotalLimit);
        }
        let (bucket, _) = self
            .sources
            .get_or_insert(src, || Bucket::full(l.per_source_burst, t2));
        if !bucket.take(l.per_source, l.per_source_burst, t2) {
            self.stats.limited_source += 1;
            return Err(Refused::SourceLimit);
        }
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
        .emit(req.len(), out);
        self.stats.reflected += 1;
        Ok(())
    }

    fn next_seq(&mut self, peer: SocketAddr, now: u64) -> u32 {
        let (s, fresh) = self.sessions.get_or_insert(peer, || Session {
            next: 0,
            last_ns: now,
        });
        if fresh || now.saturating_sub(s.last_ns) >= IDLE_NS {
            self.stats.sessions += 1;
            s.next = 0;
        }
        let seq = s.next;
        s.next = s.next.wrapping_add(1);
        s.last_ns = s.last_ns.max(now);
        seq
    }
}

/// Options of [`serve`].
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    /// Sources answered (empty: any).
    pub allow: Vec<AllowNet>,
    pub limits: Limits,
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
    let mut refl = Reflector::with_limits(opts.limits);
    refl.set_allow(opts.allow.clone());
    refl.set_stateless(opts.stateless);
    // Larger requests are truncated by recv and then answered at the
    // truncated length: never more than what came in.
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
    fn short_requests_and_garbage_get_no_reply() {
        let mut r = Reflector::new();
        let mut out = Vec::new();
        let peer: SocketAddr = "[2001:db8::1]:1".parse().unwrap();
        assert_eq!(
            r.reflect(peer, &req(0, 14), 1, 2, 0, &mut out),
            Err(Refused::TooShort),
            "a 14-octet request would get a 41-octet reply"
        );
        assert_eq!(
            r.reflect(peer, &req(0, 40), 1, 2, 0, &mut out),
            Err(Refused::TooShort)
        );
        r.reflect(peer, &req(0, 41), 1, 2, 0, &mut out).unwrap();
        assert_eq!(out.len(), REFLECTOR_HEADER_LEN);
        assert!(r.reflect(peer, &[1, 2, 3], 1, 2, 0, &mut out).is_err());
        let st = r.stats();
        assert_eq!((st.malformed, st.too_short, st.reflected), (1, 2, 1));
    }

    #[test]
    fn replies_are_never_longer_than_requests() {
        let mut r = Reflector::new();
        let mut out = Vec::new();
        let peer: SocketAddr = "198.18.0.1:9".parse().unwrap();
        for (i, len) in [0usize, 1, 13, 14, 40, 41, 42, 100, 1472, 9000]
            .into_iter()
            .enumerate()
        {
            let mut q = req(i as u32, len.max(14));
            q.truncate(len);
            out.clear();
            let t = 1_000_000_000 + i as u64 * 10_000_000;
            if r.reflect(peer, &q, t, t, 0, &mut out).is_ok() {
                assert_eq!(out.len(), len);
            } else {
                assert!(out.is_empty() || out.len() <= len, "{len}: {}", out.len());
            }
        }
    }

    #[test]
    fn allow_list_answers_only_its_sources() {
        let mut r = Reflector::new();
        r.set_allow(vec![
            "198.18.0.0/15".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ]);
        let mut out = Vec::new();
        let mut ask = |peer: &str| {
            let p: SocketAddr = peer.parse().unwrap();
            r.reflect(p, &req(0, 64), 1, 2, 0, &mut out)
        };
        assert!(ask("198.19.255.1:5").is_ok());
        assert!(
            ask("[::ffff:198.18.0.9]:5").is_ok(),
            "IPv4-mapped counts as IPv4"
        );
        assert!(ask("[2001:db8:5::1]:5").is_ok());
        assert_eq!(ask("198.20.0.1:5"), Err(Refused::NotAllowed));
        assert_eq!(ask("[2001:db9::1]:5"), Err(Refused::NotAllowed));
        assert_eq!(r.stats().not_allowed, 2);
        assert!("198.18.0.0/33".parse::<AllowNet>().is_err());
        assert!("nope".parse::<AllowNet>().is_err());
    }

    #[test]
    fn per_source_rate_is_capped_and_refills() {
        let mut r = Reflector::with_limits(Limits {
            per_source: 100.0,
            per_source_burst: 10.0,
            total: 1e9,
            total_burst: 1e9,
        });
        let mut out = Vec::new();
        let t0 = 1_000_000_000u64;
        let mut ok = 0;
        // 1,000 requests in 100 ms from one address, many ports.
        for i in 0..1000u64 {
            let p: SocketAddr = format!("198.18.0.1:{}", 1000 + i).parse().unwrap();
            if r.reflect(p, &req(0, 64), t0 + i * 100_000, t0, 0, &mut out)
                .is_ok()
            {
                ok += 1;
            }
        }
        // burst 10 + 100/s * 0.0999 s = 19.99.
        assert_eq!(ok, 19);
        assert_eq!(r.stats().limited_source, 1000 - ok);
        // Another source is not affected; the first refills.
        let b: SocketAddr = "198.18.0.2:1".parse().unwrap();
        assert!(r
            .reflect(b, &req(0, 64), t0 + 100_000_000, t0, 0, &mut out)
            .is_ok());
        let a: SocketAddr = "198.18.0.1:1".parse().unwrap();
        assert!(r
            .reflect(a, &req(0, 64), t0 + 200_000_000, t0, 0, &mut out)
            .is_ok());
    }

    /// 10,000 spoofed sources, one request each, 50,000 requests in 1 s:
    /// replies stay within the total rate, the tables within their bounds,
    /// and the last senders still get answers (O(1) eviction, no scan).
    #[test]
    fn a_flood_of_spoofed_sources_stays_within_limits_and_memory() {
        let limits = Limits {
            per_source: 50.0,
            per_source_burst: 5.0,
            total: 5000.0,
            total_burst: 500.0,
        };
        let mut r = Reflector::with_limits(limits);
        let mut out = Vec::new();
        let t0 = 1_000_000_000u64;
        let n = 50_000u64;
        let mut replied_bytes = 0usize;
        let mut asked_bytes = 0usize;
        for i in 0..n {
            let src = i % 10_000;
            let p = SocketAddr::new(
                IpAddr::V4(std::net::Ipv4Addr::from(0xc612_0000 + src as u32)),
                40_000,
            );
            let q = req(i as u32, 41 + (i % 50) as usize);
            asked_bytes += q.len();
            let t = t0 + i * 20_000; // 1 s in all
            if r.reflect(p, &q, t, t, 0, &mut out).is_ok() {
                replied_bytes += out.len();
            }
        }
        let st = r.stats();
        assert_eq!(st.reflected + st.refused(), n);
        // total burst + total rate * 1 s (+1 for rounding).
        assert!(st.reflected <= 5501, "{st:?}");
        assert!(st.reflected >= 5000, "answers up to the limit: {st:?}");
        assert!(replied_bytes <= asked_bytes);
        assert!(r.sessions_held() <= MAX_SESSIONS);
        assert!(r.sources.len() <= MAX_SOURCES);
        assert_eq!(r.sessions.index.len(), r.sessions_held());
    }

    #[test]
    fn lru_evicts_the_least_recently_used() {
        let mut l: Lru<u32, u32> = Lru::new(3);
        for k in [1, 2, 3] {
            l.get_or_insert(k, || k * 10);
        }
        // Touch 1: 2 is now the least recently used.
        assert_eq!(*l.get_or_insert(1, || 0).0, 10);
        let (v, fresh) = l.get_or_insert(4, || 40);
        assert_eq!((*v, fresh), (40, true));
        assert!(!l.index.contains_key(&2));
        assert_eq!(l.len(), 3);
        let (v, fresh) = l.get_or_insert(3, || 0);
        assert_eq!((*v, fresh), (30, false));
        let (_, fresh) = l.get_or_insert(2, || 20);
        assert!(fresh, "2 came back as a new entry, evicting 1");
        assert!(!l.index.contains_key(&1));
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
