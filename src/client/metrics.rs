//! [`ClientMetrics`] (feature `metrics`): a client [`Interceptor`] that
//! counts each call by instance and outcome, times it into a histogram and
//! keeps the calls in flight per instance, and the `prometheus_client`
//! collector that shows them, for an application's own registry (or a
//! geerpc server's `/metrics`, [`Server::serve_metrics`]).
//!
//! Only a client that installs it pays for it. Per call: a look-up of the
//! instance's counters in a small per-thread cache (no lock), then atomic
//! adds on that instance's counters, which only the calls to that
//! instance (one connection per client) touch. The shared map is locked
//! only on a cache miss: a thread's first call to an instance.
//!
//! [`Server::serve_metrics`]: crate::server::Server::serve_metrics

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Unit;

use super::intercept::{Finished, Interceptor, Outgoing};
use crate::code::{code_slot, CODES, CODE_LABELS};
use crate::error::Result;
use crate::util::prom::{self, Hist, LATENCY_TARGETS_US};
use crate::wire::address::Address;

/// Instances counted apart at most; calls to others are counted under
/// `instance="other"`, so that a long-lived client of a changing fleet
/// keeps a bounded set of series.
pub const MAX_INSTANCES: usize = 1024;

/// Entries of each thread's cache of instance counters.
const CACHE: usize = 8;

/// Counts a client's calls, per instance, for Prometheus: install it as an
/// interceptor ([`ClientBuilder::interceptor`](super::ClientBuilder::interceptor),
/// or on an XClient's [`client`](crate::xclient::XClientBuilder::client)
/// builder), and register it as a collector where the metrics are served.
/// Cloning gives another handle on the same counters.
///
/// Metrics:
/// - `geerpc_client_calls_total{instance, code}`: calls ended, by the
///   instance (`PROTOCOL@ADDR`) and the outcome (`ok`, or the error's
///   [`Code`](crate::Code): `deadline_exceeded` for a timeout,
///   `cancelled` for an abandoned call, the server's code for a refusal,
///   `other` for a code this version does not know);
/// - `geerpc_client_call_latency_seconds{instance}`: the calls' latency,
///   buckets 50 µs to 10 s;
/// - `geerpc_client_calls_in_flight{instance}`.
///
/// At most [`MAX_INSTANCES`] instances get series of their own.
///
/// ```
/// use geerpc::client::ClientMetrics;
/// use geerpc::{Client, Server, Service};
///
/// let server = Server::new();
/// server.register(Service::new("Echo").method("Echo", |s: String| Ok::<_, String>(s)))?;
/// let running = server.listen("127.0.0.1:0")?;
///
/// let metrics = ClientMetrics::new();
/// let client = Client::builder().interceptor(metrics.clone()).dial(running.addr())?;
/// let mut registry = prometheus_client::registry::Registry::default();
/// registry.register_collector(Box::new(metrics));
///
/// client.call::<_, String>("Echo.Echo", "hi")?;
/// let mut text = String::new();
/// prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
/// let line = format!("geerpc_client_calls_total{{instance=\"{}\",code=\"ok\"}} 1", running.addr());
/// assert!(text.contains(&line), "{text}");
/// # Ok::<(), geerpc::Error>(())
/// ```
#[derive(Clone)]
pub struct ClientMetrics {
    inner: Arc<Inner>,
}

struct Inner {
    /// Tells this set of counters apart in the threads' caches.
    id: usize,
    instances: Mutex<BTreeMap<String, Arc<PerInstance>>>,
    other: Arc<PerInstance>,
}

/// One instance's counters.
struct PerInstance {
    codes: [AtomicU64; CODES],
    in_flight: AtomicI64,
    /// Calls per latency bucket (`LATENCY_TARGETS_US`, then +Inf).
    latency: [AtomicU64; LATENCY_TARGETS_US.len() + 1],
    nanos: AtomicU64,
}

impl Default for PerInstance {
    fn default() -> Self {
        PerInstance {
            codes: std::array::from_fn(|_| AtomicU64::new(0)),
            in_flight: AtomicI64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            nanos: AtomicU64::new(0),
        }
    }
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    /// The counters this thread used last: (set id, instance, counters).
    static RECENT: RefCell<Vec<(usize, Address, Arc<PerInstance>)>> =
        const { RefCell::new(Vec::new()) };
}

impl Default for ClientMetrics {
    fn default() -> Self {
        ClientMetrics::new()
    }
}

impl fmt::Debug for ClientMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientMetrics")
            .field("instances", &self.inner.instances.lock().len())
            .finish()
    }
}

impl ClientMetrics {
    /// A new set of counters, empty.
    pub fn new() -> ClientMetrics {
        ClientMetrics {
            inner: Arc::new(Inner {
                id: NEXT_ID.fetch_add(1, Relaxed),
                instances: Mutex::new(BTreeMap::new()),
                other: Arc::default(),
            }),
        }
    }

