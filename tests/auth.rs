//! The authentication hook: `ServerBuilder::authenticator` with the
//! ready-made `BearerAuth`. Missing and wrong tokens get
//! `unauthenticated`, a method outside a token's allow list
//! `permission_denied`, and the handler never runs for them; the token
//! travels per client or per call (`Client` with each codec, and an
//! `XClient`), and shows in no error text and no log line.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use common::Args;
use geerpc::server::{BearerAuth, Interceptor, ServerHandle};
use geerpc::{
    CallOptions, Client, Code, Codec, Context, MultiServerDiscovery, SelectMode, Server, Service,
    Status, Token, XClient,
};

/// The tokens' values: none may show in an error or a log line.
const ADMIN: &str = "adm1n-s3cret-VALUE";
const SUMMER: &str = "summ3r-s3cret-VALUE";
const ECHOER: &str = "ech0er-s3cret-VALUE";
const WRONG: &str = "wr0ng-s3cret-VALUE";

fn token(value: &str) -> Token {
    Token::new(value).unwrap()
}

/// Every log record of this test binary, as text (the tests run in
/// parallel in one process: assertions look for their own markers).
fn logs() -> &'static Mutex<Vec<String>> {
    static LOGS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    LOGS.get_or_init(|| Mutex::new(Vec::new()))
}

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        logs()
            .lock()
            .unwrap()
            .push(format!("{} {}", record.level(), record.args()));
    }
    fn flush(&self) {}
}

fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        log::set_boxed_logger(Box::new(Capture)).unwrap();
        log::set_max_level(log::LevelFilter::Trace);
    });
}

/// A server whose handlers count their runs: `Arith.Sum`, `Arith.Mul`,
/// `Echo.Echo` and `Echo.Other`. Tokens: `admin` may call everything,
/// `summer` all of `Arith`, `echoer` `Echo.Echo` only. `Echo.Who` answers
/// the credential's name (through `BearerAuth::caller`).
struct Fixture {
    running: ServerHandle,
    runs: Arc<AtomicUsize>,
    server: Server,
}

fn fixture() -> Fixture {
    capture_logs();
    let auth = Arc::new(
        BearerAuth::new()
            .token("admin", token(ADMIN), ["*"])
            .token("summer", token(SUMMER), ["Arith"])
            .token("echoer", token(ECHOER), ["Echo.Echo", "Echo.Who"]),
    );
    let server = Server::builder().authenticator(auth.clone()).build();
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = |runs: &Arc<AtomicUsize>| {
        let runs = runs.clone();
        move |a: Args| {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>(a.num1 + a.num2)
        }
    };
    server
        .register(
            Service::new("Arith")
                .method("Sum", counted(&runs))
                .method("Mul", counted(&runs)),
        )
        .unwrap();
    server
        .register(
            Service::new("Echo")
                .method("Echo", counted(&runs))
                .method("Other", counted(&runs))
                .method_with_context("Who", move |ctx: &Context, _: Args| {
                    Ok::<_, String>(auth.caller(ctx).unwrap_or("nobody").to_string())
                }),
        )
        .unwrap();
    let running = server.listen("tcp@127.0.0.1:0").unwrap();
    Fixture {
        running,
        runs,
        server,
    }
}

const ARGS: Args = Args { num1: 2, num2: 3 };

fn client(f: &Fixture, codec: Codec, bearer: Option<&str>) -> Client {
    let mut b = Client::builder().codec(codec);
    if let Some(t) = bearer {
        b = b.bearer(&token(t)).unwrap();
    }
    b.dial(f.running.addr()).unwrap()
}

/// A call's error: its code and text, the text checked free of secrets.
fn refused(r: geerpc::Result<i64>) -> (Code, String) {
    let e = r.expect_err("the call should be refused");
    let text = e.to_string();
    for secret in [ADMIN, SUMMER, ECHOER, WRONG] {
        assert!(!text.contains(secret), "a token in the error: {text}");
    }
    (e.code(), text)
}

