//! [`Code`]: the stable code a reply header carries next to its error text
//! (PROTOCOL.md sections 8 and 9), so that a program can tell why a call
//! failed without parsing the text Go peers expect; and [`RemoteKind`], the
//! kind of a remote error, read from the code or, for Go peers that send
//! none, from Go's stable error texts.

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
    /// `internal`: the server failed outside the handler, or the handler
    /// panicked.
    Internal,
    /// `cancelled`: the caller gave up on the call (its deadline passed or it
    /// was dropped) before the handler finished.
    Cancelled,
    /// `unknown`: an error with no more precise code. A client gives this
    /// code to a handler's own error that came without one
    /// ([`Error::code`](crate::Error::code)); it is never sent.
    Unknown,
    /// `already_exists`: what the call would create exists (handler's code).
    AlreadyExists,
    /// `failed_precondition`: the system is not in a state the call needs
    /// (handler's code).
    FailedPrecondition,
    /// `aborted`: the call was aborted, typically by a conflict with
    /// another (handler's code).
    Aborted,
    /// `out_of_range`: an argument past a valid range (handler's code).
    OutOfRange,
    /// `unimplemented`: the operation is not implemented (handler's code).
    Unimplemented,
    /// `data_loss`: unrecoverable loss or corruption of data (handler's code).
    DataLoss,
    /// `goaway`: the drain notice itself (section 9): a reply header with
    /// `Seq` 0 that tells a client to send nothing more on the connection.
    Goaway,
    /// A code this version does not know, as it was on the wire.
    Other(String),
}

/// The `code` label values of the metrics (server and client), in slot order: `ok`, the codes
/// a call can end with, and `other` for any other (a handler's
/// [`Code::Other`]): a fixed, bounded set whatever the peers send.
pub(crate) const CODE_LABELS: [&str; CODES] = [
    "ok",
    "invalid_argument",
    "not_found",
    "deadline_exceeded",
    "resource_exhausted",
    "unavailable",
    "unauthenticated",
    "permission_denied",
    "internal",
    "cancelled",
    "unknown",
    "already_exists",
    "failed_precondition",
    "aborted",
    "out_of_range",
    "unimplemented",
    "data_loss",
    "other",
];
pub(crate) const CODES: usize = 18;

/// The slot of a call's outcome in [`CODE_LABELS`]: `None` is success.
pub(crate) fn code_slot(code: Option<&Code>) -> usize {
    let Some(code) = code else { return 0 };
    CODE_LABELS[1..CODES - 1]
        .iter()
        .position(|&l| l == code.as_str())
        .map_or(CODES - 1, |i| i + 1)
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
            Code::Cancelled => "cancelled",
            Code::Unknown => "unknown",
            Code::AlreadyExists => "already_exists",
            Code::FailedPrecondition => "failed_precondition",
            Code::Aborted => "aborted",
            Code::OutOfRange => "out_of_range",
            Code::Unimplemented => "unimplemented",
            Code::DataLoss => "data_loss",
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
            "cancelled" => Code::Cancelled,
            "unknown" => Code::Unknown,
            "already_exists" => Code::AlreadyExists,
            "failed_precondition" => Code::FailedPrecondition,
            "aborted" => Code::Aborted,
            "out_of_range" => Code::OutOfRange,
            "unimplemented" => Code::Unimplemented,
            "data_loss" => Code::DataLoss,
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

/// The stable prefixes of the error texts Go GeeRPC (and geerpc, which keeps
/// them) answers with; what follows each is the name or the time.
pub(crate) mod text {
    /// `Service.Method` without a dot.
    pub(crate) const ILL_FORMED: &str = "rpc server: service/method request ill-formed: ";
    /// Then the service's name (geerpc: then `(services: ...)`).
    pub(crate) const NO_SERVICE: &str = "rpc server: can't find service ";
    /// Then the method's name (geerpc: then ` of service S (methods: ...)`).
    pub(crate) const NO_METHOD: &str = "rpc server: can't find method ";
    /// Then the handle timeout, as Go prints a duration.
    pub(crate) const HANDLE_TIMEOUT: &str = "rpc server: request handle timeout: expect within ";
}

/// What kind of error a server answered a call with
/// ([`Error::remote_kind`](crate::Error::remote_kind)), so that a program
/// can match it instead of parsing the text.
///
/// Read from the reply's [`Code`] when it has one (a geerpc server). A reply
/// without a code (a Go GeeRPC server, or a geerpc handler's own error) is
/// classified by the stable beginnings of Go's texts:
/// `rpc server: can't find service `, `rpc server: can't find method `,
/// `rpc server: service/method request ill-formed: ` and
/// `rpc server: request handle timeout: expect within `; any other text is
/// the handler's own error ([`RemoteKind::Handler`]). A Go server's "body
/// did not decode" has no stable text (it is the codec's message), so from
/// Go it counts as [`RemoteKind::Handler`].
///
/// Both unknown services and unknown methods travel as `not_found`; the text,
/// whose beginning geerpc keeps as Go's, tells them apart. A `not_found`
/// whose text is neither counts as an unknown method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RemoteKind {
    /// No service of that name (or a name without a dot).
    UnknownService,
    /// The service has no method of that name.
    UnknownMethod,
    /// The argument did not decode as the method's type, or the call's
    /// metadata was malformed (`invalid_argument`).
    BadArgument,
    /// The handler returned an error of its own: no code, or a code only
    /// handlers use (a `Status` with `already_exists`, `aborted`, ...).
    Handler,
    /// The call's time on the server ran out: the connection's handle
    /// timeout or the call's own deadline (`deadline_exceeded`).
    HandleTimeout,
    /// Not processed: the server is going away (`unavailable`); another
    /// instance may take it.
    Unavailable,
    /// Not processed: refused by a server limit (`resource_exhausted`);
    /// another instance may take it.
    ResourceExhausted,
    /// Refused by the server's authentication (`unauthenticated`).
    Unauthenticated,
    /// Refused by the server's authorization (`permission_denied`).
    PermissionDenied,
    /// The server failed outside the handler, or the handler panicked
    /// (`internal`).
    Internal,
    /// A code this version does not know.
    Other,
}

