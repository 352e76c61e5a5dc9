//! The dataplane fuzz targets' invariants under plain `cargo test` (CI does not
//! install cargo-fuzz): every file of `fuzz/corpus/{wire_parse,engine,
//! capture_reader}` and a few thousand pseudo-random and mutated inputs go
//! through the same check functions the fuzz targets call
//! (`fuzz/src/dataplane.rs`). A crash the fuzzer finds becomes a corpus file
//! and a named test below.
//!
//! Regenerate the seed files (after changing `fuzz/src/seeds.rs`):
//! `cargo test -p wirelens-dataplane --test fuzz_regressions -- --ignored write_seed_corpus`.

#[path = "../../fuzz/src/dataplane.rs"]
#[allow(dead_code)]
mod checks;
#[path = "../../fuzz/src/seeds.rs"]
#[allow(dead_code)]
mod seeds;

use std::path::PathBuf;

use checks::{check_capture, check_engine, check_wire_parse, link_selector, EngineInput};
use seeds::Rng;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

fn wire_seeds() -> Vec<(String, Vec<u8>)> {
    seeds::frames()
        .into_iter()
        .map(|(name, link, f)| {
            let mut v = vec![link_selector(link)];
            v.extend_from_slice(&f);
            (name.to_string(), v)
        })
        .collect()
}

fn engine_seeds() -> Vec<(String, Vec<u8>)> {
    seeds::engine_scenarios()
        .into_iter()
        .map(|(name, link, cfg, frames)| {
            (name.to_string(), EngineInput::encode(link, cfg, &frames))
        })
        .collect()
}

fn capture_seeds() -> Vec<(String, Vec<u8>)> {
    seeds::capture_files()
        .into_iter()
        .map(|(n, v)| (n.to_string(), v))
        .collect()
}

/// Runs `check` over every file of the target's corpus.
fn run_corpus(target: &str, check: fn(&[u8])) -> Vec<Vec<u8>> {
    let files = seeds::corpus(&corpus_dir(target));
    assert!(!files.is_empty(), "fuzz/corpus/{target} is empty");
    for (name, data) in &files {
        eprintln!("{target}/{name}");
        check(data);
    }
    files.into_iter().map(|(_, d)| d).collect()
}

/// `n` inputs: mutations of corpus files (and random bytes now and then).
fn run_mutations(base: &[Vec<u8>], check: fn(&[u8]), n: usize, seed: u64) {
    let mut rng = Rng(seed);
    for _ in 0..n {
        let input = if rng.below(8) == 0 {
            let len = rng.below(512);
            rng.bytes(len)
        } else {
            let a = &base[rng.below(base.len())];
            let b = &base[rng.below(base.len())];
            rng.mutate(a, b)
        };
        check(&input);
    }
}

#[test]
fn wire_parse_corpus() {
    let files = run_corpus("wire_parse", check_wire_parse);
    run_mutations(&files, check_wire_parse, 20_000, 0x9e37_79b9_7f4a_7c15);
}

#[test]
fn engine_corpus() {
    let files = run_corpus("engine", check_engine);
    run_mutations(&files, check_engine, 1_500, 0x0123_4567_89ab_cdef);
}

#[test]
fn capture_reader_corpus() {
    let files = run_corpus("capture_reader", check_capture);
    run_mutations(&files, check_capture, 5_000, 0xfeed_face_dead_beef);
}

/// The seeds, straight from their builders (the corpus files may lag behind).
#[test]
fn seeds_satisfy_the_invariants() {
    for (_, s) in wire_seeds() {
        check_wire_parse(&s);
    }
    for (_, s) in engine_seeds() {
        check_engine(&s);
    }
    for (_, s) in capture_seeds() {
        check_capture(&s);
    }
}

/// Every frame seed parses (the seeds are meant to be valid, so that the
/// fuzzer starts deep inside the parser).
#[test]
fn frame_seeds_parse() {
    for (name, link, f) in seeds::frames() {
        let r = checks::parse_checked(link, &f, 1);
        let want_ok = !name.contains("arp");
        assert_eq!(r.is_ok(), want_ok, "{name}: {r:?}");
    }
}

#[test]
#[ignore = "writes fuzz/corpus/*/seed-*; run by hand after changing the seeds"]
fn write_seed_corpus() {
    seeds::write_seeds(&corpus_dir("wire_parse"), &wire_seeds());
    seeds::write_seeds(&corpus_dir("engine"), &engine_seeds());
    seeds::write_seeds(&corpus_dir("capture_reader"), &capture_seeds());
}

