//! Core RPC: codecs, multiplexing, timeouts, bad input, shutdown.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use common::*;
use geerpc::server::ServerHandle;
use geerpc::{Client, Codec, Error, Server, Service};
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

fn raw_connect(addr: &geerpc::Address) -> TcpStream {
    let s = TcpStream::connect(addr.target()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
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

/// A reply type whose `Deserialize` panics, as a user's hand-written one
/// might.
#[derive(Debug)]
struct Explodes;

impl<'de> Deserialize<'de> for Explodes {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        panic!("this reply type panics on purpose")
    }
}

#[test]
fn a_reply_type_that_panics_fails_its_call_and_the_connection_goes_on() {
    init_log();
    let running = start_server();
    let client = Client::dial(running.addr()).unwrap();
    let args = Args { num1: 1, num2: 2 };
    // Once read by the calling thread, once by the reader thread.
    let led = client.call::<_, Explodes>("Arith.Sum", &args);
    assert!(matches!(led, Err(Error::Decode { .. })), "{led:?}");
    let timed = client.call_timeout::<_, Explodes>("Arith.Sum", &args, Duration::from_secs(5));
    match timed {
        Err(e @ Error::Decode { .. }) => assert!(e.to_string().contains("Arith.Sum"), "{e}"),
        other => panic!("expected a decode error, got {other:?}"),
    }
    let sum: i64 = client
        .call_timeout("Arith.Sum", &args, Duration::from_secs(5))
        .unwrap();
    assert_eq!(sum, 3);
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
fn handle_timeout_is_answered_at_the_deadline() {
    init_log();
    let running = start_server();
    for codec in [Codec::Json, Codec::MsgPack] {
        let client = Client::builder()
            .codec(codec)
            .handle_timeout(Some(Duration::from_millis(200)))
            .dial(running.addr())
            .unwrap();
        let t0 = Instant::now();
        let err = client
            .call::<_, i64>(
                "Arith.SleepMs",
                &Args {
                    num1: 2000,
                    num2: 0,
                },
            )
            .unwrap_err();
        let took = t0.elapsed();
        // Not the handler's 2 s; the bound leaves room for a loaded machine.
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_millis(1000),
            "timeout error after {took:?}"
        );
        match &err {
            Error::Remote { message, .. } => assert_eq!(
                message,
                "rpc server: request handle timeout: expect within 200ms"
            ),
            other => panic!("expected a remote handle-timeout error, got {other:?}"),
        }
        // The late reply is dropped by the server; the connection still works.
        let sum: i64 = client
            .call("Arith.Sum", &Args { num1: 1, num2: 1 })
            .unwrap();
        assert_eq!(sum, 2);
    }
}

#[test]
fn a_call_timeout_frees_the_slot_and_the_client_stays_usable() {
    init_log();
    let running = start_server();
    let client = Client::dial(running.addr()).unwrap();
    let t0 = Instant::now();
    let err = client
        .call_timeout::<_, i64>(
            "Arith.SleepMs",
            &Args {
                num1: 1000,
                num2: 0,
            },
            Duration::from_millis(50),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(
        t0.elapsed() < Duration::from_millis(800),
        "{:?}",
        t0.elapsed()
    );
    assert!(err.to_string().contains("Arith.SleepMs"), "{err}");
    // The late reply arrives while this call waits and is discarded.
    let sum: i64 = client
        .call(
            "Arith.SleepMs",
            &Args {
                num1: 1200,
                num2: 1,
            },
        )
        .unwrap();
    assert_eq!(sum, 1201);
    let sum: i64 = client
        .call("Arith.Sum", &Args { num1: 2, num2: 2 })
        .unwrap();
    assert_eq!(sum, 4);
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

/// A fake server that reads the handshake and part of a call, then dies.
fn dying_server() -> (
    String,
    std::thread::JoinHandle<()>,
    crossbeam_channel::Sender<()>,
) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("tcp@{}", l.local_addr().unwrap());
    let (kill_tx, kill_rx) = crossbeam_channel::bounded::<()>(1);
    let h = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let _ = kill_rx.recv();
        drop(r); // the process "dies": its socket closes
    });
    (addr, h, kill_tx)
}

