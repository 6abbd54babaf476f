//! Gap filling: a regular series per key from tumbling windows.
//!
//! A window with no events is normally not emitted, so a key that goes quiet
//! leaves holes in a dashboard's series. With `fill:` a key's missing windows
//! are emitted too, marked `"filled": true`, for at most `max_gap` after its
//! last real window (a longer silence is an outage, not a gap to smooth over).
//!
//! When a filled window is emitted depends on what its value needs:
//! - `zero`, `forward` and `mean` need only the past: a filled window is
//!   emitted when the watermark passes its end, as a real one would be.
//! - `linear` needs the next real value: the filled windows are held until
//!   the key's next real window fires (then interpolated), or until the
//!   watermark shows that no real window can come within `max_gap`, when they
//!   are emitted with `null` values (there is nothing to interpolate to).
//!
//! At the end of a bounded input nothing is filled after a key's last real
//! window: the input has ended, time has not passed.
//!
//! Every numeric output of every aggregation is filled the same way; outputs
//! of other kinds (text, boolean, ranked lists) are filled with `null`. Only
//! on-time results shape the series; early and late re-emissions pass through
//! unchanged. Everything is driven by the watermark and the window results,
//! so the output does not depend on batch sizes or wall-clock time.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use sluice_config::{FillConfig, FillStrategy, WindowConfig, millis};

use crate::decode::KeyId;
use crate::plugin::OutputKind;
use crate::plugin::grouped::OutputValue;
use crate::watermark::END_OF_INPUT;
use crate::window::{EmitKind, Window, WindowResult};

/// One result to write, and whether it was made up by the filler.
pub type Emission = (WindowResult, bool);

/// What a checkpoint keeps of a [`GapFiller`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FillState {
    /// Each key's series, in key order.
    pub series: Vec<(KeyId, Series)>,
    /// `(when, key)` entries of the schedule.
    pub due: Vec<(i64, KeyId)>,
}

/// Per-key series state and the watermark-driven schedule of fills.
#[derive(Debug)]
pub struct GapFiller {
    strategy: FillStrategy,
    size: i64,
    max_gap: i64,
    /// Output kinds per aggregation (integer outputs are filled with integers).
    kinds: Vec<Vec<OutputKind>>,
    series: HashMap<KeyId, Series>,
    /// `(when, key)`: the watermark at which the key has something to emit.
    due: BTreeSet<(i64, KeyId)>,
}

/// What the filler remembers of one key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// Start of the last real on-time window.
    last_start: i64,
    /// Its outputs.
    last: Vec<Vec<Option<f64>>>,
    /// Start of the first window after it not yet emitted.
    next: i64,
    /// Per output, sum and count of real values (for `mean`).
    sums: Vec<Vec<(f64, u64)>>,
    /// The watermark entry scheduled for this key, if any.
    due: Option<i64>,
}

impl GapFiller {
    /// A filler for `fill` over tumbling windows of `size` ms, whose
    /// aggregations have outputs of `kinds`; `None` when nothing is filled.
    pub fn new(
        fill: Option<&FillConfig>,
        window: &WindowConfig,
        kinds: Vec<Vec<OutputKind>>,
    ) -> Option<Self> {
        let fill = fill.filter(|f| f.strategy != FillStrategy::None)?;
        let WindowConfig::Tumbling { size, .. } = window else {
            return None;
        };
        Some(Self {
            strategy: fill.strategy,
            size: millis(*size),
            max_gap: millis(fill.max_gap),
            kinds,
            series: HashMap::new(),
            due: BTreeSet::new(),
        })
    }

    /// Turns the window results of one step (an event, or a watermark advance
    /// to `watermark`) into what is written: the results themselves plus the
    /// filled windows that are now due, in the order of window start then key.
    pub fn apply(
        &mut self,
        watermark: Option<i64>,
        results: &mut Vec<WindowResult>,
        out: &mut Vec<Emission>,
    ) {
        let start = out.len();
        for result in results.drain(..) {
            if result.emit != EmitKind::OnTime {
                out.push((result, false));
                continue;
            }
            self.real(result, out);
        }
        // After the real windows: a window that fired for real is never filled.
        if let Some(w) = watermark.filter(|&w| w != END_OF_INPUT) {
            while let Some(&(when, key)) = self.due.first() {
                if when > w {
                    break;
                }
                self.due.pop_first();
                if let Some(s) = self.series.get_mut(&key) {
                    s.due = None;
                }
                self.catch_up(key, w, out);
                self.schedule(key);
            }
        }
        out[start..].sort_by_key(|(r, _)| (r.emit != EmitKind::OnTime, r.window.start, r.key));
    }

    /// Every key's series and the fill schedule, for a checkpoint.
    pub fn snapshot(&self) -> FillState {
        let mut series: Vec<(KeyId, Series)> =
            self.series.iter().map(|(k, s)| (*k, s.clone())).collect();
        series.sort_by_key(|(k, _)| *k);
        FillState {
            series,
            due: self.due.iter().copied().collect(),
        }
    }

