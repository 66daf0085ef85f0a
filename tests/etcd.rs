//! Registration and discovery against real etcd processes (etcd 3.4 from
//! Debian's `etcd-server` package), started by each test on free loopback
//! ports with throw-away data directories.

mod common;
mod etcd_support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{start_server, Args};
use etcd_support::{addrs, free_port, opts, wait_for, Etcd};
use geerpc::etcd;
use geerpc::etcd::EtcdDiscovery;
use geerpc::server::ServerHandle;
use geerpc::{Client, Discovery, FailMode, SelectMode, XClient};

fn sum(c: &Client, a: i64, b: i64) -> i64 {
    c.call("Arith.Sum", &Args { num1: a, num2: b }).unwrap()
}

// ---------------------------------------------------------------- tests

#[test]
fn register_then_discover() {
    common::init_log();
    let etcd = Etcd::single();
    let eps = etcd.endpoints();
    let server = start_server();
    let addr = server.addr().to_string();
    let reg =
        etcd::EtcdRegistration::for_server(&server, &eps, opts(10).metadata("zone", "a").weight(3))
            .unwrap();
    assert_eq!(
        reg.keys(),
        [
            format!("/geerpc/Arith/{addr}"),
            format!("/geerpc/Echo/{addr}")
        ]
    );
    assert!(reg.ttl() >= Duration::from_secs(10));

    let arith = EtcdDiscovery::new(&eps, Some("Arith")).unwrap();
    let snap = arith.snapshot().unwrap();
    assert_eq!(addrs(&snap), [addr.as_str()]);
    let i = &snap.instances[0];
    assert_eq!(i.services, ["Arith", "Echo"]);
    assert_eq!(i.weight, 3);
    assert_eq!(i.metadata.get("zone").map(String::as_str), Some("a"));

    // All services: the instance once, not once per key.
    let all = EtcdDiscovery::new(&eps, None).unwrap();
    assert_eq!(addrs(&all.snapshot().unwrap()), [addr.as_str()]);
    // Another prefix sees nothing.
    let other = EtcdDiscovery::with_prefix(&eps, "/elsewhere", None).unwrap();
    assert!(other.snapshot().unwrap().instances.is_empty());

    // The address found is the one that answers.
    let client = Client::dial(&snap.instances[0].addr).unwrap();
    assert_eq!(sum(&client, 2, 3), 5);

    // A second server shows up in the running discovery.
    let rx = arith.watch().unwrap();
    let server2 = start_server();
    let addr2 = server2.addr().to_string();
    let _reg2 =
        etcd::EtcdRegistration::for_server(&server2, &eps, opts(10).services(["Arith"])).unwrap();
    let mut both = vec![addr.clone(), addr2.clone()];
    both.sort();
    assert!(
        wait_for(&arith, &rx, Duration::from_secs(5), |s| addrs(s) == both).is_some(),
        "second server not discovered: {:?}",
        arith.snapshot().unwrap()
    );
    // server2 registered Arith only: the Echo list does not have it.
    let echo = EtcdDiscovery::new(&eps, Some("Echo")).unwrap();
    assert_eq!(addrs(&echo.snapshot().unwrap()), [addr]);
    drop(reg);
}

#[test]
fn unreachable_etcd_is_a_clear_error() {
    let port = free_port();
    let err = EtcdDiscovery::new(&[format!("127.0.0.1:{port}")], None).unwrap_err();
    assert!(err.to_string().contains(&port.to_string()), "{err}");
    let server = start_server();
    let err = etcd::EtcdRegistration::for_server(&server, &[format!("127.0.0.1:{port}")], opts(5))
        .unwrap_err();
    assert!(matches!(err, geerpc::Error::Registry { .. }), "{err}");
    assert!(EtcdDiscovery::new::<&str>(&[], None).is_err());
}

#[test]
fn failover_to_the_next_endpoint() {
    common::init_log();
    let etcd = Etcd::single();
    // A dead endpoint first: every call goes on to the live one.
    let eps = [format!("127.0.0.1:{}", free_port()), etcd.endpoint(0)];
    let server = start_server();
    let reg = etcd::EtcdRegistration::for_server(&server, &eps, opts(5)).unwrap();
    let d = EtcdDiscovery::new(&eps, Some("Arith")).unwrap();
    assert_eq!(addrs(&d.snapshot().unwrap()), [server.addr().to_string()]);
    let rx = d.watch().unwrap();
    reg.deregister().unwrap();
    assert!(wait_for(&d, &rx, Duration::from_secs(5), |s| s.instances.is_empty()).is_some());
}

