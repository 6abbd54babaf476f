//! The guest bindings of `wit/`, generated once for every plugin built with
//! the SDK. Plugin authors never name anything here: `export_aggregator!`
//! wires their type to it.

wit_bindgen::generate!({
    path: "../wit",
    world: "aggregator-plugin",
    pub_export_macro: true,
    export_macro_name: "export_component",
    default_bindings_module: "sluice_sdk::__private::bindings",
});
