//! The TLS side of geerpc's HTTP clients (the registry's and etcd's, both on
//! ureq): the CA certificates an `https://` server must chain to instead of
//! the webpki roots, and the client certificate presented to a server that
//! asks for one (mutual TLS, as etcd's `--client-cert-auth`).
//!
//! The files are read once, when set, by builders whose setters cannot
//! fail: a file that cannot be read is kept as its error and told by
//! [`check`](HttpTls::check) when the builder builds, naming the file.

use std::path::Path;
use std::sync::Arc;

use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};

use crate::error::{Error, Result};

/// CA and client certificate of one HTTP client; the default trusts the
/// webpki roots and presents no certificate.
#[derive(Clone, Default)]
pub(crate) struct HttpTls {
    roots: Option<std::result::Result<Arc<Vec<Certificate<'static>>>, String>>,
    client_cert: Option<std::result::Result<ClientCert, String>>,
}

impl std::fmt::Debug for HttpTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTls")
            .field("custom_ca", &self.roots.is_some())
            .field("client_cert", &self.client_cert.is_some())
            .finish()
    }
}

impl HttpTls {
    /// Trusts the CA certificates (PEM, one or more) in `path`.
    pub(crate) fn set_ca_file(&mut self, path: &Path) {
        self.roots = Some(read_certs("CA file", path).map(Arc::new));
    }

    /// Presents the certificate chain in PEM file `cert` with the private
    /// key in PEM file `key`.
    pub(crate) fn set_client_cert_files(&mut self, cert: &Path, key: &Path) {
        self.client_cert = Some(
            read_certs("client certificate file", cert).and_then(|chain| {
                let pem = std::fs::read(key)
                    .map_err(|e| format!("read client key file {}: {e}", key.display()))?;
                let key = PrivateKey::from_pem(&pem).map_err(|e| {
                    format!("client key file {}: no PEM private key: {e}", key.display())
                })?;
                Ok(ClientCert::new_with_certs(&chain, key))
            }),
        );
    }

    /// Whether a client certificate was given (readable or not).
    pub(crate) fn has_client_cert(&self) -> bool {
        self.client_cert.is_some()
    }

    /// Fails if a file given could not be read; `url` says for what.
    pub(crate) fn check(&self, url: &str) -> Result<()> {
        let errors = [
            self.roots.as_ref().and_then(|r| r.as_ref().err()),
            self.client_cert.as_ref().and_then(|c| c.as_ref().err()),
        ];
        match errors.into_iter().flatten().next() {
            Some(e) => Err(Error::Registry {
                url: url.to_string(),
                message: e.clone(),
            }),
            None => Ok(()),
        }
    }

    /// The ureq TLS configuration; `None` when nothing was set (ureq's
    /// default: the webpki roots, no client certificate).
    pub(crate) fn config(&self) -> Option<TlsConfig> {
        let roots = self.roots.as_ref().and_then(|r| r.as_ref().ok());
        let cert = self.client_cert.as_ref().and_then(|c| c.as_ref().ok());
        if roots.is_none() && cert.is_none() {
            return None;
        }
        let mut b = TlsConfig::builder().client_cert(cert.cloned());
        if let Some(roots) = roots {
            b = b.root_certs(RootCerts::Specific(roots.clone()));
        }
        Some(b.build())
    }
}

/// The certificates in PEM file `path`; the error names the file.
fn read_certs(what: &str, path: &Path) -> std::result::Result<Vec<Certificate<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("read {what} {}: {e}", path.display()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => {
                return Err(format!(
                    "{what} {}: not PEM certificates: {e}",
                    path.display()
                ))
            }
        }
    }
    if certs.is_empty() {
        return Err(format!(
            "{what} {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_files_are_told_by_check_naming_them() {
        let mut t = HttpTls::default();
        assert!(t.check("u").is_ok());
        assert!(t.config().is_none());
        t.set_ca_file(Path::new("/nonexistent/ca.pem"));
        let e = t.check("https://h:1").unwrap_err().to_string();
        assert!(
            e.contains("/nonexistent/ca.pem") && e.contains("https://h:1"),
            "{e}"
        );

        let dir = std::env::temp_dir().join(format!("geerpc-http-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let mut t = HttpTls::default();
        t.set_client_cert_files(&not_pem, &not_pem);
        let e = t.check("u").unwrap_err().to_string();
        assert!(
            e.contains("client certificate file") && e.contains("no PEM"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
