//! A peer that pipelines large requests and never reads its replies: the
//! server's memory stays bounded (the write-queue cap stops it reading) and
//! other connections are served meanwhile.
//!
//! Alone in its own test binary because it measures this process's memory
//! (the server runs in-process): no other test may allocate meanwhile, and
//! the peak (VmHWM) must be this test's own.

mod common;
mod raw;

use std::time::{Duration, Instant};

use common::Args;
use geerpc::{Client, Server};
use raw::PAYLOAD;

/// The most the attacker sends: far past any sane cap, bounded for the test.
const MAX_REQUESTS: usize = 400;
/// How long the attacker keeps trying at most.
const ATTACK_FOR: Duration = Duration::from_secs(3);

/// KiB from a `/proc/self/status` line such as `VmRSS:    1234 kB`.
fn status_kib(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

#[test]
fn a_peer_that_never_reads_costs_bounded_memory_and_slows_no_one() {
    common::init_log();
    let server = Server::builder().build();
    let running = common::start_with(server);
    let addr = running.addr().clone();

    // Warm up the allocator and the probe's connection with a reply as
    // large as the attacker's, so the baseline is not flattered.
    let probe = Client::dial(&addr).unwrap();
    let big: serde_json::Value = "b".repeat(PAYLOAD).into();
    let back: serde_json::Value = probe.call("Echo.Echo", &big).unwrap();
    assert_eq!(back, big);
    drop((back, big));
    let rss_before = status_kib("VmRSS:");

    let attacker = std::thread::spawn(move || raw::attack(&addr, MAX_REQUESTS, ATTACK_FOR));
    // Probe from another connection while the attack runs, and a moment
    // after it stalled (the server then holds the most).
    let mut latencies = Vec::new();
    let mut settle_until = None;
    loop {
        let t0 = Instant::now();
        let sum: i64 = probe.call("Arith.Sum", &Args { num1: 1, num2: 2 }).unwrap();
        latencies.push(t0.elapsed());
        assert_eq!(sum, 3);
        if attacker.is_finished() {
            let by =
                *settle_until.get_or_insert_with(|| Instant::now() + Duration::from_millis(500));
            if Instant::now() >= by {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let (sock, sent, ended) = attacker.join().unwrap();
    let peak = status_kib("VmHWM:");
    let growth_mib = peak.saturating_sub(rss_before) as f64 / 1024.0;
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    let worst = *latencies.last().unwrap();
    eprintln!(
        "non-reading peer: sent {sent} x {} KiB requests ({ended:?}); \
         RSS {} KiB before, peak {} KiB: growth {growth_mib:.1} MiB; \
         {} probes, median {median:?}, worst {worst:?}",
        PAYLOAD >> 10,
        rss_before,
        peak,
        latencies.len()
    );
    assert!(
        growth_mib < 32.0,
        "the server grew by {growth_mib:.1} MiB for a peer that does not read"
    );
    assert_eq!(
        ended,
        raw::Ended::Stalled,
        "the server kept reading: {sent} requests taken"
    );
    // 100 ms is the figure; the median is held to it, the worst
    // probe gets 10x for a loaded 2-core machine shared with compilers.
    assert!(
        median < Duration::from_millis(100),
        "median probe {median:?}"
    );
    assert!(worst < Duration::from_secs(1), "worst probe {worst:?}");
    drop(sock);
    running.shutdown();
}
