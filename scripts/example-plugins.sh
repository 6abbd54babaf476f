#!/usr/bin/env bash
# Builds the example plugins into out/plugins/, for the examples that name
# one (examples/*.yaml): the Rust ones with the wasm32-wasip2 target
# (scripts/setup.sh), and the Python, JavaScript and C ones where
# scripts/setup-tests.sh has installed their toolchains (a language whose
# toolchain is missing is skipped with a message).
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"

"$ROOT/scripts/setup.sh"
build_example_plugins
build_language_plugins
ls "$OUT/plugins"
