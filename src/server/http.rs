//! HTTP on the RPC port (PROTOCOL.md section 5): the CONNECT tunnel that
//! turns the connection into an RPC one, the debug page, and a short answer
//! to anything else. Every plain request gets an HTTP/1.0 reply and the
//! connection closes after it.

use super::conn::{self, Conn};
#[cfg(feature = "debug-page")]
use super::debug;
use super::Running;
use crate::error::{Error, Result};
use crate::wire::frame::FrameReader;
use crate::wire::transport::Stream;

/// Longest HTTP head read before the request is refused.
const MAX_HEAD: usize = 8 * 1024;

/// The RPC paths and the status text each Go client compares exactly.
const RPC_PATHS: [(&str, &str); 3] = [
    ("/_geerpc_", "200 Connected to Gee RPC"),
    ("/_geeprc_", "200 Connected to Gee RPC"),
    ("/myrpc", "200 Connected to RPC"),
];

/// The debug page's paths (the original series' and the article's).
const DEBUG_PATHS: [&str; 2] = ["/debug/geerpc", "/debug/rpc"];
/// The same data as JSON whatever the `Accept` header says.
const DEBUG_JSON_PATHS: [&str; 2] = ["/debug/geerpc.json", "/debug/rpc.json"];

const TEXT: &str = "text/plain; charset=utf-8";

/// The Prometheus metrics (`metrics.rs`).
const METRICS_PATH: &str = "/metrics";

pub(super) enum Outcome {
    /// A CONNECT was accepted: the RPC handshake follows on this connection.
    Rpc,
    /// The request was answered (or refused); close the connection.
    Done,
}

/// A parsed request head.
struct Head {
    method: String,
    path: String,
    // Only the debug page reads a header (`Accept`).
    #[cfg_attr(not(feature = "debug-page"), allow(dead_code))]
    headers: Vec<(String, String)>,
}

