//! The SDK for sluice aggregator and trigger plugins written in Rust.
//!
//! A sluice plugin is a WebAssembly component that implements the `aggregator`
//! interface of `wit/types.wit`. This crate hides the component-model
//! plumbing: a plugin is a type that implements [`Aggregator`] (a struct
//! built from its configuration, plus a few methods on its per-window state),
//! exported with [`export_aggregator!`]. The configuration arrives as JSON and
//! is parsed with serde; the default snapshot format is postcard, versioned by
//! [`Info::state_version`].
//!
//! ```ignore
//! use sluice_sdk::{export_aggregator, Aggregator, Info, NoConfig, Output};
//!
//! struct Count;
//!
//! impl Aggregator for Count {
//!     type Config = NoConfig;
//!     type State = u64;
//!     const INFO: Info = Info::mergeable("count", env!("CARGO_PKG_VERSION"), "Number of events.");
//!     fn new(_: NoConfig) -> Result<Self, String> { Ok(Count) }
//!     fn outputs(&self) -> Vec<Output> { vec![Output::integer("count", "events in the window")] }
//!     fn create(&self) -> u64 { 0 }
//!     fn add(&self, n: &mut u64, values: &[f64], _times: &[i64]) { *n += values.len() as u64 }
//!     fn merge(&self, n: &mut u64, other: &u64) -> Result<(), String> { *n += other; Ok(()) }
//!     fn finish(&self, n: &u64) -> Vec<Option<f64>> { vec![Some(*n as f64)] }
//! }
//!
//! export_aggregator!(Count);
//! ```
//!
//! Build it with `cargo build --target wasm32-wasip2` as a `cdylib`.

mod adapter;
#[doc(hidden)]
#[allow(missing_docs, clippy::all)]
pub mod bindings;
#[cfg(feature = "sketch")]
pub mod sketch;
pub mod stats;
pub mod trigger;
#[doc(hidden)]
#[allow(missing_docs, clippy::all)]
pub mod trigger_bindings;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// What a plugin says about itself; mirrors `plugin-info` in the WIT package.
///
/// It is a constant so that the host can ask for it without configuring the
/// plugin (for `sluice plugin inspect` and load-time checks).
#[derive(Debug, Clone, Copy)]
pub struct Info {
    /// Plugin name, for example `stats`.
    pub name: &'static str,
    /// The plugin's own semantic version; `env!("CARGO_PKG_VERSION")` is usual.
    pub version: &'static str,
    /// One paragraph on what the plugin computes.
    pub description: &'static str,
    /// Version of the snapshot byte format; bump it when [`Aggregator::State`] changes shape.
    pub state_version: u32,
    /// Whether [`Aggregator::merge`] is implemented (sliding and session windows need it).
    pub mergeable: bool,
    /// Whether merging is order-independent.
    pub commutative: bool,
    /// Human-readable description of the JSON configuration.
    pub config_help: &'static str,
}

impl Info {
    /// Info for the common case: mergeable, commutative, state format 1, no configuration.
    pub const fn mergeable(
        name: &'static str,
        version: &'static str,
        description: &'static str,
    ) -> Self {
        Info {
            name,
            version,
            description,
            state_version: 1,
            mergeable: true,
            commutative: true,
            config_help: "takes no configuration: {}",
        }
    }

    /// The same info for a trigger that keeps no state per window (its
    /// `State` is `()`): state format 0, which tells the host it may drop a
    /// window's trigger state between calls, so idle windows cost the
    /// plugin no memory.
    pub const fn stateless(mut self) -> Self {
        self.state_version = 0;
        self
    }

    /// The same info with another configuration description.
    pub const fn with_config_help(mut self, config_help: &'static str) -> Self {
        self.config_help = config_help;
        self
    }
}

/// How the host renders an output value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// A JSON integer, such as a count; the value must be integral.
    Integer,
    /// A JSON number.
    Float,
}

/// One named output of an aggregation, declared before any data is seen.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// Short name such as `p99`; the host prints `<aggregation>.<name>`.
    pub name: String,
    /// How the value is rendered.
    pub kind: OutputKind,
    /// One line for humans.
    pub description: String,
}

impl Output {
    /// An output rendered as a JSON integer.
    pub fn integer(name: impl Into<String>, description: impl Into<String>) -> Self {
        Output {
            name: name.into(),
            kind: OutputKind::Integer,
            description: description.into(),
        }
    }

