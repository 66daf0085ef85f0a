//! Instances that refuse the handshake: a server this client cannot talk
//! to (a Go GeeRPC server that speaks only gob, or checks the other magic
//! number; an HTTP server on the port) accepts the TCP connection, reads
//! the Option line, and closes the connection, resets it, or answers with
//! bytes that are no reply. The dial itself succeeds (the Option has no
//! answer in GeeRPC), so an ordinary eviction's probe, a dial, re-admits
//! such an instance at once and the next call is spent finding out again.
//!
//! A geerpc server at its connection limit closes new connections the
//! same way, and is taken for one too until its back-off ends: it is full
//! anyway, and an instance that answered once is never taken for one.
//!
//! So an instance that has never answered a call, and whose connection
//! fails that way within [`REFUSAL_WINDOW`] of its dial, is marked
//! incompatible: out of selection, not probed by dialling, and tried again
//! by a real call once its back-off has passed (the incompatible back-off,
//! 1 min doubling up to 10 min by default, see
//! [`XClientBuilder::incompatible_backoff`](crate::xclient::XClientBuilder::incompatible_backoff)).
//! A call it answers ends it. Logged at warn once per instance, with the
//! reason; each later refusal at debug.
//!
//! The state is the slot's (`Health::incompatible`, `Slot::answered`,
//! `Slot::dialled_at`); the pool's prober re-admits. This file only
//! decides and marks.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::slot::{retry_after, Slot};
use super::Pool;
use crate::error::Error;
use crate::util::duration::GoDuration;

/// How soon after its dial began a connection must fail for the failure to
/// count as a refused handshake. A refusing server closes within a round
/// trip; the margin is for a loaded machine. Later failures (a server that
/// dies in the middle of a long first call) are ordinary evictions.
pub(super) const REFUSAL_WINDOW: Duration = Duration::from_secs(2);

/// The default incompatible back-off: first wait, longest wait.
pub(in crate::xclient) const DEFAULT_INCOMPATIBLE_BACKOFF: (Duration, Duration) =
    (Duration::from_secs(60), Duration::from_secs(600));

/// Whether `e` is how a refused handshake shows: the connection closed or
/// reset, or bytes that are not a reply. A refused or timed-out connect,
/// or a refused HTTP `CONNECT`, is not: those fail the dial itself, which
/// the ordinary eviction's probe sees.
fn is_refusal(e: &Error) -> bool {
    matches!(
        e,
        Error::ConnectionClosed { .. }
            | Error::NotSent { .. }
            | Error::Protocol(_)
            | Error::Io { .. }
    )
}

impl Pool {
    /// Whether a connection failure `e` on `slot` is a refused handshake
    /// (see the module's comment): the instance never answered a call, and
    /// its last dial began within [`REFUSAL_WINDOW`].
    pub(super) fn refused_handshake(&self, slot: &Slot, e: &Error) -> bool {
        is_refusal(e)
            && !slot.answered.load(Ordering::Acquire)
            && slot.dialled_at.lock().elapsed() <= REFUSAL_WINDOW
    }

    /// Takes `slot` out of selection as incompatible: the incompatible
    /// back-off's first wait, or twice the last one (up to its longest)
    /// when it refused again after one.
    pub(super) fn mark_incompatible(&self, slot: &Slot, e: &Error) {
        let (min, max) = self.shared.incompatible_backoff;
        let backoff = {
            let mut h = slot.health.lock();
            if h.dead {
                return;
            }
            h.backoff = if h.incompatible {
                h.backoff.saturating_mul(2).clamp(min, max)
            } else {
                min
            };
            h.incompatible = true;
            h.dead = true;
            slot.dead.store(true, Ordering::Release);
            h.retry_at = retry_after(h.backoff);
            h.backoff
        };
        // Broken anyway; the call that tries it again dials afresh.
        slot.close();
        self.shared.events.evicted();
        if !slot.warned_incompatible.swap(true, Ordering::AcqRel) {
            log::warn!(
                "xclient: {} refused the handshake right after connect ({e}): a server this \
                 client cannot talk to (a Go GeeRPC server that speaks only gob or checks \
                 another magic number? or a server at its connection limit); out of selection, tried again in {}, then up to \
                 every {}",
                slot.addr,
                GoDuration(backoff),
                GoDuration(max)
            );
        } else {
            log::debug!(
                "xclient: {} refused the handshake again ({e}); tried again in {}",
                slot.addr,
                GoDuration(backoff)
            );
        }
        self.wake_prober();
    }

