//! The registry's start identity (PROTOCOL.md section 7, "Epoch") and the
//! heartbeats' holds that let a restart be noticed at once.
//!
//! A registry keeps its table in memory only: restarted, it knows nothing,
//! and with the default 5 min TTL the next heartbeats are up to 4 min away.
//! So every answer says which start of the registry it comes from
//! (`X-Geerpc-Registry-Epoch`, a random token drawn at start) and how much
//! longer servers may need to register again (`X-Geerpc-Registry-Warmup`,
//! milliseconds left of the warmup counted from the start, 0 once past).
//! Discovery that sees the epoch change keeps its last list that long; a
//! heartbeat that sees it change registers again at once.
//!
//! To see the change without beating more often, a heartbeat holds a
//! request open between beats: `GET ?hold=EPOCH&timeout=4m` is answered
//! (200, empty) at its timeout, at once when `EPOCH` is not this start's,
//! and when the registry stops, after its port is closed. A registry that
//! dies (kill -9) closes the held connection; either way the heartbeat
//! learns within a round trip and keeps trying until a registry answers.
//! Holds are parked here, apart from the discovery watchers: they never
//! take a watch slot, and an answer never depends on the table, so a
//! change of the list wakes no heartbeat. Each costs the registry one
//! parked request (about 200 bytes) and the tiny_http thread that owns its
//! connection, which is why they are capped, in total and per client.
//!
//! The header names here are shared by the server, the discovery and the
//! heartbeat; the rest is the server's. It never touches the table: an
//! epoch or a hold says nothing about which instances are listed.

use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tiny_http::{Header, Method, Request, Response};

use super::server::{Registry, RegistryBuilder};
use crate::util::duration::parse_duration;

/// The header every registry answer carries: this start's token.
pub(crate) const EPOCH_HEADER: &str = "X-Geerpc-Registry-Epoch";
/// The header every registry answer carries: milliseconds left of the
/// warmup after this start.
pub(crate) const WARMUP_HEADER: &str = "X-Geerpc-Registry-Warmup";
/// The query parameter of a hold; its value is the epoch the holder knows.
pub(crate) const HOLD_PARAM: &str = "hold";
/// The longest a hold is kept before it is answered.
pub(crate) const MAX_HOLD: Duration = Duration::from_secs(300);
/// Holds parked at once; more are refused with 503 (the heartbeat then
/// just beats on its interval for a while).
const MAX_HOLDS: usize = 10_000;
/// Holds parked at once for one client address, so that one client cannot
/// take every slot (servers on one host share their address).
const MAX_HOLDS_PER_IP: usize = 1_000;

impl RegistryBuilder {
    /// The warmup after a start: how long discovery that sees the registry
    /// restarted keeps its last list, so that servers can register again
    /// first (default [`Registry::DEFAULT_WARMUP`], 3 s); zero:
    /// discovery follows a restarted registry at once, empty or not.
    pub fn warmup(mut self, warmup: Duration) -> RegistryBuilder {
        self.warmup = warmup;
        self
    }
}

impl Registry {
    /// 3 s: a heartbeat (on its defaults) learns of a restart within a
    /// round trip of the new registry answering (its hold breaks, and it
    /// tries again at most 1 s apart), then registers: about 1 s in all,
    /// twice that for a loaded host, and a margin.
    pub const DEFAULT_WARMUP: Duration = Duration::from_secs(3);
}

/// This start of the registry: its token, its warmup, and the parked holds.
pub(super) struct Epoch {
    token: String,
    started: Instant,
    warmup: Duration,
    /// Set once the warmup is over, so that answers after it need no clock.
    warm: AtomicBool,
    holds: Mutex<Holds>,
    /// Wakes the hold thread: a hold to answer sooner, or stopping.
    cv: Condvar,
    /// A copy of the listening socket, to stop accepting first thing on
    /// shutdown (see [`stop`](Self::stop)).
    listener: Mutex<Option<TcpListener>>,
}

#[derive(Default)]
struct Holds {
    /// By deadline (then arrival), so the first one is the next to answer.
    parked: BTreeMap<(Instant, u64), (Request, IpAddr)>,
    /// Where each connection's parked hold is: a connection has at most
    /// one (see `hold`).
    by_peer: HashMap<SocketAddr, (Instant, u64)>,
    per_ip: HashMap<IpAddr, usize>,
    next_id: u64,
    stopping: bool,
}

