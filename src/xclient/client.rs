//! [`XClient`]: calls through a discovery, with selection, fail modes,
//! broadcast and fork.
//!
//! This file holds more than one idea and is over 600 lines; issue 17
//! (API and layout) splits it by idea. Hardening (issue 16) left it whole
//! so that parallel changes to it merged cleanly.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::discovery::{Discovery, Instance, Snapshot};
use super::pool::{InflightGuard, Pool, Slot, Slots};
use super::selector::{SelectContext, SelectMode, Selector};
use crate::client::{deadline_after, Budget, Call, Client, ClientBuilder};
use crate::code::Code;
use crate::error::{Error, Result, TimeoutStage};

thread_local! {
    /// The slot (its address) whose connection handed this thread the reply
    /// of its last blocking call in a batch; 0 for none. Taken by the next
    /// pick. Compared with the current list's slots only, never
    /// dereferenced: a stale match, from a slot since dropped whose memory
    /// a new one took, at worst weighs that one pick.
    static BATCH_HOME: Cell<usize> = const { Cell::new(0) };
}

/// Lists up to this long are picked from with the selector's inputs on the
/// stack; longer ones allocate them.
const PICK_ON_STACK: usize = 16;

/// What an [`XClient`] does when a call fails.
///
/// Whatever the mode, a call is sent again only if it is idempotent
/// ([`XClientBuilder::idempotent`], [`CallOptions::idempotent`]) or the
/// failed attempt certainly never reached a server
/// ([`Error::is_not_sent`]). An error the service itself returned
/// ([`Error::Remote`]) is never retried, and the call's timeout bounds all
/// attempts together.
///
/// Whatever the mode, FailFast included, a call an instance did not process
/// because it is going away or over a limit (its drain notice, a reply
/// with code `unavailable` or `resource_exhausted`, or a refused dial to an
/// instance that sent its notice) is sent to another instance, once per
/// instance at most, within the timeout: such an attempt counts neither as
/// a retry nor as a failure of the instance (it is not evicted; one going
/// away is passed over for a moment). [`XClient::go`] applies this when it
/// sends, not to the result [`XCall::wait`] returns.
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

/// Per-call settings that differ from the [`XClient`]'s.
///
/// ```
/// use geerpc::xclient::CallOptions;
/// use std::time::Duration;
///
/// let opts = CallOptions::new().key("user-42").timeout(Duration::from_secs(1)).idempotent(true);
/// ```
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    key: Option<Vec<u8>>,
    timeout: Option<Duration>,
    idempotent: Option<bool>,
    fail_mode: Option<FailMode>,
}

impl CallOptions {
    /// The client's settings.
    pub fn new() -> CallOptions {
        CallOptions::default()
    }

    /// The key for key-affine selection ([`SelectMode::ConsistentHash`]).
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

/// Settings for an [`XClient`]; see [`XClient::builder`].
pub struct XClientBuilder {
    discovery: Arc<dyn Discovery>,
    selector: Arc<dyn Selector>,
    fail_mode: FailMode,
    client: ClientBuilder,
    timeout: Option<Duration>,
    idempotent: bool,
    backoff: (Duration, Duration),
}

impl XClientBuilder {
    /// One of the built-in selection policies (default random).
    pub fn select_mode(mut self, mode: SelectMode) -> Self {
        self.selector = mode.selector();
        self
    }

    /// Your own selection policy.
    pub fn selector(mut self, selector: impl Selector + 'static) -> Self {
        self.selector = Arc::new(selector);
        self
    }

    /// What to do when a call fails (default [`FailMode::FailFast`]).
    pub fn fail_mode(mut self, mode: FailMode) -> Self {
        self.fail_mode = mode;
        self
    }

    /// Settings for each connection: codec, connect and handle timeouts.
    pub fn client(mut self, builder: ClientBuilder) -> Self {
        self.client = builder;
        self
    }

    /// A limit on every call, broadcast and fork, retries included
    /// (default none).
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether calls are idempotent by default (default false): only then
    /// may a call that may have reached a server be sent again.
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }

