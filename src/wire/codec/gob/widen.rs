//! The process's memory of each Rust struct's widest gob type, so that a
//! struct's definitions stay few whatever its values leave out.
//!
//! A value's type comes from its shape, and a zero field whose type the
//! value cannot show (a `None`, an empty `Vec` or map) is left out of the
//! definition. Without a memory every pattern of such fields would be a
//! new definition: a struct of 13 `Option`s could define 8,192 types on
//! one stream, past what a peer keeps (4,096 types, 256 KiB of
//! definitions). So each struct's shape is widened to the union of every
//! shape it has had (fields a value leaves zero are simply omitted from
//! the value, as gob does), and a value showing a field the union lacks
//! widens it. The union only grows, so a struct has at most one definition
//! per field it has (plus one) on any stream, and a field's element type,
//! once seen, is known for later empty values.
//!
//! The memory is the process's, not a stream's: a definition that lists
//! fields this stream's values never set is still right (the peer reads
//! them as zero). A struct is known by its serde name and its declared
//! field names; a name reused with other field types is not widened (its
//! values keep their own shapes, as before). At most [`MAX_STRUCTS`]
//! structs are remembered.

use std::collections::HashMap;
use std::sync::OnceLock;

use parking_lot::Mutex;

use super::encode::{merge, Shape};

/// Most structs (and top-level collection types) remembered (a program has a bounded number of types; this
/// bounds a program that makes names up).
pub(crate) const MAX_STRUCTS: usize = 4096;

type Key = (&'static str, Vec<&'static str>);

fn memory() -> &'static Mutex<HashMap<Key, Shape>> {
    static MEMORY: OnceLock<Mutex<HashMap<Key, Shape>>> = OnceLock::new();
    MEMORY.get_or_init(Default::default)
}

/// `s`, the shape of a whole value of the Rust type named `ty`, widened by
/// that type's earlier values (and remembered): a top-level empty `Vec`
/// or map, which shows no element type, is sent typed once a value of its
/// type showed one. Structs are widened by [`widen`] first.
pub(super) fn widen_top(ty: &'static str, s: Shape) -> Shape {
    let s = widen(s);
    if !matches!(s, Shape::Slice(_) | Shape::Map(..)) {
        return s;
    }
    remember((ty, Vec::new()), s)
}

/// The union of `own` and what `key` had (and the memory updated to it);
/// `own` alone if they do not fit together.
fn remember(key: Key, own: Shape) -> Shape {
    let mut mem = memory().lock();
    match mem.get_mut(&key) {
        Some(known) => match merge(known.clone(), own.clone()) {
            Ok(union) => {
                if *known != union {
                    *known = union.clone();
                }
                union
            }
            // The same name and fields with other types: two Rust types
            // (or a generic one); not widened.
            Err(_) => own,
        },
        None => {
            if mem.len() < MAX_STRUCTS {
                mem.insert(key, own.clone());
            }
            own
        }
    }
}

/// `s` with each struct in it widened to the union of its shapes so far
/// (and the memory widened by `s`).
pub(super) fn widen(s: Shape) -> Shape {
    match s {
        Shape::Slice(e) => Shape::Slice(Box::new(widen(*e))),
        Shape::Map(k, e) => Shape::Map(Box::new(widen(*k)), Box::new(widen(*e))),
        Shape::Struct(name, fields) => {
            let fields: Vec<_> = fields
                .into_iter()
                .map(|(n, s, nonzero)| (n, widen(s), nonzero))
                .collect();
            let key = (name, fields.iter().map(|f| f.0).collect());
            remember(key, Shape::Struct(name, fields))
        }
        other => other,
    }
}
