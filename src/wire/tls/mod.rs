//! TLS for RPC connections (`tls@` addresses, PROTOCOL.md section 1): the
//! settings a server listens with ([`ServerTls`]) and a client dials with
//! ([`ClientTls`]), and [`TlsSock`], one rustls connection over one TCP
//! socket shared by a connection's reader and writer threads.
//!
//! The handshake is completed before the stream is shared, by the thread
//! that dialled or accepted it, within a deadline (the connect timeout, the
//! server's handshake timeout). How the stream is shared: `stream.rs`.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::error::{Error, Result};

mod stream;
pub(crate) use stream::TlsSock;

/// rustls on ring (the provider ureq already builds), TLS 1.3 and 1.2 only.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn bad_pem(what: &str, e: impl fmt::Display) -> Error {
    Error::io(
        format!("read {what}"),
        io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
    )
}

fn read_file(what: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(format!("read {what} {}", path.display()), e))
}

fn certs(what: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad_pem(what, e))?;
    if certs.is_empty() {
        return Err(bad_pem(what, "no PEM certificate found"));
    }
    Ok(certs)
}

fn key(pem: &[u8]) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| bad_pem("TLS private key", e))
}

fn roots(pem: &[u8]) -> Result<rustls::RootCertStore> {
    let mut store = rustls::RootCertStore::empty();
    for c in certs("CA certificate", pem)? {
        store.add(c).map_err(|e| bad_pem("CA certificate", e))?;
    }
    Ok(store)
}

fn config_error(what: &str, e: impl fmt::Display) -> Error {
    Error::io(
        format!("TLS {what}"),
        io::Error::new(io::ErrorKind::InvalidInput, e.to_string()),
    )
}

/// What a server listens with on a `tls@` address
/// ([`Server::listen_tls`](crate::Server::listen_tls)): its certificate
/// chain and key, TLS 1.3 and 1.2 only, and optionally the CA a client's
/// certificate must be signed by (mutual TLS).
///
/// ```no_run
/// use geerpc::wire::ServerTls;
/// // Server authentication only:
/// let tls = ServerTls::files("server.pem", "server.key")?;
/// // Mutual TLS: clients must show a certificate signed by this CA.
/// let mtls = ServerTls::files("server.pem", "server.key")?.require_client_cert_file("clients-ca.pem")?;
/// # Ok::<(), geerpc::Error>(())
/// ```
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    /// What the config was built from, to rebuild it with client auth.
    parts: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("client_auth", &self.parts.is_none())
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// From PEM text: the certificate chain (the server's first, then its
    /// intermediates) and the private key (PKCS#8, PKCS#1 or SEC1).
    pub fn pem(cert_chain: &[u8], key_pem: &[u8]) -> Result<ServerTls> {
        let chain = certs("TLS certificate chain", cert_chain)?;
        let key = Arc::new(key(key_pem)?);
        let config = Self::build(&chain, &key, None)?;
        Ok(ServerTls {
            config,
            parts: Some((chain, key)),
        })
    }

    /// From PEM files; see [`pem`](Self::pem).
    pub fn files(cert_chain: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<ServerTls> {
        ServerTls::pem(
            &read_file("TLS certificate chain", cert_chain.as_ref())?,
            &read_file("TLS private key", key.as_ref())?,
        )
    }

    /// A rustls configuration made elsewhere, used as it is (its protocol
    /// versions and client verification included).
    pub fn from_config(config: Arc<rustls::ServerConfig>) -> ServerTls {
        ServerTls {
            config,
            parts: None,
        }
    }

    /// Mutual TLS: every client must present a certificate signed by one of
    /// the CAs in `ca_pem`, or its handshake fails; a handler sees the
    /// verified certificate's subject and names in
    /// [`Context::identity`](crate::Context::identity). Default: no client
    /// certificate asked for.
    pub fn require_client_cert(self, ca_pem: &[u8]) -> Result<ServerTls> {
        let (chain, key) = self.parts.ok_or_else(|| {
            config_error(
                "client certificates",
                "a ServerTls made from a rustls config sets its own client verifier",
            )
        })?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots(ca_pem)?),
            provider(),
        )
        .build()
        .map_err(|e| config_error("client CA", e))?;
        let config = Self::build(&chain, &key, Some(verifier))?;
        Ok(ServerTls {
            config,
            parts: Some((chain, key)),
        })
    }

    /// [`require_client_cert`](Self::require_client_cert) with the CA from
    /// a PEM file.
    pub fn require_client_cert_file(self, ca: impl AsRef<Path>) -> Result<ServerTls> {
        let pem = read_file("client CA", ca.as_ref())?;
        self.require_client_cert(&pem)
    }

    fn build(
        chain: &[CertificateDer<'static>],
        key: &PrivateKeyDer<'static>,
        clients: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    ) -> Result<Arc<rustls::ServerConfig>> {
        let b = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .map_err(|e| config_error("versions", e))?;
        let b = match clients {
            Some(v) => b.with_client_cert_verifier(v),
            None => b.with_no_client_auth(),
        };
        let config = b
            .with_single_cert(chain.to_vec(), key.clone_key())
            .map_err(|e| config_error("certificate and key", e))?;
        Ok(Arc::new(config))
    }
}

