//! The `geerpc` command end to end: a registry subprocess, servers in this
//! process heartbeating to it, `list` and `call` subprocesses; then one
//! test per exit code (the table in `geerpc --help`), the failover of a
//! one-shot call, arguments from stdin and the hints.
#![cfg(feature = "cli")]

mod cli_support;
mod common;

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use cli_support::*;
use common::*;
use geerpc::registration::RegisterOptions;
use geerpc::Heartbeat;

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
    // Errors: the server's message, an exit code per kind (see the
    // exit_* tests below).
    let o = geerpc(&["call", "--addr", &a_addr, "Arith.Nope", "{}"]);
    assert_eq!(o.status.code(), Some(6));
    assert!(
        stderr(&o).contains("can't find method Nope"),
        "{}",
        stderr(&o)
    );
    let o = geerpc(&["call", "--registry", &url, "Nobody.Sum", "{}"]);
    assert_eq!(o.status.code(), Some(5));
    assert!(
        stderr(&o).contains("no instance of Nobody"),
        "{}",
        stderr(&o)
    );
    let o = geerpc(&["call", "--addr", &a_addr, "Arith.Sum", "{not json"]);
    assert_eq!(o.status.code(), Some(2));
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
    assert_eq!(o.status.code(), Some(5));
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

#[test]
fn help_documents_the_exit_codes() {
    for args in [&["--help"][..], &["call", "--help"]] {
        let o = geerpc(args);
        assert_code(&o, 0);
        let help = stdout(&o);
        for line in [
            "Exit codes:",
            "  1  the method ran",
            "  2  usage",
            "  3  unreachable",
            "  4  timeout",
            "  5  discovery",
            "  6  not found",
            "  7  bad argument",
            "  8  not a geerpc server",
            "  9  unavailable",
            " 10  any other failure",
        ] {
            assert!(help.contains(line), "{line:?} missing from:\n{help}");
        }
    }
}

#[test]
fn exit_0_and_1_the_reply_or_the_handlers_error() {
    let s = start_server();
    let addr = s.addr().to_string();
    let o = geerpc(&["call", "--addr", &addr, "Arith.Sum", SUM]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o).trim(), "42");
    assert_eq!(stderr(&o), "", "nothing on stderr without -v");
    let o = geerpc(&["call", "--addr", &addr, "Arith.Fail", SUM]);
    assert_code(&o, 1);
    assert_eq!(stdout(&o), "");
    assert!(stderr(&o).contains("boom: it failed"), "{}", stderr(&o));
}

#[test]
fn call_sends_meta_and_logs_the_replys() {
    let server = geerpc::Server::new();
    server
        .register(geerpc::Service::new("Meta").method_with_context(
            "Tenant",
            |ctx: &geerpc::Context, _: serde_json::Value| {
                ctx.set_reply_meta("served-by", "cli-test")?;
                Ok::<_, geerpc::Error>(ctx.meta().get("tenant").unwrap_or("none").to_string())
            },
        ))
        .unwrap();
    let s = start_with(server);
    let addr = s.addr().to_string();
    let o = geerpc(&[
        "-v",
        "call",
        "--addr",
        &addr,
        "--meta",
        "tenant=blue",
        "--meta",
        "x-a=1",
        "Meta.Tenant",
    ]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o).trim(), "\"blue\"");
    assert!(stderr(&o).contains("served-by"), "{}", stderr(&o));
    let o = geerpc(&["call", "--addr", &addr, "Meta.Tenant"]);
    assert_eq!(stdout(&o).trim(), "\"none\"");
    // Not KEY=VALUE, a key Meta refuses, a credential where ps shows it.
    for bad in ["tenant", "Bad Key=1", "Authorization=Bearer x"] {
        let o = geerpc(&["call", "--addr", &addr, "--meta", bad, "Meta.Tenant"]);
        assert_code(&o, 2);
        assert!(stderr(&o).contains("meta"), "{bad}: {}", stderr(&o));
        assert!(!stderr(&o).contains("Bearer x"), "{bad}: {}", stderr(&o));
    }
}

