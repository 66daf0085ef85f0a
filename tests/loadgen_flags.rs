//! `examples/loadgen.rs` refuses what it does not understand (issue 17): an
//! unknown flag, a bad value or a meaningless combination ends it at once
//! with exit code 2 and the usage, before it serves or loads anything. And
//! its context-and-overload additions (issue 18) do what docs/BENCH.md
//! says: Arith.Work and Arith.Sleep, deadlines, slow calls, the open loop.
//! `cargo test` builds the examples next to the test binaries (run alone,
//! `cargo test --test loadgen_flags` uses the last `cargo build --examples`).

mod common;

use std::path::PathBuf;
use std::process::Command;

fn loadgen() -> PathBuf {
    common::example("loadgen")
}

fn refused(args: &[&str], says: &str) {
    let out = Command::new(loadgen()).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.contains(says), "{args:?}: {stderr}");
    assert!(
        stderr.contains("usage"),
        "{args:?} gives no usage: {stderr}"
    );
    assert!(out.stdout.is_empty(), "{args:?} printed {:?}", out.stdout);
}

#[test]
fn unknown_flags_and_bad_values_are_refused_with_the_usage() {
    // An open loop without a bound on each call would hold ever more.
    refused(
        &["load", "--addr", "127.0.0.1:1", "--rate", "100"],
        "--rate needs --timeout",
    );
    refused(
        &["load", "--addr", "127.0.0.1:1", "--bogus", "1"],
        "--bogus",
    );
    refused(&["serve", "--conns", "4"], "--conns");
    refused(
        &["load", "--addr", "127.0.0.1:1", "--conns", "0"],
        "--conns",
    );
    refused(
        &["load", "--addr", "127.0.0.1:1", "--secs", "abc"],
        "--secs",
    );
    refused(&["load", "--addr", "127.0.0.1:1", "--codec", "xml"], "xml");
    refused(
        &[
            "load",
            "--addr",
            "127.0.0.1:1",
            "--secs",
            "1",
            "--secs",
            "2",
        ],
        "twice",
    );
    refused(&["load", "--addr"], "--addr needs a value");
    // Several addresses: each gets a connection, none is empty.
    refused(
        &["load", "--addr", "127.0.0.1:1,127.0.0.1:2"],
        "--conns 1 is fewer than the 2 addresses",
    );
    refused(
        &["load", "--addr", "127.0.0.1:1,", "--conns", "2"],
        "empty address",
    );
    refused(&["fly"], "fly");
}

#[test]
fn context_and_overload_flags_are_checked() {
    let a = ["load", "--addr", "127.0.0.1:1"];
    let with =
        |more: &[&'static str]| -> Vec<&'static str> { a.iter().chain(more).copied().collect() };
    refused(&with(&["--method", "fly"]), "--method fly");
    refused(&with(&["--method", "work"]), "--method work needs --arg");
    refused(&with(&["--method", "sleep"]), "--method sleep needs --arg");
    refused(
        &with(&["--arg", "5"]),
        "--arg applies to --method work and sleep",
    );
    refused(
        &with(&["--method", "echo", "--arg", "5", "--payload", "8"]),
        "--arg applies",
    );
    refused(&with(&["--method", "work", "--arg", "-1"]), "--arg -1");
    refused(
        &with(&["--method", "work", "--arg", "2000000"]),
        "at most 1000000",
    );
    refused(
        &with(&["--method", "sleep", "--arg", "60001"]),
        "at most 60000",
    );
    refused(
        &with(&["--method", "work", "--arg", "5", "--payload", "8"]),
        "--payload applies",
    );
    refused(
        &with(&["--method", "echo"]),
        "--method echo needs --payload",
    );
    refused(&with(&["--timeout", "0"]), "--timeout 0");
    refused(&with(&["--timeout", "soon"]), "--timeout soon");
    refused(&with(&["--slow-ratio", "0.1"]), "go together");
    refused(&with(&["--slow-ms", "10"]), "go together");
    refused(
        &with(&["--slow-ratio", "0", "--slow-ms", "10"]),
        "--slow-ratio 0",
    );
    refused(
        &with(&["--slow-ratio", "1.5", "--slow-ms", "10"]),
        "--slow-ratio 1.5",
    );
    refused(
        &with(&["--slow-ratio", "0.1", "--slow-ms", "0"]),
        "--slow-ms 0",
    );
    refused(&with(&["--rate", "0", "--timeout", "10"]), "--rate 0");
    refused(&with(&["--rate", "fast", "--timeout", "10"]), "--rate fast");
    refused(
        &with(&["--rate", "10", "--timeout", "10", "--concurrency", "5000"]),
        "at most 4096 caller threads",
    );
    // serve takes none of them.
    refused(
        &["serve", "--addr", "127.0.0.1:0", "--method", "work"],
        "--method",
    );
    refused(
        &["serve", "--addr", "127.0.0.1:0", "--rate", "10"],
        "--rate",
    );
    refused(
        &["serve", "--addr", "127.0.0.1:0", "--max-connections", "0"],
        "--max-connections 0",
    );
    refused(
        &[
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--max-connections",
            "many",
        ],
        "--max-connections many",
    );
    refused(
        &["load", "--addr", "127.0.0.1:1", "--max-connections", "10"],
        "--max-connections",
    );
}

/// A `loadgen serve` on a free loopback port, killed when dropped.
fn serve() -> common::Serving {
    common::serve_example("loadgen", &["--addr", "127.0.0.1:0"])
}

/// Runs `loadgen load --addr ADDR ARGS` and parses its one JSON line.
fn load(addr: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(loadgen())
        .args(["load", "--addr", addr])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().count(), 1, "{args:?}: {stdout}");
    serde_json::from_str(&stdout).unwrap()
}

