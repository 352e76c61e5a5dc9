//! One AF_XDP socket per rx queue: its UMEM, its rings, batched receive.
//!
//! Frame ownership: every UMEM frame is on the fill ring (kernel), on the rx
//! ring (kernel -> us) or in `batch` for the length of one
//! [`recv_batch`](XskSocket::recv_batch) call, after which it goes straight
//! back to the fill ring. xsk-rs `produce` is all-or-nothing, so the fill
//! ring must have room for a whole batch: it is twice the frame count, not
//! just as large, because the kernel publishes a received frame on the rx
//! ring *before* it publishes having taken it off the fill ring (`xsk_flush`),
//! so a ring of exactly `frame_count` slots can look full for a moment. Should
//! the ring still refuse a batch, the frames wait in `pending` (allocated
//! once) and go back first on the next call. A batch's frames go back as
//! soon as the callback has seen them: whatever the caller does with what
//! it took from them (the pipeline's analysis) comes after the refill.
//!
//! Kernel busy polling ([`XskConfig::busy_poll_budget`]): on a machine
//! where the queue's NAPI (the kernel's receive work: the driver's poll,
//! the XDP program, the copy into the UMEM) runs on the worker's core, a
//! worker that spins on the rx ring starves it, and the fill and rx rings
//! look empty for ever. With `SO_PREFER_BUSY_POLL` the worker runs that
//! NAPI itself, inside its own `recvfrom` (one per batch of up to `budget`
//! frames), and the kernel, given the interface's `napi_defer_hard_irqs`
//! and `gro_flush_timeout`, keeps its own softirq out of the way while the
//! worker polls (and takes over again that long after it stops). The
//! worker and the kernel then take turns on one core instead of fighting
//! over it; where NAPI runs on another core, the same calls cost one
//! syscall per batch.

use std::io;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{SystemTime, UNIX_EPOCH};

use xsk_rs::config::{
    BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig,
};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use super::error::{hint_for, XdpError};
use super::iface::rx_queue_count;
use super::program::XdpProgram;
use super::sys;

/// The tx and completion rings are required by the kernel but unused (we
/// never transmit): keep them minimal.
const TX_RING: u32 = 64;
/// `SO_BUSY_POLL`: what enables busy polling on the socket. Our receive
/// calls never block, so the kernel runs one NAPI poll per call whatever
/// the value; it only bounds blocking calls.
const BUSY_POLL_USECS: u32 = 50;

/// How [`XskSocket::recv_batch`] waits when the rx ring is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxMode {
    /// Never block: return 0 at once; the caller spins (a pinned worker).
    /// Syscalls only when the kernel asks for a wakeup.
    BusyPoll,
    /// Block in poll(2) up to `timeout_ms` for frames.
    Poll {
        /// Longest wait per call, in milliseconds.
        timeout_ms: u32,
    },
}

/// How the socket is bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMode {
    /// XDP_ZEROCOPY: the NIC writes into the UMEM.
    ZeroCopy,
    /// XDP_COPY: the kernel copies each frame into the UMEM (veth, generic XDP).
    Copy,
}

impl std::fmt::Display for BindMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BindMode::ZeroCopy => "zero-copy",
            BindMode::Copy => "copy",
        })
    }
}

/// Fixed options of an AF_XDP socket.
#[derive(Debug, Clone)]
pub struct XskConfig {
    /// UMEM frames; a power of two. Also the rx ring size; the fill ring
    /// has twice as many slots.
    pub frame_count: u32,
    /// Bytes per frame: 2048 or 4096. Frames longer than `frame_size - 256`
    /// are dropped by the kernel (counted in `rx_dropped`).
    pub frame_size: u32,
    /// Most frames one `recv_batch` call hands out.
    pub batch_size: u32,
    /// Waiting strategy.
    pub rx_mode: RxMode,
    /// Try XDP_ZEROCOPY before XDP_COPY.
    pub try_zero_copy: bool,
    /// Try a UMEM on huge pages before normal pages.
    pub try_huge_pages: bool,
    /// `Some(budget)`: kernel busy polling (see the module documentation):
    /// in [`RxMode::BusyPoll`] each `recv_batch` that finds fewer than a
    /// batch of frames runs the queue's NAPI for up to `budget` frames.
    /// Where the kernel refuses the socket options, the socket works
    /// without ([`XskSocket::busy_poll_error`]).
    pub busy_poll_budget: Option<u16>,
}

