//! [`EtcdDiscoveryBuilder`]: every setting of an [`EtcdDiscovery`] (what
//! to follow, how to reach the cluster) before its first list.

use std::sync::Arc;
use std::time::Duration;

use super::access::{Access, User};
use super::client::parse_endpoints;
use super::discovery::EtcdDiscovery;
use super::warmup::DEFAULT_WARMUP;
use super::{normalize_prefix, DEFAULT_PREFIX};
use crate::error::Result;
use crate::util::token::Token;

/// Settings of an [`EtcdDiscovery`], from [`EtcdDiscovery::builder`].
///
/// ```no_run
/// use geerpc::etcd::EtcdDiscovery;
/// use geerpc::Token;
///
/// let discovery = EtcdDiscovery::builder(&["https://etcd-1:2379,https://etcd-2:2379"])
///     .service("Arith")
///     .tls_ca_file("etcd-ca.pem")
///     .tls_client_cert_files("client.pem", "client-key.pem")
///     .user("geerpc", Token::from_file("/run/secrets/etcd-password")?)
///     .build()?;
/// # Ok::<(), geerpc::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct EtcdDiscoveryBuilder {
    /// As given; parsed by `build`, which tells what is wrong.
    endpoints: Vec<String>,
    prefix: String,
    service: Option<String>,
    warmup: Duration,
    access: Access,
}

impl EtcdDiscoveryBuilder {
    pub(super) fn new<S: AsRef<str>>(endpoints: &[S]) -> EtcdDiscoveryBuilder {
        EtcdDiscoveryBuilder {
            endpoints: endpoints.iter().map(|e| e.as_ref().to_string()).collect(),
            prefix: DEFAULT_PREFIX.to_string(),
            service: None,
            warmup: DEFAULT_WARMUP,
            access: Access::default(),
        }
    }

    /// Follows only the instances of `service` (default: every service; an
    /// instance registered under several then appears once, with all of
    /// them).
    pub fn service(mut self, service: &str) -> Self {
        self.service = Some(service.to_string());
        self
    }

    /// Key prefix (default [`DEFAULT_PREFIX`]).
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = normalize_prefix(prefix);
        self
    }

    /// How long the last list is kept after a mass disappearance (default
    /// [`DEFAULT_WARMUP`], 5 s; zero turns it off): when etcd's store
    /// changes (a rebuilt or restored cluster) or the list would go empty
    /// after two or more instances left within this period, the instances
    /// listed before stay listed until they are all back or the period
    /// ends, then the list follows etcd again. Set it a little above the
    /// servers' renewal period (a third of their TTL) so they have time to
    /// register again. One server leaving, or servers leaving slowly, is
    /// followed at once.
    pub fn warmup(mut self, period: Duration) -> Self {
        self.warmup = period;
        self
    }

    /// Trusts the CA certificates in PEM file `path` for `https://`
    /// endpoints, instead of the webpki roots (default: the webpki roots).
    /// A file that cannot be read makes [`build`](Self::build) fail,
    /// naming it.
    #[cfg(feature = "tls")]
    pub fn tls_ca_file(mut self, path: impl AsRef<std::path::Path>) -> Self {
        self.access.tls.set_ca_file(path.as_ref());
        self
    }

    /// Presents the certificate chain in PEM file `cert` (with the key in
    /// PEM file `key`) to `https://` endpoints, as members started with
    /// `--client-cert-auth` require (default: none).
    #[cfg(feature = "tls")]
    pub fn tls_client_cert_files(
        mut self,
        cert: impl AsRef<std::path::Path>,
        key: impl AsRef<std::path::Path>,
    ) -> Self {
        self.access
            .tls
            .set_client_cert_files(cert.as_ref(), key.as_ref());
        self
    }

    /// Authenticates as etcd user `name` with `password` (default: no
    /// user), for a cluster with authentication enabled; the token is
    /// renewed whenever etcd refuses it. The user needs read permission
    /// on the prefix. Use `https://` endpoints beyond loopback, or the
    /// password crosses the network in clear.
    pub fn user(mut self, name: &str, password: Token) -> Self {
        self.access.user = Some(Arc::new(User::new(name, password)));
        self
    }

    /// Lists the instances and starts following them. Fails if no endpoint
    /// was given, a TLS file cannot be read, the user is refused, or no
    /// endpoint answers the first list.
    pub fn build(self) -> Result<EtcdDiscovery> {
        let endpoints = parse_endpoints(&self.endpoints)?;
        self.access.check(&endpoints[0])?;
        EtcdDiscovery::start(
            endpoints,
            &self.prefix,
            self.service.as_deref(),
            self.access,
            self.warmup,
        )
    }
}
