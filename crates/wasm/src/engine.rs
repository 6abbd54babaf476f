//! The wasmtime engine that compiles plugins and the live instances that run them.
//!
//! One [`AggregationInstance`] per configured aggregation: its store holds the
//! plugin's memory and every accumulator resource for that aggregation, so a
//! new window costs one resource (~1 us), not one instance (~40 us), and a
//! plugin that fails takes only its own aggregation down with it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker, ResourceAny, ResourceTable};
use wasmtime::{Engine, Store, Trap, WasmBacktrace};
use wasmtime_wasi::random::Deterministic;
use wasmtime_wasi::{I32Exit, WasiCtx};

use slab::Slab;
use sluice_config::PluginLimits;
use sluice_config::limits::bytes_text;
use sluice_core::plugin::grouped::{GroupedAggregation, PerWindow};
use sluice_core::plugin::untrusted::{bounded, checked_name};
use sluice_core::plugin::{
    AccumulatorHandle, Aggregation, OutputKind, OutputSpec, PluginError, PluginInfo,
};

use crate::bindings::{AggregatorPlugin, AggregatorPluginPre};
use crate::cache::{CacheOutcome, CacheSetting, ComponentCache};
use crate::grouped::{CompiledGrouped, GROUPED_AGGREGATOR_EXPORT};
use crate::limits::{self, EpochTicker, MAX_HANDLES};
use crate::output::PluginOutput;
use crate::pace::CallTimes;
use crate::sandboxed::Sandboxed;
pub use crate::wasi::GRANTED_IMPORTS;
use crate::wasi::{PluginState, StoppedClock, link_granted};

/// A compiled aggregator component of interface 0.1 or 0.2.
#[derive(Clone)]
pub enum AnyAggregator {
    /// Interface 0.1: one accumulator per window, one number in.
    PerWindow(CompiledPlugin),
    /// Interface 0.2: typed inputs, grouped calls.
    Grouped(CompiledGrouped),
}

impl AnyAggregator {
    /// Whether the compiled code came from the on-disk cache.
    pub fn cache(&self) -> &CacheOutcome {
        match self {
            Self::PerWindow(p) => &p.cache,
            Self::Grouped(p) => &p.cache,
        }
    }
}

/// The WIT interface the host implements, as a component names its export.
pub const AGGREGATOR_EXPORT: &str = "sluice:plugin/aggregator@0.1.0";

/// Compiles plugin components and instantiates them under the configured limits.
pub struct PluginEngine {
    /// Compiles components without inlining.
    plain: Compiler,
    /// With `plugins.inline`, compiles components up to [`INLINE_UP_TO`]
    /// bytes, inlining small functions into their callers.
    inlining: Option<Compiler>,
    limits: PluginLimits,
    /// Ticks every compiler's engine.
    ticker: Arc<EpochTicker>,
}

/// The largest component `plugins.inline` compiles with inlining. Inlining
/// made the Rust built-ins run 1.05-1.4x faster per value, and costs compile
/// time and memory that grow with the module: a run compiling the
/// `percentiles` built-in took 1.1 s and peaked at 313 MiB instead of
/// 0.3 s and 40 MiB, and an 18 MB Python plugin (an interpreter, which
/// inlining hardly speeds up) took over 8 GiB and two minutes instead of
/// 20 s of CPU (docs/performance.md).
pub const INLINE_UP_TO: usize = 4 << 20;

/// One wasmtime engine with the linker and the compile cache for it.
struct Compiler {
    engine: Engine,
    linker: Linker<PluginState>,
    cache: Option<ComponentCache>,
}

impl Compiler {
    fn new(limits: &PluginLimits, inline: bool, cache: &CacheSetting) -> Result<Self, PluginError> {
        let engine = Engine::new(&limits::engine_config(limits, inline))
            .map_err(|e| PluginError::setup("creating the wasm engine", e))?;
        let mut linker = Linker::new(&engine);
        link_granted(&mut linker).map_err(|e| PluginError::setup("linking WASI", e))?;
        let cache = match cache {
            CacheSetting::Off => None,
            CacheSetting::Dir(dir) => Some(ComponentCache::new(dir.clone(), &engine)),
        };
        Ok(Self {
            engine,
            linker,
            cache,
        })
    }
}

