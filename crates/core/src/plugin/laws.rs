//! The law checker behind `sluice plugin test`: drives a plugin with
//! generated data and checks what every correct aggregator must satisfy.
//!
//! The pipeline relies on these laws without checking them while it runs:
//! sliding windows merge panes and session windows merge as events bridge
//! gaps (so merge must be associative and agree with aggregating everything
//! at once), checkpoints and hot reloads carry state as snapshot bytes (so a
//! restore must be exact and refuse formats it does not know), and the batch
//! size is a tuning knob that must never change a result. A plugin that
//! breaks one of them gives wrong numbers only for some window shapes or
//! batch sizes, which is hard to see in production and easy to see here.
//!
//! Each law runs a number of generated cases (from a small deterministic
//! PRNG, so `--seed` reproduces a run); a failing case is shrunk greedily,
//! dropping one value at a time while it still fails, so the report shows a
//! small input. A plugin call that fails during a law fails that law with
//! the plugin's message; the instance is reopened for the next law.

use std::fmt;

use super::{AccumulatorHandle as Accumulator, Aggregation, OutputKind, PluginError};

/// Relative tolerance for float outputs in the merge laws: a merge
/// reassociates sums, which changes the last bits of a correct result.
pub const MERGE_TOLERANCE: f64 = 1e-9;

/// How much checking to do.
#[derive(Debug, Clone, Copy)]
pub struct LawOptions {
    /// Generated cases per law.
    pub cases: usize,
    /// Seed of the data generator: the same seed checks the same inputs.
    pub seed: u64,
}

impl Default for LawOptions {
    fn default() -> Self {
        Self {
            cases: 100,
            seed: 0,
        }
    }
}

/// What became of one law.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Held for this many generated cases.
    Pass(usize),
    /// Broken: a minimal failing input with what was got and wanted, or the
    /// error of a plugin call.
    Fail(String),
    /// Not applicable to this plugin, and why.
    Skipped(String),
}

/// One law's result.
#[derive(Debug, Clone, PartialEq)]
pub struct LawResult {
    /// The law, as a statement: `merge is associative`.
    pub law: &'static str,
    /// Whether it held.
    pub outcome: Outcome,
}

impl fmt::Display for LawResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Outcome::Pass(cases) => write!(f, "PASS {} ({cases} cases)", self.law),
            Outcome::Fail(why) => write!(f, "FAIL {}: {why}", self.law),
            Outcome::Skipped(why) => write!(f, "SKIP {}: skipped ({why})", self.law),
        }
    }
}

/// Every law's result, in the order checked.
#[derive(Debug, Clone, PartialEq)]
pub struct LawReport {
    /// One entry per law.
    pub results: Vec<LawResult>,
}

impl LawReport {
    /// Whether no law failed (skipped laws do not count against a plugin).
    pub fn passed(&self) -> bool {
        !self
            .results
            .iter()
            .any(|r| matches!(r.outcome, Outcome::Fail(_)))
    }
}

/// Checks every law against `instance` (an opened aggregation).
pub fn check(instance: &mut dyn Aggregation, options: &LawOptions) -> LawReport {
    let info = instance.info().clone();
    let not_mergeable = || Outcome::Skipped("not mergeable".into());
    let mut checker = Checker {
        instance,
        options: *options,
    };
    let mut results = Vec::new();
    let mut record = |law: &'static str, outcome: Outcome| results.push(LawResult { law, outcome });

    if info.mergeable {
        record(ASSOCIATIVE, checker.run(0, &["a", "b", "c"], associative));
        if info.commutative {
            record(COMMUTATIVE, checker.run(1, &["a", "b"], commutative));
        } else {
            record(
                COMMUTATIVE,
                Outcome::Skipped("not declared commutative".into()),
            );
        }
        record(PARTS, checker.run(2, &[], parts_equal_whole));
    } else {
        record(ASSOCIATIVE, not_mergeable());
        record(COMMUTATIVE, not_mergeable());
        record(PARTS, not_mergeable());
    }
    let version = info.state_version;
    record(
        ROUND_TRIP,
        checker.run(3, &["before", "after"], move |s, p| {
            snapshot_round_trip(s, p, version)
        }),
    );
    record(
        UNKNOWN_VERSION,
        checker.run(4, &["state"], move |s, p| {
            unknown_state_version(s, p, version)
        }),
    );
    record(DETERMINISTIC, checker.run(5, &[], deterministic));
    record(BATCHES, checker.run(6, &[], batch_split_invariant));
    LawReport { results }
}

