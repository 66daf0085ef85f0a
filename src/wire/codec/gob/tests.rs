//! The gob codec against byte streams Go wrote (tests/fixtures/gob/, made
//! by tests/fixtures/gob/gen), and against itself.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::scan::GobScan;
use super::stream::{GobRecv, GobSend};
use super::types::FIRST_USER_ID;
use super::varint::{put_int, put_message, put_uint};
use super::*;
use crate::wire::codec::{Codec, Header, Scan, MAX_DEPTH};

const REQUEST: &[u8] = include_bytes!("../../../../tests/fixtures/gob/request.bin");
const REPLY: &[u8] = include_bytes!("../../../../tests/fixtures/gob/reply.bin");
const ERROR_REPLY: &[u8] = include_bytes!("../../../../tests/fixtures/gob/error_reply.bin");
const NESTED: &[u8] = include_bytes!("../../../../tests/fixtures/gob/nested.bin");
const SCALARS: &[u8] = include_bytes!("../../../../tests/fixtures/gob/scalars.bin");

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Args {
    num1: i64,
    num2: i64,
}

/// Splits a stream into values as the frame reader does, and turns each
/// into a fragment as the connection's reader does.
fn values(stream: &[u8]) -> Vec<Vec<u8>> {
    let mut recv = GobRecv::default();
    let mut out = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let end = match GobScan::default().scan(rest).unwrap() {
            Scan::Complete(n) => n,
            Scan::Incomplete(_) => panic!("a truncated value"),
        };
        let mut frag = Vec::new();
        absorb(&mut recv, &rest[..end], &mut frag).unwrap();
        out.push(frag);
        rest = &rest[end..];
    }
    out
}

/// Absorbs one value's messages and appends the value as a self-contained
/// fragment (definitions, then value).
fn absorb(recv: &mut GobRecv, frame: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let at = recv.absorb(frame)?;
    fragment(recv.table(), &frame[at..], out)
}

/// Encodes values as fragments and writes them through one stream's state,
/// as the connection's writer does.
fn stream_of(frags: &[Vec<u8>]) -> Vec<u8> {
    let mut send = GobSend::default();
    let mut out = Vec::new();
    for f in frags {
        send.rebase(f, &mut out).unwrap();
    }
    out
}

fn frag<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    Codec::Gob.encode_into(&mut out, v, "test").unwrap();
    out
}

fn header(method: &str, seq: u64, error: &str) -> Header {
    Header {
        service_method: method.into(),
        seq,
        error: error.into(),
        ..Header::default()
    }
}

#[test]
fn the_go_day7_clients_requests_decode() {
    let v = values(REQUEST);
    assert_eq!(v.len(), 4);
    assert_eq!(
        Codec::Gob.decode_header(&v[0]).unwrap(),
        header("Foo.Sum", 1, "")
    );
    let a: Args = Codec::Gob.decode(&v[1], "args").unwrap();
    assert_eq!(a, Args { num1: 1, num2: 2 });
    // The second request has no definitions of its own: the stream's serve.
    assert_eq!(
        Codec::Gob.decode_header(&v[2]).unwrap(),
        header("Foo.Sum", 2, "")
    );
    let a: Args = Codec::Gob.decode(&v[3], "args").unwrap();
    assert_eq!(a, Args { num1: 3, num2: 4 });
}