#[test]
fn missing_and_wrong_tokens_are_unauthenticated_and_the_handler_never_runs() {
    let f = fixture();
    for codec in [Codec::Json, Codec::MsgPack] {
        let anonymous = client(&f, codec, None);
        let (code, text) = refused(anonymous.call("Arith.Sum", &ARGS));
        assert_eq!(code, Code::Unauthenticated, "{codec:?}: {text}");
        assert!(text.contains("missing credentials"), "{text}");

        let wrong = client(&f, codec, Some(WRONG));
        let (code, text) = refused(wrong.call("Arith.Sum", &ARGS));
        assert_eq!(code, Code::Unauthenticated, "{codec:?}: {text}");
        assert!(text.contains("invalid token"), "{text}");

        // Not a bearer value at all.
        let basic = CallOptions::new()
            .meta("authorization", format!("Basic {ADMIN}"))
            .unwrap();
        let (code, _) = refused(anonymous.call_with("Arith.Sum", &ARGS, &basic));
        assert_eq!(code, Code::Unauthenticated);
    }
    assert_eq!(f.runs.load(Ordering::SeqCst), 0, "a handler ran");
    // Still serving: the same connection, with a token, gets through.
    let admin = client(&f, Codec::Json, Some(ADMIN));
    assert_eq!(admin.call::<_, i64>("Arith.Sum", &ARGS).unwrap(), 5);
    assert_eq!(f.runs.load(Ordering::SeqCst), 1);
}

#[test]
fn allow_lists_per_service_and_per_method_give_permission_denied() {
    let f = fixture();
    for codec in [Codec::Json, Codec::MsgPack] {
        let before = f.runs.load(Ordering::SeqCst);
        // `summer`: the whole of Arith, nothing of Echo.
        let summer = client(&f, codec, Some(SUMMER));
        assert_eq!(summer.call::<_, i64>("Arith.Sum", &ARGS).unwrap(), 5);
        assert_eq!(summer.call::<_, i64>("Arith.Mul", &ARGS).unwrap(), 5);
        let (code, text) = refused(summer.call("Echo.Echo", &ARGS));
        assert_eq!(code, Code::PermissionDenied, "{codec:?}: {text}");
        assert!(
            text.contains("Echo.Echo") && text.contains("\"summer\""),
            "the method and the token's name: {text}"
        );
        // `echoer`: Echo.Echo only, not the rest of Echo.
        let echoer = client(&f, codec, Some(ECHOER));
        assert_eq!(echoer.call::<_, i64>("Echo.Echo", &ARGS).unwrap(), 5);
        let (code, text) = refused(echoer.call("Echo.Other", &ARGS));
        assert_eq!(code, Code::PermissionDenied, "{text}");
        let (code, _) = refused(echoer.call("Arith.Sum", &ARGS));
        assert_eq!(code, Code::PermissionDenied);
        // `admin`: everything.
        let admin = client(&f, codec, Some(ADMIN));
        assert_eq!(admin.call::<_, i64>("Echo.Other", &ARGS).unwrap(), 5);
        // Only the four allowed calls ran.
        assert_eq!(f.runs.load(Ordering::SeqCst) - before, 4, "{codec:?}");
    }
}

#[test]
fn a_call_s_own_token_wins_over_the_client_s_and_the_handler_learns_its_name() {
    let f = fixture();
    let echoer = client(&f, Codec::Json, Some(ECHOER));
    let who: String = echoer.call("Echo.Who", &ARGS).unwrap();
    assert_eq!(who, "echoer");
    let as_admin = CallOptions::new().bearer(&token(ADMIN)).unwrap();
    let who: String = echoer.call_with("Echo.Who", &ARGS, &as_admin).unwrap();
    assert_eq!(who, "admin");
    assert_eq!(
        echoer
            .call_with::<_, i64>("Arith.Sum", &ARGS, &as_admin)
            .unwrap(),
        5
    );
    let wrong = CallOptions::new().bearer(&token(WRONG)).unwrap();
    let (code, _) = refused(echoer.call_with("Echo.Echo", &ARGS, &wrong));
    assert_eq!(code, Code::Unauthenticated);
    // A per-call token on a client that has none.
    let anonymous = client(&f, Codec::MsgPack, None);
    assert_eq!(
        anonymous
            .call_with::<_, i64>("Arith.Sum", &ARGS, &as_admin)
            .unwrap(),
        5
    );
}

