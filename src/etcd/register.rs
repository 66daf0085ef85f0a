//! Registering a server in etcd under a lease kept alive by a heartbeat.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, Sender};
use parking_lot::Mutex;

use super::client::{parse_endpoints, EtcdClient, Granted};
use super::{instance_key, normalize_prefix, DEFAULT_PREFIX};
use crate::error::{Error, Result};
use crate::server::ServerHandle;
use crate::util::threads::ThreadGroup;
use crate::xclient::Instance;

/// Settings of a [`register`] call.
///
/// ```
/// use geerpc::etcd::RegisterOptions;
/// use std::time::Duration;
///
/// let options = RegisterOptions::default()
///     .ttl(Duration::from_secs(5))
///     .prefix("/myapp")
///     .metadata("zone", "a");
/// ```
#[derive(Debug, Clone)]
pub struct RegisterOptions {
    prefix: String,
    ttl: Duration,
    addr: Option<String>,
    weight: u32,
    services: Option<Vec<String>>,
    metadata: BTreeMap<String, String>,
    request_timeout: Duration,
    renew_every: Duration,
}

impl Default for RegisterOptions {
    fn default() -> Self {
        RegisterOptions {
            prefix: DEFAULT_PREFIX.to_string(),
            ttl: Duration::from_secs(10),
            addr: None,
            weight: 1,
            services: None,
            metadata: BTreeMap::new(),
            request_timeout: Duration::from_secs(3),
            renew_every: DEFAULT_RENEW_EVERY,
        }
    }
}

impl RegisterOptions {
    /// Key prefix (default [`DEFAULT_PREFIX`]).
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = normalize_prefix(prefix);
        self
    }

    /// Lease TTL (default 10 s; whole seconds, at least etcd's minimum,
    /// which is 2 s by default). A server that dies without deregistering
    /// disappears after at most this long. The lease is renewed every
    /// [`renew_every`](Self::renew_every) or every third of the TTL,
    /// whichever is shorter.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The address clients dial, when it is not the server's own (say the
    /// server listens on `0.0.0.0`). Only [`register`] uses it.
    pub fn addr(mut self, addr: impl Into<String>) -> Self {
        self.addr = Some(addr.into());
        self
    }

    /// Weight under weighted selection (default 1). Only [`register`] uses it.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// The services to register (default: every service of the server).
    /// Only [`register`] uses it.
    pub fn services<I, S>(mut self, services: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.services = Some(services.into_iter().map(Into::into).collect());
        self
    }

    /// Adds a metadata entry (version, zone, tags...). Only [`register`]
    /// uses it.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Longest time between two renewals of the lease (default 1 s; a third
    /// of the TTL when that is shorter). It is also how soon a lost lease
    /// is noticed and the server registered again: etcd rebuilt, restored
    /// or restarted empty, or the lease expired while the server was cut
    /// off. A renewal is one small request to the etcd leader (no raft
    /// round); a longer period saves those requests at the cost of a longer
    /// absence from discovery after etcd loses the lease.
    pub fn renew_every(mut self, period: Duration) -> Self {
        self.renew_every = period;
        self
    }

    /// How long one request to one etcd endpoint may take (default 3 s).
    pub fn request_timeout(mut self, t: Duration) -> Self {
        self.request_timeout = t;
        self
    }
}

/// Registers every service of a listening server in etcd, and keeps the
/// registration alive until the [`Registration`] is dropped or the server
/// shuts down, whichever comes first; both revoke it at once.
///
/// `endpoints` are the client URLs of one etcd cluster (`host:port` or
/// `http://host:port`). Fails if no endpoint accepts the registration.
///
/// ```no_run
/// use geerpc::etcd::{self, RegisterOptions};
/// # let running = geerpc::Server::new().listen("127.0.0.1:0")?;
/// let registration = etcd::register(&running, &["127.0.0.1:2379"], RegisterOptions::default())?;
/// // ... serve ...
/// running.shutdown(); // revokes the registration first
/// # Ok::<(), geerpc::Error>(())
/// ```
pub fn register<S: AsRef<str>>(
    server: &ServerHandle,
    endpoints: &[S],
    options: RegisterOptions,
) -> Result<Registration> {
    let services = match &options.services {
        Some(s) => s.clone(),
        None => server
            .server()
            .services()
            .into_iter()
            .map(|s| s.name)
            .collect(),
    };
    let addr = options
        .addr
        .clone()
        .unwrap_or_else(|| server.addr().to_string());
    let mut instance = Instance::new(addr).with_weight(options.weight);
    instance.services = services;
    instance.metadata = options.metadata.clone();
    let registration = register_instance(endpoints, instance, options)?;
    let inner = registration.inner.clone();
    server.on_shutdown(move || {
        if let Err(e) = inner.stop(true) {
            log::warn!("etcd: deregistering at shutdown: {e}");
        }
    });
    Ok(registration)
}

