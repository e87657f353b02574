#!/usr/bin/env bash
# Skiff's performance benchmarks, end to end, on this machine:
#   1. control plane memory idle, API create latency at a fixed rate, memory
#      with 10,000 pods stored, the list of those pods, watch fan-out;
#   2. durable write throughput of the embedded store, next to a throwaway
#      single-member etcd on the same disk, loaded by `etcdctl check perf`.
# Everything runs on loopback, every step has a time limit, and every
# process started here is stopped on exit. Ends with a summary table; the
# figures in BENCHMARKS.md come from it.
#
# Knobs (environment): BENCH_CREATE_RATE (500), BENCH_CREATE_SECONDS (20),
# BENCH_PODS (10000), BENCH_WATCHERS (100), BENCH_WATCH_WRITES (50),
# BENCH_ETCD_LOAD (l), BENCH_SKIP_STORE=1 to skip part 2, BENCH_KEEP=1 to
# keep the work directory (logs, data) for a look afterwards, BENCH_TMPDIR
# for where that directory goes (put it on the disk you mean to measure),
# BENCH_QUIET_WAIT (600) for the seconds the run may wait for an idle machine.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CREATE_RATE=${BENCH_CREATE_RATE:-500}
CREATE_SECONDS=${BENCH_CREATE_SECONDS:-20}
PODS=${BENCH_PODS:-10000}
WATCHERS=${BENCH_WATCHERS:-100}
WATCH_WRITES=${BENCH_WATCH_WRITES:-50}
ETCD_LOAD=${BENCH_ETCD_LOAD:-l}
SKIP_STORE=${BENCH_SKIP_STORE:-0}
KEEP=${BENCH_KEEP:-0}
# No single step may hang the run.
STEP_TIMEOUT=240

step() { printf '\n==> bench: %s\n' "$*"; }

WORK=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/skiff-bench.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            # Give it a moment to flush and exit, then insist.
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        fi
    done
    if [[ "$KEEP" == 1 ]]; then
        echo "bench: work directory kept at $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A loopback port nothing listens on. There is a small window before the
# server binds it; acceptable for a benchmark that owns the machine.
USED_PORTS=" "
free_port() {
    local port
    for _ in $(seq 1 200); do
        port=$((20000 + RANDOM % 30000))
        [[ "$USED_PORTS" == *" $port "* ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            USED_PORTS="$USED_PORTS$port "
            echo "$port"
            return 0
        fi
    done
    echo "bench: no free loopback port found" >&2
    return 1
}

# CPU accounting, to tell the server's own cost from contention: the
# machine has two cores, and anything else running (a build, say) shows up
# directly in latency. cpu_mark prints "busy total" jiffies of the whole
# machine; busy_since MARK the percentage busy since then.
cpu_mark() { awk '/^cpu / { total = 0; for (i = 2; i <= NF; i++) total += $i; print total - $5 - $6, total }' /proc/stat; }
busy_since() {
    local busy0 total0
    read -r busy0 total0 <<<"$1"
    cpu_mark | awk -v b="$busy0" -v t="$total0" '{ if ($2 > t) printf "%.0f", 100 * ($1 - b) / ($2 - t); else print 0 }'
}
# CPU seconds a process has used (user + system).
proc_cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }
# CPU seconds this script's finished children have used: the benchmark
# clients, once each step has been waited for.
children_cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($16 + $17) / hz }' "/proc/$$/stat"; }
# "busy total" marks to CPU seconds: busy jiffies between two marks.
busy_seconds() {
    local busy0 total0
    read -r busy0 total0 <<<"$1"
    cpu_mark | awk -v b="$busy0" -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($1 - b) / hz }'
}

# Pressure stall information (Linux PSI): the share of the step's wall time
# in which some task waited for the CPU or for I/O. It tells disk stalls and
# CPU contention apart from the server's own cost. psi_mark prints the
# counters (microseconds), psi_since MARK the shares since then.
psi_field() { awk -v kind="$2" '$1 == kind { sub("total=", "", $5); print $5 }' "/proc/pressure/$1" 2>/dev/null || echo 0; }
psi_mark() { echo "$(date +%s%N) $(psi_field cpu some) $(psi_field io some) $(psi_field io full)"; }
psi_since() {
    local now
    now=$(psi_mark)
    if [[ ! -r /proc/pressure/io ]]; then echo "pressure: n/a"; return; fi
    awk -v a="$1" -v b="$now" 'BEGIN {
        split(a, x, " "); split(b, y, " "); wall = (y[1] - x[1]) / 1000
        if (wall <= 0) wall = 1
        printf "stalled on CPU %.0f%%, on I/O %.0f%% (some) %.0f%% (full)", 100 * (y[2] - x[2]) / wall, 100 * (y[3] - x[3]) / wall, 100 * (y[4] - x[4]) / wall
    }'
}

