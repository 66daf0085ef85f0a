//! Discovery through the registry: a cached list refreshed when stale, kept
//! current by a long-poll watch, and kept as it is while the registry is
//! unreachable or has just restarted.
//! Through a restarted registry's warmup, it serves its last list too
//! (`kept.rs`), so that it never goes empty because the registry did.
//!
//! This file holds more than one idea and is over 600 lines; issue 17
//! (API and layout) splits it by idea. Hardening (issue 16) left it whole
//! so that parallel changes to it merged cleanly.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::{Mutex, RwLock};

use super::epoch::{EPOCH_HEADER, WARMUP_HEADER};
use super::kept::{self, Kept, Start, MAX_WARMUP};
use super::{agent, check_url, request_error, status_error, Listing, LIST_HEADERS, VERSION_HEADER};
use crate::error::{Error, Result};
use crate::util::duration::GoDuration;
use crate::util::threads::ThreadGroup;
use crate::xclient::{Discovery, Instance, Snapshot};

/// Builds a [`RegistryDiscovery`]; see [`RegistryDiscovery::builder`].
#[derive(Debug, Clone)]
pub struct RegistryDiscoveryBuilder {
    url: String,
    service: Option<String>,
    refresh_after: Duration,
    watch: bool,
    poll: Duration,
    timeout: Duration,
}

impl RegistryDiscoveryBuilder {
    /// Lists only the instances that serve `service` (and those that did not
    /// say what they serve).
    pub fn service(mut self, service: impl Into<String>) -> Self {
        self.service = Some(service.into());
        self
    }

    /// How old the cached list may get before a call fetches it again
    /// (default 10 s). While the watch is connected, the list is current
    /// and is not fetched again.
    pub fn refresh_after(mut self, age: Duration) -> Self {
        self.refresh_after = age;
        self
    }

    /// Whether to keep a long poll open so that changes arrive at once
    /// (default true). Without it the list is only as fresh as
    /// [`refresh_after`](Self::refresh_after).
    pub fn watch(mut self, watch: bool) -> Self {
        self.watch = watch;
        self
    }

    /// How long one long poll waits for a change before asking again
    /// (default 30 s).
    pub fn poll_timeout(mut self, poll: Duration) -> Self {
        self.poll = poll.max(Duration::from_millis(10));
        self
    }

