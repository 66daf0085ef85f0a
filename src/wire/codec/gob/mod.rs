//! `application/gob`: Go's `encoding/gob` stream format, as Go GeeRPC
//! speaks it (one `gob.Encoder` and one `gob.Decoder` per connection).
//!
//! # What is covered
//!
//! | Rust (serde)                              | gob                                   |
//! |-------------------------------------------|---------------------------------------|
//! | `bool`                                    | `bool`                                |
//! | `i8`..`i64`                               | `int` (zigzag)                        |
//! | `u8`..`u64` (a lone `u8` too)             | `uint`                                |
//! | `f32`, `f64`                              | `float64`                             |
//! | `String`, `&str`, `char`                  | `string`                              |
//! | bytes (`serde_bytes`), and any non-empty sequence of `u8` | `[]byte`             |
//! | `Vec<T>`, slices, tuples of one type      | `[]T` (Go arrays are read too)        |
//! | maps                                      | `map[K]V`                             |
//! | structs, by field name (`rename` for Go's capitalised names) | struct, zero fields omitted |
//! | `Option<T>`                               | `*T`: `Some` is the value, `None` is left out |
//! | newtype structs                           | the inner value                       |
//! | `()`, unit structs                        | `struct{}` (Go's error-reply body)    |
//! | unit enum variants                        | `string` (the variant's name)         |
//! | top-level non-struct values (Go's `*int` reply) | a singleton, as Go sends them   |
//!
//! As in Go, a struct field's zero value is not sent, also behind a
//! pointer: an `Option` field holding `Some(0)` reads back as `None`.
//!
//! Reading, a field the peer did not send (Go omits zero values) or that
//! its type does not have is the Rust field's zero value (`0`, `""`, empty,
//! `None`), as Go leaves it; fields the Rust type lacks are skipped;
//! `GobEncoder`/`BinaryMarshaler`/`TextMarshaler` values (`time.Time`) are
//! read as their bytes.
//!
//! Not covered (an error for that value, never a panic): enum variants with
//! data, `i128`/`u128`, sequences with elements of different types, `None`
//! inside a sequence or map and a top-level `None` (Go refuses nil pointers
//! there too), gob `interface{}` values other than nil, and complex numbers.
//!
//! Types come from values: serde describes a type only as it serializes a
//! value, so the definition sent is the value's shape. A `None`, empty
//! `Vec` or empty map field is left out of its struct's definition (Go then
//! keeps the field's zero value, which is what was sent); a top-level empty
//! sequence goes as `[]interface{}`, which a geerpc peer reads as any empty
//! sequence but a Go peer only into `[]interface{}`: wrap such a reply in a
//! struct to send it to Go. A later value of another shape gets a new type
//! id, which Go's decoder accepts.
//!
//! Files: `varint` (integers, floats, messages), `types` (type
//! definitions), `value` (serde into a value tree), `encode`, `decode`,
//! `scan` (value ends in a stream), `stream` (per-connection state).

mod decode;
mod encode;
mod scan;
mod stream;
mod types;
mod value;
mod varint;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub(crate) use scan::GobScan;
pub(crate) use stream::{GobRecv, GobSend};

use types::{TypeTable, WireType};
use varint::{split_message, Cursor};

/// Go's `struct{}{}` as a fragment: the body of an error reply (and of the
/// drain notice).
pub(crate) const EMPTY_BODY: &[u8] = &[
    0x0a, 0xff, 0x81, 0x03, 0x01, 0x02, 0xff, 0x82, 0x00, 0x00, 0x00, // type 65 = struct{}
    0x03, 0xff, 0x82, 0x00, // a value of it
];

/// Appends `value` as a fragment (its type definitions, then the value).
pub(crate) fn encode<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
    max_depth: usize,
) -> Result<(), String> {
    let v = value::capture(value, max_depth).map_err(|e| e.0)?;
    encode::encode_fragment(&v, out)
}

/// Decodes a fragment: any type definitions, then one value.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], max_depth: usize) -> Result<T, String> {
    let mut table = TypeTable::default();
    let mut buf = bytes;
    loop {
        let (payload, rest) =
            split_message(buf)?.ok_or_else(|| "gob: truncated message".to_string())?;
        buf = rest;
        let mut c = Cursor::new(payload);
        let id = c.int()?;
        if id < 0 {
            let t = WireType::decode(&mut c)?;
            table.define(id.checked_neg().ok_or("gob: bad type id")?, t)?;
            continue;
        }
        if !rest.is_empty() {
            return Err("gob: bytes after the value".into());
        }
        if id == 0 || !table.known(id) {
            return Err(format!("gob: value of undefined type id {id}"));
        }
        if !matches!(table.get(id), Some(WireType::Struct { .. })) && c.uint()? != 0 {
            return Err("gob: a non-struct value must start with a zero delta".into());
        }
        let v = T::deserialize(decode::ValueDe {
            c: &mut c,
            table: &table,
            ty: id,
            depth: max_depth,
        })
        .map_err(|e| e.0)?;
        if !c.at_end() {
            return Err("gob: bytes left inside the value's message".into());
        }
        return Ok(v);
    }
}

#[cfg(test)]
mod tests;