#[test]
fn deregisters_at_once_on_shutdown_and_drop() {
    common::init_log();
    let etcd = Etcd::single();
    let eps = etcd.endpoints();
    let a = start_server();
    let b = start_server();
    let _reg_a = etcd::EtcdRegistration::for_server(&a, &eps, opts(30)).unwrap();
    let reg_b = etcd::EtcdRegistration::for_server(&b, &eps, opts(30)).unwrap();
    let d = EtcdDiscovery::new(&eps, Some("Arith")).unwrap();
    assert_eq!(d.snapshot().unwrap().instances.len(), 2);

    // Shutdown revokes the lease before it returns: a fresh list right
    // after has the server gone (its TTL of 30 s has nothing to do with it).
    let a_addr = a.addr().to_string();
    a.shutdown();
    d.refresh().unwrap();
    assert_eq!(addrs(&d.snapshot().unwrap()), [b.addr().to_string()]);
    assert!(!addrs(&EtcdDiscovery::new(&eps, None).unwrap().snapshot().unwrap()).contains(&a_addr));

    // Dropping the registration does the same, as dropping a Heartbeat
    // does. (A fresh discovery: `d` saw both servers leave within its
    // warmup, so it keeps listing them for that long, by design.)
    drop(reg_b);
    assert!(EtcdDiscovery::new(&eps, None)
        .unwrap()
        .snapshot()
        .unwrap()
        .instances
        .is_empty());
    let raw = etcd.post(
        "/v3/kv/range",
        serde_json::json!({"key": "L2dlZXJwYy8=", "range_end": "L2dlZXJwYzA="}),
    );
    assert!(raw.get("kvs").is_none(), "keys left in etcd: {raw}");
}

#[test]
fn expires_after_ttl_when_not_deregistered() {
    common::init_log();
    let etcd = Etcd::single();
    let eps = etcd.endpoints();
    let server = start_server();
    let addr = server.addr().to_string();
    let reg = etcd::EtcdRegistration::for_server(&server, &eps, opts(2)).unwrap();
    let ttl = reg.ttl();
    let d = EtcdDiscovery::new(&eps, Some("Arith")).unwrap();
    let rx = d.watch().unwrap();
    assert_eq!(addrs(&d.snapshot().unwrap()), [addr.as_str()]);

    // As if the process died: no more keepalives, no revoke.
    let abandoned = Instant::now();
    reg.abandon();
    d.refresh().unwrap();
    assert_eq!(addrs(&d.snapshot().unwrap()), [addr], "gone before its TTL");
    let gone = wait_for(&d, &rx, ttl + Duration::from_secs(8), |s| {
        s.instances.is_empty()
    });
    assert!(
        gone.is_some(),
        "still registered {:?} after abandon",
        abandoned.elapsed()
    );
    // It was the lease that ran out: not before most of the TTL had passed
    // (the last keepalive was at most a third of it before abandon).
    assert!(
        abandoned.elapsed() >= ttl / 2,
        "gone after {:?}",
        abandoned.elapsed()
    );
    // The server itself still runs; its shutdown has nothing to revoke.
    assert_eq!(sum(&Client::dial(server.addr()).unwrap(), 1, 1), 2);
    server.shutdown();
}

#[test]
fn watch_delivers_add_and_remove_within_100ms() {
    common::init_log();
    let etcd = Etcd::single();
    let eps = etcd.endpoints();
    let d = EtcdDiscovery::new(&eps, Some("Arith")).unwrap();
    let rx = d.watch().unwrap();
    assert!(d.snapshot().unwrap().instances.is_empty());
    let version = d.snapshot().unwrap().version;

    let server = start_server();
    let addr = server.addr().to_string();
    // The median of three rounds: the first can meet a watch stream etcd
    // is still setting up (it then replays events from a loop that runs
    // every 100 ms), and any one can meet a stall of a loaded machine.
    let (mut adds, mut removes) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let reg = etcd::EtcdRegistration::for_server(&server, &eps, opts(10)).unwrap();
        // `register` returns once etcd has committed the keys.
        let added = wait_for(&d, &rx, Duration::from_secs(5), |s| {
            addrs(s) == [addr.clone()]
        });
        adds.push(added.expect("addition never seen"));
        reg.deregister().unwrap();
        let removed = wait_for(&d, &rx, Duration::from_secs(5), |s| s.instances.is_empty());
        removes.push(removed.expect("removal never seen"));
    }
    adds.sort();
    removes.sort();
    assert!(
        adds[1] <= Duration::from_millis(100),
        "additions took {adds:?}"
    );
    assert!(
        removes[1] <= Duration::from_millis(100),
        "removals took {removes:?}"
    );
    assert!(d.snapshot().unwrap().version > version);
}

