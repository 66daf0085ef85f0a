//! [`Slot`]: one instance as an XClient sees it (its address, cached
//! connection, dial in progress, calls in flight, health, drain and
//! overload state),
//! and [`InflightGuard`], which counts a call in flight on it.
//!
//! The pool (`pool.rs`) decides eviction and probing; a slot only keeps
//! the state and dials when a caller needs a connection. It may not
//! import from the rest of the XClient.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use super::dial::{timeout_at, Dial, DialGuard, Outcome};
use super::overload::Overload;
use super::Shared;
use crate::client::Client;
use crate::error::{Error, TimeoutStage};
use crate::wire::Address;

/// One instance as this client sees it.
pub(in crate::xclient) struct Slot {
    /// Where the instance is, parsed once when the slot is made.
    pub(in crate::xclient) address: Address,
    /// `address` as text (`PROTOCOL@ADDR`), made once: errors and logs
    /// name the instance by it.
    pub(in crate::xclient) addr: String,
    /// The cached connection. Held only briefly (never across a dial), so
    /// a caller with a live connection never waits for a dial.
    pub(super) conn: RwLock<Option<Client>>,
    /// The dial in progress, if any: callers of the same instance wait for
    /// one dial instead of each dialling, each until its own deadline at
    /// most (see [`Dial`]).
    pub(super) dialling: Mutex<Option<Arc<Dial>>>,
    inflight: AtomicUsize,
    pub(super) health: Mutex<Health>,
    /// `health.dead`, readable without the lock: every call checks it, and
    /// 64 callers taking one mutex per call park each other.
    pub(super) dead: AtomicBool,
    /// The instance sent its drain notice (or refused a call as
    /// `unavailable`): it is going away, not failing. Selection avoids it
    /// until `drain_until`, without evicting it; a call that finds it gone
    /// is sent elsewhere, uncounted. A successful dial clears it.
    draining: AtomicBool,
    drain_until: Mutex<Instant>,
    /// The instance refused calls as over a limit (`resource_exhausted`):
    /// selection avoids it for a while, without evicting it (see
    /// `pool/overload.rs`).
    overload: Overload,
    /// The instance answered a call (a reply, even an error one) at least
    /// once: it speaks our protocol (see `pool/refusal.rs`).
    pub(super) answered: AtomicBool,
    /// When the last dial of the instance began (a caller's or the
    /// prober's): a refused handshake fails soon after it.
    pub(super) dialled_at: Mutex<Instant>,
    /// The refused handshake was logged at warn (once per instance).
    pub(super) warned_incompatible: AtomicBool,
}

pub(super) struct Health {
    pub(super) dead: bool,
    pub(super) retry_at: Instant,
    /// The eviction back-off, or while `incompatible` the incompatible one.
    pub(super) backoff: Duration,
    /// Out of selection (or back on trial) because it refused the
    /// handshake (see `pool/refusal.rs`): the prober re-admits it without
    /// dialling. Cleared by an answer or an ordinary eviction.
    pub(super) incompatible: bool,
}

impl Slot {
    pub(super) fn new(address: Address) -> Slot {
        Slot {
            addr: address.to_string(),
            address,
            conn: RwLock::new(None),
            dialling: Mutex::new(None),
            inflight: AtomicUsize::new(0),
            dead: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            drain_until: Mutex::new(Instant::now()),
            overload: Overload::new(),
            answered: AtomicBool::new(false),
            dialled_at: Mutex::new(Instant::now()),
            warned_incompatible: AtomicBool::new(false),
            health: Mutex::new(Health {
                dead: false,
                retry_at: Instant::now(),
                backoff: Duration::ZERO,
                incompatible: false,
            }),
        }
    }

    /// The cached connection, or a new one in place of a missing or broken
    /// one, dialled within `deadline` if there is one.
    ///
    /// One caller dials (the leader); others wanting the same instance
    /// meanwhile wait for its outcome, each at most until its own deadline
    /// ([`TimeoutStage::PoolWait`]). No lock is held across the dial.
    ///
    /// `Err((e, cut_short))`: `cut_short` says the dial or the wait failed
    /// only because the caller's deadline was shorter than the connect
    /// timeout, which says nothing about the instance. A timeout `e` has
    /// its method and timeout left for [`Pool::connect`] to fill in.
    pub(super) fn client(
        &self,
        shared: &Shared,
        deadline: Option<Instant>,
    ) -> std::result::Result<Client, (Error, bool)> {
        loop {
            // The common case: a live connection, shared under a read lock.
            if let Some(c) = self.live() {
                return Ok(c);
            }
            let (dial, lead) = {
                let mut dialling = self.dialling.lock();
                // Re-checked under `dialling`: a leader installs its
                // connection before it clears `dialling`.
                if let Some(c) = self.live() {
                    return Ok(c);
                }
                match &*dialling {
                    Some(d) => (d.clone(), false),
                    None => {
                        let d = Arc::new(Dial::default());
                        *dialling = Some(d.clone());
                        (d, true)
                    }
                }
            };
            if lead {
                return self.lead_dial(shared, deadline, &dial);
            }
            match dial.wait(deadline) {
                None => return Err((timeout_at(&self.addr, TimeoutStage::PoolWait), true)),
                Some(Outcome::Dialled(c)) => return Ok(c),
                // The leader's own deadline cut its dial short: ours may
                // be later, so dial (or wait for another leader) again.
                Some(Outcome::CutShort) => continue,
                Some(Outcome::Failed(e)) => return Err((e.copy(), false)),
            }
        }
    }

