//! Where the instances of a service are: the [`Discovery`] trait and the
//! fixed-list [`MultiServerDiscovery`].

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::Result;

/// One server instance: its address and what it says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Instance {
    /// `PROTOCOL@ADDR`, as clients dial it.
    pub addr: String,
    /// Relative share of calls under weighted selection (default 1).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Services the instance serves (empty: unknown, any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    /// Free-form metadata: version, tags, zone...
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

fn default_weight() -> u32 {
    1
}

impl Instance {
    /// An instance with weight 1 and no metadata.
    pub fn new(addr: impl Into<String>) -> Instance {
        Instance {
            addr: addr.into(),
            weight: 1,
            services: Vec::new(),
            metadata: BTreeMap::new(),
        }
    }

    /// The same instance with another weight.
    pub fn with_weight(mut self, weight: u32) -> Instance {
        self.weight = weight;
        self
    }
}

impl From<&str> for Instance {
    fn from(addr: &str) -> Instance {
        Instance::new(addr)
    }
}

/// The instances known at one moment. `version` changes whenever the list
/// does, so a selector can cache what it derives from a list (a hash ring,
/// weights) and rebuild only on change.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Bumped on every change of the list.
    pub version: u64,
    /// The instances, sorted by address.
    pub instances: Arc<[Instance]>,
}

/// A source of instances for an [`XClient`](crate::XClient).
///
/// Implementations are shared between threads and called on every call, so
/// [`snapshot`](Discovery::snapshot) must be cheap (a lock and an `Arc`
/// clone); any network refresh it triggers happens outside locks that other
/// callers need, and a failed refresh keeps serving the last good list.
pub trait Discovery: Send + Sync {
    /// The current instances, refreshed first if the list is stale.
    fn snapshot(&self) -> Result<Snapshot>;

    /// Fetches the list from its source now.
    fn refresh(&self) -> Result<()>;

    /// Replaces the list by hand.
    fn update(&self, instances: Vec<Instance>) -> Result<()>;

    /// A channel that receives a message whenever the list changes, for
    /// discoveries that can watch their source. `None`: no such signal.
    fn watch(&self) -> Option<crossbeam_channel::Receiver<()>> {
        None
    }
}

impl From<String> for Instance {
    fn from(addr: String) -> Instance {
        Instance::new(addr)
    }
}

impl Instance {
    /// The same instance with one more metadata entry (a tag, a zone...).
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Instance {
        self.metadata.insert(key.into(), value.into());
        self
    }
}

/// A snapshot of `instances`, sorted by address, at `version`.
fn sorted_snapshot(version: u64, mut instances: Vec<Instance>) -> Snapshot {
    instances.sort_by(|a, b| a.addr.cmp(&b.addr));
    Snapshot {
        version,
        instances: instances.into(),
    }
}

/// Forwards every method to the discovery behind a pointer.
macro_rules! forward_discovery {
    ($($ptr:ident),*) => {$(
        impl<D: Discovery + ?Sized> Discovery for $ptr<D> {
            fn snapshot(&self) -> Result<Snapshot> {
                (**self).snapshot()
            }

            fn refresh(&self) -> Result<()> {
                (**self).refresh()
            }

            fn update(&self, instances: Vec<Instance>) -> Result<()> {
                (**self).update(instances)
            }

            fn watch(&self) -> Option<crossbeam_channel::Receiver<()>> {
                (**self).watch()
            }
        }
    )*};
}

// A shared discovery is a discovery: an XClient can take an `Arc` while its
// owner keeps a handle to update the list, or a `Box<dyn Discovery>` chosen
// at run time.
forward_discovery!(Arc, Box);

/// A fixed list of instances, changed only by [`update`](Discovery::update).
///
/// ```
/// use geerpc::{Discovery, MultiServerDiscovery};
/// use geerpc::xclient::Instance;
///
/// let d = MultiServerDiscovery::new(["tcp@127.0.0.1:7001", "tcp@127.0.0.1:7002"]);
/// assert_eq!(d.snapshot()?.instances.len(), 2);
/// d.update(vec![Instance::new("tcp@127.0.0.1:7003").with_weight(3)])?;
/// let s = d.snapshot()?;
/// assert_eq!((s.version, s.instances[0].weight), (2, 3));
/// # Ok::<(), geerpc::Error>(())
/// ```
pub struct MultiServerDiscovery {
    current: parking_lot::Mutex<Snapshot>,
    watchers: parking_lot::Mutex<Vec<crossbeam_channel::Sender<()>>>,
}

impl MultiServerDiscovery {
    /// A discovery over `instances`: addresses (`PROTOCOL@ADDR`, weight 1)
    /// or [`Instance`]s. Duplicate addresses keep their first entry.
    pub fn new<I: Into<Instance>>(instances: impl IntoIterator<Item = I>) -> MultiServerDiscovery {
        MultiServerDiscovery {
            current: parking_lot::Mutex::new(sorted_snapshot(1, dedup(instances))),
            watchers: parking_lot::Mutex::new(Vec::new()),
        }
    }
}

fn dedup<I: Into<Instance>>(instances: impl IntoIterator<Item = I>) -> Vec<Instance> {
    let mut seen = std::collections::HashSet::new();
    instances
        .into_iter()
        .map(Into::into)
        .filter(|i: &Instance| seen.insert(i.addr.clone()))
        .collect()
}

impl Discovery for MultiServerDiscovery {
    fn snapshot(&self) -> Result<Snapshot> {
        Ok(self.current.lock().clone())
    }

    /// Nothing to fetch: the list is fixed.
    fn refresh(&self) -> Result<()> {
        Ok(())
    }

    fn update(&self, instances: Vec<Instance>) -> Result<()> {
        {
            let mut cur = self.current.lock();
            *cur = sorted_snapshot(cur.version + 1, dedup(instances));
        }
        // A watcher that is gone or already has a pending signal is fine.
        self.watchers.lock().retain(|tx| {
            !matches!(
                tx.try_send(()),
                Err(crossbeam_channel::TrySendError::Disconnected(_))
            )
        });
        Ok(())
    }

    fn watch(&self) -> Option<crossbeam_channel::Receiver<()>> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.watchers.lock().push(tx);
        Some(rx)
    }
}

impl std::fmt::Debug for MultiServerDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiServerDiscovery")
            .field("snapshot", &*self.current.lock())
            .finish()
    }
}
