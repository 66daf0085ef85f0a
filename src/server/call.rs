//! One call on a server connection, from its request to its reply queued
//! (PROTOCOL.md section 8): find the method, check the `Meta`, pass the
//! limits, check the deadline, run the interceptors and the handler in the
//! call's scope, and reply with the outcome's code and the handler's
//! reply `Meta`.
//!
//! The order matters: nothing that costs the server work (admission, a
//! handler) is spent on a call that names nothing or carries bad `Meta`,
//! and a call whose deadline passed while it waited (in the socket buffer,
//! in the hand-off, for admission) is answered without running.
//!
//! Hot path (no `Timeout`, no `Meta`, no interceptor, no reply `Meta`): no
//! allocation and no lock beyond what a call always cost; the clock is read
//! once per read syscall (the arrival stamp) and once after the handler.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::conn::Conn;
use super::intercept::Outcome;
use super::monitor::Deadline;
use super::Running;
use crate::code::{text, Code};
use crate::context::{Context, TraceParent};
use crate::meta::WireMeta;
use crate::server::service::{code_of, CallFailure, Method};
use crate::server::stats::code_slot;
use crate::util::duration::GoDuration;
use crate::wire::codec::{Codec, Header, OwnedBody, KEEP_METHOD_TEXT};

/// The method a connection's thread found last, with the name it was
/// found by: a client calls the same method over and over, and comparing
/// the name costs a fraction of `Server::find` (splitting the name, the
/// services lock, two hash lookups: ~330 of a 1x1 call's ~5,500 server
/// instructions under callgrind).
///
/// Invariant: an entry never goes stale. Services are only ever added
/// (`Server::register` refuses a name taken already and nothing removes
/// one), so a method once found stays the method for that name. Names not
/// found are not kept: each one asks `Server::find` again, which says what
/// there is.
#[derive(Default)]
struct LastMethod(Option<(String, Arc<Method>)>);

impl LastMethod {
    fn find(&mut self, run: &Running, service_method: &str) -> Result<Arc<Method>, String> {
        if let Some((name, method)) = &self.0 {
            if name == service_method {
                return Ok(method.clone());
            }
        }
        let method = run.server.find(service_method)?;
        match &mut self.0 {
            // The name's buffer is reused: no allocation once it is large enough.
            Some((name, m)) => {
                name.clear();
                name.push_str(service_method);
                *m = method.clone();
            }
            None => self.0 = Some((service_method.to_string(), method.clone())),
        }
        Ok(method)
    }
}

/// What a connection's thread keeps from one call to the next: buffers
/// reused, so that a call allocates nothing on the JSON fast path, and the
/// request being served, read in place (see `conn::Next`).
pub(super) struct Kept {
    /// The reply's encoding buffer, reused.
    scratch: Vec<u8>,
    last: LastMethod,
    /// The request's body, copied out of the reader's buffer so that the
    /// reader can be let go while the handler runs.
    pub(super) body: OwnedBody,
    /// The request's header, read in place; once it is handled, its reply's
    /// header (the method's text given back by the call's context), whose
    /// buffers the next request is read into. Between calls it holds only
    /// small text buffers (`trim`).
    pub(super) header: Header,
    /// When the read that completed the request returned.
    pub(super) received: Instant,
}

impl Kept {
    /// Lets go of what the last call left that a connection idling until
    /// the next one should not hold, whichever way that call ended: a large
    /// body's buffer, the header's `Code` and `Meta`, and its text buffers
    /// past a small size. (A peer's request may carry an `Error` or `Code`
    /// text up to the message size; a call refused unrun leaves it here.)
    pub(super) fn trim(&mut self) {
        self.body.trim(KEEP_BODY);
        let h = &mut self.header;
        h.code = None;
        h.meta = None;
        if h.service_method.capacity() > KEEP_METHOD_TEXT {
            h.service_method = String::new();
        }
        if h.error.capacity() > KEEP_METHOD_TEXT {
            h.error = String::new();
        }
    }
}

