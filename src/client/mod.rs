//! The RPC client: one connection, any number of concurrent calls.
//!
//! # How replies are read
//!
//! Whoever holds the `reader` lock is the connection's reader. A caller
//! blocked in [`Client::call`] takes that role itself when it is free: it
//! reads replies, hands those of other calls to their callers, and stops at
//! its own, so a lone caller makes its round trip without waking any other
//! thread. When it lets go of the role while calls are still pending, or
//! when a caller cannot lead (timed calls, [`Client::go`]), the client's own
//! reader thread is woken to read in its place.
//!
//! Invariant: while any call is pending, either some thread holds `reader`,
//! or the reader thread has been woken and will take it. Every path that
//! lets go of `reader` re-checks `pending` after unlocking and wakes the
//! reader thread if needed, and every caller that registers a call and does
//! not lead checks whether `reader` is held after registering.
//!
//! # How requests are batched
//!
//! While a reader hands out replies it has already read (`dispatching`),
//! the callers it wakes only queue their next request; the reader writes
//! them all in one syscall before it blocks again. Callers blocked in a
//! wait it wakes together, once it has handed out all it has read (see
//! [`wake`]): woken one by one, each would take the reader's CPU in turn.
//! A caller woken that way that sends its next request on *another*
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
//!
//! This file holds more than one idea and is over 600 lines; issue 17
//! (API and layout) splits it by idea. Hardening (issue 16) left it whole
//! so that parallel changes to it merged cleanly.

mod call;
mod dial;
mod drain;
mod foreign;
mod wake;

use std::collections::HashMap;
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::code::Code;
use crate::error::{Error, Result, TimeoutStage};
use crate::util::threads::ThreadGroup;
use crate::wire::address::Address;
use crate::wire::codec::{encode_message, Codec, Header};
use crate::wire::frame::FrameReader;
use crate::wire::transport::Stream;
use crate::wire::writer::SharedWriter;

pub use call::Call;
pub(crate) use call::{deadline_after, Budget};
pub use dial::ClientBuilder;

/// How long a connection must have been idle before a call checks that the
/// server has not closed it.
const IDLE_CHECK: Duration = Duration::from_millis(100);

/// What a pending call is told when its reply (or failure) arrives: the
/// reply body in the connection's codec, or the error. It returns the
/// caller's place in the connection's [`wake::WakeSet`] if the caller
/// sleeps there (0 if not): the completing thread must wake it.
type Completion = Box<dyn FnOnce(std::result::Result<&[u8], Error>) -> wake::Ticket + Send>;

/// How often a caller waiting for room in the send queue looks whether the
/// connection closed meanwhile (nothing then drains the queue).
const ROOM_CHECK: Duration = Duration::from_millis(100);

/// A connection to one server, shared by any number of threads.
///
/// Cloning is cheap; the connection closes when the last clone is dropped
/// or [`Client::close`] is called.
///
/// ```no_run
/// use geerpc::Client;
/// use std::time::Duration;
///
/// let client = Client::dial("tcp@127.0.0.1:7001")?;
/// let sum: i64 = client.call("Arith.Sum", &serde_json::json!({"Num1": 1, "Num2": 2}))?;
/// let slow = client.go::<_, i64>("Arith.Sum", &serde_json::json!({"Num1": 3, "Num2": 4}))?;
/// let later = slow.wait_timeout(Duration::from_secs(1))?;
/// # Ok::<(), geerpc::Error>(())
/// ```
#[derive(Clone)]
#[must_use = "dropping the last clone of a Client closes its connection"]
pub struct Client {
    inner: Arc<Inner>,
    owner: Arc<Owner>,
}

/// Closes the connection and joins the reader thread when the last
/// [`Client`] clone goes.
struct Owner {
    inner: Arc<Inner>,
    threads: ThreadGroup,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.inner.close("client closed");
        self.threads
            .join_until(Instant::now() + Duration::from_secs(5));
    }
}

struct Pending {
    calls: HashMap<u64, Completion>,
    /// Why the connection is closed, once it is.
    closed: Option<String>,
}

