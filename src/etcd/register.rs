//! etcd's side of [`crate::registration`]: the [`EtcdRegistrar`] and the
//! [`EtcdRegistration`] it returns, a server's keys under a lease kept
//! alive by a heartbeat thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, Sender};
use parking_lot::Mutex;

use super::access::{Access, User};
use super::client::{parse_endpoints, EtcdClient, Granted};
use super::{instance_key, normalize_prefix, DEFAULT_PREFIX};
use crate::error::{Error, Result};
use crate::registration::{renew_for_ttl, RegisterOptions, Registrar};
use crate::server::ServerHandle;
use crate::util::threads::ThreadGroup;
use crate::util::token::Token;
use crate::wire::{Address, ToAddress};
use crate::xclient::Instance;

/// The lease TTL when none is set: short, so that a server that dies
/// without deregistering leaves discovery within seconds (an etcd lease is
/// ours to choose, unlike the HTTP registry's TTL).
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// The longest default time between renewals: a renewal is how a lease
/// that etcd lost (rebuilt, restored or restarted empty, or expired while
/// the server was cut off) is noticed and the server registered again, and
/// it is one small request to the leader (no raft round).
const MAX_DEFAULT_RENEW: Duration = Duration::from_secs(1);

/// The shortest time between renewals, whatever the TTL says.
const MIN_RENEW: Duration = Duration::from_millis(100);

/// etcd as a [`Registrar`]: the endpoints of one cluster, how to reach
/// them ([TLS](EtcdRegistrar::tls_ca_file), a [user](EtcdRegistrar::user))
/// and the one knob only etcd has, the key [prefix](EtcdRegistrar::prefix).
///
/// `endpoints` are the client URLs of one etcd cluster (`host:port`,
/// `http://host:port` or `https://host:port`, or several in one string
/// separated by commas).
///
/// ```no_run
/// use geerpc::etcd::EtcdRegistrar;
/// use geerpc::registration::RegisterOptions;
///
/// let registrar = EtcdRegistrar::new(&["127.0.0.1:2379"])?.prefix("/myapp");
/// let registration = registrar.register("127.0.0.1:7001", RegisterOptions::new().services(["Arith"]))?;
/// assert_eq!(registration.addr(), "tcp@127.0.0.1:7001");
/// # Ok::<(), geerpc::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct EtcdRegistrar {
    endpoints: Vec<String>,
    prefix: String,
    access: Access,
}

impl EtcdRegistrar {
    /// A registrar for the cluster at `endpoints`; fails when none is given.
    pub fn new<S: AsRef<str>>(endpoints: &[S]) -> Result<EtcdRegistrar> {
        Ok(EtcdRegistrar {
            endpoints: parse_endpoints(endpoints)?,
            prefix: DEFAULT_PREFIX.to_string(),
            access: Access::default(),
        })
    }

