use ascii::AsciiString;

use std::io::Error as IoError;
use std::io::Result as IoResult;
use std::io::{BufReader, BufWriter, ErrorKind, Read};

use std::net::SocketAddr;
use std::str::FromStr;

use crate::common::{HTTPVersion, Method};
use crate::util::{ReadDeadline, RefinedTcpStream};
use crate::Limits;
use std::time::Instant;
use crate::util::{SequentialReader, SequentialReaderBuilder, SequentialWriterBuilder};
use crate::Request;

/// A ClientConnection is an object that will store a socket to a client
/// and return Request objects.
pub struct ClientConnection {
    // address of the client
    remote_addr: IoResult<Option<SocketAddr>>,

    // sequence of Readers to the stream, so that the data is not read in
    //  the wrong order
    source: SequentialReaderBuilder<BufReader<RefinedTcpStream>>,

    // sequence of Writers to the stream, to avoid writing response #2 before
    //  response #1
    sink: SequentialWriterBuilder<BufWriter<RefinedTcpStream>>,

    // Reader to read the next header from
    next_header_source: SequentialReader<BufReader<RefinedTcpStream>>,

    // set to true if we know that the previous request is the last one
    no_more_requests: bool,

    // true if the connection goes through SSL
    secure: bool,

    // geerpc patch: the limits below, and the deadline cell of the socket
    limits: Limits,
    deadline: ReadDeadline,
    // bytes of the current head still allowed
    head_left: usize,
}

/// Error that can happen when reading a request.
#[derive(Debug)]
enum ReadError {
    WrongRequestLine,
    WrongHeader(HTTPVersion),
    /// the client sent an unrecognized `Expect` header
    ExpectationFailed(HTTPVersion),
    ReadIoError(IoError),
    /// geerpc patch: the head is longer than `Limits::max_head`
    HeadTooLarge,
    /// geerpc patch: the head did not arrive within `Limits::read_timeout`
    HeadTimedOut { started: bool },
}

impl ClientConnection {
    /// Creates a new `ClientConnection` that takes ownership of the `TcpStream`.
    pub fn new(
        write_socket: RefinedTcpStream,
        mut read_socket: RefinedTcpStream,
        limits: Limits,
    ) -> ClientConnection {
        let remote_addr = read_socket.peer_addr();
        let secure = read_socket.secure();
        let deadline = read_socket.deadline();

        let mut source = SequentialReaderBuilder::new(BufReader::with_capacity(1024, read_socket));
        let first_header = source.next().unwrap();

        ClientConnection {
            source,
            sink: SequentialWriterBuilder::new(BufWriter::with_capacity(1024, write_socket)),
            remote_addr,
            next_header_source: first_header,
            no_more_requests: false,
            secure,
            limits,
            deadline,
            head_left: 0,
        }
    }

    /// true if the connection is HTTPS
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// Reads the next line from self.next_header_source.
    ///
    /// Reads until `CRLF` (or, geerpc patch, a bare `LF`) is reached. The next read will start
    ///  at the first byte of the new line.
    fn read_next_line(&mut self) -> IoResult<AsciiString> {
        // geerpc patch: scans what the buffer holds for the line's end
        // instead of one `read` per byte (a tenth of the registry's CPU
        // under wrk went to reading heads byte by byte). The same bytes
        // are taken (up to and including the LF), the same budget is
        // charged (one per byte, LF included) and the same errors come
        // out; the socket is read only when the buffer is empty, as
        // before.
        use std::io::BufRead;
        let mut buf = Vec::new();
        loop {
            let avail = match self.next_header_source.fill_buf() {
                Ok(a) => a,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if avail.is_empty() {
                return Err(IoError::new(ErrorKind::ConnectionAborted, "Unexpected EOF"));
            }
            let (take, done) = match avail.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (avail.len(), false),
            };
            // geerpc patch: the whole head has a byte budget.
            if take > self.head_left {
                return Err(IoError::new(ErrorKind::OutOfMemory, "request head too large"));
            }
            self.head_left -= take;
            buf.extend_from_slice(&avail[..take]);
            self.next_header_source.consume(take);
            if done {
                break;
            }
        }
        // geerpc patch: a bare LF ends a line too, as RFC 9112 section
        // 2.2 allows. A peer that is not speaking HTTP (a geerpc client
        // dialling the registry's port by mistake sends one JSON line)
        // then gets its `400` at once instead of a `408` at the read
        // deadline, and can say what went wrong.
        buf.pop(); // the LF
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        AsciiString::from_ascii(buf)
            .map_err(|_| IoError::new(ErrorKind::InvalidInput, "Header is not in ASCII"))
    }