/// The engine seeds reach deep: the conversation exercises the TCP analyzer
/// (retransmission, dup ACKs, zero window, RTT), the flood exercises eviction.
#[test]
fn engine_seeds_reach_the_analyzers() {
    use wirelens_dataplane::engine::{Engine, EngineConfig};
    let run = |name: &str| {
        let (_, _, _, frames) = seeds::engine_scenarios()
            .into_iter()
            .find(|s| s.0 == name)
            .expect("scenario");
        let bytes =
            EngineInput::encode(wirelens_dataplane::wire::LinkType::Ethernet, 0x0f, &frames);
        let input = EngineInput::decode(&bytes).expect("decodes");
        assert_eq!(input.frames.len(), frames.len());
        let mut e = Engine::new(EngineConfig {
            table: wirelens_dataplane::flow::TableConfig {
                capacity: input.capacity,
                ..Default::default()
            },
        });
        for (ts, f, _) in &input.frames {
            e.handle_frame(*ts, input.link, f);
        }
        e.summary()
    };
    let s = run("tcp-conversation");
    assert_eq!(s.flows.tcp, 1, "{s:?}");
    assert!(s.tcp.retransmits >= 1 && s.tcp.dup_acks >= 3, "{s:?}");
    assert!(s.tcp.zero_window >= 1 && s.tcp.fin == 2, "{s:?}");
    assert!(s.parse_errors.is_empty() && s.non_ip == 0, "{s:?}");
    let mut e = Engine::new(EngineConfig {
        table: wirelens_dataplane::flow::TableConfig {
            capacity: 4,
            ..Default::default()
        },
    });
    let (_, _, _, flood) = seeds::engine_scenarios()
        .into_iter()
        .find(|s| s.0 == "syn-flood-cap4")
        .expect("scenario");
    for (ts, f) in &flood {
        e.handle_frame(*ts, wirelens_dataplane::wire::LinkType::Ethernet, f);
    }
    assert!(e.summary().evicted_flows >= 20, "{:?}", e.summary());
}

/// Privacy: no payload byte leaves the engine. Frames whose payload is a
/// marker go through the engine; neither the parsed packets (Debug) nor the
/// records, exports and summary (JSON, Debug) contain it, in text or as
/// numbers. `PacketMeta` stays a small `Copy` struct of header fields.
#[test]
fn no_payload_byte_leaves_the_engine() {
    use wirelens_dataplane::engine::{Engine, EngineConfig};
    use wirelens_dataplane::wire::LinkType;
    use wirelens_dataplane::PacketMeta;
    const MARK: &[u8] = b"PAYLOAD-7f3a9c-SECRET";
    // Put the marker at the end of every TCP/UDP payload long enough for it
    // (the seed builders fill payloads with a constant).
    let with_payload = |mut f: Vec<u8>| {
        if let Ok(m) = checks::parse_checked(LinkType::Ethernet, &f, 0) {
            let whole = f.len() == 14 + m.ip_len as usize;
            if whole && m.payload_len as usize >= MARK.len() && m.frag == Default::default() {
                let n = f.len();
                f[n - MARK.len()..].copy_from_slice(MARK);
            }
        }
        f
    };
    let frames: Vec<(u64, Vec<u8>)> = seeds::engine_scenarios()
        .into_iter()
        .filter(|s| s.1 == LinkType::Ethernet)
        .flat_map(|s| s.3)
        .map(|(t, f)| (t, with_payload(f)))
        .collect();
    assert!(frames.iter().filter(|(_, f)| f.ends_with(MARK)).count() > 5);
    let mut e = Engine::new(EngineConfig::default());
    let mut out = String::new();
    for (ts, f) in &frames {
        e.handle_frame(*ts, LinkType::Ethernet, f);
        if let Ok(m) = checks::parse_checked(LinkType::Ethernet, f, *ts) {
            out.push_str(&format!("{m:?}"));
        }
    }
    e.finish();
    out.push_str(&serde_json::to_string(&e.summary()).unwrap());
    while let Some(x) = e.poll_export() {
        out.push_str(&serde_json::to_string(&x.record).unwrap());
        out.push_str(&serde_json::to_string(&x.rtt).unwrap());
        out.push_str(&format!("{x:?}"));
    }
    let text = String::from_utf8_lossy(MARK);
    assert!(!out.contains(&*text), "payload text left the engine");
    // Nor as the numbers a u32/u64 field would show for those bytes.
    for w in MARK.windows(4) {
        let n = u32::from_be_bytes([w[0], w[1], w[2], w[3]]);
        assert!(
            !out.contains(&n.to_string()),
            "payload bytes {w:?} as a number"
        );
    }
    assert!(
        std::mem::size_of::<PacketMeta>() <= 192,
        "PacketMeta grew to {} bytes: it must hold header fields only",
        std::mem::size_of::<PacketMeta>()
    );
}

