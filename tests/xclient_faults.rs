//! XClient when instances fail or are slow: broadcast, fork and inform,
//! the fail modes (failover, failbackup, failtry), eviction of a dead
//! instance and its return, and close leaving no thread behind.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use geerpc::xclient::CallOptions;
use geerpc::{Client, Error, FailMode, MultiServerDiscovery, SelectMode, Service, XClient};

fn p99(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[(samples.len() * 99 / 100).min(samples.len() - 1)]
}

#[test]
fn broadcast_returns_the_first_error_promptly() {
    let _g = serial();
    let ns = nodes(4);
    let xc = XClient::new(discovery(&ns), SelectMode::Random);

    let all: String = xc.broadcast("Who.Am", &ARGS).unwrap();
    assert!(ns.iter().any(|n| n.addr == all));
    assert!(
        ns.iter().all(|n| n.hits() == 1),
        "every instance gets the broadcast"
    );

    let informed: HashMap<String, geerpc::Result<String>> = xc.inform("Who.Am", &ARGS).unwrap();
    assert_eq!(informed.len(), 4);
    for n in &ns {
        assert_eq!(informed[&n.addr].as_ref().unwrap(), &n.addr);
    }

    ns[1].fail.store(true, Ordering::SeqCst);
    ns[2].delay_ms.store(1500, Ordering::SeqCst);
    let t = Instant::now();
    let err = xc.broadcast::<_, String>("Who.Am", &ARGS).unwrap_err();
    let took = t.elapsed();
    assert!(matches!(err, Error::Remote { .. }), "{err:?}");
    assert!(err.to_string().contains(&ns[1].addr), "{err}");
    assert!(
        took < Duration::from_millis(1000),
        "broadcast took {took:?}"
    );

    // fork: the first success wins, the failing and the slow one do not matter.
    let t = Instant::now();
    let won: String = xc.fork("Who.Am", &ARGS).unwrap();
    assert!(won == ns[0].addr || won == ns[3].addr, "{won}");
    assert!(t.elapsed() < Duration::from_millis(1000));
}

#[test]
fn broadcast_under_a_timeout_returns_at_the_timeout() {
    let _g = serial();
    let ns = nodes(4);
    // Every instance holds the call until released (the channel dropped),
    // or for `HOLD` at most: the broadcast can only end in time by its
    // timeout, however slowly a loaded machine runs the handlers (a
    // handler that slept a fixed 1.6 s could finish first and answer).
    const HOLD: Duration = Duration::from_secs(30);
    // How late past its timeout it may return on a loaded machine; well
    // short of `HOLD`, so a broadcast that waits for its calls still fails.
    const SLACK: Duration = Duration::from_secs(3);
    let (release, held) = crossbeam_channel::bounded::<()>(0);
    for n in &ns {
        let held = held.clone();
        let hold = Service::new("Hold").method("Until", move |_: Args| {
            let _ = held.recv_timeout(HOLD);
            Ok::<_, String>(0i64)
        });
        n.handle.server().register(hold).unwrap();
    }
    let timeout = Duration::from_secs(1);
    let xc = XClient::builder(discovery(&ns))
        .timeout(Some(timeout))
        .build();
    let t = Instant::now();
    let err = xc.broadcast::<_, i64>("Hold.Until", &ARGS).unwrap_err();
    let took = t.elapsed();
    assert!(
        matches!(err, Error::Timeout { timeout: t, .. } if t == timeout),
        "{err:?}"
    );
    assert!(
        took >= Duration::from_millis(990),
        "returned early: {took:?}"
    );
    assert!(took < timeout + SLACK, "returned late: {took:?}");
    // The abandoned calls, still held, left the client usable: a quick
    // call still works.
    let sum: i64 = xc.call("Arith.Sum", &Args { num1: 1, num2: 2 }).unwrap();
    assert_eq!(sum, 3);
    drop(release);
}

#[test]
fn failover_keeps_every_call_succeeding_while_a_server_goes_down() {
    let _g = serial();
    let ns = nodes(3);
    let xc = XClient::builder(discovery(&ns))
        .select_mode(SelectMode::RoundRobin)
        .fail_mode(FailMode::Failover { retries: 2 })
        .idempotent(true)
        .timeout(Some(Duration::from_secs(10)))
        .build();
    let done = AtomicUsize::new(0);
    let failures: Mutex<Vec<Error>> = Mutex::new(Vec::new());
    // Sent when a quarter of the calls are done: time to kill a server.
    let (quarter_tx, quarter_rx) = crossbeam_channel::bounded::<()>(1);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..150 {
                    match xc.call::<_, i64>("Arith.Sum", &Args { num1: 2, num2: 3 }) {
                        Ok(5) => {}
                        Ok(other) => panic!("wrong sum {other}"),
                        Err(e) => failures.lock().unwrap().push(e),
                    }
                    if done.fetch_add(1, Ordering::SeqCst) + 1 == 150 {
                        let _ = quarter_tx.send(());
                    }
                }
            });
        }
        s.spawn(|| {
            quarter_rx.recv_timeout(Duration::from_secs(20)).unwrap();
            ns[1].handle.shutdown();
        });
    });
    assert_eq!(ns[1].handle.live_threads(), 0, "server 1 was shut down");
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} calls failed: {:?}",
        failures.len(),
        failures.first()
    );
    assert_eq!(done.load(Ordering::SeqCst), 600);
    // It drained (PROTOCOL.md section 9): going away is not a failure.
    assert_eq!(xc.evicted(), Vec::<String>::new());
}