impl Holds {
    fn take(&mut self, key: (Instant, u64)) -> Option<Request> {
        let (rq, ip) = self.parked.remove(&key)?;
        if let Some(peer) = rq.remote_addr() {
            self.by_peer.remove(peer);
        }
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
        Some(rq)
    }
}

impl Epoch {
    /// `listener`: a copy of the registry's listening socket.
    pub(super) fn new(warmup: Duration, listener: Option<TcpListener>) -> Epoch {
        Epoch {
            listener: Mutex::new(listener),
            // 64 random bits: two starts never share a token in practice.
            token: format!("{:016x}", rand::random::<u64>()),
            started: Instant::now(),
            warmup,
            warm: AtomicBool::new(warmup.is_zero()),
            holds: Mutex::new(Holds::default()),
            cv: Condvar::new(),
        }
    }

    /// This start's token, as every answer carries it.
    pub(super) fn token(&self) -> &str {
        &self.token
    }

    /// How long ago this registry started.
    pub(super) fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// What is left of the warmup.
    fn warmup_left(&self) -> Duration {
        if self.warm.load(Ordering::Relaxed) {
            return Duration::ZERO;
        }
        let left = self.warmup.saturating_sub(self.started.elapsed());
        if left.is_zero() {
            self.warm.store(true, Ordering::Relaxed);
        }
        left
    }

    /// `resp` with the epoch and warmup headers, as every answer has them.
    pub(super) fn stamp<R: std::io::Read>(&self, resp: Response<R>) -> Response<R> {
        let left = self.warmup_left().as_millis().to_string();
        resp.with_header(header(EPOCH_HEADER, &self.token))
            .with_header(header(WARMUP_HEADER, &left))
    }

