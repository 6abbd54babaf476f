//! The plugin boundary: compiling, sandboxing and calling WASM components
//! that implement the `sluice:plugin` WIT interfaces.

pub mod bindings;
pub mod cache;
pub mod engine;
pub mod laws;
pub mod limits;
mod output;
mod pace;
pub mod registry;
pub mod reload;
pub mod scaffold;
pub mod trigger;
pub mod untrusted;
mod wasi;

pub use engine::{Accumulator, AggregationInstance, CompiledPlugin, PluginEngine};
pub use limits::PluginLimits;
pub use registry::PluginRegistry;
pub use trigger::{CompiledTrigger, TriggerInstance, WindowTrigger};
