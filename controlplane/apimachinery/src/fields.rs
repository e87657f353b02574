//! Field selectors: the `fieldSelector` list/watch parameter
//! (`kubectl get pods --field-selector spec.nodeName=n1,status.phase!=Failed`).
//!
//! Mirrors `k8s.io/apimachinery/pkg/fields/selector.go`: comma-separated
//! `field=value`, `field==value` and `field!=value` terms, backslash escapes
//! for `\`, `,` and `=` in values, terms ordered by their raw text, no
//! whitespace trimming, and a field the object lacks comparing as the empty
//! string. Which fields a resource accepts is decided per resource; see
//! [`FieldSelector::check_supported`].

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

/// Why a field selector could not be parsed or is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// A term has no `=`, `==` or `!=`.
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    InvalidTerm { selector: String, term: String },
    /// A backslash in a value is followed by something other than `\`, `,`
    /// or `=`, or ends the value.
    #[error("invalid field selector: invalid escape sequence: {0}")]
    InvalidEscapeSequence(String),
    /// A value contains a bare `,` or `=`.
    #[error("invalid field selector: unescaped character in value: {}", code_point(.0))]
    UnescapedCharacter(char),
    /// The resource does not index or convert this field.
    #[error("field label not supported: {0}")]
    UnsupportedField(String),
}

/// Kubernetes formats the offending rune with Go's `%v`, i.e. as its
/// decimal code point (`61` for `=`).
fn code_point(c: &char) -> u32 {
    u32::from(*c)
}

/// How a term compares a field with its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldOp {
    /// `field=value` or `field==value`.
    Equals,
    /// `field!=value`.
    NotEquals,
}

impl FieldOp {
    /// The operator as printed in a selector string.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldOp::Equals => "=",
            FieldOp::NotEquals => "!=",
        }
    }
}

/// One `field op value` term, with the value already unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub op: FieldOp,
    pub value: String,
}

impl FieldRequirement {
    fn matches(&self, actual: &str) -> bool {
        match self.op {
            FieldOp::Equals => actual == self.value,
            FieldOp::NotEquals => actual != self.value,
        }
    }
}

impl fmt::Display for FieldRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}{}",
            self.field,
            self.op.as_str(),
            escape_value(&self.value)
        )
    }
}

/// A parsed field selector; the AND of its requirements.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// The selector that matches every object (what an empty string parses to).
    pub fn everything() -> Self {
        Self::default()
    }

    /// Parses the `?fieldSelector=` syntax.
    pub fn parse(selector: &str) -> Result<Self, SelectorError> {
        let mut terms = split_terms(selector);
        // Kubernetes sorts the raw terms before parsing, which fixes both the
        // requirement order and which bad term gets reported.
        terms.sort_unstable();
        let mut requirements = Vec::with_capacity(terms.len());
        for term in terms {
            if term.is_empty() {
                continue;
            }
            let Some((field, op, raw_value)) = split_term(term) else {
                return Err(SelectorError::InvalidTerm {
                    selector: selector.to_string(),
                    term: term.to_string(),
                });
            };
            let value = unescape_value(raw_value)?;
            if field.is_empty() && value.is_empty() {
                // Kubernetes drops a term whose field and value are both
                // empty (a bare `=`) instead of matching on it.
                continue;
            }
            requirements.push(FieldRequirement {
                field: field.to_string(),
                op,
                value,
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// The terms in Kubernetes' order (sorted by their raw text).
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// True when the selector places no restriction.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object satisfies every term; `lookup` yields the object's
    /// value for a field label, and a field it cannot supply compares as the
    /// empty string.
    pub fn matches(&self, lookup: impl Fn(&str) -> Option<String>) -> bool {
        self.requirements.iter().all(|requirement| {
            let actual = lookup(&requirement.field).unwrap_or_default();
            requirement.matches(&actual)
        })
    }

    /// [`matches`](Self::matches) with fields read from the object's JSON
    /// by their dotted path (see [`field_value`]).
    pub fn matches_object(&self, object: &Value) -> bool {
        self.matches(|path| field_value(object, path))
    }

    /// The value an `=`/`==` term pins `field` to, if any; useful for index
    /// lookups such as `spec.nodeName` or `metadata.name`.
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.op == FieldOp::Equals && r.field == field)
            .map(|r| r.value.as_str())
    }

    /// Rejects the first field label not in `supported`, with Kubernetes'
    /// `field label not supported: X` error.
    pub fn check_supported(&self, supported: &[&str]) -> Result<(), SelectorError> {
        match self
            .requirements
            .iter()
            .find(|r| !supported.contains(&r.field.as_str()))
        {
            Some(unsupported) => Err(SelectorError::UnsupportedField(unsupported.field.clone())),
            None => Ok(()),
        }
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, requirement) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{requirement}")?;
        }
        Ok(())
    }
}

