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

    /// The certificate's subject as text: its attributes in the order the
    /// certificate holds them, each `NAME=value` with the usual short names
    /// (`CN`, `O`, `OU`, `C`, `ST`, `L`; the dotted OID for others), joined
    /// by `, ` (` + ` inside a multi-valued one). A certificate made with
    /// `openssl req -subj /O=Example/CN=billing` gives
    /// `O=Example, CN=billing`. Values are as written, not escaped, and the
    /// order is not RFC 4514's reversed one: compare whole subjects, or
    /// better the [`names`](Self::names), which are unambiguous.
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
