//! Least privilege for the running daemon.
//!
//! `wirelens run` needs five capabilities to start (load and attach the XDP
//! program, bind AF_XDP sockets, lock their memory) but, once that is done,
//! only CAP_NET_ADMIN: to detach the program at stop. Reading the program's
//! counters and maps goes through descriptors it already holds, asking the
//! kernel which program an interface runs and the routing re-check are
//! plain netlink dumps, the sockets are bound. So after attach and bind:
//!
//! - `PR_SET_NO_NEW_PRIVS` (set first, before any thread is started, so
//!   every thread has it): no exec can ever gain privileges;
//! - the bounding set is cut to [`KEPT`] (where CAP_SETPCAP allows it);
//! - the calling thread's effective and permitted sets become [`KEPT`], its
//!   inheritable and ambient sets empty ([`drop_to_kept`]); threads started
//!   after it inherit that;
//! - threads started before (the HTTP thread) drop everything themselves
//!   ([`drop_all_in_this_thread`]): they need nothing.
//!
//! Capabilities are per thread in Linux (`capset(2)` changes the caller
//! only), which is why both calls exist.

use std::io;

use crate::sys::CAP_NET_ADMIN;

/// What stays after attach and bind: detaching XDP at stop.
pub const KEPT: &[(u32, &str)] = &[(CAP_NET_ADMIN, "CAP_NET_ADMIN")];

/// The highest capability number this code knows to drop from the bounding set.
const CAP_LAST: u32 = 63;
const CAP_SETPCAP: u32 = 8;
/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAP_V3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn kept_mask() -> u64 {
    KEPT.iter().fold(0u64, |m, (c, _)| m | (1u64 << c))
}

/// Sets `PR_SET_NO_NEW_PRIVS` (inherited by threads created afterwards).
pub fn no_new_privs() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only; no memory is passed.
    let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn capget() -> io::Result<[CapData; 2]> {
    let mut hdr = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget(2) with a valid header and room for the two v3 words;
    // pid 0 is the calling thread.
    let r = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut hdr as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    if r == 0 {
        Ok(data)
    } else {
        Err(io::Error::last_os_error())
    }
}

fn capset(effective: u64, permitted: u64, inheritable: u64) -> io::Result<()> {
    let mut hdr = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let word = |m: u64, i: usize| (m >> (32 * i)) as u32;
    let data = [0, 1].map(|i| CapData {
        effective: word(effective, i),
        permitted: word(permitted, i),
        inheritable: word(inheritable, i),
    });
    // SAFETY: capset(2) with a valid header and the two v3 words; pid 0 is
    // the calling thread. Lowering sets is always allowed.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The calling thread's (effective, permitted) sets.
fn current() -> io::Result<(u64, u64)> {
    let d = capget()?;
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok((
        join(d[0].effective, d[1].effective),
        join(d[0].permitted, d[1].permitted),
    ))
}

/// Cuts the bounding set to `keep` (needs CAP_SETPCAP; without it the
/// bounding set stays, and NO_NEW_PRIVS keeps exec from using it). Returns
/// whether it was cut.
fn cut_bounding_set(keep: u64) -> bool {
    let (eff, _) = current().unwrap_or((0, 0));
    if eff & (1u64 << CAP_SETPCAP) == 0 {
        return false;
    }
    let mut ok = true;
    for cap in 0..=CAP_LAST {
        if keep & (1u64 << cap) != 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments only.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        // EINVAL: a capability this kernel does not know (past CAP_LAST_CAP).
        if r != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            ok = false;
        }
    }
    ok
}

/// What [`drop_to_kept`] did, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// Effective set before.
    pub before: u64,
    /// Effective set after (a subset of [`KEPT`]).
    pub after: u64,
    /// Whether the bounding set was cut too.
    pub bounding_cut: bool,
}

/// Drops the calling thread to [`KEPT`] (those of them it has): effective
/// and permitted = KEPT, inheritable and ambient empty, bounding set cut.
pub fn drop_to_kept() -> io::Result<Dropped> {
    let keep = kept_mask();
    let (before, permitted) = current()?;
    let bounding_cut = cut_bounding_set(keep);
    // SAFETY: prctl with integer arguments only; clears the ambient set.
    let _ = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    let p = permitted & keep;
    capset(p, p, 0)?;
    let (after, _) = current()?;
    Ok(Dropped {
        before,
        after,
        bounding_cut,
    })
}

/// Drops every capability of the calling thread (for threads that need
/// none), its bounding set cut to [`KEPT`] as the main thread's is.
pub fn drop_all_in_this_thread() -> io::Result<()> {
    cut_bounding_set(kept_mask());
    // SAFETY: prctl with integer arguments only; clears the ambient set.
    let _ = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    capset(0, 0, 0)
}

/// Names of the capabilities in `mask` (those this crate knows; others by number).
pub fn names(mask: u64) -> Vec<String> {
    let known = [
        (0, "CAP_CHOWN"),
        (1, "CAP_DAC_OVERRIDE"),
        (8, "CAP_SETPCAP"),
        (12, "CAP_NET_ADMIN"),
        (13, "CAP_NET_RAW"),
        (14, "CAP_IPC_LOCK"),
        (21, "CAP_SYS_ADMIN"),
        (38, "CAP_PERFMON"),
        (39, "CAP_BPF"),
    ];
    (0..64u32)
        .filter(|c| mask & (1u64 << c) != 0)
        .map(|c| {
            known
                .iter()
                .find(|(n, _)| *n == c)
                .map_or_else(|| format!("cap{c}"), |(_, s)| (*s).to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a thread of its own (capabilities are per thread): after the drop
    /// the effective set is inside KEPT and capget agrees with /proc.
    #[test]
    fn drop_leaves_at_most_the_kept_set_on_this_thread_only() {
        let before_main = current().unwrap().0;
        let (after, status) = std::thread::spawn(|| {
            no_new_privs().unwrap();
            let d = drop_to_kept().unwrap();
            let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
            (d, status)
        })
        .join()
        .unwrap();
        assert_eq!(after.after & !kept_mask(), 0, "{after:?}");
        let eff = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
            .unwrap();
        assert_eq!(eff, after.after);
        assert!(status.contains("NoNewPrivs:\t1"), "{status}");
        assert_eq!(
            current().unwrap().0,
            before_main,
            "other threads keep theirs"
        );
        let none = std::thread::spawn(|| {
            drop_all_in_this_thread().unwrap();
            current().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(none, (0, 0));
    }

    #[test]
    fn names_of_a_mask() {
        assert_eq!(names(1 << 12), vec!["CAP_NET_ADMIN"]);
        assert_eq!(names((1 << 39) | (1 << 50)), vec!["CAP_BPF", "cap50"]);
    }
}
