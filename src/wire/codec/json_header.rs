//! The JSON header's fast path: the common header written and read by
//! hand, byte for byte as `serde_json` writes and reads it, with
//! `serde_json` itself for everything else.
//!
//! Every call encodes two headers and decodes two (request and reply, one
//! of each on each side). Through serde each costs a map serializer or a
//! key-matching visitor and a UTF-8 check per string: about 1,000 to 1,500
//! instructions of the ~8,000 a 1x1 call costs the server (callgrind).
//! The shape almost every header has, `{"ServiceMethod":"…","Seq":N,
//! "Error":"…"}` with at most a `Timeout` after it, is also what Go's
//! `encoding/json` writes for GeeRPC's header (fields in declaration order,
//! no spaces), so Go peers take the fast path too.
//!
//! What the fast path does not take, serde does: a `Code` or `Meta`, keys in
//! another order, whitespace, escapes, non-ASCII, numbers serde would
//! refuse or read otherwise. So a header the fast path reads is one serde
//! reads the same way, and a header it writes is the bytes serde writes;
//! `tests` checks both against serde over generated headers.

use super::Header;

/// Appends `header` as serde_json writes it, if it has the common shape
/// (no `Code`, no `Meta`, strings that need no escaping); false, with
/// nothing written, otherwise.
pub(super) fn encode(out: &mut Vec<u8>, header: &Header) -> bool {
    if header.code.is_some()
        || header.meta.is_some()
        || !plain(&header.service_method)
        || !plain(&header.error)
    {
        return false;
    }
    let mut seq = itoa::Buffer::new();
    out.reserve(48 + header.service_method.len() + header.error.len());
    out.extend_from_slice(b"{\"ServiceMethod\":\"");
    out.extend_from_slice(header.service_method.as_bytes());
    out.extend_from_slice(b"\",\"Seq\":");
    out.extend_from_slice(seq.format(header.seq).as_bytes());
    out.extend_from_slice(b",\"Error\":\"");
    out.extend_from_slice(header.error.as_bytes());
    out.push(b'"');
    if header.timeout != 0 {
        out.extend_from_slice(b",\"Timeout\":");
        out.extend_from_slice(seq.format(header.timeout).as_bytes());
    }
    out.push(b'}');
    true
}

/// Reads a header of the common shape; `None` for anything else (serde
/// then reads it, or says what is wrong with it).
pub(super) fn decode(bytes: &[u8]) -> Option<Header> {
    // A message starts where the last one's value ended: after its body's
    // closing bracket, so with the newline that followed it.
    let lead = bytes.iter().take_while(|&&b| super::json::is_ws(b)).count();
    let mut p = Cursor { bytes, pos: lead };
    p.eat(b"{\"ServiceMethod\":\"")?;
    let service_method = p.string()?;
    p.eat(b",\"Seq\":")?;
    let seq = p.number()?;
    p.eat(b",\"Error\":\"")?;
    let error = p.string()?;
    let mut timeout = 0;
    if p.eat(b",\"Timeout\":").is_some() {
        timeout = p.number()?;
    }
    p.eat(b"}")?;
    // What the frame reader hands out may end with the newline after it.
    if !p.bytes[p.pos..].iter().all(|&b| super::json::is_ws(b)) {
        return None;
    }
    Some(Header {
        service_method,
        seq,
        error,
        timeout,
        ..Header::default()
    })
}

