//! Per-method call counters and a latency histogram, updated without locks,
//! and the server-wide counters the metrics read (`metrics.rs`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::code::Code;
pub(crate) use crate::code::{code_slot, CODES};

fn counters<const N: usize>() -> [AtomicU64; N] {
    std::array::from_fn(|_| AtomicU64::new(0))
}

/// Server-wide counters (every listener of a `Server`), for the metrics.
#[derive(Default)]
pub(crate) struct ServerCounters {
    /// Calls to a service or method the server does not have, by code
    /// (`not_found`, or `unavailable` while draining): one label value
    /// for all of them, whatever name the peer sent, so that a peer cannot
    /// grow the label set.
    pub unknown: UnknownCalls,
    /// Bytes read from and written to connections that have ended. Added
    /// under their listener's `conns` lock as a connection leaves it, and
    /// read under every listener's `conns` lock with the open connections'
    /// own counts, so that the sum never goes back.
    pub closed_read: AtomicU64,
    pub closed_written: AtomicU64,
    /// More metrics to serve at `GET /metrics` (`Server::serve_metrics`).
    #[cfg(feature = "metrics")]
    pub extra: parking_lot::Mutex<Vec<std::sync::Arc<dyn prometheus_client::collector::Collector>>>,
}

/// See [`ServerCounters::unknown`].
pub(crate) struct UnknownCalls(pub [AtomicU64; CODES]);

impl Default for UnknownCalls {
    fn default() -> Self {
        UnknownCalls(counters())
    }
}

/// Buckets per power of two: bucket bounds grow by 2^(1/4) (about 19%), so a
/// quantile read off the histogram is within that of the true value.
const SUB_BUCKETS: u32 = 4;
/// Covers 1 µs .. 2^40 µs (about 12 days) and more in the last bucket.
const BUCKETS: usize = (40 * SUB_BUCKETS) as usize + 1;

/// Counters of one method.
pub(crate) struct MethodStats {
    /// Calls whose handler ran (or was refused by an interceptor), by
    /// outcome ([`code_slot`]): their sum is the method's calls, all but
    /// slot 0 its errors. One counter per call rather than two.
    codes: [AtomicU64; CODES],
    /// Calls refused before their handler ran (bad `Meta`, shed by the
    /// limits, refused while draining), by code; not in `codes`.
    refused: [AtomicU64; CODES],
    expired: AtomicU64,
    total_nanos: AtomicU64,
    latency: [AtomicU64; BUCKETS],
}

