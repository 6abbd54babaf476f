//! The plugin boundary as the engine sees it: what an aggregation and a
//! trigger can be asked to do, in this crate's own types.
//!
//! The most interesting items in this module are [`Aggregation`], one
//! configured aggregation holding the accumulators of every open window,
//! and [`TriggerPolicy`], one configured trigger holding the trigger state
//! of every window. The window store and the trigger host side (in
//! [`crate::window`]) hold these traits, never a runtime: `sluice-wasm`
//! implements them for sandboxed WebAssembly components, [`native`]
//! (feature `native`) for plugins written with the Rust SDK and compiled
//! into the process.
//!
//! The data types here mirror the WIT package `sluice:plugin` (`wit/`):
//! [`PluginInfo`] and [`OutputSpec`] what a plugin says about itself,
//! [`Decision`] what a trigger answers. Each runtime converts its own
//! representation into these in one place.
//!
//! [`grouped`] holds the boundary of interface 0.2: typed columns in, many
//! windows per call, structured outputs out, and the adapter that serves a
//! 0.1 [`Aggregation`] behind it.

pub mod grouped;
pub mod grouped_laws;
pub mod laws;
#[cfg(feature = "native")]
pub mod native;
pub mod trigger_laws;
pub mod untrusted;

use std::time::Duration;

use thiserror::Error;

/// What a plugin says about itself, whatever its configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PluginInfo {
    /// Plugin name, for example `stats`.
    pub name: String,
    /// The plugin's own semantic version.
    pub version: String,
    /// One paragraph on what the plugin computes.
    pub description: String,
    /// Version of the byte format its snapshots are written in; state is
    /// restored only from bytes of a format the plugin declares it reads.
    pub state_version: u32,
    /// Whether states merge (sliding and session windows need it).
    pub mergeable: bool,
    /// Whether merging is order-independent.
    pub commutative: bool,
    /// Human-readable description of the JSON configuration it takes.
    pub config_help: String,
}

/// How an output value is rendered in a result record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// A JSON integer, such as a count; the value must be integral.
    Integer,
    /// A JSON number.
    Float,
    /// A JSON string (interface 0.2).
    Text,
    /// JSON `true` or `false` (interface 0.2).
    Boolean,
    /// A JSON array of `{"label", "value"}` objects: a top-k result
    /// (interface 0.2).
    Ranked,
}

impl OutputKind {
    /// Its name in the WIT and in `plugin inspect`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Integer => "integer",
            Self::Float => "float",
            Self::Text => "text",
            Self::Boolean => "boolean",
            Self::Ranked => "ranked",
        }
    }

    /// Whether its values are numbers, which a trigger's preview sees.
    pub fn is_numeric(self) -> bool {
        matches!(self, Self::Integer | Self::Float)
    }
}

/// One named output of an aggregation, declared before any data is seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    /// Short name such as `p99`; records carry `<aggregation>.<name>`.
    pub name: String,
    /// How the value is rendered.
    pub kind: OutputKind,
    /// One line for humans.
    pub description: String,
}

/// A plugin that could not be loaded, configured or called.
#[derive(Debug, Error)]
pub enum PluginError {
    /// The host could not set up the plugin runtime itself.
    #[error("plugin runtime: {what}: {message}")]
    Setup {
        /// What the host was doing.
        what: &'static str,
        /// The underlying error.
        message: String,
    },
    /// The plugin file is missing, is not a component, or has the wrong world.
    #[error("plugin {plugin}: {message}")]
    Load {
        /// The plugin reference or path.
        plugin: String,
        /// What is wrong with it.
        message: String,
    },
    /// The plugin rejected its configuration.
    #[error("plugin {plugin} rejected its config: {message}")]
    Config {
        /// The plugin.
        plugin: String,
        /// The plugin's own explanation.
        message: String,
    },
    /// A call into the plugin trapped, timed out, ran out of memory or
    /// returned something the host cannot use.
    #[error("plugin {plugin} {message}")]
    Call {
        /// The plugin, with its name and version.
        plugin: String,
        /// What went wrong.
        message: String,
    },
}

impl PluginError {
    /// A [`PluginError::Setup`] from any displayable cause.
    pub fn setup(what: &'static str, error: impl std::fmt::Display) -> Self {
        Self::Setup {
            what,
            message: error.to_string(),
        }
    }
}

