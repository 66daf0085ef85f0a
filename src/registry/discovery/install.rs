//! Installing a fetched (or hand-given) list: which listing wins when
//! fetches overlap, when the registry's version went back, and when the
//! registry restarted (with `kept`'s list through its warmup); a changed
//! list gets a new snapshot version and signals
//! [`Discovery::watch`](crate::Discovery::watch)'s subscribers.
//!
//! Invariant: every decision is taken under `Shared::state`'s write lock,
//! so two installs never interleave; subscribers are signalled after it is
//! released, with `try_send` on channels of one slot (a pending signal is
//! enough).

use std::time::Instant;

use super::kept::{self, Start};
use super::{Shared, Source};
use crate::xclient::{Instance, Snapshot};

impl Shared {
    /// Installs a list; a different list gets a new version and wakes the
    /// subscribers. A list from a fetch that saw the registry's version go
    /// back, or from a new start of the registry, replaces the installed
    /// one whatever their versions; after a restart, together with the
    /// list kept from before it until the registry's warmup ends.
    pub(super) fn install(
        &self,
        mut instances: Vec<Instance>,
        remote_version: Option<Option<u64>>,
        from: Source,
        start: Option<Start<'_>>,
    ) {
        let mut went_back = matches!(
            from,
            Source::Fetch {
                went_back: true,
                ..
            }
        );
        log::debug!(
            "registry discovery {}: {} instances at version {remote_version:?}",
            self.url,
            instances.len()
        );
        instances.sort_by(|a, b| a.addr.cmp(&b.addr));
        instances.dedup_by(|a, b| a.addr == b.addr);
        let changed = {
            let mut st = self.state.write();
            let now = Instant::now();
            if let Source::Fetch { seq, .. } = from {
                if seq < st.went_back_at {
                    log::debug!(
                        "registry discovery {}: dropped a listing asked for before the registry's version went back",
                        self.url
                    );
                    return;
                }
                // A new start: its versions say nothing of the old one's,
                // and fetches sent before this one are from the old start.
                if let Some(start) = start {
                    if st.epoch.as_deref().is_some_and(|e| e != start.epoch) {
                        went_back = true;
                        st.kept = kept::on_restart(&self.url, &st.snapshot.instances, start, now);
                    }
                    if st.epoch.as_deref() != Some(start.epoch) {
                        st.epoch = Some(start.epoch.to_string());
                    }
                }
                if went_back {
                    st.went_back_at = seq;
                }
            } else {
                // A list given by hand is served as given.
                st.kept = None;
            }
            // Fetches overlap (the first list, the watch, a refresh); one
            // that answered older than what is installed must not replace
            // it, or the discovery would serve a stale list while its watch
            // waits for a change past the newer version.
            if let (Some(Some(new)), Some(current)) = (remote_version, st.remote_version) {
                if new < current && !went_back {
                    log::debug!(
                        "registry discovery {}: dropped a listing at version {new}, older than {current}",
                        self.url
                    );
                    return;
                }
            }
            if let Some(kept) = st.kept.take() {
                let left;
                (instances, left) = kept::merge(&self.url, instances, kept, now);
                st.kept = left;
            }
            let changed = *st.snapshot.instances != instances[..];
            if changed {
                st.snapshot = Snapshot {
                    version: st.snapshot.version + 1,
                    instances: instances.into(),
                };
            }
            st.fetched = Some(Instant::now());
            if let Some(v) = remote_version {
                st.next_try = None;
                st.remote_version = v;
                if st.failing {
                    st.failing = false;
                    log::info!(
                        "registry discovery {}: registry reachable again ({} instances)",
                        self.url,
                        st.snapshot.instances.len()
                    );
                }
            }
            changed
        };
        if changed {
            self.subscribers.lock().retain(|tx| {
                !matches!(
                    tx.try_send(()),
                    Err(crossbeam_channel::TrySendError::Disconnected(_))
                )
            });
        }
    }
}
