//! Client and XClient metrics: `ClientMetrics` (an interceptor and a
//! collector) counts calls by instance and code, times them and keeps the
//! calls in flight; `XClient::metrics` counts evictions and failovers; a
//! server serves both at `/metrics` (`Server::serve_metrics`), and the
//! whole text still parses strictly.
#![cfg(feature = "metrics")]

mod common;
mod metrics_text;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::{init_log, start_gated, start_server, Args};
use geerpc::client::ClientMetrics;
use geerpc::{Client, FailMode, MultiServerDiscovery, SelectMode, Server, XClient};
use metrics_text::{parse, Metrics};
use prometheus_client::collector::Collector;
use prometheus_client::registry::Registry;

fn text_of(collectors: Vec<Box<dyn Collector>>) -> Metrics {
    let mut registry = Registry::default();
    for c in collectors {
        registry.register_collector(c);
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn args(a: i64) -> Args {
    Args { num1: a, num2: 1 }
}

#[test]
fn client_metrics_count_by_instance_and_code() {
    init_log();
    let (server, started) = start_gated(Server::new());
    let metrics = ClientMetrics::new();
    let client = Client::builder()
        .interceptor(metrics.clone())
        .dial(server.addr())
        .unwrap();
    let instance = server.addr().to_string();
    for i in 0..5 {
        let _: i64 = client.call("Arith.Sum", &args(i)).unwrap();
    }
    for i in 0..2 {
        client.call::<_, i64>("Arith.Fail", &args(i)).unwrap_err();
    }
    client.call::<_, i64>("Arith.Nope", &args(1)).unwrap_err();
    // A call held in its handler is in flight.
    let held = client
        .go::<_, i64>("Gate.Hold", &Args { num1: 100, num2: 7 })
        .unwrap();
    assert_eq!(started.recv_timeout(Duration::from_secs(10)).unwrap(), 7);
    let during = text_of(vec![Box::new(metrics.clone())]);
    let i = [("instance", instance.as_str())];
    assert_eq!(during.get("geerpc_client_calls_in_flight", &i), Some(1.0));
    assert_eq!(held.wait().unwrap(), 107);

    let m = text_of(vec![Box::new(metrics.clone())]);
    let calls = |code: &str| {
        m.get(
            "geerpc_client_calls_total",
            &[("instance", instance.as_str()), ("code", code)],
        )
    };
    assert_eq!(calls("ok"), Some(6.0));
    assert_eq!(calls("unknown"), Some(2.0));
    assert_eq!(calls("not_found"), Some(1.0));
    assert_eq!(
        m.get("geerpc_client_call_latency_seconds_count", &i),
        Some(9.0)
    );
    // The held call took 100 ms at least: it is past the 50 ms bucket.
    let under_50ms = m
        .all("geerpc_client_call_latency_seconds_bucket")
        .into_iter()
        .find(|s| s.labels["le"] == "0.05")
        .unwrap()
        .value;
    assert_eq!(under_50ms, 8.0);
    assert!(m.get("geerpc_client_call_latency_seconds_sum", &i).unwrap() >= 0.1);
    assert_eq!(m.get("geerpc_client_calls_in_flight", &i), Some(0.0));
    server.shutdown();
}

#[test]
fn xclient_metrics_count_evictions_and_failovers() {
    init_log();
    let live = start_server();
    // A port nothing listens on any more: its connection is refused.
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("tcp@{}", l.local_addr().unwrap())
    };
    let calls = ClientMetrics::new();
    let xc = XClient::builder(MultiServerDiscovery::new([
        dead.clone(),
        live.addr().to_string(),
    ]))
    .select_mode(SelectMode::RoundRobin)
    .fail_mode(FailMode::Failover { retries: 1 })
    .idempotent(true)
    .client(Client::builder().interceptor(calls.clone()))
    .build();
    // Round robin: one of the first two calls goes to the dead instance,
    // which is evicted, and the call fails over to the live one.
    for i in 0..4 {
        let _: i64 = xc.call("Arith.Sum", &args(i)).unwrap();
    }
    let m = text_of(vec![Box::new(calls), Box::new(xc.metrics())]);
    assert_eq!(m.get("geerpc_xclient_evictions_total", &[]), Some(1.0));
    assert_eq!(m.get("geerpc_xclient_failovers_total", &[]), Some(1.0));
    assert_eq!(m.get("geerpc_xclient_instances_evicted", &[]), Some(1.0));
    let live_addr = live.addr().to_string();
    assert_eq!(
        m.get(
            "geerpc_client_calls_total",
            &[("instance", live_addr.as_str()), ("code", "ok")]
        ),
        Some(4.0)
    );
    assert_eq!(
        m.get(
            "geerpc_xclient_calls_in_flight",
            &[("instance", live_addr.as_str())]
        ),
        Some(0.0)
    );
    live.shutdown();
}

#[test]
fn a_server_serves_client_metrics_next_to_its_own() {
    init_log();
    let server = Server::new();
    let running = common::start_with(server.clone());
    let metrics = ClientMetrics::new();
    server.serve_metrics(metrics.clone());
    let client = Client::builder()
        .interceptor(metrics)
        .dial(running.addr())
        .unwrap();
    let _: i64 = client.call("Arith.Sum", &args(1)).unwrap();
    let mut s = TcpStream::connect(running.addr().target()).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    let body = all.split_once("\r\n\r\n").unwrap().1;
    let m = parse(body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    let instance = running.addr().to_string();
    assert_eq!(
        m.get(
            "geerpc_client_calls_total",
            &[("instance", instance.as_str()), ("code", "ok")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.get(
            "geerpc_server_calls_total",
            &[("service_method", "Arith.Sum"), ("code", "ok")]
        ),
        Some(1.0)
    );
    running.shutdown();
}
