//! The server's Prometheus metrics (`GET /metrics` on the RPC port): the
//! text parses strictly (tests/metrics_text), counters move with calls,
//! histogram buckets are cumulative and `_count` equals the calls made,
//! unknown names stay one label value, and byte counters never go back
//! when connections close.
#![cfg(feature = "metrics")]

mod common;
mod metrics_text;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{init_log, start_gated, start_server, Args};
use geerpc::{CallOptions, Client, Code, Server};
use metrics_text::{parse, Metrics};

/// A whole HTTP exchange on the RPC port: (status line, content type, body).
fn http(target: &str, request: &str) -> (String, String, String) {
    let mut s = TcpStream::connect(target).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    let (head, body) = all.split_once("\r\n\r\n").expect("a whole HTTP head");
    let status = head.lines().next().unwrap().to_string();
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type: "))
        .unwrap_or_default()
        .to_string();
    (status, content_type, body.to_string())
}

fn scrape(target: &str) -> Metrics {
    let (status, content_type, body) = http(target, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, "HTTP/1.0 200 OK");
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
    parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"))
}

fn args(a: i64) -> Args {
    Args { num1: a, num2: 1 }
}

#[test]
fn counters_move_with_calls_and_the_histogram_counts_every_call() {
    init_log();
    let server = start_server();
    let target = server.addr().target().to_string();
    let client = Client::dial(server.addr()).unwrap();
    let before = scrape(&target);
    assert_eq!(
        before.get(
            "geerpc_server_calls_total",
            &[("service_method", "Arith.Sum")]
        ),
        None,
        "no calls yet, no series"
    );
    for i in 0..7 {
        let _: i64 = client.call("Arith.Sum", &args(i)).unwrap();
    }
    for i in 0..3 {
        client.call::<_, i64>("Arith.Fail", &args(i)).unwrap_err();
    }
    let m = scrape(&target);
    let calls = |method: &str, code: &str| {
        m.get(
            "geerpc_server_calls_total",
            &[("service_method", method), ("code", code)],
        )
    };
    assert_eq!(calls("Arith.Sum", "ok"), Some(7.0));
    // A handler's error without a code is `unknown`.
    assert_eq!(calls("Arith.Fail", "unknown"), Some(3.0));
    assert_eq!(calls("Arith.Fail", "ok"), None);
    let sum = [("service_method", "Arith.Sum")];
    assert_eq!(
        m.get("geerpc_server_call_latency_seconds_count", &sum),
        Some(7.0)
    );
    assert!(
        m.get("geerpc_server_call_latency_seconds_sum", &sum)
            .unwrap()
            > 0.0
    );
    let buckets: Vec<_> = m
        .all("geerpc_server_call_latency_seconds_bucket")
        .into_iter()
        .filter(|s| s.labels["service_method"] == "Arith.Sum")
        .collect();
    // 50 µs to 10 s, and +Inf (the parser checked they are cumulative and
    // end at _count).
    assert_eq!(buckets.len(), 18, "{buckets:?}");
    let first: f64 = buckets[0].labels["le"].parse().unwrap();
    let last: f64 = buckets[16].labels["le"].parse().unwrap();
    assert!((40e-6..=60e-6).contains(&first), "{first}");
    assert!((9.0..=11.0).contains(&last), "{last}");
    // The client and this scrape; the previous scrape's connection may
    // not be released yet (it is once the thread that served it ends).
    let open = m.get("geerpc_server_connections_open", &[]).unwrap();
    assert!((2.0..=3.0).contains(&open), "{open}");
    assert_eq!(m.get("geerpc_server_calls_in_flight", &[]), Some(0.0));
    let (read, written) = (
        m.get("geerpc_server_read_bytes_total", &[]).unwrap(),
        m.get("geerpc_server_written_bytes_total", &[]).unwrap(),
    );
    let (read0, written0) = (
        before.get("geerpc_server_read_bytes_total", &[]).unwrap(),
        before
            .get("geerpc_server_written_bytes_total", &[])
            .unwrap(),
    );
    // Ten requests of over 30 bytes each, and ten replies.
    assert!(read >= read0 + 300.0, "{read0} -> {read}");
    assert!(written >= written0 + 300.0, "{written0} -> {written}");
    for family in [
        "geerpc_server_calls",
        "geerpc_server_call_latency_seconds",
        "geerpc_server_read_bytes",
    ] {
        assert!(m.families[family].help.is_some(), "{family}");
    }
    server.shutdown();
}

