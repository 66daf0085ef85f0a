//! Reading replies and handing them to their callers: a caller blocked in
//! its call leads when nobody reads, else the client's reader thread reads.
//!
//! # How replies are read
//!
//! Whoever holds the `reader` lock is the connection's reader. A caller
//! blocked in [`Client::call`](super::Client::call) takes that role itself
//! when it is free: it reads replies, hands those of other calls to their
//! callers, and stops at its own, so a lone caller makes its round trip
//! without waking any other thread. When it lets go of the role while calls
//! are still pending, or when a caller cannot lead (timed calls,
//! [`Client::go`](super::Client::go)), the client's own reader thread is
//! woken to read in its place.
//!
//! Invariant: while any call is pending, either some thread holds `reader`,
//! or the reader thread has been woken and will take it. Every path that
//! lets go of `reader` re-checks `pending` after unlocking and wakes the
//! reader thread if needed, and every caller that registers a call and does
//! not lead checks whether `reader` is held after registering.
//!
//! A reader never blocks on a write (with a server blocked writing replies
//! to us, neither side would read again): at the end of a dispatch it
//! flushes what the callers it woke have queued without blocking (see
//! `send`, "How requests are batched"), and the writer thread sends the
//! rest. Decoding a reply runs the caller's `Deserialize`, which must not
//! take the reader down with it (`decode_reply`).

use std::sync::atomic::Ordering;

use crossbeam_channel::Receiver;
use serde::de::DeserializeOwned;

use super::{wake, Completion, Inner, Reply};
use crate::code::Code;
use crate::error::{Error, Result};
use crate::meta::{Meta, WireMeta};
use crate::wire::codec::{Body, Codec};
use crate::wire::frame::FrameReader;
use crate::wire::transport::Stream;

impl Inner {
    /// Wakes the reader thread if nobody is reading while calls are pending.
    pub(super) fn ensure_reader(&self) {
        if !self.reader.is_locked() {
            self.wake_reader_thread();
        }
    }

    /// Wakes the reader thread, starting it the first time.
    fn wake_reader_thread(&self) {
        let wake = self.wake_reader.get_or_init(|| {
            let (tx, rx) = crossbeam_channel::bounded(1);
            if let Some(inner) = self.me.upgrade().filter(|i| !i.is_closed()) {
                // The default stack: this thread decodes the callers' reply
                // types.
                let started = self
                    .threads
                    .spawn("geerpc-cl-read", None, move || reader_thread(&inner, rx));
                if let Err(e) = started {
                    self.close(&format!("cannot start reader thread: {e}"));
                }
            }
            tx
        });
        let _ = wake.try_send(());
    }

    /// Reads replies (leads) until `done`, if no other thread is reading;
    /// otherwise returns at once and the caller waits for its slot.
    pub(super) fn lead_until(&self, done: impl Fn() -> bool) {
        if done() {
            return;
        }
        // If someone else reads, it wakes the reader thread when it stops.
        if let Some(mut rd) = self.reader.try_lock() {
            self.read_replies(&mut rd, &done);
            drop(rd);
            if !self.pending.lock().calls.is_empty() {
                self.wake_reader_thread();
            }
        }
    }

