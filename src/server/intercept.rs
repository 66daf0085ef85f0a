//! Server interceptors: code that runs around every call a server serves
//! (logging, metrics, authentication, rate limits), with the call's
//! [`Context`], in the order they were added.
//!
//! Authenticators (`ServerBuilder::authenticator`) are interceptors too,
//! kept at the front of the list: they run before every plain one.
//!
//! Where they run in a call (see `call.rs`): after the method is found, its
//! `Meta` checked, the call admitted by the limits and its deadline found
//! not passed; so a call answered `not_found`, `invalid_argument` for its
//! `Meta`, `resource_exhausted` or `deadline_exceeded` before its handler
//! reaches no interceptor.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::code::Code;
use crate::context::{Context, Status};

/// Code run around every call a server serves, added with
/// [`ServerBuilder::interceptor`](crate::server::ServerBuilder::interceptor).
///
/// For each call, the `before`s run in the order the interceptors were
/// added (those added with
/// [`ServerBuilder::authenticator`](crate::server::ServerBuilder::authenticator)
/// first, whenever they were added), then the handler, then the `after`s in the reverse order, each
/// only for an interceptor whose `before` let the call through. A `before`
/// that returns `Err(status)` refuses the call: the handler never runs, the
/// caller gets the status's code and message, and the `before`s after it do
/// not run (the `after`s of those before it do, and see the refusal). Both
/// run on the thread that runs the handler, inside the call's
/// [`Scope`](crate::context::Scope) (calls they make share its deadline and
/// trace). A refused call is counted in the method's stats as a failed one;
/// so is one whose deadline passed while the `before`s ran: it is answered
/// `deadline_exceeded` and its handler does not start.
///
/// A server with none pays nothing for the feature: no allocation and no
/// lock per call, one check that the list is empty.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use geerpc::server::{Interceptor, Outcome};
/// use geerpc::{Client, Code, Context, Server, Service, Status};
///
/// /// Logs every call with its code and time.
/// struct Logging;
///
/// impl Interceptor for Logging {
///     fn after(&self, ctx: &Context, outcome: &Outcome<'_>) {
///         log::info!(
///             "{} from {}: {} in {:?}",
///             ctx.service_method(),
///             ctx.peer(),
///             outcome.code().map_or("ok", Code::as_str),
///             outcome.elapsed()
///         );
///     }
/// }
///
/// /// Lets through `budget` calls in all, then refuses with
/// /// `resource_exhausted` (not processed: a client may send it elsewhere).
/// struct Budget(AtomicU64);
///
/// impl Interceptor for Budget {
///     fn before(&self, ctx: &Context) -> Result<(), Status> {
///         let left = self.0.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
///         match left {
///             Ok(_) => Ok(()),
///             Err(_) => Err(Status::resource_exhausted(format!(
///                 "rpc server: {}: call budget spent",
///                 ctx.service_method()
///             ))),
///         }
///     }
/// }
///
/// let server = Server::builder()
///     .interceptor(Logging)
///     .interceptor(Budget(AtomicU64::new(1)))
///     .build();
/// server.register(Service::new("Echo").method("Echo", |s: String| Ok::<_, String>(s)))?;
/// let running = server.listen("tcp@127.0.0.1:0")?;
/// let client = Client::dial(running.addr())?;
/// assert_eq!(client.call::<_, String>("Echo.Echo", "hi")?, "hi");
/// let refused = client.call::<_, String>("Echo.Echo", "again").unwrap_err();
/// assert_eq!(refused.remote_code(), Some(&Code::ResourceExhausted));
/// # Ok::<(), geerpc::Error>(())
/// ```
pub trait Interceptor: Send + Sync + 'static {
    /// Runs before the handler; `Err` refuses the call (default: lets it
    /// through). The context has the call's method, peer, deadline, `Meta`
    /// and trace; what it sets with
    /// [`set_reply_meta`](Context::set_reply_meta) goes out with the reply,
    /// a refusal's included.
    fn before(&self, ctx: &Context) -> Result<(), Status> {
        let _ = ctx;
        Ok(())
    }

    /// Runs once the call's outcome is known, before the reply is sent
    /// (default: nothing).
    fn after(&self, ctx: &Context, outcome: &Outcome<'_>) {
        let _ = (ctx, outcome);
    }
}

/// A shared interceptor is one too: install an `Arc` of it and keep a
/// clone to read what it counts.
impl<T: Interceptor + ?Sized> Interceptor for Arc<T> {
    fn before(&self, ctx: &Context) -> Result<(), Status> {
        (**self).before(ctx)
    }

    fn after(&self, ctx: &Context, outcome: &Outcome<'_>) {
        (**self).after(ctx, outcome)
    }
}

/// How a call ended, for [`Interceptor::after`].
#[derive(Debug, Clone, Copy)]
pub struct Outcome<'a> {
    pub(crate) error: Option<&'a str>,
    pub(crate) code: Option<&'a Code>,
    pub(crate) elapsed: Duration,
}

impl<'a> Outcome<'a> {
    /// Whether the call succeeded.
    pub fn is_ok(&self) -> bool {
        self.error.is_none()
    }

    /// The error text the caller gets, if the call failed.
    pub fn error(&self) -> Option<&'a str> {
        self.error
    }

    /// The reply's code, if the call failed with one (a handler's own
    /// error without a [`Status`] has none, as a Go handler's).
    pub fn code(&self) -> Option<&'a Code> {
        self.code
    }

    /// Time from the request's arrival (the read that completed it) to
    /// now: waits for admission included.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }
}

/// A server's interceptors, in the order added.
#[derive(Clone, Default)]
pub(crate) struct Interceptors(Vec<Arc<dyn Interceptor>>);

impl fmt::Debug for Interceptors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Interceptors({})", self.0.len())
    }
}

impl Interceptors {
    pub(crate) fn push(&mut self, i: Arc<dyn Interceptor>) {
        self.0.push(i);
    }

    /// Puts `i` at `index`, before those from there on (an authenticator
    /// goes before the plain interceptors, whenever it was added).
    pub(crate) fn insert(&mut self, index: usize, i: Arc<dyn Interceptor>) {
        self.0.insert(index.min(self.0.len()), i);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Runs the `before`s in order, counting in `passed` those that let
    /// the call through (kept up to date, so that it is right even if one
    /// panics); the first refusal stops them.
    pub(crate) fn before(&self, ctx: &Context, passed: &mut usize) -> Result<(), Status> {
        for i in &self.0 {
            i.before(ctx)?;
            *passed += 1;
        }
        Ok(())
    }

    /// Runs the `after`s of the first `passed` interceptors, last first.
    pub(crate) fn after(&self, passed: usize, ctx: &Context, outcome: &Outcome<'_>) {
        for i in self.0[..passed.min(self.0.len())].iter().rev() {
            i.after(ctx, outcome);
        }
    }
}
