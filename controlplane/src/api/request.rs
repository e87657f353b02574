//! Parsing of an HTTP request line into what the client asks for.
//!
//! This layer only parses: a method, path and query become an
//! [`ApiRequest`], a plain enum the handlers act on. Unknown query
//! parameters are ignored, as kubectl sends several the server need not
//! understand (`fieldManager`, `timeout`, ...).

use std::collections::HashMap;

use super::errors::ApiError;
use super::resources::{self, ResourceInfo};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
}

/// A subresource named in the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubresourcePath {
    Status,
    Scale,
    /// Anything else (`log`, `exec`, `finalize`, ...): handled or refused by name.
    Other(String),
}

/// Where a request points: a resource, maybe a namespace, name and
/// subresource.
#[derive(Debug, Clone)]
pub struct Target {
    pub info: &'static ResourceInfo,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<SubresourcePath>,
}

#[derive(Debug, Clone)]
pub enum ApiRequest {
    Health,
    CaCerts,
    Version,
    OpenApiV2,
    OpenApiV3,
    CoreVersions,
    GroupList,
    Group(String),
    ResourceList { group: String, version: String },
    Resource { verb: Verb, target: Target },
}

/// Query parameters the handlers use, already decoded.
#[derive(Debug, Default, Clone)]
pub struct Query {
    pub params: HashMap<String, Vec<String>>,
}

impl Query {
    pub fn parse(query: Option<&str>) -> Query {
        let mut params: HashMap<String, Vec<String>> = HashMap::new();
        if let Some(query) = query {
            for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
                params
                    .entry(key.into_owned())
                    .or_default()
                    .push(value.into_owned());
            }
        }
        Query { params }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .get(key)
            .and_then(|values| values.first())
            .map(String::as_str)
    }

    pub fn all(&self, key: &str) -> &[String] {
        self.params.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// A boolean parameter, read as Go's `strconv.ParseBool` reads it:
    /// clients send `true`, `True` (the Python client) or `1`.
    pub fn flag(&self, key: &str) -> bool {
        matches!(
            self.get(key),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True")
        )
    }
}

fn not_found() -> ApiError {
    ApiError::NotFound {
        message: "the server could not find the requested resource".into(),
        name: String::new(),
        kind: String::new(),
        group: String::new(),
    }
}

/// Parses the method and path of a request.
pub fn parse(method: &http::Method, path: &str, query: &Query) -> Result<ApiRequest, ApiError> {
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segments.as_slice() {
        ["healthz"] | ["readyz"] | ["livez"] => return Ok(ApiRequest::Health),
        ["healthz" | "readyz" | "livez", ..] => return Ok(ApiRequest::Health),
        ["version"] => return Ok(ApiRequest::Version),
        // The cluster CA, for agents about to join (see `nodeapi::token`).
        ["cacerts"] => return Ok(ApiRequest::CaCerts),
        ["openapi", "v2"] | ["swagger-2.0.0.pb-v1"] | ["swagger.json"] => {
            return Ok(ApiRequest::OpenApiV2)
        }
        ["openapi", "v3", ..] => return Ok(ApiRequest::OpenApiV3),
        ["api"] => return Ok(ApiRequest::CoreVersions),
        ["apis"] => return Ok(ApiRequest::GroupList),
        ["api", version] => {
            return Ok(ApiRequest::ResourceList {
                group: String::new(),
                version: version.to_string(),
            })
        }
        ["apis", group] => return Ok(ApiRequest::Group(group.to_string())),
        ["apis", group, version] => {
            return Ok(ApiRequest::ResourceList {
                group: group.to_string(),
                version: version.to_string(),
            })
        }
        _ => {}
    }
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(not_found()),
    };
    let lookup = |plural: &str| resources::find(group, version, plural).ok_or_else(not_found);

    // `namespaces/{ns}/{resource}/...` addresses namespaced resources;
    // `namespaces/{name}[/status]` is the Namespace object itself.
    let target = match rest {
        ["namespaces", namespace, plural, tail @ ..]
            if !matches!(*plural, "status" | "finalize") || !tail.is_empty() =>
        {
            let info = lookup(plural)?;
            if !info.namespaced {
                return Err(not_found());
            }
            target(info, Some(namespace.to_string()), tail)?
        }
        [plural, tail @ ..] => {
            let info = lookup(plural)?;
            // A namespaced resource without a namespace is the
            // all-namespaces collection; it has no named members.
            if info.namespaced && !tail.is_empty() {
                return Err(not_found());
            }
            target(info, None, tail)?
        }
        [] => return Err(not_found()),
    };

    let verb = match (method.as_str(), target.name.is_some()) {
        ("GET", true) => Verb::Get,
        ("GET", false) if query.flag("watch") => Verb::Watch,
        ("GET", false) => Verb::List,
        ("POST", false) => Verb::Create,
        ("POST", true) if target.subresource.is_some() => Verb::Create,
        ("PUT", true) => Verb::Update,
        ("PATCH", true) => Verb::Patch,
        ("DELETE", true) => Verb::Delete,
        ("DELETE", false) => Verb::DeleteCollection,
        (method, _) => {
            return Err(ApiError::MethodNotAllowed(format!(
                "the server does not allow this method on the requested resource ({method} {path})"
            )))
        }
    };
    Ok(ApiRequest::Resource { verb, target })
}

