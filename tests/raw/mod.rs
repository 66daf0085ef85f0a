//! A raw peer for the bounds tests: it speaks the wire protocol by hand so
//! that it can misbehave (never read, drip bytes, stay idle).
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

pub const JSON_OPTION: &str = r#"{"MagicNumber":3882844,"CodecType":"application/json","ConnectTimeout":0,"HandleTimeout":0}"#;

/// Size of each pipelined request's payload (and of its echoed reply).
pub const PAYLOAD: usize = 256 << 10;

/// A connection that has sent its Option (JSON codec).
pub fn handshaked(addr: &geerpc::Address) -> TcpStream {
    let mut s = TcpStream::connect(addr.target()).unwrap();
    s.write_all(format!("{JSON_OPTION}\n").as_bytes()).unwrap();
    s
}

/// One `Echo.Echo` request whose argument is the string `payload`.
pub fn echo_request(seq: u64, payload: &str) -> Vec<u8> {
    let mut out =
        format!("{{\"ServiceMethod\":\"Echo.Echo\",\"Seq\":{seq},\"Error\":\"\"}}\n").into_bytes();
    out.push(b'"');
    out.extend_from_slice(payload.as_bytes());
    out.extend_from_slice(b"\"\n");
    out
}

/// How an attack ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// A write made no progress for 500 ms: the server stopped reading.
    Stalled,
    /// The server closed the connection.
    Closed,
    /// The count or the time ran out, the server still reading.
    Finished,
}

/// Pipelines `PAYLOAD`-sized echo requests and never reads, until a write
/// makes no progress for 500 ms, the server closes the connection, `max`
/// requests, or `for_at_most`. Returns the socket, how many requests were
/// sent, and how it ended.
pub fn attack(
    addr: &geerpc::Address,
    max: usize,
    for_at_most: Duration,
) -> (TcpStream, usize, Ended) {
    let mut s = handshaked(addr);
    s.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let payload = "a".repeat(PAYLOAD);
    let until = Instant::now() + for_at_most;
    let mut sent = 0;
    while sent < max && Instant::now() < until {
        match s.write_all(&echo_request(sent as u64 + 1, &payload)) {
            Ok(()) => sent += 1,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (s, sent, Ended::Stalled)
            }
            Err(e) if is_closed(&e) => return (s, sent, Ended::Closed),
            Err(e) => panic!("attacker write failed: {e}"),
        }
    }
    (s, sent, Ended::Finished)
}

/// Whether an error means the peer closed the connection.
pub fn is_closed(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset
            | ErrorKind::BrokenPipe
            | ErrorKind::ConnectionAborted
            | ErrorKind::UnexpectedEof
    )
}

/// Waits, reading and dropping whatever arrives, until the server closes
/// the connection (`Some(when)`) or `by` (`None`).
pub fn read_until_closed(s: &mut TcpStream, by: Instant) -> Option<Instant> {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let left = by.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return Some(Instant::now()),
            Ok(_) => {}
            Err(e) if is_closed(&e) => return Some(Instant::now()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("read failed: {e}"),
        }
    }
}
