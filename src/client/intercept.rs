//! Client interceptors: code that runs around every call a [`Client`]
//! makes ([`Interceptor`]), what it sees of the call before it is sent
//! ([`Outgoing`]) and once it has ended ([`Finished`]), and how the client
//! runs them (`run_befores`, [`AfterHook`]).
//!
//! Cheap when none is installed: the call path then looks at one flag
//! (`Defaults::plain`) and allocates nothing, takes no lock.
//!
//! [`Client`]: super::Client

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::outbound::Defaults;
use crate::code::Code;
use crate::error::{Error, Result};
use crate::meta::Meta;
use crate::wire::address::Address;

/// Code that runs around every call of a [`Client`](super::Client):
/// logging, metrics, credentials, client-side rate limits. Installed with
/// [`ClientBuilder::interceptor`](super::ClientBuilder::interceptor).
///
/// - [`before`](Interceptor::before) runs on the calling thread before
///   anything is sent, in the order the interceptors were installed. It
///   may add to the call's metadata ([`Outgoing::meta_mut`]), or refuse the
///   call by returning an error: the call then ends with that error,
///   nothing is sent, and the interceptors after it do not run.
/// - [`after`](Interceptor::after) runs once the call has ended, in the
///   reverse order, for every interceptor whose `before` let the call
///   through (so an interceptor sees an `after` for each `before` that
///   returned `Ok`, refusals by a later interceptor included). It runs on
///   whichever thread ends the call: the caller's, or, for a reply, the
///   thread reading the connection's replies, which every other call on
///   the connection waits for meanwhile. Keep it cheap (count, time, log);
///   hand heavy work to a thread of your own. It runs before the caller
///   gets its result. A panic in `after` is caught and logged.
///
/// A call's end is its reply, its error (a refusal by the server, a
/// timeout, a closed connection), or its abandonment: a [`Call`](super::Call)
/// dropped before its result came ([`Finished::code`] is then
/// [`Code::Cancelled`]).
///
/// ```
/// use geerpc::client::{Finished, Interceptor, Outgoing};
/// use geerpc::{Client, Server, Service};
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
///
/// /// Adds credentials to every call.
/// struct Token(String);
///
/// impl Interceptor for Token {
///     fn before(&self, call: &mut Outgoing<'_>) -> geerpc::Result<()> {
///         call.meta_mut().insert("authorization", format!("Bearer {}", self.0))
///     }
/// }
///
/// /// Counts calls and their time; failures by code.
/// #[derive(Default)]
/// struct Timing {
///     calls: AtomicU64,
///     failed: AtomicU64,
///     micros: AtomicU64,
/// }
///
/// impl Interceptor for Timing {
///     fn after(&self, call: &Finished<'_>) {
///         self.calls.fetch_add(1, Ordering::Relaxed);
///         self.micros
///             .fetch_add(call.elapsed().as_micros() as u64, Ordering::Relaxed);
///         if let Some(code) = call.code() {
///             self.failed.fetch_add(1, Ordering::Relaxed);
///             log::info!("{} on {} failed: {code}", call.service_method(), call.addr());
///         }
///     }
/// }
///
/// let server = Server::new();
/// server.register(Service::new("Echo").method("Echo", |s: String| Ok::<_, String>(s)))?;
/// let running = server.listen("127.0.0.1:0")?;
///
/// // Shared with this code through an `Arc` (an `Arc` of an interceptor
/// // is one).
/// let timing = Arc::new(Timing::default());
/// let client = Client::builder()
///     .interceptor(Token("s3cret".into()))
///     .interceptor(timing.clone())
///     .dial(running.addr())?;
/// assert_eq!(client.call::<_, String>("Echo.Echo", "hi")?, "hi");
/// assert!(client.call::<_, String>("Echo.Nope", "hi").is_err());
/// assert_eq!(timing.calls.load(Ordering::Relaxed), 2);
/// assert_eq!(timing.failed.load(Ordering::Relaxed), 1);
/// # Ok::<(), geerpc::Error>(())
/// ```
pub trait Interceptor: Send + Sync + 'static {
    /// Runs before the call is sent; an error refuses it (nothing is sent,
    /// the caller gets this error). Default: lets it through.
    fn before(&self, call: &mut Outgoing<'_>) -> Result<()> {
        let _ = call;
        Ok(())
    }

    /// Runs once the call has ended (see the trait's documentation for on
    /// which thread). Default: nothing.
    fn after(&self, call: &Finished<'_>) {
        let _ = call;
    }
}

/// An interceptor shared with other code (its counters read elsewhere).
impl<T: Interceptor + ?Sized> Interceptor for Arc<T> {
    fn before(&self, call: &mut Outgoing<'_>) -> Result<()> {
        (**self).before(call)
    }

    fn after(&self, call: &Finished<'_>) {
        (**self).after(call)
    }
}

/// A call about to be sent, as an [`Interceptor::before`] sees it.
#[derive(Debug)]
pub struct Outgoing<'a> {
    pub(super) service_method: &'a str,
    pub(super) addr: &'a Address,
    pub(super) deadline: Option<Instant>,
    pub(super) meta: &'a mut Meta,
}

