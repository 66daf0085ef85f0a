//! Admission of calls to their handlers: the server-wide concurrency limit
//! with its bounded wait, per-method limits, and the adaptive limit
//! (`adaptive.rs`). A call refused here is answered `resource_exhausted`
//! at once, without running (PROTOCOL.md section 8: not processed, so a
//! client may send it to another instance).
//!
//! The hot path, with no per-method limit and no adaptive limit, is one
//! compare-and-swap on the running count when the call is admitted and one
//! atomic subtraction (plus a load) when its permit drops: no lock, no
//! allocation. Locks are taken only by calls that wait for a place and by
//! the permits that wake them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::adaptive::Adaptive;
use super::queue::QueueShed;
use crate::server::ServerBuilder;
use crate::util::duration::GoDuration;

/// Handlers that may run at once per core by default (`max_concurrency`).
const PER_CORE: usize = 256;

/// The default `max_concurrency`: 256 per core (512 on 2 cores).
pub(crate) fn default_max_concurrency() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.saturating_mul(PER_CORE)
}

/// Admission knobs (server-wide; see also `max_concurrent_calls`, which
/// bounds threads and reading, not handlers).
impl ServerBuilder {
    /// How many handlers may run at once across the server, over every
    /// listener (default 256 per core: 512 on 2 cores). A call past it
    /// waits up to [`max_queue_wait`](Self::max_queue_wait) for a place,
    /// then is refused with `resource_exhausted` without running (a
    /// not-processed code: [`Error::is_retryable`](crate::Error::is_retryable)
    /// is true and an `XClient` tries another instance), and the refusal is
    /// counted and logged at most once per 10 s.
    ///
    /// The default is a safety net against collapse, not a tuning: a
    /// thread-per-connection server runs handlers that wait on I/O or
    /// sleep as well as ones that burn CPU, and by Little's law keeping
    /// `C` cores busy with handlers that use the CPU a fraction `f` of
    /// their time needs `C / f` of them at once. 256 per core throttles
    /// none that spend more than 1/256 of their time on the CPU, and still
    /// bounds the threads and memory a flood can take. For CPU-bound
    /// services set it near the core count, or turn on
    /// [`adaptive_concurrency`](Self::adaptive_concurrency).
    ///
    /// Not to be confused with
    /// [`max_concurrent_calls`](Self::max_concurrent_calls), which refuses
    /// nothing: past it, a connection whose handler is slow stops reading
    /// until that handler returns, which bounds threads but lets requests
    /// wait in the socket.
    pub fn max_concurrency(mut self, n: usize) -> Self {
        self.config.limits.max_concurrency = Some(n.max(1));
        self
    }

    /// How long a call that finds its limit reached (`max_concurrency` or
    /// its method's `method_concurrency`) may wait for a place, counted
    /// from its receipt and never past its own deadline (default zero:
    /// refused at once, as brpc does, so that the caller can try another
    /// instance instead of queueing here). A waiting call holds its
    /// connection's thread like a running handler; the connection's next
    /// requests are read by another thread meanwhile.
    pub fn max_queue_wait(mut self, t: Duration) -> Self {
        self.config.limits.max_queue_wait = t;
        self
    }

    /// How many calls of `service_method` (`"Service.Method"`) may run at
    /// once (default: no per-method limit). Past it calls of that method
    /// wait and are refused as for `max_concurrency`, and other methods
    /// are unaffected; calls admitted here still count against
    /// `max_concurrency`. A name no service has limits nothing. Setting
    /// any makes admission look the method up in a map (only then).
    pub fn method_concurrency(mut self, service_method: impl Into<String>, n: usize) -> Self {
        self.config
            .limits
            .methods
            .insert(service_method.into(), n.max(1));
        self
    }

    /// Turns on the adaptive concurrency limit (default off): the
    /// server-wide limit follows what the server achieves, from the
    /// latency and rate of the calls (brpc's auto concurrency limiter:
    /// the no-load latency times the peak rate, with headroom while the
    /// latency stays flat). When the offered load passes the server's
    /// capacity, the excess is refused at once and the admitted calls keep
    /// a low latency, where otherwise every call would queue until its
    /// caller gave up. It starts at `max(40, 2 x cores)`, never goes below
    /// the core count (at least 2) nor above
    /// [`max_concurrency`](Self::max_concurrency), and every 25 to 50 s
    /// halves the limit briefly to measure the no-load latency again. A
    /// burst past 1.4x the recent peak concurrency is partly refused until
    /// the limit has grown (within 100 to 500 calls).
    ///
    /// It also bounds how long a call may wait between its arrival and its
    /// handler (CoDel, as in Facebook's "Fail at Scale"): a server whose
    /// calls have all waited more than 5 ms for the last 100 ms has a
    /// standing queue, and refuses calls that waited more than 5 ms;
    /// otherwise it refuses only those that waited more than 100 ms. In a
    /// thread-per-connection server that is where queueing happens under
    /// overload (a connection's requests wait for the ones before them),
    /// and where the concurrency limit alone does not look.
    ///
    /// Costs each call two clock reads and a few atomic operations. Best
    /// with `max_queue_wait` zero.
    pub fn adaptive_concurrency(mut self, on: bool) -> Self {
        self.config.limits.adaptive = on;
        self
    }
}

