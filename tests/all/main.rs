//! The end-to-end tests, as one test binary (one link of wasmtime, RocksDB
//! and librdkafka instead of one per area). Each module is one area; run one
//! with `cargo test --release --workspace --test all -- kafka::`.
//!
//! The components they load are named by the constants of
//! `sluice_test_plugins` (built from `tests/plugins/` and the Rust example
//! plugins by that crate's build script); the Python, JavaScript and C
//! example plugins are built by `scripts/test.sh` into `out/plugins/`.

mod common;

mod cli;
mod golden;
mod inputs;
mod kafka;
mod languages;
mod laws;
mod ops;
mod reload;
mod sandbox;
mod state;
mod status;
mod triggers;
