//! Discovery through the registry: [`RegistryDiscovery`], a cached list
//! refreshed when stale, kept current by a long poll, and kept as it is
//! while the registry is unreachable or has just restarted (through a
//! restarted registry's warmup it serves its last list too, see `kept`),
//! so that it never goes empty because the registry did.
//!
//! This file holds the type, its shared state and the [`Discovery`]
//! methods; `builder` sets it up, `fetch` asks the registry, `install`
//! decides which list is served, `long_poll` runs the polling thread. It
//! talks to the registry server over HTTP only: nothing here may import
//! from `registry::server`.

mod builder;
mod fetch;
mod install;
mod kept;
mod long_poll;

pub use builder::RegistryDiscoveryBuilder;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Mutex, RwLock};

use crate::error::{Error, Result};
use crate::util::threads::ThreadGroup;
use crate::xclient::{Discovery, Instance, Snapshot};
use kept::Kept;

/// A [`Discovery`] that reads the instances of a service from a registry.
///
/// [`snapshot`](Discovery::snapshot) is a lock and an `Arc` clone while the
/// list is fresh. A stale list is fetched again by one caller, outside the
/// lock, while the others go on with the list they have; when the registry
/// cannot be reached the last good list stays in use, and the log says so
/// once per outage. A background thread (`geerpc-poll`, stopped
/// on drop) keeps a long poll open, so that a new or removed instance is
/// seen within milliseconds (see
/// [`RegistryDiscoveryBuilder::long_poll`]). [`Discovery::watch`] gives
/// a channel told of every change of the list.
///
/// ```no_run
/// use geerpc::{Discovery, RegistryDiscovery};
///
/// let d = RegistryDiscovery::builder("http://127.0.0.1:9999/_rpc_/registry")
///     .service("Arith")
///     .build()?;
/// for i in d.snapshot()?.instances.iter() {
///     println!("{}", i.addr);
/// }
/// # Ok::<(), geerpc::Error>(())
/// ```
#[must_use = "dropping the RegistryDiscovery stops its long poll"]
pub struct RegistryDiscovery {
    shared: Arc<Shared>,
    /// The long-poll thread, when there is one.
    poller: Option<Poller>,
}

struct Poller {
    stop_tx: Sender<()>,
    agent: ureq::Agent,
    threads: ThreadGroup,
}

struct Shared {
    url: String,
    service: Option<String>,
    /// `?include_legacy=true` with the service.
    include_legacy: bool,
    refresh_after: Duration,
    agent: ureq::Agent,
    state: RwLock<State>,
    /// A caller is fetching a stale list; the others need not.
    refreshing: AtomicBool,
    /// Fetches sent so far, to number them.
    fetches: AtomicU64,
    /// The long poll's last poll succeeded: the list is current.
    watch_live: AtomicBool,
    stopping: AtomicBool,
    subscribers: Mutex<Vec<Sender<()>>>,
}

struct State {
    snapshot: Snapshot,
    /// When the list was last fetched; `None`: never.
    fetched: Option<Instant>,
    /// After a failed fetch, no new attempt before this.
    next_try: Option<Instant>,
    failing: bool,
    /// What the last failed fetch said.
    last_error: Option<String>,
    /// The registry's version of the list, for the long poll.
    remote_version: Option<u64>,
    /// The number of the fetch that found the registry's version gone
    /// back. A fetch sent before it may bring the list from before the
    /// registry went back, with a higher version, and is dropped.
    went_back_at: u64,
    /// The registry's epoch, when it says one.
    epoch: Option<String>,
    /// The list served when the registry was seen restarted, kept (with the
    /// instances back since) until the restarted registry's warmup ends.
    kept: Option<Kept>,
}

/// Where an installed list came from.
#[derive(Clone, Copy)]
enum Source {
    /// [`Discovery::update`]: always installed.
    Update,
    /// The fetch numbered `seq` in the order fetches were sent;
    /// `went_back`: the registry answered with a version older than the
    /// one asked after.
    Fetch { seq: u64, went_back: bool },
}

