//! The registry (PROTOCOL.md section 7), its heartbeat and its discovery,
//! against registries started here on free ports.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use geerpc::registration::RegisterOptions;
use geerpc::{Discovery, Heartbeat, Registry, RegistryDiscovery, Server};

fn start(ttl: Duration) -> Registry {
    init_log();
    Registry::builder()
        .addr("127.0.0.1:0")
        .ttl(ttl)
        .start()
        .expect("start registry")
}

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

fn post(url: &str, header: &str, addr: &str) -> u16 {
    http()
        .post(url)
        .header(header, addr)
        .send_empty()
        .unwrap()
        .status()
        .as_u16()
}

fn post_json(url: &str, addr: &str, body: serde_json::Value) -> u16 {
    http()
        .post(url)
        .header("X-rpc-Server", addr)
        .header("Content-Type", "application/json")
        .send(body.to_string().as_bytes())
        .unwrap()
        .status()
        .as_u16()
}

/// The list as a Go client reads it: the `X-rpc-Servers` header.
fn get_header(url: &str, name: &str) -> String {
    let resp = http().get(url).call().unwrap();
    assert_eq!(resp.status(), 200);
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

fn get_json(url: &str) -> serde_json::Value {
    let mut resp = http()
        .get(url)
        .header("Accept", "application/json")
        .call()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .unwrap();
    serde_json::from_str(&body).unwrap()
}

fn addrs(listing: &serde_json::Value) -> Vec<String> {
    listing["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["addr"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn each_post_header_spelling_registers_and_get_lists_under_both_names() {
    let reg = start(Registry::DEFAULT_TTL);
    let url = reg.url().to_string();
    assert!(url.ends_with("/_rpc_/registry"), "{url}");
    assert_eq!(post(&url, "X-rpc-Server", "tcp@127.0.0.1:7003"), 200);
    assert_eq!(post(&url, "X-rpc-Servers", "tcp@127.0.0.1:7001"), 200);
    assert_eq!(post(&url, "X-Geerpc-Server", "http@127.0.0.1:7002"), 200);
    let want = "http@127.0.0.1:7002,tcp@127.0.0.1:7001,tcp@127.0.0.1:7003";
    assert_eq!(get_header(&url, "X-rpc-Servers"), want);
    assert_eq!(get_header(&url, "X-Geerpc-Servers"), want);
    // A renewal does not duplicate.
    assert_eq!(post(&url, "X-rpc-Server", "tcp@127.0.0.1:7001"), 200);
    assert_eq!(get_header(&url, "X-rpc-Servers"), want);
}

#[test]
fn both_paths_answer_and_others_are_404() {
    let reg = start(Registry::DEFAULT_TTL);
    let base = format!("http://{}", reg.addr().target());
    assert_eq!(
        post(
            &format!("{base}/_geerpc_/registry"),
            "X-rpc-Server",
            "tcp@127.0.0.1:1"
        ),
        200
    );
    assert_eq!(
        get_header(&format!("{base}/_rpc_/registry"), "X-rpc-Servers"),
        "tcp@127.0.0.1:1"
    );
    assert_eq!(
        get_header(&format!("{base}/_geerpc_/registry"), "X-rpc-Servers"),
        "tcp@127.0.0.1:1"
    );
    let resp = http().get(format!("{base}/elsewhere")).call().unwrap();
    assert_eq!(resp.status(), 404);
}

#[test]
fn custom_path_replaces_the_defaults() {
    init_log();
    let reg = Registry::builder()
        .addr("127.0.0.1:0")
        .path("reg")
        .start()
        .unwrap();
    assert!(reg.url().ends_with("/reg"), "{}", reg.url());
    assert_eq!(post(reg.url(), "X-rpc-Server", "tcp@127.0.0.1:1"), 200);
    let other = format!("http://{}/_rpc_/registry", reg.addr().target());
    assert_eq!(http().get(other).call().unwrap().status(), 404);
}

#[test]
fn missing_address_is_400_naming_the_header() {
    let reg = start(Registry::DEFAULT_TTL);
    for method in ["POST", "DELETE"] {
        let rq = ureq::http::Request::builder()
            .method(method)
            .uri(reg.url())
            .body(())
            .unwrap();
        let mut resp = http().run(rq).unwrap();
        assert_eq!(resp.status(), 400, "{method}");
        let body = resp.body_mut().read_to_string().unwrap();
        assert!(body.contains("X-rpc-Server"), "{method}: {body}");
    }
    assert_eq!(get_header(reg.url(), "X-rpc-Servers"), "");
}

#[test]
fn malformed_address_is_400() {
    let reg = start(Registry::DEFAULT_TTL);
    for bad in [
        "127.0.0.1:7001",
        "tcp@127.0.0.1",
        "udp@127.0.0.1:1",
        "tcp@a,b:1",
        "tcp@:1",
    ] {
        let mut resp = http()
            .post(reg.url())
            .header("X-rpc-Server", bad)
            .send_empty()
            .unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
        let body = resp.body_mut().read_to_string().unwrap();
        assert!(body.contains("malformed address"), "{bad}: {body}");
    }
    let mut resp = http()
        .post(reg.url())
        .header("X-rpc-Server", "tcp@127.0.0.1:1")
        .send("{not json".as_bytes())
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.body_mut().read_to_string().unwrap().contains("JSON"));
    assert_eq!(get_header(reg.url(), "X-rpc-Servers"), "");
}

#[test]
fn other_methods_are_405_with_allow() {
    let reg = start(Registry::DEFAULT_TTL);
    for method in ["PUT", "PATCH", "OPTIONS"] {
        let rq = ureq::http::Request::builder()
            .method(method)
            .uri(reg.url())
            .header("X-rpc-Server", "tcp@127.0.0.1:1")
            .body(())
            .unwrap();
        let resp = http().run(rq).unwrap();
        assert_eq!(resp.status(), 405, "{method}");
        let allow = resp.headers().get("Allow").unwrap().to_str().unwrap();
        for m in ["GET", "POST", "DELETE"] {
            assert!(allow.contains(m), "{allow}");
        }
    }
    assert!(reg.instances().is_empty());
}

/// What a Go GeeRPC server and client send, byte for byte (Go writes
/// canonical header names: `X-Rpc-Servers`).
#[test]
fn a_go_peer_that_knows_no_extension_works() {
    let reg = start(Registry::DEFAULT_TTL);
    let raw = |request: String| -> String {
        let mut s = TcpStream::connect(reg.addr().target()).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let host = reg.addr().target();
    let resp = raw(format!(
        "POST /_rpc_/registry HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Go-http-client/1.1\r\n\
         Content-Length: 0\r\nX-Rpc-Servers: tcp@127.0.0.1:7001\r\nConnection: close\r\n\r\n"
    ));
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let resp = raw(format!(
        "GET /_rpc_/registry HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Go-http-client/1.1\r\n\
         Connection: close\r\n\r\n"
    ));
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let header = resp
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("x-rpc-servers:"))
        .unwrap_or_else(|| panic!("no X-rpc-Servers header in {resp}"));
    assert_eq!(
        header.split_once(':').unwrap().1.trim(),
        "tcp@127.0.0.1:7001"
    );
    // A Go discovery never asks for a service: unnamed instances are listed
    // for every service, too.
    let arith = get_json(&format!("{}?service=Arith", reg.url()));
    assert_eq!(addrs(&arith), ["tcp@127.0.0.1:7001"]);
}

/// Responses are written whole, in one piece each (see `respond` in the
/// registry): pipelined requests on one connection still get theirs in
/// order, HTTP/1.0 included, and `Connection: close` still closes.
#[test]
fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let reg = start(Registry::DEFAULT_TTL);
    for i in 0..100 {
        assert_eq!(
            post(
                reg.url(),
                "X-rpc-Server",
                &format!("tcp@127.0.0.1:{}", 20000 + i)
            ),
            200
        );
    }
    let host = reg.addr().target();
    let mut s = TcpStream::connect(host).unwrap();
    s.write_all(
        format!(
            "GET /_rpc_/registry HTTP/1.1\r\nHost: {host}\r\n\r\n\
             PUT /_rpc_/registry HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n\
             GET /_rpc_/registry HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n\
             Connection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out)
        .expect("the connection is closed after the last response");
    let starts: Vec<&str> = out
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &out[i + 9..i + 12])
        .collect();
    assert_eq!(starts, ["200", "405", "200"], "{out}");
    let listed = out
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("x-rpc-servers:"))
        .unwrap();
    assert_eq!(listed.split(',').count(), 100);
    assert!(
        out.trim_end().ends_with("}]}"),
        "the JSON listing comes last: {out}"
    );

    let mut s = TcpStream::connect(host).unwrap();
    s.write_all(format!("GET /_rpc_/registry HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.0 200"), "{out}");
}

