//! Strategic merge patch (`application/strategic-merge-patch+json`) for the
//! built-in kinds, following `k8s.io/apimachinery/pkg/util/strategicpatch`.
//!
//! `kubectl apply`, `kubectl set image`, `kubectl edit`, `kubectl patch`
//! (whose default `--type` is `strategic`) and the node agents all send this
//! patch type. JSON merge patch (RFC 7386) replaces every list wholesale; a
//! strategic patch instead knows which lists the Go API types declare as keyed
//! sets (`patchStrategy:"merge"` plus a `patchMergeKey`), so a client can send
//! only the one container, port or env var it changes.
//!
//! # Semantics
//!
//! * Objects merge recursively and a `null` value deletes its key.
//! * A list whose field has a merge key merges element by element: a patch
//!   element updates the stored element with the same key value (recursively)
//!   or is added; `{"$patch": "delete", <key>: value}` removes the element;
//!   an element `{"$patch": "replace"}` makes the other patch elements replace
//!   the whole list.
//! * A list of primitives with `patchStrategy: merge` (`metadata.finalizers`,
//!   Node `spec.podCIDRs`) is merged as a set, and
//!   `$deleteFromPrimitiveList/<field>: [...]` removes values from it.
//! * Every other list is atomic: the patch value replaces it.
//! * `$patch: replace` inside an object replaces the object instead of merging
//!   into it; `$patch: delete` leaves an empty object, as upstream does.
//! * `$retainKeys: [...]` drops every stored key that is not listed (this is
//!   how kubectl switches a union such as a Deployment's `strategy` from
//!   `RollingUpdate` to `Recreate`); every key the patch sets must be listed.
//! * `$setElementOrder/<field>: [...]` orders the merged list, see below.
//! * Directives are never stored. For the known kinds any other `$`-prefixed
//!   key is dropped as well: none of their fields starts with `$`, and upstream
//!   loses such keys when it decodes the result into the typed object. Unknown
//!   kinds keep those keys as data, since their schema may define them (JSON
//!   Schema's `$ref`, for one).
//!
//! # Ordering
//!
//! List order is visible to clients (`kubectl get -o yaml`, the position of a
//! container's status), so merged lists are ordered exactly as upstream does:
//!
//! 1. The merged list is split into the elements the patch list names (or the
//!    `$setElementOrder` list, when there is one) and the server-only rest.
//! 2. Named elements are sorted by their position in the patch (or order)
//!    list; server-only elements by their position in the stored list.
//! 3. The two runs are interleaved. A server-only element goes first only if
//!    it and the next named element both appear in the stored list and it was
//!    stored earlier; otherwise the named element goes first.
//!
//! A consequence worth knowing: an element that a patch adds without a
//! `$setElementOrder` lands *before* the stored elements (`kubectl patch` with
//! a new container puts it first). kubectl's own patches always carry
//! `$setElementOrder` for the lists they touch, so they keep the order the
//! user wrote.
//!
//! # Schema
//!
//! Merge keys come from the `patchStrategy`/`patchMergeKey` struct tags of
//! the Kubernetes Go types. They are held in a small static table that mirrors
//! the struct tree: the pod template is described once and reused under every
//! kind that embeds one, down to CronJob's
//! `spec.jobTemplate.spec.template.spec`. Fields the table does not mention are
//! opaque: objects below them still merge, their lists are atomic. Unknown
//! kinds get an empty table, which gives JSON merge patch behaviour for lists.
//! The `retainKeys` strategy tags (on `PodSpec.volumes` and
//! `DeploymentSpec.strategy`) only guide clients that compute patches; applying
//! a patch honours `$retainKeys` wherever it appears, so the table omits them.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde_json::{Map, Value};

/// Key that marks an object or list element as a directive.
const PATCH: &str = "$patch";
const REPLACE: &str = "replace";
const DELETE: &str = "delete";
const MERGE: &str = "merge";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// Why a strategic merge patch could not be applied. Every variant that
/// points into the document carries the path of the offending value, such as
/// `spec.template.spec.containers[0]` (indexes count elements of the patch
/// list unless the message says otherwise).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrategicPatchError {
    /// The patch document itself is not a JSON object.
    #[error("a strategic merge patch must be a JSON object, not {found}")]
    PatchNotObject { found: &'static str },
    /// The stored object is not a JSON object.
    #[error("the object to patch must be a JSON object, not {found}")]
    OriginalNotObject { found: &'static str },
    /// An element of a keyed list lacks the key the list is merged by.
    #[error("{path}: list element does not contain its merge key `{key}`")]
    MissingMergeKey { path: String, key: &'static str },
    /// An element of a keyed list is not an object at all.
    #[error(
        "{path}: elements of this list are merged by `{key}` and must be objects, not {found}"
    )]
    ElementNotObject {
        path: String,
        key: &'static str,
        found: &'static str,
    },
    /// A list merged as a set of primitives holds an object or a list.
    #[error("{path}: this list is merged as a set of strings, numbers and booleans and cannot hold {found}")]
    NonScalarElement { path: String, found: &'static str },
    /// `$patch` has a value other than `replace` or `delete`.
    #[error("{path}: unknown `$patch` directive {directive}, expected \"replace\" or \"delete\"")]
    UnknownPatchDirective { path: String, directive: String },
    /// `$patch: merge` on a list element, which upstream never supported.
    #[error("{path}: `$patch: merge` is not supported on list elements")]
    MergeDirectiveInList { path: String },
    /// A list-valued directive (`$retainKeys`, `$setElementOrder/…`,
    /// `$deleteFromPrimitiveList/…`) holds something other than a list.
    #[error("{path}: `{directive}` must be a list, not {found}")]
    DirectiveNotList {
        path: String,
        directive: String,
        found: &'static str,
    },
    /// `$setElementOrder/` or `$deleteFromPrimitiveList/` without a field name.
    #[error("{path}: directive `{directive}` does not name a field")]
    DirectiveWithoutField { path: String, directive: String },
    /// A `$retainKeys` entry is not a field name.
    #[error("{path}: `$retainKeys` entries must be field names, not {found}")]
    RetainKeysEntryNotString { path: String, found: &'static str },
    /// The patch sets a field that its own `$retainKeys` would drop.
    #[error("{path}: the patch sets `{field}`, which its `$retainKeys` list does not name")]
    FieldNotRetained { path: String, field: String },
    /// The patch list names elements in an order its `$setElementOrder` list
    /// contradicts, or names an element the order list lacks.
    #[error(
        "{path}: the patch list does not follow the order given by `$setElementOrder/{field}`"
    )]
    SetElementOrderMismatch { path: String, field: String },
    /// A field that `$setElementOrder` orders is set to something other than
    /// a list.
    #[error("{path}: must be a list to be ordered by `$setElementOrder/{field}`, not {found}")]
    OrderedFieldNotList {
        path: String,
        field: String,
        found: &'static str,
    },
}

/// Applies a strategic merge `patch` to `original`, an object of kind `kind`
/// (`"Deployment"`, `"Pod"`, ...), and returns the patched object. Neither
/// input is modified. Kinds this module has no schema for (see
/// [`supports_kind`]) are patched with JSON merge patch semantics for lists.
pub fn apply(original: &Value, patch: &Value, kind: &str) -> Result<Value, StrategicPatchError> {
    let patch = patch
        .as_object()
        .ok_or_else(|| StrategicPatchError::PatchNotObject {
            found: type_name(patch),
        })?;
    let original = original
        .as_object()
        .ok_or_else(|| StrategicPatchError::OriginalNotObject {
            found: type_name(original),
        })?;
    let (schema, strict) = match kind_schema(kind) {
        Some(schema) => (schema, true),
        None => (&OPAQUE, false),
    };
    let merger = Merger { strict };
    let merged = merger.merge_map(Some(original), patch, schema, Path::root())?;
    Ok(Value::Object(merged))
}

/// Whether [`apply`] knows the merge keys of `kind`. For other kinds it still
/// works, but every list is replaced as in JSON merge patch.
pub fn supports_kind(kind: &str) -> bool {
    kind_schema(kind).is_some()
}

// ---------------------------------------------------------------------------
// Schema table
// ---------------------------------------------------------------------------

/// The fields of one Go struct that need more than the default treatment.
#[derive(Debug)]
struct Schema {
    fields: &'static [(&'static str, Field)],
}

