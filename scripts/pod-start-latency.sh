#!/usr/bin/env bash
# Measures pod start latency: from running `kubectl create` to the pod's
# Running line in an open `kubectl get pods --watch`, on one node with a
# private containerd and a locally imported image (no pull). It runs the
# pod runtime end-to-end test with N pods created one after another
# (default 20), then B pods created at once (default 30; the time until all
# run, the agent's RSS, and its CPU use while idle with them), and prints
# the timing lines. Needs root and what scripts/install-deps.sh installs.
#
# With --release (or SKIFF_PROFILE=release) the agent and the control plane
# under test are release builds (target/release/); the test harness itself
# stays a debug build either way, since it only drives them.
#
# Usage: scripts/pod-start-latency.sh [--release] [N] [B]
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PROFILE=${SKIFF_PROFILE:-debug}
if [[ ${1:-} == --release ]]; then
    PROFILE=release
    shift
fi
COUNT=${1:-20}
BURST=${2:-30}

case $PROFILE in
release)
    cargo build --release -p skiff-agent -p skiff-controlplane >&2
    # The harness finds the binaries under test through these variables.
    export SKIFF_AGENT_BIN=$PWD/target/release/skiff-agent
    export SKIFF_CONTROLPLANE_BIN=$PWD/target/release/skiff-controlplane
    ;;
debug)
    cargo build -p skiff-agent -p skiff-controlplane >&2
    ;;
*)
    echo "pod-start-latency: SKIFF_PROFILE must be debug or release, not $PROFILE" >&2
    exit 2
    ;;
esac
echo "pod-start-latency: $PROFILE binaries, $COUNT pods one after another, then $BURST at once" >&2
SKIFF_E2E_POD_STARTS=$COUNT SKIFF_E2E_BURST=$BURST cargo test -p skiff-e2e --test pod_runtime -- --nocapture 2>&1 |
    grep -E '^timing:|^test result' ||
    { echo "the measurement failed; run: cargo test -p skiff-e2e --test pod_runtime" >&2; exit 1; }
