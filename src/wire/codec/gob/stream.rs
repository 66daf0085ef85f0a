//! Per-connection gob state, one per direction.
//!
//! Gob is stateful: a stream defines each type once, before its first
//! value, and later values refer to it by id. geerpc encodes and decodes
//! values on many threads, so each value travels inside the library as a
//! *fragment*: a self-contained gob stream of its own type definitions
//! (ids from 65) and the value. Two pieces translate at the two points
//! where a connection's order is fixed:
//!
//! - [`GobSend`] sits in the connection's writer and runs under its queue
//!   lock as each message is enqueued: it gives a fragment's types their
//!   stream ids, writes the definitions the stream has not had yet, and
//!   rewrites the value's type id. Enqueue order is stream order, so a
//!   definition always precedes the first value that uses it.
//! - [`GobRecv`] sits in the connection's frame reader and runs as each
//!   message is handed out, in stream order: it keeps the definitions the
//!   peer sent (append-only; a redefinition is an error). A header or body
//!   travels as its value message plus a [`GobTable`] snapshot (an `Arc`),
//!   so that a body can be decoded later on any thread, at the cost of the
//!   message alone (copying the definitions it uses into each message
//!   made a 4-byte value cost every definition the peer ever sent).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::types::{TypeTable, WireType, FIRST_USER_ID, MAX_TYPES};
use super::varint::{put_int, put_message, split_message, Cursor};
use crate::wire::codec::MAX_DEPTH;

/// Most bytes of type definitions one connection direction may send us.
pub(crate) const MAX_DEF_BYTES: usize = 256 * 1024;

/// A snapshot of the peer's types, shared by the messages that use it:
/// taking one is a reference count, so decoding a message costs the
/// message, not the table.
pub(crate) type GobTable = Arc<TypeTable>;

/// One message of a gob stream, as [`Messages`] walks it.
pub(crate) enum Msg<'a> {
    /// A type definition (a negative-id message): the id it defines (made
    /// positive) and the type. `size`: its message's payload length (for
    /// the bound on definition bytes); `exact`: the definition filled its
    /// message (no bytes after it).
    Def {
        id: i64,
        ty: WireType,
        size: usize,
        exact: bool,
    },
    /// A value message: its type id, its bytes after the id, and `at`:
    /// the stream from this message on (the message, then what follows).
    Value {
        id: i64,
        body: &'a [u8],
        at: &'a [u8],
    },
}

/// Walks a gob stream's messages in order, decoding each type definition
/// (the one walk the fragment decoder, the receiver and the sender share).
/// Ends where the bytes end; a message cut short is an error.
pub(crate) struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Messages<'a> {
    pub(crate) fn new(stream: &'a [u8]) -> Self {
        Messages { rest: stream }
    }

    /// The bytes after the last message handed out.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.rest
    }

    fn read(&mut self) -> Result<Msg<'a>, String> {
        let at = self.rest;
        let (payload, rest) = split_message(at)?.ok_or(TRUNCATED)?;
        self.rest = rest;
        let mut c = Cursor::new(payload);
        let id = c.int()?;
        if id >= 0 {
            let body = &payload[c.pos..];
            return Ok(Msg::Value { id, body, at });
        }
        let ty = WireType::decode(&mut c)?;
        Ok(Msg::Def {
            id: id.checked_neg().ok_or("gob: bad type id")?,
            ty,
            size: payload.len(),
            exact: c.at_end(),
        })
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Msg<'a>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        (!self.rest.is_empty()).then(|| self.read())
    }
}

/// A stream that ends inside a message, or before the message its reader
/// needs.
const TRUNCATED: &str = "gob: truncated message";

/// [`TRUNCATED`] as the item a walk that needs one more message got.
pub(crate) fn truncated<T>() -> Result<T, String> {
    Err(TRUNCATED.into())
}

