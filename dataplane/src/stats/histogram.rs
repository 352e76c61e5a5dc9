//! A sparse, mergeable log-linear histogram of `u64` values (RTTs in ns).
//!
//! # Bucket scheme
//!
//! Each power of two is split into 32 equal sub-buckets ([`SUB_BUCKETS`]):
//!
//! - values `0..64` get one bucket each (exact);
//! - a value `v >= 64` with highest set bit `e` (`2^e <= v < 2^(e+1)`) lies in a
//!   bucket of width `w = 2^(e-5)` starting at `v` rounded down to a multiple of
//!   `w`.
//!
//! The bucket index is `(s << 5) + (v >> s)` with `s = max(0, e - 5)`: 1920
//! buckets (`0..=1919`) cover all of `0..=u64::MAX`, so every value is accepted
//! and nothing is clamped.
//!
//! # Error bound
//!
//! A quantile is reported as the midpoint `low + w/2` of the bucket that holds
//! the nearest-rank sample, clamped into `[min, max]`. For any sample `v` in a
//! bucket `[low, low + w)` with `w >= 2`, `low >= 32 w`, so
//! `|reported - v| <= w/2 <= v/64`:
//!
//! **the relative error of every reported quantile is at most 1/64 = 1.5625 %**
//! (0 for values below 64; `q = 0` and `q = 1` return the exact `min` and `max`).
//!
//! # Size
//!
//! The histogram is one `Vec<u64>`: 24 bytes inline, no heap while empty. The
//! first sample allocates a 5-word header (count, min, max, sum as u128) and
//! then one word per occupied bucket, `(index << 48) | count`, sorted by index.
//! A histogram with 20 occupied buckets holds 25 words of heap (200 bytes, plus
//! at most 3 spare words): see [`Histogram::heap_bytes`]. Bucket counts saturate
//! at 2^48 - 1 (2.8 * 10^14 samples in one bucket); `count` is always the sum
//! of the bucket counts, and `sum` is exact (u128).
//!
//! # Merging
//!
//! [`Histogram::merge`] is exact: merging histograms gives the same value,
//! bit for bit, as recording all their samples into one (as long as no bucket
//! saturates at 2^48 - 1 samples; past that, counts still agree and the sum is
//! kept within `count * [min, max]`). Nodes ship histograms
//! with serde and the control plane merges them; the serialized form carries
//! the bucket scheme (`sub_buckets: 32`) and is validated on deserialization.
#![forbid(unsafe_code)]

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Sub-buckets per power of two.
pub const SUB_BUCKETS: u32 = 1 << SUB_BITS;
const SUB_BITS: u32 = 5;
/// Highest bucket index (that of `u64::MAX`).
const MAX_INDEX: u16 = 1919;

/// Largest count of one bucket.
pub const MAX_BUCKET_COUNT: u64 = (1 << 48) - 1;

// Header word positions.
const COUNT: usize = 0;
const MIN: usize = 1;
const MAX: usize = 2;
const SUM_LO: usize = 3;
const SUM_HI: usize = 4;
const HEADER: usize = 5;

/// Spare words added when the entry list must grow (bounds waste and reallocations).
const GROW: usize = 4;

/// Bucket index of `v`.
#[inline]
fn index_of(v: u64) -> u16 {
    let e = 63 - (v | 1).leading_zeros();
    let s = e.saturating_sub(SUB_BITS);
    // s <= 58 and v >> s < 64: the result is at most 1919.
    ((s << SUB_BITS) as u64 + (v >> s)) as u16
}

/// Lowest value and width of bucket `i` (`i <= MAX_INDEX`); the bucket is
/// `low..=low + (width - 1)`.
#[inline]
fn bounds_of(i: u16) -> (u64, u64) {
    let i = u64::from(i);
    if i < 2 * u64::from(SUB_BUCKETS) {
        return (i, 1);
    }
    let s = (i >> SUB_BITS) - 1;
    let m = i - (s << SUB_BITS); // in 32..64
    (m << s, 1 << s)
}

