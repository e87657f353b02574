//! Join tokens: what `skiff-controlplane token create` prints and what
//! `Join` accepts.
//!
//! Format (a cross-component contract: `agent/src/token.rs` parses the same
//! text):
//!
//! ```text
//! K10<sha256 of the CA PEM, 64 lowercase hex digits>::<id>.<secret>
//! ```
//!
//! `id` is 6 and `secret` 16 characters of `[a-z0-9]`, as in Kubernetes
//! bootstrap tokens. The hash covers the exact bytes `GET /cacerts` serves,
//! so a joining agent can check the CA it fetched over an unverified
//! connection before it trusts anything signed by it (the scheme k3s uses).
//!
//! Storage: one file per token, `DATA_DIR/tokens/<id>`, holding the SHA-256
//! of the secret rather than the secret, written atomically. The server reads
//! the file on every `Join`, so a token created while it runs works at once
//! and deleting the file revokes it. Tokens do not expire and may be used by
//! any number of nodes.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rand::Rng;
use subtle::ConstantTimeEq;

use crate::pki;

const PREFIX: &str = "K10";
const ID_LENGTH: usize = 6;
const SECRET_LENGTH: usize = 16;
const HASH_HEX_LENGTH: usize = 64;
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the join token is malformed: {0}; expected K10<ca-sha256>::<id>.<secret> as printed by `skiff-controlplane token create`")]
    Malformed(&'static str),
    #[error("the join token was made for another cluster: its CA hash does not match this control plane's CA")]
    WrongCluster,
    #[error("the join token is not valid: unknown, revoked, or the secret is wrong")]
    Rejected,
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
}

/// A parsed join token.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// SHA-256 of the cluster CA PEM, lowercase hex.
    pub ca_hash: String,
    pub id: String,
    secret: String,
}

impl fmt::Debug for JoinToken {
    // The secret stays out of logs and panics.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_hash", &self.ca_hash)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}::{}.{}", self.ca_hash, self.id, self.secret)
    }
}

