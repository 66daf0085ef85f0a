//! Reading whole messages off a byte stream through one buffer.
//!
//! The same buffer serves the HTTP head (if any), the handshake Option and
//! every message after it, so no byte read ahead is ever lost between them
//! (the Go seed reads the Option with a throw-away decoder that can swallow
//! the first request).
//!
//! Invariants: `buf[start..end]` holds bytes read but not consumed; a message
//! returned by [`FrameReader::read_message`] stays valid (and unconsumed) until
//! the next call that reads; no allocation is sized from a length the peer
//! sent before the size limit has been checked against it.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::ops::Range;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::wire::codec::{frame_json_header, Body, Codec, Marks, Scan, Scanner};

#[cfg(feature = "gob")]
mod gob;
mod stamps;
#[cfg(feature = "gob")]
use gob::GobFrames;
pub(crate) use stamps::ReadNowait;

/// Default largest message (header or body) either side accepts: 16 MiB.
/// Client and server both start from it, so it lives with the framing.
pub(crate) const DEFAULT_MAX_MESSAGE: usize = 16 << 20;

/// Smallest buffer; it grows for large messages and shrinks back when idle.
const INITIAL_BUF: usize = 4 * 1024;
/// A buffer larger than this is given back once it is drained.
const KEEP_BUF: usize = 64 * 1024;
/// The most a single read asks for (half of `KEEP_BUF`, so that a buffer
/// sized for reads stays within it).
const MAX_READ: usize = KEEP_BUF / 2;
/// A read asks for room for about this many messages of the last one's size.
const READ_MESSAGES: usize = 8;

/// Whether a scan that needs `need` bytes in all to go on is certainly
/// over `limit`. One byte of slack: a scanner may need the byte after a
/// value to see it end (the delimiter after a JSON number), so a value of
/// exactly `limit` bytes is not refused or accepted by how reads split; an
/// over-long value is still refused when it completes.
fn beyond(need: usize, limit: usize) -> bool {
    need.saturating_sub(1) > limit
}

/// Scan progress of a message that has not fully arrived.
struct MessageScan {
    header: Scanner,
    header_len: Option<usize>,
    /// Where a common JSON header's fields are, if it was framed by its
    /// shape (`frame_json_header`), for its decoding.
    marks: Option<Marks>,
    body: Scanner,
}

pub(crate) struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes of the last message handed out, consumed at the next read.
    handed_out: usize,
    max_message: usize,
    eof: bool,
    scan: Option<MessageScan>,
    /// A whole message found by `has_buffered_message`, not yet handed out.
    peeked: Option<MessageSpans>,
    /// Free space offered to each read: room for `READ_MESSAGES` messages of
    /// the last one's size, within `INITIAL_BUF..=MAX_READ`. Sized by
    /// message rather than by what is waiting: one syscall per 4 KiB message
    /// cost a third of the throughput, while reading everything available
    /// made batches so large that client and server took turns idling.
    read_size: usize,
    /// When the last read that brought bytes returned, if reads are
    /// stamped ([`FrameReader::stamp_reads`]): a message completed by that
    /// read arrived then, and one already buffered arrived no later.
    last_read: Option<Instant>,
    /// Stream offset of `buf[0]`: stamps name bytes by stream offset, which
    /// compaction does not move.
    base: u64,
    /// Stamps of reads whose bytes are still buffered, oldest first, as
    /// (stream offset of the end of the read, when it returned); kept only
    /// once a drain read behind complete messages (empty otherwise: every
    /// buffered message then came with `last_read`'s read). A message takes
    /// the stamp of the first read that ends at or past its end. At most
    /// `MAX_STAMPS`.
    stamps: VecDeque<(u64, Instant)>,
    /// When the last drain was tried, to try at most once per interval.
    drained_at: Option<Instant>,
    /// A gob stream's state: the peer's type definitions (see
    /// `codec::gob::stream`).
    /// Definitions are absorbed as messages are handed out, which is
    /// stream order; `has_buffered_message` only looks.
    #[cfg(feature = "gob")]
    gob: Option<Box<GobFrames>>,
}