/// The receiving side's table of the peer's types.
#[derive(Debug, Default)]
pub(crate) struct GobRecv {
    /// Append-only. Copied on write: only when a message brings new
    /// definitions while an earlier message's snapshot is still held (at
    /// most once per such message, and a stream defines at most
    /// `MAX_TYPES` types in at most `MAX_DEF_BYTES`), never per value.
    table: GobTable,
    def_bytes: usize,
}

impl GobRecv {
    /// Absorbs the definitions at the start of `frame` (definitions, then
    /// one value, as the scanner delimits it). Returns where the value's
    /// message starts in `frame`; it is decoded against [`GobRecv::table`].
    pub(crate) fn absorb(&mut self, frame: &[u8]) -> Result<usize, String> {
        let mut msgs = Messages::new(frame);
        loop {
            match msgs.next().unwrap_or_else(truncated)? {
                Msg::Def {
                    id,
                    ty,
                    size,
                    exact,
                } => {
                    if !exact {
                        return Err("gob: bytes after a type definition".into());
                    }
                    self.def_bytes += size;
                    if self.def_bytes > MAX_DEF_BYTES {
                        return Err(format!(
                            "gob: more than {MAX_DEF_BYTES} bytes of type definitions on one stream"
                        ));
                    }
                    Arc::make_mut(&mut self.table).define(id, ty)?;
                }
                Msg::Value { id, at, .. } => {
                    if !msgs.rest().is_empty() {
                        return Err("gob: bytes after a value".into());
                    }
                    if !self.table.known(id) {
                        return Err(format!("gob: value of undefined type id {id}"));
                    }
                    return Ok(frame.len() - at.len());
                }
            }
        }
    }

    /// The peer's types so far (a snapshot: later definitions do not
    /// change it).
    pub(crate) fn table(&self) -> &GobTable {
        &self.table
    }
}

/// Appends the value message `msg` (decoded against `table`) as a
/// self-contained fragment: the definitions it needs, in id order, then
/// the value. Costs the definitions' size: for the fuzz seam, not the
/// connection's path.
pub(crate) fn fragment(table: &TypeTable, msg: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let (payload, _) = split_message(msg)?.ok_or("gob: truncated message")?;
    let id = Cursor::new(payload).int()?;
    let mut need = HashSet::new();
    let mut todo = vec![id];
    while let Some(t) = todo.pop() {
        if t < FIRST_USER_ID || !need.insert(t) {
            continue;
        }
        let def = table
            .get(t)
            .ok_or_else(|| format!("gob: type refers to undefined type id {t}"))?;
        todo.extend(def.children());
    }
    let mut ids: Vec<i64> = need.into_iter().collect();
    ids.sort_unstable();
    for t in ids {
        let mut def = Vec::new();
        put_int(&mut def, -t);
        table
            .get(t)
            .ok_or("gob: undefined type")?
            .encode(t, &mut def);
        put_message(out, &def);
    }
    out.extend_from_slice(msg);
    Ok(())
}

/// The sending side's record of the types the stream has defined.
#[derive(Debug, Default)]
pub(crate) struct GobSend {
    /// Each type's definition with its id left out, to its stream id.
    ids: HashMap<Vec<u8>, i64>,
    /// The same keys in id order (id = 65 + index), for rolling back.
    order: Vec<Vec<u8>>,
}

impl GobSend {
    /// Appends `frags` (fragments back to back) to `out` as this stream's
    /// messages. Returns a checkpoint for [`GobSend::rollback`], in case
    /// the caller drops what was appended.
    pub(crate) fn rebase(&mut self, frags: &[u8], out: &mut Vec<u8>) -> Result<usize, String> {
        let checkpoint = self.order.len();
        let res = self.rebase_all(frags, out);
        if res.is_err() {
            self.rollback(checkpoint);
        }
        res.map(|()| checkpoint)
    }

    /// Forgets the types defined since `checkpoint`: the bytes that defined
    /// them were never sent.
    pub(crate) fn rollback(&mut self, checkpoint: usize) {
        for key in self.order.drain(checkpoint..) {
            self.ids.remove(&key);
        }
    }

