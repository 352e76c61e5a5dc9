//! The live AF_XDP receive path (feature `xdp`).
//!
//! [`XdpProgram`] loads `bpf/wirelens.bpf.c`, attaches it to an interface
//! (driver mode, else generic) and detaches it on drop. The program sends
//! the frames its [`Filter`] takes to the AF_XDP socket of their rx queue
//! through an XSKMAP and passes everything else to the stack; a queue
//! without a socket passes too (fail-open: `bpf_redirect_map(&xsks, queue,
//! XDP_PASS)`). [`XskSocket`] is one such socket: its UMEM, rings and a
//! batched [`recv_batch`](XskSocket::recv_batch) that hands frames and one
//! timestamp per batch to a callback without a syscall per frame.
//!
//! ```no_run
//! use wirelens_dataplane::xdp::{self, ModePreference, XdpProgram, XskConfig, XskSocket};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! if let Some(why) = xdp::iface_carries_host_traffic("eth1") {
//!     return Err(format!("refusing to take over eth1: {why} (use --force)").into());
//! }
//! let mut prog = XdpProgram::load()?;
//! prog.set_filter(&xdp::Filter { cidrs: vec!["198.18.0.0/15".parse()?], ports: vec![] })?;
//! let mode = prog.attach("eth1", ModePreference::Auto)?;
//! let mut socks = XskSocket::bind_all(&prog, &XskConfig::default())?;
//! eprintln!("XDP {mode}, AF_XDP {}", socks[0].bind_mode());
//! socks[0].recv_batch(|ts_ns, frame| { let _ = (ts_ns, frame.len()); })?;
//! println!("{:?} {:?}", prog.counters()?, socks[0].stats()?);
//! # Ok(()) }
//! ```
//!
//! [`XskTx`] is the transmitting side (the generator of `wirelens bench
//! live`): its own UMEM, tx and completion rings, batched sends with one
//! `sendto` kick per batch.
//!
//! [`InlineProgram`] is the gateway side (`wirelens run --inline`): a
//! second program that forwards every frame to the peer port through a
//! devmap, in the kernel, and puts header copies into a BPF ring buffer
//! that [`InlineRing`] reads (see `inline.rs` for why forwarding never
//! waits for user space).
//!
//! Unsafe code is confined to `sys.rs` (system calls), `socket.rs` and
//! `tx.rs` (UMEM and ring access through xsk-rs); the other files forbid it.

mod error;
mod iface;
mod inline;
mod program;
mod skel;
mod socket;
mod sys;
mod tx;

pub use error::XdpError;
pub use iface::{enter_netns, iface_carries_host_traffic, interface_exists, rx_queue_count};
pub use inline::{
    InlineCounters, InlinePort, InlineProgram, InlineRing, INLINE_PROGRAM_NAME, INLINE_SNAP,
};
pub use program::{
    AttachMode, AttachState, Attachment, Cidr, Filter, ModePreference, XdpAction, XdpCounters,
    XdpProgram, PROGRAM_NAME,
};
pub use socket::{BindMode, RxMode, XskConfig, XskSocket, XskStats};
pub use sys::raise_memlock_limit;
pub use tx::{XskTx, XskTxConfig, XskTxCounters};
