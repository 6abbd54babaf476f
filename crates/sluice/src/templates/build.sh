#!/usr/bin/env bash
# Builds this {lang} plugin to {file}.wasm against sluice's plugin interface
# 0.2 ({root}/wit/v0.2), with the toolchain that sluice's
# scripts/setup-tests.sh installs; the build itself is scripts/common.sh's.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "{root}/scripts/common.sh"
why="$(language_toolchain_missing {lang})"
if [ -n "$why" ]; then
    echo "cannot build: $why (run {root}/scripts/setup-tests.sh)" >&2
    exit 1
fi
build_language_plugin {lang} "$here" "$here/{file}.wasm" 0.2
echo "built $here/{file}.wasm"
