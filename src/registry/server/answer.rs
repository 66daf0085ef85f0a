//! The threads that write long-poll answers, so that the reaper never
//! writes to a socket. A job is a closure: this pool knows nothing of the
//! table or the requests, and may not take the registry's state lock.
//!
//! A write to a watcher that does not read blocks until the registry's
//! write timeout (10 s by default); written by the reaper, it held up
//! every TTL purge and every other watcher's answer meanwhile. tiny_http
//! gives no access to the socket, so a non-blocking write is not on
//! offer. The pool used to start a thread for every answer queued beyond
//! its idle threads: a change seen by 1,000 watchers started 1,000
//! threads (39 KiB of RSS each), which lived on for `IDLE` after. Yet an
//! answer is one write of bytes encoded already (`table::listing`), which
//! a reading peer's socket takes at once.
//!
//! So the pool runs `BASE` threads, and a watchdog (`geerpc-reg-adog`)
//! looks every `TICK` while answers are queued: if no queued answer was
//! taken during a whole tick, every thread is inside a write that blocks
//! (or none was started), and it starts as many threads again as there
//! are (at least one, at most one per queued answer). So a stuck write
//! still delays no other for long: k stuck writes cost the rest about
//! log2(k) ticks. Threads are capped (at the registry's long-poll cap:
//! one per parked watcher at most); idle ones end after `IDLE`.

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
/// Threads started for queued answers before the watchdog sees a stall:
/// the machine's cores are what writing 1,000 answers needs, not more.
const BASE: usize = 2;
/// How long the queue may make no progress before more threads start.
const TICK: Duration = Duration::from_millis(2);

pub(super) struct Answerers {
    inner: Arc<Inner>,
    group: ThreadGroup,
}

struct Inner {
    state: Mutex<PoolState>,
    /// Idle answer threads wait here.
    cv: Condvar,
    /// The watchdog waits here for answers to be queued.
    dog_cv: Condvar,
    max_threads: usize,
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
    /// Jobs taken from the queue so far: the watchdog's measure of progress.
    taken: u64,
    /// Whether the watchdog runs.
    dog: bool,
    stopping: bool,
}

impl Answerers {
    /// A pool of at most `max_threads` threads, started in `group` (so that
    /// the registry's shutdown waits for them).
    pub(super) fn new(group: ThreadGroup, max_threads: usize) -> Answerers {
        Answerers {
            inner: Arc::new(Inner {
                state: Mutex::default(),
                cv: Condvar::new(),
                dog_cv: Condvar::new(),
                max_threads: max_threads.max(1),
            }),
            group,
        }
    }

    /// Queues `jobs`, starts threads up to `BASE`, and the watchdog if it
    /// does not run. Never blocks on a peer: only on the pool's lock and
    /// on starting threads.
    pub(super) fn dispatch(&self, jobs: Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        let (spawn, dog) = {
            let mut st = self.inner.state.lock();
            st.jobs.extend(jobs);
            let want = st.jobs.len().saturating_sub(st.idle);
            let room = BASE.min(self.inner.max_threads).saturating_sub(st.threads);
            let spawn = want.min(room);
            st.threads += spawn;
            st.idle += spawn;
            let dog = !st.dog && !st.stopping;
            st.dog = true;
            (spawn, dog)
        };
        self.inner.cv.notify_all();
        self.inner.dog_cv.notify_all();
        start(&self.inner, &self.group, spawn);
        if dog {
            let (inner, group) = (self.inner.clone(), self.group.clone());
            let started = self
                .group
                .spawn("geerpc-reg-adog", Some(64 * 1024), move || {
                    watchdog(&inner, &group)
                });
            if let Err(e) = started {
                self.inner.state.lock().dog = false;
                log::warn!("registry: cannot start the long-poll answer watchdog: {e}");
            }
        }
    }

    /// Lets the threads end once the queue is empty.
    pub(super) fn stop(&self) {
        self.inner.state.lock().stopping = true;
        self.inner.cv.notify_all();
        self.inner.dog_cv.notify_all();
    }

    /// How many answer threads run now (the watchdog aside).
    #[cfg(test)]
    fn threads(&self) -> usize {
        self.inner.state.lock().threads
    }
}

