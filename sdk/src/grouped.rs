//! Connects an [`Aggregator`] or a [`TypedAggregator`] to the generated
//! traits of interface 0.2: the host names windows by group number and
//! batches rows of many groups into one call; the SDK keeps one state per
//! group (in chunks by group number) and hands the author's type one window
//! at a time.
//! Both kinds of type are served by one implementation, [`Hosting`], over
//! what they have in common ([`Hosted`]).

use std::cell::RefCell;
use std::marker::PhantomData;

use crate::grouped_bindings::exports::sluice::plugin::aggregator::{
    Aggregation, Guest, GuestAggregation,
};
use crate::grouped_bindings::sluice::plugin::types::{
    ColumnValues, GroupError, InputKind as WitInput, InputSpec, OutputKind as WitKind, OutputSpec,
    OutputValues, PluginInfo, RankedEntry, Rows,
};
use crate::typed::{InputKind, Inputs, Row, TypedAggregator, Value};
use crate::{Aggregator, Info, Output, OutputKind};

/// Groups per chunk of [`Groups`]. A vector of all states, grown by
/// doubling, left the instance's memory holding its earlier buffers too
/// (a linear memory never shrinks): about twice the states' size. Chunks
/// never move, so the memory is the states' own plus, at most, the unused
/// part of the last chunk.
const CHUNK: usize = 256;

/// The states of the groups a host has named, by group number, in chunks
/// of [`CHUNK`] groups.
struct Groups<S> {
    chunks: RefCell<Vec<Box<[Option<S>]>>>,
}

impl<S> Groups<S> {
    fn new() -> Self {
        Self {
            chunks: RefCell::new(Vec::new()),
        }
    }

    /// Group `g`'s place, making its chunk if there is none yet.
    fn place(chunks: &mut Vec<Box<[Option<S>]>>, g: u32) -> &mut Option<S> {
        let (chunk, i) = (g as usize / CHUNK, g as usize % CHUNK);
        while chunks.len() <= chunk {
            chunks.push((0..CHUNK).map(|_| None).collect());
        }
        &mut chunks[chunk][i]
    }

    /// Group `g`'s place if its chunk exists.
    fn existing(chunks: &mut [Box<[Option<S>]>], g: u32) -> Option<&mut Option<S>> {
        chunks
            .get_mut(g as usize / CHUNK)
            .map(|chunk| &mut chunk[g as usize % CHUNK])
    }

    /// Runs `f` on group `g`'s state, created by `create` if the group is new.
    fn with<R>(&self, g: u32, create: impl FnOnce() -> S, f: impl FnOnce(&mut S) -> R) -> R {
        let mut chunks = self.chunks.borrow_mut();
        f(Self::place(&mut chunks, g).get_or_insert_with(create))
    }

    /// Runs `f` on group `g`'s state, or on a new one (not kept) if the
    /// group holds none.
    fn read<R>(&self, g: u32, create: impl FnOnce() -> S, f: impl FnOnce(&S) -> R) -> R {
        let chunks = self.chunks.borrow();
        let state = chunks
            .get(g as usize / CHUNK)
            .and_then(|chunk| chunk[g as usize % CHUNK].as_ref());
        match state {
            Some(state) => f(state),
            None => f(&create()),
        }
    }

    fn set(&self, g: u32, state: Option<S>) {
        let mut chunks = self.chunks.borrow_mut();
        match state {
            Some(state) => *Self::place(&mut chunks, g) = Some(state),
            None => {
                if let Some(place) = Self::existing(&mut chunks, g) {
                    *place = None;
                }
            }
        }
    }

    /// Folds group `from` into group `into`, pair by pair, in order.
    fn merge(
        &self,
        into: &[u32],
        from: &[u32],
        create: impl Fn() -> S,
        merge: impl Fn(&mut S, &S) -> Result<(), String>,
    ) -> Result<(), String> {
        for (&into, &from) in into.iter().zip(from) {
            if into == from {
                return Err(format!("cannot merge group {into} into itself"));
            }
            let other = Self::existing(&mut self.chunks.borrow_mut(), from).and_then(Option::take);
            let other = other.unwrap_or_else(&create);
            let merged = self.with(into, &create, |state| merge(state, &other));
            self.set(from, Some(other));
            merged?;
        }
        Ok(())
    }

