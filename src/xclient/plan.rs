//! The resolved settings of one call ([`Plan`]: its deadline, the
//! earliest of its own and its scope's) and the small decisions every fail
//! mode shares: may it retry, may it go elsewhere, is the instance going
//! away, how a timeout is reported; and the two places where an attempt's
//! request leaves ([`call_attempt`], [`send_attempt`]).
//!
//! No selection here, and no I/O but those two sends: the fail modes
//! (`fail.rs`) and the fan-out (`fanout.rs`) act on what these say.

use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::client::XClient;
use super::discovery::Instance;
use super::pool::{InflightGuard, Slot};
use crate::client::{deadline_after, Budget, Call, Client, Outbound};
use crate::code::Code;
use crate::context::CallOptions;
use crate::context::FailMode;
use crate::context::Scope;
use crate::error::{Error, Result, TimeoutStage};
use crate::meta::Meta;
use std::sync::Arc;

/// The resolved settings of one call.
pub(super) struct Plan<'a> {
    pub(super) method: &'a str,
    /// `method` up to the dot.
    pub(super) service: &'a str,
    pub(super) key: Option<&'a [u8]>,
    /// The earliest of the call's own deadline (its timeout, the client's,
    /// or [`CallOptions::deadline`]) and its scope's: it bounds every
    /// attempt, and each attempt's request carries what is left of it.
    pub(super) deadline: Option<Instant>,
    /// The timeout an [`Error::Timeout`] of the whole call names: the
    /// call's own, or the time that was left when the call started if an
    /// earlier deadline (its own or its scope's) set `deadline`.
    pub(super) timeout: Option<Duration>,
    pub(super) idempotent: bool,
    pub(super) mode: FailMode,
    /// The scope the call runs in (inherited from the calling thread or
    /// given), for the requests' trace: a fan-out sends from threads of
    /// its own, whose current scope is empty.
    pub(super) scope: Scope,
    /// The call's own metadata (over the connection's defaults).
    pub(super) meta: &'a Meta,
}

impl Plan<'_> {
    /// Whether the call is what `Client::call` / `go` send by themselves:
    /// no deadline, no Meta of its own, and the thread's own scope (which
    /// they inherit); then the fast path needs no `Outbound`.
    fn is_plain(&self) -> bool {
        self.deadline.is_none() && self.meta.is_empty() && self.scope == Scope::current()
    }

    /// The timeout error if the call's deadline has passed: nothing is sent
    /// past it (a dial may have used it up).
    fn past_deadline(&self, client: &Client) -> Option<Error> {
        self.deadline.filter(|&d| Instant::now() >= d)?;
        Some(self.timed_out(std::iter::once(&*client.addr().to_string())))
    }

    /// What each attempt sends besides its argument.
    fn outbound(&self) -> Outbound<'_> {
        Outbound {
            budget: self.deadline.map(|_| self.budget()),
            meta: self.meta,
            scope: self.scope,
        }
    }

    /// Whether a failed attempt may be followed by another.
    pub(super) fn may_retry(&self, e: &Error) -> bool {
        let in_time = self.deadline.is_none_or(|d| Instant::now() < d);
        in_time
            && !matches!(e, Error::Remote { .. } | Error::Timeout { .. })
            && (self.idempotent || e.is_not_sent())
    }

    /// Whether a failed attempt on `slot` was not processed because the
    /// instance is going away or over a limit, so that the call goes to
    /// another instance at no cost (see [`FailMode`]).
    pub(super) fn may_redirect(&self, e: &Error, slot: &Slot) -> bool {
        let in_time = self.deadline.is_none_or(|d| Instant::now() < d);
        in_time
            && match e.remote_code() {
                Some(c) => c.may_retry_elsewhere(),
                None => e.is_not_sent() && slot.is_draining(),
            }
    }

    /// Whether `inst` serves this call's service (an instance that lists
    /// no services may serve any).
    pub(super) fn served_by(&self, inst: &Instance) -> bool {
        inst.services.is_empty() || inst.services.iter().any(|s| s == self.service)
    }

    pub(super) fn no_servers(&self) -> Error {
        Error::NoServers {
            service: (!self.service.is_empty()).then(|| self.service.to_string()),
        }
    }

    /// The timeout error for the whole call, naming the instances that did
    /// not answer.
    pub(super) fn timed_out<'s>(&self, waiting: impl Iterator<Item = &'s str>) -> Error {
        Error::Timeout {
            method: self.method.to_string(),
            addr: waiting.collect::<Vec<_>>().join(", "),
            timeout: self.timeout.unwrap_or_default(),
            stage: TimeoutStage::Reply,
        }
    }

    /// The call's time, for the stages of one attempt.
    pub(super) fn budget(&self) -> Budget {
        Budget {
            deadline: self.deadline,
            timeout: self.timeout.unwrap_or_default(),
        }
    }

    /// A per-attempt timeout reported as the whole call's.
    pub(super) fn whole_timeout(&self, e: Error) -> Error {
        match (e, self.timeout) {
            (
                Error::Timeout {
                    method,
                    addr,
                    stage,
                    ..
                },
                Some(timeout),
            ) => Error::Timeout {
                method,
                addr,
                timeout,
                stage,
            },
            (e, _) => e,
        }
    }
}

/// Whether a failed attempt on `slot` over `client` says the instance is
/// going away (a refusal as `unavailable`, or a call the connection did not
/// send after the drain notice); if so the slot is marked draining.
pub(super) fn going_away(slot: &Slot, client: &Client, e: &Error) -> bool {
    let away = match e.remote_code() {
        Some(Code::Unavailable) => true,
        Some(_) => false,
        None => e.is_not_sent() && client.is_going_away(),
    };
    if away {
        slot.mark_draining();
    }
    away
}

