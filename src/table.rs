//! The human view of an analysis: a summary block, then the worst flows.

use std::cmp::Reverse;
use std::io::{self, Write};

use wirelens_dataplane::report::{Direction, FlowRecord, Proto, Summary, TcpPath, TcpState};
use wirelens_output::{human_ns, NsStyle};

fn one_way(r: &FlowRecord) -> bool {
    r.tcp.as_ref().is_some_and(|t| t.path == TcpPath::OneWay)
}

/// How bad a flow looks: loss first, then stalls, then RTT, then size. A
/// one-way flow's retransmissions are not loss the tap can judge.
pub fn badness(r: &FlowRecord) -> (u64, u64, u64, u64) {
    let loss = if one_way(r) {
        0
    } else {
        r.c2s.retransmits + r.s2c.retransmits + r.c2s.gaps + r.s2c.gaps
    };
    let stall = r.c2s.zero_window_ns + r.s2c.zero_window_ns;
    let rtt = r
        .c2s
        .rtt
        .p99_ns
        .unwrap_or(0)
        .max(r.s2c.rtt.p99_ns.unwrap_or(0));
    (loss, stall, rtt, r.c2s.bytes + r.s2c.bytes)
}

/// Keeps the `limit` worst flows seen, in bounded memory.
#[derive(Debug)]
pub struct Worst {
    limit: usize,
    rows: Vec<FlowRecord>,
}

impl Worst {
    pub fn new(limit: usize) -> Worst {
        Worst {
            limit,
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, r: FlowRecord) {
        if self.limit == 0 {
            return;
        }
        self.rows.push(r);
        if self.rows.len() >= self.limit * 4 + 16 {
            self.trim();
        }
    }

    fn trim(&mut self) {
        self.rows.sort_by_key(|r| Reverse(badness(r)));
        self.rows.truncate(self.limit);
    }

    pub fn into_sorted(mut self) -> Vec<FlowRecord> {
        self.trim();
        self.rows
    }
}

pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn rtt_cell(d: &Direction) -> String {
    if d.rtt.n == 0 {
        "-".to_string()
    } else {
        format!(
            "{}/{}",
            human_ns(d.rtt.p50_ns, NsStyle::Fine),
            human_ns(d.rtt.p99_ns, NsStyle::Fine)
        )
    }
}

/// "retransmits (after tap / before tap)" for one direction.
fn retx_cell(d: &Direction) -> String {
    if d.retransmits == 0 && d.retrans_seen == 0 && d.hole_fill == 0 {
        "0".to_string()
    } else {
        format!("{} ({}/{})", d.retransmits, d.retrans_seen, d.hole_fill)
    }
}

/// The longest head-of-line hole of either direction.
fn hol_cell(r: &FlowRecord) -> String {
    match r.c2s.hol.open_ns_max.max(r.s2c.hol.open_ns_max) {
        Some(ns) => human_ns(ns, NsStyle::Fine),
        None => "-".into(),
    }
}

/// Path and middlebox signs: one-way, MSS clamped, TTL changes, ECN bleached.
fn signs_cell(r: &FlowRecord) -> String {
    let mut v = Vec::new();
    let sides = |p: &wirelens_dataplane::report::PerSide<bool>| match (p.client, p.server) {
        (true, true) => "c+s",
        (true, false) => "c",
        (false, true) => "s",
        (false, false) => "",
    };
    if let Some(t) = &r.tcp {
        if t.path == TcpPath::OneWay {
            v.push("one-way".to_string());
        }
        if !sides(&t.mss_clamped).is_empty() {
            v.push(format!("mss-clamped({})", sides(&t.mss_clamped)));
        }
        if !sides(&t.ecn_bleached).is_empty() {
            v.push(format!("ecn-bleached({})", sides(&t.ecn_bleached)));
        }
    }
    for (name, d) in [("c2s", &r.c2s), ("s2c", &r.s2c)] {
        if d.ttl.changes > 0 {
            let vals: Vec<String> = d.ttl.values.iter().map(u8::to_string).collect();
            v.push(format!("ttl {name} {}", vals.join(">")));
        }
    }
    if v.is_empty() {
        "-".into()
    } else {
        v.join(", ")
    }
}

fn state(r: &FlowRecord) -> &'static str {
    match r.tcp.as_ref().map(|t| t.state) {
        None => "-",
        Some(TcpState::SynSent) => "syn_sent",
        Some(TcpState::Established) => "established",
        Some(TcpState::Closed) => "closed",
        Some(TcpState::Reset) => "reset",
        Some(TcpState::Refused) => "refused",
        Some(TcpState::TimedOut) => "timed_out",
    }
}

fn proto(p: Proto) -> &'static str {
    match p {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
        Proto::Icmp => "icmp",
        Proto::Other => "other",
    }
}

pub fn endpoint(ip: std::net::IpAddr, port: u16) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => format!("{v4}:{port}"),
        std::net::IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

