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

# The hostile test plugins in tests/plugins/, to out/zoo/ (infinite-loop.wasm),
# for trying them by hand (the tests get them from the sluice-test-plugins
# crate, which builds them itself).
build_zoo_plugins() {
    build_plugin_crates "$ROOT/tests/plugins" sluice-zoo- "$OUT/zoo" keep
}

# Toolchains for plugins in Python, JavaScript and C (installed by setup-tests.sh).
TOOLS="${SLUICE_TOOLS:-$HOME/.cache/sluice-tools}"
COMPONENTIZE_PY="$TOOLS/py/bin/componentize-py"
COMPONENTIZE_JS="$TOOLS/js/node_modules/@bytecodealliance/componentize-js/src/cli.js"

# Prints why the toolchain for language $1 (python, js, c) is not usable
# here, or nothing when it is.
language_toolchain_missing() {
    case "$1" in
    python) [ -x "$COMPONENTIZE_PY" ] || echo "componentize-py is not installed at $COMPONENTIZE_PY" ;;
    js)
        command -v node >/dev/null || { echo "node is not installed"; return; }
        [ -f "$COMPONENTIZE_JS" ] || echo "componentize-js is not installed at $COMPONENTIZE_JS"
        ;;
    c)
        local tool
        for tool in clang wasm-ld wit-bindgen wasm-tools; do
            command -v "$tool" >/dev/null || { echo "$tool is not installed"; return; }
        done
        [ -f /usr/lib/wasm32-wasi/libc.a ] || echo "wasi-libc is not installed"
        ;;
    *) echo "unknown language $1" ;;
    esac
}

# The WIT package a language plugin is built against: $ROOT/wit/v0.2
# (sluice:plugin@0.2.0, grouped calls) for "0.2", $ROOT/wit
# (sluice:plugin@0.1.0, one accumulator per window) for "0.1". Both name
# their world aggregator-plugin. Any other version is an error.
language_plugin_wit() {
    case "$1" in
    0.1) echo "$ROOT/wit" ;;
    0.2) echo "$ROOT/wit/v0.2" ;;
    *) echo "unknown plugin interface version $1 (0.1 or 0.2)" >&2; return 1 ;;
    esac
}

# Builds the plugin in directory $2, written in language $1 (python, js,
# c), to the component $3, against interface $4 ("0.2", the default, or
# "0.1"). The plugin's own files decide the entry point: app.py for
# Python, the one .js file for JavaScript, every .c file for C.
build_language_plugin() {
    local lang="$1" src="$2" out="$3" wit work
    wit="$(language_plugin_wit "${4:-0.2}")" || return 1
    work="$(mktemp -d)"
    case "$lang" in
    python)
        # --stub-wasi: every WASI import becomes a trap inside the component,
        # so it imports nothing and the host's refusal of file and socket
        # imports holds for Python too (print() would trap; see docs/plugins/writing.md).
        (cd "$work" && "$COMPONENTIZE_PY" -d "$wit" -w aggregator-plugin \
            componentize --stub-wasi -p "$src" app -o "$out") >"$work/log" 2>&1 ||
            { cat "$work/log" >&2; rm -rf "$work"; return 1; }
        ;;
    js)
        local js=("$src"/*.js)
        node "$COMPONENTIZE_JS" "${js[0]}" -w "$wit" -n aggregator-plugin \
            -d stdio random clocks http fetch-event -o "$out" >"$work/log" 2>&1 ||
            { cat "$work/log" >&2; rm -rf "$work"; return 1; }
        ;;
    c)
        {
            wit-bindgen c --out-dir "$work" --world aggregator-plugin "$wit" &&
                clang --target=wasm32-wasi --sysroot=/usr -mexec-model=reactor -O2 -Wall -Werror \
                    -Wno-unused-function -I "$work" "$src"/*.c "$work"/aggregator_plugin.c \
                    "$work"/aggregator_plugin_component_type.o -o "$work/core.wasm" &&
                wasm-tools component new "$work/core.wasm" -o "$out"
        } >"$work/log" 2>&1 || { cat "$work/log" >&2; rm -rf "$work"; return 1; }
        ;;
    esac
    rm -rf "$work"
}

# Builds every plugin directory $1/NAME-LANG/ (LANG python, js or c) against
# interface $2 to out/plugins/NAME_LANG$3.wasm. A language whose toolchain
# is missing is skipped with a message, and out/plugins/NAME_LANG$3.skipped
# says why, so that the tests report a skip instead of passing silently.
# Returns non-zero when any build failed (after trying the others).
build_language_dirs() {
    local src="$1" version="$2" suffix="$3" dir name lang why failed=0
    mkdir -p "$OUT/plugins"
    for dir in "$src"/*-python/ "$src"/*-js/ "$src"/*-c/; do
        [ -d "$dir" ] || continue
        name="$(basename "$dir")"
        lang="${name##*-}"
        name="${name//-/_}$suffix"
        rm -f "$OUT/plugins/$name.wasm" "$OUT/plugins/$name.skipped"
        why="$(language_toolchain_missing "$lang")"
        if [ -n "$why" ]; then
            echo "$why (run scripts/setup-tests.sh)" >"$OUT/plugins/$name.skipped"
            echo "SKIP building $name: $why (run scripts/setup-tests.sh)" >&2
            continue
        fi
        build_language_plugin "$lang" "${dir%/}" "$OUT/plugins/$name.wasm" "$version" ||
            { echo "building $name failed" >&2; failed=1; }
    done
    return "$failed"
}

# The example plugins in Python, JavaScript and C (examples/plugins/NAME-LANG/,
# interface 0.2) to out/plugins/NAME_LANG.wasm, and their 0.1 versions kept
# as test fixtures (tests/plugins-0.1/NAME-LANG/) to out/plugins/NAME_LANG_v01.wasm,
# so that plugins of either interface in these languages stay tested.
build_language_plugins() {
    local failed=0
    build_language_dirs "$ROOT/examples/plugins" 0.2 "" || failed=1
    build_language_dirs "$ROOT/tests/plugins-0.1" 0.1 _v01 || failed=1
    return "$failed"
}
