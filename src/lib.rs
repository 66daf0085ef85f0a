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
//! let client = Client::dial(running.addr())?;
//! let sum: i64 = client.call("Arith.Sum", &Args { num1: 1, num2: 2 })?;
//! assert_eq!(sum, 3);
//! # Ok::<(), geerpc::Error>(())
//! ```

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

// The layers, bottom up; each may import only from those above it in this
// list (docs/ARCHITECTURE.md): the shared vocabulary, the wire, client and
// server (which never import each other), the XClient, then registry and
// etcd. The `geerpc` binary and the examples use the public API only.
mod code;
mod error;
mod util;
pub mod wire;

pub mod client;
pub mod server;

pub mod xclient;

#[cfg(any(feature = "registry", feature = "etcd"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "registry", feature = "etcd"))))]
pub mod registration;

#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
pub mod etcd;
#[cfg(feature = "registry")]
#[cfg_attr(docsrs, doc(cfg(feature = "registry")))]
pub mod registry;

#[doc(hidden)]
#[path = "fuzz_seam.rs"]
pub mod __fuzz;

/// Go-style durations (`1.5s`, `200ms`), as the `geerpc` command and Go
/// peers write them.
pub mod duration {
    pub use crate::util::duration::{parse_duration, GoDuration};
}

pub use client::Client;
pub use code::{Code, RemoteKind};
pub use error::{Error, Result, TimeoutStage};
#[cfg(feature = "registry")]
#[cfg_attr(docsrs, doc(cfg(feature = "registry")))]
pub use registry::{Heartbeat, Registry, RegistryDiscovery};
pub use server::{Context, Server, Service};
pub use wire::{Address, Codec, Protocol, ToAddress};
pub use xclient::{Discovery, FailMode, MultiServerDiscovery, SelectMode, XClient};
