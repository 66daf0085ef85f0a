//! `RegistryDiscovery`: the long-poll watch and its change channel, the
//! last list kept through an outage, clear errors with no registry, calls
//! through a discovered server, and a registry whose version went back.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use geerpc::registration::RegisterOptions;
use geerpc::{Discovery, Heartbeat, Registry, RegistryDiscovery, Server};

#[test]
fn discovery_keeps_serving_the_last_list_during_an_outage() {
    let reg = start(Registry::DEFAULT_TTL);
    let url = reg.url().to_string();
    post(&url, "X-rpc-Server", "tcp@127.0.0.1:1");
    post(&url, "X-rpc-Server", "tcp@127.0.0.1:2");
    let d = RegistryDiscovery::builder(&url)
        .refresh_after(Duration::from_millis(20))
        .build()
        .unwrap();
    assert_eq!(d.snapshot().unwrap().instances.len(), 2);
    reg.shutdown();
    let err = d.refresh().unwrap_err();
    assert!(matches!(err, geerpc::Error::Registry { .. }), "{err}");
    assert!(err.to_string().contains(&url), "{err}");
    // Stale by then, and the registry cannot answer: the old list stays.
    let end = Instant::now() + Duration::from_millis(200);
    while Instant::now() < end {
        let snap = d.snapshot().expect("snapshot during outage");
        assert_eq!(snap.instances.len(), 2);
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn discovery_with_no_registry_ever_fails_clearly() {
    init_log();
    // A port nobody listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/_rpc_/registry");
    let d = RegistryDiscovery::builder(&url)
        .long_poll(false)
        .build()
        .unwrap();
    let err = d.snapshot().unwrap_err();
    assert!(err.to_string().contains(&url), "{err}");
    assert!(RegistryDiscovery::new("localhost:9999").is_err());
    assert!(Heartbeat::start("ftp://x", "tcp@127.0.0.1:1", RegisterOptions::new()).is_err());
    assert!(Heartbeat::start(&url, "unix@", RegisterOptions::new()).is_err());
    assert!(Heartbeat::start(&url, "tcp@127.0.0.1:1,tcp@h:2", RegisterOptions::new()).is_err());
}

#[test]
fn the_watch_delivers_a_change_within_100ms() {
    let reg = start(Registry::DEFAULT_TTL);
    let url = reg.url().to_string();
    // refresh_after is long: only the watch can bring changes in quickly.
    let d = RegistryDiscovery::builder(&url)
        .service("Arith")
        .refresh_after(Duration::from_secs(60))
        .build()
        .unwrap();
    assert!(d.snapshot().unwrap().instances.is_empty());
    let changed = d.watch().unwrap();
    assert!(!wait_for_threads("geerpc-poll", |n| n > 0).is_empty());
    let mut took = Vec::new();
    for i in 0..5 {
        let addr = format!("tcp@127.0.0.1:{}", 22000 + i);
        let t0 = Instant::now();
        post_json(&url, &addr, serde_json::json!({"services": ["Arith"]}));
        changed
            .recv_timeout(Duration::from_secs(5))
            .expect("change signalled");
        took.push(t0.elapsed());
        let snap = d.snapshot().unwrap();
        assert!(snap.instances.iter().any(|x| x.addr == addr));
        assert_eq!(snap.instances.len(), i + 1);
    }
    // An instance of another service is no change for this discovery.
    post_json(
        &url,
        "tcp@127.0.0.1:1",
        serde_json::json!({"services": ["Echo"]}),
    );
    // Removal is seen as quickly.
    let t0 = Instant::now();
    http()
        .delete(&url)
        .header("X-rpc-Server", "tcp@127.0.0.1:22000")
        .call()
        .unwrap();
    changed
        .recv_timeout(Duration::from_secs(5))
        .expect("removal signalled");
    took.push(t0.elapsed());
    assert_eq!(d.snapshot().unwrap().instances.len(), 4);
    took.sort();
    assert!(
        took[took.len() / 2] < Duration::from_millis(100),
        "{took:?}"
    );
    // Dropping interrupts the long poll in flight at once.
    let t0 = Instant::now();
    drop(d);
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "drop took {:?}",
        t0.elapsed()
    );
}

#[test]
fn a_server_through_registry_discovery_answers_calls() {
    init_log();
    let reg = start(Registry::DEFAULT_TTL);
    let server = Server::new();
    server.register(arith()).unwrap();
    let running = server.listen("tcp@127.0.0.1:0").unwrap();
    let _hb = Heartbeat::for_server(&running, reg.url(), RegisterOptions::new()).unwrap();
    let d = RegistryDiscovery::builder(reg.url())
        .service("Arith")
        .build()
        .unwrap();
    let snap = wait_for(&d, Duration::from_secs(10), |s| !s.instances.is_empty());
    let client = geerpc::Client::dial(&snap.instances[0].addr).unwrap();
    let sum: i64 = client
        .call("Arith.Sum", &Args { num1: 2, num2: 40 })
        .unwrap();
    assert_eq!(sum, 42);
}

/// A registry restarted with its version behind (its clock went back, or
/// another registry answers at the same URL) answers the watch with an
/// older version than the one asked after. Its list is taken, and the
/// watch goes back to waiting: no stale list, no polling in a tight loop.
#[test]
fn a_registry_whose_version_went_back_is_followed_not_spun_on() {
    init_log();
    let (fake, url) = fake_registry();
    let gets = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let serving = {
        let (fake, gets) = (fake.clone(), gets.clone());
        std::thread::spawn(move || {
            // Version 100 until a poll after it finds the registry gone back
            // to 5; then version 5, and polls after it are held, never
            // answered.
            let mut current = (100, "tcp@127.0.0.1:1");
            let mut held = Vec::new();
            while let Ok(Some(rq)) = fake.recv_timeout(Duration::from_secs(30)) {
                gets.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let watch = rq
                    .url()
                    .split("watch=")
                    .nth(1)
                    .and_then(|w| w.split('&').next())
                    .map(|w| w.parse::<u64>().unwrap());
                let (version, addr) = match watch {
                    None | Some(0) => current,
                    Some(100) => {
                        current = (5, "tcp@127.0.0.1:2");
                        current
                    }
                    Some(_) => {
                        held.push(rq);
                        continue;
                    }
                };
                let body = serde_json::json!({"version": version, "instances": [{"addr": addr}]});
                let header: tiny_http::Header =
                    format!("X-Geerpc-Version: {version}").parse().unwrap();
                let _ = rq.respond(
                    tiny_http::Response::from_string(body.to_string()).with_header(header),
                );
            }
        })
    };
    let d = RegistryDiscovery::new(&url).unwrap();
    let snap = wait_for(&d, Duration::from_secs(5), |s| {
        s.instances.first().map(|i| i.addr.as_str()) == Some("tcp@127.0.0.1:2")
    });
    assert_eq!(snap.instances.len(), 1);
    // The watch now waits after version 5. Spinning on the old version
    // would make hundreds of requests in this window.
    let seen = gets.load(std::sync::atomic::Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(300));
    let more = gets.load(std::sync::atomic::Ordering::SeqCst) - seen;
    assert!(more <= 2, "{more} more requests in 300 ms");
    drop(d);
    fake.unblock();
    serving.join().unwrap();
}
