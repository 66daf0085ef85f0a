//! The resolved settings of one call ([`Plan`]) and the small decisions
//! every fail mode shares: may it retry, may it go elsewhere, is the
//! instance going away, how a timeout is reported.
//!
//! No I/O and no selection here: the fail modes (`fail.rs`) and the
//! fan-out (`fanout.rs`) act on what these say.

use std::time::{Duration, Instant};

use super::client::XClient;
use super::discovery::Instance;
use super::pool::{InflightGuard, Slot};
use crate::client::{deadline_after, Budget, Call, Client};
use crate::code::Code;
use crate::context::CallOptions;
use crate::context::FailMode;
use crate::error::{Error, TimeoutStage};
use std::sync::Arc;

/// The resolved settings of one call.
pub(super) struct Plan<'a> {
    pub(super) method: &'a str,
    /// `method` up to the dot.
    pub(super) service: &'a str,
    pub(super) key: Option<&'a [u8]>,
    pub(super) deadline: Option<Instant>,
    pub(super) timeout: Option<Duration>,
    pub(super) idempotent: bool,
    pub(super) mode: FailMode,
}

impl Plan<'_> {
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

impl XClient {
    /// The settings of one call: `opts` over the client's.
    pub(super) fn plan<'a>(&self, method: &'a str, opts: &'a CallOptions) -> Plan<'a> {
        let timeout = opts.timeout.or(self.timeout);
        Plan {
            method,
            service: method.split_once('.').map_or(method, |(s, _)| s),
            key: opts.key.as_deref(),
            // `Duration::MAX` (or any timeout past what `Instant` holds): none.
            deadline: timeout.and_then(deadline_after),
            timeout,
            idempotent: opts.idempotent.unwrap_or(self.idempotent),
            mode: opts.fail_mode.unwrap_or(self.fail_mode),
        }
    }
}
