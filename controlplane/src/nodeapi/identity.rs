//! Who is on the other end of a `Connect` stream.
//!
//! The TLS layer has already checked that the client certificate chains to
//! the cluster CA; this module only reads the identity out of it. A node's
//! certificate, as `Join` issues it, names `CN=system:node:<name>` in
//! `O=system:nodes` (Kubernetes' convention for kubelets). Any other
//! certificate the CA signed (the admin's, say) is not a node.

use skiff_apimachinery::names;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The common-name prefix of node certificates.
pub const NODE_CN_PREFIX: &str = "system:node:";
/// The organization every node certificate carries.
pub const NODES_GROUP: &str = "system:nodes";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("a node client certificate is required: join the cluster first to get one")]
    NoCertificate,
    #[error("the client certificate cannot be parsed")]
    Unparsable,
    #[error("the client certificate ({subject}) is not a node certificate: it must name CN=system:node:<name>, O=system:nodes")]
    NotANode { subject: String },
}

/// The node name a verified client certificate (DER) stands for.
pub fn node_name(der: &[u8]) -> Result<String, IdentityError> {
    let (_, certificate) = X509Certificate::from_der(der).map_err(|_| IdentityError::Unparsable)?;
    let subject = certificate.subject();
    let not_a_node = || IdentityError::NotANode {
        subject: subject.to_string(),
    };
    let mut common_names = subject.iter_common_name();
    let common_name = common_names
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(not_a_node)?;
    if common_names.next().is_some() {
        return Err(not_a_node());
    }
    let in_nodes_group = subject
        .iter_organization()
        .any(|o| o.as_str().ok() == Some(NODES_GROUP));
    let name = common_name
        .strip_prefix(NODE_CN_PREFIX)
        .filter(|name| in_nodes_group && names::is_dns1123_subdomain(name).is_empty())
        .ok_or_else(not_a_node)?;
    Ok(name.to_owned())
}

/// The node name of the first certificate of a verified peer chain.
pub fn node_name_of_chain<C: AsRef<[u8]>>(chain: Option<&[C]>) -> Result<String, IdentityError> {
    match chain.and_then(<[C]>::first) {
        Some(leaf) => node_name(leaf.as_ref()),
        None => Err(IdentityError::NoCertificate),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    fn certificate(common_name: &str, organization: Option<&str>) -> Vec<u8> {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, common_name);
        if let Some(organization) = organization {
            name.push(DnType::OrganizationName, organization);
        }
        params.distinguished_name = name;
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn node_certificates_name_their_node() {
        let der = certificate("system:node:worker-1.example", Some("system:nodes"));
        assert_eq!(node_name(&der), Ok("worker-1.example".to_owned()));
        assert_eq!(
            node_name_of_chain(Some(&[der][..])),
            Ok("worker-1.example".to_owned())
        );
    }

    #[test]
    fn other_certificates_are_not_nodes() {
        for (cn, o) in [
            ("skiff-admin", Some("system:masters")),
            ("system:node:worker-1", None),
            ("system:node:worker-1", Some("system:masters")),
            ("system:node:", Some("system:nodes")),
            ("system:node:Worker_1", Some("system:nodes")),
        ] {
            let error = node_name(&certificate(cn, o)).expect_err(cn);
            assert!(
                matches!(error, IdentityError::NotANode { .. }),
                "{cn}: {error}"
            );
        }
        assert_eq!(node_name(b"not DER"), Err(IdentityError::Unparsable));
        assert_eq!(
            node_name_of_chain::<Vec<u8>>(None),
            Err(IdentityError::NoCertificate)
        );
    }
}
