//! A call in flight, returned by [`Client::go`](super::Client::go), the
//! one-shot slot its result (and its reply's metadata) is delivered to,
//! and a call's time budget.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::{Condvar, Mutex};
use serde::de::DeserializeOwned;

use super::intercept::AfterHook;
use super::reader::decode_reply;
use super::wake::Ticket;
use super::{Complete, Inner, Owner, Reply};
use crate::error::{Error, Result, TimeoutStage};
use crate::meta::Meta;
use crate::wire::codec::Codec;

/// The instant `t` from now, or `None` (no deadline) if `Instant` cannot
/// hold it: every `Duration`, `Duration::MAX` included, is a valid timeout.
pub(crate) fn deadline_after(t: Duration) -> Option<Instant> {
    Instant::now().checked_add(t)
}

/// A call's own time: its deadline (`None`: none) and the timeout it came
/// from, which its [`Error::Timeout`] names.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    pub(crate) deadline: Option<Instant>,
    pub(crate) timeout: Duration,
}

impl Budget {
    /// `timeout` from now.
    pub(crate) fn after(timeout: Duration) -> Budget {
        Budget {
            deadline: deadline_after(timeout),
            timeout,
        }
    }

    /// Until `deadline`; the timeout is the time left now.
    pub(crate) fn until(deadline: Instant) -> Budget {
        Budget {
            deadline: Some(deadline),
            timeout: deadline.saturating_duration_since(Instant::now()),
        }
    }

    /// The timeout error of call `method` on `addr` at `stage`.
    pub(crate) fn timed_out(&self, method: &str, addr: &str, stage: TimeoutStage) -> Error {
        Error::Timeout {
            method: method.to_string(),
            addr: addr.to_string(),
            timeout: self.timeout,
            stage,
        }
    }
}

/// Where a call's result lands, and what its reply needs to be read: the
/// call's entry in the pending map is this same allocation ([`Complete`]).
/// Waiting parks the thread at once (a channel's blocking receive spins
/// first, which with many callers on two cores burns the CPU the reader
/// needs). A channel is attached only for callers that want to select.
pub(super) struct Slot<R> {
    ready: AtomicBool,
    /// The waiter's place in the connection's wake set, if it sleeps there.
    sleeper: AtomicU32,
    state: Mutex<SlotState<R>>,
    cv: Condvar,
    /// The reply's codec, and the method its decoding errors name.
    codec: Codec,
    method: Arc<str>,
    /// Whether `state.hook` was set, so that a call without interceptors
    /// does not take the lock twice to find out.
    hooked: bool,
}

struct SlotState<R> {
    value: Option<Result<R>>,
    /// The reply header's metadata, if it had any; stays here whichever
    /// way the value is handed out.
    meta: Option<Meta>,
    /// The value was handed out (to `try_wait` or a receiver): later waits
    /// end at once instead of waiting for a value that will not come.
    taken: bool,
    /// Set once someone asked for a receiver: the result goes there instead.
    tx: Option<Sender<Result<R>>>,
    /// The interceptors' `after`s, taken and run by the completion before
    /// the caller has its result; dropped unrun with the slot if the call
    /// was abandoned (which runs them as abandoned).
    hook: Option<AfterHook>,
}

impl<R> Slot<R> {
    pub(super) fn new(codec: Codec, method: Arc<str>, hook: Option<AfterHook>) -> Self {
        Slot {
            ready: AtomicBool::new(false),
            sleeper: AtomicU32::new(0),
            hooked: hook.is_some(),
            state: Mutex::new(SlotState {
                value: None,
                meta: None,
                taken: false,
                tx: None,
                hook,
            }),
            cv: Condvar::new(),
            codec,
            method,
        }
    }

    /// Delivers the result and the reply's metadata; returns the waiter's
    /// place in the wake set, which the caller must wake (0: none).
    fn deliver(&self, value: Result<R>, meta: Option<Meta>) -> Ticket {
        let mut s = self.state.lock();
        s.meta = meta;
        match s.tx.take() {
            Some(tx) => {
                s.taken = true;
                let _ = tx.send(value);
            }
            None => s.value = Some(value),
        }
        // SeqCst: see the wake set's invariant.
        self.ready.store(true, Ordering::SeqCst);
        drop(s);
        self.cv.notify_one();
        self.sleeper.load(Ordering::SeqCst)
    }

    pub(super) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Hands the value out if it is there.
    pub(super) fn try_take(&self) -> Option<Result<R>> {
        let mut s = self.state.lock();
        let v = s.value.take();
        s.taken |= v.is_some();
        v
    }

