//! A count whose `info().name` is 256 KiB long, written against the WIT
//! package directly (the SDK's names are compile-time constants). A host
//! that takes the name copies it into every error its failures produce.

#[cfg(target_arch = "wasm32")]
mod component {
    use std::cell::Cell;

    wit_bindgen::generate!({
        path: "../../../wit",
        world: "aggregator-plugin",
    });

    use exports::sluice::plugin::aggregator::{
        AccumulatorBorrow, Guest, GuestAccumulator, GuestAggregation,
    };
    use sluice::plugin::types::{OutputKind, OutputSpec, PluginInfo};

    struct LongName;

    struct Aggregation;

    struct Accumulator(Cell<u64>);

    impl Guest for LongName {
        type Aggregation = Aggregation;
        type Accumulator = Accumulator;

        fn info() -> PluginInfo {
            PluginInfo {
                name: "n".repeat(256 << 10),
                version: "0.1.0".into(),
                description: "A count with a 256 KiB name.".into(),
                state_version: 1,
                mergeable: true,
                commutative: true,
                config_help: String::new(),
            }
        }
    }

    impl GuestAggregation for Aggregation {
        fn open(
            _config: String,
        ) -> Result<exports::sluice::plugin::aggregator::Aggregation, String> {
            Ok(exports::sluice::plugin::aggregator::Aggregation::new(
                Aggregation,
            ))
        }

        fn outputs(&self) -> Vec<OutputSpec> {
            vec![OutputSpec {
                name: "count".into(),
                kind: OutputKind::Integer,
                description: "number of values".into(),
            }]
        }

        fn create(&self) -> exports::sluice::plugin::aggregator::Accumulator {
            exports::sluice::plugin::aggregator::Accumulator::new(Accumulator(Cell::new(0)))
        }

        fn restore(
            &self,
            state: Vec<u8>,
            _state_version: u32,
        ) -> Result<exports::sluice::plugin::aggregator::Accumulator, String> {
            let bytes: [u8; 8] = state.try_into().map_err(|_| "bad state".to_string())?;
            Ok(exports::sluice::plugin::aggregator::Accumulator::new(
                Accumulator(Cell::new(u64::from_le_bytes(bytes))),
            ))
        }
    }

    impl GuestAccumulator for Accumulator {
        fn add(&self, values: Vec<f64>, _times: Vec<i64>) {
            self.0.set(self.0.get() + values.len() as u64);
        }

        fn merge(&self, other: AccumulatorBorrow<'_>) -> Result<(), String> {
            let other = other.get::<Accumulator>().0.get();
            self.0.set(self.0.get() + other);
            Ok(())
        }

        fn snapshot(&self) -> Vec<u8> {
            self.0.get().to_le_bytes().to_vec()
        }

        fn finish(&self) -> Vec<Option<f64>> {
            vec![Some(self.0.get() as f64)]
        }
    }

    export!(LongName);
}
