//! The inline (bump in the wire) program: forwarding in the kernel, header
//! copies to user space (`wirelens run --inline IF_A,IF_B`).
//!
//! [`InlineProgram`] loads `bpf/wirelens_inline.bpf.c`, puts each pair of
//! ports into its devmap (both directions) and attaches to both ports. From
//! the first attach on, every frame a port receives leaves on its peer,
//! redirected by the kernel; user space only reads the header copies of
//! the `frames` ring buffer ([`InlineRing`]) and feeds them to the engine.
//!
//! Fail-open: the program never depends on user space. Dropping an
//! `InlineProgram` (a clean stop, an unwinding panic) turns the copies off
//! and leaves the program attached, forwarding; a killed process leaves it
//! attached with the copies on (the ring fills, counted, frames still
//! forwarded). The next [`attach_pair`](InlineProgram::attach_pair)
//! replaces such a program atomically (one netlink call swaps it), so no
//! frame meets a port without a program. `ip link set dev IF xdp off` on
//! both ports removes the bump (the ports then forward only if, say, a
//! bridge joins them).
#![forbid(unsafe_code)]

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapHandle, RingBuffer, RingBufferBuilder, Xdp, XdpFlags};

use super::error::{errno_of, XdpError};
use super::program::{
    attach_new, load_err, netns_ino, owner_lock, prog_name, AttachMode, AttachState,
    ModePreference, OwnerLock, PROGRAM_NAME,
};
use super::skel::inline::WirelensInlineSkelBuilder;
use super::sys;

/// The kernel-visible name of the inline XDP program.
pub const INLINE_PROGRAM_NAME: &str = "wirelens_inline";

/// Bytes of each frame the program copies for analysis (a frame longer
/// than this reaches the engine cut, like a snap-length capture: every
/// length the engine counts comes from the IP header).
pub const INLINE_SNAP: usize = abi::SNAP;

/// Numbers shared with `bpf/wirelens_inline.h` (a test checks they agree).
pub(crate) mod abi {
    pub const MAX_PORTS: usize = 64;
    pub const SNAP: usize = 256;
    pub const ANALYSE: u32 = 1;
    pub const CNT_SEEN: u32 = 0;
    pub const CNT_FORWARDED: u32 = 1;
    pub const CNT_NO_PEER: u32 = 2;
    pub const CNT_COPIED: u32 = 3;
    pub const CNT_RING_FULL: u32 = 4;
    pub const CNT_NOT_COPIED_EMPTY: u32 = 5;
    pub const CNT_REDIRECT_ERR: u32 = 6;
    pub const CNT_XMIT_DROPS: u32 = 7;
    pub const CNT_MAX: u32 = 8;
    /// `struct wl_inline_rec`: ts_ns, wire_len, ifindex, caplen, pad, data.
    pub const REC_HEADER: usize = 24;
}

/// The inline program's counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InlineCounters {
    /// Frames the program ran on.
    pub seen: u64,
    /// Redirected to the peer port.
    pub forwarded: u64,
    /// The port had no peer in the devmap: passed to the stack.
    pub no_peer: u64,
    /// Header copies handed to user space.
    pub copied: u64,
    /// Not analysed: the ring was full (user space slow or gone); forwarded anyway.
    pub ring_full: u64,
    /// Not analysed: nothing could be copied; forwarded anyway.
    pub not_copied: u64,
    /// Forwarded by the program, but the kernel's redirect failed (peer gone
    /// or down). Counted while the daemon runs (a raw tracepoint).
    pub redirect_err: u64,
    /// Forwarded by the program, but the peer port did not transmit them
    /// (its transmit ring full; a veth whose far end has no XDP or GRO).
    /// Counted while the daemon runs (a raw tracepoint).
    pub xmit_drops: u64,
}

impl InlineCounters {
    /// Frames that did not leave on the peer port, all reasons.
    pub fn not_forwarded(&self) -> u64 {
        self.no_peer + self.redirect_err + self.xmit_drops
    }
}

