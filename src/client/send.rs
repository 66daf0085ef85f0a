//! The send path: registering a call, queueing its request, and getting
//! it written, alone or batched with the requests of other callers; the
//! writer thread that takes over a write the socket would block on; and
//! the checks a send makes first (an idle connection closed by the server,
//! room in the send queue).
//!
//! Nothing here reads from the socket, except the look at an idle
//! connection (`check_idle_close`), and no caller blocks on a write: what
//! the socket does not take at once, the writer thread sends, bounded by
//! the write timeout (`flush`).
//!
//! # How requests are batched
//!
//! While a reader hands out replies it has already read (`dispatching`),
//! the callers it wakes only queue their next request; the reader writes
//! them all in one syscall before it blocks again. Callers blocked in a
//! wait it wakes together, once it has handed out all it has read (see
//! [`wake`](super::wake)): woken one by one, each would take the reader's
//! CPU in turn. A caller woken that way that sends its next request on *another*
//! connection (an XClient going round its instances) queues it there too
//! and leaves the flush to the waking reader, through that reader's
//! `deferred` list. A thread-local notes which connection's batch the
//! caller was woken from.
//!
//! Before that flush, a reader that handed out results of which (as far
//! as a rough count tells) some have yet to come back as requests yields
//! its CPU once, if it has just woken sleeping callers or some have queued
//! already: on a busy machine the others are often waiting for that very
//! CPU, and the batch then goes out in one write instead of one per
//! caller, with the server woken once for them all. gRPC-Go's transport
//! writer yields once before a small flush for the same reason. Where a
//! core is idle the yield returns at once; where the CPU is contended by
//! other work it can hold the flush for up to a scheduler time slice.
//! Results that only went to channels ([`Call::receiver`]), which nobody
//! was woken for here and which brought no request back, make no yield.
//!
//! Invariant: a request queued without a flush is flushed by a reader that
//! has yet to end its dispatch. `dispatching` is set false only under the
//! `deferred` lock, and a caller adds to `deferred` only under that lock
//! and only while `dispatching` is true; so the reader that sets it false
//! flushes everything deferred to it, and a caller that finds it false
//! flushes its own request.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::call::{self, deadline_after, Budget, Call};
use super::intercept::AfterHook;
use super::outbound::{timeout_nanos, Extra};
use super::{Client, Completion, Inner};
use crate::error::{Error, Result, TimeoutStage};
use crate::meta::WireMeta;
use crate::wire::codec::{encode_message, Header, KEEP_METHOD_TEXT};

/// How long a connection must have been idle before a call checks that the
/// server has not closed it.
const IDLE_CHECK: Duration = Duration::from_millis(100);

/// How often a caller waiting for room in the send queue looks whether the
/// connection closed meanwhile (nothing then drains the queue).
const ROOM_CHECK: Duration = Duration::from_millis(100);

thread_local! {
    /// The connection whose reader handed this thread its last result while
    /// dispatching a batch; taken by the thread's next send. Weak, so that a
    /// thread that never sends again does not keep a closed connection's
    /// socket open.
    static WOKEN_BY: std::cell::Cell<Option<std::sync::Weak<Inner>>> =
        const { std::cell::Cell::new(None) };
}

thread_local! {
    /// This thread's last method name, shared with its calls: a caller
    /// that repeats a method (the usual case) allocates no name for it.
    static LAST_METHOD: std::cell::Cell<Option<Arc<str>>> = const { std::cell::Cell::new(None) };
    /// The request header's method text, its capacity kept from call to
    /// call: taken for each request (a nested call, from inside an
    /// argument's `Serialize`, finds it empty and allocates its own).
    static METHOD_TEXT: std::cell::Cell<String> = const { std::cell::Cell::new(String::new()) };
}

/// `service_method` as the call keeps it: this thread's last name again
/// if it is the same.
fn method_name(service_method: &str) -> Arc<str> {
    let name = match LAST_METHOD.take() {
        Some(last) if *last == *service_method => last,
        _ => Arc::from(service_method),
    };
    LAST_METHOD.set(Some(name.clone()));
    name
}

