//! [`ServerBuilder`]: the server's settings and their defaults. The bounds'
//! own knobs are documented next to their code, in `limits/`.

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use super::intercept::{Interceptor, Interceptors};
use super::limits::concurrency::{LimitConfig, Limiter};
use super::{Server, Shared};
use crate::wire::frame::DEFAULT_MAX_MESSAGE;

/// Default `max_write_queue`: a few large replies, or thousands of small ones.
pub(crate) const DEFAULT_MAX_WRITE_QUEUE: usize = 4 << 20;

/// Server settings; see [`Server::builder`].
#[derive(Debug, Clone)]
pub(super) struct Config {
    pub(super) max_message_size: usize,
    pub(super) handshake_timeout: Duration,
    pub(super) shutdown_grace: Duration,
    pub(super) thread_stack_size: usize,
    pub(super) steal_after: Duration,
    pub(super) write_timeout: Duration,
    pub(super) max_concurrent_calls: usize,
    pub(super) max_write_queue: usize,
    pub(super) max_connections: usize,
    pub(super) idle_timeout: Option<Duration>,
    /// Concurrency limits (`limits/concurrency.rs`).
    pub(super) limits: LimitConfig,
    /// Run around every call, in this order (`intercept.rs`): the
    /// authenticators first, then the plain interceptors.
    pub(super) interceptors: Interceptors,
    /// How many of `interceptors`, at the front, are authenticators.
    pub(super) authenticators: usize,
    /// Give a call without a valid `traceparent` a new trace.
    pub(super) trace_ids: bool,
    /// Serve the debug page (`/debug/geerpc` and its JSON).
    #[cfg_attr(not(feature = "debug-page"), allow(dead_code))]
    pub(super) debug_pages: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_message_size: DEFAULT_MAX_MESSAGE,
            handshake_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
            thread_stack_size: 2 << 20,
            steal_after: Duration::from_millis(1),
            write_timeout: Duration::from_secs(30),
            max_concurrent_calls: 10_000,
            max_write_queue: DEFAULT_MAX_WRITE_QUEUE,
            max_connections: 10_000,
            idle_timeout: None,
            limits: LimitConfig::default(),
            interceptors: Interceptors::default(),
            authenticators: 0,
            trace_ids: false,
            debug_pages: true,
        }
    }
}

/// Builds a [`Server`] with settings other than the defaults.
#[derive(Debug, Clone, Default)]
pub struct ServerBuilder {
    pub(super) config: Config,
}

