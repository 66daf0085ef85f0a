//! [`Scope`]: what the calls a thread makes inherit, its deadline and its
//! trace, kept in a thread-local as a plain-threads program expects: a
//! handler's thread runs in its call's scope, so every call the handler
//! makes shares the caller's budget and trace without user code.

use std::cell::Cell;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use super::trace::TraceParent;

thread_local! {
    /// This thread's current scope. `Copy`, so reading it is a load and
    /// entering one is a store: no allocation, no lock.
    static CURRENT: Cell<Scope> = const { Cell::new(Scope::new()) };
}

/// The deadline and trace that calls made on a thread inherit.
///
/// Inside a handler the current scope is its call's: its deadline and its
/// `traceparent`. Outside any, it is empty (no deadline, no trace). A thread
/// a handler starts begins with an empty scope; carry the handler's into it
/// with [`Context::scope`](crate::Context::scope) and [`Scope::run`] (or
/// [`Scope::enter`]).
///
/// ```
/// use geerpc::context::Scope;
/// use std::time::Duration;
///
/// assert_eq!(Scope::current().deadline(), None);
/// let scope = Scope::new().with_timeout(Duration::from_millis(100));
/// scope.run(|| {
///     // Every call made here ends within those 100 ms.
///     assert!(Scope::current().deadline().is_some());
/// });
/// assert_eq!(Scope::current().deadline(), None);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scope {
    deadline: Option<Instant>,
    trace: Option<TraceParent>,
}

impl Scope {
    /// An empty scope: no deadline, no trace.
    pub const fn new() -> Scope {
        Scope {
            deadline: None,
            trace: None,
        }
    }

    /// This thread's current scope.
    pub fn current() -> Scope {
        CURRENT.with(Cell::get)
    }

    /// This scope with `deadline` (the earlier one, if it had one).
    pub fn with_deadline(mut self, deadline: Instant) -> Scope {
        self.deadline = Some(self.deadline.map_or(deadline, |d| d.min(deadline)));
        self
    }

    /// This scope with a deadline `timeout` from now (the earlier one, if
    /// it had one); a timeout too large for an `Instant` changes nothing.
    pub fn with_timeout(self, timeout: Duration) -> Scope {
        match Instant::now().checked_add(timeout) {
            Some(d) => self.with_deadline(d),
            None => self,
        }
    }

    /// This scope with `trace` as its trace.
    pub fn with_trace(mut self, trace: TraceParent) -> Scope {
        self.trace = Some(trace);
        self
    }

    /// The deadline calls in this scope inherit.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The trace calls in this scope continue.
    pub fn trace(&self) -> Option<TraceParent> {
        self.trace
    }

    /// Makes this the thread's current scope until the guard drops; the
    /// previous one is current again then.
    pub fn enter(self) -> ScopeGuard {
        ScopeGuard {
            previous: CURRENT.with(|c| c.replace(self)),
            _not_send: PhantomData,
        }
    }

    /// Runs `f` with this as the thread's current scope.
    pub fn run<T>(self, f: impl FnOnce() -> T) -> T {
        let _guard = self.enter();
        f()
    }
}

/// Restores the thread's previous scope when dropped (see
/// [`Scope::enter`]). Not `Send`: it belongs to the thread that entered.
#[must_use = "dropping the guard leaves the scope at once"]
#[derive(Debug)]
pub struct ScopeGuard {
    previous: Scope,
    _not_send: PhantomData<*const ()>,
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.previous));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_nest_and_restore() {
        let outer = Scope::new().with_timeout(Duration::from_secs(10));
        let tp = TraceParent::new_root();
        let g = outer.enter();
        {
            let inner = Scope::current()
                .with_timeout(Duration::from_secs(1))
                .with_trace(tp);
            let _g2 = inner.enter();
            assert_eq!(Scope::current(), inner);
            assert!(inner.deadline() < outer.deadline(), "the earlier wins");
            // Another thread starts empty.
            std::thread::spawn(|| assert_eq!(Scope::current(), Scope::new()))
                .join()
                .unwrap();
        }
        assert_eq!(Scope::current(), outer);
        drop(g);
        assert_eq!(Scope::current(), Scope::new());
        // A later deadline does not extend an earlier one.
        let d = Instant::now();
        assert_eq!(
            Scope::new()
                .with_deadline(d)
                .with_deadline(d + Duration::from_secs(1))
                .deadline(),
            Some(d)
        );
    }
}
