//! Call context: what travels with a call besides its argument
//! (PROTOCOL.md section 8) and what a handler knows of the call it serves.
//!
//! - [`Context`]: a handler's view of its call: method, peer, deadline,
//!   metadata, trace, and the metadata it sets on its reply;
//! - `scope`: [`Scope`], the thread-local deadline and trace that calls made
//!   on a thread inherit (a handler's thread runs in its call's);
//! - `trace`: [`TraceParent`], W3C Trace Context;
//! - `status`: [`Status`], a handler's error with a [`Code`](crate::Code);
//! - `options`: [`CallOptions`] and [`FailMode`], what one call changes;
//! - `identity`: [`Identity`], what the peer proved (a TLS client
//!   certificate).
//!
//! Between the wire and the endpoints: the client and the server both
//! import from here, and nothing here imports from either.

mod identity;
mod options;
mod scope;
mod status;
mod trace;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::Result;
use crate::meta::Meta;

pub use identity::Identity;
pub use options::{CallOptions, FailMode};
pub use scope::{Scope, ScopeGuard};
pub use status::Status;
pub use trace::{BadTraceParent, TraceParent};

/// What a handler can know about the call it serves.
///
/// A clone (to take into another thread) has its own reply metadata: set
/// it on the handler's own `Context`, the one the server sends.
///
/// ```
/// use geerpc::{Context, Server, Service, Status};
///
/// let svc = Service::new("Work").method_with_context("Run", |ctx: &Context, steps: u32| {
///     for _ in 0..steps {
///         if ctx.is_cancelled() {
///             // The caller has given up: stop early.
///             return Err(Status::new(geerpc::Code::Cancelled, "caller gave up"));
///         }
///         // ... one step ...
///     }
///     let tenant = ctx.meta().get("tenant").unwrap_or("none").to_string();
///     ctx.set_reply_meta("served-by", "worker-1")?;
///     Ok(tenant)
/// });
/// # Ok::<(), geerpc::Error>(())
/// ```
#[derive(Debug)]
pub struct Context {
    pub(crate) service_method: String,
    pub(crate) peer: Arc<str>,
    pub(crate) deadline: Option<Instant>,
    pub(crate) meta: Meta,
    pub(crate) trace: Option<TraceParent>,
    /// Set when the call's connection closes: its caller is gone.
    pub(crate) closed: Option<Arc<AtomicBool>>,
    /// What the connection's peer proved, if anything (set per connection).
    pub(crate) identity: Option<Arc<Identity>>,
    /// What the handler adds to its reply's `Meta`.
    pub(crate) reply_meta: Mutex<Meta>,
}

impl Clone for Context {
    fn clone(&self) -> Context {
        Context {
            service_method: self.service_method.clone(),
            peer: self.peer.clone(),
            deadline: self.deadline,
            meta: self.meta.clone(),
            trace: self.trace,
            closed: self.closed.clone(),
            identity: self.identity.clone(),
            reply_meta: Mutex::new(self.reply_meta.lock().clone()),
        }
    }
}

impl Context {
    /// A context for a call of `service_method` from `peer`, for the server
    /// (and for tests of handlers): no deadline, no metadata.
    pub fn new(service_method: impl Into<String>, peer: impl Into<Arc<str>>) -> Context {
        Context {
            service_method: service_method.into(),
            peer: peer.into(),
            deadline: None,
            meta: Meta::new(),
            trace: None,
            closed: None,
            identity: None,
            reply_meta: Mutex::new(Meta::new()),
        }
    }

    /// Makes this context the one of a new call on the same connection
    /// (the server reuses one per connection thread: its `peer`, `closed`
    /// and `identity` stay, and nothing is allocated or reference-counted
    /// per call). The previous call's reply metadata is dropped.
    #[inline]
    pub(crate) fn reset(
        &mut self,
        service_method: String,
        deadline: Option<Instant>,
        meta: Option<Meta>,
    ) {
        self.service_method = service_method;
        self.deadline = deadline;
        self.trace = None;
        match meta {
            Some(m) => {
                self.trace = trace_of(&m);
                self.meta = m;
            }
            None if !self.meta.is_empty() => self.meta = Meta::new(),
            None => {}
        }
        let reply_meta = self.reply_meta.get_mut();
        if !reply_meta.is_empty() {
            *reply_meta = Meta::new();
        }
    }

    /// This context with `identity` as its peer's (for tests of handlers
    /// and authenticators; the server sets it from the connection).
    pub fn with_identity(mut self, identity: Identity) -> Context {
        self.identity = Some(Arc::new(identity));
        self
    }

    /// This context with `deadline`.
    pub fn with_deadline(mut self, deadline: Instant) -> Context {
        self.deadline = Some(deadline);
        self
    }

    /// This context with `meta` as the call's metadata (its `traceparent`,
    /// if valid, becomes the context's trace).
    pub fn with_meta(mut self, meta: Meta) -> Context {
        self.trace = trace_of(&meta);
        self.meta = meta;
        self
    }

    /// `Service.Method` as the client sent it.
    pub fn service_method(&self) -> &str {
        &self.service_method
    }

    /// The caller's address (`127.0.0.1:5555`, or a socket path).
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// When the server gives up on this call: the caller's own deadline as
    /// it travelled (`Timeout`), or the connection's handle timeout if that
    /// is earlier. `None`: no deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left before the deadline (`None`: no deadline).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Whether the deadline has passed: the caller no longer waits for the
    /// reply.
    pub fn is_expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Whether the caller has given up: the deadline passed or the
    /// connection closed. A long handler that polls this can stop early.
    pub fn is_cancelled(&self) -> bool {
        self.is_expired()
            || self
                .closed
                .as_ref()
                .is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// What the peer proved of itself (a verified TLS client
    /// certificate), if anything: `None` on a connection that proved
    /// nothing.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_deref()
    }

    /// The call's metadata.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// The call's trace (its valid `traceparent`), if any.
    pub fn trace(&self) -> Option<TraceParent> {
        self.trace
    }

    /// Adds `key: value` to the reply's metadata; fails as
    /// [`Meta::insert`] does.
    pub fn set_reply_meta(&self, key: impl Into<String>, value: impl Into<String>) -> Result<()> {
        self.reply_meta.lock().insert(key, value)
    }

    /// The scope the calls this handler makes inherit: its deadline and
    /// trace. The handler's own thread runs in it already; pass it to a
    /// thread the handler starts with [`Scope::run`].
    pub fn scope(&self) -> Scope {
        let mut s = Scope::new();
        if let Some(d) = self.deadline {
            s = s.with_deadline(d);
        }
        if let Some(t) = self.trace {
            s = s.with_trace(t);
        }
        s
    }
}

/// The valid `traceparent` of `meta`, if any.
fn trace_of(meta: &Meta) -> Option<TraceParent> {
    meta.get(crate::meta::TRACEPARENT)
        .and_then(|t| t.parse().ok())
}