#[test]
fn refusals_count_as_failed_calls_in_the_method_s_stats() {
    let f = fixture();
    let anonymous = client(&f, Codec::Json, None);
    let summer = client(&f, Codec::Json, Some(SUMMER));
    refused(anonymous.call("Arith.Mul", &ARGS));
    refused(summer.call("Echo.Other", &ARGS));
    assert_eq!(summer.call::<_, i64>("Arith.Mul", &ARGS).unwrap(), 5);
    let stats = |service: &str, method: &str| {
        let svc = f
            .server
            .services()
            .into_iter()
            .find(|s| s.name == service)
            .unwrap();
        svc.methods
            .into_iter()
            .find(|m| m.name == method)
            .unwrap()
            .stats
    };
    let mul = stats("Arith", "Mul");
    assert_eq!((mul.calls, mul.errors), (2, 1), "{mul:?}");
    let other = stats("Echo", "Other");
    assert_eq!((other.calls, other.errors), (1, 1), "{other:?}");
}

/// Counts the calls its `before` and `after` see.
#[derive(Default)]
struct Counting {
    before: AtomicUsize,
    after: AtomicUsize,
}

impl Interceptor for Counting {
    fn before(&self, _: &Context) -> Result<(), Status> {
        self.before.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn after(&self, _: &Context, _: &geerpc::server::Outcome<'_>) {
        self.after.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn the_authenticator_runs_before_plain_interceptors_added_earlier() {
    // One plain interceptor added before the authenticator, one after:
    // neither sees a refused call, both see an accepted one.
    let early = Arc::new(Counting::default());
    let late = Arc::new(Counting::default());
    let (e, l) = (early.clone(), late.clone());
    capture_logs();
    let auth = BearerAuth::new().token("summer", token(SUMMER), ["Arith"]);
    let server = Server::builder()
        .interceptor(e)
        .authenticator(auth)
        .interceptor(l)
        .build();
    server.register(common::arith()).unwrap();
    let running = server.listen("tcp@127.0.0.1:0").unwrap();
    let anonymous = Client::dial(running.addr()).unwrap();
    let (code, _) = refused(anonymous.call("Arith.Sum", &ARGS));
    assert_eq!(code, Code::Unauthenticated);
    for c in [&early, &late] {
        assert_eq!(c.before.load(Ordering::SeqCst), 0);
        assert_eq!(c.after.load(Ordering::SeqCst), 0);
    }
    let summer = Client::builder()
        .bearer(&token(SUMMER))
        .unwrap()
        .dial(running.addr())
        .unwrap();
    assert_eq!(summer.call::<_, i64>("Arith.Sum", &ARGS).unwrap(), 5);
    for c in [&early, &late] {
        assert_eq!(c.before.load(Ordering::SeqCst), 1);
        assert_eq!(c.after.load(Ordering::SeqCst), 1);
    }
}

#[test]
fn an_audit_interceptor_added_as_the_first_authenticator_sees_refusals() {
    // First in line, an audit sees every call and, in `after`, the
    // refusal's code.
    struct Audit(Mutex<Vec<Option<Code>>>);
    impl Interceptor for Audit {
        fn after(&self, _: &Context, o: &geerpc::server::Outcome<'_>) {
            self.0.lock().unwrap().push(o.code().cloned());
        }
    }
    capture_logs();
    let audit = Arc::new(Audit(Mutex::new(Vec::new())));
    let server = Server::builder()
        .authenticator(audit.clone())
        .authenticator(BearerAuth::new().token("summer", token(SUMMER), ["Arith"]))
        .build();
    server.register(common::arith()).unwrap();
    let running = server.listen("tcp@127.0.0.1:0").unwrap();
    let anonymous = Client::dial(running.addr()).unwrap();
    refused(anonymous.call("Arith.Sum", &ARGS));
    let summer = Client::builder()
        .bearer(&token(SUMMER))
        .unwrap()
        .dial(running.addr())
        .unwrap();
    assert_eq!(summer.call::<_, i64>("Arith.Sum", &ARGS).unwrap(), 5);
    assert_eq!(
        *audit.0.lock().unwrap(),
        vec![Some(Code::Unauthenticated), None]
    );
}

#[test]
fn an_xclient_sends_its_token_and_gets_the_codes() {
    let f = fixture();
    let xclient = |bearer: Option<&str>| {
        let mut b = Client::builder().codec(Codec::MsgPack);
        if let Some(t) = bearer {
            b = b.bearer(&token(t)).unwrap();
        }
        let d = MultiServerDiscovery::new([f.running.addr().to_string()]);
        XClient::builder(d)
            .select_mode(SelectMode::RoundRobin)
            .client(b)
            .build()
    };
    let summer = xclient(Some(SUMMER));
    assert_eq!(summer.call::<_, i64>("Arith.Sum", &ARGS).unwrap(), 5);
    let (code, text) = refused(summer.call("Echo.Echo", &ARGS));
    assert_eq!(code, Code::PermissionDenied, "{text}");
    let anonymous = xclient(None);
    let (code, _) = refused(anonymous.call("Arith.Sum", &ARGS));
    assert_eq!(code, Code::Unauthenticated);
    // Per call, over the XClient's default.
    let as_admin = CallOptions::new().bearer(&token(ADMIN)).unwrap();
    assert_eq!(
        anonymous
            .call_with::<_, i64>("Echo.Echo", &ARGS, &as_admin)
            .unwrap(),
        5
    );
    // A refusal is the service's answer: the instance is not evicted.
    assert!(anonymous.evicted().is_empty());
    assert_eq!(f.runs.load(Ordering::SeqCst), 2);
}

#[test]
fn refusals_are_logged_once_without_any_token() {
    capture_logs();
    // A service of its own, so that this test's lines can be told from
    // those of the tests running next to it.
    let auth = BearerAuth::new()
        .token("summer", token(SUMMER), ["Arith"])
        .token("admin", token(ADMIN), ["*"]);
    let server = Server::builder().authenticator(auth).build();
    server
        .register(Service::new("Logged").method("Run", |a: Args| Ok::<_, String>(a.num1)))
        .unwrap();
    let running = server.listen("tcp@127.0.0.1:0").unwrap();
    let dial = |bearer: Option<&str>| {
        let mut b = Client::builder();
        if let Some(t) = bearer {
            b = b.bearer(&token(t)).unwrap();
        }
        b.dial(running.addr()).unwrap()
    };
    refused(dial(Some(WRONG)).call("Logged.Run", &ARGS));
    refused(dial(Some(SUMMER)).call("Logged.Run", &ARGS));
    refused(dial(None).call("Logged.Run", &ARGS));
    assert_eq!(
        dial(Some(ADMIN))
            .call::<_, i64>("Logged.Run", &ARGS)
            .unwrap(),
        2
    );
    let all = logs().lock().unwrap().clone();
    for line in &all {
        for secret in [ADMIN, SUMMER, ECHOER, WRONG] {
            assert!(!line.contains(secret), "a token in a log line: {line}");
        }
    }
    let mine: Vec<&String> = all.iter().filter(|l| l.contains("Logged.Run")).collect();
    let refusal = |what: &str| mine.iter().filter(|l| l.contains(what)).count();
    assert_eq!(refusal("invalid token"), 1, "{mine:#?}");
    assert_eq!(refusal("\"summer\" may not call"), 1, "{mine:#?}");
    assert_eq!(refusal("missing credentials"), 1, "{mine:#?}");
    assert_eq!(mine.len(), 3, "one line per refusal: {mine:#?}");
}
