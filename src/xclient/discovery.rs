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
