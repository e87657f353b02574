#!/usr/bin/env bash
# Brings up a single-node Skiff cluster on this machine (Debian 12, as root):
#
# 1. installs what is missing (scripts/install-deps.sh);
# 2. builds skiff-controlplane and skiff-agent (release);
# 3. uses the system containerd if its socket answers; otherwise starts one
#    of Skiff's own, with its config in /etc/skiff/containerd.toml (never
#    /etc/containerd/config.toml), data in /var/lib/skiff/containerd and
#    sockets in /run/skiff/containerd;
# 4. puts Skiff's CNI plugin (skiff-cni) into that containerd's CNI bin dir
#    (install_pod_network_plugin);
# 5. starts the control plane (state in .skiff/data), then an agent on this
#    host, joined with a fresh token (credentials in .skiff/agent), which
#    imports its own pause image as containerd's sandbox image and writes
#    the pod network's CNI config into containerd's CNI conf dir;
# 6. waits until the node is Ready and prints how to point kubectl at it.
#
# Running it again starts only what is not running. scripts/cluster-down.sh
# stops it all.
#
# Environment: SKIFF_PORT (default 6443) is the API server's port,
# SKIFF_NODE_API_PORT (default 6444) the agents' port, SKIFF_NODE_NAME
# (default: the host name) the node's name.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
STATE_DIR=$ROOT/.skiff
DATA_DIR=$STATE_DIR/data
LOG_FILE=$STATE_DIR/controlplane.log
PID_FILE=$STATE_DIR/controlplane.pid
AGENT_DIR=$STATE_DIR/agent
AGENT_LOG=$STATE_DIR/agent.log
AGENT_PID_FILE=$STATE_DIR/agent.pid
AGENT_CONTAINERD_FILE=$STATE_DIR/agent.containerd
PORT=${SKIFF_PORT:-6443}
NODE_API_PORT=${SKIFF_NODE_API_PORT:-6444}
NODE_NAME=${SKIFF_NODE_NAME:-$(tr '[:upper:]' '[:lower:]' </proc/sys/kernel/hostname)}
BIN=$ROOT/target/release/skiff-controlplane
AGENT_BIN=$ROOT/target/release/skiff-agent
CNI_PLUGIN_BIN=$ROOT/target/release/skiff-cni
READY_TIMEOUT=60
NODE_READY_TIMEOUT=120

# The system containerd, as Debian installs it.
SYSTEM_CONTAINERD_SOCKET=/run/containerd/containerd.sock
SYSTEM_CONTAINERD_CONFIG=/etc/containerd/config.toml
# Skiff's own containerd, when the system one is not running.
SKIFF_CONTAINERD_CONFIG=/etc/skiff/containerd.toml
SKIFF_CONTAINERD_ROOT=/var/lib/skiff/containerd
SKIFF_CONTAINERD_STATE=/run/skiff/containerd
SKIFF_CONTAINERD_SOCKET=$SKIFF_CONTAINERD_STATE/containerd.sock
SKIFF_CNI_CONF_DIR=/etc/skiff/cni/net.d
SKIFF_CNI_BIN_DIR=/var/lib/skiff/cni/bin
SKIFF_CONTAINERD_LOG=$STATE_DIR/containerd.log
SKIFF_CONTAINERD_PID_FILE=$STATE_DIR/containerd.pid
# The sandbox image Skiff's containerd names; the agent imports its own
# pause image under it.
SANDBOX_IMAGE=skiff.local/pause:3.9
# Where Debian's containernetworking-plugins puts the reference plugins
# (containerd itself runs `loopback` from the CNI bin dir).
DEBIAN_CNI_BIN_DIR=/usr/lib/cni

say() { echo "cluster-up: $*"; }

# Whether the process in pid file $1 is alive and its command line has $2
# (a pid file alone can be stale: machine rebooted, pid reused).
running_pid() {
    local pid_file=$1 needle=$2 pid
    [[ -f $pid_file ]] || return 1
    pid=$(cat "$pid_file")
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$needle" || return 1
    echo "$pid"
}

