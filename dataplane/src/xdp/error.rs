//! Errors of the XDP path: what failed, on what, and what to do about it.
#![forbid(unsafe_code)]

use std::io;

/// Errors of [`XdpProgram`](super::XdpProgram) and [`XskSocket`](super::XskSocket).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum XdpError {
    /// The interface name does not resolve in this network namespace.
    #[error("interface {iface:?} not found in this network namespace ({source}); check `ip link`")]
    NoSuchInterface {
        /// The interface asked for.
        iface: String,
        /// The lookup error.
        source: io::Error,
    },
    /// Opening or loading (verifying) the BPF object failed.
    #[error("loading the wirelens XDP program failed: {source}{hint}")]
    Load {
        /// What to do about it (starts with "; ", or empty).
        hint: &'static str,
        /// The libbpf error; the verifier log went to stderr.
        source: libbpf_rs::Error,
    },
    /// Another program, not ours, is attached to the interface.
    #[error(
        "{iface} already runs XDP program {name:?} (id {id}), which is not wirelens; \
         detach it first (`ip link set dev {iface} xdp off`) or pick another interface"
    )]
    ForeignProgram {
        /// The interface.
        iface: String,
        /// The kernel id of the program found there.
        id: u32,
        /// Its name.
        name: String,
    },
    /// Neither driver nor generic attach worked.
    #[error(
        "attaching XDP to {iface} failed: driver mode: {driver}; generic (skb) mode: {generic}{hint}"
    )]
    Attach {
        /// The interface.
        iface: String,
        /// Why driver mode failed ("not tried" when generic was forced).
        driver: String,
        /// Why generic mode failed ("not tried" when driver was forced).
        generic: String,
        /// What to do about it (starts with "; ", or empty).
        hint: &'static str,
    },
    /// Detaching failed; the program may still be attached.
    #[error("detaching XDP from {iface} failed: {reason}; remove it with `ip link set dev {iface} xdp off`")]
    Detach {
        /// The interface.
        iface: String,
        /// Why.
        reason: String,
    },
    /// A map operation failed.
    #[error("BPF map {map}: {op} failed: {source}")]
    Map {
        /// The map (as named in bpf/wirelens.bpf.c).
        map: &'static str,
        /// What was being done.
        op: String,
        /// The libbpf error.
        source: libbpf_rs::Error,
    },
    /// Creating the UMEM (the AF_XDP frame memory) failed.
    #[error("creating the AF_XDP UMEM for {iface} queue {queue} failed: {source}{hint}")]
    Umem {
        /// The interface.
        iface: String,
        /// The rx queue.
        queue: u32,
        /// The system error.
        source: io::Error,
        /// What to do about it (starts with "; ", or empty).
        hint: &'static str,
    },
    /// Creating or binding the AF_XDP socket failed (zero-copy and copy).
    #[error("binding an AF_XDP socket to {iface} queue {queue} failed: {source}{hint}")]
    Bind {
        /// The interface.
        iface: String,
        /// The rx queue.
        queue: u32,
        /// The error of the last attempt (copy mode).
        source: io::Error,
        /// What to do about it (starts with "; ", or empty).
        hint: &'static str,
    },
    /// The liveness lock of the interface could not be taken: without it a
    /// live instance cannot be told from a stale one, so nothing is touched.
    #[error(
        "not attaching XDP to {iface}: the lock {path} {why}; a wirelens program found on the \
         interface could belong to a live instance, so none is detached{hint}"
    )]
    Lock {
        /// The interface.
        iface: String,
        /// The lock file.
        path: String,
        /// What went wrong ("is held by another live wirelens process", "cannot be opened: ...").
        why: String,
        /// What to do about it (starts with "; ", or empty).
        hint: &'static str,
    },
    /// Asking the kernel which XDP program an interface runs failed.
    #[error("querying the XDP program of {iface} failed: {source}")]
    Query {
        /// The interface.
        iface: String,
        /// The libbpf error.
        source: libbpf_rs::Error,
    },
    /// A configuration value is out of range or inconsistent.
    #[error("invalid XDP configuration: {0}")]
    Config(String),
}

/// A hint for an errno from attaching, loading or binding.
pub(crate) fn hint_for(err: Option<i32>) -> &'static str {
    match err {
        Some(libc::EPERM | libc::EACCES) => {
            "; this needs root or CAP_NET_ADMIN + CAP_BPF (+ CAP_NET_RAW, CAP_IPC_LOCK for AF_XDP)"
        }
        Some(libc::ENOMEM | libc::ENOBUFS) => {
            "; out of locked memory: raise RLIMIT_MEMLOCK (`ulimit -l unlimited`, LimitMEMLOCK= in \
             systemd) or grant CAP_IPC_LOCK, or use fewer/smaller frames"
        }
        Some(libc::EBUSY) => {
            "; the queue already has an AF_XDP socket or the interface another XDP program \
             (another wirelens running?)"
        }
        Some(libc::EINVAL) => {
            "; check the queue index against `ethtool -l` and the MTU against the frame size"
        }
        Some(libc::ENODEV) => "; the interface is gone",
        _ => "",
    }
}

/// The errno behind a libbpf-rs error, when it carries one.
///
/// libbpf-rs keeps the `io::Error` private and maps only some errnos to its
/// `ErrorKind`, so read the "(os error N)" its message ends with.
pub(crate) fn errno_of(err: &libbpf_rs::Error) -> Option<i32> {
    let msg = err.to_string();
    let tail = &msg[msg.rfind("os error ")? + "os error ".len()..];
    let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}
