//! Learning a type's gob shape from its `Deserialize` impl, before any
//! value of it is sent ([`describe`], public as `geerpc::gob::describe`).
//!
//! serde describes a type to a serializer only through a value, so an
//! empty `Vec<T>` or a `None` shows nothing of `T`. Its `Deserialize` impl
//! does show it: driven by a deserializer that offers one element of every
//! sequence, one entry of every map and `Some` of every option (as the
//! serde-reflection crate does), it asks for each part's type in turn.
//! The shape found is put in the process's memory (`widen`), so values of
//! the type are sent typed from the first one on.

use std::cell::Cell;

use serde::de::{self, DeserializeOwned, DeserializeSeed, Visitor};

use super::decode::DeError;
use super::encode::Shape;
use super::widen::widen_top;

/// Deepest nesting traced: a recursive type (`Option<Box<Self>>`) stops
/// there with `None`.
const MAX_TRACE_DEPTH: usize = 32;

/// Most nested parts (structs, sequences, maps, newtypes) traced for one
/// type.
const MAX_TRACE_STEPS: usize = 10_000;

type R<T> = Result<T, DeError>;

/// Learns `T`'s shape from its `Deserialize` impl and remembers it (see
/// `widen`). An error if the impl cannot be traced: it asks for any type
/// (`deserialize_any`, as `serde_json::Value` or untagged enums do), has
/// enums with data, or refuses the zero values the tracer offers.
pub(crate) fn describe<T: DeserializeOwned>() -> Result<(), String> {
    let mut shape = Shape::Unknown;
    T::deserialize(Tracer {
        out: &mut shape,
        depth: MAX_TRACE_DEPTH,
        steps: &Cell::new(0),
    })
    .map_err(|e| format!("gob: cannot trace {}: {e}", std::any::type_name::<T>()))?;
    widen_top(std::any::type_name::<T>(), bytes_fixed(shape));
    Ok(())
}

struct Tracer<'a> {
    out: &'a mut Shape,
    depth: usize,
    /// Parts traced so far, for the whole type: a type that branches
    /// (`Option<Box<Self>>` and `Vec<Self>`) would otherwise cost
    /// 2^depth.
    steps: &'a Cell<usize>,
}

impl<'a> Tracer<'a> {
    fn deeper(&self) -> R<usize> {
        self.steps.set(self.steps.get() + 1);
        if self.steps.get() > MAX_TRACE_STEPS {
            return Err(DeError(format!(
                "type too large to trace (over {MAX_TRACE_STEPS} nested parts)"
            )));
        }
        self.depth
            .checked_sub(1)
            .ok_or_else(|| DeError("type nested too deeply".into()))
    }

    /// A sequence of `len` elements, traced (none at the depth limit: a
    /// recursive type stops there).
    fn seq<'de, V: Visitor<'de>>(self, len: usize, v: V) -> R<V::Value> {
        let depth = self.deeper()?;
        let len = if depth == 0 { 0 } else { len };
        let mut elem = Shape::Unknown;
        let value = v.visit_seq(SeqTrace {
            steps: self.steps,
            elem: &mut elem,
            left: len,
            depth,
        })?;
        // A sequence of u8 is a []byte, as values of it are sent.
        *self.out = if elem == byte() {
            Shape::Bytes
        } else {
            Shape::Slice(Box::new(elem))
        };
        Ok(value)
    }
}

/// A `u8`, until its place is known: in a sequence it makes a `[]byte`;
/// anywhere else it is a `uint` ([`bytes_fixed`]).
fn byte() -> Shape {
    Shape::Struct("\0u8", Vec::new())
}

/// `s` with each lone [`byte`] a `uint`.
fn bytes_fixed(s: Shape) -> Shape {
    match s {
        s if s == byte() => Shape::Uint,
        Shape::Slice(e) => Shape::Slice(Box::new(bytes_fixed(*e))),
        Shape::Map(k, e) => Shape::Map(Box::new(bytes_fixed(*k)), Box::new(bytes_fixed(*e))),
        Shape::Struct(n, f) => Shape::Struct(
            n,
            f.into_iter()
                .map(|(n, s, z)| (n, bytes_fixed(s), z))
                .collect(),
        ),
        s => s,
    }
}

fn untraceable(what: &str) -> DeError {
    DeError(format!("{what} cannot be traced"))
}

