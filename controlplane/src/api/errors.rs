//! API errors, rendered as Kubernetes `Status` objects.
//!
//! kubectl prints `Error from server (<reason>): <message>`, and clients
//! branch on `reason` and `code` (409 AlreadyExists versus Conflict, 410
//! Expired to relist), so both follow the real apiserver's wording.

use serde_json::{json, Value};

use super::resources::ResourceInfo;

/// One invalid field, as listed in an `Invalid` Status's `details.causes`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub kind: FieldErrorKind,
    pub detail: String,
    pub value: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    Required,
    Invalid,
    Duplicate,
    NotSupported,
    Forbidden,
    TooLong,
}

impl FieldErrorKind {
    fn reason(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::Duplicate => "FieldValueDuplicate",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::TooLong => "FieldValueTooLong",
        }
    }

    fn words(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::Invalid => "Invalid value",
            FieldErrorKind::Duplicate => "Duplicate value",
            FieldErrorKind::NotSupported => "Unsupported value",
            FieldErrorKind::Forbidden => "Forbidden",
            FieldErrorKind::TooLong => "Too long",
        }
    }
}

impl FieldError {
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Required,
            detail: detail.into(),
            value: None,
        }
    }

    pub fn invalid(
        field: impl Into<String>,
        value: impl std::fmt::Display,
        detail: impl Into<String>,
    ) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Invalid,
            detail: detail.into(),
            value: Some(value.to_string()),
        }
    }

    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Forbidden,
            detail: detail.into(),
            value: None,
        }
    }

    pub fn not_supported(
        field: impl Into<String>,
        value: impl std::fmt::Display,
        allowed: &[&str],
    ) -> Self {
        let allowed: Vec<String> = allowed.iter().map(|value| format!("\"{value}\"")).collect();
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::NotSupported,
            detail: format!("supported values: {}", allowed.join(", ")),
            value: Some(value.to_string()),
        }
    }

    pub fn duplicate(field: impl Into<String>, value: impl std::fmt::Display) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Duplicate,
            detail: String::new(),
            value: Some(value.to_string()),
        }
    }

    /// The text Kubernetes prints for one field error.
    pub fn message(&self) -> String {
        format!("{}: {}", self.field, self.detail_message())
    }

    /// The message without the field, as a Status cause carries it (the
    /// field travels separately, and kubectl joins the two).
    pub fn detail_message(&self) -> String {
        let mut text = self.kind.words().to_owned();
        if let Some(value) = &self.value {
            if self.kind != FieldErrorKind::Required {
                text.push_str(&format!(": \"{value}\""));
            }
        }
        if !self.detail.is_empty() {
            text.push_str(&format!(": {}", self.detail));
        }
        text
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("Unauthorized")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{message}")]
    NotFound {
        message: String,
        name: String,
        kind: String,
        group: String,
    },
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    NotAcceptable(String),
    #[error("{message}")]
    AlreadyExists {
        message: String,
        name: String,
        kind: String,
        group: String,
    },
    #[error("{message}")]
    Conflict {
        message: String,
        name: String,
        kind: String,
        group: String,
    },
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    RequestEntityTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{message}")]
    Invalid {
        message: String,
        name: String,
        kind: String,
        group: String,
        causes: Vec<FieldError>,
    },
    #[error("{0}")]
    Internal(String),
    #[error("{0}")]
    ServiceUnavailable(String),
}

impl ApiError {
    pub fn not_found(info: &ResourceInfo, name: &str) -> Self {
        ApiError::NotFound {
            message: format!("{} \"{name}\" not found", info.qualified_name()),
            name: name.to_owned(),
            kind: info.plural.to_owned(),
            group: info.group.to_owned(),
        }
    }

    pub fn already_exists(info: &ResourceInfo, name: &str) -> Self {
        ApiError::AlreadyExists {
            message: format!("{} \"{name}\" already exists", info.qualified_name()),
            name: name.to_owned(),
            kind: info.plural.to_owned(),
            group: info.group.to_owned(),
        }
    }

    pub fn conflict(info: &ResourceInfo, name: &str) -> Self {
        ApiError::Conflict {
            message: format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                info.qualified_name()
            ),
            name: name.to_owned(),
            kind: info.plural.to_owned(),
            group: info.group.to_owned(),
        }
    }

    pub fn invalid(info: &ResourceInfo, name: &str, causes: Vec<FieldError>) -> Self {
        let listed: Vec<String> = causes.iter().map(FieldError::message).collect();
        let summary = if listed.len() == 1 {
            listed[0].clone()
        } else {
            format!("[{}]", listed.join(", "))
        };
        let kind = if info.group.is_empty() {
            info.kind.to_owned()
        } else {
            format!("{}.{}", info.kind, info.group)
        };
        ApiError::Invalid {
            message: format!("{kind} \"{name}\" is invalid: {summary}"),
            name: name.to_owned(),
            kind: info.kind.to_owned(),
            group: info.group.to_owned(),
            causes,
        }
    }

    pub fn code(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::Unauthorized => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::NotFound { .. } => 404,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::NotAcceptable(_) => 406,
            ApiError::AlreadyExists { .. } | ApiError::Conflict { .. } => 409,
            ApiError::Gone(_) => 410,
            ApiError::RequestEntityTooLarge(_) => 413,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::Invalid { .. } => 422,
            ApiError::Internal(_) => 500,
            ApiError::ServiceUnavailable(_) => 503,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::NotFound { .. } => "NotFound",
            ApiError::MethodNotAllowed(_) => "MethodNotAllowed",
            ApiError::NotAcceptable(_) => "NotAcceptable",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } => "Conflict",
            ApiError::Gone(_) => "Expired",
            ApiError::RequestEntityTooLarge(_) => "RequestEntityTooLarge",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::Internal(_) => "InternalError",
            ApiError::ServiceUnavailable(_) => "ServiceUnavailable",
        }
    }

    /// The `Status` object for this error.
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code(),
        });
        let details = match self {
            ApiError::NotFound {
                name, kind, group, ..
            }
            | ApiError::AlreadyExists {
                name, kind, group, ..
            }
            | ApiError::Conflict {
                name, kind, group, ..
            } => Some(json!({"name": name, "group": group, "kind": kind})),
            ApiError::Invalid {
                name,
                kind,
                group,
                causes,
                ..
            } => {
                let causes: Vec<Value> = causes
                    .iter()
                    .map(|cause| {
                        json!({"reason": cause.kind.reason(), "message": cause.detail_message(), "field": cause.field})
                    })
                    .collect();
                Some(json!({"name": name, "group": group, "kind": kind, "causes": causes}))
            }
            _ => None,
        };
        if let Some(details) = details {
            status["details"] = details;
        }
        status
    }
}

impl From<skiff_store::StoreError> for ApiError {
    fn from(error: skiff_store::StoreError) -> Self {
        match error {
            skiff_store::StoreError::Compacted { requested, oldest } => {
                ApiError::Gone(format!("too old resource version: {requested} ({oldest})"))
            }
            other => ApiError::Internal(format!("storage error: {other}")),
        }
    }
}
