//! The controller against a real registry and store: what a sync writes,
//! and how it behaves when the cache is behind.

use serde_json::json;
use skiff_apimachinery::{fields::FieldSelector, labels::LabelSelector};
use skiff_store::{RedbStore, RedbStoreOptions};

use super::revisions::{pod_template_hash, REVISION, REVISION_HISTORY};
use super::*;
use crate::allocators::{Cidr, ClusterIpAllocator, NodePortAllocator, ServiceAllocations};
use crate::api::registry::PatchType;

async fn registry() -> (tempfile::TempDir, Arc<Registry>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RedbStore::open(&dir.path().join("store.redb"), RedbStoreOptions::default())
        .expect("store");
    let allocations = ServiceAllocations {
        cluster_ips: ClusterIpAllocator::new(Cidr::parse("10.96.0.0/12").expect("cidr")),
        node_ports: NodePortAllocator::new(30000, 32767),
    };
    let registry = Arc::new(Registry::new(Arc::new(store), allocations));
    crate::bootstrap::ensure_defaults(&registry, "127.0.0.1", 6443)
        .await
        .expect("defaults");
    (dir, registry)
}

fn deployment(replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}},
    })
}

fn key() -> DeploymentKey {
    DeploymentKey {
        namespace: "default".into(),
        name: "web".into(),
    }
}

/// Loads everything from the store, as the loop's list does.
async fn load(registry: &Registry) -> State {
    let mut state = State::default();
    for plural in ["deployments", "replicasets", "pods"] {
        let prefix = info(plural).expect("info").key_prefix(None);
        let kind = match plural {
            "deployments" => Kind::Deployment,
            "replicasets" => Kind::ReplicaSet,
            _ => Kind::Pod,
        };
        for kv in registry.store.range(&prefix).await.expect("range").items {
            apply_kv(&mut state, kind, &prefix, &kv, true);
        }
    }
    state
}

async fn replica_sets(registry: &Registry) -> Vec<Value> {
    let (items, _) = registry
        .list(
            info("replicasets").expect("rs"),
            Some("default"),
            &LabelSelector::everything(),
            &FieldSelector::default(),
        )
        .await
        .expect("list");
    items
        .iter()
        .map(|kv| objects::value(kv).expect("rs"))
        .collect()
}

async fn stored_deployment(registry: &Registry) -> Value {
    registry
        .get(info("deployments").expect("d"), Some("default"), "web")
        .await
        .expect("deployment")
}

/// Syncs from a fresh load until a sync changes nothing more.
async fn settle(controller: &DeploymentController, registry: &Registry) {
    for _ in 0..10 {
        let mut state = load(registry).await;
        while state.queue.pop(Instant::now()).is_some() {
            state.queue.done(&key());
        }
        let before = registry.store.current_revision();
        controller
            .reconcile(&key(), &mut state, Timestamp::now())
            .await
            .expect("reconcile");
        if registry.store.current_revision() == before {
            return;
        }
    }
    panic!("the deployment never settled");
}

fn revision_of(rs: &Value) -> &str {
    rs["metadata"]["annotations"][REVISION]
        .as_str()
        .unwrap_or_default()
}

fn image_of(rs: &Value) -> &str {
    rs["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
}

async fn set_image(registry: &Registry, image: &str, cause: &str) {
    let patch = json!({
        "metadata": {"annotations": {"kubernetes.io/change-cause": cause}},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}},
    });
    registry
        .patch(
            info("deployments").expect("d"),
            Some("default"),
            "web",
            PatchType::Strategic,
            &patch,
            WriteMode::default(),
        )
        .await
        .expect("patch");
}

