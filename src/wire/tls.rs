//! TLS for RPC connections (`tls@` addresses, PROTOCOL.md section 1): the
//! settings a server listens with ([`ServerTls`]) and a client dials with
//! ([`ClientTls`]), and [`TlsSock`], one rustls connection over one TCP
//! socket shared by a connection's reader and writer threads.
//!
//! # The shared TLS stream
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
//! that dialled or accepted it, within a deadline (the connect timeout, the
//! server's handshake timeout).

use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::error::{Error, Result};

/// The largest plaintext one `send_nowait` encrypts: so that a send meant
/// not to block waits, when the socket had room for its start, at most for
/// this much.
const NOWAIT_CHUNK: usize = 64 * 1024;

/// How long a failed handshake waits for its peer to close, and how much
/// of what it still sends is read meanwhile (see `TlsSock::linger`).
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 64 * 1024;

/// rustls on ring (the provider ureq already builds), TLS 1.3 and 1.2 only.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn bad_pem(what: &str, e: impl fmt::Display) -> Error {
    Error::io(
        format!("read {what}"),
        io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
    )
}

fn read_file(what: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(format!("read {what} {}", path.display()), e))
}

fn certs(what: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad_pem(what, e))?;
    if certs.is_empty() {
        return Err(bad_pem(what, "no PEM certificate found"));
    }
    Ok(certs)
}

fn key(pem: &[u8]) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| bad_pem("TLS private key", e))
}

fn roots(pem: &[u8]) -> Result<rustls::RootCertStore> {
    let mut store = rustls::RootCertStore::empty();
    for c in certs("CA certificate", pem)? {
        store.add(c).map_err(|e| bad_pem("CA certificate", e))?;
    }
    Ok(store)
}

fn config_error(what: &str, e: impl fmt::Display) -> Error {
    Error::io(
        format!("TLS {what}"),
        io::Error::new(io::ErrorKind::InvalidInput, e.to_string()),
    )
}

/// What a server listens with on a `tls@` address
/// ([`Server::listen_tls`](crate::Server::listen_tls)): its certificate
/// chain and key, TLS 1.3 and 1.2 only, and optionally the CA a client's
/// certificate must be signed by (mutual TLS).
///
/// ```no_run
/// use geerpc::wire::ServerTls;
/// // Server authentication only:
/// let tls = ServerTls::files("server.pem", "server.key")?;
/// // Mutual TLS: clients must show a certificate signed by this CA.
/// let mtls = ServerTls::files("server.pem", "server.key")?.require_client_cert_file("clients-ca.pem")?;
/// # Ok::<(), geerpc::Error>(())
/// ```
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    /// What the config was built from, to rebuild it with client auth.
    parts: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("client_auth", &self.parts.is_none())
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// From PEM text: the certificate chain (the server's first, then its
    /// intermediates) and the private key (PKCS#8, PKCS#1 or SEC1).
    pub fn pem(cert_chain: &[u8], key_pem: &[u8]) -> Result<ServerTls> {
        let chain = certs("TLS certificate chain", cert_chain)?;
        let key = Arc::new(key(key_pem)?);
        let config = Self::build(&chain, &key, None)?;
        Ok(ServerTls {
            config,
            parts: Some((chain, key)),
        })
    }

    /// From PEM files; see [`pem`](Self::pem).
    pub fn files(cert_chain: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<ServerTls> {
        ServerTls::pem(
            &read_file("TLS certificate chain", cert_chain.as_ref())?,
            &read_file("TLS private key", key.as_ref())?,
        )
    }

    /// A rustls configuration made elsewhere, used as it is (its protocol
    /// versions and client verification included).
    pub fn from_config(config: Arc<rustls::ServerConfig>) -> ServerTls {
        ServerTls {
            config,
            parts: None,
        }
    }

    /// Mutual TLS: every client must present a certificate signed by one of
    /// the CAs in `ca_pem`, or its handshake fails; a handler sees the
    /// verified certificate's subject and names in
    /// [`Context::identity`](crate::Context::identity). Default: no client
    /// certificate asked for.
    pub fn require_client_cert(self, ca_pem: &[u8]) -> Result<ServerTls> {
        let (chain, key) = self.parts.ok_or_else(|| {
            config_error(
                "client certificates",
                "a ServerTls made from a rustls config sets its own client verifier",
            )
        })?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots(ca_pem)?),
            provider(),
        )
        .build()
        .map_err(|e| config_error("client CA", e))?;
        let config = Self::build(&chain, &key, Some(verifier))?;
        Ok(ServerTls {
            config,
            parts: Some((chain, key)),
        })
    }

    /// [`require_client_cert`](Self::require_client_cert) with the CA from
    /// a PEM file.
    pub fn require_client_cert_file(self, ca: impl AsRef<Path>) -> Result<ServerTls> {
        let pem = read_file("client CA", ca.as_ref())?;
        self.require_client_cert(&pem)
    }

    fn build(
        chain: &[CertificateDer<'static>],
        key: &PrivateKeyDer<'static>,
        clients: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    ) -> Result<Arc<rustls::ServerConfig>> {
        let b = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .map_err(|e| config_error("versions", e))?;
        let b = match clients {
            Some(v) => b.with_client_cert_verifier(v),
            None => b.with_no_client_auth(),
        };
        let config = b
            .with_single_cert(chain.to_vec(), key.clone_key())
            .map_err(|e| config_error("certificate and key", e))?;
        Ok(Arc::new(config))
    }
}