    fn rebase_all(&mut self, frags: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        let mut local: HashMap<i64, WireType> = HashMap::new();
        for msg in Messages::new(frags) {
            match msg? {
                Msg::Def { id, ty, .. } => {
                    local.insert(id, ty);
                }
                Msg::Value { id, body, .. } => {
                    let mut memo = HashMap::new();
                    let sid = self.map(id, &local, &mut memo, out, 0)?;
                    let mut msg = Vec::with_capacity(body.len() + 10);
                    put_int(&mut msg, sid);
                    msg.extend_from_slice(body);
                    put_message(out, &msg);
                    // The next fragment numbers its types afresh.
                    local.clear();
                }
            }
        }
        Ok(())
    }

    /// The stream id of the fragment's type `id`, defining it (and what it
    /// refers to) on the stream first if the stream has not had it.
    fn map(
        &mut self,
        id: i64,
        local: &HashMap<i64, WireType>,
        memo: &mut HashMap<i64, i64>,
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Result<i64, String> {
        if id < FIRST_USER_ID {
            return Ok(id);
        }
        if let Some(&s) = memo.get(&id) {
            return Ok(s);
        }
        // Recursion is bounded: by the fragment's types (a recursive type
        // would loop) and by MAX_DEPTH (a chain of thousands of types,
        // which no value we encode has, would overflow the stack).
        if depth > local.len() {
            return Err("gob: a recursive type cannot be re-sent".into());
        }
        if depth > MAX_DEPTH {
            return Err(format!("gob: types nested more than {MAX_DEPTH} deep"));
        }
        let t = local
            .get(&id)
            .ok_or_else(|| format!("gob: fragment refers to undefined type id {id}"))?;
        let mapped = t.map_ids(|child| self.map(child, local, memo, out, depth + 1))?;
        let mut key = Vec::new();
        mapped.encode(0, &mut key);
        let sid = match self.ids.get(&key) {
            Some(&s) => s,
            None => {
                if self.order.len() >= MAX_TYPES {
                    return Err(format!("gob: more than {MAX_TYPES} types on one stream"));
                }
                let s = FIRST_USER_ID + self.order.len() as i64;
                let mut msg = Vec::new();
                put_int(&mut msg, -s);
                mapped.encode(s, &mut msg);
                put_message(out, &msg);
                self.ids.insert(key.clone(), s);
                self.order.push(key);
                s
            }
        };
        memo.insert(id, sid);
        Ok(sid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::codec::gob::types::T_INT;

    /// A fragment defining slice types 65 -> 66 -> ... -> `n` deep, then a
    /// value of type 65 (an empty slice).
    fn chain(n: i64) -> Vec<u8> {
        let mut frag = Vec::new();
        for id in FIRST_USER_ID..FIRST_USER_ID + n {
            let elem = if id + 1 < FIRST_USER_ID + n {
                id + 1
            } else {
                T_INT
            };
            let mut msg = Vec::new();
            put_int(&mut msg, -id);
            WireType::Slice {
                name: String::new(),
                elem,
            }
            .encode(id, &mut msg);
            put_message(&mut frag, &msg);
        }
        let mut msg = Vec::new();
        put_int(&mut msg, FIRST_USER_ID);
        msg.extend_from_slice(&[0, 0]);
        put_message(&mut frag, &msg);
        frag
    }

    #[test]
    fn a_long_chain_of_types_is_an_error_not_a_stack_overflow() {
        let frag = chain(5_000);
        // A 2 MiB stack, as the reviewer's (and the fuzzer's) thread had.
        let res = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || GobSend::default().rebase(&frag, &mut Vec::new()))
            .unwrap()
            .join()
            .expect("rebase must not overflow the stack");
        assert!(res.unwrap_err().contains("nested more than"));
        // A chain within the bound still goes through.
        let mut out = Vec::new();
        GobSend::default().rebase(&chain(100), &mut out).unwrap();
        assert!(!out.is_empty());
    }
}
