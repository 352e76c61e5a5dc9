//! The few raw system calls of the XDP path, each behind a safe function.
//!
//! Everything `unsafe` in `xdp/` that is not ring or UMEM access lives here:
//! interface lookup, `RLIMIT_MEMLOCK`, `getifaddrs`, the ethtool channel
//! query, `setns`, the AF_XDP rx and tx wakeups, the busy-poll socket
//! options, `BPF_PROG_TEST_RUN` and the monotonic clock of the inline
//! program's timestamps.

use std::ffi::{CStr, CString};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

use libbpf_rs::libbpf_sys;

fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains NUL"))
}

/// The index of `iface` in the calling thread's network namespace.
pub(crate) fn ifindex(iface: &str) -> io::Result<u32> {
    let name = cstring(iface)?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    let idx = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if idx == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(idx)
    }
}

/// Raises `RLIMIT_MEMLOCK` as far as this process may: to infinity with
/// `CAP_SYS_RESOURCE`, else the soft limit to the hard one. Returns the soft
/// limit now in force (`None` = unlimited).
///
/// AF_XDP UMEM is charged to this limit unless the process has
/// `CAP_IPC_LOCK`; BPF maps are charged to the memory cgroup on kernels >= 5.11.
pub fn raise_memlock_limit() -> io::Result<Option<u64>> {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `cur` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut cur) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `unlimited` is a valid rlimit; setrlimit only reads it.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } == 0 {
        return Ok(None);
    }
    let soft_to_hard = libc::rlimit {
        rlim_cur: cur.rlim_max,
        rlim_max: cur.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &soft_to_hard) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((cur.rlim_max != libc::RLIM_INFINITY).then_some(cur.rlim_max))
}

/// Every (interface, address) pair of the calling thread's network namespace.
pub(crate) fn interface_addresses() -> io::Result<Vec<(String, IpAddr)>> {
    let mut head: *mut libc::ifaddrs = ptr::null_mut();
    // SAFETY: `head` is a valid out-pointer; on success it owns a list freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned; it is freed
        // only after the loop.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: `ifa_name` is a NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: `ifa_addr` is non-null and points to a sockaddr of the list.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        let addr = match family {
            libc::AF_INET => {
                // SAFETY: the family says the sockaddr is a sockaddr_in; read
                // unaligned so no alignment is assumed.
                let sin = unsafe { ptr::read_unaligned(ifa.ifa_addr.cast::<libc::sockaddr_in>()) };
                IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
            }
            libc::AF_INET6 => {
                // SAFETY: the family says the sockaddr is a sockaddr_in6.
                let sin6 =
                    unsafe { ptr::read_unaligned(ifa.ifa_addr.cast::<libc::sockaddr_in6>()) };
                IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))
            }
            _ => continue,
        };
        out.push((name, addr));
    }
    // SAFETY: `head` came from getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// `struct ethtool_channels` of linux/ethtool.h.
#[repr(C)]
#[derive(Default)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

const ETHTOOL_GCHANNELS: u32 = 0x3c;

/// Active rx + combined channels of `iface` (ETHTOOL_GCHANNELS).
pub(crate) fn ethtool_rx_channels(iface: &str) -> io::Result<u32> {
    let name = iface.as_bytes();
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut ch = EthtoolChannels {
        cmd: ETHTOOL_GCHANNELS,
        ..Default::default()
    };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name) {
        *dst = *src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = (&mut ch as *mut EthtoolChannels).cast();
    // SAFETY: SIOCETHTOOL with ETHTOOL_GCHANNELS reads ifr and writes one
    // ethtool_channels through ifru_data, which points at `ch`, alive here.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut ifr) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ch.rx_count + ch.combined_count)
}

