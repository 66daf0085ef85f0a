//! Message codecs (PROTOCOL.md sections 3 and 4, and Go's gob).
//!
//! A message is two values back to back: a [`Header`], then a body. Both
//! codecs are self-delimiting, so framing means finding where one value ends
//! without decoding it: [`Scanner`] does that incrementally over a buffer that
//! grows as bytes arrive, and rejects a value longer than the size limit
//! before anything is allocated for it.

#[cfg(feature = "gob")]
pub(crate) mod gob;
mod json;
mod json_header;
pub(crate) use json_header::{frame as frame_json_header, Marks};
mod msgpack;

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::code::Code;
use crate::error::{Error, Result};
use crate::meta::WireMeta;

/// Deepest nesting a decoder follows. Decoding recurses once per level, and
/// handlers run on threads with small stacks: rmp-serde's default of 1024
/// levels lets a kilobyte of `0x91` bytes overflow one and abort the
/// process. serde_json stops at 128 too.
pub(crate) const MAX_DEPTH: usize = 128;

/// A header or body as the frame reader hands it out: its bytes and, for
/// gob, the stream's types it is decoded against (the bytes are then one
/// value message; without a table, gob bytes are a self-contained
/// fragment, as [`Codec::encode_into`] makes them).
#[derive(Clone, Copy, Default)]
pub(crate) struct Body<'a> {
    pub(crate) bytes: &'a [u8],
    #[cfg(feature = "gob")]
    pub(crate) gob: Option<&'a gob::GobTable>,
}

impl<'a> From<&'a [u8]> for Body<'a> {
    // Without the `gob` feature `bytes` is the only field, and clippy
    // calls the update needless; with it, the update fills in `gob`.
    #[allow(clippy::needless_update)]
    fn from(bytes: &'a [u8]) -> Self {
        Body {
            bytes,
            ..Body::default()
        }
    }
}

impl<'a> From<&'a Vec<u8>> for Body<'a> {
    fn from(bytes: &'a Vec<u8>) -> Self {
        Body::from(bytes.as_slice())
    }
}

/// The most a method-name buffer kept from one call to the next may hold
/// (client and server each reuse one per thread): what a method name
/// needs, not more; a larger one is dropped after its call.
pub(crate) const KEEP_METHOD_TEXT: usize = 256;

/// A [`Body`] that outlives the reader's buffer (a request for a handler
/// thread): a copy of the bytes, and a share of the gob table snapshot.
#[derive(Default)]
pub(crate) struct OwnedBody {
    bytes: Vec<u8>,
    #[cfg(feature = "gob")]
    gob: Option<gob::GobTable>,
}

impl OwnedBody {
    /// Holds `body` instead of what it held, in the same buffer: a
    /// server connection's thread reuses one for every request it reads.
    pub(crate) fn refill(&mut self, body: Body<'_>) {
        self.bytes.clear();
        self.bytes.extend_from_slice(body.bytes);
        #[cfg(feature = "gob")]
        {
            self.gob = body.gob.cloned();
        }
    }

    /// Gives the buffer back if it grew past `keep` bytes (a large request
    /// does not stay held by an idle connection).
    pub(crate) fn trim(&mut self, keep: usize) {
        if self.bytes.capacity() > keep {
            self.bytes = Vec::new();
        }
    }

    pub(crate) fn as_body(&self) -> Body<'_> {
        Body {
            bytes: &self.bytes,
            #[cfg(feature = "gob")]
            gob: self.gob.as_ref(),
        }
    }
}

