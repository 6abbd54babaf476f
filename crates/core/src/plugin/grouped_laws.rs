//! The law checker for aggregators of interface 0.2 (`sluice plugin test`
//! on a grouped component): the laws of [`super::laws`], restated for
//! grouped calls on typed rows, and the laws only grouped calls have.
//!
//! The host cuts rows into calls as its batches fall: one call carries the
//! rows of many windows (groups), interleaved; a window's rows may arrive in
//! one call or in several; group numbers are the host's and are reused once
//! released; a window's state leaves the plugin as bytes and comes back. So
//! a correct plugin gives each group what the same rows give it sent group
//! by group, whatever the batches and the numbering, and a released group is
//! empty again.
//!
//! Cases are rows of a few groups, each row with a value for every declared
//! input of the input's kind (optional inputs are sometimes missing), drawn
//! from the same deterministic generator as the 0.1 laws (`--seed`
//! reproduces a run). A failing case is shrunk by dropping one row at a time
//! while it still fails.

use super::OutputKind;
use super::PluginError;
use super::grouped::{GroupId, GroupedAggregation, InputKind, InputSpec, OutputValue, Rows, Value};
use super::laws::{
    self, ASSOCIATIVE, BASE_TIME, BATCHES, COMMUTATIVE, DETERMINISTIC, LawOptions, LawReport,
    LawResult, Outcome, PARTS, ROUND_TRIP, Rng, UNKNOWN_VERSION, failure, same_value,
};

const GROUPED: &str = "one grouped call equals the rows sent group by group";
const RELEASE: &str = "a released group is empty again";

/// An input value of a generated row.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Float(f64),
    Integer(i64),
    Boolean(bool),
    Timestamp(i64),
    Text(String),
}

impl Cell {
    fn value(&self) -> Value<'_> {
        match self {
            Self::Float(x) => Value::Float(*x),
            Self::Integer(i) => Value::Integer(*i),
            Self::Boolean(b) => Value::Boolean(*b),
            Self::Timestamp(t) => Value::Timestamp(*t),
            Self::Text(s) => Value::Text(s),
        }
    }
}

/// One generated row: the part (group of the case) it belongs to, its
/// event time, and one cell per declared input (`None`: missing).
#[derive(Debug, Clone, PartialEq)]
struct Row {
    part: usize,
    time: i64,
    cells: Vec<Option<Cell>>,
}

/// One case: rows of `parts` parts, and where the batch law cuts them.
#[derive(Debug, Clone)]
struct Case {
    parts: usize,
    rows: Vec<Row>,
    cuts: Vec<usize>,
}

impl Case {
    fn part(&self, p: usize) -> Vec<&Row> {
        self.rows.iter().filter(|r| r.part == p).collect()
    }
}

/// Text the generator draws from: repeats, the empty string, escapes and
/// non-ASCII.
const WORDS: [&str; 6] = [
    "gpt-4o",
    "llama-3",
    "",
    "mistral",
    "ünï \"cødé\"",
    "gpt-4o-mini",
];

fn cell(rng: &mut Rng, kind: InputKind) -> Cell {
    match kind {
        InputKind::Float => {
            let shape = rng.below(3);
            Cell::Float(rng.value(shape))
        }
        InputKind::Integer => Cell::Integer(rng.below(2001) as i64 - 1000),
        InputKind::Boolean => Cell::Boolean(rng.below(2) == 0),
        InputKind::Timestamp => Cell::Timestamp(BASE_TIME + rng.below(86_400_000) as i64),
        InputKind::Text => Cell::Text(WORDS[rng.below(WORDS.len() as u64) as usize].to_string()),
    }
}

fn generate(rng: &mut Rng, inputs: &[InputSpec], parts: usize) -> Case {
    let len = if rng.below(8) == 0 {
        0
    } else {
        rng.below(24) as usize + 1
    };
    let rows = (0..len)
        .map(|i| Row {
            part: rng.below(parts as u64) as usize,
            time: BASE_TIME + i as i64,
            cells: inputs
                .iter()
                .map(|input| (!input.optional || rng.below(5) != 0).then(|| cell(rng, input.kind)))
                .collect(),
        })
        .collect();
    let cuts = (0..rng.below(4))
        .map(|_| rng.below(len as u64 + 1) as usize)
        .collect();
    Case { parts, rows, cuts }
}

/// One group's outputs.
type Outputs = Vec<Option<OutputValue>>;