#[test]
fn failbackup_cuts_the_tail_a_slow_instance_causes() {
    let _g = serial();
    let ns = nodes(3);
    // The bound below tolerates a stall of half this on a loaded machine.
    ns[0].delay_ms.store(1000, Ordering::SeqCst);
    let run = |mode: FailMode| -> Duration {
        let xc = XClient::builder(discovery(&ns))
            .select_mode(SelectMode::RoundRobin)
            .fail_mode(mode)
            .idempotent(true)
            .build();
        let samples = (0..9)
            .map(|_| {
                let t = Instant::now();
                who(&xc).unwrap();
                t.elapsed()
            })
            .collect();
        p99(samples)
    };
    let fast = run(FailMode::FailFast);
    let backup = run(FailMode::Failbackup {
        after: Duration::from_millis(30),
    });
    assert!(fast >= Duration::from_millis(1000), "failfast p99 {fast:?}");
    assert!(
        backup < fast / 2,
        "failbackup p99 {backup:?} vs failfast {fast:?}"
    );
}

#[test]
fn failtry_repeats_on_the_same_instance_only_when_allowed() {
    let _g = serial();
    let ns = nodes(1);
    ns[0].fail.store(true, Ordering::SeqCst);
    let xc = XClient::builder(discovery(&ns))
        .fail_mode(FailMode::Failtry { retries: 3 })
        .idempotent(true)
        .build();
    // A service error is an answer, not a failure to reach: never retried.
    assert!(matches!(who(&xc), Err(Error::Remote { .. })));
    assert_eq!(ns[0].hits(), 1);
    // Per call: not idempotent, so even failover does not resend.
    let opts = CallOptions::new()
        .fail_mode(FailMode::Failover { retries: 3 })
        .idempotent(false);
    let err = xc
        .call_with::<_, String>("Who.Am", &ARGS, &opts)
        .unwrap_err();
    assert!(err.to_string().contains("failed on purpose"), "{err}");
    assert_eq!(ns[0].hits(), 2);
}

#[test]
fn a_dead_instance_gets_no_calls_once_its_failure_is_seen_and_comes_back() {
    let _g = serial();
    // Instance 1 dies without draining.
    let ns = vec![
        Node::start(),
        Node::listen_with_grace("tcp@127.0.0.1:0", Duration::ZERO),
        Node::start(),
    ];
    let xc = XClient::builder(discovery(&ns))
        .select_mode(SelectMode::RoundRobin)
        .eviction_backoff(Duration::from_millis(20), Duration::from_millis(100))
        .build();
    let counts = spread(&xc, 30);
    assert_eq!(counts.len(), 3);
    let dead = ns[1].addr.clone();
    ns[1].handle.shutdown();

    // Fail fast: the calls that meet the dead instance fail, until one
    // failure is seen and the instance is out.
    let mut failed = 0;
    for _ in 0..3 {
        if let Err(e) = who(&xc) {
            assert!(e.to_string().contains(&dead), "{e}");
            failed += 1;
        }
    }
    assert!(failed >= 1, "no call met the dead instance");
    assert_eq!(xc.evicted(), vec![dead.clone()]);
    // Any call sent to it now would fail.
    let counts = spread(&xc, 60);
    assert!(!counts.contains_key(&dead));
    assert_eq!(counts.values().sum::<usize>(), 60);

    // The instance comes back on the same address: a probe lets it in.
    let mut ns = ns;
    drop(ns.remove(1));
    let back = Node::listen(&dead);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !xc.evicted().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        xc.evicted().is_empty(),
        "not re-admitted: {:?}",
        xc.evicted()
    );
    spread(&xc, 30);
    assert_eq!(back.hits(), 10);
}

