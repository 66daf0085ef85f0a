//! The long-poll thread (`geerpc-poll`): keeps a `GET ?watch=VERSION`
//! open on the registry so that a change is installed within a round
//! trip, backs off while the registry fails or answers early, and gives up
//! on a registry that cannot long-poll (a Go one). Started by the builder
//! when [`long_poll`](super::RegistryDiscoveryBuilder::long_poll) is on,
//! stopped by the discovery's drop (its stop channel, then the agent's
//! shutdown to break the poll in flight).
//!
//! It only fetches and installs (through `fetch`); it never signals
//! subscribers itself.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::Shared;
use crate::util::duration::GoDuration;

/// Polls until `stop` fires or the discovery stops; `poll`: each poll's
/// wait at the registry.
pub(super) fn poll_loop(shared: &Shared, agent: &ureq::Agent, poll: Duration, stop: Receiver<()>) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(50);
    let mut backoff = FIRST_BACKOFF;
    loop {
        if shared.stopping.load(Ordering::Acquire) {
            break;
        }
        let (known, kept_until) = {
            let st = shared.state.read();
            (st.remote_version, st.kept.as_ref().map(|k| k.until))
        };
        // While a restarted registry warms up, ask again when it ends, so
        // that its own list is served from then even if nothing changes.
        let poll = kept_until.map_or(poll, |t| {
            poll.min(t.saturating_duration_since(Instant::now()))
        });
        log::debug!(
            "registry discovery {}: polling from version {known:?}",
            shared.url
        );
        // Version 0 is never current: the first poll answers at once.
        let t0 = Instant::now();
        match shared.fetch_and_install(agent, Some(known.unwrap_or(0)), Some(poll)) {
            Ok(()) if shared.state.read().remote_version.is_none() => {
                log::info!(
                    "registry discovery {}: the registry cannot long-poll; refreshing every {}",
                    shared.url,
                    GoDuration(shared.refresh_after)
                );
                break;
            }
            // Answered well before its time with nothing new: the registry
            // is stopping (it answers every poll then, before its port
            // closes: asking again at once could reach it in between and
            // never be answered), or misbehaves. Wait before asking again.
            Ok(())
                if shared.state.read().remote_version == known
                    && t0.elapsed() < poll.mul_f64(0.9) =>
            {
                log::debug!(
                    "registry discovery {}: poll answered early, unchanged; asking again in {}",
                    shared.url,
                    GoDuration(backoff)
                );
                match stop.recv_timeout(backoff) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Ok(()) => {
                shared.watch_live.store(true, Ordering::Release);
                backoff = FIRST_BACKOFF;
            }
            Err(_) => {
                shared.watch_live.store(false, Ordering::Release);
                match stop.recv_timeout(backoff) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
    shared.watch_live.store(false, Ordering::Release);
}