pub fn print(
    w: &mut dyn Write,
    source: &str,
    s: &Summary,
    rows: Vec<FlowRecord>,
) -> io::Result<()> {
    let nflows = s.flows.tcp + s.flows.udp + s.flows.icmp + s.flows.other;
    writeln!(
        w,
        "{source}: {} packets, {}, {} ; {nflows} flows (tcp {}, udp {}, icmp {}, other {})",
        s.packets,
        human_bytes(s.bytes),
        human_ns(s.duration_ns, NsStyle::Fine),
        s.flows.tcp,
        s.flows.udp,
        s.flows.icmp,
        s.flows.other
    )?;
    let t = &s.tcp;
    writeln!(
        w,
        "tcp: retransmits {} (seen by tap {}, holes filled {}, out-of-order {}), fast {}, spurious {}, rto {}; gaps {}; dup acks {}; zero window {} adverts, {} stalls, {}; syn {} synack {} fin {} rst {}",
        t.retransmits,
        t.retrans_seen,
        t.hole_fill,
        t.out_of_order,
        t.fast_retransmits,
        t.spurious_retransmits,
        t.rto_retransmits,
        t.gaps,
        t.dup_acks,
        t.zero_window,
        t.zero_window_events,
        human_ns(t.zero_window_ns, NsStyle::Fine),
        t.syn,
        t.synack,
        t.fin,
        t.rst
    )?;
    if t.one_way_flows > 0 {
        writeln!(
            w,
            "tcp: {} one-way flows (the tap sees one direction only: their retransmissions are not loss)",
            t.one_way_flows
        )?;
    }
    writeln!(
        w,
        "burst: {} packets / {} in the busiest 1 ms; fragments v4 {} v6 {}; icmp frag-needed {} packet-too-big {}{}",
        s.max_packets_1ms,
        human_bytes(s.max_bytes_1ms),
        s.fragments.ipv4,
        s.fragments.ipv6,
        s.icmp.frag_needed,
        s.icmp.packet_too_big,
        if s.icmp.mtus.is_empty() {
            String::new()
        } else {
            format!(" (mtu {:?})", s.icmp.mtus)
        }
    )?;
    if !s.parse_errors.is_empty() || s.non_ip > 0 || s.evicted_flows > 0 {
        let errs: Vec<String> = s
            .parse_errors
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        writeln!(
            w,
            "not analysed: non-ip {}; parse errors: {}; evicted flows {}",
            s.non_ip,
            if errs.is_empty() {
                "none".to_string()
            } else {
                errs.join(", ")
            },
            s.evicted_flows
        )?;
    }
    if !s.unsupported_link.is_empty() {
        let links: Vec<String> = s
            .unsupported_link
            .iter()
            .map(|(k, v)| format!("link type {k}: {v} frames"))
            .collect();
        writeln!(w, "skipped (unsupported link type): {}", links.join(", "))?;
    }
    if rows.is_empty() {
        return Ok(());
    }
    writeln!(w)?;
    let header = [
        "#",
        "proto",
        "client",
        "server",
        "state",
        "pkts",
        "bytes",
        "retx c2s",
        "retx s2c",
        "gaps",
        "dupack",
        "zwin",
        "hol max",
        "rtt c2s p50/p99",
        "rtt s2c p50/p99",
        "connect",
        "burst/ms",
        "signs",
    ];
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for (i, r) in rows.iter().enumerate() {
        let zw = r.c2s.zero_window_events + r.s2c.zero_window_events;
        let zw_ns = r.c2s.zero_window_ns + r.s2c.zero_window_ns;
        table.push(vec![
            (i + 1).to_string(),
            proto(r.proto).to_string(),
            endpoint(r.client.ip, r.client.port),
            endpoint(r.server.ip, r.server.port),
            state(r).to_string(),
            (r.c2s.packets + r.s2c.packets).to_string(),
            human_bytes(r.c2s.bytes + r.s2c.bytes),
            if one_way(r) {
                "one-way".into()
            } else {
                retx_cell(&r.c2s)
            },
            if one_way(r) {
                "one-way".into()
            } else {
                retx_cell(&r.s2c)
            },
            (r.c2s.gaps + r.s2c.gaps).to_string(),
            (r.c2s.dup_acks + r.s2c.dup_acks).to_string(),
            if zw == 0 {
                "0".to_string()
            } else {
                format!("{zw} {}", human_ns(zw_ns, NsStyle::Fine))
            },
            hol_cell(r),
            rtt_cell(&r.c2s),
            rtt_cell(&r.s2c),
            human_ns(
                r.tcp
                    .as_ref()
                    .and_then(|t| t.handshake.as_ref())
                    .and_then(|h| h.connect_ns),
                NsStyle::Fine,
            ),
            r.c2s
                .burst
                .max_packets_1ms
                .max(r.s2c.burst.max_packets_1ms)
                .to_string(),
            signs_cell(r),
        ]);
    }
    let ncol = header.len();
    let widths: Vec<usize> = (0..ncol)
        .map(|c| table.iter().map(|row| row[c].len()).max().unwrap_or(0))
        .collect();
    for row in &table {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            // text columns left-aligned, numbers right-aligned
            if matches!(c, 1..=4) || c == ncol - 1 {
                line.push_str(&format!("{:<width$}  ", cell, width = widths[c]));
            } else {
                line.push_str(&format!("{:>width$}  ", cell, width = widths[c]));
            }
        }
        writeln!(w, "{}", line.trim_end())?;
    }
    writeln!(
        w,
        "\nretx = retransmits (seen by the tap before: loss after the tap / holes filled: loss before the tap); rtt per direction of the data: tap -> receiver -> tap; hol max = longest time a hole in the data stayed open (head-of-line)"
    )?;
    Ok(())
}
