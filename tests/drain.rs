//! Zero-loss drain (PROTOCOL.md section 9): the drain notice, `unavailable`
//! refusals after it, calls in flight answered, connections closed once
//! nothing is in flight or at the end of the grace period, and an XClient
//! load that loses no call while every server is restarted in turn.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::*;
use geerpc::server::ServerHandle;
use geerpc::xclient::Instance;
use geerpc::{
    Client, Code, Codec, Discovery, Error, FailMode, MultiServerDiscovery, SelectMode, Server,
    Service, XClient,
};
use serde::Deserialize;
use serde_json::{json, Value};

/// One test at a time: the load test wants the machine's CPU.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    init_log();
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A gate a handler waits at: it says when it has started, and returns
/// once the test opens the gate.
#[derive(Clone, Default)]
struct Gate {
    state: Arc<(Mutex<(usize, bool)>, Condvar)>,
}

impl Gate {
    /// Called by the handler: count in, wait for the gate (10 s at most).
    fn pass(&self) {
        let (m, cv) = &*self.state;
        let mut g = m.lock().unwrap();
        g.0 += 1;
        cv.notify_all();
        let until = Instant::now() + Duration::from_secs(10);
        while !g.1 && Instant::now() < until {
            g = cv.wait_timeout(g, Duration::from_millis(100)).unwrap().0;
        }
    }

    fn wait_started(&self, n: usize) {
        let (m, cv) = &*self.state;
        let mut g = m.lock().unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        while g.0 < n {
            assert!(Instant::now() < until, "the handler never started");
            g = cv.wait_timeout(g, Duration::from_millis(100)).unwrap().0;
        }
    }

    fn open(&self) {
        let (m, cv) = &*self.state;
        m.lock().unwrap().1 = true;
        cv.notify_all();
    }
}

/// A server with Arith, Echo and `Slow.Wait` (waits at `gate`).
fn gated_server(grace: Duration, gate: &Gate) -> ServerHandle {
    let server = Server::builder().shutdown_grace(grace).build();
    let g = gate.clone();
    server
        .register(Service::new("Slow").method("Wait", move |n: i64| {
            g.pass();
            Ok::<_, String>(n + 1)
        }))
        .unwrap();
    start_with(server)
}

fn tcp_target(h: &ServerHandle) -> String {
    h.addr().to_string().trim_start_matches("tcp@").to_string()
}

/// What a Go GeeRPC client decodes a header into: the three fields only.
#[derive(Debug, Deserialize, PartialEq)]
#[allow(non_snake_case)]
struct GoHeader {
    ServiceMethod: String,
    Seq: u64,
    Error: String,
}

/// Reads JSON values off a raw connection, one per line as Go writes them.
struct Lines(BufReader<TcpStream>);

impl Lines {
    fn next(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.0.read_line(&mut line).unwrap() {
            0 => None,
            _ => Some(serde_json::from_str(&line).unwrap()),
        }
    }
}

