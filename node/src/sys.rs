//! The system facts the daemon reads itself: effective capabilities and the
//! calling thread's CPU affinity. The only unsafe code of the crate.

use std::io;

/// Capability numbers (linux/capability.h).
pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_NET_RAW: u32 = 13;
pub const CAP_IPC_LOCK: u32 = 14;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// What the daemon needs, by name: loading BPF (CAP_BPF, CAP_PERFMON for
/// the verifier's pointer rules), attaching XDP and touching the interface
/// (CAP_NET_ADMIN), AF_XDP sockets (CAP_NET_RAW), UMEM beyond
/// RLIMIT_MEMLOCK (CAP_IPC_LOCK).
pub const NEEDED: [(u32, &str); 5] = [
    (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
    (CAP_NET_RAW, "CAP_NET_RAW"),
    (CAP_BPF, "CAP_BPF"),
    (CAP_PERFMON, "CAP_PERFMON"),
    (CAP_IPC_LOCK, "CAP_IPC_LOCK"),
];

/// The effective capability set (`CapEff` of /proc/self/status).
pub fn effective_caps() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_cap_eff(&s)
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line["CapEff:".len()..].trim(), 16).ok()
}

/// The needed capabilities missing from `eff`. CAP_SYS_ADMIN stands in for
/// CAP_BPF and CAP_PERFMON (kernels before 5.8 know only it).
pub fn missing_caps(eff: u64) -> Vec<&'static str> {
    let has = |c: u32| eff & (1u64 << c) != 0;
    NEEDED
        .iter()
        .filter(|(c, _)| !(has(*c) || (matches!(*c, CAP_BPF | CAP_PERFMON) && has(CAP_SYS_ADMIN))))
        .map(|(_, n)| *n)
        .collect()
}

/// Restricts the calling thread (and the threads it starts later) to `cores`.
pub fn restrict_to_cores(cores: &[usize]) -> io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is a valid, empty CPU mask (a plain
    // bit array).
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    for &c in cores {
        if c >= max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("core {c} beyond the {max} a CPU mask holds"),
            ));
        }
        // SAFETY: `c` is below the mask's bit count (checked above).
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the
    // calling thread.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities() {
        let root = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(
            missing_caps(parse_cap_eff(root).unwrap()),
            Vec::<&str>::new()
        );
        assert_eq!(
            missing_caps(0),
            vec![
                "CAP_NET_ADMIN",
                "CAP_NET_RAW",
                "CAP_BPF",
                "CAP_PERFMON",
                "CAP_IPC_LOCK"
            ]
        );
        let old_kernel = (1 << CAP_SYS_ADMIN) | (1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW);
        assert_eq!(missing_caps(old_kernel), vec!["CAP_IPC_LOCK"]);
    }
}
