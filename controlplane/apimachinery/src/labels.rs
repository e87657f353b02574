//! Label selectors: the `labelSelector` list/watch parameter, the
//! `metav1.LabelSelector` objects found in workload specs, and the plain-map
//! selectors of ReplicationControllers and Services.
//!
//! Mirrors `k8s.io/apimachinery/pkg/labels/selector.go`: the same lexer and
//! recursive-descent grammar (so unusual but accepted inputs such as
//! `x in (a,,b)`, `x in ()` or `x=` mean what they mean to Kubernetes), the
//! same requirement validation and error wording, requirements kept sorted by
//! key, and the same canonical string form, which clients read back from
//! places such as the Scale subresource's `status.selector`.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

use crate::names::{go_quote, is_qualified_name, is_valid_label_value};

/// Why a label selector could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The selector string breaks the grammar between requirements.
    #[error("{0}")]
    Syntax(String),
    /// One requirement of a selector string is malformed or fails validation.
    #[error("unable to parse requirement: {0}")]
    Requirement(String),
    /// A requirement built from structured input fails validation.
    #[error("{0}")]
    Invalid(String),
    /// A `matchExpressions` entry names an operator Kubernetes does not know.
    #[error("{} is not a valid label selector operator", go_quote(.0))]
    UnknownOperator(String),
    /// The JSON does not have the shape of a label selector.
    #[error("{0}")]
    Malformed(String),
}

/// How a requirement relates a label key to its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `key=value`
    Equals,
    /// `key==value`; matches like `=` but is printed back as written.
    DoubleEquals,
    /// `key!=value`; also matches objects without the label.
    NotEquals,
    /// `key in (a,b)`
    In,
    /// `key notin (a,b)`; also matches objects without the label.
    NotIn,
    /// `key`
    Exists,
    /// `!key`
    DoesNotExist,
    /// `key>3`, an integer comparison.
    GreaterThan,
    /// `key<3`, an integer comparison.
    LessThan,
}

impl Operator {
    /// The operator's name in `k8s.io/apimachinery/pkg/selection`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => "in",
            Operator::NotIn => "notin",
            Operator::Exists => "exists",
            Operator::DoesNotExist => "!",
            Operator::GreaterThan => "gt",
            Operator::LessThan => "lt",
        }
    }
}

/// One condition on one label key; a selector is the AND of its requirements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    values: Vec<String>,
}

