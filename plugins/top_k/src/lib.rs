//! `builtin/top_k`: the most frequent values of a text field (models, error
//! codes, tenants), optionally weighted (by tokens, by cost), as a ranked
//! list, in bounded memory.
//!
//! Each window keeps at most `capacity` counters (the Space-Saving sketch of
//! Metwally, Agrawal and El Abbadi, 2005, with weights): a value already
//! counted adds its weight; a new one takes a free counter, or else the
//! smallest counter, inheriting its count as possible over-count. So every
//! count is at least the true weight and over it by at most `error`, which is
//! at most the window's total weight divided by `capacity`; any value whose
//! weight exceeds that bound is in the list. While a window has at most
//! `capacity` distinct values, every count is exact (`error` is 0). Merges
//! add counters (a value missing from a full side counts that side's
//! smallest counter as its possible over-count) and keep the `capacity`
//! largest, so the bounds add up over merged parts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sluice_sdk::typed::{Input, Inputs, Row, TypedAggregator, Value};
use sluice_sdk::{Info, Output, export_typed};

/// `{ "k": 5, "capacity": 100 }`: entries in the list, and counters kept.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_k")]
    k: usize,
    #[serde(default)]
    capacity: Option<usize>,
}

fn default_k() -> usize {
    5
}

/// The most counters a window may keep: bounds its state at about 100 KiB
/// for labels of 64 bytes.
const MAX_CAPACITY: usize = 1_000;

/// Longer labels are cut (at a character boundary): they are names, and a
/// stray document in a field must not grow the state without bound.
const MAX_LABEL: usize = 256;

/// A value and its weight (1 when no weight is bound or the row has none).
pub struct Item<'a> {
    label: &'a str,
    weight: f64,
}

impl<'a> Inputs<'a> for Item<'a> {
    fn declare() -> Vec<Input> {
        vec![
            Input::text("value", "the values ranked, such as model or error_code"),
            Input::float(
                "weight",
                "what each row counts for (default 1), such as tokens",
            )
            .optional(),
        ]
    }

    fn read(row: &Row<'a>) -> Option<Self> {
        let weight = row.float(1).unwrap_or(1.0);
        // A negative weight would break the over-count bound.
        (weight >= 0.0).then_some(Item {
            label: row.text(0)?,
            weight,
        })
    }
}

/// One window's counters: per label, its count and possible over-count.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Counters {
    counts: BTreeMap<String, (f64, f64)>,
    total: f64,
}

impl Counters {
    /// The smallest counter (ties: the greatest label, so that the choice
    /// depends on the counters only).
    fn smallest(&self) -> Option<(&String, f64)> {
        self.counts
            .iter()
            .min_by(|a, b| a.1.0.total_cmp(&b.1.0).then_with(|| b.0.cmp(a.0)))
            .map(|(label, (count, _))| (label, *count))
    }
}

/// The top values by count or weight.
pub struct TopK {
    k: usize,
    capacity: usize,
}

impl TopK {
    /// Keeps the `capacity` largest counters (ties: smaller labels first).
    fn trim(&self, state: &mut Counters) {
        if state.counts.len() <= self.capacity {
            return;
        }
        let mut all: Vec<(String, (f64, f64))> =
            std::mem::take(&mut state.counts).into_iter().collect();
        all.sort_by(|a, b| b.1.0.total_cmp(&a.1.0).then_with(|| a.0.cmp(&b.0)));
        all.truncate(self.capacity);
        state.counts = all.into_iter().collect();
    }

    /// What a value missing from `side` may have counted there.
    fn floor(&self, side: &Counters) -> f64 {
        if side.counts.len() >= self.capacity {
            side.smallest().map_or(0.0, |(_, count)| count)
        } else {
            0.0
        }
    }
}

fn cut(label: &str) -> &str {
    if label.len() <= MAX_LABEL {
        return label;
    }
    let mut end = MAX_LABEL;
    while !label.is_char_boundary(end) {
        end -= 1;
    }
    &label[..end]
}

impl TypedAggregator for TopK {
    type Config = Config;
    type State = Counters;
    type Input<'a> = Item<'a>;
    const INFO: Info = Info::mergeable(
        "top_k",
        env!("CARGO_PKG_VERSION"),
        "the k most frequent (or heaviest) values as a ranked list, from a Space-Saving sketch \
         of `capacity` counters: counts are exact while a window has at most `capacity` \
         distinct values, and otherwise over by at most `error` (at most total / capacity).",
    )
    .with_config_help(
        r#"{"k": 5, "capacity": 100}: entries listed, and counters kept (k <= capacity <= 1000; default 20 * k, at least 100)"#,
    );

    fn new(config: Config) -> Result<Self, String> {
        let capacity = config.capacity.unwrap_or((20 * config.k).max(100));
        if config.k == 0 || capacity < config.k || capacity > MAX_CAPACITY {
            return Err(format!(
                "need 1 <= k <= capacity <= {MAX_CAPACITY}, got k {} and capacity {capacity}",
                config.k
            ));
        }
        Ok(TopK {
            k: config.k,
            capacity: capacity.min(MAX_CAPACITY),
        })
    }