    /// Takes a `GET ?hold=...` (answered or parked here) and gives any
    /// other request back.
    pub(super) fn hold(&self, rq: Request, query: &str) -> Option<Request> {
        if *rq.method() != Method::Get {
            return Some(rq);
        }
        let (mut known, mut timeout) = (None, None);
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some((HOLD_PARAM, v)) => known = Some(v),
                Some(("timeout", v)) => timeout = Some(v),
                _ => {}
            }
        }
        let Some(known) = known else {
            return Some(rq);
        };
        let wait = match timeout.map(parse_duration) {
            None => MAX_HOLD,
            Some(Ok(d)) => d.min(MAX_HOLD),
            Some(Err(e)) => {
                self.answer(rq, text(400, format!("400 timeout: {e}\n")));
                return None;
            }
        };
        // A holder that knows another start learns of this one at once.
        if known != self.token || wait.is_zero() {
            self.answer(rq, ok());
            return None;
        }
        let peer = rq.remote_addr().copied();
        let ip = peer.map_or(IpAddr::from([0, 0, 0, 0]), |p| p.ip());
        let mut st = self.holds.lock();
        if st.stopping {
            drop(st);
            self.answer(rq, ok());
            return None;
        }
        // A second request on the connection of a parked hold (pipelined)
        // could not be answered before the first: tiny_http writes a
        // connection's answers in order and blocks the writer of a later
        // one. So the earlier hold ends now, first.
        let earlier = peer
            .and_then(|p| st.by_peer.get(&p).copied())
            .and_then(|key| st.take(key));
        if st.parked.len() >= MAX_HOLDS
            || st.per_ip.get(&ip).copied().unwrap_or(0) >= MAX_HOLDS_PER_IP
        {
            drop(st);
            if let Some(e) = earlier {
                self.answer(e, ok());
            }
            log::debug!("registry: too many holds, refusing one from {ip}");
            let msg = "503 too many holds parked; heartbeat on the interval\n";
            self.answer(rq, text(503, msg));
            return None;
        }
        let key = (Instant::now() + wait, st.next_id);
        st.next_id += 1;
        let first = st.parked.keys().next().is_none_or(|k| key < *k);
        if let Some(p) = peer {
            st.by_peer.insert(p, key);
        }
        *st.per_ip.entry(ip).or_insert(0) += 1;
        st.parked.insert(key, (rq, ip));
        drop(st);
        if first {
            self.cv.notify_one();
        }
        if let Some(e) = earlier {
            self.answer(e, ok());
        }
        None
    }

    /// The hold thread: answers each hold at its deadline, until stopped.
    /// Holds still parked then are answered by
    /// [`release_holds`](Self::release_holds).
    pub(super) fn run_holds(&self) {
        let mut st = self.holds.lock();
        while !st.stopping {
            let now = Instant::now();
            let due: Vec<_> = st
                .parked
                .range(..(now, u64::MAX))
                .map(|(k, _)| *k)
                .collect();
            if due.is_empty() {
                let next = st.parked.keys().next().map(|k| k.0);
                match next {
                    Some(t) => {
                        self.cv.wait_until(&mut st, t);
                    }
                    None => self.cv.wait(&mut st),
                }
                continue;
            }
            let due: Vec<Request> = due.into_iter().filter_map(|k| st.take(k)).collect();
            // Answers are written unlocked: a slow peer delays only this
            // thread (bounded by the write timeout), never a new hold.
            drop(st);
            for rq in due {
                self.answer(rq, ok());
            }
            st = self.holds.lock();
        }
    }

    /// Stops accepting connections, and ends the hold thread (the holds
    /// stay parked until [`release_holds`](Self::release_holds)).
    ///
    /// tiny_http closes its listener only once every worker has let go of
    /// the server, and until then accepts connections whose requests no
    /// worker will take: a heartbeat's hold or a discovery's poll sent in
    /// that window would wait for its whole timeout (minutes) instead of
    /// being refused and retried. Shutting the listening socket down first
    /// refuses them at once; tiny_http's accept thread then ends (logging
    /// the failed accept).
    pub(super) fn stop(&self) {
        if let Some(l) = self.listener.lock().take() {
            if let Err(e) = socket2::SockRef::from(&l).shutdown(Shutdown::Both) {
                log::debug!("registry: cannot shut the listening socket down: {e}");
            }
        }
        self.holds.lock().stopping = true;
        self.cv.notify_all();
    }

    /// Answers 503 to requests left in tiny_http's queue once the workers
    /// are gone: those of connections accepted just before the listener
    /// was shut, which nothing else would ever answer. Waits until none
    /// has come for 20 ms (1 s at most).
    pub(super) fn drain(&self, http: &tiny_http::Server) {
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut answered = 0;
        while Instant::now() < deadline {
            match http.recv_timeout(Duration::from_millis(20)) {
                Ok(Some(rq)) => {
                    answered += 1;
                    let resp = text(503, "503 the registry is stopping\n")
                        .with_header(header("Connection", "close"));
                    self.answer(rq, resp);
                }
                Ok(None) => break,
                // The failed accept of the shut listener, passed on.
                Err(_) => continue,
            }
        }
        if answered > 0 {
            log::debug!("registry: answered {answered} requests that came as it stopped");
        }
    }

    /// Answers every parked hold. Called once the registry's port is
    /// closed, so that a holder's next request is refused (and it keeps
    /// trying) rather than accepted by a registry that no longer answers.
    pub(super) fn release_holds(&self) {
        let left = {
            let mut st = self.holds.lock();
            st.stopping = true;
            st.by_peer.clear();
            st.per_ip.clear();
            std::mem::take(&mut st.parked)
        };
        for (rq, _) in left.into_values() {
            self.answer(rq, ok());
        }
    }

    /// Holds parked now.
    pub(super) fn parked(&self) -> usize {
        self.holds.lock().parked.len()
    }

    fn answer(&self, rq: Request, resp: Response<Cursor<Vec<u8>>>) {
        if let Err(e) = rq.respond(self.stamp(resp)) {
            log::debug!("registry: cannot answer a hold: {e}");
        }
    }
}

fn header(name: &str, value: &str) -> Header {
    // Names are ours; values are hex tokens and numbers.
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("ASCII header")
}

fn ok() -> Response<Cursor<Vec<u8>>> {
    Response::from_data(Vec::new()).with_status_code(200)
}

fn text(status: u16, body: impl Into<String>) -> Response<Cursor<Vec<u8>>> {
    Response::from_string(body.into())
        .with_status_code(status)
        .with_header(header("Content-Type", "text/plain; charset=utf-8"))
}
