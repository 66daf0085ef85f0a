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
}

/// Resumable state: how far the buffer has been scanned and in what mode.
#[derive(Debug, Default)]
pub(crate) struct JsonScan {
    pos: usize,
    depth: usize,
    mode: Mode,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

impl JsonScan {
    pub(crate) fn started(&self, _buf: &[u8]) -> bool {
        self.mode != Mode::Leading
    }

    pub(crate) fn scan(&mut self, buf: &[u8], eof: bool) -> Result<Scan, String> {
        while self.pos < buf.len() {
            let b = buf[self.pos];
            match self.mode {
                Mode::Leading => {
                    if is_ws(b) {
                        self.pos += 1;
                        continue;
                    }
                    match b {
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
                    }
                }
                Mode::Container => match b {
                    b'"' => self.mode = Mode::Str { escaped: false },
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => {
                        self.depth -= 1;
                        if self.depth == 0 {
                            return Ok(Scan::Complete(self.pos + 1));
                        }
                    }
                    _ => {}
                },
                Mode::Str { escaped: true } => self.mode = Mode::Str { escaped: false },
                Mode::Str { escaped: false } => match b {
                    b'\\' => self.mode = Mode::Str { escaped: true },
                    b'"' if self.depth == 0 => return Ok(Scan::Complete(self.pos + 1)),
                    b'"' => self.mode = Mode::Container,
                    _ => {}
                },
                Mode::Scalar => {
                    if is_ws(b) || matches!(b, b'{' | b'}' | b'[' | b']' | b',' | b':' | b'"') {
                        return Ok(Scan::Complete(self.pos));
                    }
                }
            }
            self.pos += 1;
        }
        if eof && self.mode == Mode::Scalar {
            return Ok(Scan::Complete(buf.len()));
        }
        Ok(Scan::Incomplete(buf.len() + 1))
    }
}
