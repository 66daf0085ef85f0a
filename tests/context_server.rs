//! The server's side of the call context (PROTOCOL.md section 8), driven by
//! raw Go-style byte streams in both codecs: a call's deadline from its
//! `Timeout` and its arrival, `Meta` in and out, codes on error replies, and
//! a handler's view of expiry and of its caller leaving.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use geerpc::context::Scope;
use geerpc::server::ServerHandle;
use geerpc::{Client, Code, Context, Error, Server, Service, Status};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// What `Ctx.Look` saw of its call.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct View {
    deadline: bool,
    remaining_ms: Option<u64>,
    tenant: Option<String>,
    trace_id: Option<String>,
    /// The thread's scope is the call's: same deadline.
    scope_matches: bool,
}

impl View {
    /// What a call with no deadline, `Meta` or trace shows.
    const NONE: View = View {
        deadline: false,
        remaining_ms: None,
        tenant: None,
        trace_id: None,
        scope_matches: true,
    };
}

/// `Count.Bump` (counts runs) and `Ctx.Look` (tells what it saw, and sets
/// `served-by` on its reply).
fn services(runs: Arc<AtomicUsize>) -> (Service, Service) {
    let count = Service::new("Count").method("Bump", move |_: Args| {
        Ok::<_, String>(runs.fetch_add(1, Ordering::SeqCst) as i64 + 1)
    });
    let ctx = Service::new("Ctx")
        .method_with_context("Look", |ctx: &Context, _: Args| {
            ctx.set_reply_meta("served-by", "look")
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(View {
                deadline: ctx.deadline().is_some(),
                remaining_ms: ctx.remaining().map(|d| d.as_millis() as u64),
                tenant: ctx.meta().get("tenant").map(str::to_string),
                trace_id: ctx.trace().map(|t| t.trace_id()),
                scope_matches: Scope::current().deadline() == ctx.deadline(),
            })
        })
        .method_with_context("Fail", |ctx: &Context, _: Args| -> Result<i64, Status> {
            ctx.set_reply_meta("retry-after", "5")
                .map_err(|e| Status::internal(e.to_string()))?;
            Err(Status::new(Code::FailedPrecondition, "not yet"))
        });
    (count, ctx)
}

fn serve(server: Server) -> (ServerHandle, Arc<AtomicUsize>) {
    let runs = Arc::new(AtomicUsize::new(0));
    let (count, ctx) = services(runs.clone());
    server.register(count).unwrap();
    server.register(ctx).unwrap();
    (start_with(server), runs)
}

#[derive(Clone, Copy, Debug)]
enum Wire {
    Json,
    MsgPack,
}

/// A raw Go-style connection: the Option line, then headers and bodies
/// written and read by hand in either codec.
struct Raw {
    wire: Wire,
    out: TcpStream,
    rd: BufReader<TcpStream>,
}

