//! The RPC client: one connection, any number of concurrent calls.
//!
//! [`Client`] is a handle on one connection's shared state (`Inner`). This
//! file holds that state, the connection's opening and closing, and the
//! public calling methods, which only pick a path; the paths live by idea:
//!
//! - `dial`: [`ClientBuilder`], connect, the HTTP `CONNECT` exchange and
//!   the handshake;
//! - `send`: registering a call and getting its request written, alone or
//!   batched with other callers' ("How requests are batched");
//! - `reader`: reading replies and handing them to their callers, a
//!   blocked caller or the reader thread ("How replies are read");
//! - `call`: a call in flight ([`Call`]), the slot its result lands in,
//!   its time budget;
//! - `wake`: waking a batch of blocked callers with one syscall;
//! - `drain`: the client's side of a server's drain notice;
//! - `foreign`: naming an HTTP or TLS peer that answered instead of an RPC
//!   server;
//! - `outbound`: what travels with a call (deadline, metadata, trace:
//!   PROTOCOL.md section 8), [`Client::call_with`] and the XClient's entry
//!   point;
//! - `intercept`: client [`Interceptor`]s;
//! - `typed`: [`Caller`], what the clients `#[geerpc::service]` generates
//!   call through.
//!
//! The client may import from the context and wire layers, `meta`, `util`,
//! `error` and `code` only: never from the server, the XClient or
//! discovery.

mod call;
mod dial;
mod drain;
mod foreign;
mod intercept;
#[cfg(feature = "metrics")]
mod metrics;
mod outbound;
mod reader;
mod send;
mod typed;
mod wake;

use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::context::Scope;
use crate::error::{Error, Result};
use crate::meta::Meta;
use crate::util::threads::ThreadGroup;
use crate::wire::address::{Address, ToAddress};
use crate::wire::codec::{Body, Codec};
use crate::wire::frame::FrameReader;
use crate::wire::transport::Stream;
use crate::wire::writer::SharedWriter;

pub use call::Call;
pub(crate) use call::{deadline_after, Budget};
pub use dial::ClientBuilder;
pub use intercept::{Finished, Interceptor, Outgoing};
#[cfg(feature = "metrics")]
pub use metrics::{ClientMetrics, MAX_INSTANCES};
pub(crate) use outbound::Outbound;
pub use typed::{Caller, PendingCall};

/// What a pending call is told when its reply (or failure) arrives.
trait Complete: Send + Sync {
    /// Hands the call the reply, or the error; at most once (its entry in
    /// the pending map is removed first). Returns the caller's place in
    /// the connection's [`wake::WakeSet`] if the caller sleeps there (0 if
    /// not): the completing thread must wake it.
    fn complete(&self, outcome: std::result::Result<Reply<'_>, Error>) -> wake::Ticket;
}

/// A pending call's entry: its [`call::Slot`], the one allocation a call
/// makes (it was three: the slot, a boxed closure and the method's name).
/// Dropped uncalled with the last reference to it, the call was abandoned.
type Completion = Arc<dyn Complete>;

/// A reply for its call: the body in the connection's codec, and the
/// reply header's metadata (`None`, the common case: none; moved from the
/// decoded header, never copied).
struct Reply<'a> {
    body: Body<'a>,
    meta: Option<Meta>,
}

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
    calls: foldhash::HashMap<u64, Completion>,
    /// Why the connection is closed, once it is.
    closed: Option<String>,
}

/// One connection's state, shared by its callers, its reader thread and its
/// writer thread.
struct Inner {
    /// The address dialled; errors and logs name it.
    addr: Address,
    codec: Codec,
    stream: Stream,
    writer: SharedWriter,
    /// Held by whoever reads replies (see "How replies are read" in
    /// `reader`).
    reader: Mutex<FrameReader<Stream>>,
    /// Calls sent and not yet answered, by sequence number.
    pending: Mutex<Pending>,
    seq: AtomicU64,
    /// Wakes the reader thread, started the first time a call waits with
    /// nobody reading (a timed call, [`Client::go`], or a leader that let
    /// go with calls pending): a client whose callers always lead (one
    /// blocking caller per connection) never starts one, which at 1000
    /// connections is 1000 threads fewer.
    wake_reader: std::sync::OnceLock<Sender<()>>,
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
    /// flushed when the dispatch ends (see "How requests are batched" in
    /// `send`).
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
    /// What every call gets: default metadata, tracing, interceptors.
    defaults: Arc<outbound::Defaults>,
    threads: ThreadGroup,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.inner.addr.to_string())
            .field("codec", &self.inner.codec)
            .field("alive", &self.is_alive())
            .finish()
    }
}

