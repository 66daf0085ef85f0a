//! A call's timeout bounds every stage of the call: waiting for the pool's
//! connection, dialling, writing the request, waiting for the reply. The
//! error names the stage and the call's own timeout. Any `Duration` is a
//! timeout, `Duration::MAX` included. A `Call` keeps its connection.
//!
//! Timing bound: the issue asks for "within 50 ms of the timeout". These
//! tests run on a 2-core machine shared with other builds, where a thread
//! may wait a scheduler slice or more to run, so each asserts the timeout
//! plus [`SLACK`]: 50 ms, plus 200 ms for the load. What they tell apart is
//! a bound kept (overshoot of a few ms when the machine is idle) from one
//! not kept at all (the call waiting out a 3 s dial or a 30 s write).

mod common;

use std::net::{TcpListener, TcpStream};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::*;
use geerpc::xclient::CallOptions;
use geerpc::{Client, Error, FailMode, MultiServerDiscovery, SelectMode, TimeoutStage, XClient};

/// How late past its timeout a call may end here (see the file's comment).
const SLACK: Duration = Duration::from_millis(250);

/// One test at a time: they measure latencies.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    init_log();
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Checks that `err` is a timeout at `stage` naming `timeout`, and that it
/// came within `timeout` + [`SLACK`] of `start`.
fn assert_timeout(err: &Error, start: Instant, timeout: Duration, stage: TimeoutStage) {
    let took = start.elapsed();
    eprintln!("{stage:?} timeout {timeout:?}: ended after {took:?}: {err}");
    match err {
        Error::Timeout {
            timeout: t,
            stage: s,
            ..
        } => {
            assert_eq!(*s, stage, "{err}");
            assert_eq!(*t, timeout, "the call's own timeout is named: {err}");
        }
        other => panic!("expected a timeout at {stage:?}, got {other:?}"),
    }
    assert!(
        took + Duration::from_millis(2) >= timeout,
        "early: {took:?}"
    );
    assert!(
        took <= timeout + SLACK,
        "{took:?} for a {timeout:?} timeout"
    );
}

/// A listener that accepts connections and never reads or answers them;
/// each accept is reported on the returned channel. Holds the sockets for
/// as long as the listener thread runs (until the test process ends).
fn silent_listener() -> (String, crossbeam_channel::Receiver<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        let mut held: Vec<TcpStream> = Vec::new();
        for s in l.incoming() {
            let Ok(s) = s else { break };
            held.push(s);
            if tx.send(()).is_err() {
                break;
            }
        }
    });
    (format!("127.0.0.1:{port}"), rx)
}

/// A client for [`big_blob`]s: MessagePack, so that encoding one is a copy
/// (JSON would spend seconds of the call's time in a debug build).
fn big_client(addr: &str) -> Client {
    Client::builder()
        .codec(geerpc::Codec::MsgPack)
        .max_message_size(64 << 20)
        .dial(addr)
        .unwrap()
}

/// More than loopback's socket buffers on both ends hold.
fn big_blob() -> serde_bytes::ByteBuf {
    serde_bytes::ByteBuf::from(vec![7u8; 8 << 20])
}

#[test]
fn reply_stage_a_slow_handler() {
    let _s = serial();
    let server = start_server();
    let client = Client::dial(server.addr()).unwrap();
    let timeout = Duration::from_millis(200);
    let t0 = Instant::now();
    let err = client
        .call_timeout::<_, i64>(
            "Arith.SleepMs",
            &Args {
                num1: 3000,
                num2: 0,
            },
            timeout,
        )
        .unwrap_err();
    assert_timeout(&err, t0, timeout, TimeoutStage::Reply);
    let text = err.to_string();
    assert!(
        text.contains("Arith.SleepMs")
            && text.contains("while waiting for the reply")
            && text.contains("expect within 200ms"),
        "{text}"
    );
}