fn target(
    info: &'static ResourceInfo,
    namespace: Option<String>,
    tail: &[&str],
) -> Result<Target, ApiError> {
    let (name, subresource) = match tail {
        [] => (None, None),
        [name] => (Some(name.to_string()), None),
        [name, "status"] => (Some(name.to_string()), Some(SubresourcePath::Status)),
        [name, "scale"] => (Some(name.to_string()), Some(SubresourcePath::Scale)),
        [name, other] => (
            Some(name.to_string()),
            Some(SubresourcePath::Other(other.to_string())),
        ),
        _ => return Err(not_found()),
    };
    Ok(Target {
        info,
        namespace,
        name,
        subresource,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn resource(method: Method, path: &str, query: &str) -> (Verb, Target) {
        match parse(&method, path, &Query::parse(Some(query))).expect("parse") {
            ApiRequest::Resource { verb, target } => (verb, target),
            other => panic!("expected a resource request, got {other:?}"),
        }
    }

    #[test]
    fn namespaced_paths() {
        let (verb, target) = resource(Method::GET, "/api/v1/namespaces/default/pods", "limit=500");
        assert_eq!(verb, Verb::List);
        assert_eq!(
            (target.info.plural, target.namespace.as_deref()),
            ("pods", Some("default"))
        );

        let (verb, target) = resource(
            Method::PATCH,
            "/apis/apps/v1/namespaces/ns1/deployments/web/scale",
            "",
        );
        assert_eq!(verb, Verb::Patch);
        assert_eq!(target.name.as_deref(), Some("web"));
        assert_eq!(target.subresource, Some(SubresourcePath::Scale));

        let (verb, _) = resource(
            Method::GET,
            "/api/v1/namespaces/default/pods",
            "watch=true&resourceVersion=5",
        );
        assert_eq!(verb, Verb::Watch);
    }

    #[test]
    fn namespace_objects_versus_namespaced_collections() {
        let (verb, target) = resource(Method::GET, "/api/v1/namespaces/kube-system", "");
        assert_eq!(
            (verb, target.info.plural, target.name.as_deref()),
            (Verb::Get, "namespaces", Some("kube-system"))
        );
        let (_, target) = resource(Method::PUT, "/api/v1/namespaces/x/status", "");
        assert_eq!(
            (target.info.plural, target.subresource),
            ("namespaces", Some(SubresourcePath::Status))
        );
        let (verb, target) = resource(Method::GET, "/api/v1/pods", "");
        assert_eq!((verb, target.namespace), (Verb::List, None));
    }

    #[test]
    fn unknown_resources_and_methods() {
        let query = Query::default();
        assert_eq!(
            parse(&Method::GET, "/api/v1/widgets", &query)
                .expect_err("unknown")
                .code(),
            404
        );
        assert_eq!(
            parse(&Method::GET, "/apis/apps/v2/deployments", &query)
                .expect_err("version")
                .code(),
            404
        );
        assert_eq!(
            parse(&Method::PUT, "/api/v1/namespaces/default/pods", &query)
                .expect_err("method")
                .code(),
            405
        );
    }

    #[test]
    fn query_decoding_turns_plus_into_space() {
        let query = Query::parse(Some(
            "labelSelector=name+in+%28a%2C+b%29&command=ls&command=-l",
        ));
        assert_eq!(query.get("labelSelector"), Some("name in (a, b)"));
        assert_eq!(query.all("command"), ["ls", "-l"]);
    }
}
