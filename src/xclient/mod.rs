//! Calls over many instances of a service: discovery, selection, broadcast.

mod discovery;

pub use discovery::{Discovery, Instance, Snapshot};