/// One window's accumulator inside an [`Aggregation`]: a handle the
/// aggregation hands out and understands; nothing else reads it.
///
/// It must be given back with [`Aggregation::release`] when the window is
/// done, or the plugin keeps its state alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AccumulatorHandle(pub u64);

/// One configured aggregation: a plugin opened with one `aggregations:`
/// entry's config, holding one accumulator per open window (or pane, or
/// session).
///
/// An aggregation knows how to:
/// - create an empty accumulator, or restore one from snapshot bytes;
/// - add a batch of values with their event times to an accumulator;
/// - merge one accumulator into another (when [`PluginInfo::mergeable`]);
/// - finish an accumulator into its outputs, without changing it;
/// - snapshot an accumulator as bytes in its state format;
/// - release an accumulator.
///
/// ## Correctness
///
/// Results must not depend on how values are split into batches; merge must
/// be associative and agree with adding everything to one accumulator;
/// a restore of a snapshot must continue exactly where the snapshot was
/// taken. `sluice plugin test` checks these laws on generated data.
///
/// ## Failures
///
/// A call that fails in a way that leaves the implementation unusable (a
/// trap, a timeout, exhausted memory) *poisons* it: every accumulator is
/// lost and [`Aggregation::reopen`] must be called before the next call.
/// An error the plugin returns as a value (a refused merge) does not. The
/// window store rebuilds lost accumulators from its own records.
pub trait Aggregation: Send {
    /// `source (name version)`, the name errors use.
    fn label(&self) -> &str;
    /// The plugin's self-description.
    fn info(&self) -> &PluginInfo;
    /// The outputs [`Aggregation::finish`] returns, in order.
    fn outputs(&self) -> &[OutputSpec];
    /// Whether a call failed so that every accumulator is lost (see the
    /// trait doc); cleared by [`Aggregation::reopen`].
    fn is_poisoned(&self) -> bool;
    /// When the call that poisoned the instance failed because its memory
    /// limit refused a growth (rather than for a fault of the plugin's
    /// own): that limit in bytes, so that the store can rebuild the
    /// instance and say which setting to raise. `None` otherwise, and
    /// always for an implementation without a memory limit.
    fn out_of_memory(&self) -> Option<u64> {
        None
    }
    /// Calls made and the time spent in them, over the whole life.
    fn call_stats(&self) -> (u64, Duration);
    /// Replaces the instance with a fresh one of the same plugin and
    /// config; every earlier handle becomes invalid.
    fn reopen(&mut self) -> Result<(), PluginError>;
    /// A new, empty accumulator.
    fn create(&mut self) -> Result<AccumulatorHandle, PluginError>;
    /// Adds a batch of values and their event times (the same length).
    fn add(
        &mut self,
        acc: AccumulatorHandle,
        values: &[f64],
        times: &[i64],
    ) -> Result<(), PluginError>;
    /// Folds `from` into `into`; `from` is unchanged.
    fn merge(
        &mut self,
        into: AccumulatorHandle,
        from: AccumulatorHandle,
    ) -> Result<(), PluginError>;
    /// The accumulator's outputs, one per declared output, in order.
    fn finish(&mut self, acc: AccumulatorHandle) -> Result<Vec<Option<f64>>, PluginError>;
    /// The accumulator's state as bytes, in the plugin's state format.
    fn snapshot(&mut self, acc: AccumulatorHandle) -> Result<Vec<u8>, PluginError>;
    /// An accumulator rebuilt from snapshot bytes of format `state_version`.
    fn restore(
        &mut self,
        state: &[u8],
        state_version: u32,
    ) -> Result<AccumulatorHandle, PluginError>;
    /// Gives an accumulator back; its state is freed.
    fn release(&mut self, acc: AccumulatorHandle) -> Result<(), PluginError>;
}

/// Checks a plugin's declared outputs: at least one, plain names, no repeats.
pub fn check_outputs(outputs: &[OutputSpec]) -> Result<(), String> {
    if outputs.is_empty() {
        return Err("declares no outputs".into());
    }
    let mut seen = std::collections::HashSet::new();
    for o in outputs {
        let valid = !o.name.is_empty()
            && o.name.len() <= untrusted::NAME_LIMIT
            && o.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid {
            return Err(format!("output name {:?} is not a plain name", o.name));
        }
        if !seen.insert(o.name.as_str()) {
            return Err(format!("output name {:?} is declared twice", o.name));
        }
    }
    Ok(())
}