#[test]
fn pending_calls_fail_promptly_when_the_server_dies() {
    init_log();
    let (addr, h, kill) = dying_server();
    let client = Client::dial(&addr).unwrap();
    let calls: Vec<_> = (0..5)
        .map(|i| {
            client
                .go::<_, i64>("Arith.Sum", &Args { num1: i, num2: 0 })
                .unwrap()
        })
        .collect();
    let blocking = {
        let c = client.clone();
        std::thread::spawn(move || c.call::<_, i64>("Arith.Sum", &Args { num1: 1, num2: 1 }))
    };
    // Whether or not the calls reached the peer before it dies, each must
    // end with an error.
    let t0 = Instant::now();
    kill.send(()).unwrap();
    for c in calls {
        let err = c.wait_timeout(Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, Error::ConnectionClosed { .. }), "{err:?}");
    }
    // This one may not have been sent before the peer died.
    let err = blocking.join().unwrap().unwrap_err();
    assert!(
        matches!(err, Error::ConnectionClosed { .. } | Error::NotSent { .. }),
        "{err:?}"
    );
    // Not the 5 s the waits allow.
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    // Later calls fail at once, and say they were not sent.
    let err = client
        .call::<_, i64>("Arith.Sum", &Args { num1: 1, num2: 1 })
        .unwrap_err();
    assert!(matches!(err, Error::NotSent { .. }), "{err:?}");
    assert!(err.is_not_sent());
    assert!(
        err.to_string().contains("closed") && err.to_string().contains("Arith.Sum"),
        "{err}"
    );
    assert!(!client.is_alive());
    h.join().unwrap();
}

#[test]
fn the_real_server_shut_down_mid_call_fails_pending_calls() {
    let server = Server::builder().shutdown_grace(Duration::ZERO).build();
    let (running, started) = start_gated(server);
    let client = Client::dial(running.addr()).unwrap();
    let slow = hold_started(&client, &started, 10_000);
    let t0 = Instant::now();
    std::thread::spawn(move || running.shutdown());
    let err = slow.wait_timeout(Duration::from_secs(15)).unwrap_err();
    assert!(matches!(err, Error::ConnectionClosed { .. }), "{err:?}");
    // Not the handler's 10 s.
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
}

