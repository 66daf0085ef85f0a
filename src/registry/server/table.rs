//! The registry's table of instances, their expiry times and list versions.
//!
//! Pure state, no I/O: the HTTP side locks it, asks, and answers.
//!
//! Bounded: at most `max_instances` addresses and `max_services` service
//! names; a service name no instance serves any more is forgotten.
//!
//! Indexed: each service knows the addresses that name it, and the
//! instances that name none are kept apart, so a service's list reads its
//! own instances only (a full scan of 10,000 entries per `GET` made one
//! service's list 3.1k/s). Each list's answer is encoded once and kept
//! until its version moves or one of its instances expires (`listing`).
//!
//! Legacy registrations: a `POST` without geerpc's JSON body (what a Go
//! GeeRPC server sends, every 4 minutes whatever the registry's TTL) is
//! kept at least `legacy_ttl` after each beat, so that a short `--ttl`
//! does not drop Go servers between beats. An instance that names no
//! service is listed under a service only where no alive instance names
//! that service, unless the query asks for legacy instances too
//! ([`Wanted`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::registry::Registration;
use crate::xclient::Instance;

/// Why a [`Table::put`] was refused: the table is at one of its caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// `max_instances` addresses are listed.
    Instances(usize),
    /// `max_services` service names are known.
    Services(usize),
}

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
    /// When the address was registered (this time: after an expiry or a
    /// deregistration it starts again), and when it last beat.
    since: Instant,
    beat: Instant,
}

/// One entry as the registry's page shows it.
pub(crate) struct Row {
    pub(crate) instance: Instance,
    pub(crate) since: Instant,
    pub(crate) beat: Instant,
    pub(crate) expires: Option<Instant>,
}

/// Instances by address (sorted, so listings come out sorted), and the
/// version at which each service's list last changed.
pub(crate) struct Table {
    entries: BTreeMap<String, Entry>,
    ttl: Option<Duration>,
    /// The TTL of a legacy beat: the longer of `ttl` and the legacy floor
    /// (`None` with `ttl`: entries never expire).
    legacy_ttl: Option<Duration>,
    /// Bumped on every change of the set (not on a plain renewal).
    version: u64,
    /// Version of the last change to an instance that did not say what it
    /// serves (it may be listed under any service).
    wildcard_changed: u64,
    /// Per service name: the version of the last change to an instance
    /// serving it, and how many instances serve it. Invariant: every name
    /// here is served by at least one entry (a name whose count falls to 0
    /// is removed, its version folded into `forgotten`).
    services: HashMap<String, Service>,
    /// The highest version of a forgotten service: an unknown name's list
    /// has at least this version, so a forgotten service's version never
    /// goes back (watchers and discovery compare versions for equality).
    forgotten: u64,
    /// The addresses of the entries that name no service. Invariant: an
    /// entry's address is here iff its instance names no service.
    legacy: BTreeSet<String>,
    /// No entry expires before this (`None`: none expires). A lower bound,
    /// not the exact time: a renewal moves an expiry later without a scan;
    /// `purge` scans only once it is reached, and makes it exact again.
    expiry_floor: Option<Instant>,
    /// The encoded answers (`listing`), kept per list until it changes.
    cache: listing::Cache,
    max_instances: usize,
    max_services: usize,
}

struct Service {
    changed: u64,
    /// The addresses of the entries naming this service (never empty, see
    /// `services`); with `legacy`, what a service's list reads.
    addrs: BTreeSet<String>,
}

/// Which instances a listing wants.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Wanted<'a> {
    /// Only those listed under this service (all of them for `None`).
    pub(crate) service: Option<&'a str>,
    /// Instances that name no service are listed under every service, even
    /// where some instance names it (`include_legacy=true`).
    pub(crate) include_legacy: bool,
}

impl<'a> Wanted<'a> {
    /// The instances listed under `service` (all for `None`), instances
    /// that name no service only where none names it.
    #[cfg(test)]
    pub(crate) fn service(service: Option<&'a str>) -> Wanted<'a> {
        Wanted {
            service,
            include_legacy: false,
        }
    }
}

impl Table {
    /// An empty table without caps and without a legacy floor. `ttl` zero:
    /// entries never expire.
    #[cfg(test)]
    pub(crate) fn new(ttl: Duration) -> Table {
        Table::with_caps(ttl, Duration::ZERO, usize::MAX, usize::MAX)
    }

    /// An empty table holding at most `max_instances` addresses and
    /// `max_services` service names, keeping legacy beats at least
    /// `legacy_floor` (see the module's comment).
    pub(crate) fn with_caps(
        ttl: Duration,
        legacy_floor: Duration,
        max_instances: usize,
        max_services: usize,
    ) -> Table {
        // Versions start at the clock, so that a watcher holding the version
        // of a registry that restarted since sees a different one.
        let base = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(1);
        Table {
            entries: BTreeMap::new(),
            ttl: (!ttl.is_zero()).then_some(ttl),
            legacy_ttl: (!ttl.is_zero()).then_some(ttl.max(legacy_floor)),
            version: base,
            wildcard_changed: base,
            services: HashMap::new(),
            forgotten: 0,
            legacy: BTreeSet::new(),
            expiry_floor: None,
            cache: listing::Cache::default(),
            max_instances,
            max_services,
        }
    }

