#!/usr/bin/env bash
# The bench suite in one command: builds in release mode, applies kernel settings,
# starts the mock provider and every system under test, runs the scenarios, tears
# everything down, and writes bench/RESULTS.md plus plots under bench/results/.
#
#   bench/run.sh                      every scenario in bench/scenarios/
#   bench/run.sh a-max-rate d-many-streams
#   BENCH_QUICK=1 bench/run.sh        one short run per load (a few minutes)
#   BENCH_LITELLM=0 bench/run.sh      skip installing and running LiteLLM
#
# The proxy under test runs on CPU 1, the load generator and the mock on CPU 0
# (BENCH_PROXY_CPU / BENCH_LOAD_CPU override), at nice -10 (BENCH_NICE) so that other
# work on a shared machine disturbs the figures less. Kernel settings are restored on
# exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release
RESULTS=$ROOT/bench/results
PROXY_CPU=${BENCH_PROXY_CPU:-1}
LOAD_CPU=${BENCH_LOAD_CPU:-0}
QUICK=${BENCH_QUICK:-0}
NICE=${BENCH_NICE:--10}
LITELLM_VERSION=${BENCH_LITELLM_VERSION:-1.106.2}
# The whole suite stops by itself after this many seconds, whatever happens.
SUITE_TIMEOUT=${BENCH_TIMEOUT:-4200}

mkdir -p "$RESULTS"
PIDS=$(mktemp /tmp/tollgate-bench-pids.XXXXXX)
RESTORE=()

