//! [`XClient`] itself and its one-instance calls ([`XClient::call`],
//! [`XClient::go`] and their variants), and [`XCall`], a call sent by `go`.
//!
//! The pieces live next door: settings in `builder.rs` and `options.rs`,
//! the per-call settings in `plan.rs`, picking an instance in `pick.rs`,
//! the fail modes in `fail.rs`, calls to every instance in `fanout.rs`,
//! connections and instance health in `pool.rs`. This file only routes a
//! call to them; it never imports the registry or etcd.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::discovery::{Discovery, Snapshot};
use super::pool::{InflightGuard, Pool, Slot, Slots};
use super::selector::Selector;
use crate::client::{Budget, Call, Client};
use crate::context::{CallOptions, FailMode};
use crate::error::Result;
use crate::wire::Address;

/// Calls to a service that runs on several instances.
///
/// Each call asks the [`Discovery`] for the current instances (those whose
/// [`Instance::services`](super::Instance::services) name another service
/// are left out), lets the [`Selector`] pick one, and goes over that
/// instance's cached connection (dialled on first use, re-dialled when
/// broken). An instance whose connection fails is taken out of selection
/// at once and let back when a re-dial after a back-off succeeds (if every
/// instance is out, calls try them anyway). An instance whose address does
/// not parse is never picked (logged once while it is listed; if no other
/// is listed, calls fail with
/// [`Error::InvalidAddress`](crate::Error::InvalidAddress)).
/// [`broadcast`](XClient::broadcast), [`fork`](XClient::fork) and
/// [`inform`](XClient::inform) call every instance at once.
///
/// # Deadlines
///
/// A call's deadline is the earliest of its own (the builder's
/// [`timeout`](super::XClientBuilder::timeout), or
/// [`CallOptions::timeout`] / [`CallOptions::deadline`]) and its scope's:
/// by default the thread's current [`Scope`](crate::context::Scope),
/// which inside a handler is the handler's call (override it with
/// [`CallOptions::scope`]). So a call a handler makes through an XClient
/// never outlives the handler's budget. The deadline bounds all attempts
/// together, and each request carries what is left of it (PROTOCOL.md
/// section 8, `Timeout`); [`go`](XClient::go) (then [`XCall::wait`]),
/// [`broadcast`](XClient::broadcast), [`fork`](XClient::fork) and
/// [`inform`](XClient::inform) keep it too.
///
/// # Overload
///
/// A reply with code `resource_exhausted` (refused by a limit before its
/// handler ran) or `unavailable` (going away) sends the call to another
/// instance at no cost (see [`FailMode`]). The refusing instance is then
/// passed over by selection (every [`SelectMode`](super::SelectMode), p2c
/// included: it is not available to the [`Selector`] while another
/// instance is) for a back-off of 100 ms that doubles up to 1 s while it
/// goes on refusing and starts again after a call on it succeeds
/// ([`XClientBuilder::overload_backoff`](super::XClientBuilder::overload_backoff)).
/// It is not evicted (nothing probes it, [`evicted`](XClient::evicted)
/// does not list it), and it is still picked when every instance is
/// passed over: then the call ends with the refusal, whose
/// [`Error::code`](crate::Error::code) is `resource_exhausted` and which
/// [`is_retryable`](crate::Error::is_retryable). `broadcast`, `fork` and
/// `inform`, meant for every instance, still call one in its back-off.
///
/// ```no_run
/// use geerpc::{FailMode, MultiServerDiscovery, SelectMode, XClient};
///
/// let d = MultiServerDiscovery::new(["tcp@127.0.0.1:7001", "tcp@127.0.0.1:7002"]);
/// let xc = XClient::builder(d)
///     .select_mode(SelectMode::RoundRobin)
///     .fail_mode(FailMode::Failover { retries: 2 })
///     .idempotent(true)
///     .build();
/// let sum: i64 = xc.call("Arith.Sum", &serde_json::json!({"Num1": 1, "Num2": 2}))?;
/// # Ok::<(), geerpc::Error>(())
/// ```
#[must_use = "dropping the XClient closes its connections and stops its probe thread"]
pub struct XClient {
    pub(super) discovery: Arc<dyn Discovery>,
    pub(super) selector: Arc<dyn Selector>,
    pub(super) fail_mode: FailMode,
    pub(super) timeout: Option<Duration>,
    pub(super) idempotent: bool,
    pub(super) pool: Arc<Pool>,
}

/// A call sent by [`XClient::go`] and not yet waited for.
///
/// Like [`Call`], with the instance it went to. Waiting through it lets the
/// [`XClient`] see a connection failure (and evict the instance) and counts
/// the call in flight for
/// [`SelectMode::PowerOfTwoChoices`](super::SelectMode::PowerOfTwoChoices)
/// until it is waited for or dropped.
#[must_use = "dropping an XCall abandons its reply"]
pub struct XCall<R> {
    call: Call<R>,
    slot: Arc<Slot>,
    _client: Client,
    pool: Arc<Pool>,
    /// The call's deadline (counted from [`XClient::go`]) and timeout.
    budget: Budget,
    _inflight: InflightGuard,
}

impl<R> XCall<R> {
    /// The instance the call went to.
    pub fn addr(&self) -> &Address {
        &self.slot.address
    }