// The laws' names, shared with the grouped laws of interface 0.2.
pub(super) const ASSOCIATIVE: &str = "merge is associative";
pub(super) const COMMUTATIVE: &str = "merge is commutative";
pub(super) const PARTS: &str = "merging parts equals aggregating the whole";
pub(super) const ROUND_TRIP: &str = "snapshot/restore round-trips exactly";
pub(super) const UNKNOWN_VERSION: &str = "restore refuses an unknown state version";
pub(super) const DETERMINISTIC: &str = "the same input gives the same output";
pub(super) const BATCHES: &str = "splitting batches differently changes nothing";

/// One case of a law: values in parts (merge operands, or batches).
type Parts = Vec<Vec<f64>>;

/// Outputs of `finish`.
type Outputs = Vec<Option<f64>>;

/// What one case of a law found; `O` is what a plugin gives for one
/// window (numbers in 0.1, typed values in 0.2).
pub(super) enum Finding<O = Outputs> {
    /// The law held.
    Holds,
    /// The law was broken: what the plugin gave, and what the law wants.
    Broken { got: O, want: O },
    /// The law was broken without outputs to compare (say, a restore that
    /// should have failed succeeded).
    BrokenBecause(String),
}

/// The `FAIL` text of a law whose minimal failing case, described as
/// `input`, gave `result` when run once more; `list` renders outputs.
pub(super) fn failure<O>(
    input: &str,
    result: Result<Finding<O>, PluginError>,
    list: impl Fn(&O) -> String,
) -> Outcome {
    match result {
        Ok(Finding::Broken { got, want }) => Outcome::Fail(format!(
            "minimal failing input {input}: got {} want {}",
            list(&got),
            list(&want)
        )),
        Ok(Finding::BrokenBecause(why)) => {
            Outcome::Fail(format!("minimal failing input {input}: {why}"))
        }
        Err(e) => Outcome::Fail(format!("{e} (input {input})")),
        // Only a flaky plugin passes the case it just failed.
        Ok(Finding::Holds) => Outcome::Fail(format!(
            "failed on input {input}, then passed it when run again (nondeterministic)"
        )),
    }
}

struct Checker<'i> {
    instance: &'i mut dyn Aggregation,
    options: LawOptions,
}