impl Raw {
    fn open(addr: &geerpc::Address, wire: Wire, handle_timeout_ns: u64) -> Raw {
        let s = TcpStream::connect(addr.target()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let codec = match wire {
            Wire::Json => "application/json",
            Wire::MsgPack => "application/msgpack",
        };
        let mut raw = Raw {
            wire,
            out: s.try_clone().unwrap(),
            rd: BufReader::new(s),
        };
        raw.out
            .write_all(
                format!(
                    "{{\"MagicNumber\":3882844,\"CodecType\":\"{codec}\",\
                     \"ConnectTimeout\":0,\"HandleTimeout\":{handle_timeout_ns}}}\n"
                )
                .as_bytes(),
            )
            .unwrap();
        raw
    }

    fn encode(&self, v: &Value) -> Vec<u8> {
        match self.wire {
            Wire::Json => format!("{v}\n").into_bytes(),
            Wire::MsgPack => rmp_serde::to_vec_named(v).unwrap(),
        }
    }

    /// The bytes of one request.
    fn request(&self, header: Value, body: Value) -> Vec<u8> {
        let mut out = self.encode(&header);
        out.extend(self.encode(&body));
        out
    }

    fn send(&mut self, header: Value, body: Value) {
        let bytes = self.request(header, body);
        self.out.write_all(&bytes).unwrap();
    }

    fn next(&mut self) -> Value {
        match self.wire {
            Wire::Json => {
                let mut line = String::new();
                assert!(self.rd.read_line(&mut line).unwrap() > 0, "closed");
                serde_json::from_str(&line).unwrap()
            }
            Wire::MsgPack => rmp_serde::from_read(&mut self.rd).unwrap(),
        }
    }

    /// The next reply: header and body.
    fn reply(&mut self) -> (Value, Value) {
        (self.next(), self.next())
    }
}

fn header(method: &str, seq: u64) -> Value {
    json!({"ServiceMethod": method, "Seq": seq, "Error": ""})
}

fn with(mut h: Value, key: &str, v: Value) -> Value {
    h[key] = v;
    h
}

fn args() -> Value {
    json!({"Num1": 1, "Num2": 2})
}

#[test]
fn a_request_whose_timeout_passed_on_arrival_is_not_run_in_either_codec() {
    init_log();
    for wire in [Wire::Json, Wire::MsgPack] {
        let (running, runs) = serve(Server::new());
        let mut c = Raw::open(running.addr(), wire, 0);
        // 1 ns: gone by the time anything could run it.
        c.send(with(header("Count.Bump", 1), "Timeout", json!(1)), args());
        let (h, body) = c.reply();
        assert_eq!(h["Code"], "deadline_exceeded", "{wire:?}: {h}");
        let text = h["Error"].as_str().unwrap();
        assert!(
            text.starts_with(
                "rpc server: call Count.Bump: deadline exceeded before the handler ran (budget 1ns, waited "
            ),
            "{wire:?}: {text}"
        );
        assert_eq!(body, json!({}));
        assert_eq!(runs.load(Ordering::SeqCst), 0, "{wire:?}: the handler ran");
        // The connection goes on; a call without a Timeout runs.
        c.send(header("Count.Bump", 2), args());
        let (h, body) = c.reply();
        assert_eq!(h, header("Count.Bump", 2), "{wire:?}");
        assert_eq!(body, json!(1));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Counted apart from the method's calls.
        let stats = running.server().services();
        let count = stats.iter().find(|s| s.name == "Count").unwrap();
        let bump = count.methods[0].stats;
        assert_eq!((bump.calls, bump.expired), (1, 1), "{wire:?}");
    }
}

/// The wait in our own buffer counts: the server reads both requests in
/// one go, runs the first (slow) one, and may not start another thread
/// (`max_concurrent_calls(1)`), so the second waits past its budget.
#[test]
fn a_request_whose_budget_runs_out_in_the_buffer_is_not_run() {
    init_log();
    let server = Server::builder().max_concurrent_calls(1).build();
    let (running, runs) = serve(server);
    let mut c = Raw::open(running.addr(), Wire::Json, 0);
    let mut both = c.request(header("Arith.SleepMs", 1), json!({"Num1": 300, "Num2": 0}));
    both.extend(c.request(
        with(header("Count.Bump", 2), "Timeout", json!(100_000_000u64)),
        args(),
    ));
    c.out.write_all(&both).unwrap();
    let (h, body) = c.reply();
    assert_eq!((h, body), (header("Arith.SleepMs", 1), json!(300)));
    let (h, _) = c.reply();
    assert_eq!(h["Seq"], 2);
    assert_eq!(h["Code"], "deadline_exceeded", "{h}");
    let text = h["Error"].as_str().unwrap();
    assert!(
        text.contains("before the handler ran (budget 100ms, waited "),
        "{text}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0, "the handler ran");
}

#[test]
fn a_go_style_stream_with_timeout_and_meta_reaches_the_handler() {
    init_log();
    for wire in [Wire::Json, Wire::MsgPack] {
        let (running, _) = serve(Server::new());
        let mut c = Raw::open(running.addr(), wire, 0);
        let h = with(header("Ctx.Look", 7), "Timeout", json!(5_000_000_000u64));
        let h = with(
            h,
            "Meta",
            json!({"tenant": "acme", "traceparent": TRACEPARENT}),
        );
        c.send(h, args());
        let (h, body) = c.reply();
        // Go's three fields, and the reply Meta the handler set.
        assert_eq!(
            h,
            json!({"ServiceMethod": "Ctx.Look", "Seq": 7, "Error": "",
                   "Meta": {"served-by": "look"}}),
            "{wire:?}"
        );
        let view: View = serde_json::from_value(body).unwrap();
        assert!(view.deadline && view.scope_matches, "{wire:?}: {view:?}");
        let left = view.remaining_ms.unwrap();
        assert!((1_000..=5_000).contains(&left), "{wire:?}: {left} ms left");
        assert_eq!(view.tenant.as_deref(), Some("acme"));
        assert_eq!(view.trace_id.as_deref(), Some(TRACE_ID));
    }
}

/// A connection's thread reuses one `Context` for its calls: nothing of a
/// call (deadline, `Meta`, trace, reply `Meta`) may reach the next one.
#[test]
fn a_connection_s_next_call_sees_nothing_of_the_previous_one() {
    init_log();
    let (running, _) = serve(Server::new());
    for wire in [Wire::Json, Wire::MsgPack] {
        let mut c = Raw::open(running.addr(), wire, 0);
        let h = with(header("Ctx.Look", 1), "Timeout", json!(5_000_000_000u64));
        let h = with(
            h,
            "Meta",
            json!({"tenant": "acme", "traceparent": TRACEPARENT}),
        );
        c.send(h, args());
        let (_, body) = c.reply();
        let view: View = serde_json::from_value(body).unwrap();
        assert_eq!(view.tenant.as_deref(), Some("acme"), "{wire:?}");
        // The same connection, a call with none of it.
        c.send(header("Ctx.Look", 2), args());
        let (h, body) = c.reply();
        let view: View = serde_json::from_value(body).unwrap();
        assert_eq!(view, View::NONE, "{wire:?}");
        assert_eq!(h["Meta"], json!({"served-by": "look"}), "{wire:?}");
        // An error reply's Meta does not reach the next reply either.
        c.send(header("Ctx.Fail", 3), args());
        let (h, _) = c.reply();
        assert_eq!(h["Meta"], json!({"retry-after": "5"}), "{wire:?}");
        c.send(header("Count.Bump", 4), args());
        let (h, _) = c.reply();
        assert_eq!(
            h,
            json!({"ServiceMethod": "Count.Bump", "Seq": 4, "Error": ""}),
            "{wire:?}"
        );
        // Nor does anything of a request's own header but its method and
        // Seq reach its reply (the server reads each request into the
        // header it writes the reply from).
        let h = with(header("Count.Bump", 5), "Error", json!("from the caller"));
        let h = with(h, "Code", json!("internal"));
        let h = with(h, "Timeout", json!(5_000_000_000u64));
        c.send(h, args());
        let (h, _) = c.reply();
        assert_eq!(
            h,
            json!({"ServiceMethod": "Count.Bump", "Seq": 5, "Error": ""}),
            "{wire:?}"
        );
    }
}

#[test]
fn an_error_reply_carries_its_code_and_the_handler_s_reply_meta() {
    init_log();
    let (running, _) = serve(Server::new());
    for wire in [Wire::Json, Wire::MsgPack] {
        let mut c = Raw::open(running.addr(), wire, 0);
        c.send(header("Ctx.Fail", 3), args());
        let (h, body) = c.reply();
        assert_eq!(
            h,
            json!({"ServiceMethod": "Ctx.Fail", "Seq": 3, "Error": "not yet",
                   "Code": "failed_precondition", "Meta": {"retry-after": "5"}}),
            "{wire:?}"
        );
        assert_eq!(body, json!({}));
    }
}

#[test]
fn a_go_stream_without_the_new_fields_works_as_before() {
    init_log();
    let (running, runs) = serve(Server::new());
    let mut c = Raw::open(running.addr(), Wire::Json, 0);
    c.send(header("Count.Bump", 1), args());
    // Byte for byte what a Go server writes.
    let mut line = String::new();
    c.rd.read_line(&mut line).unwrap();
    assert_eq!(
        line,
        "{\"ServiceMethod\":\"Count.Bump\",\"Seq\":1,\"Error\":\"\"}\n"
    );
    line.clear();
    c.rd.read_line(&mut line).unwrap();
    assert_eq!(line, "1\n");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    c.send(header("Ctx.Look", 2), args());
    let (_, body) = c.reply();
    let view: View = serde_json::from_value(body).unwrap();
    assert_eq!(view, View::NONE);
    // A Go client's HandleTimeout is the handler's deadline.
    let mut c = Raw::open(running.addr(), Wire::Json, 2_000_000_000);
    c.send(header("Ctx.Look", 1), args());
    let (_, body) = c.reply();
    let view: View = serde_json::from_value(body).unwrap();
    assert!(view.deadline && view.scope_matches, "{view:?}");
    assert!(view.remaining_ms.unwrap() <= 2_000, "{view:?}");
}

#[test]
fn bad_meta_gets_invalid_argument_unrun_and_the_connection_goes_on() {
    init_log();
    let (running, runs) = serve(Server::new());
    let many: serde_json::Map<String, Value> =
        (0..65).map(|i| (format!("k{i}"), json!("v"))).collect();
    let big: serde_json::Map<String, Value> = (0..9)
        .map(|i| (format!("k{i}"), json!("x".repeat(1024))))
        .collect();
    let cases = [
        (Value::Object(many), "more than 64 entries"),
        (Value::Object(big), "more than the limit of 8192"),
        (json!({"Tenant": "acme"}), "lowercase"),
        (json!(["not", "a", "map"]), ""),
    ];
    for wire in [Wire::Json, Wire::MsgPack] {
        let mut c = Raw::open(running.addr(), wire, 0);
        for (seq, (meta, why)) in cases.iter().enumerate() {
            let seq = 2 * seq as u64 + 1;
            c.send(
                with(header("Count.Bump", seq), "Meta", meta.clone()),
                args(),
            );
            let (h, body) = c.reply();
            assert_eq!(h["Code"], "invalid_argument", "{wire:?}: {h}");
            let text = h["Error"].as_str().unwrap();
            assert!(
                text.starts_with("rpc server: bad Meta of Count.Bump: ") && text.contains(why),
                "{wire:?}: {text}"
            );
            assert_eq!(body, json!({}));
            assert_eq!(
                runs.load(Ordering::SeqCst),
                0,
                "{wire:?}: ran with bad Meta"
            );
            // The next request on the same connection is served.
            c.send(header("Ctx.Look", seq + 1), args());
            let (h, _) = c.reply();
            assert_eq!(h["Error"], "", "{wire:?}: {h}");
        }
    }
}

#[test]
fn a_handler_sees_its_timeout_pass_and_a_late_result_is_replaced() {
    init_log();
    let (seen_tx, seen_rx) = crossbeam_channel::bounded(1);
    let server = Server::new();
    server
        .register(Service::new("Slow").method_with_context(
            "Spin",
            move |ctx: &Context, _: Args| {
                // Bounded: 10 s at most, whatever the deadline.
                let until = Instant::now() + Duration::from_secs(10);
                while !ctx.is_expired() && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let _ = seen_tx.send(ctx.is_expired() && ctx.is_cancelled());
                Ok::<_, String>(1i64)
            },
        ))
        .unwrap();
    let (running, _) = serve(server);
    let mut c = Raw::open(running.addr(), Wire::Json, 0);
    c.send(
        with(header("Slow.Spin", 1), "Timeout", json!(50_000_000u64)),
        args(),
    );
    assert_eq!(
        seen_rx.recv_timeout(Duration::from_secs(10)),
        Ok(true),
        "the handler did not see its deadline pass"
    );
    let (h, body) = c.reply();
    assert_eq!(h["Code"], "deadline_exceeded", "{h}");
    let text = h["Error"].as_str().unwrap();
    assert!(
        text.starts_with("rpc server: call Slow.Spin: deadline exceeded (budget 50ms, took "),
        "{text}"
    );
    assert_eq!(body, json!({}), "no late result");
}

/// A handler that waits for its caller to leave, up to `Num1` ms; reports
/// whether it saw it.
fn waiter(
    started: crossbeam_channel::Sender<()>,
    seen: crossbeam_channel::Sender<bool>,
) -> Service {
    Service::new("Wait").method_with_context("Gone", move |ctx: &Context, a: Args| {
        let _ = started.send(());
        let until = Instant::now() + Duration::from_millis(a.num1 as u64);
        while !ctx.is_cancelled() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = seen.send(ctx.is_cancelled());
        Ok::<_, String>(0i64)
    })
}

#[test]
fn a_reset_connection_cancels_its_calls_and_a_half_close_does_not() {
    init_log();
    let (started_tx, started_rx) = crossbeam_channel::unbounded();
    let (seen_tx, seen_rx) = crossbeam_channel::unbounded();
    let server = Server::new();
    server.register(waiter(started_tx, seen_tx)).unwrap();
    let (running, _) = serve(server);

    // Reset: the caller is gone.
    let mut c = Raw::open(running.addr(), Wire::Json, 0);
    c.send(header("Wait.Gone", 1), json!({"Num1": 10_000, "Num2": 0}));
    started_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    socket2::SockRef::from(&c.out)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(c);
    assert_eq!(
        seen_rx.recv_timeout(Duration::from_secs(10)),
        Ok(true),
        "the handler did not see its caller leave"
    );

    // Half-close: the caller still waits for the reply; not cancelled.
    let mut c = Raw::open(running.addr(), Wire::Json, 0);
    c.send(header("Wait.Gone", 1), json!({"Num1": 300, "Num2": 0}));
    started_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    c.out.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(seen_rx.recv_timeout(Duration::from_secs(10)), Ok(false));
    let (h, body) = c.reply();
    assert_eq!((h, body), (header("Wait.Gone", 1), json!(0)));
}

#[test]
fn a_handler_s_status_code_reaches_the_client_with_its_text() {
    init_log();
    let slow = start_server();
    let slow_addr = slow.addr().clone();
    let server = Server::new();
    server
        .register(
            Service::new("Codes")
                .method("Exists", |_: Args| -> Result<i64, Status> {
                    Err(Status::new(Code::AlreadyExists, "user 7 exists"))
                })
                .method(
                    "Boxed",
                    |_: Args| -> Result<i64, Box<dyn std::error::Error + Send + Sync>> {
                        Err(Box::new(Status::permission_denied("not yours")))
                    },
                )
                .method("Relay", move |_: Args| -> Result<i64, Error> {
                    // A call the handler makes runs out of time: its
                    // deadline_exceeded passes through.
                    let c = Client::dial(&slow_addr)?;
                    c.call_timeout(
                        "Arith.SleepMs",
                        &Args {
                            num1: 2_000,
                            num2: 0,
                        },
                        Duration::from_millis(20),
                    )
                })
                .method("Unknown", |_: Args| -> Result<i64, Status> {
                    Err(Status::new(Code::Unknown, "no code"))
                }),
        )
        .unwrap();
    let (running, _) = serve(server);
    let client = Client::dial(running.addr()).unwrap();
    let a = Args { num1: 1, num2: 2 };
    let cases: [(&str, Option<Code>, &str); 4] = [
        ("Codes.Exists", Some(Code::AlreadyExists), "user 7 exists"),
        ("Codes.Boxed", Some(Code::PermissionDenied), "not yours"),
        ("Codes.Relay", Some(Code::DeadlineExceeded), ""),
        ("Codes.Unknown", None, "no code"),
    ];
    for (method, code, text) in cases {
        let err = client.call::<_, i64>(method, &a).unwrap_err();
        assert_eq!(err.remote_code(), code.as_ref(), "{method}: {err:?}");
        assert!(err.to_string().starts_with(text), "{method}: {err}");
    }
    // A plain handler error still has no code, as from Go.
    let err = client.call::<_, i64>("Arith.Fail", &a).unwrap_err();
    assert_eq!(
        (err.remote_code(), err.to_string().as_str()),
        (None, "boom: it failed")
    );
}

#[test]
fn trace_ids_gives_a_call_without_a_traceparent_a_trace_of_its_own() {
    init_log();
    for (on, want) in [(false, false), (true, true)] {
        let (running, _) = serve(Server::builder().trace_ids(on).build());
        let mut c = Raw::open(running.addr(), Wire::Json, 0);
        c.send(header("Ctx.Look", 1), args());
        let (_, body) = c.reply();
        let view: View = serde_json::from_value(body).unwrap();
        assert_eq!(view.trace_id.is_some(), want, "trace_ids({on})");
        // A call that brings one keeps it.
        c.send(
            with(
                header("Ctx.Look", 2),
                "Meta",
                json!({"traceparent": TRACEPARENT}),
            ),
            args(),
        );
        let (_, body) = c.reply();
        let view: View = serde_json::from_value(body).unwrap();
        assert_eq!(view.trace_id.as_deref(), Some(TRACE_ID));
    }
}