/// What a client dials a `tls@HOST:PORT` address with
/// ([`ClientBuilder::tls`](crate::client::ClientBuilder::tls)): the CAs it
/// trusts, the name the server's certificate must be valid for (default:
/// the HOST of the address), and optionally its own certificate (mutual
/// TLS).
///
/// The default trusts the public web PKI's roots (`webpki-roots`, compiled
/// in: the same on every platform, nothing read from the system); a
/// deployment with its own CA says so with [`ca_pem`](Self::ca_pem) or
/// [`ca_file`](Self::ca_file).
#[derive(Clone)]
pub struct ClientTls {
    roots: Option<Arc<rustls::RootCertStore>>,
    client: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
    server_name: Option<String>,
    config: Arc<rustls::ClientConfig>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("own_ca", &self.roots.is_some())
            .field("client_cert", &self.client.is_some())
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl Default for ClientTls {
    fn default() -> ClientTls {
        ClientTls::webpki_roots()
    }
}

impl ClientTls {
    /// Trusting the public web PKI's roots (`webpki-roots`).
    pub fn webpki_roots() -> ClientTls {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        // Cannot fail: the versions are rustls's own and there is no key.
        let config = ClientTls::build(&roots, None).expect("the default TLS client config");
        ClientTls {
            roots: None,
            client: None,
            server_name: None,
            config,
        }
    }

    /// Trusting only the CA certificates in `ca_pem` (PEM text).
    pub fn ca_pem(ca_pem: &[u8]) -> Result<ClientTls> {
        let roots = Arc::new(roots(ca_pem)?);
        let config = ClientTls::build(&roots, None)?;
        Ok(ClientTls {
            roots: Some(roots),
            client: None,
            server_name: None,
            config,
        })
    }

    /// [`ca_pem`](Self::ca_pem) from a PEM file.
    pub fn ca_file(ca: impl AsRef<Path>) -> Result<ClientTls> {
        ClientTls::ca_pem(&read_file("CA certificate", ca.as_ref())?)
    }

    /// A rustls configuration made elsewhere, used as it is.
    pub fn from_config(config: Arc<rustls::ClientConfig>) -> ClientTls {
        ClientTls {
            roots: None,
            client: None,
            server_name: None,
            config,
        }
    }

    /// Mutual TLS: the certificate chain and key (PEM text) this client
    /// shows a server that asks for one. Default: none.
    pub fn client_cert(self, cert_chain: &[u8], key_pem: &[u8]) -> Result<ClientTls> {
        let chain = certs("TLS client certificate", cert_chain)?;
        let key = Arc::new(key(key_pem)?);
        let roots = match &self.roots {
            Some(r) => r.clone(),
            None => Arc::new(rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            }),
        };
        let config = ClientTls::build(&roots, Some((&chain, &key)))?;
        Ok(ClientTls {
            roots: self.roots,
            client: Some((chain, key)),
            server_name: self.server_name,
            config,
        })
    }

