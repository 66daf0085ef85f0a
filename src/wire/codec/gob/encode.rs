//! Encoding one value as a self-contained gob stream (a "fragment"): the
//! definitions of the types it uses, with ids from 65, then the value.
//!
//! The type comes from the value's shape ([`V`]): a struct's definition
//! lists the fields whose type the value shows; a zero field whose type it
//! cannot show (a `None`, an empty `Vec` or map) is left out of the
//! definition, which Go reads as that field's zero value, exactly what was
//! meant. Where a type is needed and cannot be seen (the elements of a
//! top-level empty sequence, or of the empty lists in `{"a": []}`), gob's
//! `interface{}` stands in: nothing of that type is sent, so a geerpc peer
//! decodes it into any sequence; a Go peer accepts it only into
//! `[]interface{}`. The elements of a sequence or map may differ in
//! shape (an `Option` field set in one, not in another): their types are
//! merged, field by field. Each struct's shape is then widened to the
//! widest it has had (`widen`), so the pattern of a value's zero fields
//! does not make a new definition.

use std::collections::HashMap;

use super::types::*;
use super::value::V;
use super::varint::{put_bytes, put_float, put_int, put_message, put_uint};
use super::widen::widen_top;

/// A value's type, as far as the value shows it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Shape {
    Unknown,
    Bool,
    Int,
    Uint,
    Float,
    Str,
    Bytes,
    Slice(Box<Shape>),
    Map(Box<Shape>, Box<Shape>),
    /// Fields: name, type, and whether any value of it is not zero.
    Struct(&'static str, Vec<(&'static str, Shape, bool)>),
}

