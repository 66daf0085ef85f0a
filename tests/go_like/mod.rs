//! A test double of a Go GeeRPC server with a JSON codec, written in Rust
//! (issue 22): it reads the Option the way Go's `server.ServeConn` does,
//! through a throw-away decoder with Go's buffering, which it then drops
//! with whatever it read past the Option, and reads the requests from the
//! raw connection; it checks the magic number for equality with its own,
//! and over `http@` answers `CONNECT` on one path only, with the status
//! text of the Go version it plays. Every connection is served on its own
//! named thread, which ends at end of stream or after 10 s without bytes.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use serde_json::{json, Value};

/// The Go version a double plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoVersion {
    /// The article's: magic 0x3b3f5c, `CONNECT /myrpc`, `200 Connected to RPC`.
    Article,
    /// The original series': magic 0x3bef5c, `CONNECT /_geeprc_`,
    /// `200 Connected to Gee RPC`.
    Original,
}

impl GoVersion {
    pub fn magic(self) -> u64 {
        match self {
            GoVersion::Article => 0x3b3f5c,
            GoVersion::Original => 0x3bef5c,
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            GoVersion::Article => "/myrpc",
            GoVersion::Original => "/_geeprc_",
        }
    }

    fn connected(self) -> &'static str {
        match self {
            GoVersion::Article => "HTTP/1.0 200 Connected to RPC\n\n",
            GoVersion::Original => "HTTP/1.0 200 Connected to Gee RPC\n\n",
        }
    }
}

/// What the double saw on one connection.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The path of the `CONNECT`, over `http@`.
    pub connect_path: Option<String>,
    /// The Option line's bytes as sent, up to and including its `\n`.
    pub option_line: Vec<u8>,
    /// The Option as Go's decoder decoded it.
    pub option: Value,
}

pub struct GoLike {
    /// `tcp@HOST:PORT` (or `http@`).
    pub addr: String,
    /// One entry per connection, once its Option is decoded.
    pub seen: Receiver<Seen>,
}

/// How long a connection may go without bytes before its thread ends.
const IDLE: Duration = Duration::from_secs(10);

impl GoLike {
    /// A double on a free loopback port serving up to `conns` connections.
    ///
    /// `worst_case`: before it reads the Option, each connection waits
    /// until the client's first request (header and body) has arrived
    /// behind it, so that Go's first 512-byte read finds it there (the
    /// race of issue 22 always lost, not 8 times in 30). `http`: the
    /// double wants a `CONNECT` first.
    pub fn start(version: GoVersion, http: bool, worst_case: bool, conns: usize) -> GoLike {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let scheme = if http { "http" } else { "tcp" };
        let addr = format!("{scheme}@{}", l.local_addr().unwrap());
        let (tx, rx) = crossbeam_channel::unbounded();
        std::thread::Builder::new()
            .name("go-like-accept".into())
            .spawn(move || {
                for _ in 0..conns {
                    let Ok((s, _)) = l.accept() else { return };
                    let tx = tx.clone();
                    std::thread::Builder::new()
                        .name("go-like-conn".into())
                        .spawn(move || serve(s, version, http, worst_case, tx))
                        .unwrap();
                }
            })
            .unwrap();
        GoLike { addr, seen: rx }
    }

    /// What the next connection showed (10 s at most).
    pub fn next(&self) -> Seen {
        self.seen
            .recv_timeout(IDLE)
            .expect("no connection reached the Go-like server")
    }
}

