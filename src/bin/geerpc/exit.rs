//! What a failed `geerpc` command tells its caller: one exit code per kind
//! of failure (the table below, printed by `geerpc --help`), the message,
//! and hints at the likely cause. Knows the library's `Error` but nothing
//! of the commands.

use std::fmt;
use std::process::ExitCode;

use geerpc::{Code, Error, TimeoutStage};

/// The exit codes, as `geerpc --help` and the README show them. Scripts
/// may rely on them: a code never changes meaning, new kinds get new codes.
pub const TABLE: &str = "\
Exit codes:
  0  ok: the call returned (its JSON reply is on stdout), or the command succeeded
  1  the method ran and returned an error (the handler's own error)
  2  usage: an unknown flag, a bad value, arguments that are not JSON
  3  unreachable: no connection to any instance; the call was not sent
     (or the connection broke before the reply)
  4  timeout: the call was sent but no reply came within --timeout
     (or the server's handle timeout ran out)
  5  discovery: the registry or etcd failed, or lists no instance of the service
  6  not found: the server has no such service or method
  7  bad argument: the server could not decode the arguments
  8  not a geerpc server: the peer speaks another protocol (HTTP, TLS)
  9  unavailable: every instance refused the call unprocessed (draining, overloaded)
 10  any other failure (local I/O, a limit of this client)";

/// One kind of failure, and its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Handler = 1,
    Usage = 2,
    Unreachable = 3,
    Timeout = 4,
    Discovery = 5,
    NotFound = 6,
    BadArgument = 7,
    NotGeerpc = 8,
    Unavailable = 9,
    Other = 10,
}

impl Kind {
    /// The kind of a library error met while calling.
    pub fn of(e: &Error) -> Kind {
        match e {
            Error::Remote { code, message, .. } => match code {
                Some(Code::NotFound) => Kind::NotFound,
                Some(Code::InvalidArgument) => Kind::BadArgument,
                Some(Code::DeadlineExceeded) => Kind::Timeout,
                Some(c) if c.may_retry_elsewhere() => Kind::Unavailable,
                // Go GeeRPC peers send no code; their text is the article's.
                None if message.starts_with("rpc server: can't find") => Kind::NotFound,
                _ => Kind::Handler,
            },
            Error::Timeout {
                stage: TimeoutStage::Dial | TimeoutStage::PoolWait,
                ..
            } => Kind::Unreachable,
            Error::Timeout { .. } => Kind::Timeout,
            Error::ConnectionClosed { reason, .. } | Error::NotSent { reason, .. }
                if reason.starts_with("protocol error") =>
            {
                Kind::NotGeerpc
            }
            Error::Connect { .. }
            | Error::ConnectTimeout { .. }
            | Error::ConnectionClosed { .. }
            | Error::NotSent { .. } => Kind::Unreachable,
            Error::HttpConnect { .. } | Error::Protocol(_) | Error::Decode { .. } => {
                Kind::NotGeerpc
            }
            Error::NoServers { .. } | Error::Registry { .. } => Kind::Discovery,
            Error::InvalidAddress { .. } | Error::InvalidName { .. } => Kind::Usage,
            _ => Kind::Other,
        }
    }
}

/// A failed command: what to print, and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub kind: Kind,
    pub message: String,
    pub hints: Vec<String>,
}

impl Failure {
    pub fn new(kind: Kind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
            hints: Vec::new(),
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Failure {
        self.hints.push(hint.into());
        self
    }

    /// A failure of a call to `addr` (or, for `Error::NoServers`, of
    /// discovery), with hints at the likely cause.
    pub fn call(e: &Error, addr: &str) -> Failure {
        let kind = Kind::of(e);
        let mut f = Failure::new(kind, e.to_string());
        let text = f.message.clone();
        if text.contains("answered in HTTP") {
            f = f.hint(format!(
                "is {addr} a registry's port? `geerpc list --registry URL` shows \
                 the RPC servers' addresses"
            ));
        } else if text.contains("TLS") && kind == Kind::NotGeerpc {
            f = f
                .hint("geerpc speaks plain TCP: give the RPC server's own port, not a TLS front's");
        } else if let Error::HttpConnect { .. } = e {
            f = f.hint(format!(
                "{addr} answers HTTP but refused the RPC CONNECT (to /_geerpc_): \
                 is it a geerpc server's port?"
            ));
        } else if kind == Kind::Unreachable && text.contains("refused") {
            f = f.hint(format!("is a server listening on {addr}?"));
        } else if kind == Kind::Timeout && matches!(e, Error::Timeout { .. }) {
            f = f.hint("the server did not answer in time: a slow method needs a longer --timeout");
        }
        f
    }

    /// A failure to ask the registry at `url` (exit code 5), with hints at
    /// the likely cause: TLS, a missing path, nothing listening.
    pub fn registry(e: &Error, url: &str) -> Failure {
        let mut f = Failure::new(Kind::Discovery, e.to_string());
        let text = f.message.clone();
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let path = rest.find('/').map_or("", |i| &rest[i..]);
        // A registry serves HTTPS only when started with --tls-cert: an
        // https:// URL that got no answer (not a certificate it distrusts,
        // not an HTTP status) most likely reached a plain HTTP one.
        let cert_failed = text.contains("certificate") || text.contains("UnknownIssuer");
        let answered = text.contains("status ");
        if url.starts_with("https://") && !cert_failed && !answered {
            f = f.hint(format!(
                "the URL is https://, but a registry started without --tls-cert serves plain HTTP: try http://{rest}"
            ));
        }
        if url.starts_with("https://") && cert_failed {
            f = f.hint("the registry's certificate is not trusted: --tls-ca FILE names its CA");
        }
        if text.contains("status 401") {
            f = f.hint(
                "the registry wants a bearer token: --registry-token-file FILE \
                 (its read token, or its write token)",
            );
        }
        if path.is_empty() || path == "/" {
            f = f.hint(format!(
                "a registry URL names the registry's path: http://{}/_geerpc_/registry \
                 (`geerpc registry` prints its URL)",
                rest.trim_end_matches('/')
            ));
        } else if text.contains("404") && !path.ends_with("/registry") {
            f = f.hint("the registry's path is /_geerpc_/registry (or /_rpc_/registry)");
        }
        if text.contains("refused") {
            let host = rest.split('/').next().unwrap_or(rest);
            f = f.hint(format!(
                "is a registry running on {host}? (`geerpc registry --addr {host}`)"
            ));
        }
        f
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.kind as u8)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "geerpc: {}", self.message)?;
        for h in &self.hints {
            write!(f, "\nhint: {h}")?;
        }
        Ok(())
    }
}

/// Local failures (I/O on stdout, a signal handler that cannot be set).
impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        Failure::new(Kind::Other, e.to_string())
    }
}
