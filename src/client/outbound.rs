//! What travels with a call besides its argument (PROTOCOL.md section 8):
//! its deadline, its own and inherited (the thread's [`Scope`]), its
//! metadata over the client's defaults, its `traceparent`, and the
//! interceptors it passes; [`Client::call_with`] and [`Client::go_with`],
//! and the XClient's entry point ([`Client::go_outbound`]).
//!
//! The send path (`send`) only writes what is decided here: the header's
//! `Timeout` from the call's budget when the request is encoded, and its
//! `Meta`.
//!
//! Hot path: a call with nothing of its own on a client with no defaults
//! (`Defaults::plain`) costs one thread-local read ([`Scope::current`]) and
//! is sent as before: no allocation, no lock.

use std::sync::Arc;
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::call::{Budget, Call};
use super::intercept::{self, Entered, Interceptor};
use super::Client;
use crate::context::{CallOptions, Scope, TraceParent};
use crate::error::Result;
use crate::meta::{Meta, TRACEPARENT};
use crate::wire::address::Address;

/// A client's settings for every call it makes, fixed at dial.
pub(super) struct Defaults {
    /// The server's address, for the interceptors' views.
    pub(super) addr: Address,
    /// Metadata every call sends (a call's own wins per key).
    pub(super) meta: Meta,
    /// Send a fresh `traceparent` on a call made outside any trace.
    pub(super) trace_ids: bool,
    pub(super) interceptors: Vec<Arc<dyn Interceptor>>,
    /// None of the above: a call that brings nothing of its own (no
    /// deadline, metadata or trace) is sent with nothing more to do.
    pub(super) plain: bool,
}

impl Defaults {
    pub(super) fn new(
        addr: Address,
        meta: Meta,
        trace_ids: bool,
        interceptors: Vec<Arc<dyn Interceptor>>,
    ) -> Defaults {
        let plain = meta.is_empty() && !trace_ids && interceptors.is_empty();
        Defaults {
            addr,
            meta,
            trace_ids,
            interceptors,
            plain,
        }
    }
}

/// What a call adds to its request past the header's three Go fields: its
/// metadata (`None`: none) and the `before`s it passed (`None`: no
/// interceptor). The deadline comes with the call's [`Budget`].
#[derive(Default)]
pub(super) struct Extra {
    pub(super) meta: Option<Meta>,
    pub(super) entered: Option<Entered>,
}

/// One attempt of an [`XClient`](crate::XClient) call, for
/// [`Client::go_outbound`].
pub(crate) struct Outbound<'a> {
    /// The attempt's time, computed by the XClient for the whole call,
    /// the scope's deadline included (`None`: no deadline). It is what
    /// travels as `Timeout`; nothing else is inherited on top of it.
    pub(crate) budget: Option<Budget>,
    /// The call's own metadata (over the client's defaults).
    pub(crate) meta: &'a Meta,
    /// The scope the call was made in: only its trace is used here (the
    /// attempt sends its `child()`).
    pub(crate) scope: Scope,
}

/// The earlier of a call's own budget and its scope's deadline; `None`
/// when neither has a deadline. The error of a timeout names the call's
/// own timeout when that binds, else the time the scope had left.
pub(super) fn with_scope(own: Option<Budget>, scope: &Scope) -> Option<Budget> {
    let own = own.filter(|b| b.deadline.is_some());
    match (own, scope.deadline()) {
        (Some(b), Some(s)) if b.deadline.is_some_and(|d| s < d) => Some(Budget::until(s)),
        (Some(b), _) => Some(b),
        (None, Some(s)) => Some(Budget::until(s)),
        (None, None) => None,
    }
}

/// A call's own budget from its options: the earlier of their timeout and
/// deadline.
fn own_budget(opts: &CallOptions) -> Option<Budget> {
    let t = opts.timeout.map(Budget::after);
    let d = opts.deadline.map(Budget::until);
    match (t, d) {
        (Some(t), Some(d)) => match (t.deadline, d.deadline) {
            (Some(a), Some(b)) if b < a => Some(d),
            (None, _) => Some(d),
            _ => Some(t),
        },
        (t, d) => t.or(d),
    }
}

/// The time left until `deadline` in nanoseconds, at least 1: a request's
/// `Timeout` (0 would mean none).
pub(super) fn timeout_nanos(deadline: Instant) -> u64 {
    let left = deadline.saturating_duration_since(Instant::now());
    u64::try_from(left.as_nanos()).unwrap_or(u64::MAX).max(1)
}

