//! The patched tiny_http's connection-thread handler
//! (`Server::from_listener_with_handler`, vendor/tiny_http/PATCHES.md item
//! 8), which the registry uses by default (`RegistryBuilder::workers(0)`):
//! a keep-alive connection's requests are answered in order on that
//! connection's own thread; a request the handler keeps (a long poll) is
//! answered later from another thread and holds nothing but its
//! connection; a handler that blocks or panics holds or harms no other
//! connection.
#![cfg(feature = "registry")]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::ThreadId;
use std::time::Duration;

use common::*;
use geerpc::Registry;

/// Generous for a loaded 2-core machine: every answer here takes
/// milliseconds; a failure shows as this timeout.
const WAIT: Duration = Duration::from_secs(10);

/// Starts a server on a free port whose handler is `h`.
fn serve(
    h: impl Fn(tiny_http::Request) + Send + Sync + 'static,
) -> (tiny_http::Server, std::net::SocketAddr) {
    serve_within(usize::MAX, h)
}

/// The same with a request head budget of `max_head` bytes.
fn serve_within(
    max_head: usize,
    h: impl Fn(tiny_http::Request) + Send + Sync + 'static,
) -> (tiny_http::Server, std::net::SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let limits = tiny_http::Limits {
        read_timeout: Some(Duration::from_secs(30)),
        max_head,
        ..Default::default()
    };
    let server = tiny_http::Server::from_listener_with_handler(l, None, limits, Arc::new(h))
        .expect("server starts");
    (server, addr)
}

fn connect(addr: std::net::SocketAddr) -> (TcpStream, BufReader<TcpStream>) {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let r = BufReader::new(s.try_clone().unwrap());
    (s, r)
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")
}

/// One response's status and body (by Content-Length).
fn read_answer(r: &mut impl BufRead) -> (u16, String) {
    let (status, _, body) = read_response(r);
    (status, body)
}

/// One response's status, head lines and body.
fn read_response(r: &mut impl BufRead) -> (u16, String, String) {
    let mut head = String::new();
    let mut line = String::new();
    r.read_line(&mut line).expect("a status line in time");
    let status = line.split(' ').nth(1).and_then(|s| s.parse().ok());
    let status = status.unwrap_or_else(|| panic!("no status line: {line:?}"));
    let mut len = 0;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        if h.trim().is_empty() {
            break;
        }
        head.push_str(&h);
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    (status, head, String::from_utf8(body).unwrap())
}

fn answer(rq: tiny_http::Request, body: &str) {
    rq.respond(tiny_http::Response::from_string(body)).unwrap();
}

#[test]
fn a_connections_requests_are_answered_in_order_on_its_own_thread() {
    let seen: Arc<Mutex<Vec<(String, ThreadId)>>> = Arc::default();
    let s = seen.clone();
    let (_server, addr) = serve(move |rq| {
        s.lock()
            .unwrap()
            .push((rq.url().to_string(), std::thread::current().id()));
        let url = rq.url().to_string();
        answer(rq, &url);
    });
    let (mut a, mut ra) = connect(addr);
    let (mut b, mut rb) = connect(addr);
    // Pipelined: all three written before any answer is read.
    a.write_all((get("/a1") + &get("/a2") + &get("/a3")).as_bytes())
        .unwrap();
    for want in ["/a1", "/a2", "/a3"] {
        assert_eq!(read_answer(&mut ra), (200, want.to_string()));
    }
    b.write_all(get("/b1").as_bytes()).unwrap();
    assert_eq!(read_answer(&mut rb), (200, "/b1".to_string()));
    let seen = seen.lock().unwrap().clone();
    let on = |p: &str| seen.iter().find(|(u, _)| u == p).unwrap().1;
    let test_thread = std::thread::current().id();
    assert_eq!(on("/a1"), on("/a2"), "{seen:?}");
    assert_eq!(on("/a1"), on("/a3"), "{seen:?}");
    assert_ne!(on("/a1"), on("/b1"), "each connection its own thread");
    assert_ne!(on("/a1"), test_thread);
}

#[test]
fn a_kept_request_holds_only_its_connection_and_its_successor_waits_for_it() {
    // The handler keeps `/park` (like a long poll) for this thread to
    // answer later, and answers everything else at once.
    let (tx, parked) = mpsc::channel::<tiny_http::Request>();
    let tx = Mutex::new(tx);
    let (_server, addr) = serve(move |rq| {
        if rq.url() == "/park" {
            tx.lock().unwrap().send(rq).unwrap();
        } else {
            let url = rq.url().to_string();
            answer(rq, &url);
        }
    });
    let (mut a, mut ra) = connect(addr);
    a.write_all((get("/park") + &get("/after")).as_bytes())
        .unwrap();
    let kept = parked
        .recv_timeout(WAIT)
        .expect("the long poll reaches the handler");
    // Another connection is served while the first one's request is kept.
    let (mut b, mut rb) = connect(addr);
    for i in 0..3 {
        let path = format!("/other{i}");
        b.write_all(get(&path).as_bytes()).unwrap();
        assert_eq!(read_answer(&mut rb), (200, path));
    }
    // The pipelined request is not answered before the kept one.
    a.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut byte = [0u8; 1];
    let early = ra.get_mut().read(&mut byte);
    assert!(
        early.is_err(),
        "nothing answered before the kept request: {early:?}"
    );
    a.set_read_timeout(Some(WAIT)).unwrap();
    // Answered from this thread, then its successor, in order.
    answer(kept, "late");
    assert_eq!(read_answer(&mut ra), (200, "late".to_string()));
    assert_eq!(read_answer(&mut ra), (200, "/after".to_string()));
}

