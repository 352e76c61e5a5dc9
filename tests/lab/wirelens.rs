//! `wirelens analyze FILE --format ndjson`, parsed into `serde_json::Value`s.
//!
//! Values, not the serde structs of `report.rs`: a field that is missing or
//! has the wrong type becomes a reported difference of that one field instead
//! of a parse failure of the whole run.

use std::path::Path;
use std::time::Instant;

use serde_json::Value;

use super::run_bounded;

#[derive(Debug)]
pub struct Analysis {
    pub flows: Vec<Value>,
    pub summary: Value,
    pub secs: f64,
}

/// The binary under test: `$WL_WIRELENS_BIN` (e.g. a release build) or the
/// one cargo built for this test.
pub fn binary() -> String {
    std::env::var("WL_WIRELENS_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_wirelens").into())
}

pub fn analyze(pcap: &Path) -> Result<Analysis, String> {
    let t = Instant::now();
    let out = run_bounded(
        120,
        &binary(),
        &[
            "analyze".into(),
            pcap.display().to_string(),
            "--format".into(),
            "ndjson".into(),
        ],
    )?;
    let secs = t.elapsed().as_secs_f64();
    parse_ndjson(&out).map(|(flows, summary)| Analysis {
        flows,
        summary,
        secs,
    })
}

pub fn parse_ndjson(out: &str) -> Result<(Vec<Value>, Value), String> {
    let mut flows = Vec::new();
    let mut summary = None;
    for (i, line) in out.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .map_err(|e| format!("ndjson line {}: {e}: {line}", i + 1))?;
        match v.get("type").and_then(Value::as_str) {
            Some("flow") => {
                if summary.is_some() {
                    return Err(format!("ndjson line {}: a flow after the summary", i + 1));
                }
                flows.push(v);
            }
            Some("summary") => {
                if summary.is_some() {
                    return Err(format!("ndjson line {}: a second summary", i + 1));
                }
                summary = Some(v);
            }
            other => return Err(format!("ndjson line {}: unknown type {other:?}", i + 1)),
        }
    }
    let summary = summary.ok_or("ndjson: no summary line")?;
    Ok((flows, summary))
}

/// `{"ip": .., "port": ..}` -> (ip, port).
pub fn endpoint(v: &Value) -> Option<(std::net::IpAddr, u16)> {
    let ip = v.get("ip")?.as_str()?.parse().ok()?;
    let port = u16::try_from(v.get("port")?.as_u64()?).ok()?;
    Some((ip, port))
}
