//! The server's Prometheus metrics (feature `metrics`): `GET /metrics` on
//! the RPC port, next to CONNECT and the debug page, and [`ServerMetrics`],
//! the same metrics as a `prometheus_client` collector for an
//! application's own registry.
//!
//! Nothing is counted for the metrics: each scrape reads the counters the
//! server keeps anyway (each method's `MethodStats`, each connection's
//! byte counts, the server-wide `ServerCounters`), so a call pays nothing
//! for them.

use std::fmt;
use std::sync::{Arc, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Unit;

use super::stats::{MethodMetrics, CODES};
use super::{Server, Shared};
use crate::code::CODE_LABELS;
use crate::util::prom::{self, Hist, LATENCY_TARGETS_US};

/// The server's metrics as a `prometheus_client` collector, for an
/// application that serves its own registry:
///
/// ```
/// # use geerpc::Server;
/// let server = Server::new();
/// let mut registry = prometheus_client::registry::Registry::default();
/// registry.register_collector(Box::new(server.metrics()));
/// let mut text = String::new();
/// prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
/// assert!(text.contains("geerpc_server_connections_open"));
/// ```
///
/// The same metrics are served on the server's own port at `GET /metrics`:
///
/// - `geerpc_server_calls_total{service_method, code}`: calls answered, by
///   outcome (`ok` or the reply's code; an error without a code is
///   `unknown`). Calls refused before their handler ran count too (bad
///   `Meta`, shed, expired, refused while draining). Calls to a service or
///   method the server does not have are all `service_method="unknown"`,
///   whatever name they gave.
/// - `geerpc_server_call_latency_seconds{service_method}`: a histogram of
///   the latency of calls whose handler ran (or an interceptor refused),
///   from the request's arrival to its reply, with buckets from 48 µs to
///   10.5 s (bounds of the server's own finer histogram nearest to 50 µs,
///   100 µs, 250 µs ... 10 s, so that every count is exact).
/// - `geerpc_server_shed_calls_total{service_method}`: refused
///   `resource_exhausted` by the limits (`ServerBuilder::limits`).
/// - `geerpc_server_timed_out_calls_total{service_method}`: answered
///   `deadline_exceeded`, whether the handler ran or not.
/// - `geerpc_server_calls_in_flight`, `geerpc_server_connections_open`.
/// - `geerpc_server_read_bytes_total`, `geerpc_server_written_bytes_total`:
///   bytes read from (up to the last whole request) and written to the
///   server's connections, over every listener.
///
/// It holds the server weakly: once the server is dropped it yields
/// nothing.
#[derive(Clone)]
pub struct ServerMetrics {
    shared: Weak<Shared>,
}

impl fmt::Debug for ServerMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerMetrics")
    }
}

impl Server {
    /// The server's metrics as a `prometheus_client` collector (see
    /// [`ServerMetrics`]); feature `metrics`.
    pub fn metrics(&self) -> ServerMetrics {
        ServerMetrics {
            shared: Arc::downgrade(&self.shared),
        }
    }
}

impl Server {
    /// Serves `collector`'s metrics too at `GET /metrics` on this
    /// server's ports (feature `metrics`): a process's client metrics
    /// ([`ClientMetrics`](crate::client::ClientMetrics),
    /// [`XClientMetrics`](crate::xclient::XClientMetrics)) or its own,
    /// next to the server's. Their names must not clash with the
    /// server's or each other's (a scraper refuses a family seen twice).
    pub fn serve_metrics(&self, collector: impl Collector) {
        self.shared.counters.extra.lock().push(Arc::new(collector));
    }
}

/// The text served at `GET /metrics`: the server's metrics, then those
/// given to [`Server::serve_metrics`].
pub(super) fn text(server: &Server) -> String {
    let mut all: Vec<Box<dyn Collector>> = vec![Box::new(server.metrics())];
    for c in server.shared.counters.extra.lock().iter() {
        all.push(Box::new(prom::SharedCollector(c.clone())));
    }
    prom::render_all(all)
}

/// What one scrape reads, gathered before any of it is written.
struct Scrape {
    methods: Vec<(String, MethodMetrics)>,
    unknown: [u64; CODES],
    in_flight: usize,
    open: usize,
    read: u64,
    written: u64,
}

