//! [`Meta`]: the string pairs a call carries next to its argument or its
//! reply (PROTOCOL.md section 8, the header's `Meta` field), with the
//! limits the protocol sets; and how a header field of it is read from a
//! peer, leniently, so that a malformed `Meta` fails its call and not its
//! connection.

use std::fmt;

use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// Most entries a [`Meta`] may hold (PROTOCOL.md section 8).
pub const MAX_ENTRIES: usize = 64;
/// Most bytes a [`Meta`] may hold, keys and values together.
pub const MAX_BYTES: usize = 8 << 10;

/// The well-known key for credentials: `Bearer TOKEN`.
pub const AUTHORIZATION: &str = "authorization";
/// The well-known key for W3C Trace Context's `traceparent`.
pub const TRACEPARENT: &str = "traceparent";
/// The well-known key for W3C Trace Context's `tracestate`.
pub const TRACESTATE: &str = "tracestate";

/// Metadata of a call or a reply: string keys to string values.
///
/// Keys are lowercase ASCII letters, digits, `-`, `_` and `.`; at most
/// [`MAX_ENTRIES`] entries and [`MAX_BYTES`] bytes in all. Inserting past
/// those fails, so that what a client sends is what a geerpc server takes.
/// Entries keep the order they were first inserted in. An empty `Meta`
/// allocates nothing and does not travel.
///
/// ```
/// use geerpc::Meta;
///
/// let mut meta = Meta::new();
/// meta.insert("tenant", "acme")?;
/// meta.insert("request-id", "42")?;
/// assert_eq!(meta.get("tenant"), Some("acme"));
/// assert!(meta.insert("Tenant", "x").is_err(), "keys are lowercase");
/// # Ok::<(), geerpc::Error>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Meta {
    entries: Vec<(String, String)>,
}

/// Why `key` is not a valid key, if it is not.
fn key_problem(key: &str) -> Option<&'static str> {
    if key.is_empty() {
        return Some("empty key");
    }
    let ok = key
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'));
    (!ok).then_some("keys are lowercase ASCII letters, digits, '-', '_' and '.'")
}

impl Meta {
    /// An empty `Meta`.
    pub const fn new() -> Meta {
        Meta {
            entries: Vec::new(),
        }
    }

    /// Sets `key` to `value`, replacing a value it had. Fails on a key that
    /// is not lowercase ASCII letters, digits, `-`, `_` and `.`, and when the
    /// `Meta` would pass [`MAX_ENTRIES`] or [`MAX_BYTES`]; it is then
    /// unchanged.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) -> Result<()> {
        let (key, value) = (key.into(), value.into());
        if let Some(reason) = key_problem(&key) {
            return Err(invalid(format!("{reason}: {key:?}")));
        }
        let old = self.entries.iter().position(|(k, _)| *k == key);
        let bytes = self.bytes() + key.len() + value.len()
            - old.map_or(0, |i| self.entries[i].0.len() + self.entries[i].1.len());
        if bytes > MAX_BYTES {
            return Err(invalid(format!(
                "{bytes} bytes with {key:?}, more than the limit of {MAX_BYTES}"
            )));
        }
        match old {
            Some(i) => self.entries[i].1 = value,
            None if self.entries.len() == MAX_ENTRIES => {
                return Err(invalid(format!(
                    "more than {MAX_ENTRIES} entries with {key:?}"
                )))
            }
            None => self.entries.push((key, value)),
        }
        Ok(())
    }

    /// `insert` for building: `Meta::new().with("k", "v")?`.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Result<Meta> {
        self.insert(key, value)?;
        Ok(self)
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let i = self.entries.iter().position(|(k, _)| k == key)?;
        Some(self.entries.remove(i).1)
    }

    /// Entries in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keys and values, in bytes.
    pub fn bytes(&self) -> usize {
        self.entries.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// Adds every entry of `other` that `self` lacks (`self` wins).
    pub fn merge_defaults(&mut self, other: &Meta) -> Result<()> {
        for (k, v) in other.iter() {
            if self.get(k).is_none() {
                self.insert(k, v)?;
            }
        }
        Ok(())
    }
}