impl Client {
    /// Whether this thread's last reply came from this connection's reader
    /// while it handed out a batch: a request this thread sends here next
    /// can join the write of the batch's other callers. The XClient keeps
    /// such a thread on the instance (see [`SelectContext::home`]).
    ///
    /// [`SelectContext::home`]: crate::xclient::SelectContext::home
    pub(crate) fn woke_this_thread_in_batch(&self) -> bool {
        WOKEN_BY.with(|w| {
            let last = w.take();
            let here = last
                .as_ref()
                .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(&self.inner)));
            w.set(last);
            here
        })
    }

    /// Registers the call, then sends it. With a `budget` the caller never
    /// blocks on the socket (see [`go_outbound`](Client::go_outbound)), and the
    /// request carries the time left as `Timeout`. `extra` is what
    /// `outbound` decided besides: the header's `Meta`, and the
    /// interceptors whose `after`s the call's end runs.
    pub(super) fn send<A, R>(
        &self,
        service_method: &str,
        args: &A,
        budget: Option<Budget>,
        extra: Extra,
    ) -> Result<Call<R>>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        let inner = &self.inner;
        let codec = inner.codec;
        let method = method_name(service_method);
        let hook = extra
            .entered
            .map(|entered| AfterHook::new(inner.defaults.clone(), entered, method.clone()));
        let slot = Arc::new(call::Slot::<R>::new(codec, method.clone(), hook));
        let complete: Completion = slot.clone();
        // Past here a failure is handed to the completion first (it runs
        // the interceptors' `after`s), then taken back for the caller.
        let fail = |complete: Completion, e: Error| -> Error {
            let _ = complete.complete(Err(e));
            match slot.try_take() {
                Some(Err(e)) => e,
                _ => inner.closed_error("call failed before it was sent"),
            }
        };
        let seq = inner.seq.fetch_add(1, Ordering::Relaxed);
        inner.check_idle_close();
        let deadline = budget.and_then(|b| b.deadline);
        // Backpressure: past the cap, wait for room before queueing (two
        // relaxed loads when there is room).
        if inner.writer.is_full() && !inner.wait_room(deadline) {
            if let Some(b) = budget {
                let e = b.timed_out(service_method, &inner.addr.to_string(), TimeoutStage::Write);
                return Err(fail(complete, e));
            }
        }
        let mut p = inner.pending.lock();
        if let Some(reason) = &p.closed {
            let e = Error::NotSent {
                addr: inner.addr.to_string(),
                method: service_method.to_string(),
                reason: reason.clone(),
            };
            drop(p);
            return Err(fail(complete, e));
        }
        if inner.going_away.load(Ordering::Acquire) {
            drop(p);
            return Err(fail(complete, inner.going_away_error(service_method)));
        }
        p.calls.insert(seq, complete);
        drop(p);
        let mut header = Header {
            service_method: METHOD_TEXT.take(),
            seq,
            error: String::new(),
            code: None,
            meta: extra.meta.map(WireMeta::Valid),
            ..Header::default()
        };
        header.service_method.push_str(service_method);
        // Checked again under the writer's lock, which `going_away` takes
        // after setting the flag: a request is either queued before the
        // connection's last flush, or refused here (see `going_away`).
        let queued = inner.writer.enqueue_marked(|out| {
            if inner.going_away.load(Ordering::Acquire) {
                return Err(inner.going_away_error(service_method));
            }
            // The time left as the request is encoded (PROTOCOL.md
            // section 8); the queue is written in order, at once or by the
            // writer thread within the write timeout.
            if let Some(d) = deadline {
                header.timeout = timeout_nanos(d);
            }
            encode_message(codec, out, &header, args)
        });
        let mut text = header.service_method;
        if text.capacity() <= KEEP_METHOD_TEXT {
            text.clear();
            METHOD_TEXT.set(text);
        }
        let end = match queued {
            Ok(end) => end,
            Err(e) => {
                let complete = inner.pending.lock().calls.remove(&seq);
                return Err(match complete {
                    Some(complete) => fail(complete, e),
                    // Closed meanwhile: the completion ran already.
                    None => e,
                });
            }
        };
        // SeqCst pairs with the reader's store before its flush: either it
        // sees our request, or we see it is not dispatching and flush.
        let woken_by = WOKEN_BY.take();
        if inner.dispatching.load(Ordering::SeqCst) {
            inner.rejoined.fetch_add(1, Ordering::Relaxed);
        } else {
            // Woken by this very connection (a plain client): nothing to
            // defer to, and no need to touch the shared count to find out.
            let waker = woken_by
                .filter(|w| !std::ptr::eq(w.as_ptr(), Arc::as_ptr(inner)))
                .and_then(|w| w.upgrade());
            match waker {
                Some(waker) if waker.defer_flush(inner) => {}
                // No caller blocks on the socket: a timed one must not
                // block past its deadline on a server that does not read,
                // and the writer thread bounds the wait for all (`flush`).
                _ => inner.flush_from_reader(),
            }
        }
        Ok(Call {
            owner: self.owner.clone(),
            seq,
            end,
            method,
            slot,
            budget: budget.filter(|b| b.deadline.is_some()),
            rx: std::sync::OnceLock::new(),
        })
    }
}