/// One port of a pair, attached.
#[derive(Debug)]
pub struct InlinePort {
    /// The interface name.
    pub iface: String,
    /// Its index.
    pub ifindex: u32,
    /// The port its frames leave on.
    pub peer: String,
    /// Driver or generic.
    pub mode: AttachMode,
    /// Id of the stale wirelens program replaced (atomically) by this attach.
    pub replaced_stale: Option<u32>,
    netns: Option<u64>,
    _lock: OwnerLock,
}

/// The loaded inline program, its raw-tracepoint counters and the ports it
/// is attached to. See the module documentation for the life cycle.
#[derive(Debug)]
pub struct InlineProgram {
    prog_fd: OwnedFd,
    prog_id: u32,
    peers: MapHandle,
    frames: MapHandle,
    iconfig: MapHandle,
    icounters: MapHandle,
    peers_map_id: u32,
    analyse: bool,
    /// The two raw tracepoint links (redirect errors, transmit drops).
    _links: Vec<libbpf_rs::Link>,
    tracing_error: Option<String>,
    ports: Vec<InlinePort>,
}

fn map_err(map: &'static str, op: impl Into<String>) -> impl FnOnce(libbpf_rs::Error) -> XdpError {
    let op = op.into();
    move |source| XdpError::Map { map, op, source }
}