impl Default for Kept {
    fn default() -> Kept {
        Kept {
            scratch: Vec::new(),
            last: LastMethod::default(),
            body: OwnedBody::default(),
            header: Header::default(),
            received: Instant::now(),
        }
    }
}

/// Bytes of a request body whose buffer a connection's thread keeps for the
/// next request; a larger body's buffer is given back once it is handled
/// (a connection's memory stays small while it idles).
const KEEP_BODY: usize = 8 * 1024;

/// Answers a call that never reached its handler.
fn refuse(conn: &Conn, codec: Codec, service_method: String, seq: u64, error: String, code: Code) {
    let reply = Header {
        service_method,
        seq,
        error,
        code: Some(code),
        ..Header::default()
    };
    let _ = conn.queue_reply(codec, &reply, codec.empty_body());
}

/// A duration for an error text: Go's format, to the microsecond.
fn micros(d: Duration) -> GoDuration {
    GoDuration(Duration::from_micros(
        u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
    ))
}

/// The text of a handle timeout, exactly as Go's server writes it.
fn handle_timeout_text(timeout: Duration) -> String {
    format!("{}{}", text::HANDLE_TIMEOUT, GoDuration(timeout))
}

#[inline]
pub(super) fn handle(
    run: &Running,
    conn: &Arc<Conn>,
    codec: Codec,
    handle_timeout: Option<Duration>,
    slot: &mut Context,
    kept: &mut Kept,
) {
    let Kept {
        scratch,
        last,
        body,
        header,
        received,
    } = kept;
    let received = *received;
    let service_method = std::mem::take(&mut header.service_method);
    let seq = header.seq;
    let timeout = header.timeout;
    let meta = header.meta.take();
    // A call the server refuses by itself, said once at debug level (the
    // peer's mistake or a late call: not the server's).
    let refuse_logged = |service_method: String, message: String, code: Code| {
        log::debug!("rpc server {}: {}: {message}", run.addr, conn.peer);
        refuse(conn, codec, service_method, seq, message, code);
    };
    let method = match last.find(run, &service_method) {
        Ok(m) => m,
        Err(message) => {
            // One label for every unknown name (bounded, see ServerCounters).
            run.server.shared.counters.unknown.0[code_slot(Some(&Code::NotFound))]
                .fetch_add(1, Ordering::Relaxed);
            refuse_logged(service_method, message, Code::NotFound);
            return;
        }
    };
    let meta = match meta {
        None => None,
        Some(WireMeta::Valid(m)) => Some(m),
        Some(WireMeta::Invalid(reason)) => {
            method.stats.record_refused(&Code::InvalidArgument);
            let message = format!("rpc server: bad Meta of {service_method}: {reason}");
            refuse_logged(service_method, message, Code::InvalidArgument);
            return;
        }
    };
    // The call's deadline counts from its arrival: the earlier of the
    // connection's handle timeout (`held`, which the monitor answers at, as
    // Go does) and the caller's own budget (`Timeout`: `own`). A budget too
    // large for an `Instant` is no deadline.
    let held = handle_timeout.and_then(|t| received.checked_add(t));
    let own = (timeout > 0)
        .then(|| received.checked_add(Duration::from_nanos(timeout)))
        .flatten();
    let deadline = match (held, own) {
        (Some(h), Some(o)) => Some(h.min(o)),
        (h, o) => h.or(o),
    };
    // The caller's own deadline, when it is the one that ends the call:
    // nobody answers at it (the caller gives up on its own), but a result
    // that comes after it is replaced by `deadline_exceeded`.
    let own_binds = own.filter(|&o| held.is_none_or(|h| o < h));
    // Nobody waits for an expired call's result: it is not run, and it is
    // answered `deadline_exceeded` whether it expired before admission or
    // while it waited for a place. Counted apart from the method's calls
    // (`StatsSnapshot::expired`).
    let expired = |now: Instant| -> Option<String> {
        let d = deadline.filter(|&d| now >= d)?;
        method.stats.record_expired();
        Some(match (own_binds, handle_timeout) {
            // A Go client's handle timeout: Go's own text.
            (None, Some(t)) => handle_timeout_text(t),
            _ => format!(
                "rpc server: call {service_method}: deadline exceeded before the handler \
                 ran (budget {}, waited {})",
                GoDuration(d.saturating_duration_since(received)),
                micros(now.saturating_duration_since(received)),
            ),
        })
    };
    let refuse_expired = |message: String, service_method: String| {
        refuse_logged(service_method, message, Code::DeadlineExceeded);
    };
    if let Some(message) = deadline.and_then(|_| expired(Instant::now())) {
        refuse_expired(message, service_method);
        return;
    }
    // The limits' say: refused calls are answered at once, unrun.
    // (Queue-delay shedding's state is the connection's: `limits/queue.rs`.)
    let limiter = &run.server.shared.limiter;
    let mut permit = match limiter.admit_on(&conn.queue, &service_method, received, deadline) {
        Ok(p) => p,
        Err(message) => {
            // A wait for a place that ended at the deadline: expired.
            if let Some(message) = deadline.and_then(|_| expired(Instant::now())) {
                refuse_expired(message, service_method);
                return;
            }
            method.stats.record_refused(&Code::ResourceExhausted);
            refuse(
                conn,
                codec,
                service_method,
                seq,
                message,
                Code::ResourceExhausted,
            );
            return;
        }
    };
    if let Some(message) = deadline.and_then(|_| expired(Instant::now())) {
        permit.no_sample();
        drop(permit);
        refuse_expired(message, service_method);
        return;
    }
    let answered = handle_timeout.zip(held).map(|(timeout, at)| {
        let flag = Arc::new(AtomicBool::new(false));
        run.deadlines.lock().push(Deadline {
            at,
            timeout,
            conn: conn.clone(),
            seq,
            service_method: service_method.clone(),
            answered: flag.clone(),
        });
        run.monitor_stop.wake_by(at);
        flag
    });
    let cfg = run.server.config();
    // The connection thread's context, made this call's: no allocation
    // and no reference count per call.
    slot.reset(service_method, deadline, meta);
    if slot.trace.is_none() && cfg.trace_ids {
        slot.trace = Some(TraceParent::new_root());
    }
    let ctx = &*slot;

    // A call with neither deadline nor trace runs in the thread's own
    // scope, empty on a connection thread: nothing to enter.
    let inherits = ctx.deadline.is_some() || ctx.trace.is_some();
    let interceptors = &cfg.interceptors;
    // How many `before`s let the call through: their `after`s run.
    let mut passed = 0;
    scratch.clear();
    let outcome = {
        // Calls the handler (or an interceptor) makes inherit the call's
        // deadline and trace; the guard restores the thread's scope even
        // if the handler panics.
        let _scope = inherits.then(|| ctx.scope().enter());
        catch_unwind(AssertUnwindSafe(|| {
            if !interceptors.is_empty() {
                interceptors
                    .before(ctx, &mut passed)
                    .map_err(|s| CallFailure::Failed(s.message().to_string(), code_of(&s)))?;
                // They may have taken long (a remote check): still no
                // handler starts after its deadline.
                if ctx.is_expired() {
                    return Err(CallFailure::Failed(
                        format!(
                            "rpc server: call {}: deadline exceeded before the handler ran \
                             (in its interceptors)",
                            ctx.service_method
                        ),
                        Some(Code::DeadlineExceeded),
                    ));
                }
            }
            (method.handler)(ctx, codec, body.as_body(), scratch)
        }))
    };
    if passed < interceptors.len() {
        // Refused by an interceptor: the handler's work never began.
        permit.no_sample();
    }
    let mut error = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(CallFailure::BadArgument(m))) => {
            permit.no_sample();
            log::debug!("rpc server {}: {}: {m}", run.addr, conn.peer);
            Some((m, Some(Code::InvalidArgument)))
        }
        Ok(Err(CallFailure::Failed(m, code))) => Some((m, code)),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".to_string());
            log::error!(
                "rpc server {}: {} panicked: {what}",
                run.addr,
                ctx.service_method
            );
            Some((
                format!("rpc server: {} panicked: {what}", ctx.service_method),
                Some(Code::Internal),
            ))
        }
    };
    let now = Instant::now();
    let elapsed = now.saturating_duration_since(received);
    // The monitor may have answered already with the handle-timeout error:
    // then this result is dropped and the call counts as failed.
    let timed_out = answered.is_some_and(|flag| flag.swap(true, Ordering::AcqRel));
    if let Some(d) = own_binds.filter(|&d| !timed_out && now >= d) {
        // Late for its caller: a short error instead of the result (unless
        // the handler's error says so already, from a call it made).
        if error
            .as_ref()
            .is_none_or(|(_, c)| *c != Some(Code::DeadlineExceeded))
        {
            error = Some((
                format!(
                    "rpc server: call {}: deadline exceeded (budget {}, took {})",
                    ctx.service_method,
                    GoDuration(d.saturating_duration_since(received)),
                    micros(elapsed),
                ),
                Some(Code::DeadlineExceeded),
            ));
        }
    }
    let code = match &error {
        _ if timed_out => Some(&Code::DeadlineExceeded),
        Some((_, c)) => Some(c.as_ref().unwrap_or(&Code::Unknown)),
        None => None,
    };
    method.stats.record(elapsed, code);
    if passed > 0 {
        let monitor_text;
        let deadline_code = Code::DeadlineExceeded;
        let (text, code) = match &error {
            _ if timed_out => {
                monitor_text = handle_timeout_text(handle_timeout.unwrap_or_default());
                (Some(monitor_text.as_str()), Some(&deadline_code))
            }
            Some((m, c)) => (Some(m.as_str()), c.as_ref()),
            None => (None, None),
        };
        let o = Outcome {
            error: text,
            code,
            elapsed,
        };
        let _scope = inherits.then(|| ctx.scope().enter());
        if catch_unwind(AssertUnwindSafe(|| interceptors.after(passed, ctx, &o))).is_err() {
            log::error!(
                "rpc server {}: an interceptor's after() panicked on {}",
                run.addr,
                ctx.service_method
            );
        }
    }
    if timed_out {
        return;
    }
    // What the handler (or an interceptor) set for the reply; nothing to
    // take, and nothing allocated, when none was set. The context is ours
    // again: no lock.
    // The reply's header is the request's, rewritten in place.
    let reply_meta = std::mem::take(slot.reply_meta.get_mut());
    let reply = header;
    reply.service_method = std::mem::take(&mut slot.service_method);
    reply.seq = seq;
    reply.timeout = 0;
    reply.meta = (!reply_meta.is_empty()).then_some(WireMeta::Valid(reply_meta));
    let result = match error {
        None => {
            reply.error.clear();
            reply.code = None;
            conn.queue_reply(codec, reply, scratch)
        }
        Some((e, code)) => {
            reply.error = e;
            reply.code = code;
            conn.queue_reply(codec, reply, codec.empty_body())
        }
    };
    if let Err(e) = result {
        reply.error = format!("rpc server: cannot send reply: {e}");
        reply.code = Some(Code::Internal);
        let _ = conn.queue_reply(codec, reply, codec.empty_body());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call refused unrun leaves its request's header in `Kept`: what a
    /// peer put there (an `Error` text up to the message size, a `Code`,
    /// `Meta`) must not stay with the connection while it idles.
    #[test]
    fn trim_lets_go_of_a_request_s_large_texts_its_code_and_meta() {
        let mut kept = Kept::default();
        kept.header.error = "e".repeat(1 << 20);
        kept.header.service_method = "m".repeat(1 << 20);
        kept.header.code = Some(Code::Internal);
        kept.header.meta = Some(WireMeta::Invalid("from the peer".into()));
        kept.trim();
        assert!(kept.header.error.capacity() <= KEEP_METHOD_TEXT);
        assert!(kept.header.service_method.capacity() <= KEEP_METHOD_TEXT);
        assert!(kept.header.code.is_none() && kept.header.meta.is_none());
        // Small buffers stay, for the next request to be read into.
        kept.header.error = String::with_capacity(64);
        kept.trim();
        assert_eq!(kept.header.error.capacity(), 64);
    }
}
