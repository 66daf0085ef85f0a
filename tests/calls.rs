//! Plain calls that succeed: both codecs on rich types, a Go client's JSON
//! stream, and many callers, threads and asynchronous calls sharing
//! connections.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use geerpc::{Client, Codec, Server, Service};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Shape {
    Empty,
    Circle(f64),
    Rect { w: u32, h: u32 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Inner {
    name: String,
    tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Everything {
    nested: Inner,
    maybe: Option<Inner>,
    nothing: Option<i32>,
    shapes: Vec<Shape>,
    map: BTreeMap<String, i64>,
    #[serde(with = "serde_bytes")]
    bytes: Vec<u8>,
    unicode: String,
    big: String,
    negative: i64,
    unsigned: u64,
}

fn everything() -> Everything {
    Everything {
        nested: Inner {
            name: "inner".into(),
            tags: vec!["a".into(), "b".into()],
        },
        maybe: Some(Inner {
            name: "some".into(),
            tags: vec![],
        }),
        nothing: None,
        shapes: vec![Shape::Empty, Shape::Circle(1.5), Shape::Rect { w: 2, h: 3 }],
        map: [("x".to_string(), 1), ("y".to_string(), -2)]
            .into_iter()
            .collect(),
        bytes: (0..=255).collect(),
        unicode: "héllo, 世界 🦀 \u{0} \"quoted\" \\ \n".into(),
        big: "ü".repeat(512 * 1024), // 1 MiB of UTF-8
        negative: i64::MIN,
        unsigned: u64::MAX,
    }
}

#[test]
fn both_codecs_round_trip_rich_types() {
    init_log();
    let server = Server::new();
    server
        .register(Service::new("Types").method("Echo", |v: Everything| Ok::<_, String>(v)))
        .unwrap();
    let running = server.listen("tcp@127.0.0.1:0").unwrap();
    let value = everything();
    for codec in [Codec::Json, Codec::MsgPack] {
        let client = Client::builder().codec(codec).dial(running.addr()).unwrap();
        let back: Everything = client.call("Types.Echo", &value).unwrap();
        assert_eq!(back, value, "{codec}");
    }
}

/// Reads JSON values off a stream the way a Go json.Decoder does.
fn json_values(stream: TcpStream) -> impl Iterator<Item = Value> {
    serde_json::Deserializer::from_reader(stream)
        .into_iter::<Value>()
        .map(|v| v.expect("well-formed JSON from the server"))
}

#[test]
fn a_go_style_json_stream_is_served_including_pretty_printed_values() {
    init_log();
    let running = start_server();
    let mut s = raw_connect(running.addr());
    // Exactly what a Go GeeRPC client writes, then a request as a Go program
    // using json.MarshalIndent would, with odd spacing between values.
    let wire = concat!(
        "{\"MagicNumber\":3882844,\"CodecType\":\"application/json\",\"ConnectTimeout\":10000000000,\"HandleTimeout\":0}\n",
        "{\"ServiceMethod\":\"Arith.Sum\",\"Seq\":1,\"Error\":\"\"}\n",
        "{\"Num1\":1,\"Num2\":2}\n",
        "{\n  \"ServiceMethod\": \"Arith.Sum\",\n  \"Seq\": 2,\n  \"Error\": \"\"\n}\r\n\t",
        "{\n    \"Num1\": 30,\n    \"Num2\": 12\n}",
        "   {\"ServiceMethod\":\"Arith.Sum\",\"Seq\":3,\"Error\":\"\",\"Deadline\":5}{\"Num1\":-1,\"Num2\":1}\n",
    );
    s.write_all(wire.as_bytes()).unwrap();
    let mut values = json_values(s.try_clone().unwrap());
    let mut replies = BTreeMap::new();
    for _ in 0..3 {
        let header = values.next().unwrap();
        let body = values.next().unwrap();
        assert_eq!(header["ServiceMethod"], "Arith.Sum");
        assert_eq!(header["Error"], "");
        replies.insert(header["Seq"].as_u64().unwrap(), body);
    }
    assert_eq!(replies[&1], 3);
    assert_eq!(replies[&2], 42);
    assert_eq!(replies[&3], 0);
}

#[test]
fn the_legacy_magic_number_is_accepted() {
    let running = start_server();
    let mut s = raw_connect(running.addr());
    s.write_all(b"{\"MagicNumber\":3927900,\"CodecType\":\"application/json\"}\n{\"ServiceMethod\":\"Arith.Sum\",\"Seq\":9}\n{\"Num1\":4,\"Num2\":5}\n").unwrap();
    let mut values = json_values(s);
    assert_eq!(values.next().unwrap()["Seq"], 9);
    assert_eq!(values.next().unwrap(), 9);
}

/// `threads` threads share `client`, each making `calls` calls with its own
/// arguments; every third call (if `timed`) has a timeout. Each reply must
/// be the caller's own.
fn share_one_client(client: &Client, threads: i64, calls: i64, timed: bool) {
    std::thread::scope(|scope| {
        for t in 0..threads {
            let client = client.clone();
            scope.spawn(move || {
                for i in 0..calls {
                    let args = Args {
                        num1: t * 1000,
                        num2: i,
                    };
                    let sum: i64 = if timed && (t + i) % 3 == 0 {
                        client.call_timeout("Arith.Sum", &args, Duration::from_secs(20))
                    } else {
                        client.call("Arith.Sum", &args)
                    }
                    .unwrap_or_else(|e| panic!("thread {t} call {i}: {e}"));
                    assert_eq!(sum, t * 1000 + i, "thread {t} call {i}");
                }
            });
        }
    });
}

#[test]
fn sixty_four_threads_share_one_client() {
    init_log();
    let running = start_server();
    for codec in [Codec::Json, Codec::MsgPack] {
        let client = Client::builder().codec(codec).dial(running.addr()).unwrap();
        share_one_client(&client, 64, 50, false);
    }
}

/// More callers on one connection than its wake set has places for (128):
/// some sleep there and are woken a batch at a time, the rest wait on
/// their call's condition variable. Blocking and timed calls both.
#[test]
fn more_blocked_callers_than_the_wake_set_holds_all_get_their_replies() {
    init_log();
    let running = start_server();
    let client = Client::dial(running.addr()).unwrap();
    share_one_client(&client, 160, 40, true);
}

/// Replies for a thread waiting on many asynchronous calls, which does not
/// call again until all are in, share batches with callers that do call
/// back to back (whose reader may yield before it flushes). Every call of
/// both kinds must be answered, round after round.
#[test]
fn many_async_calls_and_back_to_back_callers_share_a_connection() {
    init_log();
    let running = start_server();
    let client = Client::dial(running.addr()).unwrap();
    std::thread::scope(|scope| {
        for t in 0..8i64 {
            let client = client.clone();
            scope.spawn(move || {
                for i in 0..300i64 {
                    let args = Args { num1: t, num2: i };
                    let sum: i64 = client
                        .call_timeout("Arith.Sum", &args, Duration::from_secs(10))
                        .unwrap_or_else(|e| panic!("caller {t} call {i}: {e}"));
                    assert_eq!(sum, t + i);
                }
            });
        }
        let client = client.clone();
        scope.spawn(move || {
            for round in 0..50i64 {
                let calls: Vec<_> = (0..32i64)
                    .map(|i| {
                        let args = Args {
                            num1: round,
                            num2: i,
                        };
                        (i, client.go::<_, i64>("Arith.Sum", &args).unwrap())
                    })
                    .collect();
                for (i, call) in calls {
                    let sum = call
                        .wait_timeout(Duration::from_secs(10))
                        .unwrap_or_else(|e| panic!("round {round} call {i}: {e}"));
                    assert_eq!(sum, round + i);
                }
            }
        });
    });
}

/// Callers that go round two connections, as an XClient does: a request
/// sent by a caller that one connection's reader just woke is flushed with
/// that reader's batch. None may be left unsent.
#[test]
fn callers_alternating_between_connections_all_get_replies() {
    init_log();
    let one = start_server();
    let two = start_server();
    let clients = [
        Client::dial(one.addr()).unwrap(),
        Client::dial(two.addr()).unwrap(),
    ];
    std::thread::scope(|scope| {
        for t in 0..32i64 {
            let clients = &clients;
            scope.spawn(move || {
                for i in 0..200i64 {
                    let args = Args { num1: t, num2: i };
                    let sum: i64 = clients[((t + i) % 2) as usize]
                        .call_timeout("Arith.Sum", &args, Duration::from_secs(10))
                        .unwrap_or_else(|e| panic!("thread {t} call {i}: {e}"));
                    assert_eq!(sum, t + i);
                }
            });
        }
    });
}

/// A peer pipelining slow calls gets a thread per call only up to
/// `max_concurrent_calls`; past it, its connection waits for a handler to
/// return, and other connections are still served.
#[test]
fn slow_calls_pipelined_on_one_connection_are_capped() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    init_log();
    let running_now = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (now, max) = (running_now.clone(), most.clone());
    let server = Server::builder().max_concurrent_calls(2).build();
    server
        .register(Service::new("Slow").method("Hold", move |a: Args| {
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(n, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(a.num1 as u64));
            now.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, String>(a.num2)
        }))
        .unwrap();
    let running = start_with(server);
    let addr = running.addr().to_string();
    let client = Client::dial(&addr).unwrap();
    let calls: Vec<_> = (0..8)
        .map(|i| {
            client
                .go::<_, i64>("Slow.Hold", &Args { num1: 100, num2: i })
                .unwrap()
        })
        .collect();
    // Another connection's call is read by that connection's own thread.
    let other = Client::dial(&addr).unwrap();
    let sum: i64 = other
        .call_timeout(
            "Arith.Sum",
            &Args { num1: 1, num2: 2 },
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(sum, 3);
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(
            call.wait_timeout(Duration::from_secs(10)).unwrap(),
            i as i64
        );
    }
    let most = most.load(Ordering::SeqCst);
    assert!(
        most <= 2,
        "{most} slow calls ran at once, with max_concurrent_calls(2)"
    );
}

#[test]
fn a_slow_call_does_not_delay_a_fast_one_on_the_same_connection() {
    init_log();
    let server = Server::new();
    let (running, started) = start_gated(server);
    let client = Client::dial(running.addr()).unwrap();
    let slow = hold_started(&client, &started, 2000);
    let t0 = Instant::now();
    let sum: i64 = client
        .call("Arith.Sum", &Args { num1: 1, num2: 2 })
        .unwrap();
    let took = t0.elapsed();
    assert_eq!(sum, 3);
    // Behind the slow call it would take 2 s; the bound leaves room for a
    // loaded machine.
    assert!(took < Duration::from_millis(1000), "Sum took {took:?}");
    assert!(slow.try_wait().is_none(), "the slow call is still running");
    assert_eq!(slow.wait().unwrap(), 2000);
}

#[test]
fn the_async_call_can_be_selected_on() {
    let running = start_server();
    let client = Client::dial(running.addr()).unwrap();
    let a = client
        .go::<_, i64>(
            "Arith.SleepMs",
            &Args {
                num1: 2000,
                num2: 0,
            },
        )
        .unwrap();
    let b = client
        .go::<_, i64>("Arith.Sum", &Args { num1: 5, num2: 6 })
        .unwrap();
    crossbeam_channel::select! {
        recv(a.receiver()) -> _ => panic!("the slow call cannot come first"),
        recv(b.receiver()) -> r => assert_eq!(r.unwrap().unwrap(), 11),
    }
    assert_eq!(a.wait_timeout(Duration::from_secs(10)).unwrap(), 2000);
}

#[test]
fn waiting_again_after_the_result_was_taken_ends_at_once() {
    let running = start_server();
    let client = Client::dial(running.addr()).unwrap();
    // Taken through the receiver.
    let call = client
        .go::<_, i64>("Arith.Sum", &Args { num1: 1, num2: 2 })
        .unwrap();
    assert_eq!(call.receiver().recv().unwrap().unwrap(), 3);
    assert!(call.try_wait().is_none());
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || tx.send(call.wait().is_err()));
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(true));
    // Taken through try_wait.
    let call = client
        .go::<_, i64>("Arith.Sum", &Args { num1: 2, num2: 2 })
        .unwrap();
    let t0 = Instant::now();
    let got = loop {
        if let Some(r) = call.try_wait() {
            break r;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "no reply");
        std::thread::yield_now();
    };
    assert_eq!(got.unwrap(), 4);
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || tx.send(call.wait_timeout(Duration::from_secs(60)).is_err()));
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(true));
}

