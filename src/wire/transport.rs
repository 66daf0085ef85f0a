//! The byte streams an [`Address`] leads to: TCP or Unix sockets, with
//! keepalive, deadlines and sends that never block. No framing here.
//!
//! Platforms: sends that never block on a blocking socket
//! (`MSG_DONTWAIT`), a look at the socket without reading (`MSG_PEEK`) and
//! waiting for room (`poll`) are in `native`, for the systems that have
//! them (Linux, Android, the BSDs, Apple's, illumos and Solaris). Elsewhere
//! (Windows) `portable` stands in, written with std alone and compiled
//! everywhere, so that tests run it on Linux too (`FORCE_PORTABLE`): a send
//! then may block (see `portable::send_nowait`), and an idle connection the
//! server closed is found out by the call sent on it, not before.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
#[cfg(unix)]
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::wire::address::{Address, Protocol};
#[cfg(all(feature = "tls", unix))]
use crate::wire::tls::{ClientTls, ServerTls, TlsSock};

/// Idle time before the first keepalive probe, and between probes.
pub(crate) const KEEPALIVE: Duration = Duration::from_secs(15);
/// Unanswered probes after which the connection is reset.
pub(crate) const KEEPALIVE_PROBES: u32 = 9;

/// Turns on TCP keepalive as Go does for every connection it dials or
/// accepts (15 s idle, then a probe every 15 s, reset after 9 unanswered).
/// A peer whose host vanished sends no FIN or RST: without probes its
/// connection (a server thread blocked reading it, or on a client every
/// call without a timeout) would wait for ever. With them an idle
/// connection fails after about 2.5 minutes, and every pending call gets
/// that error; with data unacknowledged, TCP's retransmission limit ends
/// it instead (about 15 minutes on Linux).
///
/// The probe interval and count are set where the system lets a program
/// set them (socket2's list); elsewhere (OpenBSD, Solaris) the system's own
/// apply and only the idle time is Go's.
pub(crate) fn set_keepalive(sock: socket2::SockRef<'_>) -> io::Result<()> {
    let params = socket2::TcpKeepalive::new().with_time(KEEPALIVE);
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_vendor = "apple",
        target_os = "freebsd",
        target_os = "dragonfly",
        target_os = "netbsd",
        target_os = "illumos",
        target_os = "windows"
    ))]
    let params = params
        .with_interval(KEEPALIVE)
        .with_retries(KEEPALIVE_PROBES);
    sock.set_tcp_keepalive(&params)
}

/// Connects a Unix socket by `deadline`. A blocking connect to a listener
/// whose backlog is full waits for ever, and a Unix socket cannot be
/// polled for a connect in progress (a non-blocking one just fails with
/// `EAGAIN`), so it is retried, a few milliseconds apart, until the
/// deadline.
#[cfg(unix)]
fn unix_connect_until(path: &str, deadline: Instant) -> io::Result<UnixStream> {
    let target = socket2::SockAddr::unix(path)?;
    loop {
        let sock = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
        sock.set_nonblocking(true)?;
        match sock.connect(&target) {
            Ok(()) => {
                sock.set_nonblocking(false)?;
                return Ok(UnixStream::from(std::os::fd::OwnedFd::from(sock)));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        std::thread::sleep(left.min(Duration::from_millis(5)));
    }
}

/// Connects TCP to `addr`'s HOST:PORT, trying each address it resolves
/// to, by `deadline`.
fn tcp_connect(addr: &Address, deadline: Option<Instant>) -> io::Result<TcpStream> {
    let mut last_err = None;
    for sa in addr.target().to_socket_addrs()? {
        let attempt = match deadline {
            None => TcpStream::connect(sa),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                TcpStream::connect_timeout(&sa, left)
            }
        };
        match attempt {
            Ok(s) => return Ok(s),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err
        .unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "address resolved to nothing")))
}

