//! End-to-end tests of `wirelens analyze` as a user runs it: real files, the
//! real binary, its stdout, stderr and exit code.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wirelens"))
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wirelens-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Ethernet + IPv4 + TCP (20-byte header, no options) with `payload` zero bytes.
#[expect(
    clippy::too_many_arguments,
    reason = "one argument per header field a test sets"
)]
fn tcp_frame(
    src: [u8; 4],
    dst: [u8; 4],
    sp: u16,
    dp: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: usize,
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00]);
    let total = (20 + 20 + payload) as u16;
    f.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        1,
        0x40,
        0,
        64,
        6,
        0,
        0,
    ]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&sp.to_be_bytes());
    f.extend_from_slice(&dp.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&ack.to_be_bytes());
    f.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f.resize(f.len() + payload, 0);
    f
}

/// A classic pcap (microseconds, Ethernet) of `frames` at `t0_us` + 1 ms steps.
fn pcap(frames: &[Vec<u8>], linktype: u32) -> Vec<u8> {
    let timed: Vec<(u64, Vec<u8>)> = frames
        .iter()
        .enumerate()
        .map(|(i, f)| (T0_US + i as u64 * 1000, f.clone()))
        .collect();
    pcap_at(&timed, linktype)
}

const T0_US: u64 = 1_700_000_000_000_000;

/// A classic pcap (microseconds) of `(time in us, frame)`.
fn pcap_at(frames: &[(u64, Vec<u8>)], linktype: u32) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    p.extend_from_slice(&2u16.to_le_bytes());
    p.extend_from_slice(&4u16.to_le_bytes());
    p.extend_from_slice(&[0; 8]);
    p.extend_from_slice(&65535u32.to_le_bytes());
    p.extend_from_slice(&linktype.to_le_bytes());
    for (t_us, f) in frames {
        p.extend_from_slice(&((t_us / 1_000_000) as u32).to_le_bytes());
        p.extend_from_slice(&((t_us % 1_000_000) as u32).to_le_bytes());
        p.extend_from_slice(&(f.len() as u32).to_le_bytes());
        p.extend_from_slice(&(f.len() as u32).to_le_bytes());
        p.extend_from_slice(f);
    }
    p
}

const C: [u8; 4] = [198, 18, 0, 1];
const S: [u8; 4] = [198, 18, 1, 1];
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;