/// Sends `bytes` on a fresh connection; returns everything the server sent
/// back before closing (the server must close within the test timeout).
fn send_raw(addr: &geerpc::Address, bytes: &[u8]) -> Vec<u8> {
    let mut s = raw_connect(addr);
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

const JSON_OPTION: &str = "{\"MagicNumber\":3882844,\"CodecType\":\"application/json\"}\n";

fn assert_still_serves(running: &geerpc::server::ServerHandle) {
    let c = Client::dial(running.addr()).unwrap();
    let sum: i64 = c.call("Arith.Sum", &Args { num1: 20, num2: 22 }).unwrap();
    assert_eq!(sum, 42);
}

#[test]
fn bad_handshakes_close_the_connection_and_the_server_keeps_serving() {
    init_log();
    let running = start_server();
    for bad in [
        "{\"MagicNumber\":1234,\"CodecType\":\"application/json\"}\n",
        "{\"MagicNumber\":3882844,\"CodecType\":\"application/gob\"}\n",
        "{\"MagicNumber\":\"nope\"}\n",
        "\u{1}\u{2}garbage",
    ] {
        let back = send_raw(running.addr(), bad.as_bytes());
        assert!(back.is_empty(), "{bad:?} got {back:?}");
        assert_still_serves(&running);
    }
}

#[test]
fn bad_calls_get_an_error_reply_and_the_connection_keeps_serving() {
    init_log();
    let running = start_server();
    let client = Client::dial(running.addr()).unwrap();
    let cases = [
        ("Arith.Nope", "can't find method Nope"),
        ("Nope.Sum", "can't find service Nope"),
        ("NoDot", "ill-formed"),
    ];
    for (method, want) in cases {
        let err = client
            .call::<_, i64>(method, &Args { num1: 1, num2: 1 })
            .unwrap_err();
        match err {
            Error::Remote { message, .. } => assert!(message.contains(want), "{method}: {message}"),
            other => panic!("{method}: {other:?}"),
        }
    }
    // A body that does not decode: the method is not run.
    let err = client.call::<_, i64>("Arith.Sum", &"not args").unwrap_err();
    match err {
        Error::Remote { message, .. } => {
            assert!(message.contains("cannot decode argument"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // The handler's own error and a handler panic.
    let err = client
        .call::<_, i64>("Arith.Fail", &Args { num1: 1, num2: 1 })
        .unwrap_err();
    assert_eq!(err.to_string(), "boom: it failed");
    let err = client
        .call::<_, i64>("Arith.Panic", &Args { num1: 1, num2: 1 })
        .unwrap_err();
    assert!(err.to_string().contains("panicked"), "{err}");
    let sum: i64 = client
        .call("Arith.Sum", &Args { num1: 1, num2: 1 })
        .unwrap();
    assert_eq!(sum, 2);
    let stats = running.server().services();
    let arith = stats.iter().find(|s| s.name == "Arith").unwrap();
    let sum_stats = arith
        .methods
        .iter()
        .find(|m| m.name == "Sum")
        .unwrap()
        .stats;
    assert_eq!((sum_stats.calls, sum_stats.errors), (2, 1));
}

#[test]
fn malformed_and_oversized_frames_close_only_their_connection() {
    init_log();
    let server = Server::builder().max_message_size(64 * 1024).build();
    server
        .register(Service::new("Big").method("Make", |n: usize| Ok::<_, String>("x".repeat(n))))
        .unwrap();
    let running = start_with(server);
    let bystander = Client::dial(running.addr()).unwrap();
    // A header that is not a header.
    let back = send_raw(
        running.addr(),
        format!("{JSON_OPTION}[1,2]\n{{}}\n").as_bytes(),
    );
    assert!(back.is_empty());
    // A frame that is not JSON at all.
    let back = send_raw(running.addr(), format!("{JSON_OPTION}}}}}").as_bytes());
    assert!(back.is_empty());
    // An oversized body: closed before it is read whole.
    let mut big =
        format!("{JSON_OPTION}{{\"ServiceMethod\":\"Echo.Echo\",\"Seq\":1}}\n\"").into_bytes();
    big.extend(std::iter::repeat_n(b'a', 100 * 1024));
    big.extend(b"\"\n");
    let back = send_raw(running.addr(), &big);
    assert!(back.is_empty(), "{:?}", String::from_utf8_lossy(&back));
    // A MessagePack body claiming 4 GiB.
    let mut claim = b"{\"MagicNumber\":3882844,\"CodecType\":\"application/msgpack\"}\n".to_vec();
    claim.extend([0x83, 0xad]);
    claim.extend(b"ServiceMethod");
    claim.extend([0xa9]);
    claim.extend(b"Echo.Echo");
    claim.extend([0xa3]);
    claim.extend(b"Seq");
    claim.extend([0x01, 0xa5]);
    claim.extend(b"Error");
    claim.extend([0xa0, 0xc6, 0xff, 0xff, 0xff, 0xff]);
    let back = send_raw(running.addr(), &claim);
    assert!(back.is_empty());
    // The bystander and new connections are unharmed.
    let sum: i64 = bystander
        .call("Arith.Sum", &Args { num1: 1, num2: 2 })
        .unwrap();
    assert_eq!(sum, 3);
    assert_still_serves(&running);
    // An oversized reply becomes an error reply for that call only.
    let err = bystander
        .call::<_, String>("Big.Make", &100_000usize)
        .unwrap_err();
    match &err {
        Error::Remote { message, .. } => {
            assert!(message.contains("exceeds the limit"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // An oversized request is refused before it is sent.
    let small = Client::builder()
        .max_message_size(1024)
        .dial(running.addr())
        .unwrap();
    let err = small
        .call::<_, String>("Echo.Echo", &"c".repeat(2048))
        .unwrap_err();
    assert!(matches!(err, Error::MessageTooLarge { .. }), "{err:?}");
    let sum: i64 = small.call("Arith.Sum", &Args { num1: 2, num2: 2 }).unwrap();
    assert_eq!(sum, 4);
}

#[test]
fn a_half_open_peer_is_dropped_after_the_handshake_timeout() {
    init_log();
    let server = Server::builder()
        .handshake_timeout(Duration::from_millis(200))
        .build();
    let running = start_with(server);
    let t0 = Instant::now();
    let mut s = raw_connect(running.addr());
    let mut buf = [0u8; 1];
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the server closes a silent connection");
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert_still_serves(&running);
}

#[test]
fn connect_errors_name_the_address_and_timeout() {
    // Nothing listens on a port just released.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("tcp@127.0.0.1:{port}");
    let err = Client::dial(&addr).map(|_| ()).unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains(&addr), "{err}");
    // The connect timeout covers the CONNECT exchange too: a loopback
    // listener that accepts and never answers makes it run out.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http@{}", silent.local_addr().unwrap());
    let t0 = Instant::now();
    let err = Client::builder()
        .connect_timeout(Some(Duration::from_millis(150)))
        .dial(&addr)
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(err, Error::ConnectTimeout { .. }), "{err:?}");
    assert!(t0.elapsed() < Duration::from_secs(2));
    let text = err.to_string();
    assert!(text.contains(&addr) && text.contains("150ms"), "{text}");
    // Not an address at all: refused before any dial, naming what it got.
    let err = Client::dial("localhost").map(|_| ()).unwrap_err();
    assert!(matches!(err, Error::InvalidAddress { .. }), "{err:?}");
    assert!(err.to_string().contains("localhost"), "{err}");
}

#[test]
fn registering_a_duplicate_or_invalid_service_is_an_error() {
    let server = Server::new();
    server.register(arith()).unwrap();
    assert!(matches!(
        server.register(arith()),
        Err(Error::DuplicateService(_))
    ));
    assert!(matches!(
        server.register(Service::new("Bad.Name")),
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        server.register(Service::new("Ok").method("", |x: i32| Ok::<_, String>(x))),
        Err(Error::InvalidName { .. })
    ));
}

#[test]
fn shutdown_lets_calls_in_flight_finish_then_leaves_no_thread() {
    init_log();
    let server = Server::builder()
        .shutdown_grace(Duration::from_secs(5))
        .build();
    let (running, started) = start_gated(server);
    let running = Arc::new(running);
    let client = Client::dial(running.addr()).unwrap();
    let calls: Vec<_> = (0..4)
        .map(|i| {
            client
                .go::<_, i64>("Gate.Hold", &Args { num1: 300, num2: i })
                .unwrap()
        })
        .collect();
    for _ in 0..4 {
        started
            .recv_timeout(Duration::from_secs(5))
            .expect("all four calls start");
    }
    assert!(running.live_threads() > 0);
    running.shutdown();
    for (i, c) in calls.into_iter().enumerate() {
        assert_eq!(
            c.wait_timeout(Duration::from_secs(5)).unwrap(),
            300 + i as i64
        );
    }
    assert_eq!(running.live_threads(), 0);
    // New connections are refused once shut down.
    assert!(Client::builder()
        .connect_timeout(Some(Duration::from_secs(1)))
        .dial(running.addr())
        .and_then(|c| c.call::<_, i64>("Arith.Sum", &Args { num1: 1, num2: 1 }))
        .is_err());
}

/// A handler stops its own server while another connection's call runs:
/// the stopping call is answered, the other call finishes, and then the
/// stopping call's connection is closed and every thread has ended.
/// `steal_after`: how soon the monitor hands reading to another thread (a
/// short one makes the handler's thread bow out before it returns; a long
/// one keeps it the reader). `handle_timeout`: the admin client's.
fn a_handler_stops_its_own_server(steal_after: Duration, handle_timeout: Option<Duration>) {
    init_log();
    // A grace far longer than the test may take: waiting it out (for the
    // very call that asked to stop) is the failure this test catches.
    let server = Server::builder()
        .shutdown_grace(Duration::from_secs(60))
        .steal_after(steal_after)
        .build();
    let handle: Arc<OnceLock<Weak<ServerHandle>>> = Arc::default();
    let h = handle.clone();
    server
        .register(Service::new("Admin").method("Stop", move |a: Args| {
            let running = h.get().and_then(Weak::upgrade).ok_or("no server")?;
            running.shutdown();
            Ok::<_, String>(a.num1)
        }))
        .unwrap();
    let (running, started) = start_gated(server);
    let running = Arc::new(running);
    handle.set(Arc::downgrade(&running)).unwrap();
    let addr = running.addr().to_string();
    // Another call, in flight on another connection, is let finish.
    let other = Client::dial(&addr).unwrap();
    let slow = other
        .go::<_, i64>("Gate.Hold", &Args { num1: 300, num2: 1 })
        .unwrap();
    started.recv_timeout(Duration::from_secs(5)).unwrap();
    let admin = Client::builder()
        .handle_timeout(handle_timeout)
        .dial(&addr)
        .unwrap();
    let t0 = Instant::now();
    let stopped = admin.call::<_, i64>("Admin.Stop", &Args { num1: 7, num2: 0 });
    assert_eq!(stopped.unwrap(), 7, "the stopping call is answered");
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "shutdown waited {:?} for its own call",
        t0.elapsed()
    );
    assert_eq!(slow.wait_timeout(Duration::from_secs(5)).unwrap(), 301);
    // The stopping call's connection is closed after its reply: a call on
    // it fails at once rather than waiting out its timeout unanswered.
    let after = admin.call_timeout::<_, i64>(
        "Arith.Sum",
        &Args { num1: 1, num2: 1 },
        Duration::from_secs(10),
    );
    assert!(
        matches!(&after, Err(e) if !matches!(e, Error::Timeout { .. })),
        "{after:?}"
    );
    // The handler's thread ends on its own once its reply is out.
    let give_up = Instant::now() + Duration::from_secs(5);
    while running.live_threads() > 0 && Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(running.live_threads(), 0);
    assert!(Client::builder()
        .connect_timeout(Some(Duration::from_secs(1)))
        .dial(&addr)
        .and_then(|c| c.call::<_, i64>("Arith.Sum", &Args { num1: 1, num2: 1 }))
        .is_err());
}

#[test]
fn a_handler_can_shut_its_own_server_down_and_still_answer() {
    a_handler_stops_its_own_server(Duration::from_millis(1), None);
}

#[test]
fn a_handler_still_reading_its_connection_can_shut_its_server_down() {
    a_handler_stops_its_own_server(Duration::from_secs(60), Some(Duration::from_secs(30)));
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

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireHeader {
    seq: u64,
    error: String,
}

#[test]
fn deeply_nested_msgpack_is_refused_without_harm() {
    init_log();
    let running = start_server();
    let mut s = raw_connect(running.addr());
    let mut wire = b"{\"MagicNumber\":3882844,\"CodecType\":\"application/msgpack\"}\n".to_vec();
    wire.extend([0x83, 0xad]);
    wire.extend(b"ServiceMethod");
    wire.push(0xa9);
    wire.extend(b"Echo.Echo");
    wire.push(0xa3);
    wire.extend(b"Seq");
    wire.extend([0x07, 0xa5]);
    wire.extend(b"Error");
    wire.push(0xa0);
    // 100,000 arrays inside each other: far deeper than any stack allows.
    wire.extend(std::iter::repeat_n(0x91u8, 100_000));
    wire.push(0xc0);
    s.write_all(&wire).unwrap();
    let header: WireHeader = rmp_serde::from_read(&mut s).unwrap();
    assert_eq!(header.seq, 7);
    assert!(
        header.error.contains("cannot decode argument"),
        "{}",
        header.error
    );
    assert!(header.error.contains("depth"), "{}", header.error);
    assert_still_serves(&running);
}

#[test]
fn handle_timeouts_are_on_time_even_when_the_monitor_ticks_slowly() {
    let server = Server::builder()
        .steal_after(Duration::from_secs(3))
        .build();
    let running = start_with(server);
    let client = Client::builder()
        .handle_timeout(Some(Duration::from_millis(100)))
        .dial(running.addr())
        .unwrap();
    let t0 = Instant::now();
    let err = client
        .call::<_, i64>(
            "Arith.SleepMs",
            &Args {
                num1: 5000,
                num2: 0,
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("expect within 100ms"), "{err}");
    // Not at the 3 s tick; the bound leaves room for a loaded machine.
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
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

#[test]
fn a_call_on_a_connection_the_server_closed_while_idle_is_not_sent() {
    init_log();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("tcp@{}", l.local_addr().unwrap());
    let (closed_tx, closed) = crossbeam_channel::bounded(1);
    let peer = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        drop(s);
        closed_tx.send(()).unwrap();
    });
    let client = Client::dial(&addr).unwrap();
    closed.recv_timeout(Duration::from_secs(5)).unwrap();
    peer.join().unwrap();
    // Idle past the client's idle check (100 ms): the next call looks first.
    std::thread::sleep(Duration::from_millis(300));
    let err = client
        .call::<_, i64>("Arith.Sum", &Args { num1: 1, num2: 1 })
        .unwrap_err();
    assert!(matches!(err, Error::NotSent { .. }), "{err:?}");
    assert!(err.is_not_sent());
}

/// Sends a `Gate.Hold` of `ms` milliseconds and returns once its handler
/// has started.
fn hold_started(
    client: &Client,
    started: &crossbeam_channel::Receiver<i64>,
    ms: i64,
) -> geerpc::client::Call<i64> {
    let call = client.go("Gate.Hold", &Args { num1: ms, num2: 0 }).unwrap();
    started
        .recv_timeout(Duration::from_secs(5))
        .expect("the handler starts");
    call
}
