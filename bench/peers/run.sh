#!/usr/bin/env bash
# Peer benchmark: the same windowed aggregation on sluice, PyFlink and Bytewax
# over the same generated events, each engine's windows checked against an
# exact computation, then a table of events per second
# (docs/performance.md, "Peers").
#
#   bench/peers/run.sh [--events N] [--repeats R] [--session-gap-ms MS]
#
# --events N        events to generate (default 10000000; 200000 is a quick check)
# --repeats R       runs of each engine and window kind; the best counts (default 2)
# --session-gap-ms  the session windows' gap (default 2000)
# --no-build        use the sluice and sluice-gen already built in release
#
# Installs what it needs: a JDK (apt-get, only when `java` is missing) and a
# virtual environment of its own with pinned PyFlink and Bytewax, at
# $SLUICE_PEERS_VENV (default ~/.cache/sluice-peers-venv); builds sluice and
# sluice-gen in release. Data and results go to $SLUICE_PEERS_WORK (default
# $CARGO_TARGET_DIR/sluice-peers). Exits non-zero when any engine's windows
# disagree with the exact ones.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/../../scripts/common.sh"

EVENTS=10000000
REPEATS=2
GAP_MS=2000
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
    --events) EVENTS="$2"; shift 2 ;;
    --repeats) REPEATS="$2"; shift 2 ;;
    --session-gap-ms) GAP_MS="$2"; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

VENV="${SLUICE_PEERS_VENV:-$HOME/.cache/sluice-peers-venv}"
WORK="${SLUICE_PEERS_WORK:-$TARGET_DIR/sluice-peers}"
# sluice reads every SLUICE_ variable as a pipeline override and refuses
# unknown ones, so these two must not reach it.
unset SLUICE_PEERS_VENV SLUICE_PEERS_WORK
PINS=(apache-flink==2.3.0 bytewax==0.21.1)
# The generator's flags: 10 keys, ~10k events/s of event time, 5% of events
# moved back by up to 3 s. Every engine allows 5 s of disorder, so no event
# is late and every window can be computed exactly offline.
GEN_FLAGS=(--rate 10000 --services 10 --out-of-order 0.05 --max-delay-ms 3000 --seed 42)
OUT_OF_ORDER_MS=5000
TINY=1000
KINDS=(tumbling sliding session)
declare -A SPEC=([tumbling]=tumbling:60000 [sliding]=sliding:10000:5000 [session]="session:$GAP_MS")
declare -A SLUICE_WINDOW=(
    [tumbling]="{ tumbling: { size: 60s } }"
    [sliding]="{ sliding: { size: 10s, slide: 5s } }"
    [session]="{ session: { gap: ${GAP_MS}ms } }"
)

apt_install() {
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "$@"
}

# --- What the peers need -----------------------------------------------------
if ! command -v java >/dev/null; then
    echo "== installing a Java runtime for PyFlink (openjdk-17-jre-headless)"
    apt_install openjdk-17-jre-headless
fi
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    echo "== installing python3-venv"
    apt_install python3-venv
fi
if [ "$(cat "$VENV/.sluice-peers" 2>/dev/null)" != "${PINS[*]}" ]; then
    echo "== creating $VENV with ${PINS[*]}"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip
    "$VENV/bin/pip" install --quiet "${PINS[@]}"
    echo "${PINS[*]}" >"$VENV/.sluice-peers"
fi
PY="$VENV/bin/python"

# --- sluice and the events ---------------------------------------------------
if [ "$BUILD" -eq 1 ]; then
    echo "== building sluice and sluice-gen (release)"
    (cd "$ROOT" && cargo build --quiet --release -p sluice -p sluice-gen)
fi

mkdir -p "$WORK/out"
# make_data NAME COUNT: NAME.jsonl from sluice-gen and NAME.csv from it, made
# again only when the flags change.
make_data() {
    local name="$1" count="$2" stamp
    stamp="$count ${GEN_FLAGS[*]}"
    if [ "$(cat "$WORK/$name.stamp" 2>/dev/null)" != "$stamp" ]; then
        echo "== generating $count events ($name.jsonl, $name.csv)"
        "$GEN" --events "$count" "${GEN_FLAGS[@]}" --out "$WORK/$name.jsonl"
        "$PY" "$HERE/make_csv.py" "$WORK/$name.jsonl" "$WORK/$name.csv"
        echo "$stamp" >"$WORK/$name.stamp"
    fi
}
make_data events "$EVENTS"
make_data tiny "$TINY"

