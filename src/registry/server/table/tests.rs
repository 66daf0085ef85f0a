//! The table's unit tests: renewals, versions, purges, caps, the legacy
//! TTL and the service preference.

use super::*;
use std::sync::Arc;

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
    assert_eq!(
        t.put("tcp@a:1", &Registration::default(), false, now),
        Ok(Put::New)
    );
    let v1 = t.version(None);
    assert!(v1 > v0);
    assert_eq!(
        t.put("tcp@a:1", &Registration::default(), false, now),
        Ok(Put::Renewed)
    );
    assert_eq!(t.version(None), v1);
    assert_eq!(
        t.put("tcp@a:1", &reg(&["Arith"]), false, now),
        Ok(Put::Changed)
    );
    // A plain renewal keeps the services given before.
    assert_eq!(
        t.put("tcp@a:1", &Registration::default(), false, now),
        Ok(Put::Renewed)
    );
    assert_eq!(
        t.alive(Wanted::default(), now)[0].services,
        vec!["Arith".to_string()]
    );
}

#[test]
fn service_versions_move_only_for_that_service() {
    let mut t = Table::new(Duration::ZERO);
    let now = Instant::now();
    let _ = t.put("tcp@a:1", &reg(&["Arith"]), false, now);
    let (arith, echo) = (t.version(Some("Arith")), t.version(Some("Echo")));
    let _ = t.put("tcp@b:1", &reg(&["Echo"]), false, now);
    assert_eq!(t.version(Some("Arith")), arith);
    assert!(t.version(Some("Echo")) > echo);
    assert_eq!(t.alive(Wanted::service(Some("Arith")), now).len(), 1);
    // An instance that names no service may change every service's
    // list; it is in Arith's only when asked for, as a:1 names Arith.
    let _ = t.put("tcp@c:1", &Registration::default(), false, now);
    assert!(t.version(Some("Arith")) > arith);
    assert_eq!(t.alive(Wanted::service(Some("Arith")), now).len(), 1);
    let with_legacy = Wanted {
        service: Some("Arith"),
        include_legacy: true,
    };
    assert_eq!(t.alive(with_legacy, now).len(), 2);
    assert!(t.remove("tcp@c:1"));
    assert!(!t.remove("tcp@c:1"));
}

#[test]
fn purge_removes_only_expired_entries() {
    let mut t = Table::new(Duration::from_secs(10));
    let now = Instant::now();
    let _ = t.put("tcp@a:1", &Registration::default(), false, now);
    let _ = t.put(
        "tcp@b:1",
        &Registration::default(),
        false,
        now + Duration::from_secs(5),
    );
    assert_eq!(t.next_expiry(), Some(now + Duration::from_secs(10)));
    let later = now + Duration::from_secs(11);
    assert_eq!(t.alive(Wanted::default(), later).len(), 1);
    assert_eq!(t.purge(later), vec!["tcp@a:1".to_string()]);
    assert_eq!(t.len(), 1);
}

#[test]
fn caps_refuse_new_addresses_and_names_but_not_renewals() {
    let mut t = Table::with_caps(Duration::ZERO, Duration::ZERO, 2, 2);
    let now = Instant::now();
    assert_eq!(t.put("tcp@a:1", &reg(&["A"]), false, now), Ok(Put::New));
    assert_eq!(t.put("tcp@b:1", &reg(&["B"]), false, now), Ok(Put::New));
    assert_eq!(
        t.put("tcp@c:1", &Registration::default(), false, now),
        Err(Full::Instances(2))
    );
    assert_eq!(t.put("tcp@a:1", &reg(&["A"]), false, now), Ok(Put::Renewed));
    assert_eq!(
        t.put("tcp@a:1", &reg(&["A", "C"]), false, now),
        Err(Full::Services(2))
    );
    assert_eq!(
        t.alive(Wanted::default(), now)[0].services,
        vec!["A".to_string()]
    );
    // Moving a:1 from A to C frees A, which is forgotten.
    assert!(t.remove("tcp@a:1"));
    assert_eq!(t.services(), 1);
    assert_eq!(t.put("tcp@a:1", &reg(&["C"]), false, now), Ok(Put::New));
    assert_eq!(t.services(), 2);
}

