//! The grouped plugin boundary (interface `sluice:plugin@0.2.0`): one call
//! serves a batch of rows for many windows, with typed inputs and
//! structured outputs.
//!
//! The most interesting items in this module are [`GroupedAggregation`],
//! the trait the window store will drive, [`Rows`] and [`Column`], the
//! columnar batch it is called with (a plain column plus a validity bitmap
//! per input, text in one buffer with offsets: the layout the component
//! model copies cheapest, see `docs/plugins/interface-0.2.md`), and
//! [`PerWindow`], which serves a 0.1 [`Aggregation`] (one accumulator per
//! window, one number in) behind the grouped trait, so that the store needs
//! one calling convention for both versions.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::{AccumulatorHandle, Aggregation, OutputKind, OutputSpec, PluginError, PluginInfo};

/// The type of an input's values (WIT `input-kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// A 64-bit float.
    Float,
    /// A signed 64-bit integer.
    Integer,
    /// UTF-8 text.
    Text,
    /// `true` or `false`.
    Boolean,
    /// An instant in epoch milliseconds.
    Timestamp,
}

impl InputKind {
    /// Its name in the WIT and in `plugin inspect`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Float => "float",
            Self::Integer => "integer",
            Self::Text => "text",
            Self::Boolean => "boolean",
            Self::Timestamp => "timestamp",
        }
    }
}

/// One named input of an aggregation, which a pipeline binds to an event
/// field (WIT `input-spec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpec {
    /// Short name such as `weight`.
    pub name: String,
    /// The type its values are decoded to.
    pub kind: InputKind,
    /// Whether a row may lack it.
    pub optional: bool,
    /// One line for humans.
    pub description: String,
}

/// A group: one window's (or pane's, or session's) state inside a
/// [`GroupedAggregation`]. The caller picks the indices and reuses one
/// once it has released it, so an implementation can keep its states in a
/// vector indexed by group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(pub u32);

/// Text values of a batch in one buffer: row `i` is
/// `bytes[offsets[i]..offsets[i + 1]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextValues {
    /// Where each row's text starts, and where the last one ends (one entry
    /// more than rows).
    pub offsets: Vec<u32>,
    /// The rows' UTF-8 text, concatenated.
    pub bytes: Vec<u8>,
}

impl Default for TextValues {
    fn default() -> Self {
        Self {
            offsets: vec![0],
            bytes: Vec::new(),
        }
    }
}

impl TextValues {
    /// Row `row`'s text; `None` when the row is out of range or its bytes
    /// are not UTF-8 (which only a plugin's own bytes can be).
    pub fn get(&self, row: usize) -> Option<&str> {
        let start = usize::try_from(*self.offsets.get(row)?).ok()?;
        let end = usize::try_from(*self.offsets.get(row + 1)?).ok()?;
        std::str::from_utf8(self.bytes.get(start..end)?).ok()
    }

    fn push(&mut self, text: &str) {
        self.bytes.extend_from_slice(text.as_bytes());
        // A batch's text is far below 4 GiB: the store cuts batches by rows.
        self.offsets
            .push(u32::try_from(self.bytes.len()).unwrap_or(u32::MAX));
    }
}

/// The values of one input for every row of a batch (WIT `column-values`).
/// A missing row holds a placeholder (zero, `false`, empty text).
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnValues {
    /// One `f64` per row.
    Float(Vec<f64>),
    /// One `i64` per row.
    Integer(Vec<i64>),
    /// Bit `i % 8` of byte `i / 8` is row `i`'s value; `len` rows.
    Boolean {
        /// The bits.
        bits: Vec<u8>,
        /// How many rows.
        len: usize,
    },
    /// One epoch-millisecond instant per row.
    Timestamp(Vec<i64>),
    /// The rows' text.
    Text(TextValues),
}

/// One value of an input, as [`Column::push`] takes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// A float.
    Float(f64),
    /// An integer.
    Integer(i64),
    /// A boolean.
    Boolean(bool),
    /// An instant in epoch milliseconds.
    Timestamp(i64),
    /// Text.
    Text(&'a str),
}

/// One input's values for a batch of rows, and which are present.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// The values, in the input's kind.
    pub values: ColumnValues,
    /// Bit `i % 8` of byte `i / 8` is set when row `i` has a value; empty
    /// while every row has one.
    pub validity: Vec<u8>,
}

fn bit(bits: &[u8], i: usize) -> bool {
    bits.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
}

fn push_bit(bits: &mut Vec<u8>, i: usize, set: bool) {
    if i / 8 >= bits.len() {
        bits.push(0);
    }
    if set {
        bits[i / 8] |= 1 << (i % 8);
    }
}

