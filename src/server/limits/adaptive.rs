//! The adaptive concurrency limit (`adaptive_concurrency`): the server-wide
//! limit follows what the server can actually do, measured from the calls'
//! latency and rate, so that past its capacity the excess is refused at
//! once instead of waiting in a queue until every caller has given up.
//!
//! # What it follows
//!
//! brpc's auto concurrency limiter (apache/brpc,
//! docs/en/auto_concurrency_limiter.md and
//! src/brpc/policy/auto_concurrency_limiter.cpp). By Little's law the
//! concurrency a server holds without queueing is `noload_latency *
//! peak_qps`; each sample window (at least 100 calls, and 1 s or 500
//! calls) sets
//!
//! ```text
//! noload  = min_latency * peak_qps
//! limit   = noload * (2 + alpha - latency / min_latency)   if latency < (1 + alpha) * min_latency
//!         = noload                                         otherwise (overload)
//! ```
//!
//! where `latency` is the window's mean, `min_latency` an EMA that only
//! moves down (smoothing 0.9), `peak_qps` the largest rate of the last 50
//! windows with an EMA when it falls, `alpha` 0.4 (brpc's
//! `auto_cl_overload_threshold`). The `alpha` headroom lets the limit
//! grow by up to 1.4x a window while latency stays flat, and holds it at
//! the no-load concurrency once latency rises. Because under steady
//! overload every latency includes queueing, `min_latency` would creep up;
//! so every 25 to 50 s (random, so servers behind one balancer do not
//! re-measure together) the limit is halved, `min_latency` forgotten, and
//! re-measured from the first window that starts once the calls admitted
//! before the cut have had time to finish (twice the mean latency).
//!
//! Netflix's concurrency-limits Gradient2 (`limit = limit * long_rtt /
//! short_rtt + queue_size`, smoothed) was the alternative; brpc's own
//! comparison (same document) explains why we did not take it: its
//! `limit / latency` term has no steady relation to the rate, and its
//! `sqrt(limit)` queue allowance lets the latency grow with the limit.
//!
//! # Where we differ
//!
//! - Server-wide, not per method (brpc's auto limiter is per method):
//!   handlers share the cores and threads; a per-method fixed limit
//!   (`method_concurrency`) still applies inside it.
//! - The limit starts at `max(40, 2 x cores)` (brpc: 40) but its floor is
//!   the core count (at least 2; brpc: 40), and it never goes past
//!   `max_concurrency`, which stays a hard cap (brpc issue 1334 asks for
//!   the same). A floor of 40 would make the limit useless here: a
//!   thread-per-connection server with a few connections never runs 40
//!   handlers at once, its queue is in the sockets, and for CPU-bound
//!   handlers on 2 cores the no-load concurrency is about 2 (measured:
//!   the overload point of benches/overload.sh only sheds, and keeps
//!   goodput, with the floor near the core count). The price: a burst
//!   past 1.4x the recent peak concurrency is partly refused until the
//!   limit has grown (a window: 100 to 500 calls).
//! - `min_latency` moves down faster (EMA weight 0.5, brpc: 0.9): the
//!   limit starts at 40, so when a server starts into overload its first
//!   windows measure the overloaded latency (4 ms for a 0.2 ms handler in
//!   the overload benchmark), and with 0.9 the limit took some 40 windows
//!   (3 s) to come down, long enough for the sockets to fill with calls
//!   that then all missed their deadline.
//! - Failed calls are not told apart: a permit does not know its outcome
//!   (brpc punishes failed calls' latency). Refused calls take no sample.
//! - Every admitted call is a sample (two relaxed atomic adds and a clock
//!   read when its permit drops; the window is closed under a `try_lock`,
//!   by whichever thread first sees it full, never waiting), where brpc
//!   samples at most one call every 100 us.
//!
//! Latency runs from the request's receipt to the permit's drop (after the
//! reply is queued); time a request spent in its socket before it was read
//! is not seen (see `server/mod.rs` on how connections are read).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A window closes with at least this many samples (brpc: 100)...
const MIN_SAMPLES: u64 = 100;
/// ...once it is this old (brpc: 1 s)...
const WINDOW: Duration = Duration::from_secs(1);
/// ...or at once with this many (brpc: 500).
const MAX_SAMPLES: u64 = 500;
/// Latency headroom before the load counts as overload (brpc: 0.4).
const ALPHA: f64 = 0.4;
/// EMA weight kept when `peak_qps` moves down (brpc: 0.9).
const SMOOTH: f64 = 0.9;
/// EMA weight kept when `min_latency` moves down (brpc: 0.9; see the
/// module doc).
const SMOOTH_MIN: f64 = 0.5;
/// Windows over which the peak rate is taken (brpc: 50).
const QPS_WINDOWS: usize = 50;
/// Re-measurement of the no-load latency: every 25 to 50 s (brpc: the same).
const RESET_EVERY: Duration = Duration::from_secs(50);

