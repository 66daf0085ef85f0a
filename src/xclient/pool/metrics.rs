//! What an XClient counts of its instances' health (evictions, failovers),
//! and [`XClientMetrics`] (feature `metrics`): those counters and the
//! pool's own state (calls in flight per instance, instances evicted now)
//! as a `prometheus_client` collector, read at scrape time.
//!
//! Calls by instance and code and their latency are
//! [`ClientMetrics`](crate::client::ClientMetrics)'s, installed on the
//! XClient's client builder (see [`XClient::metrics`]).
//!
//! [`XClient::metrics`]: crate::xclient::XClient::metrics

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Rare events, counted where they happen (never on a call's fast path).
#[derive(Default)]
pub(in crate::xclient) struct Events {
    evictions: AtomicU64,
    failovers: AtomicU64,
}

impl Events {
    pub(super) fn evicted(&self) {
        self.evictions.fetch_add(1, Relaxed);
    }

    /// A failed call retried on another instance (`FailMode::Failover`).
    pub(in crate::xclient) fn failed_over(&self) {
        self.failovers.fetch_add(1, Relaxed);
    }
}

#[cfg(feature = "metrics")]
pub use collect::XClientMetrics;

#[cfg(feature = "metrics")]
mod collect {
    use std::fmt;
    use std::sync::atomic::Ordering::Relaxed;
    use std::sync::{Arc, Weak};

    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::DescriptorEncoder;

    use super::super::Shared;
    use crate::util::prom;

    /// An [`XClient`](crate::xclient::XClient)'s own metrics, as a
    /// `prometheus_client` collector ([`XClient::metrics`]): it holds the
    /// XClient's pool weakly and yields nothing once it is dropped.
    ///
    /// - `geerpc_xclient_evictions_total`: instances taken out of
    ///   selection after a connection failure;
    /// - `geerpc_xclient_failovers_total`: failed calls retried on another
    ///   instance (`FailMode::Failover`);
    /// - `geerpc_xclient_instances_evicted`: instances out of selection now;
    /// - `geerpc_xclient_calls_in_flight{instance}`: calls in flight per
    ///   instance the XClient has a slot for.
    ///
    /// Two XClients registered in one registry need a label or prefix
    /// each (`Registry::sub_registry_with_label`).
    ///
    /// [`XClient::metrics`]: crate::xclient::XClient::metrics
    #[derive(Clone)]
    pub struct XClientMetrics {
        shared: Weak<Shared>,
    }

    impl fmt::Debug for XClientMetrics {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("XClientMetrics")
        }
    }

    impl crate::xclient::XClient {
        /// The XClient's own metrics (evictions, failovers, instances
        /// evicted, calls in flight per instance) as a `prometheus_client`
        /// collector; feature `metrics`. For calls by instance and code
        /// and their latency, install a
        /// [`ClientMetrics`](crate::client::ClientMetrics) on its client
        /// builder:
        ///
        /// ```
        /// use geerpc::client::{Client, ClientMetrics};
        /// use geerpc::{MultiServerDiscovery, SelectMode, XClient};
        ///
        /// let calls = ClientMetrics::new();
        /// let xc = XClient::builder(MultiServerDiscovery::new(Vec::<String>::new()))
        ///     .select_mode(SelectMode::RoundRobin)
        ///     .client(Client::builder().interceptor(calls.clone()))
        ///     .build();
        /// let mut registry = prometheus_client::registry::Registry::default();
        /// registry.register_collector(Box::new(calls));
        /// registry.register_collector(Box::new(xc.metrics()));
        /// let mut text = String::new();
        /// prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        /// assert!(text.contains("geerpc_xclient_evictions_total 0"));
        /// ```
        pub fn metrics(&self) -> XClientMetrics {
            XClientMetrics {
                shared: Arc::downgrade(&self.pool.shared),
            }
        }
    }

    impl Collector for XClientMetrics {
        fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
            let Some(shared) = self.shared.upgrade() else {
                return Ok(());
            };
            let mut slots: Vec<(String, usize, bool)> = shared
                .slots
                .lock()
                .values()
                .map(|s| (s.addr.clone(), s.inflight(), s.is_dead()))
                .collect();
            slots.sort();
            let e = &mut enc;
            prom::counter(
                e,
                "geerpc_xclient_evictions",
                "Instances taken out of selection after a connection failure.",
                None,
                shared.events.evictions.load(Relaxed),
            )?;
            prom::counter(
                e,
                "geerpc_xclient_failovers",
                "Failed calls retried on another instance.",
                None,
                shared.events.failovers.load(Relaxed),
            )?;
            prom::gauge(
                e,
                "geerpc_xclient_instances_evicted",
                "Instances out of selection now.",
                None,
                slots.iter().filter(|s| s.2).count() as i64,
            )?;
            let labels: Vec<[(&'static str, &str); 1]> =
                slots.iter().map(|s| [("instance", s.0.as_str())]).collect();
            prom::gauges(
                e,
                "geerpc_xclient_calls_in_flight",
                "Calls in flight, by instance.",
                None,
                labels.iter().zip(&slots).map(|(l, s)| (&l[..], s.1 as i64)),
            )
        }
    }
}