#[inline]
fn entry(i: u16, count: u64) -> u64 {
    (u64::from(i) << 48) | count
}

#[inline]
fn entry_index(e: u64) -> u16 {
    (e >> 48) as u16
}

#[inline]
fn entry_count(e: u64) -> u64 {
    e & MAX_BUCKET_COUNT
}

/// One bucket as exported (e.g. to Prometheus): samples `v` with
/// `low <= v <= high` (both inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    pub low: u64,
    /// Inclusive upper bound: Prometheus' `le`.
    pub high: u64,
    pub count: u64,
}

/// A sparse log-linear histogram; see the [module documentation](self).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Empty, or `HEADER` words followed by entries sorted by bucket index.
    words: Vec<u64>,
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count())
            .field("min", &self.min())
            .field("max", &self.max())
            .field("p50", &self.quantile(0.5))
            .field("p99", &self.quantile(0.99))
            .field("buckets", &self.entries().len())
            .finish()
    }
}

impl Histogram {
    /// An empty histogram; does not allocate.
    pub const fn new() -> Histogram {
        Histogram { words: Vec::new() }
    }

    /// Records one sample.
    #[inline]
    pub fn record(&mut self, v: u64) {
        self.record_n(v, 1);
    }

    /// Records `n` samples of value `v`. Allocates only for the first sample
    /// and when `v` falls into a bucket not seen before; O(log buckets).
    pub fn record_n(&mut self, v: u64, n: u64) {
        if n == 0 {
            return;
        }
        let i = index_of(v);
        if self.words.is_empty() {
            self.words.reserve_exact(HEADER + GROW);
            self.words.extend_from_slice(&[0, v, v, 0, 0]);
        }
        let entries = &mut self.words[HEADER..];
        let pos = entries.partition_point(|&e| entry_index(e) < i);
        let added = match entries.get_mut(pos) {
            Some(e) if entry_index(*e) == i => {
                let c = entry_count(*e);
                let new = c.saturating_add(n).min(MAX_BUCKET_COUNT);
                *e = entry(i, new);
                new - c
            }
            _ => {
                if self.words.len() == self.words.capacity() {
                    self.words.reserve_exact(GROW.max(self.entries().len() / 8));
                }
                let c = n.min(MAX_BUCKET_COUNT);
                self.words.insert(HEADER + pos, entry(i, c));
                c
            }
        };
        self.add_header(v, v, added, u128::from(v) * u128::from(added));
    }

    fn add_header(&mut self, min: u64, max: u64, count: u64, sum: u128) {
        let w = &mut self.words;
        // count <= 1920 * (2^48 - 1) < 2^59: no overflow.
        w[COUNT] += count;
        w[MIN] = w[MIN].min(min);
        w[MAX] = w[MAX].max(max);
        // sum <= count * 2^64 < 2^123: no overflow.
        let s = (u128::from(w[SUM_HI]) << 64 | u128::from(w[SUM_LO])) + sum;
        w[SUM_LO] = s as u64;
        w[SUM_HI] = (s >> 64) as u64;
    }

