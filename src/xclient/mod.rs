//! Calls over many instances of a service: discovery, selection, fail
//! modes, broadcast.

mod client;
mod discovery;
mod pool;
mod selector;

pub use client::{CallOptions, FailMode, XCall, XClient, XClientBuilder};
pub use discovery::{Discovery, Instance, MultiServerDiscovery, Snapshot};
pub use selector::{
    hash_key, ConsistentHashSelector, P2cSelector, RandomSelector, RoundRobinSelector,
    SelectContext, SelectMode, Selector, WeightedRoundRobinSelector,
};