impl Drop for Answerers {
    /// The watchdog waits for answers until told to stop.
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts `n` answer threads, already counted in `threads` and `idle`.
fn start(inner: &Arc<Inner>, group: &ThreadGroup, n: usize) {
    for started in 0..n {
        let i = inner.clone();
        if let Err(e) = group.spawn("geerpc-reg-answ", Some(STACK), move || run(&i)) {
            let left = n - started;
            let mut st = inner.state.lock();
            st.threads -= left;
            st.idle -= left;
            log::warn!("registry: cannot start a long-poll answer thread: {e}");
            break;
        }
    }
}

/// Until stopping: while answers are queued, starts more threads after
/// every tick in which none was taken (see the module's comment).
fn watchdog(inner: &Arc<Inner>, group: &ThreadGroup) {
    let mut st = inner.state.lock();
    loop {
        // Answers queued at the stop are still written, stuck ones too.
        if st.stopping && st.jobs.is_empty() {
            st.dog = false;
            return;
        }
        if st.jobs.is_empty() {
            inner.dog_cv.wait(&mut st);
            continue;
        }
        let before = st.taken;
        inner.dog_cv.wait_for(&mut st, TICK);
        if st.jobs.is_empty() || st.taken != before {
            continue;
        }
        // No progress for a tick: the threads there are all stuck in
        // writes (or descheduled; then the extra ones soon idle out).
        let want = st.jobs.len().saturating_sub(st.idle);
        let room = inner.max_threads.saturating_sub(st.threads);
        let spawn = want.min(st.threads.max(1)).min(room);
        st.threads += spawn;
        st.idle += spawn;
        drop(st);
        if spawn > 0 {
            log::debug!("registry: long-poll answers stalled for {TICK:?}; {spawn} more threads");
        }
        start(inner, group, spawn);
        st = inner.state.lock();
    }
}

fn run(inner: &Inner) {
    let mut st = inner.state.lock();
    loop {
        // Counted idle until here (see `PoolState`).
        st.idle -= 1;
        if let Some(job) = st.jobs.pop_front() {
            st.taken += 1;
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
    use std::time::Instant;

    /// More stuck jobs than `BASE` threads: the watchdog starts more, so
    /// the others still run.
    #[test]
    fn stuck_jobs_delay_no_other() {
        let group = ThreadGroup::default();
        let pool = Answerers::new(group.clone(), 100);
        let (release, stuck) = bounded::<()>(0);
        let (done_tx, done) = bounded::<usize>(100);
        let mut jobs: Vec<Job> = Vec::new();
        for _ in 0..BASE + 3 {
            let stuck = stuck.clone();
            jobs.push(Box::new(move || {
                let _ = stuck.recv();
            }));
        }
        for i in 0..50 {
            let tx = done_tx.clone();
            jobs.push(Box::new(move || tx.send(i).unwrap()));
        }
        pool.dispatch(jobs);
        for _ in 0..50 {
            done.recv_timeout(Duration::from_secs(10))
                .expect("every other job runs while some are stuck");
        }
        assert!(pool.threads() > BASE + 3, "{} threads", pool.threads());
        drop(release);
        pool.stop();
        assert_eq!(
            group.join_until(Instant::now() + Duration::from_secs(10)),
            0
        );
    }

    /// 1,000 answers that do not block are written by a few threads, not
    /// one each (the pool started 1,000 before).
    #[test]
    fn quick_jobs_start_few_threads() {
        let group = ThreadGroup::default();
        let pool = Answerers::new(group.clone(), 10_000);
        let (done_tx, done) = bounded::<()>(1000);
        for _ in 0..2 {
            let jobs = (0..500)
                .map(|_| {
                    let tx = done_tx.clone();
                    Box::new(move || tx.send(()).unwrap()) as Job
                })
                .collect();
            pool.dispatch(jobs);
        }
        for _ in 0..1000 {
            done.recv_timeout(Duration::from_secs(10)).expect("all run");
        }
        // BASE, or a few doublings where the machine descheduled them.
        assert!(pool.threads() <= 32, "{} threads", pool.threads());
        pool.stop();
        assert_eq!(
            group.join_until(Instant::now() + Duration::from_secs(10)),
            0
        );
    }
}