/// No Nagle delay, and Go's keepalive (see [`set_keepalive`]), on a TCP
/// connection dialled or accepted. An option that does not take (the peer
/// may have reset already) is logged, not a reason to refuse the
/// connection: its first read or write reports what is wrong.
fn tune_tcp(s: &TcpStream) {
    if let Err(e) = s
        .set_nodelay(true)
        .and_then(|()| set_keepalive(socket2::SockRef::from(s)))
    {
        log::debug!("cannot set TCP_NODELAY or keepalive: {e}");
    }
}

/// Why a `tls@` address cannot be dialled in this build.
pub(crate) const NO_TLS: &str = if cfg!(unix) {
    "tls@ addresses need geerpc's `tls` feature, which this build lacks"
} else {
    "tls@ addresses are supported on Unix systems only, for now (the TLS stream \
     waits on its socket with poll(2))"
};

/// A connected byte stream: TCP or a Unix socket.
///
/// Clones share one socket (an `Arc`, not a `dup`): the reader, the writer
/// and the owner of a connection then cost one file descriptor, not three,
/// which is what lets a server hold tens of thousands of connections under
/// an ordinary open-files limit.
#[derive(Debug)]
pub(crate) struct Stream {
    sock: Sock,
    /// Tests only: this stream uses the portable calls (`FORCE_PORTABLE`
    /// when it was made). Elsewhere the choice is made when compiling.
    #[cfg(test)]
    portable: bool,
}

#[derive(Debug)]
enum Sock {
    Tcp(Arc<TcpStream>),
    #[cfg(unix)]
    Unix(Arc<UnixStream>),
    /// TCP with TLS: one rustls connection every handle shares (see
    /// `tls.rs` for how its reader and writer take turns).
    #[cfg(all(feature = "tls", unix))]
    Tls(Arc<TlsSock>),
}

