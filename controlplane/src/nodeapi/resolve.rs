//! A pod as its node receives it: configMap and secret references
//! resolved, so the agent needs nothing else from the API.
//!
//! [`resolve`] is pure. It takes a pod's spec and a [`ConfigLookup`] over
//! the ConfigMaps and Secrets of the pod's namespace and returns the spec
//! to send, the files of its configMap and secret volumes, and what could
//! not be resolved. Store access stays with the caller.
//!
//! Environment, per container, in the order Kubernetes builds it (later
//! entries win over earlier ones with the same name):
//! 1. the [`EnvSource`]s given by the caller, in order (Kubernetes puts its
//!    service link variables here);
//! 2. `envFrom`, each configMapRef/secretRef expanded into one entry per
//!    key, with its `prefix`; keys that are not valid variable names are
//!    skipped, as kubelet skips them;
//! 3. the container's own `env`.
//!
//! A resolved entry carries its literal `value` and keeps its `valueFrom`
//! (for an `envFrom` key, a `configMapKeyRef`/`secretKeyRef` to it): the
//! agent takes such values as they are, without `$(VAR)` expansion, which
//! Kubernetes applies only to values written in the spec. A required
//! reference that cannot be resolved stays as it was written (a keyRef
//! without a value, an `envFrom` entry), with an [`Unresolved`] saying why
//! in Kubernetes' words; an optional one that cannot be resolved is
//! dropped.
//!
//! Volumes: a `configMap` or `secret` volume becomes [`VolumeFiles`] (its
//! `items`, or every key, with `defaultMode` or the item's `mode`). A
//! missing source that is not optional gives no files and an
//! [`Unresolved`]; an optional one gives an empty volume.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use serde_json::{json, Map, Value};

/// Kubernetes' default mode of configMap and secret volume files (0644).
pub const DEFAULT_FILE_MODE: u32 = 0o644;

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{kind} {namespace}/{name}: {field}.{key} is not valid base64")]
    NotBase64 {
        kind: &'static str,
        namespace: String,
        name: String,
        field: &'static str,
        key: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfigKind {
    ConfigMap,
    Secret,
}

impl ConfigKind {
    /// The word Kubernetes' not-found messages use (`configmap "x" not found`).
    fn resource(self) -> &'static str {
        match self {
            ConfigKind::ConfigMap => "configmap",
            ConfigKind::Secret => "secret",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            ConfigKind::ConfigMap => "ConfigMap",
            ConfigKind::Secret => "Secret",
        }
    }

    fn key_ref_field(self) -> &'static str {
        match self {
            ConfigKind::ConfigMap => "configMapKeyRef",
            ConfigKind::Secret => "secretKeyRef",
        }
    }

    /// The resource's plural, as its store keys spell it.
    pub fn plural(self) -> &'static str {
        match self {
            ConfigKind::ConfigMap => "configmaps",
            ConfigKind::Secret => "secrets",
        }
    }
}

/// One ConfigMap or Secret a pod refers to, in the pod's namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigRef {
    pub kind: ConfigKind,
    pub name: String,
}

/// The keys of a ConfigMap (`data` and `binaryData`) or a Secret (`data`,
/// decoded), as bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigData {
    pub data: BTreeMap<String, Vec<u8>>,
}

impl ConfigData {
    /// Reads a stored ConfigMap or Secret.
    pub fn from_object(kind: ConfigKind, object: &Value) -> Result<ConfigData, ResolveError> {
        let mut data = BTreeMap::new();
        let text = |field: &str| {
            object
                .get(field)
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
        };
        let decode = |field: &'static str, key: &str, value: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(value)
                .map_err(|_| ResolveError::NotBase64 {
                    kind: kind.kind(),
                    namespace: text_at(object, "/metadata/namespace"),
                    name: text_at(object, "/metadata/name"),
                    field,
                    key: key.to_owned(),
                })
        };
        match kind {
            ConfigKind::ConfigMap => {
                for (key, value) in text("data") {
                    data.insert(key, value.into_bytes());
                }
                for (key, value) in text("binaryData") {
                    let bytes = decode("binaryData", &key, &value)?;
                    data.insert(key, bytes);
                }
            }
            ConfigKind::Secret => {
                for (key, value) in text("data") {
                    let bytes = decode("data", &key, &value)?;
                    data.insert(key, bytes);
                }
                // Folded into data on write; read in case an older store
                // kept it.
                for (key, value) in text("stringData") {
                    data.insert(key, value.into_bytes());
                }
            }
        }
        Ok(ConfigData { data })
    }
}

