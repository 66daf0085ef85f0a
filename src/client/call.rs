//! A call in flight, returned by [`Client::go`](super::Client::go), the
//! one-shot slot its result is delivered to, and a call's time budget.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::{Condvar, Mutex};

use super::wake::Ticket;
use super::{Inner, Owner};
use crate::error::{Error, Result, TimeoutStage};

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

/// Where a call's result lands. Waiting parks the thread at once (a channel's
/// blocking receive spins first, which with many callers on two cores burns
/// the CPU the reader needs). A channel is attached only for callers that
/// want to select.
pub(super) struct Slot<R> {
    ready: AtomicBool,
    /// The waiter's place in the connection's wake set, if it sleeps there.
    sleeper: AtomicU32,
    state: Mutex<SlotState<R>>,
    cv: Condvar,
}

struct SlotState<R> {
    value: Option<Result<R>>,
    /// The value was handed out (to `try_wait` or a receiver): later waits
    /// end at once instead of waiting for a value that will not come.
    taken: bool,
    /// Set once someone asked for a receiver: the result goes there instead.
    tx: Option<Sender<Result<R>>>,
}

impl<R> Slot<R> {
    pub(super) fn new() -> Self {
        Slot {
            ready: AtomicBool::new(false),
            sleeper: AtomicU32::new(0),
            state: Mutex::new(SlotState {
                value: None,
                taken: false,
                tx: None,
            }),
            cv: Condvar::new(),
        }
    }

    /// Delivers the result; returns the waiter's place in the wake set,
    /// which the caller must wake (0: none).
    pub(super) fn complete(&self, value: Result<R>) -> Ticket {
        let mut s = self.state.lock();
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
    fn try_take(&self) -> Option<Result<R>> {
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
#[must_use = "dropping a Call abandons its reply"]
pub struct Call<R> {
    pub(super) owner: Arc<Owner>,
    pub(super) seq: u64,
    /// Where the request ends in the connection's byte stream: it is
    /// written once the writer's count reaches this.
    pub(super) end: u64,
    pub(super) method: Arc<str>,
    pub(super) slot: Arc<Slot<R>>,
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

    /// Waits for the result.
    pub fn wait(self) -> Result<R> {
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

    /// Waits at most `timeout`; then the call is abandoned with
    /// [`Error::Timeout`] and its late reply discarded. The error's stage
    /// is [`TimeoutStage::Write`] if the request was not all written by
    /// then. `Duration::MAX` (any timeout too large for a deadline) waits
    /// as [`wait`](Call::wait) does.
    pub fn wait_timeout(self, timeout: Duration) -> Result<R> {
        self.wait_within(Budget::after(timeout))
    }

    /// Waits until `deadline`; see [`wait_timeout`](Call::wait_timeout).
    pub fn wait_deadline(self, deadline: Instant) -> Result<R> {
        self.wait_within(Budget::until(deadline))
    }

    pub(crate) fn wait_within(self, budget: Budget) -> Result<R> {
        match budget.deadline {
            Some(d) => self.wait_until(d, budget.timeout),
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
        if self.client().forget(self.seq) {
            let stage = if self.client().writer.written() < self.end {
                TimeoutStage::Write
            } else {
                TimeoutStage::Reply
            };
            return Err(Error::Timeout {
                method: self.method.to_string(),
                addr: self.client().addr.to_string(),
                timeout,
                stage,
            });
        }
        // The reply is being handed over right now.
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
            self.client().forget(self.seq);
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
