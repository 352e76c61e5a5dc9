//! Interface facts the XDP path needs: whether taking an interface over
//! would cut the host off its network, how many rx queues it has, and
//! entering a network namespace.
#![forbid(unsafe_code)]

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::sys;

const RTF_UP: u32 = 0x0001;
const RTF_REJECT: u32 = 0x0200;

/// Why `iface` must not be taken over by XDP without `--force`, or `None`
/// when it looks like a pure capture port.
///
/// It must not when it (or a device stacked on it: bridge, bond, VLAN,
/// macvlan, as `/sys/class/net/IF/upper_*` lists them) has one of the
/// host's global addresses or carries a default route. Loopback and
/// link-local addresses do not count. Reads `/proc/thread-self/net/{route,
/// ipv6_route}` and `getifaddrs`, so it answers for the calling thread's
/// network namespace (the upper-device walk reads sysfs, which shows the
/// namespace sysfs was mounted in). When a table cannot be read it refuses
/// too, saying why: guessing wrong here cuts a box off its network.
pub fn iface_carries_host_traffic(iface: &str) -> Option<String> {
    let addrs = match sys::interface_addresses() {
        Ok(a) => a,
        Err(e) => return Some(format!("cannot list the host's addresses ({e})")),
    };
    let mut visited = vec![iface.to_string()];
    check(iface, iface, &addrs, 0, &mut visited)
}

fn check(
    root: &str,
    dev: &str,
    addrs: &[(String, IpAddr)],
    depth: usize,
    visited: &mut Vec<String>,
) -> Option<String> {
    if let Some(why) = own_reason(dev, addrs) {
        return Some(if dev == root {
            format!("{dev}: {why}")
        } else {
            format!("{root} carries the traffic of {dev}, and {dev}: {why}")
        });
    }
    if depth >= 4 {
        return None;
    }
    for upper in upper_devices(dev) {
        if visited.contains(&upper) {
            continue;
        }
        visited.push(upper.clone());
        if let Some(why) = check(root, &upper, addrs, depth + 1, visited) {
            return Some(why);
        }
    }
    None
}

fn own_reason(dev: &str, addrs: &[(String, IpAddr)]) -> Option<String> {
    match default_route_v4(dev) {
        Ok(Some(gw)) => return Some(format!("it carries the IPv4 default route (via {gw})")),
        Ok(None) => {}
        Err(e) => return Some(format!("cannot read the IPv4 routing table ({e})")),
    }
    match default_route_v6(dev) {
        Ok(Some(gw)) => return Some(format!("it carries the IPv6 default route (via {gw})")),
        Ok(None) => {}
        Err(e) => return Some(format!("cannot read the IPv6 routing table ({e})")),
    }
    addrs
        .iter()
        .find(|(name, addr)| name == dev && is_host_global(*addr))
        .map(|(_, addr)| format!("it has the host address {addr}"))
}

fn is_host_global(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => {
            !(a.is_loopback() || a.is_link_local() || a.is_unspecified() || a.is_multicast())
        }
        IpAddr::V6(a) => {
            let link_local = (a.segments()[0] & 0xffc0) == 0xfe80;
            !(a.is_loopback() || a.is_unspecified() || a.is_multicast() || link_local)
        }
    }
}

/// `/proc/thread-self/net/FILE` (this thread's namespace), or `/proc/net/FILE`.
fn read_proc_net(file: &str) -> io::Result<String> {
    fs::read_to_string(format!("/proc/thread-self/net/{file}"))
        .or_else(|_| fs::read_to_string(format!("/proc/net/{file}")))
}

/// The gateway of an IPv4 default route through `dev`, if there is one.
fn default_route_v4(dev: &str) -> io::Result<Option<Ipv4Addr>> {
    Ok(parse_route_v4(&read_proc_net("route")?, dev))
}