/// A compiled plugin component whose imports and exports have been checked,
/// ready to be instantiated any number of times.
#[derive(Clone)]
pub struct CompiledPlugin {
    /// Where the plugin came from (`builtin/stats` or a path), for messages.
    pub source: String,
    /// Whether the compiled code came from the on-disk cache.
    pub cache: CacheOutcome,
    component: Component,
    pre: AggregatorPluginPre<PluginState>,
}

/// The interface name of an import without its version: `wasi:io/poll`.
fn unversioned(name: &str) -> &str {
    name.split_once('@').map_or(name, |(n, _)| n)
}

impl PluginEngine {
    /// An engine enforcing `limits`, with its epoch ticker running, that
    /// compiles every plugin it is given (no on-disk cache).
    pub fn new(limits: PluginLimits) -> Result<Self, PluginError> {
        Self::with_cache(limits, &CacheSetting::Off)
    }

    /// An engine enforcing `limits` that keeps compiled plugins in the
    /// on-disk cache `cache` names (see [`super::cache`]).
    pub fn with_cache(limits: PluginLimits, cache: &CacheSetting) -> Result<Self, PluginError> {
        let plain = Compiler::new(&limits, false, cache)?;
        let inlining = match limits.inline {
            true => Some(Compiler::new(&limits, true, cache)?),
            false => None,
        };
        let engines = std::iter::once(&plain)
            .chain(&inlining)
            .map(|c| c.engine.clone())
            .collect();
        let ticker = EpochTicker::start(engines)
            .map_err(|e| PluginError::setup("starting the epoch ticker", e))?;
        Ok(Self {
            plain,
            inlining,
            limits,
            ticker: Arc::new(ticker),
        })
    }

    /// The compiler for a component of `bytes` bytes.
    fn compiler(&self, bytes: usize) -> &Compiler {
        match &self.inlining {
            Some(inlining) if bytes <= INLINE_UP_TO => inlining,
            _ => &self.plain,
        }
    }

    /// The limits every instance of this engine runs under.
    pub fn limits(&self) -> &PluginLimits {
        &self.limits
    }

    /// The linker `component` is instantiated through: its engine's.
    pub(crate) fn linker(&self, component: &Component) -> &Linker<PluginState> {
        match &self.inlining {
            Some(c) if Engine::same(component.engine(), &c.engine) => &c.linker,
            _ => &self.plain.linker,
        }
    }

    /// The epoch ticker, which instances keep alive while they can be called.
    pub(crate) fn ticker(&self) -> Arc<EpochTicker> {
        Arc::clone(&self.ticker)
    }

    /// Compiles a component (or loads it from the compile cache) and refuses
    /// it if it imports anything not in [`GRANTED_IMPORTS`], whatever world
    /// it is for. Also says whether the cache served it.
    pub(crate) fn checked_component(
        &self,
        source: &str,
        bytes: &[u8],
    ) -> Result<(Component, CacheOutcome), PluginError> {
        let refuse = |message: String| PluginError::Load {
            plugin: source.to_string(),
            message,
        };
        let compiler = self.compiler(bytes.len());
        let (component, cache) = match &compiler.cache {
            Some(cache) => cache.load_or_compile(&compiler.engine, bytes),
            None => Component::new(&compiler.engine, bytes).map(|c| (c, CacheOutcome::Off)),
        }
        .map_err(|e| refuse(format!("not a valid WebAssembly component: {e:#}")))?;
        if cache != CacheOutcome::Off {
            tracing::debug!(plugin = source, "plugin {source}: compile cache {cache}");
        }
        let ty = component.component_type();
        let refused: Vec<String> = ty
            .imports(component.engine())
            .map(|(name, _)| name)
            .filter(|name| !GRANTED_IMPORTS.contains(&unversioned(name)))
            .map(str::to_string)
            .collect();
        if !refused.is_empty() {
            return Err(refuse(format!(
                "imports {}, which sluice does not grant (plugins get no files, network or environment)",
                refused.join(", ")
            )));
        }
        Ok((component, cache))
    }

    /// The interface names a component exports.
    pub(crate) fn exports(&self, component: &Component) -> Vec<String> {
        component
            .component_type()
            .exports(component.engine())
            .map(|(name, _)| name.to_string())
            .collect()
    }

