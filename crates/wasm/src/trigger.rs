//! Trigger plugins: compiled and sandboxed like aggregators, one live
//! instance per pipeline holding one `window-trigger` resource per window.
//!
//! What the host does with a trigger's decisions is in `window::trigger`;
//! this module only calls the plugin and checks what it returns.

use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::ResourceAny;

use slab::Slab;
use sluice_config::PluginLimits;
use sluice_core::plugin::untrusted::bounded;
use sluice_core::plugin::{
    Decision, ElementInterest, Elements, PluginError, PluginInfo, TriggerPolicy, Window,
    WindowTriggerHandle,
};

use crate::bindings::{TriggerPlugin, TriggerPluginPre};
use crate::convert;
use crate::engine::{PluginEngine, check_snapshot, checked_info, start};
use crate::output::PluginOutput;
use crate::sandboxed::Sandboxed;
use crate::wasi::PluginState;

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
            .linker(&component)
            .instantiate_pre(&component)
            .and_then(TriggerPluginPre::new)
            .map_err(|e| refuse(format!("does not match the trigger-plugin world: {e:#}")))?;
        Ok(CompiledTrigger {
            source: source.to_string(),
            pre,
        })
    }

    /// The interface names a compiled trigger imports and exports: its WIT world.
    pub fn trigger_world(&self, plugin: &CompiledTrigger) -> (Vec<String>, Vec<String>) {
        self.component_world(plugin.pre.instance_pre().component())
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
        let started = instantiate(plugin, limits, &output)?;
        let mut instance = TriggerInstance {
            sb: Sandboxed::new(
                plugin.source.clone(),
                limits.clone(),
                self.ticker(),
                output,
                started,
            ),
            plugin: plugin.clone(),
            config: config.to_string(),
            policy: None,
            windows: Slab::new(),
            info: None,
            watches: Vec::new(),
        };
        let info = instance.call(|b, s| b.sluice_plugin_trigger().call_info(s))?;
        let info = checked_info(info.into(), limits).map_err(|message| PluginError::Load {
            plugin: plugin.source.clone(),
            message,
        })?;
        instance.sb.label = format!("{} ({} {})", plugin.source, info.name, info.version);
        instance
            .sb
            .set_who(format!("trigger {}", instance.sb.label));
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

/// The live trigger plugin of one pipeline: the [`TriggerPolicy`] of a
/// component, whose store holds every window's `window-trigger` resource.
pub struct TriggerInstance {
    /// The component's store under the sandbox.
    sb: Sandboxed<TriggerPlugin>,
    plugin: CompiledTrigger,
    config: String,
    policy: Option<ResourceAny>,
    /// The window-trigger resources, by handle.
    windows: Slab<ResourceAny>,
    info: Option<PluginInfo>,
    watches: Vec<String>,
}

impl TriggerInstance {
    /// The limits the instance runs under.
    pub fn limits(&self) -> &PluginLimits {
        &self.sb.limits
    }

    fn open(&mut self) -> Result<Vec<String>, PluginError> {
        let config = self.config.clone();
        let opened = self.call(|b, s| b.sluice_plugin_trigger().policy().call_open(s, &config))?;
        let policy = opened.map_err(|message| self.sb.refused(&message))?;
        self.policy = Some(policy);
        let watches =
            self.call(|b, s| b.sluice_plugin_trigger().policy().call_watches(s, policy))?;
        // Column names: a pipeline refuses any that is not one of its own,
        // quoting it.
        let limit = self.sb.limits.message_bytes();
        Ok(watches
            .iter()
            .map(|w| bounded(w, limit).into_owned())
            .collect())
    }

    /// Runs one guest call under the limits (see [`Sandboxed::call`]).
    fn call<R>(
        &mut self,
        f: impl FnOnce(&TriggerPlugin, &mut Store<PluginState>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        self.sb.call(f)
    }

    fn policy(&self) -> Result<ResourceAny, PluginError> {
        self.policy
            .ok_or_else(|| self.sb.failed("trigger policy is not open"))
    }

    /// The resource behind a handle.
    fn resource(&self, t: WindowTriggerHandle) -> Result<ResourceAny, PluginError> {
        usize::try_from(t.0)
            .ok()
            .and_then(|i| self.windows.get(i))
            .copied()
            .ok_or_else(|| {
                self.sb
                    .failed(format!("was given an unknown window trigger {}", t.0))
            })
    }

    fn handle(&mut self, resource: ResourceAny) -> WindowTriggerHandle {
        WindowTriggerHandle(self.windows.insert(resource) as u64)
    }

    /// Refuses a decision no correct trigger gives.
    fn checked(
        &self,
        decision: crate::bindings::trigger_v0_1::Decision,
    ) -> Result<Decision, PluginError> {
        let decision = Decision::from(decision);
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
                plugin: self.sb.label.clone(),
                message,
            }),
            None => Ok(decision),
        }
    }
}

