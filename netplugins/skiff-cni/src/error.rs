//! Every failure of the plugin, and the one place where failures become CNI
//! error codes and the error JSON the runtime reads from stdout.
//!
//! Codes 1–99 are the spec's well-known ones and are used only with their
//! meaning; this plugin's own codes start at 100.

use serde_json::{json, Value};

use crate::config::ConfigError;
use crate::dataplane::DataplaneError;
use crate::invocation::InvocationError;
use crate::ipam::IpamError;
use crate::ipam_store::StoreError;
use crate::plan::CheckError;
use crate::version::CniVersion;

pub const CODE_INCOMPATIBLE_VERSION: u32 = 1;
pub const CODE_CONTAINER_UNKNOWN: u32 = 3;
pub const CODE_INVALID_ENVIRONMENT: u32 = 4;
pub const CODE_IO_FAILURE: u32 = 5;
pub const CODE_DECODE_FAILURE: u32 = 6;
pub const CODE_INVALID_CONFIG: u32 = 7;
/// Netlink or another kernel call failed while setting up or tearing down.
pub const CODE_NETWORK_SETUP_FAILED: u32 = 100;
/// ADD found the interface already in the namespace.
pub const CODE_INTERFACE_EXISTS: u32 = 101;
/// No free address in the subnet.
pub const CODE_ADDRESSES_EXHAUSTED: u32 = 102;
/// CHECK found the attachment different from `prevResult`.
pub const CODE_CHECK_FAILED: u32 = 103;

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error(transparent)]
    Invocation(#[from] InvocationError),
    #[error("cannot read the network configuration from stdin: {0}")]
    Stdin(#[source] std::io::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("CHECK needs cniVersion 0.4.0 or later; the configuration says {0}")]
    CheckUnsupported(&'static str),
    #[error("CHECK needs prevResult in the network configuration")]
    CheckWithoutPrevResult,
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error("IPAM store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error("CHECK failed: {0}")]
    Check(#[from] CheckError),
}

impl PluginError {
    pub fn code(&self) -> u32 {
        match self {
            PluginError::Invocation(_) => CODE_INVALID_ENVIRONMENT,
            PluginError::Stdin(_) => CODE_IO_FAILURE,
            PluginError::Config(
                ConfigError::NotJson(_) | ConfigError::NotAnObject | ConfigError::PrevResult(_),
            ) => CODE_DECODE_FAILURE,
            PluginError::Config(ConfigError::IncompatibleVersion { .. }) => {
                CODE_INCOMPATIBLE_VERSION
            }
            PluginError::Config(ConfigError::Invalid { .. }) => CODE_INVALID_CONFIG,
            PluginError::CheckUnsupported(_) => CODE_INCOMPATIBLE_VERSION,
            PluginError::CheckWithoutPrevResult => CODE_INVALID_CONFIG,
            PluginError::Ipam(IpamError::Exhausted { .. }) => CODE_ADDRESSES_EXHAUSTED,
            PluginError::Store(_) => CODE_IO_FAILURE,
            PluginError::Dataplane(DataplaneError::NetnsMissing(_)) => CODE_CONTAINER_UNKNOWN,
            PluginError::Dataplane(DataplaneError::InterfaceExists { .. }) => CODE_INTERFACE_EXISTS,
            PluginError::Dataplane(_) => CODE_NETWORK_SETUP_FAILED,
            PluginError::Check(_) => CODE_CHECK_FAILED,
        }
    }

    /// A short message for `msg`; the full chain goes to `details`.
    fn summary(&self) -> &'static str {
        match self.code() {
            CODE_INCOMPATIBLE_VERSION => "incompatible CNI version",
            CODE_CONTAINER_UNKNOWN => "container unknown or does not exist",
            CODE_INVALID_ENVIRONMENT => "invalid environment variables",
            CODE_IO_FAILURE => "I/O failure",
            CODE_DECODE_FAILURE => "failed to decode content",
            CODE_INVALID_CONFIG => "invalid network configuration",
            CODE_INTERFACE_EXISTS => "interface already exists",
            CODE_ADDRESSES_EXHAUSTED => "no free address",
            CODE_CHECK_FAILED => "check failed",
            _ => "network setup failed",
        }
    }

    /// The spec's error object. `msg` leads with the cause itself, since
    /// runtimes often log only `msg`.
    pub fn to_json(&self, version: Option<CniVersion>) -> Value {
        let mut details = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !details.contains(&text) {
                details.push_str(": ");
                details.push_str(&text);
            }
            source = cause.source();
        }
        json!({
            "cniVersion": version.unwrap_or(CniVersion::LATEST).as_str(),
            "code": self.code(),
            "msg": format!("{}: {}", self.summary(), self),
            "details": details,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_the_well_known_codes() {
        let decode = PluginError::from(crate::config::parse_config(b"nope").unwrap_err());
        assert_eq!(decode.code(), 6);
        let invalid = PluginError::from(
            crate::config::parse_config(
                br#"{"cniVersion":"1.0.0","name":"n","bridge":"b","subnet":"x"}"#,
            )
            .unwrap_err(),
        );
        assert_eq!(invalid.code(), 7);
        let version = PluginError::from(
            crate::config::parse_config(
                br#"{"cniVersion":"0.1.0","name":"n","bridge":"b","subnet":"10.0.0.0/24"}"#,
            )
            .unwrap_err(),
        );
        assert_eq!(version.code(), 1);
        assert_eq!(PluginError::from(InvocationError::MissingCommand).code(), 4);
        assert_eq!(
            PluginError::from(DataplaneError::NetnsMissing("/run/netns/x".into())).code(),
            3
        );
    }

    #[test]
    fn error_json_has_the_spec_fields() {
        let err = PluginError::from(InvocationError::UnknownCommand("FROB".into()));
        let value = err.to_json(Some(CniVersion::V0_4_0));
        assert_eq!(value["cniVersion"], "0.4.0");
        assert_eq!(value["code"], 4);
        let msg = value["msg"].as_str().unwrap();
        assert!(msg.contains("CNI_COMMAND") && msg.contains("FROB"), "{msg}");
        assert!(value["details"].is_string());
        assert_eq!(
            PluginError::CheckWithoutPrevResult.to_json(None)["cniVersion"],
            "1.0.0"
        );
    }

    #[test]
    fn details_include_the_source_chain() {
        let err = PluginError::from(DataplaneError::Io {
            operation: "turn on net.ipv4.ip_forward",
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        });
        let details = err.to_json(None)["details"].as_str().unwrap().to_string();
        assert!(details.contains("ip_forward"), "{details}");
        assert!(
            details.to_lowercase().contains("permission denied"),
            "{details}"
        );
    }
}
