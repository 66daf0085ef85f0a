//! The HTTP registry's side of [`crate::registration`]: the
//! [`HttpRegistrar`] and the [`Heartbeat`] it returns, a thread per
//! registration that POSTs its address at once, then every renewal period,
//! and retries with back-off when the registry does not answer (the thread
//! itself is in `beat.rs`).
//!
//! Between beats the thread holds a request open to a geerpc registry
//! (`GET ?hold=EPOCH`, see `epoch.rs`): when the registry dies or stops,
//! the hold ends early and the thread tries to POST again, at most
//! [`RegisterOptions::reconnect`] apart, until a registry answers; one
//! that restarted (a new epoch) has the address back at once instead of at
//! the next beat, up to 100 s later with the default TTL.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::access::Access;
use super::beat::Beat;
use super::{check_addr, check_url, request_error, status_error, Registration, ADDR_HEADERS};
use crate::error::{Error, Result};
use crate::registration::{renew_for_ttl, RegisterOptions, Registrar};
use crate::server::ServerHandle;
use crate::util::duration::GoDuration;
use crate::util::threads::ThreadGroup;
use crate::util::token::Token;
use crate::wire::{Address, ToAddress};

/// The TTL assumed until the registry says its own: Go GeeRPC's, which a
/// geerpc registry keeps by default.
const ASSUMED_TTL: Duration = crate::Registry::DEFAULT_TTL;

/// The shortest interval a registry's announced TTL can bring about, so that
/// a registry announcing nonsense cannot turn heartbeats into a flood.
const MIN_FOLLOWED_INTERVAL: Duration = Duration::from_millis(50);

/// When the next heartbeat goes out, and how retries back off.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Cadence {
    /// As the options set it; `None` follows the TTL.
    explicit: Option<Duration>,
    /// The TTL the interval is kept under: as assumed from the options,
    /// lowered when a registry announces a shorter one. Zero: none.
    ttl: Duration,
    pub(super) interval: Duration,
    /// First and longest retry wait, as set; capped at the interval.
    backoff: (Duration, Duration),
    /// Whether the interval was found too long for the TTL, and said so.
    warned: bool,
}

impl Cadence {
    fn new(options: &RegisterOptions, who: &str) -> Cadence {
        let mut c = Cadence {
            explicit: options.renew_every,
            ttl: options.ttl_or(ASSUMED_TTL),
            interval: options.renew_every_or(ASSUMED_TTL),
            backoff: options.backoff_or_default(),
            warned: false,
        };
        c.check(who);
        c
    }

    pub(super) fn backoff(&self) -> (Duration, Duration) {
        (
            self.backoff.0.min(self.interval),
            self.backoff.1.min(self.interval),
        )
    }

    /// Takes in the TTL a registry announced. Only a shorter TTL than the
    /// one in force changes anything: beating more often than a longer TTL
    /// needs costs little, and keeps an address lost by a registry restart
    /// away for one interval at most. The default interval follows; an
    /// interval set by hand stays.
    pub(super) fn follow(&mut self, announced: Duration, who: &str) {
        let shorter = !announced.is_zero() && (self.ttl.is_zero() || announced < self.ttl);
        if !shorter {
            return;
        }
        self.ttl = announced;
        if self.explicit.is_none() {
            let interval = renew_for_ttl(announced).max(MIN_FOLLOWED_INTERVAL);
            if interval < self.interval {
                log::info!(
                    "{who}: the registry's TTL is {}; a heartbeat every {}",
                    GoDuration(announced),
                    GoDuration(interval)
                );
                self.interval = interval;
            }
        }
        self.check(who);
    }

    /// Warns, once, when beats come too far apart for the TTL.
    fn check(&mut self, who: &str) {
        if !self.warned && !self.ttl.is_zero() && self.interval >= self.ttl {
            self.warned = true;
            log::warn!(
                "{who}: a heartbeat every {} is too slow for a TTL of {}: \
                 the address drops out between beats",
                GoDuration(self.interval),
                GoDuration(self.ttl)
            );
        }
    }
}

