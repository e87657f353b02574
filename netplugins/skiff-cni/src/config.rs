//! The network configuration on stdin, parsed and validated into
//! [`NetConf`].
//!
//! The runtime hands each plugin of a conflist its own entry, with the list's
//! `cniVersion` and `name` copied in and, for CHECK and DEL (and ADD when a
//! plugin runs before this one), the previous result as `prevResult`. The
//! fields are read one by one from a JSON value rather than through a derived
//! deserializer, so that every complaint names the field it is about.
//! Unknown fields are ignored, as the spec allows.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde_json::{Map, Value};

use crate::invocation::validate_ifname;
use crate::result::{CniResult, PrevResultError};
use crate::version::{CniVersion, SUPPORTED_VERSIONS};

pub const DEFAULT_MTU: u32 = 1500;
pub const DEFAULT_DATA_DIR: &str = "/var/lib/skiff/cni";

/// A validated configuration: everything the plugin does is decided from
/// this and the invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub cni_version: CniVersion,
    /// The network name; also the IPAM directory under `data_dir`.
    pub name: String,
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
    pub hairpin_mode: bool,
    pub data_dir: PathBuf,
    pub prev_result: Option<CniResult>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("the network configuration on stdin is not valid JSON: {0}")]
    NotJson(String),
    #[error("the network configuration on stdin must be a JSON object")]
    NotAnObject,
    #[error("cniVersion {requested:?} is not supported; this plugin supports {supported}")]
    IncompatibleVersion {
        requested: String,
        supported: String,
    },
    #[error("invalid network configuration: field {field:?}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error(transparent)]
    PrevResult(#[from] PrevResultError),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Reads just enough of stdin to know which version to answer in; used for
/// VERSION and for error replies, where stdin may be empty or broken.
pub fn requested_version(stdin: &[u8]) -> Option<CniVersion> {
    let value: Value = serde_json::from_slice(stdin).ok()?;
    CniVersion::parse(value.get("cniVersion")?.as_str()?)
}

pub fn parse_config(stdin: &[u8]) -> Result<NetConf, ConfigError> {
    let value: Value =
        serde_json::from_slice(stdin).map_err(|err| ConfigError::NotJson(err.to_string()))?;
    let object = value.as_object().ok_or(ConfigError::NotAnObject)?;

    let version_text = required_str(object, "cniVersion")?;
    let cni_version =
        CniVersion::parse(version_text).ok_or_else(|| ConfigError::IncompatibleVersion {
            requested: version_text.to_string(),
            supported: SUPPORTED_VERSIONS
                .iter()
                .map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })?;

    let name = required_str(object, "name")?;
    validate_network_name(name)?;

    let bridge = required_str(object, "bridge")?;
    validate_ifname(bridge).map_err(|reason| invalid("bridge", format!("{bridge:?}: {reason}")))?;

    let subnet = parse_subnet(required_str(object, "subnet")?)?;
    let gateway = match optional(object, "gateway") {
        None => first_host(subnet),
        Some(value) => parse_gateway(value, subnet)?,
    };

    let mtu = match optional(object, "mtu") {
        None => DEFAULT_MTU,
        Some(value) => {
            let mtu = value
                .as_u64()
                .ok_or_else(|| invalid("mtu", format!("{value} is not a whole number")))?;
            // 68 is the smallest MTU IPv4 allows; 65535 the largest the
            // kernel takes for a bridge or veth.
            if !(68..=65535).contains(&mtu) {
                return Err(invalid("mtu", format!("{mtu} is outside 68..=65535")));
            }
            mtu as u32
        }
    };

    let hairpin_mode = match optional(object, "hairpinMode") {
        None => true,
        Some(value) => value
            .as_bool()
            .ok_or_else(|| invalid("hairpinMode", format!("{value} is not true or false")))?,
    };

    let data_dir = match optional(object, "dataDir") {
        None => PathBuf::from(DEFAULT_DATA_DIR),
        Some(value) => {
            let text = value
                .as_str()
                .ok_or_else(|| invalid("dataDir", format!("{value} is not a string")))?;
            let path = PathBuf::from(text);
            if !path.is_absolute() {
                return Err(invalid(
                    "dataDir",
                    format!("{text:?} is not an absolute path"),
                ));
            }
            path
        }
    };

    let prev_result = optional(object, "prevResult")
        .map(CniResult::from_prev_result)
        .transpose()?;

    Ok(NetConf {
        cni_version,
        name: name.to_string(),
        bridge: bridge.to_string(),
        subnet,
        gateway,
        mtu,
        hairpin_mode,
        data_dir,
        prev_result,
    })
}

/// A present, non-null field.
fn optional<'a>(object: &'a Map<String, Value>, field: &'static str) -> Option<&'a Value> {
    object.get(field).filter(|value| !value.is_null())
}

fn required_str<'a>(
    object: &'a Map<String, Value>,
    field: &'static str,
) -> Result<&'a str, ConfigError> {
    match optional(object, field) {
        None => Err(invalid(field, "is required")),
        Some(Value::String(text)) => Ok(text),
        Some(other) => Err(invalid(field, format!("{other} is not a string"))),
    }
}

/// The spec's rule for network names; it also keeps the name safe to use
/// as a directory name (no `/`, never `.` or `..`).
fn validate_network_name(name: &str) -> Result<(), ConfigError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(invalid(
            "name",
            format!("{name:?} must start with a letter or digit and hold only letters, digits, '_', '.' and '-'"),
        ))
    }
}

