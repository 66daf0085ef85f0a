//! Registration and discovery on an etcd v3 cluster, through its JSON
//! gateway (`/v3/...` on the client port), with blocking HTTP and no etcd
//! client crate.
//!
//! # Layout in etcd
//!
//! A server registers one key per service it serves,
//! `PREFIX/SERVICE/ADDR` (default prefix [`DEFAULT_PREFIX`]), whose value is
//! the JSON of its [`Instance`]: address, weight, services and metadata. All
//! of a server's keys hang on one lease, so they appear in one revision,
//! vanish together when the server deregisters (the lease is revoked) and
//! expire together when it dies without doing so (the lease is no longer
//! kept alive).
//!
//! - [`EtcdRegistrar`] (or its shorthands [`EtcdRegistration::for_server`]
//!   and [`EtcdRegistration::start`]), etcd's side of the one
//!   [registration](crate::registration) concept, grants the lease, puts the
//!   keys and keeps the lease alive from a heartbeat thread (a renewal every
//!   second by default, retried every 0.5-1 s while it fails); when etcd
//!   has lost the lease (it expired during a partition, or the cluster was
//!   rebuilt or restored), the server registers again within about a
//!   second of etcd being reachable. The lease ID is chosen by geerpc, so a
//!   grant retried after its answer was lost finds the lease it granted
//!   rather than leaving an orphan. Dropping the [`EtcdRegistration`] (like
//!   dropping a [`Heartbeat`](crate::Heartbeat)), calling
//!   [`EtcdRegistration::deregister`] or shutting the server down revokes it.
//! - [`EtcdDiscovery`] lists the keys under the prefix, then watches them
//!   from the next revision, so every change is seen as it happens; it is a
//!   [`Discovery`](crate::Discovery) like any other. A watch that stays
//!   silent makes its member prove it is alive; a member that does not
//!   (stopped, powered off, cut off) is left within about 6 s for the next
//!   endpoint. After a mass disappearance (a rebuilt store, every lease
//!   lost at once) the last list is kept for a warmup
//!   ([`DEFAULT_WARMUP`]) while the servers register again.
//!
//! Several endpoints of one cluster may be given (`"127.0.0.1:2379"`,
//! `"http://h:2379"`, or several in one string separated by commas); when
//! one fails, the next is used.
//!
//! ```no_run
//! use geerpc::etcd::{EtcdDiscovery, EtcdRegistration};
//! use geerpc::registration::RegisterOptions;
//! use geerpc::{Discovery, Server, Service};
//! use std::time::Duration;
//!
//! let server = Server::new();
//! server.register(Service::new("Echo").method("Echo", |s: String| Ok::<_, String>(s)))?;
//! let running = server.listen("tcp@127.0.0.1:0")?;
//! let endpoints = ["127.0.0.1:2379"];
//! let _registration = EtcdRegistration::for_server(
//!     &running,
//!     &endpoints,
//!     RegisterOptions::new().ttl(Duration::from_secs(10)),
//! )?;
//!
//! let discovery = EtcdDiscovery::new(&endpoints, Some("Echo"))?;
//! assert_eq!(discovery.snapshot()?.instances[0].addr, running.addr().to_string());
//! # Ok::<(), geerpc::Error>(())
//! ```

mod access;
mod builder;
mod client;
mod discovery;
mod register;
mod warmup;
mod watch;

pub use builder::EtcdDiscoveryBuilder;
pub use discovery::EtcdDiscovery;
pub use register::{EtcdRegistrar, EtcdRegistration, DEFAULT_TTL};
pub use warmup::DEFAULT_WARMUP;

use crate::xclient::Instance;

/// The key prefix used when none is given.
pub const DEFAULT_PREFIX: &str = "/geerpc";

/// A prefix without a trailing slash (`"/geerpc/"` and `"/geerpc"` are one).
fn normalize_prefix(prefix: &str) -> String {
    prefix.trim_end_matches('/').to_string()
}

/// The key of one service of one instance.
fn instance_key(prefix: &str, service: &str, addr: &str) -> String {
    format!("{prefix}/{service}/{addr}")
}

/// The instance a key and its value describe. The address comes from the
/// key (the value may be from another program); the rest from the value when
/// it is an [`Instance`] in JSON.
fn parse_entry(prefix: &str, key: &[u8], value: &[u8]) -> Option<(String, Instance)> {
    let key = std::str::from_utf8(key).ok()?;
    let rest = key.strip_prefix(prefix)?.strip_prefix('/')?;
    let (service, addr) = rest.split_once('/')?;
    if service.is_empty() || addr.is_empty() {
        return None;
    }
    let mut instance = match serde_json::from_slice::<Instance>(value) {
        Ok(i) => i,
        Err(e) => {
            log::warn!(
                "etcd discovery: value of {key} is not an instance ({e}); using the key alone"
            );
            Instance::new(addr)
        }
    };
    instance.addr = addr.to_string();
    if !instance.services.iter().any(|s| s == service) {
        instance.services.push(service.to_string());
        instance.services.sort();
    }
    Some((service.to_string(), instance))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let key = instance_key("/geerpc", "Arith", "unix@/tmp/a.sock");
        assert_eq!(key, "/geerpc/Arith/unix@/tmp/a.sock");
        let value = serde_json::to_vec(&Instance::new("ignored").with_weight(3)).unwrap();
        let (service, i) = parse_entry("/geerpc", key.as_bytes(), &value).unwrap();
        assert_eq!(service, "Arith");
        assert_eq!(i.addr, "unix@/tmp/a.sock");
        assert_eq!(i.weight, 3);
        assert_eq!(i.services, ["Arith"]);
    }

    #[test]
    fn foreign_values_and_keys() {
        let (_, i) = parse_entry("/p", b"/p/S/tcp@h:1", b"not json").unwrap();
        assert_eq!(
            i,
            Instance {
                services: vec!["S".into()],
                ..Instance::new("tcp@h:1")
            }
        );
        assert!(parse_entry("/p", b"/p/S", b"").is_none());
        assert!(parse_entry("/p", b"/px/S/a", b"").is_none());
        assert!(parse_entry("/p", b"/p//a", b"").is_none());
        assert!(parse_entry("/p", b"\xff", b"").is_none());
        assert_eq!(normalize_prefix("/geerpc/"), "/geerpc");
    }
}
