//! How geerpc proves itself to an etcd cluster and whom it trusts there:
//! TLS (a CA for `https://` endpoints, a client certificate for members
//! started with `--client-cert-auth`) and etcd's user/password
//! authentication.
//!
//! # Authentication tokens
//!
//! With a user set, the first request asks `/v3/auth/authenticate` for a
//! token and every request carries it as `Authorization` (the gateway
//! hands that header to etcd as the gRPC `authorization` metadata). A
//! token does not last: etcd's simple tokens expire after
//! `--auth-token-ttl` (5 min) unused, JWT tokens at their expiry, and
//! both die with the member that issued them or when the user's password
//! or the auth store changes. etcd says so with one of three errors, the
//! ones its own Go client (clientv3's `shouldRefreshToken`) renews on:
//! `invalid auth token`, `user name is empty` and `revision of auth store
//! is old`. On any of them the token is dropped, a new one asked for, and
//! the request sent once more; so a token is renewed when, and only when,
//! etcd refuses it.
//!
//! Invariant: `token` holds the latest token or none. A thread that saw
//! token T refused drops it only if it is still T (another thread may have
//! renewed it already), so concurrent refusals cost one renewal each at
//! most, never a loop. The password is never logged: [`Token`]'s `Debug`
//! is redacted and no error message here contains it or the token.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::util::token::Token;

/// A client's TLS settings and etcd user; the default uses plain `http://`
/// or the webpki roots, and no user.
#[derive(Clone, Default, Debug)]
pub(crate) struct Access {
    #[cfg(feature = "tls")]
    pub(crate) tls: crate::util::http_tls::HttpTls,
    pub(crate) user: Option<Arc<User>>,
}

/// An etcd user, its password and the token etcd gave it last.
pub(crate) struct User {
    pub(crate) name: String,
    pub(crate) password: Token,
    token: Mutex<Option<Arc<str>>>,
}

impl Access {
    /// An agent of `config` with the TLS settings added.
    pub(crate) fn agent(
        &self,
        config: ureq::config::ConfigBuilder<ureq::typestate::AgentScope>,
    ) -> ureq::Agent {
        #[cfg(feature = "tls")]
        let config = match self.tls.config() {
            Some(tls) => config.tls_config(tls),
            None => config,
        };
        ureq::Agent::new_with_config(config.build())
    }

    /// `message` (a request to `url` that failed below HTTP) with what it
    /// most likely means when TLS is why: a member that requires client
    /// certificates cuts a TLS 1.3 client that has none after its
    /// handshake, which the client sees as a broken pipe or a reset.
    pub(crate) fn explain(&self, url: &str, message: String) -> String {
        if !url.starts_with("https://") {
            return message;
        }
        #[cfg(feature = "tls")]
        let has_cert = self.tls.has_client_cert();
        #[cfg(not(feature = "tls"))]
        let has_cert = false;
        let cut = ["Broken pipe", "Connection reset", "CertificateRequired"]
            .iter()
            .any(|m| message.contains(m));
        let refused = ["BadCertificate", "UnknownCA", "CertificateUnknown"]
            .iter()
            .any(|m| message.contains(m));
        match (cut || refused, has_cert) {
            (true, false) => format!(
                "{message} (the member closed the TLS connection: it may require a client \
                 certificate, and none was given)"
            ),
            (true, true) => format!(
                "{message} (the member closed the TLS connection: it may have refused the \
                 client certificate given)"
            ),
            (false, _) => message,
        }
    }

    /// Fails if a TLS file given could not be read.
    pub(crate) fn check(&self, url: &str) -> crate::error::Result<()> {
        #[cfg(feature = "tls")]
        self.tls.check(url)?;
        let _ = url;
        Ok(())
    }
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl User {
    pub(crate) fn new(name: &str, password: Token) -> User {
        User {
            name: name.to_string(),
            password,
            token: Mutex::new(None),
        }
    }

    /// The token held, if any.
    pub(crate) fn token(&self) -> Option<Arc<str>> {
        self.token.lock().clone()
    }

    /// Keeps a token just issued.
    pub(crate) fn set_token(&self, token: &str) {
        *self.token.lock() = Some(Arc::from(token));
    }

    /// Drops `refused` if it is still the token held.
    pub(crate) fn drop_token(&self, refused: &Arc<str>) {
        let mut t = self.token.lock();
        if t.as_ref().is_some_and(|t| Arc::ptr_eq(t, refused)) {
            *t = None;
        }
    }
}

/// `token` as an `Authorization` value, marked sensitive so that no Debug
/// of a request shows it; the error when etcd gave one that cannot be a
/// header value.
pub(crate) fn auth_value(token: &str) -> Result<ureq::http::HeaderValue, String> {
    let mut value = ureq::http::HeaderValue::from_str(token)
        .map_err(|_| "etcd gave an auth token that is not a header value".to_string())?;
    value.set_sensitive(true);
    Ok(value)
}

/// Whether an etcd error message says the token must be renewed (the
/// three errors clientv3 renews on).
pub(crate) fn token_refused(message: &str) -> bool {
    message.contains("invalid auth token")
        || message.contains("user name is empty")
        || message.contains("revision of auth store is old")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_token_is_dropped_only_if_still_held() {
        let u = User::new("geerpc", Token::new("pw").unwrap());
        assert!(u.token().is_none());
        u.set_token("t1");
        let t1 = u.token().unwrap();
        u.set_token("t2");
        // Another thread renewed already: t1's refusal leaves t2 alone.
        u.drop_token(&t1);
        assert_eq!(u.token().as_deref(), Some("t2"));
        let t2 = u.token().unwrap();
        u.drop_token(&t2);
        assert!(u.token().is_none());
        assert!(!format!("{u:?}").contains("pw"));
    }

    #[test]
    fn renewal_errors_are_recognised() {
        assert!(token_refused("etcdserver: invalid auth token"));
        assert!(token_refused("etcdserver: user name is empty"));
        assert!(token_refused("etcdserver: revision of auth store is old"));
        assert!(!token_refused("etcdserver: permission denied"));
        assert!(!token_refused(
            "etcdserver: authentication failed, invalid user ID or password"
        ));
    }
}