    /// Compiles a component from its bytes and checks it against the
    /// aggregator-plugin world; `source` names it in errors.
    ///
    /// Refuses, before anything of the plugin runs, a component that imports
    /// something not in [`GRANTED_IMPORTS`] (naming the imports) or that does
    /// not export [`AGGREGATOR_EXPORT`] with the types this host expects.
    pub fn compile(&self, source: &str, bytes: &[u8]) -> Result<CompiledPlugin, PluginError> {
        let (component, cache) = self.checked_component(source, bytes)?;
        self.aggregator_from(source, component, cache)
    }

    /// [`Self::compile`] of a component already compiled and checked.
    fn aggregator_from(
        &self,
        source: &str,
        component: Component,
        cache: CacheOutcome,
    ) -> Result<CompiledPlugin, PluginError> {
        let refuse = |message: String| PluginError::Load {
            plugin: source.to_string(),
            message,
        };
        let exports = self.exports(&component);
        if !exports.iter().any(|e| e == AGGREGATOR_EXPORT) {
            let found = if exports.is_empty() {
                "nothing".to_string()
            } else {
                exports.join(", ")
            };
            return Err(refuse(format!(
                "does not export {AGGREGATOR_EXPORT} (it exports {found}); \
                 this host runs plugins built against the WIT package sluice:plugin@0.1.0"
            )));
        }
        let pre = self
            .linker(&component)
            .instantiate_pre(&component)
            .and_then(AggregatorPluginPre::new)
            .map_err(|e| {
                refuse(format!(
                    "does not match the sluice:plugin@0.1.0 aggregator-plugin world: {e:#}"
                ))
            })?;
        Ok(CompiledPlugin {
            source: source.to_string(),
            cache,
            component,
            pre,
        })
    }

    /// Compiles an aggregator component of either interface version, told
    /// apart by the interface it exports ([`AGGREGATOR_EXPORT`] or
    /// [`GROUPED_AGGREGATOR_EXPORT`]); the refusal of one that exports
    /// neither names what it exports.
    pub fn compile_any(&self, source: &str, bytes: &[u8]) -> Result<AnyAggregator, PluginError> {
        let (component, cache) = self.checked_component(source, bytes)?;
        let exports = self.exports(&component);
        if exports.iter().any(|e| e == AGGREGATOR_EXPORT) {
            return self
                .aggregator_from(source, component, cache)
                .map(AnyAggregator::PerWindow);
        }
        if exports.iter().any(|e| e == GROUPED_AGGREGATOR_EXPORT) {
            return self
                .grouped_from(source, component, cache)
                .map(AnyAggregator::Grouped);
        }
        let found = if exports.is_empty() {
            "nothing".to_string()
        } else {
            exports.join(", ")
        };
        Err(PluginError::Load {
            plugin: source.to_string(),
            message: format!(
                "exports neither {AGGREGATOR_EXPORT} nor {GROUPED_AGGREGATOR_EXPORT} (it exports \
                 {found}); this host runs aggregators built against the WIT package \
                 sluice:plugin@0.1.0 or @0.2.0"
            ),
        })
    }

    /// Opens one aggregation of `plugin`, of either version, with `config`
    /// (JSON), named `name` in the log: behind [`GroupedAggregation`], a 0.1
    /// component through [`PerWindow`].
    pub fn open_any(
        &self,
        plugin: &AnyAggregator,
        config: &str,
        name: &str,
    ) -> Result<Box<dyn GroupedAggregation>, PluginError> {
        Ok(match plugin {
            AnyAggregator::PerWindow(plugin) => {
                let mut instance = self.open_aggregation(plugin, config)?;
                instance.set_aggregation_name(name);
                PerWindow::boxed(Box::new(instance))
            }
            AnyAggregator::Grouped(plugin) => {
                let mut instance = self.open_grouped(plugin, config)?;
                instance.set_aggregation_name(name);
                Box::new(instance)
            }
        })
    }

    /// The WIT world of an aggregator of either version: what it imports
    /// and exports.
    pub fn any_world(&self, plugin: &AnyAggregator) -> (Vec<String>, Vec<String>) {
        match plugin {
            AnyAggregator::PerWindow(p) => self.world(p),
            AnyAggregator::Grouped(p) => self.grouped_world(p),
        }
    }

    /// The interface names a compiled plugin imports and exports: its WIT world.
    pub fn world(&self, plugin: &CompiledPlugin) -> (Vec<String>, Vec<String>) {
        self.component_world(&plugin.component)
    }