# Before each measurement, waits until the machine is mostly idle and says
# how busy it was. The waiting is bounded: BENCH_QUIET_WAIT seconds (default
# 600) over the whole run, after which steps run regardless, with a warning.
QUIET_BUDGET=${BENCH_QUIET_WAIT:-600}
wait_for_quiet() {
    local mark busy announced=0
    while :; do
        mark=$(cpu_mark)
        sleep 2
        busy=$(busy_since "$mark")
        if [[ $busy -le 15 ]]; then
            echo "machine idle: ${busy}% CPU busy over 2 s"
            return 0
        fi
        if [[ $QUIET_BUDGET -le 0 ]]; then
            echo "bench: WARNING: the machine is ${busy}% busy with other work and the wait budget is spent; measuring anyway, figures will be pessimistic" \
                | tee -a "$WORK/cpu.txt"
            return 0
        fi
        [[ $announced -eq 0 ]] && echo "machine is ${busy}% busy with other work; waiting for it to calm down"
        announced=1
        QUIET_BUDGET=$((QUIET_BUDGET - 2))
    done
}

# Runs an API step against the control plane and reports the machine's CPU
# use and the control plane's own CPU time over it.
api_step() {
    local name=$1 mark cpu0 client0 busy server client psi
    shift
    wait_for_quiet
    psi=$(psi_mark)
    mark=$(cpu_mark)
    cpu0=$(proc_cpu "$CP_PID")
    client0=$(children_cpu)
    run_step "$name" "$@"
    busy=$(busy_seconds "$mark")
    server=$(awk -v a="$cpu0" -v b="$(proc_cpu "$CP_PID")" 'BEGIN { printf "%.2f", b - a }')
    client=$(awk -v a="$client0" -v b="$(children_cpu)" 'BEGIN { printf "%.2f", b - a }')
    echo "during $name: machine $(busy_since "$mark")% busy (of 2 cores): control plane $server CPU-s, benchmark client $client CPU-s, everything else $(awk -v a="$busy" -v b="$server" -v c="$client" 'BEGIN { x = a - b - c; printf "%.2f", x < 0 ? 0 : x }') CPU-s; $(psi_since "$psi")" \
        | tee -a "$WORK/cpu.txt"
}

# Resident set size of a process, in MiB (VmRSS), and its peak (VmHWM).
rss_mib() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
peak_mib() { awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

# One field of the RESULT line a benchmark binary printed.
field() { sed -n "s/^RESULT .*\\b$2=\\([^ ]*\\).*/\\1/p" "$WORK/$1.out" | tail -n 1; }

# Runs a step with a time limit, logging its output to WORK/NAME.out; a
# failed step is reported and the run goes on, so one failure does not hide
# the other figures.
run_step() {
    local name=$1 status=0
    shift
    timeout "$STEP_TIMEOUT" "$@" 2>&1 | tee "$WORK/$name.out" || status=$?
    if [[ $status -ne 0 ]]; then
        echo "bench: step $name failed (exit $status)"
    fi
    return 0
}

# "met" or "MISSED" for VALUE against TARGET with OP le|ge; n/a without a value.
verdict() {
    awk -v value="$1" -v target="$2" -v op="$3" 'BEGIN {
        if (value == "") { print "n/a"; exit }
        if ((op == "le" && value + 0 <= target + 0) || (op == "ge" && value + 0 >= target + 0)) print "met"; else print "MISSED"
    }'
}

TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN="$TARGET_DIR/release"

step "building release binaries"
cargo build --release -p skiff-controlplane -p skiff-bench

step "machine"
echo "cpus: $(nproc), memory: $(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
echo "cpu: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
echo "source: $(git describe --always --dirty 2>/dev/null || echo 'not a git checkout')"
echo "work directory: $WORK"
df -hT "$WORK" | tail -n 1 | awk '{ print "disk: " $1 " (" $2 "), " $3 " total" }'