#[test]
fn a_forgotten_service_is_dropped_and_its_version_never_goes_back() {
    let mut t = Table::new(Duration::ZERO);
    let now = Instant::now();
    let _ = t.put("tcp@a:1", &reg(&["A"]), false, now);
    let _ = t.put("tcp@b:1", &reg(&["B"]), false, now);
    assert_eq!(t.services(), 2);
    let before = t.version(Some("A"));
    assert!(t.remove("tcp@a:1"));
    assert_eq!(t.services(), 1, "A has no instance left: forgotten");
    let gone = t.version(Some("A"));
    assert!(gone > before, "the removal is a change of A's list");
    assert!(t.alive(Wanted::service(Some("A")), now).is_empty());
    let _ = t.put("tcp@a:1", &reg(&["A"]), false, now);
    assert!(t.version(Some("A")) > gone);
    assert_eq!(t.services(), 2);
}

/// A legacy beat (a Go server's header-only POST) is kept at least the
/// legacy floor whatever the TTL; a geerpc beat at the TTL; with no TTL
/// neither expires.
#[test]
fn a_legacy_beat_is_kept_at_least_the_legacy_floor() {
    let (ttl, floor) = (Duration::from_secs(10), Duration::from_secs(300));
    let mut t = Table::with_caps(ttl, floor, usize::MAX, usize::MAX);
    let now = Instant::now();
    let _ = t.put("tcp@go:1", &Registration::default(), true, now);
    let _ = t.put("tcp@rs:1", &Registration::default(), false, now);
    let addrs = |t: &Table, at| -> Vec<String> {
        t.alive(Wanted::default(), at)
            .into_iter()
            .map(|i| i.addr)
            .collect()
    };
    // Go servers beat every 4 min: still listed then, gone after 5.
    let four_min = now + Duration::from_secs(240);
    assert_eq!(addrs(&t, four_min), ["tcp@go:1"]);
    assert_eq!(t.purge(four_min), ["tcp@rs:1"]);
    assert_eq!(t.next_expiry(), Some(now + floor));
    assert!(addrs(&t, now + floor).is_empty());
    // A TTL longer than the floor is the legacy TTL too.
    let long = Table::with_caps(Duration::from_secs(900), floor, 9, 9);
    assert_eq!(long.ttl_of(true), Some(Duration::from_secs(900)));
    assert_eq!(long.ttl_of(false), Some(Duration::from_secs(900)));
    let never = Table::with_caps(Duration::ZERO, floor, 9, 9);
    assert_eq!((never.ttl_of(true), never.ttl_of(false)), (None, None));
    // A geerpc beat after a legacy one follows the TTL again.
    let _ = t.put("tcp@go:1", &Registration::default(), false, now);
    assert_eq!(t.next_expiry(), Some(now + ttl));
}

/// Instances that name no service are listed under a service only
/// where no alive instance names it (behind a Go registry, none does),
/// or when asked for.
#[test]
fn a_service_prefers_the_instances_that_name_it() {
    let mut t = Table::new(Duration::from_secs(10));
    let now = Instant::now();
    let addrs = |t: &Table, service, include_legacy, at| -> Vec<String> {
        let w = Wanted {
            service: Some(service),
            include_legacy,
        };
        let listed: Vec<String> = t.alive(w, at).into_iter().map(|i| i.addr).collect();
        let plain: Vec<&str> = t.alive_addrs(w, at);
        assert_eq!(listed, plain, "both listings agree");
        listed
    };
    let _ = t.put("tcp@go:1", &Registration::default(), true, now);
    let _ = t.put("tcp@go:2", &Registration::default(), true, now);
    assert_eq!(addrs(&t, "Arith", false, now), ["tcp@go:1", "tcp@go:2"]);
    let later = now + Duration::from_secs(5);
    let _ = t.put("tcp@rs:1", &reg(&["Arith"]), false, later);
    let _ = t.put("tcp@rs:2", &reg(&["Echo"]), false, later);
    assert_eq!(addrs(&t, "Arith", false, later), ["tcp@rs:1"]);
    assert_eq!(
        addrs(&t, "Arith", true, later),
        ["tcp@go:1", "tcp@go:2", "tcp@rs:1"]
    );
    // Nobody names Sum: the legacy instances are the list.
    assert_eq!(addrs(&t, "Sum", false, later), ["tcp@go:1", "tcp@go:2"]);
    assert_eq!(t.alive(Wanted::default(), later).len(), 4);
    // The instance naming Arith expired (not purged yet): the legacy
    // ones are Arith's list again.
    let renewed = now + Duration::from_secs(10);
    let _ = t.put("tcp@go:1", &Registration::default(), true, renewed);
    let after = now + Duration::from_secs(16);
    assert_eq!(addrs(&t, "Arith", false, after), ["tcp@go:1"]);
}