    /// The interface names `component` imports and exports.
    pub(crate) fn component_world(&self, component: &Component) -> (Vec<String>, Vec<String>) {
        let ty = component.component_type();
        let imports = ty
            .imports(component.engine())
            .map(|(n, _)| n.to_string())
            .collect();
        let exports = ty
            .exports(component.engine())
            .map(|(n, _)| n.to_string())
            .collect();
        (imports, exports)
    }

    /// Instantiates `plugin` and opens one aggregation with `config` (JSON).
    ///
    /// Fails with a message naming the plugin when instantiation traps, the
    /// plugin describes itself with a name or version that is too long (see
    /// [`super::untrusted::NAME_LIMIT`]), or it rejects the configuration.
    pub fn open_aggregation(
        &self,
        plugin: &CompiledPlugin,
        config: &str,
    ) -> Result<AggregationInstance, PluginError> {
        let output = PluginOutput::new(
            format!("plugin {}", plugin.source),
            self.limits.message_bytes(),
            self.limits.log_lines_per_second,
        );
        let started = instantiate(plugin, &self.limits, &output)?;
        let mut instance = AggregationInstance {
            sb: Sandboxed::new(
                plugin.source.clone(),
                self.limits.clone(),
                Arc::clone(&self.ticker),
                output,
                started,
            ),
            plugin: plugin.clone(),
            config: config.to_string(),
            aggregation: None,
            accumulators: Slab::new(),
            info: PluginInfo::default(),
            outputs: Vec::new(),
        };
        let info = instance.call(|b, s| b.sluice_plugin_aggregator().call_info(s))?;
        instance.info =
            checked_info(info.into(), &self.limits).map_err(|message| PluginError::Load {
                plugin: plugin.source.clone(),
                message,
            })?;
        instance.sb.label = format!(
            "{} ({} {})",
            plugin.source, instance.info.name, instance.info.version
        );
        instance.sb.set_who(format!("plugin {}", instance.sb.label));
        instance.outputs = instance.open()?;
        Ok(instance)
    }
}

/// A plugin's self-description as the host keeps it: name and version
/// checked (see [`checked_name`]), every text escaped and the long ones cut,
/// so that nothing a plugin says about itself can break a log line.
pub(crate) fn checked_info(info: PluginInfo, limits: &PluginLimits) -> Result<PluginInfo, String> {
    // A description is a paragraph: a few times an error's length.
    let paragraph = limits.message_bytes().saturating_mul(4);
    Ok(PluginInfo {
        name: checked_name("name", &info.name)?,
        version: checked_name("version", &info.version)?,
        description: bounded(&info.description, paragraph).into_owned(),
        config_help: bounded(&info.config_help, paragraph).into_owned(),
        ..info
    })
}

/// A new store for one plugin instance under `limits`, its stdout and
/// stderr going to `output`.
pub(crate) fn new_store(
    engine: &Engine,
    limits: &PluginLimits,
    output: &Arc<PluginOutput>,
) -> Store<PluginState> {
    let wasi = WasiCtx::builder()
        .wall_clock(StoppedClock)
        .monotonic_clock(StoppedClock)
        .secure_random(Deterministic::new(vec![0x5a; 32]))
        .insecure_random(Deterministic::new(vec![0xa5; 32]))
        .insecure_random_seed(0)
        .build();
    let state = PluginState {
        wasi,
        table: ResourceTable::new(),
        limits: limits::store_limits(limits),
        output: Arc::clone(output),
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limits);
    store.set_max_component_handles(MAX_HANDLES);
    store.epoch_deadline_trap();
    // Instantiation runs guest start-up code: it gets the budget of one call.
    store.set_epoch_deadline(limits::deadline_ticks(limits));
    if let Some(fuel) = limits.fuel {
        // Only fails when fuel is disabled in the engine, which `fuel` enables.
        let _ = store.set_fuel(fuel);
    }
    store
}

/// A fresh store running `plugin`, under `limits`.
fn instantiate(
    plugin: &CompiledPlugin,
    limits: &PluginLimits,
    output: &Arc<PluginOutput>,
) -> Result<(Store<PluginState>, AggregatorPlugin), PluginError> {
    start(
        &plugin.source,
        plugin.pre.engine(),
        limits,
        output,
        |store| plugin.pre.instantiate(store),
    )
}

