//! A small builder that turns decoded protobuf messages into the JSON that Go's
//! `encoding/json` writes for the same Kubernetes object.
//!
//! The generated k8s-pb structs make every scalar an `Option`, because the
//! `.proto` files are proto2 with `optional` everywhere. That alone does not
//! say what Go's JSON would show: Go writes *every* non-pointer field into
//! protobuf, including empty strings and zeros, and only its JSON tags decide
//! whether those show up in JSON. So each field is added with the method that
//! matches its Go declaration:
//!
//! | Go field                           | method                     | JSON                                   |
//! |------------------------------------|----------------------------|----------------------------------------|
//! | `T` with `omitempty`               | `str` / `int` / `bool`     | left out when zero                     |
//! | `T` without `omitempty`            | `*_req`                    | always written, zero when unset        |
//! | `*T`                               | `*_ptr`                    | written whenever set, even to zero     |
//! | struct value                       | `val`                      | always written (Go never omits one)    |
//! | struct pointer                     | `ptr`                      | written whenever set                   |
//! | embedded struct (`json:",inline"`) | `inline`                   | its fields merged into the parent      |
//! | slice or map                       | `list` / `strs` / `str_map` ... | left out when empty               |
//!
//! Two deliberate differences from Go, both invisible to any reader that
//! decodes the JSON into Kubernetes types: a zero `metav1.Time` is left out
//! where Go writes `null` (every `creationTimestamp` of a create body), and an
//! empty slice whose tag lacks `omitempty` is left out where Go writes `null`.

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Map, Value};

use crate::ProtobufError;

/// What every converter returns.
pub(crate) type Res = Result<Value, ProtobufError>;

/// A JSON object being filled field by field.
///
/// The first conversion error is kept and returned by [`Obj::done`], so that
/// converters read as one chain of field declarations instead of a `?` on
/// every line. The error's path is prefixed with the field name on the way up.
pub(crate) struct Obj {
    map: Map<String, Value>,
    err: Option<ProtobufError>,
}

impl Obj {
    pub(crate) fn new() -> Self {
        Obj {
            map: Map::new(),
            err: None,
        }
    }

    /// The finished object, or the first error met while filling it.
    pub(crate) fn done(self) -> Res {
        match self.err {
            Some(e) => Err(e),
            None => Ok(Value::Object(self.map)),
        }
    }

    fn put(&mut self, key: &str, value: Res) {
        match value {
            Ok(v) => {
                self.map.insert(key.to_owned(), v);
            }
            Err(e) => {
                if self.err.is_none() {
                    self.err = Some(e.within(key));
                }
            }
        }
    }

    fn set(mut self, key: &str, value: Value) -> Self {
        self.map.insert(key.to_owned(), value);
        self
    }

    // ----- strings -----

    /// Go `string` with `omitempty`.
    pub(crate) fn str(self, key: &str, v: &Option<String>) -> Self {
        match v {
            Some(s) if !s.is_empty() => self.set(key, Value::String(s.clone())),
            _ => self,
        }
    }

    /// Go `string` without `omitempty`: always written.
    pub(crate) fn str_req(self, key: &str, v: &Option<String>) -> Self {
        let s = v.clone().unwrap_or_default();
        self.set(key, Value::String(s))
    }

    /// Go `*string`: written whenever the client set it, even to "".
    pub(crate) fn str_ptr(self, key: &str, v: &Option<String>) -> Self {
        match v {
            Some(s) => self.set(key, Value::String(s.clone())),
            None => self,
        }
    }

    // ----- integers -----

    /// Go `int32`/`int64` with `omitempty`.
    pub(crate) fn int<T: Copy + Into<i64>>(self, key: &str, v: Option<T>) -> Self {
        match v.map(Into::into) {
            Some(n) if n != 0 => self.set(key, Value::from(n)),
            _ => self,
        }
    }

