#!/usr/bin/env bash
# Window workers: the same pipeline at `--parallelism` 1 and N, run in turn
# (1, N, 1, N, ...), each run's wall and CPU seconds, the medians and the
# median of the pairwise ratios; exits non-zero if any run's results differ
# from the first's (docs/performance.md, "Parallelism").
#
#   bench/parallelism.sh [--shape heavy|tumbling|session] [--events E] [--keys K] [--rounds R] [--workers N]
#
# --shape heavy     sliding 60 s / 1 s windows (default; keys 1000)
#         tumbling  tumbling 10 s windows (keys 10)
#         session   session windows with a 2 s gap (keys 10)
# --events E        events to generate (default 1000000)
# --keys K          services, the key (defaults above)
# --rounds R        pairs of runs (default 5)
# --workers N       the parallelism compared with 1 (default 2)
# --memory-limit M  `plugins.memory_limit` (default: the default, 64MiB)
# --no-build        use the sluice and sluice-gen already built in release
#
# Both runs use `stats` + `percentiles` (p50/p95/p99) of `latency_ms`, over
# events from `sluice-gen --rate 10000 --out-of-order 0.05`. Data and results
# go to $CARGO_TARGET_DIR/sluice-parallelism.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/../scripts/common.sh"

SHAPE=heavy
EVENTS=1000000
KEYS=""
ROUNDS=5
WORKERS=2
LIMIT=""
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
    --shape) SHAPE="$2"; shift 2 ;;
    --events) EVENTS="$2"; shift 2 ;;
    --keys) KEYS="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --workers) WORKERS="$2"; shift 2 ;;
    --memory-limit) LIMIT="$2"; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h | --help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "parallelism.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$SHAPE" in
heavy) WINDOW="{ sliding: { size: 60s, slide: 1s } }"; KEYS="${KEYS:-1000}" ;;
tumbling) WINDOW="{ tumbling: { size: 10s } }"; KEYS="${KEYS:-10}" ;;
session) WINDOW="{ session: { gap: 2s } }"; KEYS="${KEYS:-10}" ;;
*) echo "parallelism.sh: --shape is heavy, tumbling or session, not $SHAPE" >&2; exit 2 ;;
esac

WORK="$TARGET_DIR/sluice-parallelism"
mkdir -p "$WORK"
if [ "$BUILD" = 1 ]; then
    (cd "$ROOT" && cargo build --quiet --release -p sluice -p sluice-gen)
fi
SLUICE="$TARGET_DIR/release/sluice"
EVENTS_FILE="$WORK/events-$EVENTS-$KEYS.jsonl"
if [ ! -s "$EVENTS_FILE" ]; then
    "$TARGET_DIR/release/sluice-gen" --events "$EVENTS" --rate 10000 --services "$KEYS" \
        --out-of-order 0.05 --max-delay-ms 3000 --out "$EVENTS_FILE" >/dev/null
fi
CONFIG="$WORK/$SHAPE.yaml"
cat >"$CONFIG" <<EOF
source: { file: $EVENTS_FILE }
event: { key: [service], time: { field: ts, format: epoch_millis } }
watermark: { max_out_of_orderness: 5s }
window: $WINDOW
aggregations:
  - { name: latency, plugin: builtin/stats, field: latency_ms, config: { quantiles: [] } }
  - { name: pct, plugin: builtin/percentiles, field: latency_ms, config: { quantiles: [0.5, 0.95, 0.99] } }
sink: { file: $WORK/results.jsonl }
late_output: { file: $WORK/late.jsonl }
dead_letter: { file: $WORK/dead.jsonl }
EOF
if [ -n "$LIMIT" ]; then
    echo "plugins: { memory_limit: $LIMIT }" >>"$CONFIG"
fi

# One run: "wall cpu" in seconds.
run() {
    /usr/bin/time -f "%e %U %S" -o "$WORK/time" "$SLUICE" run --parallelism "$1" --config "$CONFIG" 2>/dev/null
    awk '{ printf "%s %.2f\n", $1, $2 + $3 }' "$WORK/time"
}
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

run 1 >/dev/null # warm-up: the compile cache and the page cache
cp "$WORK/results.jsonl" "$WORK/reference.jsonl"
echo "shape $SHAPE ($WINDOW), $EVENTS events, $KEYS keys, memory limit ${LIMIT:-default}, $(nproc) cores; parallelism 1 against $WORKERS"
: >"$WORK/pairs"
for round in $(seq 1 "$ROUNDS"); do
    read -r w1 c1 < <(run 1)
    cmp -s "$WORK/results.jsonl" "$WORK/reference.jsonl" || { echo "parallelism 1 changed the results" >&2; exit 1; }
    read -r wn cn < <(run "$WORKERS")
    cmp -s "$WORK/results.jsonl" "$WORK/reference.jsonl" || { echo "parallelism $WORKERS changed the results" >&2; exit 1; }
    echo "round $round: parallelism 1 ${w1} s wall ${c1} s cpu; parallelism $WORKERS ${wn} s wall ${cn} s cpu"
    echo "$w1 $c1 $wn $cn" >>"$WORK/pairs"
done
printf '| parallelism | wall s (median) | cpu s (median) | events/s |\n|---:|---:|---:|---:|\n'
for col in 1 3; do
    p=$([ "$col" = 1 ] && echo 1 || echo "$WORKERS")
    w=$(awk -v c="$col" '{ print $c }' "$WORK/pairs" | median)
    c=$(awk -v c="$((col + 1))" '{ print $c }' "$WORK/pairs" | median)
    awk -v p="$p" -v w="$w" -v c="$c" -v e="$EVENTS" 'BEGIN { printf "| %s | %.2f | %.2f | %.0fk |\n", p, w, c, e / w / 1000 }'
done
speed=$(awk '{ print $1 / $3 }' "$WORK/pairs" | median)
cpu=$(awk '{ print $4 / $2 }' "$WORK/pairs" | median)
echo "median of the pairwise ratios: parallelism $WORKERS runs ${speed}x the rate of parallelism 1, for ${cpu}x its CPU; results identical"