/// Handshake, 3 data segments with the 2nd missing (loss before the tap) and
/// retransmitted later, ACKs.
fn lossy_conversation() -> Vec<Vec<u8>> {
    vec![
        tcp_frame(C, S, 40000, 80, 100, 0, SYN, 0),
        tcp_frame(S, C, 80, 40000, 500, 101, SYN | ACK, 0),
        tcp_frame(C, S, 40000, 80, 101, 501, ACK, 0),
        tcp_frame(C, S, 40000, 80, 101, 501, ACK | PSH, 1000),
        tcp_frame(C, S, 40000, 80, 2101, 501, ACK | PSH, 1000),
        tcp_frame(S, C, 80, 40000, 501, 1101, ACK, 0),
        tcp_frame(S, C, 80, 40000, 501, 1101, ACK, 0),
        tcp_frame(C, S, 40000, 80, 1101, 501, ACK | PSH, 1000),
        tcp_frame(S, C, 80, 40000, 501, 3101, ACK, 0),
    ]
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

fn ndjson(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

#[test]
fn ndjson_has_the_flow_and_the_summary() {
    let f = tmp("lossy.pcap");
    write(&f, &pcap(&lossy_conversation(), 1));
    let out = bin()
        .args(["analyze", "--format", "ndjson"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = ndjson(&out);
    assert_eq!(v.len(), 2, "{v:?}");
    let flow = &v[0];
    assert_eq!(flow["type"], "flow");
    assert_eq!(flow["schema"], "wirelens.flow.v1");
    assert_eq!(flow["client"]["ip"], "198.18.0.1");
    assert_eq!(flow["server"]["port"], 80);
    assert_eq!(flow["c2s"]["packets"], 5);
    assert_eq!(flow["c2s"]["bytes"], 5 * 40 + 3000);
    assert_eq!(flow["c2s"]["gaps"], 1);
    assert_eq!(flow["c2s"]["hole_fill"], 1);
    assert_eq!(flow["c2s"]["retrans_seen"], 0);
    assert_eq!(flow["s2c"]["dup_acks"], 1);
    assert_eq!(flow["tcp"]["state"], "established");
    assert_eq!(flow["tcp"]["handshake"]["syn_to_synack_ns"], 1_000_000);
    assert_eq!(flow["tcp"]["handshake"]["connect_ns"], 2_000_000);
    assert!(flow["pmtu"].is_null());
    let sum = &v[1];
    assert_eq!(sum["type"], "summary");
    assert_eq!(sum["packets"], 9);
    assert_eq!(sum["flows"]["tcp"], 1);
    assert_eq!(sum["tcp"]["hole_fill"], 1);
}

#[test]
fn table_and_json_formats() {
    let f = tmp("table.pcap");
    write(&f, &pcap(&lossy_conversation(), 1));
    let out = bin().args(["analyze"]).arg(&f).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("198.18.0.1:40000"), "{text}");
    assert!(text.contains("9 packets"), "{text}");
    let out = bin()
        .args(["analyze", "--format", "json"])
        .arg(&f)
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["flows"].as_array().unwrap().len(), 1);
    assert_eq!(doc["summary"]["packets"], 9);
    // the signs: head-of-line time in the table and the record, the path
    assert!(text.contains("hol max") && text.contains("signs"), "{text}");
    let f = &doc["flows"][0];
    let holes =
        f["c2s"]["hol"]["holes"].as_u64().unwrap() + f["s2c"]["hol"]["holes"].as_u64().unwrap();
    assert!(holes >= 1, "{f}");
    assert_eq!(f["tcp"]["path"], "two_way");
    assert_eq!(doc["summary"]["tcp"]["one_way_flows"], 0);
}

#[test]
fn truncated_capture_prints_what_it_read_and_names_the_offset() {
    let f = tmp("truncated.pcap");
    let full = pcap(&lossy_conversation(), 1);
    write(&f, &full[..full.len() - 30]);
    let out = bin()
        .args(["analyze", "--format", "ndjson"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&f.display().to_string()), "{err}");
    assert!(err.contains("byte"), "{err}");
    let v = ndjson(&out);
    assert_eq!(v.last().unwrap()["type"], "summary");
    assert_eq!(v.last().unwrap()["packets"], 8);
}

#[test]
fn not_a_capture_unsupported_link_and_missing_file() {
    let f = tmp("garbage.pcap");
    write(&f, b"this is not a capture file at all");
    let out = bin().args(["analyze"]).arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a pcap or pcapng"));

    let f = tmp("linktype.pcap");
    write(&f, &pcap(&lossy_conversation(), 147));
    let out = bin().args(["analyze"]).arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("link type 147"));

    let out = bin()
        .args(["analyze", "/nonexistent/x.pcap"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open"));
}

/// A little-endian pcapng: one section, interfaces of `links`, and `frames`
/// as (interface, data) enhanced packet blocks at 1 ms steps (microseconds).
fn pcapng(links: &[u16], frames: &[(u32, Vec<u8>)]) -> Vec<u8> {
    fn block(out: &mut Vec<u8>, btype: u32, body: &[u8]) {
        let padded = (body.len() + 3) & !3;
        let len = (12 + padded) as u32;
        out.extend_from_slice(&btype.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(body);
        out.resize(out.len() + padded - body.len(), 0);
        out.extend_from_slice(&len.to_le_bytes());
    }
    let mut out = Vec::new();
    let mut shb = 0x1a2b_3c4du32.to_le_bytes().to_vec();
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&u64::MAX.to_le_bytes());
    block(&mut out, 0x0a0d_0d0a, &shb);
    for &l in links {
        let mut idb = l.to_le_bytes().to_vec();
        idb.extend_from_slice(&0u16.to_le_bytes());
        idb.extend_from_slice(&0u32.to_le_bytes());
        block(&mut out, 1, &idb);
    }
    for (i, (iface, f)) in frames.iter().enumerate() {
        let t_us = 1_700_000_000_000_000u64 + i as u64 * 1000;
        let mut epb = iface.to_le_bytes().to_vec();
        epb.extend_from_slice(&((t_us >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(t_us as u32).to_le_bytes());
        epb.extend_from_slice(&(f.len() as u32).to_le_bytes());
        epb.extend_from_slice(&(f.len() as u32).to_le_bytes());
        epb.extend_from_slice(f);
        block(&mut out, 6, &epb);
    }
    out
}

/// An 802.11 interface (105) beside an Ethernet one, its frames first and
/// between the Ethernet ones: they are skipped and counted by link type,
/// the Ethernet conversation is analysed as on its own, exit 0.
#[test]
fn pcapng_with_an_802_11_interface_beside_ethernet() {
    let wifi = vec![0x08u8, 0x02, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    let mut frames = vec![(0u32, wifi.clone())];
    for f in lossy_conversation() {
        frames.push((1, f));
        frames.push((0, wifi.clone()));
    }
    let f = tmp("wifi-beside-eth.pcapng");
    write(&f, &pcapng(&[105, 1], &frames));
    let out = bin()
        .args(["analyze", "--format", "ndjson"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v = ndjson(&out);
    let sum = v.last().unwrap();
    assert_eq!(sum["type"], "summary");
    let n = lossy_conversation().len() as u64;
    assert_eq!(sum["packets"], n * 2 + 1);
    assert_eq!(sum["unsupported_link"]["105"], n + 1);
    assert_eq!(sum["non_ip"], 0);
    assert_eq!(sum["parse_errors"], serde_json::json!({}));
    let flows: Vec<&Value> = v.iter().filter(|r| r["type"] != "summary").collect();
    assert_eq!(flows.len(), 1);
    assert_eq!(
        flows[0]["c2s"]["packets"].as_u64().unwrap() + flows[0]["s2c"]["packets"].as_u64().unwrap(),
        n
    );

    // Only 802.11: nothing readable, exit 1 as for a single-interface
    // capture of an unsupported link type.
    let f = tmp("wifi-only.pcapng");
    write(&f, &pcapng(&[105], &[(0, wifi.clone()), (0, wifi)]));
    let out = bin().args(["analyze"]).arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("link type 105"));
}

#[test]
fn malformed_packets_are_counted_by_reason() {
    let mut frames = lossy_conversation();
    let mut bad = tcp_frame(C, S, 40000, 80, 1, 1, ACK, 0);
    bad[14 + 20 + 12] = 0x20; // TCP data offset 2 words: shorter than a header
    frames.push(bad);
    frames.push(vec![0xff; 10]); // shorter than an Ethernet header
    let f = tmp("malformed.pcap");
    write(&f, &pcap(&frames, 1));
    let out = bin()
        .args(["analyze", "--format", "ndjson"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v = ndjson(&out);
    let errs = &v.last().unwrap()["parse_errors"];
    let total: u64 = errs
        .as_object()
        .unwrap()
        .values()
        .map(|x| x.as_u64().unwrap())
        .sum();
    assert_eq!(total, 2, "{errs}");
    assert_eq!(v.last().unwrap()["packets"], 11);
}

/// `clients` TCP connections to S:80, each sending a 100-byte request every
/// 100 ms for `secs` seconds, the server's ACK coming `rtt_ms(t)` later
/// (the tap sits next to the clients); every 25th segment is lost before
/// the tap and sent again later. Client 0 closes after half the time.
fn paced_conversations(clients: u8, secs: u64, rtt_ms: impl Fn(u64) -> u64) -> Vec<(u64, Vec<u8>)> {
    let mut ev: Vec<(u64, Vec<u8>)> = Vec::new();
    for k in 0..clients {
        let c = [198, 18, 0, 10 + k];
        let sp = 41000 + u16::from(k);
        let t = T0_US + u64::from(k) * 7_000 + 300_000;
        ev.push((t, tcp_frame(c, S, sp, 80, 100, 0, SYN, 0)));
        ev.push((t + 1_000, tcp_frame(S, c, 80, sp, 500, 101, SYN | ACK, 0)));
        ev.push((t + 2_000, tcp_frame(c, S, sp, 80, 101, 501, ACK, 0)));
        let end = if k == 0 { secs * 5 } else { secs * 10 };
        let mut seq = 101u32;
        // ACKs never go back: the one after a late segment waits for it.
        let mut ack_floor = 0;
        for i in 0..end {
            let at = t + 10_000 + i * 100_000;
            let rtt = rtt_ms(at - T0_US) * 1_000;
            // Lost before the tap: the next segment shows the gap, this one
            // comes again 150 ms later.
            let sent = if i % 25 == 7 { at + 150_000 } else { at };
            ev.push((sent, tcp_frame(c, S, sp, 80, seq, 501, ACK | PSH, 100)));
            seq += 100;
            let acked = (sent + rtt).max(ack_floor + 1_000);
            ack_floor = acked;
            ev.push((acked, tcp_frame(S, c, 80, sp, 501, seq, ACK, 0)));
        }
        if k == 0 {
            let at = t + 10_000 + end * 100_000;
            ev.push((at, tcp_frame(c, S, sp, 80, seq, 501, ACK | 0x01, 0)));
            ev.push((
                at + 1_000,
                tcp_frame(S, c, 80, sp, 501, seq + 1, ACK | 0x01, 0),
            ));
            ev.push((at + 2_000, tcp_frame(c, S, sp, 80, seq + 1, 502, ACK, 0)));
        }
    }
    ev.sort_by_key(|e| e.0);
    ev
}

fn analyze_ok(args: &[&str], f: &Path) -> Output {
    let out = bin().arg("analyze").arg(f).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The Direction counters that add up over intervals (all but rtt and burst).
const ADDITIVE: [&str; 21] = [
    "packets",
    "bytes",
    "payload_bytes",
    "syn",
    "synack",
    "fin",
    "rst",
    "retrans_seen",
    "hole_fill",
    "gaps",
    "out_of_order",
    "retransmits",
    "fast_retransmits",
    "spurious_retransmits",
    "rto_retransmits",
    "dup_acks",
    "zero_window",
    "zero_window_events",
    "zero_window_ns",
    "ecn_ce",
    "frags",
];

#[test]
fn interval_records_add_up_to_each_flow_record() {
    let f = tmp("intervals.pcap");
    write(&f, &pcap_at(&paced_conversations(4, 6, |_| 40), 1));
    let v = ndjson(&analyze_ok(&["--format", "ndjson", "--interval", "1s"], &f));
    let id = |r: &Value| {
        format!(
            "{} {} {} {}",
            r["proto"], r["client"], r["server"], r["first_ns"]
        )
    };
    let flows: Vec<&Value> = v.iter().filter(|r| r["type"] == "flow").collect();
    let ivs: Vec<&Value> = v.iter().filter(|r| r["type"] == "interval").collect();
    assert_eq!(flows.len(), 4);
    assert!(ivs.len() >= 4 * 6, "{}", ivs.len());
    let mut checked = 0;
    for fl in &flows {
        let mine: Vec<&&Value> = ivs.iter().filter(|i| id(i) == id(fl)).collect();
        assert!(mine.len() >= 3, "{} intervals of {}", mine.len(), id(fl));
        for d in ["c2s", "s2c"] {
            for k in ADDITIVE {
                let sum: u64 = mine.iter().map(|i| i[d][k].as_u64().unwrap()).sum();
                assert_eq!(sum, fl[d][k].as_u64().unwrap(), "{} {d}.{k}", id(fl));
            }
            let n: u64 = mine
                .iter()
                .map(|i| i[d]["rtt"]["n"].as_u64().unwrap())
                .sum();
            assert_eq!(
                n,
                fl[d]["rtt"]["n"].as_u64().unwrap(),
                "{} {d} rtt samples",
                id(fl)
            );
        }
        assert!(fl["c2s"]["hole_fill"].as_u64().unwrap() > 0);
        for i in &mine {
            assert_eq!(i["schema"], "wirelens.flow.v1");
            let (s, e) = (
                i["start_ns"].as_u64().unwrap(),
                i["end_ns"].as_u64().unwrap(),
            );
            assert_eq!(e - s, 1_000_000_000);
            assert_eq!(s % 1_000_000_000, 0);
            // Only intervals the flow was active in.
            assert!(
                i["c2s"]["packets"].as_u64().unwrap() + i["s2c"]["packets"].as_u64().unwrap() > 0
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 4);
    // Each flow once per interval, and its interval records before its flow record.
    let mut seen = std::collections::BTreeSet::new();
    for (pos, r) in v.iter().enumerate() {
        if r["type"] == "interval" {
            assert!(seen.insert((id(r), r["start_ns"].as_u64().unwrap())), "{r}");
            let fpos = v
                .iter()
                .position(|x| x["type"] == "flow" && id(x) == id(r))
                .unwrap();
            assert!(pos < fpos);
        }
    }
    // Without --interval: no interval records, the same flow records.
    let plain = ndjson(&analyze_ok(&["--format", "ndjson"], &f));
    let plain_flows: Vec<&Value> = plain.iter().filter(|r| r["type"] == "flow").collect();
    assert_eq!(plain.iter().filter(|r| r["type"] == "interval").count(), 0);
    assert_eq!(plain_flows, flows);
}

#[test]
fn rtt_step_shows_in_the_intervals_and_the_table_says_since_when() {
    // 40 ms, then 120 ms from +12 s.
    let step = |t_us: u64| if t_us < 12_000_000 { 40 } else { 120 };
    let f = tmp("step.pcap");
    write(&f, &pcap_at(&paced_conversations(3, 20, step), 1));
    let v = ndjson(&analyze_ok(&["--format", "ndjson", "--interval", "1s"], &f));
    let t0 = T0_US * 1000;
    let mut before = 0;
    let mut after = 0;
    for i in v.iter().filter(|r| r["type"] == "interval") {
        let s = i["start_ns"].as_u64().unwrap() - t0;
        let Some(p50) = i["c2s"]["rtt"]["p50_ns"].as_u64() else {
            continue;
        };
        if s + 1_000_000_000 <= 12_000_000_000 {
            assert!(p50.abs_diff(40_000_000) <= 4_000_000, "{s}: {p50}");
            before += 1;
        } else if s >= 12_000_000_000 {
            assert!(p50.abs_diff(120_000_000) <= 12_000_000, "{s}: {p50}");
            after += 1;
        }
    }
    assert!(before >= 20 && after >= 15, "{before} {after}");
    let out = analyze_ok(&["--interval", "1s"], &f);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("198.18.1.1:80/tcp"), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("rtt c2s p50") && l.contains("at +"))
        .unwrap_or_else(|| panic!("no RTT change in {text}"));
    let at: f64 = line
        .split("at +")
        .nth(1)
        .unwrap()
        .split('s')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((11.0..=12.0).contains(&at), "{line}");
    // "rtt c2s p50 40.0ms -> 119.5ms at ...": both levels within 10 %.
    let ms = |w: &str| w.trim_end_matches("ms").parse::<f64>().unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    let arrow = words.iter().position(|w| *w == "->").unwrap();
    assert!((36.0..=44.0).contains(&ms(words[arrow - 1])), "{line}");
    assert!((108.0..=132.0).contains(&ms(words[arrow + 1])), "{line}");
    let spike = text
        .lines()
        .find(|l| l.contains("rtt_spike") && l.contains("since +"))
        .unwrap_or_else(|| panic!("no rtt_spike in {text}"));
    let since: f64 = spike
        .split("since +")
        .nth(1)
        .unwrap()
        .split('s')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((11.0..=13.0).contains(&since), "{spike}");
    // Steady RTT: no change, no alert.
    let f = tmp("steady.pcap");
    write(&f, &pcap_at(&paced_conversations(3, 20, |_| 40), 1));
    let text = String::from_utf8_lossy(&analyze_ok(&["--interval", "1s"], &f).stdout).to_string();
    assert!(text.contains("rtt steady"), "{text}");
    assert!(!text.contains("rtt_spike"), "{text}");
}

#[test]
fn interval_must_be_a_duration() {
    let f = tmp("iv-bad.pcap");
    write(&f, &pcap(&lossy_conversation(), 1));
    for bad in ["0s", "fast", "10parsecs"] {
        let out = bin()
            .args(["analyze", "--interval", bad])
            .arg(&f)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
    }
}

/// The value of attribute `name` in the SVG element `el`.
fn attr<'a>(el: &'a str, name: &str) -> Option<&'a str> {
    let at = el.find(&format!(" {name}=\""))? + name.len() + 3;
    el[at..].split('"').next()
}

#[test]
fn plot_draws_the_rtt_step_with_axes_and_units() {
    let step = |t_us: u64| if t_us < 12_000_000 { 40 } else { 120 };
    let f = tmp("plot.pcap");
    write(&f, &pcap_at(&paced_conversations(3, 20, step), 1));
    let svg = tmp("plot.svg");
    let out = analyze_ok(
        &[
            "--plot",
            svg.to_str().unwrap(),
            "--service",
            "198.18.1.1:80",
        ],
        &f,
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("drew the timeline"));
    let doc = std::fs::read_to_string(&svg).unwrap();
    assert!(doc.starts_with("<svg"), "{}", &doc[..100.min(doc.len())]);
    for want in [
        "service 198.18.1.1:80/tcp",
        "RTT (ms)",
        "time since capture start (s)",
        "c2s p50",
        "c2s p99",
        "s2c p50",
        "s2c p99",
        "retransmitted packets",
        "Mbit/s",
        "stalled (ms)",
        "new connections",
    ] {
        assert!(
            doc.contains(&format!("\n{want}\n")),
            "no {want:?} in the SVG"
        );
    }
    // The RTT panel's y axis: its tick labels (right-aligned numbers, the
    // first run of them from 0 up) give pixels per ms.
    let elements: Vec<&str> = doc.split('<').collect();
    let mut ticks: Vec<(f64, f64)> = Vec::new();
    for (i, el) in elements.iter().enumerate() {
        if el.starts_with("text") && attr(el, "text-anchor") == Some("end") {
            let v: f64 = match el.split('>').nth(1).map(str::trim).map(str::parse) {
                Some(Ok(v)) => v,
                _ => continue,
            };
            if ticks.last().is_some_and(|t| v <= t.1) {
                break;
            }
            let y: f64 = attr(elements[i], "y").unwrap().parse().unwrap();
            ticks.push((y, v));
        }
    }
    assert!(ticks.len() >= 3, "{ticks:?}");
    let ((y0, v0), (y1, v1)) = (ticks[0], ticks[ticks.len() - 1]);
    assert!((100.0..=200.0).contains(&v1), "RTT axis up to {v1} ms");
    let ms = |y: f64| v0 + (y - y0) * (v1 - v0) / (y1 - y0);
    // The first red, 2 px wide line is the c2s p50 series.
    let line = elements
        .iter()
        .find(|e| {
            e.starts_with("polyline")
                && attr(e, "stroke") == Some("#FF0000")
                && attr(e, "stroke-width") == Some("2")
        })
        .expect("the c2s p50 series");
    let ys: Vec<f64> = attr(line, "points")
        .unwrap()
        .split_whitespace()
        .map(|p| p.split(',').nth(1).unwrap().parse::<f64>().unwrap())
        .collect();
    assert!(ys.len() >= 18, "{ys:?}");
    let (first, last) = (ms(ys[0]), ms(ys[ys.len() - 1]));
    assert!((36.0..=44.0).contains(&first), "first interval {first} ms");
    assert!((108.0..=132.0).contains(&last), "last interval {last} ms");
    // Every point is at one of the two levels: the step is visible at a glance.
    assert!(
        ys.iter()
            .all(|&y| (ms(y) - 40.0).abs() <= 4.0 || (ms(y) - 120.0).abs() <= 12.0),
        "{ys:?}"
    );
    // Only SVG; a service that is not there is a usage error.
    let out = bin()
        .arg("analyze")
        .arg(&f)
        .args(["--plot", "x.png"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = bin()
        .arg("analyze")
        .arg(&f)
        .args(["--plot", svg.to_str().unwrap(), "--service", "198.18.9.9:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // One flow by its client.
    let out = analyze_ok(
        &[
            "--plot",
            svg.to_str().unwrap(),
            "--flow",
            "198.18.0.11:41001",
        ],
        &f,
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("flow from 198.18.0.11:41001"));
    assert!(std::fs::read_to_string(&svg)
        .unwrap()
        .contains("\nflow from 198.18.0.11:41001 to 198.18.1.1:80/tcp\n"));
}
