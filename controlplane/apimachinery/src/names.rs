//! Kubernetes name, label-key and label-value syntax checks.
//!
//! Mirrors `k8s.io/apimachinery/pkg/util/validation`: every check returns the
//! list of problems it found (empty when the input is valid), worded exactly
//! as the Kubernetes API server words them, because clients and conformance
//! tests compare these strings. The character classes are checked by hand;
//! the regular expressions quoted inside the messages are Kubernetes' own and
//! exist only so the text matches.

use serde_json::{Map, Value};

/// Longest RFC 1123 label (object names of most namespaced kinds).
pub const DNS1123_LABEL_MAX_LENGTH: usize = 63;
/// Longest RFC 1123 subdomain (object names, label-key prefixes).
pub const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;
/// Longest RFC 1035 label (Service names).
pub const DNS1035_LABEL_MAX_LENGTH: usize = 63;
/// Longest name part of a qualified name (label and annotation keys).
pub const QUALIFIED_NAME_MAX_LENGTH: usize = 63;
/// Longest label value.
pub const LABEL_VALUE_MAX_LENGTH: usize = 63;
/// Combined byte size allowed for all annotation keys and values of one object.
pub const TOTAL_ANNOTATION_SIZE_LIMIT_B: usize = 256 * 1024;

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_ERR_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";

const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_ERR_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";

const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const DNS1035_LABEL_ERR_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";

const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const QUALIFIED_NAME_EXAMPLES: &[&str] = &["MyName", "my.name", "123-abc"];

const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_ERR_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

/// Kubernetes' "string too long" explanation.
pub fn max_len_error(length: usize) -> String {
    format!("must be no more than {length} characters")
}

/// Kubernetes' explanation for a string that does not match a pattern.
///
/// The doubled space before each "or" is part of Kubernetes' wording (each
/// example is followed by ", " and then " or "), so it is reproduced here.
pub fn regex_error(msg: &str, pattern: &str, examples: &[&str]) -> String {
    let mut out = String::from(msg);
    if examples.is_empty() {
        out.push_str(" (regex used for validation is '");
    } else {
        out.push_str(" (e.g. ");
        for (i, example) in examples.iter().enumerate() {
            if i > 0 {
                out.push_str(" or ");
            }
            out.push('\'');
            out.push_str(example);
            out.push_str("', ");
        }
        out.push_str("regex used for validation is '");
    }
    out.push_str(pattern);
    out.push_str("')");
    out
}

/// Kubernetes' "must not be empty" explanation.
pub fn empty_error() -> &'static str {
    "must be non-empty"
}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?` over the whole string.
fn matches_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(&first), Some(&last)) => {
            is_lower_alnum(first)
                && is_lower_alnum(last)
                && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
        }
        _ => false,
    }
}

/// Dot-separated RFC 1123 labels; an empty string or an empty label fails.
fn matches_dns1123_subdomain(s: &str) -> bool {
    s.split('.').all(matches_dns1123_label)
}

/// `[a-z]([-a-z0-9]*[a-z0-9])?` over the whole string.
fn matches_dns1035_label(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(&first), Some(&last)) => {
            first.is_ascii_lowercase()
                && is_lower_alnum(last)
                && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
        }
        _ => false,
    }
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]` over the whole string.
fn matches_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(&first), Some(&last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter()
                    .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// Checks an RFC 1123 label, e.g. a Namespace or Pod name component.
pub fn is_dns1123_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !matches_dns1123_label(value) {
        if matches_dns1123_subdomain(value) {
            // A valid subdomain that is not a valid label can only differ by
            // its dots, so Kubernetes names that specific problem.
            errs.push("must not contain dots".to_string());
        } else {
            errs.push(regex_error(
                DNS1123_LABEL_ERR_MSG,
                DNS1123_LABEL_FMT,
                &["my-name", "123-abc"],
            ));
        }
    }
    errs
}

/// Checks an RFC 1123 subdomain, the rule for most object names.
pub fn is_dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    if !matches_dns1123_subdomain(value) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_ERR_MSG,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