/// How one struct field is patched.
#[derive(Debug)]
enum Field {
    /// A nested struct whose own fields are described by the schema.
    Struct(&'static Schema),
    /// `patchStrategy:"merge"` with `patchMergeKey:key` on a list of structs.
    KeyedList {
        key: &'static str,
        element: &'static Schema,
    },
    /// `patchStrategy:"merge"` on a list of primitives: merged as a set.
    PrimitiveSet,
}

impl Schema {
    fn field(&'static self, name: &str) -> Option<&'static Field> {
        self.fields
            .iter()
            .find(|(field, _)| *field == name)
            .map(|(_, how)| how)
    }
}

const fn keyed(key: &'static str, element: &'static Schema) -> Field {
    Field::KeyedList { key, element }
}

/// A struct (or map) with no special fields.
static OPAQUE: Schema = Schema { fields: &[] };

/// `metav1.ObjectMeta`. `managedFields` has no strategy and stays atomic.
static OBJECT_META: Schema = Schema {
    fields: &[
        ("ownerReferences", keyed("uid", &OPAQUE)),
        ("finalizers", Field::PrimitiveSet),
    ],
};

/// `core/v1.Container`; `EphemeralContainerCommon` repeats the same tags.
/// `envFrom`, `resizePolicy` and `resources.claims` carry no strategy.
static CONTAINER: Schema = Schema {
    fields: &[
        ("ports", keyed("containerPort", &OPAQUE)),
        ("env", keyed("name", &OPAQUE)),
        ("volumeMounts", keyed("mountPath", &OPAQUE)),
        ("volumeDevices", keyed("devicePath", &OPAQUE)),
    ],
};

/// `core/v1.PodSpec`. `tolerations` and `readinessGates` carry no strategy.
static POD_SPEC: Schema = Schema {
    fields: &[
        ("volumes", keyed("name", &OPAQUE)),
        ("initContainers", keyed("name", &CONTAINER)),
        ("containers", keyed("name", &CONTAINER)),
        ("ephemeralContainers", keyed("name", &CONTAINER)),
        ("imagePullSecrets", keyed("name", &OPAQUE)),
        ("hostAliases", keyed("ip", &OPAQUE)),
        ("topologySpreadConstraints", keyed("topologyKey", &OPAQUE)),
        ("schedulingGates", keyed("name", &OPAQUE)),
        ("resourceClaims", keyed("name", &OPAQUE)),
    ],
};

/// `core/v1.PodStatus`. The container status lists carry no strategy.
static POD_STATUS: Schema = Schema {
    fields: &[
        ("conditions", keyed("type", &OPAQUE)),
        ("podIPs", keyed("ip", &OPAQUE)),
        ("hostIPs", keyed("ip", &OPAQUE)),
        ("resourceClaimStatuses", keyed("name", &OPAQUE)),
    ],
};

/// `core/v1.PodTemplateSpec`, shared by every kind that embeds a pod.
static POD_TEMPLATE_SPEC: Schema = Schema {
    fields: &[
        ("metadata", Field::Struct(&OBJECT_META)),
        ("spec", Field::Struct(&POD_SPEC)),
    ],
};

/// Any status whose only keyed list is `conditions` (by `type`):
/// ReplicationController, Service, Namespace, PersistentVolumeClaim,
/// Deployment, ReplicaSet, DaemonSet, StatefulSet and Job.
static CONDITIONS_STATUS: Schema = Schema {
    fields: &[("conditions", keyed("type", &OPAQUE))],
};

/// The spec of a kind that stamps out pods from `spec.template`:
/// ReplicationController, ReplicaSet, Deployment, DaemonSet, StatefulSet, Job.
static TEMPLATED_SPEC: Schema = Schema {
    fields: &[("template", Field::Struct(&POD_TEMPLATE_SPEC))],
};

/// `batch/v1.JobTemplateSpec`.
static JOB_TEMPLATE_SPEC: Schema = Schema {
    fields: &[
        ("metadata", Field::Struct(&OBJECT_META)),
        ("spec", Field::Struct(&TEMPLATED_SPEC)),
    ],
};

/// `batch/v1.CronJobSpec`.
static CRON_JOB_SPEC: Schema = Schema {
    fields: &[("jobTemplate", Field::Struct(&JOB_TEMPLATE_SPEC))],
};

/// `core/v1.ServiceSpec`. `clusterIPs`, `ipFamilies` and `externalIPs` are
/// atomic.
static SERVICE_SPEC: Schema = Schema {
    fields: &[("ports", keyed("port", &OPAQUE))],
};

/// `core/v1.NodeSpec`. `taints` carries no strategy and is atomic.
static NODE_SPEC: Schema = Schema {
    fields: &[("podCIDRs", Field::PrimitiveSet)],
};

/// `core/v1.NodeStatus`. `images` and `volumesAttached` are atomic.
static NODE_STATUS: Schema = Schema {
    fields: &[
        ("conditions", keyed("type", &OPAQUE)),
        ("addresses", keyed("type", &OPAQUE)),
    ],
};

static POD: Schema = Schema {
    fields: &[
        ("metadata", Field::Struct(&OBJECT_META)),
        ("spec", Field::Struct(&POD_SPEC)),
        ("status", Field::Struct(&POD_STATUS)),
    ],
};

static POD_TEMPLATE: Schema = Schema {
    fields: &[
        ("metadata", Field::Struct(&OBJECT_META)),
        ("template", Field::Struct(&POD_TEMPLATE_SPEC)),
    ],
};

static TEMPLATED_WORKLOAD: Schema = Schema {
    fields: &[
        ("metadata", Field::Struct(&OBJECT_META)),
        ("spec", Field::Struct(&TEMPLATED_SPEC)),
        ("status", Field::Struct(&CONDITIONS_STATUS)),
    ],
};

/// CronJob's status (`active`, a list of references) is atomic.
static CRON_JOB: Schema = Schema {
    fields: &[
        ("metadata", Field::Struct(&OBJECT_META)),
        ("spec", Field::Struct(&CRON_JOB_SPEC)),
    ],
};

static SERVICE: Schema = Schema {
    fields: &[
        ("metadata", Field::Struct(&OBJECT_META)),
        ("spec", Field::Struct(&SERVICE_SPEC)),
        ("status", Field::Struct(&CONDITIONS_STATUS)),
    ],
};

static NODE: Schema = Schema {
    fields: &[
        ("metadata", Field::Struct(&OBJECT_META)),
        ("spec", Field::Struct(&NODE_SPEC)),
        ("status", Field::Struct(&NODE_STATUS)),
    ],
};

/// Namespace's `spec.finalizers` carries no strategy and is atomic, unlike
/// `metadata.finalizers`. PersistentVolumeClaim has the same shape here.
static CONDITIONS_ONLY: Schema = Schema {
    fields: &[
        ("metadata", Field::Struct(&OBJECT_META)),
        ("status", Field::Struct(&CONDITIONS_STATUS)),
    ],
};

/// `core/v1.ServiceAccount`: `secrets` merges by name, `imagePullSecrets` is
/// atomic.
static SERVICE_ACCOUNT: Schema = Schema {
    fields: &[
        ("metadata", Field::Struct(&OBJECT_META)),
        ("secrets", keyed("name", &OPAQUE)),
    ],
};

/// Kinds whose only keyed list lives in their metadata. Endpoints' `subsets`
/// and the lists inside each subset carry no strategy and are atomic.
static METADATA_ONLY: Schema = Schema {
    fields: &[("metadata", Field::Struct(&OBJECT_META))],
};

fn kind_schema(kind: &str) -> Option<&'static Schema> {
    Some(match kind {
        "Pod" => &POD,
        "PodTemplate" => &POD_TEMPLATE,
        "ReplicationController"
        | "ReplicaSet"
        | "Deployment"
        | "DaemonSet"
        | "StatefulSet"
        | "Job" => &TEMPLATED_WORKLOAD,
        "CronJob" => &CRON_JOB,
        "Service" => &SERVICE,
        "Node" => &NODE,
        "Namespace" | "PersistentVolumeClaim" => &CONDITIONS_ONLY,
        "ServiceAccount" => &SERVICE_ACCOUNT,
        "Endpoints" | "ConfigMap" | "Secret" | "Event" => &METADATA_ONLY,
        _ => return None,
    })
}

// ---------------------------------------------------------------------------
// Paths for error messages
// ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Segment<'a> {
    Root,
    Field(&'a str),
    Index(usize),
}

/// Where the merge currently is, as a chain of borrowed segments: building a
/// child costs nothing, and the string is only rendered for an error.
#[derive(Clone, Copy)]
struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    segment: Segment<'a>,
}