    /// Carries on from a checkpoint's [`GapFiller::snapshot`].
    pub fn restore(&mut self, state: &FillState) {
        self.series = state.series.iter().cloned().collect();
        self.due = state.due.iter().copied().collect();
    }

    /// Drops every key's series (a Kafka consumer that lost its partitions).
    pub fn clear(&mut self) {
        self.series.clear();
        self.due.clear();
    }

    /// A real on-time window: fills the gap before it where the rules allow,
    /// then makes it the key's last real window.
    fn real(&mut self, result: WindowResult, out: &mut Vec<Emission>) {
        let key = result.key;
        let start = result.window.start;
        let numbers = result.numbers();
        if self.series.contains_key(&key) {
            self.catch_up(key, start, out);
            if self.strategy == FillStrategy::Linear {
                self.interpolate(key, start, &numbers, out);
            }
        }
        let size = self.size;
        let s = self.series.entry(key).or_insert_with(|| Series {
            last_start: start,
            last: Vec::new(),
            next: start,
            sums: result
                .outputs
                .iter()
                .map(|agg| vec![(0.0, 0); agg.len()])
                .collect(),
            due: None,
        });
        for (sums, values) in s.sums.iter_mut().zip(&numbers) {
            for (sum, value) in sums.iter_mut().zip(values) {
                if let Some(v) = value {
                    sum.0 += v;
                    sum.1 += 1;
                }
            }
        }
        s.last_start = start;
        s.last = numbers;
        s.next = s.next.max(start + size);
        out.push((result, false));
        self.schedule(key);
    }

    /// The last window start that may be filled after the real window at
    /// `last_start`: the gap up to that window's end is at most `max_gap`.
    fn fill_limit(&self, last_start: i64) -> i64 {
        last_start.saturating_add(self.max_gap / self.size * self.size)
    }

    /// Emits the key's filled windows that end at or before `upto`: past-only
    /// strategies window by window; `linear` all its held windows, as nulls,
    /// once `upto` shows the gap is longer than `max_gap`.
    fn catch_up(&mut self, key: KeyId, upto: i64, out: &mut Vec<Emission>) {
        let (size, strategy) = (self.size, self.strategy);
        let Some(s) = self.series.get(&key) else {
            return;
        };
        let limit = self.fill_limit(s.last_start);
        let mut next = s.next;
        let mut made = Vec::new();
        if strategy == FillStrategy::Linear {
            // The latest real window that could still close the gap ends at
            // limit + 2 * size; past that, nothing can be interpolated.
            if upto >= limit.saturating_add(2 * size) {
                while next <= limit {
                    made.push((next, self.nulls()));
                    next += size;
                }
            }
        } else {
            while next <= limit && next + size <= upto {
                made.push((next, self.value(s)));
                next += size;
            }
        }
        if let Some(s) = self.series.get_mut(&key) {
            s.next = next;
        }
        out.extend(
            made.into_iter()
                .map(|(start, outputs)| filled(key, start, size, outputs)),
        );
    }

    /// `linear`: the held windows before the real window at `start`, on the
    /// line from the last real outputs to `outputs`.
    fn interpolate(
        &mut self,
        key: KeyId,
        start: i64,
        outputs: &[Vec<Option<f64>>],
        out: &mut Vec<Emission>,
    ) {
        let size = self.size;
        let Some(s) = self.series.get_mut(&key) else {
            return;
        };
        let limit = s.last_start.saturating_add(self.max_gap / size * size);
        if s.next >= start || start > limit.saturating_add(size) {
            return;
        }
        let span = (start - s.last_start) as f64;
        let mut made = Vec::new();
        while s.next < start {
            let at = (s.next - s.last_start) as f64 / span;
            let values = s
                .last
                .iter()
                .zip(outputs)
                .zip(&self.kinds)
                .map(|((before, after), kinds)| {
                    before
                        .iter()
                        .zip(after)
                        .zip(kinds)
                        .map(|((a, b), kind)| match (a, b) {
                            (Some(a), Some(b)) => Some(shape(a + (b - a) * at, *kind)),
                            _ => None,
                        })
                        .collect()
                })
                .collect();
            made.push((s.next, values));
            s.next += size;
        }
        out.extend(
            made.into_iter()
                .map(|(start, outputs)| filled(key, start, size, outputs)),
        );
    }

    /// Schedules the key's next due point: the end of its next fillable
    /// window, or (linear) the watermark that gives up on interpolating.
    fn schedule(&mut self, key: KeyId) {
        let size = self.size;
        let linear = self.strategy == FillStrategy::Linear;
        let step = self.max_gap / size * size;
        let Some(s) = self.series.get_mut(&key) else {
            return;
        };
        if let Some(old) = s.due.take() {
            self.due.remove(&(old, key));
        }
        let limit = s.last_start.saturating_add(step);
        if s.next > limit {
            return;
        }
        let when = if linear {
            limit.saturating_add(2 * size)
        } else {
            s.next + size
        };
        s.due = Some(when);
        self.due.insert((when, key));
    }