/// A peer that sends requests and never reads the answers can hold a worker
/// only for the write timeout per answer: with a single worker, other
/// clients are still answered.
#[test]
fn a_peer_that_does_not_read_holds_a_worker_only_for_the_write_timeout() {
    init_log();
    let reg = Registry::builder()
        .addr("127.0.0.1:0")
        .workers(1)
        .write_timeout(Duration::from_millis(100))
        .start()
        .unwrap();
    let url = reg.url().to_string();
    let agent = http();
    for i in 0..5000 {
        let addr = format!("tcp@10.0.{}.{}:7000", i / 250, i % 250);
        let resp = agent
            .post(&url)
            .header("X-rpc-Server", addr)
            .send_empty()
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    // ~225 KB a listing; 32 of them are more than loopback buffers hold
    // (tcp_wmem's largest send buffer is 4 MiB) when the peer reads nothing.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&reg.addr().target().parse::<SocketAddr>().unwrap().into())
        .unwrap();
    let mut stalled: TcpStream = sock.into();
    let one = format!(
        "GET /_rpc_/registry HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\n\r\n",
        reg.addr().target()
    );
    stalled.write_all(one.repeat(32).as_bytes()).unwrap();

    let t0 = Instant::now();
    let status = post(&url, "X-rpc-Server", "tcp@127.0.0.1:1");
    assert_eq!(status, 200);
    // At most 32 stalled writes of 100 ms each stand in front of it.
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "answered after {:?}",
        t0.elapsed()
    );
    drop(stalled);
}