#[tokio::test]
async fn templates_become_revisioned_replica_sets_and_a_rollback_reuses_one() {
    let (_dir, registry) = registry().await;
    registry
        .create(
            info("deployments").expect("d"),
            Some("default"),
            deployment(2),
            false,
        )
        .await
        .expect("create");
    let controller = DeploymentController::new(registry.clone());
    settle(&controller, &registry).await;

    let sets = replica_sets(&registry).await;
    assert_eq!(sets.len(), 1, "{sets:#?}");
    let first = &sets[0];
    assert_eq!(revision_of(first), "1");
    assert_eq!(first["spec"]["replicas"], 2);
    let d = stored_deployment(&registry).await;
    assert_eq!(d["metadata"]["annotations"][REVISION], "1");
    assert_eq!(
        d["metadata"]["generation"], 1,
        "annotations do not bump the generation"
    );
    assert_eq!(d["status"]["observedGeneration"], 1);
    let hash = pod_template_hash(&d["spec"]["template"], None);
    assert_eq!(first["metadata"]["name"], format!("web-{hash}"));

    set_image(
        &registry,
        "nginx:2",
        "kubectl set image deployment web c=nginx:2 --record=true",
    )
    .await;
    settle(&controller, &registry).await;
    let sets = replica_sets(&registry).await;
    assert_eq!(sets.len(), 2, "{sets:#?}");
    let second = sets
        .iter()
        .find(|rs| image_of(rs) == "nginx:2")
        .expect("a replica set for the new template");
    assert_eq!(revision_of(second), "2");
    assert_eq!(
        second["metadata"]["annotations"]["kubernetes.io/change-cause"],
        "kubectl set image deployment web c=nginx:2 --record=true"
    );
    // Nothing is ready here: the new set takes the surge, and an old pod
    // may go within maxUnavailable (25% of 2 rounds down to 0, so none).
    assert_eq!(second["spec"]["replicas"], 1);
    let first = sets
        .iter()
        .find(|rs| image_of(rs) == "nginx:1")
        .expect("old");
    assert_eq!(first["spec"]["replicas"], 2);
    let d = stored_deployment(&registry).await;
    assert_eq!(d["metadata"]["annotations"][REVISION], "2");
    let progressing = d["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Progressing"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(progressing["status"], "True", "{d:#}");

    // What `kubectl rollout undo --to-revision=1` sends.
    let mut template = first["spec"]["template"].clone();
    template["metadata"]["labels"]
        .as_object_mut()
        .expect("labels")
        .remove("pod-template-hash");
    let undo = json!([
        {"op": "replace", "path": "/spec/template", "value": template},
        {"op": "replace", "path": "/metadata/annotations", "value": {REVISION: "2"}},
    ]);
    registry
        .patch(
            info("deployments").expect("d"),
            Some("default"),
            "web",
            PatchType::Json,
            &undo,
            WriteMode::default(),
        )
        .await
        .expect("undo");
    settle(&controller, &registry).await;
    let sets = replica_sets(&registry).await;
    assert_eq!(sets.len(), 2, "the old set is reused: {sets:#?}");
    let first = sets
        .iter()
        .find(|rs| image_of(rs) == "nginx:1")
        .expect("old");
    assert_eq!(revision_of(first), "3");
    assert_eq!(first["metadata"]["annotations"][REVISION_HISTORY], "1");
    let d = stored_deployment(&registry).await;
    assert_eq!(d["metadata"]["annotations"][REVISION], "3");
}

#[tokio::test]
async fn a_stale_cache_fails_instead_of_overwriting() {
    let (_dir, registry) = registry().await;
    registry
        .create(
            info("deployments").expect("d"),
            Some("default"),
            deployment(1),
            false,
        )
        .await
        .expect("create");
    let controller = DeploymentController::new(registry.clone());
    settle(&controller, &registry).await;

    // Someone scales the ReplicaSet behind the cache's back while the
    // deployment asks for more.
    let mut state = load(&registry).await;
    let rs_info = info("replicasets").expect("rs");
    let mut rs = replica_sets(&registry).await.remove(0);
    let name = rs["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    rs["spec"]["replicas"] = json!(7);
    registry
        .update(rs_info, Some("default"), &name, rs, WriteMode::default())
        .await
        .expect("update");
    registry
        .patch(
            info("deployments").expect("d"),
            Some("default"),
            "web",
            PatchType::Merge,
            &json!({"spec": {"replicas": 3}}),
            WriteMode::default(),
        )
        .await
        .expect("scale");
    let fresh = registry
        .get_kv(info("deployments").expect("d"), Some("default"), "web")
        .await
        .expect("get");
    fold(&mut state, Kind::Deployment, &fresh);
    let error = controller
        .reconcile(&key(), &mut state, Timestamp::now())
        .await
        .expect_err("a stale write must fail");
    assert!(is_stale(&error), "{error}");
    let rs = replica_sets(&registry).await.remove(0);
    assert_eq!(rs["spec"]["replicas"], 7, "not overwritten");
}

#[tokio::test]
async fn a_taken_name_raises_the_collision_count() {
    let (_dir, registry) = registry().await;
    let created = registry
        .create(
            info("deployments").expect("d"),
            Some("default"),
            deployment(1),
            false,
        )
        .await
        .expect("create");
    let stored = objects::value(&created).expect("deployment");
    let hash = pod_template_hash(&stored["spec"]["template"], None);
    // Someone else's ReplicaSet with the name the template hashes to.
    let squatter = json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": format!("web-{hash}"), "labels": {"app": "other"}},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "other"}},
            "template": {"metadata": {"labels": {"app": "other"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
    });
    registry
        .create(
            info("replicasets").expect("rs"),
            Some("default"),
            squatter,
            false,
        )
        .await
        .expect("squat");
    let controller = DeploymentController::new(registry.clone());
    let mut state = load(&registry).await;
    let error = controller
        .reconcile(&key(), &mut state, Timestamp::now())
        .await
        .expect_err("collision");
    assert!(
        matches!(error, DeploymentError::HashCollision { count: 1, .. }),
        "{error}"
    );
    assert_eq!(
        stored_deployment(&registry).await["status"]["collisionCount"],
        1
    );

    settle(&controller, &registry).await;
    let ours: Vec<Value> = replica_sets(&registry)
        .await
        .into_iter()
        .filter(|rs| rs["metadata"]["ownerReferences"][0]["name"] == "web")
        .collect();
    assert_eq!(ours.len(), 1);
    assert_eq!(
        ours[0]["metadata"]["name"],
        format!(
            "web-{}",
            pod_template_hash(&stored["spec"]["template"], Some(1))
        )
    );
}

#[test]
fn replica_set_events_queue_their_deployment_and_gone_pods_queue_recreate_ones() {
    let mut state = State::default();
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "uid": "d-uid"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "strategy": {"type": "Recreate"}}});
    state.apply_deployment("default", "web", Some(deployment.clone()), 5);
    let now = Instant::now();
    assert_eq!(state.queue.pop(now), Some(key()));
    state.queue.done(&key());
    // The echo of a write already folded in changes nothing.
    state.apply_deployment("default", "web", Some(deployment), 5);
    assert_eq!(state.queue.pop(now), None);

    let owned = json!({"metadata": {"name": "web-1", "namespace": "default", "uid": "rs-uid",
        "labels": {"app": "web"}, "ownerReferences": [{"apiVersion": "apps/v1",
        "kind": "Deployment", "name": "web", "uid": "d-uid", "controller": true}]}});
    state.apply_replica_set("default", "web-1", Some(owned), 6);
    assert_eq!(state.queue.pop(now), Some(key()));
    state.queue.done(&key());
    let orphan = json!({"metadata": {"name": "loose", "namespace": "default", "uid": "l",
        "labels": {"app": "web"}}});
    state.apply_replica_set("default", "loose", Some(orphan), 7);
    assert_eq!(
        state.queue.pop(now),
        Some(key()),
        "an orphan it would adopt"
    );
    state.queue.done(&key());
    let stranger = json!({"metadata": {"name": "db", "namespace": "default", "uid": "s",
        "labels": {"app": "db"}}});
    state.apply_replica_set("default", "db", Some(stranger), 8);
    assert_eq!(state.queue.pop(now), None);

    let pod = json!({"metadata": {"name": "web-1-abc", "namespace": "default", "uid": "p",
        "labels": {"app": "web"}, "ownerReferences": [{"apiVersion": "apps/v1",
        "kind": "ReplicaSet", "name": "web-1", "uid": "rs-uid", "controller": true}]}});
    state.apply_pod("default", "web-1-abc", Some(&pod));
    assert_eq!(
        state.queue.pop(now),
        None,
        "a pod appearing changes nothing"
    );
    state.apply_pod("default", "web-1-abc", None);
    assert_eq!(
        state.queue.pop(now),
        Some(key()),
        "a pod gone wakes Recreate"
    );
}
