//! Any bytes as a gob stream through the frame reader (any chunking), and
//! as one fragment through the decoder and the writer's rewriting: no
//! panic, no spin, a bounded buffer, clean errors.
#![no_main]

use std::collections::BTreeMap;

use geerpc::__fuzz::{decode_header, gob_rebase, Reader};
use geerpc::{Codec, Error};
use geerpc_fuzz::{check_capacity, would_block, Chunked, Plan};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;

#[derive(Deserialize)]
#[allow(dead_code)]
#[serde(rename_all = "PascalCase")]
struct Typed {
    num1: i64,
    name: String,
    list: Vec<Option<u8>>,
    map: BTreeMap<String, f64>,
    inner: Option<Box<Typed>>,
    #[serde(with = "serde_bytes")]
    raw: Vec<u8>,
}

fn decode_all(bytes: &[u8]) {
    let _ = Codec::Gob.decode::<serde::de::IgnoredAny>(bytes, "v");
    let _ = Codec::Gob.decode::<serde_json::Value>(bytes, "v");
    let _ = Codec::Gob.decode::<Typed>(bytes, "v");
    let _ = Codec::Gob.decode::<Vec<i32>>(bytes, "v");
}

fuzz_target!(|data: &[u8]| {
    let Some((plan, stream)) = Plan::split(data) else {
        return;
    };
    let mut rd = Reader::new(Chunked::new(stream, &plan), plan.max);
    loop {
        if plan.peek {
            rd.has_buffered_message(Codec::Gob);
        }
        let r = rd.read_message(Codec::Gob);
        check_capacity(&rd);
        match r {
            Ok(Some((h, b))) => {
                let _ = decode_header(Codec::Gob, &h);
                decode_all(&b);
            }
            Ok(None) => break,
            Err(e) if would_block(&e) => {}
            Err(Error::Protocol(_) | Error::MessageTooLarge { .. }) => break,
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    decode_all(stream);
    if let Ok(out) = gob_rebase(stream) {
        // What the writer makes of fragments it accepts is a stream whose
        // values are fragments again.
        let mut rd = Reader::new(&out[..], usize::MAX);
        while let Ok(Some((_, b))) = rd.read_message(Codec::Gob) {
            decode_all(&b);
        }
    }
});
