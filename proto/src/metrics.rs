//! Prometheus (OpenMetrics text) encoding helpers the node's and the control
//! plane's `/metrics` share: label pairs, counter and gauge families, and the
//! RTT histograms re-bucketed onto fixed bounds in seconds.
#![forbid(unsafe_code)]

use std::fmt;

use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use wirelens_dataplane::stats::Histogram;

/// Label pairs of one sample.
pub type Labels = Vec<(&'static str, String)>;

/// Labels from static pairs.
pub fn l(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// A counter family (`_total` is appended by the encoder) of integer or
/// floating-point (seconds) values.
pub fn counter<V: EncodeCounterValue>(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, V)>,
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        if labels.is_empty() {
            m.encode_counter::<NoLabelSet, V, f64>(&v, None)?;
        } else {
            m.encode_family(&labels)?
                .encode_counter::<NoLabelSet, V, f64>(&v, None)?;
        }
    }
    Ok(())
}

/// A gauge family of integer or floating-point values.
pub fn gauge<V: EncodeGaugeValue>(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, V)>,
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        if labels.is_empty() {
            m.encode_gauge(&v)?;
        } else {
            m.encode_family(&labels)?.encode_gauge(&v)?;
        }
    }
    Ok(())
}

/// A histogram family of RTT histograms, re-bucketed onto [`RTT_BUCKETS_S`].
pub fn rtt_histograms<'a>(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, &'a Histogram)>,
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in rows {
        let (buckets, sum, count) = prometheus_buckets(h);
        m.encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
    }
    Ok(())
}

/// Prometheus bucket bounds of the RTT histograms, in seconds.
pub const RTT_BUCKETS_S: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Re-buckets a log-linear histogram onto [`RTT_BUCKETS_S`]: per-bucket
/// counts (not cumulative), the last for `+Inf`, plus the sum in seconds.
/// A source bucket straddling a bound goes above it: the error is at most
/// one source bucket's width (the histogram's relative error, <= 1.6 %).
pub fn prometheus_buckets(h: &Histogram) -> (Vec<(f64, u64)>, f64, u64) {
    let mut out: Vec<(f64, u64)> = RTT_BUCKETS_S.iter().map(|&b| (b, 0)).collect();
    out.push((f64::MAX, 0));
    for b in h.buckets() {
        let i = RTT_BUCKETS_S
            .iter()
            .position(|&le| b.high as f64 <= le * 1e9)
            .unwrap_or(RTT_BUCKETS_S.len());
        out[i].1 += b.count;
    }
    (out, h.sum() as f64 / 1e9, h.count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebuckets_rtt_in_seconds() {
        let mut h = Histogram::new();
        for v in [40_000, 900_000, 3_000_000, 3_000_000, 20_000_000_000] {
            h.record(v);
        }
        let (b, sum, n) = prometheus_buckets(&h);
        assert_eq!(n, 5);
        assert_eq!(b.len(), RTT_BUCKETS_S.len() + 1);
        assert_eq!(b.iter().map(|x| x.1).sum::<u64>(), 5);
        assert_eq!(b[0], (0.000_05, 1));
        assert_eq!(b[4], (0.001, 1));
        assert_eq!(b[6], (0.005, 2));
        assert_eq!(b[RTT_BUCKETS_S.len()], (f64::MAX, 1));
        assert!((sum - 20.006_94).abs() < 0.5, "{sum}");
    }
}