impl Checker<'_> {
    /// Runs `law` over generated cases; `names` labels the parts (`a`, `b`,
    /// ...), or, when empty, the case has a varying number of parts.
    fn run(
        &mut self,
        salt: u64,
        names: &[&str],
        law: impl Fn(&mut Session<'_>, &Parts) -> Result<Finding, PluginError>,
    ) -> Outcome {
        let mut rng = Rng::new(self.options.seed ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        for _ in 0..self.options.cases {
            let count = if names.is_empty() {
                rng.below(4) as usize + 1
            } else {
                names.len()
            };
            let parts = rng.parts(count);
            match self.attempt(&law, &parts) {
                Ok(Finding::Holds) => {}
                Ok(_) | Err(_) => return self.report_failure(&law, parts, names),
            }
        }
        Outcome::Pass(self.options.cases)
    }

    /// Runs one case on a usable instance, releasing its accumulators after.
    fn attempt(
        &mut self,
        law: &impl Fn(&mut Session<'_>, &Parts) -> Result<Finding, PluginError>,
        parts: &Parts,
    ) -> Result<Finding, PluginError> {
        if self.instance.is_poisoned() {
            self.instance.reopen()?;
        }
        let mut session = Session {
            instance: self.instance,
            accumulators: Vec::new(),
        };
        let finding = law(&mut session, parts);
        session.release_all();
        finding
    }

    /// Shrinks a failing case and describes it.
    fn report_failure(
        &mut self,
        law: &impl Fn(&mut Session<'_>, &Parts) -> Result<Finding, PluginError>,
        mut parts: Parts,
        names: &[&str],
    ) -> Outcome {
        // Greedy shrinking: drop one value (or part) at a time while the case still fails.
        'shrink: loop {
            // A case with a varying number of parts may also lose a part.
            if names.is_empty() && parts.len() > 1 {
                for p in 0..parts.len() {
                    let mut fewer = parts.clone();
                    fewer.remove(p);
                    if !matches!(self.attempt(law, &fewer), Ok(Finding::Holds)) {
                        parts = fewer;
                        continue 'shrink;
                    }
                }
            }
            for p in 0..parts.len() {
                for i in 0..parts[p].len() {
                    let mut smaller = parts.clone();
                    smaller[p].remove(i);
                    if !matches!(self.attempt(law, &smaller), Ok(Finding::Holds)) {
                        parts = smaller;
                        continue 'shrink;
                    }
                }
            }
            break;
        }
        let input = describe_parts(&parts, names);
        failure(&input, self.attempt(law, &parts), |o| list(o))
    }
}

/// The accumulators of one case, released when the case is done.
struct Session<'i> {
    instance: &'i mut dyn Aggregation,
    accumulators: Vec<Accumulator>,
}

impl Session<'_> {
    /// A new accumulator that has been given `batches`, in order, with event
    /// times from the start of the case on.
    fn build(&mut self, batches: &[&[f64]]) -> Result<Accumulator, PluginError> {
        self.build_from(batches, 0)
    }

    /// An accumulator given part `i` of a case alone, with the event times
    /// those values have in the whole case (the values of all parts before it
    /// come first). Each value of a case keeps one event time whichever
    /// accumulator it goes to, as an event does when the host splits a window
    /// into panes or session fragments: a plugin that reads times (a rate, an
    /// average in event-time order) sees the same events merged or whole.
    fn part(&mut self, p: &Parts, i: usize) -> Result<Accumulator, PluginError> {
        let start: usize = p[..i].iter().map(Vec::len).sum();
        self.build_from(&[&p[i]], start as i64)
    }

    fn build_from(&mut self, batches: &[&[f64]], start: i64) -> Result<Accumulator, PluginError> {
        let acc = self.instance.create()?;
        self.accumulators.push(acc);
        let mut t = start;
        for batch in batches {
            self.add_at(acc, batch, &mut t)?;
        }
        Ok(acc)
    }

    /// Adds `values` with event times from `*t` on, advancing `*t`.
    fn add_at(&mut self, acc: Accumulator, values: &[f64], t: &mut i64) -> Result<(), PluginError> {
        let times: Vec<i64> = (0..values.len() as i64)
            .map(|i| BASE_TIME + *t + i)
            .collect();
        *t += values.len() as i64;
        self.instance.add(acc, values, &times)
    }

    fn finish(&mut self, acc: Accumulator) -> Result<Outputs, PluginError> {
        self.instance.finish(acc)
    }

    fn merge(&mut self, into: Accumulator, from: Accumulator) -> Result<(), PluginError> {
        self.instance.merge(into, from)
    }

    fn restore(&mut self, bytes: &[u8], version: u32) -> Result<Accumulator, PluginError> {
        let acc = self.instance.restore(bytes, version)?;
        self.accumulators.push(acc);
        Ok(acc)
    }

    /// Compares outputs exactly, or (`tolerant`) floats within [`MERGE_TOLERANCE`].
    fn compare(&self, got: Outputs, want: Outputs, tolerant: bool) -> Finding {
        let kinds = self.instance.outputs().iter().map(|o| o.kind);
        let same = got.len() == want.len()
            && got.iter().zip(&want).zip(kinds).all(|((g, w), kind)| {
                let tolerant = tolerant && kind == OutputKind::Float;
                match (g, w) {
                    (None, None) => true,
                    (Some(g), Some(w)) => same_value(*g, *w, tolerant),
                    _ => false,
                }
            });
        if same {
            Finding::Holds
        } else {
            Finding::Broken { got, want }
        }
    }

    fn release_all(self) {
        for acc in self.accumulators {
            if self.instance.is_poisoned() {
                break;
            }
            let _ = self.instance.release(acc);
        }
    }
}

/// Event times start here (2023-11-14), one millisecond apart in the order
/// of the case's values.
pub(super) const BASE_TIME: i64 = 1_700_000_000_000;

pub(super) fn same_value(got: f64, want: f64, tolerant: bool) -> bool {
    if got == want || (got.is_nan() && want.is_nan()) {
        return true;
    }
    tolerant && (got - want).abs() <= MERGE_TOLERANCE * got.abs().max(want.abs())
}