impl Column {
    /// An empty column of `kind`.
    pub fn new(kind: InputKind) -> Self {
        let values = match kind {
            InputKind::Float => ColumnValues::Float(Vec::new()),
            InputKind::Integer => ColumnValues::Integer(Vec::new()),
            InputKind::Boolean => ColumnValues::Boolean {
                bits: Vec::new(),
                len: 0,
            },
            InputKind::Timestamp => ColumnValues::Timestamp(Vec::new()),
            InputKind::Text => ColumnValues::Text(TextValues::default()),
        };
        Self {
            values,
            validity: Vec::new(),
        }
    }

    /// A column of floats, every row present.
    pub fn floats(values: Vec<f64>) -> Self {
        Self {
            values: ColumnValues::Float(values),
            validity: Vec::new(),
        }
    }

    /// The kind of its values.
    pub fn kind(&self) -> InputKind {
        match self.values {
            ColumnValues::Float(_) => InputKind::Float,
            ColumnValues::Integer(_) => InputKind::Integer,
            ColumnValues::Boolean { .. } => InputKind::Boolean,
            ColumnValues::Timestamp(_) => InputKind::Timestamp,
            ColumnValues::Text(_) => InputKind::Text,
        }
    }

    /// How many rows it holds.
    pub fn len(&self) -> usize {
        match &self.values {
            ColumnValues::Float(v) => v.len(),
            ColumnValues::Integer(v) | ColumnValues::Timestamp(v) => v.len(),
            ColumnValues::Boolean { len, .. } => *len,
            ColumnValues::Text(t) => t.offsets.len().saturating_sub(1),
        }
    }

    /// Whether it holds no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether row `row` has a value.
    pub fn is_present(&self, row: usize) -> bool {
        row < self.len() && (self.validity.is_empty() || bit(&self.validity, row))
    }

    /// Appends a row: `value`, or a missing one. Returns false, appending
    /// nothing, when the value is of another kind than the column.
    pub fn push(&mut self, value: Option<Value<'_>>) -> bool {
        let row = self.len();
        let present = value.is_some();
        match (&mut self.values, value) {
            (ColumnValues::Float(v), Some(Value::Float(x))) => v.push(x),
            (ColumnValues::Float(v), None) => v.push(0.0),
            (ColumnValues::Integer(v), Some(Value::Integer(x)))
            | (ColumnValues::Timestamp(v), Some(Value::Timestamp(x))) => v.push(x),
            (ColumnValues::Integer(v) | ColumnValues::Timestamp(v), None) => v.push(0),
            (ColumnValues::Boolean { bits, len }, Some(Value::Boolean(b))) => {
                push_bit(bits, *len, b);
                *len += 1;
            }
            (ColumnValues::Boolean { bits, len }, None) => {
                push_bit(bits, *len, false);
                *len += 1;
            }
            (ColumnValues::Text(t), Some(Value::Text(s))) => t.push(s),
            (ColumnValues::Text(t), None) => t.push(""),
            _ => return false,
        }
        if !present && self.validity.is_empty() {
            // The first missing row: every earlier row was present.
            self.validity = vec![0xff; row.div_ceil(8)];
            if !row.is_multiple_of(8) {
                let last = self.validity.len() - 1;
                self.validity[last] = (1u8 << (row % 8)) - 1;
            }
        }
        if !self.validity.is_empty() || !present {
            push_bit(&mut self.validity, row, present);
        }
        true
    }

    /// Row `row`'s value, `None` when it is missing or out of range.
    pub fn get(&self, row: usize) -> Option<Value<'_>> {
        if !self.is_present(row) {
            return None;
        }
        match &self.values {
            ColumnValues::Float(v) => v.get(row).copied().map(Value::Float),
            ColumnValues::Integer(v) => v.get(row).copied().map(Value::Integer),
            ColumnValues::Timestamp(v) => v.get(row).copied().map(Value::Timestamp),
            ColumnValues::Boolean { bits, .. } => Some(Value::Boolean(bit(bits, row))),
            ColumnValues::Text(t) => t.get(row).map(Value::Text),
        }
    }

    /// Appends rows `range` of `other`, a column of the same kind; returns
    /// false, appending nothing more, at the first row of another kind.
    pub fn extend_from(&mut self, other: &Column, range: std::ops::Range<usize>) -> bool {
        if let (ColumnValues::Float(to), ColumnValues::Float(from)) =
            (&mut self.values, &other.values)
            && other.validity.is_empty()
            && self.validity.is_empty()
            && let Some(from) = from.get(range.clone())
        {
            // The common case, every value present: one copy.
            to.extend_from_slice(from);
            return true;
        }
        range.into_iter().all(|row| self.push(other.get(row)))
    }

    /// Keeps the first `n` rows only.
    pub fn truncate(&mut self, n: usize) {
        if n < self.len() {
            let mut kept = Column::new(self.kind());
            kept.extend_from(self, 0..n);
            *self = kept;
        }
    }

    /// Removes the first `n` rows (all of them when it holds fewer).
    pub fn drain_front(&mut self, n: usize) {
        let len = self.len();
        if n >= len {
            self.clear();
            return;
        }
        let mut rest = Column::new(self.kind());
        rest.extend_from(self, n..len);
        *self = rest;
    }

    /// Removes every row, keeping the buffers for the next batch.
    pub fn clear(&mut self) {
        match &mut self.values {
            ColumnValues::Float(v) => v.clear(),
            ColumnValues::Integer(v) | ColumnValues::Timestamp(v) => v.clear(),
            ColumnValues::Boolean { bits, len } => {
                bits.clear();
                *len = 0;
            }
            ColumnValues::Text(t) => {
                t.bytes.clear();
                t.offsets.clear();
                t.offsets.push(0);
            }
        }
        self.validity.clear();
    }
}

