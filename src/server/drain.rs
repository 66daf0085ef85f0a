//! Draining a server (PROTOCOL.md section 9): the drain notice on each
//! connection, the `unavailable` answer to requests read after it, and the
//! wait for connections to end before they are closed.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::conn::Conn;
use super::Running;
use crate::code::Code;
use crate::wire::codec::{Codec, Header};

/// How long a draining server keeps a connection open once no call is in
/// flight, if its peer neither closes its sending side (what a geerpc client
/// does once it read the drain notice) nor sends anything: requests a client
/// sent before it read the notice are still on their way, and each is
/// answered `unavailable` rather than lost to a closed socket. Each such
/// request starts the spell again; the grace period bounds it all.
pub(super) const DRAIN_QUIET: Duration = Duration::from_millis(200);

impl Conn {
    /// Queues the drain notice (PROTOCOL.md section 9) once the handshake
    /// is done, and sends it without blocking the caller (the shutdown
    /// thread, or a leader about to read): what the socket does not take at
    /// once, a writer thread sends. A connection still in its handshake
    /// gets it when its leader starts.
    pub(super) fn send_goaway(self: &Arc<Self>, run: &Running) {
        let Some(&(codec, _)) = self.proto.get() else {
            return;
        };
        if self.goaway_sent.swap(true, Ordering::AcqRel) {
            return;
        }
        let notice = Header {
            code: Some(Code::Goaway),
            ..Header::default()
        };
        let body: &[u8] = match codec {
            Codec::Json => b"null\n",
            Codec::MsgPack => &[0xc0],
            // Go's client discards a body it has no call for, whatever its
            // type; gob has no null.
            #[cfg(feature = "gob")]
            Codec::Gob => codec.empty_body(),
        };
        if self.queue_reply(codec, &notice, body).is_err() {
            return;
        }
        match self.writer.flush_nowait() {
            Ok(true) => {}
            Ok(false) => {
                let c = self.clone();
                if let Err(e) = run.threads.spawn("geerpc-writer", None, move || {
                    c.flush();
                }) {
                    log::error!("rpc server {}: cannot start a writer: {e}", run.addr);
                }
            }
            Err(e) => self.close_after_write_error(&e),
        }
    }
}

/// Answers a request read after the drain notice without running it
/// (PROTOCOL.md section 9): the caller may send it elsewhere.
pub(super) fn refuse(run: &Running, conn: &Conn, codec: Codec, header: &mut Header) {
    run.refused.fetch_add(1, Ordering::Relaxed);
    match run.server.find(&header.service_method) {
        Ok(m) => m.stats.record_refused(&Code::Unavailable),
        Err(_) => {
            let slot = super::stats::code_slot(Some(&Code::Unavailable));
            run.server.shared.counters.unknown.0[slot].fetch_add(1, Ordering::Relaxed);
        }
    }
    let reply = Header {
        service_method: std::mem::take(&mut header.service_method),
        seq: header.seq,
        error: "rpc server: shutting down".into(),
        code: Some(Code::Unavailable),
        ..Header::default()
    };
    let _ = conn.queue_reply(codec, &reply, codec.empty_body());
}

/// Waits, until `deadline` at most, for every connection but `own` to end
/// (its peer closed its sending side after reading the drain notice) or for
/// no request to arrive for [`DRAIN_QUIET`].
pub(super) fn linger(run: &Running, own: Option<u64>, deadline: Instant) {
    let mut seen = run.refused.load(Ordering::Relaxed);
    let mut quiet_until = Instant::now() + DRAIN_QUIET;
    let mut guard = run.drained.0.lock();
    loop {
        let open = run.conns.lock().keys().any(|&id| Some(id) != own);
        if !open {
            return;
        }
        let now = Instant::now();
        let refused = run.refused.load(Ordering::Relaxed);
        if refused != seen {
            seen = refused;
            quiet_until = now + DRAIN_QUIET;
        }
        if now >= quiet_until.min(deadline) {
            return;
        }
        run.drained
            .1
            .wait_until(&mut guard, quiet_until.min(deadline));
    }
}
