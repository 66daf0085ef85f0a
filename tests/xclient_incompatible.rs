//! An XClient and an instance it cannot talk to: a server that accepts
//! the connection, reads the Option line and closes it, as a Go GeeRPC
//! server does when it speaks only gob or checks the other magic number.
//! Such an instance is marked incompatible, so calls are not spent
//! re-probing it, and comes back once its back-off is over and it answers
//! (src/xclient/pool/refusal.rs).

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use geerpc::{FailMode, MultiServerDiscovery, SelectMode, XClient};

/// A server at `addr` that refuses the handshake (reads up to 512 bytes,
/// as Go's throw-away `json.Decoder` does, and closes) until `compatible`
/// is set; from then on it relays each connection to `backend`, a geerpc
/// server. It counts the connections it accepts and the reply bytes it
/// relays back.
struct Refuser {
    addr: String,
    accepted: Arc<AtomicUsize>,
    relayed: Arc<AtomicUsize>,
    compatible: Arc<AtomicBool>,
    /// The client side of each relayed connection, for `cut`.
    relays: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Refuser {
    fn start(backend: &str) -> Refuser {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("tcp@{}", listener.local_addr().unwrap());
        let backend = backend.trim_start_matches("tcp@").to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let relayed = Arc::new(AtomicUsize::new(0));
        let compatible = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let relays = Arc::new(Mutex::new(Vec::new()));
        let (a, r, c, s, l) = (
            accepted.clone(),
            relayed.clone(),
            compatible.clone(),
            stop.clone(),
            relays.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("refuser".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if s.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(mut conn) = conn else { continue };
                    a.fetch_add(1, Ordering::SeqCst);
                    if c.load(Ordering::SeqCst) {
                        l.lock().unwrap().push(conn.try_clone().unwrap());
                        relay(conn, &backend, r.clone());
                    } else {
                        // Go reads the Option through a decoder that
                        // buffers up to 512 bytes, then gives up on it.
                        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                        let mut buf = [0u8; 512];
                        let _ = conn.read(&mut buf);
                        let _ = conn.shutdown(Shutdown::Both);
                    }
                }
            })
            .unwrap();
        Refuser {
            addr,
            accepted,
            relayed,
            compatible,
            relays,
            stop,
            thread: Some(thread),
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Closes every connection relayed so far.
    fn cut(&self) {
        for c in self.relays.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Refuser {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees `stop`.
        let _ = TcpStream::connect(self.addr.trim_start_matches("tcp@"));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Copies `conn` to `backend` and back on two threads, counting the bytes
/// that come back; each ends when its side closes.
fn relay(conn: TcpStream, backend: &str, relayed: Arc<AtomicUsize>) {
    let Ok(up) = TcpStream::connect(backend) else {
        return;
    };
    let (mut c_rd, mut c_wr) = (conn.try_clone().unwrap(), conn);
    let (mut u_rd, mut u_wr) = (up.try_clone().unwrap(), up);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_rd, &mut u_wr);
        let _ = u_wr.shutdown(Shutdown::Write);
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = u_rd.read(&mut buf) {
            if n == 0 || c_wr.write_all(&buf[..n]).is_err() {
                break;
            }
            relayed.fetch_add(n, Ordering::SeqCst);
        }
        let _ = c_wr.shutdown(Shutdown::Write);
    });
}

/// An XClient over a good node and the refuser, round robin (so the
/// refuser is picked every other call while it is in selection), failing
/// over idempotent calls so that every call succeeds, with an ordinary
/// eviction back-off of 1 ms: without the incompatible mark, the prober's
/// dial (which succeeds) would re-admit the refuser at once.
fn client(good: &Node, bad: &Refuser, incompatible: (Duration, Duration)) -> XClient {
    let d = MultiServerDiscovery::new([good.addr.as_str(), bad.addr.as_str()]);
    XClient::builder(d)
        .select_mode(SelectMode::RoundRobin)
        .fail_mode(FailMode::Failover { retries: 1 })
        .idempotent(true)
        .eviction_backoff(Duration::from_millis(1), Duration::from_millis(1))
        .incompatible_backoff(incompatible.0, incompatible.1)
        .build()
}

#[test]
fn an_instance_that_refuses_the_handshake_is_not_probed_again_by_calls() {
    let _g = serial();
    let good = Node::start();
    let bad = Refuser::start(&good.addr);
    let hour = Duration::from_secs(3600);
    let xc = client(&good, &bad, (hour, hour));
    for i in 0..200 {
        who(&xc).unwrap_or_else(|e| panic!("call {i}: {e}"));
    }
    // One connection refused, and no other: no probe dialled it again, no
    // call was sent to it again.
    assert_eq!(bad.accepted(), 1, "the refuser was dialled again");
    assert_eq!(xc.evicted(), std::slice::from_ref(&bad.addr));
    assert_eq!(good.hits(), 200);
}

#[test]
fn an_incompatible_instance_comes_back_once_it_answers() {
    let _g = serial();
    let good = Node::start();
    let bad = Refuser::start(&good.addr);
    let xc = client(
        &good,
        &bad,
        (Duration::from_millis(20), Duration::from_millis(40)),
    );
    // Until it has refused once.
    let end = Instant::now() + Duration::from_secs(20);
    while bad.accepted() == 0 {
        assert!(Instant::now() < end, "the refuser was never tried");
        who(&xc).unwrap();
    }
    assert_eq!(xc.evicted(), std::slice::from_ref(&bad.addr));
    bad.compatible.store(true, Ordering::SeqCst);
    // Each back-off over, a call tries it again; once it relays a reply
    // it is back in selection. Bounded in time and calls.
    let mut calls = 0;
    while bad.relayed.load(Ordering::SeqCst) == 0 || !xc.evicted().is_empty() {
        assert!(
            Instant::now() < end && calls < 1_000_000,
            "not back after {calls} calls: evicted {:?}",
            xc.evicted()
        );
        who(&xc).unwrap();
        calls += 1;
    }
    // Back in the round robin: the next calls alternate.
    let before = bad.relayed.load(Ordering::SeqCst);
    for _ in 0..10 {
        who(&xc).unwrap();
    }
    assert!(bad.relayed.load(Ordering::SeqCst) > before);
    assert!(xc.evicted().is_empty());
}

/// An instance that answered before is not taken for incompatible when
/// it refuses later: an ordinary eviction, probed by dialling, which here
/// dials it again and again (the refuser, compatible at first, turns into
/// one and cuts the connection it relayed).
#[test]
fn an_instance_that_answered_once_is_evicted_ordinarily() {
    let _g = serial();
    let good = Node::start();
    let bad = Refuser::start(&good.addr);
    bad.compatible.store(true, Ordering::SeqCst);
    let hour = Duration::from_secs(3600);
    let xc = client(&good, &bad, (hour, hour));
    for _ in 0..4 {
        who(&xc).unwrap();
    }
    assert!(bad.relayed.load(Ordering::SeqCst) > 0);
    bad.compatible.store(false, Ordering::SeqCst);
    bad.cut();
    let accepted = bad.accepted();
    let end = Instant::now() + Duration::from_secs(20);
    while bad.accepted() < accepted + 3 {
        assert!(
            Instant::now() < end,
            "dialled {} times since it refused: taken for incompatible?",
            bad.accepted() - accepted
        );
        who(&xc).unwrap();
    }
}
