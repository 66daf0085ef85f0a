//! The operators' commands of `geerpc` (issue 21): `watch` prints the
//! list, then each change within a second; `describe` lists a loadgen
//! server's methods with their types; `bench` makes the calls it says,
//! as the server's own counters confirm, paces them at `--rate`, and
//! counts errors by code.
#![cfg(feature = "cli")]

mod cli_support;
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cli_support::*;
use geerpc::registration::RegisterOptions;

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn json(o: &std::process::Output) -> serde_json::Value {
    assert_code(o, 0);
    serde_json::from_str(stdout(o).trim()).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

/// The calls the server itself counted for `method` (its debug JSON).
fn server_calls(addr: &str, method: &str) -> u64 {
    let doc = json(&geerpc(&["describe", "--addr", addr, "--json"]));
    let (svc, m) = method.split_once('.').unwrap();
    doc["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == svc)
        .and_then(|s| {
            s["methods"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["name"] == m)
        })
        .map_or(0, |x| x["calls"].as_u64().unwrap())
}

#[test]
fn watch_prints_the_list_then_each_change_within_a_second() {
    let reg = common::start(Duration::from_secs(60));
    let url = reg.url().to_string();
    let mut child = Command::new(BIN)
        .args(["watch", "--registry", &url])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut watch = Proc(child);
    let (tx, lines) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let next = |what: &str| {
        lines
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("no line for {what}"))
    };
    assert!(next("the header").contains(&format!("watching registry {url}")));
    assert!(next("the empty list").contains("(no instance)"));

    let server = common::start_server();
    let addr = server.addr().to_string();
    let hb = geerpc::registry::HttpRegistrar::new(&url)
        .unwrap()
        .register_server(&server, RegisterOptions::new())
        .unwrap();
    // From the registration's answer to the watcher's line.
    let t0 = Instant::now();
    let added = next("the addition");
    let took = t0.elapsed();
    assert!(
        added.contains(" added ") && added.contains(&addr),
        "{added}"
    );
    assert!(took < Duration::from_secs(1), "added seen after {took:?}");
    // The line starts with the time, RFC 3339 in UTC.
    assert!(
        added.starts_with("20") && added.contains('T') && added.contains("Z "),
        "{added}"
    );

    hb.deregister().unwrap();
    let t0 = Instant::now();
    let removed = next("the removal");
    let took = t0.elapsed();
    assert!(
        removed.contains(" removed ") && removed.contains(&addr),
        "{removed}"
    );
    assert!(took < Duration::from_secs(1), "removed seen after {took:?}");

    // SIGTERM ends it cleanly.
    let pid = watch.0.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = watch.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn describe_lists_the_loadgen_servers_methods_with_their_types() {
    let lg = common::serve_example("loadgen", &["--addr", "127.0.0.1:0"]);
    let addr = lg.addr.clone();
    let o = geerpc(&["describe", "--addr", &addr]);
    assert_code(&o, 0);
    let text = stdout(&o);
    for line in [
        "service Arith",
        "  Arith.Sum(SumArgs) returns (i64)",
        "  Arith.Work(SumArgs) returns (i64)",
        "service Echo",
        "  Echo.Echo(String) returns (String)",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }
    let o = geerpc(&["describe", "--addr", &addr, "Echo.Echo"]);
    assert_code(&o, 0);
    assert_eq!(
        stdout(&o),
        "service Echo\n  Echo.Echo(String) returns (String)\n"
    );
    let o = geerpc(&["describe", "--addr", &addr, "Nope"]);
    assert_code(&o, 6);
    let o = geerpc(&["describe", "--addr", &dead_addr()]);
    assert_code(&o, 3);
}

#[test]
fn bench_makes_the_calls_it_reports_paced_and_with_errors_by_code() {
    let lg = common::serve_example("loadgen", &["--addr", "127.0.0.1:0"]);
    let addr = lg.addr.clone();
    let args = r#"{"Num1":1,"Num2":2}"#;
    let before = server_calls(&addr, "Arith.Sum");
    let r = json(&geerpc(&[
        "bench",
        "--addr",
        &addr,
        "Arith.Sum",
        args,
        "--calls",
        "300",
        "--concurrency",
        "4",
        "--json",
    ]));
    assert_eq!(r["calls"], 300, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    assert!(r["p50_us"].as_u64().unwrap() > 0, "{r}");
    assert!(r["p99_us"].as_u64() <= r["max_us"].as_u64(), "{r}");
    // What the server itself counted.
    assert_eq!(server_calls(&addr, "Arith.Sum") - before, 300);

    // --rate: 200 calls/s for 0.5 s is 100 slots, the last at 495 ms.
    let r = json(&geerpc(&[
        "bench",
        "--addr",
        &addr,
        "Arith.Sum",
        args,
        "--rate",
        "200",
        "--duration",
        "500ms",
        "--concurrency",
        "4",
        "--json",
    ]));
    assert_eq!(r["calls"], 100, "{r}");
    assert!(r["secs"].as_f64().unwrap() >= 0.495, "{r}");

    // Errors, by code.
    let r = json(&geerpc(&[
        "bench",
        "--addr",
        &addr,
        "Arith.Nope",
        "null",
        "--calls",
        "20",
        "--json",
    ]));
    assert_eq!(r["errors"], 20, "{r}");
    assert_eq!(r["errors_by_code"]["not_found"], 20, "{r}");

    // The text summary has the histogram, and progress goes to stderr
    // (plain lines: stderr is not a terminal here).
    let o = geerpc(&[
        "bench",
        "--addr",
        &addr,
        "Arith.Sum",
        args,
        "--duration",
        "1200ms",
    ]);
    assert_code(&o, 0);
    let text = stdout(&o);
    for part in [
        "Summary: Arith.Sum with 8 callers",
        "calls/s:",
        "p99.9",
        "Histogram:",
    ] {
        assert!(text.contains(part), "no {part:?} in:\n{text}");
    }
    assert!(stderr(&o).contains("geerpc bench: 1."), "{}", stderr(&o));

    // Nothing to call: exit 3 at once, not a bench of errors.
    let o = geerpc(&[
        "bench",
        "--addr",
        &dead_addr(),
        "Arith.Sum",
        args,
        "--calls",
        "5",
    ]);
    assert_code(&o, 3);
}
