//! The only unsafe code of the crate: socket options, `recvmsg` with control
//! messages (receive timestamps, TTL, the ICMP error queue) and the
//! `SIOCETHTOOL` ioctl. Each function is a thin, checked wrapper; every
//! `unsafe` block says why it is sound.

use std::io;
use std::mem::{size_of, zeroed, MaybeUninit};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock time in nanoseconds since the Unix epoch (the clock the
/// kernel's `SO_TIMESTAMPNS` receive timestamps use).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    val: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `fd` is a socket borrowed from a live `UdpSocket` by every caller;
    // the option value is a valid `c_int` on the stack and its exact size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&val as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn getsockopt_int(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut val: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` is a live socket (see callers); `val` and `len` are valid,
    // writable and `len` holds the size of `val`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&mut val as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(val)
    } else {
        Err(io::Error::last_os_error())
    }
}

fn with_context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Ask for receive timestamps (`SO_TIMESTAMPNS`) and the TTL / hop limit
/// (`IP_RECVTTL`, `IPV6_RECVHOPLIMIT`) of every datagram.
pub fn enable_rx_meta(sock: &UdpSocket, v6: bool) -> io::Result<()> {
    let fd = sock.as_raw_fd();
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)
        .map_err(|e| with_context(e, "setsockopt SO_TIMESTAMPNS"))?;
    if v6 {
        setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, 1)
            .map_err(|e| with_context(e, "setsockopt IPV6_RECVHOPLIMIT"))?;
        // IPv4-mapped senders on a dual-stack socket; not fatal where refused.
        let _ = setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_RECVTTL, 1);
    } else {
        setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_RECVTTL, 1)
            .map_err(|e| with_context(e, "setsockopt IP_RECVTTL"))?;
    }
    Ok(())
}

/// The traffic class byte (DSCP << 2 | ECN) of sent datagrams.
pub fn set_tos(sock: &UdpSocket, v6: bool, tos: u8) -> io::Result<()> {
    let (level, name) = if v6 {
        (libc::IPPROTO_IPV6, libc::IPV6_TCLASS)
    } else {
        (libc::IPPROTO_IP, libc::IP_TOS)
    };
    setsockopt_int(sock.as_raw_fd(), level, name, tos.into())
        .map_err(|e| with_context(e, "setsockopt IP_TOS/IPV6_TCLASS"))
}

/// TTL / unicast hop limit of sent datagrams.
pub fn set_ttl(sock: &UdpSocket, v6: bool, ttl: u8) -> io::Result<()> {
    let (level, name) = if v6 {
        (libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS)
    } else {
        (libc::IPPROTO_IP, libc::IP_TTL)
    };
    setsockopt_int(sock.as_raw_fd(), level, name, ttl.into())
        .map_err(|e| with_context(e, "setsockopt IP_TTL/IPV6_UNICAST_HOPS"))
}

/// Set DF (IPv6: never fragment) on every datagram and ignore the kernel's
/// cached path MTU (`IP_PMTUDISC_PROBE`), so probes larger than a PMTU the
/// kernel learnt still leave; only the interface MTU limits them (EMSGSIZE).
pub fn set_pmtu_probe(sock: &UdpSocket, v6: bool) -> io::Result<()> {
    let (level, name, val) = if v6 {
        (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_PROBE,
        )
    } else {
        (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_PROBE,
        )
    };
    setsockopt_int(sock.as_raw_fd(), level, name, val)
        .map_err(|e| with_context(e, "setsockopt IP_MTU_DISCOVER=PROBE"))
}

/// Queue ICMP errors for this socket (`IP_RECVERR` / `IPV6_RECVERR`), to be
/// read with [`recv_err`].
pub fn set_recverr(sock: &UdpSocket, v6: bool) -> io::Result<()> {
    let fd = sock.as_raw_fd();
    if v6 {
        setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVERR, 1)
            .map_err(|e| with_context(e, "setsockopt IPV6_RECVERR"))
    } else {
        setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_RECVERR, 1)
            .map_err(|e| with_context(e, "setsockopt IP_RECVERR"))
    }
}

