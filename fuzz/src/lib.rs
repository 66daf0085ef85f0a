//! What the fuzz targets share: a stream that hands out its bytes in pieces
//! chosen by the input (with injected `Interrupted` and read timeouts), and
//! the checks every read must pass. The same properties, bounded for CI,
//! are tests/prop_frames.rs.

use std::io::{self, Read};

use geerpc::__fuzz::Reader;
use geerpc::{Codec, Error};

/// How a stream is read: the leading bytes of a fuzz input.
pub struct Plan {
    pub codec: Codec,
    /// Ask `has_buffered_message` before each read.
    pub peek: bool,
    pub max: usize,
    pub sizes: Vec<usize>,
    /// Bit k: fault the k-th read (odd k: read timeout, even: Interrupted).
    pub faults: u8,
}

/// Bytes of input a plan takes.
pub const PLAN_LEN: usize = 6;

impl Plan {
    /// The plan in the first `PLAN_LEN` bytes, and the rest of the input.
    pub fn split(data: &[u8]) -> Option<(Plan, &[u8])> {
        if data.len() < PLAN_LEN {
            return None;
        }
        let (p, rest) = data.split_at(PLAN_LEN);
        let codec = if p[0] & 1 == 0 { Codec::Json } else { Codec::MsgPack };
        // Small limits reach the limit checks; 0 and 1 are edge cases.
        let max = usize::from(u16::from_le_bytes([p[1], p[2]]));
        // Piece sizes: byte 0 means one byte at a time; bit 1 of p[0]
        // scales them up to reach the larger reads.
        let scale = if p[0] & 2 == 0 { 1 } else { 97 };
        let sizes = [p[3], p[4]]
            .iter()
            .map(|&b| (usize::from(b) * scale).max(1))
            .collect();
        Some((
            Plan {
                codec,
                peek: p[0] & 4 != 0,
                max,
                sizes,
                faults: p[5],
            },
            rest,
        ))
    }
}

/// A stream handing out `data` in pieces, with faults; panics on a spin.
pub struct Chunked<'a> {
    data: &'a [u8],
    pub pos: usize,
    sizes: Vec<usize>,
    faults: u8,
    reads: usize,
}

impl<'a> Chunked<'a> {
    pub fn new(data: &'a [u8], plan: &Plan) -> Self {
        Chunked {
            data,
            pos: 0,
            sizes: plan.sizes.clone(),
            faults: plan.faults,
            reads: 0,
        }
    }
}

impl Read for Chunked<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        // Every read but faults and the last gives a byte: more is a spin.
        assert!(self.reads < self.data.len() + 8 + 2, "reader spins");
        assert!(!out.is_empty(), "a read into no room looks like EOF");
        let k = self.reads;
        self.reads += 1;
        if k < 8 && self.faults & (1 << k) != 0 {
            return Err(if k % 2 == 1 {
                io::ErrorKind::WouldBlock.into()
            } else {
                io::ErrorKind::Interrupted.into()
            });
        }
        let size = self.sizes[k % self.sizes.len()];
        let n = size.min(out.len()).min(self.data.len() - self.pos);
        out[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Whether `e` is the injected read timeout (the caller retries).
pub fn would_block(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == io::ErrorKind::WouldBlock)
}

/// The reader's buffer follows what arrived (see tests/prop_frames.rs).
pub fn check_capacity(rd: &Reader<Chunked<'_>>) {
    let got = rd.get_ref().pos;
    assert!(
        rd.buffer_capacity() <= 4 * got + 256 * 1024,
        "buffer of {} bytes after {got} received",
        rd.buffer_capacity()
    );
}

/// Reads messages to the end, checking each; decodes every header and body
/// as the server would (a decode error is fine, a panic is not).
pub fn read_messages(rd: &mut Reader<Chunked<'_>>, codec: Codec, max: usize, peek: bool) {
    loop {
        if peek {
            rd.has_buffered_message(codec);
        }
        let r = rd.read_message(codec);
        check_capacity(rd);
        match r {
            Ok(Some((h, b))) => {
                assert!(h.len() + b.len() <= max, "message over the limit");
                assert!(!h.is_empty() && !b.is_empty());
                let _ = geerpc::__fuzz::decode_header(codec, &h);
                let _ = codec.decode::<serde::de::IgnoredAny>(&b, "body");
            }
            Ok(None) => return,
            Err(e) if would_block(&e) => {}
            Err(Error::Protocol(_) | Error::MessageTooLarge { .. }) => return,
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
}
