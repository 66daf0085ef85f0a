//! Registering a server in etcd under a lease kept alive by a heartbeat.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, Sender};
use parking_lot::Mutex;

use super::client::{parse_endpoints, EtcdClient};
use super::{instance_key, normalize_prefix, DEFAULT_PREFIX};
use crate::error::{Error, Result};
use crate::server::ServerHandle;
use crate::threads::ThreadGroup;
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
    /// which is 2 s by default). The lease is renewed every third of it, so
    /// a server that dies without deregistering disappears after at most
    /// this long.
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
        join_grace: options.request_timeout + Duration::from_secs(1),
    });
    inner.grant_and_put()?;
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

/// A live registration in etcd. Dropping it stops the heartbeat and revokes
/// the lease, which deletes the keys at once.
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
    /// How long `stop` waits for the heartbeat thread (a connect in
    /// progress is not cut short).
    join_grace: Duration,
}

/// How often a lease of `ttl` seconds is renewed.
fn renew_every(ttl: i64) -> Duration {
    Duration::from_millis((ttl.max(1) as u64) * 1000 / 3).max(Duration::from_millis(100))
}

impl Inner {
    /// Grants a new lease and puts every key under it.
    fn grant_and_put(&self) -> Result<()> {
        let (id, ttl) = self.client.grant(self.ttl)?;
        if let Err(e) = self.client.put_all(&self.keys, id) {
            let _ = self.client.revoke(id);
            return Err(e);
        }
        let mut lease = self.lease.lock();
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

    fn heartbeat(&self, stop: crossbeam_channel::Receiver<()>) {
        let mut wait = renew_every(self.lease.lock().ttl);
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
                    wait = renew_every(self.lease.lock().ttl);
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
                    // Retry soon, but no more often than twice a second.
                    wait = (if failing {
                        wait * 2
                    } else {
                        Duration::from_millis(500)
                    })
                    .min(renew_every(ttl));
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
        let id = self.lease.lock().id;
        self.client.sibling().revoke(id).map(|_| ())
    }
}