/// A batch of rows, each for one group (WIT `rows`): rows of one group in
/// the order their events arrived, groups possibly interleaved.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rows {
    /// The group of each row.
    pub groups: Vec<GroupId>,
    /// Each row's event time.
    pub times: Vec<i64>,
    /// One column per declared input, in declared order.
    pub columns: Vec<Column>,
}

impl Rows {
    /// An empty batch with one column per input of `inputs`.
    pub fn for_inputs(inputs: &[InputSpec]) -> Self {
        Self {
            groups: Vec::new(),
            times: Vec::new(),
            columns: inputs.iter().map(|i| Column::new(i.kind)).collect(),
        }
    }

    /// How many rows it holds.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Whether it holds no rows.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Checks that every list has one entry per row and that the columns
    /// are of the declared inputs' kinds, in order.
    pub fn check(&self, inputs: &[InputSpec]) -> Result<(), String> {
        let rows = self.len();
        if self.times.len() != rows {
            return Err(format!("{} times for {rows} rows", self.times.len()));
        }
        if self.columns.len() != inputs.len() {
            return Err(format!(
                "{} columns for {} declared inputs",
                self.columns.len(),
                inputs.len()
            ));
        }
        for (column, input) in self.columns.iter().zip(inputs) {
            if column.kind() != input.kind {
                return Err(format!(
                    "input `{}` is declared {:?} but its column holds {:?}",
                    input.name,
                    input.kind,
                    column.kind()
                ));
            }
            if column.len() != rows {
                return Err(format!(
                    "input `{}` has {} values for {rows} rows",
                    input.name,
                    column.len()
                ));
            }
        }
        Ok(())
    }

    /// Keeps the first `n` rows only.
    pub fn truncate(&mut self, n: usize) {
        self.groups.truncate(n);
        self.times.truncate(n);
        for column in &mut self.columns {
            column.truncate(n);
        }
    }

    /// Removes every row, keeping the buffers for the next batch.
    pub fn clear(&mut self) {
        self.groups.clear();
        self.times.clear();
        for column in &mut self.columns {
            column.clear();
        }
    }
}

/// One entry of a ranked output: a label and the number it is ranked by.
#[derive(Debug, Clone, PartialEq)]
pub struct RankedEntry {
    /// What is ranked, such as a model name.
    pub label: String,
    /// Its count or weight.
    pub value: f64,
}

/// One output value of one group (a value of WIT `output-values`).
#[derive(Debug, Clone, PartialEq)]
pub enum OutputValue {
    /// A JSON integer.
    Integer(i64),
    /// A JSON number.
    Float(f64),
    /// A JSON string.
    Text(String),
    /// JSON `true` or `false`.
    Boolean(bool),
    /// A JSON array of `{"label", "value"}` objects, in order.
    Ranked(Vec<RankedEntry>),
}

impl OutputValue {
    /// The value as a number, for a trigger's preview: integers and floats
    /// only.
    pub fn number(&self) -> Option<f64> {
        match self {
            Self::Integer(i) => Some(*i as f64),
            Self::Float(f) => Some(*f),
            _ => None,
        }
    }
}

/// A group that could not be restored, and the plugin's explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupError {
    /// The group, left empty.
    pub group: GroupId,
    /// Why.
    pub message: String,
}