impl TriggerPolicy for TriggerInstance {
    fn label(&self) -> &str {
        &self.sb.label
    }

    fn info(&self) -> Option<&PluginInfo> {
        self.info.as_ref()
    }

    fn watches(&self) -> &[String] {
        &self.watches
    }

    fn is_poisoned(&self) -> bool {
        self.sb.poisoned
    }

    fn reopen(&mut self) -> Result<(), PluginError> {
        self.sb
            .restart(instantiate(&self.plugin, &self.sb.limits, &self.sb.output)?);
        self.policy = None;
        self.windows.clear();
        self.open().map(drop)
    }

    fn create(&mut self, window: Window) -> Result<WindowTriggerHandle, PluginError> {
        let policy = self.policy()?;
        let created = self.call(|b, s| {
            b.sluice_plugin_trigger()
                .policy()
                .call_create(s, policy, convert::window(window))
        })?;
        Ok(self.handle(created))
    }

    fn restore(
        &mut self,
        state: &[u8],
        state_version: u32,
    ) -> Result<WindowTriggerHandle, PluginError> {
        let policy = self.policy()?;
        let restored = self.call(|b, s| {
            b.sluice_plugin_trigger()
                .policy()
                .call_restore(s, policy, state, state_version)
        })?;
        match restored {
            Ok(resource) => Ok(self.handle(resource)),
            Err(message) => Err(self.sb.failed(format!(
                "restore failed: {}",
                bounded(&message, self.sb.limits.message_bytes())
            ))),
        }
    }

    fn on_elements(
        &mut self,
        t: WindowTriggerHandle,
        window: Window,
        batch: &Elements,
        watermark: i64,
    ) -> Result<Decision, PluginError> {
        let t = self.resource(t)?;
        let batch = convert::elements(batch);
        let d = self.call(|b, s| {
            b.sluice_plugin_trigger().window_trigger().call_on_elements(
                s,
                t,
                convert::window(window),
                &batch,
                watermark,
            )
        })?;
        self.checked(d)
    }

    fn on_event_time(
        &mut self,
        t: WindowTriggerHandle,
        window: Window,
        time: i64,
        watermark: i64,
    ) -> Result<Decision, PluginError> {
        let t = self.resource(t)?;
        let d = self.call(|b, s| {
            b.sluice_plugin_trigger()
                .window_trigger()
                .call_on_event_time(s, t, convert::window(window), time, watermark)
        })?;
        self.checked(d)
    }

    fn on_processing_time(
        &mut self,
        t: WindowTriggerHandle,
        window: Window,
        time: i64,
        watermark: i64,
    ) -> Result<Decision, PluginError> {
        let t = self.resource(t)?;
        let d = self.call(|b, s| {
            b.sluice_plugin_trigger()
                .window_trigger()
                .call_on_processing_time(s, t, convert::window(window), time, watermark)
        })?;
        self.checked(d)
    }

    fn merge(
        &mut self,
        into: WindowTriggerHandle,
        from: WindowTriggerHandle,
        window: Window,
    ) -> Result<Decision, PluginError> {
        let (into, from) = (self.resource(into)?, self.resource(from)?);
        let d = self.call(|b, s| {
            b.sluice_plugin_trigger().window_trigger().call_merge(
                s,
                into,
                from,
                convert::window(window),
            )
        })?;
        self.checked(d)
    }

    /// One over the `snapshot_limit` is refused.
    fn snapshot(&mut self, t: WindowTriggerHandle) -> Result<Vec<u8>, PluginError> {
        let t = self.resource(t)?;
        let bytes = self.call(|b, s| {
            b.sluice_plugin_trigger()
                .window_trigger()
                .call_snapshot(s, t)
        })?;
        check_snapshot(&bytes, &self.sb.limits, &self.sb.label)?;
        Ok(bytes)
    }

    fn release(&mut self, t: WindowTriggerHandle) -> Result<(), PluginError> {
        let resource = self.resource(t)?;
        if let Ok(i) = usize::try_from(t.0) {
            self.windows.remove(i);
        }
        self.call(|_, s| resource.resource_drop(s))
    }
}
