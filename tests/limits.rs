//! The server's bounds: a peer that never reads is closed after the write
//! timeout, connections past `max_connections` are refused, idle
//! connections are closed, the whole handshake has one deadline, and
//! `max_concurrent_calls` counts over every listener of a server.
//! (Memory under a non-reading peer: tests/backlog.rs.)

mod common;
mod raw;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::Args;
use geerpc::{Client, Server, Service};

/// Slack for a loaded 2-core machine shared with compilers: a bound that
/// acts on the monitor's tick (20 ms) is held to its value plus this.
const SLACK: Duration = Duration::from_secs(3);

#[test]
fn a_peer_that_never_reads_is_closed_after_the_write_timeout() {
    common::init_log();
    let write_timeout = Duration::from_secs(1);
    let running = common::start_with(Server::builder().write_timeout(write_timeout).build());
    let began = Instant::now();
    let (mut s, sent, ended) = raw::attack(running.addr(), 400, Duration::from_secs(5));
    let stalled_at = Instant::now();
    let closed = match ended {
        // Closed while a write was still creeping on (the socket buffers
        // drain for a moment after the server stops reading).
        raw::Ended::Closed => Some(stalled_at),
        raw::Ended::Finished => panic!("the server kept reading: {sent} requests taken"),
        raw::Ended::Stalled => {
            // Not reading (that would let the server go on): the connection
            // must be reset under the blocked writes, each 200 ms at most.
            s.set_write_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let by = stalled_at + write_timeout + SLACK;
            loop {
                match s.write(b" ") {
                    Ok(_) => {}
                    Err(e) if raw::is_closed(&e) => break Some(Instant::now()),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(e) => panic!("write failed: {e}"),
                }
                if Instant::now() >= by {
                    break None;
                }
            }
        }
    };
    let closed = closed.unwrap_or_else(|| {
        panic!("a peer that read nothing for {write_timeout:?} + {SLACK:?} was not closed")
    });
    eprintln!(
        "{sent} requests sent, attack {ended:?} after {:?}; closed {:?} after that",
        stalled_at - began,
        closed - stalled_at
    );
    // Other connections were never in question: a fresh one works.
    let c = Client::dial(running.addr()).unwrap();
    let sum: i64 = c.call("Arith.Sum", &Args { num1: 2, num2: 3 }).unwrap();
    assert_eq!(sum, 5);
}

/// A dialled client that answered one call.
fn working_client(addr: &str) -> Client {
    let c = Client::dial(addr).unwrap();
    let sum: i64 = c.call("Arith.Sum", &Args { num1: 1, num2: 1 }).unwrap();
    assert_eq!(sum, 2);
    c
}

#[test]
fn connections_past_the_cap_are_refused_until_one_closes() {
    common::init_log();
    let running = common::start_with(Server::builder().max_connections(2).build());
    let addr = running.addr().to_string();
    let first = working_client(&addr);
    let _second = working_client(&addr);

    // The third is accepted by the kernel, then closed by the server at once.
    let mut third = raw::handshaked(running.addr());
    let t0 = Instant::now();
    let closed = raw::read_until_closed(&mut third, t0 + SLACK);
    assert!(closed.is_some(), "the connection past the cap was served");

    // Once one closes, new connections are served again (the slot comes
    // back when the server has let go of the connection: retry briefly).
    drop(first);
    let by = Instant::now() + SLACK;
    loop {
        let c = Client::dial(&addr).unwrap();
        match c.call::<_, i64>("Arith.Sum", &Args { num1: 1, num2: 1 }) {
            Ok(2) => break,
            Ok(other) => panic!("1 + 1 = {other}"),
            Err(e) if Instant::now() < by => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("no connection served after one closed: {e}"),
        }
    }
}

#[test]
fn an_idle_connection_is_closed_and_a_busy_one_is_not() {
    common::init_log();
    let idle = Duration::from_millis(300);
    let running = common::start_with(Server::builder().idle_timeout(Some(idle)).build());

    // A call longer than the idle timeout keeps its connection: its handler
    // is handed off (another thread reads, idle) and still counts.
    let busy = Client::dial(running.addr()).unwrap();
    let slept: i64 = busy
        .call(
            "Arith.SleepMs",
            &Args {
                num1: 1000,
                num2: 0,
            },
        )
        .unwrap();
    assert_eq!(slept, 1000);

    // One call answered, then nothing: closed after the idle timeout.
    let mut s = raw::handshaked(running.addr());
    s.write_all(
        b"{\"ServiceMethod\":\"Arith.Sum\",\"Seq\":1,\"Error\":\"\"}\n{\"Num1\":1,\"Num2\":2}\n",
    )
    .unwrap();
    let t0 = Instant::now();
    let closed = raw::read_until_closed(&mut s, t0 + idle + SLACK)
        .unwrap_or_else(|| panic!("idle for {idle:?} + {SLACK:?} and not closed"));
    let after = closed - t0;
    assert!(
        after >= idle,
        "closed after {after:?}, before the idle timeout"
    );
}

