//! One component instance under the sandbox, whatever world it serves (an
//! 0.1 aggregator, an 0.2 grouped aggregator, a trigger): its store and
//! bindings, the limits every call runs under, where its output goes, and
//! what its calls cost. The three instance types hold one each and add only
//! what their world needs (resources, declared inputs and outputs).

use std::sync::Arc;
use std::time::Duration;

use wasmtime::Store;

use sluice_config::PluginLimits;
use sluice_core::plugin::PluginError;
use sluice_core::plugin::untrusted::bounded;

use crate::engine::guarded_call;
use crate::limits::EpochTicker;
use crate::output::PluginOutput;
use crate::pace::CallTimes;
use crate::wasi::PluginState;

/// A component's store and bindings under the sandbox, with the call
/// accounting the host reports.
pub(crate) struct Sandboxed<B> {
    /// Names the plugin in errors and in the log: its file or built-in
    /// name, then `(name version)` once the plugin has said them.
    pub(crate) label: String,
    pub(crate) limits: PluginLimits,
    // Instances outlive the engine value in some callers; the ticker must
    // keep running while any of them can be called, or no call times out.
    _ticker: Arc<EpochTicker>,
    pub(crate) store: Store<PluginState>,
    pub(crate) bindings: B,
    /// Where the plugin's stdout and stderr go, across restarts.
    pub(crate) output: Arc<PluginOutput>,
    /// Set by a failed call: a wasm instance that trapped cannot be entered
    /// again until it is restarted.
    pub(crate) poisoned: bool,
    /// Calls made and the time spent in them, across restarts: for metrics.
    pub(crate) calls: u64,
    pub(crate) call_time: Duration,
    /// The latest calls' times, for the warning when they near the deadline.
    times: CallTimes,
}

impl<B> Sandboxed<B> {
    /// Wraps a started store (see [`crate::engine::start`]).
    pub(crate) fn new(
        label: String,
        limits: PluginLimits,
        ticker: Arc<EpochTicker>,
        output: Arc<PluginOutput>,
        (store, bindings): (Store<PluginState>, B),
    ) -> Self {
        Self {
            label,
            limits,
            _ticker: ticker,
            store,
            bindings,
            output,
            poisoned: false,
            calls: 0,
            call_time: Duration::ZERO,
            times: CallTimes::new(),
        }
    }

    /// Takes a fresh store of the same component, after a failure: the
    /// instance can be called again; its resources are gone with the old
    /// store.
    pub(crate) fn restart(&mut self, (store, bindings): (Store<PluginState>, B)) {
        self.store = store;
        self.bindings = bindings;
        self.poisoned = false;
    }

    /// Runs one guest call under the limits (see [`guarded_call`]), timed.
    pub(crate) fn call<R>(
        &mut self,
        f: impl FnOnce(&B, &mut Store<PluginState>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let (result, took) = guarded_call(
            (&mut self.store, &self.bindings),
            &self.limits,
            &mut self.poisoned,
            &self.label,
            &mut self.times,
            f,
        );
        self.calls += 1;
        self.call_time += took;
        result
    }

    /// A failed call's error, naming the plugin.
    pub(crate) fn failed(&self, message: impl Into<String>) -> PluginError {
        PluginError::Call {
            plugin: self.label.clone(),
            message: message.into(),
        }
    }

    /// The plugin's refusal of its config (an `open` call's error): a
    /// config error naming the plugin, its message escaped and cut.
    pub(crate) fn refused(&self, message: &str) -> PluginError {
        PluginError::Config {
            plugin: self.label.clone(),
            message: bounded(message, self.limits.message_bytes()).into_owned(),
        }
    }

    /// The memory limit, when the last failure was the instance reaching it.
    pub(crate) fn out_of_memory(&self) -> Option<u64> {
        (self.poisoned && self.store.data().limits.exceeded()).then_some(self.limits.memory_limit)
    }

    /// Names who the plugin's output and slow calls are logged as.
    pub(crate) fn set_who(&self, who: String) {
        self.output.set_who(who);
    }
}
