//! Property tests of the gob codec (its own file: tests/prop_frames.rs is
//! full): generated values, several messages on one stream as the writer
//! puts them, read back through the frame reader in generated pieces,
//! decode to what was sent; and any single-byte change of such a stream
//! is an error or a value, never a panic.
//!
//! Bounded for CI like tests/prop_frames.rs: a fixed seed and 64 cases per
//! property (or `GEERPC_PROP_CASES`).

use std::collections::BTreeMap;
use std::io::{self, Read};

use geerpc::__fuzz::{self as fz, Reader};
use geerpc::Codec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use serde::{Deserialize, Serialize};

fn config() -> Config {
    let cases = std::env::var("GEERPC_PROP_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0x0067_6f62_0022),
        failure_persistence: None,
        ..Config::default()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Leaf {
    // Go drops a pointer to a zero value: Some values are never zero here.
    tag: Option<String>,
    n: Option<i64>,
    f: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Value {
    id: u64,
    delta: i32,
    ok: bool,
    name: String,
    #[serde(with = "serde_bytes")]
    raw: Vec<u8>,
    leaves: Vec<Leaf>,
    by_name: BTreeMap<String, Vec<i16>>,
    first: Option<Leaf>,
}

fn leaf() -> impl Strategy<Value = Leaf> {
    (
        prop::option::of("[a-z]{1,6}"),
        prop::option::of(prop_oneof![i64::MIN..0, 1..i64::MAX]),
        prop::num::f64::NORMAL | prop::num::f64::ZERO | prop::num::f64::SUBNORMAL,
    )
        .prop_map(|(tag, n, f)| Leaf { tag, n, f })
}

fn value() -> impl Strategy<Value = Value> {
    (
        any::<u64>(),
        any::<i32>(),
        any::<bool>(),
        "\\PC{0,12}",
        prop::collection::vec(any::<u8>(), 0..20),
        prop::collection::vec(leaf(), 0..4),
        prop::collection::btree_map(
            "[a-z]{0,4}",
            prop::collection::vec(any::<i16>(), 0..3),
            0..3,
        ),
        prop::option::of(leaf()),
    )
        .prop_map(|(id, delta, ok, name, raw, leaves, by_name, first)| Value {
            id,
            delta,
            ok,
            name,
            raw,
            leaves,
            by_name,
            first,
        })
}

/// Hands out bytes in the given piece sizes, in turn.
struct Pieces {
    data: Vec<u8>,
    pos: usize,
    sizes: Vec<usize>,
    reads: usize,
}

impl Read for Pieces {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.sizes[self.reads % self.sizes.len()]
            .min(out.len())
            .min(self.data.len() - self.pos);
        self.reads += 1;
        out[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// One stream of (header, body) messages as a gob connection writes it.
fn stream(values: &[Value]) -> Vec<u8> {
    let mut frags = Vec::new();
    for (i, v) in values.iter().enumerate() {
        fz::encode_message(Codec::Gob, &mut frags, "Svc.Method", i as u64 + 1, "", v).unwrap();
    }
    fz::gob_rebase(&frags).unwrap()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn values_survive_a_stream_read_in_pieces(
        values in prop::collection::vec(value(), 1..5),
        sizes in prop::collection::vec(1usize..64, 1..4),
    ) {
        let data = stream(&values);
        let mut rd = Reader::new(Pieces { data, pos: 0, sizes, reads: 0 }, 1 << 20);
        for (i, v) in values.iter().enumerate() {
            let (h, b) = rd.read_message(Codec::Gob).unwrap().unwrap();
            let (method, seq, error) = fz::decode_header(Codec::Gob, &h).unwrap();
            prop_assert_eq!((method.as_str(), seq, error.as_str()), ("Svc.Method", i as u64 + 1, ""));
            let back: Value = Codec::Gob.decode(&b, "body").unwrap();
            prop_assert_eq!(&back, v);
        }
        prop_assert!(rd.read_message(Codec::Gob).unwrap().is_none());
    }

    #[test]
    fn a_changed_byte_is_an_error_or_a_value(
        values in prop::collection::vec(value(), 1..3),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut data = stream(&values);
        let i = at.index(data.len());
        data[i] = byte;
        let mut rd = Reader::new(&data[..], 1 << 20);
        while let Ok(Some((h, b))) = rd.read_message(Codec::Gob) {
            let _ = fz::decode_header(Codec::Gob, &h);
            let _ = Codec::Gob.decode::<Value>(&b, "body");
            let _ = Codec::Gob.decode::<serde::de::IgnoredAny>(&b, "body");
        }
    }
}
