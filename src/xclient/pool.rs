//! One cached connection per instance, and the health of each instance:
//! eviction on a connection failure, re-admission after a back-off probe
//! (the probe thread), a brief avoidance of an instance over a limit
//! (`pool/overload.rs`), and the view of the latest list (its slots, with
//! instances whose address does not parse left out).
//!
//! Each instance's own state is in `pool/slot.rs`, the shared dial in
//! `pool/dial.rs`. The pool knows nothing of fail modes or selection.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Mutex, RwLock};

mod dial;
mod metrics;
mod overload;
mod refusal;
mod slot;

#[cfg(feature = "metrics")]
pub use metrics::XClientMetrics;
pub(super) use refusal::DEFAULT_INCOMPATIBLE_BACKOFF;
use slot::retry_after;
pub(super) use slot::{InflightGuard, Slot};

use super::discovery::Snapshot;
use crate::client::{Budget, Client, ClientBuilder};
use crate::code::Code;
use crate::error::{Error, Result};
use crate::util::threads::ThreadGroup;
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
    /// The back-off of an instance that refuses calls as over a limit.
    overload_backoff: (Duration, Duration),
    /// The back-off of an instance that refuses the handshake
    /// (`pool/refusal.rs`).
    incompatible_backoff: (Duration, Duration),
    /// Set by `Pool::close`. Shared, not per slot: a caller racing `close`
    /// can build new slots (`Pool::view`) after it drained the old ones,
    /// and must not cache what it dials in them either.
    closed: AtomicBool,
    /// Evictions and failovers, for the metrics.
    events: metrics::Events,
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
    view: RwLock<Option<View>>,
    /// Addresses (as listed) of the instances left out of the current view
    /// because they do not parse, so that each is logged once while it
    /// stays listed. Written only under `view`'s write lock; bounded by
    /// the list's length.
    refused: Mutex<HashSet<String>>,
    prober: Mutex<Option<Prober>>,
}

/// The slots built for one version of the discovery's list.
struct View {
    version: u64,
    /// How many instances the discovery listed, refused ones included.
    listed: usize,
    /// The list without the instances whose address does not parse, or
    /// `None` if there were none (the discovery's list is used as is: no
    /// copy, and no extra work per call).
    usable: Option<Snapshot>,
    /// An instance's address and why it does not parse, when every listed
    /// instance was refused: calls fail with it rather than "no servers".
    all_refused: Option<(String, String)>,
    /// Index for index with `usable` (or the discovery's list).
    slots: Slots,
}

impl View {
    /// Whether the view was built for `snapshot`. The length too: a
    /// discovery that breaks the version contract must not make a call
    /// index past the slots.
    fn is_for(&self, snapshot: &Snapshot) -> bool {
        self.version == snapshot.version && self.listed == snapshot.instances.len()
    }

    /// The list to select from and its slots.
    fn apply(&self, snapshot: Snapshot) -> Result<(Snapshot, Slots)> {
        if let Some((addr, reason)) = &self.all_refused {
            return Err(Error::InvalidAddress {
                addr: addr.clone(),
                reason: reason.clone(),
            });
        }
        let snapshot = match &self.usable {
            Some(usable) => usable.clone(),
            None => snapshot,
        };
        Ok((snapshot, self.slots.clone()))
    }
}

