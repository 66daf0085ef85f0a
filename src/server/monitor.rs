//! The per-server monitor: hands a connection's reading role on when its
//! leader is stuck in a handler, and answers calls whose handle timeout ran
//! out, at the deadline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::conn::Conn;
use super::Running;
use crate::codec::Header;
use crate::duration::GoDuration;

/// A call that must be answered by `at`.
pub(crate) struct Deadline {
    pub at: Instant,
    pub timeout: Duration,
    pub conn: Arc<Conn>,
    pub seq: u64,
    pub service_method: String,
    /// Set by whoever answers first: the handler or the monitor.
    pub answered: Arc<AtomicBool>,
}

/// Longest sleep of an idle monitor (no handler running, no deadline): a
/// handler that starts then is handed off within this plus one tick.
const IDLE_TICK: Duration = Duration::from_millis(20);

/// Tells the monitor to stop; its wait is a condvar, not a channel, because a
/// channel's timed receive spins first, which on every tick costs the server
/// CPU it needs for calls.
#[derive(Default)]
pub(super) struct Stop {
    stopped: Mutex<bool>,
    cv: Condvar,
}

impl Stop {
    pub(super) fn stop(&self) {
        *self.stopped.lock() = true;
        self.cv.notify_all();
    }

    /// Sleeps until `until`; true if told to stop.
    fn sleep_until(&self, until: Instant) -> bool {
        let mut stopped = self.stopped.lock();
        while !*stopped {
            if self.cv.wait_until(&mut stopped, until).timed_out() {
                break;
            }
        }
        *stopped
    }
}

pub(super) fn run(run: &Arc<Running>) {
    let tick = run.server.config().steal_after;
    let mut sleep = tick;
    loop {
        let mut until = Instant::now() + sleep;
        if let Some(first) = run.deadlines.lock().iter().map(|d| d.at).min() {
            until = until.min(first);
        }
        if run.monitor_stop.sleep_until(until) {
            return;
        }
        let busy = steal_from_stuck_leaders(run);
        let waiting = expire_deadlines(run);
        // Tick fast only while some handler runs; back off when idle.
        sleep = if busy || waiting {
            tick
        } else {
            (sleep * 2).min(IDLE_TICK.max(tick))
        };
    }
}

/// Returns whether any leader was inside a handler.
fn steal_from_stuck_leaders(run: &Arc<Running>) -> bool {
    let mut stuck = Vec::new();
    let mut busy = false;
    for conn in run.conns.lock().values() {
        let v = conn.busy.load(Ordering::Acquire);
        busy |= v & 1 == 1;
        let before = conn.seen.swap(v, Ordering::Relaxed);
        if v & 1 == 1
            && v == before
            && conn
                .busy
                .compare_exchange(v, v & !1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            stuck.push(conn.clone());
        }
    }
    // The monitor never writes to a socket itself (a peer that does not read
    // would stall it, and with it every hand-off and timeout): the new
    // leader flushes what is batched before it blocks.
    for conn in stuck {
        if let Err(e) = run.spawn_conn_thread(conn.clone(), false) {
            log::error!(
                "rpc server {}: cannot start a reader for {}: {e}; closing it",
                run.addr,
                conn.peer
            );
            conn.close();
            super::conn::finish(run, &conn);
        }
    }
    busy
}

/// Returns whether calls with a deadline are still running.
fn expire_deadlines(run: &Running) -> bool {
    let now = Instant::now();
    let mut due = Vec::new();
    run.deadlines.lock().retain_mut(|d| {
        if d.answered.load(Ordering::Acquire) {
            return false;
        }
        if d.at <= now {
            if !d.answered.swap(true, Ordering::AcqRel) {
                due.push(Deadline {
                    at: d.at,
                    timeout: d.timeout,
                    conn: d.conn.clone(),
                    seq: d.seq,
                    service_method: std::mem::take(&mut d.service_method),
                    answered: d.answered.clone(),
                });
            }
            return false;
        }
        true
    });
    let waiting = !run.deadlines.lock().is_empty();
    for d in due {
        let Some(&(codec, _)) = d.conn.proto.get() else {
            continue;
        };
        let header = Header {
            service_method: d.service_method,
            seq: d.seq,
            error: format!(
                "rpc server: request handle timeout: expect within {}",
                GoDuration(d.timeout)
            ),
        };
        log::debug!("rpc server {}: {}: {}", run.addr, d.conn.peer, header.error);
        if d.conn
            .queue_reply(codec, &header, codec.empty_body())
            .is_ok()
        {
            // Written from a thread of its own, for the reason above; a
            // timeout is rare enough for a thread each.
            let conn = d.conn.clone();
            if let Err(e) = run.threads.spawn("geerpc-timeout", None, move || {
                conn.flush();
            }) {
                log::error!("rpc server {}: cannot send a timeout reply: {e}", run.addr);
            }
        }
    }
    waiting
}