/// What one case of a law found.
type Finding = laws::Finding<Outputs>;

/// Checks every law against `instance`, an opened grouped aggregation.
pub fn check(instance: &mut dyn GroupedAggregation, options: &LawOptions) -> LawReport {
    let info = instance.info().clone();
    let mut checker = Checker {
        instance,
        options: *options,
        next_group: 0,
    };
    let mut results = Vec::new();
    let mut record = |law: &'static str, outcome: Outcome| results.push(LawResult { law, outcome });
    record(GROUPED, checker.run(10, 4, grouped_equals_alone));
    record(BATCHES, checker.run(11, 3, batch_split_invariant));
    record(RELEASE, checker.run(12, 1, released_is_empty));
    if info.mergeable {
        record(ASSOCIATIVE, checker.run(13, 3, associative));
        if info.commutative {
            record(COMMUTATIVE, checker.run(14, 2, commutative));
        } else {
            record(
                COMMUTATIVE,
                Outcome::Skipped("not declared commutative".into()),
            );
        }
        record(PARTS, checker.run(15, 4, parts_equal_whole));
    } else {
        for law in [ASSOCIATIVE, COMMUTATIVE, PARTS] {
            record(law, Outcome::Skipped("not mergeable".into()));
        }
    }
    let version = info.state_version;
    record(
        ROUND_TRIP,
        checker.run(16, 2, move |s, c| round_trip(s, c, version)),
    );
    record(
        UNKNOWN_VERSION,
        checker.run(17, 1, move |s, c| unknown_version(s, c, version)),
    );
    record(DETERMINISTIC, checker.run(18, 2, deterministic));
    LawReport { results }
}

type Law<'l> = dyn Fn(&mut Session<'_>, &Case) -> Result<Finding, PluginError> + 'l;

struct Checker<'i> {
    instance: &'i mut dyn GroupedAggregation,
    options: LawOptions,
    /// Group numbers are never reused between cases, so that a case cannot
    /// see another's state through a group the plugin failed to release.
    next_group: u32,
}

impl Checker<'_> {
    fn run(
        &mut self,
        salt: u64,
        parts: usize,
        law: impl Fn(&mut Session<'_>, &Case) -> Result<Finding, PluginError>,
    ) -> Outcome {
        let inputs = self.instance.inputs().to_vec();
        let mut rng = Rng::new(self.options.seed ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        for _ in 0..self.options.cases {
            let case = generate(&mut rng, &inputs, parts);
            if !matches!(self.attempt(&law, &case), Ok(Finding::Holds)) {
                return self.report_failure(&law, case);
            }
        }
        Outcome::Pass(self.options.cases)
    }

    fn attempt(&mut self, law: &Law<'_>, case: &Case) -> Result<Finding, PluginError> {
        if self.instance.is_poisoned() {
            self.instance.reopen()?;
        }
        let mut session = Session {
            instance: &mut *self.instance,
            next: self.next_group,
            used: Vec::new(),
        };
        let finding = law(&mut session, case);
        self.next_group = session.next;
        session.release_all();
        if self.next_group > u32::MAX / 2 {
            // Far beyond any run of the checker; start over in a fresh instance.
            self.next_group = 0;
            self.instance.reopen()?;
        }
        finding
    }

    fn report_failure(&mut self, law: &Law<'_>, mut case: Case) -> Outcome {
        'shrink: loop {
            for i in 0..case.rows.len() {
                let mut smaller = case.clone();
                smaller.rows.remove(i);
                if !matches!(self.attempt(law, &smaller), Ok(Finding::Holds)) {
                    case = smaller;
                    continue 'shrink;
                }
            }
            break;
        }
        let inputs = self.instance.inputs().to_vec();
        let input = describe(&case, &inputs);
        failure(&input, self.attempt(law, &case), |o| list(o))
    }
}

/// The groups of one case, released when it is done.
struct Session<'i> {
    instance: &'i mut dyn GroupedAggregation,
    next: u32,
    used: Vec<GroupId>,
}