    /// The result, waiting until `deadline` (None: for ever). None at the
    /// deadline, or at once if the value was handed out already.
    fn take(&self, deadline: Option<Instant>) -> Option<Result<R>> {
        let mut s = self.state.lock();
        loop {
            if let Some(v) = s.value.take() {
                s.taken = true;
                return Some(v);
            }
            if s.taken {
                return None;
            }
            match deadline {
                None => self.cv.wait(&mut s),
                Some(d) => {
                    if self.cv.wait_until(&mut s, d).timed_out() {
                        return s.value.take();
                    }
                }
            }
        }
    }
}

impl<R: DeserializeOwned + Send> Complete for Slot<R> {
    fn complete(&self, outcome: std::result::Result<Reply<'_>, Error>) -> Ticket {
        let (value, meta) = match outcome {
            Ok(reply) => (
                decode_reply::<R>(self.codec, reply.body, &self.method),
                reply.meta,
            ),
            Err(e) => (Err(e), None),
        };
        if self.hooked {
            // Run outside the slot's lock, before the caller has its
            // result: see `Interceptor`.
            let hook = self.state.lock().hook.take();
            if let Some(hook) = hook {
                hook.finish(value.as_ref().map(|_| ()));
            }
        }
        self.deliver(value, meta)
    }
}

/// A call sent and not yet waited for.
///
/// Wait for it ([`wait`](Call::wait), [`wait_timeout`](Call::wait_timeout)),
/// poll it ([`try_wait`](Call::try_wait)) or select on its
/// [`receiver`](Call::receiver) together with other channels. Dropping it
/// abandons the reply.
///
/// A call keeps its connection open until it completes, even when every
/// [`Client`](super::Client) clone is dropped first: it holds the
/// connection's owner, the last holder of which closes it.
///
/// A call with a deadline (its own, or its scope's: see
/// [`Client::go_with`](super::Client::go_with)) ends at it whichever way
/// it is waited for, except through its [`receiver`](Call::receiver). The
/// server knows that deadline too (`Timeout`): it does not start a handler
/// past it, and a handler that polls
/// [`Context::is_cancelled`](crate::Context::is_cancelled) can stop
/// there; one that does not runs to its end. A call without a deadline
/// that is dropped is not told to the server at all.
///
/// The reply's metadata (what the handler set with
/// [`Context::set_reply_meta`](crate::Context::set_reply_meta)):
/// [`wait_with_meta`](Call::wait_with_meta).
#[must_use = "dropping a Call abandons its reply"]
pub struct Call<R> {
    pub(super) owner: Arc<Owner>,
    pub(super) seq: u64,
    /// Where the request ends in the connection's byte stream: it is
    /// written once the writer's count reaches this.
    pub(super) end: u64,
    pub(super) method: Arc<str>,
    pub(super) slot: Arc<Slot<R>>,
    /// The call's time, if it has a deadline: every wait ends there.
    pub(super) budget: Option<Budget>,
    pub(super) rx: OnceLock<Receiver<Result<R>>>,
}

impl<R> Call<R> {
    fn client(&self) -> &Arc<Inner> {
        &self.owner.inner
    }

    /// `Service.Method` of this call.
    pub fn service_method(&self) -> &str {
        &self.method
    }

    /// The channel the result arrives on, for `crossbeam_channel::select!`.
    /// Exactly one result is ever sent.
    pub fn receiver(&self) -> &Receiver<Result<R>> {
        self.rx.get_or_init(|| {
            let (tx, rx) = crossbeam_channel::bounded(1);
            let mut s = self.slot.state.lock();
            match s.value.take() {
                Some(v) => {
                    s.taken = true;
                    let _ = tx.send(v);
                }
                // Handed out before: the channel is closed at once.
                None if s.taken => drop(tx),
                None => s.tx = Some(tx),
            }
            rx
        })
    }

    /// The result if it has arrived.
    pub fn try_wait(&self) -> Option<Result<R>> {
        match self.rx.get() {
            Some(rx) => rx.try_recv().ok(),
            None => self.slot.try_take(),
        }
    }

    /// Waits for the result (until the call's deadline, if it has one).
    pub fn wait(self) -> Result<R> {
        if let Some(b) = self.budget {
            return self.wait_within(b);
        }
        if let Some(rx) = self.rx.get() {
            return rx
                .recv()
                .unwrap_or_else(|_| Err(self.client().closed_error("call abandoned")));
        }
        self.client().lead_until(|| self.slot.is_ready());
        self.sleep(None);
        let result = self
            .slot
            .take(None)
            .unwrap_or_else(|| Err(self.client().closed_error("the result was taken already")));
        self.client().note_woken();
        result
    }