fn invalid(reason: String) -> Error {
    Error::InvalidMeta { reason }
}

impl fmt::Debug for Meta {
    /// The `authorization` value is not shown: secrets are never logged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in self.iter() {
            if k == AUTHORIZATION {
                m.entry(&k, &"<redacted>");
            } else {
                m.entry(&k, &v);
            }
        }
        m.finish()
    }
}

impl Serialize for Meta {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.entries.len()))?;
        for (k, v) in &self.entries {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// A header's `Meta` as a peer sent it: valid, or why not. Reading never
/// fails on a `Meta` that breaks the rules (the call is answered
/// `invalid_argument`, the connection lives on), and stops keeping
/// entries once past the limits, so a peer cannot make it hold more than
/// [`MAX_BYTES`] of them (the message size limit bounds the rest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WireMeta {
    Valid(Meta),
    Invalid(String),
}

/// The header's `Meta` field: absent and `null` mean none.
pub(crate) mod field {
    use super::*;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Option<WireMeta>, D::Error> {
        d.deserialize_option(OptVisitor)
    }

    pub(crate) fn serialize<S: Serializer>(
        meta: &Option<WireMeta>,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        match meta {
            Some(WireMeta::Valid(m)) => m.serialize(s),
            _ => s.serialize_none(),
        }
    }

    /// Whether the field is left out: no `Meta`, or an empty one.
    pub(crate) fn is_absent(meta: &Option<WireMeta>) -> bool {
        match meta {
            None => true,
            Some(WireMeta::Valid(m)) => m.is_empty(),
            Some(WireMeta::Invalid(_)) => false,
        }
    }

    struct OptVisitor;

