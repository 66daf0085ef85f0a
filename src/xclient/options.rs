//! What a call may change: [`FailMode`] (what happens when an attempt
//! fails) and [`CallOptions`] (per-call settings over the client's).
//!
//! Plain data: it may not import from the rest of the XClient, the pool or
//! the client; the fail modes' behaviour is in `fail.rs`.

use std::time::Duration;

/// What an [`XClient`](super::XClient) does when a call fails.
///
/// Whatever the mode, a call is sent again only if it is idempotent
/// ([`XClientBuilder::idempotent`](super::XClientBuilder::idempotent),
/// [`CallOptions::idempotent`]) or the
/// failed attempt certainly never reached a server
/// ([`Error::is_not_sent`](crate::Error::is_not_sent)). An error the service itself returned
/// ([`Error::Remote`](crate::Error::Remote)) is never retried, and the call's timeout bounds all
/// attempts together.
///
/// Whatever the mode, FailFast included, a call an instance did not process
/// because it is going away or over a limit (its drain notice, a reply
/// with code `unavailable` or `resource_exhausted`, or a refused dial to an
/// instance that sent its notice) is sent to another instance, once per
/// instance at most, within the timeout: such an attempt counts neither as
/// a retry nor as a failure of the instance (it is not evicted; one going
/// away is passed over for a moment). [`XClient::go`](super::XClient::go) applies this when it
/// sends, not to the result [`XCall::wait`](super::XCall::wait) returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FailMode {
    /// Return the first error.
    #[default]
    FailFast,
    /// Try another instance, up to `retries` more times.
    Failover {
        /// Attempts after the first.
        retries: u32,
    },
    /// Try the same instance again, up to `retries` more times.
    Failtry {
        /// Attempts after the first.
        retries: u32,
    },
    /// If the first instance has not answered within `after`, send the call
    /// to a second one as well; the first success wins and the other call
    /// is abandoned. Cuts the tail latency a slow instance causes, at the
    /// cost of duplicate work. Only idempotent calls get a backup while the
    /// first may still run; any call gets one if the first was never sent.
    Failbackup {
        /// How long to wait for the first instance alone.
        after: Duration,
    },
}

/// Per-call settings that differ from the [`XClient`](super::XClient)'s.
///
/// ```
/// use geerpc::xclient::CallOptions;
/// use std::time::Duration;
///
/// let opts = CallOptions::new().key("user-42").timeout(Duration::from_secs(1)).idempotent(true);
/// ```
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    pub(super) key: Option<Vec<u8>>,
    pub(super) timeout: Option<Duration>,
    pub(super) idempotent: Option<bool>,
    pub(super) fail_mode: Option<FailMode>,
}

impl CallOptions {
    /// The client's settings.
    pub fn new() -> CallOptions {
        CallOptions::default()
    }

    /// The key for key-affine selection
    /// ([`SelectMode::ConsistentHash`](super::SelectMode::ConsistentHash)).
    pub fn key(mut self, key: impl AsRef<[u8]>) -> CallOptions {
        self.key = Some(key.as_ref().to_vec());
        self
    }

    /// A limit on the whole call, retries included.
    pub fn timeout(mut self, timeout: Duration) -> CallOptions {
        self.timeout = Some(timeout);
        self
    }

    /// Whether running the call twice is harmless, so that it may be
    /// retried after it may have reached a server.
    pub fn idempotent(mut self, idempotent: bool) -> CallOptions {
        self.idempotent = Some(idempotent);
        self
    }

    /// Another fail mode for this call.
    pub fn fail_mode(mut self, mode: FailMode) -> CallOptions {
        self.fail_mode = Some(mode);
        self
    }
}
