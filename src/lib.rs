//! geerpc: a synchronous, thread-based RPC framework with service
//! registration and discovery, speaking the GeeRPC wire protocol.
//!
//! - [`Server`] serves [`Service`]s by name (`Service.Method`) over TCP or
//!   Unix sockets, with JSON or MessagePack chosen per connection.
//! - [`Client`] multiplexes any number of concurrent calls on one
//!   connection, blocking ([`Client::call`]) or not ([`Client::go`]).
//! - [`Registry`] is the HTTP registry servers register with; a
//!   [`Heartbeat`] keeps a server registered, and [`RegistryDiscovery`]
//!   tells clients where a service's instances are.
//!
//! No async runtime: every thread is a plain `std` thread with a name, an
//! owner and a way to stop.
//!
//! ```
//! use geerpc::{Client, Server, Service};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! #[serde(rename_all = "PascalCase")]
//! struct Args { num1: i64, num2: i64 }
//!
//! let server = Server::new();
//! server.register(Service::new("Arith").method("Sum", |a: Args| Ok::<_, String>(a.num1 + a.num2)))?;
//! let running = server.listen("127.0.0.1:0")?;
//!
//! let client = Client::dial(&running.addr().to_string())?;
//! let sum: i64 = client.call("Arith.Sum", &Args { num1: 1, num2: 2 })?;
//! assert_eq!(sum, 3);
//! # Ok::<(), geerpc::Error>(())
//! ```

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[doc(hidden)]
#[path = "fuzz_seam.rs"]
pub mod __fuzz;
mod client;
mod code;
mod codec;
mod duration;
mod error;
#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
pub mod etcd;
mod frame;
mod handoff;
mod handshake;
#[cfg(feature = "registry")]
mod registry;
mod server;
mod service;
mod stats;
mod threads;
mod transport;
mod writer;
mod xclient;

pub use client::{Call, Client, ClientBuilder};
pub use code::Code;
pub use codec::Codec;
pub use duration::{parse_duration, GoDuration};
pub use error::{Error, Result, TimeoutStage};
#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
pub use etcd::EtcdDiscovery;
pub use handshake::{LEGACY_MAGIC_NUMBER, MAGIC_NUMBER};
#[cfg(feature = "registry")]
#[cfg_attr(docsrs, doc(cfg(feature = "registry")))]
pub use registry::{
    Heartbeat, HeartbeatOptions, Registry, RegistryDiscovery, RegistryDiscoveryBuilder,
    RegistryHandle,
};
pub use server::{Server, ServerBuilder, ServerHandle};
pub use service::{Context, MethodInfo, Service, ServiceInfo};
pub use stats::StatsSnapshot;
pub use transport::{Address, Protocol};
pub use xclient::{
    hash_key, CallOptions, ConsistentHashSelector, FailMode, MultiServerDiscovery, P2cSelector,
    RandomSelector, RoundRobinSelector, SelectContext, SelectMode, Selector,
    WeightedRoundRobinSelector, XCall, XClient, XClientBuilder,
};
pub use xclient::{Discovery, Instance, Snapshot};