/// A client that announces a body with `Expect: 100-continue` waits for
/// our answer before sending it: the answer must not wait for the body.
#[test]
fn a_request_whose_body_never_comes_is_still_answered() {
    let reg = start(Registry::DEFAULT_TTL);
    let host = reg.addr().target();
    for (head, status) in [
        ("GET /_rpc_/registry", "200"),
        ("POST /wrong", "404"),
        ("DELETE /_rpc_/registry", "400"),
        ("PUT /_rpc_/registry", "405"),
    ] {
        let mut s = TcpStream::connect(host).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(
            format!(
                "{head} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5000\r\n\
                 Expect: 100-continue\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        let mut buf = [0u8; 512];
        let n = s
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("{head}: no answer: {e}"));
        let got = String::from_utf8_lossy(&buf[..n]);
        assert!(
            got.starts_with(&format!("HTTP/1.1 {status}")),
            "{head}: {got}"
        );
    }
}

#[test]
fn delete_deregisters() {
    let reg = start(Registry::DEFAULT_TTL);
    let url = reg.url().to_string();
    post(&url, "X-rpc-Server", "tcp@127.0.0.1:1");
    post(&url, "X-rpc-Server", "tcp@127.0.0.1:2");
    let resp = http()
        .delete(&url)
        .header("X-rpc-Server", "tcp@127.0.0.1:1")
        .call()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(get_header(&url, "X-rpc-Servers"), "tcp@127.0.0.1:2");
    let again = http()
        .delete(&url)
        .header("X-rpc-Server", "tcp@127.0.0.1:1")
        .call()
        .unwrap();
    assert_eq!(again.status(), 404);
}

#[test]
fn services_and_metadata_filter_the_listing() {
    let reg = start(Registry::DEFAULT_TTL);
    let url = reg.url().to_string();
    let body = serde_json::json!({
        "services": ["Arith", "Echo"], "weight": 3,
        "metadata": {"version": "1.2.0", "tags": "eu,canary"}
    });
    assert_eq!(post_json(&url, "tcp@127.0.0.1:1", body), 200);
    assert_eq!(
        post_json(
            &url,
            "tcp@127.0.0.1:2",
            serde_json::json!({"services": ["Echo"]})
        ),
        200
    );
    // A plain renewal (a Go heartbeat) keeps what the instance said before.
    assert_eq!(post(&url, "X-rpc-Server", "tcp@127.0.0.1:1"), 200);

    let arith = get_json(&format!("{url}?service=Arith"));
    assert_eq!(addrs(&arith), ["tcp@127.0.0.1:1"]);
    let one = &arith["instances"][0];
    assert_eq!(one["weight"], 3);
    assert_eq!(one["services"], serde_json::json!(["Arith", "Echo"]));
    assert_eq!(one["metadata"]["version"], "1.2.0");
    assert_eq!(one["metadata"]["tags"], "eu,canary");
    assert_eq!(
        addrs(&get_json(&format!("{url}?service=Echo"))),
        ["tcp@127.0.0.1:1", "tcp@127.0.0.1:2"]
    );
    assert!(addrs(&get_json(&format!("{url}?service=Nope"))).is_empty());
    // The same through the discovery.
    let d = RegistryDiscovery::builder(&url)
        .service("Arith")
        .long_poll(false)
        .build()
        .unwrap();
    let snap = d.snapshot().unwrap();
    assert_eq!(snap.instances.len(), 1);
    assert_eq!(snap.instances[0].weight, 3);
}

#[test]
fn an_address_not_renewed_within_the_ttl_is_purged_without_a_get() {
    let reg = start(Duration::from_secs(1));
    let url = reg.url().to_string();
    // Taken before the POST: the TTL runs from when the registry saw it.
    let registered = Instant::now();
    post(&url, "X-rpc-Server", "tcp@127.0.0.1:1");
    let listing = get_json(&url);
    assert_eq!(addrs(&listing), ["tcp@127.0.0.1:1"]);
    let version = listing["version"].as_u64().unwrap();
    // A long poll answers when the list changes: only the purge can change
    // it, and nobody GETs the plain list in between.
    let changed = get_json(&format!("{url}?watch={version}&timeout=10s"));
    let waited = registered.elapsed();
    assert!(addrs(&changed).is_empty(), "{changed}");
    assert_ne!(changed["version"].as_u64().unwrap(), version);
    assert!(
        waited >= Duration::from_secs(1),
        "purged after {waited:?}, before the TTL"
    );
    assert!(waited < Duration::from_secs(5), "purged after {waited:?}");
    assert!(reg.instances().is_empty());
}

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
        .send_empty()
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
fn five_thousand_instances_are_listed_whole() {
    let reg = start(Registry::DEFAULT_TTL);
    let url = reg.url().to_string();
    // A keep-alive agent: 5,000 requests on a few connections.
    let agent = http();
    for i in 0..5000 {
        let resp = agent
            .post(&url)
            .header(
                "X-rpc-Server",
                format!("tcp@10.0.{}.{}:7000", i / 250, i % 250),
            )
            .header("Content-Type", "application/json")
            .send(r#"{"services":["Arith"],"metadata":{"zone":"eu-west-1a"}}"#.as_bytes())
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let listing = get_json(&format!("{url}?service=Arith"));
    let got = addrs(&listing);
    assert_eq!(got.len(), 5000);
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(got, sorted, "listing is sorted");
    let d = RegistryDiscovery::builder(&url)
        .service("Arith")
        .long_poll(false)
        .build()
        .unwrap();
    assert_eq!(d.snapshot().unwrap().instances.len(), 5000);
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

#[test]
fn shutdown_answers_long_polls_and_joins_every_thread() {
    let reg = start(Registry::DEFAULT_TTL);
    assert!(reg.live_threads() >= 2);
    assert!(!wait_for_threads("geerpc-reg-", |n| n > 0).is_empty());
    let url = reg.url().to_string();
    let version = get_json(&url)["version"].as_u64().unwrap();
    let poll = std::thread::spawn(move || {
        let t0 = Instant::now();
        let r = http()
            .get(format!("{url}?watch={version}&timeout=60s"))
            .call();
        (r.map(|r| r.status().as_u16()), t0.elapsed())
    });
    // The poll is parked (the reaper holds it), not a worker: GETs still work.
    for _ in 0..10 {
        assert_eq!(get_header(reg.url(), "X-rpc-Servers"), "");
    }
    let t0 = Instant::now();
    reg.shutdown();
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        t0.elapsed()
    );
    assert_eq!(reg.live_threads(), 0);
    let (status, waited) = poll.join().unwrap();
    // Answered (or cut) at shutdown, not after its 60 s.
    assert!(
        waited < Duration::from_secs(10),
        "{status:?} after {waited:?}"
    );
    // The port is free again at once.
    std::net::TcpListener::bind(reg.addr().target()).expect("port released");
}

#[test]
fn a_bad_long_poll_is_400() {
    let reg = start(Registry::DEFAULT_TTL);
    for q in ["watch=abc", "watch=1&timeout=soon"] {
        let resp = http().get(format!("{}?{q}", reg.url())).call().unwrap();
        assert_eq!(resp.status(), 400, "{q}");
    }
    // A poll with an old version answers at once.
    let t0 = Instant::now();
    let listing = get_json(&format!("{}?watch=1&timeout=30s", reg.url()));
    assert!(listing["version"].as_u64().unwrap() > 1);
    assert!(t0.elapsed() < Duration::from_secs(5));
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

/// An HTTP server standing in for a registry, and its registry URL: the
/// test answers its requests by hand.
fn fake_registry() -> (Arc<tiny_http::Server>, String) {
    let fake = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
    let url = format!(
        "http://{}/_rpc_/registry",
        fake.server_addr().to_ip().unwrap()
    );
    (fake, url)
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