#[test]
fn a_go_style_client_reads_the_notice_as_a_seq_0_header_and_gets_unavailable_after_it() {
    let _g = serial();
    let gate = Gate::default();
    let handle = gated_server(Duration::from_secs(10), &gate);
    let mut s = TcpStream::connect(tcp_target(&handle)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rd = Lines(BufReader::new(s.try_clone().unwrap()));
    s.write_all(
        b"{\"MagicNumber\":3882844,\"CodecType\":\"application/json\",\"ConnectTimeout\":0,\"HandleTimeout\":0}\n\
          {\"ServiceMethod\":\"Slow.Wait\",\"Seq\":1,\"Error\":\"\"}\n41\n",
    )
    .unwrap();
    gate.wait_started(1);

    let handle = Arc::new(handle);
    let h = handle.clone();
    let stopper = std::thread::spawn(move || h.shutdown());

    // The notice: Seq 0, no method, no error, code goaway, body null.
    let notice = rd.next().expect("the drain notice");
    assert_eq!(
        notice,
        json!({"ServiceMethod": "", "Seq": 0, "Error": "", "Code": "goaway"})
    );
    let go: GoHeader = serde_json::from_value(notice).unwrap();
    assert_eq!(
        go.Seq, 0,
        "a Go client finds no call with Seq 0 and skips it"
    );
    assert_eq!(rd.next(), Some(Value::Null));

    // A request after the notice is refused, not run.
    s.write_all(
        b"{\"ServiceMethod\":\"Arith.Sum\",\"Seq\":2,\"Error\":\"\"}\n{\"Num1\":1,\"Num2\":2}\n",
    )
    .unwrap();
    assert_eq!(
        rd.next(),
        Some(json!({"ServiceMethod": "Arith.Sum", "Seq": 2,
            "Error": "rpc server: shutting down", "Code": "unavailable"}))
    );
    assert_eq!(rd.next(), Some(json!({})));

    // The call read before the notice is still answered...
    gate.open();
    assert_eq!(
        rd.next(),
        Some(json!({"ServiceMethod": "Slow.Wait", "Seq": 1, "Error": ""}))
    );
    assert_eq!(rd.next(), Some(json!(42)));
    // ...and then the connection closes (this client never half-closes:
    // after a quiet spell).
    assert_eq!(rd.next(), None, "closed once nothing is in flight");
    stopper.join().unwrap();
    assert_eq!(handle.live_threads(), 0);
}

#[test]
fn a_geerpc_client_stops_sending_at_the_notice_and_gets_its_call_in_flight_answered() {
    let _g = serial();
    for codec in [Codec::Json, Codec::MsgPack] {
        stops_sending_at_the_notice(codec);
    }
}

fn stops_sending_at_the_notice(codec: Codec) {
    let gate = Gate::default();
    let grace = Duration::from_secs(20);
    let handle = Arc::new(gated_server(grace, &gate));
    let client = Client::builder().codec(codec).dial(handle.addr()).unwrap();
    let slow = client.go::<_, i64>("Slow.Wait", &1).unwrap();
    gate.wait_started(1);

    let h = handle.clone();
    let t0 = Instant::now();
    let stopper = std::thread::spawn(move || {
        h.shutdown();
        t0.elapsed()
    });
    // Nothing signals the notice's arrival but the client's state; the
    // pending call keeps its reader reading, so it comes at once.
    let until = Instant::now() + Duration::from_secs(10);
    while !client.is_going_away() {
        assert!(Instant::now() < until, "{codec}: no drain notice seen");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(!client.is_alive());
    match client.call::<_, i64>("Arith.Sum", &Args { num1: 1, num2: 2 }) {
        Err(e @ Error::NotSent { .. }) => {
            assert!(e.is_not_sent() && e.is_retryable(), "{e}");
            assert!(e.to_string().contains("going away"), "{e}");
        }
        other => panic!("a call after the notice must not be sent: {other:?}"),
    }
    gate.open();
    assert_eq!(slow.wait_timeout(Duration::from_secs(10)).unwrap(), 2);
    // The client closed its sending side once it had read the notice, so
    // the server closes without waiting out its grace period.
    let took = stopper.join().unwrap();
    assert!(took < grace / 2, "{codec}: shutdown took {took:?}");
    assert_eq!(handle.live_threads(), 0);
}

/// A geerpc client closes its sending side once it has read the notice
/// and written every request it had queued, so that a server sees at once
/// that nothing more is coming; its call in flight still gets its reply.
#[test]
fn a_client_closes_its_sending_side_after_the_notice() {
    let _g = serial();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("tcp@{}", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut rd = Lines(BufReader::new(s.try_clone().unwrap()));
        let mut w = s;
        let option = rd.next().unwrap();
        assert_eq!(option["MagicNumber"], 3882844);
        let header = rd.next().unwrap();
        let body = rd.next().unwrap();
        w.write_all(
            b"{\"ServiceMethod\":\"\",\"Seq\":0,\"Error\":\"\",\"Code\":\"goaway\"}\nnull\n",
        )
        .unwrap();
        // The client's end of stream, not a timeout.
        assert_eq!(rd.next(), None, "the client half-closed");
        let reply =
            json!({"ServiceMethod": header["ServiceMethod"], "Seq": header["Seq"], "Error": ""});
        w.write_all(format!("{reply}\n{}\n", body.as_i64().unwrap() + 1).as_bytes())
            .unwrap();
    });
    let client = Client::dial(&addr).unwrap();
    let call = client.go::<_, i64>("Any.Thing", &1).unwrap();
    assert_eq!(call.wait_timeout(Duration::from_secs(10)).unwrap(), 2);
    assert!(client.is_going_away());
    server.join().unwrap();
}

#[test]
fn an_idle_client_reads_the_notice_before_it_sends() {
    let _g = serial();
    let handle = start_server();
    let client = Client::dial(handle.addr()).unwrap();
    let sum: i64 = client
        .call("Arith.Sum", &Args { num1: 1, num2: 2 })
        .unwrap();
    assert_eq!(sum, 3);
    handle.shutdown();
    // Idle past the client's idle check (100 ms): nobody read the notice.
    std::thread::sleep(Duration::from_millis(300));
    let err = client
        .call::<_, i64>("Arith.Sum", &Args { num1: 1, num2: 2 })
        .unwrap_err();
    assert!(err.is_not_sent(), "{err:?}");
    assert!(client.is_going_away());
}

#[test]
fn the_grace_period_bounds_a_call_that_does_not_end() {
    let _g = serial();
    let gate = Gate::default();
    let grace = Duration::from_millis(300);
    let handle = gated_server(grace, &gate);
    let client = Client::dial(handle.addr()).unwrap();
    let stuck = client.go::<_, i64>("Slow.Wait", &1).unwrap();
    gate.wait_started(1);
    let t0 = Instant::now();
    handle.shutdown();
    let took = t0.elapsed();
    // The grace, then up to 1 s for threads still in handlers (see
    // `shutdown`); a loaded machine gets generous slack.
    assert!(took >= grace, "returned after {took:?}, before the grace");
    assert!(took < grace + Duration::from_secs(4), "took {took:?}");
    let err = stuck.wait_timeout(Duration::from_secs(10)).unwrap_err();
    assert!(matches!(err, Error::ConnectionClosed { .. }), "{err:?}");
    gate.open();
}

#[test]
fn server_errors_carry_their_codes() {
    let _g = serial();
    let handle = start_server();
    let client = Client::dial(handle.addr()).unwrap();
    let code = |method: &str, args: Value| -> Option<Code> {
        client
            .call::<_, Value>(method, &args)
            .unwrap_err()
            .remote_code()
            .cloned()
    };
    assert_eq!(code("Nope.Sum", json!({})), Some(Code::NotFound));
    assert_eq!(code("Arith.Nope", json!({})), Some(Code::NotFound));
    assert_eq!(code("Arith.Sum", json!("x")), Some(Code::InvalidArgument));
    assert_eq!(code("Arith.Fail", json!({"Num1": 1, "Num2": 1})), None);
    let timed = Client::builder()
        .handle_timeout(Some(Duration::from_millis(50)))
        .dial(handle.addr())
        .unwrap();
    let err = timed
        .call::<_, i64>("Arith.SleepMs", &Args { num1: 500, num2: 0 })
        .unwrap_err();
    assert_eq!(err.remote_code(), Some(&Code::DeadlineExceeded), "{err:?}");
    assert!(
        err.to_string().contains("request handle timeout"),
        "the text Go peers expect: {err}"
    );
}

/// Three servers behind a MultiServerDiscovery, restarted one after
/// another `rounds` times under a failfast XClient load of 16 callers.
/// Returns the calls that succeeded and the errors.
fn rolling_restarts(rounds: usize) -> (u64, Vec<String>) {
    let start = |addr: &str| -> ServerHandle { try_start(addr).unwrap() };
    let mut handles: Vec<ServerHandle> = (0..3).map(|_| start("tcp@127.0.0.1:0")).collect();
    let list = |hs: &[ServerHandle]| -> Vec<Instance> {
        hs.iter()
            .map(|h| Instance::new(h.addr().to_string()))
            .collect()
    };
    let discovery = Arc::new(MultiServerDiscovery::new(list(&handles)));
    let xc = XClient::builder(discovery.clone())
        .select_mode(SelectMode::RoundRobin)
        .fail_mode(FailMode::FailFast)
        .timeout(Some(Duration::from_secs(10)))
        .build();
    let ok = AtomicU64::new(0);
    let errors: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let progress = (Mutex::new(0u64), Condvar::new());
    let give_up = Instant::now() + Duration::from_secs(120);
    // Waits until the callers have made `n` more calls (30 s at most).
    let wait_progress = |n: u64| {
        let (m, cv) = &progress;
        let mut g = m.lock().unwrap();
        let target = *g + n;
        let until = Instant::now() + Duration::from_secs(30);
        while *g < target && Instant::now() < until {
            g = cv.wait_timeout(g, Duration::from_millis(50)).unwrap().0;
        }
    };
    std::thread::scope(|s| {
        for t in 0..16u64 {
            let (xc, ok, errors, stop, progress) = (&xc, &ok, &errors, &stop, &progress);
            s.spawn(move || {
                for i in 0..200_000u64 {
                    if stop.load(Ordering::Relaxed) || Instant::now() > give_up {
                        break;
                    }
                    // Some calls take a while, so that calls are in flight
                    // at each shutdown.
                    let r = if i % 8 == 0 {
                        xc.call::<_, i64>("Arith.SleepMs", &Args { num1: 2, num2: 1 })
                            .map(|v| v == 3)
                    } else {
                        xc.call::<_, i64>(
                            "Arith.Sum",
                            &Args {
                                num1: t as i64,
                                num2: 1,
                            },
                        )
                        .map(|v| v == t as i64 + 1)
                    };
                    match r {
                        Ok(true) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(false) => errors.lock().unwrap().push("wrong answer".into()),
                        Err(e) => errors.lock().unwrap().push(e.to_string()),
                    }
                    let (m, cv) = progress;
                    *m.lock().unwrap() += 1;
                    cv.notify_all();
                }
            });
        }
        for round in 0..rounds {
            for k in 0..3 {
                wait_progress(1500);
                let before = errors.lock().unwrap().len();
                let old = handles.remove(k);
                let old_addr = old.addr().to_string();
                // Deregister first, as a heartbeat's hook does.
                let d = discovery.clone();
                let rest = list(&handles);
                old.on_shutdown(move || d.update(rest).unwrap());
                old.shutdown();
                drop(old);
                // Every other round on the same port, if it is still free.
                let again = (round % 2 == 1).then(|| try_start(&old_addr)).flatten();
                let new = again.unwrap_or_else(|| start("tcp@127.0.0.1:0"));
                handles.insert(k, new);
                discovery.update(list(&handles)).unwrap();
                let lost = errors.lock().unwrap().len() - before;
                eprintln!("round {round} server {k}: restarted {old_addr}; {lost} calls lost");
            }
        }
        wait_progress(300);
        stop.store(true, Ordering::Relaxed);
    });
    (ok.into_inner(), errors.into_inner().unwrap())
}

/// A server with Arith and Echo and a 5 s grace on `addr`, if it is free.
fn try_start(addr: &str) -> Option<ServerHandle> {
    let server = Server::builder()
        .shutdown_grace(Duration::from_secs(5))
        .build();
    server.register(arith()).unwrap();
    server.register(echo()).unwrap();
    server.listen(addr).ok()
}

#[test]
fn a_failfast_load_loses_no_call_while_every_server_restarts_in_turn() {
    let _g = serial();
    let (ok, errors) = rolling_restarts(3);
    eprintln!("{ok} calls succeeded, {} failed", errors.len());
    assert!(
        errors.is_empty(),
        "{} calls lost over 9 restarts; first: {:?}",
        errors.len(),
        errors.first()
    );
    assert!(ok >= 10_000, "the load ran: {ok} calls");
}

/// An instance that drained and stays listed is passed over, then tried
/// again now and then (its address refuses: the call goes elsewhere), and
/// is never evicted as failed; failfast calls all succeed meanwhile.
#[test]
fn an_instance_that_drained_is_passed_over_not_evicted() {
    let _g = serial();
    let a = start_server();
    let b = start_server();
    let addrs = [a.addr().to_string(), b.addr().to_string()];
    let xc = XClient::builder(MultiServerDiscovery::new(addrs.iter().map(String::as_str)))
        .select_mode(SelectMode::RoundRobin)
        .fail_mode(FailMode::FailFast)
        .build();
    let sum = |i: i64| xc.call::<_, i64>("Arith.Sum", &Args { num1: i, num2: 1 });
    for i in 0..4 {
        assert_eq!(sum(i).unwrap(), i + 1);
    }
    a.shutdown();
    // Past the 1 s a draining instance is passed over: calls then dial it
    // again, are refused, and go to `b`. Bounded in count and time.
    let until = Instant::now() + Duration::from_millis(1500);
    let mut calls = 0;
    while (Instant::now() < until || calls < 20) && calls < 100_000 {
        let i = calls as i64;
        assert_eq!(sum(i).unwrap_or_else(|e| panic!("call {i}: {e}")), i + 1);
        calls += 1;
    }
    assert_eq!(xc.evicted(), Vec::<String>::new());
}

/// A reply with `resource_exhausted` (the call was not run) sends a
/// failfast, non-idempotent call to another instance, without evicting
/// the busy one.
#[test]
fn resource_exhausted_goes_elsewhere_without_eviction() {
    let _g = serial();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = format!("tcp@{}", busy.local_addr().unwrap());
    let refused = Arc::new(AtomicU64::new(0));
    let r = refused.clone();
    // Answers every request `resource_exhausted`, until the client leaves.
    let fake = std::thread::spawn(move || {
        let (s, _) = busy.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut rd = Lines(BufReader::new(s.try_clone().unwrap()));
        let mut w = s;
        rd.next().unwrap();
        while let Some(header) = rd.next() {
            rd.next().unwrap();
            let reply = json!({"ServiceMethod": header["ServiceMethod"], "Seq": header["Seq"],
                "Error": "rpc server: too busy", "Code": "resource_exhausted"});
            if w.write_all(format!("{reply}\n{{}}\n").as_bytes()).is_err() {
                break;
            }
            r.fetch_add(1, Ordering::SeqCst);
        }
    });
    let real = start_server();
    let addrs = [busy_addr.clone(), real.addr().to_string()];
    let xc = XClient::builder(MultiServerDiscovery::new(addrs.iter().map(String::as_str)))
        .select_mode(SelectMode::RoundRobin)
        .fail_mode(FailMode::FailFast)
        .build();
    for i in 0..6 {
        let got: i64 = xc
            .call("Arith.Sum", &Args { num1: i, num2: 1 })
            .unwrap_or_else(|e| panic!("call {i}: {e}"));
        assert_eq!(got, i + 1);
    }
    assert!(
        refused.load(Ordering::SeqCst) >= 1,
        "the busy one was tried"
    );
    assert_eq!(xc.evicted(), Vec::<String>::new());
    xc.close();
    fake.join().unwrap();
}
