//! The control plane's certificates: a cluster CA, the API serving
//! certificate, and the admin client certificate behind `admin.kubeconfig`.
//!
//! Everything is created on first start under `DATA_DIR/pki/` and reused
//! afterwards. The serving certificate is reissued when the set of names it
//! must cover changes (a new `--tls-san`, say); the CA never is, so existing
//! kubeconfigs stay valid.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("the certificate signing request is invalid: {0}")]
    Request(rcgen::Error),
}

/// PEM material the server needs.
pub struct ServerPki {
    pub ca_pem: String,
    pub serving_cert_pem: String,
    pub serving_key_pem: String,
}

const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const SERVING_CERT: &str = "apiserver.crt";
const SERVING_KEY: &str = "apiserver.key";
const SERVING_NAMES: &str = "apiserver.names";
const ADMIN_CERT: &str = "admin.crt";
const ADMIN_KEY: &str = "admin.key";

fn read(path: &Path) -> Result<Option<String>, PkiError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PkiError::Io {
            action: "read",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes a file atomically (temp file, fsync, rename) with the given mode,
/// so a crash never leaves half a key behind.
pub fn write_private(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    use std::os::unix::fs::OpenOptionsExt;
    let temporary = path.with_extension("tmp");
    let io = |action, source| PkiError::Io {
        action,
        path: path.to_owned(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temporary)
        .map_err(|e| io("create", e))?;
    file.write_all(contents.as_bytes())
        .map_err(|e| io("write", e))?;
    file.sync_all().map_err(|e| io("sync", e))?;
    fs::rename(&temporary, path).map_err(|e| io("rename", e))
}

fn validity(params: &mut CertificateParams, years: i32) {
    let now = jiff::Zoned::now().with_time_zone(jiff::tz::TimeZone::UTC);
    // A day of slack for hosts whose clocks disagree a little.
    params.not_before = rcgen::date_time_ymd(now.year() as i32, now.month() as u8, now.day() as u8)
        - time_offset_one_day();
    params.not_after = rcgen::date_time_ymd(now.year() as i32 + years, now.month() as u8, 1);
}

fn time_offset_one_day() -> std::time::Duration {
    std::time::Duration::from_secs(24 * 3600)
}

fn distinguished_name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    if let Some(organization) = organization {
        name.push(DnType::OrganizationName, organization);
    }
    name
}

/// Loads or creates the CA and returns it as an issuer plus its PEM.
fn load_or_create_ca(dir: &Path) -> Result<(Issuer<'static, KeyPair>, String), PkiError> {
    if let (Some(cert), Some(key)) = (read(&dir.join(CA_CERT))?, read(&dir.join(CA_KEY))?) {
        let key = KeyPair::from_pem(&key)?;
        let issuer = Issuer::from_ca_cert_pem(&cert, key)?;
        return Ok((issuer, cert));
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = distinguished_name("skiff-ca", None);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, 10);
    let cert = params.self_signed(&key)?;
    write_private(&dir.join(CA_KEY), &key.serialize_pem(), 0o600)?;
    write_private(&dir.join(CA_CERT), &cert.pem(), 0o644)?;
    Ok((Issuer::new(params, key), cert.pem()))
}

fn issue(
    issuer: &Issuer<'_, KeyPair>,
    names: Vec<String>,
    common_name: &str,
    organization: Option<&str>,
    usage: ExtendedKeyUsagePurpose,
) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name = distinguished_name(common_name, organization);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    validity(&mut params, 1);
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The PEM of the cluster CA certificate, exactly as stored and as served
/// at `/cacerts`; join tokens carry its SHA-256.
pub fn read_ca_pem(data_dir: &Path) -> Result<String, PkiError> {
    let path = data_dir.join("pki").join(CA_CERT);
    read(&path)?.ok_or_else(|| PkiError::Io {
        action: "read",
        path,
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no cluster CA yet; start skiff-controlplane with this data directory once",
        ),
    })
}

