#!/usr/bin/env bash
# Crash-and-chaos run: a RocksDB pipeline is killed with SIGKILL at random
# points over a large input, again and again, for tumbling, sliding and
# session windows, with one hostile plugin among the aggregations (it
# panics on some events, so some windows carry errors) and 64 MiB of plugin
# memory. After the last restart has run to the end, its outputs are
# compared with those of one uninterrupted run: results lost, written twice,
# or different must all be 0.
#
# Not part of scripts/test.sh (tests/state.rs runs a short version of the
# same idea on every test run); run it by hand after a build:
#
#   export CARGO_TARGET_DIR=...            # as for the build
#   source scripts/common.sh && build_zoo_plugins
#   cargo build --release --workspace
#   tests/chaos/chaos.sh                   # 1,000,000 events, 100 kills per window kind
#
# Settings (environment): SLUICE_CHAOS_EVENTS (input lines, default
# 1000000), SLUICE_CHAOS_KILLS (kills per window kind, default 100),
# SLUICE_CHAOS_SEED (input and kill points, default 1), SLUICE_CHAOS_DIR
# (where to work; default a temporary directory, removed at the end),
# SLUICE_CHAOS_WINDOWS (a subset of "tumbling sliding session").
set -euo pipefail

# shellcheck source=../../scripts/common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/scripts/common.sh"

EVENTS=${SLUICE_CHAOS_EVENTS:-1000000}
KILLS=${SLUICE_CHAOS_KILLS:-100}
SEED=${SLUICE_CHAOS_SEED:-1}
WINDOWS=${SLUICE_CHAOS_WINDOWS:-tumbling sliding session}
HOSTILE="$OUT/zoo/panic.wasm"
if [ -n "${SLUICE_CHAOS_DIR:-}" ]; then
    WORK="$SLUICE_CHAOS_DIR"
    mkdir -p "$WORK"
else
    WORK="$(mktemp -d)"
    trap 'rm -rf "$WORK"' EXIT
fi

for need in "$SLUICE" "$GEN" "$HOSTILE"; do
    [ -e "$need" ] || { echo "chaos: $need is missing: build it first (see the head of $0)" >&2; exit 2; }
done
RANDOM=$SEED

# The input: realistic LLM events (some out of order, some late, some
# malformed) from sluice-gen, each with a `delta` field the hostile plugin
# reads: 1, and -1 on every 997th line, where it panics.
echo "chaos: generating $EVENTS events in $WORK"
"$GEN" --events "$EVENTS" --seed "$SEED" --services 12 --rate 200 \
    --out-of-order 0.05 --late 0.002 --malformed 0.001 |
    sed -E 's/("status":[0-9]+)\}$/\1,"delta":1}/' |
    awk 'NR % 997 == 0 { sub(/"delta":1}$/, "\"delta\":-1}") } { print }' >"$WORK/input.jsonl"

# Writes the pipeline for window kind $1 into directory $2, checkpointing
# every $3.
pipeline() {
    local window
    case "$1" in
    tumbling) window='{ tumbling: { size: 10s } }' ;;
    sliding) window='{ sliding: { size: 60s, slide: 1s } }' ;;
    session) window='{ session: { gap: 2s } }' ;;
    esac
    mkdir -p "$2"
    cat >"$2/pipeline.yaml" <<EOF
source: { file: $WORK/input.jsonl }
event: { key: [service, model], time: { field: ts, format: epoch_millis } }
watermark: { max_out_of_orderness: 5s }
window: $window
allowed_lateness: 10s
aggregations:
  - { name: latency, plugin: builtin/stats, field: latency_ms }
  - { name: tokens, plugin: builtin/sum, field: completion_tokens }
  - { name: requests, plugin: builtin/count }
  - { name: hostile, plugin: $HOSTILE, field: delta }
sink: { file: results.jsonl }
late_output: { file: late.jsonl }
dead_letter: { file: dead.jsonl }
# The hostile plugin fails on its own windows only: no quarantine, so that
# which windows fail depends on the input alone.
plugins: { memory_limit: 64MiB, quarantine_after: 0 }
state: { backend: rocksdb, path: state, checkpoint_interval: $3 }
EOF
}