    impl<'de> Visitor<'de> for OptVisitor {
        type Value = Option<WireMeta>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of strings or null")
        }
        fn visit_none<E: serde::de::Error>(self) -> std::result::Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(
            self,
            d: D,
        ) -> std::result::Result<Self::Value, D::Error> {
            d.deserialize_any(MapVisitor).map(Some)
        }
        fn visit_map<A: MapAccess<'de>>(self, a: A) -> std::result::Result<Self::Value, A::Error> {
            MapVisitor.visit_map(a).map(Some)
        }
    }

    /// Anything but a map is `Invalid`, not an error of the header.
    struct MapVisitor;

    /// A key or a value: a string, or anything else (skipped).
    enum Str {
        S(String),
        Other,
    }

    impl<'de> Deserialize<'de> for Str {
        fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Str, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Str;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("anything")
                }
                fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Str, E> {
                    Ok(Str::S(v.to_string()))
                }
                fn visit_string<E: serde::de::Error>(
                    self,
                    v: String,
                ) -> std::result::Result<Str, E> {
                    Ok(Str::S(v))
                }
                fn visit_bool<E>(self, _: bool) -> std::result::Result<Str, E> {
                    Ok(Str::Other)
                }
                fn visit_i64<E>(self, _: i64) -> std::result::Result<Str, E> {
                    Ok(Str::Other)
                }
                fn visit_u64<E>(self, _: u64) -> std::result::Result<Str, E> {
                    Ok(Str::Other)
                }
                fn visit_f64<E>(self, _: f64) -> std::result::Result<Str, E> {
                    Ok(Str::Other)
                }
                fn visit_bytes<E>(self, _: &[u8]) -> std::result::Result<Str, E> {
                    Ok(Str::Other)
                }
                fn visit_unit<E>(self) -> std::result::Result<Str, E> {
                    Ok(Str::Other)
                }
                fn visit_none<E>(self) -> std::result::Result<Str, E> {
                    Ok(Str::Other)
                }
                fn visit_some<D: Deserializer<'de>>(
                    self,
                    d: D,
                ) -> std::result::Result<Str, D::Error> {
                    IgnoredAny::deserialize(d).map(|_| Str::Other)
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    a: A,
                ) -> std::result::Result<Str, A::Error> {
                    IgnoredAny.visit_seq(a).map(|_| Str::Other)
                }
                fn visit_map<A: MapAccess<'de>>(self, a: A) -> std::result::Result<Str, A::Error> {
                    IgnoredAny.visit_map(a).map(|_| Str::Other)
                }
            }
            d.deserialize_any(V)
        }
    }

    impl<'de> Visitor<'de> for MapVisitor {
        type Value = WireMeta;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of strings")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> std::result::Result<WireMeta, A::Error> {
            let mut meta = Meta::new();
            let mut problem: Option<String> = None;
            let mut count = 0usize;
            while let Some(k) = a.next_key::<Str>()? {
                let v = a.next_value::<Str>()?;
                count += 1;
                if problem.is_some() {
                    continue; // read to the end, keep nothing more
                }
                match (k, v) {
                    (Str::S(k), Str::S(v)) => {
                        if meta.get(&k).is_some() {
                            problem = Some(format!("key {k:?} given twice"));
                        } else if let Err(e) = meta.insert(k, v) {
                            problem = Some(match e {
                                Error::InvalidMeta { reason } => reason,
                                other => other.to_string(),
                            });
                        }
                    }
                    (Str::S(k), Str::Other) => {
                        problem = Some(format!("the value of {k:?} is not a string"))
                    }
                    _ => problem = Some("a key is not a string".to_string()),
                }
            }
            Ok(match problem {
                Some(p) if count > MAX_ENTRIES => {
                    WireMeta::Invalid(format!("{count} entries, more than {MAX_ENTRIES} ({p})"))
                }
                Some(p) => WireMeta::Invalid(p),
                None => WireMeta::Valid(meta),
            })
        }
        fn visit_str<E>(self, _: &str) -> std::result::Result<WireMeta, E> {
            Ok(WireMeta::Invalid("not a map".into()))
        }
        fn visit_i64<E>(self, _: i64) -> std::result::Result<WireMeta, E> {
            Ok(WireMeta::Invalid("not a map".into()))
        }
        fn visit_u64<E>(self, _: u64) -> std::result::Result<WireMeta, E> {
            Ok(WireMeta::Invalid("not a map".into()))
        }
        fn visit_f64<E>(self, _: f64) -> std::result::Result<WireMeta, E> {
            Ok(WireMeta::Invalid("not a map".into()))
        }
        fn visit_bool<E>(self, _: bool) -> std::result::Result<WireMeta, E> {
            Ok(WireMeta::Invalid("not a map".into()))
        }
        fn visit_bytes<E>(self, _: &[u8]) -> std::result::Result<WireMeta, E> {
            Ok(WireMeta::Invalid("not a map".into()))
        }
        fn visit_unit<E>(self) -> std::result::Result<WireMeta, E> {
            Ok(WireMeta::Valid(Meta::new()))
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            a: A,
        ) -> std::result::Result<WireMeta, A::Error> {
            IgnoredAny.visit_seq(a)?;
            Ok(WireMeta::Invalid("not a map".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_limits_are_checked_on_insert() {
        let mut m = Meta::new();
        for bad in ["", "Upper", "sp ace", "ü", "a/b"] {
            assert!(m.insert(bad, "v").is_err(), "{bad:?}");
        }
        for good in ["a", "x-trace.id_2", "traceparent"] {
            m.insert(good, "v").unwrap();
        }
        m.insert("a", "w").unwrap();
        assert_eq!((m.get("a"), m.len()), (Some("w"), 3));
        let mut m = Meta::new();
        for i in 0..MAX_ENTRIES {
            m.insert(format!("k{i}"), "v").unwrap();
        }
        assert!(m.insert("one-more", "v").is_err());
        assert_eq!(m.len(), MAX_ENTRIES);
        m.insert("k0", "replacing is fine").unwrap();
        let mut m = Meta::new();
        m.insert("big", "x".repeat(MAX_BYTES - 3)).unwrap();
        assert!(m.insert("b", "").is_err(), "one byte over");
        assert_eq!(m.bytes(), MAX_BYTES);
    }

    #[test]
    fn authorization_is_not_shown_by_debug() {
        let m = Meta::new()
            .with(AUTHORIZATION, "Bearer s3cret")
            .unwrap()
            .with("tenant", "acme")
            .unwrap();
        let shown = format!("{m:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("acme"),
            "{shown}"
        );
    }

    #[derive(Deserialize, Serialize)]
    struct H {
        #[serde(
            rename = "Meta",
            default,
            with = "field",
            skip_serializing_if = "field::is_absent"
        )]
        meta: Option<WireMeta>,
        #[serde(rename = "Seq", default)]
        seq: u64,
    }

    fn read(json: &str) -> Option<WireMeta> {
        let h: H = serde_json::from_str(json).unwrap();
        assert_eq!(h.seq, 1, "the fields after Meta are read too: {json}");
        h.meta
    }

    #[test]
    fn a_bad_meta_on_the_wire_is_invalid_not_an_error() {
        assert_eq!(read(r#"{"Seq":1}"#), None);
        assert_eq!(read(r#"{"Meta":null,"Seq":1}"#), None);
        let good = Meta::new().with("a", "1").unwrap();
        assert_eq!(
            read(r#"{"Meta":{"a":"1"},"Seq":1}"#),
            Some(WireMeta::Valid(good.clone()))
        );
        for bad in [
            r#"{"Meta":{"A":"1"},"Seq":1}"#,
            r#"{"Meta":{"a":1},"Seq":1}"#,
            r#"{"Meta":{"a":{"b":[1]}},"Seq":1}"#,
            r#"{"Meta":{"a":"1","a":"2"},"Seq":1}"#,
            r#"{"Meta":[1,2],"Seq":1}"#,
            r#"{"Meta":"x","Seq":1}"#,
        ] {
            assert!(matches!(read(bad), Some(WireMeta::Invalid(_))), "{bad}");
        }
        let many: Vec<String> = (0..=MAX_ENTRIES)
            .map(|i| format!("\"k{i}\":\"v\""))
            .collect();
        let text = format!(r#"{{"Meta":{{{}}},"Seq":1}}"#, many.join(","));
        match read(&text) {
            Some(WireMeta::Invalid(why)) => assert!(why.contains("65 entries"), "{why}"),
            other => panic!("{other:?}"),
        }
        // MessagePack: a map with a non-string value, then the next field.
        let mut bytes = Vec::new();
        #[derive(Serialize)]
        struct Raw {
            #[serde(rename = "Meta")]
            meta: std::collections::BTreeMap<&'static str, i32>,
            #[serde(rename = "Seq")]
            seq: u64,
        }
        let raw = Raw {
            meta: [("a", 1)].into_iter().collect(),
            seq: 1,
        };
        rmp_serde::encode::write_named(&mut bytes, &raw).unwrap();
        let h: H = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(h.seq, 1);
        assert!(matches!(h.meta, Some(WireMeta::Invalid(_))));
        // Written: an empty Meta is left out; a full one is a map.
        let out = serde_json::to_string(&H {
            meta: Some(WireMeta::Valid(Meta::new())),
            seq: 1,
        })
        .unwrap();
        assert_eq!(out, r#"{"Seq":1}"#);
        let out = serde_json::to_string(&H {
            meta: Some(WireMeta::Valid(good)),
            seq: 1,
        })
        .unwrap();
        assert_eq!(out, r#"{"Meta":{"a":"1"},"Seq":1}"#);
    }
}
