//! The client and server per-call path over loopback.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use geerpc::{Client, Codec, Server, Service};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Args {
    num1: i64,
    num2: i64,
}

fn bench_calls(c: &mut Criterion) {
    let server = Server::new();
    server
        .register(Service::new("Arith").method("Sum", |a: Args| Ok::<_, String>(a.num1 + a.num2)))
        .unwrap();
    let running = server.listen("tcp@127.0.0.1:0").unwrap();
    let addr = running.addr().to_string();
    let mut g = c.benchmark_group("call");
    g.throughput(Throughput::Elements(1));
    for codec in [Codec::Json, Codec::MsgPack] {
        let name = if codec == Codec::Json {
            "json"
        } else {
            "msgpack"
        };
        let client = Client::builder().codec(codec).dial(&addr).unwrap();
        g.bench_function(format!("{name}/concurrency1"), |b| {
            b.iter(|| {
                let r: i64 = client
                    .call("Arith.Sum", &Args { num1: 1, num2: 2 })
                    .unwrap();
                r
            })
        });
        // 16 callers on one connection; the time reported is per call.
        g.bench_function(format!("{name}/concurrency16"), |b| {
            b.iter_custom(|iters| {
                let threads = 16u64;
                let per = iters.div_ceil(threads);
                let go = Arc::new(Barrier::new(threads as usize + 1));
                let failed = Arc::new(AtomicBool::new(false));
                let handles: Vec<_> = (0..threads)
                    .map(|_| {
                        let (client, go, failed) = (client.clone(), go.clone(), failed.clone());
                        std::thread::spawn(move || {
                            go.wait();
                            for i in 0..per as i64 {
                                let r: Result<i64, _> =
                                    client.call("Arith.Sum", &Args { num1: i, num2: 1 });
                                if r.ok() != Some(i + 1) {
                                    failed.store(true, Ordering::Relaxed);
                                }
                            }
                        })
                    })
                    .collect();
                go.wait();
                let t0 = Instant::now();
                for h in handles {
                    h.join().unwrap();
                }
                assert!(!failed.load(Ordering::Relaxed), "a call failed");
                t0.elapsed().mul_f64(iters as f64 / (per * threads) as f64)
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).sample_size(20);
    targets = bench_calls
}
criterion_main!(benches);
