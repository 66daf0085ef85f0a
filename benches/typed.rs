//! What a generated client (`#[geerpc::service]`) costs over `Client::call`
//! (issue 20: nothing; within 2 % in the same run).
//!
//! - `typed/wrapper/...`: the generated method over a `Caller` that does
//!   no I/O (it hands back a constant), against calling that `Caller`
//!   directly: the wrapper's own cost, in nanoseconds, free of network
//!   noise.
//! - `typed/loopback/...`: a real call over loopback (the server of
//!   benches/call.rs), `Client::call("Arith.Sum", ..)` against the typed
//!   `client.sum(..)`, both codecs, one caller. The two are measured
//!   alternately, in one process, so that a busy machine hits both alike.
//! - then a paired comparison (printed, `typed/paired`): 40 rounds, each
//!   500 dynamic calls then 500 typed ones (then the other order), and the
//!   median of the rounds' typed/dynamic ratios. Over loopback on a shared
//!   machine each criterion figure moves by tens of percent from one
//!   second to the next; a ratio taken within one round cancels that.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use geerpc::client::{Caller, PendingCall};
use geerpc::{CallOptions, Client, Codec, Server};
use serde::de::{DeserializeOwned, IntoDeserializer};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Args {
    num1: i64,
    num2: i64,
}

#[geerpc::service]
trait Arith {
    fn sum(&self, args: Args) -> Result<i64, String>;
}

struct Calc;

impl Arith for Calc {
    fn sum(&self, a: Args) -> Result<i64, String> {
        Ok(a.num1 + a.num2)
    }
}

/// A caller with no I/O: every call's reply is 3.
struct Null;

/// Its pending call: the reply, ready.
struct Ready<R>(R);

impl<R> PendingCall<R> for Ready<R> {
    fn wait(self) -> geerpc::Result<R> {
        Ok(self.0)
    }
    fn wait_timeout(self, _: Duration) -> geerpc::Result<R> {
        Ok(self.0)
    }
    fn try_wait(&self) -> Option<geerpc::Result<R>> {
        None
    }
}

fn three<R: DeserializeOwned>() -> R {
    let d: serde::de::value::I64Deserializer<serde::de::value::Error> = 3i64.into_deserializer();
    R::deserialize(d).expect("3 is the reply")
}

impl Caller for Null {
    type Pending<R> = Ready<R>;

    fn call<A, R>(&self, service_method: &str, args: &A) -> geerpc::Result<R>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        black_box((service_method, args));
        Ok(three())
    }

    fn call_with<A, R>(&self, m: &str, args: &A, opts: &CallOptions) -> geerpc::Result<R>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        black_box(opts);
        self.call(m, args)
    }

    fn go<A, R>(&self, m: &str, args: &A) -> geerpc::Result<Ready<R>>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        self.call(m, args).map(Ready)
    }

    fn go_with<A, R>(&self, m: &str, args: &A, opts: &CallOptions) -> geerpc::Result<Ready<R>>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        self.call_with(m, args, opts).map(Ready)
    }
}

fn bench_wrapper(c: &mut Criterion) {
    let mut g = c.benchmark_group("typed/wrapper");
    g.throughput(Throughput::Elements(1));
    let typed = ArithClient::new(Null);
    let args = Args { num1: 1, num2: 2 };
    g.bench_function("dynamic", |b| {
        b.iter(|| -> i64 { Null.call("Arith.Sum", black_box(&args)).unwrap() })
    });
    g.bench_function("typed", |b| {
        b.iter(|| -> i64 { typed.sum(black_box(&args)).unwrap() })
    });
    g.finish();
}

fn bench_loopback(c: &mut Criterion) {
    let server = Server::new();
    server.register(ArithService::new(Calc)).unwrap();
    let running = server.listen("tcp@127.0.0.1:0").unwrap();
    let addr = running.addr().to_string();
    let mut g = c.benchmark_group("typed/loopback");
    g.throughput(Throughput::Elements(1));
    for codec in [Codec::Json, Codec::MsgPack] {
        let name = if codec == Codec::Json {
            "json"
        } else {
            "msgpack"
        };
        let client = Client::builder().codec(codec).dial(&addr).unwrap();
        let typed = ArithClient::new(client.clone());
        // Alternated rounds: each measured twice, in the order A B B A, so
        // that a load that rises or falls during the run hits both alike.
        for round in ["a", "b"] {
            let order: [&str; 2] = if round == "a" {
                ["dynamic", "typed"]
            } else {
                ["typed", "dynamic"]
            };
            for which in order {
                let id = format!("{name}/{which}/{round}");
                if which == "typed" {
                    g.bench_function(id, |b| {
                        b.iter(|| -> i64 { typed.sum(&Args { num1: 1, num2: 2 }).unwrap() })
                    });
                } else {
                    g.bench_function(id, |b| {
                        b.iter(|| -> i64 {
                            client
                                .call("Arith.Sum", &Args { num1: 1, num2: 2 })
                                .unwrap()
                        })
                    });
                }
            }
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).sample_size(30);
    targets = bench_wrapper, bench_loopback
}
/// The paired comparison: the median over rounds of (typed time / dynamic
/// time), each round timing `block` calls of each, in alternating order.
fn paired(rounds: usize, block: usize) {
    let server = Server::new();
    server.register(ArithService::new(Calc)).unwrap();
    let running = server.listen("tcp@127.0.0.1:0").unwrap();
    for codec in [Codec::Json, Codec::MsgPack] {
        let client = Client::builder().codec(codec).dial(running.addr()).unwrap();
        let typed = ArithClient::new(client.clone());
        let dynamic_block = || {
            let t0 = Instant::now();
            for i in 0..block as i64 {
                let r: i64 = client
                    .call("Arith.Sum", &Args { num1: i, num2: 1 })
                    .unwrap();
                assert_eq!(r, i + 1);
            }
            t0.elapsed()
        };
        let typed_block = || {
            let t0 = Instant::now();
            for i in 0..block as i64 {
                let r = typed.sum(&Args { num1: i, num2: 1 }).unwrap();
                assert_eq!(r, i + 1);
            }
            t0.elapsed()
        };
        let (mut ratios, mut d_total, mut t_total) = (Vec::new(), Duration::ZERO, Duration::ZERO);
        for round in 0..rounds {
            let (d, t) = if round % 2 == 0 {
                let d = dynamic_block();
                (d, typed_block())
            } else {
                let t = typed_block();
                (dynamic_block(), t)
            };
            d_total += d;
            t_total += t;
            ratios.push(t.as_secs_f64() / d.as_secs_f64());
        }
        ratios.sort_by(f64::total_cmp);
        let n = (rounds * block) as f64;
        println!(
            "typed/paired/{codec:?}: median typed/dynamic {:.4} over {rounds} rounds of {block} calls \
             (mean per call: dynamic {:.2} us, typed {:.2} us)",
            ratios[ratios.len() / 2],
            d_total.as_secs_f64() * 1e6 / n,
            t_total.as_secs_f64() * 1e6 / n,
        );
    }
}

fn main() {
    benches();
    // `cargo bench -- --test` (criterion's smoke run): a token round.
    if std::env::args().any(|a| a == "--test") {
        paired(2, 10);
    } else if !std::env::args().any(|a| a == "--list") {
        paired(40, 500);
    }
    Criterion::default().configure_from_args().final_summary();
}