    /// Notes that `slot` answered a call (a reply, even an error one): from
    /// now on its failures are ordinary evictions, and an incompatible mark
    /// ends. One atomic load on every answered call after the first.
    pub(super) fn note_answered(&self, slot: &Slot) {
        if slot.answered.load(Ordering::Relaxed) {
            return;
        }
        slot.answered.store(true, Ordering::Release);
        let mut h = slot.health.lock();
        if h.incompatible {
            h.incompatible = false;
            h.backoff = Duration::ZERO;
            drop(h);
            log::info!("xclient: {} answers now; no longer incompatible", slot.addr);
        }
    }
}

/// What the prober does with an incompatible slot whose back-off is over:
/// it re-admits it without dialling (a dial proves nothing), so that the
/// next call picked for it tries it. Returns whether `slot` was one.
pub(super) fn readmit_if_incompatible(slot: &Slot) -> bool {
    let mut h = slot.health.lock();
    if !h.incompatible || !h.dead {
        return false;
    }
    h.dead = false;
    slot.dead.store(false, Ordering::Release);
    drop(h);
    log::debug!(
        "xclient: {}: incompatible back-off over; the next call picked for it tries it",
        slot.addr
    );
    true
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::client::ClientBuilder;

    /// The back-off doubles with each refusal after a trial, up to its
    /// longest; a refused connect is an ordinary eviction; an answer ends
    /// the mark, and a later failure is ordinary.
    #[test]
    fn the_backoff_doubles_up_to_its_longest_and_an_answer_ends_it() {
        let secs = Duration::from_secs;
        let ms = Duration::from_millis(1);
        let pool = Pool::new(
            ClientBuilder::default(),
            (ms, ms),
            (Duration::ZERO, Duration::ZERO),
            (secs(60), secs(150)),
        );
        let slot = Slot::new("tcp@127.0.0.1:1".parse().unwrap());
        let closed = Error::ConnectionClosed {
            addr: slot.addr.clone(),
            reason: "EOF".into(),
        };
        let refused = Error::Connect {
            addr: slot.addr.clone(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        assert!(!pool.refused_handshake(&slot, &refused));
        assert!(pool.refused_handshake(&slot, &closed));
        pool.report_error(&slot, &closed);
        assert!(slot.is_dead());
        assert_eq!(slot.health.lock().backoff, secs(60));
        assert!(slot.warned_incompatible.load(Ordering::Acquire));
        for want in [120, 150, 150] {
            assert!(readmit_if_incompatible(&slot));
            assert!(!slot.is_dead());
            *slot.dialled_at.lock() = Instant::now();
            pool.report_error(&slot, &closed);
            assert!(slot.is_dead());
            assert_eq!(slot.health.lock().backoff, secs(want));
        }
        // Past the window after its dial: not a refused handshake.
        *slot.dialled_at.lock() = Instant::now() - REFUSAL_WINDOW - ms;
        assert!(!pool.refused_handshake(&slot, &closed));
        // It answers: the mark ends, and failures are ordinary from now on.
        assert!(readmit_if_incompatible(&slot));
        pool.note_answered(&slot);
        assert!(!slot.health.lock().incompatible);
        *slot.dialled_at.lock() = Instant::now();
        assert!(!pool.refused_handshake(&slot, &closed));
        assert!(!readmit_if_incompatible(&slot));
        pool.close();
    }
}