/// What a client dials a `tls@HOST:PORT` address with
/// ([`ClientBuilder::tls`](crate::client::ClientBuilder::tls)): the CAs it
/// trusts, the name the server's certificate must be valid for (default:
/// the HOST of the address), and optionally its own certificate (mutual
/// TLS).
///
/// The default trusts the public web PKI's roots (`webpki-roots`, compiled
/// in: the same on every platform, nothing read from the system); a
/// deployment with its own CA says so with [`ca_pem`](Self::ca_pem) or
/// [`ca_file`](Self::ca_file).
#[derive(Clone)]
pub struct ClientTls {
    roots: Option<Arc<rustls::RootCertStore>>,
    client: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
    server_name: Option<String>,
    config: Arc<rustls::ClientConfig>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("own_ca", &self.roots.is_some())
            .field("client_cert", &self.client.is_some())
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl Default for ClientTls {
    fn default() -> ClientTls {
        ClientTls::webpki_roots()
    }
}

impl ClientTls {
    /// Trusting the public web PKI's roots (`webpki-roots`).
    pub fn webpki_roots() -> ClientTls {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        // Cannot fail: the versions are rustls's own and there is no key.
        let config = ClientTls::build(&roots, None).expect("the default TLS client config");
        ClientTls {
            roots: None,
            client: None,
            server_name: None,
            config,
        }
    }

    /// Trusting only the CA certificates in `ca_pem` (PEM text).
    pub fn ca_pem(ca_pem: &[u8]) -> Result<ClientTls> {
        let roots = Arc::new(roots(ca_pem)?);
        let config = ClientTls::build(&roots, None)?;
        Ok(ClientTls {
            roots: Some(roots),
            client: None,
            server_name: None,
            config,
        })
    }

    /// [`ca_pem`](Self::ca_pem) from a PEM file.
    pub fn ca_file(ca: impl AsRef<Path>) -> Result<ClientTls> {
        ClientTls::ca_pem(&read_file("CA certificate", ca.as_ref())?)
    }

    /// A rustls configuration made elsewhere, used as it is.
    pub fn from_config(config: Arc<rustls::ClientConfig>) -> ClientTls {
        ClientTls {
            roots: None,
            client: None,
            server_name: None,
            config,
        }
    }

    /// Mutual TLS: the certificate chain and key (PEM text) this client
    /// shows a server that asks for one. Default: none.
    pub fn client_cert(self, cert_chain: &[u8], key_pem: &[u8]) -> Result<ClientTls> {
        let chain = certs("TLS client certificate", cert_chain)?;
        let key = Arc::new(key(key_pem)?);
        let roots = match &self.roots {
            Some(r) => r.clone(),
            None => Arc::new(rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            }),
        };
        let config = ClientTls::build(&roots, Some((&chain, &key)))?;
        Ok(ClientTls {
            roots: self.roots,
            client: Some((chain, key)),
            server_name: self.server_name,
            config,
        })
    }

