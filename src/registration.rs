//! One registration concept for both backends, the way rpcx, Kitex and
//! go-micro have one: [`RegisterOptions`] says what a server announces and
//! how its registration lives; a [`Registrar`] (the HTTP registry's
//! [`HttpRegistrar`](crate::registry::HttpRegistrar) or etcd's
//! [`EtcdRegistrar`](crate::etcd::EtcdRegistrar)) makes a
//! [`Registration`], a handle that keeps the address registered until it is
//! dropped (which deregisters it), [deregistered](Registration::deregister)
//! or [abandoned](Registration::abandon) to expire.
//!
//! This module sits below `registry/` and `etcd/` (both implement it) and
//! above `server/` and `xclient/` (whose `ServerHandle` and `Instance` it
//! speaks of); nothing below it may import it.
//!
//! ```no_run
//! use geerpc::registration::{RegisterOptions, Registrar, Registration};
//! use geerpc::{etcd::EtcdRegistrar, registry::HttpRegistrar, Server};
//!
//! let running = Server::new().listen("127.0.0.1:0")?;
//! let use_etcd = std::env::args().any(|a| a == "--etcd");
//! // Either backend behind one trait object.
//! let registrar: Box<dyn Registrar> = if use_etcd {
//!     Box::new(EtcdRegistrar::new(&["127.0.0.1:2379"])?)
//! } else {
//!     Box::new(HttpRegistrar::new("http://127.0.0.1:9999/_rpc_/registry")?)
//! };
//! let registration = registrar.register_server(&running, RegisterOptions::new().version("1.2"))?;
//! // ... serve ...
//! registration.deregister()?; // or drop it; or `abandon()` it to expire
//! # Ok::<(), geerpc::Error>(())
//! ```
//!
//! # Defaults
//!
//! | knob | default | why |
//! |---|---|---|
//! | [`ttl`](RegisterOptions::ttl) | HTTP registry: 5 min (assumed; the registry says its own); etcd: 10 s | the registry's TTL is the registry's (5 min in Go GeeRPC, which this one keeps for its peers); an etcd lease's is ours, and short so that a dead server leaves discovery within seconds |
//! | [`renew_every`](RegisterOptions::renew_every) | a third of the TTL; etcd: at most 1 s | three renewals per TTL survive two lost ones; etcd only notices a lease it lost (a rebuilt or restored cluster) at a renewal, so it renews often (one cheap request to the leader); the HTTP registry's equivalent is its held request |
//! | [`request_timeout`](RegisterOptions::request_timeout) | 3 s | bounds each request, and so how long dropping a handle can take |
//! | [`backoff`](RegisterOptions::backoff) | 1 s doubling to 30 s | a backend that answers but refuses (full, misconfigured) is not hammered |
//! | [`reconnect`](RegisterOptions::reconnect) | 1 s | a backend back from an outage of any length has the address again within about this long |

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::server::ServerHandle;
use crate::wire::{Address, ToAddress};
use crate::xclient::Instance;

/// The default request timeout, shared by both backends.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// The default first and longest wait after a refused renewal.
pub const DEFAULT_BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));
/// The default longest wait between tries to reach a backend that does not answer.
pub const DEFAULT_RECONNECT: Duration = Duration::from_secs(1);

/// What a server announces (services, weight, metadata) and how its
/// registration lives (TTL, renewal, timeouts, retries): one type for the
/// HTTP registry and etcd. Backend-specific knobs live on the backend's
/// registrar (the etcd key prefix, the registry's held request). The
/// [module documentation](self) tabulates the defaults and why.
///
/// ```
/// use geerpc::registration::RegisterOptions;
/// use std::time::Duration;
///
/// let opts = RegisterOptions::new()
///     .services(["Arith"])
///     .weight(2)
///     .version("1.4.0")
///     .tags(["eu-west", "canary"])
///     .ttl(Duration::from_secs(60));
/// assert_eq!(opts.renew_every_or(Duration::from_secs(300)), Duration::from_secs(20));
/// assert_eq!(RegisterOptions::new().renew_every_or(Duration::from_secs(300)), Duration::from_secs(100));
/// ```
#[derive(Debug, Clone, Default)]
pub struct RegisterOptions {
    pub(crate) services: Option<Vec<String>>,
    pub(crate) weight: Option<u32>,
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) advertise: Option<std::result::Result<Address, String>>,
    pub(crate) ttl: Option<Duration>,
    pub(crate) renew_every: Option<Duration>,
    pub(crate) request_timeout: Option<Duration>,
    pub(crate) backoff: Option<(Duration, Duration)>,
    pub(crate) reconnect: Option<Duration>,
}

