//! The registry's scheduling policy (Linux only): its request threads
//! (`geerpc-reg-conn`, tiny_http's, and the workers, `geerpc-reg-http`) run
//! under `SCHED_BATCH` by default, and keep the policy they inherit with
//! `RegistryBuilder::batch_scheduling(false)`; its other threads keep the
//! default policy either way.
//!
//! A binary of its own: the checks read every thread of the process, so no
//! other test's registry may run meanwhile (its tests take `ONE_AT_A_TIME`,
//! and look only at threads that were not there before their registry).
#![cfg(target_os = "linux")]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use geerpc::Registry;
use parking_lot::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// `SCHED_OTHER` and `SCHED_BATCH`, as `/proc/*/stat` shows them.
const OTHER: u32 = 0;
const BATCH: u32 = 3;

/// A thread of this process: its id, name and scheduling policy.
#[derive(Debug)]
struct Thread {
    tid: u32,
    name: String,
    policy: u32,
}

/// This process's threads named `geerpc-reg-...`, each with its scheduling
/// policy (field 41 of `/proc/self/task/*/stat`).
fn registry_threads() -> Vec<Thread> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let (Ok(name), Ok(stat)) = (
            std::fs::read_to_string(e.path().join("comm")),
            std::fs::read_to_string(e.path().join("stat")),
        ) else {
            continue; // the thread ended meanwhile
        };
        if name.starts_with("geerpc-reg-") {
            out.push(Thread {
                tid: e.file_name().to_str().unwrap().parse().unwrap(),
                name: name.trim().to_string(),
                policy: policy(&stat),
            });
        }
    }
    out
}

/// The registry threads not among `before` (those of earlier registries
/// linger: tiny_http's end by themselves, seconds later).
fn new_threads(before: &HashSet<u32>) -> Vec<Thread> {
    let mut threads = registry_threads();
    threads.retain(|t| !before.contains(&t.tid));
    threads
}

fn tids() -> HashSet<u32> {
    registry_threads().into_iter().map(|t| t.tid).collect()
}

/// The policy in a `/proc/.../stat` line.
fn policy(stat: &str) -> u32 {
    // Fields after the parenthesised name start at field 3.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split(' ').nth(41 - 3).unwrap().parse().unwrap()
}

/// Whether this thread runs under the default policy (the registry
/// changes only threads started from one).
fn under_default_policy() -> bool {
    policy(&std::fs::read_to_string("/proc/thread-self/stat").unwrap()) == OTHER
}

/// Whether a thread started here under the default policy may switch to
/// `SCHED_BATCH`, as the registry's threads try to (a sandbox may refuse).
fn batch_policy_allowed() -> bool {
    // SAFETY: a zeroed `sched_param` is valid; the call changes only the
    // scoped thread it runs on.
    let switched = std::thread::scope(|s| {
        s.spawn(|| unsafe {
            let param: libc::sched_param = std::mem::zeroed();
            libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_BATCH, &param) == 0
        })
        .join()
        .unwrap()
    });
    under_default_policy() && switched
}

/// Asks `reg` for its list, so that its threads are up: a worker names
/// itself and sets its policy before it takes its first request.
fn answered(reg: &Registry) {
    let resp = ureq::get(reg.url()).call().unwrap();
    assert_eq!(resp.status(), 200);
}

fn want(name: &str, request_threads: u32) -> u32 {
    match name {
        "geerpc-reg-conn" | "geerpc-reg-http" => request_threads,
        // The reaper, the ticker, the hold thread keep the default policy.
        _ => OTHER,
    }
}

#[test]
fn http_threads_are_named_and_batch_scheduled() {
    let _one = ONE_AT_A_TIME.lock();
    if !batch_policy_allowed() {
        // Run under another policy (`chrt`) or refused it: the registry
        // leaves its threads alone then, by design.
        eprintln!("skipped: not under SCHED_OTHER, or SCHED_BATCH refused");
        return;
    }
    let before = tids();
    let reg = Registry::builder().addr("127.0.0.1:0").start().unwrap();
    // Answers, so its threads are up; tiny_http's pool starts four
    // connection threads before any connection.
    answered(&reg);
    // A worker names itself, then sets its policy, once it first runs:
    // with four, some may not have run yet.
    let give_up = Instant::now() + Duration::from_secs(5);
    let threads = loop {
        let threads = new_threads(&before);
        let conn = threads
            .iter()
            .filter(|t| t.name == "geerpc-reg-conn")
            .count();
        let http = threads
            .iter()
            .filter(|t| t.name == "geerpc-reg-http")
            .count();
        let settled = threads
            .iter()
            .filter(|t| t.name == "geerpc-reg-conn" || t.name == "geerpc-reg-http")
            .all(|t| t.policy == BATCH);
        let up = conn >= 2 && http == Registry::DEFAULT_WORKERS;
        if (up && settled) || Instant::now() > give_up {
            break threads;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // The accept thread and at least one connection thread; every worker.
    let conn = threads
        .iter()
        .filter(|t| t.name == "geerpc-reg-conn")
        .count();
    assert!(conn >= 2, "{threads:?}");
    let http = threads
        .iter()
        .filter(|t| t.name == "geerpc-reg-http")
        .count();
    assert_eq!(http, Registry::DEFAULT_WORKERS, "{threads:?}");
    for t in &threads {
        assert_eq!(t.policy, want(&t.name, BATCH), "{t:?} in {threads:?}");
    }
    reg.shutdown();
}

#[test]
fn batch_scheduling_off_leaves_every_thread_under_the_default_policy() {
    let _one = ONE_AT_A_TIME.lock();
    if !under_default_policy() {
        eprintln!("skipped: not under SCHED_OTHER");
        return;
    }
    let before = tids();
    // One worker: once a request is answered, it is past the point where
    // it would have switched, so what is read below is final (no waiting
    // for a change that should not come). tiny_http's threads take their
    // policy when started, inside `start`.
    let reg = Registry::builder()
        .addr("127.0.0.1:0")
        .workers(1)
        .batch_scheduling(false)
        .start()
        .unwrap();
    answered(&reg);
    let threads = new_threads(&before);
    let conn = threads
        .iter()
        .filter(|t| t.name == "geerpc-reg-conn")
        .count();
    assert!(conn >= 2, "{threads:?}");
    let http = threads
        .iter()
        .filter(|t| t.name == "geerpc-reg-http")
        .count();
    assert_eq!(http, 1, "{threads:?}");
    for t in &threads {
        assert_eq!(t.policy, want(&t.name, OTHER), "{t:?} in {threads:?}");
    }
    reg.shutdown();
}