/// Checks an RFC 1035 label, the rule for Service names.
pub fn is_dns1035_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1035_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1035_LABEL_MAX_LENGTH));
    }
    if !matches_dns1035_label(value) {
        errs.push(regex_error(
            DNS1035_LABEL_ERR_MSG,
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

/// Checks a "qualified name": an optional DNS-subdomain prefix and `/`, then
/// a name part. This is the rule for label keys and (lower-cased) annotation
/// keys.
pub fn is_qualified_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push(format!("prefix part {}", empty_error()));
            } else {
                errs.extend(
                    is_dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|msg| format!("prefix part {msg}")),
                );
            }
            *name
        }
        _ => {
            // More than one '/' leaves no sensible split, so Kubernetes
            // reports a single message describing the whole format.
            return vec![format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_ERR_MSG, QUALIFIED_NAME_FMT, QUALIFIED_NAME_EXAMPLES)
            )];
        }
    };

    if name.is_empty() {
        errs.push(format!("name part {}", empty_error()));
    } else if name.len() > QUALIFIED_NAME_MAX_LENGTH {
        errs.push(format!(
            "name part {}",
            max_len_error(QUALIFIED_NAME_MAX_LENGTH)
        ));
    }
    if !matches_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_ERR_MSG,
                QUALIFIED_NAME_FMT,
                QUALIFIED_NAME_EXAMPLES
            )
        ));
    }
    errs
}