#[test]
fn default_connections_are_not_closed_when_idle() {
    common::init_log();
    let running = common::start_server();
    let mut s = raw::handshaked(running.addr());
    let closed = raw::read_until_closed(&mut s, Instant::now() + Duration::from_millis(500));
    assert!(closed.is_none(), "closed while idle with no idle timeout");
}

/// Sends `bytes` one at a time, `every` apart, until the server closes the
/// connection or all are sent; the time it closed, if it did.
fn drip(s: &mut TcpStream, bytes: &[u8], every: Duration) -> Option<Instant> {
    for b in bytes {
        if let Err(e) = s.write_all(std::slice::from_ref(b)) {
            assert!(raw::is_closed(&e), "drip write failed: {e}");
            return Some(Instant::now());
        }
        // Paces the drip, and notices a close meanwhile.
        if let Some(t) = raw::read_until_closed(s, Instant::now() + every) {
            return Some(t);
        }
    }
    None
}

#[test]
fn a_dripped_handshake_is_closed_at_the_one_deadline() {
    common::init_log();
    let deadline = Duration::from_secs(1);
    let running = common::start_with(Server::builder().handshake_timeout(deadline).build());
    // About 100 bytes at 10 a second: 10 s to finish, every read well
    // within the timeout.
    let t0 = Instant::now();
    let mut s = TcpStream::connect(running.addr().target()).unwrap();
    let option = format!("{}\n", raw::JSON_OPTION);
    let closed = drip(&mut s, option.as_bytes(), Duration::from_millis(100))
        .expect("a handshake dripped past the deadline was served");
    let after = closed - t0;
    assert!(
        after >= deadline && after < deadline + SLACK,
        "closed after {after:?}, deadline {deadline:?}"
    );
}

#[test]
fn the_deadline_covers_the_http_head_and_the_option_together() {
    common::init_log();
    let deadline = Duration::from_secs(1);
    let running = common::start_with(Server::builder().handshake_timeout(deadline).build());
    let t0 = Instant::now();
    let mut s = TcpStream::connect(running.addr().target()).unwrap();
    // The head takes 0.6 s and the Option would take 10 s more: neither
    // alone has a pause as long as the timeout.
    let head = b"CONNECT /_geerpc_ HTTP/1.0\n\n";
    let every = Duration::from_millis(600) / head.len() as u32;
    for b in head {
        s.write_all(std::slice::from_ref(b)).unwrap();
        std::thread::sleep(every);
    }
    let mut status = [0u8; 12];
    s.read_exact(&mut status).unwrap();
    assert_eq!(&status, b"HTTP/1.0 200");
    let option = format!("{}\n", raw::JSON_OPTION);
    let closed = drip(&mut s, option.as_bytes(), Duration::from_millis(100))
        .expect("a handshake dripped past the deadline was served");
    let after = closed - t0;
    assert!(
        after >= deadline && after < deadline + SLACK,
        "closed after {after:?}, deadline {deadline:?}"
    );
}

#[test]
fn max_concurrent_calls_counts_over_every_listener_of_a_server() {
    common::init_log();
    let (started_tx, started) = crossbeam_channel::unbounded::<()>();
    let (release_tx, release) = crossbeam_channel::unbounded::<()>();
    let server = Server::builder().max_concurrent_calls(2).build();
    server
        .register(Service::new("Hold").method("Hold", move |n: i64| {
            let _ = started_tx.send(());
            let _ = release.recv();
            Ok::<_, String>(n)
        }))
        .unwrap();
    let a = server.listen("tcp@127.0.0.1:0").unwrap();
    let b = server.listen("tcp@127.0.0.1:0").unwrap();
    let wait = Duration::from_secs(10);

    let call_all = |addr: String, n: i64| {
        std::thread::spawn(move || {
            let c = Client::dial(&addr).unwrap();
            let calls: Vec<geerpc::client::Call<i64>> =
                (0..n).map(|i| c.go("Hold.Hold", &i).unwrap()).collect();
            calls
                .into_iter()
                .map(|call| call.wait())
                .collect::<Vec<_>>()
        })
    };
    // On A: two pipelined calls; the second gets a thread of its own once
    // the first is slow. Two run: the cap.
    let on_a = call_all(a.addr().to_string(), 2);
    for _ in 0..2 {
        started.recv_timeout(wait).expect("A's calls start");
    }
    // On B: its reader runs one inline (every connection gets one), but
    // the server is at its cap, so the other waits.
    let on_b = call_all(b.addr().to_string(), 2);
    started.recv_timeout(wait).expect("B's first call starts");
    assert!(
        started.recv_timeout(Duration::from_millis(500)).is_err(),
        "a 4th call started with max_concurrent_calls 2: counted per listener"
    );
    drop(release_tx);
    for r in on_a.join().unwrap().into_iter().chain(on_b.join().unwrap()) {
        r.expect("every held call is answered");
    }
}
