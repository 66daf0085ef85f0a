//! `Heartbeat` against the HTTP registry: renewals keep an address past the
//! TTL, a shorter registry TTL is followed, many heartbeats at once, a
//! restarted registry gets them back, retries with back-off, and
//! `Heartbeat::for_server` registering and deregistering a server.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use geerpc::registration::RegisterOptions;
use geerpc::{Discovery, Heartbeat, Registry, RegistryDiscovery};

#[test]
fn heartbeats_keep_an_address_alive_past_the_ttl() {
    // One beat late by most of a TTL on a loaded machine is still in time.
    let reg = start(Duration::from_secs(1));
    let hb = Heartbeat::start(
        reg.url(),
        "tcp@127.0.0.1:1",
        RegisterOptions::new().renew_every(Duration::from_millis(100)),
    )
    .unwrap();
    let d = RegistryDiscovery::new(reg.url()).unwrap();
    wait_for(&d, Duration::from_secs(5), |s| s.instances.len() == 1);
    let v = d.snapshot().unwrap().version;
    // Three TTLs later the address is still there, never dropped in between.
    let end = Instant::now() + Duration::from_secs(3);
    let changed = d.watch().unwrap();
    assert!(
        changed.recv_timeout(end - Instant::now()).is_err(),
        "list changed"
    );
    assert_eq!(d.snapshot().unwrap().version, v);
    assert!(hb.beats() >= 3, "{} beats", hb.beats());
    assert!(hb.is_registered());
    hb.deregister().unwrap();
    wait_for(&d, Duration::from_secs(5), |s| s.instances.is_empty());
}

#[test]
fn a_default_heartbeat_follows_a_registry_ttl_shorter_than_it_assumed() {
    // The heartbeat assumes the default 5 min TTL (a beat every 100 s); the
    // registry forgets addresses after 2 s, and says so.
    let ttl = Duration::from_secs(2);
    let reg = start(ttl);
    let resp = http()
        .post(reg.url())
        .header("X-rpc-Server", "tcp@127.0.0.1:2")
        // A JSON body, as geerpc's heartbeat sends: a header-only POST (a
        // Go server's) is told the legacy TTL (tests/registry_go_peers.rs).
        .send("{}")
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("X-Geerpc-Ttl-Ms")
            .unwrap()
            .to_str()
            .unwrap(),
        "2000"
    );
    let gone = http()
        .delete(reg.url())
        .header("X-rpc-Server", "tcp@127.0.0.1:2")
        .call()
        .unwrap();
    assert_eq!(gone.status(), 200);

    let hb = Heartbeat::start(reg.url(), "tcp@127.0.0.1:1", RegisterOptions::new()).unwrap();
    let d = RegistryDiscovery::new(reg.url()).unwrap();
    let v = wait_for(&d, Duration::from_secs(5), |s| s.instances.len() == 1).version;
    // Two and a half TTLs later the address is still there, never dropped
    // in between, and beaten again since the first beat.
    let end = Instant::now() + ttl * 5 / 2;
    let changed = d.watch().unwrap();
    assert!(
        changed.recv_timeout(end - Instant::now()).is_err(),
        "list changed: {:?}",
        d.snapshot().unwrap().instances
    );
    assert_eq!(d.snapshot().unwrap().version, v);
    assert!(hb.beats() >= 3, "{} beats in 2.5 TTLs", hb.beats());
    hb.deregister().unwrap();
}

