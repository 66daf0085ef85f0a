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

use std::ops::Range;

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
    let f = fields(bytes, None)?;
    Some(Header {
        service_method: f.method.to_owned(),
        seq: f.seq,
        error: f.error.to_owned(),
        timeout: f.timeout,
        ..Header::default()
    })
}

/// [`decode`] into `out`, in place; false (and `out` as it was) for a
/// header of another shape. A server's connection thread reads every
/// request into the same header: the method's text goes into the last
/// one's buffer (no allocation), and no second copy of the header is
/// written on its stack, cold again each call when a core serves a
/// thousand connections in turn (issue 23). `marks` are `frame`'s of these
/// very bytes, if the frame reader has them (the header is then not
/// parsed again).
pub(super) fn decode_request_into(bytes: &[u8], marks: Option<Marks>, out: &mut Header) -> bool {
    let Some(f) = fields(bytes, marks) else {
        return false;
    };
    out.service_method.clear();
    out.service_method.push_str(f.method);
    out.seq = f.seq;
    out.error.clear();
    out.error.push_str(f.error);
    out.timeout = f.timeout;
    out.code = None;
    out.meta = None;
    true
}

/// [`decode`] for a client reading a reply: its `ServiceMethod`, an echo
/// of the call's own, is left empty unless `Error` is set (an error names
/// it). One allocation fewer per call. `marks` as for `decode_request_into`.
pub(super) fn decode_reply(bytes: &[u8], marks: Option<Marks>) -> Option<Header> {
    let f = fields(bytes, marks)?;
    Some(Header {
        service_method: if f.error.is_empty() {
            String::new()
        } else {
            f.method.to_owned()
        },
        seq: f.seq,
        error: f.error.to_owned(),
        timeout: f.timeout,
        ..Header::default()
    })
}

/// A common-shape header's fields, read from its bytes.
struct Fields<'a> {
    method: &'a str,
    seq: u64,
    error: &'a str,
    timeout: u64,
}

fn fields(bytes: &[u8], marks: Option<Marks>) -> Option<Fields<'_>> {
    let (bytes, k) = match marks {
        Some(k) => (bytes, k),
        None => {
            // A message starts where the last one's value ended: after its
            // body's closing bracket, so with the newline that followed it.
            let lead = bytes.iter().take_while(|&&b| super::json::is_ws(b)).count();
            let bytes = &bytes[lead..];
            let k = frame(bytes)?;
            // What the frame reader hands out may end with the newline
            // after it.
            if !bytes[k.end..].iter().all(|&b| super::json::is_ws(b)) {
                return None;
            }
            (bytes, k)
        }
    };
    let service_method = text(bytes.get(k.method.clone())?)?;
    let seq = number(bytes.get(k.seq)?)?;
    let error = text(bytes.get(k.error)?)?;
    let timeout = match k.timeout {
        Some(t) => number(bytes.get(t)?)?,
        None => 0,
    };
    Some(Fields {
        method: service_method,
        seq,
        error,
        timeout,
    })
}

/// Where a common-shape header's fields are, as `frame` found them: the
/// header's length, and the span of each field's value (a string's without
/// its quotes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Marks {
    end: usize,
    method: Range<usize>,
    seq: Range<usize>,
    error: Range<usize>,
    timeout: Option<Range<usize>>,
}

impl Marks {
    /// The header's length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.end
    }
}

/// Where a header of the common shape ends, and its fields, if `bytes`
/// starts with a whole one; `None` if it does not (another shape, or not
/// all of it here yet), and the JSON scanner then finds the end. The same
/// end the scanner finds: a string without `"` or `\` ends at its next
/// quote, so such a header ends at its `}`. Its fields' bytes are not
/// checked here (`decode` does that, or serde): only where they are. Each
/// side frames one header a call, for a fraction of the scan's cost, and
/// decodes it from these marks without parsing it again (callgrind).
pub(crate) fn frame(bytes: &[u8]) -> Option<Marks> {
    let mut p = Cursor { bytes, pos: 0 };
    p.eat(b"{\"ServiceMethod\":\"")?;
    let method = p.skip_string()?;
    p.eat(b",\"Seq\":")?;
    let seq = p.skip_digits()?;
    p.eat(b",\"Error\":\"")?;
    let error = p.skip_string()?;
    let mut timeout = None;
    if p.eat(b",\"Timeout\":").is_some() {
        timeout = Some(p.skip_digits()?);
    }
    p.eat(b"}")?;
    Some(Marks {
        end: p.pos,
        method,
        seq,
        error,
        timeout,
    })
}

/// A string's bytes as serde_json reads them unchanged: printable ASCII
/// without `\` (framing already stopped at the first `"`), so valid UTF-8
/// as they are.
fn text(s: &[u8]) -> Option<&str> {
    if !s.iter().all(|&b| (0x20..0x7f).contains(&b) && b != b'\\') {
        return None;
    }
    std::str::from_utf8(s).ok()
}