impl<'a> Path<'a> {
    fn root() -> Path<'static> {
        Path {
            parent: None,
            segment: Segment::Root,
        }
    }

    fn field<'b>(&'b self, name: &'b str) -> Path<'b>
    where
        'a: 'b,
    {
        Path {
            parent: Some(self),
            segment: Segment::Field(name),
        }
    }

    fn index<'b>(&'b self, index: usize) -> Path<'b>
    where
        'a: 'b,
    {
        Path {
            parent: Some(self),
            segment: Segment::Index(index),
        }
    }

    fn render(&self) -> String {
        let mut segments = Vec::new();
        let mut current = Some(self);
        while let Some(path) = current {
            segments.push(path.segment);
            current = path.parent;
        }
        let mut out = String::new();
        for segment in segments.iter().rev() {
            match segment {
                Segment::Root => {}
                Segment::Field(name) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(name);
                }
                Segment::Index(index) => {
                    let _ = write!(out, "[{index}]");
                }
            }
        }
        if out.is_empty() {
            "(root)".to_string()
        } else {
            out
        }
    }
}

// ---------------------------------------------------------------------------
// Merging
// ---------------------------------------------------------------------------

struct Merger {
    /// Drop unknown `$`-prefixed keys (known kinds) or keep them as data.
    strict: bool,
}

impl Merger {
    /// Merges `patch` into `original` (absent when the patch creates the
    /// object). New values go through here too, against an empty original,
    /// so that directives nested inside them are applied and never stored.
    fn merge_map(
        &self,
        original: Option<&Map<String, Value>>,
        patch: &Map<String, Value>,
        schema: &'static Schema,
        path: Path<'_>,
    ) -> Result<Map<String, Value>, StrategicPatchError> {
        if let Some(directive) = patch.get(PATCH) {
            return self.map_directive(directive, patch, schema, path);
        }
        let mut out = original.cloned().unwrap_or_default();

        // Upstream clears unretained keys before anything else, so a field
        // the patch sets again is merged into nothing rather than into its
        // stale value.
        if let Some(retain) = patch.get(RETAIN_KEYS) {
            apply_retain_keys(&mut out, retain, patch, path)?;
        }

        // Ordered lists are merged and ordered in one step; the main loop
        // must then leave those fields alone.
        let ordered = self.apply_element_orders(&mut out, patch, schema, path)?;

        let mut deletions = Vec::new();
        for (key, value) in patch {
            if ordered.contains(key.as_str()) {
                continue;
            }
            if key.starts_with('$') {
                if let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
                    deletions.push((key, field, value));
                    continue;
                }
                if key == RETAIN_KEYS || key.starts_with(SET_ELEMENT_ORDER) || self.strict {
                    continue;
                }
            }
            if value.is_null() {
                out.remove(key);
                continue;
            }
            let merged =
                self.merge_value(out.get(key), value, schema.field(key), path.field(key))?;
            out.insert(key.clone(), merged);
        }

        // Deletions run last so that a value the patch both adds and deletes
        // ends up deleted, whatever order the keys arrived in.
        for (directive, field, values) in deletions {
            delete_from_primitive_list(&mut out, directive, field, values, path)?;
        }
        Ok(out)
    }

    /// Handles an object that carries `$patch`.
    fn map_directive(
        &self,
        directive: &Value,
        patch: &Map<String, Value>,
        schema: &'static Schema,
        path: Path<'_>,
    ) -> Result<Map<String, Value>, StrategicPatchError> {
        match directive.as_str() {
            Some(REPLACE) => {
                let mut replacement = patch.clone();
                replacement.remove(PATCH);
                self.merge_map(None, &replacement, schema, path)
            }
            Some(DELETE) => Ok(Map::new()),
            _ => Err(StrategicPatchError::UnknownPatchDirective {
                path: path.field(PATCH).render(),
                directive: directive.to_string(),
            }),
        }
    }

    /// Merges one non-null patch value into the stored value (if any) of a
    /// field patched as `field` describes (`None`: opaque).
    fn merge_value(
        &self,
        original: Option<&Value>,
        patch: &Value,
        field: Option<&'static Field>,
        path: Path<'_>,
    ) -> Result<Value, StrategicPatchError> {
        match patch {
            Value::Object(patch_map) => {
                let schema = match field {
                    Some(Field::Struct(schema)) => *schema,
                    _ => &OPAQUE,
                };
                let original_map = original.and_then(Value::as_object);
                Ok(Value::Object(self.merge_map(
                    original_map,
                    patch_map,
                    schema,
                    path,
                )?))
            }
            Value::Array(patch_list) => {
                // A stored value of another type is replaced, so it merges
                // like an empty list.
                let original_list = original
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let merged = match field {
                    Some(Field::KeyedList { key, element }) => {
                        self.merge_keyed_list(original_list, patch_list, key, element, path)?
                    }
                    Some(Field::PrimitiveSet) => {
                        merge_primitive_set(original_list, patch_list, path)?
                    }
                    _ => self.replace_list(patch_list, path)?,
                };
                Ok(Value::Array(merged))
            }
            scalar => Ok(scalar.clone()),
        }
    }

    /// Merges a list of objects identified by `key`.
    fn merge_keyed_list(
        &self,
        original: &[Value],
        patch: &[Value],
        key: &'static str,
        element: &'static Schema,
        path: Path<'_>,
    ) -> Result<Vec<Value>, StrategicPatchError> {
        // Stored elements need their key too: it is their identity for both
        // matching and ordering.
        let mut merged = Vec::with_capacity(original.len() + patch.len());
        for (index, item) in original.iter().enumerate() {
            merge_key_of(item, key, path.index(index))?;
            merged.push(item.clone());
        }

        // Directive elements first: deletions shrink the stored list, and a
        // replace marker anywhere in the list turns the whole patch list into
        // the new value.
        let mut updates = Vec::with_capacity(patch.len());
        let mut replace = false;
        for (index, item) in patch.iter().enumerate() {
            let item_path = path.index(index);
            let map = item
                .as_object()
                .ok_or_else(|| StrategicPatchError::ElementNotObject {
                    path: item_path.render(),
                    key,
                    found: type_name(item),
                })?;
            let Some(directive) = map.get(PATCH) else {
                updates.push((index, map));
                continue;
            };
            match directive.as_str() {
                Some(DELETE) => {
                    let id = merge_key_of(item, key, item_path)?;
                    merged.retain(|stored| !has_identity(stored, Some(key), id));
                }
                Some(REPLACE) => replace = true,
                Some(MERGE) => {
                    return Err(StrategicPatchError::MergeDirectiveInList {
                        path: item_path.render(),
                    })
                }
                _ => {
                    return Err(StrategicPatchError::UnknownPatchDirective {
                        path: item_path.field(PATCH).render(),
                        directive: directive.to_string(),
                    })
                }
            }
        }

        if replace {
            let mut replacement = Vec::with_capacity(updates.len());
            for (index, map) in updates {
                let item_path = path.index(index);
                merge_key_of(&patch[index], key, item_path)?;
                replacement.push(Value::Object(
                    self.merge_map(None, map, element, item_path)?,
                ));
            }
            return Ok(replacement);
        }

        // The stored order is taken after deletions, as upstream does, so an
        // element deleted and re-added in one patch counts as new.
        let stored_ids: Vec<Value> = merged
            .iter()
            .filter_map(|item| identity(item, Some(key)).cloned())
            .collect();

        let mut named = Vec::with_capacity(updates.len());
        for (index, update) in updates {
            let item_path = path.index(index);
            let id = merge_key_of(&patch[index], key, item_path)?;
            named.push(id);
            match merged
                .iter()
                .position(|stored| has_identity(stored, Some(key), id))
            {
                Some(at) => {
                    let stored = merged[at].as_object();
                    let updated = self.merge_map(stored, update, element, item_path)?;
                    merged[at] = Value::Object(updated);
                }
                None => {
                    let added = self.merge_map(None, update, element, item_path)?;
                    merged.push(Value::Object(added));
                }
            }
        }

        let stored: Vec<&Value> = stored_ids.iter().collect();
        Ok(normalize_order(merged, &named, &stored, Some(key)))
    }

    /// An atomic list: the patch value is the new list. Its objects are still
    /// cleaned of nulls and directives, and bare directive elements (which
    /// only mean something in keyed lists) are not data, so they are dropped.
    fn replace_list(
        &self,
        patch: &[Value],
        path: Path<'_>,
    ) -> Result<Vec<Value>, StrategicPatchError> {
        let mut out = Vec::with_capacity(patch.len());
        for (index, item) in patch.iter().enumerate() {
            match item {
                Value::Object(map) if map.contains_key(PATCH) => {}
                Value::Object(map) => {
                    let cleaned = self.merge_map(None, map, &OPAQUE, path.index(index))?;
                    out.push(Value::Object(cleaned));
                }
                other => out.push(other.clone()),
            }
        }
        Ok(out)
    }

    /// Applies every `$setElementOrder/<field>` of one object: merges the
    /// field's patch list (if any) into the stored list, then orders the
    /// result. Returns the fields it handled.
    fn apply_element_orders<'p>(
        &self,
        out: &mut Map<String, Value>,
        patch: &'p Map<String, Value>,
        schema: &'static Schema,
        path: Path<'_>,
    ) -> Result<BTreeSet<&'p str>, StrategicPatchError> {
        let mut handled = BTreeSet::new();
        for (directive, order) in patch {
            let Some(field_name) = directive.strip_prefix(SET_ELEMENT_ORDER) else {
                continue;
            };
            let directive_path = path.field(directive);
            if field_name.is_empty() {
                return Err(StrategicPatchError::DirectiveWithoutField {
                    path: path.render(),
                    directive: directive.clone(),
                });
            }
            let order = order
                .as_array()
                .ok_or_else(|| StrategicPatchError::DirectiveNotList {
                    path: path.render(),
                    directive: directive.clone(),
                    found: type_name(order),
                })?;
            let field = schema.field(field_name);
            let merge_key = match field {
                Some(Field::KeyedList { key, .. }) => Some(*key),
                _ => None,
            };
            let field_path = path.field(field_name);

            let mut order_ids = Vec::with_capacity(order.len());
            for (index, item) in order.iter().enumerate() {
                order_ids.push(match merge_key {
                    Some(key) => merge_key_of(item, key, directive_path.index(index))?,
                    None => item,
                });
            }

            // A null field is a deletion, which the main loop performs;
            // there is nothing left to order.
            let patch_value = match patch.get(field_name) {
                Some(Value::Null) => continue,
                Some(value @ Value::Array(list)) => {
                    check_patch_follows_order(list, &order_ids, merge_key, field_name, field_path)?;
                    Some(value)
                }
                Some(other) => {
                    return Err(StrategicPatchError::OrderedFieldNotList {
                        path: field_path.render(),
                        field: field_name.to_string(),
                        found: type_name(other),
                    })
                }
                None => None,
            };

            let stored = out.remove(field_name);
            let stored_list = stored.as_ref().and_then(Value::as_array);
            let merged = match (patch_value, stored_list) {
                (Some(value), _) => {
                    match self.merge_value(stored.as_ref(), value, field, field_path)? {
                        Value::Array(list) => list,
                        // merge_value keeps the shape of the patch value.
                        other => vec![other],
                    }
                }
                (None, Some(list)) => list.clone(),
                // Nothing to order: put back whatever was stored.
                (None, None) => {
                    if let Some(value) = stored {
                        out.insert(field_name.to_string(), value);
                    }
                    continue;
                }
            };

            if let Some(key) = merge_key {
                for (index, item) in merged.iter().enumerate() {
                    merge_key_of(item, key, field_path.index(index))?;
                }
            }
            let stored_ids: Vec<&Value> = stored_list
                .map(|list| {
                    list.iter()
                        .filter_map(|item| identity(item, merge_key))
                        .collect()
                })
                .unwrap_or_default();
            let ordered = normalize_order(merged, &order_ids, &stored_ids, merge_key);
            out.insert(field_name.to_string(), Value::Array(ordered));
            handled.insert(field_name);
        }
        Ok(handled)
    }
}

