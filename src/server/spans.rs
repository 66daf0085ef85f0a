//! The tracing hook: [`LogSpans`], a ready-made server interceptor that
//! writes each call's span data (method, peer, duration, code, trace and
//! parent ids from its `traceparent`) to a `log` target, and the recipe
//! for forwarding the same data to a tracing system of one's own.

use std::fmt::Write as _;

use super::intercept::{Interceptor, Outcome};
use crate::context::{Context, Status};

/// The `log` target [`LogSpans`] writes to.
pub const SPAN_TARGET: &str = "geerpc::span";

/// A server interceptor that logs one line per call, at `target`
/// [`SPAN_TARGET`] (`geerpc::span`), once its outcome is known:
///
/// ```text
/// service_method=Arith.Sum peer=127.0.0.1:50412 duration_us=87 code=ok trace_id=4bf92f3577b34da6a3ce929d0e0e4736 parent_id=00f067aa0ba902b7 sampled=1
/// ```
///
/// `code` is `ok`, the reply's code, or `unknown` for a handler's error
/// without one; `duration_us` counts from the request's arrival (waits
/// for admission included) to the outcome. `trace_id`, `parent_id` and
/// `sampled` come from the call's `traceparent` (PROTOCOL.md section 8)
/// and are left out when it has none (turn on
/// [`ServerBuilder::trace_ids`](super::ServerBuilder::trace_ids) to give
/// every call one). A line costs its formatting only when the target is
/// enabled at the level given ([`LogSpans::new`]: `Info`); with it
/// disabled, one check per call.
///
/// Like every interceptor it sees the calls that reach the interceptors:
/// calls refused before (unknown method, bad `Meta`, shed by the limits,
/// expired while waiting) are counted by the metrics
/// (`geerpc_server_calls_total`), not logged here. Add it last to see the
/// refusals of authenticators and earlier interceptors too.
///
/// ```
/// use geerpc::server::LogSpans;
/// use geerpc::Server;
///
/// let server = Server::builder().interceptor(LogSpans::new()).build();
/// # drop(server);
/// ```
///
/// **Forwarding to OpenTelemetry (or any tracer)**: the same data is what
/// an interceptor of your own gets: the [`Context`] (method, peer, trace)
/// and the [`Outcome`] (code, error text, duration). Build the span in
/// `after`, back-dated by the duration, as the child of the caller's
/// `traceparent`:
///
/// ```
/// use geerpc::server::{Interceptor, Outcome};
/// use geerpc::Context;
/// use std::time::SystemTime;
///
/// struct Export;
///
/// impl Interceptor for Export {
///     fn after(&self, ctx: &Context, outcome: &Outcome<'_>) {
///         let end = SystemTime::now();
///         let start = end - outcome.elapsed();
///         let (trace_id, parent_id) = match ctx.trace() {
///             Some(t) => (t.trace_id(), t.parent_id()),
///             None => (String::new(), String::new()),
///         };
///         let code = outcome.code().map_or(if outcome.is_ok() { "ok" } else { "unknown" }, |c| c.as_str());
///         // Here: tracer.span_builder(ctx.service_method())
///         //     .with_start_time(start).with_end_time(end)
///         //     .with_kind(SpanKind::Server), parent from
///         //     (trace_id, parent_id), attributes rpc.method, net.peer,
///         //     rpc.geerpc.code = code; or send it down a channel to a
///         //     thread of yours: `after` runs before the reply is sent.
///         let _ = (start, trace_id, parent_id, code, ctx.peer());
///     }
/// }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct LogSpans {
    level: log::Level,
}

impl Default for LogSpans {
    fn default() -> Self {
        LogSpans::new()
    }
}

impl LogSpans {
    /// Logs at `Info`.
    pub fn new() -> LogSpans {
        LogSpans {
            level: log::Level::Info,
        }
    }

    /// Logs at `level` instead (default `Info`).
    pub fn level(mut self, level: log::Level) -> LogSpans {
        self.level = level;
        self
    }
}

impl Interceptor for LogSpans {
    fn before(&self, _: &Context) -> Result<(), Status> {
        Ok(())
    }

    fn after(&self, ctx: &Context, outcome: &Outcome<'_>) {
        if !log::log_enabled!(target: SPAN_TARGET, self.level) {
            return;
        }
        let code = match outcome.code() {
            Some(c) => c.as_str(),
            None if outcome.is_ok() => "ok",
            None => "unknown",
        };
        let mut line = format!(
            "service_method={} peer={} duration_us={} code={code}",
            ctx.service_method(),
            ctx.peer(),
            outcome.elapsed().as_micros(),
        );
        if let Some(t) = ctx.trace() {
            let _ = write!(
                line,
                " trace_id={} parent_id={} sampled={}",
                t.trace_id(),
                t.parent_id(),
                u8::from(t.sampled())
            );
        }
        log::log!(target: SPAN_TARGET, self.level, "{line}");
    }
}
