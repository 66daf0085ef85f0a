//! Calls to every instance at once: [`XClient::broadcast`],
//! [`XClient::fork`] and [`XClient::inform`], over one fan-out that calls
//! each instance from its own scoped thread.
//!
//! Every thread it starts is joined before the call returns (scoped
//! threads), and every call still out when it stops is abandoned; it may
//! not keep anything running past the call.

use std::collections::HashMap;
use std::sync::Arc;

use crossbeam_channel::Receiver;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::client::XClient;
use super::plan::{abandon, going_away, lost_reply, send_attempt, Plan};
use super::pool::{InflightGuard, Pool, Slot};
use crate::context::CallOptions;
use crate::error::{Error, Result};

/// What a fan-out collected.
struct FanOut<R> {
    addrs: Vec<String>,
    /// Results in the order they arrived, by index into `addrs`.
    arrived: Vec<(usize, Result<R>)>,
}

impl<R> FanOut<R> {
    /// Addresses with no result (the deadline passed or the fan-out stopped
    /// early).
    fn waiting(&self) -> impl Iterator<Item = &str> {
        let mut got = vec![false; self.addrs.len()];
        for (k, _) in &self.arrived {
            got[*k] = true;
        }
        self.addrs
            .iter()
            .zip(got)
            .filter(|(_, g)| !g)
            .map(|(a, _)| a.as_str())
    }
}

impl XClient {
    /// Calls every instance at once. Returns the first error as soon as it
    /// arrives (the other calls are abandoned), or when every instance
    /// succeeded, one of the replies. The client's timeout bounds the whole
    /// broadcast. Evicted instances are left out unless all are.
    ///
    /// Each instance is called from its own scoped thread, all joined before
    /// this returns. Dialling fits in the timeout too; without a timeout, a
    /// thread still dialling is waited for up to the connect timeout.
    pub fn broadcast<A, R>(&self, service_method: &str, args: &A) -> Result<R>
    where
        A: Serialize + Sync + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        self.broadcast_with(service_method, args, &CallOptions::new())
    }

    /// Like [`broadcast`](XClient::broadcast) with per-call settings
    /// (timeout).
    pub fn broadcast_with<A, R>(
        &self,
        service_method: &str,
        args: &A,
        opts: &CallOptions,
    ) -> Result<R>
    where
        A: Serialize + Sync + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        let plan = self.plan(service_method, opts);
        let got = self.fan_out(&plan, args, |r: &Result<R>| r.is_err())?;
        let timed_out = got.waiting().next().is_some();
        let err = (timed_out).then(|| plan.timed_out(got.waiting()));
        let mut reply = None;
        for (_, r) in got.arrived {
            match r {
                Err(e) => return Err(e),
                Ok(v) => reply = reply.or(Some(v)),
            }
        }
        match (err, reply) {
            (Some(e), _) => Err(e),
            (None, Some(v)) => Ok(v),
            (None, None) => Err(plan.no_servers()),
        }
    }

    /// Calls every instance at once and returns the first success (the
    /// other calls are abandoned); if all fail, the first error.
    pub fn fork<A, R>(&self, service_method: &str, args: &A) -> Result<R>
    where
        A: Serialize + Sync + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        self.fork_with(service_method, args, &CallOptions::new())
    }

    /// Like [`fork`](XClient::fork) with per-call settings (timeout).
    pub fn fork_with<A, R>(&self, service_method: &str, args: &A, opts: &CallOptions) -> Result<R>
    where
        A: Serialize + Sync + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        let plan = self.plan(service_method, opts);
        let got = self.fan_out(&plan, args, |r: &Result<R>| r.is_ok())?;
        let timed_out = got.waiting().next().is_some();
        let err = (timed_out).then(|| plan.timed_out(got.waiting()));
        let mut first_err = None;
        for (_, r) in got.arrived {
            match r {
                Ok(v) => return Ok(v),
                Err(e) => first_err = first_err.or(Some(e)),
            }
        }
        Err(err.or(first_err).unwrap_or_else(|| plan.no_servers()))
    }

    /// Calls every instance at once and returns each one's result, keyed
    /// by address as [`Address`](crate::Address) writes it
    /// (`PROTOCOL@ADDR`: an instance listed as a bare `HOST:PORT` is
    /// `tcp@HOST:PORT` here); those that did not answer within the timeout
    /// have [`Error::Timeout`].
    pub fn inform<A, R>(&self, service_method: &str, args: &A) -> Result<HashMap<String, Result<R>>>
    where
        A: Serialize + Sync + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        self.inform_with(service_method, args, &CallOptions::new())
    }

    /// Like [`inform`](XClient::inform) with per-call settings (timeout).
    pub fn inform_with<A, R>(
        &self,
        service_method: &str,
        args: &A,
        opts: &CallOptions,
    ) -> Result<HashMap<String, Result<R>>>
    where
        A: Serialize + Sync + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        let plan = self.plan(service_method, opts);
        let got = self.fan_out(&plan, args, |_: &Result<R>| false)?;
        let mut out: HashMap<String, Result<R>> = got
            .waiting()
            .map(|a| (a.to_string(), Err(plan.timed_out(std::iter::once(a)))))
            .collect();
        for (k, r) in got.arrived {
            out.insert(got.addrs[k].clone(), r);
        }
        Ok(out)
    }

    /// Calls every (available) instance on its own scoped thread and
    /// collects results until `stop` says so, all have arrived, or the
    /// deadline passes. Calls still out are abandoned.
    fn fan_out<A, R>(
        &self,
        plan: &Plan<'_>,
        args: &A,
        stop: fn(&Result<R>) -> bool,
    ) -> Result<FanOut<R>>
    where
        A: Serialize + Sync + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        let (snap, view) = self.instances()?;
        let serving: Vec<&Arc<Slot>> = view
            .iter()
            .zip(snap.instances.iter())
            .filter(|(_, inst)| plan.served_by(inst))
            .map(|(s, _)| s)
            .collect();
        let mut targets: Vec<Arc<Slot>> = serving
            .iter()
            .filter(|s| !s.is_dead() && !s.avoid_draining())
            .map(|s| Arc::clone(s))
            .collect();
        if targets.is_empty() {
            targets = serving.into_iter().cloned().collect();
        }
        if targets.is_empty() {
            return Err(plan.no_servers());
        }
        let pool = &*self.pool;
        let (tx, rx) = crossbeam_channel::unbounded::<(usize, Result<R>)>();
        // Dropped to tell every thread to abandon its call.
        let (cancel_tx, cancel_rx) = crossbeam_channel::bounded::<()>(0);
        let mut arrived = Vec::with_capacity(targets.len());
        std::thread::scope(|scope| {
            let mut handles = Vec::with_capacity(targets.len());
            for (k, slot) in targets.iter().enumerate() {
                let thread_tx = tx.clone();
                let cancel = cancel_rx.clone();
                let spawned = std::thread::Builder::new()
                    .name("geerpc-xc-fan".into())
                    .spawn_scoped(scope, move || {
                        let r = call_until_cancelled(pool, plan, slot, args, &cancel);
                        if let Some(r) = r {
                            let _ = thread_tx.send((k, r));
                        }
                    });
                match spawned {
                    Ok(h) => handles.push(h),
                    Err(e) => {
                        let _ = tx.send((k, Err(Error::io("start a broadcast thread", e))));
                    }
                }
            }
            drop(tx);
            let deadline = plan
                .deadline
                .map_or_else(crossbeam_channel::never, crossbeam_channel::at);
            loop {
                crossbeam_channel::select! {
                    recv(rx) -> got => match got {
                        Ok((k, r)) => {
                            let enough = stop(&r);
                            arrived.push((k, r));
                            if enough {
                                break;
                            }
                        }
                        Err(_) => break,
                    },
                    recv(deadline) -> _ => break,
                }
            }
            drop(cancel_tx);
            // The scope only waits for the closures; joining waits for the
            // threads themselves to be gone.
            for h in handles {
                let _ = h.join();
            }
        });
        Ok(FanOut {
            addrs: targets.iter().map(|s| s.addr.clone()).collect(),
            arrived,
        })
    }
}

