//! Components of interface 0.2 (`sluice:plugin/aggregator@0.2.0`): one live
//! instance per configured aggregation holding the states of many groups,
//! called for batches of rows and groups.
//!
//! The most interesting item in this module is [`GroupedInstance`], core's
//! [`GroupedAggregation`] for such a component. It runs under the same
//! sandbox as a 0.1 instance (deadline, memory, fuel, output to the log;
//! see [`crate::sandboxed`]) and checks what the plugin returns before any of
//! it reaches a window: declared inputs and outputs (plain names, no
//! repeats), one output column per declared output, of the declared kind,
//! one value per group, finite floats, snapshots under the snapshot limit,
//! plugin strings escaped and cut.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::Store;
use wasmtime::component::ResourceAny;

use sluice_config::PluginLimits;
use sluice_core::plugin::grouped::{
    GroupError, GroupId, GroupedAggregation, InputSpec, OutputValue, Rows, check_inputs,
};
use sluice_core::plugin::untrusted::bounded;
use sluice_core::plugin::{OutputSpec, PluginError, PluginInfo, check_outputs};

use crate::bindings::{GroupedAggregatorPlugin, GroupedAggregatorPluginPre};
use crate::cache::CacheOutcome;
use crate::convert;
use crate::engine::{PluginEngine, check_snapshot, checked_info, start};
use crate::output::PluginOutput;
use crate::sandboxed::Sandboxed;
use crate::wasi::PluginState;

/// The WIT interface a 0.2 aggregator component exports.
pub const GROUPED_AGGREGATOR_EXPORT: &str = "sluice:plugin/aggregator@0.2.0";

/// A compiled 0.2 aggregator component, checked against its world.
#[derive(Clone)]
pub struct CompiledGrouped {
    /// Where it came from (`builtin/stats` or a path), for messages.
    pub source: String,
    /// Whether the compiled code came from the on-disk cache.
    pub cache: CacheOutcome,
    pre: GroupedAggregatorPluginPre<PluginState>,
}

impl PluginEngine {
    /// Compiles a component of interface 0.2; refuses one that imports what
    /// the host does not grant or does not export
    /// [`GROUPED_AGGREGATOR_EXPORT`] with the types this host expects.
    pub fn compile_grouped(
        &self,
        source: &str,
        bytes: &[u8],
    ) -> Result<CompiledGrouped, PluginError> {
        let (component, cache) = self.checked_component(source, bytes)?;
        self.grouped_from(source, component, cache)
    }