/// The spans of one message inside the reader's buffer.
pub(crate) struct MessageSpans {
    pub header: Range<usize>,
    pub body: Range<usize>,
    /// A common JSON header's fields, if it was framed by its shape: its
    /// decoding starts from them (`Codec::decode_request_header_into`).
    pub marks: Option<Marks>,
    /// The message is gob: its header and body spans are their value
    /// messages (past any definitions), decoded against the reader's
    /// table ([`FrameReader::header`]).
    #[cfg(feature = "gob")]
    pub gob: bool,
}

impl<R: Read> FrameReader<R> {
    pub(crate) fn new(inner: R, max_message: usize) -> Self {
        FrameReader {
            inner,
            buf: Vec::new(),
            start: 0,
            end: 0,
            handed_out: 0,
            max_message,
            eof: false,
            scan: None,
            peeked: None,
            read_size: INITIAL_BUF,
            last_read: None,
            base: 0,
            stamps: VecDeque::new(),
            drained_at: None,
            #[cfg(feature = "gob")]
            gob: None,
        }
    }

    /// A message's header (for gob: with the stream's types).
    pub(crate) fn header(&self, m: &MessageSpans) -> Body<'_> {
        self.part(m, m.header.clone())
    }

    /// A message's body (for gob: with the stream's types).
    pub(crate) fn body(&self, m: &MessageSpans) -> Body<'_> {
        self.part(m, m.body.clone())
    }

    fn part(&self, _m: &MessageSpans, r: Range<usize>) -> Body<'_> {
        Body {
            bytes: &self.buf[r],
            #[cfg(feature = "gob")]
            gob: self.gob.as_ref().filter(|_| _m.gob).map(|g| g.recv.table()),
        }
    }

    #[cfg(test)]
    pub(crate) fn bytes(&self, r: Range<usize>) -> &[u8] {
        &self.buf[r]
    }

    /// Bytes read from the stream so far (the server's metrics).
    pub(crate) fn bytes_read(&self) -> u64 {
        self.base + self.end as u64
    }

    /// The stream read from (for the fuzz seam).
    pub(crate) fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Bytes allocated for the buffer (the fuzz seam checks its bound).
    pub(crate) fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    fn release_handed_out(&mut self) {
        self.start += self.handed_out;
        self.handed_out = 0;
        if self.start == self.end {
            self.base += self.start as u64;
            self.start = 0;
            self.end = 0;
            if self.buf.len() > KEEP_BUF && self.scan.is_none() {
                self.buf = Vec::new();
            }
        }
    }

    /// Consumes the whitespace before the next JSON message, and starts the
    /// buffer again at its front when that drains it. A JSON value ends at
    /// its closing bracket or last digit, so the newline Go (and geerpc)
    /// writes after it stayed buffered: the buffer never drained, and each
    /// read landed past the last, sweeping all of the buffer's cache lines
    /// in turn (4 KiB a connection; at 1000 connections, both sides, 8 MiB
    /// of cold lines) instead of reusing its first one or two.
    fn skip_json_whitespace(&mut self) {
        while self.start < self.end && matches!(self.buf[self.start], b' ' | b'\t' | b'\n' | b'\r')
        {
            self.start += 1;
        }
        if self.start == self.end && self.start > 0 {
            self.base += self.start as u64;
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads once from the stream so that at least `want` bytes past `start`
    /// can be held. Returns the number of bytes read (0 at end of stream).
    fn fill(&mut self, want: usize) -> io::Result<usize> {
        // Room asked for beyond what arrived is capped at twice what is
        // buffered (plus KEEP_BUF): a length or count the peer declared, if
        // under the limit, is allocated as its bytes arrive (in doubling
        // steps), so that a few bytes claiming 16 MiB cost no 16 MiB.
        // Callers loop until they have `want`.
        let want = want.min(2 * (self.end - self.start) + KEEP_BUF);
        // Room for `want` bytes past `start`, and for a read of at least
        // half of `read_size`, or of as much as is already buffered, so that
        // a large message arriving in pieces (JSON's scanner only ever asks
        // for one more byte) is read in doubling steps, not fixed ones.
        // Compacting first keeps the buffer from growing just because its
        // unconsumed bytes sit near the end.
        let min_free = (self.read_size / 2).max(self.end - self.start);
        let short = |r: &Self| r.buf.len() < r.start + want || r.buf.len() - r.end < min_free;
        if short(self) && self.start > 0 {
            self.compact();
        }
        if short(self) {
            let target = (self.start + want)
                .max((self.end + self.read_size).min(KEEP_BUF))
                .max(self.end + min_free)
                .max(INITIAL_BUF);
            self.buf.resize(target, 0);
        }
        loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    if n == 0 {
                        self.eof = true;
                    } else if self.last_read.is_some() {
                        self.last_read = Some(Instant::now());
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Moves the unconsumed bytes (and a peeked message's spans) to the
    /// front of the buffer.
    fn compact(&mut self) {
        let by = self.start;
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= by;
        self.start = 0;
        self.base += by as u64;
        if let Some(p) = &mut self.peeked {
            p.header = p.header.start - by..p.header.end - by;
            p.body = p.body.start - by..p.body.end - by;
        }
    }

    /// Makes sure at least `n` bytes are buffered (fewer only at end of
    /// stream) and returns what is buffered.
    pub(crate) fn peek(&mut self, n: usize) -> Result<&[u8]> {
        debug_assert!(self.peeked.is_none(), "a peeked message must be read first");
        self.release_handed_out();
        while self.end - self.start < n && !self.eof {
            self.fill(n).map_err(|e| Error::io("read", e))?;
        }
        Ok(&self.buf[self.start..self.end])
    }

    /// Reads up to and including `delim`, at most `limit` bytes; consumes it.
    pub(crate) fn read_until(&mut self, delim: &[u8], limit: usize) -> Result<Vec<u8>> {
        debug_assert!(self.peeked.is_none(), "a peeked message must be read first");
        self.release_handed_out();
        let mut searched: usize = 0;
        loop {
            let avail = &self.buf[self.start..self.end];
            let from = searched.saturating_sub(delim.len());
            if let Some(i) = avail[from..].windows(delim.len()).position(|w| w == delim) {
                let n = from + i + delim.len();
                if n > limit {
                    // Found in bytes read past the limit in one go.
                    return Err(Error::MessageTooLarge { size: n, limit });
                }
                let out = avail[..n].to_vec();
                self.start += n;
                return Ok(out);
            }
            searched = avail.len();
            if searched >= limit {
                return Err(Error::MessageTooLarge {
                    size: searched,
                    limit,
                });
            }
            if self.eof {
                return Err(Error::Protocol(
                    "connection closed before the end of the head".into(),
                ));
            }
            self.fill(searched + 1).map_err(|e| Error::io("read", e))?;
        }
    }

    /// Reads one whole value (the handshake Option) and consumes it.
    pub(crate) fn read_value(&mut self, codec: Codec, limit: usize) -> Result<Option<Vec<u8>>> {
        debug_assert!(self.peeked.is_none(), "a peeked message must be read first");
        self.release_handed_out();
        let mut sc = codec.scanner();
        loop {
            let avail = &self.buf[self.start..self.end];
            let need = match sc.scan(avail, self.eof).map_err(Error::Protocol)? {
                Scan::Complete(n) if n > limit => {
                    return Err(Error::MessageTooLarge { size: n, limit })
                }
                Scan::Complete(n) => {
                    let out = avail[..n].to_vec();
                    self.start += n;
                    return Ok(Some(out));
                }
                Scan::Incomplete(need) => need,
            };
            if beyond(need, limit) {
                return Err(Error::MessageTooLarge { size: need, limit });
            }
            if self.eof {
                if sc.started(avail) {
                    return Err(Error::Protocol(
                        "connection closed in the middle of a value".into(),
                    ));
                }
                return Ok(None);
            }
            self.fill(need).map_err(|e| Error::io("read", e))?;
        }
    }

    /// Scans for a whole message in what is buffered, reading from the
    /// stream only if `read` is true. `Ok(None)` is a clean end of stream (or,
    /// with `read` false, no whole message buffered).
    fn next_message(&mut self, codec: Codec, read: bool) -> Result<Option<MessageSpans>> {
        self.release_handed_out();
        if codec == Codec::Json && self.scan.is_none() {
            self.skip_json_whitespace();
        }
        let max = self.max_message;
        loop {
            let scan = self.scan.get_or_insert_with(|| MessageScan {
                header: codec.scanner(),
                header_len: None,
                marks: None,
                body: codec.scanner(),
            });
            if codec == Codec::MsgPack && scan.header_len.is_none() && scan.header.at_start() {
                // The Option line ends in '\n'; a header is a map, never
                // whitespace, so whitespace where a header starts is skipped.
                while self.start < self.end && self.buf[self.start].is_ascii_whitespace() {
                    self.start += 1;
                }
            }
            #[cfg(feature = "gob")]
            if codec == Codec::Gob && scan.header_len.is_none() && scan.header.at_start() {
                gob::skip_option_newline(&mut self.gob, &self.buf, &mut self.start, self.end);
            }
            let avail = &self.buf[self.start..self.end];
            if avail.is_empty()
                && matches!(codec, Codec::Json | Codec::MsgPack)
                && scan.header_len.is_none()
                && scan.header.at_start()
            {
                // Nothing of the next message yet (the usual case once a
                // reply or request is handled): no scanner to ask. A clean
                // end of stream here is the end between messages.
                if self.eof || !read {
                    return Ok(None);
                }
                self.fill(1).map_err(|e| Error::io("read", e))?;
                continue;
            }
            if codec == Codec::Json && scan.header_len.is_none() && scan.header.at_start() {
                // The common header's end, found without the scanner (the
                // limit is checked with the body's, below).
                scan.marks = frame_json_header(avail);
                scan.header_len = scan.marks.as_ref().map(Marks::len);
            }
            let need = match scan.header_len {
                None => match scan.header.scan(avail, self.eof).map_err(Error::Protocol)? {
                    Scan::Complete(h) if h > max => {
                        return Err(Error::MessageTooLarge {
                            size: h,
                            limit: max,
                        })
                    }
                    Scan::Complete(h) => {
                        scan.header_len = Some(h);
                        continue;
                    }
                    Scan::Incomplete(need) if beyond(need, max) => {
                        return Err(Error::MessageTooLarge {
                            size: need,
                            limit: max,
                        })
                    }
                    Scan::Incomplete(need) => need,
                },
                // The limit is on the whole message, header and body.
                Some(h) => match scan
                    .body
                    .scan(&avail[h..], self.eof)
                    .map_err(Error::Protocol)?
                {
                    Scan::Complete(b) if h + b > max => {
                        return Err(Error::MessageTooLarge {
                            size: h + b,
                            limit: max,
                        })
                    }
                    Scan::Complete(b) => {
                        let marks = scan.marks.take();
                        self.scan = None;
                        self.handed_out = h + b;
                        self.read_size = ((h + b) * READ_MESSAGES).clamp(INITIAL_BUF, MAX_READ);
                        let s = self.start;
                        return Ok(Some(MessageSpans {
                            header: s..s + h,
                            body: s + h..s + h + b,
                            marks,
                            #[cfg(feature = "gob")]
                            gob: false,
                        }));
                    }
                    Scan::Incomplete(need) if beyond(h.saturating_add(need), max) => {
                        return Err(Error::MessageTooLarge {
                            size: h.saturating_add(need),
                            limit: max,
                        })
                    }
                    Scan::Incomplete(need) => h + need,
                },
            };
            if self.eof {
                let started = scan.header_len.is_some() || scan.header.started(avail);
                if started {
                    return Err(Error::Protocol(
                        "connection closed in the middle of a message".into(),
                    ));
                }
                return Ok(None);
            }
            if !read {
                return Ok(None);
            }
            self.fill(need).map_err(|e| Error::io("read", e))?;
        }
    }

    /// Reads the next message. Its spans stay valid until the next read.
    /// A read timeout leaves the partial message buffered, to be resumed.
    pub(crate) fn read_message(&mut self, codec: Codec) -> Result<Option<MessageSpans>> {
        #[allow(unused_mut)]
        let mut m = if let Some(m) = self.peeked.take() {
            self.handed_out = m.body.end - m.header.start;
            Some(m)
        } else {
            self.next_message(codec, true)?
        };
        #[cfg(feature = "gob")]
        if let (Codec::Gob, Some(m)) = (codec, m.as_mut()) {
            self.absorb_gob(m)?;
        }
        Ok(m)
    }

    /// Whether another whole message is already buffered (no read is made).
    pub(crate) fn has_buffered_message(&mut self, codec: Codec) -> bool {
        if self.peeked.is_some() {
            return true;
        }
        match self.next_message(codec, false) {
            Ok(Some(m)) => {
                // Kept for the next read_message; its bytes stay in place
                // because nothing is consumed or read before then.
                self.handed_out = 0;
                self.peeked = Some(m);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests;