impl RegisterOptions {
    /// Every knob at its default: no services (a server's own when it
    /// registers a server), weight 1, no metadata, the TTL and timings of
    /// the [table](self#defaults).
    pub fn new() -> RegisterOptions {
        RegisterOptions::default()
    }

    /// The services the instance serves, so that discovery for one service
    /// finds it. Default: when registering a server, the services it
    /// serves; otherwise none (etcd then refuses: its keys are per service).
    pub fn services<S: Into<String>>(mut self, services: impl IntoIterator<Item = S>) -> Self {
        self.services = Some(services.into_iter().map(Into::into).collect());
        self
    }

    /// The instance's weight for weighted selection (default 1).
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = Some(weight);
        self
    }

    /// One metadata entry (zone, ...).
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The `version` metadata entry.
    pub fn version(self, version: impl Into<String>) -> Self {
        self.metadata("version", version)
    }

    /// The `tags` metadata entry, comma-separated.
    pub fn tags<S: AsRef<str>>(self, tags: impl IntoIterator<Item = S>) -> Self {
        let joined: Vec<String> = tags.into_iter().map(|t| t.as_ref().to_string()).collect();
        self.metadata("tags", joined.join(","))
    }

    /// The address clients dial, when registering a server whose own is not
    /// it (say it listens on `0.0.0.0`). Default: the server's address. A
    /// bare `HOST:PORT` means `tcp@`. An invalid one fails the registration.
    pub fn advertise(mut self, addr: impl ToAddress) -> Self {
        self.advertise = Some(addr.to_address().map_err(|e| e.to_string()));
        self
    }

    /// How long the registration outlives the last renewal. Default: for
    /// the HTTP registry 5 min, which is only assumed (the registry decides,
    /// and a geerpc registry says its own, which a shorter default renewal
    /// follows); for etcd 10 s, the lease's TTL (whole seconds, at least
    /// etcd's minimum of 2 s). A server that dies without deregistering
    /// stays listed for up to this long.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Time between renewals. Default: a third of the TTL (etcd: at most
    /// 1 s, since a renewal is how it notices that etcd lost the lease).
    /// Kept as set even when it is as long as the TTL (the address then
    /// drops out between renewals), which is logged once.
    pub fn renew_every(mut self, period: Duration) -> Self {
        self.renew_every = Some(period.max(Duration::from_millis(1)));
        self
    }

    /// Bound on each request to the backend (default 3 s); dropping or
    /// deregistering a handle waits about this long at most per endpoint.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout.max(Duration::from_millis(1)));
        self
    }

    /// First and longest wait before retrying a renewal the backend
    /// refused (it answered with an error); each refusal doubles the wait,
    /// capped at the renewal period. Default 1 s to 30 s. The etcd gateway's
    /// errors mean its cluster cannot serve now, so etcd retries every
    /// failure at the [`reconnect`](Self::reconnect) pace instead.
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        let first = first.max(Duration::from_millis(1));
        self.backoff = Some((first, max.max(first)));
        self
    }

    /// Longest wait between tries to reach a backend that does not answer
    /// (refused, reset, timed out; default 1 s), so that one back after an
    /// outage of any length has the address again within about that long.
    /// Each try costs a refused connection while it is down.
    pub fn reconnect(mut self, max: Duration) -> Self {
        self.reconnect = Some(max.max(Duration::from_millis(1)));
        self
    }

    /// The renewal period for a TTL of `ttl` (the backend's default TTL
    /// when none is set): as set, or a third of the TTL.
    pub fn renew_every_or(&self, default_ttl: Duration) -> Duration {
        self.renew_every
            .unwrap_or_else(|| renew_for_ttl(self.ttl.unwrap_or(default_ttl)))
    }

    pub(crate) fn ttl_or(&self, default: Duration) -> Duration {
        self.ttl.unwrap_or(default)
    }

    pub(crate) fn request_timeout_or_default(&self) -> Duration {
        self.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT)
    }

    #[cfg_attr(not(feature = "registry"), allow(dead_code))]
    pub(crate) fn backoff_or_default(&self) -> (Duration, Duration) {
        self.backoff.unwrap_or(DEFAULT_BACKOFF)
    }

    pub(crate) fn reconnect_or_default(&self) -> Duration {
        self.reconnect.unwrap_or(DEFAULT_RECONNECT)
    }

    /// The instance a registration of `addr` announces.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub(crate) fn instance(&self, addr: &Address) -> Instance {
        let mut i = Instance::new(addr.to_string()).with_weight(self.weight.unwrap_or(1));
        i.services = self.services.clone().unwrap_or_default();
        i.metadata = self.metadata.clone();
        i
    }

    /// Fills in what registering `server` implies: its services unless set,
    /// and the address to announce.
    pub(crate) fn for_server(mut self, server: &ServerHandle) -> Result<(Address, Self)> {
        if self.services.is_none() {
            let names = server.server().services().into_iter().map(|s| s.name);
            self.services = Some(names.collect());
        }
        let addr = match self.advertise.take() {
            None => server.addr().clone(),
            Some(Ok(a)) => a,
            Some(Err(reason)) => {
                return Err(Error::InvalidAddress {
                    addr: "(advertised)".into(),
                    reason,
                })
            }
        };
        Ok((addr, self))
    }
}