fn parse_subnet(text: &str) -> Result<Ipv4Net, ConfigError> {
    let subnet: Ipv4Net = text.parse().map_err(|_| {
        invalid(
            "subnet",
            format!("{text:?} is not an IPv4 network in CIDR notation (like 10.244.1.0/24)"),
        )
    })?;
    if subnet.network() != subnet.addr() {
        return Err(invalid(
            "subnet",
            format!(
                "{text:?} has host bits set; the network is {}",
                subnet.trunc()
            ),
        ));
    }
    // A /31 or /32 leaves no room for a gateway and a pod.
    if subnet.prefix_len() > 30 {
        return Err(invalid(
            "subnet",
            format!("{text:?} is too small; the prefix must be /30 or shorter"),
        ));
    }
    Ok(subnet)
}

fn parse_gateway(value: &Value, subnet: Ipv4Net) -> Result<Ipv4Addr, ConfigError> {
    let text = value
        .as_str()
        .ok_or_else(|| invalid("gateway", format!("{value} is not a string")))?;
    let gateway: Ipv4Addr = text
        .parse()
        .map_err(|_| invalid("gateway", format!("{text:?} is not an IPv4 address")))?;
    if !subnet.contains(&gateway) {
        return Err(invalid(
            "gateway",
            format!("{gateway} is outside the subnet {subnet}"),
        ));
    }
    if gateway == subnet.network() || gateway == subnet.broadcast() {
        return Err(invalid(
            "gateway",
            format!("{gateway} is the network or broadcast address of {subnet}"),
        ));
    }
    Ok(gateway)
}

fn first_host(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()).saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<NetConf, ConfigError> {
        parse_config(value.to_string().as_bytes())
    }

    fn base() -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": "skiff",
            "type": "skiff-cni",
            "bridge": "skiff0",
            "subnet": "10.244.1.0/24",
        })
    }

    fn with(field: &str, value: Value) -> Value {
        let mut config = base();
        config[field] = value;
        config
    }

    fn field_of(err: ConfigError) -> &'static str {
        match err {
            ConfigError::Invalid { field, .. } => field,
            other => panic!("expected an invalid-field error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_fill_the_optional_fields() {
        let conf = parse(base()).unwrap();
        assert_eq!(conf.gateway, Ipv4Addr::new(10, 244, 1, 1));
        assert_eq!(conf.mtu, 1500);
        assert!(conf.hairpin_mode);
        assert_eq!(conf.data_dir, PathBuf::from("/var/lib/skiff/cni"));
        assert_eq!(conf.prev_result, None);
    }

    #[test]
    fn the_fixed_schema_parses_with_unknown_fields_ignored() {
        let mut config = base();
        config["gateway"] = json!("10.244.1.254");
        config["mtu"] = json!(1450);
        config["hairpinMode"] = json!(false);
        config["dataDir"] = json!("/tmp/x");
        config["somethingElse"] = json!({"a": 1});
        let conf = parse(config).unwrap();
        assert_eq!(conf.gateway, Ipv4Addr::new(10, 244, 1, 254));
        assert_eq!(conf.mtu, 1450);
        assert!(!conf.hairpin_mode);
        assert_eq!(conf.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn every_invalid_field_is_named() {
        let cases = [
            (with("subnet", json!("10.244.1.0")), "subnet"),
            (with("subnet", json!("10.244.1.7/24")), "subnet"),
            (with("subnet", json!("fd00::/64")), "subnet"),
            (with("subnet", json!("10.0.0.0/31")), "subnet"),
            (with("subnet", json!(24)), "subnet"),
            (with("gateway", json!("10.244.2.1")), "gateway"),
            (with("gateway", json!("10.244.1.0")), "gateway"),
            (with("gateway", json!("10.244.1.255")), "gateway"),
            (with("gateway", json!("nope")), "gateway"),
            (with("mtu", json!(9_000_000)), "mtu"),
            (with("mtu", json!("1450")), "mtu"),
            (with("mtu", json!(14.5)), "mtu"),
            (with("hairpinMode", json!("yes")), "hairpinMode"),
            (with("dataDir", json!("relative/dir")), "dataDir"),
            (with("bridge", json!("much-too-long-name")), "bridge"),
            (with("bridge", json!(null)), "bridge"),
            (with("name", json!("../etc")), "name"),
            (with("name", json!("")), "name"),
        ];
        for (config, expected) in cases {
            let err = parse(config.clone()).expect_err(&config.to_string());
            let message = err.to_string();
            assert_eq!(field_of(err), expected, "{config}");
            assert!(message.contains(expected), "{message}");
        }
    }

    #[test]
    fn versions_and_decoding_errors_are_distinct() {
        assert!(matches!(
            parse(with("cniVersion", json!("0.2.0"))),
            Err(ConfigError::IncompatibleVersion { .. })
        ));
        assert!(matches!(
            parse_config(b"{not json"),
            Err(ConfigError::NotJson(_))
        ));
        assert!(matches!(
            parse_config(b"[1, 2]"),
            Err(ConfigError::NotAnObject)
        ));
        assert_eq!(
            requested_version(br#"{"cniVersion":"0.4.0"}"#),
            Some(CniVersion::V0_4_0)
        );
        assert_eq!(requested_version(b""), None);
    }

    #[test]
    fn prev_result_is_parsed_when_present() {
        let config = with(
            "prevResult",
            json!({
                "cniVersion": "1.0.0",
                "interfaces": [{"name": "eth0", "mac": "0a:58:0a:f4:01:05", "sandbox": "/run/netns/a"}],
                "ips": [{"address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 0}],
            }),
        );
        let conf = parse(config).unwrap();
        let prev = conf.prev_result.unwrap();
        assert_eq!(prev.interfaces[0].name, "eth0");
        assert_eq!(prev.ips[0].address.to_string(), "10.244.1.5/24");
        assert!(matches!(
            parse(with("prevResult", json!({"ips": [{"address": "bogus"}]}))),
            Err(ConfigError::PrevResult(_))
        ));
    }
}
