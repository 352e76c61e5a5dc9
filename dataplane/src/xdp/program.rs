//! Loading and attaching the XDP program, its filter and its counters.
#![forbid(unsafe_code)]

use std::fmt;
use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::str::FromStr;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapHandle, Xdp, XdpFlags};

use super::error::{errno_of, hint_for, XdpError};
use super::skel::WirelensSkelBuilder;
use super::sys;

/// The kernel-visible name of our XDP program; a program of this name found
/// on an interface is a stale one of ours.
pub const PROGRAM_NAME: &str = "wirelens_xdp";

/// Numbers shared with `bpf/wirelens.h` (a test checks they agree).
pub(crate) mod abi {
    pub const MAX_QUEUES: u32 = 256;
    pub const MAX_CIDRS: usize = 1024;
    pub const FILTER_ADDR: u32 = 1;
    pub const FILTER_PORT: u32 = 2;
    pub const CNT_SEEN: u32 = 0;
    pub const CNT_REDIRECTED: u32 = 1;
    pub const CNT_PASS_NO_SOCKET: u32 = 2;
    pub const CNT_PASS_FILTERED: u32 = 3;
    pub const CNT_PASS_NOT_IP: u32 = 4;
    pub const CNT_PASS_MALFORMED: u32 = 5;
    pub const CNT_TAKEN_UNDECIDED: u32 = 6;
    pub const CNT_MAX: u32 = 7;
}

/// Where we take locks that say "a live wirelens owns XDP on this interface".
const LOCK_DIR: &str = "/run/wirelens";

/// How the program ended up attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttachMode {
    /// Native XDP in the driver (`XDP_FLAGS_DRV_MODE`): before the skb is built.
    Driver,
    /// Generic XDP (`XDP_FLAGS_SKB_MODE`): after the skb is built; slower, works everywhere.
    Generic,
}

impl AttachMode {
    pub(crate) fn flags(self) -> XdpFlags {
        match self {
            AttachMode::Driver => XdpFlags::DRV_MODE,
            AttachMode::Generic => XdpFlags::SKB_MODE,
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachMode::Driver => "driver",
            AttachMode::Generic => "generic (skb)",
        })
    }
}

/// Which attach modes to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ModePreference {
    /// Driver mode, falling back to generic (skb) mode.
    #[default]
    Auto,
    /// Driver mode or fail.
    DriverOnly,
    /// Generic (skb) mode only.
    GenericOnly,
}

