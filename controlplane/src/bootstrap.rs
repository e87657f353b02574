//! Objects every cluster starts with: the system namespaces and the
//! `kubernetes` Service that points in-cluster clients at the API server.
//!
//! Each is created only if missing, so restarts and user edits are safe.

use serde_json::json;

use crate::api::errors::ApiError;
use crate::api::registry::{Registry, SYSTEM_NAMESPACES};
use crate::api::resources;

fn info(plural: &str) -> Result<&'static resources::ResourceInfo, ApiError> {
    resources::find("", "v1", plural)
        .ok_or_else(|| ApiError::Internal(format!("resource {plural} is not served")))
}

async fn create_if_missing(
    registry: &Registry,
    plural: &str,
    namespace: Option<&str>,
    object: serde_json::Value,
) -> Result<(), ApiError> {
    let info = info(plural)?;
    // Look first: creating an existing Service would fail on its own
    // ClusterIP (taken, by itself) before the store could say it exists.
    let name = object
        .pointer("/metadata/name")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    match registry.get(info, namespace, name).await {
        Ok(_) => return Ok(()),
        Err(ApiError::NotFound { .. }) => {}
        Err(error) => return Err(error),
    }
    match registry.create(info, namespace, object, false).await {
        Ok(_) | Err(ApiError::AlreadyExists { .. }) => Ok(()),
        Err(error) => Err(error),
    }
}

/// Creates the system namespaces and the `kubernetes` Service and Endpoints.
pub async fn ensure_defaults(
    registry: &Registry,
    advertise_address: &str,
    secure_port: u16,
) -> Result<(), ApiError> {
    for namespace in SYSTEM_NAMESPACES {
        create_if_missing(
            registry,
            "namespaces",
            None,
            json!({"metadata": {"name": namespace}}),
        )
        .await?;
    }
    let service_ip = registry.api_service_ip().await.to_string();
    create_if_missing(
        registry,
        "services",
        Some("default"),
        json!({
            "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": service_ip, "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": secure_port}]},
        }),
    )
    .await?;
    create_if_missing(
        registry,
        "endpoints",
        Some("default"),
        json!({
            "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": advertise_address}], "ports": [{"name": "https", "port": secure_port, "protocol": "TCP"}]}],
        }),
    )
    .await
}
