//! Calls over many instances of a service: discovery, selection, fail
//! modes, broadcast.
//!
//! [`XClient`] is the entry point; the policies that pick an instance
//! ([`Selector`], [`SelectMode`], [`hash_key`]) live here, at
//! `geerpc::xclient::...` (the crate root re-exports only [`XClient`],
//! [`Discovery`], [`MultiServerDiscovery`], [`SelectMode`] and
//! [`FailMode`]).
//!
//! Above the client, below the registry and etcd: nothing here imports
//! from `registry` or `etcd`.

mod builder;
mod client;
mod discovery;
mod fail;
mod fanout;
mod pick;
mod plan;
mod pool;
mod selector;
mod typed;

pub use crate::context::{CallOptions, FailMode};
pub use builder::XClientBuilder;
pub use client::{XCall, XClient};
pub use discovery::{Discovery, Instance, MultiServerDiscovery, Snapshot};
#[cfg(feature = "metrics")]
pub use pool::XClientMetrics;
pub use selector::{
    hash_key, ConsistentHashSelector, P2cSelector, RandomSelector, RoundRobinSelector,
    SelectContext, SelectMode, Selector, WeightedRoundRobinSelector,
};
pub use typed::FanOut;
