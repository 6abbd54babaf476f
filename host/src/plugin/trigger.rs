//! Trigger plugins: compiled and sandboxed like aggregators, one live
//! instance per pipeline holding one `window-trigger` resource per window.
//!
//! What the host does with a trigger's decisions is in `window::trigger`;
//! this module only calls the plugin and checks what it returns.

use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::ResourceAny;

use super::bindings::trigger_v0_1::{Decision, ElementInterest, Elements, TriggerWindow};
use super::bindings::{PluginInfo, TriggerPlugin, TriggerPluginPre};
use super::engine::{PluginEngine, PluginState, check_snapshot, checked_info, guarded_call, start};
use super::limits::{EpochTicker, PluginLimits};
use super::output::PluginOutput;
use super::pace::CallTimes;
use super::untrusted::bounded;
use crate::error::PluginError;
use crate::window::Window;

/// The WIT interface a trigger component exports.
pub const TRIGGER_EXPORT: &str = "sluice:plugin/trigger@0.1.0";

/// Most timers one decision may set: a decision is per window and per call,
/// so a trigger asking for more is broken, not busy.
pub const MAX_TIMERS_PER_DECISION: usize = 64;

/// A compiled trigger component, checked against the trigger-plugin world.
#[derive(Clone)]
pub struct CompiledTrigger {
    /// Where it came from (`builtin/early` or a path), for messages.
    pub source: String,
    pre: TriggerPluginPre<PluginState>,
}

/// One window's trigger state inside a [`TriggerInstance`]; a handle that
/// must be given back with [`TriggerInstance::release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowTrigger(ResourceAny);

impl PluginEngine {
    /// Compiles a trigger component; refuses one that imports what the host
    /// does not grant or does not export [`TRIGGER_EXPORT`].
    pub fn compile_trigger(
        &self,
        source: &str,
        bytes: &[u8],
    ) -> Result<CompiledTrigger, PluginError> {
        let refuse = |message: String| PluginError::Load {
            plugin: source.to_string(),
            message,
        };
        let (component, _) = self.checked_component(source, bytes)?;
        let exports = self.exports(&component);
        if !exports.iter().any(|e| e == TRIGGER_EXPORT) {
            return Err(refuse(format!(
                "does not export {TRIGGER_EXPORT} (it exports {}); a `trigger:` plugin \
                 must be built against the trigger-plugin world of sluice:plugin@0.1.0",
                if exports.is_empty() {
                    "nothing".to_string()
                } else {
                    exports.join(", ")
                }
            )));
        }
        let pre = self
            .linker()
            .instantiate_pre(&component)
            .and_then(TriggerPluginPre::new)
            .map_err(|e| refuse(format!("does not match the trigger-plugin world: {e:#}")))?;
        Ok(CompiledTrigger {
            source: source.to_string(),
            pre,
        })
    }

    /// Instantiates a trigger and opens its policy with `config` (JSON).
    pub fn open_trigger(
        &self,
        plugin: &CompiledTrigger,
        config: &str,
    ) -> Result<TriggerInstance, PluginError> {
        let limits = self.limits();
        let output = PluginOutput::new(
            format!("trigger {}", plugin.source),
            limits.message_bytes(),
            limits.log_lines_per_second,
        );
        let (store, bindings) = instantiate(plugin, limits, &output)?;
        let mut instance = TriggerInstance {
            label: plugin.source.clone(),
            plugin: plugin.clone(),
            config: config.to_string(),
            limits: limits.clone(),
            _ticker: self.ticker(),
            store,
            bindings,
            output,
            policy: None,
            poisoned: false,
            times: CallTimes::new(),
            info: None,
            watches: Vec::new(),
        };
        let info = instance.call(|b, s| b.sluice_plugin_trigger().call_info(s))?;
        let info = checked_info(info, limits).map_err(|message| PluginError::Load {
            plugin: plugin.source.clone(),
            message,
        })?;
        instance.label = format!("{} ({} {})", plugin.source, info.name, info.version);
        instance
            .output
            .set_who(format!("trigger {}", instance.label));
        instance.info = Some(info);
        instance.watches = instance.open()?;
        Ok(instance)
    }
}

