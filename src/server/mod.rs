//! The RPC server: services by name, one listening port, a thread per
//! connection that runs handlers inline and hands its reading role on when a
//! handler is slow.
//!
//! # How a connection is served
//!
//! Each connection has a *leader*: the one thread that reads requests. The
//! leader runs each request's handler itself, so a fast call costs no thread
//! hand-off at all. So that a slow handler does not hold up the requests
//! behind it, a per-server monitor thread looks at every connection each
//! tick: a leader still inside the same handler as on the previous tick loses
//! its role, and a new thread becomes the connection's leader. The old one
//! finishes its handler, sends its reply and ends. (Go's runtime hands off a
//! processor blocked in a syscall the same way.) The monitor also sends the
//! handle-timeout error reply at each call's deadline.
//!
//! Each call's own path, from its request to its reply (its deadline from
//! `Timeout` and its arrival, `Meta`, admission, interceptors, codes), is
//! in `call.rs`; interceptors are in `intercept.rs`.
//!
//! Everything a peer can make the server hold is bounded: see
//! src/server/limits.rs for connections, queued replies, idle time and
//! the handshake deadline.

mod accept;
mod auth;
mod builder;
mod call;
mod conn;
#[cfg(feature = "debug-page")]
mod debug;
mod drain;
mod http;
mod intercept;
mod limits;
#[cfg(feature = "metrics")]
mod metrics;
mod monitor;
pub(crate) mod service;
mod spans;
pub(crate) mod stats;

use std::collections::HashMap;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use crate::code::text;
use crate::error::{Error, Result};
use crate::server::service::{name_list, Method};
use crate::util::threads::ThreadGroup;
use crate::wire::address::{Address, Protocol, ToAddress};

use accept::{accept_loop, Listener, WakeTarget};
use builder::Config;
use conn::Conn;
use monitor::Deadline;

/// Default `max_write_queue`: a few large replies, or thousands of small ones.
pub use crate::context::Context;
pub use auth::BearerAuth;
pub use builder::ServerBuilder;
pub use intercept::{Interceptor, Outcome};
#[cfg(feature = "metrics")]
pub use metrics::ServerMetrics;
pub use service::{MethodInfo, Service, ServiceInfo};
pub use spans::{LogSpans, SPAN_TARGET};
pub use stats::StatsSnapshot;

/// A set of services, served on any number of listeners.
///
/// Cloning is cheap and gives another handle on the same services.
///
/// ```
/// use geerpc::{Client, Server, Service};
///
/// let server = Server::new();
/// server.register(Service::new("Echo").method("Echo", |s: String| Ok::<_, String>(s)))?;
/// let running = server.listen("tcp@127.0.0.1:0")?;
///
/// let client = Client::dial(running.addr())?;
/// let back: String = client.call("Echo.Echo", &"hi")?;
/// assert_eq!(back, "hi");
/// running.shutdown();
/// # Ok::<(), geerpc::Error>(())
/// ```
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

struct Shared {
    services: RwLock<foldhash::HashMap<String, Arc<Service>>>,
    config: Config,
    /// Admission of calls to their handlers (`limits/concurrency.rs`).
    limiter: limits::concurrency::Limiter,
    /// Connections open over every listener (`max_connections`).
    open_conns: AtomicUsize,
    /// New connections are being refused (logged once per episode).
    refusing: AtomicBool,
    /// What the metrics read besides each method's stats.
    counters: stats::ServerCounters,
    /// Every listener's state, for counting calls in flight server-wide
    /// (`max_concurrent_calls`); dead entries are pruned as they are seen.
    runnings: Mutex<Vec<Weak<Running>>>,
    /// The debug page's last-minute samples and start time (`debug/`).
    #[cfg(feature = "debug-page")]
    page: debug::PageState,
}

impl Default for Server {
    fn default() -> Self {
        Server::new()
    }
}

impl Server {
    /// A server with default settings and no services.
    pub fn new() -> Server {
        ServerBuilder::default().build()
    }

