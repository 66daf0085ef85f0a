//! The one error type of geerpc.

use std::io;
use std::time::Duration;

use crate::util::duration::GoDuration;

/// Everything that can go wrong in geerpc.
///
/// Variants are meant to be matched on: a caller can tell a call that the
/// server rejected ([`Error::Remote`]) from one that timed out
/// ([`Error::Timeout`]) or one whose connection broke
/// ([`Error::ConnectionClosed`]). Messages say what happened and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An address is neither `PROTOCOL@ADDR` nor a bare `HOST:PORT`.
    #[error("invalid address {addr:?}: {reason} (accepted forms: tcp@HOST:PORT, http@HOST:PORT, unix@/PATH, tls@HOST:PORT; a bare HOST:PORT means tcp@)")]
    InvalidAddress {
        /// The address as given.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Connecting (TCP connect, CONNECT exchange and handshake) failed.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },

    /// Connecting did not finish within the connect timeout.
    #[error("rpc client: connect to {addr} timeout: expect within {}", GoDuration(*timeout))]
    ConnectTimeout {
        /// The address dialled.
        addr: String,
        /// The connect timeout that ran out.
        timeout: Duration,
    },

    /// The HTTP CONNECT tunnel was refused.
    #[error("rpc client: CONNECT to {addr} refused: {status}")]
    HttpConnect {
        /// The address dialled.
        addr: String,
        /// The status line the server answered with.
        status: String,
    },

    /// A call did not end within its own timeout or deadline, which bounds
    /// everything the call does; `stage` says what it was doing then.
    #[error("rpc client: call {method} on {addr} timeout while {stage}: expect within {}", GoDuration(*timeout))]
    Timeout {
        /// `Service.Method` of the call.
        method: String,
        /// The peer.
        addr: String,
        /// The call's own timeout (for a deadline: the time it had left
        /// when the call began).
        timeout: Duration,
        /// What the call was doing when its time ran out.
        stage: TimeoutStage,
    },

    /// The server answered the call with an error (unknown method, a body
    /// that does not decode, a handle timeout, or the handler's own error).
    ///
    /// `code` says why when the server, not the handler, refused the call
    /// (PROTOCOL.md section 8); `None` for the handler's own error and for
    /// peers that send no code (Go GeeRPC). With
    /// [`Code::Unavailable`](crate::Code::Unavailable) or
    /// [`Code::ResourceExhausted`](crate::Code::ResourceExhausted) the call
    /// was NOT processed: see [`Error::is_retryable`]. Match the kind
    /// of error with [`Error::remote_kind`].
    #[error("{message}")]
    Remote {
        /// `Service.Method` of the call.
        method: String,
        /// The error text the server sent (what Go peers expect).
        message: String,
        /// The reply's `Code`, if any.
        code: Option<crate::Code>,
    },

    /// The connection is closed or broke; the call may or may not have run.
    #[error("connection to {addr} closed: {reason}")]
    ConnectionClosed {
        /// The peer.
        addr: String,
        /// Why it closed.
        reason: String,
    },

    /// The connection had closed before the call: it was never sent, so it
    /// is safe to send elsewhere.
    #[error("connection to {addr} is closed ({reason}); the call to {method} was not sent")]
    NotSent {
        /// The peer.
        addr: String,
        /// `Service.Method` of the call.
        method: String,
        /// Why the connection closed.
        reason: String,
    },

    /// A message was larger than the configured maximum.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge {
        /// The size seen (or at least seen so far).
        size: usize,
        /// The configured maximum.
        limit: usize,
    },

    /// A value could not be encoded.
    #[error("encode {what}: {message}")]
    Encode {
        /// What was being encoded.
        what: String,
        /// The codec's message.
        message: String,
    },

    /// A value could not be decoded.
    #[error("decode {what}: {message}")]
    Decode {
        /// What was being decoded.
        what: String,
        /// The codec's message.
        message: String,
    },

    /// The peer broke the wire protocol (bad magic number, unknown codec,
    /// malformed frame).
    #[error("protocol error: {0}")]
    Protocol(String),

    /// A service or method name is not a valid identifier.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A [`Meta`](crate::Meta) key or size broke the rules of PROTOCOL.md
    /// section 8.
    #[error("invalid metadata: {reason}")]
    InvalidMeta {
        /// What is wrong.
        reason: String,
    },

    /// A service of that name is registered already.
    #[error("rpc: service already defined: {0}")]
    DuplicateService(String),

    /// Discovery has no instance to offer.
    #[error("rpc discovery: no available servers{}", service.as_ref().map(|s| format!(" for service {s}")).unwrap_or_default())]
    NoServers {
        /// The service asked for, if any.
        service: Option<String>,
    },

    /// A registry or etcd request failed.
    #[error("registry {url}: {message}")]
    Registry {
        /// The URL asked.
        url: String,
        /// What went wrong.
        message: String,
    },

    /// The client or server was shut down.
    #[error("{0} is shut down")]
    Shutdown(&'static str),

    /// Any other I/O failure, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether the request certainly never reached a server, so that sending
    /// it elsewhere cannot run it twice.
    pub fn is_not_sent(&self) -> bool {
        matches!(
            self,
            Error::InvalidAddress { .. }
                | Error::Connect { .. }
                | Error::ConnectTimeout { .. }
                | Error::HttpConnect { .. }
                | Error::NotSent { .. }
                | Error::NoServers { .. }
                | Error::Shutdown(_)
        )
    }

    /// Why the call failed, as a [`Code`](crate::Code) a program can
    /// match, for every error (gRPC's mapping of client-side failures):
    ///
    /// - [`Error::Remote`]: the code the server sent; a handler's own error
    ///   without one (and any error from a Go peer) is
    ///   [`Code::Unknown`](crate::Code::Unknown), except Go's stable texts
    ///   (see [`RemoteKind`](crate::RemoteKind)), which get the code a
    ///   geerpc server would have sent;
    /// - [`Error::Timeout`], [`Error::ConnectTimeout`]: `deadline_exceeded`;
    /// - never sent ([`is_not_sent`](Error::is_not_sent)) for want of a
    ///   server: `unavailable`;
    /// - a connection that closed with the call in flight, and other I/O
    ///   failures: `unknown` (the call may have run);
    /// - bad input of the caller's (address, name, metadata, a value that
    ///   does not encode, a message over the limit): `invalid_argument`;
    /// - a reply that does not decode, a broken protocol: `internal`.
    ///
    /// ```
    /// use geerpc::{Code, Error};
    /// let e = Error::NoServers { service: None };
    /// assert_eq!(e.code(), Code::Unavailable);
    /// assert!(e.is_retryable());
    /// ```
    pub fn code(&self) -> crate::Code {
        use crate::Code;
        match self {
            Error::Remote { code: Some(c), .. } => c.clone(),
            Error::Remote { .. } => match self.remote_kind() {
                Some(crate::RemoteKind::UnknownService | crate::RemoteKind::UnknownMethod) => {
                    Code::NotFound
                }
                Some(crate::RemoteKind::HandleTimeout) => Code::DeadlineExceeded,
                _ => Code::Unknown,
            },
            Error::Timeout { .. } | Error::ConnectTimeout { .. } => Code::DeadlineExceeded,
            Error::Connect { .. }
            | Error::HttpConnect { .. }
            | Error::NotSent { .. }
            | Error::NoServers { .. }
            | Error::Shutdown(_)
            | Error::Registry { .. } => Code::Unavailable,
            Error::InvalidAddress { .. }
            | Error::InvalidName { .. }
            | Error::InvalidMeta { .. }
            | Error::Encode { .. }
            | Error::MessageTooLarge { .. } => Code::InvalidArgument,
            Error::DuplicateService(_) => Code::AlreadyExists,
            Error::Decode { .. } | Error::Protocol(_) => Code::Internal,
            Error::ConnectionClosed { .. } | Error::Io { .. } => Code::Unknown,
        }
    }

    /// The `Code` field of the server's reply, for an [`Error::Remote`]
    /// that carries one (`None` for a handler's own error without a code,
    /// for Go peers, and for errors that are not replies).
    pub fn remote_code(&self) -> Option<&crate::Code> {
        match self {
            Error::Remote { code, .. } => code.as_ref(),
            _ => None,
        }
    }

    /// The kind of error the server answered with, for an
    /// [`Error::Remote`]: match this rather than the text, e.g.
    /// `Some(RemoteKind::UnknownMethod)`. See [`RemoteKind`](crate::RemoteKind)
    /// for how a reply without a code (a Go peer's) is classified.
    pub fn remote_kind(&self) -> Option<crate::RemoteKind> {
        match self {
            Error::Remote { message, code, .. } => {
                Some(crate::RemoteKind::classify(code.as_ref(), message))
            }
            _ => None,
        }
    }

    /// Whether the call certainly did not run, so that sending it to
    /// another instance cannot run it twice, even when it is not
    /// idempotent: true exactly when [`code`](Error::code) is one of the
    /// not-processed codes, `unavailable` and `resource_exhausted`
    /// ([`Code::may_retry_elsewhere`](crate::Code::may_retry_elsewhere)).
    /// That is: it never reached a server
    /// ([`is_not_sent`](Error::is_not_sent), bad addresses aside), or the
    /// server refused it before its handler ran, going away or over a
    /// limit.
    pub fn is_retryable(&self) -> bool {
        self.code().may_retry_elsewhere()
    }
}

/// What a call was doing when its timeout ran out ([`Error::Timeout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TimeoutStage {
    /// Waiting for another caller's dial of the same instance (XClient).
    PoolWait,
    /// Connecting and sending the handshake.
    Dial,
    /// Waiting for room in the connection's send queue, or writing the
    /// request to a peer that does not read fast enough. The request may
    /// still go out later (the connection is kept; see `Client`).
    Write,
    /// Waiting for the reply to a request that was written.
    Reply,
}

impl std::fmt::Display for TimeoutStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimeoutStage::PoolWait => "waiting for the connection another call is dialling",
            TimeoutStage::Dial => "dialling",
            TimeoutStage::Write => "writing the request",
            TimeoutStage::Reply => "waiting for the reply",
        })
    }
}

/// Shorthand for `Result<T, geerpc::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