#[cfg(test)]
thread_local! {
    /// Set by a test: streams made on this thread use `portable`'s calls,
    /// as on a system without `native`'s.
    pub(crate) static FORCE_PORTABLE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl From<Sock> for Stream {
    fn from(sock: Sock) -> Stream {
        Stream {
            sock,
            #[cfg(test)]
            portable: FORCE_PORTABLE.get(),
        }
    }
}

impl Stream {
    /// Whether this stream uses `portable`'s calls where `native` has them:
    /// a constant false outside tests, so the call path pays nothing.
    #[inline]
    pub(crate) fn forced_portable(&self) -> bool {
        #[cfg(test)]
        return self.portable;
        #[cfg(not(test))]
        false
    }

    /// The TCP socket, if it is one.
    #[cfg(test)]
    pub(crate) fn as_tcp(&self) -> Option<&TcpStream> {
        match &self.sock {
            Sock::Tcp(s) => Some(s),
            #[cfg(unix)]
            Sock::Unix(_) => None,
            #[cfg(all(feature = "tls", unix))]
            Sock::Tls(t) => Some(t.tcp()),
        }
    }

    /// Connects to `addr`, giving up at `deadline` (None: no limit).
    pub(crate) fn connect(addr: &Address, deadline: Option<Instant>) -> io::Result<Stream> {
        match addr.protocol() {
            Protocol::Tcp | Protocol::Http => Ok(Stream::tcp(tcp_connect(addr, deadline)?)),
            // Dialled with its settings by `connect_tls` where TLS is built
            // in; here it is not.
            Protocol::Tls => Err(io::Error::new(io::ErrorKind::Unsupported, NO_TLS)),
            #[cfg(unix)]
            Protocol::Unix => match deadline {
                None => Ok(Stream::unix(UnixStream::connect(addr.target())?)),
                Some(d) => Ok(Stream::unix(unix_connect_until(addr.target(), d)?)),
            },
            #[cfg(not(unix))]
            Protocol::Unix => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "unix sockets are not supported on this platform",
            )),
        }
    }

    /// Connects to a `tls@HOST:PORT` address and completes the TLS
    /// handshake, both by `deadline`.
    #[cfg(all(feature = "tls", unix))]
    pub(crate) fn connect_tls(
        addr: &Address,
        deadline: Option<Instant>,
        tls: &ClientTls,
    ) -> io::Result<Stream> {
        let tcp = tcp_connect(addr, deadline)?;
        tune_tcp(&tcp);
        let host = addr
            .target()
            .rsplit_once(':')
            .map_or(addr.target(), |(h, _)| h);
        Ok(Sock::Tls(Arc::new(TlsSock::connect(tcp, host, tls, deadline)?)).into())
    }

    /// An accepted TCP connection on a TLS listener; its handshake is
    /// [`tls_handshake`](Self::tls_handshake), on the connection's thread.
    #[cfg(all(feature = "tls", unix))]
    pub(crate) fn tls_accept(tcp: TcpStream, tls: &ServerTls) -> io::Result<Stream> {
        tune_tcp(&tcp);
        Ok(Sock::Tls(Arc::new(TlsSock::accept(tcp, tls)?)).into())
    }

    /// Completes a TLS server handshake by `deadline`, and returns the
    /// peer's verified certificate (with mutual TLS). A plain stream:
    /// nothing to do, nothing proved.
    #[cfg(all(feature = "tls", unix))]
    pub(crate) fn tls_handshake(
        &self,
        deadline: Option<Instant>,
    ) -> io::Result<Option<rustls::pki_types::CertificateDer<'static>>> {
        match &self.sock {
            Sock::Tls(t) => {
                t.handshake(deadline)?;
                Ok(t.peer_leaf())
            }
            _ => Ok(None),
        }
    }

    /// Another handle on the same socket. Never fails; kept fallible so
    /// callers need not change if a platform ever needs a real `dup`.
    pub(crate) fn try_clone(&self) -> io::Result<Stream> {
        Ok(Stream {
            sock: match &self.sock {
                Sock::Tcp(s) => Sock::Tcp(s.clone()),
                #[cfg(unix)]
                Sock::Unix(s) => Sock::Unix(s.clone()),
                #[cfg(all(feature = "tls", unix))]
                Sock::Tls(t) => Sock::Tls(t.clone()),
            },
            #[cfg(test)]
            portable: self.portable,
        })
    }

    /// A TCP connection, dialled or accepted (see [`tune_tcp`]).
    pub(crate) fn tcp(s: TcpStream) -> Stream {
        tune_tcp(&s);
        Sock::Tcp(Arc::new(s)).into()
    }

    #[cfg(unix)]
    pub(crate) fn unix(s: UnixStream) -> Stream {
        Sock::Unix(Arc::new(s)).into()
    }

    pub(crate) fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match &self.sock {
            Sock::Tcp(s) => s.shutdown(how),
            #[cfg(unix)]
            Sock::Unix(s) => s.shutdown(how),
            #[cfg(all(feature = "tls", unix))]
            Sock::Tls(t) => t.shutdown(how),
        }
    }

    pub(crate) fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match &self.sock {
            Sock::Tcp(s) => s.set_read_timeout(t),
            #[cfg(unix)]
            Sock::Unix(s) => s.set_read_timeout(t),
            #[cfg(all(feature = "tls", unix))]
            Sock::Tls(s) => s.tcp().set_read_timeout(t),
        }
    }

    pub(crate) fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match &self.sock {
            Sock::Tcp(s) => s.set_write_timeout(t),
            #[cfg(unix)]
            Sock::Unix(s) => s.set_write_timeout(t),
            #[cfg(all(feature = "tls", unix))]
            Sock::Tls(s) => s.tcp().set_write_timeout(t),
        }
    }

    /// Sends what the socket takes now without blocking (`WouldBlock` if
    /// nothing), whatever the socket's blocking mode, which is shared by
    /// every handle and must stay blocking for the others. Without
    /// `native`, see `portable::send_nowait`.
    pub(crate) fn send_nowait(&self, buf: &[u8]) -> io::Result<usize> {
        #[cfg(all(feature = "tls", unix))]
        if let Sock::Tls(t) = &self.sock {
            return t.send_nowait(buf);
        }
        if self.forced_portable() {
            return portable::send_nowait(self, buf);
        }
        native::send_nowait(self, buf)
    }

    /// Waits until the socket can take more bytes, at most `timeout`:
    /// `Ok(false)` if it still cannot. A socket in error or shut down
    /// counts as ready (the next write says what is wrong).
    pub(crate) fn wait_writable(&self, timeout: Duration) -> io::Result<bool> {
        if self.forced_portable() {
            return portable::wait_writable(self, timeout);
        }
        native::wait_writable(self, timeout)
    }

    /// Whether a read would return at once (bytes waiting, or the end of
    /// the stream), looked at without reading or blocking. Without
    /// `native`: always false (nothing known to be waiting).
    pub(crate) fn readable_now(&self) -> io::Result<bool> {
        #[cfg(all(feature = "tls", unix))]
        if let Sock::Tls(t) = &self.sock {
            return t.readable_now();
        }
        if self.forced_portable() {
            return portable::readable_now(self);
        }
        native::readable_now(self)
    }

    /// Reads what is waiting without blocking: `WouldBlock` when nothing
    /// is. Without `native`: always `WouldBlock` (nothing known to wait).
    pub(crate) fn read_nowait(&self, buf: &mut [u8]) -> io::Result<usize> {
        #[cfg(all(feature = "tls", unix))]
        if let Sock::Tls(t) = &self.sock {
            return t.read_nowait(buf);
        }
        if self.forced_portable() {
            return portable::read_nowait(self, buf);
        }
        native::read_nowait(self, buf)
    }

    // Unused on Windows, where neither `native` nor the tests are.
    #[cfg_attr(windows, allow(dead_code))]
    fn sock(&self) -> socket2::SockRef<'_> {
        match &self.sock {
            Sock::Tcp(s) => socket2::SockRef::from(&**s),
            #[cfg(unix)]
            Sock::Unix(s) => socket2::SockRef::from(&**s),
            #[cfg(all(feature = "tls", unix))]
            Sock::Tls(t) => socket2::SockRef::from(t.tcp()),
        }
    }

    /// The peer, as a display string (`127.0.0.1:5000`, or the socket path).
    pub(crate) fn peer_label(&self) -> String {
        match &self.sock {
            #[cfg(all(feature = "tls", unix))]
            Sock::Tls(t) => t
                .tcp()
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "?".into()),
            Sock::Tcp(s) => s
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "?".into()),
            #[cfg(unix)]
            Sock::Unix(s) => s
                .peer_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
                .unwrap_or_else(|| "unix".into()),
        }
    }
}

