//! Frame sources: thin adapters that hand raw link-layer frames to the engine.
//!
//! Every source implements one narrow trait, [`FrameSource`], in the spirit of
//! smoltcp's `phy::Device`: the engine asks for a batch, the source calls back
//! once per frame with a borrowed [`Frame`], and the borrow ends when the
//! callback returns. That shape fits all three sources without copies:
//!
//! - [`pcap::CaptureReader`]: pcap/pcapng files (`wirelens analyze`); the frame
//!   borrows the reader's one reusable buffer.
//! - AF_XDP (feature `xdp`, later): the frame borrows a UMEM chunk that goes back
//!   to the fill ring after the batch.
//! - [`synthetic::Synthetic`]: the deterministic traffic generator of
//!   `wirelens bench`; the frame borrows the generator's one buffer.
//!
//! Sources are the only place in the dataplane that does I/O; everything
//! downstream takes `now` as an argument (the sans-IO rule in docs/DESIGN.md).
//!
//! Link types stay the raw `LINKTYPE_*` number (`linktype: u32`) here; mapping it
//! to `wire::LinkType` is the caller's job, so this module does not depend on the
//! wire views.

pub mod pcap;
pub mod synthetic;

pub use pcap::{CaptureError, CaptureFormat, CaptureReader};

/// One captured frame, borrowed from the source for the duration of a callback
/// (or until the next call on the source).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Capture time in nanoseconds since the Unix epoch. 0 when the source has
    /// no timestamp (pcapng Simple Packet Blocks).
    pub ts_ns: u64,
    /// The raw `LINKTYPE_*` value (1 Ethernet, 101 raw IP, 113 Linux SLL, ...).
    pub linktype: u32,
    /// The captured bytes, starting at the link-layer header; `data.len() == caplen`.
    pub data: &'a [u8],
    /// Length of the frame on the wire; may exceed `caplen` when the capture
    /// was cut at a snap length.
    pub orig_len: u32,
    /// Number of captured bytes (`data.len()`).
    pub caplen: u32,
}

/// A batch-oriented source of raw frames (pcap reader, AF_XDP socket,
/// synthetic generator).
///
/// Contract:
/// - `recv_batch` delivers zero or more frames, one call of `f` each, in capture
///   order, and returns how many it delivered. A source chooses its own batch
///   size (the AF_XDP path uses its ring batch, at most 64; the pcap reader 64).
/// - The `&[u8]` inside a [`Frame`] is valid only during the call of `f`; keep
///   what you need (the engine keeps a `PacketMeta`, never the frame).
/// - `Ok(0)` means "nothing now". A finite source (a file) that returns `Ok(0)`
///   is exhausted and then reports [`is_exhausted`](FrameSource::is_exhausted);
///   a live source returns `Ok(0)` when its poll timed out, so the caller can
///   run its timers (`poll_expired(now)`, `poll_export(now)`), and never
///   becomes exhausted.
/// - On `Err`, the frames delivered before the error in this batch have
///   already been passed to `f`. After an error, a file source is exhausted.
/// - No allocation and no syscall per frame (a file source reads through a
///   buffer; a live source makes at most one wake-up syscall per batch).
///
/// The callback is `dyn` so that sources can be chosen at run time
/// (`Box<dyn FrameSource>`); one indirect call per frame is cheap next to
/// parsing it.
pub trait FrameSource {
    /// Delivers the next batch of frames to `f`; returns how many were delivered.
    fn recv_batch(&mut self, f: &mut dyn FnMut(Frame<'_>)) -> std::io::Result<usize>;

    /// True once a finite source has delivered its last frame (or failed).
    /// Live sources keep the default, `false`.
    fn is_exhausted(&self) -> bool {
        false
    }
}