    /// The made-up outputs of a past-only strategy for a key.
    fn value(&self, s: &Series) -> Vec<Vec<Option<f64>>> {
        match self.strategy {
            FillStrategy::Zero => self
                .kinds
                .iter()
                .map(|kinds| {
                    kinds
                        .iter()
                        .map(|k| k.is_numeric().then_some(0.0))
                        .collect()
                })
                .collect(),
            FillStrategy::Mean => s
                .sums
                .iter()
                .zip(&self.kinds)
                .map(|(sums, kinds)| {
                    sums.iter()
                        .zip(kinds)
                        .map(|(&(sum, n), kind)| (n > 0).then(|| shape(sum / n as f64, *kind)))
                        .collect()
                })
                .collect(),
            FillStrategy::Forward | FillStrategy::Linear | FillStrategy::None => s.last.clone(),
        }
    }

    fn nulls(&self) -> Vec<Vec<Option<f64>>> {
        self.kinds.iter().map(|k| vec![None; k.len()]).collect()
    }
}

/// An integer output stays an integer (rounded half away from zero).
fn shape(v: f64, kind: OutputKind) -> f64 {
    match kind {
        OutputKind::Integer => v.round(),
        // Only numeric outputs are filled; the others never reach here.
        OutputKind::Float | OutputKind::Text | OutputKind::Boolean | OutputKind::Ranked => v,
    }
}

fn filled(key: KeyId, start: i64, size: i64, outputs: Vec<Vec<Option<f64>>>) -> Emission {
    let outputs = outputs
        .into_iter()
        .map(|agg| agg.into_iter().map(|v| v.map(OutputValue::Float)).collect())
        .collect();
    (
        WindowResult {
            key,
            window: Window {
                start,
                end: start + size,
            },
            emit: EmitKind::OnTime,
            outputs,
            errors: Vec::new(),
        },
        true,
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn filler(strategy: &str) -> GapFiller {
        let fill: FillConfig =
            serde_json::from_str(&format!(r#"{{"strategy":"{strategy}","max_gap":"20s"}}"#))
                .expect("config");
        let window = WindowConfig::Tumbling {
            size: Duration::from_secs(10),
            offset: Duration::ZERO,
        };
        GapFiller::new(Some(&fill), &window, vec![vec![OutputKind::Float]]).expect("a filler")
    }

    fn result(start: i64, value: f64, emit: EmitKind) -> WindowResult {
        WindowResult {
            key: 0,
            window: Window {
                start,
                end: start + 10_000,
            },
            emit,
            outputs: vec![vec![Some(OutputValue::Float(value))]],
            errors: Vec::new(),
        }
    }

    /// (start, value, filled) of what one step emits.
    fn step(
        f: &mut GapFiller,
        watermark: i64,
        results: Vec<WindowResult>,
    ) -> Vec<(i64, Option<f64>, bool)> {
        let mut results = results;
        let mut out = Vec::new();
        f.apply(Some(watermark), &mut results, &mut out);
        out.iter()
            .map(|(r, filled)| (r.window.start, r.numbers()[0][0], *filled))
            .collect()
    }

    #[test]
    fn late_re_emissions_pass_through_and_do_not_move_the_series() {
        let mut f = filler("forward");
        assert_eq!(
            step(&mut f, 10_000, vec![result(0, 1.0, EmitKind::OnTime)]),
            [(0, Some(1.0), false)]
        );
        // A late update of window 0 with another value: written as is.
        assert_eq!(
            step(&mut f, 12_000, vec![result(0, 5.0, EmitKind::Late)]),
            [(0, Some(5.0), false)]
        );
        // The fill still repeats the on-time value, window by window as the
        // watermark passes, and stops after max_gap (two windows).
        assert_eq!(step(&mut f, 20_000, vec![]), [(10_000, Some(1.0), true)]);
        assert_eq!(step(&mut f, 90_000, vec![]), [(20_000, Some(1.0), true)]);
        assert_eq!(step(&mut f, 100_000, vec![]), []);
    }

    #[test]
    fn linear_gives_up_with_nulls_once_no_real_window_can_close_the_gap() {
        let mut f = filler("linear");
        step(&mut f, 10_000, vec![result(0, 1.0, EmitKind::OnTime)]);
        // The last window that could close the gap is [30 s, 40 s): until the
        // watermark passes its end, the filled windows are held.
        assert_eq!(step(&mut f, 39_999, vec![]), []);
        assert_eq!(
            step(&mut f, 40_000, vec![]),
            [(10_000, None, true), (20_000, None, true)]
        );
    }

    #[test]
    fn nothing_is_filled_after_the_last_window_at_end_of_input() {
        let mut f = filler("zero");
        step(&mut f, 10_000, vec![result(0, 1.0, EmitKind::OnTime)]);
        assert_eq!(step(&mut f, END_OF_INPUT, vec![]), []);
    }
}
