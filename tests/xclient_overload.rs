//! XClient and instances over a limit: a reply with code
//! `resource_exhausted` sends the call to another instance, and the
//! refusing instance is passed over by selection for its back-off (not
//! evicted), tried again after it, and still used when every instance
//! refuses.
//!
//! The refusing instance is a raw TCP fake that answers every request as
//! a geerpc server over its concurrency limit does (a Go-style JSON reply
//! header with `"Code":"resource_exhausted"`), and counts the requests it
//! gets.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use geerpc::xclient::CallOptions;
use geerpc::{Code, Error, FailMode, MultiServerDiscovery, SelectMode, XClient};
use serde_json::{json, Value};

/// A fake instance that refuses every request as `resource_exhausted`.
/// Dropping it stops its threads (it closes the connections it accepted).
struct Refuser {
    addr: String,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl Refuser {
    fn start() -> Refuser {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("tcp@{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let threads = Arc::new(Mutex::new(Vec::new()));
        let (r, st, c, t) = (
            requests.clone(),
            stop.clone(),
            conns.clone(),
            threads.clone(),
        );
        let acceptor = std::thread::Builder::new()
            .name("test-refuser".into())
            .spawn(move || loop {
                let Ok((s, _)) = listener.accept() else {
                    return;
                };
                if st.load(Ordering::SeqCst) {
                    return;
                }
                c.lock().unwrap().push(s.try_clone().unwrap());
                let r = r.clone();
                let h = std::thread::Builder::new()
                    .name("test-refuser-conn".into())
                    .spawn(move || refuse_all(s, &r))
                    .unwrap();
                t.lock().unwrap().push(h);
            })
            .unwrap();
        Refuser {
            addr,
            requests,
            stop,
            conns,
            threads,
            acceptor: Some(acceptor),
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Reads the connection's option line, then answers each request (a
/// header line and a body line) with the refusal, until the peer leaves.
fn refuse_all(s: TcpStream, requests: &AtomicUsize) {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut rd = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut line = String::new();
    let mut next = |line: &mut String| -> Option<Value> {
        line.clear();
        match rd.read_line(line) {
            Ok(n) if n > 0 => serde_json::from_str(line).ok(),
            _ => None,
        }
    };
    if next(&mut line).is_none() {
        return;
    }
    while let Some(header) = next(&mut line) {
        requests.fetch_add(1, Ordering::SeqCst);
        if next(&mut line).is_none() {
            return;
        }
        let reply = json!({"ServiceMethod": header["ServiceMethod"], "Seq": header["Seq"],
            "Error": "rpc server: too busy", "Code": "resource_exhausted"});
        if w.write_all(format!("{reply}\n{{}}\n").as_bytes()).is_err() {
            return;
        }
    }
}

impl Drop for Refuser {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the acceptor, which sees `stop`.
        let target = self.addr.trim_start_matches("tcp@").to_string();
        let _ = TcpStream::connect(target);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        for t in self.threads.lock().unwrap().drain(..) {
            let _ = t.join();
        }
    }
}

fn xclient(addrs: &[&str], mode: SelectMode, backoff: (Duration, Duration)) -> XClient {
    XClient::builder(MultiServerDiscovery::new(addrs.iter().copied()))
        .select_mode(mode)
        .fail_mode(FailMode::FailFast)
        .overload_backoff(backoff.0, backoff.1)
        .timeout(Some(Duration::from_secs(10)))
        .build()
}

/// A failfast, non-idempotent call with key `k` (for the hash ring).
fn who_key(xc: &XClient, k: usize) -> geerpc::Result<String> {
    xc.call_with("Who.Am", &ARGS, &CallOptions::new().key(format!("k{k}")))
}

/// In every selection mode: the call the refuser refuses succeeds on
/// another instance, and while the refuser's back-off runs (long here)
/// it gets no new call although the others are healthy; it is not evicted.
#[test]
fn a_refusing_instance_gets_no_call_during_its_backoff_and_is_not_evicted() {
    let _g = serial();
    let backoff = Duration::from_secs(20);
    for mode in [
        SelectMode::PowerOfTwoChoices,
        SelectMode::RoundRobin,
        SelectMode::Random,
        SelectMode::WeightedRoundRobin,
        SelectMode::ConsistentHash,
    ] {
        let busy = Refuser::start();
        let ns = nodes(2);
        let xc = xclient(
            &[&busy.addr, &ns[0].addr, &ns[1].addr],
            mode,
            (backoff, backoff),
        );
        let start = Instant::now();
        let mut k = 0;
        while busy.requests() == 0 {
            assert!(k < 300, "{mode:?}: the refuser was never picked");
            let got = who_key(&xc, k).unwrap_or_else(|e| panic!("{mode:?} call {k}: {e}"));
            assert!(got == ns[0].addr || got == ns[1].addr, "{got}");
            k += 1;
        }
        for _ in 0..40 {
            let got = who_key(&xc, k).unwrap_or_else(|e| panic!("{mode:?} call {k}: {e}"));
            assert!(got == ns[0].addr || got == ns[1].addr, "{got}");
            k += 1;
        }
        assert!(
            start.elapsed() < backoff,
            "{mode:?}: too slow to test the back-off"
        );
        assert_eq!(busy.requests(), 1, "{mode:?}: passed over in its back-off");
        assert_eq!(xc.evicted(), Vec::<String>::new(), "{mode:?}");
        xc.close();
    }
}

/// A refusal that `XCall::wait` returns has the instance passed over too.
#[test]
fn a_refusal_seen_through_go_is_a_signal_too() {
    let _g = serial();
    let busy = Refuser::start();
    let ns = nodes(1);
    let long = Duration::from_secs(20);
    let xc = xclient(
        &[&busy.addr, &ns[0].addr],
        SelectMode::RoundRobin,
        (long, long),
    );
    // Round robin: one of the first two goes to the refuser (`go` does
    // not redirect: its refusal is the result).
    let mut refused = 0;
    for _ in 0..2 {
        let call = xc.go::<_, String>("Who.Am", &ARGS).unwrap();
        let to_busy = call.addr().to_string() == busy.addr;
        match call.wait() {
            Ok(who) => assert!(!to_busy && who == ns[0].addr, "{who}"),
            Err(err) => {
                assert!(to_busy, "{err:?}");
                assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
                refused += 1;
            }
        }
    }
    assert_eq!(refused, 1);
    for _ in 0..10 {
        let call = xc.go::<_, String>("Who.Am", &ARGS).unwrap();
        assert_eq!(call.wait().unwrap(), ns[0].addr);
    }
    assert_eq!(busy.requests(), 1);
    assert_eq!(xc.evicted(), Vec::<String>::new());
}

/// Once its back-off has passed, the refuser is tried again; refusing
/// again, it is passed over again, for twice as long.
#[test]
fn after_its_backoff_a_refusing_instance_is_tried_again() {
    let _g = serial();
    let busy = Refuser::start();
    let ns = nodes(1);
    let min = Duration::from_millis(300);
    let xc = xclient(
        &[&busy.addr, &ns[0].addr],
        SelectMode::RoundRobin,
        (min, Duration::from_secs(60)),
    );
    // Round robin: one of the first two calls is refused there and
    // answered by the other.
    for _ in 0..2 {
        assert_eq!(who(&xc).unwrap(), ns[0].addr);
    }
    assert_eq!(busy.requests(), 1);
    // The window opened before that call returned: waiting `min` from
    // here passes it. Waiting for time to pass is what is under test.
    std::thread::sleep(min + Duration::from_millis(50));
    let mut calls = 0;
    while busy.requests() < 2 {
        assert!(calls < 10, "the refuser is not tried after its back-off");
        assert_eq!(who(&xc).unwrap(), ns[0].addr);
        calls += 1;
    }
    // Refused again: a window of 2 x min from now. Checked only while it
    // surely lasts (a loaded machine may be slower).
    let refused_again = Instant::now();
    for _ in 0..6 {
        assert_eq!(who(&xc).unwrap(), ns[0].addr);
    }
    if refused_again.elapsed() < 2 * min {
        assert_eq!(busy.requests(), 2, "passed over again");
    }
    assert_eq!(xc.evicted(), Vec::<String>::new());
}

/// With every instance refusing, the call ends with the refusal (code
/// `resource_exhausted`, retryable); each instance was tried, and
/// instances all in their back-off are still used. None is evicted.
#[test]
fn with_every_instance_refusing_the_call_ends_resource_exhausted() {
    let _g = serial();
    let long = Duration::from_secs(20);
    for mode in [SelectMode::PowerOfTwoChoices, SelectMode::RoundRobin] {
        let (a, b) = (Refuser::start(), Refuser::start());
        let xc = xclient(&[&a.addr, &b.addr], mode, (long, long));
        let err = who(&xc).unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{mode:?}: {err:?}");
        assert_eq!(err.remote_code(), Some(&Code::ResourceExhausted));
        assert!(err.is_retryable(), "{mode:?}: {err:?}");
        assert!(matches!(err, Error::Remote { .. }), "{err:?}");
        // Each tried exactly once.
        let (ra, rb) = (a.requests(), b.requests());
        assert_eq!((ra, rb), (1, 1), "{mode:?}");
        // Both in their back-off: still called, each once.
        let err = who(&xc).unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{mode:?}: {err:?}");
        assert_eq!((a.requests(), b.requests()), (2, 2), "{mode:?}");
        // Failover ends the same way.
        let err = xc
            .call_with::<_, String>(
                "Who.Am",
                &ARGS,
                &CallOptions::new()
                    .fail_mode(FailMode::Failover { retries: 3 })
                    .idempotent(true),
            )
            .unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{mode:?}: {err:?}");
        assert_eq!(xc.evicted(), Vec::<String>::new(), "{mode:?}");
        xc.close();
    }
}