/// A call sent to one instance, counted in flight.
pub(super) struct Sent<R> {
    pub(super) call: Call<R>,
    pub(super) slot: Arc<Slot>,
    /// Keeps the connection open while the call is out, even if the slot
    /// drops or replaces it.
    pub(super) client: Client,
    pub(super) guard: InflightGuard,
}

/// Gives up a call: its slot in the connection is freed and a late reply is
/// dropped.
pub(super) fn abandon<R>(call: Call<R>) {
    let _ = call.wait_deadline(Instant::now());
}

pub(super) fn lost_reply(addr: &str) -> Error {
    Error::ConnectionClosed {
        addr: addr.to_string(),
        reason: "reply channel closed".into(),
    }
}

/// Sends one attempt's request on `client` and returns at once: the one
/// place where `go`, failbackup and the fan-outs send. Nothing is sent
/// past the deadline.
pub(super) fn send_attempt<A, R>(client: &Client, plan: &Plan<'_>, args: &A) -> Result<Call<R>>
where
    A: Serialize + ?Sized,
    R: DeserializeOwned + Send + 'static,
{
    if let Some(e) = plan.past_deadline(client) {
        return Err(e);
    }
    if plan.is_plain() {
        client.go(plan.method, args)
    } else {
        client.go_outbound(plan.method, args, &plan.outbound())
    }
}

/// Sends one attempt's request on `client` and waits for its reply, at
/// most until the call's deadline: the one place where a blocking call
/// (fail fast, failover, failtry) sends. A timeout names the whole call's.
///
/// A plain call (no deadline, no Meta, the thread's own scope) goes
/// through `Client::call`: there the calling thread reads its own reply
/// (no reader-thread wake), which the hot path depends on.
pub(super) fn call_attempt<A, R>(client: &Client, plan: &Plan<'_>, args: &A) -> Result<R>
where
    A: Serialize + ?Sized,
    R: DeserializeOwned + Send + 'static,
{
    if let Some(e) = plan.past_deadline(client) {
        return Err(e);
    }
    match plan.deadline {
        None if plan.is_plain() => client.call(plan.method, args),
        None => client
            .go_outbound(plan.method, args, &plan.outbound())
            .and_then(Call::wait),
        Some(_) => client
            .go_outbound(plan.method, args, &plan.outbound())
            .and_then(|call| call.wait_within(plan.budget()))
            .map_err(|e| plan.whole_timeout(e)),
    }
}

/// A call's deadline from its own timeout (`own`), its own deadline and
/// its scope's (`inherited`): the earliest, with the timeout its
/// [`Error::Timeout`] names (see [`Plan::timeout`]). `None`: no deadline
/// (none given, or too far for an `Instant`: `Duration::MAX`).
fn deadline_of(
    own: Option<Duration>,
    deadline: Option<Instant>,
    inherited: Option<Instant>,
) -> (Option<Instant>, Option<Duration>) {
    if deadline.is_none() && inherited.is_none() {
        // The usual case: no clock read for a call without a timeout.
        return (own.and_then(deadline_after), own);
    }
    let now = Instant::now();
    let mine = own.and_then(|t| now.checked_add(t));
    match [mine, deadline, inherited].into_iter().flatten().min() {
        Some(d) if Some(d) == mine => (Some(d), own),
        Some(d) => (Some(d), Some(d.saturating_duration_since(now))),
        None => (None, own),
    }
}

impl XClient {
    /// The settings of one call: `opts` over the client's; its deadline
    /// is the earliest of its own and its scope's
    /// ([`CallOptions::scope`], by default the thread's current one).
    pub(super) fn plan<'a>(&self, method: &'a str, opts: &'a CallOptions) -> Plan<'a> {
        let scope = opts.effective_scope();
        let (deadline, timeout) = deadline_of(
            opts.timeout.or(self.timeout),
            opts.deadline,
            scope.deadline(),
        );
        Plan {
            method,
            service: method.split_once('.').map_or(method, |(s, _)| s),
            key: opts.key.as_deref(),
            deadline,
            timeout,
            idempotent: opts.idempotent.unwrap_or(self.idempotent),
            mode: opts.fail_mode.unwrap_or(self.fail_mode),
            scope,
            meta: &opts.meta,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earliest_deadline_counts_and_names_its_timeout() {
        let ms = Duration::from_millis;
        assert_eq!(deadline_of(None, None, None), (None, None));
        assert_eq!(
            deadline_of(Some(Duration::MAX), None, None),
            (None, Some(Duration::MAX))
        );
        let (d, t) = deadline_of(Some(ms(500)), None, None);
        assert!(d.is_some() && t == Some(ms(500)));
        // An inherited deadline earlier than the call's own timeout wins,
        // and the timeout named is the time left.
        let soon = Instant::now() + ms(50);
        let (d, t) = deadline_of(Some(ms(10_000)), None, Some(soon));
        assert_eq!(d, Some(soon));
        assert!(t.unwrap() <= ms(50), "{t:?}");
        // A later inherited one does not extend the call's own.
        let late = Instant::now() + ms(60_000);
        let (d, t) = deadline_of(Some(ms(100)), None, Some(late));
        assert!(d.unwrap() < late && t == Some(ms(100)));
        // No timeout of its own: the call's deadline or its scope's.
        let (d, _) = deadline_of(None, Some(late), Some(soon));
        assert_eq!(d, Some(soon));
        let (d, t) = deadline_of(Some(Duration::MAX), Some(soon), None);
        assert_eq!(d, Some(soon));
        assert!(t.unwrap() <= ms(50));
    }
}
