//! Requests pipelined behind a parked one (issue 16): a peer that sends a
//! long poll and then, on the same connection, another request must not
//! make a registry worker wait for the long poll. The patched tiny_http
//! reads a connection's next request only once the previous one is
//! answered (vendor/tiny_http/PATCHES.md, item 5), so the pipelined
//! request waits on that connection's own thread, and is still answered,
//! in order, once the long poll is.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use geerpc::Registry;

/// Registry workers in these tests; more pipelining connections than this
/// would have stopped every worker before the fix.
const WORKERS: usize = 2;
const PIPELINING: usize = 4;

/// How long a fresh request may take while the pipelining peers wait. It
/// takes milliseconds; the margin is for a loaded 2-core machine. Before
/// the fix it waited for the long polls (60 s).
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

fn http() -> ureq::Agent {
    registry_agent(Duration::from_secs(15))
}

/// One HTTP response: status, headers (one `name: value` a line, names
/// lower-cased) and body (by Content-Length).
fn read_response(r: &mut impl BufRead) -> std::io::Result<(u16, String, String)> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line: {line:?}")))?;
    let (mut headers, mut len) = (String::new(), 0);
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        if h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let k = k.to_ascii_lowercase();
            if k == "content-length" {
                len = v.trim().parse().unwrap();
            }
            headers.push_str(&format!("{k}: {}\n", v.trim()));
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok((status, headers, String::from_utf8_lossy(&body).into_owned()))
}

/// The long poll at `version` (JSON, 60 s), then the plain `GET`.
fn poll_then_get(version: u64) -> (String, String) {
    let path = Registry::DEFAULT_PATH;
    (
        format!("GET {path}?watch={version}&timeout=60s&format=json HTTP/1.1\r\nHost: r\r\n\r\n"),
        format!("GET {path} HTTP/1.1\r\nHost: r\r\n\r\n"),
    )
}

