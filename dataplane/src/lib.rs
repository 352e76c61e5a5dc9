//! wirelens flow engine.
//!
//! One sans-IO engine serves offline analysis (pcap), the live AF_XDP path and
//! the benchmark rig: every entry point takes `now` (nanoseconds since the Unix
//! epoch) as an argument; nothing here reads a clock, a socket or a file except
//! the frame sources in [`source`], which are thin adapters.
//!
//! Data flow: frame -> [`wire::parse`] -> [`PacketMeta`] -> [`flow::FlowTable::handle`]
//! -> [`report`] records (schema `wirelens.flow.v1`).

pub mod engine;
pub mod flow;
pub mod interval;
pub mod meta;
pub mod pipeline;
pub mod report;
pub mod source;
pub mod stats;
pub mod wire;

pub use engine::Engine;
pub use meta::{Addr, PacketMeta};
/// The live AF_XDP path (feature `xdp`): XDP program loading and AF_XDP sockets.
#[cfg(feature = "xdp")]
pub mod xdp;
