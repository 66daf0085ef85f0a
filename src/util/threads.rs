//! Named threads that an owner can wait for and join.
//!
//! Every thread geerpc starts belongs to a `ThreadGroup` owned by the object
//! that started it (a server, a client, a heartbeat). The owner's shutdown
//! makes the threads' blocking calls return (by closing sockets or sending on
//! a channel), then waits for them here with a deadline, so a shutdown never
//! hangs on a thread stuck in user code: such a thread is reported, not
//! waited for forever.
//!
//! The one exception is tiny_http's threads in the registry server, which
//! tiny_http starts and ends itself: the accept thread at shutdown, idle
//! pool threads a few seconds later, and a connection's thread when its
//! peer closes the connection.
//!
//! Linux keeps only the first 15 bytes of a thread's name (what `top -H`,
//! `perf` and `/proc/*/task/*/comm` show), so every name here fits in 15
//! bytes and none is a prefix of another (tests find threads by prefix).

use std::cell::Cell;
use std::io;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

thread_local! {
    /// The group (its `Inner`'s address) the current thread belongs to, or
    /// 0: a thread of the group that waits for the group must not wait for
    /// itself.
    static GROUP: Cell<usize> = const { Cell::new(0) };
}

#[derive(Clone, Default)]
pub(crate) struct ThreadGroup {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    live: Mutex<usize>,
    ended: Condvar,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

/// Marks the current thread as one of a group's until dropped.
struct Member;

impl Member {
    fn enter(group: usize) -> Member {
        GROUP.with(|g| g.set(group));
        Member
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        GROUP.with(|g| g.set(0));
    }
}

/// Counts a thread out of its group when it ends, even by panic.
struct LiveGuard(Arc<Inner>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        let mut live = self.0.live.lock();
        *live -= 1;
        // 1: the one left may be the thread waiting (see `join_until`).
        if *live <= 1 {
            self.0.ended.notify_all();
        }
    }
}

impl ThreadGroup {
    /// Starts a thread called `name` with an optional stack size.
    pub(crate) fn spawn<F>(&self, name: &str, stack: Option<usize>, f: F) -> io::Result<()>
    where
        F: FnOnce() + Send + 'static,
    {
        debug_assert!(
            name.len() <= 15,
            "thread name {name:?} is cut short by Linux"
        );
        *self.inner.live.lock() += 1;
        let guard = LiveGuard(self.inner.clone());
        let group = self.id();
        let mut b = thread::Builder::new().name(name.to_string());
        if let Some(s) = stack {
            b = b.stack_size(s);
        }
        let spawned = b.spawn(move || {
            let _guard = guard;
            // Dropped before `_guard`: once counted out, the thread is no
            // longer one of the group (thread-local destructors run later).
            let _member = Member::enter(group);
            f()
        });
        // On failure the closure (and its guard) was dropped: the count is right.
        let handle = spawned?;
        let mut handles = self.inner.handles.lock();
        if handles.len() >= 64 && handles.len().is_power_of_two() {
            handles.retain(|h| !h.is_finished());
        }
        handles.push(handle);
        Ok(())
    }

    fn id(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    /// Whether the calling thread is one of this group's.
    pub(crate) fn is_current(&self) -> bool {
        GROUP.with(|g| g.get()) == self.id()
    }

    /// Threads of this group still running.
    pub(crate) fn live(&self) -> usize {
        *self.inner.live.lock()
    }

    /// Waits until every thread has ended or `deadline` passes, then joins
    /// those that ended. Returns how many are still running. Called from a
    /// thread of the group (a handler shutting its own server down), it
    /// neither waits for nor joins that thread, nor counts it.
    pub(crate) fn join_until(&self, deadline: Instant) -> usize {
        let me_too = usize::from(self.is_current());
        let all_ended = {
            let mut live = self.inner.live.lock();
            while *live > me_too {
                if self.inner.ended.wait_until(&mut live, deadline).timed_out() {
                    break;
                }
            }
            *live == me_too
        };
        let handles = std::mem::take(&mut *self.inner.handles.lock());
        let me = thread::current().id();
        let mut stuck = Vec::new();
        for h in handles {
            if h.thread().id() == me {
                continue;
            }
            // A thread counted out has returned from its closure: joining it
            // only waits for the OS thread to exit.
            if all_ended || h.is_finished() {
                let _ = h.join();
            } else {
                stuck.push(h);
            }
        }
        let n = stuck.len();
        self.inner.handles.lock().extend(stuck);
        n
    }
}

/// Puts the calling thread under Linux's `SCHED_BATCH` policy if it runs
/// under the default one, and says whether it did. A batch thread that
/// wakes waits for the running thread's turn to end instead of preempting
/// it; threads it starts inherit the policy.
///
/// For threads that answer many small requests from peers on the same
/// machine: preempting the peer that just sent a request, only to block
/// again a few microseconds later, costs both a context switch and cuts
/// the peer's batch of sends short.
///
/// The pthread calls rather than `sched_setscheduler`, which musl does not
/// implement (it fails with `ENOSYS`).
// Only the registry uses it today.
#[cfg_attr(not(feature = "registry"), allow(dead_code))]
#[cfg(target_os = "linux")]
pub(crate) fn use_batch_policy() -> bool {
    // SAFETY: `pthread_self` is the calling thread, alive throughout, and
    // `policy` and `param` outlive the calls. A zeroed `sched_param` is
    // valid (musl's has fields besides the priority).
    unsafe {
        let me = libc::pthread_self();
        let mut policy = 0;
        let mut param: libc::sched_param = std::mem::zeroed();
        if libc::pthread_getschedparam(me, &mut policy, &mut param) != 0
            || policy != libc::SCHED_OTHER
        {
            return false;
        }
        param.sched_priority = 0;
        libc::pthread_setschedparam(me, libc::SCHED_BATCH, &param) == 0
    }
}

/// Elsewhere the scheduler is left alone.
#[cfg_attr(not(feature = "registry"), allow(dead_code))]
#[cfg(not(target_os = "linux"))]
pub(crate) fn use_batch_policy() -> bool {
    false
}
