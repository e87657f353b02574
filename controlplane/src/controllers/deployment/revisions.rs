//! Naming and revision bookkeeping of a deployment's ReplicaSets.
//!
//! Each distinct pod template gets one ReplicaSet, named
//! `<deployment>-<pod-template-hash>`. The hash is FNV-1a (32 bits) over
//! the template in a canonical form, then over the collision count if the
//! deployment has one, written with the alphabet Kubernetes uses for
//! generated names. It does not match Kubernetes' hash byte for byte (that
//! one hashes Go's in-memory struct), and nothing depends on it: which
//! ReplicaSet is "new" is decided by comparing templates
//! ([`equal_ignore_hash`]), the hash only names it. When a name is taken
//! by a ReplicaSet with another template, the deployment's
//! `status.collisionCount` is bumped, which changes the hash.
//!
//! Revisions are what `kubectl rollout history` and `rollout undo` read:
//! a new template's ReplicaSet gets the highest revision plus one; going
//! back to an old template (a rollback) moves that ReplicaSet's revision up
//! to the highest plus one, and remembers the numbers it had in
//! `deployment.kubernetes.io/revision-history`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::model::{Deployment, ReplicaSet};

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// `extensions/v1beta1`'s rollback request; never copied.
const ROLLBACK_TO: &str = "deprecated.deployment.rollback.to";
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// Kubernetes' limit on the length of the revision history annotation.
const MAX_REVISION_HISTORY_CHARS: usize = 2000;

/// Annotations a deployment never copies to its ReplicaSets: they are the
/// ReplicaSet's own bookkeeping (or apply's).
fn skip_copy(key: &str) -> bool {
    matches!(
        key,
        LAST_APPLIED | REVISION | REVISION_HISTORY | DESIRED_REPLICAS | MAX_REPLICAS | ROLLBACK_TO
    )
}

/// The template as compared and hashed: without the `pod-template-hash`
/// label, and with nulls and empty maps and lists left out, so that
/// "absent" and "empty" compare equal as Kubernetes' semantic equality
/// has them.
pub fn normalized_template(template: &Value) -> Value {
    let mut copy = template.clone();
    if let Some(labels) = copy
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(POD_TEMPLATE_HASH);
    }
    strip_empty(&mut copy);
    copy
}

fn strip_empty(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for item in map.values_mut() {
                strip_empty(item);
            }
            map.retain(|_, item| !is_empty(item));
        }
        Value::Array(items) => items.iter_mut().for_each(strip_empty),
        _ => {}
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(map) => map.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

/// Kubernetes' `EqualIgnoreHash`: the same template but for the
/// `pod-template-hash` label.
pub fn equal_ignore_hash(a: &Value, b: &Value) -> bool {
    normalized_template(a) == normalized_template(b)
}

const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

struct Fnv1a(u32);

impl Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u32::from(*byte);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }

    /// Feeds `value` as JSON with object keys in sorted order, so the hash
    /// does not depend on how a map happens to be ordered in memory.
    fn write_json(&mut self, value: &Value) {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                self.write(b"{");
                for (i, key) in keys.into_iter().enumerate() {
                    if i > 0 {
                        self.write(b",");
                    }
                    self.write_json(&Value::String(key.clone()));
                    self.write(b":");
                    if let Some(item) = map.get(key) {
                        self.write_json(item);
                    }
                }
                self.write(b"}");
            }
            Value::Array(items) => {
                self.write(b"[");
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.write(b",");
                    }
                    self.write_json(item);
                }
                self.write(b"]");
            }
            scalar => self.write(scalar.to_string().as_bytes()),
        }
    }
}

/// Kubernetes' `rand.SafeEncodeString`: each character mapped into the
/// generated-name alphabet (no vowels, no look-alikes).
fn safe_encode(text: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    text.bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

/// The `pod-template-hash` of a deployment's template.
pub fn pod_template_hash(template: &Value, collision_count: Option<i64>) -> String {
    let mut hasher = Fnv1a(FNV_OFFSET);
    hasher.write_json(&normalized_template(template));
    if let Some(count) = collision_count {
        // As Kubernetes: the count as a little-endian uint32 in 8 bytes.
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&(count as u32).to_le_bytes());
        hasher.write(&bytes);
    }
    safe_encode(&hasher.0.to_string())
}

/// The highest revision among `replica_sets`; unreadable ones count as 0.
pub fn max_revision<'a>(replica_sets: impl IntoIterator<Item = &'a ReplicaSet>) -> i64 {
    replica_sets
        .into_iter()
        .filter_map(|rs| rs.revision().ok())
        .max()
        .unwrap_or(0)
}

