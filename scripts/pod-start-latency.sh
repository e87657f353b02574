#!/usr/bin/env bash
# Measures pod start latency: from running `kubectl create` to the pod's
# Running line in an open `kubectl get pods --watch`, on one node with a
# private containerd and a locally imported image (no pull). It runs the
# pod runtime end-to-end test with N extra pods created one after another
# (default 20) and prints its timing lines. Needs root and what
# scripts/install-deps.sh installs.
#
# Usage: scripts/pod-start-latency.sh [N]
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
COUNT=${1:-20}

cargo build -p skiff-agent -p skiff-controlplane >&2
SKIFF_E2E_POD_STARTS=$COUNT cargo test -p skiff-e2e --test pod_runtime -- --nocapture 2>&1 |
    grep -E '^timing:|^test result' ||
    { echo "the measurement failed; run: cargo test -p skiff-e2e --test pod_runtime" >&2; exit 1; }