#[test]
fn our_requests_replies_and_error_replies_are_gos_bytes() {
    let ours = stream_of(&[
        frag(&header("Foo.Sum", 1, "")),
        frag(&Args { num1: 1, num2: 2 }),
        frag(&header("Foo.Sum", 2, "")),
        frag(&Args { num1: 3, num2: 4 }),
    ]);
    assert_eq!(ours, REQUEST);
    let ours = stream_of(&[
        frag(&header("Foo.Sum", 1, "")),
        frag(&3i64),
        frag(&header("Foo.Sum", 2, "")),
        frag(&7i32),
    ]);
    assert_eq!(ours, REPLY);
    let err = "rpc server: request handle timeout: expect within 1s";
    let ours = stream_of(&[frag(&header("Foo.Sum", 1, err)), EMPTY_BODY.to_vec()]);
    assert_eq!(ours, ERROR_REPLY);
    // And the error reply reads back: Error set, the body an empty struct.
    let v = values(ERROR_REPLY);
    assert_eq!(Codec::Gob.decode_header(&v[0]).unwrap().error, err);
    let () = Codec::Gob.decode(&v[1], "body").unwrap();
    assert_eq!(frag(&()), EMPTY_BODY, "() is Go's struct{{}}{{}}");
}

#[test]
fn go_replies_decode() {
    let v = values(REPLY);
    assert_eq!(Codec::Gob.decode::<i64>(&v[1], "reply").unwrap(), 3);
    assert_eq!(Codec::Gob.decode::<u8>(&v[3], "reply").unwrap(), 7);
}