fn parse_route_v4(table: &str, dev: &str) -> Option<Ipv4Addr> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let hex = |i: usize| f.get(i).and_then(|s| u32::from_str_radix(s, 16).ok());
        let (dst, gw, flags, mask) = (hex(1)?, hex(2)?, hex(3)?, hex(7)?);
        // Addresses are printed as the raw network-order word in host order.
        (f[0] == dev && dst == 0 && mask == 0 && flags & RTF_UP != 0)
            .then(|| Ipv4Addr::from(gw.to_ne_bytes()))
    })
}

/// The next hop of an IPv6 default route through `dev`, if there is one.
fn default_route_v6(dev: &str) -> io::Result<Option<Ipv6Addr>> {
    match read_proc_net("ipv6_route") {
        Ok(table) => Ok(parse_route_v6(&table, dev)),
        // No IPv6 in this kernel or namespace: no IPv6 default route.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn parse_route_v6(table: &str, dev: &str) -> Option<Ipv6Addr> {
    table.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || f[9] != dev {
            return None;
        }
        let flags = u32::from_str_radix(f[8], 16).ok()?;
        let default = f[0].chars().all(|c| c == '0') && f[1] == "00";
        if !default || flags & RTF_UP == 0 || flags & RTF_REJECT != 0 {
            return None;
        }
        u128::from_str_radix(f[4], 16).ok().map(Ipv6Addr::from)
    })
}

/// Devices stacked on `dev` (bridge, bond, VLAN, macvlan...).
fn upper_devices(dev: &str) -> Vec<String> {
    let Ok(dir) = fs::read_dir(format!("/sys/class/net/{dev}")) else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let name = e.ok()?.file_name().into_string().ok()?;
        name.strip_prefix("upper_").map(str::to_string)
    })
    .collect()
}

/// Active rx queues of `iface` (ethtool channels: rx + combined; else the
/// `rx-*` entries in sysfs; else 1). One AF_XDP socket serves each.
pub fn rx_queue_count(iface: &str) -> io::Result<u32> {
    match sys::ethtool_rx_channels(iface) {
        Ok(n) if n > 0 => return Ok(n),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return Err(e),
        _ => {}
    }
    let sysfs = fs::read_dir(format!("/sys/class/net/{iface}/queues")).map(|d| {
        d.filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
            .count() as u32
    });
    Ok(sysfs.ok().filter(|&n| n > 0).unwrap_or(1))
}

/// Moves the calling thread (only it) into a network namespace: a name
/// under `/run/netns` (as `ip netns` makes them) or a path such as
/// `/proc/PID/ns/net`. Everything the XDP path does afterwards on this
/// thread (interface lookup, attach, socket bind, detach) happens there.
pub fn enter_netns(name_or_path: &str) -> io::Result<()> {
    if name_or_path.contains('/') {
        sys::setns_net(name_or_path)
    } else {
        sys::setns_net(&format!("/run/netns/{name_or_path}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_default_route() {
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t00000000\t0100A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                     eth0\t0000A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n\
                     eth1\t0012C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(
            parse_route_v4(table, "eth0"),
            Some(Ipv4Addr::new(192, 168, 0, 1))
        );
        assert_eq!(parse_route_v4(table, "eth1"), None);
    }

    #[test]
    fn ipv6_default_route() {
        let table = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth0\n\
                     00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200 lo\n\
                     20010db8000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth1\n";
        assert_eq!(
            parse_route_v6(table, "eth0"),
            Some("fe80::1".parse().unwrap())
        );
        assert_eq!(
            parse_route_v6(table, "lo"),
            None,
            "reject routes do not count"
        );
        assert_eq!(parse_route_v6(table, "eth1"), None);
    }

    #[test]
    fn global_addresses() {
        assert!(is_host_global("10.1.2.3".parse().unwrap()));
        assert!(is_host_global("fd00::1".parse().unwrap()));
        assert!(!is_host_global("127.0.0.1".parse().unwrap()));
        assert!(!is_host_global("169.254.1.1".parse().unwrap()));
        assert!(!is_host_global("fe80::1".parse().unwrap()));
        assert!(!is_host_global("::1".parse().unwrap()));
    }
}
