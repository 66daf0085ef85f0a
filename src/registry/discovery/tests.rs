//! Unit tests of the discovery's list installation: overlapping fetches,
//! a registry whose version went back, a restarted registry.

use super::kept::Start;
use super::*;

fn fetch(seq: u64, went_back: bool) -> Source {
    Source::Fetch { seq, went_back }
}

fn addrs(d: &RegistryDiscovery) -> Vec<String> {
    let snap = d.snapshot().unwrap();
    snap.instances.iter().map(|i| i.addr.clone()).collect()
}

/// A registry restarted behind its old version: a listing asked for
/// before the watch saw that, landing after, is from the old registry
/// (its version is higher) and must not come back.
#[test]
fn a_listing_sent_before_the_version_went_back_is_dropped() {
    let d = RegistryDiscovery::builder("http://127.0.0.1:9/_rpc_/registry")
        .long_poll(false)
        .build()
        .unwrap();
    let one = |a: &str| vec![Instance::new(a)];
    d.shared.install(
        one("tcp@127.0.0.1:1"),
        Some(Some(100)),
        fetch(2, false),
        None,
    );
    d.shared
        .install(one("tcp@127.0.0.1:2"), Some(Some(5)), fetch(3, true), None);
    d.shared.install(
        one("tcp@127.0.0.1:1"),
        Some(Some(100)),
        fetch(1, false),
        None,
    );
    assert_eq!(addrs(&d), ["tcp@127.0.0.1:2"]);
    // Sent after: the registry's list again, by versions as usual.
    d.shared
        .install(one("tcp@127.0.0.1:3"), Some(Some(6)), fetch(4, false), None);
    assert_eq!(addrs(&d), ["tcp@127.0.0.1:3"]);
    // By hand: always.
    d.update(one("tcp@127.0.0.1:4")).unwrap();
    assert_eq!(addrs(&d), ["tcp@127.0.0.1:4"]);
}

fn start(epoch: &str, warmup_ms: u64) -> Option<Start<'_>> {
    Some(Start {
        epoch,
        warmup: Duration::from_millis(warmup_ms),
    })
}

/// A restarted registry (a new epoch) lists nothing at first: the last
/// list stays, with the instances already back, until every one is
/// back or the warmup ends; then the registry's list, even empty.
#[test]
fn a_restarted_registry_never_empties_the_list_during_its_warmup() {
    let d = RegistryDiscovery::builder("http://127.0.0.1:9/_rpc_/registry")
        .long_poll(false)
        .build()
        .unwrap();
    let (a, b, c) = ("tcp@127.0.0.1:1", "tcp@127.0.0.1:2", "tcp@127.0.0.1:3");
    // A listing of `addrs` at `version`, fetch `seq`, from start `epoch`.
    let put = |addrs: &[&str], version: u64, seq: u64, epoch: &str, warmup_ms: u64| {
        let list = addrs.iter().map(|x| Instance::new(*x)).collect();
        let from = fetch(seq, false);
        let start = start(epoch, warmup_ms);
        d.shared.install(list, Some(Some(version)), from, start);
    };
    put(&[a, b], 900, 1, "e1", 0);
    assert_eq!(addrs(&d), [a, b]);
    // The new start's versions are lower, and its list is empty.
    put(&[], 10, 2, "e2", 60_000);
    assert_eq!(addrs(&d), [a, b]);
    // A listing sent to the old start before, landing late, is dropped.
    put(&[a], 901, 1, "e1", 0);
    assert_eq!(addrs(&d), [a, b]);
    // A new instance shows at once; the missing ones stay meanwhile.
    put(&[c], 11, 3, "e2", 59_000);
    assert_eq!(addrs(&d), [a, b, c]);
    // Back, then gone again: the registry said so; it is not kept.
    put(&[a, c], 12, 4, "e2", 59_000);
    put(&[c], 13, 5, "e2", 59_000);
    assert_eq!(addrs(&d), [b, c]);
    // All back: the registry's list from now on, removals included.
    put(&[b, c], 14, 6, "e2", 58_000);
    assert!(d.shared.state.read().kept.is_none());
    put(&[c], 15, 7, "e2", 0);
    assert_eq!(addrs(&d), [c]);
    // Another restart, whose warmup runs out with one instance back.
    put(&[], 1, 8, "e3", 60_000);
    assert_eq!(addrs(&d), [c]);
    put(&[a], 2, 9, "e3", 50_000);
    assert_eq!(addrs(&d), [a, c]);
    d.shared.state.write().kept.as_mut().unwrap().until = Instant::now();
    put(&[a], 2, 10, "e3", 0);
    assert_eq!(addrs(&d), [a]);
    // A restart with no warmup is followed at once, empty or not.
    put(&[], 1, 11, "e4", 0);
    assert!(d.snapshot().unwrap().instances.is_empty());
}

/// Overlapping fetches can answer out of order: an older listing that
/// lands last must not replace a newer one.
#[test]
fn an_older_listing_never_replaces_a_newer_one() {
    let d = RegistryDiscovery::builder("http://127.0.0.1:9/_rpc_/registry")
        .long_poll(false)
        .build()
        .unwrap();
    let both = vec![
        Instance::new("tcp@127.0.0.1:1"),
        Instance::new("tcp@127.0.0.1:2"),
    ];
    d.shared
        .install(both.clone(), Some(Some(12)), fetch(1, false), None);
    d.shared.install(
        vec![Instance::new("tcp@127.0.0.1:1")],
        Some(Some(11)),
        fetch(2, false),
        None,
    );
    let snap = d.snapshot().unwrap();
    assert_eq!(&*snap.instances, &both[..]);
    // A newer one does replace it; a Go registry's (no version) too.
    d.shared.install(
        vec![Instance::new("tcp@127.0.0.1:2")],
        Some(Some(13)),
        fetch(3, false),
        None,
    );
    assert_eq!(d.snapshot().unwrap().instances.len(), 1);
    d.shared
        .install(Vec::new(), Some(None), fetch(4, false), None);
    assert!(d.snapshot().unwrap().instances.is_empty());
}

/// `long_poll(false)` starts no thread, yet `Discovery::watch` still
/// signals every change of the list: the two are different things.
#[test]
fn without_the_long_poll_watch_still_signals_changes() {
    let d = RegistryDiscovery::builder("http://127.0.0.1:9/_rpc_/registry")
        .long_poll(false)
        .build()
        .unwrap();
    assert!(d.poller.is_none(), "no long-poll thread");
    let changes = d.watch().expect("a change channel, long poll or not");
    d.shared.install(
        vec![Instance::new("tcp@127.0.0.1:1")],
        Some(Some(1)),
        fetch(1, false),
        None,
    );
    assert!(changes.try_recv().is_ok(), "a fetched change is signalled");
    // The same list again is no change.
    d.shared.install(
        vec![Instance::new("tcp@127.0.0.1:1")],
        Some(Some(2)),
        fetch(2, false),
        None,
    );
    assert!(changes.try_recv().is_err());
    d.update(Vec::new()).unwrap();
    assert!(changes.try_recv().is_ok(), "a list given by hand too");
    // On by default, with its thread.
    let polling = RegistryDiscovery::new("http://127.0.0.1:9/_rpc_/registry").unwrap();
    assert!(polling.poller.is_some());
}
