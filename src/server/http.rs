//! HTTP on the RPC port (PROTOCOL.md section 5): the CONNECT tunnel that
//! turns the connection into an RPC one, and plain requests.

use super::conn::Conn;
use super::Running;
use crate::error::{Error, Result};
use crate::frame::FrameReader;
use crate::transport::Stream;

/// Longest HTTP head read before the connection is dropped.
const MAX_HEAD: usize = 8 * 1024;

/// The RPC paths and the status text each Go client compares exactly.
const RPC_PATHS: [(&str, &str); 3] = [
    ("/_geerpc_", "200 Connected to Gee RPC"),
    ("/_geeprc_", "200 Connected to Gee RPC"),
    ("/myrpc", "200 Connected to RPC"),
];

pub(super) enum Outcome {
    /// A CONNECT was accepted: the RPC handshake follows on this connection.
    Rpc,
    /// The request was answered; close the connection.
    Done,
}

/// A parsed request head.
pub(super) struct Head {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    #[allow(dead_code)]
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads a head: a request line and header lines up to an empty line
/// (`\n` or `\r\n` line ends, as Go clients send either).
fn read_head(rd: &mut FrameReader<Stream>) -> Result<Head> {
    let mut total = 0;
    let mut line = |rd: &mut FrameReader<Stream>| -> Result<String> {
        let raw = rd.read_until(b"\n", MAX_HEAD - total)?;
        total += raw.len();
        let text =
            String::from_utf8(raw).map_err(|_| Error::Protocol("HTTP head is not UTF-8".into()))?;
        Ok(text.trim_end_matches(['\r', '\n']).to_string())
    };
    let request = line(rd)?;
    let mut parts = request.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(Error::Protocol(format!(
            "malformed HTTP request line {request:?}"
        )));
    };
    if !version.starts_with("HTTP/") {
        return Err(Error::Protocol(format!(
            "malformed HTTP request line {request:?}"
        )));
    }
    let (method, path) = (method.to_string(), target.to_string());
    let mut headers = Vec::new();
    loop {
        let l = line(rd)?;
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok(Head {
        method,
        path,
        headers,
    })
}

/// Answers one HTTP request on the RPC port.
pub(super) fn serve(run: &Running, conn: &Conn, rd: &mut FrameReader<Stream>) -> Result<Outcome> {
    let head = match read_head(rd) {
        Ok(h) => h,
        Err(e) => {
            let _ = respond(conn, "400 Bad Request", "text/plain", b"400 bad request\n");
            return Err(e);
        }
    };
    let path = head.path.split('?').next().unwrap_or_default();
    if let Some((_, status)) = RPC_PATHS.iter().find(|(p, _)| *p == path) {
        if head.method == "CONNECT" {
            write_raw(conn, format!("HTTP/1.0 {status}\n\n").as_bytes())?;
            return Ok(Outcome::Rpc);
        }
        respond(
            conn,
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            b"405 must CONNECT\n",
        )?;
        return Ok(Outcome::Done);
    }
    let _ = run;
    log::debug!(
        "rpc server: {}: HTTP {} {} not found",
        conn.peer,
        head.method,
        head.path
    );
    respond(conn, "404 Not Found", "text/plain", b"404 page not found\n")?;
    Ok(Outcome::Done)
}

fn respond(conn: &Conn, status: &str, content_type: &str, body: &[u8]) -> Result<()> {
    let mut out = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    write_raw(conn, &out)
}

fn write_raw(conn: &Conn, bytes: &[u8]) -> Result<()> {
    conn.writer.enqueue(|out| {
        out.extend_from_slice(bytes);
        Ok(())
    })?;
    conn.writer
        .flush()
        .map_err(|e| Error::io("write HTTP reply", e))
}