/// The list by a full scan, as the table listed before it had an index.
fn scanned(t: &Table, w: Wanted<'_>, now: Instant) -> Vec<Instance> {
    let alive = t
        .entries
        .values()
        .filter(|e| e.expires.is_none_or(|x| x > now));
    let Some(s) = w.service else {
        return alive.map(|e| e.instance.clone()).collect();
    };
    let mut out: Vec<&Entry> = alive
        .filter(|e| e.instance.services.is_empty() || e.instance.services.iter().any(|x| x == s))
        .collect();
    if !w.include_legacy && out.iter().any(|e| !e.instance.services.is_empty()) {
        out.retain(|e| !e.instance.services.is_empty());
    }
    out.into_iter().map(|e| e.instance.clone()).collect()
}

/// What `answer` must give: the list a full scan gives now, encoded.
fn expected(t: &Table, w: Wanted<'_>, f: Format, now: Instant) -> Vec<u8> {
    let instances = scanned(t, w, now);
    let version = t.version(w.service);
    match f {
        Format::Json => {
            serde_json::to_vec(&crate::registry::Listing { version, instances }).unwrap()
        }
        Format::Addrs => {
            let addrs: Vec<String> = instances.into_iter().map(|i| i.addr).collect();
            addrs.join(",").into_bytes()
        }
    }
}

#[test]
fn a_change_reencodes_only_its_services_answer() {
    let mut t = Table::new(Duration::from_secs(60));
    let now = Instant::now();
    let _ = t.put("tcp@a:1", &reg(&["A"]), false, now);
    let _ = t.put("tcp@b:1", &reg(&["B"]), false, now);
    let (a, b) = (Wanted::service(Some("A")), Wanted::service(Some("B")));
    let a1 = t.answer(a, Format::Json, now);
    let b1 = t.answer(b, Format::Json, now);
    assert_eq!(t.encodes(), 2);
    // Asked again (by a GET or by 1,000 watchers): the same bytes.
    for _ in 0..10 {
        assert!(Arc::ptr_eq(
            &t.answer(a, Format::Json, now).bytes,
            &a1.bytes
        ));
    }
    assert_eq!(t.encodes(), 2);
    // A renewal is no change.
    assert_eq!(t.put("tcp@a:1", &reg(&["A"]), false, now), Ok(Put::Renewed));
    assert!(Arc::ptr_eq(
        &t.answer(a, Format::Json, now).bytes,
        &a1.bytes
    ));
    // A change to A: A's answer is encoded again, B's is kept.
    let _ = t.put("tcp@a:2", &reg(&["A"]), false, now);
    let a2 = t.answer(a, Format::Json, now);
    assert!(a2.version > a1.version);
    assert_eq!(&a2.bytes[..], expected(&t, a, Format::Json, now));
    assert!(Arc::ptr_eq(
        &t.answer(b, Format::Json, now).bytes,
        &b1.bytes
    ));
    assert_eq!(t.encodes(), 3);
    // Each format is encoded once per change.
    let plain = t.answer(a, Format::Addrs, now);
    assert_eq!(&plain.bytes[..], b"tcp@a:1,tcp@a:2");
    let _ = t.answer(a, Format::Addrs, now);
    assert_eq!(t.encodes(), 4);
}

