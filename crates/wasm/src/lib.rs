//! The plugin runtime of sluice: compiling, sandboxing and calling
//! WebAssembly components that implement the `sluice:plugin` WIT interfaces.
//!
//! The most interesting items in this crate are [`PluginEngine`], which
//! compiles components (through the on-disk [`cache`]) and refuses any that
//! import a capability sluice does not grant, [`AggregationInstance`] and
//! [`TriggerInstance`], which implement `sluice_core`'s plugin traits for a
//! live component under the sandbox [`limits`], [`GroupedInstance`], the
//! same for a component of interface 0.2, and [`reload::Reloader`],
//! which swaps new plugin versions into a running pipeline.
//!
//! Generated WIT bindings ([`bindings`]) do not leave this crate: the one
//! conversions file turns them into `sluice_core::plugin`'s types.

#![warn(missing_docs)]

pub mod bindings;
pub mod cache;
mod convert;
pub mod engine;
pub mod grouped;
pub mod limits;
mod output;
mod pace;
pub mod registry;
pub mod reload;
mod sandboxed;
pub mod trigger;
mod wasi;

pub use engine::{AggregationInstance, AnyAggregator, CompiledPlugin, PluginEngine};
pub use grouped::{CompiledGrouped, GroupedInstance};
pub use registry::PluginRegistry;
pub use sluice_config::PluginLimits;
pub use trigger::{CompiledTrigger, TriggerInstance};