    /// Go `int32`/`int64` without `omitempty`: always written.
    pub(crate) fn int_req<T: Copy + Into<i64>>(self, key: &str, v: Option<T>) -> Self {
        let n: i64 = v.map(Into::into).unwrap_or(0);
        self.set(key, Value::from(n))
    }

    /// Go `*int32`/`*int64`: written whenever set; `replicas: 0` must survive.
    pub(crate) fn int_ptr<T: Copy + Into<i64>>(self, key: &str, v: Option<T>) -> Self {
        match v {
            Some(n) => self.set(key, Value::from(n.into())),
            None => self,
        }
    }

    // ----- booleans -----

    /// Go `bool` with `omitempty`.
    pub(crate) fn bool(self, key: &str, v: Option<bool>) -> Self {
        match v {
            Some(true) => self.set(key, Value::Bool(true)),
            _ => self,
        }
    }

    /// Go `bool` without `omitempty`: always written.
    pub(crate) fn bool_req(self, key: &str, v: Option<bool>) -> Self {
        self.set(key, Value::Bool(v.unwrap_or(false)))
    }

    /// Go `*bool`: written whenever set, so an explicit `false` survives.
    pub(crate) fn bool_ptr(self, key: &str, v: Option<bool>) -> Self {
        match v {
            Some(b) => self.set(key, Value::Bool(b)),
            None => self,
        }
    }

    // ----- slices and maps (all `omitempty` in practice) -----

    /// `[]string`.
    pub(crate) fn strs(self, key: &str, v: &[String]) -> Self {
        if v.is_empty() {
            return self;
        }
        let items = v.iter().cloned().map(Value::String).collect();
        self.set(key, Value::Array(items))
    }

    /// `[]int32` / `[]int64`.
    pub(crate) fn ints<T: Copy + Into<i64>>(self, key: &str, v: &[T]) -> Self {
        if v.is_empty() {
            return self;
        }
        let items = v.iter().map(|n| Value::from((*n).into())).collect();
        self.set(key, Value::Array(items))
    }

    /// `map[string]string`.
    pub(crate) fn str_map(self, key: &str, v: &BTreeMap<String, String>) -> Self {
        if v.is_empty() {
            return self;
        }
        let m = v
            .iter()
            .map(|(k, s)| (k.clone(), Value::String(s.clone())))
            .collect();
        self.set(key, Value::Object(m))
    }

    /// `map[string][]byte`: Go writes `[]byte` as standard padded base64.
    pub(crate) fn bytes_map(self, key: &str, v: &BTreeMap<String, Vec<u8>>) -> Self {
        if v.is_empty() {
            return self;
        }
        let m = v.iter().map(|(k, b)| (k.clone(), bytes(b))).collect();
        self.set(key, Value::Object(m))
    }

    /// `map[string]resource.Quantity` (`ResourceList`).
    pub(crate) fn quantity_map(self, key: &str, v: &BTreeMap<String, Quantity>) -> Self {
        if v.is_empty() {
            return self;
        }
        let m = v.iter().map(|(k, q)| (k.clone(), quantity(q))).collect();
        self.set(key, Value::Object(m))
    }

    /// A slice of structs, each converted by `f`.
    pub(crate) fn list<T>(mut self, key: &str, v: &[T], f: impl Fn(&T) -> Res) -> Self {
        if v.is_empty() {
            return self;
        }
        let items: Result<Vec<Value>, ProtobufError> = v
            .iter()
            .enumerate()
            .map(|(i, item)| f(item).map_err(|e| e.within(&format!("[{i}]"))))
            .collect();
        self.put(key, items.map(Value::Array));
        self
    }

    // ----- nested structs -----

    /// Go `*Struct`: written whenever set.
    pub(crate) fn ptr<T>(mut self, key: &str, v: &Option<T>, f: impl FnOnce(&T) -> Res) -> Self {
        if let Some(inner) = v {
            self.put(key, f(inner));
        }
        self
    }

