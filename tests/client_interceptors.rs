//! Client interceptors: `before`s in order and `after`s in reverse, what
//! they see (method, address, deadline, metadata; outcome, code, elapsed),
//! a `before` that adds metadata the server sees, a refusal that sends
//! nothing, and an `after` for every end of a call: reply, error, timeout,
//! abandoned `Call`, closed connection.

mod fake_peer;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fake_peer::{Answer, FakeServer};
use geerpc::client::{Finished, Interceptor, Outgoing};
use geerpc::{CallOptions, Client, Code, Error};

/// Records what it sees in a shared log, under its name.
struct Recorder {
    name: &'static str,
    log: Arc<Mutex<Vec<String>>>,
    /// Refuse calls of this method.
    refuse: Option<&'static str>,
}

impl Interceptor for Recorder {
    fn before(&self, call: &mut Outgoing<'_>) -> geerpc::Result<()> {
        let has_deadline = call.deadline().is_some();
        self.log.lock().unwrap().push(format!(
            "before {} {} deadline={has_deadline} seen={}",
            self.name,
            call.service_method(),
            call.meta().len()
        ));
        if self.refuse == Some(call.service_method()) {
            return Err(Error::Shutdown("refused by the interceptor"));
        }
        call.meta_mut().insert(format!("by-{}", self.name), "1")
    }

    fn after(&self, call: &Finished<'_>) {
        let code = call.code().map_or("ok".to_string(), |c| c.to_string());
        assert_eq!(call.is_ok(), call.code().is_none());
        assert_eq!(
            call.error().is_some(),
            !call.is_ok() && call.code() != Some(Code::Cancelled)
        );
        assert!(call.addr().to_string().starts_with("tcp@127.0.0.1:"));
        assert!(call.elapsed() < Duration::from_secs(10));
        self.log.lock().unwrap().push(format!(
            "after {} {} {code}",
            self.name,
            call.service_method()
        ));
    }
}

fn client_with(
    fake: &FakeServer,
    log: &Arc<Mutex<Vec<String>>>,
    refuse: Option<&'static str>,
) -> Client {
    Client::builder()
        .interceptor(Recorder {
            name: "a",
            log: log.clone(),
            refuse: None,
        })
        .interceptor(Recorder {
            name: "b",
            log: log.clone(),
            refuse,
        })
        .dial(&fake.addr)
        .unwrap()
}

fn take(log: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
    std::mem::take(&mut *log.lock().unwrap())
}

#[test]
fn befores_run_in_order_afters_in_reverse_and_the_server_sees_their_meta() {
    let fake = FakeServer::start(Answer::One);
    let log = Arc::new(Mutex::new(Vec::new()));
    let client = client_with(&fake, &log, None);
    let _: i64 = client.call("Arith.Sum", &(1, 2)).unwrap();
    assert_eq!(
        take(&log),
        [
            "before a Arith.Sum deadline=false seen=0",
            "before b Arith.Sum deadline=false seen=1",
            "after b Arith.Sum ok",
            "after a Arith.Sum ok",
        ]
    );
    let seen = fake.next();
    assert_eq!(seen.meta("by-a").as_deref(), Some("1"));
    assert_eq!(seen.meta("by-b").as_deref(), Some("1"));

    // A `go` call: the afters have run by the time its result is handed out.
    let opts = CallOptions::new().timeout(Duration::from_secs(5));
    let call = client
        .go_with::<_, i64>("Arith.Sum", &(1, 2), &opts)
        .unwrap();
    assert_eq!(call.wait().unwrap(), 1);
    assert_eq!(
        take(&log),
        [
            "before a Arith.Sum deadline=true seen=0",
            "before b Arith.Sum deadline=true seen=1",
            "after b Arith.Sum ok",
            "after a Arith.Sum ok",
        ]
    );
    assert!(fake.next().timeout().is_some());
}

#[test]
fn a_refusal_sends_nothing_and_the_earlier_afters_see_it() {
    let fake = FakeServer::start(Answer::One);
    let log = Arc::new(Mutex::new(Vec::new()));
    let client = client_with(&fake, &log, Some("Arith.Secret"));
    let err = client.call::<_, i64>("Arith.Secret", &(1, 2)).unwrap_err();
    assert!(matches!(err, Error::Shutdown(_)), "{err}");
    assert_eq!(
        take(&log),
        [
            "before a Arith.Secret deadline=false seen=0",
            "before b Arith.Secret deadline=false seen=1",
            "after a Arith.Secret unavailable",
        ]
    );
    // The next call is the first request the server sees, as Seq 1.
    let _: i64 = client.call("Arith.Sum", &(1, 2)).unwrap();
    let seen = fake.next();
    assert_eq!(seen.header["ServiceMethod"], "Arith.Sum");
    assert_eq!(seen.header["Seq"], 1);
    assert!(fake.seen.try_recv().is_err());
}

#[test]
fn after_sees_every_way_a_call_ends() {
    let fake = FakeServer::start(Answer::Never);
    let log = Arc::new(Mutex::new(Vec::new()));
    let client = client_with(&fake, &log, None);

    // A timeout: deadline_exceeded.
    let err = client
        .call_timeout::<_, i64>("Arith.Slow", &(1, 2), Duration::from_millis(30))
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    let l = take(&log);
    assert_eq!(
        &l[2..],
        [
            "after b Arith.Slow deadline_exceeded",
            "after a Arith.Slow deadline_exceeded"
        ]
    );

    // A `go` call waited with a timeout.
    let call = client.go::<_, i64>("Arith.Slow", &(1, 2)).unwrap();
    let _ = call.wait_timeout(Duration::from_millis(10)).unwrap_err();
    assert_eq!(
        &take(&log)[2..],
        [
            "after b Arith.Slow deadline_exceeded",
            "after a Arith.Slow deadline_exceeded"
        ]
    );

    // An abandoned call: cancelled, when its Call is dropped.
    let call = client.go::<_, i64>("Arith.Slow", &(1, 2)).unwrap();
    assert_eq!(take(&log).len(), 2, "no after while it is in flight");
    drop(call);
    assert_eq!(
        take(&log),
        [
            "after b Arith.Slow cancelled",
            "after a Arith.Slow cancelled"
        ]
    );

    // A call in flight when the connection closes.
    let call = client.go::<_, i64>("Arith.Slow", &(1, 2)).unwrap();
    client.close();
    assert!(matches!(call.wait(), Err(Error::ConnectionClosed { .. })));
    assert_eq!(
        &take(&log)[2..],
        ["after b Arith.Slow unknown", "after a Arith.Slow unknown"]
    );

    // Not sent (closed): unavailable.
    let _ = client.call::<_, i64>("Arith.Slow", &(1, 2)).unwrap_err();
    assert_eq!(
        &take(&log)[2..],
        [
            "after b Arith.Slow unavailable",
            "after a Arith.Slow unavailable"
        ]
    );
}

/// A panicking `after` on the reader thread costs neither the call nor
/// the connection.
#[test]
fn a_panicking_after_is_contained() {
    struct Boom;
    impl Interceptor for Boom {
        fn after(&self, _: &Finished<'_>) {
            panic!("after panicked on purpose");
        }
    }
    let fake = FakeServer::start(Answer::One);
    let client = Client::builder()
        .interceptor(Boom)
        .dial(&fake.addr)
        .unwrap();
    for _ in 0..3 {
        let call = client.go::<_, i64>("Arith.Sum", &(1, 2)).unwrap();
        assert_eq!(call.wait_timeout(Duration::from_secs(5)).unwrap(), 1);
    }
    assert!(client.is_alive());
}