fn text_at(object: &Value, pointer: &str) -> String {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The ConfigMaps and Secrets of one namespace.
pub trait ConfigLookup {
    fn get(&self, kind: ConfigKind, name: &str) -> Option<&ConfigData>;
}

/// Variables a container gets before its `envFrom` and `env`, from a
/// source other than the pod spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvSource {
    pub variables: Vec<(String, String)>,
}

/// The files of one configMap or secret volume.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeFiles {
    pub volume: String,
    /// Relative path → contents.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Relative path → file mode.
    pub modes: BTreeMap<String, u32>,
}

/// A reference that could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    /// The container whose env refers to it; empty for a volume.
    pub container: String,
    /// The volume whose source it is; empty for env.
    pub volume: String,
    pub message: String,
}

/// A pod spec as its node receives it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResolvedPod {
    pub spec: Value,
    pub volumes: Vec<VolumeFiles>,
    pub unresolved: Vec<Unresolved>,
}

/// Kubernetes' rule for environment variable names (`IsEnvVarName`).
pub fn is_env_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || matches!(c, '-' | '.' | '_'))
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

fn containers(spec: &Value) -> impl Iterator<Item = &Value> {
    ["containers", "initContainers"]
        .into_iter()
        .filter_map(|field| spec.get(field).and_then(Value::as_array))
        .flatten()
}

fn key_ref(var: &Value) -> Option<(ConfigKind, &Value)> {
    let from = var.get("valueFrom")?;
    [ConfigKind::ConfigMap, ConfigKind::Secret]
        .into_iter()
        .find_map(|kind| from.get(kind.key_ref_field()).map(|r| (kind, r)))
}

fn env_from_ref(entry: &Value) -> Option<(ConfigKind, &Value)> {
    [
        (ConfigKind::ConfigMap, "configMapRef"),
        (ConfigKind::Secret, "secretRef"),
    ]
    .into_iter()
    .find_map(|(kind, field)| entry.get(field).map(|r| (kind, r)))
}

fn volume_source(volume: &Value) -> Option<(ConfigKind, &Value, String)> {
    if let Some(source) = volume.get("configMap") {
        return Some((ConfigKind::ConfigMap, source, text_at(source, "/name")));
    }
    volume
        .get("secret")
        .map(|source| (ConfigKind::Secret, source, text_at(source, "/secretName")))
}

fn optional(reference: &Value) -> bool {
    reference
        .get("optional")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// Every ConfigMap and Secret a pod spec refers to: a change to any of them
/// changes what its node must be sent.
pub fn references(spec: &Value) -> BTreeSet<ConfigRef> {
    let mut refs = BTreeSet::new();
    for container in containers(spec) {
        for var in container
            .get("env")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some((kind, reference)) = key_ref(var) {
                refs.insert(ConfigRef {
                    kind,
                    name: text_at(reference, "/name"),
                });
            }
        }
        for entry in container
            .get("envFrom")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some((kind, reference)) = env_from_ref(entry) {
                refs.insert(ConfigRef {
                    kind,
                    name: text_at(reference, "/name"),
                });
            }
        }
    }
    for volume in spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some((kind, _, name)) = volume_source(volume) {
            refs.insert(ConfigRef { kind, name });
        }
    }
    refs
}

fn not_found(kind: ConfigKind, name: &str) -> String {
    format!("{} \"{name}\" not found", kind.resource())
}

/// The pod's spec with every reference that can be resolved resolved.
pub fn resolve(
    namespace: &str,
    spec: &Value,
    lookup: &dyn ConfigLookup,
    leading_env: &[EnvSource],
) -> ResolvedPod {
    let mut resolved = ResolvedPod {
        spec: spec.clone(),
        ..ResolvedPod::default()
    };
    for field in ["containers", "initContainers"] {
        let Some(list) = resolved.spec.get_mut(field).and_then(Value::as_array_mut) else {
            continue;
        };
        for container in list {
            let Some(container) = container.as_object_mut() else {
                continue;
            };
            resolve_container(
                namespace,
                container,
                lookup,
                leading_env,
                &mut resolved.unresolved,
            );
        }
    }
    for volume in spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some((kind, source, name)) = volume_source(volume) else {
            continue;
        };
        let volume_name = text_at(volume, "/name");
        match volume_files(kind, source, &name, &volume_name, lookup) {
            Ok(files) => resolved.volumes.push(files),
            Err(message) => resolved.unresolved.push(Unresolved {
                container: String::new(),
                volume: volume_name,
                message,
            }),
        }
    }
    resolved
}

