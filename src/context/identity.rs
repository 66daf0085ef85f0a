//! [`Identity`]: who the peer of a call proved to be, for an authenticator
//! or a handler to decide on. Set by the transport when it verified
//! something (a TLS client certificate, issue 19); `None` in a [`Context`]
//! whose connection proved nothing (plain TCP, Unix sockets).
//!
//! [`Context`]: super::Context

/// A peer's verified identity: the subject of its certificate and the
/// names it was issued for (subject alternative names: DNS names, URIs,
/// e-mail addresses and IP addresses, as text).
///
/// ```
/// use geerpc::context::Identity;
///
/// let id = Identity::new("CN=billing", vec!["billing.internal".into()]);
/// assert_eq!(id.subject(), "CN=billing");
/// assert!(id.has_name("billing.internal"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    subject: String,
    names: Vec<String>,
}

impl Identity {
    /// An identity with this subject and these alternative names.
    pub fn new(subject: impl Into<String>, names: Vec<String>) -> Identity {
        Identity {
            subject: subject.into(),
            names,
        }
    }

    /// The certificate's subject, as text (`CN=billing, O=Example`).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The certificate's subject alternative names, as text.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether `name` is one of the alternative names (exactly).
    pub fn has_name(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }
}
