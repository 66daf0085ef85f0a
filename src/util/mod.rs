//! Small helpers every layer may use: named, owned threads
//! (`threads`), Go-style durations (`duration`), a one-slot hand-off
//! between threads (`handoff`), and bearer tokens (`token`). They import
//! nothing else from the crate
//! but the error type.

pub(crate) mod duration;
pub(crate) mod handoff;
pub(crate) mod threads;
pub(crate) mod token;
