//! The server's own tests, over loopback HTTP against a registry on a
//! free port, that need its insides (the table's encode count): a change
//! wakes only the watchers of the lists it moves, and their answer is
//! encoded once for all of them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::Registry;

/// Sends `line` (method and target), `headers` and `body` on `s` as one
/// HTTP/1.1 request.
fn send(s: &mut TcpStream, line: &str, headers: &str, body: &str) {
    let req = format!(
        "{line} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
}

/// Reads one answer: its status and body.
fn read_answer(s: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "the head ends");
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let status = head[9..12].parse().unwrap();
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    (status, String::from_utf8(body).unwrap())
}

fn post(to: SocketAddr, addr: &str, service: &str) {
    let mut s = TcpStream::connect(to).unwrap();
    let body = format!("{{\"services\":[\"{service}\"]}}");
    send(
        &mut s,
        "POST /_rpc_/registry",
        &format!("X-rpc-Server: {addr}\r\n"),
        &body,
    );
    assert_eq!(read_answer(&mut s).0, 200);
}

/// Opens `n` long polls on `service`'s list at `version`.
fn watch(to: SocketAddr, service: &str, version: u64, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(to).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let q = format!("service={service}&watch={version}&timeout=60s&format=json");
            send(&mut s, &format!("GET /_rpc_/registry?{q}"), "", "");
            s
        })
        .collect()
}

fn wait_parked(reg: &Registry, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while reg.parked_polls() != n {
        assert!(
            Instant::now() < deadline,
            "{} parked, not {n}",
            reg.parked_polls()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_change_wakes_only_its_lists_watchers_with_one_encode() {
    let reg = Registry::builder().addr("127.0.0.1:0").start().unwrap();
    let to = reg.shared.addr;
    post(to, "tcp@127.0.0.1:1", "A");
    post(to, "tcp@127.0.0.1:2", "B");
    let version = |s| reg.shared.state.lock().table.version(Some(s));
    let (va, vb) = (version("A"), version("B"));
    let mut a = watch(to, "A", va, 5);
    let mut b = watch(to, "B", vb, 5);
    wait_parked(&reg, 10);
    let encodes = reg.shared.state.lock().table.encodes();
    post(to, "tcp@127.0.0.1:3", "A");
    for s in &mut a {
        let (status, body) = read_answer(s);
        assert_eq!(status, 200);
        let listing: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_ne!(listing["version"].as_u64(), Some(va));
        assert_eq!(listing["instances"].as_array().unwrap().len(), 2, "{body}");
    }
    // A's answers are written once taken, and B's were not taken.
    assert_eq!(reg.parked_polls(), 5, "B's watchers still wait");
    assert_eq!(
        reg.shared.state.lock().table.encodes(),
        encodes + 1,
        "one encode for A's five watchers"
    );
    post(to, "tcp@127.0.0.1:4", "B");
    for s in &mut b {
        let (status, body) = read_answer(s);
        assert_eq!(status, 200);
        assert!(body.contains("tcp@127.0.0.1:4"), "{body}");
    }
    wait_parked(&reg, 0);
}

/// A poll parked after a longer one wakes the reaper, as its deadline
/// comes first; one parked after a shorter one need not (not observable
/// here), but is still answered at its own deadline.
#[test]
fn a_poll_with_an_earlier_deadline_is_answered_at_it() {
    let reg = Registry::builder().addr("127.0.0.1:0").start().unwrap();
    let to = reg.shared.addr;
    post(to, "tcp@127.0.0.1:1", "A");
    let va = reg.shared.state.lock().table.version(Some("A"));
    let _long = watch(to, "A", va, 1);
    wait_parked(&reg, 1);
    let mut s = TcpStream::connect(to).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let asked = Instant::now();
    let q = format!("service=A&watch={va}&timeout=300ms&format=json");
    send(&mut s, &format!("GET /_rpc_/registry?{q}"), "", "");
    let (status, body) = read_answer(&mut s);
    assert_eq!(status, 200);
    let listing: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        listing["version"].as_u64(),
        Some(va),
        "timed out, unchanged"
    );
    let waited = asked.elapsed();
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(
        waited < Duration::from_secs(15),
        "{waited:?}: at its deadline, not the 60 s one"
    );
    assert_eq!(reg.parked_polls(), 1, "the long one still waits");
}
