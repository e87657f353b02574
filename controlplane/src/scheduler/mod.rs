//! The scheduler: binds pending pods to nodes.
//!
//! The decision is pure: [`schedule`] (or [`Cluster::schedule`], which
//! keeps the per-node totals between pods) takes the pod, the nodes and the
//! pods already bound, filters the nodes ([`filters`]), scores the rest
//! ([`scoring`]) and names a node, or returns a [`FitError`] that reads
//! exactly like Kubernetes' FailedScheduling message. Nothing there touches
//! the store.
//!
//! [`runner::Scheduler`] is the thin loop around it: it follows pods and
//! nodes through watches, keeps a [`Cluster`] current, pops pods from the
//! [`queue::SchedulingQueue`], binds them (the only store write that places
//! a pod), and records the `PodScheduled` condition and events.

pub mod cluster;
pub mod filters;
pub mod fit_error;
pub mod quantity;
pub mod queue;
pub mod runner;
pub mod scoring;
pub mod view;

pub use cluster::Cluster;
pub use fit_error::FitError;
pub use runner::Scheduler;
pub use view::{NodeView, PodOnNode};

use k8s_openapi::api::core::v1::Pod;

/// The scheduler's name; pods naming another `schedulerName` are left
/// alone.
pub const SCHEDULER_NAME: &str = "default-scheduler";

