//! One server connection: sniffing, handshake, and the leader loop (each
//! call it reads is served by `call.rs`).

use std::cell::Cell;
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::call::Kept;
use super::limits::{self, ConnSlot, QueueShed, Watch};
use super::{http, Running};
use crate::context::{Context, Identity};
use crate::error::{Error, Result};
use crate::util::duration::GoDuration;
use crate::util::handoff::Busy;
use crate::wire::codec::{encode_message_raw, Codec, Header};
use crate::wire::frame::FrameReader;
use crate::wire::handshake::{Handshake, MAX_HANDSHAKE};
use crate::wire::transport::Stream;
use crate::wire::writer::SharedWriter;

/// How long a connection answered over plain HTTP waits for its peer to
/// close, and how much of what it still sends is read meanwhile.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

/// How often a leader that is behind (the next request already buffered)
/// reads what waits in the socket, without blocking, into its buffer: so
/// that a backlog waits where its age is seen (`FrameReader::received`),
/// and stale calls are refused unrun (`deadline_exceeded`, or queue-delay
/// shedding with `adaptive_concurrency`) instead of aging unseen in the
/// kernel. 1 ms: finer than the 5 ms the shedding aims at, and at most one
/// extra syscall a millisecond per connection.
const DRAIN_EVERY: Duration = Duration::from_millis(1);
/// The most a drain leaves buffered: about 15000 small requests. Past it
/// the peer is held back by TCP, as without drains.
const DRAIN_CAP: usize = 1 << 20;

thread_local! {
    /// The connection whose call this thread is running a handler for.
    static HANDLING: Cell<Option<u64>> = const { Cell::new(None) };
}

/// The connection whose call the current thread is handling, if it is one
/// of the server's threads inside a handler.
pub(super) fn handling() -> Option<u64> {
    HANDLING.with(|h| h.get())
}

pub(crate) struct Conn {
    pub(super) id: u64,
    pub(super) peer: Arc<str>,
    stream: Stream,
    pub(super) reader: Mutex<FrameReader<Stream>>,
    pub(super) writer: SharedWriter,
    /// The codec and handle timeout, once the handshake is done.
    pub(super) proto: OnceLock<(Codec, Option<Duration>)>,
    /// Whether the leader is inside a handler, for the monitor to take
    /// reading away from a slow one.
    pub(super) busy: Busy,
    /// When it was accepted: the handshake deadline counts from here.
    pub(super) accepted: Instant,
    /// What the monitor tracks for the idle timeout.
    pub(super) watch: Watch,
    /// Its place under `max_connections`, given back on drop.
    _slot: ConnSlot,
    /// Set once the connection is closed: by us (a bound, shutdown), after
    /// a failed write, or when a read fails (a reset: the peer is gone).
    /// Not on a clean end of stream: a draining geerpc client half-closes
    /// and still waits for its replies. Each call's `Context` shares it
    /// (`Context::is_cancelled`).
    pub(super) closed: Arc<AtomicBool>,
    /// What the peer proved of itself (a verified TLS client certificate):
    /// every call's `Context::identity`. Unset: nothing proved. Set once,
    /// by the connection's first thread after the TLS handshake, before
    /// any call is read.
    pub(super) identity: OnceLock<Arc<Identity>>,
    /// Set by a shutdown called from a handler of this connection, on that
    /// handler's thread: shutdown leaves the connection open for the reply,
    /// and the thread closes it once the reply is sent.
    pub(super) close_after_reply: AtomicBool,
    /// The drain notice was queued (PROTOCOL.md section 9); sent once.
    pub(super) goaway_sent: AtomicBool,
    /// Queue-delay shedding's state for this connection's queue (its
    /// buffer, served by its leader), used with `adaptive_concurrency`.
    pub(super) queue: QueueShed,
    /// Bytes read, as of the last request read (for the metrics). Written
    /// only by the leader, which holds `reader`: a plain store, no
    /// read-modify-write on the hot path.
    pub(super) bytes_read: AtomicU64,
    /// Requests read (for the debug page). Written only by the leader,
    /// which holds `reader`, as `bytes_read` is: no read-modify-write.
    pub(super) calls_read: AtomicU64,
}