    /// A builder for other settings.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// Adds a service. Fails on an invalid service or method name and on a
    /// service name registered already. Takes a [`Service`] or anything
    /// that becomes one: the adapter `#[geerpc::service]` generates
    /// (`server.register(ArithService::new(imp))`).
    pub fn register(&self, service: impl Into<Service>) -> Result<()> {
        let service: Service = service.into();
        if let Some(e) = service.invalid {
            return Err(e);
        }
        let mut services = self.shared.services.write();
        if services.contains_key(&service.name) {
            return Err(Error::DuplicateService(service.name));
        }
        services.insert(service.name.clone(), Arc::new(service));
        Ok(())
    }

    /// Every service with its methods and counters, sorted by name.
    pub fn services(&self) -> Vec<ServiceInfo> {
        let mut out: Vec<ServiceInfo> = self
            .shared
            .services
            .read()
            .values()
            .map(|s| s.info())
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Finds the method for `Service.Method`, or the error text to answer with.
    pub(crate) fn find(&self, service_method: &str) -> std::result::Result<Arc<Method>, String> {
        // The texts begin as Go's do (Go peers and `RemoteKind` match on
        // that); what follows names what there is, bounded by `name_list`.
        let Some((service, method)) = service_method.rsplit_once('.') else {
            return Err(format!("{}{service_method}", text::ILL_FORMED));
        };
        let services = self.shared.services.read();
        let Some(svc) = services.get(service) else {
            let names = name_list("services", services.keys().map(String::as_str));
            return Err(format!("{}{service} {names}", text::NO_SERVICE));
        };
        svc.methods.get(method).cloned().ok_or_else(|| {
            let names = name_list("methods", svc.methods.keys().map(String::as_str));
            format!("{}{method} of service {service} {names}", text::NO_METHOD)
        })
    }

    fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Listens on `addr` and serves in background threads.
    ///
    /// `addr` is anything [`ToAddress`] takes: `tcp@HOST:PORT`,
    /// `unix@PATH`, a bare `HOST:PORT` (which means `tcp@`), an
    /// [`Address`] or a [`SocketAddr`](std::net::SocketAddr); `http@HOST:PORT`
    /// listens on TCP too (see below). Port 0 picks a free port, which
    /// [`ServerHandle::addr`] tells as an address a client dials as it is.
    ///
    /// The same port tells its peers apart by their first bytes: an RPC
    /// client's handshake; an HTTP `CONNECT` on `/_geerpc_` (or `/_geeprc_`,
    /// `/myrpc`), after which the connection is an RPC one (what an
    /// `http@` client does); and an HTTP `GET` of the debug page at
    /// `/debug/geerpc` (alias `/debug/rpc`), which lists every service and
    /// method with its types, calls, errors and p50/p99 latency, as JSON at
    /// `/debug/geerpc.json` or with `Accept: application/json`. Anything else
    /// gets a short HTTP 400 or is closed, and is logged.
    ///
    /// ```
    /// use geerpc::{Address, Client, Server, Service};
    ///
    /// let server = Server::new();
    /// server.register(Service::new("Echo").method("Echo", |s: String| Ok::<_, String>(s)))?;
    /// let bare = server.listen("127.0.0.1:0")?;
    /// let tagged = server.listen("tcp@127.0.0.1:0")?;
    /// let parsed: Address = "tcp@127.0.0.1:0".parse()?;
    /// let from_address = server.listen(&parsed)?;
    /// let socket: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    /// let from_socket = server.listen(socket)?;
    /// for running in [&bare, &tagged, &from_address, &from_socket] {
    ///     // What the handle tells is what a client dials.
    ///     let client = Client::dial(running.addr())?;
    ///     assert_eq!(client.addr(), running.addr());
    ///     assert_eq!(client.call::<_, String>("Echo.Echo", "hi")?, "hi");
    /// }
    /// # Ok::<(), geerpc::Error>(())
    /// ```
    pub fn listen(&self, addr: impl ToAddress) -> Result<ServerHandle> {
        let parsed = addr.to_address()?;
        // Errors name the address as parsed: what was given, with `tcp@`
        // first if it was a bare HOST:PORT.
        let addr = &parsed;
        match parsed.protocol() {
            Protocol::Tcp | Protocol::Http => {
                let l = accept::bind_tcp(parsed.target())
                    .map_err(|e| Error::io(format!("listen on {addr}"), e))?;
                self.serve(l)
            }
            #[cfg(unix)]
            Protocol::Unix => {
                let l = accept::bind_unix(parsed.target())
                    .map_err(|e| Error::io(format!("listen on {addr}"), e))?;
                self.start(Listener::Unix(l, parsed.target().to_string()), parsed)
            }
            #[cfg(not(unix))]
            Protocol::Unix => Err(Error::InvalidAddress {
                addr: addr.to_string(),
                reason: "unix sockets are not supported here".into(),
            }),
            Protocol::Tls => Err(Error::InvalidAddress {
                addr: addr.to_string(),
                reason:
                    "a tls@ address is served by Server::listen_tls, which takes the certificate"
                        .into(),
            }),
        }
    }

    /// Listens on `addr` with TLS (TLS 1.3 or 1.2, then the RPC handshake
    /// inside it) and serves in background threads, as
    /// [`listen`](Self::listen) does; [`ServerHandle::addr`] tells
    /// `tls@HOST:PORT`. `addr` is `tls@HOST:PORT`, `tcp@HOST:PORT` or a bare
    /// `HOST:PORT`. One server may listen with TLS and without, on
    /// different ports, at once: each listener is its own handle.
    ///
    /// Each connection's TLS handshake is done on its own thread within
    /// the [handshake timeout](ServerBuilder::handshake_timeout); one that
    /// fails (a client that does not trust us, one without the client
    /// certificate `tls` requires, a plaintext client) is logged once and
    /// closed, and touches no other connection. With mutual TLS
    /// ([`ServerTls::require_client_cert`](crate::wire::ServerTls::require_client_cert))
    /// each call's [`Context::identity`](crate::Context::identity) is the
    /// verified client certificate's subject and names.
    ///
    /// ```no_run
    /// use geerpc::wire::ServerTls;
    /// use geerpc::Server;
    ///
    /// let server = Server::new();
    /// let tls = ServerTls::files("server.pem", "server.key")?;
    /// let secure = server.listen_tls("tls@0.0.0.0:7443", &tls)?;
    /// let plain = server.listen("127.0.0.1:7001")?;
    /// # Ok::<(), geerpc::Error>(())
    /// ```
    #[cfg(all(feature = "tls", unix))]
    pub fn listen_tls(
        &self,
        addr: impl ToAddress,
        tls: &crate::wire::ServerTls,
    ) -> Result<ServerHandle> {
        let parsed = addr.to_address()?;
        if !matches!(parsed.protocol(), Protocol::Tls | Protocol::Tcp) {
            return Err(Error::InvalidAddress {
                addr: parsed.to_string(),
                reason: "TLS is served on TCP: expected tls@HOST:PORT".into(),
            });
        }
        let l = accept::bind_tcp(parsed.target())
            .map_err(|e| Error::io(format!("listen on {parsed}"), e))?;
        let local = l
            .local_addr()
            .map_err(|e| Error::io("read listener address", e))?;
        let addr: Address = format!("tls@{local}").parse()?;
        self.start(Listener::Tls(l, tls.clone()), addr)
    }

    /// Serves connections accepted on `listener` in background threads.
    pub fn serve(&self, listener: TcpListener) -> Result<ServerHandle> {
        let local = listener
            .local_addr()
            .map_err(|e| Error::io("read listener address", e))?;
        self.start(Listener::Tcp(listener), Address::tcp(local))
    }

    fn start(&self, listener: Listener, addr: Address) -> Result<ServerHandle> {
        let running = Arc::new(Running {
            server: self.clone(),
            addr,
            stopping: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            next_conn_id: AtomicU64::new(1),
            threads: ThreadGroup::default(),
            inflight: AtomicUsize::new(0),
            capped: AtomicBool::new(false),
            drained: (Mutex::new(()), Condvar::new()),
            deadlines: Mutex::new(Vec::new()),
            monitor_stop: monitor::Stop::default(),
            on_shutdown: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
            refused: AtomicU64::new(0),
        });
        let wake = listener
            .wake_target()
            .map_err(|e| Error::io("read listener address", e))?;
        // Counted in max_concurrent_calls with the server's other listeners.
        self.shared.runnings.lock().push(Arc::downgrade(&running));
        let r = running.clone();
        running
            .threads
            .spawn("geerpc-monitor", None, move || monitor::run(&r))
            .map_err(|e| Error::io("start monitor thread", e))?;
        let r = running.clone();
        let accept = std::thread::Builder::new()
            .name("geerpc-accept".into())
            .spawn(move || accept_loop(&r, listener))
            .map_err(|e| Error::io("start accept thread", e))?;
        Ok(ServerHandle {
            running,
            accept: Mutex::new(Some((accept, wake))),
        })
    }
}

/// State shared by a listening server's threads.
pub(crate) struct Running {
    server: Server,
    addr: Address,
    stopping: AtomicBool,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_conn_id: AtomicU64,
    threads: ThreadGroup,
    /// Requests read and not yet answered (or dropped after a timeout).
    inflight: AtomicUsize,
    /// `max_concurrent_calls` was reached (logged once per episode).
    capped: AtomicBool,
    drained: (Mutex<()>, Condvar),
    deadlines: Mutex<Vec<Deadline>>,
    monitor_stop: monitor::Stop,
    on_shutdown: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
    stopped: AtomicBool,
    /// Requests refused as `unavailable` while draining: a shutdown waits
    /// for a quiet spell in these before it closes connections.
    refused: AtomicU64,
}

impl Running {
    fn call_started(&self) {
        // SeqCst: pairs with `stopping` (see `conn::lead` and `shutdown`).
        self.inflight.fetch_add(1, Ordering::SeqCst);
    }