    /// [`client_cert`](Self::client_cert) from PEM files.
    pub fn client_cert_files(
        self,
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<ClientTls> {
        let chain = read_file("TLS client certificate", cert_chain.as_ref())?;
        let key = read_file("TLS private key", key.as_ref())?;
        self.client_cert(&chain, &key)
    }

    /// The name the server's certificate must be valid for, instead of the
    /// HOST of the address: for a server dialled by IP address whose
    /// certificate names it by DNS name, say. Default: the HOST.
    pub fn server_name(mut self, name: impl Into<String>) -> ClientTls {
        self.server_name = Some(name.into());
        self
    }

    fn build(
        roots: &rustls::RootCertStore,
        client: Option<(&[CertificateDer<'static>], &PrivateKeyDer<'static>)>,
    ) -> Result<Arc<rustls::ClientConfig>> {
        let b = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .map_err(|e| config_error("versions", e))?
            .with_root_certificates(roots.clone());
        let config = match client {
            Some((chain, key)) => b
                .with_client_auth_cert(chain.to_vec(), key.clone_key())
                .map_err(|e| config_error("client certificate and key", e))?,
            None => b.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }

    /// The name to check the certificate of the server at `host` against.
    fn name_for(&self, host: &str) -> io::Result<ServerName<'static>> {
        let name = self.server_name.as_deref().unwrap_or(host);
        // `[::1]` in an address is `::1` in a certificate.
        let name = name.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(name.to_string()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?} is not a TLS server name: {e}"),
            )
        })
    }
}

/// A rustls error as an I/O error whose text says what went wrong in words.
fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, describe(&e))
}

/// What a failed handshake means, in words, then rustls's own text.
pub(crate) fn describe(e: &rustls::Error) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let why = match e {
        E::InvalidCertificate(c) => match c {
            C::UnknownIssuer => "the peer's certificate is signed by an unknown CA",
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "the server's certificate is not valid for the name dialled (name mismatch)"
            }
            C::Expired | C::ExpiredContext { .. } => "the peer's certificate has expired",
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "the peer's certificate is not valid yet"
            }
            C::Revoked => "the peer's certificate is revoked",
            C::BadSignature => "the peer's certificate has a bad signature",
            _ => "the peer's certificate is not acceptable",
        },
        E::NoCertificatesPresented => {
            "the client presented no certificate (mutual TLS requires one)"
        }
        E::AlertReceived(a) => match a {
            A::CertificateRequired => "the server requires a client certificate (mutual TLS)",
            A::UnknownCA => "the peer does not trust the CA of our certificate (unknown CA)",
            A::BadCertificate | A::CertificateUnknown | A::UnsupportedCertificate => {
                "the peer refused our certificate"
            }
            A::CertificateExpired => "the peer says our certificate has expired",
            A::DecryptError | A::HandshakeFailure => "the peer refused the handshake",
            _ => "the peer sent an alert",
        },
        E::InvalidMessage(_)
        | E::InappropriateMessage { .. }
        | E::InappropriateHandshakeMessage { .. } => {
            "the peer does not speak TLS (a plaintext peer on a TLS port?)"
        }
        _ => "TLS error",
    };
    format!("TLS handshake failed: {why} ({e})")
}

/// The identity a verified client certificate proves: its subject and
/// alternative names as text. `None` if it cannot be parsed (it was
/// verified, so that does not happen in practice).
pub(crate) fn identity_of(leaf: &CertificateDer<'_>) -> Option<(String, Vec<String>)> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let subject = cert.subject().to_string();
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                    names.push(s.to_string())
                }
                GeneralName::IPAddress(b) => match b.len() {
                    4 => names
                        .push(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).ok()?).to_string()),
                    16 => names
                        .push(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).ok()?).to_string()),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Some((subject, names))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The subject format `Identity::subject` documents: the certificate's
    /// order, short names, `, ` between attributes.
    #[test]
    fn identity_is_the_subject_in_order_and_the_alternative_names() {
        use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
        let mut p =
            CertificateParams::new(vec!["billing.internal".into(), "10.0.0.7".into()]).unwrap();
        // (rcgen's default name holds a common name already, first.)
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name
            .push(DnType::OrganizationName, "Example");
        p.distinguished_name.push(DnType::CommonName, "billing");
        let cert = p.self_signed(&KeyPair::generate().unwrap()).unwrap();
        let (subject, names) = identity_of(cert.der()).unwrap();
        assert_eq!(subject, "O=Example, CN=billing");
        assert_eq!(names, ["billing.internal", "10.0.0.7"]);
        assert!(identity_of(&CertificateDer::from(vec![0u8; 8])).is_none());
    }
}