impl Client {
    /// Connects to `addr` with default settings (JSON, 10 s connect timeout).
    ///
    /// `addr` is anything [`ToAddress`] takes: `tcp@HOST:PORT`,
    /// `http@HOST:PORT`, `unix@PATH`, a bare `HOST:PORT` (which means
    /// `tcp@`), an [`Address`] or a [`SocketAddr`](std::net::SocketAddr).
    /// [`Client::addr`] then tells the parsed address, and errors name it.
    ///
    /// ```
    /// use geerpc::{Address, Client, Server, Service};
    ///
    /// let server = Server::new();
    /// server.register(Service::new("Echo").method("Echo", |s: String| Ok::<_, String>(s)))?;
    /// let running = server.listen("127.0.0.1:0")?;
    /// let addr: &Address = running.addr(); // tcp@127.0.0.1:PORT
    ///
    /// // The same server, named four ways.
    /// let by_address = Client::dial(addr)?;
    /// let by_string = Client::dial(addr.to_string())?;
    /// let bare = Client::dial(addr.target())?;
    /// let by_socket: std::net::SocketAddr = addr.target().parse().unwrap();
    /// let by_socket = Client::dial(by_socket)?;
    /// for client in [&by_address, &by_string, &bare, &by_socket] {
    ///     assert_eq!(client.addr(), addr);
    ///     assert_eq!(client.call::<_, String>("Echo.Echo", "hi")?, "hi");
    /// }
    /// // What is not an address fails before any connect, naming it.
    /// let err = Client::dial("ftp@127.0.0.1:1").unwrap_err();
    /// assert!(err.to_string().contains("ftp@127.0.0.1:1"));
    /// # Ok::<(), geerpc::Error>(())
    /// ```
    pub fn dial(addr: impl ToAddress) -> Result<Client> {
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
        defaults: outbound::Defaults,
    ) -> Client {
        let threads = ThreadGroup::default();
        let inner = Arc::new_cyclic(|me| Inner {
            addr,
            codec,
            writer,
            stream,
            reader: Mutex::new(reader),
            pending: Mutex::new(Pending {
                calls: foldhash::HashMap::default(),
                closed: None,
            }),
            seq: AtomicU64::new(1),
            wake_reader: std::sync::OnceLock::new(),
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
            defaults: Arc::new(defaults),
            threads: threads.clone(),
        });
        Client {
            owner: Arc::new(Owner {
                inner: inner.clone(),
                threads,
            }),
            inner,
        }
    }

    /// The address this client dialled.
    pub fn addr(&self) -> &Address {
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

    /// Calls `service_method` and waits for the reply.
    ///
    /// The call inherits the thread's [`Scope`]: inside a handler (or
    /// [`Scope::run`]) with a deadline it is a timed call, which ends with
    /// [`Error::Timeout`] at that deadline and tells the server the time
    /// left (PROTOCOL.md section 8), and it continues the scope's trace.
    /// Outside any scope it is sent as a Go client sends it.
    pub fn call<A, R>(&self, service_method: &str, args: &A) -> Result<R>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        let scope = Scope::current();
        if self.inner.defaults.plain && scope.deadline().is_none() && scope.trace().is_none() {
            // The hot path: as before this crate knew of scopes.
            return self
                .send(service_method, args, None, outbound::Extra::default())?
                .wait();
        }
        let budget = outbound::with_scope(None, &scope);
        self.call_full(service_method, args, budget, &Meta::new(), scope.trace())
    }

    /// Calls `service_method`; `timeout` bounds the whole call: waiting for
    /// room to queue the request (see
    /// [`ClientBuilder::max_queued_bytes`]), writing it, and waiting for
    /// the reply. Past it the call ends with [`Error::Timeout`] naming the
    /// stage, its slot is freed and a late reply is discarded. Any
    /// `Duration` is accepted; one too large for a deadline
    /// (`Duration::MAX`) means none. The server is told the time left when
    /// the request is written (`Timeout`, PROTOCOL.md section 8), so it
    /// gives up when the caller does. A deadline of the thread's [`Scope`]
    /// that comes earlier binds instead.
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

    /// A call bounded by `budget` (or the thread's scope's deadline, if
    /// earlier) in every stage.
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
        let scope = Scope::current();
        let budget = outbound::with_scope(Some(budget), &scope);
        self.call_full(service_method, args, budget, &Meta::new(), scope.trace())
    }

    /// Sends a call and returns at once; the [`Call`] is waited on, polled
    /// or selected on later. As with [`call`](Client::call), the call
    /// inherits the thread's [`Scope`]: with a deadline there, the
    /// `Call`'s [`wait`](Call::wait) ends at it.
    pub fn go<A, R>(&self, service_method: &str, args: &A) -> Result<Call<R>>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        let scope = Scope::current();
        let call =
            if self.inner.defaults.plain && scope.deadline().is_none() && scope.trace().is_none() {
                self.send(service_method, args, None, outbound::Extra::default())?
            } else {
                let budget = outbound::with_scope(None, &scope);
                self.go_full(service_method, args, budget, &Meta::new(), scope.trace())?
            };
        self.inner.ensure_reader();
        Ok(call)
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
            addr: self.addr.to_string(),
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
            self.wakes
                .mark(complete.complete(Err(self.closed_error(reason))));
        }
        self.wakes.wake_marked();
        if let Some(r) = self.wake_reader.get() {
            let _ = r.try_send(());
        }
        if let Some(w) = self.wake_writer.get() {
            let _ = w.try_send(());
        }
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}
