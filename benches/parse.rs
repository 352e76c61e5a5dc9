//! Per-packet parse cost: `wire::parse` of one Ethernet frame into a `PacketMeta`.
//! Frames come from the synthetic generator (a TCP data segment with
//! timestamps over IPv4, the same over IPv6, a UDP datagram).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use wirelens_dataplane::meta::proto;
use wirelens_dataplane::source::synthetic::{Synthetic, SyntheticConfig};
use wirelens_dataplane::wire::{self, LinkType};
use wirelens_dataplane::PacketMeta;

/// The first synthetic frame whose parsed meta satisfies `want`.
fn frame(want: impl Fn(&PacketMeta) -> bool) -> Vec<u8> {
    let mut g = Synthetic::new(SyntheticConfig {
        ipv6: 0.3,
        ..SyntheticConfig::default()
    })
    .expect("valid synthetic config");
    let mut m = PacketMeta::default();
    loop {
        let f = g.next_frame().expect("endless generator");
        if wire::parse(LinkType::Ethernet, f.data, &mut m).is_ok() && want(&m) {
            return f.data.to_vec();
        }
    }
}

fn parse(c: &mut Criterion) {
    let cases = [
        (
            "tcp_v4_ts",
            frame(|m| !m.is_v6 && m.is_tcp() && m.payload_len > 0 && m.tcp.opts.ts.is_some()),
        ),
        (
            "tcp_v6_ts",
            frame(|m| m.is_v6 && m.is_tcp() && m.payload_len > 0 && m.tcp.opts.ts.is_some()),
        ),
        ("udp_v4", frame(|m| !m.is_v6 && m.proto == proto::UDP)),
    ];
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(1));
    for (name, f) in &cases {
        let mut m = PacketMeta::default();
        g.bench_function(*name, |b| {
            b.iter(|| {
                let r = wire::parse(LinkType::Ethernet, black_box(f), &mut m);
                black_box((&r, &m));
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    targets = parse
}
criterion_main!(benches);
