//! Bytes per flow delta on the wire, per report encoding, for a capture.
//!
//! ```text
//! wirelens bench pcap --out /tmp/mixed.pcap
//! cargo run --release -p wirelens-ctrl --example report_sizes -- /tmp/mixed.pcap [FLOWS_PER_REPORT]
//! ```
//!
//! Runs the capture through the engine as `wirelens analyze --push` does
//! (same table settings), turns every flow into a whole-flow delta with its
//! RTT histograms, cuts the deltas into reports of FLOWS_PER_REPORT (default
//! 2000, what `analyze --push` sends), encodes every report in every encoding
//! and prints the total bytes and bytes per delta; then checks that each
//! body decodes back to the same report.
use std::time::Instant;

use wirelens_ctrl::codec::{decode, encode, Encoding};
use wirelens_ctrl::report::{FlowDelta, NodeMeta, NodeReport};
use wirelens_dataplane::engine::{Engine, EngineConfig};
use wirelens_dataplane::flow::{FlowExport, TableConfig};
use wirelens_dataplane::source::CaptureReader;
use wirelens_dataplane::wire::LinkType;

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: report_sizes CAPTURE [FLOWS_PER_REPORT]")?;
    let per: usize = match args.next() {
        Some(s) => s.parse().map_err(|e| format!("FLOWS_PER_REPORT: {e}"))?,
        None => 2000,
    };
    let f = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    let mut reader = CaptureReader::new(f).map_err(|e| format!("{path}: {e}"))?;
    let mut engine = Engine::new(EngineConfig {
        table: TableConfig {
            capacity: 1 << 20,
            tcp_idle_ns: 3600 * 1_000_000_000,
            udp_idle_ns: 300 * 1_000_000_000,
            other_idle_ns: 300 * 1_000_000_000,
            ..TableConfig::default()
        },
    });
    let mut flows: Vec<FlowExport> = Vec::new();
    while let Some(fr) = reader.next_frame().map_err(|e| format!("{path}: {e}"))? {
        let link = LinkType::from_linktype(fr.linktype).ok_or("unsupported link type")?;
        engine.handle_frame(fr.ts_ns, link, fr.data);
        while let Some(e) = engine.poll_export() {
            flows.push(e);
        }
    }
    engine.finish();
    while let Some(e) = engine.poll_export() {
        flows.push(e);
    }
    let deltas: Vec<FlowDelta> = flows
        .into_iter()
        .map(|e| {
            let [c2s, s2c] = e.rtt;
            let mut d = FlowDelta::from_record(e.record);
            d.rtt_c2s = (!c2s.is_empty()).then_some(c2s);
            d.rtt_s2c = (!s2c.is_empty()).then_some(s2c);
            d
        })
        .collect();
    let reports: Vec<NodeReport> = deltas
        .chunks(per.max(1))
        .enumerate()
        .map(|(i, c)| {
            let mut r = NodeReport::new(
                "bench-node",
                1,
                i as u64,
                1_795_000_000_000_000_000,
                NodeMeta {
                    version: env!("CARGO_PKG_VERSION").into(),
                    mode: "analyze".into(),
                    source: path.clone(),
                    hostname: None,
                },
            );
            r.flows = c.to_vec();
            r
        })
        .collect();
    let n = deltas.len().max(1);
    println!(
        "{path}: {} flow deltas in {} reports of up to {per}",
        deltas.len(),
        reports.len()
    );
    println!(
        "{:<14} {:>14} {:>12} {:>12} {:>12}",
        "encoding", "bytes", "B/delta", "encode ms", "decode ms"
    );
    for enc in Encoding::ALL {
        let (mut total, mut enc_t, mut dec_t) = (0usize, 0f64, 0f64);
        for r in &reports {
            let t = Instant::now();
            let (ct, ce, body) = encode(r, enc);
            enc_t += t.elapsed().as_secs_f64();
            total += body.len();
            let t = Instant::now();
            let back = decode(Some(ct), ce, &body, 512 << 20).map_err(|e| e.to_string())?;
            dec_t += t.elapsed().as_secs_f64();
            if &back != r {
                return Err(format!(
                    "{}: report {} did not round-trip",
                    enc.name(),
                    r.seq
                ));
            }
        }
        println!(
            "{:<14} {:>14} {:>12.1} {:>12.1} {:>12.1}",
            enc.name(),
            total,
            total as f64 / n as f64,
            enc_t * 1e3,
            dec_t * 1e3
        );
    }
    Ok(())
}
