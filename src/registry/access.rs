//! What a registry client (a [`Heartbeat`](super::Heartbeat), a
//! [`RegistryDiscovery`](super::RegistryDiscovery)) presents and trusts:
//! the bearer token sent as `Authorization` on every request (PROTOCOL.md
//! section 7), and, with the `tls` feature, the CA that an `https://`
//! registry's certificate must chain to instead of the webpki roots.
//!
//! Both are put on the client's ureq agent, once: the token by a
//! middleware that adds the header to each request the agent sends (so no
//! request path can forget it), marked sensitive; the CA in the agent's TLS
//! configuration. The token is never logged: `Token`'s `Debug` is
//! redacted and no error message here contains it.

use std::time::Duration;

use crate::error::Result;
#[cfg(feature = "tls")]
use crate::util::http_tls::HttpTls;
use crate::util::token::Token;

/// A registry client's credentials and trust; the default sends no token
/// and trusts the webpki roots, as before.
#[derive(Clone, Default)]
pub(crate) struct Access {
    pub(crate) token: Option<Token>,
    /// The CA trusted for `https://` (told by the builder's
    /// `build`/`register` when its file could not be read).
    #[cfg(feature = "tls")]
    pub(crate) tls: HttpTls,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Access");
        d.field("token", &self.token.as_ref().map(|_| "<redacted>"));
        #[cfg(feature = "tls")]
        d.field("tls", &self.tls);
        d.finish()
    }
}

impl Access {
    /// Reads the CA certificates (PEM, one or more) in `path`, for
    /// `https://` registries.
    #[cfg(feature = "tls")]
    pub(crate) fn set_ca_file(&mut self, path: &std::path::Path) {
        self.tls.set_ca_file(path);
    }

    /// Fails if a CA file given could not be read.
    pub(crate) fn check(&self, url: &str) -> Result<()> {
        #[cfg(feature = "tls")]
        self.tls.check(url)?;
        let _ = url;
        Ok(())
    }

    /// A ureq agent for registry requests that sends the token and trusts
    /// the CA: no connection reuse (a heartbeat a minute gains nothing
    /// from it, and a pooled connection to a registry that restarted
    /// would only fail the next request), status codes as values.
    pub(crate) fn agent(&self, timeout: Duration) -> ureq::Agent {
        let mut config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .user_agent(concat!("geerpc/", env!("CARGO_PKG_VERSION")));
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.config() {
            config = config.tls_config(tls);
        }
        if let Some(token) = &self.token {
            let mut value = ureq::http::HeaderValue::from_str(&token.bearer())
                .expect("a Token is visible ASCII");
            // Kept out of any Debug of the request.
            value.set_sensitive(true);
            config = config.middleware(
                move |mut rq: ureq::http::Request<ureq::SendBody>,
                      next: ureq::middleware::MiddlewareNext| {
                    rq.headers_mut()
                        .insert(ureq::http::header::AUTHORIZATION, value.clone());
                    next.handle(rq)
                },
            );
        }
        ureq::Agent::new_with_config(config.build())
    }
}
