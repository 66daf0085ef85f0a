//! Dialling: [`ClientBuilder`], connect plus handshake (and the HTTP
//! `CONNECT` exchange for `http@`), bounded by the earlier of the connect
//! timeout and the deadline of the call that dials, if any.

use std::io::Write;
use std::time::{Duration, Instant};

use super::intercept::{Interceptor, InterceptorList};
use super::outbound::Defaults;
use super::{deadline_after, Client};
use crate::error::{Error, Result, TimeoutStage};
use crate::meta::{Meta, AUTHORIZATION};
use crate::util::token::Token;
use crate::wire::address::{Address, Protocol, ToAddress};
use crate::wire::codec::Codec;
use crate::wire::frame::FrameReader;
use crate::wire::frame::DEFAULT_MAX_MESSAGE;
use crate::wire::handshake::{check_client_magic, Handshake, MAGIC_NUMBER};
use crate::wire::transport::Stream;
use crate::wire::writer::SharedWriter;

/// Settings for dialling; see [`Client::builder`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    codec: Codec,
    connect_timeout: Option<Duration>,
    handle_timeout: Option<Duration>,
    max_message_size: usize,
    write_timeout: Duration,
    max_queued_bytes: usize,
    connect_path: String,
    magic: u64,
    meta: Meta,
    trace_ids: bool,
    interceptors: InterceptorList,
    /// How `tls@` addresses are dialled; None: the webpki roots.
    #[cfg(all(feature = "tls", unix))]
    tls: Option<crate::wire::ClientTls>,
}

/// Default cap on a client connection's request bytes queued for writing.
const DEFAULT_MAX_QUEUED_BYTES: usize = 4 << 20;

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            codec: Codec::Json,
            connect_timeout: Some(Duration::from_secs(10)),
            handle_timeout: None,
            max_message_size: DEFAULT_MAX_MESSAGE,
            write_timeout: Duration::from_secs(30),
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
            connect_path: DEFAULT_CONNECT_PATH.to_string(),
            magic: MAGIC_NUMBER,
            meta: Meta::new(),
            trace_ids: false,
            interceptors: InterceptorList::default(),
            #[cfg(all(feature = "tls", unix))]
            tls: None,
        }
    }
}