# sluice's pipeline for window kind $1 over $2.jsonl, results to $3.
sluice_config() {
    cat >"$WORK/sluice-$1-$2.yaml" <<YAML
source: { file: $2.jsonl }
event: { key: [service], time: { field: ts, format: epoch_millis } }
watermark: { max_out_of_orderness: ${OUT_OF_ORDER_MS}ms }
window: ${SLUICE_WINDOW[$1]}
aggregations:
  - { name: latency, plugin: builtin/stats, field: latency_ms, config: { quantiles: [] } }
  - { name: pct, plugin: builtin/percentiles, field: latency_ms, config: { quantiles: [0.5, 0.95, 0.99] } }
sink: { file: $3 }
late_output: { file: out/sluice-$1-$2-late.jsonl }
dead_letter: { file: out/sluice-$1-$2-dead.jsonl }
YAML
    echo "$WORK/sluice-$1-$2.yaml"
}

# run ENGINE KIND DATA: runs one engine's job over DATA.jsonl (sluice) or
# DATA.csv (the peers), its results to out/ENGINE-KIND-DATA.jsonl, and
# appends its wall time in ms to times.tsv.
run() {
    local engine="$1" kind="$2" data="$3" out start end ms
    out="$WORK/out/$engine-$kind-$data.jsonl"
    start=$(date +%s%N)
    case "$engine" in
    sluice) "$SLUICE" run --config "$(sluice_config "$kind" "$data" "$out")" >"$WORK/out/log" 2>&1 ;;
    flink-p*)
        "$PY" "$HERE/flink_job.py" "$WORK/$data.csv" "$out" "${SPEC[$kind]}" \
            --parallelism "${engine#flink-p}" --out-of-order-ms "$OUT_OF_ORDER_MS" >"$WORK/out/log" 2>&1
        ;;
    bytewax)
        "$PY" "$HERE/bytewax_job.py" "$WORK/$data.csv" "$out" "${SPEC[$kind]}" \
            --out-of-order-ms "$OUT_OF_ORDER_MS" >"$WORK/out/log" 2>&1
        ;;
    esac || { echo "run.sh: $engine $kind over $data failed:" >&2; tail -20 "$WORK/out/log" >&2; exit 1; }
    end=$(date +%s%N)
    ms=$(((end - start) / 1000000))
    printf '%s\t%s\t%s\t%s\n' "$engine" "$kind" "$data" "$ms" >>"$WORK/times.tsv"
    printf '   %-9s %-9s %-7s %6d.%03d s\n' "$engine" "$kind" "$data" $((ms / 1000)) $((ms % 1000))
}

ENGINES=(sluice flink-p1 flink-p2 bytewax)
: >"$WORK/times.tsv"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "== running each engine $REPEATS times per window kind over $EVENTS events (and $TINY for start-up)"
for round in $(seq "$REPEATS"); do
    for kind in "${KINDS[@]}"; do
        for engine in "${ENGINES[@]}"; do
            run "$engine" "$kind" tiny
            run "$engine" "$kind" events
        done
    done
done
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

echo "== checking every engine's windows against the exact computation"
mismatch=0
for kind in "${KINDS[@]}"; do
    for data in events tiny; do
        pairs=()
        for engine in "${ENGINES[@]}"; do
            pairs+=("$engine=$WORK/out/$engine-$kind-$data.jsonl")
        done
        "$PY" "$HERE/check.py" "$WORK/$data.csv" "${SPEC[$kind]}" "${pairs[@]}" || mismatch=1
    done
done

"$PY" "$HERE/table.py" "$WORK/times.tsv" "$EVENTS" "$TINY" "$GAP_MS" "$load_before" "$load_after" | tee "$WORK/table.md"
if [ "$mismatch" -ne 0 ]; then
    echo "run.sh: FAILED: some engine's windows disagree with the exact computation (MISMATCH lines above)" >&2
    exit 1
fi
