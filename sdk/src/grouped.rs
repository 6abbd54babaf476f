//! Connects an [`Aggregator`] or a [`TypedAggregator`] to the generated
//! traits of interface 0.2: the host names windows by group number and
//! batches rows of many groups into one call; the SDK keeps one state per
//! group in a vector and hands the author's type one window at a time.

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

/// The states of the groups a host has named, by group number.
struct Groups<S> {
    states: RefCell<Vec<Option<S>>>,
}

impl<S> Groups<S> {
    fn new() -> Self {
        Self {
            states: RefCell::new(Vec::new()),
        }
    }

    /// Runs `f` on group `g`'s state, created by `create` if the group is new.
    fn with<R>(&self, g: u32, create: impl FnOnce() -> S, f: impl FnOnce(&mut S) -> R) -> R {
        let mut states = self.states.borrow_mut();
        let g = g as usize;
        if states.len() <= g {
            states.resize_with(g + 1, || None);
        }
        f(states[g].get_or_insert_with(create))
    }

    /// Runs `f` on group `g`'s state, or on a new one (not kept) if the
    /// group holds none.
    fn read<R>(&self, g: u32, create: impl FnOnce() -> S, f: impl FnOnce(&S) -> R) -> R {
        let states = self.states.borrow();
        match states.get(g as usize).and_then(Option::as_ref) {
            Some(state) => f(state),
            None => f(&create()),
        }
    }