/// The HTTP registry as a [`Registrar`]: its URL, and the one knob only it
/// has, the request [held](HttpRegistrar::hold) open between beats.
///
/// ```no_run
/// use geerpc::registration::RegisterOptions;
/// use geerpc::registry::HttpRegistrar;
///
/// let registrar = HttpRegistrar::new("http://127.0.0.1:9999/_rpc_/registry")?.hold(false);
/// let heartbeat = registrar.register("127.0.0.1:7001", RegisterOptions::new().services(["Arith"]))?;
/// assert_eq!(heartbeat.addr(), "tcp@127.0.0.1:7001");
/// # Ok::<(), geerpc::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct HttpRegistrar {
    url: String,
    hold: bool,
    access: Access,
}

impl HttpRegistrar {
    /// A registrar for the registry at `url` (`http://HOST:PORT/PATH`).
    /// Fails on a URL that is not `http(s)://`.
    pub fn new(url: &str) -> Result<HttpRegistrar> {
        check_url(url)?;
        Ok(HttpRegistrar {
            url: url.to_string(),
            hold: true,
            access: Access::default(),
        })
    }

    /// Sends `Authorization: Bearer TOKEN` with every request: each beat,
    /// the held request between beats, and the deregistering `DELETE`
    /// (default: none). A registry started with a write token refuses
    /// registrations without it (`401`): the heartbeat then logs, naming
    /// the URL and never the token, that the token is missing or wrong, and
    /// keeps retrying with back-off. Use an `https://` URL beyond
    /// loopback, or the token crosses the network in clear.
    pub fn token(mut self, token: Token) -> Self {
        self.access.token = Some(token);
        self
    }

    /// Trusts the CA certificates in PEM file `path` for an `https://`
    /// registry, instead of the webpki roots (default: the webpki roots).
    /// A file that cannot be read makes [`register`](Self::register)
    /// fail, naming it.
    #[cfg(feature = "tls")]
    pub fn tls_ca_file(mut self, path: impl AsRef<std::path::Path>) -> Self {
        self.access.set_ca_file(path.as_ref());
        self
    }

    /// Whether to hold a request open to a geerpc registry between beats
    /// (default true), so that a registry that stops or restarts is noticed
    /// at once rather than at the next beat. It costs the registry one
    /// open connection per heartbeat; a registry that does not say its
    /// epoch (a Go one) is never held.
    pub fn hold(mut self, hold: bool) -> Self {
        self.hold = hold;
        self
    }

    /// The registry's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Starts heartbeating `addr` from a thread named `geerpc-hb`; the
    /// first heartbeat goes out at once. A bare `HOST:PORT` is registered
    /// as `tcp@HOST:PORT`: the registry's entries name their protocol,
    /// since Go clients split them on `@`. Fails only on a malformed
    /// address.
    pub fn register(&self, addr: impl ToAddress, options: RegisterOptions) -> Result<Heartbeat> {
        let address = addr.to_address()?;
        let addr = address.to_string();
        check_addr(&addr)?;
        self.access.check(&self.url)?;
        let timeout = options.request_timeout_or_default();
        let cadence = Cadence::new(&options, &format!("heartbeat {addr} to {}", self.url));
        let body = Registration {
            addr: None,
            services: options.services.clone(),
            weight: options.weight,
            metadata: (!options.metadata.is_empty()).then(|| options.metadata.clone()),
        };
        let body = serde_json::to_vec(&body).map_err(|e| Error::Encode {
            what: "registration".into(),
            message: e.to_string(),
        })?;
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
        let hb = Control {
            url: self.url.clone(),
            address,
            addr,
            timeout,
            stop_tx,
            agent: self.access.agent(timeout),
            access: self.access.clone(),
            threads: ThreadGroup::default(),
            status: Arc::new(Status::default()),
            stopped: AtomicBool::new(false),
        };
        let beat = Beat {
            url: hb.url.clone(),
            addr: hb.addr.clone(),
            body,
            agent: hb.agent.clone(),
            status: hb.status.clone(),
            hold: self.hold,
            timeout,
            reconnect: options.reconnect_or_default(),
        };
        hb.threads
            .spawn("geerpc-hb", None, move || beat.run(cadence, stop_rx))
            .map_err(|e| Error::io("start heartbeat thread", e))?;
        Ok(Heartbeat {
            control: Arc::new(hb),
        })
    }

