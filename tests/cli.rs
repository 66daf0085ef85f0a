//! The `geerpc` command end to end: a registry subprocess, servers in this
//! process heartbeating to it, `list` and `call` subprocesses.
#![cfg(feature = "cli")]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use geerpc::registration::RegisterOptions;
use geerpc::Heartbeat;

const BIN: &str = env!("CARGO_BIN_EXE_geerpc");

/// `geerpc registry` on a free port; returns the child and its URL (the
/// first line it prints).
fn start_registry(extra: &[&str]) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(["registry", "--addr", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn geerpc registry");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "printed {line:?}");
    (child, url)
}

fn geerpc(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run geerpc")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Sends `signal` and waits (on a thread, with a deadline) for the exit.
fn terminate(mut child: Child, signal: &str) -> (std::process::ExitStatus, String) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut err = child.stderr.take().unwrap();
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        let _ = tx.send((child.wait().unwrap(), s));
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("registry exits within 10s of the signal")
}

/// Runs `geerpc list` until `cond` holds on its output (registration is
/// asynchronous; the heartbeat's first POST goes out at once).
fn list_until(args: &[&str], cond: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let o = geerpc(args);
        assert!(o.status.success(), "{}", stderr(&o));
        let out = stdout(&o);
        if cond(&out) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "never got the expected list; last:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn registry_list_and_call_end_to_end() {
    init_log();
    // A TTL far longer than the test: "deregisters at once" below must be
    // the DELETE, and a slow machine must not see instances expire.
    let (child, url) = start_registry(&["--ttl", "60s"]);

    let a = start_server();
    let b = start_server();
    let _hb_a = Heartbeat::for_server(&a, &url, RegisterOptions::new().version("1.0")).unwrap();
    let _hb_b = Heartbeat::for_server(
        &b,
        &url,
        RegisterOptions::new()
            .services(["Echo"])
            .weight(3)
            .tags(["eu", "canary"]),
    )
    .unwrap();
    let (a_addr, b_addr) = (a.addr().to_string(), b.addr().to_string());

    // list: one line per instance, its address first.
    let out = list_until(&["list", "--registry", &url], |o| o.lines().count() == 2);
    let mut want = vec![a_addr.clone(), b_addr.clone()];
    want.sort();
    let firsts: Vec<&str> = out.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(firsts, want, "{out}");
    let a_line = out.lines().find(|l| l.starts_with(&a_addr)).unwrap();
    assert!(
        a_line.contains("services=Arith,Echo") && a_line.contains("version=1.0"),
        "{a_line}"
    );
    let b_line = out.lines().find(|l| l.starts_with(&b_addr)).unwrap();
    assert!(
        b_line.contains("weight=3") && b_line.contains("tags=eu,canary"),
        "{b_line}"
    );

    let o = geerpc(&["list", "--registry", &url, "--service", "Arith"]);
    assert!(o.status.success());
    assert_eq!(
        stdout(&o).lines().collect::<Vec<_>>(),
        [a_line],
        "{}",
        stdout(&o)
    );

    let o = geerpc(&["list", "--registry", &url, "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    assert!(arr
        .iter()
        .any(|i| i["addr"] == b_addr.as_str() && i["weight"] == 3));

    // call through the registry: only Arith's instance serves Arith.Sum.
    let o = geerpc(&[
        "call",
        "--registry",
        &url,
        "Arith.Sum",
        r#"{"Num1":20,"Num2":22}"#,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "42");
    // call a server directly.
    let o = geerpc(&["call", "--addr", &b_addr, "Echo.Echo", r#"{"hello":[1,2]}"#]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), r#"{"hello":[1,2]}"#);
    // Errors: the server's message, exit code 1.
    let o = geerpc(&["call", "--addr", &a_addr, "Arith.Nope", "{}"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("can't find method Nope"),
        "{}",
        stderr(&o)
    );
    let o = geerpc(&["call", "--registry", &url, "Nobody.Sum", "{}"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no instance of Nobody"),
        "{}",
        stderr(&o)
    );
    let o = geerpc(&["call", "--addr", &a_addr, "Arith.Sum", "{not json"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not JSON"), "{}", stderr(&o));

    // A server that stops deregisters at once.
    b.shutdown();
    let out = geerpc(&["list", "--registry", &url]);
    assert_eq!(stdout(&out).lines().count(), 1, "{}", stdout(&out));

    let (status, log) = terminate(child, "-TERM");
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(log.contains("shut down"), "{log}");
    // The registry is gone: list fails with a message naming the URL.
    let o = geerpc(&["list", "--registry", &url]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains(&url), "{}", stderr(&o));
}

#[test]
fn registry_ttl_takes_go_durations_and_rejects_garbage() {
    let (child, url) = start_registry(&["--ttl", "500ms"]);
    assert!(url.ends_with("/_rpc_/registry"));
    let (status, log) = terminate(child, "-INT");
    assert!(status.success(), "{log}");
    assert!(log.contains("TTL 500ms"), "{log}");
    assert!(log.contains("SIGINT received"), "{log}");

    let o = geerpc(&["registry", "--addr", "127.0.0.1:0", "--ttl", "5 parsecs"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--ttl"), "{}", stderr(&o));
    let o = geerpc(&["call", "Arith.Sum", "{}"]);
    assert_eq!(o.status.code(), Some(2), "needs --registry or --addr");
    let o = geerpc(&[
        "call",
        "--registry",
        "http://x",
        "--addr",
        "tcp@x:1",
        "Arith.Sum",
    ]);
    assert_eq!(o.status.code(), Some(2), "not both");
}