/// Registers `instance` under each of its services (which must not be
/// empty) and keeps it alive like [`register`], for as long as the
/// [`Registration`] lives. The options' `addr`, `weight`, `services` and
/// `metadata` are not used: the instance says them.
pub fn register_instance<S: AsRef<str>>(
    endpoints: &[S],
    instance: Instance,
    options: RegisterOptions,
) -> Result<Registration> {
    let endpoints = parse_endpoints(endpoints)?;
    if instance.services.is_empty() {
        return Err(Error::Registry {
            url: endpoints[0].clone(),
            message: format!("instance {} has no service to register", instance.addr),
        });
    }
    let value = serde_json::to_vec(&instance).map_err(|e| Error::Encode {
        what: format!("instance {}", instance.addr),
        message: e.to_string(),
    })?;
    let keys = instance
        .services
        .iter()
        .map(|s| {
            (
                instance_key(&options.prefix, s, &instance.addr),
                value.clone(),
            )
        })
        .collect();
    let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
    let inner = Arc::new(Inner {
        client: EtcdClient::new(endpoints, options.request_timeout),
        keys,
        ttl: options.ttl,
        lease: Mutex::new(Lease::default()),
        stop_tx,
        threads: ThreadGroup::default(),
        renew_max: options.renew_every,
        join_grace: options.request_timeout + Duration::from_secs(1),
    });
    if let Err(e) = inner.grant_and_put() {
        // Revokes a lease an attempt may have granted (answer lost).
        let _ = inner.stop(true);
        return Err(e);
    }
    let beating = inner.clone();
    let started = inner
        .threads
        .spawn("geerpc-etcd-hb", None, move || beating.heartbeat(stop_rx));
    if let Err(e) = started {
        let _ = inner.stop(true);
        return Err(Error::io("start etcd heartbeat thread", e));
    }
    Ok(Registration { inner, instance })
}

/// A live registration in etcd.
///
/// Dropping it deregisters, like dropping a [`Heartbeat`](crate::Heartbeat)
/// (which sends its `DELETE`): the keepalive thread stops and the lease is
/// revoked, which deletes the keys at once, so clients stop picking the
/// server within their watch's latency rather than after the TTL. The drop
/// waits at most the request timeout per endpoint for the revocation; a
/// failed one is logged and the keys then expire after the TTL. To stop
/// keeping the registration alive *without* deregistering (the keys then
/// stay until the TTL runs out, as when a process dies), call
/// [`abandon`](Registration::abandon). A registration made by [`register`]
/// is also revoked when the server shuts down, before it stops serving.
#[must_use = "dropping the Registration deregisters the server at once"]
pub struct Registration {
    inner: Arc<Inner>,
    instance: Instance,
}

impl Registration {
    /// The instance registered.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// The keys registered, one per service.
    pub fn keys(&self) -> Vec<String> {
        self.inner.keys.iter().map(|(k, _)| k.clone()).collect()
    }

    /// The etcd lease the keys hang on now (it changes when the server
    /// registers again after losing its lease).
    pub fn lease_id(&self) -> i64 {
        self.inner.lease.lock().id
    }