/// Signs a node's certificate signing request with the cluster CA.
///
/// Only the request's public key is used (its signature proves the node
/// holds the private key): subject, SANs and usages are the control
/// plane's, so a node cannot ask for a CA certificate or another identity.
pub fn sign_node_csr(data_dir: &Path, csr_pem: &str, node_name: &str) -> Result<String, PkiError> {
    let dir = data_dir.join("pki");
    let (Some(cert), Some(key)) = (read(&dir.join(CA_CERT))?, read(&dir.join(CA_KEY))?) else {
        return Err(PkiError::Io {
            action: "read",
            path: dir.join(CA_KEY),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "the cluster CA is missing"),
        });
    };
    let issuer = Issuer::from_ca_cert_pem(&cert, KeyPair::from_pem(&key)?)?;
    let mut request =
        rcgen::CertificateSigningRequestParams::from_pem(csr_pem).map_err(PkiError::Request)?;
    let mut params = CertificateParams::default();
    params.distinguished_name =
        distinguished_name(&format!("system:node:{node_name}"), Some("system:nodes"));
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut params, 1);
    request.params = params;
    Ok(request.signed_by(&issuer)?.pem())
}

/// Loads or creates all certificates. `serving_names` are the DNS names
/// and IPs the API must be reachable under.
pub fn ensure(data_dir: &Path, serving_names: &[String]) -> Result<ServerPki, PkiError> {
    let dir = data_dir.join("pki");
    fs::create_dir_all(&dir).map_err(|source| PkiError::Io {
        action: "create",
        path: dir.clone(),
        source,
    })?;
    let (issuer, ca_pem) = load_or_create_ca(&dir)?;

    let wanted_names = serving_names.join("\n");
    let existing = (
        read(&dir.join(SERVING_CERT))?,
        read(&dir.join(SERVING_KEY))?,
        read(&dir.join(SERVING_NAMES))?,
    );
    let (serving_cert_pem, serving_key_pem) = match existing {
        (Some(cert), Some(key), Some(names)) if names == wanted_names => (cert, key),
        _ => {
            tracing::info!(names = %serving_names.join(","), "issuing the API serving certificate");
            let (cert, key) = issue(
                &issuer,
                serving_names.to_vec(),
                "skiff-apiserver",
                None,
                ExtendedKeyUsagePurpose::ServerAuth,
            )?;
            write_private(&dir.join(SERVING_KEY), &key, 0o600)?;
            write_private(&dir.join(SERVING_CERT), &cert, 0o644)?;
            write_private(&dir.join(SERVING_NAMES), &wanted_names, 0o644)?;
            (cert, key)
        }
    };

    if read(&dir.join(ADMIN_CERT))?.is_none() || read(&dir.join(ADMIN_KEY))?.is_none() {
        // system:masters is the group Kubernetes grants full access to; the
        // name keeps audit logs and future RBAC meaningful.
        let (cert, key) = issue(
            &issuer,
            Vec::new(),
            "skiff-admin",
            Some("system:masters"),
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        write_private(&dir.join(ADMIN_KEY), &key, 0o600)?;
        write_private(&dir.join(ADMIN_CERT), &cert, 0o644)?;
    }
    Ok(ServerPki {
        ca_pem,
        serving_cert_pem,
        serving_key_pem,
    })
}

/// Writes `DATA_DIR/admin.kubeconfig` for `server_url`, with the admin
/// client certificate embedded so the file works on its own.
pub fn write_admin_kubeconfig(data_dir: &Path, server_url: &str) -> Result<PathBuf, PkiError> {
    let dir = data_dir.join("pki");
    let encode = |name: &str| -> Result<String, PkiError> {
        let text = read(&dir.join(name))?.unwrap_or_default();
        Ok(base64::engine::general_purpose::STANDARD.encode(text))
    };
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {server_url}\n    certificate-authority-data: {ca}\nusers:\n- name: skiff-admin\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\ncontexts:\n- name: skiff\n  context:\n    cluster: skiff\n    user: skiff-admin\n    namespace: default\ncurrent-context: skiff\npreferences: {{}}\n",
        ca = encode(CA_CERT)?,
        cert = encode(ADMIN_CERT)?,
        key = encode(ADMIN_KEY)?,
    );
    let path = data_dir.join("admin.kubeconfig");
    write_private(&path, &kubeconfig, 0o600)?;
    Ok(path)
}

