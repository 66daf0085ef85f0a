//! The registry's bounds (issue 16): request head size, read deadlines,
//! connections, long-poll slots per client, table caps, forgotten
//! services; long-poll answers that a non-reading watcher cannot hold up;
//! and a burst of 1,000 long polls all served.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use geerpc::registry::RegistryBuilder;
use geerpc::Registry;

fn registry(b: RegistryBuilder) -> Registry {
    init_log();
    b.addr("127.0.0.1:0").start().expect("start registry")
}

fn http() -> ureq::Agent {
    registry_agent(Duration::from_secs(20))
}

/// POSTs `body` for `addr`; the status and the answer's text.
fn post(url: &str, addr: &str, body: serde_json::Value) -> (u16, String) {
    let mut resp = http()
        .post(url)
        .header("X-rpc-Server", addr)
        .header("Content-Type", "application/json")
        .send(body.to_string().as_bytes())
        .unwrap();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (resp.status().as_u16(), text)
}

fn delete(url: &str, addr: &str) -> u16 {
    http()
        .delete(url)
        .header("X-rpc-Server", addr)
        .call()
        .unwrap()
        .status()
        .as_u16()
}

/// Waits until `done` holds, polling a state no signal reports; fails
/// after `limit`.
fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reads one HTTP response: its status and body (by Content-Length).
fn read_response(r: &mut impl BufRead) -> std::io::Result<(u16, String)> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line: {line:?}")))?;
    let mut len = 0;
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        if h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Whether the peer closed `s` (EOF or reset) within `limit`.
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

fn watch_request(version: u64, extra: &str) -> String {
    format!("GET /_rpc_/registry?watch={version}&timeout=60s{extra} HTTP/1.1\r\nHost: r\r\n\r\n")
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_1mib_head_gets_431_and_a_close() {
    let reg = registry(Registry::builder());
    let mut s = TcpStream::connect(reg.addr().target()).unwrap();
    let mut head = b"GET /_rpc_/registry HTTP/1.1\r\nX-Big: ".to_vec();
    head.resize(head.len() + (1 << 20), b'a');
    head.extend_from_slice(b"\r\n\r\n");
    let writer = {
        let mut s = s.try_clone().unwrap();
        // The registry stops reading at 16 KiB: this write may fail.
        std::thread::spawn(move || s.write_all(&head).is_ok())
    };
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "answer to a 1 MiB header: {answer:?}"
    );
    assert!(closed_within(&mut s, Duration::from_secs(10)));
    let _ = writer.join();
}

#[test]
fn a_huge_head_does_not_grow_the_registry() {
    // A long read timeout: only the head limit may stop this head.
    let reg = registry(Registry::builder().read_timeout(Duration::from_secs(120)));
    let before = rss_kib();
    let mut s = TcpStream::connect(reg.addr().target()).unwrap();
    s.write_all(b"GET /_rpc_/registry HTTP/1.1\r\nX-Big: ")
        .unwrap();
    let chunk = vec![b'a'; 1 << 20];
    // 32 MiB with no end of line, the connection kept open: unbounded,
    // the registry held all of it in one header line.
    let mut sent = 0;
    for _ in 0..32 {
        if s.write_all(&chunk).is_err() {
            break;
        }
        sent += 1;
    }
    let grown = rss_kib().saturating_sub(before);
    assert!(
        grown < 16 * 1024,
        "RSS grew by {grown} KiB after {sent} MiB of one header"
    );
    assert!(sent < 32, "the registry read all 32 MiB of one header");
}

#[test]
fn slow_loris_heads_are_closed_at_the_read_timeout() {
    assert!(Registry::DEFAULT_READ_TIMEOUT <= Duration::from_secs(10));
    let timeout = Duration::from_millis(500);
    let reg = registry(Registry::builder().read_timeout(timeout));
    let started = Instant::now();
    // Silent, half a request line, and one trickling a byte every 100 ms.
    let mut silent: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(reg.addr().target()).unwrap())
        .collect();
    let mut partial: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = TcpStream::connect(reg.addr().target()).unwrap();
            s.write_all(b"GET /_rpc_/registry HT").unwrap();
            s
        })
        .collect();
    let trickler = {
        let mut s = TcpStream::connect(reg.addr().target()).unwrap();
        std::thread::spawn(move || {
            s.write_all(b"GET /_rpc_/registry HTTP/1.1\r\n").unwrap();
            for _ in 0..200 {
                if s.write_all(b"X").is_err() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            false
        })
    };
    for s in silent.iter_mut().chain(partial.iter_mut()) {
        assert!(
            closed_within(s, Duration::from_secs(10)),
            "a slow-loris connection still open after {:?}",
            started.elapsed()
        );
    }
    assert!(trickler.join().unwrap(), "the trickler was never closed");
    // The margin is for a loaded machine; unbounded, none closes at all.
    assert!(started.elapsed() < Duration::from_secs(10));
    // A connection that does send a request in time is answered.
    let url = reg.url().to_string();
    assert_eq!(http().get(&url).call().unwrap().status(), 200);
}