/// Moves the calling thread into the network namespace at `path`.
pub(crate) fn setns_net(path: &str) -> io::Result<()> {
    let file = std::fs::File::open(path)?;
    // SAFETY: `file` is an open namespace file for the duration of the call;
    // setns changes only the calling thread's namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Kicks the kernel to process an AF_XDP socket's rings (the
/// `XDP_USE_NEED_WAKEUP` protocol): a non-blocking zero-length recvfrom.
pub(crate) fn xsk_kick(fd: RawFd) -> io::Result<()> {
    // SAFETY: null buffer with length 0 and null address are allowed by
    // recvfrom(2); a stale `fd` gives EBADF, not undefined behaviour.
    let ret = unsafe {
        libc::recvfrom(
            fd,
            ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT,
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    if ret < 0 {
        let err = io::Error::last_os_error();
        // The kernel answers these when it is busy or the link is down; the
        // next kick retries (xdpsock treats them the same way).
        match err.raw_os_error() {
            Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::ENETDOWN) => {}
            _ => return Err(err),
        }
    }
    Ok(())
}

fn setsockopt_int(fd: RawFd, opt: libc::c_int, val: libc::c_int) -> io::Result<()> {
    // SAFETY: `val` is a live c_int and the length passed is its size; a
    // stale `fd` gives EBADF, not undefined behaviour.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&val as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes `fd`'s receive calls drive the NAPI instance of its queue
/// themselves (Linux >= 5.11): `SO_PREFER_BUSY_POLL` (while the socket busy
/// polls, the kernel leaves that NAPI to it instead of running it from the
/// interrupt/softirq side, given the interface's `napi_defer_hard_irqs` and
/// `gro_flush_timeout`), `SO_BUSY_POLL` (`usecs`, which enables busy
/// polling on the socket) and `SO_BUSY_POLL_BUDGET` (packets per NAPI poll;
/// above `net.core.busy_poll_budget` needs CAP_NET_ADMIN).
pub(crate) fn set_prefer_busy_poll(fd: RawFd, usecs: u32, budget: u16) -> io::Result<()> {
    setsockopt_int(fd, libc::SO_PREFER_BUSY_POLL, 1)?;
    setsockopt_int(
        fd,
        libc::SO_BUSY_POLL,
        libc::c_int::try_from(usecs).unwrap_or(libc::c_int::MAX),
    )?;
    setsockopt_int(fd, libc::SO_BUSY_POLL_BUDGET, libc::c_int::from(budget))
}

/// The NAPI instance the kernel has tied `fd` to (`SO_INCOMING_NAPI_ID`;
/// set at the first frame received), or `None` when there is none yet, or
/// the driver has no NAPI to busy poll.
pub(crate) fn incoming_napi_id(fd: RawFd) -> io::Result<Option<u32>> {
    let mut val: libc::c_uint = 0;
    let mut len = std::mem::size_of::<libc::c_uint>() as libc::socklen_t;
    // SAFETY: `val` and `len` are live and `len` is `val`'s size; the kernel
    // writes at most `len` bytes.
    let ret = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_INCOMING_NAPI_ID,
            (&mut val as *mut libc::c_uint).cast(),
            &mut len,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((val != 0).then_some(val))
}

/// What a transmit kick ([`xsk_tx_kick`]) got from the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kick {
    /// The kernel processed the tx ring.
    Done,
    /// `EBUSY`: the driver dropped a frame (it is completed nonetheless).
    Busy,
    /// `EAGAIN` / `ENOBUFS` / `ENETDOWN`: nothing more taken for now; the
    /// frames stay on the ring.
    Again,
}

/// Kicks the kernel to transmit what is on an AF_XDP socket's tx ring (the
/// `XDP_USE_NEED_WAKEUP` protocol): a non-blocking zero-length sendto.
pub(crate) fn xsk_tx_kick(fd: RawFd) -> io::Result<Kick> {
    // SAFETY: null buffer with length 0 and null address are allowed by
    // sendto(2) on an AF_XDP socket; a stale `fd` gives EBADF, not UB.
    let ret = unsafe { libc::sendto(fd, ptr::null(), 0, libc::MSG_DONTWAIT, ptr::null(), 0) };
    if ret >= 0 {
        return Ok(Kick::Done);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EBUSY) => Ok(Kick::Busy),
        Some(libc::EAGAIN | libc::ENOBUFS | libc::ENETDOWN) => Ok(Kick::Again),
        _ => Err(err),
    }
}

/// Runs an XDP program once on `frame` (BPF_PROG_TEST_RUN) and returns its
/// action. Redirects are not performed in this mode.
pub(crate) fn xdp_test_run(prog: BorrowedFd<'_>, frame: &[u8]) -> io::Result<u32> {
    let len = u32::try_from(frame.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too long"))?;
    let mut opts = libbpf_sys::bpf_test_run_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_test_run_opts>() as libbpf_sys::size_t,
        data_in: frame.as_ptr().cast(),
        data_size_in: len,
        repeat: 1,
        ..Default::default()
    };
    // SAFETY: `opts` is initialised with its own size; data_in/len describe
    // `frame`, which the kernel only reads; no output buffers are given.
    let ret = unsafe { libbpf_sys::bpf_prog_test_run_opts(prog.as_raw_fd(), &mut opts) };
    if ret != 0 {
        return Err(io::Error::from_raw_os_error(-ret));
    }
    Ok(opts.retval)
}

/// Takes an exclusive advisory lock on `file` without blocking. `Ok(false)`:
/// another open file description holds it. Released when `file` is closed,
/// also when the process dies.
pub(crate) fn try_lock_exclusive(file: &std::fs::File) -> io::Result<bool> {
    // SAFETY: flock(2) on a descriptor that `file` keeps open for the call.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`, which lives for the call.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if r != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}
