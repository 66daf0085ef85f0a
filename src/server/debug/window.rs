//! The dashboard's "last minute": a ring of per-second samples of every
//! method's counters, taken by the server's monitor thread (and by the
//! page itself), from which the page computes calls/s, error rate, mean,
//! p50/p99 and a sparkline over the last 60 s.
//!
//! The call path pays nothing for it: a sample only loads the atomic
//! counters each method keeps anyway (`MethodStats`). The ring's lock is
//! taken once a second by a monitor and by page requests, never by a call.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::server::stats::{bucket_upper, CODES};
use crate::server::Shared;

/// How far back "the last minute" reaches.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);
/// How often a sample is taken (at most; the monitor looks every tick).
const EVERY: Duration = Duration::from_secs(1);
/// The sparkline's points at most (one a second).
pub(crate) const SPARK_POINTS: usize = 60;
/// Samples kept: a minute of them, plus the one that starts the window.
const KEEP: usize = 62;
/// What the first latency bucket holds: every call under 2 µs (the
/// histogram counts whole microseconds, and 0 and 1 share bucket 0). A
/// quantile there is shown as "< 2µs", not as the bucket's nominal bound.
pub(crate) const FLOOR_US: f64 = 2.0;

/// One method's counters at a sample.
#[derive(Clone, Default)]
struct MethodSample {
    calls: u64,
    errors: u64,
    nanos: u64,
    /// Non-empty latency buckets, (index, count), by index.
    hist: Vec<(u16, u64)>,
}

/// Every method's counters at one instant.
struct Sample {
    at: Instant,
    methods: BTreeMap<String, MethodSample>,
    /// Calls to a service or method the server does not have.
    unknown: u64,
}

/// The page's own state, one per `Server`.
pub(crate) struct PageState {
    /// When the server was built: the page's uptime.
    pub(crate) started: Instant,
    /// Oldest first; at most `KEEP`.
    ring: Mutex<VecDeque<Sample>>,
}

impl Default for PageState {
    fn default() -> Self {
        PageState {
            started: Instant::now(),
            ring: Mutex::new(VecDeque::with_capacity(KEEP)),
        }
    }
}

