//! The registry's credentials and trust on the command line (PROTOCOL.md
//! section 7): the tokens and the certificate a `geerpc registry` serves with,
//! and the token and CA that `list` and `call` use to read a registry (and
//! the CA, client certificate and user they use with etcd).
//! Tokens come only from files, never from the command line itself (where
//! `ps` shows them), and are never printed.

use std::path::PathBuf;

use clap::Args;
use geerpc::etcd::EtcdDiscoveryBuilder;
use geerpc::registry::{RegistryBuilder, RegistryDiscoveryBuilder};
use geerpc::Token;

use crate::exit::{Failure, Kind};

/// `geerpc registry`'s credentials.
#[derive(Args, Debug, Default)]
pub struct Serve {
    /// File whose first line is the write token: POST (register) and
    /// DELETE (deregister) must carry `Authorization: Bearer TOKEN`, else
    /// 401 and nothing changes. Without it anyone who reaches the registry
    /// may register any address. Serve HTTPS (--tls-cert) beyond loopback.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// File whose first line is the read token: every GET (list, watch)
    /// must then carry it (or the write token). Needs --token-file.
    #[arg(long, value_name = "FILE", requires = "token_file")]
    pub read_token_file: Option<PathBuf>,
    /// Serve HTTPS with this certificate chain (PEM: the registry's
    /// certificate first, then intermediates). Needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl Serve {
    /// The builder with the tokens read from their files.
    pub fn apply(&self, mut b: RegistryBuilder) -> Result<RegistryBuilder, Failure> {
        if let Some(f) = &self.token_file {
            b = b.write_token(read(f)?);
        }
        if let Some(f) = &self.read_token_file {
            b = b.read_token(read(f)?);
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            b = b.tls_pem_files(cert, key);
        }
        Ok(b)
    }
}

/// How `list` and `call` reach a registry.
#[derive(Args, Debug, Default, Clone)]
pub struct Reach {
    /// File whose first line is the registry's bearer token (its read
    /// token, or its write token), sent with every request to --registry.
    #[arg(long, value_name = "FILE")]
    pub registry_token_file: Option<PathBuf>,
    /// CA certificate(s), PEM, that an https:// --registry's certificate,
    /// https:// --etcd endpoints' and a tls@ server's must chain to
    /// (default: the webpki roots).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// This client's certificate chain, PEM, for tls@ servers and https://
    /// etcd endpoints that require one (mutual TLS); with --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The key of --tls-cert, PEM.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The etcd user to authenticate as, for a cluster with authentication
    /// enabled; with --etcd-password-file.
    #[arg(long, value_name = "NAME", requires = "etcd_password_file")]
    pub etcd_user: Option<String>,
    /// File whose first line is --etcd-user's password.
    #[arg(long, value_name = "FILE", requires = "etcd_user")]
    pub etcd_password_file: Option<PathBuf>,
}

impl Reach {
    /// The discovery builder with the token and CA.
    pub fn apply(
        &self,
        mut b: RegistryDiscoveryBuilder,
    ) -> Result<RegistryDiscoveryBuilder, Failure> {
        if let Some(f) = &self.registry_token_file {
            b = b.token(read(f)?);
        }
        if let Some(f) = &self.tls_ca {
            b = b.tls_ca_file(f);
        }
        Ok(b)
    }

    /// The etcd discovery builder with the CA, client certificate and user.
    pub fn apply_etcd(&self, mut b: EtcdDiscoveryBuilder) -> Result<EtcdDiscoveryBuilder, Failure> {
        if let Some(f) = &self.tls_ca {
            b = b.tls_ca_file(f);
        }
        if let (Some(c), Some(k)) = (&self.tls_cert, &self.tls_key) {
            b = b.tls_client_cert_files(c, k);
        }
        if let (Some(user), Some(f)) = (&self.etcd_user, &self.etcd_password_file) {
            b = b.user(user, read(f)?);
        }
        Ok(b)
    }

    /// How `tls@` servers are dialled: the CA given (else the webpki
    /// roots) and the client certificate, if any.
    pub fn client_tls(&self) -> Result<geerpc::wire::ClientTls, Failure> {
        let usage = |e: geerpc::Error| Failure::new(Kind::Usage, e.to_string());
        let tls = match &self.tls_ca {
            Some(ca) => geerpc::wire::ClientTls::ca_file(ca).map_err(usage)?,
            None => geerpc::wire::ClientTls::webpki_roots(),
        };
        match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => tls.client_cert_files(c, k).map_err(usage),
            _ => Ok(tls),
        }
    }

    /// The CA and client certificate for an HTTPS request of the command's
    /// own (`describe` over TLS); `None` when neither is given.
    pub fn http_tls(&self) -> Result<Option<ureq::tls::TlsConfig>, Failure> {
        use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};
        let usage = |what: &str, path: &std::path::Path, e: String| {
            Failure::new(Kind::Usage, format!("{what} {}: {e}", path.display()))
        };
        let read_file = |what: &str, path: &std::path::Path| {
            std::fs::read(path).map_err(|e| usage(what, path, e.to_string()))
        };
        let certs =
            |what: &str, path: &std::path::Path| -> Result<Vec<Certificate<'static>>, Failure> {
                let pem = read_file(what, path)?;
                let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                    .filter_map(|i| match i {
                        Ok(PemItem::Certificate(c)) => Some(c),
                        _ => None,
                    })
                    .collect();
                if certs.is_empty() {
                    return Err(usage(what, path, "no PEM certificate in it".into()));
                }
                Ok(certs)
            };
        if self.tls_ca.is_none() && self.tls_cert.is_none() {
            return Ok(None);
        }
        let mut b = TlsConfig::builder();
        if let Some(ca) = &self.tls_ca {
            b = b.root_certs(RootCerts::new_with_certs(&certs("--tls-ca", ca)?));
        }
        if let (Some(c), Some(k)) = (&self.tls_cert, &self.tls_key) {
            let key = PrivateKey::from_pem(&read_file("--tls-key", k)?)
                .map_err(|e| usage("--tls-key", k, e.to_string()))?;
            b = b.client_cert(Some(ClientCert::new_with_certs(
                &certs("--tls-cert", c)?,
                key,
            )));
        }
        Ok(Some(b.build()))
    }

    /// Refuses registry or etcd options without a registry or etcd to use
    /// them on.
    pub fn check_used(&self, registry: Option<&str>, etcd: Option<&str>) -> Result<(), Failure> {
        if registry.is_none() && self.registry_token_file.is_some() {
            return Err(Failure::new(
                Kind::Usage,
                "--registry-token-file is for --registry",
            ));
        }
        if etcd.is_none() && self.etcd_user.is_some() {
            return Err(Failure::new(Kind::Usage, "--etcd-user is for --etcd"));
        }
        Ok(())
    }
}

/// A token file, or exit code 1 naming the file (never its content).
fn read(path: &std::path::Path) -> Result<Token, Failure> {
    Token::from_file(path).map_err(|e| Failure::new(Kind::Other, e.to_string()))
}
