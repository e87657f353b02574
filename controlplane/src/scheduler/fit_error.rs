//! Why a pod fits nowhere, rendered exactly as Kubernetes renders it.
//!
//! Kubernetes' `FitError` message is `0/N nodes are available: ` and a
//! histogram of per-node reasons (`<count> <reason>`, sorted as strings,
//! joined by `, `, ended by `.`), followed by what preemption concluded,
//! itself a histogram in the same form:
//!
//! ```text
//! 0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling.
//! ```
//!
//! Skiff does not preempt. A node rejected for a reason that evicting pods
//! could fix (resources, ports) is reported as Kubernetes reports a node
//! where it found no pod to evict; every other node as one where
//! preemption cannot help.

use std::collections::BTreeMap;
use std::fmt;

use super::filters::NodeFailure;

const PREEMPTION_NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
const PREEMPTION_NO_VICTIMS: &str = "No preemption victims found for incoming pod";
const PREEMPTION_NEVER: &str = "not eligible due to preemptionPolicy=Never.";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FitError {
    /// There are no nodes at all.
    #[error("no nodes available to schedule pods")]
    NoNodes,
    /// Every node was filtered out.
    #[error("{}", render(.failures, *.never_preempts))]
    NoFit {
        /// Each node's reasons, by node name.
        failures: BTreeMap<String, NodeFailure>,
        /// The pod has `preemptionPolicy: Never`.
        never_preempts: bool,
    },
}

impl FitError {
    /// How many nodes rejected the pod for `reason`.
    pub fn count(&self, reason: &str) -> usize {
        match self {
            FitError::NoNodes => 0,
            FitError::NoFit { failures, .. } => failures
                .values()
                .filter(|f| f.reasons.iter().any(|r| r == reason))
                .count(),
        }
    }
}

/// `<count> <reason>` entries, sorted as Go's `sort.Strings` sorts them.
fn histogram<'a>(reasons: impl Iterator<Item = &'a str>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for reason in reasons {
        *counts.entry(reason).or_default() += 1;
    }
    let mut entries: Vec<String> = counts
        .into_iter()
        .map(|(reason, count)| format!("{count} {reason}"))
        .collect();
    entries.sort();
    entries.join(", ")
}

fn render(failures: &BTreeMap<String, NodeFailure>, never_preempts: bool) -> String {
    let total = failures.len();
    let filtered = histogram(
        failures
            .values()
            .flat_map(|failure| failure.reasons.iter().map(String::as_str)),
    );
    let preemption = if never_preempts {
        PREEMPTION_NEVER.to_owned()
    } else {
        let outcomes = histogram(failures.values().map(|failure| {
            if failure.resolvable {
                PREEMPTION_NO_VICTIMS
            } else {
                PREEMPTION_NOT_HELPFUL
            }
        }));
        format!("0/{total} nodes are available: {outcomes}.")
    };
    format!("0/{total} nodes are available: {filtered}. preemption: {preemption}")
}

impl fmt::Display for NodeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reasons.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(reasons: &[&str], resolvable: bool) -> NodeFailure {
        NodeFailure {
            reasons: reasons.iter().map(|r| r.to_string()).collect(),
            resolvable,
        }
    }

    #[test]
    fn renders_like_kubernetes() {
        let error = FitError::NoFit {
            failures: [
                ("a".to_owned(), failure(&["Insufficient cpu"], true)),
                (
                    "b".to_owned(),
                    failure(
                        &["node(s) didn't match Pod's node affinity/selector"],
                        false,
                    ),
                ),
                (
                    "c".to_owned(),
                    failure(
                        &["node(s) didn't match Pod's node affinity/selector"],
                        false,
                    ),
                ),
            ]
            .into(),
            never_preempts: false,
        };
        assert_eq!(
            error.to_string(),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match Pod's node affinity/selector. \
             preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn every_reason_of_a_node_is_counted_and_entries_sort_as_strings() {
        let mut failures = BTreeMap::new();
        for i in 0..10 {
            failures.insert(format!("n{i}"), failure(&["Insufficient memory"], true));
        }
        failures.insert(
            "x".into(),
            failure(&["Insufficient cpu", "Insufficient memory"], true),
        );
        failures.insert("y".into(), failure(&["Insufficient cpu"], false));
        let error = FitError::NoFit {
            failures,
            never_preempts: false,
        };
        // "11 ..." sorts before "2 ..." as a string, as in Go.
        assert_eq!(
            error.to_string(),
            "0/12 nodes are available: 11 Insufficient memory, 2 Insufficient cpu. \
             preemption: 0/12 nodes are available: 1 Preemption is not helpful for scheduling, 11 No preemption victims found for incoming pod."
        );
        assert_eq!(error.count("Insufficient cpu"), 2);
    }

    #[test]
    fn a_pod_that_never_preempts_says_so() {
        let error = FitError::NoFit {
            failures: [("a".to_owned(), failure(&["Too many pods"], true))].into(),
            never_preempts: true,
        };
        assert_eq!(
            error.to_string(),
            "0/1 nodes are available: 1 Too many pods. preemption: not eligible due to preemptionPolicy=Never."
        );
    }

    #[test]
    fn no_nodes_at_all() {
        assert_eq!(
            FitError::NoNodes.to_string(),
            "no nodes available to schedule pods"
        );
    }
}