    /// Marks the lists `instance` is in as changed at the current version.
    fn touch(&mut self, instance: &Instance) {
        let v = self.version;
        if instance.services.is_empty() {
            self.wildcard_changed = v;
        } else {
            for s in &instance.services {
                if let Some(svc) = self.services.get_mut(s) {
                    svc.changed = v;
                }
            }
        }
    }

    /// Indexes `instance` in (`add`) or out of the services it names (or
    /// `legacy`), forgetting a name no instance serves any more.
    fn count(&mut self, instance: &Instance, add: bool) {
        let addr = &instance.addr;
        if instance.services.is_empty() {
            if add {
                self.legacy.insert(addr.clone());
            } else {
                self.legacy.remove(addr);
            }
        }
        for s in &instance.services {
            if add {
                let floor = self.forgotten;
                let svc = self.services.entry(s.clone()).or_insert(Service {
                    changed: floor,
                    addrs: BTreeSet::new(),
                });
                svc.addrs.insert(addr.clone());
            } else if let Some(svc) = self.services.get_mut(s) {
                svc.addrs.remove(addr);
                if svc.addrs.is_empty() {
                    // Touched at this version by the caller first.
                    self.forgotten = self.forgotten.max(svc.changed);
                    self.services.remove(s);
                    self.cache.forget(s);
                }
            }
        }
    }

    /// Whether `new` may replace `old` (None: a new address) within the caps.
    fn check_caps(&self, old: Option<&Instance>, new: &Instance) -> Result<(), Full> {
        if old.is_none() && self.entries.len() >= self.max_instances {
            return Err(Full::Instances(self.max_instances));
        }
        let added = new
            .services
            .iter()
            .filter(|s| !self.services.contains_key(*s))
            .count();
        if added > 0 && self.services.len() + added > self.max_services {
            return Err(Full::Services(self.max_services));
        }
        Ok(())
    }

    /// How long a beat keeps its address listed: the TTL, or for a
    /// `legacy` beat the legacy TTL (`None`: for ever).
    pub(crate) fn ttl_of(&self, legacy: bool) -> Option<Duration> {
        if legacy {
            self.legacy_ttl
        } else {
            self.ttl
        }
    }

