//! sluice: a native host for windowed stream aggregation whose aggregation
//! logic runs in sandboxed WebAssembly components.
//!
//! Events flow one way: [`source`] reads lines, [`decode`] extracts key, event
//! time and values, [`watermark`] tracks event-time progress, [`window`] assigns
//! events to windows and fires them, [`plugin`] runs the WASM aggregations in
//! batches, [`fill`] optionally makes up the windows a key missed, and
//! [`sink`] writes results, late events and dead letters.
//! [`dedup`] optionally drops redelivered events before windowing.
//! [`pipeline`] wires one run together from a [`config`].

pub mod config;
pub mod decode;
pub mod dedup;
pub mod error;
pub mod fill;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod plugin;
pub mod sink;
pub mod source;
pub mod state;
pub mod watermark;
pub mod window;