    /// geerpc patch: reads one request head (line and headers), mapping
    /// read errors through `head_error`.
    fn read_head(
        &mut self,
        head_error: impl Fn(IoError, usize) -> ReadError,
    ) -> Result<(Method, String, HTTPVersion, Vec<crate::Header>), ReadError> {
        // reading the request line
        let (method, path, version) = {
            let line = self
                .read_next_line()
                .map_err(|e| head_error(e, self.head_left))?;

            parse_request_line(
                line.as_str().trim(), // TODO: remove this conversion
            )?
        };

        // getting all headers
        let headers = {
            let mut headers = Vec::new();
            loop {
                let line = self
                    .read_next_line()
                    .map_err(|e| head_error(e, self.head_left))?;

                if line.is_empty() {
                    break;
                };
                headers.push(match FromStr::from_str(line.as_str().trim()) {
                    // TODO: remove this conversion
                    Ok(h) => h,
                    _ => return Err(ReadError::WrongHeader(version)),
                });
            }

            headers
        };

        Ok((method, path, version, headers))
    }

    /// Reads a request from the stream.
    /// Blocks until the header has been read.
    fn read(&mut self) -> Result<Request, ReadError> {
        // geerpc patch: the head must arrive whole, within its budget and
        // deadline. No pipelining: a request is handed out only once the
        // previous one's response has been written (its writer released;
        // see `wait_previous` below), so the thread answering it never
        // blocks behind a parked long poll. The next head is read before
        // that wait, so that a client that waits for each answer (every
        // client but a pipelining one) costs this thread no extra wake-up.
        // Its deadline counts from when we start waiting for it; if it
        // runs out with nothing read while the previous request is still
        // unanswered (a parked long poll), the time starts again once that
        // answer is written: a parked request does not eat the next head's
        // time.
        let timeout = self.limits.read_timeout;
        let max_head = self.limits.max_head;
        let head_error = |e: IoError, left: usize| match e.kind() {
            ErrorKind::OutOfMemory => ReadError::HeadTooLarge,
            ErrorKind::TimedOut => ReadError::HeadTimedOut {
                started: left < max_head,
            },
            _ => ReadError::ReadIoError(e),
        };
        let (method, path, version, headers) = loop {
            self.head_left = max_head;
            self.deadline.set(timeout.map(|t| Instant::now() + t));
            match self.read_head(head_error) {
                Err(ReadError::HeadTimedOut { started: false }) if self.sink.previous_pending() => {
                    self.sink.wait_previous();
                }
                head => break head?,
            }
        };
        self.sink.wait_previous();
        // geerpc patch: the body gets its own deadline, from the head's end.
        self.deadline.set(timeout.map(|t| Instant::now() + t));

        // building the writer for the request
        let writer = self.sink.next().unwrap();

        // follow-up for next potential request
        let mut data_source = self.source.next().unwrap();
        std::mem::swap(&mut self.next_header_source, &mut data_source);

        // building the next reader
        let request = crate::request::new_request(
            self.secure,
            method,
            path,
            version.clone(),
            headers,
            *self.remote_addr.as_ref().unwrap(),
            data_source,
            writer,
        )
        .map_err(|e| {
            use crate::request;
            match e {
                request::RequestCreationError::CreationIoError(e) => ReadError::ReadIoError(e),
                request::RequestCreationError::ExpectationFailed => {
                    ReadError::ExpectationFailed(version)
                }
            }
        })?;

        // return the request
        Ok(request)
    }
}

impl Iterator for ClientConnection {
    type Item = Request;