#[test]
fn go_scalars_decode_and_ours_are_gos_bytes() {
    let v = values(SCALARS);
    assert_eq!(Codec::Gob.decode::<i64>(&v[0], "").unwrap(), -1);
    assert_eq!(Codec::Gob.decode::<u64>(&v[1], "").unwrap(), 300);
    assert_eq!(Codec::Gob.decode::<f64>(&v[2], "").unwrap(), 1.5);
    assert!(Codec::Gob.decode::<bool>(&v[3], "").unwrap());
    assert_eq!(Codec::Gob.decode::<String>(&v[4], "").unwrap(), "héllo");
    let b: serde_bytes::ByteBuf = Codec::Gob.decode(&v[5], "").unwrap();
    assert_eq!(b.as_ref(), b"bytes");
    assert_eq!(Codec::Gob.decode::<Vec<u8>>(&v[5], "").unwrap(), b"bytes");
    assert_eq!(
        Codec::Gob.decode::<Vec<i64>>(&v[6], "").unwrap(),
        [1, -2, 3]
    );
    let m: BTreeMap<String, i64> = Codec::Gob.decode(&v[7], "").unwrap();
    assert_eq!(m, [("k".to_string(), -5)].into_iter().collect());
    assert_eq!(Codec::Gob.decode::<i64>(&v[8], "").unwrap(), 0);
    assert_eq!(Codec::Gob.decode::<String>(&v[9], "").unwrap(), "");
    let ours = stream_of(&[
        frag(&-1i64),
        frag(&300u64),
        frag(&1.5f64),
        frag(&true),
        frag("héllo"),
        frag(&serde_bytes::Bytes::new(b"bytes")),
        frag(&[1i64, -2, 3]),
        frag(&m),
        frag(&0i64),
        frag(""),
    ]);
    assert_eq!(ours, SCALARS);
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Inner {
    name: String,
    score: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Nested {
    #[serde(rename = "ID")]
    id: i32,
    neg: i64,
    big: u64,
    ok: bool,
    ratio: f32,
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

fn nested() -> Nested {
    Nested {
        id: 1,
        neg: -300,
        big: 1 << 60,
        ok: true,
        ratio: -2.5,
        raw: vec![0, 1, 255],
        tags: vec!["a".into(), "".into(), "ccc".into()],
        counts: [("one".to_string(), 1)].into_iter().collect(),
        ptr: Some(7),
        nil: None,
        inner: Inner {
            name: "in".into(),
            score: 0.5,
        },
        list: vec![
            Inner {
                name: "x".into(),
                score: 0.0,
            },
            Inner {
                name: "".into(),
                score: 3.0,
            },
        ],
        empty: String::new(),
    }
}

#[test]
fn a_go_nested_struct_decodes_and_ours_round_trips() {
    let v = values(NESTED);
    assert_eq!(v.len(), 1);
    let n: Nested = Codec::Gob.decode(&v[0], "nested").unwrap();
    assert_eq!(n, nested());
    let ours = stream_of(&[frag(&nested())]);
    let back: Nested = Codec::Gob.decode(&values(&ours)[0], "nested").unwrap();
    assert_eq!(back, nested());
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Color {
    Red,
    Green,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Shapes {
    maybe: Option<Box<Shapes>>,
    list: Vec<Option<i32>>,
    empty: Vec<String>,
    map: BTreeMap<u32, Vec<Inner>>,
    color: Color,
    unit: (),
    tuple: (i32, i32),
    ch: char,
}

#[test]
fn values_round_trip_through_one_stream() {
    let deep = Shapes {
        maybe: Some(Box::new(Shapes {
            maybe: None,
            list: vec![Some(1)],
            empty: vec!["x".into()],
            map: BTreeMap::new(),
            color: Color::Red,
            unit: (),
            tuple: (0, 0),
            ch: 'z',
        })),
        list: vec![],
        empty: vec![],
        map: [
            (1, vec![]),
            (
                2,
                vec![Inner {
                    name: "n".into(),
                    score: 1.0,
                }],
            ),
        ]
        .into_iter()
        .collect(),
        color: Color::Green,
        unit: (),
        tuple: (-1, 2),
        ch: 'é',
    };
    let frags = [
        frag(&deep),
        frag(&deep),
        frag(&Vec::<i32>::new()),
        frag(&vec![vec![1u8, 2], vec![]]),
        frag(&Some(5u16)),
    ];
    let v = values(&stream_of(&frags));
    assert_eq!(Codec::Gob.decode::<Shapes>(&v[0], "").unwrap(), deep);
    assert_eq!(Codec::Gob.decode::<Shapes>(&v[1], "").unwrap(), deep);
    assert!(Codec::Gob
        .decode::<Vec<String>>(&v[2], "")
        .unwrap()
        .is_empty());
    assert_eq!(
        Codec::Gob.decode::<Vec<Vec<u8>>>(&v[3], "").unwrap(),
        [vec![1, 2], vec![]]
    );
    assert_eq!(
        Codec::Gob.decode::<Option<u16>>(&v[4], "").unwrap(),
        Some(5)
    );
}

#[test]
fn the_second_value_of_a_type_sends_no_definition() {
    let one = stream_of(&[frag(&Args { num1: 1, num2: 2 })]);
    let two = stream_of(&[
        frag(&Args { num1: 1, num2: 2 }),
        frag(&Args { num1: 1, num2: 2 }),
    ]);
    let value_len = 8; // length byte + 7-byte value message
    assert_eq!(two.len(), one.len() + value_len);
    assert_eq!(&two[one.len()..], &one[one.len() - value_len..]);
}

#[test]
fn what_gob_cannot_say_is_an_error() {
    #[derive(Serialize)]
    enum E {
        Data(i32),
    }
    let mut out = Vec::new();
    for e in [
        Codec::Gob.encode_into(&mut out, &E::Data(1), "v"),
        Codec::Gob.encode_into(&mut out, &None::<i32>, "v"),
        Codec::Gob.encode_into(&mut out, &vec![Some(1), None], "v"),
        Codec::Gob.encode_into(&mut out, &(1, "x"), "v"),
        Codec::Gob.encode_into(&mut out, &1u128, "v"),
    ] {
        assert!(matches!(e, Err(crate::Error::Encode { .. })), "{e:?}");
    }
}

#[test]
fn a_field_whose_element_type_cannot_be_seen_is_still_sent() {
    // Not zero, so it must go; its unknown element type as interface{}.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct S {
        v: Vec<Vec<i32>>,
        m: BTreeMap<String, Vec<String>>,
        empty: Vec<u64>,
    }
    let s = S {
        v: vec![vec![]],
        m: [("a".to_string(), vec![])].into_iter().collect(),
        empty: vec![],
    };
    let v = values(&stream_of(&[frag(&s)]));
    assert_eq!(Codec::Gob.decode::<S>(&v[0], "s").unwrap(), s);
}

/// A definition message of `id` as type `t`.
fn def(id: i64, t: &types::WireType) -> Vec<u8> {
    let mut msg = Vec::new();
    put_int(&mut msg, -id);
    t.encode(id, &mut msg);
    let mut out = Vec::new();
    put_message(&mut out, &msg);
    out
}

#[test]
fn bad_input_is_an_error_never_a_panic() {
    let slice_of_self = types::WireType::Slice {
        name: String::new(),
        elem: 65,
    };
    // [[[[...]]]] far deeper than the limit, through a recursive type.
    let mut deep = def(65, &slice_of_self);
    let mut msg = Vec::new();
    put_int(&mut msg, 65);
    put_uint(&mut msg, 0);
    msg.extend(std::iter::repeat_n(1u8, 100_000));
    msg.push(0);
    put_message(&mut deep, &msg);
    let e = Codec::Gob
        .decode::<serde_json::Value>(&deep, "v")
        .unwrap_err();
    assert!(e.to_string().contains("too deeply"), "{e}");
    // Skipped rather than decoded: the same bound.
    let e = Codec::Gob
        .decode::<serde::de::IgnoredAny>(&deep, "v")
        .unwrap_err();
    assert!(e.to_string().contains("too deeply"), "{e}");
    // A count past the bytes left.
    let mut huge = def(
        65,
        &types::WireType::Slice {
            name: String::new(),
            elem: types::T_INT,
        },
    );
    let mut msg = Vec::new();
    put_int(&mut msg, 65);
    put_uint(&mut msg, 0);
    put_uint(&mut msg, u64::MAX);
    put_message(&mut huge, &msg);
    assert!(Codec::Gob.decode::<Vec<i64>>(&huge, "v").is_err());
    // A value of a type never defined, and a redefinition.
    let mut undefined = Vec::new();
    put_message(&mut undefined, &[0xff, 0x82, 0x00]);
    assert!(Codec::Gob.decode::<i64>(&undefined, "v").is_err());
    let twice = [def(65, &slice_of_self), def(65, &slice_of_self)].concat();
    let mut frag = Vec::new();
    assert!(absorb(&mut GobRecv::default(), &twice, &mut frag).is_err());
    let mut recv = GobRecv::default();
    absorb(
        &mut recv,
        &[def(65, &slice_of_self), vec![4, 0xff, 0x82, 0, 0]].concat(),
        &mut frag,
    )
    .unwrap();
    assert!(
        absorb(&mut recv, &def(65, &slice_of_self), &mut frag).is_err(),
        "redefined later"
    );
    // Every prefix and every one-byte change of Go's streams: no panic.
    for s in [REQUEST, REPLY, ERROR_REPLY, NESTED, SCALARS] {
        for cut in 0..s.len() {
            let _ = Codec::Gob.decode::<Nested>(&s[..cut], "v");
            let _ = absorb(&mut GobRecv::default(), &s[..cut], &mut Vec::new());
        }
        for i in 0..s.len() {
            for b in [0x00, 0x01, 0x7f, 0x80, 0xf8, 0xff] {
                let mut m = s.to_vec();
                m[i] = b;
                let _ = Codec::Gob.decode::<Nested>(&m, "v");
                let _ = Codec::Gob.decode::<serde_json::Value>(&m, "v");
                let _ = absorb(&mut GobRecv::default(), &m, &mut Vec::new());
                let _ = GobSend::default().rebase(&m, &mut Vec::new());
            }
        }
    }
}

#[test]
fn a_message_not_sent_takes_its_definitions_back() {
    let mut send = GobSend::default();
    let mut out = Vec::new();
    let cp = send
        .rebase(&frag(&Args { num1: 1, num2: 2 }), &mut out)
        .unwrap();
    send.rollback(cp);
    let mut again = Vec::new();
    send.rebase(&frag(&Args { num1: 1, num2: 2 }), &mut again)
        .unwrap();
    assert_eq!(again, out, "the definition is sent again");
}

#[test]
fn max_depth_is_the_codecs() {
    assert_eq!(MAX_DEPTH, 128);
}

#[test]
fn a_message_costs_its_own_bytes_not_the_tables() {
    // 1,000 definitions (a chain of slice types 65 -> ... -> int), sent
    // once, then 100 messages whose header and body are of type 65.
    let n = 1000;
    let mut stream = Vec::new();
    for id in FIRST_USER_ID..FIRST_USER_ID + n {
        let elem = if id + 1 < FIRST_USER_ID + n {
            id + 1
        } else {
            types::T_INT
        };
        let t = types::WireType::Slice {
            name: String::new(),
            elem,
        };
        stream.extend(def(id, &t));
    }
    let value: &[u8] = &[4, 0xff, 0x82, 0, 0]; // type 65, delta 0, no items
    for _ in 0..100 {
        stream.extend([value, value].concat());
    }
    let mut rd = crate::wire::frame::FrameReader::new(&stream[..], 1 << 20);
    let mut kept = Vec::new();
    while let Some(m) = rd.read_message(Codec::Gob).unwrap() {
        let (h, b) = (rd.header(&m), rd.body(&m));
        assert_eq!((h.bytes, b.bytes), (value, value), "only the value's bytes");
        let got: Vec<i64> = Codec::Gob.decode_body(b, "body").unwrap();
        assert!(got.is_empty());
        let mut owned = crate::wire::codec::OwnedBody::default();
        owned.refill(b);
        kept.push(owned);
    }
    assert_eq!(kept.len(), 100);
    // Every message shares the one table: nothing was copied per message.
    let first = kept[0].gob.as_ref().unwrap();
    assert_eq!(first.len(), n as usize);
    for k in &kept {
        assert!(Arc::ptr_eq(first, k.gob.as_ref().unwrap()));
        // A kept body still decodes (later, on any thread).
        let got: Vec<i64> = Codec::Gob.decode_body(k.as_body(), "body").unwrap();
        assert!(got.is_empty());
    }
}

/// 13 optional fields: 8,192 patterns of `None`.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Thirteen {
    a: Option<i64>,
    b: Option<i64>,
    c: Option<i64>,
    d: Option<i64>,
    e: Option<i64>,
    f: Option<i64>,
    g: Option<i64>,
    h: Option<i64>,
    i: Option<i64>,
    j: Option<i64>,
    k: Option<i64>,
    l: Option<i64>,
    m: Option<i64>,
}

fn thirteen(p: u32) -> Thirteen {
    let f = |bit: u32| (p >> bit & 1 == 1).then_some(i64::from(bit) + 1);
    Thirteen {
        a: f(0),
        b: f(1),
        c: f(2),
        d: f(3),
        e: f(4),
        f: f(5),
        g: f(6),
        h: f(7),
        i: f(8),
        j: f(9),
        k: f(10),
        l: f(11),
        m: f(12),
    }
}

#[test]
fn every_pattern_of_nones_shares_a_few_definitions() {
    let frags: Vec<Vec<u8>> = (0..1u32 << 13).map(|p| frag(&thirteen(p))).collect();
    let stream = stream_of(&frags);
    let mut defs = 0;
    let mut rest = &stream[..];
    while let Some((payload, next)) = varint::split_message(rest).unwrap() {
        defs += usize::from(varint::Cursor::new(payload).int().unwrap() < 0);
        rest = next;
    }
    // One per field that widened the struct's type, at most (and none
    // from a pattern all of whose fields were seen before).
    assert!(defs <= 14, "{defs} definitions for 8,192 values");
    for (p, f) in values(&stream).iter().enumerate() {
        let back: Thirteen = Codec::Gob.decode(f, "v").unwrap();
        assert_eq!(back, thirteen(p as u32));
    }
}
