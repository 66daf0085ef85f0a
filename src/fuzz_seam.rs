//! A seam for the property tests (tests/prop_frames.rs) and the fuzz
//! targets (fuzz/): the crate-private frame reader, scanners and handshake,
//! reachable from outside the crate. NOT a public API: hidden from the docs,
//! no stability promise, and nothing here is used by the library itself.
//!
//! It wraps rather than re-exports, so that the crate-private types stay
//! private and the seam can grow or shrink without touching them.

use std::io::Read;
use std::time::Duration;

use serde::Serialize;

use crate::error::Result;
use crate::wire::codec::{self, Codec, Header, Scan};
use crate::wire::frame::FrameReader;
use crate::wire::handshake::Handshake;

/// The server's limit on the handshake Option (bytes).
pub const MAX_HANDSHAKE: usize = crate::wire::handshake::MAX_HANDSHAKE;

/// A header or body as self-contained bytes (for gob: a fragment with the
/// definitions its value uses, as `Codec::decode` reads it).
fn fragment(b: crate::wire::codec::Body<'_>) -> Vec<u8> {
    #[cfg(feature = "gob")]
    if let Some(t) = b.gob {
        let mut out = Vec::new();
        // The reader checked the value's type is defined.
        let _ = codec::gob::fragment(t, b.bytes, &mut out);
        return out;
    }
    b.bytes.to_vec()
}

/// The frame reader, handing out copies of what it reads.
pub struct Reader<R>(FrameReader<R>);

impl<R: Read> Reader<R> {
    /// A reader over `inner` refusing messages over `max_message` bytes.
    pub fn new(inner: R, max_message: usize) -> Self {
        Reader(FrameReader::new(inner, max_message))
    }

    /// The next message as (header bytes, body bytes); `None` at a clean end.
    pub fn read_message(&mut self, codec: Codec) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        Ok(self
            .0
            .read_message(codec)?
            .map(|m| (fragment(self.0.header(&m)), fragment(self.0.body(&m)))))
    }

    /// Whether a whole message is buffered (no read is made).
    pub fn has_buffered_message(&mut self, codec: Codec) -> bool {
        self.0.has_buffered_message(codec)
    }

    /// One whole value (as the handshake Option is read).
    pub fn read_value(&mut self, codec: Codec, limit: usize) -> Result<Option<Vec<u8>>> {
        self.0.read_value(codec, limit)
    }

    /// Up to and including `delim`, at most `limit` bytes (an HTTP head line).
    pub fn read_until(&mut self, delim: &[u8], limit: usize) -> Result<Vec<u8>> {
        self.0.read_until(delim, limit)
    }

    /// At least `n` buffered bytes (fewer only at end of stream).
    pub fn peek(&mut self, n: usize) -> Result<Vec<u8>> {
        self.0.peek(n).map(<[u8]>::to_vec)
    }

    /// The stream read from.
    pub fn get_ref(&self) -> &R {
        self.0.get_ref()
    }

    /// The bytes the reader's buffer holds allocated.
    pub fn buffer_capacity(&self) -> usize {
        self.0.buffer_capacity()
    }
}

/// The server's side of the handshake after its first-byte check
/// (src/server/conn.rs): the Option read as one JSON value through the
/// connection's reader, then checked. `None`: closed before any Option.
pub fn read_handshake<R: Read>(rd: &mut Reader<R>) -> Result<Option<(Codec, Option<Duration>)>> {
    match rd.0.read_value(Codec::Json, MAX_HANDSHAKE)? {
        Some(option) => Handshake::accept(&option).map(Some),
        None => Ok(None),
    }
}

/// Checks a received Option (magic number, codec): the codec and the
/// handle timeout it asks for.
pub fn accept_option(bytes: &[u8]) -> Result<(Codec, Option<Duration>)> {
    Handshake::accept(bytes)
}

/// The Option line a geerpc client sends.
pub fn option_line(codec: Codec, connect: Option<Duration>, handle: Option<Duration>) -> Vec<u8> {
    Handshake::new(codec, connect, handle).to_line()
}

/// Appends a message (header then body) as the real encoder writes it.
pub fn encode_message<T: Serialize + ?Sized>(
    codec: Codec,
    out: &mut Vec<u8>,
    service_method: &str,
    seq: u64,
    error: &str,
    body: &T,
) -> Result<()> {
    // `..Default` so that fields added to Header later need no change here.
    #[allow(clippy::needless_update)]
    let header = Header {
        service_method: service_method.to_string(),
        seq,
        error: error.to_string(),
        ..Header::default()
    };
    codec::encode_message(codec, out, &header, body)
}

/// Decodes a header: (service method, seq, error).
pub fn decode_header(codec: Codec, bytes: &[u8]) -> Result<(String, u64, String)> {
    let h = codec.decode_header(bytes)?;
    Ok((h.service_method, h.seq, h.error))
}

/// Runs a fresh scanner over `buf` as one piece: `Ok(Some(n))` if a value
/// ends after `n` bytes, `Ok(None)` if more bytes are needed.
pub fn scan(codec: Codec, buf: &[u8], eof: bool) -> std::result::Result<Option<usize>, String> {
    scan_pieces(codec, buf, eof, &[buf.len()])
}

/// Runs a fresh scanner over growing prefixes of `buf` ending at each of
/// `ends` in turn (then at `buf.len()`), as bytes arriving in pieces are
/// scanned; `eof` applies to the whole buffer only.
pub fn scan_pieces(
    codec: Codec,
    buf: &[u8],
    eof: bool,
    ends: &[usize],
) -> std::result::Result<Option<usize>, String> {
    let mut sc = codec.scanner();
    let mut prev = 0;
    for &end in ends.iter().chain(std::iter::once(&buf.len())) {
        let end = end.clamp(prev, buf.len());
        prev = end;
        let last = end == buf.len();
        match sc.scan(&buf[..end], eof && last)? {
            Scan::Complete(n) => return Ok(Some(n)),
            Scan::Incomplete(need) => assert!(need > end, "an Incomplete hint asks for more"),
        }
        if last {
            break;
        }
    }
    Ok(None)
}

/// A gob connection's writer step (`codec::gob::GobSend`): fragments back
/// to back, rewritten as one stream's messages.
#[cfg(feature = "gob")]
pub fn gob_rebase(frags: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::new();
    codec::gob::GobSend::default().rebase(frags, &mut out)?;
    Ok(out)
}
