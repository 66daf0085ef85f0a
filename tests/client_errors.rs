//! What a client sees when a call goes wrong: timeouts (its own and the
//! server's handle timeout), connect errors, a reply that fails to decode,
//! and a server that dies or closed the connection.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::*;
use geerpc::{Client, Codec, Error, Server};
use serde::Deserialize;

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
