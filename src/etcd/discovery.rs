//! Discovery from etcd: list once, then follow a watch.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use super::access::Access;
use super::builder::EtcdDiscoveryBuilder;
use super::client::{unb64, EtcdClient, Kv};
use super::warmup::{Warmup, DEFAULT_WARMUP};
use super::watch::Event;
use super::{normalize_prefix, parse_entry};
use crate::error::{Error, Result};
use crate::util::threads::ThreadGroup;
use crate::xclient::{Discovery, Instance, Snapshot};

/// How long a blocked watch read waits before looking at the stop flag: it
/// bounds how long dropping the discovery takes should closing the
/// connection not wake the read.
pub(super) const READ_TICK: Duration = Duration::from_millis(300);
/// Timeout of the list requests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest line of a watch stream accepted (a batch of events).
pub(super) const MAX_LINE: usize = 64 << 20;

/// A [`Discovery`] that follows the instances registered in etcd (by
/// an [`EtcdRegistrar`](super::EtcdRegistrar)) as they come and go.
///
/// It lists the keys under `PREFIX/` (or `PREFIX/SERVICE/` for one service)
/// when created, then a thread of its own (`geerpc-etcd-wch`) watches
/// them from the next revision: every change is applied as soon as etcd
/// reports it, [`snapshot`](Discovery::snapshot) is a lock and an `Arc`
/// clone, and [`watch`](Discovery::watch) receivers are signalled. After an
/// error (the endpoint died, the stream broke, history was compacted) the
/// thread lists again, from the next endpoint if needed, and watches from
/// that list's revision, so no change is missed; meanwhile the last list
/// is served. A stream silent for 3 s makes its member answer a status
/// request; one that cannot (stopped, powered off, cut off without a
/// reset) is left for the next endpoint, within about 6.3 s in all. After
/// a mass disappearance the last list is kept for a
/// [`warmup`](EtcdDiscovery::warmup). Dropping the discovery stops the thread within about a
/// second.
///
/// With no service, an instance registered under several services appears
/// once, with all of them.
///
/// ```no_run
/// use geerpc::Discovery;
/// use geerpc::etcd::EtcdDiscovery;
///
/// let d = EtcdDiscovery::new(&["127.0.0.1:2379", "127.0.0.1:22379"], Some("Arith"))?;
/// for i in d.snapshot()?.instances.iter() {
///     println!("{}", i.addr);
/// }
/// # Ok::<(), geerpc::Error>(())
/// ```
#[must_use = "dropping the EtcdDiscovery stops its watch"]
pub struct EtcdDiscovery {
    shared: Arc<Shared>,
    threads: ThreadGroup,
    stop_tx: Sender<()>,
}

pub(super) struct Shared {
    pub(super) client: EtcdClient,
    /// The agent of the watch stream: reads time out every `READ_TICK` so
    /// the thread can see the stop flag, and nothing else times out.
    pub(super) watch_agent: ureq::Agent,
    /// The range watched: `PREFIX/` or `PREFIX/SERVICE/`.
    pub(super) range: String,
    pub(super) prefix: String,
    pub(super) state: Mutex<State>,
    pub(super) watchers: Mutex<Vec<Sender<()>>>,
    pub(super) stop: AtomicBool,
}

pub(super) struct State {
    /// The revision the entries reflect.
    pub(super) revision: i64,
    /// Key to instance.
    pub(super) entries: BTreeMap<String, Instance>,
    pub(super) snapshot: Snapshot,
    /// Holds the last list after a mass disappearance.
    pub(super) warmup: Warmup,
}

impl EtcdDiscovery {
    /// Follows the instances of `service` (all services with `None`) under
    /// [`DEFAULT_PREFIX`](super::DEFAULT_PREFIX) on the etcd cluster at
    /// `endpoints`, over `http://` or with the webpki roots and no user.
    /// Fails if no endpoint answers the first list. The
    /// [`builder`](Self::builder) sets the rest.
    pub fn new<S: AsRef<str>>(endpoints: &[S], service: Option<&str>) -> Result<EtcdDiscovery> {
        let mut b = EtcdDiscovery::builder(endpoints);
        if let Some(s) = service {
            b = b.service(s);
        }
        b.build()
    }

