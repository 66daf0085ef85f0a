//! The registry with Go GeeRPC peers, both ways: a Go server's beat (a
//! header-only `POST`, every 4 minutes whatever the TTL) is kept at least
//! the legacy TTL, a `?service=` filter prefers the instances that name
//! the service, and geerpc's heartbeat and discovery against a Go
//! registry (a double answering exactly as the article's `GeeRegistry`:
//! the list in one header, `405` for anything but `GET` and `POST`).
//! The byte-for-byte Go peer is in tests/registry.rs
//! (`a_go_peer_that_knows_no_extension_works`).

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use geerpc::registration::RegisterOptions;
use geerpc::{Discovery, Heartbeat, Registry, RegistryDiscovery, SelectMode, XClient};

/// A POST as Go's `http.Client` sends a Go server's beat: no body.
fn go_beat(reg: &Registry, addr: &str) -> String {
    let host = reg.addr().target();
    let mut s = TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /_rpc_/registry HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Go-http-client/1.1\r\n\
         Content-Length: 0\r\nX-Rpc-Servers: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// What geerpc's heartbeat sends: the address and a JSON body.
fn geerpc_beat(url: &str, addr: &str, services: &[&str]) -> u16 {
    post_json(url, addr, serde_json::json!({ "services": services }))
}

fn listed(url: &str) -> (Vec<String>, u64) {
    let text = http()
        .get(url)
        .header("Accept", "application/json")
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let addrs = v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["addr"].as_str().unwrap().to_string())
        .collect();
    (addrs, v["version"].as_u64().unwrap())
}

/// The plain listing, as a Go client reads it.
fn listed_in_header(url: &str) -> String {
    let resp = http().get(url).call().unwrap();
    resp.headers()["X-Geerpc-Servers"]
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_go_servers_beat_outlives_a_ttl_shorter_than_its_interval() {
    // A TTL far under Go's 4 minutes; the legacy TTL is the default 5 min.
    let reg = start(Duration::from_millis(300));
    let url = reg.url().to_string();
    let answer = go_beat(&reg, "tcp@127.0.0.1:7001");
    // The answer says how long the beat keeps it; geerpc's gets the TTL.
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("x-geerpc-ttl-ms: 300000\r\n"),
        "{answer}"
    );
    assert_eq!(geerpc_beat(&url, "tcp@127.0.0.1:7002", &[]), 200);
    let (addrs, version) = listed(&url);
    assert_eq!(addrs, ["tcp@127.0.0.1:7001", "tcp@127.0.0.1:7002"]);
    // The geerpc instance expires at the TTL (a long poll sees the purge);
    // the Go one stays.
    let end = Instant::now() + Duration::from_secs(20);
    let mut version = version;
    loop {
        let (addrs, v) = listed(&format!("{url}?watch={version}&timeout=5s"));
        assert!(
            addrs.iter().any(|a| a == "tcp@127.0.0.1:7001"),
            "the Go server dropped out at the TTL: {addrs:?}"
        );
        if addrs == ["tcp@127.0.0.1:7001"] {
            break;
        }
        assert!(Instant::now() < end, "still listed: {addrs:?}");
        version = v;
    }
    assert_eq!(listed_in_header(&url), "tcp@127.0.0.1:7001");
    assert_eq!(reg.instances().len(), 1);
}

#[test]
fn the_legacy_ttl_can_be_lowered_to_the_ttl() {
    init_log();
    let reg = Registry::builder()
        .addr("127.0.0.1:0")
        .ttl(Duration::from_millis(300))
        .legacy_ttl(Duration::ZERO)
        .start()
        .unwrap();
    let url = reg.url().to_string();
    let answer = go_beat(&reg, "tcp@127.0.0.1:7001");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("x-geerpc-ttl-ms: 300\r\n"),
        "{answer}"
    );
    let (addrs, version) = listed(&url);
    assert_eq!(addrs, ["tcp@127.0.0.1:7001"]);
    let (addrs, _) = listed(&format!("{url}?watch={version}&timeout=5s"));
    assert!(addrs.is_empty(), "{addrs:?}");
}