#[test]
fn reregisters_when_the_lease_is_revoked_behind_its_back() {
    common::init_log();
    let etcd = Etcd::single();
    let eps = etcd.endpoints();
    let server = start_server();
    let addr = server.addr().to_string();
    let reg = etcd::EtcdRegistration::for_server(&server, &eps, opts(3)).unwrap();
    let d = EtcdDiscovery::new(&eps, Some("Arith")).unwrap();
    let rx = d.watch().unwrap();
    let old = reg.lease_id();

    etcd.post(
        "/v3/lease/revoke",
        serde_json::json!({ "ID": old.to_string() }),
    );
    // The next keepalive finds the lease gone and registers again. (The
    // empty list in between is not waited for: a keepalive due at once
    // can end it before this thread looks.)
    let deadline = Instant::now() + Duration::from_secs(10);
    while reg.lease_id() == old && Instant::now() < deadline {
        let _ = rx.recv_timeout(Duration::from_millis(10));
    }
    assert_ne!(reg.lease_id(), old, "not registered again");
    assert!(
        wait_for(&d, &rx, Duration::from_secs(5), |s| addrs(s)
            == [addr.clone()])
        .is_some(),
        "the new registration is not listed"
    );
}

#[test]
fn reregisters_and_rewatches_after_etcd_restarts_empty() {
    common::init_log();
    let mut etcd = Etcd::single();
    let eps = etcd.endpoints();
    let a = start_server();
    let a_addr = a.addr().to_string();
    let reg = etcd::EtcdRegistration::for_server(&a, &eps, opts(3)).unwrap();
    let old = reg.lease_id();
    let d = EtcdDiscovery::new(&eps, Some("Arith")).unwrap();
    let rx = d.watch().unwrap();

    // Same ports, empty data: the lease and the keys are gone, and the
    // revisions start again from 1.
    etcd.restart_fresh(0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while reg.lease_id() == old && Instant::now() < deadline {
        let _ = rx.recv_timeout(Duration::from_millis(100));
    }
    assert_ne!(
        reg.lease_id(),
        old,
        "not registered again after the restart"
    );
    let fresh = EtcdDiscovery::new(&eps, Some("Arith")).unwrap();
    assert_eq!(addrs(&fresh.snapshot().unwrap()), [a_addr.as_str()]);

    // The old discovery follows the new store: it sees a newcomer.
    let b = start_server();
    let _reg_b = etcd::EtcdRegistration::for_server(&b, &eps, opts(3)).unwrap();
    let mut both = vec![a_addr, b.addr().to_string()];
    both.sort();
    assert!(
        wait_for(&d, &rx, Duration::from_secs(15), |s| addrs(s) == both).is_some(),
        "discovery did not follow the restarted etcd: {:?}",
        d.snapshot().unwrap()
    );
}

#[test]
fn dropping_the_discovery_stops_its_thread_quickly() {
    let etcd = Etcd::single();
    let d = EtcdDiscovery::new(&etcd.endpoints(), None).unwrap();
    let rx = d.watch().unwrap();
    let start = Instant::now();
    drop(d);
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "drop took {:?}",
        start.elapsed()
    );
    // The watch channel closes with it.
    assert!(matches!(
        rx.recv_timeout(Duration::from_secs(1)),
        Err(crossbeam_channel::RecvTimeoutError::Disconnected)
    ));
}

/// Calls served by `server`'s Arith.Sum so far.
fn sums_served(server: &ServerHandle) -> u64 {
    server
        .server()
        .services()
        .iter()
        .filter(|s| s.name == "Arith")
        .flat_map(|s| s.methods.iter())
        .filter(|m| m.name == "Sum")
        .map(|m| m.stats.calls)
        .sum()
}

