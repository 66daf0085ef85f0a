//! geerpc: a synchronous, thread-based RPC framework with service
//! registration and discovery, speaking the GeeRPC wire protocol (Go's
//! `net/rpc` shape, JSON or MessagePack). No async runtime: every thread
//! is a plain `std` thread with a name, an owner and a way to stop.
//!
//! | to | use | more in |
//! |---|---|---|
//! | serve methods | [`Server`], [`Service`] | [`server`] |
//! | serve and call a trait, types checked at compile time | `#[geerpc::service]` (feature `macros`) | [`service`](macro@service) |
//! | call one server | [`Client`] | [`client`] |
//! | call a set of servers, balanced | [`XClient`] over a [`Discovery`] | [`xclient`] |
//! | keep a server listed | [`Heartbeat`] (HTTP registry) or `etcd::EtcdRegistration`, with [`RegisterOptions`] | `registration`, `registry`, `etcd` |
//! | find servers | [`RegistryDiscovery`], `etcd::EtcdDiscovery`, [`MultiServerDiscovery`] | [`xclient`] |
//! | give a call a deadline, metadata, a trace; return a code | [`CallOptions`], [`Meta`], [`Context`], [`Status`], [`Code`] | [`context`] |
//! | run code around every call; shed overload | `server::Interceptor`, `client::Interceptor`, [`ServerBuilder`](server::ServerBuilder)'s limits | [`server`], [`client`] |
//!
//! Addresses are `PROTOCOL@ADDR` (`tcp@`, `http@` for HTTP CONNECT,
//! `unix@`); a bare `HOST:PORT` means `tcp@`. Every function that dials or
//! listens takes anything [`ToAddress`] accepts. Every failure is one
//! [`Error`], whose variants and [`Code`]s a caller can match.
//!
//! # Serve and call
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
//! let running = server.listen("127.0.0.1:0")?; // port 0: any free port
//!
//! let client = Client::dial(running.addr())?;
//! let sum: i64 = client.call("Arith.Sum", &Args { num1: 1, num2: 2 })?;
//! assert_eq!(sum, 3);
//! // Many calls may be in flight on one connection, from any thread:
//! let pending = client.go::<_, i64>("Arith.Sum", &Args { num1: 2, num2: 2 })?;
//! assert_eq!(pending.wait()?, 4);
//! # Ok::<(), geerpc::Error>(())
//! ```
//!
//! # Balance calls over several servers
//!
//! ```
//! use geerpc::{FailMode, MultiServerDiscovery, SelectMode, Server, Service, XClient};
//!
//! let mut servers = Vec::new();
//! for _ in 0..2 {
//!     let server = Server::new();
//!     server.register(Service::new("Echo").method("Echo", |s: String| Ok::<_, String>(s)))?;
//!     servers.push(server.listen("127.0.0.1:0")?);
//! }
//! let discovery = MultiServerDiscovery::new(servers.iter().map(|s| s.addr().clone()));
//! let xc = XClient::builder(discovery)
//!     .select_mode(SelectMode::RoundRobin)
//!     .fail_mode(FailMode::Failover { retries: 2 })
//!     .build();
//! let back: String = xc.call("Echo.Echo", &"hi")?;
//! assert_eq!(back, "hi");
//! # Ok::<(), geerpc::Error>(())
//! ```
//!
//! # Deadlines that travel, metadata and codes
//!
//! A call's deadline goes with it (PROTOCOL.md section 8): the handler
//! sees it, and every call the handler makes inherits it, so a chain of
//! calls shares one budget. Metadata travels both ways, and an error says
//! why with a [`Code`] a program can match.
//!
//! ```
//! use geerpc::{CallOptions, Client, Code, Context, Server, Service, Status};
//! use std::time::Duration;
//!
//! let server = Server::new();
//! server.register(Service::new("Users").method_with_context("Get", |ctx: &Context, id: u64| {
//!     assert!(ctx.deadline().is_some(), "the caller's timeout travelled");
//!     ctx.set_reply_meta("served-by", "node-1")?;
//!     match ctx.meta().get("tenant") {
//!         Some("acme") if id == 1 => Ok("alice".to_string()),
//!         Some(_) => Err(Status::not_found(format!("no user {id}"))),
//!         None => Err(Status::unauthenticated("no tenant")),
//!     }
//! }))?;
//! let running = server.listen("127.0.0.1:0")?;
//!
//! let client = Client::dial(running.addr())?;
//! let opts = CallOptions::new().timeout(Duration::from_secs(1)).meta("tenant", "acme")?;
//! let (name, meta) = client.go_with::<_, String>("Users.Get", &1, &opts)?.wait_with_meta()?;
//! assert_eq!((name.as_str(), meta.get("served-by")), ("alice", Some("node-1")));
//! let err = client.call_with::<_, String>("Users.Get", &2, &opts).unwrap_err();
//! assert_eq!(err.code(), Code::NotFound);
//! assert!(!err.is_retryable(), "it ran: not safe to send elsewhere");
//! # Ok::<(), geerpc::Error>(())
//! ```
//!
//! # Register with a registry, discover through it
//!
//! ```
//! # #[cfg(feature = "registry")] {
//! use geerpc::{Heartbeat, RegisterOptions, Registry, RegistryDiscovery};
//! use geerpc::{SelectMode, Server, Service, XClient};
//!
//! let registry = Registry::builder().addr("127.0.0.1:0").start()?;
//!
//! let server = Server::new();
//! server.register(Service::new("Echo").method("Echo", |s: String| Ok::<_, String>(s)))?;
//! let running = server.listen("127.0.0.1:0")?;
//! // Registers now, renews a third of the TTL apart; dropping it deregisters.
//! let _beat = Heartbeat::for_server(&running, registry.url(), RegisterOptions::new())?;
//!
//! let discovery = RegistryDiscovery::builder(registry.url()).service("Echo").build()?;
//! # // The heartbeat registers from its own thread: wait for the listing.
//! # use geerpc::Discovery;
//! # let changes = discovery.watch().expect("registry discovery signals changes");
//! # while discovery.snapshot().map_or(true, |s| s.instances.is_empty()) {
//! #     changes.recv_timeout(std::time::Duration::from_secs(10)).expect("listed within 10 s");
//! # }
//! let xc = XClient::new(discovery, SelectMode::Random);
//! let back: String = xc.call("Echo.Echo", &"hi")?;
//! assert_eq!(back, "hi");
//! # }
//! # Ok::<(), geerpc::Error>(())
//! ```
//!
//! # The same with etcd
//!
//! ```no_run
//! # #[cfg(feature = "etcd")] {
//! use geerpc::etcd::{EtcdDiscovery, EtcdRegistration};
//! use geerpc::{RegisterOptions, SelectMode, Server, Service, XClient};
//!
//! let endpoints = ["127.0.0.1:2379"];
//! let server = Server::new();
//! server.register(Service::new("Echo").method("Echo", |s: String| Ok::<_, String>(s)))?;
//! let running = server.listen("127.0.0.1:0")?;
//! // One key per service on a lease kept alive from a thread; dropping the
//! // handle (or shutting the server down) revokes it.
//! let _reg = EtcdRegistration::for_server(&running, &endpoints, RegisterOptions::new())?;
//! let discovery = EtcdDiscovery::new(&endpoints, Some("Echo"))?;
//! let xc = XClient::new(discovery, SelectMode::RoundRobin);
//! let back: String = xc.call("Echo.Echo", &"hi")?;
//! # }
//! # Ok::<(), geerpc::Error>(())
//! ```
//!
//! # Features
//!
//! `registry` (the HTTP registry, its heartbeat and discovery), `etcd`,
//! `debug-page` (the server's `/debug/geerpc` page) and `tls` (https for
//! the registry and etcd clients) are on by default; turn them off with
//! `default-features = false` to build only what you use. `cli` builds the
//! `geerpc` command. The layers and threads are described in
//! `docs/ARCHITECTURE.md`, the wire format in `docs/PROTOCOL.md`.

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

