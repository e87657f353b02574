#!/usr/bin/env bash
# Stops what scripts/cluster-up.sh started, in this order: the agent; the
# pods' sandboxes and containers (all of them on Skiff's own containerd,
# only this node's pods on a system containerd); what the pod network put
# on the host (`skiff-agent cleanup`: VXLAN device, pod bridge, CNI config,
# iptables chains); the control plane; Skiff's own containerd, if
# cluster-up started one, with what its pods leave behind (network
# namespace handles, cgroups under /skiff). A system containerd is left
# running.
# State is kept (.skiff/data, .skiff/agent, /var/lib/skiff/containerd), so
# the next cluster-up carries on where this stopped.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
STATE_DIR=$ROOT/.skiff
DATA_DIR=$STATE_DIR/data
PID_FILE=$STATE_DIR/controlplane.pid
AGENT_PID_FILE=$STATE_DIR/agent.pid
AGENT_CONTAINERD_FILE=$STATE_DIR/agent.containerd
AGENT_BIN=$ROOT/target/release/skiff-agent
NODE_NAME=${SKIFF_NODE_NAME:-$(tr '[:upper:]' '[:lower:]' </proc/sys/kernel/hostname)}
SKIFF_CONTAINERD_CONFIG=/etc/skiff/containerd.toml
SKIFF_CONTAINERD_SOCKET=/run/skiff/containerd/containerd.sock
SKIFF_CONTAINERD_PID_FILE=$STATE_DIR/containerd.pid
SKIFF_CONTAINERD_STATE=/run/skiff/containerd
STOP_TIMEOUT=15

say() { echo "cluster-down: $*"; }

# Whether the process in pid file $1 is alive and its command line has $2.
running_pid() {
    local pid_file=$1 needle=$2 pid
    [[ -f $pid_file ]] || return 1
    pid=$(cat "$pid_file")
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$needle" || return 1
    echo "$pid"
}

# SIGTERM, then SIGKILL after STOP_TIMEOUT; removes the pid file.
stop() {
    local what=$1 pid_file=$2 needle=$3 pid
    if ! pid=$(running_pid "$pid_file" "$needle"); then
        say "$what: not running"
        rm -f "$pid_file"
        return
    fi
    say "$what: stopping (pid $pid)"
    kill -TERM "$pid"
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            say "$what: still running after ${STOP_TIMEOUT}s, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    rm -f "$pid_file"
}

kubectl_bin() {
    if command -v kubectl >/dev/null; then
        command -v kubectl
    else
        echo "$ROOT/target/tools/kubectl-1.20/usr/bin/kubectl"
    fi
}

containerd_socket=$(cat "$AGENT_CONTAINERD_FILE" 2>/dev/null || true)

# On a shared (system) containerd only this node's pods are removed; their
# UIDs come from the control plane while it still runs.
uid_args=()
if [[ -n $containerd_socket && $containerd_socket != "$SKIFF_CONTAINERD_SOCKET" ]] &&
    running_pid "$PID_FILE" skiff-controlplane >/dev/null; then
    uids=$(KUBECONFIG=$DATA_DIR/admin.kubeconfig "$(kubectl_bin)" get pods --all-namespaces \
        --field-selector "spec.nodeName=$NODE_NAME" -o 'jsonpath={.items[*].metadata.uid}' 2>/dev/null || true)
    for uid in $uids; do
        uid_args+=(--uid "$uid")
    done
fi

stop agent "$AGENT_PID_FILE" skiff-agent

if [[ -n $containerd_socket && -S $containerd_socket && -x $AGENT_BIN ]]; then
    if [[ $containerd_socket == "$SKIFF_CONTAINERD_SOCKET" ]]; then
        say "pods: removing every pod sandbox from Skiff's containerd"
        "$AGENT_BIN" remove-pods --containerd "$containerd_socket" || say "pods: some could not be removed" >&2
    elif [[ ${#uid_args[@]} -gt 0 ]]; then
        say "pods: removing node $NODE_NAME's pods from $containerd_socket"
        "$AGENT_BIN" remove-pods --containerd "$containerd_socket" "${uid_args[@]}" ||
            say "pods: some could not be removed" >&2
    else
        say "pods: none known on $containerd_socket"
    fi
    say "pod network: removing what it put on this host"
    "$AGENT_BIN" cleanup --containerd "$containerd_socket" || say "pod network: cleanup failed" >&2
fi
rm -f "$AGENT_CONTAINERD_FILE"

stop "control plane" "$PID_FILE" skiff-controlplane

if running_pid "$SKIFF_CONTAINERD_PID_FILE" "$SKIFF_CONTAINERD_CONFIG" >/dev/null; then
    stop containerd "$SKIFF_CONTAINERD_PID_FILE" "$SKIFF_CONTAINERD_CONFIG"
    # Shims of containers that could not be removed outlive containerd.
    for pid in $(pgrep -f -- "-address $SKIFF_CONTAINERD_SOCKET" || true); do
        say "containerd: stopping leftover shim (pid $pid)"
        kill -KILL "$pid" 2>/dev/null || true
    done
else
    rm -f "$SKIFF_CONTAINERD_PID_FILE"
fi
# What Skiff's containerd (now stopped) may leave: network namespace handles
# of sandboxes it could not tear down, and the pods' empty cgroups (deepest
# first; rmdir removes only empty ones).
if [[ -d $SKIFF_CONTAINERD_STATE ]]; then
    for mount_point in $(awk -v dir="$SKIFF_CONTAINERD_STATE/" 'index($5, dir) == 1 { print $5 }' /proc/self/mountinfo | sort -r); do
        umount "$mount_point" 2>/dev/null || umount -l "$mount_point" 2>/dev/null || true
    done
    for hierarchy in /sys/fs/cgroup /sys/fs/cgroup/*; do
        [[ -d $hierarchy/skiff ]] || continue
        find "$hierarchy/skiff" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
fi
say "stopped (state kept in .skiff/ and /var/lib/skiff/containerd)"
