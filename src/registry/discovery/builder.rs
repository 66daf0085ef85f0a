//! [`RegistryDiscoveryBuilder`]: a registry discovery's settings (service,
//! freshness, long poll, timeouts) and its build, which starts the
//! long-poll thread when asked to.
//!
//! It may only set up the shared state: fetching is `fetch`'s, installing
//! `install`'s, polling `long_poll`'s.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use super::long_poll::poll_loop;
use super::{Poller, RegistryDiscovery, Shared, State};
use crate::error::{Error, Result};
use crate::registry::access::Access;
use crate::registry::check_url;
use crate::util::threads::ThreadGroup;
use crate::util::token::Token;
use crate::xclient::Snapshot;

/// Builds a [`RegistryDiscovery`]; see [`RegistryDiscovery::builder`].
#[derive(Debug, Clone)]
pub struct RegistryDiscoveryBuilder {
    pub(super) url: String,
    pub(super) service: Option<String>,
    pub(super) include_legacy: bool,
    pub(super) refresh_after: Duration,
    pub(super) long_poll: bool,
    pub(super) poll: Duration,
    pub(super) timeout: Duration,
    pub(super) access: Access,
}

impl RegistryDiscoveryBuilder {
    /// Lists only the instances that serve `service`: those registered
    /// naming it, or, where none names it, those registered without naming
    /// any service (Go GeeRPC servers, and every instance behind a Go
    /// registry, which knows no services). See
    /// [`include_legacy`](Self::include_legacy) for the latter everywhere.
    pub fn service(mut self, service: impl Into<String>) -> Self {
        self.service = Some(service.into());
        self
    }

    /// With a [`service`](Self::service), whether instances registered
    /// without naming any service (Go GeeRPC servers) are listed even where
    /// some instance names the service (default false: only where none
    /// does). Asks a geerpc registry with `?include_legacy=true`; a Go
    /// registry lists everything anyway.
    pub fn include_legacy(mut self, on: bool) -> Self {
        self.include_legacy = on;
        self
    }

    /// How old the cached list may get before a call fetches it again
    /// (default 10 s). While the long poll is connected (see
    /// [`long_poll`](Self::long_poll)), the list is current and is not
    /// fetched again.
    pub fn refresh_after(mut self, age: Duration) -> Self {
        self.refresh_after = age;
        self
    }

    /// Whether a background thread (`geerpc-poll`, stopped when the
    /// discovery is dropped) keeps a long poll open on the registry
    /// (`GET ?watch=VERSION`), so that a registered or removed instance is
    /// in the list within a round trip (default true). Off, no thread is
    /// started and the list is fetched again by the first call that finds
    /// it older than [`refresh_after`](Self::refresh_after): what a
    /// one-shot command wants.
    ///
    /// This is how the list is kept fresh, not whether changes are told:
    /// [`Discovery::watch`](crate::Discovery::watch) hands out a channel signalled whenever the list
    /// changes, however the change was fetched, with the long poll on or
    /// off.
    pub fn long_poll(mut self, on: bool) -> Self {
        self.long_poll = on;
        self
    }

    /// How long one long poll waits for a change before asking again
    /// (default 30 s, at least 10 ms); unused without
    /// [`long_poll`](Self::long_poll).
    pub fn poll_timeout(mut self, poll: Duration) -> Self {
        self.poll = poll.max(Duration::from_millis(10));
        self
    }

    /// Bound on each plain request to the registry (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Sends `Authorization: Bearer TOKEN` with every request (default:
    /// none), for a registry whose reads are closed by a read token (its
    /// write token is accepted too). A registry that refuses it answers
    /// `401`, which the discovery's errors and log say, naming the URL and
    /// never the token. Use an `https://` URL beyond loopback, or the token
    /// crosses the network in clear.
    pub fn token(mut self, token: Token) -> Self {
        self.access.token = Some(token);
        self
    }

    /// Trusts the CA certificates in PEM file `path` for an `https://`
    /// registry, instead of the webpki roots (default: the webpki roots).
    /// A file that cannot be read makes [`build`](Self::build) fail,
    /// naming it.
    #[cfg(feature = "tls")]
    pub fn tls_ca_file(mut self, path: impl AsRef<std::path::Path>) -> Self {
        self.access.set_ca_file(path.as_ref());
        self
    }

    /// The discovery. Fails only on a malformed URL (or an unreadable CA
    /// file): a registry that is not up yet is asked again later.
    pub fn build(self) -> Result<RegistryDiscovery> {
        check_url(&self.url)?;
        self.access.check(&self.url)?;
        let shared = Arc::new(Shared {
            url: self.url,
            service: self.service,
            include_legacy: self.include_legacy,
            refresh_after: self.refresh_after,
            agent: self.access.agent(self.timeout),
            state: RwLock::new(State {
                snapshot: Snapshot {
                    version: 0,
                    instances: Arc::from(Vec::new()),
                },
                fetched: None,
                next_try: None,
                failing: false,
                last_error: None,
                remote_version: None,
                went_back_at: 0,
                epoch: None,
                kept: None,
            }),
            refreshing: AtomicBool::new(false),
            fetches: AtomicU64::new(0),
            watch_live: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            subscribers: Mutex::new(Vec::new()),
        });
        let poller = if self.long_poll {
            let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
            let agent = self.access.agent(self.poll + self.timeout);
            let threads = ThreadGroup::default();
            let (s, a, poll) = (shared.clone(), agent.clone(), self.poll);
            threads
                .spawn("geerpc-poll", None, move || {
                    poll_loop(&s, &a, poll, stop_rx)
                })
                .map_err(|e| Error::io("start discovery long-poll thread", e))?;
            Some(Poller {
                stop_tx,
                agent,
                threads,
            })
        } else {
            None
        };
        Ok(RegistryDiscovery { shared, poller })
    }
}
