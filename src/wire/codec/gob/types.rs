//! Gob's type descriptions: the predefined type ids, the `wireType` a
//! stream sends (as a negative-id message) before the first value of a new
//! type, and a table of the types one stream has defined.
//!
//! A definition is itself a gob struct value (doc.go, "Types"):
//!
//! ```text
//! wireType   {ArrayT 1, SliceT 2, StructT 3, MapT 4, GobEncoderT 5, BinaryMarshalerT 6, TextMarshalerT 7}
//! CommonType {Name 1, Id 2}
//! arrayType  {CommonType 1, Elem 2, Len 3}     sliceType {CommonType 1, Elem 2}
//! structType {CommonType 1, Field 2}           fieldType {Name 1, Id 2}
//! mapType    {CommonType 1, Key 2, Elem 3}
//! ```

use std::collections::HashMap;

use super::varint::{put_bytes, put_int, put_uint, Cursor};

pub(crate) const T_BOOL: i64 = 1;
pub(crate) const T_INT: i64 = 2;
pub(crate) const T_UINT: i64 = 3;
pub(crate) const T_FLOAT: i64 = 4;
pub(crate) const T_BYTES: i64 = 5;
pub(crate) const T_STRING: i64 = 6;
pub(crate) const T_COMPLEX: i64 = 7;
pub(crate) const T_INTERFACE: i64 = 8;
/// The first id a stream may define (lower ids are Go's own).
pub(crate) const FIRST_USER_ID: i64 = 65;

/// Most types one connection direction may define: a bound on the table a
/// peer can make us keep (Go programs define a handful).
pub(crate) const MAX_TYPES: usize = 4096;
/// Most fields of one struct type.
pub(crate) const MAX_FIELDS: usize = 1024;

/// One defined type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WireType {
    Array {
        name: String,
        elem: i64,
        len: i64,
    },
    Slice {
        name: String,
        elem: i64,
    },
    Struct {
        name: String,
        fields: Vec<(String, i64)>,
    },
    Map {
        name: String,
        key: i64,
        elem: i64,
    },
    /// GobEncoder, BinaryMarshaler or TextMarshaler (5, 6, 7): the value
    /// travels as a byte string the type's own code reads.
    Opaque {
        name: String,
        kind: u64,
    },
}

impl WireType {
    /// The ids this type refers to.
    pub(crate) fn children(&self) -> Vec<i64> {
        match self {
            WireType::Array { elem, .. } | WireType::Slice { elem, .. } => vec![*elem],
            WireType::Map { key, elem, .. } => vec![*key, *elem],
            WireType::Struct { fields, .. } => fields.iter().map(|f| f.1).collect(),
            WireType::Opaque { .. } => Vec::new(),
        }
    }

    /// The same type with its child ids mapped by `f`.
    pub(crate) fn map_ids(
        &self,
        mut f: impl FnMut(i64) -> Result<i64, String>,
    ) -> Result<Self, String> {
        Ok(match self {
            WireType::Array { name, elem, len } => WireType::Array {
                name: name.clone(),
                elem: f(*elem)?,
                len: *len,
            },
            WireType::Slice { name, elem } => WireType::Slice {
                name: name.clone(),
                elem: f(*elem)?,
            },
            WireType::Map { name, key, elem } => WireType::Map {
                name: name.clone(),
                key: f(*key)?,
                elem: f(*elem)?,
            },
            WireType::Struct { name, fields } => WireType::Struct {
                name: name.clone(),
                fields: fields
                    .iter()
                    .map(|(n, id)| Ok((n.clone(), f(*id)?)))
                    .collect::<Result<_, String>>()?,
            },
            WireType::Opaque { name, kind } => WireType::Opaque {
                name: name.clone(),
                kind: *kind,
            },
        })
    }

    /// Appends the `wireType` value for this type with id `id` (0: the id
    /// is left out, for comparing types by shape).
    pub(crate) fn encode(&self, id: i64, out: &mut Vec<u8>) {
        let common = |out: &mut Vec<u8>, name: &str| {
            // CommonType: zero fields are left out, as Go leaves them out
            // (Id is field 2: its delta is 2 when Name was left out).
            let mut delta = 2;
            if !name.is_empty() {
                put_uint(out, 1);
                put_bytes(out, name.as_bytes());
                delta = 1;
            }
            if id != 0 {
                put_uint(out, delta);
                put_int(out, id);
            }
            put_uint(out, 0);
        };
        match self {
            WireType::Array { name, elem, len } => {
                put_uint(out, 1);
                put_uint(out, 1);
                common(out, name);
                put_uint(out, 1);
                put_int(out, *elem);
                put_uint(out, 1);
                put_int(out, *len);
                put_uint(out, 0);
            }
            WireType::Slice { name, elem } => {
                put_uint(out, 2);
                put_uint(out, 1);
                common(out, name);
                put_uint(out, 1);
                put_int(out, *elem);
                put_uint(out, 0);
            }
            WireType::Struct { name, fields } => {
                put_uint(out, 3);
                put_uint(out, 1);
                common(out, name);
                if !fields.is_empty() {
                    put_uint(out, 1);
                    put_uint(out, fields.len() as u64);
                    for (fname, fid) in fields {
                        put_uint(out, 1);
                        put_bytes(out, fname.as_bytes());
                        put_uint(out, 1);
                        put_int(out, *fid);
                        put_uint(out, 0);
                    }
                }
                put_uint(out, 0);
            }
            WireType::Map { name, key, elem } => {
                put_uint(out, 4);
                put_uint(out, 1);
                common(out, name);
                put_uint(out, 1);
                put_int(out, *key);
                put_uint(out, 1);
                put_int(out, *elem);
                put_uint(out, 0);
            }
            WireType::Opaque { name, kind } => {
                put_uint(out, *kind);
                put_uint(out, 1);
                common(out, name);
                put_uint(out, 0);
            }
        }
        put_uint(out, 0);
    }

