//! The registry's Prometheus metrics: `GET /metrics` on the registry's port
//! (feature `metrics`), and the few counters they need that the registry
//! did not keep (heartbeats, expirations, deregistrations), counted under
//! the table's lock the requests take anyway.
//!
//! Served to readers only: with a read token set, `/metrics` asks for it
//! (or the write token) like a `GET` of the list.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::SystemTime;

use super::table::Put;

/// The registry's own counters (see the file's comment).
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(super) struct Counters {
    /// `POST`s accepted, by what they did: new, changed, renewed.
    heartbeats: [AtomicU64; 3],
    /// `POST`s refused because the table was full.
    refused: AtomicU64,
    expirations: AtomicU64,
    deregistrations: AtomicU64,
    /// When this start of the registry began (its epoch), for the metrics.
    started: SystemTime,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            heartbeats: Default::default(),
            refused: AtomicU64::new(0),
            expirations: AtomicU64::new(0),
            deregistrations: AtomicU64::new(0),
            started: SystemTime::now(),
        }
    }
}

impl Counters {
    pub(super) fn heartbeat(&self, put: Option<Put>) {
        match put {
            Some(Put::New) => &self.heartbeats[0],
            Some(Put::Changed) => &self.heartbeats[1],
            Some(Put::Renewed) => &self.heartbeats[2],
            None => &self.refused,
        }
        .fetch_add(1, Relaxed);
    }

    pub(super) fn expired(&self, n: usize) {
        self.expirations.fetch_add(n as u64, Relaxed);
    }

    pub(super) fn deregistered(&self) {
        self.deregistrations.fetch_add(1, Relaxed);
    }
}

#[cfg(feature = "metrics")]
pub(super) use collect::respond;

#[cfg(feature = "metrics")]
mod collect {
    use std::fmt;
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::{Instant, UNIX_EPOCH};

    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::DescriptorEncoder;
    use prometheus_client::registry::Unit;
    use tiny_http::{Method, Request, Response};

    use super::super::http::{header, respond as send, text};
    use super::super::Shared;
    use crate::util::prom;

    /// What one scrape read, taken before any of it is written (the
    /// table's lock is held only to count).
    #[derive(Debug)]
    struct Scrape {
        instances: usize,
        services: Vec<(String, usize)>,
        watchers: usize,
        /// new, changed, renewed, refused.
        heartbeats: [u64; 4],
        expirations: u64,
        deregistrations: u64,
        started: f64,
    }

    /// Answers `GET /metrics` (or `HEAD`; other methods `405`).
    pub(in super::super) fn respond(shared: &Shared, rq: Request) {
        if !matches!(rq.method(), Method::Get | Method::Head) {
            let resp = text(405, "405 method not allowed: the metrics answer GET\n")
                .with_header(header("Allow", "GET, HEAD"));
            return send(shared, rq, resp);
        }
        let c = &shared.counters;
        let (instances, services, watchers) = {
            let st = shared.state.lock();
            let (all, by_service) = st.table.counts(Instant::now());
            (all, by_service, st.watchers.len())
        };
        let scrape = Scrape {
            instances,
            services,
            watchers,
            heartbeats: [
                c.heartbeats[0].load(Relaxed),
                c.heartbeats[1].load(Relaxed),
                c.heartbeats[2].load(Relaxed),
                c.refused.load(Relaxed),
            ],
            expirations: c.expirations.load(Relaxed),
            deregistrations: c.deregistrations.load(Relaxed),
            started: c
                .started
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        };
        let resp = Response::from_string(prom::render(scrape))
            .with_header(header("Content-Type", prom::CONTENT_TYPE))
            .with_header(header("Cache-Control", "no-store"));
        send(shared, rq, resp)
    }

    impl Collector for Scrape {
        fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
            let e = &mut enc;
            prom::gauge(
                e,
                "geerpc_registry_instances",
                "Instances listed (alive), whatever they serve.",
                None,
                self.instances as i64,
            )?;
            let labels: Vec<[(&'static str, &str); 1]> = self
                .services
                .iter()
                .map(|(name, _)| [("service", name.as_str())])
                .collect();
            prom::gauges(
                e,
                "geerpc_registry_service_instances",
                "Instances listed that name the service (instances that name none are \
                 listed under a service no instance names, and counted only in geerpc_registry_instances).",
                None,
                labels
                    .iter()
                    .zip(&self.services)
                    .map(|(l, (_, n))| (&l[..], *n as i64)),
            )?;
            let labels: Vec<[(&'static str, &str); 1]> = ["new", "changed", "renewed", "refused"]
                .iter()
                .map(|r| [("result", *r)])
                .collect();
            prom::counters(
                e,
                "geerpc_registry_heartbeats",
                "Registrations and heartbeats (POSTs), by what they did; refused: the \
                 table was full.",
                None,
                labels.iter().zip(self.heartbeats).map(|(l, n)| (&l[..], n)),
            )?;
            prom::counter(
                e,
                "geerpc_registry_expirations",
                "Instances dropped for want of a heartbeat within the TTL.",
                None,
                self.expirations,
            )?;
            prom::counter(
                e,
                "geerpc_registry_deregistrations",
                "Instances removed by a DELETE.",
                None,
                self.deregistrations,
            )?;
            prom::gauge(
                e,
                "geerpc_registry_watchers",
                "Long polls (GET ?watch=) waiting for a change.",
                None,
                self.watchers as i64,
            )?;
            prom::gauge(
                e,
                "geerpc_registry_epoch_start_time",
                "When this start of the registry (its epoch) began, in Unix time.",
                Some(Unit::Seconds),
                self.started,
            )
        }
    }
}