impl Conn {
    pub(super) fn new(
        id: u64,
        stream: Stream,
        cfg: &super::Config,
        slot: ConnSlot,
    ) -> std::io::Result<Conn> {
        let peer: Arc<str> = stream.peer_label().into();
        let max_message = cfg.max_message_size;
        let mut reader = FrameReader::new(stream.try_clone()?, max_message);
        // A call's deadline counts from the read that completed it.
        reader.stamp_reads();
        let writer =
            SharedWriter::new(stream.try_clone()?, max_message).with_queue_cap(cfg.max_write_queue);
        Ok(Conn {
            id,
            peer,
            stream,
            reader: Mutex::new(reader),
            writer,
            proto: OnceLock::new(),
            busy: Busy::default(),
            accepted: Instant::now(),
            watch: Watch::default(),
            _slot: slot,
            closed: Arc::new(AtomicBool::new(false)),
            identity: OnceLock::new(),
            close_after_reply: AtomicBool::new(false),
            goaway_sent: AtomicBool::new(false),
            queue: QueueShed::new(),
            bytes_read: AtomicU64::new(0),
            calls_read: AtomicU64::new(0),
        })
    }

    /// Writes an HTTP reply straight to the socket. It comes before any RPC
    /// traffic, so nothing else writes yet, and it must not be held to the
    /// RPC message size limit (a debug page may well exceed a small one). A
    /// peer that does not read is given up on after `timeout`.
    pub(super) fn write_http(
        &self,
        bytes: &[u8],
        timeout: Duration,
        rpc_timeout: Duration,
    ) -> std::io::Result<()> {
        let mut s = self.stream.try_clone()?;
        s.set_write_timeout(Some(timeout))?;
        std::io::Write::write_all(&mut s, bytes)?;
        // The socket option is shared with the RPC writer: give it back its own.
        s.set_write_timeout(Some(rpc_timeout))
    }

