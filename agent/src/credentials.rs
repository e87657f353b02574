//! The node's credentials in the agent's data directory.
//!
//! Three files: `ca.crt` (the cluster CA), `node.key` (the node's private
//! key, mode 0600, generated here and never sent anywhere) and `node.crt`
//! (its certificate from `Join`). Each is written atomically (temporary
//! file, fsync, rename), and `node.crt` is written last: a data directory
//! with a certificate has all three, so a crash during the first join
//! leaves either nothing usable (and the agent joins again) or everything.
//!
//! The node name is read back from the certificate rather than stored
//! beside it, so the two can never disagree.

use std::io::Write;
use std::path::{Path, PathBuf};

use x509_parser::prelude::{FromDer, X509Certificate};

const CA_FILE: &str = "ca.crt";
const KEY_FILE: &str = "node.key";
const CERT_FILE: &str = "node.crt";
const NODE_CN_PREFIX: &str = "system:node:";

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a node certificate ({reason}); remove the agent's data directory to join again")]
    NotANodeCertificate { path: PathBuf, reason: String },
    #[error("cannot create the node's key or certificate request: {0}")]
    Generate(#[from] rcgen::Error),
}

/// What the agent needs to connect as its node.
#[derive(Clone)]
pub struct Credentials {
    pub node_name: String,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("node_name", &self.node_name)
            .finish_non_exhaustive()
    }
}

/// A fresh key and a certificate signing request for `node_name`.
pub struct KeyAndRequest {
    pub key_pem: String,
    pub csr_pem: String,
}

pub fn generate_request(node_name: &str) -> Result<KeyAndRequest, CredentialsError> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::default();
    // The control plane sets the subject itself; asking for the right one
    // keeps the request self-explanatory.
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("{NODE_CN_PREFIX}{node_name}"),
    );
    let csr = params.serialize_request(&key)?;
    Ok(KeyAndRequest {
        key_pem: key.serialize_pem(),
        csr_pem: csr.pem()?,
    })
}

/// The node name a node certificate (PEM) was issued for.
pub fn node_name_of(cert_pem: &str, path: &Path) -> Result<String, CredentialsError> {
    let invalid = |reason: &str| CredentialsError::NotANodeCertificate {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).map_err(|_| invalid("not PEM"))?;
    let (_, certificate) =
        X509Certificate::from_der(&pem.contents).map_err(|_| invalid("not a certificate"))?;
    let common_name = certificate
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(|| invalid("no common name"))?;
    common_name
        .strip_prefix(NODE_CN_PREFIX)
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| invalid("its common name is not system:node:<name>"))
}

fn read(path: &Path) -> Result<Option<String>, CredentialsError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CredentialsError::Io {
            action: "read",
            path: path.to_owned(),
            source,
        }),
    }
}

fn write_atomically(path: &Path, contents: &str, mode: u32) -> Result<(), CredentialsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |action, source| CredentialsError::Io {
        action,
        path: path.to_owned(),
        source,
    };
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temporary)
        .map_err(|e| io("create", e))?;
    file.write_all(contents.as_bytes())
        .map_err(|e| io("write", e))?;
    file.sync_all().map_err(|e| io("sync", e))?;
    std::fs::rename(&temporary, path).map_err(|e| io("rename", e))
}

impl Credentials {
    /// The credentials stored in `dir`, or `None` if the node has not
    /// joined yet.
    pub fn load(dir: &Path) -> Result<Option<Credentials>, CredentialsError> {
        let cert_path = dir.join(CERT_FILE);
        let Some(cert_pem) = read(&cert_path)? else {
            return Ok(None);
        };
        let (Some(ca_pem), Some(key_pem)) = (read(&dir.join(CA_FILE))?, read(&dir.join(KEY_FILE))?)
        else {
            return Err(CredentialsError::NotANodeCertificate {
                path: cert_path,
                reason: "ca.crt or node.key beside it is missing".into(),
            });
        };
        Ok(Some(Credentials {
            node_name: node_name_of(&cert_pem, &cert_path)?,
            ca_pem,
            cert_pem,
            key_pem,
        }))
    }

    /// Stores the credentials in `dir` (created 0700 if missing).
    pub fn save(&self, dir: &Path) -> Result<(), CredentialsError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| CredentialsError::Io {
                action: "create",
                path: dir.to_owned(),
                source,
            })?;
        write_atomically(&dir.join(CA_FILE), &self.ca_pem, 0o644)?;
        write_atomically(&dir.join(KEY_FILE), &self.key_pem, 0o600)?;
        write_atomically(&dir.join(CERT_FILE), &self.cert_pem, 0o644)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A certificate as the control plane would issue it (self-signed here).
    fn node_certificate(common_name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let cert = params.self_signed(&key).expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn saved_credentials_load_back_with_their_node_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("agent");
        assert!(Credentials::load(&data).expect("load").is_none());

        let (cert_pem, key_pem) = node_certificate("system:node:worker-1");
        let credentials = Credentials {
            node_name: "worker-1".into(),
            ca_pem: "CA".into(),
            cert_pem,
            key_pem,
        };
        credentials.save(&data).expect("save");
        let loaded = Credentials::load(&data).expect("load").expect("present");
        assert_eq!(loaded.node_name, "worker-1");
        assert_eq!(loaded.key_pem, credentials.key_pem);

        let mode = |name: &str| {
            std::fs::metadata(data.join(name))
                .expect("metadata")
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("node.key"), 0o600);
        assert_eq!(mode("node.crt"), 0o644);
        assert_eq!(
            std::fs::metadata(&data).expect("dir").permissions().mode() & 0o777,
            0o700
        );
    }

    #[test]
    fn a_certificate_that_is_not_a_nodes_is_refused() {
        let (cert_pem, _) = node_certificate("skiff-admin");
        let error = node_name_of(&cert_pem, Path::new("node.crt")).expect_err("not a node");
        assert!(error.to_string().contains("system:node:<name>"), "{error}");
        assert!(node_name_of("garbage", Path::new("node.crt")).is_err());
    }

    #[test]
    fn requests_carry_the_node_name() {
        let request = generate_request("worker-1").expect("request");
        assert!(request.csr_pem.contains("BEGIN CERTIFICATE REQUEST"));
        assert!(request.key_pem.contains("PRIVATE KEY"));
    }
}