/// A wire codec, chosen per connection by the client's handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Codec {
    /// `application/json`: Go `json.Encoder` framing.
    #[default]
    Json,
    /// `application/msgpack`: MessagePack values back to back.
    MsgPack,
    /// `application/gob`: Go's `encoding/gob` stream, what a stock Go
    /// GeeRPC client and server speak (feature `gob`). Stateful per
    /// connection and direction: each type is defined once per stream,
    /// before its first value. A value alone, as [`Codec::encode_into`]
    /// writes it and [`Codec::decode`] reads it, is a whole gob stream:
    /// its type definitions, then the value.
    ///
    /// # What is covered
    ///
    /// | Rust (serde)                              | gob                                   |
    /// |-------------------------------------------|---------------------------------------|
    /// | `bool`                                    | `bool`                                |
    /// | `i8`..`i64`                               | `int` (zigzag)                        |
    /// | `u8`..`u64` (a lone `u8` too)             | `uint`                                |
    /// | `f32`, `f64`                              | `float64`                             |
    /// | `String`, `&str`, `char`                  | `string`                              |
    /// | bytes (`serde_bytes`), and any non-empty sequence of `u8` | `[]byte`             |
    /// | `Vec<T>`, slices, tuples of one type      | `[]T` (Go arrays are read too)        |
    /// | maps                                      | `map[K]V`                             |
    /// | structs, by field name (`rename` for Go's capitalised names) | struct, zero fields omitted |
    /// | `Option<T>`                               | `*T`: `Some` is the value, `None` is left out |
    /// | newtype structs                           | the inner value                       |
    /// | `()`, unit structs                        | `struct{}` (Go's error-reply body)    |
    /// | unit enum variants                        | `string` (the variant's name)         |
    /// | top-level non-struct values (Go's `*int` reply) | a singleton, as Go sends them   |
    ///
    /// As in Go, a struct field's zero value is not sent, also behind a
    /// pointer: an `Option` field holding `Some(0)` reads back as `None`.
    ///
    /// Reading, a field the peer did not send (Go omits zero values) or that
    /// its type does not have is the Rust field's zero value (`0`, `""`, empty,
    /// `None`), as Go leaves it; fields the Rust type lacks are skipped;
    /// `GobEncoder`/`BinaryMarshaler`/`TextMarshaler` values (`time.Time`) are
    /// read as their bytes.
    ///
    /// Not covered (an error for that value, never a panic): enum variants with
    /// data, `i128`/`u128`, sequences with elements of different types, `None`
    /// inside a sequence or map and a top-level `None` (Go refuses nil pointers
    /// there too), gob `interface{}` values other than nil, and complex numbers.
    /// A Go peer's `interface{}` field holding a concrete type that its stream
    /// has not sent before carries that type's definition inside the value,
    /// which geerpc's framing does not follow: the connection closes with a
    /// protocol error (register such types on the Go side and send one first,
    /// or avoid `interface{}` fields). Rust arrays (`[T; N]`) are sent as
    /// slices: a Go peer reads them into `[]T`, not into `[N]T`. Definitions
    /// of slices, maps and anonymous structs carry no name, so a Go error
    /// about one names the remote type as empty.
    ///
    /// Types come from values: serde describes a type only as it serializes a
    /// value, so the definition sent is the value's shape. A `None`, empty
    /// `Vec` or empty map field is left out of its struct's definition (Go then
    /// keeps the field's zero value, which is what was sent); a top-level empty
    /// sequence goes as `[]interface{}` (as do the element types of empty
    /// lists inside a non-empty value, such as `{"a": []}`), which a geerpc
    /// peer reads as any empty sequence but a Go peer only into
    /// `[]interface{}`: wrap such a reply in a struct to send it to Go. A
    /// later value of another shape gets a new type id, which Go's decoder
    /// accepts.
    ///
    /// A struct's type is the widest it has had in this process: once a
    /// value showed a field's type (a `Some`, a non-empty `Vec`), later
    /// values' definitions list it too, left out of the value when zero. So
    /// a struct has at most one definition per field (plus one) on a
    /// stream, whatever pattern of `None`s its values have, and an empty
    /// `Vec` field whose element type was seen before is sent typed. A
    /// struct is known by its serde name and declared field names; a name
    /// reused with other field types keeps its values' own shapes. Likewise
    /// a whole value that is a sequence or map (a `Vec<i64>` reply) is
    /// widened by the earlier values of its Rust type: once one showed its
    /// element type, an empty one is sent as `[]int` (a Go client reads it
    /// into its `[]int`). Only an empty collection (or `None`) whose
    /// element type no earlier value in this process showed still goes as
    /// `interface{}`. (Memory: at most 4096 types, each its union shape.)
    ///
    /// Bounds: a peer may define at most 4096 types and 256 KiB of type
    /// definitions per connection; nesting stops at 128 levels; every count
    /// and length is checked against the message's bytes before anything is
    /// allocated. Past them, the connection (or, for a value, the call)
    /// fails with an error.
    #[cfg(feature = "gob")]
    #[cfg_attr(docsrs, doc(cfg(feature = "gob")))]
    Gob,
}

