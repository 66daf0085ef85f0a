//! The server's bounds on what a peer can make it hold: connections per
//! server, bytes of replies queued per connection (backpressure), the time
//! a handshake may take, and the idle time of a connection.
//!
//! None of them costs the call path more than two relaxed loads: the
//! connection count is taken at accept, the queue is looked at by the
//! leader before it reads a request, and the handshake deadline and idle
//! time are checked by the monitor on its tick.
//!
//! Bounded this way: connections per server (`max_connections`), replies
//! queued per connection (`max_write_queue`: past it the connection stops
//! reading), time a peer may leave its replies unread (`write_timeout`),
//! the whole handshake (`handshake_timeout`, one deadline), idle time
//! (`idle_timeout`, off by default), and threads for slow calls
//! (`max_concurrent_calls`, over every listener of a server).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::conn::{self, Conn};
mod adaptive;
pub(crate) mod concurrency;
mod queue;
pub(crate) use queue::QueueShed;

use super::{Running, ServerBuilder, Shared};
use crate::util::duration::GoDuration;
use crate::util::handoff::Look;

/// The bounds' knobs (the others, `handshake_timeout`, `write_timeout` and
/// `max_concurrent_calls`, predate them and stay with the rest).
impl ServerBuilder {
    /// How many bytes of replies a connection may have queued for writing
    /// before it stops reading requests (default 4 MiB). Past it the
    /// connection reads nothing until its peer has read enough replies to
    /// bring the queue below the cap again, so a peer that pipelines
    /// requests and does not read the replies is slowed by TCP flow control
    /// instead of growing the server's memory; calls already running still
    /// queue their replies, so the queue can pass the cap by those. See
    /// [`write_timeout`](Self::write_timeout) for a peer that never reads.
    pub fn max_write_queue(mut self, bytes: usize) -> Self {
        self.config.max_write_queue = bytes.max(1);
        self
    }

    /// How many connections the server holds at once, over all its
    /// listeners (default 10,000). Past it a new connection is accepted and
    /// closed at once, and a warning is logged once until connections are
    /// accepted again. Each connection costs a socket and a thread.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.config.max_connections = n.max(1);
        self
    }

    /// Closes a connection that has had no call in flight and nothing left
    /// to write for this long (default `None`: idle connections stay open,
    /// as Go's server keeps them; TCP keepalive still ends those whose peer
    /// vanished). Checked on the monitor's tick, so it acts within about
    /// 20 ms of the deadline.
    pub fn idle_timeout(mut self, t: Option<Duration>) -> Self {
        self.config.idle_timeout = t;
        self
    }
}

