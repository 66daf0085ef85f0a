//! Keeping a server registered: a thread per registration that POSTs its
//! address at once, then every interval, and retries with back-off when the
//! registry does not answer.
//!
//! Between beats the thread holds a request open to a geerpc registry
//! (`GET ?hold=EPOCH`, see `epoch.rs`): when the registry dies or stops,
//! the hold ends early and the thread tries to POST again, at most
//! [`HeartbeatOptions::reconnect`] apart, until a registry answers; one
//! that restarted (a new epoch) has the address back at once instead of at
//! the next beat, up to 4 min later with the default TTL.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::beat::Beat;
use super::{agent, check_addr, check_url, Registration, ADDR_HEADERS};
use crate::error::{Error, Result};
use crate::server::ServerHandle;
use crate::util::duration::GoDuration;
use crate::util::threads::ThreadGroup;

/// What a [`Heartbeat`] registers and how often.
///
/// ```
/// use geerpc::registry::HeartbeatOptions;
/// use std::time::Duration;
///
/// let opts = HeartbeatOptions::new()
///     .services(["Arith"])
///     .weight(2)
///     .version("1.4.0")
///     .tags(["eu-west", "canary"])
///     .ttl(Duration::from_secs(60));
/// assert_eq!(opts.interval_or_default(), Duration::from_secs(30));
/// assert_eq!(HeartbeatOptions::new().interval_or_default(), Duration::from_secs(240));
/// ```
#[derive(Debug, Clone)]
pub struct HeartbeatOptions {
    services: Option<Vec<String>>,
    weight: Option<u32>,
    metadata: BTreeMap<String, String>,
    ttl: Duration,
    interval: Option<Duration>,
    backoff: (Duration, Duration),
    reconnect: Duration,
    hold: bool,
    timeout: Duration,
}

impl Default for HeartbeatOptions {
    fn default() -> Self {
        HeartbeatOptions::new()
    }
}

impl HeartbeatOptions {
    /// Defaults: the registry's default TTL (5 min), a heartbeat every
    /// TTL - 1 min (sooner if the registry says its TTL is shorter), retries
    /// after 1 s doubling up to 30 s (1 s at most while the registry cannot
    /// be reached), a hold open to a geerpc registry between beats,
    /// requests bounded by 5 s, no services or metadata.
    pub fn new() -> HeartbeatOptions {
        HeartbeatOptions {
            services: None,
            weight: None,
            metadata: BTreeMap::new(),
            ttl: crate::Registry::DEFAULT_TTL,
            interval: None,
            backoff: (Duration::from_secs(1), Duration::from_secs(30)),
            reconnect: Duration::from_secs(1),
            hold: true,
            timeout: Duration::from_secs(5),
        }
    }

    /// The services the instance serves, so that discovery for one service
    /// finds it. [`Heartbeat::for_server`] fills in the server's services.
    pub fn services<S: Into<String>>(mut self, services: impl IntoIterator<Item = S>) -> Self {
        self.services = Some(services.into_iter().map(Into::into).collect());
        self
    }

    /// The instance's weight for weighted selection.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = Some(weight);
        self
    }

    /// One metadata entry.
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

    /// The registry's TTL, from which the default interval follows; a
    /// geerpc registry also says its TTL in every answer, and a shorter
    /// one shortens the default interval (a Go registry does not say).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Time between heartbeats, instead of the default. Kept even when it is
    /// as long as the TTL (the address then drops out between beats), which
    /// is logged once.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = Some(interval.max(Duration::from_millis(1)));
        self
    }

    /// First and longest wait before retrying a failed heartbeat; each
    /// failure doubles the wait. The longest is capped at the interval.
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        let first = first.max(Duration::from_millis(1));
        self.backoff = (first, max.max(first));
        self
    }

    /// Longest wait between tries to reach a registry that cannot be
    /// reached at all (connection refused, reset or timed out): default
    /// 1 s, so that a registry restarted after an outage of any length has
    /// the address back within about that long. Tries start 100 ms apart
    /// (or the first [`backoff`](Self::backoff), if shorter) and double;
    /// each costs a refused connection while the registry is down. A
    /// registry that answers but refuses keeps the slower `backoff`.
    pub fn reconnect(mut self, max: Duration) -> Self {
        self.reconnect = max.max(Duration::from_millis(1));
        self
    }

    /// Whether to hold a request open to a geerpc registry between beats
    /// (default true), so that a registry that stops or restarts is noticed
    /// at once rather than at the next beat. It costs the registry one
    /// open connection per heartbeat; a registry that does not say its
    /// epoch (a Go one) is never held.
    pub fn watch_registry(mut self, hold: bool) -> Self {
        self.hold = hold;
        self
    }

    /// Bound on each HTTP request (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The interval to start with: as set, or TTL - 1 min (half the TTL
    /// when the TTL is under 2 min; 4 min for a TTL of zero, which never
    /// expires). Unless set, it shortens if the registry announces a TTL
    /// shorter than [`ttl`](HeartbeatOptions::ttl).
    pub fn interval_or_default(&self) -> Duration {
        self.interval.unwrap_or_else(|| interval_for_ttl(self.ttl))
    }

    fn registration(&self) -> Registration {
        Registration {
            addr: None,
            services: self.services.clone(),
            weight: self.weight,
            metadata: (!self.metadata.is_empty()).then(|| self.metadata.clone()),
        }
    }
}