impl Outgoing<'_> {
    /// `Service.Method` of the call.
    pub fn service_method(&self) -> &str {
        self.service_method
    }

    /// The server's address.
    pub fn addr(&self) -> &Address {
        self.addr
    }

    /// The call's deadline (its own or the one it inherited), if any: the
    /// server is told the time left then.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The metadata the call sends: the client's defaults, the call's own
    /// and its `traceparent`, as earlier interceptors left it.
    pub fn meta(&self) -> &Meta {
        self.meta
    }

    /// The metadata the call sends, to add to or change.
    pub fn meta_mut(&mut self) -> &mut Meta {
        self.meta
    }
}

/// How a call ended, for [`Finished`].
#[derive(Debug, Clone, Copy)]
pub(super) enum Outcome<'a> {
    Ok,
    Err(&'a Error),
    /// The [`Call`](super::Call) was dropped before its result came.
    Abandoned,
}

/// A call that has ended, as an [`Interceptor::after`] sees it.
#[derive(Debug)]
pub struct Finished<'a> {
    service_method: &'a str,
    addr: &'a Address,
    outcome: Outcome<'a>,
    elapsed: Duration,
}

impl Finished<'_> {
    /// `Service.Method` of the call.
    pub fn service_method(&self) -> &str {
        self.service_method
    }

    /// The server's address.
    pub fn addr(&self) -> &Address {
        self.addr
    }

    /// Whether the call got its reply (decoded as the caller asked).
    pub fn is_ok(&self) -> bool {
        matches!(self.outcome, Outcome::Ok)
    }

    /// The error the call ended with; `None` if it succeeded or was
    /// abandoned.
    pub fn error(&self) -> Option<&Error> {
        match self.outcome {
            Outcome::Err(e) => Some(e),
            _ => None,
        }
    }

    /// Why the call failed: `None` if it succeeded, the error's
    /// [`Error::code`] if it failed (`deadline_exceeded` for a timeout, the
    /// server's code for a refusal), [`Code::Cancelled`] if its `Call` was
    /// dropped before the result came.
    pub fn code(&self) -> Option<Code> {
        match self.outcome {
            Outcome::Ok => None,
            Outcome::Err(e) => Some(e.code()),
            Outcome::Abandoned => Some(Code::Cancelled),
        }
    }

    /// Time from before the first `before` ran to the call's end.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }
}

/// The installed interceptors, in order; `Debug` tells how many.
#[derive(Clone, Default)]
pub(super) struct InterceptorList(pub(super) Vec<Arc<dyn Interceptor>>);

impl std::fmt::Debug for InterceptorList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{} interceptors]", self.0.len())
    }
}

/// The `before`s that let a call through: how many, and since when. The
/// send path turns it into the call's [`AfterHook`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Entered {
    pub(super) count: usize,
    pub(super) start: Instant,
}

/// Runs every `before` in order on a call about to be sent. On a refusal
/// the `after`s of those that let it through run (in reverse) with the
/// refusal, which is returned.
pub(super) fn run_befores(
    d: &Defaults,
    service_method: &str,
    deadline: Option<Instant>,
    meta: &mut Meta,
) -> Result<Entered> {
    let start = Instant::now();
    for (i, ic) in d.interceptors.iter().enumerate() {
        let mut out = Outgoing {
            service_method,
            addr: &d.addr,
            deadline,
            meta,
        };
        if let Err(e) = ic.before(&mut out) {
            run_afters(d, i, service_method, Outcome::Err(&e), start);
            return Err(e);
        }
    }
    Ok(Entered {
        count: d.interceptors.len(),
        start,
    })
}

/// Runs the `after`s of the first `entered` interceptors, last first. A
/// panic is caught and logged: this may be the connection's reader, which
/// every call on it waits for.
fn run_afters(
    d: &Defaults,
    entered: usize,
    service_method: &str,
    outcome: Outcome<'_>,
    start: Instant,
) {
    let fin = Finished {
        service_method,
        addr: &d.addr,
        outcome,
        elapsed: start.elapsed(),
    };
    for ic in d.interceptors[..entered].iter().rev() {
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ic.after(&fin)));
        if ran.is_err() {
            log::error!(
                "rpc client {}: an interceptor's after() panicked on {service_method}",
                d.addr
            );
        }
    }
}

/// A call's pending `after`s: run once, by [`finish`](AfterHook::finish)
/// when the call ends, or when dropped unfinished (the call was abandoned:
/// its completion dropped with its `Call`).
pub(super) struct AfterHook {
    defaults: Arc<Defaults>,
    entered: Entered,
    method: Arc<str>,
    done: bool,
}

impl AfterHook {
    pub(super) fn new(defaults: Arc<Defaults>, entered: Entered, method: Arc<str>) -> AfterHook {
        AfterHook {
            defaults,
            entered,
            method,
            done: false,
        }
    }

    /// Runs the `after`s with the call's outcome.
    pub(super) fn finish(mut self, outcome: std::result::Result<(), &Error>) {
        self.done = true;
        let outcome = match outcome {
            Ok(()) => Outcome::Ok,
            Err(e) => Outcome::Err(e),
        };
        self.run(outcome);
    }

    fn run(&self, outcome: Outcome<'_>) {
        run_afters(
            &self.defaults,
            self.entered.count,
            &self.method,
            outcome,
            self.entered.start,
        );
    }
}

impl Drop for AfterHook {
    fn drop(&mut self) {
        if !self.done {
            self.run(Outcome::Abandoned);
        }
    }
}
