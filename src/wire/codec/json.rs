//! Where a JSON value ends, found without parsing it.

use super::Scan;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Skipping whitespace before the value.
    #[default]
    Leading,
    /// Inside an object or array, outside any string.
    Container,
    /// Inside a string; `escaped` after a backslash.
    Str { escaped: bool },
    /// Inside a number, `true`, `false` or `null`: ends at a delimiter.
    Scalar,
    /// The value ended after this many bytes. Scanning again answers the
    /// same: the frame reader rescans a value it refused as too large
    /// (has_buffered_message, then read_message), and resuming inside the
    /// closing bracket took the depth below zero (found by fuzzing).
    Done(usize),
}

/// Resumable state: how far the buffer has been scanned and in what mode.
#[derive(Debug, Default)]
pub(crate) struct JsonScan {
    pos: usize,
    depth: usize,
    mode: Mode,
}

pub(super) fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Bytes that matter inside a container (outside strings).
const CONTAINER: u8 = 1;
/// Bytes that matter inside a string.
const STR: u8 = 2;
/// Bytes that end a scalar.
const DELIM: u8 = 4;

const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    t[b'"' as usize] = CONTAINER | STR | DELIM;
    t[b'\\' as usize] = STR;
    let mut i = 0;
    let brackets = *b"{}[]";
    while i < brackets.len() {
        t[brackets[i] as usize] = CONTAINER | DELIM;
        i += 1;
    }
    let others = *b" \t\n\r,:";
    let mut i = 0;
    while i < others.len() {
        t[others[i] as usize] = DELIM;
        i += 1;
    }
    t
};

/// The offset of the first byte at or after `from` whose class has `mask`.
#[inline]
fn skip_to(buf: &[u8], from: usize, mask: u8) -> usize {
    buf[from..]
        .iter()
        .position(|&b| CLASS[b as usize] & mask != 0)
        .map_or(buf.len(), |i| from + i)
}

impl JsonScan {
    pub(crate) fn started(&self, _buf: &[u8]) -> bool {
        self.mode != Mode::Leading
    }

    pub(crate) fn scan(&mut self, buf: &[u8], eof: bool) -> Result<Scan, String> {
        if let Mode::Done(n) = self.mode {
            return Ok(Scan::Complete(n));
        }
        let mut pos = self.pos;
        let result = self.scan_from(buf, &mut pos, eof);
        self.pos = pos;
        if let Ok(Scan::Complete(n)) = result {
            self.mode = Mode::Done(n);
        }
        result
    }

    fn scan_from(&mut self, buf: &[u8], pos: &mut usize, eof: bool) -> Result<Scan, String> {
        loop {
            match self.mode {
                Mode::Container | Mode::Str { .. } => {
                    return Ok(match self.walk(buf, pos) {
                        Some(end) => Scan::Complete(end),
                        None => Scan::Incomplete(buf.len() + 1),
                    })
                }
                Mode::Scalar => *pos = skip_to(buf, *pos, DELIM),
                _ => {}
            }
            let Some(&b) = buf.get(*pos) else {
                if eof && self.mode == Mode::Scalar {
                    return Ok(Scan::Complete(buf.len()));
                }
                return Ok(Scan::Incomplete(buf.len() + 1));
            };
            match self.mode {
                Mode::Leading => match b {
                    _ if is_ws(b) => {}
                    b'{' | b'[' => {
                        self.depth = 1;
                        self.mode = Mode::Container;
                    }
                    b'"' => self.mode = Mode::Str { escaped: false },
                    b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => self.mode = Mode::Scalar,
                    _ => {
                        return Err(format!(
                            "invalid character {:?} at the start of a JSON value",
                            b as char
                        ))
                    }
                },
                Mode::Scalar => return Ok(Scan::Complete(*pos)),
                Mode::Done(n) => return Ok(Scan::Complete(n)),
                Mode::Container | Mode::Str { .. } => unreachable!("walked above"),
            }
            *pos += 1;
        }
    }

    /// Walks a container or string from `*pos` to the value's end, or to
    /// the buffer's with the state saved to resume. Each stretch that
    /// cannot change the state is skipped by a table lookup a byte, strings
    /// included: a header or small body has a dozen short strings, and a
    /// call into `memchr2` for each cost more than their bytes (scanning
    /// took ~1,100 of a 1x1 call's ~8,000 server instructions). Past
    /// `LONG` bytes a string is searched with `memchr2` (a 4 KiB payload).
    fn walk(&mut self, buf: &[u8], pos: &mut usize) -> Option<usize> {
        const LONG: usize = 32;
        let mut i = *pos;
        let mut depth = self.depth;
        let mut mode = self.mode;
        let end = loop {
            match mode {
                Mode::Str { escaped: true } => {
                    if i >= buf.len() {
                        break None;
                    }
                    i += 1;
                    mode = Mode::Str { escaped: false };
                }
                Mode::Str { escaped: false } => {
                    let rest = &buf[i..];
                    let short = &rest[..rest.len().min(LONG)];
                    let stop = match short.iter().position(|&b| CLASS[b as usize] & STR != 0) {
                        Some(k) => Some(k),
                        None if rest.len() > LONG => {
                            memchr::memchr2(b'"', b'\\', &rest[LONG..]).map(|k| k + LONG)
                        }
                        None => None,
                    };
                    let Some(k) = stop else {
                        i = buf.len();
                        break None;
                    };
                    i += k + 1;
                    if buf[i - 1] == b'\\' {
                        mode = Mode::Str { escaped: true };
                    } else if depth == 0 {
                        break Some(i);
                    } else {
                        mode = Mode::Container;
                    }
                }
                _ => {
                    let rest = &buf[i..];
                    let Some(k) = rest
                        .iter()
                        .position(|&b| CLASS[b as usize] & CONTAINER != 0)
                    else {
                        i = buf.len();
                        break None;
                    };
                    i += k + 1;
                    match buf[i - 1] {
                        b'"' => mode = Mode::Str { escaped: false },
                        b'{' | b'[' => depth += 1,
                        _ => {
                            depth -= 1;
                            if depth == 0 {
                                break Some(i);
                            }
                        }
                    }
                }
            }
        };
        *pos = i;
        self.depth = depth;
        self.mode = mode;
        end
    }
}