    /// `Service.Method` of this call.
    pub fn service_method(&self) -> &str {
        self.call.service_method()
    }

    /// The channel the result arrives on, for `crossbeam_channel::select!`.
    pub fn receiver(&self) -> &Receiver<Result<R>> {
        self.call.receiver()
    }

    /// The result if it has arrived.
    pub fn try_wait(&self) -> Option<Result<R>> {
        let r = self.call.try_wait()?;
        self.pool.report(&self.slot, &r);
        Some(r)
    }

    /// Waits for the result, at most until the client's timeout (counted
    /// from [`XClient::go`]) if it has one.
    pub fn wait(self) -> Result<R> {
        let r = self.call.wait_within(self.budget);
        self.pool.report(&self.slot, &r);
        r
    }

    /// Waits at most `timeout`; then the call is abandoned with
    /// [`Error::Timeout`](crate::Error::Timeout).
    pub fn wait_timeout(self, timeout: Duration) -> Result<R> {
        let r = self.call.wait_timeout(timeout);
        self.pool.report(&self.slot, &r);
        r
    }
}

impl<R> std::fmt::Debug for XCall<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XCall")
            .field("addr", &self.slot.addr)
            .field("call", &self.call)
            .finish()
    }
}

impl XClient {
    /// The discovery this client asks.
    pub fn discovery(&self) -> &dyn Discovery {
        &*self.discovery
    }

    /// Calls `service_method` on one instance, as the fail mode says.
    pub fn call<A, R>(&self, service_method: &str, args: &A) -> Result<R>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        self.call_with(service_method, args, &CallOptions::new())
    }

    /// Like [`call`](XClient::call), all attempts within `timeout`.
    pub fn call_timeout<A, R>(&self, service_method: &str, args: &A, timeout: Duration) -> Result<R>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        self.call_with(service_method, args, &CallOptions::new().timeout(timeout))
    }

    /// Like [`call`](XClient::call), selecting by `key` (with
    /// [`SelectMode::ConsistentHash`](super::SelectMode::ConsistentHash),
    /// calls with the same key go to the same instance while it is
    /// available).
    pub fn call_key<A, R>(&self, service_method: &str, args: &A, key: impl AsRef<[u8]>) -> Result<R>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        self.call_with(service_method, args, &CallOptions::new().key(key))
    }

    /// Like [`call`](XClient::call) with per-call settings.
    pub fn call_with<A, R>(&self, service_method: &str, args: &A, opts: &CallOptions) -> Result<R>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        let plan = self.plan(service_method, opts);
        match plan.mode {
            FailMode::FailFast => self.failover(&plan, args, 0),
            FailMode::Failover { retries } => self.failover(&plan, args, retries),
            FailMode::Failtry { retries } => self.failtry(&plan, args, retries),
            FailMode::Failbackup { after } => self.failbackup(&plan, args, after),
        }
    }

    /// Sends `service_method` to one instance and returns at once. If the
    /// chosen instance cannot be reached, another is tried (the call was
    /// not sent); other fail modes do not apply.
    pub fn go<A, R>(&self, service_method: &str, args: &A) -> Result<XCall<R>>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        self.go_with(service_method, args, &CallOptions::new())
    }

    /// Like [`go`](XClient::go) with per-call settings (key, timeout for
    /// [`XCall::wait`]).
    pub fn go_with<A, R>(
        &self,
        service_method: &str,
        args: &A,
        opts: &CallOptions,
    ) -> Result<XCall<R>>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        let plan = self.plan(service_method, opts);
        let (snap, view) = self.instances()?;
        // Filled in only once a send fails.
        let mut tried = Vec::new();
        let mut last = None;
        loop {
            let i = match self.pick(&plan, &snap, &view, &tried) {
                Ok(i) => i,
                Err(e) => return Err(last.unwrap_or(e)),
            };
            match self.send(&plan, &view[i], args) {
                Ok(sent) => {
                    return Ok(XCall {
                        call: sent.call,
                        slot: sent.slot,
                        _client: sent.client,
                        pool: self.pool.clone(),
                        budget: plan.budget(),
                        _inflight: sent.guard,
                    })
                }
                Err(e) if e.is_not_sent() => {
                    tried.resize(view.len(), false);
                    tried[i] = true;
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Addresses (`PROTOCOL@ADDR`, as [`Address`] writes them) currently
    /// taken out of selection after a connection failure, waiting for a
    /// probe to succeed.
    pub fn evicted(&self) -> Vec<String> {
        self.pool.evicted()
    }

    /// Closes every cached connection and stops the probe thread; later
    /// calls fail with [`Error::Shutdown`](crate::Error::Shutdown). Dropping the client does the
    /// same.
    pub fn close(&self) {
        self.pool.close();
    }

    /// The current list (without instances whose address does not parse)
    /// and the slot of each instance.
    pub(super) fn instances(&self) -> Result<(Snapshot, Slots)> {
        self.pool.check_open()?;
        self.pool.view(self.discovery.snapshot()?)
    }
}

impl Drop for XClient {
    fn drop(&mut self) {
        self.pool.close();
    }
}

impl std::fmt::Debug for XClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XClient")
            .field("fail_mode", &self.fail_mode)
            .field("timeout", &self.timeout)
            .field("idempotent", &self.idempotent)
            .field("evicted", &self.pool.evicted())
            .finish()
    }
}