impl RemoteKind {
    /// The kind of a reply with this code (if any) and error text.
    pub fn classify(code: Option<&Code>, message: &str) -> RemoteKind {
        let named_service =
            || message.starts_with(text::NO_SERVICE) || message.starts_with(text::ILL_FORMED);
        match code {
            Some(Code::NotFound) if named_service() => RemoteKind::UnknownService,
            Some(Code::NotFound) => RemoteKind::UnknownMethod,
            Some(Code::InvalidArgument) => RemoteKind::BadArgument,
            Some(Code::DeadlineExceeded) => RemoteKind::HandleTimeout,
            Some(Code::Unavailable) => RemoteKind::Unavailable,
            Some(Code::ResourceExhausted) => RemoteKind::ResourceExhausted,
            Some(Code::Unauthenticated) => RemoteKind::Unauthenticated,
            Some(Code::PermissionDenied) => RemoteKind::PermissionDenied,
            Some(Code::Internal) => RemoteKind::Internal,
            // Codes only a handler's `Status` carries.
            Some(
                Code::Cancelled
                | Code::Unknown
                | Code::AlreadyExists
                | Code::FailedPrecondition
                | Code::Aborted
                | Code::OutOfRange
                | Code::Unimplemented
                | Code::DataLoss,
            ) => RemoteKind::Handler,
            Some(Code::Goaway | Code::Other(_)) => RemoteKind::Other,
            None if named_service() => RemoteKind::UnknownService,
            None if message.starts_with(text::NO_METHOD) => RemoteKind::UnknownMethod,
            None if message.starts_with(text::HANDLE_TIMEOUT) => RemoteKind::HandleTimeout,
            None => RemoteKind::Handler,
        }
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
            Code::Cancelled,
            Code::Unknown,
            Code::AlreadyExists,
            Code::FailedPrecondition,
            Code::Aborted,
            Code::OutOfRange,
            Code::Unimplemented,
            Code::DataLoss,
            Code::Goaway,
            Code::Other("rate_limited".into()),
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

    /// Replies as a Go GeeRPC server sends them (texts from its server.go,
    /// no code) and as geerpc sends them (Go's text, then more, and a code).
    #[test]
    fn remote_kinds_come_from_the_code_or_from_go_s_texts() {
        use RemoteKind::*;
        let go = [
            ("rpc server: can't find service Foo", UnknownService),
            ("rpc server: can't find method Foo", UnknownMethod),
            (
                "rpc server: service/method request ill-formed: Foo",
                UnknownService,
            ),
            (
                "rpc server: request handle timeout: expect within 1s",
                HandleTimeout,
            ),
            ("gob: type mismatch", Handler),
            ("divide by zero", Handler),
            ("", Handler),
        ];
        for (text, kind) in go {
            assert_eq!(RemoteKind::classify(None, text), kind, "{text:?}");
        }
        let geerpc = [
            (
                Code::NotFound,
                "rpc server: can't find service Foo (services: Arith)",
                UnknownService,
            ),
            (
                Code::NotFound,
                "rpc server: can't find method Foo of service Arith (methods: Sum)",
                UnknownMethod,
            ),
            (
                Code::NotFound,
                "rpc server: service/method request ill-formed: Foo",
                UnknownService,
            ),
            (Code::NotFound, "some later text", UnknownMethod),
            (
                Code::InvalidArgument,
                "rpc server: cannot decode argument",
                BadArgument,
            ),
            (Code::DeadlineExceeded, "anything", HandleTimeout),
            (Code::Unavailable, "rpc server: shutting down", Unavailable),
            (Code::ResourceExhausted, "x", ResourceExhausted),
            (Code::Unauthenticated, "x", Unauthenticated),
            (Code::PermissionDenied, "x", PermissionDenied),
            (Code::Internal, "x", Internal),
            (Code::Other("rate_limited".into()), "x", Other),
            (Code::AlreadyExists, "x", Handler),
            // The code wins over the text: a handler's own text proves nothing.
            (
                Code::Internal,
                "rpc server: can't find method Foo",
                Internal,
            ),
        ];
        for (code, text, kind) in geerpc {
            assert_eq!(
                RemoteKind::classify(Some(&code), text),
                kind,
                "{code} {text:?}"
            );
        }
    }
}
