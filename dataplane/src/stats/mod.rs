//! Mergeable statistics: small plain structs with `update`/`record` on the hot
//! path and a pure `merge(&mut self, &Self)`, so per-core tables, nodes and the
//! control plane combine them exactly.
//!
//! - [`Histogram`]: sparse log-linear histogram for RTT quantiles (relative
//!   error at most 1/64), 24 bytes while empty.
//! - [`BurstMeter`]: most packets and bytes in one aligned 1 ms bin, 24 bytes.
#![forbid(unsafe_code)]

pub mod burst;
pub mod histogram;

pub use burst::BurstMeter;
pub use histogram::{Bucket, Histogram};
