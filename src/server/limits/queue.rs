//! Queue-delay shedding: how long a call may have waited between its
//! arrival and its admission, CoDel as Facebook applies it to RPC servers
//! (Ben Maurer, "Fail at Scale", ACM Queue 13(8), 2015, section
//! "Controlled Delay"; after Nichols and Jacobson's CoDel, ACM Queue
//! 10(5), 2012).
//!
//! A concurrency limit alone does not bound queueing in this server: a
//! connection's leader runs its requests one after another, so under
//! overload they wait in the connection's buffer (and the socket), not
//! for a place under the limit. Their wait is visible, though: each
//! request is stamped with the read that brought it in
//! (`FrameReader::received`), and admission compares that with now. A
//! leader that is behind reads what waits in the socket once a
//! millisecond without blocking (`conn.rs`, `DRAIN_EVERY`), so a backlog
//! waits in its buffer, stamped, not unseen in the kernel (where, read
//! late, it looked fresh and nothing was ever shed).
//!
//! The state is per connection (`Conn::queue`): each connection's buffer
//! is a queue of its own, served by its own leader, and CoDel keeps its
//! state per queue. Shared by the server, one connection whose leader
//! keeps up (a short wait each millisecond) hid the others' standing
//! queues, and their calls were admitted after waits of up to `INTERVAL`
//! (measured at 2x capacity: goodput 0.45x capacity shared, 0.94x per
//! connection).
//!
//! The rule: if no call has been admitted after a short wait (`TARGET`,
//! 5 ms) during the last `INTERVAL` (100 ms), the server has a standing
//! queue, and a call that waited longer than `TARGET` is refused as
//! `resource_exhausted`; otherwise only a call that waited longer than
//! `INTERVAL` is. A burst that drains within the interval is served
//! whole; a standing queue is cut down to a few milliseconds, so the
//! calls that run answer while their callers still wait, and the CPU is
//! not spent on answers nobody reads. Refusing costs a few microseconds,
//! running costs the handler: past capacity, goodput stays near capacity
//! instead of falling to zero. (Facebook also serves the newest request
//! first under overload, "adaptive LIFO"; a connection's requests here
//! keep their order, as a Go peer expects.)
//!
//! Cost per call: a clock read and a relaxed load; a store at most once a
//! millisecond. On with `adaptive_concurrency`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The wait a call may have had while the server has a standing queue.
pub(super) const TARGET: Duration = Duration::from_millis(5);
/// How long without a short wait makes a standing queue; also the wait
/// any call may have had.
pub(super) const INTERVAL: Duration = Duration::from_millis(100);

/// The last time a call was admitted after a short wait.
#[derive(Debug)]
pub(crate) struct QueueShed {
    epoch: Instant,
    /// Nanoseconds since `epoch` of the last call admitted after waiting
    /// at most `TARGET`. Relaxed: a stale value only shifts the verdict
    /// of calls right at the edge of the interval.
    last_short: AtomicU64,
}

impl QueueShed {
    pub(crate) fn new() -> QueueShed {
        QueueShed {
            epoch: Instant::now(),
            last_short: AtomicU64::new(0),
        }
    }

    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether a call received at `received` may still run at `now`;
    /// `Err` with how long it waited and the bound it passed.
    pub(super) fn check(
        &self,
        received: Instant,
        now: Instant,
    ) -> Result<(), (Duration, Duration)> {
        let waited = now.saturating_duration_since(received);
        let now_ns = self.nanos(now);
        let last = self.last_short.load(Ordering::Relaxed);
        if waited <= TARGET {
            // One store a millisecond at most: the cache line is shared by
            // every connection's thread.
            if now_ns.saturating_sub(last) > 1_000_000 {
                self.last_short.store(now_ns, Ordering::Relaxed);
            }
            return Ok(());
        }
        let standing = now_ns.saturating_sub(last) > INTERVAL.as_nanos() as u64;
        let bound = if standing { TARGET } else { INTERVAL };
        if waited > bound {
            Err((waited, bound))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_served_and_a_standing_queue_is_cut_short() {
        let q = QueueShed::new();
        let t0 = q.epoch + Duration::from_secs(1);
        let ms = Duration::from_millis;
        // A short wait: the queue was (nearly) empty.
        assert!(q.check(t0, t0 + ms(1)).is_ok());
        // A burst: waits up to the interval pass while it is recent.
        assert!(q.check(t0, t0 + ms(50)).is_ok());
        assert!(q.check(t0 + ms(10), t0 + ms(60)).is_ok());
        // With no short wait for an interval, over TARGET is refused.
        assert_eq!(
            q.check(t0 + ms(100), t0 + ms(110)),
            Err((ms(10), TARGET)),
            "a standing queue"
        );
        assert!(
            q.check(t0 + ms(106), t0 + ms(110)).is_ok(),
            "short waits pass"
        );
        // That short wait ended the standing queue...
        assert!(q.check(t0 + ms(100), t0 + ms(130)).is_ok());
        // ... but no call may have waited more than the interval.
        assert_eq!(
            q.check(t0, t0 + ms(150)),
            Err((ms(150), INTERVAL)),
            "a wait over the interval"
        );
    }
}