#[test]
fn exit_2_usage_with_a_usage_line() {
    let s = start_server();
    let addr = s.addr().to_string();
    for args in [
        &["call", "--addr", &addr, "--rate", "100", "Arith.Sum", SUM][..],
        &["call", "--addr", &addr, "ArithSum", SUM],
        &[
            "call",
            "--addr",
            &addr,
            "--timeout",
            "soon",
            "Arith.Sum",
            SUM,
        ],
        &["call", "--addr", &addr, "Arith.Sum", "{not json"],
        &["call", "--addr", "tcp@", "Arith.Sum", SUM],
        &["call", "--addr", &addr, "Arith.Sum", SUM, "extra"],
        &[
            "list",
            "--registry",
            "http://127.0.0.1:1/_geerpc_/registry",
            "--nope",
        ],
        &["frobnicate"],
    ] {
        let o = geerpc(args);
        assert_code(&o, 2);
        assert!(
            stderr(&o).contains("Usage: geerpc"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    let o = geerpc_stdin(&["call", "--addr", &addr, "Arith.Sum", "-"], "{\"Num1\":");
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("arguments on stdin are not JSON"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn arguments_from_stdin() {
    let s = start_server();
    let addr = s.addr().to_string();
    let o = geerpc_stdin(&["call", "--addr", &addr, "Arith.Sum", "-"], SUM);
    assert_code(&o, 0);
    assert_eq!(stdout(&o).trim(), "42");
    // Any JSON value, over several lines.
    let o = geerpc_stdin(
        &["call", "--addr", &addr, "Echo.Echo", "-"],
        "{\n  \"a\": [1,\n 2]\n}\n",
    );
    assert_code(&o, 0);
    assert_eq!(stdout(&o).trim(), r#"{"a":[1,2]}"#);
}

#[test]
fn exit_3_unreachable_with_a_hint() {
    let dead = dead_addr();
    let o = geerpc(&["call", "--addr", &dead, "Arith.Sum", SUM]);
    assert_code(&o, 3);
    let err = stderr(&o);
    assert!(err.contains(&dead) && err.contains("refused"), "{err}");
    assert!(err.contains("hint: is a server listening on"), "{err}");
    // A bare HOST:PORT is tcp@.
    let bare = dead.trim_start_matches("tcp@");
    let o = geerpc(&["call", "--addr", bare, "Arith.Sum", SUM]);
    assert_code(&o, 3);
}

#[test]
fn exit_4_timeout() {
    let s = start_server();
    let addr = s.addr().to_string();
    let slow = r#"{"Num1":5000,"Num2":0}"#;
    let t0 = Instant::now();
    let o = geerpc(&[
        "call",
        "--addr",
        &addr,
        "--timeout",
        "300ms",
        "Arith.SleepMs",
        slow,
    ]);
    assert_code(&o, 4);
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    assert!(stderr(&o).contains("timeout"), "{}", stderr(&o));
}

#[test]
fn exit_5_discovery_with_hints_and_each_error_once() {
    let (child, url) = start_registry(&["--ttl", "60s"]);
    let s = start_server();
    let _hb = Heartbeat::for_server(&s, &url, RegisterOptions::new()).unwrap();
    list_until(&["list", "--registry", &url], |o| o.lines().count() == 1);

    // Nothing serves the service: say what is served.
    let o = geerpc(&["call", "--registry", &url, "Nobody.Sum", SUM]);
    assert_code(&o, 5);
    let err = stderr(&o);
    assert!(err.contains("lists no instance of Nobody"), "{err}");
    assert!(
        err.contains("hint: it lists instances of: Arith, Echo"),
        "{err}"
    );

    // A URL without the registry's path.
    let root = url.trim_end_matches("/_rpc_/registry");
    for cmd in ["call", "list"] {
        let mut args = vec![cmd, "--registry", root];
        if cmd == "call" {
            args.extend(["Arith.Sum", SUM]);
        }
        let o = geerpc(&args);
        assert_code(&o, 5);
        assert!(stderr(&o).contains("/_geerpc_/registry"), "{}", stderr(&o));
    }

    // https:// to a plain HTTP registry: a hint, not just "timeout".
    let https = url.replacen("http://", "https://", 1);
    let o = geerpc(&[
        "call",
        "--timeout",
        "2s",
        "--registry",
        &https,
        "Arith.Sum",
        SUM,
    ]);
    assert_code(&o, 5);
    assert!(stderr(&o).contains("serves plain HTTP"), "{}", stderr(&o));

    // No registry there: the error once, and a hint.
    let (status, _) = terminate(child, "-TERM");
    assert!(status.success());
    let o = geerpc(&["call", "--registry", &url, "Arith.Sum", SUM]);
    assert_code(&o, 5);
    let err = stderr(&o);
    assert_eq!(err.matches("refused").count(), 1, "{err}");
    assert!(err.contains("hint: is a registry running on"), "{err}");
    // -v adds what the command does, not the error again.
    let o = geerpc(&["-v", "list", "--registry", &url]);
    assert_code(&o, 5);
    assert_eq!(stderr(&o).matches("refused").count(), 1, "{}", stderr(&o));
}

#[test]
fn exit_6_not_found_and_7_bad_argument() {
    let s = start_server();
    let addr = s.addr().to_string();
    let o = geerpc(&["call", "--addr", &addr, "Arith.Nope", SUM]);
    assert_code(&o, 6);
    let o = geerpc(&["call", "--addr", &addr, "Nope.Sum", SUM]);
    assert_code(&o, 6);
    assert!(stderr(&o).contains("Nope"), "{}", stderr(&o));
    let o = geerpc(&["call", "--addr", &addr, "Arith.Sum", r#""forty-two""#]);
    assert_code(&o, 7);
    assert!(stderr(&o).contains("decode"), "{}", stderr(&o));
}

#[test]
fn exit_8_an_http_port_fails_at_once_with_a_hint() {
    let (child, url) = start_registry(&[]);
    let port = url
        .trim_start_matches("http://127.0.0.1:")
        .split('/')
        .next()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    let t0 = Instant::now();
    let o = geerpc(&["call", "--addr", &addr, "Arith.Sum", SUM]);
    let took = t0.elapsed();
    assert_code(&o, 8);
    let err = stderr(&o);
    // Once: the library's warning about the connection stays below the
    // default log level.
    assert_eq!(err.matches("answered in HTTP").count(), 1, "{err}");
    assert!(err.contains("hint: is tcp@127.0.0.1:"), "{err}");
    // It used to wait for the 10 s timeout; 5 s is slack for a loaded
    // machine, the answer comes in milliseconds.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // http@ to it: the registry refuses the CONNECT.
    let o = geerpc(&["call", "--addr", &format!("http@{addr}"), "Arith.Sum", SUM]);
    assert_code(&o, 8);
    assert!(
        stderr(&o).contains("refused the RPC CONNECT"),
        "{}",
        stderr(&o)
    );
    let _ = terminate(child, "-TERM");
}

#[test]
fn exit_9_every_instance_refused_unprocessed() {
    let (child, url) = start_registry(&["--ttl", "60s"]);
    let (r1, r2) = (refusing_server(), refusing_server());
    let _hb = (register(&url, &r1), register(&url, &r2));
    list_until(&["list", "--registry", &url], |o| o.lines().count() == 2);
    let o = geerpc(&["call", "--registry", &url, "Arith.Sum", SUM]);
    assert_code(&o, 9);
    let err = stderr(&o);
    assert!(
        err.contains("2 tried") && err.contains(&r1) && err.contains(&r2),
        "{err}"
    );
    // A live instance beside them takes the call, whichever comes first.
    let s = start_server();
    let _hb_s = Heartbeat::for_server(&s, &url, RegisterOptions::new()).unwrap();
    list_until(&["list", "--registry", &url], |o| o.lines().count() == 3);
    for _ in 0..6 {
        let o = geerpc(&["call", "--registry", &url, "Arith.Sum", SUM]);
        assert_code(&o, 0);
        assert_eq!(stdout(&o).trim(), "42");
    }
    let _ = terminate(child, "-TERM");
}

#[test]
fn exit_10_other_failures() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let o = geerpc(&["registry", "--addr", &addr]);
    assert_code(&o, 10);
    assert!(stderr(&o).contains(&addr), "{}", stderr(&o));
}

/// A one-shot call through a registry that lists a dead instance beside a
/// live one always gets its answer from the live one, and says nothing
/// about it unless asked (-v).
#[test]
fn call_fails_over_past_a_dead_instance_quietly() {
    let (child, url) = start_registry(&["--ttl", "60s"]);
    let s = start_server();
    let live = s.addr().to_string();
    let dead = dead_addr();
    let _hb = Heartbeat::for_server(&s, &url, RegisterOptions::new()).unwrap();
    let _hb_dead = register(&url, &dead);
    list_until(&["list", "--registry", &url], |o| o.lines().count() == 2);
    let mut dead_first = 0;
    for _ in 0..12 {
        let o = geerpc(&["call", "--registry", &url, "Arith.Sum", SUM]);
        assert_code(&o, 0);
        assert_eq!(stdout(&o).trim(), "42");
        assert_eq!(stderr(&o), "", "no chatter without -v");
        let o = geerpc(&["-v", "call", "--registry", &url, "Arith.Sum", SUM]);
        assert_code(&o, 0);
        let err = stderr(&o);
        assert!(err.contains(&format!("{live} answered Arith.Sum")), "{err}");
        assert!(!err.contains("probing"), "{err}");
        if err.contains(&format!("{dead} did not take the call")) {
            dead_first += 1;
        }
    }
    // Random order: in 12 calls the dead one came first at least once
    // (all 12 the other way has probability 1/4096).
    assert!(dead_first > 0, "the dead instance was never tried first");
    // RUST_LOG, when set, decides instead of -v.
    let o = Command::new(BIN)
        .args(["-v", "call", "--registry", &url, "Arith.Sum", SUM])
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert_code(&o, 0);
    assert_eq!(stderr(&o), "");
    // Every listed instance dead: each named, and why that happens.
    let _hb_dead2 = register(&url, &dead_addr());
    s.shutdown();
    list_until(&["list", "--registry", &url], |o| {
        o.lines().count() == 2 && !o.contains(&live)
    });
    let o = geerpc(&["call", "--registry", &url, "Arith.Sum", SUM]);
    assert_code(&o, 3);
    let err = stderr(&o);
    assert!(err.contains("2 tried") && err.contains(&dead), "{err}");
    assert!(
        err.contains("stays listed until the registry's TTL"),
        "{err}"
    );
    let _ = terminate(child, "-TERM");
}
