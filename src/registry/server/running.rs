//! [`Registry`]: a running registry server, what it tells about itself
//! (address, URL, listed instances, parked polls and holds, threads) and
//! its shutdown, which its drop runs too.
//!
//! It owns every thread `builder` started; it may read the shared state
//! but never answers a request itself, except through `epoch`'s drain.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::listen;
use super::Shared;
use crate::util::threads::ThreadGroup;
use crate::wire::Address;
use crate::xclient::Instance;

/// A running registry server, started by
/// [`Registry::builder`]`()...`[`start`](super::RegistryBuilder::start)`()`.
/// Dropping it shuts it down (see [`shutdown`](Self::shutdown)).
///
/// Its constants (`DEFAULT_*`) are the defaults of the builder's knobs.
#[must_use = "dropping the Registry shuts it down"]
pub struct Registry {
    pub(super) shared: Arc<Shared>,
    pub(super) http: Mutex<Option<Arc<tiny_http::Server>>>,
    pub(super) threads: ThreadGroup,
    pub(super) workers: usize,
    pub(super) stopped: AtomicBool,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("addr", &self.shared.address)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// The address it listens on, `tcp@HOST:PORT`, with the port it picked
    /// if it was asked for port 0.
    pub fn addr(&self) -> &Address {
        &self.shared.address
    }

    /// The URL servers and clients use: `http://HOST:PORT/_rpc_/registry`,
    /// or `https://` when it serves TLS (`RegistryBuilder::tls_pem_files`)
    /// (the first path it answers on; a registry listening on every
    /// interface names the loopback one).
    pub fn url(&self) -> &str {
        &self.shared.url
    }

    /// The instances listed now, sorted by address.
    pub fn instances(&self) -> Vec<Instance> {
        self.shared
            .state
            .lock()
            .table
            .alive(Default::default(), Instant::now())
    }

    /// Long polls parked now, waiting for a change or their timeout.
    pub fn parked_polls(&self) -> usize {
        self.shared.state.lock().watchers.len()
    }

    /// Threads of this registry still running (0 after `shutdown`).
    pub fn live_threads(&self) -> usize {
        self.threads.live()
    }

    /// Heartbeats' holds parked now (see [`HttpRegistrar::hold`](crate::registry::HttpRegistrar::hold)).
    pub fn parked_holds(&self) -> usize {
        self.shared.epoch.parked()
    }

    /// Stops serving: answers pending long polls, joins every thread it
    /// started and closes the port, so that a new registry can bind it at
    /// once. tiny_http's own threads end by themselves: idle ones within
    /// seconds, a connection's when its peer closes it. Calling it again
    /// does nothing. Waits at most about 5 s for its threads (a thread
    /// still running then is logged, not waited for).
    pub fn shutdown(&self) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        let shared = &self.shared;
        shared.stopping.store(true, Ordering::Release);
        shared.epoch.stop();
        shared.roles.stop();
        let http = self.http.lock().take();
        if let Some(h) = &http {
            for _ in 0..self.workers {
                h.unblock();
            }
        }
        // Full or not, the reaper sees `stopping` when it next wakes.
        let _ = shared.wake.try_send(());
        let stuck = self
            .threads
            .join_until(Instant::now() + Duration::from_secs(5));
        if stuck > 0 {
            log::warn!(
                "registry {}: {stuck} threads did not stop within 5s",
                shared.addr
            );
        }
        if let Some(h) = http {
            shared.epoch.drain(&h);
            // The last reference: tiny_http stops accepting when dropped.
            let last = Arc::strong_count(&h) == 1;
            drop(h);
            if last {
                listen::wait_port_free(shared.addr);
            }
        }
        shared.epoch.release_holds();
        log::info!("registry {}: shut down", shared.addr);
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.shutdown();
    }
}
