//! The guest bindings of `wit/v0.2` (interface `sluice:plugin@0.2.0`),
//! generated once for every plugin built with the SDK. Plugin authors never
//! name anything here: `export_aggregator!` and `export_typed!` wire their
//! type to it.
//!
//! The world is declared here under its own name: the 0.1 world of
//! `bindings` is also called `aggregator-plugin`, and the macros
//! wit-bindgen generates are named after the world.

wit_bindgen::generate!({
    inline: "
        package sluice:sdk;
        world grouped-aggregator-plugin {
            export sluice:plugin/aggregator@0.2.0;
        }
    ",
    path: "../wit/v0.2",
    world: "sluice:sdk/grouped-aggregator-plugin",
    pub_export_macro: true,
    export_macro_name: "export_grouped_component",
    default_bindings_module: "sluice_sdk::__private::grouped_bindings",
    generate_all,
});