# Counts lines of $1 missing from $2, lines of $2 not in $1, and records
# (by key, window and emission) that are in both but differ: lost,
# duplicated, different.
compare() {
    local a="$WORK/a" b="$WORK/b" lost extra different
    LC_ALL=C sort "$1" >"$a"
    LC_ALL=C sort "$2" >"$b"
    LC_ALL=C comm -23 "$a" "$b" | sed 's/,"results".*//' | LC_ALL=C sort -u >"$a.ids"
    LC_ALL=C comm -13 "$a" "$b" | sed 's/,"results".*//' | LC_ALL=C sort -u >"$b.ids"
    lost=$(LC_ALL=C comm -23 "$a" "$b" | wc -l)
    extra=$(LC_ALL=C comm -13 "$a" "$b" | wc -l)
    different=$(LC_ALL=C comm -12 "$a.ids" "$b.ids" | wc -l)
    echo "$((lost - different)) $((extra - different)) $different"
}

failed=0
printf '%-9s %8s %8s %9s %9s %5s %10s %9s %s\n' window kills resumed seconds results lost duplicated different identical | tee "$WORK/report.txt"
for kind in $WINDOWS; do
    ref="$WORK/$kind/reference"
    pipeline "$kind" "$ref" 1h
    started=$(date +%s.%N)
    (cd "$ref" && "$SLUICE" run --config pipeline.yaml 2>"$ref/log.txt")
    took=$(echo "$(date +%s.%N) - $started" | bc)

    run="$WORK/$kind/chaos"
    pipeline "$kind" "$run" 200ms
    kills=0 resumed=0
    # Kill points spread over the output: each run is killed once its
    # results file has grown to the next point (so that the kill lands while
    # it works, whatever its start-up costs), plus up to 20 ms. A restart
    # first cuts the file back to its checkpoint and redoes the work since.
    total=$(wc -c <"$ref/results.jsonl")
    for ((i = 0; i < KILLS; i++)); do
        (cd "$run" && exec "$SLUICE" run --config pipeline.yaml 2>>"$run/log.txt") &
        pid=$!
        target=$((total * (i + 1) / (KILLS + 1)))
        while kill -0 "$pid" 2>/dev/null &&
            [ "$(stat -c %s "$run/results.jsonl" 2>/dev/null || echo 0)" -lt "$target" ]; do
            sleep 0.005
        done
        sleep "0.0$(printf '%02d' $((RANDOM % 20)))"
        if kill -0 "$pid" 2>/dev/null; then
            kill -9 "$pid" 2>/dev/null && kills=$((kills + 1))
        fi
        wait "$pid" 2>/dev/null || true
    done
    (cd "$run" && "$SLUICE" run --config pipeline.yaml 2>>"$run/log.txt")
    resumed=$(grep -c "restored checkpoint" "$run/log.txt" || true)
    read -r lost duplicated different < <(compare "$ref/results.jsonl" "$run/results.jsonl")
    identical=yes
    for f in results.jsonl late.jsonl dead.jsonl; do
        cmp -s "$ref/$f" "$run/$f" || identical=no
    done
    printf '%-9s %8d %8d %9.1f %9d %5d %10d %9d %s\n' "$kind" "$kills" "$resumed" "$took" \
        "$(wc -l <"$ref/results.jsonl")" "$lost" "$duplicated" "$different" "$identical" | tee -a "$WORK/report.txt"
    if [ "$lost" != 0 ] || [ "$duplicated" != 0 ] || [ "$different" != 0 ] || [ "$identical" != yes ]; then
        failed=1
    fi
done
if [ "$failed" != 0 ]; then
    echo "chaos: FAILED (outputs kept in $WORK)" >&2
    trap - EXIT
    exit 1
fi
echo "chaos: every restart resumed to the uninterrupted run's output"