impl Pool {
    /// `backoff` is the eviction back-off, `overload` the overload one,
    /// `incompatible` the one of an instance that refuses the handshake
    /// (each `(min, max)`).
    pub(super) fn new(
        builder: ClientBuilder,
        backoff: (Duration, Duration),
        overload: (Duration, Duration),
        incompatible: (Duration, Duration),
    ) -> Pool {
        let incompatible_min = incompatible.0.max(Duration::from_millis(1));
        let min_backoff = backoff.0.max(Duration::from_millis(1));
        Pool {
            shared: Arc::new(Shared {
                builder,
                slots: Mutex::new(HashMap::new()),
                min_backoff,
                max_backoff: backoff.1.max(min_backoff),
                overload_backoff: (overload.0, overload.1.max(overload.0)),
                incompatible_backoff: (incompatible_min, incompatible.1.max(incompatible_min)),
                closed: AtomicBool::new(false),
                events: Default::default(),
            }),
            view: RwLock::new(None),
            refused: Mutex::new(HashSet::new()),
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

    /// The list to select from and the slot of each of its instances,
    /// index for index: `snapshot` itself unless some of its instances
    /// have an address that does not parse, which are left out (and
    /// logged once). Instances that left the list lose their slot; their
    /// connection closes when the last call using it ends.
    ///
    /// Every call comes here: for a version seen before it takes a read
    /// lock and clones two `Arc`s, nothing more.
    pub(super) fn view(&self, snapshot: Snapshot) -> Result<(Snapshot, Slots)> {
        if let Some(view) = &*self.view.read() {
            if view.is_for(&snapshot) {
                return view.apply(snapshot);
            }
        }
        let mut view = self.view.write();
        if let Some(view) = &*view {
            if view.is_for(&snapshot) {
                return view.apply(snapshot);
            }
        }
        let built = self.build_view(&snapshot);
        let got = built.apply(snapshot);
        *view = Some(built);
        got
    }

    /// The slots for a new version of the list (under `view`'s write lock).
    fn build_view(&self, snapshot: &Snapshot) -> View {
        let mut all = self.shared.slots.lock();
        let mut refused = self.refused.lock();
        let n = snapshot.instances.len();
        let mut fresh = Vec::with_capacity(n);
        let mut kept = Vec::with_capacity(n);
        let mut refused_now = HashSet::new();
        let mut all_refused = None;
        for (k, inst) in snapshot.instances.iter().enumerate() {
            let slot = match all.get(&inst.addr) {
                Some(slot) => slot.clone(),
                None => match inst.address() {
                    Ok(address) => {
                        let slot = Arc::new(Slot::new(address));
                        all.insert(inst.addr.clone(), slot.clone());
                        slot
                    }
                    Err(e) => {
                        if !refused.contains(&inst.addr) {
                            log::warn!("xclient: instance left out of selection: {e}");
                        }
                        if let Error::InvalidAddress { addr, reason } = e {
                            all_refused.get_or_insert((addr, reason));
                        }
                        refused_now.insert(inst.addr.clone());
                        continue;
                    }
                },
            };
            fresh.push(slot);
            kept.push(k);
        }
        *refused = refused_now;
        let listed: HashSet<&str> = snapshot.instances.iter().map(|i| i.addr.as_str()).collect();
        all.retain(|addr, _| listed.contains(addr.as_str()));
        let usable = (kept.len() < n).then(|| {
            let instances: Vec<_> = kept
                .iter()
                .map(|&k| snapshot.instances[k].clone())
                .collect();
            Snapshot::new(snapshot.version, instances)
        });
        View {
            version: snapshot.version,
            listed: n,
            usable,
            all_refused: if fresh.is_empty() { all_refused } else { None },
            slots: fresh.into(),
        }
    }

    /// Takes note of how a call on `slot` ended: a connection failure
    /// evicts the instance, a refusal as over a limit has it avoided for a
    /// while, a success re-admits it and resets that back-off.
    pub(super) fn report<R>(&self, slot: &Slot, result: &Result<R>) {
        match result {
            Ok(_) => {
                self.note_answered(slot);
                self.revive(slot);
                slot.mark_served();
            }
            Err(e) => self.report_error(slot, e),
        }
    }

    /// Like [`report`](Pool::report) for a failure.
    pub(super) fn report_error(&self, slot: &Slot, e: &Error) {
        match e {
            e if is_connection_failure(e) => {
                if self.refused_handshake(slot, e) {
                    self.mark_incompatible(slot, e);
                } else {
                    self.evict(slot, e);
                }
            }
            // A reply, even an error one, means the instance is there.
            Error::Remote { .. } => {
                self.note_answered(slot);
                self.revive(slot);
                match e.remote_code() {
                    Some(Code::ResourceExhausted) => {
                        let (min, max) = self.shared.overload_backoff;
                        slot.mark_overloaded(min, max);
                    }
                    // Going away: `plan::going_away` has noted it.
                    // Expired there: no sign of room either way.
                    Some(Code::Unavailable | Code::DeadlineExceeded) => {}
                    // The handler ran (its own error): there was room.
                    _ => slot.mark_served(),
                }
            }
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
            // Reached, or answered once: probed by dialling again.
            h.incompatible = false;
            h.backoff = self.shared.min_backoff;
            h.retry_at = retry_after(h.backoff);
        }
        self.shared.events.evicted();
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

    /// Evictions and failovers, counted for the metrics.
    pub(super) fn events(&self) -> &metrics::Events {
        &self.shared.events
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
            if !slot.is_dead() || refusal::readmit_if_incompatible(slot) {
                continue;
            }
            *slot.dialled_at.lock() = Instant::now();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xclient::Instance;

    fn snap(version: u64, addrs: &[&str]) -> Snapshot {
        Snapshot::new(
            version,
            addrs.iter().map(|a| Instance::new(*a)).collect::<Vec<_>>(),
        )
    }

    /// A list whose addresses all parse is selected from as the discovery
    /// gave it (no copy per call); one that does not parse is left out,
    /// remembered (so it is logged once) while listed, and forgotten after.
    #[test]
    fn a_view_leaves_out_what_does_not_parse_and_copies_nothing_else() {
        let zero = (Duration::ZERO, Duration::ZERO);
        let pool = Pool::new(ClientBuilder::default(), zero, zero, zero);
        let good = snap(1, &["127.0.0.1:1", "tcp@127.0.0.1:2"]);
        for _ in 0..2 {
            let (s, slots) = pool.view(good.clone()).unwrap();
            assert!(Arc::ptr_eq(&s.instances, &good.instances));
            let addrs: Vec<&str> = slots.iter().map(|s| s.addr.as_str()).collect();
            assert_eq!(addrs, ["tcp@127.0.0.1:1", "tcp@127.0.0.1:2"]);
        }

        let mixed = snap(2, &["127.0.0.1:1", "nowhere", "tcp@127.0.0.1:2"]);
        for _ in 0..2 {
            let (s, slots) = pool.view(mixed.clone()).unwrap();
            let listed: Vec<&str> = s.instances.iter().map(|i| i.addr.as_str()).collect();
            assert_eq!(listed, ["127.0.0.1:1", "tcp@127.0.0.1:2"]);
            assert_eq!((s.version, slots.len()), (2, 2));
            assert_eq!(slots[1].address, "tcp@127.0.0.1:2");
        }
        assert!(pool.refused.lock().contains("nowhere"));
        // Still listed at the next version: still remembered, not logged again.
        let again = snap(3, &["nowhere", "tcp@127.0.0.1:2"]);
        assert_eq!(pool.view(again).unwrap().1.len(), 1);
        assert!(pool.refused.lock().contains("nowhere"));

        match pool.view(snap(4, &["nowhere", "udp@1.2.3.4:5"])) {
            Err(Error::InvalidAddress { addr, .. }) => assert_eq!(addr, "nowhere"),
            other => panic!("{:?}", other.map(|(s, _)| s)),
        }
        pool.view(good).unwrap();
        assert!(pool.refused.lock().is_empty());
    }
}
