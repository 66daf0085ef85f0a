//! The reaper thread (`geerpc-reg-reap`): purges entries whose TTL ran
//! out when they run out, and unparks the long polls whose list changed or
//! whose time is up, each list encoded once per change (the table keeps
//! it, see `table::listing`) and shared by its watchers.
//!
//! It may not write to a socket: answers go to `answer`'s threads, so a
//! watcher that does not read delays neither TTL purges nor any other
//! watcher. It sleeps until the next expiry or deadline, or until woken
//! through `Shared::wake` (a new poll, or a change while polls wait).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::answer::Job;
use super::http::{format, listing, respond};
use super::long_poll::Watcher;
use super::table::{Encoded, Table, Wanted};
use super::{Shared, State};

/// Purges expired entries when they expire and answers long polls when
/// their list changes or their time is up.
pub(super) fn reap(shared: &Arc<Shared>, wake: Receiver<()>) {
    loop {
        let next = {
            let mut st = shared.state.lock();
            let expiry = st.table.next_expiry();
            let poll = st.watchers.next_deadline();
            let next = match (expiry, poll) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            // A poll parked from now on wakes the reaper only if its
            // deadline comes first (see `long_poll::park`).
            st.watchers.reaper_at = Some(next);
            next
        };
        let wait = next.saturating_duration_since(Instant::now());
        if let Err(RecvTimeoutError::Disconnected) = wake.recv_timeout(wait) {
            break;
        }
        if shared.stopping.load(Ordering::Acquire) {
            break;
        }
        let now = Instant::now();
        let due = {
            let mut st = shared.state.lock();
            let purged = st.table.purge(now);
            shared.counters.expired(purged.len());
            for addr in purged {
                log::info!(
                    "registry {}: {addr} expired (no heartbeat within the TTL)",
                    shared.addr
                );
            }
            let State { table, watchers } = &mut *st;
            let due = watchers
                .take(|w| w.deadline <= now || table.version(w.service.as_deref()) != w.known);
            lists(table, due, now)
        };
        answer(shared, due);
    }
    // Pending polls get the list as it is; their next request fails.
    let left = {
        let mut st = shared.state.lock();
        let w = st.watchers.take(|_| true);
        lists(&mut st.table, w, Instant::now())
    };
    answer(shared, left);
    shared.answerers.stop();
}

type Due = (Watcher, Encoded);

/// The answer each watcher gets: the table encodes each list once.
fn lists(table: &mut Table, watchers: Vec<Watcher>, now: Instant) -> Vec<Due> {
    watchers
        .into_iter()
        .map(|w| {
            let wanted = Wanted {
                service: w.service.as_deref(),
                include_legacy: w.include_legacy,
            };
            let answer = table.answer(wanted, format(w.json), now);
            (w, answer)
        })
        .collect()
}

/// Hands each answer to a thread of its own (see `answer`): a watcher that
/// does not read delays neither the reaper nor another watcher.
fn answer(shared: &Arc<Shared>, due: Vec<Due>) {
    let jobs = due.into_iter().map(|(w, answer)| {
        let shared = shared.clone();
        Box::new(move || {
            respond(&shared, w.request, listing(&answer));
        }) as Job
    });
    shared.answerers.dispatch(jobs.collect());
}