    /// Like [`new`](EtcdDiscovery::new), under another key prefix.
    pub fn with_prefix<S: AsRef<str>>(
        endpoints: &[S],
        prefix: &str,
        service: Option<&str>,
    ) -> Result<EtcdDiscovery> {
        let mut b = EtcdDiscovery::builder(endpoints).prefix(prefix);
        if let Some(s) = service {
            b = b.service(s);
        }
        b.build()
    }

    /// A discovery of the etcd cluster at `endpoints` (`host:port`,
    /// `http://host:port` or `https://host:port`, several separated by
    /// commas) to configure: service, prefix, TLS, user, warmup.
    pub fn builder<S: AsRef<str>>(endpoints: &[S]) -> EtcdDiscoveryBuilder {
        EtcdDiscoveryBuilder::new(endpoints)
    }

    /// Lists, then starts the watch thread.
    pub(super) fn start(
        endpoints: Vec<String>,
        prefix: &str,
        service: Option<&str>,
        access: Access,
        warmup: Duration,
    ) -> Result<EtcdDiscovery> {
        let shared = Arc::new(Shared::new(endpoints, prefix, service, access));
        shared.state.lock().warmup.set_period(warmup);
        shared.list(true)?;
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
        let threads = ThreadGroup::default();
        let s = shared.clone();
        threads
            .spawn("geerpc-etcd-wch", None, move || s.follow(&stop_rx))
            .map_err(|e| Error::io("start etcd watch thread", e))?;
        Ok(EtcdDiscovery {
            shared,
            threads,
            stop_tx,
        })
    }

    /// Sets the [warmup](EtcdDiscoveryBuilder::warmup) of a discovery
    /// already running.
    pub fn warmup(self, period: Duration) -> Self {
        self.shared.state.lock().warmup.set_period(period);
        self
    }

    /// The etcd revision the current list reflects.
    pub fn revision(&self) -> i64 {
        self.shared.state.lock().revision
    }
}

impl Discovery for EtcdDiscovery {
    fn snapshot(&self) -> Result<Snapshot> {
        {
            let state = self.shared.state.lock();
            if !state.warmup.holding() {
                return Ok(state.snapshot.clone());
            }
        }
        // A warmup whose period ended is ended here too, not only at the
        // watch thread's next tick (it may be waiting to reconnect).
        self.shared.end_warmup_if_due();
        Ok(self.shared.state.lock().snapshot.clone())
    }

    /// Lists the keys now. The watch keeps the list current anyway; this
    /// only helps to learn at once whether etcd can be reached.
    fn refresh(&self) -> Result<()> {
        self.shared.list(false)
    }

    /// Replaces the list by hand, until the next change in etcd (or the
    /// next list after an error) replaces it again.
    fn update(&self, instances: Vec<Instance>) -> Result<()> {
        let entries = instances
            .into_iter()
            .map(|i| (format!("{}{}", self.shared.range, i.addr), i))
            .collect();
        let mut state = self.shared.state.lock();
        state.entries = entries;
        state.warmup.clear();
        let changed = self.shared.rebuild(&mut state, false);
        drop(state);
        if changed {
            self.shared.notify();
        }
        Ok(())
    }

    fn watch(&self) -> Option<Receiver<()>> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.shared.watchers.lock().push(tx);
        Some(rx)
    }
}

impl Drop for EtcdDiscovery {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        let _ = self.stop_tx.try_send(());
        // Closing the connections ends a blocked read or list at once; the
        // read timeout is the fallback (a connect in progress is not cut).
        self.shared.watch_agent.clone().shutdown();
        self.shared.client.shutdown();
        let stuck = self
            .threads
            .join_until(Instant::now() + READ_TICK + Duration::from_secs(1));
        if stuck > 0 {
            log::warn!("etcd discovery: watch thread did not stop in time");
        }
    }
}

impl std::fmt::Debug for EtcdDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdDiscovery")
            .field("endpoints", &self.shared.client.endpoints())
            .field("range", &self.shared.range)
            .finish()
    }
}