pub mod meta;

pub mod context;

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

pub use client::{Caller, Client};
pub use code::{Code, RemoteKind};
pub use context::Context;
pub use context::{CallOptions, Scope, Status};
pub use error::{Error, Result, TimeoutStage};
pub use meta::Meta;
#[cfg(any(feature = "registry", feature = "etcd"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "registry", feature = "etcd"))))]
pub use registration::RegisterOptions;
#[cfg(feature = "registry")]
#[cfg_attr(docsrs, doc(cfg(feature = "registry")))]
pub use registry::{Heartbeat, Registry, RegistryDiscovery};
pub use server::{Server, Service};
pub use util::token::Token;
pub use wire::{Address, Codec, Protocol, ToAddress};
pub use wire::{LEGACY_MAGIC_NUMBER, MAGIC_NUMBER};

/// [`Codec::Gob`]'s knobs.
#[cfg(feature = "gob")]
#[cfg_attr(docsrs, doc(cfg(feature = "gob")))]
pub mod gob {
    /// Tells the gob codec `T`'s whole type up front, from its
    /// `Deserialize` impl, so that its values are sent typed from the
    /// first one on: an empty `Vec<T>` reply as `[]T`, not `[]interface{}`
    /// (which a Go peer refuses to read into `[]T`), and a struct's
    /// `None`/empty fields listed in its first definition. Call it once per
    /// reply or argument type before serving or calling (process-wide; see
    /// [`Codec::Gob`](crate::Codec::Gob) for what is learned from values
    /// anyway). Optional: without it, element types are learned from the
    /// first value that shows them.
    ///
    /// Covered: scalars, strings, bytes, `Vec`, maps, `Option`, structs,
    /// newtypes, tuples of one type, nested to 32 levels (a recursive type
    /// stops there). An error, and nothing learned, for a type the tracer
    /// cannot walk: one that asks for any type (`serde_json::Value`,
    /// untagged enums), enums, or one whose `Deserialize` refuses zero
    /// values (`NonZeroU32`).
    ///
    /// ```
    /// geerpc::gob::describe::<Vec<u64>>()?;
    /// # Ok::<(), geerpc::Error>(())
    /// ```
    pub fn describe<T: serde::de::DeserializeOwned>() -> crate::Result<()> {
        crate::wire::codec::gob::describe::<T>().map_err(|message| crate::Error::Encode {
            what: std::any::type_name::<T>().to_string(),
            message,
        })
    }
}
pub use xclient::{Discovery, FailMode, MultiServerDiscovery, SelectMode, XClient};

#[cfg(feature = "macros")]
#[cfg_attr(docsrs, doc(cfg(feature = "macros")))]
#[doc = include_str!("service.md")]
pub use geerpc_macros::service;
