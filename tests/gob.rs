//! `Codec::Gob` end to end: a geerpc client and server over a real
//! connection (calls, handler errors, unknown methods, timeouts, many
//! callers), a Go GeeRPC client's exact bytes answered with a Go server's
//! exact bytes, and what our client writes read back by Go's own decoder.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use geerpc::__fuzz as fuzz_seam;
use geerpc::{Client, Codec, Error, Server, Service};
use serde::{Deserialize, Serialize};

const REQUEST: &[u8] = include_bytes!("fixtures/gob/request.bin");
const REPLY: &[u8] = include_bytes!("fixtures/gob/reply.bin");

/// Go's Nested (tests/fixtures/gob/gen) as a Rust type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Inner {
    name: String,
    score: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Nested {
    #[serde(rename = "ID")]
    id: i64,
    neg: i64,
    big: u64,
    ok: bool,
    ratio: f64,
    #[serde(with = "serde_bytes")]
    raw: Vec<u8>,
    tags: Vec<String>,
    counts: BTreeMap<String, i64>,
    ptr: Option<i64>,
    nil: Option<i64>,
    #[serde(rename = "In")]
    inner: Inner,
    list: Vec<Inner>,
    empty: String,
}

fn nested(i: i64) -> Nested {
    Nested {
        id: i,
        neg: -i - 300,
        big: 1 << 60,
        ok: i % 2 == 0,
        ratio: i as f64 / 4.0,
        raw: vec![0, 1, 255],
        tags: if i % 3 == 0 {
            vec![]
        } else {
            vec!["a".into(), "".into()]
        },
        counts: [("one".to_string(), i)].into_iter().collect(),
        ptr: if i % 2 == 0 { Some(i + 1) } else { None },
        nil: None,
        inner: Inner {
            name: format!("in{i}"),
            score: 0.5,
        },
        list: vec![
            Inner::default(),
            Inner {
                name: "x".into(),
                score: 3.0,
            },
        ],
        empty: String::new(),
    }
}

fn gob_server() -> geerpc::server::ServerHandle {
    let server = Server::new();
    server
        .register(
            Service::new("Foo")
                .method("Sum", |a: Args| Ok::<_, String>(a.num1 + a.num2))
                .method("Echo", |n: Nested| Ok::<_, String>(n))
                .method("List", |n: i64| Ok::<_, String>(vec![n; n as usize]))
                .method("Unit", |(): ()| Ok::<_, String>(())),
        )
        .unwrap();
    start_with(server)
}

#[test]
fn a_gob_client_calls_a_gob_server() {
    init_log();
    let running = gob_server();
    let client = Client::builder()
        .codec(Codec::Gob)
        .dial(running.addr())
        .unwrap();
    let sum: i64 = client.call("Foo.Sum", &Args { num1: 1, num2: 2 }).unwrap();
    assert_eq!(sum, 3);
    for i in 0..6 {
        let back: Nested = client.call("Foo.Echo", &nested(i)).unwrap();
        assert_eq!(back, nested(i));
    }
    let list: Vec<i64> = client.call("Foo.List", &0i64).unwrap();
    assert!(list.is_empty(), "a top-level empty Vec");
    let list: Vec<i64> = client.call("Foo.List", &3i64).unwrap();
    assert_eq!(list, [3, 3, 3]);
    let () = client.call("Foo.Unit", &()).unwrap();
    // Errors: the handler's, and an unknown method (error reply with Go's
    // empty-struct body), and the connection still serves afterwards.
    match client.call::<_, i64>("Arith.Fail", &Args { num1: 1, num2: 1 }) {
        Err(Error::Remote { message, .. }) => assert!(message.contains("boom"), "{message}"),
        other => panic!("{other:?}"),
    }
    match client.call::<_, i64>("Foo.Nope", &Args { num1: 1, num2: 1 }) {
        Err(Error::Remote { message, .. }) => assert!(message.contains("Nope"), "{message}"),
        other => panic!("{other:?}"),
    }
    match client.call::<_, String>("Foo.Sum", &Args { num1: 1, num2: 1 }) {
        Err(Error::Decode { .. }) => {}
        other => panic!("an int reply into a String: {other:?}"),
    }
    let sum: i64 = client.call("Foo.Sum", &Args { num1: 40, num2: 2 }).unwrap();
    assert_eq!(sum, 42);
}

#[test]
fn many_callers_share_one_gob_connection() {
    // Replies are encoded on handler threads in parallel; every type must
    // still be defined on the stream before its first use.
    let running = gob_server();
    let client = Client::builder()
        .codec(Codec::Gob)
        .dial(running.addr())
        .unwrap();
    std::thread::scope(|s| {
        for t in 0..4i64 {
            let client = client.clone();
            s.spawn(move || {
                for i in 0..50 {
                    let n = t * 100 + i;
                    let back: Nested = client.call("Foo.Echo", &nested(n)).unwrap();
                    assert_eq!(back, nested(n));
                    let sum: i64 = client.call("Foo.Sum", &Args { num1: n, num2: 1 }).unwrap();
                    assert_eq!(sum, n + 1);
                }
            });
        }
    });
}

