//! Server interceptors: their order around the handler, a refusal that
//! never reaches it, what `after` is told, and what they set on replies.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use geerpc::server::{Interceptor, Outcome};
use geerpc::{Client, Code, Context, Server, Service, Status};

type Log = Arc<Mutex<Vec<String>>>;

/// Logs its `before` and `after`; refuses calls to `refuse` with
/// `permission_denied`.
struct Step {
    name: &'static str,
    log: Log,
    refuse: Option<&'static str>,
}

impl Interceptor for Step {
    fn before(&self, ctx: &Context) -> Result<(), Status> {
        self.log
            .lock()
            .unwrap()
            .push(format!("{} before {}", self.name, ctx.service_method()));
        if self.refuse == Some(ctx.service_method()) {
            ctx.set_reply_meta("refused-by", self.name).unwrap();
            return Err(Status::permission_denied(format!("{} says no", self.name)));
        }
        Ok(())
    }

    fn after(&self, _: &Context, outcome: &Outcome<'_>) {
        self.log.lock().unwrap().push(format!(
            "{} after {} {}",
            self.name,
            outcome.code().map_or("-", Code::as_str),
            outcome.error().unwrap_or("ok")
        ));
    }
}

fn server(log: &Log, runs: &Arc<AtomicUsize>) -> Server {
    let step = |name, refuse| Step {
        name,
        log: log.clone(),
        refuse,
    };
    let server = Server::builder()
        .interceptor(step("a", None))
        .interceptor(step("b", Some("Count.Refused")))
        .interceptor(step("c", None))
        .build();
    let (l, r) = (log.clone(), runs.clone());
    let (l2, r2) = (log.clone(), runs.clone());
    server
        .register(
            Service::new("Count")
                .method("Bump", move |_: Args| {
                    l.lock().unwrap().push("handler".into());
                    Ok::<_, String>(r.fetch_add(1, Ordering::SeqCst) as i64 + 1)
                })
                .method("Refused", move |_: Args| {
                    l2.lock().unwrap().push("handler".into());
                    Ok::<_, String>(r2.fetch_add(1, Ordering::SeqCst) as i64 + 1)
                }),
        )
        .unwrap();
    server
}

#[test]
fn interceptors_run_in_order_around_the_handler() {
    init_log();
    let log = Log::default();
    let runs = Arc::new(AtomicUsize::new(0));
    let running = start_with(server(&log, &runs));
    let client = Client::dial(running.addr()).unwrap();
    let n: i64 = client
        .call("Count.Bump", &Args { num1: 0, num2: 0 })
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        *log.lock().unwrap(),
        [
            "a before Count.Bump",
            "b before Count.Bump",
            "c before Count.Bump",
            "handler",
            "c after - ok",
            "b after - ok",
            "a after - ok",
        ]
    );
    // A handler's error is what `after` sees.
    log.lock().unwrap().clear();
    let err = client
        .call::<_, i64>("Arith.Fail", &Args { num1: 0, num2: 0 })
        .unwrap_err();
    assert_eq!(err.to_string(), "boom: it failed");
    assert_eq!(
        log.lock().unwrap().last().map(String::as_str),
        Some("a after - boom: it failed")
    );
}

#[test]
fn a_refused_call_never_reaches_the_handler() {
    init_log();
    let log = Log::default();
    let runs = Arc::new(AtomicUsize::new(0));
    let running = start_with(server(&log, &runs));
    let client = Client::dial(running.addr()).unwrap();
    let err = client
        .call::<_, i64>("Count.Refused", &Args { num1: 0, num2: 0 })
        .unwrap_err();
    assert_eq!(err.remote_code(), Some(&Code::PermissionDenied), "{err:?}");
    assert_eq!(err.to_string(), "b says no");
    assert_eq!(runs.load(Ordering::SeqCst), 0, "the handler ran");
    // b refused: c's before never ran; a's after saw the refusal; b's did
    // not run (its before did not let the call through).
    assert_eq!(
        *log.lock().unwrap(),
        [
            "a before Count.Refused",
            "b before Count.Refused",
            "a after permission_denied b says no",
        ]
    );
    // The connection goes on.
    let n: i64 = client
        .call("Count.Bump", &Args { num1: 0, num2: 0 })
        .unwrap();
    assert_eq!(n, 1);
}

/// Panics in `before` or `after`: the call gets `internal`, the connection
/// and the server go on.
#[test]
fn a_panicking_interceptor_fails_its_call_only() {
    init_log();
    struct Bad;
    impl Interceptor for Bad {
        fn before(&self, ctx: &Context) -> Result<(), Status> {
            if ctx.service_method() == "Arith.Sum" {
                panic!("before broke");
            }
            Ok(())
        }
        fn after(&self, _: &Context, _: &Outcome<'_>) {
            panic!("after broke");
        }
    }
    let running = start_with(Server::builder().interceptor(Bad).build());
    let client = Client::dial(running.addr()).unwrap();
    let err = client
        .call::<_, i64>("Arith.Sum", &Args { num1: 1, num2: 2 })
        .unwrap_err();
    assert_eq!(err.remote_code(), Some(&Code::Internal), "{err:?}");
    // `after` panics, the reply still goes out.
    let v: serde_json::Value = client.call("Echo.Echo", &"hi").unwrap();
    assert_eq!(v, "hi");
}

/// A call whose deadline passes in the interceptors never starts its
/// handler (a raw request with a 50 ms `Timeout`; the interceptor waits
/// until the context says it expired).
#[test]
fn no_handler_starts_after_its_deadline_passed_in_the_interceptors() {
    use std::io::{BufRead, BufReader, Write};
    use std::time::{Duration, Instant};
    init_log();
    struct Slow;
    impl Interceptor for Slow {
        fn before(&self, ctx: &Context) -> Result<(), Status> {
            let until = Instant::now() + Duration::from_secs(10);
            while !ctx.is_expired() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(())
        }
    }
    let runs = Arc::new(AtomicUsize::new(0));
    let runs2 = runs.clone();
    let server = Server::builder().interceptor(Slow).build();
    server
        .register(Service::new("Count").method("Bump", move |_: Args| {
            Ok::<_, String>(runs2.fetch_add(1, Ordering::SeqCst) as i64 + 1)
        }))
        .unwrap();
    let running = start_with(server);
    let mut s = std::net::TcpStream::connect(running.addr().target()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"{\"MagicNumber\":3882844,\"CodecType\":\"application/json\"}\n\
          {\"ServiceMethod\":\"Count.Bump\",\"Seq\":1,\"Error\":\"\",\"Timeout\":50000000}\n\
          {\"Num1\":1,\"Num2\":2}\n",
    )
    .unwrap();
    let mut rd = BufReader::new(s);
    let mut line = String::new();
    rd.read_line(&mut line).unwrap();
    let h: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(h["Code"], "deadline_exceeded", "{h}");
    assert!(
        h["Error"]
            .as_str()
            .unwrap()
            .ends_with("(in its interceptors)"),
        "{h}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0, "the handler ran");
}