    fn outputs(&self) -> Vec<Output> {
        vec![
            Output::ranked(
                "top",
                "the k largest counts, largest first, with their labels",
            ),
            Output::float("total", "total weight of the window's rows"),
            Output::float(
                "error",
                "the most any listed count may exceed the true one by",
            ),
        ]
    }

    fn create(&self) -> Counters {
        Counters::default()
    }

    fn update(&self, state: &mut Counters, item: Item<'_>, _time: i64) {
        let label = cut(item.label);
        state.total += item.weight;
        if let Some((count, _)) = state.counts.get_mut(label) {
            *count += item.weight;
            return;
        }
        if state.counts.len() < self.capacity {
            state.counts.insert(label.to_string(), (item.weight, 0.0));
            return;
        }
        let Some((evicted, floor)) = state.smallest().map(|(l, c)| (l.clone(), c)) else {
            return;
        };
        state.counts.remove(&evicted);
        state
            .counts
            .insert(label.to_string(), (floor + item.weight, floor));
    }

    fn merge(&self, state: &mut Counters, other: &Counters) -> Result<(), String> {
        let (mine, theirs) = (self.floor(state), self.floor(other));
        for (count, error) in state.counts.values_mut() {
            *count += theirs;
            *error += theirs;
        }
        for (label, (count, error)) in &other.counts {
            match state.counts.get_mut(label) {
                Some((c, e)) => {
                    // Undo the floor added above: the value is on both sides.
                    *c += count - theirs;
                    *e += error - theirs;
                }
                None => {
                    state
                        .counts
                        .insert(label.clone(), (count + mine, error + mine));
                }
            }
        }
        state.total += other.total;
        self.trim(state);
        Ok(())
    }

    fn evaluate(&self, state: &Counters) -> Vec<Option<Value>> {
        let mut ranked: Vec<(&String, &(f64, f64))> = state.counts.iter().collect();
        ranked.sort_by(|a, b| b.1.0.total_cmp(&a.1.0).then_with(|| a.0.cmp(b.0)));
        ranked.truncate(self.k);
        let error = ranked.iter().map(|(_, (_, e))| *e).fold(0.0, f64::max);
        let top = ranked
            .into_iter()
            .map(|(label, (count, _))| (label.clone(), *count))
            .collect();
        vec![
            Some(Value::Ranked(top)),
            Some(Value::Float(state.total)),
            Some(Value::Float(error)),
        ]
    }
}

export_typed!(TopK);

#[cfg(test)]
mod tests {
    use super::*;

    fn top(a: &TopK, s: &Counters) -> Vec<(String, f64)> {
        match &a.evaluate(s)[0] {
            Some(Value::Ranked(r)) => r.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn exact_below_capacity_and_bounded_above() {
        let a = TopK::new(Config {
            k: 3,
            capacity: Some(4),
        })
        .unwrap();
        let mut s = a.create();
        for (label, n) in [("gpt", 5), ("llama", 3), ("mistral", 2), ("qwen", 1)] {
            for _ in 0..n {
                a.update(&mut s, Item { label, weight: 1.0 }, 0);
            }
        }
        assert_eq!(
            top(&a, &s),
            [
                ("gpt".into(), 5.0),
                ("llama".into(), 3.0),
                ("mistral".into(), 2.0)
            ]
        );
        // Past capacity: counts over by at most total / capacity.
        for i in 0..40 {
            let label = format!("rare-{i}");
            a.update(
                &mut s,
                Item {
                    label: &label,
                    weight: 1.0,
                },
                0,
            );
        }
        for _ in 0..30 {
            a.update(
                &mut s,
                Item {
                    label: "gpt",
                    weight: 1.0,
                },
                0,
            );
        }
        let listed = top(&a, &s);
        assert_eq!(listed[0].0, "gpt");
        let bound = s.total / 4.0;
        assert!(
            listed[0].1 >= 35.0 && listed[0].1 <= 35.0 + bound,
            "{listed:?}"
        );
    }

    #[test]
    fn merges_below_capacity_are_exact() {
        let a = TopK::new(Config {
            k: 2,
            capacity: None,
        })
        .unwrap();
        let (mut x, mut y, mut whole) = (a.create(), a.create(), a.create());
        for (i, label) in ["a", "b", "a", "c", "a", "b"].iter().enumerate() {
            let item = || Item { label, weight: 2.0 };
            a.update(if i % 2 == 0 { &mut x } else { &mut y }, item(), 0);
            a.update(&mut whole, item(), 0);
        }
        a.merge(&mut x, &y).unwrap();
        assert_eq!(top(&a, &x), top(&a, &whole));
        assert_eq!(top(&a, &x), [("a".into(), 6.0), ("b".into(), 4.0)]);
    }
}