/// The estimate, updated once a window (under a `try_lock`).
#[derive(Debug)]
pub(crate) struct Estimator {
    floor: usize,
    cap: usize,
    /// EMA of the smaller window latencies, in ns; `None` until measured
    /// (at start, and while re-measuring).
    min_latency: Option<f64>,
    /// Rates of the last windows (a ring) and their smoothed peak.
    qps: [f64; QPS_WINDOWS],
    qps_next: usize,
    peak_qps: f64,
    /// When (ns on the limiter's clock) the next re-measurement starts...
    reset_at: u64,
    /// ...and the first window start from which it measures again.
    measure_from: u64,
    /// Re-measurement period, randomized in [half, whole).
    reset_every: Duration,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Estimator {
    pub(crate) fn new(floor: usize, cap: usize, reset_every: Duration, now: u64) -> Estimator {
        let mut e = Estimator {
            floor: floor.min(cap).max(1),
            cap,
            min_latency: None,
            qps: [0.0; QPS_WINDOWS],
            qps_next: 0,
            peak_qps: 0.0,
            reset_at: 0,
            measure_from: 0,
            reset_every,
        };
        e.schedule_reset(now);
        e
    }

    /// The floor, where the unit tests start.
    #[cfg(test)]
    fn initial(&self) -> usize {
        self.floor
    }

    fn schedule_reset(&mut self, now: u64) {
        let half = nanos(self.reset_every) / 2;
        self.reset_at = now.saturating_add(half + rand::random_range(0..half.max(1)));
    }

    /// Takes one closed window (`samples` calls ended between `start` and
    /// `end`, ns on the limiter's clock, with mean latency `mean_ns`) and
    /// gives the new limit, if it changes.
    pub(crate) fn window(
        &mut self,
        start: u64,
        end: u64,
        samples: u64,
        mean_ns: f64,
        limit: usize,
    ) -> Option<usize> {
        let secs = end.saturating_sub(start).max(1) as f64 / 1e9;
        self.push_qps(samples as f64 / secs);
        if end >= self.reset_at {
            // Re-measure: cut the limit so queues drain, then take the
            // no-load latency again from a window that starts after that.
            self.schedule_reset(end);
            self.min_latency = None;
            self.measure_from = end + nanos(Duration::from_nanos((2.0 * mean_ns) as u64));
            return Some((limit / 2).max(self.floor));
        }
        if start < self.measure_from {
            return None;
        }
        let min = match self.min_latency {
            None => mean_ns,
            Some(m) if mean_ns < m => m * SMOOTH_MIN + mean_ns * (1.0 - SMOOTH_MIN),
            Some(m) => m,
        };
        self.min_latency = Some(min);
        let noload = min / 1e9 * self.peak_qps;
        let next = if mean_ns < (1.0 + ALPHA) * min {
            noload * (2.0 + ALPHA - mean_ns / min)
        } else {
            noload
        };
        let next = (next.ceil() as usize).clamp(self.floor, self.cap);
        (next != limit).then_some(next)
    }

    fn push_qps(&mut self, qps: f64) {
        self.qps[self.qps_next] = qps;
        self.qps_next = (self.qps_next + 1) % QPS_WINDOWS;
        let peak = self.qps.iter().copied().fold(0.0, f64::max);
        self.peak_qps = if peak >= self.peak_qps {
            peak
        } else {
            self.peak_qps * SMOOTH + peak * (1.0 - SMOOTH)
        };
    }
}

/// The sample path: permits add their latency here; a full window goes to
/// the estimator, which may move the limit.
#[derive(Debug)]
pub(crate) struct Adaptive {
    epoch: Instant,
    /// The current window: its start (ns since `epoch`), samples and their
    /// latencies' sum. Added to lock-free; taken (swapped to zero) by the
    /// thread holding `estimator`, so a sample landing between the two
    /// swaps counts in the next window's sum or count only: harmless.
    window_start: AtomicU64,
    count: AtomicU64,
    sum_ns: AtomicU64,
    estimator: Mutex<Estimator>,
}

impl Adaptive {
    /// An adaptive limit between `floor` and `cap`.
    pub(crate) fn new(floor: usize, cap: usize) -> Adaptive {
        Adaptive {
            epoch: Instant::now(),
            window_start: AtomicU64::new(0),
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
            estimator: Mutex::new(Estimator::new(floor, cap, RESET_EVERY, 0)),
        }
    }