step "starting a fresh control plane"
PORT=$(free_port)
DATA="$WORK/data"
CP_ARGS=(--data-dir "$DATA" --secure-port "$PORT" --bind-address 127.0.0.1)
# The node API has a fixed default port; give it a free one so that this run
# never collides with another control plane on the machine.
if "$BIN/skiff-controlplane" --help 2>/dev/null | grep -q -- '--node-api-port'; then
    CP_ARGS+=(--node-api-port "$(free_port)")
fi
"$BIN/skiff-controlplane" "${CP_ARGS[@]}" >"$WORK/controlplane.log" 2>&1 &
CP_PID=$!
PIDS+=("$CP_PID")
SERVER="https://127.0.0.1:$PORT"
ready=0
for _ in $(seq 1 300); do
    if curl -sfk --max-time 1 "$SERVER/readyz" >/dev/null 2>&1; then ready=1; break; fi
    kill -0 "$CP_PID" 2>/dev/null || break
    sleep 0.1
done
if [[ $ready -ne 1 ]]; then
    echo "bench: the control plane did not become ready; its log:"
    tail -n 30 "$WORK/controlplane.log"
    exit 1
fi
echo "control plane pid $CP_PID serving $SERVER"
API=("$BIN/skiff-api-bench" --server "$SERVER" --pki-dir "$DATA/pki")

step "idle RSS (after 5 s idle)"
wait_for_quiet
sleep 5
RSS_IDLE=$(rss_mib "$CP_PID")
echo "control plane RSS idle: $RSS_IDLE MiB"

step "create: $CREATE_RATE pods/s for $CREATE_SECONDS s, open loop"
api_step create "${API[@]}" create --rate "$CREATE_RATE" --duration "$CREATE_SECONDS" --namespace bench --timeline

step "fill: top up namespace bench to $PODS pods"
CREATED=$(field create created)
REMAINING=$((PODS - ${CREATED:-0}))
if [[ $REMAINING -gt 0 ]]; then
    api_step fill "${API[@]}" fill --count "$REMAINING" --namespace bench
else
    echo "the create step already stored $CREATED pods"
    echo "RESULT created=0" >"$WORK/fill.out"
fi

step "RSS with $PODS pods stored (after 5 s idle)"
sleep 5
RSS_PODS=$(rss_mib "$CP_PID")
echo "control plane RSS with $PODS pods: $RSS_PODS MiB (peak so far $(peak_mib "$CP_PID") MiB)"

step "list: $PODS pods as JSON, 10 times"
api_step list "${API[@]}" list --repeat 10 --namespace bench

step "watch fan-out: $WATCHERS watchers, $WATCH_WRITES writes"
api_step watch "${API[@]}" watch-fanout --watchers "$WATCHERS" --writes "$WATCH_WRITES" --namespace bench-watch

RSS_END=$(rss_mib "$CP_PID")
RSS_PEAK=$(peak_mib "$CP_PID")
echo "control plane RSS at the end: $RSS_END MiB, peak $RSS_PEAK MiB"
kill "$CP_PID" 2>/dev/null || true
wait "$CP_PID" 2>/dev/null || true