/// Picks the node for `pod` among `nodes`, given the pods already `placed`.
pub fn schedule(pod: &Pod, nodes: &[NodeView], placed: &[PodOnNode]) -> Result<String, FitError> {
    Cluster::new(nodes, placed).schedule(pod)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Node;
    use serde_json::{json, Value};

    fn node(name: &str, extra: Value) -> NodeView {
        let mut object = json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {},
            "status": {
                "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        });
        json_patch::merge(&mut object, &extra);
        let node: Node = serde_json::from_value(object).expect("node");
        NodeView::from_node(&node)
    }

    fn nodes(names: &[&str]) -> Vec<NodeView> {
        names.iter().map(|n| node(n, json!({}))).collect()
    }

    fn pod(spec: Value) -> Pod {
        let mut object = json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "pod-uid"},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]},
        });
        json_patch::merge(&mut object, &json!({"spec": spec}));
        serde_json::from_value(object).expect("pod")
    }

    fn pod_with_requests(cpu: &str, memory: &str) -> Pod {
        pod(json!({"containers": [{"name": "c", "image": "nginx",
            "resources": {"requests": {"cpu": cpu, "memory": memory}}}]}))
    }

    fn owned_pod(owner_uid: &str) -> Pod {
        let mut p = pod(json!({}));
        p.metadata.owner_references = Some(vec![serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ReplicationController", "name": "web",
            "uid": owner_uid, "controller": true,
        }))
        .expect("ref")]);
        p
    }

    fn placed_on(node: &str, p: &Pod) -> PodOnNode {
        let mut bound = p.clone();
        bound.spec.as_mut().expect("spec").node_name = Some(node.into());
        PodOnNode::from_pod(&bound).expect("bound")
    }

    fn message(result: Result<String, FitError>) -> String {
        result.expect_err("should not fit").to_string()
    }

    #[test]
    fn a_pod_goes_to_a_ready_node() {
        assert_eq!(
            schedule(&pod(json!({})), &nodes(&["a"]), &[]),
            Ok("a".into())
        );
    }

    #[test]
    fn no_nodes_is_its_own_message() {
        assert_eq!(
            message(schedule(&pod(json!({})), &[], &[])),
            "no nodes available to schedule pods"
        );
    }

    #[test]
    fn not_ready_and_unreachable_nodes_are_tainted() {
        let not_ready = node(
            "a",
            json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
        );
        let unknown = node(
            "b",
            json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
        );
        let silent = node("c", json!({"status": {"conditions": null}}));
        assert_eq!(
            message(schedule(&pod(json!({})), &[not_ready.clone(), unknown.clone(), silent], &[])),
            "0/3 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }, \
             2 node(s) had untolerated taint {node.kubernetes.io/not-ready: }. \
             preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
        );
        // The defaulted NoExecute tolerations do not cover NoSchedule; an
        // explicit one does.
        let tolerant = pod(json!({"tolerations": [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists"}]}));
        assert_eq!(
            schedule(&tolerant, &[not_ready, unknown], &[]),
            Ok("a".into())
        );
    }

    #[test]
    fn cordoned_nodes_are_skipped_unless_tolerated() {
        let cordoned = node("a", json!({"spec": {"unschedulable": true}}));
        assert_eq!(
            message(schedule(&pod(json!({})), std::slice::from_ref(&cordoned), &[])),
            "0/1 nodes are available: 1 node(s) were unschedulable. \
             preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
        );
        let tolerant = pod(
            json!({"tolerations": [{"key": "node.kubernetes.io/unschedulable",
            "operator": "Exists", "effect": "NoSchedule"}]}),
        );
        assert_eq!(schedule(&tolerant, &[cordoned], &[]), Ok("a".into()));
    }

    #[test]
    fn requests_must_fit_what_is_left() {
        let big = pod_with_requests("1500m", "1Gi");
        let taken = placed_on("a", &pod_with_requests("1", "1Gi"));
        assert_eq!(
            schedule(&big, &nodes(&["a", "b"]), std::slice::from_ref(&taken)),
            Ok("b".into())
        );
        assert_eq!(
            message(schedule(&big, &nodes(&["a"]), &[taken])),
            "0/1 nodes are available: 1 Insufficient cpu. \
             preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
        );
        // More than any node has: preemption could not help.
        assert_eq!(
            message(schedule(
                &pod_with_requests("3", "8Gi"),
                &nodes(&["a"]),
                &[]
            )),
            "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory. \
             preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn limits_stand_in_for_missing_requests_and_init_containers_take_the_max() {
        let limited = pod(json!({"containers": [{"name": "c", "image": "x",
            "resources": {"limits": {"cpu": "3"}}}]}));
        assert!(schedule(&limited, &nodes(&["a"]), &[]).is_err());
        let init_heavy = pod(json!({
            "initContainers": [{"name": "i", "image": "x", "resources": {"requests": {"cpu": "2500m"}}}],
            "containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "100m"}}}],
        }));
        assert_eq!(
            message(schedule(&init_heavy, &nodes(&["a"]), &[])),
            "0/1 nodes are available: 1 Insufficient cpu. \
             preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn the_pod_count_is_a_resource() {
        let tiny = node("a", json!({"status": {"allocatable": {"pods": "1"}}}));
        let existing = placed_on("a", &pod(json!({})));
        assert_eq!(
            message(schedule(&pod(json!({})), &[tiny], &[existing])),
            "0/1 nodes are available: 1 Too many pods. \
             preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
        );
    }

    #[test]
    fn finished_pods_free_their_node() {
        let mut done = pod_with_requests("2", "1Gi");
        done.spec.as_mut().expect("spec").node_name = Some("a".into());
        done.status = Some(serde_json::from_value(json!({"phase": "Succeeded"})).expect("status"));
        assert!(PodOnNode::from_pod(&done).is_none());
        assert!(PodOnNode::from_pod(&pod(json!({}))).is_none(), "unbound");
    }

    #[test]
    fn node_selector_must_match_labels() {
        let mut all = nodes(&["a", "b"]);
        all.push(node("c", json!({"metadata": {"labels": {"disk": "ssd"}}})));
        let picky = pod(json!({"nodeSelector": {"disk": "ssd"}}));
        assert_eq!(schedule(&picky, &all, &[]), Ok("c".into()));
        let impossible = pod(json!({"nodeSelector": {"disk": "floppy"}}));
        assert_eq!(
            message(schedule(&impossible, &all, &[])),
            "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. \
             preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
        );
    }

    fn affinity(expressions: Value) -> Pod {
        pod(
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchExpressions": expressions}]}}}}),
        )
    }

    #[test]
    fn required_node_affinity_operators() {
        let all = vec![
            node(
                "small",
                json!({"metadata": {"labels": {"cores": "2", "zone": "z1"}}}),
            ),
            node(
                "large",
                json!({"metadata": {"labels": {"cores": "64", "zone": "z2"}}}),
            ),
            node("bare", json!({})),
        ];
        let cases = [
            (
                json!([{"key": "zone", "operator": "In", "values": ["z2", "z3"]}]),
                Some("large"),
            ),
            (
                json!([{"key": "zone", "operator": "NotIn", "values": ["z1", "z2"]}]),
                Some("bare"),
            ),
            (
                json!([{"key": "zone", "operator": "Exists"}, {"key": "cores", "operator": "Lt", "values": ["8"]}]),
                Some("small"),
            ),
            (
                json!([{"key": "cores", "operator": "Gt", "values": ["8"]}]),
                Some("large"),
            ),
            (
                json!([{"key": "cores", "operator": "Gt", "values": ["many"]}]),
                None,
            ),
            (
                json!([{"key": "zone", "operator": "DoesNotExist"}]),
                Some("bare"),
            ),
            (
                json!([{"key": "zone", "operator": "In", "values": ["z9"]}]),
                None,
            ),
        ];
        for (expressions, expected) in cases {
            let result = schedule(&affinity(expressions.clone()), &all, &[]);
            assert_eq!(result.ok().as_deref(), expected, "{expressions}");
        }
    }

    #[test]
    fn affinity_terms_are_ored_and_fields_select_names() {
        let all = nodes(&["a", "b", "c"]);
        let either = pod(
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["c"]}]},
                {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["b"]}]},
            ]}}}}),
        );
        assert_eq!(schedule(&either, &all, &[]), Ok("b".into()));
        let empty_term = pod(
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{}]}}}}),
        );
        assert!(
            schedule(&empty_term, &all, &[]).is_err(),
            "an empty term matches nothing"
        );
    }

    #[test]
    fn preferred_affinity_steers_placement() {
        let all = vec![
            node("a", json!({})),
            node("b", json!({"metadata": {"labels": {"gpu": "yes"}}})),
        ];
        let prefers = pod(
            json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution":
            [{"weight": 10, "preference": {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}}]}}}),
        );
        assert_eq!(schedule(&prefers, &all, &[]), Ok("b".into()));
    }

    #[test]
    fn taints_need_tolerations() {
        let tainted = node(
            "a",
            json!({"spec": {"taints": [
            {"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}}),
        );
        let evicting = node(
            "b",
            json!({"spec": {"taints": [
            {"key": "broken", "effect": "NoExecute"}]}}),
        );
        let soft = node(
            "c",
            json!({"spec": {"taints": [
            {"key": "cheap", "effect": "PreferNoSchedule"}]}}),
        );
        assert_eq!(
            schedule(
                &pod(json!({})),
                &[tainted.clone(), evicting.clone(), soft.clone()],
                &[]
            ),
            Ok("c".into()),
            "PreferNoSchedule only scores"
        );
        assert_eq!(
            message(schedule(
                &pod(json!({})),
                &[tainted.clone(), evicting.clone()],
                &[]
            )),
            "0/2 nodes are available: 1 node(s) had untolerated taint {broken: }, \
             1 node(s) had untolerated taint {dedicated: db}. \
             preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."
        );
        let equal = pod(
            json!({"tolerations": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}),
        );
        assert_eq!(
            schedule(&equal, std::slice::from_ref(&tainted), &[]),
            Ok("a".into())
        );
        let wrong_value = pod(json!({"tolerations": [{"key": "dedicated", "value": "web"}]}));
        assert!(schedule(&wrong_value, std::slice::from_ref(&tainted), &[]).is_err());
        let everything = pod(json!({"tolerations": [{"operator": "Exists"}]}));
        assert_eq!(schedule(&everything, &[evicting], &[]), Ok("b".into()));
        // The soft taint loses to an untainted node...
        assert_eq!(
            schedule(&pod(json!({})), &[soft.clone(), node("z", json!({}))], &[]),
            Ok("z".into())
        );
        // ...unless tolerated, when the name decides.
        let tolerates_soft = pod(json!({"tolerations": [{"key": "cheap", "operator": "Exists"}]}));
        assert_eq!(
            schedule(&tolerates_soft, &[soft, node("z", json!({}))], &[]),
            Ok("c".into())
        );
    }

    fn with_host_port(port: i32, ip: Option<&str>, protocol: &str) -> Pod {
        let mut spec = json!({"containers": [{"name": "c", "image": "x",
            "ports": [{"containerPort": 80, "hostPort": port, "protocol": protocol}]}]});
        if let Some(ip) = ip {
            spec["containers"][0]["ports"][0]["hostIP"] = json!(ip);
        }
        pod(spec)
    }

    #[test]
    fn host_ports_conflict_on_the_same_address_or_the_wildcard() {
        let taken = placed_on("a", &with_host_port(8080, Some("10.0.0.1"), "TCP"));
        let all = nodes(&["a"]);
        let conflict = "0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports. \
             preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.";
        for wanted in [
            with_host_port(8080, None, "TCP"),
            with_host_port(8080, Some("10.0.0.1"), "TCP"),
        ] {
            assert_eq!(
                message(schedule(&wanted, &all, std::slice::from_ref(&taken))),
                conflict
            );
        }
        for free in [
            with_host_port(8080, Some("10.0.0.2"), "TCP"),
            with_host_port(8080, None, "UDP"),
            with_host_port(8081, None, "TCP"),
        ] {
            assert_eq!(
                schedule(&free, &all, std::slice::from_ref(&taken)),
                Ok("a".into())
            );
        }
        // On the host network, container ports are host ports.
        let host_network = pod(
            json!({"hostNetwork": true, "containers": [{"name": "c", "image": "x",
            "ports": [{"containerPort": 8080}]}]}),
        );
        assert!(schedule(&host_network, &all, &[taken]).is_err());
    }

    #[test]
    fn replicas_of_one_controller_spread_across_nodes() {
        let all = nodes(&["a", "b", "c"]);
        let mut placed = Vec::new();
        let mut chosen = Vec::new();
        for _ in 0..6 {
            let replica = owned_pod("rc-1");
            let node = schedule(&replica, &all, &placed).expect("fits");
            placed.push(placed_on(&node, &replica));
            chosen.push(node);
        }
        chosen.sort();
        assert_eq!(chosen, ["a", "a", "b", "b", "c", "c"]);
    }

    #[test]
    fn spreading_outweighs_a_little_load() {
        // Node a is busier, but b already runs a replica of the same
        // controller; spreading wins over least-allocated.
        let all = nodes(&["a", "b"]);
        let placed = vec![
            placed_on("b", &owned_pod("rc-1")),
            placed_on("a", &pod_with_requests("200m", "256Mi")),
        ];
        assert_eq!(schedule(&owned_pod("rc-1"), &all, &placed), Ok("a".into()));
    }

    #[test]
    fn least_allocated_prefers_the_emptier_node() {
        let all = nodes(&["a", "b"]);
        let busy = placed_on("a", &pod_with_requests("1", "1Gi"));
        assert_eq!(schedule(&pod(json!({})), &all, &[busy]), Ok("b".into()));
        // Pods without requests count at the scoring defaults, so unrelated
        // pods without requests alternate instead of piling up.
        let idle = placed_on("a", &pod(json!({})));
        assert_eq!(schedule(&pod(json!({})), &all, &[idle]), Ok("b".into()));
    }

    #[test]
    fn balanced_allocation_prefers_even_use() {
        // Both nodes have the same free totals after placing, but on a the
        // pod evens out cpu and memory use.
        let all = vec![
            node(
                "a",
                json!({"status": {"allocatable": {"cpu": "4", "memory": "4Gi"}}}),
            ),
            node(
                "b",
                json!({"status": {"allocatable": {"cpu": "4", "memory": "4Gi"}}}),
            ),
        ];
        let placed = vec![
            placed_on("a", &pod_with_requests("0", "2Gi")),
            placed_on("b", &pod_with_requests("2", "0")),
        ];
        assert_eq!(
            schedule(&pod_with_requests("2", "10Mi"), &all, &placed),
            Ok("a".into())
        );
    }

    #[test]
    fn ties_break_by_name_and_the_answer_is_stable() {
        let all = nodes(&["c", "b", "a"]);
        for _ in 0..3 {
            assert_eq!(schedule(&pod(json!({})), &all, &[]), Ok("a".into()));
        }
    }

    #[test]
    fn a_node_reports_its_first_failing_filter_only() {
        // Cordoned and too small: only the cordon is reported, as the
        // filters stop at the first failure.
        let both = node(
            "a",
            json!({"spec": {"unschedulable": true},
            "status": {"allocatable": {"cpu": "1"}}}),
        );
        let error = schedule(&pod_with_requests("2", "0"), &[both], &[]).expect_err("no fit");
        assert_eq!(error.count(filters::REASON_UNSCHEDULABLE), 1);
        assert_eq!(error.count(filters::REASON_CPU), 0);
    }

    #[test]
    fn cluster_totals_follow_adds_and_removes() {
        let mut cluster = Cluster::new(&nodes(&["a"]), &[]);
        let footprint = placed_on("a", &with_host_port(80, None, "TCP"));
        cluster.add_pod(&footprint);
        assert!(cluster.schedule(&with_host_port(80, None, "TCP")).is_err());
        cluster.remove_pod(&footprint);
        assert_eq!(cluster.usage("a"), None);
        assert_eq!(
            cluster.schedule(&with_host_port(80, None, "TCP")),
            Ok("a".into())
        );
        // A pod seen before its node still counts once the node appears.
        let mut late = Cluster::default();
        late.add_pod(&placed_on("n", &pod_with_requests("2", "0")));
        late.upsert_node(node("n", json!({})));
        assert!(late.schedule(&pod_with_requests("1", "0")).is_err());
    }

    #[test]
    fn preemption_policy_never_is_reported() {
        let never = pod(json!({"preemptionPolicy": "Never",
            "containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "3"}}}]}));
        assert_eq!(
            message(schedule(&never, &nodes(&["a"]), &[])),
            "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never."
        );
    }
}
