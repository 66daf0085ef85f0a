//! The registry's bounds: what one peer, or all of them, can make it hold
//! (memory, threads, slots, time), and the [`RegistryBuilder`] knobs that
//! set them (their defaults are [`Registry`]'s `DEFAULT_MAX_*` constants).
//!
//! The HTTP-level bounds (request head size, read deadlines, connections)
//! are enforced inside tiny_http, by the small patch carried in
//! `vendor/tiny_http` (see its `PATCHES.md`): tiny_http 0.12.0, the newest
//! release, has none of them, and a guard in front of it would have had to
//! proxy every byte. The table and long-poll bounds are ours (`table`,
//! `long_poll`).
//!
//! It holds no state but the refusal log: the caps are enforced where the
//! state is (tiny_http, `table`, `long_poll`), and this file only says what
//! they are and how a refusal reads.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::long_poll::Refused;
use super::table::Full;
use super::{Registry, RegistryBuilder};

/// The listen backlog: connections the kernel completes and queues before
/// tiny_http's accept thread takes them. 128 (std's default) overflowed
/// under a burst of 1,000 long polls, and each overflowed connect waited
/// a 1 s SYN retry. Linux caps it at `net.core.somaxconn` (4096 by default
/// since 5.4).
pub(super) const BACKLOG: i32 = 1024;

/// The bounds a registry runs with; see the builder methods below.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) max_head: usize,
    pub(crate) read_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) max_body: u64,
    pub(crate) max_long_polls: usize,
    pub(crate) max_long_polls_per_client: usize,
    pub(crate) max_instances: usize,
    pub(crate) max_services: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_head: Registry::DEFAULT_MAX_HEAD,
            read_timeout: Registry::DEFAULT_READ_TIMEOUT,
            max_connections: Registry::DEFAULT_MAX_CONNECTIONS,
            max_body: Registry::DEFAULT_MAX_BODY,
            max_long_polls: Registry::DEFAULT_MAX_LONG_POLLS,
            max_long_polls_per_client: Registry::DEFAULT_MAX_LONG_POLLS_PER_CLIENT,
            max_instances: Registry::DEFAULT_MAX_INSTANCES,
            max_services: Registry::DEFAULT_MAX_SERVICES,
        }
    }
}

impl Limits {
    /// What the patched tiny_http enforces.
    pub(super) fn http(&self) -> tiny_http::Limits {
        tiny_http::Limits {
            max_head: self.max_head,
            read_timeout: Some(self.read_timeout),
            max_connections: self.max_connections,
        }
    }
}

/// The bounds' defaults.
impl Registry {
    /// Largest request head (request line and headers), by default.
    pub const DEFAULT_MAX_HEAD: usize = 16 * 1024;
    /// Time allowed for a request head, then for its body, by default.
    pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);
    /// Connections served at once, by default.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
    /// Largest `POST` body, by default.
    pub const DEFAULT_MAX_BODY: u64 = 64 * 1024;
    /// Long polls parked at once, by default.
    pub const DEFAULT_MAX_LONG_POLLS: usize = 10_000;
    /// Long polls parked at once from one client IP address, by default.
    pub const DEFAULT_MAX_LONG_POLLS_PER_CLIENT: usize = 1_000;
    /// Addresses listed at once, by default.
    pub const DEFAULT_MAX_INSTANCES: usize = 10_000;
    /// Distinct service names known at once, by default.
    pub const DEFAULT_MAX_SERVICES: usize = 10_000;
}

/// The bounds' knobs. Each one's default is the [`Registry`] constant
/// named in its documentation.
impl RegistryBuilder {
    /// Largest request head, request line and headers together
    /// ([`DEFAULT_MAX_HEAD`](Registry::DEFAULT_MAX_HEAD), 16 KiB). A longer
    /// one is answered `431` and its connection closed, having cost at most
    /// this much memory. A plain listing's answer is not a request: its
    /// size is not bounded by this. At least 256 bytes.
    pub fn max_head(mut self, bytes: usize) -> RegistryBuilder {
        self.limits.max_head = bytes.max(256);
        self
    }

