//! Flows: keys, the per-core table, and the TCP analyzer.
//!
//! [`FlowTable::handle`] takes one [`crate::PacketMeta`] at a time (its `ts_ns`
//! is `now`); UDP, ICMP and other protocols get packet, byte, fragment and
//! burst counters per direction; TCP adds [`tcp::TcpConn`]'s analysis.

pub mod dir;
pub(crate) mod frag;
pub mod key;
mod prefetch;
pub mod seq;
pub mod table;
pub mod tcp;

pub use key::FlowKey;
pub use table::{ActiveFlow, Exit, Flow, FlowExport, FlowTable, TableConfig};
