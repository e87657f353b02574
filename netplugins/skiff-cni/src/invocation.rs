//! The CNI invocation: the `CNI_*` environment variables a runtime sets
//! before it executes the plugin, parsed into a plain command.
//!
//! Only the variables a command needs are required: `VERSION` needs none,
//! `DEL` may come without `CNI_NETNS` (the namespace may already be gone),
//! `ADD` and `CHECK` need all three of `CNI_CONTAINERID`, `CNI_NETNS` and
//! `CNI_IFNAME`. `CNI_ARGS` and `CNI_PATH` are accepted and unused: this
//! plugin delegates to no other plugin and takes no per-container arguments.

use std::path::PathBuf;

/// Which verb the runtime asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Add,
    Del,
    Check,
    Version,
}

/// The container attachment a verb works on: the spec's primary key is
/// `(network name, container id, ifname)`; the network name comes from the
/// configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
    /// `None` only for a `DEL` whose runtime no longer has a namespace.
    pub netns: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    Add(Attachment),
    Del(Attachment),
    Check(Attachment),
    Version,
}

impl Invocation {
    pub fn verb(&self) -> Verb {
        match self {
            Invocation::Add(_) => Verb::Add,
            Invocation::Del(_) => Verb::Del,
            Invocation::Check(_) => Verb::Check,
            Invocation::Version => Verb::Version,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvocationError {
    #[error("CNI_COMMAND is not set; expected one of ADD, DEL, CHECK, VERSION")]
    MissingCommand,
    #[error("CNI_COMMAND={0:?} is not a CNI command; expected one of ADD, DEL, CHECK, VERSION")]
    UnknownCommand(String),
    #[error("{0} is required for this command but is not set")]
    Missing(&'static str),
    #[error("{var}={value:?} is invalid: {reason}")]
    Invalid {
        var: &'static str,
        value: String,
        reason: &'static str,
    },
}

/// Parses the invocation from an environment lookup (`std::env::var` in the
/// binary, a map in tests).
pub fn parse_invocation(
    env: impl Fn(&str) -> Option<String>,
) -> Result<Invocation, InvocationError> {
    let command = env("CNI_COMMAND").ok_or(InvocationError::MissingCommand)?;
    let verb = match command.as_str() {
        "ADD" => Verb::Add,
        "DEL" => Verb::Del,
        "CHECK" => Verb::Check,
        "VERSION" => return Ok(Invocation::Version),
        _ => return Err(InvocationError::UnknownCommand(command)),
    };
    let non_empty = |var: &'static str| env(var).filter(|value| !value.is_empty());

    let container_id =
        non_empty("CNI_CONTAINERID").ok_or(InvocationError::Missing("CNI_CONTAINERID"))?;
    validate_container_id(&container_id)?;
    let ifname = non_empty("CNI_IFNAME").ok_or(InvocationError::Missing("CNI_IFNAME"))?;
    if let Err(reason) = validate_ifname(&ifname) {
        return Err(InvocationError::Invalid {
            var: "CNI_IFNAME",
            value: ifname,
            reason,
        });
    }
    let netns = non_empty("CNI_NETNS").map(PathBuf::from);
    if netns.is_none() && verb != Verb::Del {
        return Err(InvocationError::Missing("CNI_NETNS"));
    }
    let attachment = Attachment {
        container_id,
        ifname,
        netns,
    };
    Ok(match verb {
        Verb::Add => Invocation::Add(attachment),
        Verb::Del => Invocation::Del(attachment),
        Verb::Check => Invocation::Check(attachment),
        Verb::Version => Invocation::Version,
    })
}

/// The spec's rule: an alphanumeric first character, then alphanumerics,
/// `_`, `.` or `-`.
fn validate_container_id(id: &str) -> Result<(), InvocationError> {
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(InvocationError::Invalid {
            var: "CNI_CONTAINERID",
            value: id.to_string(),
            reason:
                "must start with a letter or digit and hold only letters, digits, '_', '.' and '-'",
        })
    }
}

/// Linux interface name rules, as the spec restates them: not empty, not
/// `.` or `..`, shorter than 16 bytes, no `/`, `:` or whitespace.
pub fn validate_ifname(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("an interface name must not be empty");
    }
    if name == "." || name == ".." {
        return Err("an interface name must not be \".\" or \"..\"");
    }
    if name.len() > 15 {
        return Err("an interface name must be at most 15 bytes long");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err("an interface name must not contain '/', ':' or whitespace");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<Invocation, InvocationError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse_invocation(|key| map.get(key).cloned())
    }

    #[test]
    fn add_needs_all_three_variables() {
        let full = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_NETNS", "/run/netns/pod"),
            ("CNI_IFNAME", "eth0"),
        ];
        assert_eq!(
            parse(&full),
            Ok(Invocation::Add(Attachment {
                container_id: "abc123".into(),
                ifname: "eth0".into(),
                netns: Some("/run/netns/pod".into()),
            }))
        );
        assert_eq!(
            parse(&full[..3]),
            Err(InvocationError::Missing("CNI_IFNAME"))
        );
        assert_eq!(
            parse(&[full[0], full[1], full[3]]),
            Err(InvocationError::Missing("CNI_NETNS"))
        );
    }

    #[test]
    fn del_accepts_a_missing_netns() {
        let parsed = parse(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
        ]);
        assert!(matches!(
            parsed,
            Ok(Invocation::Del(Attachment { netns: None, .. }))
        ));
    }

    #[test]
    fn unknown_and_missing_commands_are_named() {
        assert_eq!(parse(&[]), Err(InvocationError::MissingCommand));
        let err = parse(&[("CNI_COMMAND", "FROB")]).unwrap_err();
        assert!(err.to_string().contains("CNI_COMMAND=\"FROB\""), "{err}");
        assert_eq!(
            parse(&[("CNI_COMMAND", "VERSION")]),
            Ok(Invocation::Version)
        );
    }

    #[test]
    fn bad_container_ids_and_ifnames_are_rejected() {
        let base = |id: &'static str, ifname: &'static str| {
            parse(&[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", id),
                ("CNI_NETNS", "/x"),
                ("CNI_IFNAME", ifname),
            ])
        };
        assert!(matches!(
            base("-abc", "eth0"),
            Err(InvocationError::Invalid {
                var: "CNI_CONTAINERID",
                ..
            })
        ));
        assert!(matches!(
            base("a/b", "eth0"),
            Err(InvocationError::Invalid {
                var: "CNI_CONTAINERID",
                ..
            })
        ));
        for bad in ["..", "a/b", "a:b", "a b", "sixteen-chars-xx"] {
            assert!(
                matches!(
                    base("abc", bad),
                    Err(InvocationError::Invalid {
                        var: "CNI_IFNAME",
                        ..
                    })
                ),
                "{bad}"
            );
        }
        assert!(base("a.b_c-1", "fifteen-chars-x").is_ok());
    }
}