    /// Registers a running server: its address (or the
    /// [advertised](RegisterOptions::advertise) one) and, unless the
    /// options say otherwise, the services it serves. The registration
    /// lasts until the returned `Heartbeat` is dropped or
    /// [deregistered](Heartbeat::deregister), or the server shuts down
    /// ([`ServerHandle::shutdown`], or dropping its handle), whichever comes
    /// first: each deregisters at once (a `DELETE`), before a shutting-down
    /// server sends its drain notice.
    pub fn register_server(
        &self,
        server: &ServerHandle,
        options: RegisterOptions,
    ) -> Result<Heartbeat> {
        let (addr, options) = options.for_server(server)?;
        let hb = self.register(&addr, options)?;
        let on_shutdown = hb.control.clone();
        server.on_shutdown(move || {
            let _ = on_shutdown.stop(true);
        });
        Ok(hb)
    }
}

impl Registrar for HttpRegistrar {
    fn register(
        &self,
        addr: &Address,
        options: RegisterOptions,
    ) -> Result<Box<dyn crate::registration::Registration>> {
        Ok(Box::new(HttpRegistrar::register(self, addr, options)?))
    }

    fn register_server(
        &self,
        server: &ServerHandle,
        options: RegisterOptions,
    ) -> Result<Box<dyn crate::registration::Registration>> {
        Ok(Box::new(HttpRegistrar::register_server(
            self, server, options,
        )?))
    }
}

/// Keeps one address registered in an HTTP registry: the registry's
/// [`Registration`](crate::registration::Registration). Dropping it
/// deregisters (a `DELETE`, best effort, bounded by the request timeout),
/// as does [`deregister`](Heartbeat::deregister); [`abandon`](Heartbeat::abandon)
/// leaves the address to expire at the registry's TTL.
///
/// The heartbeat never gives up: a failed or refused heartbeat is logged
/// and retried with back-off. Between beats it holds a request open to a
/// geerpc registry, so that one that stops or restarts is noticed at once:
/// a restarted registry gets the address back within about
/// [`reconnect`](RegisterOptions::reconnect) (1 s) of answering, not at
/// the next beat.
///
/// ```no_run
/// use geerpc::Heartbeat;
/// use geerpc::registration::RegisterOptions;
///
/// let hb = Heartbeat::start(
///     "http://127.0.0.1:9999/_rpc_/registry",
///     "tcp@127.0.0.1:7001",
///     RegisterOptions::new().services(["Arith"]),
/// )?;
/// // ... serve ...
/// hb.deregister()?;
/// # Ok::<(), geerpc::Error>(())
/// ```
#[must_use = "dropping a Heartbeat stops it and deregisters the address"]
pub struct Heartbeat {
    control: Arc<Control>,
}

/// What stops a heartbeat, shared by the [`Heartbeat`] and, for
/// [`Heartbeat::for_server`], the server's shutdown hook: whichever comes
/// first stops it, the other finds it stopped.
struct Control {
    url: String,
    address: Address,
    /// `address` as the registry is sent it.
    addr: String,
    timeout: Duration,
    stop_tx: Sender<()>,
    agent: ureq::Agent,
    /// For the `DELETE`'s own agent (the beat's is shut down by then).
    access: Access,
    threads: ThreadGroup,
    status: Arc<Status>,
    stopped: AtomicBool,
}

#[derive(Default)]
pub(super) struct Status {
    pub(super) stopping: AtomicBool,
    pub(super) registered: AtomicBool,
    pub(super) beats: AtomicU64,
}

