//! The table's unit tests: renewals, versions, purges, caps, the legacy
//! TTL and the service preference.

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