impl Session<'_> {
    /// A group no call has named yet.
    fn group(&mut self) -> GroupId {
        // Spread out, so that numbering is not a hidden order.
        let group = GroupId(self.next.wrapping_mul(3) / 2 + 1);
        self.next += 1;
        self.used.push(group);
        group
    }

    /// One update call with `rows`, row `i` going to `groups[i]` (none
    /// without rows).
    fn update(&mut self, rows: &[&Row], groups: &[GroupId]) -> Result<(), PluginError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut batch = Rows::for_inputs(self.instance.inputs());
        for (row, group) in rows.iter().zip(groups) {
            batch.groups.push(*group);
            batch.times.push(row.time);
            for (column, cell) in batch.columns.iter_mut().zip(&row.cells) {
                let pushed = column.push(cell.as_ref().map(Cell::value));
                debug_assert!(pushed, "a generated cell of another kind than its input");
            }
        }
        self.instance.update(&batch)
    }

    /// Updates a new group with `rows` in one call.
    fn build(&mut self, rows: &[&Row]) -> Result<GroupId, PluginError> {
        let group = self.group();
        self.update(rows, &vec![group; rows.len()])?;
        Ok(group)
    }

    fn evaluate(&mut self, groups: &[GroupId]) -> Result<Vec<Outputs>, PluginError> {
        self.instance.evaluate(groups)
    }

    fn one(&mut self, group: GroupId) -> Result<Outputs, PluginError> {
        Ok(self.evaluate(&[group])?.pop().unwrap_or_default())
    }

    fn compare(&self, got: Outputs, want: Outputs, tolerant: bool) -> Finding {
        let kinds = self.instance.outputs().iter().map(|o| o.kind);
        let same =
            got.len() == want.len()
                && got.iter().zip(&want).zip(kinds).all(|((g, w), kind)| {
                    same_output(g, w, tolerant && kind != OutputKind::Integer)
                });
        if same {
            Finding::Holds
        } else {
            Finding::Broken { got, want }
        }
    }

    /// Compares the outputs of `parts` groups, group by group, exactly.
    fn compare_groups(&self, got: Vec<Outputs>, want: Vec<Outputs>, parts: usize) -> Finding {
        if got.len() != parts || want.len() != parts {
            return Finding::BrokenBecause(format!(
                "evaluate gave {} and {} groups' outputs for {parts} groups",
                got.len(),
                want.len()
            ));
        }
        for (got, want) in got.into_iter().zip(want) {
            if let finding @ Finding::Broken { .. } = self.compare(got, want, false) {
                return finding;
            }
        }
        Finding::Holds
    }

    fn release_all(self) {
        if !self.instance.is_poisoned() && !self.used.is_empty() {
            let _ = self.instance.release(&self.used);
        }
    }
}

fn same_output(got: &Option<OutputValue>, want: &Option<OutputValue>, tolerant: bool) -> bool {
    match (got, want) {
        (None, None) => true,
        (Some(OutputValue::Float(g)), Some(OutputValue::Float(w))) => same_value(*g, *w, tolerant),
        (Some(OutputValue::Ranked(g)), Some(OutputValue::Ranked(w))) => {
            g.len() == w.len()
                && g.iter()
                    .zip(w)
                    .all(|(g, w)| g.label == w.label && same_value(g.value, w.value, tolerant))
        }
        (g, w) => g == w,
    }
}

/// Every row in one call, groups interleaved and numbered apart, equals
/// each group's rows in a call of its own.
///
/// Why: the host puts every window of a batch in one call; a plugin that
/// mixes groups up, or depends on where a group's rows sit in the call,
/// gives a window a result that depends on its neighbours.
fn grouped_equals_alone(s: &mut Session<'_>, c: &Case) -> Result<Finding, PluginError> {
    let together: Vec<GroupId> = (0..c.parts).map(|_| s.group()).collect();
    let rows: Vec<&Row> = c.rows.iter().collect();
    let groups: Vec<GroupId> = rows.iter().map(|r| together[r.part]).collect();
    s.update(&rows, &groups)?;
    let got = s.evaluate(&together)?;
    let mut alone = Vec::new();
    for p in 0..c.parts {
        alone.push(s.build(&c.part(p))?);
    }
    let want = s.evaluate(&alone)?;
    Ok(s.compare_groups(got, want, c.parts))
}

