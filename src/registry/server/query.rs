//! Decoding a registry `GET`'s query string (`service`, `include_legacy`,
//! `format`, `watch`, `timeout`) and its wish for JSON. Pure functions: nothing here touches
//! the table or answers a request.

use tiny_http::Request;

use super::table::Wanted;

/// What a `GET`'s query string asks for. Unknown keys are ignored, as Go
/// peers and browsers may add their own.
pub(super) struct Query {
    /// `service=NAME`: only the instances that serve it.
    pub(super) service: Option<String>,
    /// `include_legacy=true` (or `1`): with `service`, the instances that
    /// name no service too, even where some instance names it.
    pub(super) include_legacy: bool,
    /// `format=json`: the JSON listing.
    pub(super) json: bool,
    /// `watch=VERSION`: a long poll from this version.
    pub(super) watch: Option<String>,
    /// `timeout=DURATION`: the long poll's wait (Go syntax, `30s`).
    pub(super) timeout: Option<String>,
}

/// Decodes `q` (the part after `?`), percent-escapes and `+` included.
pub(super) fn parse_query(q: &str) -> Query {
    let mut out = Query {
        service: None,
        include_legacy: false,
        json: false,
        watch: None,
        timeout: None,
    };
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        match k {
            "service" if !v.is_empty() => out.service = Some(v),
            "include_legacy" => out.include_legacy = matches!(v.as_str(), "true" | "1" | ""),
            "format" => out.json = v == "json",
            "watch" => out.watch = Some(v),
            "timeout" => out.timeout = Some(v),
            _ => {}
        }
    }
    out
}

impl Query {
    /// The instances the query lists.
    pub(super) fn wanted(&self) -> Wanted<'_> {
        Wanted {
            service: self.service.as_deref(),
            include_legacy: self.include_legacy,
        }
    }
}

/// `%XX` escapes and `+` (a space) decoded; a malformed escape is kept as
/// it is, and bytes that are not UTF-8 become U+FFFD.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%')
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (_, Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (c, None) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the answer should be the JSON listing: `format=json`, or an
/// `Accept` header naming `application/json`.
pub(super) fn wants_json(rq: &Request, query: &Query) -> bool {
    query.json
        || rq
            .headers()
            .iter()
            .any(|h| h.field.equiv("Accept") && h.value.as_str().contains("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_plus_and_ignores_unknown_keys() {
        let q = parse_query("service=Arith%2EV2+x&format=json&watch=7&timeout=2s&x=1&&bad");
        assert_eq!(q.service.as_deref(), Some("Arith.V2 x"));
        assert!(q.json);
        assert_eq!(q.watch.as_deref(), Some("7"));
        assert_eq!(q.timeout.as_deref(), Some("2s"));
        // An empty service is no filter; a malformed escape stays as sent.
        let q = parse_query("service=&format=text");
        assert_eq!((q.service, q.json), (None, false));
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
        assert!(!q.include_legacy);
        for (given, want) in [("true", true), ("1", true), ("", true), ("false", false)] {
            let q = parse_query(&format!("service=A&include_legacy={given}"));
            assert_eq!(q.include_legacy, want, "{given}");
        }
    }
}