    /// The TTL etcd granted (it may raise the TTL asked for).
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.inner.lease.lock().ttl.max(0) as u64)
    }

    /// Stops the heartbeat and revokes the lease. Fails if no endpoint took
    /// the revocation (the keys then expire after the TTL).
    pub fn deregister(self) -> Result<()> {
        self.inner.stop(true)
    }

    /// Stops the heartbeat without revoking the lease: the keys stay until
    /// the TTL runs out, as when a server dies without deregistering.
    pub fn abandon(self) {
        let _ = self.inner.stop(false);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Err(e) = self.inner.stop(true) {
            log::warn!("etcd: deregistering {}: {e}", self.instance.addr);
        }
    }
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("addr", &self.instance.addr)
            .field("lease_id", &self.lease_id())
            .finish()
    }
}

#[derive(Default)]
struct Lease {
    id: i64,
    ttl: i64,
    /// A lease ID asked for whose grant may have happened (its answer was
    /// lost) or whose keys are not known to be put: retried with the same
    /// ID, revoked by `stop`. 0: none.
    pending: i64,
    /// Set once by `stop`; a lease granted after it is revoked by whoever
    /// granted it.
    stopped: bool,
}

struct Inner {
    client: EtcdClient,
    keys: Vec<(String, Vec<u8>)>,
    ttl: Duration,
    lease: Mutex<Lease>,
    stop_tx: Sender<()>,
    threads: ThreadGroup,
    /// The longest time between renewals ([`RegisterOptions::renew_every`]).
    renew_max: Duration,
    /// How long `stop` waits for the heartbeat thread (a connect in
    /// progress is not cut short).
    join_grace: Duration,
}

/// How long a failing heartbeat waits before it tries again: 0.5 to 1 s.
fn retry_wait() -> Duration {
    Duration::from_millis(rand::random_range(500..=1000))
}

/// The default of [`RegisterOptions::renew_every`].
const DEFAULT_RENEW_EVERY: Duration = Duration::from_secs(1);

/// How often a lease of `ttl` seconds is renewed: every third of it, or
/// every `max` if sooner (a lost lease is noticed at the next renewal).
fn renew_every(ttl: i64, max: Duration) -> Duration {
    Duration::from_millis((ttl.max(1) as u64) * 1000 / 3)
        .min(max)
        .max(Duration::from_millis(100))
}

/// A fresh lease ID: random, positive, non-zero. Two clients picking the
/// same one is a 1 in 2^63 event; the grant then answers "exists" on a
/// first attempt and another ID is drawn.
fn new_lease_id() -> i64 {
    loop {
        let id = rand::random::<i64>() & i64::MAX;
        if id != 0 {
            return id;
        }
    }
}

impl Inner {
    /// Grants a new lease and puts every key under it.
    fn grant_and_put(&self) -> Result<()> {
        let (id, ttl) = self.grant()?;
        // On failure the lease stays `pending`: the next attempt asks for
        // the same ID (etcd says "exists") and puts again, and `stop`
        // revokes it, so a lease whose keys may have been put is never
        // forgotten.
        self.client.put_all(&self.keys, id)?;
        let mut lease = self.lease.lock();
        lease.pending = 0;
        if lease.stopped {
            drop(lease);
            let _ = self.client.sibling().revoke(id);
            return Err(Error::Shutdown("etcd registration"));
        }
        lease.id = id;
        lease.ttl = ttl;
        log::debug!(
            "etcd: registered {} under lease {id} (TTL {ttl}s)",
            self.keys[0].0
        );
        Ok(())
    }

