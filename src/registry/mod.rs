//! The HTTP registry (PROTOCOL.md section 7): the [`Registry`] server, the
//! [`Heartbeat`] that keeps a server registered, and the
//! [`RegistryDiscovery`] that clients read it through.
//!
//! Layout: `server/` is the registry server ([`Registry`], started by
//! [`Registry::builder`]); `discovery/` the client side that reads it;
//! `heartbeat.rs` and `beat.rs` the server side that registers in it;
//! `epoch.rs` the registry's start identity, which all three speak. This
//! file holds the wire vocabulary they share (header names, the JSON
//! bodies, address and URL checks, the HTTP agent). The three parts talk
//! only over HTTP: none imports another's internals.
//!
//! # Wire format
//!
//! The registry answers on `/_rpc_/registry` and `/_geerpc_/registry` (or one
//! path of your choice). What a Go GeeRPC peer sends works unchanged:
//!
//! - `POST` with `X-rpc-Server: tcp@HOST:PORT` (or `X-rpc-Servers`, or
//!   `X-Geerpc-Server`) registers or renews an address;
//! - `GET` answers with the alive addresses, sorted and comma-separated, in
//!   the response headers `X-rpc-Servers` and `X-Geerpc-Servers`.
//!
//! Extensions, which a Go peer never sends:
//!
//! - a `POST` body `{"services":["Arith"],"weight":2,"metadata":{"version":"1.2"}}`
//!   (`application/json`, every field optional; it may also carry `addr`
//!   instead of the header) says what the instance serves;
//! - `DELETE` with the same header deregisters;
//! - `GET ?service=Arith` lists only the instances that name `Arith`; those
//!   that named no service (Go servers) only where no instance names it,
//!   or also where some does with `&include_legacy=true`
//!   ([`RegistryDiscoveryBuilder::include_legacy`]);
//! - `GET` with `Accept: application/json` (or `?format=json`) answers with
//!   `{"version":N,"instances":[...]}` in the body and no list header, so
//!   thousands of instances do not overflow a client's header limit;
//! - `GET ?watch=N&timeout=30s` is a long poll: it answers as soon as the
//!   version of the (filtered) list differs from `N`, or at the timeout with
//!   the list unchanged. Every answer carries the list's version in
//!   `X-Geerpc-Version`.
//! - A `POST`'s answer says in `X-Geerpc-Ttl-Ms` after how many
//!   milliseconds the registry forgets an address it does not hear from
//!   again (0: never). A [`Heartbeat`] on its default interval follows a
//!   TTL shorter than it assumed, so that its instance does not drop out
//!   between beats; an interval set by hand stays as set. A `POST`
//!   without a body (a Go server's, which beats every 4 minutes whatever
//!   the TTL) is kept at least [`RegistryBuilder::legacy_ttl`] (5 min).
//! - Every answer says which start of the registry it comes from
//!   (`X-Geerpc-Registry-Epoch`, a random token) and the milliseconds left
//!   of its warmup (`X-Geerpc-Registry-Warmup`). `GET ?hold=EPOCH&timeout=4m`
//!   is held until its timeout (at once under another epoch): a
//!   [`Heartbeat`] keeps one open between beats, so that a registry that
//!   stops or restarts is noticed at once and the address registered again;
//!   a [`RegistryDiscovery`] that sees a new epoch keeps its last list
//!   through the warmup (see `epoch.rs`).
//!
//! # Credentials and HTTPS
//!
//! A registry given a write token
//! ([`RegistryBuilder::write_token`]) answers a `POST` or `DELETE`
//! without `Authorization: Bearer TOKEN` with `401` and
//! `WWW-Authenticate: Bearer`, and changes nothing; with a read token
//! ([`RegistryBuilder::read_token`]) every `GET` (list, JSON listing, long
//! poll, hold) needs it or the write token. Without tokens it is open, as
//! Go peers expect. [`HttpRegistrar::token`] and
//! [`RegistryDiscoveryBuilder::token`] send one. With the `tls` feature
//! the registry serves HTTPS (`RegistryBuilder::tls_pem_files`) and
//! clients trust a given CA (`tls_ca_file`), so that a token never crosses
//! the network in clear. Tokens come from files or the environment
//! ([`crate::Token`]) and are never logged.
//!
//! # Bounds
//!
//! What a peer can make the registry hold is bounded, each by a
//! [`RegistryBuilder`] knob whose documentation gives the default:
//!
//! - a request head of at most 16 KiB (`431` and close past it), sent within
//!   10 s, and then its body within 10 s (the connection is closed past
//!   either); `POST` bodies of at most 64 KiB (`413`);
//! - 10,000 connections (`503` at accept past it); the listen backlog is
//!   1024, so a burst of connects does not wait for SYN retries, and every
//!   accepted connection gets a thread at once;
//! - 10,000 parked long polls (`503`), 1,000 of them from one client IP
//!   address (`429`);
//! - 10,000 listed instances and 10,000 service names (`507` for a new
//!   address or name past them; renewals always succeed). A service name
//!   no instance serves any more is forgotten.
//!
//! Long-poll answers are written on threads of their own, never by the
//! reaper: a watcher that does not read its answer delays neither TTL
//! purges nor any other watcher.
//!
//! The HTTP-level bounds live in a patched tiny_http carried in
//! `vendor/tiny_http` (its `PATCHES.md` says what changed and why).