impl InlineProgram {
    /// Loads (verifies) the program with analysis off and an empty devmap,
    /// and attaches its two raw tracepoint counters (best effort: see
    /// [`tracing_error`](Self::tracing_error)). Attaches to no port.
    pub fn load() -> Result<Self, XdpError> {
        let _ = sys::raise_memlock_limit();
        let mut storage = MaybeUninit::uninit();
        let open = WirelensInlineSkelBuilder::default()
            .open(&mut storage)
            .map_err(load_err)?;
        let skel = open.load().map_err(load_err)?;
        let prog_fd = skel
            .progs
            .wirelens_inline
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| load_err(e.into()))?;
        let mut links = Vec::new();
        let mut tracing_error = None;
        for (prog, tp) in [
            (&skel.progs.wirelens_inline_redirect_err, "xdp_redirect_err"),
            (&skel.progs.wirelens_inline_xmit, "xdp_devmap_xmit"),
        ] {
            match prog.attach_raw_tracepoint(tp) {
                Ok(l) => links.push(l),
                Err(e) => {
                    tracing_error.get_or_insert_with(|| format!("raw tracepoint {tp}: {e}"));
                }
            }
        }
        let maps = &skel.maps;
        let handle = |m: &libbpf_rs::MapMut<'_>| MapHandle::try_from(m).map_err(load_err);
        let peers = handle(&maps.peers)?;
        let peers_map_id = peers.info().map_err(load_err)?.info.id;
        let prog = InlineProgram {
            prog_id: libbpf_rs::Program::id_from_fd(prog_fd.as_fd()).map_err(load_err)?,
            prog_fd,
            peers,
            frames: handle(&maps.frames)?,
            iconfig: handle(&maps.iconfig)?,
            icounters: handle(&maps.icounters)?,
            peers_map_id,
            analyse: false,
            _links: links,
            tracing_error,
            ports: Vec::new(),
        };
        prog.write_config()?;
        Ok(prog)
    }

    /// The kernel id of the loaded program.
    pub fn prog_id(&self) -> u32 {
        self.prog_id
    }

    /// Why the redirect-error and transmit-drop counters are not running
    /// (their raw tracepoints could not be attached), if so.
    pub fn tracing_error(&self) -> Option<&str> {
        self.tracing_error.as_deref()
    }

    /// The ports attached so far, in attach order.
    pub fn ports(&self) -> &[InlinePort] {
        &self.ports
    }

    fn write_config(&self) -> Result<(), XdpError> {
        let flags = if self.analyse { abi::ANALYSE } else { 0 };
        let mut v = flags.to_ne_bytes().to_vec();
        v.extend_from_slice(&self.peers_map_id.to_ne_bytes());
        self.iconfig
            .update(&0u32.to_ne_bytes(), &v, MapFlags::ANY)
            .map_err(map_err("iconfig", "writing the analysis flag"))
    }

    /// Turns the header copies on or off (forwarding is not affected).
    pub fn set_analysis(&mut self, on: bool) -> Result<(), XdpError> {
        self.analyse = on;
        self.write_config()
    }

    /// Makes `a` and `b` a pair (the frames of each leave on the other) and
    /// attaches to both, `a` first, in the calling thread's network
    /// namespace. The devmap is filled before the first attach, so a port
    /// forwards from the moment it has the program. A stale wirelens
    /// program (its owner dead) is replaced in one netlink call; a foreign
    /// program, or a port held by a live wirelens, is an error.
    pub fn attach_pair(&mut self, a: &str, b: &str, pref: ModePreference) -> Result<(), XdpError> {
        if a == b {
            return Err(XdpError::Config(format!("{a} cannot be its own peer")));
        }
        for p in [a, b] {
            if self.ports.iter().any(|q| q.iface == p) {
                return Err(XdpError::Config(format!("{p} is in two pairs")));
            }
        }
        if self.ports.len() + 2 > abi::MAX_PORTS {
            return Err(XdpError::Config(format!(
                "at most {} ports ({} pairs)",
                abi::MAX_PORTS,
                abi::MAX_PORTS / 2
            )));
        }
        let index = |iface: &str| {
            sys::ifindex(iface).map_err(|source| XdpError::NoSuchInterface {
                iface: iface.to_string(),
                source,
            })
        };
        let (ia, ib) = (index(a)?, index(b)?);
        let netns = netns_ino();
        let locks = [owner_lock(a, netns)?, owner_lock(b, netns)?];
        // struct bpf_devmap_val: ifindex, then the (unused) program fd.
        let val = |ifindex: u32| {
            let mut v = ifindex.to_ne_bytes().to_vec();
            v.extend_from_slice(&0i32.to_ne_bytes());
            v
        };
        for (from, to) in [(ia, ib), (ib, ia)] {
            self.peers
                .update(&from.to_ne_bytes(), &val(to), MapFlags::ANY)
                .map_err(map_err("peers", format!("adding port {from} -> {to}")))?;
        }
        let xdp = Xdp::new(self.prog_fd.as_fd());
        for ((iface, ifindex, peer), lock) in [(a, ia, b), (b, ib, a)].into_iter().zip(locks) {
            let (mode, replaced_stale) = attach_replacing(&xdp, iface, ifindex, pref)?;
            self.ports.push(InlinePort {
                iface: iface.to_string(),
                ifindex,
                peer: peer.to_string(),
                mode,
                replaced_stale,
                netns,
                _lock: lock,
            });
        }
        Ok(())
    }

    /// What is attached now on each port (asked of the kernel). Call it in
    /// the network namespace of the attach.
    pub fn attach_states(&self) -> Result<Vec<(&str, AttachState)>, XdpError> {
        let xdp = Xdp::new(self.prog_fd.as_fd());
        let mut out = Vec::with_capacity(self.ports.len());
        for p in &self.ports {
            if p.netns.is_some() && netns_ino() != p.netns {
                return Err(XdpError::Config(
                    "attach state asked from another network namespace than the attach".into(),
                ));
            }
            let st = match xdp.query_id(p.ifindex as i32, p.mode.flags()) {
                Ok(id) if id == self.prog_id => AttachState::Ours,
                Ok(0) => AttachState::Gone,
                Ok(id) => AttachState::Replaced(id),
                Err(e) if errno_of(&e) == Some(libc::ENODEV) => AttachState::Gone,
                Err(source) => {
                    return Err(XdpError::Query {
                        iface: p.iface.clone(),
                        source,
                    })
                }
            };
            out.push((p.iface.as_str(), st));
        }
        Ok(out)
    }

    /// The counters, summed over all CPUs.
    pub fn counters(&self) -> Result<InlineCounters, XdpError> {
        let mut c = [0u64; abi::CNT_MAX as usize];
        for (idx, slot) in (0..abi::CNT_MAX).zip(c.iter_mut()) {
            let per_cpu = self
                .icounters
                .lookup_percpu(&idx.to_ne_bytes(), MapFlags::ANY)
                .map_err(map_err("icounters", format!("reading counter {idx}")))?
                .unwrap_or_default();
            *slot = per_cpu
                .iter()
                .filter_map(|v| v.get(..8).and_then(|b| b.try_into().ok()))
                .map(u64::from_ne_bytes)
                .sum();
        }
        let at = |i: u32| c[i as usize];
        Ok(InlineCounters {
            seen: at(abi::CNT_SEEN),
            forwarded: at(abi::CNT_FORWARDED),
            no_peer: at(abi::CNT_NO_PEER),
            copied: at(abi::CNT_COPIED),
            ring_full: at(abi::CNT_RING_FULL),
            not_copied: at(abi::CNT_NOT_COPIED_EMPTY),
            redirect_err: at(abi::CNT_REDIRECT_ERR),
            xmit_drops: at(abi::CNT_XMIT_DROPS),
        })
    }

    /// The reader of the header copies (one per program: the ring has one
    /// consumer position).
    pub fn ring(&self) -> Result<InlineRing, XdpError> {
        InlineRing::new(&self.frames)
    }
}