fn resolve_container(
    namespace: &str,
    container: &mut Map<String, Value>,
    lookup: &dyn ConfigLookup,
    leading_env: &[EnvSource],
    unresolved: &mut Vec<Unresolved>,
) {
    let container_name = container
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let mut problem = |message: String| {
        unresolved.push(Unresolved {
            container: container_name.clone(),
            volume: String::new(),
            message,
        })
    };
    let mut env: Vec<Value> = leading_env
        .iter()
        .flat_map(|source| &source.variables)
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();

    let mut kept_env_from = Vec::new();
    for entry in container
        .get("envFrom")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let Some((kind, reference)) = env_from_ref(&entry) else {
            kept_env_from.push(entry);
            continue;
        };
        let name = text_at(reference, "/name");
        let Some(data) = lookup.get(kind, &name) else {
            if !optional(reference) {
                problem(not_found(kind, &name));
                kept_env_from.push(entry);
            }
            continue;
        };
        let prefix = text_at(&entry, "/prefix");
        for (key, value) in &data.data {
            let var = format!("{prefix}{key}");
            if !is_env_var_name(&var) {
                continue;
            }
            env.push(json!({
                "name": var,
                "value": String::from_utf8_lossy(value),
                "valueFrom": {kind.key_ref_field(): {"name": name, "key": key}},
            }));
        }
    }

    for mut var in container
        .get("env")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let Some((kind, reference)) = key_ref(&var) else {
            env.push(var);
            continue;
        };
        let name = text_at(reference, "/name");
        let key = text_at(reference, "/key");
        let value = match lookup.get(kind, &name) {
            None => Err(not_found(kind, &name)),
            Some(data) => data.data.get(&key).ok_or_else(|| {
                format!(
                    "couldn't find key {key} in {} {namespace}/{name}",
                    kind.kind()
                )
            }),
        };
        match value {
            Ok(value) => {
                var["value"] = json!(String::from_utf8_lossy(value));
                env.push(var);
            }
            Err(_) if optional(reference) => {}
            Err(message) => {
                problem(message);
                env.push(var);
            }
        }
    }

    if env.is_empty() {
        container.remove("env");
    } else {
        container.insert("env".into(), Value::Array(env));
    }
    if kept_env_from.is_empty() {
        container.remove("envFrom");
    } else {
        container.insert("envFrom".into(), Value::Array(kept_env_from));
    }
}

/// Whether a volume item's path stays inside the volume.
fn safe_relative_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && path.split('/').all(|part| !part.is_empty() && part != "..")
}