    /// Waits for the result and the reply's metadata (empty if the reply
    /// had none), as [`wait`](Call::wait) does. The one way to read what a
    /// handler set with
    /// [`Context::set_reply_meta`](crate::Context::set_reply_meta);
    /// errors carry none.
    ///
    /// ```
    /// use geerpc::{CallOptions, Client, Context, Server, Service};
    ///
    /// let server = Server::new();
    /// server.register(Service::new("S").method_with_context("Who", |ctx: &Context, _: ()| {
    ///     ctx.set_reply_meta("served-by", "worker-1")?;
    ///     Ok::<_, geerpc::Status>(1)
    /// }))?;
    /// let running = server.listen("127.0.0.1:0")?;
    /// let client = Client::dial(running.addr())?;
    /// let (n, meta) = client
    ///     .go_with::<_, i32>("S.Who", &(), &CallOptions::new())?
    ///     .wait_with_meta()?;
    /// assert_eq!((n, meta.get("served-by")), (1, Some("worker-1")));
    /// # Ok::<(), geerpc::Error>(())
    /// ```
    pub fn wait_with_meta(self) -> Result<(R, Meta)> {
        let slot = self.slot.clone();
        let value = self.wait()?;
        let meta = slot.state.lock().meta.take().unwrap_or_default();
        Ok((value, meta))
    }

    /// Waits at most `timeout` (or until the call's deadline, if earlier);
    /// then the call is abandoned with [`Error::Timeout`] and its late
    /// reply discarded. The error's stage is [`TimeoutStage::Write`] if the
    /// request was not all written by then. `Duration::MAX` (any timeout
    /// too large for a deadline) waits as [`wait`](Call::wait) does.
    pub fn wait_timeout(self, timeout: Duration) -> Result<R> {
        self.wait_within(Budget::after(timeout))
    }

    /// Waits until `deadline`; see [`wait_timeout`](Call::wait_timeout).
    pub fn wait_deadline(self, deadline: Instant) -> Result<R> {
        self.wait_within(Budget::until(deadline))
    }

    /// Waits within `budget` and the call's own, whichever ends first.
    pub(crate) fn wait_within(mut self, budget: Budget) -> Result<R> {
        let own = self.budget.take();
        let b = match (budget.deadline, own) {
            (Some(d), Some(o)) if o.deadline.is_some_and(|od| od < d) => o,
            (Some(_), _) => budget,
            (None, Some(o)) => o,
            (None, None) => return self.wait(),
        };
        match b.deadline {
            Some(d) => self.wait_until(d, b.timeout),
            None => self.wait(),
        }
    }

    /// Sleeps in the connection's wake set until the result is there or
    /// `deadline`, if it has a free place; the caller then takes the result
    /// from the slot, waiting there if it is not in yet.
    fn sleep(&self, deadline: Option<Instant>) {
        if self.slot.is_ready() {
            return;
        }
        let wakes = &self.client().wakes;
        if let Some(t) = wakes.acquire() {
            self.slot.sleeper.store(t, Ordering::SeqCst);
            wakes.wait(t, || self.slot.ready.load(Ordering::SeqCst), deadline);
            // Fewer wasted wake-ups of the place's next holder.
            self.slot.sleeper.store(0, Ordering::SeqCst);
            wakes.release(t);
        }
    }

    fn wait_until(self, deadline: Instant, timeout: Duration) -> Result<R> {
        let got = match self.rx.get() {
            Some(rx) => match rx.recv_deadline(deadline) {
                Ok(v) => Some(v),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    Some(Err(self.client().closed_error("call abandoned")))
                }
            },
            None => {
                self.sleep(Some(deadline));
                self.slot.take(Some(deadline))
            }
        };
        if let Some(v) = got {
            self.client().note_woken();
            return v;
        }
        if let Some(complete) = self.client().forget(self.seq) {
            let stage = if self.client().writer.written() < self.end {
                TimeoutStage::Write
            } else {
                TimeoutStage::Reply
            };
            // Through the call's completion, as a reply would be: its
            // interceptors see the timeout. It lands in the slot (or the
            // channel), and is taken below. This thread was the sleeper
            // and is awake: the ticket is not needed.
            let _ = complete.complete(Err(Error::Timeout {
                method: self.method.to_string(),
                addr: self.client().addr.to_string(),
                timeout,
                stage,
            }));
        }
        // Ours, or the reply being handed over right now.
        match self.rx.get() {
            Some(rx) => rx.recv().ok(),
            None => self.slot.take(None),
        }
        .unwrap_or_else(|| Err(self.client().closed_error("call abandoned")))
    }
}

/// An abandoned call frees its slot at once; its reply, if it comes, is
/// read and dropped.
impl<R> Drop for Call<R> {
    fn drop(&mut self) {
        if !self.slot.is_ready() {
            // Dropped here, outside the lock: an interceptor's `after`
            // may run (the call was abandoned).
            drop(self.client().forget(self.seq));
        }
    }
}

impl<R> std::fmt::Debug for Call<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("service_method", &self.method)
            .field("seq", &self.seq)
            .finish()
    }
}
