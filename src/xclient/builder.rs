//! [`XClientBuilder`]: an [`XClient`]'s settings, and the two ways to
//! start one ([`XClient::new`], [`XClient::builder`]).
//!
//! Only settings: it builds the pool but never calls through it.

use std::sync::Arc;
use std::time::Duration;

use super::client::XClient;
use super::discovery::Discovery;
use super::pool::Pool;
use super::selector::{SelectMode, Selector};
use crate::client::ClientBuilder;
use crate::context::FailMode;

/// Settings for an [`XClient`]; see [`XClient::builder`].
pub struct XClientBuilder {
    discovery: Arc<dyn Discovery>,
    selector: Arc<dyn Selector>,
    fail_mode: FailMode,
    client: ClientBuilder,
    /// Set by [`XClientBuilder::magic`] and [`XClientBuilder::connect_path`]:
    /// applied to `client` at build, so that the order of the calls does
    /// not matter.
    magic: Option<u64>,
    connect_path: Option<String>,
    timeout: Option<Duration>,
    idempotent: bool,
    backoff: (Duration, Duration),
    overload_backoff: (Duration, Duration),
}

impl XClientBuilder {
    /// One of the built-in selection policies (default random).
    pub fn select_mode(mut self, mode: SelectMode) -> Self {
        self.selector = mode.selector();
        self
    }

    /// Your own selection policy.
    pub fn selector(mut self, selector: impl Selector + 'static) -> Self {
        self.selector = Arc::new(selector);
        self
    }

    /// What to do when a call fails (default [`FailMode::FailFast`]).
    pub fn fail_mode(mut self, mode: FailMode) -> Self {
        self.fail_mode = mode;
        self
    }

    /// Settings for each connection: codec, connect and handle timeouts,
    /// magic number and `CONNECT` path (also settable here:
    /// [`magic`](Self::magic), [`connect_path`](Self::connect_path)),
    /// default [`Meta`](crate::Meta) (credentials too:
    /// [`ClientBuilder::bearer`]), and the client's interceptors
    /// ([`ClientBuilder::interceptor`]), which run once per attempt (each
    /// instance a call is sent to), not once per `XClient` call.
    pub fn client(mut self, builder: ClientBuilder) -> Self {
        self.client = builder;
        self
    }

    /// The handshake's magic number for every instance dialled (default
    /// [`MAGIC_NUMBER`](crate::MAGIC_NUMBER)): see [`ClientBuilder::magic`].
    /// Wins over the one of the builder given to
    /// [`client`](Self::client), whichever comes first. Instances behind a
    /// Go registry of the original GeeRPC series need
    /// [`LEGACY_MAGIC_NUMBER`](crate::LEGACY_MAGIC_NUMBER).
    pub fn magic(mut self, magic: u64) -> Self {
        self.magic = Some(magic);
        self
    }

    /// The path every `http@` instance dialled gets its `CONNECT` on
    /// (default `/_geerpc_`): see [`ClientBuilder::connect_path`]. Wins
    /// over the one of the builder given to [`client`](Self::client),
    /// whichever comes first. One path for all: a discovery that lists Go
    /// servers over HTTP lists those of one Go version (`/_geeprc_` for
    /// the original series', `/myrpc` for the article's); a geerpc server
    /// answers on all three. `tcp@` instances ignore it.
    ///
    /// ```no_run
    /// use geerpc::{MultiServerDiscovery, SelectMode, XClient};
    ///
    /// let discovery = MultiServerDiscovery::new(["http@10.0.0.5:9999"]);
    /// let xc = XClient::builder(discovery)
    ///     .select_mode(SelectMode::RoundRobin)
    ///     .connect_path("/_geeprc_")
    ///     .build();
    /// ```
    pub fn connect_path(mut self, path: impl Into<String>) -> Self {
        self.connect_path = Some(path.into());
        self
    }

    /// A limit on every call, broadcast and fork, retries included
    /// (default none).
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether calls are idempotent by default (default false): only then
    /// may a call that may have reached a server be sent again.
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }

    /// How long an evicted instance waits before it is probed: `min` after
    /// its failure, doubling after each failed probe up to `max` (default
    /// 100 ms to 30 s).
    pub fn eviction_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff = (min, max);
        self
    }

    /// How long an instance that refuses a call as over a limit (a reply
    /// with code `resource_exhausted`) is passed over by selection: `min`
    /// after its refusal, doubling up to `max` each time it refuses again
    /// once tried again, back to `min` after a call on it succeeds
    /// (default 100 ms to 1 s). The instance is not evicted (no probe; it
    /// is not listed by [`XClient::evicted`]) and is still picked when
    /// every instance is passed over. A `min` of zero turns this off.
    pub fn overload_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.overload_backoff = (min, max);
        self
    }

    /// The client. Connections are dialled on first use.
    pub fn build(self) -> XClient {
        let mut client = self.client;
        if let Some(magic) = self.magic {
            client = client.magic(magic);
        }
        if let Some(path) = self.connect_path {
            client = client.connect_path(path);
        }
        XClient {
            pool: Arc::new(Pool::new(client, self.backoff, self.overload_backoff)),
            discovery: self.discovery,
            selector: self.selector,
            fail_mode: self.fail_mode,
            timeout: self.timeout,
            idempotent: self.idempotent,
        }
    }
}

impl XClient {
    /// A client over `discovery` with the `mode` selection policy and
    /// default settings (fail fast, JSON, no timeout).
    pub fn new(discovery: impl Discovery + 'static, mode: SelectMode) -> XClient {
        XClient::builder(discovery).select_mode(mode).build()
    }

    /// Settings other than the defaults. Pass an `Arc` of the discovery to
    /// keep a handle on it.
    pub fn builder(discovery: impl Discovery + 'static) -> XClientBuilder {
        XClientBuilder {
            discovery: Arc::new(discovery),
            selector: SelectMode::Random.selector(),
            fail_mode: FailMode::FailFast,
            client: ClientBuilder::default(),
            magic: None,
            connect_path: None,
            timeout: None,
            idempotent: false,
            backoff: (Duration::from_millis(100), Duration::from_secs(30)),
            overload_backoff: (Duration::from_millis(100), Duration::from_secs(1)),
        }
    }
}