impl Client {
    /// Calls `service_method` with per-call settings and waits for the
    /// reply: a timeout or deadline (the earliest of the call's and its
    /// scope's counts, and travels to the server), metadata over the
    /// client's defaults ([`ClientBuilder::meta`](super::ClientBuilder::meta)),
    /// and the [`Scope`] it inherits from (default: the thread's current
    /// one; [`CallOptions::scope`]`(Scope::new())` detaches the call).
    ///
    /// [`CallOptions::key`], [`CallOptions::idempotent`] and
    /// [`CallOptions::fail_mode`] are for an [`XClient`](crate::XClient)
    /// and ignored here: a `Client` is one connection and never retries.
    ///
    /// The reply's metadata: [`go_with`](Client::go_with) then
    /// [`Call::wait_with_meta`].
    ///
    /// ```
    /// use geerpc::{CallOptions, Client, Context, Server, Service};
    /// use std::time::Duration;
    ///
    /// let server = Server::new();
    /// server.register(Service::new("T").method_with_context("Tenant", |ctx: &Context, _: ()| {
    ///     // The handler sees the deadline and the metadata.
    ///     let tenant = ctx.meta().get("tenant").unwrap_or("none").to_string();
    ///     Ok::<_, String>((tenant, ctx.deadline().is_some()))
    /// }))?;
    /// let running = server.listen("127.0.0.1:0")?;
    /// let client = Client::dial(running.addr())?;
    /// let opts = CallOptions::new()
    ///     .timeout(Duration::from_secs(5))
    ///     .meta("tenant", "acme")?;
    /// let (tenant, timed): (String, bool) = client.call_with("T.Tenant", &(), &opts)?;
    /// assert_eq!((tenant.as_str(), timed), ("acme", true));
    /// # Ok::<(), geerpc::Error>(())
    /// ```
    pub fn call_with<A, R>(&self, service_method: &str, args: &A, opts: &CallOptions) -> Result<R>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        let scope = opts.effective_scope();
        let budget = with_scope(own_budget(opts), &scope);
        self.call_full(service_method, args, budget, &opts.meta, scope.trace())
    }

    /// [`call_with`](Client::call_with) without waiting: the [`Call`]'s
    /// [`wait`](Call::wait) ends at the call's deadline, if it has one.
    pub fn go_with<A, R>(
        &self,
        service_method: &str,
        args: &A,
        opts: &CallOptions,
    ) -> Result<Call<R>>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        let scope = opts.effective_scope();
        let budget = with_scope(own_budget(opts), &scope);
        let call = self.go_full(service_method, args, budget, &opts.meta, scope.trace())?;
        self.inner.ensure_reader();
        Ok(call)
    }

    /// The XClient's way in: one attempt of its call, sent without
    /// waiting. Unlike every public method it inherits nothing from the
    /// thread: `out.budget` is the whole deadline (the XClient folds the
    /// scope's into it) and travels as `Timeout`; `out.scope` gives only
    /// the trace (the attempt sends its `child()`). The client's default
    /// metadata (under `out.meta`), `trace_ids` and interceptors apply as
    /// to any call. With a budget the caller never blocks on the socket
    /// (see [`go_outbound`](Client::go_outbound)); the returned [`Call`]'s
    /// `wait` ends at the budget's deadline.
    pub(crate) fn go_outbound<A, R>(
        &self,
        service_method: &str,
        args: &A,
        out: &Outbound<'_>,
    ) -> Result<Call<R>>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        let budget = out.budget.filter(|b| b.deadline.is_some());
        let call = self.go_full(service_method, args, budget, out.meta, out.scope.trace())?;
        self.inner.ensure_reader();
        Ok(call)
    }

    /// A call with all it brings, waited for: leading the reading when it
    /// has no deadline, as a plain call does.
    pub(super) fn call_full<A, R>(
        &self,
        service_method: &str,
        args: &A,
        budget: Option<Budget>,
        meta: &Meta,
        trace: Option<TraceParent>,
    ) -> Result<R>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        let call = self.go_full(service_method, args, budget, meta, trace)?;
        if budget.is_some() {
            // A timed wait sleeps instead of reading: the reader thread reads.
            self.inner.ensure_reader();
        }
        call.wait()
    }

    /// Sends a call with its `budget` (`None`: no deadline; it must be
    /// final, scope included), its own `meta` over the client's, and the
    /// `trace` it continues. Runs the interceptors' `before`s.
    pub(super) fn go_full<A, R>(
        &self,
        service_method: &str,
        args: &A,
        budget: Option<Budget>,
        meta: &Meta,
        trace: Option<TraceParent>,
    ) -> Result<Call<R>>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        let d = &*self.inner.defaults;
        if d.plain && meta.is_empty() && trace.is_none() {
            return self.send(service_method, args, budget, Extra::default());
        }
        let mut meta = call_meta(d, meta, trace)?;
        let entered = if d.interceptors.is_empty() {
            None
        } else {
            let deadline = budget.and_then(|b| b.deadline);
            Some(intercept::run_befores(
                d,
                service_method,
                deadline,
                &mut meta,
            )?)
        };
        let extra = Extra {
            meta: (!meta.is_empty()).then_some(meta),
            entered,
        };
        self.send(service_method, args, budget, extra)
    }
}