ETCD_RATE=""
STORE_RATE=""
STORE_LIMITED_RATE=""
ETCD_LOAD_USED=""
if [[ "$SKIP_STORE" != 1 ]]; then
    step "store: durable writes, skiff-store-bench vs etcd (etcdctl check perf --load=$ETCD_LOAD)"
    if ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null; then
        echo "installing etcd-server and etcd-client from Debian"
        SUDO=""
        [[ $(id -u) -ne 0 ]] && SUDO=sudo
        export DEBIAN_FRONTEND=noninteractive
        $SUDO apt-get install -y etcd-server etcd-client >/dev/null 2>&1 \
            || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y etcd-server etcd-client >/dev/null; }
    fi
    # sed, not head: head would close the pipe early and fail the run on SIGPIPE.
    etcd --version | sed -n 1p

    # etcdctl's load profiles (etcdctl/ctlv3/command/check.go): clients and
    # a client-side rate limit; every put is a 256-byte key under a prefix
    # and a 1024-byte value, for 60 s.
    case "$ETCD_LOAD" in
        s) CLIENTS=50; LIMIT=150 ;;
        m) CLIENTS=200; LIMIT=1000 ;;
        l) CLIENTS=500; LIMIT=8000 ;;
        xl) CLIENTS=1000; LIMIT=15000 ;;
        *) echo "bench: unknown BENCH_ETCD_LOAD $ETCD_LOAD"; exit 2 ;;
    esac

    # Both stores live under WORK, so they share one file system and disk.
    run_etcd_check() {
        local load=$1 name=$2 client_port peer_port etcd_pid
        client_port=$(free_port)
        peer_port=$(free_port)
        rm -rf "$WORK/etcd"
        etcd --name bench --data-dir "$WORK/etcd" \
            --listen-client-urls "http://127.0.0.1:$client_port" --advertise-client-urls "http://127.0.0.1:$client_port" \
            --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
            --initial-cluster "bench=http://127.0.0.1:$peer_port" >"$WORK/etcd-$name.log" 2>&1 &
        etcd_pid=$!
        PIDS+=("$etcd_pid")
        for _ in $(seq 1 100); do
            ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:$client_port" endpoint health >/dev/null 2>&1 && break
            sleep 0.2
        done
        echo "etcd pid $etcd_pid on 127.0.0.1:$client_port, data in $WORK/etcd"
        wait_for_quiet
        local mark cpu0 client0 busy server client psi
        psi=$(psi_mark)
        mark=$(cpu_mark)
        cpu0=$(proc_cpu "$etcd_pid")
        client0=$(children_cpu)
        # check perf exits non-zero when the throughput is below 90 % of its
        # limit; that is a figure, not a failure of this script.
        ETCDCTL_API=3 timeout "$STEP_TIMEOUT" etcdctl --endpoints "127.0.0.1:$client_port" check perf --load="$load" \
            2>&1 | tr '\r' '\n' | grep -v '^ *[0-9]* / [0-9]* ' | tee "$WORK/$name.out" || true
        busy=$(busy_seconds "$mark")
        server=$(awk -v a="$cpu0" -v b="$(proc_cpu "$etcd_pid")" 'BEGIN { printf "%.2f", b - a }')
        client=$(awk -v a="$client0" -v b="$(children_cpu)" 'BEGIN { printf "%.2f", b - a }')
        echo "during $name: machine $(busy_since "$mark")% busy (of 2 cores): etcd $server CPU-s, etcdctl $client CPU-s, everything else $(awk -v a="$busy" -v b="$server" -v c="$client" 'BEGIN { x = a - b - c; printf "%.2f", x < 0 ? 0 : x }') CPU-s; $(psi_since "$psi")" \
            | tee -a "$WORK/cpu.txt"
        kill "$etcd_pid" 2>/dev/null || true
        wait "$etcd_pid" 2>/dev/null || true
        rm -rf "$WORK/etcd"
    }

    # The store benchmark is one process: the store and its clients.
    store_cpu_report() {
        local busy client
        busy=$(busy_seconds "$2")
        client=$(awk -v a="$3" -v b="$(children_cpu)" 'BEGIN { printf "%.2f", b - a }')
        echo "during $1: machine $(busy_since "$2")% busy (of 2 cores): skiff-store-bench $client CPU-s, everything else $(awk -v a="$busy" -v c="$client" 'BEGIN { x = a - c; printf "%.2f", x < 0 ? 0 : x }') CPU-s; $(psi_since "$4")" \
            | tee -a "$WORK/cpu.txt"
    }

    run_etcd_check "$ETCD_LOAD" etcd
    ETCD_RATE=$(sed -n 's/.* \([0-9][0-9]*\) writes\/s.*/\1/p' "$WORK/etcd.out" | tail -n 1)
    ETCD_LOAD_USED=$ETCD_LOAD
    STORE_CLIENTS=$CLIENTS
    echo "etcd: ${ETCD_RATE:-?} writes/s (check perf --load=$ETCD_LOAD: $CLIENTS clients, limited to $LIMIT/s)"

    # If etcd kept up with the limit, the limit, not etcd, set its figure;
    # then the next profile up (1,000 clients, 15,000/s) shows its capacity.
    if [[ -n "$ETCD_RATE" && "$ETCD_LOAD" != xl && $ETCD_RATE -ge $((LIMIT * 9 / 10)) ]]; then
        echo "etcd reached its load's limit; measuring it again with --load=xl"
        run_etcd_check xl etcd-xl
        XL_RATE=$(sed -n 's/.* \([0-9][0-9]*\) writes\/s.*/\1/p' "$WORK/etcd-xl.out" | tail -n 1)
        if [[ -n "$XL_RATE" ]]; then
            ETCD_RATE=$XL_RATE
            ETCD_LOAD_USED=xl
            STORE_CLIENTS=1000
        fi
    fi

    step "store: skiff-store-bench, $STORE_CLIENTS clients, 256 B keys, 1024 B values, 60 s, no limit"
    wait_for_quiet
    psi=$(psi_mark)
    mark=$(cpu_mark)
    client0=$(children_cpu)
    run_step store "$BIN/skiff-store-bench" --dir "$WORK/store" --clients "$STORE_CLIENTS" --duration 60 \
        --key-size 256 --value-size 1024
    store_cpu_report store "$mark" "$client0" "$psi"
    STORE_RATE=$(field store writes_per_second)
    rm -rf "$WORK/store"

    step "store: skiff-store-bench with etcdctl's own limit ($CLIENTS clients, $LIMIT/s), 60 s"
    wait_for_quiet
    psi=$(psi_mark)
    mark=$(cpu_mark)
    client0=$(children_cpu)
    run_step store-limited "$BIN/skiff-store-bench" --dir "$WORK/store-limited" --clients "$CLIENTS" --duration 60 \
        --key-size 256 --value-size 1024 --limit "$LIMIT"
    store_cpu_report store-limited "$mark" "$client0" "$psi"
    STORE_LIMITED_RATE=$(field store-limited writes_per_second)
    rm -rf "$WORK/store-limited"
