//! `Codec::Gob` and values whose shape varies: every pattern of `None`
//! fields of one struct goes over one connection against a few type
//! definitions (a struct's type is the widest it has had), both ways
//! between a geerpc client and server, and Go's own decoder reads them;
//! an empty list or map whose type was seen before is sent typed.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use geerpc::__fuzz as fuzz_seam;
use geerpc::{Client, Codec, Server, Service};
use serde::{Deserialize, Serialize};

/// Go's Twelve (tests/fixtures/gob/gen): 4,096 patterns of `None`, with
/// names long enough that a definition per pattern would pass the 256 KiB
/// of definitions a receiver keeps within ~1,500 values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Twelve {
    optional_measurement_alpha: Option<i64>,
    optional_measurement_bravo: Option<i64>,
    optional_measurement_charlie: Option<i64>,
    optional_measurement_delta: Option<i64>,
    optional_measurement_echo: Option<i64>,
    optional_measurement_foxtrot: Option<i64>,
    optional_measurement_golf: Option<i64>,
    optional_measurement_hotel: Option<i64>,
    optional_measurement_india: Option<i64>,
    optional_measurement_juliett: Option<i64>,
    optional_measurement_kilo: Option<i64>,
    optional_measurement_lima: Option<i64>,
}

const PATTERNS: u32 = 1 << 12;

/// The fields whose bit is set in `p`, each `Some(bit * 10 - 7)` (negative
/// for bit 0: zigzag too).
fn twelve(p: u32) -> Twelve {
    let f = |bit: u32| (p >> bit & 1 == 1).then_some(i64::from(bit) * 10 - 7);
    Twelve {
        optional_measurement_alpha: f(0),
        optional_measurement_bravo: f(1),
        optional_measurement_charlie: f(2),
        optional_measurement_delta: f(3),
        optional_measurement_echo: f(4),
        optional_measurement_foxtrot: f(5),
        optional_measurement_golf: f(6),
        optional_measurement_hotel: f(7),
        optional_measurement_india: f(8),
        optional_measurement_juliett: f(9),
        optional_measurement_kilo: f(10),
        optional_measurement_lima: f(11),
    }
}

#[test]
fn every_pattern_of_nones_goes_both_ways_on_one_connection() {
    init_log();
    let server = Server::new();
    server
        .register(
            // The reply is the complementary pattern: the server's stream
            // sees every pattern too.
            Service::new("Shapes").method("Flip", |p: u32| {
                Ok::<_, String>(twelve(!p & (PATTERNS - 1)))
            }),
        )
        .unwrap();
    server
        .register(Service::new("Twelve").method("Echo", |t: Twelve| Ok::<_, String>(t)))
        .unwrap();
    let running = start_with(server);
    let client = Client::builder()
        .codec(Codec::Gob)
        .dial(running.addr())
        .unwrap();
    for p in 0..PATTERNS {
        let back: Twelve = client.call("Twelve.Echo", &twelve(p)).unwrap();
        assert_eq!(back, twelve(p), "pattern {p:#x}");
        let flipped: Twelve = client.call("Shapes.Flip", &p).unwrap();
        assert_eq!(flipped, twelve(!p & (PATTERNS - 1)), "pattern {p:#x}");
    }
}

/// Whether Go is here (optional on a developer's machine; CI installs it).
fn have_go() -> bool {
    let ok = Command::new("go").arg("version").output().is_ok();
    if !ok {
        eprintln!("skipped: no `go` command on PATH");
    }
    ok
}

