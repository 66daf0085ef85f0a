//! The open loop (`loadgen load --rate QPS`): calls are started on a fixed
//! schedule whatever their latency, the way independent users arrive, so
//! that an overloaded server is offered more than it answers (a closed
//! loop slows down with the server and never overloads it).
//!
//! The main thread paces: at each scheduled instant it puts a ticket
//! (that instant) on a bounded queue, and a pool of caller threads, each
//! making one blocking call at a time with a deadline, takes them. A
//! call's latency and deadline count from its scheduled instant, not from
//! when a caller got to it, so a late pacer or too few callers show as
//! latency rather than hiding it (no coordinated omission). A ticket that
//! finds the queue full is not started and counted as `unstarted`; one
//! whose deadline passed while it waited in the queue is not sent and
//! counted as a timeout.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::calls::{Caller, Outcome, Tally, Target};

/// Calls due but not yet taken by a caller, at most: the bound on what the
/// loadgen holds when the server falls behind.
const MAX_QUEUED: usize = 100_000;
/// Caller threads at most (what `--concurrency` defaults to is below it).
pub const MAX_CALLERS: usize = 4096;
/// The callers' stack: they only encode, decode and wait.
const CALLER_STACK: usize = 256 << 10;

/// The default number of caller threads for `rate` calls/s each bounded by
/// `timeout`: enough for every call to take its whole timeout, plus room.
pub fn default_callers(rate: f64, timeout: Duration) -> usize {
    let need = (rate * timeout.as_secs_f64() * 1.2).ceil() as usize + 8;
    need.clamp(8, MAX_CALLERS)
}

struct Ticket {
    /// When the call was due to start.
    at: Instant,
    /// Inside the measured window (not the warm-up).
    counted: bool,
}

/// The tickets due and not yet taken. A mutex and a condition variable,
/// not a channel: a channel's blocking receive spins before it sleeps,
/// and thousands of idle callers spinning on two cores would take the
/// CPU from the server being measured.
#[derive(Default)]
struct Queue {
    state: Mutex<(VecDeque<Ticket>, bool)>,
    ready: Condvar,
}

impl Queue {
    /// Queues `t` unless `MAX_QUEUED` are queued already.
    fn push(&self, t: Ticket) -> bool {
        let mut s = self.state.lock().unwrap();
        if s.0.len() >= MAX_QUEUED {
            return false;
        }
        s.0.push_back(t);
        drop(s);
        self.ready.notify_one();
        true
    }

    /// The next ticket; `None` once closed and empty.
    fn pop(&self) -> Option<Ticket> {
        let mut s = self.state.lock().unwrap();
        loop {
            if let Some(t) = s.0.pop_front() {
                return Some(t);
            }
            if s.1 {
                return None;
            }
            s = self.ready.wait(s).unwrap();
        }
    }

    fn close(&self) {
        self.state.lock().unwrap().1 = true;
        self.ready.notify_all();
    }
}

/// Offers `rate` calls/s for `warmup` then `window`, spread over `targets`
/// by `callers` threads, each call bounded by `timeout` from its scheduled
/// start. `tick` runs about every 100 ms while pacing. Returns what was
/// counted in the window.
#[allow(clippy::too_many_arguments)]
pub fn run(
    targets: &[Target],
    callers: Vec<Caller>,
    rate: f64,
    timeout: Duration,
    warmup: Duration,
    window: Duration,
    tick: &mut dyn FnMut(),
) -> Tally {
    let queue = Arc::new(Queue::default());
    let mut threads = Vec::with_capacity(callers.len());
    for (i, mut caller) in callers.into_iter().enumerate() {
        let target = targets[i % targets.len()].clone();
        let queue = queue.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("loadgen-caller-{i}"))
            .stack_size(CALLER_STACK)
            // Ends when the pacer has closed the queue and it is empty;
            // each call is bounded by its deadline.
            .spawn(move || {
                let mut tally = Tally::with_capacity(1 << 12);
                while let Some(t) = queue.pop() {
                    let deadline = t.at + timeout;
                    let (outcome, slow) = if Instant::now() >= deadline {
                        (Outcome::Timeout, false)
                    } else {
                        caller.call(&target, Some(deadline))
                    };
                    if t.counted {
                        tally.record(t.at.elapsed(), outcome, slow);
                    }
                }
                tally
            });
        match spawned {
            Ok(h) => threads.push(h),
            Err(e) => {
                eprintln!("loadgen: cannot start caller thread {i}: {e}");
                std::process::exit(1)
            }
        }
    }

    let start = Instant::now();
    let window_start = start + warmup;
    let end = window_start + window;
    // The schedule is absolute (start + i/rate): a pacer that oversleeps
    // sends the calls it owes at once rather than offering less.
    let total = ((warmup + window).as_secs_f64() * rate).ceil() as u64;
    let mut unstarted = 0u64;
    let mut next_tick = start;
    for i in 0..total {
        let at = start + Duration::from_secs_f64(i as f64 / rate);
        if at >= end {
            break;
        }
        let now = Instant::now();
        if now >= next_tick {
            tick();
            next_tick = now + Duration::from_millis(100);
        }
        if at > now {
            std::thread::sleep(at - now);
        }
        let counted = at >= window_start;
        if !queue.push(Ticket { at, counted }) {
            unstarted += counted as u64;
        }
    }
    queue.close();

    let mut all = Tally::default();
    for h in threads {
        all.merge(h.join().expect("caller thread"));
    }
    all.unstarted += unstarted;
    all
}