/// Checks a label value; the empty string is a valid value.
pub fn is_valid_label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > LABEL_VALUE_MAX_LENGTH {
        errs.push(max_len_error(LABEL_VALUE_MAX_LENGTH));
    }
    if !value.is_empty() && !matches_qualified_name_part(value) {
        errs.push(regex_error(
            LABEL_VALUE_ERR_MSG,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// Checks that an object's annotations (its `metadata.annotations` map) stay
/// within Kubernetes' 256 KiB budget, counting the bytes of every key and
/// value. The error text is the one Kubernetes' `ValidateAnnotationsSize`
/// produces; object validation reports it as a "Too long" field error.
pub fn validate_annotations_size(annotations: &Map<String, Value>) -> Result<(), String> {
    let total: usize = annotations
        .iter()
        .map(|(key, value)| {
            let value_len = match value {
                Value::String(s) => s.len(),
                Value::Null => 0,
                // Annotations are strings in every valid object; anything else
                // is charged at its JSON size so it cannot dodge the limit.
                other => other.to_string().len(),
            };
            key.len() + value_len
        })
        .sum();
    if total > TOTAL_ANNOTATION_SIZE_LIMIT_B {
        return Err(format!(
            "annotations size {total} is larger than limit {TOTAL_ANNOTATION_SIZE_LIMIT_B}"
        ));
    }
    Ok(())
}

/// Quotes a string the way Go's `%q` verb does, which is how Kubernetes
/// renders offending values inside "Invalid value" field errors.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
    const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
    const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
    const NAME_PART_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
    const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

    #[test]
    fn regex_error_formats() {
        assert_eq!(
            regex_error("bad", "x+", &[]),
            "bad (regex used for validation is 'x+')"
        );
        assert_eq!(
            regex_error("bad", "x+", &["x", "xx"]),
            "bad (e.g. 'x',  or 'xx', regex used for validation is 'x+')"
        );
    }

    #[test]
    fn dns1123_label_valid() {
        for ok in [
            "a",
            "0",
            "ab",
            "a-b",
            "a--b",
            "0-9",
            "abc-123",
            &"a".repeat(63),
        ] {
            assert!(is_dns1123_label(ok).is_empty(), "{ok:?} should be valid");
        }
    }

    #[test]
    fn dns1123_label_invalid() {
        for bad in [
            "", "-", "-a", "a-", "A", "aB", "a_b", "a b", "é", "a/b", "a.", ".a",
        ] {
            assert_eq!(
                is_dns1123_label(bad),
                vec![LABEL_MSG.to_string()],
                "{bad:?}"
            );
        }
        assert_eq!(is_dns1123_label("a.b"), vec!["must not contain dots"]);
        assert_eq!(
            is_dns1123_label(&"a".repeat(64)),
            vec!["must be no more than 63 characters"]
        );
        assert_eq!(
            is_dns1123_label(&format!("{}-", "a".repeat(64))),
            vec![
                "must be no more than 63 characters".to_string(),
                LABEL_MSG.to_string()
            ]
        );
    }

    #[test]
    fn dns1123_subdomain_valid() {
        let long = format!("{}.{}", "a".repeat(126), "b".repeat(126));
        assert_eq!(long.len(), 253);
        for ok in [
            "a",
            "example.com",
            "a.b.c",
            "0.1",
            "a-b.c-d",
            "x--y.z",
            &long,
        ] {
            assert!(
                is_dns1123_subdomain(ok).is_empty(),
                "{ok:?} should be valid"
            );
        }
    }

    #[test]
    fn dns1123_subdomain_invalid() {
        for bad in [
            "", ".", "a.", ".a", "a..b", "-a.b", "a-.b", "a.-b", "A.b", "a_b", "a/b",
        ] {
            assert_eq!(
                is_dns1123_subdomain(bad),
                vec![SUBDOMAIN_MSG.to_string()],
                "{bad:?}"
            );
        }
        let too_long = format!("{}.{}", "a".repeat(126), "b".repeat(127));
        assert_eq!(
            is_dns1123_subdomain(&too_long),
            vec!["must be no more than 253 characters"]
        );
    }

    #[test]
    fn dns1035_label() {
        for ok in ["a", "a1", "a-1", "abc-def", &"a".repeat(63)] {
            assert!(is_dns1035_label(ok).is_empty(), "{ok:?} should be valid");
        }
        for bad in ["", "1a", "-a", "a-", "a.b", "A", "a_b"] {
            assert_eq!(
                is_dns1035_label(bad),
                vec![DNS1035_MSG.to_string()],
                "{bad:?}"
            );
        }
        assert_eq!(
            is_dns1035_label(&"a".repeat(64)),
            vec!["must be no more than 63 characters"]
        );
    }

    #[test]
    fn qualified_name_valid() {
        for ok in [
            "a",
            "A",
            "MyName",
            "my.name",
            "123-abc",
            "a_b",
            "a-_.b",
            "example.com/MyName",
            "k8s.io/app",
            "app.kubernetes.io/name",
            &"a".repeat(63),
            &format!("{}/{}", "p".repeat(253), "n".repeat(63)),
        ] {
            assert!(is_qualified_name(ok).is_empty(), "{ok:?} should be valid");
        }
    }

    #[test]
    fn qualified_name_invalid_name_part() {
        for bad in ["-a", "a-", "_a", "a_", ".a", "a.", "a b", "a:b", "é"] {
            assert_eq!(
                is_qualified_name(bad),
                vec![NAME_PART_MSG.to_string()],
                "{bad:?}"
            );
        }
        assert_eq!(
            is_qualified_name(""),
            vec![
                "name part must be non-empty".to_string(),
                NAME_PART_MSG.to_string()
            ]
        );
        assert_eq!(
            is_qualified_name(&"a".repeat(64)),
            vec!["name part must be no more than 63 characters"]
        );
    }

    #[test]
    fn qualified_name_invalid_prefix() {
        assert_eq!(
            is_qualified_name("/a"),
            vec!["prefix part must be non-empty"]
        );
        assert_eq!(
            is_qualified_name("Example.com/a"),
            vec![format!("prefix part {SUBDOMAIN_MSG}")]
        );
        assert_eq!(
            is_qualified_name(&format!("{}/a", "p".repeat(254))),
            vec!["prefix part must be no more than 253 characters"]
        );
        assert_eq!(
            is_qualified_name("/"),
            vec![
                "prefix part must be non-empty".to_string(),
                "name part must be non-empty".to_string(),
                NAME_PART_MSG.to_string()
            ]
        );
        assert_eq!(
            is_qualified_name("example.com/"),
            vec![
                "name part must be non-empty".to_string(),
                NAME_PART_MSG.to_string()
            ]
        );
    }

    #[test]
    fn qualified_name_too_many_slashes() {
        assert_eq!(
            is_qualified_name("a/b/c"),
            vec!["a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
        );
    }

    #[test]
    fn label_values() {
        for ok in [
            "",
            "a",
            "A",
            "12345",
            "my_value",
            "My.Value-1",
            &"v".repeat(63),
        ] {
            assert!(
                is_valid_label_value(ok).is_empty(),
                "{ok:?} should be valid"
            );
        }
        for bad in ["-a", "a-", "_a", ".a", "a.", "a b", "a/b", "a=b", "é"] {
            assert_eq!(
                is_valid_label_value(bad),
                vec![LABEL_VALUE_MSG.to_string()],
                "{bad:?}"
            );
        }
        assert_eq!(
            is_valid_label_value(&"v".repeat(64)),
            vec!["must be no more than 63 characters"]
        );
    }

    #[test]
    fn annotation_size_limit() {
        let mut annotations = Map::new();
        annotations.insert("k".into(), Value::String("v".repeat(256 * 1024 - 1)));
        assert_eq!(validate_annotations_size(&annotations), Ok(()));
        annotations.insert("x".into(), Value::String(String::new()));
        assert_eq!(
            validate_annotations_size(&annotations),
            Err("annotations size 262145 is larger than limit 262144".to_string())
        );
        assert_eq!(validate_annotations_size(&Map::new()), Ok(()));
    }

    #[test]
    fn go_quoting() {
        assert_eq!(go_quote("abc"), "\"abc\"");
        assert_eq!(go_quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(go_quote("a\nb\tc"), "\"a\\nb\\tc\"");
        assert_eq!(go_quote("\u{1}"), "\"\\x01\"");
        assert_eq!(go_quote("é"), "\"é\"");
        assert_eq!(go_quote(""), "\"\"");
    }
}
