#!/usr/bin/env bash
# Installs what only the tests need, after what the build needs
# (scripts/setup.sh): the Tansu broker, Prometheus and promtool, Chromium
# (for the status page), and the
# Python, JavaScript and C plugin toolchains. Skips what is already there.
# Safe to run again.
set -euo pipefail

"$(dirname "$0")/setup.sh"

log() { printf 'setup: %s\n' "$*" >&2; }

# The end-to-end Kafka tests run against Tansu, a Kafka-protocol broker written
# in Rust, as a separate process: installed from crates.io once per machine
# (about 8 minutes on 2 cores). `dynostore` brings its in-memory and SQLite
# storage engines.
if ! command -v tansu >/dev/null; then
    log "installing the Tansu broker (cargo install tansu, once per machine)"
    cargo install tansu --locked --version '~0.6' --features dynostore,libsql
fi

# The operations tests (tests/all/ops.rs) check deploy/prometheus/ with
# promtool and run a Prometheus of their own against a running sluice: both
# come from Debian's `prometheus` package (without its recommended node
# exporter). The package enables a system service; where systemd runs, that
# service is stopped and disabled again, since the tests start their own
# Prometheus on a free port.
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
    log "installing prometheus and promtool (apt-get)"
    apt-get -o DPkg::Lock::Timeout=900 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq \
        --no-install-recommends prometheus >/dev/null
    if [ -d /run/systemd/system ]; then
        systemctl disable --now prometheus.service >/dev/null 2>&1 || true
    fi
fi

# The status page test (tests/all/status.rs) loads the page in a real
# headless browser: Debian's Chromium. Another apt job may hold the lock for
# a while: wait for it rather than fail.
if ! command -v chromium >/dev/null; then
    log "installing chromium (apt-get)"
    apt-get -o DPkg::Lock::Timeout=900 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq chromium >/dev/null
fi

# Toolchains for plugins in other languages (examples/plugins/*-python, -js,
# -c, and their 0.1 versions in tests/plugins-0.1/). Each is optional: a
# machine where one cannot be installed still builds and tests everything
# else, and the language tests say which toolchain they skipped. Versions
# are pinned; the tools land outside the work tree.
TOOLS="${SLUICE_TOOLS:-$HOME/.cache/sluice-tools}"
mkdir -p "$TOOLS"
try() { "$@" || log "WARNING: '$*' failed; plugins needing it will be skipped"; }

# C: Debian's clang 14 with wasi-libc and the wasm32 compiler runtime.
missing=()
for pkg in clang lld wasi-libc libclang-rt-14-dev-wasm32; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]} (apt-get)"
    try bash -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${missing[*]} >/dev/null"
fi
# C bindings and component wrapping: only the parts we use are compiled, in
# one target dir so that the crates both tools share are compiled once.
if ! wit-bindgen --version 2>/dev/null | grep -q '^wit-bindgen-cli 0\.63\.0'; then
    log "installing wit-bindgen-cli 0.63.0 (C generator only)"
    try cargo install wit-bindgen-cli --locked --version 0.63.0 --no-default-features --features c \
        --target-dir "$TOOLS/cargo-target"
fi
if ! wasm-tools --version 2>/dev/null | grep -q '^wasm-tools 1\.262\.0'; then
    log "installing wasm-tools 1.262.0 (component subcommands only)"
    try cargo install wasm-tools --locked --version 1.262.0 --no-default-features --features component \
        --target-dir "$TOOLS/cargo-target"
fi

# Python: componentize-py bundles CPython for wasm32-wasip2.
if [ ! -x "$TOOLS/py/bin/componentize-py" ]; then
    log "installing componentize-py 0.25.1 (pip, in $TOOLS/py)"
    try bash -c "python3 -m venv '$TOOLS/py' && '$TOOLS/py/bin/pip' install -q componentize-py==0.25.1"
fi

# JavaScript: componentize-js (StarlingMonkey) from npm, called directly.
if [ ! -d "$TOOLS/js/node_modules/@bytecodealliance/componentize-js" ]; then
    log "installing @bytecodealliance/componentize-js 0.23.0 (npm, in $TOOLS/js)"
    try bash -c "mkdir -p '$TOOLS/js' && cd '$TOOLS/js' && npm install --silent --no-audit --no-fund @bytecodealliance/componentize-js@0.23.0"
fi