struct Inner {
    addr: String,
    codec: Codec,
    stream: Stream,
    writer: SharedWriter,
    reader: Mutex<FrameReader<Stream>>,
    pending: Mutex<Pending>,
    seq: AtomicU64,
    wake_reader: Sender<()>,
    /// Set while a reader hands out replies it has already read. Callers
    /// woken meanwhile only queue their next request; the reader writes the
    /// whole batch before it blocks again, in one syscall.
    dispatching: AtomicBool,
    /// Requests queued into the current dispatch's batch, here or deferred
    /// to it. Compared with how many callers the reader handed results to,
    /// it tells roughly whether some of them have yet to queue their next
    /// request (it counts requests, not callers).
    rejoined: AtomicUsize,
    /// Other connections with requests queued by callers this reader woke,
    /// flushed when the dispatch ends (see "How requests are batched").
    deferred: Mutex<Vec<Arc<Inner>>>,
    /// Callers blocked for their replies, woken a batch at a time.
    wakes: wake::WakeSet,
    /// When this client was made, and when it last sent (nanoseconds since
    /// then), to tell an idle connection.
    epoch: Instant,
    last_send: AtomicU64,
    /// `pending.closed.is_some()`, readable without the lock: an XClient
    /// asks before every call.
    closed: AtomicBool,
    /// The server sent its drain notice: no new request goes out here.
    going_away: AtomicBool,
    /// Wakes the writer thread, started the first time a reader could not
    /// write all it had batched without blocking.
    wake_writer: std::sync::OnceLock<Sender<()>>,
    /// How long the writer thread waits for the server to take a byte.
    write_timeout: Duration,
    /// This client, for starting the writer thread from `&self`.
    me: std::sync::Weak<Inner>,
    threads: ThreadGroup,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.inner.addr)
            .field("codec", &self.inner.codec)
            .field("alive", &self.is_alive())
            .finish()
    }
}

impl Client {
    /// Connects to `addr` with default settings (JSON, 10 s connect timeout).
    pub fn dial(addr: &str) -> Result<Client> {
        ClientBuilder::default().dial(addr)
    }