/// The rows cut into several calls at the case's cut points equal them in
/// one call: `batch_size` is a speed knob.
fn batch_split_invariant(s: &mut Session<'_>, c: &Case) -> Result<Finding, PluginError> {
    let rows: Vec<&Row> = c.rows.iter().collect();
    let whole: Vec<GroupId> = (0..c.parts).map(|_| s.group()).collect();
    let groups: Vec<GroupId> = rows.iter().map(|r| whole[r.part]).collect();
    s.update(&rows, &groups)?;
    let split: Vec<GroupId> = (0..c.parts).map(|_| s.group()).collect();
    let mut cuts: Vec<usize> = c.cuts.iter().map(|&i| i.min(rows.len())).collect();
    cuts.push(rows.len());
    cuts.sort_unstable();
    let mut from = 0;
    for to in cuts {
        if to > from {
            let chunk = &rows[from..to];
            let groups: Vec<GroupId> = chunk.iter().map(|r| split[r.part]).collect();
            s.update(chunk, &groups)?;
            from = to;
        }
    }
    let (want, got) = (s.evaluate(&whole)?, s.evaluate(&split)?);
    Ok(s.compare_groups(got, want, c.parts))
}

/// A group given rows and released evaluates like a group never named:
/// the host reuses a released window's number for the next window.
fn released_is_empty(s: &mut Session<'_>, c: &Case) -> Result<Finding, PluginError> {
    let used = s.build(&c.part(0))?;
    s.instance.release(&[used])?;
    let fresh = s.group();
    let (got, want) = (s.one(used)?, s.one(fresh)?);
    Ok(s.compare(got, want, false))
}

/// merge(merge(a, b), c) equals merge(a, merge(b, c)).
fn associative(s: &mut Session<'_>, c: &Case) -> Result<Finding, PluginError> {
    let (a, b, d) = (
        s.build(&c.part(0))?,
        s.build(&c.part(1))?,
        s.build(&c.part(2))?,
    );
    s.instance.merge(&[a, a], &[b, d])?;
    let left = s.one(a)?;
    let (a, b, d) = (
        s.build(&c.part(0))?,
        s.build(&c.part(1))?,
        s.build(&c.part(2))?,
    );
    s.instance.merge(&[b, a], &[d, b])?;
    let right = s.one(a)?;
    Ok(s.compare(left, right, true))
}

/// merge(a, b) equals merge(b, a), when the plugin declares it.
fn commutative(s: &mut Session<'_>, c: &Case) -> Result<Finding, PluginError> {
    let (a, b) = (s.build(&c.part(0))?, s.build(&c.part(1))?);
    s.instance.merge(&[a], &[b])?;
    let ab = s.one(a)?;
    let (a, b) = (s.build(&c.part(0))?, s.build(&c.part(1))?);
    s.instance.merge(&[b], &[a])?;
    let ba = s.one(b)?;
    Ok(s.compare(ba, ab, true))
}

/// Groups over parts, merged in order, equal one group over all rows.
fn parts_equal_whole(s: &mut Session<'_>, c: &Case) -> Result<Finding, PluginError> {
    let parts: Vec<GroupId> = (0..c.parts)
        .map(|p| s.build(&c.part(p)))
        .collect::<Result<_, _>>()?;
    let into = vec![parts[0]; parts.len() - 1];
    s.instance.merge(&into, &parts[1..])?;
    let merged = s.one(parts[0])?;
    let mut all = Vec::new();
    for p in 0..c.parts {
        all.extend(c.part(p));
    }
    let whole = s.build(&all)?;
    let whole = s.one(whole)?;
    Ok(s.compare(merged, whole, true))
}

/// A group restored from another's snapshot evaluates as the original, and
/// still does after both take more rows.
fn round_trip(s: &mut Session<'_>, c: &Case, version: u32) -> Result<Finding, PluginError> {
    let original = s.build(&c.part(0))?;
    let bytes = s.instance.snapshot(&[original])?.pop().unwrap_or_default();
    let restored = s.group();
    let refused = s.instance.restore(&[restored], &[&bytes], version)?;
    if let Some(refusal) = refused.first() {
        return Ok(Finding::BrokenBecause(format!(
            "restoring its own snapshot was refused: {}",
            refusal.message
        )));
    }
    let (want, got) = (s.one(original)?, s.one(restored)?);
    if let finding @ Finding::Broken { .. } = s.compare(got, want, false) {
        return Ok(finding);
    }
    let after = c.part(1);
    s.update(&after, &vec![original; after.len()])?;
    s.update(&after, &vec![restored; after.len()])?;
    let (want, got) = (s.one(original)?, s.one(restored)?);
    Ok(s.compare(got, want, false))
}

