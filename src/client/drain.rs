//! The client's side of a server's drain (PROTOCOL.md section 9): on the
//! drain notice, refuse new calls, let those sent get their replies, and
//! close the sending side once the last request is written; and read the
//! notice off a connection left idle.

use std::net::Shutdown;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Inner;
use crate::code::Code;
use crate::error::Error;

/// How long an idle connection's check waits for the rest of a message
/// that arrived in part.
const IDLE_READ: Duration = Duration::from_millis(10);

impl Inner {
    /// The error for a call refused after the drain notice: it was never
    /// sent, so it may go to another server.
    pub(super) fn going_away_error(&self, method: &str) -> Error {
        Error::NotSent {
            addr: self.addr.to_string(),
            method: method.to_string(),
            reason: "the server is going away (drain notice)".into(),
        }
    }

    /// The server's drain notice arrived: refuse new calls, let those sent
    /// get their replies, and once every request queued so far is written,
    /// close our sending side so that the server knows none is on its way
    /// and can close the connection without waiting out its grace period.
    ///
    /// Invariant: no request is queued after the half-close. `send` checks
    /// the flag inside the writer's lock; taking that lock once after
    /// setting the flag waits out a sender that checked before it, and any
    /// later one sees it.
    pub(super) fn going_away(&self) {
        if self.going_away.swap(true, Ordering::AcqRel) {
            return;
        }
        log::debug!(
            "rpc client {}: the server is going away; no new calls on this connection",
            self.addr
        );
        let _ = self.writer.enqueue(|_| Ok(()));
        // The reader must not block on a write (see `flush_from_reader`):
        // what the socket does not take at once, the writer thread sends,
        // and it closes the sending side after.
        if !self.half_close(Instant::now()) {
            self.wake_writer_thread();
        }
    }

    /// Closes the sending side if every queued request is written by
    /// `until` (without blocking on the socket); false if not.
    pub(super) fn half_close(&self, until: Instant) -> bool {
        match self.writer.finish_nowait(until) {
            Ok(true) => {
                let _ = self.stream.shutdown(Shutdown::Write);
                true
            }
            Ok(false) => false,
            // Broken: the read side ends the connection.
            Err(_) => true,
        }
    }

    /// Reads what an idle connection received while no call was pending,
    /// without blocking for more: a drain notice makes later calls go
    /// elsewhere instead of onto a socket the server is closing, late
    /// replies are dropped, and the end of the stream closes the client.
    pub(super) fn read_idle(&self) {
        let Some(mut rd) = self.reader.try_lock() else {
            return;
        };
        if !self.pending.lock().calls.is_empty() {
            // Calls are pending: their reader handles what came.
            return;
        }
        // The bytes are there already; the timeout only guards against a
        // message that arrived in part (it stays buffered for later).
        if self.stream.set_read_timeout(Some(IDLE_READ)).is_err() {
            return;
        }
        loop {
            match rd.read_message(self.codec) {
                Ok(Some(m)) => match self.codec.decode_header(rd.header(&m)) {
                    Ok(h) if h.seq == 0 && h.code == Some(Code::Goaway) => self.going_away(),
                    Ok(h) => {
                        log::debug!("rpc client {}: dropped late reply seq {}", self.addr, h.seq)
                    }
                    Err(e) => {
                        self.close(&e.to_string());
                        return;
                    }
                },
                Ok(None) => {
                    self.close("connection closed by the server while idle");
                    return;
                }
                Err(Error::Io { source, .. })
                    if matches!(
                        source.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) => {
                    self.close(&format!("connection broken while idle: {e}"));
                    return;
                }
            }
            if !rd.has_buffered_message(self.codec)
                && !matches!(self.stream.readable_now(), Ok(true))
            {
                break;
            }
        }
        if let Err(e) = self.stream.set_read_timeout(None) {
            self.close(&format!("connection broken while idle: {e}"));
        }
    }
}