/// Waits for `events` on descriptor `fd`, at most `timeout` (`None`: no
/// limit; rounded up to the millisecond, so that a wait never ends before
/// its time): false if they did not come. Interrupted waits go on.
#[cfg(unix)]
pub(crate) fn poll_fd(
    fd: std::os::fd::RawFd,
    events: libc::c_short,
    timeout: Option<Duration>,
) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let ms = match timeout {
        None => -1,
        Some(t) => t.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int,
    };
    loop {
        // SAFETY: one valid pollfd, for a descriptor the caller's stream owns.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r >= 0 {
            return Ok(r > 0);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The systems with non-blocking send flags, `MSG_PEEK` and `poll`.
#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_vendor = "apple",
    target_os = "freebsd",
    target_os = "dragonfly",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "illumos",
    target_os = "solaris"
))]
mod native;

/// Elsewhere the portable calls are the only ones.
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_vendor = "apple",
    target_os = "freebsd",
    target_os = "dragonfly",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "illumos",
    target_os = "solaris"
)))]
use portable as native;

/// With std alone: no send that cannot block on a blocking socket (whose
/// mode every handle shares, so it cannot be switched for one send), and
/// no look without reading. Compiled everywhere; on systems with `native`
/// only tests use it.
#[cfg_attr(not(test), allow(dead_code))]
mod portable;

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.sock {
            Sock::Tcp(s) => (&**s).read(buf),
            #[cfg(unix)]
            Sock::Unix(s) => (&**s).read(buf),
            #[cfg(all(feature = "tls", unix))]
            Sock::Tls(t) => t.read(buf),
        }
    }
}

