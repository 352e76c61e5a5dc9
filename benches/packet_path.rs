//! The whole packet path: `Engine::handle_frame` (parse, flow table, TCP
//! analysis, burst meter, expiry) over synthetic mixed traffic with 100k
//! concurrent flows (80 % TCP with 1 % loss and 0.5 % reordering, 20 % UDP,
//! 10 % IPv6). Frames are generated in chunks of 4096 outside the timed part.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use wirelens_dataplane::engine::{Engine, EngineConfig};
use wirelens_dataplane::source::synthetic::{FrameArena, Synthetic, SyntheticConfig};
use wirelens_dataplane::wire::LinkType;

const FLOWS: usize = 100_000;
const CHUNK: usize = 4096;

fn packet_path(c: &mut Criterion) {
    let mut gen = Synthetic::new(SyntheticConfig {
        flows: FLOWS,
        ..SyntheticConfig::default()
    })
    .expect("valid synthetic config");
    let mut engine = Engine::new(EngineConfig::default());
    let mut arena = FrameArena::with_capacity(CHUNK, CHUNK * 1514);
    // Warm-up: every flow opened and a few packets each.
    let mut warm = 0;
    while warm < 2 * FLOWS {
        arena.clear();
        warm += arena.fill(&mut gen, CHUNK);
        for f in arena.iter() {
            engine.handle_frame(f.ts_ns, LinkType::Ethernet, f.data);
        }
        while engine.poll_record().is_some() {}
    }
    let mut g = c.benchmark_group("packet_path");
    g.throughput(Throughput::Elements(1));
    g.bench_function("handle_frame_mixed_100k_flows", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0u64;
            while done < iters {
                let n = (iters - done).min(CHUNK as u64) as usize;
                arena.clear();
                arena.fill(&mut gen, n);
                let start = Instant::now();
                for f in arena.iter() {
                    engine.handle_frame(f.ts_ns, LinkType::Ethernet, f.data);
                }
                total += start.elapsed();
                while engine.poll_record().is_some() {}
                done += n as u64;
            }
            total
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    targets = packet_path
}
criterion_main!(benches);