fn read(shared: &Shared, at: Instant) -> Sample {
    let mut methods = BTreeMap::new();
    let mut hist = Vec::new();
    for (svc_name, svc) in shared.services.read().iter() {
        for (m_name, m) in &svc.methods {
            let (calls, errors, nanos) = m.stats.sample(&mut hist);
            methods.insert(
                format!("{svc_name}.{m_name}"),
                MethodSample {
                    calls,
                    errors,
                    nanos,
                    hist: hist.clone(),
                },
            );
        }
    }
    let unknown = (0..CODES)
        .map(|i| shared.counters.unknown.0[i].load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    Sample {
        at,
        methods,
        unknown,
    }
}

/// Takes a sample if the last one is a second old. Called by every
/// listener's monitor on each of its ticks; `try_lock` so that two
/// monitors (two listeners) never wait on each other or on a page.
pub(crate) fn tick(shared: &Shared) {
    if !shared.config.debug_pages {
        return;
    }
    let now = Instant::now();
    let Some(mut ring) = shared.page.ring.try_lock() else {
        return;
    };
    // A little early is fine: the monitor's tick is up to 20 ms late.
    if ring
        .back()
        .is_some_and(|s| now.saturating_duration_since(s.at) + EVERY / 20 < EVERY)
    {
        return;
    }
    let sample = read(shared, now);
    if ring.len() == KEEP {
        ring.pop_front();
    }
    ring.push_back(sample);
}

/// One method over the window.
#[derive(Default, Clone, serde::Serialize)]
pub(crate) struct MethodWindow {
    pub calls: u64,
    pub errors: u64,
    pub calls_per_s: f64,
    /// Errors over calls (0 to 1); 0 without calls.
    pub error_rate: f64,
    /// In microseconds, `None` without calls in the window. A value of
    /// `FLOOR_US` or less means "under `FLOOR_US`".
    pub mean_us: Option<f64>,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    /// Calls/s in each second of the window, oldest first (the sparkline).
    pub spark: Vec<f64>,
}

/// What the page shows over the window.
pub(crate) struct Window {
    /// How long it really covers (shorter for a young server).
    pub span: Duration,
    pub methods: BTreeMap<String, MethodWindow>,
    pub unknown: u64,
}

/// The window ending now: live counters against the sample that starts
/// the window (the oldest one at most `WINDOW` old; or zero at the
/// server's start for a server younger than that).
pub(crate) fn window(shared: &Shared) -> Window {
    let now = Instant::now();
    tick(shared);
    let live = read(shared, now);
    let ring = shared.page.ring.lock();
    let age = |t: Instant| now.saturating_duration_since(t);
    let zero = Sample {
        at: shared.page.started,
        methods: BTreeMap::new(),
        unknown: 0,
    };
    let base = pick_base(&ring, &zero, now);
    let span = age(base.at).max(Duration::from_millis(1));
    let empty = MethodSample::default();
    // The sparkline's second boundaries: the window's start, then each
    // sample after it, skipping one less than half a second after the
    // last kept (the first sample may come just after a young server's
    // start: its calls then count in the next second, not as a spike).
    let mut recent: Vec<&Sample> = vec![base];
    for s in ring.iter().filter(|s| s.at > base.at) {
        let last = recent[recent.len() - 1].at;
        if s.at.saturating_duration_since(last) >= EVERY / 2 {
            recent.push(s);
        }
    }
    let methods = live
        .methods
        .iter()
        .map(|(name, now_s)| {
            let then = base.methods.get(name).unwrap_or(&empty);
            let mut w = diff(now_s, then, span);
            // Per-second rates between consecutive samples in the window.
            w.spark = recent
                .windows(2)
                .map(|p| {
                    let calls = |s: &Sample| s.methods.get(name).map_or(0, |m| m.calls);
                    let dt = p[1].at.saturating_duration_since(p[0].at).as_secs_f64();
                    calls(p[1]).saturating_sub(calls(p[0])) as f64 / dt.max(1e-3)
                })
                .collect();
            // At most one point a second of the window.
            let extra = w.spark.len().saturating_sub(SPARK_POINTS);
            w.spark.drain(..extra);
            (name.clone(), w)
        })
        .collect();
    Window {
        span,
        methods,
        unknown: live.unknown.saturating_sub(base.unknown),
    }
}

/// The sample the window starts at. A server younger than the window
/// (`zero` is at its start): everything since it was built. Else the
/// oldest sample within the window; else (no monitor ran lately) the
/// youngest one, and the window is longer than a minute.
fn pick_base<'a>(ring: &'a VecDeque<Sample>, zero: &'a Sample, now: Instant) -> &'a Sample {
    let age = |t: Instant| now.saturating_duration_since(t);
    if age(zero.at) <= WINDOW {
        return zero;
    }
    ring.iter()
        .find(|s| age(s.at) <= WINDOW)
        .or(ring.back())
        .unwrap_or(zero)
}

fn diff(now: &MethodSample, then: &MethodSample, span: Duration) -> MethodWindow {
    let calls = now.calls.saturating_sub(then.calls);
    let errors = now.errors.saturating_sub(then.errors);
    // Bucket counts in the window: now minus then, bucket by bucket.
    let mut counts: Vec<(u16, u64)> = now
        .hist
        .iter()
        .map(|&(b, n)| {
            let before = then
                .hist
                .binary_search_by_key(&b, |&(i, _)| i)
                .map_or(0, |i| then.hist[i].1);
            (b, n.saturating_sub(before))
        })
        .collect();
    counts.retain(|&(_, n)| n > 0);
    let total: u64 = counts.iter().map(|&(_, n)| n).sum();
    let quantile = |q: f64| -> Option<f64> {
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for &(b, n) in &counts {
            seen += n;
            if seen >= rank {
                return Some(if b == 0 {
                    FLOOR_US
                } else {
                    bucket_upper(usize::from(b))
                });
            }
        }
        None
    };
    let nanos = now.nanos.saturating_sub(then.nanos);
    MethodWindow {
        calls,
        errors,
        calls_per_s: calls as f64 / span.as_secs_f64(),
        error_rate: if calls == 0 {
            0.0
        } else {
            errors as f64 / calls as f64
        },
        mean_us: (calls > 0).then(|| nanos as f64 / 1e3 / calls as f64),
        p50_us: quantile(0.50),
        p99_us: quantile(0.99),
        spark: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(calls: u64, errors: u64, hist: &[(u16, u64)]) -> MethodSample {
        MethodSample {
            calls,
            errors,
            nanos: calls * 500,
            hist: hist.to_vec(),
        }
    }

    #[test]
    fn the_window_counts_only_what_came_after_its_start() {
        // 100 slow calls before the window, 50 sub-microsecond ones in it.
        let then = sample(100, 10, &[(40, 100)]);
        let now = sample(150, 10, &[(0, 50), (40, 100)]);
        let w = diff(&now, &then, Duration::from_secs(50));
        assert_eq!((w.calls, w.errors), (50, 0));
        assert_eq!(w.calls_per_s, 1.0);
        assert_eq!(w.error_rate, 0.0);
        // Under the floor: shown as such, not as 1.25 µs.
        assert_eq!((w.p50_us, w.p99_us), (Some(FLOOR_US), Some(FLOOR_US)));
        assert_eq!(w.mean_us, Some(0.5));
    }

    #[test]
    fn the_window_starts_a_minute_ago_or_at_the_start() {
        let now = Instant::now();
        let at = |secs: u64| Sample {
            at: now - Duration::from_secs(secs),
            methods: BTreeMap::new(),
            unknown: secs,
        };
        let ring: VecDeque<Sample> = [90, 70, 59, 30, 1].into_iter().map(at).collect();
        // An old server: the oldest sample within the minute.
        assert_eq!(pick_base(&ring, &at(250), now).unknown, 59);
        // A young one: from its start.
        assert_eq!(pick_base(&ring, &at(40), now).unknown, 40);
        // No sample within the minute: the youngest there is.
        let stale: VecDeque<Sample> = [240, 200].into_iter().map(at).collect();
        assert_eq!(pick_base(&stale, &at(250), now).unknown, 200);
        assert_eq!(pick_base(&VecDeque::new(), &at(250), now).unknown, 250);
    }

    #[test]
    fn quantiles_and_error_rate_in_the_window() {
        let then = sample(0, 0, &[]);
        let now = sample(100, 5, &[(28, 98), (60, 2)]);
        let w = diff(&now, &then, Duration::from_secs(10));
        assert_eq!(w.error_rate, 0.05);
        assert_eq!(w.p50_us, Some(bucket_upper(28)));
        assert_eq!(w.p99_us, Some(bucket_upper(60)));
        let none = diff(&then, &then, Duration::from_secs(10));
        assert_eq!((none.p50_us, none.mean_us), (None, None));
    }
}