    /// Key prefix (default [`DEFAULT_PREFIX`]).
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = normalize_prefix(prefix);
        self
    }

    /// Trusts the CA certificates in PEM file `path` for `https://`
    /// endpoints, instead of the webpki roots (default: the webpki roots).
    /// A file that cannot be read makes [`register`](Self::register) fail,
    /// naming it.
    #[cfg(feature = "tls")]
    pub fn tls_ca_file(mut self, path: impl AsRef<std::path::Path>) -> Self {
        self.access.tls.set_ca_file(path.as_ref());
        self
    }

    /// Presents the certificate chain in PEM file `cert` (with the key in
    /// PEM file `key`) to `https://` endpoints, as members started with
    /// `--client-cert-auth` require (default: none). With etcd's
    /// authentication off, such a member takes the certificate's common
    /// name as the etcd user.
    #[cfg(feature = "tls")]
    pub fn tls_client_cert_files(
        mut self,
        cert: impl AsRef<std::path::Path>,
        key: impl AsRef<std::path::Path>,
    ) -> Self {
        self.access
            .tls
            .set_client_cert_files(cert.as_ref(), key.as_ref());
        self
    }

    /// Authenticates as etcd user `name` with `password` (default: no
    /// user), for a cluster with authentication enabled: the token etcd
    /// gives is sent with every request and renewed whenever etcd refuses
    /// it (expired, or its member restarted). The user needs read and
    /// write permission on the prefix. Use `https://` endpoints beyond
    /// loopback, or the password crosses the network in clear.
    pub fn user(mut self, name: &str, password: Token) -> Self {
        self.access.user = Some(Arc::new(User::new(name, password)));
        self
    }

    /// Registers `addr` (a bare `HOST:PORT` means `tcp@`) under each of
    /// the options' services, which must not be empty, and keeps it
    /// registered until the [`EtcdRegistration`] goes. Fails if no endpoint
    /// accepts the registration.
    pub fn register(
        &self,
        addr: impl ToAddress,
        options: RegisterOptions,
    ) -> Result<EtcdRegistration> {
        self.access.check(&self.endpoints[0])?;
        let addr = addr.to_address()?;
        let instance = options.instance(&addr);
        if instance.services.is_empty() {
            return Err(Error::Registry {
                url: self.endpoints[0].clone(),
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
            .map(|s| (instance_key(&self.prefix, s, &instance.addr), value.clone()))
            .collect();
        let timeout = options.request_timeout_or_default();
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
        let inner = Arc::new(Inner {
            client: EtcdClient::new(self.endpoints.clone(), timeout, self.access.clone()),
            keys,
            ttl: options.ttl_or(DEFAULT_TTL),
            lease: Mutex::new(Lease::default()),
            stop_tx,
            threads: ThreadGroup::default(),
            renew_set: options.renew_every,
            reconnect: options.reconnect_or_default(),
            join_grace: timeout + Duration::from_secs(1),
            registered: AtomicBool::new(false),
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
        Ok(EtcdRegistration {
            inner,
            instance,
            addr,
        })
    }

    /// Registers every service of a listening server (unless the options
    /// name the services) under its address (or the
    /// [advertised](RegisterOptions::advertise) one), and keeps the
    /// registration alive until the [`EtcdRegistration`] is dropped or
    /// deregistered, or the server shuts down, whichever comes first; each
    /// revokes it at once, a shutdown before the server stops serving.
    pub fn register_server(
        &self,
        server: &ServerHandle,
        options: RegisterOptions,
    ) -> Result<EtcdRegistration> {
        let (addr, options) = options.for_server(server)?;
        let registration = self.register(&addr, options)?;
        let inner = registration.inner.clone();
        server.on_shutdown(move || {
            if let Err(e) = inner.stop(true) {
                log::warn!("etcd: deregistering at shutdown: {e}");
            }
        });
        Ok(registration)
    }
}

impl Registrar for EtcdRegistrar {
    fn register(
        &self,
        addr: &Address,
        options: RegisterOptions,
    ) -> Result<Box<dyn crate::registration::Registration>> {
        Ok(Box::new(EtcdRegistrar::register(self, addr, options)?))
    }

    fn register_server(
        &self,
        server: &ServerHandle,
        options: RegisterOptions,
    ) -> Result<Box<dyn crate::registration::Registration>> {
        Ok(Box::new(EtcdRegistrar::register_server(
            self, server, options,
        )?))
    }
}

/// A live registration in etcd: etcd's
/// [`Registration`](crate::registration::Registration).
///
/// Dropping it deregisters, like dropping a [`Heartbeat`](crate::Heartbeat)
/// (which sends its `DELETE`): the keepalive thread stops and the lease is
/// revoked, which deletes the keys at once, so clients stop picking the
/// server within their watch's latency rather than after the TTL. The drop
/// waits at most the request timeout per endpoint for the revocation; a
/// failed one is logged and the keys then expire after the TTL. To stop
/// keeping the registration alive *without* deregistering (the keys then
/// stay until the TTL runs out, as when a process dies), call
/// [`abandon`](EtcdRegistration::abandon). A registration of a server is
/// also revoked when the server shuts down, before it stops serving.
///
/// ```no_run
/// use geerpc::etcd::EtcdRegistration;
/// use geerpc::{RegisterOptions, Server, Service};
/// let server = Server::new();
/// server.register(Service::new("Echo").method("Echo", |s: String| Ok::<_, String>(s)))?;
/// let running = server.listen("127.0.0.1:0")?;
/// // One key per service the server has (an instance must serve one).
/// let registration = EtcdRegistration::for_server(&running, &["127.0.0.1:2379"], RegisterOptions::new())?;
/// // ... serve ...
/// running.shutdown(); // revokes the registration first
/// # Ok::<(), geerpc::Error>(())
/// ```
#[must_use = "dropping the EtcdRegistration deregisters the server at once"]
pub struct EtcdRegistration {
    inner: Arc<Inner>,
    instance: Instance,
    addr: Address,
}

impl EtcdRegistration {
    /// Registers `addr` with the registrar's defaults:
    /// `EtcdRegistrar::new(endpoints)?.register(addr, options)` (see
    /// [`EtcdRegistrar::register`]). Shaped like
    /// [`Heartbeat::start`](crate::Heartbeat::start).
    pub fn start<S: AsRef<str>>(
        endpoints: &[S],
        addr: impl ToAddress,
        options: RegisterOptions,
    ) -> Result<EtcdRegistration> {
        EtcdRegistrar::new(endpoints)?.register(addr, options)
    }

    /// Registers a running server with the registrar's defaults:
    /// `EtcdRegistrar::new(endpoints)?.register_server(server, options)`
    /// (see [`EtcdRegistrar::register_server`]). Shaped like
    /// [`Heartbeat::for_server`](crate::Heartbeat::for_server).
    pub fn for_server<S: AsRef<str>>(
        server: &ServerHandle,
        endpoints: &[S],
        options: RegisterOptions,
    ) -> Result<EtcdRegistration> {
        EtcdRegistrar::new(endpoints)?.register_server(server, options)
    }

    /// The registered address.
    pub fn addr(&self) -> &Address {
        &self.addr
    }

    /// The instance registered.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// Whether the last grant or renewal of the lease was accepted.
    pub fn is_registered(&self) -> bool {
        self.inner.registered.load(Ordering::Acquire)
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

impl crate::registration::Registration for EtcdRegistration {
    fn addr(&self) -> &Address {
        EtcdRegistration::addr(self)
    }

    fn is_registered(&self) -> bool {
        EtcdRegistration::is_registered(self)
    }

    fn deregister(self: Box<Self>) -> Result<()> {
        EtcdRegistration::deregister(*self)
    }

    fn abandon(self: Box<Self>) {
        EtcdRegistration::abandon(*self)
    }
}

impl Drop for EtcdRegistration {
    fn drop(&mut self) {
        if let Err(e) = self.inner.stop(true) {
            log::warn!("etcd: deregistering {}: {e}", self.instance.addr);
        }
    }
}

impl std::fmt::Debug for EtcdRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdRegistration")
            .field("addr", &self.instance.addr)
            .field("lease_id", &self.lease_id())
            .field("registered", &self.is_registered())
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
    /// The renewal period as set ([`RegisterOptions::renew_every`]);
    /// `None`: a third of the TTL, at most [`MAX_DEFAULT_RENEW`].
    renew_set: Option<Duration>,
    /// The longest wait between tries while renewals fail
    /// ([`RegisterOptions::reconnect`]).
    reconnect: Duration,
    /// How long `stop` waits for the heartbeat thread (a connect in
    /// progress is not cut short).
    join_grace: Duration,
    /// Whether the last grant or renewal was accepted.
    registered: AtomicBool,
}

/// How long a failing heartbeat waits before it tries again: half to all
/// of `reconnect` (0.5 to 1 s by default).
fn retry_wait(reconnect: Duration) -> Duration {
    reconnect.mul_f64(rand::random_range(0.5..=1.0))
}

impl Inner {
    /// How often a lease of `ttl` seconds is renewed: as set, or every
    /// third of it, at most every [`MAX_DEFAULT_RENEW`] (a lost lease is
    /// noticed at the next renewal).
    fn renew_every(&self, ttl: i64) -> Duration {
        let third = || renew_for_ttl(Duration::from_secs(ttl.max(1) as u64));
        self.renew_set
            .unwrap_or_else(|| third().min(MAX_DEFAULT_RENEW))
            .max(MIN_RENEW)
    }
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
        self.registered.store(true, Ordering::Release);
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
        let mut wait = self.renew_every(self.lease.lock().ttl);
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
                    self.registered.store(true, Ordering::Release);
                    if failing {
                        log::info!("etcd: heartbeat of {} works again", self.keys[0].0);
                    }
                    failing = false;
                    wait = self.renew_every(self.lease.lock().ttl);
                }
                Err(Error::Shutdown(_)) => return,
                Err(e) => {
                    self.registered.store(false, Ordering::Release);
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
                    // renewal, at most `renew_every` (1 s) later.) The jitter
                    // spreads a fleet's retries against a recovering etcd.
                    wait = retry_wait(self.reconnect).min(self.renew_every(ttl));
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
        self.registered.store(false, Ordering::Release);
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
