//! Registry throughput: a heartbeat (POST) and a lookup (GET of 100
//! instances), one keep-alive HTTP client, against an in-process registry.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use geerpc::Registry;

fn bench_registry(c: &mut Criterion) {
    let registry = Registry::builder().addr("127.0.0.1:0").start().unwrap();
    let url = registry.url().to_string();
    let agent = ureq::Agent::new_with_defaults();
    for i in 0..100 {
        agent
            .post(&url)
            .header("X-rpc-Server", &format!("tcp@127.0.0.1:{}", 20_000 + i))
            .send_empty()
            .unwrap();
    }
    let mut g = c.benchmark_group("registry");
    g.throughput(Throughput::Elements(1));
    g.bench_function("heartbeat", |b| {
        b.iter(|| {
            let resp = agent
                .post(&url)
                .header("X-rpc-Server", "tcp@127.0.0.1:7001")
                .send_empty()
                .unwrap();
            assert!(resp.status().is_success());
        })
    });
    g.bench_function("lookup_100", |b| {
        b.iter(|| {
            let resp = agent.get(&url).call().unwrap();
            let list = resp.headers().get("X-rpc-Servers").unwrap();
            assert!(list.len() > 100 * 10);
        })
    });
    g.finish();
    registry.shutdown();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).sample_size(30);
    targets = bench_registry
}
criterion_main!(benches);