/// The path MTU the kernel holds for a connected socket (`IP_MTU` / `IPV6_MTU`).
pub fn path_mtu(sock: &UdpSocket, v6: bool) -> io::Result<u32> {
    let (level, name) = if v6 {
        (libc::IPPROTO_IPV6, libc::IPV6_MTU)
    } else {
        (libc::IPPROTO_IP, libc::IP_MTU)
    };
    getsockopt_int(sock.as_raw_fd(), level, name)
        .map(|v| v.max(0) as u32)
        .map_err(|e| with_context(e, "getsockopt IP_MTU"))
}

/// A received datagram's metadata.
#[derive(Debug, Clone, Copy)]
pub struct RecvMeta {
    pub len: usize,
    pub from: SocketAddr,
    /// TTL / hop limit it arrived with.
    pub ttl: Option<u8>,
    /// Kernel receive timestamp, ns since the Unix epoch.
    pub rx_ns: Option<u64>,
}

/// An entry of the socket's error queue (`struct sock_extended_err`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockErr {
    pub errno: i32,
    /// `SO_EE_ORIGIN_*`: 1 local, 2 ICMP, 3 ICMPv6.
    pub origin: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// For frag-needed / packet-too-big and local EMSGSIZE: the MTU.
    pub info: u32,
    /// Who sent the ICMP error.
    pub offender: Option<IpAddr>,
    /// Bytes of our original payload returned in the buffer.
    pub len: usize,
}

pub const SO_EE_ORIGIN_LOCAL: u8 = 1;
pub const SO_EE_ORIGIN_ICMP: u8 = 2;
pub const SO_EE_ORIGIN_ICMP6: u8 = 3;

/// Control-message buffer: aligned for `cmsghdr`.
type CmsgBuf = [u64; 64];

