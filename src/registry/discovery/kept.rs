//! The list a registry discovery keeps through a restarted registry's
//! warmup (PROTOCOL.md section 7, "Epoch"). Pure functions of lists and
//! times: no I/O and no lock (`install` calls them under its own).
//!
//! A registry restarted knows no instance until their heartbeats come back
//! (within a second or so, see `beat.rs`). When a listing comes from a new
//! start, the list served until then is kept; until the warmup the
//! registry announced ends, the discovery serves the registry's list plus
//! the kept instances not back yet. An instance once back leaves the kept
//! list (the registry has it, and says when it goes); once none is left,
//! or the warmup is over, the registry's list is served as it is.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::util::duration::GoDuration;
use crate::xclient::Instance;

/// The longest warmup a registry's answer is believed for: a registry
/// cannot make a discovery hold a stale list for long.
pub(super) const MAX_WARMUP: Duration = Duration::from_secs(60);

/// Instances kept from before a restart, not back yet, until `until`.
pub(super) struct Kept {
    pub(super) instances: Arc<[Instance]>,
    pub(super) until: Instant,
}

/// The start of the registry a listing came from: its epoch and the
/// warmup it has left.
#[derive(Clone, Copy)]
pub(super) struct Start<'a> {
    pub(super) epoch: &'a str,
    pub(super) warmup: Duration,
}

/// The registry at `url` was seen restarted: what to keep of the list
/// `serving` now (which may still hold instances kept from an earlier
/// restart).
pub(super) fn on_restart(
    url: &str,
    serving: &Arc<[Instance]>,
    start: Start<'_>,
    now: Instant,
) -> Option<Kept> {
    if start.warmup.is_zero() || serving.is_empty() {
        log::info!(
            "registry discovery {url}: the registry restarted (epoch {}); following its list",
            start.epoch
        );
        return None;
    }
    log::info!(
        "registry discovery {url}: the registry restarted (epoch {}); keeping the last {} instances for {} while they register again",
        start.epoch,
        serving.len(),
        GoDuration(start.warmup)
    );
    Some(Kept {
        instances: serving.clone(),
        until: now + start.warmup,
    })
}

/// The registry's `instances` (sorted) as served while `kept` lasts, and
/// what is still kept: the kept instances not back yet, until the warmup
/// ends.
pub(super) fn merge(
    url: &str,
    mut instances: Vec<Instance>,
    kept: Kept,
    now: Instant,
) -> (Vec<Instance>, Option<Kept>) {
    if now >= kept.until {
        log::info!(
            "registry discovery {url}: warmup over; following the registry's list ({} instances)",
            instances.len()
        );
        return (instances, None);
    }
    let missing: Vec<Instance> = kept
        .instances
        .iter()
        .filter(|k| {
            instances
                .binary_search_by(|i| i.addr.as_str().cmp(&k.addr))
                .is_err()
        })
        .cloned()
        .collect();
    if missing.is_empty() {
        log::info!(
            "registry discovery {url}: every instance is back ({} listed)",
            instances.len()
        );
        return (instances, None);
    }
    instances.extend(missing.iter().cloned());
    instances.sort_by(|a, b| a.addr.cmp(&b.addr));
    let left = Kept {
        instances: missing.into(),
        until: kept.until,
    };
    (instances, Some(left))
}