    /// Settings other than the defaults.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    fn start(
        addr: Address,
        codec: Codec,
        stream: Stream,
        reader: FrameReader<Stream>,
        writer: SharedWriter,
        write_timeout: Duration,
    ) -> Client {
        let (wake_tx, wake_rx) = crossbeam_channel::bounded(1);
        let threads = ThreadGroup::default();
        let inner = Arc::new_cyclic(|me| Inner {
            addr: addr.to_string(),
            codec,
            writer,
            stream,
            reader: Mutex::new(reader),
            pending: Mutex::new(Pending {
                calls: HashMap::new(),
                closed: None,
            }),
            seq: AtomicU64::new(1),
            wake_reader: wake_tx,
            dispatching: AtomicBool::new(false),
            rejoined: AtomicUsize::new(0),
            deferred: Mutex::new(Vec::new()),
            wakes: wake::WakeSet::default(),
            epoch: Instant::now(),
            last_send: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            going_away: AtomicBool::new(false),
            wake_writer: std::sync::OnceLock::new(),
            write_timeout,
            me: me.clone(),
            threads: threads.clone(),
        });
        let r = inner.clone();
        // The default stack: this thread decodes the callers' reply types.
        if let Err(e) = threads.spawn("geerpc-cl-read", None, move || reader_thread(&r, wake_rx)) {
            inner.close(&format!("cannot start reader thread: {e}"));
        }
        Client {
            owner: Arc::new(Owner {
                inner: inner.clone(),
                threads,
            }),
            inner,
        }
    }

    /// The address this client dialled.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// Whether the connection is still usable: not closed, and its server
    /// has not said it is going away (see [`Client::is_going_away`]).
    pub fn is_alive(&self) -> bool {
        !self.inner.closed.load(Ordering::Acquire) && !self.is_going_away()
    }

    /// Whether the server sent its drain notice (PROTOCOL.md section 9) on
    /// this connection. From then on a call made here fails at once with
    /// [`Error::NotSent`] (it is safe to send it elsewhere: dial again, or
    /// let an [`XClient`](crate::XClient) pick another instance), while
    /// calls already sent still get their replies. The client does not
    /// re-dial by itself: a `Client` is one connection.
    pub fn is_going_away(&self) -> bool {
        self.inner.going_away.load(Ordering::Acquire)
    }

    /// Whether this thread's last reply came from this connection's reader
    /// while it handed out a batch: a request this thread sends here next
    /// can join the write of the batch's other callers. The XClient keeps
    /// such a thread on the instance (see [`SelectContext::home`]).
    ///
    /// [`SelectContext::home`]: crate::SelectContext::home
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

    /// Calls `service_method` and waits for the reply.
    pub fn call<A, R>(&self, service_method: &str, args: &A) -> Result<R>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        self.send(service_method, args, None)?.wait()
    }

    /// Calls `service_method`; `timeout` bounds the whole call: waiting for
    /// room to queue the request (see
    /// [`ClientBuilder::max_queued_bytes`]), writing it, and waiting for
    /// the reply. Past it the call ends with [`Error::Timeout`] naming the
    /// stage, its slot is freed and a late reply is discarded. Any
    /// `Duration` is accepted; one too large for a deadline
    /// (`Duration::MAX`) means none.
    ///
    /// A request still unwritten at the timeout stays queued, whole: the
    /// connection's other calls share its byte stream, and cutting a
    /// message short would break it for all of them. It goes out when the
    /// server reads again (it may then run, its reply dropped), or the
    /// connection closes after [`ClientBuilder::write_timeout`].
    pub fn call_timeout<A, R>(&self, service_method: &str, args: &A, timeout: Duration) -> Result<R>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        self.call_within(service_method, args, Budget::after(timeout))
    }

    /// Like [`call_timeout`](Client::call_timeout) with an absolute deadline.
    pub fn call_deadline<A, R>(
        &self,
        service_method: &str,
        args: &A,
        deadline: Instant,
    ) -> Result<R>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        self.call_within(service_method, args, Budget::until(deadline))
    }

    /// A call bounded by `budget` in every stage.
    pub(crate) fn call_within<A, R>(
        &self,
        service_method: &str,
        args: &A,
        budget: Budget,
    ) -> Result<R>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        match budget.deadline {
            None => self.call(service_method, args),
            Some(_) => self
                .go_within(service_method, args, budget)?
                .wait_within(budget),
        }
    }

    /// [`go`](Client::go) for a call with a deadline: waiting for room in
    /// the send queue ends at the deadline, and the request is written
    /// without blocking (what the socket does not take at once, the
    /// connection's writer thread sends), so `go` returns at once.
    pub(crate) fn go_within<A, R>(
        &self,
        service_method: &str,
        args: &A,
        budget: Budget,
    ) -> Result<Call<R>>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        let call = self.send(service_method, args, Some(budget))?;
        self.inner.ensure_reader();
        Ok(call)
    }

    /// Sends a call and returns at once; the [`Call`] is waited on, polled
    /// or selected on later.
    pub fn go<A, R>(&self, service_method: &str, args: &A) -> Result<Call<R>>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        let call = self.send(service_method, args, None)?;
        self.inner.ensure_reader();
        Ok(call)
    }

    /// Registers the call, then sends it. With a `budget` the caller never
    /// blocks on the socket (see [`go_within`](Client::go_within)).
    fn send<A, R>(&self, service_method: &str, args: &A, budget: Option<Budget>) -> Result<Call<R>>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        let inner = &self.inner;
        let codec = inner.codec;
        let method: Arc<str> = service_method.into();
        let slot = Arc::new(call::Slot::new());
        let (m, s) = (method.clone(), slot.clone());
        let complete: Completion = Box::new(move |outcome| {
            s.complete(outcome.and_then(|body| decode_reply::<R>(codec, body, &m)))
        });
        let seq = inner.seq.fetch_add(1, Ordering::Relaxed);
        inner.check_idle_close();
        // Backpressure: past the cap, wait for room before queueing (two
        // relaxed loads when there is room).
        if inner.writer.is_full() && !inner.wait_room(budget.and_then(|b| b.deadline)) {
            if let Some(b) = budget {
                return Err(b.timed_out(service_method, &inner.addr, TimeoutStage::Write));
            }
        }
        {
            let mut p = inner.pending.lock();
            if let Some(reason) = &p.closed {
                return Err(Error::NotSent {
                    addr: inner.addr.clone(),
                    method: service_method.to_string(),
                    reason: reason.clone(),
                });
            }
            if inner.going_away.load(Ordering::Acquire) {
                return Err(inner.going_away_error(service_method));
            }
            p.calls.insert(seq, complete);
        }
        let header = Header {
            service_method: service_method.to_string(),
            seq,
            error: String::new(),
            code: None,
        };
        // Checked again under the writer's lock, which `going_away` takes
        // after setting the flag: a request is either queued before the
        // connection's last flush, or refused here (see `going_away`).
        let queued = inner.writer.enqueue_marked(|out| {
            if inner.going_away.load(Ordering::Acquire) {
                return Err(inner.going_away_error(service_method));
            }
            encode_message(codec, out, &header, args)
        });
        let end = match queued {
            Ok(end) => end,
            Err(e) => {
                inner.pending.lock().calls.remove(&seq);
                return Err(e);
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
            rx: std::sync::OnceLock::new(),
        })
    }

    /// Closes the connection: every pending call ends with an error, later
    /// calls fail at once.
    pub fn close(&self) {
        self.inner.close("client closed");
        self.owner
            .threads
            .join_until(Instant::now() + Duration::from_secs(5));
    }
}

