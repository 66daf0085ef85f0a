//! Bad input from a peer: bad handshakes, bad calls, malformed, oversized
//! and deeply nested frames, a half-open peer. Each closes or answers only
//! its own connection; the server keeps serving.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;
use geerpc::{Client, Error, Server, Service};
use serde::Deserialize;

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
        "{\"MagicNumber\":3882844,\"CodecType\":\"application/protobuf\"}\n",
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
    // raw_connect's read timeout (10 s) would also end the read with n = 0:
    // staying under it tells the server's close from our own give-up. (3 s
    // was once exceeded with both cores saturated.)
    assert!(t0.elapsed() < Duration::from_secs(9));
    assert_still_serves(&running);
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