impl std::fmt::Debug for Heartbeat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Heartbeat")
            .field("url", &self.control.url)
            .field("addr", &self.control.addr)
            .field("registered", &self.is_registered())
            .finish_non_exhaustive()
    }
}

impl Heartbeat {
    /// Starts heartbeating `addr` to the registry at `registry_url` with
    /// the registrar's defaults: `HttpRegistrar::new(registry_url)?.register(addr, options)`
    /// (see [`HttpRegistrar::register`]).
    pub fn start(
        registry_url: &str,
        addr: impl ToAddress,
        options: RegisterOptions,
    ) -> Result<Heartbeat> {
        HttpRegistrar::new(registry_url)?.register(addr, options)
    }

    /// Registers a running server with the registrar's defaults:
    /// `HttpRegistrar::new(registry_url)?.register_server(server, options)`
    /// (see [`HttpRegistrar::register_server`]). Shaped like
    /// [`EtcdRegistration::for_server`](crate::etcd::EtcdRegistration::for_server).
    ///
    /// ```no_run
    /// use geerpc::{Heartbeat, Server, Service};
    /// use geerpc::registration::RegisterOptions;
    ///
    /// let server = Server::new();
    /// server.register(Service::new("Echo").method("Echo", |s: String| Ok::<_, String>(s)))?;
    /// let running = server.listen("tcp@127.0.0.1:0")?;
    /// let heartbeat = Heartbeat::for_server(&running, "http://127.0.0.1:9999/_rpc_/registry", RegisterOptions::new())?;
    /// // ... serve; `running.shutdown()` deregisters, and so would dropping `heartbeat` ...
    /// running.shutdown();
    /// # Ok::<(), geerpc::Error>(())
    /// ```
    pub fn for_server(
        server: &ServerHandle,
        registry_url: &str,
        options: RegisterOptions,
    ) -> Result<Heartbeat> {
        HttpRegistrar::new(registry_url)?.register_server(server, options)
    }

    /// The registered address.
    pub fn addr(&self) -> &Address {
        &self.control.address
    }

    /// The registry's URL.
    pub fn url(&self) -> &str {
        &self.control.url
    }

    /// Whether the last heartbeat was accepted.
    pub fn is_registered(&self) -> bool {
        self.control.status.registered.load(Ordering::Acquire)
    }

    /// How many heartbeats the registry has accepted.
    pub fn beats(&self) -> u64 {
        self.control.status.beats.load(Ordering::Acquire)
    }

    /// Stops heartbeating (interrupting a request in flight), joins the
    /// thread and deregisters the address with a `DELETE`. Fails when the
    /// registry did not take it (the address then expires at its TTL); an
    /// address the registry did not know is no failure, nor is a registry
    /// without `DELETE` (`405`: a Go GeeRPC registry), which is logged at
    /// info: the address stays listed there until its TTL runs out.
    pub fn deregister(self) -> Result<()> {
        self.control.stop(true)
    }

    /// Stops heartbeating without deregistering: the address stays listed
    /// until the registry's TTL runs out, as when a server dies.
    pub fn abandon(self) {
        let _ = self.control.stop(false);
    }
}

impl crate::registration::Registration for Heartbeat {
    fn addr(&self) -> &Address {
        Heartbeat::addr(self)
    }

    fn is_registered(&self) -> bool {
        Heartbeat::is_registered(self)
    }

    fn deregister(self: Box<Self>) -> Result<()> {
        Heartbeat::deregister(*self)
    }

    fn abandon(self: Box<Self>) {
        Heartbeat::abandon(*self)
    }
}

