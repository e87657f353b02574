//! The CNI spec versions this plugin speaks, and the `VERSION` reply.
//!
//! 0.3.0, 0.3.1 and 0.4.0 share one result shape (each `ips` entry carries a
//! `version` field); 1.0.0 drops that field. CHECK exists from 0.4.0 on.

use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CniVersion {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
}

pub const SUPPORTED_VERSIONS: [CniVersion; 4] = [
    CniVersion::V0_3_0,
    CniVersion::V0_3_1,
    CniVersion::V0_4_0,
    CniVersion::V1_0_0,
];

impl CniVersion {
    pub const LATEST: CniVersion = CniVersion::V1_0_0;

    pub fn parse(text: &str) -> Option<CniVersion> {
        SUPPORTED_VERSIONS
            .into_iter()
            .find(|version| version.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
        }
    }

    /// Whether results carry the per-address `version` field.
    pub fn ips_carry_version(self) -> bool {
        self < CniVersion::V1_0_0
    }

    pub fn has_check(self) -> bool {
        self >= CniVersion::V0_4_0
    }
}

/// The `VERSION` reply, in the version the caller asked in (or the latest).
pub fn version_reply(requested: Option<CniVersion>) -> Value {
    let supported: Vec<&str> = SUPPORTED_VERSIONS.iter().map(|v| v.as_str()).collect();
    json!({
        "cniVersion": requested.unwrap_or(CniVersion::LATEST).as_str(),
        "supportedVersions": supported,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_round_trip_and_unknown_ones_do_not_parse() {
        for version in SUPPORTED_VERSIONS {
            assert_eq!(CniVersion::parse(version.as_str()), Some(version));
        }
        assert_eq!(CniVersion::parse("0.2.0"), None);
        assert_eq!(CniVersion::parse("1.1.0"), None);
        assert!(!CniVersion::V0_3_1.has_check());
        assert!(CniVersion::V0_4_0.ips_carry_version());
        assert!(!CniVersion::V1_0_0.ips_carry_version());
    }

    #[test]
    fn version_reply_lists_every_supported_version() {
        let reply = version_reply(None);
        assert_eq!(reply["cniVersion"], "1.0.0");
        assert_eq!(
            reply["supportedVersions"],
            json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0"])
        );
        assert_eq!(
            version_reply(Some(CniVersion::V0_4_0))["cniVersion"],
            "0.4.0"
        );
    }
}