/// A half-open event-time interval `[start, end)` in epoch milliseconds:
/// a window as the engine keeps it and as a trigger is told of it (the WIT
/// `window` record). [`crate::window`] uses this type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    /// First millisecond in the window.
    pub start: i64,
    /// First millisecond after the window.
    pub end: i64,
}

/// Elements that entered a window since its trigger last heard of any.
#[derive(Debug, Clone, PartialEq)]
pub struct Elements {
    /// How many.
    pub count: u32,
    /// The earliest event time among them.
    pub min_time: i64,
    /// The latest event time among them.
    pub max_time: i64,
    /// The current value of each output the trigger watches, in order.
    pub preview: Vec<Option<f64>>,
}

/// What the host does with a window after a trigger call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    Continue,
    /// Emit the window's result so far; keep its state.
    Fire,
    /// Emit the window's result, then empty its state.
    FireAndPurge,
    /// Empty the window's state without emitting.
    Purge,
}

/// When the host next tells a trigger of elements for a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementInterest {
    /// Once this many more elements have arrived (1: every element).
    After(u32),
    /// Only for late elements, one call each.
    Late,
    /// Never: the trigger works from timers alone.
    None,
}

/// A trigger's answer to any call.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// What to do with the window now.
    pub action: Action,
    /// When to call `on_elements` next.
    pub interest: ElementInterest,
    /// Event times at which to call `on_event_time`, once the watermark
    /// reaches each.
    pub event_timers: Vec<i64>,
    /// Wall-clock delays in milliseconds after which to call
    /// `on_processing_time`.
    pub processing_delays: Vec<u64>,
}

/// One window's trigger state inside a [`TriggerPolicy`]: a handle the
/// policy hands out and understands, given back with
/// [`TriggerPolicy::release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WindowTriggerHandle(pub u64);

/// One configured trigger: a plugin opened with the pipeline's `trigger:`
/// config, holding one trigger state per window.
///
/// A trigger policy knows how to:
/// - say which result columns it wants to preview with elements;
/// - create a window's trigger state, or restore one from snapshot bytes;
/// - decide, for one window, when elements arrive, when the watermark
///   reaches a time it asked for, when a processing-time delay it asked for
///   has passed, and when two sessions merge;
/// - snapshot and release a window's trigger state.
///
/// Failures poison the policy as they do an [`Aggregation`].
pub trait TriggerPolicy: Send {
    /// `source (name version)`, the name errors use.
    fn label(&self) -> &str;
    /// The plugin's self-description (`state_version` 0: it keeps no state
    /// per window).
    fn info(&self) -> Option<&PluginInfo>;
    /// The result columns (`<aggregation>.<output>`) it previews.
    fn watches(&self) -> &[String];
    /// Whether a call failed so that every window's trigger state is lost.
    fn is_poisoned(&self) -> bool;
    /// A fresh instance of the same plugin and config; old handles are void.
    fn reopen(&mut self) -> Result<(), PluginError>;
    /// The trigger state of a new window.
    fn create(&mut self, window: Window) -> Result<WindowTriggerHandle, PluginError>;
    /// A window's trigger state rebuilt from snapshot bytes.
    fn restore(
        &mut self,
        state: &[u8],
        state_version: u32,
    ) -> Result<WindowTriggerHandle, PluginError>;
    /// Elements arrived; `watermark` is the watermark they arrived under.
    fn on_elements(
        &mut self,
        t: WindowTriggerHandle,
        window: Window,
        batch: &Elements,
        watermark: i64,
    ) -> Result<Decision, PluginError>;
    /// The watermark reached `time`: a timer it asked for, or the window's end.
    fn on_event_time(
        &mut self,
        t: WindowTriggerHandle,
        window: Window,
        time: i64,
        watermark: i64,
    ) -> Result<Decision, PluginError>;
    /// A processing-time delay it asked for fell due at `time` (wall clock).
    fn on_processing_time(
        &mut self,
        t: WindowTriggerHandle,
        window: Window,
        time: i64,
        watermark: i64,
    ) -> Result<Decision, PluginError>;
    /// Folds `from` into `into` as their sessions merge into `window`.
    fn merge(
        &mut self,
        into: WindowTriggerHandle,
        from: WindowTriggerHandle,
        window: Window,
    ) -> Result<Decision, PluginError>;
    /// A window's trigger state as bytes (empty: as new).
    fn snapshot(&mut self, t: WindowTriggerHandle) -> Result<Vec<u8>, PluginError>;
    /// Frees a window's trigger state.
    fn release(&mut self, t: WindowTriggerHandle) -> Result<(), PluginError>;
}