/// A third of `ttl`: three renewals per TTL, so two can be lost. A TTL of
/// zero (never expires) renews as if it were 5 min.
pub(crate) fn renew_for_ttl(ttl: Duration) -> Duration {
    let ttl = if ttl.is_zero() {
        Duration::from_secs(300)
    } else {
        ttl
    };
    (ttl / 3).max(Duration::from_millis(1))
}

/// A live registration, of either backend: the address stays registered
/// until the handle is dropped, [deregistered](Registration::deregister) or
/// [abandoned](Registration::abandon). Dropping it deregisters, best
/// effort, waiting at most about the request timeout per endpoint; a
/// failed deregistration is logged and the address then expires at the
/// TTL. Implemented by [`Heartbeat`](crate::Heartbeat) (HTTP registry) and
/// [`EtcdRegistration`](crate::etcd::EtcdRegistration).
pub trait Registration: Send + Sync + fmt::Debug {
    /// The registered address.
    fn addr(&self) -> &Address;

    /// Whether the last registration or renewal was accepted.
    fn is_registered(&self) -> bool;

    /// Stops renewing and deregisters now; fails if the backend did not
    /// take it (the address then expires at the TTL).
    fn deregister(self: Box<Self>) -> Result<()>;

    /// Stops renewing without deregistering: the address stays listed
    /// until the TTL runs out, as when a server dies.
    fn abandon(self: Box<Self>);
}

/// A backend that registers addresses: the HTTP registry's
/// [`HttpRegistrar`](crate::registry::HttpRegistrar) or etcd's
/// [`EtcdRegistrar`](crate::etcd::EtcdRegistrar), so that a program can
/// hold either as a `Box<dyn Registrar>`.
pub trait Registrar: Send + Sync + fmt::Debug {
    /// Registers `addr` (a bare `HOST:PORT` means `tcp@`) and keeps it
    /// registered from a thread of its own until the handle goes.
    fn register(&self, addr: &Address, options: RegisterOptions) -> Result<Box<dyn Registration>>;

    /// Registers a running server: its address (or the
    /// [advertised](RegisterOptions::advertise) one) and, unless set, its
    /// services. Besides the handle's end, the server's shutdown
    /// deregisters too, before it sends its drain notice.
    fn register_server(
        &self,
        server: &ServerHandle,
        options: RegisterOptions,
    ) -> Result<Box<dyn Registration>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_renewal_period_is_a_third_of_the_ttl_unless_set() {
        let five_min = Duration::from_secs(300);
        let o = RegisterOptions::new();
        assert_eq!(o.renew_every_or(five_min), Duration::from_secs(100));
        assert_eq!(
            o.renew_every_or(Duration::from_secs(9)),
            Duration::from_secs(3)
        );
        let o = o.ttl(Duration::ZERO);
        assert_eq!(o.renew_every_or(five_min), Duration::from_secs(100));
        let o = o.renew_every(Duration::from_secs(7));
        assert_eq!(o.renew_every_or(five_min), Duration::from_secs(7));
    }

    #[test]
    fn an_instance_says_what_the_options_announce() {
        let a: Address = "127.0.0.1:7".parse().unwrap();
        let i = RegisterOptions::new()
            .services(["A"])
            .weight(3)
            .version("1")
            .instance(&a);
        assert_eq!(i.addr, "tcp@127.0.0.1:7");
        assert_eq!((i.weight, &i.services[..]), (3, &["A".to_string()][..]));
        assert_eq!(i.metadata["version"], "1");
        assert_eq!(RegisterOptions::new().instance(&a).weight, 1);
    }
}