/// Merges a list of primitives as a set: stored values, then new values, with
/// duplicates removed, then ordered like any merged list.
fn merge_primitive_set(
    original: &[Value],
    patch: &[Value],
    path: Path<'_>,
) -> Result<Vec<Value>, StrategicPatchError> {
    for (index, item) in original.iter().chain(patch).enumerate() {
        if item.is_object() || item.is_array() {
            // Report the index within the list the element came from.
            let index = if index < original.len() {
                index
            } else {
                index - original.len()
            };
            return Err(StrategicPatchError::NonScalarElement {
                path: path.index(index).render(),
                found: type_name(item),
            });
        }
    }
    let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
    for item in original.iter().chain(patch) {
        if !merged.iter().any(|seen| same_value(seen, item)) {
            merged.push(item.clone());
        }
    }
    let named: Vec<&Value> = patch.iter().collect();
    let stored: Vec<&Value> = original.iter().collect();
    Ok(normalize_order(merged, &named, &stored, None))
}

/// `$deleteFromPrimitiveList/<field>`: removes the listed values from the
/// stored list. A missing field (or one that is not a list) is left alone.
fn delete_from_primitive_list(
    out: &mut Map<String, Value>,
    directive: &str,
    field: &str,
    values: &Value,
    path: Path<'_>,
) -> Result<(), StrategicPatchError> {
    if field.is_empty() {
        return Err(StrategicPatchError::DirectiveWithoutField {
            path: path.render(),
            directive: directive.to_string(),
        });
    }
    let values = values
        .as_array()
        .ok_or_else(|| StrategicPatchError::DirectiveNotList {
            path: path.render(),
            directive: directive.to_string(),
            found: type_name(values),
        })?;
    if let Some(Value::Array(stored)) = out.get_mut(field) {
        stored.retain(|item| !values.iter().any(|value| same_value(value, item)));
    }
    Ok(())
}

/// `$retainKeys`: drops stored keys the list does not name, after checking
/// that the patch itself only sets named keys (upstream rejects the patch
/// otherwise, since the value it sets would contradict the directive).
fn apply_retain_keys(
    out: &mut Map<String, Value>,
    retain: &Value,
    patch: &Map<String, Value>,
    path: Path<'_>,
) -> Result<(), StrategicPatchError> {
    let list = retain
        .as_array()
        .ok_or_else(|| StrategicPatchError::DirectiveNotList {
            path: path.render(),
            directive: RETAIN_KEYS.to_string(),
            found: type_name(retain),
        })?;
    let mut keep = BTreeSet::new();
    for (index, entry) in list.iter().enumerate() {
        let name = entry
            .as_str()
            .ok_or_else(|| StrategicPatchError::RetainKeysEntryNotString {
                path: path.field(RETAIN_KEYS).index(index).render(),
                found: type_name(entry),
            })?;
        keep.insert(name);
    }
    for (key, value) in patch {
        if value.is_null() || key.starts_with('$') {
            continue;
        }
        if !keep.contains(key.as_str()) {
            return Err(StrategicPatchError::FieldNotRetained {
                path: path.render(),
                field: key.clone(),
            });
        }
    }
    out.retain(|key, _| keep.contains(key.as_str()));
    Ok(())
}

/// Upstream's consistency check between a patch list and its
/// `$setElementOrder` list: the (non-directive) patch elements must appear in
/// the order list, in the same relative order.
fn check_patch_follows_order(
    patch: &[Value],
    order: &[&Value],
    merge_key: Option<&'static str>,
    field: &str,
    path: Path<'_>,
) -> Result<(), StrategicPatchError> {
    if order.is_empty() || patch.is_empty() {
        return Ok(());
    }
    let mut next = 0;
    for (index, item) in patch.iter().enumerate() {
        if is_directive_element(item) {
            continue;
        }
        let id = match merge_key {
            Some(key) => merge_key_of(item, key, path.index(index))?,
            None => item,
        };
        match order[next..].iter().position(|named| same_value(named, id)) {
            Some(offset) => next += offset + 1,
            None => {
                return Err(StrategicPatchError::SetElementOrderMismatch {
                    path: path.render(),
                    field: field.to_string(),
                })
            }
        }
    }
    Ok(())
}