impl Default for XskConfig {
    fn default() -> Self {
        XskConfig {
            frame_count: 4096,
            frame_size: 4096,
            batch_size: 64,
            rx_mode: RxMode::Poll { timeout_ms: 100 },
            try_zero_copy: true,
            try_huge_pages: true,
            busy_poll_budget: None,
        }
    }
}

impl XskConfig {
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
        if self.busy_poll_budget == Some(0) {
            return bad("busy_poll_budget must be at least 1".into());
        }
        if self.batch_size == 0 || self.batch_size > self.frame_count {
            return bad(format!(
                "batch_size {} must be in 1..={}",
                self.batch_size, self.frame_count
            ));
        }
        Ok(())
    }
}

/// AF_XDP socket statistics (`getsockopt(SOL_XDP, XDP_STATISTICS)`): frames
/// the kernel could not deliver to this socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XskStats {
    /// Dropped for other reasons (e.g. frame longer than the UMEM frame).
    pub rx_dropped: u64,
    /// Dropped because of an invalid descriptor.
    pub rx_invalid_descs: u64,
    /// Dropped because the rx ring was full (user space too slow).
    pub rx_ring_full: u64,
    /// Times the fill ring was empty when a frame arrived.
    pub rx_fill_ring_empty_descs: u64,
}

/// An AF_XDP socket bound to one rx queue, registered in the program's XSKMAP.
///
/// `Send`: move it to the worker thread that polls it. Dropping it closes the
/// socket; the kernel then removes it from the XSKMAP and that queue's
/// traffic passes to the stack again (fail-open).
#[derive(Debug)]
pub struct XskSocket {
    iface: String,
    queue: u32,
    bind_mode: BindMode,
    zero_copy_error: Option<String>,
    huge_pages: bool,
    rx_mode: RxMode,
    /// Kernel busy polling in force (the budget), and why not if refused.
    busy_poll: Option<u16>,
    busy_poll_error: Option<String>,
    /// Whether the NAPI check after the first frames is still to do.
    napi_checked: bool,
    fd: RawFd,
    rx: RxQueue,
    fq: FillQueue,
    _cq: CompQueue,
    _tx: TxQueue,
    batch: Vec<FrameDesc>,
    pending: Vec<FrameDesc>,
    // Last, so the rings above go first (xsk-rs keeps its own references too).
    umem: Umem,
}