    /// How long a connection may take to send a whole request head, counted
    /// from when the registry starts waiting for it (the connection opened,
    /// or its previous request was answered: requests on one connection
    /// are read one at a time), and then the request's body,
    /// counted from the head's end
    /// ([`DEFAULT_READ_TIMEOUT`](Registry::DEFAULT_READ_TIMEOUT), 10 s). Past
    /// it the connection is closed (with `408` if it had begun a head):
    /// slow-loris peers, and idle keep-alive connections, hold a thread no
    /// longer. A long poll's wait is not reading: it is not bounded by this.
    pub fn read_timeout(mut self, timeout: Duration) -> RegistryBuilder {
        self.limits.read_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Most connections served at once, each on a thread of its own
    /// ([`DEFAULT_MAX_CONNECTIONS`](Registry::DEFAULT_MAX_CONNECTIONS)). Past
    /// it a new connection is answered `503` and closed at once, with one
    /// log line each time the cap is reached. At least 1.
    pub fn max_connections(mut self, n: usize) -> RegistryBuilder {
        self.limits.max_connections = n.max(1);
        self
    }

    /// Largest `POST` body ([`DEFAULT_MAX_BODY`](Registry::DEFAULT_MAX_BODY),
    /// 64 KiB); a larger one is answered `413`. This also bounds one
    /// instance's metadata, so the table holds at most about
    /// `max_instances` times this.
    pub fn max_body(mut self, bytes: u64) -> RegistryBuilder {
        self.limits.max_body = bytes;
        self
    }

    /// Most long polls (`GET ?watch=`) parked at once
    /// ([`DEFAULT_MAX_LONG_POLLS`](Registry::DEFAULT_MAX_LONG_POLLS)); more are
    /// answered `503` (a [`RegistryDiscovery`](crate::RegistryDiscovery)
    /// backs off and retries).
    pub fn max_long_polls(mut self, n: usize) -> RegistryBuilder {
        self.limits.max_long_polls = n;
        self
    }

    /// Most long polls parked at once from one client IP address
    /// ([`DEFAULT_MAX_LONG_POLLS_PER_CLIENT`](Registry::DEFAULT_MAX_LONG_POLLS_PER_CLIENT)),
    /// so that one client cannot take every slot of
    /// [`max_long_polls`](Self::max_long_polls); more are answered `429`.
    /// Clients behind one NAT address share it.
    pub fn max_long_polls_per_client(mut self, n: usize) -> RegistryBuilder {
        self.limits.max_long_polls_per_client = n;
        self
    }

    /// Most addresses listed at once
    /// ([`DEFAULT_MAX_INSTANCES`](Registry::DEFAULT_MAX_INSTANCES)). A `POST`
    /// of a new address past it is answered `507` (renewals always
    /// succeed); entries leave by `DELETE` or by expiring.
    pub fn max_instances(mut self, n: usize) -> RegistryBuilder {
        self.limits.max_instances = n;
        self
    }

    /// Most distinct service names known at once
    /// ([`DEFAULT_MAX_SERVICES`](Registry::DEFAULT_MAX_SERVICES)). A `POST`
    /// that names new services past it is answered `507`. A name no listed
    /// instance serves any more is forgotten, and no longer counts.
    pub fn max_services(mut self, n: usize) -> RegistryBuilder {
        self.limits.max_services = n;
        self
    }
}

/// The status and text a `POST` refused by a table cap gets: `507`
/// (Insufficient Storage), which says the registry, not the request, is
/// the limit.
pub(super) fn table_full(addr: &str, full: Full) -> (u16, String) {
    let what = match full {
        Full::Instances(max) => format!("{max} instances are listed (the registry's cap)"),
        Full::Services(max) => format!("{max} service names are known (the registry's cap)"),
    };
    (507, format!("507 cannot register {addr}: {what}\n"))
}

/// The status and text a refused long poll gets: `503` when every slot is
/// taken, `429` when its client holds its share.
pub(super) fn watch_refused(refused: Refused) -> (u16, String) {
    match refused {
        Refused::Full { max } => (
            503,
            format!("503 too many long polls waiting ({max}); retry later\n"),
        ),
        Refused::Client { ip, max } => (
            429,
            format!("429 too many long polls waiting from {ip} ({max}); retry later\n"),
        ),
    }
}

/// How long refusals must stop before the next one is logged at warn again.
const QUIET: Duration = Duration::from_secs(10);

/// Logs refusals by a cap once per episode, so that a peer hammering a cap
/// cannot flood the log: the first refusal after [`QUIET`] without one is
/// logged at warn, with how many were refused meanwhile; the rest at debug.
#[derive(Default)]
pub(super) struct RefusalLog {
    /// When the last refusal was seen, and how many since the last warn.
    state: Mutex<Option<(Instant, u64)>>,
}

impl RefusalLog {
    /// Logs one refusal; true if it went out at warn.
    pub(super) fn refused(&self, registry: SocketAddr, msg: &str) -> bool {
        let now = Instant::now();
        let mut st = self.state.lock();
        match &mut *st {
            Some((last, n)) if now.duration_since(*last) < QUIET => {
                *last = now;
                *n += 1;
                log::debug!("registry {registry}: {}", msg.trim());
                false
            }
            other => {
                let before = other.map_or(0, |(_, n)| n);
                *other = Some((now, 0));
                drop(st);
                if before > 0 {
                    log::warn!(
                        "registry {registry}: {} ({before} more refused in the last episode)",
                        msg.trim()
                    );
                } else {
                    log::warn!("registry {registry}: {}", msg.trim());
                }
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_refusals_is_logged_at_warn_once() {
        let log = RefusalLog::default();
        let at: SocketAddr = "127.0.0.1:9999".parse().unwrap();
        assert!(log.refused(at, "429 too many long polls"));
        for _ in 0..100 {
            assert!(!log.refused(at, "429 too many long polls"));
        }
        // A quiet spell ends the episode: the next refusal warns again.
        *log.state.lock() = Some((Instant::now() - QUIET, 100));
        assert!(log.refused(at, "429 too many long polls"));
    }
}
