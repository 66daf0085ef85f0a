//! A call chain A -> B -> C sharing one budget (issue 18): the deadline
//! travels, every hop stops within it, and the trace crosses the chain
//! without user code.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Sender};
use geerpc::context::{Scope, TraceParent};
use geerpc::{Client, Code, Context, Server, Service, Status};
use parking_lot::Mutex;

/// What the handlers saw.
#[derive(Default)]
struct Seen {
    starts: Mutex<Vec<Instant>>,
    c_calls: AtomicUsize,
    c_saw_expiry: AtomicBool,
    c_trace: Mutex<Option<String>>,
    c_deadline: Mutex<Option<Instant>>,
    b_first: Mutex<Option<geerpc::Error>>,
    b_second: Mutex<Option<(geerpc::Error, Duration)>>,
}

/// C: "sleeps" up to a second, checking its deadline, as a long handler
/// that cooperates does.
fn service_c(seen: Arc<Seen>, done: Sender<Instant>) -> Service {
    Service::new("C").method_with_context("Sleep", move |ctx: &Context, ms: u64| {
        seen.starts.lock().push(Instant::now());
        seen.c_calls.fetch_add(1, Ordering::SeqCst);
        *seen.c_trace.lock() = ctx.trace().map(|t| t.trace_id());
        *seen.c_deadline.lock() = ctx.deadline();
        let until = Instant::now() + Duration::from_millis(ms);
        let outcome = loop {
            if ctx.is_expired() {
                seen.c_saw_expiry.store(true, Ordering::SeqCst);
                break Err(Status::new(Code::DeadlineExceeded, "C stopped: deadline"));
            }
            if Instant::now() >= until {
                break Ok(ms);
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let _ = done.send(Instant::now());
        outcome
    })
}

/// B: relays to C, then tries C once more after the deadline.
fn service_b(seen: Arc<Seen>, to_c: Client, done: Sender<Instant>) -> Service {
    Service::new("B").method_with_context("Relay", move |_ctx: &Context, ms: u64| {
        seen.starts.lock().push(Instant::now());
        let first = to_c.call::<_, u64>("C.Sleep", &ms);
        let result = match first {
            Ok(v) => Ok(v),
            Err(e) => {
                *seen.b_first.lock() = Some(clone_err(&e));
                // The budget is spent: this call must not start C again.
                let t0 = Instant::now();
                if let Err(again) = to_c.call::<_, u64>("C.Sleep", &ms) {
                    *seen.b_second.lock() = Some((again, t0.elapsed()));
                }
                Err(e)
            }
        };
        let _ = done.send(Instant::now());
        result
    })
}

fn clone_err(e: &geerpc::Error) -> geerpc::Error {
    geerpc::Error::Remote {
        method: String::new(),
        message: e.to_string(),
        code: Some(e.code()),
    }
}

#[test]
fn a_100ms_budget_stops_every_hop_of_a_chain() {
    let seen = Arc::new(Seen::default());
    let (c_done_tx, c_done) = bounded(4);
    let (b_done_tx, b_done) = bounded(4);

    let c = Server::new();
    c.register(service_c(seen.clone(), c_done_tx)).unwrap();
    let c = c.listen("127.0.0.1:0").unwrap();

    let b = Server::new();
    let to_c = Client::dial(c.addr()).unwrap();
    b.register(service_b(seen.clone(), to_c, b_done_tx))
        .unwrap();
    let b = b.listen("127.0.0.1:0").unwrap();

    let a = Client::dial(b.addr()).unwrap();
    let root = TraceParent::new_root();
    let budget = Duration::from_millis(100);
    let t0 = Instant::now();
    let deadline = t0 + budget;
    let err = Scope::new()
        .with_deadline(deadline)
        .with_trace(root)
        .run(|| a.call::<_, u64>("B.Relay", &1000))
        .unwrap_err();
    let took = t0.elapsed();

    // A: deadline_exceeded within the budget and a little.
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert!(
        took < budget + Duration::from_millis(20),
        "A waited {took:?} for a {budget:?} budget"
    );

    // B and C end soon after the deadline, not after C's second.
    let c_end = c_done
        .recv_timeout(Duration::from_secs(2))
        .expect("C's handler ended");
    let b_end = b_done
        .recv_timeout(Duration::from_secs(2))
        .expect("B's handler ended");
    for (who, end) in [("C", c_end), ("B", b_end)] {
        let late = end.saturating_duration_since(deadline);
        assert!(
            late < Duration::from_millis(200),
            "{who} ended {late:?} late"
        );
    }
    assert!(
        seen.c_saw_expiry.load(Ordering::SeqCst),
        "C saw its deadline"
    );
    // C's deadline is the one A set, as far as the wire and a hop allow:
    // never before it, a little after (transit), never a whole second.
    let c_deadline = seen.c_deadline.lock().expect("C had a deadline");
    assert!(c_deadline >= deadline - Duration::from_millis(1));
    assert!(c_deadline < deadline + Duration::from_millis(50));

    let first = seen.b_first.lock().take().expect("B's call to C failed");
    assert_eq!(first.code(), Code::DeadlineExceeded, "{first}");
    let (second, second_took) = seen.b_second.lock().take().expect("B's retry failed");
    assert_eq!(second.code(), Code::DeadlineExceeded, "{second}");
    assert!(second_took < Duration::from_millis(50), "{second_took:?}");

    // No handler started after the deadline: C ran once.
    assert_eq!(seen.c_calls.load(Ordering::SeqCst), 1);
    for s in seen.starts.lock().iter() {
        assert!(*s <= deadline, "a handler started after the deadline");
    }
    // The trace crossed both hops.
    assert_eq!(
        seen.c_trace.lock().clone(),
        Some(root.trace_id()),
        "C continues A's trace"
    );
}