impl Codec {
    /// The MIME-style name sent in the handshake.
    pub fn content_type(self) -> &'static str {
        match self {
            Codec::Json => "application/json",
            Codec::MsgPack => "application/msgpack",
            #[cfg(feature = "gob")]
            Codec::Gob => "application/gob",
        }
    }

    /// The codec for a handshake's `CodecType`, if supported.
    pub fn from_content_type(name: &str) -> Option<Codec> {
        match name {
            "application/json" => Some(Codec::Json),
            "application/msgpack" => Some(Codec::MsgPack),
            #[cfg(feature = "gob")]
            "application/gob" => Some(Codec::Gob),
            _ => None,
        }
    }

    /// Appends `value`, encoded as this codec puts it on the wire, to `out`
    /// (`what` names the value in the error).
    ///
    /// ```
    /// use geerpc::Codec;
    /// let mut out = Vec::new();
    /// Codec::Json.encode_into(&mut out, &[1, 2], "list")?;
    /// assert_eq!(out, b"[1,2]\n");
    /// let back: Vec<i32> = Codec::Json.decode(&out, "list")?;
    /// assert_eq!(back, [1, 2]);
    /// # Ok::<(), geerpc::Error>(())
    /// ```
    pub fn encode_into<T: Serialize + ?Sized>(
        self,
        out: &mut Vec<u8>,
        value: &T,
        what: &str,
    ) -> Result<()> {
        let res = match self {
            Codec::Json => {
                let r = serde_json::to_writer(&mut *out, value).map_err(|e| e.to_string());
                out.push(b'\n');
                r
            }
            Codec::MsgPack => rmp_serde::encode::write_named(out, value).map_err(|e| e.to_string()),
            #[cfg(feature = "gob")]
            Codec::Gob => gob::encode(out, value, MAX_DEPTH, true),
        };
        res.map_err(|message| Error::Encode {
            what: what.to_string(),
            message,
        })
    }

    /// Decodes one whole value from `bytes` (`what` names it in the error).
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8], what: &str) -> Result<T> {
        let res = match self {
            Codec::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
            Codec::MsgPack => {
                let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
                de.set_max_depth(MAX_DEPTH);
                T::deserialize(&mut de).map_err(|e| e.to_string())
            }
            #[cfg(feature = "gob")]
            Codec::Gob => gob::decode(bytes, MAX_DEPTH),
        };
        res.map_err(|message| Error::Decode {
            what: what.to_string(),
            message,
        })
    }

    /// Appends a message header. For gob its type is not widened by the
    /// process's memory of struct shapes (see `gob::widen`): its few
    /// optional fields bound its definitions, and a stream's headers stay
    /// Go's bytes whatever other connections sent.
    pub(crate) fn encode_header(self, out: &mut Vec<u8>, header: &Header) -> Result<()> {
        #[cfg(feature = "gob")]
        if self == Codec::Gob {
            return gob::encode(out, header, MAX_DEPTH, false).map_err(|message| Error::Encode {
                what: "header".to_string(),
                message,
            });
        }
        if self == Codec::Json && json_header::encode(out, header) {
            out.push(b'\n');
            return Ok(());
        }
        self.encode_into(out, header, "header")
    }

    /// Decodes a header or body as the frame reader handed it out.
    pub(crate) fn decode_body<T: DeserializeOwned>(self, body: Body<'_>, what: &str) -> Result<T> {
        #[cfg(feature = "gob")]
        if let Some(table) = body.gob {
            return gob::decode_in(body.bytes, table, MAX_DEPTH).map_err(|message| Error::Decode {
                what: what.to_string(),
                message,
            });
        }
        self.decode(body.bytes, what)
    }

    /// Decodes a message header.
    pub(crate) fn decode_header<'a>(self, body: impl Into<Body<'a>>) -> Result<Header> {
        self.decode_header_with(body.into(), json_header::decode)
    }

    /// Decodes a request's header for a server into `out`, in place: a
    /// connection's thread reads every request into the same header (no
    /// allocation per request on the JSON fast path, and no copy of it on
    /// the stack). `marks`: the frame reader's, for these bytes
    /// ([`MessageSpans::marks`]). On an error `out` is left in any state.
    ///
    /// [`MessageSpans::marks`]: crate::wire::frame::MessageSpans::marks
    pub(crate) fn decode_request_header_into<'a>(
        self,
        body: impl Into<Body<'a>>,
        marks: Option<Marks>,
        out: &mut Header,
    ) -> Result<()> {
        let body = body.into();
        if self == Codec::Json && json_header::decode_request_into(body.bytes, marks, out) {
            return Ok(());
        }
        *out = self.decode_body(body, "header")?;
        Ok(())
    }

    /// Decodes a reply's header for its client: as
    /// [`decode_header`](Codec::decode_header), except that a JSON reply
    /// without an error may leave `service_method` empty (the client
    /// knows its call's method; it reads only the `Seq`).
    pub(crate) fn decode_reply_header<'a>(
        self,
        body: impl Into<Body<'a>>,
        marks: Option<Marks>,
    ) -> Result<Header> {
        self.decode_header_with(body.into(), |b| json_header::decode_reply(b, marks))
    }

    /// A JSON header through `fast` (the hand-read common shape), and
    /// anything it does not take, or another codec's, through serde.
    fn decode_header_with(
        self,
        body: Body<'_>,
        fast: impl FnOnce(&[u8]) -> Option<Header>,
    ) -> Result<Header> {
        if self == Codec::Json {
            if let Some(h) = fast(body.bytes) {
                return Ok(h);
            }
        }
        self.decode_body(body, "header")
    }

    /// The body of an error reply: an empty map (gob: Go's `struct{}{}`).
    pub(crate) fn empty_body(self) -> &'static [u8] {
        match self {
            Codec::Json => b"{}\n",
            Codec::MsgPack => &[0x80],
            #[cfg(feature = "gob")]
            Codec::Gob => gob::EMPTY_BODY,
        }
    }

    /// A fresh scanner for the next value.
    pub(crate) fn scanner(self) -> Scanner {
        match self {
            Codec::Json => Scanner::Json(json::JsonScan::default()),
            Codec::MsgPack => Scanner::MsgPack(msgpack::MsgPackScan::default()),
            #[cfg(feature = "gob")]
            Codec::Gob => Scanner::Gob(gob::GobScan::default()),
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.content_type())
    }
}

