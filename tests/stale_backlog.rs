//! A backlog that waits in the socket is seen with its true age: a leader
//! that is behind reads what waits without blocking (`FrameReader::
//! drain_nowait`), so pipelined calls whose budget ran out while the
//! leader was busy are answered `deadline_exceeded` unrun, instead of
//! being read late, stamped fresh and run for callers that gave up.

mod common;
mod raw;

use std::io::{BufRead, BufReader, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use geerpc::{Server, Service};
use serde_json::Value;

/// Pipelined calls: far more than one read of the leader's takes (4 KiB,
/// about 50 of these), fewer than a drain may buffer.
const CALLS: u64 = 400;
/// Each call's budget, and what each handler takes.
const BUDGET: Duration = Duration::from_millis(50);
const NAP: Duration = Duration::from_millis(2);

#[test]
fn pipelined_calls_whose_budget_ran_out_in_the_socket_are_not_run() {
    common::init_log();
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    // One handler at a time: no hand-off to another thread, so the calls
    // wait for the leader, one after another.
    let server = Server::builder()
        .max_concurrent_calls(1)
        .adaptive_concurrency(true)
        .build();
    server
        .register(Service::new("Slow").method("Nap", move |n: u64| {
            r.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(NAP);
            Ok::<_, String>(n)
        }))
        .unwrap();
    let running = common::start_with(server);

    let mut s = raw::handshaked(running.addr());
    let mut all = Vec::new();
    for seq in 0..CALLS {
        all.extend_from_slice(
            format!(
                "{{\"ServiceMethod\":\"Slow.Nap\",\"Seq\":{seq},\"Error\":\"\",\"Timeout\":{}}}\n{seq}\n",
                BUDGET.as_nanos()
            )
            .as_bytes(),
        );
    }
    // At once: the server's first read takes ~50 calls, the rest wait in
    // the socket while the leader runs them.
    s.write_all(&all).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();

    let mut rd = BufReader::new(s);
    let (mut ok, mut expired) = (0, 0);
    let mut line = String::new();
    for _ in 0..CALLS {
        line.clear();
        rd.read_line(&mut line).unwrap();
        let h: Value = serde_json::from_str(&line).unwrap();
        line.clear();
        rd.read_line(&mut line).unwrap();
        match h["Code"].as_str() {
            None => ok += 1,
            Some("deadline_exceeded") => expired += 1,
            Some(other) => panic!("unexpected code {other}: {h}"),
        }
    }
    assert_eq!(ok + expired, CALLS as usize);
    // A call that started in time and ended late is run but answered
    // `deadline_exceeded`; one refused on arrival is never run.
    let runs = runs.load(Ordering::SeqCst);
    assert!(runs >= ok && runs <= ok + 3, "{runs} runs, {ok} answered");
    // Every call was sent at once, so none may start after the first
    // budget ends: ~25 naps fit in it. Read late and stamped fresh (no
    // drain), each ~50-call read ran about 25 more (~200 in all). A loaded
    // machine only makes naps longer, so fewer run.
    assert!(ok >= 1, "the first call runs");
    assert!(
        runs <= 100,
        "{runs} of {CALLS} calls ran, {expired} refused: the backlog's age was not seen"
    );
}
