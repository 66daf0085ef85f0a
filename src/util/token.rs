//! [`Token`]: a bearer token (PROTOCOL.md sections 7 and 8), read from a
//! file or the environment and never from a command line (where `ps`
//! shows it), compared in constant time, and never shown: its `Debug`
//! says `Token(<redacted>)` and no error message contains it.

use std::fmt;
use std::path::Path;

use subtle::ConstantTimeEq;

use crate::error::{Error, Result};

/// Largest token file read: a token is a line, not a document.
const MAX_FILE: u64 = 4096;

/// A bearer token.
///
/// ```
/// use geerpc::Token;
///
/// let t = Token::new("s3cret-token")?;
/// assert!(t.matches("s3cret-token"));
/// assert!(!t.matches("s3cret-tokem"));
/// assert_eq!(format!("{t:?}"), "Token(<redacted>)");
/// assert_eq!(t.bearer(), "Bearer s3cret-token");
/// # Ok::<(), geerpc::Error>(())
/// ```
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// A token of visible ASCII characters (what fits an HTTP header and
    /// `Meta`), at most 4096 bytes (what a token file may hold); anything
    /// else is refused, without echoing it.
    pub fn new(token: impl Into<String>) -> Result<Token> {
        let token = token.into();
        if token.is_empty() {
            return Err(Error::Protocol("a token may not be empty".into()));
        }
        if token.len() as u64 > MAX_FILE {
            return Err(Error::Protocol(format!(
                "a token may be at most {MAX_FILE} bytes (this one is {})",
                token.len()
            )));
        }
        if let Some(pos) = token.bytes().position(|b| !b.is_ascii_graphic()) {
            return Err(Error::Protocol(format!(
                "a token may hold only visible ASCII characters (byte {pos} is not one)"
            )));
        }
        Ok(Token(token))
    }

    /// The token in file `path`: its first line, surrounding whitespace
    /// removed. The error names the file, never its content.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Token> {
        use std::io::Read;
        let path = path.as_ref();
        let what = |e: std::io::Error| Error::io(format!("read token file {}", path.display()), e);
        let mut text = String::new();
        std::fs::File::open(path)
            .map_err(what)?
            .take(MAX_FILE + 1)
            .read_to_string(&mut text)
            .map_err(what)?;
        if text.len() as u64 > MAX_FILE {
            return Err(Error::Protocol(format!(
                "token file {} is over {MAX_FILE} bytes: not a token",
                path.display()
            )));
        }
        let line = text.lines().next().unwrap_or("").trim();
        Token::new(line)
            .map_err(|e| Error::Protocol(format!("token file {}: {}", path.display(), inner(&e))))
    }

    /// The token in environment variable `var`, surrounding whitespace
    /// removed.
    pub fn from_env(var: &str) -> Result<Token> {
        let value = std::env::var(var)
            .map_err(|e| Error::Protocol(format!("token variable {var}: {e}")))?;
        Token::new(value.trim())
            .map_err(|e| Error::Protocol(format!("token variable {var}: {}", inner(&e))))
    }

    /// Whether `presented` is this token, in time that depends on the
    /// lengths only, not on where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }

    /// Whether an `Authorization` value (`Bearer TOKEN`; the scheme in any
    /// case) carries this token.
    pub fn matches_bearer(&self, authorization: &str) -> bool {
        match authorization.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => {
                self.matches(rest.trim())
            }
            _ => false,
        }
    }

    /// `Bearer TOKEN`: the `Authorization` value (HTTP header or `Meta`).
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// The secret itself, for a request that must carry it as such (etcd's
    /// password in `/v3/auth/authenticate`); never for a log or a message.
    #[cfg(feature = "etcd")]
    pub(crate) fn secret(&self) -> &str {
        &self.0
    }
}

/// The message of an error made by `Token::new`.
fn inner(e: &Error) -> String {
    match e {
        Error::Protocol(m) => m.clone(),
        other => other.to_string(),
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_variables_give_the_first_line_trimmed() {
        let dir = std::env::temp_dir().join(format!("geerpc-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("t");
        std::fs::write(&f, "  abc.DEF-123 \nsecond line\n").unwrap();
        assert!(Token::from_file(&f).unwrap().matches("abc.DEF-123"));
        std::fs::write(&f, "\n").unwrap();
        let e = Token::from_file(&f).unwrap_err().to_string();
        assert!(e.contains("empty") && e.contains("token file"), "{e}");
        std::fs::write(&f, "x".repeat(5000)).unwrap();
        assert!(Token::from_file(&f)
            .unwrap_err()
            .to_string()
            .contains("over"));
        let e = Token::from_file(dir.join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn new_bounds_the_length() {
        assert!(Token::new("x".repeat(4096)).is_ok());
        let e = Token::new("x".repeat(4097)).unwrap_err().to_string();
        assert!(e.contains("at most 4096") && !e.contains("xxx"), "{e}");
    }

    #[test]
    fn bad_tokens_are_refused_without_being_echoed() {
        let e = Token::new("two words").unwrap_err().to_string();
        assert!(!e.contains("two words") && e.contains("byte 3"), "{e}");
        assert!(Token::new("").is_err());
    }

    #[test]
    fn bearer_values_match_in_any_scheme_case_only_with_the_token() {
        let t = Token::new("tok").unwrap();
        assert!(t.matches_bearer("Bearer tok"));
        assert!(t.matches_bearer("bearer tok"));
        assert!(!t.matches_bearer("Bearer tok2"));
        assert!(!t.matches_bearer("Basic tok"));
        assert!(!t.matches_bearer("tok"));
        assert!(!t.matches(""));
    }
}
