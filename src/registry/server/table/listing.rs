//! The table's lists as answered: each list (one service's, with or
//! without legacy instances, or the whole table) is encoded once, in the
//! form asked (the JSON listing, or the comma-separated addresses of the
//! plain answer's headers), and the bytes are shared by every `GET` and
//! every long poll that asks for that list until it changes.
//!
//! Before this, a `GET` listed and encoded on every request, and a change
//! seen by 1,000 watchers was encoded 1,000 times (once per watcher).
//!
//! Invariant: a kept answer is the one `listed` would give now, as long as
//! its version is the list's version and `until` (the earliest expiry of
//! an entry it looked at and found alive) has not come: nothing else moves
//! a list (a renewal moves an expiry later, never a listing). So a change
//! invalidates only the lists whose version it moves, and an expiry, even
//! before the reaper purges it, invalidates the lists it is in.
//!
//! Bounded: one slot per known service and legacy flag, one for the
//! whole table, and one shared by every unknown service name (their lists
//! are all the same: the legacy instances), so a peer asking for made-up
//! names adds nothing. A forgotten service's slots are dropped with it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::{Entry, Table, Wanted};
use crate::xclient::Instance;

/// How a list is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// `{"version":V,"instances":[...]}`, the body of a JSON answer.
    Json,
    /// The sorted addresses, comma-separated: the plain answer's headers.
    Addrs,
}

/// A list's answer, encoded once and shared.
#[derive(Debug, Clone)]
pub(crate) struct Encoded {
    pub(crate) version: u64,
    pub(crate) format: Format,
    /// The JSON body, or the addresses (ASCII: addresses are checked).
    pub(crate) bytes: Arc<[u8]>,
}

/// One list's kept answers, by format.
struct Slot {
    version: u64,
    until: Option<Instant>,
    json: Option<Arc<[u8]>>,
    addrs: Option<Arc<[u8]>>,
}

impl Slot {
    fn get(&self, version: u64, now: Instant, format: Format) -> Option<&Arc<[u8]>> {
        if self.version != version || self.until.is_some_and(|t| t <= now) {
            return None;
        }
        match format {
            Format::Json => self.json.as_ref(),
            Format::Addrs => self.addrs.as_ref(),
        }
    }
}

/// The kept answers (see the module's comment).
#[derive(Default)]
pub(crate) struct Cache {
    all: Option<Slot>,
    unknown: Option<Slot>,
    /// Per known service: without, then with legacy instances.
    services: HashMap<String, [Option<Slot>; 2]>,
    /// How many lists were encoded, for the tests and the benchmark notes.
    encodes: u64,
}

/// Which slot a list is kept in.
enum Key<'a> {
    All,
    Unknown,
    Service(&'a str, bool),
}

impl Cache {
    /// Drops the answers of `service`, which no instance serves any more.
    pub(super) fn forget(&mut self, service: &str) {
        self.services.remove(service);
    }

    fn slot(&mut self, key: &Key<'_>) -> &mut Option<Slot> {
        match *key {
            Key::All => &mut self.all,
            Key::Unknown => &mut self.unknown,
            Key::Service(s, legacy) => {
                if !self.services.contains_key(s) {
                    self.services.insert(s.to_string(), [None, None]);
                }
                let slots = self.services.get_mut(s).expect("inserted above");
                &mut slots[usize::from(legacy)]
            }
        }
    }

    fn get(&self, key: &Key<'_>, version: u64, now: Instant, f: Format) -> Option<Arc<[u8]>> {
        let slot = match *key {
            Key::All => self.all.as_ref(),
            Key::Unknown => self.unknown.as_ref(),
            Key::Service(s, legacy) => self.services.get(s)?[usize::from(legacy)].as_ref(),
        };
        slot?.get(version, now, f).cloned()
    }

    fn put(
        &mut self,
        key: &Key<'_>,
        version: u64,
        until: Option<Instant>,
        f: Format,
        b: &Arc<[u8]>,
    ) {
        let slot = self.slot(key);
        let fresh = slot
            .as_ref()
            .is_some_and(|s| s.version == version && s.until == until);
        if !fresh {
            *slot = Some(Slot {
                version,
                until,
                json: None,
                addrs: None,
            });
        }
        let s = slot.as_mut().expect("set above");
        match f {
            Format::Json => s.json = Some(b.clone()),
            Format::Addrs => s.addrs = Some(b.clone()),
        }
    }
}

/// [`Listing`](crate::registry::Listing) without owning the instances.
#[derive(serde::Serialize)]
struct ListingRef<'a> {
    version: u64,
    instances: Vec<&'a Instance>,
}

impl Table {
    /// The answer for the list `wanted` names at `now`, in `format`: the
    /// kept one while its list is unchanged, else encoded now and kept.
    pub(crate) fn answer(&mut self, wanted: Wanted<'_>, format: Format, now: Instant) -> Encoded {
        let version = self.version(wanted.service);
        let key = match wanted.service {
            None => Key::All,
            Some(s) if self.services.contains_key(s) => Key::Service(s, wanted.include_legacy),
            Some(_) => Key::Unknown,
        };
        if let Some(bytes) = self.cache.get(&key, version, now, format) {
            return Encoded {
                version,
                format,
                bytes,
            };
        }
        let (entries, until) = self.listed(wanted, now);
        let bytes = encode(&entries, version, format);
        self.cache.encodes += 1;
        self.cache.put(&key, version, until, format, &bytes);
        Encoded {
            version,
            format,
            bytes,
        }
    }

    /// How many lists were encoded since the start.
    #[cfg(test)]
    pub(crate) fn encodes(&self) -> u64 {
        self.cache.encodes
    }
}

fn encode(entries: &[&Entry], version: u64, format: Format) -> Arc<[u8]> {
    match format {
        Format::Json => {
            let instances = entries.iter().map(|e| &e.instance).collect();
            serde_json::to_vec(&ListingRef { version, instances })
                .expect("a listing serializes")
                .into()
        }
        Format::Addrs => {
            let mut out =
                Vec::with_capacity(entries.iter().map(|e| e.instance.addr.len() + 1).sum());
            for (i, e) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(e.instance.addr.as_bytes());
            }
            out.into()
        }
    }
}