    /// Go `Struct` (a value, not a pointer): Go's `omitempty` never leaves a
    /// struct out, so it is written even when the message did not carry it
    /// (`"resources": {}`, `"strategy": {}`, `"status": {}`).
    pub(crate) fn val<T: Default>(
        mut self,
        key: &str,
        v: &Option<T>,
        f: impl FnOnce(&T) -> Res,
    ) -> Self {
        let value = match v {
            Some(inner) => f(inner),
            None => f(&T::default()),
        };
        self.put(key, value);
        self
    }

    /// An embedded struct (`json:",inline"`): its fields become this object's.
    pub(crate) fn inline<T>(mut self, v: &Option<T>, f: impl FnOnce(&T) -> Res) -> Self {
        let Some(inner) = v else { return self };
        match f(inner) {
            Ok(Value::Object(fields)) => self.map.extend(fields),
            Ok(_) => {}
            Err(e) => {
                if self.err.is_none() {
                    self.err = Some(e);
                }
            }
        }
        self
    }

    // ----- Kubernetes scalar types -----

    /// `metav1.Time` or `*metav1.Time`; a zero time is left out.
    pub(crate) fn time(mut self, key: &str, v: &Option<Time>) -> Self {
        if let Some(t) = v {
            if let Some(value) = time_value(t.seconds, t.nanos, false).transpose() {
                self.put(key, value);
            }
        }
        self
    }

    /// `metav1.MicroTime` or `*metav1.MicroTime`; a zero time is left out.
    pub(crate) fn micro_time(mut self, key: &str, v: &Option<MicroTime>) -> Self {
        if let Some(t) = v {
            if let Some(value) = time_value(t.seconds, t.nanos, true).transpose() {
                self.put(key, value);
            }
        }
        self
    }

    /// `resource.Quantity` as a value: always written, `"0"` when unset.
    pub(crate) fn quantity_val(self, key: &str, v: &Option<Quantity>) -> Self {
        let q = v.clone().unwrap_or_default();
        self.set(key, quantity(&q))
    }

    /// `*resource.Quantity`.
    pub(crate) fn quantity_ptr(self, key: &str, v: &Option<Quantity>) -> Self {
        match v {
            Some(q) => self.set(key, quantity(q)),
            None => self,
        }
    }

    /// `intstr.IntOrString` as a value: always written, `0` when unset.
    pub(crate) fn int_or_string_val(self, key: &str, v: &Option<IntOrString>) -> Self {
        let ios = v.clone().unwrap_or_default();
        self.val(key, &Some(ios), int_or_string)
    }

    /// `*intstr.IntOrString`.
    pub(crate) fn int_or_string_ptr(self, key: &str, v: &Option<IntOrString>) -> Self {
        self.ptr(key, v, int_or_string)
    }
}

/// `[]byte` as Go's JSON writes it.
pub(crate) fn bytes(b: &[u8]) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(b))
}

/// A Quantity travels as its canonical string in protobuf too, so the string
/// is the JSON form. Go's zero Quantity prints as "0".
fn quantity(q: &Quantity) -> Value {
    match q.string.as_deref() {
        Some(s) if !s.is_empty() => Value::String(s.to_owned()),
        _ => Value::String("0".to_owned()),
    }
}

/// IntOrString is `{type, intVal, strVal}` in protobuf and a bare number or
/// string in JSON; type 0 is Int and 1 is String, as in Go.
fn int_or_string(v: &IntOrString) -> Res {
    match v.r#type.unwrap_or(0) {
        0 => Ok(Value::from(v.int_val.unwrap_or(0))),
        1 => Ok(Value::String(v.str_val.clone().unwrap_or_default())),
        other => Err(ProtobufError::invalid(format!(
            "IntOrString has unknown type {other} (0 is int, 1 is string)"
        ))),
    }
}

/// Seconds since the Unix epoch of Go's zero `time.Time` (0001-01-01T00:00:00Z).
const GO_ZERO_TIME_UNIX: i64 = -62_135_596_800;