    /// Reads a `wireType` value (what follows the negative id).
    pub(crate) fn decode(c: &mut Cursor<'_>) -> Result<WireType, String> {
        let kind = c.uint()?;
        let bad = || format!("gob: malformed type definition (wireType field {kind})");
        let mut name = String::new();
        let mut ids = [0i64; 2];
        let mut len = 0i64;
        let mut fields = Vec::new();
        let mut field = 0u64;
        // The one field of wireType that is set, then its struct.
        loop {
            let delta = c.uint()?;
            if delta == 0 {
                break;
            }
            field = field.checked_add(delta).ok_or_else(bad)?;
            match (kind, field) {
                (1..=7, 1) => {
                    // CommonType
                    let mut f = 0u64;
                    loop {
                        let d = c.uint()?;
                        if d == 0 {
                            break;
                        }
                        f = f.checked_add(d).ok_or_else(bad)?;
                        match f {
                            1 => name = c.string()?.to_string(),
                            2 => {
                                c.int()?;
                            }
                            _ => return Err(bad()),
                        }
                    }
                }
                (1 | 2, 2) | (4, 2) => ids[0] = c.int()?,
                (4, 3) => ids[1] = c.int()?,
                (1, 3) => len = c.int()?,
                (3, 2) => {
                    let n = c.count()?;
                    if n > MAX_FIELDS {
                        return Err(format!(
                            "gob: struct type with {n} fields (at most {MAX_FIELDS})"
                        ));
                    }
                    for _ in 0..n {
                        let (mut fname, mut fid, mut f) = (String::new(), 0i64, 0u64);
                        loop {
                            let d = c.uint()?;
                            if d == 0 {
                                break;
                            }
                            f = f.checked_add(d).ok_or_else(bad)?;
                            match f {
                                1 => fname = c.string()?.to_string(),
                                2 => fid = c.int()?,
                                _ => return Err(bad()),
                            }
                        }
                        fields.push((fname, fid));
                    }
                }
                _ => return Err(bad()),
            }
        }
        if c.uint()? != 0 {
            return Err(bad());
        }
        Ok(match kind {
            1 => WireType::Array {
                name,
                elem: ids[0],
                len,
            },
            2 => WireType::Slice { name, elem: ids[0] },
            3 => WireType::Struct { name, fields },
            4 => WireType::Map {
                name,
                key: ids[0],
                elem: ids[1],
            },
            5..=7 => WireType::Opaque { name, kind },
            _ => return Err(bad()),
        })
    }
}

/// The types one stream direction has defined, by id.
#[derive(Debug, Default, Clone)]
pub(crate) struct TypeTable {
    types: HashMap<i64, WireType>,
}

impl TypeTable {
    pub(crate) fn get(&self, id: i64) -> Option<&WireType> {
        self.types.get(&id)
    }

    /// Adds a definition; a redefinition, a reserved id or one too many
    /// is an error (for the whole stream: what follows cannot be read).
    pub(crate) fn define(&mut self, id: i64, t: WireType) -> Result<(), String> {
        if id < FIRST_USER_ID {
            return Err(format!("gob: definition of reserved type id {id}"));
        }
        if self.types.contains_key(&id) {
            return Err(format!("gob: type id {id} defined twice"));
        }
        if self.types.len() >= MAX_TYPES {
            return Err(format!(
                "gob: more than {MAX_TYPES} types defined on one stream"
            ));
        }
        self.types.insert(id, t);
        Ok(())
    }

    /// How many types the stream has defined.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.types.len()
    }

    /// Whether `id` names a type values can have here.
    pub(crate) fn known(&self, id: i64) -> bool {
        (T_BOOL..=T_INTERFACE).contains(&id) || self.types.contains_key(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_round_trip() {
        for t in [
            WireType::Struct {
                name: "Header".into(),
                fields: vec![("ServiceMethod".into(), T_STRING), ("Seq".into(), T_UINT)],
            },
            WireType::Struct {
                name: String::new(),
                fields: vec![],
            },
            WireType::Slice {
                name: String::new(),
                elem: 66,
            },
            WireType::Map {
                name: "m".into(),
                key: T_STRING,
                elem: T_INT,
            },
            WireType::Array {
                name: "a".into(),
                elem: T_INT,
                len: 3,
            },
            WireType::Opaque {
                name: "time.Time".into(),
                kind: 5,
            },
        ] {
            for id in [0, 65, 1000] {
                let mut out = Vec::new();
                t.encode(id, &mut out);
                let mut c = Cursor::new(&out);
                assert_eq!(WireType::decode(&mut c).unwrap(), t);
                assert!(c.at_end());
            }
        }
    }

    #[test]
    fn go_empty_struct_definition_bytes() {
        // From tests/fixtures/gob/error_reply.bin: struct{}{} as type 66.
        let mut out = Vec::new();
        WireType::Struct {
            name: String::new(),
            fields: vec![],
        }
        .encode(66, &mut out);
        assert_eq!(out, [0x03, 0x01, 0x02, 0xff, 0x84, 0x00, 0x00, 0x00]);
    }

    #[test]
    fn the_table_refuses_redefinition_and_reserved_ids() {
        let mut t = TypeTable::default();
        let s = WireType::Slice {
            name: String::new(),
            elem: T_INT,
        };
        t.define(65, s.clone()).unwrap();
        assert!(t.define(65, s.clone()).unwrap_err().contains("twice"));
        assert!(t.define(16, s).unwrap_err().contains("reserved"));
    }
}