fn instantiate(
    plugin: &CompiledTrigger,
    limits: &PluginLimits,
    output: &Arc<PluginOutput>,
) -> Result<(Store<PluginState>, TriggerPlugin), PluginError> {
    start(
        &plugin.source,
        plugin.pre.engine(),
        limits,
        output,
        |store| plugin.pre.instantiate(store),
    )
}

/// The live trigger plugin of one pipeline.
pub struct TriggerInstance {
    label: String,
    plugin: CompiledTrigger,
    config: String,
    limits: PluginLimits,
    _ticker: Arc<EpochTicker>,
    store: Store<PluginState>,
    bindings: TriggerPlugin,
    output: Arc<PluginOutput>,
    policy: Option<ResourceAny>,
    poisoned: bool,
    times: CallTimes,
    info: Option<PluginInfo>,
    watches: Vec<String>,
}

fn wit_window(w: Window) -> TriggerWindow {
    TriggerWindow {
        start: w.start,
        end: w.end,
    }
}

impl TriggerInstance {
    /// `source (name version)`, the name errors use.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The plugin's self-description, escaped.
    pub fn info(&self) -> Option<&PluginInfo> {
        self.info.as_ref()
    }

    /// The limits the instance runs under.
    pub fn limits(&self) -> &PluginLimits {
        &self.limits
    }

    /// The result columns the trigger previews.
    pub fn watches(&self) -> &[String] {
        &self.watches
    }

    /// Whether a call trapped, timed out or ran out of memory: every
    /// window trigger in the instance is lost until [`Self::reopen`].
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// A fresh instance of the same plugin and config; old handles are void.
    pub fn reopen(&mut self) -> Result<(), PluginError> {
        let (store, bindings) = instantiate(&self.plugin, &self.limits, &self.output)?;
        self.store = store;
        self.bindings = bindings;
        self.policy = None;
        self.poisoned = false;
        self.open().map(drop)
    }

    fn open(&mut self) -> Result<Vec<String>, PluginError> {
        let config = self.config.clone();
        let opened = self.call(|b, s| b.sluice_plugin_trigger().policy().call_open(s, &config))?;
        let policy = opened.map_err(|message| PluginError::Config {
            plugin: self.label.clone(),
            message: bounded(&message, self.limits.message_bytes()).into_owned(),
        })?;
        self.policy = Some(policy);
        let watches =
            self.call(|b, s| b.sluice_plugin_trigger().policy().call_watches(s, policy))?;
        // Column names: a pipeline refuses any that is not one of its own,
        // quoting it.
        let limit = self.limits.message_bytes();
        Ok(watches
            .iter()
            .map(|w| bounded(w, limit).into_owned())
            .collect())
    }