/// The default interval for a TTL: TTL - 1 min, or half a TTL under 2 min.
fn interval_for_ttl(ttl: Duration) -> Duration {
    let ttl = if ttl.is_zero() {
        crate::Registry::DEFAULT_TTL
    } else {
        ttl
    };
    if ttl >= Duration::from_secs(120) {
        ttl - Duration::from_secs(60)
    } else {
        (ttl / 2).max(Duration::from_millis(1))
    }
}

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
    fn new(options: &HeartbeatOptions, who: &str) -> Cadence {
        let mut c = Cadence {
            explicit: options.interval,
            ttl: options.ttl,
            interval: options.interval_or_default(),
            backoff: options.backoff,
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
            let interval = interval_for_ttl(announced).max(MIN_FOLLOWED_INTERVAL);
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

/// Keeps one address registered until stopped; stopping (or dropping it)
/// deregisters the address and joins its thread.
///
/// The heartbeat never gives up: a failed or refused heartbeat is logged
/// and retried with back-off. Between beats it holds a request open to a
/// geerpc registry, so that one that stops or restarts is noticed at once:
/// a restarted registry gets the address back within about
/// [`reconnect`](HeartbeatOptions::reconnect) (1 s) of answering, not at
/// the next beat.
///
/// ```no_run
/// use geerpc::Heartbeat;
/// use geerpc::registry::HeartbeatOptions;
///
/// let hb = Heartbeat::start(
///     "http://127.0.0.1:9999/_rpc_/registry",
///     "tcp@127.0.0.1:7001",
///     HeartbeatOptions::new().services(["Arith"]),
/// )?;
/// // ... serve ...
/// hb.stop();
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
    addr: String,
    timeout: Duration,
    stop_tx: Sender<()>,
    agent: ureq::Agent,
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
    /// Starts heartbeating `addr` (`PROTOCOL@ADDR`) to the registry at
    /// `registry_url` from a thread named `geerpc-hb`. The first
    /// heartbeat goes out at once. Fails only on a malformed address or URL.
    pub fn start(
        registry_url: &str,
        addr: impl Into<String>,
        options: HeartbeatOptions,
    ) -> Result<Heartbeat> {
        let addr = addr.into();
        check_url(registry_url)?;
        check_addr(&addr)?;
        let cadence = Cadence::new(&options, &format!("heartbeat {addr} to {registry_url}"));
        let body = serde_json::to_vec(&options.registration()).map_err(|e| Error::Encode {
            what: "registration".into(),
            message: e.to_string(),
        })?;
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
        let hb = Control {
            url: registry_url.to_string(),
            addr,
            timeout: options.timeout,
            stop_tx,
            agent: agent(options.timeout),
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
            hold: options.hold,
            timeout: options.timeout,
            reconnect: options.reconnect,
        };
        hb.threads
            .spawn("geerpc-hb", None, move || beat.run(cadence, stop_rx))
            .map_err(|e| Error::io("start heartbeat thread", e))?;
        Ok(Heartbeat {
            control: Arc::new(hb),
        })
    }

    /// Registers a running server: its address, and unless the options say
    /// otherwise the services it serves. The registration lasts until the
    /// returned `Heartbeat` is dropped or [stopped](Heartbeat::stop), or the
    /// server shuts down ([`ServerHandle::shutdown`], or dropping its
    /// handle), whichever comes first: each deregisters at once (a
    /// `DELETE`), before a shutting-down server sends its drain notice.
    /// This is how [`etcd::register`](crate::etcd::register)'s
    /// registration behaves too. Keep the handle for as long as the server
    /// should stay registered.
    ///
    /// ```no_run
    /// use geerpc::{Heartbeat, Server, Service};
    /// use geerpc::registry::HeartbeatOptions;
    ///
    /// let server = Server::new();
    /// server.register(Service::new("Echo").method("Echo", |s: String| Ok::<_, String>(s)))?;
    /// let running = server.listen("tcp@127.0.0.1:0")?;
    /// let heartbeat = Heartbeat::for_server(&running, "http://127.0.0.1:9999/_rpc_/registry", HeartbeatOptions::new())?;
    /// // ... serve; `running.shutdown()` deregisters, and so would dropping `heartbeat` ...
    /// running.shutdown();
    /// # Ok::<(), geerpc::Error>(())
    /// ```
    pub fn for_server(
        server: &ServerHandle,
        registry_url: &str,
        mut options: HeartbeatOptions,
    ) -> Result<Heartbeat> {
        if options.services.is_none() {
            options.services = Some(
                server
                    .server()
                    .services()
                    .into_iter()
                    .map(|s| s.name)
                    .collect(),
            );
        }
        let hb = Heartbeat::start(registry_url, server.addr().to_string(), options)?;
        let on_shutdown = hb.control.clone();
        server.on_shutdown(move || on_shutdown.stop());
        Ok(hb)
    }

    /// The registered address.
    pub fn addr(&self) -> &str {
        &self.control.addr
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
    /// thread and deregisters the address with a `DELETE`. Calling it again
    /// does nothing.
    pub fn stop(&self) {
        self.control.stop();
    }
}

impl Control {
    fn stop(&self) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        self.status.stopping.store(true, Ordering::Release);
        let _ = self.stop_tx.try_send(());
        self.agent.clone().shutdown();
        let stuck = self
            .threads
            .join_until(Instant::now() + Duration::from_secs(2));
        if stuck > 0 {
            log::warn!(
                "heartbeat {} to {}: thread did not stop",
                self.addr,
                self.url
            );
        }
        let was_registered = self.status.registered.swap(false, Ordering::AcqRel);
        let agent = agent(self.timeout.min(Duration::from_secs(2)));
        let mut rq = agent.delete(&self.url);
        for h in ADDR_HEADERS {
            rq = rq.header(h, &self.addr);
        }
        match rq.call() {
            Ok(r) if r.status().is_success() => {
                log::info!("heartbeat: {} deregistered from {}", self.addr, self.url)
            }
            Ok(r) if r.status() == 404 => {
                log::debug!(
                    "heartbeat: {} was not registered at {}",
                    self.addr,
                    self.url
                )
            }
            Ok(r) => log::warn!(
                "heartbeat: deregister {} from {}: status {}",
                self.addr,
                self.url,
                r.status()
            ),
            // A registry that is down forgets the address at its TTL anyway.
            Err(e) if was_registered => {
                log::warn!("heartbeat: deregister {} from {}: {e}", self.addr, self.url)
            }
            Err(e) => log::debug!("heartbeat: deregister {} from {}: {e}", self.addr, self.url),
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.control.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_interval_follows_a_shorter_ttl_a_registry_announces() {
        let mut c = Cadence::new(&HeartbeatOptions::new(), "test");
        assert_eq!(c.interval, Duration::from_secs(240));
        // Longer, or none: beating as before is soon enough.
        c.follow(Duration::from_secs(3600), "test");
        c.follow(Duration::ZERO, "test");
        assert_eq!(c.interval, Duration::from_secs(240));
        c.follow(Duration::from_secs(1), "test");
        assert_eq!(c.interval, Duration::from_millis(500));
        assert_eq!(
            c.backoff(),
            (Duration::from_millis(500), Duration::from_millis(500))
        );
        // A replica announcing a longer TTL does not lengthen it again.
        c.follow(Duration::from_secs(600), "test");
        assert_eq!(c.interval, Duration::from_millis(500));
        assert!(!c.warned);
        // A TTL of a millisecond does not make a flood; it is said once.
        c.follow(Duration::from_millis(1), "test");
        assert_eq!(c.interval, MIN_FOLLOWED_INTERVAL);
        assert!(c.warned);
    }

    #[test]
    fn an_interval_set_by_hand_stays_and_is_warned_about_once() {
        let opts = HeartbeatOptions::new().interval(Duration::from_secs(10));
        let mut c = Cadence::new(&opts, "test");
        assert!(!c.warned);
        c.follow(Duration::from_secs(20), "test");
        assert_eq!(c.interval, Duration::from_secs(10));
        assert!(!c.warned);
        c.follow(Duration::from_secs(1), "test");
        assert_eq!(c.interval, Duration::from_secs(10));
        assert!(c.warned);
        // Set too long for the TTL set beside it: said at the start.
        let opts = HeartbeatOptions::new()
            .ttl(Duration::from_secs(1))
            .interval(Duration::from_secs(10));
        assert!(Cadence::new(&opts, "test").warned);
    }
}
