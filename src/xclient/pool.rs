//! One cached connection per instance, and the health of each instance:
//! eviction on a connection failure, re-admission after a back-off probe.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Mutex, RwLock};

mod dial;

use dial::{timeout_at, Dial, DialGuard, Outcome};

use super::discovery::Snapshot;
use crate::client::{Budget, Client, ClientBuilder};
use crate::error::{Error, Result, TimeoutStage};
use crate::util::threads::ThreadGroup;

/// One instance as this client sees it.
pub(super) struct Slot {
    pub(super) addr: String,
    /// The cached connection. Held only briefly (never across a dial), so
    /// a caller with a live connection never waits for a dial.
    conn: RwLock<Option<Client>>,
    /// The dial in progress, if any: callers of the same instance wait for
    /// one dial instead of each dialling, each until its own deadline at
    /// most (see [`Dial`]).
    dialling: Mutex<Option<Arc<Dial>>>,
    inflight: AtomicUsize,
    health: Mutex<Health>,
    /// `health.dead`, readable without the lock: every call checks it, and
    /// 64 callers taking one mutex per call park each other.
    dead: AtomicBool,
    /// The instance sent its drain notice (or refused a call as
    /// `unavailable`): it is going away, not failing. Selection avoids it
    /// until `drain_until`, without evicting it; a call that finds it gone
    /// is sent elsewhere, uncounted. A successful dial clears it.
    draining: AtomicBool,
    drain_until: Mutex<Instant>,
}

struct Health {
    dead: bool,
    retry_at: Instant,
    backoff: Duration,
}

