# Shared by the scripts: paths and the build of the example plugin.
# shellcheck shell=bash
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
export CARGO_TARGET_DIR="$TARGET_DIR"
SLUICE="$TARGET_DIR/release/sluice"
GEN="$TARGET_DIR/release/sluice-gen"
OUT="$ROOT/out"

# Builds every plugin crate under $1 (package "$2<dir name>") for wasm32-wasip2
# and copies the components to $3/<dir name, with "-" turned into "_" when $4
# is "underscore">.wasm.
build_plugin_crates() {
    local src="$1" prefix="$2" dest="$3" style="$4" pkgs=() dir name file
    for dir in "$src"/*/; do
        [ -f "$dir/Cargo.toml" ] || continue
        pkgs+=(-p "$prefix$(basename "$dir")")
    done
    cargo build --quiet --target wasm32-wasip2 --profile plugin "${pkgs[@]}"
    mkdir -p "$dest"
    for dir in "$src"/*/; do
        [ -f "$dir/Cargo.toml" ] || continue
        name="$(basename "$dir")"
        file="$name"
        [ "$style" = underscore ] && file="${name//-/_}"
        cp "$TARGET_DIR/wasm32-wasip2/plugin/${prefix//-/_}${name//-/_}.wasm" "$dest/$file.wasm"
    done
}

# The example plugins in examples/plugins/, to out/plugins/ (slo_breach.wasm).
build_example_plugins() {
    build_plugin_crates "$ROOT/examples/plugins" sluice-example- "$OUT/plugins" underscore
}

# The hostile test plugins in tests/plugins/ (the sandbox tests load them),
# to out/zoo/ (infinite-loop.wasm).
build_zoo_plugins() {
    build_plugin_crates "$ROOT/tests/plugins" sluice-zoo- "$OUT/zoo" keep
}