impl Requirement {
    /// Builds a validated requirement, with the checks and messages of
    /// Kubernetes' `labels.NewRequirement`.
    pub fn new(
        key: impl Into<String>,
        operator: Operator,
        values: Vec<String>,
    ) -> Result<Self, SelectorError> {
        let key = key.into();
        validate_requirement(&key, operator, &values).map_err(SelectorError::Invalid)?;
        Ok(Requirement {
            key,
            operator,
            values,
        })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn operator(&self) -> Operator {
        self.operator
    }

    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// Whether a label set (an object's `metadata.labels`) satisfies this
    /// requirement.
    pub fn matches(&self, labels: &Map<String, Value>) -> bool {
        let actual = labels.get(&self.key).map(label_text);
        let listed = |v: &str| self.values.iter().any(|x| x == v);
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => {
                actual.is_some_and(|v| listed(&v))
            }
            Operator::NotIn | Operator::NotEquals => actual.is_none_or(|v| !listed(&v)),
            Operator::Exists => actual.is_some(),
            Operator::DoesNotExist => actual.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                // Non-integer label values simply do not match, as in Kubernetes.
                let Some(Ok(actual)) = actual.map(|v| v.parse::<i64>()) else {
                    return false;
                };
                let [bound] = self.values.as_slice() else {
                    return false;
                };
                let Ok(bound) = bound.parse::<i64>() else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    actual > bound
                } else {
                    actual < bound
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let set_based = matches!(self.operator, Operator::In | Operator::NotIn);
        match self.operator {
            Operator::Equals => f.write_str("=")?,
            Operator::DoubleEquals => f.write_str("==")?,
            Operator::NotEquals => f.write_str("!=")?,
            Operator::In => f.write_str(" in ")?,
            Operator::NotIn => f.write_str(" notin ")?,
            Operator::GreaterThan => f.write_str(">")?,
            Operator::LessThan => f.write_str("<")?,
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
        }
        if set_based {
            f.write_str("(")?;
        }
        if let [only] = self.values.as_slice() {
            f.write_str(only)?;
        } else {
            // Sorted on output so equal selectors print identically no matter
            // how their values were listed in the API object.
            let mut sorted: Vec<&str> = self.values.iter().map(String::as_str).collect();
            sorted.sort_unstable();
            f.write_str(&sorted.join(","))?;
        }
        if set_based {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// A parsed label selector.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    /// Set only for the selector of an absent `metav1.LabelSelector`, which
    /// Kubernetes treats as selecting nothing rather than everything.
    nothing: bool,
}

impl LabelSelector {
    /// The selector that matches every object (what an empty string parses to).
    pub fn everything() -> Self {
        Self::default()
    }

    /// The selector that matches no object.
    pub fn nothing() -> Self {
        LabelSelector {
            requirements: Vec::new(),
            nothing: true,
        }
    }

    /// Parses the string syntax used by `?labelSelector=` and `kubectl -l`.
    pub fn parse(selector: &str) -> Result<Self, SelectorError> {
        let mut parser = Parser {
            tokens: lex(selector),
            pos: 0,
        };
        let mut requirements = parser.parse()?;
        sort_by_key(&mut requirements);
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// Converts a `metav1.LabelSelector` (`matchLabels` + `matchExpressions`),
    /// like Kubernetes' `LabelSelectorAsSelector`: JSON `null` selects
    /// nothing, an empty selector selects everything.
    pub fn from_api(selector: &Value) -> Result<Self, SelectorError> {
        let object = match selector {
            Value::Null => return Ok(Self::nothing()),
            Value::Object(object) => object,
            _ => return Err(malformed("label selector", "an object")),
        };
        let empty = Map::new();
        let match_labels = match object.get("matchLabels") {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(labels)) => labels,
            Some(_) => return Err(malformed("matchLabels", "an object")),
        };
        let expressions: &[Value] = match object.get("matchExpressions") {
            None | Some(Value::Null) => &[],
            Some(Value::Array(items)) => items,
            Some(_) => return Err(malformed("matchExpressions", "an array")),
        };

        let mut requirements = Vec::with_capacity(match_labels.len() + expressions.len());
        for (key, value) in match_labels {
            let value = string_field(value, &format!("matchLabels[{key}]"))?;
            requirements.push(Requirement::new(
                key.as_str(),
                Operator::Equals,
                vec![value],
            )?);
        }
        for (i, expression) in expressions.iter().enumerate() {
            let Value::Object(expression) = expression else {
                return Err(malformed(&format!("matchExpressions[{i}]"), "an object"));
            };
            let key = match expression.get("key") {
                None => String::new(),
                Some(value) => string_field(value, &format!("matchExpressions[{i}].key"))?,
            };
            let operator = match expression.get("operator") {
                None => String::new(),
                Some(value) => string_field(value, &format!("matchExpressions[{i}].operator"))?,
            };
            let operator = match operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                _ => return Err(SelectorError::UnknownOperator(operator)),
            };
            let values = match expression.get("values") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(items)) => items
                    .iter()
                    .enumerate()
                    .map(|(j, v)| string_field(v, &format!("matchExpressions[{i}].values[{j}]")))
                    .collect::<Result<Vec<_>, _>>()?,
                Some(_) => {
                    return Err(malformed(
                        &format!("matchExpressions[{i}].values"),
                        "an array",
                    ))
                }
            };
            requirements.push(Requirement::new(key, operator, values)?);
        }
        sort_by_key(&mut requirements);
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// Converts a plain `key: value` map selector (ReplicationController and
    /// Service `spec.selector`), validating it like Kubernetes'
    /// `ValidatedSelectorFromSet`. An empty map selects everything.
    pub fn from_map(selector: &Map<String, Value>) -> Result<Self, SelectorError> {
        let mut requirements = Vec::with_capacity(selector.len());
        for (key, value) in selector {
            let value = string_field(value, &format!("selector[{key}]"))?;
            requirements.push(Requirement::new(
                key.as_str(),
                Operator::Equals,
                vec![value],
            )?);
        }
        sort_by_key(&mut requirements);
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// Whether a label set (an object's `metadata.labels`; pass an empty map
    /// when the object has none) satisfies every requirement.
    pub fn matches(&self, labels: &Map<String, Value>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// [`matches`](Self::matches) applied to an object's `metadata.labels`.
    pub fn matches_object(&self, object: &Value) -> bool {
        match object
            .get("metadata")
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object)
        {
            Some(labels) => self.matches(labels),
            None => self.matches(&Map::new()),
        }
    }

    /// True when the selector places no restriction (it selects everything).
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// The single value the selector pins `key` to, if it does
    /// (`key=v`, `key==v` or `key in (v)`); useful for index lookups.
    pub fn requires_exact_match(&self, key: &str) -> Option<&str> {
        let requirement = self.requirements.iter().find(|r| r.key == key)?;
        match (requirement.operator, requirement.values.as_slice()) {
            (Operator::Equals | Operator::DoubleEquals | Operator::In, [only]) => Some(only),
            _ => None,
        }
    }
}

impl fmt::Display for LabelSelector {
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

impl FromStr for LabelSelector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn sort_by_key(requirements: &mut [Requirement]) {
    requirements.sort_by(|a, b| a.key.cmp(&b.key));
}

fn malformed(what: &str, expected: &str) -> SelectorError {
    SelectorError::Malformed(format!("{what}: must be {expected}"))
}

fn string_field(value: &Value, what: &str) -> Result<String, SelectorError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        // Go decodes a JSON null into a string field as the empty string.
        Value::Null => Ok(String::new()),
        _ => Err(malformed(what, "a string")),
    }
}

/// A label value as text; labels are strings in every valid object.
fn label_text(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(s) => Cow::Borrowed(s),
        Value::Null => Cow::Borrowed(""),
        other => Cow::Owned(other.to_string()),
    }
}

