//! The per-call path with one caller per connection (issue 23), over
//! loopback: 1 caller on 1 connection, and 16 callers each on a connection
//! of its own. Unlike `call.rs` (16 callers sharing one connection, whose
//! requests and replies share writes), nothing here can be batched: each
//! call pays the whole hand-off from the caller to the wire and back, which
//! is the cost the scale points of `benches/scale.sh` multiply by 1,000.
//! The time reported is per call (so at 16 callers, wall time over all
//! calls, not one caller's latency).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use geerpc::{Client, Server, Service};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Args {
    num1: i64,
    num2: i64,
}

fn bench_per_connection(c: &mut Criterion) {
    let server = Server::new();
    server
        .register(Service::new("Arith").method("Sum", |a: Args| Ok::<_, String>(a.num1 + a.num2)))
        .unwrap();
    let running = server.listen("tcp@127.0.0.1:0").unwrap();
    let addr = running.addr().to_string();
    let mut g = c.benchmark_group("per_connection");
    g.throughput(Throughput::Elements(1));
    for callers in [1usize, 16] {
        // Dialled once, outside the timing: one connection per caller.
        let clients: Vec<Client> = (0..callers)
            .map(|_| Client::builder().dial(&addr).unwrap())
            .collect();
        g.bench_function(format!("callers{callers}"), |b| {
            b.iter_custom(|iters| {
                let per = iters.div_ceil(callers as u64);
                let go = Arc::new(Barrier::new(callers + 1));
                let failed = Arc::new(AtomicBool::new(false));
                let handles: Vec<_> = clients
                    .iter()
                    .map(|client| {
                        let (client, go, failed) = (client.clone(), go.clone(), failed.clone());
                        std::thread::spawn(move || {
                            go.wait();
                            // Bounded: `per` calls, each ending with a reply or an error.
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
                t0.elapsed()
                    .mul_f64(iters as f64 / (per * callers as u64) as f64)
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).sample_size(20);
    targets = bench_per_connection
}
criterion_main!(benches);
