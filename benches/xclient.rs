//! Selection per call for each built-in selector, and a broadcast to 8
//! in-process servers.

use std::sync::Arc;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use geerpc::xclient::{Instance, SelectContext};
use geerpc::{Discovery, MultiServerDiscovery, SelectMode, Server, Service, XClient};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Args {
    num1: i64,
    num2: i64,
}

fn bench_selectors(c: &mut Criterion) {
    let instances: Vec<Instance> = (0..10)
        .map(|i| Instance::new(format!("tcp@127.0.0.1:{}", 7000 + i)).with_weight(1 + i % 3))
        .collect();
    let snapshot = MultiServerDiscovery::new(instances).snapshot().unwrap();
    // Some calls in flight everywhere, as under load, where p2c's home counts.
    let inflight = vec![3usize; 10];
    let available = vec![true; 10];
    let mut g = c.benchmark_group("select");
    g.throughput(Throughput::Elements(1));
    for (name, mode, home) in [
        ("random", SelectMode::Random, None),
        ("round_robin", SelectMode::RoundRobin, None),
        ("weighted_round_robin", SelectMode::WeightedRoundRobin, None),
        ("consistent_hash", SelectMode::ConsistentHash, None),
        ("p2c", SelectMode::PowerOfTwoChoices, None),
        ("p2c_with_home", SelectMode::PowerOfTwoChoices, Some(4)),
    ] {
        let selector = mode.selector();
        let mut n = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                n = n.wrapping_add(1);
                let key = n.to_le_bytes();
                let mut ctx = SelectContext::new("Arith.Sum", &inflight, &available).with_key(&key);
                if let Some(h) = home {
                    ctx = ctx.with_home(h);
                }
                selector.select(black_box(&snapshot), &ctx)
            })
        });
    }
    g.finish();
}

fn bench_broadcast(c: &mut Criterion) {
    let servers: Vec<_> = (0..8)
        .map(|_| {
            let s = Server::new();
            s.register(
                Service::new("Arith").method("Sum", |a: Args| Ok::<_, String>(a.num1 + a.num2)),
            )
            .unwrap();
            s.listen("tcp@127.0.0.1:0").unwrap()
        })
        .collect();
    let discovery = Arc::new(MultiServerDiscovery::new(
        servers.iter().map(|s| s.addr().to_string()),
    ));
    let xc = XClient::new(discovery, SelectMode::RoundRobin);
    let mut g = c.benchmark_group("xclient");
    g.throughput(Throughput::Elements(1));
    g.bench_function("call_round_robin_8", |b| {
        b.iter(|| {
            let r: i64 = xc.call("Arith.Sum", &Args { num1: 1, num2: 2 }).unwrap();
            r
        })
    });
    g.bench_function("broadcast_8", |b| {
        b.iter(|| {
            let r: i64 = xc
                .broadcast("Arith.Sum", &Args { num1: 1, num2: 2 })
                .unwrap();
            r
        })
    });
    g.finish();
    drop(xc);
    drop(servers);
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).sample_size(30);
    targets = bench_selectors, bench_broadcast
}
criterion_main!(benches);