    /// [`client_cert`](Self::client_cert) from PEM files.
    pub fn client_cert_files(
        self,
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<ClientTls> {
        let chain = read_file("TLS client certificate", cert_chain.as_ref())?;
        let key = read_file("TLS private key", key.as_ref())?;
        self.client_cert(&chain, &key)
    }

    /// The name the server's certificate must be valid for, instead of the
    /// HOST of the address: for a server dialled by IP address whose
    /// certificate names it by DNS name, say. Default: the HOST.
    pub fn server_name(mut self, name: impl Into<String>) -> ClientTls {
        self.server_name = Some(name.into());
        self
    }

    fn build(
        roots: &rustls::RootCertStore,
        client: Option<(&[CertificateDer<'static>], &PrivateKeyDer<'static>)>,
    ) -> Result<Arc<rustls::ClientConfig>> {
        let b = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .map_err(|e| config_error("versions", e))?
            .with_root_certificates(roots.clone());
        let config = match client {
            Some((chain, key)) => b
                .with_client_auth_cert(chain.to_vec(), key.clone_key())
                .map_err(|e| config_error("client certificate and key", e))?,
            None => b.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }

    /// The name to check the certificate of the server at `host` against.
    fn name_for(&self, host: &str) -> io::Result<ServerName<'static>> {
        let name = self.server_name.as_deref().unwrap_or(host);
        // `[::1]` in an address is `::1` in a certificate.
        let name = name.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(name.to_string()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?} is not a TLS server name: {e}"),
            )
        })
    }
}

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
        let mut p = libc::pollfd {
            fd: s.as_raw_fd(),
            events,
            revents: 0,
        };
        let ms = match timeout {
            None => -1,
            Some(t) => t.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int,
        };
        loop {
            // SAFETY: one valid pollfd, for a descriptor the stream owns.
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
}

/// A rustls error as an I/O error whose text says what went wrong in words.
fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, describe(&e))
}

/// What a failed handshake means, in words, then rustls's own text.
pub(crate) fn describe(e: &rustls::Error) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let why = match e {
        E::InvalidCertificate(c) => match c {
            C::UnknownIssuer => "the peer's certificate is signed by an unknown CA",
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "the server's certificate is not valid for the name dialled (name mismatch)"
            }
            C::Expired | C::ExpiredContext { .. } => "the peer's certificate has expired",
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "the peer's certificate is not valid yet"
            }
            C::Revoked => "the peer's certificate is revoked",
            C::BadSignature => "the peer's certificate has a bad signature",
            _ => "the peer's certificate is not acceptable",
        },
        E::NoCertificatesPresented => {
            "the client presented no certificate (mutual TLS requires one)"
        }
        E::AlertReceived(a) => match a {
            A::CertificateRequired => "the server requires a client certificate (mutual TLS)",
            A::UnknownCA => "the peer does not trust the CA of our certificate (unknown CA)",
            A::BadCertificate | A::CertificateUnknown | A::UnsupportedCertificate => {
                "the peer refused our certificate"
            }
            A::CertificateExpired => "the peer says our certificate has expired",
            A::DecryptError | A::HandshakeFailure => "the peer refused the handshake",
            _ => "the peer sent an alert",
        },
        E::InvalidMessage(_)
        | E::InappropriateMessage { .. }
        | E::InappropriateHandshakeMessage { .. } => {
            "the peer does not speak TLS (a plaintext peer on a TLS port?)"
        }
        _ => "TLS error",
    };
    format!("TLS handshake failed: {why} ({e})")
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

/// The identity a verified client certificate proves: its subject and
/// alternative names as text. `None` if it cannot be parsed (it was
/// verified, so that does not happen in practice).
pub(crate) fn identity_of(leaf: &CertificateDer<'_>) -> Option<(String, Vec<String>)> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let subject = cert.subject().to_string();
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                    names.push(s.to_string())
                }
                GeneralName::IPAddress(b) => match b.len() {
                    4 => names
                        .push(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).ok()?).to_string()),
                    16 => names
                        .push(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).ok()?).to_string()),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Some((subject, names))
}