/// An IPv4 or IPv6 prefix, host bits cleared. Parses `198.18.0.0/15`,
/// `2001:db8::/32`, and a bare address as a host prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    /// `addr/prefix_len`; host bits of `addr` are cleared.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Self, XdpError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            return Err(XdpError::Config(format!(
                "prefix length /{prefix_len} too long for {addr}"
            )));
        }
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(prefix_len))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(prefix_len))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        Ok(Cidr { addr, prefix_len })
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` falls inside this prefix (the user-space twin of the trie lookup).
    pub fn contains(&self, ip: IpAddr) -> bool {
        Cidr::new(ip, self.prefix_len).is_ok_and(|c| c.addr == self.addr)
    }

    /// The LPM trie key: prefix length (host order u32), then the address bytes.
    fn lpm_key(&self) -> Vec<u8> {
        let mut key = u32::from(self.prefix_len).to_ne_bytes().to_vec();
        match self.addr {
            IpAddr::V4(a) => key.extend_from_slice(&a.octets()),
            IpAddr::V6(a) => key.extend_from_slice(&a.octets()),
        }
        key
    }
}

impl FromStr for Cidr {
    type Err = XdpError;

    fn from_str(s: &str) -> Result<Self, XdpError> {
        let bad = || {
            XdpError::Config(format!(
                "{s:?} is not an address or CIDR (e.g. 198.18.0.0/15)"
            ))
        };
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let len = match len {
            Some(l) => l.trim().parse().map_err(|_| bad())?,
            None if addr.is_ipv4() => 32,
            None => 128,
        };
        Cidr::new(addr, len)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// Which traffic the XDP program takes; everything else goes to the stack.
///
/// Empty = take every IPv4/IPv6 packet. `cidrs`: the source or destination
/// address must fall in one of them (only listing IPv4 prefixes means no
/// IPv6 is taken, and vice versa). `ports`: a TCP, UDP or SCTP source or
/// destination port must be listed; with ports set, ICMP/ICMPv6 and
/// non-first fragments are taken on the address test alone (they carry no
/// ports, and ICMP errors belong to the watched flows). Non-IP frames always
/// pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Address prefixes (IPv4 and IPv6, up to 1024 each).
    pub cidrs: Vec<Cidr>,
    /// TCP/UDP/SCTP ports.
    pub ports: Vec<u16>,
}

impl Filter {
    /// Whether this filter takes every IP packet.
    pub fn is_empty(&self) -> bool {
        self.cidrs.is_empty() && self.ports.is_empty()
    }

    fn flags(&self) -> u32 {
        let mut flags = 0;
        if !self.cidrs.is_empty() {
            flags |= abi::FILTER_ADDR;
        }
        if !self.ports.is_empty() {
            flags |= abi::FILTER_PORT;
        }
        flags
    }
}

/// The program's counters, summed over CPUs. Every frame is counted in
/// `seen` and in exactly one of the others but `taken_undecided`, which is
/// a part of the taken ones (`redirected` + `pass_no_socket`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpCounters {
    /// Frames the program ran on.
    pub seen: u64,
    /// Handed to the AF_XDP socket of their queue.
    pub redirected: u64,
    /// Matched, but no socket on that queue: passed to the stack (fail-open).
    pub pass_no_socket: u64,
    /// IP, but outside the filter: passed to the stack.
    pub pass_filtered: u64,
    /// Not IPv4/IPv6 (ARP, LLDP, ...): passed to the stack.
    pub pass_not_ip: u64,
    /// Too short to parse: passed to the stack.
    pub pass_malformed: u64,
    /// Taken because the filter could not decide (a fifth VLAN tag, more
    /// IPv6 extension headers than the program walks, ESP): also counted in
    /// `redirected` or `pass_no_socket`.
    pub taken_undecided: u64,
}

impl XdpCounters {
    /// All frames passed to the stack, whatever the reason.
    pub fn passed(&self) -> u64 {
        self.pass_no_socket + self.pass_filtered + self.pass_not_ip + self.pass_malformed
    }

    /// The change since `earlier` (counters only grow while loaded).
    pub fn since(&self, earlier: &XdpCounters) -> XdpCounters {
        XdpCounters {
            seen: self.seen.wrapping_sub(earlier.seen),
            redirected: self.redirected.wrapping_sub(earlier.redirected),
            pass_no_socket: self.pass_no_socket.wrapping_sub(earlier.pass_no_socket),
            pass_filtered: self.pass_filtered.wrapping_sub(earlier.pass_filtered),
            pass_not_ip: self.pass_not_ip.wrapping_sub(earlier.pass_not_ip),
            pass_malformed: self.pass_malformed.wrapping_sub(earlier.pass_malformed),
            taken_undecided: self.taken_undecided.wrapping_sub(earlier.taken_undecided),
        }
    }
}

/// An XDP action (`enum xdp_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum XdpAction {
    /// XDP_ABORTED.
    Aborted,
    /// XDP_DROP.
    Drop,
    /// XDP_PASS.
    Pass,
    /// XDP_TX.
    Tx,
    /// XDP_REDIRECT.
    Redirect,
    /// Anything else.
    Unknown(u32),
}

impl From<u32> for XdpAction {
    fn from(v: u32) -> Self {
        match v {
            0 => XdpAction::Aborted,
            1 => XdpAction::Drop,
            2 => XdpAction::Pass,
            3 => XdpAction::Tx,
            4 => XdpAction::Redirect,
            v => XdpAction::Unknown(v),
        }
    }
}

/// Where and how the program is attached.
#[derive(Debug)]
pub struct Attachment {
    /// The interface name.
    pub iface: String,
    /// Its index in the network namespace it was attached in.
    pub ifindex: u32,
    /// Driver or generic.
    pub mode: AttachMode,
    /// Id of a stale wirelens program that was detached to make room.
    pub replaced_stale: Option<u32>,
    netns: Option<u64>,
    _lock: OwnerLock,
}

