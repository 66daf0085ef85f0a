//! XClient calls and their scope (`geerpc::context::Scope`): a call's
//! deadline is the earliest of its own and its scope's (the thread's
//! current one, which inside a handler is the handler's call), so a call
//! made in a scope never outlives it; `CallOptions::scope` replaces the
//! inherited scope. One-instance calls, `go`, and the fan-outs alike.
//!
//! Timings: a 50 ms scope must end a call to a 2 s method near 50 ms; the
//! checks allow up to 1 s (a loaded two-core machine), still far below
//! the method's 2 s.

mod common;

use std::time::{Duration, Instant};

use common::*;
use geerpc::context::Scope;
use geerpc::xclient::CallOptions;
use geerpc::{Code, Error, FailMode, SelectMode, XClient};

/// A 2 s call to `Arith.SleepMs`.
const SLOW: Args = Args {
    num1: 2000,
    num2: 0,
};

const SCOPE: Duration = Duration::from_millis(50);
/// What a loaded machine may add to a deadline.
const MARGIN: Duration = Duration::from_millis(1000);

fn assert_timed_out(err: &Error, took: Duration, what: &str) {
    assert!(matches!(err, Error::Timeout { .. }), "{what}: {err:?}");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{what}");
    assert!(
        took >= SCOPE - Duration::from_millis(5) && took < SCOPE + MARGIN,
        "{what}: took {took:?}"
    );
}

/// A call in a 50 ms scope (as a handler with 50 ms left) ends near 50 ms
/// with a timeout, though the client's own timeout is 10 s; with a
/// fail mode that retries, the retries fit in the scope too.
#[test]
fn a_call_in_a_scope_ends_at_the_scope_deadline() {
    let _g = serial();
    let ns = nodes(2);
    let xc = XClient::builder(discovery(&ns))
        .timeout(Some(Duration::from_secs(10)))
        .build();
    for mode in [
        FailMode::FailFast,
        FailMode::Failover { retries: 3 },
        FailMode::Failtry { retries: 3 },
        FailMode::Failbackup {
            after: Duration::from_millis(10),
        },
    ] {
        let opts = CallOptions::new().fail_mode(mode).idempotent(true);
        let t = Instant::now();
        let r = Scope::new()
            .with_timeout(SCOPE)
            .run(|| xc.call_with::<_, i64>("Arith.SleepMs", &SLOW, &opts));
        let err = r.unwrap_err();
        assert_timed_out(&err, t.elapsed(), &format!("{mode:?}"));
        // The timeout named is the scope's, not the client's 10 s.
        let Error::Timeout { timeout, .. } = err else {
            unreachable!()
        };
        assert!(timeout <= SCOPE, "{mode:?}: {timeout:?}");
    }
    // Outside the scope, the same call has the client's 10 s again.
    let quick = Args { num1: 100, num2: 1 };
    assert_eq!(xc.call::<_, i64>("Arith.SleepMs", &quick).unwrap(), 101);
}

/// A scope whose deadline has passed fails the call at once, unsent.
#[test]
fn an_expired_scope_sends_nothing() {
    let _g = serial();
    let ns = nodes(1);
    let xc = XClient::new(discovery(&ns), SelectMode::Random);
    assert_eq!(who(&xc).unwrap(), ns[0].addr);
    let past = Scope::new().with_deadline(Instant::now());
    let err = past.run(|| who(&xc)).unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    let err = past
        .run(|| xc.broadcast::<_, String>("Who.Am", &ARGS))
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    let err = past
        .run(|| xc.go::<_, String>("Who.Am", &ARGS))
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    let backup = CallOptions::new().fail_mode(FailMode::Failbackup {
        after: Duration::from_millis(1),
    });
    let err = past
        .run(|| xc.call_with::<_, String>("Who.Am", &ARGS, &backup))
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert_eq!(ns[0].hits(), 1, "nothing sent past the deadline");
}

/// `go` in a scope keeps the scope's deadline: `XCall::wait`, even
/// outside the scope, ends at it.
#[test]
fn go_keeps_the_scope_deadline() {
    let _g = serial();
    let ns = nodes(1);
    let xc = XClient::new(discovery(&ns), SelectMode::Random);
    let t = Instant::now();
    let call = Scope::new()
        .with_timeout(SCOPE)
        .run(|| xc.go::<_, i64>("Arith.SleepMs", &SLOW))
        .unwrap();
    assert_timed_out(&call.wait().unwrap_err(), t.elapsed(), "go");
}

/// Broadcast, fork and inform end at the scope's deadline.
#[test]
fn the_fan_outs_keep_the_scope_deadline() {
    let _g = serial();
    let ns = nodes(2);
    let xc = XClient::new(discovery(&ns), SelectMode::Random);
    let scope = || Scope::new().with_timeout(SCOPE);

    let t = Instant::now();
    let err = scope()
        .run(|| xc.broadcast::<_, i64>("Arith.SleepMs", &SLOW))
        .unwrap_err();
    assert_timed_out(&err, t.elapsed(), "broadcast");

    let t = Instant::now();
    let err = scope()
        .run(|| xc.fork::<_, i64>("Arith.SleepMs", &SLOW))
        .unwrap_err();
    assert_timed_out(&err, t.elapsed(), "fork");

    let t = Instant::now();
    let all = scope()
        .run(|| xc.inform::<_, i64>("Arith.SleepMs", &SLOW))
        .unwrap();
    let took = t.elapsed();
    assert_eq!(all.len(), 2);
    for (addr, r) in &all {
        assert_timed_out(r.as_ref().unwrap_err(), took, addr);
    }
}

/// `CallOptions::scope` replaces the inherited scope: a detached call
/// (`Scope::new()`) in a 50 ms scope has only its own timeout, and an
/// explicit scope's deadline counts outside any.
#[test]
fn an_explicit_scope_replaces_the_inherited_one() {
    let _g = serial();
    let ns = nodes(1);
    let xc = XClient::new(discovery(&ns), SelectMode::Random);
    let own = Duration::from_millis(400);
    let t = Instant::now();
    let err = Scope::new()
        .with_timeout(SCOPE)
        .run(|| {
            xc.call_with::<_, i64>(
                "Arith.SleepMs",
                &SLOW,
                &CallOptions::new().scope(Scope::new()).timeout(own),
            )
        })
        .unwrap_err();
    let took = t.elapsed();
    assert!(
        matches!(err, Error::Timeout { timeout, .. } if timeout == own),
        "{err:?}"
    );
    assert!(took >= own && took < own + MARGIN, "took {took:?}");

    let t = Instant::now();
    let err = xc
        .call_with::<_, i64>(
            "Arith.SleepMs",
            &SLOW,
            &CallOptions::new().scope(Scope::new().with_timeout(SCOPE)),
        )
        .unwrap_err();
    assert_timed_out(&err, t.elapsed(), "explicit scope");
}
