//! An AF_XDP socket that transmits: the traffic generator of `wirelens bench live`.
//!
//! Frame ownership: every UMEM frame is in `free` (ours), on the tx ring or
//! in the kernel (from [`send_batch`](XskTx::send_batch) until the kernel
//! puts it on the completion ring), and back in `free` once
//! [`poll_completions`](XskTx::poll_completions) took it off the completion
//! ring. The completion ring has room for every frame, so it never
//! overflows. In copy mode (veth, generic drivers) the kernel transmits only
//! inside `sendto(2)` (`XDP_USE_NEED_WAKEUP` then always asks for a kick):
//! each kick turns up to the kernel's tx budget of descriptors (32 on 6.18)
//! into skbs and hands them to the driver, answering `EAGAIN` when more are
//! left; a frame the driver dropped is still completed (`sendto` answers
//! `EBUSY`), one it could not take (a stopped queue: `EAGAIN`) stays on the
//! ring for the next kick.
//!
//! No XDP program is needed to transmit: the socket's rx ring stays empty.

use std::io;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, RawFd};

use xsk_rs::config::{
    BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig,
};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use super::error::{hint_for, XdpError};
use super::socket::{io_of, BindMode};
use super::sys;

/// Ring size of the unused rx and fill rings (the kernel wants them).
const UNUSED_RING: u32 = 64;

/// Fixed options of a transmitting AF_XDP socket.
#[derive(Debug, Clone)]
pub struct XskTxConfig {
    /// UMEM frames; a power of two. Also the completion ring's size.
    pub frame_count: u32,
    /// Bytes per UMEM frame: 2048 or 4096 (the kernel keeps 256 of them as
    /// headroom, so the longest frame is `frame_size - 256`).
    pub frame_size: u32,
    /// Slots of the tx ring; a power of two, at most `frame_count`.
    pub ring_size: u32,
    /// Try XDP_ZEROCOPY before XDP_COPY.
    pub try_zero_copy: bool,
    /// Try a UMEM on huge pages before normal pages.
    pub try_huge_pages: bool,
}

impl Default for XskTxConfig {
    fn default() -> Self {
        XskTxConfig {
            frame_count: 4096,
            frame_size: 2048,
            ring_size: 2048,
            try_zero_copy: true,
            try_huge_pages: true,
        }
    }
}

impl XskTxConfig {
    fn validate(&self) -> Result<(), XdpError> {
        let bad = |m: String| Err(XdpError::Config(m));
        if !self.frame_count.is_power_of_two() || !(64..=1 << 20).contains(&self.frame_count) {
            return bad(format!(
                "frame_count {} must be a power of two in 64..=1048576",
                self.frame_count
            ));
        }
        if self.frame_size != 2048 && self.frame_size != 4096 {
            return bad(format!(
                "frame_size {} must be 2048 or 4096",
                self.frame_size
            ));
        }
        if !self.ring_size.is_power_of_two() || !(64..=self.frame_count).contains(&self.ring_size) {
            return bad(format!(
                "ring_size {} must be a power of two in 64..={}",
                self.ring_size, self.frame_count
            ));
        }
        Ok(())
    }
}

/// What a transmitting socket did, counted by us.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XskTxCounters {
    /// Frames put on the tx ring.
    pub submitted: u64,
    /// Frames the kernel completed (transmitted, or dropped by the driver).
    pub completed: u64,
    /// `sendto` kicks.
    pub kicks: u64,
    /// Kicks answered `EBUSY`: the driver dropped a frame of that kick
    /// (veth: the peer's queue was full).
    pub kicks_busy: u64,
    /// Kicks answered `EAGAIN` / `ENOBUFS`: the driver could not take more
    /// for now; the frames stay on the ring.
    pub kicks_again: u64,
}

/// A transmitting AF_XDP socket bound to one queue of an interface, in the
/// calling thread's network namespace.
///
/// Call order: [`bind`](Self::bind) -> [`send_batch`](Self::send_batch)
/// (which also reclaims completed frames) as often as wanted ->
/// [`flush`](Self::flush) to wait for the last frames -> drop.
#[derive(Debug)]
pub struct XskTx {
    iface: String,
    queue: u32,
    bind_mode: BindMode,
    zero_copy_error: Option<String>,
    huge_pages: bool,
    fd: RawFd,
    ring_size: usize,
    tx: TxQueue,
    cq: CompQueue,
    _rx: RxQueue,
    _fq: FillQueue,
    /// Frames that are ours to write.
    free: Vec<FrameDesc>,
    /// Scratch for completion-ring reads and for one batch.
    scratch: Vec<FrameDesc>,
    out: Vec<FrameDesc>,
    counters: XskTxCounters,
    // Last, so the rings above go first.
    umem: Umem,
}