impl Inner {
    /// A connection left idle may have been closed by the server with no
    /// thread reading to notice; a call sent on it would fail as sent, and
    /// could not safely be retried. So before sending on a connection idle
    /// for a while (never between calls back to back), look without
    /// blocking whether the server has gone; if so the call is refused as
    /// [`Error::NotSent`].
    pub(super) fn check_idle_close(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let last = self.last_send.swap(now, Ordering::Relaxed);
        if now.saturating_sub(last) < IDLE_CHECK.as_nanos() as u64 || self.reader.is_locked() {
            return;
        }
        match self.stream.readable_now() {
            Ok(false) => {}
            // The end of the stream, or what came while nobody read: a
            // drain notice, a late reply (see `read_idle`).
            Ok(true) => self.read_idle(),
            Err(e) => self.close(&format!("connection broken while idle: {e}")),
        }
    }

    /// Waits until the send queue is below its cap, or `deadline`; false
    /// if the deadline came first. A closed connection counts as room
    /// (the call is then refused as not sent): nothing drains its queue,
    /// and a close wakes nobody here, hence the periodic look.
    fn wait_room(&self, deadline: Option<Instant>) -> bool {
        loop {
            let look = deadline_after(ROOM_CHECK);
            let until = match (deadline, look) {
                (Some(d), Some(l)) => Some(d.min(l)),
                (d, l) => d.or(l),
            };
            if self.writer.wait_room(until) || self.is_closed() {
                return true;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
        }
    }

    /// Ends a dispatch: writes what the callers it woke have queued, here
    /// and on the connections they deferred to it.
    pub(super) fn end_dispatch(&self) {
        self.wakes.wake_marked();
        let others = {
            let mut deferred = self.deferred.lock();
            self.dispatching.store(false, Ordering::SeqCst);
            self.rejoined.store(0, Ordering::Relaxed);
            std::mem::take(&mut *deferred)
        };
        self.flush_from_reader();
        for other in others {
            other.flush_from_reader();
        }
    }

    /// Takes on flushing `other` when this connection's dispatch ends;
    /// false if it is not dispatching (the caller flushes itself).
    fn defer_flush(&self, other: &Arc<Inner>) -> bool {
        let mut deferred = self.deferred.lock();
        if !self.dispatching.load(Ordering::SeqCst) {
            return false;
        }
        self.rejoined.fetch_add(1, Ordering::Relaxed);
        if !deferred.iter().any(|d| Arc::ptr_eq(d, other)) {
            deferred.push(other.clone());
        }
        true
    }

    /// Called by a caller just given its result: if this connection's
    /// reader is still handing out a batch, the caller's next request, on
    /// whichever connection, can join the batch's flush.
    pub(super) fn note_woken(self: &Arc<Self>) {
        if self.dispatching.load(Ordering::Relaxed) {
            WOKEN_BY.set(Some(Arc::downgrade(self)));
        }
    }

    /// The writer thread's flush: writes until the queue is empty, waiting
    /// for the socket to take more. What was queued at any moment must be
    /// written within the write timeout from then (as a Go write deadline
    /// bounds each write), or the connection is closed and every pending
    /// call fails. Not a socket timeout: that restarts with every partial
    /// write, and a peer whose kernel takes a trickle held a caller many
    /// times as long.
    fn flush(&self) {
        // Everything queued by `since` must be written by `since` + timeout.
        let (mut target, mut since) = (self.writer.enqueued(), Instant::now());
        loop {
            match self.writer.flush_nowait() {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => return self.close(&format!("write failed: {e}")),
            }
            if self.is_closed() {
                return;
            }
            let now = Instant::now();
            if self.writer.written() >= target {
                (target, since) = (self.writer.enqueued(), now);
            }
            let waited = now.saturating_duration_since(since);
            if waited >= self.write_timeout {
                return self.close(&format!(
                    "write timeout: the server did not take the requests queued {} ago",
                    crate::util::duration::GoDuration(self.write_timeout)
                ));
            }
            if let Err(e) = self.stream.wait_writable(self.write_timeout - waited) {
                return self.close(&format!("write failed: {e}"));
            }
        }
    }

    /// A flush that never blocks on a write: what the socket does not take
    /// at once, the writer thread sends. The reader's, because with a
    /// server that is blocked writing replies to us neither side would
    /// read again; and every caller's, so that a call's timeout bounds
    /// its write too.
    pub(super) fn flush_from_reader(&self) {
        match self.writer.flush_nowait() {
            Ok(true) => {}
            Ok(false) => {
                log::debug!(
                    "rpc client {}: socket full; the writer thread sends the rest",
                    self.addr
                );
                self.wake_writer_thread()
            }
            Err(e) => self.close(&format!("write failed: {e}")),
        }
    }

    pub(super) fn wake_writer_thread(&self) {
        let wake = self.wake_writer.get_or_init(|| {
            let (tx, rx) = crossbeam_channel::bounded(1);
            if let Some(inner) = self.me.upgrade() {
                let started = self.threads.spawn("geerpc-cl-write", None, move || {
                    while rx.recv().is_ok() && !inner.is_closed() {
                        inner.flush();
                        if inner.going_away.load(Ordering::Acquire) {
                            inner.half_close(Instant::now() + Duration::from_secs(1));
                        }
                    }
                });
                if let Err(e) = started {
                    self.close(&format!("cannot start writer thread: {e}"));
                }
            }
            tx
        });
        let _ = wake.try_send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::codec::Codec;
    use crate::{Server, Service};

    /// Against a server that never reads, timed calls that find the send
    /// queue at its cap wait for room until their deadline and queue
    /// nothing: the queue stays at the cap plus one request, however many
    /// calls are made.
    #[test]
    fn past_the_queue_cap_a_timed_call_waits_for_room_then_times_out() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("tcp@{}", l.local_addr().unwrap());
        let holder = std::thread::spawn(move || l.accept().map(|(s, _)| s));
        let cap = 1 << 20;
        let client = Client::builder()
            .codec(Codec::MsgPack)
            .max_queued_bytes(cap)
            .dial(&addr)
            .unwrap();
        let _peer = holder.join().unwrap().unwrap();
        let blob = serde_bytes::ByteBuf::from(vec![1u8; 512 << 10]);
        let timeout = Duration::from_millis(30);
        let mut last = None;
        // 20 MiB in all: more than the socket buffers and the cap hold.
        for _ in 0..40 {
            let t0 = Instant::now();
            let err = client
                .call_timeout::<_, usize>("Blob.Len", &blob, timeout)
                .unwrap_err();
            // Each call moves 512 KiB (encoded, copied into the queue or
            // the socket), which a loaded machine can hold up for
            // hundreds of ms; 2 s is slack for that, still far short of
            // the 30 s write timeout a call that ignored its deadline
            // would wait for (the connection's close).
            let took = t0.elapsed();
            assert!(took < timeout + Duration::from_secs(2), "took {took:?}");
            assert!(matches!(err, Error::Timeout { .. }), "{err}");
            let queued = client.inner.writer.queued();
            assert!(queued <= cap + (520 << 10), "{queued} bytes queued");
            last = Some(err);
        }
        assert!(
            matches!(
                last,
                Some(Error::Timeout {
                    stage: TimeoutStage::Write,
                    ..
                })
            ),
            "{last:?}"
        );
    }

    #[test]
    fn a_request_deferred_to_another_connections_dispatch_goes_out_when_it_ends() {
        let server = Server::new();
        server
            .register(
                Service::new("Arith").method("Sum", |a: (i64, i64)| Ok::<_, String>(a.0 + a.1)),
            )
            .unwrap();
        let handle = server.listen("tcp@127.0.0.1:0").unwrap();
        let addr = handle.addr().to_string();
        let a = Client::dial(&addr).unwrap();
        let b = Client::dial(&addr).unwrap();

        // As if this thread had just been handed a result by `a`'s reader,
        // which is still dispatching its batch. `b`'s reader is held, or
        // `b`'s reader thread, woken by the call, could flush `b` itself.
        let b_reading = b.inner.reader.lock();
        a.inner.dispatching.store(true, Ordering::SeqCst);
        WOKEN_BY.set(Some(Arc::downgrade(&a.inner)));
        let call = b.go::<_, i64>("Arith.Sum", &(1, 2)).unwrap();
        assert!(
            b.inner.writer.pending_len() > 0,
            "the request waits for a's flush"
        );
        assert_eq!(a.inner.deferred.lock().len(), 1);

        a.inner.end_dispatch();
        assert_eq!(b.inner.writer.pending_len(), 0);
        assert!(a.inner.deferred.lock().is_empty());
        // As a leader does when it stops: hand reading to the reader thread.
        drop(b_reading);
        b.inner.ensure_reader();
        assert_eq!(call.wait_timeout(Duration::from_secs(5)).unwrap(), 3);

        // With `a` no longer dispatching, `a` takes nothing on and the
        // sender flushes. (Not asserted through `pending_len`: `b`'s reader
        // thread, ending its own dispatch, may hold the socket's lock, and
        // then it writes the request in the sender's place.)
        WOKEN_BY.set(Some(Arc::downgrade(&a.inner)));
        let call = b.go::<_, i64>("Arith.Sum", &(2, 3)).unwrap();
        assert!(a.inner.deferred.lock().is_empty());
        assert_eq!(call.wait_timeout(Duration::from_secs(5)).unwrap(), 5);
    }
}
