//! The per-server monitor: hands a connection's reading role on when its
//! leader is stuck in a handler, and answers calls whose handle timeout ran
//! out, at the deadline.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::conn::Conn;
use super::Running;
use crate::code::Code;
use crate::util::duration::GoDuration;
use crate::util::handoff::Look;
use crate::wire::codec::Header;

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
pub(super) struct Stop {
    state: Mutex<StopState>,
    cv: Condvar,
    /// When the monitor plans to wake, in nanoseconds since `epoch`
    /// (u64::MAX while it is awake). A deadline earlier than that wakes it,
    /// and only such a one, so that calls with a handle timeout do not each
    /// cost a wake-up.
    wake_at: AtomicU64,
    epoch: Instant,
}

#[derive(Default)]
struct StopState {
    stopped: bool,
    /// An earlier deadline came while the monitor was awake: its next sleep
    /// ends at once, so the deadline is seen whatever the timing.
    kicked: bool,
}

impl Default for Stop {
    fn default() -> Self {
        Stop {
            state: Mutex::new(StopState::default()),
            cv: Condvar::new(),
            wake_at: AtomicU64::new(u64::MAX),
            epoch: Instant::now(),
        }
    }
}

impl Stop {
    pub(super) fn stop(&self) {
        self.state.lock().stopped = true;
        self.cv.notify_all();
    }

    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Makes sure the monitor looks at the deadlines again by `at`. Call it
    /// after the deadline is in the list.
    pub(super) fn wake_by(&self, at: Instant) {
        if self.nanos(at) < self.wake_at.load(Ordering::Acquire) {
            self.state.lock().kicked = true;
            self.cv.notify_all();
        }
    }

    /// Sleeps until `until`, an earlier deadline, or a stop; true if told
    /// to stop.
    fn sleep_until(&self, until: Instant) -> bool {
        let mut state = self.state.lock();
        if !state.kicked && !state.stopped {
            self.wake_at.store(self.nanos(until), Ordering::Release);
            self.cv.wait_until(&mut state, until);
        }
        self.wake_at.store(u64::MAX, Ordering::Release);
        state.kicked = false;
        state.stopped
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
        // The debug page's per-second sample (loads only; see debug/window.rs).
        #[cfg(feature = "debug-page")]
        super::debug::tick(&run.server.shared);
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
    // Each hand-off lets one more call start on that connection.
    // Counted over every listener of the server, as documented.
    let in_flight = super::limits::calls_in_flight(&run.server.shared);
    let mut room = run
        .server
        .config()
        .max_concurrent_calls
        .saturating_sub(in_flight);
    let mut capped = false;
    let now = Instant::now();
    let mut expired = Vec::new();
    for conn in run.conns.lock().values() {
        let look = conn.busy.look(room > 0);
        match look {
            Look::Idle | Look::Moved => {}
            Look::Working => busy = true,
            Look::Stuck => (busy, capped) = (true, true),
            Look::Taken => {
                busy = true;
                conn.watch.away.fetch_add(1, Ordering::AcqRel);
                stuck.push(conn.clone());
                room -= 1;
            }
        }
        if let Some(why) = super::limits::check(run, conn, look, now) {
            expired.push((conn.clone(), why));
        }
    }
    // Closed outside the lock: a close is a syscall, and logs.
    for (conn, why) in expired {
        super::limits::expire(run, &conn, why);
    }
    if capped && !run.capped.swap(true, Ordering::Relaxed) {
        log::warn!(
            "rpc server {}: {} calls running, the most allowed (max_concurrent_calls): \
             connections with a slow call wait for it before reading more",
            run.addr,
            in_flight
        );
    } else if !capped && room > 0 {
        run.capped.store(false, Ordering::Relaxed);
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
            code: Some(Code::DeadlineExceeded),
            ..Header::default()
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