/// The metadata a call sends: its own; else for `traceparent` the child of
/// the trace it continues; then the client's defaults for the keys it
/// lacks; then, with `trace_ids` on and still no `traceparent`, a new
/// trace. Fails when the whole passes the limits of [`Meta`].
fn call_meta(d: &Defaults, own: &Meta, trace: Option<TraceParent>) -> Result<Meta> {
    let mut meta = own.clone();
    if let Some(t) = trace {
        if meta.get(TRACEPARENT).is_none() {
            meta.insert(TRACEPARENT, t.child().to_string())?;
        }
    }
    if meta.is_empty() {
        meta = d.meta.clone();
    } else {
        meta.merge_defaults(&d.meta)?;
    }
    if d.trace_ids && meta.get(TRACEPARENT).is_none() {
        meta.insert(TRACEPARENT, TraceParent::new_root().to_string())?;
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_earliest_deadline_binds_and_names_its_timeout() {
        let now = Instant::now();
        let far = Scope::new().with_deadline(now + Duration::from_secs(60));
        let near = Scope::new().with_deadline(now + Duration::from_millis(10));
        let own = Some(Budget::after(Duration::from_secs(1)));
        let b = with_scope(own, &far).unwrap();
        assert_eq!(b.timeout, Duration::from_secs(1), "its own binds");
        let b = with_scope(own, &near).unwrap();
        assert_eq!(b.deadline, near.deadline());
        assert!(b.timeout <= Duration::from_millis(10));
        assert!(with_scope(None, &Scope::new()).is_none());
        assert!(
            with_scope(Some(Budget::after(Duration::MAX)), &Scope::new()).is_none(),
            "too far for an Instant: none"
        );
        assert_eq!(with_scope(None, &near).unwrap().deadline, near.deadline());

        let o = CallOptions::new()
            .timeout(Duration::from_secs(1))
            .deadline(now + Duration::from_millis(5));
        assert_eq!(
            own_budget(&o).unwrap().deadline,
            Some(now + Duration::from_millis(5))
        );
        let o = CallOptions::new().timeout(Duration::from_millis(5));
        assert_eq!(own_budget(&o).unwrap().timeout, Duration::from_millis(5));
        assert!(own_budget(&CallOptions::new()).is_none());
    }

    #[test]
    fn timeout_is_at_least_one_nanosecond() {
        assert_eq!(timeout_nanos(Instant::now()), 1);
        let n = timeout_nanos(Instant::now() + Duration::from_millis(100));
        assert!(n > 90_000_000 && n <= 100_000_000, "{n}");
    }

    #[test]
    fn the_calls_meta_wins_then_the_defaults_then_a_trace() {
        let addr: Address = "127.0.0.1:1".parse().unwrap();
        let defaults = Meta::new()
            .with("a", "client")
            .unwrap()
            .with("b", "client")
            .unwrap();
        let d = Defaults::new(addr.clone(), defaults, false, Vec::new());
        let own = Meta::new().with("a", "call").unwrap();
        let m = call_meta(&d, &own, None).unwrap();
        assert_eq!(m.get("a"), Some("call"));
        assert_eq!(m.get("b"), Some("client"));
        assert_eq!(m.get(TRACEPARENT), None);

        let root = TraceParent::new_root();
        let m = call_meta(&d, &Meta::new(), Some(root)).unwrap();
        let sent: TraceParent = m.get(TRACEPARENT).unwrap().parse().unwrap();
        assert_eq!(sent.trace_id(), root.trace_id());
        assert_ne!(sent.parent_id(), root.parent_id());

        let own = Meta::new().with(TRACEPARENT, root.to_string()).unwrap();
        let m = call_meta(&d, &own, Some(TraceParent::new_root())).unwrap();
        assert_eq!(
            m.get(TRACEPARENT),
            Some(root.to_string().as_str()),
            "the call's own wins"
        );

        let d = Defaults::new(addr, Meta::new(), true, Vec::new());
        let m = call_meta(&d, &Meta::new(), None).unwrap();
        assert!(m.get(TRACEPARENT).unwrap().parse::<TraceParent>().is_ok());
    }
}