    fn restore(
        &self,
        groups: Vec<u32>,
        states: Vec<Vec<u8>>,
        restore: impl Fn(&[u8]) -> Result<S, String>,
    ) -> Result<(), Vec<GroupError>> {
        let mut refused = Vec::new();
        for (group, bytes) in groups.into_iter().zip(&states) {
            match restore(bytes) {
                Ok(state) => self.set(group, Some(state)),
                Err(message) => {
                    self.set(group, None);
                    refused.push(GroupError { group, message });
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
            self.set(group, None);
        }
    }
}

/// The WIT `plugin-info` of an [`Info`].
fn plugin_info(info: Info) -> PluginInfo {
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

fn output_specs(outputs: Vec<Output>) -> Vec<OutputSpec> {
    outputs
        .into_iter()
        .map(|o| OutputSpec {
            name: o.name,
            kind: match o.kind {
                OutputKind::Integer => WitKind::Integer,
                OutputKind::Float => WitKind::Float,
                OutputKind::Text => WitKind::Text,
                OutputKind::Boolean => WitKind::Boolean,
                OutputKind::Ranked => WitKind::Ranked,
            },
            description: o.description,
        })
        .collect()
}

fn input_specs(inputs: Vec<crate::typed::Input>) -> Vec<InputSpec> {
    inputs
        .into_iter()
        .map(|i| InputSpec {
            name: i.name,
            kind: match i.kind {
                InputKind::Float => WitInput::Float,
                InputKind::Integer => WitInput::Integer,
                InputKind::Text => WitInput::Text,
                InputKind::Boolean => WitInput::Boolean,
                InputKind::Timestamp => WitInput::Timestamp,
            },
            optional: i.optional,
            description: i.description,
        })
        .collect()
}

/// One output column of `kinds[o]` from the groups' values, each value
/// taken if it is of that kind (floats finite, integers from integral
/// floats too), else `None`.
fn columns(kinds: &[OutputKind], per_group: Vec<Vec<Option<Value>>>) -> Vec<OutputValues> {
    kinds
        .iter()
        .enumerate()
        .map(|(o, kind)| {
            let each = per_group
                .iter()
                .map(|values| values.get(o).cloned().flatten());
            match kind {
                OutputKind::Integer => OutputValues::Integer(
                    each.map(|v| match v {
                        Some(Value::Integer(i)) => Some(i),
                        Some(Value::Float(f)) if f.fract() == 0.0 && f.abs() < 9.2e18 => {
                            Some(f as i64)
                        }
                        _ => None,
                    })
                    .collect(),
                ),
                OutputKind::Float => OutputValues::Float(
                    each.map(|v| match v {
                        Some(Value::Float(f)) if f.is_finite() => Some(f),
                        Some(Value::Integer(i)) => Some(i as f64),
                        _ => None,
                    })
                    .collect(),
                ),
                OutputKind::Text => OutputValues::Text(
                    each.map(|v| match v {
                        Some(Value::Text(t)) => Some(t),
                        _ => None,
                    })
                    .collect(),
                ),
                OutputKind::Boolean => OutputValues::Boolean(
                    each.map(|v| match v {
                        Some(Value::Boolean(b)) => Some(b),
                        _ => None,
                    })
                    .collect(),
                ),
                OutputKind::Ranked => OutputValues::Ranked(
                    each.map(|v| match v {
                        Some(Value::Ranked(entries)) => Some(
                            entries
                                .into_iter()
                                .filter(|(_, value)| value.is_finite())
                                .map(|(label, value)| RankedEntry { label, value })
                                .collect(),
                        ),
                        _ => None,
                    })
                    .collect(),
                ),
            }
        })
        .collect()
}

fn parse_config<C: serde::de::DeserializeOwned>(name: &str, config: &str) -> Result<C, String> {
    serde_json::from_str(config).map_err(|e| format!("invalid config for plugin {name}: {e}"))
}

/// The end of the run of rows of one group starting at `start`.
fn run_end(groups: &[u32], start: usize) -> usize {
    let group = groups[start];
    groups[start..]
        .iter()
        .position(|g| *g != group)
        .map_or(groups.len(), |n| start + n)
}

/// What the two kinds of author's type have in common, as [`Hosting`]
/// serves them: an [`Aggregator`] through [`Numbers`], a
/// [`TypedAggregator`] through [`Typed`].
pub trait Hosted: Sized + 'static {
    /// One window's state.
    type State;
    /// The plugin's self-description.
    const INFO: Info;
    /// The aggregation configured by `config` (JSON).
    fn open(config: &str) -> Result<Self, String>;
    /// The declared inputs.
    fn inputs() -> Vec<crate::typed::Input>;
    /// The declared outputs.
    fn outputs(&self) -> Vec<Output>;
    /// An empty state.
    fn create(&self) -> Self::State;
    /// Folds rows `rows` of `batch`, all of one group, into `state`.
    fn update(&self, state: &mut Self::State, batch: &Rows, rows: std::ops::Range<usize>);
    /// Folds `other` into `state`.
    fn merge(&self, state: &mut Self::State, other: &Self::State) -> Result<(), String>;
    /// The outputs of `state`.
    fn evaluate(&self, state: &Self::State) -> Vec<Option<Value>>;
    /// `state` as bytes.
    fn snapshot(&self, state: &Self::State) -> Vec<u8>;
    /// A state from bytes of format `version`.
    fn restore(&self, bytes: &[u8], version: u32) -> Result<Self::State, String>;
}

/// An [`Aggregator`] (one number per event) as [`Hosted`].
pub struct Numbers<A>(A);

impl<A: Aggregator> Hosted for Numbers<A> {
    type State = A::State;
    const INFO: Info = A::INFO;

    fn open(config: &str) -> Result<Self, String> {
        A::new(parse_config(A::INFO.name, config)?).map(Numbers)
    }

    fn inputs() -> Vec<crate::typed::Input> {
        <f64 as Inputs<'_>>::declare()
    }

    fn outputs(&self) -> Vec<Output> {
        self.0.outputs()
    }

    fn create(&self) -> A::State {
        self.0.create()
    }

    fn update(&self, state: &mut A::State, batch: &Rows, rows: std::ops::Range<usize>) {
        let Some(column) = batch.columns.first() else {
            return;
        };
        let ColumnValues::Float(values) = &column.values else {
            return;
        };
        if column.validity.is_empty() {
            // One `add` per run of rows of a group, as 0.1 hosts did.
            self.0.add(state, &values[rows.clone()], &batch.times[rows]);
            return;
        }
        let (present, times): (Vec<f64>, Vec<i64>) = rows
            .filter_map(|row| {
                let view = Row {
                    columns: &batch.columns,
                    row,
                };
                Some((view.float(0)?, batch.times[row]))
            })
            .unzip();
        if !present.is_empty() {
            self.0.add(state, &present, &times);
        }
    }

    fn merge(&self, state: &mut A::State, other: &A::State) -> Result<(), String> {
        self.0.merge(state, other)
    }

    fn evaluate(&self, state: &A::State) -> Vec<Option<Value>> {
        let numbers = self.0.finish(state);
        numbers.into_iter().map(|n| n.map(Value::Float)).collect()
    }

    fn snapshot(&self, state: &A::State) -> Vec<u8> {
        self.0.snapshot(state)
    }

    fn restore(&self, bytes: &[u8], version: u32) -> Result<A::State, String> {
        self.0.restore(bytes, version)
    }
}

/// A [`TypedAggregator`] as [`Hosted`].
pub struct Typed<T>(T);

impl<T: TypedAggregator> Hosted for Typed<T> {
    type State = T::State;
    const INFO: Info = T::INFO;

    fn open(config: &str) -> Result<Self, String> {
        T::new(parse_config(T::INFO.name, config)?).map(Typed)
    }

    fn inputs() -> Vec<crate::typed::Input> {
        <T::Input<'_> as Inputs<'_>>::declare()
    }

    fn outputs(&self) -> Vec<Output> {
        self.0.outputs()
    }

    fn create(&self) -> T::State {
        self.0.create()
    }

    fn update(&self, state: &mut T::State, batch: &Rows, rows: std::ops::Range<usize>) {
        for row in rows {
            let view = Row {
                columns: &batch.columns,
                row,
            };
            if let Some(input) = <T::Input<'_> as Inputs<'_>>::read(&view) {
                self.0.update(state, input, batch.times[row]);
            }
        }
    }

    fn merge(&self, state: &mut T::State, other: &T::State) -> Result<(), String> {
        self.0.merge(state, other)
    }

    fn evaluate(&self, state: &T::State) -> Vec<Option<Value>> {
        self.0.evaluate(state)
    }

    fn snapshot(&self, state: &T::State) -> Vec<u8> {
        self.0.snapshot(state)
    }

    fn restore(&self, bytes: &[u8], version: u32) -> Result<T::State, String> {
        self.0.restore(bytes, version)
    }
}

/// The component that exports a [`Hosted`] type as interface 0.2.
pub struct HostedComponent<H>(PhantomData<H>);

/// The component of an [`Aggregator`]; named by [`crate::export_aggregator!`].
pub type NumbersComponent<A> = HostedComponent<Numbers<A>>;

/// The component of a [`TypedAggregator`]; named by [`crate::export_typed!`].
pub type TypedComponent<T> = HostedComponent<Typed<T>>;

/// One configured aggregation, with the states of its groups.
pub struct Hosting<H: Hosted> {
    hosted: H,
    kinds: Vec<OutputKind>,
    groups: Groups<H::State>,
}

impl<H: Hosted> Guest for HostedComponent<H> {
    type Aggregation = Hosting<H>;

    fn info() -> PluginInfo {
        plugin_info(H::INFO)
    }
}

impl<H: Hosted> GuestAggregation for Hosting<H> {
    fn open(config: String) -> Result<Aggregation, String> {
        let hosted = H::open(&config)?;
        let kinds = hosted.outputs().iter().map(|o| o.kind).collect();
        Ok(Aggregation::new(Hosting {
            hosted,
            kinds,
            groups: Groups::new(),
        }))
    }

    fn inputs(&self) -> Vec<InputSpec> {
        input_specs(H::inputs())
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        output_specs(self.hosted.outputs())
    }

    fn update(&self, batch: Rows) {
        let h = &self.hosted;
        let mut start = 0;
        while start < batch.groups.len() {
            let end = run_end(&batch.groups, start);
            self.groups.with(
                batch.groups[start],
                || h.create(),
                |state| h.update(state, &batch, start..end),
            );
            start = end;
        }
    }

    fn merge(&self, into: Vec<u32>, from: Vec<u32>) -> Result<(), String> {
        let h = &self.hosted;
        self.groups
            .merge(&into, &from, || h.create(), |s, o| h.merge(s, o))
    }

    fn evaluate(&self, groups: Vec<u32>) -> Vec<OutputValues> {
        let h = &self.hosted;
        let per_group = groups
            .iter()
            .map(|g| self.groups.read(*g, || h.create(), |s| h.evaluate(s)))
            .collect();
        columns(&self.kinds, per_group)
    }

    fn snapshot(&self, groups: Vec<u32>) -> Vec<Vec<u8>> {
        let h = &self.hosted;
        groups
            .iter()
            .map(|g| self.groups.read(*g, || h.create(), |s| h.snapshot(s)))
            .collect()
    }

    fn restore(
        &self,
        groups: Vec<u32>,
        states: Vec<Vec<u8>>,
        state_version: u32,
    ) -> Result<(), Vec<GroupError>> {
        let h = &self.hosted;
        self.groups
            .restore(groups, states, |bytes| h.restore(bytes, state_version))
    }

    fn release(&self, groups: Vec<u32>) {
        self.groups.release(groups);
    }
}