    /// How long an evicted instance waits before it is probed: `min` after
    /// its failure, doubling after each failed probe up to `max` (default
    /// 100 ms to 30 s).
    pub fn eviction_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff = (min, max);
        self
    }

    /// The client. Connections are dialled on first use.
    pub fn build(self) -> XClient {
        XClient {
            pool: Arc::new(Pool::new(self.client, self.backoff.0, self.backoff.1)),
            discovery: self.discovery,
            selector: self.selector,
            fail_mode: self.fail_mode,
            timeout: self.timeout,
            idempotent: self.idempotent,
        }
    }
}

/// Calls to a service that runs on several instances.
///
/// Each call asks the [`Discovery`] for the current instances (those whose
/// [`Instance::services`] name another service are left out), lets the
/// [`Selector`] pick one, and goes over that instance's cached connection
/// (dialled on first use, re-dialled when broken). An instance whose
/// connection fails is taken out of selection at once and let back when a
/// re-dial after a back-off succeeds (if every instance is out, calls try
/// them anyway). [`broadcast`](XClient::broadcast), [`fork`](XClient::fork)
/// and [`inform`](XClient::inform) call every instance at once.
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
    discovery: Arc<dyn Discovery>,
    selector: Arc<dyn Selector>,
    fail_mode: FailMode,
    timeout: Option<Duration>,
    idempotent: bool,
    pool: Arc<Pool>,
}

/// A call sent by [`XClient::go`] and not yet waited for.
///
/// Like [`Call`], with the instance it went to. Waiting through it lets the
/// [`XClient`] see a connection failure (and evict the instance) and counts
/// the call in flight for [`SelectMode::PowerOfTwoChoices`] until it is
/// waited for or dropped.
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
    /// The instance the call went to (`PROTOCOL@ADDR`).
    pub fn addr(&self) -> &str {
        &self.slot.addr
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
    /// [`Error::Timeout`].
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

/// The resolved settings of one call.
struct Plan<'a> {
    method: &'a str,
    /// `method` up to the dot.
    service: &'a str,
    key: Option<&'a [u8]>,
    deadline: Option<Instant>,
    timeout: Option<Duration>,
    idempotent: bool,
    mode: FailMode,
}

impl Plan<'_> {
    /// Whether a failed attempt may be followed by another.
    fn may_retry(&self, e: &Error) -> bool {
        let in_time = self.deadline.map_or(true, |d| Instant::now() < d);
        in_time
            && !matches!(e, Error::Remote { .. } | Error::Timeout { .. })
            && (self.idempotent || e.is_not_sent())
    }

    /// Whether a failed attempt on `slot` was not processed because the
    /// instance is going away or over a limit, so that the call goes to
    /// another instance at no cost (see [`FailMode`]).
    fn may_redirect(&self, e: &Error, slot: &Slot) -> bool {
        let in_time = self.deadline.map_or(true, |d| Instant::now() < d);
        in_time
            && match e.code() {
                Some(c) => c.may_retry_elsewhere(),
                None => e.is_not_sent() && slot.is_draining(),
            }
    }

    /// Whether `inst` serves this call's service (an instance that lists
    /// no services may serve any).
    fn served_by(&self, inst: &Instance) -> bool {
        inst.services.is_empty() || inst.services.iter().any(|s| s == self.service)
    }

    fn no_servers(&self) -> Error {
        Error::NoServers {
            service: (!self.service.is_empty()).then(|| self.service.to_string()),
        }
    }

    /// The timeout error for the whole call, naming the instances that did
    /// not answer.
    fn timed_out<'s>(&self, waiting: impl Iterator<Item = &'s str>) -> Error {
        Error::Timeout {
            method: self.method.to_string(),
            addr: waiting.collect::<Vec<_>>().join(", "),
            timeout: self.timeout.unwrap_or_default(),
            stage: TimeoutStage::Reply,
        }
    }

    /// The call's time, for the stages of one attempt.
    fn budget(&self) -> Budget {
        Budget {
            deadline: self.deadline,
            timeout: self.timeout.unwrap_or_default(),
        }
    }

    /// A per-attempt timeout reported as the whole call's.
    fn whole_timeout(&self, e: Error) -> Error {
        match (e, self.timeout) {
            (
                Error::Timeout {
                    method,
                    addr,
                    stage,
                    ..
                },
                Some(timeout),
            ) => Error::Timeout {
                method,
                addr,
                timeout,
                stage,
            },
            (e, _) => e,
        }
    }
}

