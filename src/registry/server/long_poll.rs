//! Long polls (`GET ?watch=VERSION&timeout=30s`, PROTOCOL.md section 7):
//! parking one (or answering it at once when the list already differs),
//! and the parked polls, counted per client IP address so that one client
//! cannot take every slot.
//!
//! A parked poll is answered by `reap` (its list changed or its time is
//! up), on a thread of `answer`'s: nothing here writes to a parked poll's
//! socket, and parking never blocks the worker.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tiny_http::Request;

use super::http::{format, listing, respond, text};
use super::limits;
use super::query::Query;
use super::Shared;
use crate::util::duration::parse_duration;

/// How long a long poll waits when the request does not say.
const DEFAULT_WATCH: Duration = Duration::from_secs(30);
/// The longest wait a long poll may ask for.
const MAX_WATCH: Duration = Duration::from_secs(300);

/// A `GET ?watch=` (`watch`: its value): answered at once when the list's
/// version is not `watch` (or the wait is zero, or the registry stops),
/// refused past the caps, parked otherwise; the reaper is woken to
/// schedule its deadline.
pub(super) fn park(shared: &Shared, rq: Request, query: &Query, watch: &str, json: bool) {
    let wanted = query.wanted();
    let service = wanted.service;
    let Ok(known) = watch.parse::<u64>() else {
        let msg = format!("400 watch wants the version a previous answer gave, not {watch:?}\n");
        return respond(shared, rq, text(400, msg));
    };
    let wait = match query.timeout.as_deref().map(parse_duration) {
        None => DEFAULT_WATCH,
        Some(Ok(d)) => d.min(MAX_WATCH),
        Some(Err(e)) => return respond(shared, rq, text(400, format!("400 timeout: {e}\n"))),
    };
    let now = Instant::now();
    // Checked and parked under one lock: a change made after the check
    // wakes the reaper, which then finds this poll parked.
    let mut st = shared.state.lock();
    let version = st.table.version(service);
    if version != known || wait.is_zero() || shared.stopping.load(Ordering::Acquire) {
        let answer = st.table.answer(wanted, format(json), now);
        drop(st);
        return respond(shared, rq, listing(&answer));
    }
    if let Err(refused) = st.watchers.check(rq.remote_addr().map(|a| a.ip())) {
        drop(st);
        let (status, msg) = limits::watch_refused(refused);
        shared.refusals.refused(shared.addr, &msg);
        return respond(shared, rq, text(status, msg));
    }
    log::debug!(
        "registry {}: long poll parked at version {version} for {service:?}",
        shared.addr
    );
    let deadline = now + wait;
    st.watchers.push(Watcher {
        request: rq,
        service: query.service.clone(),
        include_legacy: query.include_legacy,
        known,
        deadline,
        json,
    });
    // The reaper needs waking only to wake earlier: after a change, 1,000
    // watchers parking again had woken it 1,000 times, each wake a look
    // at every parked poll.
    if st.watchers.reaper_at.is_none_or(|t| deadline < t) {
        shared.wake();
    }
}

/// A long poll waiting for its list to change.
pub(super) struct Watcher {
    pub(super) request: Request,
    pub(super) service: Option<String>,
    /// `include_legacy=true` (see `Wanted`).
    pub(super) include_legacy: bool,
    pub(super) known: u64,
    pub(super) deadline: Instant,
    pub(super) json: bool,
}

/// Why a long poll was not parked.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// `max` long polls are parked.
    Full { max: usize },
    /// `max` long polls from this address are parked.
    Client { ip: IpAddr, max: usize },
}

/// The parked long polls. Invariant: `per_ip[ip]` is the number of
/// watchers in `list` from `ip`, and no entry is zero.
pub(super) struct Watchers {
    list: Vec<Watcher>,
    /// When the reaper will look next at the latest (set by the reaper
    /// under the state lock; `None`: it was woken or has not looked yet).
    pub(super) reaper_at: Option<Instant>,
    per_ip: HashMap<IpAddr, usize>,
    max: usize,
    max_per_ip: usize,
}

fn ip_of(w: &Watcher) -> Option<IpAddr> {
    w.request.remote_addr().map(|a| a.ip())
}

impl Watchers {
    pub(super) fn new(max: usize, max_per_ip: usize) -> Watchers {
        Watchers {
            list: Vec::new(),
            reaper_at: None,
            per_ip: HashMap::new(),
            max,
            max_per_ip,
        }
    }

    /// Whether a long poll from `ip` may be parked now.
    pub(super) fn check(&self, ip: Option<IpAddr>) -> Result<(), Refused> {
        if self.list.len() >= self.max {
            return Err(Refused::Full { max: self.max });
        }
        match ip {
            Some(ip) if self.per_ip.get(&ip).copied().unwrap_or(0) >= self.max_per_ip => {
                Err(Refused::Client {
                    ip,
                    max: self.max_per_ip,
                })
            }
            _ => Ok(()),
        }
    }

    /// Parks `w`; call [`check`](Self::check) first.
    pub(super) fn push(&mut self, w: Watcher) {
        if let Some(ip) = ip_of(&w) {
            *self.per_ip.entry(ip).or_insert(0) += 1;
        }
        self.list.push(w);
    }

    /// Unparks and returns the watchers `due` says are due.
    pub(super) fn take(&mut self, mut due: impl FnMut(&Watcher) -> bool) -> Vec<Watcher> {
        let (out, keep): (Vec<Watcher>, Vec<Watcher>) = std::mem::take(&mut self.list)
            .into_iter()
            .partition(|w| due(w));
        self.list = keep;
        for w in &out {
            if let Some(ip) = ip_of(w) {
                if let Some(n) = self.per_ip.get_mut(&ip) {
                    *n -= 1;
                    if *n == 0 {
                        self.per_ip.remove(&ip);
                    }
                }
            }
        }
        out
    }

    /// When the first parked poll times out.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.list.iter().map(|w| w.deadline).min()
    }

    pub(super) fn len(&self) -> usize {
        self.list.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}