/// The errno-carrying `io::Error` inside an xsk-rs error, or its message.
pub(crate) fn io_of(err: &dyn std::error::Error) -> io::Error {
    match err
        .source()
        .and_then(|s| s.downcast_ref::<io::Error>())
        .and_then(io::Error::raw_os_error)
    {
        Some(errno) => io::Error::from_raw_os_error(errno),
        None => io::Error::other(err.to_string()),
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl XskSocket {
    /// Binds a socket to `queue` of the interface `program` is attached to
    /// (zero-copy, else copy; huge pages, else normal pages), fills its fill
    /// ring and inserts it into the XSKMAP. libxdp's own program load is
    /// inhibited: ours is the program.
    pub fn bind(program: &XdpProgram, queue: u32, cfg: &XskConfig) -> Result<Self, XdpError> {
        cfg.validate()?;
        let iface = program
            .attachment()
            .ok_or_else(|| {
                XdpError::Config("attach the XDP program before binding sockets".into())
            })?
            .iface
            .clone();
        let size = |n: u32| QueueSize::new(n).map_err(|e| XdpError::Config(e.to_string()));
        let umem_cfg = UmemConfig::builder()
            .frame_size(
                FrameSize::new(cfg.frame_size).map_err(|e| XdpError::Config(e.to_string()))?,
            )
            .fill_queue_size(size(cfg.frame_count * 2)?)
            .comp_queue_size(size(TX_RING)?)
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
            let (umem, mut descs, huge_pages) = Self::umem(&iface, queue, umem_cfg, cfg)?;
            let mode_flag = match bind_mode {
                BindMode::ZeroCopy => BindFlags::XDP_ZEROCOPY,
                BindMode::Copy => BindFlags::XDP_COPY,
            };
            let sock_cfg = SocketConfig::builder()
                .rx_queue_size(size(cfg.frame_count)?)
                .tx_queue_size(size(TX_RING)?)
                .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
                .bind_flags(mode_flag | BindFlags::XDP_USE_NEED_WAKEUP)
                .build();
            // SAFETY: the UMEM was created just above and is not shared, so
            // no socket of it is bound to (iface, queue); the inhibit flag is
            // set regardless, which is what xsk-rs requires for sharing.
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
            let Some((mut fq, cq)) = fq_cq else {
                return Err(XdpError::Config(
                    "xsk-rs returned no fill ring for an unshared UMEM".into(),
                ));
            };
            // SAFETY: `descs` are all the frames of `umem`, none in use yet.
            let filled = unsafe { fq.produce(&descs) };
            if filled != descs.len() {
                return Err(XdpError::Config(format!(
                    "fill ring took {filled} of {} frames",
                    descs.len()
                )));
            }
            // The frames now belong to the kernel; `descs` lives on only as
            // scratch space that rx consume overwrites.
            descs.truncate(cfg.batch_size as usize);
            let fd = rx.fd().as_raw_fd();
            let (busy_poll, busy_poll_error) = match cfg.busy_poll_budget {
                None => (None, None),
                Some(budget) => match sys::set_prefer_busy_poll(fd, BUSY_POLL_USECS, budget) {
                    Ok(()) => (Some(budget), None),
                    Err(e) => (None, Some(e.to_string())),
                },
            };
            program.register_socket(queue, fd)?;
            return Ok(XskSocket {
                iface,
                queue,
                bind_mode,
                zero_copy_error,
                huge_pages,
                rx_mode: cfg.rx_mode,
                busy_poll,
                busy_poll_error,
                napi_checked: false,
                fd,
                rx,
                fq,
                _cq: cq,
                _tx: tx,
                batch: descs,
                pending: Vec::with_capacity(cfg.frame_count as usize),
                umem,
            });
        }
        let source = last_err.unwrap_or_else(|| io::Error::other("no bind mode tried"));
        Err(XdpError::Bind {
            iface,
            queue,
            hint: hint_for(source.raw_os_error()),
            source,
        })
    }

    /// One socket per active rx queue of the attached interface.
    pub fn bind_all(program: &XdpProgram, cfg: &XskConfig) -> Result<Vec<Self>, XdpError> {
        let iface = program
            .attachment()
            .ok_or_else(|| {
                XdpError::Config("attach the XDP program before binding sockets".into())
            })?
            .iface
            .clone();
        let n =
            rx_queue_count(&iface).map_err(|source| XdpError::NoSuchInterface { iface, source })?;
        (0..n).map(|q| Self::bind(program, q, cfg)).collect()
    }

    fn umem(
        iface: &str,
        queue: u32,
        umem_cfg: UmemConfig,
        cfg: &XskConfig,
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

    /// Hands up to `batch_size` received frames to `f(ts_ns, frame)`, then
    /// returns them to the fill ring. `ts_ns` is CLOCK_REALTIME in ns since
    /// the Unix epoch, read once per batch (vDSO, no syscall). Returns the
    /// number of frames; 0 when none came (at once in
    /// [`RxMode::BusyPoll`], after the timeout in [`RxMode::Poll`]).
    ///
    /// If `f` panics, that batch's frames are not recycled (the socket keeps
    /// working with fewer frames).
    pub fn recv_batch(&mut self, mut f: impl FnMut(u64, &[u8])) -> io::Result<usize> {
        if !self.pending.is_empty() {
            // SAFETY: `pending` holds frames of this UMEM that came off the rx
            // ring and that the fill ring refused earlier; nothing uses them.
            if unsafe { self.fq.produce(&self.pending) } == self.pending.len() {
                self.pending.clear();
            }
        }
        // SAFETY: `batch` is scratch space; consume fills it with descriptors
        // of frames of this socket's UMEM.
        let mut n = unsafe { self.rx.consume(&mut self.batch) };
        if n < self.batch.len() && self.busy_poll.is_some() && self.rx_mode == RxMode::BusyPoll {
            // Run the queue's NAPI here: it fills the rx ring for the next
            // call (or for this one, when it found nothing).
            sys::xsk_kick(self.fd)?;
            if n == 0 {
                // SAFETY: as above.
                n = unsafe { self.rx.consume(&mut self.batch) };
            }
        }
        if n == 0 {
            match self.rx_mode {
                RxMode::BusyPoll => {
                    if self.busy_poll.is_none() && self.fq.needs_wakeup() {
                        sys::xsk_kick(self.fd)?;
                    }
                    return Ok(0);
                }
                RxMode::Poll { timeout_ms } => {
                    let timeout = i32::try_from(timeout_ms).unwrap_or(i32::MAX);
                    if !self.rx.poll(timeout)? {
                        return Ok(0);
                    }
                    // SAFETY: as above.
                    n = unsafe { self.rx.consume(&mut self.batch) };
                }
            }
        }
        if n == 0 {
            return Ok(0);
        }
        if !self.napi_checked {
            self.napi_checked = true;
            self.check_napi();
        }
        let ts = now_ns();
        for desc in &self.batch[..n] {
            // SAFETY: `desc` came off this socket's rx ring, so it describes
            // a frame of `self.umem` that the kernel has handed to us; nothing
            // writes it until it is back on the fill ring below.
            let data = unsafe { self.umem.data(desc) };
            f(ts, data.contents());
        }
        // SAFETY: these frames came off the rx ring, belong to this UMEM and
        // are not touched again after this call.
        let filled = unsafe { self.fq.produce(&self.batch[..n]) };
        if filled != n {
            // Rare (see the module doc); `pending` has room for every frame,
            // so this does not allocate.
            self.pending.extend_from_slice(&self.batch[..n]);
        }
        if self.fq.needs_wakeup() {
            sys::xsk_kick(self.fd)?;
        }
        Ok(n)
    }

    /// Once frames have come: without a NAPI id on the socket the kernel
    /// has nothing to busy poll (a driver without NAPI busy-poll support;
    /// veth on recent kernels registers its XDP queues without one), and
    /// the busy-poll calls would only cost a syscall each: stop making them.
    fn check_napi(&mut self) {
        if self.busy_poll.is_some() && self.napi_id().is_none() {
            self.busy_poll = None;
            self.busy_poll_error = Some(
                "the kernel ties no NAPI instance to this socket (SO_INCOMING_NAPI_ID 0): its \
                 driver cannot be busy polled"
                    .into(),
            );
        }
    }

    /// The kernel's drop counters for this socket.
    pub fn stats(&self) -> io::Result<XskStats> {
        let s = self.rx.fd().xdp_statistics()?;
        Ok(XskStats {
            rx_dropped: s.rx_dropped(),
            rx_invalid_descs: s.rx_invalid_descs(),
            rx_ring_full: s.rx_ring_full(),
            rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs(),
        })
    }

    /// The interface.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// The rx queue.
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

    /// The kernel busy-poll budget in force (`None`: not asked for,
    /// refused, or found useless at the first frames: see
    /// [`XskSocket::busy_poll_error`]).
    pub fn busy_poll(&self) -> Option<u16> {
        self.busy_poll
    }

    /// Why the kernel refused busy polling, when it was asked for.
    pub fn busy_poll_error(&self) -> Option<&str> {
        self.busy_poll_error.as_deref()
    }

    /// The NAPI instance the kernel delivers this socket's frames from
    /// (`SO_INCOMING_NAPI_ID`), known once a frame has arrived; `None`
    /// before, or where the driver has none (kernel busy polling then has
    /// nothing to run).
    pub fn napi_id(&self) -> Option<u32> {
        sys::incoming_napi_id(self.fd).ok().flatten()
    }

    /// The waiting strategy.
    pub fn rx_mode(&self) -> RxMode {
        self.rx_mode
    }

    /// Changes the waiting strategy.
    pub fn set_rx_mode(&mut self, mode: RxMode) {
        self.rx_mode = mode;
    }
}

impl AsRawFd for XskSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_is_send() {
        fn send<T: Send>() {}
        send::<XskSocket>();
        send::<XdpProgram>();
    }

    #[test]
    fn config_validation() {
        assert!(XskConfig::default().validate().is_ok());
        let bad = |f: fn(&mut XskConfig)| {
            let mut c = XskConfig::default();
            f(&mut c);
            c.validate().is_err()
        };
        assert!(bad(|c| c.frame_count = 1000));
        assert!(bad(|c| c.frame_size = 3000));
        assert!(bad(|c| c.batch_size = 0));
        assert!(bad(|c| c.batch_size = 8192));
        assert!(bad(|c| c.busy_poll_budget = Some(0)));
    }
}
