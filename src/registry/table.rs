//! The registry's table of instances, their expiry times and list versions.
//!
//! Pure state, no I/O: the HTTP side locks it, asks, and answers.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::Registration;
use crate::xclient::Instance;

/// What a [`Table::put`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Put {
    /// The address was not listed (or had expired).
    New,
    /// The address was listed with other details.
    Changed,
    /// The address was listed as it is: only its expiry moved.
    Renewed,
}

struct Entry {
    instance: Instance,
    /// `None`: the registry has no TTL.
    expires: Option<Instant>,
}

/// Instances by address (sorted, so listings come out sorted), and the
/// version at which each service's list last changed.
pub(crate) struct Table {
    entries: BTreeMap<String, Entry>,
    ttl: Option<Duration>,
    /// Bumped on every change of the set (not on a plain renewal).
    version: u64,
    /// Version of the last change to an instance that did not say what it
    /// serves (it is listed for every service).
    wildcard_changed: u64,
    /// Version of the last change to an instance serving each service.
    service_changed: HashMap<String, u64>,
}

impl Table {
    /// An empty table. `ttl` zero: entries never expire.
    pub(crate) fn new(ttl: Duration) -> Table {
        // Versions start at the clock, so that a watcher holding the version
        // of a registry that restarted since sees a different one.
        let base = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(1);
        Table {
            entries: BTreeMap::new(),
            ttl: (!ttl.is_zero()).then_some(ttl),
            version: base,
            wildcard_changed: base,
            service_changed: HashMap::new(),
        }
    }

    fn touch(&mut self, instance: &Instance) {
        let v = self.version;
        if instance.services.is_empty() {
            self.wildcard_changed = v;
        } else {
            for s in &instance.services {
                self.service_changed.insert(s.clone(), v);
            }
        }
    }

    /// Registers or renews `addr`. A registration without details keeps the
    /// details an earlier one gave.
    pub(crate) fn put(&mut self, addr: &str, reg: &Registration, now: Instant) -> Put {
        let expires = self.ttl.map(|t| now + t);
        let old = self.entries.get(addr).map(|e| e.instance.clone());
        let mut instance = old.clone().unwrap_or_else(|| Instance::new(addr));
        if let Some(s) = &reg.services {
            let mut s = s.clone();
            s.sort();
            s.dedup();
            instance.services = s;
        }
        if let Some(w) = reg.weight {
            instance.weight = w;
        }
        if let Some(m) = &reg.metadata {
            instance.metadata = m.clone();
        }
        let was_alive = self
            .entries
            .get(addr)
            .is_some_and(|e| e.expires.map_or(true, |t| t > now));
        // An expired entry not purged yet counts as gone.
        let changed = !was_alive || old.as_ref() != Some(&instance);
        if changed {
            self.version += 1;
            if let Some(old) = &old {
                self.touch(old);
            }
            self.touch(&instance);
        }
        self.entries
            .insert(addr.to_string(), Entry { instance, expires });
        match (changed, was_alive) {
            (_, false) => Put::New,
            (true, true) => Put::Changed,
            (false, true) => Put::Renewed,
        }
    }

    /// Whether no entry is left.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes `addr`; whether it was there.
    pub(crate) fn remove(&mut self, addr: &str) -> bool {
        match self.entries.remove(addr) {
            Some(e) => {
                self.version += 1;
                self.touch(&e.instance);
                true
            }
            None => false,
        }
    }