/// A fresh store under `limits` with a component instantiated in it by
/// `instantiate`, whatever its world; `source` names it in errors.
pub(crate) fn start<B>(
    source: &str,
    engine: &Engine,
    limits: &PluginLimits,
    output: &Arc<PluginOutput>,
    instantiate: impl FnOnce(&mut Store<PluginState>) -> wasmtime::Result<B>,
) -> Result<(Store<PluginState>, B), PluginError> {
    let mut store = new_store(engine, limits, output);
    output.begin_call();
    match instantiate(&mut store) {
        Ok(bindings) => Ok((store, bindings)),
        Err(e) => Err(PluginError::Load {
            plugin: source.to_string(),
            message: format!(
                "failed to start: {}",
                describe(&e, store.data_mut(), limits, source)
            ),
        }),
    }
}

/// Runs one guest call in `store` under a fresh deadline, fuel budget and
/// memory check, turning a trap into an error that says what happened and
/// marking the instance `poisoned` (a trapped instance cannot be entered
/// again). Records how long the call took in `times`, and warns when calls
/// come close to the deadline (see [`CallTimes`]); returns that time too,
/// so a caller's own accounting needs no clock reads of its own (two per
/// call, not four: a pipeline makes millions of calls). Shared by every
/// plugin world.
pub(crate) fn guarded_call<B, R>(
    (store, bindings): (&mut Store<PluginState>, &B),
    limits: &PluginLimits,
    poisoned: &mut bool,
    label: &str,
    times: &mut CallTimes,
    f: impl FnOnce(&B, &mut Store<PluginState>) -> wasmtime::Result<R>,
) -> (Result<R, PluginError>, Duration) {
    if *poisoned {
        let refused = PluginError::Call {
            plugin: label.to_string(),
            message: "was called after a failure without being reopened".into(),
        };
        return (Err(refused), Duration::ZERO);
    }
    store.set_epoch_deadline(limits::deadline_ticks(limits));
    if let Some(fuel) = limits.fuel {
        // Cannot fail: fuel is enabled on the engine whenever a budget is set.
        let _ = store.set_fuel(fuel);
    }
    store.data_mut().limits.reset();
    store.data().output.begin_call();
    let started = Instant::now();
    let result = f(bindings, store);
    let took = started.elapsed();
    if let Some(warning) = times.record(took, limits.call_timeout, result.is_ok()) {
        let who = store.data().output.who();
        tracing::warn!("{who}: {warning}");
    }
    let result = result.map_err(|e| {
        *poisoned = true;
        PluginError::Call {
            plugin: label.to_string(),
            message: describe(&e, store.data_mut(), limits, label),
        }
    });
    (result, took)
}

/// Why a call failed, in the words of a pipeline author: what limit was hit
/// or what the plugin did, cause first, with a Rust panic's message (or the
/// call's last stderr line) taken from what it printed. Where in the plugin
/// it happened, the wasm backtrace, is logged at debug level, for its author.
pub(crate) fn describe(
    error: &wasmtime::Error,
    state: &mut PluginState,
    limits: &PluginLimits,
    label: &str,
) -> String {
    let limit = limits.message_bytes();
    let backtrace = error.downcast_ref::<WasmBacktrace>().map(|t| t.to_string());
    if let Some(trace) = &backtrace {
        // Function names come from the plugin's own name section.
        tracing::debug!(
            "plugin {label} failed {}",
            bounded(trace, limit.saturating_mul(16))
        );
    }
    let explained = state.output.explanation();
    if state.limits.exceeded() {
        return format!(
            "exceeded the memory limit of {}",
            limits.memory_limit_text()
        );
    }
    let cause = match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => {
            return format!(
                "timed out after {}",
                humantime::format_duration(limits.call_timeout)
            );
        }
        Some(Trap::OutOfFuel) => {
            return format!(
                "ran out of fuel (budget {} per call)",
                limits.fuel.unwrap_or_default()
            );
        }
        Some(Trap::StackOverflow) => return "stack overflow".to_string(),
        Some(Trap::UnreachableCodeReached) => match &explained {
            // A Rust panic ends in `unreachable`; its message is the cause.
            Some(Ok(message)) => return format!("panicked: {message}"),
            _ => "trapped: unreachable".to_string(),
        },
        Some(trap) => format!("trapped: {trap}"),
        None => match error.downcast_ref::<I32Exit>() {
            Some(I32Exit(status)) => format!("exited (wasi:cli/exit) with status {status}"),
            None => {
                let chain: Vec<String> = error
                    .chain()
                    .map(|e| e.to_string())
                    .filter(|e| Some(e) != backtrace.as_ref())
                    .collect();
                format!("failed: {}", bounded(&chain.join(": "), limit))
            }
        },
    };
    match explained {
        Some(Err(line)) => format!("{cause} (its last line on stderr: {line})"),
        _ => cause,
    }
}