    /// Grants a lease whose ID we choose, so that no attempt can leave a
    /// lease we do not know about (an orphan): the ID is remembered as
    /// `pending` before the first attempt, a retry (another endpoint within
    /// one call, or the next heartbeat) asks for the same ID, and an
    /// "exists" answer then means an earlier attempt did grant it and only
    /// its answer was lost: the lease is ours and is used. A lease left
    /// pending when the registration stops is revoked by `stop`.
    fn grant(&self) -> Result<(i64, i64)> {
        for _ in 0..4 {
            let (id, retry) = {
                let mut l = self.lease.lock();
                if l.pending == 0 {
                    l.pending = new_lease_id();
                    (l.pending, false)
                } else {
                    (l.pending, true)
                }
            };
            match self.client.grant(id, self.ttl)? {
                Granted::Now(ttl) => return Ok((id, ttl)),
                Granted::Exists { after_lost_attempt } if retry || after_lost_attempt => {
                    // Ours, granted by an attempt whose answer was lost.
                    // Renewing it both says its TTL and restarts it (it
                    // may have run for a while); gone by now: grant again.
                    if let Some(ttl) = self.client.keep_alive(id)? {
                        log::info!(
                            "etcd: lease {id} of {} was granted by an attempt whose \
                             answer was lost; using it",
                            self.keys[0].0
                        );
                        return Ok((id, ttl));
                    }
                }
                Granted::Exists { .. } => {
                    // Someone else's lease: draw another ID.
                    self.lease.lock().pending = 0;
                }
            }
        }
        Err(Error::Registry {
            url: self.client.endpoints()[self.client.current()].clone() + "/v3/lease/grant",
            message: "no lease granted after 4 attempts".into(),
        })
    }

    fn heartbeat(&self, stop: crossbeam_channel::Receiver<()>) {
        let mut wait = renew_every(self.lease.lock().ttl, self.renew_max);
        let mut failing = false;
        loop {
            match stop.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
            let (id, ttl) = {
                let l = self.lease.lock();
                (l.id, l.ttl)
            };
            let renewed = match self.client.keep_alive(id) {
                Ok(Some(_)) => Ok(()),
                Ok(None) => {
                    log::warn!(
                        "etcd: lease {id} of {} is gone; registering again",
                        self.keys[0].0
                    );
                    self.grant_and_put()
                }
                Err(e) => Err(e),
            };
            match renewed {
                Ok(()) => {
                    if failing {
                        log::info!("etcd: heartbeat of {} works again", self.keys[0].0);
                    }
                    failing = false;
                    wait = renew_every(self.lease.lock().ttl, self.renew_max);
                }
                Err(Error::Shutdown(_)) => return,
                Err(e) => {
                    if failing {
                        log::debug!("etcd: heartbeat still failing: {e}");
                    } else {
                        log::warn!(
                            "etcd: heartbeat of {} failed: {e}; retrying",
                            self.keys[0].0
                        );
                    }
                    // Retry within a second, for as long as it fails: when
                    // etcd comes back (restarted, restored, partition
                    // healed) the next keepalive finds out at once whether
                    // the lease survived, and registers again if not, so a
                    // lost registration costs at most about a second after
                    // etcd is back. (A lease lost with no failed renewal in
                    // between — etcd restarted between two, or the lease
                    // revoked behind our back — is seen at the next
                    // renewal, at most `renew_max` (1 s) later.) The jitter
                    // spreads a fleet's retries against a recovering etcd.
                    wait = retry_wait().min(renew_every(ttl, self.renew_max));
                    failing = true;
                }
            }
        }
    }

    /// Stops the heartbeat, waits for it, then revokes the lease if asked.
    /// Only the first call does anything.
    fn stop(&self, revoke: bool) -> Result<()> {
        {
            let mut lease = self.lease.lock();
            if lease.stopped {
                return Ok(());
            }
            lease.stopped = true;
        }
        let _ = self.stop_tx.try_send(());
        // Cut short a keepalive in flight: etcd may be unreachable, and a
        // shutdown should not wait out the request timeout for it.
        self.client.shutdown();
        let stuck = self.threads.join_until(Instant::now() + self.join_grace);
        if stuck > 0 {
            log::warn!(
                "etcd: heartbeat thread did not stop in {:?}",
                self.join_grace
            );
        }
        if !revoke {
            return Ok(());
        }
        let (id, pending) = {
            let l = self.lease.lock();
            (l.id, l.pending)
        };
        let client = self.client.sibling();
        if pending != 0 && pending != id {
            // Granted perhaps (a lost answer): revoke it too, so it does
            // not outlive us; NotFound is fine.
            if let Err(e) = client.revoke(pending) {
                log::debug!("etcd: revoking pending lease {pending}: {e}");
            }
        }
        if id == 0 {
            return Ok(());
        }
        client.revoke(id).map(|_| ())
    }
}