/// Whether a failed attempt on `slot` over `client` says the instance is
/// going away (a refusal as `unavailable`, or a call the connection did not
/// send after the drain notice); if so the slot is marked draining.
fn going_away(slot: &Slot, client: &Client, e: &Error) -> bool {
    let away = match e.code() {
        Some(Code::Unavailable) => true,
        Some(_) => false,
        None => e.is_not_sent() && client.is_going_away(),
    };
    if away {
        slot.mark_draining();
    }
    away
}

/// A call sent to one instance, counted in flight.
struct Sent<R> {
    call: Call<R>,
    slot: Arc<Slot>,
    /// Keeps the connection open while the call is out, even if the slot
    /// drops or replaces it.
    client: Client,
    guard: InflightGuard,
}

/// Gives up a call: its slot in the connection is freed and a late reply is
/// dropped.
fn abandon<R>(call: Call<R>) {
    let _ = call.wait_deadline(Instant::now());
}

fn lost_reply(addr: &str) -> Error {
    Error::ConnectionClosed {
        addr: addr.to_string(),
        reason: "reply channel closed".into(),
    }
}

/// What a fan-out collected.
struct FanOut<R> {
    addrs: Vec<String>,
    /// Results in the order they arrived, by index into `addrs`.
    arrived: Vec<(usize, Result<R>)>,
}

impl<R> FanOut<R> {
    /// Addresses with no result (the deadline passed or the fan-out stopped
    /// early).
    fn waiting(&self) -> impl Iterator<Item = &str> {
        let mut got = vec![false; self.addrs.len()];
        for (k, _) in &self.arrived {
            got[*k] = true;
        }
        self.addrs
            .iter()
            .zip(got)
            .filter(|(_, g)| !g)
            .map(|(a, _)| a.as_str())
    }
}

impl XClient {
    /// A client over `discovery` with the `mode` selection policy and
    /// default settings (fail fast, JSON, no timeout).
    pub fn new(discovery: impl Discovery + 'static, mode: SelectMode) -> XClient {
        XClient::builder(discovery).select_mode(mode).build()
    }

    /// Settings other than the defaults. Pass an `Arc` of the discovery to
    /// keep a handle on it.
    pub fn builder(discovery: impl Discovery + 'static) -> XClientBuilder {
        XClientBuilder {
            discovery: Arc::new(discovery),
            selector: SelectMode::Random.selector(),
            fail_mode: FailMode::FailFast,
            client: ClientBuilder::default(),
            timeout: None,
            idempotent: false,
            backoff: (Duration::from_millis(100), Duration::from_secs(30)),
        }
    }

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
    /// [`SelectMode::ConsistentHash`], calls with the same key go to the
    /// same instance while it is available).
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

