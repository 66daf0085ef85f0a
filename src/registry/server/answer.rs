//! The threads that write long-poll answers, so that the reaper never
//! writes to a socket. A job is a closure: this pool knows nothing of the
//! table or the requests, and may not take the registry's state lock.
//!
//! A write to a watcher that does not read blocks until the registry's
//! write timeout (10 s by default); written by the reaper, it held up
//! every TTL purge and every other watcher's answer meanwhile. tiny_http
//! gives no access to the socket, so a non-blocking write is not on
//! offer: instead each answer runs on a thread of this pool, and the pool
//! starts a thread whenever answers are queued beyond its idle threads.
//! So every queued answer has a thread of its own, and a stuck write
//! delays no other. Threads are capped (at the registry's long-poll cap:
//! one per parked watcher at most); idle ones end after `IDLE`. The cost:
//! a change with N polls parked starts about N threads, fewer those idle
//! (tens of microseconds each, on the reaper), where writing inline
//! started none. With 1,000 parked polls, all are answered
//! (tests/registry_limits.rs, scripts/registry_bounds.py).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::util::threads::ThreadGroup;

/// One answer to write.
pub(super) type Job = Box<dyn FnOnce() + Send>;

/// How long an answer thread with nothing to do lives on.
const IDLE: Duration = Duration::from_secs(2);
/// An answer thread's stack: it formats and writes one response.
const STACK: usize = 256 * 1024;

pub(super) struct Answerers {
    inner: Arc<Inner>,
    group: ThreadGroup,
    max_threads: usize,
}

#[derive(Default)]
struct Inner {
    state: Mutex<PoolState>,
    cv: Condvar,
}

/// Invariant (under the lock): `idle` counts threads that will look at
/// `jobs` before running anything else: those waiting on `cv` (woken or
/// not) and those started but not yet running. So `idle >= jobs.len()`
/// means every queued job has a thread that will take it.
#[derive(Default)]
struct PoolState {
    jobs: VecDeque<Job>,
    idle: usize,
    threads: usize,
    stopping: bool,
}

impl Answerers {
    /// A pool of at most `max_threads` threads, started in `group` (so that
    /// the registry's shutdown waits for them).
    pub(super) fn new(group: ThreadGroup, max_threads: usize) -> Answerers {
        Answerers {
            inner: Arc::default(),
            group,
            max_threads: max_threads.max(1),
        }
    }

    /// Queues `jobs` and starts threads so that each has one. Never blocks
    /// on a peer: only on the pool's lock and on starting threads.
    pub(super) fn dispatch(&self, jobs: Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        let spawn = {
            let mut st = self.inner.state.lock();
            st.jobs.extend(jobs);
            let want = st.jobs.len().saturating_sub(st.idle);
            let spawn = want.min(self.max_threads.saturating_sub(st.threads));
            st.threads += spawn;
            st.idle += spawn;
            spawn
        };
        self.inner.cv.notify_all();
        for started in 0..spawn {
            let inner = self.inner.clone();
            if let Err(e) = self
                .group
                .spawn("geerpc-reg-answ", Some(STACK), move || run(&inner))
            {
                let left = spawn - started;
                let mut st = self.inner.state.lock();
                st.threads -= left;
                st.idle -= left;
                log::warn!("registry: cannot start a long-poll answer thread: {e}");
                break;
            }
        }
    }

    /// Lets the threads end once the queue is empty.
    pub(super) fn stop(&self) {
        self.inner.state.lock().stopping = true;
        self.inner.cv.notify_all();
    }
}

fn run(inner: &Inner) {
    let mut st = inner.state.lock();
    loop {
        // Counted idle until here (see `PoolState`).
        st.idle -= 1;
        if let Some(job) = st.jobs.pop_front() {
            drop(st);
            job();
            st = inner.state.lock();
            st.idle += 1;
            continue;
        }
        if st.stopping {
            st.threads -= 1;
            return;
        }
        st.idle += 1;
        let timed_out = inner.cv.wait_for(&mut st, IDLE).timed_out();
        if timed_out && st.jobs.is_empty() && !st.stopping {
            st.idle -= 1;
            st.threads -= 1;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::bounded;

    #[test]
    fn a_stuck_job_delays_no_other() {
        let group = ThreadGroup::default();
        let pool = Answerers::new(group.clone(), 100);
        let (release, stuck) = bounded::<()>(0);
        let (done_tx, done) = bounded::<usize>(100);
        let mut jobs: Vec<Job> = vec![Box::new(move || {
            let _ = stuck.recv();
        })];
        for i in 0..50 {
            let tx = done_tx.clone();
            jobs.push(Box::new(move || tx.send(i).unwrap()));
        }
        pool.dispatch(jobs);
        for _ in 0..50 {
            done.recv_timeout(Duration::from_secs(10))
                .expect("every other job runs while one is stuck");
        }
        drop(release);
        pool.stop();
        assert_eq!(
            group.join_until(std::time::Instant::now() + Duration::from_secs(10)),
            0
        );
    }
}
