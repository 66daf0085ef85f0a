//! The fail modes of a call to one instance ([`FailMode`](super::FailMode)): fail fast and
//! failover (one loop), failtry, failbackup, and the single attempt and
//! send they are made of.
//!
//! Each decides only what to try next; picking is in `pick.rs`, the
//! retry rules in `plan.rs`, connections and eviction in `pool.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::client::XClient;
use super::pick::note_batch_home;
use super::plan::{abandon, call_attempt, going_away, lost_reply, send_attempt, Plan, Sent};
use super::pool::{InflightGuard, Slot};
use crate::client::deadline_after;
use crate::error::{Error, Result};

impl XClient {
    /// One blocking attempt on one instance.
    pub(super) fn once<A, R>(&self, plan: &Plan<'_>, slot: &Arc<Slot>, args: &A) -> Result<R>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        let _inflight = InflightGuard::new(&**slot);
        if plan.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(plan.timed_out(std::iter::once(slot.addr.as_str())));
        }
        let c = self
            .pool
            .connect(slot, plan.method, plan.budget())
            .inspect_err(|e| {
                if slot.is_draining() && e.is_not_sent() {
                    // Still gone: pass it over a while longer.
                    slot.mark_draining();
                }
            })?;
        let r = call_attempt(&c, plan, args);
        if let Err(e) = &r {
            if going_away(slot, &c, e) {
                // Not a failure of the instance: nothing to report.
                return r;
            }
        }
        // An error from the service itself still came through the batch.
        let answered = matches!(r, Ok(_) | Err(Error::Remote { .. }));
        if answered && c.woke_this_thread_in_batch() {
            note_batch_home(slot);
        }
        self.pool.report(slot, &r);
        r
    }

    /// Sends without waiting.
    pub(super) fn send<A, R>(&self, plan: &Plan<'_>, slot: &Arc<Slot>, args: &A) -> Result<Sent<R>>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        let guard = InflightGuard::new(slot.clone());
        let client = self.pool.connect(slot, plan.method, plan.budget())?;
        match send_attempt(&client, plan, args) {
            Ok(call) => Ok(Sent {
                call,
                slot: slot.clone(),
                client,
                guard,
            }),
            Err(e) => {
                if !going_away(slot, &client, &e) {
                    self.pool.report_error(slot, &e);
                }
                Err(e)
            }
        }
    }

    /// Failfast (`retries` 0) and failover.
    pub(super) fn failover<A, R>(&self, plan: &Plan<'_>, args: &A, retries: u32) -> Result<R>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        let (snap, view) = self.instances()?;
        // Only a call that may fail over needs to remember where it went.
        let mut tried = vec![false; if retries > 0 { view.len() } else { 0 }];
        let mut attempt = 0;
        let mut redirects = 0;
        let mut redirected = None;
        loop {
            if !tried.is_empty() && tried.iter().all(|t| *t) {
                // Every instance had its turn: start another round.
                tried.iter_mut().for_each(|t| *t = false);
            }
            let i = match self.pick(plan, &snap, &view, &tried) {
                Ok(i) => i,
                Err(e) => return Err(redirected.unwrap_or(e)),
            };
            if let Some(t) = tried.get_mut(i) {
                *t = true;
            }
            match self.once(plan, &view[i], args) {
                Ok(r) => return Ok(r),
                // Each instance gets the call once at most: after the last
                // one refuses, its refusal is the call's.
                Err(e) if redirects + 1 < view.len() && plan.may_redirect(&e, &view[i]) => {
                    log::debug!(
                        "xclient: {} not processed by {}: {e}; sending it elsewhere",
                        plan.method,
                        view[i].addr
                    );
                    redirects += 1;
                    tried.resize(view.len(), false);
                    tried[i] = true;
                    redirected = Some(e);
                }
                Err(e) if attempt < retries && plan.may_retry(&e) => {
                    log::debug!(
                        "xclient: {} on {} failed: {e}; failing over",
                        plan.method,
                        view[i].addr
                    );
                    attempt += 1;
                    self.pool.events().failed_over();
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The same instance, up to `retries` more times.
    pub(super) fn failtry<A, R>(&self, plan: &Plan<'_>, args: &A, retries: u32) -> Result<R>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        let (snap, view) = self.instances()?;
        let mut i = self.pick(plan, &snap, &view, &[])?;
        let mut attempt = 0;
        let mut tried = Vec::new();
        loop {
            match self.once(plan, &view[i], args) {
                Ok(r) => return Ok(r),
                // The instance is going away: "the same instance" is moot.
                Err(e) if tried.len() < view.len() && plan.may_redirect(&e, &view[i]) => {
                    tried.resize(view.len(), false);
                    tried[i] = true;
                    match self.pick(plan, &snap, &view, &tried) {
                        Ok(next) => i = next,
                        Err(_) => return Err(e),
                    }
                }
                Err(e) if attempt < retries && plan.may_retry(&e) => attempt += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// One instance, and a second one too if the first is slow.
    pub(super) fn failbackup<A, R>(&self, plan: &Plan<'_>, args: &A, after: Duration) -> Result<R>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        let (snap, view) = self.instances()?;
        let mut tried = vec![false; view.len()];
        let mut sent: Vec<Sent<R>> = Vec::with_capacity(2);
        let mut first_err: Option<Error> = None;
        let mut attempts = 0;
        // None (`after` past what `Instant` holds): no backup for slowness.
        let backup_at = deadline_after(after);
        loop {
            // Send the first call, or the backup once it is due: when the
            // first is slow (idempotent calls only) or failed retryably.
            let due = match (attempts, &first_err) {
                (0, _) => true,
                (1, Some(e)) if sent.is_empty() => plan.may_retry(e) || e.is_retryable(),
                (1, _) => plan.idempotent && backup_at.is_some_and(|b| Instant::now() >= b),
                _ => false,
            };
            if due {
                attempts += 1;
                match self.pick(plan, &snap, &view, &tried) {
                    Ok(i) => {
                        tried[i] = true;
                        match self.send(plan, &view[i], args) {
                            Ok(s) => sent.push(s),
                            Err(e) => {
                                first_err.get_or_insert(e);
                            }
                        }
                    }
                    // No second instance: wait for the first alone.
                    Err(e) if attempts == 1 => return Err(e),
                    Err(_) => {}
                }
                continue;
            }
            if sent.is_empty() {
                return Err(first_err.unwrap_or_else(|| plan.no_servers()));
            }
            let mut wait_until = plan.deadline;
            if attempts == 1 && plan.idempotent {
                wait_until = match (wait_until, backup_at) {
                    (Some(d), Some(b)) => Some(d.min(b)),
                    (d, b) => d.or(b),
                };
            }
            let waited = {
                let mut sel = crossbeam_channel::Select::new();
                for s in &sent {
                    sel.recv(s.call.receiver());
                }
                let op = match wait_until {
                    Some(t) => sel.select_deadline(t),
                    None => Ok(sel.select()),
                };
                match op {
                    Ok(op) => {
                        let k = op.index();
                        let r = op
                            .recv(sent[k].call.receiver())
                            .unwrap_or_else(|_| Err(lost_reply(&sent[k].slot.addr)));
                        Some((k, r))
                    }
                    Err(_) => None,
                }
            };
            let Some((k, r)) = waited else {
                if plan.deadline.is_some_and(|d| Instant::now() >= d) {
                    let err = plan.timed_out(sent.iter().map(|s| s.slot.addr.as_str()));
                    for s in sent {
                        abandon(s.call);
                    }
                    return Err(err);
                }
                // Time for the backup.
                continue;
            };
            let done = sent.swap_remove(k);
            self.pool.report(&done.slot, &r);
            match r {
                Ok(v) => {
                    for s in sent {
                        abandon(s.call);
                    }
                    return Ok(v);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
    }
}
