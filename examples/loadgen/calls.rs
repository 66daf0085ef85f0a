//! What one loadgen call is (method, arguments, deadline, whether it is a
//! slow one), how its outcome is classified, and the tally a run's JSON
//! line is computed from. Shared by the closed loop (`examples/loadgen.rs`)
//! and the open loop (`open_loop.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use geerpc::{Client, Error, RemoteKind, XClient};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SumArgs {
    pub num1: i64,
    pub num2: i64,
}

/// Where calls go: one server, or the instances a registry lists.
#[derive(Clone)]
pub enum Target {
    Direct(Client),
    Registry(Arc<XClient>),
}

impl Target {
    /// One blocking call, bounded by `deadline` if there is one. The
    /// XClient has no deadline form: it gets the time left as a timeout.
    fn call<A, R>(&self, method: &str, args: &A, deadline: Option<Instant>) -> geerpc::Result<R>
    where
        A: Serialize + ?Sized,
        R: serde::de::DeserializeOwned + Send + 'static,
    {
        match (self, deadline) {
            (Target::Direct(c), None) => c.call(method, args),
            (Target::Direct(c), Some(d)) => c.call_deadline(method, args, d),
            (Target::Registry(x), None) => x.call(method, args),
            (Target::Registry(x), Some(d)) => {
                x.call_timeout(method, args, d.saturating_duration_since(Instant::now()))
            }
        }
    }
}

/// What a caller calls (`--method`, `--arg`, `--payload`).
#[derive(Clone)]
pub enum Kind {
    /// Arith.Sum with varying arguments, the reply checked.
    Sum,
    /// Echo.Echo of this string.
    Echo(String),
    /// Arith.Work: burn the server's CPU for N microseconds.
    Work(i64),
    /// Arith.Sleep: the handler sleeps N milliseconds.
    Sleep(i64),
}

impl Kind {
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Sum => "sum",
            Kind::Echo(_) => "echo",
            Kind::Work(_) => "work",
            Kind::Sleep(_) => "sleep",
        }
    }
}

/// How a call ended.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The right reply.
    Good,
    /// A reply, but not the one expected.
    Wrong,
    /// The client's deadline ran out, or the server answered
    /// `deadline_exceeded` / a handle timeout.
    Timeout,
    /// The server refused it with `resource_exhausted`.
    Shed,
    /// Any other error.
    Failed,
}

fn classify<R: PartialEq>(result: geerpc::Result<R>, want: &R) -> Outcome {
    match result {
        Ok(v) if v == *want => Outcome::Good,
        Ok(_) => Outcome::Wrong,
        Err(Error::Timeout { .. }) => Outcome::Timeout,
        Err(e) => match e.remote_kind() {
            Some(RemoteKind::ResourceExhausted) => Outcome::Shed,
            Some(RemoteKind::HandleTimeout) => Outcome::Timeout,
            _ => Outcome::Failed,
        },
    }
}

/// One caller's state: its next request, and its own random stream for
/// picking the slow calls (no shared state between callers).
pub struct Caller {
    n: i64,
    kind: Kind,
    /// A call is slow when the next random number is below this
    /// (`--slow-ratio` scaled to u64); 0: none is.
    slow_below: u64,
    slow_ms: i64,
    rng: u64,
}

impl Caller {
    /// Caller number `i`; `slow` is `--slow-ratio` and `--slow-ms`.
    pub fn new(i: usize, kind: Kind, slow: Option<(f64, i64)>) -> Caller {
        let (ratio, slow_ms) = slow.unwrap_or((0.0, 0));
        Caller {
            n: (i as i64) << 32,
            kind,
            // ratio is in (0, 1]; 1.0 saturates to u64::MAX (every call).
            slow_below: (ratio * u64::MAX as f64) as u64,
            slow_ms,
            // xorshift needs a non-zero seed; distinct per caller.
            rng: (0x9E37_79B9_7F4A_7C15 ^ (i as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9)) | 1,
        }
    }

