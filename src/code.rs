//! [`Code`]: the stable code a reply header carries next to its error text
//! (PROTOCOL.md sections 8 and 9), so that a program can tell why a call
//! failed without parsing the text Go peers expect.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why the server did not answer a call with a result: the `Code` field of
/// a reply header (PROTOCOL.md section 8), gRPC's names in lowercase.
///
/// A reply whose `Error` is set and whose `Code` is absent or empty is the
/// handler's own error: [`Error::Remote`](crate::Error::Remote) then has no
/// code. A code this version does not know is kept as
/// [`Code::Other`] (later versions may add codes; readers must not fail on
/// them).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// `invalid_argument`: the body did not decode, or `Meta` was malformed.
    InvalidArgument,
    /// `not_found`: unknown service or method.
    NotFound,
    /// `deadline_exceeded`: the call's deadline passed (handle timeout or
    /// `Timeout`).
    DeadlineExceeded,
    /// `resource_exhausted`: refused by a limit before the handler ran; NOT
    /// processed, so it may be sent to another instance.
    ResourceExhausted,
    /// `unavailable`: not processed because the server is going away
    /// (section 9); it may be sent to another instance.
    Unavailable,
    /// `unauthenticated`: refused by the server's authentication.
    Unauthenticated,
    /// `permission_denied`: refused by the server's authorization.
    PermissionDenied,
    /// `internal`: the server failed outside the handler.
    Internal,
    /// `goaway`: the drain notice itself (section 9): a reply header with
    /// `Seq` 0 that tells a client to send nothing more on the connection.
    Goaway,
    /// A code this version does not know, as it was on the wire.
    Other(String),
}

impl Code {
    /// The name on the wire: `unavailable`, `not_found`, ...
    pub fn as_str(&self) -> &str {
        match self {
            Code::InvalidArgument => "invalid_argument",
            Code::NotFound => "not_found",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::ResourceExhausted => "resource_exhausted",
            Code::Unavailable => "unavailable",
            Code::Unauthenticated => "unauthenticated",
            Code::PermissionDenied => "permission_denied",
            Code::Internal => "internal",
            Code::Goaway => "goaway",
            Code::Other(s) => s,
        }
    }

    /// The code for a wire name; `None` for the empty string (no code).
    /// A name this version does not know becomes [`Code::Other`].
    pub fn parse(name: &str) -> Option<Code> {
        Some(match name {
            "" => return None,
            "invalid_argument" => Code::InvalidArgument,
            "not_found" => Code::NotFound,
            "deadline_exceeded" => Code::DeadlineExceeded,
            "resource_exhausted" => Code::ResourceExhausted,
            "unavailable" => Code::Unavailable,
            "unauthenticated" => Code::Unauthenticated,
            "permission_denied" => Code::PermissionDenied,
            "internal" => Code::Internal,
            "goaway" => Code::Goaway,
            other => Code::Other(other.to_string()),
        })
    }

    /// Whether a reply with this code says the call was NOT processed, so
    /// that a client may send it again to another instance even when it is
    /// not idempotent (PROTOCOL.md section 8): `resource_exhausted` and
    /// `unavailable`.
    pub fn may_retry_elsewhere(&self) -> bool {
        matches!(self, Code::ResourceExhausted | Code::Unavailable)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The header's `Code` field: absent, `""` and (from a lax peer) `null` all
/// mean no code.
pub(crate) mod field {
    use super::*;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Code>, D::Error> {
        let name: Option<String> = Option::deserialize(d)?;
        Ok(name.and_then(|n| Code::parse(&n)))
    }

    pub(crate) fn serialize<S: Serializer>(code: &Option<Code>, s: S) -> Result<S::Ok, S::Error> {
        match code {
            Some(c) => c.serialize(s),
            None => s.serialize_str(""),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_name() {
        let all = [
            Code::InvalidArgument,
            Code::NotFound,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
            Code::Unavailable,
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::Internal,
            Code::Goaway,
            Code::Other("data_loss".into()),
        ];
        for c in all {
            assert_eq!(Code::parse(c.as_str()), Some(c.clone()), "{c}");
        }
        assert_eq!(Code::parse(""), None);
        let retry: Vec<&str> = [
            Code::ResourceExhausted,
            Code::Unavailable,
            Code::Internal,
            Code::Goaway,
            Code::NotFound,
        ]
        .iter()
        .filter(|c| c.may_retry_elsewhere())
        .map(Code::as_str)
        .collect();
        assert_eq!(retry, ["resource_exhausted", "unavailable"]);
    }
}