    /// An output rendered as a JSON number.
    pub fn float(name: impl Into<String>, description: impl Into<String>) -> Self {
        Output {
            name: name.into(),
            kind: OutputKind::Float,
            description: description.into(),
        }
    }
}

/// The configuration of a plugin that takes none: accepts `{}` and refuses
/// any key, so that a typo in a pipeline is reported rather than ignored.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NoConfig {}

/// A windowed aggregation, written as a type built from its configuration.
///
/// `Self` is one configured use of the plugin (one `aggregations:` entry of a
/// pipeline) and is shared by every window; [`Aggregator::State`] is what one
/// window keeps. The host feeds values in batches, in arrival order, and may
/// split the same values into batches differently from run to run: results
/// must not depend on where the batches split.
pub trait Aggregator: Sized + 'static {
    /// The JSON configuration; use `#[serde(deny_unknown_fields)]` so typos are errors.
    type Config: DeserializeOwned;
    /// The state of one window.
    type State: Serialize + DeserializeOwned;

    /// The plugin's self-description.
    const INFO: Info;

    /// Validates a parsed configuration; the error should name the bad key.
    fn new(config: Self::Config) -> Result<Self, String>;

    /// The outputs [`Aggregator::finish`] returns, in that order.
    fn outputs(&self) -> Vec<Output>;

    /// An empty state for a new window.
    fn create(&self) -> Self::State;

    /// Adds a batch of finite values with their event times (ms since the epoch).
    fn add(&self, state: &mut Self::State, values: &[f64], times: &[i64]);

    /// Folds `other` into `state`. Must be associative; declare
    /// [`Info::commutative`] only if it is also commutative.
    fn merge(&self, state: &mut Self::State, other: &Self::State) -> Result<(), String> {
        let _ = (state, other);
        Err(format!("plugin {} does not support merge", Self::INFO.name))
    }

    /// The current outputs; `None` where the output is undefined for this input.
    fn finish(&self, state: &Self::State) -> Vec<Option<f64>>;

    /// The state as bytes in format [`Info::state_version`] (postcard by default).
    fn snapshot(&self, state: &Self::State) -> Vec<u8> {
        // Serialising plain data to a Vec only fails for types serde cannot
        // express in postcard (maps with non-string keys are fine); an empty
        // snapshot then fails loudly at restore rather than here.
        postcard::to_allocvec(state).unwrap_or_default()
    }

    /// A state rebuilt from [`Aggregator::snapshot`] bytes written in format `version`.
    fn restore(&self, bytes: &[u8], version: u32) -> Result<Self::State, String> {
        if version != Self::INFO.state_version {
            return Err(format!(
                "plugin {} reads state format {}, not {version}",
                Self::INFO.name,
                Self::INFO.state_version
            ));
        }
        postcard::from_bytes(bytes).map_err(|e| format!("corrupt {} state: {e}", Self::INFO.name))
    }
}

/// Exports a type that implements [`Aggregator`] as the plugin's component.
///
/// Use it once, in a `cdylib` crate built for `wasm32-wasip2`. On other
/// targets it exports nothing, so that the same crate also builds natively
/// for unit tests of its `Aggregator` methods.
#[macro_export]
macro_rules! export_aggregator {
    ($aggregator:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type __SluiceComponent = $crate::__private::Component<$aggregator>;
            $crate::__private::bindings::export_component!(
                __SluiceComponent with_types_in $crate::__private::bindings
            );
        };
    };
}

/// Exports a type that implements [`trigger::Trigger`] as the plugin's component.
///
/// Like [`export_aggregator!`]: once, in a `cdylib` crate built for
/// `wasm32-wasip2`; on other targets it exports nothing.
#[macro_export]
macro_rules! export_trigger {
    ($trigger:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type __SluiceTrigger = $crate::trigger::TriggerComponent<$trigger>;
            $crate::__private::trigger_bindings::export_trigger_component!(
                __SluiceTrigger with_types_in $crate::__private::trigger_bindings
            );
        };
    };
}

/// Used by [`export_aggregator!`] and [`export_trigger!`]; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::adapter::{AccumulatorOf, AggregationOf, Component};
    pub use crate::bindings;
    pub use crate::trigger_bindings;
}