/// Kubernetes renders list values in field errors with `encoding/json`.
fn json_list(values: &[String]) -> String {
    if values.is_empty() {
        // Only API objects can supply an empty list, and Kubernetes copies
        // those into a nil slice, which encodes as null.
        return "null".to_string();
    }
    let encoded = serde_json::to_string(values).unwrap_or_default();
    // Go's encoder additionally escapes HTML-sensitive characters.
    encoded
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// Joins errors the way Kubernetes' aggregate error does: a lone error is
/// shown as is, several are de-duplicated and bracketed.
fn aggregate(errors: Vec<String>) -> Result<(), String> {
    let mut unique: Vec<String> = Vec::with_capacity(errors.len());
    for error in errors {
        if !unique.contains(&error) {
            unique.push(error);
        }
    }
    match unique.len() {
        0 => Ok(()),
        1 => Err(unique.remove(0)),
        _ => Err(format!("[{}]", unique.join(", "))),
    }
}

/// The checks of Kubernetes' `NewRequirement`, reported against the field
/// paths it uses (`key`, `values`, `values[i]`, `values[i][key]`).
fn validate_requirement(key: &str, operator: Operator, values: &[String]) -> Result<(), String> {
    let mut errors = Vec::new();
    let key_errors = is_qualified_name(key);
    if !key_errors.is_empty() {
        errors.push(format!(
            "key: Invalid value: {}: {}",
            go_quote(key),
            key_errors.join("; ")
        ));
    }

    match operator {
        Operator::In | Operator::NotIn => {
            if values.is_empty() {
                errors.push(format!(
                    "values: Invalid value: {}: for 'in', 'notin' operators, values set can't be empty",
                    json_list(values)
                ));
            }
        }
        Operator::Equals | Operator::DoubleEquals | Operator::NotEquals => {
            if values.len() != 1 {
                errors.push(format!(
                    "values: Invalid value: {}: exact-match compatibility requires one single value",
                    json_list(values)
                ));
            }
        }
        Operator::Exists | Operator::DoesNotExist => {
            if !values.is_empty() {
                errors.push(format!(
                    "values: Invalid value: {}: values set must be empty for exists and does not exist",
                    json_list(values)
                ));
            }
        }
        Operator::GreaterThan | Operator::LessThan => {
            if values.len() != 1 {
                errors.push(format!(
                    "values: Invalid value: {}: for 'Gt', 'Lt' operators, exactly one value is required",
                    json_list(values)
                ));
            }
            for (i, value) in values.iter().enumerate() {
                if value.parse::<i64>().is_err() {
                    errors.push(format!(
                        "values[{i}]: Invalid value: {}: for 'Gt', 'Lt' operators, the value must be an integer",
                        go_quote(value)
                    ));
                }
            }
        }
    }

    for (i, value) in values.iter().enumerate() {
        let value_errors = is_valid_label_value(value);
        if !value_errors.is_empty() {
            errors.push(format!(
                "values[{i}][{key}]: Invalid value: {}: {}",
                go_quote(value),
                value_errors.join("; ")
            ));
        }
    }
    aggregate(errors)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    End,
    OpenParen,
    CloseParen,
    Comma,
    Bang,
    Equals,
    DoubleEquals,
    NotEquals,
    GreaterThan,
    LessThan,
    In,
    NotIn,
    Identifier(&'a str),
}

impl<'a> Token<'a> {
    /// The text quoted back in syntax errors (empty for the end of input).
    fn literal(self) -> &'a str {
        match self {
            Token::End => "",
            Token::OpenParen => "(",
            Token::CloseParen => ")",
            Token::Comma => ",",
            Token::Bang => "!",
            Token::Equals => "=",
            Token::DoubleEquals => "==",
            Token::NotEquals => "!=",
            Token::GreaterThan => ">",
            Token::LessThan => "<",
            Token::In => "in",
            Token::NotIn => "notin",
            Token::Identifier(text) => text,
        }
    }
}

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// Splits a selector into tokens. Whitespace only separates tokens, so
/// `a in (x, y)` and `a in(x,y)` lex alike. Every delimiter is ASCII, which
/// keeps the identifier slices on UTF-8 boundaries.
fn lex(input: &str) -> Vec<Token<'_>> {
    let bytes = input.as_bytes();
    let mut tokens = Vec::new();
    let mut pos = 0;
    loop {
        while pos < bytes.len() && is_whitespace(bytes[pos]) {
            pos += 1;
        }
        let Some(&b) = bytes.get(pos) else {
            tokens.push(Token::End);
            return tokens;
        };
        if is_special(b) {
            // `==` and `!=` are the only two-character operators; any other
            // run of symbols splits into single-character tokens.
            let token = match (b, bytes.get(pos + 1)) {
                (b'=', Some(b'=')) => Token::DoubleEquals,
                (b'!', Some(b'=')) => Token::NotEquals,
                (b'=', _) => Token::Equals,
                (b'!', _) => Token::Bang,
                (b'(', _) => Token::OpenParen,
                (b')', _) => Token::CloseParen,
                (b',', _) => Token::Comma,
                (b'>', _) => Token::GreaterThan,
                _ => Token::LessThan,
            };
            pos += token.literal().len();
            tokens.push(token);
        } else {
            let start = pos;
            while pos < bytes.len() && !is_special(bytes[pos]) && !is_whitespace(bytes[pos]) {
                pos += 1;
            }
            tokens.push(match &input[start..pos] {
                "in" => Token::In,
                "notin" => Token::NotIn,
                word => Token::Identifier(word),
            });
        }
    }
}

