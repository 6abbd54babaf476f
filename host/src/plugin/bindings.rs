//! Host bindings for the `sluice:plugin` WIT package.
//!
//! The only place in the host that runs `bindgen!`: everything else uses the
//! types re-exported here, so a new WIT version means a new module beside
//! `v0_1` rather than edits scattered across the engine.

/// Bindings for `sluice:plugin@0.1.0`.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "aggregator-plugin",
    });

    pub use exports::sluice::plugin::aggregator::{
        Guest as AggregatorGuest, GuestAccumulator, GuestAggregation,
    };
    pub use sluice::plugin::types::{OutputKind, OutputSpec, PluginInfo};
}

pub use v0_1::{AggregatorPlugin, AggregatorPluginPre, OutputKind, OutputSpec, PluginInfo};

/// Bindings for the `trigger-plugin` world of `sluice:plugin@0.1.0`, sharing
/// the `types` interface with the aggregator bindings.
pub mod trigger_v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "trigger-plugin",
        with: {
            "sluice:plugin/types": super::v0_1::sluice::plugin::types,
        },
    });

    pub use exports::sluice::plugin::trigger::{
        Action, Decision, ElementInterest, Elements, Window as TriggerWindow,
    };
}

pub use trigger_v0_1::{TriggerPlugin, TriggerPluginPre};
