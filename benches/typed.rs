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

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
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
criterion_main!(benches);