fi

RATIO=""
if [[ -n "$ETCD_RATE" && -n "$STORE_RATE" && "$ETCD_RATE" -gt 0 ]]; then
    RATIO=$(awk -v a="$STORE_RATE" -v b="$ETCD_RATE" 'BEGIN { printf "%.2f", a / b }')
fi

CREATE_P99=$(field create p99_ms)
LIST_MEDIAN=$(field list median_ms)
WATCH_P99=$(field watch p99_ms)

step "summary ($(date -u +%Y-%m-%dT%H:%MZ))"
{
    printf '| measure | target | result | verdict |\n'
    printf '|---|---|---|---|\n'
    printf '| control plane RSS, idle | <= 30 MB | %s MiB | %s |\n' "$RSS_IDLE" "$(verdict "$RSS_IDLE" 30 le)"
    printf '| control plane RSS, %s pods stored | <= 150 MB | %s MiB (peak over the whole run %s MiB) | %s |\n' \
        "$PODS" "$RSS_PODS" "$RSS_PEAK" "$(verdict "$RSS_PODS" 150 le)"
    printf '| pod create, %s/s for %s s, p99 | <= 10 ms | p99 %s ms (p50 %s, max %s; %s errors of %s) | %s |\n' \
        "$CREATE_RATE" "$CREATE_SECONDS" "$CREATE_P99" "$(field create p50_ms)" "$(field create max_ms)" \
        "$(field create errors)" "$(field create count)" "$(verdict "$CREATE_P99" 10 le)"
    printf '| list of %s pods as JSON | <= 200 ms | median %s ms (min %s, max %s; %s items, %s bytes) | %s |\n' \
        "$PODS" "$LIST_MEDIAN" "$(field list min_ms)" "$(field list max_ms)" "$(field list items)" \
        "$(field list bytes)" "$(verdict "$LIST_MEDIAN" 200 le)"
    printf '| one write seen by %s watchers, p99 | <= 5 ms | p99 %s ms (p50 %s, max %s; %s samples, %s missing; the create itself p50 %s ms; spread after the first watcher p99 %s ms) | %s |\n' \
        "$WATCHERS" "$WATCH_P99" "$(field watch p50_ms)" "$(field watch max_ms)" "$(field watch samples)" \
        "$(field watch missing)" "$(field watch ack_p50_ms)" "$(field watch spread_p99_ms)" "$(verdict "$WATCH_P99" 5 le)"
    if [[ "$SKIP_STORE" != 1 ]]; then
        printf '| durable writes/s vs etcd | >= 1.5x | skiff %s/s, etcd %s/s (check perf --load=%s): %sx; skiff under etcdctl limit %s/s: %s/s | %s |\n' \
            "${STORE_RATE:-?}" "${ETCD_RATE:-?}" "$ETCD_LOAD_USED" "${RATIO:-?}" "$LIMIT" "${STORE_LIMITED_RATE:-?}" \
            "$(verdict "$RATIO" 1.5 ge)"
    fi
} | tee "$WORK/summary.md"
echo
echo "CPU and stalls over each step (machine busy includes the benchmark client itself):"
cat "$WORK/cpu.txt" 2>/dev/null || true