/// Digits as serde_json reads them into a `u64`: no leading zero unless
/// it is all, no overflow. (Framing found only digits, followed by `,` or
/// `}`: no fraction or exponent.) Anything else is left to serde.
fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 || (digits.len() > 1 && digits[0] == b'0') {
        return None;
    }
    let mut n: u64 = 0;
    for &d in digits {
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(n)
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

    /// Past a string's closing quote, if no backslash comes before it;
    /// the span of its bytes between the quotes.
    fn skip_string(&mut self) -> Option<Range<usize>> {
        let rest = &self.bytes[self.pos..];
        let len = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
        if rest[len] != b'"' {
            return None;
        }
        let span = self.pos..self.pos + len;
        self.pos += len + 1;
        Some(span)
    }

    /// Past one or more digits; their span.
    fn skip_digits(&mut self) -> Option<Range<usize>> {
        let rest = &self.bytes[self.pos..];
        let len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if len == 0 {
            return None;
        }
        let span = self.pos..self.pos + len;
        self.pos += len;
        Some(span)
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

    /// Where the JSON scanner finds the first value's end, if it does.
    fn scan_end(bytes: &[u8]) -> Option<usize> {
        match super::super::json::JsonScan::default().scan(bytes, false) {
            Ok(super::super::Scan::Complete(n)) => Some(n),
            _ => None,
        }
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

    prop_compose! {
        /// A header's fields: methods with and without what the fast path
        /// leaves to serde (non-ASCII, a tab), errors with escapes.
        fn fields()(
            sm in "[ -~é\t]{0,12}",
            seq in any::<u64>(),
            error in "[ -~\\\\\"\n]{0,12}",
            timeout in prop_oneof![Just(0u64), any::<u64>()],
        ) -> (String, u64, String, u64) {
            (sm, seq, error, timeout)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Whatever the fast path writes is serde's bytes, and whatever it
        /// reads serde reads the same.
        #[test]
        fn the_fast_path_agrees_with_serde((sm, seq, error, timeout) in fields()) {
            let h = header(&sm, seq, &error, timeout);
            let mut out = Vec::new();
            if encode(&mut out, &h) {
                prop_assert_eq!(&out, &serde_bytes(&h));
            }
            let bytes = serde_bytes(&h);
            if let Some(fast) = decode(&bytes) {
                prop_assert_eq!(fast, serde_json::from_slice::<Header>(&bytes).unwrap());
            }
            // A client's read of a reply: the same, but for the method it
            // knows already, read only for an error to name it.
            let full = decode(&bytes);
            let mut reply = decode_reply(&bytes, None);
            prop_assert_eq!(&reply, &decode_reply(&bytes, frame(&bytes)), "from marks");
            if let Some(r) = reply.as_mut() {
                prop_assert_eq!(r.service_method.is_empty(), error.is_empty() || sm.is_empty());
                r.service_method = sm.clone();
            }
            prop_assert_eq!(reply, full.clone());
            // A server's, in place over the last reply's header: every
            // field of it replaced, none left over.
            let request = |marks: Option<Marks>| {
                let mut out = Header {
                    service_method: "Earlier.Method, longer".into(),
                    seq: 99,
                    error: "an earlier error".into(),
                    code: Some(crate::code::Code::Internal),
                    timeout: 7,
                    meta: Some(crate::meta::WireMeta::Invalid("earlier".into())),
                };
                decode_request_into(&bytes, marks, &mut out).then_some(out)
            };
            prop_assert_eq!(&request(None), &full);
            prop_assert_eq!(request(frame(&bytes)), full, "from marks");
        }

        /// Where a header ends, found by `frame`, is where the scanner
        /// finds it: whole, with a body after it, mutated, or cut short
        /// (then `frame` finds nothing and the scanner goes on).
        #[test]
        fn framing_agrees_with_the_scanner(
            (sm, seq, error, timeout) in fields(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let h = header(&sm, seq, &error, timeout);
            let whole = serde_bytes(&h);
            let plain_shape = plain(&sm) && plain(&error);
            let mut with_body = whole.clone();
            with_body.extend_from_slice(b"\n{\"A\":1}\n");
            let mut mutated = with_body.clone();
            let i = at.index(whole.len());
            mutated[i] = byte;
            for bytes in [&whole, &with_body, &mutated] {
                let scanned = scan_end(bytes);
                match frame(bytes) {
                    Some(k) => {
                        prop_assert_eq!(Some(k.len()), scanned);
                        // Decoding the header's span from the marks is
                        // decoding it afresh (fields checked the same).
                        let span = &bytes[..k.len()];
                        prop_assert_eq!(decode_reply(span, Some(k)), decode_reply(span, None));
                    }
                    None => prop_assert!(!plain_shape || !std::ptr::eq(bytes, &whole)),
                }
                for cut in 0..bytes.len().min(whole.len()) {
                    if let Some(k) = frame(&bytes[..cut]) {
                        prop_assert_eq!(Some(k.len()), scan_end(&bytes[..cut]));
                    }
                }
            }
            prop_assert_eq!(frame(&whole[..whole.len() - 1]), None);
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
            // From the frame reader's marks (its span starts at the `{`
            // and ends at the `}`): what is read without them.
            if let Some(k) = frame(&bytes) {
                let span = &bytes[..k.len()];
                let request = |marks: Option<Marks>| {
                    let mut out = Header::default();
                    decode_request_into(span, marks, &mut out).then_some(out)
                };
                prop_assert_eq!(request(Some(k)), request(None));
            }
        }
    }
}