/// One configured aggregation holding the states of many groups (windows,
/// panes or sessions), called for batches of them.
///
/// A grouped aggregation knows how to:
/// - declare its typed inputs and its outputs;
/// - fold a batch of rows, each for one group, into the groups' states (a
///   group it has not seen, or has released, starts empty);
/// - merge groups into groups (when [`PluginInfo::mergeable`]);
/// - evaluate groups into their outputs, without changing them;
/// - snapshot groups as bytes in its state format, and restore groups from
///   such bytes;
/// - release groups, freeing their state.
///
/// ## Correctness
///
/// Results must not depend on how rows are split into batches, on how rows
/// of different groups interleave within a batch, or on whether a group's
/// state was snapshotted, released and restored in between; merge must be
/// associative and agree with updating one group with all the rows.
///
/// ## Failures
///
/// As for [`Aggregation`]: a trap, timeout or exhausted memory *poisons*
/// the implementation, every group is lost, and [`GroupedAggregation::reopen`]
/// must be called before the next call. A refused merge or a state that
/// cannot be restored is an answer, not a poisoning.
pub trait GroupedAggregation: Send {
    /// `source (name version)`, the name errors use.
    fn label(&self) -> &str;
    /// The plugin's self-description.
    fn info(&self) -> &PluginInfo;
    /// The inputs [`GroupedAggregation::update`] takes, in column order.
    fn inputs(&self) -> &[InputSpec];
    /// The outputs [`GroupedAggregation::evaluate`] returns, in order.
    fn outputs(&self) -> &[OutputSpec];
    /// Whether a call failed so that every group is lost.
    fn is_poisoned(&self) -> bool;
    /// When the call that poisoned it failed because its memory limit
    /// refused a growth: that limit in bytes (as
    /// [`Aggregation::out_of_memory`]). `None` otherwise.
    fn out_of_memory(&self) -> Option<u64> {
        None
    }
    /// Calls made and the time spent in them, over the whole life.
    fn call_stats(&self) -> (u64, Duration);
    /// Replaces the instance with a fresh one of the same plugin and
    /// config; every group is empty again.
    fn reopen(&mut self) -> Result<(), PluginError>;
    /// Folds each row into its group's state. `rows` passes
    /// [`Rows::check`] against [`GroupedAggregation::inputs`].
    fn update(&mut self, rows: &Rows) -> Result<(), PluginError>;
    /// Folds group `from[i]` into group `into[i]`, for each `i` in order;
    /// the `from` groups are unchanged. The slices have the same length.
    fn merge(&mut self, into: &[GroupId], from: &[GroupId]) -> Result<(), PluginError>;
    /// The outputs of each group of `groups`, in that order: per group one
    /// value per declared output (`None`: undefined, written as null).
    fn evaluate(
        &mut self,
        groups: &[GroupId],
    ) -> Result<Vec<Vec<Option<OutputValue>>>, PluginError>;
    /// Each group's state as bytes, in the order of `groups`.
    fn snapshot(&mut self, groups: &[GroupId]) -> Result<Vec<Vec<u8>>, PluginError>;
    /// Sets each group of `groups` to the state at the same position of
    /// `states`, written in format `state_version`. Returns the groups that
    /// could not be restored (left empty), with why.
    fn restore(
        &mut self,
        groups: &[GroupId],
        states: &[&[u8]],
        state_version: u32,
    ) -> Result<Vec<GroupError>, PluginError>;
    /// Empties each group of `groups` and frees its state.
    fn release(&mut self, groups: &[GroupId]) -> Result<(), PluginError>;
}

/// Checks a plugin's declared inputs: plain names (lowercase letters,
/// digits, `_`), no repeats. None at all is fine (a count needs no input).
pub fn check_inputs(inputs: &[InputSpec]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for i in inputs {
        let valid = !i.name.is_empty()
            && i.name.len() <= super::untrusted::NAME_LIMIT
            && i.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(format!("input name {:?} is not a plain name", i.name));
        }
        if !seen.insert(i.name.as_str()) {
            return Err(format!("input name {:?} is declared twice", i.name));
        }
    }
    Ok(())
}

/// `` `value` (float), `weight` (float, optional) ``, or `no input`: the
/// declared inputs as messages name them.
pub fn describe_inputs(inputs: &[InputSpec]) -> String {
    if inputs.is_empty() {
        return "no input".into();
    }
    let each: Vec<String> = inputs
        .iter()
        .map(|i| {
            let optional = if i.optional { ", optional" } else { "" };
            format!("`{}` ({}{optional})", i.name, i.kind.name())
        })
        .collect();
    each.join(", ")
}

/// Whether `inputs` are one required float: what a 0.1 aggregation takes.
/// The decoder and the window store carry such an aggregation's values as
/// plain numbers, one per event, whatever its interface version.
pub fn takes_one_number(inputs: &[InputSpec]) -> bool {
    matches!(inputs, [one] if one.kind == InputKind::Float && !one.optional)
}

/// The one input a 0.1 aggregation takes: the number a pipeline's `field:`
/// names.
pub fn single_value_input() -> InputSpec {
    InputSpec {
        name: "value".into(),
        kind: InputKind::Float,
        optional: false,
        description: "the number the pipeline's `field` names".into(),
    }
}

