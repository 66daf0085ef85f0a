//! The warmup of [`EtcdDiscovery`](super::EtcdDiscovery): after a mass
//! disappearance, keep showing the last list for a while, so that clients
//! never go empty while the servers register again.
//!
//! etcd loses every registration at once when the cluster is rebuilt or
//! restored (the store starts again: its revision goes back), and loses
//! them one lease after another when the servers are cut off from etcd but
//! not from their clients (every lease expires within a TTL). Either way
//! the servers are most likely alive and register again within about a
//! second of etcd being reachable (their heartbeat retries every 0.5-1 s
//! while it fails) or, if no keepalive failed, at their next renewal (a
//! third of the TTL, 3.3 s with the default TTL of 10 s). An empty list in
//! between would fail every call for nothing.
//!
//! So the list shown holds, for the warmup period (default
//! [`DEFAULT_WARMUP`]), every instance it had when:
//! - the store changed (a relist found a revision older than the one
//!   known): whatever the new list says; or
//! - the list would become empty after at least two instances left within
//!   the warmup period (a mass disappearance). One server leaving, or
//!   servers leaving one by one slowly, is followed at once.
//!
//! Meanwhile instances that appear are shown too. The hold ends when every
//! held instance is back, or when the period ends: then the list follows
//! etcd again, so a real deregistration of every server is followed within
//! the warmup period.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::xclient::Instance;

/// The warmup period used unless
/// [`EtcdDiscovery::warmup`](super::EtcdDiscovery::warmup) says otherwise.
pub const DEFAULT_WARMUP: Duration = Duration::from_secs(5);

/// The most departures remembered (those of the period are held again
/// after a mass disappearance; 2 are enough to call it one).
const MAX_LOSSES: usize = 64;

/// A list held since a mass disappearance.
struct Held {
    instances: Vec<Instance>,
    until: Instant,
}

pub(super) struct Warmup {
    period: Duration,
    held: Option<Held>,
    /// The instances that left the list shown and when, newest last; only
    /// those within the period are kept (at most `MAX_LOSSES`).
    losses: VecDeque<(Instant, Instance)>,
}

impl Warmup {
    pub(super) fn new(period: Duration) -> Warmup {
        Warmup {
            period,
            held: None,
            losses: VecDeque::new(),
        }
    }

    pub(super) fn set_period(&mut self, period: Duration) {
        self.period = period;
    }

    /// Whether a list is held.
    pub(super) fn holding(&self) -> bool {
        self.held.is_some()
    }

    /// Whether a held list's period has ended (the list must be rebuilt).
    pub(super) fn due(&self, now: Instant) -> bool {
        self.held.as_ref().is_some_and(|h| now >= h.until)
    }

    /// Drops a held list (a list set by hand replaces everything).
    pub(super) fn clear(&mut self) {
        self.held = None;
        self.losses.clear();
    }

    /// The list to show, given what etcd says (`listed`, sorted by address)
    /// and the list shown until now.
    pub(super) fn filter(
        &mut self,
        listed: Vec<Instance>,
        shown: &[Instance],
        store_changed: bool,
        now: Instant,
    ) -> Vec<Instance> {
        let has = |list: &[Instance], addr: &str| list.iter().any(|i| i.addr == addr);
        if self.held.is_none() {
            for i in shown.iter().filter(|i| !has(&listed, &i.addr)) {
                // One server leaving again (a restart, a redeploy) is one
                // loss, not two: a mass disappearance is of distinct
                // instances.
                self.losses.retain(|(_, l)| l.addr != i.addr);
                if self.losses.len() == MAX_LOSSES {
                    self.losses.pop_front();
                }
                self.losses.push_back((now, i.clone()));
            }
            while self
                .losses
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > self.period)
            {
                self.losses.pop_front();
            }
            let mass = listed.is_empty() && self.losses.len() >= 2;
            if !shown.is_empty() && !self.period.is_zero() && (store_changed || mass) {
                let why = if store_changed {
                    "etcd's store changed (its revision went back)".to_string()
                } else {
                    format!(
                        "{} instances left within {:?}",
                        self.losses.len(),
                        self.period
                    )
                };
                log::info!(
                    "etcd discovery: {why}; keeping the {} listed before for up to {:?} \
                     while they register again",
                    shown.len().max(self.losses.len()),
                    self.period
                );
                // The list as it was before the disappearance began: what
                // is shown, and what left within the period.
                let mut instances = shown.to_vec();
                for (_, i) in &self.losses {
                    if !has(&instances, &i.addr) {
                        instances.push(i.clone());
                    }
                }
                self.held = Some(Held {
                    instances,
                    until: now + self.period,
                });
            }
        }
        let Some(held) = &self.held else {
            return listed;
        };
        let back = held.instances.iter().all(|i| has(&listed, &i.addr));
        if back || now >= held.until {
            log::info!(
                "etcd discovery: warmup over ({}); following etcd's {} instances",
                if back {
                    "every instance is back"
                } else {
                    "period ended"
                },
                listed.len()
            );
            self.held = None;
            self.losses.clear();
            return listed;
        }
        // The held instances not listed (yet), and everything listed.
        let mut out = listed;
        for i in &held.instances {
            if !has(&out, &i.addr) {
                out.push(i.clone());
            }
        }
        out.sort_by(|a, b| a.addr.cmp(&b.addr));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(addrs: &[&str]) -> Vec<Instance> {
        addrs.iter().map(|a| Instance::new(*a)).collect()
    }

