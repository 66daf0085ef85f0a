//! Fetching a registry's list: one `GET` (plain, or a long poll from a
//! version), read as the JSON listing of a geerpc registry or as the
//! header list of a Go one, with the registry's epoch and warmup; and what
//! a failed fetch leaves behind (the last good list, one log line per
//! outage, a pause before the next try).
//!
//! What to do with a listing is `install`'s: this file decides nothing
//! about which list is served.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::kept::{Start, MAX_WARMUP};
use super::{Shared, Source};
use crate::error::{Error, Result};
use crate::registry::epoch::{EPOCH_HEADER, WARMUP_HEADER};
use crate::registry::{request_error, status_error, Listing, LIST_HEADERS, VERSION_HEADER};
use crate::util::duration::GoDuration;
use crate::xclient::Instance;

impl Shared {
    /// GETs the list (as a long poll when `watch` holds a version) and
    /// installs it; on failure, notes it (the last good list stays).
    pub(super) fn fetch_and_install(
        &self,
        agent: &ureq::Agent,
        watch: Option<u64>,
        poll: Option<Duration>,
    ) -> Result<()> {
        let seq = self.fetches.fetch_add(1, Ordering::Relaxed) + 1;
        match self.fetch(agent, watch, poll) {
            Ok(listing) => {
                // Asked for changes after `w` and answered with an older
                // version: not an overlapping fetch landing late, but the
                // registry itself going back (restarted with its clock
                // behind, or another registry behind the same URL).
                let went_back = matches!(
                    (watch, listing.version),
                    (Some(w), Some(v)) if v < w
                );
                if went_back {
                    log::info!(
                        "registry discovery {}: the registry's version went back from {} to {}; taking its list",
                        self.url,
                        watch.unwrap_or(0),
                        listing.version.unwrap_or(0)
                    );
                }
                let from = Source::Fetch { seq, went_back };
                let start = listing.epoch.as_deref().map(|epoch| Start {
                    epoch,
                    warmup: listing.warmup,
                });
                self.install(listing.instances, Some(listing.version), from, start);
                Ok(())
            }
            Err(e) => {
                if !self.stopping.load(Ordering::Acquire) {
                    self.note_failure(&e);
                }
                Err(e)
            }
        }
    }

    fn fetch(
        &self,
        agent: &ureq::Agent,
        watch: Option<u64>,
        poll: Option<Duration>,
    ) -> Result<FetchedListing> {
        let mut rq = agent.get(&self.url).header("Accept", "application/json");
        if let Some(s) = &self.service {
            rq = rq.query("service", s);
            if self.include_legacy {
                rq = rq.query("include_legacy", "true");
            }
        }
        if let (Some(v), Some(p)) = (watch, poll) {
            rq = rq
                .query("watch", v.to_string())
                .query("timeout", GoDuration(p).to_string());
        }
        let mut resp = rq
            .call()
            .map_err(|e| request_error(&self.url, "list instances", e))?;
        if !resp.status().is_success() {
            return Err(status_error(&self.url, "list instances", &mut resp));
        }
        let text = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok());
        let epoch = text(EPOCH_HEADER).map(|e| e.trim().to_string());
        let warmup = text(WARMUP_HEADER)
            .and_then(|w| w.trim().parse::<u64>().ok())
            .map_or(Duration::ZERO, Duration::from_millis)
            // A registry cannot make a discovery hold a stale list for long.
            .min(MAX_WARMUP);
        let version = resp
            .headers()
            .get(VERSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if version.is_some() {
            let body = resp
                .body_mut()
                .with_config()
                .limit(64 << 20)
                .read_to_vec()
                .map_err(|e| request_error(&self.url, "read the listing", e))?;
            let listing: Listing = serde_json::from_slice(&body)
                .map_err(|e| request_error(&self.url, "decode the JSON listing", e))?;
            return Ok(FetchedListing {
                version: Some(listing.version),
                instances: listing.instances,
                epoch,
                warmup,
            });
        }
        // A Go GeeRPC registry: the list is in a header, and no version.
        let header = LIST_HEADERS
            .iter()
            .find_map(|h| resp.headers().get(*h))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        Ok(FetchedListing {
            version: None,
            epoch,
            warmup,
            instances: header
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(Instance::new)
                .collect(),
        })
    }

    /// A failed fetch: no new try before a pause (the refresh age, at most
    /// 1 s), and a warning once per outage.
    fn note_failure(&self, e: &Error) {
        let mut st = self.state.write();
        st.next_try = Some(Instant::now() + self.refresh_after.min(Duration::from_secs(1)));
        st.last_error = Some(e.to_string());
        if !st.failing {
            st.failing = true;
            log::warn!(
                "registry discovery: {e}; serving the last good list ({} instances) until it answers",
                st.snapshot.instances.len()
            );
        } else {
            log::debug!("registry discovery: {e}");
        }
    }
}

/// A listing as fetched: a Go registry gives no version and no epoch.
struct FetchedListing {
    version: Option<u64>,
    instances: Vec<Instance>,
    epoch: Option<String>,
    warmup: Duration,
}
