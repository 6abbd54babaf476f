//! Aggregators with typed, named inputs and structured outputs (interface
//! `sluice:plugin@0.2.0`).
//!
//! An [`Aggregator`](crate::Aggregator) takes one number per event. A
//! [`TypedAggregator`] takes a row of declared inputs instead, read into a
//! type of the author's ([`Inputs`]), and gives outputs of any kind
//! ([`Value`]): text, booleans and ranked lists as well as numbers. The
//! author writes the logic of one window; the SDK keeps the states of the
//! many windows (groups) the host batches into one call, and reads the
//! columns. A weighted mean:
//!
//! ```ignore
//! use sluice_sdk::typed::{Input, Inputs, Row, TypedAggregator, Value};
//! use sluice_sdk::{export_typed, Info, NoConfig, Output};
//!
//! struct Weighted { value: f64, weight: f64 }
//!
//! impl Inputs<'_> for Weighted {
//!     fn declare() -> Vec<Input> {
//!         vec![Input::float("value", "what is averaged"), Input::float("weight", "its weight")]
//!     }
//!     fn read(row: &Row<'_>) -> Option<Self> {
//!         Some(Weighted { value: row.float(0)?, weight: row.float(1)? })
//!     }
//! }
//!
//! struct WeightedMean;
//!
//! impl TypedAggregator for WeightedMean {
//!     type Config = NoConfig;
//!     type State = (f64, f64);
//!     type Input<'a> = Weighted;
//!     const INFO: Info = Info::mergeable("weighted_mean", "1.0.0", "Weighted mean.");
//!     fn new(_: NoConfig) -> Result<Self, String> { Ok(WeightedMean) }
//!     fn outputs(&self) -> Vec<Output> { vec![Output::float("mean", "weighted mean")] }
//!     fn create(&self) -> (f64, f64) { (0.0, 0.0) }
//!     fn update(&self, s: &mut (f64, f64), row: Weighted, _time: i64) {
//!         s.0 += row.value * row.weight;
//!         s.1 += row.weight;
//!     }
//!     fn merge(&self, s: &mut (f64, f64), o: &(f64, f64)) -> Result<(), String> {
//!         s.0 += o.0;
//!         s.1 += o.1;
//!         Ok(())
//!     }
//!     fn evaluate(&self, s: &(f64, f64)) -> Vec<Option<Value>> {
//!         vec![(s.1 != 0.0).then(|| Value::Float(s.0 / s.1))]
//!     }
//! }
//!
//! export_typed!(WeightedMean);
//! ```

use serde::{Serialize, de::DeserializeOwned};

use crate::grouped_bindings::sluice::plugin::types::{Column, ColumnValues};
use crate::{Info, Output};

/// The type of an input's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// A 64-bit float (JSON numbers; `true`/`false` read as 1/0).
    Float,
    /// A signed 64-bit integer (JSON integers, and floats without a fraction).
    Integer,
    /// UTF-8 text (JSON strings; numbers and booleans as JSON writes them).
    Text,
    /// `true` or `false`.
    Boolean,
    /// An instant in epoch milliseconds (a JSON integer or an RFC 3339 string,
    /// or the event time when bound to the time field).
    Timestamp,
}

/// One named input an aggregator declares, which a pipeline binds to an
/// event field with `inputs: { NAME: FIELD }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// Short name such as `weight`: lowercase letters, digits, `_`.
    pub name: String,
    /// The type its values are decoded to.
    pub kind: InputKind,
    /// Whether a row may lack it (then [`Row`] gives `None` for it).
    pub optional: bool,
    /// One line for humans.
    pub description: String,
}

impl Input {
    fn new(name: &str, kind: InputKind, description: &str) -> Self {
        Self {
            name: name.into(),
            kind,
            optional: false,
            description: description.into(),
        }
    }

    /// A required float input.
    pub fn float(name: &str, description: &str) -> Self {
        Self::new(name, InputKind::Float, description)
    }

    /// A required integer input.
    pub fn integer(name: &str, description: &str) -> Self {
        Self::new(name, InputKind::Integer, description)
    }

    /// A required text input.
    pub fn text(name: &str, description: &str) -> Self {
        Self::new(name, InputKind::Text, description)
    }

    /// A required boolean input.
    pub fn boolean(name: &str, description: &str) -> Self {
        Self::new(name, InputKind::Boolean, description)
    }

    /// A required timestamp input.
    pub fn timestamp(name: &str, description: &str) -> Self {
        Self::new(name, InputKind::Timestamp, description)
    }

    /// The same input, which rows may lack: the host sends rows without it
    /// (a pipeline may even leave it unbound) rather than skipping them.
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }
}

/// One row of a batch, as [`Inputs::read`] reads it: input `i` is the
/// `i`-th input [`Inputs::declare`] declared.
pub struct Row<'a> {
    pub(crate) columns: &'a [Column],
    pub(crate) row: usize,
}

fn bit(bits: &[u8], i: usize) -> bool {
    bits.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
}

