//! Per-method call counters and a latency histogram, updated without locks.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Buckets per power of two: bucket bounds grow by 2^(1/4) (about 19%), so a
/// quantile read off the histogram is within that of the true value.
const SUB_BUCKETS: u32 = 4;
/// Covers 1 µs .. 2^40 µs (about 12 days) and more in the last bucket.
const BUCKETS: usize = (40 * SUB_BUCKETS) as usize + 1;

/// Counters of one method.
pub(crate) struct MethodStats {
    calls: AtomicU64,
    errors: AtomicU64,
    expired: AtomicU64,
    total_nanos: AtomicU64,
    latency: [AtomicU64; BUCKETS],
}

impl Default for MethodStats {
    fn default() -> Self {
        MethodStats {
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
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
fn bucket_upper(b: usize) -> f64 {
    let log2 = (b as u32) / SUB_BUCKETS;
    let sub = (b as u32) % SUB_BUCKETS;
    2f64.powi(log2 as i32) * (1.0 + f64::from(sub + 1) / f64::from(SUB_BUCKETS))
}

impl MethodStats {
    pub(crate) fn record(&self, elapsed: Duration, failed: bool) {
        self.calls.fetch_add(1, Relaxed);
        if failed {
            self.errors.fetch_add(1, Relaxed);
        }
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.total_nanos.fetch_add(nanos, Relaxed);
        self.latency[bucket_of(nanos / 1_000)].fetch_add(1, Relaxed);
    }

    /// A call answered `deadline_exceeded` before its handler ran: not a
    /// call of the method (its handler never ran), counted apart.
    pub(crate) fn record_expired(&self) {
        self.expired.fetch_add(1, Relaxed);
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
        StatsSnapshot {
            calls: self.calls.load(Relaxed),
            errors: self.errors.load(Relaxed),
            expired: self.expired.load(Relaxed),
            total_time: Duration::from_nanos(self.total_nanos.load(Relaxed)),
            p50: quantile(0.50),
            p99: quantile(0.99),
        }
    }
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
            s.record(Duration::from_micros(100), false);
        }
        s.record(Duration::from_millis(50), true);
        s.record(Duration::from_millis(50), true);
        let snap = s.snapshot();
        assert_eq!((snap.calls, snap.errors), (100, 2));
        let p50 = snap.p50.unwrap();
        assert!(p50 >= Duration::from_micros(100) && p50 < Duration::from_micros(125));
        assert!(snap.p99.unwrap() >= Duration::from_millis(50));
    }
}