#[test]
fn go_and_close_leave_no_thread_behind() {
    let _g = serial();
    // Instance 0 dies without draining (a drained one is not evicted).
    let ns = vec![
        Node::listen_with_grace("tcp@127.0.0.1:0", Duration::ZERO),
        Node::start(),
        Node::start(),
    ];
    let xc = XClient::builder(discovery(&ns))
        .select_mode(SelectMode::RoundRobin)
        .timeout(Some(Duration::from_secs(5)))
        .build();
    let calls: Vec<_> = (0..6)
        .map(|_| xc.go::<_, String>("Who.Am", &ARGS).unwrap())
        .collect();
    for c in calls {
        let addr = c.addr().to_string();
        assert_eq!(c.wait().unwrap(), addr);
    }
    let _: String = xc.broadcast("Who.Am", &ARGS).unwrap();
    // A dead instance starts the probe thread.
    ns[0].handle.shutdown();
    let _ = xc.broadcast::<_, String>("Who.Am", &ARGS);
    assert_eq!(xc.evicted(), vec![ns[0].addr.clone()]);
    assert_eq!(
        wait_for_threads("geerpc-xc-probe", |n| n == 1).len(),
        1,
        "the probe thread runs"
    );
    xc.close();
    assert!(matches!(who(&xc), Err(Error::Shutdown(_))));
    assert_eq!(
        wait_for_threads("geerpc-xc-", |n| n == 0),
        Vec::<String>::new()
    );
    assert_eq!(
        wait_for_threads("geerpc-cl-", |n| n == 0),
        Vec::<String>::new()
    );
    drop(xc);

    // Drop alone does the same.
    let xc = XClient::new(discovery(&ns[1..]), SelectMode::Random);
    let _: String = xc.broadcast("Who.Am", &ARGS).unwrap();
    assert_eq!(wait_for_threads("geerpc-cl-read", |n| n == 2).len(), 2);
    drop(xc);
    assert_eq!(
        wait_for_threads("geerpc-cl-", |n| n == 0),
        Vec::<String>::new()
    );
    assert_eq!(
        wait_for_threads("geerpc-xc-", |n| n == 0),
        Vec::<String>::new()
    );
}

/// A cached connection whose server went away while it sat idle is noticed
/// before a call is sent on it: the call is not sent, so even a call not
/// marked idempotent fails over to another instance.
#[test]
fn an_idle_connection_closed_by_its_server_is_not_sent_on() {
    let _serial = serial();
    let a = start_server();
    let b = start_server();
    let addrs = [a.addr().to_string(), b.addr().to_string()];
    let xc = XClient::builder(MultiServerDiscovery::new(addrs.iter().map(String::as_str)))
        .select_mode(SelectMode::RoundRobin)
        .fail_mode(FailMode::Failover { retries: 1 })
        .idempotent(false)
        .build();
    // Both instances get a cached connection.
    for i in 0..4 {
        let sum: i64 = xc.call("Arith.Sum", &Args { num1: i, num2: 1 }).unwrap();
        assert_eq!(sum, i + 1);
    }
    a.shutdown();
    // Let the connections sit idle past the client's idle check (100 ms).
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..10 {
        let sum: i64 = xc
            .call("Arith.Sum", &Args { num1: i, num2: 2 })
            .unwrap_or_else(|e| panic!("call {i}: {e}"));
        assert_eq!(sum, i + 2);
    }
    // The probe thread for the dead instance is gone before the next test.
    xc.close();
    assert_eq!(
        wait_for_threads("geerpc-xc-", |n| n == 0),
        Vec::<String>::new()
    );
}

/// `close` does not wait for a caller's dial in progress (which can take
/// up to the connect timeout). (That such a dial is not cached is not
/// asserted: the closed pool drops its slots, so a cached connection would
/// go with the caller's slot anyway.)
#[test]
fn close_does_not_wait_for_a_dial_in_progress() {
    let _serial = serial();
    init_log();
    // Accepts, and never answers the CONNECT: the dial hangs.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http@{}", silent.local_addr().unwrap());
    let xc = Arc::new(
        XClient::builder(MultiServerDiscovery::new([addr.as_str()]))
            .client(Client::builder().connect_timeout(Some(Duration::from_secs(30))))
            .build(),
    );
    let caller = {
        let xc = xc.clone();
        std::thread::spawn(move || xc.call::<_, i64>("Arith.Sum", &Args { num1: 1, num2: 2 }))
    };
    let (held, _) = silent.accept().unwrap(); // the caller is dialling now
    let t0 = Instant::now();
    xc.close();
    let took = t0.elapsed();
    drop(held); // the dial fails at once
    assert!(
        took < Duration::from_secs(5),
        "close waited {took:?} for the dial"
    );
    assert!(caller.join().unwrap().is_err());
    assert!(matches!(
        xc.call::<_, i64>("Arith.Sum", &Args { num1: 1, num2: 2 }),
        Err(Error::Shutdown(_))
    ));
}
