//! The registry's HTTP side: the handler tiny_http runs on each
//! connection's thread (`on_connection`, the default) or the workers' loop
//! (`RegistryBuilder::workers` > 0; one receiving at a time, see
//! `roles`), the routing of a request by path and method, `POST`
//! (register or renew), `DELETE` (deregister), a plain `GET` (the list),
//! and how every answer is written (`respond`, in one write).
//!
//! A `GET ?watch=` is handed to `long_poll` and a `GET ?hold=` to `epoch`;
//! query strings are decoded in `query`. Nothing here waits: a request is
//! answered, refused or parked at once, so a worker is never held by a
//! peer beyond one write (bounded by the write timeout).

use std::io::{Cursor, Read, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tiny_http::{Header, Method, Request, Response, StatusCode};

use super::limits;
use super::long_poll;
use super::query::{parse_query, wants_json, Query};
use super::table::{Encoded, Format, Put};
use super::ui;
use super::Shared;
use crate::registry::{
    check_addr, Registration, ADDR_HEADERS, LIST_HEADERS, TTL_HEADER, VERSION_HEADER,
};

/// A worker: sleeps until it holds the receiving role (see `roles`), then
/// receives and answers until the role is handed on or the registry stops.
/// `batch`: see [`RegistryBuilder::batch_scheduling`](super::RegistryBuilder::batch_scheduling).
pub(super) fn serve(shared: &Shared, http: &tiny_http::Server, batch: bool) {
    // Like the connection threads (see `start_tiny_http`): a worker woken
    // by a request need not preempt the thread that queued it.
    if batch {
        let _ = crate::util::threads::use_batch_policy();
    }
    let roles = &shared.roles;
    while roles.take() {
        loop {
            let rq = match http.recv() {
                Ok(rq) => rq,
                Err(_) if shared.stopping.load(Ordering::Acquire) => {
                    roles.give_up();
                    return;
                }
                Err(e) => {
                    // tiny_http hands accept errors to one receiver and stops
                    // accepting: this registry cannot serve new connections.
                    log::error!("registry {}: listener failed: {e}", shared.addr);
                    continue;
                }
            };
            let mark = roles.enter();
            handle(shared, rq);
            if !roles.leave(mark) {
                // Another worker receives now; sleep until needed.
                break;
            }
            if shared.stopping.load(Ordering::Acquire) {
                roles.give_up();
                return;
            }
        }
    }
}

/// Answers `rq` on the thread of the connection that read it (the
/// registry started with no workers, see `RegistryBuilder::workers`).
/// Nothing in `handle` waits (see above), so this returns once the answer
/// is written or the request parked. Once stopping, as `Epoch::drain` does
/// for requests left in the queue: a `503` and a close.
pub(super) fn on_connection(shared: &Shared, rq: Request) {
    if shared.stopping.load(Ordering::Acquire) {
        let resp =
            text(503, "503 the registry is stopping\n").with_header(header("Connection", "close"));
        return respond(shared, rq, resp);
    }
    handle(shared, rq);
}

pub(super) fn header(name: &str, value: &str) -> Header {
    // Names are ours; values are addresses checked to be ASCII, or numbers.
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("ASCII header")
}

pub(super) fn text(status: u16, body: impl Into<String>) -> Response<Cursor<Vec<u8>>> {
    Response::from_string(body.into())
        .with_status_code(status)
        .with_header(header("Content-Type", "text/plain; charset=utf-8"))
}

/// Sends `resp` in one write. tiny_http's own `respond` writes through a
/// 1 KiB buffer, so a listing of 100 addresses (two 2.6 KiB headers) went
/// out in five segments, each waking the peer (`perf stat`: 5 sendto per
/// GET). Formatting is still tiny_http's (`raw_print`): only the buffering
/// is ours.
///
/// `into_writer` drops the request first, and dropping an unread body
/// reads the rest of it: a peer that sent `Expect: 100-continue` would wait
/// for our answer while we wait for its body. So the one-write path is
/// taken only when tiny_http already holds the whole body in memory.
pub(super) fn respond<R: Read>(shared: &Shared, rq: Request, resp: Response<R>) {
    let resp = shared.epoch.stamp(resp);
    let sent = if body_buffered(&rq) {
        let mut out = Vec::with_capacity(1024);
        let head = *rq.method() == Method::Head;
        let printed = resp.raw_print(
            &mut out,
            rq.http_version().clone(),
            rq.headers(),
            head,
            None,
        );
        printed.and_then(|()| {
            let mut w = rq.into_writer();
            w.write_all(&out)?;
            w.flush()
        })
    } else {
        rq.respond(resp)
    };
    if let Err(e) = sent {
        log::debug!("registry {}: cannot send response: {e}", shared.addr);
    }
}

/// Whether tiny_http has read the request's whole body already: it does so
/// for bodies of up to 1 KiB sent without `Expect: 100-continue`, and a
/// request with neither length nor transfer encoding has none.
fn body_buffered(rq: &Request) -> bool {
    let has = |name: &'static str| rq.headers().iter().any(|h| h.field.equiv(name));
    match rq.body_length() {
        Some(0) => true,
        Some(n) => n <= 1024 && !has("Expect"),
        None => !has("Transfer-Encoding"),
    }
}

fn handle(shared: &Shared, rq: Request) {
    let url = rq.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    #[cfg(feature = "metrics")]
    if path == "/metrics" {
        // Readers only (the read token if one is set), and never held by
        // the warmup.
        if let Err(refusal) = shared.auth.check(&rq) {
            return unauthorized(shared, rq, refusal);
        }
        return super::metrics::respond(shared, rq);
    }
    if let Some(page) = shared.ui.then(|| ui::page(shared, &rq, path)).flatten() {
        if let Err(refusal) = shared.auth.check(&rq) {
            return unauthorized(shared, rq, refusal);
        }
        return match rq.method() {
            Method::Get | Method::Head => ui::serve(shared, rq, page),
            other => {
                let resp = text(405, format!("405 method {other} not allowed\n"))
                    .with_header(header("Allow", "GET"));
                respond(shared, rq, resp)
            }
        };
    }
    if !shared.paths.iter().any(|p| p == path) {
        let msg = format!(
            "404 not found: the registry is at {}\n",
            shared.paths.join(" and ")
        );
        return respond(shared, rq, text(404, msg));
    }
    // Before anything reads the request further: a refused one changes
    // nothing and parks nothing.
    if let Err(refusal) = shared.auth.check(&rq) {
        return unauthorized(shared, rq, refusal);
    }
    let Some(rq) = shared.epoch.hold(rq, query) else {
        return;
    };
    let query = parse_query(query);
    match rq.method() {
        Method::Get => get(shared, rq, &query),
        Method::Post => post(shared, rq),
        Method::Delete => delete(shared, rq),
        other => {
            log::debug!("registry {}: method {other} not allowed", shared.addr);
            let resp = text(405, format!("405 method {other} not allowed\n"))
                .with_header(header("Allow", "GET, POST, DELETE"));
            respond(shared, rq, resp)
        }
    }
}

/// Answers `401` with a challenge; logs the method and the peer, never
/// what was sent.
fn unauthorized(shared: &Shared, rq: Request, refusal: super::auth::Refusal) {
    let msg = refusal.message(rq.method());
    let peer = rq
        .remote_addr()
        .map_or_else(|| "?".to_string(), |p| p.to_string());
    shared
        .auth_refusals
        .refused(shared.addr, &format!("{} (from {peer})", msg.trim()));
    let resp = text(401, msg).with_header(header(
        "WWW-Authenticate",
        "Bearer realm=\"geerpc-registry\"",
    ));
    respond(shared, rq, resp)
}

/// The address a request names in one of the accepted headers.
fn addr_header(rq: &Request) -> Option<String> {
    ADDR_HEADERS.iter().find_map(|name| {
        rq.headers()
            .iter()
            .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str().trim().to_string())
    })
}