/// Refuses a snapshot over the limits' `snapshot_limit`.
pub(crate) fn check_snapshot(
    bytes: &[u8],
    limits: &PluginLimits,
    label: &str,
) -> Result<(), PluginError> {
    if bytes.len() as u64 > limits.snapshot_limit {
        return Err(PluginError::Call {
            plugin: label.to_string(),
            message: format!(
                "returned a snapshot of {}, over the snapshot limit of {}",
                bytes_text(bytes.len() as u64),
                bytes_text(limits.snapshot_limit)
            ),
        });
    }
    Ok(())
}

/// A live plugin instance serving one configured aggregation: the
/// [`Aggregation`] of a component.
///
/// Its store holds every accumulator resource of the aggregation; the
/// handles the engine sees are indices into `accumulators`. It keeps what
/// it was made from, so that after a failure it can be replaced by a fresh
/// instance of the same plugin and config ([`Aggregation::reopen`]): a wasm
/// instance that trapped cannot be entered again.
pub struct AggregationInstance {
    /// The component's store under the sandbox.
    sb: Sandboxed<AggregatorPlugin>,
    plugin: CompiledPlugin,
    config: String,
    aggregation: Option<ResourceAny>,
    /// The accumulator resources, by handle.
    accumulators: Slab<ResourceAny>,
    info: PluginInfo,
    outputs: Vec<OutputSpec>,
}

impl AggregationInstance {
    /// Names the aggregation this instance serves (`latency`), which the
    /// log then gives for what the plugin prints and for slow calls.
    pub fn set_aggregation_name(&mut self, name: &str) {
        self.sb
            .set_who(format!("aggregation `{name}` (plugin {})", self.sb.label));
    }

    /// The limits the instance runs under.
    pub fn limits(&self) -> &PluginLimits {
        &self.sb.limits
    }

    /// Opens the aggregation with the instance's config; returns its outputs.
    fn open(&mut self) -> Result<Vec<OutputSpec>, PluginError> {
        let config = self.config.clone();
        let opened = self.call(|b, s| {
            b.sluice_plugin_aggregator()
                .aggregation()
                .call_open(s, &config)
        })?;
        let aggregation = opened.map_err(|message| self.sb.refused(&message))?;
        self.aggregation = Some(aggregation);
        let outputs = self.call(|b, s| {
            b.sluice_plugin_aggregator()
                .aggregation()
                .call_outputs(s, aggregation)
        })?;
        // Names are checked where a pipeline uses them (plain words, short:
        // `check_outputs`); escaping them first keeps that check's message,
        // and `inspect`, one line.
        let limit = self.sb.limits.message_bytes();
        Ok(outputs
            .into_iter()
            .map(|o| OutputSpec {
                name: bounded(&o.name, limit).into_owned(),
                kind: o.kind.into(),
                description: bounded(&o.description, limit).into_owned(),
            })
            .collect())
    }

    /// Runs one guest call under the limits, timed (see [`Sandboxed::call`]).
    fn call<R>(
        &mut self,
        f: impl FnOnce(&AggregatorPlugin, &mut Store<PluginState>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        self.sb.call(f)
    }

    fn aggregation(&self) -> Result<ResourceAny, PluginError> {
        self.aggregation
            .ok_or_else(|| self.sb.failed("aggregation is not open"))
    }

    /// The resource behind a handle.
    fn resource(&self, acc: AccumulatorHandle) -> Result<ResourceAny, PluginError> {
        usize::try_from(acc.0)
            .ok()
            .and_then(|i| self.accumulators.get(i))
            .copied()
            .ok_or_else(|| {
                self.sb
                    .failed(format!("was given an unknown accumulator {}", acc.0))
            })
    }

    fn handle(&mut self, resource: ResourceAny) -> AccumulatorHandle {
        AccumulatorHandle(self.accumulators.insert(resource) as u64)
    }
}

impl Aggregation for AggregationInstance {
    fn label(&self) -> &str {
        &self.sb.label
    }