impl Control {
    /// Stops the thread and, if asked, deregisters. Only the first call
    /// does anything. Bounded: the thread is interrupted (its agent shut
    /// down) and waited for at most the request timeout, and the `DELETE`
    /// is bounded by it too.
    fn stop(&self, deregister: bool) -> Result<()> {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.status.stopping.store(true, Ordering::Release);
        let _ = self.stop_tx.try_send(());
        self.agent.clone().shutdown();
        let stuck = self.threads.join_until(Instant::now() + self.timeout);
        if stuck > 0 {
            log::warn!(
                "heartbeat {} to {}: thread did not stop",
                self.addr,
                self.url
            );
        }
        let was_registered = self.status.registered.swap(false, Ordering::AcqRel);
        if !deregister {
            log::info!(
                "heartbeat: {} abandoned; {} forgets it at its TTL",
                self.addr,
                self.url
            );
            return Ok(());
        }
        let mut rq = self.access.agent(self.timeout).delete(&self.url);
        for h in ADDR_HEADERS {
            rq = rq.header(h, &self.addr);
        }
        let what = format!("deregister {}", self.addr);
        match rq.call() {
            Ok(r) if r.status().is_success() => {
                log::info!("heartbeat: {} deregistered from {}", self.addr, self.url);
                Ok(())
            }
            // Go GeeRPC registries answer only GET and POST: nothing to
            // deregister from, nothing wrong either.
            Ok(r) if r.status() == 405 => {
                log::info!(
                    "heartbeat: {what}: the registry at {} has no DELETE (a Go GeeRPC \
                     registry?); the instance stays listed until its TTL runs out",
                    self.url
                );
                Ok(())
            }
            Ok(r) if r.status() == 404 => {
                log::debug!(
                    "heartbeat: {} was not registered at {}",
                    self.addr,
                    self.url
                );
                Ok(())
            }
            Ok(mut r) => Err(status_error(&self.url, &what, &mut r)),
            // A registry that is down forgets the address at its TTL
            // anyway; worth a warning only if it had it.
            Err(e) if !was_registered => {
                log::debug!("heartbeat: {what} from {}: {e}", self.url);
                Ok(())
            }
            Err(e) => Err(request_error(&self.url, &what, e)),
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        if let Err(e) = self.control.stop(true) {
            log::warn!("heartbeat: {e}; the registry forgets it at its TTL");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_interval_follows_a_shorter_ttl_a_registry_announces() {
        let mut c = Cadence::new(&RegisterOptions::new(), "test");
        assert_eq!(c.interval, Duration::from_secs(100));
        // Longer, or none: beating as before is soon enough.
        c.follow(Duration::from_secs(3600), "test");
        c.follow(Duration::ZERO, "test");
        assert_eq!(c.interval, Duration::from_secs(100));
        c.follow(Duration::from_secs(3), "test");
        assert_eq!(c.interval, Duration::from_secs(1));
        assert_eq!(
            c.backoff(),
            (Duration::from_secs(1), Duration::from_secs(1))
        );
        // A replica announcing a longer TTL does not lengthen it again.
        c.follow(Duration::from_secs(600), "test");
        assert_eq!(c.interval, Duration::from_secs(1));
        assert!(!c.warned);
        // A TTL of a millisecond does not make a flood; it is said once.
        c.follow(Duration::from_millis(1), "test");
        assert_eq!(c.interval, MIN_FOLLOWED_INTERVAL);
        assert!(c.warned);
    }

    #[test]
    fn an_interval_set_by_hand_stays_and_is_warned_about_once() {
        let opts = RegisterOptions::new().renew_every(Duration::from_secs(10));
        let mut c = Cadence::new(&opts, "test");
        assert!(!c.warned);
        c.follow(Duration::from_secs(20), "test");
        assert_eq!(c.interval, Duration::from_secs(10));
        assert!(!c.warned);
        c.follow(Duration::from_secs(1), "test");
        assert_eq!(c.interval, Duration::from_secs(10));
        assert!(c.warned);
        // Set too long for the TTL set beside it: said at the start.
        let opts = RegisterOptions::new()
            .ttl(Duration::from_secs(1))
            .renew_every(Duration::from_secs(10));
        assert!(Cadence::new(&opts, "test").warned);
    }
}
