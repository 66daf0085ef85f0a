//! The registry server: `tiny_http` worker threads over one locked table
//! (one of them receiving at a time, see `roles`), and a reaper thread that
//! purges expired entries and hands long polls' answers to `answer`'s
//! threads. Its bounds are in `limits`.
//!
//! This file holds more than one idea and is over 600 lines; issue 17
//! (API and layout) splits it by idea. Hardening (issue 16) left it whole
//! so that parallel changes to it merged cleanly.

use std::collections::HashMap;
use std::io::{Cursor, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;
use tiny_http::{Header, Method, Request, Response};

use super::answer::{Answerers, Job};
use super::epoch::Epoch;
use super::limits::{self, Limits};
use super::listen::{self, set_inherited_options, start_tiny_http};
use super::roles::{self, Roles};
use super::table::{Put, Table};
use super::watch::{Watcher, Watchers};
use super::{check_addr, Registration, ADDR_HEADERS, LIST_HEADERS, TTL_HEADER, VERSION_HEADER};
use crate::error::{Error, Result};
use crate::util::duration::{parse_duration, GoDuration};
use crate::util::threads::ThreadGroup;
use crate::xclient::Instance;

/// How long a long poll waits when the request does not say.
const DEFAULT_WATCH: Duration = Duration::from_secs(30);
/// The longest wait a long poll may ask for.
const MAX_WATCH: Duration = Duration::from_secs(300);

/// Settings for a registry server; [`start`](Registry::start) runs it.
///
/// On Linux the threads that answer requests (named `geerpc-reg-conn` and
/// `geerpc-reg-http`) run under the `SCHED_BATCH` policy when started from
/// a thread under the default one: a request arriving does not preempt the
/// thread that sent it, which under load saves a context switch and lets
/// the sender go on sending. A woken thread may wait a little longer for a
/// CPU, until the running thread blocks or the scheduler's next tick.
///
/// ```
/// use geerpc::Registry;
/// use std::time::Duration;
///
/// let registry = Registry::new()
///     .addr("127.0.0.1:0")
///     .ttl(Duration::from_secs(30))
///     .start()?;
/// println!("registry at {}", registry.url());
/// registry.shutdown();
/// # Ok::<(), geerpc::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Registry {
    addr: String,
    ttl: Duration,
    /// See [`warmup`](Self::warmup), in `epoch.rs`.
    pub(super) warmup: Duration,
    paths: Vec<String>,
    workers: usize,
    write_timeout: Duration,
    /// Set by the knobs in `limits`.
    pub(super) limits: Limits,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl Registry {
    /// Where a registry listens unless told otherwise.
    pub const DEFAULT_ADDR: &'static str = "127.0.0.1:9999";
    /// The article's path; `/_geerpc_/registry` is served too.
    pub const DEFAULT_PATH: &'static str = "/_rpc_/registry";
    /// How long an address stays listed without a heartbeat.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
    /// Threads answering requests, by default.
    pub const DEFAULT_WORKERS: usize = 4;
    /// How long writing one response may block on a peer that does not read.
    pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

    /// A registry on `127.0.0.1:9999` with a 5 minute TTL, answering on
    /// `/_rpc_/registry` and `/_geerpc_/registry`.
    pub fn new() -> Registry {
        Registry {
            addr: Registry::DEFAULT_ADDR.to_string(),
            ttl: Registry::DEFAULT_TTL,
            warmup: Registry::DEFAULT_WARMUP,
            paths: vec![
                Registry::DEFAULT_PATH.to_string(),
                "/_geerpc_/registry".to_string(),
            ],
            workers: Self::DEFAULT_WORKERS,
            write_timeout: Self::DEFAULT_WRITE_TIMEOUT,
            limits: Limits::default(),
        }
    }

    /// The address to listen on, `HOST:PORT`; port 0 picks a free one.
    pub fn addr(mut self, addr: impl Into<String>) -> Registry {
        self.addr = addr.into();
        self
    }

    /// How long an address stays listed after its last heartbeat; zero
    /// keeps addresses until they deregister.
    pub fn ttl(mut self, ttl: Duration) -> Registry {
        self.ttl = ttl;
        self
    }

    /// Answers on this path only, instead of the two default ones.
    pub fn path(mut self, path: impl Into<String>) -> Registry {
        let mut p = path.into();
        if !p.starts_with('/') {
            p.insert(0, '/');
        }
        self.paths = vec![p];
        self
    }

    /// How many threads answer requests
    /// ([`DEFAULT_WORKERS`](Self::DEFAULT_WORKERS)). One of them receives
    /// at a time, which under load saves waking a thread per request;
    /// another takes over when one request has held it for a millisecond
    /// (a peer slow to read, a large listing). Long polls do not hold one
    /// while they wait.
    pub fn workers(mut self, n: usize) -> Registry {
        self.workers = n.max(1);
        self
    }

    /// How long a worker may block writing a response to a peer that does
    /// not read ([`DEFAULT_WRITE_TIMEOUT`](Self::DEFAULT_WRITE_TIMEOUT));
    /// then that connection's response fails and the worker moves on.
    pub fn write_timeout(mut self, timeout: Duration) -> Registry {
        self.write_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Binds and serves in background threads.
    pub fn start(self) -> Result<RegistryHandle> {
        let listener = listen::bind(&self.addr)?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::io("registry: read listener address", e))?;
        set_inherited_options(&listener, self.write_timeout)?;
        // For `Epoch::stop`; without it only that early stop is lost.
        let listener_copy = listener.try_clone().ok();
        let http = Arc::new(start_tiny_http(listener, local, &self.limits)?);
        let limits = &self.limits;
        let threads = ThreadGroup::default();
        let (wake_tx, wake_rx) = crossbeam_channel::bounded(1);
        let shared = Arc::new(Shared {
            addr: local,
            paths: self.paths,
            // Rounded up: "0" would say the entries never expire.
            ttl_ms: self.ttl.as_nanos().div_ceil(1_000_000).to_string(),
            state: Mutex::new(State {
                table: Table::with_caps(self.ttl, limits.max_instances, limits.max_services),
                watchers: Watchers::new(limits.max_watchers, limits.max_watchers_per_client),
            }),
            wake: wake_tx,
            stopping: AtomicBool::new(false),
            roles: Roles::default(),
            max_body: limits.max_body,
            answerers: Answerers::new(threads.clone(), limits.max_watchers),
            refusals: limits::RefusalLog::default(),
            epoch: Epoch::new(self.warmup, listener_copy),
        });
        let handle = RegistryHandle {
            shared: shared.clone(),
            http: Mutex::new(Some(http.clone())),
            threads,
            workers: self.workers,
            stopped: AtomicBool::new(false),
        };
        for _ in 0..self.workers {
            let (s, h) = (shared.clone(), http.clone());
            handle
                .threads
                .spawn("geerpc-reg-http", None, move || serve(&s, &h))
                .map_err(|e| Error::io("registry: start worker thread", e))?;
        }
        if self.workers > 1 {
            let s = shared.clone();
            handle
                .threads
                .spawn("geerpc-reg-tick", None, move || {
                    s.roles.run_ticker(roles::TICK)
                })
                .map_err(|e| Error::io("registry: start ticker thread", e))?;
        }
        let s = shared.clone();
        handle
            .threads
            .spawn("geerpc-reg-reap", None, move || reap(&s, wake_rx))
            .map_err(|e| Error::io("registry: start reaper thread", e))?;
        let s = shared.clone();
        handle
            .threads
            .spawn("geerpc-reg-hold", None, move || s.epoch.run_holds())
            .map_err(|e| Error::io("registry: start hold thread", e))?;
        log::info!(
            "registry: listening on http://{local}{} (TTL {})",
            shared.paths[0],
            GoDuration(self.ttl)
        );
        Ok(handle)
    }
}

/// A running registry. Dropping it shuts it down.
#[must_use = "dropping the RegistryHandle shuts the registry down"]
pub struct RegistryHandle {
    shared: Arc<Shared>,
    http: Mutex<Option<Arc<tiny_http::Server>>>,
    threads: ThreadGroup,
    workers: usize,
    stopped: AtomicBool,
}

impl std::fmt::Debug for RegistryHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryHandle")
            .field("addr", &self.shared.addr)
            .finish_non_exhaustive()
    }
}

