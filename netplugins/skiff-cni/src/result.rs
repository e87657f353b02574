//! The CNI result: what ADD prints, what CHECK and DEL get back as
//! `prevResult`, rendered in the shape of the requested spec version.
//!
//! One model serves every version; only rendering differs (0.3.x and 0.4.0
//! put `"version": "4"` on each address, 1.0.0 does not). Parsing a
//! `prevResult` is lenient about that field and about unknown fields, since
//! it may come from any version or from an earlier plugin in the chain.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::version::CniVersion;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default)]
    pub mac: Option<String>,
    /// The namespace path for an interface inside a sandbox; absent for
    /// host interfaces.
    #[serde(default)]
    pub sandbox: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IpConfig {
    pub address: IpNet,
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default)]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default)]
    pub gw: Option<IpAddr>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct CniResult {
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Passed through untouched; this plugin sets no DNS of its own.
    #[serde(default)]
    pub dns: Option<Value>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("prevResult cannot be decoded: {0}")]
pub struct PrevResultError(String);

impl CniResult {
    pub fn from_prev_result(value: &Value) -> Result<CniResult, PrevResultError> {
        let result =
            CniResult::deserialize(value).map_err(|err| PrevResultError(err.to_string()))?;
        for ip in &result.ips {
            if let Some(index) = ip.interface {
                if index >= result.interfaces.len() {
                    return Err(PrevResultError(format!(
                        "ips entry {} points at interface {index}, but there are only {} interfaces",
                        ip.address,
                        result.interfaces.len()
                    )));
                }
            }
        }
        Ok(result)
    }

    /// This plugin's result appended to what earlier plugins in the chain
    /// returned: their interfaces keep their indexes, ours are shifted.
    pub fn appended_to(self, previous: Option<CniResult>) -> CniResult {
        let Some(mut merged) = previous else {
            return self;
        };
        let offset = merged.interfaces.len();
        merged.interfaces.extend(self.interfaces);
        merged.ips.extend(self.ips.into_iter().map(|ip| IpConfig {
            interface: ip.interface.map(|index| index + offset),
            ..ip
        }));
        merged.routes.extend(self.routes);
        if merged.dns.is_none() {
            merged.dns = self.dns;
        }
        merged
    }

    pub fn render(&self, version: CniVersion) -> Value {
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|interface| {
                let mut entry = Map::new();
                entry.insert("name".into(), json!(interface.name));
                if let Some(mac) = &interface.mac {
                    entry.insert("mac".into(), json!(mac));
                }
                if let Some(sandbox) = &interface.sandbox {
                    entry.insert("sandbox".into(), json!(sandbox));
                }
                Value::Object(entry)
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut entry = Map::new();
                if version.ips_carry_version() {
                    let family = if ip.address.addr().is_ipv4() {
                        "4"
                    } else {
                        "6"
                    };
                    entry.insert("version".into(), json!(family));
                }
                entry.insert("address".into(), json!(ip.address.to_string()));
                if let Some(gateway) = ip.gateway {
                    entry.insert("gateway".into(), json!(gateway.to_string()));
                }
                if let Some(index) = ip.interface {
                    entry.insert("interface".into(), json!(index));
                }
                Value::Object(entry)
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|route| match route.gw {
                Some(gw) => json!({"dst": route.dst.to_string(), "gw": gw.to_string()}),
                None => json!({"dst": route.dst.to_string()}),
            })
            .collect();
        json!({
            "cniVersion": version.as_str(),
            "interfaces": interfaces,
            "ips": ips,
            "routes": routes,
            "dns": self.dns.clone().unwrap_or_else(|| json!({})),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn sample() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "skiff0".into(),
                    mac: Some("0a:58:0a:f4:01:01".into()),
                    sandbox: None,
                },
                Interface {
                    name: "veth0011aabb".into(),
                    mac: Some("aa:bb:cc:dd:ee:ff".into()),
                    sandbox: None,
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("0a:58:0a:f4:01:05".into()),
                    sandbox: Some("/run/netns/pod".into()),
                },
            ],
            ips: vec![IpConfig {
                address: "10.244.1.5/24".parse().unwrap(),
                gateway: Some("10.244.1.1".parse().unwrap()),
                interface: Some(2),
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some("10.244.1.1".parse().unwrap()),
            }],
            dns: None,
        }
    }

    #[test]
    fn renders_the_1_0_0_shape() {
        assert_eq!(
            sample().render(CniVersion::V1_0_0),
            json!({
                "cniVersion": "1.0.0",
                "interfaces": [
                    {"name": "skiff0", "mac": "0a:58:0a:f4:01:01"},
                    {"name": "veth0011aabb", "mac": "aa:bb:cc:dd:ee:ff"},
                    {"name": "eth0", "mac": "0a:58:0a:f4:01:05", "sandbox": "/run/netns/pod"},
                ],
                "ips": [{"address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 2}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}],
                "dns": {},
            })
        );
    }

    #[test]
    fn renders_the_0_4_0_shape_with_address_versions() {
        let rendered = sample().render(CniVersion::V0_4_0);
        assert_eq!(rendered["cniVersion"], "0.4.0");
        assert_eq!(
            rendered["ips"],
            json!([{"version": "4", "address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 2}])
        );
    }

    #[test]
    fn a_rendered_result_parses_back_as_prev_result() {
        for version in crate::version::SUPPORTED_VERSIONS {
            let parsed = CniResult::from_prev_result(&sample().render(version)).unwrap();
            assert_eq!(parsed.interfaces, sample().interfaces);
            assert_eq!(parsed.ips, sample().ips);
            assert_eq!(parsed.routes, sample().routes);
        }
    }

    #[test]
    fn prev_result_with_a_dangling_interface_index_is_rejected() {
        let value = json!({"interfaces": [], "ips": [{"address": "10.0.0.2/24", "interface": 3}]});
        assert!(CniResult::from_prev_result(&value).is_err());
    }

    #[test]
    fn appending_shifts_our_interface_indexes_past_earlier_ones() {
        let earlier = CniResult {
            interfaces: vec![Interface {
                name: "lo".into(),
                mac: None,
                sandbox: Some("/run/netns/pod".into()),
            }],
            dns: Some(json!({"nameservers": ["10.96.0.10"]})),
            ..CniResult::default()
        };
        let merged = sample().appended_to(Some(earlier));
        assert_eq!(merged.interfaces.len(), 4);
        assert_eq!(merged.ips[0].interface, Some(3));
        assert_eq!(merged.dns, Some(json!({"nameservers": ["10.96.0.10"]})));
        assert_eq!(sample().appended_to(None), sample());
    }
}