/// A 0.1 [`Aggregation`] (one accumulator per window, one number in, numbers
/// out) behind [`GroupedAggregation`]: each group is an accumulator, created
/// when the group is first named, and a batch is cut into one `add` per
/// group, in the order of the group's first row.
///
/// Its one input is [`single_value_input`]. A row without a value is not
/// handed to the plugin (0.1 cannot express one); the window store applies
/// the pipeline's `on_missing` policy before that. An `integer` output is
/// an integral `f64` in 0.1: it becomes [`OutputValue::Integer`] below
/// 9e15 in magnitude and stays [`OutputValue::Float`] above, which is how
/// result records have always rendered it.
pub struct PerWindow {
    inner: Box<dyn Aggregation>,
    inputs: [InputSpec; 1],
    accumulators: HashMap<GroupId, AccumulatorHandle>,
    /// A run's present values and their times, reused across calls.
    values: Vec<f64>,
    times: Vec<i64>,
}

impl PerWindow {
    /// `inner` behind [`GroupedAggregation`], boxed as the window store
    /// takes it.
    pub fn boxed(inner: Box<dyn Aggregation>) -> Box<dyn GroupedAggregation> {
        Box::new(Self::new(inner))
    }

    /// Serves `inner` behind [`GroupedAggregation`].
    pub fn new(inner: Box<dyn Aggregation>) -> Self {
        Self {
            inner,
            inputs: [single_value_input()],
            accumulators: HashMap::new(),
            values: Vec::new(),
            times: Vec::new(),
        }
    }

    /// The 0.1 aggregation it serves.
    pub fn inner(&self) -> &dyn Aggregation {
        self.inner.as_ref()
    }

    /// The accumulator of `group`, created if the group is new.
    fn accumulator(&mut self, group: GroupId) -> Result<AccumulatorHandle, PluginError> {
        if let Some(acc) = self.accumulators.get(&group) {
            return Ok(*acc);
        }
        let acc = self.inner.create()?;
        self.accumulators.insert(group, acc);
        Ok(acc)
    }

    /// Forgets every accumulator when the inner instance lost them.
    fn forget_if_poisoned<R>(&mut self, result: Result<R, PluginError>) -> Result<R, PluginError> {
        if self.inner.is_poisoned() {
            self.accumulators.clear();
        }
        result
    }

    fn misuse(&self, message: String) -> PluginError {
        PluginError::Call {
            plugin: self.inner.label().to_string(),
            message,
        }
    }

    fn update_groups(&mut self, rows: &Rows) -> Result<(), PluginError> {
        let [column] = rows.columns.as_slice() else {
            return Err(self.misuse(format!(
                "takes one input but was given {} columns",
                rows.columns.len()
            )));
        };
        let ColumnValues::Float(values) = &column.values else {
            return Err(self.misuse(format!(
                "takes a float input but was given a {:?} column",
                column.kind()
            )));
        };
        // Rows of a group keep their order, and groups are independent, so
        // each run of rows of one group can be one `add`. The store sends
        // each window's rows as one run; a batch whose groups come back
        // after other groups' rows is first put in order of each group's
        // first row (a stable sort), so that each group still takes one.
        if run_end(&rows.groups, 0) < rows.len() {
            let mut seen = HashSet::new();
            let mut start = 0;
            while start < rows.len() {
                if !seen.insert(rows.groups[start]) {
                    return self.update_interleaved(rows, values, column);
                }
                start = run_end(&rows.groups, start);
            }
        }
        let mut start = 0;
        while start < rows.len() {
            let end = run_end(&rows.groups, start);
            let acc = self.accumulator(rows.groups[start])?;
            if column.validity.is_empty() {
                self.inner
                    .add(acc, &values[start..end], &rows.times[start..end])?;
            } else {
                self.add_present(acc, start..end, rows, values, column)?;
            }
            start = end;
        }
        Ok(())
    }

    /// [`Self::update_groups`] for rows whose groups interleave.
    fn update_interleaved(
        &mut self,
        rows: &Rows,
        values: &[f64],
        column: &Column,
    ) -> Result<(), PluginError> {
        let mut first = HashMap::new();
        for (row, group) in rows.groups.iter().enumerate() {
            first.entry(*group).or_insert(row);
        }
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by_key(|&row| first.get(&rows.groups[row]).copied());
        let mut start = 0;
        while start < order.len() {
            let group = rows.groups[order[start]];
            let end = order[start..]
                .iter()
                .position(|&row| rows.groups[row] != group)
                .map_or(order.len(), |n| start + n);
            let acc = self.accumulator(group)?;
            self.add_present(acc, order[start..end].iter().copied(), rows, values, column)?;
            start = end;
        }
        Ok(())
    }