#[test]
fn cluster_member_killed_while_calls_run() {
    use std::sync::atomic::{AtomicBool, AtomicU64};
    use std::sync::Arc;

    common::init_log();
    let mut etcd = Etcd::cluster(3);
    // The leader first: everyone talks to it, and killing it costs the
    // cluster its leader and every client its endpoint.
    let leader = etcd.leader();
    let mut order = vec![leader];
    order.extend((0..3).filter(|&i| i != leader));
    let eps: Vec<String> = order.iter().map(|&i| etcd.endpoint(i)).collect();

    let ttl = 4;
    let s1 = start_server();
    let s2 = start_server();
    let _r1 = etcd::EtcdRegistration::for_server(&s1, &eps, opts(ttl)).unwrap();
    let _r2 = etcd::EtcdRegistration::for_server(&s2, &eps, opts(ttl)).unwrap();
    let discovery = EtcdDiscovery::new(&eps, Some("Arith")).unwrap();
    let changed = discovery.watch().unwrap();
    assert_eq!(discovery.snapshot().unwrap().instances.len(), 2);
    let xc = Arc::new(
        XClient::builder(discovery)
            .select_mode(SelectMode::RoundRobin)
            .fail_mode(FailMode::Failover { retries: 2 })
            .timeout(Some(Duration::from_secs(5)))
            .build(),
    );

    // Callers run until told to stop (and never more than 60 s).
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let (progress_tx, progress) = crossbeam_channel::bounded::<()>(1);
    let (failed_tx, failed) = crossbeam_channel::unbounded::<String>();
    let callers: Vec<_> = (0..2)
        .map(|t| {
            let (xc, stop, ok) = (xc.clone(), stop.clone(), ok.clone());
            let (progress_tx, failed_tx) = (progress_tx.clone(), failed_tx.clone());
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut n = 0i64;
                while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
                    n += 1;
                    match xc.call::<_, i64>("Arith.Sum", &Args { num1: t, num2: n }) {
                        Ok(v) if v == t + n => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            let _ = progress_tx.try_send(());
                        }
                        Ok(v) => failed_tx.send(format!("{t}+{n} gave {v}")).unwrap(),
                        Err(e) => failed_tx.send(e.to_string()).unwrap(),
                    }
                }
            })
        })
        .collect();
    let wait_calls = |n: u64| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while ok.load(Ordering::Relaxed) < n && Instant::now() < deadline {
            let _ = progress.recv_timeout(Duration::from_millis(100));
        }
        assert!(
            ok.load(Ordering::Relaxed) >= n,
            "calls stalled at {}",
            ok.load(Ordering::Relaxed)
        );
    };
    wait_calls(50);

    etcd.kill(leader);
    let killed = Instant::now();
    let before = ok.load(Ordering::Relaxed);
    wait_calls(before + 50);

    // Registration carries on: a newcomer registers (the dead endpoint
    // first in its list), the running discovery sees it, calls reach it.
    let s3 = start_server();
    let _r3 = etcd::EtcdRegistration::for_server(&s3, &eps, opts(ttl)).unwrap();
    let d = xc.discovery();
    let deadline = Instant::now() + Duration::from_secs(15);
    while d.snapshot().unwrap().instances.len() != 3 && Instant::now() < deadline {
        let _ = changed.recv_timeout(Duration::from_millis(100));
    }
    assert_eq!(
        d.snapshot().unwrap().instances.len(),
        3,
        "newcomer not discovered after the kill"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while sums_served(&s3) == 0 && Instant::now() < deadline {
        let _ = progress.recv_timeout(Duration::from_millis(100));
    }
    assert!(sums_served(&s3) > 0, "no call reached the newcomer");

    // Keepalives carry on: past the TTL since the kill, the first two are
    // still registered, as a fresh list from the survivors says.
    let ttl_passed = killed + Duration::from_secs(ttl + 1);
    while Instant::now() < ttl_passed {
        let _ = progress.recv_timeout(ttl_passed.saturating_duration_since(Instant::now()));
    }
    let fresh = EtcdDiscovery::new(&eps, Some("Arith")).unwrap();
    let mut all = vec![
        s1.addr().to_string(),
        s2.addr().to_string(),
        s3.addr().to_string(),
    ];
    all.sort();
    assert_eq!(addrs(&fresh.snapshot().unwrap()), all);
    assert_eq!(addrs(&d.snapshot().unwrap()), all);

    stop.store(true, Ordering::Relaxed);
    for c in callers {
        c.join().unwrap();
    }
    drop(failed_tx);
    let failures: Vec<String> = failed.iter().collect();
    assert!(
        failures.is_empty(),
        "{} calls failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(sums_served(&s1) > 0 && sums_served(&s2) > 0);
}

/// `geerpc list --etcd` and `geerpc call --etcd` see what servers register.
#[test]
#[cfg(feature = "cli")]
fn the_geerpc_command_lists_and_calls_through_etcd() {
    common::init_log();
    let etcd = Etcd::single();
    let eps = etcd.endpoints();
    let server = start_server();
    let addr = server.addr().to_string();
    let _reg = etcd::EtcdRegistration::for_server(&server, &eps, opts(10)).unwrap();
    let joined = eps.join(",");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_geerpc"))
            .args(args)
            .output()
            .expect("run geerpc");
        assert!(
            out.status.success(),
            "geerpc {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let listed = run(&["list", "--etcd", &joined, "--service", "Arith"]);
    assert!(listed.starts_with(&format!("{addr} ")), "{listed}");
    assert_eq!(listed.lines().count(), 1, "{listed}");
    let reply = run(&[
        "call",
        "--etcd",
        &joined,
        "Arith.Sum",
        r#"{"Num1":40,"Num2":2}"#,
    ]);
    assert_eq!(reply.trim(), "42");
}
