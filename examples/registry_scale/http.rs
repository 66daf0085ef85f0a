//! Just enough HTTP/1.1 for the registry-at-scale driver: requests written
//! by hand, answers parsed from a buffer (so that one thread can read a
//! thousand non-blocking sockets), and a blocking keep-alive connection for
//! the heartbeats and changes.
//!
//! Not ureq: the watchers are 1,000 long polls read by ONE thread (a
//! thread per watcher would load the 2-core machine the registry is
//! measured on), and the answer's arrival must be stamped when its last
//! byte is read, not when a pool hands it over.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The registry's address, split from its URL.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port`, for the Host header.
    pub host: String,
    pub addr: SocketAddr,
    /// The path, e.g. `/_rpc_/registry`.
    pub path: String,
}

impl Target {
    /// `http://HOST:PORT/PATH` (no https: the driver measures the
    /// registry, not TLS).
    pub fn parse(url: &str) -> Result<Target, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("registry URL {url:?}: only http:// is supported here"))?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/_rpc_/registry"),
        };
        let addr = host
            .to_socket_addrs()
            .map_err(|e| format!("registry URL {url:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("registry URL {url:?}: no address"))?;
        Ok(Target {
            host: host.to_string(),
            addr,
            path: path.to_string(),
        })
    }

    /// A heartbeat (or a change): `POST` with the address under all three
    /// header spellings, as `beat.rs` sends it, and a JSON body.
    pub fn post(&self, addr: &str, body: &str) -> Vec<u8> {
        format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             X-rpc-Server: {addr}\r\nX-rpc-Servers: {addr}\r\nX-Geerpc-Server: {addr}\r\n\
             Content-Length: {}\r\n\r\n{body}",
            self.path,
            self.host,
            body.len()
        )
        .into_bytes()
    }

    /// A long poll of one service's list, as `RegistryDiscovery` sends it
    /// (JSON listing); `known` 0 is never current, so it answers at once.
    pub fn watch(&self, service: &str, known: u64, wait: &str) -> Vec<u8> {
        format!(
            "GET {}?service={service}&watch={known}&timeout={wait} HTTP/1.1\r\nHost: {}\r\n\
             Accept: application/json\r\n\r\n",
            self.path, self.host
        )
        .into_bytes()
    }

    pub fn connect(&self) -> io::Result<TcpStream> {
        let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
        s.set_nodelay(true)?;
        Ok(s)
    }
}

/// A whole answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    /// A header's value (names compared without case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `X-Geerpc-Version`, the list's version.
    pub fn version(&self) -> Option<u64> {
        self.header("X-Geerpc-Version")?.trim().parse().ok()
    }
}

/// The largest answer taken (a listing of 10,000 instances is well under).
const MAX_ANSWER: usize = 16 << 20;

/// Parses one answer from the front of `buf`: `Ok(None)` while it is
/// incomplete, else the answer and how many bytes it took.
pub fn parse(buf: &[u8]) -> Result<Option<(Answer, usize)>, String> {
    if buf.len() > MAX_ANSWER {
        return Err(format!("answer larger than {MAX_ANSWER} bytes"));
    }
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| "answer head not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut answer = Answer {
        status,
        headers,
        body: Vec::new(),
    };
    let start = end + 4;
    let chunked = answer
        .header("Transfer-Encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if chunked {
        let mut at = start;
        loop {
            let Some(eol) = find(&buf[at..], b"\r\n") else {
                return Ok(None);
            };
            let size_text =
                std::str::from_utf8(&buf[at..at + eol]).map_err(|_| "bad chunk size")?;
            let size_text = size_text.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| format!("bad chunk size {size_text:?}"))?;
            let data = at + eol + 2;
            if size == 0 {
                // No trailers are sent by tiny_http: just the final CRLF.
                if buf.len() < data + 2 {
                    return Ok(None);
                }
                return Ok(Some((answer, data + 2)));
            }
            if buf.len() < data + size + 2 {
                return Ok(None);
            }
            answer.body.extend_from_slice(&buf[data..data + size]);
            at = data + size + 2;
        }
    }
    let len: usize = match answer.header("Content-Length") {
        Some(v) => v.parse().map_err(|_| format!("bad Content-Length {v:?}"))?,
        None => 0,
    };
    if buf.len() < start + len {
        return Ok(None);
    }
    answer.body = buf[start..start + len].to_vec();
    Ok(Some((answer, start + len)))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A blocking keep-alive connection; reconnects once when the registry
/// closed the last one (tiny_http closes idle connections at its read
/// timeout).
pub struct Conn {
    target: Target,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Conn {
    pub fn new(target: &Target) -> Conn {
        Conn {
            target: target.clone(),
            stream: None,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Sends `request` and reads its answer (10 s at most).
    pub fn send(&mut self, request: &[u8]) -> Result<Answer, String> {
        match self.try_send(request) {
            Ok(a) => Ok(a),
            Err(_) => {
                self.stream = None;
                self.try_send(request)
            }
        }
    }

    fn try_send(&mut self, request: &[u8]) -> Result<Answer, String> {
        if self.stream.is_none() {
            let s = self
                .target
                .connect()
                .map_err(|e| format!("connect {}: {e}", self.target.addr))?;
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            self.stream = Some(s);
            self.buf.clear();
        }
        let s = self.stream.as_mut().expect("connected above");
        s.write_all(request)
            .map_err(|e| format!("send to {}: {e}", self.target.addr))?;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some((answer, used)) = parse(&self.buf)? {
                self.buf.drain(..used);
                if answer
                    .header("Connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                {
                    self.stream = None;
                }
                return Ok(answer);
            }
            let n = s
                .read(&mut chunk)
                .map_err(|e| format!("read from {}: {e}", self.target.addr))?;
            if n == 0 {
                self.stream = None;
                return Err(format!("{} closed the connection", self.target.addr));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}