/// What [`XdpProgram::attach_state`] found on the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttachState {
    /// [`attach`](XdpProgram::attach) has not run (or the program was detached by us).
    NotAttached,
    /// Our program is attached where we put it.
    Ours,
    /// No program is attached any more (or the interface is gone).
    Gone,
    /// Another program (this kernel id) took its place.
    Replaced(u32),
}

/// The liveness lock of an attachment: held while the attachment lives,
/// released by the kernel if the process dies; unlinked when dropped.
#[derive(Debug)]
pub(crate) struct OwnerLock {
    path: PathBuf,
    _file: File,
}

impl Drop for OwnerLock {
    fn drop(&mut self) {
        // Unlink while still holding the lock, so nobody locks a file that is
        // about to vanish; a later attach creates a fresh one.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The loaded wirelens XDP program and, once [`attach`](Self::attach)ed, the
/// guard of its attachment.
///
/// An XDP attach outlives the process that made it, so this type detaches on
/// drop (also when unwinding from a panic); after a `SIGKILL` the next
/// [`attach`](Self::attach) finds the stale program by name and replaces it.
/// Drop it (or call [`detach`](Self::detach)) on a thread in the network
/// namespace it was attached in.
///
/// Call order: [`load`](Self::load) -> [`set_filter`](Self::set_filter)
/// (optional, any time) -> [`attach`](Self::attach) -> sockets
/// ([`XskSocket::bind`](super::XskSocket::bind)) -> [`counters`](Self::counters)
/// any time -> drop.
#[derive(Debug)]
pub struct XdpProgram {
    prog_fd: OwnedFd,
    prog_id: u32,
    xsks: MapHandle,
    config: MapHandle,
    cidrs_v4: MapHandle,
    cidrs_v6: MapHandle,
    ports: MapHandle,
    counters: MapHandle,
    filter: Filter,
    attachment: Option<Attachment>,
}

pub(crate) fn load_err(source: libbpf_rs::Error) -> XdpError {
    XdpError::Load {
        hint: hint_for(errno_of(&source)),
        source,
    }
}

pub(crate) fn netns_ino() -> Option<u64> {
    std::fs::metadata("/proc/thread-self/ns/net")
        .ok()
        .map(|m| m.ino())
}

/// The name of the loaded program with kernel id `id`.
pub(crate) fn prog_name(id: u32) -> Option<String> {
    libbpf_rs::query::ProgInfoIter::default()
        .find(|p| p.id == id)
        .map(|p| p.name.to_string_lossy().into_owned())
}

/// Takes the per-interface liveness lock (tap and inline mode share it:
/// one live wirelens per interface). A lock that cannot be opened
/// or taken is an error, never "no lock": the stale-program check that
/// follows detaches any `wirelens_xdp`, and only the lock says its owner
/// is dead.
pub(crate) fn owner_lock(iface: &str, netns: Option<u64>) -> Result<OwnerLock, XdpError> {
    let path = PathBuf::from(format!(
        "{LOCK_DIR}/xdp-{}-{iface}.lock",
        netns.unwrap_or(0)
    ));
    let fail = |why: String, hint: &'static str| XdpError::Lock {
        iface: iface.to_string(),
        path: path.display().to_string(),
        why,
        hint,
    };
    let unwritable = "; /run/wirelens must be writable by this process (systemd: \
                      RuntimeDirectory=wirelens)";
    let file = std::fs::create_dir_all(LOCK_DIR)
        .and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
        })
        .map_err(|e| fail(format!("cannot be opened ({e})"), unwritable))?;
    match sys::try_lock_exclusive(&file) {
        Ok(true) => Ok(OwnerLock { path, _file: file }),
        Ok(false) => Err(fail(
            "is held by another live wirelens process".into(),
            "; stop that one first, or pick another interface",
        )),
        Err(e) => Err(fail(format!("cannot be locked ({e})"), unwritable)),
    }
}

