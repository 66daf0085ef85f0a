//! Services: named groups of typed methods, reachable as `Service.Method`.

use std::any::{type_name, Any};
use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::code::Code;
use crate::context::{Context, Status};
use crate::error::{Error, Result};
use crate::server::stats::{MethodStats, StatsSnapshot};
use crate::wire::codec::{Body, Codec};

/// Why a call failed on the server before or inside its handler.
pub(crate) enum CallFailure {
    /// The body did not decode into the argument type; the handler did not run.
    BadArgument(String),
    /// The handler returned an error (or the reply did not encode): its
    /// text, and its code if it had one (see [`code_of`]).
    Failed(String, Option<Code>),
}

/// The code a handler's error gives its reply: a [`Status`]'s code; for a
/// [`geerpc::Error`](Error) of a call the handler made, what
/// `Status::from` keeps of it (`deadline_exceeded` and `cancelled` pass
/// through); none for any other error (the handler's own, as Go's are).
/// `unknown` is never sent (PROTOCOL.md section 8), so it is none too.
pub(crate) fn code_of<E: Any>(e: &E) -> Option<Code> {
    let e: &dyn Any = e;
    // A boxed error (`?` into `Box<dyn Error>`) is looked into once.
    type Boxed = Box<dyn std::error::Error + Send + Sync>;
    let inner = e.downcast_ref::<Boxed>();
    let status = e
        .downcast_ref::<Status>()
        .or_else(|| inner.and_then(|b| b.downcast_ref::<Status>()));
    let error = e
        .downcast_ref::<Error>()
        .or_else(|| inner.and_then(|b| b.downcast_ref::<Error>()));
    let code = if let Some(s) = status {
        s.code().clone()
    } else if let Some(err) = error {
        match err.code() {
            c @ (Code::DeadlineExceeded | Code::Cancelled) => c,
            _ => return None,
        }
    } else {
        return None;
    };
    (code != Code::Unknown).then_some(code)
}

type Handler = dyn Fn(&Context, Codec, Body<'_>, &mut Vec<u8>) -> std::result::Result<(), CallFailure>
    + Send
    + Sync;

/// One registered method: its erased handler, type names and counters.
pub(crate) struct Method {
    pub(crate) handler: Box<Handler>,
    pub(crate) arg_type: &'static str,
    pub(crate) reply_type: &'static str,
    pub(crate) stats: MethodStats,
}

/// A named set of methods, built up and then given to
/// [`Server::register`](crate::Server::register).
///
/// Each method takes its argument type (anything serde can deserialize) and
/// returns `Result<Reply, E>` for any serializable `Reply` and any displayable
/// `E`; the error's text reaches the client as [`Error::Remote`]. A
/// [`Status`] error also gives the reply its [`Code`] (the caller reads it
/// with [`Error::remote_code`]); so does a [`geerpc::Error`](Error) of a call
/// the handler made, when it is `deadline_exceeded` or `cancelled` (the
/// budget they share ran out). Any other error travels without a code, as a
/// Go handler's does.
///
/// ```
/// use geerpc::{Context, Service};
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// #[serde(rename_all = "PascalCase")]
/// struct Args { num1: i64, num2: i64 }
///
/// let arith = Service::new("Arith")
///     .method("Sum", |a: Args| Ok::<_, String>(a.num1 + a.num2))
///     .method("Div", |a: Args| {
///         if a.num2 == 0 { Err("divide by zero") } else { Ok(a.num1 / a.num2) }
///     })
///     .method_with_context("Who", |ctx: &Context, _: ()| Ok::<_, String>(ctx.peer().to_string()));
/// assert_eq!(arith.name(), "Arith");
/// assert_eq!(arith.method_names(), ["Div", "Sum", "Who"]);
/// ```
pub struct Service {
    pub(crate) name: String,
    pub(crate) methods: BTreeMap<String, Arc<Method>>,
    /// The first invalid or duplicate method name, reported at registration.
    pub(crate) invalid: Option<Error>,
}

/// Checks a service or method name: non-empty, letters, digits and `_` only
/// (in particular no `.`, which separates the two on the wire).
pub(crate) fn check_name(name: &str, what: &str) -> Result<()> {
    let reason = if name.is_empty() {
        format!("empty {what} name")
    } else if name.contains('.') {
        format!("{what} name must not contain '.'")
    } else if !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
        format!("{what} name must be letters, digits and '_'")
    } else {
        return Ok(());
    };
    Err(Error::InvalidName {
        name: name.to_string(),
        reason,
    })
}

