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

    /// One JSON line, as Go's `json.Encoder` writes it.
    pub(crate) fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).expect("a Handshake always serializes");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_line_matches_go() {
        let line = Handshake::new(Codec::Json, Some(Duration::from_secs(10)), None).to_line();
        assert_eq!(
            line,
            b"{\"MagicNumber\":3882844,\"CodecType\":\"application/json\",\"ConnectTimeout\":10000000000,\"HandleTimeout\":0}\n"
        );
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
