//! [`BearerAuth`]: a ready-made authenticator for
//! [`ServerBuilder::authenticator`](super::ServerBuilder::authenticator).
//! A call proves who it is by a bearer token in its `Meta`
//! (`authorization: Bearer TOKEN`, PROTOCOL.md section 8) or, without
//! one, by its connection's verified TLS identity; each named credential
//! may call what its allow list names.
//!
//! Secrets stay secret: tokens are compared in constant time, every
//! configured one on each call (so the time taken depends on the tokens'
//! lengths, not on whether or which one matched), and no message or log
//! line holds a presented or a configured token, only a credential's
//! name.

use std::fmt;

use super::intercept::Interceptor;
use crate::context::{Context, Status};
use crate::meta::AUTHORIZATION;
use crate::util::token::Token;

/// What one credential may call: `"*"` (everything), `"Service"` (all
/// its methods) or `"Service.Method"` (that one).
#[derive(Debug, Clone)]
struct Allow(Vec<String>);

impl Allow {
    fn new<S: Into<String>>(list: impl IntoIterator<Item = S>) -> Allow {
        Allow(list.into_iter().map(Into::into).collect())
    }

    /// Whether `service_method` is allowed. The service is what comes
    /// before the last `.`, as the server finds it (`Server::find`).
    fn allows(&self, service_method: &str) -> bool {
        let service = service_method
            .rsplit_once('.')
            .map_or(service_method, |(s, _)| s);
        self.0
            .iter()
            .any(|a| a == "*" || a == service_method || a == service)
    }
}

/// A named token and what it may call.
struct TokenRule {
    name: String,
    token: Token,
    allow: Allow,
}

/// A verified identity (a subject or an alternative name) and what it
/// may call.
struct IdentityRule {
    name: String,
    allow: Allow,
}

/// Who a call proved to be, or why it proved nothing.
enum Caller<'a> {
    Token(&'a TokenRule),
    Identity(&'a IdentityRule),
    /// An `authorization` that matches no token (or is no bearer value).
    InvalidToken,
    /// No `authorization`, and no identity this authenticator knows.
    Missing,
}

/// An authenticator by bearer token or verified identity, with allow
/// lists: install it with
/// [`ServerBuilder::authenticator`](super::ServerBuilder::authenticator).
///
/// For each call:
/// - with an `authorization` in its `Meta`: the token it carries must be
///   one of those given with [`token`](BearerAuth::token), else the call
///   is refused `unauthenticated` ("invalid token"). A wrong token is
///   refused even on a connection whose identity would do: a credential
///   presented is the one that counts.
/// - without one: the connection's verified identity
///   ([`Context::identity`], from a TLS client certificate) must match
///   one given with [`identity`](BearerAuth::identity), else the call is
///   refused `unauthenticated` ("missing credentials").
/// - the credential found must allow the method, else the call is
///   refused `permission_denied`, naming the method and the credential's
///   name (never a token).
///
/// Each refusal is logged once at debug level (peer, method, reason;
/// never a token). The handler of a refused call never runs, and the
/// call counts as a failed one in the method's stats.
///
/// Tokens are checked in constant time, and all of them on every call;
/// the cost is a comparison per configured token, so keep their number
/// small (tens, not thousands).
///
/// ```
/// use geerpc::server::BearerAuth;
/// use geerpc::{CallOptions, Client, Code, Server, Service, Token};
///
/// // Tokens come from files or the environment (Token::from_file,
/// // Token::from_env), never from a command line.
/// let admin = Token::new("admin-token-123")?;
/// let reader = Token::new("reader-token-456")?;
/// let auth = BearerAuth::new()
///     .token("admin", admin.clone(), ["*"])
///     .token("reader", reader.clone(), ["Users.Get", "Health"]);
/// let server = Server::builder().authenticator(auth).build();
/// server.register(
///     Service::new("Users")
///         .method("Get", |id: u64| Ok::<_, String>(format!("user {id}")))
///         .method("Delete", |_id: u64| Ok::<_, String>(true)),
/// )?;
/// let running = server.listen("tcp@127.0.0.1:0")?;
///
/// // Every call of this client carries the reader's token.
/// let client = Client::builder().bearer(&reader)?.dial(running.addr())?;
/// assert_eq!(client.call::<_, String>("Users.Get", &7)?, "user 7");
/// let denied = client.call::<_, bool>("Users.Delete", &7).unwrap_err();
/// assert_eq!(denied.code(), Code::PermissionDenied);
///
/// // One call with another token.
/// let as_admin = CallOptions::new().bearer(&admin)?;
/// assert!(client.call_with::<_, bool>("Users.Delete", &7, &as_admin)?);
///
/// // No token at all.
/// let anonymous = Client::dial(running.addr())?;
/// let refused = anonymous.call::<_, String>("Users.Get", &7).unwrap_err();
/// assert_eq!(refused.code(), Code::Unauthenticated);
/// # Ok::<(), geerpc::Error>(())
/// ```
#[derive(Default)]
pub struct BearerAuth {
    tokens: Vec<TokenRule>,
    identities: Vec<IdentityRule>,
}

impl fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names only: a token's value never shows.
        let tokens: Vec<_> = self.tokens.iter().map(|t| &t.name).collect();
        let identities: Vec<_> = self.identities.iter().map(|i| &i.name).collect();
        f.debug_struct("BearerAuth")
            .field("tokens", &tokens)
            .field("identities", &identities)
            .finish()
    }
}