mod access;
mod beat;
mod discovery;
mod epoch;
mod heartbeat;
mod server;

pub use discovery::{RegistryDiscovery, RegistryDiscoveryBuilder};
pub use heartbeat::{Heartbeat, HttpRegistrar};
pub use server::{Registry, RegistryBuilder};

use serde::{Deserialize, Serialize};

use crate::xclient::Instance;

/// The request headers that carry an address, in the order they are looked for.
pub(crate) const ADDR_HEADERS: [&str; 3] = ["X-rpc-Server", "X-rpc-Servers", "X-Geerpc-Server"];
/// The response headers that carry the comma-separated list.
pub(crate) const LIST_HEADERS: [&str; 2] = ["X-rpc-Servers", "X-Geerpc-Servers"];
/// The response header that carries the list's version.
pub(crate) const VERSION_HEADER: &str = "X-Geerpc-Version";
/// The `POST` response header that carries the registry's TTL, in milliseconds.
pub(crate) const TTL_HEADER: &str = "X-Geerpc-Ttl-Ms";

/// The JSON listing a `GET` answers with when asked for JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Listing {
    pub(crate) version: u64,
    pub(crate) instances: Vec<Instance>,
}

/// What a `POST` body may say about the instance; every field is optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Registration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) addr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) services: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) metadata: Option<std::collections::BTreeMap<String, String>>,
}

/// Checks that `addr` is a `PROTOCOL@ADDR` that fits in a comma-separated
/// header list. The protocol must be written out on the wire even though
/// [`crate::Address`] reads a bare `HOST:PORT` as TCP: Go clients read
/// registry entries by splitting on `@`.
pub(crate) fn check_addr(addr: &str) -> crate::Result<()> {
    if !addr.contains('@') {
        return Err(crate::Error::InvalidAddress {
            addr: addr.to_string(),
            reason:
                "a registry entry must name its protocol (tcp@HOST:PORT): Go clients split it on @"
                    .into(),
        });
    }
    addr.parse::<crate::Address>()?;
    if addr
        .chars()
        .any(|c| c == ',' || !c.is_ascii() || c.is_ascii_whitespace() || c.is_ascii_control())
    {
        return Err(crate::Error::InvalidAddress {
            addr: addr.to_string(),
            reason: "only ASCII without commas, spaces or control characters is allowed".into(),
        });
    }
    Ok(())
}

/// Checks that a registry URL is an `http(s)://` URL.
pub(crate) fn check_url(url: &str) -> crate::Result<()> {
    // Built without TLS, ureq would only say "TLS required" at the first
    // request; say which feature is missing, at once.
    #[cfg(not(feature = "tls"))]
    if url.starts_with("https://") {
        return Err(crate::Error::Registry {
            url: url.to_string(),
            message: "https:// needs geerpc's \"tls\" feature, which this build lacks".into(),
        });
    }
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && url.parse::<ureq::http::Uri>().is_ok();
    if ok {
        Ok(())
    } else {
        Err(crate::Error::Registry {
            url: url.to_string(),
            message: "expected a URL such as http://127.0.0.1:9999/_rpc_/registry".into(),
        })
    }
}

/// The error for a failed request to `url`.
pub(crate) fn request_error(url: &str, what: &str, e: impl std::fmt::Display) -> crate::Error {
    crate::Error::Registry {
        url: url.to_string(),
        message: format!("{what}: {e}"),
    }
}

/// The error for a non-2xx answer: its status and the start of its body.
pub(crate) fn status_error(
    url: &str,
    what: &str,
    resp: &mut ureq::http::Response<ureq::Body>,
) -> crate::Error {
    let text = resp
        .body_mut()
        .with_config()
        .limit(1024)
        .read_to_string()
        .unwrap_or_default();
    // A 401 says which knob to look at; the body (ours never echoes a
    // token) says whether it was missing or wrong.
    let hint = if resp.status() == 401 {
        " (the registry wants a bearer token: none was configured, or it is not the registry's)"
    } else {
        ""
    };
    request_error(
        url,
        what,
        format!("status {}: {}{hint}", resp.status(), text.trim()),
    )
}

#[cfg(all(test, not(feature = "tls")))]
mod tests {
    /// Built without `tls`, an `https://` registry is refused at once,
    /// naming the feature; `http://` is unaffected.
    #[test]
    fn an_https_url_without_the_tls_feature_names_the_feature() {
        let e = super::check_url("https://127.0.0.1:1/_rpc_/registry").unwrap_err();
        assert!(e.to_string().contains("\"tls\" feature"), "{e}");
        assert!(super::check_url("http://127.0.0.1:1/_rpc_/registry").is_ok());
    }
}
