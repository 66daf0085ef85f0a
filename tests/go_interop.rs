//! Go peers on the wire (issue 22): the GeeRPC client and server of
//! tests/go, written with Go's own encoding/json and encoding/gob, against
//! geerpc's server and client; both public Go versions' magic numbers and
//! CONNECT paths, tcp@ and http@, error replies and timeouts.
//!
//! The Go program is built once per run into target/ (standard library
//! only, no network); without `go` on PATH every test here prints why and
//! passes. Servers (geerpc's and Go's) live for the whole binary; each Go
//! client run makes a batch of calls on one connection.

mod common;
mod go_support;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use geerpc::client::ClientBuilder;
use geerpc::server::ServerHandle;
use geerpc::{Client, Codec, Error, Server};
use go_support::{call, call_within, go_bin, go_client};
use serde_json::{json, Value};

/// One public Go GeeRPC version's wire settings.
#[derive(Clone, Copy, Debug)]
struct Flavour {
    magic: &'static str,
    path: &'static str,
}

/// The article's (day 7 of the series geerpc ports).
const ARTICLE: Flavour = Flavour {
    magic: "0x3b3f5c",
    path: "/myrpc",
};
/// The original series'.
const ORIGINAL: Flavour = Flavour {
    magic: "0x3bef5c",
    path: "/_geeprc_",
};

/// The handle timeout a Go client asks of the server, and how long the
/// sleeping handler would take: far apart, so that a loaded machine cannot
/// blur which one ended the call.
const HANDLE_TIMEOUT: &str = "300ms";
const HANDLE_TIMEOUT_TEXT: &str = "rpc server: request handle timeout: expect within 300ms";
const LONG_SLEEP_MS: u64 = 3000;

/// geerpc's server for the Go clients: tests/common's Arith (Sum, SleepMs,
/// Fail, ...) on a loopback port, kept for the whole binary.
fn geerpc_server() -> &'static ServerHandle {
    static SERVER: OnceLock<ServerHandle> = OnceLock::new();
    SERVER.get_or_init(|| {
        common::init_log();
        let server = Server::new();
        server.register(common::arith()).unwrap();
        server.listen("tcp@127.0.0.1:0").unwrap()
    })
}

/// `HOST:PORT` of the geerpc server (it answers raw RPC and HTTP CONNECT
/// on the same port).
fn geerpc_host_port() -> String {
    let addr = geerpc_server().addr().to_string();
    addr.split_once('@').map(|(_, a)| a.to_string()).unwrap()
}

/// The calls every Go client run makes, in order, and what each must get:
/// a reply, error replies from the server (unknown method and service, the
/// handler's error), the client's own call timeout (whose late reply the
/// client must drop), the server's handle timeout, and a last call showing
/// the connection survived all of that.
fn standard_calls() -> Vec<Value> {
    vec![
        call("Arith.Sum", json!({"Num1": 1, "Num2": 2})),
        call("Arith.Nope", json!({"Num1": 1, "Num2": 2})),
        call("Nope.Sum", json!({"Num1": 1, "Num2": 2})),
        call("Arith.Fail", json!({"Num1": 1, "Num2": 2})),
        call_within(
            "Arith.SleepMs",
            json!({"Num1": LONG_SLEEP_MS, "Num2": 0}),
            Duration::from_millis(100),
        ),
        call("Arith.SleepMs", json!({"Num1": LONG_SLEEP_MS, "Num2": 0})),
        call("Arith.Sum", json!({"Num1": 5, "Num2": 6})),
    ]
}

