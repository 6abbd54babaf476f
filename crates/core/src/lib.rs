//! The sluice engine, without its runtimes.
//!
//! Events flow one way: [`source`] reads lines, [`decode`] extracts key,
//! event time and values, [`dedup`] optionally drops redeliveries,
//! [`watermark`] tracks event-time progress, [`window`] assigns events to
//! windows, hands their values to the aggregations in batches and fires
//! them as their triggers decide, [`fill`] optionally makes up the windows a
//! key missed, and [`sink`] renders results, late events and dead letters
//! as JSON lines. [`state`] is the checkpoint model that lets a run carry on
//! after a crash, with the [`state::StateBackend`] trait a store implements.
//!
//! Plugins are reached only through the traits of [`plugin`]: this crate
//! knows what an aggregation and a trigger can be asked to do, never how
//! they run. `sluice-wasm` runs them as sandboxed WebAssembly components;
//! [`plugin::native`] (feature `native`) runs plugins written with the
//! Rust SDK in-process, which is how this crate's own tests run the
//! built-in plugins' code without a wasm runtime. Likewise this crate has
//! no RocksDB (`sluice-rocks`) and no Kafka (`sluice-kafka`).

#![warn(missing_docs)]

pub mod decode;
pub mod dedup;
pub mod error;
pub mod fill;
pub mod plugin;
pub mod record;
pub mod sink;
pub mod source;
pub mod state;
pub mod watermark;
pub mod window;

pub use error::IoError;
pub use state::RunSummary;
