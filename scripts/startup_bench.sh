#!/usr/bin/env bash
# Start-up of `sluice run` with the compile cache off, cold and warm, for the
# Rust example plugin and the Python one (docs/performance.md, "Start-up and
# the compile cache").
# Needs the release binary and out/plugins/{slo_breach,ewma_python}.wasm
# (scripts/test.sh builds both).
set -euo pipefail
source "$(dirname "$0")/common.sh"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -c '
for i in range(1000): print("{\"ts\":%d,\"service\":\"s%d\",\"latency_ms\":%d}" % (i * 10, i % 3, i % 97))
' >"$work/events.jsonl"
for plugin in slo_breach ewma_python; do
    [ -f "$OUT/plugins/$plugin.wasm" ] || { echo "SKIP $plugin: $OUT/plugins/$plugin.wasm is missing"; continue; }
    config='{}'
    [ "$plugin" = slo_breach ] && config='{"threshold": 50}'
    cat >"$work/$plugin.yaml" <<YAML
source: { file: events.jsonl }
event: { key: [service], time: { field: ts, format: epoch_millis } }
window: { tumbling: { size: 1s } }
aggregations:
  - { name: a, plugin: $OUT/plugins/$plugin.wasm, field: latency_ms, config: $config }
sink: { file: results-$plugin.jsonl }
YAML
    for mode in off cold warm warm warm; do
        case $mode in
        off) cache=off ;;
        cold) rm -rf "$work/cache"; cache="$work/cache" ;;
        warm) cache="$work/cache" ;;
        esac
        start=$(date +%s%N)
        SLUICE_PLUGIN_CACHE="$cache" "$SLUICE" run --config "$work/$plugin.yaml" 2>/dev/null
        end=$(date +%s%N)
        printf '%-12s %-5s %8d ms\n' "$plugin" "$mode" "$(((end - start) / 1000000))"
    done
done
