//! A server's life: registering services, and shutdown (calls in flight
//! let finish or failed, a handler stopping its own server, no thread left).

mod common;

use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use common::*;
use geerpc::server::ServerHandle;
use geerpc::{Client, Error, Server, Service};

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
