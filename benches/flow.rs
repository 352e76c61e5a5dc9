//! Flow-table and statistics costs, one packet (`PacketMeta`) at a time:
//! - `flow/hit_*`: a packet of a flow already in the table (the same flow
//!   every time: everything in cache);
//! - `flow/miss_udp`, `flow/miss_tcp_syn`: a packet of a new flow (insert;
//!   the table grows from empty to 100k flows, rehashing included);
//! - `table/lookup/N`: steady state over N live flows, packets of random
//!   flows (cache misses grow with N);
//! - `histogram/record`: one RTT sample into a flow's histogram.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wirelens_dataplane::flow::{FlowTable, TableConfig};
use wirelens_dataplane::meta::{proto, tcp_flags, Addr, PacketMeta, TcpOpts};
use wirelens_dataplane::stats::Histogram;

const T0: u64 = 1_700_000_000_000_000_000;

/// A UDP packet of flow `i` (distinct for every `i` below 2^32).
fn udp(i: u32, ts_ns: u64) -> PacketMeta {
    PacketMeta {
        ts_ns,
        src: Addr::from_v4([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]),
        dst: Addr::from_v4([198, 19, 0, 1]),
        sport: 1024 + (i >> 24) as u16,
        dport: 443,
        proto: proto::UDP,
        ip_len: 1200,
        payload_len: 1172,
        ..PacketMeta::default()
    }
}

fn tcp_syn(i: u32, ts_ns: u64) -> PacketMeta {
    let mut m = udp(i, ts_ns);
    m.proto = proto::TCP;
    m.ip_len = 60;
    m.payload_len = 0;
    m.tcp.flags = tcp_flags::SYN;
    m.tcp.seq = i.wrapping_mul(2_654_435_761);
    m.tcp.window = 64240;
    m.tcp.opts = TcpOpts {
        mss: Some(1460),
        wscale: Some(7),
        sack_ok: true,
        ts: Some((i, 0)),
        ..TcpOpts::default()
    };
    m
}

fn table(capacity: usize) -> FlowTable {
    FlowTable::new(TableConfig {
        capacity,
        ..TableConfig::default()
    })
}

fn hit(c: &mut Criterion) {
    let mut g = c.benchmark_group("flow");
    g.throughput(Throughput::Elements(1));
    g.bench_function("hit_udp", |b| {
        let mut t = table(1 << 10);
        let mut m = udp(7, T0);
        t.handle(&m, &mut |_, _| {});
        b.iter(|| {
            m.ts_ns += 1000;
            black_box(t.handle(black_box(&m), &mut |_, _| {}));
        })
    });
    g.bench_function("hit_tcp_data", |b| {
        // An established connection; in-order data segments with timestamps.
        let mut t = table(1 << 10);
        let mut m = tcp_syn(7, T0);
        t.handle(&m, &mut |_, _| {});
        m.tcp.flags = tcp_flags::ACK | tcp_flags::PSH;
        m.tcp.seq = m.tcp.seq.wrapping_add(1);
        m.payload_len = 1448;
        m.ip_len = 1500;
        let mut tsval = 1u32;
        b.iter(|| {
            m.ts_ns += 1000;
            tsval += 1;
            m.tcp.opts.ts = Some((tsval, 0));
            black_box(t.handle(black_box(&m), &mut |_, _| {}));
            m.tcp.seq = m.tcp.seq.wrapping_add(1448);
        })
    });
    for (name, mk) in [
        ("miss_udp", udp as fn(u32, u64) -> PacketMeta),
        ("miss_tcp_syn", tcp_syn),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut done = 0u64;
                while done < iters {
                    let n = (iters - done).min(100_000);
                    let mut t = table(1 << 20);
                    let start = Instant::now();
                    for i in 0..n as u32 {
                        black_box(t.handle(&mk(i, T0 + u64::from(i)), &mut |_, _| {}));
                    }
                    total += start.elapsed();
                    done += n;
                    drop(t);
                }
                total
            })
        });
    }
    g.finish();
}

fn lookups(c: &mut Criterion) {
    let mut g = c.benchmark_group("table/lookup");
    g.throughput(Throughput::Elements(1));
    for n in [1_000u32, 100_000, 1_000_000] {
        let mut t = table(2 << 20);
        for i in 0..n {
            t.handle(&udp(i, T0), &mut |_, _| {});
        }
        // Random flows: splitmix64 indices, precomputed.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let order: Vec<u32> = (0..1 << 20)
            .map(|_| {
                x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = x;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                ((z >> 32) % u64::from(n)) as u32
            })
            .collect();
        let mut k = 0usize;
        let mut ts = T0;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                k = (k + 1) & ((1 << 20) - 1);
                ts += 100;
                black_box(t.handle(&udp(order[k], ts), &mut |_, _| {}));
            })
        });
    }
    g.finish();
}

fn histogram(c: &mut Criterion) {
    let mut g = c.benchmark_group("histogram");
    g.throughput(Throughput::Elements(1));
    g.bench_function("record", |b| {
        // RTT-like samples from 100 us to ~200 ms, log-uniform.
        let mut h = Histogram::new();
        let mut x = 1u64;
        b.iter(|| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = 100_000u64 << (x % 11);
            h.record(black_box(v + (x >> 40) % v));
        });
        black_box(h.count());
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    targets = hit, lookups, histogram
}
criterion_main!(benches);