/// One instance's part of a fan-out: `None` if it was cancelled or ran
/// out of time (the collector accounts for it).
fn call_until_cancelled<A, R>(
    pool: &Pool,
    plan: &Plan<'_>,
    slot: &Arc<Slot>,
    args: &A,
    cancel: &Receiver<()>,
) -> Option<Result<R>>
where
    A: Serialize + ?Sized,
    R: DeserializeOwned + Send + 'static,
{
    let _inflight = InflightGuard::new(&**slot);
    // Kept until the reply is in, so the connection stays open.
    let client = match pool.connect(slot, plan.method, plan.budget()) {
        Ok(c) => c,
        Err(e) => return Some(Err(e)),
    };
    if cancel.try_recv() == Err(crossbeam_channel::TryRecvError::Disconnected) {
        return None;
    }
    let call = match send_attempt::<A, R>(&client, plan, args) {
        Ok(call) => call,
        Err(e) => {
            if !going_away(slot, &client, &e) {
                pool.report_error(slot, &e);
            }
            return Some(Err(e));
        }
    };
    let deadline = plan
        .deadline
        .map_or_else(crossbeam_channel::never, crossbeam_channel::at);
    let r = crossbeam_channel::select! {
        recv(call.receiver()) -> r => r.unwrap_or_else(|_| Err(lost_reply(&slot.addr))),
        recv(cancel) -> _ => {
            abandon(call);
            return None;
        }
        recv(deadline) -> _ => {
            abandon(call);
            return None;
        }
    };
    pool.report(slot, &r);
    Some(r)
}