#[test]
fn gob_timeouts_client_and_server_side() {
    let running = start_server();
    // The server's handle timeout: an error reply at the deadline.
    let client = Client::builder()
        .codec(Codec::Gob)
        .handle_timeout(Some(Duration::from_millis(100)))
        .dial(running.addr())
        .unwrap();
    match client.call::<_, i64>(
        "Arith.SleepMs",
        &Args {
            num1: 1500,
            num2: 0,
        },
    ) {
        Err(Error::Remote { message, .. }) => {
            assert!(message.contains("handle timeout"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // The caller's timeout: an error at its deadline, and the connection
    // goes on serving.
    let client = Client::builder()
        .codec(Codec::Gob)
        .dial(running.addr())
        .unwrap();
    let t0 = Instant::now();
    let e = client
        .call_timeout::<_, i64>(
            "Arith.SleepMs",
            &Args {
                num1: 1500,
                num2: 0,
            },
            Duration::from_millis(50),
        )
        .unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    // Generous for a loaded machine: only well before the reply matters.
    assert!(
        t0.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t0.elapsed()
    );
    let sum: i64 = client
        .call("Arith.Sum", &Args { num1: 2, num2: 3 })
        .unwrap();
    assert_eq!(sum, 5);
}

/// Where each value (definitions, then one value message) ends in `s`.
fn value_ends(s: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut at = 0;
    while at < s.len() {
        let n = fuzz_seam::scan(Codec::Gob, &s[at..], true)
            .unwrap()
            .unwrap();
        at += n;
        ends.push(at);
    }
    ends
}

#[test]
fn a_go_clients_bytes_get_a_go_servers_bytes() {
    let running = gob_server();
    let mut s = raw_connect(running.addr());
    s.write_all(b"{\"MagicNumber\":3882844,\"CodecType\":\"application/gob\",\"ConnectTimeout\":10000000000,\"HandleTimeout\":0}\n")
        .unwrap();
    let req = value_ends(REQUEST);
    let rep = value_ends(REPLY);
    assert_eq!((req.len(), rep.len()), (4, 4));
    // One request at a time, so that the replies come in order.
    s.write_all(&REQUEST[..req[1]]).unwrap();
    let mut got = vec![0u8; rep[1]];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, &REPLY[..rep[1]], "the first reply defines Header");
    s.write_all(&REQUEST[req[1]..]).unwrap();
    let mut got = vec![0u8; rep[3] - rep[1]];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, &REPLY[rep[1]..], "the second does not again");
}

#[test]
fn what_a_gob_client_writes_is_what_go_reads() {
    // Go is optional on a developer's machine (CI installs it).
    if Command::new("go").arg("version").output().is_err() {
        eprintln!("skipped: no `go` command on PATH");
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("tcp@{}", listener.local_addr().unwrap());
    let client = Client::builder().codec(Codec::Gob).dial(&addr).unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let calls: Vec<_> = (0..3)
        .map(|i| client.go::<_, i64>("Foo.Echo", &nested(i)).unwrap())
        .collect();
    // Read until the Option line and six values (three messages) are in.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let stream = loop {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "the client closed early");
        got.extend_from_slice(&buf[..n]);
        let Some(nl) = got.iter().position(|&b| b == b'\n') else {
            continue;
        };
        let s = &got[nl + 1..];
        let mut at = 0;
        let mut values = 0;
        while let Ok(Some(n)) = fuzz_seam::scan(Codec::Gob, &s[at..], false) {
            at += n;
            values += 1;
        }
        if values == 6 {
            break s.to_vec();
        }
    };
    drop(calls);
    let dir = env!("CARGO_MANIFEST_DIR");
    let target = format!("{dir}/target");
    let mut go = Command::new("go")
        .args(["run", "./tests/fixtures/gob/gen", "decode", "nested"])
        .current_dir(dir)
        .env("GOCACHE", format!("{target}/go-cache"))
        .env("GOPATH", format!("{target}/go-path"))
        .env("GOPROXY", "off")
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "-mod=mod")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    go.stdin.take().unwrap().write_all(&stream).unwrap();
    let out = go.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "go decode failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line[0]["ServiceMethod"], "Foo.Echo");
        assert_eq!(line[0]["Seq"].as_u64().unwrap(), i as u64 + 1);
        // Go's JSON of what it decoded, back into our type.
        let mut back: serde_json::Value = line[1].clone();
        back["Raw"] = serde_json::json!([0, 1, 255]); // Go's JSON has base64
        if back["Tags"].is_null() {
            back["Tags"] = serde_json::json!([]);
        }
        let back: Nested = serde_json::from_value(back).unwrap();
        assert_eq!(back, nested(i as i64));
    }
}