# Whether a containerd answers on socket $1.
containerd_answers() {
    [[ -S $1 ]] && ctr --address "$1" version >/dev/null 2>&1
}

kubectl_bin() {
    if command -v kubectl >/dev/null; then
        command -v kubectl
    else
        echo "$ROOT/target/tools/kubectl-1.20/usr/bin/kubectl"
    fi
}

# The CNI bin dir of the system containerd: from its config, else
# containerd's default.
system_cni_bin_dir() {
    local dir
    dir=$(containerd --config "$SYSTEM_CONTAINERD_CONFIG" config dump 2>/dev/null |
        sed -n 's/^ *bin_dir = "\(.*\)"$/\1/p' | head -n 1)
    echo "${dir:-/opt/cni/bin}"
}

# The pod network: the agent writes its CNI config (10-skiff.conflist) into
# containerd's conf dir by itself; containerd then runs skiff-cni from its
# bin dir, which this puts there (replaced only when it differs).
install_pod_network_plugin() {
    local bin_dir=$1
    mkdir -p "$bin_dir"
    if cmp -s "$CNI_PLUGIN_BIN" "$bin_dir/skiff-cni"; then
        say "CNI: skiff-cni in $bin_dir is up to date"
        return
    fi
    say "CNI: installing skiff-cni into $bin_dir"
    cp "$CNI_PLUGIN_BIN" "$bin_dir/.skiff-cni.new"
    mv "$bin_dir/.skiff-cni.new" "$bin_dir/skiff-cni"
}