    /// Adds all samples of `other`. Exact: the result equals recording both
    /// histograms' samples into one.
    pub fn merge(&mut self, other: &Histogram) {
        if other.is_empty() {
            return;
        }
        if self.is_empty() {
            self.words.clone_from(&other.words);
            return;
        }
        let (a, b) = (self.entries(), other.entries());
        // Count the union first, to grow at most once and exactly.
        let (mut i, mut j, mut union) = (0, 0, 0);
        while i < a.len() || j < b.len() {
            match (a.get(i), b.get(j)) {
                (Some(&x), Some(&y)) if entry_index(x) == entry_index(y) => {
                    i += 1;
                    j += 1;
                }
                (Some(&x), Some(&y)) if entry_index(x) < entry_index(y) => i += 1,
                (Some(_), None) => i += 1,
                _ => j += 1,
            }
            union += 1;
        }
        let (min, max) = (
            self.words[MIN].min(other.words[MIN]),
            self.words[MAX].max(other.words[MAX]),
        );
        let sum = self.sum() + other.sum();
        // Merge in place, from the back: the write position never passes an
        // entry of `self` not yet read, and no new vector is allocated when
        // `other`'s buckets are all present already (the common case of an
        // accumulator).
        let n = a.len();
        self.words.reserve_exact(union - n);
        self.words.resize(HEADER + union, 0);
        let e = &mut self.words[HEADER..];
        let (mut i, mut j, mut k) = (n, b.len(), union);
        while j > 0 {
            let y = b[j - 1];
            k -= 1;
            e[k] = match i.checked_sub(1).map(|p| e[p]) {
                Some(x) if entry_index(x) > entry_index(y) => {
                    i -= 1;
                    x
                }
                Some(x) if entry_index(x) == entry_index(y) => {
                    i -= 1;
                    j -= 1;
                    let c = (entry_count(x) + entry_count(y)).min(MAX_BUCKET_COUNT);
                    entry(entry_index(x), c)
                }
                _ => {
                    j -= 1;
                    y
                }
            };
        }
        // Now k == i: the entries of `self` left are in place already.
        // A bucket saturates only at 2^48 - 1 samples. Then the samples it
        // dropped cannot be told apart in the sum; keep the sum within
        // count * [min, max] so that the mean stays a value between them.
        let count = e.iter().map(|&x| entry_count(x)).sum::<u64>();
        let sum = sum.clamp(
            u128::from(count) * u128::from(min),
            u128::from(count) * u128::from(max),
        );
        let w = &mut self.words;
        w[COUNT] = 0;
        w[SUM_LO] = 0;
        w[SUM_HI] = 0;
        self.add_header(min, max, count, sum);
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.words.get(COUNT).copied().unwrap_or(0)
    }

    /// True when no sample was recorded.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Smallest sample (exact).
    pub fn min(&self) -> Option<u64> {
        self.words.get(MIN).copied()
    }

    /// Largest sample (exact).
    pub fn max(&self) -> Option<u64> {
        self.words.get(MAX).copied()
    }

    /// Exact sum of all samples.
    pub fn sum(&self) -> u128 {
        match (self.words.get(SUM_LO), self.words.get(SUM_HI)) {
            (Some(&lo), Some(&hi)) => u128::from(hi) << 64 | u128::from(lo),
            _ => 0,
        }
    }

    /// Mean of the samples, rounded down (exact integer arithmetic).
    pub fn mean(&self) -> Option<u64> {
        match self.count() {
            0 => None,
            // The mean lies in [min, max], so it fits in u64.
            n => Some((self.sum() / u128::from(n)) as u64),
        }
    }

    /// The nearest-rank `q`-quantile (`q` in `[0, 1]`, clamped): the value of
    /// the sample of rank `max(1, ceil(q * count))` in sorted order, within the
    /// relative error stated in the [module documentation](self). `None` when
    /// empty or when `q` is NaN.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.is_empty() || q.is_nan() {
            return None;
        }
        let (n, min, max) = (self.count(), self.words[MIN], self.words[MAX]);
        let rank = nearest_rank(q, n);
        if rank <= 1 {
            return Some(min);
        }
        if rank >= n {
            return Some(max);
        }
        let mut seen = 0u64;
        for &e in self.entries() {
            seen += entry_count(e);
            if seen >= rank {
                let (low, w) = bounds_of(entry_index(e));
                return Some((low + w / 2).clamp(min, max));
            }
        }
        Some(max)
    }

    /// The occupied buckets in ascending order, for export.
    pub fn buckets(&self) -> impl Iterator<Item = Bucket> + '_ {
        self.entries().iter().map(|&e| {
            let (low, w) = bounds_of(entry_index(e));
            Bucket {
                low,
                high: low + (w - 1),
                count: entry_count(e),
            }
        })
    }

    /// Heap memory held, in bytes (the inline size is `size_of::<Histogram>()`,
    /// 24 bytes).
    pub fn heap_bytes(&self) -> usize {
        self.words.capacity() * std::mem::size_of::<u64>()
    }

    /// Releases spare capacity (e.g. before a flow goes to long-term storage).
    pub fn shrink_to_fit(&mut self) {
        self.words.shrink_to_fit();
    }

    fn entries(&self) -> &[u64] {
        self.words.get(HEADER..).unwrap_or_default()
    }
}