#[test]
fn connections_past_the_cap_get_503() {
    let reg = registry(Registry::builder().max_connections(4));
    let get = b"GET /_rpc_/registry HTTP/1.1\r\nHost: r\r\n\r\n";
    // Four kept-alive connections, each answered once: all are served.
    let mut held: Vec<BufReader<TcpStream>> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(reg.addr().target()).unwrap();
            s.write_all(get).unwrap();
            let mut r = BufReader::new(s);
            assert_eq!(read_response(&mut r).unwrap().0, 200);
            r
        })
        .collect();
    let mut fifth = TcpStream::connect(reg.addr().target()).unwrap();
    let _ = fifth.write_all(get);
    fifth
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut r = BufReader::new(fifth);
    assert_eq!(read_response(&mut r).unwrap().0, 503, "past the cap");
    assert!(closed_within(r.get_mut(), Duration::from_secs(10)));
    // Closing one makes room again.
    drop(held.pop());
    wait_until("a connection served again", Duration::from_secs(10), || {
        let mut s = TcpStream::connect(reg.addr().target()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(get).unwrap();
        read_response(&mut BufReader::new(s)).is_ok_and(|r| r.0 == 200)
    });
}

/// A long poll from `127.0.0.X`, sent on a raw connection.
fn watch_from(reg: &Registry, local: [u8; 4], version: u64) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let from: SocketAddr = (local, 0).into();
    sock.bind(&from.into()).unwrap();
    sock.connect(&reg.addr().target().parse::<SocketAddr>().unwrap().into())
        .unwrap();
    let mut s: TcpStream = sock.into();
    s.write_all(watch_request(version, "").as_bytes()).unwrap();
    s
}

#[test]
fn long_polls_are_capped_per_client_address() {
    let reg = registry(Registry::builder().max_long_polls_per_client(2));
    let url = reg.url().to_string();
    let v = registry_version(&url);
    let _a = watch_from(&reg, [127, 0, 0, 1], v);
    let _b = watch_from(&reg, [127, 0, 0, 1], v);
    wait_until("two polls parked", Duration::from_secs(10), || {
        reg.parked_polls() == 2
    });
    let third = watch_from(&reg, [127, 0, 0, 1], v);
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut third = BufReader::new(third);
    let (status, text) = read_response(&mut third).unwrap();
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("127.0.0.1"), "{text}");
    // Another address still has its own share.
    let _c = watch_from(&reg, [127, 0, 0, 2], v);
    wait_until("the other address parked", Duration::from_secs(10), || {
        reg.parked_polls() == 3
    });
}

#[test]
fn instances_and_services_are_capped_and_freed_names_forgotten() {
    let reg = registry(Registry::builder().max_instances(2).max_services(2));
    let url = reg.url().to_string();
    let svc = |names: &[&str]| serde_json::json!({ "services": names });
    assert_eq!(post(&url, "tcp@127.0.0.1:1", svc(&["A"])).0, 200);
    assert_eq!(post(&url, "tcp@127.0.0.1:2", svc(&["B"])).0, 200);
    let (status, text) = post(&url, "tcp@127.0.0.1:3", svc(&["A"]));
    assert_eq!(status, 507, "{text}");
    assert!(text.contains("2 instances"), "{text}");
    // A renewal is never refused.
    assert_eq!(post(&url, "tcp@127.0.0.1:1", svc(&["A"])).0, 200);
    let (status, text) = post(&url, "tcp@127.0.0.1:1", svc(&["A", "C"]));
    assert_eq!(status, 507, "{text}");
    assert!(text.contains("2 service names"), "{text}");
    // B's last instance leaves: B is forgotten, so C fits.
    assert_eq!(delete(&url, "tcp@127.0.0.1:2"), 200);
    assert_eq!(post(&url, "tcp@127.0.0.1:2", svc(&["C"])).0, 200);
    assert_eq!(reg.instances().len(), 2);
}