impl Head {
    #[cfg_attr(not(feature = "debug-page"), allow(dead_code))]
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads a head: a request line and header lines up to an empty line
/// (`\n` or `\r\n` line ends: Go's client sends bare `\n`).
fn read_head(rd: &mut FrameReader<Stream>) -> Result<Head> {
    let mut total = 0;
    let mut line = |rd: &mut FrameReader<Stream>| -> Result<String> {
        let raw = rd
            .read_until(b"\n", MAX_HEAD.saturating_sub(total))
            .map_err(|e| match e {
                Error::MessageTooLarge { .. } => {
                    Error::Protocol(format!("HTTP head longer than {MAX_HEAD} bytes"))
                }
                other => other,
            })?;
        total += raw.len();
        let text =
            String::from_utf8(raw).map_err(|_| Error::Protocol("HTTP head is not UTF-8".into()))?;
        Ok(text.trim_end_matches(['\r', '\n']).to_string())
    };
    let request = line(rd)?;
    let malformed = || Error::Protocol(format!("malformed HTTP request line {request:?}"));
    let mut parts = request.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphabetic());
    if !token(method) || target.is_empty() || !version.starts_with("HTTP/") {
        return Err(malformed());
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

/// Answers one HTTP request on the RPC port. Errors are about writing the
/// reply; a bad request is answered with 400 and logged here.
pub(super) fn serve(run: &Running, conn: &Conn, rd: &mut FrameReader<Stream>) -> Result<Outcome> {
    let head = match read_head(rd) {
        Ok(h) => h,
        // The monitor closed it at the handshake deadline, and said so.
        Err(_) if conn.is_closed() => return Ok(Outcome::Done),
        Err(e) if conn::is_timeout(&e) => {
            let e = conn::handshake_timeout_error(run, "HTTP request head");
            log::warn!(
                "rpc server {}: HTTP request from {}: {e}; closing",
                run.addr,
                conn.peer
            );
            return Ok(Outcome::Done);
        }
        Err(e @ Error::Io { .. }) => {
            log::warn!(
                "rpc server {}: HTTP request from {}: {e}; closing",
                run.addr,
                conn.peer
            );
            return Ok(Outcome::Done);
        }
        Err(e) => {
            log::warn!(
                "rpc server {}: HTTP request from {}: {e}; answering 400",
                run.addr,
                conn.peer
            );
            let _ = respond(
                run,
                conn,
                "400 Bad Request",
                TEXT,
                &[],
                b"400 bad request\n",
                true,
            );
            return Ok(Outcome::Done);
        }
    };
    let path = head.path.split('?').next().unwrap_or_default();
    if let Some((_, status)) = RPC_PATHS.iter().find(|(p, _)| *p == path) {
        if head.method == "CONNECT" {
            write_raw(run, conn, format!("HTTP/1.0 {status}\n\n").as_bytes())?;
            return Ok(Outcome::Rpc);
        }
        log::debug!(
            "rpc server {}: HTTP request from {}: {} {}: must CONNECT",
            run.addr,
            conn.peer,
            head.method,
            head.path
        );
        respond(
            run,
            conn,
            "405 Method Not Allowed",
            TEXT,
            &[("Allow", "CONNECT")],
            b"405 must CONNECT\n",
            true,
        )?;
        return Ok(Outcome::Done);
    }
    if path == METRICS_PATH {
        return metrics(run, conn, &head);
    }
    let page = DEBUG_PATHS.contains(&path);
    let json_path = DEBUG_JSON_PATHS.contains(&path);
    // Built without the page: its paths say so rather than a bare 404.
    #[cfg(not(feature = "debug-page"))]
    if page || json_path {
        return not_found(
            run,
            conn,
            &head,
            "debug page not built in",
            b"404 the debug page is not built in (geerpc feature \"debug-page\")\n",
        );
    }
    // Turned off (`ServerBuilder::debug_pages`): as if there were none.
    #[cfg(feature = "debug-page")]
    if (page || json_path) && run.server.config().debug_pages {
        let with_body = head.method == "GET";
        if !with_body && head.method != "HEAD" {
            respond(
                run,
                conn,
                "405 Method Not Allowed",
                TEXT,
                &[("Allow", "GET, HEAD")],
                b"405 method not allowed: the debug page answers GET\n",
                true,
            )?;
            return Ok(Outcome::Done);
        }
        let doc = debug::gather(run, conn);
        let wants_json = json_path
            || head
                .header("Accept")
                .is_some_and(|a| a.contains("application/json"));
        let (content_type, body) = if wants_json {
            ("application/json", debug::json(&doc))
        } else {
            ("text/html; charset=utf-8", debug::html(&doc).into_bytes())
        };
        let extra = [("Cache-Control", "no-store"), ("Vary", "Accept")];
        respond(run, conn, "200 OK", content_type, &extra, &body, with_body)?;
        return Ok(Outcome::Done);
    }
    not_found(run, conn, &head, "not found", b"404 page not found\n")
}

/// `GET /metrics`: the server's Prometheus metrics (`metrics.rs`), or a
/// `404` saying they are not built in.
fn metrics(run: &Running, conn: &Conn, head: &Head) -> Result<Outcome> {
    #[cfg(not(feature = "metrics"))]
    return not_found(
        run,
        conn,
        head,
        "metrics not built in",
        b"404 the metrics are not built in (geerpc feature \"metrics\")\n",
    );
    #[cfg(feature = "metrics")]
    {
        let with_body = head.method == "GET";
        if !with_body && head.method != "HEAD" {
            respond(
                run,
                conn,
                "405 Method Not Allowed",
                TEXT,
                &[("Allow", "GET, HEAD")],
                b"405 method not allowed: the metrics answer GET\n",
                true,
            )?;
            return Ok(Outcome::Done);
        }
        let body = super::metrics::text(&run.server);
        let extra = [("Cache-Control", "no-store")];
        respond(
            run,
            conn,
            "200 OK",
            crate::util::prom::CONTENT_TYPE,
            &extra,
            body.as_bytes(),
            with_body,
        )?;
        Ok(Outcome::Done)
    }
}

/// A `404` with `body`, logged at debug level with `why` (a scanner's
/// probes are not worth more).
fn not_found(run: &Running, conn: &Conn, head: &Head, why: &str, body: &[u8]) -> Result<Outcome> {
    log::debug!(
        "rpc server {}: HTTP request from {}: {} {}: {why}",
        run.addr,
        conn.peer,
        head.method,
        head.path
    );
    respond(
        run,
        conn,
        "404 Not Found",
        TEXT,
        &[],
        body,
        head.method != "HEAD",
    )?;
    Ok(Outcome::Done)
}

/// Writes a whole HTTP/1.0 reply; `with_body` false (HEAD) sends the head
/// only, with the length the body would have.
fn respond(
    run: &Running,
    conn: &Conn,
    status: &str,
    content_type: &str,
    extra: &[(&str, &str)],
    body: &[u8],
    with_body: bool,
) -> Result<()> {
    let mut head = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut out = head.into_bytes();
    if with_body {
        out.extend_from_slice(body);
    }
    write_raw(run, conn, &out)
}

fn write_raw(run: &Running, conn: &Conn, bytes: &[u8]) -> Result<()> {
    conn.write_http(
        bytes,
        run.server.config().handshake_timeout,
        run.server.config().write_timeout,
    )
    .map_err(|e| Error::io("write HTTP reply", e))
}

#[cfg(all(test, not(feature = "debug-page")))]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use crate::{Client, Server, Service};

    /// Built without `debug-page`: a GET of the page is a 404 that says
    /// why, and the CONNECT tunnel still carries calls.
    #[test]
    fn without_the_feature_the_page_is_a_clear_404_and_connect_still_works() {
        let server = Server::new();
        server
            .register(Service::new("Echo").method("Echo", |s: String| Ok::<_, String>(s)))
            .unwrap();
        let running = server.listen("127.0.0.1:0").unwrap();
        let addr = running.addr().to_string();
        let (_, hostport) = addr.rsplit_once('@').unwrap();
        for path in ["/debug/geerpc", "/debug/rpc", "/debug/geerpc.json"] {
            let mut s = TcpStream::connect(hostport).unwrap();
            write!(s, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
            let mut answer = String::new();
            s.read_to_string(&mut answer).unwrap();
            assert!(answer.starts_with("HTTP/1.0 404 "), "{path}: {answer}");
            assert!(answer.contains("\"debug-page\""), "{path}: {answer}");
        }
        let client = Client::dial(format!("http@{hostport}")).unwrap();
        let back: String = client.call("Echo.Echo", &"hi").unwrap();
        assert_eq!(back, "hi");
    }
}