/// Found by the engine fuzz target (corpus: regress-zero-window-time-backwards):
/// a zero-window stall still open was reported up to the connection's last
/// segment, 867 s after it began; then a segment stamped earlier (time going
/// backwards, as in merged captures) opened the window, the stall closed at
/// that earlier time, and the summary's `zero_window_ns` went down from 867 s
/// to 91 ms. Stalls are now timed on the connection's clock (its latest
/// timestamp), so the counter never decreases.
#[test]
fn regress_zero_window_time_never_goes_down() {
    use seeds::{eth, eth_tcp4, ipv4, tcp, ACK, C4, ETH_IPV4, S4, SYN};
    const MS: u64 = 1_000_000;
    let t0 = checks::T0;
    let zero_window = eth(
        ETH_IPV4,
        &ipv4(
            6,
            S4,
            C4,
            1,
            0x4000,
            &tcp(80, 40000, 501, 101, ACK, 0, &[], 0),
        ),
    );
    let frames = vec![
        (t0, eth_tcp4(C4, S4, 40000, 80, 100, 0, SYN, &[], 0)),
        (
            t0 + MS,
            eth_tcp4(S4, C4, 80, 40000, 500, 101, SYN | ACK, &[], 0),
        ),
        (
            t0 + 2 * MS,
            eth_tcp4(C4, S4, 40000, 80, 101, 501, ACK, &[], 0),
        ),
        (t0 + 3 * MS, zero_window),
        // The client probes 867 s later: the stall is open for 867 s.
        (
            t0 + 867_000 * MS,
            eth_tcp4(C4, S4, 40000, 80, 101, 501, ACK, &[], 0),
        ),
        // The server's window opens, stamped 91 ms after the stall began.
        (
            t0 + 94 * MS,
            eth_tcp4(S4, C4, 80, 40000, 501, 101, ACK, &[], 0),
        ),
    ];
    // Summary after every frame (cfg high nibble 0), default table.
    let input = EngineInput::encode(wirelens_dataplane::wire::LinkType::Ethernet, 0x0f, &frames);
    check_engine(&input);
    // And the stall counts up to the connection's clock.
    use wirelens_dataplane::engine::{Engine, EngineConfig};
    let mut e = Engine::new(EngineConfig::default());
    for (ts, f) in &frames {
        e.handle_frame(*ts, wirelens_dataplane::wire::LinkType::Ethernet, f);
    }
    let s = e.summary();
    assert_eq!(s.tcp.zero_window_events, 1, "{s:?}");
    assert_eq!(s.tcp.zero_window_ns, 867_000 * MS - 3 * MS, "{s:?}");
}

/// Summing counters: two connections each at zero window from the start of
/// time to near its end held `zero_window_ns` close to `u64::MAX` each; their
/// sum in the summary's TCP totals overflowed (a panic in debug and fuzz
/// builds, a wrap to a small number in release). Sums now saturate.
#[test]
fn regress_zero_window_ns_sum_saturates() {
    use seeds::{eth, eth_tcp4, ipv4, tcp, ACK, C4, ETH_IPV4, S4, SYN};
    use wirelens_dataplane::engine::{Engine, EngineConfig};
    use wirelens_dataplane::wire::LinkType;
    let t0 = 1_000;
    let end = u64::MAX - 1_000;
    let mut frames = Vec::new();
    for port in [40000u16, 40001] {
        let zero_window = eth(
            ETH_IPV4,
            &ipv4(
                6,
                S4,
                C4,
                1,
                0x4000,
                &tcp(80, port, 501, 101, ACK, 0, &[], 0),
            ),
        );
        frames.push((t0, eth_tcp4(C4, S4, port, 80, 100, 0, SYN, &[], 0)));
        frames.push((t0, eth_tcp4(S4, C4, 80, port, 500, 101, SYN | ACK, &[], 0)));
        frames.push((t0, eth_tcp4(C4, S4, port, 80, 101, 501, ACK, &[], 0)));
        frames.push((t0, zero_window));
    }
    for port in [40000u16, 40001] {
        frames.push((end, eth_tcp4(C4, S4, port, 80, 101, 501, ACK, &[], 0)));
    }
    // Summary after every frame (cfg high nibble 0), default table.
    let input = EngineInput::encode(LinkType::Ethernet, 0x0f, &frames);
    check_engine(&input);
    let mut e = Engine::new(EngineConfig {
        table: wirelens_dataplane::flow::TableConfig {
            tcp_idle_ns: u64::MAX,
            ..Default::default()
        },
    });
    for (ts, f) in &frames {
        e.handle_frame(*ts, LinkType::Ethernet, f);
    }
    let s = e.summary();
    assert_eq!(s.tcp.zero_window_events, 2, "{s:?}");
    assert_eq!(s.tcp.zero_window_ns, u64::MAX, "{s:?}");
}
