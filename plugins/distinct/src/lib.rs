//! `builtin/distinct`: an approximate count of the distinct values of a
//! field (users, tenants, models), from a HyperLogLog sketch of fixed
//! size: `2^precision` one-byte registers per window, a relative standard
//! error of `1.04 / sqrt(2^precision)` (1.6% at the default precision 12),
//! and exact merges, so sliding and session windows give the same estimate
//! as one sketch of all their values.

use hyperloglog::HyperLogLog;
use serde::{Deserialize, Serialize};
use sluice_sdk::typed::{Input, Inputs, Row, TypedAggregator, Value};
use sluice_sdk::{Info, Output, export_typed};

/// The hash key of every sketch: fixed, so that the same values give the
/// same registers in every run and a restored sketch merges with a new one.
const SEED: u128 = 0x736c_7569_6365_2d64_6973_7469_6e63_7431;

/// `{ "precision": 12 }`: registers are `2^precision`, 4 to 16.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_precision")]
    precision: u8,
}

fn default_precision() -> u8 {
    12
}

/// The value whose distinct count is estimated, as text (a number field is
/// read as its JSON text).
pub struct Item<'a>(&'a str);

impl<'a> Inputs<'a> for Item<'a> {
    fn declare() -> Vec<Input> {
        vec![Input::text(
            "value",
            "the values counted, such as user_id (numbers as their JSON text)",
        )]
    }

    fn read(row: &Row<'a>) -> Option<Self> {
        row.text(0).map(Item)
    }
}

/// One window's sketch and the precision it was made with.
#[derive(Clone, Serialize, Deserialize)]
pub struct Sketch {
    precision: u8,
    hll: HyperLogLog,
}

/// The approximate distinct count.
pub struct Distinct {
    precision: u8,
}

impl Distinct {
    /// The error rate `HyperLogLog::new_deterministic` turns into
    /// `precision` (it takes `ceil(ln((1.04 / rate)^2))` as the register
    /// bits).
    fn rate(&self) -> f64 {
        1.04 / ((f64::from(self.precision) - 0.5) / 2.0).exp()
    }
}

impl TypedAggregator for Distinct {
    type Config = Config;
    type State = Sketch;
    type Input<'a> = Item<'a>;
    const INFO: Info = Info::mergeable(
        "distinct",
        env!("CARGO_PKG_VERSION"),
        "approximate number of distinct values (HyperLogLog): relative standard error \
         1.04 / sqrt(2^precision), 1.6% at the default precision 12.",
    )
    .with_config_help(r#"{"precision": 12}, from 4 (16 registers) to 16 (65536 registers)"#);

    fn new(config: Config) -> Result<Self, String> {
        if !(4..=16).contains(&config.precision) {
            return Err(format!(
                "`precision` must be from 4 to 16, not {}",
                config.precision
            ));
        }
        Ok(Distinct {
            precision: config.precision,
        })
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::integer(
            "distinct",
            "estimated number of distinct values",
        )]
    }

    fn create(&self) -> Sketch {
        Sketch {
            precision: self.precision,
            hll: HyperLogLog::new_deterministic(self.rate(), SEED),
        }
    }

    fn update(&self, state: &mut Sketch, item: Item<'_>, _time: i64) {
        state.hll.insert(&item.0);
    }

    fn merge(&self, state: &mut Sketch, other: &Sketch) -> Result<(), String> {
        if state.precision != other.precision {
            return Err(format!(
                "cannot merge sketches of precision {} and {}",
                state.precision, other.precision
            ));
        }
        state.hll.merge(&other.hll);
        Ok(())
    }

    fn evaluate(&self, state: &Sketch) -> Vec<Option<Value>> {
        let estimate = state.hll.len().round();
        vec![
            estimate
                .is_finite()
                .then_some(Value::Integer(estimate as i64)),
        ]
    }

    fn restore(&self, bytes: &[u8], version: u32) -> Result<Sketch, String> {
        if version != Self::INFO.state_version {
            return Err(format!(
                "plugin distinct reads state format 1, not {version}"
            ));
        }
        let sketch: Sketch =
            postcard::from_bytes(bytes).map_err(|e| format!("corrupt distinct state: {e}"))?;
        if sketch.precision != self.precision {
            return Err(format!(
                "the state has precision {}, the config {}",
                sketch.precision, self.precision
            ));
        }
        Ok(sketch)
    }
}

export_typed!(Distinct);

#[cfg(test)]
mod tests {
    use super::*;

    fn estimate(a: &Distinct, s: &Sketch) -> i64 {
        match a.evaluate(s)[0] {
            Some(Value::Integer(n)) => n,
            ref other => panic!("{other:?}"),
        }
    }

    #[test]
    fn estimates_within_the_documented_error_and_merges_exactly() {
        let a = Distinct::new(Config { precision: 12 }).unwrap();
        let (mut whole, mut left, mut right) = (a.create(), a.create(), a.create());
        let n = 50_000;
        for i in 0..n {
            let user = format!("user-{}", i % 20_000);
            a.update(&mut whole, Item(&user), 0);
            let half = if i % 2 == 0 { &mut left } else { &mut right };
            a.update(half, Item(&user), 0);
        }
        a.merge(&mut left, &right).unwrap();
        let got = estimate(&a, &whole);
        assert_eq!(got, estimate(&a, &left), "a merge is exact");
        let error = (got as f64 - 20_000.0).abs() / 20_000.0;
        assert!(error < 3.0 * 1.04 / 64.0, "{got}: {error}");
        let back = a.restore(&a.snapshot(&whole), 1).unwrap();
        assert_eq!(estimate(&a, &back), got);
        let other = Distinct::new(Config { precision: 10 }).unwrap();
        assert!(other.restore(&a.snapshot(&whole), 1).is_err());
    }
}