    fn call_ended(&self) {
        // Down to 1 as well: shutdown may be waiting inside the last call.
        if self.inflight.fetch_sub(1, Ordering::AcqRel) <= 2
            && self.stopping.load(Ordering::Acquire)
        {
            let _guard = self.drained.0.lock();
            self.drained.1.notify_all();
        }
    }

    /// Whether shutdown drains (a grace period is set) or just stops.
    fn drains(&self) -> bool {
        !self.server.config().shutdown_grace.is_zero()
    }

    fn spawn_conn_thread(self: &Arc<Self>, conn: Arc<Conn>, first: bool) -> io::Result<()> {
        let r = self.clone();
        let stack = Some(self.server.config().thread_stack_size);
        self.threads.spawn("geerpc-conn", stack, move || {
            if first {
                conn::serve(&r, conn)
            } else {
                conn::lead(&r, conn)
            }
        })
    }
}

/// A server listening on one address. Dropping it shuts the server down.
#[must_use = "dropping the ServerHandle shuts the server down"]
pub struct ServerHandle {
    running: Arc<Running>,
    accept: Mutex<Option<(std::thread::JoinHandle<()>, WakeTarget)>>,
}

impl ServerHandle {
    /// The address clients dial: `tcp@127.0.0.1:PORT` or `unix@PATH`.
    pub fn addr(&self) -> &Address {
        &self.running.addr
    }