/// The 1-based nearest rank of quantile `q` among `n` samples.
fn nearest_rank(q: f64, n: u64) -> u64 {
    let q = q.clamp(0.0, 1.0);
    // `as` saturates; the product is within [0, n] up to rounding.
    ((q * n as f64).ceil() as u64).clamp(1, n)
}

/// The serialized form.
#[derive(Serialize, Deserialize)]
#[serde(rename = "Histogram")]
struct Wire {
    /// The bucket scheme: sub-buckets per power of two.
    sub_buckets: u32,
    count: u64,
    min: Option<u64>,
    max: Option<u64>,
    sum: u128,
    /// `(bucket index, count)`, ascending by index.
    buckets: Vec<(u16, u64)>,
}

impl Serialize for Histogram {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            sub_buckets: SUB_BUCKETS,
            count: self.count(),
            min: self.min(),
            max: self.max(),
            sum: self.sum(),
            buckets: self
                .entries()
                .iter()
                .map(|&e| (entry_index(e), entry_count(e)))
                .collect(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Histogram {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Histogram, D::Error> {
        let w = Wire::deserialize(d)?;
        Histogram::from_wire(w).map_err(D::Error::custom)
    }
}

impl Histogram {
    fn from_wire(w: Wire) -> Result<Histogram, String> {
        if w.sub_buckets != SUB_BUCKETS {
            return Err(format!(
                "histogram with {} sub-buckets per power of two; this build uses {SUB_BUCKETS}",
                w.sub_buckets
            ));
        }
        let (min, max) = match (w.min, w.max, w.buckets.first(), w.buckets.last()) {
            (None, None, None, None) if w.count == 0 && w.sum == 0 => return Ok(Histogram::new()),
            (Some(min), Some(max), Some(&(first, _)), Some(&(last, _)))
                if min <= max && index_of(min) == first && index_of(max) == last =>
            {
                (min, max)
            }
            _ => return Err("histogram: min/max do not match the buckets".into()),
        };
        let mut words = Vec::with_capacity(HEADER + w.buckets.len());
        words.extend_from_slice(&[0, min, max, 0, 0]);
        let mut prev: Option<u16> = None;
        let mut count = 0u64;
        for &(i, c) in &w.buckets {
            if i > MAX_INDEX || prev.is_some_and(|p| p >= i) || c == 0 || c > MAX_BUCKET_COUNT {
                return Err(format!("histogram: bad bucket ({i}, {c})"));
            }
            prev = Some(i);
            count += c;
            words.push(entry(i, c));
        }
        if count != w.count {
            return Err(format!(
                "histogram: count {} differs from the bucket total {count}",
                w.count
            ));
        }
        let n = u128::from(count);
        if w.sum < n * u128::from(min) || w.sum > n * u128::from(max) {
            return Err(format!(
                "histogram: sum {} outside count * [min, max]",
                w.sum
            ));
        }
        words[COUNT] = count;
        words[SUM_LO] = w.sum as u64;
        words[SUM_HI] = (w.sum >> 64) as u64;
        Ok(Histogram { words })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*
    fn rng(state: &mut u64) -> u64 {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A log-uniform value: random magnitude, random mantissa.
    fn log_uniform(s: &mut u64, max_bits: u32) -> u64 {
        let bits = (rng(s) % u64::from(max_bits + 1)) as u32;
        if bits == 0 {
            0
        } else {
            rng(s) >> (64 - bits)
        }
    }

    fn exact_quantile(sorted: &[u64], q: f64) -> u64 {
        sorted[nearest_rank(q, sorted.len() as u64) as usize - 1]
    }

    /// |got - want| <= want / 64, in exact integer arithmetic.
    fn within_bound(got: u64, want: u64) -> bool {
        u128::from(got.abs_diff(want)) * 64 <= u128::from(want)
    }

    #[test]
    fn index_and_bounds_agree() {
        assert_eq!(index_of(0), 0);
        assert_eq!(index_of(63), 63);
        assert_eq!(index_of(64), 64);
        assert_eq!(index_of(65), 64);
        assert_eq!(index_of(66), 65);
        assert_eq!(index_of(u64::MAX), MAX_INDEX);
        let mut prev_high = None;
        for i in 0..=MAX_INDEX {
            let (low, w) = bounds_of(i);
            let high = low + (w - 1);
            assert_eq!(index_of(low), i);
            assert_eq!(index_of(high), i);
            assert_eq!(
                prev_high.map(|h: u64| h + 1),
                if i == 0 { None } else { Some(low) }
            );
            if w > 1 {
                assert!(low >= u64::from(SUB_BUCKETS) * w, "bucket {i}");
            }
            prev_high = Some(high);
        }
        assert_eq!(prev_high, Some(u64::MAX));
    }

    #[test]
    fn quantile_error_within_bound_on_random_data() {
        let mut s = 0x1234_5678_9abc_def1;
        let qs = [
            0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0,
        ];
        for round in 0..40 {
            let n = 1 + (rng(&mut s) % 5000) as usize;
            let max_bits = [16, 24, 40, 64][round % 4];
            let mut vals: Vec<u64> = (0..n).map(|_| log_uniform(&mut s, max_bits)).collect();
            // Also a narrow distribution, as RTTs are: 40 ms +- 10 %.
            if round % 5 == 0 {
                vals = (0..n)
                    .map(|_| 36_000_000 + rng(&mut s) % 8_000_000)
                    .collect();
            }
            let mut h = Histogram::new();
            for &v in &vals {
                h.record(v);
            }
            vals.sort_unstable();
            assert_eq!(h.count(), n as u64);
            assert_eq!(h.min(), vals.first().copied());
            assert_eq!(h.max(), vals.last().copied());
            let sum: u128 = vals.iter().map(|&v| u128::from(v)).sum();
            assert_eq!(h.sum(), sum);
            assert_eq!(h.mean(), Some((sum / n as u128) as u64));
            for q in qs
                .iter()
                .copied()
                .chain((0..50).map(|_| (rng(&mut s) % 10_001) as f64 / 10_000.0))
            {
                let want = exact_quantile(&vals, q);
                let got = h.quantile(q).unwrap();
                assert!(within_bound(got, want), "q={q} got={got} want={want} n={n}");
            }
            assert_eq!(h.quantile(0.0), vals.first().copied());
            assert_eq!(h.quantile(1.0), vals.last().copied());
        }
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        let mut vals: Vec<u64> = (0..64).rev().chain(0..10).collect();
        for &v in &vals {
            h.record(v);
        }
        vals.sort_unstable();
        for k in 0..=100 {
            let q = f64::from(k) / 100.0;
            assert_eq!(h.quantile(q), Some(exact_quantile(&vals, q)), "q={q}");
        }
    }

    #[test]
    fn merge_equals_recording_everything() {
        let mut s = 77;
        let parts: Vec<Vec<u64>> = (0..4)
            .map(|k| {
                (0..(k * 300 + 1))
                    .map(|_| log_uniform(&mut s, 48))
                    .collect()
            })
            .collect();
        let mut all = Histogram::new();
        let hs: Vec<Histogram> = parts
            .iter()
            .map(|p| {
                let mut h = Histogram::new();
                for &v in p {
                    h.record(v);
                    all.record(v);
                }
                h
            })
            .collect();
        // (a + b) + (c + d) == ((a + b) + c) + d == d + (c + (b + a)) == all
        let mut ab = hs[0].clone();
        ab.merge(&hs[1]);
        let mut cd = hs[2].clone();
        cd.merge(&hs[3]);
        let mut left = ab.clone();
        left.merge(&cd);
        let mut seq = ab;
        seq.merge(&hs[2]);
        seq.merge(&hs[3]);
        let mut rev = hs[3].clone();
        let mut cba = hs[2].clone();
        let mut ba = hs[1].clone();
        ba.merge(&hs[0]);
        cba.merge(&ba);
        rev.merge(&cba);
        assert_eq!(left, all);
        assert_eq!(seq, all);
        assert_eq!(rev, all);
        // Empty is the identity on both sides.
        let mut e = Histogram::new();
        e.merge(&all);
        assert_eq!(e, all);
        let mut a2 = all.clone();
        a2.merge(&Histogram::new());
        assert_eq!(a2, all);
        // Merging allocates exactly.
        assert_eq!(left.heap_bytes(), (HEADER + left.entries().len()) * 8);
    }

    #[test]
    fn merge_into_a_superset_stays_in_place() {
        let mut s = 5;
        let mut acc = Histogram::new();
        let mut part = Histogram::new();
        let mut all = Histogram::new();
        for k in 0..500 {
            let v = log_uniform(&mut s, 40);
            acc.record(v);
            all.record(v);
            if k % 3 == 0 {
                part.record(v);
            }
        }
        for _ in 0..2 {
            let before = acc.words.as_ptr();
            acc.merge(&part);
            all.merge(&part);
            // Every bucket of `part` is in `acc`: no new vector.
            assert_eq!(acc.words.as_ptr(), before);
        }
        // Buckets interleaved on both sides, the new one lower and higher.
        let mut lo_hi = Histogram::new();
        lo_hi.record(0);
        lo_hi.record(u64::MAX);
        acc.merge(&lo_hi);
        all.record(0);
        all.record(u64::MAX);
        assert_eq!(acc, all);
        assert_eq!(acc.count(), 500 + 2 * part.count() + 2);
    }

    #[test]
    fn record_n_equals_repeated_record() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        for (v, n) in [(5u64, 3u64), (1_000_000, 7), (5, 2), (u64::MAX, 1), (0, 4)] {
            a.record_n(v, n);
            for _ in 0..n {
                b.record(v);
            }
        }
        a.record_n(123, 0);
        assert_eq!(a, b);
        assert_eq!(a.count(), 17);
    }

    #[test]
    fn edge_values() {
        let mut h = Histogram::new();
        h.record(u64::MAX);
        assert_eq!(h.quantile(0.5), Some(u64::MAX));
        h.record(0);
        h.record(1);
        assert_eq!(h.count(), 3);
        assert_eq!(h.min(), Some(0));
        assert_eq!(h.max(), Some(u64::MAX));
        assert_eq!(h.sum(), u128::from(u64::MAX) + 1);
        assert_eq!(h.mean(), Some(((u128::from(u64::MAX) + 1) / 3) as u64));
        assert_eq!(h.quantile(0.0), Some(0));
        assert_eq!(h.quantile(0.5), Some(1));
        assert_eq!(h.quantile(1.0), Some(u64::MAX));
        assert_eq!(h.quantile(-3.0), Some(0));
        assert_eq!(h.quantile(7.0), Some(u64::MAX));
        assert_eq!(h.quantile(f64::NAN), None);
        let b: Vec<Bucket> = h.buckets().collect();
        assert_eq!(
            b[0],
            Bucket {
                low: 0,
                high: 0,
                count: 1
            }
        );
        assert_eq!(
            b[1],
            Bucket {
                low: 1,
                high: 1,
                count: 1
            }
        );
        assert_eq!(
            b[2],
            Bucket {
                low: 63 << 58,
                high: u64::MAX,
                count: 1
            }
        );
        // The sum does not overflow with many maximal values.
        let mut big = Histogram::new();
        big.record_n(u64::MAX, u64::MAX);
        assert_eq!(big.count(), MAX_BUCKET_COUNT);
        assert_eq!(big.mean(), Some(u64::MAX));
        let mut bigger = big.clone();
        bigger.merge(&big);
        assert_eq!(bigger.count(), MAX_BUCKET_COUNT);
        assert_eq!(bigger.mean(), Some(u64::MAX));
    }

    #[test]
    fn empty_histogram() {
        let h = Histogram::new();
        assert!(h.is_empty());
        assert_eq!(h.count(), 0);
        assert_eq!((h.min(), h.max(), h.mean()), (None, None, None));
        assert_eq!(h.sum(), 0);
        assert_eq!(h.quantile(0.5), None);
        assert_eq!(h.buckets().count(), 0);
        assert_eq!(h.heap_bytes(), 0);
        assert_eq!(std::mem::size_of::<Histogram>(), 24);
        assert_eq!(h, Histogram::default());
    }

    #[test]
    fn typical_flow_stays_small() {
        // 20 distinct buckets, many samples each.
        let mut h = Histogram::new();
        // 10.0 ms .. 15.7 ms in steps of 0.3 ms; buckets there are 0.26 ms wide.
        for _ in 0..50 {
            for k in 0..20u64 {
                h.record(10_000_000 + k * 300_000);
            }
        }
        assert_eq!(h.buckets().count(), 20);
        assert!(
            h.heap_bytes() <= (HEADER + 20 + 3) * 8,
            "{}",
            h.heap_bytes()
        );
        h.shrink_to_fit();
        assert_eq!(h.heap_bytes(), 200);
        // Recording into an existing bucket does not reallocate.
        let cap = h.heap_bytes();
        h.record(10_000_000);
        assert_eq!(h.heap_bytes(), cap);
    }

    #[test]
    fn bucket_export_covers_all_samples() {
        let mut s = 5;
        let mut h = Histogram::new();
        let vals: Vec<u64> = (0..2000).map(|_| log_uniform(&mut s, 40)).collect();
        for &v in &vals {
            h.record(v);
        }
        let buckets: Vec<Bucket> = h.buckets().collect();
        assert_eq!(buckets.iter().map(|b| b.count).sum::<u64>(), h.count());
        assert!(buckets.windows(2).all(|w| w[0].high < w[1].low));
        for b in &buckets {
            let n = vals.iter().filter(|&&v| b.low <= v && v <= b.high).count() as u64;
            assert_eq!(n, b.count);
        }
    }

    #[test]
    fn serde_round_trip_and_validation() {
        let mut h = Histogram::new();
        for v in [0, 1, 77, 40_000_000, 40_100_000, u64::MAX] {
            h.record(v);
        }
        let json = serde_json::to_string(&h).unwrap();
        let back: Histogram = serde_json::from_str(&json).unwrap();
        assert_eq!(back, h);
        let json_empty = serde_json::to_string(&Histogram::new()).unwrap();
        assert_eq!(
            json_empty,
            r#"{"sub_buckets":32,"count":0,"min":null,"max":null,"sum":0,"buckets":[]}"#
        );
        assert_eq!(
            serde_json::from_str::<Histogram>(&json_empty).unwrap(),
            Histogram::new()
        );

        for bad in [
            r#"{"sub_buckets":64,"count":0,"min":null,"max":null,"sum":0,"buckets":[]}"#,
            r#"{"sub_buckets":32,"count":2,"min":5,"max":5,"sum":10,"buckets":[[5,1]]}"#,
            r#"{"sub_buckets":32,"count":2,"min":5,"max":6,"sum":11,"buckets":[[6,1],[5,1]]}"#,
            r#"{"sub_buckets":32,"count":1,"min":5,"max":5,"sum":10,"buckets":[[5,1]]}"#,
            r#"{"sub_buckets":32,"count":1,"min":5,"max":5,"sum":5,"buckets":[[7,1]]}"#,
            r#"{"sub_buckets":32,"count":1,"min":5,"max":5,"sum":5,"buckets":[[5,0]]}"#,
            r#"{"sub_buckets":32,"count":1,"min":5,"max":5,"sum":5,"buckets":[[1920,1]]}"#,
        ] {
            assert!(serde_json::from_str::<Histogram>(bad).is_err(), "{bad}");
        }
    }
}