/// Restoring bytes with a state version the plugin does not declare is
/// refused for that group (an answer, not a trap).
fn unknown_version(s: &mut Session<'_>, c: &Case, version: u32) -> Result<Finding, PluginError> {
    let group = s.build(&c.part(0))?;
    let bytes = s.instance.snapshot(&[group])?.pop().unwrap_or_default();
    let unknown = version.wrapping_add(1);
    let target = s.group();
    let refused = s.instance.restore(&[target], &[&bytes], unknown)?;
    Ok(if refused.iter().any(|r| r.group == target) {
        Finding::Holds
    } else {
        Finding::BrokenBecause(format!(
            "restore with state version {unknown} (the plugin declares {version}) succeeded"
        ))
    })
}

/// The same rows given to two groups, with other work between, evaluate
/// the same.
fn deterministic(s: &mut Session<'_>, c: &Case) -> Result<Finding, PluginError> {
    let rows: Vec<&Row> = c.rows.iter().collect();
    let first = s.build(&rows)?;
    let first = s.one(first)?;
    let reversed: Vec<&Row> = rows.iter().rev().copied().collect();
    s.build(&reversed)?;
    let second = s.build(&rows)?;
    let second = s.one(second)?;
    Ok(s.compare(second, first, false))
}

fn describe(case: &Case, inputs: &[InputSpec]) -> String {
    let rows: Vec<String> = case
        .rows
        .iter()
        .map(|r| {
            let cells: Vec<String> = r
                .cells
                .iter()
                .zip(inputs)
                .map(|(cell, input)| match cell {
                    None => format!("{}=missing", input.name),
                    Some(Cell::Text(t)) => format!("{}={t:?}", input.name),
                    Some(Cell::Float(x)) => format!("{}={x}", input.name),
                    Some(Cell::Integer(i) | Cell::Timestamp(i)) => format!("{}={i}", input.name),
                    Some(Cell::Boolean(b)) => format!("{}={b}", input.name),
                })
                .collect();
            format!("part {} ({})", r.part, cells.join(", "))
        })
        .collect();
    format!("[{}]", rows.join("; "))
}

fn list(values: &[Option<OutputValue>]) -> String {
    let shown: Vec<String> = values
        .iter()
        .map(|v| match v {
            None => "null".into(),
            Some(OutputValue::Integer(i)) => i.to_string(),
            Some(OutputValue::Float(x)) => x.to_string(),
            Some(OutputValue::Text(t)) => format!("{t:?}"),
            Some(OutputValue::Boolean(b)) => b.to_string(),
            Some(OutputValue::Ranked(r)) => {
                let entries: Vec<String> = r
                    .iter()
                    .map(|e| format!("{:?}: {}", e.label, e.value))
                    .collect();
                format!("[{}]", entries.join(", "))
            }
        })
        .collect();
    format!("[{}]", shown.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::grouped::PerWindow;
    use crate::plugin::native;

    /// The built-ins behind the 0.1 adapter keep every grouped law: the
    /// adapter is what runs every 0.1 plugin in a pipeline.
    #[test]
    fn built_ins_behind_the_adapter_keep_the_grouped_laws() {
        for name in ["count", "sum", "stats", "percentiles"] {
            let mut grouped = PerWindow::new(native::aggregation(name, "{}").unwrap());
            let report = check(&mut grouped, &LawOptions::default());
            assert!(report.passed(), "{name}: {:?}", report.results);
            assert_eq!(report.results.len(), 9);
        }
    }

    #[test]
    fn the_generator_draws_every_kind_and_misses_only_optional_inputs() {
        let spec = |name: &str, kind, optional| InputSpec {
            name: name.into(),
            kind,
            optional,
            description: String::new(),
        };
        let inputs = [
            spec("a", InputKind::Text, false),
            spec("b", InputKind::Boolean, true),
            spec("c", InputKind::Timestamp, false),
            spec("d", InputKind::Integer, true),
        ];
        let mut rng = Rng::new(3);
        let rows: Vec<Row> = (0..50)
            .flat_map(|_| generate(&mut rng, &inputs, 3).rows)
            .collect();
        assert!(
            rows.iter()
                .all(|r| r.cells[0].is_some() && r.cells[2].is_some())
        );
        assert!(rows.iter().any(|r| r.cells[1].is_none()));
        assert!(rows.iter().any(|r| r.cells[3].is_none()));
        assert!(rows.iter().all(|r| r.part < 3));
        assert!(
            rows.iter()
                .any(|r| r.cells[0] == Some(Cell::Text(String::new())))
        );
        assert!(
            rows.iter()
                .all(|r| matches!(r.cells[2], Some(Cell::Timestamp(t)) if t >= BASE_TIME))
        );
    }
}
