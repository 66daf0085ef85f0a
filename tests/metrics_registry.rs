//! The registry's Prometheus metrics (`GET /metrics` on its port): strict
//! parse, instances by service, heartbeats by result, deregistrations,
//! expirations, watchers and the epoch's start; and the read token.
#![cfg(all(feature = "metrics", feature = "registry"))]

mod common;
mod metrics_text;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{http, post, post_json, registry_version, start};
use geerpc::{Registry, Token};
use metrics_text::{parse, Metrics};

fn metrics_url(reg: &Registry) -> String {
    format!("http://{}/metrics", reg.addr().target())
}

fn scrape(reg: &Registry) -> Metrics {
    let mut resp = http().get(metrics_url(reg)).call().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let ct = resp.headers()["Content-Type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let body = resp.body_mut().read_to_string().unwrap();
    parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"))
}

/// Scrapes until `cond` holds (bounded: 10 s); the last scrape.
fn scrape_until(reg: &Registry, what: &str, cond: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = scrape(reg);
        if cond(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "{what}: never seen");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn registry_metrics_follow_registrations() {
    let reg = start(Duration::from_secs(60));
    let url = reg.url().to_string();
    let m = scrape(&reg);
    assert_eq!(m.get("geerpc_registry_instances", &[]), Some(0.0));
    let started = m
        .get("geerpc_registry_epoch_start_time_seconds", &[])
        .unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        started <= now && started > now - 600.0,
        "{started} vs {now}"
    );

    let arith = serde_json::json!({"services": ["Arith"]});
    assert_eq!(post_json(&url, "tcp@127.0.0.1:1", arith.clone()), 200);
    assert_eq!(post_json(&url, "tcp@127.0.0.1:2", arith.clone()), 200);
    assert_eq!(post_json(&url, "tcp@127.0.0.1:2", arith), 200);
    assert_eq!(
        post_json(
            &url,
            "tcp@127.0.0.1:3",
            serde_json::json!({"services": ["Echo"]})
        ),
        200
    );
    // A Go server names no service: listed for all, counted in the total.
    assert_eq!(post(&url, "X-rpc-Server", "tcp@127.0.0.1:4"), 200);
    let m = scrape(&reg);
    assert_eq!(m.get("geerpc_registry_instances", &[]), Some(4.0));
    let svc = |m: &Metrics, s: &str| m.get("geerpc_registry_service_instances", &[("service", s)]);
    assert_eq!(svc(&m, "Arith"), Some(2.0));
    assert_eq!(svc(&m, "Echo"), Some(1.0));
    let beats = |m: &Metrics, r: &str| m.get("geerpc_registry_heartbeats_total", &[("result", r)]);
    assert_eq!(beats(&m, "new"), Some(4.0));
    assert_eq!(beats(&m, "renewed"), Some(1.0));
    assert_eq!(beats(&m, "changed"), Some(0.0));

    // A watcher parks until the list changes.
    let version = registry_version(&url);
    let watch_url = format!("{url}?watch={version}&timeout=60s");
    let watcher = std::thread::spawn(move || http().get(&watch_url).call().unwrap().status());
    scrape_until(&reg, "one watcher", |m| {
        m.get("geerpc_registry_watchers", &[]) == Some(1.0)
    });
    let deleted = http()
        .delete(&url)
        .header("X-rpc-Server", "tcp@127.0.0.1:3")
        .call()
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 200);
    assert_eq!(watcher.join().unwrap().as_u16(), 200);
    let m = scrape_until(&reg, "the watcher answered", |m| {
        m.get("geerpc_registry_watchers", &[]) == Some(0.0)
    });
    assert_eq!(
        m.get("geerpc_registry_deregistrations_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        svc(&m, "Echo"),
        None,
        "a service nobody serves has no series"
    );
    assert_eq!(m.get("geerpc_registry_expirations_total", &[]), Some(0.0));
    reg.shutdown();
}

#[test]
fn expired_instances_are_counted() {
    let reg = start(Duration::from_millis(200));
    let url = reg.url().to_string();
    // geerpc's JSON body: a header-only POST is kept the legacy TTL.
    assert_eq!(
        post_json(&url, "tcp@127.0.0.1:9", serde_json::json!({})),
        200
    );
    let m = scrape_until(&reg, "the expiry", |m| {
        m.get("geerpc_registry_expirations_total", &[]) == Some(1.0)
    });
    assert_eq!(m.get("geerpc_registry_instances", &[]), Some(0.0));
    reg.shutdown();
}

#[test]
fn with_a_read_token_the_metrics_need_it() {
    common::init_log();
    let read = Token::new("read-secret-0123456789").unwrap();
    let reg = Registry::builder()
        .addr("127.0.0.1:0")
        .write_token(Token::new("write-secret-0123456789").unwrap())
        .read_token(read.clone())
        .start()
        .unwrap();
    let refused = http().get(metrics_url(&reg)).call().unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    let mut ok = http()
        .get(metrics_url(&reg))
        .header("Authorization", read.bearer())
        .call()
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let body = ok.body_mut().read_to_string().unwrap();
    parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    reg.shutdown();
}