    /// The server whose services this serves.
    pub fn server(&self) -> &Server {
        &self.running.server
    }

    /// Runs `f` when shutdown begins, before connections are closed (for
    /// example to deregister from a registry).
    pub fn on_shutdown(&self, f: impl FnOnce() + Send + 'static) {
        self.running.on_shutdown.lock().push(Box::new(f));
    }

    /// Drains the server and stops it (PROTOCOL.md section 9):
    ///
    /// 1. runs the [`on_shutdown`](ServerHandle::on_shutdown) hooks
    ///    (deregistration) before anything else, and stops accepting;
    /// 2. writes the drain notice (`Seq` 0, `Code` `goaway`) on every
    ///    connection: a geerpc client then sends nothing more there, and an
    ///    XClient moves to other instances;
    /// 3. answers every request read before that as usual, and those read
    ///    after it with `Error` "rpc server: shutting down" and `Code`
    ///    `unavailable` (not processed: the caller may send it elsewhere);
    /// 4. once no call is in flight, closes each connection when its peer
    ///    has closed its sending side or sent nothing for 200 ms; the grace
    ///    period ([`ServerBuilder::shutdown_grace`], default 5 s) bounds
    ///    steps 3 and 4 together;
    /// 5. closes every connection left and joins every thread the server
    ///    started.
    ///
    /// With a zero grace period it skips steps 2 to 4: connections close at
    /// once. Calling it again does nothing.
    ///
    /// A handler may call it (an admin method that stops its server): it
    /// then waits for the other calls only, and the handler's own reply
    /// still goes out before its connection closes.
    pub fn shutdown(&self) {
        let run = &self.running;
        if run.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        // Taken out first: the lock must not be held while callbacks run.
        let callbacks = std::mem::take(&mut *run.on_shutdown.lock());
        for f in callbacks {
            f();
        }
        // Called from one of this server's handlers (an admin method that
        // stops the server), that call stays in flight until this returns:
        // wait for the other calls only, and leave its connection open for
        // its reply. The handler's thread sends it and closes the connection
        // (see `conn::lead`).
        let own_conn = if run.threads.is_current() {
            conn::handling()
        } else {
            None
        };
        let own_calls = usize::from(own_conn.is_some());
        let deadline = Instant::now() + run.server.config().shutdown_grace;
        // SeqCst: pairs with `call_started` (see `conn::lead`).
        run.stopping.store(true, Ordering::SeqCst);
        if let Some((accept, wake)) = self.accept.lock().take() {
            // accept() has no timeout: connect to ourselves to make it return.
            let woke = match &wake {
                WakeTarget::Tcp(a) => TcpStream::connect_timeout(a, Duration::from_secs(1)).is_ok(),
                #[cfg(unix)]
                WakeTarget::Unix(p) => std::os::unix::net::UnixStream::connect(p).is_ok(),
            };
            if woke || accept.is_finished() {
                let _ = accept.join();
            } else {
                log::warn!("rpc server {}: could not wake the accept thread", run.addr);
            }
        }
        // Readers go on reading: what was read before `stopping` runs, what
        // is read after it is refused as `unavailable` (see `conn::lead`).
        let conns: Vec<Arc<Conn>> = run.conns.lock().values().cloned().collect();
        for c in conns.iter().filter(|_| run.drains()) {
            c.send_goaway(run);
        }
        for c in &conns {
            if Some(c.id) == own_conn {
                c.close_after_reply.store(true, Ordering::Release);
            }
        }
        {
            let mut guard = run.drained.0.lock();
            while run.inflight.load(Ordering::SeqCst) > own_calls {
                if run.drained.1.wait_until(&mut guard, deadline).timed_out() {
                    break;
                }
            }
        }
        let left = run.inflight.load(Ordering::Acquire) - own_calls;
        if left > 0 {
            log::warn!(
                "rpc server {}: shutting down with {left} calls still running",
                run.addr
            );
        } else {
            drain::linger(run, own_conn, deadline);
        }
        // A call counts as ended once its reply is queued, which may be just
        // before another thread writes it: let those writes finish (without
        // blocking on peers that do not read) before closing.
        // (`conns` holds every connection unless the accept thread could
        // not be woken; any it accepts later are closed below, unwaited.)
        let writes_by = Instant::now() + Duration::from_secs(1);
        for c in &conns {
            let _ = c.writer.finish_nowait(writes_by);
        }
        let others = |c: &Arc<Conn>| Some(c.id) != own_conn;
        for c in conns.iter().filter(|c| others(c)) {
            c.close();
        }
        for c in run.conns.lock().drain().map(|(_, c)| c).filter(others) {
            c.close();
        }
        run.monitor_stop.stop();
        // Nobody answers deadlines any more; let go of their connections.
        run.deadlines.lock().clear();
        let stuck = run
            .threads
            .join_until(Instant::now().max(deadline) + Duration::from_secs(1));
        if stuck > 0 {
            log::warn!(
                "rpc server {}: {stuck} threads still in handlers after shutdown",
                run.addr
            );
        }
    }

    /// Threads of this server still running (0 after `shutdown`).
    pub fn live_threads(&self) -> usize {
        self.running.threads.live()
            + usize::from(
                self.accept
                    .lock()
                    .as_ref()
                    .is_some_and(|(h, _)| !h.is_finished()),
            )
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}