impl Slot {
    fn new(addr: &str) -> Slot {
        Slot {
            addr: addr.to_string(),
            conn: RwLock::new(None),
            dialling: Mutex::new(None),
            inflight: AtomicUsize::new(0),
            dead: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            drain_until: Mutex::new(Instant::now()),
            health: Mutex::new(Health {
                dead: false,
                retry_at: Instant::now(),
                backoff: Duration::ZERO,
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
    fn client(
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
    fn install(&self, shared: &Shared, client: Client) {
        let mut conn = self.conn.write();
        if shared.is_closed() {
            return;
        }
        if !conn.as_ref().is_some_and(Client::is_alive) {
            *conn = Some(client);
        }
    }

    pub(super) fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }

    pub(super) fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Whether the instance said it is going away and no dial has
    /// succeeded since.
    pub(super) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Whether selection should pass the instance over: draining, and
    /// within [`DRAIN_HOLD`] of the last sign of it. After that a call may
    /// try it again (a server restarted on the same address answers).
    pub(super) fn avoid_draining(&self) -> bool {
        self.is_draining() && Instant::now() < *self.drain_until.lock()
    }

    /// Notes that the instance is going away (see `draining`).
    pub(super) fn mark_draining(&self) {
        *self.drain_until.lock() = Instant::now() + DRAIN_HOLD;
        if !self.draining.swap(true, Ordering::AcqRel) {
            log::info!(
                "xclient: {} is going away (drain notice); calls go to other instances",
                self.addr
            );
        }
    }

    /// Closes the cached connection. A dial in progress is not waited for,
    /// and what it dials is not cached; at worst, dialled just before
    /// `closed` was seen, it closes when the slot is dropped.
    fn close(&self) {
        let taken = self.conn.write().take();
        if let Some(c) = taken {
            c.close();
        }
    }
}

/// When a probe waiting `backoff` is due. Any back-off is accepted: one
/// past what `Instant` holds (`Duration::MAX`) waits a year, in effect for
/// ever.
fn retry_after(backoff: Duration) -> Instant {
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
pub(super) struct InflightGuard<S: Deref<Target = Slot> = Arc<Slot>>(S);

impl<S: Deref<Target = Slot>> InflightGuard<S> {
    pub(super) fn new(slot: S) -> InflightGuard<S> {
        slot.inflight.fetch_add(1, Ordering::Relaxed);
        InflightGuard(slot)
    }
}

impl<S: Deref<Target = Slot>> Drop for InflightGuard<S> {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether an error says the instance (or the way to it) is broken, as
/// opposed to the call being slow or refused by the service.
pub(super) fn is_connection_failure(e: &Error) -> bool {
    matches!(
        e,
        Error::Connect { .. }
            | Error::ConnectTimeout { .. }
            | Error::HttpConnect { .. }
            | Error::ConnectionClosed { .. }
            | Error::NotSent { .. }
            | Error::Protocol(_)
            | Error::Io { .. }
    )
}

/// What the pool and its prober thread share.
struct Shared {
    builder: ClientBuilder,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    min_backoff: Duration,
    max_backoff: Duration,
    /// Set by `Pool::close`. Shared, not per slot: a caller racing `close`
    /// can build new slots (`Pool::view`) after it drained the old ones,
    /// and must not cache what it dials in them either.
    closed: AtomicBool,
}

impl Shared {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

struct Prober {
    /// Dropped to stop the prober.
    stop: Sender<()>,
    wake: Sender<()>,
    threads: ThreadGroup,
}

/// Slots index for index with a snapshot's instances.
pub(super) type Slots = Arc<[Arc<Slot>]>;

/// The slots of the instances in the latest list.
pub(super) struct Pool {
    shared: Arc<Shared>,
    /// The slots in the order of the snapshot they were built for.
    view: RwLock<Option<(u64, Slots)>>,
    prober: Mutex<Option<Prober>>,
}

impl Pool {
    pub(super) fn new(
        builder: ClientBuilder,
        min_backoff: Duration,
        max_backoff: Duration,
    ) -> Pool {
        let min_backoff = min_backoff.max(Duration::from_millis(1));
        Pool {
            shared: Arc::new(Shared {
                builder,
                slots: Mutex::new(HashMap::new()),
                min_backoff,
                max_backoff: max_backoff.max(min_backoff),
                closed: AtomicBool::new(false),
            }),
            view: RwLock::new(None),
            prober: Mutex::new(None),
        }
    }

    /// The connection to `slot` for call `method`, waited for or dialled
    /// within `budget` if need be. A failed dial is reported (the instance
    /// is evicted) unless only the call's deadline cut it short, which is
    /// then an [`Error::Timeout`] naming the call's timeout.
    pub(super) fn connect(&self, slot: &Slot, method: &str, budget: Budget) -> Result<Client> {
        slot.client(&self.shared, budget.deadline)
            .map_err(|(e, cut_short)| match e {
                Error::Timeout { stage, .. } => budget.timed_out(method, &slot.addr, stage),
                e => {
                    // An instance going away refuses dials: not a failure.
                    if !cut_short && !slot.is_draining() {
                        self.report_error(slot, &e);
                    }
                    e
                }
            })
    }

    pub(super) fn check_open(&self) -> Result<()> {
        if self.shared.is_closed() {
            Err(Error::Shutdown("xclient"))
        } else {
            Ok(())
        }
    }

    /// The slots for `snapshot.instances`, index for index. Instances that
    /// left the list lose their slot; their connection closes when the
    /// last call using it ends.
    pub(super) fn view(&self, snapshot: &Snapshot) -> Slots {
        if let Some((v, slots)) = &*self.view.read() {
            if *v == snapshot.version && slots.len() == snapshot.instances.len() {
                return slots.clone();
            }
        }
        let mut view = self.view.write();
        if let Some((v, slots)) = &*view {
            if *v == snapshot.version && slots.len() == snapshot.instances.len() {
                return slots.clone();
            }
        }
        let mut all = self.shared.slots.lock();
        let fresh: Slots = snapshot
            .instances
            .iter()
            .map(|i| {
                all.entry(i.addr.clone())
                    .or_insert_with(|| Arc::new(Slot::new(&i.addr)))
                    .clone()
            })
            .collect();
        all.retain(|addr, _| fresh.iter().any(|s| &s.addr == addr));
        *view = Some((snapshot.version, fresh.clone()));
        fresh
    }

    /// Takes note of how a call on `slot` ended: a connection failure
    /// evicts the instance, a success re-admits it.
    pub(super) fn report<R>(&self, slot: &Slot, result: &Result<R>) {
        match result {
            Ok(_) => self.revive(slot),
            Err(e) => self.report_error(slot, e),
        }
    }

    /// Like [`report`](Pool::report) for a failure.
    pub(super) fn report_error(&self, slot: &Slot, e: &Error) {
        match e {
            e if is_connection_failure(e) => self.evict(slot, e),
            // A reply, even an error one, means the instance is there.
            Error::Remote { .. } => self.revive(slot),
            _ => {}
        }
    }

    fn revive(&self, slot: &Slot) {
        if !slot.is_dead() {
            return;
        }
        let mut h = slot.health.lock();
        if h.dead {
            h.dead = false;
            slot.dead.store(false, Ordering::Release);
            h.backoff = Duration::ZERO;
            log::info!("xclient: {} answers again; back in selection", slot.addr);
        }
    }

    fn evict(&self, slot: &Slot, e: &Error) {
        {
            let mut h = slot.health.lock();
            if h.dead {
                return;
            }
            h.dead = true;
            slot.dead.store(true, Ordering::Release);
            h.backoff = self.shared.min_backoff;
            h.retry_at = retry_after(h.backoff);
        }
        log::warn!(
            "xclient: {} taken out of selection: {e}; probing again in {:?}",
            slot.addr,
            self.shared.min_backoff
        );
        self.wake_prober();
    }

    fn wake_prober(&self) {
        if self.shared.is_closed() {
            return;
        }
        let mut prober = self.prober.lock();
        if prober.is_none() {
            let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
            let (wake_tx, wake_rx) = crossbeam_channel::bounded::<()>(1);
            let threads = ThreadGroup::default();
            let shared = self.shared.clone();
            let spawned = threads.spawn("geerpc-xc-probe", Some(256 * 1024), move || {
                probe_loop(&shared, &stop_rx, &wake_rx)
            });
            if let Err(e) = spawned {
                // Without a prober, evicted instances come back when every
                // instance is out (see `XClient`'s selection fallback).
                log::warn!("xclient: cannot start the probe thread: {e}");
                return;
            }
            *prober = Some(Prober {
                stop: stop_tx,
                wake: wake_tx,
                threads,
            });
        }
        if let Some(p) = &*prober {
            let _ = p.wake.try_send(());
        }
    }

    /// Addresses currently out of selection.
    pub(super) fn evicted(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .shared
            .slots
            .lock()
            .values()
            .filter(|s| s.is_dead())
            .map(|s| s.addr.clone())
            .collect();
        out.sort();
        out
    }

    /// Stops the prober and closes every cached connection.
    pub(super) fn close(&self) {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(p) = self.prober.lock().take() {
            drop(p.stop);
            // A probe in the middle of a dial finishes within the connect
            // timeout; it is not waited for longer.
            let stuck = p
                .threads
                .join_until(Instant::now() + Duration::from_secs(5));
            if stuck > 0 {
                log::warn!("xclient: probe thread still dialling after close");
            }
        }
        let slots: Vec<Arc<Slot>> = self.shared.slots.lock().drain().map(|(_, s)| s).collect();
        for s in slots {
            s.close();
        }
        *self.view.write() = None;
    }
}

/// Re-dials evicted instances once their back-off has passed: a success
/// installs the new connection and re-admits the instance, a failure
/// doubles its back-off.
fn probe_loop(shared: &Shared, stop: &Receiver<()>, wake: &Receiver<()>) {
    loop {
        let now = Instant::now();
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        for slot in shared.slots.lock().values() {
            let h = slot.health.lock();
            if !h.dead {
                continue;
            }
            if h.retry_at <= now {
                due.push(slot.clone());
            } else {
                next = Some(next.map_or(h.retry_at, |n| n.min(h.retry_at)));
            }
        }
        for slot in &due {
            if stop.try_recv() != Err(crossbeam_channel::TryRecvError::Empty) {
                return;
            }
            if !slot.is_dead() {
                continue;
            }
            match shared.builder.dial(&slot.addr) {
                Ok(client) => {
                    slot.install(shared, client);
                    let mut h = slot.health.lock();
                    h.dead = false;
                    slot.dead.store(false, Ordering::Release);
                    h.backoff = Duration::ZERO;
                    drop(h);
                    log::info!(
                        "xclient: probe of {} succeeded; back in selection",
                        slot.addr
                    );
                }
                Err(e) => {
                    let mut h = slot.health.lock();
                    h.backoff = h
                        .backoff
                        .saturating_mul(2)
                        .clamp(shared.min_backoff, shared.max_backoff);
                    h.retry_at = retry_after(h.backoff);
                    log::debug!(
                        "xclient: probe of {} failed: {e}; next in {:?}",
                        slot.addr,
                        h.backoff
                    );
                }
            }
        }
        if !due.is_empty() {
            continue;
        }
        let timeout = match next {
            Some(t) => crossbeam_channel::at(t),
            None => crossbeam_channel::never(),
        };
        crossbeam_channel::select! {
            recv(stop) -> _ => return,
            recv(wake) -> _ => {}
            recv(timeout) -> _ => {}
        }
    }
}