fn volume_files(
    kind: ConfigKind,
    source: &Value,
    name: &str,
    volume: &str,
    lookup: &dyn ConfigLookup,
) -> Result<VolumeFiles, String> {
    let mount_failed =
        |message: String| format!("MountVolume.SetUp failed for volume \"{volume}\" : {message}");
    let default_mode = source
        .get("defaultMode")
        .and_then(Value::as_u64)
        .and_then(|mode| u32::try_from(mode).ok())
        .unwrap_or(DEFAULT_FILE_MODE);
    let mut files = VolumeFiles {
        volume: volume.to_owned(),
        ..VolumeFiles::default()
    };
    let Some(data) = lookup.get(kind, name) else {
        return if optional(source) {
            Ok(files)
        } else {
            Err(mount_failed(not_found(kind, name)))
        };
    };
    let items = source.get("items").and_then(Value::as_array);
    let Some(items) = items.filter(|items| !items.is_empty()) else {
        for (key, value) in &data.data {
            files.files.insert(key.clone(), value.clone());
            files.modes.insert(key.clone(), default_mode);
        }
        return Ok(files);
    };
    for item in items {
        let key = text_at(item, "/key");
        let path = text_at(item, "/path");
        if !safe_relative_path(&path) {
            return Err(mount_failed(format!(
                "item path {path:?} must be relative and may not contain '..'"
            )));
        }
        let Some(value) = data.data.get(&key) else {
            if optional(source) {
                continue;
            }
            return Err(mount_failed(match kind {
                ConfigKind::ConfigMap => {
                    format!("configmap references non-existent config key: {key}")
                }
                ConfigKind::Secret => format!("references non-existent secret key: {key}"),
            }));
        };
        let mode = item
            .get("mode")
            .and_then(Value::as_u64)
            .and_then(|mode| u32::try_from(mode).ok())
            .unwrap_or(default_mode);
        files.files.insert(path.clone(), value.clone());
        files.modes.insert(path, mode);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct FakeLookup {
        objects: BTreeMap<(ConfigKind, String), ConfigData>,
    }

    impl FakeLookup {
        fn with(mut self, kind: ConfigKind, name: &str, pairs: &[(&str, &str)]) -> FakeLookup {
            let data = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
                .collect();
            self.objects
                .insert((kind, name.to_owned()), ConfigData { data });
            self
        }
    }

    impl ConfigLookup for FakeLookup {
        fn get(&self, kind: ConfigKind, name: &str) -> Option<&ConfigData> {
            self.objects.get(&(kind, name.to_owned()))
        }
    }

    fn lookup() -> FakeLookup {
        FakeLookup::default()
            .with(
                ConfigKind::ConfigMap,
                "cfg",
                &[("mode", "fast"), ("LEVEL", "3"), ("bad key", "x")],
            )
            .with(ConfigKind::Secret, "creds", &[("password", "s3cret")])
    }

    fn env_of(resolved: &ResolvedPod) -> Vec<(String, Option<String>)> {
        resolved.spec["containers"][0]["env"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| {
                (
                    v["name"].as_str().unwrap_or_default().to_owned(),
                    v["value"].as_str().map(str::to_owned),
                )
            })
            .collect()
    }

    fn pair(name: &str, value: &str) -> (String, Option<String>) {
        (name.to_owned(), Some(value.to_owned()))
    }

    #[test]
    fn key_refs_become_values_and_keep_their_source() {
        let spec = json!({"containers": [{"name": "c", "image": "i", "env": [
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "PLAIN", "value": "$(MODE)"},
        ]}]});
        let resolved = resolve("default", &spec, &lookup(), &[]);
        assert!(resolved.unresolved.is_empty(), "{:?}", resolved.unresolved);
        let env = env_of(&resolved);
        assert_eq!(env[0], pair("MODE", "fast"));
        assert_eq!(env[1], pair("PASSWORD", "s3cret"));
        assert_eq!(env[2], ("POD".to_owned(), None), "fieldRef is the node's");
        assert_eq!(env[3], pair("PLAIN", "$(MODE)"));
        assert_eq!(
            resolved.spec["containers"][0]["env"][0]["valueFrom"]["configMapKeyRef"]["name"],
            "cfg"
        );
    }

    #[test]
    fn env_from_expands_with_prefix_before_own_env_and_skips_invalid_names() {
        let spec = json!({"containers": [{"name": "c", "image": "i",
            "envFrom": [
                {"configMapRef": {"name": "cfg"}, "prefix": "APP_"},
                {"secretRef": {"name": "creds"}},
            ],
            "env": [{"name": "APP_LEVEL", "value": "own"}],
        }]});
        let leading = [EnvSource {
            variables: vec![("SERVICE_HOST".into(), "10.96.0.1".into())],
        }];
        let resolved = resolve("default", &spec, &lookup(), &leading);
        assert!(resolved.unresolved.is_empty());
        assert_eq!(
            env_of(&resolved),
            [
                pair("SERVICE_HOST", "10.96.0.1"),
                pair("APP_LEVEL", "3"),
                pair("APP_mode", "fast"),
                pair("password", "s3cret"),
                pair("APP_LEVEL", "own"),
            ],
            "the key with a space is skipped; the container's own entry comes last and wins"
        );
        assert!(resolved.spec["containers"][0].get("envFrom").is_none());
    }

    #[test]
    fn missing_references_are_skipped_when_optional_and_kept_with_a_reason_otherwise() {
        let spec = json!({"containers": [{"name": "c", "image": "i",
            "envFrom": [
                {"configMapRef": {"name": "absent", "optional": true}},
                {"secretRef": {"name": "gone"}},
            ],
            "env": [
                {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k", "optional": true}}},
                {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "nokey", "optional": true}}},
                {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k"}}},
                {"name": "D", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "nokey"}}},
            ],
        }]});
        let resolved = resolve("ns", &spec, &lookup(), &[]);
        let messages: Vec<&str> = resolved
            .unresolved
            .iter()
            .map(|u| u.message.as_str())
            .collect();
        assert_eq!(
            messages,
            [
                "secret \"gone\" not found",
                "configmap \"absent\" not found",
                "couldn't find key nokey in Secret ns/creds",
            ]
        );
        assert!(resolved.unresolved.iter().all(|u| u.container == "c"));
        assert_eq!(
            env_of(&resolved),
            [("C".to_owned(), None), ("D".to_owned(), None)]
        );
        assert_eq!(
            resolved.spec["containers"][0]["envFrom"],
            json!([{"secretRef": {"name": "gone"}}])
        );
    }

    #[test]
    fn volumes_project_items_with_modes() {
        let spec = json!({"containers": [], "volumes": [
            {"name": "all", "configMap": {"name": "cfg"}},
            {"name": "some", "configMap": {"name": "cfg", "defaultMode": 0o400,
                "items": [{"key": "mode", "path": "conf/mode"}, {"key": "LEVEL", "path": "level", "mode": 0o600}]}},
            {"name": "secret", "secret": {"secretName": "creds"}},
            {"name": "maybe", "secret": {"secretName": "absent", "optional": true}},
            {"name": "scratch", "emptyDir": {}},
        ]});
        let resolved = resolve("default", &spec, &lookup(), &[]);
        assert!(resolved.unresolved.is_empty());
        let names: Vec<&str> = resolved.volumes.iter().map(|v| v.volume.as_str()).collect();
        assert_eq!(names, ["all", "some", "secret", "maybe"]);
        let all = &resolved.volumes[0];
        assert_eq!(all.files.len(), 3);
        assert_eq!(all.modes["mode"], 0o644);
        let some = &resolved.volumes[1];
        assert_eq!(some.files["conf/mode"], b"fast");
        assert_eq!(some.modes["conf/mode"], 0o400);
        assert_eq!(some.modes["level"], 0o600);
        assert_eq!(resolved.volumes[2].files["password"], b"s3cret");
        assert!(resolved.volumes[3].files.is_empty());
    }

    #[test]
    fn unresolvable_volumes_have_no_files_and_a_reason() {
        let spec = json!({"containers": [], "volumes": [
            {"name": "missing", "configMap": {"name": "absent"}},
            {"name": "nokey", "configMap": {"name": "cfg", "items": [{"key": "x", "path": "x"}]}},
            {"name": "escape", "secret": {"secretName": "creds", "items": [{"key": "password", "path": "../p"}]}},
            {"name": "optional-key", "configMap": {"name": "cfg", "optional": true, "items": [{"key": "x", "path": "x"}]}},
        ]});
        let resolved = resolve("default", &spec, &lookup(), &[]);
        let reasons: Vec<(&str, &str)> = resolved
            .unresolved
            .iter()
            .map(|u| (u.volume.as_str(), u.message.as_str()))
            .collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert_eq!(
            reasons[0],
            (
                "missing",
                "MountVolume.SetUp failed for volume \"missing\" : configmap \"absent\" not found"
            )
        );
        assert!(reasons[1].1.ends_with("non-existent config key: x"));
        assert_eq!(reasons[2].0, "escape");
        assert_eq!(resolved.volumes.len(), 1);
        assert!(resolved.volumes[0].files.is_empty());
    }

    #[test]
    fn references_name_every_source() {
        let spec = json!({"containers": [{"name": "c",
            "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s1", "key": "k"}}}],
            "envFrom": [{"configMapRef": {"name": "c1"}}]}],
          "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "s2"}}]}],
          "volumes": [{"name": "v", "configMap": {"name": "c2"}}, {"name": "w", "secret": {"secretName": "s1"}}]});
        let refs = references(&spec);
        let names: Vec<(ConfigKind, &str)> =
            refs.iter().map(|r| (r.kind, r.name.as_str())).collect();
        assert_eq!(
            names,
            [
                (ConfigKind::ConfigMap, "c1"),
                (ConfigKind::ConfigMap, "c2"),
                (ConfigKind::Secret, "s1"),
                (ConfigKind::Secret, "s2"),
            ]
        );
        assert!(references(&json!({"containers": [{"name": "c"}]})).is_empty());
    }

    #[test]
    fn stored_objects_decode_to_bytes() {
        let secret =
            json!({"metadata": {"name": "s", "namespace": "n"}, "data": {"k": "aGVsbG8="}});
        let data = ConfigData::from_object(ConfigKind::Secret, &secret).expect("valid");
        assert_eq!(data.data["k"], b"hello");
        let bad = json!({"metadata": {"name": "s", "namespace": "n"}, "data": {"k": "!!"}});
        let error = ConfigData::from_object(ConfigKind::Secret, &bad).expect_err("not base64");
        assert!(error.to_string().contains("Secret n/s"), "{error}");
        let config_map = json!({"data": {"a": "1"}, "binaryData": {"b": "AAE="}});
        let data = ConfigData::from_object(ConfigKind::ConfigMap, &config_map).expect("valid");
        assert_eq!(data.data["a"], b"1");
        assert_eq!(data.data["b"], [0u8, 1]);
        assert!(is_env_var_name("A_b.c-1"));
        assert!(!is_env_var_name("1A") && !is_env_var_name("a b") && !is_env_var_name(""));
    }
}
