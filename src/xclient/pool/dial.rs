//! One dial of an instance that the pool's other callers wait for, each
//! until its own deadline at most (see `Slot::client`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::slot::Slot;
use crate::client::Client;
use crate::error::{Error, TimeoutStage};

/// A dial of one instance that other callers wait for.
#[derive(Default)]
pub(super) struct Dial {
    outcome: Mutex<Option<Outcome>>,
    done: parking_lot::Condvar,
}

pub(super) enum Outcome {
    Dialled(Client),
    /// The leader's deadline ran out first; nothing is known of the instance.
    CutShort,
    Failed(Error),
}

impl Dial {
    /// The outcome, waiting until `deadline` at most (`None`: no limit);
    /// `None` if the deadline passed first.
    pub(super) fn wait(&self, deadline: Option<Instant>) -> Option<Outcome> {
        let mut outcome = self.outcome.lock();
        loop {
            if let Some(o) = &*outcome {
                return Some(o.copy());
            }
            match deadline {
                None => self.done.wait(&mut outcome),
                Some(d) => {
                    if self.done.wait_until(&mut outcome, d).timed_out() {
                        return outcome.as_ref().map(Outcome::copy);
                    }
                }
            }
        }
    }
}

impl Outcome {
    pub(super) fn copy(&self) -> Outcome {
        match self {
            Outcome::Dialled(c) => Outcome::Dialled(c.clone()),
            Outcome::CutShort => Outcome::CutShort,
            Outcome::Failed(e) => Outcome::Failed(e.copy()),
        }
    }
}

/// Ends a leader's dial however it returns: clears the slot's `dialling`
/// (after the connection is cached, so that a caller who finds no dial
/// finds the connection) and wakes the waiters with the outcome.
pub(super) struct DialGuard<'a> {
    pub(super) slot: &'a Slot,
    pub(super) dial: &'a Arc<Dial>,
    pub(super) outcome: Outcome,
}

impl Drop for DialGuard<'_> {
    fn drop(&mut self) {
        // Cleared first: a waiter told `CutShort` looks again at once and
        // must not find this dial still there.
        {
            let mut dialling = self.slot.dialling.lock();
            if dialling.as_ref().is_some_and(|d| Arc::ptr_eq(d, self.dial)) {
                *dialling = None;
            }
        }
        let outcome = std::mem::replace(&mut self.outcome, Outcome::CutShort);
        *self.dial.outcome.lock() = Some(outcome);
        self.dial.done.notify_all();
    }
}

/// A call's timeout at `stage` on `addr`, its method and timeout left for
/// [`Pool::connect`](super::Pool::connect) to fill in.
pub(super) fn timeout_at(addr: &str, stage: TimeoutStage) -> Error {
    Error::Timeout {
        method: String::new(),
        addr: addr.to_string(),
        timeout: Duration::ZERO,
        stage,
    }
}

impl Error {
    /// The same error for another waiter of a failed dial (`io::Error` is
    /// not `Clone`: its kind and text are kept).
    pub(super) fn copy(&self) -> Error {
        match self {
            Error::Connect { addr, source } => Error::Connect {
                addr: addr.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            Error::ConnectTimeout { addr, timeout } => Error::ConnectTimeout {
                addr: addr.clone(),
                timeout: *timeout,
            },
            Error::HttpConnect { addr, status } => Error::HttpConnect {
                addr: addr.clone(),
                status: status.clone(),
            },
            Error::InvalidAddress { addr, reason } => Error::InvalidAddress {
                addr: addr.clone(),
                reason: reason.clone(),
            },
            // A client setting no server accepts (the magic number): kept
            // as it is, so that no waiter takes it for the instance's fault.
            Error::Encode { what, message } => Error::Encode {
                what: what.clone(),
                message: message.clone(),
            },
            other => Error::Io {
                context: "dial".into(),
                source: std::io::Error::other(other.to_string()),
            },
        }
    }
}
