//! A backlog that waits in the socket is seen with its true age: a leader
//! that is behind reads what waits without blocking (`FrameReader::
//! drain_nowait`), so pipelined calls whose budget ran out while the
//! leader was busy are answered `deadline_exceeded` unrun, instead of
//! being read late, stamped fresh and run for callers that gave up; and
//! with the adaptive limiter on, a spike of calls without deadlines waits
//! no longer than queue-delay shedding's bound (`limits/queue.rs`).

mod common;
mod raw;

use std::io::{BufRead, BufReader, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use geerpc::{Server, Service};
use serde_json::Value;

/// Pipelined calls: far more than one read of the leader's takes (4 KiB,
/// about 50 of these), fewer than a drain may buffer.
const CALLS: u64 = 400;
/// Each call's budget, and what each handler takes.
const BUDGET: Duration = Duration::from_millis(50);
const NAP: Duration = Duration::from_millis(2);

/// What a handler saw: how many ran, and the longest any waited between
/// the moment the whole spike was written and its start (an upper bound
/// on its queueing delay).
#[derive(Default)]
struct Seen {
    runs: AtomicUsize,
    longest_wait_us: AtomicU64,
    sent_at: OnceLock<Instant>,
}

/// A server whose `Slow.Nap` naps `NAP`, one handler at a time (no
/// hand-off to another thread: the calls wait for the leader, one after
/// another).
fn nap_server(adaptive: bool, seen: &Arc<Seen>) -> geerpc::server::ServerHandle {
    let server = Server::builder()
        .max_concurrent_calls(1)
        .adaptive_concurrency(adaptive)
        .build();
    let s = seen.clone();
    server
        .register(Service::new("Slow").method("Nap", move |n: u64| {
            if let Some(t0) = s.sent_at.get() {
                let waited = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
                s.longest_wait_us.fetch_max(waited, Ordering::SeqCst);
            }
            s.runs.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(NAP);
            Ok::<_, String>(n)
        }))
        .unwrap();
    common::start_with(server)
}

/// Writes `CALLS` requests at once (each with `Timeout` if `budget`), then
/// reads every reply: how many came back without a code, and each code's
/// count otherwise.
fn spike(
    running: &geerpc::server::ServerHandle,
    seen: &Seen,
    budget: Option<Duration>,
) -> (usize, Vec<(String, usize)>) {
    let mut s = raw::handshaked(running.addr());
    let timeout = budget.map_or(String::new(), |b| format!(",\"Timeout\":{}", b.as_nanos()));
    let mut all = Vec::new();
    for seq in 0..CALLS {
        all.extend_from_slice(
            format!(
                "{{\"ServiceMethod\":\"Slow.Nap\",\"Seq\":{seq},\"Error\":\"\"{timeout}}}\n{seq}\n"
            )
            .as_bytes(),
        );
    }
    // At once: the server's first read takes ~50 calls, the rest wait in
    // the socket while the leader runs them.
    seen.sent_at.set(Instant::now()).unwrap();
    s.write_all(&all).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();

    let mut rd = BufReader::new(s);
    let mut ok = 0;
    let mut codes: Vec<(String, usize)> = Vec::new();
    let mut line = String::new();
    for _ in 0..CALLS {
        line.clear();
        rd.read_line(&mut line).unwrap();
        let h: Value = serde_json::from_str(&line).unwrap();
        line.clear();
        rd.read_line(&mut line).unwrap();
        match h["Code"].as_str() {
            None => ok += 1,
            Some(code) => match codes.iter_mut().find(|(c, _)| c == code) {
                Some((_, n)) => *n += 1,
                None => codes.push((code.to_string(), 1)),
            },
        }
    }
    (ok, codes)
}

fn count(codes: &[(String, usize)], code: &str) -> usize {
    codes.iter().find(|(c, _)| c == code).map_or(0, |(_, n)| *n)
}

#[test]
fn pipelined_calls_whose_budget_ran_out_in_the_socket_are_not_run() {
    common::init_log();
    let seen = Arc::new(Seen::default());
    let running = nap_server(true, &seen);
    let (ok, codes) = spike(&running, &seen, Some(BUDGET));
    let expired = count(&codes, "deadline_exceeded");
    assert_eq!(ok + expired, CALLS as usize, "other codes: {codes:?}");
    // A call that started in time and ended late is run but answered
    // `deadline_exceeded`; one refused on arrival is never run.
    let runs = seen.runs.load(Ordering::SeqCst);
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

#[test]
fn with_the_adaptive_limiter_a_spike_without_deadlines_waits_at_most_the_shedding_bound() {
    common::init_log();
    // Without it, the control: 400 naps in a row, so the last call waits
    // ~800 ms, however loaded the machine (naps only get longer).
    let off = Arc::new(Seen::default());
    let (ok_off, codes_off) = spike(&nap_server(false, &off), &off, None);
    let waited_off = Duration::from_micros(off.longest_wait_us.load(Ordering::SeqCst));
    assert_eq!(ok_off, CALLS as usize, "codes: {codes_off:?}");
    assert!(
        waited_off >= CALLS as u32 * NAP * 3 / 4,
        "the control's backlog waited only {waited_off:?}"
    );

    // With it, no call runs after waiting more than the interval
    // (`limits/queue.rs`: 100 ms) since it came in; the rest are refused
    // at once, `resource_exhausted`, unrun. The wait is measured from
    // before the write, so it bounds the queueing delay from above; the
    // slack is a nap and a drain's lateness on a loaded machine.
    let on = Arc::new(Seen::default());
    let (ok_on, codes_on) = spike(&nap_server(true, &on), &on, None);
    let waited_on = Duration::from_micros(on.longest_wait_us.load(Ordering::SeqCst));
    let shed = count(&codes_on, "resource_exhausted");
    eprintln!(
        "longest wait before a handler ran: {waited_off:?} without the adaptive limiter, \
         {waited_on:?} with it ({ok_on} ran, {shed} refused)"
    );
    assert_eq!(ok_on + shed, CALLS as usize, "other codes: {codes_on:?}");
    assert!(ok_on >= 1 && shed >= 1, "{ok_on} ran, {shed} refused");
    assert_eq!(on.runs.load(Ordering::SeqCst), ok_on, "a refused call ran");
    assert!(
        waited_on <= Duration::from_millis(200),
        "a call ran after waiting {waited_on:?} (the bound is 100 ms)"
    );
}