/// Kubernetes' `SetNewReplicaSetAnnotations`: copies the deployment's
/// annotations (but not the bookkeeping ones) into the new ReplicaSet and
/// raises its revision to `new_revision` if lower, recording the number it
/// had. A ReplicaSet about to be created (`exists` false) also gets the
/// replica annotations. Returns whether anything changed.
pub fn set_new_replica_set_annotations(
    deployment: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: i64,
    exists: bool,
    max_surge: i64,
) -> bool {
    let mut changed = false;
    for (key, value) in &deployment.annotations {
        if skip_copy(key) || rs.annotations.get(key) == Some(value) {
            continue;
        }
        rs.annotations.insert(key.clone(), value.clone());
        changed = true;
    }
    let old_text = rs.annotations.get(REVISION).cloned();
    let old_revision = match old_text.as_deref() {
        None | Some("") => 0,
        Some(text) => match text.parse::<i64>() {
            Ok(number) => number,
            // Kubernetes gives up on a ReplicaSet with a garbled revision.
            Err(_) => return changed,
        },
    };
    if old_revision < new_revision {
        rs.annotations
            .insert(REVISION.into(), new_revision.to_string());
        changed = true;
        if let Some(old_text) = old_text.filter(|t| !t.is_empty()) {
            append_revision_history(&mut rs.annotations, &old_text);
        }
    }
    if !exists
        && set_replicas_annotations(
            &mut rs.annotations,
            deployment.replicas,
            deployment.replicas + max_surge,
        )
    {
        changed = true;
    }
    changed
}

/// Adds `old` to the revision history, dropping the oldest entries to
/// stay within Kubernetes' length limit.
fn append_revision_history(annotations: &mut BTreeMap<String, String>, old: &str) {
    let history = annotations
        .get(REVISION_HISTORY)
        .cloned()
        .unwrap_or_default();
    if history.is_empty() {
        annotations.insert(REVISION_HISTORY.into(), old.to_owned());
        return;
    }
    let mut entries: Vec<&str> = history.split(',').collect();
    let mut total = history.len() + old.len() + 1;
    let mut start = 0;
    while total > MAX_REVISION_HISTORY_CHARS && start < entries.len() {
        total -= entries[start].len() + 1;
        start += 1;
    }
    if total <= MAX_REVISION_HISTORY_CHARS {
        entries.push(old);
        annotations.insert(REVISION_HISTORY.into(), entries[start..].join(","));
    }
}

/// Whether the desired/max replica annotations differ from these values.
pub fn replicas_annotations_need_update(
    annotations: &BTreeMap<String, String>,
    desired: i64,
    max: i64,
) -> bool {
    annotations.get(DESIRED_REPLICAS) != Some(&desired.to_string())
        || annotations.get(MAX_REPLICAS) != Some(&max.to_string())
}

/// Sets the desired/max replica annotations; returns whether they changed.
pub fn set_replicas_annotations(
    annotations: &mut BTreeMap<String, String>,
    desired: i64,
    max: i64,
) -> bool {
    if !replicas_annotations_need_update(annotations, desired, max) {
        return false;
    }
    annotations.insert(DESIRED_REPLICAS.into(), desired.to_string());
    annotations.insert(MAX_REPLICAS.into(), max.to_string());
    true
}

