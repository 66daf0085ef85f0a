//! The registry's credentials (PROTOCOL.md section 7): a write token that
//! `POST` and `DELETE` must carry, and an optional read token that every
//! `GET` (the list, the JSON listing, long polls, heartbeat holds) must
//! carry, as `Authorization: Bearer TOKEN`. Either is checked before the
//! request is looked at any further, so a refused request changes nothing
//! and parks nothing.
//!
//! The write token is accepted for reads too: a server that may register
//! may also read (its heartbeat holds a `GET`), and a deployment then
//! hands one secret to its servers and, if reads are closed, another to
//! its clients. Without tokens every request passes, as Go peers expect.
//!
//! A refusal is `401` with `WWW-Authenticate: Bearer` and a short body
//! that says whether the token was missing or wrong, never what was sent;
//! it is logged at debug each time and at warn once per episode (see
//! `limits::RefusalLog`), naming the method and the peer, never a token.

use tiny_http::{Method, Request};

use crate::util::token::Token;

/// The tokens a registry asks for; both `None`: open, as before.
#[derive(Debug, Clone, Default)]
pub(in crate::registry) struct Auth {
    pub(in crate::registry) write: Option<Token>,
    pub(in crate::registry) read: Option<Token>,
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    Missing,
    Wrong,
}

impl Auth {
    /// Whether any request needs a token at all (the fast path skips the
    /// header search otherwise).
    fn is_open(&self) -> bool {
        self.write.is_none() && self.read.is_none()
    }

    /// Checks `rq`'s `Authorization` against the token its method needs.
    pub(super) fn check(&self, rq: &Request) -> Result<(), Refusal> {
        if self.is_open() {
            return Ok(());
        }
        let read = matches!(rq.method(), Method::Get | Method::Head);
        // Methods the registry does not serve (405) change nothing: let
        // them through to their 405. Reads need a token only if a read
        // token is set; then the write token is accepted too.
        let (first, second) = if read {
            match &self.read {
                None => return Ok(()),
                Some(r) => (Some(r), self.write.as_ref()),
            }
        } else if matches!(rq.method(), Method::Post | Method::Delete) {
            match &self.write {
                None => return Ok(()),
                Some(w) => (Some(w), None),
            }
        } else {
            return Ok(());
        };
        let presented = rq
            .headers()
            .iter()
            .find(|h| h.field.equiv("Authorization"))
            .map(|h| h.value.as_str());
        let Some(presented) = presented else {
            return Err(Refusal::Missing);
        };
        // Both tokens are compared (no early exit), each in constant time.
        let ok = [first, second]
            .into_iter()
            .flatten()
            .fold(false, |ok, t| t.matches_bearer(presented) | ok);
        if ok {
            Ok(())
        } else {
            Err(Refusal::Wrong)
        }
    }
}

impl Refusal {
    /// The `401`'s body: what was wrong and what to send, never a token.
    pub(super) fn message(self, method: &Method) -> String {
        let which = if matches!(method, Method::Get | Method::Head) {
            "read"
        } else {
            "write"
        };
        match self {
            Refusal::Missing => format!(
                "401 {method} needs the registry's {which} token: Authorization: Bearer TOKEN\n"
            ),
            Refusal::Wrong => format!("401 {method}: wrong bearer token for the registry\n"),
        }
    }
}