    /// The counters of `addr`, from this thread's cache if there.
    fn with<T>(&self, addr: &Address, f: impl FnOnce(&PerInstance) -> T) -> T {
        let id = self.inner.id;
        RECENT.with(|recent| {
            let mut recent = recent.borrow_mut();
            if let Some(i) = recent.iter().position(|(s, a, _)| *s == id && a == addr) {
                return f(&recent[i].2);
            }
            let counters = self.lookup(addr);
            let out = f(&counters);
            if recent.len() == CACHE {
                recent.remove(0);
            }
            recent.push((id, addr.clone(), counters));
            out
        })
    }

    fn lookup(&self, addr: &Address) -> Arc<PerInstance> {
        let key = addr.to_string();
        let mut map = self.inner.instances.lock();
        if let Some(c) = map.get(&key) {
            return c.clone();
        }
        if map.len() >= MAX_INSTANCES {
            return self.inner.other.clone();
        }
        map.entry(key).or_default().clone()
    }
}

impl Interceptor for ClientMetrics {
    fn before(&self, call: &mut Outgoing<'_>) -> Result<()> {
        self.with(call.addr(), |c| c.in_flight.fetch_add(1, Relaxed));
        Ok(())
    }

    fn after(&self, call: &Finished<'_>) {
        let code = call.code();
        let elapsed = call.elapsed();
        let micros = elapsed.as_secs_f64() * 1e6;
        let bucket = LATENCY_TARGETS_US.partition_point(|&b| b < micros);
        self.with(call.addr(), |c| {
            c.in_flight.fetch_sub(1, Relaxed);
            c.codes[code_slot(code.as_ref())].fetch_add(1, Relaxed);
            c.latency[bucket].fetch_add(1, Relaxed);
            c.nanos.fetch_add(
                u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
                Relaxed,
            );
        });
    }
}

/// One instance's counters as read by a scrape.
struct Read {
    instance: String,
    codes: [u64; CODES],
    in_flight: i64,
    latency: Vec<(f64, u64)>,
    sum: f64,
}

fn read(instance: String, c: &PerInstance) -> Read {
    let mut latency: Vec<(f64, u64)> = LATENCY_TARGETS_US
        .iter()
        .map(|us| us / 1e6)
        .chain([f64::MAX])
        .zip(&c.latency)
        .map(|(le, n)| (le, n.load(Relaxed)))
        .collect();
    latency.shrink_to_fit();
    Read {
        instance,
        codes: std::array::from_fn(|i| c.codes[i].load(Relaxed)),
        in_flight: c.in_flight.load(Relaxed),
        latency,
        sum: c.nanos.load(Relaxed) as f64 / 1e9,
    }
}

impl Collector for ClientMetrics {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let mut rows: Vec<Read> = self
            .inner
            .instances
            .lock()
            .iter()
            .map(|(a, c)| (a.clone(), c.clone()))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|(a, c)| read(a, &c))
            .collect();
        let other = read("other".into(), &self.inner.other);
        if other.codes.iter().any(|&n| n > 0) || other.in_flight != 0 {
            rows.push(other);
        }
        let e = &mut enc;
        let calls: Vec<(usize, usize, u64)> = rows
            .iter()
            .enumerate()
            .flat_map(|(r, row)| {
                row.codes
                    .iter()
                    .enumerate()
                    .filter(|&(_, &n)| n > 0)
                    .map(move |(i, &n)| (r, i, n))
            })
            .collect();
        let labels: Vec<[(&'static str, &str); 2]> = calls
            .iter()
            .map(|&(r, i, _)| {
                [
                    ("instance", rows[r].instance.as_str()),
                    ("code", CODE_LABELS[i]),
                ]
            })
            .collect();
        prom::counters(
            e,
            "geerpc_client_calls",
            "Calls ended, by instance and outcome.",
            None,
            labels.iter().zip(&calls).map(|(l, c)| (&l[..], c.2)),
        )?;
        let by_instance: Vec<[(&'static str, &str); 1]> = rows
            .iter()
            .map(|r| [("instance", r.instance.as_str())])
            .collect();
        prom::histograms(
            e,
            "geerpc_client_call_latency",
            "Latency of calls, from before the first interceptor to the call's end.",
            Some(Unit::Seconds),
            by_instance.iter().zip(&rows).map(|(l, r)| Hist {
                labels: &l[..],
                buckets: &r.latency,
                sum: r.sum,
            }),
        )?;
        prom::gauges(
            e,
            "geerpc_client_calls_in_flight",
            "Calls sent (or being sent) and not ended, by instance.",
            None,
            by_instance
                .iter()
                .zip(&rows)
                .map(|(l, r)| (&l[..], r.in_flight)),
        )
    }
}
