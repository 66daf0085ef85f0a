//! The scanners against the real decoders: where serde_json or rmp-serde
//! decode a first value, the scanner ends it at the same byte, and scanning
//! in pieces gives what scanning at once does.
#![no_main]

use std::io::Cursor;

use geerpc::__fuzz as fz;
use geerpc::Codec;
use libfuzzer_sys::fuzz_target;
use serde::de::{Deserialize, IgnoredAny};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, bytes)) = data.split_first() else {
        return;
    };
    let codec = if flags & 1 == 0 { Codec::Json } else { Codec::MsgPack };
    let whole = fz::scan(codec, bytes, true);
    // Pieces: one byte at a time, or every `step` bytes.
    let step = usize::from(flags >> 1).max(1);
    let ends: Vec<usize> = (1..bytes.len()).step_by(step).collect();
    assert_eq!(whole, fz::scan_pieces(codec, bytes, true, &ends), "pieces differ");
    let decoded = match codec {
        Codec::Json => {
            let mut it = serde_json::Deserializer::from_slice(bytes).into_iter::<IgnoredAny>();
            match it.next() {
                Some(Ok(_)) => Some(it.byte_offset()),
                _ => None,
            }
        }
        Codec::MsgPack => {
            let mut cur = Cursor::new(bytes);
            let mut de = rmp_serde::Deserializer::new(&mut cur);
            de.set_max_depth(128);
            IgnoredAny::deserialize(&mut de)
                .ok()
                .map(|_| cur.position() as usize)
        }
        // Only the two above are picked; `Codec` is non-exhaustive.
        _ => None,
    };
    if let Some(end) = decoded {
        assert_eq!(whole, Ok(Some(end)), "scanner and decoder disagree");
    }
});