fn missing_addr() -> String {
    "400 missing header X-rpc-Server: PROTOCOL@ADDR (e.g. tcp@127.0.0.1:7001; \
     X-rpc-Servers and X-Geerpc-Server are accepted too)\n"
        .to_string()
}

fn post(shared: &Shared, mut rq: Request) {
    let max_body = shared.max_body;
    let too_large = || text(413, format!("413 body larger than {max_body} bytes\n"));
    if rq.body_length().is_some_and(|n| n as u64 > max_body) {
        return respond(shared, rq, too_large());
    }
    let mut body = Vec::new();
    if let Err(e) = rq.as_reader().take(max_body + 1).read_to_end(&mut body) {
        return respond(
            shared,
            rq,
            text(400, format!("400 cannot read body: {e}\n")),
        );
    }
    if body.len() as u64 > max_body {
        return respond(shared, rq, too_large());
    }
    // No body: a Go GeeRPC server's beat (or a hand-made one), which
    // follows no TTL the registry announces (see `table`). geerpc's
    // heartbeat always sends a JSON body, `{}` at least.
    let legacy = body.iter().all(u8::is_ascii_whitespace);
    let reg: Registration = if legacy {
        Registration::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                let msg = format!("400 malformed JSON body: {e}\n");
                log::warn!("registry {}: POST with {}", shared.addr, msg.trim());
                return respond(shared, rq, text(400, msg));
            }
        }
    };
    let Some(addr) = addr_header(&rq).or_else(|| reg.addr.clone()) else {
        log::warn!("registry {}: POST without an address header", shared.addr);
        return respond(shared, rq, text(400, missing_addr()));
    };
    if let Err(e) = check_addr(&addr) {
        log::warn!(
            "registry {}: POST with a malformed address: {e}",
            shared.addr
        );
        let msg = format!("400 malformed address in header X-rpc-Server: {e}\n");
        return respond(shared, rq, text(400, msg));
    }
    let put = {
        let mut st = shared.state.lock();
        let was_empty = st.table.is_empty();
        let put = st.table.put(&addr, &reg, legacy, Instant::now());
        shared.counters.heartbeat(put.ok());
        // A fixed TTL makes a new entry expire last: the reaper only needs
        // waking for the first entry, or when polls wait for a change.
        if (put.is_ok_and(|p| p != Put::Renewed) && !st.watchers.is_empty()) || was_empty {
            shared.wake();
        }
        put
    };
    let put = match put {
        Ok(put) => put,
        Err(full) => {
            let (status, msg) = limits::table_full(&addr, full);
            shared.refusals.refused(shared.addr, &msg);
            return respond(shared, rq, text(status, msg));
        }
    };
    match put {
        // Once per registration (again only after it expired or left).
        Put::New if legacy => log::info!(
            "registry {}: {addr} registered without geerpc's heartbeat (a Go GeeRPC \
             server?): kept {} after each beat whatever the TTL, as Go servers beat \
             every 4m; listed under a service only where no instance names it",
            shared.addr,
            shared.legacy_ttl
        ),
        Put::New => log::info!("registry {}: {addr} registered", shared.addr),
        Put::Changed => log::info!("registry {}: {addr} updated", shared.addr),
        Put::Renewed => log::trace!("registry {}: {addr} renewed", shared.addr),
    }
    respond(
        shared,
        rq,
        Response::from_string(String::new())
            .with_status_code(200)
            .with_header(header(
                TTL_HEADER,
                if legacy {
                    &shared.legacy_ttl_ms
                } else {
                    &shared.ttl_ms
                },
            )),
    )
}