/// An expired entry leaves its list's answer at its expiry, before the
/// reaper purges it; the purge moves the version, and the answer again.
#[test]
fn an_expiry_invalidates_the_answer_before_and_after_the_purge() {
    let mut t = Table::new(Duration::from_secs(10));
    let now = Instant::now();
    let _ = t.put("tcp@a:1", &reg(&["A"]), false, now);
    let _ = t.put("tcp@a:2", &reg(&["A"]), false, now + Duration::from_secs(5));
    let a = Wanted::service(Some("A"));
    let before = t.answer(a, Format::Addrs, now);
    assert_eq!(&before.bytes[..], b"tcp@a:1,tcp@a:2");
    let later = now + Duration::from_secs(11);
    let expired = t.answer(a, Format::Addrs, later);
    assert_eq!(&expired.bytes[..], b"tcp@a:2");
    assert_eq!(expired.version, before.version, "not purged yet");
    assert_eq!(t.purge(later), ["tcp@a:1"]);
    let purged = t.answer(a, Format::Addrs, later);
    assert!(purged.version > before.version);
    assert_eq!(&purged.bytes[..], b"tcp@a:2");
    // The whole list's answer too.
    let all = t.answer(Wanted::default(), Format::Addrs, later);
    assert_eq!(&all.bytes[..], b"tcp@a:2");
}

/// Random puts, removals, expiries and purges: every kept answer, in both
/// formats, for every kind of list, is the one computed afresh.
#[test]
fn kept_answers_always_match_the_table() {
    let mut t = Table::new(Duration::from_secs(10));
    let start = Instant::now();
    let mut now = start;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: u64| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (seed >> 33) % n
    };
    let names = ["A", "B", "C"];
    for step in 0..2_000 {
        let addr = format!("tcp@h:{}", next(12));
        match next(10) {
            0..=4 => {
                let services: Vec<&str> = names.iter().copied().filter(|_| next(3) == 0).collect();
                let r = if next(4) == 0 {
                    Registration::default()
                } else {
                    Registration {
                        weight: Some(1 + next(3) as u32),
                        ..reg(&services)
                    }
                };
                let _ = t.put(&addr, &r, next(5) == 0, now);
            }
            5 => {
                t.remove(&addr);
            }
            6 | 7 => now += Duration::from_secs(next(4)),
            _ => {
                t.purge(now);
            }
        }
        for service in [None, Some("A"), Some("B"), Some("C"), Some("Nobody")] {
            for include_legacy in [false, true] {
                for f in [Format::Json, Format::Addrs] {
                    let w = Wanted {
                        service,
                        include_legacy,
                    };
                    let got = t.answer(w, f, now);
                    assert_eq!(got.version, t.version(service), "step {step}");
                    assert_eq!(
                        String::from_utf8_lossy(&got.bytes),
                        String::from_utf8_lossy(&expected(&t, w, f, now)),
                        "step {step}: {w:?} {f:?}"
                    );
                }
            }
        }
    }
    // Most answers were kept ones, not encoded again.
    assert!(t.encodes() < 2_000 * 20 / 2, "{} encodes", t.encodes());
}

/// A renewal (the heartbeat's fast path) moves the expiry and the beat,
/// and keeps the registration's time.
#[test]
fn a_renewal_extends_the_life_of_its_entry() {
    let mut t = Table::new(Duration::from_secs(10));
    let now = Instant::now();
    let _ = t.put("tcp@a:1", &reg(&["A", "B"]), false, now);
    let at = now + Duration::from_secs(8);
    assert_eq!(
        t.put("tcp@a:1", &reg(&["A", "B"]), false, at),
        Ok(Put::Renewed)
    );
    let later = now + Duration::from_secs(15);
    assert!(t.purge(later).is_empty());
    let rows = t.rows(later);
    assert_eq!((rows[0].since, rows[0].beat), (now, at));
    assert_eq!(rows[0].expires, Some(at + Duration::from_secs(10)));
    // Services sent unsorted are no change either (the slow path sorts).
    assert_eq!(
        t.put("tcp@a:1", &reg(&["B", "A"]), false, later),
        Ok(Put::Renewed)
    );
    assert_eq!(t.purge(at + Duration::from_secs(10)), Vec::<String>::new());
}
