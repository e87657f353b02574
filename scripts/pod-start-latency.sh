#!/usr/bin/env bash
# Measures pod start latency: from running `kubectl create` to the pod's
# Running line in an open `kubectl get pods --watch`, on one node with a
# private containerd and a locally imported image (no pull). It runs the
# pod runtime end-to-end test with N pods created one after another
# (default 20), then B pods created at once (default 30; the time until all
# run, the agent's RSS, and its CPU use while idle with them), and prints
# the timing lines. Needs root and what scripts/install-deps.sh installs.
#
# Usage: scripts/pod-start-latency.sh [N] [B]
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
COUNT=${1:-20}
BURST=${2:-30}

cargo build -p skiff-agent -p skiff-controlplane >&2
SKIFF_E2E_POD_STARTS=$COUNT SKIFF_E2E_BURST=$BURST cargo test -p skiff-e2e --test pod_runtime -- --nocapture 2>&1 |
    grep -E '^timing:|^test result' ||
    { echo "the measurement failed; run: cargo test -p skiff-e2e --test pod_runtime" >&2; exit 1; }
