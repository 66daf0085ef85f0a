//! Gob's primitive encodings (encoding/gob doc.go, "Encoding details"):
//! unsigned integers (one byte under 128, else a negated byte count and
//! the big-endian bytes), signed integers (the sign in the low bit),
//! floats (the bytes of the IEEE 754 bits reversed, sent as an unsigned
//! integer), and a cursor that reads them with bounds checks.

/// Appends `x` as a gob unsigned integer.
pub(crate) fn put_uint(out: &mut Vec<u8>, x: u64) {
    if x < 0x80 {
        out.push(x as u8);
        return;
    }
    let bytes = x.to_be_bytes();
    let skip = (x.leading_zeros() / 8) as usize;
    out.push(0u8.wrapping_sub((8 - skip) as u8));
    out.extend_from_slice(&bytes[skip..]);
}

/// Appends `x` as a gob signed integer.
pub(crate) fn put_int(out: &mut Vec<u8>, x: i64) {
    let u = if x < 0 {
        (!(x as u64) << 1) | 1
    } else {
        (x as u64) << 1
    };
    put_uint(out, u);
}

/// Appends `x` as a gob float.
pub(crate) fn put_float(out: &mut Vec<u8>, x: f64) {
    put_uint(out, x.to_bits().swap_bytes());
}

/// Appends a length-prefixed byte string (strings and `[]byte`).
pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_uint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// How many bytes a gob unsigned integer at the start of `buf` takes and
/// its value; `Ok(None)` if `buf` ends inside it.
pub(crate) fn peek_uint(buf: &[u8]) -> Result<Option<(usize, u64)>, String> {
    let Some(&b) = buf.first() else {
        return Ok(None);
    };
    if b < 0x80 {
        return Ok(Some((1, u64::from(b))));
    }
    let n = usize::from(b.wrapping_neg());
    if n > 8 {
        return Err(format!("gob: invalid unsigned integer byte count {n}"));
    }
    if buf.len() < 1 + n {
        return Ok(None);
    }
    let v = buf[1..=n]
        .iter()
        .fold(0u64, |a, &b| (a << 8) | u64::from(b));
    Ok(Some((1 + n, v)))
}

/// Decodes the signed integer whose unsigned encoding is `u`.
pub(crate) fn int_of(u: u64) -> i64 {
    if u & 1 == 1 {
        !(u >> 1) as i64
    } else {
        (u >> 1) as i64
    }
}

/// A read position in one gob message; every read is bounds-checked.
#[derive(Clone, Copy)]
pub(crate) struct Cursor<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos == self.buf.len()
    }

    pub(crate) fn uint(&mut self) -> Result<u64, String> {
        match peek_uint(&self.buf[self.pos..])? {
            Some((n, v)) => {
                self.pos += n;
                Ok(v)
            }
            None => Err("gob: message ends inside an integer".into()),
        }
    }

    pub(crate) fn int(&mut self) -> Result<i64, String> {
        self.uint().map(int_of)
    }

    pub(crate) fn float(&mut self) -> Result<f64, String> {
        self.uint().map(|u| f64::from_bits(u.swap_bytes()))
    }

    /// A count or length, checked against the bytes left (each element
    /// takes at least one byte), so that no allocation or loop is sized
    /// by a number the peer made up.
    pub(crate) fn count(&mut self) -> Result<usize, String> {
        let n = self.uint()?;
        if n > self.remaining() as u64 {
            return Err(format!(
                "gob: count {n} exceeds the {} bytes left in the message",
                self.remaining()
            ));
        }
        Ok(n as usize)
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.count()?;
        let b = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(b)
    }

    pub(crate) fn string(&mut self) -> Result<&'a str, String> {
        std::str::from_utf8(self.bytes()?).map_err(|_| "gob: string is not UTF-8".to_string())
    }
}

/// One message's payload and the bytes after it.
pub(crate) type Split<'a> = Option<(&'a [u8], &'a [u8])>;

/// Splits `buf` into one message's payload and the rest: `Ok(None)` if
/// the message is not all there.
pub(crate) fn split_message(buf: &[u8]) -> Result<Split<'_>, String> {
    let Some((n, len)) = peek_uint(buf)? else {
        return Ok(None);
    };
    if len == 0 {
        return Err("gob: empty message".into());
    }
    let rest = &buf[n..];
    match usize::try_from(len) {
        Ok(len) if len <= rest.len() => Ok(Some((&rest[..len], &rest[len..]))),
        _ => Ok(None),
    }
}

/// Appends a message (its length, then `payload`).
pub(crate) fn put_message(out: &mut Vec<u8>, payload: &[u8]) {
    put_uint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_as_doc_go_shows_them() {
        // doc.go: 7 is 07, 256 is FE 01 00, -129 is FE 01 01, 17.0 is FE 31 40.
        let mut out = Vec::new();
        put_uint(&mut out, 7);
        put_uint(&mut out, 256);
        put_int(&mut out, -129);
        put_float(&mut out, 17.0);
        assert_eq!(
            out,
            [0x07, 0xfe, 0x01, 0x00, 0xfe, 0x01, 0x01, 0xfe, 0x31, 0x40]
        );
        let mut c = Cursor::new(&out);
        assert_eq!(c.uint().unwrap(), 7);
        assert_eq!(c.uint().unwrap(), 256);
        assert_eq!(c.int().unwrap(), -129);
        assert_eq!(c.float().unwrap(), 17.0);
        assert!(c.at_end());
        for x in [0, 1, 127, 128, 255, 1 << 40, u64::MAX] {
            let mut out = Vec::new();
            put_uint(&mut out, x);
            assert_eq!(Cursor::new(&out).uint().unwrap(), x);
        }
        for x in [0, -1, 1, i64::MIN, i64::MAX, -300] {
            let mut out = Vec::new();
            put_int(&mut out, x);
            assert_eq!(Cursor::new(&out).int().unwrap(), x);
        }
    }

    #[test]
    fn bad_and_short_integers_are_errors() {
        assert!(Cursor::new(&[0xf7]).uint().is_err(), "9 bytes claimed");
        assert!(Cursor::new(&[0xfe, 1]).uint().is_err(), "short");
        assert!(
            Cursor::new(&[0x05, 1]).count().is_err(),
            "count over the bytes left"
        );
        assert!(split_message(&[0x00]).is_err());
        assert_eq!(split_message(&[0x03, 1]).unwrap(), None);
    }
}