impl FromStr for FieldSelector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Resolves a dotted field label such as `spec.nodeName`, `status.phase` or
/// `involvedObject.uid` against an object's JSON. Strings come back as is,
/// numbers and booleans in their JSON spelling; null, objects, arrays and
/// missing fields yield `None`.
pub fn field_value(object: &Value, path: &str) -> Option<String> {
    let mut current = object;
    for segment in path.split('.') {
        current = current.as_object()?.get(segment)?;
    }
    match current {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Escapes a literal value for use in a field selector string.
pub fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Undoes [`escape_value`], rejecting unknown escapes and bare `,` or `=`.
pub fn unescape_value(raw: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(raw.len());
    let mut escaped = false;
    for c in raw.chars() {
        if escaped {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(SelectorError::InvalidEscapeSequence(format!("\\{c}")));
            }
            out.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            ',' | '=' => return Err(SelectorError::UnescapedCharacter(c)),
            _ => out.push(c),
        }
    }
    if escaped {
        return Err(SelectorError::InvalidEscapeSequence("\\".to_string()));
    }
    Ok(out)
}

/// Splits on commas that are not backslash-escaped, keeping the escapes in
/// the terms for [`unescape_value`] to resolve.
fn split_terms(selector: &str) -> Vec<&str> {
    if selector.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in selector.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            terms.push(&selector[start..i]);
            start = i + 1;
        }
    }
    terms.push(&selector[start..]);
    terms
}

