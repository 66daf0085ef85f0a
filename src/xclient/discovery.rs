//! Where the instances of a service are: the [`Discovery`] trait, what it
//! hands out ([`Snapshot`], [`Instance`]) and the fixed-list
//! [`MultiServerDiscovery`].
//!
//! Data and the trait only: it may not dial, and it never imports the
//! registry or etcd (they implement [`Discovery`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::wire::Address;

/// One server instance: its address and what it says about itself.
///
/// Made with [`Instance::new`] (or `From` an address) and the `with_`
/// methods; the fields are public to read. More fields may come, so it
/// cannot be built with a struct literal outside this crate.
///
/// The address is kept as text, exactly as it was registered or listed
/// (what a Go registry lists and expects back); [`Instance::address`]
/// parses it. An [`XClient`](super::XClient) parses it once, when it first
/// meets the instance: one whose address does not parse is left out of
/// selection, with one warning in the log while it stays listed.
///
/// ```
/// use geerpc::xclient::Instance;
/// use geerpc::{Address, Protocol};
///
/// let i = Instance::new("127.0.0.1:7001").with_weight(3).with_metadata("zone", "a");
/// assert_eq!(i.addr, "127.0.0.1:7001");
/// // A bare HOST:PORT is TCP.
/// assert_eq!(i.address()?.protocol(), Protocol::Tcp);
/// let a: Address = "http@127.0.0.1:7002".parse()?;
/// assert_eq!(Instance::from(a).addr, "http@127.0.0.1:7002");
/// assert!(Instance::new("localhost").address().is_err());
/// # Ok::<(), geerpc::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Instance {
    /// The address as given: `PROTOCOL@ADDR`, or a bare `HOST:PORT` for
    /// TCP (see [`Address`]).
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
    /// An instance at `addr` (`PROTOCOL@ADDR` or a bare `HOST:PORT`, kept
    /// as given) with weight 1, no services listed (it may serve any) and
    /// no metadata.
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

    /// The same instance, serving `services` (by name) only.
    pub fn with_services<S: Into<String>>(
        mut self,
        services: impl IntoIterator<Item = S>,
    ) -> Instance {
        self.services = services.into_iter().map(Into::into).collect();
        self
    }

    /// The address, parsed; [`Error::InvalidAddress`](crate::Error::InvalidAddress)
    /// saying what is wrong if it does not parse.
    pub fn address(&self) -> Result<Address> {
        self.addr.parse()
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
///
/// Made with [`Snapshot::new`]; the fields are public to read. More fields
/// may come, so it cannot be built with a struct literal outside this
/// crate.
///
/// ```
/// use geerpc::xclient::{Instance, Snapshot};
///
/// let s = Snapshot::new(7, vec![Instance::new("tcp@127.0.0.1:7001")]);
/// assert_eq!((s.version, s.instances.len()), (7, 1));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Snapshot {
    /// Bumped on every change of the list.
    pub version: u64,
    /// The instances. The built-in discoveries sort them by address; a
    /// selector indexes into this list, so it must not change within a
    /// version.
    pub instances: Arc<[Instance]>,
}

impl Snapshot {
    /// The list `instances` (kept in the order given) at `version`. A
    /// [`Discovery`] gives a new version to every different list.
    pub fn new(version: u64, instances: impl Into<Arc<[Instance]>>) -> Snapshot {
        Snapshot {
            version,
            instances: instances.into(),
        }
    }
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

    /// Change notifications: a new receiver that gets a message after each
    /// change of the list (each new [`Snapshot::version`]) from now on.
    ///
    /// This is the one meaning of "watch" on a discovery. The message
    /// carries nothing: on receiving it, take a [`snapshot`](Discovery::snapshot).
    /// Changes coalesce (at most one message waits; the discovery never
    /// blocks on a slow receiver), so a message means "the list changed
    /// since you last looked", not one message per change. Drop the
    /// receiver to unsubscribe. `None`: this discovery cannot tell (the
    /// default; poll [`snapshot`](Discovery::snapshot) instead).
    ///
    /// A discovery that fetches its list (from a registry, from etcd)
    /// sends whenever a fetch installs a different list, whatever started
    /// the fetch; how soon a change in the source is fetched (a long poll
    /// kept open, or a refresh when the list is stale) is that
    /// discovery's own setting, not this channel.
    fn watch(&self) -> Option<crossbeam_channel::Receiver<()>> {
        None
    }
}

impl From<String> for Instance {
    fn from(addr: String) -> Instance {
        Instance::new(addr)
    }
}

impl From<&String> for Instance {
    fn from(addr: &String) -> Instance {
        Instance::new(addr.as_str())
    }
}

impl From<Address> for Instance {
    fn from(addr: Address) -> Instance {
        Instance::new(addr.to_string())
    }
}

impl From<&Address> for Instance {
    fn from(addr: &Address) -> Instance {
        Instance::new(addr.to_string())
    }
}

impl From<SocketAddr> for Instance {
    fn from(addr: SocketAddr) -> Instance {
        Instance::from(Address::tcp(addr))
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
    Snapshot::new(version, instances)
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
/// // Anything that names a server: `PROTOCOL@ADDR`, a bare HOST:PORT (TCP),
/// // an `Address`, a `SocketAddr`, or an `Instance`.
/// let d = MultiServerDiscovery::new(["tcp@127.0.0.1:7001", "127.0.0.1:7002"]);
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
    /// A discovery over `instances`: addresses (what
    /// [`ToAddress`](crate::ToAddress) takes: `PROTOCOL@ADDR`, a bare
    /// `HOST:PORT` for TCP, an [`Address`], a [`SocketAddr`]; weight 1) or
    /// [`Instance`]s. An address is listed in its canonical form
    /// (`127.0.0.1:7001` as `tcp@127.0.0.1:7001`), so two spellings of one
    /// server are one entry; duplicates keep their first entry. An
    /// address that does not parse is kept in the list but never called:
    /// the [`XClient`](super::XClient) leaves it out and logs why.
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
        .map(|mut i: Instance| {
            if let Ok(a) = i.address() {
                i.addr = a.to_string();
            }
            i
        })
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

#[cfg(test)]
mod tests {
    use super::{Discovery, MultiServerDiscovery};

    #[test]
    fn two_spellings_of_one_server_are_one_instance() {
        let d = MultiServerDiscovery::new(["127.0.0.1:7002", "tcp@127.0.0.1:7002", "unix@/x"]);
        let s = d.snapshot().unwrap();
        let addrs: Vec<_> = s.instances.iter().map(|i| i.addr.as_str()).collect();
        assert_eq!(addrs, ["tcp@127.0.0.1:7002", "unix@/x"]);
    }
}
