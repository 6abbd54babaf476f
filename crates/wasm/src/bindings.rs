//! Host bindings for the `sluice:plugin` WIT package.
//!
//! The only place in the host that runs `bindgen!`: a new WIT version means a
//! new module beside `v0_1` rather than edits scattered across the engine.
//! Generated types go no further than this crate: `convert` turns them into
//! `sluice_core::plugin`'s.

/// Bindings for `sluice:plugin@0.1.0`.
// The WIT's own `///` comments document the generated items; bindgen adds
// some (constructors, `*Pre` types, indices) that carry none.
#[allow(missing_docs)]
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "aggregator-plugin",
    });

    pub use exports::sluice::plugin::aggregator::{
        Guest as AggregatorGuest, GuestAccumulator, GuestAggregation,
    };
    pub use sluice::plugin::types::{OutputKind, OutputSpec, PluginInfo};
}

pub use v0_1::{AggregatorPlugin, AggregatorPluginPre};

/// Bindings for the `trigger-plugin` world of `sluice:plugin@0.1.0`, sharing
/// the `types` interface with the aggregator bindings.
// As for `v0_1`: bindgen's own additions carry no doc comments.
#[allow(missing_docs)]
pub mod trigger_v0_1 {
    wasmtime::component::bindgen!({
        path: "../../wit",
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

/// Bindings for `sluice:plugin@0.2.0` (`wit/v0.2`): the grouped aggregator,
/// a package of its own, so its `types` are not 0.1's.
// As for `v0_1`: bindgen's own additions carry no doc comments.
#[allow(missing_docs)]
pub mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../../wit/v0.2",
        world: "aggregator-plugin",
    });

    pub use exports::sluice::plugin::aggregator::GuestAggregation;
    pub use sluice::plugin::types::{
        Column, ColumnValues, GroupError, InputKind, InputSpec, OutputKind, OutputSpec,
        OutputValues, PluginInfo, RankedEntry, Rows, TextValues,
    };
}

pub use v0_2::{
    AggregatorPlugin as GroupedAggregatorPlugin, AggregatorPluginPre as GroupedAggregatorPluginPre,
};