    /// Reads replies and completes their calls until `done` or the stream
    /// ends (which closes the client).
    fn read_replies(&self, rd: &mut FrameReader<Stream>, done: impl Fn() -> bool) {
        // Callers handed a result are woken only when the batch ends. Should
        // a bug make this unwind, those at least are not left asleep (the
        // connection itself is then beyond saving).
        struct WakeOnUnwind<'a>(&'a wake::WakeSet);
        impl Drop for WakeOnUnwind<'_> {
            fn drop(&mut self) {
                self.0.wake_marked();
            }
        }
        let _wake = WakeOnUnwind(&self.wakes);
        self.read_replies_batched(rd, done);
        self.end_dispatch();
    }

    fn read_replies_batched(&self, rd: &mut FrameReader<Stream>, done: impl Fn() -> bool) {
        let mut handed = 0usize;
        while !done() {
            if !rd.has_buffered_message(self.codec) {
                // About to block: wake the callers handed results, all at
                // once, then send what they queue. If some have not queued
                // yet, perhaps for want of this CPU, let them first (once;
                // see "How requests are batched" in `send`).
                let woke = self.wakes.wake_marked();
                let rejoined = self.rejoined.load(Ordering::Relaxed);
                if (woke || rejoined > 0) && rejoined < handed {
                    std::thread::yield_now();
                }
                handed = 0;
                self.end_dispatch();
            }
            let read = rd.read_message(self.codec);
            self.dispatching.store(true, Ordering::SeqCst);
            let mut msg = match read {
                Ok(Some(m)) => m,
                Ok(None) => {
                    self.close("connection closed by the server");
                    return;
                }
                Err(e) => {
                    let e = super::foreign::protocol(rd, &self.addr.to_string()).unwrap_or(e);
                    log::warn!("rpc client {}: {e}; closing the connection", self.addr);
                    self.close(&e.to_string());
                    return;
                }
            };
            let header = match self
                .codec
                .decode_reply_header(rd.header(&msg), msg.marks.take())
            {
                Ok(h) => h,
                Err(e) => {
                    log::warn!("rpc client {}: {e}; closing the connection", self.addr);
                    self.close(&e.to_string());
                    return;
                }
            };
            if header.seq == 0 && header.code == Some(Code::Goaway) {
                // The drain notice (PROTOCOL.md section 9); no call has Seq 0.
                self.going_away();
                continue;
            }
            let complete = self.pending.lock().calls.remove(&header.seq);
            handed += usize::from(complete.is_some());
            let sleeper = match complete {
                // Its caller gave up (timeout): the reply is dropped.
                None => {
                    log::debug!(
                        "rpc client {}: dropped late reply seq {}",
                        self.addr,
                        header.seq
                    );
                    0
                }
                Some(complete) if !header.error.is_empty() => {
                    complete.complete(Err(Error::Remote {
                        method: header.service_method,
                        message: header.error,
                        code: header.code,
                    }))
                }
                Some(complete) => complete.complete(Ok(Reply {
                    body: rd.body(&msg),
                    meta: self.reply_meta(header.meta),
                })),
            };
            self.wakes.mark(sleeper);
        }
    }

    /// Forgets a pending call, handing back its completion; `None` if its
    /// reply is already being delivered. Call or drop it outside the lock.
    pub(super) fn forget(&self, seq: u64) -> Option<Completion> {
        self.pending.lock().calls.remove(&seq)
    }

    /// A reply header's `Meta` for its caller: a malformed one is dropped
    /// (the reply itself stands) and logged.
    fn reply_meta(&self, meta: Option<WireMeta>) -> Option<Meta> {
        match meta? {
            WireMeta::Valid(m) => Some(m),
            WireMeta::Invalid(why) => {
                log::debug!("rpc client {}: reply metadata ignored: {why}", self.addr);
                None
            }
        }
    }
}

/// Decodes a reply for its caller. A `Deserialize` impl that panics must
/// not take the connection's reader with it (every other pending call would
/// wait for ever): the panic becomes this call's error.
pub(super) fn decode_reply<R: DeserializeOwned>(
    codec: Codec,
    body: Body<'_>,
    method: &str,
) -> Result<R> {
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        codec.decode_body::<R>(body, "reply")
    }));
    match decoded {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(Error::Decode { message, .. })) => Err(Error::Decode {
            what: format!("reply of {method}"),
            message,
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Error::Decode {
            what: format!("reply of {method}"),
            message: "the reply type's Deserialize panicked".into(),
        }),
    }
}

/// The client's own reader: reads whenever woken while calls are pending
/// and no caller is reading.
pub(super) fn reader_thread(inner: &Inner, wake: Receiver<()>) {
    while wake.recv().is_ok() {
        if inner.is_closed() {
            return;
        }
        while !inner.pending.lock().calls.is_empty() {
            let Some(mut rd) = inner.reader.try_lock() else {
                break;
            };
            inner.read_replies(&mut rd, || inner.pending.lock().calls.is_empty());
        }
        if inner.is_closed() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{Client, Server, Service};

    /// A client whose calls all lead (blocking calls, one at a time) never
    /// starts its reader thread: a thousand such connections hold a
    /// thousand threads fewer. A timed call, which never leads, starts it.
    #[test]
    fn the_reader_thread_starts_only_when_a_call_cannot_lead() {
        let server = Server::new();
        server
            .register(
                Service::new("Arith").method("Sum", |a: (i64, i64)| Ok::<_, String>(a.0 + a.1)),
            )
            .unwrap();
        let running = server.listen("tcp@127.0.0.1:0").unwrap();
        let client = Client::dial(running.addr()).unwrap();
        for i in 0..100i64 {
            let sum: i64 = client.call("Arith.Sum", &(i, 1)).unwrap();
            assert_eq!(sum, i + 1);
        }
        assert!(
            client.inner.wake_reader.get().is_none(),
            "started for leaders"
        );
        let sum: i64 = client
            .call_timeout("Arith.Sum", &(2, 3), Duration::from_secs(10))
            .unwrap();
        assert_eq!(sum, 5);
        assert!(client.inner.wake_reader.get().is_some(), "not started");
        // Both kinds still work with the thread there.
        let sum: i64 = client.call("Arith.Sum", &(4, 5)).unwrap();
        assert_eq!(sum, 9);
        client.close();
        drop(running);
    }
}
