//! Which registry worker takes requests from tiny_http. It knows nothing
//! of requests, only whether the leader is inside one.
//!
//! tiny_http's connection threads push each request onto one queue, and a
//! push wakes a worker waiting in `recv`. With four workers waiting, every
//! request woke one: 1.8 context switches a request under `wrk`, against
//! 1.15 with a single worker, which is often still busy when the next
//! request comes and so needs no waking. One worker alone, though, would
//! let a single slow request (a peer that does not read, a large listing)
//! hold up every other.
//!
//! So one worker at a time, the leader, receives and answers; the others
//! sleep on `cv`. A ticker, like the RPC server's monitor, hands the role
//! on when the leader has been inside one request for a whole tick (see
//! `handoff`). The old leader, once done, finds its role gone and goes
//! back to sleep.
//!
//! Invariant: `state.taken` is true while some worker holds the role. The
//! leader gives it up only through `leave` failing (the ticker took the
//! role from it and cleared `taken`) or `give_up`; the ticker clears
//! `taken` only when its look took the role, which happens once per stuck
//! request.

use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::util::handoff::{Busy, Look};

/// How long the leader may spend inside one request before another worker
/// takes over receiving.
pub(super) const TICK: Duration = Duration::from_millis(1);
/// Longest sleep of the ticker while no request is being answered.
const IDLE_TICK: Duration = Duration::from_millis(20);

#[derive(Default)]
pub(super) struct Roles {
    state: Mutex<RoleState>,
    /// Sleeping workers wait here.
    cv: Condvar,
    /// The ticker sleeps here, apart: a hand-off must wake a worker.
    tick_cv: Condvar,
    /// Whether the leader is inside a request.
    busy: Busy,
}

#[derive(Default)]
struct RoleState {
    taken: bool,
    stopping: bool,
}

impl Roles {
    /// Waits until the role is free and takes it; false once stopping.
    pub(super) fn take(&self) -> bool {
        let mut st = self.state.lock();
        while st.taken && !st.stopping {
            self.cv.wait(&mut st);
        }
        if st.stopping {
            return false;
        }
        st.taken = true;
        true
    }

    /// The leader lets go of the role (it is stopping, or its receive
    /// failed).
    pub(super) fn give_up(&self) {
        self.state.lock().taken = false;
        self.cv.notify_one();
    }

    /// Marks the start of a request; returns the value for `leave`.
    pub(super) fn enter(&self) -> u64 {
        self.busy.enter()
    }

    /// Marks the end of a request; false if the role was handed on meanwhile.
    pub(super) fn leave(&self, v: u64) -> bool {
        self.busy.leave(v)
    }

    /// Wakes every sleeping worker for good.
    pub(super) fn stop(&self) {
        self.state.lock().stopping = true;
        self.cv.notify_all();
        self.tick_cv.notify_all();
    }

    /// The ticker: until stopping, hands the role on whenever the leader has
    /// been in the same request for a tick. Ticks every `tick` while
    /// requests come, backing off to `IDLE_TICK` while none do.
    pub(super) fn run_ticker(&self, tick: Duration) {
        let mut sleep = tick;
        loop {
            {
                let mut st = self.state.lock();
                if st.stopping {
                    return;
                }
                let until = Instant::now() + sleep;
                while !st.stopping && Instant::now() < until {
                    self.tick_cv.wait_until(&mut st, until);
                }
                if st.stopping {
                    return;
                }
            }
            let look = self.busy.look(true);
            if look == Look::Taken {
                log::debug!("registry: a request took over {tick:?}; another worker takes over");
                self.give_up();
            }
            // Requests answered since the last look keep the tick short:
            // the next one may be the one that stalls.
            sleep = if look == Look::Idle {
                (sleep * 2).min(IDLE_TICK.max(tick))
            } else {
                tick
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_stuck_leader_is_relieved_once_and_then_steps_down() {
        let roles = Arc::new(Roles::default());
        assert!(roles.take());
        let mark = roles.enter();
        let ticker = {
            let r = roles.clone();
            std::thread::spawn(move || r.run_ticker(Duration::from_millis(1)))
        };
        // A follower gets the role while the leader is still inside.
        let follower = {
            let r = roles.clone();
            std::thread::spawn(move || r.take())
        };
        assert!(follower.join().unwrap(), "the follower took over");
        assert!(!roles.leave(mark), "the old leader learns it lost the role");
        roles.stop();
        ticker.join().unwrap();
        assert!(!roles.take(), "nobody takes the role once stopping");
    }

    #[test]
    fn a_quick_leader_keeps_its_role() {
        let roles = Roles::default();
        assert!(roles.take());
        for _ in 0..1000 {
            let mark = roles.enter();
            assert!(roles.leave(mark));
        }
    }
}