impl Shared {
    pub(super) fn new(
        endpoints: Vec<String>,
        prefix: &str,
        service: Option<&str>,
        access: Access,
    ) -> Shared {
        let prefix = normalize_prefix(prefix);
        let range = match service {
            Some(s) => format!("{prefix}/{s}/"),
            None => format!("{prefix}/"),
        };
        let client = EtcdClient::new(endpoints, REQUEST_TIMEOUT, access);
        let watch_agent = client.watch_agent(READ_TICK);
        Shared {
            client,
            watch_agent,
            range,
            prefix,
            state: Mutex::new(State {
                revision: 0,
                warmup: Warmup::new(DEFAULT_WARMUP),
                entries: BTreeMap::new(),
                snapshot: Snapshot {
                    version: 0,
                    instances: Arc::from(Vec::new()),
                },
            }),
            watchers: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        }
    }

    /// Lists the range and installs the result. `force`: even if older than
    /// what is known (a rebuilt cluster starts its revisions again); only the
    /// watch thread, which watches from the list's revision next, forces.
    pub(super) fn list(&self, force: bool) -> Result<()> {
        let (revision, kvs) = self.client.range_prefix(&self.range)?;
        let mut entries = BTreeMap::new();
        for kv in kvs {
            if let Some((key, instance)) = self.decode(&kv) {
                entries.insert(key, instance);
            }
        }
        let mut state = self.state.lock();
        if !force && revision < state.revision {
            return Ok(());
        }
        // A revision that went back: the cluster was rebuilt or restored,
        // and every registration is being made again.
        let store_changed = revision < state.revision;
        state.revision = revision;
        state.entries = entries;
        let changed = self.rebuild(&mut state, store_changed);
        drop(state);
        if changed {
            self.notify();
        }
        Ok(())
    }

    pub(super) fn decode(&self, kv: &Kv) -> Option<(String, Instance)> {
        let key = unb64(&kv.key).ok()?;
        let value = unb64(&kv.value).ok()?;
        let (_, instance) = parse_entry(&self.prefix, &key, &value)?;
        Some((String::from_utf8(key).ok()?, instance))
    }

    /// Recomputes the snapshot from the entries; bumps its version and says
    /// so if the instances changed.
    pub(super) fn rebuild(&self, state: &mut State, store_changed: bool) -> bool {
        let mut by_addr: BTreeMap<&str, Instance> = BTreeMap::new();
        for i in state.entries.values() {
            match by_addr.get_mut(i.addr.as_str()) {
                None => {
                    by_addr.insert(&i.addr, i.clone());
                }
                Some(seen) => {
                    for s in &i.services {
                        if !seen.services.contains(s) {
                            seen.services.push(s.clone());
                        }
                    }
                    seen.services.sort();
                }
            }
        }
        let listed: Vec<Instance> = by_addr.into_values().collect();
        let shown = state.snapshot.instances.clone();
        let instances = state
            .warmup
            .filter(listed, &shown, store_changed, Instant::now());
        if *instances == *state.snapshot.instances {
            return false;
        }
        state.snapshot = Snapshot {
            version: state.snapshot.version + 1,
            instances: instances.into(),
        };
        true
    }

    pub(super) fn notify(&self) {
        self.watchers.lock().retain(|tx| {
            !matches!(
                tx.try_send(()),
                Err(crossbeam_channel::TrySendError::Disconnected(_))
            )
        });
    }

    /// Applies one watch response's events (all of one revision arrive in
    /// one response). Events not newer than the list are skipped.
    pub(super) fn apply(&self, events: &[Event]) {
        let mut state = self.state.lock();
        let base = state.revision;
        let mut newest = base;
        for ev in events {
            if ev.kv.mod_revision <= base {
                continue;
            }
            newest = newest.max(ev.kv.mod_revision);
            let Ok(key) = unb64(&ev.kv.key).and_then(|k| {
                String::from_utf8(k).map_err(|_| Error::Protocol("etcd key is not UTF-8".into()))
            }) else {
                continue;
            };
            if ev.kind == "DELETE" {
                state.entries.remove(&key);
            } else if let Some((key, instance)) = self.decode(&ev.kv) {
                state.entries.insert(key, instance);
            }
        }
        state.revision = newest;
        let changed = self.rebuild(&mut state, false);
        drop(state);
        if changed {
            self.notify();
        }
    }

    /// Ends a warmup whose period is over (then the list follows etcd).
    pub(super) fn end_warmup_if_due(&self) {
        let mut state = self.state.lock();
        if !state.warmup.due(Instant::now()) {
            return;
        }
        let changed = self.rebuild(&mut state, false);
        drop(state);
        if changed {
            self.notify();
        }
    }
}