impl RegistryHandle {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// The URL servers and clients use: `http://ADDR/_rpc_/registry`.
    pub fn url(&self) -> String {
        let mut a = self.shared.addr;
        if a.ip().is_unspecified() {
            a.set_ip(match a {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        format!("http://{a}{}", self.shared.paths[0])
    }

    /// The instances listed now, sorted by address.
    pub fn instances(&self) -> Vec<Instance> {
        self.shared.state.lock().table.alive(None, Instant::now())
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
    /// does nothing.
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

impl Drop for RegistryHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Shared {
    addr: SocketAddr,
    paths: Vec<String>,
    /// The TTL in milliseconds, as a `POST`'s answer tells it.
    ttl_ms: String,
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
}

struct State {
    table: Table,
    watchers: Watchers,
}

impl Shared {
    fn wake(&self) {
        let _ = self.wake.try_send(());
    }
}

/// A worker: sleeps until it holds the receiving role (see `roles`), then
/// receives and answers until the role is handed on or the registry stops.
fn serve(shared: &Shared, http: &tiny_http::Server) {
    // Like the connection threads (see `start_tiny_http`): a worker woken
    // by a request need not preempt the thread that queued it.
    let _ = crate::util::threads::use_batch_policy();
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

fn header(name: &str, value: &str) -> Header {
    // Names are ours; values are addresses checked to be ASCII, or numbers.
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("ASCII header")
}

fn text(status: u16, body: impl Into<String>) -> Response<Cursor<Vec<u8>>> {
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
fn respond(shared: &Shared, rq: Request, resp: Response<Cursor<Vec<u8>>>) {
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
    if !shared.paths.iter().any(|p| p == path) {
        let msg = format!(
            "404 not found: the registry is at {}\n",
            shared.paths.join(" and ")
        );
        return respond(shared, rq, text(404, msg));
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
    let reg: Registration = if body.iter().all(u8::is_ascii_whitespace) {
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
        let put = st.table.put(&addr, &reg, Instant::now());
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
        Put::New => log::info!("registry {}: {addr} registered", shared.addr),
        Put::Changed => log::info!("registry {}: {addr} updated", shared.addr),
        Put::Renewed => log::trace!("registry {}: {addr} renewed", shared.addr),
    }
    respond(
        shared,
        rq,
        Response::from_string(String::new())
            .with_status_code(200)
            .with_header(header(TTL_HEADER, &shared.ttl_ms)),
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

struct Query {
    service: Option<String>,
    json: bool,
    watch: Option<String>,
    timeout: Option<String>,
}

fn parse_query(q: &str) -> Query {
    let mut out = Query {
        service: None,
        json: false,
        watch: None,
        timeout: None,
    };
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        match k {
            "service" if !v.is_empty() => out.service = Some(v),
            "format" => out.json = v == "json",
            "watch" => out.watch = Some(v),
            "timeout" => out.timeout = Some(v),
            _ => {}
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%')
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (_, Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (c, None) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn wants_json(rq: &Request, query: &Query) -> bool {
    query.json
        || rq
            .headers()
            .iter()
            .any(|h| h.field.equiv("Accept") && h.value.as_str().contains("application/json"))
}

fn get(shared: &Shared, rq: Request, query: &Query) {
    let json = wants_json(&rq, query);
    let service = query.service.as_deref();
    let Some(watch) = &query.watch else {
        if !json {
            let (addrs, version) = {
                let st = shared.state.lock();
                let version = st.table.version(service);
                (
                    st.table.alive_addrs(service, Instant::now()).join(","),
                    version,
                )
            };
            return respond(shared, rq, addr_listing(addrs, version));
        }
        let (instances, version) = {
            let st = shared.state.lock();
            (
                st.table.alive(service, Instant::now()),
                st.table.version(service),
            )
        };
        return respond(shared, rq, listing(&instances, version, json));
    };
    let Ok(known) = watch.parse::<u64>() else {
        let msg = format!("400 watch wants the version a previous answer gave, not {watch:?}\n");
        return respond(shared, rq, text(400, msg));
    };
    let wait = match query.timeout.as_deref().map(parse_duration) {
        None => DEFAULT_WATCH,
        Some(Ok(d)) => d.min(MAX_WATCH),
        Some(Err(e)) => return respond(shared, rq, text(400, format!("400 timeout: {e}\n"))),
    };
    let now = Instant::now();
    let mut st = shared.state.lock();
    let version = st.table.version(service);
    if version != known || wait.is_zero() || shared.stopping.load(Ordering::Acquire) {
        let instances = st.table.alive(service, now);
        drop(st);
        return respond(shared, rq, listing(&instances, version, json));
    }
    if let Err(refused) = st.watchers.check(rq.remote_addr().map(|a| a.ip())) {
        drop(st);
        let (status, msg) = limits::watch_refused(refused);
        shared.refusals.refused(shared.addr, &msg);
        return respond(shared, rq, text(status, msg));
    }
    log::debug!(
        "registry {}: long poll parked at version {version} for {service:?}",
        shared.addr
    );
    st.watchers.push(Watcher {
        request: rq,
        service: query.service.clone(),
        known,
        deadline: now + wait,
        json,
    });
    shared.wake();
}

/// The answer to a `GET`: the list in headers (as Go peers read it) or as
/// JSON in the body.
fn listing(instances: &[Instance], version: u64, json: bool) -> Response<Cursor<Vec<u8>>> {
    let version_header = header(VERSION_HEADER, &version.to_string());
    if json {
        let body =
            serde_json::to_vec(&ListingRef { version, instances }).expect("a listing serializes");
        return Response::from_data(body)
            .with_header(header("Content-Type", "application/json"))
            .with_header(version_header);
    }
    let addrs: Vec<&str> = instances.iter().map(|i| i.addr.as_str()).collect();
    addr_listing(addrs.join(","), version)
}

/// The plain listing: the sorted addresses, comma-separated, under both
/// header names, which is where Go peers read them. The body stays empty:
/// the JSON listing is the one for long lists.
fn addr_listing(joined: String, version: u64) -> Response<Cursor<Vec<u8>>> {
    let mut resp =
        text(200, String::new()).with_header(header(VERSION_HEADER, &version.to_string()));
    for name in LIST_HEADERS {
        resp.add_header(header(name, &joined));
    }
    resp
}

/// [`Listing`](super::Listing) without owning the instances.
#[derive(serde::Serialize)]
struct ListingRef<'a> {
    version: u64,
    instances: &'a [Instance],
}

/// Purges expired entries when they expire and answers long polls when
/// their list changes or their time is up.
fn reap(shared: &Arc<Shared>, wake: Receiver<()>) {
    loop {
        let next = {
            let st = shared.state.lock();
            let expiry = st.table.next_expiry();
            let poll = st.watchers.next_deadline();
            match (expiry, poll) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        };
        let wait = next.map_or(Duration::from_secs(3600), |t| {
            t.saturating_duration_since(Instant::now())
        });
        if let Err(RecvTimeoutError::Disconnected) = wake.recv_timeout(wait) {
            break;
        }
        if shared.stopping.load(Ordering::Acquire) {
            break;
        }
        let now = Instant::now();
        let due = {
            let mut st = shared.state.lock();
            for addr in st.table.purge(now) {
                log::info!(
                    "registry {}: {addr} expired (no heartbeat within the TTL)",
                    shared.addr
                );
            }
            let State { table, watchers } = &mut *st;
            let due = watchers
                .take(|w| w.deadline <= now || table.version(w.service.as_deref()) != w.known);
            lists(table, due, now)
        };
        answer(shared, due);
    }
    // Pending polls get the list as it is; their next request fails.
    let left = {
        let mut st = shared.state.lock();
        let w = st.watchers.take(|_| true);
        lists(&st.table, w, Instant::now())
    };
    answer(shared, left);
    shared.answerers.stop();
}

type Due = (Watcher, Arc<Vec<Instance>>, u64);

/// The list each watcher gets, computed once per service.
fn lists(table: &Table, watchers: Vec<Watcher>, now: Instant) -> Vec<Due> {
    let mut cache: HashMap<Option<String>, (Arc<Vec<Instance>>, u64)> = HashMap::new();
    watchers
        .into_iter()
        .map(|w| {
            let (instances, version) = cache.entry(w.service.clone()).or_insert_with(|| {
                let s = w.service.as_deref();
                (Arc::new(table.alive(s, now)), table.version(s))
            });
            let (instances, version) = (instances.clone(), *version);
            (w, instances, version)
        })
        .collect()
}

/// Hands each answer to a thread of its own (see `answer`): a watcher that
/// does not read delays neither the reaper nor another watcher.
fn answer(shared: &Arc<Shared>, due: Vec<Due>) {
    let jobs = due.into_iter().map(|(w, instances, version)| {
        let shared = shared.clone();
        Box::new(move || {
            respond(&shared, w.request, listing(&instances, version, w.json));
        }) as Job
    });
    shared.answerers.dispatch(jobs.collect());
}