/// Formats a protobuf Timestamp the way `metav1.Time` (whole seconds) or
/// `metav1.MicroTime` (six fraction digits) marshal to JSON, always in UTC.
/// `Ok(None)` for the zero time, which Go sends as an empty message.
fn time_value(
    seconds: Option<i64>,
    nanos: Option<i32>,
    micro: bool,
) -> Result<Option<Value>, ProtobufError> {
    if seconds.is_none() && nanos.is_none() {
        return Ok(None);
    }
    let nanos = i64::from(nanos.unwrap_or(0));
    // time.Unix in Go accepts nanoseconds outside [0, 1e9) and carries them.
    let secs = seconds
        .unwrap_or(0)
        .checked_add(nanos.div_euclid(1_000_000_000))
        .ok_or_else(|| ProtobufError::invalid("timestamp out of range"))?;
    let nanos = nanos.rem_euclid(1_000_000_000);
    if secs == GO_ZERO_TIME_UNIX && nanos == 0 {
        return Ok(None);
    }
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    // Go refuses to marshal a Time outside these years, so no JSON form exists.
    if !(0..=9999).contains(&year) {
        return Err(ProtobufError::invalid(format!(
            "timestamp {secs} lies outside the years 0 to 9999"
        )));
    }
    let (h, m, s) = (of_day / 3600, of_day % 3600 / 60, of_day % 60);
    let text = if micro {
        let micros = nanos / 1000;
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{micros:06}Z")
    } else {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
    };
    Ok(Some(Value::String(text)))
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day), after
/// Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seconds: Option<i64>, nanos: Option<i32>, micro: bool) -> Option<Value> {
        time_value(seconds, nanos, micro).expect("in range")
    }

    #[test]
    fn formats_times_like_go() {
        assert_eq!(
            t(Some(0), None, false),
            Some(Value::from("1970-01-01T00:00:00Z"))
        );
        assert_eq!(
            t(Some(1_767_323_045), Some(999_999_999), false),
            Some(Value::from("2026-01-02T03:04:05Z"))
        );
        assert_eq!(
            t(Some(1_767_323_045), Some(123_456_789), true),
            Some(Value::from("2026-01-02T03:04:05.123456Z"))
        );
        assert_eq!(
            t(Some(951_782_400), None, false),
            Some(Value::from("2000-02-29T00:00:00Z"))
        );
        assert_eq!(
            t(Some(-1), None, false),
            Some(Value::from("1969-12-31T23:59:59Z"))
        );
        assert_eq!(t(None, None, false), None);
        assert_eq!(t(Some(GO_ZERO_TIME_UNIX), Some(0), false), None);
        assert!(time_value(Some(i64::MAX / 2), None, false).is_err());
    }

    #[test]
    fn int_or_string_forms() {
        let int = IntOrString {
            r#type: Some(0),
            int_val: Some(8080),
            str_val: Some(String::new()),
        };
        let s = IntOrString {
            r#type: Some(1),
            int_val: Some(0),
            str_val: Some("http".into()),
        };
        let bad = IntOrString {
            r#type: Some(7),
            int_val: None,
            str_val: None,
        };
        assert_eq!(int_or_string(&int).ok(), Some(Value::from(8080)));
        assert_eq!(int_or_string(&s).ok(), Some(Value::from("http")));
        assert!(int_or_string(&bad).is_err());
    }

    #[test]
    fn errors_carry_their_path() {
        let bad = IntOrString {
            r#type: Some(9),
            int_val: None,
            str_val: None,
        };
        let inner = |_: &()| {
            Obj::new()
                .int_or_string_ptr("port", &Some(bad.clone()))
                .done()
        };
        let err = Obj::new()
            .list("ports", &[(), ()], inner)
            .done()
            .expect_err("bad type");
        match err {
            ProtobufError::InvalidValue { path, .. } => assert_eq!(path, "ports[0].port"),
            other => panic!("unexpected {other}"),
        }
    }
}
