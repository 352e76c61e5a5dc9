//! wirelens control plane: aggregates the reports of many nodes (appliances,
//! taps, offline imports) and answers "which service, which path, since when".
//!
//! * [`report`], [`codec`], [`client`], [`auth`]: the protocol, from
//!   `wirelens-proto` (re-exported, so the paths stay).
//! * [`agg`]: pure aggregation of reports into per-service, per-path (client
//!   subnet) and per-flow rows in 10 s and 1 min buckets; exact merges.
//! * [`alerts`]: pure alert rules over a service's buckets.
//! * [`store`]: the [`store::Store`] trait and its SQLite implementation.
//! * [`clickhouse`]: the same trait over ClickHouse, for many control planes
//!   in front of one store.
//! * [`server`]: the HTTP API (axum), token auth, `/metrics`.
//! * [`metrics`]: Prometheus rendering shared with the node, and the
//!   control plane's per-service and per-probe families.
//! * [`limit`]: the per-node rate limit of reports (token buckets).
//! * [`tls`]: rustls for the server (`--tls-cert`/`--tls-key`); the client's
//!   half is `wirelens_proto::tls`, re-exported here.
#![forbid(unsafe_code)]

pub mod agg;
pub mod alerts;
pub mod clickhouse;
pub mod limit;
pub mod metrics;
pub mod server;
pub mod store;
pub mod tls;

pub use wirelens_proto::{auth, client, codec, now_ns, report};

/// The default control plane address of the CLI.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7878";

/// `2026-11-25T13:00:49Z` for a time in ns since the epoch.
pub fn utc(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil from days (H. Hinnant's algorithm), days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses a `since` argument: a relative age (`90s`, `15m`, `2h`, `7d`) or an
/// absolute time in ns since the epoch. Returns the absolute start in ns.
pub fn parse_since(s: &str, now_ns: u64) -> Result<u64, String> {
    let s = s.trim();
    let bad =
        || format!("since {s:?}: use an age like 90s, 15m, 2h, 7d, or ns since the Unix epoch");
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit {
        "" => return Ok(n),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    Ok(now_ns.saturating_sub(n.saturating_mul(mult).saturating_mul(1_000_000_000)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_795_611_473_068_740_400), "2026-11-25T12:57:53Z");
        assert_eq!(utc(951_782_400_000_000_000), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn since_forms() {
        let now = 10_000 * 1_000_000_000;
        assert_eq!(parse_since("90s", now), Ok(now - 90_000_000_000));
        assert_eq!(parse_since("2h", now), Ok(now - 7_200_000_000_000));
        assert_eq!(parse_since("123", now), Ok(123));
        assert!(parse_since("2w", now).is_err());
        assert!(parse_since("", now).is_err());
    }
}
