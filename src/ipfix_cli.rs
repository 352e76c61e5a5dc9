//! `analyze --ipfix HOST:PORT`: the flows as IPFIX over UDP (the encoder and
//! its socket are wirelens-ipfix's).

use std::time::{SystemTime, UNIX_EPOCH};

use wirelens_dataplane::report::FlowRecord;
use wirelens_ipfix::udp::{ExporterError, UdpExporter};
use wirelens_ipfix::EncoderConfig;

use crate::exit;

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

pub fn connect(target: &str, domain_id: u32, mtu: usize) -> Result<UdpExporter, ExporterError> {
    UdpExporter::connect(
        target,
        EncoderConfig {
            domain_id,
            mtu,
            ..EncoderConfig::default()
        },
    )
}

/// One finished flow: one data record.
pub fn push(x: &mut Option<UdpExporter>, rec: &FlowRecord) {
    if let Some(x) = x {
        x.push(rec, now_ns());
    }
}

/// Sends what is left and says on stderr what went; fails (exit 1) when a
/// message could not be sent.
pub fn finish(mut x: UdpExporter) -> u8 {
    x.flush(now_ns());
    let s = x.stats();
    let err = x.take_error();
    eprintln!(
        "wirelens: ipfix: {} records in {} messages ({} bytes) to {}{}",
        s.records_sent,
        s.messages_sent,
        s.bytes_sent,
        x.peer(),
        if s.records_skipped > 0 {
            format!(
                ", {} records of mixed address families skipped",
                s.records_skipped
            )
        } else {
            String::new()
        }
    );
    match err {
        Some(e) if s.send_errors > 0 => {
            eprintln!(
                "wirelens: ipfix: {} messages ({} records) could not be sent: {e}",
                s.send_errors, s.records_failed
            );
            exit::INPUT
        }
        _ => exit::OK,
    }
}