impl Service {
    /// Starts a service called `name`.
    pub fn new(name: impl Into<String>) -> Service {
        let name = name.into();
        let invalid = check_name(&name, "service").err();
        Service {
            name,
            methods: BTreeMap::new(),
            invalid,
        }
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The method names, sorted.
    pub fn method_names(&self) -> Vec<&str> {
        self.methods.keys().map(String::as_str).collect()
    }

    /// Adds a method that needs only its argument.
    pub fn method<A, R, E, F>(self, name: &str, f: F) -> Service
    where
        A: DeserializeOwned,
        R: Serialize,
        E: Display + 'static,
        F: Fn(A) -> std::result::Result<R, E> + Send + Sync + 'static,
    {
        self.method_with_context(name, move |_: &Context, a: A| f(a))
    }

    /// Adds a method that also sees the call's [`Context`] (deadline, peer).
    pub fn method_with_context<A, R, E, F>(mut self, name: &str, f: F) -> Service
    where
        A: DeserializeOwned,
        R: Serialize,
        E: Display + 'static,
        F: Fn(&Context, A) -> std::result::Result<R, E> + Send + Sync + 'static,
    {
        if let Err(e) = check_name(name, "method") {
            self.invalid.get_or_insert(e);
            return self;
        }
        if self.methods.contains_key(name) {
            self.invalid.get_or_insert(Error::InvalidName {
                name: format!("{}.{name}", self.name),
                reason: "method defined twice".to_string(),
            });
            return self;
        }
        let qualified = format!("{}.{name}", self.name);
        let handler = move |ctx: &Context, codec: Codec, body: Body<'_>, out: &mut Vec<u8>| {
            let args: A = codec.decode_body(body, "argument").map_err(|e| {
                CallFailure::BadArgument(format!(
                    "rpc server: cannot decode argument of {qualified} as {}: {e}",
                    type_name::<A>()
                ))
            })?;
            let reply =
                f(ctx, args).map_err(|e| CallFailure::Failed(e.to_string(), code_of(&e)))?;
            // A reply that does not encode is the server's failure, not the
            // handler's: `internal`, with the text it always had.
            codec
                .encode_into(out, &reply, "reply")
                .map_err(|e| CallFailure::Failed(format!("rpc server: {e}"), Some(Code::Internal)))
        };
        self.methods.insert(
            name.to_string(),
            Arc::new(Method {
                handler: Box::new(handler),
                arg_type: type_name::<A>(),
                reply_type: type_name::<R>(),
                stats: MethodStats::default(),
            }),
        );
        self
    }
}

/// Names listed in an error text at most (`and N more` after them).
const LISTED_NAMES: usize = 16;
/// Bytes of names listed in an error text at most: a peer's typo must not
/// earn it a reply the size of the whole server.
const LISTED_BYTES: usize = 400;

/// `(KIND: A, B and N more)`, sorted, bounded by [`LISTED_NAMES`] and
/// [`LISTED_BYTES`]; `(no KIND)` if there are none. For the error text a
/// peer gets for an unknown service or method.
pub(crate) fn name_list<'a>(kind: &str, names: impl Iterator<Item = &'a str>) -> String {
    let mut names: Vec<&str> = names.collect();
    if names.is_empty() {
        return format!("(no {kind})");
    }
    names.sort_unstable();
    let mut out = format!("({kind}: ");
    let mut listed = 0;
    let mut bytes = 0;
    for name in &names {
        if listed == LISTED_NAMES || bytes + name.len() > LISTED_BYTES {
            break;
        }
        if listed > 0 {
            out.push_str(", ");
        }
        out.push_str(name);
        listed += 1;
        bytes += name.len();
    }
    if listed < names.len() {
        if listed > 0 {
            out.push(' ');
        }
        out.push_str(&format!("and {} more", names.len() - listed));
    }
    out.push(')');
    out
}

/// What the server knows of one method, for the debug page.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MethodInfo {
    /// The method's name (without the service).
    pub name: String,
    /// The Rust type name of the argument.
    pub arg_type: &'static str,
    /// The Rust type name of the reply.
    pub reply_type: &'static str,
    /// Calls served so far.
    pub stats: StatsSnapshot,
}

/// What the server knows of one service, for the debug page.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServiceInfo {
    /// The service's name.
    pub name: String,
    /// Its methods, sorted by name.
    pub methods: Vec<MethodInfo>,
}

impl Service {
    pub(crate) fn info(&self) -> ServiceInfo {
        ServiceInfo {
            name: self.name.clone(),
            methods: self
                .methods
                .iter()
                .map(|(name, m)| MethodInfo {
                    name: name.clone(),
                    arg_type: m.arg_type,
                    reply_type: m.reply_type,
                    stats: m.stats.snapshot(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("Arith", "service").is_ok());
        assert!(check_name("my_svc2", "service").is_ok());
        for bad in ["", "A.B", "a b", "x-y"] {
            assert!(check_name(bad, "service").is_err(), "{bad:?}");
        }
        let s = Service::new("S")
            .method("M", |x: i32| Ok::<_, String>(x))
            .method("M", |x: i32| Ok::<_, String>(x));
        assert!(matches!(s.invalid, Some(Error::InvalidName { .. })));
    }

    #[test]
    fn listed_names_are_sorted_and_bounded() {
        assert_eq!(
            name_list("methods", ["Sum", "Mul"].into_iter()),
            "(methods: Mul, Sum)"
        );
        assert_eq!(name_list("methods", std::iter::empty()), "(no methods)");
        let many: Vec<String> = (0..10_000).map(|i| format!("M{i:05}")).collect();
        let text = name_list("methods", many.iter().map(String::as_str));
        assert!(text.starts_with("(methods: M00000, M00001, "), "{text}");
        assert!(
            text.ends_with(&format!(" and {} more)", 10_000 - LISTED_NAMES)),
            "{text}"
        );
        assert!(text.len() < LISTED_BYTES + 100, "{}", text.len());
        // Long names: the byte bound, not the count, stops the list.
        let long: Vec<String> = (0..5).map(|i| format!("{i}{}", "x".repeat(300))).collect();
        let text = name_list("services", long.iter().map(String::as_str));
        assert!(text.ends_with(" and 4 more)"), "{text}");
        let none_fit = ["y".repeat(LISTED_BYTES + 1)];
        assert_eq!(
            name_list("services", none_fit.iter().map(String::as_str)),
            "(services: and 1 more)"
        );
    }
}