/// Converts a kernel-written address; `None` for other families.
///
/// # Safety
///
/// `sa` must point to at least `len` initialized bytes of a socket address
/// written by the kernel, suitably aligned for `sockaddr_in6`.
unsafe fn sockaddr_to_std(sa: *const libc::sockaddr, len: usize) -> Option<SocketAddr> {
    // SAFETY (the whole body): the caller guarantees `len` readable, aligned
    // bytes; each cast is checked against `len` and the family first.
    unsafe {
        match i32::from((*sa).sa_family) {
            libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
                let a = &*(sa as *const libc::sockaddr_in);
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
                let a = &*(sa as *const libc::sockaddr_in6);
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

/// `recvmsg` into `buf` with the control messages of [`enable_rx_meta`].
/// Honors the socket's read timeout (`WouldBlock` / `TimedOut` on expiry).
pub fn recv_meta(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<RecvMeta> {
    // SAFETY: all-zero is a valid `sockaddr_storage` and `msghdr`.
    let mut addr: libc::sockaddr_storage = unsafe { zeroed() };
    let mut cmsg: CmsgBuf = [0; 64];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<CmsgBuf>();
    // SAFETY: every pointer in `msg` refers to a live local (`addr`, `iov` ->
    // `buf`, `cmsg`) whose length is the one given; the kernel writes at most
    // those lengths. `sock` keeps the fd open for the call.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel wrote `msg_namelen` bytes of address into `addr`,
    // which is aligned for any sockaddr.
    let from = unsafe {
        sockaddr_to_std(
            (&addr as *const libc::sockaddr_storage).cast(),
            msg.msg_namelen as usize,
        )
    }
    .ok_or_else(|| io::Error::other("recvmsg: datagram from a non-IP address"))?;
    let mut meta = RecvMeta {
        len: n as usize,
        from,
        ttl: None,
        rx_ns: None,
    };
    // SAFETY: `msg` was filled by a successful recvmsg: `msg_control` and
    // `msg_controllen` describe the initialized control data inside `cmsg`;
    // CMSG_FIRSTHDR/NXTHDR stay within it and CMSG_DATA points into each
    // header's payload, whose length is checked against `cmsg_len` before
    // reading (read_unaligned: payloads need no alignment).
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let h = &*c;
            let data = libc::CMSG_DATA(c);
            let dlen = (h.cmsg_len as usize).saturating_sub(data.offset_from(c.cast()) as usize);
            match (h.cmsg_level, h.cmsg_type) {
                (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS)
                    if dlen >= size_of::<libc::timespec>() =>
                {
                    let ts: libc::timespec = std::ptr::read_unaligned(data.cast());
                    meta.rx_ns = Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
                }
                (libc::IPPROTO_IP, libc::IP_TTL) | (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT)
                    if dlen >= size_of::<libc::c_int>() =>
                {
                    let v: libc::c_int = std::ptr::read_unaligned(data.cast());
                    meta.ttl = u8::try_from(v).ok();
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(meta)
}

/// Reads one entry of the socket's error queue without blocking (`None`:
/// empty). `buf` receives the start of the datagram that caused it.
pub fn recv_err(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<Option<SockErr>> {
    // SAFETY: all-zero is a valid `sockaddr_storage` and `msghdr`.
    let mut addr: libc::sockaddr_storage = unsafe { zeroed() };
    let mut cmsg: CmsgBuf = [0; 64];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<CmsgBuf>();
    // SAFETY: as in `recv_meta`: every pointer refers to a live local with
    // its length; MSG_DONTWAIT keeps the call from blocking.
    let n = unsafe {
        libc::recvmsg(
            sock.as_raw_fd(),
            &mut msg,
            libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::WouldBlock {
            Ok(None)
        } else {
            Err(e)
        };
    }
    // SAFETY: as in `recv_meta` for the walk; a sock_extended_err payload is
    // length-checked before it is read, and the offender address that follows
    // it (SO_EE_OFFENDER) lies within the same control message, checked
    // against `dlen` too; it is copied out unaligned before use.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let h = &*c;
            let data = libc::CMSG_DATA(c);
            let dlen = (h.cmsg_len as usize).saturating_sub(data.offset_from(c.cast()) as usize);
            let is_err = matches!(
                (h.cmsg_level, h.cmsg_type),
                (libc::IPPROTO_IP, libc::IP_RECVERR) | (libc::IPPROTO_IPV6, libc::IPV6_RECVERR)
            );
            let ee_len = size_of::<libc::sock_extended_err>();
            if is_err && dlen >= ee_len {
                let ee: libc::sock_extended_err = std::ptr::read_unaligned(data.cast());
                let mut off: MaybeUninit<libc::sockaddr_storage> = MaybeUninit::zeroed();
                let off_len = (dlen - ee_len).min(size_of::<libc::sockaddr_storage>());
                std::ptr::copy_nonoverlapping(
                    data.add(ee_len),
                    off.as_mut_ptr().cast::<u8>(),
                    off_len,
                );
                let offender = if off_len >= size_of::<libc::sa_family_t>() {
                    sockaddr_to_std(off.as_ptr().cast(), off_len).map(|a| a.ip())
                } else {
                    None
                };
                return Ok(Some(SockErr {
                    errno: ee.ee_errno as i32,
                    origin: ee.ee_origin,
                    icmp_type: ee.ee_type,
                    icmp_code: ee.ee_code,
                    info: ee.ee_info,
                    offender: offender.filter(|ip| !ip.is_unspecified()),
                    len: n as usize,
                }));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(Some(SockErr {
        errno: 0,
        origin: 0,
        icmp_type: 0,
        icmp_code: 0,
        info: 0,
        offender: None,
        len: n as usize,
    }))
}

/// `ioctl(SIOCETHTOOL)` on `ifname` with `data` as the ethtool command
/// buffer (its first u32 is the command). `data` is u64-backed so the
/// kernel's u64 arrays in it are aligned.
pub fn ethtool(ifname: &str, data: &mut [u64]) -> io::Result<()> {
    let name = ifname.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {ifname:?}"),
        ));
    }
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh, valid descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: all-zero is a valid `ifreq`.
    let mut ifr: libc::ifreq = unsafe { zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = data.as_mut_ptr().cast();
    // SAFETY: `ifr` names the interface (NUL-terminated: zeroed and shorter
    // than IFNAMSIZ) and points to `data`, which is live, writable and as
    // large as the ethtool command in it declares (the callers size it from
    // the counts the kernel reported).
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCETHTOOL, &mut ifr) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
