//! `wirelens analyze --ipfix` against decoders that are not ours: a real
//! `nfcapd` collector on loopback (read back with `nfdump`), and Wireshark's
//! IPFIX dissector (`tshark`) on the datagrams as they came off a real UDP
//! socket. The capture is the synthetic traffic of `wirelens bench pcap`
//! (TCP with handshakes, loss before and after the tap, UDP, IPv6), slowed
//! down so that round trips are milliseconds long.
//!
//! Not root: everything runs on 127.0.0.1 with free ports and temp dirs.
//! nfdump and tshark come from scripts/setup.sh.

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wirelens"))
}

/// A fresh directory of this test's own, removed when dropped (also when
/// the test fails).
struct TmpDir(PathBuf);

impl std::ops::Deref for TmpDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tmp_dir(name: &str) -> TmpDir {
    let dir = std::env::temp_dir().join(format!("wirelens-ipfix-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TmpDir(dir)
}

fn need(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(found, "{tool} is not installed: run scripts/setup.sh");
}

/// 50 flows (a fifth over IPv6) at 2000 packets/s of capture time.
fn capture(dir: &Path) -> PathBuf {
    let f = dir.join("lab.pcap");
    let out = bin()
        .args(["bench", "pcap", "--flows", "50", "--packets", "5000"])
        .args(["--ipv6", "20", "--rate", "2000", "--loss", "3", "--out"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    f
}

/// The flow records `analyze` prints for `file`.
fn analyzed(file: &Path) -> Vec<Value> {
    let out = bin()
        .args(["analyze", "--format", "ndjson"])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["type"] == "flow")
        .collect()
}

fn proto_number(r: &Value) -> u64 {
    match r["proto"].as_str() {
        Some("tcp") => 6,
        Some("udp") => 17,
        Some("icmp") if r["client"]["ip"].as_str().is_some_and(|s| s.contains(':')) => 58,
        Some("icmp") => 1,
        _ => 255,
    }
}

/// (client ip, client port, server ip, server port, protocol number).
type Key = (String, u64, String, u64, u64);

fn key(r: &Value) -> Key {
    (
        r["client"]["ip"].as_str().unwrap().to_string(),
        r["client"]["port"].as_u64().unwrap(),
        r["server"]["ip"].as_str().unwrap().to_string(),
        r["server"]["port"].as_u64().unwrap(),
        proto_number(r),
    )
}

fn u(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap_or_else(|_| panic!("{s:?}")),
        v => v.as_u64().unwrap_or_else(|| panic!("{v}")),
    }
}

/// `YYYY-MM-DDThh:mm:ss.mmm` (UTC) of ms since the epoch, as nfdump prints.
fn utc_ms(ms: u64) -> String {
    let (days, rem) = (ms / 86_400_000, ms % 86_400_000);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

/// A free UDP port on 127.0.0.1 (bound and released: the collector takes it).
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `nfcapd` on 127.0.0.1, stopped (SIGTERM, then SIGKILL) when dropped,
/// also when the test fails.
struct Nfcapd {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
}

impl Nfcapd {
    fn start(dir: &Path) -> Nfcapd {
        let flows = dir.join("flows");
        std::fs::create_dir_all(&flows).unwrap();
        let log = dir.join("nfcapd.log");
        for _ in 0..5 {
            let port = free_udp_port();
            let logf = std::fs::File::create(&log).unwrap();
            let child = Command::new("nfcapd")
                .args([
                    "-b",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-t",
                    "3600",
                    "-w",
                ])
                .arg(&flows)
                // nfcapd logs to stderr (stdout with -v): both in one file.
                .stdout(logf.try_clone().unwrap())
                .stderr(logf)
                .spawn()
                .unwrap();
            let mut n = Nfcapd {
                child: Some(child),
                port,
                log: log.clone(),
            };
            let until = Instant::now() + Duration::from_secs(10);
            while Instant::now() < until {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if text.contains("Startup") {
                    return n;
                }
                if let Some(c) = n.child.as_mut() {
                    if c.try_wait().unwrap().is_some() {
                        break; // the port was taken in between: try another
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            n.stop();
        }
        panic!(
            "nfcapd did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// SIGTERM: nfcapd writes and closes its file, then exits.
    fn stop(&mut self) -> String {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let until = Instant::now() + Duration::from_secs(10);
            while Instant::now() < until && c.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Nfcapd {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn nfcapd_stores_the_flows_packets_and_bytes_that_analyze_reports() {
    need("nfcapd");
    need("nfdump");
    let dir = tmp_dir("nfcapd");
    let pcap = capture(&dir);
    let expected = analyzed(&pcap);
    assert!(expected.len() >= 40, "{}", expected.len());
    assert!(
        expected.iter().any(|r| key(r).0.contains(':')),
        "no IPv6 flow"
    );

    let mut collector = Nfcapd::start(&dir);
    let out = bin()
        .args(["analyze", "--format", "ndjson", "--ipfix"])
        .arg(format!("127.0.0.1:{}", collector.port))
        .arg(&pcap)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("ipfix: {} records in", expected.len())),
        "{stderr}"
    );
    // nfcapd reads the socket on its own time: let it drain, then stop it.
    std::thread::sleep(Duration::from_millis(500));
    let log = collector.stop();
    assert!(log.contains(&format!("Flows: {}", expected.len())), "{log}");
    assert!(log.contains("Sequence Errors: 0"), "{log}");

    let dump = Command::new("nfdump")
        .env("TZ", "UTC")
        .arg("-R")
        .arg(dir.join("flows"))
        .args(["-o", "json"])
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let stored: Vec<Value> = serde_json::from_slice(&dump.stdout).unwrap();
    let mut got: BTreeMap<Key, (u64, u64, u64, u64, String, String)> = BTreeMap::new();
    for f in &stored {
        let addr = |v4: &str, v6: &str| {
            f[v4]
                .as_str()
                .or(f[v6].as_str())
                .unwrap_or_else(|| panic!("{f}"))
                .to_string()
        };
        let k = (
            addr("src4_addr", "src6_addr"),
            u(&f["src_port"]),
            addr("dst4_addr", "dst6_addr"),
            u(&f["dst_port"]),
            u(&f["proto"]),
        );
        let v = (
            u(&f["in_packets"]),
            u(&f["in_bytes"]),
            u(&f["out_packets"]),
            u(&f["out_bytes"]),
            f["first"].as_str().unwrap().to_string(),
            f["last"].as_str().unwrap().to_string(),
        );
        assert!(got.insert(k.clone(), v).is_none(), "{k:?} twice");
    }
    assert_eq!(got.len(), expected.len());
    for r in &expected {
        let k = key(r);
        let Some(g) = got.get(&k) else {
            panic!("{k:?} missing in nfdump's output");
        };
        let want = (
            u(&r["c2s"]["packets"]),
            u(&r["c2s"]["bytes"]),
            u(&r["s2c"]["packets"]),
            u(&r["s2c"]["bytes"]),
            utc_ms(u(&r["first_ns"]) / 1_000_000),
            utc_ms(u(&r["last_ns"]) / 1_000_000),
        );
        assert_eq!(g, &want, "{k:?}");
    }
}

/// The UDP datagrams `analyze --ipfix` sends for `pcap`, received on a real
/// socket.
fn datagrams(pcap: &Path) -> (Vec<Vec<u8>>, u16) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    let out = bin()
        .args(["analyze", "--format", "ndjson", "--ipfix"])
        .arg(format!("127.0.0.1:{port}"))
        .arg(pcap)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    while let Ok(n) = sock.recv(&mut buf) {
        got.push(buf[..n].to_vec());
    }
    (got, port)
}

/// A pcap (raw IPv4, LINKTYPE_RAW) of UDP datagrams from port 4739 to `port`.
fn udp_pcap(msgs: &[Vec<u8>], port: u16) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    p.extend_from_slice(&2u16.to_le_bytes());
    p.extend_from_slice(&4u16.to_le_bytes());
    p.extend_from_slice(&[0; 8]);
    p.extend_from_slice(&65535u32.to_le_bytes());
    p.extend_from_slice(&101u32.to_le_bytes());
    for (i, m) in msgs.iter().enumerate() {
        let udp_len = (8 + m.len()) as u16;
        let ip_len = 20 + udp_len;
        let mut pkt = vec![0x45, 0];
        pkt.extend_from_slice(&ip_len.to_be_bytes());
        pkt.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1]);
        pkt.extend_from_slice(&4739u16.to_be_bytes());
        pkt.extend_from_slice(&port.to_be_bytes());
        pkt.extend_from_slice(&udp_len.to_be_bytes());
        pkt.extend_from_slice(&[0, 0]);
        pkt.extend_from_slice(m);
        p.extend_from_slice(&(i as u32).to_le_bytes());
        p.extend_from_slice(&0u32.to_le_bytes());
        p.extend_from_slice(&(pkt.len() as u32).to_le_bytes());
        p.extend_from_slice(&(pkt.len() as u32).to_le_bytes());
        p.extend_from_slice(&pkt);
    }
    p
}

/// Strings of a tshark JSON field that may be one value or an array.
fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a.iter().flat_map(strings).collect(),
        Value::String(s) => vec![s.clone()],
        _ => Vec::new(),
    }
}

fn hex(s: &str) -> u64 {
    u64::from_str_radix(&s.replace(':', ""), 16).unwrap_or_else(|_| panic!("{s:?}"))
}

/// µs of an `_ns` field, or the "not measured" value (all ones, 4 bytes).
fn us_or_unknown(v: &Value) -> u64 {
    v.as_u64().map_or(0xffff_ffff, |ns| ns / 1000)
}

#[test]
fn tshark_decodes_every_element_as_analyze_reports_it() {
    need("tshark");
    let dir = tmp_dir("tshark");
    let pcap = capture(&dir);
    let expected = analyzed(&pcap);
    let (msgs, port) = datagrams(&pcap);
    assert!(msgs.len() > 1);
    assert!(
        msgs.iter().all(|m| m.len() <= 1400),
        "a message over the MTU"
    );
    let cap = dir.join("ipfix.pcap");
    std::fs::write(&cap, udp_pcap(&msgs, port)).unwrap();
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&cap)
        .args(["-d", &format!("udp.port=={port},cflow"), "-T", "json"])
        .arg("--no-duplicate-keys")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pkts: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pkts.len(), msgs.len());

    let want: BTreeMap<Key, &Value> = expected.iter().map(|r| (key(r), r)).collect();
    let mut seen = 0u64;
    let mut latencies = 0;
    for (i, p) in pkts.iter().enumerate() {
        let c = &p["_source"]["layers"]["cflow"];
        assert_eq!(c["cflow.version"], "10");
        assert_eq!(u(&c["cflow.sequence"]), seen, "sequence of message {i}");
        let obj = c.as_object().unwrap();
        // The templates lead the first message.
        assert_eq!(
            obj.keys().any(|k| k.contains("[id=2]")),
            i == 0,
            "template set in message {i}"
        );
        for (name, set) in obj {
            if !name.contains("[id=256]") && !name.contains("[id=257]") {
                continue;
            }
            for (fname, f) in set.as_object().unwrap() {
                if !fname.starts_with("Flow ") {
                    continue;
                }
                seen += 1;
                let addr = |a: &str, b: &str| f[a].as_str().or(f[b].as_str()).unwrap().to_string();
                let k = (
                    addr("cflow.srcaddr", "cflow.srcaddrv6"),
                    u(&f["cflow.srcport"]),
                    addr("cflow.dstaddr", "cflow.dstaddrv6"),
                    u(&f["cflow.dstport"]),
                    u(&f["cflow.protocol"]),
                );
                let r = want.get(&k).unwrap_or_else(|| panic!("{k:?} not analysed"));
                let d = |dir: &str, field: &str| u(&r[dir][field]);
                let nums = |field: &str| {
                    strings(&f[field])
                        .iter()
                        .map(|s| s.parse::<u64>().unwrap())
                        .collect::<Vec<_>>()
                };
                assert_eq!(
                    nums("cflow.packets"),
                    [d("c2s", "packets"), d("s2c", "packets")],
                    "{k:?}"
                );
                assert_eq!(
                    nums("cflow.octets"),
                    [d("c2s", "bytes"), d("s2c", "bytes")],
                    "{k:?}"
                );
                assert_eq!(u(&f["cflow.biflow_direction"]), 1);
                // nProbe: half round trips in ms (handshake, else the median RTT).
                let hs = &r["tcp"]["handshake"];
                let half = |hs_field: &str, dir: &str| {
                    hs[hs_field]
                        .as_u64()
                        .or(r[dir]["rtt"]["p50_ns"].as_u64())
                        .map_or(0, |ns| ns / 2 / 1_000_000)
                };
                let client = u(&f["cflow.pie.ntop.client_nw_latency_ms"]);
                assert_eq!(client, half("synack_to_ack_ns", "s2c"), "{k:?}");
                assert_eq!(
                    u(&f["cflow.pie.server_nw_latency_ms"]),
                    half("syn_to_synack_ns", "c2s"),
                    "{k:?}"
                );
                if client > 0 {
                    latencies += 1;
                }
                assert_eq!(
                    u(&f["cflow.pie.ntop.retransmitted_in_pkts"]),
                    d("c2s", "retransmits")
                );
                assert_eq!(
                    u(&f["cflow.pie.ntop.retransmitted_out_pkts"]),
                    d("s2c", "retransmits")
                );
                // Ours, in template order: per direction (c2s, then s2c),
                // then per flow (docs/ipfix.md).
                let ent: Vec<u64> = strings(&f["cflow.enterprise_private_entry"])
                    .iter()
                    .map(|s| hex(s))
                    .collect();
                assert_eq!(ent.len(), 13 * 2 + 4, "{k:?}");
                for (base, dir) in [(0, "c2s"), (13, "s2c")] {
                    let rtt = &r[dir]["rtt"];
                    assert_eq!(ent[base], u(&rtt["n"]), "{k:?} {dir} rtt n");
                    assert_eq!(ent[base + 1], us_or_unknown(&rtt["min_ns"]), "{k:?} {dir}");
                    assert_eq!(ent[base + 2], us_or_unknown(&rtt["p50_ns"]), "{k:?} {dir}");
                    assert_eq!(ent[base + 4], us_or_unknown(&rtt["p99_ns"]), "{k:?} {dir}");
                    assert_eq!(
                        ent[base + 6],
                        d(dir, "retrans_seen"),
                        "{k:?} {dir} loss after"
                    );
                    assert_eq!(
                        ent[base + 7],
                        d(dir, "hole_fill"),
                        "{k:?} {dir} loss before"
                    );
                    assert_eq!(
                        ent[base + 10],
                        d(dir, "zero_window_ns") / 1000,
                        "{k:?} {dir}"
                    );
                }
                assert_eq!(ent[27], us_or_unknown(&hs["connect_ns"]), "{k:?} connect");
            }
        }
    }
    assert_eq!(seen, expected.len() as u64);
    assert!(
        latencies > 10,
        "only {latencies} flows with a latency of 1 ms or more"
    );
    let lossy = expected
        .iter()
        .filter(|r| u(&r["c2s"]["hole_fill"]) + u(&r["s2c"]["hole_fill"]) > 0)
        .count();
    assert!(
        lossy > 0,
        "no flow with loss before the tap: the check above saw only zeros"
    );
}

#[test]
fn a_bad_target_is_a_usage_error_and_an_unreachable_one_fails_loudly() {
    let dir = tmp_dir("bad");
    let pcap = capture(&dir);
    let out = bin()
        .args(["analyze", "--ipfix", "no-port-here"])
        .arg(&pcap)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected HOST:PORT"));

    // Nothing listens there: the kernel reports the ICMP port unreachable
    // on the next send; the flows are still printed.
    let port = free_udp_port();
    let out = bin()
        .args(["analyze", "--format", "ndjson", "--ipfix"])
        .arg(format!("127.0.0.1:{port}"))
        .arg(&pcap)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("could not be sent"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"type\":\"summary\""));
}
