#!/usr/bin/env bash
# Sets everything up and runs the main example: LLM request events through
# per-service 10 s windows, aggregated by WASM plugins.
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"

"$ROOT/scripts/setup.sh"
echo "== building sluice, the example generator and the example plugin (first build: several minutes)"
cargo build --quiet --release -p sluice -p sluice-gen
build_example_plugins

EVENTS="${EVENTS:-20000}"
echo "== generating $EVENTS LLM request events into out/events.jsonl"
mkdir -p "$OUT"
"$GEN" --events "$EVENTS" --rate 200 --services 4 --out-of-order 0.05 --late 0.002 \
    --malformed 0.001 --out "$OUT/events.jsonl"

# The examples read their own small events files (examples/data/); the demo
# gives them its 20,000 events instead (a relative path in a key is taken
# from the config file's directory, examples/).
export SLUICE_SOURCE__FILE=../out/events.jsonl
echo "== sluice run --config examples/llm-latency.yaml (over out/events.jsonl)"
"$SLUICE" run --config examples/llm-latency.yaml

echo "== first results (out/results.jsonl)"
head -n 4 "$OUT/results.jsonl"
echo "== late events: out/late.jsonl ($(wc -l <"$OUT/late.jsonl")), dead letters: out/dead.jsonl ($(wc -l <"$OUT/dead.jsonl"))"

echo "== early alerts from a custom trigger: examples/llm-alert.yaml (examples/plugins/p99-alert)"
"$SLUICE" run --config examples/llm-alert.yaml
echo "== early alerts: $(grep -c '"emit":"early"' "$OUT/alert-results.jsonl" || true) (out/alert-results.jsonl), the first:"
grep -m 1 '"emit":"early"' "$OUT/alert-results.jsonl" || echo "   (no window's p99 went above 2 s)"

unset SLUICE_SOURCE__FILE
echo "== the same events through Kafka: sluice-gen | sluice run --config examples/llm-kafka.yaml"
echo "   (an embedded broker, 4 partitions keyed by service, per-partition watermarks)"
"$GEN" --events "$EVENTS" --rate 200 --services 4 --out-of-order 0.05 --late 0.002 \
    --malformed 0.001 --out - | "$SLUICE" run --config examples/llm-kafka.yaml
echo "== first results (out/kafka-results.jsonl)"
head -n 2 "$OUT/kafka-results.jsonl"

echo "== dedup, gap filling and the statistics plugins: examples/llm-extras.yaml"
echo "   (over its own examples/data/llm-events-dup.jsonl, where 3% of the requests come twice)"
"$SLUICE" run --config examples/llm-extras.yaml
echo "== a filled record (out/extras-results.jsonl), a dropped duplicate (out/extras-duplicates.jsonl)"
grep -m 1 '"filled":true' "$OUT/extras-results.jsonl"
head -n 1 "$OUT/extras-duplicates.jsonl"

echo "== typed inputs: a token-weighted latency, distinct requests, top models, dollar cost"
echo "   (examples/llm-cost.yaml: builtin/weighted_mean, distinct, top_k and examples/plugins/llm-cost)"
"$SLUICE" run --config examples/llm-cost.yaml
echo "== first results (out/cost-results.jsonl)"
head -n 2 "$OUT/cost-results.jsonl"