impl Drop for InlineProgram {
    fn drop(&mut self) {
        // Forward only from now on; the program stays attached (fail-open).
        if let Err(e) = self.set_analysis(false) {
            eprintln!("wirelens: {e}");
        }
    }
}

/// Attaches the program behind `xdp` to `ifindex`, replacing a stale
/// wirelens program (tap or inline) in its own mode in one netlink call.
/// The caller holds the port's liveness lock, so a wirelens program found
/// there has no live owner.
fn attach_replacing(
    xdp: &Xdp<'_>,
    iface: &str,
    ifindex: u32,
    pref: ModePreference,
) -> Result<(AttachMode, Option<u32>), XdpError> {
    let q = xdp.query(ifindex as i32, XdpFlags::NONE).ok();
    let existing = q.map(|q| {
        [
            (q.drv_prog_id, AttachMode::Driver),
            (q.skb_prog_id, AttachMode::Generic),
        ]
    });
    for (id, mode) in existing.into_iter().flatten() {
        if id == 0 {
            continue;
        }
        let name = prog_name(id).unwrap_or_else(|| "?".into());
        if name != INLINE_PROGRAM_NAME && name != PROGRAM_NAME {
            return Err(XdpError::ForeignProgram {
                iface: iface.to_string(),
                id,
                name,
            });
        }
        let allowed = match pref {
            ModePreference::Auto => true,
            ModePreference::DriverOnly => mode == AttachMode::Driver,
            ModePreference::GenericOnly => mode == AttachMode::Generic,
        };
        if !allowed {
            // Driver and generic programs cannot coexist: switching modes
            // means a detach first, a gap in forwarding. Not behind the
            // user's back.
            return Err(XdpError::Config(format!(
                "{iface} runs wirelens program {id} in {mode} mode; another --mode would need \
                 it detached first, which stops forwarding until the new attach. Keep \
                 --mode auto, or detach it (`ip link set dev {iface} xdp off`) when a gap is \
                 acceptable"
            )));
        }
        // Same mode, no UPDATE_IF_NOEXIST: the kernel swaps the program.
        xdp.attach(ifindex as i32, mode.flags())
            .map_err(|e| XdpError::Attach {
                iface: iface.to_string(),
                driver: format!("replacing stale wirelens program {id} in {mode} mode: {e}"),
                generic: "not tried (the stale program's mode is kept)".into(),
                hint: super::error::hint_for(errno_of(&e)),
            })?;
        return Ok((mode, Some(id)));
    }
    let mode = attach_new(xdp, iface, ifindex, pref, XdpFlags::UPDATE_IF_NOEXIST)?;
    Ok((mode, None))
}

/// Most records one [`InlineRing::recv_batch`] hands out.
const BATCH: usize = 64;

/// Copies taken out of the ring by the libbpf callback, waiting for the
/// caller's callback.
#[derive(Debug, Default)]
struct Pending {
    /// `ts_ns (8) wire_len (4) caplen (4) data (caplen)` per record.
    bytes: Vec<u8>,
    count: usize,
    /// Records too short to be ours (never expected): skipped, counted.
    malformed: u64,
}

/// The callback's "stop: the batch is full" (any negative value ends the
/// libbpf consume loop; the record it was handed is already kept).
const BATCH_FULL: i32 = -libc::E2BIG;

