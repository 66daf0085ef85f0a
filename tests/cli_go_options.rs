//! `geerpc call --codec/--magic/--connect-path` and `loadgen load --codec`
//! (issue 22): the flags reach the wire (against the Go-like double of
//! `tests/go_like` and a geerpc server), and bad values are usage errors
//! (exit 2) that connect nowhere.
#![cfg(feature = "cli")]

mod cli_support;
mod common;
mod go_like;

use std::path::PathBuf;
use std::process::Command;

use cli_support::{assert_code, geerpc, stderr, stdout};
use geerpc::{Codec, Server, Service};
use go_like::{GoLike, GoVersion};
use serde::Deserialize;

const SUM: &str = r#"{"Num1":20,"Num2":22}"#;

#[test]
fn call_with_the_original_series_magic_number() {
    let go = GoLike::start(GoVersion::Original, false, false, 3);
    for magic in ["0x3bef5c", "0X3BEF5C", "3927900"] {
        let o = geerpc(&[
            "call",
            "--addr",
            &go.addr,
            "--magic",
            magic,
            "Arith.Sum",
            SUM,
        ]);
        assert_code(&o, 0);
        assert_eq!(stdout(&o).trim(), "42", "--magic {magic}");
        assert_eq!(go.next().option["MagicNumber"], 0x3bef5c);
    }
}

#[test]
fn call_over_http_with_a_connect_path() {
    let go = GoLike::start(GoVersion::Article, true, false, 2);
    let o = geerpc(&[
        "call",
        "--addr",
        &go.addr,
        "--connect-path",
        "/myrpc",
        "Arith.Sum",
        SUM,
    ]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o).trim(), "42");
    assert_eq!(go.next().connect_path.as_deref(), Some("/myrpc"));
    // Without it: the default path, which this Go server does not serve.
    let o = geerpc(&["call", "--addr", &go.addr, "Arith.Sum", SUM]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("404"), "{}", stderr(&o));
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Args {
    num1: i64,
    num2: i64,
}

/// `--codec msgpack` calls a geerpc server, and goes on the wire: the
/// Go-like double (JSON only) sees it in the Option and closes.
#[test]
fn call_with_msgpack() {
    let server = Server::new();
    server
        .register(Service::new("Arith").method("Sum", |a: Args| Ok::<_, String>(a.num1 + a.num2)))
        .unwrap();
    let handle = server.listen("tcp@127.0.0.1:0").unwrap();
    let addr = handle.addr().to_string();
    let o = geerpc(&[
        "call",
        "--addr",
        &addr,
        "--codec",
        "msgpack",
        "Arith.Sum",
        SUM,
    ]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o).trim(), "42");
    // The JSON-only double refuses MessagePack: the flag went on the wire.
    let go = GoLike::start(GoVersion::Article, false, false, 1);
    let o = geerpc(&[
        "call",
        "--addr",
        &go.addr,
        "--codec",
        "msgpack",
        "Arith.Sum",
        SUM,
    ]);
    assert_ne!(o.status.code(), Some(0), "{}", stdout(&o));
    assert_eq!(go.next().option["CodecType"], "application/msgpack");
}

fn no_gob_here() -> bool {
    Codec::from_content_type("application/gob").is_none()
}

#[test]
fn bad_values_are_usage_errors() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let tcp = format!("tcp@{}", listener.local_addr().unwrap());
    let http = format!("http@{}", listener.local_addr().unwrap());
    let mut cases = vec![
        (vec!["--magic", "0x3b3f5d"], "no GeeRPC magic number"),
        (vec!["--magic", "3bef5c"], "not a number"),
        (vec!["--codec", "xml"], "expected json, msgpack or gob"),
        (vec!["--connect-path", "myrpc"], "must start with '/'"),
        (vec!["--connect-path", "/a b"], "printable ASCII"),
        (vec!["--connect-path", "/a\r\nHost: x"], "printable ASCII"),
    ];
    if no_gob_here() {
        cases.push((vec!["--codec", "gob"], "this build has no gob codec"));
    }
    for (flags, says) in cases {
        for addr in [&tcp, &http] {
            let mut args = vec!["call", "--addr", addr.as_str()];
            args.extend(&flags);
            args.extend(["Arith.Sum", SUM]);
            let o = geerpc(&args);
            assert_code(&o, 2);
            assert!(stderr(&o).contains(says), "{flags:?}: {}", stderr(&o));
        }
    }
    assert_eq!(
        listener.accept().map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::WouldBlock),
        "no connection was made"
    );
}

/// `--codec gob`: a usage error saying why in a build without the gob
/// codec; in one with it, accepted by the parser (what the call then does
/// is the gob codec's business).
#[test]
fn gob_is_accepted_exactly_when_built_in() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("tcp@{}", listener.local_addr().unwrap());
    drop(listener);
    let o = geerpc(&[
        "call",
        "--addr",
        &addr,
        "--codec",
        "gob",
        "--timeout",
        "2s",
        "Arith.Sum",
        SUM,
    ]);
    let err = stderr(&o);
    if no_gob_here() {
        assert_code(&o, 2);
        assert!(err.contains("this build has no gob codec"), "{err}");
    } else {
        assert!(!err.contains("no gob codec"), "{err}");
        assert_ne!(o.status.code(), Some(2), "{err}");
    }
}

fn loadgen() -> PathBuf {
    common::example("loadgen")
}

#[test]
fn loadgen_takes_codec_gob_exactly_when_built_in() {
    let o = Command::new(loadgen())
        .args(["load", "--addr", "127.0.0.1:1", "--codec", "bogus"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("expected json, msgpack or gob"), "{err}");
    assert!(
        err.contains("--codec json|msgpack|gob"),
        "the usage says gob: {err}"
    );
    let o = Command::new(loadgen())
        .args([
            "load",
            "--addr",
            "127.0.0.1:1",
            "--secs",
            "1",
            "--codec",
            "gob",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    if no_gob_here() {
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains("this build has no gob codec"), "{err}");
    } else {
        assert!(!err.contains("no gob codec"), "{err}");
    }
}
