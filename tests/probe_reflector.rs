//! `wirelens probe reflect` on loopback (no root needed): the listen
//! address is required, `--allow` decides who is answered, replies are as
//! long as requests and short requests get none, and the exit summary
//! counts every request not answered by reason.

use std::io::Read;
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_wirelens");

/// A sender header (seq, timestamp, error estimate) padded to `len`.
fn request(seq: u32, len: usize) -> Vec<u8> {
    let mut b = seq.to_be_bytes().to_vec();
    b.extend([0xe0, 0, 0, 0, 0, 0, 0, 0]); // an NTP timestamp
    b.extend([0x80, 0x01]); // error estimate: S bit, scale 0, multiplier 1
    b.resize(len.max(b.len()), 0);
    b.truncate(len);
    b
}

/// Starts a reflector on 127.0.0.1 (OS-chosen port); its address and the child.
fn reflector(extra: &[&str]) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args([
            "probe",
            "reflect",
            "--listen",
            "127.0.0.1:0",
            "--duration",
            "3s",
        ])
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn reflector");
    let mut err = child.stderr.take().unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8];
    while err.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&line).into_owned();
    let addr = line
        .split_whitespace()
        .skip_while(|w| *w != "udp")
        .nth(1)
        .unwrap_or_else(|| panic!("reflector said: {line}"))
        .to_string();
    child.stderr = Some(err);
    (child, addr)
}

/// Sends `req` and returns the reply's length, `None` after 300 ms of silence.
fn ask(sock: &UdpSocket, addr: &str, req: &[u8]) -> Option<usize> {
    sock.send_to(req, addr).unwrap();
    let mut buf = [0u8; 2048];
    sock.recv_from(&mut buf).ok().map(|(n, _)| n)
}

fn summary(mut child: Child) -> String {
    let mut rest = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut rest)
        .unwrap();
    assert!(child.wait().unwrap().success(), "{rest}");
    rest
}

#[test]
fn listen_is_required() {
    let out = Command::new(BIN)
        .args(["probe", "reflect"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
}

#[test]
fn replies_are_as_long_as_requests_and_short_ones_get_none() {
    let (child, addr) = reflector(&[]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    for len in [41, 64, 1000] {
        assert_eq!(ask(&sock, &addr, &request(len as u32, len)), Some(len));
    }
    assert_eq!(
        ask(&sock, &addr, &request(9, 14)),
        None,
        "14 octets: no 41-octet reply"
    );
    assert_eq!(ask(&sock, &addr, &request(9, 40)), None);
    let s = summary(child);
    assert!(s.contains("3 reflected"), "{s}");
    assert!(s.contains("2 shorter than the reply"), "{s}");
}

#[test]
fn allow_list_decides_who_is_answered() {
    let (child, addr) = reflector(&["--allow", "198.18.0.0/15,2001:db8::/32"]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert_eq!(ask(&sock, &addr, &request(0, 64)), None);
    let s = summary(child);
    assert!(
        s.contains("0 reflected") && s.contains("1 not allowed"),
        "{s}"
    );

    let (child, addr) = reflector(&["--allow", "127.0.0.0/8"]);
    assert_eq!(ask(&sock, &addr, &request(0, 64)), Some(64));
    let s = summary(child);
    assert!(
        s.contains("1 reflected") && s.contains("0 not allowed"),
        "{s}"
    );
}

#[test]
fn per_source_rate_limit_holds() {
    let (child, addr) = reflector(&["--rate-per-source", "4"]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // Burst of max(4/4, 1) = 1, then 4/s: 20 requests at once get few replies.
    for i in 0..20 {
        sock.send_to(&request(i, 64), &addr).unwrap();
    }
    let mut buf = [0u8; 2048];
    let mut got = 0;
    while sock.recv_from(&mut buf).is_ok() {
        got += 1;
    }
    assert!((1..=2).contains(&got), "{got}");
    let s = summary(child);
    assert!(
        s.contains(&format!("{} over the per-source rate", 20 - got)),
        "{s}"
    );
    let bad = Command::new(BIN)
        .args([
            "probe",
            "reflect",
            "--listen",
            "127.0.0.1:0",
            "--rate-total",
            "0",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--rate-total"));
}
