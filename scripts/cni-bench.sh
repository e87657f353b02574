#!/usr/bin/env bash
# CNI ADD latency: skiff-cni side by side with Debian's reference plugins
# (bridge + host-local from containernetworking-plugins, in /usr/lib/cni),
# same run, same conflist shape (bridge, gateway, MTU 1450, hairpin).
#
# In a throwaway "node" network namespace and one "pod" namespace it runs N
# ADD+DEL cycles (default 100), alternating the two plugins, after a few
# warm-up cycles that are not counted (the first ADD creates the bridge).
# Each ADD is timed from just before the plugin is executed to its exit,
# so process start-up is included, as it is for a runtime. Both IPAM data
# dirs are on disk under target/ (skiff-cni fsyncs its reservations;
# host-local does not), not on a tmpfs.
#
# Needs root and what scripts/install-deps.sh installs.
# Usage: scripts/cni-bench.sh [N]
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

N=${1:-100}
WARMUP=5
REF_DIR=/usr/lib/cni

if [[ $(id -u) -ne 0 ]]; then
    echo "cni-bench: must run as root (network namespaces)" >&2
    exit 1
fi
if [[ ! -x $REF_DIR/bridge || ! -x $REF_DIR/host-local ]]; then
    echo "cni-bench: $REF_DIR/bridge and host-local are missing; run scripts/install-deps.sh" >&2
    exit 1
fi

cargo build --release -q -p skiff-cni
SKIFF=$PWD/target/release/skiff-cni

NODE=skcnibench-node-$$
POD=skcnibench-pod-$$
WORK=$(mktemp -d "$PWD/target/cni-bench.XXXXXX")
cleanup() {
    ip netns del "$POD" 2>/dev/null || true
    ip netns del "$NODE" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add "$NODE"
ip netns add "$POD"

cat >"$WORK/skiff.json" <<EOF
{"cniVersion":"1.0.0","name":"skiffbench","type":"skiff-cni","bridge":"skiff0",
 "subnet":"10.244.1.0/24","gateway":"10.244.1.1","mtu":1450,"hairpinMode":true,
 "dataDir":"$WORK/skiff-ipam"}
EOF
cat >"$WORK/ref.json" <<EOF
{"cniVersion":"1.0.0","name":"refbench","type":"bridge","bridge":"refbr0",
 "isGateway":true,"mtu":1450,"hairpinMode":true,
 "ipam":{"type":"host-local","subnet":"10.245.1.0/24","dataDir":"$WORK/ref-ipam"}}
EOF

# The loop runs inside the node namespace, so each plugin is a direct
# child of this shell; $EPOCHREALTIME costs no fork.
ip netns exec "$NODE" bash -s -- "$SKIFF" "$REF_DIR/bridge" "$REF_DIR" "/run/netns/$POD" \
    "$WORK" "$N" "$WARMUP" <<'LOOP'
set -euo pipefail
skiff=$1 ref=$2 cni_path=$3 netns=$4 work=$5 n=$6 warmup=$7
export CNI_IFNAME=eth0 CNI_NETNS=$netns CNI_PATH=$cni_path

# One ADD+DEL cycle of a plugin; appends the ADD's microseconds to a file.
cycle() { # plugin config id timings-file
    local start end
    start=$EPOCHREALTIME
    if ! CNI_COMMAND=ADD CNI_CONTAINERID=$3 "$1" <"$2" >"$work/out" 2>&1; then
        echo "cni-bench: ADD with $1 failed: $(cat "$work/out")" >&2
        exit 1
    fi
    end=$EPOCHREALTIME
    if ! CNI_COMMAND=DEL CNI_CONTAINERID=$3 "$1" <"$2" >"$work/out" 2>&1; then
        echo "cni-bench: DEL with $1 failed: $(cat "$work/out")" >&2
        exit 1
    fi
    if [[ -n $4 ]]; then
        echo $(( (${end/./} - ${start/./}) )) >>"$4"
    fi
}

for ((i = 0; i < warmup; i++)); do
    cycle "$skiff" "$work/skiff.json" "warm-skiff-$i" ""
    cycle "$ref" "$work/ref.json" "warm-ref-$i" ""
done
for ((i = 0; i < n; i++)); do
    cycle "$skiff" "$work/skiff.json" "skiff-$i" "$work/skiff.us"
    cycle "$ref" "$work/ref.json" "ref-$i" "$work/ref.us"
done
LOOP

python3 - "$WORK/skiff.us" "$WORK/ref.us" "$N" <<'REPORT'
import sys

def load(path):
    return sorted(int(line) / 1000.0 for line in open(path))

def pct(values, p):
    index = min(len(values) - 1, max(0, round(p / 100 * len(values) + 0.5) - 1))
    return values[index]

skiff, ref, n = load(sys.argv[1]), load(sys.argv[2]), sys.argv[3]
print(f"CNI ADD latency, {n} ADD+DEL cycles each, alternating (ms):")
for name, values in (("skiff-cni", skiff), ("bridge+host-local", ref)):
    print(f"  {name:<18} p50 {pct(values, 50):7.2f}  p99 {pct(values, 99):7.2f}  min {values[0]:7.2f}  max {values[-1]:7.2f}")
print(f"  ratio skiff-cni/reference: p50 {pct(skiff, 50) / pct(ref, 50):.2f}  p99 {pct(skiff, 99) / pct(ref, 99):.2f}")
REPORT