impl Inner {
    fn closed_error(&self, reason: &str) -> Error {
        Error::ConnectionClosed {
            addr: self.addr.clone(),
            reason: reason.to_string(),
        }
    }

    /// Ends every pending call with an error and refuses new ones.
    fn close(&self, reason: &str) {
        let calls = {
            let mut p = self.pending.lock();
            if p.closed.is_none() {
                p.closed = Some(reason.to_string());
                self.closed.store(true, Ordering::Release);
            }
            std::mem::take(&mut p.calls)
        };
        let _ = self.stream.shutdown(Shutdown::Both);
        for (_, complete) in calls {
            self.wakes.mark(complete(Err(self.closed_error(reason))));
        }
        self.wakes.wake_marked();
        let _ = self.wake_reader.try_send(());
        if let Some(w) = self.wake_writer.get() {
            let _ = w.try_send(());
        }
    }

    /// A connection left idle may have been closed by the server with no
    /// thread reading to notice; a call sent on it would fail as sent, and
    /// could not safely be retried. So before sending on a connection idle
    /// for a while (never between calls back to back), look without
    /// blocking whether the server has gone; if so the call is refused as
    /// [`Error::NotSent`].
    fn check_idle_close(&self) {
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

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
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

    /// Wakes the reader thread if nobody is reading while calls are pending.
    fn ensure_reader(&self) {
        if !self.reader.is_locked() {
            let _ = self.wake_reader.try_send(());
        }
    }

    /// Reads replies (leads) until `done`, if no other thread is reading;
    /// otherwise returns at once and the caller waits for its slot.
    fn lead_until(&self, done: impl Fn() -> bool) {
        if done() {
            return;
        }
        // If someone else reads, it wakes the reader thread when it stops.
        if let Some(mut rd) = self.reader.try_lock() {
            self.read_replies(&mut rd, &done);
            drop(rd);
            if !self.pending.lock().calls.is_empty() {
                let _ = self.wake_reader.try_send(());
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

    /// Ends a dispatch: writes what the callers it woke have queued, here
    /// and on the connections they deferred to it.
    fn end_dispatch(&self) {
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
    fn note_woken(self: &Arc<Self>) {
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
    fn flush_from_reader(&self) {
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

    fn wake_writer_thread(&self) {
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

    fn read_replies_batched(&self, rd: &mut FrameReader<Stream>, done: impl Fn() -> bool) {
        let mut handed = 0usize;
        while !done() {
            if !rd.has_buffered_message(self.codec) {
                // About to block: wake the callers handed results, all at
                // once, then send what they queue. If some have not queued
                // yet, perhaps for want of this CPU, let them first (once;
                // see "How requests are batched").
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
            let msg = match read {
                Ok(Some(m)) => m,
                Ok(None) => {
                    self.close("connection closed by the server");
                    return;
                }
                Err(e) => {
                    let e = foreign::protocol(rd, &self.addr).unwrap_or(e);
                    log::warn!("rpc client {}: {e}; closing the connection", self.addr);
                    self.close(&e.to_string());
                    return;
                }
            };
            let header = match self.codec.decode_header(rd.bytes(msg.header.clone())) {
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
                Some(complete) if !header.error.is_empty() => complete(Err(Error::Remote {
                    method: header.service_method,
                    message: header.error,
                    code: header.code,
                })),
                Some(complete) => complete(Ok(rd.bytes(msg.body))),
            };
            self.wakes.mark(sleeper);
        }
    }

    /// Forgets a pending call; false if its reply is already being delivered.
    fn forget(&self, seq: u64) -> bool {
        self.pending.lock().calls.remove(&seq).is_some()
    }
}

/// Decodes a reply for its caller. A `Deserialize` impl that panics must
/// not take the connection's reader with it (every other pending call would
/// wait for ever): the panic becomes this call's error.
fn decode_reply<R: DeserializeOwned>(codec: Codec, body: &[u8], method: &str) -> Result<R> {
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        codec.decode::<R>(body, "reply")
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

thread_local! {
    /// The connection whose reader handed this thread its last result while
    /// dispatching a batch; taken by the thread's next send. Weak, so that a
    /// thread that never sends again does not keep a closed connection's
    /// socket open.
    static WOKEN_BY: std::cell::Cell<Option<std::sync::Weak<Inner>>> =
        const { std::cell::Cell::new(None) };
}

/// The client's own reader: reads whenever woken while calls are pending
/// and no caller is reading.
fn reader_thread(inner: &Inner, wake: Receiver<()>) {
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
    use super::*;
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
            // Generous for a loaded machine; see tests/timeouts.rs.
            assert!(t0.elapsed() < timeout + Duration::from_millis(250));
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