impl ClientBuilder {
    /// How `tls@HOST:PORT` addresses are dialled: the CAs trusted, the
    /// server name checked, a client certificate for mutual TLS (see
    /// [`ClientTls`](crate::wire::ClientTls)). Default: the public web
    /// PKI's roots, the HOST of the address as the name, no client
    /// certificate. The TLS handshake counts against the
    /// [connect timeout](Self::connect_timeout). Other addresses ignore it.
    ///
    /// ```no_run
    /// use geerpc::wire::ClientTls;
    /// use geerpc::Client;
    ///
    /// let tls = ClientTls::ca_file("ca.pem")?;
    /// let client = Client::builder().tls(tls).dial("tls@rpc.example.com:7443")?;
    /// # Ok::<(), geerpc::Error>(())
    /// ```
    #[cfg(all(feature = "tls", unix))]
    pub fn tls(mut self, tls: crate::wire::ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The codec for this connection (default JSON).
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Limit on connect plus handshake (default 10 s; `None`: no limit).
    pub fn connect_timeout(mut self, t: Option<Duration>) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Ask the server to answer every call within `t` (default: no limit).
    pub fn handle_timeout(mut self, t: Option<Duration>) -> Self {
        self.handle_timeout = t;
        self
    }

    /// Largest request or reply, in bytes (default 16 MiB).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// How long a server may take no bytes of the requests queued for it
    /// before the connection is given up and every pending call fails
    /// (default 30 s). Calls with a timeout end at their own deadline
    /// meanwhile; see [`Client::call_timeout`].
    pub fn write_timeout(mut self, t: Duration) -> Self {
        self.write_timeout = t.max(Duration::from_millis(1));
        self
    }

    /// Cap on request bytes queued for writing on the connection and not
    /// yet taken by the socket (default 4 MiB). Past it a caller waits for room before it queues its
    /// request: a call with a timeout at most until its deadline (then
    /// [`Error::Timeout`] at [`TimeoutStage::Write`], the request not
    /// sent), a call without one until the server reads or the connection
    /// closes (see [`write_timeout`](ClientBuilder::write_timeout)). So a
    /// server that stops reading costs the client this much memory, plus
    /// at most one request per waiting caller, not one per call made. A
    /// single request larger than the cap still goes out.
    pub fn max_queued_bytes(mut self, bytes: usize) -> Self {
        self.max_queued_bytes = bytes.max(1);
        self
    }

    /// The path an `http@` client sends its `CONNECT` to (default
    /// `/_geerpc_`, as PROTOCOL.md section 5 says; a `/` is put in front of
    /// a path without one). A geerpc server answers on `/_geerpc_`,
    /// `/_geeprc_` and `/myrpc`; a Go GeeRPC server only on its own: the
    /// original series' on `/_geeprc_`, the article's on `/myrpc`, so
    /// `connect_path("/myrpc")` reaches the latter. Both Go answers
    /// (`200 Connected to Gee RPC`, `200 Connected to RPC`) are accepted:
    /// any `200` is. The path must be printable ASCII without spaces, at
    /// most 1024 bytes, so that it cannot break the request line; a dial
    /// of an `http@` address with another one fails with
    /// [`Error::InvalidAddress`] before connecting (which an XClient does
    /// not count against the instance). Other addresses ignore it.
    pub fn connect_path(mut self, path: impl Into<String>) -> Self {
        let mut p: String = path.into();
        if !p.starts_with('/') {
            p.insert(0, '/');
        }
        self.connect_path = p;
        self
    }

    /// The `MagicNumber` of the handshake (PROTOCOL.md section 2; default
    /// [`MAGIC_NUMBER`](crate::MAGIC_NUMBER), 0x3b3f5c, the article's). A
    /// Go server accepts only its own: one of the original GeeRPC series
    /// needs [`LEGACY_MAGIC_NUMBER`](crate::LEGACY_MAGIC_NUMBER)
    /// (0x3bef5c). A geerpc server accepts both. No server accepts any
    /// other value, so a dial with one fails before connecting with
    /// [`Error::Encode`] naming the two (not counted against the instance
    /// by an XClient).
    ///
    /// ```no_run
    /// use geerpc::{Client, LEGACY_MAGIC_NUMBER};
    ///
    /// let client = Client::builder().magic(LEGACY_MAGIC_NUMBER).dial("tcp@127.0.0.1:9999")?;
    /// # Ok::<(), geerpc::Error>(())
    /// ```
    pub fn magic(mut self, magic: u64) -> Self {
        self.magic = magic;
        self
    }

    /// Metadata every call sends (default: none), under the call's own
    /// ([`CallOptions::meta`](crate::CallOptions::meta): the call's value
    /// wins per key). Travels as the request's `Meta` (PROTOCOL.md section
    /// 8), which Go peers ignore.
    pub fn meta(mut self, meta: Meta) -> Self {
        self.meta = meta;
        self
    }

    /// Every call sends `token` as its credentials
    /// (`authorization: Bearer TOKEN` in its `Meta`, which a server's
    /// [`BearerAuth`](crate::server::BearerAuth) checks); a call's own
    /// [`CallOptions::bearer`](crate::CallOptions::bearer) wins. Call it
    /// after [`meta`](Self::meta), which replaces the whole default `Meta`.
    /// Fails only if the default `Meta` would pass its size limit. The
    /// token never shows: `Meta`'s `Debug` redacts it.
    ///
    /// ```no_run
    /// use geerpc::{Client, Token};
    ///
    /// let token = Token::from_file("/etc/myapp/rpc-token")?;
    /// let client = Client::builder().bearer(&token)?.dial("tcp@10.0.0.5:9999")?;
    /// # Ok::<(), geerpc::Error>(())
    /// ```
    pub fn bearer(mut self, token: &Token) -> Result<Self> {
        self.meta.insert(AUTHORIZATION, token.bearer())?;
        Ok(self)
    }

    /// Whether a call made outside any trace starts one: it then sends a
    /// new `traceparent` (W3C Trace Context, a random trace id), which the
    /// server's handler continues in the calls it makes (default: off; a
    /// call made in a scope with a trace, such as a handler's, always
    /// continues it).
    pub fn trace_ids(mut self, on: bool) -> Self {
        self.trace_ids = on;
        self
    }

    /// Adds an interceptor, which runs around every call after those
    /// added before it (see [`Interceptor`] for the order and the threads
    /// it runs on). Default: none, which costs a call nothing.
    pub fn interceptor(mut self, interceptor: impl Interceptor) -> Self {
        self.interceptors.0.push(std::sync::Arc::new(interceptor));
        self
    }

    /// Connects to `addr`: anything [`ToAddress`] takes (`tcp@HOST:PORT`,
    /// `http@HOST:PORT`, `unix@PATH`, a bare `HOST:PORT`, an [`Address`](crate::Address),
    /// a [`SocketAddr`](std::net::SocketAddr)); see [`Client::dial`].
    pub fn dial(&self, addr: impl ToAddress) -> Result<Client> {
        self.dial_within(addr, None)
    }

    /// [`dial`](ClientBuilder::dial) for a call: connect and handshake end
    /// by the earlier of the connect timeout and `call_deadline`. If the
    /// call's deadline is what ran out, the error is [`Error::Timeout`] at
    /// [`TimeoutStage::Dial`] with `method` empty and `timeout` zero, for
    /// the caller to fill in (it knows the call); it says nothing about
    /// the server.
    pub(crate) fn dial_within(
        &self,
        addr: impl ToAddress,
        call_deadline: Option<Instant>,
    ) -> Result<Client> {
        let address = addr.to_address()?;
        // What errors call the server: the address as parsed, which is
        // what was given unless that was a bare HOST:PORT (then `tcp@`
        // comes first), and what `Client::addr` tells.
        let addr = address.to_string();
        let addr = addr.as_str();
        // Checked before connecting, and not as a failure of the server:
        // an XClient must not evict every instance over a client setting.
        check_client_magic(self.magic)?;
        if address.protocol() == Protocol::Http {
            check_connect_path(&self.connect_path, addr)?;
        }
        let own = self.connect_timeout.and_then(deadline_after);
        // The call's deadline binds when it comes first (or is the only one).
        let call_binds = match (call_deadline, own) {
            (Some(c), Some(o)) => c < o,
            (Some(_), None) => true,
            (None, _) => false,
        };
        let deadline = if call_binds { call_deadline } else { own };
        let timed_out = |e: &std::io::Error| {
            matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            )
        };
        let fail = |e: std::io::Error| match self.connect_timeout {
            _ if call_binds && timed_out(&e) => Error::Timeout {
                method: String::new(),
                addr: addr.to_string(),
                timeout: Duration::ZERO,
                stage: TimeoutStage::Dial,
            },
            Some(timeout) if timed_out(&e) => Error::ConnectTimeout {
                addr: addr.to_string(),
                timeout,
            },
            _ => Error::Connect {
                addr: addr.to_string(),
                source: e,
            },
        };
        let stream = self.connect(&address, deadline).map_err(fail)?;
        let mut reader = FrameReader::new(stream.try_clone().map_err(fail)?, self.max_message_size);
        let set_timeouts = |on: bool| -> std::io::Result<()> {
            let left = match (on, deadline) {
                (true, Some(d)) => Some(
                    d.saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(1)),
                ),
                _ => None,
            };
            stream.set_read_timeout(left)?;
            // After the handshake no write blocks (the writer thread waits
            // with `poll`, bounded by the write timeout); this limit is a
            // backstop should one ever block.
            stream.set_write_timeout(left.or(Some(self.write_timeout)))
        };
        set_timeouts(true).map_err(fail)?;
        let mut w = stream.try_clone().map_err(fail)?;
        if address.protocol() == Protocol::Http {
            http_connect(&mut w, &mut reader, addr, &self.connect_path).map_err(|e| match e {
                Error::Io { source, .. } => fail(source),
                other => other,
            })?;
        }
        let option = Handshake::new(self.codec, self.connect_timeout, self.handle_timeout)
            .with_magic(self.magic);
        w.write_all(&option.to_line()).map_err(fail)?;
        set_timeouts(false).map_err(fail)?;
        let writer =
            SharedWriter::new(w, self.max_message_size).with_queue_cap(self.max_queued_bytes);
        #[cfg(feature = "gob")]
        if self.codec == Codec::Gob {
            writer.use_gob();
        }
        let defaults = Defaults::new(
            address.clone(),
            self.meta.clone(),
            self.trace_ids,
            self.interceptors.0.clone(),
        );
        Ok(Client::start(
            address,
            self.codec,
            stream,
            reader,
            writer,
            self.write_timeout,
            defaults,
        ))
    }
}