fn check_standard_results(what: &str, got: &[Value]) {
    assert_eq!(got.len(), 7, "{what}: one line per call: {got:#?}");
    let err = |i: usize| got[i]["error"].as_str().unwrap_or_default().to_string();
    let elapsed = |i: usize| got[i]["elapsed_ms"].as_u64().unwrap();
    assert_eq!(got[0]["reply"], json!(3), "{what}: {:?}", got[0]);
    assert_eq!(err(0), "", "{what}");
    assert!(
        err(1).contains("Nope"),
        "{what}: unknown method: {:?}",
        got[1]
    );
    assert!(
        err(2).contains("Nope"),
        "{what}: unknown service: {:?}",
        got[2]
    );
    assert_eq!(err(3), "boom: it failed", "{what}: the handler's error");
    assert_eq!(
        err(4),
        "rpc client: call failed: context deadline exceeded",
        "{what}: the Go client's own timeout"
    );
    assert!(elapsed(4) >= 100, "{what}: {:?}", got[4]);
    assert_eq!(err(5), HANDLE_TIMEOUT_TEXT, "{what}: the handle timeout");
    // At the handle timeout, not when the handler ended (generous slack:
    // the machine is loaded; the handler sleeps 3 s).
    assert!(
        (250..LONG_SLEEP_MS - 500).contains(&elapsed(5)),
        "{what}: the handle timeout's reply came after {} ms",
        elapsed(5)
    );
    assert_eq!(got[6]["reply"], json!(11), "{what}: {:?}", got[6]);
}

/// The Go client's flags for one run.
fn client_flags<'a>(codec: &'a str, f: Flavour, path: &'a str, addr: &'a str) -> Vec<&'a str> {
    vec![
        "-codec",
        codec,
        "-magic",
        f.magic,
        "-path",
        path,
        "-addr",
        addr,
        "-handle-timeout",
        HANDLE_TIMEOUT,
    ]
}

#[test]
fn go_json_client_calls_geerpc_over_tcp_with_both_magics() {
    let Some(bin) = go_bin() else { return };
    let addr = format!("tcp@{}", geerpc_host_port());
    for f in [ARTICLE, ORIGINAL] {
        let got = go_client(
            bin,
            &client_flags("json", f, f.path, &addr),
            &standard_calls(),
        );
        check_standard_results(&format!("json {f:?} tcp"), &got);
    }
}

#[test]
fn go_json_client_calls_geerpc_over_http_on_every_path() {
    let Some(bin) = go_bin() else { return };
    let addr = format!("http@{}", geerpc_host_port());
    // Each Go version's own path (the Go client checks the status text
    // that goes with it), and geerpc's default path with either magic.
    for (f, path) in [
        (ARTICLE, ARTICLE.path),
        (ORIGINAL, ORIGINAL.path),
        (ARTICLE, "/_geerpc_"),
        (ORIGINAL, "/_geerpc_"),
    ] {
        let got = go_client(
            bin,
            &client_flags("json", f, path, &addr),
            &standard_calls(),
        );
        check_standard_results(&format!("json {f:?} http {path}"), &got);
    }
}

#[test]
fn go_client_with_a_foreign_magic_is_refused() {
    let Some(bin) = go_bin() else { return };
    let addr = format!("tcp@{}", geerpc_host_port());
    let bogus = Flavour {
        magic: "0x123456",
        path: "/_geerpc_",
    };
    let got = go_client(
        bin,
        &client_flags("json", bogus, bogus.path, &addr),
        &[call("Arith.Sum", json!({"Num1": 1, "Num2": 2}))],
    );
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["reply"], Value::Null, "{got:?}");
    assert_ne!(
        got[0]["error"],
        json!(""),
        "the server closes the connection: {got:?}"
    );
}

/// A Go server of flavour `f` (gob and JSON), kept for the whole binary.
fn go_server(f: Flavour) -> Option<&'static go_support::GoServer> {
    static ARTICLE_SERVER: OnceLock<go_support::GoServer> = OnceLock::new();
    static ORIGINAL_SERVER: OnceLock<go_support::GoServer> = OnceLock::new();
    let bin = go_bin()?;
    let cell = if f.magic == ARTICLE.magic {
        &ARTICLE_SERVER
    } else {
        &ORIGINAL_SERVER
    };
    Some(cell.get_or_init(|| {
        go_support::GoServer::start(
            bin,
            &["-codec", "gob,json", "-magic", f.magic, "-path", f.path],
        )
    }))
}