    /// xorshift64*: cheap, and good enough to pick 1% of calls.
    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Makes one call; whether it was a slow one, and how it ended.
    pub fn call(&mut self, target: &Target, deadline: Option<Instant>) -> (Outcome, bool) {
        self.n = self.n.wrapping_add(1);
        if self.slow_below > 0 && self.next_random() < self.slow_below {
            let args = SumArgs {
                num1: self.slow_ms,
                num2: 0,
            };
            let r = target.call::<_, i64>("Arith.Sleep", &args, deadline);
            return (classify(r, &self.slow_ms), true);
        }
        let outcome = match &self.kind {
            Kind::Sum => {
                let args = SumArgs {
                    num1: self.n,
                    num2: self.n * 3,
                };
                classify(target.call("Arith.Sum", &args, deadline), &(self.n * 4))
            }
            Kind::Echo(p) => classify(target.call::<_, String>("Echo.Echo", p, deadline), p),
            Kind::Work(us) => {
                let args = SumArgs { num1: *us, num2: 0 };
                classify(target.call("Arith.Work", &args, deadline), us)
            }
            Kind::Sleep(ms) => {
                let args = SumArgs { num1: *ms, num2: 0 };
                classify(target.call("Arith.Sleep", &args, deadline), ms)
            }
        };
        (outcome, false)
    }
}

/// Latencies are kept in nanoseconds with two flag bits on top, so that
/// the hot loop makes one push per call as before; the flags are sorted
/// out after the run.
const FAILED: u64 = 1 << 63;
const SLOW: u64 = 1 << 62;
const NANOS: u64 = SLOW - 1;

/// What one caller counted.
#[derive(Default)]
pub struct Tally {
    lat: Vec<u64>,
    errors: u64,
    timeouts: u64,
    shed: u64,
    /// Open loop only: calls due to start that found the queue full.
    pub unstarted: u64,
}

impl Tally {
    pub fn with_capacity(n: usize) -> Tally {
        Tally {
            lat: Vec::with_capacity(n),
            ..Tally::default()
        }
    }

    #[inline]
    pub fn record(&mut self, latency: Duration, outcome: Outcome, slow: bool) {
        let mut x = (latency.as_nanos() as u64).min(NANOS);
        if outcome != Outcome::Good {
            x |= FAILED;
            self.errors += 1;
            match outcome {
                Outcome::Timeout => self.timeouts += 1,
                Outcome::Shed => self.shed += 1,
                _ => {}
            }
        }
        if slow {
            x |= SLOW;
        }
        self.lat.push(x);
    }

    pub fn merge(&mut self, other: Tally) {
        self.lat.extend(other.lat);
        self.errors += other.errors;
        self.timeouts += other.timeouts;
        self.shed += other.shed;
        self.unstarted += other.unstarted;
    }

    /// The JSON line's figures over a window of `elapsed` seconds; a good
    /// reply later than `timeout` does not count as goodput.
    pub fn summary(self, elapsed: f64, timeout: Option<Duration>) -> serde_json::Value {
        let limit = timeout.map_or(u64::MAX, |t| t.as_nanos() as u64);
        let mut all: Vec<u64> = self.lat.iter().map(|x| x & NANOS).collect();
        let mut fast: Vec<u64> = self
            .lat
            .iter()
            .filter(|x| *x & SLOW == 0)
            .map(|x| x & NANOS)
            .collect();
        let mut good: Vec<u64> = self
            .lat
            .iter()
            .filter(|x| *x & FAILED == 0 && *x & NANOS <= limit)
            .map(|x| x & NANOS)
            .collect();
        all.sort_unstable();
        fast.sort_unstable();
        good.sort_unstable();
        let calls = all.len() as u64;
        serde_json::json!({
            "calls": calls,
            "errors": self.errors + self.unstarted,
            "calls_per_sec": (calls as f64 / elapsed).round(),
            "p50_us": percentile(&all, 0.50),
            "p99_us": percentile(&all, 0.99),
            "goodput": (good.len() as f64 / elapsed).round(),
            "good_p99_us": percentile(&good, 0.99),
            "timeouts": self.timeouts,
            "shed": self.shed,
            "fast_p99_us": percentile(&fast, 0.99),
        })
    }
}

/// The `q` quantile of sorted nanoseconds, in microseconds.
pub fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i] as f64 / 1_000.0
}