/// A connection that sends, in one write, a long poll at `version` and
/// then a plain `GET`.
fn pipeline(reg: &Registry, version: u64) -> BufReader<TcpStream> {
    let (poll, get) = poll_then_get(version);
    let mut s = TcpStream::connect(reg.addr().target()).unwrap();
    s.write_all(format!("{poll}{get}").as_bytes()).unwrap();
    BufReader::new(s)
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

/// Each connection's two answers, in order: the long poll's (JSON, with
/// `addr`), then the plain listing's (headers, empty body).
fn assert_both_answers(conns: Vec<BufReader<TcpStream>>, addr: &str) {
    for (i, mut c) in conns.into_iter().enumerate() {
        c.get_mut()
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let (status, _, body) = read_response(&mut c).expect("the long poll's answer");
        assert_eq!(status, 200, "connection {i}: {body}");
        assert!(
            body.starts_with('{') && body.contains(addr),
            "connection {i}: {body}"
        );
        let (status, headers, body) = read_response(&mut c).expect("the pipelined answer");
        assert_eq!(status, 200, "connection {i}: {headers}{body}");
        assert!(
            body.is_empty(),
            "connection {i}: the second is the plain GET: {body}"
        );
        assert!(
            headers.contains(&format!("x-rpc-servers: {addr}")),
            "connection {i}: {headers}"
        );
    }
}

#[test]
fn requests_pipelined_behind_long_polls_hold_no_worker() {
    init_log();
    let reg = Registry::builder()
        .addr("127.0.0.1:0")
        .workers(WORKERS)
        .start()
        .expect("start registry");
    let url = reg.url().to_string();
    let v = registry_version(&url);
    let conns: Vec<_> = (0..PIPELINING).map(|_| pipeline(&reg, v)).collect();
    wait_until("the long polls parked", Duration::from_secs(10), || {
        reg.parked_polls() == PIPELINING
    });

    // A fresh GET and a POST are answered while every long poll waits.
    let started = Instant::now();
    let got = http().get(&url).call();
    let waited = started.elapsed();
    eprintln!("fresh GET answered in {waited:?}");
    assert_eq!(got.expect("the fresh GET's answer").status().as_u16(), 200);
    assert!(waited < ANSWER_WITHIN, "the fresh GET waited {waited:?}");
    let addr = "tcp@127.0.0.1:7001";
    let started = Instant::now();
    let posted = http()
        .post(&url)
        .header("X-rpc-Server", addr)
        .send(&b""[..])
        .expect("the POST's answer");
    let waited = started.elapsed();
    assert_eq!(posted.status().as_u16(), 200);
    assert!(waited < ANSWER_WITHIN, "the POST waited {waited:?}");

    // The POST ended the long polls: each connection gets both answers.
    assert_both_answers(conns, addr);
}

#[test]
fn the_next_head_deadline_starts_after_the_previous_answer() {
    // The parked poll outlasts the read timeout, and the next request is
    // sent only then: it is still read and answered, since its head's
    // deadline starts when the poll has been answered, not when the poll
    // was read. (Before, the connection was closed at the read timeout
    // while its poll was parked, and the next request got no answer.)
    init_log();
    let reg = Registry::builder()
        .addr("127.0.0.1:0")
        .read_timeout(Duration::from_millis(200))
        .start()
        .expect("start registry");
    let url = reg.url().to_string();
    let (poll, get) = poll_then_get(registry_version(&url));
    let mut s = TcpStream::connect(reg.addr().target()).unwrap();
    s.write_all(poll.as_bytes()).unwrap();
    wait_until("the long poll parked", Duration::from_secs(10), || {
        reg.parked_polls() == 1
    });
    // Past the read timeout (no signal to await: time passing is the point).
    std::thread::sleep(Duration::from_millis(600));
    s.write_all(get.as_bytes()).unwrap();
    let addr = "tcp@127.0.0.1:7002";
    let posted = http()
        .post(&url)
        .header("X-rpc-Server", addr)
        .send(&b""[..])
        .expect("the POST's answer");
    assert_eq!(posted.status().as_u16(), 200);
    assert_both_answers(vec![BufReader::new(s)], addr);
}

#[test]
fn requests_pipelined_behind_heartbeat_holds_hold_no_worker() {
    init_log();
    let reg = Registry::builder()
        .addr("127.0.0.1:0")
        .workers(WORKERS)
        .start()
        .expect("start registry");
    let url = reg.url().to_string();
    let resp = http().get(&url).call().unwrap();
    let epoch = resp.headers()["X-Geerpc-Registry-Epoch"]
        .to_str()
        .unwrap()
        .to_owned();
    let path = Registry::DEFAULT_PATH;
    let both = format!(
        "GET {path}?hold={epoch}&timeout=60s HTTP/1.1\r\nHost: r\r\n\r\n\
         GET {path} HTTP/1.1\r\nHost: r\r\n\r\n"
    );
    let conns: Vec<_> = (0..PIPELINING)
        .map(|_| {
            let mut s = TcpStream::connect(reg.addr().target()).unwrap();
            s.write_all(both.as_bytes()).unwrap();
            BufReader::new(s)
        })
        .collect();
    wait_until("the holds parked", Duration::from_secs(10), || {
        reg.parked_holds() == PIPELINING
    });
    let started = Instant::now();
    let got = http().get(&url).call();
    let waited = started.elapsed();
    assert_eq!(got.expect("the fresh GET's answer").status().as_u16(), 200);
    assert!(waited < ANSWER_WITHIN, "the fresh GET waited {waited:?}");

    // Stopping answers the holds: each connection gets its hold's answer
    // (200, empty) first, and stopping does not wait for the peers. The
    // GET behind it, read once the registry is gone, gets an error and
    // the connection is closed: its thread does not wait for ever on a
    // request that nobody will take.
    let started = Instant::now();
    reg.shutdown();
    let waited = started.elapsed();
    assert!(waited < ANSWER_WITHIN, "the shutdown took {waited:?}");
    for (i, mut c) in conns.into_iter().enumerate() {
        c.get_mut()
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let (status, headers, body) = read_response(&mut c).expect("the hold's answer");
        assert_eq!(status, 200, "connection {i}: {headers}{body}");
        assert!(headers.contains(&epoch), "connection {i}: {headers}");
        let (status, headers, body) = read_response(&mut c).expect("the GET's answer");
        assert!(status >= 500, "connection {i}: {status} {headers}{body}");
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).expect("closed");
        assert!(rest.is_empty(), "connection {i}: {rest:?}");
    }
}
