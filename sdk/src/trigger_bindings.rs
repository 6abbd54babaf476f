//! The guest bindings of the `trigger-plugin` world, generated once for every
//! trigger built with the SDK. Trigger authors never name anything here:
//! `export_trigger!` wires their type to it.

wit_bindgen::generate!({
    path: "../wit",
    world: "trigger-plugin",
    pub_export_macro: true,
    export_macro_name: "export_trigger_component",
    default_bindings_module: "sluice_sdk::__private::trigger_bindings",
    // The shared types are the aggregator bindings' own, so one conversion
    // of `Info` serves both worlds.
    with: {
        "sluice:plugin/types@0.1.0": crate::bindings::sluice::plugin::types,
    },
});
