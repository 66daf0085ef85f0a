//! [`TlsSock`]: one rustls connection over one TCP socket, shared by a
//! connection's reader and writer threads.
//!
//! A plain connection's reader and writer each hold the socket and call the
//! kernel on their own. A rustls connection cannot be split: reading and
//! writing share its state (keys, sequence numbers, buffers). So a
//! [`TlsSock`] is the socket plus one `Mutex<rustls::Connection>`, and:
//!
//! - **The lock is never held across a blocking system call.** Under it
//!   the socket is only read or written with `MSG_DONTWAIT`; waiting for
//!   bytes (a blocking `MSG_PEEK`, which honours the socket's read timeout
//!   and wakes on a shutdown) or for room (`poll`, bounded by the socket's
//!   write timeout) happens with the lock released. A writer blocked on a
//!   full socket therefore never stops the reader from taking in what the
//!   peer sends, which is what keeps two peers writing to each other from
//!   deadlocking, as with plain sockets.
//! - **Only the connection's reader consumes input** (`read`,
//!   `read_nowait`: the holder of the `FrameReader`). Anyone else only
//!   looks (`readable_now` peeks at the socket and at rustls's plaintext
//!   buffer). So the reader, having found nothing under the lock, cannot
//!   miss bytes taken by another thread between its look and its wait.
//!   One exception, on a dead connection only: a write that failed with
//!   a broken pipe or reset reads what is left for the peer's alert, to
//!   say why (`diagnose`).
//! - **A write returns once its records are in the kernel**, as a write on
//!   a blocking socket does: its plaintext is encrypted under the lock (one
//!   write's records stay together, in order), then sent, with waits for
//!   room outside the lock. A "never blocking" send (`send_nowait`)
//!   refuses (`WouldBlock`) when the socket has no room or another write
//!   is still sending, and otherwise may wait for the rest of the records
//!   it encrypted: bounded by the write timeout, as with the portable
//!   sends of `transport.rs`.
//!
//! The handshake is completed before the stream is shared, by the thread
//! that dialled or accepted it, within a deadline.

use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rustls::pki_types::CertificateDer;

use super::{tls_error, ClientTls, ServerTls};

/// The largest plaintext one `send_nowait` encrypts: so that a send meant
/// not to block waits, when the socket had room for its start, at most for
/// this much.
const NOWAIT_CHUNK: usize = 64 * 1024;

/// How long a failed handshake waits for its peer to close, and how much
/// of what it still sends is read meanwhile (see `TlsSock::linger`).
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 64 * 1024;

/// One TLS connection over one TCP socket, shared by every handle of a
/// `Stream` (see the module's comment for the locking rules).
pub(crate) struct TlsSock {
    tcp: TcpStream,
    conn: Mutex<rustls::Connection>,
}

impl fmt::Debug for TlsSock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSock").field("tcp", &self.tcp).finish()
    }
}

/// The socket read and written without blocking, for rustls under the lock.
struct NoWait<'a>(&'a TcpStream);

impl Read for NoWait<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        sys::recv(self.0, buf, libc::MSG_DONTWAIT)
    }
}

