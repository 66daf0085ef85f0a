//! [`Overload`]: how an instance that refuses calls as over a limit
//! (replies with code `resource_exhausted`, PROTOCOL.md section 8) is
//! avoided for a while, without being evicted.
//!
//! Selection passes the instance over until its window ends; the window
//! starts at the minimum back-off, doubles (up to the maximum) each time
//! the instance refuses again once its window has ended, and the back-off
//! falls back to the minimum after a call on it succeeds. Nothing is
//! probed and nothing counts as a failure: the instance answered, it only
//! had no room. A refusal that arrives while a window is open (a call
//! sent before it opened) changes nothing, so a burst of refusals of
//! calls already in flight does not jump the back-off to its maximum.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::slot::retry_after;

/// The overload state of one instance.
pub(super) struct Overload {
    /// Whether the state below is worth a look: set by a refusal, cleared
    /// by a success once the window has ended. Every pick reads it, so a
    /// healthy instance costs one atomic load and never the lock.
    /// Invariant: written only under `state`'s lock.
    marked: AtomicBool,
    state: Mutex<Window>,
}

/// The current window and the back-off it was opened with.
#[derive(Debug, Clone, Copy)]
struct Window {
    until: Instant,
    /// Zero until a refusal; back to zero after a success.
    backoff: Duration,
}

impl Window {
    /// A refusal at `now`: opens a new window unless one is open, and
    /// returns its length if it did.
    fn refused(&mut self, now: Instant, min: Duration, max: Duration) -> Option<Duration> {
        if now < self.until {
            return None;
        }
        self.backoff = if self.backoff.is_zero() {
            min
        } else {
            self.backoff.saturating_mul(2).min(max)
        };
        self.until = match now.checked_add(self.backoff) {
            Some(t) => t,
            None => retry_after(self.backoff),
        };
        Some(self.backoff)
    }

    /// A success at `now`: the back-off starts again from the minimum.
    /// Returns whether the state can be forgotten (no window open); an
    /// open window runs out, since calls refused a moment ago say the
    /// instance is still full.
    fn succeeded(&mut self, now: Instant) -> bool {
        self.backoff = Duration::ZERO;
        now >= self.until
    }
}

impl Overload {
    pub(super) fn new() -> Overload {
        Overload {
            marked: AtomicBool::new(false),
            state: Mutex::new(Window {
                until: Instant::now(),
                backoff: Duration::ZERO,
            }),
        }
    }

    /// Whether selection should pass the instance over now.
    pub(super) fn avoid(&self) -> bool {
        self.marked.load(Ordering::Acquire) && Instant::now() < self.state.lock().until
    }

    /// Notes a refusal (see the module doc); returns the new window's
    /// length if one opened.
    pub(super) fn refused(&self, min: Duration, max: Duration) -> Option<Duration> {
        let mut w = self.state.lock();
        let opened = w.refused(Instant::now(), min, max);
        self.marked.store(true, Ordering::Release);
        opened
    }

    /// Notes a success: one atomic load unless the instance refused lately.
    pub(super) fn succeeded(&self) {
        if !self.marked.load(Ordering::Relaxed) {
            return;
        }
        let mut w = self.state.lock();
        if w.succeeded(Instant::now()) {
            self.marked.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(1);

    #[test]
    fn the_window_doubles_while_refusals_go_on_and_resets_after_a_success() {
        let t0 = Instant::now();
        let ms = |n: u64| Duration::from_millis(n);
        let mut w = Window {
            until: t0,
            backoff: Duration::ZERO,
        };
        assert_eq!(w.refused(t0, MIN, MAX), Some(ms(100)));
        // Refusals of calls sent before the window opened change nothing.
        assert_eq!(w.refused(t0 + ms(50), MIN, MAX), None);
        assert_eq!(w.until, t0 + ms(100));
        // Refused again once tried again: twice as long, up to the maximum.
        let mut now = t0 + ms(100);
        for want in [200, 400, 800, 1000, 1000] {
            assert_eq!(w.refused(now, MIN, MAX), Some(ms(want)));
            now = w.until;
        }
        // A success within a window keeps it, but the next starts small.
        assert_eq!(w.refused(now, MIN, MAX), Some(MAX));
        assert!(!w.succeeded(now + ms(10)));
        assert_eq!(w.until, now + MAX);
        assert_eq!(w.refused(now + MAX, MIN, MAX), Some(MIN));
        assert!(w.succeeded(now + MAX + MIN));
        // A zero minimum never avoids.
        let mut off = Window {
            until: t0,
            backoff: Duration::ZERO,
        };
        assert_eq!(off.refused(t0, Duration::ZERO, Duration::ZERO), Some(ms(0)));
        assert_eq!(off.until, t0);
    }

    #[test]
    fn marked_only_while_it_matters() {
        let o = Overload::new();
        assert!(!o.avoid());
        o.succeeded();
        assert!(!o.marked.load(Ordering::Relaxed));
        assert_eq!(o.refused(MAX, MAX), Some(MAX));
        assert!(o.avoid());
        // A success within the window: still avoided.
        o.succeeded();
        assert!(o.avoid());
        let o = Overload::new();
        assert_eq!(
            o.refused(Duration::ZERO, Duration::ZERO),
            Some(Duration::ZERO)
        );
        assert!(!o.avoid(), "a zero back-off never avoids");
        o.succeeded();
        assert!(
            !o.marked.load(Ordering::Relaxed),
            "forgotten after a success"
        );
    }
}
