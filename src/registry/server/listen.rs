//! The registry's listening socket and tiny_http's start: a backlog sized
//! for bursts, the options every accepted socket inherits, and the patched
//! tiny_http's limits (see `limits`). Nothing here reads or answers a
//! request.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use super::limits::{Limits, BACKLOG};
use crate::error::{Error, Result};

/// Binds `addr` (`HOST:PORT`, the first address it resolves to that binds)
/// with a listen backlog of `BACKLOG`; std's `TcpListener::bind` gives 128.
pub(super) fn bind(addr: &str) -> Result<TcpListener> {
    let context = || format!("registry: listen on {addr}");
    let addrs = addr
        .to_socket_addrs()
        .map_err(|e| Error::io(context(), e))?;
    let mut last = std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to bind");
    for a in addrs {
        match bind_one(a) {
            Ok(l) => return Ok(l),
            Err(e) => last = e,
        }
    }
    Err(Error::io(context(), last))
}

fn bind_one(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As std does on Unix: a restarted registry rebinds its port at once.
    #[cfg(unix)]
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())?;
    sock.listen(BACKLOG)?;
    Ok(sock.into())
}

/// Starts tiny_http's accept thread, which serves each open connection on
/// a thread of its pool, within `limits`; with a `handler`, that thread
/// also answers the connection's requests (else workers `recv` them).
///
/// tiny_http names none of its threads and sets nothing on them, but on
/// Linux a new thread inherits its parent's name and scheduling policy:
/// starting the server from a thread named `geerpc-reg-conn` under the
/// batch policy gives all of them that name and policy. Under load every
/// request wakes a connection thread; as a batch thread it no longer
/// preempts the client that sent the request (under `wrk`, that had been
/// 0.33 preemptions of `wrk` per heartbeat). `batch` false (see
/// [`RegistryBuilder::batch_scheduling`](super::RegistryBuilder::batch_scheduling))
/// leaves the policy alone: the threads inherit the caller's.
pub(super) fn start_tiny_http(
    listener: TcpListener,
    local: SocketAddr,
    limits: &Limits,
    batch: bool,
    tls: Option<tiny_http::SslConfig>,
    handler: Option<std::sync::Arc<tiny_http::Handler>>,
) -> Result<tiny_http::Server> {
    let http_limits = limits.http();
    let started = std::thread::Builder::new()
        .name("geerpc-reg-conn".into())
        .spawn(move || {
            if batch && !crate::util::threads::use_batch_policy() {
                log::debug!("registry {local}: threads keep the scheduling policy they have");
            }
            match handler {
                // Each request answered on its connection's thread.
                Some(h) => {
                    tiny_http::Server::from_listener_with_handler(listener, tls, http_limits, h)
                }
                None => tiny_http::Server::from_listener_with_limits(listener, tls, http_limits),
            }
        })
        .map_err(|e| Error::io("registry: start the accept thread", e))?
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    started.map_err(|e| Error::Io {
        context: format!("registry: serve on {local}"),
        source: std::io::Error::other(e),
    })
}

/// Sets on the listener what every accepted socket should have, since
/// tiny_http gives no access to the sockets it accepts: Linux copies these
/// options to them.
pub(super) fn set_inherited_options(listener: &TcpListener, write_timeout: Duration) -> Result<()> {
    let sock = socket2::SockRef::from(listener);
    // tiny_http writes a response's head and body separately and never
    // sets TCP_NODELAY, so Nagle held the body back until the peer's
    // delayed ACK: 40 ms a request (91 requests/s under wrk).
    sock.set_tcp_nodelay(true)
        .map_err(|e| Error::io("registry: set TCP_NODELAY", e))?;
    // A worker writing to a peer that never reads would block for ever.
    sock.set_write_timeout(Some(write_timeout))
        .map_err(|e| Error::io("registry: set SO_SNDTIMEO", e))?;
    // A peer whose host vanished would hold a tiny_http thread for ever.
    crate::wire::transport::set_keepalive(sock)
        .map_err(|e| Error::io("registry: set TCP keepalive", e))
}

/// tiny_http closes its listener on its own accept thread, which cannot be
/// joined; wait (briefly) until the port can be bound again.
pub(super) fn wait_port_free(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        if TcpListener::bind(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    log::debug!("registry {addr}: port still bound after shutdown");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::transport::tests::{keepalive_of, GO_KEEPALIVE};

    #[test]
    fn accepted_sockets_inherit_nodelay_write_timeout_and_keepalive() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        set_inherited_options(&l, Duration::from_secs(7)).unwrap();
        let _peer = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        let sock = socket2::SockRef::from(&s);
        assert!(sock.tcp_nodelay().unwrap());
        assert_eq!(sock.write_timeout().unwrap(), Some(Duration::from_secs(7)));
        assert_eq!(keepalive_of(sock), GO_KEEPALIVE);
    }

    /// With std's backlog of 128 the 130th connect that nobody accepts
    /// has its SYN dropped, and waits a 1 s retry.
    #[test]
    fn the_listener_queues_a_burst_without_accepting() {
        let l = bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let mut held = Vec::new();
        for _ in 0..300 {
            let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500));
            assert!(s.is_ok(), "connect {} of 300 queued", held.len() + 1);
            held.push(s.unwrap());
        }
    }
}
