//! Decoding a gob value into any `Deserialize` type, driven by the type
//! the stream defined for it.
//!
//! Fields are matched by name. A field Go left out (its zero value) or one
//! the stream's type does not have is handed to the Rust type as its zero
//! value ([`Zero`]): `0`, `""`, an empty `Vec` or map, `None`, a struct of
//! zeros; so a Rust struct needs no `#[serde(default)]` to read what Go
//! sends. Every count is checked against the bytes left, and nesting
//! against the depth limit, before anything is allocated or recursed into.

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use serde::forward_to_deserialize_any;

use super::types::*;
use super::varint::Cursor;

#[derive(Debug)]
pub(crate) struct DeError(pub(crate) String);

impl std::fmt::Display for DeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for DeError {}
impl de::Error for DeError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        DeError(msg.to_string())
    }
}
impl From<String> for DeError {
    fn from(s: String) -> Self {
        DeError(s)
    }
}

type R<T> = Result<T, DeError>;

/// One value of type `ty` at the cursor.
pub(crate) struct ValueDe<'de, 'a> {
    pub(crate) c: &'a mut Cursor<'de>,
    pub(crate) table: &'a TypeTable,
    pub(crate) ty: i64,
    /// Levels of nesting still allowed.
    pub(crate) depth: usize,
}

impl<'de, 'a> ValueDe<'de, 'a> {
    fn lookup(&self) -> R<&'a WireType> {
        self.table
            .get(self.ty)
            .ok_or_else(|| DeError(format!("gob: unknown type id {}", self.ty)))
    }

    fn deeper(&self) -> R<usize> {
        self.depth
            .checked_sub(1)
            .ok_or_else(|| DeError("gob: value nested too deeply".into()))
    }

    fn child<'b>(&'b mut self, ty: i64, depth: usize) -> ValueDe<'de, 'b> {
        ValueDe {
            c: self.c,
            table: self.table,
            ty,
            depth,
        }
    }
}

/// Skips one value of type `ty`.
pub(crate) fn skip(c: &mut Cursor<'_>, table: &TypeTable, ty: i64, depth: usize) -> R<()> {
    let depth = depth
        .checked_sub(1)
        .ok_or_else(|| DeError("gob: value nested too deeply".into()))?;
    match ty {
        T_BOOL | T_INT | T_UINT | T_FLOAT => {
            c.uint()?;
        }
        T_BYTES | T_STRING => {
            c.bytes()?;
        }
        T_COMPLEX => {
            c.uint()?;
            c.uint()?;
        }
        T_INTERFACE => {
            if !c.bytes()?.is_empty() {
                c.int()?;
                c.bytes()?;
            }
        }
        _ => match table
            .get(ty)
            .ok_or_else(|| DeError(format!("gob: unknown type id {ty}")))?
        {
            WireType::Array { elem, .. } | WireType::Slice { elem, .. } => {
                for _ in 0..c.count()? {
                    skip(c, table, *elem, depth)?;
                }
            }
            WireType::Map { key, elem, .. } => {
                for _ in 0..c.count()? {
                    skip(c, table, *key, depth)?;
                    skip(c, table, *elem, depth)?;
                }
            }
            WireType::Struct { fields, .. } => {
                let mut f = -1i64;
                loop {
                    let d = c.uint()?;
                    if d == 0 {
                        break;
                    }
                    f = field_no(f, d, fields.len())?;
                    skip(c, table, fields[f as usize].1, depth)?;
                }
            }
            WireType::Opaque { .. } => {
                c.bytes()?;
            }
        },
    }
    Ok(())
}

fn field_no(prev: i64, delta: u64, len: usize) -> R<i64> {
    match i64::try_from(delta).ok().and_then(|d| prev.checked_add(d)) {
        Some(f) if (f as u64) < len as u64 => Ok(f),
        _ => Err(DeError(format!(
            "gob: field number past the struct's {len} fields"
        ))),
    }
}