/// The header that precedes every request and reply body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub(crate) struct Header {
    #[serde(rename = "ServiceMethod", default)]
    pub service_method: String,
    #[serde(rename = "Seq", default)]
    pub seq: u64,
    #[serde(rename = "Error", default)]
    pub error: String,
    /// Why the call failed, when `error` is set by the server rather than
    /// the handler (PROTOCOL.md section 8), or `goaway` for the drain
    /// notice (section 9). Left out when `None`, so a header without a code
    /// is byte for byte what Go peers and older geerpc peers write.
    #[serde(
        rename = "Code",
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::code::field"
    )]
    pub code: Option<Code>,
    /// A request's remaining budget in nanoseconds when it was written
    /// (PROTOCOL.md section 8); 0: no deadline. Left out when 0.
    #[serde(rename = "Timeout", default, skip_serializing_if = "is_zero")]
    pub timeout: u64,
    /// The call's or the reply's metadata (section 8). Left out when absent
    /// or empty; read leniently (a malformed one is `WireMeta::Invalid`).
    #[serde(
        rename = "Meta",
        default,
        skip_serializing_if = "crate::meta::field::is_absent",
        with = "crate::meta::field"
    )]
    pub meta: Option<WireMeta>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Appends a whole message (header then body) to `out`.
pub(crate) fn encode_message<T: Serialize + ?Sized>(
    codec: Codec,
    out: &mut Vec<u8>,
    header: &Header,
    body: &T,
) -> Result<()> {
    codec.encode_header(out, header)?;
    codec.encode_into(out, body, "body")
}

/// Appends a message whose body is already encoded.
pub(crate) fn encode_message_raw(
    codec: Codec,
    out: &mut Vec<u8>,
    header: &Header,
    body: &[u8],
) -> Result<()> {
    codec.encode_header(out, header)?;
    out.extend_from_slice(body);
    Ok(())
}

/// What a scan found so far.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Scan {
    /// The value ends after this many bytes of the buffer.
    Complete(usize),
    /// More bytes are needed; at least this many in all (a hint, >= buf.len()+1).
    Incomplete(usize),
}

/// Finds the end of one value, resuming where the last call stopped.
///
/// The buffer passed must start at the value's first byte and only grow
/// between calls (bytes are appended, never changed).
#[derive(Debug)]
pub(crate) enum Scanner {
    Json(json::JsonScan),
    MsgPack(msgpack::MsgPackScan),
    #[cfg(feature = "gob")]
    Gob(gob::GobScan),
}

impl Scanner {
    /// `eof` tells the scanner no more bytes will come (a JSON number at the
    /// end of the stream is complete then).
    pub(crate) fn scan(&mut self, buf: &[u8], eof: bool) -> std::result::Result<Scan, String> {
        match self {
            Scanner::Json(s) => s.scan(buf, eof),
            Scanner::MsgPack(s) => s.scan(buf),
            #[cfg(feature = "gob")]
            Scanner::Gob(s) => s.scan(buf),
        }
    }

    /// Whether nothing has been scanned yet.
    pub(crate) fn at_start(&self) -> bool {
        match self {
            Scanner::Json(s) => !s.started(&[]),
            Scanner::MsgPack(s) => s.at_start(),
            #[cfg(feature = "gob")]
            Scanner::Gob(s) => s.at_start(),
        }
    }

    /// Whether the scanner has seen anything but whitespace.
    pub(crate) fn started(&self, buf: &[u8]) -> bool {
        match self {
            Scanner::Json(s) => s.started(buf),
            Scanner::MsgPack(_) => !buf.is_empty(),
            #[cfg(feature = "gob")]
            Scanner::Gob(_) => !buf.is_empty(),
        }
    }
}

#[cfg(test)]
mod tests;