/// The limits' settings, kept in the server's `Config`.
#[derive(Debug, Clone, Default)]
pub(crate) struct LimitConfig {
    /// `None`: [`default_max_concurrency`].
    max_concurrency: Option<usize>,
    max_queue_wait: Duration,
    methods: HashMap<String, usize>,
    adaptive: bool,
}

/// One limit: a count of calls holding a place, and the calls waiting.
///
/// Invariants: `running` is changed only by `try_take` (a CAS that never
/// takes it past `limit`) and `give_back`; it may exceed `limit` only when
/// the adaptive limit was lowered under it. Lost wake-ups are excluded by
/// the SeqCst order of the four steps: a waiter counts itself in
/// `waiters`, then tries (under `lock`); a giver decrements `running`,
/// then reads `waiters`. Either the waiter's try sees the place, or the
/// giver sees the waiter and notifies under `lock`, which the waiter holds
/// until it sleeps on `freed`.
#[derive(Debug)]
struct Gate {
    running: AtomicUsize,
    limit: AtomicUsize,
    waiters: AtomicUsize,
    lock: Mutex<()>,
    freed: Condvar,
}

impl Gate {
    fn new(limit: usize) -> Gate {
        Gate {
            running: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
            waiters: AtomicUsize::new(0),
            lock: Mutex::new(()),
            freed: Condvar::new(),
        }
    }

    /// Takes a place if one is free; `Err(running)` if not.
    #[inline]
    fn try_take(&self) -> Result<(), usize> {
        let limit = self.limit.load(Ordering::Relaxed);
        self.running
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < limit).then_some(n + 1)
            })
            .map(drop)
    }

    /// Takes a place, waiting for one until `until` at the latest.
    fn take(&self, until: Option<Instant>) -> Result<(), usize> {
        match self.try_take() {
            Ok(()) => Ok(()),
            Err(n) => match until {
                Some(until) if Instant::now() < until => self.wait_take(until),
                _ => Err(n),
            },
        }
    }

    fn wait_take(&self, until: Instant) -> Result<(), usize> {
        let mut guard = self.lock.lock();
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let taken = loop {
            if let Ok(()) = self.try_take() {
                break Ok(());
            }
            if self.freed.wait_until(&mut guard, until).timed_out() {
                // One more try: a notification that raced with the timeout
                // must not be lost to the other waiters.
                break self.try_take();
            }
        };
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        taken
    }

    #[inline]
    fn give_back(&self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            let _guard = self.lock.lock();
            self.freed.notify_one();
        }
    }
}

/// Server-wide admission state (one per `Server`, over all its listeners).
#[derive(Debug)]
pub(crate) struct Limiter {
    global: Gate,
    /// Per-method limits; empty (no lookup) unless some are set. Fixed at
    /// build, so read without a lock.
    methods: HashMap<String, Gate>,
    max_queue_wait: Duration,
    adaptive: Option<Adaptive>,
    /// Calls refused by any limit (for the metrics).
    refused: AtomicU64,
    /// The refusals' log: last written (ns since `epoch`) and the count then.
    epoch: Instant,
    logged_at: AtomicU64,
    logged_count: AtomicU64,
}

/// At most one refusal warning per this long.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// A call's place under the limits; given back on drop (after the reply is
/// queued), when it also gives the adaptive limit its latency sample.
#[derive(Debug)]
#[must_use = "the place is given back when the permit drops"]
pub(crate) struct Permit<'a> {
    limiter: &'a Limiter,
    method: Option<&'a Gate>,
    received: Instant,
    /// Whether the call's latency is a sample for the adaptive limit: not
    /// for calls that never reached their handler's work (refused by an
    /// interceptor, a body that did not decode, expired), whose
    /// microseconds would drag the no-load latency down and the limit
    /// with it.
    sample: bool,
}

impl Permit<'_> {
    /// Gives the adaptive limit no sample for this call (see `sample`).
    pub(crate) fn no_sample(&mut self) {
        self.sample = false;
    }
}

impl Drop for Permit<'_> {
    #[inline]
    fn drop(&mut self) {
        if let (Some(a), true) = (&self.limiter.adaptive, self.sample) {
            a.sample(self.received, &self.limiter.global.limit);
        }
        self.limiter.global.give_back();
        if let Some(m) = self.method {
            m.give_back();
        }
    }
}