/// Whether a struct field goes in the definition: its type is known, or
/// some value of it must be sent (its unknown parts go as `interface{}`).
fn defined(field: &(&'static str, Shape, bool)) -> bool {
    field.2 || field.1.known()
}

impl Shape {
    fn known(&self) -> bool {
        match self {
            Shape::Unknown => false,
            Shape::Slice(e) => e.known(),
            Shape::Map(k, e) => k.known() && e.known(),
            Shape::Struct(..) => true,
            _ => true,
        }
    }
}

fn shape_of(v: &V) -> Result<Shape, String> {
    Ok(match v {
        V::Bool(_) => Shape::Bool,
        V::Int(_) => Shape::Int,
        V::Uint(_) | V::Byte(_) => Shape::Uint,
        V::Float(_) => Shape::Float,
        V::Str(_) => Shape::Str,
        V::Bytes(_) => Shape::Bytes,
        V::Absent => Shape::Unknown,
        V::Seq(items) => {
            let mut elem = Shape::Unknown;
            for it in items {
                if *it == V::Absent {
                    return Err(
                        "gob: a None inside a sequence cannot be encoded (Go cannot either)".into(),
                    );
                }
                elem = merge(elem, shape_of(it)?)?;
            }
            Shape::Slice(Box::new(elem))
        }
        V::Map(items) => {
            let (mut k, mut e) = (Shape::Unknown, Shape::Unknown);
            for (key, val) in items {
                if *key == V::Absent || *val == V::Absent {
                    return Err(
                        "gob: a None inside a map cannot be encoded (Go cannot either)".into(),
                    );
                }
                k = merge(k, shape_of(key)?)?;
                e = merge(e, shape_of(val)?)?;
            }
            Shape::Map(Box::new(k), Box::new(e))
        }
        V::Struct(name, fields) => Shape::Struct(
            name,
            fields
                .iter()
                .map(|(n, v)| Ok((*n, shape_of(v)?, !is_zero(v))))
                .collect::<Result<_, String>>()?,
        ),
    })
}

/// The one type both values fit (a sequence's elements, a map's entries).
pub(super) fn merge(a: Shape, b: Shape) -> Result<Shape, String> {
    Ok(match (a, b) {
        (Shape::Unknown, x) | (x, Shape::Unknown) => x,
        (Shape::Slice(x), Shape::Slice(y)) => Shape::Slice(Box::new(merge(*x, *y)?)),
        // An empty Vec<u8> shows no bytes: it is a []byte too.
        (Shape::Bytes, Shape::Slice(e)) | (Shape::Slice(e), Shape::Bytes)
            if matches!(*e, Shape::Unknown | Shape::Uint) =>
        {
            Shape::Bytes
        }
        (Shape::Map(k1, e1), Shape::Map(k2, e2)) => {
            Shape::Map(Box::new(merge(*k1, *k2)?), Box::new(merge(*e1, *e2)?))
        }
        (Shape::Struct(n, mut f1), Shape::Struct(_, f2)) => {
            for (name, s, nonzero) in f2 {
                match f1.iter().position(|(n, ..)| *n == name) {
                    Some(i) => {
                        let old = std::mem::replace(&mut f1[i].1, Shape::Unknown);
                        f1[i].1 = merge(old, s)?;
                        f1[i].2 |= nonzero;
                    }
                    None => f1.push((name, s, nonzero)),
                }
            }
            Shape::Struct(n, f1)
        }
        (a, b) if a == b => a,
        (a, b) => {
            return Err(format!(
                "gob: values of different types ({a:?} and {b:?}) in one sequence or map"
            ))
        }
    })
}

/// Whether Go leaves `v` out of a struct (its zero value). Nested structs
/// are always sent, as Go sends them.
fn is_zero(v: &V) -> bool {
    match v {
        V::Bool(b) => !b,
        V::Int(i) => *i == 0,
        V::Uint(u) => *u == 0,
        V::Byte(b) => *b == 0,
        V::Float(f) => *f == 0.0,
        V::Str(s) => s.is_empty(),
        V::Bytes(b) => b.is_empty(),
        V::Seq(s) => s.is_empty(),
        V::Map(m) => m.is_empty(),
        V::Struct(..) => false,
        V::Absent => true,
    }
}

/// The definitions of one fragment, deduplicated by content.
struct Defs {
    out: Vec<u8>,
    ids: HashMap<Vec<u8>, i64>,
    next: i64,
}

impl Defs {
    fn id_of(&mut self, s: &Shape) -> Result<i64, String> {
        let t = match s {
            Shape::Unknown => return Ok(T_INTERFACE),
            Shape::Bool => return Ok(T_BOOL),
            Shape::Int => return Ok(T_INT),
            Shape::Uint => return Ok(T_UINT),
            Shape::Float => return Ok(T_FLOAT),
            Shape::Str => return Ok(T_STRING),
            Shape::Bytes => return Ok(T_BYTES),
            Shape::Slice(e) => WireType::Slice {
                name: String::new(),
                elem: self.id_of(e)?,
            },
            Shape::Map(k, e) => WireType::Map {
                name: String::new(),
                key: self.id_of(k)?,
                elem: self.id_of(e)?,
            },
            Shape::Struct(name, fields) => WireType::Struct {
                name: name.to_string(),
                fields: fields
                    .iter()
                    .filter(|f| defined(f))
                    .map(|(n, s, _)| Ok((n.to_string(), self.id_of(s)?)))
                    .collect::<Result<_, String>>()?,
            },
        };
        let mut key = Vec::new();
        t.encode(0, &mut key);
        if let Some(&id) = self.ids.get(&key) {
            return Ok(id);
        }
        let id = self.next;
        self.next += 1;
        let mut msg = Vec::new();
        put_int(&mut msg, -id);
        t.encode(id, &mut msg);
        put_message(&mut self.out, &msg);
        self.ids.insert(key, id);
        Ok(id)
    }
}

/// Appends `v` as a fragment: its type definitions, then the value.
/// `ty`: the Rust type's name, to widen its shape by earlier values (see
/// `widen`); `None` for a value's own shape.
pub(crate) fn encode_fragment(
    v: &V,
    out: &mut Vec<u8>,
    ty: Option<&'static str>,
) -> Result<(), String> {
    if *v == V::Absent {
        return Err(
            "gob: a top-level None cannot be encoded (Go cannot encode a nil pointer either)"
                .into(),
        );
    }
    let shape = match ty {
        Some(ty) => widen_top(ty, shape_of(v)?),
        None => shape_of(v)?,
    };
    let mut defs = Defs {
        out: Vec::new(),
        ids: HashMap::new(),
        next: FIRST_USER_ID,
    };
    let id = defs.id_of(&shape)?;
    let mut msg = Vec::new();
    put_int(&mut msg, id);
    if !matches!(shape, Shape::Struct(..)) {
        // A top-level value that is not a struct is sent as the only field
        // of a struct, with delta 0 (doc.go: "singleton").
        put_uint(&mut msg, 0);
    }
    encode_value(v, &shape, &mut msg)?;
    out.extend_from_slice(&defs.out);
    put_message(out, &msg);
    Ok(())
}

fn encode_value(v: &V, s: &Shape, out: &mut Vec<u8>) -> Result<(), String> {
    match (v, s) {
        (V::Bool(b), _) => put_uint(out, u64::from(*b)),
        (V::Int(i), _) => put_int(out, *i),
        (V::Uint(u), _) => put_uint(out, *u),
        (V::Byte(b), _) => put_uint(out, u64::from(*b)),
        (V::Float(f), _) => put_float(out, *f),
        (V::Str(t), _) => put_bytes(out, t.as_bytes()),
        (V::Bytes(b), _) => put_bytes(out, b),
        (V::Seq(items), Shape::Bytes) if items.is_empty() => put_uint(out, 0),
        (V::Seq(items), Shape::Slice(e)) => {
            put_uint(out, items.len() as u64);
            for it in items {
                encode_value(it, e, out)?;
            }
        }
        (V::Map(items), Shape::Map(k, e)) => {
            put_uint(out, items.len() as u64);
            for (key, val) in items {
                encode_value(key, k, out)?;
                encode_value(val, e, out)?;
            }
        }
        (V::Struct(_, fields), Shape::Struct(_, def)) => {
            let mut last = 0u64;
            // Every field left out of the definition is zero in every
            // value (see `defined`): nothing is lost.
            for (i, (name, fs, _)) in def.iter().filter(|f| defined(f)).enumerate() {
                let Some((_, fv)) = fields.iter().find(|(n, _)| n == name) else {
                    continue;
                };
                if is_zero(fv) {
                    continue;
                }
                put_uint(out, i as u64 + 1 - last);
                last = i as u64 + 1;
                encode_value(fv, fs, out)?;
            }
            put_uint(out, 0);
        }
        (v, s) => return Err(format!("gob: value {v:?} does not fit type {s:?}")),
    }
    Ok(())
}