    fn call<R>(
        &mut self,
        f: impl FnOnce(&TriggerPlugin, &mut Store<PluginState>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        guarded_call(
            (&mut self.store, &self.bindings),
            &self.limits,
            &mut self.poisoned,
            &self.label,
            &mut self.times,
            f,
        )
    }

    fn policy(&self) -> Result<ResourceAny, PluginError> {
        self.policy.ok_or_else(|| PluginError::Call {
            plugin: self.label.clone(),
            message: "trigger policy is not open".into(),
        })
    }

    /// Refuses a decision no correct trigger gives.
    fn checked(&self, decision: Decision) -> Result<Decision, PluginError> {
        let timers = decision.event_timers.len() + decision.processing_delays.len();
        let bad = if timers > MAX_TIMERS_PER_DECISION {
            Some(format!(
                "asked for {timers} timers in one decision (at most {MAX_TIMERS_PER_DECISION})"
            ))
        } else if matches!(decision.interest, ElementInterest::After(0)) {
            Some("asked to hear of elements after 0 more (use after(1) for every element)".into())
        } else {
            None
        };
        match bad {
            Some(message) => Err(PluginError::Call {
                plugin: self.label.clone(),
                message,
            }),
            None => Ok(decision),
        }
    }

    /// The trigger state of a new window.
    pub fn create(&mut self, window: Window) -> Result<WindowTrigger, PluginError> {
        let policy = self.policy()?;
        self.call(|b, s| {
            b.sluice_plugin_trigger()
                .policy()
                .call_create(s, policy, wit_window(window))
        })
        .map(WindowTrigger)
    }

    /// A window's trigger state rebuilt from snapshot bytes.
    pub fn restore(
        &mut self,
        state: &[u8],
        state_version: u32,
    ) -> Result<WindowTrigger, PluginError> {
        let policy = self.policy()?;
        let restored = self.call(|b, s| {
            b.sluice_plugin_trigger()
                .policy()
                .call_restore(s, policy, state, state_version)
        })?;
        restored
            .map(WindowTrigger)
            .map_err(|message| PluginError::Call {
                plugin: self.label.clone(),
                message: format!(
                    "restore failed: {}",
                    bounded(&message, self.limits.message_bytes())
                ),
            })
    }

    /// Tells a window's trigger of new elements.
    pub fn on_elements(
        &mut self,
        t: WindowTrigger,
        window: Window,
        batch: &Elements,
        watermark: i64,
    ) -> Result<Decision, PluginError> {
        let d = self.call(|b, s| {
            b.sluice_plugin_trigger().window_trigger().call_on_elements(
                s,
                t.0,
                wit_window(window),
                batch,
                watermark,
            )
        })?;
        self.checked(d)
    }

    /// Tells a window's trigger the watermark reached `time`.
    pub fn on_event_time(
        &mut self,
        t: WindowTrigger,
        window: Window,
        time: i64,
        watermark: i64,
    ) -> Result<Decision, PluginError> {
        let d = self.call(|b, s| {
            b.sluice_plugin_trigger()
                .window_trigger()
                .call_on_event_time(s, t.0, wit_window(window), time, watermark)
        })?;
        // A timer at or before `time` is due already: the host would call
        // again at once, for ever, and no single call would be slow.
        if let Some(&again) = d.event_timers.iter().find(|&&t| t <= time) {
            return Err(PluginError::Call {
                plugin: self.label.clone(),
                message: format!(
                    "asked, when called for event time {time}, for a timer at {again}, \
                     which is not later"
                ),
            });
        }
        self.checked(d)
    }

    /// Tells a window's trigger a processing-time delay fell due at `time`.
    pub fn on_processing_time(
        &mut self,
        t: WindowTrigger,
        window: Window,
        time: i64,
        watermark: i64,
    ) -> Result<Decision, PluginError> {
        let d = self.call(|b, s| {
            b.sluice_plugin_trigger()
                .window_trigger()
                .call_on_processing_time(s, t.0, wit_window(window), time, watermark)
        })?;
        self.checked(d)
    }

    /// Folds `from` into `into` as their sessions merge into `window`.
    pub fn merge(
        &mut self,
        into: WindowTrigger,
        from: WindowTrigger,
        window: Window,
    ) -> Result<Decision, PluginError> {
        let d = self.call(|b, s| {
            b.sluice_plugin_trigger().window_trigger().call_merge(
                s,
                into.0,
                from.0,
                wit_window(window),
            )
        })?;
        self.checked(d)
    }

    /// A window's trigger state as bytes (empty: as new); one over the
    /// `snapshot_limit` is refused.
    pub fn snapshot(&mut self, t: WindowTrigger) -> Result<Vec<u8>, PluginError> {
        let bytes = self.call(|b, s| {
            b.sluice_plugin_trigger()
                .window_trigger()
                .call_snapshot(s, t.0)
        })?;
        check_snapshot(&bytes, &self.limits, &self.label)?;
        Ok(bytes)
    }

    /// Frees a window's trigger state.
    pub fn release(&mut self, t: WindowTrigger) -> Result<(), PluginError> {
        self.call(|_, s| t.0.resource_drop(s))
    }
}
