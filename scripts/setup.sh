#!/usr/bin/env bash
# Installs what building and running sluice needs on a fresh machine (the
# wasm32-wasip2 target and libclang), and skips what is already there. Safe to
# run again. What only the tests need is installed by scripts/setup-tests.sh.
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }

if ! command -v cargo >/dev/null || ! command -v rustup >/dev/null; then
    log "cargo and rustup are required (https://rustup.rs); this machine has neither"
    exit 1
fi

# Plugins are WebAssembly components built for WASI preview 2.
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    log "adding the wasm32-wasip2 target"
    rustup target add wasm32-wasip2
fi

# The RocksDB state backend is compiled from source by librocksdb-sys, whose
# bindgen step needs libclang.
if ! dpkg -s libclang-dev >/dev/null 2>&1 || ! command -v clang >/dev/null; then
    log "installing libclang-dev and clang (apt-get) for the RocksDB bindings"
    apt_prefix=()
    [ "$(id -u)" -eq 0 ] || apt_prefix=(sudo)
    "${apt_prefix[@]}" apt-get update -qq
    "${apt_prefix[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang-dev clang
fi