/// Many large calls in flight both ways fill both sockets' buffers; the
/// threads that read (client and server) never block writing, so neither
/// side stops reading and everything completes.
#[test]
fn large_pipelined_calls_in_both_directions_complete() {
    init_log();
    let running = start_server();
    for codec in [Codec::Json, Codec::MsgPack] {
        let client = Client::builder().codec(codec).dial(running.addr()).unwrap();
        let t0 = Instant::now();
        std::thread::scope(|scope| {
            for t in 0..24u8 {
                let client = client.clone();
                scope.spawn(move || {
                    let big = Value::String(((b'a' + t) as char).to_string().repeat(1 << 20));
                    for _ in 0..2 {
                        let back: Value = client.call("Echo.Echo", &big).unwrap();
                        assert!(back == big, "echo of caller {t}");
                    }
                });
            }
        });
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{codec}: {:?}",
            t0.elapsed()
        );
    }
}

/// Each connection's thread keeps the method it found last: a call to
/// another method, to a service registered since, or to a name that does
/// not exist, right after it, still reaches what it names.
#[test]
fn calls_alternating_between_methods_on_one_connection_each_reach_their_own() {
    let server = Server::new();
    let h = start_with(server.clone());
    let c = Client::dial(h.addr()).unwrap();
    let args = Args { num1: 3, num2: 4 };
    let sum = |c: &Client| c.call::<_, i64>("Arith.Sum", &args);
    let echo = |c: &Client, v: i64| c.call::<_, Value>("Echo.Echo", &v);
    let double = |c: &Client| c.call::<_, i64>("Late.Double", &args);
    let remote_text = |e: geerpc::Error| match e {
        geerpc::Error::Remote { message, .. } => message,
        other => panic!("not a remote error: {other:?}"),
    };
    // A service that does not exist yet, then one registered after the
    // server started listening.
    let missing = remote_text(double(&c).unwrap_err());
    assert!(missing.contains("Late"), "{missing}");
    for round in 0..3 {
        assert_eq!(sum(&c).unwrap(), 7, "round {round}");
        assert_eq!(sum(&c).unwrap(), 7, "round {round}, same method again");
        assert_eq!(
            echo(&c, round).unwrap(),
            Value::from(round),
            "round {round}"
        );
        let e = remote_text(c.call::<_, i64>("Arith.Nope", &args).unwrap_err());
        assert!(e.contains("Nope"), "round {round}: {e}");
        // The name differs from the last one found only in its last byte.
        let e = remote_text(c.call::<_, i64>("Arith.Sun", &args).unwrap_err());
        assert!(e.contains("Sun"), "round {round}: {e}");
        assert_eq!(sum(&c).unwrap(), 7, "round {round}, after a miss");
        // The client's side: each call names its own method (this thread
        // keeps its last name for the next call), in the call, in a remote
        // error and in a reply that does not decode.
        let call = c.go::<_, i64>("Arith.Nope", &args).unwrap();
        assert_eq!(call.service_method(), "Arith.Nope");
        match call.wait().unwrap_err() {
            geerpc::Error::Remote { method, .. } => assert_eq!(method, "Arith.Nope"),
            other => panic!("round {round}: not a remote error: {other:?}"),
        }
        let call = c.go::<_, String>("Arith.Sum", &args).unwrap();
        assert_eq!(call.service_method(), "Arith.Sum");
        let e = call.wait().unwrap_err().to_string();
        assert!(e.contains("reply of Arith.Sum"), "round {round}: {e}");
        if round == 0 {
            server
                .register(
                    Service::new("Late").method("Double", |a: Args| Ok::<_, String>(2 * a.num1)),
                )
                .unwrap();
        }
        if round > 0 {
            assert_eq!(double(&c).unwrap(), 6, "round {round}");
        }
    }
}
