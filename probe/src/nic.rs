//! NIC and kernel counters of one interface, for `wirelens probe nic` and the
//! live daemon's `/metrics`.
//!
//! Two sources, read without shelling out:
//!
//! - **kernel**: `/sys/class/net/IF/statistics/*` (`rx_packets`, `rx_dropped`,
//!   `rx_missed_errors`, ...), the same for every driver;
//! - **driver**: the driver's own statistics through the ethtool ioctl
//!   (`ETHTOOL_GSSET_INFO` for the count, `ETHTOOL_GSTRINGS` for the names,
//!   `ETHTOOL_GSTATS` for the values; what `ethtool -S` prints). veth gives
//!   `peer_ifindex` and `rx_queue_0_xdp_packets` etc.; drivers without
//!   statistics give none (not an error).
//!
//! Where a driver's name says which queue a counter belongs to
//! (`rx_queue_3_packets`, `tx-3.bytes`, `rx3_packets`, `queue_3_rx_drops`),
//! [`Counter::queue`] holds it, so a daemon can label by queue.
//!
//! `/sys/class/net` shows the interfaces of the network namespace sysfs was
//! mounted in (`ip netns exec` remounts it); the ioctl uses the caller's
//! namespace. Run both in the namespace of the interface.
#![forbid(unsafe_code)]

use std::fs;
use std::io;
use std::path::Path;

use serde::Serialize;

use crate::sys;

/// Where a counter comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `/sys/class/net/IF/statistics`.
    Kernel,
    /// The driver's ethtool statistics.
    Driver,
}

/// Direction of a per-queue counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueDir {
    Rx,
    Tx,
}

/// A queue named by a driver counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Queue {
    pub dir: QueueDir,
    pub index: u32,
}

/// One counter: `name` as the source spells it, and its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Counter {
    pub name: String,
    pub value: u64,
    pub source: Source,
    /// The queue, where the driver's name says which.
    pub queue: Option<Queue>,
}

/// Every counter of an interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NicCounters {
    pub ifname: String,
    /// Kernel statistics first (sorted by name), then the driver's in its order.
    pub counters: Vec<Counter>,
    /// Why the driver statistics are missing, if they are (e.g. "not supported").
    pub driver_error: Option<String>,
}

impl NicCounters {
    /// The counters as `(name, value)` pairs; driver names are prefixed
    /// `driver_` so they never clash with the kernel's.
    pub fn pairs(&self) -> impl Iterator<Item = (String, u64)> + '_ {
        self.counters.iter().map(|c| match c.source {
            Source::Kernel => (c.name.clone(), c.value),
            Source::Driver => (format!("driver_{}", c.name), c.value),
        })
    }

    /// The value of the counter `name` from `source`.
    pub fn get(&self, source: Source, name: &str) -> Option<u64> {
        self.counters
            .iter()
            .find(|c| c.source == source && c.name == name)
            .map(|c| c.value)
    }
}

/// Errors of [`read_counters`].
#[derive(Debug, thiserror::Error)]
pub enum NicError {
    #[error("no interface {ifname:?} in this network namespace (see `ip link`)")]
    NoSuchInterface { ifname: String },
    #[error("reading {path}: {source}")]
    Sysfs { path: String, source: io::Error },
}

/// Reads the kernel and driver counters of `ifname`. The driver part is
/// best-effort: its failure is reported in [`NicCounters::driver_error`].
pub fn read_counters(ifname: &str) -> Result<NicCounters, NicError> {
    if ifname.is_empty() || ifname.contains('/') || ifname.starts_with('.') {
        return Err(NicError::NoSuchInterface {
            ifname: ifname.to_string(),
        });
    }
    let dir = Path::new("/sys/class/net").join(ifname);
    if !dir.exists() {
        return Err(NicError::NoSuchInterface {
            ifname: ifname.to_string(),
        });
    }
    let mut counters = kernel_counters(&dir.join("statistics"))?;
    let driver_error = match driver_counters(ifname) {
        Ok(mut d) => {
            counters.append(&mut d);
            None
        }
        Err(e) => Some(match e.raw_os_error() {
            Some(libc::EOPNOTSUPP) => "the driver has no ethtool statistics".to_string(),
            _ => format!("ethtool statistics: {e}"),
        }),
    };
    Ok(NicCounters {
        ifname: ifname.to_string(),
        counters,
        driver_error,
    })
}

