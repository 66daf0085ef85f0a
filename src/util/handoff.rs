//! The hand-off between a leader that runs work inline and a watcher that
//! takes the leader's role away when one piece of work outlasts a tick.
//!
//! Running work on the thread that received it saves a thread wake-up per
//! request, but a slow piece of work would then hold up everything behind
//! it. So a watcher (the RPC server's monitor, the registry's ticker) looks
//! at every leader once a tick, and a leader found inside the same piece of
//! work twice in a row loses its role: the watcher starts or wakes another
//! thread to lead, and the old leader, once its work ends, learns that it
//! no longer leads and bows out.
//!
//! Invariant: the role changes hands exactly once per stuck piece of work.
//! Both sides clear the in-work bit of the same `epoch << 1 | 1` value by
//! compare-exchange, so exactly one of them wins: the leader (it still
//! leads) or the watcher (it must hand the role on).

use std::sync::atomic::{AtomicU64, Ordering};

/// What the watcher found on one look at a leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Look {
    /// No work running, and none since the last look.
    Idle,
    /// No work running, but some ran since the last look.
    Moved,
    /// Work running, started since the last look (or the leader changed).
    Working,
    /// The same work as at the last look, and the role was not taken
    /// (the watcher was not allowed to).
    Stuck,
    /// The same work as at the last look: the role is now the watcher's to
    /// hand on.
    Taken,
}

#[derive(Debug, Default)]
pub(crate) struct Busy {
    /// `epoch << 1 | in_work`: the leader bumps the epoch and sets the low
    /// bit around each piece of work.
    word: AtomicU64,
    /// The `word` the watcher saw at its previous look.
    seen: AtomicU64,
}

impl Busy {
    /// The leader starts a piece of work; returns the value for `leave`.
    pub(crate) fn enter(&self) -> u64 {
        let epoch = (self.word.load(Ordering::Relaxed) >> 1) + 1;
        let v = (epoch << 1) | 1;
        self.word.store(v, Ordering::Release);
        v
    }

    /// The leader ends its piece of work: false if the watcher took the
    /// role meanwhile.
    pub(crate) fn leave(&self, v: u64) -> bool {
        self.word
            .compare_exchange(v, v & !1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The watcher's look, once a tick. With `may_take` false a stuck
    /// leader keeps its role (the caller has no room for another thread).
    pub(crate) fn look(&self, may_take: bool) -> Look {
        let v = self.word.load(Ordering::Acquire);
        let before = self.seen.swap(v, Ordering::Relaxed);
        if v & 1 == 0 {
            if v == before {
                Look::Idle
            } else {
                Look::Moved
            }
        } else if v != before {
            Look::Working
        } else if !may_take {
            Look::Stuck
        } else if self
            .word
            .compare_exchange(v, v & !1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            Look::Taken
        } else {
            // The leader finished just now and keeps its role.
            Look::Moved
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_seen_at_two_looks_is_taken_once_and_its_leader_learns_it() {
        let b = Busy::default();
        assert_eq!(b.look(true), Look::Idle);
        let v = b.enter();
        assert_eq!(b.look(true), Look::Working);
        assert_eq!(b.look(false), Look::Stuck, "not taken without leave");
        assert_eq!(b.look(true), Look::Taken);
        assert_eq!(b.look(true), Look::Moved, "taken once");
        assert_eq!(b.look(true), Look::Idle);
        assert!(!b.leave(v), "the old leader learns it lost the role");
    }

    #[test]
    fn a_leader_whose_work_ends_between_looks_keeps_its_role() {
        let b = Busy::default();
        for _ in 0..100 {
            let v = b.enter();
            assert_ne!(b.look(true), Look::Taken);
            assert!(b.leave(v));
        }
    }
}
