//! [`Address`]: where a server is (`PROTOCOL@ADDR`, PROTOCOL.md section 1),
//! and [`ToAddress`], what every function that dials or listens accepts.
//!
//! Below everything but the error type: it may not import from any other
//! layer.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use crate::error::{Error, Result};

/// How a client reaches a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Protocol {
    /// Plain TCP: the handshake follows the connect.
    Tcp,
    /// TCP, then an HTTP `CONNECT` that turns the connection into an RPC one.
    Http,
    /// A Unix domain socket.
    Unix,
    /// TCP, then TLS 1.3 or 1.2, then the handshake (PROTOCOL.md section 1).
    Tls,
}

impl Protocol {
    /// The name used in addresses (`tcp`, `http`, `unix`, `tls`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Http => "http",
            Protocol::Unix => "unix",
            Protocol::Tls => "tls",
        }
    }
}

/// A parsed `PROTOCOL@ADDR` address.
///
/// ```
/// use geerpc::{Address, Protocol};
/// let a: Address = "http@127.0.0.1:7001".parse().unwrap();
/// assert_eq!(a.protocol(), Protocol::Http);
/// assert_eq!(a.target(), "127.0.0.1:7001");
/// assert_eq!(a.to_string(), "http@127.0.0.1:7001");
/// // A bare HOST:PORT is TCP, everywhere an address is taken.
/// let b: Address = "127.0.0.1:7001".parse().unwrap();
/// assert_eq!(b.to_string(), "tcp@127.0.0.1:7001");
/// assert!("ftp@127.0.0.1:7001".parse::<Address>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    protocol: Protocol,
    target: String,
}

impl Address {
    /// A TCP address for a socket address.
    pub fn tcp(addr: SocketAddr) -> Address {
        Address {
            protocol: Protocol::Tcp,
            target: addr.to_string(),
        }
    }

    /// The protocol part.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The part after `@`: `HOST:PORT` or a socket path.
    pub fn target(&self) -> &str {
        &self.target
    }
}

/// An address equals its text in canonical form (`tcp@HOST:PORT`), so
/// `heartbeat.addr() == "tcp@127.0.0.1:7001"` reads as it should.
impl PartialEq<str> for Address {
    fn eq(&self, other: &str) -> bool {
        other
            .split_once('@')
            .is_some_and(|(p, t)| p == self.protocol.as_str() && t == self.target)
    }
}

impl PartialEq<&str> for Address {
    fn eq(&self, other: &&str) -> bool {
        *self == **other
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.protocol.as_str(), self.target)
    }
}

impl FromStr for Address {
    type Err = Error;

    fn from_str(s: &str) -> Result<Address> {
        let invalid = |reason: &str| Error::InvalidAddress {
            addr: s.to_string(),
            reason: reason.to_string(),
        };
        // No `@`: a bare HOST:PORT, which means TCP (as Go's net.Dial
        // would take it), checked below like any other TCP target.
        let (proto, target) = s.split_once('@').unwrap_or(("tcp", s));
        let protocol = match proto {
            "tcp" => Protocol::Tcp,
            "http" => Protocol::Http,
            "unix" => Protocol::Unix,
            "tls" => Protocol::Tls,
            _ => return Err(invalid(&format!("unknown protocol {proto:?}"))),
        };
        if target.is_empty() {
            return Err(invalid("empty address after @"));
        }
        if protocol != Protocol::Unix {
            let (host, port) = target
                .rsplit_once(':')
                .ok_or_else(|| invalid("expected HOST:PORT"))?;
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(invalid("expected HOST:PORT"));
            }
        }
        Ok(Address {
            protocol,
            target: target.to_string(),
        })
    }
}

/// Anything that names a server: an [`Address`], a string in
/// `PROTOCOL@ADDR` form or a bare `HOST:PORT` (which means `tcp@`), or a
/// [`SocketAddr`]. Every function that dials or listens takes one, the way
/// `std::net` takes [`ToSocketAddrs`](std::net::ToSocketAddrs).
///
/// ```
/// use geerpc::{Address, ToAddress};
/// let want: Address = "tcp@127.0.0.1:7001".parse()?;
/// assert_eq!("127.0.0.1:7001".to_address()?, want);
/// assert_eq!(String::from("tcp@127.0.0.1:7001").to_address()?, want);
/// assert_eq!(want.to_address()?, want);
/// let sock: std::net::SocketAddr = "127.0.0.1:7001".parse().unwrap();
/// assert_eq!(sock.to_address()?, want);
/// assert!("unix@".to_address().is_err());
/// # Ok::<(), geerpc::Error>(())
/// ```
pub trait ToAddress {
    /// The address, or [`Error::InvalidAddress`] saying what is wrong.
    fn to_address(&self) -> Result<Address>;
}

impl ToAddress for Address {
    fn to_address(&self) -> Result<Address> {
        Ok(self.clone())
    }
}

impl ToAddress for str {
    fn to_address(&self) -> Result<Address> {
        self.parse()
    }
}

impl ToAddress for String {
    fn to_address(&self) -> Result<Address> {
        self.parse()
    }
}

impl ToAddress for SocketAddr {
    fn to_address(&self) -> Result<Address> {
        Ok(Address::tcp(*self))
    }
}

impl<T: ToAddress + ?Sized> ToAddress for &T {
    fn to_address(&self) -> Result<Address> {
        (**self).to_address()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equals_its_canonical_text_only() {
        let a: Address = "127.0.0.1:80".parse().unwrap();
        assert!(a == "tcp@127.0.0.1:80");
        assert!(a != "127.0.0.1:80" && a != "http@127.0.0.1:80" && a != "tcp@127.0.0.1:8");
    }

    #[test]
    fn parses_each_protocol_and_rejects_the_rest() {
        let a: Address = "tcp@127.0.0.1:80".parse().unwrap();
        assert_eq!((a.protocol(), a.target()), (Protocol::Tcp, "127.0.0.1:80"));
        let a: Address = "unix@/tmp/x.sock".parse().unwrap();
        assert_eq!(a.protocol(), Protocol::Unix);
        let a: Address = "http@[::1]:7001".parse().unwrap();
        assert_eq!(a.target(), "[::1]:7001");
        // A bare HOST:PORT is TCP; a bare word is not an address.
        let a: Address = "127.0.0.1:80".parse().unwrap();
        assert_eq!(a.to_string(), "tcp@127.0.0.1:80");
        for bad in [
            "localhost",
            "udp@1.2.3.4:5",
            "tcp@",
            "tcp@host",
            "tcp@host:notaport",
            "tcp@:80",
        ] {
            let err = bad.parse::<Address>().unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("tcp@HOST:PORT") && text.contains(bad),
                "{bad}: {text}"
            );
        }
    }
}
