//! The `report` fuzz target's invariants under plain `cargo test` (CI does not
//! install cargo-fuzz): every file of `fuzz/corpus/report` and a few thousand
//! structure-aware mutations of them go through `fuzz/src/ctrl.rs`'s
//! `check_report`, the function the fuzz target calls. A crash the fuzzer
//! finds becomes a corpus file and a named test below.
//!
//! Regenerate the seed files (after changing the seeds):
//! `cargo test -p wirelens-ctrl --test fuzz_regressions -- --ignored write_seed_corpus`.

#[path = "../../fuzz/src/ctrl.rs"]
#[allow(dead_code)]
mod checks;
#[path = "../../fuzz/src/seeds.rs"]
#[allow(dead_code)]
mod seeds;

use std::path::PathBuf;

use checks::check_report;
use seeds::Rng;
use serde_json::{json, Value};
use wirelens_ctrl::report::{FlowDelta, NodeMeta, NodeReport};
use wirelens_dataplane::engine::{Engine, EngineConfig};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/report")
}

/// Reports as nodes send them: the engine's records (with their RTT
/// histograms) of the dataplane seed scenarios, and a few edge cases.
fn report_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let meta = NodeMeta {
        version: "0.1.0".into(),
        mode: "run".into(),
        source: "eth0".into(),
        hostname: Some("gw-a".into()),
    };
    // The flood's report is 27 near-identical SYN flows (73 kB): left out.
    for (name, link, _, frames) in seeds::engine_scenarios()
        .into_iter()
        .filter(|s| !s.0.starts_with("syn-flood"))
    {
        let mut e = Engine::new(EngineConfig::default());
        for (ts, f) in &frames {
            e.handle_frame(*ts, link, f);
        }
        e.finish();
        let mut r = NodeReport::new(
            "gw-a",
            1_795_611_473,
            3,
            1_795_611_480_000_000_000,
            meta.clone(),
        );
        while let Some(x) = e.poll_export() {
            let [c2s, s2c] = x.rtt;
            let mut d = FlowDelta::from_record(x.record);
            d.rtt_c2s = (!c2s.is_empty()).then_some(c2s);
            d.rtt_s2c = (!s2c.is_empty()).then_some(s2c);
            out.push((
                format!("{name}-delta"),
                serde_json::to_vec(&d).unwrap_or_default(),
            ));
            r.flows.push(d);
        }
        out.push((
            format!("{name}.json"),
            serde_json::to_vec_pretty(&r).expect("serializes"),
        ));
    }
    out.retain(|(n, _)| n.ends_with(".json"));
    // Edge cases: empty, a flow delta split in two (same flow id), the
    // counters' extremes, IPv6.
    let base: Value = serde_json::from_slice(&out[0].1).expect("json");
    let mut empty = base.clone();
    empty["flows"] = json!([]);
    empty["node"] = json!("n");
    out.push((
        "empty.json".into(),
        serde_json::to_vec(&empty).expect("json"),
    ));
    let mut split = base.clone();
    if let Some(fl) = split["flows"].as_array_mut() {
        let first = fl[0].clone();
        let mut second = first.clone();
        second["first"] = json!(false);
        second["at_ns"] = json!(first["at_ns"].as_u64().unwrap_or(1) + 10_000_000_000);
        fl.push(second);
    }
    out.push((
        "split-deltas.json".into(),
        serde_json::to_vec(&split).expect("json"),
    ));
    let mut big = base.clone();
    if let Some(fl) = big["flows"].as_array_mut() {
        for d in fl.iter_mut() {
            d["flow"]["c2s"]["packets"] = json!(u64::MAX);
            d["flow"]["c2s"]["bytes"] = json!(u64::MAX);
            d["flow"]["s2c"]["bytes"] = json!(u64::MAX - 1);
            d["at_ns"] = json!(i64::MAX as u64 - 1);
            d["flow"]["last_ns"] = json!(i64::MAX as u64 - 1);
        }
    }
    out.push((
        "extremes.json".into(),
        serde_json::to_vec(&big).expect("json"),
    ));
    let mut v6 = base;
    if let Some(fl) = v6["flows"].as_array_mut() {
        fl[0]["flow"]["client"]["ip"] = json!("2001:db8::2");
        fl[0]["flow"]["server"]["ip"] = json!("2001:db8:1::80");
    }
    out.push(("ipv6.json".into(), serde_json::to_vec(&v6).expect("json")));
    out
}

fn count_nodes(v: &Value) -> usize {
    1 + match v {
        Value::Object(m) => m.values().map(count_nodes).sum(),
        Value::Array(a) => a.iter().map(count_nodes).sum(),
        _ => 0,
    }
}

/// Structure-aware mutation of 1 to 3 nodes of the document (pre-order
/// indices in `at`): numbers to edge values, strings to odd ones, a key
/// dropped, an array element duplicated or dropped, a bool flipped.
fn mutate_json(rng: &mut Rng, v: &mut Value) {
    let n = count_nodes(v);
    let at: Vec<usize> = (0..1 + rng.below(3)).map(|_| rng.below(n)).collect();
    let mut i = 0;
    mutate_at(rng, v, &at, &mut i);
}

