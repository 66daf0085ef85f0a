//! How the XClient picks the instance for one attempt: which instances
//! are candidates (serving the service, not excluded, not evicted, going
//! away or over a limit, unless all are), the selector's inputs (built on the stack: this
//! runs on every call and must not allocate for usual list lengths), and
//! the batch home a blocking caller brings from its previous call.
//!
//! The selection policies themselves are in `selector.rs`; this file may
//! not dial or call.

use std::cell::Cell;
use std::sync::Arc;

use super::client::XClient;
use super::discovery::Snapshot;
use super::plan::Plan;
use super::pool::Slot;
use super::selector::SelectContext;
use crate::error::Result;

thread_local! {
    /// The slot (its address) whose connection handed this thread the reply
    /// of its last blocking call in a batch; 0 for none. Taken by the next
    /// pick. Compared with the current list's slots only, never
    /// dereferenced: a stale match, from a slot since dropped whose memory
    /// a new one took, at worst weighs that one pick.
    static BATCH_HOME: Cell<usize> = const { Cell::new(0) };
}

/// Notes that `slot`'s connection handed this thread the reply of its
/// blocking call in a batch: the thread's next pick sees it as its home.
pub(super) fn note_batch_home(slot: &Arc<Slot>) {
    BATCH_HOME.set(Arc::as_ptr(slot) as usize);
}

/// Lists up to this long are picked from with the selector's inputs on the
/// stack; longer ones allocate them.
const PICK_ON_STACK: usize = 16;

impl XClient {
    /// Asks the selector for an instance not in `exclude` (indexed like
    /// `view`; instances past its end are not excluded), leaving out
    /// evicted instances, instances going away and instances over a limit
    /// (in their overload back-off) unless no candidate is left (then a
    /// call may as well try: it re-dials, and a success re-admits it).
    /// So every selector, p2c included, sees an avoided instance as worse
    /// than any other: it is not available while another is.
    pub(super) fn pick(
        &self,
        plan: &Plan<'_>,
        snap: &Snapshot,
        view: &[Arc<Slot>],
        exclude: &[bool],
    ) -> Result<usize> {
        let n = view.len();
        let (mut on_stack, mut on_heap) = (([0; PICK_ON_STACK], [false; PICK_ON_STACK]), None);
        let (inflight, available): (&mut [usize], &mut [bool]) = if n <= PICK_ON_STACK {
            (&mut on_stack.0[..n], &mut on_stack.1[..n])
        } else {
            let (i, a) = on_heap.insert((vec![0; n], vec![false; n]));
            (i, a)
        };
        self.pick_in(plan, snap, view, exclude, inflight, available)
    }

    /// [`pick`](XClient::pick) with room for its selector's inputs, one
    /// entry per instance.
    fn pick_in(
        &self,
        plan: &Plan<'_>,
        snap: &Snapshot,
        view: &[Arc<Slot>],
        exclude: &[bool],
        inflight: &mut [usize],
        available: &mut [bool],
    ) -> Result<usize> {
        // Used once, like the batch it stands for: a later pick (a retry, a
        // backup, a `go`) has no batch to join.
        let home = BATCH_HOME.replace(0);
        let candidate =
            |i: usize| exclude.get(i) != Some(&true) && plan.served_by(&snap.instances[i]);
        for (i, slot) in view.iter().enumerate() {
            inflight[i] = slot.inflight();
            available[i] = candidate(i)
                && !slot.is_dead()
                && !slot.avoid_draining()
                && !slot.avoid_overloaded();
        }
        if !available.contains(&true) {
            for (i, a) in available.iter_mut().enumerate() {
                *a = candidate(i);
            }
        }
        if !available.contains(&true) {
            return Err(plan.no_servers());
        }
        let home = (home != 0)
            .then(|| view.iter().position(|s| Arc::as_ptr(s) as usize == home))
            .flatten()
            .filter(|&i| available[i]);
        let ctx = SelectContext {
            service_method: plan.method,
            key: plan.key,
            inflight,
            available,
            home,
        };
        match self.selector.select(snap, &ctx) {
            Some(i) if i < available.len() && available[i] => Ok(i),
            Some(i) if i < available.len() => {
                ctx.next_available(i).ok_or_else(|| plan.no_servers())
            }
            _ => Err(plan.no_servers()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::CallOptions;
    use crate::error::Error;
    use crate::xclient::discovery::MultiServerDiscovery;
    use crate::xclient::selector::SelectMode;

    /// A list too long for the stack takes `pick`'s allocating path, which
    /// must exclude and fall back exactly like the other.
    #[test]
    fn pick_from_a_long_list_excludes_and_falls_back_to_evicted() {
        let n = PICK_ON_STACK + 4;
        // Nothing listens on these ports: the prober an eviction starts
        // gets its refusal at once.
        let addrs: Vec<String> = (1..=n).map(|p| format!("tcp@127.0.0.1:{p}")).collect();
        let discovery = MultiServerDiscovery::new(addrs.iter().map(String::as_str));
        let xc = XClient::new(discovery, SelectMode::RoundRobin);
        let opts = CallOptions::new();
        let plan = xc.plan("A.B", &opts);
        let (snap, view) = xc.instances().unwrap();
        let (last, before) = (n - 1, n - 2);
        let all_but =
            |keep: &[usize]| -> Vec<bool> { (0..n).map(|i| !keep.contains(&i)).collect() };
        for _ in 0..3 {
            assert_eq!(
                xc.pick(&plan, &snap, &view, &all_but(&[last])).unwrap(),
                last
            );
        }
        let refused = Error::Connect {
            addr: view[last].addr.clone(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        xc.pool.report_error(&view[last], &refused);
        // Evicted: passed over while another candidate is available...
        for _ in 0..4 {
            let two = all_but(&[before, last]);
            assert_eq!(xc.pick(&plan, &snap, &view, &two).unwrap(), before);
        }
        // ...and picked when every candidate is evicted.
        assert_eq!(
            xc.pick(&plan, &snap, &view, &all_but(&[last])).unwrap(),
            last
        );
        let none = xc.pick(&plan, &snap, &view, &all_but(&[]));
        assert!(matches!(none, Err(Error::NoServers { .. })), "{none:?}");
    }
}