/// Attaches the program behind `xdp` to `ifindex`: driver mode first, then
/// generic, as `pref` allows, with `extra` flags (`UPDATE_IF_NOEXIST`: fail
/// where a program sits; none: replace it atomically).
pub(crate) fn attach_new(
    xdp: &Xdp<'_>,
    iface: &str,
    ifindex: u32,
    pref: ModePreference,
    extra: XdpFlags,
) -> Result<AttachMode, XdpError> {
    let mut driver = "not tried".to_string();
    let mut generic = "not tried".to_string();
    let mut last_errno = None;
    let mut mode = None;
    if pref != ModePreference::GenericOnly {
        match xdp.attach(
            ifindex as i32,
            XdpFlags::from_bits_retain(extra.bits()) | XdpFlags::DRV_MODE,
        ) {
            Ok(()) => mode = Some(AttachMode::Driver),
            Err(e) => {
                last_errno = errno_of(&e);
                driver = e.to_string();
            }
        }
    }
    if mode.is_none() && pref != ModePreference::DriverOnly {
        match xdp.attach(ifindex as i32, extra | XdpFlags::SKB_MODE) {
            Ok(()) => mode = Some(AttachMode::Generic),
            Err(e) => {
                last_errno = errno_of(&e);
                generic = e.to_string();
            }
        }
    }
    mode.ok_or_else(|| XdpError::Attach {
        iface: iface.to_string(),
        driver,
        generic,
        hint: hint_for(last_errno),
    })
}