/// Splits a term at its first operator. Field labels cannot contain escapes,
/// so the earliest `!=`, `==` or `=` wins even if a backslash precedes it;
/// `==` is tried before `=` so the value does not keep a leading `=`.
fn split_term(term: &str) -> Option<(&str, FieldOp, &str)> {
    const OPERATORS: [(&str, FieldOp); 3] = [
        ("!=", FieldOp::NotEquals),
        ("==", FieldOp::Equals),
        ("=", FieldOp::Equals),
    ];
    term.char_indices().find_map(|(i, _)| {
        let rest = &term[i..];
        OPERATORS
            .iter()
            .find_map(|&(text, op)| rest.strip_prefix(text).map(|value| (&term[..i], op, value)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(s: &str) -> FieldSelector {
        match FieldSelector::parse(s) {
            Ok(selector) => selector,
            Err(err) => panic!("{s:?} should parse: {err}"),
        }
    }

    fn parse_err(s: &str) -> String {
        match FieldSelector::parse(s) {
            Ok(selector) => panic!("{s:?} should fail, parsed as {selector}"),
            Err(err) => err.to_string(),
        }
    }

    fn terms(selector: &FieldSelector) -> Vec<(&str, FieldOp, &str)> {
        selector
            .requirements()
            .iter()
            .map(|r| (r.field.as_str(), r.op, r.value.as_str()))
            .collect()
    }

    #[test]
    fn empty_selects_everything() {
        for s in ["", ",", ",,"] {
            let selector = parse(s);
            assert!(selector.is_empty(), "{s:?}");
            assert!(selector.matches(|_| None));
            assert_eq!(selector.to_string(), "");
        }
        assert_eq!(FieldSelector::everything(), FieldSelector::default());
    }

    #[test]
    fn operators() {
        assert_eq!(terms(&parse("a=b")), vec![("a", FieldOp::Equals, "b")]);
        assert_eq!(terms(&parse("a==b")), vec![("a", FieldOp::Equals, "b")]);
        assert_eq!(terms(&parse("a!=b")), vec![("a", FieldOp::NotEquals, "b")]);
        assert_eq!(terms(&parse("a=")), vec![("a", FieldOp::Equals, "")]);
        assert_eq!(terms(&parse("a!=")), vec![("a", FieldOp::NotEquals, "")]);
        assert_eq!(terms(&parse("=b")), vec![("", FieldOp::Equals, "b")]);
    }

    #[test]
    fn bare_operator_terms_are_dropped() {
        assert!(parse("=").is_empty());
        assert!(parse("==").is_empty());
        assert_eq!(terms(&parse("!=,a=b")), vec![("a", FieldOp::Equals, "b")]);
    }

    #[test]
    fn multiple_terms_sorted_by_text() {
        let selector = parse("status.phase!=Failed,spec.nodeName=node-1,metadata.name=web");
        assert_eq!(
            terms(&selector),
            vec![
                ("metadata.name", FieldOp::Equals, "web"),
                ("spec.nodeName", FieldOp::Equals, "node-1"),
                ("status.phase", FieldOp::NotEquals, "Failed"),
            ]
        );
        assert_eq!(
            selector.to_string(),
            "metadata.name=web,spec.nodeName=node-1,status.phase!=Failed"
        );
    }

    #[test]
    fn whitespace_is_data() {
        // Kubernetes does not trim: a decoded '+' stays part of the label or value.
        assert_eq!(
            terms(&parse("status.phase = Running")),
            vec![("status.phase ", FieldOp::Equals, " Running")]
        );
        assert_eq!(
            terms(&parse("a=b, c=d")),
            vec![(" c", FieldOp::Equals, "d"), ("a", FieldOp::Equals, "b")]
        );
    }

    #[test]
    fn escapes() {
        assert_eq!(
            terms(&parse(r"a=b\,c")),
            vec![("a", FieldOp::Equals, "b,c")]
        );
        assert_eq!(
            terms(&parse(r"a=b\=c")),
            vec![("a", FieldOp::Equals, "b=c")]
        );
        assert_eq!(
            terms(&parse(r"a=b\\c")),
            vec![("a", FieldOp::Equals, r"b\c")]
        );
        assert_eq!(
            terms(&parse(r"a=x\,y,b!=\\")),
            vec![
                ("a", FieldOp::Equals, "x,y"),
                ("b", FieldOp::NotEquals, r"\")
            ]
        );
        // An escaped backslash does not escape the comma after it.
        assert_eq!(
            terms(&parse(r"a=x\\,b=y")),
            vec![("a", FieldOp::Equals, r"x\"), ("b", FieldOp::Equals, "y")]
        );
        assert_eq!(escape_value(r"a,b=c\d"), r"a\,b\=c\\d");
        assert_eq!(
            unescape_value(&escape_value(r"a,b=c\d")),
            Ok(r"a,b=c\d".to_string())
        );
    }

    #[test]
    fn display_escapes_values() {
        let selector = parse(r"a=b\,c,d!=e\=f,g==h");
        assert_eq!(selector.to_string(), r"a=b\,c,d!=e\=f,g=h");
        assert_eq!(parse(&selector.to_string()), selector);
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(
            parse_err("a"),
            "invalid selector: 'a'; can't understand 'a'"
        );
        assert_eq!(
            parse_err("x=1,b,a"),
            "invalid selector: 'x=1,b,a'; can't understand 'a'"
        );
        assert_eq!(
            parse_err("a!b"),
            "invalid selector: 'a!b'; can't understand 'a!b'"
        );
        assert_eq!(
            parse_err("a=b=c"),
            "invalid field selector: unescaped character in value: 61"
        );
        assert_eq!(
            parse_err("a==="),
            "invalid field selector: unescaped character in value: 61"
        );
        assert_eq!(
            parse_err(r"a=b\c"),
            r"invalid field selector: invalid escape sequence: \c"
        );
        assert_eq!(
            parse_err(r"a=b\"),
            r"invalid field selector: invalid escape sequence: \"
        );
        // Field labels take no escapes: the first operator splits the term.
        assert_eq!(
            parse_err(r"a\=b=c"),
            "invalid field selector: unescaped character in value: 61"
        );
        assert_eq!(
            unescape_value("a,b"),
            Err(SelectorError::UnescapedCharacter(','))
        );
        assert_eq!(
            SelectorError::UnescapedCharacter(',').to_string(),
            "invalid field selector: unescaped character in value: 44"
        );
    }

    #[test]
    fn matching_with_lookup() {
        let lookup = |field: &str| match field {
            "spec.nodeName" => Some("node-1".to_string()),
            "status.phase" => Some("Running".to_string()),
            _ => None,
        };
        let cases = [
            ("spec.nodeName=node-1", true),
            ("spec.nodeName==node-1", true),
            ("spec.nodeName=node-2", false),
            ("spec.nodeName!=node-2", true),
            ("spec.nodeName!=node-1", false),
            ("status.phase=Running,spec.nodeName=node-1", true),
            ("status.phase=Running,spec.nodeName=node-2", false),
            // A missing field reads as "".
            ("spec.missing=", true),
            ("spec.missing!=", false),
            ("spec.missing=x", false),
            ("spec.missing!=x", true),
            ("", true),
        ];
        for (selector, expected) in cases {
            assert_eq!(parse(selector).matches(lookup), expected, "{selector}");
        }
    }

    #[test]
    fn field_values_from_json() {
        let event = json!({
            "metadata": {"name": "e1", "namespace": "default", "generation": 3},
            "involvedObject": {"uid": "1234", "kind": "Pod"},
            "spec": {"nodeName": "n1", "hostNetwork": true, "tolerations": []},
            "status": {"phase": "Pending", "podIP": null},
            "count": 2.5
        });
        assert_eq!(field_value(&event, "metadata.name"), Some("e1".into()));
        assert_eq!(
            field_value(&event, "involvedObject.uid"),
            Some("1234".into())
        );
        assert_eq!(field_value(&event, "spec.nodeName"), Some("n1".into()));
        assert_eq!(field_value(&event, "status.phase"), Some("Pending".into()));
        assert_eq!(field_value(&event, "metadata.generation"), Some("3".into()));
        assert_eq!(field_value(&event, "spec.hostNetwork"), Some("true".into()));
        assert_eq!(field_value(&event, "count"), Some("2.5".into()));
        assert_eq!(field_value(&event, "status.podIP"), None);
        assert_eq!(field_value(&event, "spec.tolerations"), None);
        assert_eq!(field_value(&event, "spec"), None);
        assert_eq!(field_value(&event, "spec.nodeName.x"), None);
        assert_eq!(field_value(&event, "missing.path"), None);
        assert_eq!(field_value(&event, ""), None);
    }

    #[test]
    fn matching_objects() {
        let pod = json!({
            "metadata": {"name": "web-0", "namespace": "prod"},
            "spec": {"nodeName": "n1", "hostNetwork": false},
            "status": {"phase": "Running"}
        });
        assert!(parse("spec.nodeName=n1,status.phase!=Failed").matches_object(&pod));
        assert!(!parse("spec.nodeName=n2").matches_object(&pod));
        assert!(parse("spec.hostNetwork=false").matches_object(&pod));
        assert!(parse("status.podIP=").matches_object(&pod));
        assert!(parse("metadata.namespace!=kube-system").matches_object(&pod));
    }

    #[test]
    fn exact_match_lookup() {
        let selector = parse("spec.nodeName=n1,status.phase!=Failed,metadata.name==x");
        assert_eq!(selector.requires_exact_match("spec.nodeName"), Some("n1"));
        assert_eq!(selector.requires_exact_match("metadata.name"), Some("x"));
        assert_eq!(selector.requires_exact_match("status.phase"), None);
        assert_eq!(selector.requires_exact_match("other"), None);
    }

    #[test]
    fn supported_fields() {
        let supported = ["metadata.name", "metadata.namespace", "spec.nodeName"];
        assert_eq!(
            parse("spec.nodeName=n1,metadata.name=a").check_supported(&supported),
            Ok(())
        );
        assert_eq!(parse("").check_supported(&[]), Ok(()));
        let err = parse("spec.nodeName=n1,spec.foo=bar").check_supported(&supported);
        assert_eq!(err, Err(SelectorError::UnsupportedField("spec.foo".into())));
        assert_eq!(
            parse("foo=bar")
                .check_supported(&supported)
                .map_err(|e| e.to_string()),
            Err("field label not supported: foo".to_string())
        );
    }

    #[test]
    fn non_ascii_is_handled_by_char() {
        assert_eq!(
            terms(&parse("ä=ö,b=ü")),
            vec![("b", FieldOp::Equals, "ü"), ("ä", FieldOp::Equals, "ö")]
        );
        assert_eq!(
            parse_err(r"a=\é"),
            "invalid field selector: invalid escape sequence: \\é"
        );
    }

    #[test]
    fn from_str_matches_parse() {
        let parsed: Result<FieldSelector, _> = "a=b".parse();
        assert_eq!(parsed, FieldSelector::parse("a=b"));
    }
}
