//! The per-server monitor: hands a connection's reading role on when its
//! leader is stuck in a handler, and answers calls whose handle timeout ran
//! out, at the deadline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

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

pub(super) fn run(run: &Arc<Running>, stop: Receiver<()>) {
    let tick = run.server.config().steal_after;
    loop {
        match stop.recv_timeout(tick) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        steal_from_stuck_leaders(run);
        expire_deadlines(run);
    }
}

fn steal_from_stuck_leaders(run: &Arc<Running>) {
    let mut stuck = Vec::new();
    for conn in run.conns.lock().values() {
        let v = conn.busy.load(Ordering::Acquire);
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
    for conn in stuck {
        // Replies batched behind the slow handler go out now.
        let _ = conn.writer.flush();
        if let Err(e) = run.spawn_conn_thread(conn.clone(), false) {
            log::error!(
                "rpc server {}: cannot start a reader for {}: {e}; closing it",
                run.addr,
                conn.peer
            );
            conn.close();
        }
    }
}

fn expire_deadlines(run: &Running) {
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
            let _ = d.conn.writer.flush();
        }
    }
}