impl ClientBuilder {
    /// The connected stream `address` leads to; for `tls@`, with its TLS
    /// handshake done, by `deadline` too.
    fn connect(&self, address: &Address, deadline: Option<Instant>) -> std::io::Result<Stream> {
        #[cfg(all(feature = "tls", unix))]
        if address.protocol() == Protocol::Tls {
            return match &self.tls {
                Some(tls) => Stream::connect_tls(address, deadline, tls),
                None => Stream::connect_tls(address, deadline, &crate::wire::ClientTls::default()),
            };
        }
        Stream::connect(address, deadline)
    }
}

/// Where an `http@` client sends its `CONNECT`: Go's client writes exactly
/// `CONNECT /_geerpc_ HTTP/1.0\n\n`.
const DEFAULT_CONNECT_PATH: &str = "/_geerpc_";
/// Longest CONNECT path accepted (the request line stays short).
const MAX_CONNECT_PATH: usize = 1024;

/// A CONNECT path that [`http_connect`] can put in its request line
/// unchanged: a `/`, then printable ASCII without spaces (nothing to end
/// the line or split it into other fields), bounded.
fn check_connect_path(path: &str, addr: &str) -> Result<()> {
    let why = if !path.starts_with('/') {
        Some("does not start with '/'".to_string())
    } else if path.len() > MAX_CONNECT_PATH {
        Some(format!("is longer than {MAX_CONNECT_PATH} bytes"))
    } else if !path.bytes().all(|b| b.is_ascii_graphic()) {
        Some("would break the request line (only printable ASCII without spaces)".to_string())
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => {
            let shown: String = path.chars().take(64).collect();
            let more = if shown.len() < path.len() { "..." } else { "" };
            Err(Error::InvalidAddress {
                addr: addr.to_string(),
                reason: format!("CONNECT path {shown:?}{more} {why}"),
            })
        }
    }
}

