//! The registry's HTTP API (PROTOCOL.md section 7) against registries
//! started here on free ports: registering, listing, deregistering, the
//! TTL purge, errors, long-poll requests, shutdown, and compatibility with
//! a Go GeeRPC peer that knows none of the extensions. Heartbeats are in
//! tests/heartbeat.rs, `RegistryDiscovery` in tests/registry_discovery.rs.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use geerpc::{Discovery, Registry, RegistryDiscovery};

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
    // geerpc's JSON body: a header-only POST (a Go server's) is kept at
    // least the legacy TTL (tests/registry_go_peers.rs).
    post_json(&url, "tcp@127.0.0.1:1", serde_json::json!({}));
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
