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
}