impl<'de> de::Deserializer<'de> for ValueDe<'de, '_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(mut self, v: V) -> R<V::Value> {
        match self.ty {
            T_BOOL => v.visit_bool(self.c.uint()? != 0),
            T_INT => v.visit_i64(self.c.int()?),
            T_UINT => v.visit_u64(self.c.uint()?),
            T_FLOAT => v.visit_f64(self.c.float()?),
            T_BYTES => v.visit_borrowed_bytes(self.c.bytes()?),
            T_STRING => {
                let b = self.c.bytes()?;
                match std::str::from_utf8(b) {
                    Ok(s) => v.visit_borrowed_str(s),
                    Err(_) => v.visit_borrowed_bytes(b),
                }
            }
            T_COMPLEX => Err(DeError("gob: complex numbers are not supported".into())),
            T_INTERFACE => {
                if self.c.bytes()?.is_empty() {
                    v.visit_unit()
                } else {
                    Err(DeError("gob: interface values are not supported".into()))
                }
            }
            _ => {
                let depth = self.deeper()?;
                match self.lookup()? {
                    WireType::Array { elem, .. } | WireType::Slice { elem, .. } => {
                        let n = self.c.count()?;
                        v.visit_seq(Seq {
                            de: self.child(*elem, depth),
                            left: n,
                        })
                    }
                    WireType::Map { key, elem, .. } => {
                        let n = self.c.count()?;
                        v.visit_map(Map {
                            de: self.child(*key, depth),
                            key: *key,
                            elem: *elem,
                            left: n,
                        })
                    }
                    WireType::Struct { fields, .. } => v.visit_map(Struct {
                        de: self.child(0, depth),
                        wire: fields,
                        field: -1,
                        rust: &[],
                        seen: Vec::new(),
                        zero_from: None,
                        next_zero: false,
                    }),
                    WireType::Opaque { .. } => v.visit_borrowed_bytes(self.c.bytes()?),
                }
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        // Go sends a pointer as the value it points to.
        v.visit_some(self)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        skip(self.c, self.table, self.ty, self.depth)?;
        v.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _: &'static str, v: V) -> R<V::Value> {
        self.deserialize_unit(v)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        self.deserialize_unit(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, v: V) -> R<V::Value> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        if self.ty == T_BYTES {
            // A Vec<u8> without serde_bytes asks for a sequence.
            let b = self.c.bytes()?;
            return v.visit_seq(de::value::SeqDeserializer::<_, DeError>::new(
                b.iter().copied(),
            ));
        }
        self.deserialize_any(v)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, v: V) -> R<V::Value> {
        self.deserialize_seq(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        v: V,
    ) -> R<V::Value> {
        self.deserialize_seq(v)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        mut self,
        _: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> R<V::Value> {
        if self.ty < FIRST_USER_ID {
            return self.deserialize_any(v);
        }
        let depth = self.deeper()?;
        match self.lookup()? {
            WireType::Struct { fields: wire, .. } => v.visit_map(Struct {
                de: self.child(0, depth),
                wire,
                field: -1,
                rust: fields,
                seen: vec![false; fields.len()],
                zero_from: None,
                next_zero: false,
            }),
            _ => self.deserialize_any(v),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        v: V,
    ) -> R<V::Value> {
        if self.ty != T_STRING {
            return Err(DeError(
                "gob: an enum is read from a string (its variant's name)".into(),
            ));
        }
        let s = self.c.string()?;
        v.visit_enum(s.into_deserializer())
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf map identifier
    }
}

struct Seq<'de, 'a> {
    de: ValueDe<'de, 'a>,
    left: usize,
}

impl<'de> de::SeqAccess<'de> for Seq<'de, '_> {
    type Error = DeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> R<Option<T::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let (ty, depth) = (self.de.ty, self.de.depth);
        seed.deserialize(self.de.child(ty, depth)).map(Some)
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

struct Map<'de, 'a> {
    de: ValueDe<'de, 'a>,
    key: i64,
    elem: i64,
    left: usize,
}

impl<'de> de::MapAccess<'de> for Map<'de, '_> {
    type Error = DeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> R<Option<K::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let (key, depth) = (self.key, self.de.depth);
        seed.deserialize(self.de.child(key, depth)).map(Some)
    }
    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> R<T::Value> {
        let (elem, depth) = (self.elem, self.de.depth);
        seed.deserialize(self.de.child(elem, depth))
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

/// A struct value: the fields sent, by name, then (for a Rust struct) the
/// Rust fields not sent, as their zero values.
struct Struct<'de, 'a> {
    de: ValueDe<'de, 'a>,
    wire: &'a [(String, i64)],
    /// The last wire field read (-1: none yet).
    field: i64,
    rust: &'static [&'static str],
    seen: Vec<bool>,
    /// Set once the end of the sent fields is read: the next Rust field
    /// index to consider.
    zero_from: Option<usize>,
    /// The value asked for next is a zero value.
    next_zero: bool,
}

impl<'de> de::MapAccess<'de> for Struct<'de, '_> {
    type Error = DeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> R<Option<K::Value>> {
        if self.zero_from.is_none() {
            let d = self.de.c.uint()?;
            if d != 0 {
                self.field = field_no(self.field, d, self.wire.len())?;
                let name = self.wire[self.field as usize].0.as_str();
                if let Some(i) = self.rust.iter().position(|r| *r == name) {
                    self.seen[i] = true;
                }
                self.next_zero = false;
                return seed.deserialize(name.into_deserializer()).map(Some);
            }
            self.zero_from = Some(0);
        }
        let from = self.zero_from.unwrap_or(0);
        match (from..self.rust.len()).find(|&i| !self.seen[i]) {
            Some(i) => {
                self.zero_from = Some(i + 1);
                self.next_zero = true;
                seed.deserialize(self.rust[i].into_deserializer()).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> R<T::Value> {
        if self.next_zero {
            return seed.deserialize(Zero);
        }
        let ty = self.wire[self.field as usize].1;
        let depth = self.de.depth;
        seed.deserialize(self.de.child(ty, depth))
    }
}

/// The zero value of whatever type asks: what Go means by a field it did
/// not send.
pub(crate) struct Zero;

impl<'de> de::Deserializer<'de> for Zero {
    type Error = DeError;
    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        v.visit_unit()
    }
    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        v.visit_bool(false)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        v.visit_i64(0)
    }
    fn deserialize_u64<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        v.visit_u64(0)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        v.visit_f64(0.0)
    }
    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        v.visit_str("")
    }
    fn deserialize_bytes<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        v.visit_bytes(&[])
    }
    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        v.visit_none()
    }
    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        v.visit_seq(de::value::SeqDeserializer::<_, DeError>::new(
            std::iter::empty::<u8>(),
        ))
    }
    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        v.visit_map(de::value::MapDeserializer::<_, DeError>::new(
            std::iter::empty::<(u8, u8)>(),
        ))
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> R<V::Value> {
        v.visit_map(ZeroStruct { fields, at: 0 })
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, v: V) -> R<V::Value> {
        v.visit_newtype_struct(self)
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        v: V,
    ) -> R<V::Value> {
        v.visit_enum("".into_deserializer())
    }
    fn deserialize_i8<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        self.deserialize_i64(v)
    }
    fn deserialize_i16<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        self.deserialize_i64(v)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        self.deserialize_i64(v)
    }
    fn deserialize_u8<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        self.deserialize_u64(v)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        self.deserialize_u64(v)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        self.deserialize_u64(v)
    }
    fn deserialize_f32<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        self.deserialize_f64(v)
    }
    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        self.deserialize_str(v)
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        self.deserialize_bytes(v)
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, v: V) -> R<V::Value> {
        self.deserialize_seq(v)
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        v: V,
    ) -> R<V::Value> {
        self.deserialize_seq(v)
    }
    forward_to_deserialize_any! {
        i128 u128 char unit unit_struct identifier ignored_any
    }
}

struct ZeroStruct {
    fields: &'static [&'static str],
    at: usize,
}

impl<'de> de::MapAccess<'de> for ZeroStruct {
    type Error = DeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> R<Option<K::Value>> {
        let Some(name) = self.fields.get(self.at) else {
            return Ok(None);
        };
        self.at += 1;
        seed.deserialize(name.into_deserializer()).map(Some)
    }
    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> R<T::Value> {
        seed.deserialize(Zero)
    }
}