    /// [`Self::compile_grouped`] of a component already compiled and checked.
    pub(crate) fn grouped_from(
        &self,
        source: &str,
        component: wasmtime::component::Component,
        cache: CacheOutcome,
    ) -> Result<CompiledGrouped, PluginError> {
        let refuse = |message: String| PluginError::Load {
            plugin: source.to_string(),
            message,
        };
        let exports = self.exports(&component);
        if !exports.iter().any(|e| e == GROUPED_AGGREGATOR_EXPORT) {
            return Err(refuse(format!(
                "does not export {GROUPED_AGGREGATOR_EXPORT} (it exports {})",
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
            .and_then(GroupedAggregatorPluginPre::new)
            .map_err(|e| {
                refuse(format!(
                    "does not match the sluice:plugin@0.2.0 aggregator-plugin world: {e:#}"
                ))
            })?;
        Ok(CompiledGrouped {
            source: source.to_string(),
            cache,
            pre,
        })
    }

    /// The WIT world a 0.2 component imports and exports, for `plugin inspect`.
    pub fn grouped_world(&self, plugin: &CompiledGrouped) -> (Vec<String>, Vec<String>) {
        self.component_world(plugin.pre.instance_pre().component())
    }

    /// Instantiates a 0.2 component and opens one aggregation with `config`
    /// (JSON). Fails naming the plugin when it traps at start, describes
    /// itself with an overlong name, rejects the config, or declares inputs
    /// or outputs that are not plain, distinct names.
    pub fn open_grouped(
        &self,
        plugin: &CompiledGrouped,
        config: &str,
    ) -> Result<GroupedInstance, PluginError> {
        let output = PluginOutput::new(
            format!("plugin {}", plugin.source),
            self.limits().message_bytes(),
            self.limits().log_lines_per_second,
        );
        let started = instantiate(plugin, self.limits(), &output)?;
        let mut instance = GroupedInstance {
            sb: Sandboxed::new(
                plugin.source.clone(),
                self.limits().clone(),
                self.ticker(),
                output,
                started,
            ),
            plugin: plugin.clone(),
            config: config.to_string(),
            aggregation: None,
            info: PluginInfo::default(),
            inputs: Vec::new(),
            outputs: Vec::new(),
        };
        let info = instance.call(|b, s| b.sluice_plugin_aggregator().call_info(s))?;
        instance.info =
            checked_info(info.into(), self.limits()).map_err(|message| PluginError::Load {
                plugin: plugin.source.clone(),
                message,
            })?;
        instance.sb.label = format!(
            "{} ({} {})",
            plugin.source, instance.info.name, instance.info.version
        );
        instance.sb.set_who(format!("plugin {}", instance.sb.label));
        let (inputs, outputs) = instance.open()?;
        instance.inputs = inputs;
        instance.outputs = outputs;
        Ok(instance)
    }
}

/// A fresh store running `plugin`, under `limits`.
fn instantiate(
    plugin: &CompiledGrouped,
    limits: &PluginLimits,
    output: &Arc<PluginOutput>,
) -> Result<(Store<PluginState>, GroupedAggregatorPlugin), PluginError> {
    start(
        &plugin.source,
        plugin.pre.engine(),
        limits,
        output,
        |store| plugin.pre.instantiate(store),
    )
}

/// A live 0.2 component serving one configured aggregation: the
/// [`GroupedAggregation`] of a component.
///
/// Its store holds the states of every group; the host names groups by
/// index. It keeps what it was made from, so that after a failure it can be
/// replaced by a fresh instance of the same plugin and config.
pub struct GroupedInstance {
    /// The component's store under the sandbox.
    sb: Sandboxed<GroupedAggregatorPlugin>,
    plugin: CompiledGrouped,
    config: String,
    aggregation: Option<ResourceAny>,
    info: PluginInfo,
    inputs: Vec<InputSpec>,
    outputs: Vec<OutputSpec>,
}

impl GroupedInstance {
    /// Names the aggregation this instance serves (`latency`), which the
    /// log then gives for what the plugin prints and for slow calls.
    pub fn set_aggregation_name(&mut self, name: &str) {
        self.sb
            .set_who(format!("aggregation `{name}` (plugin {})", self.sb.label));
    }

    /// Runs one guest call under the limits, timed (see [`Sandboxed::call`]).
    fn call<R>(
        &mut self,
        f: impl FnOnce(&GroupedAggregatorPlugin, &mut Store<PluginState>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        self.sb.call(f)
    }

    fn failed(&self, message: String) -> PluginError {
        self.sb.failed(message)
    }

    fn aggregation(&self) -> Result<ResourceAny, PluginError> {
        self.aggregation
            .ok_or_else(|| self.failed("aggregation is not open".into()))
    }

    /// Opens the aggregation with the instance's config; returns its
    /// declared inputs and outputs, checked.
    fn open(&mut self) -> Result<(Vec<InputSpec>, Vec<OutputSpec>), PluginError> {
        let config = self.config.clone();
        let opened = self.call(|b, s| {
            b.sluice_plugin_aggregator()
                .aggregation()
                .call_open(s, &config)
        })?;
        let aggregation = opened.map_err(|message| self.sb.refused(&message))?;
        self.aggregation = Some(aggregation);
        let inputs = self.call(|b, s| {
            b.sluice_plugin_aggregator()
                .aggregation()
                .call_inputs(s, aggregation)
        })?;
        let outputs = self.call(|b, s| {
            b.sluice_plugin_aggregator()
                .aggregation()
                .call_outputs(s, aggregation)
        })?;
        let limit = self.sb.limits.message_bytes();
        let inputs: Vec<InputSpec> = inputs
            .into_iter()
            .map(|i| convert::input_spec(i, limit))
            .collect();
        let outputs: Vec<OutputSpec> = outputs
            .into_iter()
            .map(|o| convert::output_spec_v0_2(o, limit))
            .collect();
        let refuse = |message: String| PluginError::Load {
            plugin: self.sb.label.clone(),
            message,
        };
        check_inputs(&inputs).map_err(refuse)?;
        check_outputs(&outputs).map_err(refuse)?;
        Ok((inputs, outputs))
    }
}

impl GroupedAggregation for GroupedInstance {
    fn label(&self) -> &str {
        &self.sb.label
    }

    fn info(&self) -> &PluginInfo {
        &self.info
    }

    fn inputs(&self) -> &[InputSpec] {
        &self.inputs
    }

    fn outputs(&self) -> &[OutputSpec] {
        &self.outputs
    }

    fn is_poisoned(&self) -> bool {
        self.sb.poisoned
    }

    fn out_of_memory(&self) -> Option<u64> {
        self.sb.out_of_memory()
    }

    fn call_stats(&self) -> (u64, Duration) {
        (self.sb.calls, self.sb.call_time)
    }

    fn reopen(&mut self) -> Result<(), PluginError> {
        self.sb
            .restart(instantiate(&self.plugin, &self.sb.limits, &self.sb.output)?);
        self.aggregation = None;
        let (inputs, outputs) = self.open()?;
        let same = inputs == self.inputs
            && outputs.len() == self.outputs.len()
            && outputs
                .iter()
                .zip(&self.outputs)
                .all(|(a, b)| a.name == b.name && a.kind == b.kind);
        if !same {
            self.sb.poisoned = true;
            return Err(self.failed(
                "declared different inputs or outputs when opened again with the same config"
                    .into(),
            ));
        }
        Ok(())
    }

    fn update(&mut self, rows: &Rows) -> Result<(), PluginError> {
        // The store builds batches from the declared inputs: a mismatch is
        // the host's bug, refused before it reaches the plugin.
        rows.check(&self.inputs)
            .map_err(|e| self.failed(format!("was to be sent a malformed batch: {e}")))?;
        let aggregation = self.aggregation()?;
        let batch = convert::rows(rows);
        self.call(|b, s| {
            b.sluice_plugin_aggregator()
                .aggregation()
                .call_update(s, aggregation, &batch)
        })
    }

    fn merge(&mut self, into: &[GroupId], from: &[GroupId]) -> Result<(), PluginError> {
        if into.len() != from.len() {
            return Err(self.failed(format!(
                "was to merge {} groups into {}",
                from.len(),
                into.len()
            )));
        }
        let aggregation = self.aggregation()?;
        let (into, from) = (convert::groups(into), convert::groups(from));
        let merged = self.call(|b, s| {
            b.sluice_plugin_aggregator()
                .aggregation()
                .call_merge(s, aggregation, &into, &from)
        })?;
        merged.map_err(|message| {
            self.failed(format!(
                "merge failed: {}",
                bounded(&message, self.sb.limits.message_bytes())
            ))
        })
    }

    /// The outputs, checked: a column per declared output, of its kind, a
    /// value per group, finite floats. Anything else is an error for every
    /// group of the call, which does not poison the instance (its state is
    /// intact; its answer was wrong).
    fn evaluate(
        &mut self,
        groups: &[GroupId],
    ) -> Result<Vec<Vec<Option<OutputValue>>>, PluginError> {
        let aggregation = self.aggregation()?;
        let indices = convert::groups(groups);
        let columns = self.call(|b, s| {
            b.sluice_plugin_aggregator()
                .aggregation()
                .call_evaluate(s, aggregation, &indices)
        })?;
        convert::output_values(
            columns,
            &self.outputs,
            groups.len(),
            self.sb.limits.message_bytes(),
        )
        .map_err(|message| self.failed(message))
    }

    /// A snapshot over the `snapshot_limit` is refused, as in 0.1.
    fn snapshot(&mut self, groups: &[GroupId]) -> Result<Vec<Vec<u8>>, PluginError> {
        let aggregation = self.aggregation()?;
        let indices = convert::groups(groups);
        let states = self.call(|b, s| {
            b.sluice_plugin_aggregator()
                .aggregation()
                .call_snapshot(s, aggregation, &indices)
        })?;
        if states.len() != groups.len() {
            return Err(self.failed(format!(
                "returned {} snapshots for {} groups",
                states.len(),
                groups.len()
            )));
        }
        for state in &states {
            check_snapshot(state, &self.sb.limits, &self.sb.label)?;
        }
        Ok(states)
    }

    fn restore(
        &mut self,
        groups: &[GroupId],
        states: &[&[u8]],
        state_version: u32,
    ) -> Result<Vec<GroupError>, PluginError> {
        if groups.len() != states.len() {
            return Err(self.failed(format!(
                "was given {} states for {} groups",
                states.len(),
                groups.len()
            )));
        }
        let aggregation = self.aggregation()?;
        let indices = convert::groups(groups);
        let states: Vec<Vec<u8>> = states.iter().map(|s| s.to_vec()).collect();
        let restored = self.call(|b, s| {
            b.sluice_plugin_aggregator().aggregation().call_restore(
                s,
                aggregation,
                &indices,
                &states,
                state_version,
            )
        })?;
        let limit = self.sb.limits.message_bytes();
        Ok(match restored {
            Ok(()) => Vec::new(),
            Err(refused) => refused
                .into_iter()
                .map(|e| GroupError {
                    group: GroupId(e.group),
                    message: format!("restore failed: {}", bounded(&e.message, limit)),
                })
                .collect(),
        })
    }

    fn release(&mut self, groups: &[GroupId]) -> Result<(), PluginError> {
        let aggregation = self.aggregation()?;
        let indices = convert::groups(groups);
        self.call(|b, s| {
            b.sluice_plugin_aggregator()
                .aggregation()
                .call_release(s, aggregation, &indices)
        })
    }
}