impl BearerAuth {
    /// An authenticator that knows no credential yet: it refuses every
    /// call `unauthenticated`.
    pub fn new() -> BearerAuth {
        BearerAuth::default()
    }

    /// Accepts `token`, known as `name` (what refusals, logs and
    /// [`caller`](BearerAuth::caller) say), for what `allow` names:
    /// `"*"` for everything, `"Service"` for all of a service's methods,
    /// `"Service.Method"` for one method. An empty list authenticates
    /// the caller but lets it call nothing (`permission_denied`). If two
    /// rules hold the same token, the first one added counts.
    pub fn token<S: Into<String>>(
        mut self,
        name: impl Into<String>,
        token: Token,
        allow: impl IntoIterator<Item = S>,
    ) -> BearerAuth {
        self.tokens.push(TokenRule {
            name: name.into(),
            token,
            allow: Allow::new(allow),
        });
        self
    }

    /// Accepts a call without a token whose connection verified an
    /// [`Identity`](crate::context::Identity) with `name` as its subject
    /// (`CN=billing`, exactly as [`Identity::subject`] gives it) or as one
    /// of its alternative names (`billing.internal`), for what `allow`
    /// names (as for [`token`](BearerAuth::token)). Only a transport that
    /// verified the peer sets an identity (mutual TLS); on other
    /// connections these rules never match. If two rules match, the first
    /// one added counts.
    ///
    /// [`Identity::subject`]: crate::context::Identity::subject
    pub fn identity<S: Into<String>>(
        mut self,
        name: impl Into<String>,
        allow: impl IntoIterator<Item = S>,
    ) -> BearerAuth {
        self.identities.push(IdentityRule {
            name: name.into(),
            allow: Allow::new(allow),
        });
        self
    }

    /// The name of the credential `ctx`'s call proved (a token's name or
    /// the identity rule's), whether or not it allows the method; `None`
    /// if it proved none. A handler that needs to know who called can
    /// ask the authenticator it shares (install an `Arc` of it and keep a
    /// clone): this checks the token again, at the same cost as the
    /// authenticator's check.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use geerpc::server::BearerAuth;
    /// use geerpc::{Context, Meta, Token};
    ///
    /// let auth = Arc::new(BearerAuth::new().token("ci", Token::new("t0k")?, ["*"]));
    /// let ctx = Context::new("Build.Run", "127.0.0.1:40000")
    ///     .with_meta(Meta::new().with("authorization", "Bearer t0k")?);
    /// assert_eq!(auth.caller(&ctx), Some("ci"));
    /// # Ok::<(), geerpc::Error>(())
    /// ```
    pub fn caller(&self, ctx: &Context) -> Option<&str> {
        match self.find(ctx) {
            Caller::Token(t) => Some(&t.name),
            Caller::Identity(i) => Some(&i.name),
            Caller::InvalidToken | Caller::Missing => None,
        }
    }

    /// Who `ctx`'s call proved to be.
    fn find(&self, ctx: &Context) -> Caller<'_> {
        if let Some(value) = ctx.meta().get(AUTHORIZATION) {
            // Every token is compared, whatever matched before, so that
            // the time taken tells nothing of which one (if any) did.
            let mut found = None;
            for rule in &self.tokens {
                let hit = rule.token.matches_bearer(value);
                if hit && found.is_none() {
                    found = Some(rule);
                }
            }
            return found.map_or(Caller::InvalidToken, Caller::Token);
        }
        let Some(id) = ctx.identity() else {
            return Caller::Missing;
        };
        self.identities
            .iter()
            .find(|r| id.subject() == r.name || id.has_name(&r.name))
            .map_or(Caller::Missing, Caller::Identity)
    }
}