/// One of the server's `max_connections` slots, given back when the
/// connection (and with it its socket) is dropped, whichever listener
/// accepted it.
pub(crate) struct ConnSlot {
    shared: Arc<Shared>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.shared.open_conns.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Takes a connection slot, or says why not (logged once per episode of
/// refusals, not per connection).
pub(super) fn take_slot(run: &Running) -> Option<ConnSlot> {
    let shared = &run.server.shared;
    let max = shared.config.max_connections;
    let open = shared.open_conns.fetch_add(1, Ordering::AcqRel);
    if open >= max {
        shared.open_conns.fetch_sub(1, Ordering::AcqRel);
        if !shared.refusing.swap(true, Ordering::Relaxed) {
            log::warn!(
                "rpc server {}: {open} connections open, the most allowed \
                 (max_connections): refusing new ones until some close",
                run.addr
            );
        }
        return None;
    }
    if shared.refusing.load(Ordering::Relaxed) && shared.refusing.swap(false, Ordering::Relaxed) {
        log::info!(
            "rpc server {}: accepting connections again ({open} open)",
            run.addr
        );
    }
    Some(ConnSlot {
        shared: shared.clone(),
    })
}

/// Calls in flight across every listener of the server: what
/// `max_concurrent_calls` bounds.
pub(super) fn calls_in_flight(shared: &Shared) -> usize {
    let mut runs = shared.runnings.lock();
    runs.retain(|r| r.strong_count() > 0);
    runs.iter()
        .filter_map(|r| r.upgrade())
        .map(|r| r.inflight.load(Ordering::Acquire))
        .sum()
}

/// Called by the leader before it reads a request while its connection's
/// write queue is at the cap: reads no more until the queue drains below it
/// (TCP flow control then slows the peer). A queue that does not get below
/// the cap within the write timeout means a peer that does not read its
/// replies: the connection is closed. Returns whether to go on reading.
pub(super) fn wait_for_room(run: &Running, c: &Arc<Conn>) -> bool {
    // Someone must be writing while we wait: either a flusher holds the
    // writer already (then `flush_nowait` returns at once), or the socket
    // took what it could and a writer thread sends the rest.
    match c.writer.flush_nowait() {
        // All written (room), or another thread is writing: either way
        // `wait_room` below tells.
        Ok(true) => {}
        Ok(false) => {
            if !conn::start_writer(run, c) {
                return false;
            }
        }
        Err(e) => {
            c.close_after_write_error(&e);
            return false;
        }
    }
    let timeout = run.server.config().write_timeout;
    log::debug!(
        "rpc server {}: {} has {} bytes of replies queued (max_write_queue {}): \
         reading paused until it reads them",
        run.addr,
        c.peer,
        c.writer.queued(),
        c.writer.queue_cap()
    );
    if c.writer.wait_room(Some(Instant::now() + timeout)) {
        return true;
    }
    if c.close() {
        log::warn!(
            "rpc server {}: {} did not read its replies for {} (the write timeout; \
             {} bytes queued, max_write_queue {}); closing",
            run.addr,
            c.peer,
            GoDuration(timeout),
            c.writer.queued(),
            c.writer.queue_cap()
        );
    }
    false
}

/// Per-connection state the monitor keeps for the time bounds.
#[derive(Default)]
pub(crate) struct Watch {
    /// Handlers of this connection still running on a thread that lost
    /// the leader's role. The monitor adds one when it takes a role, the
    /// old leader takes it back when its handler returns; the two may come
    /// in either order, so the count can wrap for a moment (it is only
    /// compared with zero, and wraps back).
    pub(super) away: AtomicUsize,
    /// When the connection was last seen busy, in nanoseconds since it
    /// was accepted (monitor only).
    busy_at: AtomicU64,
}

/// Why the monitor closes a connection.
pub(super) enum Expired {
    Handshake,
    Idle(Duration),
}

/// The monitor's look at one connection's time bounds, once a tick, given
/// what `Busy::look` found. `Some`: close it.
pub(super) fn check(run: &Running, c: &Conn, look: Look, now: Instant) -> Option<Expired> {
    let cfg = run.server.config();
    let age = now.saturating_duration_since(c.accepted);
    if c.proto.get().is_none() {
        // One deadline for the whole handshake (HTTP head and Option), from
        // accept: a per-read timeout would let a peer drip a byte at a time.
        return (age >= cfg.handshake_timeout).then_some(Expired::Handshake);
    }
    let idle_after = cfg.idle_timeout?;
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let quiet =
        look == Look::Idle && c.watch.away.load(Ordering::Acquire) == 0 && c.writer.queued() == 0;
    if !quiet {
        c.watch.busy_at.store(nanos(age), Ordering::Relaxed);
        return None;
    }
    let busy_at = Duration::from_nanos(c.watch.busy_at.load(Ordering::Relaxed));
    (age.saturating_sub(busy_at) >= idle_after).then_some(Expired::Idle(idle_after))
}

/// Closes a connection the monitor found past a time bound, saying why once.
pub(super) fn expire(run: &Running, c: &Conn, why: Expired) {
    if !c.close() {
        return;
    }
    match why {
        Expired::Handshake => log::warn!(
            "rpc server {}: connection from {}: {}; closing",
            run.addr,
            c.peer,
            conn::handshake_timeout_error(run, "handshake")
        ),
        Expired::Idle(t) => log::debug!(
            "rpc server {}: {} idle for {} (the idle timeout); closing",
            run.addr,
            c.peer,
            GoDuration(t)
        ),
    }
}
