#!/usr/bin/env bash
# Measures the pod network on three simulated nodes (network namespaces on
# one underlay bridge, each with its own containerd and agent):
#
# - peer propagation: a Node with a pod subnet and an overlay endpoint is
#   created through the API, as a joining node's registration makes it,
#   N times (default 100); the time until the route to its subnet is on
#   every real node, polled with `ip route` in each namespace (p50/p99/max,
#   from the API's answer and including the write);
# - TCP throughput with iperf3: pod on node A to pod on node B over the
#   VXLAN overlay, against node A to node B on the underlay, same run.
#
# Needs root, iperf3 and what scripts/install-deps.sh installs. With
# --release (or SKIFF_PROFILE=release) the agent, control plane and CNI
# plugin under test are release builds.
#
# Usage: scripts/pod-network-bench.sh [--release] [N]
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PROFILE=${SKIFF_PROFILE:-debug}
if [[ ${1:-} == --release ]]; then
    PROFILE=release
    shift
fi
ROUNDS=${1:-100}
command -v iperf3 >/dev/null || { echo "pod-network-bench: needs iperf3 (apt-get install iperf3)" >&2; exit 2; }

case $PROFILE in
release)
    cargo build --release -p skiff-agent -p skiff-controlplane -p skiff-cni >&2
    export SKIFF_AGENT_BIN=$PWD/target/release/skiff-agent
    export SKIFF_CONTROLPLANE_BIN=$PWD/target/release/skiff-controlplane
    export SKIFF_CNI_BIN=$PWD/target/release/skiff-cni
    ;;
debug)
    cargo build -p skiff-agent -p skiff-controlplane -p skiff-cni >&2
    ;;
*)
    echo "pod-network-bench: SKIFF_PROFILE must be debug or release, not $PROFILE" >&2
    exit 2
    ;;
esac
echo "pod-network-bench: $PROFILE binaries, $ROUNDS peer changes" >&2
SKIFF_E2E_NET_BENCH=$ROUNDS cargo test -p skiff-e2e --test pod_network pod_network_figures -- --nocapture 2>&1 |
    grep -E '^timing:|^test result' ||
    { echo "the measurement failed; run: SKIFF_E2E_NET_BENCH=$ROUNDS cargo test -p skiff-e2e --test pod_network pod_network_figures -- --nocapture" >&2; exit 1; }
