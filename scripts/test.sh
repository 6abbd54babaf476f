#!/usr/bin/env bash
# Runs every check and test: formatting, lints, unit, property, golden and
# end-to-end tests, all through the real WASM plugins.
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"

"$ROOT/scripts/setup-tests.sh"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== building the example plugins (tests load them)"
build_example_plugins
echo "== building the Python, JavaScript and C example plugins (tests/all/languages.rs loads them)"
build_language_plugins

echo "== cargo clippy (host and guests, native), -D warnings"
cargo clippy --release --workspace --all-targets -- -D warnings
echo "== cargo clippy (guests, wasm32-wasip2), -D warnings"
cargo clippy --release --target wasm32-wasip2 -p sluice-sdk -p 'sluice-plugin-*' -p 'sluice-example-*' -p 'sluice-zoo-*' -- -D warnings

echo "== cargo test"
cargo test --release --workspace