    /// Adds the present values of rows `which` of `rows`, in that order, to
    /// `acc` in one call (none when every one is missing).
    fn add_present(
        &mut self,
        acc: AccumulatorHandle,
        which: impl Iterator<Item = usize>,
        rows: &Rows,
        values: &[f64],
        column: &Column,
    ) -> Result<(), PluginError> {
        self.values.clear();
        self.times.clear();
        for row in which.filter(|&row| column.is_present(row)) {
            self.values.push(values[row]);
            self.times.push(rows.times[row]);
        }
        if self.values.is_empty() {
            return Ok(());
        }
        self.inner.add(acc, &self.values, &self.times)
    }

    fn merge_groups(&mut self, into: &[GroupId], from: &[GroupId]) -> Result<(), PluginError> {
        for (into, from) in into.iter().zip(from) {
            let into = self.accumulator(*into)?;
            let from = self.accumulator(*from)?;
            self.inner.merge(into, from)?;
        }
        Ok(())
    }

    fn snapshot_groups(&mut self, groups: &[GroupId]) -> Result<Vec<Vec<u8>>, PluginError> {
        let mut states = Vec::with_capacity(groups.len());
        for group in groups {
            let acc = self.accumulator(*group)?;
            states.push(self.inner.snapshot(acc)?);
        }
        Ok(states)
    }

    fn evaluate_groups(
        &mut self,
        groups: &[GroupId],
    ) -> Result<Vec<Vec<Option<OutputValue>>>, PluginError> {
        let kinds: Vec<OutputKind> = self.inner.outputs().iter().map(|o| o.kind).collect();
        let mut out = Vec::with_capacity(groups.len());
        for group in groups {
            let acc = self.accumulator(*group)?;
            let values = self.inner.finish(acc)?;
            out.push(
                values
                    .into_iter()
                    .zip(&kinds)
                    .map(|(value, kind)| value.map(|v| number(v, *kind)))
                    .collect(),
            );
        }
        Ok(out)
    }
}

/// Where the run of rows of `groups[start]`'s group that starts at `start` ends.
fn run_end(groups: &[GroupId], start: usize) -> usize {
    let Some(&group) = groups.get(start) else {
        return groups.len();
    };
    groups[start..]
        .iter()
        .position(|g| *g != group)
        .map_or(groups.len(), |n| start + n)
}

/// A 0.1 output value as a structured one (see [`PerWindow`]).
fn number(v: f64, kind: OutputKind) -> OutputValue {
    match kind {
        OutputKind::Integer if v.fract() == 0.0 && v.abs() < 9.0e15 => {
            OutputValue::Integer(v as i64)
        }
        _ => OutputValue::Float(v),
    }
}

impl GroupedAggregation for PerWindow {
    fn label(&self) -> &str {
        self.inner.label()
    }

    fn info(&self) -> &PluginInfo {
        self.inner.info()
    }

    fn inputs(&self) -> &[InputSpec] {
        &self.inputs
    }

    fn outputs(&self) -> &[OutputSpec] {
        self.inner.outputs()
    }

    fn is_poisoned(&self) -> bool {
        self.inner.is_poisoned()
    }

    fn out_of_memory(&self) -> Option<u64> {
        self.inner.out_of_memory()
    }

    fn call_stats(&self) -> (u64, Duration) {
        self.inner.call_stats()
    }

    fn reopen(&mut self) -> Result<(), PluginError> {
        self.accumulators.clear();
        self.inner.reopen()
    }

    fn update(&mut self, rows: &Rows) -> Result<(), PluginError> {
        let result = self.update_groups(rows);
        self.forget_if_poisoned(result)
    }

    fn merge(&mut self, into: &[GroupId], from: &[GroupId]) -> Result<(), PluginError> {
        if into.len() != from.len() {
            return Err(self.misuse(format!(
                "was asked to merge {} groups into {}",
                from.len(),
                into.len()
            )));
        }
        let result = self.merge_groups(into, from);
        self.forget_if_poisoned(result)
    }

    fn evaluate(
        &mut self,
        groups: &[GroupId],
    ) -> Result<Vec<Vec<Option<OutputValue>>>, PluginError> {
        let result = self.evaluate_groups(groups);
        self.forget_if_poisoned(result)
    }

    fn snapshot(&mut self, groups: &[GroupId]) -> Result<Vec<Vec<u8>>, PluginError> {
        let result = self.snapshot_groups(groups);
        self.forget_if_poisoned(result)
    }