/// Longest status line, and longest whole head, read from a CONNECT reply.
const MAX_STATUS_LINE: usize = 1024;
const MAX_CONNECT_HEAD: usize = 8 * 1024;

/// Sends `CONNECT` and checks the reply (PROTOCOL.md section 5): any
/// `200` turns the connection into an RPC one (Go's two servers say
/// `200 Connected to Gee RPC` and `200 Connected to RPC`); anything else, or no HTTP
/// reply at all, is [`Error::HttpConnect`] with what the server said. I/O
/// failures come back as [`Error::Io`] for the caller to classify.
fn http_connect(
    w: &mut Stream,
    rd: &mut FrameReader<Stream>,
    addr: &str,
    path: &str,
) -> Result<()> {
    w.write_all(format!("CONNECT {path} HTTP/1.0\n\n").as_bytes())
        .map_err(|e| Error::io("send CONNECT", e))?;
    let refused = |status: String| Error::HttpConnect {
        addr: addr.to_string(),
        status,
    };
    let line = match rd.read_until(b"\n", MAX_STATUS_LINE) {
        Ok(line) => line,
        Err(Error::Io { source, .. }) => return Err(Error::io("read CONNECT reply", source)),
        Err(Error::MessageTooLarge { .. }) => {
            return Err(refused(format!(
                "no HTTP status line in the first {MAX_STATUS_LINE} bytes of the reply"
            )))
        }
        Err(_) => return Err(refused("connection closed without an HTTP reply".into())),
    };
    let status = String::from_utf8_lossy(&line).trim_end().to_string();
    let mut parts = status.split(' ');
    let is_http = parts.next().is_some_and(|v| v.starts_with("HTTP/"));
    if !is_http || parts.next() != Some("200") {
        return Err(refused(status));
    }
    // Skip the rest of the head, up to the empty line; the RPC stream follows.
    let mut total = line.len();
    loop {
        let line = match rd.read_until(b"\n", MAX_CONNECT_HEAD.saturating_sub(total)) {
            Ok(line) => line,
            Err(Error::Io { source, .. }) => return Err(Error::io("read CONNECT reply", source)),
            Err(e) => return Err(refused(format!("{status}, then a bad head: {e}"))),
        };
        total += line.len();
        if line.trim_ascii().is_empty() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    /// `.ci/run` runs the library's tests without the `tls` feature: there
    /// a `tls@` dial says why it cannot be made, and connects nowhere.
    #[cfg(not(all(feature = "tls", unix)))]
    #[test]
    fn a_tls_address_without_tls_built_in_is_a_clear_error() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("tls@{}", l.local_addr().unwrap());
        let e = crate::Client::dial(&addr).err().expect("no TLS here");
        let text = e.to_string();
        assert!(text.contains(crate::wire::transport::NO_TLS), "{text}");
        assert!(text.contains(&addr), "{text}");
        l.set_nonblocking(true).unwrap();
        assert!(l.accept().is_err(), "nothing was dialled");
    }
}
