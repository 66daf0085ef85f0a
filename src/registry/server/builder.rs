//! [`RegistryBuilder`]: a registry server's configuration (address, TTL,
//! paths, workers, write timeout, scheduling policy) and its start, which
//! binds the port and starts every thread the running [`Registry`] owns.
//!
//! The bounds' knobs are in `limits`, the warmup's in `epoch`. This file
//! only reads and wires them: it may not answer requests (that is `http`)
//! nor touch the table after start.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::answer::Answerers;
use super::auth::Auth;
use super::limits::{self, Limits};
use super::listen::{self, set_inherited_options, start_tiny_http};
use super::long_poll::Watchers;
use super::roles::{self, Roles};
use super::table::Table;
use super::{http, reap, Registry, Shared, State};
use crate::error::{Error, Result};
use crate::registry::epoch::Epoch;
use crate::util::duration::GoDuration;
use crate::util::threads::ThreadGroup;
use crate::util::token::Token;
use crate::wire::{Address, Protocol, ToAddress};

/// A registry server's settings; [`start`](Self::start) runs it and
/// returns the running [`Registry`]. Reached by [`Registry::builder`].
///
/// ```
/// use geerpc::Registry;
/// use std::time::Duration;
///
/// let registry = Registry::builder()
///     .addr("127.0.0.1:0")
///     .ttl(Duration::from_secs(30))
///     .start()?;
/// println!("registry at {} ({})", registry.url(), registry.addr());
/// registry.shutdown();
/// # Ok::<(), geerpc::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct RegistryBuilder {
    /// Where to listen, or what was wrong with the address given (reported
    /// by `start`, as the builder's methods cannot fail).
    addr: std::result::Result<Address, (String, String)>,
    ttl: Duration,
    /// See [`legacy_ttl`](Self::legacy_ttl).
    legacy_ttl: Duration,
    /// See [`warmup`](Self::warmup), in `epoch.rs`.
    pub(in crate::registry) warmup: Duration,
    paths: Vec<String>,
    workers: usize,
    write_timeout: Duration,
    batch_scheduling: bool,
    /// See [`ui`](Self::ui).
    ui: bool,
    /// Set by the knobs in `limits`.
    pub(super) limits: Limits,
    /// Set by [`write_token`](Self::write_token) and
    /// [`read_token`](Self::read_token).
    auth: Auth,
    /// Set by [`tls_pem_files`](Self::tls_pem_files): the certificate
    /// chain's and the key's files, read at start.
    #[cfg(feature = "tls")]
    tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl Default for RegistryBuilder {
    /// The same as [`Registry::builder`].
    fn default() -> Self {
        Registry::builder()
    }
}

impl Registry {
    /// Where a registry listens unless told otherwise.
    pub const DEFAULT_ADDR: &'static str = "127.0.0.1:9999";
    /// The article's path; `/_geerpc_/registry` is served too.
    pub const DEFAULT_PATH: &'static str = "/_rpc_/registry";
    /// How long an address stays listed without a heartbeat.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
    /// How long an address registered without geerpc's heartbeat (a Go
    /// GeeRPC server) stays listed at least, whatever the TTL: see
    /// [`RegistryBuilder::legacy_ttl`].
    pub const DEFAULT_LEGACY_TTL: Duration = Duration::from_secs(300);
    /// Threads answering requests, by default: none, each connection's
    /// own thread answers its requests (see [`RegistryBuilder::workers`]).
    pub const DEFAULT_WORKERS: usize = 0;
    /// How long writing one response may block on a peer that does not read.
    pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