fn num(line: &serde_json::Value, field: &str) -> f64 {
    line[field]
        .as_f64()
        .unwrap_or_else(|| panic!("no number {field:?} in {line}"))
}

#[test]
fn work_sleep_deadlines_and_slow_calls_are_what_the_figures_say() {
    let s = serve();
    // Arith.Work answers its argument; every call is good and none slow.
    let work = load(
        &s.addr,
        &["--method", "work", "--arg", "2000", "--secs", "1"],
    );
    assert_eq!(work["method"], "work", "{work}");
    assert_eq!(work["arg"], 2000, "{work}");
    assert!(
        num(&work, "calls") > 0.0 && num(&work, "errors") == 0.0,
        "{work}"
    );
    // It takes its 2 ms of CPU (so at least 2 ms) before it answers.
    assert!(num(&work, "p50_us") >= 2000.0, "{work}");
    assert_eq!(num(&work, "goodput"), num(&work, "calls_per_sec"), "{work}");
    assert_eq!(num(&work, "fast_p99_us"), num(&work, "p99_us"), "{work}");
    for f in ["timeouts", "shed"] {
        assert_eq!(num(&work, f), 0.0, "{f}: {work}");
    }
    // Every call slow: each is an Arith.Sleep of 20 ms, none is fast.
    let slow = load(
        &s.addr,
        &[
            "--slow-ratio",
            "1",
            "--slow-ms",
            "20",
            "--secs",
            "1",
            "--concurrency",
            "2",
        ],
    );
    // (1 s: on a machine loaded enough, no 20 ms call might end within
    // 0.3 s, and a percentile over no calls is 0.)
    assert!(num(&slow, "calls") > 0.0, "{slow}");
    assert_eq!(num(&slow, "errors"), 0.0, "{slow}");
    assert!(num(&slow, "p50_us") >= 20_000.0, "{slow}");
    assert_eq!(num(&slow, "fast_p99_us"), 0.0, "{slow}");
    // A deadline shorter than the handler: every call times out, no goodput.
    let late = load(
        &s.addr,
        &[
            "--method",
            "sleep",
            "--arg",
            "200",
            "--timeout",
            "20",
            "--secs",
            "0.3",
        ],
    );
    assert!(num(&late, "calls") > 0.0, "{late}");
    assert_eq!(num(&late, "timeouts"), num(&late, "calls"), "{late}");
    assert_eq!(num(&late, "errors"), num(&late, "calls"), "{late}");
    assert_eq!(num(&late, "goodput"), 0.0, "{late}");
    assert_eq!(late["timeout_ms"], 20, "{late}");
}

#[test]
fn the_open_loop_offers_its_rate_whatever_the_latency() {
    let s = serve();
    // 100 calls/s for 0.5 s counted: about 50 offered, all answered in time.
    let easy = load(
        &s.addr,
        &[
            "--method",
            "work",
            "--arg",
            "100",
            "--rate",
            "100",
            "--timeout",
            "1000",
            "--secs",
            "0.5",
        ],
    );
    let offered = num(&easy, "calls") + num(&easy, "unstarted");
    assert!((45.0..=55.0).contains(&offered), "{easy}");
    assert!(num(&easy, "goodput") > 0.0, "{easy}");
    assert_eq!(easy["rate"], 100.0, "{easy}");
    // Two callers each held 50 ms can answer 40 calls/s; 100/s are
    // offered anyway, so the calls queue, count their wait from when they
    // were due, and run out of their 150 ms: a closed loop would instead
    // have slowed down to 40/s with every call good.
    let over = load(
        &s.addr,
        &[
            "--method",
            "sleep",
            "--arg",
            "50",
            "--rate",
            "100",
            "--timeout",
            "150",
            "--concurrency",
            "2",
            "--secs",
            "0.5",
        ],
    );
    let offered = num(&over, "calls") + num(&over, "unstarted");
    assert!((45.0..=55.0).contains(&offered), "{over}");
    assert!(num(&over, "timeouts") >= 10.0, "{over}");
    assert!(num(&over, "goodput") <= 40.0 * 1.2, "{over}");
}

/// `--addr A,B` gives the connections to A and B in turn (the XClient
/// section's direct baseline, docs/BENCH.md): each of two servers answers
/// calls.
#[test]
fn several_addresses_share_the_connections_in_turn() {
    use geerpc::{Server, Service};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Sum {
        num1: i64,
        num2: i64,
    }
    let servers: Vec<_> = (0..2)
        .map(|_| {
            let calls = Arc::new(AtomicU64::new(0));
            let counted = calls.clone();
            let server = Server::new();
            server
                .register(Service::new("Arith").method("Sum", move |a: Sum| {
                    counted.fetch_add(1, Ordering::Relaxed);
                    Ok::<_, String>(a.num1 + a.num2)
                }))
                .unwrap();
            let running = server.listen("tcp@127.0.0.1:0").unwrap();
            (running, calls)
        })
        .collect();
    let addrs = format!("{},{}", servers[0].0.addr(), servers[1].0.addr());
    // Three connections: A, B, A.
    let line = load(
        &addrs,
        &["--conns", "3", "--concurrency", "3", "--secs", "0.2"],
    );
    assert_eq!(num(&line, "errors"), 0.0, "{line}");
    assert_eq!(num(&line, "conns"), 3.0, "{line}");
    for (i, (running, calls)) in servers.iter().enumerate() {
        assert!(
            calls.load(Ordering::Relaxed) > 0,
            "server {i} ({}) answered no call: {line}",
            running.addr()
        );
    }
}