/// A server that never reads: the request cannot be written, and the call
/// ends at its timeout all the same (it used to block until the socket's
/// write timeout, 30 s by default).
#[test]
fn write_stage_a_server_that_never_reads() {
    let _s = serial();
    let (addr, accepted) = silent_listener();
    let client = big_client(&format!("tcp@{addr}"));
    accepted.recv_timeout(Duration::from_secs(5)).unwrap();
    let big = big_blob();
    let timeout = Duration::from_millis(200);
    let t0 = Instant::now();
    let err = client
        .call_timeout::<_, usize>("Blob.Len", &big, timeout)
        .unwrap_err();
    assert_timeout(&err, t0, timeout, TimeoutStage::Write);
    assert!(
        err.to_string().contains("while writing the request"),
        "{err}"
    );
    // A second caller, queued behind the unwritten request, is bounded too.
    let t0 = Instant::now();
    let err = client
        .call_timeout::<_, i64>("Arith.Sum", &Args { num1: 1, num2: 2 }, timeout)
        .unwrap_err();
    assert_timeout(&err, t0, timeout, TimeoutStage::Write);
    // Closing does not wait on the blocked writer for long.
    let t0 = Instant::now();
    drop(client);
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
}

/// An XClient call with a short timeout, behind another caller dialling
/// the same instance: it waits for that dial only until its own deadline
/// (it used to wait for the whole dial, under the pool's lock).
#[test]
fn pool_wait_stage_behind_a_slow_dial() {
    let _s = serial();
    // `http@`: the dial waits for the CONNECT reply, which never comes.
    let (addr, accepted) = silent_listener();
    let xc = XClient::builder(MultiServerDiscovery::new([format!("http@{addr}")]))
        .client(Client::builder().connect_timeout(Some(Duration::from_secs(3))))
        .build();
    std::thread::scope(|scope| {
        let slow = scope.spawn(|| {
            let t0 = Instant::now();
            let r = xc.call_timeout::<_, i64>(
                "Arith.Sum",
                &Args { num1: 1, num2: 2 },
                Duration::from_secs(2),
            );
            (r, t0.elapsed())
        });
        accepted.recv_timeout(Duration::from_secs(5)).unwrap();
        let timeout = Duration::from_millis(100);
        let t0 = Instant::now();
        let err = xc
            .call_timeout::<_, i64>("Arith.Sum", &Args { num1: 1, num2: 2 }, timeout)
            .unwrap_err();
        assert_timeout(&err, t0, timeout, TimeoutStage::PoolWait);
        assert!(
            err.to_string().contains("expect within 100ms"),
            "the call's timeout, not the dial's: {err}"
        );
        // The leader's own dial ends at its own (2 s) deadline, at the
        // dial stage, naming its timeout; the instance is not blamed.
        let (r, took) = slow.join().unwrap();
        let err = r.unwrap_err();
        assert!(
            matches!(err, Error::Timeout { stage: TimeoutStage::Dial, timeout, .. }
                if timeout == Duration::from_secs(2)),
            "{err}"
        );
        assert!(took < Duration::from_secs(2) + SLACK, "{took:?}");
    });
    assert!(xc.evicted().is_empty(), "{:?}", xc.evicted());
}