    /// Blocks until the next Request is available.
    /// Returns None when no new Requests will come from the client.
    fn next(&mut self) -> Option<Request> {
        use crate::{Response, StatusCode};

        // the client sent a "connection: close" header in this previous request
        //  or is using HTTP 1.0, meaning that no new request will come
        if self.no_more_requests {
            return None;
        }

        loop {
            let rq = match self.read() {
                Err(ReadError::WrongRequestLine) => {
                    let writer = self.sink.next().unwrap();
                    let response = Response::new_empty(StatusCode(400));
                    response
                        .raw_print(writer, HTTPVersion(1, 1), &[], false, None)
                        .ok();
                    return None; // we don't know where the next request would start,
                                 // se we have to close
                }

                Err(ReadError::WrongHeader(ver)) => {
                    let writer = self.sink.next().unwrap();
                    let response = Response::new_empty(StatusCode(400));
                    response.raw_print(writer, ver, &[], false, None).ok();
                    return None; // we don't know where the next request would start,
                                 // se we have to close
                }

                Err(ReadError::ReadIoError(ref err)) if err.kind() == ErrorKind::TimedOut => {
                    // request timeout
                    let writer = self.sink.next().unwrap();
                    let response = Response::new_empty(StatusCode(408));
                    response
                        .raw_print(writer, HTTPVersion(1, 1), &[], false, None)
                        .ok();
                    return None; // closing the connection
                }

                Err(ReadError::ExpectationFailed(ver)) => {
                    let writer = self.sink.next().unwrap();
                    let response = Response::new_empty(StatusCode(417));
                    response.raw_print(writer, ver, &[], true, None).ok();
                    return None; // TODO: should be recoverable, but needs handling in case of body
                }

                // geerpc patch: 431 and close for a head over the limit; 408
                // and close for one begun but not finished in time; a
                // connection that sent nothing in time is closed quietly.
                Err(ReadError::HeadTooLarge) => {
                    let writer = self.sink.next().unwrap();
                    let response = Response::from_string(format!(
                        "431 request head larger than {} bytes\n",
                        self.limits.max_head
                    ))
                    .with_status_code(StatusCode(431));
                    let close = "Connection: close".parse::<crate::Header>().unwrap();
                    let response = response.with_header(close);
                    response
                        .raw_print(writer, HTTPVersion(1, 1), &[], false, None)
                        .ok();
                    return None;
                }

                Err(ReadError::HeadTimedOut { started: true }) => {
                    let writer = self.sink.next().unwrap();
                    let response = Response::new_empty(StatusCode(408));
                    response
                        .raw_print(writer, HTTPVersion(1, 1), &[], false, None)
                        .ok();
                    return None;
                }

                Err(ReadError::HeadTimedOut { started: false }) => return None,

                Err(ReadError::ReadIoError(_)) => return None,

                Ok(rq) => rq,
            };

            // checking HTTP version
            if *rq.http_version() > (1, 1) {
                let writer = self.sink.next().unwrap();
                let response = Response::from_string(
                    "This server only supports HTTP versions 1.0 and 1.1".to_owned(),
                )
                .with_status_code(StatusCode(505));
                response
                    .raw_print(writer, HTTPVersion(1, 1), &[], false, None)
                    .ok();
                continue;
            }

            // updating the status of the connection
            let connection_header = rq
                .headers()
                .iter()
                .find(|h| h.field.equiv("Connection"))
                .map(|h| h.value.as_str());

            let lowercase = connection_header.map(|h| h.to_ascii_lowercase());

            match lowercase {
                Some(ref val) if val.contains("close") => self.no_more_requests = true,
                Some(ref val) if val.contains("upgrade") => self.no_more_requests = true,
                Some(ref val)
                    if !val.contains("keep-alive") && *rq.http_version() == HTTPVersion(1, 0) =>
                {
                    self.no_more_requests = true
                }
                None if *rq.http_version() == HTTPVersion(1, 0) => self.no_more_requests = true,
                _ => (),
            };

            // returning the request
            return Some(rq);
        }
    }
}

/// Parses a "HTTP/1.1" string.
fn parse_http_version(version: &str) -> Result<HTTPVersion, ReadError> {
    let (major, minor) = match version {
        "HTTP/0.9" => (0, 9),
        "HTTP/1.0" => (1, 0),
        "HTTP/1.1" => (1, 1),
        "HTTP/2.0" => (2, 0),
        "HTTP/3.0" => (3, 0),
        _ => return Err(ReadError::WrongRequestLine),
    };

    Ok(HTTPVersion(major, minor))
}

/// Parses the request line of the request.
/// eg. GET / HTTP/1.1
fn parse_request_line(line: &str) -> Result<(Method, String, HTTPVersion), ReadError> {
    let mut parts = line.split(' ');

    let method = parts.next().and_then(|w| w.parse().ok());
    let path = parts.next().map(ToOwned::to_owned);
    let version = parts.next().and_then(|w| parse_http_version(w).ok());

    method
        .and_then(|method| Some((method, path?, version?)))
        .ok_or(ReadError::WrongRequestLine)
}

#[cfg(test)]
mod test {
    #[test]
    fn test_parse_request_line() {
        let (method, path, ver) = super::parse_request_line("GET /hello HTTP/1.1").unwrap();

        assert!(method == crate::Method::Get);
        assert!(path == "/hello");
        assert!(ver == crate::common::HTTPVersion(1, 1));

        assert!(super::parse_request_line("GET /hello").is_err());
        assert!(super::parse_request_line("qsd qsd qsd").is_err());
    }
}