impl XskTx {
    /// Binds a transmitting socket to `queue` of `iface` (zero-copy, else
    /// copy; huge pages, else normal pages) with `XDP_USE_NEED_WAKEUP`.
    pub fn bind(iface: &str, queue: u32, cfg: &XskTxConfig) -> Result<Self, XdpError> {
        cfg.validate()?;
        sys::ifindex(iface).map_err(|source| XdpError::NoSuchInterface {
            iface: iface.to_string(),
            source,
        })?;
        // Best effort: only matters without CAP_IPC_LOCK.
        let _ = sys::raise_memlock_limit();
        let size = |n: u32| QueueSize::new(n).map_err(|e| XdpError::Config(e.to_string()));
        let umem_cfg = UmemConfig::builder()
            .frame_size(
                FrameSize::new(cfg.frame_size).map_err(|e| XdpError::Config(e.to_string()))?,
            )
            .fill_queue_size(size(UNUSED_RING)?)
            .comp_queue_size(size(cfg.frame_count)?)
            .build()
            .map_err(|e| XdpError::Config(e.to_string()))?;
        let if_name: Interface = iface
            .parse()
            .map_err(|_| XdpError::Config(format!("interface name {iface:?} contains NUL")))?;
        let modes: &[BindMode] = if cfg.try_zero_copy {
            &[BindMode::ZeroCopy, BindMode::Copy]
        } else {
            &[BindMode::Copy]
        };
        let mut zero_copy_error = None;
        let mut last_err = None;
        for &bind_mode in modes {
            let (umem, descs, huge_pages) = umem(iface, queue, umem_cfg, cfg)?;
            let mode_flag = match bind_mode {
                BindMode::ZeroCopy => BindFlags::XDP_ZEROCOPY,
                BindMode::Copy => BindFlags::XDP_COPY,
            };
            let sock_cfg = SocketConfig::builder()
                .rx_queue_size(size(UNUSED_RING)?)
                .tx_queue_size(size(cfg.ring_size)?)
                .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
                .bind_flags(mode_flag | BindFlags::XDP_USE_NEED_WAKEUP)
                .build();
            // SAFETY: the UMEM was created just above and is not shared, so
            // no other socket of it is bound to (iface, queue).
            let created = unsafe { Socket::new(sock_cfg, &umem, &if_name, queue) };
            let (tx, rx, fq_cq) = match created {
                Ok(parts) => parts,
                Err(e) => {
                    let err = io_of(&e);
                    if bind_mode == BindMode::ZeroCopy {
                        zero_copy_error = Some(err.to_string());
                    }
                    last_err = Some(err);
                    continue;
                }
            };
            let Some((fq, cq)) = fq_cq else {
                return Err(XdpError::Config(
                    "xsk-rs returned no completion ring for an unshared UMEM".into(),
                ));
            };
            let fd = tx.fd().as_raw_fd();
            let n = descs.len();
            return Ok(XskTx {
                iface: iface.to_string(),
                queue,
                bind_mode,
                zero_copy_error,
                huge_pages,
                fd,
                ring_size: cfg.ring_size as usize,
                tx,
                cq,
                _rx: rx,
                _fq: fq,
                free: descs,
                scratch: Vec::with_capacity(n),
                out: Vec::with_capacity(n),
                counters: XskTxCounters::default(),
                umem,
            });
        }
        let source = last_err.unwrap_or_else(|| io::Error::other("no bind mode tried"));
        Err(XdpError::Bind {
            iface: iface.to_string(),
            queue,
            hint: hint_for(source.raw_os_error()),
            source,
        })
    }

    /// Takes completed frames off the completion ring; returns how many.
    pub fn poll_completions(&mut self) -> usize {
        let cap = self.free.capacity() - self.free.len();
        if cap == 0 {
            return 0;
        }
        self.scratch.clear();
        self.scratch.resize(cap, FrameDesc::default());
        // SAFETY: `scratch` is scratch space that consume overwrites with
        // descriptors of frames of this socket's UMEM, which the kernel has
        // finished with.
        let n = unsafe { self.cq.consume(&mut self.scratch) };
        self.free.extend_from_slice(&self.scratch[..n]);
        self.counters.completed += n as u64;
        n
    }

