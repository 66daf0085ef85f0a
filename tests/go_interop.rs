//! Go peers on the wire (issue 22): the GeeRPC client and server of
//! tests/go, written with Go's own encoding/json and encoding/gob, against
//! geerpc's server and client; both public Go versions' magic numbers and
//! CONNECT paths, tcp@ and http@, error replies and both timeouts.
//!
//! The Go program is built once per run into target/ (standard library
//! only, no network); without `go` on PATH every test here prints why and
//! passes. Servers (geerpc's and Go's) live for the whole binary; each Go
//! client run makes a batch of calls on one connection.

mod common;
mod go_support;

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use geerpc::client::ClientBuilder;
use geerpc::server::ServerHandle;
use geerpc::{Client, Codec, Error, Server, Service, LEGACY_MAGIC_NUMBER, MAGIC_NUMBER};
use go_support::{call, call_within, go_bin, go_client, GoServer};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// One public Go GeeRPC version's wire settings.
#[derive(Clone, Copy, Debug)]
struct Flavour {
    magic: &'static str,
    magic_number: u64,
    path: &'static str,
}

/// The article's (day 7 of the series geerpc ports).
const ARTICLE: Flavour = Flavour {
    magic: "0x3b3f5c",
    magic_number: MAGIC_NUMBER,
    path: "/myrpc",
};
/// The original series'.
const ORIGINAL: Flavour = Flavour {
    magic: "0x3bef5c",
    magic_number: LEGACY_MAGIC_NUMBER,
    path: "/_geeprc_",
};

/// The handle timeout a client asks of the server, the client's own call
/// timeout, and how long the sleeping handler would take: far apart, so
/// that a loaded machine cannot blur which one ended a call. (With the
/// handle timeout at 300 ms, one run in 45 under a load average of 48 saw
/// the Go client's 100 ms timer lose to the server's reply: a goroutine
/// woken late finds both ready and Go's `select` picks either.)
const HANDLE_TIMEOUT: &str = "1s";
const HANDLE_TIMEOUT_MS: u64 = 1000;
const HANDLE_TIMEOUT_TEXT: &str = "rpc server: request handle timeout: expect within 1s";
const CALL_TIMEOUT: Duration = Duration::from_millis(100);
const LONG_SLEEP_MS: u64 = 4000;
/// A handle timeout's reply must come between these (ms): after the
/// timeout, and well before the handler would have answered.
const HANDLE_REPLY_MS: std::ops::Range<u64> = HANDLE_TIMEOUT_MS - 50..LONG_SLEEP_MS - 500;
/// Bound on a geerpc call that should be answered at once: a lost
/// request fails the test instead of hanging it.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// Go's `Inner` and `Rich` (tests/go/services.go): the types gob carries
/// beyond two ints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Inner {
    name: String,
    tags: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Rich {
    text: String,
    count: i64,
    negative: i64,
    unsigned: u64,
    ratio: f64,
    ok: bool,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
    list: Vec<i64>,
    dict: BTreeMap<String, i64>,
    nested: Inner,
    ptr: Option<Inner>,
}

/// geerpc's server for the Go clients: tests/common's Arith (Sum, SleepMs,
/// Fail, ...) and Types.Echo on a loopback port, kept for the whole
/// binary. It answers raw RPC and HTTP CONNECT on the same port.
fn geerpc_host_port() -> &'static str {
    static SERVER: OnceLock<(ServerHandle, String)> = OnceLock::new();
    &SERVER
        .get_or_init(|| {
            common::init_log();
            let server = Server::new();
            server.register(common::arith()).unwrap();
            server
                .register(Service::new("Types").method("Echo", |r: Rich| Ok::<_, String>(r)))
                .unwrap();
            let running = server.listen("tcp@127.0.0.1:0").unwrap();
            let addr = running.addr().to_string();
            let host_port = addr.split_once('@').unwrap().1.to_string();
            (running, host_port)
        })
        .1
}

// ---- Go client -> geerpc server ----