    /// The cached connection if it is alive.
    fn live(&self) -> Option<Client> {
        self.conn.read().as_ref().filter(|c| c.is_alive()).cloned()
    }

    /// Dials as the leader of `dial`, caches a success, and tells the
    /// waiters. Invariant: `dialling` is cleared and the waiters told even
    /// if the dial unwinds (see [`DialGuard`]), so no waiter waits on a
    /// dial that will not end.
    fn lead_dial(
        &self,
        shared: &Shared,
        deadline: Option<Instant>,
        dial: &Arc<Dial>,
    ) -> std::result::Result<Client, (Error, bool)> {
        let mut guard = DialGuard {
            slot: self,
            dial,
            outcome: Outcome::CutShort,
        };
        // A connection the server said it is going away from: the
        // instance is draining, not failing (see `draining`).
        if self.conn.read().as_ref().is_some_and(Client::is_going_away) {
            self.mark_draining();
        }
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        *self.dialled_at.lock() = Instant::now();
        let dialled = if left == Some(Duration::ZERO) {
            Err(timeout_at(&self.addr, TimeoutStage::Dial))
        } else {
            shared.builder.dial_within(&self.addr, deadline)
        };
        match dialled {
            Ok(c) => {
                self.draining.store(false, Ordering::Release);
                // `close` does not wait for dials in progress: one that
                // ends after it is used for its one call, not cached.
                if !shared.is_closed() {
                    *self.conn.write() = Some(c.clone());
                }
                guard.outcome = Outcome::Dialled(c.clone());
                Ok(c)
            }
            Err(e @ Error::Timeout { .. }) => Err((e, true)),
            Err(e) => {
                guard.outcome = Outcome::Failed(e.copy());
                Err((e, false))
            }
        }
    }

    /// Caches a connection the prober dialled, unless a caller has dialled
    /// a good one meanwhile (replacing it would close its calls).
    pub(super) fn install(&self, shared: &Shared, client: Client) {
        let mut conn = self.conn.write();
        if shared.is_closed() {
            return;
        }
        if !conn.as_ref().is_some_and(Client::is_alive) {
            *conn = Some(client);
        }
    }

    pub(in crate::xclient) fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }

    pub(in crate::xclient) fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Whether the instance said it is going away and no dial has
    /// succeeded since.
    pub(in crate::xclient) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Whether selection should pass the instance over: draining, and
    /// within [`DRAIN_HOLD`] of the last sign of it. After that a call may
    /// try it again (a server restarted on the same address answers).
    pub(in crate::xclient) fn avoid_draining(&self) -> bool {
        self.is_draining() && Instant::now() < *self.drain_until.lock()
    }

    /// Notes that the instance is going away (see `draining`).
    pub(in crate::xclient) fn mark_draining(&self) {
        *self.drain_until.lock() = Instant::now() + DRAIN_HOLD;
        if !self.draining.swap(true, Ordering::AcqRel) {
            log::info!(
                "xclient: {} is going away (drain notice); calls go to other instances",
                self.addr
            );
        }
    }

    /// Whether selection should pass the instance over because it refused
    /// a call as over a limit a moment ago (see `pool/overload.rs`).
    pub(in crate::xclient) fn avoid_overloaded(&self) -> bool {
        self.overload.avoid()
    }

    /// Notes a refusal as over a limit; the back-off is `min` doubling up
    /// to `max` while the instance goes on refusing.
    pub(super) fn mark_overloaded(&self, min: Duration, max: Duration) {
        if let Some(window) = self.overload.refused(min, max) {
            log::debug!(
                "xclient: {} is over a limit (resource_exhausted); passed over for {window:?}",
                self.addr
            );
        }
    }

    /// Notes a success: the overload back-off starts again from its minimum.
    pub(super) fn mark_served(&self) {
        self.overload.succeeded();
    }

    /// Closes the cached connection. A dial in progress is not waited for,
    /// and what it dials is not cached; at worst, dialled just before
    /// `closed` was seen, it closes when the slot is dropped.
    pub(super) fn close(&self) {
        let taken = self.conn.write().take();
        if let Some(c) = taken {
            c.close();
        }
    }
}

/// When a probe waiting `backoff` is due. Any back-off is accepted: one
/// past what `Instant` holds (`Duration::MAX`) waits a year, in effect for
/// ever.
pub(super) fn retry_after(backoff: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(backoff)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 86_400))
}

/// How long selection passes over an instance that is going away before a
/// call may try it again.
const DRAIN_HOLD: Duration = Duration::from_secs(1);

/// Counts a call in flight on a slot for as long as it lives. `S` is how
/// it holds the slot: borrowed within a call, an `Arc` in a call that
/// outlives its caller's stack frame.
pub(in crate::xclient) struct InflightGuard<S: Deref<Target = Slot> = Arc<Slot>>(S);

impl<S: Deref<Target = Slot>> InflightGuard<S> {
    pub(in crate::xclient) fn new(slot: S) -> InflightGuard<S> {
        slot.inflight.fetch_add(1, Ordering::Relaxed);
        InflightGuard(slot)
    }
}

impl<S: Deref<Target = Slot>> Drop for InflightGuard<S> {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}
