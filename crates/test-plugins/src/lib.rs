//! The components the end-to-end tests load, by name: each constant is the
//! path of a component that this crate's build script built from the
//! workspace (`tests/plugins/NAME` as `NAME`, `examples/plugins/NAME` as
//! `NAME`, upper-cased with `_` for `-`).
//!
//! The hostile ones (`INFINITE_LOOP`, `MEMORY_BOMB`, ...) prove the sandbox;
//! the versions of `count` (`COUNT_V2`, `COUNT_FORMAT2`, ...) drive hot
//! reload; `SLO_BREACH` and `P99_ALERT` are the Rust example plugins;
//! `COLUMN_LAYOUT` is the guest of `sluice-wasm`'s `column_layout` bench.

#![warn(missing_docs)]

include!(concat!(env!("OUT_DIR"), "/plugins.rs"));
