//! The codecs' tests: headers as Go writes them, scanners splitting streams.

use super::*;

fn scan_all(codec: Codec, bytes: &[u8]) -> Vec<usize> {
    // Feed one byte at a time: every prefix must be Incomplete until the end.
    let mut ends = Vec::new();
    let mut start = 0;
    while start < bytes.len() {
        let mut sc = codec.scanner();
        let mut found = None;
        for end in start + 1..=bytes.len() {
            match sc.scan(&bytes[start..end], end == bytes.len()).unwrap() {
                Scan::Complete(n) => {
                    found = Some(start + n);
                    break;
                }
                Scan::Incomplete(_) => {}
            }
        }
        match found {
            Some(e) => {
                ends.push(e);
                start = e;
            }
            None => break,
        }
    }
    ends
}

#[test]
fn header_json_is_what_go_writes() {
    let mut out = Vec::new();
    let h = Header {
        service_method: "Arith.Sum".into(),
        seq: 1,
        error: String::new(),
        ..Header::default()
    };
    encode_message(Codec::Json, &mut out, &h, &3).unwrap();
    assert_eq!(
        out,
        b"{\"ServiceMethod\":\"Arith.Sum\",\"Seq\":1,\"Error\":\"\"}\n3\n"
    );
}

#[test]
fn msgpack_header_is_a_map() {
    let mut out = Vec::new();
    let h = Header {
        service_method: "A.B".into(),
        seq: 7,
        error: String::new(),
        ..Header::default()
    };
    Codec::MsgPack.encode_into(&mut out, &h, "header").unwrap();
    assert_eq!(out[0], 0x83, "fixmap of three entries");
    let back: Header = Codec::MsgPack.decode(&out, "header").unwrap();
    assert_eq!(back, h);
}

#[test]
fn a_code_travels_only_when_set_in_both_codecs() {
    let h = Header {
        service_method: "A.B".into(),
        seq: 3,
        error: "rpc server: shutting down".into(),
        code: Some(Code::Unavailable),
        ..Header::default()
    };
    let mut out = Vec::new();
    Codec::Json.encode_into(&mut out, &h, "header").unwrap();
    assert_eq!(
        out,
        b"{\"ServiceMethod\":\"A.B\",\"Seq\":3,\"Error\":\"rpc server: shutting down\",\"Code\":\"unavailable\"}\n"
    );
    assert_eq!(Codec::Json.decode_header(&out).unwrap(), h);
    out.clear();
    Codec::MsgPack.encode_into(&mut out, &h, "header").unwrap();
    assert_eq!(out[0], 0x84, "fixmap of four entries");
    assert_eq!(Codec::MsgPack.decode_header(&out).unwrap(), h);
    // Absent, empty or null: no code. Unknown: kept, not an error.
    for (text, code) in [
        (r#"{"Seq":1}"#, None),
        (r#"{"Seq":1,"Code":""}"#, None),
        (r#"{"Seq":1,"Code":null}"#, None),
        (
            r#"{"Seq":1,"Code":"rate_limited"}"#,
            Some(Code::Other("rate_limited".into())),
        ),
    ] {
        assert_eq!(
            Codec::Json.decode_header(text.as_bytes()).unwrap().code,
            code
        );
    }
}

#[test]
fn json_scanner_splits_a_stream_at_value_ends() {
    let stream = b" {\"a\":[1,{\"b\":\"}\\\"\"}]}\n12 \"x\\\\\" true[ ]null\n-3.5e+2";
    let ends = scan_all(Codec::Json, stream);
    let values: Vec<&str> = {
        let mut prev = 0;
        ends.iter()
            .map(|&e| {
                let v = std::str::from_utf8(&stream[prev..e]).unwrap().trim();
                prev = e;
                v
            })
            .collect()
    };
    assert_eq!(
        values,
        [
            "{\"a\":[1,{\"b\":\"}\\\"\"}]}",
            "12",
            "\"x\\\\\"",
            "true",
            "[ ]",
            "null",
            "-3.5e+2"
        ]
    );
}

#[test]
fn msgpack_scanner_splits_a_stream_at_value_ends() {
    #[derive(Serialize)]
    struct Nested {
        name: String,
        list: Vec<Option<i64>>,
        #[serde(with = "serde_bytes")]
        raw: Vec<u8>,
        f: f64,
    }
    let mut stream = Vec::new();
    let v = Nested {
        name: "ü".repeat(40),
        list: vec![Some(-1), None, Some(1 << 40)],
        raw: vec![7; 300],
        f: 1.5,
    };
    Codec::MsgPack.encode_into(&mut stream, &v, "v").unwrap();
    let first = stream.len();
    Codec::MsgPack
        .encode_into(&mut stream, &u64::MAX, "v")
        .unwrap();
    let second = stream.len();
    Codec::MsgPack
        .encode_into(&mut stream, &"x".repeat(70_000), "v")
        .unwrap();
    assert_eq!(
        scan_all(Codec::MsgPack, &stream),
        [first, second, stream.len()]
    );
}

#[test]
fn scanners_reject_garbage() {
    assert!(Codec::Json.scanner().scan(b"}", false).is_err());
    assert!(Codec::Json.scanner().scan(b"]", false).is_err());
    assert!(Codec::Json.scanner().scan(b"x", false).is_err());
    assert!(Codec::MsgPack.scanner().scan(&[0xc1], false).is_err());
}

#[test]
fn an_owned_body_reuses_its_buffer_up_to_its_bound() {
    let mut b = OwnedBody::default();
    b.refill(Body::from(&b"{\"A\":1}"[..]));
    assert_eq!(b.as_body().bytes, b"{\"A\":1}");
    let at = b.bytes.as_ptr();
    b.refill(Body::from(&b"2"[..]));
    assert_eq!(b.as_body().bytes, b"2");
    assert_eq!(b.bytes.as_ptr(), at, "the same buffer again");
    b.trim(64);
    assert_eq!(b.bytes.as_ptr(), at, "kept: within the bound");
    let big = [b'x'; 100];
    b.refill(Body::from(&big[..]));
    assert_eq!(b.as_body().bytes, &big[..]);
    b.trim(64);
    assert_eq!(
        b.bytes.capacity(),
        0,
        "a buffer past the bound is given back"
    );
}