    /// Bound on each plain request to the registry (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The discovery. Fails only on a malformed URL: a registry that is not
    /// up yet is asked again later.
    pub fn build(self) -> Result<RegistryDiscovery> {
        check_url(&self.url)?;
        let shared = Arc::new(Shared {
            url: self.url,
            service: self.service,
            refresh_after: self.refresh_after,
            agent: agent(self.timeout),
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
        let watcher = if self.watch {
            let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
            let agent = agent(self.poll + self.timeout);
            let threads = ThreadGroup::default();
            let (s, a, poll) = (shared.clone(), agent.clone(), self.poll);
            threads
                .spawn("geerpc-watch", None, move || {
                    watch_loop(&s, &a, poll, stop_rx)
                })
                .map_err(|e| Error::io("start discovery watch thread", e))?;
            Some(Watcher {
                stop_tx,
                agent,
                threads,
            })
        } else {
            None
        };
        Ok(RegistryDiscovery { shared, watcher })
    }
}

/// A [`Discovery`] that reads the instances of a service from a registry.
///
/// [`snapshot`](Discovery::snapshot) is a lock and an `Arc` clone while the
/// list is fresh. A stale list is fetched again by one caller, outside the
/// lock, while the others go on with the list they have; when the registry
/// cannot be reached the last good list stays in use, and the log says so
/// once per outage. A background thread (`geerpc-watch`, stopped
/// on drop) keeps a long poll open, so that a new or removed instance is
/// seen within milliseconds.
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
#[must_use = "dropping the RegistryDiscovery stops its watch"]
pub struct RegistryDiscovery {
    shared: Arc<Shared>,
    watcher: Option<Watcher>,
}

struct Watcher {
    stop_tx: Sender<()>,
    agent: ureq::Agent,
    threads: ThreadGroup,
}

struct Shared {
    url: String,
    service: Option<String>,
    refresh_after: Duration,
    agent: ureq::Agent,
    state: RwLock<State>,
    /// A caller is fetching a stale list; the others need not.
    refreshing: AtomicBool,
    /// Fetches sent so far, to number them.
    fetches: AtomicU64,
    /// The watch's last poll succeeded: the list is current.
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
            refresh_after: Duration::from_secs(10),
            watch: true,
            poll: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
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
        if let Some(w) = self.watcher.take() {
            self.shared.stopping.store(true, Ordering::Release);
            let _ = w.stop_tx.try_send(());
            // Interrupts the long poll in flight.
            w.agent.shutdown();
            if w.threads
                .join_until(Instant::now() + Duration::from_secs(2))
                > 0
            {
                log::warn!(
                    "registry discovery {}: watch thread did not stop",
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
        // A live watch keeps the list current: no need to read the clock.
        // Without a watch, the end of a restarted registry's warmup makes
        // the list stale: the registry's own list is to be served from then.
        let fresh = s.watch_live.load(Ordering::Acquire) || {
            let now = Instant::now();
            (now.duration_since(fetched) < s.refresh_after || next_try.is_some_and(|t| now < t))
                && kept_until.map_or(true, |t| now < t)
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

    fn watch(&self) -> Option<Receiver<()>> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.shared.subscribers.lock().push(tx);
        Some(rx)
    }
}

impl Shared {
    /// GETs the list (as a long poll when `watch` holds a version) and
    /// installs it. Returns whether the registry can long-poll.
    fn fetch_and_install(
        &self,
        agent: &ureq::Agent,
        watch: Option<u64>,
        poll: Option<Duration>,
    ) -> Result<()> {
        let seq = self.fetches.fetch_add(1, Ordering::Relaxed) + 1;
        match self.fetch(agent, watch, poll) {
            Ok(listing) => {
                // Asked for changes after `w` and answered with an older
                // version: not an overlapping fetch landing late, but the
                // registry itself going back (restarted with its clock
                // behind, or another registry behind the same URL).
                let went_back = matches!(
                    (watch, listing.version),
                    (Some(w), Some(v)) if v < w
                );
                if went_back {
                    log::info!(
                        "registry discovery {}: the registry's version went back from {} to {}; taking its list",
                        self.url,
                        watch.unwrap_or(0),
                        listing.version.unwrap_or(0)
                    );
                }
                let from = Source::Fetch { seq, went_back };
                let start = listing.epoch.as_deref().map(|epoch| Start {
                    epoch,
                    warmup: listing.warmup,
                });
                self.install(listing.instances, Some(listing.version), from, start);
                Ok(())
            }
            Err(e) => {
                if !self.stopping.load(Ordering::Acquire) {
                    self.note_failure(&e);
                }
                Err(e)
            }
        }
    }

    fn fetch(
        &self,
        agent: &ureq::Agent,
        watch: Option<u64>,
        poll: Option<Duration>,
    ) -> Result<FetchedListing> {
        let mut rq = agent.get(&self.url).header("Accept", "application/json");
        if let Some(s) = &self.service {
            rq = rq.query("service", s);
        }
        if let (Some(v), Some(p)) = (watch, poll) {
            rq = rq
                .query("watch", v.to_string())
                .query("timeout", GoDuration(p).to_string());
        }
        let mut resp = rq
            .call()
            .map_err(|e| request_error(&self.url, "list instances", e))?;
        if !resp.status().is_success() {
            return Err(status_error(&self.url, "list instances", &mut resp));
        }
        let text = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok());
        let epoch = text(EPOCH_HEADER).map(|e| e.trim().to_string());
        let warmup = text(WARMUP_HEADER)
            .and_then(|w| w.trim().parse::<u64>().ok())
            .map_or(Duration::ZERO, Duration::from_millis)
            // A registry cannot make a discovery hold a stale list for long.
            .min(MAX_WARMUP);
        let version = resp
            .headers()
            .get(VERSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if version.is_some() {
            let body = resp
                .body_mut()
                .with_config()
                .limit(64 << 20)
                .read_to_vec()
                .map_err(|e| request_error(&self.url, "read the listing", e))?;
            let listing: Listing = serde_json::from_slice(&body)
                .map_err(|e| request_error(&self.url, "decode the JSON listing", e))?;
            return Ok(FetchedListing {
                version: Some(listing.version),
                instances: listing.instances,
                epoch,
                warmup,
            });
        }
        // A Go GeeRPC registry: the list is in a header, and no version.
        let header = LIST_HEADERS
            .iter()
            .find_map(|h| resp.headers().get(*h))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        Ok(FetchedListing {
            version: None,
            epoch,
            warmup,
            instances: header
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(Instance::new)
                .collect(),
        })
    }

    /// Installs a list; a different list gets a new version and wakes the
    /// subscribers. A list from a fetch that saw the registry's version go
    /// back, or from a new start of the registry, replaces the installed
    /// one whatever their versions; after a restart, together with the
    /// list kept from before it until the registry's warmup ends.
    fn install(
        &self,
        mut instances: Vec<Instance>,
        remote_version: Option<Option<u64>>,
        from: Source,
        start: Option<Start<'_>>,
    ) {
        let mut went_back = matches!(
            from,
            Source::Fetch {
                went_back: true,
                ..
            }
        );
        log::debug!(
            "registry discovery {}: {} instances at version {remote_version:?}",
            self.url,
            instances.len()
        );
        instances.sort_by(|a, b| a.addr.cmp(&b.addr));
        instances.dedup_by(|a, b| a.addr == b.addr);
        let changed = {
            let mut st = self.state.write();
            let now = Instant::now();
            if let Source::Fetch { seq, .. } = from {
                if seq < st.went_back_at {
                    log::debug!(
                        "registry discovery {}: dropped a listing asked for before the registry's version went back",
                        self.url
                    );
                    return;
                }
                // A new start: its versions say nothing of the old one's,
                // and fetches sent before this one are from the old start.
                if let Some(start) = start {
                    if st.epoch.as_deref().is_some_and(|e| e != start.epoch) {
                        went_back = true;
                        st.kept = kept::on_restart(&self.url, &st.snapshot.instances, start, now);
                    }
                    if st.epoch.as_deref() != Some(start.epoch) {
                        st.epoch = Some(start.epoch.to_string());
                    }
                }
                if went_back {
                    st.went_back_at = seq;
                }
            } else {
                // A list given by hand is served as given.
                st.kept = None;
            }
            // Fetches overlap (the first list, the watch, a refresh); one
            // that answered older than what is installed must not replace
            // it, or the discovery would serve a stale list while its watch
            // waits for a change past the newer version.
            if let (Some(Some(new)), Some(current)) = (remote_version, st.remote_version) {
                if new < current && !went_back {
                    log::debug!(
                        "registry discovery {}: dropped a listing at version {new}, older than {current}",
                        self.url
                    );
                    return;
                }
            }
            if let Some(kept) = st.kept.take() {
                let left;
                (instances, left) = kept::merge(&self.url, instances, kept, now);
                st.kept = left;
            }
            let changed = *st.snapshot.instances != instances[..];
            if changed {
                st.snapshot = Snapshot {
                    version: st.snapshot.version + 1,
                    instances: instances.into(),
                };
            }
            st.fetched = Some(Instant::now());
            if let Some(v) = remote_version {
                st.next_try = None;
                st.remote_version = v;
                if st.failing {
                    st.failing = false;
                    log::info!(
                        "registry discovery {}: registry reachable again ({} instances)",
                        self.url,
                        st.snapshot.instances.len()
                    );
                }
            }
            changed
        };
        if changed {
            self.subscribers.lock().retain(|tx| {
                !matches!(
                    tx.try_send(()),
                    Err(crossbeam_channel::TrySendError::Disconnected(_))
                )
            });
        }
    }

    fn note_failure(&self, e: &Error) {
        let mut st = self.state.write();
        st.next_try = Some(Instant::now() + self.refresh_after.min(Duration::from_secs(1)));
        st.last_error = Some(e.to_string());
        if !st.failing {
            st.failing = true;
            log::warn!(
                "registry discovery: {e}; serving the last good list ({} instances) until it answers",
                st.snapshot.instances.len()
            );
        } else {
            log::debug!("registry discovery: {e}");
        }
    }
}

/// A listing as fetched: a Go registry gives no version and no epoch.
struct FetchedListing {
    version: Option<u64>,
    instances: Vec<Instance>,
    epoch: Option<String>,
    warmup: Duration,
}

fn watch_loop(shared: &Shared, agent: &ureq::Agent, poll: Duration, stop: Receiver<()>) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(50);
    let mut backoff = FIRST_BACKOFF;
    loop {
        if shared.stopping.load(Ordering::Acquire) {
            break;
        }
        let (known, kept_until) = {
            let st = shared.state.read();
            (st.remote_version, st.kept.as_ref().map(|k| k.until))
        };
        // While a restarted registry warms up, ask again when it ends, so
        // that its own list is served from then even if nothing changes.
        let poll = kept_until.map_or(poll, |t| {
            poll.min(t.saturating_duration_since(Instant::now()))
        });
        log::debug!(
            "registry discovery {}: polling from version {known:?}",
            shared.url
        );
        // Version 0 is never current: the first poll answers at once.
        let t0 = Instant::now();
        match shared.fetch_and_install(agent, Some(known.unwrap_or(0)), Some(poll)) {
            Ok(()) if shared.state.read().remote_version.is_none() => {
                log::info!(
                    "registry discovery {}: the registry cannot long-poll; refreshing every {}",
                    shared.url,
                    GoDuration(shared.refresh_after)
                );
                break;
            }
            // Answered well before its time with nothing new: the registry
            // is stopping (it answers every poll then, before its port
            // closes: asking again at once could reach it in between and
            // never be answered), or misbehaves. Wait before asking again.
            Ok(())
                if shared.state.read().remote_version == known
                    && t0.elapsed() < poll.mul_f64(0.9) =>
            {
                log::debug!(
                    "registry discovery {}: poll answered early, unchanged; asking again in {}",
                    shared.url,
                    GoDuration(backoff)
                );
                match stop.recv_timeout(backoff) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Ok(()) => {
                shared.watch_live.store(true, Ordering::Release);
                backoff = FIRST_BACKOFF;
            }
            Err(_) => {
                shared.watch_live.store(false, Ordering::Release);
                match stop.recv_timeout(backoff) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
    shared.watch_live.store(false, Ordering::Release);
}

#[cfg(test)]
mod tests;