/// merge(merge(a, b), c) equals merge(a, merge(b, c)).
///
/// Why: the host merges sliding-window panes and session fragments in
/// whatever grouping the window shapes give; only associativity makes the
/// result independent of that grouping.
fn associative(s: &mut Session<'_>, p: &Parts) -> Result<Finding, PluginError> {
    let (a, b, c) = (s.part(p, 0)?, s.part(p, 1)?, s.part(p, 2)?);
    s.merge(a, b)?;
    s.merge(a, c)?;
    let left = s.finish(a)?;
    let (a, b, c) = (s.part(p, 0)?, s.part(p, 1)?, s.part(p, 2)?);
    s.merge(b, c)?;
    s.merge(a, b)?;
    let right = s.finish(a)?;
    Ok(s.compare(left, right, true))
}

/// merge(a, b) equals merge(b, a), checked only when the plugin declares
/// `commutative` (a promise the host may rely on to merge in any order).
fn commutative(s: &mut Session<'_>, p: &Parts) -> Result<Finding, PluginError> {
    let (a, b) = (s.part(p, 0)?, s.part(p, 1)?);
    s.merge(a, b)?;
    let ab = s.finish(a)?;
    let (a, b) = (s.part(p, 0)?, s.part(p, 1)?);
    s.merge(b, a)?;
    let ba = s.finish(b)?;
    Ok(s.compare(ba, ab, true))
}

/// Accumulators over parts, merged in order, equal one accumulator over all
/// the values: a sliding window built from panes must report what a window
/// fed every event directly would.
fn parts_equal_whole(s: &mut Session<'_>, p: &Parts) -> Result<Finding, PluginError> {
    let first = s.part(p, 0)?;
    for i in 1..p.len() {
        let next = s.part(p, i)?;
        s.merge(first, next)?;
    }
    let merged = s.finish(first)?;
    let all: Vec<f64> = p.concat();
    let whole = s.build(&[&all])?;
    let whole = s.finish(whole)?;
    Ok(s.compare(merged, whole, true))
}

/// A restored snapshot finishes exactly like the original, and still does
/// after both are given more values: checkpoints and hot reloads must not
/// change a window's result, now or later.
fn snapshot_round_trip(
    s: &mut Session<'_>,
    p: &Parts,
    version: u32,
) -> Result<Finding, PluginError> {
    let original = s.build(&[&p[0]])?;
    let bytes = s.instance.snapshot(original)?;
    let restored = s.restore(&bytes, version)?;
    let (want, got) = (s.finish(original)?, s.finish(restored)?);
    if let finding @ Finding::Broken { .. } = s.compare(got, want, false) {
        return Ok(finding);
    }
    let (mut t1, mut t2) = (p[0].len() as i64, p[0].len() as i64);
    s.add_at(original, &p[1], &mut t1)?;
    s.add_at(restored, &p[1], &mut t2)?;
    let (want, got) = (s.finish(original)?, s.finish(restored)?);
    Ok(s.compare(got, want, false))
}

/// Restoring bytes with a state version the plugin does not declare fails
/// with an error (and does not trap): a plugin must not guess at a format it
/// does not know, or an upgrade would silently misread old checkpoints.
fn unknown_state_version(
    s: &mut Session<'_>,
    p: &Parts,
    version: u32,
) -> Result<Finding, PluginError> {
    let acc = s.build(&[&p[0]])?;
    let bytes = s.instance.snapshot(acc)?;
    let unknown = version.wrapping_add(1);
    match s.restore(&bytes, unknown) {
        Ok(_) => Ok(Finding::BrokenBecause(format!(
            "restore with state version {unknown} (the plugin declares {version}) succeeded"
        ))),
        Err(e) if s.instance.is_poisoned() => Err(e),
        Err(_) => Ok(Finding::Holds),
    }
}

/// The same batches given to two fresh accumulators of one instance, with
/// other work between them, give identical outputs: results must depend on
/// the events alone, not on hidden state, so that a replay after a restart
/// reproduces them.
fn deterministic(s: &mut Session<'_>, p: &Parts) -> Result<Finding, PluginError> {
    let batches: Vec<&[f64]> = p.iter().map(Vec::as_slice).collect();
    let first = s.build(&batches)?;
    let first = s.finish(first)?;
    let reversed: Vec<&[f64]> = batches.iter().rev().copied().collect();
    let other = s.build(&reversed)?;
    s.finish(other)?;
    let second = s.build(&batches)?;
    let second = s.finish(second)?;
    Ok(s.compare(second, first, false))
}