#[test]
fn a_hundred_threads_heartbeat_at_once() {
    let reg = start(Registry::DEFAULT_TTL);
    let url = reg.url().to_string();
    let d = RegistryDiscovery::new(&url).unwrap();
    let start = Arc::new(std::sync::Barrier::new(100));
    let beats: Vec<Heartbeat> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..100)
            .map(|i| {
                let (url, start) = (url.clone(), start.clone());
                s.spawn(move || {
                    start.wait();
                    Heartbeat::start(
                        &url,
                        format!("tcp@127.0.0.1:{}", 20000 + i),
                        RegisterOptions::new().services(["Arith"]),
                    )
                    .unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    wait_for(&d, Duration::from_secs(20), |s| s.instances.len() == 100);
    assert!(!wait_for_threads("geerpc-hb", |n| n > 0).is_empty());
    // A beat is counted once its thread has read the answer, which can
    // come after the registry (and so the discovery) has the instance.
    let deadline = Instant::now() + Duration::from_secs(5);
    while beats.iter().any(|b| b.beats() == 0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(beats.iter().all(|b| b.beats() >= 1));
    // Stopping deregisters each at once (no TTL wait).
    std::thread::scope(|s| {
        for b in beats {
            s.spawn(move || b.deregister().unwrap());
        }
    });
    assert!(reg.instances().is_empty(), "{:?}", reg.instances());
}

#[test]
fn a_restarted_registry_gets_every_heartbeat_back_within_one_backoff() {
    let reg = start(Registry::DEFAULT_TTL);
    let addr = reg.addr().clone();
    let url = reg.url().to_string();
    let interval = Duration::from_secs(4);
    let max_backoff = Duration::from_millis(300);
    let beats: Vec<Heartbeat> = (0..20)
        .map(|i| {
            Heartbeat::start(
                &url,
                format!("tcp@127.0.0.1:{}", 21000 + i),
                RegisterOptions::new()
                    .renew_every(interval)
                    .backoff(Duration::from_millis(20), max_backoff),
            )
            .unwrap()
        })
        .collect();
    let d = RegistryDiscovery::new(&url).unwrap();
    wait_for(&d, Duration::from_secs(10), |s| s.instances.len() == 20);
    reg.shutdown();
    // Each heartbeat finds the registry gone at its next beat (within one
    // interval); there is no signal for that, so look every few ms.
    let deadline = Instant::now() + interval * 3;
    while beats.iter().any(|b| b.is_registered()) {
        assert!(
            Instant::now() < deadline,
            "heartbeats did not notice the registry stopped"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let reg = Registry::builder()
        .addr(&addr)
        .start()
        .expect("rebind the same port");
    let restarted = Instant::now();
    let d = RegistryDiscovery::new(reg.url()).unwrap();
    wait_for(&d, Duration::from_secs(10), |s| s.instances.len() == 20);
    let took = restarted.elapsed();
    // Well under the 4 s interval: the retries, not the regular beats, did it.
    assert!(
        took < Duration::from_secs(3),
        "took {took:?} (max back-off {max_backoff:?})"
    );
    drop(beats);
    assert!(reg.instances().is_empty());
}

#[test]
fn for_server_registers_its_services_and_shutdown_deregisters() {
    let reg = start(Registry::DEFAULT_TTL);
    let running = start_server();
    let addr = running.addr().to_string();
    let hb =
        Heartbeat::for_server(&running, reg.url(), RegisterOptions::new().version("9.9")).unwrap();
    let d = RegistryDiscovery::builder(reg.url())
        .service("Echo")
        .build()
        .unwrap();
    let snap = wait_for(&d, Duration::from_secs(10), |s| s.instances.len() == 1);
    let inst = &snap.instances[0];
    assert_eq!(inst.addr, addr);
    assert_eq!(inst.services, ["Arith", "Echo"]);
    assert_eq!(inst.metadata["version"], "9.9");
    assert_eq!((hb.addr().to_string(), hb.url()), (addr.clone(), reg.url()));
    running.shutdown();
    // The DELETE went out before shutdown returned.
    assert!(reg.instances().is_empty(), "{:?}", reg.instances());
    assert!(!hb.is_registered(), "the handle sees the deregistration");
}

#[test]
fn dropping_a_for_server_heartbeat_deregisters_as_an_etcd_registration_does() {
    let reg = start(Registry::DEFAULT_TTL);
    let running = start_server();
    let hb = Heartbeat::for_server(&running, reg.url(), RegisterOptions::new()).unwrap();
    let d = RegistryDiscovery::builder(reg.url())
        .service("Echo")
        .build()
        .unwrap();
    wait_for(&d, Duration::from_secs(10), |s| s.instances.len() == 1);
    drop(hb);
    // The DELETE went out before drop returned, with the server still up.
    assert!(reg.instances().is_empty(), "{:?}", reg.instances());
    let client = geerpc::Client::dial(running.addr()).unwrap();
    let back: String = client.call("Echo.Echo", &"still serving").unwrap();
    assert_eq!(back, "still serving");
    // The server's shutdown finds the heartbeat stopped and does nothing.
    running.shutdown();
    assert!(reg.instances().is_empty());
}

/// A registry that refuses the first heartbeats with 503: each refusal is
/// retried after the back-off, and the heartbeat carries all three header
/// spellings and the instance's details.
#[test]
fn a_refused_heartbeat_is_retried_with_backoff() {
    init_log();
    let (fake, url) = fake_registry();
    let (tx, rx) = crossbeam_channel::unbounded();
    let f = fake.clone();
    let server = std::thread::spawn(move || {
        for n in 0.. {
            let Ok(mut rq) = f.recv() else { break };
            let headers: Vec<String> = rq
                .headers()
                .iter()
                .map(|h| format!("{}: {}", h.field, h.value))
                .collect();
            let mut body = String::new();
            rq.as_reader().read_to_string(&mut body).unwrap();
            let status = if n < 3 { 503 } else { 200 };
            let _ = tx.send((
                Instant::now(),
                rq.method().to_string(),
                status,
                headers,
                body,
            ));
            rq.respond(tiny_http::Response::empty(status)).unwrap();
        }
    });
    let hb = Heartbeat::start(
        &url,
        "tcp@127.0.0.1:7001",
        RegisterOptions::new()
            .services(["Arith"])
            .weight(2)
            .renew_every(Duration::from_secs(30))
            .backoff(Duration::from_millis(40), Duration::from_millis(100)),
    )
    .unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(
            rx.recv_timeout(Duration::from_secs(10))
                .expect("a heartbeat"),
        );
    }
    let statuses: Vec<u16> = seen.iter().map(|s| s.2).collect();
    assert_eq!(statuses, [503, 503, 503, 200]);
    // The waits between tries grow, and stay under the longest back-off
    // (the 30 s interval is never waited after a failure).
    let gaps: Vec<Duration> = seen.windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_millis(25)),
        "{gaps:?}"
    );
    assert!(gaps.iter().all(|g| *g < Duration::from_secs(5)), "{gaps:?}");
    let (_, method, _, headers, body) = &seen[3];
    assert_eq!(method, "POST");
    for h in ["X-rpc-Server", "X-rpc-Servers", "X-Geerpc-Server"] {
        let want = format!("{}: tcp@127.0.0.1:7001", h.to_ascii_lowercase());
        assert!(
            headers.iter().any(|x| x.to_ascii_lowercase() == want),
            "{h} missing in {headers:?}"
        );
    }
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["services"], serde_json::json!(["Arith"]));
    assert_eq!(body["weight"], 2);
    // Stopping deregisters with a DELETE.
    hb.deregister().unwrap();
    let (_, method, _, headers, _) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(method, "DELETE");
    assert!(headers
        .iter()
        .any(|x| x.eq_ignore_ascii_case("X-rpc-Server: tcp@127.0.0.1:7001")));
    fake.unblock();
    server.join().unwrap();
}