    /// A registry's settings: on [`DEFAULT_ADDR`](Self::DEFAULT_ADDR)
    /// (`127.0.0.1:9999`) with a 5 minute TTL, answering on
    /// `/_rpc_/registry` and `/_geerpc_/registry`.
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder {
            addr: Ok(Registry::DEFAULT_ADDR
                .parse()
                .expect("the default address parses")),
            ttl: Registry::DEFAULT_TTL,
            legacy_ttl: Registry::DEFAULT_LEGACY_TTL,
            warmup: Registry::DEFAULT_WARMUP,
            paths: vec![
                Registry::DEFAULT_PATH.to_string(),
                "/_geerpc_/registry".to_string(),
            ],
            workers: Registry::DEFAULT_WORKERS,
            write_timeout: Registry::DEFAULT_WRITE_TIMEOUT,
            batch_scheduling: true,
            ui: true,
            limits: Limits::default(),
            auth: Auth::default(),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl RegistryBuilder {
    /// The address to listen on (default
    /// [`Registry::DEFAULT_ADDR`]), taken as
    /// [`Server::listen`](crate::Server::listen) takes one: a bare
    /// `HOST:PORT` or `tcp@HOST:PORT` (`http@` is accepted too: the
    /// registry is HTTP over TCP); port 0 picks a free one, which
    /// [`Registry::addr`] tells. A `unix@` address, or one that does not
    /// parse, makes [`start`](Self::start) fail with
    /// [`Error::InvalidAddress`].
    pub fn addr(mut self, addr: impl ToAddress) -> RegistryBuilder {
        self.addr = match addr.to_address() {
            Ok(a) if a.protocol() == Protocol::Unix => Err((
                a.to_string(),
                "the registry serves HTTP over TCP: expected HOST:PORT or tcp@HOST:PORT".into(),
            )),
            Ok(a) => Ok(a),
            Err(Error::InvalidAddress { addr, reason }) => Err((addr, reason)),
            Err(e) => Err((String::new(), e.to_string())),
        };
        self
    }

    /// How long an address stays listed after its last heartbeat
    /// ([`Registry::DEFAULT_TTL`], 5 min); zero keeps addresses until they
    /// deregister. geerpc's [`Heartbeat`](crate::Heartbeat) follows a
    /// shorter TTL (the registry announces it); Go GeeRPC servers do not,
    /// and are kept at least [`legacy_ttl`](Self::legacy_ttl).
    pub fn ttl(mut self, ttl: Duration) -> RegistryBuilder {
        self.ttl = ttl;
        self
    }

    /// How long an address registered without geerpc's heartbeat stays
    /// listed at least after each beat, whatever the [`ttl`](Self::ttl)
    /// ([`Registry::DEFAULT_LEGACY_TTL`], 5 min; the longer of the two
    /// applies, and with a TTL of zero nothing expires).
    ///
    /// A Go GeeRPC server registers with a `POST` that carries only its
    /// address header, no JSON body, and beats every 4 minutes whatever the
    /// registry says: with a TTL under 4 minutes it would drop out between
    /// beats. geerpc's heartbeat always sends a JSON body (`{}` at least)
    /// and follows the TTL the registry announces, so such a `POST` tells
    /// the two apart; its answer announces the legacy TTL. Each legacy
    /// address is logged at info when it registers. Set it to zero (or
    /// below the TTL) to treat every registration alike, for instance when
    /// your Go servers beat more often.
    pub fn legacy_ttl(mut self, ttl: Duration) -> RegistryBuilder {
        self.legacy_ttl = ttl;
        self
    }

    /// Answers on this path only, instead of the two default ones
    /// (`/_rpc_/registry` and `/_geerpc_/registry`).
    pub fn path(mut self, path: impl Into<String>) -> RegistryBuilder {
        let mut p = path.into();
        if !p.starts_with('/') {
            p.insert(0, '/');
        }
        self.paths = vec![p];
        self
    }

    /// How many threads answer requests ([`Registry::DEFAULT_WORKERS`]:
    /// 0). With 0, each request is answered on the thread of the
    /// connection that read it (tiny_http's, one per connection): a
    /// keep-alive peer's requests cost no hand-off between threads, and a
    /// peer slow to read holds only its own connection's thread. With
    /// `n` > 0, connections queue their requests for `n` workers instead,
    /// one of which receives at a time; another takes over when one
    /// request has held it for a millisecond (a peer slow to read, a large
    /// listing). Either way long polls hold no thread but their
    /// connection's while they wait.
    pub fn workers(mut self, n: usize) -> RegistryBuilder {
        self.workers = n;
        self
    }

    /// Whether to serve the registry's page (default true): `GET /` and
    /// `GET {path}/ui` show the services and their instances live (last
    /// heartbeat, time left, metadata, watchers, epoch), and
    /// `{path}/ui.json` the same as JSON. It shows what a `GET` of the
    /// list shows, under the same read token; turn it off where even that
    /// should not be browsable. Off, those paths answer `404`.
    pub fn ui(mut self, on: bool) -> RegistryBuilder {
        self.ui = on;
        self
    }

    /// How long a worker may block writing a response to a peer that does
    /// not read ([`Registry::DEFAULT_WRITE_TIMEOUT`], 10 s);
    /// then that connection's response fails and the worker moves on.
    pub fn write_timeout(mut self, timeout: Duration) -> RegistryBuilder {
        self.write_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Whether the threads that answer requests (tiny_http's, named
    /// `geerpc-reg-conn`, and the workers, `geerpc-reg-http`) switch to
    /// Linux's `SCHED_BATCH` scheduling policy (default true). They do only
    /// when started from a thread under the default policy (`SCHED_OTHER`):
    /// a program that set its own policy keeps it. Elsewhere than Linux
    /// this does nothing.
    ///
    /// The effect: a request arriving wakes a batch thread that waits for
    /// the running thread's turn to end instead of preempting it, so the
    /// sender (a local load generator, a server's heartbeat) goes on
    /// sending and a context switch is saved. Measured with `wrk -t2 -c32`
    /// heartbeats on a 2-core VM, 5 alternated rounds, median: 54.9k
    /// requests/s without, 67.5k with (see the README's performance
    /// section). The cost: a woken request thread may wait a little longer
    /// for a CPU, until the running thread blocks or the scheduler's next
    /// tick. Set false when the embedding program manages its threads'
    /// scheduling itself, or latency matters more than throughput.
    pub fn batch_scheduling(mut self, on: bool) -> RegistryBuilder {
        self.batch_scheduling = on;
        self
    }

    /// Requires `Authorization: Bearer TOKEN` with this token on every
    /// `POST` (register, renew) and `DELETE` (deregister); others get
    /// `401` with `WWW-Authenticate: Bearer` and change nothing (default:
    /// none, anyone who reaches the registry may register any address, as
    /// with Go GeeRPC). `GET` stays open unless a
    /// [`read_token`](Self::read_token) is set too. Serve it over HTTPS
    /// beyond loopback, or the token crosses the network in clear. Take
    /// the token from a file or the environment
    /// ([`Token::from_file`](crate::Token::from_file)), never a command
    /// line.
    pub fn write_token(mut self, token: Token) -> RegistryBuilder {
        self.auth.write = Some(token);
        self
    }

    /// Requires a bearer token on every `GET` too (the list, the JSON
    /// listing, long polls, heartbeat holds): this one or the
    /// [`write_token`](Self::write_token), which is accepted for reads
    /// (default: none, reads are open). Needs a write token:
    /// [`start`](Self::start) refuses a registry whose reads are closed
    /// but whose writes are open.
    pub fn read_token(mut self, token: Token) -> RegistryBuilder {
        self.auth.read = Some(token);
        self
    }

    /// Serves HTTPS (TLS 1.3 and 1.2, rustls) with the certificate chain
    /// in PEM file `cert` (the registry's certificate first, then any
    /// intermediates) and its private key in PEM file `key` (PKCS#8,
    /// PKCS#1 or SEC1); default: plain HTTP. [`Registry::url`] then says
    /// `https://`, and clients trust the chain's CA with
    /// [`HttpRegistrar::tls_ca_file`](crate::registry::HttpRegistrar::tls_ca_file)
    /// and [`RegistryDiscoveryBuilder::tls_ca_file`](crate::registry::RegistryDiscoveryBuilder::tls_ca_file).
    /// [`start`](Self::start) fails, naming the file, on one it cannot
    /// read or parse. A TLS handshake counts against the read timeout of a
    /// request head (10 s, see the bounds). Needs the `tls` feature.
    #[cfg(feature = "tls")]
    pub fn tls_pem_files(
        mut self,
        cert: impl Into<std::path::PathBuf>,
        key: impl Into<std::path::PathBuf>,
    ) -> RegistryBuilder {
        self.tls = Some((cert.into(), key.into()));
        self
    }

    /// Binds and serves in background threads, owned by the returned
    /// [`Registry`] (dropping it shuts them down).
    pub fn start(self) -> Result<Registry> {
        let tls = self.tls_config()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let addr = self
            .addr
            .map_err(|(addr, reason)| Error::InvalidAddress { addr, reason })?;
        if self.auth.read.is_some() && self.auth.write.is_none() {
            return Err(Error::Registry {
                url: addr.to_string(),
                message: "a read token without a write token would leave registration \
                          open to anyone: set a write token too"
                    .into(),
            });
        }
        let listener = listen::bind(addr.target())?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::io("registry: read listener address", e))?;
        set_inherited_options(&listener, self.write_timeout)?;
        // For `Epoch::stop`; without it only that early stop is lost.
        let listener_copy = listener.try_clone().ok();
        let batch = self.batch_scheduling;
        let limits = &self.limits;
        // What a legacy beat's answer says: the longer TTL (zero: none).
        let legacy_ttl = if self.ttl.is_zero() {
            Duration::ZERO
        } else {
            self.ttl.max(self.legacy_ttl)
        };
        let threads = ThreadGroup::default();
        let (wake_tx, wake_rx) = crossbeam_channel::bounded(1);
        let shared = Arc::new(Shared {
            addr: local,
            address: Address::tcp(local),
            url: url_of(scheme, local, &self.paths[0]),
            paths: self.paths,
            // Rounded up: "0" would say the entries never expire.
            ttl_ms: self.ttl.as_nanos().div_ceil(1_000_000).to_string(),
            legacy_ttl_ms: legacy_ttl.as_nanos().div_ceil(1_000_000).to_string(),
            legacy_ttl: GoDuration(legacy_ttl),
            state: Mutex::new(State {
                table: Table::with_caps(
                    self.ttl,
                    self.legacy_ttl,
                    limits.max_instances,
                    limits.max_services,
                ),
                watchers: Watchers::new(limits.max_long_polls, limits.max_long_polls_per_client),
            }),
            wake: wake_tx,
            stopping: AtomicBool::new(false),
            roles: Roles::default(),
            max_body: limits.max_body,
            answerers: Answerers::new(threads.clone(), limits.max_long_polls),
            refusals: limits::RefusalLog::default(),
            epoch: Epoch::new(self.warmup, listener_copy),
            auth: self.auth,
            auth_refusals: limits::RefusalLog::default(),
            ui: self.ui,
            counters: Default::default(),
        });
        // Workers, or the connection threads themselves (see `workers`).
        // The handler holds `shared`; tiny_http's threads hold the handler
        // only weakly, so both drop with the server.
        let handler = (self.workers == 0).then(|| {
            let s = shared.clone();
            Arc::new(move |rq| http::on_connection(&s, rq)) as Arc<tiny_http::Handler>
        });
        let http = Arc::new(start_tiny_http(
            listener,
            local,
            &self.limits,
            batch,
            tls,
            handler,
        )?);
        let registry = Registry {
            shared: shared.clone(),
            http: Mutex::new(Some(http.clone())),
            threads,
            workers: self.workers,
            stopped: AtomicBool::new(false),
        };
        for _ in 0..self.workers {
            let (s, h) = (shared.clone(), http.clone());
            registry
                .threads
                .spawn("geerpc-reg-http", None, move || http::serve(&s, &h, batch))
                .map_err(|e| Error::io("registry: start worker thread", e))?;
        }
        if self.workers > 1 {
            let s = shared.clone();
            registry
                .threads
                .spawn("geerpc-reg-tick", None, move || {
                    s.roles.run_ticker(roles::TICK)
                })
                .map_err(|e| Error::io("registry: start ticker thread", e))?;
        }
        let s = shared.clone();
        registry
            .threads
            .spawn("geerpc-reg-reap", None, move || reap::reap(&s, wake_rx))
            .map_err(|e| Error::io("registry: start reaper thread", e))?;
        let s = shared.clone();
        registry
            .threads
            .spawn("geerpc-reg-hold", None, move || s.epoch.run_holds())
            .map_err(|e| Error::io("registry: start hold thread", e))?;
        // Said at start when it matters: with a TTL under the legacy one,
        // Go servers are not dropped at the TTL.
        let legacy = if legacy_ttl > self.ttl {
            format!(
                "; addresses registered without geerpc's heartbeat (Go GeeRPC servers) {}",
                GoDuration(legacy_ttl)
            )
        } else {
            String::new()
        };
        log::info!(
            "registry: listening on {scheme}://{local}{} (TTL {}{legacy})",
            shared.paths[0],
            GoDuration(self.ttl)
        );
        Ok(registry)
    }
}

impl RegistryBuilder {
    /// The certificate chain and key, read from their files (the errors
    /// name the file, never a key's content); None without TLS.
    fn tls_config(&self) -> Result<Option<tiny_http::SslConfig>> {
        #[cfg(feature = "tls")]
        if let Some((cert, key)) = &self.tls {
            let read = |what: &str, path: &std::path::Path| {
                std::fs::read(path).map_err(|e| {
                    Error::io(format!("registry: read TLS {what} {}", path.display()), e)
                })
            };
            let config = tiny_http::SslConfig {
                certificate: read("certificate", cert)?,
                private_key: read("key", key)?,
            };
            // tiny_http parses them at start and says only "invalid":
            // check here, naming the file.
            let has = |pem: &[u8], cert: bool| {
                ureq::tls::parse_pem(pem).any(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(_)) => cert,
                    Ok(ureq::tls::PemItem::PrivateKey(_)) => !cert,
                    _ => false,
                })
            };
            if !has(&config.certificate, true) {
                return Err(Error::Protocol(format!(
                    "registry: {} holds no PEM certificate",
                    cert.display()
                )));
            }
            if !has(&config.private_key, false) {
                return Err(Error::Protocol(format!(
                    "registry: {} holds no PEM private key",
                    key.display()
                )));
            }
            return Ok(Some(config));
        }
        Ok(None)
    }
}

/// `SCHEME://HOST:PORT/PATH`, naming loopback for a registry that listens on
/// every interface (a URL with `0.0.0.0` in it reaches nothing).
fn url_of(scheme: &str, mut a: std::net::SocketAddr, path: &str) -> String {
    if a.ip().is_unspecified() {
        a.set_ip(match a {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("{scheme}://{a}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unix_or_malformed_address_fails_at_start_and_says_why() {
        for (bad, says) in [
            ("unix@/tmp/reg.sock", "HTTP over TCP"),
            ("127.0.0.1", "HOST:PORT"),
        ] {
            let err = Registry::builder().addr(bad).start().unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(err, Error::InvalidAddress { .. }) && text.contains(says),
                "{bad}: {text}"
            );
        }
    }

    #[test]
    fn every_address_form_listens_on_tcp_and_says_where() {
        for given in ["127.0.0.1:0", "tcp@127.0.0.1:0", "http@127.0.0.1:0"] {
            let reg = Registry::builder().addr(given).start().unwrap();
            assert_eq!(reg.addr().protocol(), Protocol::Tcp, "{given}");
            assert_ne!(reg.addr().target(), "127.0.0.1:0", "{given}: port picked");
            assert_eq!(
                reg.url(),
                format!("http://{}/_rpc_/registry", reg.addr().target())
            );
        }
    }
}