impl Interceptor for BearerAuth {
    fn before(&self, ctx: &Context) -> Result<(), Status> {
        let method = ctx.service_method();
        let (kind, name, allow) = match self.find(ctx) {
            Caller::Token(t) => ("token", &t.name, &t.allow),
            Caller::Identity(i) => ("identity", &i.name, &i.allow),
            Caller::InvalidToken => {
                return Err(refuse(
                    ctx,
                    Status::unauthenticated(format!("rpc server: {method}: invalid token")),
                ))
            }
            Caller::Missing => {
                return Err(refuse(
                    ctx,
                    Status::unauthenticated(format!(
                        "rpc server: {method}: missing credentials (a bearer token in Meta \
                     \"authorization\", or a known client certificate)"
                    )),
                ))
            }
        };
        if allow.allows(method) {
            return Ok(());
        }
        Err(refuse(
            ctx,
            Status::permission_denied(format!(
                "rpc server: {method}: {kind} {name:?} may not call it"
            )),
        ))
    }
}

/// Logs a refusal once (its message holds no secret) and returns it.
fn refuse(ctx: &Context, status: Status) -> Status {
    log::debug!(
        "rpc server: {}: refused {}: {}",
        ctx.peer(),
        status.code().as_str(),
        status.message()
    );
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code::Code;
    use crate::context::Identity;
    use crate::meta::Meta;

    fn call(method: &str, authorization: Option<&str>) -> Context {
        let ctx = Context::new(method, "127.0.0.1:1");
        match authorization {
            Some(a) => ctx.with_meta(Meta::new().with(AUTHORIZATION, a).unwrap()),
            None => ctx,
        }
    }

    fn code(r: Result<(), Status>) -> Option<Code> {
        r.err().map(|s| s.code().clone())
    }

    #[test]
    fn allow_lists_name_everything_a_service_or_a_method() {
        let a = Allow::new(["Arith", "Echo.Echo"]);
        assert!(a.allows("Arith.Sum") && a.allows("Arith.Mul"));
        assert!(a.allows("Echo.Echo") && !a.allows("Echo.Other"));
        assert!(!a.allows("Arithm.Sum") && !a.allows("Ari.Sum"));
        assert!(Allow::new(["*"]).allows("Any.Thing"));
        assert!(!Allow::new(Vec::<String>::new()).allows("Arith.Sum"));
        // The service is what comes before the last dot, as the server
        // finds it.
        assert!(Allow::new(["a.b"]).allows("a.b.Run"));
    }

    #[test]
    fn identities_count_only_without_a_token() {
        let auth = BearerAuth::new()
            .token("t", Token::new("tok").unwrap(), ["*"])
            .identity("billing.internal", ["Bill"]);
        let id = Identity::new("CN=billing", vec!["billing.internal".into()]);
        let ctx = call("Bill.Pay", None).with_identity(id.clone());
        assert_eq!(code(auth.before(&ctx)), None);
        assert_eq!(auth.caller(&ctx), Some("billing.internal"));
        let other = call("Arith.Sum", None).with_identity(id.clone());
        assert_eq!(code(auth.before(&other)), Some(Code::PermissionDenied));
        // A wrong token is refused even with a good identity.
        let wrong = call("Bill.Pay", Some("Bearer nope")).with_identity(id);
        assert_eq!(code(auth.before(&wrong)), Some(Code::Unauthenticated));
        // An identity nobody listed proves nothing.
        let stranger = call("Bill.Pay", None).with_identity(Identity::new("CN=x", vec![]));
        assert_eq!(code(auth.before(&stranger)), Some(Code::Unauthenticated));
        let by_subject = BearerAuth::new().identity("CN=billing", ["*"]);
        let ctx = call("Bill.Pay", None).with_identity(Identity::new("CN=billing", vec![]));
        assert_eq!(by_subject.caller(&ctx), Some("CN=billing"));
    }

    #[test]
    fn the_first_rule_with_a_token_counts_and_debug_hides_tokens() {
        let auth = BearerAuth::new()
            .token("first", Token::new("same").unwrap(), ["A"])
            .token("second", Token::new("same").unwrap(), ["*"]);
        let ctx = call("B.Run", Some("Bearer same"));
        assert_eq!(auth.caller(&ctx), Some("first"));
        let e = auth.before(&ctx).unwrap_err();
        assert_eq!(e.code(), &Code::PermissionDenied);
        assert!(e.message().contains("\"first\"") && e.message().contains("B.Run"));
        assert!(!e.message().contains("same"), "{}", e.message());
        let shown = format!("{auth:?}");
        assert!(
            shown.contains("first") && !shown.contains("same"),
            "{shown}"
        );
        assert_eq!(auth.caller(&call("B.Run", Some("Basic same"))), None);
    }
}
