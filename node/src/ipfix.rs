//! Flow deltas as IPFIX over UDP (`--ipfix HOST:PORT`).
//!
//! The deltas come from the same machinery as the control-plane push
//! ([`crate::push::PushTracker`]): each worker keeps a second tracker that
//! ticks at every export (about once a second) and hands the flows that
//! moved since the previous tick, and the last delta of each flow that left
//! the table, to the exporter thread through a bounded channel; a full
//! channel defers the hand-over and loses nothing (`batches_deferred`), past
//! [`crate::push::MAX_EXITED`] waiting exits the rest are dropped and
//! counted (`exited_dropped`). The thread turns each delta into one IPFIX
//! data record (a flow's first record carries its counters so far, the
//! later ones the change since the previous record), sends the messages,
//! and refreshes the templates on their timer even when idle.
#![forbid(unsafe_code)]

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wirelens_ipfix::udp::{SendStats, UdpExporter};
use wirelens_proto::report::FlowDelta;

use crate::export::now_ns;
use crate::push::PushState;

/// What `/metrics` shows of the IPFIX export.
#[derive(Debug, Default)]
pub struct IpfixState {
    /// The collector, as resolved.
    pub peer: String,
    /// The workers' trackers: deferred hand-overs, dropped exits.
    pub trackers: Arc<Mutex<PushState>>,
    pub sent: Mutex<SendStats>,
}

/// The channel the workers' IPFIX trackers send on.
pub(crate) fn channel() -> (SyncSender<Vec<FlowDelta>>, Receiver<Vec<FlowDelta>>) {
    crate::push::channel()
}

/// The exporter thread: ends when every tracker is gone, after sending
/// what they handed over last.
pub(crate) fn exporter_thread(
    mut x: UdpExporter,
    tick: Duration,
    rx: Receiver<Vec<FlowDelta>>,
    state: Arc<IpfixState>,
) {
    let mut warned = false;
    loop {
        let closed = match rx.recv_timeout(tick) {
            Ok(batch) => {
                let now = now_ns();
                for d in &batch {
                    x.push(&d.flow, now);
                }
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        x.tick(now_ns());
        // Said once per run of failures.
        match x.take_error() {
            Some(e) if !warned => {
                eprintln!(
                    "wirelens: ipfix: sending to {}: {e} (counted in \
                     wirelens_ipfix_send_errors_total; going on)",
                    x.peer()
                );
                warned = true;
            }
            Some(_) => {}
            None => warned = false,
        }
        *state.sent.lock().unwrap_or_else(|e| e.into_inner()) = x.stats();
        if closed {
            break;
        }
    }
}
