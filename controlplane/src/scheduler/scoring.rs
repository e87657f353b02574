//! Scoring: among the nodes a pod fits on, which is best.
//!
//! Each score is 0–100 and weighted as in Kubernetes' default profile:
//!
//! | score | weight | prefers |
//! |---|---|---|
//! | taint toleration | 3 | fewer untolerated PreferNoSchedule taints |
//! | node affinity | 2 | more matching preferred terms (by weight) |
//! | spreading | 2 | fewer pods of the same controller |
//! | least allocated | 1 | more free cpu and memory after placing |
//! | balanced allocation | 1 | cpu and memory used in equal shares |
//!
//! Spreading stands in for Kubernetes' default topology spreading across
//! hostnames: replicas of one ReplicationController or ReplicaSet go to
//! different nodes while there are any. Scores are kept as floats rather
//! than rounded to integers, so that a small pod on a large node still
//! breaks a tie; a remaining tie goes to the node whose name sorts first,
//! which keeps placement deterministic.

use super::filters::{self, Usage};
use super::view::{NodeView, PodRequest};

const MAX_SCORE: f64 = 100.0;

const WEIGHT_TAINTS: f64 = 3.0;
const WEIGHT_AFFINITY: f64 = 2.0;
const WEIGHT_SPREAD: f64 = 2.0;
const WEIGHT_LEAST_ALLOCATED: f64 = 1.0;
const WEIGHT_BALANCED: f64 = 1.0;

/// A node that passed the filters, with what is already on it.
pub struct Candidate<'a> {
    pub node: &'a NodeView,
    pub usage: &'a Usage,
}

fn fraction(requested: i64, allocatable: i64) -> f64 {
    if allocatable <= 0 {
        1.0
    } else {
        (requested as f64 / allocatable as f64).clamp(0.0, 1.0)
    }
}

/// Least allocated: the mean free share of cpu and memory once the pod is
/// placed, counting pods without requests at the scoring defaults.
fn least_allocated(pod: &PodRequest, candidate: &Candidate) -> f64 {
    let after = candidate.usage.nonzero.plus(pod.nonzero);
    let allocatable = candidate.node.allocatable;
    let cpu = 1.0 - fraction(after.milli_cpu, allocatable.milli_cpu);
    let memory = 1.0 - fraction(after.memory, allocatable.memory);
    (cpu + memory) / 2.0 * MAX_SCORE
}

/// Balanced allocation: one minus the standard deviation of the cpu and
/// memory shares once the pod is placed (for two values, half their
/// difference).
fn balanced(pod: &PodRequest, candidate: &Candidate) -> f64 {
    let after = candidate.usage.requested.plus(pod.requests);
    let allocatable = candidate.node.allocatable;
    let cpu = fraction(after.milli_cpu, allocatable.milli_cpu);
    let memory = fraction(after.memory, allocatable.memory);
    (1.0 - (cpu - memory).abs() / 2.0) * MAX_SCORE
}

/// Raw scores normalised so the best is 100 (or, `reverse`, the lowest).
fn normalize(raw: &[f64], reverse: bool) -> Vec<f64> {
    let max = raw.iter().copied().fold(0.0, f64::max);
    raw.iter()
        .map(|&value| {
            if max <= 0.0 {
                if reverse {
                    MAX_SCORE
                } else {
                    0.0
                }
            } else if reverse {
                MAX_SCORE - value * MAX_SCORE / max
            } else {
                value * MAX_SCORE / max
            }
        })
        .collect()
}

/// The weighted total of each candidate, in the order given.
pub fn scores(pod: &PodRequest, candidates: &[Candidate]) -> Vec<f64> {
    let taints: Vec<f64> = candidates
        .iter()
        .map(|c| filters::untolerated_preferences(&pod.tolerations, &c.node.taints) as f64)
        .collect();
    let affinity: Vec<f64> = candidates
        .iter()
        .map(|c| {
            pod.preferred_terms
                .iter()
                .filter(|(_, term)| filters::term_matches(term, c.node))
                .map(|(weight, _)| f64::from(*weight))
                .sum()
        })
        .collect();
    // Spreading counts the pod's siblings on each node and, as Kubernetes'
    // selector spreading did, scores a node by how far it is below the
    // most crowded one.
    let siblings: Vec<f64> = candidates
        .iter()
        .map(|c| {
            pod.controller_uid
                .as_ref()
                .and_then(|uid| c.usage.by_controller.get(uid))
                .map_or(0.0, |count| f64::from(*count))
        })
        .collect();
    let taints = normalize(&taints, true);
    let affinity = normalize(&affinity, false);
    let spread = normalize(&siblings, true);
    candidates
        .iter()
        .enumerate()
        .map(|(i, candidate)| {
            WEIGHT_TAINTS * taints[i]
                + WEIGHT_AFFINITY * affinity[i]
                + WEIGHT_SPREAD * spread[i]
                + WEIGHT_LEAST_ALLOCATED * least_allocated(pod, candidate)
                + WEIGHT_BALANCED * balanced(pod, candidate)
        })
        .collect()
}

/// The best candidate: highest score, then the first name.
pub fn best<'a>(pod: &PodRequest, candidates: &[Candidate<'a>]) -> Option<&'a NodeView> {
    let totals = scores(pod, candidates);
    let mut best: Option<(f64, &'a NodeView)> = None;
    for (candidate, total) in candidates.iter().zip(totals) {
        let better = match best {
            None => true,
            Some((score, node)) => {
                total > score || (total == score && candidate.node.name < node.name)
            }
        };
        if better {
            best = Some((total, candidate.node));
        }
    }
    best.map(|(_, node)| node)
}