fn is_token_char(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

impl FromStr for JoinToken {
    type Err = TokenError;

    fn from_str(text: &str) -> Result<JoinToken, TokenError> {
        let text = text.trim();
        let rest = text
            .strip_prefix(PREFIX)
            .ok_or(TokenError::Malformed("it does not start with K10"))?;
        let (ca_hash, credentials) = rest
            .split_once("::")
            .ok_or(TokenError::Malformed("there is no '::' after the CA hash"))?;
        if ca_hash.len() != HASH_HEX_LENGTH
            || !ca_hash
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        {
            return Err(TokenError::Malformed(
                "the CA hash is not 64 lowercase hex digits",
            ));
        }
        let (id, secret) = credentials.split_once('.').ok_or(TokenError::Malformed(
            "there is no '.' between id and secret",
        ))?;
        if id.len() != ID_LENGTH || !id.bytes().all(is_token_char) {
            return Err(TokenError::Malformed(
                "the id is not 6 characters of [a-z0-9]",
            ));
        }
        if secret.len() != SECRET_LENGTH || !secret.bytes().all(is_token_char) {
            return Err(TokenError::Malformed(
                "the secret is not 16 characters of [a-z0-9]",
            ));
        }
        Ok(JoinToken {
            ca_hash: ca_hash.to_owned(),
            id: id.to_owned(),
            secret: secret.to_owned(),
        })
    }
}

fn random_string(length: usize) -> String {
    let mut rng = rand::rng();
    (0..length)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn sha256(bytes: &[u8]) -> ring::digest::Digest {
    ring::digest::digest(&ring::digest::SHA256, bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The CA hash a token carries: SHA-256 of the CA PEM bytes, lowercase hex.
pub fn ca_hash(ca_pem: &str) -> String {
    hex(sha256(ca_pem.as_bytes()).as_ref())
}

impl JoinToken {
    /// A fresh random token for the cluster whose CA is `ca_pem`.
    pub fn generate(ca_pem: &str) -> JoinToken {
        JoinToken {
            ca_hash: ca_hash(ca_pem),
            id: random_string(ID_LENGTH),
            secret: random_string(SECRET_LENGTH),
        }
    }

    fn secret_hash(&self) -> String {
        hex(sha256(self.secret.as_bytes()).as_ref())
    }

    /// Checks this token against the cluster's CA and the stored secret
    /// hash (`None` when no token with this id exists). The secret is
    /// compared in constant time.
    pub fn verify(&self, ca_pem: &str, stored_secret_hash: Option<&str>) -> Result<(), TokenError> {
        if !bool::from(self.ca_hash.as_bytes().ct_eq(ca_hash(ca_pem).as_bytes())) {
            return Err(TokenError::WrongCluster);
        }
        let Some(stored) = stored_secret_hash else {
            return Err(TokenError::Rejected);
        };
        if bool::from(
            self.secret_hash()
                .as_bytes()
                .ct_eq(stored.trim().as_bytes()),
        ) {
            Ok(())
        } else {
            Err(TokenError::Rejected)
        }
    }
}

/// The token files under `DATA_DIR/tokens/`.
#[derive(Debug, Clone)]
pub struct TokenStore {
    dir: PathBuf,
}

impl TokenStore {
    pub fn new(data_dir: &Path) -> TokenStore {
        TokenStore {
            dir: data_dir.join("tokens"),
        }
    }

    /// Creates and stores a new token for the cluster whose CA is `ca_pem`.
    pub fn create(&self, ca_pem: &str) -> Result<JoinToken, TokenError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| TokenError::Io {
            action: "create",
            path: self.dir.clone(),
            source,
        })?;
        let token = JoinToken::generate(ca_pem);
        pki::write_private(
            &self.dir.join(&token.id),
            &format!("{}\n", token.secret_hash()),
            0o600,
        )?;
        Ok(token)
    }

    /// The stored secret hash of token `id`, if there is one. `id` has been
    /// checked by the parser to be `[a-z0-9]{6}`, so it is a plain file name.
    pub fn secret_hash(&self, id: &str) -> Result<Option<String>, TokenError> {
        let path = self.dir.join(id);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text.trim().to_owned())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(TokenError::Io {
                action: "read",
                path,
                source,
            }),
        }
    }

    /// Checks `token` against the stored tokens and the cluster's CA.
    pub fn verify(&self, token: &JoinToken, ca_pem: &str) -> Result<(), TokenError> {
        token.verify(ca_pem, self.secret_hash(&token.id)?.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    #[test]
    fn generated_tokens_round_trip_through_their_text() {
        let token = JoinToken::generate(CA);
        let text = token.to_string();
        assert!(text.starts_with("K10"));
        assert_eq!(text.len(), 3 + 64 + 2 + 6 + 1 + 16);
        let parsed: JoinToken = text.parse().expect("parses");
        assert_eq!(parsed, token);
        assert_eq!(parsed.ca_hash, ca_hash(CA));
    }

    #[test]
    fn malformed_tokens_say_what_is_wrong() {
        let hash = ca_hash(CA);
        let cases = [
            ("", "K10"),
            (&format!("K11{hash}::abcdef.0123456789abcdef"), "K10"),
            (&format!("K10{hash}:abcdef.0123456789abcdef"), "'::'"),
            (
                &format!("K10{}::abcdef.0123456789abcdef", &hash[1..]),
                "64 lowercase hex",
            ),
            (
                &format!("K10{}::abcdef.0123456789abcdef", hash.to_uppercase()),
                "64 lowercase hex",
            ),
            (&format!("K10{hash}::abcdef0123456789abcdef"), "'.'"),
            (&format!("K10{hash}::abcde.0123456789abcdef"), "id"),
            (&format!("K10{hash}::ABCDEF.0123456789abcdef"), "id"),
            (&format!("K10{hash}::abcdef.0123456789abcde"), "secret"),
            (&format!("K10{hash}::abcdef.0123456789abcde/"), "secret"),
        ];
        for (text, expected) in cases {
            let error = text.parse::<JoinToken>().expect_err(text).to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn verification_checks_the_cluster_then_the_secret() {
        let token = JoinToken::generate(CA);
        let stored = token.secret_hash();
        assert!(token.verify(CA, Some(&stored)).is_ok());
        assert!(token.verify(CA, Some(&format!("{stored}\n"))).is_ok());
        assert!(matches!(
            token.verify("another CA", Some(&stored)),
            Err(TokenError::WrongCluster)
        ));
        assert!(matches!(token.verify(CA, None), Err(TokenError::Rejected)));
        let other = JoinToken::generate(CA);
        assert!(matches!(
            other.verify(CA, Some(&stored)),
            Err(TokenError::Rejected)
        ));
        assert!(
            !format!("{token:?}").contains(&token.secret),
            "Debug hides the secret"
        );
    }

    #[test]
    fn stored_tokens_are_found_by_id_and_revoked_by_removal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TokenStore::new(dir.path());
        let token = store.create(CA).expect("create");
        store.verify(&token, CA).expect("valid");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("tokens").join(&token.id))
                .expect("file")
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let text =
            std::fs::read_to_string(dir.path().join("tokens").join(&token.id)).expect("file");
        assert!(!text.contains(&token.secret), "only the hash is stored");

        std::fs::remove_file(dir.path().join("tokens").join(&token.id)).expect("remove");
        assert!(matches!(
            store.verify(&token, CA),
            Err(TokenError::Rejected)
        ));
    }
}
