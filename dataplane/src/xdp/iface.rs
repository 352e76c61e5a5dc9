//! Interface facts the XDP path needs: whether taking an interface over
//! would cut the host off its network, how many rx queues it has, and
//! entering a network namespace.
#![forbid(unsafe_code)]

use std::fs;
use std::io;
use std::net::IpAddr;

use super::sys;

/// Why `iface` must not be taken over by XDP without `--force`, or `None`
/// when it looks like a pure capture port.
///
/// It must not when it, or a device stacked on it (its master: bridge,
/// bond, team, VRF; a VLAN, macvlan or ipvlan on top of it), has one of the
/// host's global addresses or carries a route: a default route or a
/// specific one, in any routing table (a VRF's included). Loopback and
/// link-local addresses, IPv6 link-local (`fe80::/64`) and multicast routes,
/// and the local/broadcast entries the kernel keeps for addresses do not
/// count. Everything is asked of the kernel over rtnetlink and
/// `getifaddrs`, so it answers for the calling thread's network namespace.
/// When a table cannot be read it refuses too, saying why: guessing wrong
/// here cuts a box off its network.
pub fn iface_carries_host_traffic(iface: &str) -> Option<String> {
    let addrs = match sys::interface_addresses() {
        Ok(a) => a,
        Err(e) => return Some(format!("cannot list the host's addresses ({e})")),
    };
    let links = match nl::links() {
        Ok(l) => l,
        Err(e) => return Some(format!("cannot list the interfaces ({e})")),
    };
    let routes = match nl::routes() {
        Ok(r) => r,
        Err(e) => return Some(format!("cannot read the routing tables ({e})")),
    };
    let Some(root) = links.iter().find(|l| l.name == iface) else {
        return Some(format!(
            "{iface} is not an interface of this network namespace"
        ));
    };
    let mut visited = vec![root.index];
    check(root, root, &links, &routes, &addrs, 0, &mut visited)
}

/// Whether `iface` exists in the calling thread's network namespace.
pub fn interface_exists(iface: &str) -> bool {
    sys::ifindex(iface).is_ok()
}

fn check(
    root: &nl::Link,
    dev: &nl::Link,
    links: &[nl::Link],
    routes: &[nl::Route],
    addrs: &[(String, IpAddr)],
    depth: usize,
    visited: &mut Vec<u32>,
) -> Option<String> {
    if let Some(why) = own_reason(dev, routes, addrs) {
        return Some(if dev.index == root.index {
            format!("{}: {why}", dev.name)
        } else {
            format!(
                "{} carries the traffic of {} ({}), and {}: {why}",
                root.name,
                dev.name,
                dev.kind.as_deref().unwrap_or("stacked device"),
                dev.name
            )
        });
    }
    if depth >= 4 {
        return None;
    }
    for upper in upper_devices(dev, links) {
        if visited.contains(&upper.index) {
            continue;
        }
        visited.push(upper.index);
        if let Some(why) = check(root, upper, links, routes, addrs, depth + 1, visited) {
            return Some(why);
        }
    }
    None
}

/// Devices stacked on `dev`: its master, and the devices whose lower link it
/// is (VLAN, macvlan, ipvlan; not a veth peer, which is another port).
fn upper_devices<'a>(dev: &nl::Link, links: &'a [nl::Link]) -> Vec<&'a nl::Link> {
    links
        .iter()
        .filter(|l| {
            Some(l.index) == dev.master
                || (l.link == Some(dev.index)
                    && !l.link_other_netns
                    && l.kind.as_deref() != Some("veth"))
        })
        .collect()
}