/// An annotation read as a number, if present and readable.
pub fn number_annotation(rs: &ReplicaSet, key: &str) -> Option<i64> {
    rs.annotations.get(key).and_then(|text| text.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(image: &str) -> Value {
        json!({"metadata": {"labels": {"app": "web"}, "creationTimestamp": null},
            "spec": {"containers": [{"name": "c", "image": image, "resources": {}}]}})
    }

    #[test]
    fn the_hash_is_stable_and_ignores_its_own_label_and_key_order() {
        let a = pod_template_hash(&template("nginx:1"), None);
        assert_eq!(a, pod_template_hash(&template("nginx:1"), None));
        assert_eq!(a.len(), pod_template_hash(&template("nginx:1"), None).len());
        assert!(
            a.bytes()
                .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)),
            "{a}"
        );
        let mut labelled = template("nginx:1");
        labelled["metadata"]["labels"][POD_TEMPLATE_HASH] = json!(a.clone());
        assert_eq!(pod_template_hash(&labelled, None), a);
        assert_ne!(pod_template_hash(&template("nginx:2"), None), a);
        // A collision count moves the name, differently for each count.
        let one = pod_template_hash(&template("nginx:1"), Some(1));
        let two = pod_template_hash(&template("nginx:1"), Some(2));
        assert!(one != a && two != a && one != two);
    }

    #[test]
    fn known_hash_values_do_not_drift() {
        // FNV-1a of the empty object "{}" is 0x5465_b825 = 1415952421; its
        // digits map through the generated-name alphabet.
        assert_eq!(safe_encode("1415952421"), "5859f96865");
        assert_eq!(pod_template_hash(&json!({}), None), "5859f96865");
    }

    #[test]
    fn templates_compare_without_the_hash_label_and_empty_fields() {
        let mut labelled = template("nginx:1");
        labelled["metadata"]["labels"][POD_TEMPLATE_HASH] = json!("abc");
        assert!(equal_ignore_hash(&labelled, &template("nginx:1")));
        let mut bare = template("nginx:1");
        bare["metadata"]
            .as_object_mut()
            .expect("metadata")
            .remove("creationTimestamp");
        bare["spec"]["containers"][0]
            .as_object_mut()
            .expect("container")
            .remove("resources");
        assert!(equal_ignore_hash(&bare, &template("nginx:1")));
        assert!(!equal_ignore_hash(
            &template("nginx:2"),
            &template("nginx:1")
        ));
    }

    fn deployment(annotations: Value) -> Deployment {
        Deployment::from_object(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "d", "annotations": annotations},
            "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}}},
        }))
        .expect("deployment")
    }

    fn replica_set(annotations: Value) -> ReplicaSet {
        ReplicaSet::from_object(json!({
            "metadata": {"name": "web-1", "namespace": "default", "uid": "r", "annotations": annotations},
            "spec": {"replicas": 1},
        }))
        .expect("rs")
    }

    #[test]
    fn a_new_replica_set_gets_the_next_revision_the_change_cause_and_replica_counts() {
        let d = deployment(json!({
            "kubernetes.io/change-cause": "kubectl set image ...",
            REVISION: "1",
            LAST_APPLIED: "{}",
        }));
        let mut rs = replica_set(json!({}));
        assert!(set_new_replica_set_annotations(&d, &mut rs, 2, false, 1));
        assert_eq!(
            rs.annotations,
            BTreeMap::from([
                (
                    "kubernetes.io/change-cause".to_owned(),
                    "kubectl set image ...".to_owned()
                ),
                (REVISION.to_owned(), "2".to_owned()),
                (DESIRED_REPLICAS.to_owned(), "4".to_owned()),
                (MAX_REPLICAS.to_owned(), "5".to_owned()),
            ])
        );
        // Again: nothing to change.
        assert!(!set_new_replica_set_annotations(&d, &mut rs, 2, true, 1));
    }

    #[test]
    fn a_rollback_moves_the_revision_up_and_remembers_the_old_numbers() {
        let d = deployment(json!({REVISION: "2"}));
        let mut rs = replica_set(json!({REVISION: "1"}));
        assert!(set_new_replica_set_annotations(&d, &mut rs, 3, true, 1));
        assert_eq!(rs.annotations[REVISION], "3");
        assert_eq!(rs.annotations[REVISION_HISTORY], "1");
        assert!(
            !rs.annotations.contains_key(DESIRED_REPLICAS),
            "existing sets keep their counts"
        );
        // Rolled back to once more.
        assert!(set_new_replica_set_annotations(&d, &mut rs, 5, true, 1));
        assert_eq!(rs.annotations[REVISION_HISTORY], "1,3");
        // A revision is never lowered.
        assert!(!set_new_replica_set_annotations(&d, &mut rs, 4, true, 1));
        assert_eq!(rs.annotations[REVISION], "5");
    }

    #[test]
    fn the_revision_history_stays_within_its_length_limit() {
        let mut annotations = BTreeMap::new();
        let long = vec!["1234567890"; 181].join(",");
        annotations.insert(REVISION_HISTORY.to_owned(), long);
        append_revision_history(&mut annotations, "99");
        let history = &annotations[REVISION_HISTORY];
        assert!(
            history.len() <= MAX_REVISION_HISTORY_CHARS,
            "{}",
            history.len()
        );
        assert!(history.ends_with(",99"));
    }

    #[test]
    fn max_revision_ignores_unreadable_numbers() {
        let sets = [
            replica_set(json!({REVISION: "3"})),
            replica_set(json!({REVISION: "x"})),
            replica_set(json!({})),
        ];
        assert_eq!(max_revision(&sets), 3);
        assert_eq!(max_revision(&[]), 0);
    }
}