/// Which limit refused a call, for its text.
enum Refusal {
    Server {
        adaptive: bool,
    },
    Method,
    /// Waited `.0` since its arrival, over the bound `.1` (`queue.rs`).
    Queued(Duration, Duration),
}

impl Limiter {
    pub(crate) fn new(cfg: &LimitConfig) -> Limiter {
        let cap = cfg
            .max_concurrency
            .unwrap_or_else(default_max_concurrency)
            .max(1);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let adaptive = cfg.adaptive.then(|| Adaptive::new(cores.max(2), cap));
        // The adaptive limit starts where brpc's does (40), so that a new
        // server's first burst is not refused before anything is measured.
        let start = match adaptive {
            Some(_) => 40.max(2 * cores).min(cap),
            None => cap,
        };
        Limiter {
            global: Gate::new(start),
            methods: cfg
                .methods
                .iter()
                .map(|(name, &n)| (name.clone(), Gate::new(n)))
                .collect(),
            max_queue_wait: cfg.max_queue_wait,
            adaptive,
            refused: AtomicU64::new(0),
            epoch: Instant::now(),
            logged_at: AtomicU64::new(0),
            logged_count: AtomicU64::new(0),
        }
    }

    /// Admits a call of `service_method` read at `received`, whose deadline
    /// is `deadline`, waiting for a place at most as long as the settings
    /// (and the deadline) allow. `Err`: the text of the `resource_exhausted`
    /// reply. Without queue-delay shedding, which needs the connection's
    /// state: the server admits through [`admit_on`](Self::admit_on).
    #[cfg(test)]
    pub(crate) fn admit(
        &self,
        service_method: &str,
        received: Instant,
        deadline: Option<Instant>,
    ) -> Result<Permit<'_>, String> {
        self.admit_with(None, service_method, received, deadline)
    }

    /// Whether queue-delay shedding is on (with `adaptive_concurrency`):
    /// then a connection's leader that is behind drains its socket, so
    /// that what waits there shows its age (`conn::read_request`).
    #[inline]
    pub(crate) fn sheds_queue(&self) -> bool {
        self.adaptive.is_some()
    }

    /// Like [`admit`](Self::admit), with the queue-delay state of the
    /// connection the call came on (when shedding is on): each connection's
    /// leader serves its own queue, and CoDel keeps its state per queue (a
    /// connection whose leader keeps up says nothing about another's
    /// standing queue).
    #[inline]
    pub(crate) fn admit_on(
        &self,
        conn_queue: &QueueShed,
        service_method: &str,
        received: Instant,
        deadline: Option<Instant>,
    ) -> Result<Permit<'_>, String> {
        let queue = self.sheds_queue().then_some(conn_queue);
        self.admit_with(queue, service_method, received, deadline)
    }

    #[inline]
    fn admit_with(
        &self,
        queue: Option<&QueueShed>,
        service_method: &str,
        received: Instant,
        deadline: Option<Instant>,
    ) -> Result<Permit<'_>, String> {
        if let Some(q) = queue {
            if let Err((waited, bound)) = q.check(received, Instant::now()) {
                let why = Refusal::Queued(waited, bound);
                return Err(self.refuse(service_method, 0, why, None, deadline));
            }
        }
        let method = if self.methods.is_empty() {
            None
        } else {
            self.methods.get(service_method)
        };
        // The fast path: a place at once and nothing else to look at.
        if method.is_none() && self.global.try_take().is_ok() {
            return Ok(Permit {
                limiter: self,
                method: None,
                received,
                sample: true,
            });
        }
        self.admit_slow(service_method, method, received, deadline)
    }

    #[cold]
    fn admit_slow<'a>(
        &'a self,
        service_method: &str,
        method: Option<&'a Gate>,
        received: Instant,
        deadline: Option<Instant>,
    ) -> Result<Permit<'a>, String> {
        let until = (!self.max_queue_wait.is_zero()).then(|| {
            let wait_end = received + self.max_queue_wait;
            deadline.map_or(wait_end, |d| d.min(wait_end))
        });
        if let Some(m) = method {
            if let Err(running) = m.take(until) {
                return Err(self.refuse(service_method, running, Refusal::Method, until, deadline));
            }
        }
        if let Err(running) = self.global.take(until) {
            if let Some(m) = method {
                m.give_back();
            }
            let why = Refusal::Server {
                adaptive: self.adaptive.is_some(),
            };
            return Err(self.refuse(service_method, running, why, until, deadline));
        }
        Ok(Permit {
            limiter: self,
            method,
            received,
            sample: true,
        })
    }

    /// Counts a refusal, logs it now and then, and gives its reply text.
    #[cold]
    fn refuse(
        &self,
        service_method: &str,
        running: usize,
        why: Refusal,
        until: Option<Instant>,
        deadline: Option<Instant>,
    ) -> String {
        let total = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let (of, knob) = match why {
            Refusal::Server { adaptive: false } => ("", "the limit (max_concurrency)"),
            Refusal::Server { adaptive: true } => ("", "the adaptive limit (adaptive_concurrency)"),
            Refusal::Method => (" of it", "its method's limit (method_concurrency)"),
            Refusal::Queued(..) => ("", ""),
        };
        let mut text = match why {
            Refusal::Queued(waited, bound) => format!(
                "rpc server: {service_method} refused: it waited {} since it arrived, over the {} \
                 a call may wait while the server is overloaded (adaptive_concurrency)",
                GoDuration(waited),
                GoDuration(bound)
            ),
            _ => {
                format!("rpc server: {service_method} refused: {running} calls{of} running, {knob}")
            }
        };
        if until.is_some() {
            if deadline.is_some_and(|d| Some(d) == until) {
                text.push_str("; its deadline came before a place");
            } else {
                text.push_str(&format!(
                    "; no place within {} (max_queue_wait)",
                    GoDuration(self.max_queue_wait)
                ));
            }
        }
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let last = self.logged_at.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= LOG_EVERY.as_nanos() as u64;
        if due
            && self
                .logged_at
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let before = self.logged_count.swap(total, Ordering::Relaxed);
            log::warn!(
                "{text} ({} calls refused by the concurrency limits since the last such warning)",
                total - before
            );
        }
        text
    }

    /// Calls refused by any limit so far (for the metrics).
    #[allow(dead_code)] // read by the tests now, by the metrics later
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The server-wide limit in force (changes when adaptive).
    #[allow(dead_code)] // read by the tests now, by the metrics later
    pub(crate) fn limit(&self) -> usize {
        self.global.limit.load(Ordering::Relaxed)
    }

    /// Handlers holding a place now.
    #[allow(dead_code)] // read by the tests now, by the metrics later
    pub(crate) fn running(&self) -> usize {
        self.global.running.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(f: impl FnOnce(&mut LimitConfig)) -> Limiter {
        let mut cfg = LimitConfig::default();
        f(&mut cfg);
        Limiter::new(&cfg)
    }

    #[test]
    fn refuses_past_the_limit_and_admits_after() {
        let l = limiter(|c| c.max_concurrency = Some(2));
        let now = Instant::now();
        let a = l.admit("A.B", now, None).unwrap();
        let _b = l.admit("A.B", now, None).unwrap();
        let e = l.admit("A.B", now, None).unwrap_err();
        assert_eq!(
            e,
            "rpc server: A.B refused: 2 calls running, the limit (max_concurrency)"
        );
        assert_eq!(l.refused(), 1);
        drop(a);
        assert_eq!(l.running(), 1);
        let _c = l.admit("A.B", now, None).unwrap();
    }

    #[test]
    fn method_limit_counts_its_own_calls() {
        let l = limiter(|c| {
            c.max_concurrency = Some(10);
            c.methods.insert("A.Slow".into(), 1);
        });
        let now = Instant::now();
        let s = l.admit("A.Slow", now, None).unwrap();
        let e = l.admit("A.Slow", now, None).unwrap_err();
        assert!(e.contains("method_concurrency"), "{e}");
        // Other methods are unaffected, and the refused call gave its
        // server-wide place back.
        let _f = l.admit("A.Fast", now, None).unwrap();
        assert_eq!(l.running(), 2);
        drop(s);
        let _s = l.admit("A.Slow", now, None).unwrap();
    }

    #[test]
    fn waits_for_a_place_within_the_bound() {
        let l = limiter(|c| {
            c.max_concurrency = Some(1);
            c.max_queue_wait = Duration::from_secs(60);
        });
        std::thread::scope(|s| {
            let p = l.admit("A.B", Instant::now(), None).unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            let l = &l;
            s.spawn(move || {
                let r = l.admit("A.B", Instant::now(), None).map(drop);
                tx.send(r).unwrap();
            });
            // The waiter is counted before it sleeps: then free the place.
            while l.global.waiters.load(Ordering::SeqCst) == 0 {
                std::thread::yield_now();
            }
            assert!(rx.try_recv().is_err(), "admitted past the limit");
            drop(p);
            // Woken by the drop, long before the wait ends.
            let r = rx.recv_timeout(Duration::from_secs(20));
            assert_eq!(r, Ok(Ok(())), "not woken when the place freed");
        });
        // The deadline bounds the wait, and the text says which ended it.
        let _p = l.admit("A.B", Instant::now(), None).unwrap();
        let t0 = Instant::now();
        let e = l
            .admit("A.B", t0, Some(t0 + Duration::from_millis(20)))
            .unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert!(e.ends_with("its deadline came before a place"), "{e}");
    }
}