#[test]
fn unknown_names_are_one_label_value() {
    init_log();
    let server = start_server();
    let target = server.addr().target().to_string();
    let client = Client::dial(server.addr()).unwrap();
    for name in ["Nope.X", "Arith.Nope", "Weird\"Name.Y", "NoDot"] {
        let e = client.call::<_, i64>(name, &args(1)).unwrap_err();
        assert_eq!(e.remote_code(), Some(&Code::NotFound), "{name}");
    }
    let (_, _, body) = http(&target, "GET /metrics HTTP/1.0\r\n\r\n");
    let m = parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    assert_eq!(
        m.get(
            "geerpc_server_calls_total",
            &[("service_method", "unknown"), ("code", "not_found")]
        ),
        Some(4.0)
    );
    for name in ["Nope", "Weird", "NoDot"] {
        assert!(!body.contains(name), "a peer's name in the metrics: {name}");
    }
    server.shutdown();
}

#[test]
fn bytes_never_go_back_when_connections_close() {
    init_log();
    let server = start_server();
    let target = server.addr().target().to_string();
    let client = Client::dial(server.addr()).unwrap();
    for i in 0..5 {
        let _: i64 = client.call("Arith.Sum", &args(i)).unwrap();
    }
    let open = scrape(&target);
    drop(client);
    // The scrapes' own connections come and go too; wait (bounded) for
    // the client's to end.
    let deadline = Instant::now() + Duration::from_secs(10);
    let closed = loop {
        let m = scrape(&target);
        if m.get("geerpc_server_connections_open", &[]) == Some(1.0) {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "the client's connection never ended"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    for name in [
        "geerpc_server_read_bytes_total",
        "geerpc_server_written_bytes_total",
    ] {
        let (a, b) = (open.get(name, &[]).unwrap(), closed.get(name, &[]).unwrap());
        assert!(a >= 100.0 && b >= a, "{name}: {a} then {b}");
    }
    server.shutdown();
}

#[test]
fn calls_past_their_deadline_count_as_timed_out() {
    init_log();
    let server = start_server();
    let target = server.addr().target().to_string();
    let client = Client::dial(server.addr()).unwrap();
    // The handler takes 50 ms of a 5 ms budget: the server answers
    // deadline_exceeded in its place (the client has given up already).
    let opts = CallOptions::new().timeout(Duration::from_millis(5));
    client
        .call_with::<_, i64>("Arith.SleepMs", &args(50), &opts)
        .unwrap_err();
    let slow = [("service_method", "Arith.SleepMs")];
    // The server counts it when the handler returns: wait for that.
    let deadline = Instant::now() + Duration::from_secs(10);
    let m = loop {
        let m = scrape(&target);
        if m.get("geerpc_server_calls_total", &slow).is_some() {
            break m;
        }
        assert!(Instant::now() < deadline, "the call was never counted");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(
        m.get(
            "geerpc_server_calls_total",
            &[
                ("service_method", "Arith.SleepMs"),
                ("code", "deadline_exceeded")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.get("geerpc_server_timed_out_calls_total", &slow),
        Some(1.0)
    );
    assert_eq!(m.get("geerpc_server_shed_calls_total", &slow), Some(0.0));
    server.shutdown();
}

#[test]
fn calls_refused_by_the_limits_count_as_shed() {
    init_log();
    let (server, started) =
        start_gated(Server::builder().method_concurrency("Gate.Hold", 1).build());
    let target = server.addr().target().to_string();
    let client = Client::dial(server.addr()).unwrap();
    let held = client
        .go::<_, i64>("Gate.Hold", &Args { num1: 100, num2: 1 })
        .unwrap();
    assert_eq!(started.recv_timeout(Duration::from_secs(10)).unwrap(), 1);
    // The one place is taken: refused at once, unrun.
    let e = client
        .call::<_, i64>("Gate.Hold", &Args { num1: 0, num2: 2 })
        .unwrap_err();
    assert_eq!(e.remote_code(), Some(&Code::ResourceExhausted));
    assert_eq!(held.wait().unwrap(), 101);
    let m = scrape(&target);
    let hold = [("service_method", "Gate.Hold")];
    assert_eq!(m.get("geerpc_server_shed_calls_total", &hold), Some(1.0));
    let by_code = |code: &str| {
        m.get(
            "geerpc_server_calls_total",
            &[("service_method", "Gate.Hold"), ("code", code)],
        )
    };
    assert_eq!(by_code("resource_exhausted"), Some(1.0));
    assert_eq!(by_code("ok"), Some(1.0));
    // Only the call that ran is in the latency histogram.
    assert_eq!(
        m.get("geerpc_server_call_latency_seconds_count", &hold),
        Some(1.0)
    );
    server.shutdown();
}

#[test]
fn metrics_answer_get_and_head_only() {
    init_log();
    let server = start_server();
    let target = server.addr().target().to_string();
    let (status, _, body) = http(&target, "HEAD /metrics HTTP/1.0\r\n\r\n");
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.0 200 OK", ""));
    let (status, _, _) = http(&target, "POST /metrics HTTP/1.0\r\n\r\n");
    assert_eq!(status, "HTTP/1.0 405 Method Not Allowed");
    server.shutdown();
}
