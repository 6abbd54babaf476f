//! Connects an [`Aggregator`] to the generated component-model traits.
//!
//! The generated traits are implemented once, generically, so that a plugin
//! author's type never meets wit-bindgen.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;

use crate::bindings::exports::sluice::plugin::aggregator::{
    Accumulator, AccumulatorBorrow, Aggregation, Guest, GuestAccumulator, GuestAggregation,
};
use crate::bindings::sluice::plugin::types::{OutputKind as WitKind, OutputSpec, PluginInfo};
use crate::{Aggregator, OutputKind};

/// The component that exports `A`; named by [`crate::export_aggregator!`].
pub struct Component<A>(PhantomData<A>);

/// One configured aggregation, shared by its accumulators.
pub struct AggregationOf<A> {
    aggregator: Rc<A>,
}

/// One window's state.
pub struct AccumulatorOf<A: Aggregator> {
    aggregator: Rc<A>,
    state: RefCell<A::State>,
}

impl<A: Aggregator> Guest for Component<A> {
    type Aggregation = AggregationOf<A>;
    type Accumulator = AccumulatorOf<A>;

    fn info() -> PluginInfo {
        plugin_info(A::INFO)
    }
}

/// The WIT `plugin-info` of an [`crate::Info`], for aggregators and triggers.
pub(crate) fn plugin_info(info: crate::Info) -> PluginInfo {
    PluginInfo {
        name: info.name.into(),
        version: info.version.into(),
        description: info.description.into(),
        state_version: info.state_version,
        mergeable: info.mergeable,
        commutative: info.commutative,
        config_help: info.config_help.into(),
    }
}

impl<A: Aggregator> AggregationOf<A> {
    fn accumulator(&self, state: A::State) -> Accumulator {
        Accumulator::new(AccumulatorOf::<A> {
            aggregator: Rc::clone(&self.aggregator),
            state: RefCell::new(state),
        })
    }
}

impl<A: Aggregator> GuestAggregation for AggregationOf<A> {
    fn open(config: String) -> Result<Aggregation, String> {
        let parsed: A::Config = serde_json::from_str(&config)
            .map_err(|e| format!("invalid config for plugin {}: {e}", A::INFO.name))?;
        let aggregator = A::new(parsed)?;
        Ok(Aggregation::new(AggregationOf {
            aggregator: Rc::new(aggregator),
        }))
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        self.aggregator
            .outputs()
            .into_iter()
            .map(|o| OutputSpec {
                name: o.name,
                kind: match o.kind {
                    OutputKind::Integer => WitKind::Integer,
                    // 0.1 carries numbers only.
                    OutputKind::Float
                    | OutputKind::Text
                    | OutputKind::Boolean
                    | OutputKind::Ranked => WitKind::Float,
                },
                description: o.description,
            })
            .collect()
    }

    fn create(&self) -> Accumulator {
        self.accumulator(self.aggregator.create())
    }

    fn restore(&self, state: Vec<u8>, state_version: u32) -> Result<Accumulator, String> {
        let state = self.aggregator.restore(&state, state_version)?;
        Ok(self.accumulator(state))
    }
}

impl<A: Aggregator> GuestAccumulator for AccumulatorOf<A> {
    fn add(&self, values: Vec<f64>, times: Vec<i64>) {
        self.aggregator
            .add(&mut self.state.borrow_mut(), &values, &times);
    }

    fn merge(&self, other: AccumulatorBorrow<'_>) -> Result<(), String> {
        let other: &AccumulatorOf<A> = other.get();
        if std::ptr::eq(self, other) {
            return Err("cannot merge an accumulator into itself".into());
        }
        self.aggregator
            .merge(&mut self.state.borrow_mut(), &other.state.borrow())
    }

    fn snapshot(&self) -> Vec<u8> {
        self.aggregator.snapshot(&self.state.borrow())
    }

    fn finish(&self) -> Vec<Option<f64>> {
        self.aggregator.finish(&self.state.borrow())
    }
}
