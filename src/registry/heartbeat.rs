//! Keeping a server registered: a thread per registration that POSTs its
//! address at once, then every interval, and retries with back-off when the
//! registry does not answer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rand::Rng;

use super::{
    agent, check_addr, check_url, request_error, status_error, Registration, ADDR_HEADERS,
};
use crate::duration::GoDuration;
use crate::error::{Error, Result};
use crate::server::ServerHandle;
use crate::threads::ThreadGroup;

/// What a [`Heartbeat`] registers and how often.
///
/// ```
/// use geerpc::HeartbeatOptions;
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
    timeout: Duration,
}

impl Default for HeartbeatOptions {
    fn default() -> Self {
        HeartbeatOptions::new()
    }
}

impl HeartbeatOptions {
    /// Defaults: the registry's default TTL (5 min), a heartbeat every
    /// TTL - 1 min, retries after 1 s doubling up to 30 s, requests bounded
    /// by 5 s, no services or metadata.
    pub fn new() -> HeartbeatOptions {
        HeartbeatOptions {
            services: None,
            weight: None,
            metadata: BTreeMap::new(),
            ttl: crate::Registry::DEFAULT_TTL,
            interval: None,
            backoff: (Duration::from_secs(1), Duration::from_secs(30)),
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

    /// The registry's TTL, from which the default interval follows.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Time between heartbeats, instead of the default.
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

    /// Bound on each HTTP request (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The interval in force: as set, or TTL - 1 min (half the TTL when the
    /// TTL is under 2 min; 4 min for a TTL of zero, which never expires).
    pub fn interval_or_default(&self) -> Duration {
        let ttl = if self.ttl.is_zero() {
            crate::Registry::DEFAULT_TTL
        } else {
            self.ttl
        };
        self.interval.unwrap_or(if ttl >= Duration::from_secs(120) {
            ttl - Duration::from_secs(60)
        } else {
            (ttl / 2).max(Duration::from_millis(1))
        })
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

/// Keeps one address registered until stopped; stopping (or dropping it)
/// deregisters the address and joins its thread.
///
/// The heartbeat never gives up: a failed or refused heartbeat is logged
/// and retried with back-off, so a registry that restarts gets the address
/// back within one back-off.
///
/// ```no_run
/// use geerpc::{Heartbeat, HeartbeatOptions};
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
pub struct Heartbeat {
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
struct Status {
    stopping: AtomicBool,
    registered: AtomicBool,
    beats: AtomicU64,
}

impl std::fmt::Debug for Heartbeat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Heartbeat")
            .field("url", &self.url)
            .field("addr", &self.addr)
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
        let interval = options.interval_or_default();
        let backoff = (
            options.backoff.0.min(interval),
            options.backoff.1.min(interval),
        );
        let body = serde_json::to_vec(&options.registration()).map_err(|e| Error::Encode {
            what: "registration".into(),
            message: e.to_string(),
        })?;
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
        let hb = Heartbeat {
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
        };
        hb.threads
            .spawn("geerpc-hb", None, move || {
                beat.run(interval, backoff, stop_rx)
            })
            .map_err(|e| Error::io("start heartbeat thread", e))?;
        Ok(hb)
    }

    /// Registers a running server: its address, and unless the options say
    /// otherwise the services it serves. The heartbeat lives as long as the
    /// server: [`ServerHandle::shutdown`] (or dropping the handle)
    /// deregisters it and joins its thread. The returned handle tells how
    /// registration goes ([`is_registered`](Heartbeat::is_registered)) and
    /// can [`stop`](Heartbeat::stop) it sooner; dropping it does not.
    ///
    /// ```no_run
    /// use geerpc::{Heartbeat, HeartbeatOptions, Server, Service};
    ///
    /// let server = Server::new();
    /// server.register(Service::new("Echo").method("Echo", |s: String| Ok::<_, String>(s)))?;
    /// let running = server.listen("tcp@127.0.0.1:0")?;
    /// Heartbeat::for_server(&running, "http://127.0.0.1:9999/_rpc_/registry", HeartbeatOptions::new())?;
    /// # Ok::<(), geerpc::Error>(())
    /// ```
    pub fn for_server(
        server: &ServerHandle,
        registry_url: &str,
        mut options: HeartbeatOptions,
    ) -> Result<Arc<Heartbeat>> {
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
        let hb = Arc::new(Heartbeat::start(
            registry_url,
            server.addr().to_string(),
            options,
        )?);
        let on_shutdown = hb.clone();
        server.on_shutdown(move || on_shutdown.stop());
        Ok(hb)
    }

    /// The registered address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The registry's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the last heartbeat was accepted.
    pub fn is_registered(&self) -> bool {
        self.status.registered.load(Ordering::Acquire)
    }

    /// How many heartbeats the registry has accepted.
    pub fn beats(&self) -> u64 {
        self.status.beats.load(Ordering::Acquire)
    }

    /// Stops heartbeating (interrupting a request in flight), joins the
    /// thread and deregisters the address with a `DELETE`. Calling it again
    /// does nothing.
    pub fn stop(&self) {
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
        self.stop();
    }
}

/// What the heartbeat thread owns.
struct Beat {
    url: String,
    addr: String,
    body: Vec<u8>,
    agent: ureq::Agent,
    status: Arc<Status>,
}

impl Beat {
    fn run(&self, interval: Duration, (first, max): (Duration, Duration), stop: Receiver<()>) {
        let mut delay = first;
        let mut failures = 0u32;
        loop {
            let wait = match self.send() {
                Ok(()) => {
                    if failures > 0 {
                        log::info!(
                            "heartbeat: {} registered again at {} after {failures} failures",
                            self.addr,
                            self.url
                        );
                    } else if self.status.beats.load(Ordering::Acquire) == 0 {
                        log::info!("heartbeat: {} registered at {}", self.addr, self.url);
                    }
                    failures = 0;
                    delay = first;
                    self.status.registered.store(true, Ordering::Release);
                    self.status.beats.fetch_add(1, Ordering::AcqRel);
                    interval
                }
                Err(_) if self.status.stopping.load(Ordering::Acquire) => break,
                Err(e) => {
                    self.status.registered.store(false, Ordering::Release);
                    failures += 1;
                    // Spread retries so that servers that lost the same
                    // registry do not come back in lockstep.
                    let wait = delay.mul_f64(rand::rng().random_range(0.8..1.0));
                    let wait = Duration::from_millis(wait.as_millis().max(1) as u64);
                    log::warn!("{e}; retrying in {} (failure {failures})", GoDuration(wait));
                    delay = (delay * 2).min(max);
                    wait
                }
            };
            match stop.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => break,
            }
        }
    }

    fn send(&self) -> Result<()> {
        let what = format!("heartbeat for {}", self.addr);
        // All three spellings, so that either Go registry takes it too.
        let mut rq = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json");
        for h in ADDR_HEADERS {
            rq = rq.header(h, &self.addr);
        }
        let mut resp = rq
            .send(&self.body[..])
            .map_err(|e| request_error(&self.url, &what, e))?;
        if resp.status().is_success() {
            return Ok(());
        }
        Err(status_error(&self.url, &what, &mut resp))
    }
}
