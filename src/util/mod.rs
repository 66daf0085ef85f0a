//! Small helpers every layer may use: named, owned threads
//! (`threads`), Go-style durations (`duration`), a one-slot hand-off
//! between threads (`handoff`), bearer tokens (`token`), and the CA and
//! client certificate of the HTTP clients (`http_tls`). They import
//! nothing else from the crate
//! but the error type.

pub(crate) mod duration;
pub(crate) mod handoff;
#[cfg(all(feature = "tls", any(feature = "registry", feature = "etcd")))]
pub(crate) mod http_tls;
#[cfg(feature = "metrics")]
pub(crate) mod prom;
pub(crate) mod threads;
pub(crate) mod token;