    /// Registers or renews `addr`; `legacy`: the beat came without
    /// geerpc's JSON body (see the module's comment). A registration
    /// without details keeps the details an earlier one gave. Refused,
    /// changing nothing, when it would take the table past a cap (a renewal
    /// never does).
    pub(crate) fn put(
        &mut self,
        addr: &str,
        reg: &Registration,
        legacy: bool,
        now: Instant,
    ) -> Result<Put, Full> {
        let expires = self.ttl_of(legacy).map(|t| now + t);
        // The heartbeat's path (a renewal saying what it said before):
        // no clone of the instance, no new key.
        if let Some(e) = self.entries.get_mut(addr) {
            if e.expires.is_none_or(|t| t > now) && same(&e.instance, reg) {
                e.expires = expires;
                e.beat = now;
                if let Some(t) = expires {
                    self.expiry_floor = Some(self.expiry_floor.map_or(t, |f| f.min(t)));
                }
                return Ok(Put::Renewed);
            }
        }
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
            .is_some_and(|e| e.expires.is_none_or(|t| t > now));
        // An expired entry not purged yet counts as gone.
        let changed = !was_alive || old.as_ref() != Some(&instance);
        if changed {
            self.check_caps(old.as_ref(), &instance)?;
            self.version += 1;
            if let Some(old) = &old {
                self.touch(old);
                self.count(old, false);
            }
            self.count(&instance, true);
            self.touch(&instance);
        }
        if let Some(t) = expires {
            // A beat may move an expiry earlier (a legacy beat, then a
            // geerpc one): the floor follows every put.
            self.expiry_floor = Some(self.expiry_floor.map_or(t, |f| f.min(t)));
        }
        let since = match self.entries.get(addr) {
            Some(e) if was_alive => e.since,
            _ => now,
        };
        self.entries.insert(
            addr.to_string(),
            Entry {
                instance,
                expires,
                since,
                beat: now,
            },
        );
        Ok(match (changed, was_alive) {
            (_, false) => Put::New,
            (true, true) => Put::Changed,
            (false, true) => Put::Renewed,
        })
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
                self.count(&e.instance, false);
                true
            }
            None => false,
        }
    }

    /// Removes every entry expired at `now`; returns their addresses.
    /// Scans the entries only once `expiry_floor` is reached (the reaper
    /// calls this on every wake: each parked poll and each change).
    pub(crate) fn purge(&mut self, now: Instant) -> Vec<String> {
        if self.expiry_floor.is_none_or(|f| f > now) {
            return Vec::new();
        }
        let mut expired = Vec::new();
        let mut floor: Option<Instant> = None;
        for (a, e) in &self.entries {
            match e.expires {
                Some(t) if t <= now => expired.push(a.clone()),
                Some(t) => floor = Some(floor.map_or(t, |f| f.min(t))),
                None => {}
            }
        }
        self.expiry_floor = floor;
        for a in &expired {
            self.remove(a);
        }
        expired
    }

    /// No entry expires before this (it may be earlier than the next
    /// expiry: see `expiry_floor`); `None`: no entry expires.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.expiry_floor
    }

    /// The entries alive at `now` listed as `wanted` says, sorted by
    /// address: those that name the service and, where none does (or when
    /// legacy instances are wanted too), those that name no service. Also
    /// the earliest expiry among the entries looked at and alive: the list
    /// stays as it is until then unless the table changes.
    fn listed(&self, wanted: Wanted<'_>, now: Instant) -> (Vec<&Entry>, Option<Instant>) {
        let alive = |e: &&Entry| e.expires.is_none_or(|t| t > now);
        let Some(s) = wanted.service else {
            let out: Vec<&Entry> = self.entries.values().filter(alive).collect();
            let until = earliest(&out);
            return (out, until);
        };
        let get = |a: &String| self.entries.get(a).filter(alive);
        let named: Vec<&Entry> = self
            .services
            .get(s)
            .map(|svc| svc.addrs.iter().filter_map(get).collect())
            .unwrap_or_default();
        let legacy: Vec<&Entry> = self.legacy.iter().filter_map(get).collect();
        let until = earliest(&named).into_iter().chain(earliest(&legacy)).min();
        if !named.is_empty() && !wanted.include_legacy {
            return (named, until);
        }
        if legacy.is_empty() {
            return (named, until);
        }
        // Both sorted by address, and disjoint: merge them.
        let mut out = Vec::with_capacity(named.len() + legacy.len());
        let (mut a, mut b) = (named.into_iter().peekable(), legacy.into_iter().peekable());
        loop {
            let take_a = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => x.instance.addr < y.instance.addr,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            out.extend(if take_a { a.next() } else { b.next() });
        }
        (out, until)
    }

    /// The instances alive at `now` listed as `wanted` says, sorted by
    /// address.
    pub(crate) fn alive(&self, wanted: Wanted<'_>, now: Instant) -> Vec<Instance> {
        self.listed(wanted, now)
            .0
            .into_iter()
            .map(|e| e.instance.clone())
            .collect()
    }

    /// The alive entries with their times, sorted by address: the
    /// registry's page.
    pub(crate) fn rows(&self, now: Instant) -> Vec<Row> {
        self.entries
            .values()
            .filter(|e| e.expires.is_none_or(|t| t > now))
            .map(|e| Row {
                instance: e.instance.clone(),
                since: e.since,
                beat: e.beat,
                expires: e.expires,
            })
            .collect()
    }

    /// The alive addresses, sorted, without copying the instances.
    #[cfg(test)]
    pub(crate) fn alive_addrs(&self, wanted: Wanted<'_>, now: Instant) -> Vec<&str> {
        self.listed(wanted, now)
            .0
            .into_iter()
            .map(|e| e.instance.addr.as_str())
            .collect()
    }

    /// How many instances are alive at `now`, and how many name each
    /// service (sorted by name), for the metrics.
    #[cfg(feature = "metrics")]
    pub(crate) fn counts(&self, now: Instant) -> (usize, Vec<(String, usize)>) {
        let mut all = 0;
        let mut by: BTreeMap<&str, usize> = BTreeMap::new();
        for e in self
            .entries
            .values()
            .filter(|e| e.expires.is_none_or(|t| t > now))
        {
            all += 1;
            for s in &e.instance.services {
                *by.entry(s.as_str()).or_default() += 1;
            }
        }
        (
            all,
            by.into_iter().map(|(s, n)| (s.to_string(), n)).collect(),
        )
    }

    /// The version of the list for `service` (the whole list for `None`).
    pub(crate) fn version(&self, service: Option<&str>) -> u64 {
        match service {
            None => self.version,
            Some(s) => self
                .services
                .get(s)
                .map_or(self.forgotten, |svc| svc.changed)
                .max(self.wildcard_changed),
        }
    }

    /// How many entries there are, expired or not.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// How many service names are known (each served by some entry).
    #[cfg(test)]
    pub(crate) fn services(&self) -> usize {
        self.services.len()
    }
}

/// Whether `reg` would leave `instance` as it is. Services sent unsorted
/// or twice compare unequal (the instance's are sorted and distinct):
/// `put`'s slow path decides those.
fn same(instance: &Instance, reg: &Registration) -> bool {
    let services = reg
        .services
        .as_ref()
        .is_none_or(|s| *s == instance.services);
    services
        && reg.weight.is_none_or(|w| w == instance.weight)
        && reg
            .metadata
            .as_ref()
            .is_none_or(|m| *m == instance.metadata)
}

/// The earliest expiry among `entries`.
fn earliest(entries: &[&Entry]) -> Option<Instant> {
    entries.iter().filter_map(|e| e.expires).min()
}

mod listing;
pub(crate) use listing::{Encoded, Format};
#[cfg(test)]
mod tests;