/// A geerpc client for a Go server of flavour `f`: its codec, its CONNECT
/// path, and the handle timeout the standard calls expect.
fn builder_for(f: Flavour, codec: Codec) -> ClientBuilder {
    Client::builder()
        .codec(codec)
        .connect_path(f.path)
        .handle_timeout(Some(Duration::from_millis(300)))
}

/// Bound on a geerpc call that should be answered at once: a lost
/// request fails the test instead of hanging it.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// The standard calls, made by a geerpc client on `client`.
fn geerpc_standard_calls(what: &str, client: &Client) {
    let args = |a: i64, b: i64| common::Args { num1: a, num2: b };
    let call = |method: &str, a: &common::Args| -> geerpc::Result<i64> {
        client.call_timeout(method, a, ANSWER_WITHIN)
    };
    let remote = |r: geerpc::Result<i64>| match r {
        Err(Error::Remote { message, .. }) => message,
        other => panic!("{what}: expected an error reply, got {other:?}"),
    };
    assert_eq!(call("Arith.Sum", &args(1, 2)).unwrap(), 3, "{what}");
    assert_eq!(
        remote(call("Arith.Nope", &args(1, 2))),
        "rpc server: can't find method Nope",
        "{what}"
    );
    assert_eq!(
        remote(call("Nope.Sum", &args(1, 2))),
        "rpc server: can't find service Nope",
        "{what}"
    );
    assert_eq!(
        remote(call("Arith.Fail", &args(1, 2))),
        "boom: it failed",
        "{what}"
    );
    let sleep = args(LONG_SLEEP_MS as i64, 0);
    let started = Instant::now();
    let r = client.call_timeout::<_, i64>("Arith.SleepMs", &sleep, Duration::from_millis(100));
    assert!(
        matches!(r, Err(Error::Timeout { .. })),
        "{what}: call timeout: {r:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(LONG_SLEEP_MS - 500),
        "{what}"
    );
    let started = Instant::now();
    assert_eq!(
        remote(call("Arith.SleepMs", &sleep)),
        HANDLE_TIMEOUT_TEXT,
        "{what}: the Go server's handle timeout"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(LONG_SLEEP_MS - 500),
        "{what}: the handle timeout's reply came after {took:?}"
    );
    // The late replies (the timed-out call's, then nothing for the handle
    // timeout's) did not break the connection.
    assert_eq!(call("Arith.Sum", &args(5, 6)).unwrap(), 11, "{what}");
}

#[test]
fn geerpc_json_client_calls_a_go_server_over_tcp_and_http() {
    let Some(server) = go_server(ARTICLE) else {
        return;
    };
    for addr in [
        format!("tcp@{}", server.tcp),
        format!("http@{}", server.http),
    ] {
        let client = builder_for(ARTICLE, Codec::Json)
            .dial(addr.as_str())
            .unwrap();
        geerpc_standard_calls(&format!("json {ARTICLE:?} {addr}"), &client);
    }
}

/// A Go server reads the Option through a throw-away json.Decoder (its
/// first read takes up to 512 bytes): each of many fresh connections'
/// first call must still be answered, not lost behind the Option.
#[test]
fn go_server_answers_every_first_call() {
    let Some(server) = go_server(ARTICLE) else {
        return;
    };
    let addr = format!("tcp@{}", server.tcp);
    let mut lost = 0;
    for _ in 0..50 {
        let client = builder_for(ARTICLE, Codec::Json)
            .dial(addr.as_str())
            .unwrap();
        let r = client.call_timeout::<_, i64>(
            "Arith.Sum",
            &common::Args { num1: 2, num2: 3 },
            Duration::from_secs(2),
        );
        match r {
            Ok(5) => {}
            Err(Error::Timeout { .. }) => lost += 1,
            other => panic!("first call: {other:?}"),
        }
    }
    assert_eq!(lost, 0, "first calls lost behind the Option, of 50");
}