    /// Removes every entry expired at `now`; returns their addresses.
    pub(crate) fn purge(&mut self, now: Instant) -> Vec<String> {
        let expired: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.expires.is_some_and(|t| t <= now))
            .map(|(a, _)| a.clone())
            .collect();
        for a in &expired {
            self.remove(a);
        }
        expired
    }

    /// When the next entry expires.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.entries.values().filter_map(|e| e.expires).min()
    }

    /// The instances alive at `now` that serve `service` (all of them for
    /// `None`), sorted by address.
    pub(crate) fn alive(&self, service: Option<&str>, now: Instant) -> Vec<Instance> {
        self.entries
            .values()
            .filter(|e| e.expires.map_or(true, |t| t > now))
            .filter(|e| serves(&e.instance, service))
            .map(|e| e.instance.clone())
            .collect()
    }

    /// The alive addresses, sorted, without copying the instances: what a
    /// plain GET answers, on the hot path of every lookup.
    pub(crate) fn alive_addrs(&self, service: Option<&str>, now: Instant) -> Vec<&str> {
        self.entries
            .values()
            .filter(|e| e.expires.map_or(true, |t| t > now))
            .filter(|e| serves(&e.instance, service))
            .map(|e| e.instance.addr.as_str())
            .collect()
    }

    /// The version of the list for `service` (the whole list for `None`).
    pub(crate) fn version(&self, service: Option<&str>) -> u64 {
        match service {
            None => self.version,
            Some(s) => self
                .service_changed
                .get(s)
                .copied()
                .unwrap_or(0)
                .max(self.wildcard_changed),
        }
    }

    /// How many entries there are, expired or not.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Whether `instance` is listed for `service`. An instance that did not say
/// what it serves (a Go GeeRPC server) is listed for every service.
fn serves(instance: &Instance, service: Option<&str>) -> bool {
    match service {
        None => true,
        Some(s) => instance.services.is_empty() || instance.services.iter().any(|x| x == s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(services: &[&str]) -> Registration {
        Registration {
            services: Some(services.iter().map(|s| s.to_string()).collect()),
            ..Registration::default()
        }
    }

    #[test]
    fn renewal_is_not_a_change_but_new_details_are() {
        let mut t = Table::new(Duration::from_secs(60));
        let now = Instant::now();
        let v0 = t.version(None);
        assert_eq!(t.put("tcp@a:1", &Registration::default(), now), Put::New);
        let v1 = t.version(None);
        assert!(v1 > v0);
        assert_eq!(
            t.put("tcp@a:1", &Registration::default(), now),
            Put::Renewed
        );
        assert_eq!(t.version(None), v1);
        assert_eq!(t.put("tcp@a:1", &reg(&["Arith"]), now), Put::Changed);
        // A plain renewal keeps the services given before.
        assert_eq!(
            t.put("tcp@a:1", &Registration::default(), now),
            Put::Renewed
        );
        assert_eq!(t.alive(None, now)[0].services, vec!["Arith".to_string()]);
    }

    #[test]
    fn service_versions_move_only_for_that_service() {
        let mut t = Table::new(Duration::ZERO);
        let now = Instant::now();
        t.put("tcp@a:1", &reg(&["Arith"]), now);
        let (arith, echo) = (t.version(Some("Arith")), t.version(Some("Echo")));
        t.put("tcp@b:1", &reg(&["Echo"]), now);
        assert_eq!(t.version(Some("Arith")), arith);
        assert!(t.version(Some("Echo")) > echo);
        assert_eq!(t.alive(Some("Arith"), now).len(), 1);
        // An instance that serves "anything" changes every service's list.
        t.put("tcp@c:1", &Registration::default(), now);
        assert!(t.version(Some("Arith")) > arith);
        assert_eq!(t.alive(Some("Arith"), now).len(), 2);
        assert!(t.remove("tcp@c:1"));
        assert!(!t.remove("tcp@c:1"));
    }

    #[test]
    fn purge_removes_only_expired_entries() {
        let mut t = Table::new(Duration::from_secs(10));
        let now = Instant::now();
        t.put("tcp@a:1", &Registration::default(), now);
        t.put(
            "tcp@b:1",
            &Registration::default(),
            now + Duration::from_secs(5),
        );
        assert_eq!(t.next_expiry(), Some(now + Duration::from_secs(10)));
        let later = now + Duration::from_secs(11);
        assert_eq!(t.alive(None, later).len(), 1);
        assert_eq!(t.purge(later), vec!["tcp@a:1".to_string()]);
        assert_eq!(t.len(), 1);
    }
}