#[test]
fn a_service_filter_prefers_the_instances_that_name_it() {
    let reg = start(Registry::DEFAULT_TTL);
    let url = reg.url().to_string();
    go_beat(&reg, "tcp@127.0.0.1:7001");
    go_beat(&reg, "tcp@127.0.0.1:7002");
    assert_eq!(geerpc_beat(&url, "tcp@127.0.0.1:7101", &["Arith"]), 200);
    assert_eq!(geerpc_beat(&url, "tcp@127.0.0.1:7102", &["Echo"]), 200);
    let arith = format!("{url}?service=Arith");
    assert_eq!(listed(&arith).0, ["tcp@127.0.0.1:7101"]);
    assert_eq!(listed_in_header(&arith), "tcp@127.0.0.1:7101");
    // Asked for: the Go servers too.
    let (all, _) = listed(&format!("{arith}&include_legacy=true"));
    assert_eq!(
        all,
        [
            "tcp@127.0.0.1:7001",
            "tcp@127.0.0.1:7002",
            "tcp@127.0.0.1:7101"
        ]
    );
    // A service nobody names: the Go servers, which may serve it.
    assert_eq!(
        listed_in_header(&format!("{url}?service=Sum")),
        "tcp@127.0.0.1:7001,tcp@127.0.0.1:7002"
    );
    // A Go client asks for no service: it gets everything.
    assert_eq!(listed(&url).0.len(), 4);

    // The discovery asks the same way.
    let d = RegistryDiscovery::builder(&url)
        .service("Arith")
        .long_poll(false)
        .build()
        .unwrap();
    let addrs = |d: &RegistryDiscovery| -> Vec<String> {
        d.snapshot()
            .unwrap()
            .instances
            .iter()
            .map(|i| i.addr.clone())
            .collect()
    };
    assert_eq!(addrs(&d), ["tcp@127.0.0.1:7101"]);
    let with = RegistryDiscovery::builder(&url)
        .service("Arith")
        .include_legacy(true)
        .long_poll(false)
        .build()
        .unwrap();
    assert_eq!(addrs(&with).len(), 3);

    // The instance naming Arith leaves: a long poll on Arith's list is
    // answered with the Go servers.
    let (_, version) = listed(&arith);
    let gone = http()
        .delete(&url)
        .header("X-rpc-Server", "tcp@127.0.0.1:7101")
        .call()
        .unwrap();
    assert_eq!(gone.status(), 200);
    let (now, _) = listed(&format!("{arith}&watch={version}&timeout=5s"));
    assert_eq!(now, ["tcp@127.0.0.1:7001", "tcp@127.0.0.1:7002"]);
}

/// The article's `GeeRegistry` as a test double: `GET` answers the alive
/// addresses in the `X-rpc-Servers` header (nothing else: no version, no
/// epoch, no TTL), `POST` takes the address from that header (`500`
/// without it), anything else is `405` with an empty body.
struct GoRegistry {
    url: String,
    server: Arc<tiny_http::Server>,
    /// The addresses registered, and every request's method, in order.
    listed: Arc<Mutex<BTreeSet<String>>>,
    methods: Arc<Mutex<Vec<String>>>,
    /// Each method as it is answered.
    answered: crossbeam_channel::Receiver<String>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GoRegistry {
    fn start() -> GoRegistry {
        let (server, url) = fake_registry();
        let listed = Arc::new(Mutex::new(BTreeSet::new()));
        let methods = Arc::new(Mutex::new(Vec::new()));
        let (tx, answered) = crossbeam_channel::unbounded();
        let (s, l, m) = (server.clone(), listed.clone(), methods.clone());
        let thread = std::thread::spawn(move || {
            // Ends when `unblock` makes `recv` fail.
            while let Ok(rq) = s.recv() {
                let method = rq.method().to_string();
                m.lock().unwrap().push(method.clone());
                let header = |name: &'static str| {
                    rq.headers()
                        .iter()
                        .find(|h| h.field.equiv(name))
                        .map(|h| h.value.as_str().to_string())
                };
                let resp = match rq.method() {
                    tiny_http::Method::Get => {
                        let joined = l.lock().unwrap().iter().cloned().collect::<Vec<_>>();
                        let h = tiny_http::Header::from_bytes(
                            "X-rpc-Servers",
                            joined.join(",").as_bytes(),
                        )
                        .unwrap();
                        tiny_http::Response::empty(200).with_header(h)
                    }
                    tiny_http::Method::Post => match header("X-rpc-Servers") {
                        Some(addr) if !addr.is_empty() => {
                            l.lock().unwrap().insert(addr);
                            tiny_http::Response::empty(200)
                        }
                        _ => tiny_http::Response::empty(500),
                    },
                    _ => tiny_http::Response::empty(405),
                };
                let _ = rq.respond(resp);
                let _ = tx.send(method);
            }
        });
        GoRegistry {
            url,
            server,
            listed,
            methods,
            answered,
            thread: Some(thread),
        }
    }
}

impl Drop for GoRegistry {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A geerpc server registers with a Go registry and a geerpc client calls
/// it through it; deregistering there meets `405`, which is no failure
/// (logged at info: the Go registry forgets the address at its TTL).
#[test]
fn geerpc_peers_work_through_a_go_registry_and_deregister_without_failing() {
    init_log();
    let go = GoRegistry::start();
    let server = start_server();
    let hb = Heartbeat::for_server(&server, &go.url, RegisterOptions::new()).unwrap();
    let addr = server.addr().to_string();
    let first = go.answered.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(first, "POST");
    let d = RegistryDiscovery::builder(&go.url)
        // Ignored by a Go registry, which knows no services: every
        // instance is listed.
        .service("Arith")
        .long_poll(false)
        .refresh_after(Duration::ZERO)
        .build()
        .unwrap();
    let snap = d.snapshot().unwrap();
    assert_eq!(snap.instances.len(), 1);
    assert_eq!(snap.instances[0].addr, addr);
    assert!(go.listed.lock().unwrap().contains(&addr));
    let xc = XClient::new(d, SelectMode::Random);
    let sum: i64 = xc.call("Arith.Sum", &Args { num1: 2, num2: 3 }).unwrap();
    assert_eq!(sum, 5);

    // The 405 is answered, and `deregister` takes it as done.
    hb.deregister()
        .expect("a registry without DELETE is no failure");
    assert_eq!(go.methods.lock().unwrap().last().unwrap(), "DELETE");
    // The Go registry still lists it (it forgets at its TTL).
    assert!(go.listed.lock().unwrap().contains(&addr));
}
