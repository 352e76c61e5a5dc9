//! Per-node rate limit of `POST /api/v1/report`: one token bucket per node
//! name, pure (time comes in as `now_ns`, as everywhere outside the I/O layer).
//!
//! A node may send `burst` reports at once and `per_sec` per second on
//! average. A report over the limit is refused with 429 and a Retry-After of
//! the seconds until the bucket holds a token again; the node's pusher keeps
//! the report and retries (429 is retryable), so nothing is lost, only delayed.
//!
//! Memory is bounded: at most [`MAX_BUCKETS`] node names are tracked (a
//! shared token can claim any name); when the map is full, buckets that have
//! refilled completely carry no state and are dropped first, and if none has,
//! the request is limited under a shared overflow bucket.
#![forbid(unsafe_code)]

use std::collections::HashMap;

/// Most node names tracked at once.
pub const MAX_BUCKETS: usize = 4096;

const NS: f64 = 1e9;

/// The limit: `per_sec` reports per second per node, bursts of `burst`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub per_sec: f64,
    pub burst: u32,
}

impl Default for RateLimit {
    /// 10 reports/s, bursts of 60: a node reports every few seconds, and a
    /// node that comes back after an outage flushes a 60-report backlog at once.
    fn default() -> Self {
        RateLimit {
            per_sec: 10.0,
            burst: 60,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at_ns: u64,
}

/// Token buckets by node name.
#[derive(Debug)]
pub struct Limiter {
    limit: RateLimit,
    buckets: HashMap<String, Bucket>,
    overflow: Bucket,
}

impl Limiter {
    /// `limit.per_sec` must be positive and `limit.burst` at least 1 (the CLI
    /// checks; other values are clamped to 1e-6 and 1).
    pub fn new(limit: RateLimit) -> Limiter {
        let limit = RateLimit {
            per_sec: if limit.per_sec.is_finite() && limit.per_sec > 0.0 {
                limit.per_sec
            } else {
                1e-6
            },
            burst: limit.burst.max(1),
        };
        Limiter {
            limit,
            buckets: HashMap::new(),
            overflow: Bucket {
                tokens: f64::from(limit.burst),
                at_ns: 0,
            },
        }
    }

    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    fn refill(limit: RateLimit, b: &mut Bucket, now_ns: u64) {
        let dt = now_ns.saturating_sub(b.at_ns) as f64 / NS;
        b.tokens = (b.tokens + dt * limit.per_sec).min(f64::from(limit.burst));
        b.at_ns = b.at_ns.max(now_ns);
    }

    /// Takes one token of `node`'s bucket at `now_ns`. `Err(secs)`: over the
    /// limit; a token is back in `secs` seconds (at least 1, rounded up).
    pub fn check(&mut self, node: &str, now_ns: u64) -> Result<(), u64> {
        let limit = self.limit;
        if !self.buckets.contains_key(node) && self.buckets.len() >= MAX_BUCKETS {
            // Forget the buckets that are full again: they hold no state.
            self.buckets.retain(|_, b| {
                Self::refill(limit, b, now_ns);
                b.tokens < f64::from(limit.burst)
            });
        }
        let b = if self.buckets.contains_key(node) || self.buckets.len() < MAX_BUCKETS {
            self.buckets.entry(node.to_string()).or_insert(Bucket {
                tokens: f64::from(limit.burst),
                at_ns: now_ns,
            })
        } else {
            &mut self.overflow
        };
        Self::refill(limit, b, now_ns);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let secs = ((1.0 - b.tokens) / limit.per_sec).ceil();
            Err(if secs.is_finite() && secs >= 1.0 {
                secs.min(86_400.0) as u64
            } else {
                1
            })
        }
    }

    /// Node names tracked now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn burst_then_rate() {
        let mut l = Limiter::new(RateLimit {
            per_sec: 2.0,
            burst: 3,
        });
        let t = 1_000 * S;
        for _ in 0..3 {
            assert_eq!(l.check("a", t), Ok(()));
        }
        assert_eq!(l.check("a", t), Err(1));
        // Another node has its own bucket.
        assert_eq!(l.check("b", t), Ok(()));
        // Half a second later one token is back (2/s), not two.
        assert_eq!(l.check("a", t + S / 2), Ok(()));
        assert_eq!(l.check("a", t + S / 2), Err(1));
        // Time going backwards refills nothing and breaks nothing.
        assert_eq!(l.check("a", t), Err(1));
        // Long idle: full again, but never more than the burst.
        for _ in 0..3 {
            assert_eq!(l.check("a", t + 3600 * S), Ok(()));
        }
        assert!(l.check("a", t + 3600 * S).is_err());
    }

    #[test]
    fn retry_after_counts_seconds_to_the_next_token() {
        let mut l = Limiter::new(RateLimit {
            per_sec: 0.1,
            burst: 1,
        });
        assert_eq!(l.check("a", 0), Ok(()));
        assert_eq!(l.check("a", 0), Err(10));
        assert_eq!(l.check("a", 4 * S), Err(6));
    }

    #[test]
    fn memory_is_bounded() {
        let mut l = Limiter::new(RateLimit {
            per_sec: 1.0,
            burst: 1,
        });
        for i in 0..MAX_BUCKETS + 10 {
            let _ = l.check(&format!("n{i}"), 0);
        }
        assert_eq!(l.len(), MAX_BUCKETS);
        // The overflow bucket limits the names that did not fit.
        assert!(l.check("new-one", 0).is_err());
        // Once the old buckets refilled, they are dropped for new names.
        assert_eq!(l.check("new-one", 10 * S), Ok(()));
        assert!(l.len() <= MAX_BUCKETS);
    }
}
