//! The Option handshake (PROTOCOL.md section 2).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::wire::codec::Codec;

/// The article's magic number, sent by geerpc clients.
pub const MAGIC_NUMBER: u64 = 0x3b3f5c;
/// The original GeeRPC series' magic number, also accepted by servers.
pub const LEGACY_MAGIC_NUMBER: u64 = 0x3bef5c;

/// Longest handshake a server reads before giving up on the peer.
pub(crate) const MAX_HANDSHAKE: usize = 4096;

/// The length a client pads its Option line to, newline included.
///
/// Why: a Go GeeRPC server reads the Option with a throw-away
/// `json.NewDecoder(conn)`, then hands the raw connection to the codec.
/// That decoder's first `Read` asks for 512 bytes (`minRead` in Go's
/// `encoding/json/stream.go`); if the first request has already arrived
/// behind a short Option, the read takes it too, the decoder is thrown
/// away with it, and the call waits for a reply that never comes (8 of 30
/// first calls, issue 22). An Option line of exactly 512 bytes fills that
/// first read and nothing else: the value ends (`}`) inside it, so the
/// decoder reads no more. Not longer: a second read would ask for up to
/// 1024 bytes and could swallow the request again. The padding is leading
/// spaces, JSON whitespace that Go's decoder and geerpc's server
/// (PROTOCOL.md section 2: one reader, any JSON whitespace) skip.
pub(crate) const PADDED_OPTION_LEN: usize = 512;

// A server must still read the padded line whole.
const _: () = assert!(PADDED_OPTION_LEN <= MAX_HANDSHAKE);

/// The Option object, field for field as Go's encoder writes it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Handshake {
    #[serde(rename = "MagicNumber", default)]
    pub magic_number: u64,
    #[serde(rename = "CodecType", default)]
    pub codec_type: String,
    /// Go `time.Duration`: nanoseconds.
    #[serde(rename = "ConnectTimeout", default)]
    pub connect_timeout: i64,
    #[serde(rename = "HandleTimeout", default)]
    pub handle_timeout: i64,
}

fn nanos(d: Option<Duration>) -> i64 {
    d.map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

impl Handshake {
    pub(crate) fn new(
        codec: Codec,
        connect_timeout: Option<Duration>,
        handle_timeout: Option<Duration>,
    ) -> Self {
        Handshake {
            magic_number: MAGIC_NUMBER,
            codec_type: codec.content_type().to_string(),
            connect_timeout: nanos(connect_timeout),
            handle_timeout: nanos(handle_timeout),
        }
    }

    /// The same Option with `magic` as its `MagicNumber` (checked by the
    /// caller: see [`check_client_magic`]).
    pub(crate) fn with_magic(mut self, magic: u64) -> Self {
        self.magic_number = magic;
        self
    }

    /// One JSON line, as Go's `json.Encoder` writes it, after leading
    /// spaces that make it [`PADDED_OPTION_LEN`] bytes long (see there why;
    /// a line that would be longer stays unpadded, which no Option is: the
    /// longest is about 130 bytes).
    pub(crate) fn to_line(&self) -> Vec<u8> {
        let json = serde_json::to_vec(self).expect("a Handshake always serializes");
        let pad = PADDED_OPTION_LEN.saturating_sub(json.len() + 1);
        let mut line = Vec::with_capacity(pad + json.len() + 1);
        line.resize(pad, b' ');
        line.extend_from_slice(&json);
        line.push(b'\n');
        line
    }

    /// Parses and checks a received Option: the codec it asks for and the
    /// handle timeout (None: no limit).
    pub(crate) fn accept(bytes: &[u8]) -> Result<(Codec, Option<Duration>)> {
        let h: Handshake = serde_json::from_slice(bytes)
            .map_err(|e| Error::Protocol(format!("invalid option: {e}")))?;
        if h.magic_number != MAGIC_NUMBER && h.magic_number != LEGACY_MAGIC_NUMBER {
            return Err(Error::Protocol(format!(
                "invalid magic number {:#x}",
                h.magic_number
            )));
        }
        let codec = Codec::from_content_type(&h.codec_type)
            .ok_or_else(|| Error::Protocol(format!("invalid codec type {:?}", h.codec_type)))?;
        let handle = (h.handle_timeout > 0).then(|| Duration::from_nanos(h.handle_timeout as u64));
        Ok((codec, handle))
    }
}

/// Refuses a client magic number that no GeeRPC server accepts: Go
/// servers compare it with their own one (the article's or the original
/// series'), geerpc's accept those two. Anything else would only show as
/// the server closing the connection, so it is said here, naming both.
pub(crate) fn check_client_magic(magic: u64) -> Result<()> {
    if magic == MAGIC_NUMBER || magic == LEGACY_MAGIC_NUMBER {
        return Ok(());
    }
    Err(Error::Encode {
        what: "the Option".into(),
        message: format!(
            "magic number {magic:#x} is neither {MAGIC_NUMBER:#x} (MAGIC_NUMBER, the \
             article's, the default) nor {LEGACY_MAGIC_NUMBER:#x} (LEGACY_MAGIC_NUMBER, the \
             original series'); no GeeRPC server accepts it"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_line_matches_go() {
        let line = Handshake::new(Codec::Json, Some(Duration::from_secs(10)), None).to_line();
        let json: &[u8] = b"{\"MagicNumber\":3882844,\"CodecType\":\"application/json\",\"ConnectTimeout\":10000000000,\"HandleTimeout\":0}\n";
        assert_eq!(line.len(), PADDED_OPTION_LEN);
        let (pad, rest) = line.split_at(PADDED_OPTION_LEN - json.len());
        assert!(pad.iter().all(|&b| b == b' '), "padded with spaces only");
        assert_eq!(rest, json);
        // The padded line is still the Option to a reader that takes it whole.
        assert_eq!(Handshake::accept(&line).unwrap(), (Codec::Json, None));
    }

    #[test]
    fn the_legacy_magic_goes_on_the_wire_and_others_are_refused() {
        let line = Handshake::new(Codec::MsgPack, None, None)
            .with_magic(LEGACY_MAGIC_NUMBER)
            .to_line();
        let text = String::from_utf8(line).unwrap();
        assert!(
            text.trim_start().starts_with("{\"MagicNumber\":3927900,"),
            "{text}"
        );
        assert!(check_client_magic(MAGIC_NUMBER).is_ok());
        assert!(check_client_magic(LEGACY_MAGIC_NUMBER).is_ok());
        let e = check_client_magic(0x3b3f5d).unwrap_err().to_string();
        assert!(e.contains("0x3b3f5d") && e.contains("0x3bef5c"), "{e}");
    }

    #[test]
    fn accepts_both_magics_and_rejects_others() {
        let ok = br#"{"MagicNumber":3927900,"CodecType":"application/msgpack","HandleTimeout":1000000000}"#;
        assert_eq!(
            Handshake::accept(ok).unwrap(),
            (Codec::MsgPack, Some(Duration::from_secs(1)))
        );
        let bad_magic = br#"{"MagicNumber":1,"CodecType":"application/json"}"#;
        assert!(Handshake::accept(bad_magic)
            .unwrap_err()
            .to_string()
            .contains("magic"));
        let bad_codec = br#"{"MagicNumber":3882844,"CodecType":"application/protobuf"}"#;
        assert!(Handshake::accept(bad_codec)
            .unwrap_err()
            .to_string()
            .contains("codec"));
    }
}
