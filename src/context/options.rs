//! What a call may change: [`CallOptions`] (per-call settings over the
//! client's: time, metadata, the scope it inherits, and for an XClient the
//! key, idempotence and [`FailMode`]).
//!
//! Plain data, shared by [`Client`](crate::Client) and
//! [`XClient`](crate::XClient): the behaviour is in `client/` and in
//! `xclient/fail.rs`.

use std::time::{Duration, Instant};

use super::scope::Scope;
use crate::error::Result;
use crate::meta::{Meta, AUTHORIZATION};
use crate::util::token::Token;

/// What an [`XClient`](crate::XClient) does when a call fails.
///
/// Whatever the mode, a call is sent again only if it is idempotent
/// ([`XClientBuilder::idempotent`](crate::xclient::XClientBuilder::idempotent),
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
/// away is passed over for a moment). [`XClient::go`](crate::XClient::go) applies this when it
/// sends, not to the result [`XCall::wait`](crate::xclient::XCall::wait) returns.
///
/// An instance that refused a call as over a limit (`resource_exhausted`,
/// however the call learnt it: any mode, [`XCall::wait`](crate::xclient::XCall::wait) too) is
/// then passed over by selection, p2c included, for a brief back-off
/// (100 ms doubling to 1 s while it goes on refusing, reset by a success:
/// [`XClientBuilder::overload_backoff`](crate::xclient::XClientBuilder::overload_backoff)),
/// so its refusals cost one round trip, not one per call. It is still
/// picked when every instance is passed over.
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

/// Per-call settings that differ from the client's, for
/// [`Client::call_with`](crate::Client::call_with) and
/// [`XClient::call_with`](crate::XClient::call_with).
///
/// The call's deadline is the earliest of its own
/// ([`timeout`](CallOptions::timeout), [`deadline`](CallOptions::deadline))
/// and the deadline of the [`Scope`] it runs in: by default the thread's
/// current one, which inside a handler is the handler's call. So a call a
/// handler makes never outlives the call it serves; [`scope`](CallOptions::scope)
/// replaces the inherited scope (`Scope::new()`: none).
///
/// [`key`](CallOptions::key), [`idempotent`](CallOptions::idempotent) and
/// [`fail_mode`](CallOptions::fail_mode) concern the choice of an instance
/// and matter to an [`XClient`](crate::XClient) only.
///
/// ```
/// use geerpc::{CallOptions, Meta};
/// use std::time::Duration;
///
/// let opts = CallOptions::new()
///     .timeout(Duration::from_secs(1))
///     .meta("tenant", "acme")?
///     .key("user-42")
///     .idempotent(true);
/// # Ok::<(), geerpc::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) deadline: Option<Instant>,
    pub(crate) idempotent: Option<bool>,
    pub(crate) fail_mode: Option<FailMode>,
    pub(crate) meta: Meta,
    pub(crate) scope: Option<Scope>,
}

impl CallOptions {
    /// The client's settings.
    pub fn new() -> CallOptions {
        CallOptions::default()
    }

    /// The key for key-affine selection
    /// ([`SelectMode::ConsistentHash`](crate::SelectMode::ConsistentHash)).
    pub fn key(mut self, key: impl AsRef<[u8]>) -> CallOptions {
        self.key = Some(key.as_ref().to_vec());
        self
    }

    /// A limit on the whole call, retries included, from when it starts.
    /// It travels to the server (PROTOCOL.md section 8, `Timeout`).
    pub fn timeout(mut self, timeout: Duration) -> CallOptions {
        self.timeout = Some(timeout);
        self
    }

    /// An absolute deadline for the whole call; with a
    /// [`timeout`](CallOptions::timeout) too, the earlier one counts.
    pub fn deadline(mut self, deadline: Instant) -> CallOptions {
        self.deadline = Some(deadline);
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

    /// Adds `key: value` to the call's metadata (over the client's
    /// defaults); fails on a key or a size [`Meta`] does not take.
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Result<CallOptions> {
        self.meta.insert(key, value)?;
        Ok(self)
    }

    /// Sends `token` as this call's credentials (`authorization: Bearer
    /// TOKEN` in its `Meta`, over the client's
    /// [`ClientBuilder::bearer`](crate::client::ClientBuilder::bearer));
    /// fails as [`meta`](CallOptions::meta) does.
    pub fn bearer(self, token: &Token) -> Result<CallOptions> {
        self.meta(AUTHORIZATION, token.bearer())
    }

    /// The call's metadata, all of it (over the client's defaults).
    pub fn with_meta(mut self, meta: Meta) -> CallOptions {
        self.meta = meta;
        self
    }

    /// The scope the call inherits its deadline and trace from, instead of
    /// the thread's current one ([`Scope::current`]). `Scope::new()`
    /// detaches the call: no inherited deadline, a trace of its own.
    pub fn scope(mut self, scope: Scope) -> CallOptions {
        self.scope = Some(scope);
        self
    }

    /// The scope the call runs in: the one given, or the thread's.
    pub(crate) fn effective_scope(&self) -> Scope {
        self.scope.unwrap_or_else(Scope::current)
    }
}
