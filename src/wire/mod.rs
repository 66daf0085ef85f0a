//! The wire layer: everything that turns bytes on a socket into messages
//! and back (PROTOCOL.md sections 1 to 4, 8 and 9), shared by the client and
//! the server.
//!
//! - `address`: `PROTOCOL@ADDR` and [`ToAddress`];
//! - `transport`: the sockets an address leads to;
//! - `handshake`: the Option that opens a connection (magic number, codec);
//! - `frame`: whole messages read off a stream through one buffer;
//! - `codec`: JSON, MessagePack and gob headers and bodies;
//! - `writer`: the batching writer both sides send through;
//! - `tls` (feature `tls`, Unix): TLS settings and the shared TLS stream.
//!
//! It may import only `crate::error`, `crate::code` and `crate::util`:
//! nothing here knows about clients, servers or discovery.

pub(crate) mod address;
pub(crate) mod codec;
pub(crate) mod frame;
pub(crate) mod handshake;
#[cfg(all(feature = "tls", unix))]
pub(crate) mod tls;
pub(crate) mod transport;
pub(crate) mod writer;

pub use address::{Address, Protocol, ToAddress};
pub use codec::Codec;
pub use handshake::{LEGACY_MAGIC_NUMBER, MAGIC_NUMBER};
#[cfg(all(feature = "tls", unix))]
pub use tls::{ClientTls, ServerTls};