#[test]
fn a_watcher_that_does_not_read_delays_no_purge_and_no_other_watcher() {
    let ttl = Duration::from_secs(6);
    let reg = registry(
        Registry::builder()
            .ttl(ttl)
            .write_timeout(Duration::from_secs(120)),
    );
    let url = reg.url().to_string();
    // A listing of about 10 MiB: more than loopback's socket buffers hold.
    let pad = "x".repeat(60_000);
    for i in 0..170 {
        let body = serde_json::json!({ "metadata": { "pad": pad } });
        assert_eq!(
            post(&url, &format!("tcp@127.0.0.1:{}", 10_000 + i), body).0,
            200
        );
    }
    // Renewed (a small POST keeps the details): all expire a TTL from now,
    // however long registering took on a loaded machine.
    for i in 0..170 {
        let addr = format!("tcp@127.0.0.1:{}", 10_000 + i);
        assert_eq!(post(&url, &addr, serde_json::json!({})).0, 200);
    }
    let registered = Instant::now();
    let v = registry_version(&url);
    // The slow watcher: a 4 KiB receive buffer it never reads.
    let slow = {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        sock.connect(&reg.addr().target().parse::<SocketAddr>().unwrap().into())
            .unwrap();
        let mut s: TcpStream = sock.into();
        s.write_all(watch_request(v, "&format=json").as_bytes())
            .unwrap();
        s
    };
    wait_until("the slow watcher parked", Duration::from_secs(10), || {
        reg.parked_polls() == 1
    });
    let mut fast = BufReader::new(watch_from(&reg, [127, 0, 0, 1], v));
    wait_until("the fast watcher parked", Duration::from_secs(10), || {
        reg.parked_polls() == 2
    });
    // A change: both are due; the slow one's answer blocks its writer.
    let changed = Instant::now();
    assert_eq!(post(&url, "tcp@127.0.0.1:9", serde_json::json!({})).0, 200);
    fast.get_mut()
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let (status, _) = read_response(&mut fast).expect("the other watcher's answer");
    assert_eq!(status, 200);
    let answered = changed.elapsed();
    assert!(
        answered < Duration::from_secs(5),
        "answered after {answered:?}"
    );
    // The 170 entries expire at the TTL: the reaper purges them, each
    // purge a change that long polls see, at most a few seconds late on a
    // loaded machine (never, while the reaper was stuck writing).
    let mut v = registry_version(&url);
    loop {
        let poll = format!("{url}?watch={v}&timeout=60s&format=json");
        let mut resp = http().get(&poll).call().expect("a purge's answer");
        assert_eq!(resp.status(), 200);
        let body = resp.body_mut().with_config().limit(64 << 20);
        let listing: serde_json::Value =
            serde_json::from_str(&body.read_to_string().unwrap()).unwrap();
        v = listing["version"].as_u64().unwrap();
        if listing["instances"].as_array().unwrap().len() <= 1 {
            break;
        }
        assert!(
            registered.elapsed() < ttl + Duration::from_secs(5),
            "expired entries still listed {:?} after registering, TTL {ttl:?}",
            registered.elapsed()
        );
    }
    // Closing the slow socket fails the stuck write: shutdown is quick.
    drop(slow);
}

#[test]
fn a_thousand_long_polls_are_all_answered_repeatedly() {
    let n = 1000;
    let reg = registry(
        Registry::builder()
            .max_long_polls_per_client(n)
            .read_timeout(Duration::from_secs(60)),
    );
    let url = reg.url().to_string();
    for round in 0..3 {
        let v = registry_version(&url);
        let started = Instant::now();
        let mut polls: Vec<BufReader<TcpStream>> = (0..n)
            .map(|_| {
                let mut s = TcpStream::connect(reg.addr().target()).unwrap();
                s.write_all(watch_request(v, "").as_bytes()).unwrap();
                BufReader::new(s)
            })
            .collect();
        wait_until(
            &format!("round {round}: {n} polls parked"),
            Duration::from_secs(30),
            || reg.parked_polls() == n,
        );
        let addr = format!("tcp@127.0.0.1:{}", 20_000 + round);
        assert_eq!(post(&url, &addr, serde_json::json!({})).0, 200);
        for (i, p) in polls.iter_mut().enumerate() {
            p.get_mut()
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            let (status, _) = read_response(p)
                .unwrap_or_else(|e| panic!("round {round}: poll {i} not answered: {e}"));
            assert_eq!(status, 200);
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "round {round} took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn a_body_declared_too_large_is_refused_before_it_is_sent() {
    let reg = registry(Registry::builder().max_body(1024));
    let mut s = TcpStream::connect(reg.addr().target()).unwrap();
    s.write_all(
        b"POST /_rpc_/registry HTTP/1.1\r\nHost: r\r\nX-rpc-Server: tcp@127.0.0.1:1\r\n\
          Content-Length: 10485760\r\n\r\n",
    )
    .unwrap();
    // Unbounded, the registry waited for 10 MiB that never come.
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (status, text) = read_response(&mut BufReader::new(s)).expect("an answer");
    assert_eq!(status, 413, "{text}");
    assert!(reg.instances().is_empty());
}

#[test]
fn a_long_poll_outlives_the_read_timeout() {
    // The read timeout bounds reading a request, not waiting for a change.
    let reg = registry(Registry::builder().read_timeout(Duration::from_millis(200)));
    let url = reg.url().to_string();
    let v = registry_version(&url);
    let mut poll = BufReader::new(watch_from(&reg, [127, 0, 0, 1], v));
    wait_until("the poll parked", Duration::from_secs(10), || {
        reg.parked_polls() == 1
    });
    // Past the read timeout, then a change.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(post(&url, "tcp@127.0.0.1:1", serde_json::json!({})).0, 200);
    poll.get_mut()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(read_response(&mut poll).expect("the answer").0, 200);
}