impl<'de> de::Deserializer<'de> for Tracer<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> R<V::Value> {
        Err(untraceable("a self-describing type"))
    }
    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        *self.out = Shape::Bool;
        v.visit_bool(false)
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
    fn deserialize_i64<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        *self.out = Shape::Int;
        v.visit_i64(0)
    }
    fn deserialize_u8<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        // A sequence of them is a []byte: see `SeqTrace`.
        *self.out = byte();
        v.visit_u64(0)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        self.deserialize_u64(v)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        self.deserialize_u64(v)
    }
    fn deserialize_u64<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        *self.out = Shape::Uint;
        v.visit_u64(0)
    }
    fn deserialize_f32<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        self.deserialize_f64(v)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        *self.out = Shape::Float;
        v.visit_f64(0.0)
    }
    fn deserialize_char<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        *self.out = Shape::Str;
        v.visit_char('a')
    }
    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        *self.out = Shape::Str;
        v.visit_str("")
    }
    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        self.deserialize_str(v)
    }
    fn deserialize_bytes<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        *self.out = Shape::Bytes;
        v.visit_bytes(&[])
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        self.deserialize_bytes(v)
    }
    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        // At the depth limit (a recursive type), `None`: nothing more.
        if self.depth <= 1 || self.deeper().is_err() {
            return v.visit_none();
        }
        v.visit_some(Tracer {
            out: self.out,
            depth: self.depth - 1,
            steps: self.steps,
        })
    }
    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        *self.out = Shape::Struct("", Vec::new());
        v.visit_unit()
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(self, name: &'static str, v: V) -> R<V::Value> {
        *self.out = Shape::Struct(name, Vec::new());
        v.visit_unit()
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, v: V) -> R<V::Value> {
        let depth = self.deeper()?;
        v.visit_newtype_struct(Tracer {
            out: self.out,
            depth,
            steps: self.steps,
        })
    }
    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        self.seq(1, v)
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, v: V) -> R<V::Value> {
        // Every element traced into one slot: gob has tuples of one type.
        self.seq(len, v)
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        len: usize,
        v: V,
    ) -> R<V::Value> {
        self.deserialize_tuple(len, v)
    }
    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        let depth = self.deeper()?;
        let (mut k, mut e) = (Shape::Unknown, Shape::Unknown);
        let value = v.visit_map(MapTrace {
            steps: self.steps,
            key: &mut k,
            elem: &mut e,
            left: usize::from(depth > 0),
            depth,
        })?;
        *self.out = Shape::Map(Box::new(k), Box::new(e));
        Ok(value)
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> R<V::Value> {
        let depth = self.deeper()?;
        let mut shapes = vec![Shape::Unknown; fields.len()];
        let value = v.visit_map(StructTrace {
            steps: self.steps,
            fields,
            shapes: &mut shapes,
            at: 0,
            depth,
        })?;
        *self.out = Shape::Struct(
            name,
            fields
                .iter()
                .zip(shapes)
                .map(|(f, s)| (*f, s, false))
                .collect(),
        );
        Ok(value)
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        _: V,
    ) -> R<V::Value> {
        // Unit variants travel as their names; tracing would have to pick
        // one and could not tell whether others carry data.
        Err(untraceable("an enum"))
    }
    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        self.deserialize_str(v)
    }
    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        v.visit_unit()
    }
}

struct SeqTrace<'a> {
    steps: &'a Cell<usize>,
    elem: &'a mut Shape,
    left: usize,
    depth: usize,
}

impl<'de> de::SeqAccess<'de> for SeqTrace<'_> {
    type Error = DeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> R<Option<T::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(Tracer {
            out: self.elem,
            depth: self.depth,
            steps: self.steps,
        })
        .map(Some)
    }
}

struct MapTrace<'a> {
    steps: &'a Cell<usize>,
    key: &'a mut Shape,
    elem: &'a mut Shape,
    left: usize,
    depth: usize,
}

impl<'de> de::MapAccess<'de> for MapTrace<'_> {
    type Error = DeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> R<Option<K::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(Tracer {
            out: self.key,
            depth: self.depth,
            steps: self.steps,
        })
        .map(Some)
    }
    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> R<T::Value> {
        seed.deserialize(Tracer {
            out: self.elem,
            depth: self.depth,
            steps: self.steps,
        })
    }
}

struct StructTrace<'a> {
    steps: &'a Cell<usize>,
    fields: &'static [&'static str],
    shapes: &'a mut [Shape],
    at: usize,
    depth: usize,
}

impl<'de> de::MapAccess<'de> for StructTrace<'_> {
    type Error = DeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> R<Option<K::Value>> {
        let Some(name) = self.fields.get(self.at) else {
            return Ok(None);
        };
        seed.deserialize(de::value::BorrowedStrDeserializer::<DeError>::new(name))
            .map(Some)
    }
    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> R<T::Value> {
        let i = self.at;
        self.at += 1;
        seed.deserialize(Tracer {
            out: &mut self.shapes[i],
            depth: self.depth,
            steps: self.steps,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Node {
        name: String,
        raw: Vec<u8>,
        next: Option<Box<Node>>,
        kids: Vec<Node>,
    }

    #[test]
    fn shapes_are_traced_and_recursion_stops() {
        let mut shape = Shape::Unknown;
        Node::deserialize(Tracer {
            out: &mut shape,
            depth: 4,
            steps: &Cell::new(0),
        })
        .unwrap();
        let Shape::Struct("Node", fields) = bytes_fixed(shape) else {
            panic!("not a struct");
        };
        assert_eq!(fields[0].1, Shape::Str);
        assert_eq!(fields[1].1, Shape::Bytes, "a Vec<u8> is a []byte");
        assert!(matches!(&fields[2].1, Shape::Struct("Node", _)));
        assert!(matches!(&fields[3].1, Shape::Slice(e) if matches!(**e, Shape::Struct("Node", _))));
        // Branching recursion: stopped by the step bound, not 2^32 parts.
        let _ = describe::<Node>();
        assert!(describe::<std::num::NonZeroU32>().is_err());
    }
}