    fn info(&self) -> &PluginInfo {
        &self.info
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
        self.accumulators.clear();
        let outputs = self.open()?;
        let same = outputs.len() == self.outputs.len()
            && outputs
                .iter()
                .zip(&self.outputs)
                .all(|(a, b)| a.name == b.name && a.kind == b.kind);
        if !same {
            self.sb.poisoned = true;
            return Err(self
                .sb
                .failed("declared different outputs when opened again with the same config"));
        }
        Ok(())
    }

    fn create(&mut self) -> Result<AccumulatorHandle, PluginError> {
        let aggregation = self.aggregation()?;
        let created = self.call(|b, s| {
            b.sluice_plugin_aggregator()
                .aggregation()
                .call_create(s, aggregation)
        })?;
        Ok(self.handle(created))
    }

    fn add(
        &mut self,
        acc: AccumulatorHandle,
        values: &[f64],
        times: &[i64],
    ) -> Result<(), PluginError> {
        let acc = self.resource(acc)?;
        self.call(|b, s| {
            b.sluice_plugin_aggregator()
                .accumulator()
                .call_add(s, acc, values, times)
        })
    }

    fn merge(
        &mut self,
        into: AccumulatorHandle,
        from: AccumulatorHandle,
    ) -> Result<(), PluginError> {
        let (into, from) = (self.resource(into)?, self.resource(from)?);
        let merged = self.call(|b, s| {
            b.sluice_plugin_aggregator()
                .accumulator()
                .call_merge(s, into, from)
        })?;
        merged.map_err(|message| {
            self.sb.failed(format!(
                "merge failed: {}",
                bounded(&message, self.sb.limits.message_bytes())
            ))
        })
    }

    /// The outputs, checked against the declared outputs.
    ///
    /// A list of any other length is refused, and so is a value of an
    /// `integer` output that is not integral (a fraction, NaN, an
    /// infinity): the WIT promises integers there, and a dashboard reading
    /// the column as one would break on it. What the host takes in is
    /// bounded by the plugin's memory limit: a list must lie in the plugin's
    /// memory to be lifted, and one option<f64> takes as many bytes there as
    /// here.
    fn finish(&mut self, acc: AccumulatorHandle) -> Result<Vec<Option<f64>>, PluginError> {
        let acc = self.resource(acc)?;
        let values = self.call(|b, s| {
            b.sluice_plugin_aggregator()
                .accumulator()
                .call_finish(s, acc)
        })?;
        if values.len() != self.outputs.len() {
            return Err(self.sb.failed(format!(
                "returned {} values from finish but declares {} outputs",
                values.len(),
                self.outputs.len()
            )));
        }
        let fraction =
            values
                .iter()
                .zip(&self.outputs)
                .find_map(|(value, spec)| match (value, spec.kind) {
                    (Some(v), OutputKind::Integer) if !v.is_finite() || v.fract() != 0.0 => {
                        Some((*v, &spec.name))
                    }
                    _ => None,
                });
        if let Some((value, name)) = fraction {
            return Err(self.sb.failed(format!(
                "returned {value} for integer output `{name}`, which must be integral"
            )));
        }
        Ok(values)
    }

    /// A snapshot over the `snapshot_limit` is refused: the host keeps a
    /// snapshot per open window and copies it into every checkpoint.
    fn snapshot(&mut self, acc: AccumulatorHandle) -> Result<Vec<u8>, PluginError> {
        let acc = self.resource(acc)?;
        let bytes = self.call(|b, s| {
            b.sluice_plugin_aggregator()
                .accumulator()
                .call_snapshot(s, acc)
        })?;
        check_snapshot(&bytes, &self.sb.limits, &self.sb.label)?;
        Ok(bytes)
    }

    fn restore(
        &mut self,
        state: &[u8],
        state_version: u32,
    ) -> Result<AccumulatorHandle, PluginError> {
        let aggregation = self.aggregation()?;
        let restored = self.call(|b, s| {
            b.sluice_plugin_aggregator().aggregation().call_restore(
                s,
                aggregation,
                state,
                state_version,
            )
        })?;
        match restored {
            Ok(resource) => Ok(self.handle(resource)),
            Err(message) => Err(self.sb.failed(format!(
                "restore failed: {}",
                bounded(&message, self.sb.limits.message_bytes())
            ))),
        }
    }

    fn release(&mut self, acc: AccumulatorHandle) -> Result<(), PluginError> {
        let resource = self.resource(acc)?;
        if let Ok(i) = usize::try_from(acc.0) {
            self.accumulators.remove(i);
        }
        self.call(|_, s| resource.resource_drop(s))
    }
}
