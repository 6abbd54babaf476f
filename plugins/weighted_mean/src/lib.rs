//! `builtin/weighted_mean`: the mean of `value` weighted by `weight`, such
//! as a latency weighted by completion tokens; two typed inputs, which
//! interface 0.2 lets a plugin declare.

use serde::{Deserialize, Serialize};
use sluice_sdk::stats::CompensatedSum;
use sluice_sdk::typed::{Input, Inputs, Row, TypedAggregator, Value};
use sluice_sdk::{Info, NoConfig, Output, export_typed};

/// One row: a value and its weight.
pub struct Weighted {
    value: f64,
    weight: f64,
}

impl Inputs<'_> for Weighted {
    fn declare() -> Vec<Input> {
        vec![
            Input::float("value", "the number averaged, such as latency_ms"),
            Input::float("weight", "its weight, such as completion_tokens"),
        ]
    }

    fn read(row: &Row<'_>) -> Option<Self> {
        Some(Weighted {
            value: row.float(0)?,
            weight: row.float(1)?,
        })
    }
}

/// The weighted sum, the total weight and the rows seen, the sums
/// compensated so that long windows keep their low digits.
#[derive(Default, Serialize, Deserialize)]
pub struct State {
    sum: CompensatedSum,
    weight: CompensatedSum,
    rows: u64,
}

/// The weighted mean.
pub struct WeightedMean;

impl TypedAggregator for WeightedMean {
    type Config = NoConfig;
    type State = State;
    type Input<'a> = Weighted;
    const INFO: Info = Info::mergeable(
        "weighted_mean",
        env!("CARGO_PKG_VERSION"),
        "mean of `value` weighted by `weight` (sum of value * weight over sum of weight); \
         null while the total weight is 0.",
    );

    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(WeightedMean)
    }

    fn outputs(&self) -> Vec<Output> {
        vec![
            Output::float("mean", "sum of value * weight / sum of weight"),
            Output::float("weight", "total weight"),
            Output::integer("rows", "rows that had both inputs"),
        ]
    }

    fn create(&self) -> State {
        State::default()
    }

    fn update(&self, state: &mut State, row: Weighted, _time: i64) {
        state.sum.add(row.value * row.weight);
        state.weight.add(row.weight);
        state.rows += 1;
    }

    fn merge(&self, state: &mut State, other: &State) -> Result<(), String> {
        state.sum.merge(&other.sum);
        state.weight.merge(&other.weight);
        state.rows += other.rows;
        Ok(())
    }

    fn evaluate(&self, state: &State) -> Vec<Option<Value>> {
        let weight = state.weight.value();
        let mean = (weight != 0.0).then(|| state.sum.value() / weight);
        vec![
            mean.filter(|m| m.is_finite()).map(Value::Float),
            Some(Value::Float(weight)),
            Some(Value::Integer(
                i64::try_from(state.rows).unwrap_or(i64::MAX),
            )),
        ]
    }
}

export_typed!(WeightedMean);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighs_and_merges() {
        let a = WeightedMean;
        let mut s = a.create();
        a.update(
            &mut s,
            Weighted {
                value: 10.0,
                weight: 2.0,
            },
            0,
        );
        let mut t = a.create();
        a.update(
            &mut t,
            Weighted {
                value: 40.0,
                weight: 6.0,
            },
            0,
        );
        a.merge(&mut s, &t).unwrap();
        assert_eq!(a.evaluate(&s)[0], Some(Value::Float(32.5)));
        assert_eq!(a.evaluate(&a.create())[0], None, "no weight, no mean");
    }
}
