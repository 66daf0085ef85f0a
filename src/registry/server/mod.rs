//! The registry server: `tiny_http` worker threads over one locked table
//! (one of them receiving at a time, see `roles`), and a reaper thread that
//! purges expired entries and hands long polls' answers to `answer`'s
//! threads. This file holds what they share; each idea has its file:
//!
//! - `builder`: [`RegistryBuilder`], the settings, and the start;
//! - `running`: [`Registry`], the running server, and its shutdown;
//! - `http`: answering on the connection's thread (or the workers' loop),
//!   routing, `POST`, `DELETE`, `GET`, and writing answers; `query`: decoding query strings;
//! - `long_poll`: parking `GET ?watch=` polls; `reap`: the reaper;
//!   `answer`: the threads that write parked polls' answers;
//! - `table`: the listed instances and their versions;
//! - `auth`: the write and read tokens and their check;
//! - `limits`: the bounds and their knobs; `listen`: the listening socket
//!   and tiny_http's start; `roles`: which worker receives.
//!
//! The server never imports from the discovery or the heartbeat, which are
//! its HTTP peers; what they share is in the parent module and `epoch`.
//!
//! Lock order: `Shared::state` may be taken while holding nothing else;
//! `Shared::wake` is a bounded channel sent to with `try_send`, never
//! blocking, so it may be used under the lock.

mod answer;
mod auth;
mod builder;
mod http;
mod limits;
mod listen;
mod long_poll;
mod metrics;
mod query;
mod reap;
mod roles;
mod running;
mod table;
#[cfg(test)]
mod tests;
mod ui;

pub use builder::RegistryBuilder;
pub use running::Registry;

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;

use crossbeam_channel::Sender;
use parking_lot::Mutex;

use answer::Answerers;
use long_poll::Watchers;
use roles::Roles;
use table::Table;

use super::epoch::Epoch;
use crate::wire::Address;

/// What the workers, the reaper and the running [`Registry`] share.
struct Shared {
    /// The bound socket address (for logs and the port's release).
    addr: SocketAddr,
    /// The same, as [`Registry::addr`] tells it (`tcp@HOST:PORT`).
    address: Address,
    /// What [`Registry::url`] tells, made once at start.
    url: String,
    paths: Vec<String>,
    /// The TTL in milliseconds, as a `POST`'s answer tells it.
    ttl_ms: String,
    /// The same for a legacy `POST` (no JSON body, see `table`), and as a
    /// duration for the log.
    legacy_ttl_ms: String,
    legacy_ttl: crate::util::duration::GoDuration,
    state: Mutex<State>,
    /// Wakes the reaper: a new long poll, or a change while polls wait.
    wake: Sender<()>,
    stopping: AtomicBool,
    roles: Roles,
    max_body: u64,
    /// Writes long polls' answers (the reaper never does).
    answerers: Answerers,
    /// Refusals by the table and long-poll caps, logged once per episode.
    refusals: limits::RefusalLog,
    /// This start's identity, stamped on every answer; heartbeats' holds.
    epoch: Epoch,
    /// The tokens requests must carry (none: open).
    auth: auth::Auth,
    /// Refused credentials, logged at warn once per episode.
    auth_refusals: limits::RefusalLog,
    /// Whether the page (`ui.rs`) is served.
    ui: bool,
    /// What the metrics count (`metrics`).
    counters: metrics::Counters,
}

/// The table and the parked long polls, under one lock: a poll is parked
/// only if the table's version, read under the same lock, is the one it
/// knows, and every change made while polls are parked wakes the reaper,
/// so no change is missed between the check and the parking.
struct State {
    table: Table,
    watchers: Watchers,
}

impl Shared {
    fn wake(&self) {
        let _ = self.wake.try_send(());
    }
}