impl crate::wire::frame::ReadNowait for Stream {
    fn read_nowait(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Stream::read_nowait(self, buf)
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &self.sock {
            Sock::Tcp(s) => (&**s).write(buf),
            #[cfg(unix)]
            Sock::Unix(s) => (&**s).write(buf),
            #[cfg(all(feature = "tls", unix))]
            Sock::Tls(t) => t.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match &self.sock {
            Sock::Tcp(s) => (&**s).write_vectored(bufs),
            #[cfg(unix)]
            Sock::Unix(s) => (&**s).write_vectored(bufs),
            // One buffer at a time, as `Write`'s default does.
            #[cfg(all(feature = "tls", unix))]
            Sock::Tls(t) => match bufs.iter().find(|b| !b.is_empty()) {
                Some(b) => t.write(b),
                None => Ok(0),
            },
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Keepalive as `set_keepalive` sets it, read back from the socket.
    #[cfg(not(windows))]
    pub(crate) fn keepalive_of(sock: socket2::SockRef<'_>) -> (bool, Duration, Duration, u32) {
        (
            sock.keepalive().unwrap(),
            sock.tcp_keepalive_time().unwrap(),
            sock.tcp_keepalive_interval().unwrap(),
            sock.tcp_keepalive_retries().unwrap(),
        )
    }

    /// Windows sets the probe times but cannot read them back: only the
    /// switch itself is read there.
    #[cfg(windows)]
    pub(crate) fn keepalive_of(sock: socket2::SockRef<'_>) -> (bool, Duration, Duration, u32) {
        (
            sock.keepalive().unwrap(),
            KEEPALIVE,
            KEEPALIVE,
            KEEPALIVE_PROBES,
        )
    }

    pub(crate) const GO_KEEPALIVE: (bool, Duration, Duration, u32) =
        (true, KEEPALIVE, KEEPALIVE, KEEPALIVE_PROBES);

    #[test]
    fn a_dialled_tcp_connection_probes_its_peer_as_go_does() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = Address::tcp(l.local_addr().unwrap());
        let s = Stream::connect(&addr, None).unwrap();
        assert_eq!(keepalive_of(s.sock()), GO_KEEPALIVE);
        // The OS default differs, so the check above can fail.
        let (plain, _) = l.accept().unwrap();
        assert!(!socket2::SockRef::from(&plain).keepalive().unwrap());
    }

    /// A Unix listener whose backlog is full takes no connection: the
    /// dial gives up at its deadline instead of waiting for ever.
    #[cfg(unix)]
    #[test]
    fn a_unix_dial_to_a_full_backlog_ends_at_its_deadline() {
        let file = std::env::temp_dir().join(format!("geerpc-full-{}", std::process::id()));
        let _ = std::fs::remove_file(&file);
        let path = file.to_str().unwrap().to_string();
        let l = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
        l.bind(&socket2::SockAddr::unix(&path).unwrap()).unwrap();
        l.listen(0).unwrap();
        let addr: Address = format!("unix@{path}").parse().unwrap();
        // Fill the backlog (never accepted), within a bound.
        let mut held = Vec::new();
        let limit = Duration::from_millis(100);
        let full = loop {
            match unix_connect_until(&path, Instant::now() + limit) {
                Ok(s) => held.push(s),
                Err(e) => break e,
            }
            assert!(held.len() < 1000, "the backlog never filled");
        };
        assert_eq!(full.kind(), io::ErrorKind::TimedOut, "{full}");
        let t0 = Instant::now();
        let err = Stream::connect(&addr, Some(t0 + limit)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let took = t0.elapsed();
        // Generous for a loaded machine: without the bound it never ends.
        assert!(
            took >= limit && took < limit + Duration::from_millis(500),
            "{took:?}"
        );
        drop(l);
        let _ = std::fs::remove_file(&file);
    }
}
