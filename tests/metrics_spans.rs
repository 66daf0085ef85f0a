//! The tracing hook: `server::LogSpans` writes one line per call to the
//! `geerpc::span` log target, with the method, peer, duration, code and
//! the trace id of the caller's `traceparent`.
//!
//! Its own test binary: it installs a logger that keeps those lines.

mod common;

use std::sync::Mutex;

use common::Args;
use geerpc::context::{Scope, TraceParent};
use geerpc::server::{LogSpans, SPAN_TARGET};
use geerpc::{Client, Server};

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Keep;

impl log::Log for Keep {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.target() == SPAN_TARGET
    }

    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            LINES.lock().unwrap().push(r.args().to_string());
        }
    }

    fn flush(&self) {}
}

#[test]
fn log_spans_writes_each_calls_span() {
    log::set_logger(&Keep).unwrap();
    log::set_max_level(log::LevelFilter::Info);
    let server = Server::builder().interceptor(LogSpans::new()).build();
    let running = common::start_with(server);
    let client = Client::dial(running.addr()).unwrap();
    let trace = TraceParent::new_root();
    let sum: i64 = Scope::current()
        .with_trace(trace)
        .run(|| client.call("Arith.Sum", &Args { num1: 2, num2: 3 }))
        .unwrap();
    assert_eq!(sum, 5);
    client
        .call::<_, i64>("Arith.Fail", &Args { num1: 1, num2: 1 })
        .unwrap_err();
    running.shutdown();
    let lines = LINES.lock().unwrap().clone();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let ok = &lines[0];
    assert!(
        ok.starts_with("service_method=Arith.Sum peer=127.0.0.1:"),
        "{ok}"
    );
    assert!(ok.contains(" code=ok"), "{ok}");
    assert!(ok.contains(" duration_us="), "{ok}");
    // The server sees the caller's trace (its parent id is the client's
    // span, a child of `trace`).
    assert!(
        ok.contains(&format!(" trace_id={} ", trace.trace_id())),
        "{ok}"
    );
    assert!(ok.ends_with(" sampled=1"), "{ok}");
    let failed = &lines[1];
    assert!(failed.starts_with("service_method=Arith.Fail "), "{failed}");
    assert!(failed.contains(" code=unknown"), "{failed}");
    assert!(
        !failed.contains("trace_id"),
        "no traceparent sent: {failed}"
    );
}
