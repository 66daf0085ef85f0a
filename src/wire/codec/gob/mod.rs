//! `application/gob`: Go's `encoding/gob` stream format, as Go GeeRPC
//! speaks it (one `gob.Encoder` and one `gob.Decoder` per connection).
//!
//! What Rust types it covers, and how, is documented on [`Codec::Gob`]
//! (public, where users read it).
//!
//! Files: `varint` (integers, floats, messages), `types` (type
//! definitions), `value` (serde into a value tree), `encode`, `decode`,
//! `scan` (value ends in a stream), `stream` (per-connection state),
//! `widen` (each struct's widest type so far), `trace` (a type's shape from
//! its `Deserialize` impl).

mod decode;
mod encode;
mod scan;
mod stream;
mod trace;
mod types;
mod value;
mod varint;
mod widen;

#[cfg(doc)]
use super::Codec;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub(crate) use scan::GobScan;
pub(crate) use stream::{fragment, GobRecv, GobSend, GobTable};
use stream::{truncated, Messages, Msg};
pub(crate) use trace::describe;

pub(crate) use types::TypeTable;
use types::WireType;
use varint::{split_message, Cursor};

/// Go's `struct{}{}` as a fragment: the body of an error reply (and of the
/// drain notice).
pub(crate) const EMPTY_BODY: &[u8] = &[
    0x0a, 0xff, 0x81, 0x03, 0x01, 0x02, 0xff, 0x82, 0x00, 0x00, 0x00, // type 65 = struct{}
    0x03, 0xff, 0x82, 0x00, // a value of it
];

/// Appends `value` as a fragment (its type definitions, then the value);
/// `widen`: its structs' types are the widest so far (see `widen`).
pub(crate) fn encode<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
    max_depth: usize,
    widen: bool,
) -> Result<(), String> {
    let v = value::capture(value, max_depth).map_err(|e| e.0)?;
    let ty = widen.then(std::any::type_name::<T>);
    encode::encode_fragment(&v, out, ty)
}

/// Decodes a fragment: any type definitions, then one value.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], max_depth: usize) -> Result<T, String> {
    let mut table = TypeTable::default();
    let mut msgs = Messages::new(bytes);
    loop {
        match msgs.next().unwrap_or_else(truncated)? {
            Msg::Def { id, ty, .. } => table.define(id, ty)?,
            Msg::Value { at, .. } => return decode_in(at, &table, max_depth),
        }
    }
}

/// Decodes one value message (no definitions) against the stream's types.
pub(crate) fn decode_in<T: DeserializeOwned>(
    msg: &[u8],
    table: &TypeTable,
    max_depth: usize,
) -> Result<T, String> {
    let (payload, rest) =
        split_message(msg)?.ok_or_else(|| "gob: truncated message".to_string())?;
    if !rest.is_empty() {
        return Err("gob: bytes after the value".into());
    }
    let mut c = Cursor::new(payload);
    let id = c.int()?;
    if id <= 0 || !table.known(id) {
        return Err(format!("gob: value of undefined type id {id}"));
    }
    if !matches!(table.get(id), Some(WireType::Struct { .. })) && c.uint()? != 0 {
        return Err("gob: a non-struct value must start with a zero delta".into());
    }
    let v = T::deserialize(decode::ValueDe {
        c: &mut c,
        table,
        ty: id,
        depth: max_depth,
    })
    .map_err(|e| e.0)?;
    if !c.at_end() {
        return Err("gob: bytes left inside the value's message".into());
    }
    Ok(v)
}

#[cfg(test)]
mod tests;