    /// Closes a connection after a plain HTTP reply. Closing a socket with
    /// input still unread makes the kernel send a reset, which can destroy
    /// the reply before the peer has read it (a POST body we never read, say);
    /// so the write side closes first and what the peer still sends is read
    /// and dropped, for a moment at most.
    pub(super) fn linger_close(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
        if let Ok(mut s) = self.stream.try_clone() {
            let until = Instant::now() + LINGER;
            let mut buf = [0u8; 4096];
            let mut left = LINGER_BYTES;
            while left > 0 {
                let wait = until.saturating_duration_since(Instant::now());
                if wait.is_zero() || s.set_read_timeout(Some(wait)).is_err() {
                    break;
                }
                match std::io::Read::read(&mut s, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        }
        self.close();
    }

    /// Whether it was closed (by a bound, a failed write or shutdown).
    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Closes the connection; true for the call that did it.
    pub(super) fn close(&self) -> bool {
        let first = !self.closed.swap(true, Ordering::AcqRel);
        if first {
            let _ = self.stream.shutdown(Shutdown::Both);
        }
        first
    }

    /// Closes the connection after a failed write, saying so once: at debug
    /// level when the peer simply left (its replies have nowhere to go),
    /// as a warning otherwise.
    pub(super) fn close_after_write_error(&self, e: &std::io::Error) {
        if self.close() {
            let gone = matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            );
            if gone {
                log::debug!("rpc server: {} left; replies for it dropped", self.peer);
            } else {
                log::warn!("rpc server: write to {} failed: {e}; closing", self.peer);
            }
        }
    }

    /// Writes out what is queued. A failed write leaves the stream with a
    /// partial frame at best, so the connection is closed: its peer then
    /// sees the end of the stream and fails its calls, instead of waiting
    /// for replies that were dropped.
    pub(super) fn flush(&self) -> bool {
        match self.writer.flush() {
            Ok(()) => true,
            Err(e) => {
                self.close_after_write_error(&e);
                false
            }
        }
    }

    /// Encodes and queues one reply (not yet written).
    pub(super) fn queue_reply(&self, codec: Codec, header: &Header, body: &[u8]) -> Result<()> {
        self.writer
            .enqueue(|out| encode_message_raw(codec, out, header, body))
    }
}

/// A connection's first thread: sniff, handshake, then lead.
pub(super) fn serve(run: &Arc<Running>, conn: Arc<Conn>) {
    match handshake(run, &conn) {
        Ok(Some(proto)) => {
            let _ = conn.proto.set(proto);
            lead(run, conn);
        }
        Ok(None) => finish(run, &conn),
        Err(e) => {
            // Not logged again if the monitor closed it at the deadline.
            if conn.close() {
                log::warn!(
                    "rpc server {}: connection from {}: {e}; closing",
                    run.addr,
                    conn.peer
                );
            }
            finish(run, &conn);
        }
    }
}

/// Whether `e` is a read that ran out of time (the handshake timeout).
pub(super) fn is_timeout(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. }
        if matches!(source.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
}

/// The error for a peer that did not finish its handshake (or HTTP head) in
/// time; the bare I/O error would only say "resource temporarily unavailable".
pub(super) fn handshake_timeout_error(run: &Running, what: &str) -> Error {
    Error::Protocol(format!(
        "no complete {what} within {} (the handshake timeout)",
        GoDuration(run.server.config().handshake_timeout)
    ))
}

/// Reads what comes first on a new connection. `Ok(None)`: nothing more to
/// do (the peer left, or an HTTP request was answered).
fn handshake(run: &Arc<Running>, conn: &Conn) -> Result<Option<(Codec, Option<Duration>)>> {
    read_first(run, conn).map_err(|e| {
        if is_timeout(&e) {
            handshake_timeout_error(run, "handshake")
        } else {
            e
        }
    })
}

fn read_first(run: &Arc<Running>, conn: &Conn) -> Result<Option<(Codec, Option<Duration>)>> {
    let cfg = run.server.config();
    conn.stream
        .set_read_timeout(Some(cfg.handshake_timeout))
        .map_err(|e| Error::io("set handshake timeout", e))?;
    #[cfg(all(feature = "tls", unix))]
    tls_handshake(conn, cfg.handshake_timeout)?;
    let mut rd = conn.reader.lock();
    let mut first = match rd.peek(1)?.first() {
        Some(&b) => b,
        None => return Ok(None),
    };
    if first.is_ascii_uppercase() {
        match http::serve(run, conn, &mut rd)? {
            http::Outcome::Rpc => {
                first = match rd.peek(1)?.first() {
                    Some(&b) => b,
                    None => return Ok(None),
                }
            }
            http::Outcome::Done => {
                drop(rd);
                conn.linger_close();
                return Ok(None);
            }
        }
    }
    if !(first == b'{' || first.is_ascii_whitespace()) {
        // 0x16 opens a TLS handshake record: say so, it is a common mistake.
        let hint = if first == 0x16 {
            " (a TLS ClientHello: this listener is plaintext, TLS is served by Server::listen_tls)"
        } else {
            ""
        };
        return Err(Error::Protocol(format!(
            "unexpected first byte {first:#04x}: neither an RPC handshake nor HTTP{hint}"
        )));
    }
    let option = rd
        .read_value(Codec::Json, MAX_HANDSHAKE)?
        .ok_or_else(|| Error::Protocol("connection closed before the handshake".into()))?;
    let proto = Handshake::accept(&option)?;
    #[cfg(feature = "gob")]
    if proto.0 == Codec::Gob {
        rd.gob_after_option();
        conn.writer.use_gob();
    }
    conn.stream
        .set_read_timeout(None)
        .map_err(|e| Error::io("clear handshake timeout", e))?;
    Ok(Some(proto))
}

/// On a TLS connection: the TLS handshake, by the handshake timeout, and
/// the verified client certificate (mutual TLS) as the connection's
/// identity. A plain connection: nothing.
#[cfg(all(feature = "tls", unix))]
fn tls_handshake(conn: &Conn, timeout: Duration) -> Result<()> {
    let deadline = conn.accepted + timeout;
    let leaf = conn.stream.tls_handshake(Some(deadline)).map_err(|e| {
        if e.kind() == std::io::ErrorKind::TimedOut {
            Error::Protocol(format!(
                "no complete TLS handshake within {} (the handshake timeout)",
                GoDuration(timeout)
            ))
        } else {
            Error::io("TLS", e)
        }
    })?;
    if let Some((subject, names)) = leaf.as_ref().and_then(crate::wire::tls::identity_of) {
        let _ = conn.identity.set(Arc::new(Identity::new(subject, names)));
    }
    Ok(())
}

/// What reading the next request came to. A request itself is read into
/// the thread's `Kept` (its header, its body, when it arrived), in place:
/// with a thousand connections served in turn, each call finds its
/// thread's stack cold, and every line of it a call writes is a cache miss
/// (`benches/cache_callgrind.sh`); a 120-byte header moved from
/// slot to slot wrote several.
enum Next {
    Request,
    /// The peer closed (or we stopped reading).
    End,
    /// The stream is unusable; the connection must close.
    Broken(Error),
}

/// Starts a thread that writes out what the socket did not take at once;
/// false (and the connection closed) if no thread could be started.
pub(super) fn start_writer(run: &Running, conn: &Arc<Conn>) -> bool {
    let c = conn.clone();
    if let Err(e) = run.threads.spawn("geerpc-writer", None, move || {
        c.flush();
    }) {
        log::error!("rpc server {}: cannot start a writer: {e}", run.addr);
        conn.close();
        return false;
    }
    true
}

fn read_request(run: &Running, conn: &Arc<Conn>, codec: Codec, kept: &mut Kept) -> Next {
    let mut rd = conn.reader.lock();
    // Behind (the next request already buffered): once a millisecond,
    // read what waits in the socket without blocking, so that requests are
    // not kept out of sight for as long as the backlog lasts; and if
    // something came, send the replies batched so far, which a backlog fed
    // that way would otherwise hold back. (Nothing came: the peer waits for
    // replies before it sends more, as a closed loop does; flushing there
    // only makes batches smaller.) Not while the write queue is full: that
    // bound stops reading.
    let behind = rd.has_buffered_message(codec);
    let mut flush = !behind;
    // Only with queue-delay shedding on (`adaptive_concurrency`): a server
    // without it keeps its batches (a drain costs 1x64 callers ~5%).
    if behind
        && run.server.shared.limiter.sheds_queue()
        && !conn.writer.is_full()
        && rd.drain_due(DRAIN_EVERY)
    {
        match rd.drain_nowait(DRAIN_CAP) {
            Ok(n) => flush = n > 0,
            // The blocking read that comes sees it again and ends the
            // connection.
            Err(e) => log::debug!("rpc server {}: drain from {}: {e}", run.addr, conn.peer),
        }
    }
    if flush {
        // About to block (or fed while behind): let the replies batched so
        // far go out first, but without blocking on the write (see
        // SharedWriter::flush_nowait); what the socket does not take now,
        // a writer thread sends.
        match conn.writer.flush_nowait() {
            Ok(true) => {}
            Ok(false) => {
                log::debug!(
                    "rpc server {}: socket to {} full; a writer sends the rest",
                    run.addr,
                    conn.peer
                );
                if !start_writer(run, conn) {
                    return Next::End;
                }
            }
            Err(e) => {
                conn.close_after_write_error(&e);
                return Next::End;
            }
        }
    }
    // Backpressure: past max_write_queue, read nothing until the peer has
    // taken enough replies (two relaxed loads when there is room).
    if conn.writer.is_full() && !limits::wait_for_room(run, conn) {
        return Next::End;
    }
    match rd.read_message(codec) {
        Ok(Some(mut m)) => {
            match codec.decode_request_header_into(rd.header(&m), m.marks.take(), &mut kept.header)
            {
                Ok(()) => {
                    conn.bytes_read.store(rd.bytes_read(), Ordering::Relaxed);
                    let calls = conn.calls_read.load(Ordering::Relaxed);
                    conn.calls_read.store(calls + 1, Ordering::Relaxed);
                    kept.body.refill(rd.body(&m));
                    kept.received = rd.received().unwrap_or_else(Instant::now);
                    Next::Request
                }
                Err(e) => Next::Broken(e),
            }
        }
        Ok(None) => Next::End,
        Err(Error::Io { source, .. })
            if matches!(
                source.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
            ) =>
        {
            // The peer is gone, not just done sending: its calls still
            // running are cancelled (their contexts see the flag).
            log::debug!(
                "rpc server {}: {} reset the connection",
                run.addr,
                conn.peer
            );
            conn.close();
            Next::End
        }
        Err(e) => Next::Broken(e),
    }
}

/// The leader loop: read a request, run it inline, repeat, until the peer
/// closes or the monitor hands reading to another thread.
pub(super) fn lead(run: &Arc<Running>, conn: Arc<Conn>) {
    let Some(&(codec, handle_timeout)) = conn.proto.get() else {
        return;
    };
    if run.stopping.load(Ordering::SeqCst) && run.drains() {
        // Handshake done after shutdown sent its notices: this one's own.
        conn.send_goaway(run);
    }
    let mut kept = Kept::default();
    // One context for this thread's calls on this connection (see
    // `Context::reset`).
    let mut ctx = Context::new(String::new(), conn.peer.clone());
    ctx.closed = Some(conn.closed.clone());
    ctx.identity = conn.identity.get().cloned();
    loop {
        match read_request(run, &conn, codec, &mut kept) {
            Next::Request => {}
            Next::End => break,
            Next::Broken(e) => {
                log::warn!(
                    "rpc server {}: connection from {}: {e}; closing",
                    run.addr,
                    conn.peer
                );
                conn.close();
                break;
            }
        }
        run.call_started();
        // After `call_started`, both SeqCst: either shutdown sees this call
        // in flight and waits for it, or it is seen here as draining.
        if run.stopping.load(Ordering::SeqCst) {
            super::drain::refuse(run, &conn, codec, &mut kept.header);
            kept.trim();
            run.call_ended();
            continue;
        }
        let mark = conn.busy.enter();
        HANDLING.with(|h| h.set(Some(conn.id)));
        super::call::handle(run, &conn, codec, handle_timeout, &mut ctx, &mut kept);
        kept.trim();
        HANDLING.with(|h| h.set(None));
        let still_leader = conn.busy.leave(mark);
        if !still_leader {
            // The monitor counted this handler as away (the idle timeout).
            conn.watch.away.fetch_sub(1, Ordering::AcqRel);
        }
        run.call_ended();
        if conn.close_after_reply.load(Ordering::Acquire) {
            // This handler shut its own server down, and shutdown left the
            // connection open for this reply: send it and close. Requests
            // still buffered are not run (their callers see the connection
            // close), since no monitor is left to hand off or time them out.
            conn.flush();
            conn.close();
            return;
        }
        if !still_leader {
            // Another thread reads now; send our reply and bow out.
            conn.flush();
            return;
        }
    }
    conn.flush();
    finish(run, &conn);
}

pub(super) fn finish(run: &Running, conn: &Conn) {
    {
        // Its bytes move to the server's totals under the same lock that
        // the metrics read both under (see `ServerCounters`).
        let mut conns = run.conns.lock();
        if conns.remove(&conn.id).is_some() {
            let c = &run.server.shared.counters;
            c.closed_read
                .fetch_add(conn.bytes_read.load(Ordering::Relaxed), Ordering::Relaxed);
            c.closed_written
                .fetch_add(conn.writer.written(), Ordering::Relaxed);
        }
    }
    if run.stopping.load(Ordering::Acquire) {
        // A draining shutdown waits for connections to end.
        let _guard = run.drained.0.lock();
        run.drained.1.notify_all();
    }
}