# Skiff's containerd gets a CNI bin dir of its own: Debian's reference
# plugins linked in, next to skiff-cni.
prepare_skiff_cni_bin_dir() {
    mkdir -p "$SKIFF_CNI_BIN_DIR"
    local plugin
    for plugin in "$DEBIAN_CNI_BIN_DIR"/*; do
        ln -sfn "$plugin" "$SKIFF_CNI_BIN_DIR/$(basename "$plugin")"
    done
}

write_skiff_containerd_config() {
    # The CRI plugin's AppArmor profile needs AppArmor in the kernel.
    local apparmor=false
    if [[ $(cat /sys/module/apparmor/parameters/enabled 2>/dev/null) != Y ]]; then
        apparmor=true
    fi
    mkdir -p "$(dirname "$SKIFF_CONTAINERD_CONFIG")"
    cat >"$SKIFF_CONTAINERD_CONFIG" <<CONFIG
# Skiff's containerd, started by scripts/cluster-up.sh when no system
# containerd runs. Rewritten by every start; edit the script, not this file.
version = 2
root = "$SKIFF_CONTAINERD_ROOT"
state = "$SKIFF_CONTAINERD_STATE"
required_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$SKIFF_CONTAINERD_SOCKET"

[ttrpc]
  address = "$SKIFF_CONTAINERD_SOCKET.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "$SKIFF_CONTAINERD_ROOT/opt"

[plugins."io.containerd.grpc.v1.cri"]
  # skiff-agent imports its own pause image under this name: no pull.
  sandbox_image = "$SANDBOX_IMAGE"
  # Without CAP_SYS_RESOURCE (as in many VMs and containers) every
  # RunPodSandbox fails otherwise: "can't get final child's PID from pipe".
  restrict_oom_score_adj = true
  systemd_cgroup = false
  netns_mounts_under_state_dir = true
  disable_apparmor = $apparmor
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "$SKIFF_CONTAINERD_STATE/runc"
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$SKIFF_CNI_BIN_DIR"
    conf_dir = "$SKIFF_CNI_CONF_DIR"
    max_conf_num = 1
CONFIG
}

# Sets CONTAINERD_SOCKET and CNI_BIN_DIR to the containerd in use,
# starting Skiff's own if none answers.
ensure_containerd() {
    local pid
    if pid=$(running_pid "$SKIFF_CONTAINERD_PID_FILE" "$SKIFF_CONTAINERD_CONFIG") &&
        containerd_answers "$SKIFF_CONTAINERD_SOCKET"; then
        say "containerd: Skiff's own is running (pid $pid, $SKIFF_CONTAINERD_SOCKET)"
        CONTAINERD_SOCKET=$SKIFF_CONTAINERD_SOCKET
        CNI_BIN_DIR=$SKIFF_CNI_BIN_DIR
        return
    fi
    if containerd_answers "$SYSTEM_CONTAINERD_SOCKET"; then
        say "containerd: using the system containerd at $SYSTEM_CONTAINERD_SOCKET (its config is left as it is)"
        CONTAINERD_SOCKET=$SYSTEM_CONTAINERD_SOCKET
        CNI_BIN_DIR=$(system_cni_bin_dir)
        return
    fi
    say "containerd: none running; starting Skiff's own (config $SKIFF_CONTAINERD_CONFIG, log $SKIFF_CONTAINERD_LOG)"
    write_skiff_containerd_config
    prepare_skiff_cni_bin_dir
    mkdir -p "$SKIFF_CONTAINERD_ROOT" "$SKIFF_CONTAINERD_STATE" "$SKIFF_CNI_CONF_DIR"
    setsid containerd --config "$SKIFF_CONTAINERD_CONFIG" </dev/null >>"$SKIFF_CONTAINERD_LOG" 2>&1 &
    pid=$!
    echo "$pid" >"$SKIFF_CONTAINERD_PID_FILE"
    local deadline=$((SECONDS + 30))
    until containerd_answers "$SKIFF_CONTAINERD_SOCKET"; do
        if ! kill -0 "$pid" 2>/dev/null || ((SECONDS >= deadline)); then
            say "containerd did not come up; last lines of its log:" >&2
            tail -n 40 "$SKIFF_CONTAINERD_LOG" >&2 || true
            exit 1
        fi
        sleep 0.2
    done
    say "containerd: ready (pid $pid)"
    CONTAINERD_SOCKET=$SKIFF_CONTAINERD_SOCKET
    CNI_BIN_DIR=$SKIFF_CNI_BIN_DIR
}

ensure_controlplane() {
    local pid
    if pid=$(running_pid "$PID_FILE" skiff-controlplane); then
        say "control plane: already running (pid $pid)"
        return
    fi
    mkdir -p "$DATA_DIR"
    say "control plane: starting on 127.0.0.1:$PORT (data in $DATA_DIR, log in $LOG_FILE)"
    # setsid detaches it from this shell's session, so it survives the
    # terminal. RUST_LIB_BACKTRACE=0 keeps start-up errors readable.
    RUST_LIB_BACKTRACE=${RUST_LIB_BACKTRACE:-0} setsid "$BIN" --data-dir "$DATA_DIR" \
        --bind-address 127.0.0.1 --secure-port "$PORT" --node-api-port "$NODE_API_PORT" \
        </dev/null >>"$LOG_FILE" 2>&1 &
    pid=$!
    echo "$pid" >"$PID_FILE"

    say "control plane: waiting up to ${READY_TIMEOUT}s for https://127.0.0.1:$PORT/readyz to answer 200 and for admin.kubeconfig"
    local deadline=$((SECONDS + READY_TIMEOUT)) code
    while true; do
        if ! kill -0 "$pid" 2>/dev/null; then
            say "the control plane exited during start-up; last lines of its log:" >&2
            tail -n 40 "$LOG_FILE" >&2 || true
            rm -f "$PID_FILE"
            exit 1
        fi
        # -k: readiness carries no secrets, and the CA may not be written yet.
        code=$(curl -sk -o /dev/null -w '%{http_code}' --max-time 2 "https://127.0.0.1:$PORT/readyz" || true)
        if [[ $code == 200 && -f $DATA_DIR/admin.kubeconfig ]]; then
            break
        fi
        if ((SECONDS >= deadline)); then
            say "not ready after ${READY_TIMEOUT}s (last /readyz answer: ${code:-none}); last lines of its log:" >&2
            tail -n 40 "$LOG_FILE" >&2 || true
            say "it is still running as pid $pid; scripts/cluster-down.sh stops it" >&2
            exit 1
        fi
        sleep 0.5
    done
    say "control plane: ready (pid $pid)"
}

ensure_agent() {
    local pid
    if pid=$(running_pid "$AGENT_PID_FILE" skiff-agent); then
        say "agent: already running (pid $pid)"
        return
    fi
    local cgroup_args=()
    # Skiff's containerd uses cgroupfs: pods go under /skiff, which
    # cluster-down removes. The system containerd keeps its own default.
    if [[ $CONTAINERD_SOCKET == "$SKIFF_CONTAINERD_SOCKET" ]]; then
        cgroup_args=(--cgroup-parent /skiff)
    fi
    mkdir -p "$AGENT_DIR"
    say "agent: creating a join token and starting skiff-agent as node $NODE_NAME (log in $AGENT_LOG)"
    local token
    token=$("$BIN" token create --data-dir "$DATA_DIR")
    # The token goes through the environment, not the command line, which
    # every user can read.
    SKIFF_TOKEN=$token RUST_LIB_BACKTRACE=${RUST_LIB_BACKTRACE:-0} setsid "$AGENT_BIN" \
        --server "https://127.0.0.1:$PORT" --node-api-port "$NODE_API_PORT" \
        --node-name "$NODE_NAME" --data-dir "$AGENT_DIR" \
        --containerd "$CONTAINERD_SOCKET" --pod-log-dir "$STATE_DIR/pod-logs" \
        "${cgroup_args[@]}" </dev/null >>"$AGENT_LOG" 2>&1 &
    pid=$!
    echo "$pid" >"$AGENT_PID_FILE"
    # cluster-down removes the pods' containers from this containerd.
    echo "$CONTAINERD_SOCKET" >"$AGENT_CONTAINERD_FILE"
    say "agent: started (pid $pid)"
}

wait_for_node_ready() {
    local kubectl status deadline=$((SECONDS + NODE_READY_TIMEOUT)) next_report=0
    kubectl=$(kubectl_bin)
    say "waiting for node $NODE_NAME to be Ready"
    next_report=$((SECONDS + 5))
    while true; do
        status=$(KUBECONFIG=$DATA_DIR/admin.kubeconfig "$kubectl" get node "$NODE_NAME" \
            -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)
        if [[ $status == True ]]; then
            say "node $NODE_NAME is Ready"
            return
        fi
        if ! running_pid "$AGENT_PID_FILE" skiff-agent >/dev/null; then
            say "the agent exited; last lines of its log:" >&2
            tail -n 40 "$AGENT_LOG" >&2 || true
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            say "node $NODE_NAME not Ready after ${NODE_READY_TIMEOUT}s; last lines of the agent's log:" >&2
            tail -n 40 "$AGENT_LOG" >&2 || true
            exit 1
        fi
        if ((SECONDS >= next_report)); then
            say "waiting for node $NODE_NAME to be Ready"
            next_report=$((SECONDS + 5))
        fi
        sleep 1
    done
}

if [[ $(id -u) -ne 0 ]]; then
    say "must run as root (it starts containerd and runs pods)" >&2
    exit 1
fi
mkdir -p "$STATE_DIR"

if running_pid "$PID_FILE" skiff-controlplane >/dev/null &&
    running_pid "$AGENT_PID_FILE" skiff-agent >/dev/null &&
    containerd_answers "$(cat "$AGENT_CONTAINERD_FILE" 2>/dev/null || echo /nonexistent)"; then
    say "the control plane, the agent and containerd are already running"
else
    say "installing dependencies"
    scripts/install-deps.sh
    say "building skiff-controlplane, skiff-agent and skiff-cni (release)"
    cargo build --release -p skiff-controlplane -p skiff-agent -p skiff-cni \
        --bin skiff-controlplane --bin skiff-agent --bin skiff-cni
    ensure_containerd
    install_pod_network_plugin "$CNI_BIN_DIR"
    ensure_controlplane
    ensure_agent
fi
wait_for_node_ready

cat <<HINT

The cluster is up: one node ($NODE_NAME), API at https://127.0.0.1:$PORT. Use it with:

    export KUBECONFIG=$DATA_DIR/admin.kubeconfig; kubectl get nodes

Logs: $LOG_FILE, $AGENT_LOG
Stop it all with: scripts/cluster-down.sh
HINT
