//! The client's side of the call context (PROTOCOL.md section 8), seen on
//! the wire by a fake server: `Timeout` from a call's own or inherited
//! deadline, nothing new on a plain call, metadata defaults and per-call
//! values, `traceparent` (a child of the scope's trace, or a new root),
//! the reply's `Meta`, and the codes of the client's own errors.

mod fake_peer;

use std::time::{Duration, Instant};

use fake_peer::{Answer, FakeServer};
use geerpc::context::{Scope, TraceParent};
use geerpc::{CallOptions, Client, Code, Error, Meta};

/// Generous for a loaded machine (2 cores shared by many builds; load
/// averages past 100 were seen): an inherited deadline of 200 ms must end
/// the call well before the 30 s (or never) it would take otherwise.
const SLACK: Duration = Duration::from_secs(2);

fn dial(addr: &str) -> Client {
    Client::dial(addr).unwrap()
}

#[test]
fn a_timed_call_sends_the_time_it_has_left() {
    let fake = FakeServer::start(Answer::One);
    let client = dial(&fake.addr);
    let t = Duration::from_millis(100);
    let n: i64 = client.call_timeout("Arith.Sum", &(1, 2), t).unwrap();
    assert_eq!(n, 1);
    let seen = fake.next();
    let sent = seen.timeout().expect("a timed call carries Timeout");
    assert!(sent > Duration::ZERO && sent <= t, "{sent:?}");

    // With a deadline too (call_deadline), and through CallOptions.
    let _: i64 = client
        .call_deadline("Arith.Sum", &(1, 2), Instant::now() + t)
        .unwrap();
    let sent = fake.next().timeout().unwrap();
    assert!(sent > Duration::ZERO && sent <= t, "{sent:?}");
    let _: i64 = client
        .call_with("Arith.Sum", &(1, 2), &CallOptions::new().timeout(t))
        .unwrap();
    let sent = fake.next().timeout().unwrap();
    assert!(sent > Duration::ZERO && sent <= t, "{sent:?}");
}