impl<'a> Row<'a> {
    /// Input `i`'s column, when this row has a value in it.
    fn present(&self, i: usize) -> Option<&'a ColumnValues> {
        let column = self.columns.get(i)?;
        (column.validity.is_empty() || bit(&column.validity, self.row)).then_some(&column.values)
    }

    /// Input `i` as a float: `None` when missing or of another kind.
    pub fn float(&self, i: usize) -> Option<f64> {
        match self.present(i)? {
            ColumnValues::Float(v) => v.get(self.row).copied(),
            _ => None,
        }
    }

    /// Input `i` as an integer.
    pub fn integer(&self, i: usize) -> Option<i64> {
        match self.present(i)? {
            ColumnValues::Integer(v) => v.get(self.row).copied(),
            _ => None,
        }
    }

    /// Input `i` as an instant in epoch milliseconds.
    pub fn timestamp(&self, i: usize) -> Option<i64> {
        match self.present(i)? {
            ColumnValues::Timestamp(v) => v.get(self.row).copied(),
            _ => None,
        }
    }

    /// Input `i` as a boolean.
    pub fn boolean(&self, i: usize) -> Option<bool> {
        match self.present(i)? {
            ColumnValues::Boolean(bits) => Some(bit(bits, self.row)),
            _ => None,
        }
    }

    /// Input `i` as text.
    pub fn text(&self, i: usize) -> Option<&'a str> {
        match self.present(i)? {
            ColumnValues::Text(t) => {
                let start = *t.offsets.get(self.row)? as usize;
                let end = *t.offsets.get(self.row + 1)? as usize;
                std::str::from_utf8(t.bytes.get(start..end)?).ok()
            }
            _ => None,
        }
    }
}

/// The inputs of a [`TypedAggregator`], as one value per row.
pub trait Inputs<'a>: Sized {
    /// The inputs, in column order.
    fn declare() -> Vec<Input>;
    /// The row's value; `None` leaves the row out (for example when a
    /// required input has no value, which the host does not send).
    fn read(row: &Row<'a>) -> Option<Self>;
}

/// One required float named `value`: what a pipeline's `field:` binds.
impl Inputs<'_> for f64 {
    fn declare() -> Vec<Input> {
        vec![Input::float(
            "value",
            "the number the pipeline's `field` names",
        )]
    }

    fn read(row: &Row<'_>) -> Option<Self> {
        row.float(0)
    }
}

/// One output value of one window.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// For an output declared [`Output::integer`].
    Integer(i64),
    /// For [`Output::float`]; must be finite.
    Float(f64),
    /// For [`Output::text`].
    Text(String),
    /// For [`Output::boolean`].
    Boolean(bool),
    /// For [`Output::ranked`]: labels with their numbers, in rank order.
    Ranked(Vec<(String, f64)>),
}

/// A windowed aggregation of typed rows, written as a type built from its
/// configuration (see the [module docs](self)).
///
/// As for [`Aggregator`](crate::Aggregator): `Self` is one configured use
/// of the plugin, [`TypedAggregator::State`] what one window keeps, rows
/// arrive in order per window, and results must not depend on how rows
/// are batched.
pub trait TypedAggregator: Sized + 'static {
    /// The JSON configuration; use `#[serde(deny_unknown_fields)]`.
    type Config: DeserializeOwned;
    /// The state of one window.
    type State: Serialize + DeserializeOwned;
    /// One row's inputs.
    type Input<'a>: Inputs<'a>;

    /// The plugin's self-description.
    const INFO: Info;

    /// Validates a parsed configuration; the error should name the bad key.
    fn new(config: Self::Config) -> Result<Self, String>;

    /// The outputs [`TypedAggregator::evaluate`] returns, in that order.
    fn outputs(&self) -> Vec<Output>;

    /// An empty state for a new window.
    fn create(&self) -> Self::State;

    /// Folds one row, with its event time (ms since the epoch), into `state`.
    fn update(&self, state: &mut Self::State, input: Self::Input<'_>, time: i64);

    /// Folds `other` into `state`. Must be associative; declare
    /// [`Info::commutative`] only if it is also commutative.
    fn merge(&self, state: &mut Self::State, other: &Self::State) -> Result<(), String> {
        let _ = (state, other);
        Err(format!("plugin {} does not support merge", Self::INFO.name))
    }

    /// The current outputs, one per declared output, of its kind; `None`
    /// where undefined.
    fn evaluate(&self, state: &Self::State) -> Vec<Option<Value>>;

    /// The state as bytes in format [`Info::state_version`] (postcard by default).
    fn snapshot(&self, state: &Self::State) -> Vec<u8> {
        postcard::to_allocvec(state).unwrap_or_default()
    }

    /// A state rebuilt from [`TypedAggregator::snapshot`] bytes of format `version`.
    fn restore(&self, bytes: &[u8], version: u32) -> Result<Self::State, String> {
        crate::restore_postcard(Self::INFO, bytes, version)
    }
}
