//! Parked long polls, counted per client IP address so that one client
//! cannot take every slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use tiny_http::Request;

/// A long poll waiting for its list to change.
pub(super) struct Watcher {
    pub(super) request: Request,
    pub(super) service: Option<String>,
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