/// Whether serde_json writes `s` as its bytes between quotes: printable
/// ASCII without `"` or `\`. (serde also leaves non-ASCII unescaped, but
/// the reading side's fast path takes ASCII only; keep the two alike.)
fn plain(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn eat(&mut self, lit: &[u8]) -> Option<()> {
        if self.bytes[self.pos..].starts_with(lit) {
            self.pos += lit.len();
            Some(())
        } else {
            None
        }
    }

    /// A string's rest, after its opening quote, up to and past its closing
    /// one: plain bytes only (see `plain`), so it is valid UTF-8 as is.
    fn string(&mut self) -> Option<String> {
        let rest = &self.bytes[self.pos..];
        let len = rest.iter().position(|&b| b == b'"')?;
        let s = &rest[..len];
        if !s.iter().all(|&b| (0x20..0x7f).contains(&b) && b != b'\\') {
            return None;
        }
        self.pos += len + 1;
        // Checked above: printable ASCII.
        String::from_utf8(s.to_vec()).ok()
    }

    /// An unsigned integer as serde_json reads one into a `u64`: digits,
    /// no leading zero unless it is all, no fraction or exponent, no
    /// overflow. Anything else is left to serde.
    fn number(&mut self) -> Option<u64> {
        let rest = &self.bytes[self.pos..];
        let len = rest
            .iter()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(rest.len());
        if len == 0 || len > 20 || (len > 1 && rest[0] == b'0') {
            return None;
        }
        if matches!(rest.get(len), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let mut n: u64 = 0;
        for &d in &rest[..len] {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        }
        self.pos += len;
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code::Code;
    use proptest::prelude::*;

    fn serde_bytes(h: &Header) -> Vec<u8> {
        serde_json::to_vec(h).unwrap()
    }

    fn header(sm: &str, seq: u64, error: &str, timeout: u64) -> Header {
        Header {
            service_method: sm.into(),
            seq,
            error: error.into(),
            timeout,
            ..Header::default()
        }
    }

    #[test]
    fn the_common_header_is_written_as_serde_writes_it_and_read_back() {
        for h in [
            header("Arith.Sum", 1, "", 0),
            header("Arith.Sum", u64::MAX, "division by zero", 0),
            header("", 0, "", 5_000_000_000),
        ] {
            let mut out = Vec::new();
            assert!(encode(&mut out, &h));
            assert_eq!(out, serde_bytes(&h), "{h:?}");
            assert_eq!(decode(&out).as_ref(), Some(&h));
            out.push(b'\n');
            assert_eq!(decode(&out).as_ref(), Some(&h));
            out.insert(0, b'\n');
            assert_eq!(
                decode(&out).as_ref(),
                Some(&h),
                "after the last body's newline"
            );
        }
    }

    #[test]
    fn what_the_fast_path_does_not_take_is_left_to_serde() {
        let mut out = Vec::new();
        let mut h = header("Arith.Sum", 1, "quote \" here", 0);
        assert!(!encode(&mut out, &h));
        h.error = "é".into();
        assert!(!encode(&mut out, &h));
        h.error.clear();
        h.code = Some(Code::NotFound);
        assert!(!encode(&mut out, &h));
        assert!(out.is_empty());
        for text in [
            r#"{"ServiceMethod":"A.B","Seq":1,"Error":"","Code":"not_found"}"#,
            r#"{"Seq":1,"ServiceMethod":"A.B","Error":""}"#,
            r#"{ "ServiceMethod":"A.B","Seq":1,"Error":""}"#,
            r#"{"ServiceMethod":"A\u002eB","Seq":1,"Error":""}"#,
            r#"{"ServiceMethod":"A.B","Seq":01,"Error":""}"#,
            r#"{"ServiceMethod":"A.B","Seq":1.0,"Error":""}"#,
            r#"{"ServiceMethod":"A.B","Seq":18446744073709551616,"Error":""}"#,
            r#"{"ServiceMethod":"A.B","Seq":-1,"Error":""}"#,
            r#"{"ServiceMethod":"A.B","Seq":1,"Error":""}x"#,
            r#"{"ServiceMethod":"A.B","Seq":1,"Error":"","Meta":{}}"#,
            "{\"ServiceMethod\":\"A\tB\",\"Seq\":1,\"Error\":\"\"}",
            r#"{"ServiceMethod":"A.B","Seq":1,"Error":"""#,
        ] {
            assert_eq!(decode(text.as_bytes()), None, "{text}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Whatever the fast path writes is serde's bytes, and whatever it
        /// reads serde reads the same.
        #[test]
        fn the_fast_path_agrees_with_serde(
            sm in "[ -~é\t]{0,12}",
            seq in any::<u64>(),
            error in "[ -~\\\\\"\n]{0,12}",
            timeout in prop_oneof![Just(0u64), any::<u64>()],
        ) {
            let h = header(&sm, seq, &error, timeout);
            let mut out = Vec::new();
            if encode(&mut out, &h) {
                prop_assert_eq!(&out, &serde_bytes(&h));
            }
            let bytes = serde_bytes(&h);
            if let Some(fast) = decode(&bytes) {
                prop_assert_eq!(fast, serde_json::from_slice::<Header>(&bytes).unwrap());
            }
        }

        /// Mutated headers: the fast path reads nothing serde would read
        /// otherwise or refuse.
        #[test]
        fn mutated_headers_are_read_as_serde_reads_them(
            seq in any::<u64>(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut bytes = serde_bytes(&header("Arith.Sum", seq, "e", 7));
            let i = at.index(bytes.len());
            bytes[i] = byte;
            if let Some(fast) = decode(&bytes) {
                let slow: Result<Header, _> = serde_json::from_slice(&bytes);
                prop_assert_eq!(Some(fast), slow.ok());
            }
        }
    }
}