#[test]
fn a_plain_call_is_byte_for_byte_what_it_was() {
    let fake = FakeServer::start(Answer::One);
    let client = dial(&fake.addr);
    let _: i64 = client.call("Arith.Sum", &(1, 2)).unwrap();
    let _: i64 = client.go("Arith.Sum", &(3, 4)).unwrap().wait().unwrap();
    let _: i64 = client
        .call_with("Arith.Sum", &(5, 6), &CallOptions::new())
        .unwrap();
    for seq in 1..=3 {
        let seen = fake.next();
        assert_eq!(
            seen.raw,
            format!(r#"{{"ServiceMethod":"Arith.Sum","Seq":{seq},"Error":""}}"#)
        );
    }
}

#[test]
fn a_call_in_a_scope_with_a_deadline_inherits_it_and_times_out_there() {
    let fake = FakeServer::start(Answer::Never);
    let client = dial(&fake.addr);
    let budget = Duration::from_millis(200);
    let t0 = Instant::now();
    let err = Scope::new()
        .with_timeout(budget)
        .run(|| client.call::<_, i64>("Arith.Sum", &(1, 2)))
        .unwrap_err();
    let took = t0.elapsed();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert!(!err.is_retryable());
    assert!(took >= budget, "ended early: {took:?}");
    assert!(took < budget + SLACK, "ended late: {took:?}");
    let sent = fake
        .next()
        .timeout()
        .expect("the inherited deadline travels");
    assert!(sent > Duration::ZERO && sent <= budget, "{sent:?}");

    // `go` too: its wait ends at the inherited deadline.
    let t0 = Instant::now();
    let call = Scope::new()
        .with_timeout(budget)
        .run(|| client.go::<_, i64>("Arith.Sum", &(1, 2)))
        .unwrap();
    let err = call.wait().unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(t0.elapsed() < budget + SLACK, "{:?}", t0.elapsed());
    assert!(fake.next().timeout().unwrap() <= budget);

    // A call's own, earlier deadline binds; a later one does not extend
    // the scope's.
    let scope = Scope::new().with_timeout(Duration::from_secs(30));
    let err = scope
        .run(|| client.call_timeout::<_, i64>("Arith.Sum", &(1, 2), budget))
        .unwrap_err();
    assert!(
        matches!(err, Error::Timeout { timeout, .. } if timeout == budget),
        "{err}"
    );
    assert!(fake.next().timeout().unwrap() <= budget);
    let t0 = Instant::now();
    let _ = Scope::new()
        .with_timeout(budget)
        .run(|| client.call_timeout::<_, i64>("Arith.Sum", &(1, 2), Duration::from_secs(30)))
        .unwrap_err();
    assert!(t0.elapsed() < budget + SLACK, "{:?}", t0.elapsed());
    assert!(fake.next().timeout().unwrap() <= budget);
}

#[test]
fn call_options_scope_replaces_the_inherited_one() {
    let fake = FakeServer::start(Answer::One);
    let client = dial(&fake.addr);
    let trace = TraceParent::new_root();
    Scope::new()
        .with_timeout(Duration::from_secs(1))
        .with_trace(trace)
        .run(|| {
            // Detached: no deadline, no trace.
            let detached = CallOptions::new().scope(Scope::new());
            let _: i64 = client.call_with("Arith.Sum", &(1, 2), &detached).unwrap();
            let seen = fake.next();
            assert_eq!(seen.timeout(), None);
            assert_eq!(seen.meta("traceparent"), None);
            assert_eq!(
                seen.raw,
                r#"{"ServiceMethod":"Arith.Sum","Seq":1,"Error":""}"#
            );
            // Another scope's deadline instead.
            let other =
                CallOptions::new().scope(Scope::new().with_timeout(Duration::from_secs(60)));
            let _: i64 = client.call_with("Arith.Sum", &(1, 2), &other).unwrap();
            let sent = fake.next().timeout().unwrap();
            assert!(sent > Duration::from_secs(50), "{sent:?}");
            // The default: the thread's.
            let _: i64 = client
                .call_with("Arith.Sum", &(1, 2), &CallOptions::new())
                .unwrap();
            let seen = fake.next();
            assert!(seen.timeout().unwrap() <= Duration::from_secs(1));
            assert!(seen.meta("traceparent").is_some());
        });
}

#[test]
fn default_and_per_call_meta_merge_the_calls_winning() {
    let fake = FakeServer::start(Answer::One);
    let defaults = Meta::new()
        .with("tenant", "default")
        .unwrap()
        .with("region", "eu")
        .unwrap();
    let client = Client::builder().meta(defaults).dial(&fake.addr).unwrap();
    let _: i64 = client.call("Arith.Sum", &(1, 2)).unwrap();
    let seen = fake.next();
    assert_eq!(seen.meta("tenant").as_deref(), Some("default"));
    assert_eq!(seen.meta("region").as_deref(), Some("eu"));
    assert_eq!(seen.timeout(), None);

    let opts = CallOptions::new()
        .meta("tenant", "acme")
        .unwrap()
        .meta("request-id", "42")
        .unwrap();
    let _: i64 = client.call_with("Arith.Sum", &(1, 2), &opts).unwrap();
    let seen = fake.next();
    assert_eq!(
        seen.meta("tenant").as_deref(),
        Some("acme"),
        "the call's wins"
    );
    assert_eq!(seen.meta("region").as_deref(), Some("eu"));
    assert_eq!(seen.meta("request-id").as_deref(), Some("42"));
    assert_eq!(seen.header["Meta"].as_object().unwrap().len(), 3);

    // Together past the limits: refused before anything is sent.
    let mut big = Meta::new();
    for i in 0..64 {
        big.insert(format!("k{i}"), "v").unwrap();
    }
    let err = client
        .call_with::<_, i64>("Arith.Sum", &(1, 2), &CallOptions::new().with_meta(big))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidMeta { .. }), "{err}");
    assert_eq!(err.code(), Code::InvalidArgument);
    let _: i64 = client.call("Arith.Sum", &(1, 2)).unwrap();
    assert_eq!(
        fake.next().header["Seq"],
        3,
        "the refused call sent nothing"
    );
}