fn kernel_counters(dir: &Path) -> Result<Vec<Counter>, NicError> {
    let err = |source| NicError::Sysfs {
        path: dir.display().to_string(),
        source,
    };
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // A counter some drivers refuse to read (EINVAL, EOPNOTSUPP) is left out.
        let Ok(text) = fs::read_to_string(entry.path()) else {
            continue;
        };
        if let Ok(value) = text.trim().parse::<u64>() {
            out.push(Counter {
                name,
                value,
                source: Source::Kernel,
                queue: None,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

const ETHTOOL_GFLAGS: u32 = 0x25;
/// `ETH_FLAG_RXVLAN`: the NIC strips 802.1Q tags on receive (rx-vlan-offload).
const ETH_FLAG_RXVLAN: u32 = 1 << 8;

/// Whether `ifname` strips 802.1Q tags on receive (`rx-vlan-offload`): the
/// tag then travels beside the frame, not in it, so an XDP program and an
/// AF_XDP socket see the frame untagged.
pub fn rx_vlan_offload(ifname: &str) -> io::Result<bool> {
    // struct ethtool_value { u32 cmd, data }
    let mut v = [0u64; 1];
    set_u32(&mut v, 0, ETHTOOL_GFLAGS);
    sys::ethtool(ifname, &mut v)?;
    Ok(get_u32(&v, 1) & ETH_FLAG_RXVLAN != 0)
}

const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSTATS: u32 = 0x1d;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETH_SS_STATS: u32 = 1;
const ETH_GSTRING_LEN: usize = 32;
/// Room for counters a driver adds between our calls (the kernel writes as
/// many as the driver has at that moment).
const SLACK: usize = 64;

/// Tries before giving up when the driver's counter set keeps changing
/// between the calls.
const TRIES: usize = 3;

fn driver_counters(ifname: &str) -> io::Result<Vec<Counter>> {
    for _ in 0..TRIES {
        if let Some(c) = driver_counters_once(ifname)? {
            return Ok(c);
        }
    }
    Err(io::Error::other(format!(
        "{ifname}: the driver's statistics set changed size between calls {TRIES} times"
    )))
}

/// One GSSET_INFO -> GSTRINGS -> GSTATS round; `None` when the kernel's
/// answers disagree on the count (the driver changed its set between the
/// calls): names and values would not line up.
fn driver_counters_once(ifname: &str) -> io::Result<Option<Vec<Counter>>> {
    // struct ethtool_sset_info { u32 cmd, reserved; u64 sset_mask; u32 data[] }
    let mut info = [0u64; 3];
    set_u32(&mut info, 0, ETHTOOL_GSSET_INFO);
    info[1] = 1 << ETH_SS_STATS;
    sys::ethtool(ifname, &mut info)?;
    if info[1] & (1 << ETH_SS_STATS) == 0 {
        return Ok(Some(Vec::new()));
    }
    let n = get_u32(&info, 4) as usize;
    if n == 0 {
        return Ok(Some(Vec::new()));
    }
    // The kernel writes as many entries as the driver has at the moment of
    // each call: room for growth, then the answer is checked against it.
    let cap = n + SLACK.max(n);

    // struct ethtool_gstrings { u32 cmd, string_set, len; u8 data[] }
    let mut strings = vec![0u64; (12 + cap * ETH_GSTRING_LEN).div_ceil(8)];
    set_u32(&mut strings, 0, ETHTOOL_GSTRINGS);
    set_u32(&mut strings, 1, ETH_SS_STATS);
    set_u32(&mut strings, 2, n as u32);
    sys::ethtool(ifname, &mut strings)?;
    let n_names = get_u32(&strings, 2) as usize;
    if n_names != n {
        return Ok(None);
    }
    let bytes: Vec<u8> = strings.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let names: Vec<String> = (0..n_names)
        .map(|i| {
            let raw = &bytes[12 + i * ETH_GSTRING_LEN..12 + (i + 1) * ETH_GSTRING_LEN];
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            String::from_utf8_lossy(&raw[..end]).trim().to_string()
        })
        .collect();

    // struct ethtool_stats { u32 cmd, n_stats; u64 data[] }
    let mut stats = vec![0u64; 1 + cap];
    set_u32(&mut stats, 0, ETHTOOL_GSTATS);
    set_u32(&mut stats, 1, n as u32);
    sys::ethtool(ifname, &mut stats)?;
    let n_values = get_u32(&stats, 1) as usize;
    if n_values != n {
        return Ok(None);
    }
    Ok(Some(
        names
            .into_iter()
            .zip(stats[1..=n_values].iter())
            .map(|(name, &value)| Counter {
                queue: parse_queue(&name),
                name,
                value,
                source: Source::Driver,
            })
            .collect(),
    ))
}

/// The `i`-th u32 of a u64-backed kernel buffer (native endianness).
fn get_u32(buf: &[u64], i: usize) -> u32 {
    let w = buf[i / 2].to_ne_bytes();
    let h = if i % 2 == 0 { &w[..4] } else { &w[4..] };
    u32::from_ne_bytes(h.try_into().unwrap_or([0; 4]))
}

fn set_u32(buf: &mut [u64], i: usize, v: u32) {
    let mut w = buf[i / 2].to_ne_bytes();
    let r = if i % 2 == 0 { 0..4 } else { 4..8 };
    w[r].copy_from_slice(&v.to_ne_bytes());
    buf[i / 2] = u64::from_ne_bytes(w);
}

/// The queue a driver counter names, for the common spellings:
/// `rx_queue_N_*`, `tx_queue_N_*` (veth, virtio, ixgbe, i40e), `rx-N.*` /
/// `tx-N.*` (ena, bnxt style), `rxN_*` / `txN_*` (mlx5), `queue_N_rx_*`.
pub fn parse_queue(name: &str) -> Option<Queue> {
    fn num(s: &str) -> Option<(u32, &str)> {
        let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        if end == 0 {
            return None;
        }
        Some((s[..end].parse().ok()?, &s[end..]))
    }
    fn dir_of(s: &str) -> Option<(QueueDir, &str)> {
        if let Some(r) = s.strip_prefix("rx") {
            Some((QueueDir::Rx, r))
        } else {
            s.strip_prefix("tx").map(|r| (QueueDir::Tx, r))
        }
    }
    if let Some(rest) = name.strip_prefix("queue_") {
        let (index, rest) = num(rest)?;
        let (dir, _) = dir_of(rest.strip_prefix('_')?)?;
        return Some(Queue { dir, index });
    }
    let (dir, rest) = dir_of(name)?;
    let rest = rest
        .strip_prefix("_queue_")
        .or_else(|| rest.strip_prefix('-'))
        .unwrap_or(rest);
    let (index, after) = num(rest)?;
    if after.is_empty() || !after.starts_with(['_', '.', ':']) {
        return None;
    }
    Some(Queue { dir, index })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rx_vlan_offload_of_loopback_answers() {
        // Loopback has no VLAN offload; an unknown interface is an error.
        assert!(!rx_vlan_offload("lo").unwrap());
        assert!(rx_vlan_offload("wl-no-such-if").is_err());
    }

    #[test]
    fn queue_names() {
        let q = |d, i| Some(Queue { dir: d, index: i });
        use QueueDir::{Rx, Tx};
        assert_eq!(parse_queue("rx_queue_0_xdp_packets"), q(Rx, 0));
        assert_eq!(parse_queue("tx_queue_12_xdp_xmit"), q(Tx, 12));
        assert_eq!(parse_queue("rx-3.packets"), q(Rx, 3));
        assert_eq!(parse_queue("rx7_bytes"), q(Rx, 7));
        assert_eq!(parse_queue("tx0_xdp_xmit"), q(Tx, 0));
        assert_eq!(parse_queue("queue_2_rx_drops"), q(Rx, 2));
        assert_eq!(parse_queue("peer_ifindex"), None);
        assert_eq!(parse_queue("rx_packets"), None);
        assert_eq!(parse_queue("rx_over_errors"), None);
        assert_eq!(parse_queue("tx1"), None);
    }

    #[test]
    fn u32_fields_of_u64_buffers() {
        let mut b = [0u64; 2];
        set_u32(&mut b, 0, 7);
        set_u32(&mut b, 1, 9);
        set_u32(&mut b, 3, 11);
        assert_eq!(
            (
                get_u32(&b, 0),
                get_u32(&b, 1),
                get_u32(&b, 2),
                get_u32(&b, 3)
            ),
            (7, 9, 0, 11)
        );
    }

    #[test]
    fn loopback_has_kernel_counters() {
        // `lo` exists in every namespace and has no ethtool statistics.
        let c = read_counters("lo").unwrap();
        assert!(c.get(Source::Kernel, "rx_packets").is_some());
        assert!(c.get(Source::Kernel, "tx_bytes").is_some());
        assert!(c.pairs().any(|(n, _)| n == "rx_dropped"));
        assert!(matches!(
            read_counters("wl-no-such-if"),
            Err(NicError::NoSuchInterface { .. })
        ));
        assert!(read_counters("../lo").is_err());
    }
}
