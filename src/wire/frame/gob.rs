//! The frame reader's gob state: the peer's type definitions, absorbed as
//! messages are handed out (stream order); each message's header and body
//! spans are moved past their definitions to their value messages, which
//! are decoded against the table (see `codec::gob::stream`).

use std::io::Read;

use super::{FrameReader, MessageSpans};
use crate::error::{Error, Result};
use crate::wire::codec::gob::GobRecv;

#[derive(Default)]
pub(super) struct GobFrames {
    pub(super) recv: GobRecv,
    /// Skip one '\n' before the first message: the end of the Option line.
    skip_newline: bool,
}

/// Before a message's first byte is scanned: skips the Option line's
/// '\n' once, if asked to (see [`FrameReader::gob_after_option`]).
#[inline(never)]
pub(super) fn skip_option_newline(
    gob: &mut Option<Box<GobFrames>>,
    buf: &[u8],
    start: &mut usize,
    end: usize,
) {
    if let Some(g) = gob.as_mut().filter(|g| g.skip_newline) {
        if *start < end {
            if buf[*start] == b'\n' {
                *start += 1;
            }
            g.skip_newline = false;
        }
    }
}

impl<R: Read> FrameReader<R> {
    /// On the server, after a gob handshake: the Option line's '\n' that
    /// Go's `json.Encoder` writes is not the start of a gob message (a
    /// gob length byte can be 0x0a, so only that one byte is skipped; a
    /// client that pads its Option pads before the '{').
    pub(crate) fn gob_after_option(&mut self) {
        self.gob.get_or_insert_with(Default::default).skip_newline = true;
    }

    /// Takes in a gob message's type definitions and narrows its header
    /// and body spans to their value messages. An error leaves the stream
    /// unreadable. Out of line: the JSON and MessagePack paths of
    /// `read_message` should not carry it.
    #[inline(never)]
    pub(super) fn absorb_gob(&mut self, m: &mut MessageSpans) -> Result<()> {
        let g = self.gob.get_or_insert_with(Default::default);
        let h = g
            .recv
            .absorb(&self.buf[m.header.clone()])
            .map_err(Error::Protocol)?;
        m.header.start += h;
        let b = g
            .recv
            .absorb(&self.buf[m.body.clone()])
            .map_err(Error::Protocol)?;
        m.body.start += b;
        m.gob = true;
        Ok(())
    }
}