impl ServerBuilder {
    /// Largest request or reply, in bytes (default 16 MiB). A larger request
    /// closes its connection; a larger reply becomes an error reply.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.config.max_message_size = bytes;
        self
    }

    /// How long a new connection may take for its whole handshake, from
    /// accept: the HTTP `CONNECT` head if any and the Option (default 10 s).
    /// It is one deadline, not a per-read timeout: a peer still sending at
    /// the deadline, even a byte at a time, is closed (and logged).
    pub fn handshake_timeout(mut self, t: Duration) -> Self {
        self.config.handshake_timeout = t;
        self
    }

    /// How long `shutdown` lets calls in flight finish and clients move
    /// away (default 5 s; see [`ServerHandle::shutdown`](super::ServerHandle::shutdown)). Zero stops at
    /// once, without the drain notice: connections close, calls in flight
    /// are cut, as if the process had died.
    pub fn shutdown_grace(mut self, t: Duration) -> Self {
        self.config.shutdown_grace = t;
        self
    }

    /// Stack size of connection threads, which run handlers (default 2 MiB,
    /// as for any std thread; only the pages a thread touches cost memory).
    pub fn thread_stack_size(mut self, bytes: usize) -> Self {
        self.config.thread_stack_size = bytes;
        self
    }

    /// How long a handler may hold its connection's reader before another
    /// thread takes over reading (default 1 ms).
    pub fn steal_after(mut self, t: Duration) -> Self {
        self.config.steal_after = t.max(Duration::from_micros(100));
        self
    }

    /// How long a peer may leave its replies unread before its connection
    /// is closed (default 30 s): a write that makes no progress for this
    /// long fails, and a connection whose queued replies stay at
    /// [`max_write_queue`](Self::max_write_queue) this long is closed.
    /// Other connections are served meanwhile: no handler and no thread of
    /// another connection waits on that peer.
    pub fn write_timeout(mut self, t: Duration) -> Self {
        self.config.write_timeout = t.max(Duration::from_millis(1));
        self
    }

    /// How many calls may run at once across the server before slow ones
    /// stop getting a thread of their own (default 10,000). Past it, a
    /// connection whose handler is slow reads its next request only when
    /// that handler returns, so a peer that pipelines slow calls waits on
    /// TCP flow control instead of costing the server a thread per call.
    /// Every connection still gets its own reader. The count is over every
    /// listener of this `Server` (each `listen` or `serve` call).
    ///
    /// It refuses nothing; to refuse calls past a number of running
    /// handlers (`resource_exhausted`, so that callers go elsewhere instead
    /// of queueing) see [`max_concurrency`](Self::max_concurrency),
    /// [`method_concurrency`](Self::method_concurrency) and
    /// [`adaptive_concurrency`](Self::adaptive_concurrency).
    pub fn max_concurrent_calls(mut self, n: usize) -> Self {
        self.config.max_concurrent_calls = n.max(1);
        self
    }

    /// Adds an interceptor, run around every call after those added before
    /// it (see [`Interceptor`] for the order and what a refusal does).
    /// Default: none, which costs a call nothing.
    pub fn interceptor(mut self, interceptor: impl Interceptor) -> Self {
        self.config.interceptors.push(Arc::new(interceptor));
        self
    }

    /// Adds an authenticator: an interceptor that runs before every plain
    /// one ([`interceptor`](Self::interceptor)), whatever the order of the
    /// builder calls, after the authenticators added before it. Default:
    /// none, which costs a call nothing (it is one more entry in the
    /// interceptor list, which a server without any never looks at).
    ///
    /// Its `before` sees the call's method, peer,
    /// [`identity`](crate::Context::identity) and `Meta`, and refuses with
    /// [`Status::unauthenticated`](crate::Status::unauthenticated) or
    /// [`Status::permission_denied`](crate::Status::permission_denied):
    /// then the handler never runs, the call counts as failed in the
    /// method's stats, and no plain interceptor sees the call, neither its
    /// `before` (a rate limit or a quota spends nothing on a stranger) nor
    /// its `after`. An interceptor that must see refused calls too (an
    /// audit log) can be added with `authenticator` before the real one.
    ///
    /// The server's own limits
    /// ([`max_concurrency`](Self::max_concurrency) and the like) still
    /// come first: a call they refuse reaches no interceptor, so an
    /// overloaded server answers `resource_exhausted` before it checks
    /// credentials.
    ///
    /// [`BearerAuth`](super::BearerAuth) is a ready-made one (bearer tokens
    /// and verified identities, with allow lists).
    pub fn authenticator(mut self, authenticator: impl Interceptor) -> Self {
        let at = self.config.authenticators;
        self.config.interceptors.insert(at, Arc::new(authenticator));
        self.config.authenticators += 1;
        self
    }

    /// Whether a call that comes without a valid `traceparent` in its
    /// `Meta` gets a new trace (W3C Trace Context) of its own (default
    /// off). Its handler then sees it in
    /// [`Context::trace`](crate::Context::trace), and the calls the handler
    /// makes carry it, so they share one trace id. Off, such a call has no
    /// trace and its outbound calls send none. The cost, only for calls
    /// without a `traceparent`: 24 random bytes from the thread's
    /// generator per call (no allocation, no lock).
    pub fn trace_ids(mut self, on: bool) -> Self {
        self.config.trace_ids = on;
        self
    }

    /// Whether the RPC port serves the debug page, `/debug/geerpc` (alias
    /// `/debug/rpc`) and its JSON (default on, with the `debug-page`
    /// feature). Off, those paths answer `404` like any unknown path, and
    /// the page's once-a-second sampling of the counters stops; `/metrics`
    /// and RPC are unaffected. Turn it off on a port open to the public.
    pub fn debug_pages(mut self, on: bool) -> Self {
        self.config.debug_pages = on;
        self
    }

    /// The server.
    pub fn build(self) -> Server {
        Server {
            shared: Arc::new(Shared {
                services: RwLock::new(foldhash::HashMap::default()),
                limiter: Limiter::new(&self.config.limits),
                config: self.config,
                open_conns: AtomicUsize::new(0),
                refusing: AtomicBool::new(false),
                counters: Default::default(),
                runnings: Mutex::new(Vec::new()),
                #[cfg(feature = "debug-page")]
                page: Default::default(),
            }),
        }
    }
}