fn scrape(shared: &Shared) -> Scrape {
    let mut methods: Vec<(String, MethodMetrics)> = Vec::new();
    for (svc_name, svc) in shared.services.read().iter() {
        for (m_name, m) in &svc.methods {
            methods.push((
                format!("{svc_name}.{m_name}"),
                m.stats.metrics(&LATENCY_TARGETS_US),
            ));
        }
    }
    methods.sort_by(|a, b| a.0.cmp(&b.0));
    let runnings: Vec<_> = shared
        .runnings
        .lock()
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    // Every listener's `conns` lock at once (only a scrape takes more than
    // one, so the order cannot deadlock), so that no connection is counted
    // both among the open ones and in the totals of ended ones, or in
    // neither: the sums never go back.
    let (mut read, mut written) = (0u64, 0u64);
    {
        let guards: Vec<_> = runnings.iter().map(|r| r.conns.lock()).collect();
        for conn in guards.iter().flat_map(|g| g.values()) {
            read += conn.bytes_read.load(std::sync::atomic::Ordering::Relaxed);
            written += conn.writer.written();
        }
        let c = &shared.counters;
        read += c.closed_read.load(std::sync::atomic::Ordering::Relaxed);
        written += c.closed_written.load(std::sync::atomic::Ordering::Relaxed);
    }
    Scrape {
        methods,
        unknown: std::array::from_fn(|i| {
            shared.counters.unknown.0[i].load(std::sync::atomic::Ordering::Relaxed)
        }),
        in_flight: super::limits::calls_in_flight(shared),
        open: shared.open_conns.load(std::sync::atomic::Ordering::Relaxed),
        read,
        written,
    }
}

impl Collector for ServerMetrics {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let Some(shared) = self.shared.upgrade() else {
            return Ok(());
        };
        let s = scrape(&shared);
        let e = &mut enc;
        let calls = s.methods.iter().flat_map(|(name, m)| {
            m.calls
                .iter()
                .enumerate()
                .filter(|&(_, &n)| n > 0)
                .map(move |(i, &n)| (name.as_str(), CODE_LABELS[i], n))
        });
        let unknown = s
            .unknown
            .iter()
            .enumerate()
            .filter(|&(_, &n)| n > 0)
            .map(|(i, &n)| ("unknown", CODE_LABELS[i], n));
        let rows: Vec<_> = calls.chain(unknown).collect();
        let labels: Vec<[(&'static str, &str); 2]> = rows
            .iter()
            .map(|&(m, c, _)| [("service_method", m), ("code", c)])
            .collect();
        prom::counters(
            e,
            "geerpc_server_calls",
            "Calls answered, by method and outcome.",
            None,
            labels.iter().zip(&rows).map(|(l, r)| (&l[..], r.2)),
        )?;
        let by_method: Vec<[(&'static str, &str); 1]> = s
            .methods
            .iter()
            .map(|(name, _)| [("service_method", name.as_str())])
            .collect();
        prom::histograms(
            e,
            "geerpc_server_call_latency",
            "Latency of calls whose handler ran, from arrival to reply.",
            Some(Unit::Seconds),
            by_method.iter().zip(&s.methods).map(|(l, (_, m))| Hist {
                labels: &l[..],
                buckets: &m.latency,
                sum: m.latency_sum,
            }),
        )?;
        prom::counters(
            e,
            "geerpc_server_shed_calls",
            "Calls refused resource_exhausted by the server's limits, unrun.",
            None,
            by_method
                .iter()
                .zip(&s.methods)
                .map(|(l, (_, m))| (&l[..], m.shed)),
        )?;
        prom::counters(
            e,
            "geerpc_server_timed_out_calls",
            "Calls answered deadline_exceeded, run or not.",
            None,
            by_method
                .iter()
                .zip(&s.methods)
                .map(|(l, (_, m))| (&l[..], m.timed_out)),
        )?;
        prom::gauge(
            e,
            "geerpc_server_calls_in_flight",
            "Calls read and not yet answered, over every listener.",
            None,
            s.in_flight as i64,
        )?;
        prom::gauge(
            e,
            "geerpc_server_connections_open",
            "Connections open, over every listener.",
            None,
            s.open as i64,
        )?;
        prom::counter(
            e,
            "geerpc_server_read",
            "Bytes read from the server's connections.",
            Some(Unit::Bytes),
            s.read,
        )?;
        prom::counter(
            e,
            "geerpc_server_written",
            "Bytes written to the server's connections.",
            Some(Unit::Bytes),
            s.written,
        )
    }
}