fn delete(shared: &Shared, rq: Request) {
    let Some(addr) = addr_header(&rq) else {
        log::warn!("registry {}: DELETE without an address header", shared.addr);
        return respond(shared, rq, text(400, missing_addr()));
    };
    let removed = {
        let mut st = shared.state.lock();
        let removed = st.table.remove(&addr);
        if removed {
            shared.counters.deregistered();
        }
        if removed && !st.watchers.is_empty() {
            shared.wake();
        }
        removed
    };
    if removed {
        log::info!("registry {}: {addr} deregistered", shared.addr);
        respond(shared, rq, text(200, ""))
    } else {
        respond(
            shared,
            rq,
            text(404, format!("404 {addr} is not registered\n")),
        )
    }
}

/// A `GET`: the list now, or (`?watch=`) a long poll, parked in
/// `long_poll` until the list changes or its time is up.
fn get(shared: &Shared, rq: Request, query: &Query) {
    let json = wants_json(&rq, query);
    if let Some(watch) = &query.watch {
        return long_poll::park(shared, rq, query, watch, json);
    }
    let answer = shared
        .state
        .lock()
        .table
        .answer(query.wanted(), format(json), Instant::now());
    respond(shared, rq, listing(&answer))
}

/// The format a `GET` wants its list in.
pub(super) fn format(json: bool) -> Format {
    if json {
        Format::Json
    } else {
        Format::Addrs
    }
}

/// The answer to a `GET`: the list in headers (as Go peers read it) or as
/// JSON in the body, sharing the table's encoded bytes (see `listing`).
///
/// The plain listing: the sorted addresses, comma-separated, under both
/// header names, which is where Go peers read them. The body stays empty:
/// the JSON listing is the one for long lists.
pub(super) fn listing(answer: &Encoded) -> Response<Cursor<Arc<[u8]>>> {
    let version = header(VERSION_HEADER, &answer.version.to_string());
    match answer.format {
        Format::Json => {
            let len = answer.bytes.len();
            Response::new(
                StatusCode(200),
                vec![header("Content-Type", "application/json"), version],
                Cursor::new(answer.bytes.clone()),
                Some(len),
                None,
            )
        }
        Format::Addrs => {
            let mut headers = Vec::with_capacity(2 + LIST_HEADERS.len());
            headers.push(header("Content-Type", "text/plain; charset=utf-8"));
            headers.push(version);
            for name in LIST_HEADERS {
                // Addresses are checked to be ASCII before they are listed.
                let h = Header::from_bytes(name.as_bytes(), &answer.bytes[..]);
                headers.push(h.expect("ASCII header"));
            }
            let empty: Arc<[u8]> = Arc::new([]);
            Response::new(StatusCode(200), headers, Cursor::new(empty), Some(0), None)
        }
    }
}
