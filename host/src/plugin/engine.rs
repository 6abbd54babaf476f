//! The wasmtime engine that compiles plugins and the live instances that run them.
//!
//! One [`AggregationInstance`] per configured aggregation: its store holds the
//! plugin's memory and every accumulator resource for that aggregation, so a
//! new window costs one resource (~1 us), not one instance (~40 us), and a
//! plugin that fails takes only its own aggregation down with it.

use std::time::Duration;

use wasmtime::component::{Component, Linker, ResourceAny, ResourceTable};
use wasmtime::{Engine, Store, StoreLimits, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::random::Deterministic;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use super::bindings::{AggregatorPlugin, OutputSpec, PluginInfo};
use super::limits::{EpochTicker, PluginLimits};
use crate::error::PluginError;

/// Bytes of a plugin's stderr kept to explain a failure (a Rust panic message).
const STDERR_CAPACITY: usize = 8 << 10;

/// Compiles plugin components and instantiates them under the configured limits.
pub struct PluginEngine {
    engine: Engine,
    linker: Linker<PluginState>,
    limits: PluginLimits,
    _ticker: EpochTicker,
}

/// A compiled plugin component, ready to be instantiated any number of times.
#[derive(Clone)]
pub struct CompiledPlugin {
    /// Where the plugin came from (`builtin/stats` or a path), for messages.
    pub source: String,
    component: Component,
}

/// What a plugin's store holds besides wasm state: a WASI context that grants
/// nothing, and the limits the store enforces.
struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    stderr: MemoryOutputPipe,
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A clock stopped at the epoch: plugins get no time source, so their results
/// depend on the events alone and stay deterministic.
struct StoppedClock;

impl HostWallClock for StoppedClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for StoppedClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

impl PluginEngine {
    /// An engine enforcing `limits`, with its epoch ticker running.
    pub fn new(limits: PluginLimits) -> Result<Self, PluginError> {
        let engine = Engine::new(&limits.engine_config())
            .map_err(|e| PluginError::setup("creating the wasm engine", e))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| PluginError::setup("linking WASI", e))?;
        let ticker = EpochTicker::start(&engine)
            .map_err(|e| PluginError::setup("starting the epoch ticker", e))?;
        Ok(Self {
            engine,
            linker,
            limits,
            _ticker: ticker,
        })
    }

    /// The limits every instance of this engine runs under.
    pub fn limits(&self) -> &PluginLimits {
        &self.limits
    }

    /// Compiles a component from its bytes; `source` names it in errors.
    pub fn compile(&self, source: &str, bytes: &[u8]) -> Result<CompiledPlugin, PluginError> {
        let component = Component::new(&self.engine, bytes).map_err(|e| PluginError::Load {
            plugin: source.to_string(),
            message: format!("not a valid WebAssembly component: {e:#}"),
        })?;
        Ok(CompiledPlugin {
            source: source.to_string(),
            component,
        })
    }

    /// The interface names a compiled plugin imports and exports: its WIT world.
    pub fn world(&self, plugin: &CompiledPlugin) -> (Vec<String>, Vec<String>) {
        let ty = plugin.component.component_type();
        let imports = ty
            .imports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let exports = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        (imports, exports)
    }

    fn new_store(&self) -> Store<PluginState> {
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        let wasi = WasiCtx::builder()
            .stderr(stderr.clone())
            .wall_clock(StoppedClock)
            .monotonic_clock(StoppedClock)
            .secure_random(Deterministic::new(vec![0x5a; 32]))
            .insecure_random(Deterministic::new(vec![0xa5; 32]))
            .insecure_random_seed(0)
            .build();
        let state = PluginState {
            wasi,
            table: ResourceTable::new(),
            limits: self.limits.store_limits(),
            stderr,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        // Instantiation runs guest start-up code: it gets the budget of one call.
        store.set_epoch_deadline(self.limits.deadline_ticks());
        if let Some(fuel) = self.limits.fuel {
            // Only fails when fuel is disabled in the engine, which `fuel` enables.
            let _ = store.set_fuel(fuel);
        }
        store
    }

    /// Instantiates `plugin` and opens one aggregation with `config` (JSON).
    ///
    /// Fails with a message naming the plugin when the component does not
    /// implement the `aggregator-plugin` world, imports something the host
    /// does not provide, or rejects the configuration.
    pub fn open_aggregation(
        &self,
        plugin: &CompiledPlugin,
        config: &str,
    ) -> Result<AggregationInstance, PluginError> {
        let mut store = self.new_store();
        let bindings = AggregatorPlugin::instantiate(&mut store, &plugin.component, &self.linker)
            .map_err(|e| PluginError::Load {
            plugin: plugin.source.clone(),
            message: format!(
                "cannot instantiate as a sluice:plugin@0.1.0 aggregator-plugin: {e:#}"
            ),
        })?;
        let mut instance = AggregationInstance {
            label: plugin.source.clone(),
            store,
            bindings,
            aggregation: None,
            info: PluginInfo {
                name: String::new(),
                version: String::new(),
                description: String::new(),
                state_version: 0,
                mergeable: false,
                commutative: false,
                config_help: String::new(),
            },
            outputs: Vec::new(),
            deadline: self.limits.deadline_ticks(),
            fuel: self.limits.fuel,
        };
        instance.info = instance.call(|b, s| b.sluice_plugin_aggregator().call_info(s))?;
        instance.label = format!(
            "{} ({} {})",
            plugin.source, instance.info.name, instance.info.version
        );
        let opened = instance.call(|b, s| {
            b.sluice_plugin_aggregator()
                .aggregation()
                .call_open(s, config)
        })?;
        let aggregation = opened.map_err(|message| PluginError::Config {
            plugin: instance.label.clone(),
            message,
        })?;
        instance.aggregation = Some(aggregation);
        instance.outputs = instance.call(|b, s| {
            b.sluice_plugin_aggregator()
                .aggregation()
                .call_outputs(s, aggregation)
        })?;
        Ok(instance)
    }
}

/// One window's accumulator inside an [`AggregationInstance`].
///
/// A handle only: it must be given back with [`AggregationInstance::release`]
/// when the window is done, or the plugin keeps its state alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accumulator(ResourceAny);

/// A live plugin instance serving one configured aggregation.
pub struct AggregationInstance {
    label: String,
    store: Store<PluginState>,
    bindings: AggregatorPlugin,
    aggregation: Option<ResourceAny>,
    info: PluginInfo,
    outputs: Vec<OutputSpec>,
    deadline: u64,
    fuel: Option<u64>,
}

impl AggregationInstance {
    /// `source (name version)`, the name errors use.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The plugin's self-description.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// The outputs `finish` returns, in order.
    pub fn outputs(&self) -> &[OutputSpec] {
        &self.outputs
    }

    /// Runs one guest call under a fresh deadline (and fuel budget), turning
    /// traps into errors that say what happened.
    fn call<R>(
        &mut self,
        f: impl FnOnce(&AggregatorPlugin, &mut Store<PluginState>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        self.store.set_epoch_deadline(self.deadline);
        if let Some(fuel) = self.fuel {
            // Cannot fail: fuel is enabled on the engine whenever a budget is set.
            let _ = self.store.set_fuel(fuel);
        }
        f(&self.bindings, &mut self.store).map_err(|e| self.describe_failure(e))
    }

    fn describe_failure(&mut self, error: wasmtime::Error) -> PluginError {
        let cause = match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => "exceeded its call time limit".to_string(),
            Some(Trap::OutOfFuel) => "ran out of fuel".to_string(),
            Some(trap) => format!("trapped: {trap}"),
            None => format!("failed: {error:#}"),
        };
        let stderr = self.store.data().stderr.contents();
        let stderr = String::from_utf8_lossy(&stderr);
        let stderr = stderr.trim();
        PluginError::Call {
            plugin: self.label.clone(),
            message: if stderr.is_empty() {
                cause
            } else {
                format!("{cause}; plugin stderr: {stderr}")
            },
        }
    }

    fn aggregation(&self) -> Result<ResourceAny, PluginError> {
        self.aggregation.ok_or_else(|| PluginError::Call {
            plugin: self.label.clone(),
            message: "aggregation is not open".into(),
        })
    }

    /// A new, empty accumulator.
    pub fn create(&mut self) -> Result<Accumulator, PluginError> {
        let aggregation = self.aggregation()?;
        self.call(|b, s| {
            b.sluice_plugin_aggregator()
                .aggregation()
                .call_create(s, aggregation)
        })
        .map(Accumulator)
    }

    /// Adds one batch of values and their event times.
    pub fn add(
        &mut self,
        acc: Accumulator,
        values: &[f64],
        times: &[i64],
    ) -> Result<(), PluginError> {
        self.call(|b, s| {
            b.sluice_plugin_aggregator()
                .accumulator()
                .call_add(s, acc.0, values, times)
        })
    }

    /// Folds `from` into `into`.
    pub fn merge(&mut self, into: Accumulator, from: Accumulator) -> Result<(), PluginError> {
        let merged = self.call(|b, s| {
            b.sluice_plugin_aggregator()
                .accumulator()
                .call_merge(s, into.0, from.0)
        })?;
        merged.map_err(|message| PluginError::Call {
            plugin: self.label.clone(),
            message: format!("merge failed: {message}"),
        })
    }

    /// The accumulator's current outputs, checked against the declared outputs.
    pub fn finish(&mut self, acc: Accumulator) -> Result<Vec<Option<f64>>, PluginError> {
        let values = self.call(|b, s| {
            b.sluice_plugin_aggregator()
                .accumulator()
                .call_finish(s, acc.0)
        })?;
        if values.len() != self.outputs.len() {
            return Err(PluginError::Call {
                plugin: self.label.clone(),
                message: format!(
                    "finish returned {} values but the plugin declares {} outputs",
                    values.len(),
                    self.outputs.len()
                ),
            });
        }
        Ok(values)
    }

    /// The accumulator's state as bytes, in the plugin's state format.
    pub fn snapshot(&mut self, acc: Accumulator) -> Result<Vec<u8>, PluginError> {
        self.call(|b, s| {
            b.sluice_plugin_aggregator()
                .accumulator()
                .call_snapshot(s, acc.0)
        })
    }

    /// An accumulator rebuilt from snapshot bytes of format `state_version`.
    pub fn restore(
        &mut self,
        state: &[u8],
        state_version: u32,
    ) -> Result<Accumulator, PluginError> {
        let aggregation = self.aggregation()?;
        let restored = self.call(|b, s| {
            b.sluice_plugin_aggregator().aggregation().call_restore(
                s,
                aggregation,
                state,
                state_version,
            )
        })?;
        restored
            .map(Accumulator)
            .map_err(|message| PluginError::Call {
                plugin: self.label.clone(),
                message: format!("restore failed: {message}"),
            })
    }

    /// Gives an accumulator back to the plugin, which frees its state.
    pub fn release(&mut self, acc: Accumulator) -> Result<(), PluginError> {
        self.store.set_epoch_deadline(self.deadline);
        acc.0
            .resource_drop(&mut self.store)
            .map_err(|e| self.describe_failure(e))
    }
}
