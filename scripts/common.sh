# Shared by the scripts: paths and the build of the example plugin.
# shellcheck shell=bash
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
export CARGO_TARGET_DIR="$TARGET_DIR"
SLUICE="$TARGET_DIR/release/sluice"
GEN="$TARGET_DIR/release/sluice-gen"
OUT="$ROOT/out"

# Builds the example plugins in examples/plugins/ and copies them to out/plugins/.
build_example_plugins() {
    local pkgs=() dir name
    for dir in "$ROOT"/examples/plugins/*/; do
        [ -f "$dir/Cargo.toml" ] || continue
        name="$(basename "$dir")"
        pkgs+=(-p "sluice-example-$name")
    done
    cargo build --quiet --target wasm32-wasip2 --profile plugin "${pkgs[@]}"
    mkdir -p "$OUT/plugins"
    for dir in "$ROOT"/examples/plugins/*/; do
        name="$(basename "$dir")"
        cp "$TARGET_DIR/wasm32-wasip2/plugin/sluice_example_${name//-/_}.wasm" \
            "$OUT/plugins/${name//-/_}.wasm"
    done
}

# Builds the hostile test plugins in tests/plugins/ (the sandbox tests load
# them) and copies them to out/zoo/.
build_zoo_plugins() {
    local pkgs=() dir name
    for dir in "$ROOT"/tests/plugins/*/; do
        [ -f "$dir/Cargo.toml" ] || continue
        name="$(basename "$dir")"
        pkgs+=(-p "sluice-zoo-$name")
    done
    cargo build --quiet --target wasm32-wasip2 --profile plugin "${pkgs[@]}"
    mkdir -p "$OUT/zoo"
    for dir in "$ROOT"/tests/plugins/*/; do
        [ -f "$dir/Cargo.toml" ] || continue
        name="$(basename "$dir")"
        cp "$TARGET_DIR/wasm32-wasip2/plugin/sluice_zoo_${name//-/_}.wasm" \
            "$OUT/zoo/$name.wasm"
    done
}