impl XdpProgram {
    /// Loads (verifies) the program with an empty filter (take everything);
    /// attaches nothing. Raises `RLIMIT_MEMLOCK` where allowed.
    pub fn load() -> Result<Self, XdpError> {
        // Best effort: only matters for AF_XDP UMEM without CAP_IPC_LOCK and
        // for BPF maps on kernels before 5.11.
        let _ = sys::raise_memlock_limit();
        let mut storage = MaybeUninit::uninit();
        let open = WirelensSkelBuilder::default()
            .open(&mut storage)
            .map_err(load_err)?;
        let skel = open.load().map_err(load_err)?;
        // Keep our own descriptors and let the skeleton (and its lifetime) go:
        // the kernel objects live as long as any descriptor does.
        let prog_fd = skel
            .progs
            .wirelens_xdp
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| load_err(e.into()))?;
        let maps = &skel.maps;
        let handle = |m: &libbpf_rs::MapMut<'_>| MapHandle::try_from(m).map_err(load_err);
        let prog = XdpProgram {
            prog_id: libbpf_rs::Program::id_from_fd(prog_fd.as_fd()).map_err(load_err)?,
            prog_fd,
            xsks: handle(&maps.xsks)?,
            config: handle(&maps.config)?,
            cidrs_v4: handle(&maps.cidrs_v4)?,
            cidrs_v6: handle(&maps.cidrs_v6)?,
            ports: handle(&maps.ports)?,
            counters: handle(&maps.counters)?,
            filter: Filter::default(),
            attachment: None,
        };
        Ok(prog)
    }

    /// The kernel id of the loaded program (as `bpftool prog` shows it).
    pub fn prog_id(&self) -> u32 {
        self.prog_id
    }

    /// Where the program is attached, if it is.
    pub fn attachment(&self) -> Option<&Attachment> {
        self.attachment.as_ref()
    }

    /// The filter in force.
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// Replaces the filter. Safe while attached: entries are added before
    /// stale ones are removed, and the enable flags are written last.
    pub fn set_filter(&mut self, filter: &Filter) -> Result<(), XdpError> {
        let v4 = filter.cidrs.iter().filter(|c| c.addr.is_ipv4()).count();
        let v6 = filter.cidrs.len() - v4;
        if v4 > abi::MAX_CIDRS || v6 > abi::MAX_CIDRS {
            return Err(XdpError::Config(format!(
                "{v4} IPv4 and {v6} IPv6 prefixes; at most {} of each",
                abi::MAX_CIDRS
            )));
        }
        let map_err =
            |map: &'static str, op: String| move |source| XdpError::Map { map, op, source };
        let trie = |c: &Cidr| -> (&MapHandle, &'static str) {
            if c.addr.is_ipv4() {
                (&self.cidrs_v4, "cidrs_v4")
            } else {
                (&self.cidrs_v6, "cidrs_v6")
            }
        };
        for c in &filter.cidrs {
            let (map, name) = trie(c);
            map.update(&c.lpm_key(), &[1], MapFlags::ANY)
                .map_err(map_err(name, format!("adding {c}")))?;
        }
        for &p in &filter.ports {
            self.ports
                .update(&u32::from(p).to_ne_bytes(), &[1], MapFlags::ANY)
                .map_err(map_err("ports", format!("adding port {p}")))?;
        }
        for c in self
            .filter
            .cidrs
            .iter()
            .filter(|c| !filter.cidrs.contains(c))
        {
            let (map, name) = trie(c);
            map.delete(&c.lpm_key())
                .map_err(map_err(name, format!("removing {c}")))?;
        }
        for &p in self
            .filter
            .ports
            .iter()
            .filter(|p| !filter.ports.contains(p))
        {
            self.ports
                .update(&u32::from(p).to_ne_bytes(), &[0], MapFlags::ANY)
                .map_err(map_err("ports", format!("removing port {p}")))?;
        }
        self.config
            .update(
                &0u32.to_ne_bytes(),
                &filter.flags().to_ne_bytes(),
                MapFlags::ANY,
            )
            .map_err(map_err("config", "writing the filter flags".into()))?;
        self.filter = filter.clone();
        Ok(())
    }

    /// Attaches to `iface` (in the calling thread's network namespace):
    /// driver mode first, then generic, as `pref` allows. A stale wirelens
    /// program (its owner dead) is replaced; a foreign program, or one of a
    /// live wirelens, is an error.
    pub fn attach(&mut self, iface: &str, pref: ModePreference) -> Result<AttachMode, XdpError> {
        if let Some(a) = &self.attachment {
            return Err(XdpError::Config(format!("already attached to {}", a.iface)));
        }
        let ifindex = sys::ifindex(iface).map_err(|source| XdpError::NoSuchInterface {
            iface: iface.to_string(),
            source,
        })?;
        let netns = netns_ino();
        let lock = owner_lock(iface, netns)?;
        let xdp = Xdp::new(self.prog_fd.as_fd());
        let replaced_stale = self.clear_stale(&xdp, iface, ifindex)?;

        let mode = attach_new(&xdp, iface, ifindex, pref, XdpFlags::UPDATE_IF_NOEXIST)?;
        self.attachment = Some(Attachment {
            iface: iface.to_string(),
            ifindex,
            mode,
            replaced_stale,
            netns,
            _lock: lock,
        });
        Ok(mode)
    }

    /// Detaches a stale program of ours from `ifindex`; fails on a foreign one.
    fn clear_stale(
        &self,
        xdp: &Xdp<'_>,
        iface: &str,
        ifindex: u32,
    ) -> Result<Option<u32>, XdpError> {
        let q = match xdp.query(ifindex as i32, XdpFlags::NONE) {
            Ok(q) => q,
            // Nothing to learn; the attach will report the real problem.
            Err(_) => return Ok(None),
        };
        let mut replaced = None;
        for (id, flags) in [
            (q.drv_prog_id, XdpFlags::DRV_MODE),
            (q.skb_prog_id, XdpFlags::SKB_MODE),
            (q.hw_prog_id, XdpFlags::HW_MODE),
        ] {
            if id == 0 {
                continue;
            }
            let name = prog_name(id).unwrap_or_else(|| "?".into());
            if name != PROGRAM_NAME {
                return Err(XdpError::ForeignProgram {
                    iface: iface.to_string(),
                    id,
                    name,
                });
            }
            xdp.detach(ifindex as i32, flags)
                .map_err(|e| XdpError::Detach {
                    iface: iface.to_string(),
                    reason: format!("removing stale wirelens program {id}: {e}"),
                })?;
            replaced = Some(id);
        }
        Ok(replaced)
    }

    /// What is attached now where [`attach`](Self::attach) put this program
    /// (asked of the kernel, so a program detached or replaced behind our
    /// back shows). Call it in the network namespace of the attach.
    pub fn attach_state(&self) -> Result<AttachState, XdpError> {
        let Some(att) = &self.attachment else {
            return Ok(AttachState::NotAttached);
        };
        if att.netns.is_some() && netns_ino() != att.netns {
            return Err(XdpError::Config(
                "attach state asked from another network namespace than the attach".into(),
            ));
        }
        let xdp = Xdp::new(self.prog_fd.as_fd());
        match xdp.query_id(att.ifindex as i32, att.mode.flags()) {
            Ok(id) if id == self.prog_id => Ok(AttachState::Ours),
            Ok(0) => Ok(AttachState::Gone),
            Ok(id) => Ok(AttachState::Replaced(id)),
            Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(AttachState::Gone),
            Err(source) => Err(XdpError::Query {
                iface: att.iface.clone(),
                source,
            }),
        }
    }

    /// Detaches from the interface (no-op when not attached). Only removes
    /// the program if it is still ours; an interface that is gone counts as
    /// detached.
    pub fn detach(&mut self) -> Result<(), XdpError> {
        let Some(att) = self.attachment.take() else {
            return Ok(());
        };
        if att.netns.is_some() && netns_ino() != att.netns {
            let iface = att.iface.clone();
            self.attachment = Some(att);
            return Err(XdpError::Detach {
                iface,
                reason: "called from another network namespace than the attach".into(),
            });
        }
        let xdp = Xdp::new(self.prog_fd.as_fd());
        let gone = |e: &libbpf_rs::Error| errno_of(e) == Some(libc::ENODEV);
        match xdp.query_id(att.ifindex as i32, att.mode.flags()) {
            Ok(id) if id == self.prog_id => {
                match xdp.detach(att.ifindex as i32, att.mode.flags()) {
                    Ok(()) => Ok(()),
                    Err(e) if gone(&e) => Ok(()),
                    Err(e) => Err(XdpError::Detach {
                        iface: att.iface.clone(),
                        reason: e.to_string(),
                    }),
                }
            }
            Ok(_) => Ok(()),
            Err(e) if gone(&e) => Ok(()),
            Err(e) => Err(XdpError::Detach {
                iface: att.iface.clone(),
                reason: e.to_string(),
            }),
        }
    }

    /// The counters, summed over all CPUs.
    pub fn counters(&self) -> Result<XdpCounters, XdpError> {
        let read = |idx: u32| -> Result<u64, XdpError> {
            let per_cpu = self
                .counters
                .lookup_percpu(&idx.to_ne_bytes(), MapFlags::ANY)
                .map_err(|source| XdpError::Map {
                    map: "counters",
                    op: format!("reading counter {idx}"),
                    source,
                })?
                .unwrap_or_default();
            Ok(per_cpu
                .iter()
                .filter_map(|v| v.get(..8).and_then(|b| b.try_into().ok()))
                .map(u64::from_ne_bytes)
                .sum())
        };
        let mut c = [0u64; abi::CNT_MAX as usize];
        for (idx, slot) in (0..abi::CNT_MAX).zip(c.iter_mut()) {
            *slot = read(idx)?;
        }
        let at = |i: u32| c[i as usize];
        Ok(XdpCounters {
            seen: at(abi::CNT_SEEN),
            redirected: at(abi::CNT_REDIRECTED),
            pass_no_socket: at(abi::CNT_PASS_NO_SOCKET),
            pass_filtered: at(abi::CNT_PASS_FILTERED),
            pass_not_ip: at(abi::CNT_PASS_NOT_IP),
            pass_malformed: at(abi::CNT_PASS_MALFORMED),
            taken_undecided: at(abi::CNT_TAKEN_UNDECIDED),
        })
    }

    /// Runs the program once on `frame` (`BPF_PROG_TEST_RUN`, queue 0, no
    /// redirect performed) and returns its action; the counters count it.
    /// With no socket on queue 0 a taken frame yields `Pass` and counts in
    /// `pass_no_socket`, a filtered one in `pass_filtered`.
    pub fn test_run(&self, frame: &[u8]) -> io::Result<XdpAction> {
        sys::xdp_test_run(self.prog_fd.as_fd(), frame).map(XdpAction::from)
    }

    /// Puts an AF_XDP socket into the XSKMAP slot of `queue`. The kernel
    /// removes it again when the socket closes.
    pub(crate) fn register_socket(&self, queue: u32, fd: RawFd) -> Result<(), XdpError> {
        if queue >= abi::MAX_QUEUES {
            return Err(XdpError::Config(format!(
                "queue {queue} beyond the {} the XSKMAP holds",
                abi::MAX_QUEUES
            )));
        }
        self.xsks
            .update(&queue.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)
            .map_err(|source| XdpError::Map {
                map: "xsks",
                op: format!("inserting the socket of queue {queue}"),
                source,
            })
    }
}