/// The names the serving certificate covers by default: loopback, the
/// in-cluster service names, and whatever the operator adds.
pub fn default_serving_names(extra: &[String], service_ip: Option<IpAddr>) -> Vec<String> {
    let mut names: Vec<String> = [
        "localhost",
        "127.0.0.1",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
    ]
    .iter()
    .map(|name| name.to_string())
    .collect();
    names.push("kubernetes.default.svc.cluster.local".into());
    if let Some(ip) = service_ip {
        names.push(ip.to_string());
    }
    if let Ok(hostname) = fs::read_to_string("/proc/sys/kernel/hostname") {
        let hostname = hostname.trim();
        if !hostname.is_empty() {
            names.push(hostname.to_owned());
        }
    }
    for name in extra {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_are_created_once_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let names = default_serving_names(&[], None);
        let first = ensure(dir.path(), &names).expect("first");
        let second = ensure(dir.path(), &names).expect("second");
        assert_eq!(first.ca_pem, second.ca_pem);
        assert_eq!(first.serving_cert_pem, second.serving_cert_pem);

        let more = default_serving_names(&["10.1.2.3".into()], None);
        let third = ensure(dir.path(), &more).expect("third");
        assert_eq!(first.ca_pem, third.ca_pem, "the CA survives a SAN change");
        assert_ne!(
            first.serving_cert_pem, third.serving_cert_pem,
            "the serving cert is reissued"
        );

        let kubeconfig =
            write_admin_kubeconfig(dir.path(), "https://127.0.0.1:6443").expect("kubeconfig");
        let text = fs::read_to_string(kubeconfig).expect("read");
        assert!(text.contains("server: https://127.0.0.1:6443"));
        assert!(text.contains("client-key-data: "));
    }

    #[test]
    fn node_certificates_take_only_the_key_from_the_request() {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let dir = tempfile::tempdir().expect("tempdir");
        let server = ensure(dir.path(), &default_serving_names(&[], None)).expect("pki");
        assert_eq!(read_ca_pem(dir.path()).expect("ca"), server.ca_pem);

        // The request asks for a CA certificate under another name.
        let key = KeyPair::generate().expect("key");
        let mut asked = CertificateParams::new(vec!["evil.example".to_owned()]).expect("params");
        asked.distinguished_name = distinguished_name("skiff-admin", Some("system:masters"));
        asked.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let csr = asked
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem");

        let pem = sign_node_csr(dir.path(), &csr, "worker-1").expect("signed");
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
            .map(|der: rustls::pki_types::CertificateDer<'static>| der.to_vec())
            .expect("pem");
        let (_, cert) = X509Certificate::from_der(&der).expect("x509");
        assert_eq!(
            cert.subject().to_string(),
            "CN=system:node:worker-1, O=system:nodes"
        );
        assert!(!cert.is_ca());
        assert!(cert.subject_alternative_name().expect("ext").is_none());
        assert_eq!(
            &*cert.public_key().subject_public_key.data,
            key.public_key_raw()
        );
        assert!(
            cert.extended_key_usage()
                .expect("ext")
                .expect("eku")
                .value
                .client_auth
        );

        assert!(matches!(
            sign_node_csr(dir.path(), "not a request", "worker-1"),
            Err(PkiError::Request(_))
        ));
        let empty = tempfile::tempdir().expect("tempdir");
        assert!(read_ca_pem(empty.path()).is_err());
    }
}
