//! Exports `sluice:plugin/aggregator@9.0.0`: a plugin built against a WIT
//! version this host does not implement, which must be refused at load.

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({
        path: "wit",
        world: "aggregator-plugin",
    });

    struct Future;

    impl exports::sluice::plugin::aggregator::Guest for Future {
        fn hello() -> String {
            "from the future".into()
        }
    }

    export!(Future);
}
