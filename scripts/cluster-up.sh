#!/usr/bin/env bash
# Brings up a local Skiff control plane for trying things by hand with
# kubectl: installs dependencies, builds a release binary, starts it in the
# background with its state under .skiff/, and waits until it is ready.
# Running it again while the control plane is up only says so.
#
# Environment: SKIFF_PORT (default 6443) is the API server's port.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
STATE_DIR=$ROOT/.skiff
DATA_DIR=$STATE_DIR/data
LOG_FILE=$STATE_DIR/controlplane.log
PID_FILE=$STATE_DIR/controlplane.pid
PORT=${SKIFF_PORT:-6443}
BIN=$ROOT/target/release/skiff-controlplane
READY_TIMEOUT=60

usage_hint() {
    cat <<HINT

The control plane is at https://127.0.0.1:$PORT. Point kubectl at it with:

    export KUBECONFIG=$DATA_DIR/admin.kubeconfig
    kubectl get ns

Logs: $LOG_FILE
Stop it with: scripts/cluster-down.sh
HINT
}

# A pid file alone can be stale (machine rebooted, pid reused), so also check
# that the process really is our control plane.
running_pid() {
    [[ -f $PID_FILE ]] || return 1
    local pid
    pid=$(cat "$PID_FILE")
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q skiff-controlplane || return 1
    echo "$pid"
}

if pid=$(running_pid); then
    echo "cluster-up: the control plane is already running (pid $pid)"
    usage_hint
    exit 0
fi

echo "cluster-up: installing dependencies"
scripts/install-deps.sh

echo "cluster-up: building the control plane (release)"
cargo build --release -p skiff-controlplane

mkdir -p "$DATA_DIR"
echo "cluster-up: starting skiff-controlplane on 127.0.0.1:$PORT (data in $DATA_DIR, log in $LOG_FILE)"
# setsid detaches it from this shell's session, so it survives the terminal.
# RUST_LIB_BACKTRACE=0 keeps start-up errors readable: without it, a
# RUST_BACKTRACE in the caller's environment buries them under backtraces.
RUST_LIB_BACKTRACE=${RUST_LIB_BACKTRACE:-0} setsid "$BIN" --data-dir "$DATA_DIR" --bind-address 127.0.0.1 --secure-port "$PORT" \
    </dev/null >>"$LOG_FILE" 2>&1 &
pid=$!
echo "$pid" >"$PID_FILE"

echo "cluster-up: waiting up to ${READY_TIMEOUT}s for https://127.0.0.1:$PORT/readyz to answer 200 and for admin.kubeconfig"
deadline=$((SECONDS + READY_TIMEOUT))
while true; do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "cluster-up: the control plane exited during start-up; last lines of its log:" >&2
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
        echo "cluster-up: not ready after ${READY_TIMEOUT}s (last /readyz answer: ${code:-none}); last lines of its log:" >&2
        tail -n 40 "$LOG_FILE" >&2 || true
        echo "cluster-up: it is still running as pid $pid; scripts/cluster-down.sh stops it" >&2
        exit 1
    fi
    sleep 0.5
done

echo "cluster-up: ready (pid $pid)"
usage_hint
