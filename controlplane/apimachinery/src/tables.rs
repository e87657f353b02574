//! Server-side Table printing (`meta.k8s.io/v1` `Table`).
//!
//! This mirrors what kube-apiserver returns when a client asks for
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`: the column sets and
//! cell logic of the built-in printers (`pkg/printers/internalversion` in
//! Kubernetes 1.33) and, for every other resource, the generic convertor that
//! prints only `Name` and `Created At`.
//!
//! The apiserver always renders rows in "wide" mode and lets the client drop
//! columns whose `priority` is above what it wants, so every row here carries
//! the wide cells too; `kubectl get` and `kubectl get -o wide` differ only on
//! the client side.
//!
//! Everything works on untyped JSON. Objects read back from storage may lack
//! any field, so every accessor falls back to the value the Go printers would
//! see for an unset field (empty string, zero, nil), and the printers then
//! render it the same way (`<none>`, `<unknown>`, `0`). Where the v1 API's
//! defaulting would have filled a field in before the object ever reached a
//! printer (replica counts, port protocol, service type, cronjob suspend),
//! that default is applied here as well.
//!
//! One deliberate divergence: a few upstream column definitions declare a type
//! that disagrees with the cell they actually emit (for example `Data` on
//! secrets is declared `string` but holds a number). Here every column's
//! `type` matches the JSON type of its cells; the cell values themselves are
//! exactly what kube-apiserver sends, so kubectl renders the same text.

use std::collections::BTreeSet;

use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Map, Value};

const NONE: &str = "<none>";
const UNKNOWN: &str = "<unknown>";

/// Unix second of Go's zero `time.Time` (0001-01-01T00:00:00Z). A timestamp
/// equal to it counts as unset, like `metav1.Time.IsZero`.
const GO_ZERO_UNIX_SECOND: i64 = -62_135_596_800;

/// What the generic convertor prints for an object without a creation time:
/// Go formats the zero `time.Time`.
const GO_ZERO_RFC3339: &str = "0001-01-01T00:00:00Z";

// ---------------------------------------------------------------------------
// Column definitions
// ---------------------------------------------------------------------------

/// One `TableColumnDefinition`.
struct Column {
    name: &'static str,
    kind: &'static str,
    format: &'static str,
    priority: u8,
    description: &'static str,
}

/// A column shown by plain `kubectl get`.
const fn col(name: &'static str, kind: &'static str, description: &'static str) -> Column {
    Column {
        name,
        kind,
        format: "",
        priority: 0,
        description,
    }
}

/// A column only shown by `kubectl get -o wide` (priority 1).
const fn wide(name: &'static str, kind: &'static str, description: &'static str) -> Column {
    Column {
        name,
        kind,
        format: "",
        priority: 1,
        description,
    }
}

const NAME_DOC: &str =
    "Name of the object, unique within its namespace (or cluster for cluster-scoped kinds).";
const AGE_DOC: &str = "Time elapsed since the object's creationTimestamp.";
const CONTAINERS_DOC: &str = "Names of each container in the template.";
const IMAGES_DOC: &str = "Images referenced by each container in the template.";

const NAME: Column = Column {
    name: "Name",
    kind: "string",
    format: "name",
    priority: 0,
    description: NAME_DOC,
};
const AGE: Column = col("Age", "string", AGE_DOC);

const POD_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Ready",
        "string",
        "The aggregate readiness state of this pod for accepting traffic.",
    ),
    col(
        "Status",
        "string",
        "The aggregate status of the containers in this pod.",
    ),
    col(
        "Restarts",
        "string",
        "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
    ),
    AGE,
    wide("IP", "string", "IP address allocated to the pod."),
    wide("Node", "string", "Node the pod is bound to."),
    wide(
        "Nominated Node",
        "string",
        "Node the scheduler expects the pod to land on once preemption completes.",
    ),
    wide(
        "Readiness Gates",
        "string",
        "How many of the pod's readiness gates are currently satisfied.",
    ),
];

/// Replication controllers and replica sets share one layout.
const REPLICA_COLUMNS: &[Column] = &[
    NAME,
    col("Desired", "integer", "Number of desired replicas."),
    col(
        "Current",
        "integer",
        "Number of replicas that currently exist.",
    ),
    col("Ready", "integer", "Number of replicas that are ready."),
    AGE,
    wide("Containers", "string", CONTAINERS_DOC),
    wide("Images", "string", IMAGES_DOC),
    wide(
        "Selector",
        "string",
        "Label query over the pods this controller manages.",
    ),
];

const SERVICE_COLUMNS: &[Column] = &[
    NAME,
    col("Type", "string", "How the service is exposed."),
    col(
        "Cluster-IP",
        "string",
        "Virtual IP address of the service inside the cluster.",
    ),
    col(
        "External-IP",
        "string",
        "Addresses the service is reachable at from outside the cluster.",
    ),
    col("Port(s)", "string", "Ports exposed by the service."),
    AGE,
    wide(
        "Selector",
        "string",
        "Label query selecting the pods traffic is routed to.",
    ),
];

const ENDPOINTS_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Endpoints",
        "string",
        "Addresses and ports backing the service.",
    ),
    AGE,
];

const ENDPOINT_SLICE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "AddressType",
        "string",
        "The type of addresses the slice holds: IPv4, IPv6 or FQDN.",
    ),
    col("Ports", "string", "The ports the slice's endpoints serve."),
    col("Endpoints", "string", "The addresses of the slice's endpoints."),
    AGE,
];

const NODE_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "The status of the node"),
    col("Roles", "string", "The roles of the node"),
    AGE,
    col("Version", "string", "Kubelet version reported by the node."),
    wide(
        "Internal-IP",
        "string",
        "First internal address reported by the node.",
    ),
    wide(
        "External-IP",
        "string",
        "First external address reported by the node.",
    ),
    wide(
        "OS-Image",
        "string",
        "Operating system image reported by the node.",
    ),
    wide(
        "Kernel-Version",
        "string",
        "Kernel version reported by the node.",
    ),
    wide(
        "Container-Runtime",
        "string",
        "Container runtime and version reported by the node.",
    ),
];

const NAMESPACE_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "The status of the namespace"),
    AGE,
];

const CONFIGMAP_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Data",
        "integer",
        "Number of entries in data and binaryData.",
    ),
    AGE,
];

const SECRET_COLUMNS: &[Column] = &[
    NAME,
    col("Type", "string", "Type of the secret."),
    col("Data", "integer", "Number of entries in data."),
    AGE,
];

const EVENT_COLUMNS: &[Column] = &[
    col(
        "Last Seen",
        "string",
        "Time since the event was last observed.",
    ),
    col("Type", "string", "Type of the event (Normal, Warning)."),
    col("Reason", "string", "Machine-readable reason for the event."),
    col("Object", "string", "The object this event is about."),
    wide(
        "Subobject",
        "string",
        "Field path within the involved object.",
    ),
    wide(
        "Source",
        "string",
        "Component (and host) that reported the event.",
    ),
    col(
        "Message",
        "string",
        "Human-readable description of the event.",
    ),
    wide(
        "First Seen",
        "string",
        "Time since the event was first observed.",
    ),
    wide(
        "Count",
        "integer",
        "Number of times the event has occurred.",
    ),
    Column {
        name: "Name",
        kind: "string",
        format: "name",
        priority: 1,
        description: NAME_DOC,
    },
];

const DEPLOYMENT_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", "Number of the pod with ready state"),
    col(
        "Up-to-date",
        "integer",
        "Number of replicas running the latest pod template.",
    ),
    col(
        "Available",
        "integer",
        "Number of replicas available to serve.",
    ),
    AGE,
    wide("Containers", "string", CONTAINERS_DOC),
    wide("Images", "string", IMAGES_DOC),
    wide(
        "Selector",
        "string",
        "Label query over the pods this deployment manages.",
    ),
];

const DAEMONSET_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Desired",
        "integer",
        "Number of nodes that should run the daemon pod.",
    ),
    col(
        "Current",
        "integer",
        "Number of nodes running at least one daemon pod.",
    ),
    col(
        "Ready",
        "integer",
        "Number of nodes whose daemon pod is ready.",
    ),
    col(
        "Up-to-date",
        "integer",
        "Number of nodes running the latest daemon pod.",
    ),
    col(
        "Available",
        "integer",
        "Number of nodes whose daemon pod is available.",
    ),
    col(
        "Node Selector",
        "string",
        "Node labels the daemon pods are restricted to.",
    ),
    AGE,
    wide("Containers", "string", CONTAINERS_DOC),
    wide("Images", "string", IMAGES_DOC),
    wide(
        "Selector",
        "string",
        "Label query over the pods this daemon set manages.",
    ),
];

const JOB_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "Status of the job."),
    col(
        "Completions",
        "string",
        "Succeeded pods out of the desired completions.",
    ),
    col("Duration", "string", "Time required to complete the job."),
    AGE,
    wide("Containers", "string", CONTAINERS_DOC),
    wide("Images", "string", IMAGES_DOC),
    wide(
        "Selector",
        "string",
        "Label query over the pods this job manages.",
    ),
];

const CRONJOB_COLUMNS: &[Column] = &[
    NAME,
    col("Schedule", "string", "Cron schedule of the job."),
    col(
        "Timezone",
        "string",
        "Time zone the schedule is interpreted in.",
    ),
    col("Suspend", "string", "Whether new runs are suspended."),
    col("Active", "integer", "Number of currently running jobs."),
    col(
        "Last Schedule",
        "string",
        "Time since the job was last scheduled.",
    ),
    AGE,
    wide("Containers", "string", CONTAINERS_DOC),
    wide("Images", "string", IMAGES_DOC),
    wide(
        "Selector",
        "string",
        "Label query over the pods the jobs manage.",
    ),
];

/// The generic convertor's columns, used for every resource without a
/// dedicated printer. Note `Created At` has type `date` and no format.
const DEFAULT_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Created At",
        "date",
        "Time the object was created, in RFC 3339 form and UTC.",
    ),
];

/// Which printer handles a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Printer {
    Pod,
    ReplicationController,
    ReplicaSet,
    Service,
    Endpoints,
    EndpointSlice,
    Node,
    Namespace,
    ConfigMap,
    Secret,
    Event,
    Deployment,
    DaemonSet,
    Job,
    CronJob,
    Default,
}

impl Printer {
    fn for_resource(resource: &str) -> Printer {
        match resource {
            "pods" => Printer::Pod,
            "replicationcontrollers" => Printer::ReplicationController,
            "replicasets" => Printer::ReplicaSet,
            "services" => Printer::Service,
            "endpoints" => Printer::Endpoints,
            "endpointslices" => Printer::EndpointSlice,
            "nodes" => Printer::Node,
            "namespaces" => Printer::Namespace,
            "configmaps" => Printer::ConfigMap,
            "secrets" => Printer::Secret,
            "events" => Printer::Event,
            "deployments" => Printer::Deployment,
            "daemonsets" => Printer::DaemonSet,
            "jobs" => Printer::Job,
            "cronjobs" => Printer::CronJob,
            _ => Printer::Default,
        }
    }

    fn columns(self) -> &'static [Column] {
        match self {
            Printer::Pod => POD_COLUMNS,
            Printer::ReplicationController | Printer::ReplicaSet => REPLICA_COLUMNS,
            Printer::Service => SERVICE_COLUMNS,
            Printer::Endpoints => ENDPOINTS_COLUMNS,
            Printer::EndpointSlice => ENDPOINT_SLICE_COLUMNS,
            Printer::Node => NODE_COLUMNS,
            Printer::Namespace => NAMESPACE_COLUMNS,
            Printer::ConfigMap => CONFIGMAP_COLUMNS,
            Printer::Secret => SECRET_COLUMNS,
            Printer::Event => EVENT_COLUMNS,
            Printer::Deployment => DEPLOYMENT_COLUMNS,
            Printer::DaemonSet => DAEMONSET_COLUMNS,
            Printer::Job => JOB_COLUMNS,
            Printer::CronJob => CRONJOB_COLUMNS,
            Printer::Default => DEFAULT_COLUMNS,
        }
    }
}

/// The `columnDefinitions` of a Table for `resource` (plural, lowercase).
///
/// Every field of `TableColumnDefinition` is always present, as in the Go
/// serialization (no `omitempty` there): `format` is `""` when unused and
/// `priority` is `0` for columns shown without `-o wide`.
pub fn column_definitions(resource: &str) -> Vec<Value> {
    Printer::for_resource(resource)
        .columns()
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.kind,
                "format": c.format,
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Table and rows
// ---------------------------------------------------------------------------

/// A whole `Table` for a list (or a single object, or one watch event).
///
/// With `include_columns` false the column definitions are left out (an
/// empty array), which is what watch events after the first one carry.
pub fn table(
    resource: &str,
    objects: &[Value],
    resource_version: &str,
    now: Timestamp,
    include_columns: bool,
) -> Value {
    let columns = if include_columns {
        column_definitions(resource)
    } else {
        Vec::new()
    };
    let rows: Vec<Value> = objects.iter().map(|o| row(resource, o, now)).collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": { "resourceVersion": resource_version },
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// One `TableRow`: the cells for `obj` plus its metadata wrapped as a
/// `PartialObjectMetadata` (the apiserver's default `includeObject=Metadata`),
/// which is what kubectl reads for `--show-labels` and the namespace column
/// of `-A`.
///
/// Pods in a terminal phase additionally carry the `Completed` row condition
/// the upstream pod printer attaches.
pub fn row(resource: &str, obj: &Value, now: Timestamp) -> Value {
    let printer = Printer::for_resource(resource);
    let mut conditions = None;
    let cells = match printer {
        Printer::Pod => {
            let (cells, conds) = pod_cells(obj, now);
            conditions = conds;
            cells
        }
        Printer::ReplicationController => replication_controller_cells(obj, now),
        Printer::ReplicaSet => replica_set_cells(obj, now),
        Printer::Service => service_cells(obj, now),
        Printer::Endpoints => endpoints_cells(obj, now),
        Printer::EndpointSlice => endpoint_slice_cells(obj, now),
        Printer::Node => node_cells(obj, now),
        Printer::Namespace => namespace_cells(obj, now),
        Printer::ConfigMap => configmap_cells(obj, now),
        Printer::Secret => secret_cells(obj, now),
        Printer::Event => event_cells(obj, now),
        Printer::Deployment => deployment_cells(obj, now),
        Printer::DaemonSet => daemonset_cells(obj, now),
        Printer::Job => job_cells(obj, now),
        Printer::CronJob => cronjob_cells(obj, now),
        Printer::Default => default_cells(obj),
    };

    let metadata = match obj.get("metadata") {
        Some(m @ Value::Object(_)) => m.clone(),
        _ => Value::Object(Map::new()),
    };
    let mut out = Map::new();
    out.insert("cells".to_owned(), Value::Array(cells));
    if let Some(conds) = conditions {
        out.insert("conditions".to_owned(), conds);
    }
    out.insert(
        "object".to_owned(),
        json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": metadata,
        }),
    );
    Value::Object(out)
}

// ---------------------------------------------------------------------------
// Durations and timestamps
// ---------------------------------------------------------------------------

/// A succinct, human-readable duration with about two significant figures,
/// exactly like Go's `k8s.io/apimachinery/pkg/util/duration.HumanDuration`.
///
/// Small negative values (up to one second) print as `0s` to tolerate clock
/// skew between machines; anything more negative is `<invalid>`.
pub fn human_duration(d: SignedDuration) -> String {
    // Go converts through float seconds and truncates toward zero, which is
    // what `as_secs` does too.
    let seconds = d.as_secs();
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    if seconds < 0 {
        return "0s".to_owned();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        if s == 0 {
            return format!("{minutes}m");
        }
        return format!("{minutes}m{s}s");
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            return format!("{hours}h");
        }
        return format!("{hours}h{m}m");
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            return format!("{}d", hours / 24);
        }
        return format!("{}d{}h", hours / 24, h);
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        if dy == 0 {
            return format!("{}y", hours / 24 / 365);
        }
        return format!("{}y{}d", hours / 24 / 365, dy);
    }
    format!("{}y", hours / 24 / 365)
}

/// `later - earlier`, saturating at the range of Go's `time.Duration`
/// (int64 nanoseconds, about 292 years) the way `time.Time.Sub` does, so
/// absurd timestamps print the same as upstream.
fn go_sub(later: Timestamp, earlier: Timestamp) -> SignedDuration {
    let d = later.duration_since(earlier);
    let nanos = d.as_nanos();
    if nanos > i128::from(i64::MAX) {
        SignedDuration::from_nanos(i64::MAX)
    } else if nanos < i128::from(i64::MIN) {
        SignedDuration::from_nanos(i64::MIN)
    } else {
        d
    }
}

/// Parses a `metav1.Time` / `metav1.MicroTime`. Missing, null, unparseable
/// and Go-zero values all count as unset.
fn parse_time(v: Option<&Value>) -> Option<Timestamp> {
    let ts: Timestamp = v?.as_str()?.parse().ok()?;
    if ts.as_second() == GO_ZERO_UNIX_SECOND && ts.subsec_nanosecond() == 0 {
        return None;
    }
    Some(ts)
}

/// Age of a timestamp as printed in AGE-like columns (`translateTimestampSince`).
fn since(ts: Option<Timestamp>, now: Timestamp) -> String {
    match ts {
        Some(t) => human_duration(go_sub(now, t)),
        None => UNKNOWN.to_owned(),
    }
}

fn age(obj: &Value, now: Timestamp) -> Value {
    Value::String(since(
        parse_time(get(obj, &["metadata", "creationTimestamp"])),
        now,
    ))
}

/// RFC 3339 in UTC with whole seconds, like Go's `time.RFC3339` layout.
fn rfc3339_utc(ts: Option<Timestamp>) -> String {
    match ts {
        Some(t) => t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => GO_ZERO_RFC3339.to_owned(),
    }
}

// ---------------------------------------------------------------------------
// JSON accessors: every one tolerates missing or mistyped fields
// ---------------------------------------------------------------------------

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, key| cur.get(key))
}

/// A string field, or `""` when missing (Go's zero value).
fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    get(v, path).and_then(Value::as_str).unwrap_or("")
}

/// An optional string field (a `*string` in Go).
fn opt_str<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    get(v, path).and_then(Value::as_str)
}

fn opt_int(v: &Value, path: &[&str]) -> Option<i64> {
    let n = get(v, path)?;
    n.as_i64()
        .or_else(|| n.as_u64().map(|u| i64::try_from(u).unwrap_or(i64::MAX)))
        // Saturating float-to-int conversion; only reached for odd input.
        .or_else(|| n.as_f64().map(|f| f as i64))
}

/// An integer field, or `0` when missing.
fn int_at(v: &Value, path: &[&str]) -> i64 {
    opt_int(v, path).unwrap_or(0)
}

fn bool_at(v: &Value, path: &[&str]) -> bool {
    get(v, path).and_then(Value::as_bool).unwrap_or(false)
}

/// An array field, or an empty slice.
fn arr_at<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    get(v, path)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Whether a pointer-typed field is set (present and not null).
fn is_set(v: &Value, path: &[&str]) -> bool {
    get(v, path).is_some_and(|x| !x.is_null())
}

/// A set (non-null) object field, e.g. `state.terminated`.
fn set_field<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    get(v, path).filter(|x| !x.is_null())
}

/// Number of keys of a map field.
fn map_len(v: &Value, path: &[&str]) -> i64 {
    get(v, path)
        .and_then(Value::as_object)
        .map_or(0, |m| i64::try_from(m.len()).unwrap_or(i64::MAX))
}

fn len_i64(items: &[Value]) -> i64 {
    i64::try_from(items.len()).unwrap_or(i64::MAX)
}

fn name_cell(obj: &Value) -> Value {
    Value::String(str_at(obj, &["metadata", "name"]).to_owned())
}

fn s(text: impl Into<String>) -> Value {
    Value::String(text.into())
}

fn n(number: i64) -> Value {
    Value::from(number)
}

/// Renders a label value; labels are strings, anything else is shown raw.
fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Labels and selectors
// ---------------------------------------------------------------------------

/// `labels.FormatLabels`: sorted `k=v` pairs joined by commas, `<none>` when
/// empty.
fn format_labels(map: Option<&Value>) -> String {
    let Some(Value::Object(m)) = map else {
        return NONE.to_owned();
    };
    if m.is_empty() {
        return NONE.to_owned();
    }
    // Sorted explicitly: serde_json may be built with insertion order.
    let pairs: BTreeSet<String> = m
        .iter()
        .map(|(k, v)| format!("{k}={}", value_text(v)))
        .collect();
    pairs.into_iter().collect::<Vec<_>>().join(",")
}

/// The string form of a `metav1.LabelSelector` after
/// `LabelSelectorAsSelector`, or `Err` for selectors that conversion rejects
/// (unknown operator, or values that do not fit the operator).
///
/// An absent or empty selector renders as the empty string, as do Go's
/// `labels.Nothing()` and `labels.Everything()`.
fn selector_string(sel: Option<&Value>) -> Result<String, ()> {
    let Some(sel) = sel.filter(|s| !s.is_null()) else {
        return Ok(String::new());
    };
    // (key, rendered requirement); sorted by key like `internalSelector.Add`.
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(Value::Object(labels)) = sel.get("matchLabels") {
        for (k, v) in labels {
            reqs.push((k.clone(), format!("{k}={}", value_text(v))));
        }
    }
    for expr in arr_at(sel, &["matchExpressions"]) {
        let key = str_at(expr, &["key"]);
        let mut values: Vec<String> = arr_at(expr, &["values"]).iter().map(value_text).collect();
        values.sort();
        let rendered = match str_at(expr, &["operator"]) {
            "In" | "NotIn" if values.is_empty() => return Err(()),
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" | "DoesNotExist" if !values.is_empty() => return Err(()),
            "Exists" => key.to_owned(),
            "DoesNotExist" => format!("!{key}"),
            _ => return Err(()),
        };
        reqs.push((key.to_owned(), rendered));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(reqs
        .into_iter()
        .map(|(_, r)| r)
        .collect::<Vec<_>>()
        .join(","))
}

/// `metav1.FormatLabelSelector`: `<none>` for an empty selector, `<error>`
/// for one that does not convert.
fn format_label_selector(sel: Option<&Value>) -> String {
    match selector_string(sel) {
        Ok(s) if s.is_empty() => NONE.to_owned(),
        Ok(s) => s,
        Err(()) => "<error>".to_owned(),
    }
}

/// Container names and images of a pod template, each comma-joined.
fn layout_containers(containers: &[Value]) -> (String, String) {
    let names: Vec<&str> = containers.iter().map(|c| str_at(c, &["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_at(c, &["image"])).collect();
    (names.join(","), images.join(","))
}

/// Desired replicas: the v1 API defaults an unset `spec.replicas` to 1 before
/// any printer sees it.
fn desired_replicas(obj: &Value) -> i64 {
    opt_int(obj, &["spec", "replicas"]).unwrap_or(1)
}

// ---------------------------------------------------------------------------
// Pods
// ---------------------------------------------------------------------------

/// `lastState.terminated.finishedAt` of a container status.
fn last_terminated_at(status: &Value) -> Option<Timestamp> {
    let terminated = set_field(status, &["lastState", "terminated"])?;
    parse_time(terminated.get("finishedAt"))
}

fn later(current: Option<Timestamp>, candidate: Option<Timestamp>) -> Option<Timestamp> {
    match (current, candidate) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn has_condition(obj: &Value, kind: &str) -> bool {
    arr_at(obj, &["status", "conditions"])
        .iter()
        .any(|c| str_at(c, &["type"]) == kind && str_at(c, &["status"]) == "True")
}

/// Status of the *first* condition of the given type, as `isPodInitializedConditionTrue`.
fn first_condition_true(obj: &Value, kind: &str) -> bool {
    arr_at(obj, &["status", "conditions"])
        .iter()
        .find(|c| str_at(c, &["type"]) == kind)
        .is_some_and(|c| str_at(c, &["status"]) == "True")
}

/// Summary of a terminated container state without a reason:
/// `Signal:N` if it was killed by a signal, `ExitCode:N` otherwise.
fn terminated_summary(terminated: &Value) -> String {
    let signal = int_at(terminated, &["signal"]);
    if signal != 0 {
        format!("Signal:{signal}")
    } else {
        format!("ExitCode:{}", int_at(terminated, &["exitCode"]))
    }
}

/// Pod cells and row conditions, following the upstream pod printer: the
/// STATUS column starts from the phase (or `status.reason`), is refined by
/// the first init container that has not finished, then by the regular
/// containers, and finally overridden by `Terminating`/`Unknown` for pods
/// being deleted.
fn pod_cells(pod: &Value, now: Timestamp) -> (Vec<Value>, Option<Value>) {
    let containers = arr_at(pod, &["spec", "containers"]);
    let init_specs = arr_at(pod, &["spec", "initContainers"]);
    // Sidecars (init containers with restartPolicy Always) keep running next
    // to the main containers and so count towards READY.
    let is_sidecar = |name: &str| {
        init_specs
            .iter()
            .any(|c| str_at(c, &["name"]) == name && str_at(c, &["restartPolicy"]) == "Always")
    };
    let sidecars = init_specs
        .iter()
        .filter(|c| str_at(c, &["restartPolicy"]) == "Always")
        .count();
    let total = containers.len() + sidecars;

    let phase = str_at(pod, &["status", "phase"]);
    let mut reason = phase.to_owned();
    let status_reason = str_at(pod, &["status", "reason"]);
    if !status_reason.is_empty() {
        reason = status_reason.to_owned();
    }
    let scheduling_gated = arr_at(pod, &["status", "conditions"]).iter().any(|c| {
        str_at(c, &["type"]) == "PodScheduled" && str_at(c, &["reason"]) == "SchedulingGated"
    });
    if scheduling_gated {
        reason = "SchedulingGated".to_owned();
    }

    let mut ready: usize = 0;
    let mut restarts: i64 = 0;
    let mut sidecar_restarts: i64 = 0;
    let mut last_restart: Option<Timestamp> = None;
    let mut last_sidecar_restart: Option<Timestamp> = None;

    let mut initializing = false;
    for (i, cs) in arr_at(pod, &["status", "initContainerStatuses"])
        .iter()
        .enumerate()
    {
        let count = int_at(cs, &["restartCount"]);
        let finished = last_terminated_at(cs);
        restarts += count;
        last_restart = later(last_restart, finished);
        let sidecar = is_sidecar(str_at(cs, &["name"]));
        if sidecar {
            sidecar_restarts += count;
            last_sidecar_restart = later(last_sidecar_restart, finished);
        }

        let terminated = set_field(cs, &["state", "terminated"]);
        let waiting_reason = set_field(cs, &["state", "waiting"])
            .map(|w| str_at(w, &["reason"]))
            .unwrap_or("");
        if terminated.is_some_and(|t| int_at(t, &["exitCode"]) == 0) {
            continue;
        }
        if sidecar && bool_at(cs, &["started"]) {
            if bool_at(cs, &["ready"]) {
                ready += 1;
            }
            continue;
        }
        reason = if let Some(t) = terminated {
            let r = str_at(t, &["reason"]);
            if r.is_empty() {
                format!("Init:{}", terminated_summary(t))
            } else {
                format!("Init:{r}")
            }
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            format!("Init:{waiting_reason}")
        } else {
            format!("Init:{i}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }

    if !initializing || first_condition_true(pod, "Initialized") {
        // Restarts of finished init containers no longer matter; sidecar
        // restarts do, as sidecars keep running.
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        // Walked backwards so the first container with something to report
        // wins, as upstream.
        for cs in arr_at(pod, &["status", "containerStatuses"]).iter().rev() {
            restarts += int_at(cs, &["restartCount"]);
            last_restart = later(last_restart, last_terminated_at(cs));

            let waiting = set_field(cs, &["state", "waiting"]);
            let terminated = set_field(cs, &["state", "terminated"]);
            let waiting_reason = waiting.map(|w| str_at(w, &["reason"])).unwrap_or("");
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_owned();
            } else if let Some(t) = terminated {
                let r = str_at(t, &["reason"]);
                reason = if r.is_empty() {
                    terminated_summary(t)
                } else {
                    r.to_owned()
                };
            } else if bool_at(cs, &["ready"]) && is_set(cs, &["state", "running"]) {
                has_running = true;
                ready += 1;
            }
        }
        // A pod whose first container completed while others still run is
        // still running.
        if reason == "Completed" && has_running {
            reason = if has_condition(pod, "Ready") {
                "Running".to_owned()
            } else {
                "NotReady".to_owned()
            };
        }
    }

    let deleting = is_set(pod, &["metadata", "deletionTimestamp"]);
    if deleting && status_reason == "NodeLost" {
        reason = "Unknown".to_owned();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_owned();
    }

    let restarts_cell = match last_restart {
        Some(at) if restarts != 0 => format!("{restarts} ({} ago)", since(Some(at), now)),
        _ => restarts.to_string(),
    };

    let pod_ip = arr_at(pod, &["status", "podIPs"])
        .first()
        .map(|p| str_at(p, &["ip"]))
        .filter(|ip| !ip.is_empty())
        // Older writers only fill the singular field.
        .unwrap_or_else(|| str_at(pod, &["status", "podIP"]));
    let node = str_at(pod, &["spec", "nodeName"]);
    let nominated = str_at(pod, &["status", "nominatedNodeName"]);

    let gates = arr_at(pod, &["spec", "readinessGates"]);
    let readiness_gates = if gates.is_empty() {
        NONE.to_owned()
    } else {
        let conditions = arr_at(pod, &["status", "conditions"]);
        let satisfied = gates
            .iter()
            .filter(|g| {
                let kind = str_at(g, &["conditionType"]);
                conditions
                    .iter()
                    .find(|c| str_at(c, &["type"]) == kind)
                    .is_some_and(|c| str_at(c, &["status"]) == "True")
            })
            .count();
        format!("{satisfied}/{}", gates.len())
    };

    let cells = vec![
        name_cell(pod),
        s(format!("{ready}/{total}")),
        s(reason),
        s(restarts_cell),
        age(pod, now),
        s(or_none(pod_ip)),
        s(or_none(node)),
        s(or_none(nominated)),
        s(readiness_gates),
    ];

    let conditions = match phase {
        "Succeeded" => Some(completed_condition(
            "Succeeded",
            "The pod has completed successfully.",
        )),
        "Failed" => Some(completed_condition("Failed", "The pod failed.")),
        _ => None,
    };
    (cells, conditions)
}

fn completed_condition(reason: &str, message: &str) -> Value {
    json!([{
        "type": "Completed",
        "status": "True",
        "reason": reason,
        "message": message,
    }])
}

fn or_none(text: &str) -> String {
    if text.is_empty() {
        NONE.to_owned()
    } else {
        text.to_owned()
    }
}

fn or_unknown(text: &str) -> String {
    if text.is_empty() {
        UNKNOWN.to_owned()
    } else {
        text.to_owned()
    }
}

// ---------------------------------------------------------------------------
// Workload controllers
// ---------------------------------------------------------------------------

fn replication_controller_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    let (names, images) =
        layout_containers(arr_at(obj, &["spec", "template", "spec", "containers"]));
    vec![
        name_cell(obj),
        n(desired_replicas(obj)),
        n(int_at(obj, &["status", "replicas"])),
        n(int_at(obj, &["status", "readyReplicas"])),
        age(obj, now),
        s(names),
        s(images),
        // A replication controller's selector is a plain label map.
        s(format_labels(get(obj, &["spec", "selector"]))),
    ]
}

fn replica_set_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    let (names, images) =
        layout_containers(arr_at(obj, &["spec", "template", "spec", "containers"]));
    vec![
        name_cell(obj),
        n(desired_replicas(obj)),
        n(int_at(obj, &["status", "replicas"])),
        n(int_at(obj, &["status", "readyReplicas"])),
        age(obj, now),
        s(names),
        s(images),
        s(format_label_selector(get(obj, &["spec", "selector"]))),
    ]
}

fn deployment_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    let (names, images) =
        layout_containers(arr_at(obj, &["spec", "template", "spec", "containers"]));
    // Unlike the other controllers, the deployment printer shows an empty
    // selector as an empty cell and a broken one as `<invalid>`.
    let selector = selector_string(get(obj, &["spec", "selector"]))
        .unwrap_or_else(|()| "<invalid>".to_owned());
    vec![
        name_cell(obj),
        s(format!(
            "{}/{}",
            int_at(obj, &["status", "readyReplicas"]),
            desired_replicas(obj)
        )),
        n(int_at(obj, &["status", "updatedReplicas"])),
        n(int_at(obj, &["status", "availableReplicas"])),
        age(obj, now),
        s(names),
        s(images),
        s(selector),
    ]
}

fn daemonset_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    let (names, images) =
        layout_containers(arr_at(obj, &["spec", "template", "spec", "containers"]));
    vec![
        name_cell(obj),
        n(int_at(obj, &["status", "desiredNumberScheduled"])),
        n(int_at(obj, &["status", "currentNumberScheduled"])),
        n(int_at(obj, &["status", "numberReady"])),
        n(int_at(obj, &["status", "updatedNumberScheduled"])),
        n(int_at(obj, &["status", "numberAvailable"])),
        s(format_labels(get(
            obj,
            &["spec", "template", "spec", "nodeSelector"],
        ))),
        age(obj, now),
        s(names),
        s(images),
        s(format_label_selector(get(obj, &["spec", "selector"]))),
    ]
}

/// The first condition of a type decides, as upstream `hasJobCondition`.
fn job_condition(obj: &Value, kind: &str) -> bool {
    first_condition_true(obj, kind)
}

fn job_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    let succeeded = int_at(obj, &["status", "succeeded"]);
    let completions = match opt_int(obj, &["spec", "completions"]) {
        Some(c) => format!("{succeeded}/{c}"),
        None => {
            // A work-queue job: one success is enough, however many pods run.
            let parallelism = opt_int(obj, &["spec", "parallelism"]).unwrap_or(0);
            if parallelism > 1 {
                format!("{succeeded}/1 of {parallelism}")
            } else {
                format!("{succeeded}/1")
            }
        }
    };

    let start = parse_time(get(obj, &["status", "startTime"]));
    let completion = parse_time(get(obj, &["status", "completionTime"]));
    let duration = match (start, completion) {
        (None, _) => String::new(),
        (Some(st), None) => human_duration(go_sub(now, st)),
        (Some(st), Some(done)) => human_duration(go_sub(done, st)),
    };

    let status = if job_condition(obj, "Complete") {
        "Complete"
    } else if job_condition(obj, "Failed") {
        "Failed"
    } else if is_set(obj, &["metadata", "deletionTimestamp"]) {
        "Terminating"
    } else if job_condition(obj, "Suspended") {
        "Suspended"
    } else if job_condition(obj, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };

    let (names, images) =
        layout_containers(arr_at(obj, &["spec", "template", "spec", "containers"]));
    vec![
        name_cell(obj),
        s(status),
        s(completions),
        s(duration),
        age(obj, now),
        s(names),
        s(images),
        s(format_label_selector(get(obj, &["spec", "selector"]))),
    ]
}

fn cronjob_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    let last_schedule = if is_set(obj, &["status", "lastScheduleTime"]) {
        since(parse_time(get(obj, &["status", "lastScheduleTime"])), now)
    } else {
        NONE.to_owned()
    };
    let time_zone = opt_str(obj, &["spec", "timeZone"]).unwrap_or(NONE);
    // The v1 API defaults an unset `suspend` to false.
    let suspend = if bool_at(obj, &["spec", "suspend"]) {
        "True"
    } else {
        "False"
    };
    let job_spec = get(obj, &["spec", "jobTemplate", "spec"]).unwrap_or(&Value::Null);
    let (names, images) = layout_containers(arr_at(job_spec, &["template", "spec", "containers"]));
    vec![
        name_cell(obj),
        s(str_at(obj, &["spec", "schedule"])),
        s(time_zone),
        s(suspend),
        n(len_i64(arr_at(obj, &["status", "active"]))),
        s(last_schedule),
        age(obj, now),
        s(names),
        s(images),
        s(format_label_selector(job_spec.get("selector"))),
    ]
}

// ---------------------------------------------------------------------------
// Services and endpoints
// ---------------------------------------------------------------------------

/// `Port(s)`: `port[:nodePort]/protocol`, comma-separated.
fn service_ports(ports: &[Value]) -> String {
    ports
        .iter()
        .map(|p| {
            let port = int_at(p, &["port"]);
            // The v1 API defaults an unset protocol to TCP.
            let protocol = opt_str(p, &["protocol"])
                .filter(|x| !x.is_empty())
                .unwrap_or("TCP");
            let node_port = int_at(p, &["nodePort"]);
            if node_port > 0 {
                format!("{port}:{node_port}/{protocol}")
            } else {
                format!("{port}/{protocol}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Load-balancer ingress points: IP, or hostname when there is no IP,
/// deduplicated and sorted. Never clipped, since the apiserver prints wide.
fn load_balancer_ingress(svc: &Value) -> String {
    let points: BTreeSet<&str> = arr_at(svc, &["status", "loadBalancer", "ingress"])
        .iter()
        .filter_map(|i| {
            let ip = str_at(i, &["ip"]);
            let host = str_at(i, &["hostname"]);
            if !ip.is_empty() {
                Some(ip)
            } else if !host.is_empty() {
                Some(host)
            } else {
                None
            }
        })
        .collect();
    points.into_iter().collect::<Vec<_>>().join(",")
}

fn service_external_ip(svc: &Value, svc_type: &str) -> String {
    let external: Vec<String> = arr_at(svc, &["spec", "externalIPs"])
        .iter()
        .map(value_text)
        .collect();
    match svc_type {
        "ClusterIP" | "NodePort" => {
            if external.is_empty() {
                NONE.to_owned()
            } else {
                external.join(",")
            }
        }
        "LoadBalancer" => {
            let lb = load_balancer_ingress(svc);
            if !external.is_empty() {
                let mut all: Vec<String> = Vec::new();
                if !lb.is_empty() {
                    all.extend(lb.split(',').map(str::to_owned));
                }
                all.extend(external);
                all.join(",")
            } else if !lb.is_empty() {
                lb
            } else {
                "<pending>".to_owned()
            }
        }
        "ExternalName" => str_at(svc, &["spec", "externalName"]).to_owned(),
        _ => UNKNOWN.to_owned(),
    }
}

fn service_cells(svc: &Value, now: Timestamp) -> Vec<Value> {
    // The v1 API defaults an unset type to ClusterIP.
    let svc_type = opt_str(svc, &["spec", "type"])
        .filter(|t| !t.is_empty())
        .unwrap_or("ClusterIP");
    let cluster_ip = arr_at(svc, &["spec", "clusterIPs"])
        .first()
        .and_then(Value::as_str)
        .filter(|ip| !ip.is_empty())
        // Older writers only fill the singular field.
        .unwrap_or_else(|| str_at(svc, &["spec", "clusterIP"]));
    let ports = service_ports(arr_at(svc, &["spec", "ports"]));
    vec![
        name_cell(svc),
        s(svc_type),
        s(or_none(cluster_ip)),
        s(service_external_ip(svc, svc_type)),
        s(or_none(&ports)),
        age(svc, now),
        s(format_labels(get(svc, &["spec", "selector"]))),
    ]
}

/// `net.JoinHostPort`: IPv6 addresses get brackets.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The `Endpoints` cell: at most three `ip:port` entries, then
/// `+ N more...`. Subsets without ports (headless services) list bare IPs.
fn format_endpoints(obj: &Value) -> String {
    const MAX: usize = 3;
    let subsets = arr_at(obj, &["subsets"]);
    if subsets.is_empty() {
        return NONE.to_owned();
    }
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count: usize = 0;
    for subset in subsets {
        let addresses = arr_at(subset, &["addresses"]);
        let ports = arr_at(subset, &["ports"]);
        if ports.is_empty() {
            count += addresses.len();
            for addr in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(str_at(addr, &["ip"]).to_owned());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            let port = int_at(port, &["port"]);
            for addr in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(join_host_port(str_at(addr, &["ip"]), port));
            }
        }
    }
    let joined = list.join(",");
    if more {
        format!("{joined} + {} more...", count.saturating_sub(MAX))
    } else {
        joined
    }
}

fn endpoints_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![name_cell(obj), s(format_endpoints(obj)), age(obj, now)]
}

/// At most three entries, then `+ N more...`; `<unset>` for none (the
/// discovery printers' `listWithMoreString`).
fn list_with_more(items: Vec<String>) -> String {
    const MAX: usize = 3;
    let count = items.len();
    if count > MAX {
        return format!("{} + {} more...", items[..MAX].join(","), count - MAX);
    }
    if items.is_empty() {
        return "<unset>".to_owned();
    }
    items.join(",")
}

fn endpoint_slice_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    let ports = arr_at(obj, &["ports"])
        .iter()
        .map(|port| match port.get("port").and_then(Value::as_i64) {
            Some(number) => number.to_string(),
            None => match port.get("name").and_then(Value::as_str) {
                Some(name) => name.to_owned(),
                None => "*".to_owned(),
            },
        })
        .collect();
    let addresses = arr_at(obj, &["endpoints"])
        .iter()
        .flat_map(|endpoint| arr_at(endpoint, &["addresses"]))
        .map(|address| address.as_str().unwrap_or_default().to_owned())
        .collect();
    vec![
        name_cell(obj),
        s(str_at(obj, &["addressType"])),
        s(list_with_more(ports)),
        s(list_with_more(addresses)),
        age(obj, now),
    ]
}

// ---------------------------------------------------------------------------
// Nodes and namespaces
// ---------------------------------------------------------------------------

const NODE_ROLE_PREFIX: &str = "node-role.kubernetes.io/";
const LEGACY_NODE_ROLE_LABEL: &str = "kubernetes.io/role";

/// Roles from `node-role.kubernetes.io/<role>` label keys and the legacy
/// `kubernetes.io/role=<role>` label, sorted and deduplicated.
fn node_roles(node: &Value) -> String {
    let mut roles: BTreeSet<String> = BTreeSet::new();
    if let Some(Value::Object(labels)) = get(node, &["metadata", "labels"]) {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix(NODE_ROLE_PREFIX) {
                if !role.is_empty() {
                    roles.insert(role.to_owned());
                }
            } else if k == LEGACY_NODE_ROLE_LABEL {
                let role = value_text(v);
                if !role.is_empty() {
                    roles.insert(role);
                }
            }
        }
    }
    if roles.is_empty() {
        NONE.to_owned()
    } else {
        roles.into_iter().collect::<Vec<_>>().join(",")
    }
}

/// `Ready`, `NotReady` or `Unknown` (no Ready condition at all), plus
/// `SchedulingDisabled` for cordoned nodes.
fn node_status(node: &Value) -> String {
    // Upstream indexes conditions by type, so the last Ready entry wins.
    let ready = arr_at(node, &["status", "conditions"])
        .iter()
        .rev()
        .find(|c| str_at(c, &["type"]) == "Ready");
    let mut status = vec![match ready {
        Some(c) if str_at(c, &["status"]) == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if bool_at(node, &["spec", "unschedulable"]) {
        status.push("SchedulingDisabled");
    }
    status.join(",")
}

/// First address of the given type, or `<none>`.
fn node_address(node: &Value, kind: &str) -> String {
    arr_at(node, &["status", "addresses"])
        .iter()
        .find(|a| str_at(a, &["type"]) == kind)
        .map_or_else(|| NONE.to_owned(), |a| str_at(a, &["address"]).to_owned())
}

fn node_cells(node: &Value, now: Timestamp) -> Vec<Value> {
    let info = get(node, &["status", "nodeInfo"]).unwrap_or(&Value::Null);
    vec![
        name_cell(node),
        s(node_status(node)),
        s(node_roles(node)),
        age(node, now),
        s(str_at(info, &["kubeletVersion"])),
        s(node_address(node, "InternalIP")),
        s(node_address(node, "ExternalIP")),
        s(or_unknown(str_at(info, &["osImage"]))),
        s(or_unknown(str_at(info, &["kernelVersion"]))),
        s(or_unknown(str_at(info, &["containerRuntimeVersion"]))),
    ]
}

fn namespace_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name_cell(obj),
        s(str_at(obj, &["status", "phase"])),
        age(obj, now),
    ]
}

// ---------------------------------------------------------------------------
// Config maps, secrets, events
// ---------------------------------------------------------------------------

fn configmap_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    let entries = map_len(obj, &["data"]) + map_len(obj, &["binaryData"]);
    vec![name_cell(obj), n(entries), age(obj, now)]
}

fn secret_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name_cell(obj),
        s(str_at(obj, &["type"])),
        n(map_len(obj, &["data"])),
        age(obj, now),
    ]
}

fn first_non_empty<'a>(a: &'a str, b: &'a str) -> &'a str {
    if a.is_empty() {
        b
    } else {
        a
    }
}

/// `component, host`, falling back to the reporting fields that events from
/// the `events.k8s.io` API fill instead.
fn event_source(event: &Value) -> String {
    let component = first_non_empty(
        str_at(event, &["source", "component"]),
        str_at(event, &["reportingComponent"]),
    );
    let instance = first_non_empty(
        str_at(event, &["source", "host"]),
        str_at(event, &["reportingInstance"]),
    );
    if instance.is_empty() {
        component.to_owned()
    } else {
        format!("{component}, {instance}")
    }
}

fn event_cells(event: &Value, now: Timestamp) -> Vec<Value> {
    // New-style events only carry eventTime; older ones carry the
    // first/last timestamps.
    let first_seen = match parse_time(event.get("firstTimestamp")) {
        Some(t) => since(Some(t), now),
        None => since(parse_time(event.get("eventTime")), now),
    };
    let mut last_seen = match parse_time(event.get("lastTimestamp")) {
        Some(t) => since(Some(t), now),
        None => first_seen.clone(),
    };
    let mut count = int_at(event, &["count"]);
    if let Some(series) = set_field(event, &["series"]) {
        last_seen = since(parse_time(series.get("lastObservedTime")), now);
        count = int_at(series, &["count"]);
    } else if count == 0 {
        // Singleton events do not set a count in the new API.
        count = 1;
    }

    let kind = str_at(event, &["involvedObject", "kind"]).to_lowercase();
    let target_name = str_at(event, &["involvedObject", "name"]);
    let target = if target_name.is_empty() {
        kind
    } else {
        format!("{kind}/{target_name}")
    };

    vec![
        s(last_seen),
        s(str_at(event, &["type"])),
        s(str_at(event, &["reason"])),
        s(target),
        s(str_at(event, &["involvedObject", "fieldPath"])),
        s(event_source(event)),
        s(str_at(event, &["message"]).trim()),
        s(first_seen),
        n(count),
        name_cell(event),
    ]
}

// ---------------------------------------------------------------------------
// Everything else
// ---------------------------------------------------------------------------

fn default_cells(obj: &Value) -> Vec<Value> {
    vec![
        name_cell(obj),
        s(rfc3339_utc(parse_time(get(
            obj,
            &["metadata", "creationTimestamp"],
        )))),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().expect("test timestamp")
    }

    fn now() -> Timestamp {
        ts("2024-06-01T12:00:00Z")
    }

    fn cells(resource: &str, obj: Value) -> Vec<Value> {
        row(resource, &obj, now())["cells"]
            .as_array()
            .cloned()
            .expect("cells array")
    }

    fn cell_texts(resource: &str, obj: Value) -> Vec<String> {
        cells(resource, obj).iter().map(value_text).collect()
    }

    fn secs(n: i64) -> SignedDuration {
        SignedDuration::from_secs(n)
    }

    // --- human_duration -----------------------------------------------------

    #[test]
    fn human_duration_negative_and_seconds() {
        assert_eq!(human_duration(secs(-5)), "<invalid>");
        assert_eq!(human_duration(secs(-2)), "<invalid>");
        assert_eq!(human_duration(secs(-1)), "0s");
        assert_eq!(human_duration(SignedDuration::from_millis(-1999)), "0s");
        assert_eq!(human_duration(SignedDuration::from_millis(-500)), "0s");
        assert_eq!(human_duration(secs(0)), "0s");
        assert_eq!(human_duration(secs(5)), "5s");
        assert_eq!(human_duration(SignedDuration::from_millis(5999)), "5s");
        assert_eq!(human_duration(secs(119)), "119s");
    }

    #[test]
    fn human_duration_minutes() {
        assert_eq!(human_duration(secs(120)), "2m");
        assert_eq!(human_duration(secs(182)), "3m2s");
        assert_eq!(human_duration(secs(599)), "9m59s");
        assert_eq!(human_duration(secs(600)), "10m");
        assert_eq!(human_duration(secs(45 * 60)), "45m");
        assert_eq!(human_duration(secs(179 * 60 + 59)), "179m");
    }

    #[test]
    fn human_duration_hours_days_years() {
        assert_eq!(human_duration(secs(3 * 3600)), "3h");
        assert_eq!(human_duration(secs(3 * 3600 + 5 * 60)), "3h5m");
        assert_eq!(human_duration(secs(5 * 3600)), "5h");
        assert_eq!(human_duration(secs(7 * 3600 + 59 * 60)), "7h59m");
        assert_eq!(human_duration(secs(8 * 3600)), "8h");
        assert_eq!(human_duration(secs(47 * 3600 + 59 * 60)), "47h");
        assert_eq!(human_duration(secs(48 * 3600)), "2d");
        assert_eq!(human_duration(secs(76 * 3600)), "3d4h");
        assert_eq!(human_duration(secs(8 * 24 * 3600 - 1)), "7d23h");
        assert_eq!(human_duration(secs(8 * 24 * 3600)), "8d");
        assert_eq!(human_duration(secs(729 * 24 * 3600)), "729d");
        assert_eq!(human_duration(secs(730 * 24 * 3600)), "2y");
        assert_eq!(human_duration(secs(731 * 24 * 3600)), "2y1d");
        assert_eq!(human_duration(secs(8 * 365 * 24 * 3600 - 3600)), "7y364d");
        assert_eq!(human_duration(secs(8 * 365 * 24 * 3600)), "8y");
        assert_eq!(human_duration(secs(100 * 365 * 24 * 3600)), "100y");
    }

    #[test]
    fn go_sub_saturates_like_go_durations() {
        let d = go_sub(now(), ts("1000-01-01T00:00:00Z"));
        assert_eq!(d, SignedDuration::from_nanos(i64::MAX));
        assert_eq!(human_duration(d), "292y");
    }

    // --- columns and table shape ---------------------------------------------

    #[test]
    fn every_column_has_all_fields() {
        for resource in [
            "pods",
            "replicationcontrollers",
            "services",
            "endpoints",
            "nodes",
            "namespaces",
            "configmaps",
            "secrets",
            "events",
            "deployments",
            "replicasets",
            "daemonsets",
            "jobs",
            "cronjobs",
            "widgets",
        ] {
            for c in column_definitions(resource) {
                for field in ["name", "type", "format", "description"] {
                    assert!(c[field].is_string(), "{resource}: {field} in {c}");
                }
                assert!(c["priority"].is_number(), "{resource}: {c}");
            }
        }
    }

    #[test]
    fn pod_columns_and_priorities() {
        let cols = column_definitions("pods");
        let names: Vec<&str> = cols.iter().filter_map(|c| c["name"].as_str()).collect();
        assert_eq!(
            names,
            [
                "Name",
                "Ready",
                "Status",
                "Restarts",
                "Age",
                "IP",
                "Node",
                "Nominated Node",
                "Readiness Gates"
            ]
        );
        let priorities: Vec<i64> = cols.iter().filter_map(|c| c["priority"].as_i64()).collect();
        assert_eq!(priorities, [0, 0, 0, 0, 0, 1, 1, 1, 1]);
        assert_eq!(cols[0]["format"], "name");
        assert_eq!(cols[3]["type"], "string");
    }

    #[test]
    fn unknown_resources_get_the_generic_columns() {
        let cols = column_definitions("widgets");
        assert_eq!(cols.len(), 2);
        assert_eq!(cols[0]["name"], "Name");
        assert_eq!(cols[0]["format"], "name");
        assert_eq!(cols[1]["name"], "Created At");
        assert_eq!(cols[1]["type"], "date");
        assert_eq!(cols[1]["format"], "");

        let c = cell_texts(
            "widgets",
            json!({"metadata": {"name": "w", "creationTimestamp": "2024-01-02T03:04:05.678Z"}}),
        );
        assert_eq!(c, ["w", "2024-01-02T03:04:05Z"]);
        let c = cell_texts(
            "widgets",
            json!({"metadata": {"creationTimestamp": "2024-01-02T05:04:05+02:00"}}),
        );
        assert_eq!(c, ["", "2024-01-02T03:04:05Z"]);
        assert_eq!(cell_texts("widgets", json!({})), ["", GO_ZERO_RFC3339]);
    }

    #[test]
    fn table_shape_and_watch_form() {
        let objs = vec![
            json!({"metadata": {"name": "a", "namespace": "ns", "labels": {"x": "y"}}}),
            json!({"metadata": {"name": "b"}}),
        ];
        let t = table("configmaps", &objs, "42", now(), true);
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(t["metadata"]["resourceVersion"], "42");
        assert_eq!(t["columnDefinitions"].as_array().map(Vec::len), Some(3));
        let rows = t["rows"].as_array().expect("rows");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(rows[0]["object"]["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(rows[0]["object"]["metadata"]["labels"]["x"], "y");
        assert!(rows[0].get("conditions").is_none());

        let w = table("configmaps", &objs[..1], "43", now(), false);
        assert_eq!(w["columnDefinitions"], json!([]));
        assert_eq!(w["rows"].as_array().map(Vec::len), Some(1));

        let empty = table("pods", &[], "1", now(), true);
        assert_eq!(empty["rows"], json!([]));
    }

    /// Every resource, fed an empty or junk object, yields one cell per
    /// column, each with the JSON type its column declares.
    #[test]
    fn empty_objects_never_panic_and_match_column_types() {
        for resource in [
            "pods",
            "replicationcontrollers",
            "services",
            "endpoints",
            "nodes",
            "namespaces",
            "configmaps",
            "secrets",
            "events",
            "deployments",
            "replicasets",
            "daemonsets",
            "jobs",
            "cronjobs",
            "widgets",
        ] {
            let cols = column_definitions(resource);
            for obj in [
                json!({}),
                json!(null),
                json!([1, 2]),
                json!({"metadata": 5, "spec": "x", "status": []}),
                json!({"spec": {"containers": 3, "selector": "bad"}, "status": {"conditions": {}}}),
            ] {
                let r = row(resource, &obj, now());
                let cs = r["cells"].as_array().expect("cells");
                assert_eq!(cs.len(), cols.len(), "{resource} {obj}");
                for (cell, col) in cs.iter().zip(&cols) {
                    match col["type"].as_str() {
                        Some("integer") => assert!(cell.is_i64(), "{resource}: {col} {cell}"),
                        Some("string") | Some("date") => {
                            assert!(cell.is_string(), "{resource}: {col} {cell}")
                        }
                        other => panic!("unexpected column type {other:?}"),
                    }
                }
                assert_eq!(r["object"]["metadata"], json!({}));
            }
        }
    }

    #[test]
    fn empty_object_placeholders() {
        assert_eq!(
            cell_texts("pods", json!({})),
            [
                "",
                "0/0",
                "",
                "0",
                "<unknown>",
                "<none>",
                "<none>",
                "<none>",
                "<none>"
            ]
        );
        assert_eq!(
            cell_texts("nodes", json!({})),
            [
                "",
                "Unknown",
                "<none>",
                "<unknown>",
                "",
                "<none>",
                "<none>",
                "<unknown>",
                "<unknown>",
                "<unknown>"
            ]
        );
        assert_eq!(
            cell_texts("services", json!({})),
            [
                "",
                "ClusterIP",
                "<none>",
                "<none>",
                "<none>",
                "<unknown>",
                "<none>"
            ]
        );
        assert_eq!(cell_texts("endpoints", json!({}))[1], "<none>");
        assert_eq!(
            cell_texts("deployments", json!({})),
            ["", "0/1", "0", "0", "<unknown>", "", "", ""]
        );
        assert_eq!(
            cell_texts("cronjobs", json!({})),
            [
                "",
                "",
                "<none>",
                "False",
                "0",
                "<none>",
                "<unknown>",
                "",
                "",
                "<none>"
            ]
        );
        assert_eq!(
            cell_texts("events", json!({})),
            ["<unknown>", "", "", "", "", "", "", "<unknown>", "1", ""]
        );
    }

    // --- pods -----------------------------------------------------------------

    fn running(name: &str, restarts: i64) -> Value {
        json!({
            "name": name,
            "ready": true,
            "restartCount": restarts,
            "state": {"running": {"startedAt": "2024-06-01T11:00:00Z"}},
        })
    }

    #[test]
    fn pod_running_and_ready() {
        let pod = json!({
            "metadata": {"name": "web", "creationTimestamp": "2024-06-01T11:55:00Z"},
            "spec": {"nodeName": "n1", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {
                "phase": "Running",
                "podIP": "10.0.0.9",
                "podIPs": [{"ip": "10.0.0.7"}],
                "containerStatuses": [running("a", 0), running("b", 0)],
            },
        });
        assert_eq!(
            cell_texts("pods", pod),
            ["web", "2/2", "Running", "0", "5m", "10.0.0.7", "n1", "<none>", "<none>"]
        );
    }

    #[test]
    fn pod_pending_and_container_creating() {
        let pending = json!({
            "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Pending"},
        });
        assert_eq!(cell_texts("pods", pending)[1..3], ["0/1", "Pending"]);

        let creating = json!({
            "spec": {"containers": [{"name": "a"}]},
            "status": {
                "phase": "Pending",
                "containerStatuses": [{
                    "name": "a", "ready": false, "restartCount": 0,
                    "state": {"waiting": {"reason": "ContainerCreating"}},
                }],
            },
        });
        assert_eq!(cell_texts("pods", creating)[2], "ContainerCreating");

        let gated = json!({
            "status": {
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}],
            },
        });
        assert_eq!(cell_texts("pods", gated)[2], "SchedulingGated");
    }

    #[test]
    fn pod_crash_loop_with_restart_age() {
        let pod = json!({
            "spec": {"containers": [{"name": "a"}]},
            "status": {
                "phase": "Running",
                "containerStatuses": [{
                    "name": "a", "ready": false, "restartCount": 3,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                    "lastState": {"terminated": {
                        "exitCode": 1, "reason": "Error",
                        "finishedAt": "2024-06-01T11:59:55Z",
                    }},
                }],
            },
        });
        let c = cells("pods", pod);
        assert_eq!(c[1], "0/1");
        assert_eq!(c[2], "CrashLoopBackOff");
        assert_eq!(c[3], "3 (5s ago)");
    }

    #[test]
    fn pod_restarts_without_known_time_are_plain() {
        let pod = json!({
            "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Running", "containerStatuses": [running("a", 4)]},
        });
        assert_eq!(cell_texts("pods", pod)[3], "4");
    }

    #[test]
    fn pod_restart_age_uses_latest_termination() {
        let mut a = running("a", 1);
        a["lastState"] =
            json!({"terminated": {"exitCode": 1, "finishedAt": "2024-06-01T10:00:00Z"}});
        let mut b = running("b", 2);
        b["lastState"] =
            json!({"terminated": {"exitCode": 1, "finishedAt": "2024-06-01T11:58:00Z"}});
        let pod = json!({
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "containerStatuses": [a, b]},
        });
        assert_eq!(cell_texts("pods", pod)[3], "3 (2m ago)");
    }

    #[test]
    fn pod_completed_and_terminated_reasons() {
        let done = json!({
            "spec": {"containers": [{"name": "a"}]},
            "status": {
                "phase": "Succeeded",
                "containerStatuses": [{
                    "name": "a", "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
                }],
            },
        });
        let r = row("pods", &done, now());
        assert_eq!(r["cells"][1], "0/1");
        assert_eq!(r["cells"][2], "Completed");
        assert_eq!(r["conditions"][0]["type"], "Completed");
        assert_eq!(r["conditions"][0]["reason"], "Succeeded");

        let signalled = json!({
            "status": {
                "phase": "Failed",
                "containerStatuses": [{"name": "a", "state": {"terminated": {"exitCode": 137, "signal": 9}}}],
            },
        });
        let r = row("pods", &signalled, now());
        assert_eq!(r["cells"][2], "Signal:9");
        assert_eq!(r["conditions"][0]["reason"], "Failed");

        let exited = json!({
            "status": {
                "phase": "Failed",
                "containerStatuses": [{"name": "a", "state": {"terminated": {"exitCode": 2}}}],
            },
        });
        assert_eq!(cell_texts("pods", exited)[2], "ExitCode:2");
    }

    #[test]
    fn pod_completed_container_next_to_running_one() {
        let mut pod = json!({
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {
                "phase": "Running",
                "containerStatuses": [
                    {"name": "a", "ready": false, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                    running("b", 0),
                ],
            },
        });
        assert_eq!(cell_texts("pods", pod.clone())[1..3], ["1/2", "NotReady"]);
        pod["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
        assert_eq!(cell_texts("pods", pod)[2], "Running");
    }

    #[test]
    fn pod_terminating_and_node_lost() {
        let pod = json!({
            "metadata": {"name": "p", "deletionTimestamp": "2024-06-01T11:59:00Z"},
            "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Running", "containerStatuses": [running("a", 0)]},
        });
        assert_eq!(cell_texts("pods", pod)[1..3], ["1/1", "Terminating"]);

        // A pod that already finished keeps its final status while deleted.
        let finished = json!({
            "metadata": {"deletionTimestamp": "2024-06-01T11:59:00Z"},
            "status": {"phase": "Succeeded"},
        });
        assert_eq!(cell_texts("pods", finished)[2], "Succeeded");

        let lost = json!({
            "metadata": {"deletionTimestamp": "2024-06-01T11:59:00Z"},
            "status": {"phase": "Running", "reason": "NodeLost"},
        });
        assert_eq!(cell_texts("pods", lost)[2], "Unknown");

        let evicted = json!({"status": {"phase": "Failed", "reason": "Evicted"}});
        assert_eq!(cell_texts("pods", evicted)[2], "Evicted");
    }

    #[test]
    fn pod_init_container_progress() {
        let base = |statuses: Value| {
            json!({
                "spec": {
                    "initContainers": [{"name": "i1"}, {"name": "i2"}],
                    "containers": [{"name": "a"}],
                },
                "status": {
                    "phase": "Pending",
                    "initContainerStatuses": statuses,
                    "containerStatuses": [{
                        "name": "a", "restartCount": 0,
                        "state": {"waiting": {"reason": "PodInitializing"}},
                    }],
                },
            })
        };

        let first_running = base(json!([
            {"name": "i1", "restartCount": 0, "state": {"running": {}}},
            {"name": "i2", "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}},
        ]));
        assert_eq!(cell_texts("pods", first_running)[1..3], ["0/1", "Init:0/2"]);

        let second_running = base(json!([
            {"name": "i1", "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            {"name": "i2", "restartCount": 0, "state": {"running": {}}},
        ]));
        assert_eq!(cell_texts("pods", second_running)[2], "Init:1/2");

        let crashing = base(json!([
            {"name": "i1", "restartCount": 4,
             "state": {"waiting": {"reason": "CrashLoopBackOff"}},
             "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-06-01T11:59:00Z"}}},
        ]));
        assert_eq!(
            cell_texts("pods", crashing)[2..4],
            ["Init:CrashLoopBackOff", "4 (60s ago)"]
        );

        let failed = base(json!([
            {"name": "i1", "restartCount": 0, "state": {"terminated": {"exitCode": 3}}},
        ]));
        assert_eq!(cell_texts("pods", failed)[2], "Init:ExitCode:3");

        let failed_reason = base(json!([
            {"name": "i1", "restartCount": 0, "state": {"terminated": {"exitCode": 1, "reason": "Error"}}},
        ]));
        assert_eq!(cell_texts("pods", failed_reason)[2], "Init:Error");

        let killed = base(json!([
            {"name": "i1", "restartCount": 0, "state": {"terminated": {"exitCode": 137, "signal": 9}}},
        ]));
        assert_eq!(cell_texts("pods", killed)[2], "Init:Signal:9");

        // Once all init containers are done the main containers decide.
        let done = base(json!([
            {"name": "i1", "restartCount": 2, "state": {"terminated": {"exitCode": 0}}},
            {"name": "i2", "restartCount": 0, "state": {"terminated": {"exitCode": 0}}},
        ]));
        assert_eq!(cell_texts("pods", done)[2..4], ["PodInitializing", "0"]);
    }

    #[test]
    fn pod_sidecar_counts_towards_ready() {
        let pod = json!({
            "spec": {
                "initContainers": [{"name": "proxy", "restartPolicy": "Always"}],
                "containers": [{"name": "app"}],
            },
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Initialized", "status": "True"}],
                "initContainerStatuses": [{
                    "name": "proxy", "ready": true, "started": true, "restartCount": 1,
                    "state": {"running": {}},
                    "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-06-01T11:00:00Z"}},
                }],
                "containerStatuses": [running("app", 0)],
            },
        });
        assert_eq!(
            cell_texts("pods", pod)[1..4],
            ["2/2", "Running", "1 (60m ago)"]
        );
    }

    #[test]
    fn pod_wide_cells() {
        let pod = json!({
            "spec": {
                "nodeName": "n2",
                "readinessGates": [{"conditionType": "example.com/lb"}, {"conditionType": "example.com/dns"}],
            },
            "status": {
                "podIP": "10.1.2.3",
                "nominatedNodeName": "n3",
                "conditions": [
                    {"type": "example.com/lb", "status": "True"},
                    {"type": "example.com/dns", "status": "False"},
                ],
            },
        });
        assert_eq!(
            cell_texts("pods", pod)[5..],
            ["10.1.2.3", "n2", "n3", "1/2"]
        );
    }

    // --- controllers ------------------------------------------------------------

    #[test]
    fn replication_controller_cells_with_wide() {
        let rc = json!({
            "metadata": {"name": "rc", "creationTimestamp": "2024-06-01T09:00:00Z"},
            "spec": {
                "replicas": 3,
                "selector": {"b": "2", "a": "1"},
                "template": {"spec": {"containers": [
                    {"name": "web", "image": "nginx:1"},
                    {"name": "log", "image": "busybox"},
                ]}},
            },
            "status": {"replicas": 3, "readyReplicas": 2},
        });
        let c = cells("replicationcontrollers", rc);
        assert_eq!(
            c,
            [
                json!("rc"),
                json!(3),
                json!(3),
                json!(2),
                json!("3h"),
                json!("web,log"),
                json!("nginx:1,busybox"),
                json!("a=1,b=2")
            ]
        );
    }

    #[test]
    fn replica_set_selector_rendering() {
        let rs = json!({
            "spec": {
                "replicas": 0,
                "selector": {
                    "matchLabels": {"app": "web"},
                    "matchExpressions": [
                        {"key": "tier", "operator": "In", "values": ["front", "back"]},
                        {"key": "canary", "operator": "DoesNotExist"},
                        {"key": "env", "operator": "NotIn", "values": ["dev"]},
                        {"key": "zone", "operator": "Exists"},
                    ],
                },
            },
        });
        let c = cells("replicasets", rs);
        assert_eq!(c[1], 0);
        assert_eq!(
            c[7],
            "app=web,!canary,env notin (dev),tier in (back,front),zone"
        );

        let bad =
            json!({"spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}});
        assert_eq!(cell_texts("replicasets", bad)[7], "<error>");
        assert_eq!(cell_texts("replicasets", json!({}))[7], "<none>");
    }

    #[test]
    fn deployment_cells_with_wide() {
        let d = json!({
            "metadata": {"name": "web", "creationTimestamp": "2024-05-29T08:00:00Z"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.25"}]}},
            },
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
        });
        assert_eq!(
            cells("deployments", d),
            [
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("3d4h"),
                json!("nginx"),
                json!("nginx:1.25"),
                json!("app=web")
            ]
        );
        let bad =
            json!({"spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}});
        assert_eq!(cell_texts("deployments", bad)[7], "<invalid>");
    }

    #[test]
    fn daemonset_cells_with_wide() {
        let ds = json!({
            "metadata": {"name": "agent"},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {"spec": {
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "containers": [{"name": "agent", "image": "agent:2"}],
                }},
            },
            "status": {
                "desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                "updatedNumberScheduled": 3, "numberAvailable": 2,
            },
        });
        assert_eq!(
            cells("daemonsets", ds),
            [
                json!("agent"),
                json!(3),
                json!(3),
                json!(2),
                json!(3),
                json!(2),
                json!("kubernetes.io/os=linux"),
                json!("<unknown>"),
                json!("agent"),
                json!("agent:2"),
                json!("app=agent")
            ]
        );
    }

    #[test]
    fn job_status_completions_and_duration() {
        let complete = json!({
            "metadata": {"name": "pi"},
            "spec": {
                "completions": 1,
                "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "abc"}},
                "template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}},
            },
            "status": {
                "succeeded": 1,
                "startTime": "2024-06-01T11:00:00Z",
                "completionTime": "2024-06-01T11:00:42Z",
                "conditions": [{"type": "Complete", "status": "True"}],
            },
        });
        assert_eq!(
            cell_texts("jobs", complete),
            [
                "pi",
                "Complete",
                "1/1",
                "42s",
                "<unknown>",
                "pi",
                "perl",
                "batch.kubernetes.io/controller-uid=abc"
            ]
        );

        let running = json!({
            "spec": {"parallelism": 3},
            "status": {"succeeded": 1, "startTime": "2024-06-01T11:57:00Z"},
        });
        assert_eq!(
            cell_texts("jobs", running)[1..4],
            ["Running", "1/1 of 3", "3m"]
        );

        let failed = json!({"status": {"conditions": [
            {"type": "FailureTarget", "status": "True"},
            {"type": "Failed", "status": "True"},
        ]}});
        assert_eq!(cell_texts("jobs", failed)[1..4], ["Failed", "0/1", ""]);

        let suspended =
            json!({"status": {"conditions": [{"type": "Suspended", "status": "True"}]}});
        assert_eq!(cell_texts("jobs", suspended)[1], "Suspended");

        let deleting = json!({
            "metadata": {"deletionTimestamp": "2024-06-01T11:59:00Z"},
            "status": {"conditions": [{"type": "Suspended", "status": "True"}]},
        });
        assert_eq!(cell_texts("jobs", deleting)[1], "Terminating");
    }

    #[test]
    fn cronjob_cells_with_wide() {
        let cj = json!({
            "metadata": {"name": "backup", "creationTimestamp": "2024-05-01T12:00:00Z"},
            "spec": {
                "schedule": "*/5 * * * *",
                "timeZone": "Etc/UTC",
                "suspend": true,
                "jobTemplate": {"spec": {"template": {"spec": {"containers": [
                    {"name": "backup", "image": "backup:1"},
                ]}}}},
            },
            "status": {"active": [{"name": "backup-1"}], "lastScheduleTime": "2024-06-01T11:55:00Z"},
        });
        assert_eq!(
            cells("cronjobs", cj),
            [
                json!("backup"),
                json!("*/5 * * * *"),
                json!("Etc/UTC"),
                json!("True"),
                json!(1),
                json!("5m"),
                json!("31d"),
                json!("backup"),
                json!("backup:1"),
                json!("<none>")
            ]
        );
    }

    // --- services and endpoints ---------------------------------------------------

    #[test]
    fn service_ports_with_node_ports() {
        let svc = json!({
            "metadata": {"name": "web"},
            "spec": {
                "type": "NodePort",
                "clusterIP": "10.96.0.10",
                "clusterIPs": ["10.96.0.10"],
                "selector": {"app": "web"},
                "ports": [
                    {"port": 80, "protocol": "TCP", "nodePort": 30001},
                    {"port": 443, "protocol": "TCP"},
                    {"port": 53, "protocol": "UDP", "nodePort": 30053},
                ],
            },
        });
        assert_eq!(
            cell_texts("services", svc),
            [
                "web",
                "NodePort",
                "10.96.0.10",
                "<none>",
                "80:30001/TCP,443/TCP,53:30053/UDP",
                "<unknown>",
                "app=web"
            ]
        );
        assert_eq!(service_ports(&[json!({"port": 8080})]), "8080/TCP");
    }

    #[test]
    fn service_external_ips() {
        let pending = json!({"spec": {"type": "LoadBalancer", "clusterIP": "10.0.0.1", "ports": [{"port": 80}]}});
        assert_eq!(
            cell_texts("services", pending)[2..5],
            ["10.0.0.1", "<pending>", "80/TCP"]
        );

        let provisioned = json!({
            "spec": {"type": "LoadBalancer", "externalIPs": ["1.1.1.1"]},
            "status": {"loadBalancer": {"ingress": [
                {"ip": "203.0.113.9"}, {"hostname": "lb.example.com"}, {"ip": "203.0.113.9"},
            ]}},
        });
        assert_eq!(
            cell_texts("services", provisioned)[3],
            "203.0.113.9,lb.example.com,1.1.1.1"
        );

        let external =
            json!({"spec": {"type": "ClusterIP", "externalIPs": ["192.0.2.1", "192.0.2.2"]}});
        assert_eq!(cell_texts("services", external)[3], "192.0.2.1,192.0.2.2");

        let headless = json!({"spec": {"clusterIP": "None", "clusterIPs": ["None"]}});
        assert_eq!(cell_texts("services", headless)[2..4], ["None", "<none>"]);

        let name = json!({"spec": {"type": "ExternalName", "externalName": "db.example.com"}});
        assert_eq!(cell_texts("services", name)[3], "db.example.com");

        let odd = json!({"spec": {"type": "Bogus"}});
        assert_eq!(cell_texts("services", odd)[3], "<unknown>");
    }

    #[test]
    fn endpoint_slices_list_ports_and_addresses_capped_at_three() {
        let slice = json!({"addressType": "IPv4",
            "ports": [{"name": "http", "port": 80}, {"name": "named"}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]},
                {"addresses": ["10.0.0.3"]}, {"addresses": ["10.0.0.4", "10.0.0.5"]}]});
        let cells = cell_texts("endpointslices", slice);
        assert_eq!(cells[1], "IPv4");
        assert_eq!(cells[2], "80,named");
        assert_eq!(cells[3], "10.0.0.1,10.0.0.2,10.0.0.3 + 2 more...");
        let empty = cell_texts("endpointslices", json!({"addressType": "IPv4"}));
        assert_eq!(empty[2], "<unset>");
        assert_eq!(empty[3], "<unset>");
    }

    #[test]
    fn endpoints_list_is_capped_at_three() {
        let ep = json!({
            "metadata": {"name": "web"},
            "subsets": [{
                "addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
                "ports": [{"port": 80}, {"port": 443}],
            }],
        });
        assert_eq!(
            cell_texts("endpoints", ep)[1],
            "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more..."
        );

        let small =
            json!({"subsets": [{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 80}]}]});
        assert_eq!(cell_texts("endpoints", small)[1], "[fd00::1]:80");

        let headless =
            json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}]}]});
        assert_eq!(cell_texts("endpoints", headless)[1], "10.0.0.1,10.0.0.2");

        let no_ready = json!({"subsets": [{"notReadyAddresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]});
        assert_eq!(cell_texts("endpoints", no_ready)[1], "");
    }

    // --- nodes and namespaces -------------------------------------------------------

    fn node(ready: &str, unschedulable: bool) -> Value {
        json!({
            "metadata": {
                "name": "n1",
                "creationTimestamp": "2024-06-01T07:00:00Z",
                "labels": {
                    "node-role.kubernetes.io/control-plane": "",
                    "node-role.kubernetes.io/": "",
                    "kubernetes.io/role": "worker",
                    "kubernetes.io/hostname": "n1",
                },
            },
            "spec": {"unschedulable": unschedulable},
            "status": {
                "conditions": [
                    {"type": "MemoryPressure", "status": "False"},
                    {"type": "Ready", "status": ready},
                ],
                "addresses": [
                    {"type": "Hostname", "address": "n1"},
                    {"type": "InternalIP", "address": "192.168.1.10"},
                ],
                "nodeInfo": {
                    "kubeletVersion": "v1.33.0",
                    "osImage": "Debian GNU/Linux 12 (bookworm)",
                    "kernelVersion": "6.1.0",
                    "containerRuntimeVersion": "containerd://1.7.0",
                },
            },
        })
    }

    #[test]
    fn node_status_roles_and_wide() {
        assert_eq!(
            cell_texts("nodes", node("True", false)),
            [
                "n1",
                "Ready",
                "control-plane,worker",
                "5h",
                "v1.33.0",
                "192.168.1.10",
                "<none>",
                "Debian GNU/Linux 12 (bookworm)",
                "6.1.0",
                "containerd://1.7.0"
            ]
        );
    }

    #[test]
    fn node_status_with_cordon() {
        assert_eq!(
            cell_texts("nodes", node("True", true))[1],
            "Ready,SchedulingDisabled"
        );
        assert_eq!(cell_texts("nodes", node("False", false))[1], "NotReady");
        assert_eq!(
            cell_texts("nodes", node("Unknown", true))[1],
            "NotReady,SchedulingDisabled"
        );
        let bare = json!({"spec": {"unschedulable": true}});
        assert_eq!(
            cell_texts("nodes", bare)[1..3],
            ["Unknown,SchedulingDisabled", "<none>"]
        );
    }

    #[test]
    fn namespace_cells_show_phase() {
        let ns = json!({"metadata": {"name": "kube-system", "creationTimestamp": "2024-06-01T11:59:30Z"}, "status": {"phase": "Terminating"}});
        assert_eq!(
            cell_texts("namespaces", ns),
            ["kube-system", "Terminating", "30s"]
        );
    }

    // --- config maps, secrets, events ---------------------------------------------

    #[test]
    fn configmap_and_secret_counts() {
        let cm = json!({"metadata": {"name": "cfg"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
        assert_eq!(cells("configmaps", cm)[1], 3);

        let secret = json!({"metadata": {"name": "tok"}, "type": "Opaque", "data": {"k": "dg=="}});
        let c = cells("secrets", secret);
        assert_eq!(c[1], "Opaque");
        assert_eq!(c[2], 1);
    }

    #[test]
    fn event_cells_core_fields() {
        let ev = json!({
            "metadata": {"name": "web.17a"},
            "type": "Warning",
            "reason": "BackOff",
            "message": "  Back-off restarting failed container\n",
            "count": 7,
            "firstTimestamp": "2024-06-01T11:00:00Z",
            "lastTimestamp": "2024-06-01T11:59:00Z",
            "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{app}"},
            "source": {"component": "kubelet", "host": "n1"},
        });
        assert_eq!(
            cells("events", ev),
            [
                json!("60s"),
                json!("Warning"),
                json!("BackOff"),
                json!("pod/web"),
                json!("spec.containers{app}"),
                json!("kubelet, n1"),
                json!("Back-off restarting failed container"),
                json!("60m"),
                json!(7),
                json!("web.17a")
            ]
        );
    }

    #[test]
    fn event_cells_new_style_and_series() {
        let ev = json!({
            "eventTime": "2024-06-01T11:57:59.500000Z",
            "reportingComponent": "scheduler",
            "involvedObject": {"kind": "Node"},
        });
        let c = cell_texts("events", ev);
        assert_eq!(c[0], "2m");
        assert_eq!(c[3], "node");
        assert_eq!(c[5], "scheduler");
        assert_eq!(c[7], "2m");
        assert_eq!(c[8], "1");

        let series = json!({
            "eventTime": "2024-06-01T11:00:00.000000Z",
            "series": {"count": 12, "lastObservedTime": "2024-06-01T11:59:50.000000Z"},
            "source": {"host": "n1"},
            "reportingInstance": "ignored",
        });
        let c = cell_texts("events", series);
        assert_eq!(c[0], "10s");
        assert_eq!(c[5], ", n1");
        assert_eq!(c[7], "60m");
        assert_eq!(c[8], "12");
    }

    // --- helpers ----------------------------------------------------------------

    #[test]
    fn timestamps_that_count_as_unset() {
        assert_eq!(parse_time(None), None);
        assert_eq!(parse_time(Some(&json!(null))), None);
        assert_eq!(parse_time(Some(&json!("yesterday"))), None);
        assert_eq!(parse_time(Some(&json!(12))), None);
        assert_eq!(parse_time(Some(&json!(GO_ZERO_RFC3339))), None);
        assert!(parse_time(Some(&json!("2024-06-01T11:00:00+02:00"))).is_some());
        // A creation time in the near future tolerates clock skew.
        let fresh = json!({"metadata": {"creationTimestamp": "2024-06-01T12:00:01Z"}});
        assert_eq!(cell_texts("namespaces", fresh)[2], "0s");
        let future = json!({"metadata": {"creationTimestamp": "2024-06-01T12:05:00Z"}});
        assert_eq!(cell_texts("namespaces", future)[2], "<invalid>");
    }

    #[test]
    fn label_formatting() {
        assert_eq!(format_labels(None), "<none>");
        assert_eq!(format_labels(Some(&json!({}))), "<none>");
        assert_eq!(format_labels(Some(&json!("x"))), "<none>");
        assert_eq!(format_labels(Some(&json!({"z": "1", "a": "2"}))), "a=2,z=1");
        assert_eq!(format_label_selector(Some(&json!({}))), "<none>");
        assert_eq!(selector_string(Some(&json!(null))), Ok(String::new()));
        assert_eq!(
            selector_string(Some(&json!({"matchExpressions": [
                {"key": "a", "operator": "Exists", "values": ["x"]},
            ]}))),
            Err(())
        );
    }
}