/// Orders a merged list (see the module documentation): elements named by
/// `named` in that order, interleaved with the others in `stored` order.
/// Both slices hold identities (merge-key values, or the values themselves
/// for primitive lists).
fn normalize_order(
    merged: Vec<Value>,
    named: &[&Value],
    stored: &[&Value],
    key: Option<&str>,
) -> Vec<Value> {
    let position = |order: &[&Value], item: &Value| {
        identity(item, key).and_then(|id| order.iter().position(|other| same_value(other, id)))
    };
    let mut from_patch = Vec::new();
    let mut server_only = Vec::new();
    for item in merged {
        let stored_at = position(stored, &item);
        match position(named, &item) {
            Some(named_at) => from_patch.push((named_at, stored_at, item)),
            None => server_only.push((stored_at, item)),
        }
    }
    // Both sorts are stable, so anything without a position keeps its
    // relative order at the end of its run.
    from_patch.sort_by_key(|(named_at, _, _)| *named_at);
    server_only.sort_by_key(|(stored_at, _)| stored_at.unwrap_or(usize::MAX));

    let mut out = Vec::with_capacity(from_patch.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = from_patch.into_iter().peekable();
    loop {
        let take_server_only = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((server_at, _)), Some((_, patch_stored_at, _))) => {
                matches!((server_at, patch_stored_at), (Some(l), Some(r)) if l < r)
            }
        };
        let next = if take_server_only {
            left.next().map(|(_, item)| item)
        } else {
            right.next().map(|(_, _, item)| item)
        };
        out.extend(next);
    }
    out
}

/// The merge-key value of an element of a keyed list.
fn merge_key_of<'v>(
    item: &'v Value,
    key: &'static str,
    path: Path<'_>,
) -> Result<&'v Value, StrategicPatchError> {
    let map = item
        .as_object()
        .ok_or_else(|| StrategicPatchError::ElementNotObject {
            path: path.render(),
            key,
            found: type_name(item),
        })?;
    map.get(key)
        .ok_or_else(|| StrategicPatchError::MissingMergeKey {
            path: path.render(),
            key,
        })
}

/// What identifies a list element: its merge-key value, or itself.
fn identity<'v>(item: &'v Value, key: Option<&str>) -> Option<&'v Value> {
    match key {
        Some(key) => item.as_object()?.get(key),
        None => Some(item),
    }
}

fn has_identity(item: &Value, key: Option<&str>, id: &Value) -> bool {
    identity(item, key).is_some_and(|own| same_value(own, id))
}

fn is_directive_element(item: &Value) -> bool {
    item.as_object().is_some_and(|map| map.contains_key(PATCH))
}

