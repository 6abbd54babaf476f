//! A weighted mean of `value` by `weight`, per group, against
//! `sluice:plugin@0.2.0` (`wit/v0.2`) with no SDK in between, so that the
//! host's side of the grouped interface is tested on its own.
//!
//! Outputs: `mean` (float, null without weight), `weight` (float) and
//! `rows` (integer). Its config `{"misbehave": WHAT}` makes it break one
//! promise of the interface, for the host to catch:
//! `kind` (returns `mean` as text), `rows` (one value short per output),
//! `outputs` (one output column short), `snapshot` (2 MiB per group),
//! `trap` (panics in `update` on a negative value), `name` (declares an
//! output named `no good`), `grouping` (weighs the rows of every group but
//! a call's first twice: a law the checker catches).

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({
        path: "../../../wit/v0.2",
        world: "aggregator-plugin",
    });

    use std::cell::RefCell;

    use exports::sluice::plugin::aggregator::{Guest, GuestAggregation};
    use sluice::plugin::types::{
        ColumnValues, InputKind, InputSpec, OutputKind, OutputSpec, OutputValues, PluginInfo, Rows,
    };

    /// One group's state: the weighted sum, the total weight, the rows seen.
    #[derive(Clone, Copy, Default)]
    struct State {
        sum: f64,
        weight: f64,
        rows: i64,
    }

    impl State {
        fn bytes(&self) -> Vec<u8> {
            let mut out = Vec::with_capacity(24);
            out.extend_from_slice(&self.sum.to_le_bytes());
            out.extend_from_slice(&self.weight.to_le_bytes());
            out.extend_from_slice(&self.rows.to_le_bytes());
            out
        }

        fn from_bytes(bytes: &[u8]) -> Option<Self> {
            let word =
                |i: usize| -> Option<[u8; 8]> { bytes.get(i * 8..i * 8 + 8)?.try_into().ok() };
            if bytes.len() != 24 {
                return None;
            }
            Some(Self {
                sum: f64::from_le_bytes(word(0)?),
                weight: f64::from_le_bytes(word(1)?),
                rows: i64::from_le_bytes(word(2)?),
            })
        }
    }

    struct WeightedMean {
        misbehave: String,
        states: RefCell<Vec<State>>,
    }

    impl WeightedMean {
        fn state(&self, group: u32) -> State {
            self.states
                .borrow()
                .get(group as usize)
                .copied()
                .unwrap_or_default()
        }

        fn set(&self, group: u32, state: State) {
            let mut states = self.states.borrow_mut();
            let g = group as usize;
            if states.len() <= g {
                states.resize(g + 1, State::default());
            }
            states[g] = state;
        }
    }

    struct Plugin;

    impl Guest for Plugin {
        type Aggregation = WeightedMean;

        fn info() -> PluginInfo {
            PluginInfo {
                name: "grouped-weighted-mean".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                description: "Mean of value weighted by weight, per group.".into(),
                state_version: 1,
                mergeable: true,
                commutative: true,
                config_help:
                    "{\"misbehave\": \"kind|rows|outputs|snapshot|trap|name|grouping\"} (optional)"
                        .into(),
            }
        }
    }

    fn float(name: &str, description: &str) -> InputSpec {
        InputSpec {
            name: name.into(),
            kind: InputKind::Float,
            optional: false,
            description: description.into(),
        }
    }

    impl GuestAggregation for WeightedMean {
        fn open(
            config: String,
        ) -> Result<exports::sluice::plugin::aggregator::Aggregation, String> {
            // A tiny config: `{}` or `{"misbehave": "WHAT"}`.
            let misbehave = config
                .split('"')
                .nth(3)
                .filter(|_| config.contains("\"misbehave\""))
                .unwrap_or("")
                .to_string();
            Ok(exports::sluice::plugin::aggregator::Aggregation::new(
                WeightedMean {
                    misbehave,
                    states: RefCell::new(Vec::new()),
                },
            ))
        }

        fn inputs(&self) -> Vec<InputSpec> {
            vec![float("value", "the value"), float("weight", "its weight")]
        }

        fn outputs(&self) -> Vec<OutputSpec> {
            let spec = |name: &str, kind, description: &str| OutputSpec {
                name: name.into(),
                kind,
                description: description.into(),
            };
            vec![
                spec(
                    if self.misbehave == "name" {
                        "no good"
                    } else {
                        "mean"
                    },
                    OutputKind::Float,
                    "weighted mean",
                ),
                spec("weight", OutputKind::Float, "total weight"),
                spec("rows", OutputKind::Integer, "rows seen"),
            ]
        }

        fn update(&self, batch: Rows) {
            let (ColumnValues::Float(values), ColumnValues::Float(weights)) =
                (&batch.columns[0].values, &batch.columns[1].values)
            else {
                panic!("the host sent columns of another kind than declared");
            };
            for (row, group) in batch.groups.iter().enumerate() {
                if self.misbehave == "trap" && values[row] < 0.0 {
                    panic!("negative value {}", values[row]);
                }
                let mut state = self.state(*group);
                // `grouping`: weighs every group but the call's first twice,
                // which only a call of several groups shows.
                let weight = if self.misbehave == "grouping" && *group != batch.groups[0] {
                    2.0 * weights[row]
                } else {
                    weights[row]
                };
                state.sum += values[row] * weight;
                state.weight += weight;
                state.rows += 1;
                self.set(*group, state);
            }
        }

        fn merge(&self, into: Vec<u32>, from: Vec<u32>) -> Result<(), String> {
            for (into, from) in into.iter().zip(&from) {
                let (mut a, b) = (self.state(*into), self.state(*from));
                a.sum += b.sum;
                a.weight += b.weight;
                a.rows += b.rows;
                self.set(*into, a);
            }
            Ok(())
        }

        fn evaluate(&self, groups: Vec<u32>) -> Vec<OutputValues> {
            let states: Vec<State> = groups.iter().map(|g| self.state(*g)).collect();
            let shown = if self.misbehave == "rows" {
                states.len().saturating_sub(1)
            } else {
                states.len()
            };
            let states = &states[..shown];
            let means: Vec<Option<f64>> = states
                .iter()
                .map(|s| (s.weight != 0.0).then(|| s.sum / s.weight))
                .collect();
            let mean = if self.misbehave == "kind" {
                OutputValues::Text(means.iter().map(|m| m.map(|m| m.to_string())).collect())
            } else {
                OutputValues::Float(means)
            };
            let mut out = vec![
                mean,
                OutputValues::Float(states.iter().map(|s| Some(s.weight)).collect()),
                OutputValues::Integer(states.iter().map(|s| Some(s.rows)).collect()),
            ];
            if self.misbehave == "outputs" {
                out.pop();
            }
            out
        }

        fn snapshot(&self, groups: Vec<u32>) -> Vec<Vec<u8>> {
            groups
                .iter()
                .map(|g| {
                    if self.misbehave == "snapshot" {
                        vec![7; 2 << 20]
                    } else {
                        self.state(*g).bytes()
                    }
                })
                .collect()
        }

        fn restore(
            &self,
            groups: Vec<u32>,
            states: Vec<Vec<u8>>,
            state_version: u32,
        ) -> Result<(), Vec<sluice::plugin::types::GroupError>> {
            let mut refused = Vec::new();
            for (group, bytes) in groups.iter().zip(&states) {
                match State::from_bytes(bytes).filter(|_| state_version == 1) {
                    Some(state) => self.set(*group, state),
                    None => {
                        self.set(*group, State::default());
                        refused.push(sluice::plugin::types::GroupError {
                            group: *group,
                            message: format!(
                                "not a state of format 1 ({} bytes, format {state_version})",
                                bytes.len()
                            ),
                        });
                    }
                }
            }
            if refused.is_empty() {
                Ok(())
            } else {
                Err(refused)
            }
        }

        fn release(&self, groups: Vec<u32>) {
            for group in groups {
                self.set(group, State::default());
            }
        }
    }

    export!(Plugin);
}