/// The calls every Go client run makes, in order: a reply, error replies
/// from the server (unknown method and service, the handler's error), the
/// client's own call timeout (whose late reply the client must drop), the
/// server's handle timeout, and a last call showing the connection
/// survived all of that.
fn standard_calls() -> Vec<Value> {
    let sleep = json!({"Num1": LONG_SLEEP_MS, "Num2": 0});
    vec![
        call("Arith.Sum", json!({"Num1": 1, "Num2": 2})),
        call("Arith.Nope", json!({"Num1": 1, "Num2": 2})),
        call("Nope.Sum", json!({"Num1": 1, "Num2": 2})),
        call("Arith.Fail", json!({"Num1": 1, "Num2": 2})),
        call_within("Arith.SleepMs", sleep.clone(), CALL_TIMEOUT),
        call("Arith.SleepMs", sleep),
        call("Arith.Sum", json!({"Num1": 5, "Num2": 6})),
    ]
}

fn check_standard_results(what: &str, got: &[Value]) {
    assert_eq!(got.len(), 7, "{what}: one line per call: {got:#?}");
    let err = |i: usize| got[i]["error"].as_str().unwrap_or_default().to_string();
    let elapsed = |i: usize| got[i]["elapsed_ms"].as_u64().unwrap();
    assert_eq!(
        (&got[0]["reply"], err(0).as_str()),
        (&json!(3), ""),
        "{what}"
    );
    assert!(
        err(1).contains("method Nope"),
        "{what}: unknown method: {:?}",
        got[1]
    );
    assert!(
        err(2).contains("service Nope"),
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
    // At the handle timeout, not when the handler ended (slack for load).
    assert!(
        HANDLE_REPLY_MS.contains(&elapsed(5)),
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

/// A Go client of each version calls geerpc over tcp@.
fn go_client_calls_geerpc_over_tcp(codec: &str) {
    let Some(bin) = go_bin() else { return };
    let addr = format!("tcp@{}", geerpc_host_port());
    // Side by side: each run waits out two timeouts.
    std::thread::scope(|s| {
        for f in [ARTICLE, ORIGINAL] {
            let addr = &addr;
            s.spawn(move || {
                let got = go_client(
                    bin,
                    &client_flags(codec, f, f.path, addr),
                    &standard_calls(),
                );
                check_standard_results(&format!("{codec} {f:?} tcp"), &got);
            });
        }
    });
}

/// A Go client calls geerpc over http@ on each Go version's own path (the
/// Go client checks the status text that goes with it) and on geerpc's
/// default path, with either magic.
fn go_client_calls_geerpc_over_http(codec: &str) {
    let Some(bin) = go_bin() else { return };
    let addr = format!("http@{}", geerpc_host_port());
    // Side by side: each run waits out two timeouts.
    let mut runs = Vec::new();
    for (f, path) in [
        (ARTICLE, ARTICLE.path),
        (ORIGINAL, ORIGINAL.path),
        (ARTICLE, "/_geerpc_"),
        (ORIGINAL, "/_geerpc_"),
    ] {
        runs.push((f, path));
    }
    std::thread::scope(|s| {
        for (f, path) in runs {
            let addr = &addr;
            s.spawn(move || {
                let got = go_client(bin, &client_flags(codec, f, path, addr), &standard_calls());
                check_standard_results(&format!("{codec} {f:?} http {path}"), &got);
            });
        }
    });
}

#[test]
fn go_json_client_calls_geerpc_over_tcp_with_both_magics() {
    go_client_calls_geerpc_over_tcp("json");
}

#[test]
fn go_json_client_calls_geerpc_over_http_on_every_path() {
    go_client_calls_geerpc_over_http("json");
}

#[cfg(feature = "gob")]
#[test]
fn go_gob_client_calls_geerpc_over_tcp_with_both_magics() {
    go_client_calls_geerpc_over_tcp("gob");
}

#[cfg(feature = "gob")]
#[test]
fn go_gob_client_calls_geerpc_over_http_on_every_path() {
    go_client_calls_geerpc_over_http("gob");
}

/// Strings, signed and unsigned extremes, floats, bools, bytes, slices,
/// maps, a nested struct and a pointer, from Go's gob to geerpc and back;
/// then a value with nearly every field zero (which gob leaves out).
#[cfg(feature = "gob")]
#[test]
fn go_gob_client_round_trips_rich_types_through_geerpc() {
    let Some(bin) = go_bin() else { return };
    let addr = format!("tcp@{}", geerpc_host_port());
    let full = json!({
        "Text": "héllo, 世界 \u{0} \"q\"", "Count": 42, "Negative": i64::MIN,
        "Unsigned": u64::MAX, "Ratio": 0.25, "Ok": true, "Data": "AAEC/w==",
        "List": [1, -2, 3], "Dict": {"a": 1, "b": -2},
        "Nested": {"Name": "n", "Tags": ["x", "y"]}, "Ptr": {"Name": "p", "Tags": ["z"]},
    });
    let sparse = json!({
        "Text": "only", "Count": 0, "Negative": 0, "Unsigned": 0, "Ratio": 0,
        "Ok": false, "Data": null, "List": null, "Dict": null,
        "Nested": {"Name": "", "Tags": null}, "Ptr": null,
    });
    let got = go_client(
        bin,
        &client_flags("gob", ARTICLE, ARTICLE.path, &addr),
        &[
            call("Types.Echo", full.clone()),
            call("Types.Echo", json!({"Text": "only"})),
        ],
    );
    assert_eq!(got[0]["error"], json!(""), "{got:?}");
    assert_eq!(got[0]["reply"], full);
    assert_eq!(got[1]["error"], json!(""), "{got:?}");
    assert_eq!(got[1]["reply"], sparse);
}

#[test]
fn go_client_with_a_foreign_magic_is_refused() {
    let Some(bin) = go_bin() else { return };
    let addr = format!("tcp@{}", geerpc_host_port());
    let bogus = Flavour {
        magic: "0x123456",
        magic_number: 0x123456,
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

// ---- geerpc client -> Go server ----

/// A Go server of flavour `f` (gob and JSON), kept for the whole binary.
fn go_server(f: Flavour) -> Option<&'static GoServer> {
    static ARTICLE_SERVER: OnceLock<GoServer> = OnceLock::new();
    static ORIGINAL_SERVER: OnceLock<GoServer> = OnceLock::new();
    let bin = go_bin()?;
    let cell = if f.magic_number == ARTICLE.magic_number {
        &ARTICLE_SERVER
    } else {
        &ORIGINAL_SERVER
    };
    Some(cell.get_or_init(|| {
        GoServer::start(
            bin,
            &["-codec", "gob,json", "-magic", f.magic, "-path", f.path],
        )
    }))
}

/// A geerpc client for a Go server of flavour `f`: what a geerpc user sets
/// (codec, magic, CONNECT path), and the handle timeout the standard calls
/// expect.
fn builder_for(f: Flavour, codec: Codec) -> ClientBuilder {
    Client::builder()
        .codec(codec)
        .magic(f.magic_number)
        .connect_path(f.path)
        .handle_timeout(Some(Duration::from_millis(HANDLE_TIMEOUT_MS)))
}

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
    let r = client.call_timeout::<_, i64>("Arith.SleepMs", &sleep, CALL_TIMEOUT);
    assert!(
        matches!(r, Err(Error::Timeout { .. })),
        "{what}: call timeout: {r:?}"
    );
    let took = started.elapsed().as_millis() as u64;
    assert!(
        (100..LONG_SLEEP_MS - 500).contains(&took),
        "{what}: {took} ms"
    );
    let started = Instant::now();
    assert_eq!(
        remote(call("Arith.SleepMs", &sleep)),
        HANDLE_TIMEOUT_TEXT,
        "{what}: the Go server's handle timeout"
    );
    let took = started.elapsed().as_millis() as u64;
    assert!(
        HANDLE_REPLY_MS.contains(&took),
        "{what}: the handle timeout's reply came after {took} ms"
    );
    // The timed-out call's late reply did not break the connection.
    assert_eq!(call("Arith.Sum", &args(5, 6)).unwrap(), 11, "{what}");
}

/// A geerpc client calls each Go version over tcp@ and http@ (that
/// version's path, magic and status text).
fn geerpc_client_calls_go_servers(codec: Codec) {
    let mut runs = Vec::new();
    for f in [ARTICLE, ORIGINAL] {
        let Some(server) = go_server(f) else { return };
        runs.push((f, format!("tcp@{}", server.tcp)));
        runs.push((f, format!("http@{}", server.http)));
    }
    // Side by side: each run waits out two timeouts.
    std::thread::scope(|s| {
        for (f, addr) in runs {
            s.spawn(move || {
                let client = builder_for(f, codec).dial(addr.as_str()).unwrap();
                geerpc_standard_calls(&format!("{codec:?} {f:?} {addr}"), &client);
            });
        }
    });
}

#[test]
fn geerpc_json_client_calls_go_servers_over_tcp_and_http() {
    geerpc_client_calls_go_servers(Codec::Json);
}

#[cfg(feature = "gob")]
#[test]
fn geerpc_gob_client_calls_go_servers_over_tcp_and_http() {
    geerpc_client_calls_go_servers(Codec::Gob);
}

/// geerpc's gob to Go's and back: every field set, then nearly none.
#[cfg(feature = "gob")]
#[test]
fn geerpc_gob_client_round_trips_rich_types_through_go() {
    let Some(server) = go_server(ORIGINAL) else {
        return;
    };
    let client = builder_for(ORIGINAL, Codec::Gob)
        .dial(format!("tcp@{}", server.tcp).as_str())
        .unwrap();
    let full = Rich {
        text: "héllo, 世界 \u{0} \"q\"".into(),
        count: 42,
        negative: i64::MIN,
        unsigned: u64::MAX,
        ratio: -0.25,
        ok: true,
        data: vec![0, 1, 2, 255],
        list: vec![1, -2, 3],
        dict: [("a".to_string(), 1), ("b".to_string(), -2)]
            .into_iter()
            .collect(),
        nested: Inner {
            name: "n".into(),
            tags: vec!["x".into(), "y".into()],
        },
        ptr: Some(Inner {
            name: "p".into(),
            tags: vec!["z".into()],
        }),
    };
    let sparse = Rich {
        text: "only".into(),
        ..Rich::default()
    };
    for value in [full, sparse] {
        let back: Rich = client
            .call_timeout("Types.Echo", &value, ANSWER_WITHIN)
            .unwrap();
        assert_eq!(back, value);
    }
}

/// The original version refuses the article's magic number (geerpc's
/// default): the call fails at once, and the Go server says why.
#[test]
fn go_server_refuses_a_foreign_magic() {
    let Some(server) = go_server(ORIGINAL) else {
        return;
    };
    let client = Client::builder()
        .dial(format!("tcp@{}", server.tcp).as_str())
        .unwrap();
    let r = client.call_timeout::<_, i64>(
        "Arith.Sum",
        &common::Args { num1: 1, num2: 2 },
        ANSWER_WITHIN,
    );
    assert!(
        matches!(
            r,
            Err(Error::ConnectionClosed { .. } | Error::NotSent { .. })
        ),
        "{r:?}"
    );
    assert!(
        server.logs_within("invalid magic number 3b3f5c", ANSWER_WITHIN),
        "{:?}",
        server.log()
    );
}

/// A Go server reads the Option through a throw-away json.Decoder (its
/// first read takes up to 512 bytes): each fresh connection's first call
/// must still be answered, not lost behind the Option (4 to 8 of 50 were
/// before geerpc padded the Option). Both transports and codecs.
#[test]
fn go_server_answers_every_first_call() {
    let Some(server) = go_server(ARTICLE) else {
        return;
    };
    let codecs = [
        Codec::Json,
        #[cfg(feature = "gob")]
        Codec::Gob,
    ];
    let mut lost = Vec::new();
    for i in 0..50 {
        let codec = codecs[i % codecs.len()];
        let addr = match i / codecs.len() % 2 {
            0 => format!("tcp@{}", server.tcp),
            _ => format!("http@{}", server.http),
        };
        let client = builder_for(ARTICLE, codec).dial(addr.as_str()).unwrap();
        let r = client.call_timeout::<_, i64>(
            "Arith.Sum",
            &common::Args { num1: 2, num2: 3 },
            Duration::from_secs(3),
        );
        match r {
            Ok(5) => {}
            Err(Error::Timeout { .. }) => lost.push(format!("{codec:?} {addr}")),
            other => panic!("first call on {addr}: {other:?}"),
        }
    }
    assert!(
        lost.is_empty(),
        "first calls lost behind the Option: {lost:?}"
    );
}
