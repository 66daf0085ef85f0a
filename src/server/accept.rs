//! Accepting connections: the listening socket (TCP or Unix), the accept
//! loop that admits each connection under the server's bounds and starts
//! its thread, and where to connect to wake a blocked `accept` at
//! shutdown. May use `Running` and `Conn`; owns no state of its own.

use std::io;
use std::net::{SocketAddr, TcpListener};
#[cfg(unix)]
use std::os::unix::net::UnixListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::conn::Conn;
use super::{limits, Running};
use crate::wire::transport::Stream;

/// The accept queue a listener the server binds itself gets: the system's
/// cap (`net.core.somaxconn`, 4096 on Linux since 5.4), as Go's `net.Listen`
/// asks. std asks for 128: a thousand clients connecting at once then
/// waited for SYN retries, a second and more each, beyond the first ~130
/// (seen with the 1000-connection scale point of `benches/scale.sh`).
/// A listener handed to [`Server::serve`](super::Server::serve) keeps the
/// queue its owner chose.
fn backlog() -> i32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(4096)
        .min(65535)
}

/// Binds a TCP listener with the system's accept queue (`backlog`).
pub(super) fn bind_tcp(target: &str) -> io::Result<TcpListener> {
    let l = TcpListener::bind(target)?;
    // Listening again on a listening socket only changes its queue.
    socket2::SockRef::from(&l).listen(backlog())?;
    Ok(l)
}

/// Binds a Unix listener with the system's accept queue (`backlog`).
#[cfg(unix)]
pub(super) fn bind_unix(path: &str) -> io::Result<UnixListener> {
    let l = UnixListener::bind(path)?;
    socket2::SockRef::from(&l).listen(backlog())?;
    Ok(l)
}

pub(super) enum Listener {
    Tcp(TcpListener),
    #[cfg(unix)]
    Unix(UnixListener, String),
    /// TCP whose connections speak TLS with these settings; each one's
    /// handshake is done on its own thread (`conn.rs`), so that a slow or
    /// hostile handshake holds no other.
    #[cfg(all(feature = "tls", unix))]
    Tls(TcpListener, crate::wire::ServerTls),
}

/// Where to connect to wake a blocked `accept` at shutdown.
pub(super) enum WakeTarget {
    Tcp(SocketAddr),
    #[cfg(unix)]
    Unix(String),
}

impl Listener {
    pub(super) fn wake_target(&self) -> io::Result<WakeTarget> {
        Ok(match self {
            #[cfg(all(feature = "tls", unix))]
            Listener::Tls(l, _) => Listener::tcp_wake_target(l)?,
            Listener::Tcp(l) => Listener::tcp_wake_target(l)?,
            #[cfg(unix)]
            Listener::Unix(_, path) => WakeTarget::Unix(path.clone()),
        })
    }

    fn tcp_wake_target(l: &TcpListener) -> io::Result<WakeTarget> {
        let mut a = l.local_addr()?;
        if a.ip().is_unspecified() {
            a.set_ip(match a {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        Ok(WakeTarget::Tcp(a))
    }

    pub(super) fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Tcp(l) => {
                let (s, _) = l.accept()?;
                Ok(Stream::tcp(s))
            }
            #[cfg(unix)]
            Listener::Unix(l, _) => Ok(Stream::unix(l.accept()?.0)),
            #[cfg(all(feature = "tls", unix))]
            Listener::Tls(l, tls) => Stream::tls_accept(l.accept()?.0, tls),
        }
    }
}

pub(super) fn accept_loop(run: &Arc<Running>, listener: Listener) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = listener.accept();
        if run.stopping.load(Ordering::Acquire) {
            break;
        }
        let stream = match accepted {
            Ok(s) => {
                backoff = Duration::from_millis(5);
                s
            }
            Err(e) => {
                // EMFILE, ENFILE, ECONNABORTED and the like pass; back off so
                // a full descriptor table is not spun on.
                log::warn!(
                    "rpc server {}: accept error: {e}; retrying in {backoff:?}",
                    run.addr
                );
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        // Past max_connections the stream is dropped here: closed at once.
        let Some(slot) = limits::take_slot(run) else {
            continue;
        };
        let id = run.next_conn_id.fetch_add(1, Ordering::Relaxed);
        // A peer that stops reading must not hold a writer (and with it the
        // connection's replies) for ever.
        if let Err(e) = stream.set_write_timeout(Some(run.server.config().write_timeout)) {
            log::warn!("rpc server {}: cannot set a write timeout: {e}", run.addr);
        }
        let conn = match Conn::new(id, stream, run.server.config(), slot) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                log::warn!("rpc server {}: cannot set up connection: {e}", run.addr);
                continue;
            }
        };
        run.conns.lock().insert(id, conn.clone());
        if let Err(e) = run.spawn_conn_thread(conn, true) {
            log::warn!(
                "rpc server {}: cannot start connection thread: {e}",
                run.addr
            );
            run.conns.lock().remove(&id);
        }
    }
    #[cfg(unix)]
    if let Listener::Unix(_, path) = &listener {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::transport::tests::{keepalive_of, GO_KEEPALIVE};
    use std::net::TcpStream;

    #[test]
    fn an_accepted_tcp_connection_probes_its_peer_as_go_does() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let s = Listener::Tcp(l).accept().unwrap();
        let s = s.as_tcp().expect("a TCP listener accepts TCP");
        assert_eq!(keepalive_of(socket2::SockRef::from(s)), GO_KEEPALIVE);
        drop(peer);
    }

    /// A thousand clients connecting at once must not wait for SYN retries
    /// behind std's queue of 128: 300 connections complete with nothing
    /// accepted yet (with a queue of 128, the 130th waits a second for its
    /// retry and the connect times out).
    #[test]
    fn a_listener_the_server_binds_queues_more_than_std_does() {
        if backlog() < 512 {
            eprintln!("skipped: net.core.somaxconn is {}", backlog());
            return;
        }
        let l = bind_tcp("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let held: Vec<TcpStream> = (0..300)
            .map(|i| {
                TcpStream::connect_timeout(&addr, Duration::from_millis(700))
                    .unwrap_or_else(|e| panic!("connection {i} not queued: {e}"))
            })
            .collect();
        assert_eq!(held.len(), 300);
    }
}
