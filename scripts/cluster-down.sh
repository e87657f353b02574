#!/usr/bin/env bash
# Stops the control plane started by scripts/cluster-up.sh. Its state under
# .skiff/data is kept, so the next cluster-up carries on where it stopped.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PID_FILE=$PWD/.skiff/controlplane.pid
STOP_TIMEOUT=15

if [[ ! -f $PID_FILE ]]; then
    echo "cluster-down: no pid file; the control plane is not running"
    exit 0
fi
pid=$(cat "$PID_FILE")
# Only signal the pid if it still is our control plane: pids get reused.
if [[ -z $pid ]] || ! kill -0 "$pid" 2>/dev/null ||
    ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q skiff-controlplane; then
    echo "cluster-down: pid file is stale; the control plane is not running"
    rm -f "$PID_FILE"
    exit 0
fi

echo "cluster-down: stopping skiff-controlplane (pid $pid)"
kill -TERM "$pid"
deadline=$((SECONDS + STOP_TIMEOUT))
while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
        echo "cluster-down: still running after ${STOP_TIMEOUT}s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        break
    fi
    sleep 0.2
done
rm -f "$PID_FILE"
echo "cluster-down: stopped (state kept in .skiff/data)"
