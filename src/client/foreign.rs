//! Naming the protocol of a peer that is not an RPC server: when the first
//! reply does not parse because an HTTP server answered the handshake line
//! with `400`, or a TLS server with an alert, the error says so ("invalid
//! character 'H'" would send the user looking in the wrong place). Only
//! looks at bytes already read; touches nothing else of the client.

use crate::error::Error;
use crate::wire::frame::FrameReader;
use crate::wire::transport::Stream;

/// The error to report instead of a parse failure, if the bytes buffered
/// where a reply should start are HTTP or TLS. Never reads from the stream.
pub(super) fn protocol(rd: &mut FrameReader<Stream>, addr: &str) -> Option<Error> {
    describe(rd.peek(0).ok()?, addr).map(Error::Protocol)
}

fn describe(seen: &[u8], addr: &str) -> Option<String> {
    if seen.starts_with(b"HTTP/") {
        let line = seen.split(|&b| b == b'\r' || b == b'\n').next()?;
        let line = String::from_utf8_lossy(&line[..line.len().min(80)]);
        Some(format!(
            "the peer answered in HTTP ({line}): {addr} is an HTTP server, not an RPC server"
        ))
    } else if seen.len() >= 2 && matches!(seen[0], 0x15 | 0x16) && seen[1] == 0x03 {
        // A TLS record: alert (0x15) or handshake (0x16), version 3.x.
        Some(format!(
            "the peer answered with a TLS record: {addr} speaks TLS, which geerpc does not"
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn http_and_tls_answers_are_named_and_rpc_bytes_are_not() {
        let http = describe(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
            "tcp@h:1",
        );
        assert_eq!(
            http.as_deref(),
            Some("the peer answered in HTTP (HTTP/1.1 400 Bad Request): tcp@h:1 is an HTTP server, not an RPC server")
        );
        let tls = describe(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46], "tcp@h:1").unwrap();
        assert!(tls.contains("TLS"), "{tls}");
        assert_eq!(describe(b"{\"ServiceMethod\"", "tcp@h:1"), None);
        assert_eq!(describe(b"HTTP", "tcp@h:1"), None);
        assert_eq!(describe(&[0x16], "tcp@h:1"), None);
    }
}
