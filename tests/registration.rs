//! The one registration concept (`geerpc::registration`) used the same way
//! with both backends, the HTTP registry and etcd, through `dyn Registrar`:
//! what is announced, a bare `HOST:PORT` registered as `tcp@`, a dropped
//! handle deregistering at once (long TTLs, so expiry cannot explain it),
//! `deregister()` and `abandon()`. The etcd half starts a real etcd, as
//! `tests/etcd.rs` does.

mod common;
mod etcd_support;

use std::time::{Duration, Instant};

use common::{init_log, start_server};
use etcd_support::Etcd;
use geerpc::etcd::{EtcdDiscovery, EtcdRegistrar, EtcdRegistration};
use geerpc::registration::{RegisterOptions, Registrar, Registration};
use geerpc::registry::HttpRegistrar;
use geerpc::xclient::Instance;
use geerpc::{Discovery, Heartbeat, Registry};

/// What a backend lists now, read from the backend itself.
type Listed<'a> = &'a dyn Fn() -> Vec<Instance>;

/// Waits until `cond` holds for the listing (the HTTP registry's first
/// beat is asynchronous; nothing signals it here, so look every few ms).
fn wait_listed(listed: Listed, cond: impl Fn(&[Instance]) -> bool) -> Vec<Instance> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = listed();
        if cond(&now) {
            return now;
        }
        assert!(Instant::now() < deadline, "never listed as wanted: {now:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn addrs(l: &[Instance]) -> Vec<&str> {
    l.iter().map(|i| i.addr.as_str()).collect()
}

/// The same steps, whichever backend is behind `registrar`.
fn exercise(registrar: &dyn Registrar, listed: Listed) {
    // A server: its address and, as asked, what the options announce.
    let server = start_server();
    let addr = server.addr().to_string();
    let options = RegisterOptions::new()
        .services(["Arith"])
        .weight(2)
        .version("1.4")
        .ttl(Duration::from_secs(60));
    let handle: Box<dyn Registration> = registrar.register_server(&server, options).unwrap();
    assert_eq!(handle.addr().to_string(), addr);
    let now = wait_listed(listed, |l| !l.is_empty());
    assert_eq!(addrs(&now), [addr.as_str()]);
    assert_eq!(now[0].weight, 2);
    assert_eq!(now[0].services, ["Arith"]);
    assert_eq!(now[0].metadata["version"], "1.4");
    // The HTTP heartbeat learns it from the answer, just after the
    // registry listed it: look every few ms.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !handle.is_registered() {
        assert!(Instant::now() < deadline, "never registered");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Dropped: gone at once, not at the TTL (60 s).
    drop(handle);
    assert!(listed().is_empty(), "still listed: {:?}", listed());

    // A bare HOST:PORT is registered as tcp@ (Go clients split on @).
    let bare = server.addr().target().to_string();
    let options = RegisterOptions::new()
        .services(["Arith"])
        .ttl(Duration::from_secs(60));
    let handle = registrar
        .register(&bare.parse().unwrap(), options.clone())
        .unwrap();
    assert_eq!(handle.addr().to_string(), format!("tcp@{bare}"));
    wait_listed(listed, |l| addrs(l) == [format!("tcp@{bare}")]);
    handle.deregister().unwrap();
    assert!(listed().is_empty(), "still listed: {:?}", listed());

    // Abandoned: left to expire, so still listed.
    let handle = registrar.register(&addr.parse().unwrap(), options).unwrap();
    wait_listed(listed, |l| addrs(l) == [addr.as_str()]);
    handle.abandon();
    assert_eq!(addrs(&listed()), [addr.as_str()]);
}

#[test]
fn the_http_registry_registers_drops_deregisters_and_abandons() {
    init_log();
    let reg = Registry::builder()
        .addr("127.0.0.1:0")
        .ttl(Duration::from_secs(300))
        .start()
        .unwrap();
    let registrar = HttpRegistrar::new(reg.url()).unwrap();
    exercise(&registrar, &|| reg.instances());
    // The inherent methods take `impl ToAddress`: a bare string too.
    let hb = registrar
        .register("127.0.0.1:9", RegisterOptions::new())
        .unwrap();
    assert_eq!(hb.addr(), "tcp@127.0.0.1:9");
    wait_listed(&|| reg.instances(), |l| {
        addrs(l).contains(&"tcp@127.0.0.1:9")
    });
}

#[test]
fn etcd_registers_drops_deregisters_and_abandons() {
    init_log();
    let etcd = Etcd::single();
    let eps = etcd.endpoints();
    let registrar = EtcdRegistrar::new(&eps).unwrap();
    // A fresh discovery lists what etcd holds now.
    let listed = || {
        let d = EtcdDiscovery::new(&eps, Some("Arith")).unwrap();
        d.snapshot().unwrap().instances.to_vec()
    };
    exercise(&registrar, &listed);
}

/// The shorthands of both backends are shaped the same, and a server's
/// shutdown deregisters with either.
#[test]
fn for_server_is_shaped_the_same_and_a_shutdown_deregisters() {
    init_log();
    let reg = Registry::builder().addr("127.0.0.1:0").start().unwrap();
    let etcd = Etcd::single();
    let eps = etcd.endpoints();
    let server = start_server();
    let opts = || RegisterOptions::new().ttl(Duration::from_secs(60));
    let _hb: Heartbeat = Heartbeat::for_server(&server, reg.url(), opts()).unwrap();
    let _er: EtcdRegistration = EtcdRegistration::for_server(&server, &eps, opts()).unwrap();
    let in_etcd = || {
        let d = EtcdDiscovery::new(&eps, Some("Arith")).unwrap();
        d.snapshot().unwrap().instances.to_vec()
    };
    wait_listed(&|| reg.instances(), |l| l.len() == 1);
    assert_eq!(in_etcd().len(), 1);
    server.shutdown();
    assert!(reg.instances().is_empty(), "{:?}", reg.instances());
    assert!(in_etcd().is_empty(), "{:?}", in_etcd());
}

/// A registry that accepts connections and never answers: dropping the
/// handle still returns, bounded by the request timeout (the thread is
/// interrupted, the `DELETE` times out), instead of blocking for ever.
#[test]
fn dropping_a_heartbeat_to_a_registry_that_never_answers_is_bounded() {
    init_log();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/_rpc_/registry", listener.local_addr().unwrap());
    // Accepts and keeps every connection, reading nothing, answering
    // nothing; stops when the test ends (the process exits).
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        for s in listener.incoming().take(64) {
            kept.push(s);
        }
    });
    let timeout = Duration::from_millis(300);
    let hb = Heartbeat::start(
        &url,
        "127.0.0.1:9",
        RegisterOptions::new().request_timeout(timeout),
    )
    .unwrap();
    let (tx, rx) = crossbeam_channel::bounded(1);
    let t0 = Instant::now();
    std::thread::spawn(move || {
        drop(hb);
        let _ = tx.send(());
    });
    // Join (at most one timeout) then the DELETE (at most one timeout);
    // generous slack for a loaded machine.
    rx.recv_timeout(Duration::from_secs(10))
        .expect("dropping the heartbeat blocked");
    assert!(t0.elapsed() < Duration::from_secs(10));
}