    /// One call's latency, from its receipt to now; may close the window
    /// and store a new limit in `limit`. Never blocks.
    pub(crate) fn sample(&self, received: Instant, limit: &AtomicUsize) {
        let now = Instant::now();
        let latency = nanos(now.saturating_duration_since(received));
        self.sum_ns.fetch_add(latency, Ordering::Relaxed);
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        if n < MIN_SAMPLES {
            return;
        }
        let now = nanos(now.saturating_duration_since(self.epoch));
        let full = |n: u64, start: u64| {
            n >= MAX_SAMPLES || (n >= MIN_SAMPLES && now.saturating_sub(start) >= nanos(WINDOW))
        };
        if !full(n, self.window_start.load(Ordering::Relaxed)) {
            return;
        }
        // Whoever sees the window full first closes it; the others go on.
        let Some(mut est) = self.estimator.try_lock() else {
            return;
        };
        // Checked again under the lock: another thread may just have
        // closed this window.
        let start = self.window_start.load(Ordering::Relaxed);
        if !full(self.count.load(Ordering::Relaxed), start) {
            return;
        }
        let n = self.count.swap(0, Ordering::Relaxed);
        let sum = self.sum_ns.swap(0, Ordering::Relaxed);
        self.window_start.store(now, Ordering::Relaxed);
        let current = limit.load(Ordering::Relaxed);
        if let Some(next) = est.window(start, now, n, sum as f64 / n as f64, current) {
            limit.store(next, Ordering::Relaxed);
            log::debug!(
                "rpc server: adaptive concurrency limit {current} -> {next} \
                 (min latency {:?}, peak {:.0} calls/s)",
                est.min_latency.map(|m| Duration::from_nanos(m as u64)),
                est.peak_qps
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic server on `cores` cores whose calls each need `work`
    /// of CPU: with `c` calls admitted at once, each takes
    /// `work * max(1, c / cores)` (the cores are shared), or `work` for an
    /// I/O-bound service (`io`: latency does not grow with `c`).
    struct Sim {
        est: Estimator,
        limit: usize,
        now: u64,
    }

    impl Sim {
        fn new(reset_every: Duration) -> Sim {
            let est = Estimator::new(4, 10_000, reset_every, 0);
            let limit = est.initial();
            Sim { est, limit, now: 0 }
        }

        /// One window with `offered` callers keeping a call each in flight
        /// (closed loop). Returns the window's mean latency in ns.
        fn step(&mut self, offered: usize, work_ns: f64, cores: f64, io: bool) -> f64 {
            let c = offered.min(self.limit).max(1) as f64;
            let latency = if io {
                work_ns
            } else {
                work_ns * (c / cores).max(1.0)
            };
            let qps = c / (latency / 1e9);
            let samples = MAX_SAMPLES;
            let dur = (samples as f64 / qps * 1e9) as u64;
            let start = self.now;
            self.now += dur.max(1);
            if let Some(next) = self
                .est
                .window(start, self.now, samples, latency, self.limit)
            {
                self.limit = next;
            }
            latency
        }
    }

    #[test]
    fn grows_when_latency_stays_flat() {
        // An I/O-bound service (10 ms whatever the concurrency) with 300
        // callers: the limit grows from its floor to admit them all.
        let mut s = Sim::new(Duration::from_secs(3600));
        for _ in 0..40 {
            s.step(300, 10e6, 2.0, true);
        }
        assert!(s.limit >= 300, "limit {} did not grow to 300", s.limit);
    }

    #[test]
    fn drops_under_overload_and_recovers() {
        let mut s = Sim::new(Duration::from_secs(3600));
        // Grow first: 500 callers of an I/O-bound service.
        for _ in 0..60 {
            s.step(500, 10e6, 2.0, true);
        }
        let grown = s.limit;
        assert!(grown >= 500, "limit {grown} did not grow");
        // Now the same server turns CPU-bound (200 us of CPU per call on 2
        // cores) under 1,000 callers: the latency (queueing for the cores)
        // rises and the limit must come down, bounding the latency.
        let mut last = 0.0;
        for _ in 0..200 {
            last = s.step(1_000, 200e3, 2.0, false);
        }
        assert!(
            s.limit < grown / 4,
            "limit {} did not drop from {grown} under overload",
            s.limit
        );
        // The admitted calls' latency is bounded by the limit: far below
        // what 1,000 calls sharing 2 cores would take (100 ms).
        assert!(last < 20e6, "latency {last} ns under the limit");
        // Load becomes I/O-bound again: the limit recovers.
        for _ in 0..60 {
            s.step(500, 10e6, 2.0, true);
        }
        assert!(s.limit >= 500, "limit {} did not recover", s.limit);
    }

    #[test]
    fn remeasures_min_latency() {
        // With min latency first measured under overload (40 calls on 2
        // cores, 20x the no-load latency), only the periodic
        // re-measurement brings it (and with it the limit) down.
        let reset = Duration::from_millis(200);
        let mut with = Sim::new(reset);
        with.limit = 40;
        let mut without = Sim::new(Duration::from_secs(3600));
        without.limit = 40;
        let (mut m_with, mut m_without) = (f64::MAX, f64::MAX);
        for _ in 0..3_000 {
            with.step(1_000, 200e3, 2.0, false);
            without.step(1_000, 200e3, 2.0, false);
            // (None while re-measuring.)
            m_with = with.est.min_latency.unwrap_or(m_with);
            m_without = without.est.min_latency.unwrap_or(m_without);
        }
        assert!(
            m_with < m_without,
            "re-measured min latency {m_with} not below {m_without}"
        );
    }

    #[test]
    fn stays_within_floor_and_cap() {
        let mut e = Estimator::new(4, 50, Duration::from_secs(3600), 0);
        let mut limit = e.initial();
        let mut now = 0;
        for _ in 0..100 {
            // Latency flat, rate huge: the cap holds.
            if let Some(n) = e.window(now, now + 1_000_000, 500, 1e6, limit) {
                limit = n;
            }
            now += 1_000_000;
        }
        assert_eq!(limit, 50);
        for _ in 0..100 {
            // Latency 100x: overload; the floor holds.
            if let Some(n) = e.window(now, now + 1_000_000_000, 100, 1e8, limit) {
                limit = n;
            }
            now += 1_000_000_000;
        }
        assert_eq!(limit, 4);
    }
}