    fn addrs(l: &[Instance]) -> Vec<&str> {
        l.iter().map(|i| i.addr.as_str()).collect()
    }

    #[test]
    fn one_server_leaving_is_followed_at_once() {
        let mut w = Warmup::new(Duration::from_secs(5));
        let now = Instant::now();
        let shown = w.filter(list(&["a"]), &[], false, now);
        assert_eq!(addrs(&shown), ["a"]);
        assert!(w.filter(list(&[]), &shown, false, now).is_empty());
        assert!(!w.holding());
    }

    #[test]
    fn one_server_leaving_again_within_the_period_is_followed_at_once() {
        let mut w = Warmup::new(Duration::from_secs(5));
        let t0 = Instant::now();
        let t = |ms| t0 + Duration::from_millis(ms);
        let a = list(&["a"]);
        for k in 0..3 {
            // a registers, then leaves: every time, the list follows.
            let shown = w.filter(a.clone(), &[], false, t(100 * k));
            assert_eq!(addrs(&shown), ["a"]);
            assert!(w
                .filter(list(&[]), &shown, false, t(100 * k + 50))
                .is_empty());
            assert!(!w.holding(), "round {k}");
        }
    }

    #[test]
    fn a_mass_disappearance_is_held_until_back_or_the_period_ends() {
        let mut w = Warmup::new(Duration::from_secs(5));
        let t0 = Instant::now();
        let ab = list(&["a", "b"]);
        // b, then a leaves within the period: both held.
        let shown = w.filter(list(&["a"]), &ab, false, t0);
        assert_eq!(addrs(&shown), ["a"]);
        let t = |s| t0 + Duration::from_secs(s);
        let shown = w.filter(list(&[]), &shown, false, t(1));
        assert_eq!(addrs(&shown), ["a", "b"], "the list before is kept");
        assert!(w.holding());
        // A newcomer shows with the held ones; the hold ends once every
        // held one is back, and the list follows etcd again.
        let shown = w.filter(list(&["c"]), &shown, false, t(2));
        assert_eq!(addrs(&shown), ["a", "b", "c"]);
        let shown = w.filter(list(&["a", "c"]), &shown, false, t(2));
        assert_eq!(addrs(&shown), ["a", "b", "c"]);
        assert!(w.holding());
        let shown = w.filter(list(&["a", "b", "c"]), &shown, false, t(2));
        assert!(!w.holding());
        let shown = w.filter(list(&["a", "c"]), &shown, false, t(2));
        assert_eq!(addrs(&shown), ["a", "c"], "followed again");

        // Held again, b included (it left a second before); at the end of
        // the period the empty list is followed.
        let t1 = t0 + Duration::from_secs(3);
        let shown = w.filter(list(&[]), &shown, false, t1);
        assert_eq!(addrs(&shown), ["a", "b", "c"]);
        assert!(!w.due(t1 + Duration::from_secs(4)));
        assert!(w.due(t1 + Duration::from_secs(5)));
        let shown = w.filter(list(&[]), &shown, false, t1 + Duration::from_secs(5));
        assert!(shown.is_empty());
        assert!(!w.holding());
    }

    #[test]
    fn slow_departures_are_followed_and_a_new_store_is_held() {
        let mut w = Warmup::new(Duration::from_secs(5));
        let t0 = Instant::now();
        let shown = w.filter(list(&["a"]), &list(&["a", "b"]), false, t0);
        let shown = w.filter(list(&[]), &shown, false, t0 + Duration::from_secs(6));
        assert!(
            shown.is_empty(),
            "two departures 6 s apart are not a mass one"
        );

        let mut w = Warmup::new(Duration::from_secs(5));
        let shown = w.filter(list(&["b"]), &list(&["a"]), true, t0);
        assert_eq!(addrs(&shown), ["a", "b"], "a new store holds even one");
        // A zero period turns the warmup off.
        let mut w = Warmup::new(Duration::ZERO);
        assert!(w.filter(list(&[]), &list(&["a"]), true, t0).is_empty());
    }
}