    /// Reclaims completed frames, then writes up to `max` frames with
    /// `fill(buf) -> len` (`buf` is a whole UMEM frame, `len` the frame's
    /// length; 0 skips the slot) and submits them on the tx ring with one
    /// kick. Returns the frames submitted: fewer than `max` when frames or
    /// ring slots ran out (all are in flight: call again).
    pub fn send_batch(
        &mut self,
        max: usize,
        mut fill: impl FnMut(&mut [u8]) -> usize,
    ) -> io::Result<usize> {
        self.poll_completions();
        let want = max.min(self.free.len()).min(self.ring_size);
        let room = self.tx.nb_free(want as u32) as usize;
        let n = want.min(room);
        self.out.clear();
        for _ in 0..n {
            let Some(mut desc) = self.free.pop() else {
                break;
            };
            // SAFETY: `desc` came from `free`: a frame of this UMEM that is
            // on no ring and that the kernel has completed, so nothing else
            // reads or writes it until it is submitted below.
            let mut data = unsafe { self.umem.data_mut(&mut desc) };
            let cap = {
                let mut cur = data.cursor();
                let cap = cur.buf_len();
                cur.set_pos(cap);
                cap
            };
            let len = fill(data.contents_mut()).min(cap);
            data.cursor().set_pos(len);
            if len == 0 {
                self.free.push(desc);
            } else {
                self.out.push(desc);
            }
        }
        if self.out.is_empty() {
            self.kick_if_needed()?;
            return Ok(0);
        }
        // SAFETY: every frame in `out` belongs to this UMEM and is on no
        // other ring; it comes back through the completion ring.
        let put = unsafe { self.tx.produce(&self.out) };
        if put != self.out.len() {
            // All-or-nothing, and `nb_free` said there was room: only a
            // misbehaving kernel gets here. Keep the frames.
            self.free.extend_from_slice(&self.out);
        }
        self.counters.submitted += put as u64;
        self.kick_if_needed()?;
        Ok(put)
    }

    fn kick_if_needed(&mut self) -> io::Result<()> {
        if !self.tx.needs_wakeup() {
            return Ok(());
        }
        self.counters.kicks += 1;
        match sys::xsk_tx_kick(self.fd)? {
            sys::Kick::Done => {}
            sys::Kick::Busy => self.counters.kicks_busy += 1,
            sys::Kick::Again => self.counters.kicks_again += 1,
        }
        Ok(())
    }

    /// Kicks until every submitted frame is completed or `timeout` passed;
    /// returns the frames still in flight.
    pub fn flush(&mut self, timeout: std::time::Duration) -> io::Result<u64> {
        let end = std::time::Instant::now() + timeout;
        loop {
            self.poll_completions();
            let in_flight = self.in_flight();
            if in_flight == 0 || std::time::Instant::now() >= end {
                return Ok(in_flight);
            }
            self.kick_if_needed()?;
            std::thread::yield_now();
        }
    }

    /// Frames submitted and not completed yet.
    pub fn in_flight(&self) -> u64 {
        self.counters.submitted - self.counters.completed
    }

    /// Our counters.
    pub fn counters(&self) -> XskTxCounters {
        self.counters
    }

    /// The kernel's tx counters of this socket: (invalid descriptors, times
    /// the tx ring was found empty).
    pub fn kernel_stats(&self) -> io::Result<(u64, u64)> {
        let s = self.tx.fd().xdp_statistics()?;
        Ok((s.tx_invalid_descs(), s.tx_ring_empty_descs()))
    }

    /// The interface.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// The queue.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// Zero-copy or copy.
    pub fn bind_mode(&self) -> BindMode {
        self.bind_mode
    }

    /// Why zero-copy was refused, when it was tried and refused.
    pub fn zero_copy_error(&self) -> Option<&str> {
        self.zero_copy_error.as_deref()
    }

    /// Whether the UMEM sits on huge pages.
    pub fn huge_pages(&self) -> bool {
        self.huge_pages
    }
}

impl AsRawFd for XskTx {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

fn umem(
    iface: &str,
    queue: u32,
    umem_cfg: UmemConfig,
    cfg: &XskTxConfig,
) -> Result<(Umem, Vec<FrameDesc>, bool), XdpError> {
    let count = NonZeroU32::new(cfg.frame_count)
        .ok_or_else(|| XdpError::Config("frame_count is 0".into()))?;
    if cfg.try_huge_pages {
        if let Ok((umem, descs)) = Umem::new(umem_cfg, count, true) {
            return Ok((umem, descs, true));
        }
    }
    Umem::new(umem_cfg, count, false)
        .map(|(umem, descs)| (umem, descs, false))
        .map_err(|e| {
            let source = io_of(&e);
            XdpError::Umem {
                iface: iface.to_string(),
                queue,
                hint: hint_for(source.raw_os_error()),
                source,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tx_socket_is_send() {
        fn send<T: Send>() {}
        send::<XskTx>();
    }

    #[test]
    fn config_validation() {
        assert!(XskTxConfig::default().validate().is_ok());
        let bad = |f: fn(&mut XskTxConfig)| {
            let mut c = XskTxConfig::default();
            f(&mut c);
            c.validate().is_err()
        };
        assert!(bad(|c| c.frame_count = 1000));
        assert!(bad(|c| c.frame_size = 1024));
        assert!(bad(|c| c.ring_size = 100));
        assert!(bad(|c| c.ring_size = 8192));
    }
}