#[test]
fn a_call_continues_its_scopes_trace_with_a_new_parent_id() {
    let fake = FakeServer::start(Answer::One);
    let client = dial(&fake.addr);
    let root: TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        .parse()
        .unwrap();
    Scope::new().with_trace(root).run(|| {
        let _: i64 = client.call("Arith.Sum", &(1, 2)).unwrap();
        let _: i64 = client.go("Arith.Sum", &(1, 2)).unwrap().wait().unwrap();
    });
    let mut parents = Vec::new();
    for _ in 0..2 {
        let seen = fake.next();
        assert_eq!(seen.timeout(), None, "a trace brings no deadline");
        let tp: TraceParent = seen.meta("traceparent").unwrap().parse().unwrap();
        assert_eq!(tp.trace_id(), root.trace_id());
        assert_ne!(tp.parent_id(), root.parent_id());
        assert!(tp.sampled());
        parents.push(tp.parent_id());
    }
    assert_ne!(parents[0], parents[1], "each call is a span of its own");

    // The call's own traceparent wins.
    let own = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    Scope::new().with_trace(root).run(|| {
        let opts = CallOptions::new().meta("traceparent", own).unwrap();
        let _: i64 = client.call_with("Arith.Sum", &(1, 2), &opts).unwrap();
    });
    assert_eq!(fake.next().meta("traceparent").as_deref(), Some(own));

    // Outside any trace, and trace_ids off (the default): none.
    let _: i64 = client.call("Arith.Sum", &(1, 2)).unwrap();
    assert_eq!(fake.next().meta("traceparent"), None);
}

#[test]
fn trace_ids_on_starts_a_trace_per_call() {
    let fake = FakeServer::start(Answer::One);
    let client = Client::builder().trace_ids(true).dial(&fake.addr).unwrap();
    let _: i64 = client.call("Arith.Sum", &(1, 2)).unwrap();
    let _: i64 = client.call("Arith.Sum", &(1, 2)).unwrap();
    let a: TraceParent = fake.next().meta("traceparent").unwrap().parse().unwrap();
    let b: TraceParent = fake.next().meta("traceparent").unwrap().parse().unwrap();
    assert_ne!(a.trace_id(), b.trace_id(), "a new root each time");
    // In a trace, it is continued instead.
    let root = TraceParent::new_root();
    Scope::new()
        .with_trace(root)
        .run(|| client.call::<_, i64>("Arith.Sum", &(1, 2)))
        .unwrap();
    let c: TraceParent = fake.next().meta("traceparent").unwrap().parse().unwrap();
    assert_eq!(c.trace_id(), root.trace_id());
}

#[test]
fn the_replys_meta_reaches_the_caller() {
    let fake = FakeServer::start(Answer::OneWithMeta(
        serde_json::json!({"served-by": "fake", "cost": "3"}),
    ));
    let client = dial(&fake.addr);
    let (n, meta) = client
        .go_with::<_, i64>("Arith.Sum", &(1, 2), &CallOptions::new())
        .unwrap()
        .wait_with_meta()
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(meta.get("served-by"), Some("fake"));
    assert_eq!(meta.get("cost"), Some("3"));
    // Also through a receiver, and a plain call just gets its value.
    let call = client.go::<_, i64>("Arith.Sum", &(1, 2)).unwrap();
    let _ = call.receiver();
    let (_, meta) = call.wait_with_meta().unwrap();
    assert_eq!(meta.len(), 2);
    assert_eq!(client.call::<_, i64>("Arith.Sum", &(1, 2)).unwrap(), 1);

    // A reply without Meta: empty.
    let fake = FakeServer::start(Answer::One);
    let client = dial(&fake.addr);
    let (_, meta) = client
        .go::<_, i64>("Arith.Sum", &(1, 2))
        .unwrap()
        .wait_with_meta()
        .unwrap();
    assert!(meta.is_empty());
}

#[test]
fn the_clients_own_errors_have_codes() {
    // Timeout: deadline_exceeded, not retryable (it may have run).
    let fake = FakeServer::start(Answer::Never);
    let client = dial(&fake.addr);
    let err = client
        .call_timeout::<_, i64>("Arith.Sum", &(1, 2), Duration::from_millis(20))
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert!(!err.is_retryable());

    // Never sent: unavailable, retryable.
    client.close();
    let err = client.call::<_, i64>("Arith.Sum", &(1, 2)).unwrap_err();
    assert!(matches!(err, Error::NotSent { .. }), "{err}");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.is_retryable());

    // Closed with the call in flight: unknown, not retryable.
    let fake = FakeServer::start(Answer::Close);
    let client = dial(&fake.addr);
    let err = client.call::<_, i64>("Arith.Sum", &(1, 2)).unwrap_err();
    assert!(matches!(err, Error::ConnectionClosed { .. }), "{err}");
    assert_eq!(err.code(), Code::Unknown);
    assert!(!err.is_retryable());
}