/// Takes one ring record (`struct wl_inline_rec`) into `p`; returns what
/// the libbpf callback returns ([`BATCH_FULL`] once `p` holds a batch).
fn keep(p: &mut Pending, rec: &[u8]) -> i32 {
    let field = |at: usize| -> Option<u32> {
        rec.get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_ne_bytes)
    };
    let ts = rec
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_ne_bytes);
    let (Some(ts), Some(wire), Some(cap)) = (ts, field(8), field(16)) else {
        p.malformed += 1;
        return 0;
    };
    let end = abi::REC_HEADER + (cap as usize).min(abi::SNAP);
    let Some(data) = rec.get(abi::REC_HEADER..end) else {
        p.malformed += 1;
        return 0;
    };
    p.bytes.extend_from_slice(&ts.to_ne_bytes());
    p.bytes.extend_from_slice(&wire.to_ne_bytes());
    p.bytes
        .extend_from_slice(&(data.len() as u32).to_ne_bytes());
    p.bytes.extend_from_slice(data);
    p.count += 1;
    if p.count >= BATCH {
        BATCH_FULL
    } else {
        0
    }
}

/// How often the CLOCK_REALTIME - CLOCK_MONOTONIC offset is measured again
/// (a stepped wall clock shows within this long).
const OFFSET_EVERY: Duration = Duration::from_secs(1);

/// The consumer of the inline program's header copies.
pub struct InlineRing {
    rb: RingBuffer<'static>,
    pending: Arc<Mutex<Pending>>,
    /// CLOCK_REALTIME minus CLOCK_MONOTONIC, ns: the program stamps with the latter.
    realtime_offset: i128,
    offset_at: std::time::Instant,
    _map: MapHandle,
}

impl std::fmt::Debug for InlineRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineRing")
            .field("realtime_offset", &self.realtime_offset)
            .finish_non_exhaustive()
    }
}

/// CLOCK_REALTIME minus CLOCK_MONOTONIC, ns.
fn realtime_offset() -> i128 {
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    i128::try_from(real).unwrap_or(0) - i128::from(sys::monotonic_ns())
}

impl InlineRing {
    fn new(frames: &MapHandle) -> Result<InlineRing, XdpError> {
        let map = MapHandle::try_from(frames).map_err(map_err("frames", "duplicating"))?;
        let pending = Arc::new(Mutex::new(Pending::default()));
        let sink = pending.clone();
        let mut b = RingBufferBuilder::new();
        b.add(&map, move |rec: &[u8]| {
            keep(&mut sink.lock().unwrap_or_else(|e| e.into_inner()), rec)
        })
        .map_err(map_err("frames", "opening the ring buffer"))?;
        let rb = b
            .build()
            .map_err(map_err("frames", "mapping the ring buffer"))?;
        Ok(InlineRing {
            rb,
            pending,
            realtime_offset: realtime_offset(),
            offset_at: std::time::Instant::now(),
            _map: map,
        })
    }

