//! A fake JSON-codec server for the client-side call-context tests: it
//! speaks the wire protocol by hand, hands every request header it reads
//! to the test (raw bytes and parsed), and answers as told, so that a test
//! sees exactly what the client wrote.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use serde_json::Value;

/// How the fake server answers each request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// A reply with body `1` and no metadata.
    One,
    /// A reply with body `1` and this `Meta` in its header.
    OneWithMeta(Value),
    /// Never answer; the connection stays open until the client sends
    /// nothing for 10 s (so that a test whose call should have timed out
    /// fails instead of hanging).
    Never,
    /// Close the connection as soon as the request is read.
    Close,
}

/// A request header as the client wrote it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The header line, without its newline.
    pub raw: String,
    pub header: Value,
    /// The body line, without its newline.
    pub body: String,
}

impl Seen {
    /// The `Timeout` field, if present.
    pub fn timeout(&self) -> Option<Duration> {
        self.header
            .get("Timeout")
            .map(|t| Duration::from_nanos(t.as_u64().expect("Timeout is a u64")))
    }

    /// `Meta[key]`, if present.
    pub fn meta(&self, key: &str) -> Option<String> {
        self.header
            .get("Meta")?
            .get(key)
            .map(|v| v.as_str().unwrap().to_string())
    }
}

pub struct FakeServer {
    pub addr: String,
    pub seen: Receiver<Seen>,
}

impl FakeServer {
    /// Listens on a free loopback port and serves one connection, answering
    /// every request with `answer`.
    pub fn start(answer: Answer) -> FakeServer {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("tcp@{}", l.local_addr().unwrap());
        let (tx, rx) = crossbeam_channel::unbounded();
        std::thread::Builder::new()
            .name("fake-server".into())
            .spawn(move || {
                if let Ok((s, _)) = l.accept() {
                    serve(s, answer, tx);
                }
            })
            .unwrap();
        FakeServer { addr, seen: rx }
    }

    /// The next request the client wrote (5 s at most).
    pub fn next(&self) -> Seen {
        self.seen
            .recv_timeout(Duration::from_secs(5))
            .expect("the fake server saw no request")
    }
}

fn serve(s: TcpStream, answer: Answer, tx: Sender<Seen>) {
    if matches!(answer, Answer::Never) {
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    }
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    // The client's Option line.
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    loop {
        let mut head = String::new();
        let mut body = String::new();
        if r.read_line(&mut head).unwrap_or(0) == 0 || r.read_line(&mut body).unwrap_or(0) == 0 {
            return;
        }
        let raw = head.trim_end_matches('\n').to_string();
        let header: Value = serde_json::from_str(&raw).expect("a JSON header");
        let seq = header["Seq"].as_u64().unwrap();
        let method = header["ServiceMethod"].as_str().unwrap().to_string();
        let _ = tx.send(Seen {
            raw,
            header,
            body: body.trim_end_matches('\n').to_string(),
        });
        let reply = match &answer {
            Answer::One => serde_json::json!({"ServiceMethod": method, "Seq": seq, "Error": ""}),
            Answer::OneWithMeta(meta) => serde_json::json!({
                "ServiceMethod": method, "Seq": seq, "Error": "", "Meta": meta
            }),
            Answer::Never => continue,
            Answer::Close => return,
        };
        let out = format!("{reply}\n1\n");
        if w.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
}
