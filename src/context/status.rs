//! [`Status`]: an error a handler returns with a [`Code`], so that its
//! caller can match why the call failed (PROTOCOL.md section 8).

use std::fmt;

use crate::code::Code;
use crate::error::Error;

/// A handler's error with a code: the reply carries `message` as its
/// `Error` text (what Go peers read) and `code` as its `Code`.
///
/// A handler may return any displayable error; only a `Status` (or a
/// [`geerpc::Error`](crate::Error) of a call the handler made, whose
/// `deadline_exceeded` it passes on) gives the reply a code.
///
/// ```
/// use geerpc::{Code, Service, Status};
///
/// let users = Service::new("Users").method("Get", |id: u64| -> Result<String, Status> {
///     match id {
///         0 => Err(Status::invalid_argument("id 0 is reserved")),
///         1 => Ok("alice".to_string()),
///         _ => Err(Status::new(Code::NotFound, format!("no user {id}"))),
///     }
/// });
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    code: Code,
    message: String,
}

impl Status {
    /// An error with `code` and `message`.
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
        }
    }

    /// `invalid_argument`: the argument is not acceptable.
    pub fn invalid_argument(message: impl Into<String>) -> Status {
        Status::new(Code::InvalidArgument, message)
    }

    /// `not_found`: what the call names does not exist.
    pub fn not_found(message: impl Into<String>) -> Status {
        Status::new(Code::NotFound, message)
    }

    /// `permission_denied`: the caller may not do this.
    pub fn permission_denied(message: impl Into<String>) -> Status {
        Status::new(Code::PermissionDenied, message)
    }

    /// `unauthenticated`: the caller's credentials are missing or wrong.
    pub fn unauthenticated(message: impl Into<String>) -> Status {
        Status::new(Code::Unauthenticated, message)
    }

    /// `resource_exhausted`: refused by a limit before any work was done.
    /// The caller may send the call to another instance, even when it is
    /// not idempotent (PROTOCOL.md section 8): return it (or
    /// `unavailable`) only from a handler that did nothing, as an
    /// interceptor's `before` or a check at the handler's start does.
    pub fn resource_exhausted(message: impl Into<String>) -> Status {
        Status::new(Code::ResourceExhausted, message)
    }

    /// `internal`: something broke that should not have.
    pub fn internal(message: impl Into<String>) -> Status {
        Status::new(Code::Internal, message)
    }

    /// The code.
    pub fn code(&self) -> &Code {
        &self.code
    }

    /// The text.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Status {}

/// A call's error as a handler's: its text, and its code when that is
/// one a caller upstream should see as well (`deadline_exceeded`,
/// `cancelled`: the budget they share ran out). Other codes describe the
/// downstream call, not this one, and become `unknown`.
impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let code = match e.code() {
            c @ (Code::DeadlineExceeded | Code::Cancelled) => c,
            _ => Code::Unknown,
        };
        Status::new(code, e.to_string())
    }
}