    /// Hands up to 64 header copies to `f(ts_ns, wire_len, bytes)`
    /// (`ts_ns`: CLOCK_REALTIME when the program saw the frame; `bytes`: the
    /// first min(wire_len, [`INLINE_SNAP`]) bytes). `wait`: when the ring is
    /// empty, wait for a copy up to that long. Returns how many were handed.
    pub fn recv_batch(
        &mut self,
        wait: Option<Duration>,
        mut f: impl FnMut(u64, u32, &[u8]),
    ) -> std::io::Result<usize> {
        if self.offset_at.elapsed() >= OFFSET_EVERY {
            self.realtime_offset = realtime_offset();
            self.offset_at = std::time::Instant::now();
        }
        let mut r = self.rb.consume_raw_n(BATCH);
        if r == 0 {
            if let Some(t) = wait {
                r = self.rb.poll_raw(t);
            }
        }
        if r < 0 && r != BATCH_FULL && r != -libc::EINTR {
            return Err(std::io::Error::from_raw_os_error(-r));
        }
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let mut rest = p.bytes.as_slice();
        let mut n = 0;
        while rest.len() >= 16 {
            let (head, tail) = rest.split_at(16);
            let word = |at: usize| {
                u32::from_ne_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]])
            };
            let ts = u64::from_ne_bytes([
                head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7],
            ]);
            let (wire, cap) = (word(8), word(12) as usize);
            let Some((data, tail)) = (tail.len() >= cap).then(|| tail.split_at(cap)) else {
                break;
            };
            let real = i128::from(ts) + self.realtime_offset;
            f(u64::try_from(real).unwrap_or(0), wire, data);
            n += 1;
            rest = tail;
        }
        p.bytes.clear();
        p.count = 0;
        Ok(n)
    }

    /// Records skipped because they were too short (a layout mismatch with
    /// the program; never expected).
    pub fn malformed(&self) -> u64 {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .malformed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ts: u64, wire: u32, cap: u32, fill: u8) -> Vec<u8> {
        let mut r = ts.to_ne_bytes().to_vec();
        for v in [wire, 7, cap, 0] {
            r.extend_from_slice(&v.to_ne_bytes());
        }
        r.resize(abi::REC_HEADER + abi::SNAP, fill);
        r
    }

    /// A record keeps its time, wire length and only its `caplen` bytes; a
    /// short one is counted, not kept; a full batch stops the consumer.
    #[test]
    fn records_are_kept_cut_and_counted() {
        let mut p = Pending::default();
        assert_eq!(keep(&mut p, &record(5, 1514, 256, 0xab)), 0);
        assert_eq!(keep(&mut p, &record(6, 60, 60, 0xcd)), 0);
        assert_eq!(keep(&mut p, &[0u8; 10]), 0);
        assert_eq!((p.count, p.malformed), (2, 1));
        assert_eq!(p.bytes.len(), 2 * 16 + 256 + 60);
        assert_eq!(&p.bytes[..8], &5u64.to_ne_bytes());
        assert_eq!(&p.bytes[8..12], &1514u32.to_ne_bytes());
        assert_eq!(&p.bytes[12..16], &256u32.to_ne_bytes());
        assert!(p.bytes[16..16 + 256].iter().all(|&b| b == 0xab));
        // caplen beyond the snap length is held to it.
        let mut q = Pending::default();
        keep(&mut q, &record(1, 9000, 9000, 1));
        assert_eq!(q.bytes.len(), 16 + abi::SNAP);
        let mut last = 0;
        for _ in 0..BATCH {
            last = keep(&mut q, &record(1, 60, 60, 1));
        }
        assert_eq!(last, BATCH_FULL);
    }

    /// `abi` must say what bpf/wirelens_inline.h says.
    #[test]
    fn abi_matches_header() {
        let header = include_str!("../../../bpf/wirelens_inline.h");
        let define = |name: &str| -> u64 {
            header
                .lines()
                .find_map(|l| {
                    let mut w = l.split_whitespace();
                    (w.next() == Some("#define") && w.next() == Some(name))
                        .then(|| w.next().and_then(|v| v.parse().ok()))
                        .flatten()
                })
                .unwrap_or_else(|| panic!("{name} not in wirelens_inline.h"))
        };
        assert_eq!(define("WL_INLINE_MAX_PORTS"), abi::MAX_PORTS as u64);
        assert_eq!(define("WL_INLINE_SNAP"), abi::SNAP as u64);
        assert_eq!(define("WL_INLINE_ANALYSE"), u64::from(abi::ANALYSE));
        for (name, v) in [
            ("WL_ICNT_SEEN", abi::CNT_SEEN),
            ("WL_ICNT_FORWARDED", abi::CNT_FORWARDED),
            ("WL_ICNT_NO_PEER", abi::CNT_NO_PEER),
            ("WL_ICNT_COPIED", abi::CNT_COPIED),
            ("WL_ICNT_RING_FULL", abi::CNT_RING_FULL),
            ("WL_ICNT_NOT_COPIED_EMPTY", abi::CNT_NOT_COPIED_EMPTY),
            ("WL_ICNT_REDIRECT_ERR", abi::CNT_REDIRECT_ERR),
            ("WL_ICNT_XMIT_DROPS", abi::CNT_XMIT_DROPS),
            ("WL_ICNT_MAX", abi::CNT_MAX),
        ] {
            assert_eq!(define(name), u64::from(v), "{name}");
        }
        // The record: four u32 after the u64 timestamp, then the bytes.
        assert!(header.contains("__u64 ts_ns;"));
        assert_eq!(abi::REC_HEADER, 8 + 4 * 4);
    }
}