    fn restore(
        &mut self,
        groups: &[GroupId],
        states: &[&[u8]],
        state_version: u32,
    ) -> Result<Vec<GroupError>, PluginError> {
        if groups.len() != states.len() {
            return Err(self.misuse(format!(
                "was given {} states for {} groups",
                states.len(),
                groups.len()
            )));
        }
        let mut refused = Vec::new();
        for (group, state) in groups.iter().zip(states) {
            if let Some(old) = self.accumulators.remove(group) {
                let released = self.inner.release(old);
                self.forget_if_poisoned(released)?;
            }
            match self.inner.restore(state, state_version) {
                Ok(acc) => {
                    self.accumulators.insert(*group, acc);
                }
                Err(e) if self.inner.is_poisoned() => {
                    self.accumulators.clear();
                    return Err(e);
                }
                Err(e) => refused.push(GroupError {
                    group: *group,
                    // The plugin's words, as a grouped plugin gives them.
                    message: match e {
                        PluginError::Call { message, .. } => message,
                        other => other.to_string(),
                    },
                }),
            }
        }
        Ok(refused)
    }

    fn release(&mut self, groups: &[GroupId]) -> Result<(), PluginError> {
        for group in groups {
            if let Some(acc) = self.accumulators.remove(group) {
                let released = self.inner.release(acc);
                self.forget_if_poisoned(released)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::native;

    fn grouped(name: &str) -> PerWindow {
        PerWindow::new(native::aggregation(name, config(name)).expect("a built-in"))
    }

    /// `ema`, whose result depends on the order of values, needs a config.
    fn config(name: &str) -> &'static str {
        if name == "ema" {
            r#"{"alpha": 0.3}"#
        } else {
            "{}"
        }
    }

    fn rows(rows: &[(u32, i64, Option<f64>)]) -> Rows {
        let mut batch = Rows::for_inputs(&[single_value_input()]);
        for (group, time, value) in rows {
            batch.groups.push(GroupId(*group));
            batch.times.push(*time);
            assert!(batch.columns[0].push(value.map(Value::Float)));
        }
        batch
    }

    #[test]
    fn columns_copy_ranges_and_drop_their_front_rows() {
        let texts = [Some("a"), None, Some("ccc"), Some(""), None, Some("f")];
        let mut text = Column::new(InputKind::Text);
        for t in texts {
            assert!(text.push(t.map(Value::Text)));
        }
        let mut copy = Column::new(InputKind::Text);
        assert!(copy.extend_from(&text, 1..5));
        let got: Vec<_> = (0..copy.len()).map(|row| copy.get(row)).collect();
        let want: Vec<_> = texts[1..5].iter().map(|t| t.map(Value::Text)).collect();
        assert_eq!(got, want);
        text.drain_front(2);
        let got: Vec<_> = (0..text.len()).map(|row| text.get(row)).collect();
        let want: Vec<_> = texts[2..].iter().map(|t| t.map(Value::Text)).collect();
        assert_eq!(got, want);
        let mut floats = Column::floats(vec![1.0, 2.0, 3.0]);
        assert!(floats.extend_from(&Column::floats(vec![4.0, 5.0]), 1..2));
        assert_eq!(floats.values, ColumnValues::Float(vec![1.0, 2.0, 3.0, 5.0]));
        assert!(!floats.extend_from(&copy, 1..2), "text into floats");
        floats.drain_front(9);
        assert!(floats.is_empty());
    }

    #[test]
    fn a_column_marks_missing_rows_in_its_bitmap_only_once_one_is_missing() {
        let mut column = Column::new(InputKind::Text);
        for i in 0..9 {
            assert!(column.push(Some(Value::Text(if i % 2 == 0 { "gpt" } else { "" }))));
        }
        assert!(column.validity.is_empty(), "all present so far");
        assert!(column.push(None));
        assert!(column.push(Some(Value::Text("llama"))));
        assert!(
            !column.push(Some(Value::Float(1.0))),
            "a float in a text column"
        );
        assert_eq!(column.len(), 11);
        assert_eq!(column.validity, vec![0xff, 0b101]);
        let got: Vec<Option<Value<'_>>> = (0..11).map(|row| column.get(row)).collect();
        assert_eq!(got[0], Some(Value::Text("gpt")));
        assert_eq!(got[1], Some(Value::Text("")));
        assert_eq!(got[9], None);
        assert_eq!(got[10], Some(Value::Text("llama")));
        assert_eq!(column.get(11), None);

        let mut flags = Column::new(InputKind::Boolean);
        for b in [Some(true), None, Some(false), Some(true)] {
            assert!(flags.push(b.map(Value::Boolean)));
        }
        let got: Vec<_> = (0..4).map(|row| flags.get(row)).collect();
        assert_eq!(
            got,
            [
                Some(Value::Boolean(true)),
                None,
                Some(Value::Boolean(false)),
                Some(Value::Boolean(true))
            ]
        );
        flags.clear();
        assert!(flags.is_empty() && flags.validity.is_empty());
    }

    #[test]
    fn a_batch_is_checked_against_the_declared_inputs() {
        let inputs = [single_value_input()];
        let mut batch = rows(&[(0, 1, Some(1.0)), (1, 2, Some(2.0))]);
        assert_eq!(batch.check(&inputs), Ok(()));
        batch.times.pop();
        assert_eq!(batch.check(&inputs), Err("1 times for 2 rows".into()));
        batch.times.push(2);
        batch.columns[0] = Column::new(InputKind::Text);
        let err = batch.check(&inputs).expect_err("a text column");
        assert!(
            err.contains("declared Float but its column holds Text"),
            "{err}"
        );
        batch.columns = Vec::new();
        assert_eq!(
            batch.check(&inputs),
            Err("0 columns for 1 declared inputs".into())
        );
    }

    /// One grouped call over interleaved rows gives each group what the
    /// same rows give when added to that group's accumulator alone, in
    /// arrival order; a missing row is skipped.
    #[test]
    fn one_grouped_call_equals_the_rows_sent_group_by_group() {
        let input: Vec<(u32, i64, Option<f64>)> = (0..300)
            .map(|i| {
                let value = (i % 17 != 0).then_some((i * 37 % 101) as f64);
                ((i * 7 % 5) as u32, i64::from(i), value)
            })
            .collect();
        for plugin in ["stats", "percentiles", "ema"] {
            let mut grouped = grouped(plugin);
            grouped.update(&rows(&input)).expect("update");
            let groups: Vec<GroupId> = (0..5).map(GroupId).collect();
            let got = grouped.evaluate(&groups).expect("evaluate");

            let mut alone = native::aggregation(plugin, config(plugin)).expect("a built-in");
            for (g, outputs) in got.iter().enumerate() {
                let acc = alone.create().expect("create");
                for (group, time, value) in &input {
                    if *group == g as u32
                        && let Some(v) = value
                    {
                        alone.add(acc, &[*v], &[*time]).expect("add");
                    }
                }
                let want: Vec<Option<OutputValue>> = alone
                    .finish(acc)
                    .expect("finish")
                    .into_iter()
                    .zip(alone.outputs())
                    .map(|(v, spec)| v.map(|v| number(v, spec.kind)))
                    .collect();
                assert_eq!(outputs, &want, "{plugin}, group {g}");
            }
        }
    }

    #[test]
    fn integer_outputs_of_a_0_1_plugin_become_integers() {
        let mut count = grouped("count");
        count
            .update(&rows(&[(3, 1, Some(1.0)), (3, 2, Some(5.0)), (4, 3, None)]))
            .expect("update");
        let got = count
            .evaluate(&[GroupId(3), GroupId(4), GroupId(9)])
            .expect("evaluate");
        assert_eq!(
            got,
            vec![
                vec![Some(OutputValue::Integer(2))],
                vec![Some(OutputValue::Integer(0))],
                vec![Some(OutputValue::Integer(0))],
            ]
        );
        assert_eq!(
            number(1.0e16, OutputKind::Integer),
            OutputValue::Float(1.0e16)
        );
    }

    #[test]
    fn groups_merge_snapshot_restore_and_release_in_batches() {
        let mut sum = grouped("sum");
        sum.update(&rows(&[
            (0, 1, Some(1.0)),
            (1, 2, Some(10.0)),
            (2, 3, Some(100.0)),
        ]))
        .expect("update");
        // 1 into 0, then 2 into 0: pairs apply in order.
        sum.merge(&[GroupId(0), GroupId(0)], &[GroupId(1), GroupId(2)])
            .expect("merge");
        let states = sum.snapshot(&[GroupId(0), GroupId(2)]).expect("snapshot");
        let version = sum.info().state_version;

        let mut other = grouped("sum");
        let refused = other
            .restore(&[GroupId(7), GroupId(8)], &[&states[0], b""], version)
            .expect("restore");
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].group, GroupId(8));
        let got = other.evaluate(&[GroupId(7)]).expect("evaluate");
        assert_eq!(got, vec![vec![Some(OutputValue::Float(111.0))]]);

        sum.release(&[GroupId(0)]).expect("release");
        let got = sum.evaluate(&[GroupId(0), GroupId(2)]).expect("evaluate");
        assert_eq!(got[1], vec![Some(OutputValue::Float(100.0))]);
        assert_ne!(
            got[0],
            vec![Some(OutputValue::Float(111.0))],
            "released: empty again"
        );
        assert!(
            sum.merge(&[GroupId(0)], &[]).is_err(),
            "pairs of unequal length are refused"
        );
    }
}