impl Write for NoWait<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        sys::send_nowait(self.0, buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

mod sys {
    use super::*;

    pub(super) fn recv(s: &TcpStream, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
        loop {
            // SAFETY: `buf` is valid for writes of its length; the
            // descriptor is the stream's own.
            let r = unsafe { libc::recv(s.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
            if r >= 0 {
                return Ok(r as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    pub(super) fn send_nowait(s: &TcpStream, buf: &[u8]) -> io::Result<usize> {
        socket2::SockRef::from(s).send_with_flags(buf, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    }

    /// Waits for `events` on the socket, at most `timeout` (None: no limit):
    /// false if they did not come.
    pub(super) fn poll(
        s: &TcpStream,
        events: libc::c_short,
        timeout: Option<Duration>,
    ) -> io::Result<bool> {
        crate::wire::transport::poll_fd(s.as_raw_fd(), events, timeout)
    }
}

impl TlsSock {
    /// The client side of a connected socket, its handshake completed by
    /// `deadline`.
    pub(crate) fn connect(
        tcp: TcpStream,
        host: &str,
        tls: &ClientTls,
        deadline: Option<Instant>,
    ) -> io::Result<TlsSock> {
        let name = tls.name_for(host)?;
        let conn = rustls::ClientConnection::new(tls.config.clone(), name).map_err(tls_error)?;
        let s = TlsSock {
            tcp,
            conn: Mutex::new(conn.into()),
        };
        s.handshake(deadline)?;
        Ok(s)
    }

    /// The server side of an accepted socket; [`handshake`](Self::handshake)
    /// follows on the connection's own thread.
    pub(crate) fn accept(tcp: TcpStream, tls: &ServerTls) -> io::Result<TlsSock> {
        let conn = rustls::ServerConnection::new(tls.config.clone()).map_err(tls_error)?;
        Ok(TlsSock {
            tcp,
            conn: Mutex::new(conn.into()),
        })
    }

    pub(crate) fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Completes the handshake by `deadline`, waiting with the lock released
    /// (nobody else uses the connection yet, but the rule holds anyway).
    /// A failure is sent to the peer as an alert where rustls has one.
    pub(crate) fn handshake(&self, deadline: Option<Instant>) -> io::Result<()> {
        let r = self.handshake_inner(deadline);
        if let Err(e) = &r {
            if e.kind() == io::ErrorKind::InvalidData {
                self.linger();
            }
        }
        r
    }

    /// After a failed handshake: the alert rustls queued goes out, then the
    /// write side closes, and what the peer still sends is read and dropped
    /// for a moment, up to its close. Closing with input unread would make
    /// the kernel send a reset, which can destroy the alert before the peer
    /// reads it, and the peer would only see "connection reset".
    fn linger(&self) {
        let until = Instant::now() + LINGER;
        {
            let mut c = self.conn.lock();
            while c.wants_write() {
                if c.write_tls(&mut NoWait(&self.tcp)).is_err() {
                    break;
                }
            }
        }
        let _ = self.tcp.shutdown(Shutdown::Write);
        let mut buf = [0u8; 4096];
        let mut left = LINGER_BYTES;
        while left > 0 {
            let wait = until.saturating_duration_since(Instant::now());
            if wait.is_zero() || !sys::poll(&self.tcp, libc::POLLIN, Some(wait)).unwrap_or(false) {
                return;
            }
            match sys::recv(&self.tcp, &mut buf, libc::MSG_DONTWAIT) {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    }

    fn handshake_inner(&self, deadline: Option<Instant>) -> io::Result<()> {
        let left = || -> io::Result<Option<Duration>> {
            match deadline {
                None => Ok(None),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "TLS handshake not complete in time",
                        ))
                    } else {
                        Ok(Some(left))
                    }
                }
            }
        };
        loop {
            let mut c = self.conn.lock();
            while c.wants_write() {
                match c.write_tls(&mut NoWait(&self.tcp)) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        drop(c);
                        sys::poll(&self.tcp, libc::POLLOUT, left()?)?;
                        c = self.conn.lock();
                    }
                    Err(e) => return Err(e),
                }
            }
            if !c.is_handshaking() {
                return Ok(());
            }
            match c.read_tls(&mut NoWait(&self.tcp)) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "TLS handshake failed: the peer closed the connection \
                         (not a TLS server, or it refused us)",
                    ))
                }
                Ok(_) => {
                    if let Err(e) = c.process_new_packets() {
                        // The alert rustls queued for the peer, if it can go now.
                        let _ = c.write_tls(&mut NoWait(&self.tcp));
                        return Err(tls_error(e));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drop(c);
                    if !sys::poll(&self.tcp, libc::POLLIN, left()?)? {
                        left()?;
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The verified certificate chain of the peer (the client's, with
    /// mutual TLS), leaf first.
    pub(crate) fn peer_leaf(&self) -> Option<CertificateDer<'static>> {
        let c = self.conn.lock();
        c.peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| leaf.clone().into_owned())
    }

    /// Under the lock: plaintext already decrypted, else what the socket
    /// holds now, decrypted. `None`: nothing yet (the caller waits, with
    /// the lock released). `Some(0)`: the end of the stream.
    fn pump(&self, c: &mut rustls::Connection, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            match c.reader().read(buf) {
                Ok(n) => return Ok(Some(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // Closed without close_notify: an end of stream, as on TCP
                // (every message is framed, so a cut one is seen anyway).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Some(0)),
                Err(e) => return Err(e),
            }
            match c.read_tls(&mut NoWait(&self.tcp)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(e),
            }
            if let Err(e) = c.process_new_packets() {
                let _ = c.write_tls(&mut NoWait(&self.tcp));
                return Err(tls_error(e));
            }
            // What reading made rustls say (an answer to a key update, an
            // alert): sent if the socket takes it now, else with the next write.
            while c.wants_write() {
                match c.write_tls(&mut NoWait(&self.tcp)) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// A blocking read: waits for bytes without the lock, bounded by the
    /// socket's read timeout (`WouldBlock` then, as on a plain socket).
    pub(crate) fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some(n) = self.pump(&mut self.conn.lock(), buf)? {
                return Ok(n);
            }
            // Level-triggered: returns at once if bytes came meanwhile.
            let mut one = [0u8; 1];
            sys::recv(&self.tcp, &mut one, libc::MSG_PEEK)?;
        }
    }

    /// What is decrypted or decryptable now, without blocking:
    /// `WouldBlock` if nothing.
    pub(crate) fn read_nowait(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self.pump(&mut self.conn.lock(), buf)? {
            Some(n) => Ok(n),
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Whether a read would return at once, looked at without consuming
    /// anything: plaintext waiting in rustls, or bytes (or the end) on the
    /// socket. Bytes on the socket may turn out to be TLS records with no
    /// plaintext (a session ticket): then a read waits after all.
    pub(crate) fn readable_now(&self) -> io::Result<bool> {
        {
            let mut c = self.conn.lock();
            if c.reader().fill_buf().is_ok_and(|b| !b.is_empty()) {
                return Ok(true);
            }
        }
        let mut one = [0u8; 1];
        match sys::recv(&self.tcp, &mut one, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sends what rustls holds for the socket, waiting for room with the
    /// lock released, each wait bounded by the socket's write timeout.
    fn send_out(&self) -> io::Result<()> {
        loop {
            {
                let mut c = self.conn.lock();
                loop {
                    if !c.wants_write() {
                        return Ok(());
                    }
                    match c.write_tls(&mut NoWait(&self.tcp)) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(self.diagnose(&mut c, e)),
                    }
                }
            }
            let limit = self.tcp.write_timeout()?;
            if !sys::poll(&self.tcp, libc::POLLOUT, limit)? {
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
    }

    /// A write that failed because the peer closed: if it said why first
    /// (an alert: with TLS 1.3 a server refuses a client's certificate
    /// after the client's handshake is done), that reason, not "broken
    /// pipe". Reads input outside the reader, which is harmless here: the
    /// connection is finished either way.
    fn diagnose(&self, c: &mut rustls::Connection, e: io::Error) -> io::Error {
        if !matches!(
            e.kind(),
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
        ) {
            return e;
        }
        while let Ok(n) = c.read_tls(&mut NoWait(&self.tcp)) {
            if let Err(tls) = c.process_new_packets() {
                return tls_error(tls);
            }
            if n == 0 {
                break;
            }
        }
        e
    }

    /// A blocking write: returns once the records of what it took are in
    /// the kernel.
    pub(crate) fn write(&self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let n = self.conn.lock().writer().write(buf)?;
            self.send_out()?;
            // 0: rustls's buffer was full of another write's records, now sent.
            if n > 0 {
                return Ok(n);
            }
        }
    }

    /// A send for a thread that must not block: `WouldBlock` if the socket
    /// has no room now or another write's records still wait; otherwise
    /// encrypts up to [`NOWAIT_CHUNK`] and sends it all (waiting, if need
    /// be, for the rest of it: see the module's comment).
    pub(crate) fn send_nowait(&self, buf: &[u8]) -> io::Result<usize> {
        let n = {
            let mut c = self.conn.lock();
            while c.wants_write() {
                match c.write_tls(&mut NoWait(&self.tcp)) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(e),
                    Err(e) => return Err(e),
                }
            }
            if !sys::poll(&self.tcp, libc::POLLOUT, Some(Duration::ZERO))? {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            c.writer().write(&buf[..buf.len().min(NOWAIT_CHUNK)])?
        };
        self.send_out()?;
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    /// Shuts the socket down; a write side closed says so to the peer
    /// first (`close_notify`), if the socket takes it now.
    pub(crate) fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        if how != Shutdown::Read {
            let mut c = self.conn.lock();
            c.send_close_notify();
            let _ = c.write_tls(&mut NoWait(&self.tcp));
        }
        self.tcp.shutdown(how)
    }
}