impl std::fmt::Debug for RegistryDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryDiscovery")
            .field("url", &self.shared.url)
            .field("service", &self.shared.service)
            .finish_non_exhaustive()
    }
}

impl RegistryDiscovery {
    /// A discovery of every instance at `registry_url`, with the defaults.
    pub fn new(registry_url: &str) -> Result<RegistryDiscovery> {
        RegistryDiscovery::builder(registry_url).build()
    }

    /// A builder for a discovery of the registry at `registry_url`
    /// (`http://HOST:PORT/_rpc_/registry`).
    pub fn builder(registry_url: &str) -> RegistryDiscoveryBuilder {
        RegistryDiscoveryBuilder {
            url: registry_url.to_string(),
            service: None,
            include_legacy: false,
            refresh_after: Duration::from_secs(10),
            long_poll: true,
            poll: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            access: Default::default(),
        }
    }

    /// The registry's URL.
    pub fn url(&self) -> &str {
        &self.shared.url
    }

    /// The service asked for, if any.
    pub fn service(&self) -> Option<&str> {
        self.shared.service.as_deref()
    }
}

impl Drop for RegistryDiscovery {
    fn drop(&mut self) {
        if let Some(w) = self.poller.take() {
            self.shared.stopping.store(true, Ordering::Release);
            let _ = w.stop_tx.try_send(());
            // Interrupts the long poll in flight.
            w.agent.shutdown();
            if w.threads
                .join_until(Instant::now() + Duration::from_secs(2))
                > 0
            {
                log::warn!(
                    "registry discovery {}: long-poll thread did not stop",
                    self.shared.url
                );
            }
        }
    }
}

impl Discovery for RegistryDiscovery {
    fn snapshot(&self) -> Result<Snapshot> {
        let s = &self.shared;
        let (snapshot, fetched, next_try, kept_until) = {
            let st = s.state.read();
            let kept_until = st.kept.as_ref().map(|k| k.until);
            (st.snapshot.clone(), st.fetched, st.next_try, kept_until)
        };
        let Some(fetched) = fetched else {
            if next_try.is_some_and(|t| Instant::now() < t) {
                // Failed a moment ago: do not hammer a registry that is down.
                let last = s.state.read().last_error.clone().unwrap_or_default();
                return Err(Error::Registry {
                    url: s.url.clone(),
                    message: format!("no instance list yet ({last})"),
                });
            }
            // Nothing to serve yet: this caller has to wait for the fetch.
            s.fetch_and_install(&s.agent, None, None)?;
            return Ok(s.state.read().snapshot.clone());
        };
        // A live long poll keeps the list current: no need to read the
        // clock. Without one, the end of a restarted registry's warmup makes
        // the list stale: the registry's own list is to be served from then.
        let fresh = s.watch_live.load(Ordering::Acquire) || {
            let now = Instant::now();
            (now.duration_since(fetched) < s.refresh_after || next_try.is_some_and(|t| now < t))
                && kept_until.is_none_or(|t| now < t)
        };
        if fresh || s.refreshing.swap(true, Ordering::AcqRel) {
            return Ok(snapshot);
        }
        // Errors are logged; the last good list stays.
        let _ = s.fetch_and_install(&s.agent, None, None);
        s.refreshing.store(false, Ordering::Release);
        Ok(s.state.read().snapshot.clone())
    }

    fn refresh(&self) -> Result<()> {
        let s = &self.shared;
        s.fetch_and_install(&s.agent, None, None)
    }

    fn update(&self, instances: Vec<Instance>) -> Result<()> {
        self.shared.install(instances, None, Source::Update, None);
        Ok(())
    }

    /// A new channel that receives `()` whenever the list served changes
    /// (a fetch, the long poll, or [`update`](Discovery::update) brought a
    /// different list); a signal not yet received is not repeated. Always
    /// `Some`, with the long poll on or off: without it, changes are seen
    /// only when the list is fetched again.
    fn watch(&self) -> Option<Receiver<()>> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.shared.subscribers.lock().push(tx);
        Some(rx)
    }
}

#[cfg(test)]
mod tests;
