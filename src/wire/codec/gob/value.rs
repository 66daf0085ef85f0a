//! A serde `Serializer` that captures a value as a tree ([`V`]): gob needs
//! the value's type (its shape) before its first byte, and serde describes
//! a type only as it walks a value, so the value is walked first.

use serde::ser::{self, Serialize};

/// A value as gob will see it: pointers (`Option`) flattened, newtypes
/// unwrapped, unit variants as their names.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum V {
    Bool(bool),
    Int(i64),
    Uint(u64),
    /// A `u8`: a sequence of them is a gob `[]byte`.
    Byte(u8),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Seq(Vec<V>),
    Map(Vec<(V, V)>),
    /// A struct (or `()`/unit struct, with no fields): its name and fields.
    Struct(&'static str, Vec<(&'static str, V)>),
    /// `None` or a skipped field: nothing is sent.
    Absent,
}

#[derive(Debug)]
pub(crate) struct SerError(pub(crate) String);

impl std::fmt::Display for SerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for SerError {}
impl ser::Error for SerError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        SerError(msg.to_string())
    }
}

fn unsupported(what: &str) -> SerError {
    SerError(format!(
        "gob: {what} cannot be encoded (see the gob codec's documentation)"
    ))
}

/// Captures `value` as a [`V`], refusing nesting deeper than `max_depth`.
pub(crate) fn capture<T: Serialize + ?Sized>(value: &T, max_depth: usize) -> Result<V, SerError> {
    value.serialize(Capture { depth: max_depth })
}

#[derive(Clone, Copy)]
struct Capture {
    depth: usize,
}

impl Capture {
    fn deeper(self) -> Result<Capture, SerError> {
        match self.depth.checked_sub(1) {
            Some(depth) => Ok(Capture { depth }),
            None => Err(SerError("gob: value nested too deeply".into())),
        }
    }
}

pub(crate) struct SeqCapture {
    at: Capture,
    items: Vec<V>,
}

pub(crate) struct MapCapture {
    at: Capture,
    items: Vec<(V, V)>,
    key: Option<V>,
}

pub(crate) struct StructCapture {
    at: Capture,
    name: &'static str,
    fields: Vec<(&'static str, V)>,
}

impl ser::Serializer for Capture {
    type Ok = V;
    type Error = SerError;
    type SerializeSeq = SeqCapture;
    type SerializeTuple = SeqCapture;
    type SerializeTupleStruct = SeqCapture;
    type SerializeTupleVariant = ser::Impossible<V, SerError>;
    type SerializeMap = MapCapture;
    type SerializeStruct = StructCapture;
    type SerializeStructVariant = ser::Impossible<V, SerError>;

    fn serialize_bool(self, v: bool) -> Result<V, SerError> {
        Ok(V::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<V, SerError> {
        Ok(V::Int(v.into()))
    }
    fn serialize_i16(self, v: i16) -> Result<V, SerError> {
        Ok(V::Int(v.into()))
    }
    fn serialize_i32(self, v: i32) -> Result<V, SerError> {
        Ok(V::Int(v.into()))
    }
    fn serialize_i64(self, v: i64) -> Result<V, SerError> {
        Ok(V::Int(v))
    }
    fn serialize_u8(self, v: u8) -> Result<V, SerError> {
        Ok(V::Byte(v))
    }
    fn serialize_u16(self, v: u16) -> Result<V, SerError> {
        Ok(V::Uint(v.into()))
    }
    fn serialize_u32(self, v: u32) -> Result<V, SerError> {
        Ok(V::Uint(v.into()))
    }
    fn serialize_u64(self, v: u64) -> Result<V, SerError> {
        Ok(V::Uint(v))
    }
    fn serialize_f32(self, v: f32) -> Result<V, SerError> {
        Ok(V::Float(v.into()))
    }
    fn serialize_f64(self, v: f64) -> Result<V, SerError> {
        Ok(V::Float(v))
    }
    fn serialize_char(self, v: char) -> Result<V, SerError> {
        Ok(V::Str(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<V, SerError> {
        Ok(V::Str(v.to_string()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<V, SerError> {
        Ok(V::Bytes(v.to_vec()))
    }
    fn serialize_none(self) -> Result<V, SerError> {
        Ok(V::Absent)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<V, SerError> {
        value.serialize(self.deeper()?)
    }
    fn serialize_unit(self) -> Result<V, SerError> {
        Ok(V::Struct("", Vec::new()))
    }
    fn serialize_unit_struct(self, name: &'static str) -> Result<V, SerError> {
        Ok(V::Struct(name, Vec::new()))
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<V, SerError> {
        Ok(V::Str(variant.to_string()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<V, SerError> {
        value.serialize(self.deeper()?)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<V, SerError> {
        Err(unsupported("an enum variant with data"))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqCapture, SerError> {
        Ok(SeqCapture {
            at: self.deeper()?,
            items: Vec::with_capacity(len.unwrap_or(0).min(4096)),
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqCapture, SerError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<SeqCapture, SerError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, SerError> {
        Err(unsupported("an enum variant with data"))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<MapCapture, SerError> {
        Ok(MapCapture {
            at: self.deeper()?,
            items: Vec::new(),
            key: None,
        })
    }
    fn serialize_struct(self, name: &'static str, len: usize) -> Result<StructCapture, SerError> {
        Ok(StructCapture {
            at: self.deeper()?,
            name,
            fields: Vec::with_capacity(len.min(256)),
        })
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, SerError> {
        Err(unsupported("an enum variant with data"))
    }
}

impl SeqCapture {
    fn finish(self) -> V {
        // A non-empty sequence of u8 is a []byte, as Go sends []byte.
        if !self.items.is_empty() && self.items.iter().all(|v| matches!(v, V::Byte(_))) {
            return V::Bytes(
                self.items
                    .iter()
                    .map(|v| match v {
                        V::Byte(b) => *b,
                        _ => 0,
                    })
                    .collect(),
            );
        }
        V::Seq(self.items)
    }
}

impl ser::SerializeSeq for SeqCapture {
    type Ok = V;
    type Error = SerError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), SerError> {
        self.items.push(value.serialize(self.at)?);
        Ok(())
    }
    fn end(self) -> Result<V, SerError> {
        Ok(self.finish())
    }
}

impl ser::SerializeTuple for SeqCapture {
    type Ok = V;
    type Error = SerError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), SerError> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<V, SerError> {
        Ok(self.finish())
    }
}

impl ser::SerializeTupleStruct for SeqCapture {
    type Ok = V;
    type Error = SerError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), SerError> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<V, SerError> {
        Ok(self.finish())
    }
}

impl ser::SerializeMap for MapCapture {
    type Ok = V;
    type Error = SerError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), SerError> {
        self.key = Some(key.serialize(self.at)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), SerError> {
        let key = self
            .key
            .take()
            .ok_or_else(|| SerError("gob: map value without a key".into()))?;
        self.items.push((key, value.serialize(self.at)?));
        Ok(())
    }
    fn end(self) -> Result<V, SerError> {
        Ok(V::Map(self.items))
    }
}

impl ser::SerializeStruct for StructCapture {
    type Ok = V;
    type Error = SerError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), SerError> {
        self.fields.push((key, value.serialize(self.at)?));
        Ok(())
    }
    fn skip_field(&mut self, key: &'static str) -> Result<(), SerError> {
        // Still one of the struct's declared fields (`widen` knows a
        // struct by them), sent as its zero value: left out.
        self.fields.push((key, V::Absent));
        Ok(())
    }
    fn end(self) -> Result<V, SerError> {
        Ok(V::Struct(self.name, self.fields))
    }
}