cleanup() {
    # Every process the suite started wrote its PID here; stop those that remain.
    # SIGINT is a fast stop for all of them (SIGTERM makes Pingora wait 300 s).
    # A PID is signalled only while its command line is still one of ours.
    ours() { [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' < "/proc/$1/cmdline" | grep -qE "$BIN|tollgate-bench-|\.venv-litellm|redis-server 127\.0\.0\.1:"; }
    if [ -s "$PIDS" ]; then
        while read -r pid; do ours "$pid" && kill -INT "$pid" 2>/dev/null || true; done < "$PIDS"
        sleep 1
        while read -r pid; do ours "$pid" && kill -KILL "$pid" 2>/dev/null || true; done < "$PIDS"
    fi
    rm -f "$PIDS"
    for entry in "${RESTORE[@]+"${RESTORE[@]}"}"; do
        echo "${entry#*=}" > "/proc/sys/${entry%%=*}" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- scenarios -------------------------------------------------------------------------
SCENARIOS=()
if [ $# -eq 0 ]; then
    SCENARIOS=(bench/scenarios/*.yaml)
else
    for s in "$@"; do
        if [ -f "$s" ]; then SCENARIOS+=("$s"); else SCENARIOS+=("bench/scenarios/${s%.yaml}.yaml"); fi
    done
fi
for s in "${SCENARIOS[@]}"; do
    [ -f "$s" ] || { echo "no scenario $s" >&2; exit 2; }
done

# --- build -----------------------------------------------------------------------------
echo "== building (release)"
cargo build --release --quiet \
    -p tollgate-gateway -p tollgate-mock -p tollgate-bench -p tollgate-pingora-baseline

# --- kernel and process limits ---------------------------------------------------------
# See deploy/TUNING.md. Each setting is applied when permitted and restored on exit.
sysctl_set() {
    local key=$1 want=$2 path
    path=/proc/sys/${key//.//}
    [ -r "$path" ] || { echo "   $key: not available"; return; }
    local cur
    cur=$(tr -s '\t' ' ' < "$path")
    if [ "$cur" = "$want" ]; then
        echo "   $key = $want"
    elif echo "$want" > "$path" 2>/dev/null; then
        RESTORE+=("${path#/proc/sys/}=$cur")
        echo "   $key = $want (was $cur)"
    else
        echo "   $key stays $cur (not permitted to set $want)"
    fi
}
echo "== kernel settings"
KERNEL_LOG=$(mktemp)
# Not in a pipeline: RESTORE must be filled in this shell, not a subshell.
{
    sysctl_set net.ipv4.ip_local_port_range "10000 65000"
    sysctl_set net.ipv4.tcp_tw_reuse 1
    sysctl_set net.core.somaxconn 65535
    sysctl_set net.ipv4.tcp_max_syn_backlog 65535
} > "$KERNEL_LOG"
cat "$KERNEL_LOG"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "   open files per process: $(ulimit -n)"

# --- Python environments -----------------------------------------------------------------
PLOT_PY=python3
if [ ! -x bench/.venv-plot/bin/python ]; then
    echo "== installing matplotlib into bench/.venv-plot"
    (python3 -m venv bench/.venv-plot && bench/.venv-plot/bin/pip install --quiet 'matplotlib>=3.8') \
        || echo "   matplotlib could not be installed: tables only, no plots"
fi
[ -x bench/.venv-plot/bin/python ] && PLOT_PY=bench/.venv-plot/bin/python

LITELLM_ARGS=()
LITELLM_NOTE="not run (BENCH_LITELLM=0)"
if [ "${BENCH_LITELLM:-1}" != 0 ]; then
    if [ ! -x bench/.venv-litellm/bin/litellm ]; then
        echo "== installing litellm[proxy]==$LITELLM_VERSION into bench/.venv-litellm"
        (python3 -m venv bench/.venv-litellm \
            && bench/.venv-litellm/bin/pip install --quiet "litellm[proxy]==$LITELLM_VERSION") \
            > "$RESULTS/litellm-install.log" 2>&1 \
            || echo "   LiteLLM could not be installed (see bench/results/litellm-install.log)"
    fi
    if [ -x bench/.venv-litellm/bin/litellm ]; then
        LITELLM_ARGS=(--litellm "$ROOT/bench/.venv-litellm/bin/litellm")
        LITELLM_NOTE="$(bench/.venv-litellm/bin/pip show litellm 2>/dev/null | sed -n 's/^Version: /litellm /p')"
    else
        LITELLM_NOTE="not installed (pip install failed; see bench/results/litellm-install.log)"
    fi
fi

# Scenarios with `redis: true` start their own Redis server on loopback.
REDIS_SERVER=${BENCH_REDIS_SERVER:-$(command -v redis-server || echo /usr/bin/redis-server)}

# --- run ---------------------------------------------------------------------------------
PIN=()
if [ "$(nproc)" -ge 2 ]; then
    PIN=(--proxy-cpu "$PROXY_CPU" --load-cpu "$LOAD_CPU")
    RUNNER=(taskset -c "$LOAD_CPU")
else
    RUNNER=()
fi
echo "== running ${SCENARIOS[*]} (quick=$QUICK); uptime: $(uptime)"
UPTIME_BEFORE=$(uptime)
# Every process started by the suite inherits the niceness and, but for the proxy under
# test (which the suite moves to its own CPU), the load generator's CPU.
BENCH_QUICK=$QUICK timeout --signal=TERM --kill-after=10 "$SUITE_TIMEOUT" \
    nice -n "$NICE" "${RUNNER[@]+"${RUNNER[@]}"}" "$BIN/tollgate-bench" suite \
    --bin-dir "$BIN" --nginx "$(command -v nginx || echo /usr/sbin/nginx)" \
    "${PIN[@]+"${PIN[@]}"}" "${LITELLM_ARGS[@]+"${LITELLM_ARGS[@]}"}" \
    --redis-server "$REDIS_SERVER" --pid-file "$PIDS" --out "$RESULTS" "${SCENARIOS[@]}"
UPTIME_AFTER=$(uptime)

# --- report ------------------------------------------------------------------------------
HEADER=$(mktemp)
{
    echo "# Bench results"
    echo
    echo "Written by \`bench/run.sh\`; do not edit by hand (\`bench/report.py\` regenerates it"
    echo "from the JSON files in \`bench/results/\`)."
    echo
    echo "- Last command: \`BENCH_QUICK=$QUICK bench/run.sh${*:+ $*}\` (${*:-all scenarios}), $(date -u '+%Y-%m-%d %H:%M UTC'); each scenario below says when it ran"
    echo "- Machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), Linux $(uname -r), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
    echo "- Pinning: proxy under test on CPU $PROXY_CPU (one worker thread or process); load generator and mock provider on CPU $LOAD_CPU; all at nice $NICE"
    echo "- Tollgate commit: ${BENCH_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
    echo "- Versions: $(nginx -v 2>&1 | sed 's/^nginx version: //'), Pingora 0.9.1 (bench/pingora-baseline), $LITELLM_NOTE, $("$REDIS_SERVER" --version 2>/dev/null | cut -d' ' -f1-3 || echo 'no redis-server'), $(rustc --version | cut -d' ' -f1-2)"
    echo "- Kernel settings: $(sed 's/^ *//' "$KERNEL_LOG" | paste -sd ';' - | sed 's/;/; /g'); open files per process $(ulimit -n)"
    echo "- Load before: ${UPTIME_BEFORE#*load average: }; after: ${UPTIME_AFTER#*load average: } (1, 5, 15 min). The machine is shared"
    echo "  with other work (builds); a load above ~0.5 before a run means the figures are noisy."
    echo
    echo "Ratios compare medians of the runs. \"Added\" latency is the system's percentile minus"
    echo "the mock's own (direct) percentile in the same run. Open-loop latency counts from each"
    echo "request's intended send time (no coordinated omission)."
} > "$HEADER"
# Hand-written findings and the criterion figures of the per-chunk code paths are kept
# in results/notes.md (see bench/README.md) and appended when present.
"$PLOT_PY" bench/report.py --results "$RESULTS" --out bench/RESULTS.md --header "$HEADER" \
    --footer "$RESULTS/notes.md"
rm -f "$HEADER" "$KERNEL_LOG"
echo "== done: bench/RESULTS.md"