/// The values given as these batches, as one batch, and one value at a
/// time give identical outputs: `batch_size` is a speed knob and must never
/// change a result.
fn batch_split_invariant(s: &mut Session<'_>, p: &Parts) -> Result<Finding, PluginError> {
    let batches: Vec<&[f64]> = p.iter().map(Vec::as_slice).collect();
    let split = s.build(&batches)?;
    let split = s.finish(split)?;
    let all = p.concat();
    let whole = s.build(&[&all])?;
    let whole = s.finish(whole)?;
    if let finding @ Finding::Broken { .. } = s.compare(split.clone(), whole.clone(), false) {
        return Ok(finding);
    }
    let singles: Vec<&[f64]> = all.chunks(1).collect();
    let single = s.build(&singles)?;
    let single = s.finish(single)?;
    Ok(s.compare(single, whole, false))
}

/// `a=[1, 2] b=[]`, or `batches=[1] [2, 3]` for unnamed parts.
fn describe_parts(parts: &Parts, names: &[&str]) -> String {
    if names.is_empty() {
        let lists: Vec<String> = parts.iter().map(|p| list_f64(p)).collect();
        format!("parts={}", lists.join(" "))
    } else {
        let lists: Vec<String> = parts
            .iter()
            .zip(names)
            .map(|(p, name)| format!("{name}={}", list_f64(p)))
            .collect();
        lists.join(" ")
    }
}

fn list_f64(values: &[f64]) -> String {
    let items: Vec<String> = values.iter().map(f64::to_string).collect();
    format!("[{}]", items.join(", "))
}

fn list(values: &[Option<f64>]) -> String {
    let items: Vec<String> = values
        .iter()
        .map(|v| v.map_or("null".to_string(), |v| v.to_string()))
        .collect();
    format!("[{}]", items.join(", "))
}

/// SplitMix64: a tiny, good-enough PRNG, so that a seed names a run.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in [0, 1).
    pub(super) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// One value of a kind: small integers (ties and repeats), uniform
    /// floats, or wide-ranging magnitudes of either sign.
    pub(super) fn value(&mut self, kind: u64) -> f64 {
        match kind {
            0 => self.below(10) as f64,
            1 => self.unit() * 1000.0,
            _ => {
                let magnitude = 10f64.powf(self.unit() * 9.0 - 3.0);
                if self.below(2) == 0 {
                    -magnitude
                } else {
                    magnitude
                }
            }
        }
    }

    /// `count` parts of up to 8 values each, some of them empty; one case
    /// uses one kind of value, or (kind 3) a mix of all of them.
    fn parts(&mut self, count: usize) -> Parts {
        let kind = self.below(4);
        (0..count)
            .map(|_| {
                let len = if self.below(6) == 0 {
                    0
                } else {
                    self.below(8) + 1
                };
                (0..len)
                    .map(|_| {
                        let k = if kind == 3 { self.below(3) } else { kind };
                        self.value(k)
                    })
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_say_what_held_failed_or_was_skipped() {
        let line = |outcome| {
            LawResult {
                law: ASSOCIATIVE,
                outcome,
            }
            .to_string()
        };
        assert_eq!(
            line(Outcome::Pass(200)),
            "PASS merge is associative (200 cases)"
        );
        assert_eq!(
            line(Outcome::Skipped("not mergeable".into())),
            "SKIP merge is associative: skipped (not mergeable)"
        );
        assert_eq!(
            line(Outcome::Fail("minimal failing input a=[1]".into())),
            "FAIL merge is associative: minimal failing input a=[1]"
        );
    }

    #[test]
    fn tolerance_is_relative_and_only_where_asked() {
        assert!(same_value(1.0, 1.0 + 1e-12, true));
        assert!(!same_value(1.0, 1.0 + 1e-12, false));
        assert!(!same_value(1.0, 1.0 + 1e-6, true));
        assert!(same_value(1e12, 1e12 + 1.0, true));
        assert!(same_value(f64::NAN, f64::NAN, false));
    }

    /// The built-ins' own code keeps every law, run natively: the checker
    /// itself needs no wasm runtime.
    #[test]
    fn built_ins_keep_the_laws() {
        for name in ["count", "sum", "stats"] {
            let mut instance = crate::plugin::native::aggregation(name, "{}").unwrap();
            let report = check(instance.as_mut(), &LawOptions::default());
            assert!(report.passed(), "{name}: {:?}", report.results);
        }
    }

    #[test]
    fn the_generator_is_a_function_of_the_seed() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        assert_eq!(a.parts(3), b.parts(3));
        assert_ne!(Rng::new(7).parts(5), Rng::new(8).parts(5));
    }
}