#[test]
fn a_blocked_handler_holds_no_other_connection() {
    // `/block` waits in the handler until this thread lets it go.
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(Some(release_rx));
    let (entered_tx, entered) = mpsc::channel::<()>();
    let entered_tx = Mutex::new(entered_tx);
    let (_server, addr) = serve(move |rq| {
        if rq.url() == "/block" {
            let rx = release_rx.lock().unwrap().take().unwrap();
            entered_tx.lock().unwrap().send(()).unwrap();
            let _ = rx.recv_timeout(WAIT * 3);
        }
        let url = rq.url().to_string();
        answer(rq, &url);
    });
    let (mut a, mut ra) = connect(addr);
    a.write_all(get("/block").as_bytes()).unwrap();
    entered.recv_timeout(WAIT).expect("the handler is entered");
    for i in 0..3 {
        let (mut b, mut rb) = connect(addr);
        let path = format!("/free{i}");
        b.write_all(get(&path).as_bytes()).unwrap();
        assert_eq!(read_answer(&mut rb), (200, path), "while /block is held");
    }
    release_tx.send(()).unwrap();
    assert_eq!(read_answer(&mut ra), (200, "/block".to_string()));
}

#[test]
fn a_panicking_handler_answers_500_and_closes_only_its_connection() {
    let (_server, addr) = serve(move |rq| {
        if rq.url() == "/panic" {
            panic!("handler panic on purpose (test)");
        }
        let url = rq.url().to_string();
        answer(rq, &url);
    });
    let (mut a, mut ra) = connect(addr);
    a.write_all((get("/panic") + &get("/next")).as_bytes())
        .unwrap();
    assert_eq!(read_answer(&mut ra).0, 500);
    let mut rest = Vec::new();
    ra.read_to_end(&mut rest).expect("closed, not timed out");
    assert!(rest.is_empty(), "nothing after the 500: {rest:?}");
    let (mut b, mut rb) = connect(addr);
    b.write_all(get("/ok").as_bytes()).unwrap();
    assert_eq!(read_answer(&mut rb), (200, "/ok".to_string()));
}

/// The registry by default answers on the connection threads: it starts
/// no worker (`geerpc-reg-http`), still parks a long poll, and answers the
/// change that ends it (the other registry tests run it this way too).
#[test]
fn the_registry_by_default_starts_no_worker_and_parks_long_polls() {
    assert_eq!(Registry::DEFAULT_WORKERS, 0);
    let reg = Registry::builder().addr("127.0.0.1:0").start().unwrap();
    let addr: std::net::SocketAddr = reg.addr().target().parse().unwrap();
    let version = registry_version(reg.url());
    let path = "/_rpc_/registry";
    let (mut w, mut rw) = connect(addr);
    w.write_all(get(&format!("{path}?watch={version}&timeout=30s")).as_bytes())
        .unwrap();
    // Nothing signals a parked poll: look again, bounded.
    let give_up = std::time::Instant::now() + WAIT;
    while reg.parked_polls() == 0 && std::time::Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(reg.parked_polls(), 1, "the long poll parks");
    let (mut a, mut ra) = connect(addr);
    let post = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nX-Geerpc-Server: tcp@127.0.0.1:4242\r\n\
         Content-Length: 0\r\n\r\n"
    );
    a.write_all(post.as_bytes()).unwrap();
    assert_eq!(read_answer(&mut ra).0, 200, "registered");
    let (status, head, _) = read_response(&mut rw);
    assert_eq!(status, 200);
    assert!(
        head.contains("127.0.0.1:4242"),
        "the watcher sees it: {head:?}"
    );
    assert!(threads_named("geerpc-reg-http").is_empty());
}

/// Heads are read a buffer at a time (PATCHES.md item 9), but the head
/// budget still counts every byte: a head of exactly `max_head` bytes
/// (CRLFs and the blank line included) is read, one byte more is `431`,
/// and a bare LF still ends a line.
#[test]
fn the_head_budget_is_exact_when_lines_are_read_a_buffer_at_a_time() {
    let head = "GET /exact HTTP/1.1\r\nHost: x\r\nX-Pad: 0123456789\r\n\r\n";
    for (budget, want) in [(head.len(), 200), (head.len() - 1, 431)] {
        let (_server, addr) = serve_within(budget, |rq| answer(rq, "ok"));
        let (mut a, mut ra) = connect(addr);
        a.write_all(head.as_bytes()).unwrap();
        assert_eq!(read_answer(&mut ra).0, want, "budget {budget}");
    }
    let (_server, addr) = serve(|rq| {
        let url = rq.url().to_string();
        answer(rq, &url)
    });
    let (mut a, mut ra) = connect(addr);
    a.write_all(b"GET /lf HTTP/1.1\nHost: x\n\n").unwrap();
    assert_eq!(read_answer(&mut ra), (200, "/lf".to_string()));
}