    /// Calls every instance at once. Returns the first error as soon as it
    /// arrives (the other calls are abandoned), or when every instance
    /// succeeded, one of the replies. The client's timeout bounds the whole
    /// broadcast. Evicted instances are left out unless all are.
    ///
    /// Each instance is called from its own scoped thread, all joined before
    /// this returns. Dialling fits in the timeout too; without a timeout, a
    /// thread still dialling is waited for up to the connect timeout.
    pub fn broadcast<A, R>(&self, service_method: &str, args: &A) -> Result<R>
    where
        A: Serialize + Sync + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        self.broadcast_with(service_method, args, &CallOptions::new())
    }

    /// Like [`broadcast`](XClient::broadcast) with per-call settings
    /// (timeout).
    pub fn broadcast_with<A, R>(
        &self,
        service_method: &str,
        args: &A,
        opts: &CallOptions,
    ) -> Result<R>
    where
        A: Serialize + Sync + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        let plan = self.plan(service_method, opts);
        let got = self.fan_out(&plan, args, |r: &Result<R>| r.is_err())?;
        let timed_out = got.waiting().next().is_some();
        let err = (timed_out).then(|| plan.timed_out(got.waiting()));
        let mut reply = None;
        for (_, r) in got.arrived {
            match r {
                Err(e) => return Err(e),
                Ok(v) => reply = reply.or(Some(v)),
            }
        }
        match (err, reply) {
            (Some(e), _) => Err(e),
            (None, Some(v)) => Ok(v),
            (None, None) => Err(plan.no_servers()),
        }
    }

    /// Calls every instance at once and returns the first success (the
    /// other calls are abandoned); if all fail, the first error.
    pub fn fork<A, R>(&self, service_method: &str, args: &A) -> Result<R>
    where
        A: Serialize + Sync + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        self.fork_with(service_method, args, &CallOptions::new())
    }

    /// Like [`fork`](XClient::fork) with per-call settings (timeout).
    pub fn fork_with<A, R>(&self, service_method: &str, args: &A, opts: &CallOptions) -> Result<R>
    where
        A: Serialize + Sync + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        let plan = self.plan(service_method, opts);
        let got = self.fan_out(&plan, args, |r: &Result<R>| r.is_ok())?;
        let timed_out = got.waiting().next().is_some();
        let err = (timed_out).then(|| plan.timed_out(got.waiting()));
        let mut first_err = None;
        for (_, r) in got.arrived {
            match r {
                Ok(v) => return Ok(v),
                Err(e) => first_err = first_err.or(Some(e)),
            }
        }
        Err(err.or(first_err).unwrap_or_else(|| plan.no_servers()))
    }

    /// Calls every instance at once and returns each one's result, keyed
    /// by address; those that did not answer within the timeout have
    /// [`Error::Timeout`].
    pub fn inform<A, R>(&self, service_method: &str, args: &A) -> Result<HashMap<String, Result<R>>>
    where
        A: Serialize + Sync + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        self.inform_with(service_method, args, &CallOptions::new())
    }

    /// Like [`inform`](XClient::inform) with per-call settings (timeout).
    pub fn inform_with<A, R>(
        &self,
        service_method: &str,
        args: &A,
        opts: &CallOptions,
    ) -> Result<HashMap<String, Result<R>>>
    where
        A: Serialize + Sync + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        let plan = self.plan(service_method, opts);
        let got = self.fan_out(&plan, args, |_: &Result<R>| false)?;
        let mut out: HashMap<String, Result<R>> = got
            .waiting()
            .map(|a| (a.to_string(), Err(plan.timed_out(std::iter::once(a)))))
            .collect();
        for (k, r) in got.arrived {
            out.insert(got.addrs[k].clone(), r);
        }
        Ok(out)
    }

    /// Addresses currently taken out of selection after a connection
    /// failure, waiting for a probe to succeed.
    pub fn evicted(&self) -> Vec<String> {
        self.pool.evicted()
    }

    /// Closes every cached connection and stops the probe thread; later
    /// calls fail with [`Error::Shutdown`]. Dropping the client does the
    /// same.
    pub fn close(&self) {
        self.pool.close();
    }

    fn plan<'a>(&self, method: &'a str, opts: &'a CallOptions) -> Plan<'a> {
        let timeout = opts.timeout.or(self.timeout);
        Plan {
            method,
            service: method.split_once('.').map_or(method, |(s, _)| s),
            key: opts.key.as_deref(),
            // `Duration::MAX` (or any timeout past what `Instant` holds): none.
            deadline: timeout.and_then(deadline_after),
            timeout,
            idempotent: opts.idempotent.unwrap_or(self.idempotent),
            mode: opts.fail_mode.unwrap_or(self.fail_mode),
        }
    }

    /// The current list and the slot of each instance.
    fn instances(&self) -> Result<(Snapshot, Slots)> {
        self.pool.check_open()?;
        let snap = self.discovery.snapshot()?;
        let view = self.pool.view(&snap);
        Ok((snap, view))
    }

    /// Asks the selector for an instance not in `exclude` (indexed like
    /// `view`; instances past its end are not excluded), leaving out
    /// evicted instances unless every candidate is evicted (then a call
    /// may as well try: it re-dials, and a success re-admits it).
    fn pick(
        &self,
        plan: &Plan<'_>,
        snap: &Snapshot,
        view: &[Arc<Slot>],
        exclude: &[bool],
    ) -> Result<usize> {
        let n = view.len();
        let (mut on_stack, mut on_heap) = (([0; PICK_ON_STACK], [false; PICK_ON_STACK]), None);
        let (inflight, available): (&mut [usize], &mut [bool]) = if n <= PICK_ON_STACK {
            (&mut on_stack.0[..n], &mut on_stack.1[..n])
        } else {
            let (i, a) = on_heap.insert((vec![0; n], vec![false; n]));
            (i, a)
        };
        self.pick_in(plan, snap, view, exclude, inflight, available)
    }

    /// [`pick`](XClient::pick) with room for its selector's inputs, one
    /// entry per instance.
    fn pick_in(
        &self,
        plan: &Plan<'_>,
        snap: &Snapshot,
        view: &[Arc<Slot>],
        exclude: &[bool],
        inflight: &mut [usize],
        available: &mut [bool],
    ) -> Result<usize> {
        // Used once, like the batch it stands for: a later pick (a retry, a
        // backup, a `go`) has no batch to join.
        let home = BATCH_HOME.replace(0);
        let candidate =
            |i: usize| exclude.get(i) != Some(&true) && plan.served_by(&snap.instances[i]);
        for (i, slot) in view.iter().enumerate() {
            inflight[i] = slot.inflight();
            available[i] = candidate(i) && !slot.is_dead() && !slot.avoid_draining();
        }
        if !available.contains(&true) {
            for (i, a) in available.iter_mut().enumerate() {
                *a = candidate(i);
            }
        }
        if !available.contains(&true) {
            return Err(plan.no_servers());
        }
        let home = (home != 0)
            .then(|| view.iter().position(|s| Arc::as_ptr(s) as usize == home))
            .flatten()
            .filter(|&i| available[i]);
        let ctx = SelectContext {
            service_method: plan.method,
            key: plan.key,
            inflight,
            available,
            home,
        };
        match self.selector.select(snap, &ctx) {
            Some(i) if i < available.len() && available[i] => Ok(i),
            Some(i) if i < available.len() => {
                ctx.next_available(i).ok_or_else(|| plan.no_servers())
            }
            _ => Err(plan.no_servers()),
        }
    }

    /// One blocking attempt on one instance.
    fn once<A, R>(&self, plan: &Plan<'_>, slot: &Arc<Slot>, args: &A) -> Result<R>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        let _inflight = InflightGuard::new(&**slot);
        if plan.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(plan.timed_out(std::iter::once(slot.addr.as_str())));
        }
        let c = self
            .pool
            .connect(slot, plan.method, plan.budget())
            .inspect_err(|e| {
                if slot.is_draining() && e.is_not_sent() {
                    // Still gone: pass it over a while longer.
                    slot.mark_draining();
                }
            })?;
        let r = match plan.deadline {
            Some(d) => c
                .call_deadline(plan.method, args, d)
                .map_err(|e| plan.whole_timeout(e)),
            None => c.call(plan.method, args),
        };
        if let Err(e) = &r {
            if going_away(slot, &c, e) {
                // Not a failure of the instance: nothing to report.
                return r;
            }
        }
        // An error from the service itself still came through the batch.
        let answered = matches!(r, Ok(_) | Err(Error::Remote { .. }));
        if answered && c.woke_this_thread_in_batch() {
            BATCH_HOME.set(Arc::as_ptr(slot) as usize);
        }
        self.pool.report(slot, &r);
        r
    }

    /// Sends without waiting.
    fn send<A, R>(&self, plan: &Plan<'_>, slot: &Arc<Slot>, args: &A) -> Result<Sent<R>>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        let guard = InflightGuard::new(slot.clone());
        let client = self.pool.connect(slot, plan.method, plan.budget())?;
        let sent = match plan.deadline {
            Some(_) => client.go_within(plan.method, args, plan.budget()),
            None => client.go(plan.method, args),
        };
        match sent {
            Ok(call) => Ok(Sent {
                call,
                slot: slot.clone(),
                client,
                guard,
            }),
            Err(e) => {
                if !going_away(slot, &client, &e) {
                    self.pool.report_error(slot, &e);
                }
                Err(e)
            }
        }
    }

    /// Failfast (`retries` 0) and failover.
    fn failover<A, R>(&self, plan: &Plan<'_>, args: &A, retries: u32) -> Result<R>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        let (snap, view) = self.instances()?;
        // Only a call that may fail over needs to remember where it went.
        let mut tried = vec![false; if retries > 0 { view.len() } else { 0 }];
        let mut attempt = 0;
        let mut redirects = 0;
        let mut redirected = None;
        loop {
            if !tried.is_empty() && tried.iter().all(|t| *t) {
                // Every instance had its turn: start another round.
                tried.iter_mut().for_each(|t| *t = false);
            }
            let i = match self.pick(plan, &snap, &view, &tried) {
                Ok(i) => i,
                Err(e) => return Err(redirected.unwrap_or(e)),
            };
            if let Some(t) = tried.get_mut(i) {
                *t = true;
            }
            match self.once(plan, &view[i], args) {
                Ok(r) => return Ok(r),
                Err(e) if redirects < view.len() && plan.may_redirect(&e, &view[i]) => {
                    log::debug!(
                        "xclient: {} not processed by {}: {e}; sending it elsewhere",
                        plan.method,
                        view[i].addr
                    );
                    redirects += 1;
                    tried.resize(view.len(), false);
                    tried[i] = true;
                    redirected = Some(e);
                }
                Err(e) if attempt < retries && plan.may_retry(&e) => {
                    log::debug!(
                        "xclient: {} on {} failed: {e}; failing over",
                        plan.method,
                        view[i].addr
                    );
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The same instance, up to `retries` more times.
    fn failtry<A, R>(&self, plan: &Plan<'_>, args: &A, retries: u32) -> Result<R>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        let (snap, view) = self.instances()?;
        let mut i = self.pick(plan, &snap, &view, &[])?;
        let mut attempt = 0;
        let mut tried = Vec::new();
        loop {
            match self.once(plan, &view[i], args) {
                Ok(r) => return Ok(r),
                // The instance is going away: "the same instance" is moot.
                Err(e) if tried.len() < view.len() && plan.may_redirect(&e, &view[i]) => {
                    tried.resize(view.len(), false);
                    tried[i] = true;
                    match self.pick(plan, &snap, &view, &tried) {
                        Ok(next) => i = next,
                        Err(_) => return Err(e),
                    }
                }
                Err(e) if attempt < retries && plan.may_retry(&e) => attempt += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// One instance, and a second one too if the first is slow.
    fn failbackup<A, R>(&self, plan: &Plan<'_>, args: &A, after: Duration) -> Result<R>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        let (snap, view) = self.instances()?;
        let mut tried = vec![false; view.len()];
        let mut sent: Vec<Sent<R>> = Vec::with_capacity(2);
        let mut first_err: Option<Error> = None;
        let mut attempts = 0;
        // None (`after` past what `Instant` holds): no backup for slowness.
        let backup_at = deadline_after(after);
        loop {
            // Send the first call, or the backup once it is due: when the
            // first is slow (idempotent calls only) or failed retryably.
            let due = match (attempts, &first_err) {
                (0, _) => true,
                (1, Some(e)) if sent.is_empty() => plan.may_retry(e) || e.is_not_processed(),
                (1, _) => plan.idempotent && backup_at.is_some_and(|b| Instant::now() >= b),
                _ => false,
            };
            if due {
                attempts += 1;
                match self.pick(plan, &snap, &view, &tried) {
                    Ok(i) => {
                        tried[i] = true;
                        match self.send(plan, &view[i], args) {
                            Ok(s) => sent.push(s),
                            Err(e) => {
                                first_err.get_or_insert(e);
                            }
                        }
                    }
                    // No second instance: wait for the first alone.
                    Err(e) if attempts == 1 => return Err(e),
                    Err(_) => {}
                }
                continue;
            }
            if sent.is_empty() {
                return Err(first_err.unwrap_or_else(|| plan.no_servers()));
            }
            let mut wait_until = plan.deadline;
            if attempts == 1 && plan.idempotent {
                wait_until = match (wait_until, backup_at) {
                    (Some(d), Some(b)) => Some(d.min(b)),
                    (d, b) => d.or(b),
                };
            }
            let waited = {
                let mut sel = crossbeam_channel::Select::new();
                for s in &sent {
                    sel.recv(s.call.receiver());
                }
                let op = match wait_until {
                    Some(t) => sel.select_deadline(t),
                    None => Ok(sel.select()),
                };
                match op {
                    Ok(op) => {
                        let k = op.index();
                        let r = op
                            .recv(sent[k].call.receiver())
                            .unwrap_or_else(|_| Err(lost_reply(&sent[k].slot.addr)));
                        Some((k, r))
                    }
                    Err(_) => None,
                }
            };
            let Some((k, r)) = waited else {
                if plan.deadline.is_some_and(|d| Instant::now() >= d) {
                    let err = plan.timed_out(sent.iter().map(|s| s.slot.addr.as_str()));
                    for s in sent {
                        abandon(s.call);
                    }
                    return Err(err);
                }
                // Time for the backup.
                continue;
            };
            let done = sent.swap_remove(k);
            self.pool.report(&done.slot, &r);
            match r {
                Ok(v) => {
                    for s in sent {
                        abandon(s.call);
                    }
                    return Ok(v);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
    }

    /// Calls every (available) instance on its own scoped thread and
    /// collects results until `stop` says so, all have arrived, or the
    /// deadline passes. Calls still out are abandoned.
    fn fan_out<A, R>(
        &self,
        plan: &Plan<'_>,
        args: &A,
        stop: fn(&Result<R>) -> bool,
    ) -> Result<FanOut<R>>
    where
        A: Serialize + Sync + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        let (snap, view) = self.instances()?;
        let serving: Vec<&Arc<Slot>> = view
            .iter()
            .zip(snap.instances.iter())
            .filter(|(_, inst)| plan.served_by(inst))
            .map(|(s, _)| s)
            .collect();
        let mut targets: Vec<Arc<Slot>> = serving
            .iter()
            .filter(|s| !s.is_dead() && !s.avoid_draining())
            .map(|s| Arc::clone(s))
            .collect();
        if targets.is_empty() {
            targets = serving.into_iter().cloned().collect();
        }
        if targets.is_empty() {
            return Err(plan.no_servers());
        }
        let pool = &*self.pool;
        let (tx, rx) = crossbeam_channel::unbounded::<(usize, Result<R>)>();
        // Dropped to tell every thread to abandon its call.
        let (cancel_tx, cancel_rx) = crossbeam_channel::bounded::<()>(0);
        let mut arrived = Vec::with_capacity(targets.len());
        std::thread::scope(|scope| {
            let mut handles = Vec::with_capacity(targets.len());
            for (k, slot) in targets.iter().enumerate() {
                let thread_tx = tx.clone();
                let cancel = cancel_rx.clone();
                let spawned = std::thread::Builder::new()
                    .name("geerpc-xc-fan".into())
                    .spawn_scoped(scope, move || {
                        let r = call_until_cancelled(pool, plan, slot, args, &cancel);
                        if let Some(r) = r {
                            let _ = thread_tx.send((k, r));
                        }
                    });
                match spawned {
                    Ok(h) => handles.push(h),
                    Err(e) => {
                        let _ = tx.send((k, Err(Error::io("start a broadcast thread", e))));
                    }
                }
            }
            drop(tx);
            let deadline = plan
                .deadline
                .map_or_else(crossbeam_channel::never, crossbeam_channel::at);
            loop {
                crossbeam_channel::select! {
                    recv(rx) -> got => match got {
                        Ok((k, r)) => {
                            let enough = stop(&r);
                            arrived.push((k, r));
                            if enough {
                                break;
                            }
                        }
                        Err(_) => break,
                    },
                    recv(deadline) -> _ => break,
                }
            }
            drop(cancel_tx);
            // The scope only waits for the closures; joining waits for the
            // threads themselves to be gone.
            for h in handles {
                let _ = h.join();
            }
        });
        Ok(FanOut {
            addrs: targets.iter().map(|s| s.addr.clone()).collect(),
            arrived,
        })
    }
}

/// One instance's part of a fan-out: `None` if it was cancelled or ran
/// out of time (the collector accounts for it).
fn call_until_cancelled<A, R>(
    pool: &Pool,
    plan: &Plan<'_>,
    slot: &Arc<Slot>,
    args: &A,
    cancel: &Receiver<()>,
) -> Option<Result<R>>
where
    A: Serialize + ?Sized,
    R: DeserializeOwned + Send + 'static,
{
    let _inflight = InflightGuard::new(&**slot);
    // Kept until the reply is in, so the connection stays open.
    let client = match pool.connect(slot, plan.method, plan.budget()) {
        Ok(c) => c,
        Err(e) => return Some(Err(e)),
    };
    if cancel.try_recv() == Err(crossbeam_channel::TryRecvError::Disconnected) {
        return None;
    }
    let sent = match plan.deadline {
        Some(_) => client.go_within::<A, R>(plan.method, args, plan.budget()),
        None => client.go::<A, R>(plan.method, args),
    };
    let call = match sent {
        Ok(call) => call,
        Err(e) => {
            if !going_away(slot, &client, &e) {
                pool.report_error(slot, &e);
            }
            return Some(Err(e));
        }
    };
    let deadline = plan
        .deadline
        .map_or_else(crossbeam_channel::never, crossbeam_channel::at);
    let r = crossbeam_channel::select! {
        recv(call.receiver()) -> r => r.unwrap_or_else(|_| Err(lost_reply(&slot.addr))),
        recv(cancel) -> _ => {
            abandon(call);
            return None;
        }
        recv(deadline) -> _ => {
            abandon(call);
            return None;
        }
    };
    pool.report(slot, &r);
    Some(r)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xclient::discovery::MultiServerDiscovery;

    /// A list too long for the stack takes `pick`'s allocating path, which
    /// must exclude and fall back exactly like the other.
    #[test]
    fn pick_from_a_long_list_excludes_and_falls_back_to_evicted() {
        let n = PICK_ON_STACK + 4;
        // Nothing listens on these ports: the prober an eviction starts
        // gets its refusal at once.
        let addrs: Vec<String> = (1..=n).map(|p| format!("tcp@127.0.0.1:{p}")).collect();
        let discovery = MultiServerDiscovery::new(addrs.iter().map(String::as_str));
        let xc = XClient::new(discovery, SelectMode::RoundRobin);
        let opts = CallOptions::new();
        let plan = xc.plan("A.B", &opts);
        let (snap, view) = xc.instances().unwrap();
        let (last, before) = (n - 1, n - 2);
        let all_but =
            |keep: &[usize]| -> Vec<bool> { (0..n).map(|i| !keep.contains(&i)).collect() };
        for _ in 0..3 {
            assert_eq!(
                xc.pick(&plan, &snap, &view, &all_but(&[last])).unwrap(),
                last
            );
        }
        let refused = Error::Connect {
            addr: view[last].addr.clone(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        xc.pool.report_error(&view[last], &refused);
        // Evicted: passed over while another candidate is available...
        for _ in 0..4 {
            let two = all_but(&[before, last]);
            assert_eq!(xc.pick(&plan, &snap, &view, &two).unwrap(), before);
        }
        // ...and picked when every candidate is evicted.
        assert_eq!(
            xc.pick(&plan, &snap, &view, &all_but(&[last])).unwrap(),
            last
        );
        let none = xc.pick(&plan, &snap, &view, &all_but(&[]));
        assert!(matches!(none, Err(Error::NoServers { .. })), "{none:?}");
    }
}