/// An XCall waited for names the XClient's timeout, not the time left
/// when the wait began.
#[test]
fn an_xcall_names_the_call_timeout() {
    let _s = serial();
    let server = start_server();
    let timeout = Duration::from_millis(200);
    let xc = XClient::builder(MultiServerDiscovery::new([server.addr().to_string()]))
        .timeout(Some(timeout))
        .build();
    let t0 = Instant::now();
    let call = xc
        .go::<_, i64>(
            "Arith.SleepMs",
            &Args {
                num1: 1000,
                num2: 0,
            },
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let err = call.wait().unwrap_err();
    assert_timeout(&err, t0, timeout, TimeoutStage::Reply);
}

/// Connect plus handshake end by the call's deadline when it comes before
/// the connect timeout; the error names the call's timeout.
#[test]
fn dial_stage_bounded_by_the_call() {
    let _s = serial();
    let (addr, _accepted) = silent_listener();
    let xc = XClient::builder(MultiServerDiscovery::new([format!("http@{addr}")]))
        .client(Client::builder().connect_timeout(Some(Duration::from_secs(10))))
        .build();
    let timeout = Duration::from_millis(150);
    let t0 = Instant::now();
    let err = xc
        .call_timeout::<_, i64>("Arith.Sum", &Args { num1: 1, num2: 2 }, timeout)
        .unwrap_err();
    assert_timeout(&err, t0, timeout, TimeoutStage::Dial);
    assert!(err.to_string().contains("while dialling"), "{err}");
    assert!(xc.evicted().is_empty(), "{:?}", xc.evicted());
}

#[test]
fn duration_max_is_no_deadline() {
    let _s = serial();
    let server = start_server();
    let addr = server.addr().to_string();
    let args = Args { num1: 20, num2: 2 };
    let client = Client::builder()
        .connect_timeout(Some(Duration::MAX))
        .handle_timeout(Some(Duration::MAX))
        .write_timeout(Duration::MAX)
        .dial(&addr)
        .unwrap();
    let v: i64 = client
        .call_timeout("Arith.SleepMs", &args, Duration::MAX)
        .unwrap();
    assert_eq!(v, 22);
    let call = client.go::<_, i64>("Arith.SleepMs", &args).unwrap();
    assert_eq!(call.wait_timeout(Duration::MAX).unwrap(), 22);

    let xc = XClient::builder(MultiServerDiscovery::new([addr.as_str()]))
        .select_mode(SelectMode::RoundRobin)
        .client(Client::builder().connect_timeout(Some(Duration::MAX)))
        .timeout(Some(Duration::MAX))
        .eviction_backoff(Duration::MAX, Duration::MAX)
        .build();
    assert_eq!(xc.call::<_, i64>("Arith.SleepMs", &args).unwrap(), 22);
    let opts = CallOptions::new()
        .timeout(Duration::MAX)
        .idempotent(true)
        .fail_mode(FailMode::Failbackup {
            after: Duration::MAX,
        });
    assert_eq!(
        xc.call_with::<_, i64>("Arith.SleepMs", &args, &opts)
            .unwrap(),
        22
    );
    let opts = CallOptions::new().timeout(Duration::MAX);
    assert_eq!(
        xc.broadcast_with::<_, i64>("Arith.SleepMs", &args, &opts)
            .unwrap(),
        22
    );
    let call = xc.go_with::<_, i64>("Arith.SleepMs", &args, &opts).unwrap();
    assert_eq!(call.wait().unwrap(), 22);
    // An eviction (a refused dial) and its probe with a back-off of
    // `Duration::MAX`: the instance stays out, nothing panics.
    drop(server);
    let gone = XClient::builder(MultiServerDiscovery::new([addr.as_str()]))
        .eviction_backoff(Duration::MAX, Duration::MAX)
        .build();
    assert!(gone.call::<_, i64>("Arith.Sum", &args).is_err());
    assert_eq!(gone.evicted(), vec![addr.clone()]);
    assert!(gone.call::<_, i64>("Arith.Sum", &args).is_err());
}

/// Dropping every `Client` clone while a call is out leaves the connection
/// open until the call completes.
#[test]
fn a_call_keeps_its_connection_alive() {
    let _s = serial();
    let (server, started) = start_gated(geerpc::Server::new());
    let client = Client::dial(server.addr()).unwrap();
    let call = client
        .go::<_, i64>("Gate.Hold", &Args { num1: 100, num2: 7 })
        .unwrap();
    started.recv_timeout(Duration::from_secs(5)).unwrap();
    drop(client);
    assert_eq!(call.wait_timeout(Duration::from_secs(10)).unwrap(), 107);
}

/// The same with a call waited for through its channel.
#[test]
fn a_selected_call_keeps_its_connection_alive() {
    let _s = serial();
    let (server, started) = start_gated(geerpc::Server::new());
    let client = Client::dial(server.addr()).unwrap();
    let call = client
        .go::<_, i64>("Gate.Hold", &Args { num1: 100, num2: 8 })
        .unwrap();
    started.recv_timeout(Duration::from_secs(5)).unwrap();
    drop(client);
    let got = call
        .receiver()
        .recv_timeout(Duration::from_secs(10))
        .unwrap();
    assert_eq!(got.unwrap(), 108);
}

/// After a call timed out writing, its request is still whole in the
/// stream: once the peer reads again, the connection carries later calls.
#[test]
fn a_write_timeout_leaves_the_stream_whole() {
    let _s = serial();
    let server = geerpc::Server::builder().max_message_size(64 << 20).build();
    server.register(arith()).unwrap();
    server
        .register(
            geerpc::Service::new("Blob")
                .method("Len", |b: serde_bytes::ByteBuf| Ok::<_, String>(b.len())),
        )
        .unwrap();
    let server = server.listen("tcp@127.0.0.1:0").unwrap();
    let target = server.addr().to_string();
    let target = target.trim_start_matches("tcp@").to_string();
    // A relay that forwards client to server only once released.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let relay = format!("tcp@{}", l.local_addr().unwrap());
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(1);
    std::thread::spawn(move || {
        let (mut from_client, _) = l.accept().unwrap();
        let mut to_server = TcpStream::connect(&target).unwrap();
        let (mut c2, mut s2) = (
            from_client.try_clone().unwrap(),
            to_server.try_clone().unwrap(),
        );
        std::thread::spawn(move || std::io::copy(&mut s2, &mut c2));
        let _ = release_rx.recv();
        let _ = std::io::copy(&mut from_client, &mut to_server);
    });
    let client = big_client(&relay);
    let big = big_blob();
    let timeout = Duration::from_millis(200);
    let t0 = Instant::now();
    let err = client
        .call_timeout::<_, usize>("Blob.Len", &big, timeout)
        .unwrap_err();
    assert_timeout(&err, t0, timeout, TimeoutStage::Write);
    release_tx.send(()).unwrap();
    let v: i64 = client
        .call_timeout(
            "Arith.Sum",
            &Args { num1: 40, num2: 2 },
            Duration::from_secs(20),
        )
        .unwrap();
    assert_eq!(v, 42);
    assert!(client.is_alive());
}

/// A call without a timeout to a server that takes no bytes ends when the
/// connection is given up after the write timeout, counted from the last
/// byte the server took (a per-write socket timeout restarted with each
/// partial write and held such a call several times as long).
#[test]
fn a_server_that_takes_no_bytes_is_given_up_after_the_write_timeout() {
    let _s = serial();
    let (addr, accepted) = silent_listener();
    let write_timeout = Duration::from_millis(300);
    let client = Client::builder()
        .codec(geerpc::Codec::MsgPack)
        .max_message_size(64 << 20)
        .write_timeout(write_timeout)
        .dial(format!("tcp@{addr}"))
        .unwrap();
    accepted.recv_timeout(Duration::from_secs(5)).unwrap();
    let t0 = Instant::now();
    let err = client
        .call::<_, usize>("Blob.Len", &big_blob())
        .unwrap_err();
    let took = t0.elapsed();
    eprintln!("write timeout {write_timeout:?}: ended after {took:?}: {err}");
    assert!(
        matches!(&err, Error::ConnectionClosed { reason, .. } if reason.contains("write timeout")),
        "{err}"
    );
    assert!(took >= write_timeout, "{took:?}");
    assert!(took <= write_timeout + SLACK, "{took:?}");
    assert!(!client.is_alive());
}