impl Default for MethodStats {
    fn default() -> Self {
        MethodStats {
            codes: counters(),
            refused: counters(),
            expired: AtomicU64::new(0),
            total_nanos: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

fn bucket_of(micros: u64) -> usize {
    if micros <= 1 {
        return 0;
    }
    let log2 = 63 - micros.leading_zeros();
    // The SUB_BUCKETS bits below the top bit pick the sub-bucket.
    let sub = if log2 >= 2 {
        (micros >> (log2 - 2)) & 0b11
    } else {
        (micros << (2 - log2)) & 0b11
    } as u32;
    ((log2 * SUB_BUCKETS + sub) as usize).min(BUCKETS - 1)
}

/// The upper bound, in microseconds, of what a bucket holds.
pub(crate) fn bucket_upper(b: usize) -> f64 {
    let log2 = (b as u32) / SUB_BUCKETS;
    let sub = (b as u32) % SUB_BUCKETS;
    2f64.powi(log2 as i32) * (1.0 + f64::from(sub + 1) / f64::from(SUB_BUCKETS))
}

impl MethodStats {
    /// A call answered with `code` (`None`: success) after `elapsed`.
    pub(crate) fn record(&self, elapsed: Duration, code: Option<&Code>) {
        self.codes[code_slot(code)].fetch_add(1, Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.total_nanos.fetch_add(nanos, Relaxed);
        self.latency[bucket_of(nanos / 1_000)].fetch_add(1, Relaxed);
    }

    /// A call answered `deadline_exceeded` before its handler ran: not a
    /// call of the method (its handler never ran), counted apart.
    pub(crate) fn record_expired(&self) {
        self.expired.fetch_add(1, Relaxed);
    }

    /// A call refused with `code` before its handler ran (other than
    /// expired): counted apart from the method's calls.
    pub(crate) fn record_refused(&self, code: &Code) {
        self.refused[code_slot(Some(code))].fetch_add(1, Relaxed);
    }

    #[cfg(feature = "metrics")]
    /// What the metrics read: calls by code, refused calls included
    /// (expired ones as `deadline_exceeded`), the latency histogram
    /// re-binned at the bucket bounds nearest to `targets` (microseconds),
    /// and how many were shed and timed out.
    pub(crate) fn metrics(&self, targets: &[f64]) -> MethodMetrics {
        let codes: [u64; CODES] =
            std::array::from_fn(|i| self.codes[i].load(Relaxed) + self.refused[i].load(Relaxed));
        let expired = self.expired.load(Relaxed);
        let mut calls = codes;
        calls[code_slot(Some(&Code::DeadlineExceeded))] += expired;
        let counts: Vec<u64> = self.latency.iter().map(|c| c.load(Relaxed)).collect();
        // Bounds that are bucket bounds, so that each count is exact: the
        // one nearest to each target, strictly increasing.
        let mut buckets = Vec::with_capacity(targets.len() + 1);
        let (mut from, mut last) = (0, None);
        for &t in targets {
            let b = (0..BUCKETS - 1)
                .min_by(|&a, &b| {
                    (bucket_upper(a) - t)
                        .abs()
                        .total_cmp(&(bucket_upper(b) - t).abs())
                })
                .unwrap_or(0);
            if last.is_some_and(|l| b <= l) {
                continue;
            }
            buckets.push((bucket_upper(b) / 1e6, counts[from..=b].iter().sum()));
            (from, last) = (b + 1, Some(b));
        }
        buckets.push((f64::MAX, counts[from..].iter().sum()));
        MethodMetrics {
            calls,
            latency_sum: self.total_nanos.load(Relaxed) as f64 / 1e9,
            latency: buckets,
            shed: self.refused[code_slot(Some(&Code::ResourceExhausted))].load(Relaxed),
            timed_out: expired + self.codes[code_slot(Some(&Code::DeadlineExceeded))].load(Relaxed),
        }
    }

    /// What the dashboard samples (`debug/window.rs`): calls whose
    /// handler ran, those that failed, their summed latency in
    /// nanoseconds, and the latency histogram's non-empty buckets
    /// (bucket index, count) into `hist`. Loads only: nothing for calls.
    #[cfg(feature = "debug-page")]
    pub(crate) fn sample(&self, hist: &mut Vec<(u16, u64)>) -> (u64, u64, u64) {
        hist.clear();
        for (b, c) in self.latency.iter().enumerate() {
            let n = c.load(Relaxed);
            if n > 0 {
                hist.push((b as u16, n));
            }
        }
        let ok = self.codes[0].load(Relaxed);
        let calls: u64 = ok + self.codes[1..].iter().map(|c| c.load(Relaxed)).sum::<u64>();
        (calls, calls - ok, self.total_nanos.load(Relaxed))
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let counts: Vec<u64> = self.latency.iter().map(|c| c.load(Relaxed)).collect();
        let quantile = |q: f64| -> Option<Duration> {
            let total: u64 = counts.iter().sum();
            if total == 0 {
                return None;
            }
            let rank = ((total as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (b, &c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return Some(Duration::from_nanos((bucket_upper(b) * 1_000.0) as u64));
                }
            }
            None
        };
        let codes: Vec<u64> = self.codes.iter().map(|c| c.load(Relaxed)).collect();
        let calls = codes.iter().sum();
        StatsSnapshot {
            calls,
            errors: calls - codes[0],
            expired: self.expired.load(Relaxed),
            total_time: Duration::from_nanos(self.total_nanos.load(Relaxed)),
            p50: quantile(0.50),
            p99: quantile(0.99),
        }
    }
}

/// A method's counters as the metrics show them (`MethodStats::metrics`).
#[cfg(feature = "metrics")]
pub(crate) struct MethodMetrics {
    /// Calls answered, by [`CODE_LABELS`] slot, refused ones included.
    pub calls: [u64; CODES],
    /// The latency histogram of calls whose handler ran: (upper bound in
    /// seconds, count in the bucket, not cumulative), the last bound
    /// `f64::MAX` (+Inf); and the sum of latencies in seconds.
    pub latency: Vec<(f64, u64)>,
    pub latency_sum: f64,
    /// Refused `resource_exhausted` by the limits.
    pub shed: u64,
    /// Answered `deadline_exceeded`, run or not.
    pub timed_out: u64,
}

/// What a method has served so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Calls answered, errors included.
    pub calls: u64,
    /// Calls answered with an error.
    pub errors: u64,
    /// Calls answered `deadline_exceeded` before their handler ran (their
    /// deadline passed while they waited); not counted in `calls`.
    pub expired: u64,
    /// Time spent on the method's calls, from each request's arrival to its
    /// reply, summed over calls (latencies below are measured the same way).
    pub total_time: Duration,
    /// Median latency (an upper bound within 19%), if any call was made.
    pub p50: Option<Duration>,
    /// 99th percentile latency (an upper bound within 19%).
    pub p99: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_bound_their_values() {
        let mut last = 0;
        for micros in [0u64, 1, 2, 3, 5, 8, 13, 100, 1_000, 12_345, 1 << 30] {
            let b = bucket_of(micros);
            assert!(b >= last, "{micros}");
            assert!(bucket_upper(b) >= micros as f64, "{micros} in bucket {b}");
            assert!(
                bucket_upper(b) <= (micros as f64).max(1.0) * 1.5 + 1.0,
                "{micros}"
            );
            last = b;
        }
    }

    #[test]
    fn quantiles_come_from_recorded_calls() {
        let s = MethodStats::default();
        for _ in 0..98 {
            s.record(Duration::from_micros(100), None);
        }
        s.record(Duration::from_millis(50), Some(&Code::Internal));
        s.record(Duration::from_millis(50), Some(&Code::Internal));
        let snap = s.snapshot();
        assert_eq!((snap.calls, snap.errors), (100, 2));
        let p50 = snap.p50.unwrap();
        assert!(p50 >= Duration::from_micros(100) && p50 < Duration::from_micros(125));
        assert!(snap.p99.unwrap() >= Duration::from_millis(50));
    }

    #[test]
    fn code_slots_are_bounded_and_named() {
        use crate::code::CODE_LABELS;
        assert_eq!(code_slot(None), 0);
        for (i, l) in CODE_LABELS.iter().enumerate().take(CODES - 1).skip(1) {
            assert_eq!(code_slot(Code::parse(l).as_ref()), i, "{l}");
        }
        assert_eq!(code_slot(Some(&Code::Other("x".into()))), CODES - 1);
        assert_eq!(code_slot(Some(&Code::Goaway)), CODES - 1);
    }

    #[cfg(feature = "metrics")]
    #[test]
    fn metrics_rebin_exactly_at_bucket_bounds() {
        let s = MethodStats::default();
        // 40 µs is under the first bound (48 µs), 60 µs and 90 µs under
        // the second (96 µs), 20 s past the last (10.49 s).
        for us in [40, 60, 90, 20_000_000] {
            s.record(Duration::from_micros(us), None);
        }
        s.record_expired();
        s.record_refused(&Code::ResourceExhausted);
        let m = s.metrics(&[50.0, 100.0, 10e6]);
        assert_eq!(m.latency.len(), 4);
        assert_eq!(m.latency[0], (48e-6, 1));
        assert_eq!(m.latency[1], (96e-6, 2));
        assert_eq!(m.latency[2].1, 0);
        assert!((m.latency[2].0 - 10.48576).abs() < 1e-9);
        assert_eq!(m.latency[3], (f64::MAX, 1));
        assert!((m.latency_sum - 20.00019).abs() < 1e-9);
        assert_eq!((m.calls[0], m.calls[3], m.calls[4]), (4, 1, 1));
        assert_eq!((m.shed, m.timed_out), (1, 1));
    }
}