/// Where the parser stands: `in`/`notin` are operators only right after a
/// key, and plain identifiers everywhere else (`in in (in)` is valid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

struct Parser<'a> {
    tokens: Vec<Token<'a>>,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self, context: Context) -> Token<'a> {
        let token = self.tokens.get(self.pos).copied().unwrap_or(Token::End);
        match (context, token) {
            (Context::Values, Token::In | Token::NotIn) => Token::Identifier(token.literal()),
            _ => token,
        }
    }

    fn next(&mut self, context: Context) -> Token<'a> {
        let token = self.peek(context);
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        token
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            match self.peek(Context::Values) {
                Token::Identifier(_) | Token::Bang => {
                    let requirement = self
                        .parse_requirement()
                        .map_err(SelectorError::Requirement)?;
                    requirements.push(requirement);
                    match self.next(Context::Values) {
                        Token::End => return Ok(requirements),
                        Token::Comma => {
                            let after = self.peek(Context::Values);
                            if !matches!(after, Token::Identifier(_) | Token::Bang) {
                                return Err(SelectorError::Syntax(format!(
                                    "found '{}', expected: identifier after ','",
                                    after.literal()
                                )));
                            }
                        }
                        other => {
                            return Err(SelectorError::Syntax(format!(
                                "found '{}', expected: ',' or 'end of string'",
                                other.literal()
                            )))
                        }
                    }
                }
                Token::End => return Ok(requirements),
                other => {
                    return Err(SelectorError::Syntax(format!(
                        "found '{}', expected: !, identifier, or 'end of string'",
                        other.literal()
                    )))
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let (key, unary) = self.parse_key_and_infer_operator()?;
        let (operator, values) = match unary {
            Some(operator) => (operator, Vec::new()),
            None => {
                let operator = self.parse_operator()?;
                let values = match operator {
                    Operator::In | Operator::NotIn => self.parse_values()?,
                    _ => self.parse_exact_value()?,
                };
                (operator, values)
            }
        };
        validate_requirement(&key, operator, &values)?;
        Ok(Requirement {
            key,
            operator,
            values,
        })
    }

    /// Reads `[!]key`. A key followed directly by `,` or the end is an
    /// existence test; `!key` is always a non-existence test.
    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<Operator>), String> {
        let mut token = self.next(Context::Values);
        let mut operator = None;
        if token == Token::Bang {
            operator = Some(Operator::DoesNotExist);
            token = self.next(Context::Values);
        }
        let Token::Identifier(key) = token else {
            return Err(format!("found '{}', expected: identifier", token.literal()));
        };
        let key_errors = is_qualified_name(key);
        if !key_errors.is_empty() {
            // Kubernetes validates the key here against a nil field path,
            // which it prints as "<nil>".
            return Err(format!(
                "<nil>: Invalid value: {}: {}",
                go_quote(key),
                key_errors.join("; ")
            ));
        }
        if operator.is_none() && matches!(self.peek(Context::Values), Token::End | Token::Comma) {
            operator = Some(Operator::Exists);
        }
        Ok((key.to_string(), operator))
    }

    fn parse_operator(&mut self) -> Result<Operator, String> {
        match self.next(Context::KeyAndOperator) {
            Token::In => Ok(Operator::In),
            Token::NotIn => Ok(Operator::NotIn),
            Token::Equals => Ok(Operator::Equals),
            Token::DoubleEquals => Ok(Operator::DoubleEquals),
            Token::NotEquals => Ok(Operator::NotEquals),
            Token::GreaterThan => Ok(Operator::GreaterThan),
            Token::LessThan => Ok(Operator::LessThan),
            other => Err(format!(
                "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                other.literal()
            )),
        }
    }

    /// Reads `( values )`; the values come back sorted and de-duplicated.
    fn parse_values(&mut self) -> Result<Vec<String>, String> {
        let open = self.next(Context::Values);
        if open != Token::OpenParen {
            return Err(format!("found '{}' expected: '('", open.literal()));
        }
        match self.peek(Context::Values) {
            first @ (Token::Identifier(_) | Token::Comma) => {
                let values = self.parse_identifier_list()?;
                if self.next(Context::Values) != Token::CloseParen {
                    // Kubernetes quotes the list's first token here.
                    return Err(format!("found '{}', expected: ')'", first.literal()));
                }
                Ok(values.into_iter().map(str::to_string).collect())
            }
            Token::CloseParen => {
                // `()` is a set holding only the empty value.
                self.next(Context::Values);
                Ok(vec![String::new()])
            }
            other => Err(format!(
                "found '{}', expected: ',', ')' or identifier",
                other.literal()
            )),
        }
    }

    /// Reads a comma-separated list up to (not including) `)`. Missing items
    /// around commas stand for the empty value, as in Kubernetes.
    fn parse_identifier_list(&mut self) -> Result<BTreeSet<&'a str>, String> {
        let mut values = BTreeSet::new();
        loop {
            match self.next(Context::Values) {
                Token::Identifier(value) => {
                    values.insert(value);
                    match self.peek(Context::Values) {
                        Token::Comma => continue,
                        Token::CloseParen => return Ok(values),
                        other => {
                            return Err(format!(
                                "found '{}', expected: ',' or ')'",
                                other.literal()
                            ))
                        }
                    }
                }
                Token::Comma => {
                    if values.is_empty() {
                        values.insert("");
                    }
                    match self.peek(Context::Values) {
                        Token::CloseParen => {
                            values.insert("");
                            return Ok(values);
                        }
                        Token::Comma => {
                            self.next(Context::Values);
                            values.insert("");
                        }
                        _ => {}
                    }
                }
                other => {
                    return Err(format!(
                        "found '{}', expected: ',', or identifier",
                        other.literal()
                    ))
                }
            }
        }
    }

    /// Reads the value after `=`, `==`, `!=`, `>` or `<`; nothing at all
    /// before `,` or the end means the empty value.
    fn parse_exact_value(&mut self) -> Result<Vec<String>, String> {
        if matches!(self.peek(Context::Values), Token::End | Token::Comma) {
            return Ok(vec![String::new()]);
        }
        match self.next(Context::Values) {
            Token::Identifier(value) => Ok(vec![value.to_string()]),
            other => Err(format!("found '{}', expected: identifier", other.literal())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
    const NAME_PART_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

    fn labels(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("test labels must be an object"),
        }
    }

    fn parse(s: &str) -> LabelSelector {
        match LabelSelector::parse(s) {
            Ok(selector) => selector,
            Err(err) => panic!("{s:?} should parse: {err}"),
        }
    }

    fn parse_err(s: &str) -> String {
        match LabelSelector::parse(s) {
            Ok(selector) => panic!("{s:?} should fail, parsed as {selector}"),
            Err(err) => err.to_string(),
        }
    }

    /// A requirement flattened for comparisons: key, operator, values.
    type Summary = (String, Operator, Vec<String>);

    fn summary(selector: &LabelSelector) -> Vec<Summary> {
        selector
            .requirements()
            .iter()
            .map(|r| (r.key().to_string(), r.operator(), r.values().to_vec()))
            .collect()
    }

    fn req(key: &str, op: Operator, values: &[&str]) -> Summary {
        (
            key.to_string(),
            op,
            values.iter().map(|v| v.to_string()).collect(),
        )
    }

    #[test]
    fn empty_and_blank_select_everything() {
        for s in ["", " ", "\t\n "] {
            let selector = parse(s);
            assert!(selector.is_empty());
            assert!(selector.matches(&Map::new()));
            assert_eq!(selector.to_string(), "");
        }
        assert!(LabelSelector::everything().is_empty());
        assert_eq!(LabelSelector::default(), LabelSelector::everything());
    }

    #[test]
    fn every_operator_parses() {
        let cases: &[(&str, Summary)] = &[
            ("a=b", req("a", Operator::Equals, &["b"])),
            ("a==b", req("a", Operator::DoubleEquals, &["b"])),
            ("a!=b", req("a", Operator::NotEquals, &["b"])),
            ("a in (b,c)", req("a", Operator::In, &["b", "c"])),
            ("a notin (b,c)", req("a", Operator::NotIn, &["b", "c"])),
            ("a", req("a", Operator::Exists, &[])),
            ("!a", req("a", Operator::DoesNotExist, &[])),
            ("a>3", req("a", Operator::GreaterThan, &["3"])),
            ("a<3", req("a", Operator::LessThan, &["3"])),
        ];
        for (input, expected) in cases {
            assert_eq!(summary(&parse(input)), vec![expected.clone()], "{input}");
        }
    }

    #[test]
    fn whitespace_between_tokens() {
        // What kubectl sends once the query string's '+' became spaces.
        let selector = parse("name in (redis-master, redis-slave, frontend)");
        assert_eq!(
            summary(&selector),
            vec![req(
                "name",
                Operator::In,
                &["frontend", "redis-master", "redis-slave"]
            )]
        );
        assert_eq!(
            selector.to_string(),
            "name in (frontend,redis-master,redis-slave)"
        );
        assert_eq!(
            summary(&parse("  a = b ,  c != d , ! e ,f  ")),
            vec![
                req("a", Operator::Equals, &["b"]),
                req("c", Operator::NotEquals, &["d"]),
                req("e", Operator::DoesNotExist, &[]),
                req("f", Operator::Exists, &[]),
            ]
        );
        assert_eq!(parse("a\tin\t(b)\r\n"), parse("a in (b)"));
        assert_eq!(parse("a in(b,c)"), parse("a in (b, c)"));
        assert_eq!(parse("x > 5"), parse("x>5"));
    }

    #[test]
    fn requirements_sorted_by_key() {
        let selector = parse("tier=frontend,app in (web),env");
        let keys: Vec<&str> = selector.requirements().iter().map(|r| r.key()).collect();
        assert_eq!(keys, vec!["app", "env", "tier"]);
        assert_eq!(selector.to_string(), "app in (web),env,tier=frontend");
    }

    #[test]
    fn prefixed_keys() {
        let selector = parse("app.kubernetes.io/name=web,!example.com/skip");
        assert_eq!(
            summary(&selector),
            vec![
                req("app.kubernetes.io/name", Operator::Equals, &["web"]),
                req("example.com/skip", Operator::DoesNotExist, &[]),
            ]
        );
    }

    #[test]
    fn keywords_as_keys_and_values() {
        assert_eq!(
            summary(&parse("in in (in, notin)")),
            vec![req("in", Operator::In, &["in", "notin"])]
        );
        assert_eq!(
            summary(&parse("notin=in")),
            vec![req("notin", Operator::Equals, &["in"])]
        );
        assert_eq!(
            summary(&parse("in")),
            vec![req("in", Operator::Exists, &[])]
        );
    }

    #[test]
    fn empty_values() {
        assert_eq!(
            summary(&parse("a=")),
            vec![req("a", Operator::Equals, &[""])]
        );
        assert_eq!(
            summary(&parse("a!=,b")).first(),
            Some(&req("a", Operator::NotEquals, &[""]))
        );
        assert_eq!(
            summary(&parse("a in ()")),
            vec![req("a", Operator::In, &[""])]
        );
        assert_eq!(
            summary(&parse("a in (,b)")),
            vec![req("a", Operator::In, &["", "b"])]
        );
        assert_eq!(
            summary(&parse("a in (b,)")),
            vec![req("a", Operator::In, &["", "b"])]
        );
        assert_eq!(
            summary(&parse("a in (b,,c)")),
            vec![req("a", Operator::In, &["", "b", "c"])]
        );
        assert_eq!(
            summary(&parse("a in (,)")),
            vec![req("a", Operator::In, &[""])]
        );
        assert_eq!(
            summary(&parse("a in (b,b)")),
            vec![req("a", Operator::In, &["b"])]
        );
        // Kubernetes rejects a run of commas that ends the list.
        assert_eq!(
            parse_err("a in (,,)"),
            "unable to parse requirement: found ')', expected: ',', or identifier"
        );
    }

    #[test]
    fn syntax_errors() {
        let cases = [
            (
                ",",
                "found ',', expected: !, identifier, or 'end of string'",
            ),
            (
                "=a",
                "found '=', expected: !, identifier, or 'end of string'",
            ),
            ("a,", "found '', expected: identifier after ','"),
            ("a,,b", "found ',', expected: identifier after ','"),
            ("a=b c", "found 'c', expected: ',' or 'end of string'"),
            ("!a=b", "found '=', expected: ',' or 'end of string'"),
            (
                "a b",
                "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt",
            ),
            (
                "a (b)",
                "unable to parse requirement: found '(', expected: in, notin, =, ==, !=, gt, lt",
            ),
            (
                "a in b",
                "unable to parse requirement: found 'b' expected: '('",
            ),
            (
                "a in",
                "unable to parse requirement: found '' expected: '('",
            ),
            (
                "a in (",
                "unable to parse requirement: found '', expected: ',', ')' or identifier",
            ),
            (
                "a in (b",
                "unable to parse requirement: found '', expected: ',' or ')'",
            ),
            (
                "a in (b c)",
                "unable to parse requirement: found 'c', expected: ',' or ')'",
            ),
            (
                "a in (b,=)",
                "unable to parse requirement: found '=', expected: ',', or identifier",
            ),
            (
                "a in ((b)",
                "unable to parse requirement: found '(', expected: ',', ')' or identifier",
            ),
            (
                "a=(b)",
                "unable to parse requirement: found '(', expected: identifier",
            ),
            (
                "a===b",
                "unable to parse requirement: found '=', expected: identifier",
            ),
            (
                "!",
                "unable to parse requirement: found '', expected: identifier",
            ),
            (
                "!!a",
                "unable to parse requirement: found '!', expected: identifier",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_err(input), expected, "{input}");
        }
    }

    #[test]
    fn invalid_keys() {
        assert_eq!(
            parse_err("-a=b"),
            format!("unable to parse requirement: <nil>: Invalid value: \"-a\": {NAME_PART_MSG}")
        );
        assert_eq!(
            parse_err("a/b/c"),
            "unable to parse requirement: <nil>: Invalid value: \"a/b/c\": a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        );
        assert_eq!(
            parse_err("/a"),
            "unable to parse requirement: <nil>: Invalid value: \"/a\": prefix part must be non-empty"
        );
        assert_eq!(
            parse_err(&format!("{}=x", "k".repeat(64))),
            format!(
                "unable to parse requirement: <nil>: Invalid value: \"{}\": name part must be no more than 63 characters",
                "k".repeat(64)
            )
        );
    }

    #[test]
    fn invalid_values() {
        assert_eq!(
            parse_err("a=-b"),
            format!(
                "unable to parse requirement: values[0][a]: Invalid value: \"-b\": {VALUE_MSG}"
            )
        );
        // Values are sorted before validation, so the index is the sorted one.
        assert_eq!(
            parse_err("a in (z, b.)"),
            format!(
                "unable to parse requirement: values[0][a]: Invalid value: \"b.\": {VALUE_MSG}"
            )
        );
        assert_eq!(
            parse_err("a in (-x, -y)"),
            format!(
                "unable to parse requirement: [values[0][a]: Invalid value: \"-x\": {VALUE_MSG}, values[1][a]: Invalid value: \"-y\": {VALUE_MSG}]"
            )
        );
        assert_eq!(
            parse_err(&format!("a={}", "v".repeat(64))),
            format!(
                "unable to parse requirement: values[0][a]: Invalid value: \"{}\": must be no more than 63 characters",
                "v".repeat(64)
            )
        );
    }

    #[test]
    fn integer_comparisons_need_integers() {
        assert_eq!(
            parse_err("a>b"),
            "unable to parse requirement: values[0]: Invalid value: \"b\": for 'Gt', 'Lt' operators, the value must be an integer"
        );
        assert_eq!(
            parse_err("a<"),
            "unable to parse requirement: values[0]: Invalid value: \"\": for 'Gt', 'Lt' operators, the value must be an integer"
        );
        // A negative bound is an integer but not a valid label value.
        assert_eq!(
            parse_err("a>-1"),
            format!(
                "unable to parse requirement: values[0][a]: Invalid value: \"-1\": {VALUE_MSG}"
            )
        );
    }

    #[test]
    fn matching_every_operator() {
        let l = labels(json!({"app": "web", "tier": "frontend", "replicas": "5", "empty": ""}));
        let cases = [
            ("app=web", true),
            ("app=db", false),
            ("app==web", true),
            ("app!=db", true),
            ("app!=web", false),
            ("missing!=x", true),
            ("missing=x", false),
            ("app in (db, web)", true),
            ("app in (db)", false),
            ("missing in (x)", false),
            ("app notin (db)", true),
            ("app notin (web)", false),
            ("missing notin (x)", true),
            ("app", true),
            ("missing", false),
            ("!missing", true),
            ("!app", false),
            ("replicas>4", true),
            ("replicas>5", false),
            ("replicas<6", true),
            ("replicas<5", false),
            ("app>1", false),
            ("missing<9", false),
            ("empty=", true),
            ("empty", true),
            ("empty in ()", true),
            ("app in ()", false),
            ("app=web,tier=frontend", true),
            ("app=web,tier=backend", false),
            ("", true),
        ];
        for (selector, expected) in cases {
            assert_eq!(parse(selector).matches(&l), expected, "{selector}");
        }
    }

    #[test]
    fn matching_objects() {
        let pod = json!({"metadata": {"name": "p", "labels": {"app": "web"}}});
        let bare = json!({"metadata": {"name": "p"}});
        assert!(parse("app=web").matches_object(&pod));
        assert!(!parse("app=web").matches_object(&bare));
        assert!(parse("!app").matches_object(&bare));
        assert!(parse("app notin (web)").matches_object(&bare));
        assert!(parse("").matches_object(&json!({})));
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "a=b",
            "a==b",
            "a!=b",
            "a in (b,c)",
            "a notin (b,c)",
            "a",
            "!a",
            "a>3",
            "a<3",
            "a in ()",
            "a=",
            "a in (,b)",
            "app=x,tier in (a,b)",
        ] {
            let selector = parse(s);
            assert_eq!(selector.to_string(), s);
            assert_eq!(parse(&selector.to_string()), selector);
        }
        assert_eq!(parse("b in (z,y,x),a").to_string(), "a,b in (x,y,z)");
    }

    #[test]
    fn exact_match_lookup() {
        let selector = parse("a=1,b in (2),c in (3,4),d!=5,e==6");
        assert_eq!(selector.requires_exact_match("a"), Some("1"));
        assert_eq!(selector.requires_exact_match("b"), Some("2"));
        assert_eq!(selector.requires_exact_match("c"), None);
        assert_eq!(selector.requires_exact_match("d"), None);
        assert_eq!(selector.requires_exact_match("e"), Some("6"));
        assert_eq!(selector.requires_exact_match("f"), None);
    }

    #[test]
    fn from_api_selector() {
        let selector = LabelSelector::from_api(&json!({
            "matchLabels": {"tier": "frontend", "app": "x"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "dev"]},
                {"key": "zone", "operator": "NotIn", "values": ["b"]},
                {"key": "gpu", "operator": "Exists"},
                {"key": "legacy", "operator": "DoesNotExist", "values": []},
            ]
        }));
        let selector = match selector {
            Ok(selector) => selector,
            Err(err) => panic!("{err}"),
        };
        assert_eq!(
            selector.to_string(),
            "app=x,env in (dev,prod),gpu,!legacy,tier=frontend,zone notin (b)"
        );
        let matching = labels(json!({"app": "x", "tier": "frontend", "env": "dev", "gpu": "1"}));
        assert!(selector.matches(&matching));
        let mut wrong_zone = matching.clone();
        wrong_zone.insert("zone".into(), json!("b"));
        assert!(!selector.matches(&wrong_zone));
    }

    #[test]
    fn from_api_empty_and_null() {
        let all = [
            json!({}),
            json!({"matchLabels": {}}),
            json!({"matchExpressions": []}),
        ];
        for value in all {
            let selector = LabelSelector::from_api(&value);
            assert_eq!(selector, Ok(LabelSelector::everything()), "{value}");
        }
        let none = LabelSelector::from_api(&Value::Null);
        assert_eq!(none, Ok(LabelSelector::nothing()));
        let none = LabelSelector::nothing();
        assert!(!none.is_empty());
        assert!(!none.matches(&Map::new()));
        assert!(!none.matches_object(&json!({"metadata": {"labels": {"a": "b"}}})));
        assert_eq!(none.to_string(), "");
    }

    #[test]
    fn from_api_errors() {
        let err = |value: Value| match LabelSelector::from_api(&value) {
            Ok(selector) => panic!("{value} should fail, got {selector}"),
            Err(err) => err.to_string(),
        };
        assert_eq!(
            err(json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]})),
            "values: Invalid value: null: for 'in', 'notin' operators, values set can't be empty"
        );
        assert_eq!(
            err(json!({"matchExpressions": [{"key": "a", "operator": "NotIn"}]})),
            "values: Invalid value: null: for 'in', 'notin' operators, values set can't be empty"
        );
        assert_eq!(
            err(json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]})),
            "values: Invalid value: [\"x\"]: values set must be empty for exists and does not exist"
        );
        assert_eq!(
            err(json!({"matchExpressions": [{"key": "a", "operator": "DoesNotExist", "values": ["x", "y"]}]})),
            "values: Invalid value: [\"x\",\"y\"]: values set must be empty for exists and does not exist"
        );
        assert_eq!(
            err(json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]})),
            "\"Gt\" is not a valid label selector operator"
        );
        assert_eq!(
            err(json!({"matchExpressions": [{"key": "a"}]})),
            "\"\" is not a valid label selector operator"
        );
        assert_eq!(
            err(json!({"matchLabels": {"a": "-x"}})),
            format!("values[0][a]: Invalid value: \"-x\": {VALUE_MSG}")
        );
        assert_eq!(
            err(json!({"matchLabels": {"-a": "x"}})),
            format!("key: Invalid value: \"-a\": {NAME_PART_MSG}")
        );
        assert_eq!(
            err(json!({"matchExpressions": [{"key": "-a", "operator": "In", "values": []}]})),
            format!("[key: Invalid value: \"-a\": {NAME_PART_MSG}, values: Invalid value: null: for 'in', 'notin' operators, values set can't be empty]")
        );
        assert_eq!(err(json!([])), "label selector: must be an object");
        assert_eq!(
            err(json!({"matchLabels": []})),
            "matchLabels: must be an object"
        );
        assert_eq!(
            err(json!({"matchLabels": {"a": 1}})),
            "matchLabels[a]: must be a string"
        );
        assert_eq!(
            err(json!({"matchExpressions": {}})),
            "matchExpressions: must be an array"
        );
        assert_eq!(
            err(json!({"matchExpressions": [{"key": "a", "operator": "In", "values": "x"}]})),
            "matchExpressions[0].values: must be an array"
        );
    }

    #[test]
    fn from_plain_map() {
        let selector = LabelSelector::from_map(&labels(json!({"tier": "db", "app": "redis"})));
        let selector = match selector {
            Ok(selector) => selector,
            Err(err) => panic!("{err}"),
        };
        assert_eq!(selector.to_string(), "app=redis,tier=db");
        assert!(selector.matches(&labels(json!({"app": "redis", "tier": "db", "x": "y"}))));
        assert!(!selector.matches(&labels(json!({"app": "redis"}))));
        assert_eq!(
            LabelSelector::from_map(&Map::new()),
            Ok(LabelSelector::everything())
        );
        assert_eq!(
            LabelSelector::from_map(&labels(json!({"a": "b c"}))).map_err(|e| e.to_string()),
            Err(format!("values[0][a]: Invalid value: \"b c\": {VALUE_MSG}"))
        );
    }

    #[test]
    fn requirement_new_checks_value_counts() {
        let err = |op, values: &[&str]| {
            Requirement::new("k", op, values.iter().map(|v| v.to_string()).collect())
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            err(Operator::Equals, &["a", "b"]),
            Err("values: Invalid value: [\"a\",\"b\"]: exact-match compatibility requires one single value".to_string())
        );
        assert_eq!(
            err(Operator::GreaterThan, &["1", "2"]),
            Err("values: Invalid value: [\"1\",\"2\"]: for 'Gt', 'Lt' operators, exactly one value is required".to_string())
        );
        assert!(err(Operator::LessThan, &["7"]).is_ok());
        assert!(err(Operator::Exists, &[]).is_ok());
    }

    #[test]
    fn non_ascii_input_is_rejected_not_panicking() {
        assert_eq!(
            parse_err("é=x"),
            format!("unable to parse requirement: <nil>: Invalid value: \"é\": {NAME_PART_MSG}")
        );
        assert!(LabelSelector::parse("a=é").is_err());
        assert!(LabelSelector::parse("a in (b,é)").is_err());
    }

    #[test]
    fn from_str_matches_parse() {
        let parsed: Result<LabelSelector, _> = "a=b".parse();
        assert_eq!(parsed, LabelSelector::parse("a=b"));
    }
}