/// The first of: a default route through `dev`, a host address on it, any
/// other route through it.
fn own_reason(dev: &nl::Link, routes: &[nl::Route], addrs: &[(String, IpAddr)]) -> Option<String> {
    let mut through = routes
        .iter()
        .filter(|r| r.oifs.contains(&dev.index) && r.counts());
    if let Some(r) = through.clone().find(|r| r.dst_len == 0) {
        return Some(format!("it carries the {}", r.describe()));
    }
    if let Some((_, addr)) = addrs
        .iter()
        .find(|(name, addr)| *name == dev.name && is_host_global(*addr))
    {
        return Some(format!("it has the host address {addr}"));
    }
    through
        .next()
        .map(|r| format!("it carries the route {}", r.describe()))
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

/// Just enough rtnetlink (`RTM_GETLINK` and `RTM_GETROUTE` dumps) to see the
/// interfaces and every routing table of the calling thread's namespace.
mod nl {
    use std::io::{self, Read};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use socket2::{Domain, Protocol, Socket, Type};

    const NLMSG_HDR: usize = 16;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    const NLM_F_REQUEST: u16 = 0x1;
    const NLM_F_DUMP: u16 = 0x300;
    const RTM_GETLINK: u16 = 18;
    const RTM_NEWLINK: u16 = 16;
    const RTM_GETROUTE: u16 = 26;
    const RTM_NEWROUTE: u16 = 24;
    const IFLA_IFNAME: u16 = 3;
    const IFLA_LINK: u16 = 5;
    const IFLA_MASTER: u16 = 10;
    const IFLA_LINKINFO: u16 = 18;
    const IFLA_INFO_KIND: u16 = 1;
    const IFLA_LINK_NETNSID: u16 = 37;
    const RTA_DST: u16 = 1;
    const RTA_OIF: u16 = 4;
    const RTA_GATEWAY: u16 = 5;
    const RTA_MULTIPATH: u16 = 9;
    const RTA_TABLE: u16 = 15;
    const RTN_UNICAST: u8 = 1;
    const RT_TABLE_MAIN: u32 = 254;
    const RT_TABLE_LOCAL: u32 = 255;
    /// A dump datagram is at most 32 KiB; a larger buffer never truncates.
    const BUF: usize = 64 * 1024;

    /// One interface of the namespace.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(super) struct Link {
        pub index: u32,
        pub name: String,
        /// `IFLA_MASTER`: the bridge, bond or VRF it is enslaved to.
        pub master: Option<u32>,
        /// `IFLA_LINK`: the lower device (VLAN, macvlan) or a veth peer.
        pub link: Option<u32>,
        /// The lower link is in another namespace (`IFLA_LINK_NETNSID`).
        pub link_other_netns: bool,
        /// `IFLA_INFO_KIND`: "bridge", "bond", "vrf", "vlan", "veth"...
        pub kind: Option<String>,
    }

    /// One route of any table.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(super) struct Route {
        pub family: u8,
        pub kind: u8,
        pub table: u32,
        pub dst: Option<IpAddr>,
        pub dst_len: u8,
        pub gateway: Option<IpAddr>,
        /// The output interfaces (one, or a multipath route's next hops).
        pub oifs: Vec<u32>,
    }

    impl Route {
        /// Whether a route through a device says the host sends traffic
        /// there: unicast, and not the IPv6 link-local or multicast prefixes
        /// every IPv6-enabled link has.
        pub(super) fn counts(&self) -> bool {
            if self.kind != RTN_UNICAST {
                return false;
            }
            match self.dst {
                Some(IpAddr::V6(d)) => {
                    let s = d.segments()[0];
                    !((s & 0xffc0) == 0xfe80 && self.dst_len >= 10) && (s & 0xff00) != 0xff00
                }
                _ => true,
            }
        }

        pub(super) fn describe(&self) -> String {
            let dst = match self.dst {
                _ if self.dst_len == 0 => match self.family as i32 {
                    libc::AF_INET6 => "IPv6 default route".to_string(),
                    _ => "IPv4 default route".to_string(),
                },
                Some(d) => format!("{d}/{}", self.dst_len),
                None => format!("?/{}", self.dst_len),
            };
            let via = self
                .gateway
                .map(|g| format!(" via {g}"))
                .unwrap_or_default();
            let table = match self.table {
                RT_TABLE_MAIN => "main".to_string(),
                RT_TABLE_LOCAL => "local".to_string(),
                t => t.to_string(),
            };
            format!("{dst}{via} (table {table})")
        }
    }

    /// Attributes (`struct rtattr` / `nlattr`) of `b`: (type, payload).
    fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
        std::iter::from_fn(move || {
            let len = usize::from(u16::from_ne_bytes(b.get(..2)?.try_into().ok()?));
            let ty = u16::from_ne_bytes(b.get(2..4)?.try_into().ok()?) & 0x3fff;
            if len < 4 || len > b.len() {
                return None;
            }
            let payload = &b[4..len];
            b = b.get(len.next_multiple_of(4)..).unwrap_or(&[]);
            Some((ty, payload))
        })
    }

    fn u32_of(p: &[u8]) -> Option<u32> {
        p.get(..4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_ne_bytes)
    }

    fn ip_of(p: &[u8]) -> Option<IpAddr> {
        match p.len() {
            4 => <[u8; 4]>::try_from(p)
                .ok()
                .map(|a| IpAddr::V4(Ipv4Addr::from(a))),
            16 => <[u8; 16]>::try_from(p)
                .ok()
                .map(|a| IpAddr::V6(Ipv6Addr::from(a))),
            _ => None,
        }
    }

    fn string_of(p: &[u8]) -> String {
        let end = p.iter().position(|&c| c == 0).unwrap_or(p.len());
        String::from_utf8_lossy(&p[..end]).into_owned()
    }

    /// Sends a dump request of `ty` with `body` and returns the payloads
    /// (after the netlink header) of every answer of type `want`.
    fn dump(ty: u16, body: &[u8], want: u16) -> io::Result<Vec<Vec<u8>>> {
        let sock = Socket::new(
            Domain::from(libc::AF_NETLINK),
            Type::DGRAM,
            Some(Protocol::from(libc::NETLINK_ROUTE)),
        )?;
        let seq: u32 = 1;
        let len = u32::try_from(NLMSG_HDR + body.len()).map_err(io::Error::other)?;
        let mut req = Vec::with_capacity(NLMSG_HDR + body.len());
        req.extend_from_slice(&len.to_ne_bytes());
        req.extend_from_slice(&ty.to_ne_bytes());
        req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        req.extend_from_slice(&seq.to_ne_bytes());
        req.extend_from_slice(&0u32.to_ne_bytes());
        req.extend_from_slice(body);
        // An unconnected netlink socket sends to the kernel (port id 0).
        sock.send(&req)?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; BUF];
        loop {
            let n = (&sock).read(&mut buf)?;
            if n == 0 {
                return Err(io::Error::other("netlink socket closed mid-dump"));
            }
            let mut b = &buf[..n];
            while b.len() >= NLMSG_HDR {
                let mlen = u32_of(b).unwrap_or(0) as usize;
                let mty = u16::from_ne_bytes([b[4], b[5]]);
                if mlen < NLMSG_HDR || mlen > b.len() {
                    return Err(io::Error::other("malformed netlink message"));
                }
                let payload = &b[NLMSG_HDR..mlen];
                match mty {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let errno = payload
                            .get(..4)
                            .and_then(|e| e.try_into().ok())
                            .map(i32::from_ne_bytes)
                            .unwrap_or(0);
                        if errno != 0 {
                            return Err(io::Error::from_raw_os_error(-errno));
                        }
                    }
                    t if t == want => out.push(payload.to_vec()),
                    _ => {}
                }
                b = b.get(mlen.next_multiple_of(4)..).unwrap_or(&[]);
            }
        }
    }

    /// Every interface of the calling thread's namespace.
    pub(super) fn links() -> io::Result<Vec<Link>> {
        // struct ifinfomsg, all zero: every family, every interface.
        let msgs = dump(RTM_GETLINK, &[0u8; 16], RTM_NEWLINK)?;
        Ok(msgs.iter().filter_map(|m| parse_link(m)).collect())
    }

    pub(super) fn parse_link(m: &[u8]) -> Option<Link> {
        let index = u32_of(m.get(4..8)?)?;
        let mut link = Link {
            index,
            name: String::new(),
            master: None,
            link: None,
            link_other_netns: false,
            kind: None,
        };
        for (ty, p) in attrs(m.get(16..)?) {
            match ty {
                IFLA_IFNAME => link.name = string_of(p),
                IFLA_MASTER => link.master = u32_of(p).filter(|&i| i != 0),
                IFLA_LINK => link.link = u32_of(p).filter(|&i| i != 0 && i != index),
                IFLA_LINK_NETNSID => link.link_other_netns = true,
                IFLA_LINKINFO => {
                    link.kind = attrs(p)
                        .find(|(t, _)| *t == IFLA_INFO_KIND)
                        .map(|(_, k)| string_of(k));
                }
                _ => {}
            }
        }
        Some(link)
    }

    /// Every route of every table (IPv4 and IPv6) of the calling thread's namespace.
    pub(super) fn routes() -> io::Result<Vec<Route>> {
        // struct rtmsg, all zero: AF_UNSPEC dumps every family and table.
        let msgs = dump(RTM_GETROUTE, &[0u8; 12], RTM_NEWROUTE)?;
        Ok(msgs.iter().filter_map(|m| parse_route(m)).collect())
    }

    pub(super) fn parse_route(m: &[u8]) -> Option<Route> {
        let h = m.get(..12)?;
        let mut r = Route {
            family: h[0],
            kind: h[7],
            table: u32::from(h[4]),
            dst: None,
            dst_len: h[1],
            gateway: None,
            oifs: Vec::new(),
        };
        for (ty, p) in attrs(&m[12..]) {
            match ty {
                RTA_DST => r.dst = ip_of(p),
                RTA_GATEWAY => r.gateway = ip_of(p),
                RTA_OIF => r.oifs.extend(u32_of(p)),
                RTA_TABLE => r.table = u32_of(p).unwrap_or(r.table),
                RTA_MULTIPATH => {
                    // struct rtnexthop { u16 len; u8 flags; u8 hops; i32 ifindex; } + attrs
                    let mut b = p;
                    while b.len() >= 8 {
                        let len = usize::from(u16::from_ne_bytes([b[0], b[1]]));
                        if len < 8 || len > b.len() {
                            break;
                        }
                        r.oifs.extend(u32_of(&b[4..8]));
                        if r.gateway.is_none() {
                            r.gateway = attrs(&b[8..len])
                                .find(|(t, _)| *t == RTA_GATEWAY)
                                .and_then(|(_, g)| ip_of(g));
                        }
                        b = b.get(len.next_multiple_of(4)..).unwrap_or(&[]);
                    }
                }
                _ => {}
            }
        }
        Some(r)
    }
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
    use std::net::Ipv6Addr;

    fn rta(ty: u16, payload: &[u8]) -> Vec<u8> {
        let len = 4 + payload.len();
        let mut v = (len as u16).to_ne_bytes().to_vec();
        v.extend(ty.to_ne_bytes());
        v.extend(payload);
        v.resize(len.next_multiple_of(4), 0);
        v
    }

    fn route_msg(family: u8, dst_len: u8, table: u8, kind: u8, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut m = vec![family, dst_len, 0, 0, table, 4, 0, kind, 0, 0, 0, 0];
        for a in attrs {
            m.extend(a);
        }
        m
    }

    #[test]
    fn routes_of_every_table_count_but_link_local_and_multicast_do_not() {
        let specific = route_msg(
            libc::AF_INET as u8,
            24,
            252,
            1,
            &[
                rta(1, &[198, 18, 5, 0]),
                rta(4, &7u32.to_ne_bytes()),
                rta(15, &100u32.to_ne_bytes()),
            ],
        );
        let r = nl::parse_route(&specific).unwrap();
        assert_eq!(r.oifs, vec![7]);
        assert!(r.counts());
        assert_eq!(r.describe(), "198.18.5.0/24 (table 100)");

        let default = route_msg(
            libc::AF_INET6 as u8,
            0,
            254,
            1,
            &[
                rta(5, &"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets()),
                rta(4, &3u32.to_ne_bytes()),
            ],
        );
        let r = nl::parse_route(&default).unwrap();
        assert!(r.counts());
        assert_eq!(
            r.describe(),
            "IPv6 default route via 2001:db8::1 (table main)"
        );

        let link_local = route_msg(
            libc::AF_INET6 as u8,
            64,
            254,
            1,
            &[
                rta(1, &"fe80::".parse::<Ipv6Addr>().unwrap().octets()),
                rta(4, &3u32.to_ne_bytes()),
            ],
        );
        assert!(!nl::parse_route(&link_local).unwrap().counts());
        let multicast = route_msg(
            libc::AF_INET6 as u8,
            8,
            255,
            5,
            &[
                rta(1, &"ff00::".parse::<Ipv6Addr>().unwrap().octets()),
                rta(4, &3u32.to_ne_bytes()),
            ],
        );
        assert!(!nl::parse_route(&multicast).unwrap().counts());
    }

    #[test]
    fn multipath_next_hops_are_output_interfaces() {
        let mut hops = Vec::new();
        for (ifindex, gw) in [(5u32, [198, 18, 0, 1]), (9, [198, 18, 0, 2])] {
            let a = rta(5, &gw);
            let len = (8 + a.len()) as u16;
            hops.extend(len.to_ne_bytes());
            hops.extend([0, 0]);
            hops.extend(ifindex.to_ne_bytes());
            hops.extend(a);
        }
        let m = route_msg(libc::AF_INET as u8, 0, 254, 1, &[rta(9, &hops)]);
        let r = nl::parse_route(&m).unwrap();
        assert_eq!(r.oifs, vec![5, 9]);
        assert_eq!(r.gateway, Some("198.18.0.1".parse().unwrap()));
    }

    #[test]
    fn truncated_attributes_end_the_walk() {
        let mut m = route_msg(
            libc::AF_INET as u8,
            24,
            254,
            1,
            &[rta(4, &7u32.to_ne_bytes())],
        );
        m.extend([200, 0, 1, 0]); // claims 200 bytes, has 4
        let r = nl::parse_route(&m).unwrap();
        assert_eq!(r.oifs, vec![7]);
        assert!(nl::parse_route(&[0u8; 5]).is_none());
    }

    #[test]
    fn link_master_and_kind() {
        let mut m = vec![0u8; 16];
        m[4..8].copy_from_slice(&4u32.to_ne_bytes());
        m.extend(rta(3, b"wlx0\0"));
        m.extend(rta(10, &2u32.to_ne_bytes()));
        m.extend(rta(18, &rta(1, b"veth\0")));
        let l = nl::parse_link(&m).unwrap();
        assert_eq!(l.name, "wlx0");
        assert_eq!(l.master, Some(2));
        assert_eq!(l.kind.as_deref(), Some("veth"));
    }

    /// The live tables of this (test) namespace parse: the dump protocol
    /// works against the real kernel, and loopback is there.
    #[test]
    fn live_dump_lists_loopback() {
        let links = nl::links().unwrap();
        assert!(links.iter().any(|l| l.name == "lo"), "{links:?}");
        nl::routes().unwrap();
        assert!(iface_carries_host_traffic("wl-no-such-interface").is_some());
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
