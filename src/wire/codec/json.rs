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
    /// the buffer's with the state saved to resume. One loop a mode, the
    /// state in locals. Outside strings a byte costs a table lookup and a
    /// branch (the stretches there are short: `":"`, `,`, a number; eight
    /// bytes at a time measured slower). Strings, most of a header's bytes,
    /// are skipped eight bytes at a time (`quote_or_backslash`): a 1x1
    /// call's request, header and body, went from ~1,220 instructions to
    /// ~890 (callgrind). Past `LONG` bytes of one string the rest of it is
    /// searched with `memchr2` (a 4 KiB payload).
    fn walk(&mut self, buf: &[u8], pos: &mut usize) -> Option<usize> {
        const LONG: usize = 32;
        let n = buf.len();
        let mut i = *pos;
        let mut depth = self.depth;
        let mut in_str = matches!(self.mode, Mode::Str { .. });
        let mut escaped = self.mode == (Mode::Str { escaped: true });
        let end = 'value: loop {
            if in_str {
                if escaped {
                    if i >= n {
                        break 'value None;
                    }
                    i += 1;
                    escaped = false;
                }
                let long = i + LONG;
                loop {
                    if i >= long {
                        match memchr::memchr2(b'"', b'\\', &buf[i.min(n)..]) {
                            Some(k) => i += k,
                            None => {
                                i = n;
                                break 'value None;
                            }
                        }
                    } else if let Some(w) = buf.get(i..i + 8) {
                        let m = quote_or_backslash(u64::from_le_bytes(w.try_into().unwrap()));
                        if m == 0 {
                            i += 8;
                            continue;
                        }
                        i += (m.trailing_zeros() / 8) as usize;
                    } else if i >= n {
                        break 'value None;
                    } else if CLASS[buf[i] as usize] & STR == 0 {
                        i += 1;
                        continue;
                    }
                    // At a quote or a backslash.
                    let b = buf[i];
                    i += 1;
                    if b == b'"' {
                        in_str = false;
                        if depth == 0 {
                            break 'value Some(i);
                        }
                        break;
                    }
                    escaped = true;
                    continue 'value;
                }
            }
            loop {
                if i >= n {
                    break 'value None;
                }
                let b = buf[i];
                i += 1;
                if CLASS[b as usize] & CONTAINER != 0 {
                    match b {
                        b'"' => {
                            in_str = true;
                            continue 'value;
                        }
                        b'{' | b'[' => depth += 1,
                        _ => {
                            depth -= 1;
                            if depth == 0 {
                                break 'value Some(i);
                            }
                        }
                    }
                }
            }
        };
        *pos = i;
        self.depth = depth;
        self.mode = if in_str {
            Mode::Str { escaped }
        } else {
            Mode::Container
        };
        end
    }
}

/// A word whose bytes are `"` or `\` marked by their top bit; the lowest
/// mark is exact (a false mark can only follow a true one, through the
/// borrow), which is all the scan uses.
#[inline]
fn quote_or_backslash(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    zero(w ^ (ONES * b'"' as u64)) | zero(w ^ (ONES * b'\\' as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The offset of the first `"` or `\` in a word's bytes, read the slow way.
    fn first_special(w: u64) -> Option<u32> {
        (0..8).find(|&k| matches!((w >> (8 * k)) as u8, b'"' | b'\\'))
    }

    #[test]
    fn the_lowest_mark_of_a_word_is_its_first_quote_or_backslash() {
        // Bytes next to the special ones (a borrow or a flipped bit away),
        // in every arrangement of 4 of them in the low bytes, over a spread
        // of high bytes; then pseudo-random words.
        let near = [
            0x00, 0x01, 0x21, b'"', 0x23, 0x5b, b'\\', 0x5d, 0xa2, 0xdc, 0xff,
        ];
        let mut words = Vec::new();
        for a in near {
            for b in near {
                for c in near {
                    for d in near {
                        let low = u32::from_le_bytes([a, b, c, d]) as u64;
                        words.push(low | 0x4141_4141 << 32);
                        words.push(low << 32 | 0x2121_2121);
                        words.push(low | (low << 32));
                    }
                }
            }
        }
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            words.push(x);
        }
        for w in words {
            let m = quote_or_backslash(w);
            let got = (m != 0).then(|| m.trailing_zeros() / 8);
            assert_eq!(got, first_special(w), "word {w:#018x}");
        }
    }

    #[test]
    fn values_split_anywhere_end_where_they_end_whole() {
        let long = "x".repeat(40);
        let values = [
            r#"{"ServiceMethod":"Arith.Sum","Seq":1234567,"Error":""}"#.to_string(),
            format!(r#"{{"a":"{long}\"{long}\\","b":["]","}}",{{"c":"\\\""}}]}}"#),
            format!(r#""{long}\\\\\"{long}""#),
            r#""ab\"cdefgh\\ijklmnop""#.to_string(),
        ];
        for v in values {
            let b = v.as_bytes();
            assert_eq!(
                serde_json::from_slice::<serde_json::Value>(b)
                    .map(|_| ())
                    .ok(),
                Some(()),
                "{v}"
            );
            let mut whole = JsonScan::default();
            assert_eq!(whole.scan(b, false), Ok(Scan::Complete(b.len())), "{v}");
            for cut in 0..b.len() {
                let mut sc = JsonScan::default();
                assert!(matches!(sc.scan(&b[..cut], false), Ok(Scan::Incomplete(_))));
                assert_eq!(
                    sc.scan(b, false),
                    Ok(Scan::Complete(b.len())),
                    "{v} cut at {cut}"
                );
            }
        }
    }
}