impl Drop for XdpProgram {
    fn drop(&mut self) {
        if let Err(e) = self.detach() {
            eprintln!("wirelens: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `abi` must say what bpf/wirelens.h says.
    #[test]
    fn abi_matches_header() {
        let header = include_str!("../../../bpf/wirelens.h");
        let define = |name: &str| -> u64 {
            header
                .lines()
                .find_map(|l| {
                    let mut w = l.split_whitespace();
                    (w.next() == Some("#define") && w.next() == Some(name))
                        .then(|| w.next().and_then(|v| v.parse().ok()))
                        .flatten()
                })
                .unwrap_or_else(|| panic!("{name} not in wirelens.h"))
        };
        assert_eq!(define("WL_MAX_QUEUES"), u64::from(abi::MAX_QUEUES));
        assert_eq!(define("WL_MAX_CIDRS"), abi::MAX_CIDRS as u64);
        assert_eq!(define("WL_FILTER_ADDR"), u64::from(abi::FILTER_ADDR));
        assert_eq!(define("WL_FILTER_PORT"), u64::from(abi::FILTER_PORT));
        assert_eq!(define("WL_CNT_SEEN"), u64::from(abi::CNT_SEEN));
        assert_eq!(define("WL_CNT_REDIRECTED"), u64::from(abi::CNT_REDIRECTED));
        assert_eq!(
            define("WL_CNT_PASS_NO_SOCKET"),
            u64::from(abi::CNT_PASS_NO_SOCKET)
        );
        assert_eq!(
            define("WL_CNT_PASS_FILTERED"),
            u64::from(abi::CNT_PASS_FILTERED)
        );
        assert_eq!(
            define("WL_CNT_PASS_NOT_IP"),
            u64::from(abi::CNT_PASS_NOT_IP)
        );
        assert_eq!(
            define("WL_CNT_PASS_MALFORMED"),
            u64::from(abi::CNT_PASS_MALFORMED)
        );
        assert_eq!(
            define("WL_CNT_TAKEN_UNDECIDED"),
            u64::from(abi::CNT_TAKEN_UNDECIDED)
        );
        assert_eq!(define("WL_CNT_MAX"), u64::from(abi::CNT_MAX));
    }

    #[test]
    fn cidr_parse_and_contains() {
        let c: Cidr = "198.18.3.7/15".parse().unwrap();
        assert_eq!(c.to_string(), "198.18.0.0/15");
        assert!(c.contains("198.19.255.255".parse().unwrap()));
        assert!(!c.contains("198.20.0.0".parse().unwrap()));
        assert!(!c.contains("2001:db8::1".parse().unwrap()));
        let h: Cidr = "2001:db8::1".parse().unwrap();
        assert_eq!(h.prefix_len(), 128);
        let z: Cidr = "::/0".parse().unwrap();
        assert!(z.contains("2001:db8::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
        let mut key = 15u32.to_ne_bytes().to_vec();
        key.extend([198, 18, 0, 0]);
        assert_eq!(c.lpm_key(), key);
    }

    #[test]
    fn filter_flags() {
        assert_eq!(Filter::default().flags(), 0);
        let f = Filter {
            cidrs: vec!["198.18.0.0/15".parse().unwrap()],
            ports: vec![443],
        };
        assert_eq!(f.flags(), abi::FILTER_ADDR | abi::FILTER_PORT);
    }
}