/// What Go's own decoder reads from `stream` (tests/fixtures/gob/gen's
/// decode mode): one JSON line, `[header, body]`, per message.
fn go_decode(kind: &str, stream: Vec<u8>) -> Vec<serde_json::Value> {
    let dir = env!("CARGO_MANIFEST_DIR");
    let target = format!("{dir}/target");
    let mut go = Command::new("go")
        .args(["run", "./tests/fixtures/gob/gen", "decode", kind])
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
    let mut stdin = go.stdin.take().unwrap();
    // Written from another thread: Go's output would fill its pipe first.
    let writer = std::thread::spawn(move || stdin.write_all(&stream));
    let out = go.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "go decode {kind} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn go_reads_every_pattern_of_nones() {
    if !have_go() {
        return;
    }
    // The connection writer's own steps: messages encoded as fragments,
    // then rewritten as one stream.
    let mut frags = Vec::new();
    for p in 0..PATTERNS {
        fuzz_seam::encode_message(
            Codec::Gob,
            &mut frags,
            "Echo.Twelve",
            u64::from(p),
            "",
            &twelve(p),
        )
        .unwrap();
    }
    let stream = fuzz_seam::gob_rebase(&frags).unwrap();
    // A definition per pattern would be ~1 MiB of definitions.
    assert!(stream.len() < 200 * 1024, "{} bytes", stream.len());
    let lines = go_decode("twelve", stream);
    assert_eq!(lines.len(), PATTERNS as usize);
    for (p, line) in lines.iter().enumerate() {
        assert_eq!(line[0]["Seq"].as_u64().unwrap(), p as u64);
        // Go's JSON of what it decoded (nil pointers as null).
        let back: Twelve = serde_json::from_value(line[1].clone()).unwrap();
        assert_eq!(back, twelve(p as u32), "pattern {p:#x}");
    }
}

/// Replies of type `T`, as a server's connection writes them.
fn replies<T: Serialize>(values: &[T]) -> Vec<u8> {
    let mut frags = Vec::new();
    for (seq, v) in values.iter().enumerate() {
        fuzz_seam::encode_message(Codec::Gob, &mut frags, "Lists.Get", seq as u64, "", v).unwrap();
    }
    fuzz_seam::gob_rebase(&frags).unwrap()
}

#[test]
fn go_reads_an_empty_list_or_map_once_its_type_was_seen() {
    if !have_go() {
        return;
    }
    // A Go client calling a method whose reply is []int or map[string]int
    // gets an empty one after a non-empty one: typed (Go refused the
    // `[]interface{}` once sent for it: "decoding into local type *[]int,
    // received remote type []interface").
    let lists: Vec<Vec<i64>> = vec![vec![1, -2], vec![], vec![3], vec![]];
    let lines = go_decode("ints", replies(&lists));
    assert_eq!(lines.len(), lists.len());
    for (line, want) in lines.iter().zip(&lists) {
        let got: Option<Vec<i64>> = serde_json::from_value(line[1].clone()).unwrap();
        assert_eq!(got.unwrap_or_default(), *want);
    }
    let maps: Vec<BTreeMap<String, i64>> = vec![
        BTreeMap::from([("a".to_string(), 1)]),
        BTreeMap::new(),
        BTreeMap::new(),
    ];
    let lines = go_decode("strmap", replies(&maps));
    assert_eq!(lines.len(), maps.len());
    for (line, want) in lines.iter().zip(&maps) {
        let got: Option<BTreeMap<String, i64>> = serde_json::from_value(line[1].clone()).unwrap();
        assert_eq!(got.unwrap_or_default(), *want);
    }
}

#[test]
fn described_types_are_typed_from_their_first_empty_value() {
    // Types no other test sends (the memory is the process's).
    geerpc::gob::describe::<Vec<i16>>().unwrap();
    geerpc::gob::describe::<BTreeMap<String, i32>>().unwrap();
    assert!(
        geerpc::gob::describe::<serde_json::Value>().is_err(),
        "a self-describing type cannot be traced"
    );
    if !have_go() {
        return;
    }
    let lists: Vec<Vec<i16>> = vec![vec![], vec![7]];
    let lines = go_decode("ints", replies(&lists));
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1][1], serde_json::json!([7]));
    let maps: Vec<BTreeMap<String, i32>> = vec![BTreeMap::new()];
    let lines = go_decode("strmap", replies(&maps));
    assert_eq!(lines.len(), 1);
}