fn mutate_at(rng: &mut Rng, v: &mut Value, at: &[usize], i: &mut usize) {
    let here = at.contains(i);
    *i += 1;
    if here {
        match v {
            Value::Object(m) if !m.is_empty() => {
                let k = m
                    .keys()
                    .nth(rng.below(m.len()))
                    .cloned()
                    .unwrap_or_default();
                m.remove(&k);
                return;
            }
            Value::Array(a) if !a.is_empty() => {
                let j = rng.below(a.len());
                if rng.below(2) == 0 {
                    let x = a[j].clone();
                    a.push(x);
                } else {
                    a.remove(j);
                }
                return;
            }
            Value::Number(_) => {
                *v = match rng.below(9) {
                    0 => json!(0),
                    1 => json!(u64::MAX),
                    2 => json!(i64::MAX as u64),
                    3 => json!(i64::MAX as u64 + 1),
                    4 => json!(-1),
                    5 => json!(1.5),
                    6 => json!(rng.next_u64()),
                    7 => json!(rng.next_u64() % 100_000),
                    _ => json!(u64::MAX - 60_000_000_000 + rng.next_u64() % 1_000_000_000),
                };
                return;
            }
            Value::String(s) => {
                *v = match rng.below(5) {
                    0 => json!(""),
                    1 => json!("x".repeat(65)),
                    2 => json!(format!("{s}\u{0}\u{ffff}")),
                    3 => json!("NaN"),
                    _ => json!(null),
                };
                return;
            }
            Value::Bool(b) => {
                *b = !*b;
                return;
            }
            Value::Null => {
                *v = json!(rng.next_u64() % 1_000_000);
                return;
            }
            _ => {}
        }
    }
    match v {
        Value::Object(m) => {
            for x in m.values_mut() {
                mutate_at(rng, x, at, i);
            }
        }
        Value::Array(a) => {
            for x in a.iter_mut() {
                mutate_at(rng, x, at, i);
            }
        }
        _ => {}
    }
}

#[test]
fn report_corpus() {
    let files = seeds::corpus(&corpus_dir());
    assert!(!files.is_empty(), "fuzz/corpus/report is empty");
    for (name, data) in &files {
        eprintln!("report/{name}");
        check_report(data);
    }
    let parsed: Vec<Value> = files
        .iter()
        .filter_map(|(_, d)| serde_json::from_slice(d).ok())
        .collect();
    assert!(!parsed.is_empty());
    let raw: Vec<Vec<u8>> = files.into_iter().map(|(_, d)| d).collect();
    let mut rng = Rng(0x5eed_0fc0_ffee);
    let mut valid = 0;
    for i in 0..3_000 {
        let input = if i % 4 == 3 {
            let a = &raw[rng.below(raw.len())];
            let b = &raw[rng.below(raw.len())];
            rng.mutate(a, b)
        } else {
            let mut v = parsed[rng.below(parsed.len())].clone();
            mutate_json(&mut rng, &mut v);
            serde_json::to_vec(&v).expect("json")
        };
        if serde_json::from_slice::<NodeReport>(&input).is_ok_and(|r| r.validate().is_ok()) {
            valid += 1;
        }
        check_report(&input);
    }
    // The mutations keep a fair share valid, so aggregation gets exercised.
    assert!(
        valid > 300,
        "only {valid} of 3000 mutated reports were valid"
    );
}

/// The seeds, straight from their builders (the corpus files may lag behind).
#[test]
fn seeds_satisfy_the_invariants() {
    for (name, s) in report_seeds() {
        let r: NodeReport = serde_json::from_slice(&s).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.validate(), Ok(()), "{name}");
        check_report(&s);
    }
}

/// Found by `report_corpus`'s mutations: a delta at (or within 60 s of)
/// u64::MAX ns passed validation, and merging the services' buckets computed
/// `bucket + 60 s` and overflowed (a panic in debug builds, a wrapped window
/// in release). Now such times are refused (report::MAX_TIME_NS) and the
/// merge saturates. Corpus: regress-at-ns-u64-max.json, regress-last-ns-u64-max.json.
#[test]
fn regress_bucket_end_overflow() {
    use wirelens_ctrl::agg::{Counters, Res};
    use wirelens_ctrl::report::ReportError;
    use wirelens_ctrl::store::BucketRow;
    for name in ["regress-at-ns-u64-max.json", "regress-last-ns-u64-max.json"] {
        let data = std::fs::read(corpus_dir().join(name)).expect("corpus file");
        let r: NodeReport = serde_json::from_slice(&data).expect("parses");
        assert!(
            matches!(r.validate(), Err(ReportError::Flow { index: 0, .. })),
            "{name}"
        );
        check_report(&data);
    }
    let row = BucketRow {
        service: "198.18.2.2:53/udp".into(),
        subnet: None,
        node: "n".into(),
        bucket: Res::M1.bucket(u64::MAX),
        counters: Counters {
            packets: 1,
            ..Counters::default()
        },
    };
    let s = wirelens_ctrl::server::services_of(vec![row], Vec::new(), 0);
    assert_eq!(s[0].last_ns, u64::MAX);
}

#[test]
#[ignore = "writes fuzz/corpus/report/seed-*; run by hand after changing the seeds"]
fn write_seed_corpus() {
    seeds::write_seeds(&corpus_dir(), &report_seeds());
}