/// JSON equality, except that numbers compare by value: Go decodes every
/// number to float64, so `80` and `80.0` name the same container port.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y || matches!((x.as_f64(), y.as_f64()), (Some(p), Some(q)) if p == q)
        }
        _ => a == b,
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Fails if any object key anywhere in `value` is a directive.
    fn assert_no_directives(value: &Value) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    assert!(!key.starts_with('$'), "directive key {key} was stored");
                    assert_no_directives(child);
                }
            }
            Value::Array(items) => items.iter().for_each(assert_no_directives),
            _ => {}
        }
    }

    fn patched(original: &Value, patch: Value, kind: &str) -> Value {
        match apply(original, &patch, kind) {
            Ok(value) => value,
            Err(err) => panic!("patch failed: {err}"),
        }
    }

    fn patch_error(original: &Value, patch: Value, kind: &str) -> StrategicPatchError {
        match apply(original, &patch, kind) {
            Ok(value) => panic!("patch unexpectedly applied: {value}"),
            Err(err) => err,
        }
    }

    fn nginx_deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web",
                "namespace": "default",
                "labels": {"app": "nginx"},
                "annotations": {"deployment.kubernetes.io/revision": "1"}
            },
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "nginx"}},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}
                },
                "template": {
                    "metadata": {"labels": {"app": "nginx"}},
                    "spec": {
                        "containers": [{
                            "name": "nginx",
                            "image": "nginx:1.19",
                            "ports": [{"containerPort": 80, "protocol": "TCP"}],
                            "env": [
                                {"name": "MODE", "value": "prod"},
                                {"name": "DEBUG", "value": "0"}
                            ],
                            "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}}
                        }],
                        "restartPolicy": "Always"
                    }
                }
            },
            "status": {
                "replicas": 1,
                "conditions": [
                    {"type": "Available", "status": "True"},
                    {"type": "Progressing", "status": "True"}
                ]
            }
        })
    }

    fn pod_spec_of(deployment: &Value) -> &Value {
        &deployment["spec"]["template"]["spec"]
    }

    #[test]
    fn kubectl_set_image_changes_only_the_image() {
        let original = nginx_deployment();
        let patch = json!({
            "metadata": {"annotations": {"kubernetes.io/change-cause": "kubectl set image deployment/web nginx=nginx:1.20"}},
            "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "nginx"}],
                "containers": [{"image": "nginx:1.20", "name": "nginx"}]
            }}}
        });
        let result = patched(&original, patch, "Deployment");

        let mut expected = original.clone();
        expected["metadata"]["annotations"]["kubernetes.io/change-cause"] =
            json!("kubectl set image deployment/web nginx=nginx:1.20");
        expected["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.20");
        assert_eq!(result, expected);
        assert_no_directives(&result);
    }

    #[test]
    fn kubectl_apply_three_way_patch() {
        let original = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web",
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"old\":true}\n"}
            },
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{
                        "name": "web",
                        "image": "nginx:1.19",
                        "ports": [{"containerPort": 80, "protocol": "TCP"}],
                        "imagePullPolicy": "IfNotPresent",
                        "terminationMessagePath": "/dev/termination-log"
                    }]}
                }
            }
        });
        let patch = json!({
            "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"new\":true}\n"}},
            "spec": {
                "replicas": 3,
                "template": {"spec": {
                    "$setElementOrder/containers": [{"name": "web"}],
                    "containers": [{"image": "nginx:1.20", "name": "web"}]
                }}
            }
        });
        let result = patched(&original, patch, "Deployment");

        let mut expected = original.clone();
        expected["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] =
            json!("{\"new\":true}\n");
        expected["spec"]["replicas"] = json!(3);
        expected["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.20");
        assert_eq!(result, expected);
        assert_no_directives(&result);
    }

    #[test]
    fn env_var_removed_with_delete_directive() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [{
            "name": "nginx",
            "env": [{"$patch": "delete", "name": "DEBUG"}]
        }]}}}});
        let result = patched(&nginx_deployment(), patch, "Deployment");
        let container = &pod_spec_of(&result)["containers"][0];
        assert_eq!(container["env"], json!([{"name": "MODE", "value": "prod"}]));
        assert_eq!(container["image"], json!("nginx:1.19"));
        assert_no_directives(&result);
    }

    #[test]
    fn deleting_an_absent_element_is_a_no_op() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [{
            "name": "nginx",
            "env": [{"$patch": "delete", "name": "NOPE"}]
        }]}}}});
        let original = nginx_deployment();
        assert_eq!(patched(&original, patch, "Deployment"), original);
    }

    #[test]
    fn container_port_added_keeps_existing_ports() {
        // Without $setElementOrder upstream puts the new element first.
        let patch = json!({"spec": {"template": {"spec": {"containers": [{
            "name": "nginx",
            "ports": [{"containerPort": 443, "protocol": "TCP"}]
        }]}}}});
        let result = patched(&nginx_deployment(), patch, "Deployment");
        assert_eq!(
            pod_spec_of(&result)["containers"][0]["ports"],
            json!([
                {"containerPort": 443, "protocol": "TCP"},
                {"containerPort": 80, "protocol": "TCP"}
            ])
        );

        // kubectl's patches carry the order the user wrote.
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "nginx"}],
            "containers": [{
                "name": "nginx",
                "$setElementOrder/ports": [{"containerPort": 80}, {"containerPort": 443}],
                "ports": [{"containerPort": 443, "protocol": "TCP"}]
            }]
        }}}});
        let result = patched(&nginx_deployment(), patch, "Deployment");
        assert_eq!(
            pod_spec_of(&result)["containers"][0]["ports"],
            json!([
                {"containerPort": 80, "protocol": "TCP"},
                {"containerPort": 443, "protocol": "TCP"}
            ])
        );
        assert_no_directives(&result);
    }

    #[test]
    fn merge_keys_match_numerically() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [{
            "name": "nginx",
            "ports": [{"containerPort": 80.0, "name": "http"}]
        }]}}}});
        let result = patched(&nginx_deployment(), patch, "Deployment");
        let ports = &pod_spec_of(&result)["containers"][0]["ports"];
        assert_eq!(ports.as_array().map(Vec::len), Some(1));
        assert_eq!(ports[0]["name"], json!("http"));
        assert_eq!(ports[0]["protocol"], json!("TCP"));
    }

    #[test]
    fn new_container_goes_first_without_element_order() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "sidecar", "image": "busybox"}
        ]}}}});
        let result = patched(&nginx_deployment(), patch, "Deployment");
        let names: Vec<&Value> = pod_spec_of(&result)["containers"]
            .as_array()
            .map(|list| list.iter().map(|c| &c["name"]).collect())
            .unwrap_or_default();
        assert_eq!(names, [&json!("sidecar"), &json!("nginx")]);
        assert_eq!(
            pod_spec_of(&result)["containers"][1]["image"],
            json!("nginx:1.19")
        );
    }

    #[test]
    fn element_order_reorders_without_a_patch_list() {
        let original = json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [
                {"name": "a", "image": "a"},
                {"name": "b", "image": "b"},
                {"name": "c", "image": "c"}
            ]}
        });
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "c"}, {"name": "a"}, {"name": "b"}]
        }});
        let result = patched(&original, patch, "Pod");
        assert_eq!(
            result["spec"]["containers"],
            json!([
                {"name": "c", "image": "c"},
                {"name": "a", "image": "a"},
                {"name": "b", "image": "b"}
            ])
        );
        assert_no_directives(&result);
    }

    #[test]
    fn element_order_places_new_and_updated_elements() {
        let original = json!({"spec": {"containers": [
            {"name": "a", "image": "a1"},
            {"name": "b", "image": "b1"}
        ]}});
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "new"}, {"name": "b"}],
            "containers": [{"name": "new", "image": "n"}, {"name": "b", "image": "b2"}]
        }});
        let result = patched(&original, patch, "Pod");
        assert_eq!(
            result["spec"]["containers"],
            json!([
                {"name": "a", "image": "a1"},
                {"name": "new", "image": "n"},
                {"name": "b", "image": "b2"}
            ])
        );
    }

    #[test]
    fn element_order_that_contradicts_the_patch_list_is_rejected() {
        let original = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [{"name": "b", "image": "x"}, {"name": "a", "image": "y"}]
        }});
        let err = patch_error(&original, patch, "Pod");
        assert!(matches!(
            err,
            StrategicPatchError::SetElementOrderMismatch { .. }
        ));
        assert!(
            err.to_string().contains("$setElementOrder/containers"),
            "{err}"
        );
    }

    #[test]
    fn element_order_entries_need_the_merge_key() {
        let original = json!({"spec": {"containers": [{"name": "a"}]}});
        let patch = json!({"spec": {"$setElementOrder/containers": [{"image": "a"}]}});
        let err = patch_error(&original, patch, "Pod");
        assert_eq!(
            err,
            StrategicPatchError::MissingMergeKey {
                path: "spec.$setElementOrder/containers[0]".to_string(),
                key: "name",
            }
        );
    }

    #[test]
    fn service_ports_merge_by_port() {
        let original = json!({
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {
                "selector": {"app": "web"},
                "ports": [
                    {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                    {"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"}
                ]
            }
        });
        let patch = json!({"spec": {"ports": [{"port": 443, "targetPort": 9443}]}});
        let result = patched(&original, patch, "Service");
        assert_eq!(
            result["spec"]["ports"],
            json!([
                {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                {"name": "https", "port": 443, "targetPort": 9443, "protocol": "TCP"}
            ])
        );
    }

    #[test]
    fn finalizers_merge_as_a_set() {
        let original = json!({"metadata": {"name": "cm", "finalizers": ["a.example.com/x", "b.example.com/y"]}});

        let result = patched(
            &original,
            json!({"metadata": {"finalizers": ["b.example.com/y", "c.example.com/z"]}}),
            "ConfigMap",
        );
        assert_eq!(
            result["metadata"]["finalizers"],
            json!(["a.example.com/x", "b.example.com/y", "c.example.com/z"])
        );

        // A value new to the list goes first, as upstream orders it.
        let result = patched(
            &original,
            json!({"metadata": {"finalizers": ["c.example.com/z"]}}),
            "ConfigMap",
        );
        assert_eq!(
            result["metadata"]["finalizers"],
            json!(["c.example.com/z", "a.example.com/x", "b.example.com/y"])
        );
    }

    #[test]
    fn finalizers_deleted_from_primitive_list() {
        let original = json!({"metadata": {"name": "cm", "finalizers": ["a", "b", "c"]}});
        let result = patched(
            &original,
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}),
            "Secret",
        );
        assert_eq!(result["metadata"]["finalizers"], json!(["a", "c"]));
        assert_no_directives(&result);

        // kubectl apply's form: order, deletion and addition together.
        let result = patched(
            &original,
            json!({"metadata": {
                "$setElementOrder/finalizers": ["a", "d", "c"],
                "$deleteFromPrimitiveList/finalizers": ["b"],
                "finalizers": ["d"]
            }}),
            "Secret",
        );
        assert_eq!(result["metadata"]["finalizers"], json!(["a", "d", "c"]));
        assert_no_directives(&result);
    }

    #[test]
    fn delete_from_absent_primitive_list_does_nothing() {
        let original = json!({"metadata": {"name": "cm"}});
        let result = patched(
            &original,
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}),
            "ConfigMap",
        );
        assert_eq!(result, original);
    }

    #[test]
    fn retain_keys_clears_unlisted_fields() {
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        let result = patched(&nginx_deployment(), patch, "Deployment");
        assert_eq!(result["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_no_directives(&result);
    }

    #[test]
    fn retain_keys_must_name_every_field_the_patch_sets() {
        let patch = json!({"spec": {"strategy": {
            "$retainKeys": ["type"],
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1}
        }}});
        let err = patch_error(&nginx_deployment(), patch, "Deployment");
        assert_eq!(
            err,
            StrategicPatchError::FieldNotRetained {
                path: "spec.strategy".to_string(),
                field: "rollingUpdate".to_string(),
            }
        );
    }

    #[test]
    fn retain_keys_inside_a_volume() {
        let original = json!({"spec": {"volumes": [
            {"name": "data", "emptyDir": {}},
            {"name": "conf", "configMap": {"name": "c"}}
        ]}});
        let patch = json!({"spec": {"volumes": [
            {"name": "data", "$retainKeys": ["name", "hostPath"], "hostPath": {"path": "/srv"}}
        ]}});
        let result = patched(&original, patch, "Pod");
        assert_eq!(
            result["spec"]["volumes"],
            json!([
                {"name": "data", "hostPath": {"path": "/srv"}},
                {"name": "conf", "configMap": {"name": "c"}}
            ])
        );
    }

    #[test]
    fn null_deletes_a_label() {
        let original =
            json!({"metadata": {"name": "n", "labels": {"app": "web", "tier": "front"}}});
        let result = patched(
            &original,
            json!({"metadata": {"labels": {"tier": null, "new": "x"}}}),
            "Namespace",
        );
        assert_eq!(
            result["metadata"]["labels"],
            json!({"app": "web", "new": "x"})
        );
    }

    #[test]
    fn null_for_an_absent_key_is_not_stored() {
        let original = json!({"metadata": {"name": "n"}});
        let result = patched(
            &original,
            json!({"metadata": {"labels": {"gone": null, "kept": "1"}}, "data": null}),
            "ConfigMap",
        );
        assert_eq!(
            result,
            json!({"metadata": {"name": "n", "labels": {"kept": "1"}}})
        );
    }

    #[test]
    fn element_without_merge_key_is_an_error() {
        let patch =
            json!({"spec": {"template": {"spec": {"containers": [{"image": "nginx:1.20"}]}}}});
        let err = patch_error(&nginx_deployment(), patch, "Deployment");
        assert_eq!(
            err,
            StrategicPatchError::MissingMergeKey {
                path: "spec.template.spec.containers[0]".to_string(),
                key: "name",
            }
        );
        let message = err.to_string();
        assert!(
            message.contains("spec.template.spec.containers[0]"),
            "{message}"
        );
        assert!(message.contains("`name`"), "{message}");
    }

    #[test]
    fn delete_directive_without_merge_key_is_an_error() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [{
            "name": "nginx",
            "env": [{"$patch": "delete", "value": "0"}]
        }]}}}});
        let err = patch_error(&nginx_deployment(), patch, "Deployment");
        assert_eq!(
            err,
            StrategicPatchError::MissingMergeKey {
                path: "spec.template.spec.containers[0].env[0]".to_string(),
                key: "name",
            }
        );
    }

    #[test]
    fn keyed_list_element_must_be_an_object() {
        let patch = json!({"spec": {"template": {"spec": {"containers": ["nginx"]}}}});
        let err = patch_error(&nginx_deployment(), patch, "Deployment");
        assert!(matches!(
            err,
            StrategicPatchError::ElementNotObject { key: "name", .. }
        ));
    }

    #[test]
    fn patch_must_be_an_object() {
        let err = patch_error(
            &nginx_deployment(),
            json!([{"op": "replace"}]),
            "Deployment",
        );
        assert_eq!(err, StrategicPatchError::PatchNotObject { found: "a list" });
        assert!(err.to_string().contains("JSON object"));
        let err = patch_error(&json!("x"), json!({}), "Deployment");
        assert_eq!(
            err,
            StrategicPatchError::OriginalNotObject { found: "a string" }
        );
    }

    #[test]
    fn unknown_patch_directives_are_rejected() {
        let original = nginx_deployment();
        let err = patch_error(
            &original,
            json!({"spec": {"$patch": "explode"}}),
            "Deployment",
        );
        assert_eq!(
            err,
            StrategicPatchError::UnknownPatchDirective {
                path: "spec.$patch".to_string(),
                directive: "\"explode\"".to_string(),
            }
        );
        let err = patch_error(
            &original,
            json!({"spec": {"template": {"spec": {"containers": [{"name": "nginx", "$patch": "merge"}]}}}}),
            "Deployment",
        );
        assert!(matches!(
            err,
            StrategicPatchError::MergeDirectiveInList { .. }
        ));
    }

    #[test]
    fn list_replace_directive() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"$patch": "replace"},
            {"name": "only", "image": "busybox"}
        ]}}}});
        let result = patched(&nginx_deployment(), patch, "Deployment");
        assert_eq!(
            pod_spec_of(&result)["containers"],
            json!([{"name": "only", "image": "busybox"}])
        );
        assert_no_directives(&result);
    }

    #[test]
    fn map_replace_and_delete_directives() {
        let original = nginx_deployment();
        let result = patched(
            &original,
            json!({"spec": {"selector": {"$patch": "replace", "matchLabels": {"app": "other"}}}}),
            "Deployment",
        );
        assert_eq!(
            result["spec"]["selector"],
            json!({"matchLabels": {"app": "other"}})
        );

        let result = patched(
            &original,
            json!({"metadata": {"labels": {"$patch": "delete"}}}),
            "Deployment",
        );
        assert_eq!(result["metadata"]["labels"], json!({}));
    }

    #[test]
    fn lists_without_strategy_are_replaced() {
        let original = json!({"spec": {
            "containers": [{"name": "a", "args": ["--x", "--y"]}],
            "tolerations": [{"key": "k1", "operator": "Exists"}, {"key": "k2", "operator": "Exists"}]
        }});
        let patch = json!({"spec": {
            "containers": [{"name": "a", "args": ["--z"]}],
            "tolerations": [{"key": "k3", "operator": "Exists", "effect": null}]
        }});
        let result = patched(&original, patch, "Pod");
        assert_eq!(result["spec"]["containers"][0]["args"], json!(["--z"]));
        assert_eq!(
            result["spec"]["tolerations"],
            json!([{"key": "k3", "operator": "Exists"}])
        );
    }

    #[test]
    fn endpoints_subsets_are_atomic() {
        let original = json!({"metadata": {"name": "svc"}, "subsets": [
            {"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}
        ]});
        let patch =
            json!({"subsets": [{"addresses": [{"ip": "10.0.0.2"}], "ports": [{"port": 80}]}]});
        let result = patched(&original, patch, "Endpoints");
        assert_eq!(
            result["subsets"],
            json!([{"addresses": [{"ip": "10.0.0.2"}], "ports": [{"port": 80}]}])
        );
    }

    #[test]
    fn unknown_kind_replaces_lists() {
        let original = json!({"metadata": {"finalizers": ["a"]}, "spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b"}]}});
        let patch = json!({"metadata": {"finalizers": ["b"]}, "spec": {"containers": [{"name": "a", "image": "2"}], "$ref": "#/x"}});
        let result = patched(&original, patch, "Widget");
        assert_eq!(result["metadata"]["finalizers"], json!(["b"]));
        assert_eq!(
            result["spec"]["containers"],
            json!([{"name": "a", "image": "2"}])
        );
        // Unknown kinds may define `$` fields, so they are kept as data.
        assert_eq!(result["spec"]["$ref"], json!("#/x"));
        assert!(!supports_kind("Widget"));
        assert!(supports_kind("CronJob"));
    }

    #[test]
    fn unknown_directive_keys_are_stripped_for_known_kinds() {
        let patch = json!({
            "$unknown": 1,
            "metadata": {"labels": {"x": "y"}, "$future": {"a": 1}},
            "spec": {"template": {"spec": {"containers": [{"name": "nginx", "$x": true}]}}}
        });
        let result = patched(&nginx_deployment(), patch, "Deployment");
        assert_no_directives(&result);
        assert_eq!(result["metadata"]["labels"]["x"], json!("y"));
    }

    #[test]
    fn directives_inside_new_values_are_applied_not_stored() {
        let original = json!({"metadata": {"name": "d"}});
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
            "containers": [
                {"name": "b", "image": "b", "resources": null},
                {"name": "a", "image": "a", "env": [{"name": "X", "$patch": "delete"}, {"name": "Y", "value": "1"}]}
            ]
        }}}});
        let result = patched(&original, patch, "Deployment");
        assert_eq!(
            result["spec"]["template"]["spec"]["containers"],
            json!([
                {"name": "b", "image": "b"},
                {"name": "a", "image": "a", "env": [{"name": "Y", "value": "1"}]}
            ])
        );
        assert_no_directives(&result);
    }

    #[test]
    fn pod_status_conditions_and_ips() {
        let original = json!({
            "metadata": {"name": "p"},
            "status": {
                "phase": "Pending",
                "conditions": [
                    {"type": "PodScheduled", "status": "True"},
                    {"type": "Ready", "status": "False"}
                ],
                "podIPs": [{"ip": "10.1.0.5"}]
            }
        });
        let patch = json!({"status": {
            "phase": "Running",
            "$setElementOrder/conditions": [{"type": "PodScheduled"}, {"type": "Ready"}],
            "conditions": [{"type": "Ready", "status": "True"}],
            "podIPs": [{"ip": "fd00::5"}]
        }});
        let result = patched(&original, patch, "Pod");
        assert_eq!(
            result["status"]["conditions"],
            json!([
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "True"}
            ])
        );
        assert_eq!(
            result["status"]["podIPs"],
            json!([{"ip": "fd00::5"}, {"ip": "10.1.0.5"}])
        );
        assert_eq!(result["status"]["phase"], json!("Running"));
    }

    #[test]
    fn pod_spec_keyed_lists() {
        let original = json!({"spec": {
            "initContainers": [{"name": "init", "image": "a"}],
            "containers": [{
                "name": "app",
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                "volumeDevices": [{"name": "blk", "devicePath": "/dev/x"}]
            }],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "imagePullSecrets": [{"name": "reg"}],
            "hostAliases": [{"ip": "10.0.0.1", "hostnames": ["a"]}],
            "topologySpreadConstraints": [{"topologyKey": "zone", "maxSkew": 1}]
        }});
        let patch = json!({"spec": {
            "initContainers": [{"name": "init", "image": "b"}],
            "ephemeralContainers": [{"name": "debug", "image": "busybox"}],
            "containers": [{
                "name": "app",
                "volumeMounts": [{"mountPath": "/data", "readOnly": true}],
                "volumeDevices": [{"devicePath": "/dev/x", "name": "blk2"}]
            }],
            "volumes": [{"name": "data", "emptyDir": {"medium": "Memory"}}],
            "imagePullSecrets": [{"name": "reg"}],
            "hostAliases": [{"ip": "10.0.0.1", "hostnames": ["b"]}],
            "topologySpreadConstraints": [{"topologyKey": "zone", "maxSkew": 2}]
        }});
        let result = patched(&original, patch, "Pod");
        let spec = &result["spec"];
        assert_eq!(
            spec["initContainers"],
            json!([{"name": "init", "image": "b"}])
        );
        assert_eq!(
            spec["ephemeralContainers"],
            json!([{"name": "debug", "image": "busybox"}])
        );
        assert_eq!(
            spec["containers"][0]["volumeMounts"],
            json!([{"name": "data", "mountPath": "/data", "readOnly": true}])
        );
        assert_eq!(
            spec["containers"][0]["volumeDevices"],
            json!([{"name": "blk2", "devicePath": "/dev/x"}])
        );
        assert_eq!(
            spec["volumes"],
            json!([{"name": "data", "emptyDir": {"medium": "Memory"}}])
        );
        assert_eq!(spec["imagePullSecrets"], json!([{"name": "reg"}]));
        // `hostnames` has no strategy, so the inner list is replaced.
        assert_eq!(
            spec["hostAliases"],
            json!([{"ip": "10.0.0.1", "hostnames": ["b"]}])
        );
        assert_eq!(
            spec["topologySpreadConstraints"],
            json!([{"topologyKey": "zone", "maxSkew": 2}])
        );
    }

    #[test]
    fn owner_references_merge_by_uid() {
        let original = json!({"metadata": {"ownerReferences": [
            {"uid": "u1", "kind": "ReplicaSet", "name": "rs1", "controller": true}
        ]}});
        let patch = json!({"metadata": {"ownerReferences": [
            {"uid": "u1", "blockOwnerDeletion": true},
            {"uid": "u2", "kind": "Node", "name": "n"}
        ]}});
        let result = patched(&original, patch, "Pod");
        assert_eq!(
            result["metadata"]["ownerReferences"],
            json!([
                {"uid": "u1", "kind": "ReplicaSet", "name": "rs1", "controller": true, "blockOwnerDeletion": true},
                {"uid": "u2", "kind": "Node", "name": "n"}
            ])
        );
    }

    #[test]
    fn node_addresses_conditions_taints_and_pod_cidrs() {
        let original = json!({
            "metadata": {"name": "n1"},
            "spec": {
                "podCIDRs": ["10.244.0.0/24"],
                "taints": [{"key": "a", "effect": "NoSchedule"}]
            },
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": "192.168.1.10"},
                    {"type": "Hostname", "address": "n1"}
                ],
                "conditions": [{"type": "Ready", "status": "False", "reason": "Starting"}]
            }
        });
        let patch = json!({
            "spec": {"podCIDRs": ["fd00::/64"], "taints": [{"key": "b", "effect": "NoExecute"}]},
            "status": {
                "addresses": [{"type": "InternalIP", "address": "192.168.1.11"}],
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]
            }
        });
        let result = patched(&original, patch, "Node");
        assert_eq!(
            result["spec"]["podCIDRs"],
            json!(["fd00::/64", "10.244.0.0/24"])
        );
        assert_eq!(
            result["spec"]["taints"],
            json!([{"key": "b", "effect": "NoExecute"}])
        );
        assert_eq!(
            result["status"]["addresses"],
            json!([
                {"type": "InternalIP", "address": "192.168.1.11"},
                {"type": "Hostname", "address": "n1"}
            ])
        );
        assert_eq!(
            result["status"]["conditions"],
            json!([{"type": "Ready", "status": "True", "reason": "KubeletReady"}])
        );
    }

    #[test]
    fn workload_status_conditions_merge_by_type() {
        for kind in [
            "Deployment",
            "ReplicaSet",
            "DaemonSet",
            "ReplicationController",
            "Job",
            "StatefulSet",
        ] {
            let original = json!({"status": {"conditions": [
                {"type": "Available", "status": "True"},
                {"type": "Progressing", "status": "True"}
            ]}});
            let patch =
                json!({"status": {"conditions": [{"type": "Progressing", "status": "False"}]}});
            let result = patched(&original, patch, kind);
            assert_eq!(
                result["status"]["conditions"],
                json!([
                    {"type": "Available", "status": "True"},
                    {"type": "Progressing", "status": "False"}
                ]),
                "{kind}"
            );
        }
        for kind in ["Service", "Namespace"] {
            let original = json!({"status": {"conditions": [{"type": "A", "status": "True"}]}});
            let patch = json!({"status": {"conditions": [{"type": "A", "reason": "r"}]}});
            let result = patched(&original, patch, kind);
            assert_eq!(
                result["status"]["conditions"],
                json!([{"type": "A", "status": "True", "reason": "r"}]),
                "{kind}"
            );
        }
    }

    #[test]
    fn pod_templates_of_every_workload_kind() {
        let template = json!({"spec": {"containers": [
            {"name": "c", "image": "old", "env": [{"name": "A", "value": "1"}]}
        ]}});
        let template_patch = json!({"spec": {"containers": [{"name": "c", "image": "new"}]}});
        for kind in [
            "ReplicationController",
            "ReplicaSet",
            "Deployment",
            "DaemonSet",
            "StatefulSet",
            "Job",
        ] {
            let original = json!({"spec": {"template": template}});
            let patch = json!({"spec": {"template": template_patch}});
            let result = patched(&original, patch, kind);
            assert_eq!(
                result["spec"]["template"]["spec"]["containers"],
                json!([{"name": "c", "image": "new", "env": [{"name": "A", "value": "1"}]}]),
                "{kind}"
            );
        }

        let original = json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}}});
        let patch = json!({"spec": {"jobTemplate": {"spec": {"template": template_patch}}}});
        let result = patched(&original, patch, "CronJob");
        assert_eq!(
            result["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"],
            json!([{"name": "c", "image": "new", "env": [{"name": "A", "value": "1"}]}])
        );

        let original = json!({"template": template});
        let result = patched(
            &original,
            json!({"template": template_patch}),
            "PodTemplate",
        );
        assert_eq!(
            result["template"]["spec"]["containers"][0]["env"],
            json!([{"name": "A", "value": "1"}])
        );
    }

    #[test]
    fn template_metadata_finalizers_merge() {
        let original = json!({"spec": {"template": {"metadata": {"finalizers": ["a"]}}}});
        let patch = json!({"spec": {"template": {"metadata": {"finalizers": ["a", "b"]}}}});
        let result = patched(&original, patch, "Deployment");
        assert_eq!(
            result["spec"]["template"]["metadata"]["finalizers"],
            json!(["a", "b"])
        );
    }

    #[test]
    fn primitive_set_rejects_objects() {
        let original = json!({"metadata": {"finalizers": ["a"]}});
        let err = patch_error(
            &original,
            json!({"metadata": {"finalizers": [{"x": 1}]}}),
            "Pod",
        );
        assert_eq!(
            err,
            StrategicPatchError::NonScalarElement {
                path: "metadata.finalizers[0]".to_string(),
                found: "an object",
            }
        );
    }

    #[test]
    fn malformed_list_directives_are_rejected() {
        let original = json!({"metadata": {"finalizers": ["a"]}});
        let err = patch_error(
            &original,
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}),
            "Pod",
        );
        assert!(matches!(err, StrategicPatchError::DirectiveNotList { .. }));
        let err = patch_error(
            &original,
            json!({"metadata": {"$setElementOrder/": []}}),
            "Pod",
        );
        assert!(matches!(
            err,
            StrategicPatchError::DirectiveWithoutField { .. }
        ));
        let err = patch_error(&original, json!({"metadata": {"$retainKeys": [1]}}), "Pod");
        assert!(matches!(
            err,
            StrategicPatchError::RetainKeysEntryNotString { .. }
        ));
        let err = patch_error(
            &original,
            json!({"spec": {"$setElementOrder/containers": [], "containers": {"name": "x"}}}),
            "Pod",
        );
        assert!(matches!(
            err,
            StrategicPatchError::OrderedFieldNotList { .. }
        ));
    }

    #[test]
    fn type_changes_replace_the_stored_value() {
        let original = json!({"data": {"a": "1"}, "spec": {"containers": "broken"}});
        let patch = json!({"data": "flat", "spec": {"containers": [{"name": "a"}]}});
        let result = patched(&original, patch, "Pod");
        assert_eq!(result["data"], json!("flat"));
        assert_eq!(result["spec"]["containers"], json!([{"name": "a"}]));
    }

    #[test]
    fn inputs_are_not_modified_and_empty_patch_is_identity() {
        let original = nginx_deployment();
        let copy = original.clone();
        assert_eq!(patched(&original, json!({}), "Deployment"), copy);
        assert_eq!(original, copy);
    }
}