    fn set(&self, g: u32, state: Option<S>) {
        let mut states = self.states.borrow_mut();
        let g = g as usize;
        if states.len() <= g {
            if state.is_none() {
                return;
            }
            states.resize_with(g + 1, || None);
        }
        states[g] = state;
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
            let other = self
                .states
                .borrow_mut()
                .get_mut(from as usize)
                .and_then(Option::take);
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

/// The component that exports an [`Aggregator`] (one number per event) as
/// interface 0.2; named by [`crate::export_aggregator!`].
pub struct NumbersComponent<A>(PhantomData<A>);

/// One configured aggregation of an [`Aggregator`], with its groups.
pub struct NumbersOf<A: Aggregator> {
    aggregator: A,
    kinds: Vec<OutputKind>,
    groups: Groups<A::State>,
}

impl<A: Aggregator> Guest for NumbersComponent<A> {
    type Aggregation = NumbersOf<A>;

    fn info() -> PluginInfo {
        plugin_info(A::INFO)
    }
}

impl<A: Aggregator> GuestAggregation for NumbersOf<A> {
    fn open(config: String) -> Result<Aggregation, String> {
        let aggregator = A::new(parse_config(A::INFO.name, &config)?)?;
        let kinds = aggregator.outputs().iter().map(|o| o.kind).collect();
        Ok(Aggregation::new(NumbersOf::<A> {
            aggregator,
            kinds,
            groups: Groups::new(),
        }))
    }

    fn inputs(&self) -> Vec<InputSpec> {
        input_specs(<f64 as Inputs<'_>>::declare())
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        output_specs(self.aggregator.outputs())
    }

    fn update(&self, batch: Rows) {
        let Some(column) = batch.columns.first() else {
            return;
        };
        let ColumnValues::Float(values) = &column.values else {
            return;
        };
        let a = &self.aggregator;
        let mut start = 0;
        let mut present = (Vec::new(), Vec::new());
        while start < batch.groups.len() {
            let end = run_end(&batch.groups, start);
            let group = batch.groups[start];
            if column.validity.is_empty() {
                // One `add` per run of rows of a group, as 0.1 hosts did.
                self.groups.with(
                    group,
                    || a.create(),
                    |s| a.add(s, &values[start..end], &batch.times[start..end]),
                );
            } else {
                present.0.clear();
                present.1.clear();
                for row in start..end {
                    let row_of = Row {
                        columns: &batch.columns,
                        row,
                    };
                    if let Some(v) = row_of.float(0) {
                        present.0.push(v);
                        present.1.push(batch.times[row]);
                    }
                }
                if !present.0.is_empty() {
                    self.groups
                        .with(group, || a.create(), |s| a.add(s, &present.0, &present.1));
                }
            }
            start = end;
        }
    }

    fn merge(&self, into: Vec<u32>, from: Vec<u32>) -> Result<(), String> {
        let a = &self.aggregator;
        self.groups
            .merge(&into, &from, || a.create(), |s, o| a.merge(s, o))
    }

    fn evaluate(&self, groups: Vec<u32>) -> Vec<OutputValues> {
        let a = &self.aggregator;
        let per_group = groups
            .iter()
            .map(|g| {
                let numbers = self.groups.read(*g, || a.create(), |s| a.finish(s));
                numbers.into_iter().map(|n| n.map(Value::Float)).collect()
            })
            .collect();
        columns(&self.kinds, per_group)
    }

    fn snapshot(&self, groups: Vec<u32>) -> Vec<Vec<u8>> {
        let a = &self.aggregator;
        groups
            .iter()
            .map(|g| self.groups.read(*g, || a.create(), |s| a.snapshot(s)))
            .collect()
    }

    fn restore(
        &self,
        groups: Vec<u32>,
        states: Vec<Vec<u8>>,
        state_version: u32,
    ) -> Result<(), Vec<GroupError>> {
        let a = &self.aggregator;
        self.groups
            .restore(groups, states, |bytes| a.restore(bytes, state_version))
    }

    fn release(&self, groups: Vec<u32>) {
        self.groups.release(groups);
    }
}

/// The component that exports a [`TypedAggregator`]; named by
/// [`crate::export_typed!`].
pub struct TypedComponent<T>(PhantomData<T>);

/// One configured aggregation of a [`TypedAggregator`], with its groups.
pub struct TypedOf<T: TypedAggregator> {
    aggregator: T,
    kinds: Vec<OutputKind>,
    groups: Groups<T::State>,
}

impl<T: TypedAggregator> Guest for TypedComponent<T> {
    type Aggregation = TypedOf<T>;

    fn info() -> PluginInfo {
        plugin_info(T::INFO)
    }
}

impl<T: TypedAggregator> GuestAggregation for TypedOf<T> {
    fn open(config: String) -> Result<Aggregation, String> {
        let aggregator = T::new(parse_config(T::INFO.name, &config)?)?;
        let kinds = aggregator.outputs().iter().map(|o| o.kind).collect();
        Ok(Aggregation::new(TypedOf::<T> {
            aggregator,
            kinds,
            groups: Groups::new(),
        }))
    }

    fn inputs(&self) -> Vec<InputSpec> {
        input_specs(<T::Input<'_> as Inputs<'_>>::declare())
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        output_specs(self.aggregator.outputs())
    }

    fn update(&self, batch: Rows) {
        let a = &self.aggregator;
        let mut start = 0;
        while start < batch.groups.len() {
            let end = run_end(&batch.groups, start);
            self.groups.with(
                batch.groups[start],
                || a.create(),
                |state| {
                    for row in start..end {
                        let view = Row {
                            columns: &batch.columns,
                            row,
                        };
                        if let Some(input) = <T::Input<'_> as Inputs<'_>>::read(&view) {
                            a.update(state, input, batch.times[row]);
                        }
                    }
                },
            );
            start = end;
        }
    }

    fn merge(&self, into: Vec<u32>, from: Vec<u32>) -> Result<(), String> {
        let a = &self.aggregator;
        self.groups
            .merge(&into, &from, || a.create(), |s, o| a.merge(s, o))
    }

    fn evaluate(&self, groups: Vec<u32>) -> Vec<OutputValues> {
        let a = &self.aggregator;
        let per_group = groups
            .iter()
            .map(|g| self.groups.read(*g, || a.create(), |s| a.evaluate(s)))
            .collect();
        columns(&self.kinds, per_group)
    }

    fn snapshot(&self, groups: Vec<u32>) -> Vec<Vec<u8>> {
        let a = &self.aggregator;
        groups
            .iter()
            .map(|g| self.groups.read(*g, || a.create(), |s| a.snapshot(s)))
            .collect()
    }

    fn restore(
        &self,
        groups: Vec<u32>,
        states: Vec<Vec<u8>>,
        state_version: u32,
    ) -> Result<(), Vec<GroupError>> {
        let a = &self.aggregator;
        self.groups
            .restore(groups, states, |bytes| a.restore(bytes, state_version))
    }

    fn release(&self, groups: Vec<u32>) {
        self.groups.release(groups);
    }
}
