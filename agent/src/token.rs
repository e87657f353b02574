//! The join token, as far as the agent needs to read it.
//!
//! Cross-component contract: the format is defined by the control plane
//! (`controlplane/src/nodeapi/token.rs`):
//!
//! ```text
//! K10<sha256 of the CA PEM, 64 lowercase hex digits>::<id>.<secret>
//! ```
//!
//! The agent uses the hash to decide whether the CA it fetched over an
//! unverified connection is the cluster's, and sends the whole token to
//! `Join`, which checks the rest.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the join token is malformed: {0}; expected K10<ca-sha256>::<id>.<secret> as printed by `skiff-controlplane token create`")]
    Malformed(&'static str),
    #[error("the server's CA does not match the join token (token expects CA sha256 {expected}, the server sent {actual}); refusing to trust it: check --server and --token")]
    CaMismatch { expected: String, actual: String },
}

/// A join token whose shape is right.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    text: String,
    ca_hash: String,
}

impl fmt::Debug for JoinToken {
    // The token is a credential; only its public part is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_hash", &self.ca_hash)
            .finish_non_exhaustive()
    }
}

impl FromStr for JoinToken {
    type Err = TokenError;

    fn from_str(text: &str) -> Result<JoinToken, TokenError> {
        let text = text.trim();
        let rest = text
            .strip_prefix("K10")
            .ok_or(TokenError::Malformed("it does not start with K10"))?;
        let (ca_hash, credentials) = rest
            .split_once("::")
            .ok_or(TokenError::Malformed("there is no '::' after the CA hash"))?;
        if ca_hash.len() != 64
            || !ca_hash
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        {
            return Err(TokenError::Malformed(
                "the CA hash is not 64 lowercase hex digits",
            ));
        }
        if !credentials.contains('.') {
            return Err(TokenError::Malformed(
                "there is no '.' between id and secret",
            ));
        }
        Ok(JoinToken {
            text: text.to_owned(),
            ca_hash: ca_hash.to_owned(),
        })
    }
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl JoinToken {
    /// The token as the user gave it, for `Join`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Checks that `ca_pem` (the exact bytes `/cacerts` answered) is the CA
    /// the token was made for.
    pub fn verify_ca(&self, ca_pem: &[u8]) -> Result<(), TokenError> {
        let actual = sha256_hex(ca_pem);
        if actual == self.ca_hash {
            Ok(())
        } else {
            Err(TokenError::CaMismatch {
                expected: self.ca_hash.clone(),
                actual,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &[u8] = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn token_for(ca: &[u8]) -> String {
        format!("K10{}::abc123.0123456789abcdef", sha256_hex(ca))
    }

    #[test]
    fn a_token_accepts_only_its_own_ca() {
        let token: JoinToken = token_for(CA).parse().expect("valid");
        assert_eq!(token.as_str(), token_for(CA));
        assert!(token.verify_ca(CA).is_ok());
        let error = token.verify_ca(b"another CA").expect_err("mismatch");
        assert!(error.to_string().contains("does not match"), "{error}");
        assert!(!format!("{token:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn malformed_tokens_are_refused_before_any_connection() {
        let hash = sha256_hex(CA);
        for (text, expected) in [
            ("secret", "K10"),
            (&format!("K10{hash}abc123.0123456789abcdef")[..], "'::'"),
            (
                &format!("K10{}::abc123.x", &hash[2..])[..],
                "64 lowercase hex",
            ),
            (&format!("K10{hash}::abc123")[..], "'.'"),
        ] {
            let error = text.parse::<JoinToken>().expect_err(text).to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
        // Surrounding whitespace from a copy-paste is forgiven.
        assert!(format!(" {}\n", token_for(CA)).parse::<JoinToken>().is_ok());
    }
}
