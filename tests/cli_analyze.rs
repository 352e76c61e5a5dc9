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
    let mut p = Vec::new();
    p.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    p.extend_from_slice(&2u16.to_le_bytes());
    p.extend_from_slice(&4u16.to_le_bytes());
    p.extend_from_slice(&[0; 8]);
    p.extend_from_slice(&65535u32.to_le_bytes());
    p.extend_from_slice(&linktype.to_le_bytes());
    for (i, f) in frames.iter().enumerate() {
        let t_us = 1_700_000_000_000_000u64 + i as u64 * 1000;
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