fn serve(s: TcpStream, version: GoVersion, http: bool, worst_case: bool, tx: Sender<Seen>) {
    s.set_read_timeout(Some(IDLE)).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut raw = s;
    let mut connect_path = None;
    if http {
        // Go's net/http reads the request; the client writes nothing more
        // before the answer, so a byte-wise read loses nothing here.
        let Some(head) = read_head(&mut raw) else {
            return;
        };
        let mut parts = head.lines().next().unwrap_or("").split(' ');
        let (method, path) = (parts.next(), parts.next().unwrap_or("").to_string());
        if method != Some("CONNECT") || path != version.path() {
            let _ = w.write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n");
            return;
        }
        connect_path = Some(path);
        w.write_all(version.connected().as_bytes()).unwrap();
    }
    let option_line = match peek_option_line(&raw, worst_case) {
        Some(line) => line,
        None => return,
    };
    // `json.NewDecoder(conn).Decode(&opt)`, then the decoder is dropped.
    let Some(option) = go_decode(&mut raw) else {
        return;
    };
    let magic_ok = option["MagicNumber"].as_u64() == Some(version.magic());
    let _ = tx.send(Seen {
        connect_path,
        option_line,
        option: option.clone(),
    });
    if !magic_ok || option["CodecType"] != "application/json" {
        // Go logs "rpc server: invalid magic number" and closes.
        return;
    }
    // The codec reads the raw connection: whatever the decoder took past
    // the Option is gone.
    let mut rd = BufReader::new(raw);
    loop {
        let (Some(header), Some(body)) = (read_value(&mut rd), read_value(&mut rd)) else {
            return;
        };
        let reply = match (body["Num1"].as_i64(), body["Num2"].as_i64()) {
            (Some(a), Some(b)) => json!(a + b),
            _ => json!({}),
        };
        let head =
            json!({"ServiceMethod": header["ServiceMethod"], "Seq": header["Seq"], "Error": ""});
        let out = format!("{head}\n{reply}\n");
        if w.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
}

/// An HTTP head, up to its empty line, read a byte at a time (8 KiB at most).
fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !(head.ends_with(b"\n\n") || head.ends_with(b"\r\n\r\n")) {
        if head.len() > 8192 || s.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    String::from_utf8(head).ok()
}

/// The Option line as it is in the socket, without taking it; with
/// `worst_case`, once the first request is there behind it too (two more
/// lines: header and body), waiting 10 s at most. Polls: no signal tells
/// when bytes have arrived but reading them.
fn peek_option_line(s: &TcpStream, worst_case: bool) -> Option<Vec<u8>> {
    let lines = if worst_case { 3 } else { 1 };
    let deadline = Instant::now() + IDLE;
    let mut buf = vec![0u8; 8192];
    loop {
        let n = s.peek(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        let seen = &buf[..n];
        if seen.iter().filter(|&&b| b == b'\n').count() >= lines {
            let end = seen.iter().position(|&b| b == b'\n').unwrap() + 1;
            return Some(seen[..end].to_vec());
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// One JSON value read as Go's `json.Decoder` reads it
/// (`encoding/json/stream.go`, Go 1.19): into a buffer that starts empty
/// and, whenever less than 512 bytes (`minRead`) are free, grows to twice
/// its capacity plus 512, each `Read` filling what is free; the value is
/// decoded as soon as the bytes read hold it whole. What was read past it
/// stays in the buffer, dropped with it.
pub fn go_decode(s: &mut impl Read) -> Option<Value> {
    const MIN_READ: usize = 512;
    let mut buf: Vec<u8> = Vec::new();
    let mut cap = 0usize;
    loop {
        let mut values = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
        match values.next() {
            Some(Ok(v)) => return Some(v),
            Some(Err(e)) if !e.is_eof() => return None,
            _ => {}
        }
        if cap - buf.len() < MIN_READ {
            cap = 2 * cap + MIN_READ;
        }
        let old = buf.len();
        buf.resize(cap, 0);
        let n = s.read(&mut buf[old..]).ok()?;
        buf.truncate(old + n);
        if n == 0 {
            return None;
        }
    }
}

/// One JSON value from the codec's reader (a Go `json.Decoder` over the
/// raw connection: values need not be one per line, but geerpc writes
/// them so, and so does this double).
fn read_value(rd: &mut BufReader<TcpStream>) -> Option<Value> {
    let mut line = String::new();
    loop {
        line.clear();
        if rd.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if !line.trim().is_empty() {
            return serde_json::from_str(&line).ok();
        }
    }
}
